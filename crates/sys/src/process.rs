//! Process creation, waiting and signalling.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::cvt;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// What `waitpid` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited normally with this code.
    Exited(i32),
    /// Killed by this signal (`core` when it dumped core).
    Signaled { sig: i32, core: bool },
    /// Stopped (ptrace or job control). `event` is status >> 16 (the
    /// PTRACE_EVENT_* value, 0 for a plain signal stop).
    Stopped { sig: i32, event: i32 },
    /// Continued (WCONTINUED).
    Continued,
}

impl WaitStatus {
    pub fn from_raw(status: i32) -> WaitStatus {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled {
                sig: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            }
        } else if libc::WIFSTOPPED(status) {
            WaitStatus::Stopped {
                sig: libc::WSTOPSIG(status),
                event: (status >> 16) & 0xff,
            }
        } else {
            WaitStatus::Continued
        }
    }
}

/// `waitpid(pid, flags | __WALL)`. Returns `None` with WNOHANG when
/// nothing changed. Retries on EINTR.
pub fn waitpid(pid: i32, flags: i32) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let r = unsafe { libc::waitpid(pid, &mut status, flags | libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some((r, WaitStatus::from_raw(status))));
    }
}

/// kill(2).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes only integers.
    let r = unsafe { libc::kill(pid, sig) };
    cvt(r as libc::c_long).map(drop)
}

/// tgkill(2).
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    cvt(r).map(drop)
}

/// The calling process's pid.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::gettid() }
}

/// Result of [`clone3_fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkResult {
    Parent { child: i32 },
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork-like clone3 that asks for specific pids: `set_tid[0]` is the pid in
/// the innermost (new or current) pid namespace, further entries in the
/// outer ones. An empty `set_tid` lets the kernel choose. `flags` are extra
/// CLONE_* flags (e.g. CLONE_NEWPID, CLONE_PARENT); SIGCHLD is the exit signal.
///
/// The child runs on a copy of the caller's address space, like fork(): it
/// must restrict itself to async-signal-safe work (the caller must be
/// single-threaded or accept that).
pub fn clone3_fork(set_tid: &[i32], flags: u64) -> io::Result<ForkResult> {
    let args = CloneArgs {
        flags,
        // With CLONE_PARENT the kernel takes the exit signal from the
        // caller and refuses one here.
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        set_tid: if set_tid.is_empty() {
            0
        } else {
            set_tid.as_ptr() as u64
        },
        set_tid_size: set_tid.len() as u64,
        ..Default::default()
    };
    // Without CLONE_VM the child returns here with 0 on its own copy of
    // the stack, like fork().
    // SAFETY: `args` and the `set_tid` array outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match cvt(r)? {
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: pid as i32 }),
    }
}

/// raise(SIGSTOP) style self-stop used by a freshly cloned child.
pub fn stop_self() {
    // SAFETY: getpid takes nothing and is async-signal-safe.
    let me = unsafe { libc::getpid() };
    // SAFETY: kill takes only integers and is async-signal-safe.
    unsafe {
        libc::kill(me, libc::SIGSTOP);
    }
}

/// In a freshly cloned child (async-signal-safe): be killed when the
/// thread that cloned it ends, and check that its process (`parent`, a
/// pidfd opened before the clone) had not already gone before that was
/// armed. Err means the parent is gone (or cannot be checked): the child
/// should exit at once.
///
/// Covers the window before a tracer sets PTRACE_O_EXITKILL on a child
/// that called PTRACE_TRACEME: without it, a tracer killed in between
/// leaves the child untraced and running (or stopped) on its own.
pub fn die_with_parent(parent: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    cvt(r as i64)?;
    let mut p = libc::pollfd {
        fd: parent.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait; a pidfd is readable once its
    // process has exited.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    cvt(r as i64)?;
    if p.revents != 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Leave the process immediately (no atexit handlers, no unwinding); for
/// cloned children whose setup failed.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// prlimit64 on another process (set only).
pub fn set_rlimit(pid: i32, resource: u32, cur: u64, max: u64) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: `new` is a valid rlimit64 for the call; old_limit is NULL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            pid,
            resource,
            &new as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        )
    };
    cvt(r).map(drop)
}

/// prlimit64 on another process (get only).
pub fn get_rlimit(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid out-pointer; new_limit is NULL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            pid,
            resource,
            std::ptr::null::<libc::rlimit64>(),
            &mut old as *mut libc::rlimit64,
        )
    };
    cvt(r)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// get_robust_list(2) of another task: (head, len).
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    cvt(r)?;
    Ok((head, len as u64))
}

