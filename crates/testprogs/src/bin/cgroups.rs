//! `cgroups`: a process, a thread and a child, each in cgroups of their
//! own, for the cgroup tests (issue 14).
//!
//! `--v1 DIR`: the root of a named cgroup v1 hierarchy the test mounted;
//! `--v2 DIR`: a cgroup v2 directory of the test's own. The program makes
//! `top/sub` (and the empty `top/sub/empty.0`), `thr` and `kid` in DIR v1,
//! `a` in DIR v2; goes into v1 `top/sub` and v2 `a`, moves its worker
//! thread into v1 `thr` and its child into v1 `kid`. It records the
//! cgroups of each (`/proc/.../cgroup`, lines of these two hierarchies)
//! and, with `--check 1` (the default), finds them the same at the end,
//! with `top/sub/empty.0` still a directory. `--check 0`: the test looks
//! at the cgroups itself; the program only checks that its thread and
//! child live.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crust_testprogs::{
    cgroup_v1_name as v1_name, ensure, finish, ready, sleep_ms, start, wait_for_term,
};

static THREAD_TID: AtomicI32 = AtomicI32::new(0);
/// Set once the main thread has read the worker's cgroups at the end.
static DONE: AtomicBool = AtomicBool::new(false);

fn put(dir: &Path, file: &str, who: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), who)
        .map_err(|e| format!("write {who} to {}/{file}: {e}", dir.display()))
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

/// The lines of `/proc/PATH` for the test's hierarchies: v1 named (by
/// the hierarchy's name) and v2 (`0::`).
fn lines_of(proc_path: &str, v1name: &str) -> Result<String, String> {
    let t = std::fs::read_to_string(proc_path).map_err(|e| format!("read {proc_path}: {e}"))?;
    let mut out: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(&format!(":name={v1name}:")) || l.starts_with("0::"))
        .collect();
    out.sort();
    Ok(out.join("\n"))
}

fn main() {
    let args = start();
    let v1 = args.path("v1");
    let v2 = args.path("v2");
    let check = args.num("check", 1) != 0;
    let setup = (|| -> Result<_, String> {
        let name = v1_name(&v1)?;
        for d in ["top/sub/empty.0", "thr", "kid"] {
            mkdir(&v1.join(d))?;
        }
        mkdir(&v2.join("a"))?;
        put(&v1.join("top/sub"), "cgroup.procs", "0")?;
        put(&v2.join("a"), "cgroup.procs", "0")?;
        let thr = v1.join("thr");
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
            if std::fs::write(thr.join("tasks"), "0").is_ok() {
                THREAD_TID.store(tid, Ordering::SeqCst);
            } else {
                THREAD_TID.store(-1, Ordering::SeqCst);
            }
            while !DONE.load(Ordering::SeqCst) {
                sleep_ms(10);
            }
        });
        while THREAD_TID.load(Ordering::SeqCst) == 0 {
            sleep_ms(5);
        }
        let tid = THREAD_TID.load(Ordering::SeqCst);
        ensure!(
            tid > 0,
            "the worker could not move into {}/thr",
            v1.display()
        );
        // SAFETY: fork in a process whose other thread only sleeps; the
        // child calls only async-signal-safe functions until it exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        ensure!(child > 0, "fork failed");
        put(&v1.join("kid"), "cgroup.procs", &child.to_string())?;
        let me = std::process::id();
        let seen = [
            lines_of(&format!("/proc/{me}/task/{me}/cgroup"), &name)?,
            lines_of(&format!("/proc/{me}/task/{tid}/cgroup"), &name)?,
            lines_of(&format!("/proc/{child}/cgroup"), &name)?,
        ];
        Ok((name, worker, tid, child, seen))
    })();
    let (name, worker, tid, child, seen) = match setup {
        Ok(s) => s,
        Err(e) => finish(&args, Err(e)),
    };
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        let me = std::process::id();
        let now = [
            lines_of(&format!("/proc/{me}/task/{me}/cgroup"), &name)?,
            lines_of(&format!("/proc/{me}/task/{tid}/cgroup"), &name)?,
            lines_of(&format!("/proc/{child}/cgroup"), &name)?,
        ];
        DONE.store(true, Ordering::SeqCst);
        if check {
            for (who, (a, b)) in ["process", "thread", "child"]
                .iter()
                .zip(seen.iter().zip(now.iter()))
            {
                ensure!(a == b, "the {who}'s cgroups changed: {a:?} then {b:?}");
            }
            ensure!(
                v1.join("top/sub/empty.0").is_dir(),
                "top/sub/empty.0 is gone"
            );
        }
        Ok(())
    })();
    DONE.store(true, Ordering::SeqCst);
    let verdict = verdict.and_then(|()| {
        ensure!(worker.join().is_ok(), "the worker thread panicked");
        Ok(())
    });
    // SAFETY: kill and waitpid of our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
    }
    // SAFETY: waitpid of our own child, no status wanted.
    unsafe {
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict)
}
