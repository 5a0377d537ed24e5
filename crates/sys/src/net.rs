//! Generic IP socket wrappers over [`std::net::SocketAddr`] (IPv4 and IPv6,
//! IPv4-mapped IPv6 addresses included): creating, binding, connecting,
//! accepting, socket names, socket options as byte buffers, `ioctl`s that
//! return an int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD), send/recv with flags and
//! sendto/recvfrom. Used by crust-soccr (TCP repair) and the engine's inet
//! socket code.
//!
//! Errors are plain `io::Error`s (errno) returned as the kernel gave them:
//! a non-blocking `connect` reports `EINPROGRESS` as an error, for the
//! caller to decide. `listen`, `shutdown` and the int option helpers are the
//! family-independent ones of [`crate::unix`], re-exported here.

use crate::cvt;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use crate::unix::{getsockopt_int, listen, setsockopt_int, shutdown};

/// SIOCINQ: bytes in the receive queue (the same request as FIONREAD).
pub const SIOCINQ: u64 = libc::FIONREAD;
/// SIOCOUTQ: bytes in the send queue, sent-unacked and not yet sent (the
/// same request as TIOCOUTQ).
pub const SIOCOUTQ: u64 = libc::TIOCOUTQ;
/// SIOCOUTQNSD: bytes in the send queue never sent (linux/sockios.h).
pub const SIOCOUTQNSD: u64 = 0x894B;