/// Block every signal in the calling thread; returns the old mask. Used
/// around clone3 so the child starts with everything blocked.
pub fn block_all_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; all zeroes is a valid (empty) set.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a live, writable sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: `all` is a filled sigset_t, `old` a writable one the call
    // fills before it is read.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(old)
}

/// Restore a mask saved by [`block_all_signals`].
pub fn set_signal_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `mask` is a valid sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// mmap an anonymous private RWX region at exactly `addr` in the calling
/// process, without replacing anything, and copy `code` to its start. Used
/// by a freshly cloned restore child to lay down its syscall trampoline.
/// Async-signal-safe.
pub fn map_trampoline(addr: u64, len: u64, code: &[u8]) -> io::Result<()> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no
    // live memory of this process is affected.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if p as u64 != addr {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    let n = code.len().min(len as usize);
    // SAFETY: the region [p, p+len) was just mapped writable and is ours;
    // `code` does not overlap it.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p as *mut u8, n) };
    Ok(())
}

/// kcmp(2) KCMP_FILE: do fd `a` of `pid1` and fd `b` of `pid2` refer to the
/// same open file description?
pub fn kcmp_file(pid1: i32, pid2: i32, a: i32, b: i32) -> io::Result<bool> {
    kcmp(pid1, pid2, 0, a as u64, b as u64)
}

/// kcmp(2) KCMP_EPOLL_TFD: is fd `fd` of `pid` open on the file of the
/// target of epoll fd `efd` registered as fd `tfd` (the `toff`-th target
/// registered with that number, in the order fdinfo lists them)?
pub fn kcmp_epoll_tfd(pid: i32, fd: i32, efd: i32, tfd: i32, toff: u32) -> io::Result<bool> {
    kcmp_epoll_tfd_of(pid, fd, pid, efd, tfd, toff)
}

/// [`kcmp_epoll_tfd`] with the epoll fd `efd` in another process, `epid`
/// (an epoll crust holds, carried by a message, whose targets are named
/// by fds of a task).
pub fn kcmp_epoll_tfd_of(
    pid: i32,
    fd: i32,
    epid: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> io::Result<bool> {
    const KCMP_EPOLL_TFD: i32 = 7;
    // struct kcmp_epoll_slot { __u32 efd, tfd, toff; }
    let slot: [u32; 3] = [efd as u32, tfd as u32, toff];
    // SAFETY: `slot` is a valid struct kcmp_epoll_slot that outlives the
    // call; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            epid,
            KCMP_EPOLL_TFD,
            fd as u64,
            slot.as_ptr() as u64,
        )
    };
    Ok(cvt(r)? == 0)
}

/// kcmp(2): is kernel object `kind` (KCMP_FILE 0, KCMP_VM 1, KCMP_FILES 2,
/// KCMP_FS 3, KCMP_SIGHAND 4, ...) of `pid1` the same as that of `pid2`?
pub fn kcmp(pid1: i32, pid2: i32, kind: i32, a: u64, b: u64) -> io::Result<bool> {
    // SAFETY: kcmp with these types takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind, a, b) };
    Ok(cvt(r)? == 0)
}

/// kcmp(2) of an object of `kind` (KCMP_VM 1, KCMP_FILES 2, KCMP_FS 3,
/// KCMP_SIGHAND 4...) of `pid1` with that of `pid2`, as the kernel orders
/// them (an order that hides addresses but holds while both live):
/// `Some(Equal)` for the same object; `None` when the kernel gives no
/// order (kcmp's 3).
pub fn kcmp_order(pid1: i32, pid2: i32, kind: i32) -> io::Result<Option<std::cmp::Ordering>> {
    // SAFETY: kcmp with these types takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind, 0u64, 0u64) };
    Ok(match cvt(r)? {
        0 => Some(std::cmp::Ordering::Equal),
        1 => Some(std::cmp::Ordering::Less),
        2 => Some(std::cmp::Ordering::Greater),
        _ => None,
    })
}

/// clock_gettime(2) for `clock` as (seconds, nanoseconds).
pub fn clock_gettime(clock: libc::clockid_t) -> io::Result<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    cvt(r as libc::c_long)?;
    Ok((ts.tv_sec, ts.tv_nsec))
}

