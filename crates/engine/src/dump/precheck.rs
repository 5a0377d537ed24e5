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
        // The children lists, read once: for the vfork check and the walk.
        let kids: Vec<i32> = (tids.iter())
            .flat_map(|&tid| crust_proc::children(proc, p, tid).unwrap_or_default())
            .collect();
        refuse_vfork_of(p, &kids)?;
        check_fds(proc, p, &who)?;
        check_tasks(proc, p, &tids, &stat, &who)?;
        todo.extend(kids);
    }
    Ok(())
}

/// A parent waiting in vfork() for its child cannot be stopped until the
/// child execs or exits: refuse it rather than time out.
/// `tids` are its threads.
pub(super) fn refuse_vfork_in(proc: &ProcRoot, pid: i32, tids: &[i32]) -> Result<(), Error> {
    let kids: Vec<i32> = (tids.iter())
        .flat_map(|&tid| crust_proc::children(proc, pid, tid).unwrap_or_default())
        .collect();
    refuse_vfork_of(pid, &kids)
}

/// [`refuse_vfork_in`] with the children of `pid` (of all its threads)
/// already read.
fn refuse_vfork_of(pid: i32, kids: &[i32]) -> Result<(), Error> {
    for &k in kids {
        if process::kcmp(pid, k, KCMP_VM, 0, 0).unwrap_or(false) {
            return Err(Error::unsupported(format!(
                "process {pid} is waiting in vfork() for its child {k}, which has not exec'd yet"
            )));
        }
    }
    Ok(())
}

/// An fd on an io_uring instance: its work is done by kernel threads. An
/// fd on the tun/tap clone device of a process in crust's network
/// namespace: its link would have to be made again there (CRIU dumps tun
/// files only with the tree's own network namespace).
fn check_fds(proc: &ProcRoot, p: i32, who: &str) -> Result<(), Error> {
    for (fd, link) in crust_proc::fds(proc, p).unwrap_or_default() {
        if link == IO_URING_LINK {
            return Err(io_uring_refusal(who, fd));
        }
        if link == crust_sys::tun::PATH && in_crust_netns(proc, p) {
            return Err(Error::unsupported(format!(
                "{who} has fd {fd} open on /dev/net/tun (a tun/tap file) but shares crust's \
                 network namespace: tun/tap files are dumped only with a network namespace of \
                 the tree's own, as CRIU does (the tree was not touched)"
            )));
        }
    }
    Ok(())
}

/// Whether process `p` is in crust's own network namespace (or that cannot
/// be told: then it is taken to be).
fn in_crust_netns(proc: &ProcRoot, p: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |path: &std::path::Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    match (
        ino(&proc.pid_path(p, "ns/net")),
        ino(std::path::Path::new("/proc/self/ns/net")),
    ) {
        (Some(theirs), Some(own)) => theirs == own,
        _ => true,
    }
}

