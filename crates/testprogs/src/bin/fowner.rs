//! `fowner`: owners of open files (F_SETOWN_EX, F_SETSIG) and, with
//! `--leases 1`, file leases (F_SETLEASE), checked after restore.
//!
//! Set-up (in `--dir D`; the program is its own process group, as the
//! harness starts it with setsid):
//! - fd 3: D/reg (O_RDWR), owner the helper thread (F_OWNER_TID), signal
//!   SIGRTMIN+1; fd 9 a dup of it;
//! - fds 4/5: a pipe; 4 O_ASYNC, owner the process (F_OWNER_PID), signal
//!   SIGRTMIN+2; 5 owner the process group (F_OWNER_PGRP), no signal;
//! - fds 6/7: a unix stream socketpair, both O_ASYNC; 6 owner the process,
//!   signal SIGRTMIN+3; 7 owner the process group, default SIGIO;
//! - fd 8: an eventfd, owner the main thread (F_OWNER_TID), signal
//!   SIGRTMIN+4, set while the main thread ran as uid 1000, euid 65534
//!   (F_GETOWNER_UIDS reports them);
//! - with `--leases 1`: fd 10 D/rlease (O_RDONLY) with a read lease; fd 11
//!   D/wlease (O_RDWR) with a write lease, then owner the process group and
//!   signal SIGRTMIN+5.
//!
//! The signals are blocked; the I/O signals are checked to arrive (with
//! sigtimedwait) once before ready and again after SIGTERM: a byte written
//! to 5 gives SIGRTMIN+2 for fd 4, to 7 SIGRTMIN+3 for fd 6, to 6 SIGIO.
//! After SIGTERM every owner, type and signal above is read back with
//! F_GETOWN_EX / F_GETSIG, and the leases with F_GETLEASE.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, term_requested};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// fcntl commands not in the libc crate (asm-generic values).
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;
const F_GETOWNER_UIDS: i32 = 17;
const F_OWNER_TID: i32 = 0;
const F_OWNER_PID: i32 = 1;
const F_OWNER_PGRP: i32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct OwnerEx {
    kind: i32,
    pid: i32,
}

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn check(r: libc::c_int, what: &str) -> i32 {
    if r < 0 {
        die(what);
    }
    r
}

fn move_to(fd: i32, to: i32) {
    if fd != to {
        // SAFETY: dup2 and close take only integers.
        unsafe {
            check(libc::dup2(fd, to), "dup2");
            libc::close(fd);
        }
    }
}

fn set_owner(fd: i32, kind: i32, pid: i32) {
    let o = OwnerEx { kind, pid };
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex (`o`, repr(C)).
    check(
        unsafe { libc::fcntl(fd, F_SETOWN_EX, &o as *const OwnerEx) },
        "F_SETOWN_EX",
    );
}

fn owner(fd: i32) -> Result<OwnerEx, String> {
    let mut o = OwnerEx::default();
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex into `o`.
    let r = unsafe { libc::fcntl(fd, F_GETOWN_EX, &mut o as *mut OwnerEx) };
    ensure!(r == 0, "F_GETOWN_EX on fd {fd}: {}", err());
    Ok(o)
}

fn owner_uids(fd: i32) -> Result<(u32, u32), String> {
    let mut v = [0u32; 2];
    // SAFETY: F_GETOWNER_UIDS writes two u32 into `v`.
    let r = unsafe { libc::fcntl(fd, F_GETOWNER_UIDS, v.as_mut_ptr()) };
    ensure!(r == 0, "F_GETOWNER_UIDS on fd {fd}: {}", err());
    Ok((v[0], v[1]))
}

/// setresuid of the calling thread only (the raw syscall; glibc's would
/// change every thread).
fn thread_setresuid(r: u32, e: u32) {
    // SAFETY: setresuid takes integers; -1 keeps the saved uid.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, r, e, u32::MAX) };
    if rc != 0 {
        die("setresuid");
    }
}

fn set_sig(fd: i32, sig: i32) {
    // SAFETY: F_SETSIG takes an integer.
    check(unsafe { libc::fcntl(fd, F_SETSIG, sig) }, "F_SETSIG");
}

fn sig(fd: i32) -> Result<i32, String> {
    // SAFETY: F_GETSIG takes no argument.
    let r = unsafe { libc::fcntl(fd, F_GETSIG) };
    ensure!(r >= 0, "F_GETSIG on fd {fd}: {}", err());
    Ok(r)
}

