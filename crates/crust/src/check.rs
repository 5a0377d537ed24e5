//! `crust check`: which kernel features crust needs, and whether this
//! kernel has them, with CRIU's command line:
//!
//! - `crust check`: the features every dump and restore needs (crust's
//!   own list, [`REQUIRED`]); "Looks good." or "Does not look good.";
//! - `--extra`, `--experimental`, `--all`: also CRIU's categories 2 and 3,
//!   as far as crust uses them ("Looks good but some kernel features are
//!   missing ..." and exit code 1 when one is missing);
//! - `--feature NAME`: any of CRIU 4.2's 45 names ([`FEATURES`]), answered
//!   for what crust can do: a feature crust does not use yet is "no" even
//!   when the kernel has it (the reason is logged).

use anyhow::{bail, Result};
use crust_sys::probe::{self, ProbeError, ProbeResult};

use crate::cli::Opts;
use crate::error_chain;

/// How crust answers a feature.
#[derive(Clone, Copy)]
enum Answer {
    /// crust uses it: the kernel is asked.
    Probe(fn() -> ProbeResult),
    /// crust does not use it (yet): "no", for this reason.
    Lacks(&'static str),
    /// crust has the kernel side but not the feature yet: "no", for this
    /// reason, with what the kernel's probe found (becomes `Probe` when
    /// crust does it). None today; kept for the next such feature.
    #[allow(dead_code)]
    Pending(fn() -> ProbeResult, &'static str),
}

use Answer::{Lacks, Pending, Probe};

/// CRIU's categories of `criu check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    /// Checked with `--extra` (CRIU's category 2).
    Extra,
    /// Checked with `--experimental` (category 3).
    Experimental,
    /// Only with `--feature` (CRIU checks it nowhere else).
    FeatureOnly,
}

/// One of CRIU 4.2's feature names (cr-check.c's feature_list).
struct Feature {
    name: &'static str,
    category: Category,
    answer: Answer,
}

const fn feat(name: &'static str, category: Category, answer: Answer) -> Feature {
    Feature {
        name,
        category,
        answer,
    }
}

use Category::{Experimental, Extra, FeatureOnly};

/// CRIU 4.2's feature names, in CRIU's order, with crust's answer.
static FEATURES: &[Feature] = &[
    feat("mnt_id", Extra, Probe(probe::mnt_id)),
    // Soft-dirty, or userfaultfd write-protection with PAGEMAP_SCAN
    // (mem/track.rs, used by pre-dump): a deliberate difference from CRIU,
    // which knows only soft-dirty.
    feat("mem_dirty_track", Extra, Probe(probe::mem_dirty_track)),
    feat("aio_remap", Extra, Probe(probe::aio_remap)),
    feat("timerfd", Extra, Probe(timerfd)),
    feat("tun", FeatureOnly, Probe(tun)),
    feat("tun_ns", FeatureOnly, Probe(tun)),
    feat("userns", Extra, Probe(userns)),
    feat("fdinfo_lock", Extra, Probe(fdinfo_lock)),
    feat("seccomp_suspend", Extra, Probe(seccomp)),
    feat("seccomp_filters", Extra, Probe(seccomp)),
    feat("loginuid", Extra, Probe(loginuid)),
    feat("cgroupns", Extra, Probe(cgroupns)),
    feat(
        "autofs",
        Experimental,
        Lacks("crust does not dump autofs mounts yet"),
    ),
    feat("tcp_half_closed", Extra, Probe(probe::tcp_repair)),
    feat(
        "compat_cr",
        Experimental,
        Lacks("crust restores 64-bit tasks only"),
    ),
    // Lazy restore (`restore --lazy-pages`, `lazy-pages`): a userfaultfd
    // handling kernel faults too; noncoop: with its fork, mremap, remove
    // and unmap events (lazy/ in the engine).
    feat("uffd", Extra, Probe(uffd)),
    feat("uffd-noncoop", Extra, Probe(uffd_noncoop)),
    feat(
        "can_map_vdso",
        Extra,
        Lacks("crust moves the vDSO with mremap, it does not map one (ARCH_MAP_VDSO)"),
    ),
    feat("sk_ns", Extra, Probe(sk_ns)),
    feat("sk_unix_file", FeatureOnly, Probe(sk_unix_file)),
    // crust reads raw sockets from their fds, not with sock_diag: it dumps
    // them wherever it may make one (CAP_NET_RAW).
    feat("net_diag_raw", Extra, Probe(raw_sockets)),
    feat("nsid", FeatureOnly, Probe(nsid)),
    feat("link_nsid", FeatureOnly, Probe(link_nsid)),
    feat("kcmp_epoll", Extra, Probe(kcmp_epoll)),
    // crust refuses a task in (or making children in) a time namespace
    // other than its own, as CRIU refuses a time namespace for children;
    // it reads /proc/PID/ns/time_for_children to tell.
    feat("timens", Extra, Probe(timens)),
    // Not a kernel check (nor in CRIU): crust takes --external
    // net[INODE]:KEY at dump and joins the namespace inherited at restore.
    feat("external_net_ns", FeatureOnly, Probe(external_net_ns)),
    feat("clone3_set_tid", Extra, Probe(probe::clone3_set_tid)),
    feat("newifindex", Extra, Probe(newifindex)),
    feat("nftables", FeatureOnly, Probe(network_lock_nftables)),
    feat("has_ipt_legacy", FeatureOnly, Probe(ipt_legacy)),
    feat("pidfd_store", Extra, Probe(pidfd_store)),
    feat("ns_pid", Extra, Probe(ns_pid)),
    feat(
        "apparmor_stacking",
        FeatureOnly,
        Lacks("crust does not restore LSM profiles yet"),
    ),
    feat("network_lock_nftables", Extra, Probe(network_lock_nftables)),
    feat("sockopt_buf_lock", Extra, Probe(sockopt_buf_lock)),
    feat("memfd_hugetlb", Extra, Probe(probe::memfd_hugetlb)),
    // crust rebuilds peer groups and slaves with it (ns/mnt/propagation.rs).
    feat("move_mount_set_group", Extra, Probe(move_mount_set_group)),
    feat(
        "openat2",
        Extra,
        Lacks("crust opens images with O_NOFOLLOW, not openat2"),
    ),
    feat("get_rseq_conf", Extra, Probe(probe::get_rseq_conf)),
    feat("ipv6_freebind", Extra, Probe(ipv6_freebind)),
    feat("pagemap_scan", Extra, Probe(probe::pagemap_scan)),
    feat("timer_cr_ids", Extra, Probe(probe::timer_cr_ids)),
    feat("overlayfs_maps", Extra, Probe(overlayfs_maps)),
    feat(
        "breakpoints",
        FeatureOnly,
        Lacks("crust steps remote syscalls without hardware breakpoints"),
    ),
    feat(
        "pagemap_scan_guard_pages",
        Extra,
        Probe(probe::pagemap_scan_guard_pages),
    ),
];

/// A probe of crust's own: (name, probe, what crust uses it for).
type Named = (&'static str, fn() -> ProbeResult, &'static str);

/// What every dump or restore needs (the plain `crust check`), with what
/// crust uses it for.
static REQUIRED: &[Named] = &[
    (
        "seize",
        probe::seize,
        "PTRACE_SEIZE/PTRACE_INTERRUPT to freeze the tree",
    ),
    (
        "process_vm_readv",
        probe::process_vm_readv,
        "copying the memory of dumped tasks",
    ),
    (
        "map_files",
        probe::map_files,
        "/proc/PID/map_files to identify mapped files",
    ),
    ("mnt_id", probe::mnt_id, "mnt_id in /proc/PID/fdinfo"),
    (
        "kcmp",
        probe::kcmp,
        "finding shared files, mm and fs between tasks",
    ),
    (
        "pidfd_open",
        probe::pidfd_open,
        "race-free handles on tasks",
    ),
    (
        "clone3_set_tid",
        probe::clone3_set_tid,
        "restoring tasks with their original pids",
    ),
    (
        "prctl_set_mm_map",
        probe::prctl_set_mm_map,
        "PR_SET_MM_MAP to restore brk, args, env, auxv, exe",
    ),
    (
        "get_robust_list",
        probe::get_robust_list,
        "dumping robust futex lists",
    ),
    (
        "memfd_create",
        probe::memfd_create,
        "memfd files and shared memory",
    ),
    (
        "get_rseq_conf",
        probe::get_rseq_conf,
        "PTRACE_GET_RSEQ_CONFIGURATION to dump rseq areas",
    ),
    (
        "sock_diag",
        probe::sock_diag,
        "NETLINK_SOCK_DIAG to inspect sockets",
    ),
];

/// Checked with `--extra` beside CRIU's names: what crust uses for some
/// trees or options.
static CRUST_EXTRA: &[Named] = &[
    ("pidfd_getfd", probe::pidfd_getfd, "taking descriptors out of dumped tasks"),
    ("tcp_repair", probe::tcp_repair, "TCP_REPAIR for --tcp-established"),
    (
        "network_lock_iptables",
        network_lock_iptables,
        "iptables/ip6tables rules to lock TCP connections (--network-lock iptables; or use nftables or skip)",
    ),
];

fn missing(why: impl Into<String>) -> ProbeError {
    ProbeError::Missing(why.into())
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> ProbeError {
    move |source| ProbeError::Os { what, source }
}

/// timerfd: crust restores a timer's ticks with TFD_IOC_SET_TICKS.
fn timerfd() -> ProbeResult {
    use crust_sys::events;
    use std::os::fd::AsFd;
    let fd = events::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC)
        .map_err(os("timerfd_create"))?;
    events::timerfd_set_ticks(fd.as_fd(), 1).map_err(os("ioctl(TFD_IOC_SET_TICKS)"))
}

/// tun/tap links and files: the clone device opens and takes the index a
/// link will be made with (TUNSETIFINDEX), which a restore needs.
fn external_net_ns() -> ProbeResult {
    Ok(())
}

fn tun() -> ProbeResult {
    use std::os::fd::AsFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(crust_sys::tun::PATH)
        .map_err(|e| ProbeError::Missing(format!("cannot open {}: {e}", crust_sys::tun::PATH)))?;
    crust_sys::tun::set_ifindex(f.as_fd(), 13).map_err(os("ioctl(TUNSETIFINDEX)"))
}

/// kcmp(KCMP_EPOLL_TFD), with which the dump finds the file of an epoll
/// target registered through an fd since closed: asked about a target an
/// empty epoll does not have, it answers ENOENT.
fn kcmp_epoll() -> ProbeResult {
    use std::os::fd::AsRawFd;
    let ep = crust_sys::events::epoll_create1(libc::EPOLL_CLOEXEC).map_err(os("epoll_create1"))?;
    let me = crust_sys::process::getpid();
    let efd = ep.as_raw_fd();
    match crust_sys::process::kcmp_epoll_tfd(me, efd, efd, efd, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(missing(format!("kcmp(KCMP_EPOLL_TFD): {e}"))),
        Ok(_) => Err(missing(
            "kcmp(KCMP_EPOLL_TFD) found a target in an empty epoll",
        )),
    }
}

/// "lock:" lines in /proc/PID/fdinfo, which --file-locks reads.
fn fdinfo_lock() -> ProbeResult {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/proc/self/exe").map_err(os("opening /proc/self/exe"))?;
    f.try_lock_shared()
        .map_err(|e| missing(format!("flock of /proc/self/exe: {e}")))?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(os("reading /proc/self/fdinfo"))?;
    if info.lines().any(|l| l.starts_with("lock:")) {
        Ok(())
    } else {
        Err(missing("no lock: lines in /proc/PID/fdinfo"))
    }
}

/// /proc/PID/loginuid can be written (auditing with loginuid changes).
/// User namespaces (/proc/self/ns/user): a tree's own is dumped with its
/// maps and restored (engine ns::user).
fn move_mount_set_group() -> ProbeResult {
    if crust_sys::mount_group::has_set_group() {
        Ok(())
    } else {
        Err(ProbeError::Missing(
            "move_mount(2) does not know MOVE_MOUNT_SET_GROUP (Linux 5.15)".into(),
        ))
    }
}

fn userns() -> ProbeResult {
    std::fs::metadata("/proc/self/ns/user").map_err(os("stat /proc/self/ns/user"))?;
    Ok(())
}

fn loginuid() -> ProbeResult {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/loginuid")
        .map_err(os("opening /proc/self/loginuid for writing"))?;
    Ok(())
}

/// Seccomp in /proc/PID/status (a kernel with seccomp; crust reads
/// filters with PTRACE_SECCOMP_GET_FILTER and suspends them with
/// PTRACE_O_SUSPEND_SECCOMP, both there since Linux 4.4).
fn seccomp() -> ProbeResult {
    let st =
        std::fs::read_to_string("/proc/self/status").map_err(os("reading /proc/self/status"))?;
    if st.lines().any(|l| l.starts_with("Seccomp:")) {
        Ok(())
    } else {
        Err(missing(
            "no Seccomp in /proc/PID/status (a kernel without seccomp)",
        ))
    }
}

/// Time namespaces: /proc/PID/ns/time_for_children, which the dump reads.
fn timens() -> ProbeResult {
    std::fs::metadata("/proc/self/ns/time_for_children")
        .map(drop)
        .map_err(os("reading /proc/self/ns/time_for_children"))
}

/// Cgroup namespaces (/proc/PID/ns/cgroup, Linux 4.6): crust dumps the
/// root's (cgroup.img's cgns_prefix) and the root makes it again.
fn cgroupns() -> ProbeResult {
    std::fs::metadata("/proc/self/ns/cgroup")
        .map(drop)
        .map_err(os("reading /proc/self/ns/cgroup"))
}

/// NSpid in /proc/PID/status: pids of a tree in its own pid namespace.
fn ns_pid() -> ProbeResult {
    let st =
        std::fs::read_to_string("/proc/self/status").map_err(os("reading /proc/self/status"))?;
    if st.lines().any(|l| l.starts_with("NSpid:")) {
        Ok(())
    } else {
        Err(missing("no NSpid in /proc/PID/status"))
    }
}

fn sockopt(domain: i32, level: i32, opt: i32, what: &'static str) -> ProbeResult {
    use std::os::fd::AsFd;
    let s = crust_sys::net::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        .map_err(os("socket"))?;
    crust_sys::unix::getsockopt_int(s.as_fd(), level, opt).map_err(os(what))?;
    Ok(())
}

/// SO_BUF_LOCK, which crust keeps with a socket's buffer sizes.
fn sockopt_buf_lock() -> ProbeResult {
    const SO_BUF_LOCK: i32 = 72;
    sockopt(
        libc::AF_INET,
        libc::SOL_SOCKET,
        SO_BUF_LOCK,
        "getsockopt(SO_BUF_LOCK)",
    )
}

/// IPV6_FREEBIND, which crust keeps on IPv6 sockets.
fn ipv6_freebind() -> ProbeResult {
    const IPV6_FREEBIND: i32 = 78;
    sockopt(
        libc::AF_INET6,
        libc::IPPROTO_IPV6,
        IPV6_FREEBIND,
        "getsockopt(IPV6_FREEBIND)",
    )
}

/// /proc/PID/map_files gives the mapped file itself (its device and inode
/// are the file's, as on overlayfs since Linux 6.8): crust identifies
/// mapped files that way. Checked on crust's own executable.
fn overlayfs_maps() -> ProbeResult {
    use std::os::unix::fs::MetadataExt;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(os("reading /proc/self/maps"))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(os("reading /proc/self/exe"))?;
    let exe_s = exe.to_string_lossy();
    let range = maps
        .lines()
        .find(|l| l.ends_with(&*exe_s))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| missing("crust's executable is not in /proc/self/maps"))?;
    let via_map = std::fs::metadata(format!("/proc/self/map_files/{range}"))
        .map_err(os("stat of /proc/self/map_files"))?;
    let via_path = std::fs::metadata(&exe).map_err(os("stat of crust's executable"))?;
    if (via_map.dev(), via_map.ino()) == (via_path.dev(), via_path.ino()) {
        Ok(())
    } else {
        Err(missing(format!(
            "map_files gives device {:#x} inode {}, the file is {:#x} {}",
            via_map.dev(),
            via_map.ino(),
            via_path.dev(),
            via_path.ino()
        )))
    }
}

