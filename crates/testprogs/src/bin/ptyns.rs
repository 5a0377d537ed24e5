//! `ptyns`: ptys of a devpts instance of the tree's own, as zdtm's ns
//! flavor has them. Run as the init of a pid namespace of its own
//! (`unshare -p -f ptyns ...`): it unshares its mount namespace, makes
//! every mount private, detaches every mount of the host's but `/` and
//! `/dev` (the test names `/dev` as an external mount), and mounts a new
//! devpts instance on `/dev/pts` (ptmxmode 0666). Then:
//! - pair A: its master opened on `/dev/ptmx` (the multiplexer next to the
//!   namespace's `/dev/pts`), its slave by path `/dev/pts/N`; three lines
//!   written on the master wait to be read on the slave, and a word written
//!   on the slave waits on the master;
//! - pair B: its master opened on `/dev/pts/ptmx` (the instance's own), its
//!   slave made the controlling terminal of a session the program starts
//!   (setsid, TIOCSCTTY), with an fd on `/dev/tty` too; the slave fd is
//!   then closed (the session holds its terminal through `/dev/tty` only).
//!
//! After SIGTERM it checks that both slaves have the indexes they had, on
//! the devpts mounted at `/dev/pts`, the queued bytes, that B is still the
//! controlling terminal of its session with its group in the foreground,
//! and that bytes flow through `/dev/tty`.
//!
//! `--console PATH`: a tmpfs is mounted on /dev/shm and slave A's file is
//! bound on PATH (an empty file it makes there: PATH is under /dev/shm), as
//! zdtm pty-console binds one on /dev/console; after SIGTERM
//! PATH must still be that slave's file.
//!
//! `--host-pty 1` (a bad case): it also holds a pair of the host's devpts,
//! opened before it left the host's mounts.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) {
    let (s, t, f, d) = (
        cpath(Path::new(src)),
        cpath(Path::new(target)),
        cpath(Path::new(fstype)),
        cpath(Path::new(data)),
    );
    let fs_ptr = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    let data_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr().cast()
    };
    // SAFETY: NUL-terminated strings (or null) that outlive the call.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fs_ptr, flags, data_ptr) } != 0 {
        die(&format!("mount {src} on {target} ({fstype})"));
    }
}

/// Every mount point but `/` and `/dev`, detached deepest first.
fn leave_host_mounts() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/" && m != "/dev")
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let c = cpath(Path::new(&m));
        // SAFETY: a NUL-terminated path; a mount already gone is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn open(path: &str, flags: i32) -> i32 {
    let c = cpath(Path::new(path));
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        die(&format!("open {path}"));
    }
    fd
}

fn ioctl_int(fd: i32, req: libc::Ioctl, v: &mut i32) -> i32 {
    // SAFETY: each request used here reads or writes one int.
    unsafe { libc::ioctl(fd, req, v as *mut i32) }
}

/// A master opened on `ptmx`, unlocked: (master, index).
fn new_master(ptmx: &str) -> (i32, i32) {
    let m = open(ptmx, libc::O_RDWR | libc::O_NOCTTY);
    let mut v = 0;
    if ioctl_int(m, libc::TIOCSPTLCK, &mut v) != 0 {
        die("TIOCSPTLCK");
    }
    let mut n = -1;
    if ioctl_int(m, libc::TIOCGPTN, &mut n) != 0 {
        die("TIOCGPTN");
    }
    (m, n)
}

fn write_all(fd: i32, b: &[u8]) {
    // SAFETY: `b` is a readable buffer of its length.
    if unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) } != b.len() as isize {
        die("write");
    }
}

fn read_some(fd: i32, n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    // SAFETY: `b` is a writable buffer of its length.
    let r = unsafe { libc::read(fd, b.as_mut_ptr().cast(), n) };
    ensure!(r >= 0, "read fd {fd}: {}", std::io::Error::last_os_error());
    b.truncate(r as usize);
    Ok(b)
}

/// The index of the pty slave at `fd`, and whether its file is on the
/// devpts mounted at /dev/pts.
fn slave_index(fd: i32) -> Result<(u32, bool), String> {
    // SAFETY: an all-zero stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat.
    ensure!(unsafe { libc::fstat(fd, &mut st) } == 0, "fstat {fd}");
    let pts = std::fs::metadata("/dev/pts").map_err(|e| format!("stat /dev/pts: {e}"))?;
    let (ma, mi) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    ensure!(
        (136..144).contains(&ma),
        "fd {fd} is not a pty slave ({ma}:{mi})"
    );
    Ok(((ma - 136) * 256 + mi, st.st_dev == pts.dev()))
}

struct Pairs {
    a_master: i32,
    a_slave: i32,
    a_index: i32,
    b_master: i32,
    b_index: i32,
    tty: i32,
}

