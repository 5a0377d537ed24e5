// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

//! The tracer and the tasks it builds on one CPU while the tree is built.
//!
//! Every remote syscall is a ptrace round trip: crust resumes the task and
//! waits, the task runs a few instructions and stops, crust wakes. With
//! the two on different CPUs, each of those wakeups is a cross-CPU one
//! (an IPI, and an idle CPU coming out of its sleep), which on a virtual
//! machine costs tens of microseconds, far more than the work. On one CPU
//! each wakeup is a switch to the task that waited. A 300-process tree is
//! built about 3 times faster so. Before the tasks move into their
//! cgroups (a cpuset sets their CPUs) they are given back the CPUs crust
//! had, those they would have inherited; crust's own thread gets them
//! back when the restore ends.

use super::*;
use crust_sys::process::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Set `CRUST_PIN=0` to build on any CPU, as before (for comparisons).
const PIN_ENV: &str = "CRUST_PIN";

/// The tracer thread and the root pinned to one CPU: what they had, to
/// give back. Dropping it gives crust's thread its CPUs back.
pub(super) struct Pin {
    orig: CpuSet,
    /// The CPU the tracer thread and its tasks are on.
    cpu: usize,
}

impl Pin {
    /// Pin crust's calling thread and task `root` (the tasks it begets
    /// inherit it) to the CPU crust runs on. `None` when there is nothing
    /// to gain (one CPU allowed, the switch off) or the kernel refuses
    /// (the root's cpuset lacks that CPU): the restore goes on unpinned.
    pub(super) fn start(root: i32) -> Option<Pin> {
        if std::env::var_os(PIN_ENV).is_some_and(|v| v == "0") {
            return None;
        }
        let orig = sched_getaffinity(0).ok()?;
        if orig.count() < 2 {
            return None;
        }
        let cpu = crust_sys::process::current_cpu()
            .ok()
            .filter(|&c| orig.contains(c))
            .or_else(|| orig.first())?;
        let one = orig.only(cpu);
        if let Err(e) = sched_setaffinity(root, &one) {
            debug!("building unpinned: the root {root} cannot be pinned to CPU {cpu}: {e}");
            return None;
        }
        if let Err(e) = sched_setaffinity(0, &one) {
            debug!("building unpinned: crust cannot pin itself to CPU {cpu}: {e}");
            let _ = sched_setaffinity(root, &orig);
            return None;
        }
        debug!("building the tree on CPU {cpu}");
        Some(Pin { orig, cpu })
    }

    /// The CPU the tracer thread builds on.
    pub(super) fn cpu(&self) -> usize {
        self.cpu
    }

    /// Another CPU crust may run on, for a second tracer thread and its
    /// tasks ([`super::split`]).
    pub(super) fn other_cpu(&self) -> Option<usize> {
        (0..4096).find(|&c| c != self.cpu && self.orig.contains(c))
    }

    /// The set of CPU `cpu` alone.
    pub(super) fn only(&self, cpu: usize) -> CpuSet {
        self.orig.only(cpu)
    }

    /// Give every task of `tasks` (each thread) the CPUs crust had. A
    /// task that is gone already (a thread that exited) is passed over.
    pub(super) fn release_tasks(&self, tasks: &[Vec<Task>]) -> Result<(), Error> {
        for t in tasks.iter().flatten() {
            match sched_setaffinity(t.pid(), &self.orig) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(Error::Sys {
                        pid: t.pid(),
                        op: "sched_setaffinity back to crust's CPUs".into(),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Err(e) = sched_setaffinity(0, &self.orig) {
            log::warn!("crust stays on one CPU: {e}");
        }
    }
}
