//! AF_UNIX sockets and the sock_diag netlink interface, for dumping and
//! restoring unix sockets: taking a task's socket with pidfd_getfd, socket
//! options, peeking at queued messages, creating, binding, connecting and
//! filling sockets, and a raw NETLINK_SOCK_DIAG socket. Parsing netlink
//! replies is left to safe code in the callers.
//!
//! Socket names are given as the bytes of `sun_path` the kernel reports
//! (UNIX_DIAG_NAME): a path with its trailing NUL, or an abstract name
//! starting with a NUL.

use crate::cvt;
use crate::fdpass::SUN_PATH_LEN;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// NETLINK_SOCK_DIAG (linux/netlink.h).
pub const NETLINK_SOCK_DIAG: i32 = 4;
/// SOCK_DIAG_BY_FAMILY (linux/sock_diag.h).
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// # Safety
///
/// `fd` must be a freshly created fd that nobody else owns.
unsafe fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// pidfd_open(2) of process `pid`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    pidfd_open_with(pid, 0)
}

/// pidfd_open(2) with `flags` (PIDFD_NONBLOCK, which is O_NONBLOCK).
pub fn pidfd_open_with(pid: i32, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    let fd = cvt(r)?;
    // SAFETY: the call succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd as RawFd) })
}

/// process_mrelease(2): free the memory of the process `pidfd` refers
/// to, which must be dying (SIGKILL sent), in the calling thread, while
/// its own exit frees it too. Errors when it is not dying (EINVAL) or its
/// memory is already gone (ESRCH).
pub fn process_mrelease(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: process_mrelease takes only integers; the pidfd is borrowed.
    let r = unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0) };
    cvt(r).map(drop)
}

/// pidfd_getfd(2): a copy, in this process, of fd `fd` of the process
/// `pidfd` refers to (the same open file description). Needs ptrace
/// access to it.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes only integers; the pidfd is borrowed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let fd = cvt(r)?;
    // SAFETY: the call succeeded: a new fd (close-on-exec) owned by nobody
    // else.
    Ok(unsafe { own(fd as RawFd) })
}

/// SIOCUNIXFILE (SIOCPROTOPRIVATE, linux/un.h): an O_PATH fd of the file
/// a unix socket is bound to.
const SIOCUNIXFILE: libc::c_ulong = 0x89E0;

/// The file `sock` is bound to (or its listener is, for an accepted
/// socket), opened O_PATH by the kernel (SIOCUNIXFILE, Linux 4.11+; needs
/// CAP_NET_ADMIN). Its /proc/self/fd link is the file's path.
pub fn unix_file(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: SIOCUNIXFILE takes no argument and returns a new fd.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCUNIXFILE as _, 0) };
    let fd = cvt(r as libc::c_long)?;
    // SAFETY: the call succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd as RawFd) })
}

/// A new AF_UNIX socket of `ty` (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET),
/// close-on-exec.
pub fn socket(ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) };
    cvt(fd as libc::c_long)?;
    // SAFETY: socket succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd) })
}

/// A connected pair of AF_UNIX sockets of `ty`, close-on-exec.
pub fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    let (ty, out) = (ty | libc::SOCK_CLOEXEC, fds.as_mut_ptr());
    // SAFETY: `out` points to a writable array of two c_ints.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, out) };
    cvt(r as libc::c_long)?;
    let [a, b] = fds;
    // SAFETY: socketpair succeeded: the first fd is new and owned by nobody
    // else.
    let a = unsafe { own(a) };
    // SAFETY: likewise the second.
    let b = unsafe { own(b) };
    Ok((a, b))
}

/// A `sockaddr_un` holding `name` (sun_path bytes) and its length.
fn sockaddr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    if name.is_empty() || name.len() > SUN_PATH_LEN {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sun.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Ok((sun, len as libc::socklen_t))
}