/// Threads that are kernel io workers, or already traced by someone else.
/// `stat` is the process's (/proc/P/stat): its main thread's state, name
/// and flags, not read again.
fn check_tasks(
    proc: &ProcRoot,
    p: i32,
    tids: &[i32],
    stat: &crust_proc::Stat,
    who: &str,
) -> Result<(), Error> {
    for &tid in tids {
        let read;
        let st = match tid == p {
            true => stat,
            false => match crust_proc::task_stat(proc, p, tid) {
                Ok(s) => {
                    read = s;
                    &read
                }
                Err(_) => continue,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// Pids above the kernel's pid_max: no real process has them, so kcmp
    /// on them fails and only the fake /proc below speaks.
    const ROOT: i32 = 5_000_001;
    const CHILD: i32 = 5_000_002;
    const TID: i32 = 5_000_003;

    /// A fake /proc with ROOT (threads ROOT and TID) and its child CHILD.
    struct FakeProc {
        dir: PathBuf,
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn stat_line(pid: i32, comm: &str, ppid: i32, flags: u32) -> String {
        let mut l = format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 {flags}");
        for i in 10..=52 {
            l.push_str(&format!(" {i}"));
        }
        l + "\n"
    }

    fn status_text(pid: i32, tgid: i32, tracer: i32) -> String {
        format!(
            "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{tgid}\nNgid:\t0\nPid:\t{pid}\n\
             PPid:\t1\nTracerPid:\t{tracer}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\n\
             Groups:\t\nNStgid:\t{tgid}\nNSpid:\t{pid}\nNSpgid:\t{tgid}\nNSsid:\t{tgid}\n\
             Threads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n\
             SigCgt:\t0\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\n\
             NoNewPrivs:\t0\nSeccomp:\t0\n"
        )
    }

    /// Add task `tid` of process `pid` (flags, tracer, children).
    fn task(dir: &Path, pid: i32, tid: i32, comm: &str, flags: u32, tracer: i32, kids: &str) {
        let t = dir.join(format!("{pid}/task/{tid}"));
        write(&t.join("stat"), &stat_line(tid, comm, 1, flags));
        write(&t.join("status"), &status_text(tid, pid, tracer));
        write(&t.join("children"), kids);
    }

    fn fake(tag: &str) -> FakeProc {
        let dir = std::env::temp_dir().join(format!("crust-precheck-{tag}-{}", process::getpid()));
        let _ = std::fs::remove_dir_all(&dir);
        for (pid, comm, kids) in [
            (ROOT, "root", format!("{CHILD} ")),
            (CHILD, "kid", String::new()),
        ] {
            write(
                &dir.join(format!("{pid}/stat")),
                &stat_line(pid, comm, 1, 0x0040_0100),
            );
            write(
                &dir.join(format!("{pid}/status")),
                &status_text(pid, pid, 0),
            );
            task(&dir, pid, pid, comm, 0x0040_0100, 0, &kids);
            std::fs::create_dir_all(dir.join(format!("{pid}/fd"))).unwrap();
            std::os::unix::fs::symlink("pipe:[7]", dir.join(format!("{pid}/fd/0"))).unwrap();
        }
        task(&dir, ROOT, TID, "worker", 0x0040_0040, 0, "");
        FakeProc { dir }
    }

    fn check(f: &FakeProc) -> Result<(), Error> {
        precheck(&ProcRoot::new(&f.dir), ROOT)
    }

    #[test]
    fn a_plain_tree_passes() {
        let f = fake("plain");
        check(&f).unwrap();
    }

    #[test]
    fn an_io_uring_fd_of_a_child_is_named() {
        let f = fake("uring");
        std::os::unix::fs::symlink(IO_URING_LINK, f.dir.join(format!("{CHILD}/fd/7"))).unwrap();
        let e = check(&f).unwrap_err().to_string();
        assert!(
            e.contains(&format!("process {CHILD} (kid) has fd 7")),
            "{e}"
        );
        assert!(e.contains("io_uring"), "{e}");
    }

    #[test]
    fn a_tun_file_is_named() {
        let f = fake("tunfd");
        std::os::unix::fs::symlink("/dev/net/tun", f.dir.join(format!("{CHILD}/fd/5"))).unwrap();
        let e = check(&f).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "process {CHILD} (kid) has fd 5 open on /dev/net/tun"
            )),
            "{e}"
        );
    }

    #[test]
    fn an_io_worker_thread_is_named() {
        let f = fake("iowrk");
        task(&f.dir, ROOT, TID, "iou-wrk-1", 0x0040_4050, 0, "");
        let e = check(&f).unwrap_err().to_string();
        assert!(
            e.contains(&format!("io worker thread {TID} (iou-wrk-1)")),
            "{e}"
        );
    }

    #[test]
    fn a_traced_thread_names_its_tracer() {
        let f = fake("traced");
        task(&f.dir, ROOT, TID, "worker", 0x0040_0040, 1, "");
        let e = check(&f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy);
        let e = e.to_string();
        assert!(
            e.contains(&format!("thread {TID} of process {ROOT} (root)")),
            "{e}"
        );
        assert!(e.contains("already traced by process 1 ("), "{e}");
    }

    #[test]
    fn a_kernel_thread_is_said_to_be_one() {
        let f = fake("kthread");
        write(
            &f.dir.join(format!("{ROOT}/stat")),
            &stat_line(ROOT, "kworker/0:1", 2, 0x0420_8060),
        );
        let e = check(&f).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(e.to_string().contains("kernel thread"), "{e}");
    }
}