/// The first stop signal caught by [`catch_stop_signals`], 0 for none.
static STOP_ASKED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_stop(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    let _ = STOP_ASKED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Catch SIGINT, SIGTERM, SIGHUP and SIGQUIT instead of dying of them: the
/// signal is only noted (see [`stop_asked`]), so that work which must not
/// be cut short (a dump, with tasks under crust's control) can roll back
/// and stop cleanly at its next safe point. Interrupted system calls are
/// restarted (SA_RESTART).
pub fn catch_stop_signals() -> io::Result<()> {
    on_stop_signals(note_stop)
}

/// The signals a stop request comes by.
const STOP_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Install `handler` (async-signal-safe: an atomic store, a kill) for
/// [`STOP_SIGNALS`], with SA_RESTART.
fn on_stop_signals(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    for sig in STOP_SIGNALS {
        // SAFETY: sigaction is plain data; all-zero is a valid value
        // (empty mask, no flags) that is filled in below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = handler as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act` is a valid sigaction whose handler is
        // async-signal-safe; the old action is not asked for.
        let r = unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
        cvt(r as i64)?;
    }
    Ok(())
}

/// The stop signal caught since [`catch_stop_signals`], if any.
pub fn stop_asked() -> Option<i32> {
    match STOP_ASKED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The worker process of [`split_worker`], 0 in the worker itself and
/// before the split.
static WORKER: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_stop(sig: libc::c_int) {
    let worker = WORKER.load(Ordering::SeqCst);
    if worker > 0 {
        // SAFETY: kill takes only integers and is async-signal-safe.
        unsafe {
            libc::kill(worker, sig);
        }
    }
}

/// Which side of [`split_worker`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The process the caller started (its pid, its process group): it
    /// only waits for the worker, see [`wait_worker`].
    FrontEnd { worker: i32 },
    /// The forked worker, which does the work.
    Worker,
}

/// Fork the process that does work which must not be cut short (a dump,
/// with tasks under its control) away from the one the caller sees.
///
/// The worker runs in a session of its own, so that neither a terminal's
/// Ctrl-C, nor `kill -9 -PGID` of the caller's process group, nor a
/// signal to the front end's pid reaches it directly: the front end
/// forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and if the front
/// end dies (even of SIGKILL) the worker gets SIGTERM (PR_SET_PDEATHSIG).
/// Either way the worker only notes the signal ([`stop_asked`]) and rolls
/// back at its next safe point.
///
/// Call it while single-threaded, with [`catch_stop_signals`] already in
/// force (the worker inherits it) and buffered output flushed.
pub fn split_worker() -> io::Result<Side> {
    let front = getpid();
    match clone3_fork(&[], 0)? {
        ForkResult::Parent { child } => {
            WORKER.store(child, Ordering::SeqCst);
            on_stop_signals(forward_stop)?;
            // A signal that came between the fork and the handlers above
            // was noted here, not forwarded.
            if let Some(sig) = stop_asked() {
                forward_stop(sig);
            }
            Ok(Side::FrontEnd { worker: child })
        }
        ForkResult::Child => {
            // SAFETY: setsid takes nothing; the child of a fork is never a
            // process group leader, so it succeeds.
            let r = unsafe { libc::setsid() };
            cvt(r as i64)?;
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
            let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
            cvt(r as i64)?;
            // SAFETY: getppid takes nothing.
            if unsafe { libc::getppid() } != front {
                // The front end died before the death signal was armed.
                note_stop(libc::SIGTERM);
            }
            Ok(Side::Worker)
        }
    }
}

/// In the front end: wait for the worker and return its exit code (128 +
/// the signal that killed it, as a shell reports it).
pub fn wait_worker(worker: i32) -> io::Result<i32> {
    loop {
        match waitpid(worker, 0) {
            Ok(Some((_, WaitStatus::Exited(code)))) => return Ok(code),
            Ok(Some((_, WaitStatus::Signaled { sig, .. }))) => return Ok(128 + sig),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Block SIGCHLD in the calling thread (threads it starts later inherit
/// the mask), so that [`wait_sigchld`] sees every one: an unblocked
/// SIGCHLD whose action is the default is discarded when it is sent.
pub fn block_sigchld() -> io::Result<()> {
    let set = sigchld_set();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is
    // allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Sleep until a SIGCHLD is pending (a child or tracee changed state) or
/// `timeout` passed; the signal is consumed. Call [`block_sigchld`] first.
pub fn wait_sigchld(timeout: std::time::Duration) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let set = sigchld_set();
    // SAFETY: `set` is an initialised sigset_t, `ts` a valid timespec; a
    // null siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(()),
            _ => Err(e),
        };
    }
    Ok(())
}

/// The signal set holding SIGCHLD alone.
fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t to write into.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above; SIGCHLD is a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGCHLD) };
    set
}

