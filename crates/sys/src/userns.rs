//! User namespaces: which user namespace owns another namespace.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// NS_GET_USERNS: _IO(0xb7, 0x1) (linux/nsfs.h).
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The user namespace that owns the namespace `ns` is on (an open
/// /proc/PID/ns/KIND), as a new fd on it.
pub fn owner(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument and touches no memory of
    // ours; `ns` is a valid fd borrowed for the call.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    let fd = cvt(r as libc::c_long)? as i32;
    // SAFETY: on success the ioctl returned a new fd that nothing else
    // owns: the OwnedFd becomes its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The calling thread's real uid and gid.
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid takes nothing and cannot fail.
    let uid = unsafe { libc::getuid() };
    // SAFETY: getgid takes nothing and cannot fail.
    let gid = unsafe { libc::getgid() };
    (uid, gid)
}

/// Make the calling THREAD's effective uid `euid`, keeping its
/// capabilities: SECBIT_NO_SETUID_FIXUP added to its securebits first
/// (needs CAP_SETPCAP), then setresuid(-1, euid, -1) as a raw system call
/// (glibc's would change every thread of the process). For a thread that
/// ends after its work: nothing is put back.
pub fn thread_set_euid_keep_caps(euid: u32) -> io::Result<()> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: prctl with integer arguments; it changes only this thread's
    // credentials and touches no memory of ours.
    let bits = unsafe { libc::syscall(libc::SYS_prctl, libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    let bits = cvt(bits)? as libc::c_ulong;
    // SAFETY: as above.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_SECUREBITS,
            bits | SECBIT_NO_SETUID_FIXUP,
            0,
            0,
            0,
        )
    };
    cvt(r)?;
    // SAFETY: setresuid takes integers (-1: unchanged) and changes only the
    // calling thread's credentials when made as a raw system call.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, u32::MAX, euid, u32::MAX) };
    cvt(r).map(drop)
}

/// Make the calling THREAD's effective gid `egid` (setresgid(-1, egid,
/// -1) as a raw system call: only this thread; needs CAP_SETGID). For a
/// thread that ends after its work.
pub fn thread_set_egid(egid: u32) -> io::Result<()> {
    // SAFETY: setresgid takes integers (-1: unchanged) and changes only the
    // calling thread's credentials when made as a raw system call.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, u32::MAX, egid, u32::MAX) };
    cvt(r).map(drop)
}

/// Set the calling process's real, effective and saved gid to `gid`, then
/// uid to `uid` (raw setresgid/setresuid: safe in a freshly forked child,
/// where libc's set*id would try to reach threads the child does not
/// have). For a process that just joined a user namespace in which both
/// are mapped.
pub fn set_all_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setresgid takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    cvt(r)?;
    // SAFETY: setresuid takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    cvt(r).map(drop)
}
