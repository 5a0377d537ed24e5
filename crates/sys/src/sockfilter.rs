//! Classic BPF socket filters (SO_ATTACH_FILTER / SO_GET_FILTER): read the
//! program attached to a socket and attach one, each instruction as its
//! 8 raw bytes (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k).

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// SO_GET_FILTER shares its number with SO_ATTACH_FILTER.
const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;

/// The filter program attached to the socket (empty when none), as raw
/// sock_filter bytes (8 per instruction).
pub fn get_filter(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // With a length of 0 the kernel answers the number of instructions;
    // lengths are counted in instructions, not bytes, for this option.
    let mut count: libc::socklen_t = 0;
    // SAFETY: a null buffer with a length of 0: the kernel only writes
    // the count through the valid `count` pointer.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut count,
        )
    };
    cvt(r as libc::c_long)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; count as usize * 8];
    let mut len = count;
    // SAFETY: `buf` holds `count` instructions of 8 bytes and `len` (in
    // instructions) says so; the kernel writes at most that many.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    buf.truncate(len as usize * 8);
    Ok(buf)
}

/// Attach the classic BPF program `prog` (8 bytes per instruction).
pub fn attach_filter(fd: BorrowedFd<'_>, prog: &[u8]) -> io::Result<()> {
    if !prog.len().is_multiple_of(8) || prog.len() / 8 > u16::MAX as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let fprog = libc::sock_fprog {
        len: (prog.len() / 8) as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which holds `len` instructions and
    // outlives the call; the kernel copies the program and does not write.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn attach_and_read_back() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(get_filter(s.as_fd()).unwrap().is_empty());
        // ret #0xffff (accept whole packet): BPF_RET|BPF_K = 0x06.
        let mut prog = Vec::new();
        prog.extend_from_slice(&0x06u16.to_ne_bytes());
        prog.extend_from_slice(&[0, 0]);
        prog.extend_from_slice(&0xffffu32.to_ne_bytes());
        attach_filter(s.as_fd(), &prog).unwrap();
        assert_eq!(get_filter(s.as_fd()).unwrap(), prog);
    }
}
