//! `ptypair`: a pseudo-terminal pair held by the program, checked after
//! restore.
//!
//! Set-up: a master (fd 3, /dev/ptmx, O_NOCTTY) and its slave opened twice
//! (fd 4, and fd 6 with O_NONBLOCK: two descriptions) with fd 5 a dup of
//! fd 4. The slave is put in raw mode with changed c_cc (VMIN 1, VTIME 0,
//! VINTR ^G, VEOF ^E) and 9600 baud; the window is 33x111 (7x9 pixels); the
//! master is in packet mode (TIOCPKT) and the slave locked again
//! (TIOCSPTLCK 1); the slave's device file is given to 13333:44444. No
//! controlling terminal: every open uses O_NOCTTY.
//!
//! `--mode`:
//! - `pair` (default): one process holds every fd. The check: fd 3 is
//!   /dev/ptmx and fd 4 its slave (the index may differ), fds 4 and 5 one
//!   description, fd 6 another one with O_NONBLOCK; termios, window size,
//!   packet mode and lock as set; bytes written to the slave are read on
//!   the master (after packet mode's status byte) and the other way round.
//! - `child`: the parent keeps only the master (fd 3), its child only the
//!   slave (fds 4, 5, 6). The child answers on the slave: `x` -> `X`, and
//!   `p` -> `P` when its own check (termios, window size, sharing) passes,
//!   else `F` and the reason. The parent's check: packet mode, lock and
//!   window size on the master, then `p` must get `P`. The child has no
//!   controlling terminal.
//! - `session`: as `child`, but the child made a session of its own
//!   (setsid) with the slave as its controlling terminal (TIOCSCTTY); it
//!   also checks that /dev/tty is the slave and that it is the session and
//!   the foreground group of it.
//! - `hung`: the master closed, the slave (fd 4) hung up. The check: fd 4
//!   is still a removed pty slave whose ioctls answer EIO.
//! - `session-nofd`: as `session`, but the child then closes its fds on
//!   the slave (it keeps it only as its controlling terminal) and waits
//!   for SIGUSR1, which the parent sends after restore (and after
//!   unlocking the pty); the child then
//!   opens /dev/tty and answers `p` with `P` when it is the session and
//!   the foreground group of that terminal. The parent's check: the master
//!   as set, then `p` must get `P`.

use crust_testprogs::{die, ensure, finish, ready, start, term_requested};

const MASTER: i32 = 3;
const SLAVE: i32 = 4;
const SLAVE_DUP: i32 = 5;
const SLAVE2: i32 = 6;
/// c_cc entries the kernel keeps.
const KNCCS: usize = 19;

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn write_all(fd: i32, data: &[u8]) -> Result<(), String> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe the rest of `data`.
        let n = unsafe {
            libc::write(
                fd,
                data[off..].as_ptr() as *const libc::c_void,
                data.len() - off,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("write fd {fd}: {e}"));
        }
        off += n as usize;
    }
    Ok(())
}

/// Read from `fd` until `want` bytes came or `ms` passed without data.
fn read_some(fd: i32, want: usize, ms: i32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < want {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("poll fd {fd}: {}", err()));
        }
        if r == 0 {
            break;
        }
        let mut buf = [0u8; 256];
        // SAFETY: buf is a writable buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("read fd {fd}: {}", err()));
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    Ok(out)
}

/// Read from the master in packet mode: every read starts with a status
/// byte (0 for data), which is dropped.
fn read_master(want: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < want {
        let got = read_some(MASTER, 1, 2000)?;
        ensure!(
            !got.is_empty(),
            "master: nothing to read (got {:?} so far)",
            out
        );
        ensure!(
            got[0] == 0,
            "master: packet status byte {:#x}, expected data",
            got[0]
        );
        out.extend_from_slice(&got[1..]);
    }
    Ok(out)
}

fn ioctl_int(fd: i32, req: libc::Ioctl) -> Result<i32, String> {
    let mut v: libc::c_int = 0;
    // SAFETY: the TIOCG* requests used write one int.
    if unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_int) } != 0 {
        return Err(format!("ioctl {req:#x} on fd {fd}: {}", err()));
    }
    Ok(v)
}

