//! `fdkinds --mode M [--dir D]`: kinds of fd state CRIU's zdtm checks (fd01,
//! proc-self, child_opened_proc, inotify00/02, timerfd, transition/epoll,
//! epoll, file_lease02, fanotify00), one per mode; each checks after
//! restore (on SIGTERM) that the state is still there.
//!
//! - `siblings`: two children made with clone(CLONE_FILES) share the
//!   parent's fd table (not its fs): an fd the parent opens is theirs.
//! - `nsfd`: fds on /proc/self/ns/net and .../uts still name the process's
//!   own namespaces.
//! - `procfd`: fds on /proc/CHILD/stat and the process's own
//!   /proc/PID/status read those processes.
//! - `inotify`: 13 watches (numbers 10 and up print in hex in fdinfo), the
//!   last on a file deleted while open: after restore the numbers are the
//!   same and a write to the deleted file comes out as IN_MODIFY on it.
//! - `timer`: a periodic timerfd that expired unread keeps its interval and
//!   goes on ticking.
//! - `epoll`: one target registered through an fd since closed, another
//!   that a child (forked after epoll_create, holding the epoll) closed:
//!   both report with their data.
//! - `lease`: a read lease being broken (its break signal already had):
//!   still breaking towards F_UNLCK, and no second signal (needs
//!   --file-locks).
//! - `fanotify`: a group made without FAN_CLOEXEC shows the same init flags.

use crust_testprogs::{cpath, ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU32, Ordering};

const PROBE_FD: i32 = 77;

fn last_err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn read_text(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A child that waits for SIGUSR1, then exits 0 if `PROBE_FD` is open.
fn probe_child(flags: libc::c_ulong) -> i32 {
    // SAFETY: a raw clone without CLONE_VM is a fork; the child only calls
    // async-signal-safe functions before _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    } as i32;
    if pid == 0 {
        // SAFETY: plain data set up by sigemptyset; sigwait; _exit.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            libc::_exit(if libc::fcntl(PROBE_FD, libc::F_GETFD) >= 0 {
                0
            } else {
                1
            });
        }
    }
    if pid < 0 {
        crust_testprogs::die("clone");
    }
    pid
}

fn reap(pid: i32) -> Result<i32, String> {
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    let got = unsafe { libc::waitpid(pid, &mut st, 0) };
    ensure!(got == pid, "waitpid {pid}: {}", last_err());
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

fn siblings() -> impl FnOnce() -> Result<(), String> {
    let kids = [
        probe_child(libc::CLONE_FILES as libc::c_ulong),
        probe_child(libc::CLONE_FILES as libc::c_ulong),
    ];
    move || {
        // SAFETY: plain fd syscalls.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            ensure!(
                fd >= 0 && libc::dup2(fd, PROBE_FD) == PROBE_FD,
                "open/dup2: {}",
                last_err()
            );
            for k in kids {
                libc::kill(k, libc::SIGUSR1);
            }
        }
        for k in kids {
            ensure!(
                reap(k)? == 0,
                "child {k} does not see the fd the parent opened: no shared table"
            );
        }
        Ok(())
    }
}

fn open_ro(path: &str) -> i32 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(cpath(std::path::Path::new(path)).as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        crust_testprogs::die(&format!("open {path}"));
    }
    fd
}

fn nsfd() -> impl FnOnce() -> Result<(), String> {
    let fds = [
        ("net", open_ro("/proc/self/ns/net")),
        ("uts", open_ro("/proc/self/ns/uts")),
    ];
    move || {
        for (k, fd) in fds {
            let now =
                std::fs::read_link(format!("/proc/self/ns/{k}")).map_err(|e| e.to_string())?;
            ensure!(
                link(fd) == now.to_string_lossy(),
                "fd {fd} is {}, /proc/self/ns/{k} is {}",
                link(fd),
                now.display()
            );
        }
        Ok(())
    }
}

