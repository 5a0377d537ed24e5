//! File system calls std does not offer.

use crate::cvt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// mknod(2): a FIFO, character or block device node at `path` (`mode`
/// holds the type and permission bits; `rdev` the device number of a
/// device node, as userspace encodes it).
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: `p` is NUL-terminated and lives across the call.
    let r = unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    cvt(r as libc::c_long).map(drop)
}

/// The target of the symlink an fd opened with O_PATH|O_NOFOLLOW is on
/// (readlinkat(fd, "")).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the empty path is a NUL-terminated literal; `buf` is
    // writable for `buf.len()` bytes and outlives the call.
    let r = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = cvt(r as libc::c_long)? as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// Where the next data (`hole` false: SEEK_DATA) or hole (`hole` true:
/// SEEK_HOLE) of a file starts at or after `from`; `None` when there is
/// no data after `from` (ENXIO).
pub fn seek_data_or_hole(fd: BorrowedFd<'_>, from: u64, hole: bool) -> io::Result<Option<u64>> {
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: lseek on a borrowed (open) fd touches no memory.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), from as libc::off_t, whence) };
    match cvt(r as libc::c_long) {
        Ok(off) => Ok(Some(off as u64)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Set the access and modification times of `path` itself (a symlink is
/// not followed); each is (seconds, microseconds).
pub fn set_times_nofollow(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = cpath(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: (atime.1 * 1000) as libc::c_long,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: (mtime.1 * 1000) as libc::c_long,
        },
    ];
    // SAFETY: `p` is NUL-terminated, `ts` holds the two timespecs
    // utimensat reads; both live across the call.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// fchdir(2): make the directory open as `dir` the calling thread's
/// working directory (it may be in another mount namespace).
pub fn fchdir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fchdir takes an fd, borrowed and open for the call.
    let r = unsafe { libc::fchdir(dir.as_raw_fd()) };
    cvt(r as libc::c_long).map(drop)
}

/// fallocate(2) with mode 0 of [off, off + len) of `fd`'s file: its
/// blocks are allocated (reading as zeros until written) and the file
/// grows to cover the range.
pub fn allocate(fd: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate takes the fd (borrowed, open across the call) and
    // integers; it touches no memory of this process.
    let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, off, len) };
    cvt(r as libc::c_long).map(drop)
}

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) of [off, off +
/// len) of `fd`'s file: the range reads as zeros and its blocks are freed;
/// the file's size stays.
pub fn punch_hole(fd: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate takes the fd (borrowed, open across the call) and
    // integers; it touches no memory of this process.
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// Turn O_DIRECT on or off for `fd`'s open file (fcntl F_SETFL): writes
/// then go to the device without the page cache. A file system that does
/// not support it answers EINVAL.
pub fn set_direct_io(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes the fd (borrowed, open across the call) and
    // no other argument; it touches no memory of this process.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } as libc::c_long)?;
    let fl = fl as libc::c_int;
    let want = if on {
        fl | libc::O_DIRECT
    } else {
        fl & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL takes the fd (borrowed, open) and an integer.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, want) };
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

    #[test]
    fn holes_fifos_and_symlinks() {
        let dir = std::env::temp_dir().join(format!("crust-sys-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("sparse"))
            .unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        f.set_len(3 << 20).unwrap();
        let data = seek_data_or_hole(f.as_fd(), 0, false).unwrap();
        let hole = seek_data_or_hole(f.as_fd(), 1 << 20, true).unwrap();
        let none = seek_data_or_hole(f.as_fd(), 2 << 20, false).unwrap();
        let fifo = dir.join("fifo");
        mknod(&fifo, libc::S_IFIFO | 0o600, 0).unwrap();
        let is_fifo = std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(&fifo).unwrap().file_type(),
        );
        let link = dir.join("link");
        std::os::unix::fs::symlink("some/where", &link).unwrap();
        set_times_nofollow(&link, (1000, 5), (2000, 7)).unwrap();
        let lmd = std::fs::symlink_metadata(&link).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        let l = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&link)
            .unwrap();
        let target = readlink_fd(l.as_fd()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Some file systems have no SEEK_DATA: then all is data.
        if data != Some(0) {
            assert_eq!(data, Some(1 << 20));
            assert_eq!(hole, Some((1 << 20) + 4096));
            assert_eq!(none, None);
        }
        assert!(is_fifo);
        assert_eq!(target, b"some/where");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((lmd.atime(), lmd.mtime()), (1000, 2000));
    }
}
