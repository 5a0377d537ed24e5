//! Sockets handed to crust by number (`--ps-socket FD`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A close-on-exec duplicate of `fd`, owned by the caller; `fd` itself
/// stays open.
pub fn dup_fd(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd number; an invalid one
    // fails with EBADF.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a new descriptor of this process that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}
