//! `ghostnodes --dir DIR --mode nodes|chroot|deadproc`: files deleted while open
//! that are not plain files, and where a process works.
//!
//! `nodes`: in DIR, a sparse deleted file (64 MiB, 8 KiB of data: over the
//! default ghost limit by size, under it by blocks), a deleted FIFO with
//! queued bytes and only a reader left (a blocking open of it would wait
//! forever), a deleted directory whose parent is gone too, a deleted
//! character device (/dev/null's numbers), a deleted symlink held by an
//! O_PATH fd, and a deleted working directory that an fd is open on too.
//! After restore each is the same kind of file with the same content.
//!
//! `chroot`: a child chroots into DIR/root, its cwd left outside the new
//! root, with a file of the root open; after restore it still opens the
//! file by its path in the root, and its cwd is the same directory.
//!
//! `deadproc`: the cwd and an fd in /proc/N of a child killed since.

use crust_testprogs::{cpath, ensure, finish, ready, sleep_ms, start, term_requested, Args};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

const SPARSE: i32 = 40;
const FIFO: i32 = 41;
const DIR_FD: i32 = 42;
const DEV: i32 = 43;
const LINK: i32 = 44;
const CWD_FD: i32 = 45;
const SPARSE_AT: u64 = 64 << 20;
const QUEUED: &[u8] = b"bytes queued in a deleted fifo";

fn place(fd: i32, at: i32) {
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    // SAFETY: dup2/close of our own fds.
    unsafe {
        assert_eq!(libc::dup2(fd, at), at);
        libc::close(fd);
    }
}

fn open(p: &Path, flags: i32) -> i32 {
    let c = cpath(p);
    // SAFETY: open with a NUL-terminated path.
    unsafe { libc::open(c.as_ptr(), flags, 0o600) }
}

fn fstat(fd: i32) -> Result<std::fs::Metadata, String> {
    std::fs::metadata(format!("/proc/self/fd/{fd}")).map_err(|e| format!("stat fd {fd}: {e}"))
}

fn set_up_nodes(dir: &Path) {
    let sparse = dir.join("sparse");
    place(open(&sparse, libc::O_RDWR | libc::O_CREAT), SPARSE);
    let f = std::mem::ManuallyDrop::new(unsafe_file(SPARSE));
    f.write_all_at(&[0x5a; 4096], 0).unwrap();
    f.write_all_at(&[0xa5; 4096], SPARSE_AT).unwrap();
    std::fs::remove_file(&sparse).unwrap();

    let fifo = dir.join("fifo");
    let c = cpath(&fifo);
    // SAFETY: mknod with a NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o640, 0) };
    assert_eq!(r, 0);
    let w = open(&fifo, libc::O_RDWR);
    place(open(&fifo, libc::O_RDONLY), FIFO);
    // SAFETY: write a valid buffer to our fd, then close it.
    unsafe {
        assert_eq!(
            libc::write(w, QUEUED.as_ptr().cast(), QUEUED.len()),
            QUEUED.len() as isize
        );
        libc::close(w);
    }
    std::fs::remove_file(&fifo).unwrap();

    let sub = dir.join("gone").join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    place(open(&sub, libc::O_RDONLY | libc::O_DIRECTORY), DIR_FD);
    std::fs::remove_dir(&sub).unwrap();
    std::fs::remove_dir(dir.join("gone")).unwrap();

    let dev = dir.join("null");
    let c = cpath(&dev);
    // SAFETY: mknod with a NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    place(open(&dev, libc::O_RDWR), DEV);
    std::fs::remove_file(&dev).unwrap();

    let link = dir.join("link");
    std::os::unix::fs::symlink("some/target", &link).unwrap();
    place(open(&link, libc::O_PATH | libc::O_NOFOLLOW), LINK);
    std::fs::remove_file(&link).unwrap();

    let cwd = dir.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::env::set_current_dir(&cwd).unwrap();
    place(
        open(Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY),
        CWD_FD,
    );
    std::fs::remove_dir(&cwd).unwrap();
}

fn unsafe_file(fd: i32) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller keeps the File from closing the fd (ManuallyDrop).
    unsafe { std::fs::File::from_raw_fd(fd) }
}