/// Lock and unlock a made-up loopback connection (IPv4 and IPv6).
fn network_lock(m: crust_engine::netlock::Method) -> ProbeResult {
    crust_engine::netlock::probe(m).map_err(|e| probe::ProbeError::Missing(error_chain(&e)))
}

fn network_lock_iptables() -> ProbeResult {
    network_lock(crust_engine::netlock::Method::Iptables)
}

fn network_lock_nftables() -> ProbeResult {
    network_lock(crust_engine::netlock::Method::Nftables)
}

/// CRIU's has_ipt_legacy: iptables-legacy and ip6tables-legacy are
/// installed (tests of the iptables network lock and of TCP connections
/// reset by a REJECT rule ask for it), and crust's iptables lock works.
fn ipt_legacy() -> ProbeResult {
    for tool in ["iptables-legacy", "ip6tables-legacy"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).exists());
        if !found {
            return Err(probe::ProbeError::Missing(format!(
                "{tool} is not installed"
            )));
        }
    }
    network_lock_iptables()
}

fn raw_sockets() -> ProbeResult {
    for family in [libc::AF_INET, libc::AF_INET6] {
        crust_sys::net::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW).map_err(|e| {
            ProbeError::Missing(format!(
                "crust cannot make a raw socket to restore one: {e}"
            ))
        })?;
    }
    Ok(())
}