fn set_async(fd: i32) {
    // SAFETY: F_GETFL/F_SETFL take integers.
    unsafe {
        let fl = check(libc::fcntl(fd, libc::F_GETFL), "F_GETFL");
        check(
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_ASYNC),
            "F_SETFL",
        );
    }
}

fn lease(fd: i32) -> Result<i32, String> {
    // SAFETY: F_GETLEASE takes no argument.
    let r = unsafe { libc::fcntl(fd, libc::F_GETLEASE) };
    ensure!(r >= 0, "F_GETLEASE on fd {fd}: {}", err());
    Ok(r)
}

fn open(path: &std::path::Path, flags: i32) -> i32 {
    let c = cpath(path);
    // SAFETY: `c` is a NUL-terminated path.
    check(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CREAT, 0o644) },
        "open",
    )
}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: the set is zeroed, then initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Drain every pending signal of `sigs` (without waiting).
fn drain(sigs: &[i32]) {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: `set` and `ts` are valid; no siginfo wanted.
        let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        if r < 0 {
            break;
        }
    }
}

/// Wait up to 2 s for `sig`; returns its si_fd (meaningful only for a
/// signal set with F_SETSIG).
fn wait_sig(sig: i32) -> Result<i32, String> {
    let set = sigset(&[sig]);
    let ts = libc::timespec {
        tv_sec: 2,
        tv_nsec: 0,
    };
    // SAFETY: siginfo_t is plain data, zero is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `set`, `si` and `ts` are valid for the call.
        let r = unsafe { libc::sigtimedwait(&set, &mut si, &ts) };
        if r == sig {
            // si_fd follows si_band (a long) in the SIGPOLL part of the
            // union, after the three leading ints and padding (offset 16).
            // SAFETY: siginfo_t is 128 bytes; reading an i32 at 24 is in it.
            let fd =
                unsafe { *((&si as *const libc::siginfo_t as *const u8).add(24) as *const i32) };
            return Ok(fd);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(format!("signal {sig} did not arrive in 2 s ({})", err()));
    }
}

fn write1(fd: i32) -> Result<(), String> {
    // SAFETY: writes one byte from a valid buffer.
    let n = unsafe { libc::write(fd, b"x".as_ptr() as *const libc::c_void, 1) };
    ensure!(n == 1, "write to fd {fd}: {}", err());
    Ok(())
}

fn read1(fd: i32) -> Result<(), String> {
    let mut b = [0u8; 16];
    // SAFETY: reads into a valid 16-byte buffer.
    let n = unsafe { libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, b.len()) };
    ensure!(n >= 1, "read from fd {fd}: {}", err());
    Ok(())
}

