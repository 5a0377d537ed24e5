// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crust_sys::killswitch::KillSwitch;
use std::os::fd::AsFd;

/// The listeners whose queued connections the accept server hands over
/// (see [`crate::net::accept`]).
pub(super) fn accept_listeners(img: &ImageSet) -> std::collections::HashSet<u32> {
    img.files
        .kind::<crate::net::inet::InetFiles>()
        .map(|i| i.accept_listeners())
        .unwrap_or_default()
}

/// The restore, in stages: check, make the shared objects, create and
/// build every task, the late phases, then let the tasks go.
pub(super) fn restore_loaded(
    mut img: ImageSet,
    opts: &Options,
    t0: Instant,
    mut server: Option<&mut crate::net::accept::AcceptServer>,
    mut cgroups: crate::cgroup::restore::Made,
) -> Result<RestoreOutcome, Error> {
    check_pids_free(&img)?;
    crate::dump::run_hook(opts, crate::Action::PreRestore, None)?;
    let tramp = trampoline_for(&img)?;
    let tty = terminal_for(&img, opts)?;
    let root_set = img
        .procs
        .first()
        .and_then(|p| p.live.as_ref())
        .and_then(|l| l.threads.first())
        .and_then(|t| crate::cgroup::restore::set_of(&t.core));
    img.cgns = cgroups.cgns_for_root(root_set)?;
    crate::util::progress::tasks_total(img.procs.len() as u64);
    crate::util::progress::stage("creating and building tasks");
    info!("every image checked: creating the tree's tasks");
    // Pipes, sockets... exist, full, before any task but the root does
    // (made by create_and_build once the root's namespaces are ready).
    let mut created = Created::default();
    let stops0 = crust_compel::stops_seen();
    let result = create_and_build(&mut img, opts, tramp, tty.as_deref(), &mut created);
    // Host pid of the root (differs from the image's in a new pid namespace).
    let root_pid = created
        .tasks
        .first()
        .and_then(|t| t.first())
        .map(|t| t.pid())
        .unwrap_or(0);
    let pages_restored = match result {
        Ok(n) => n,
        Err(e) => {
            created.kill_all();
            return Err(e);
        }
    };
    crate::util::progress::stage("late phases and resuming");
    if let Err(e) = run_late_phases(&img, opts, &mut created, server.as_deref_mut())
        .and_then(|()| verify_created(&img, &created.tasks))
        .and_then(|()| match &created.pin {
            Some(pin) => pin.release_tasks(&created.tasks),
            None => Ok(()),
        })
        .and_then(|()| move_into_cgroups(&img, &created.tasks, &cgroups))
    {
        created.kill_all();
        return Err(e);
    }
    // `--lazy-pages`: the lazy memory registered and the userfaultfds
    // handed to the daemon, every task still stopped.
    let mut handover = None;
    if opts.lazy_pages {
        match crate::lazy::hand_over(&created.lazy, &opts.work_dir()) {
            Ok(h) => handover = h,
            Err(e) => {
                created.kill_all();
                return Err(e);
            }
        }
    }
    // The daemon and its guard hold them now; crust keeps its copies
    // until the guard traces the tree (`lazy::Handover::released`): if the
    // daemon and the guard die meanwhile, the tree waits at its faults and
    // crust kills it.
    let uffds = std::mem::take(&mut created.lazy);
    // Past every check: what the kinds made on the file system (bound
    // socket files) stays; before this, dropping it removes it.
    match Arc::get_mut(&mut created.shared) {
        Some(s) => s.keep(),
        None => log::warn!("crust's descriptions are still shared: what they made is removed"),
    }
    // Every task holds its pipes now: crust lets go of its own ends (a
    // reader must see end-of-file once the writers it had are gone).
    drop(std::mem::take(&mut created.shared));
    let mut tasks = std::mem::take(&mut created.tasks);
    // crust's thread stays on its CPU while it lets the tasks go.
    let pin = created.pin.take();
    let pids: Vec<i32> = tasks
        .iter()
        .filter_map(|t| t.first().map(|t| t.pid()))
        .collect();
    logged_hook(opts, crate::Action::PreResume, root_pid);
    if let Err(e) = release_dead(&img, &mut tasks, tramp)
        .and_then(|()| release_live(&img, opts, &mut tasks, tramp, server))
    {
        drop(tasks);
        kill_released(&pids);
        return Err(e);
    }
    if let Some(Err(e)) = handover.map(crate::lazy::Handover::released) {
        kill_released(&pids);
        return Err(e);
    }
    drop(uffds);
    drop(pin);
    logged_hook(opts, crate::Action::PostResume, root_pid);
    created.ipc.keep();
    cgroups.keep();
    let restore_time_us = us_since(t0);
    info!(
        "Restored {} processes of tree {root_pid} in {restore_time_us} us ({pages_restored} pages, {} ptrace stops)",
        img.procs.len(),
        crust_compel::stops_seen().saturating_sub(stops0)
    );
    Ok(RestoreOutcome {
        root_pid,
        restore_time_us,
        pages_restored,
        waiter: None,
    })
}

