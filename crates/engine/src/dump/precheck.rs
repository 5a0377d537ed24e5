//! Refuse, from /proc alone and before any task is touched, a tree crust
//! cannot or must not dump: a kernel thread, the machine's init, a tree
//! holding crust itself, a task someone else already traces, an io_uring.
//! Each refusal names the task (and fd) and says what to do; the tree runs
//! on as if crust had never looked at it.

use crate::error::ErrorKind;
use crate::files::classify::{io_uring_refusal, io_worker_refusal, IO_URING_LINK};
use crate::util::proc_err;
use crate::Error;
use crust_proc::ProcRoot;
use crust_sys::process;
use std::time::Duration;

/// CRIU's default for `--timeout` (its DEFAULT_TIMEOUT, in seconds): how
/// long a dump waits for the tree to stop, and for any task to answer.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// kcmp(2)'s KCMP_VM: do two processes share their memory?
const KCMP_VM: i32 = 1;

/// Processes walked at most (the dump refuses bigger trees anyway).
const MAX_PROCS: usize = 100_000;

/// Check the root `pid` and then every process of its tree.
pub(super) fn precheck(proc: &ProcRoot, pid: i32) -> Result<(), Error> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess { pid });
    }
    let me = process::getpid();
    if pid == me {
        return Err(Error::refused(
            ErrorKind::InvalidRequest,
            format!("crust cannot dump itself (process {pid} is this crust)"),
        ));
    }
    let stat = crust_proc::stat(proc, pid).map_err(proc_err(pid))?;
    if stat.is_kernel_thread() {
        return Err(Error::refused(
            ErrorKind::InvalidRequest,
            format!(
                "process {pid} ({}) is a kernel thread: it has no user space to dump; give -t \
                 the pid of a user process",
                stat.comm
            ),
        ));
    }
    if pid == 1 {
        return Err(Error::refused(
            ErrorKind::InvalidRequest,
            format!(
                "process 1 ({}) is the init of this machine (of crust's pid namespace): \
                 dumping it would freeze every process, and pid 1 can never be restored in \
                 place; dump the tree of one service instead",
                stat.comm
            ),
        ));
    }
    check_root_status(proc, pid)?;
    walk_tree(proc, pid, me)
}

/// What /proc/PID/status says of the root: a process, alive, heading its
/// pid namespace if it is in one of its own.
fn check_root_status(proc: &ProcRoot, pid: i32) -> Result<(), Error> {
    let st = crust_proc::status(proc, pid).map_err(proc_err(pid))?;
    if st.tgid != pid {
        return Err(Error::NotAProcess { pid, tgid: st.tgid });
    }
    if st.state == 'Z' {
        return Err(Error::unsupported(format!(
            "process {pid} is a zombie; dump its parent instead"
        )));
    }
    if st.ns_pid.len() > 1 && (st.ns_pid.len() != 2 || st.ns_pid[1] != 1) {
        return Err(Error::unsupported(format!(
            "process {pid} is in a pid namespace it does not head (its pids are {:?}); dump the namespace's init instead",
            st.ns_pid
        )));
    }
    Ok(())
}

/// Every process of the tree of `root`, through /proc's children lists.
/// A process that exits meanwhile is skipped (the seize sees what is left).
fn walk_tree(proc: &ProcRoot, root: i32, me: i32) -> Result<(), Error> {
    let mut todo = vec![root];
    let mut walked = 0usize;
    while let Some(p) = todo.pop() {
        walked += 1;
        if walked > MAX_PROCS {
            break;
        }
        if p == me {
            return Err(Error::refused(
                ErrorKind::InvalidRequest,
                format!(
                    "crust cannot dump itself: this crust (process {me}) is in the tree of \
                     {root}; run crust from outside the tree it dumps"
                ),
            ));
        }
        let tids = match crust_proc::tasks(proc, p) {
            Ok(t) => t,
            Err(e) if e.is_not_found() && p != root => continue,
            Err(e) => return Err(proc_err(p)(e)),
        };
        let Ok(stat) = crust_proc::stat(proc, p) else {
            continue;
        };
        if matches!(stat.state, 'Z' | 'X') {
            continue;
        }
        let who = format!("process {p} ({})", stat.comm);
        refuse_vfork(proc, p)?;
        check_fds(proc, p, &who)?;
        check_tasks(proc, p, &tids, &who)?;
        for &tid in &tids {
            todo.extend(crust_proc::children(proc, p, tid).unwrap_or_default());
        }
    }
    Ok(())
}

/// A parent waiting in vfork() for its child cannot be stopped until the
/// child execs or exits: refuse it rather than time out.
pub(super) fn refuse_vfork(proc: &ProcRoot, pid: i32) -> Result<(), Error> {
    for tid in crust_proc::tasks(proc, pid).unwrap_or_default() {
        for k in crust_proc::children(proc, pid, tid).unwrap_or_default() {
            if process::kcmp(pid, k, KCMP_VM, 0, 0).unwrap_or(false) {
                return Err(Error::unsupported(format!(
                    "process {pid} is waiting in vfork() for its child {k}, which has not exec'd yet"
                )));
            }
        }
    }
    Ok(())
}

/// An fd on an io_uring instance: its work is done by kernel threads.
fn check_fds(proc: &ProcRoot, p: i32, who: &str) -> Result<(), Error> {
    for (fd, link) in crust_proc::fds(proc, p).unwrap_or_default() {
        if link == IO_URING_LINK {
            return Err(io_uring_refusal(who, fd));
        }
    }
    Ok(())
}

/// Threads that are kernel io workers, or already traced by someone else.
fn check_tasks(proc: &ProcRoot, p: i32, tids: &[i32], who: &str) -> Result<(), Error> {
    for &tid in tids {
        let Ok(st) = crust_proc::task_stat(proc, p, tid) else {
            continue;
        };
        if st.is_io_worker() {
            return Err(io_worker_refusal(who, tid, &st.comm));
        }
        let Ok(status) = crust_proc::task_status(proc, p, tid) else {
            continue;
        };
        if status.tracer_pid != 0 {
            return Err(traced(proc, who, p, tid, status.tracer_pid));
        }
    }
    Ok(())
}

/// A task can have one tracer: name the one it has, and what to do.
fn traced(proc: &ProcRoot, who: &str, p: i32, tid: i32, tracer: i32) -> Error {
    let tracer_comm = crust_proc::comm(proc, tracer).unwrap_or_else(|_| "?".into());
    let task = if tid == p {
        who.to_string()
    } else {
        format!("thread {tid} of {who}")
    };
    Error::refused(
        ErrorKind::Busy,
        format!(
            "{task} is already traced by process {tracer} ({}), a debugger, strace or another \
             crust; a task can have only one tracer: detach it (quit the debugger or strace, or \
             wait for the other dump to end) and dump again",
            tracer_comm.trim()
        ),
    )
}
