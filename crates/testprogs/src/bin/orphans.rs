//! `orphans`: processes whose process group or session leader has exited.
//! The root is a child subreaper. A made its own group, forked G into it
//! and exited; S made its own session, forked T into it and exited. G and T
//! were reparented to the root. After restore G must still be in group A
//! and T in session S, and the root must still be a subreaper.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

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

/// A member: waits for SIGTERM, then exits 0 if its parent, group and
/// session are what they were.
fn member() -> i32 {
    crust_testprogs::install_term_handler();
    // Wait until our first parent is gone and we were reparented.
    sleep_ms(200);
    let was = ids();
    while !term_requested() {
        sleep_ms(20);
    }
    i32::from(ids() != was)
}

fn reap(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: st is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (gpipe, tpipe) = ([0i32; 2], [0i32; 2]);
    let _ = (gpipe, tpipe);
    let a = spawn(|| {
        // SAFETY: own group only.
        unsafe { libc::setpgid(0, 0) };
        let _g = spawn(member);
        sleep_ms(50);
        0
    });
    let s = spawn(|| {
        // SAFETY: own session only.
        unsafe { libc::setsid() };
        let _t = spawn(member);
        sleep_ms(50);
        0
    });
    reap(a);
    reap(s);
    sleep_ms(400);
    // The orphans are now our children: find them.
    let me = std::process::id();
    let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        let mut v = 0;
        // SAFETY: prctl with a valid out-pointer.
        unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut i32, 0, 0, 0) };
        ensure!(v == 1, "the root is no longer a child subreaper");
        ensure!(kids.len() == 2, "expected 2 adopted orphans, had {kids:?}");
        for k in &kids {
            // SAFETY: kill takes integers only.
            unsafe { libc::kill(*k, libc::SIGTERM) };
            let st = reap(*k);
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "orphan {k} lost its parent, group or session (status {st:#x})"
            );
        }
        let _ = (a, s);
        Ok(())
    })();
    finish(&args, verdict)
}
