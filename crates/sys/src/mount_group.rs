//! Mount propagation by descriptor: a mount's peer group and master
//! copied from another mount (move_mount(2) with MOVE_MOUNT_SET_GROUP,
//! Linux 5.15), and a mount made shared, slave, private or unbindable
//! (mount_setattr(2)'s `propagation`, Linux 5.12). Both work on an
//! `O_PATH` descriptor of the mount's root, so they need no path that
//! resolves in the caller's root.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOVE_MOUNT_SET_GROUP: libc::c_uint = 0x100;

/// linux/mount.h's `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// move_mount(2) with MOVE_MOUNT_SET_GROUP: the mount `to` (private, its
/// root) joins the peer group of `from` and gets its master (`from`'s
/// root must hold `to`'s, on the same superblock).
pub fn set_group(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both descriptors are valid for the call and `empty` is a
    // NUL-terminated string that outlives it; the kernel keeps no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    cvt(r).map(drop)
}

/// mount_setattr(2) of the one mount `fd` is the root of: its
/// propagation becomes `prop` (MS_SHARED, MS_SLAVE, MS_PRIVATE or
/// MS_UNBINDABLE), nothing else changes.
pub fn set_propagation(fd: BorrowedFd<'_>, prop: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: prop,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `attr` and `empty` live across the call and the size given
    // is `attr`'s; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(r).map(drop)
}

/// Whether the kernel knows MOVE_MOUNT_SET_GROUP: asked with two bad
/// descriptors, it fails EBADF when it knows the flag and EINVAL when it
/// does not; nothing is changed either way.
pub fn has_set_group() -> bool {
    let empty = c"";
    // SAFETY: -1 is no descriptor (the kernel fails the lookup) and
    // `empty` is a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1,
            empty.as_ptr(),
            -1,
            empty.as_ptr(),
            MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// A detached, writable copy of the mount at `path` (resolved by the
/// calling thread, which must be in that mount's namespace), rooted at
/// `path` (open_tree(2) with OPEN_TREE_CLONE, then mount_setattr(2)
/// clearing MOUNT_ATTR_RDONLY on the copy only): a way to write into a
/// read-only mount whose superblock is writable. The copy goes when the
/// descriptor is closed.
pub fn writable_clone(path: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: `path` is NUL-terminated and lives across the call; no
    // pointer is kept.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    let n = cvt(r)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(n as i32) };
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: MOUNT_ATTR_RDONLY,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `attr` and `empty` live across the call and the size given
    // is `attr`'s; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(r)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_set_group() {
        // Linux >= 5.15 everywhere crust is tested.
        assert!(super::has_set_group());
    }
}
