//! `ptree`: a process tree three levels deep, with several process groups,
//! a second session, a zombie and a stopped child.
//!
//! ```text
//! R   root (session and group leader, started by setsid)
//! ├─ Z   exits with status 7 at once; stays a zombie until the check
//! ├─ A   own process group
//! │  └─ G   stays in A's group
//! │     └─ H   stays in A's group (third level below R)
//! ├─ B   in R's group; stopped with SIGSTOP (with `--stopped 1`)
//! └─ C   own session (setsid)
//!    └─ D   in C's session and group
//! ```
//!
//! Every process remembers its pid, parent, group and session. On SIGTERM a
//! process checks them, passes SIGTERM on to its children (SIGCONT first to
//! a stopped one, after checking it is still stopped), waits for each
//! and expects exit status 0 (7 for Z). The root writes the verdict.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

#[derive(Clone, Copy)]
struct Ids {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
}

fn ids() -> Ids {
    // SAFETY: these calls take no arguments and cannot fail.
    unsafe {
        Ids {
            pid: libc::getpid(),
            ppid: libc::getppid(),
            pgid: libc::getpgrp(),
            sid: libc::getsid(0),
        }
    }
}

/// Are `who`'s ids what they `was`? The root's parent is not compared: it
/// is outside the tree (the harness's subshell that started it, or the
/// subreaper once that subshell exited, which may come after the root
/// read it), and a restore does not bring it back.
fn check_ids(who: &str, was: Ids) -> Result<(), String> {
    let now = ids();
    ensure!(
        now.pid == was.pid,
        "{who}: pid {} became {}",
        was.pid,
        now.pid
    );
    ensure!(
        who == "root" || now.ppid == was.ppid,
        "{who}: parent {} became {}",
        was.ppid,
        now.ppid
    );
    ensure!(
        now.pgid == was.pgid,
        "{who}: pgid {} became {}",
        was.pgid,
        now.pgid
    );
    ensure!(
        now.sid == was.sid,
        "{who}: sid {} became {}",
        was.sid,
        now.sid
    );
    Ok(())
}

/// Fork a child that runs `body` and exits with its code.
fn spawn(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the program is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    if pid == 0 {
        let code = body();
        // SAFETY: _exit ends the child without running the parent's atexit.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn proc_state(pid: i32) -> Option<(char, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

fn wait_status(pid: i32) -> Result<i32, String> {
    let mut st = 0;
    // SAFETY: st is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    ensure!(
        r == pid,
        "waitpid({pid}): {}",
        std::io::Error::last_os_error()
    );
    Ok(st)
}

/// Forward SIGTERM to `kids` and expect each to exit with its code.
fn reap(kids: &[(i32, i32, &str)]) -> Result<(), String> {
    for &(pid, code, name) in kids {
        if code == 0 {
            // SAFETY: kill takes integers only.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let st = wait_status(pid)?;
        ensure!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == code,
            "child {name} ({pid}) ended with wait status {st:#x}, expected exit {code}"
        );
    }
    Ok(())
}

/// Body of a non-root process: remember ids, wait for SIGTERM, check.
fn member(name: &'static str, kids: impl FnOnce() -> Vec<(i32, i32, &'static str)>) -> i32 {
    crust_testprogs::install_term_handler();
    let kids = kids();
    let me = ids();
    while !term_requested() {
        sleep_ms(20);
    }
    match check_ids(name, me).and_then(|_| reap(&kids)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn main() {
    let args = start();
    let stopped = args.num("stopped", 1) != 0;
    crust_testprogs::install_term_handler();
    let root = ids();
    let z = spawn(|| 7);
    let a = spawn(|| {
        // SAFETY: setpgid with (0, 0) only changes our own group.
        unsafe { libc::setpgid(0, 0) };
        member("A", || {
            let g = spawn(|| {
                member("G", || {
                    let h = spawn(|| member("H", Vec::new));
                    vec![(h, 0, "H")]
                })
            });
            vec![(g, 0, "G")]
        })
    });
    let b = spawn(|| member("B", Vec::new));
    let c = spawn(|| {
        // SAFETY: setsid only changes our own session.
        unsafe { libc::setsid() };
        member("C", || {
            let d = spawn(|| member("D", Vec::new));
            vec![(d, 0, "D")]
        })
    });
    // Wait until every process has settled in its group and session.
    let settled = |pid: i32, pgid: i32, sid: i32| matches!(proc_state(pid), Some((_, pg, s)) if pg == pgid && s == sid);
    for _ in 0..500 {
        if settled(a, a, root.sid) && settled(c, c, c) && proc_state(z).map(|s| s.0) == Some('Z') {
            break;
        }
        sleep_ms(10);
    }
    sleep_ms(100);
    if stopped {
        // SAFETY: kill takes integers only.
        unsafe { libc::kill(b, libc::SIGSTOP) };
        for _ in 0..200 {
            if proc_state(b).map(|s| s.0) == Some('T') {
                break;
            }
            sleep_ms(5);
        }
    }
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        check_ids("root", root)?;
        ensure!(
            proc_state(z).map(|s| s.0) == Some('Z'),
            "child Z ({z}) is not a zombie any more: {:?}",
            proc_state(z)
        );
        if stopped {
            ensure!(
                proc_state(b).map(|s| s.0) == Some('T'),
                "child B ({b}) is not stopped: {:?}",
                proc_state(b)
            );
        }
        reap(&[(z, 7, "Z"), (a, 0, "A"), (b, 0, "B"), (c, 0, "C")])
    })();
    finish(&args, verdict)
}
