//! `cgtree --n N --threads T [--join FILE]`: a root and N-1 children (default
//! N 4), each with T threads besides its main one (default 2) that keep
//! counting. With `--join FILE` the root first writes 0 to FILE (a cgroup's
//! `cgroup.procs`), so the whole tree is born in that cgroup.
//! On SIGTERM every process checks that its pid and parent are unchanged,
//! that every thread is still there and still counting, and the root that
//! every child ended with 0.

use crust_testprogs::{finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn me() -> (i32, i32) {
    // SAFETY: getpid/getppid take no arguments and cannot fail.
    unsafe { (libc::getpid(), libc::getppid()) }
}

/// Start `n` counting threads; one counter each.
fn spawn_counters(n: usize) -> Vec<Arc<AtomicU64>> {
    (0..n)
        .map(|_| {
            let c = Arc::new(AtomicU64::new(0));
            let c2 = c.clone();
            std::thread::spawn(move || loop {
                c2.fetch_add(1, Ordering::Relaxed);
                sleep_ms(2);
            });
            c
        })
        .collect()
}

/// Wait for SIGTERM, then check this process and its threads.
fn serve(counters: Vec<Arc<AtomicU64>>, kids: &[i32], root: bool) -> Result<(), String> {
    let was = me();
    let threads = counters.len();
    while !term_requested() {
        sleep_ms(20);
    }
    // The root's parent is outside the tree (the harness's subshell, or the
    // subreaper once that exited): not compared.
    let now = me();
    if now.0 != was.0 || (!root && now.1 != was.1) {
        return Err(format!("pid/ppid {was:?} became {now:?}"));
    }
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    sleep_ms(100);
    for (i, (c, b)) in counters.iter().zip(&before).enumerate() {
        if c.load(Ordering::Relaxed) <= *b {
            return Err(format!("thread {i} of {} stopped counting", was.0));
        }
    }
    let n = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if n != threads + 1 {
        return Err(format!(
            "{} has {n} threads, expected {}",
            was.0,
            threads + 1
        ));
    }
    for &k in kids {
        // SAFETY: kill and waitpid with a valid out-pointer.
        let st = unsafe {
            libc::kill(k, libc::SIGTERM);
            let mut st = 0;
            libc::waitpid(k, &mut st, 0);
            st
        };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return Err(format!("child {k} ended with status {st:#x}"));
        }
    }
    Ok(())
}

fn main() {
    let args = start();
    let n = args.num("n", 4).max(1) as usize;
    let threads = args.num("threads", 2) as usize;
    if let Some(f) = args.opt("join") {
        if let Err(e) = std::fs::write(f, "0") {
            eprintln!("cannot join {f}: {e}");
            std::process::exit(3);
        }
    }
    crust_testprogs::install_term_handler();
    let mut kids = Vec::new();
    for _ in 1..n {
        // SAFETY: single-threaded until here; the child only serves.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("fork failed");
            std::process::exit(3);
        }
        if pid == 0 {
            let code = i32::from(serve(spawn_counters(threads), &[], false).is_err());
            // SAFETY: _exit ends the child without running atexit handlers.
            unsafe { libc::_exit(code) };
        }
        kids.push(pid);
    }
    // Wait until every child runs its threads.
    for _ in 0..500 {
        let all = kids.iter().all(|k| {
            std::fs::read_dir(format!("/proc/{k}/task")).map_or(0, |d| d.count()) > threads
        });
        if all {
            break;
        }
        sleep_ms(10);
    }
    let counters = spawn_counters(threads);
    ready(&args);
    finish(&args, serve(counters, &kids, true))
}