/// CRIU's sk_unix_file: the kernel opens a unix socket's bound file
/// (SIOCUNIXFILE), which tells the mount a socket was bound on. An unbound
/// socket answers ENOENT where the ioctl exists.
fn sk_unix_file() -> ProbeResult {
    let sk = crust_sys::unix::socket(libc::SOCK_DGRAM).map_err(|e| {
        ProbeError::Missing(format!(
            "cannot make a unix socket to try SIOCUNIXFILE on: {e}"
        ))
    })?;
    match crust_sys::unix::unix_file(std::os::fd::AsFd::as_fd(&sk)) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(ProbeError::Missing(format!(
            "the kernel has no SIOCUNIXFILE to open a unix socket's file: {e}"
        ))),
    }
}

/// CRIU's newifindex: a link moved into the restored network namespace
/// (`--external netdev[IN]:ORIG`) gets its dumped index.
fn newifindex() -> ProbeResult {
    let miss = |e: String| {
        ProbeError::Missing(format!("cannot ask rtnetlink about IFLA_NEW_IFINDEX: {e}"))
    };
    let mut sk =
        crust_netlink::Socket::open(libc::NETLINK_ROUTE).map_err(|e| miss(e.to_string()))?;
    match crust_netlink::rtnl::has_new_ifindex(&mut sk) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ProbeError::Missing(
            "the kernel does not know IFLA_NEW_IFINDEX".into(),
        )),
        Err(e) => Err(miss(e.to_string())),
    }
}

