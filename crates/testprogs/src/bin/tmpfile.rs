//! `tmpfile --dir DIR`: files made with O_TMPFILE in DIR (as MariaDB makes
//! its temporary files): one unlinked with data and an offset, dup'ed, and
//! one linked into DIR afterwards (linkat through /proc/self/fd). After
//! restore: the same data, offset and access mode, the dup still on the
//! same description, writes work, and the linked one is still the file in
//! DIR.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::FileExt;

const UNLINKED: i32 = 30;
const DUP: i32 = 31;
const LINKED: i32 = 32;

fn tmpfile(dir: &std::ffi::CStr) -> i32 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    fd
}

fn place(fd: i32, at: i32) {
    // SAFETY: dup2/close of our own fds.
    unsafe {
        assert_eq!(libc::dup2(fd, at), at);
        libc::close(fd);
    }
}

fn write_fd(fd: i32, data: &[u8]) -> isize {
    // SAFETY: writes a valid buffer to our fd.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) }
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let dir = args.path("dir");
    let cdir = crust_testprogs::cpath(&dir);
    place(tmpfile(&cdir), UNLINKED);
    assert_eq!(write_fd(UNLINKED, b"hello, temporary world"), 22);
    // SAFETY: lseek/dup2 on our fds.
    unsafe {
        libc::lseek(UNLINKED, 7, libc::SEEK_SET);
        assert_eq!(libc::dup2(UNLINKED, DUP), DUP);
    }
    place(tmpfile(&cdir), LINKED);
    assert_eq!(write_fd(LINKED, b"linked"), 6);
    let proc_path =
        crust_testprogs::cpath(std::path::Path::new(&format!("/proc/self/fd/{LINKED}")));
    let linked = dir.join("linked.dat");
    let clinked = crust_testprogs::cpath(&linked);
    // SAFETY: linkat with NUL-terminated paths.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            clinked.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    assert_eq!(r, 0, "linkat: {}", std::io::Error::last_os_error());
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        // SAFETY: lseek and fcntl on our fds.
        let (pos, fl) = unsafe {
            (
                libc::lseek(UNLINKED, 0, libc::SEEK_CUR),
                libc::fcntl(UNLINKED, libc::F_GETFL),
            )
        };
        ensure!(pos == 7, "the O_TMPFILE file's offset is {pos}, not 7");
        ensure!(
            fl & libc::O_ACCMODE == libc::O_RDWR,
            "the O_TMPFILE file is not read-write (flags {fl:#o})"
        );
        ensure!(write_fd(DUP, b"T") == 1, "write through the dup failed");
        // SAFETY: lseek on our fd.
        let pos = unsafe { libc::lseek(UNLINKED, 0, libc::SEEK_CUR) };
        ensure!(
            pos == 8,
            "the dup is not on the same description (offset {pos})"
        );
        let f =
            std::fs::File::open(format!("/proc/self/fd/{UNLINKED}")).map_err(|e| e.to_string())?;
        let mut b = [0u8; 22];
        f.read_exact_at(&mut b, 0).map_err(|e| e.to_string())?;
        ensure!(
            &b == b"hello, Temporary world",
            "content is {:?}",
            String::from_utf8_lossy(&b)
        );
        let link =
            std::fs::read_link(format!("/proc/self/fd/{UNLINKED}")).map_err(|e| e.to_string())?;
        ensure!(
            link.to_string_lossy().ends_with(" (deleted)"),
            "the O_TMPFILE file is no longer unlinked: {}",
            link.display()
        );
        ensure!(
            write_fd(LINKED, b"!") == 1,
            "write to the linked file failed"
        );
        let now = std::fs::read(&linked).map_err(|e| e.to_string())?;
        ensure!(
            now == b"linked!",
            "the linked file holds {:?}",
            String::from_utf8_lossy(&now)
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&linked);
    finish(&args, verdict);
}