/// # Safety
///
/// `fd` must be a freshly created fd that nobody else owns.
unsafe fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A `sockaddr_storage` holding `addr` (a sockaddr_in for V4, a
/// sockaddr_in6 for V6) and the length to pass with it.
pub fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned at least
            // like sockaddr_in, so the write stays inside `ss`.
            unsafe {
                std::ptr::write(
                    &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in,
                    sin,
                )
            };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned at least
            // like sockaddr_in6, so the write stays inside `ss`.
            unsafe {
                std::ptr::write(
                    &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6,
                    sin6,
                )
            };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The [`SocketAddr`] in `ss` (as filled by the kernel, `len` bytes valid).
/// Fails with EAFNOSUPPORT for families other than AF_INET/AF_INET6 and
/// EINVAL when `len` is too short.
pub fn from_raw(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SocketAddr> {
    let len = len as usize;
    match ss.ss_family as i32 {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says `ss` holds a sockaddr_in, which fits
            // in and is no more aligned than sockaddr_storage.
            let sin = unsafe {
                std::ptr::read(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in)
            };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says `ss` holds a sockaddr_in6, which fits
            // in and is no more aligned than sockaddr_storage.
            let sin6 = unsafe {
                std::ptr::read(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6)
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        libc::AF_INET | libc::AF_INET6 => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
}

/// `addr` as the bytes of its sockaddr_in or sockaddr_in6 (how images
/// store a raw socket address).
pub fn to_bytes(addr: &SocketAddr) -> Vec<u8> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` is plain old data, zeroed then written, at least `len`
    // bytes long; the slice only reads it while `ss` lives.
    let b = unsafe {
        std::slice::from_raw_parts(
            &ss as *const libc::sockaddr_storage as *const u8,
            len as usize,
        )
    };
    b.to_vec()
}

/// The [`SocketAddr`] in the raw sockaddr bytes `b` (see [`to_bytes`]);
/// `None` when they are not a whole AF_INET/AF_INET6 address.
pub fn from_bytes(b: &[u8]) -> Option<SocketAddr> {
    if b.len() > size_of::<libc::sockaddr_storage>() {
        return None;
    }
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `b` fits in `ss` (checked above) and the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            &mut ss as *mut libc::sockaddr_storage as *mut u8,
            b.len(),
        )
    };
    from_raw(&ss, b.len() as libc::socklen_t).ok()
}

/// The address family (AF_INET or AF_INET6) of a socket for `addr`.
pub fn family_of(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// socket(2) of `domain` (AF_INET, AF_INET6, ...), `ty` (SOCK_STREAM,
/// SOCK_DGRAM, SOCK_RAW, may include SOCK_NONBLOCK) and `proto`; always
/// close-on-exec.
pub fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    cvt(fd as libc::c_long)?;
    // SAFETY: socket succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd) })
}

/// bind(2) `fd` to `addr`.
pub fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` is a valid socket address of at least `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &ss as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// connect(2) `fd` to `addr`. On a non-blocking socket EINPROGRESS comes
/// back as the error, untouched.
pub fn connect(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` is a valid socket address of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &ss as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// accept4(2) with `flags` (SOCK_NONBLOCK; SOCK_CLOEXEC is always added):
/// the new connection and its peer's address.
pub fn accept4(fd: BorrowedFd<'_>, flags: i32) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid out-pointers; the kernel writes at
    // most `len` bytes to `ss`.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
            flags | libc::SOCK_CLOEXEC,
        )
    };
    cvt(r as libc::c_long)?;
    // SAFETY: accept4 succeeded: a new fd owned by nobody else.
    let new = unsafe { own(r) };
    Ok((new, from_raw(&ss, len)?))
}

fn name_of(fd: BorrowedFd<'_>, peer: bool) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr;
    let r = if peer {
        // SAFETY: `p` and `len` are valid out-pointers; the kernel writes at
        // most `len` bytes.
        unsafe { libc::getpeername(fd.as_raw_fd(), p, &mut len) }
    } else {
        // SAFETY: as above: valid out-pointers, at most `len` bytes written.
        unsafe { libc::getsockname(fd.as_raw_fd(), p, &mut len) }
    };
    cvt(r as libc::c_long)?;
    from_raw(&ss, len)
}

/// getsockname(2): the local address of an AF_INET/AF_INET6 socket.
pub fn getsockname(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    name_of(fd, false)
}

/// getpeername(2): the peer's address of a connected AF_INET/AF_INET6
/// socket.
pub fn getpeername(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    name_of(fd, true)
}

/// setsockopt(2) with the option value given as raw bytes (the C struct's
/// memory layout, e.g. an array of tcp_repair_opt).
pub fn setsockopt(fd: BorrowedFd<'_>, level: i32, opt: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is readable for `val.len()` bytes during the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            val.as_ptr() as *const libc::c_void,
            val.len() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// getsockopt(2) into the byte buffer `buf`; returns the length the kernel
/// reported (may be less than `buf.len()`, e.g. TCP_INFO of an older
/// kernel).
pub fn getsockopt(fd: BorrowedFd<'_>, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and `len` is a valid
    // in/out pointer; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok(len as usize)
}

/// ioctl(2) `req` whose result is an `int` written through the argument
/// pointer (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD, FIONREAD...).
pub fn ioctl_int(fd: BorrowedFd<'_>, req: u64) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests this is meant for write one c_int through the
    // pointer, which points to `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v as *mut libc::c_int) };
    cvt(r as libc::c_long)?;
    Ok(v)
}

/// send(2) of `data` with `flags` (MSG_NOSIGNAL is NOT added); the number
/// of bytes queued.
pub fn send(fd: BorrowedFd<'_>, data: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `data` is readable for its length during the call.
    let r = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            flags,
        )
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// recv(2) into `buf` with `flags` (MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC...);
/// the count the kernel returned (with MSG_TRUNC on a stream it may exceed
/// `buf.len()`).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length during the call.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// sendto(2) of `data` to `to` with `flags`.
pub fn sendto(fd: BorrowedFd<'_>, data: &[u8], flags: i32, to: &SocketAddr) -> io::Result<usize> {
    let (ss, len) = to_raw(to);
    // SAFETY: `data` is readable for its length and `ss` is a valid socket
    // address of at least `len` bytes, during the call.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            flags,
            &ss as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// recvfrom(2) into `buf` with `flags`: the count and the sender's address
/// (None when the kernel gave none, e.g. on a connected stream socket).
pub fn recvfrom(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: i32,
) -> io::Result<(usize, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length, `ss`/`len` are valid
    // out-pointers (at most `len` bytes written), during the call.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
            &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    let n = cvt(r as libc::c_long)? as usize;
    let from = if len == 0 {
        None
    } else {
        Some(from_raw(&ss, len)?)
    };
    Ok((n, from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn raw_roundtrip() {
        for s in [
            "127.0.0.1:80",
            "[::1]:443",
            "[::ffff:10.1.2.3]:8080",
            "[fe80::1%3]:22",
        ] {
            let a: SocketAddr = s.parse().unwrap();
            let (ss, len) = to_raw(&a);
            assert_eq!(from_raw(&ss, len).unwrap(), a, "{s}");
        }
        let (ss, _) = to_raw(&"1.2.3.4:5".parse().unwrap());
        assert!(from_raw(&ss, 4).is_err());
    }

    #[test]
    fn tcp_loopback_v4_and_v6() {
        for (dom, any) in [(libc::AF_INET, "127.0.0.1:0"), (libc::AF_INET6, "[::1]:0")] {
            let l = socket(dom, libc::SOCK_STREAM, 0).unwrap();
            setsockopt_int(l.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
            bind(l.as_fd(), &any.parse().unwrap()).unwrap();
            listen(l.as_fd(), 4).unwrap();
            let la = getsockname(l.as_fd()).unwrap();
            assert_ne!(la.port(), 0);
            let c = socket(dom, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).unwrap();
            match connect(c.as_fd(), &la) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS)),
            }
            let (s, peer) = accept4(l.as_fd(), 0).unwrap();
            assert_eq!(peer, getsockname(c.as_fd()).unwrap());
            assert_eq!(getpeername(s.as_fd()).unwrap(), peer);
            assert_eq!(send(s.as_fd(), b"hello", 0).unwrap(), 5);
            let mut buf = [0u8; 16];
            // Wait for the bytes to arrive, then peek and read them.
            let mut tries = 0;
            while ioctl_int(c.as_fd(), SIOCINQ).unwrap() < 5 {
                tries += 1;
                assert!(tries < 1000);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(recv(c.as_fd(), &mut buf, libc::MSG_PEEK).unwrap(), 5);
            let (n, _) = recvfrom(c.as_fd(), &mut buf, 0).unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(ioctl_int(s.as_fd(), SIOCOUTQNSD).unwrap(), 0);
            let mut nd = [0u8; 4];
            assert_eq!(
                getsockopt(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut nd).unwrap(),
                4
            );
            setsockopt(
                s.as_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &1i32.to_ne_bytes(),
            )
            .unwrap();
            assert_eq!(
                getsockopt_int(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap(),
                1
            );
            shutdown(s.as_fd(), libc::SHUT_WR).unwrap();
        }
    }

    #[test]
    fn udp_sendto_recvfrom_mapped() {
        let a = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).unwrap();
        setsockopt_int(a.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).unwrap();
        bind(a.as_fd(), &"[::ffff:127.0.0.1]:0".parse().unwrap()).unwrap();
        let aa = getsockname(a.as_fd()).unwrap();
        let b = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        bind(b.as_fd(), &"127.0.0.1:0".parse().unwrap()).unwrap();
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), aa.port());
        assert_eq!(sendto(b.as_fd(), b"ping", 0, &to).unwrap(), 4);
        let mut buf = [0u8; 8];
        let (n, from) = recvfrom(a.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"ping");
        let from = from.unwrap();
        assert_eq!(
            from.ip(),
            "::ffff:127.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(from.port(), getsockname(b.as_fd()).unwrap().port());
        assert_eq!(family_of(&from), libc::AF_INET6);
    }
}
