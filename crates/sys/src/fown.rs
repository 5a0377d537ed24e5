//! The owner of an open file (who gets SIGIO/SIGURG for it), its signal,
//! and file leases: the fcntls F_GETOWN_EX/F_SETOWN_EX, F_GETSIG/F_SETSIG,
//! F_GETOWNER_UIDS and F_GETLEASE/F_SETLEASE.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct f_owner_ex.type`: the owner is one thread.
pub const F_OWNER_TID: i32 = 0;
/// The owner is a process (thread group).
pub const F_OWNER_PID: i32 = 1;
/// The owner is a process group.
pub const F_OWNER_PGRP: i32 = 2;

/// fcntl commands (asm-generic values; not in every libc).
pub const F_SETSIG: libc::c_int = 10;
pub const F_GETSIG: libc::c_int = 11;
pub const F_SETOWN_EX: libc::c_int = 15;
pub const F_GETOWN_EX: libc::c_int = 16;

/// F_GETOWNER_UIDS (CONFIG_CHECKPOINT_RESTORE): the real and effective uid
/// recorded when the owner was set.
const F_GETOWNER_UIDS: libc::c_int = 17;

/// `struct f_owner_ex` (two ints: type, pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct OwnerEx {
    pub kind: i32,
    pub pid: i32,
}

/// F_GETOWN_EX: the owner of the open file description `fd` is on (pid 0:
/// none), as seen from the caller's pid namespace.
pub fn owner(fd: BorrowedFd<'_>) -> io::Result<OwnerEx> {
    let mut o = OwnerEx::default();
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex, which `o` is
    // (repr(C), two ints), through a pointer valid for the call.
    let r = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            F_GETOWN_EX,
            &mut o as *mut OwnerEx as *mut libc::c_void,
        )
    };
    cvt(r as libc::c_long)?;
    Ok(o)
}

/// F_SETOWN_EX: make `o` the owner of the description `fd` is on.
pub fn set_owner(fd: BorrowedFd<'_>, o: OwnerEx) -> io::Result<()> {
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex, which `o` is,
    // through a pointer valid for the call.
    let r = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            F_SETOWN_EX,
            &o as *const OwnerEx as *const libc::c_void,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// F_GETOWNER_UIDS: the (uid, euid) of whoever set the owner.
pub fn owner_uids(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut v = [0u32; 2];
    // SAFETY: F_GETOWNER_UIDS writes two uid_t (u32) through the pointer,
    // which points to `v`, two u32, valid for the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWNER_UIDS, v.as_mut_ptr()) };
    cvt(r as libc::c_long)?;
    Ok((v[0], v[1]))
}

/// F_GETSIG: the signal sent when I/O is possible (0: SIGIO).
pub fn signal(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETSIG takes no third argument; the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// F_SETSIG: set that signal.
pub fn set_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: F_SETSIG takes an integer third argument; the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG, sig as libc::c_int) };
    cvt(r as libc::c_long).map(drop)
}

/// F_GETLEASE: the lease the description holds (F_RDLCK, F_WRLCK or
/// F_UNLCK; while a lease is being broken, the type it is broken to).
pub fn lease(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETLEASE takes no third argument; the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// F_SETLEASE: take (or drop, with F_UNLCK) a lease of type `ty`.
pub fn set_lease(fd: BorrowedFd<'_>, ty: i32) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an integer third argument; the fd is
    // borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, ty as libc::c_int) };
    cvt(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn owner_and_signal_round_trip() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fd = f.as_fd();
        assert_eq!(owner(fd).unwrap().pid, 0);
        let me = std::process::id() as i32;
        let o = OwnerEx {
            kind: F_OWNER_PID,
            pid: me,
        };
        set_owner(fd, o).unwrap();
        assert_eq!(owner(fd).unwrap(), o);
        let (uid, euid) = owner_uids(fd).unwrap();
        // SAFETY: getuid cannot fail and takes no arguments.
        let u = unsafe { libc::getuid() };
        // SAFETY: geteuid cannot fail and takes no arguments.
        let e = unsafe { libc::geteuid() };
        assert_eq!((uid, euid), (u, e));
        set_signal(fd, libc::SIGRTMIN() + 2).unwrap();
        assert_eq!(signal(fd).unwrap(), libc::SIGRTMIN() + 2);
    }
}
