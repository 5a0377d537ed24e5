//! POSIX message queues: listing those of the caller's IPC namespace (they
//! live on its internal mqueue filesystem, which only a mount shows).

use crate::cvt;
use std::ffi::CString;
use std::io;

/// The names of the POSIX message queues of the calling thread's IPC
/// namespace. The thread must be one crust can spare: it moves to a mount
/// namespace of its own (unshare(CLONE_FS | CLONE_NEWNS)), makes it
/// private, and mounts the mqueue filesystem of its IPC namespace over
/// `/proc` there; the mount vanishes with the thread's mount namespace
/// when the thread ends. Nothing is visible outside the thread.
pub fn queues_of_own_ipcns_in_private_mount() -> io::Result<Vec<String>> {
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
    let mut names = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
