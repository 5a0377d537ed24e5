//! Passing file descriptors to another process over an AF_UNIX datagram
//! socket (SCM_RIGHTS). The receiver binds a socket to an abstract name;
//! [`send_fds`] sends it one datagram carrying the fds. The receiver then
//! holds new fds on the very same open file descriptions.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Most fds the kernel accepts in one SCM_RIGHTS message (SCM_MAX_FD).
pub const MAX_FDS_PER_MSG: usize = 253;

/// Size of a `sockaddr_un`'s path (the abstract name, leading NUL included,
/// must fit).
pub const SUN_PATH_LEN: usize = 108;

/// A new AF_UNIX SOCK_DGRAM socket, close-on-exec, unbound.
pub fn dgram_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    cvt(fd as libc::c_long)?;
    // SAFETY: socket succeeded: the fd is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The bytes of a `sockaddr_un` for the abstract `name` (given without its
/// leading NUL) and the address length to pass with it.
pub fn abstract_addr(name: &[u8]) -> io::Result<(Vec<u8>, u32)> {
    if name.is_empty() || name.len() + 1 > SUN_PATH_LEN {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // sa_family (u16), then sun_path: NUL, name.
    let mut a = Vec::with_capacity(2 + 1 + name.len());
    a.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    a.push(0);
    a.extend_from_slice(name);
    let len = a.len() as u32;
    Ok((a, len))
}

/// Send `data` (at least one byte) and the fds `fds` (at most
/// [`MAX_FDS_PER_MSG`]) in one datagram from `sock` to the socket bound to
/// the abstract `name`. Does not wait for room in the receiver's queue
/// (MSG_DONTWAIT).
pub fn send_fds(
    sock: BorrowedFd<'_>,
    name: &[u8],
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS_PER_MSG || data.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if name.is_empty() || name.len() + 1 > SUN_PATH_LEN {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // An abstract name: sun_path starts with a NUL.
    let mut to = Vec::with_capacity(1 + name.len());
    to.push(0);
    to.extend_from_slice(name);
    let n = crate::unix::send_with_fds(sock, data, Some(&to), fds, libc::MSG_DONTWAIT)?;
    if n != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Bind `sock` to the abstract `name` (for tests and local receivers).
pub fn bind_abstract(sock: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: `addr` holds `len` bytes of a valid sockaddr_un prefix (family
    // then path), which is all bind reads.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            addr.as_ptr() as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// Offsets of the x86_64 `struct msghdr` fields a remote recvmsg needs, and
/// its size; and the `struct cmsghdr` header size. ABI facts.
pub mod abi {
    pub const MSGHDR_SIZE: usize = 56;
    pub const MSG_NAME: usize = 0;
    pub const MSG_NAMELEN: usize = 8;
    pub const MSG_IOV: usize = 16;
    pub const MSG_IOVLEN: usize = 24;
    pub const MSG_CONTROL: usize = 32;
    pub const MSG_CONTROLLEN: usize = 40;
    pub const MSG_FLAGS: usize = 48;
    pub const IOVEC_SIZE: usize = 16;
    /// cmsg_len (size_t), cmsg_level (int), cmsg_type (int).
    pub const CMSGHDR_SIZE: usize = 16;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn abi_matches_libc() {
        assert_eq!(std::mem::size_of::<libc::msghdr>(), abi::MSGHDR_SIZE);
        assert_eq!(std::mem::size_of::<libc::cmsghdr>(), abi::CMSGHDR_SIZE);
        assert_eq!(std::mem::size_of::<libc::iovec>(), abi::IOVEC_SIZE);
        // SAFETY: CMSG_LEN only computes a size.
        assert_eq!(unsafe { libc::CMSG_LEN(0) } as usize, abi::CMSGHDR_SIZE);
    }

    #[test]
    fn send_to_bound_socket() {
        let rx = dgram_socket().unwrap();
        let name = format!("crust-sys-test-{}", std::process::id());
        bind_abstract(rx.as_fd(), name.as_bytes()).unwrap();
        let tx = dgram_socket().unwrap();
        let (r, w) = crate::pipe::pipe2(libc::O_CLOEXEC).unwrap();
        send_fds(tx.as_fd(), name.as_bytes(), b"x", &[r.as_fd(), w.as_fd()]).unwrap();
        // One byte is queued, with its control message.
        assert_eq!(crate::pipe::queued_bytes(rx.as_fd()).unwrap(), 1);
        assert!(send_fds(tx.as_fd(), b"no-such-crust-name", b"x", &[r.as_fd()]).is_err());
    }
}
