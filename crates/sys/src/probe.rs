//! Kernel feature probes used by `crust check`, plus the few process helpers
//! (wait, kill, setsid) that the `crust` binary needs and may not write
//! itself because only this crate holds `unsafe`.
//!
//! Every probe returns `Ok(())` when the feature is usable on this kernel and
//! an error saying why not otherwise. Probes have no lasting side effects:
//! whatever they create (children, mappings, descriptors) is gone when they
//! return.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

/// Why a probe found a feature missing (or could not tell).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A syscall the probe relies on failed.
    #[error("{what} failed")]
    Os {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The syscall worked but the kernel lacks the feature.
    #[error("{0}")]
    Missing(String),
}

/// Result of one probe.
pub type ProbeResult = Result<(), ProbeError>;

fn os(what: &'static str) -> ProbeError {
    ProbeError::Os {
        what,
        source: io::Error::last_os_error(),
    }
}

fn check(ret: libc::c_long, what: &'static str) -> Result<libc::c_long, ProbeError> {
    if ret < 0 {
        Err(os(what))
    } else {
        Ok(ret)
    }
}

/// Take ownership of a descriptor that a syscall just returned.
fn owned(fd: libc::c_long, what: &'static str) -> Result<OwnedFd, ProbeError> {
    let fd = check(fd, what)?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that
    // nothing else in this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

fn decode_status(status: libc::c_int) -> Option<ExitStatus> {
    if libc::WIFEXITED(status) {
        Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

fn waitpid_raw(pid: i32, flags: libc::c_int) -> io::Result<(i32, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the whole call.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret >= 0 {
            return Ok((ret, status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Wait until child `pid` exits or is killed (stops are skipped) and reap it.
pub fn wait_exit(pid: i32) -> io::Result<ExitStatus> {
    loop {
        let (_, status) = waitpid_raw(pid, libc::__WALL)?;
        if let Some(st) = decode_status(status) {
            return Ok(st);
        }
    }
}

/// Reap child `pid` if it has ended; `None` while it still runs.
pub fn try_wait(pid: i32) -> io::Result<Option<ExitStatus>> {
    let (ret, status) = waitpid_raw(pid, libc::WNOHANG | libc::__WALL)?;
    if ret == 0 {
        return Ok(None);
    }
    Ok(decode_status(status))
}

/// Send signal `sig` to process `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the calling process a session (and process group) leader.
pub fn setsid() -> io::Result<i32> {
    // SAFETY: setsid(2) takes no arguments and touches no memory of ours.
    let sid = unsafe { libc::setsid() };
    if sid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sid)
}

/// Close descriptor `fd` (CRIU's `--close FD`). The caller guarantees that no
/// Rust object owns `fd`.
pub fn close_fd(fd: i32) -> io::Result<()> {
    // SAFETY: closing a descriptor is memory safe; the caller promises that no
    // owner (File, OwnedFd...) will use or close it again.
    if unsafe { libc::close(fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A stopped, seized child used by the ptrace probes
// ---------------------------------------------------------------------------

/// A forked child that only sleeps; SIGKILLed and reaped on drop.
struct SleepingChild {
    pid: i32,
}

impl SleepingChild {
    fn spawn() -> Result<Self, ProbeError> {
        // SAFETY: the child only calls async-signal-safe functions (pause,
        // _exit), so forking a multi-threaded process is fine.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os("fork"));
        }
        if pid == 0 {
            loop {
                // SAFETY: pause(2) has no arguments; async-signal-safe.
                unsafe { libc::pause() };
            }
        }
        Ok(SleepingChild { pid })
    }
}

impl Drop for SleepingChild {
    fn drop(&mut self) {
        let _ = kill(self.pid, libc::SIGKILL);
        let _ = wait_exit(self.pid);
    }
}

fn ptrace_raw(req: libc::c_uint, pid: i32, addr: u64, data: u64) -> libc::c_long {
    // SAFETY: every caller passes either 0 or a pointer to a live buffer
    // large enough for the request as `addr`/`data`.
    unsafe {
        libc::ptrace(
            req,
            pid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    }
}

const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_O_SUSPEND_SECCOMP: u64 = 1 << 21;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// Seize a fresh child and stop it with PTRACE_INTERRUPT, then run `f`.
fn with_seized_child<T>(f: impl FnOnce(i32) -> Result<T, ProbeError>) -> Result<T, ProbeError> {
    let child = SleepingChild::spawn()?;
    let pid = child.pid;
    check(
        ptrace_raw(
            libc::PTRACE_SEIZE,
            pid,
            0,
            libc::PTRACE_O_TRACESYSGOOD as u64,
        ),
        "ptrace(PTRACE_SEIZE)",
    )?;
    check(
        ptrace_raw(libc::PTRACE_INTERRUPT, pid, 0, 0),
        "ptrace(PTRACE_INTERRUPT)",
    )?;
    let (_, status) = waitpid_raw(pid, libc::__WALL).map_err(|source| ProbeError::Os {
        what: "waitpid on the seized child",
        source,
    })?;
    if !libc::WIFSTOPPED(status) || (status >> 16) != PTRACE_EVENT_STOP {
        return Err(ProbeError::Missing(format!(
            "seized child did not enter a group/event stop (wait status {status:#x})"
        )));
    }
    f(pid)
}

/// PTRACE_SEIZE + PTRACE_INTERRUPT + an event stop (CRIU: category 1).
pub fn seize() -> ProbeResult {
    with_seized_child(|_| Ok(()))
}

/// PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13): needed to dump rseq areas.
pub fn get_rseq_conf() -> ProbeResult {
    with_seized_child(|pid| {
        let mut conf = [0u8; 32];
        check(
            ptrace_raw(
                PTRACE_GET_RSEQ_CONFIGURATION,
                pid,
                conf.len() as u64,
                conf.as_mut_ptr() as u64,
            ),
            "ptrace(PTRACE_GET_RSEQ_CONFIGURATION)",
        )?;
        Ok(())
    })
}

/// PTRACE_O_SUSPEND_SECCOMP: lets a tracer run syscalls in a task that has
/// seccomp filters.
pub fn seccomp_suspend() -> ProbeResult {
    with_seized_child(|pid| {
        check(
            ptrace_raw(
                libc::PTRACE_SETOPTIONS,
                pid,
                0,
                libc::PTRACE_O_TRACESYSGOOD as u64 | PTRACE_O_SUSPEND_SECCOMP,
            ),
            "ptrace(PTRACE_SETOPTIONS, PTRACE_O_SUSPEND_SECCOMP)",
        )?;
        Ok(())
    })
}

/// PTRACE_SECCOMP_GET_FILTER: dump seccomp filters of a task.
pub fn seccomp_filters() -> ProbeResult {
    with_seized_child(|pid| {
        // The child has no filter: a kernel that knows the request answers
        // EINVAL/ENOENT, one that does not answers EIO.
        let ret = ptrace_raw(PTRACE_SECCOMP_GET_FILTER, pid, 0, 0);
        if ret >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EIO) {
            return Err(ProbeError::Os {
                what: "ptrace(PTRACE_SECCOMP_GET_FILTER)",
                source: err,
            });
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Syscalls
// ---------------------------------------------------------------------------

/// process_vm_readv on ourselves: how the dump copies memory.
pub fn process_vm_readv() -> ProbeResult {
    let src = [0x5au8; 64];
    let mut dst = [0u8; 64];
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src.as_ptr() as *mut libc::c_void,
        iov_len: src.len(),
    };
    // SAFETY: both iovecs describe live buffers of the stated length; the
    // remote one is only read.
    let n = unsafe { libc::process_vm_readv(own_pid(), &local, 1, &remote, 1, 0) };
    check(n as libc::c_long, "process_vm_readv")?;
    if dst != src {
        return Err(ProbeError::Missing(
            "process_vm_readv returned wrong data".into(),
        ));
    }
    Ok(())
}

/// This process's pid, without a libc call (so probes need no extra
/// `unsafe` operation for it).
fn own_pid() -> libc::pid_t {
    std::process::id() as libc::pid_t
}

/// pidfd_open(2) (Linux 5.3).
pub fn pidfd_open() -> ProbeResult {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, own_pid(), 0) };
    owned(fd, "pidfd_open")?;
    Ok(())
}

/// pidfd_getfd(2) (Linux 5.6): steal a descriptor from another task.
pub fn pidfd_getfd() -> ProbeResult {
    // SAFETY: plain integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, own_pid(), 0) };
    let pidfd = owned(pidfd, "pidfd_open")?;
    // SAFETY: plain integer arguments; the result is a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            pidfd.as_raw_fd(),
            0,
        )
    };
    owned(fd, "pidfd_getfd")?;
    Ok(())
}

/// clone3(2) with `set_tid` (Linux 5.5): restore a task with its old pid.
///
/// Asks for an invalid combination (a `set_tid` array of size 0) which a
/// kernel that knows `set_tid` rejects with EINVAL, and an older one with
/// E2BIG (unknown trailing fields) or ENOSYS.
pub fn clone3_set_tid() -> ProbeResult {
    let tid: libc::pid_t = 1;
    // struct clone_args, CLONE_ARGS_SIZE_VER1 = 80 bytes: flags, pidfd,
    // child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
    // set_tid_size.
    let mut args = [0u64; 10];
    args[4] = libc::SIGCHLD as u64;
    args[8] = &tid as *const libc::pid_t as u64;
    args[9] = 0;
    // Should the kernel create a child anyway, it exits at once below.
    // SAFETY: `args` is a live 80-byte clone_args; the kernel reads it and
    // `tid` only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    if ret == 0 {
        // SAFETY: we are an unexpected child; leave immediately.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        let _ = wait_exit(ret as i32);
        return Err(ProbeError::Missing(
            "clone3 accepted an empty set_tid array".into(),
        ));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) => Ok(()),
        _ => Err(ProbeError::Os {
            what: "clone3 with set_tid",
            source: err,
        }),
    }
}

/// kcmp(2): compare kernel objects of two tasks (shared files, mm...).
pub fn kcmp() -> ProbeResult {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, own_pid(), own_pid(), KCMP_VM, 0, 0) };
    if check(ret, "kcmp")? != 0 {
        return Err(ProbeError::Missing(
            "kcmp says our mm differs from itself".into(),
        ));
    }
    Ok(())
}

/// get_robust_list(2) on ourselves: dumped into the core image.
pub fn get_robust_list() -> ProbeResult {
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: `head` and `len` are live, writable words.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut usize,
            &mut len as *mut usize,
        )
    };
    check(ret, "get_robust_list")?;
    Ok(())
}

/// prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): the interface that restores the mm
/// layout (brk, arg/env areas, auxv, exe) in one call.
pub fn prctl_set_mm_map() -> ProbeResult {
    const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
    let mut size: libc::c_uint = 0;
    // SAFETY: `size` is a live, writable c_uint; this query changes nothing.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut libc::c_uint,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret as libc::c_long, "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)")?;
    if size == 0 {
        return Err(ProbeError::Missing("PR_SET_MM_MAP_SIZE returned 0".into()));
    }
    Ok(())
}

/// memfd_create(2): used for memfd-backed mappings and files.
pub fn memfd_create() -> ProbeResult {
    let name: &CStr = c"crust-probe";
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    owned(fd as libc::c_long, "memfd_create")?;
    Ok(())
}

/// memfd_create(2) with MFD_HUGETLB (a memfd on hugetlbfs), as CRIU's
/// kerndat asks it: the kernel can make one. Whether huge pages are free to
/// fill it is a matter of vm.nr_hugepages at the time, not of the kernel.
pub fn memfd_hugetlb() -> ProbeResult {
    let name: &CStr = c"crust-probe";
    let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB;
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    owned(fd as libc::c_long, "memfd_create(MFD_HUGETLB)")?;
    Ok(())
}

/// TCP_REPAIR on a fresh socket: needed for `--tcp-established`.
pub fn tcp_repair() -> ProbeResult {
    // SAFETY: plain integer arguments; the result is a new descriptor.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let sock = owned(fd as libc::c_long, "socket(AF_INET, SOCK_STREAM)")?;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret as libc::c_long, "setsockopt(TCP_REPAIR)")?;
    Ok(())
}

/// NETLINK_SOCK_DIAG: how sockets are inspected on dump.
pub fn sock_diag() -> ProbeResult {
    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    // SAFETY: plain integer arguments; the result is a new descriptor.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    owned(fd as libc::c_long, "socket(AF_NETLINK, NETLINK_SOCK_DIAG)")?;
    Ok(())
}

/// arch_prctl(ARCH_MAP_VDSO_64) exists (we already have a vDSO, so a kernel
/// that knows the call answers EEXIST and maps nothing).
pub fn can_map_vdso() -> ProbeResult {
    const ARCH_MAP_VDSO_64: libc::c_long = 0x2003;
    // SAFETY: with a vDSO already mapped the kernel refuses (EEXIST) before
    // touching our address space; address 0 cannot be mapped anyway.
    let ret = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_MAP_VDSO_64, 0) };
    if ret >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::EPERM) => Ok(()),
        _ => Err(ProbeError::Os {
            what: "arch_prctl(ARCH_MAP_VDSO_64)",
            source: err,
        }),
    }
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// /proc/PID/map_files: how file-backed mappings are reopened on dump.
pub fn map_files() -> ProbeResult {
    let dir = fs::read_dir("/proc/self/map_files").map_err(|source| ProbeError::Os {
        what: "reading /proc/self/map_files",
        source,
    })?;
    if let Some(entry) = dir.into_iter().next() {
        let entry = entry.map_err(|source| ProbeError::Os {
            what: "reading /proc/self/map_files",
            source,
        })?;
        fs::read_link(entry.path()).map_err(|source| ProbeError::Os {
            what: "readlink in /proc/self/map_files",
            source,
        })?;
        return Ok(());
    }
    Err(ProbeError::Missing("/proc/self/map_files is empty".into()))
}

