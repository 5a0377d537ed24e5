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