/// CRIU's link_nsid: a veth whose peer is in another network namespace
/// tells that namespace's id (IFLA_LINK_NETNSID), which the dump of a tree
/// with several network namespaces needs. Asked in two throw-away
/// namespaces, by a thread that joined the first.
fn link_nsid() -> ProbeResult {
    use std::os::fd::{AsFd, AsRawFd};
    let miss = |e: String| ProbeError::Missing(format!("cannot probe IFLA_LINK_NETNSID: {e}"));
    let here = crust_sys::ns::new_netns(None).map_err(|e| miss(e.to_string()))?;
    let peer = crust_sys::ns::new_netns(None).map_err(|e| miss(e.to_string()))?;
    let asked = std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::ns::setns(here.as_fd(), libc::CLONE_NEWNET).map_err(|e| e.to_string())?;
            let mut sk =
                crust_netlink::Socket::open(libc::NETLINK_ROUTE).map_err(|e| e.to_string())?;
            crust_netlink::rtnl::probe_link_nsid(&mut sk, peer.as_raw_fd())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the probing thread panicked".into()))
    });
    match asked {
        Ok(true) => Ok(()),
        Ok(false) => Err(ProbeError::Missing(
            "the kernel does not report IFLA_LINK_NETNSID for links".into(),
        )),
        Err(e) => Err(miss(e)),
    }
}

