//! POSIX message queues of the caller's IPC namespace: listing them (they
//! live on its internal mqueue filesystem, which only a mount shows), and
//! the mq_* syscalls (open, create, attributes, receive, send, unlink).

use crate::cvt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Mount the mqueue filesystem of the calling thread's IPC namespace where
/// only the thread sees it and return where: one file per queue, named as
/// the queue without its leading '/'. The thread must be one crust can
/// spare: it moves to a mount namespace of its own (unshare(CLONE_FS |
/// CLONE_NEWNS)), makes it private, and mounts the filesystem over `/proc`
/// there; the mount vanishes with the thread's mount namespace when the
/// thread ends. Nothing is visible outside the thread.
pub fn mount_own_mqueue_privately() -> io::Result<&'static Path> {
    // SAFETY: unshare takes flags only.
    let r = unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) };
    cvt(r as libc::c_long)?;
    let root = CString::new("/").map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path borrowed for the call, null source,
    // type and data (a propagation change takes none).
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    cvt(r as libc::c_long)?;
    let (src, at, fstype) = (
        CString::new("mqueue").map_err(io::Error::other)?,
        CString::new("/proc").map_err(io::Error::other)?,
        CString::new("mqueue").map_err(io::Error::other)?,
    );
    // SAFETY: NUL-terminated strings borrowed for the call; no data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            at.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    cvt(r as libc::c_long)?;
    Ok(Path::new("/proc"))
}

/// A queue's attributes (`struct mq_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqAttr {
    pub flags: i64,
    pub maxmsg: i64,
    pub msgsize: i64,
    pub curmsgs: i64,
}

fn queue_name(name: &str) -> io::Result<CString> {
    // The syscall takes the name without glibc's leading '/'.
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    CString::new(name).map_err(io::Error::other)
}

/// Open the existing queue `name` (no leading '/') of the calling thread's
/// IPC namespace to read and write, without blocking.
pub fn open_existing(name: &str) -> io::Result<OwnedFd> {
    let n = queue_name(name)?;
    // SAFETY: a NUL-terminated name borrowed for the call; no O_CREAT, so
    // mode and attr are not read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            n.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0 as libc::c_uint,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    let fd = cvt(r)? as RawFd;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Create queue `name` (no leading '/'; it must not exist) with `mode`
/// (the caller's umask applies: clear it or fchmod after) and room for
/// `maxmsg` messages of up to `msgsize` bytes; opened to read and write,
/// without blocking.
pub fn create(name: &str, mode: u32, maxmsg: i64, msgsize: i64) -> io::Result<OwnedFd> {
    let n = queue_name(name)?;
    // SAFETY: mq_attr is plain old data; all-zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    // SAFETY: a NUL-terminated name and an mq_attr, both borrowed for
    // the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            n.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_CREAT | libc::O_EXCL,
            mode as libc::c_uint,
            &attr as *const libc::mq_attr,
        )
    };
    let fd = cvt(r)? as RawFd;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Remove queue `name` (no leading '/') from the caller's IPC namespace.
pub fn unlink(name: &str) -> io::Result<()> {
    let n = queue_name(name)?;
    // SAFETY: a NUL-terminated name borrowed for the call.
    let r = unsafe { libc::syscall(libc::SYS_mq_unlink, n.as_ptr()) };
    cvt(r).map(|_| ())
}

/// The attributes of the queue open on `fd`.
pub fn getattr(fd: BorrowedFd<'_>) -> io::Result<MqAttr> {
    // SAFETY: mq_attr is plain old data; all-zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: a null new attr (nothing set) and a writable mq_attr the
    // kernel fills, borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<libc::mq_attr>(),
            &mut attr as *mut libc::mq_attr,
        )
    };
    cvt(r)?;
    Ok(MqAttr {
        flags: attr.mq_flags,
        maxmsg: attr.mq_maxmsg,
        msgsize: attr.mq_msgsize,
        curmsgs: attr.mq_curmsgs,
    })
}

/// Take the first message (highest priority, oldest first) of the queue
/// open on `fd` (opened non-blocking) into `buf`, which must hold the
/// queue's msgsize: (its length, its priority); EAGAIN when empty.
pub fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    let mut prio: libc::c_uint = 0;
    // SAFETY: a writable buffer of buf.len() bytes and a writable u32,
    // both borrowed for the call; a null timeout (the fd does not block).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_timedreceive,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut prio as *mut libc::c_uint,
            std::ptr::null::<libc::timespec>(),
        )
    };
    Ok((cvt(r)? as usize, prio))
}

/// Put `msg` with priority `prio` on the queue open on `fd` (opened
/// non-blocking: EAGAIN when full).
pub fn send(fd: BorrowedFd<'_>, msg: &[u8], prio: u32) -> io::Result<()> {
    // SAFETY: a readable buffer of msg.len() bytes borrowed for the call;
    // a null timeout (the fd does not block).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_timedsend,
            fd.as_raw_fd(),
            msg.as_ptr(),
            msg.len(),
            prio as libc::c_uint,
            std::ptr::null::<libc::timespec>(),
        )
    };
    cvt(r).map(|_| ())
}
