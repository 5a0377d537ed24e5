//! `timens`: a tree in a time namespace of its own. The program makes one
//! for its children (unshare(CLONE_NEWTIME)), shifts its clocks
//! (monotonic by +10 days, boottime by +20 days) and joins it itself
//! (setns into its time_for_children), then forks a child in it.
//! With `--child-ns 1` the child moves to a time namespace of its own (a
//! tree in two time namespaces, which crust refuses, as CRIU does).
//! With `--cgroupns 1` the program also makes a cgroup namespace of its
//! own first (which crust refuses: it does not dump cgroup namespaces).
//!
//! Every 10 ms it reads both clocks; after SIGTERM it checks that they
//! never went back, that they still hold the offsets (the restored tree is
//! not on the machine's clocks), and that no step between two readings was
//! longer than `--max-gap-ms` (default 2000): the clocks inside go on from
//! where the dump left them, whatever time passed before the restore.

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};

const MONO_OFF: i64 = 10 * 86400;
const BOOT_OFF: i64 = 20 * 86400;

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        die("clock_gettime");
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Make a time namespace with the offsets for our children and join it.
fn enter_new_timens() {
    // SAFETY: an integer argument.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        die("unshare(CLONE_NEWTIME)");
    }
    let offs = format!(
        "{} {MONO_OFF} 0\n{} {BOOT_OFF} 0\n",
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_BOOTTIME
    );
    if std::fs::write("/proc/self/timens_offsets", offs).is_err() {
        die("write /proc/self/timens_offsets");
    }
    let Ok(f) = std::fs::File::open("/proc/self/ns/time_for_children") else {
        die("open /proc/self/ns/time_for_children")
    };
    use std::os::fd::AsRawFd;
    // SAFETY: setns on an fd we hold open; the process is single-threaded.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWTIME) } != 0 {
        die("setns into the new time namespace");
    }
}

#[derive(Default)]
struct Watch {
    last: Option<(i128, i128)>,
    max_gap: i128,
    back: Option<String>,
}

impl Watch {
    fn tick(&mut self) {
        let (m, b) = (now(libc::CLOCK_MONOTONIC), now(libc::CLOCK_BOOTTIME));
        if let Some((lm, lb)) = self.last {
            if m < lm || b < lb {
                self.back.get_or_insert(format!(
                    "clocks went back: monotonic {lm} -> {m}, boottime {lb} -> {b}"
                ));
            }
            self.max_gap = self.max_gap.max(m - lm).max(b - lb);
        }
        self.last = Some((m, b));
    }

    fn check(&self, max_gap_ms: u64) -> Result<(), String> {
        if let Some(b) = &self.back {
            return Err(b.clone());
        }
        let m = now(libc::CLOCK_MONOTONIC) / 1_000_000_000;
        let b = now(libc::CLOCK_BOOTTIME) / 1_000_000_000;
        ensure!(
            m >= i128::from(MONO_OFF),
            "monotonic clock {m}s lost its offset"
        );
        ensure!(
            b >= i128::from(BOOT_OFF),
            "boottime clock {b}s lost its offset"
        );
        let gap_ms = self.max_gap / 1_000_000;
        ensure!(
            gap_ms <= i128::from(max_gap_ms),
            "the clocks jumped by {gap_ms} ms between two readings (at most {max_gap_ms} ms allowed)"
        );
        Ok(())
    }
}

fn main() {
    let args = start();
    let child_ns = args.num("child-ns", 0) == 1;
    let max_gap_ms = args.num("max-gap-ms", 2000);
    // SAFETY: an integer argument.
    if args.num("cgroupns", 0) == 1 && unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        die("unshare(CLONE_NEWCGROUP)");
    }
    enter_new_timens();
    // SAFETY: the child only sleeps (and maybe changes namespace) until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: prctl takes integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if child_ns {
            enter_new_timens();
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    if child < 0 {
        die("fork");
    }
    let mut w = Watch::default();
    w.tick();
    ready(&args);
    wait_for_term(10, || w.tick());
    w.tick();
    let verdict = w.check(max_gap_ms);
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict);
}