/// CRIU's sk_ns: a socket tells the network namespace it was made in
/// (ioctl SIOCGSKNS), which the dump of a tree with several network
/// namespaces uses to place each socket.
fn sk_ns() -> ProbeResult {
    use std::os::fd::AsFd;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| ProbeError::Missing(format!("cannot make a UDP socket to ask: {e}")))?;
    crust_sys::ns::socket_netns(sock.as_fd())
        .map(drop)
        .map_err(|e| ProbeError::Missing(format!("SIOCGSKNS on a socket failed: {e}")))
}

/// CRIU's nsid: rtnetlink answers RTM_GETNSID (the ids a network
/// namespace gives the others, kept in the images of a tree with several).
fn nsid() -> ProbeResult {
    let miss = |e: String| ProbeError::Missing(format!("cannot ask rtnetlink for an nsid: {e}"));
    let mut sk =
        crust_netlink::Socket::open(libc::NETLINK_ROUTE).map_err(|e| miss(e.to_string()))?;
    crust_netlink::rtnl::get_nsid(&mut sk, std::process::id())
        .map(drop)
        .map_err(|e| miss(e.to_string()))
}

fn uffd() -> ProbeResult {
    crust_sys::uffd_missing::available_features()
        .map(drop)
        .map_err(|source| ProbeError::Os {
            what: "userfaultfd(2) with UFFDIO_API (lazy restore needs one that handles the \
                   kernel's faults too: run as root)",
            source,
        })
}