/// The I/O signals arrive for the O_ASYNC fds.
fn signals_arrive(all: &[i32]) -> Result<(), String> {
    let rt = libc::SIGRTMIN();
    drain(all);
    write1(5)?;
    let fd = wait_sig(rt + 2).map_err(|e| format!("pipe fd 4: {e}"))?;
    ensure!(fd == 4, "SIGRTMIN+2 names fd {fd}, expected 4");
    read1(4)?;
    drain(all);
    write1(7)?;
    let fd = wait_sig(rt + 3).map_err(|e| format!("socket fd 6: {e}"))?;
    ensure!(fd == 6, "SIGRTMIN+3 names fd {fd}, expected 6");
    read1(6)?;
    drain(all);
    write1(6)?;
    wait_sig(libc::SIGIO).map_err(|e| format!("socket fd 7 (SIGIO to the group): {e}"))?;
    read1(7)?;
    drain(all);
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

fn main() {
    let args = start();
    let dir = args.path("dir");
    let leases = args.num("leases", 0) != 0;
    let rt = libc::SIGRTMIN();
    let all = [rt + 1, rt + 2, rt + 3, rt + 4, rt + 5, libc::SIGIO];
    let set = sigset(&all);
    // SAFETY: `set` is valid; no old set wanted.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let me = std::process::id() as i32;
    // SAFETY: getpgrp takes no arguments.
    let pgrp = unsafe { libc::getpgrp() };
    if pgrp != me {
        eprintln!("fowner must lead its process group (started with setsid)");
        std::process::exit(3);
    }

    let (tx, rx) = mpsc::channel();
    // The helper thread owns fd 3: it runs until the checks are done.
    let helper = std::thread::spawn(move || {
        let _ = tx.send(gettid());
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let tid = rx.recv().unwrap_or_else(|_| die("helper thread"));

    move_to(open(&dir.join("reg"), libc::O_RDWR), 3);
    set_owner(3, F_OWNER_TID, tid);
    set_sig(3, rt + 1);
    let mut p = [0i32; 2];
    // SAFETY: `p` has room for two fds.
    check(unsafe { libc::pipe(p.as_mut_ptr()) }, "pipe");
    let (r, w) = (p[0], p[1]);
    // Park them high first so the moves cannot clobber each other.
    // SAFETY: dup2/close take integers.
    unsafe {
        check(libc::dup2(r, 100), "dup2");
        check(libc::dup2(w, 101), "dup2");
        libc::close(r);
        libc::close(w);
    }
    move_to(100, 4);
    move_to(101, 5);
    set_async(4);
    set_owner(4, F_OWNER_PID, me);
    set_sig(4, rt + 2);
    set_owner(5, F_OWNER_PGRP, pgrp);
    let mut sv = [0i32; 2];
    // SAFETY: `sv` has room for two fds.
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        "socketpair",
    );
    // SAFETY: dup2/close take integers.
    unsafe {
        check(libc::dup2(sv[0], 102), "dup2");
        check(libc::dup2(sv[1], 103), "dup2");
        libc::close(sv[0]);
        libc::close(sv[1]);
    }
    move_to(102, 6);
    move_to(103, 7);
    set_owner(6, F_OWNER_PID, me);
    set_sig(6, rt + 3);
    set_async(6);
    set_owner(7, F_OWNER_PGRP, pgrp);
    set_async(7);
    // SAFETY: eventfd takes integers.
    let efd = check(unsafe { libc::eventfd(0, 0) }, "eventfd");
    move_to(efd, 8);
    thread_setresuid(1000, 65534);
    set_owner(8, F_OWNER_TID, me);
    thread_setresuid(0, 0);
    set_sig(8, rt + 4);
    // SAFETY: dup2 takes integers.
    check(unsafe { libc::dup2(3, 9) }, "dup2");
    if leases {
        move_to(open(&dir.join("rlease"), libc::O_RDONLY), 10);
        // SAFETY: F_SETLEASE takes an integer.
        check(
            unsafe { libc::fcntl(10, libc::F_SETLEASE, libc::F_RDLCK) },
            "F_SETLEASE read",
        );
        move_to(open(&dir.join("wlease"), libc::O_RDWR), 11);
        // SAFETY: F_SETLEASE takes an integer.
        check(
            unsafe { libc::fcntl(11, libc::F_SETLEASE, libc::F_WRLCK) },
            "F_SETLEASE write",
        );
        set_owner(11, F_OWNER_PGRP, pgrp);
        set_sig(11, rt + 5);
    }
    if let Err(e) = signals_arrive(&all) {
        eprintln!("before the dump: {e}");
        std::process::exit(3);
    }
    ready(&args);

    while !term_requested() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let verdict = (|| -> Result<(), String> {
        let want = |fd: i32, kind: i32, pid: i32, s: i32| -> Result<(), String> {
            let o = owner(fd)?;
            ensure!(
                o == OwnerEx { kind, pid },
                "fd {fd}: owner {o:?}, expected type {kind} pid {pid}"
            );
            let got = sig(fd)?;
            ensure!(got == s, "fd {fd}: signal {got}, expected {s}");
            Ok(())
        };
        want(3, F_OWNER_TID, tid, rt + 1)?;
        want(9, F_OWNER_TID, tid, rt + 1)?;
        want(4, F_OWNER_PID, me, rt + 2)?;
        want(5, F_OWNER_PGRP, pgrp, 0)?;
        want(6, F_OWNER_PID, me, rt + 3)?;
        want(7, F_OWNER_PGRP, pgrp, 0)?;
        want(8, F_OWNER_TID, me, rt + 4)?;
        let u = owner_uids(8)?;
        ensure!(
            u == (1000, 65534),
            "fd 8: owner uids {u:?}, expected (1000, 65534)"
        );
        let u = owner_uids(4)?;
        ensure!(u == (0, 0), "fd 4: owner uids {u:?}, expected (0, 0)");
        if leases {
            let l = lease(10)?;
            ensure!(
                l == libc::F_RDLCK,
                "fd 10: lease {l}, expected a read lease"
            );
            let l = lease(11)?;
            ensure!(
                l == libc::F_WRLCK,
                "fd 11: lease {l}, expected a write lease"
            );
            // The read lease set its owner: this process.
            want(10, F_OWNER_PID, me, 0)?;
            want(11, F_OWNER_PGRP, pgrp, rt + 5)?;
        }
        signals_arrive(&all)?;
        Ok(())
    })();
    STOP.store(true, Ordering::SeqCst);
    let _ = helper.join();
    finish(&args, verdict);
}