/// Every task and thread into its cgroups (cgroup.img), before any runs:
/// a process as a whole, then a thread whose set is not its process's.
fn move_into_cgroups(
    img: &ImageSet,
    tasks: &[Vec<Task>],
    cg: &crate::cgroup::restore::Made,
) -> Result<(), Error> {
    use crate::cgroup::restore::set_of;
    for (p, made) in img.procs.iter().zip(tasks) {
        let Some(l) = &p.live else { continue };
        let main = l.threads.first().and_then(|t| set_of(&t.core));
        for (i, (th, t)) in l.threads.iter().zip(made).enumerate() {
            match (i, set_of(&th.core)) {
                (0, Some(s)) => cg.move_process(t.pid(), s)?,
                (_, Some(s)) if Some(s) != main => cg.move_thread(t.pid(), s)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Every task crust is about to report exists and is the one it made:
/// traced by this process, one per thread of the images, the root live.
/// (An image set that lies about its pids must not end in a pidfile
/// naming a process crust did not make.)
fn verify_created(img: &ImageSet, tasks: &[Vec<Task>]) -> Result<(), Error> {
    let me = process::getpid();
    let proc = ProcRoot::default();
    let lost = |pid: i32, what: String| Error::Restore { pid, what };
    if tasks.len() != img.procs.len() {
        return Err(lost(
            me,
            format!(
                "{} processes made for the {} of the images",
                tasks.len(),
                img.procs.len()
            ),
        ));
    }
    if img.procs.first().is_some_and(|p| p.live.is_none()) {
        return Err(lost(me, "the root process is not a live one".into()));
    }
    for (i, (p, made)) in img.procs.iter().zip(tasks).enumerate() {
        // A helper that made its children for the init is gone already.
        let gone = img.sessions.exits_early(i);
        let want = p
            .live
            .as_ref()
            .map_or(usize::from(!gone), |l| l.threads.len());
        if made.len() != want {
            return Err(lost(
                p.pid(),
                format!(
                    "process {}: {} tasks made for {want} threads",
                    p.entry.pid,
                    made.len()
                ),
            ));
        }
        for t in made {
            let tid = t.pid();
            let tracer = crust_proc::status(&proc, tid).map(|s| s.tracer_pid);
            if tid <= 0 || tracer.as_ref().ok() != Some(&me) {
                return Err(lost(
                    p.pid(),
                    format!(
                        "task {tid} made for process {} is gone or no longer crust's (tracer {tracer:?})",
                        p.entry.pid
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The release failed part way: some processes run already, others are
/// still crust's. Every process of the tree goes (`pids`: host pids, the
/// root first). The root is crust's child, so its pid cannot be reused
/// before crust reaps it: it is killed last and reaped.
fn kill_released(pids: &[i32]) {
    for &pid in pids.iter().skip(1).rev() {
        let _ = process::kill(pid, libc::SIGKILL);
    }
    if let Some(&root) = pids.first() {
        let _ = process::kill(root, libc::SIGKILL);
        let _ = process::waitpid(root, 0);
    }
}

/// The recorded pids must be free (in a new pid namespace they cannot
/// clash with ours).
pub(super) fn check_pids_free(img: &ImageSet) -> Result<(), Error> {
    for p in img.procs.iter().filter(|_| !img.new_pidns) {
        wait_zombie_gone(p.pid());
        if Path::new(&format!("/proc/{}", p.pid())).exists() {
            return Err(pid_taken(p.pid()));
        }
        for t in p.live.iter().flat_map(|l| l.threads.iter()) {
            if Path::new(&format!("/proc/{}", t.tid)).exists() {
                return Err(pid_taken(t.tid));
            }
        }
    }
    Ok(())
}

/// An address for the restore trampoline, free in crust and every image.
pub(super) fn trampoline_for(img: &ImageSet) -> Result<u64, Error> {
    let proc = ProcRoot::default();
    let me = process::getpid();
    let own_maps = crust_proc::maps(&proc, me).map_err(crate::util::proc_err(me))?;
    let mms: Vec<&MmEntry> = img
        .procs
        .iter()
        .filter_map(|p| p.live.as_ref())
        .map(|l| &l.mm)
        .collect();
    let tramp = pick_trampoline(&own_maps, &mms).ok_or_else(|| Error::Restore {
        pid: img.procs.first().map_or(0, |p| p.pid()),
        what: "no free address range for the restore trampoline".into(),
    })?;
    debug!("trampoline at {tramp:#x}");
    Ok(tramp)
}

/// The terminal that replaces the recorded one (--shell-job); an error
/// when a task had an fd on a terminal and there is none to give.
pub(super) fn terminal_for(img: &ImageSet, opts: &Options) -> Result<Option<String>, Error> {
    let tty = if opts.shell_job { own_tty() } else { None };
    if tty.is_none() {
        let on_tty = img
            .procs
            .iter()
            .filter_map(|p| Some((p.pid(), p.live.as_ref()?.files.terminal_fd()?)))
            .next();
        if let Some((pid, (fd, name))) = on_tty {
            return Err(Error::Restore {
                pid,
                what: format!(
                    "its fd {fd} was on the terminal {name}, and this crust has no terminal on fds 0-2 to give it (run crust restore -j from a terminal)"
                ),
            });
        }
    }
    Ok(tty)
}

/// Every task is built: the kinds of file take their late steps, phase
/// by phase (see [`Phase`]).
fn run_late_phases(
    img: &ImageSet,
    opts: &Options,
    created: &mut Created,
    server: Option<&mut crate::net::accept::AcceptServer>,
) -> Result<(), Error> {
    let host_of = created.host_pids(img);
    let host_pid = |pid: u32| host_of.get(&pid).copied();
    let root = img.procs.first().and_then(|p| host_pid(p.entry.pid));
    let mut ctx = PhaseCtx {
        host_pid: &host_pid,
        accept_server: server.map(|s| s as &mut dyn std::any::Any),
    };
    for phase in Phase::LATE {
        if phase == Phase::NetworkUp {
            // CRIU's post-restore action: every task built, none running,
            // the network still locked; then network-unlock for a tree
            // with a network namespace of its own.
            crate::dump::run_hook(opts, crate::Action::PostRestore, root)?;
            if img.ns.own(crate::ns::ids::NsKind::Net) {
                if let Some(pid) = root {
                    logged_hook(opts, crate::Action::NetworkUnlock, pid);
                }
            }
        }
        debug!("restore phase {phase:?}");
        created.shared_mut()?.run(phase, &img.files, &mut ctx)?;
    }
    // An external network namespace keeps the dump's lock (it outlived
    // the tree): lifted now, connections or not (the TCP connections'
    // own step lifted it already if there were any; lifting twice is
    // harmless).
    if let Some(ns) = img.ns.external_net() {
        crate::net::netlock::unlock_netns(img.netlock, ns, &[])?;
    }
    Ok(())
}

/// Run the hook of `action`, whose failure CRIU only logs.
fn logged_hook(opts: &Options, action: crate::Action, root_pid: i32) {
    if let Err(e) = crate::dump::run_hook(opts, action, Some(root_pid)) {
        log::error!("{e}");
    }
}

/// Zombies die (children before parents), and helpers are reaped by
/// their parents.
fn release_dead(img: &ImageSet, tasks: &mut [Vec<Task>], tramp: u64) -> Result<(), Error> {
    let index: HashMap<u32, usize> = img
        .procs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.entry.pid, i))
        .collect();
    for (i, p) in img.procs.iter().enumerate().rev() {
        if p.live.is_some() || img.sessions.exits_early(i) {
            continue;
        }
        if let Some(t) = tasks.get_mut(i).and_then(|t| t.pop()) {
            let pid = t.pid();
            zombie_exit(t, p.exit_code, tramp).map_err(|source| Error::Compel { pid, source })?;
        }
        if p.helper {
            // Its parent reaps it, as if it had waited for it.
            let parent = index
                .get(&p.entry.ppid)
                .and_then(|&j| tasks.get_mut(j))
                .and_then(|t| t.first_mut())
                .ok_or_else(|| Error::Restore {
                    pid: p.pid(),
                    what: format!(
                        "helper {}: its parent {} has no task to reap it",
                        p.entry.pid, p.entry.ppid
                    ),
                })?;
            let mut r = Remote::on_trampoline(parent, tramp);
            r.call(
                &format!("wait4 for helper {}", p.entry.pid),
                libc::SYS_wait4,
                [p.entry.pid as u64, 0, libc::__WALL as u64, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// Helper `i` has made its children: it exits and its parent (the
/// process that made it) reaps it, so that they go to the init now.
pub(super) fn exit_helper_now(
    img: &ImageSet,
    i: usize,
    created: &mut Created,
    tramp: u64,
) -> Result<(), Error> {
    let (pid, by) = match (img.procs.get(i), img.sessions.creator(i)) {
        (Some(p), Some(by)) => (p.pid(), by),
        _ => {
            return Err(Error::Restore {
                pid: 0,
                what: format!("helper {i} is not in the image set"),
            })
        }
    };
    if let Some(t) = created.tasks.get_mut(i).and_then(|t| t.pop()) {
        zombie_exit(t, 0, tramp).map_err(|source| Error::Compel { pid, source })?;
    }
    let ppid = img.procs.get(by).map(|p| p.pid()).unwrap_or(0);
    let mut r = Remote::on_trampoline(created.main_of(by, ppid)?, tramp);
    r.call(
        &format!("wait4 for helper {pid}"),
        libc::SYS_wait4,
        [pid as u64, 0, libc::__WALL as u64, 0, 0, 0],
    )?;
    Ok(())
}

/// The live tasks get their registers, children before parents, the
/// root last. Processes holding a listener whose queued connections are
/// to be handed over stay traced (see [`crate::net::accept`]).
///
/// In two rounds: every task's final state is loaded first (the
/// trampoline's munmap, registers, XSAVE area, mask), all of them still
/// stopped and traced, then they are let go in one loop of
/// PTRACE_DETACH. A crust killed during the first round leaves no task
/// of the tree running (PTRACE_O_EXITKILL); for a kill inside the second
/// round, a [`KillSwitch`] armed before it kills every process of the tree
/// (those let go may have run for a moment). All of the tree or none.
fn release_live(
    img: &ImageSet,
    opts: &Options,
    tasks: &mut [Vec<Task>],
    tramp: u64,
    mut server: Option<&mut crate::net::accept::AcceptServer>,
) -> Result<(), Error> {
    /// How a loaded task is let go.
    enum Go {
        Detach(Option<i32>),
        Traced,
    }
    let listeners = accept_listeners(img);
    let mut loaded: Vec<(Loaded, Go)> = Vec::with_capacity(tasks.len());
    let mut mains = Vec::with_capacity(tasks.len());
    let compel = |pid: i32| move |source| Error::Compel { pid, source };
    for (i, p) in img.procs.iter().enumerate().rev() {
        let Some(live) = &p.live else { continue };
        let no_task = |what: &str| Error::Restore {
            pid: p.pid(),
            what: format!("live process without {what}"),
        };
        let ti = live
            .threads
            .first()
            .ok_or_else(|| no_task("a main thread image"))?;
        // A stopped task stops again by the signal that stopped it (CRIU's
        // stop_signo; SIGSTOP if the image has none).
        let tc = ti.core.tc.as_ref();
        let stop = if tc.map(|t| t.task_state) == Some(task_state::STOPPED) {
            let sig = tc.and_then(|t| t.stop_signo).unwrap_or(0) as i32;
            Some(if is_stop_signal(sig) {
                sig
            } else {
                libc::SIGSTOP
            })
        } else {
            opts.leave_stopped.then_some(libc::SIGSTOP)
        };
        let traced = server.is_some()
            && stop.is_none()
            && live.files.fds.iter().any(|f| listeners.contains(&f.id));
        let go = || if traced { Go::Traced } else { Go::Detach(stop) };
        let threads = tasks.get_mut(i).map(std::mem::take).unwrap_or_default();
        let mut it = threads.into_iter();
        let main = it.next().ok_or_else(|| no_task("a main task"))?;
        for (t, ti) in it.zip(live.threads.iter().skip(1)) {
            let tid = t.pid();
            let (regs, mask) = final_regs(&ti.core, tid)?;
            let l = t
                .load_final_state(&regs, Some(&ti.xstate), mask)
                .map_err(compel(tid))?;
            loaded.push((l, go()));
        }
        let pid = main.pid();
        let (regs, mask) = final_regs(&ti.core, pid)?;
        let l = main
            .unmap_and_load(RemoteAddr(tramp), TRAMP_SIZE, &regs, Some(&ti.xstate), mask)
            .map_err(compel(pid))?;
        loaded.push((l, go()));
        mains.push(pid);
    }
    // Several processes: a kill switch first, so that a crust killed
    // inside the loop below takes the tree along (one process needs none:
    // a thread still traced takes its whole process along when crust
    // dies, by PTRACE_O_EXITKILL).
    let t0 = Instant::now();
    let switch = if mains.len() > 1 {
        Some(arm_switch(&mains)?)
    } else {
        None
    };
    let armed_us = t0.elapsed().as_micros();
    let t0 = Instant::now();
    let n = loaded.len();
    let fifo = Realtime::enter();
    for (l, go) in loaded {
        let pid = l.pid();
        match (go, server.as_deref_mut()) {
            (Go::Traced, Some(sv)) => sv.tasks.push(l.run_traced().map_err(compel(pid))?),
            (Go::Traced, None) => l.detach(None).map_err(compel(pid))?,
            (Go::Detach(stop), _) => l.detach(stop).map_err(compel(pid))?,
        }
    }
    drop(fifo);
    log::debug!(
        "{n} tasks let go in {} us (the kill switch armed in {armed_us} us)",
        t0.elapsed().as_micros()
    );
    if let Some(k) = switch {
        let pid = k.pid();
        k.disarm().map_err(|e| Error::Restore {
            pid,
            what: format!("disarming the kill switch of the tree's release: {e}"),
        })?;
    }
    Ok(())
}

/// A [`KillSwitch`] for the processes `pids` (their main tasks): it kills
/// them all if crust dies before it is disarmed.
fn arm_switch(pids: &[i32]) -> Result<KillSwitch, Error> {
    let fds = pids
        .iter()
        .map(|&pid| {
            crust_sys::unix::pidfd_open(pid).map_err(|e| Error::Restore {
                pid,
                what: format!("pidfd_open for the kill switch of the tree's release: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    KillSwitch::arm(&borrowed).map_err(|e| Error::Restore {
        pid: process::getpid(),
        what: format!("making the kill switch of the tree's release: {e}"),
    })
}

/// The calling thread at a real-time priority (SCHED_FIFO 1) while it
/// lets the loaded tasks go, back to its policy when dropped: a task let
/// go on crust's CPU then waits for the loop's end instead of taking the
/// CPU at once (20 tasks: about 10 us each as SCHED_OTHER), which keeps
/// the time in which a crust killed mid-loop leaves part of the tree
/// running as short as the PTRACE_DETACH calls themselves. Where the
/// priority cannot be had, the loop runs as it is.
struct Realtime(Option<(i32, i32)>);

impl Realtime {
    fn enter() -> Realtime {
        let was = process::sched_policy().ok();
        match was.map(|_| process::set_sched_policy(libc::SCHED_FIFO, 1)) {
            Some(Ok(())) => Realtime(was),
            Some(Err(e)) => {
                log::debug!("no real-time priority to let the tasks go ({e})");
                Realtime(None)
            }
            None => Realtime(None),
        }
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        if let Some((policy, prio)) = self.0 {
            if let Err(e) = process::set_sched_policy(policy, prio) {
                log::warn!("cannot put crust's scheduling policy back: {e}");
            }
        }
    }
}

/// The signals that put a task in a job-control stop.
fn is_stop_signal(sig: i32) -> bool {
    [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
}

pub(super) fn final_regs(
    core: &CoreEntry,
    pid: i32,
) -> Result<(crust_sys::ptrace::UserRegs, u64), Error> {
    let ti = core.thread_info.as_ref().ok_or_else(|| Error::Restore {
        pid,
        what: "its core image has no thread_info (checked at load)".into(),
    })?;
    let regs = task::regs_from_image(&ti.gpregs);
    let mask = core
        .thread_core
        .as_ref()
        .and_then(|t| t.blk_sigset)
        .or(core.tc.as_ref().map(|t| t.blk_sigset))
        .unwrap_or(0);
    Ok((regs, mask))
}

/// Make a created task die the way the image's zombie did.
pub(super) fn zombie_exit(t: Task, status: u32, tramp: u64) -> Result<(), crust_compel::Error> {
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        return t.exit_as_zombie(((status >> 8) & 0xff) as i32);
    }
    // Killed by a signal: no core file, default action, unblocked.
    let pid = t.pid();
    let _ = process::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0);
    t.die_by_signal(sig, RemoteAddr(tramp + PAGE_SIZE))
}