/// `mnt_id:` in /proc/PID/fdinfo/FD.
pub fn mnt_id() -> ProbeResult {
    let f = fs::File::open("/proc/self/status").map_err(|source| ProbeError::Os {
        what: "opening /proc/self/status",
        source,
    })?;
    let info =
        fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).map_err(|source| {
            ProbeError::Os {
                what: "reading /proc/self/fdinfo",
                source,
            }
        })?;
    if info.lines().any(|l| l.starts_with("mnt_id:")) {
        Ok(())
    } else {
        Err(ProbeError::Missing("no mnt_id in /proc/PID/fdinfo".into()))
    }
}

/// Time namespaces (/proc/self/ns/time).
pub fn timens() -> ProbeResult {
    fs::metadata("/proc/self/ns/time").map_err(|source| ProbeError::Os {
        what: "stat /proc/self/ns/time",
        source,
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Memory tracking
// ---------------------------------------------------------------------------

/// An anonymous private mapping of `pages` pages; unmapped on drop.
struct AnonMap {
    addr: *mut libc::c_void,
    len: usize,
}

impl AnonMap {
    fn new(pages: usize) -> Result<Self, ProbeError> {
        let len = pages * page_size();
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address
        // overlaps nothing we own.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(os("mmap"));
        }
        Ok(AnonMap { addr, len })
    }

    /// Write one byte into the first page so that it becomes present.
    fn touch_first(&self) {
        // SAFETY: `addr` is the start of a live, writable mapping of at least
        // one page that only this object refers to.
        unsafe { std::ptr::write_volatile(self.addr.cast::<u8>(), 1) };
    }

    fn start(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this object created; nothing
        // refers to it any more.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as usize
    } else {
        4096
    }
}

/// CRIU's `mem_dirty_track`, as crust does it: the kernel can tell which
/// pages a task wrote since a point in time, with soft-dirty bits
/// ([`soft_dirty`], CRIU's only way; untested on the machines crust is
/// built on, whose kernels lack it) or with asynchronous userfaultfd
/// write-protection and PAGEMAP_SCAN ([`uffd_wp_tracking`], Linux 6.7).
pub fn mem_dirty_track() -> ProbeResult {
    let Err(uffd) = uffd_wp_tracking() else {
        return Ok(());
    };
    let Err(soft) = soft_dirty() else {
        return Ok(());
    };
    Err(ProbeError::Missing(format!(
        "no way to track written pages: {}; {}",
        chain(&uffd),
        chain(&soft)
    )))
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Written pages tracked without soft-dirty (Linux 6.7): a userfaultfd of
/// this process in asynchronous write-protect mode over a 4-page mapping,
/// protected; after a write to page 1, PAGEMAP_SCAN with
/// `PM_SCAN_WP_MATCHING` reports exactly that page and protects it again,
/// and a second scan reports nothing.
pub fn uffd_wp_tracking() -> ProbeResult {
    use crate::mem::{pagemap_scan_written, PageRegion};
    use crate::uffd::{Uffd, TRACKING_FEATURES};
    let map = AnonMap::new(4)?;
    let (start, len) = (map.start(), map.len as u64);
    let uffd = Uffd::new_local().map_err(|source| ProbeError::Os {
        what: "userfaultfd",
        source,
    })?;
    let step = |what: &'static str| move |source| ProbeError::Os { what, source };
    uffd.api(TRACKING_FEATURES)
        .map_err(step("UFFDIO_API with WP_ASYNC and WP_UNPOPULATED"))?;
    uffd.register_wp(start, len)
        .map_err(step("UFFDIO_REGISTER (write-protect)"))?;
    uffd.write_protect(start, len, true)
        .map_err(step("UFFDIO_WRITEPROTECT"))?;
    let pagemap =
        fs::File::open("/proc/self/pagemap").map_err(step("opening /proc/self/pagemap"))?;
    let page = page_size() as u64;
    // SAFETY: page 1 of the live, writable mapping `map` owns.
    unsafe { std::ptr::write_volatile((start + page) as *mut u8, 1) };
    let mut out = [PageRegion::default(); 4];
    let mut scan = || {
        pagemap_scan_written(&pagemap, start, start + len, &mut out)
            .map(|(n, _)| {
                out.iter()
                    .take(n)
                    .map(|r| (r.start, r.end))
                    .collect::<Vec<_>>()
            })
            .map_err(step("ioctl(PAGEMAP_SCAN) with PM_SCAN_WP_MATCHING"))
    };
    let first = scan()?;
    let second = scan()?;
    drop(uffd);
    if first == [(start + page, start + 2 * page)] && second.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Missing(format!(
            "PAGEMAP_SCAN reported written pages {first:x?} then {second:x?} for one \
             page written"
        )))
    }
}

/// Soft-dirty bits (CONFIG_MEM_SOFT_DIRTY), CRIU's way of tracking.
/// A freshly written page has bit 55 of its pagemap entry set when the
/// kernel tracks soft-dirty pages.
pub fn soft_dirty() -> ProbeResult {
    let map = AnonMap::new(1)?;
    map.touch_first();
    let pagemap = fs::File::open("/proc/self/pagemap").map_err(|source| ProbeError::Os {
        what: "opening /proc/self/pagemap",
        source,
    })?;
    let mut entry = [0u8; 8];
    let off = map.start() / page_size() as u64 * 8;
    pagemap
        .read_exact_at(&mut entry, off)
        .map_err(|source| ProbeError::Os {
            what: "reading /proc/self/pagemap",
            source,
        })?;
    let e = u64::from_le_bytes(entry);
    if e & (1 << 55) != 0 {
        Ok(())
    } else {
        Err(ProbeError::Missing(
            "no soft-dirty bit in /proc/PID/pagemap (CONFIG_MEM_SOFT_DIRTY is off)".into(),
        ))
    }
}

const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610; // _IOWR('f', 16, struct pm_scan_arg)
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_GUARD: u64 = 1 << 8;

/// Run PAGEMAP_SCAN over a two-page mapping whose first page is present,
/// reporting `return_mask`; returns the regions found.
fn pagemap_scan_with(return_mask: u64) -> Result<Vec<[u64; 3]>, ProbeError> {
    let map = AnonMap::new(2)?;
    map.touch_first();
    let pagemap = fs::File::open("/proc/self/pagemap").map_err(|source| ProbeError::Os {
        what: "opening /proc/self/pagemap",
        source,
    })?;
    // struct page_region { start, end, categories }
    let mut regions = [[0u64; 3]; 4];
    // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len,
    // max_pages, category_inverted, category_mask, category_anyof_mask,
    // return_mask.
    let arg: [u64; 12] = [
        96,
        0,
        map.start(),
        map.start() + map.len as u64,
        0,
        regions.as_mut_ptr() as u64,
        regions.len() as u64,
        0,
        0,
        0,
        PAGE_IS_PRESENT,
        return_mask,
    ];
    // SAFETY: `arg` is a live 96-byte pm_scan_arg whose `vec` points at
    // `regions`, which has room for `vec_len` page_region entries.
    let ret = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, arg.as_ptr()) };
    let n = check(ret as libc::c_long, "ioctl(PAGEMAP_SCAN)")? as usize;
    Ok(regions[..n.min(regions.len())].to_vec())
}