fn pread_text(fd: i32) -> Result<String, String> {
    let mut b = vec![0u8; 4096];
    // SAFETY: b is a writable buffer of its length.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), b.len(), 0) };
    ensure!(n >= 0, "pread fd {fd}: {}", last_err());
    b.truncate(n as usize);
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn procfd() -> impl FnOnce() -> Result<(), String> {
    let child = probe_child(0);
    let stat = open_ro(&format!("/proc/{child}/stat"));
    let me = std::process::id();
    let status = open_ro(&format!("/proc/{me}/status"));
    move || {
        let s = pread_text(stat)?;
        ensure!(
            s.starts_with(&format!("{child} (")),
            "/proc/{child}/stat fd reads {s:?}"
        );
        let s = pread_text(status)?;
        ensure!(
            s.contains(&format!("\nPid:\t{me}\n")),
            "own status fd does not read pid {me}"
        );
        // SAFETY: kill takes integers.
        unsafe { libc::kill(child, libc::SIGUSR1) };
        reap(child).map(|_| ())
    }
}

/// The watch numbers of an inotify fd, from its fdinfo (hex).
fn watch_numbers(fd: i32) -> Result<Vec<u32>, String> {
    let info = read_text(&format!("/proc/self/fdinfo/{fd}"))?;
    let mut v: Vec<u32> = info
        .lines()
        .filter_map(|l| l.strip_prefix("inotify wd:"))
        .filter_map(|r| u32::from_str_radix(r.split_whitespace().next()?, 16).ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

fn inotify(dir: &std::path::Path) -> impl FnOnce() -> Result<(), String> {
    // SAFETY: inotify_init1 takes flags; the watches take NUL-terminated
    // paths; open/unlink/read are plain calls on owned buffers.
    unsafe {
        let ify = libc::inotify_init1(libc::IN_NONBLOCK);
        if ify < 0 {
            crust_testprogs::die("inotify_init1");
        }
        for i in 0..12 {
            let d = dir.join(format!("d{i}"));
            let _ = std::fs::create_dir(&d);
            libc::inotify_add_watch(ify, cpath(&d).as_ptr(), libc::IN_CREATE | libc::IN_DELETE);
        }
        let f = dir.join("deleted");
        let fd = libc::open(cpath(&f).as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600);
        let wd = libc::inotify_add_watch(ify, cpath(&f).as_ptr(), libc::IN_MODIFY);
        if fd < 0 || wd != 13 || libc::unlink(cpath(&f).as_ptr()) != 0 {
            crust_testprogs::die("watch on the file to delete");
        }
        let mut buf = [0u8; 4096];
        while libc::read(ify, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        move || {
            let w = watch_numbers(ify)?;
            ensure!(
                w == (1..=13).collect::<Vec<u32>>(),
                "watch numbers are {w:?}"
            );
            ensure!(
                libc::write(fd, b"x".as_ptr().cast(), 1) == 1,
                "write: {}",
                last_err()
            );
            let n = libc::read(ify, buf.as_mut_ptr().cast(), buf.len());
            ensure!(
                n >= 16,
                "no event after writing the deleted file ({})",
                last_err()
            );
            let got_wd = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let mask = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            ensure!(
                got_wd == 13 && mask & libc::IN_MODIFY != 0,
                "event wd {got_wd} mask {mask:#x}"
            );
            Ok(())
        }
    }
}

fn timer() -> impl FnOnce() -> Result<(), String> {
    // SAFETY: timerfd calls with valid itimerspec pointers.
    let fd = unsafe {
        let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, 0);
        let its = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000_000,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            },
        };
        if fd < 0 || libc::timerfd_settime(fd, 0, &its, std::ptr::null_mut()) != 0 {
            crust_testprogs::die("timerfd");
        }
        fd
    };
    sleep_ms(120);
    move || {
        let info = read_text(&format!("/proc/self/fdinfo/{fd}"))?;
        ensure!(
            info.contains("it_interval: (0, 200000000)"),
            "fdinfo: {info:?}"
        );
        let mut t = [0u8; 8];
        for i in 0..2 {
            // SAFETY: t is a writable 8-byte buffer; the read blocks until
            // the timer ticks.
            let n = unsafe { libc::read(fd, t.as_mut_ptr().cast(), 8) };
            ensure!(
                n == 8 && u64::from_ne_bytes(t) >= 1,
                "read {i} of the timer: {n} ({})",
                last_err()
            );
        }
        Ok(())
    }
}

fn epoll_add(ep: i32, fd: i32, data: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: ev is a valid epoll_event.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        crust_testprogs::die("epoll_ctl");
    }
}