fn check_nodes(dir: &Path) -> Result<(), String> {
    let f = std::mem::ManuallyDrop::new(unsafe_file(SPARSE));
    let md = fstat(SPARSE)?;
    ensure!(
        md.size() == SPARSE_AT + 4096,
        "the sparse file is {} bytes",
        md.size()
    );
    ensure!(md.nlink() == 0, "the sparse file is linked again");
    let mut b = [0u8; 4096];
    for (at, v) in [(0, 0x5a), (SPARSE_AT, 0xa5), (1 << 20, 0)] {
        f.read_exact_at(&mut b, at).map_err(|e| e.to_string())?;
        ensure!(
            b.iter().all(|x| *x == v),
            "the sparse file is wrong at {at}"
        );
    }
    ensure!(
        md.blocks() * 512 < 1 << 20,
        "the sparse file takes {} blocks: its holes were filled",
        md.blocks()
    );

    let md = fstat(FIFO)?;
    ensure!(md.file_type().is_fifo(), "fd {FIFO} is no longer a FIFO");
    ensure!(
        md.mode() & 0o777 == 0o640,
        "the FIFO's mode is {:o}",
        md.mode()
    );
    let mut q = vec![0u8; QUEUED.len()];
    // SAFETY: read into a valid buffer from our fd.
    let n = unsafe { libc::read(FIFO, q.as_mut_ptr().cast(), q.len()) };
    ensure!(
        n == QUEUED.len() as isize && q == QUEUED,
        "the FIFO holds {n} bytes: {q:?}"
    );

    let md = fstat(DIR_FD)?;
    ensure!(
        md.is_dir() && md.nlink() == 0,
        "fd {DIR_FD} is not a deleted directory"
    );

    let md = fstat(DEV)?;
    ensure!(
        md.mode() == libc::S_IFCHR | 0o600 && md.rdev() == libc::makedev(1, 3),
        "the device is mode {:o} rdev {:x}",
        md.mode(),
        md.rdev()
    );
    // SAFETY: write a valid buffer to our fd.
    let n = unsafe { libc::write(DEV, b"x".as_ptr().cast(), 1) };
    ensure!(n == 1, "write to the device");

    let mut t = [0u8; 64];
    // SAFETY: readlinkat with an empty NUL-terminated path into a valid buffer.
    let n = unsafe { libc::readlinkat(LINK, c"".as_ptr(), t.as_mut_ptr().cast(), t.len()) };
    ensure!(
        n > 0 && t.get(..n as usize) == Some(&b"some/target"[..]),
        "the symlink reads {n}: {:?}",
        String::from_utf8_lossy(&t)
    );

    let cwd = std::fs::metadata("/proc/self/cwd").map_err(|e| e.to_string())?;
    let fd = fstat(CWD_FD)?;
    ensure!(
        (cwd.dev(), cwd.ino()) == (fd.dev(), fd.ino()),
        "the cwd and fd {CWD_FD} are no longer the same directory"
    );
    let link = std::fs::read_link("/proc/self/cwd").map_err(|e| e.to_string())?;
    let want = format!("{} (deleted)", dir.join("cwd").display());
    ensure!(
        link.to_string_lossy() == want,
        "the cwd is {}",
        link.display()
    );
    Ok(())
}