/// PAGEMAP_SCAN (Linux 6.7): find present pages in one ioctl per range.
pub fn pagemap_scan() -> ProbeResult {
    let found = pagemap_scan_with(PAGE_IS_PRESENT)?;
    if found.len() == 1 && found[0][1] - found[0][0] == page_size() as u64 {
        Ok(())
    } else {
        Err(ProbeError::Missing(format!(
            "PAGEMAP_SCAN reported {found:x?} for one present page"
        )))
    }
}

/// PAGE_IS_GUARD in PAGEMAP_SCAN (Linux 6.14): find MADV_GUARD_INSTALL pages.
pub fn pagemap_scan_guard_pages() -> ProbeResult {
    pagemap_scan_with(PAGE_IS_PRESENT | PAGE_IS_GUARD)?;
    Ok(())
}

fn io_destroy(ctx: u64) -> libc::c_long {
    // SAFETY: io_destroy takes a context id; a wrong one is refused.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) }
}

fn unmap(p: *mut libc::c_void, len: usize) {
    // SAFETY: callers pass a mapping of their own that nothing else uses.
    unsafe { libc::munmap(p, len) };
}

/// AIO rings may be moved with mremap (Linux 3.19): the kernel follows
/// the ring to its new place (io_destroy takes the new address).
pub fn aio_remap() -> ProbeResult {
    let page = page_size() as u64;
    let mut ctx: u64 = 0;
    let ctx_ptr = &mut ctx as *mut u64;
    // SAFETY: io_setup writes one aio_context_t into `ctx`, alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_io_setup, 16 as libc::c_long, ctx_ptr) };
    check(ret, "io_setup")?;
    let nr_at = (ctx as *const u32).wrapping_add(1);
    // SAFETY: the ring's header is mapped readable at `ctx` while the
    // context exists; `nr` is its second u32.
    let nr = unsafe { std::ptr::read_volatile(nr_at) } as u64;
    let len = (32 + 32 * nr).div_ceil(page) * page;
    // SAFETY: a fresh anonymous mapping, only used as the target of mremap.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if target == libc::MAP_FAILED {
        let err = os("mmap");
        io_destroy(ctx);
        return Err(err);
    }
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    // SAFETY: moves the ring (len bytes at ctx) over our own mapping.
    let moved = unsafe {
        libc::mremap(
            ctx as *mut libc::c_void,
            len as usize,
            len as usize,
            flags,
            target,
        )
    };
    if moved != target {
        let err = os("mremap of an AIO ring");
        io_destroy(ctx);
        unmap(target, len as usize);
        return Err(err);
    }
    if io_destroy(target as u64) < 0 {
        // The old id still names it: clean up with it.
        io_destroy(ctx);
        unmap(target, len as usize);
        return Err(ProbeError::Missing(
            "the kernel does not follow a moved AIO ring".into(),
        ));
    }
    Ok(())
}

