//! `sessns`: sessions whose leaders are gone or elsewhere, meant to run
//! as the init of a pid namespace of its own (`unshare -p -f sessns`):
//! - L forked C, then called setsid: C is in the root's session, under a
//!   parent that leads another one (L is born in the root's session);
//! - S called setsid, forked T and exited: T went to the init, in session
//!   S, whose leader is gone;
//! - M forked N, which called setsid, forked O and exited unreaped (a
//!   zombie leader): O went to the init, in session N, whose leader is
//!   M's child;
//! - the root has a POSIX timer that signals its own thread
//!   (SIGEV_THREAD_ID), which must still tick.
//!
//! With `--subreaper 1` the root is a child subreaper (to run it outside
//! a pid namespace: the orphans still come to it).
//!
//! Every process notes its parent, group and session; after SIGTERM each
//! checks them again, M checks N is still its zombie, and the root (which
//! must be pid 1) checks its timer and reaps its four children.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU64, Ordering};

static TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_tick(_: libc::c_int) {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

fn ids() -> (i32, i32, i32) {
    // SAFETY: these calls take no arguments and cannot fail.
    unsafe { (libc::getppid(), libc::getpgrp(), libc::getsid(0)) }
}

/// Fork a child running `body`, which returns its exit code.
fn spawn(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: single-threaded program; the child runs `body` then _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(body());
        }
        pid
    }
}

fn reap(pid: i32, flags: i32) -> (i32, i32) {
    let mut st = 0;
    // SAFETY: st is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, flags) };
    (r, st)
}

/// Wait for SIGTERM, then 0 if parent, group and session are as they were
/// after `settle_ms`, and `check` agrees.
fn member(settle_ms: u64, check: impl FnOnce() -> bool) -> i32 {
    crust_testprogs::install_term_handler();
    sleep_ms(settle_ms);
    let was = ids();
    while !term_requested() {
        sleep_ms(20);
    }
    i32::from(ids() != was || !check())
}

fn setsid() {
    // SAFETY: no arguments.
    unsafe { libc::setsid() };
}

/// A timer of signal SIGRTMIN+3 every 20 ms, for this very thread.
fn thread_timer() -> Result<(), String> {
    let sig = libc::SIGRTMIN() + 3;
    // SAFETY: a handler that only bumps an atomic.
    unsafe { libc::signal(sig, on_tick as *const () as libc::sighandler_t) };
    // struct sigevent: value (8), signo (4), notify (4), thread id (4).
    let mut sev = [0u8; 64];
    sev[8..12].copy_from_slice(&sig.to_ne_bytes());
    let notify = libc::SIGEV_SIGNAL | 4; // SIGEV_THREAD_ID
    sev[12..16].copy_from_slice(&notify.to_ne_bytes());
    // SAFETY: no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    sev[16..20].copy_from_slice(&tid.to_ne_bytes());
    let mut id: i32 = 0;
    // SAFETY: sev and id outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            libc::CLOCK_MONOTONIC,
            sev.as_ptr(),
            &mut id as *mut i32,
        )
    };
    ensure!(r == 0, "timer_create: {}", std::io::Error::last_os_error());
    // interval 20 ms, value 20 ms.
    let spec: [i64; 4] = [0, 20_000_000, 0, 20_000_000];
    // SAFETY: spec outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            id as libc::c_long,
            0,
            spec.as_ptr(),
            0usize,
        )
    };
    ensure!(r == 0, "timer_settime: {}", std::io::Error::last_os_error());
    Ok(())
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    if args.num("subreaper", 0) == 1 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let l = spawn(|| {
        let c = spawn(|| member(0, || true));
        sleep_ms(50);
        setsid();
        member(0, || {
            // SAFETY: kill takes integers only.
            unsafe { libc::kill(c, libc::SIGTERM) };
            let (r, st) = reap(c, 0);
            r == c && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
        })
    });
    let s = spawn(|| {
        setsid();
        let _t = spawn(|| member(300, || true));
        sleep_ms(50);
        0
    });
    let m = spawn(|| {
        let n = spawn(|| {
            setsid();
            let _o = spawn(|| member(300, || true));
            sleep_ms(50);
            0
        });
        member(300, || {
            let (r, st) = reap(n, 0);
            r == n && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
        })
    });
    let _ = reap(s, 0);
    sleep_ms(500);
    let timer = thread_timer();
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        timer?;
        let before = TICKS.load(Ordering::Relaxed);
        sleep_ms(200);
        ensure!(
            TICKS.load(Ordering::Relaxed) > before,
            "the SIGEV_THREAD_ID timer no longer ticks"
        );
        // SAFETY: no arguments.
        let me = unsafe { libc::getpid() };
        ensure!(me == 1, "not the init of a pid namespace");
        // Every other process of the namespace (C, by L, too).
        // SAFETY: kill takes integers only.
        unsafe { libc::kill(-1, libc::SIGTERM) };
        let mut reaped = Vec::new();
        loop {
            let (r, st) = reap(-1, 0);
            if r <= 0 {
                break;
            }
            reaped.push((r, st));
        }
        // L, M, T and O.
        ensure!(
            reaped.len() == 4,
            "expected 4 children, reaped {reaped:?} (l {l}, m {m})"
        );
        for (k, st) in reaped {
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "process {k} lost its parent, group or session (status {st:#x}; l {l}, m {m})"
            );
        }
        Ok(())
    })();
    finish(&args, verdict)
}