/// bind(2) `fd` to the name `name`.
pub fn bind(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (sun, len) = sockaddr(name)?;
    // SAFETY: `sun` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sun as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// connect(2) `fd` to the socket bound to `name`.
pub fn connect(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (sun, len) = sockaddr(name)?;
    // SAFETY: `sun` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sun as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// listen(2).
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes only integers; the fd is borrowed.
    let r = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    cvt(r as libc::c_long).map(drop)
}

/// accept4(2) on a listening AF_UNIX socket: the new connection,
/// close-on-exec (the peer's address is not asked for).
pub fn accept(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address and length pointers are allowed (no address is
    // returned); the listening fd is borrowed for the call.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    let fd = cvt(r as libc::c_long)?;
    // SAFETY: accept4 succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd as RawFd) })
}

/// SO_PEERCRED of a connected AF_UNIX socket: the (pid, uid, gid) of the
/// process that made the other end (connect, socketpair).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    let mut u = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `u` and `len` are valid out-pointers; the kernel writes at
    // most `len` bytes into `u`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut u as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok((u.pid, u.uid, u.gid))
}

/// shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR.
pub fn shutdown(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: shutdown takes only integers; the fd is borrowed.
    let r = unsafe { libc::shutdown(fd.as_raw_fd(), how) };
    cvt(r as libc::c_long).map(drop)
}

/// send(2) `data` (to the connected peer, or to `to` when given).
pub fn send(fd: BorrowedFd<'_>, data: &[u8], to: Option<&[u8]>, flags: i32) -> io::Result<usize> {
    let r = match to {
        None => {
            // SAFETY: `data` is a readable buffer of `data.len()` bytes for
            // the duration of the call.
            unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    data.len(),
                    flags,
                )
            }
        }
        Some(name) => {
            let (sun, len) = sockaddr(name)?;
            // SAFETY: `data` is readable for `data.len()` bytes and `sun` is
            // a valid sockaddr_un of at least `len` bytes.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    data.len(),
                    flags,
                    &sun as *const libc::sockaddr_un as *const libc::sockaddr,
                    len,
                )
            }
        }
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// sendmsg(2) of `data` with the fds `fds` attached (SCM_RIGHTS, at most
/// [`crate::fdpass::MAX_FDS_PER_MSG`]), to the connected peer or to `to`.
pub fn send_with_fds(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: Option<&[u8]>,
    fds: &[BorrowedFd<'_>],
    flags: i32,
) -> io::Result<usize> {
    if fds.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    send_msg(fd, data, to, fds, None, flags)
}

/// sendmsg(2) of `data` with the fds `fds` (SCM_RIGHTS, none or at most
/// [`crate::fdpass::MAX_FDS_PER_MSG`]) and the credentials `creds` (pid,
/// uid, gid: SCM_CREDENTIALS; another process's need privileges) attached,
/// to the connected peer or to `to`.
pub fn send_msg(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: Option<&[u8]>,
    fds: &[BorrowedFd<'_>],
    creds: Option<(i32, u32, u32)>,
    flags: i32,
) -> io::Result<usize> {
    if fds.len() > crate::fdpass::MAX_FDS_PER_MSG {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let dest = to.map(sockaddr).transpose()?;
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice()) as u32;
    let cred_len = std::mem::size_of::<libc::ucred>() as u32;
    let rights_space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(payload) }
    };
    // SAFETY: CMSG_LEN only computes a size.
    let cmsg_len = unsafe { libc::CMSG_LEN(payload) };
    let cred_space = if creds.is_some() {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(cred_len) }
    } else {
        0
    };
    // SAFETY: CMSG_LEN only computes a size.
    let cred_cmsg_len = unsafe { libc::CMSG_LEN(cred_len) };
    let space = rights_space + cred_space;
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; (space as usize).div_ceil(8).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut sun = dest.map(|d| d.0);
    if let (Some(sun), Some((_, len))) = (sun.as_mut(), dest) {
        msg.msg_name = sun as *mut libc::sockaddr_un as *mut libc::c_void;
        msg.msg_namelen = len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if space > 0 {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as usize;
    }
    let mut next = std::ptr::null_mut::<libc::cmsghdr>();
    if !fds.is_empty() {
        // `control` is at least CMSG_SPACE(payload) bytes, aligned to 8.
        // SAFETY: msg_control points to `control`, so the first header is
        // inside it with room for `payload` bytes after it.
        let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `c` points to a header inside `control` (above).
        unsafe { write_cmsg_header(c, libc::SCM_RIGHTS, cmsg_len) };
        // SAFETY: CMSG_DATA only computes the address after the header `c`.
        let dst = unsafe { libc::CMSG_DATA(c) };
        // SAFETY: `dst` has room for `payload` bytes inside `control`;
        // `raw` holds exactly `payload` bytes, in a separate buffer.
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr() as *const u8, dst, payload as usize) };
        // SAFETY: `c` is a header of `msg`'s control buffer with its length
        // set; CMSG_NXTHDR checks the bounds and returns null past the end.
        next = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    if let Some((pid, uid, gid)) = creds {
        let u = libc::ucred { pid, uid, gid };
        // The control buffer has CMSG_SPACE(sizeof ucred) bytes left after
        // the rights (if any): CMSG_FIRSTHDR/CMSG_NXTHDR return a header
        // inside it with room for a ucred after it.
        let c = if next.is_null() {
            // SAFETY: msg_control points to `control` (see above).
            unsafe { libc::CMSG_FIRSTHDR(&msg) }
        } else {
            next
        };
        // SAFETY: `c` points to a header inside `control` (above).
        unsafe { write_cmsg_header(c, libc::SCM_CREDENTIALS, cred_cmsg_len) };
        // SAFETY: CMSG_DATA only computes the address after the header `c`.
        let dst = unsafe { libc::CMSG_DATA(c) };
        // SAFETY: `dst` has room for a ucred inside `control`; `u` is a
        // separate local ucred.
        unsafe {
            std::ptr::copy_nonoverlapping(
                &u as *const libc::ucred as *const u8,
                dst,
                cred_len as usize,
            )
        };
    }
    // The fds are borrowed, so open during the call.
    // SAFETY: every pointer in `msg` (name, iov and its data, control)
    // points to memory alive until the call returns; the kernel only reads it.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// Fill the SOL_SOCKET header `c` of a control message of type `ty` and
