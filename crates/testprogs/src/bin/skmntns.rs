//! `skmntns --dir DIR`: unix sockets bound at one path in two mount
//! namespaces (zdtm sk-unix-mntns). The program unshares CLONE_NEWNS,
//! makes its mounts private, detaches every mount but `/` and `/dev` and
//! mounts a proc (a tree in a namespace of its own), makes `DIR/sub`, then
//! forks a child that unshares CLONE_NEWNS, makes its mounts private and
//! mounts a tmpfs at `DIR/sub` (its own namespace only). Each of the two
//! binds a datagram socket at `DIR/sub/s` and connects a second one to
//! it. After SIGTERM (the parent passes it on to the child) each sends a
//! message through its pair and reads it back from its bound socket, then
//! connects a new socket by the path and does it again; the parent also
//! checks the child passed (exit 0).

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::path::Path;

fn sock() -> i32 {
    // SAFETY: socket takes integers.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0) };
    if s < 0 {
        die("socket");
    }
    s
}

fn addr(p: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let c = cpath(p);
    let b = c.as_bytes();
    if b.len() >= a.sun_path.len() {
        die("socket path too long");
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + b.len();
    (a, len as libc::socklen_t)
}

fn connect(s: i32, p: &Path) -> Result<(), String> {
    let (a, len) = addr(p);
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::connect(s, &a as *const _ as *const libc::sockaddr, len) };
    ensure!(
        r == 0,
        "connect to {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn bind(s: i32, p: &Path) {
    let (a, len) = addr(p);
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    if unsafe { libc::bind(s, &a as *const _ as *const libc::sockaddr, len) } != 0 {
        die("bind");
    }
}

/// A message through `c` comes out of `sk`.
fn round_trip(sk: i32, c: i32, tag: &str) -> Result<(), String> {
    let msg = format!("{} {tag}", std::process::id());
    // SAFETY: a valid buffer of its length.
    let w = unsafe { libc::write(c, msg.as_ptr().cast(), msg.len()) };
    ensure!(
        w == msg.len() as isize,
        "write ({tag}): {}",
        std::io::Error::last_os_error()
    );
    let mut buf = [0u8; 128];
    // SAFETY: a valid writable buffer of its length.
    let r = unsafe { libc::read(sk, buf.as_mut_ptr().cast(), buf.len()) };
    ensure!(
        r >= 0,
        "read ({tag}): {} (the message went elsewhere)",
        std::io::Error::last_os_error()
    );
    let got = buf.get(..r as usize).unwrap_or(&[]);
    ensure!(
        got == msg.as_bytes(),
        "read ({tag}) {:?}, sent {msg:?}",
        String::from_utf8_lossy(got)
    );
    Ok(())
}

fn check(sk: i32, c: i32, path: &Path) -> Result<(), String> {
    round_trip(sk, c, "kept")?;
    let c2 = sock();
    connect(c2, path)?;
    round_trip(sk, c2, "new")
}

fn mount_tmpfs(dir: &Path) {
    let none = cpath(Path::new("none"));
    let root = cpath(Path::new("/"));
    let d = cpath(dir);
    let t = cpath(Path::new("tmpfs"));
    // SAFETY: unshare takes flags; the strings are NUL-terminated and
    // outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            die("unshare(CLONE_NEWNS)");
        }
        let flags = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
        if libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            die("make / private");
        }
        if libc::mount(t.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) != 0 {
            die("mount tmpfs");
        }
    }
}

/// Detach every mount but `/` and `/dev`, deepest first, in a mount
/// namespace of our own, and mount a proc.
fn own_namespace() {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    let (none, root) = (cpath(Path::new("none")), cpath(Path::new("/")));
    let flags = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe {
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    } != 0
    {
        die("make / private");
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/" && m != "/dev")
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let c = cpath(Path::new(&m));
        // SAFETY: a NUL-terminated path; failure (already gone) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let (p, t) = (cpath(Path::new("proc")), cpath(Path::new("/proc")));
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(p.as_ptr(), t.as_ptr(), p.as_ptr(), 0, std::ptr::null()) } != 0 {
        die("mount proc");
    }
}

fn main() {
    let args = start();
    own_namespace();
    let dir = args.path("dir").join("sub");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        die(&format!("mkdir {}: {e}", dir.display()));
    }
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let mut p = [0i32; 2];
    // SAFETY: `p` has room for two fds.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    // SAFETY: single-threaded here.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        crust_testprogs::install_term_handler();
        mount_tmpfs(&dir);
    }
    let sk = sock();
    bind(sk, &path);
    let c = sock();
    if let Err(e) = connect(c, &path) {
        die(&e);
    }
    if child == 0 {
        // SAFETY: closing our pipe ends tells the parent we are set up.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
        wait_for_term(50, || {});
        let code = if check(sk, c, &path).is_ok() { 0 } else { 1 };
        std::process::exit(code);
    }
    // SAFETY: closing our write end, then reading to EOF (child set up).
    unsafe {
        libc::close(p[1]);
        let mut b = 0u8;
        libc::read(p[0], (&mut b as *mut u8).cast(), 1);
    }
    ready(&args);
    wait_for_term(50, || {});
    let verdict = check(sk, c, &path).and_then(|()| {
        let mut st = 0;
        // SAFETY: signalling and reaping our own child; `st` is writable.
        unsafe {
            libc::kill(child, libc::SIGTERM);
            ensure!(libc::waitpid(child, &mut st, 0) == child, "waitpid");
        }
        ensure!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "the child's sockets failed (status {st:#x})"
        );
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    finish(&args, verdict)
}