fn set_int(fd: i32, req: libc::Ioctl, v: i32) {
    // SAFETY: TIOCSPTLCK and TIOCPKT read one int.
    if unsafe { libc::ioctl(fd, req, &v as *const libc::c_int) } != 0 {
        die(&format!("ioctl {req:#x} on fd {fd}"));
    }
}

fn get_termios(fd: i32) -> Result<libc::termios, String> {
    // SAFETY: termios is plain integers.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: t is a writable termios.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(format!("tcgetattr fd {fd}: {}", err()));
    }
    Ok(t)
}

fn get_winsize(fd: i32) -> Result<libc::winsize, String> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w as *mut libc::winsize) } != 0 {
        return Err(format!("TIOCGWINSZ fd {fd}: {}", err()));
    }
    Ok(w)
}

fn same_termios(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_line == b.c_line
        && a.c_cc[..KNCCS] == b.c_cc[..KNCCS]
        && a.c_ispeed == b.c_ispeed
        && a.c_ospeed == b.c_ospeed
}

fn show(t: &libc::termios) -> String {
    format!(
        "iflag {:#o} oflag {:#o} cflag {:#o} lflag {:#o} cc {:?} speeds {}/{}",
        t.c_iflag,
        t.c_oflag,
        t.c_cflag,
        t.c_lflag,
        &t.c_cc[..KNCCS],
        t.c_ispeed,
        t.c_ospeed
    )
}

const WS: libc::winsize = libc::winsize {
    ws_row: 33,
    ws_col: 111,
    ws_xpixel: 7,
    ws_ypixel: 9,
};

fn same_ws(a: &libc::winsize, b: &libc::winsize) -> bool {
    (a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel) == (b.ws_row, b.ws_col, b.ws_xpixel, b.ws_ypixel)
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}

fn kcmp_same(a: i32, b: i32) -> Result<bool, String> {
    // SAFETY: kcmp takes only integers.
    let pid = unsafe { libc::getpid() };
    // SAFETY: kcmp takes only integers (KCMP_FILE = 0).
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, a, b) };
    ensure!(r >= 0, "kcmp fds {a} {b}: {}", err());
    Ok(r == 0)
}

fn open_at(path: &std::ffi::CStr, flags: i32, at: i32) {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_NOCTTY) };
    if fd < 0 {
        die(&format!("open {path:?}"));
    }
    if fd != at {
        // SAFETY: dup2 takes only integers; fd is ours.
        if unsafe { libc::dup2(fd, at) } != at {
            die("dup2");
        }
        // SAFETY: fd is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
}

/// Open the pair and set it up; returns the slave's termios.
fn set_up() -> libc::termios {
    open_at(c"/dev/ptmx", libc::O_RDWR, MASTER);
    set_int(MASTER, libc::TIOCSPTLCK, 0);
    let n = ioctl_int(MASTER, libc::TIOCGPTN).unwrap_or_else(|e| die(&e));
    let path = std::ffi::CString::new(format!("/dev/pts/{n}")).unwrap();
    open_at(&path, libc::O_RDWR, SLAVE);
    open_at(&path, libc::O_RDWR | libc::O_NONBLOCK, SLAVE2);
    // SAFETY: dup2 takes only integers.
    if unsafe { libc::dup2(SLAVE, SLAVE_DUP) } != SLAVE_DUP {
        die("dup2 of the slave");
    }
    let mut t = get_termios(SLAVE).unwrap_or_else(|e| die(&e));
    // SAFETY: t is a valid termios.
    unsafe {
        libc::cfmakeraw(&mut t);
        libc::cfsetspeed(&mut t, libc::B9600);
    }
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t.c_cc[libc::VINTR] = 0x07;
    t.c_cc[libc::VEOF] = 0x05;
    // SAFETY: t is a valid termios.
    if unsafe { libc::tcsetattr(SLAVE, libc::TCSANOW, &t) } != 0 {
        die("tcsetattr");
    }
    // SAFETY: TIOCSWINSZ reads one winsize.
    if unsafe { libc::ioctl(MASTER, libc::TIOCSWINSZ, &WS as *const libc::winsize) } != 0 {
        die("TIOCSWINSZ");
    }
    set_int(MASTER, libc::TIOCPKT, 1);
    set_int(MASTER, libc::TIOCSPTLCK, 1);
    // SAFETY: fchown takes only integers.
    if unsafe { libc::fchown(SLAVE, SLAVE_OWNER.0, SLAVE_OWNER.1) } != 0 {
        die("fchown of the slave");
    }
    get_termios(SLAVE).unwrap_or_else(|e| die(&e))
}

