//! Namespaces: joining (setns), making new ones (unshare), and the UTS
//! namespace's names.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Join the namespace `fd` is on (an open /proc/PID/ns/KIND); `nstype` is
/// its CLONE_NEW* flag (0: any kind). Only the calling thread moves, except
/// for a user namespace, which needs a single-threaded caller.
pub fn setns(fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
    // SAFETY: setns takes an fd (borrowed, open for the call) and a flag;
    // it touches no memory of ours.
    let r = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    cvt(r as libc::c_long).map(drop)
}

/// unshare(2) with `flags` (CLONE_NEW*, CLONE_FS...): only the calling
/// thread's namespaces change.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare takes flags only and touches no memory of ours.
    let r = unsafe { libc::unshare(flags) };
    cvt(r as libc::c_long).map(drop)
}

/// The node and domain names of the caller's UTS namespace.
pub fn uts_names() -> io::Result<(Vec<u8>, Vec<u8>)> {
    // SAFETY: an all-zero utsname is a valid value of the plain C struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a writable utsname the kernel fills.
    let r = unsafe { libc::uname(&mut u) };
    cvt(r as libc::c_long)?;
    Ok((c_field(&u.nodename), c_field(&u.domainname)))
}

/// The bytes of a NUL-terminated char array (all of it when no NUL).
fn c_field(f: &[libc::c_char]) -> Vec<u8> {
    f.iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect()
}

/// Set the caller's UTS namespace's host name.
pub fn set_hostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`, borrowed for the call.
    let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    cvt(r as libc::c_long).map(drop)
}

/// Set the caller's UTS namespace's domain name.
pub fn set_domainname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`, borrowed for the call.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    cvt(r as libc::c_long).map(drop)
}

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): the kind of namespace an nsfs file
/// is on.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The CLONE_NEW* flag of the namespace `fd` is on (an nsfs file, also
/// through a bind mount such as /run/netns/NAME); ENOTTY or EINVAL when
/// `fd` is on no namespace.
pub fn ns_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and touches no memory of
    // ours; the fd is borrowed, open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    cvt(r as libc::c_long).map(|t| t as i32)
}

/// SIOCGSKNS: an fd on the network namespace socket `fd` was made in.
const SIOCGSKNS: u64 = 0x894c;

/// The network namespace socket `sock` belongs to (ioctl SIOCGSKNS), open.
pub fn socket_netns(sock: BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd, which
    // nothing else owns.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _, 0) };
    let fd = cvt(r as libc::c_long)?;
    // SAFETY: `fd` was just returned by the kernel and is ours alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Make a new network namespace in a short-lived child process and return
/// an fd on it. The child first joins `user` (a user namespace, which then
/// owns the new namespace) when given. The child does async-signal-safe
/// work only (setns, unshare, a self-stop), so the caller may be
/// multi-threaded; it is killed and reaped before this returns.
pub fn new_netns(user: Option<BorrowedFd<'_>>) -> io::Result<std::fs::File> {
    use crate::process::{self, ForkResult, WaitStatus};
    let user_raw = user.map(|u| u.as_raw_fd());
    match process::clone3_fork(&[], 0)? {
        ForkResult::Child => {
            if let Some(u) = user_raw {
                // SAFETY: setns on an fd inherited from the parent; no memory.
                if unsafe { libc::setns(u, libc::CLONE_NEWUSER) } != 0 {
                    process::exit_now(1);
                }
            }
            // SAFETY: unshare takes flags only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                process::exit_now(2);
            }
            process::stop_self();
            process::exit_now(0);
        }
        ForkResult::Parent { child } => {
            let got = match process::waitpid(child, libc::WUNTRACED) {
                Ok(Some((_, WaitStatus::Stopped { .. }))) => {
                    std::fs::File::open(format!("/proc/{child}/ns/net"))
                }
                Ok(Some((_, st))) => Err(io::Error::other(format!(
                    "the process making the namespace ended: {st:?} (1: setns into the user namespace refused, 2: unshare refused)"
                ))),
                Ok(None) => Err(io::Error::other("the process making the namespace vanished")),
                Err(e) => Err(e),
            };
            let _ = process::kill(child, libc::SIGKILL);
            let _ = process::waitpid(child, 0);
            got
        }
    }
}

/// A private copy of the mount namespace of the thread that made it,
/// made and kept alive by a child process ([`MntNsCopy::make`]): a crust
/// thread joins it (`/proc/PID/ns/mnt` of [`MntNsCopy::pid`]) to detach
/// mounts there without touching the original. The child is killed and
/// reaped on drop (and killed when the thread that made it ends).
#[derive(Debug)]
pub struct MntNsCopy {
    pid: i32,
}