fn build(host_pty: bool, console: Option<&str>) -> Pairs {
    if host_pty {
        // Held open for the program's life.
        let (_m, n) = new_master("/dev/ptmx");
        let _s = open(&format!("/dev/pts/{n}"), libc::O_RDWR | libc::O_NOCTTY);
    }
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    mount("none", "/", "", (libc::MS_REC | libc::MS_PRIVATE) as _, "");
    leave_host_mounts();
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        0,
        "newinstance,ptmxmode=0666,mode=0620",
    );
    let (a_master, a_index) = new_master("/dev/ptmx");
    let a_slave = open(
        &format!("/dev/pts/{a_index}"),
        libc::O_RDWR | libc::O_NOCTTY,
    );
    // No echo: the master reads only what the slave wrote.
    // SAFETY: an all-zero termios is a valid value; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a writable termios, then a readable one.
    if unsafe { libc::tcgetattr(a_slave, &mut t) } != 0 {
        die("tcgetattr");
    }
    t.c_lflag &= !libc::ECHO;
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(a_slave, libc::TCSANOW, &t) } != 0 {
        die("tcsetattr");
    }
    if let Some(c) = console {
        // On a tmpfs of its own at /dev/shm, so that it comes after
        // /dev/pts in the mount tree.
        mount("crust-shm", "/dev/shm", "tmpfs", 0, "size=64k");
        if std::fs::write(c, "").is_err() {
            die("create the console file");
        }
        mount(&format!("/dev/pts/{a_index}"), c, "", libc::MS_BIND, "");
    }
    for _ in 0..3 {
        write_all(a_master, b"hello\n");
    }
    write_all(a_slave, b"word");
    let (b_master, b_index) = new_master("/dev/pts/ptmx");
    // SAFETY: setsid takes nothing (the init of the namespace is not a
    // group leader: it is in unshare's group).
    if unsafe { libc::setsid() } < 0 {
        die("setsid");
    }
    let b_slave = open(
        &format!("/dev/pts/{b_index}"),
        libc::O_RDWR | libc::O_NOCTTY,
    );
    let mut zero = 0;
    if ioctl_int(b_slave, libc::TIOCSCTTY, &mut zero) != 0 {
        die("TIOCSCTTY");
    }
    let tty = open("/dev/tty", libc::O_RDWR);
    // SAFETY: closing an fd this program opened.
    unsafe { libc::close(b_slave) };
    Pairs {
        a_master,
        a_slave,
        a_index,
        b_master,
        b_index,
        tty,
    }
}

fn check(p: &Pairs, console: Option<&str>) -> Result<(), String> {
    if let Some(c) = console {
        let md = std::fs::metadata(c).map_err(|e| format!("stat {c}: {e}"))?;
        let pts = std::fs::metadata("/dev/pts").map_err(|e| format!("stat /dev/pts: {e}"))?;
        let rdev = md.rdev();
        ensure!(
            (libc::major(rdev), libc::minor(rdev)) == (136, p.a_index as u32)
                && md.dev() == pts.dev(),
            "{c} is not /dev/pts/{} of the devpts at /dev/pts",
            p.a_index
        );
    }
    let (ia, on_pts) = slave_index(p.a_slave)?;
    ensure!(on_pts, "slave A is not a file of the devpts at /dev/pts");
    ensure!(
        ia as i32 == p.a_index,
        "slave A is /dev/pts/{ia}, was {}",
        p.a_index
    );
    let mut n = -1;
    ensure!(
        ioctl_int(p.a_master, libc::TIOCGPTN, &mut n) == 0,
        "TIOCGPTN A"
    );
    ensure!(n == p.a_index, "master A has index {n}, was {}", p.a_index);
    ensure!(
        ioctl_int(p.b_master, libc::TIOCGPTN, &mut n) == 0,
        "TIOCGPTN B"
    );
    ensure!(n == p.b_index, "master B has index {n}, was {}", p.b_index);
    // /dev/tty is 5:0 itself: TIOCGDEV names the terminal behind it.
    let mut dev = 0;
    ensure!(
        ioctl_int(p.tty, libc::TIOCGDEV, &mut dev) == 0,
        "TIOCGDEV on /dev/tty"
    );
    let (ma, mi) = (
        libc::major(dev as u32 as u64),
        libc::minor(dev as u32 as u64),
    );
    ensure!(
        (ma, mi) == (136, p.b_index as u32),
        "/dev/tty is {ma}:{mi}, was 136:{}",
        p.b_index
    );
    for i in 0..3 {
        let l = read_some(p.a_slave, 64)?;
        ensure!(l == b"hello\n", "line {i} on slave A: {l:?}");
    }
    let w = read_some(p.a_master, 64)?;
    ensure!(w == b"word", "master A reads {w:?}");
    // SAFETY: getsid/getpgrp take nothing.
    let (sid, pgrp) = unsafe { (libc::getsid(0), libc::getpgrp()) };
    let mut tsid = -1;
    ensure!(
        ioctl_int(p.tty, libc::TIOCGSID, &mut tsid) == 0,
        "TIOCGSID on /dev/tty: {}",
        std::io::Error::last_os_error()
    );
    ensure!(tsid == sid, "the terminal's session is {tsid}, mine {sid}");
    let mut fg = -1;
    ensure!(ioctl_int(p.tty, libc::TIOCGPGRP, &mut fg) == 0, "TIOCGPGRP");
    ensure!(fg == pgrp, "the foreground group is {fg}, mine {pgrp}");
    write_all(p.b_master, b"ping\n");
    let l = read_some(p.tty, 64)?;
    ensure!(l == b"ping\n", "/dev/tty reads {l:?}");
    Ok(())
}

fn main() {
    let args = start();
    let console = args.opt("console").map(String::from);
    let p = build(args.num("host-pty", 0) == 1, console.as_deref());
    ready(&args);
    wait_for_term(50, || {});
    // SAFETY: SIGHUP is ignored from here (closing the terminal at exit).
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    finish(&args, check(&p, console.as_deref()));
}
