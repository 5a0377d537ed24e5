//! `files2`: files deleted while open, memfds, directories and O_PATH fds.
//!
//! `--mode ghost --dir D [--kb N]` (default 10240): D/ghost.dat, N KiB of a
//! pattern, mode 0640, open O_RDWR at fd 3 (offset 12345), dup'ed at fd 4
//! (same description), opened again O_RDONLY|O_APPEND... at fd 5 (offset
//! 777, close-on-exec), then unlinked. After restore: same links
//! ("D/ghost.dat (deleted)"), no link left, mode, size, content, offsets
//! (fd 4 moves with fd 3, fd 5 on its own), flags; writes still work.
//!
//! `--mode memfd`: fd 3 a memfd named "crust-test-memfd", 1 MiB long with
//! data in its first 3 pages + 100 bytes and at 512 KiB (a hole between),
//! offset 5000; fd 4 a second description opened through
//! /proc/self/fd/3, read-only, offset 10, close-on-exec; seals
//! F_SEAL_SHRINK|F_SEAL_GROW. After restore: name, size, content, offsets,
//! seals (growing fails), and a write through fd 3 seen through fd 4.
//!
//! `--mode dirs --dir D`: D holds `file` ("dir-file-content") and `sub/`;
//! fd 3 D open O_RDONLY|O_DIRECTORY, fd 4 D/file O_PATH, fd 5 D/sub
//! O_PATH|O_DIRECTORY close-on-exec, fd 6 D/file opened O_RDWR through
//! /proc/self/fd/N of an fd closed since, offset 4. After restore: flags
//! (O_PATH kept), paths, lookups through the directory fds, reads.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, term_requested};
use std::path::{Path, PathBuf};

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn check(r: libc::c_int, what: &str) -> i32 {
    if r < 0 {
        die(what);
    }
    r
}

fn dup_to(fd: i32, to: i32) {
    if fd != to {
        // SAFETY: dup2 and close take only integers.
        unsafe {
            check(libc::dup2(fd, to), "dup2");
            libc::close(fd);
        }
    }
}

fn open_at(path: &Path, flags: i32, to: i32) {
    let c = cpath(path);
    // SAFETY: `c` is a NUL-terminated path.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags, 0o640) }, "open");
    dup_to(fd, to);
}

fn link_of(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}

fn pos(fd: i32) -> i64 {
    // SAFETY: lseek takes only integers.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

fn getfl(fd: i32) -> i32 {
    // SAFETY: F_GETFL takes no argument.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn getfd(fd: i32) -> i32 {
    // SAFETY: F_GETFD takes no argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}

fn fstat(fd: i32) -> Result<libc::stat, String> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(format!("fstat fd {fd}: {}", err()));
    }
    Ok(st)
}

fn pwrite(fd: i32, buf: &[u8], off: i64) -> isize {
    // SAFETY: `buf` is readable for its length.
    unsafe { libc::pwrite(fd, buf.as_ptr() as *const libc::c_void, buf.len(), off) }
}

fn pread_all(fd: i32, len: usize, off: i64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    let mut got = 0usize;
    while got < len {
        // SAFETY: the rest of `buf` is writable.
        let n = unsafe {
            libc::pread(
                fd,
                buf[got..].as_mut_ptr() as *mut libc::c_void,
                len - got,
                off + got as i64,
            )
        };
        ensure!(
            n > 0,
            "pread fd {fd} at {}: {n} {}",
            off + got as i64,
            err()
        );
        got += n as usize;
    }
    Ok(buf)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8 ^ seed)
        .collect()
}

// ---------------------------------------------------------------- ghost

fn ghost_setup(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join("ghost.dat");
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, pattern(len, 7)).unwrap_or_else(|_| die("write ghost.dat"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|_| die("chmod"));
    open_at(&path, libc::O_RDWR, 3);
    // SAFETY: integers only.
    unsafe {
        check(libc::dup2(3, 4), "dup2");
        libc::lseek(3, 12345, libc::SEEK_SET);
    }
    open_at(&path, libc::O_RDONLY | libc::O_APPEND | libc::O_CLOEXEC, 5);
    // SAFETY: integers only.
    unsafe { libc::lseek(5, 777, libc::SEEK_SET) };
    std::fs::remove_file(&path).unwrap_or_else(|_| die("unlink ghost.dat"));
    path
}