/// length `len`.
///
/// # Safety
/// `c` must point to a writable, aligned `cmsghdr`.
unsafe fn write_cmsg_header(c: *mut libc::cmsghdr, ty: i32, len: u32) {
    // SAFETY: the caller guarantees `c` is a writable, aligned cmsghdr.
    let h = unsafe { &mut *c };
    h.cmsg_level = libc::SOL_SOCKET;
    h.cmsg_type = ty;
    h.cmsg_len = len as usize;
}

/// getsockopt(2) of an `int` option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid out-pointers; the kernel writes at
    // most `len` bytes to `v`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok(v)
}

/// setsockopt(2) of an `int` option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32, v: i32) -> io::Result<()> {
    let v: libc::c_int = v;
    // SAFETY: `v` is a readable c_int of the length passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// getsockopt(2) of a `struct timeval` option (SO_SNDTIMEO, SO_RCVTIMEO):
/// (seconds, microseconds).
pub fn getsockopt_timeval(fd: BorrowedFd<'_>, opt: i32) -> io::Result<(u64, u64)> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid out-pointers; the kernel writes at
    // most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &mut tv as *mut libc::timeval as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok((tv.tv_sec as u64, tv.tv_usec as u64))
}

/// setsockopt(2) of a `struct timeval` option.
pub fn setsockopt_timeval(fd: BorrowedFd<'_>, opt: i32, sec: u64, usec: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    };
    // SAFETY: `tv` is a readable timeval of the length passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// What one recvmsg returned.
#[derive(Debug)]
pub struct Received {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The message's real length (MSG_TRUNC was passed).
    pub full_len: usize,
    /// msg_flags.
    pub flags: i32,
    /// Fds of SCM_RIGHTS control messages (copies, owned by the caller).
    pub rights: Vec<OwnedFd>,
    /// SCM_CREDENTIALS (pid, uid, gid), when the socket passes them.
    pub creds: Option<(i32, u32, u32)>,
    /// Some other control message came (security label...).
    pub other_cmsg: bool,
}

/// recvmsg(2) into `buf` with `flags` (MSG_TRUNC is added, so the real
/// length is reported), taking any passed fds.
pub fn recvmsg(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> io::Result<Received> {
    // Room for many fds, 8-aligned.
    let mut control = vec![0u64; 4096 / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() * 8;
    // SAFETY: the iovec points to `buf` (writable, its length), the control
    // buffer to `control` (msg_controllen bytes); both outlive the call.
    let r = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            flags | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let n = cvt(r as libc::c_long)? as usize;
    let mut out = Received {
        len: n.min(buf.len()),
        full_len: n,
        flags: msg.msg_flags,
        rights: Vec::new(),
        creds: None,
        other_cmsg: false,
    };
    // Walk the control messages (x86_64: u64 length, i32 level, i32 type,
    // data, each padded to 8 bytes).
    let used = msg.msg_controllen.min(control.len() * 8);
    let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bytes = &bytes[..used];
    let mut off = 0usize;
    while off + 16 <= bytes.len() {
        let len = u64::from_ne_bytes(bytes[off..off + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(bytes[off + 8..off + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(bytes[off + 12..off + 16].try_into().unwrap());
        if len < 16 || off + len > bytes.len() {
            break;
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            for c in bytes[off + 16..off + len].chunks_exact(4) {
                let fd = i32::from_ne_bytes(c.try_into().unwrap());
                // SAFETY: the kernel installed this fd in our table for this
                // message; nobody else knows of it.
                out.rights.push(unsafe { own(fd) });
            }
        } else if level == libc::SOL_SOCKET && ty == libc::SCM_CREDENTIALS && len >= 16 + 12 {
            let w = |o: usize| u32::from_ne_bytes(bytes[off + o..off + o + 4].try_into().unwrap());
            out.creds = Some((w(16) as i32, w(20), w(24)));
        } else {
            out.other_cmsg = true;
        }
        off += len.div_ceil(8) * 8;
    }
    Ok(out)
}

/// A raw netlink socket (close-on-exec) of `protocol`.
pub fn netlink_socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes only integers.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    cvt(fd as libc::c_long)?;
    // SAFETY: socket succeeded: a new fd owned by nobody else.
    Ok(unsafe { own(fd) })
}

/// Send one netlink request (complete nlmsghdr + payload) to the kernel.
pub fn netlink_send(fd: BorrowedFd<'_>, req: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain old data; all zeroes (pid 0: the kernel)
    // is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` is readable for its length and `sa` is a valid
    // sockaddr_nl of the size passed.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    let n = cvt(r as libc::c_long)? as usize;
    if n != req.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Receive one netlink datagram into `buf`; returns its length.
pub fn netlink_recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length during the call.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pair_peek_and_options() {
        let (a, b) = socketpair(libc::SOCK_DGRAM).unwrap();
        send(a.as_fd(), b"hello", None, libc::MSG_DONTWAIT).unwrap();
        send(a.as_fd(), b"", None, libc::MSG_DONTWAIT).unwrap();
        send(a.as_fd(), b"world!", None, libc::MSG_DONTWAIT).unwrap();
        setsockopt_int(b.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
        let mut buf = [0u8; 3];
        let r = recvmsg(b.as_fd(), &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT).unwrap();
        assert_eq!((r.len, r.full_len), (3, 5));
        assert!(r.rights.is_empty());
        assert_eq!(
            getsockopt_int(b.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE).unwrap(),
            libc::SOCK_DGRAM
        );
        setsockopt_timeval(b.as_fd(), libc::SO_RCVTIMEO, 2, 500).unwrap();
        assert_eq!(
            getsockopt_timeval(b.as_fd(), libc::SO_RCVTIMEO).unwrap().0,
            2
        );
        let me = pidfd_open(std::process::id() as i32).unwrap();
        let copy = pidfd_getfd(me.as_fd(), b.as_raw_fd()).unwrap();
        let mut big = [0u8; 64];
        let r = recvmsg(copy.as_fd(), &mut big, libc::MSG_DONTWAIT).unwrap();
        assert_eq!(&big[..r.len], b"hello");
    }

    #[test]
    fn rights_sent_and_peeked() {
        let (a, b) = socketpair(libc::SOCK_DGRAM).unwrap();
        let (x, _y) = socketpair(libc::SOCK_STREAM).unwrap();
        let n = send_with_fds(a.as_fd(), b"fd", None, &[x.as_fd()], 0).unwrap();
        assert_eq!(n, 2);
        let mut buf = [0u8; 8];
        let r = recvmsg(b.as_fd(), &mut buf, libc::MSG_PEEK).unwrap();
        assert_eq!((r.len, r.rights.len()), (2, 1));
    }

    #[test]
    fn abstract_bind_connect() {
        let name = format!("\0crust-sys-unix-{}", std::process::id());
        let l = socket(libc::SOCK_STREAM).unwrap();
        bind(l.as_fd(), name.as_bytes()).unwrap();
        listen(l.as_fd(), 4).unwrap();
        let c = socket(libc::SOCK_STREAM).unwrap();
        connect(c.as_fd(), name.as_bytes()).unwrap();
        shutdown(c.as_fd(), libc::SHUT_WR).unwrap();
        assert!(sockaddr(&[0u8; 200]).is_err());
    }
}
