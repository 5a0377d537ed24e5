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
