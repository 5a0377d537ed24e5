//! Packet (AF_PACKET) and netlink (AF_NETLINK) socket addresses: binding
//! and connecting with a `sockaddr_ll` / `sockaddr_nl`, reading the names
//! back, and a zero-timeout poll for readable data. Options that are plain
//! structs (packet_mreq, tpacket_req3, ...) go through
//! [`crate::net::setsockopt`] as bytes built by the caller; BPF filters
//! through [`crate::sockfilter`].

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

/// bind(2) a SOCK_PACKET socket (the obsolete packet interface) to the
/// interface named `dev`: a plain `sockaddr` whose data is the name.
pub fn spkt_bind(fd: BorrowedFd<'_>, dev: &str) -> io::Result<()> {
    // SAFETY: sockaddr is plain old data; all zeroes is a valid value.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_PACKET as libc::sa_family_t;
    // The name and its NUL must fit sa_data (14 bytes).
    if dev.len() >= sa.sa_data.len() || dev.as_bytes().contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, b) in sa.sa_data.iter_mut().zip(dev.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: `sa` is a valid sockaddr of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// The name of the interface with index `ifindex` (if_indextoname(3)).
pub fn if_name(ifindex: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has room for IF_NAMESIZE bytes, as if_indextoname needs.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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

/// The events of `events` that `fd` reports right now (poll, no wait).
pub fn poll_now(fd: BorrowedFd<'_>, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the call.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    cvt(r as libc::c_long)?;
    Ok(if r > 0 { p.revents } else { 0 })
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
}
