//! `cgns`: a process in a cgroup namespace of its own, made in a nested
//! cgroup, and its child, for the cgroup namespace tests (issue 14).
//!
//! `--v1 DIR`: the root of a named cgroup v1 hierarchy the test mounted.
//! The program makes `ns/inner` and `ns/kid` in it, enters `ns`, unshares
//! its cgroup namespace there (the namespace's root is `/ns`), then enters
//! `ns/inner`; its child (forked after, so in the same namespace) enters
//! `ns/kid`. Both see their cgroup of that hierarchy from inside the
//! namespace (`/inner`, `/kid`); the program records the two lines of
//! /proc/PID/cgroup and finds them the same at the end.

use std::path::Path;

use crust_testprogs::{cgroup_v1_name as v1_name, ensure, finish, ready, start, wait_for_term};

/// The line of `/proc/PATH` for the named hierarchy `name`.
fn line_of(proc_path: &str, name: &str) -> Result<String, String> {
    let t = std::fs::read_to_string(proc_path).map_err(|e| format!("read {proc_path}: {e}"))?;
    t.lines()
        .find(|l| l.contains(&format!(":name={name}:")))
        .map(|l| l.split(':').skip(1).collect::<Vec<_>>().join(":"))
        .ok_or_else(|| format!("no name={name} line in {proc_path}"))
}

fn enter(dir: &Path) -> Result<(), String> {
    std::fs::write(dir.join("cgroup.procs"), "0")
        .map_err(|e| format!("enter {}: {e}", dir.display()))
}

fn main() {
    let args = start();
    let v1 = args.path("v1");
    let setup = (|| -> Result<_, String> {
        let name = v1_name(&v1)?;
        for d in ["ns/inner", "ns/kid"] {
            let p = v1.join(d);
            std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        }
        enter(&v1.join("ns"))?;
        // SAFETY: unshare takes flags only.
        let r = unsafe { libc::unshare(libc::CLONE_NEWCGROUP) };
        ensure!(r == 0, "unshare(CLONE_NEWCGROUP) failed");
        // The mount was made before: its paths are the whole ones.
        enter(&v1.join("ns/inner"))?;
        // SAFETY: a single-threaded process; the child only writes a file
        // with raw system calls, then pauses.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let p = v1.join("ns/kid/cgroup.procs");
            let ok = std::fs::write(p, "0").is_ok();
            if !ok {
                // SAFETY: _exit ends this process at once.
                unsafe { libc::_exit(1) };
            }
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        ensure!(child > 0, "fork failed");
        // Until the child is in ns/kid.
        let mut kid = String::new();
        for _ in 0..200 {
            kid = line_of(&format!("/proc/{child}/cgroup"), &name)?;
            if kid.ends_with(":/kid") {
                break;
            }
            crust_testprogs::sleep_ms(10);
        }
        let me = line_of("/proc/self/cgroup", &name)?;
        ensure!(me.ends_with(":/inner"), "the process sees {me}, not /inner");
        ensure!(kid.ends_with(":/kid"), "the child sees {kid}, not /kid");
        Ok((name, child, [me, kid]))
    })();
    let (name, child, seen) = match setup {
        Ok(s) => s,
        Err(e) => finish(&args, Err(e)),
    };
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        let now = [
            line_of("/proc/self/cgroup", &name)?,
            line_of(&format!("/proc/{child}/cgroup"), &name)?,
        ];
        for (who, (a, b)) in ["process", "child"].iter().zip(seen.iter().zip(now.iter())) {
            ensure!(a == b, "the {who}'s cgroup changed: {a:?} then {b:?}");
        }
        Ok(())
    })();
    // SAFETY: kill of our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
    }
    // SAFETY: waitpid of our own child, no status wanted.
    unsafe {
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict)
}