/// The owner given to the slave's device file (zdtm pty01).
const SLAVE_OWNER: (u32, u32) = (13333, 44444);

/// What the holder of the slave checks.
fn check_slave(want: &libc::termios) -> Result<(), String> {
    let s = link(SLAVE);
    {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(format!("/proc/self/fd/{SLAVE}"))
            .map_err(|e| format!("stat of fd {SLAVE}: {e}"))?;
        ensure!(
            (md.uid(), md.gid()) == SLAVE_OWNER,
            "the slave is owned by {}:{}, not {}:{}",
            md.uid(),
            md.gid(),
            SLAVE_OWNER.0,
            SLAVE_OWNER.1
        );
    }
    ensure!(
        s.starts_with("/dev/pts/"),
        "fd {SLAVE} is {s}, not a pty slave"
    );
    ensure!(
        kcmp_same(SLAVE, SLAVE_DUP)?,
        "fds 4 and 5 are two descriptions"
    );
    ensure!(
        !kcmp_same(SLAVE, SLAVE2)?,
        "fds 4 and 6 are one description"
    );
    ensure!(link(SLAVE2) == s, "fd 6 is {}, fd 4 {s}", link(SLAVE2));
    // SAFETY: F_GETFL takes no argument.
    let (f4, f6) = unsafe {
        (
            libc::fcntl(SLAVE, libc::F_GETFL),
            libc::fcntl(SLAVE2, libc::F_GETFL),
        )
    };
    ensure!(
        f4 & libc::O_NONBLOCK == 0 && f6 & libc::O_NONBLOCK != 0,
        "status flags: fd 4 {f4:#o}, fd 6 {f6:#o}"
    );
    ensure!(
        f4 & libc::O_ACCMODE == libc::O_RDWR,
        "fd 4 is not O_RDWR ({f4:#o})"
    );
    let t = get_termios(SLAVE)?;
    ensure!(
        same_termios(&t, want),
        "slave termios: {} (want {})",
        show(&t),
        show(want)
    );
    let w = get_winsize(SLAVE)?;
    ensure!(
        same_ws(&w, &WS),
        "slave window {}x{} ({}x{} px)",
        w.ws_row,
        w.ws_col,
        w.ws_xpixel,
        w.ws_ypixel
    );
    Ok(())
}

/// What the holder of the master checks (before any exchange).
fn check_master() -> Result<(), String> {
    let m = link(MASTER);
    ensure!(m == "/dev/ptmx", "fd {MASTER} is {m}, not /dev/ptmx");
    ensure!(
        ioctl_int(MASTER, libc::TIOCGPKT)? == 1,
        "the master is not in packet mode"
    );
    ensure!(
        ioctl_int(MASTER, libc::TIOCGPTLCK)? == 1,
        "the slave is not locked"
    );
    let w = get_winsize(MASTER)?;
    ensure!(
        same_ws(&w, &WS),
        "master window {}x{} ({}x{} px)",
        w.ws_row,
        w.ws_col,
        w.ws_xpixel,
        w.ws_ypixel
    );
    // SAFETY: F_GETFL takes no argument.
    let f = unsafe { libc::fcntl(MASTER, libc::F_GETFL) };
    ensure!(
        f & libc::O_ACCMODE == libc::O_RDWR,
        "master is not O_RDWR ({f:#o})"
    );
    Ok(())
}

