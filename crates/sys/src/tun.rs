//! The ioctls of the tun/tap clone device `/dev/net/tun` (linux/if_tun.h):
//! attach a file to a link (making it), read what a file is attached to,
//! detach a queue, and the link's settings a restore gives back.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The clone device.
pub const PATH: &str = "/dev/net/tun";

/// Link flags (ifr_flags of TUNSETIFF / TUNGETIFF).
pub const IFF_TUN: u32 = 0x0001;
pub const IFF_TAP: u32 = 0x0002;
pub const IFF_MULTI_QUEUE: u32 = 0x0100;
pub const IFF_ATTACH_QUEUE: u32 = 0x0200;
pub const IFF_DETACH_QUEUE: u32 = 0x0400;
pub const IFF_PERSIST: u32 = 0x0800;
pub const IFF_NO_PI: u32 = 0x1000;
/// In TUNGETIFF's answer: the file has no socket filter (same bit as
/// IFF_NO_PI, which TUNGETIFF's answer therefore cannot tell).
pub const IFF_NOFILTER: u32 = 0x1000;
pub const IFF_VNET_HDR: u32 = 0x4000;

// _IOW('T', n, int) and _IOR('T', n, ...): dir << 30 | size << 16 | 'T' << 8 | n.
const fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (0x54 << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (0x54 << 8) | nr
}
const TUNSETIFF: u64 = iow(202, 4);
const TUNSETPERSIST: u64 = iow(203, 4);
const TUNSETOWNER: u64 = iow(204, 4);
const TUNSETGROUP: u64 = iow(206, 4);
const TUNGETIFF: u64 = ior(210, 4);
const TUNGETSNDBUF: u64 = ior(211, 4);
const TUNSETSNDBUF: u64 = iow(212, 4);
const TUNGETVNETHDRSZ: u64 = ior(215, 4);
const TUNSETVNETHDRSZ: u64 = iow(216, 4);
const TUNSETQUEUE: u64 = iow(217, 4);
const TUNSETIFINDEX: u64 = iow(218, 4);
/// struct sock_fprog: u16 len, then a pointer.
const TUNGETFILTER: u64 = ior(219, 16);

/// struct ifreq as these ioctls use it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: u16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: u32) -> io::Result<IfReq> {
        let b = name.as_bytes();
        if b.len() >= 16 || b.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut r = IfReq {
            name: [0; 16],
            flags: flags as u16,
            _pad: [0; 22],
        };
        if let Some(dst) = r.name.get_mut(..b.len()) {
            dst.copy_from_slice(b);
        }
        Ok(r)
    }
}

fn ioctl_req(fd: BorrowedFd<'_>, req: u64, r: &mut IfReq) -> io::Result<()> {
    // SAFETY: `r` is a valid, writable struct ifreq (40 bytes) for the
    // call; these requests read and write at most that.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut IfReq) };
    cvt(ret as libc::c_long).map(|_| ())
}

fn ioctl_val(fd: BorrowedFd<'_>, req: u64, v: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these requests take their argument by value, no memory.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v) };
    cvt(ret as libc::c_long).map(|_| ())
}

fn ioctl_ptr(fd: BorrowedFd<'_>, req: u64, v: &mut libc::c_int) -> io::Result<()> {
    // SAFETY: these requests read or write one int through the pointer,
    // which points to `v`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v as *mut libc::c_int) };
    cvt(ret as libc::c_long).map(|_| ())
}

/// TUNSETIFF: attach the file to link `name` (made if there is none).
pub fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: u32) -> io::Result<()> {
    let mut r = IfReq::new(name, flags)?;
    ioctl_req(fd, TUNSETIFF, &mut r)
}

/// TUNGETIFF: the link the file is attached to and its flags (with
/// IFF_DETACH_QUEUE for a detached queue, IFF_NOFILTER for a file without
/// filter); `None` for a file attached to nothing (EBADFD).
pub fn get_iff(fd: BorrowedFd<'_>) -> io::Result<Option<(String, u32)>> {
    let mut r = IfReq::new("", 0)?;
    match ioctl_req(fd, TUNGETIFF, &mut r) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Ok(None),
        Err(e) => return Err(e),
    }
    let end = r.name.iter().position(|&c| c == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(r.name.get(..end).unwrap_or(&[])).into_owned();
    Ok(Some((name, r.flags as u32)))
}

/// TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE.
pub fn set_queue(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let mut r = IfReq::new("", flags)?;
    ioctl_req(fd, TUNSETQUEUE, &mut r)
}

/// TUNSETPERSIST: the link outlives its files, or not.
pub fn set_persist(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    ioctl_val(fd, TUNSETPERSIST, on as libc::c_ulong)
}

/// TUNSETOWNER (uid) or, with `group`, TUNSETGROUP (gid).
pub fn set_owner(fd: BorrowedFd<'_>, id: u32, group: bool) -> io::Result<()> {
    let req = if group { TUNSETGROUP } else { TUNSETOWNER };
    ioctl_val(fd, req, id as libc::c_ulong)
}

/// TUNSETIFINDEX: the index the next link made by this file gets.
pub fn set_ifindex(fd: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    let mut v = index as libc::c_int;
    ioctl_ptr(fd, TUNSETIFINDEX, &mut v)
}

/// TUNGETSNDBUF.
pub fn sndbuf(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut v = 0;
    ioctl_ptr(fd, TUNGETSNDBUF, &mut v).map(|_| v)
}

/// TUNSETSNDBUF.
pub fn set_sndbuf(fd: BorrowedFd<'_>, v: i32) -> io::Result<()> {
    let mut v = v;
    ioctl_ptr(fd, TUNSETSNDBUF, &mut v)
}

/// TUNGETVNETHDRSZ.
pub fn vnet_hdr_size(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut v = 0;
    ioctl_ptr(fd, TUNGETVNETHDRSZ, &mut v).map(|_| v)
}

/// TUNSETVNETHDRSZ.
pub fn set_vnet_hdr_size(fd: BorrowedFd<'_>, v: i32) -> io::Result<()> {
    let mut v = v;
    ioctl_ptr(fd, TUNSETVNETHDRSZ, &mut v)
}

/// TUNGETFILTER of a tap: the length (instructions) of the socket filter
/// its link has, 0 for none.
pub fn filter_len(fd: BorrowedFd<'_>) -> io::Result<u16> {
    let mut buf = [0u64; 2];
    // SAFETY: `buf` is 16 writable bytes, the size of struct sock_fprog
    // the request writes (its length first).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETFILTER as _, buf.as_mut_ptr()) };
    cvt(ret as libc::c_long)?;
    Ok(buf[0] as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_are_the_kernel_ones() {
        assert_eq!(TUNSETIFF, 0x400454ca);
        assert_eq!(TUNGETIFF, 0x800454d2);
        assert_eq!(TUNSETIFINDEX, 0x400454da);
        assert_eq!(TUNGETFILTER, 0x801054db);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn a_bad_name_is_refused() {
        assert!(IfReq::new("0123456789abcdef", 0).is_err());
        assert!(IfReq::new("a\0b", 0).is_err());
        assert_eq!(&IfReq::new("tun0", 1).unwrap().name[..5], b"tun0\0");
    }
}
