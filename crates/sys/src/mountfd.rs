//! Mounts held by descriptors: a detached mount moved into place
//! (move_mount(2)), the mount a descriptor is on (statx(2)'s mount id),
//! and a file read relative to a directory descriptor (for a thread whose
//! `/proc` is another pid namespace's).

use crate::cvt;
use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Attach the detached mount `from` (from open_tree(OPEN_TREE_CLONE)) at
/// `target`, in the calling thread's mount namespace.
pub fn move_mount_to(from: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    let empty = c"";
    // SAFETY: `from` is a valid descriptor and both strings are
    // NUL-terminated and live across the call; no pointer is kept.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    cvt(r).map(drop)
}

/// The id (as in mountinfo) of the mount descriptor `fd` is on.
pub fn mnt_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: statx is plain old data, all-zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: `fd` is valid, `empty` NUL-terminated, `st` a writable
    // statx the kernel fills; nothing is kept after the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    cvt(r.into())?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(st.stx_mnt_id)
}

/// Open `name` under the directory `dir` with `flags` (O_CLOEXEC added).
pub fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is valid and `name` NUL-terminated for the call.
    let r = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    let fd = cvt(r.into())?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The whole text of `name` under the directory `dir`.
pub fn read_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<String> {
    let fd = open_at(dir, name, libc::O_RDONLY)?;
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s)?;
    Ok(s)
}
