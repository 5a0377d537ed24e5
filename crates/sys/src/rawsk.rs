//! Packet (AF_PACKET) and netlink (AF_NETLINK) socket addresses, and the
//! socket options that pass pointers (classic BPF filters): binding and
//! connecting with a `sockaddr_ll` / `sockaddr_nl`, reading the names back,
//! SO_GET_FILTER / SO_ATTACH_FILTER, and a zero-timeout poll for readable
//! data. Options that are plain structs (packet_mreq, tpacket_req3, ...)
//! go through [`crate::net::setsockopt`] as bytes built by the caller.

use crate::cvt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A `sockaddr_ll` for binding: family, protocol (network byte order, as
/// the kernel stores it), interface index; the rest zero.
fn sockaddr_ll(proto_be: u16, ifindex: i32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto_be;
    sa.sll_ifindex = ifindex;
    sa
}

/// bind(2) a packet socket to interface `ifindex` (0: every interface) and
/// protocol `proto_be` (network byte order; 0 keeps the socket's own).
pub fn packet_bind(fd: BorrowedFd<'_>, proto_be: u16, ifindex: i32) -> io::Result<()> {
    let sa = sockaddr_ll(proto_be, ifindex);
    // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// getsockname(2) of a packet socket: (protocol in network byte order,
/// interface index).
pub fn packet_name(fd: BorrowedFd<'_>) -> io::Result<(u16, i32)> {
    let mut sa = sockaddr_ll(0, 0);
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sa` is writable for `len` bytes and `len` is a valid in/out
    // pointer; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok((sa.sll_protocol, sa.sll_ifindex))
}

fn sockaddr_nl(portid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_pid = portid;
    sa.nl_groups = groups;
    sa
}

/// bind(2) a netlink socket to port id `portid` (0: let the kernel pick)
/// and the multicast groups 1-32 of the bit mask `groups`.
pub fn netlink_bind(fd: BorrowedFd<'_>, portid: u32, groups: u32) -> io::Result<()> {
    let sa = sockaddr_nl(portid, groups);
    // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// connect(2) a netlink socket to port id `portid` and the group mask
/// `groups` (the kernel keeps the lowest group set).
pub fn netlink_connect(fd: BorrowedFd<'_>, portid: u32, groups: u32) -> io::Result<()> {
    let sa = sockaddr_nl(portid, groups);
    // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// The own name (`peer` false) or the peer's (`peer` true) of a netlink
/// socket: (port id, group mask of groups 1-32).
pub fn netlink_name(fd: BorrowedFd<'_>, peer: bool) -> io::Result<(u32, u32)> {
    let mut sa = sockaddr_nl(0, 0);
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let p = &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr;
    let r = if peer {
        // SAFETY: `sa` is writable for `len` bytes and `len` is a valid
        // in/out pointer; the kernel writes at most `len` bytes.
        unsafe { libc::getpeername(fd.as_raw_fd(), p, &mut len) }
    } else {
        // SAFETY: as above.
        unsafe { libc::getsockname(fd.as_raw_fd(), p, &mut len) }
    };
    cvt(r as libc::c_long)?;
    Ok((sa.nl_pid, sa.nl_groups))
}

/// The classic BPF filter attached to a socket (SO_GET_FILTER), each
/// `struct sock_filter` (code u16, jt u8, jf u8, k u32) as the u64 of its
/// 8 bytes in memory, as CRIU's `so_filter` keeps them. Empty if none.
pub fn get_filter(fd: BorrowedFd<'_>) -> io::Result<Vec<u64>> {
    // The length of SO_GET_FILTER counts instructions, not bytes: asking
    // with 0 gives the count.
    let mut n: libc::socklen_t = 0;
    // SAFETY: a zero length: the kernel writes nothing to the (null) value
    // pointer and only the count to `n`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut n,
        )
    };
    cvt(r as libc::c_long)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = vec![0u64; n as usize];
    let mut len = n;
    // SAFETY: `out` holds `n` 8-byte slots, exactly `n` sock_filter
    // structs; the kernel copies at most `len` (= n) of them.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            out.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    out.truncate(len.min(n) as usize);
    Ok(out)
}

/// Attach the classic BPF program `prog` (as [`get_filter`] returns it)
/// with SO_ATTACH_FILTER.
pub fn attach_filter(fd: BorrowedFd<'_>, prog: &[u64]) -> io::Result<()> {
    if prog.is_empty() || prog.len() > u16::MAX as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `prog`, `len` 8-byte sock_filter structs
    // (u64 storage is aligned enough), readable during the call; the kernel
    // copies them.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// Whether `fd` has data to read right now (poll POLLIN, no wait).
pub fn has_data(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the call.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    cvt(r as libc::c_long)?;
    Ok(r > 0 && p.revents & libc::POLLIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn netlink_bind_and_names() {
        let s = crate::unix::netlink_socket(0).unwrap(); // NETLINK_ROUTE
        netlink_bind(s.as_fd(), 0, 1).unwrap();
        let (portid, groups) = netlink_name(s.as_fd(), false).unwrap();
        assert_ne!(portid, 0);
        assert_eq!(groups, 1);
        assert!(!has_data(s.as_fd()).unwrap());
        netlink_connect(s.as_fd(), 0, 0).unwrap();
        assert_eq!(netlink_name(s.as_fd(), true).unwrap(), (0, 0));
    }

    #[test]
    fn filter_round_trip() {
        let (a, _b) = crate::unix::socketpair(libc::SOCK_DGRAM).unwrap();
        assert!(get_filter(a.as_fd()).unwrap().is_empty());
        // BPF_RET | BPF_K, k = 0xffff: accept up to 65535 bytes.
        let ret: u64 = 0x06 | (0xffffu64 << 32);
        attach_filter(a.as_fd(), &[ret]).unwrap();
        assert_eq!(get_filter(a.as_fd()).unwrap(), vec![ret]);
    }
}
