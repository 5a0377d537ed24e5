//! The guard as the tracer of the restored tree (issue 15).
//!
//! The guard's copies of the userfaultfds keep the tree waiting if the
//! daemon dies, but if the guard dies too the kernel unregisters the
//! ranges and the tree would run on zero pages. So once the restore has
//! let the tree go, the guard seizes every thread of it with
//! PTRACE_O_EXITKILL: if the guard dies before it detaches, the kernel
//! kills every traced task. TRACEFORK, TRACEVFORK and TRACECLONE cover the
//! processes and threads made later; TRACEEXEC keeps the thread ids right
//! across an exec of a thread that is not the leader.
//!
//! The tree must behave as untraced meanwhile: each signal-delivery stop
//! is continued with its signal; a group stop (PTRACE_EVENT_STOP with a
//! stop signal) is left stopped with PTRACE_LISTEN, so SIGCONT still
//! wakes it; every other stop (an event, a new task's first stop) is
//! continued at once. Exits are waited for at once: a tracee's exit
//! reaches its real parent only after its tracer has seen it. A seized
//! task (not attached by PTRACE_ATTACH) gets no SIGTRAP at exec. Once the
//! daemon is done, each tracee is interrupted and detached at its next
//! stop, with the signal of a signal-delivery stop; a task detached in a
//! group stop stays stopped.

use crust_sys::process::{self, WaitStatus};
use crust_sys::ptrace;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The options of every tracee.
const OPTIONS: u64 = ptrace::options::EXITKILL
    | ptrace::options::TRACEFORK
    | ptrace::options::TRACEVFORK
    | ptrace::options::TRACECLONE
    | ptrace::options::TRACEEXEC;

const EVENT_FORK: i32 = 1;
const EVENT_VFORK: i32 = 2;
const EVENT_CLONE: i32 = 3;
const EVENT_EXEC: i32 = 4;

/// The tasks the guard traces.
#[derive(Default)]
pub(super) struct Tracer {
    traced: BTreeSet<i32>,
    /// Tasks that could not be seized (traced by another process).
    failed: BTreeSet<i32>,
}

impl Tracer {
    /// Whether the guard traces anything.
    pub(super) fn active(&self) -> bool {
        !self.traced.is_empty()
    }