fn epoll() -> impl FnOnce() -> Result<(), String> {
    let (a, b) = (crust_testprogs::make_pipe(), crust_testprogs::make_pipe());
    // SAFETY: plain fd calls.
    let ep = unsafe { libc::epoll_create1(0) };
    // SAFETY: dup2/close of fds this program owns.
    unsafe {
        libc::dup2(a[0], 900);
        epoll_add(ep, 900, 111);
        libc::close(900);
    }
    epoll_add(ep, b[0], 222);
    // SAFETY: fork; the child closes one target and waits, async-safe only.
    let child = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::close(b[0]);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            libc::_exit(0);
        }
        pid
    };
    move || {
        for (w, want) in [(a[1], 111u64), (b[1], 222)] {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: plain calls with valid buffers.
            let n = unsafe {
                libc::write(w, b"x".as_ptr().cast(), 1);
                libc::epoll_wait(ep, &mut ev, 1, 2000)
            };
            let got = ev.u64;
            ensure!(
                n == 1 && got == want,
                "epoll_wait gave {n} events, data {got}, wanted {want}"
            );
            let mut c = [0u8; 1];
            // SAFETY: c is a 1-byte buffer.
            unsafe {
                libc::read(
                    if want == 111 { a[0] } else { b[0] },
                    c.as_mut_ptr().cast(),
                    1,
                )
            };
        }
        // SAFETY: kill takes integers.
        unsafe { libc::kill(child, libc::SIGUSR1) };
        reap(child).map(|_| ())
    }
}

static SIGIOS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigio(_: libc::c_int) {
    SIGIOS.fetch_add(1, Ordering::SeqCst);
}

fn lease(dir: &std::path::Path) -> impl FnOnce() -> Result<(), String> {
    let f = dir.join("leased");
    let _ = std::fs::write(&f, b"data");
    // SAFETY: signal() with an extern "C" handler; plain fcntl/open calls.
    let fd = unsafe {
        libc::signal(libc::SIGIO, on_sigio as *const () as libc::sighandler_t);
        let fd = libc::open(cpath(&f).as_ptr(), libc::O_RDONLY);
        if fd < 0 || libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) != 0 {
            crust_testprogs::die("read lease");
        }
        let b = libc::open(cpath(&f).as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
        if b >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EWOULDBLOCK) {
            crust_testprogs::die("breaking the lease");
        }
        fd
    };
    sleep_ms(50);
    move || {
        sleep_ms(100);
        let n = SIGIOS.load(Ordering::SeqCst);
        ensure!(n == 1, "{n} break signals (1 before the dump, none after)");
        // SAFETY: fcntl takes integers.
        let t = unsafe { libc::fcntl(fd, libc::F_GETLEASE) };
        ensure!(
            t == libc::F_UNLCK,
            "F_GETLEASE gives {t}, not F_UNLCK (breaking)"
        );
        let locks = read_text(&format!("/proc/self/fdinfo/{fd}"))?;
        ensure!(
            locks.contains("BREAKING"),
            "the lease is not breaking: {locks:?}"
        );
        Ok(())
    }
}

fn fanotify() -> impl FnOnce() -> Result<(), String> {
    // SAFETY: fanotify_init takes flags.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK,
            libc::O_RDONLY as u32,
        )
    };
    if fd < 0 {
        crust_testprogs::die("fanotify_init");
    }
    let flags = |fd: i32| -> Result<String, String> {
        let info = read_text(&format!("/proc/self/fdinfo/{fd}"))?;
        Ok(info
            .lines()
            .find(|l| l.starts_with("fanotify flags"))
            .unwrap_or("")
            .to_string())
    };
    let before = flags(fd).unwrap_or_default();
    move || {
        let now = flags(fd)?;
        ensure!(
            !before.is_empty() && now == before,
            "fanotify flags were {before:?}, now {now:?}"
        );
        Ok(())
    }
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let dir = std::path::PathBuf::from(args.opt("dir").unwrap_or("/tmp"));
    let check: Box<dyn FnOnce() -> Result<(), String>> = match args.opt("mode").unwrap_or("") {
        "siblings" => Box::new(siblings()),
        "nsfd" => Box::new(nsfd()),
        "procfd" => Box::new(procfd()),
        "inotify" => Box::new(inotify(&dir)),
        "timer" => Box::new(timer()),
        "epoll" => Box::new(epoll()),
        "lease" => Box::new(lease(&dir)),
        "fanotify" => Box::new(fanotify()),
        m => crust_testprogs::die(&format!("unknown --mode {m:?}")),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, check())
}