/// The chroot mode: the child's side. `go` is read (non-blocking) for the
/// parent's word; the verdict goes back on `back`.
fn chroot_child(dir: &Path, go: i32, back: i32) -> ! {
    let root = dir.join("root");
    let cwd = std::fs::metadata(".").unwrap();
    let c = cpath(&root);
    // SAFETY: chroot with a NUL-terminated path.
    assert_eq!(unsafe { libc::chroot(c.as_ptr()) }, 0);
    let fd = open(Path::new("/inside"), libc::O_RDONLY);
    assert!(fd >= 0);
    // SAFETY: write one byte to our pipe.
    unsafe { libc::write(back, b"R".as_ptr().cast(), 1) };
    loop {
        let mut b = [0u8; 1];
        // SAFETY: read one byte into a valid buffer.
        if unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) } == 1 {
            break;
        }
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        let f = std::mem::ManuallyDrop::new(unsafe_file(fd));
        let mut s = [0u8; 6];
        f.read_exact_at(&mut s, 0).map_err(|e| e.to_string())?;
        ensure!(&s == b"inside", "the open file reads {s:?}");
        let again = std::fs::read("/inside").map_err(|e| format!("/inside: {e}"))?;
        ensure!(again == b"inside", "/inside reads {again:?}");
        let now = std::fs::metadata(".").map_err(|e| e.to_string())?;
        ensure!(
            (now.dev(), now.ino()) == (cwd.dev(), cwd.ino()),
            "the cwd moved"
        );
        Ok(())
    })();
    let byte: &[u8] = if verdict.is_ok() { b"P" } else { b"F" };
    // SAFETY: write one byte to our pipe.
    unsafe { libc::write(back, byte.as_ptr().cast(), 1) };
    if let Err(e) = verdict {
        eprintln!("{e}");
    }
    std::process::exit(0);
}

fn run_chroot(args: &Args, dir: &Path) -> ! {
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(dir.join("root").join("inside"), b"inside").unwrap();
    std::env::set_current_dir(dir).unwrap();
    let (go, back) = (crust_testprogs::make_pipe(), crust_testprogs::make_pipe());
    // SAFETY: make the child's read end non-blocking; fork a child that
    // runs only chroot_child.
    let pid = unsafe {
        libc::fcntl(go[0], libc::F_SETFL, libc::O_NONBLOCK);
        libc::fork()
    };
    if pid == 0 {
        chroot_child(dir, go[0], back[1]);
    }
    let mut b = [0u8; 1];
    // SAFETY: read one byte into a valid buffer.
    assert_eq!(unsafe { libc::read(back[0], b.as_mut_ptr().cast(), 1) }, 1);
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    // SAFETY: write to and read from our pipes, reap the child.
    let verdict = unsafe {
        libc::write(go[1], b"G".as_ptr().cast(), 1);
        let n = libc::read(back[0], b.as_mut_ptr().cast(), 1);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        if n == 1 && b[0] == b'P' {
            Ok(())
        } else {
            Err("the chrooted child failed its checks".to_string())
        }
    };
    let _ = std::fs::remove_dir_all(dir.join("root"));
    finish(args, verdict);
}

/// The deadproc mode: work in /proc/N of a child killed since (an
/// unhashed /proc directory), with an fd open on it too. After restore
/// getcwd still fails with ENOENT and the cwd link still names /proc/N.
fn run_deadproc(args: &Args) -> ! {
    // SAFETY: fork; the child only pauses until it is killed.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    let dir = format!("/proc/{child}");
    std::env::set_current_dir(&dir).unwrap();
    place(
        open(Path::new(&dir), libc::O_RDONLY | libc::O_DIRECTORY),
        DIR_FD,
    );
    // SAFETY: kill and reap our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let before = std::fs::read_link("/proc/self/cwd").unwrap();
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check_deadproc(&dir, &before);
    let _ = std::env::set_current_dir("/");
    finish(args, verdict);
}

fn check_deadproc(dir: &str, before: &Path) -> Result<(), String> {
    let e = std::env::current_dir().err();
    ensure!(
        e.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::ENOENT),
        "getcwd in the dead process's /proc dir gave {e:?}, not ENOENT"
    );
    let after = std::fs::read_link("/proc/self/cwd").map_err(|e| e.to_string())?;
    ensure!(
        after == before,
        "the cwd link reads {after:?}, was {before:?}"
    );
    let fd = std::fs::read_link(format!("/proc/self/fd/{DIR_FD}")).map_err(|e| e.to_string())?;
    ensure!(fd == before, "fd {DIR_FD} reads {fd:?}, was {before:?}");
    ensure!(
        !Path::new(dir).exists(),
        "{dir} exists after the restore (its helper was not reaped)"
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    if args.opt("mode") == Some("chroot") {
        run_chroot(&args, &dir);
    }
    if args.opt("mode") == Some("deadproc") {
        run_deadproc(&args);
    }
    set_up_nodes(&dir);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check_nodes(&dir);
    let _ = std::env::set_current_dir("/");
    finish(&args, verdict);
}