    /// The tasks traced now (killed with the tree).
    pub(super) fn tasks(&self) -> impl Iterator<Item = i32> + '_ {
        self.traced.iter().copied()
    }

    /// Seize every thread of `roots` and of their descendants, again until
    /// a pass finds none new (a task forked before its parent was seized
    /// is found by the next pass: it is linked into its parent's children
    /// before the fork returns). Whether every task found was seized.
    pub(super) fn seize_tree(&mut self, roots: &BTreeSet<i32>) -> bool {
        loop {
            let mut new = 0;
            for tid in tree_tids(roots.iter().chain(self.traced.iter()).copied()) {
                if self.traced.contains(&tid) || self.failed.contains(&tid) {
                    continue;
                }
                match ptrace::seize(tid, OPTIONS) {
                    Ok(()) => {
                        self.traced.insert(tid);
                        new += 1;
                    }
                    // Gone meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        log::warn!("lazy-pages guard: cannot trace task {tid} ({e}): it is not killed if the guard and the daemon die together");
                        self.failed.insert(tid);
                    }
                }
            }
            if new == 0 {
                break;
            }
        }
        log::debug!("lazy-pages guard: tracing {} tasks", self.traced.len());
        self.failed.is_empty()
    }

    /// Handle every state change there is. `detaching`: each tracee that
    /// stops is let go.
    pub(super) fn reap(&mut self, detaching: bool) {
        while let Ok(Some((pid, st))) = process::waitpid(-1, libc::WNOHANG) {
            match st {
                WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                    self.traced.remove(&pid);
                }
                WaitStatus::Stopped { sig, event } => {
                    // A new task's first stop may come before its
                    // parent's event.
                    self.traced.insert(pid);
                    self.stopped(pid, sig, event, detaching);
                }
                WaitStatus::Continued => {}
            }
        }
    }

    /// Let tracee `pid` go on from a stop as if it were not traced.
    fn stopped(&mut self, pid: i32, sig: i32, event: i32, detaching: bool) {
        let deliver = match event {
            // A signal-delivery stop: the signal goes on.
            0 => sig,
            EVENT_FORK | EVENT_VFORK | EVENT_CLONE => {
                if let Ok(child) = ptrace::get_event_msg(pid) {
                    self.traced.insert(child as i32);
                }
                0
            }
            EVENT_EXEC => {
                // The thread that called exec has taken the leader's id.
                if let Ok(former) = ptrace::get_event_msg(pid) {
                    if former as i32 != pid {
                        self.traced.remove(&(former as i32));
                    }
                }
                0
            }
            ptrace::EVENT_STOP if is_stop_signal(sig) && !detaching => {
                // A group stop: stopped as if untraced, SIGCONT wakes it.
                if ptrace::listen(pid).is_err() {
                    self.forget_if_gone(pid);
                }
                return;
            }
            // A group stop (detached: it stays stopped), an interrupt, a
            // new task's first stop.
            _ => 0,
        };
        let r = if detaching {
            ptrace::detach(pid, deliver).map(|()| {
                self.traced.remove(&pid);
            })
        } else {
            ptrace::cont(pid, deliver)
        };
        if r.is_err() {
            self.forget_if_gone(pid);
        }
    }

    /// A request on `pid` failed: forget it if it is no longer ours.
    fn forget_if_gone(&mut self, pid: i32) {
        if !traced_by_me(pid) {
            self.traced.remove(&pid);
        }
    }

    /// Let every tracee go (each stopped by PTRACE_INTERRUPT, then
    /// detached), the tasks forked meanwhile too. `wait` sleeps until the
    /// next SIGCHLD (or a while). Returns once none is left: the guard
    /// must not exit while it traces (EXITKILL would kill the tree).
    pub(super) fn detach_all(&mut self, wait: &mut dyn FnMut(Duration)) {
        let mut asked: BTreeSet<i32> = BTreeSet::new();
        let mut checked = Instant::now();
        while !self.traced.is_empty() {
            for &t in &self.traced {
                if asked.insert(t) {
                    let _ = ptrace::interrupt(t);
                }
            }
            self.reap(true);
            if self.traced.is_empty() {
                break;
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                // A task gone without a word to us (it should not happen).
                let gone: Vec<i32> = self
                    .traced
                    .iter()
                    .copied()
                    .filter(|&t| !traced_by_me(t))
                    .collect();
                for t in gone {
                    self.traced.remove(&t);
                }
                checked = Instant::now();
            }
            wait(Duration::from_millis(100));
        }
    }
}

/// Whether this process traces `tid` (its TracerPid).
fn traced_by_me(tid: i32) -> bool {
    let root = crust_proc::ProcRoot::default();
    crust_proc::status(&root, tid).is_ok_and(|s| s.tracer_pid == process::getpid())
}

/// The signals that put a task in a job-control stop.
fn is_stop_signal(sig: i32) -> bool {
    [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
}

/// Every thread of `roots` and of their descendants.
fn tree_tids(roots: impl Iterator<Item = i32>) -> BTreeSet<i32> {
    let mut seen: BTreeSet<i32> = BTreeSet::new();
    let mut tids: BTreeSet<i32> = BTreeSet::new();
    let mut todo: Vec<i32> = roots.collect();
    while let Some(p) = todo.pop() {
        if p <= 0 || !seen.insert(p) {
            continue;
        }
        let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in dir.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            tids.insert(tid);
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(c.split_whitespace().filter_map(|w| w.parse::<i32>().ok()));
            }
        }
    }
    tids
}
