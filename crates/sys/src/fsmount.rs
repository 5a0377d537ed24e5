//! A filesystem mounted detached, with the new mount API: fsopen(2),
//! fsconfig(2), fsmount(2). The mount has no place in any namespace until
//! it is attached ([`crate::mountfd::move_mount_to`]), so it can be made
//! before the directory it goes on exists, or when it goes over `/`.

use crate::cvt;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// One fsconfig(2) call on the filesystem context `fs`.
fn config(
    fs: BorrowedFd<'_>,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: `fs` is valid; key and value are null (as `cmd` allows) or
    // NUL-terminated strings alive across the call, not kept by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            ptr(key),
            ptr(value),
            0 as libc::c_int,
        )
    };
    cvt(r).map(drop)
}

/// A new superblock of type `fstype` from `source`, with `options` (each
/// `(key, Some(value))` or a flag `(key, None)`), mounted detached: an fd
/// on its mount (no mount flags set; the caller sets them once attached).
pub fn new_detached(
    fstype: &CStr,
    source: &CStr,
    options: &[(&CStr, Option<&CStr>)],
) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is NUL-terminated and lives across the call.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    let n = cvt(r)?;
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(n as i32) };
    let b = fs.as_fd();
    config(b, FSCONFIG_SET_STRING, Some(c"source"), Some(source))?;
    for (k, v) in options {
        match v {
            Some(v) => config(b, FSCONFIG_SET_STRING, Some(k), Some(v))?,
            None => config(b, FSCONFIG_SET_FLAG, Some(k), None)?,
        }
    }
    config(b, FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: `fs` is a valid filesystem context descriptor; no pointer
    // is passed.
    let r = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    let n = cvt(r)?;
    // SAFETY: fsmount returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_filesystem_is_refused() {
        let e = new_detached(c"no-such-fs-crust", c"x", &[]).unwrap_err();
        // ENODEV (no such type), or EPERM when not root.
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EPERM)),
            "{e}"
        );
    }
}