fn exchange(tag: &str) -> Result<(), String> {
    let up = format!("{tag}: slave to master\n");
    write_all(SLAVE, up.as_bytes())?;
    let got = read_master(up.len())?;
    ensure!(
        got == up.as_bytes(),
        "master read {:?}, want {up:?}",
        String::from_utf8_lossy(&got)
    );
    let down = format!("{tag}: master to slave\n");
    write_all(MASTER, down.as_bytes())?;
    let got = read_some(SLAVE, down.len(), 2000)?;
    ensure!(
        got == down.as_bytes(),
        "slave read {:?}, want {down:?}",
        String::from_utf8_lossy(&got)
    );
    // Echo is off: nothing comes back on the master.
    let more = read_some(MASTER, 1, 100)?;
    ensure!(more.is_empty(), "master has {more:?} more");
    Ok(())
}

fn pair(args: &crust_testprogs::Args) -> ! {
    let want = set_up();
    if let Err(e) = check_slave(&want)
        .and_then(|_| check_master())
        .and_then(|_| exchange("before"))
    {
        die(&format!("set-up: {e}"));
    }
    let index = link(SLAVE);
    ready(args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let verdict = (|| {
        check_master()?;
        check_slave(&want)?;
        let n = ioctl_int(MASTER, libc::TIOCGPTN)?;
        ensure!(
            link(SLAVE) == format!("/dev/pts/{n}"),
            "fd 4 is {}, the master's slave is /dev/pts/{n}",
            link(SLAVE)
        );
        exchange("after")?;
        eprintln!("ptypair: the slave was {index}, is {}", link(SLAVE));
        Ok(())
    })();
    finish(args, verdict)
}

fn rdev_of(fd: i32) -> Result<u64, String> {
    // SAFETY: stat is plain integers.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a writable stat.
    let r = unsafe { libc::fstat(fd, &mut st) };
    ensure!(r == 0, "fstat fd {fd}: {}", err());
    Ok(st.st_rdev)
}

/// tty_nr of /proc/self/stat (the controlling terminal, 0 for none).
fn own_tty_nr() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "cannot parse /proc/self/stat".to_string())
}

/// The child's controlling terminal: the slave (`session`) or none. (The
/// slave is locked, so /dev/tty cannot be opened: TIOCGSID, which works
/// only on the caller's controlling terminal, and tty_nr tell.)
fn check_ctty(session: bool) -> Result<(), String> {
    // SAFETY: these take only integers.
    let (me, sid, tsid, pg, fg) = unsafe {
        (
            libc::getpid(),
            libc::getsid(0),
            libc::tcgetsid(SLAVE),
            libc::getpgrp(),
            libc::tcgetpgrp(SLAVE),
        )
    };
    let nr = own_tty_nr()?;
    if !session {
        ensure!(
            tsid < 0 && nr == 0,
            "the child has a controlling terminal (tty_nr {nr:#x}, TIOCGSID {tsid})"
        );
        return Ok(());
    }
    let rdev = rdev_of(SLAVE)?;
    let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
    let want = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    ensure!(
        nr == want,
        "controlling terminal tty_nr {nr:#x}, the slave is {major}:{minor}"
    );
    ensure!(
        sid == me && tsid == me,
        "session {sid}, the slave's session {tsid}, pid {me}"
    );
    ensure!(fg == pg, "foreground group {fg}, own group {pg}");
    Ok(())
}

fn child_loop(want: &libc::termios, session: bool) -> ! {
    loop {
        let got = match read_some(SLAVE, 1, -1) {
            Ok(g) => g,
            Err(_) => std::process::exit(2),
        };
        for &b in &got {
            let reply = match b {
                b'x' => b"X".to_vec(),
                b'p' => match check_slave(want).and_then(|_| check_ctty(session)) {
                    Ok(()) => b"P".to_vec(),
                    Err(e) => format!("F{e}\n").into_bytes(),
                },
                _ => continue,
            };
            if write_all(SLAVE, &reply).is_err() {
                std::process::exit(3);
            }
        }
        if got.is_empty() {
            std::process::exit(0);
        }
    }
}

/// SIGUSR1, blocked in the whole program (so that it waits for
/// sigtimedwait).
fn usr1_set() -> libc::sigset_t {
    // SAFETY: a local sigset_t, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// Wait for SIGUSR1, then open the controlling terminal as fd 4.
fn nofd_wait() {
    let set = usr1_set();
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: set and ts are valid; the info pointer may be null.
    while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) } != libc::SIGUSR1 {}
    // SAFETY: a NUL-terminated path; dup2 and close take integers.
    unsafe {
        let fd = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR);
        if fd < 0 {
            std::process::exit(4);
        }
        if fd != SLAVE {
            libc::dup2(fd, SLAVE);
            libc::close(fd);
        }
    }
}