/// The steps of the copying child, as it reports a failure.
const COPY_STEPS: [&str; 4] = [
    "prctl(PR_SET_PDEATHSIG)",
    "setns into the user namespace that owns the mount namespace",
    "unshare(CLONE_NEWNS)",
    "make every mount of the copy private",
];

impl MntNsCopy {
    /// Fork a child that joins the user namespace `user` first when given
    /// (the one that owns the calling thread's mount namespace, when it is
    /// not the caller's: a copy made from another user namespace gets all
    /// its mounts locked, MNT_LOCKED, and none of them can be detached),
    /// unshares a copy of the mount namespace, makes all of it private
    /// (so nothing done there propagates back), and stops itself.
    pub fn make(user: Option<BorrowedFd<'_>>) -> io::Result<MntNsCopy> {
        let (rd, wr) = crate::pipe::pipe2(libc::O_CLOEXEC)?;
        let user = user.map(|u| u.as_raw_fd());
        let child = match crate::process::clone3_fork(&[], 0)? {
            crate::process::ForkResult::Child => copy_child(user, wr.as_raw_fd()),
            crate::process::ForkResult::Parent { child } => child,
        };
        drop(wr);
        let copy = MntNsCopy { pid: child };
        match crate::process::waitpid(child, libc::WUNTRACED)? {
            Some((_, crate::process::WaitStatus::Stopped { .. })) => Ok(copy),
            Some((_, crate::process::WaitStatus::Exited(_))) => {
                // The child is gone: nothing to kill on drop.
                std::mem::forget(copy);
                let mut report = [0u8; 8];
                let n = std::io::Read::read(&mut std::fs::File::from(rd), &mut report).unwrap_or(0);
                let (step, errno) = match (report.first_chunk::<4>(), report.last_chunk::<4>()) {
                    (Some(s), Some(e)) if n == 8 => {
                        (u32::from_ne_bytes(*s), i32::from_ne_bytes(*e))
                    }
                    _ => (u32::MAX, libc::EIO),
                };
                let what = COPY_STEPS
                    .get(step as usize)
                    .copied()
                    .unwrap_or("an unknown step");
                let e = io::Error::from_raw_os_error(errno);
                Err(io::Error::new(
                    e.kind(),
                    format!("the child copying the mount namespace failed at {what}: {e}"),
                ))
            }
            _ => Err(io::Error::other(
                "the child copying the mount namespace did not stop as expected",
            )),
        }
    }

    /// The child's pid (in the caller's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for MntNsCopy {
    fn drop(&mut self) {
        let _ = crate::process::kill(self.pid, libc::SIGKILL);
        let _ = crate::process::waitpid(self.pid, 0);
    }
}

/// The copying child (async-signal-safe system calls only: it runs on a
/// copy of a multi-threaded process). Reports a failed step on `report`
/// as (step, errno) and exits; stops itself once the copy is made.
fn copy_child(user: Option<i32>, report: i32) -> ! {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        copy_child_fail(report, 0);
    }
    if let Some(u) = user {
        // SAFETY: setns takes an fd number (open in this copy of the fd
        // table, inherited from the parent) and a flag.
        if unsafe { libc::setns(u, libc::CLONE_NEWUSER) } != 0 {
            copy_child_fail(report, 1);
        }
    }
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        copy_child_fail(report, 2);
    }
    let root = c"/";
    // SAFETY: `root` is a NUL-terminated string that lives across the
    // call; the other pointers are NULL.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        copy_child_fail(report, 3);
    }
    crate::process::stop_self();
    crate::process::exit_now(0)
}

/// Report the failed `step` of [`copy_child`] and the errno on `report`,
/// and exit.
fn copy_child_fail(report: i32, step: u32) -> ! {
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    let mut msg = [0u8; 8];
    let (s, e) = msg.split_at_mut(4);
    s.copy_from_slice(&step.to_ne_bytes());
    e.copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `msg` is a readable buffer of 8 bytes for the call.
    let _ = unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
    crate::process::exit_now(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_a_new_mount_namespace_its_stopped_child_holds() {
        if crate::private::geteuid() != 0 {
            return;
        }
        let copy = MntNsCopy::make(None).expect("make a copy");
        let pid = copy.pid();
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).expect("ns link");
        assert_ne!(ns("self"), ns(&pid.to_string()));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        assert!(stat.contains(") T "), "{stat}");
        drop(copy);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
