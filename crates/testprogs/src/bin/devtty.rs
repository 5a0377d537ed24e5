//! `devtty`: a process holding its controlling terminal by its generic
//! name, /dev/tty (zdtm pty00), checked after restore.
//!
//! Set-up: the parent opens a pty master (fd 3, O_NOCTTY) and forks; the
//! child closes the master, makes a session of its own (setsid), opens the
//! slave without O_NOCTTY (it becomes the controlling terminal), puts it in
//! raw mode without echo, closes it and opens /dev/tty as fd 10. It answers
//! on fd 10: `p` -> `P` when fd 10 is still /dev/tty (device 5:0, its link
//! `/dev/tty`) on its controlling terminal (TIOCGSID on it is the child's
//! own session), else `F` and the reason. The parent asks `p` before
//! READY and after restore, through the master.

use crust_testprogs::{die, ensure, finish, ready, start, term_requested};

const MASTER: i32 = 3;
const TTY: i32 = 10;

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn write_byte(fd: i32, b: u8) -> Result<(), String> {
    // SAFETY: one readable byte.
    let n = unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    ensure!(n == 1, "write on fd {fd}: {}", err());
    Ok(())
}

/// Up to 256 bytes read from `fd` within `ms` milliseconds (empty at EOF
/// or on timeout).
fn read_some(fd: i32, ms: i32) -> Result<Vec<u8>, String> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
        return Ok(Vec::new());
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    ensure!(n >= 0, "read on fd {fd}: {}", err());
    Ok(buf[..n as usize].to_vec())
}

/// Fd 10 is /dev/tty, on this process's controlling terminal.
fn check_tty() -> Result<(), String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{TTY}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    ensure!(link == "/dev/tty", "fd {TTY} is {link:?}, not /dev/tty");
    // SAFETY: a zeroed stat filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    let r = unsafe { libc::fstat(TTY, &mut st) };
    ensure!(r == 0, "fstat: {}", err());
    ensure!(
        st.st_rdev == libc::makedev(5, 0),
        "fd {TTY} is device {}:{}",
        libc::major(st.st_rdev),
        libc::minor(st.st_rdev)
    );
    // SAFETY: these take only integers.
    let (me, tsid) = unsafe { (libc::getpid(), libc::tcgetsid(TTY)) };
    ensure!(tsid == me, "the terminal's session {tsid}, pid {me}");
    Ok(())
}

fn child(slave: &str) -> ! {
    // SAFETY: plain libc calls on this process's own fds.
    unsafe {
        libc::close(MASTER);
        if libc::setsid() < 0 {
            die("setsid");
        }
    }
    let c = std::ffi::CString::new(slave).unwrap_or_else(|_| die("slave path"));
    // SAFETY: a NUL-terminated path; the termios is filled by tcgetattr.
    unsafe {
        let s = libc::open(c.as_ptr(), libc::O_RDWR);
        if s < 0 {
            die("open slave");
        }
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(s, &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(s, libc::TCSANOW, &t);
        libc::close(s);
        let fd = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR);
        if fd < 0 {
            die("open /dev/tty");
        }
        if fd != TTY {
            libc::dup2(fd, TTY);
            libc::close(fd);
        }
    }
    loop {
        let got = read_some(TTY, -1).unwrap_or_else(|_| std::process::exit(2));
        if got.is_empty() {
            std::process::exit(0);
        }
        if got.contains(&b'p') {
            let reply = match check_tty() {
                Ok(()) => b"P".to_vec(),
                Err(e) => format!("F{e}\n").into_bytes(),
            };
            for b in reply {
                if write_byte(TTY, b).is_err() {
                    std::process::exit(3);
                }
            }
        }
    }
}

/// Ask the child `p` through the master: `P` or its reason.
fn ask() -> Result<(), String> {
    write_byte(MASTER, b'p')?;
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(read_some(MASTER, 100)?);
        if got.first() == Some(&b'P') || got.ends_with(b"\n") {
            break;
        }
    }
    ensure!(
        got == b"P",
        "the child answered {:?}",
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

fn main() {
    let args = start();
    // SAFETY: plain libc calls; ptsname's result is copied at once.
    let slave = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if m < 0 || libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            die("posix_openpt");
        }
        if m != MASTER {
            libc::dup2(m, MASTER);
            libc::close(m);
        }
        std::ffi::CStr::from_ptr(libc::ptsname(MASTER))
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: fork in a single-threaded program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    if pid == 0 {
        child(&slave);
    }
    let kill = || {
        // SAFETY: kill and waitpid take integers and a valid pointer; pid
        // is our child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    };
    crust_testprogs::sleep_ms(100);
    if let Err(e) = ask() {
        kill();
        die(&format!("set-up: {e}"));
    }
    ready(&args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let verdict = ask();
    kill();
    finish(&args, verdict)
}