/// The terminal at fd 4 (opened as /dev/tty) is a pty slave, this
/// process's controlling terminal, of its session, its group in the
/// foreground.
fn check_ctty_reopened() -> Result<(), String> {
    // SAFETY: these take only integers.
    let (me, tsid, pg, fg) = unsafe {
        (
            libc::getpid(),
            libc::tcgetsid(SLAVE),
            libc::getpgrp(),
            libc::tcgetpgrp(SLAVE),
        )
    };
    let nr = own_tty_nr()?;
    let major = (nr >> 8) & 0xfff;
    ensure!(
        (136..=143).contains(&major),
        "controlling terminal tty_nr {nr:#x} is not a pty slave"
    );
    ensure!(tsid == me, "the terminal's session {tsid}, pid {me}");
    ensure!(fg == pg, "foreground group {fg}, own group {pg}");
    Ok(())
}

/// Answer `p` on the controlling terminal: `P` when it is the session's
/// and the process group's.
fn child_loop_ctty() -> ! {
    loop {
        let Ok(got) = read_some(SLAVE, 1, -1) else {
            std::process::exit(2)
        };
        if got.is_empty() {
            std::process::exit(0);
        }
        if got.contains(&b'p') {
            let reply = match check_ctty_reopened() {
                Ok(()) => b"P".to_vec(),
                Err(e) => format!("F{e}\n").into_bytes(),
            };
            if write_all(SLAVE, &reply).is_err() {
                std::process::exit(3);
            }
        }
    }
}

fn child(args: &crust_testprogs::Args, session: bool, keep_fds: bool) -> ! {
    let want = set_up();
    // SAFETY: blocking a signal with a valid set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &usr1_set(), std::ptr::null_mut()) };
    // SAFETY: fork in a single-threaded program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    if pid == 0 {
        // SAFETY: closing our copy of the master.
        unsafe { libc::close(MASTER) };
        if session {
            // SAFETY: setsid and TIOCSCTTY take only integers.
            unsafe {
                if libc::setsid() < 0 {
                    die("setsid");
                }
                if libc::ioctl(SLAVE, libc::TIOCSCTTY, 0) != 0 {
                    die("TIOCSCTTY");
                }
            }
        }
        if let Err(e) = check_ctty(session) {
            die(&format!("child set-up: {e}"));
        }
        if !keep_fds {
            // SAFETY: closing our own fds on the slave.
            unsafe {
                libc::close(SLAVE);
                libc::close(SLAVE_DUP);
                libc::close(SLAVE2);
            }
            nofd_wait();
            child_loop_ctty();
        }
        child_loop(&want, session);
    }
    // SAFETY: closing the parent's copies of the slave.
    unsafe {
        libc::close(SLAVE);
        libc::close(SLAVE_DUP);
        libc::close(SLAVE2);
    }
    let ask = |q: &[u8], want: &[u8]| -> Result<(), String> {
        write_all(MASTER, q)?;
        let got = read_master(want.len())?;
        ensure!(
            got == want,
            "asked {:?}, the child answered {:?}",
            String::from_utf8_lossy(q),
            String::from_utf8_lossy(&got)
        );
        Ok(())
    };
    let ask_x = || if keep_fds { ask(b"x", b"X") } else { Ok(()) };
    if let Err(e) = check_master().and_then(|_| ask_x()) {
        // SAFETY: kill takes only integers; pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        die(&format!("set-up: {e}"));
    }
    ready(args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let verdict = check_master().and_then(|_| ask_x()).and_then(|_| {
        if !keep_fds {
            // The child's /dev/tty does not open on a locked pty.
            set_int(MASTER, libc::TIOCSPTLCK, 0);
            // SAFETY: kill takes only integers; pid is our child.
            let sent = unsafe { libc::kill(pid, libc::SIGUSR1) };
            ensure!(sent == 0, "the child is gone");
            // Until the child opens /dev/tty, the master reads EIO.
            crust_testprogs::sleep_ms(300);
        }
        write_all(MASTER, b"p")?;
        let got = read_master(1)?;
        if got != b"P" {
            let more = read_master(1).unwrap_or_default();
            let mut all = got;
            all.extend(more);
            let more = read_some(MASTER, 4096, 300).unwrap_or_default();
            all.extend(more.iter().filter(|&&c| c != 0));
            return Err(format!(
                "the child's check: {}",
                String::from_utf8_lossy(&all)
            ));
        }
        Ok(())
    });
    // SAFETY: kill and waitpid take only integers and a valid pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    finish(args, verdict)
}