fn ghost_check(path: &Path, len: usize) -> Result<(), String> {
    let want = format!("{} (deleted)", path.display());
    for fd in [3, 4, 5] {
        ensure!(
            link_of(fd) == want,
            "fd {fd} is {}, expected {want}",
            link_of(fd)
        );
    }
    ensure!(!path.exists(), "{} exists again", path.display());
    let st = fstat(3)?;
    ensure!(st.st_nlink == 0, "nlink {}", st.st_nlink);
    ensure!(st.st_mode == libc::S_IFREG | 0o640, "mode {:o}", st.st_mode);
    ensure!(
        st.st_size == len as i64,
        "size {} expected {len}",
        st.st_size
    );
    let st5 = fstat(5)?;
    ensure!(st5.st_ino == st.st_ino, "fd 5 is on another inode");
    ensure!(
        pos(3) == 12345 && pos(4) == 12345,
        "offsets {} {}",
        pos(3),
        pos(4)
    );
    ensure!(pos(5) == 777, "fd 5 offset {}", pos(5));
    ensure!(
        getfl(3) & libc::O_ACCMODE == libc::O_RDWR,
        "fd 3 flags {:o}",
        getfl(3)
    );
    ensure!(
        getfl(5) & (libc::O_ACCMODE | libc::O_APPEND) == libc::O_APPEND,
        "fd 5 flags {:o}",
        getfl(5)
    );
    ensure!(
        getfd(3) == 0 && getfd(5) == libc::FD_CLOEXEC,
        "fd flags {} {}",
        getfd(3),
        getfd(5)
    );
    ensure!(pread_all(5, len, 0)? == pattern(len, 7), "content differs");
    // SAFETY: integers only.
    unsafe { libc::lseek(4, 100, libc::SEEK_SET) };
    ensure!(pos(3) == 100, "fd 3 does not share its offset with fd 4");
    ensure!(pwrite(3, b"after", 10) == 5, "pwrite: {}", err());
    ensure!(
        pread_all(5, 5, 10)? == b"after",
        "write not seen through fd 5"
    );
    Ok(())
}

// ---------------------------------------------------------------- memfd

const MEMFD_NAME: &str = "crust-test-memfd";
const MEMFD_SIZE: i64 = 1 << 20;
const HEAD: usize = 3 * 4096 + 100;

fn memfd_setup() {
    let name = std::ffi::CString::new(MEMFD_NAME).unwrap();
    // SAFETY: `name` is NUL-terminated.
    let fd = check(
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) },
        "memfd_create",
    );
    dup_to(fd, 3);
    // SAFETY: integers only.
    unsafe { check(libc::ftruncate(3, MEMFD_SIZE), "ftruncate") };
    if pwrite(3, &pattern(HEAD, 1), 0) != HEAD as isize || pwrite(3, b"middle", 512 << 10) != 6 {
        die("pwrite memfd");
    }
    open_at(
        Path::new("/proc/self/fd/3"),
        libc::O_RDONLY | libc::O_CLOEXEC,
        4,
    );
    // SAFETY: integers only.
    unsafe {
        libc::lseek(3, 5000, libc::SEEK_SET);
        libc::lseek(4, 10, libc::SEEK_SET);
        check(
            libc::fcntl(
                3,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            ),
            "F_ADD_SEALS",
        );
    }
}

fn memfd_check() -> Result<(), String> {
    let want = format!("/memfd:{MEMFD_NAME} (deleted)");
    ensure!(link_of(3) == want, "fd 3 is {}", link_of(3));
    ensure!(link_of(4) == want, "fd 4 is {}", link_of(4));
    let (a, b) = (fstat(3)?, fstat(4)?);
    ensure!(a.st_ino == b.st_ino, "fds 3 and 4 are on different inodes");
    ensure!(a.st_size == MEMFD_SIZE, "size {}", a.st_size);
    ensure!(
        pos(3) == 5000 && pos(4) == 10,
        "offsets {} {}",
        pos(3),
        pos(4)
    );
    ensure!(
        getfl(3) & libc::O_ACCMODE == libc::O_RDWR,
        "fd 3 flags {:o}",
        getfl(3)
    );
    ensure!(
        getfl(4) & libc::O_ACCMODE == libc::O_RDONLY,
        "fd 4 flags {:o}",
        getfl(4)
    );
    ensure!(getfd(3) == 0 && getfd(4) == libc::FD_CLOEXEC, "fd flags");
    // SAFETY: F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(3, libc::F_GET_SEALS) };
    ensure!(
        seals == libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        "seals {seals:#x}"
    );
    ensure!(pread_all(4, HEAD, 0)? == pattern(HEAD, 1), "head differs");
    ensure!(pread_all(4, 6, 512 << 10)? == b"middle", "middle differs");
    ensure!(
        pread_all(4, 4096, 256 << 10)?.iter().all(|&b| b == 0),
        "the hole is not zeros"
    );
    ensure!(
        pwrite(3, b"x", MEMFD_SIZE) < 0,
        "growing the sealed memfd worked"
    );
    ensure!(pwrite(3, b"new", 20) == 3, "pwrite: {}", err());
    ensure!(
        pread_all(4, 3, 20)? == b"new",
        "fd 4 does not see fd 3's write"
    );
    Ok(())
}

// ---------------------------------------------------------------- dirs

fn dirs_setup(dir: &Path) {
    let _ = std::fs::create_dir_all(dir.join("sub"));
    std::fs::write(dir.join("file"), "dir-file-content").unwrap_or_else(|_| die("write file"));
    open_at(dir, libc::O_RDONLY | libc::O_DIRECTORY, 3);
    open_at(&dir.join("file"), libc::O_PATH, 4);
    open_at(
        &dir.join("sub"),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        5,
    );
    open_at(&dir.join("file"), libc::O_RDONLY, 9);
    open_at(Path::new("/proc/self/fd/9"), libc::O_RDWR, 6);
    // SAFETY: integers only.
    unsafe {
        libc::close(9);
        libc::lseek(6, 4, libc::SEEK_SET);
    }
}

