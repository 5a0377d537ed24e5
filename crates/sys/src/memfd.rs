//! memfd: create one with a name, read and add its seals.

use crate::cvt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// memfd_create(2) with `MFD_CLOEXEC | MFD_ALLOW_SEALING` (and `extra`
/// flags); `name` must not hold a NUL byte.
pub fn memfd_create(name: &str, extra: u32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra;
    // SAFETY: `c` is a NUL-terminated string that lives across the call;
    // the flags are plain integers.
    let r = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    cvt(r as libc::c_long)?;
    // SAFETY: memfd_create succeeded: `r` is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// F_GET_SEALS: the seals of the memfd (or shmem file) `fd` is on.
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: F_GET_SEALS takes no third argument; the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    cvt(r as libc::c_long).map(|v| v as u32)
}

/// F_ADD_SEALS: add `seals` to the memfd `fd` is on.
pub fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an integer third argument; the fd is
    // borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) };
    cvt(r as libc::c_long).map(drop)
}
