//! `events`: an epoll loop over event files, checked after restore.
//!
//! Set-up: fd 3 an epoll; fd 4 an eventfd (O_NONBLOCK) holding 42,
//! registered edge-triggered; fd 5 a periodic timerfd (every 50 ms,
//! CLOCK_MONOTONIC); fd 6 a signalfd for SIGUSR1 (blocked), O_NONBLOCK;
//! fd 7 a one-shot timerfd due `--oneshot-ms` (default 2500) after ready;
//! fd 8 an eventfd in semaphore mode holding 3, not in the epoll, close-on-
//! exec; all but fd 8 registered in the epoll with their own `data`.
//! With `--dir D`: fd 9 an inotify (O_NONBLOCK) watching D and D/sub, with
//! watch numbers 3 and 5 (1, 2 and 4 were added and removed), in the epoll.
//!
//! The loop runs epoll_wait (20 ms timeout) until SIGTERM and notes the
//! time spent frozen (any gap > 300 ms between wake-ups). After SIGTERM:
//! - the epoll's fdinfo still lists every target with its events and data;
//! - the periodic timer fired in the last 300 ms, interval still 50 ms;
//! - the one-shot fired (waiting for it if needed) at its due time plus
//!   the time frozen (crust re-arms it with the time left at dump, as CRIU
//!   does), within 400 ms;
//! - at least one SIGUSR1 (sent after restore by the test) came out of the
//!   signalfd;
//! - the eventfd counter is 42 (or 42 more for every write), a write of 8
//!   is reported by the epoll, then it reads 50;
//! - the semaphore eventfd reads 1 three times, then EAGAIN;
//! - inotify: creating D/new-N, writing to it and deleting it is reported
//!   with watch 3; creating D/sub/x with watch 5.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, term_requested};
use std::path::{Path, PathBuf};
use std::time::Instant;

const D_EVENTFD: u64 = 0x1111_0000_0000_0004;
const D_TIMER: u64 = 0x2222_0000_0000_0005;
const D_SIGNAL: u64 = 0x3333_0000_0000_0006;
const D_ONESHOT: u64 = 0x4444_0000_0000_0007;
const D_INOTIFY: u64 = 0x5555_0000_0000_0009;

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

fn epoll_add(ep: i32, fd: i32, events: u32, data: u64) {
    let mut e = libc::epoll_event { events, u64: data };
    // SAFETY: `e` is a valid epoll_event for the call.
    check(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut e) },
        "epoll_ctl",
    );
}