fn dirs_check(dir: &Path) -> Result<(), String> {
    let d = dir.display().to_string();
    ensure!(link_of(3) == d, "fd 3 is {}", link_of(3));
    ensure!(link_of(4) == format!("{d}/file"), "fd 4 is {}", link_of(4));
    ensure!(link_of(5) == format!("{d}/sub"), "fd 5 is {}", link_of(5));
    ensure!(link_of(6) == format!("{d}/file"), "fd 6 is {}", link_of(6));
    ensure!(
        getfl(3) & libc::O_DIRECTORY != 0,
        "fd 3 flags {:o}",
        getfl(3)
    );
    ensure!(
        getfl(4) & libc::O_PATH != 0,
        "fd 4 flags {:o} lack O_PATH",
        getfl(4)
    );
    ensure!(
        getfl(5) & (libc::O_PATH | libc::O_DIRECTORY) == libc::O_PATH | libc::O_DIRECTORY,
        "fd 5 flags {:o}",
        getfl(5)
    );
    ensure!(getfd(5) == libc::FD_CLOEXEC && getfd(4) == 0, "fd flags");
    ensure!(
        getfl(6) & libc::O_ACCMODE == libc::O_RDWR,
        "fd 6 flags {:o}",
        getfl(6)
    );
    ensure!(pos(6) == 4, "fd 6 offset {}", pos(6));
    // An O_PATH fd cannot be read.
    let mut b = [0u8; 4];
    // SAFETY: `b` is writable.
    let n = unsafe { libc::read(4, b.as_mut_ptr() as *mut libc::c_void, 4) };
    ensure!(n < 0, "read of the O_PATH fd 4 worked");
    let file = std::ffi::CString::new("file").unwrap();
    // SAFETY: `file` is NUL-terminated.
    let f = unsafe { libc::openat(3, file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    ensure!(f >= 0, "openat(fd 3, file): {}", err());
    let got = pread_all(f, 16, 0)?;
    // SAFETY: integer only.
    unsafe { libc::close(f) };
    ensure!(got == b"dir-file-content", "file content {:?}", got);
    let empty = std::ffi::CString::new("").unwrap();
    // SAFETY: an all-zero stat is valid; `empty` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::fstatat(5, empty.as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    ensure!(
        r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        "fstatat fd 5"
    );
    ensure!(pread_all(6, 12, 4)? == b"file-content", "fd 6 content");
    Ok(())
}

/// A file opened as D/linked.dat, which also has the name D/other.dat,
/// then unlinked as linked.dat: deleted here, linked elsewhere.
fn linked_setup(dir: &std::path::Path) -> std::fs::File {
    use std::io::Write;
    let a = dir.join("linked.dat");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&a)
        .unwrap_or_else(|_| die("create linked.dat"));
    f.write_all(b"linked-content")
        .unwrap_or_else(|_| die("write"));
    std::fs::hard_link(&a, dir.join("other.dat")).unwrap_or_else(|_| die("link"));
    std::fs::remove_file(&a).unwrap_or_else(|_| die("unlink"));
    f
}

/// The fd is on the file still named other.dat: a write through one shows
/// through the other.
fn linked_check(dir: &std::path::Path, f: &std::fs::File) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    ensure!(
        link.to_string_lossy().ends_with("linked.dat (deleted)"),
        "the fd is on {}",
        link.display()
    );
    (&*f).write_all(b"+more").map_err(|e| e.to_string())?;
    let other = std::fs::read(dir.join("other.dat")).map_err(|e| e.to_string())?;
    ensure!(
        other == b"linked-content+more",
        "other.dat holds {:?}: not the same file",
        String::from_utf8_lossy(&other)
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "other.dat")
        .collect();
    ensure!(left.is_empty(), "files left in the dir: {left:?}");
    Ok(())
}

fn main() {
    let args = start();
    let mode = args.opt("mode").unwrap_or("ghost").to_string();
    let dir = args
        .opt("dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let len = args.num("kb", 10240) as usize * 1024;
    let ghost = match mode.as_str() {
        "ghost" => Some(ghost_setup(&dir, len)),
        "memfd" => {
            memfd_setup();
            None
        }
        "dirs" => {
            dirs_setup(&dir);
            None
        }
        "linked" => None,
        _ => die("unknown --mode"),
    };
    let linked = (mode == "linked").then(|| linked_setup(&dir));
    ready(&args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let verdict = match mode.as_str() {
        "ghost" => ghost_check(ghost.as_deref().unwrap(), len),
        "memfd" => memfd_check(),
        "linked" => linked_check(&dir, linked.as_ref().unwrap()),
        _ => dirs_check(&dir),
    };
    finish(&args, verdict)
}