/// A slave whose master was closed (zdtm pty04): still hung up after
/// restore, its link "(deleted)", its ioctls EIO.
fn hung(args: &crust_testprogs::Args) -> ! {
    open_at(c"/dev/ptmx", libc::O_RDWR, MASTER);
    set_int(MASTER, libc::TIOCSPTLCK, 0);
    let n = ioctl_int(MASTER, libc::TIOCGPTN).unwrap_or_else(|e| die(&e));
    let path = std::ffi::CString::new(format!("/dev/pts/{n}")).unwrap();
    open_at(&path, libc::O_RDWR, SLAVE);
    // SAFETY: closing our master; signal takes integers.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::close(MASTER);
    }
    ready(args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let l = link(SLAVE);
    let verdict = (|| {
        ensure!(
            l.starts_with("/dev/pts/") && l.ends_with(" (deleted)"),
            "fd {SLAVE} is {l}, not a removed pty slave"
        );
        let e = ioctl_int(SLAVE, libc::TIOCGEXCL).err().unwrap_or_default();
        ensure!(
            e.contains("os error 5"),
            "TIOCGEXCL on the slave: {e:?}, not EIO"
        );
        Ok(())
    })();
    finish(args, verdict)
}

fn main() {
    let args = start();
    match args.opt("mode").unwrap_or("pair") {
        "pair" => pair(&args),
        "child" => child(&args, false, true),
        "session" => child(&args, true, true),
        "session-nofd" => child(&args, true, false),
        "hung" => hung(&args),
        "data" => data(&args),
        m => die(&format!("unknown --mode {m}")),
    }
}

/// `data`: bytes waiting in both directions at dump time. The slave is in
/// canonical mode without echo; it wrote `out-1\nout-2` (the master reads
/// it with ONLCR's `\r\n`), and the master wrote `in-1\nin-` (a line and a
/// partial one the slave has not read). After restore the master reads
/// exactly what was waiting, and the slave reads the line, then (once the
/// master ends it) the rest of the partial line.
fn data(args: &crust_testprogs::Args) {
    // SAFETY: plain libc calls on fds this program owns; buffers are
    // valid for their lengths.
    let (m, sl) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if m < 0 || libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            die("posix_openpt");
        }
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned();
        let sl = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if sl < 0 {
            die("open slave");
        }
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(sl, &mut t);
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        t.c_lflag |= libc::ICANON;
        t.c_oflag |= libc::OPOST | libc::ONLCR;
        libc::tcsetattr(sl, libc::TCSANOW, &t);
        (m, sl)
    };
    let write = |fd: i32, b: &[u8]| {
        // SAFETY: b is readable for its length.
        if unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) }
            != b.len() as isize
        {
            die("write");
        }
    };
    write(sl, b"out-1\nout-2");
    write(m, b"in-1\nin-");
    std::thread::sleep(std::time::Duration::from_millis(50));
    ready(args);
    while !term_requested() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let read_now = |fd: i32| -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..20 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
                break;
            }
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        out
    };
    let verdict = (|| {
        let got = read_now(m);
        ensure!(
            got == b"out-1\r\nout-2",
            "the master read {:?}",
            String::from_utf8_lossy(&got)
        );
        let line = read_now(sl);
        ensure!(
            line == b"in-1\n",
            "the slave read {:?} first",
            String::from_utf8_lossy(&line)
        );
        write(m, b"2\n");
        let rest = read_now(sl);
        ensure!(
            rest == b"in-2\n",
            "the slave read {:?} then",
            String::from_utf8_lossy(&rest)
        );
        Ok(())
    })();
    finish(args, verdict)
}
