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
//!
//! `--orphan 1`: the child, once bound, sends its bound socket to the
//! parent (SCM_RIGHTS on a pair made before the fork) and exits; its mount
//! namespace goes with it, so the socket's file is on a mount no namespace
//! of the tree has. The parent holds it and checks only its own pair.

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

/// Send `fd` on `sock` (one byte, SCM_RIGHTS).
fn send_fd(sock: i32, fd: i32) {
    let byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut _,
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data; the control buffer (32 bytes) has
    // room for CMSG_SPACE(4); every pointer outlives the sendmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::copy_nonoverlapping(fd.to_ne_bytes().as_ptr(), libc::CMSG_DATA(c), 4);
        if libc::sendmsg(sock, &msg, 0) != 1 {
            die("sendmsg");
        }
    }
}

/// The fd that came on `sock` (see [`send_fd`]).
fn recv_fd(sock: i32) -> i32 {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: as in send_fd; CMSG_DATA is read only when a control
    // message came.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = 32;
        let n = libc::recvmsg(sock, &mut msg, 0);
        let c = libc::CMSG_FIRSTHDR(&msg);
        if n != 1 || c.is_null() {
            die("recvmsg of the child's socket");
        }
        let mut v = [0u8; 4];
        std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), v.as_mut_ptr(), 4);
        i32::from_ne_bytes(v)
    }
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
    let orphan = args.num("orphan", 0) == 1;
    let mut p = [0i32; 2];
    let mut pass = [0i32; 2];
    // SAFETY: `p` and `pass` have room for two fds.
    unsafe {
        if libc::pipe(p.as_mut_ptr()) != 0 {
            die("pipe");
        }
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pass.as_mut_ptr()) != 0 {
            die("socketpair");
        }
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
        if orphan {
            send_fd(pass[0], sk);
            std::process::exit(0);
        }
        // SAFETY: closing our pipe ends tells the parent we are set up.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
        wait_for_term(50, || {});
        let code = if check(sk, c, &path).is_ok() { 0 } else { 1 };
        std::process::exit(code);
    }
    // SAFETY: closing our write end, then reading to EOF (child set up or
    // gone).
    unsafe {
        libc::close(p[1]);
        let mut b = 0u8;
        libc::read(p[0], (&mut b as *mut u8).cast(), 1);
    }
    if orphan {
        let held = recv_fd(pass[1]);
        let mut st = 0;
        // SAFETY: reaping our own child; `st` is writable.
        if unsafe { libc::waitpid(child, &mut st, 0) } != child || st != 0 {
            die("the child did not pass its socket");
        }
        ready(&args);
        wait_for_term(50, || {});
        let verdict = check(sk, c, &path);
        // SAFETY: closing the child's socket we held.
        unsafe { libc::close(held) };
        let _ = std::fs::remove_file(&path);
        finish(&args, verdict)
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