const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00;
const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

fn open_uffd() -> Result<OwnedFd, ProbeError> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_long;
    // SAFETY: plain integer arguments; the result is a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        return owned(fd, "userfaultfd");
    }
    let first = io::Error::last_os_error();
    // Fall back on /dev/userfaultfd (Linux 6.1) when the syscall is
    // restricted by vm.unprivileged_userfaultfd.
    let dev = fs::File::open("/dev/userfaultfd").map_err(|_| ProbeError::Os {
        what: "userfaultfd",
        source: first,
    })?;
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as an integer argument.
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) };
    owned(
        fd as libc::c_long,
        "ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)",
    )
}

/// The feature bits userfaultfd offers on this kernel.
fn uffd_features() -> Result<u64, ProbeError> {
    let fd = open_uffd()?;
    // struct uffdio_api { api, features, ioctls }
    let mut api: [u64; 3] = [UFFD_API, 0, 0];
    // SAFETY: `api` is a live, writable 24-byte uffdio_api.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()) };
    check(ret as libc::c_long, "ioctl(UFFDIO_API)")?;
    Ok(api[1])
}

fn uffd_require(bits: u64, what: &str) -> ProbeResult {
    let have = uffd_features()?;
    if have & bits == bits {
        Ok(())
    } else {
        Err(ProbeError::Missing(format!(
            "userfaultfd lacks {what} (features {have:#x}, need {bits:#x})"
        )))
    }
}