fn read_u64(fd: i32) -> Result<u64, std::io::Error> {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v`.
    let n = unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    if n != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

fn write_u64(fd: i32, v: u64) -> Result<(), String> {
    // SAFETY: writes the 8 bytes of `v`.
    let n = unsafe { libc::write(fd, &v as *const u64 as *const libc::c_void, 8) };
    ensure!(n == 8, "write to eventfd {fd}: {}", err());
    Ok(())
}

fn arm(fd: i32, ms: u64, interval_ms: u64) {
    let ts = |ms: u64| libc::timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: (ms % 1000 * 1_000_000) as i64,
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval_ms),
        it_value: ts(ms),
    };
    // SAFETY: `spec` is a valid itimerspec; no old value wanted.
    check(
        unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) },
        "timerfd_settime",
    );
}

fn inotify_add(fd: i32, p: &Path, mask: u32) -> i32 {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path.
    check(
        unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) },
        "inotify_add_watch",
    )
}

struct State {
    t0: Instant,
    oneshot_ms: u64,
    frozen_ms: f64,
    last_wake: Instant,
    last_tick: Option<Instant>,
    ticks: u64,
    oneshot_at: Option<f64>,
    signals: u64,
    eventfd_events: u64,
    inotify: Vec<(i32, u32, String)>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// One epoll_wait round.
fn round(st: &mut State, timeout: i32) -> Result<(), String> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
    // SAFETY: `evs` has room for 8 events.
    let n = unsafe { libc::epoll_wait(3, evs.as_mut_ptr(), 8, timeout) };
    let gap = ms_since(st.last_wake);
    st.last_wake = Instant::now();
    if gap > 300.0 {
        st.frozen_ms += gap - timeout as f64;
    }
    if n < 0 {
        ensure!(
            std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR),
            "epoll_wait: {}",
            err()
        );
        return Ok(());
    }
    for e in &evs[..n as usize] {
        let data = e.u64;
        match data {
            D_TIMER => {
                if let Ok(t) = read_u64(5) {
                    st.ticks += t;
                    st.last_tick = Some(Instant::now());
                }
            }
            D_ONESHOT => {
                if read_u64(7).is_ok() && st.oneshot_at.is_none() {
                    st.oneshot_at = Some(ms_since(st.t0));
                }
            }
            D_SIGNAL => {
                let mut si = [0u8; 128];
                // SAFETY: reads one signalfd_siginfo (128 bytes) into `si`.
                while unsafe { libc::read(6, si.as_mut_ptr() as *mut libc::c_void, 128) } == 128 {
                    let signo = u32::from_ne_bytes(si[0..4].try_into().unwrap());
                    ensure!(
                        signo == libc::SIGUSR1 as u32,
                        "signalfd gave signal {signo}"
                    );
                    st.signals += 1;
                }
            }
            D_EVENTFD => st.eventfd_events += 1,
            D_INOTIFY => {
                let mut buf = [0u8; 4096];
                // SAFETY: reads into `buf`.
                let n = unsafe { libc::read(9, buf.as_mut_ptr() as *mut libc::c_void, 4096) };
                let mut off = 0usize;
                while n > 0 && off + 16 <= n as usize {
                    let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap());
                    let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
                    let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap());
                    let name = &buf[off + 16..off + 16 + len as usize];
                    let name = String::from_utf8_lossy(name)
                        .trim_end_matches('\0')
                        .to_string();
                    st.inotify.push((wd, mask, name));
                    off += 16 + len as usize;
                }
            }
            other => return Err(format!("epoll gave unknown data {other:#x}")),
        }
    }
    Ok(())
}

fn main() {
    let args = start();
    let oneshot_ms = args.num("oneshot-ms", 2500);
    let dir: Option<PathBuf> = args.opt("dir").map(PathBuf::from);
    // SAFETY: (whole set-up) plain syscalls on integers and local buffers.
    unsafe {
        dup_to(check(libc::epoll_create1(0), "epoll_create1"), 3);
        dup_to(check(libc::eventfd(42, libc::EFD_NONBLOCK), "eventfd"), 4);
        dup_to(
            check(
                libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK),
                "timerfd",
            ),
            5,
        );
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        dup_to(
            check(libc::signalfd(-1, &set, libc::SFD_NONBLOCK), "signalfd"),
            6,
        );
        dup_to(
            check(
                libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK),
                "timerfd",
            ),
            7,
        );
        dup_to(
            check(
                libc::eventfd(3, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK),
                "eventfd",
            ),
            8,
        );
        libc::fcntl(8, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    epoll_add(3, 4, (libc::EPOLLIN | libc::EPOLLET) as u32, D_EVENTFD);
    epoll_add(3, 5, libc::EPOLLIN as u32, D_TIMER);
    epoll_add(3, 6, libc::EPOLLIN as u32, D_SIGNAL);
    epoll_add(3, 7, libc::EPOLLIN as u32, D_ONESHOT);
    if let Some(d) = &dir {
        let sub = d.join("sub");
        let _ = std::fs::create_dir_all(&sub);
        // SAFETY: inotify_init1 takes an integer.
        let ify = unsafe { libc::inotify_init1(libc::IN_NONBLOCK) };
        dup_to(check(ify, "inotify_init1"), 9);
        let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MODIFY;
        // wds 1, 2 used and dropped, 3 = d, 4 dropped, 5 = sub.
        for _ in 0..2 {
            let w = inotify_add(9, Path::new("/"), libc::IN_CREATE);
            // SAFETY: integers only.
            unsafe { libc::inotify_rm_watch(9, w) };
        }
        let w3 = inotify_add(9, d, mask);
        let w4 = inotify_add(9, Path::new("/"), libc::IN_CREATE);
        // SAFETY: integers only.
        unsafe { libc::inotify_rm_watch(9, w4) };
        let w5 = inotify_add(9, &sub, mask);
        if w3 != 3 || w5 != 5 {
            eprintln!("inotify watches are {w3}, {w5}");
            std::process::exit(3);
        }
        // Drain the IN_IGNORED events of the removed watches.
        let mut buf = [0u8; 4096];
        // SAFETY: reads into `buf`.
        unsafe { libc::read(9, buf.as_mut_ptr() as *mut libc::c_void, 4096) };
        epoll_add(3, 9, libc::EPOLLIN as u32, D_INOTIFY);
    }
    arm(5, 50, 50);
    arm(7, oneshot_ms, 0);
    let t0 = Instant::now();
    let mut st = State {
        t0,
        oneshot_ms,
        frozen_ms: 0.0,
        last_wake: t0,
        last_tick: None,
        ticks: 0,
        oneshot_at: None,
        signals: 0,
        eventfd_events: 0,
        inotify: Vec::new(),
    };
    ready(&args);
    let mut verdict = Ok(());
    while !term_requested() {
        if let Err(e) = round(&mut st, 20) {
            verdict = Err(e);
            break;
        }
    }
    if verdict.is_ok() {
        verdict = checks(&mut st, dir.as_deref());
    }
    finish(&args, verdict)
}

fn fdinfo(fd: i32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| format!("fdinfo of fd {fd}: {e}"))
}

fn checks(st: &mut State, dir: Option<&Path>) -> Result<(), String> {
    // The epoll targets, events and data.
    let info = fdinfo(3)?;
    let mut want = vec![
        (4, 0x8000_0019u32, D_EVENTFD),
        (5, 0x19, D_TIMER),
        (6, 0x19, D_SIGNAL),
        (7, 0x19, D_ONESHOT),
    ];
    if dir.is_some() {
        want.push((9, 0x19, D_INOTIFY));
    }
    let mut got = Vec::new();
    for l in info.lines().filter(|l| l.starts_with("tfd:")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let fd: i32 = w[1].parse().map_err(|_| format!("epoll line '{l}'"))?;
        let ev = u32::from_str_radix(w[3], 16).map_err(|_| format!("epoll line '{l}'"))?;
        let data = u64::from_str_radix(w[5], 16).map_err(|_| format!("epoll line '{l}'"))?;
        got.push((fd, ev, data));
    }
    got.sort();
    ensure!(got == want, "epoll targets {got:x?}, expected {want:x?}");
    // Wait (a bit) for the one-shot timer and the signal.
    let deadline = Instant::now();
    while (st.oneshot_at.is_none() || st.signals == 0 || st.last_tick.is_none())
        && deadline.elapsed().as_secs() < 12
    {
        round(st, 20)?;
    }
    for _ in 0..10 {
        round(st, 20)?;
    }
    ensure!(st.signals > 0, "no SIGUSR1 came out of the signalfd");
    let since_tick = st.last_tick.map(ms_since).unwrap_or(f64::MAX);
    ensure!(
        since_tick < 300.0,
        "the periodic timer last fired {since_tick:.0} ms ago ({} ticks)",
        st.ticks
    );
    let mut spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: `spec` is writable.
    unsafe { libc::timerfd_gettime(5, &mut spec) };
    ensure!(
        spec.it_interval.tv_sec == 0 && spec.it_interval.tv_nsec == 50_000_000,
        "periodic timer interval is {}.{:09}",
        spec.it_interval.tv_sec,
        spec.it_interval.tv_nsec
    );
    let due = st.oneshot_ms as f64 + st.frozen_ms;
    let at = st
        .oneshot_at
        .ok_or_else(|| format!("the one-shot timer never fired (due at {due:.0} ms)"))?;
    ensure!(
        (at - due).abs() < 400.0,
        "the one-shot timer fired at {at:.0} ms, due at {due:.0} ms ({} + {:.0} frozen)",
        st.oneshot_ms,
        st.frozen_ms
    );
    // eventfd: 42, then a write is seen by the epoll.
    let before = st.eventfd_events;
    write_u64(4, 8)?;
    round(st, 100)?;
    ensure!(
        st.eventfd_events > before,
        "a write to the eventfd was not reported by the epoll"
    );
    let v = read_u64(4).map_err(|e| format!("read eventfd: {e}"))?;
    ensure!(v == 50, "the eventfd held {v}, expected 42 + 8");
    ensure!(
        fdinfo(8)?.contains("eventfd-semaphore: 1"),
        "fd 8 lost its semaphore mode"
    );
    // SAFETY: integer-only fcntl.
    let fdflags = unsafe { libc::fcntl(8, libc::F_GETFD) };
    ensure!(fdflags == libc::FD_CLOEXEC, "fd 8 flags {fdflags}");
    for i in 0..3 {
        let v = read_u64(8).map_err(|e| format!("semaphore read {i}: {e}"))?;
        ensure!(v == 1, "semaphore read {i} gave {v}");
    }
    ensure!(
        read_u64(8).is_err(),
        "the semaphore eventfd held more than 3"
    );
    if let Some(d) = dir {
        let f = d.join(format!("new-{}", std::process::id()));
        std::fs::write(&f, b"x").map_err(|e| format!("{}: {e}", f.display()))?;
        std::fs::remove_file(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let g = d.join("sub").join("x");
        std::fs::write(&g, b"y").map_err(|e| format!("{}: {e}", g.display()))?;
        std::fs::remove_file(&g).map_err(|e| format!("{}: {e}", g.display()))?;
        for _ in 0..10 {
            round(st, 20)?;
        }
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let has = |wd: i32, m: u32, n: &str| {
            st.inotify
                .iter()
                .any(|(w, mask, nm)| *w == wd && mask & m != 0 && nm == n)
        };
        ensure!(
            has(3, libc::IN_CREATE, &name)
                && has(3, libc::IN_MODIFY, &name)
                && has(3, libc::IN_DELETE, &name)
                && has(5, libc::IN_CREATE, "x")
                && has(5, libc::IN_DELETE, "x"),
            "inotify events after restore: {:?}",
            st.inotify
        );
    }
    Ok(())
}
