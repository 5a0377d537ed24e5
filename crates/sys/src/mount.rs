//! Mounts: mount(2), umount2(2), pivot_root(2), and a mount made by a
//! short-lived child process ([`mount_in_child`]) for the filesystems
//! that take a namespace from the mounting process rather than from the
//! calling thread (proc takes the pid namespace the mounter's pid is in).

use crate::cvt;
use crate::process::{self, ForkResult, WaitStatus};
use std::ffi::CStr;
use std::io;

/// One mount(2) call's arguments.
#[derive(Debug, Clone, Copy)]
pub struct MountCall<'a> {
    pub source: Option<&'a CStr>,
    pub target: &'a CStr,
    pub fstype: Option<&'a CStr>,
    pub flags: u64,
    pub data: Option<&'a CStr>,
}

fn ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), |s| s.as_ptr())
}

/// mount(2) as `m` says.
pub fn mount(m: &MountCall<'_>) -> io::Result<()> {
    // SAFETY: every pointer is NULL or a NUL-terminated string borrowed
    // for the call; the kernel only reads them.
    let r = unsafe {
        libc::mount(
            ptr(m.source),
            m.target.as_ptr(),
            ptr(m.fstype),
            m.flags as libc::c_ulong,
            ptr(m.data).cast(),
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// umount2(2) of `target` with `flags` (MNT_DETACH...).
pub fn umount2(target: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: `target` is a NUL-terminated string borrowed for the call.
    let r = unsafe { libc::umount2(target.as_ptr(), flags) };
    cvt(r as libc::c_long).map(drop)
}

/// pivot_root(2): the caller's mount namespace gets `new_root` as its
/// root; the old one goes to `put_old` (which may be `new_root` itself).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated strings borrowed for the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    cvt(r).map(drop)
}

/// open_tree(2) with OPEN_TREE_CLONE on the mount `fd` is on (AT_EMPTY_PATH):
/// a detached copy of that one mount, without the mounts under it (what they
/// cover shows). The caller must be in the mount's namespace.
pub fn clone_one_mount(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let empty = c"";
    // SAFETY: `fd` is a valid descriptor for the call, `empty` a
    // NUL-terminated string that lives across it; no pointer is kept.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            empty.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32)
                as libc::c_uint,
        )
    };
    let n = cvt(r)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n as i32) })
}

/// Make the mount `m` in a child process forked from the calling thread,
/// so that it is made from the namespaces the thread joined, including
/// the pid namespace a setns(CLONE_NEWPID) chose for its children; the
/// child only calls mount(2) and leaves, and is reaped here.
pub fn mount_in_child(m: &MountCall<'_>) -> io::Result<()> {
    mount_in_child_as(None, m)
}

/// [`mount_in_child`], the child first joining the user namespace `user`
/// when given (a filesystem keyed by user namespace, binfmt_misc, is then
/// that namespace's instance).
pub fn mount_in_child_as(
    user: Option<std::os::fd::BorrowedFd<'_>>,
    m: &MountCall<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let user = user.map(|u| u.as_raw_fd());
    match process::clone3_fork(&[], 0)? {
        ForkResult::Child => {
            // In the child: async-signal-safe work only (two syscalls).
            if let Some(u) = user {
                // SAFETY: setns takes an fd number (open in this copy of
                // the fd table) and a flag.
                if unsafe { libc::setns(u, libc::CLONE_NEWUSER) } != 0 {
                    let e = io::Error::last_os_error();
                    process::exit_now(e.raw_os_error().unwrap_or(libc::EIO).clamp(1, 255))
                }
            }
            let code = match mount(m) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO).clamp(1, 255),
            };
            process::exit_now(code)
        }
        ForkResult::Parent { child } => match process::waitpid(child, 0)? {
            Some((_, WaitStatus::Exited(0))) => Ok(()),
            Some((_, WaitStatus::Exited(code))) => Err(io::Error::from_raw_os_error(code)),
            _ => Err(io::Error::other("the mounting child did not exit normally")),
        },
    }
}