fn uffd_noncoop() -> ProbeResult {
    use crust_sys::uffd_missing::{available_features, LAZY_FEATURES};
    let got = available_features().map_err(|source| ProbeError::Os {
        what: "userfaultfd(2) with UFFDIO_API (run as root)",
        source,
    })?;
    if got & LAZY_FEATURES != LAZY_FEATURES {
        return Err(ProbeError::Missing(format!(
            "userfaultfd lacks the events of a non-cooperative handler (fork, mremap, \
             remove, unmap): features {got:#x}, {LAZY_FEATURES:#x} needed"
        )));
    }
    Ok(())
}

fn pidfd_store() -> ProbeResult {
    probe::pidfd_open()?;
    probe::pidfd_getfd()
}

fn find(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// Whether `--feature NAME` knows `name`: one of CRIU 4.2's names, or
/// `list` (crust's own: prints them).
pub fn is_feature(name: &str) -> bool {
    name == "list" || find(name).is_some()
}

/// Whether crust can do the feature `name` here (its `--feature` answer).
pub fn feature_supported(name: &str) -> bool {
    find(name).is_some_and(|f| answer(f).is_ok())
}

/// crust's answer for `f`: Ok, or why not.
fn answer(f: &Feature) -> Result<(), String> {
    match f.answer {
        Probe(p) => p().map_err(|e| error_chain(&e)),
        Lacks(why) => Err(why.to_string()),
        Pending(p, why) => Err(pending(p, why)),
    }
}

/// Why a pending feature is "no", and what the kernel can do for it.
fn pending(p: fn() -> ProbeResult, why: &str) -> String {
    match p() {
        Ok(()) => format!("{why} (this kernel has what it needs)"),
        Err(e) => format!("{why}; nor does this kernel: {}", error_chain(&e)),
    }
}

/// `crust check --feature NAME`, as CRIU answers it: "NAME is supported"
/// and 0, or the reason on stderr and 1.
fn one_feature(name: &str) -> Result<i32> {
    if name == "list" {
        let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        println!("{}", names.join(" "));
        return Ok(0);
    }
    let Some(f) = find(name) else {
        bail!("Unknown feature {name}");
    };
    match answer(f) {
        Ok(()) => {
            println!("{} is supported", f.name);
            Ok(0)
        }
        Err(why) => {
            log::warn!("{} is not supported: {why}", f.name);
            Ok(1)
        }
    }
}

/// Run `crust check`; returns the exit code.
pub fn run(opts: &Opts) -> Result<i32> {
    if let Some(name) = opts.feature.as_deref() {
        return one_feature(name);
    }
    // What every dump or restore needs: stop at the first one missing, as
    // CRIU does with its category 1.
    for (name, p, purpose) in REQUIRED {
        if let Err(e) = p() {
            log::error!("{name}: {purpose}: {}", error_chain(&e));
            log::warn!("Does not look good.");
            return Ok(1);
        }
        log::info!("{name}: supported");
    }
    let mut missing = 0;
    let mut look = |name: &str, r: Result<(), String>| match r {
        Ok(()) => log::info!("{name}: supported"),
        Err(why) => {
            missing += 1;
            log::warn!("{name}: {why}");
        }
    };
    for f in FEATURES {
        let wanted = match f.category {
            Extra => opts.check_extra,
            Experimental => opts.check_experimental,
            FeatureOnly => false,
        };
        match f.answer {
            Probe(p) if wanted => look(f.name, p().map_err(|e| error_chain(&e))),
            // Not the kernel's lack: not counted.
            Lacks(why) if wanted => log::info!("{}: not used by crust: {why}", f.name),
            Pending(p, why) if wanted => {
                log::info!("{}: not used by crust: {}", f.name, pending(p, why))
            }
            _ => {}
        }
    }
    if opts.check_extra {
        for (name, p, purpose) in CRUST_EXTRA {
            look(
                name,
                p().map_err(|e| format!("{purpose}: {}", error_chain(&e))),
            );
        }
    }
    if missing > 0 {
        println!(
            "Looks good but some kernel features are missing\n\
             which, depending on your process tree, may cause\n\
             dump or restore failure."
        );
        Ok(1)
    } else {
        println!("Looks good.");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRIU 4.2's names (criu/cr-check.c, feature_list), in its order.
    const CRIU_NAMES: &str = "mnt_id mem_dirty_track aio_remap timerfd tun tun_ns userns \
        fdinfo_lock seccomp_suspend seccomp_filters loginuid cgroupns autofs tcp_half_closed \
        compat_cr uffd uffd-noncoop can_map_vdso sk_ns sk_unix_file net_diag_raw nsid \
        link_nsid kcmp_epoll timens external_net_ns clone3_set_tid newifindex nftables \
        has_ipt_legacy pidfd_store ns_pid apparmor_stacking network_lock_nftables \
        sockopt_buf_lock memfd_hugetlb move_mount_set_group openat2 get_rseq_conf \
        ipv6_freebind pagemap_scan timer_cr_ids overlayfs_maps breakpoints \
        pagemap_scan_guard_pages";

    #[test]
    fn mem_dirty_track_answers_the_probe() {
        // This kernel (6.7+) tracks written pages with userfaultfd and
        // PAGEMAP_SCAN: pre-dump works, the answer is yes.
        let f = find("mem_dirty_track").unwrap();
        assert!(answer(f).is_ok());
        assert!(feature_supported("mem_dirty_track"));
    }

    #[test]
    fn uffd_answers_the_probe() {
        // As root on this kernel: lazy restore works, the answers are yes.
        assert!(feature_supported("uffd"));
        assert!(feature_supported("uffd-noncoop"));
    }

    #[test]
    fn every_criu_name_in_criu_order() {
        let ours: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        let criu: Vec<&str> = CRIU_NAMES.split_whitespace().collect();
        assert_eq!(criu.len(), 45);
        assert_eq!(ours, criu);
        assert!(is_feature("list") && !is_feature("seize") && !is_feature("nope"));
    }

    #[test]
    fn required_features_present_here() {
        for (name, p, purpose) in REQUIRED {
            p().unwrap_or_else(|e| panic!("{name} ({purpose}): {}", error_chain(&e)));
        }
    }
}