/// userfaultfd(2) itself (lazy restore).
pub fn uffd() -> ProbeResult {
    uffd_features().map(|_| ())
}

/// Non-cooperative userfaultfd events (fork, remap, remove, unmap).
pub fn uffd_noncoop() -> ProbeResult {
    uffd_require(
        UFFD_FEATURE_EVENT_FORK
            | UFFD_FEATURE_EVENT_REMAP
            | UFFD_FEATURE_EVENT_REMOVE
            | UFFD_FEATURE_EVENT_UNMAP,
        "non-cooperative events",
    )
}

/// userfaultfd write-protect faults.
pub fn uffd_wp() -> ProbeResult {
    uffd_require(UFFD_FEATURE_PAGEFAULT_FLAG_WP, "write-protect")
}

/// Asynchronous userfaultfd write-protect (Linux 6.7): with PAGEMAP_SCAN it
/// tracks written pages without soft-dirty bits.
pub fn uffd_wp_async() -> ProbeResult {
    uffd_require(UFFD_FEATURE_WP_ASYNC, "asynchronous write-protect")
}

/// prctl(PR_TIMER_CREATE_RESTORE_IDS): timer_create() takes the id a
/// restored POSIX timer had (Linux 6.17); the GET form changes nothing.
pub fn timer_cr_ids() -> ProbeResult {
    const PR_TIMER_CREATE_RESTORE_IDS: libc::c_int = 77;
    const PR_TIMER_CREATE_RESTORE_IDS_GET: libc::c_ulong = 2;
    // SAFETY: the GET form only reads a flag of this process; every
    // argument is an integer.
    let ret = unsafe {
        libc::prctl(
            PR_TIMER_CREATE_RESTORE_IDS,
            PR_TIMER_CREATE_RESTORE_IDS_GET,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret as libc::c_long, "prctl(PR_TIMER_CREATE_RESTORE_IDS)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_probes_pass_here() {
        // What every kernel crust supports has, and this test machine has.
        seize().unwrap();
        process_vm_readv().unwrap();
        pidfd_open().unwrap();
        pidfd_getfd().unwrap();
        clone3_set_tid().unwrap();
        memfd_create().unwrap();
        map_files().unwrap();
        mnt_id().unwrap();
        get_robust_list().unwrap();
        pagemap_scan().unwrap();
        // Linux 6.7+, as every kernel crust is tested on.
        uffd_wp_tracking().unwrap();
        mem_dirty_track().unwrap();
    }

    #[test]
    fn every_probe_returns() {
        // No probe may panic or hang, whatever the answer.
        let probes: [fn() -> ProbeResult; 15] = [
            aio_remap,
            get_rseq_conf,
            seccomp_suspend,
            seccomp_filters,
            kcmp,
            prctl_set_mm_map,
            tcp_repair,
            sock_diag,
            can_map_vdso,
            timens,
            mem_dirty_track,
            soft_dirty,
            pagemap_scan_guard_pages,
            uffd,
            uffd_wp_async,
        ];
        for p in probes {
            let _ = p();
        }
        let _ = uffd_noncoop();
        let _ = uffd_wp();
    }

    #[test]
    fn wait_and_kill_a_child() {
        let child = SleepingChild::spawn().unwrap();
        let pid = child.pid;
        assert_eq!(try_wait(pid).unwrap(), None);
        kill(pid, libc::SIGTERM).unwrap();
        assert_eq!(wait_exit(pid).unwrap(), ExitStatus::Signaled(libc::SIGTERM));
        std::mem::forget(child);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Exited(3).code(), 3);
    }
}
