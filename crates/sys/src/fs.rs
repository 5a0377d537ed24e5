//! File system calls std does not offer.

use crate::cvt;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// linkat(2) with AT_SYMLINK_FOLLOW: a new name `dst` for the file `src`
/// leads to, e.g. `/proc/PID/fd/N` (an open file whose name was unlinked
/// but which has other links).
pub fn link_following(src: &Path, dst: &Path) -> io::Result<()> {
    let s = cpath(src)?;
    let d = cpath(dst)?;
    // SAFETY: both strings are NUL-terminated and live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            s.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_through_proc_fd() {
        let dir = std::env::temp_dir().join(format!("crust-sys-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        let c = dir.join("c");
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        let f = std::fs::File::open(&a).unwrap();
        std::fs::remove_file(&a).unwrap();
        use std::os::fd::AsRawFd;
        let fdp = format!("/proc/self/fd/{}", f.as_raw_fd());
        let r = link_following(Path::new(&fdp), &c);
        let same = std::fs::read(&c).ok();
        std::fs::remove_dir_all(&dir).unwrap();
        r.unwrap();
        assert_eq!(same.as_deref(), Some(&b"x"[..]));
    }
}