/// prctl(PR_SET_DUMPABLE, 1): a process started from a binary with file
/// capabilities is not dumpable, which makes its /proc files root's; an
/// unprivileged crust needs them to be its own.
pub fn set_dumpable() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    cvt(r as i64).map(drop)
}

/// A set of CPUs, a bit per CPU, as `sched_getaffinity` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(Vec<u64>);

impl CpuSet {
    /// Whether CPU `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0
            .get(cpu / 64)
            .is_some_and(|w| w & (1u64 << (cpu % 64)) != 0)
    }

    /// How many CPUs the set holds.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The lowest CPU of the set.
    pub fn first(&self) -> Option<usize> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
    }

    /// The set of CPU `cpu` alone, as wide as `self`.
    pub fn only(&self, cpu: usize) -> CpuSet {
        let mut words = vec![0u64; self.0.len().max(cpu / 64 + 1)];
        if let Some(w) = words.get_mut(cpu / 64) {
            *w = 1u64 << (cpu % 64);
        }
        CpuSet(words)
    }
}

/// The CPUs thread `tid` may run on (0: the calling thread).
pub fn sched_getaffinity(tid: i32) -> io::Result<CpuSet> {
    // 1024 CPUs, then wider while the kernel's mask does not fit.
    let mut words = 16usize;
    loop {
        let mut buf = vec![0u64; words];
        // SAFETY: `buf` is a live, writable buffer of `words * 8` bytes,
        // the length passed; the kernel writes at most that many.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getaffinity,
                tid,
                words * 8,
                buf.as_mut_ptr(),
            )
        };
        match cvt(r) {
            Ok(_) => return Ok(CpuSet(buf)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && words < 1 << 12 => words *= 2,
            Err(e) => return Err(e),
        }
    }
}

/// Let thread `tid` (0: the calling thread) run on the CPUs of `set` only.
pub fn sched_setaffinity(tid: i32, set: &CpuSet) -> io::Result<()> {
    // SAFETY: `set.0` is a live buffer of `len * 8` bytes, the length
    // passed; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid,
            set.0.len() * 8,
            set.0.as_ptr(),
        )
    };
    cvt(r).map(drop)
}

/// The calling thread's scheduling policy (SCHED_OTHER, SCHED_FIFO...)
/// and its static priority.
pub fn sched_policy() -> io::Result<(i32, i32)> {
    // SAFETY: sched_getscheduler takes a pid only (0: the calling thread).
    let policy = cvt(unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) })?;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid out-pointer for the call's duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getparam,
            0,
            &mut param as *mut libc::sched_param,
        )
    };
    cvt(r)?;
    Ok((policy as i32, param.sched_priority))
}

/// Set the calling thread's scheduling policy and static priority
/// (SCHED_FIFO and SCHED_RR need CAP_SYS_NICE or an RLIMIT_RTPRIO).
pub fn set_sched_policy(policy: i32, priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a live sched_param the kernel only reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            policy,
            &param as *const libc::sched_param,
        )
    };
    cvt(r).map(drop)
}

/// The CPU the calling thread runs on (it may move right after).
pub fn current_cpu() -> io::Result<usize> {
    let mut cpu: u32 = 0;
    // SAFETY: `cpu` is a valid out-pointer for the call's duration; the
    // node and cache arguments may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            std::ptr::null_mut::<u32>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    cvt(r).map(|_| cpu as usize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cpu_tests {
    use super::*;

    #[test]
    fn pin_and_unpin_own_thread() {
        let orig = sched_getaffinity(0).unwrap();
        let cpu = current_cpu().unwrap();
        assert!(orig.contains(cpu));
        let one = orig.only(cpu);
        assert_eq!(one.count(), 1);
        assert_eq!(one.first(), Some(cpu));
        // In a thread of its own: the test harness's threads keep theirs.
        std::thread::spawn(move || {
            sched_setaffinity(0, &one).unwrap();
            assert_eq!(sched_getaffinity(0).unwrap(), one);
            assert_eq!(current_cpu().unwrap(), cpu);
            sched_setaffinity(0, &orig).unwrap();
            assert_eq!(sched_getaffinity(0).unwrap(), orig);
        })
        .join()
        .unwrap();
    }
}
