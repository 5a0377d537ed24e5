//! Collecting and stopping the tree: every thread of every process, from
//! the root down through /proc's children lists. Tasks are interrupted one
//! by one with ptrace, or taken from those `--freeze-cgroup` seized.

use super::freezer::Frozen;
use super::{precheck, Proc, Tree};
use crate::error::ErrorKind;
use crate::util::{compel_err, proc_err};
use crate::Error;
use crust_compel::Task;
use crust_proc::ProcRoot;
use log::debug;
use std::path::Path;
use std::time::Duration;

/// Seize process `pid` (every thread), then its children, depth first.
/// Threads and children that appear while seizing are caught by scanning
/// again until nothing new shows up: a stopped task cannot clone. With
/// `frozen`, the tasks were seized through the freezer cgroup: each is
/// taken from there, and one outside it fails the dump (as in CRIU).
pub(super) fn seize(
    proc: &ProcRoot,
    tree: &mut Tree,
    pid: i32,
    ppid: i32,
    timeout: Duration,
    mut frozen: Option<&mut Frozen>,
) -> Result<(), Error> {
    if tree.procs.len() > 100_000 {
        return Err(Error::unsupported("trees of more than 100000 processes"));
    }
    let stat = crust_proc::stat(proc, pid).map_err(proc_err(pid))?;
    if stat.state == 'Z' || stat.state == 'X' {
        tree.procs.push(Proc {
            pid,
            ppid,
            threads: Vec::new(),
            zombie: true,
        });
        return Ok(());
    }
    let idx = tree.procs.len();
    tree.procs.push(Proc {
        pid,
        ppid,
        threads: Vec::new(),
        zombie: false,
    });
    for round in 0..1000 {
        let mut tids = match crust_proc::tasks(proc, pid) {
            Ok(t) => t,
            Err(e) if e.is_not_found() && idx > 0 => return Ok(()),
            // Exited since its state was read: a zombie now (ESRCH).
            Err(_) if idx > 0 && tree.procs[idx].threads.is_empty() && became_zombie(proc, pid) => {
                tree.procs[idx].zombie = true;
                return Ok(());
            }
            Err(e) => return Err(proc_err(pid)(e)),
        };
        // The precheck saw no vfork; a parent may have entered one since
        // (its threads as just read: one that appears later is seized in
        // the next round).
        if round == 0 {
            precheck::refuse_vfork_in(proc, pid, &tids)?;
        }
        tids.sort_by_key(|t| (*t != pid, *t));
        let mut new = false;
        tids.retain(|tid| !tree.procs[idx].threads.iter().any(|t| t.pid() == *tid));
        refuse_io_workers(proc, pid, &tids, &stat)?;
        let got = match frozen.as_deref_mut() {
            Some(f) => from_cgroup(proc, f, pid, &tids)?,
            None => Task::seize_all(&tids, timeout),
        };
        // Keep every task seized before reporting an error, so that the
        // release that follows lets them all go.
        let mut first_err = None;
        for (tid, r) in tids.iter().zip(got) {
            match r {
                Ok(mut t) => {
                    // Every later wait for it (remote syscalls) is bounded too.
                    t.set_timeout(Some(timeout));
                    tree.procs[idx].threads.push(t);
                    new = true;
                }
                // A thread that exited meanwhile is simply not there.
                Err(_) if !Path::new(&format!("/proc/{pid}/task/{tid}")).exists() => {}
                // One that exited while being seized (its exit reported to
                // crust, its tracer) is gone too; a process whose main
                // thread did is a zombie now: its parent, stopped before
                // it, cannot have reaped it.
                Err(crust_compel::Error::Exited { .. }) if *tid != pid => {}
                // (Seizing an exiting task fails with EPERM.)
                Err(e)
                    if *tid == pid
                        && idx > 0
                        && tree.procs[idx].threads.is_empty()
                        && became_zombie(proc, pid) =>
                {
                    debug!("process {pid} exited while being seized ({e}): a zombie");
                    tree.procs[idx].zombie = true;
                    return Ok(());
                }
                Err(e) => {
                    first_err.get_or_insert(compel_err(*tid)(e));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !new {
            break;
        }
    }
    if tree.procs[idx].threads.is_empty() {
        return Err(Error::NoSuchProcess { pid });
    }
    let mut kids = Vec::new();
    let tids: Vec<i32> = tree.procs[idx].threads.iter().map(|t| t.pid()).collect();
    for tid in tids {
        kids.extend(crust_proc::children(proc, pid, tid).map_err(proc_err(pid))?);
    }
    for k in kids {
        seize(proc, tree, k, pid, timeout, frozen.as_deref_mut())?;
    }
    Ok(())
}

/// The tasks `tids` of process `pid`, as seized through the freezer. One
/// the freezer did not seize is gone (a seize error the caller skips), or
/// outside the cgroup: the dump is refused, as CRIU's is.
fn from_cgroup(
    proc: &ProcRoot,
    frozen: &mut Frozen,
    pid: i32,
    tids: &[i32],
) -> Result<Vec<crust_compel::Result<Task>>, Error> {
    if let Some(&tid) = tids.iter().find(|&&t| {
        !frozen.holds(t)
            && crust_proc::task_stat(proc, pid, t).is_ok_and(|s| s.state != 'Z' && s.state != 'X')
    }) {
        let what = match tid == pid {
            true => format!("process {pid}"),
            false => format!("thread {tid} of process {pid}"),
        };
        return Err(Error::refused(
            ErrorKind::InvalidRequest,
            format!(
                "{what} of the tree is not in freezer cgroup {} (nor below it): every task of \
                 the tree must be in the cgroup --freeze-cgroup names; dump without \
                 --freeze-cgroup, or name a cgroup holding the whole tree",
                frozen.dir().display()
            ),
        ));
    }
    Ok(tids
        .iter()
        .map(|&tid| {
            frozen.claim(tid).ok_or(crust_compel::Error::Seize {
                pid: tid,
                source: std::io::Error::from_raw_os_error(libc::ESRCH),
            })
        })
        .collect())
}

/// Whether process `pid` has exited as a whole (its main thread a
/// zombie, no other thread left).
fn became_zombie(proc: &ProcRoot, pid: i32) -> bool {
    let dead = crust_proc::stat(proc, pid).map_or(true, |st| st.state == 'Z' || st.state == 'X');
    dead && crust_proc::tasks(proc, pid).map_or(true, |t| t == [pid])
}

/// A kernel io worker (PF_IO_WORKER) never stops for ptrace: refuse it
/// before seizing, should one have appeared since the precheck. The main
/// thread's flags are those of `stat` (the process's, just read).
fn refuse_io_workers(
    proc: &ProcRoot,
    pid: i32,
    tids: &[i32],
    stat: &crust_proc::Stat,
) -> Result<(), Error> {
    for &tid in tids {
        let st = match tid == pid {
            true => Ok(stat.clone()),
            false => crust_proc::task_stat(proc, pid, tid),
        };
        match st {
            Ok(st) if st.is_io_worker() => {
                let who = format!("process {pid}");
                return Err(crate::files::classify::io_worker_refusal(
                    &who, tid, &st.comm,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
