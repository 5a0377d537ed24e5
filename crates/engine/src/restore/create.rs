// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;

/// The ptrace options of every task a restore makes (the root's, which
/// the tasks it begets inherit).
pub(super) const TRACE_OPTS: u64 =
    popt::EXITKILL | popt::TRACESYSGOOD | popt::TRACEFORK | popt::TRACECLONE;

/// Create every process and thread, then build each one.
pub(super) fn create_and_build(
    img: &mut ImageSet,
    opts: &Options,
    tramp: u64,
    tty: Option<&str>,
    created: &mut Created,
) -> Result<u64, Error> {
    // The page filler's threads before crust pins itself: they fill on
    // every CPU.
    let filler = mem::Filler::new();
    let root = create_root(img, opts, tramp)?;
    let root_host = root.pid();
    created.pin = pin::Pin::start(root_host);
    // The root's new namespaces are filled before anything uses them.
    let ctx = crate::ns::tree::LoadCtx {
        dir: &img.dir,
        opts,
    };
    created.tasks = (0..img.procs.len()).map(|_| Vec::new()).collect();
    created.tasks_of(0, root_host)?.push(root);
    // CRIU's setup-namespaces action: the root's namespaces exist, still
    // empty (a runtime sets up the network of a new one here). As in CRIU,
    // only for a tree with namespaces of its own (CRIU's root_ns_mask).
    let own_ns = crate::ns::ids::NsKind::ALL
        .into_iter()
        .any(|k| img.ns.own(k));
    if own_ns {
        crate::dump::run_hook(opts, crate::Action::SetupNamespaces, Some(root_host))?;
    }
    img.ns.prepare(&ctx, root_host)?;
    if own_ns {
        crate::dump::run_hook(opts, crate::Action::PostSetupNamespaces, None)?;
    }
    // The tree's paths, once its mount namespace is made, are opened by
    // crust through its root (files held by several tasks, FIFOs...).
    let _view = crate::util::view::for_dump(root_host);
    let root = created
        .tasks
        .first_mut()
        .and_then(|t| t.first_mut())
        .ok_or_else(|| Error::Restore {
            pid: root_host,
            what: "the root task is not there".into(),
        })?;
    root.use_trapping_syscall_ip(RemoteAddr(tramp));
    root.set_options(TRACE_OPTS)
        .map_err(|source| Error::Compel {
            pid: root_host,
            source,
        })?;
    img.ns
        .settle_root(&mut Remote::on_trampoline(root, tramp))?;
    memory::make_mnt_subs(img, root, tramp)?;
    // Pipes, sockets... exist, full, before any other task does; sockets
    // in the tree's own network namespace when it has one (made, or
    // joined with --join-ns).
    let net = crate::ns::ids::NsKind::Net;
    created.shared = Arc::new(if img.ns.own(net) || img.ns.joined().joins(net) {
        crate::net::in_netns_of(root_host, img.ns.net_files(), || img.files.open())?
    } else {
        img.files.open()?
    });
    let img = &*img;
    set_session(img, 0, opts, created, tramp)?;
    // System V objects exist before any task maps them.
    if let Some(ns) = &img.ipcns {
        let root = created.tasks.first_mut().and_then(|t| t.first_mut());
        let root = root.ok_or_else(|| Error::Restore {
            pid: root_host,
            what: "the root task is not there to make the System V objects".into(),
        })?;
        ns.create(root, tramp, &mut created.ipc)?;
    }

    // Then depth first: a process's memory is built before it begets its
    // children, so they start from it (and could inherit what they share).
    let mut pages = 0;
    let b = Build {
        img,
        opts,
        tramp,
        tty,
        filler: &filler,
    };
    match split::plan(img, opts, created.pin.as_ref()) {
        Some(plan) => split::grow_split(b, created, &mut pages, plan)?,
        None => grow(b, 0, created, &mut pages)?,
    }
    if let Some(ns) = &img.ipcns {
        ns.finish(root_host)?;
    }
    debug!("every process built: {} stops", crust_compel::stops_seen());
    tree_wide_files(img, created, tramp)?;
    debug!("tree-wide files: {} stops", crust_compel::stops_seen());
    for (i, p) in img.procs.iter().enumerate() {
        if let Some(live) = &p.live {
            let armed = created.armed.contains(&i);
            build_creds(
                created.tasks_of(i, p.pid())?,
                live,
                tramp,
                &img.seccomp,
                (i == 0, armed),
            )?;
        }
    }
    debug!("credentials: {} stops", crust_compel::stops_seen());
    Ok(pages)
}

/// The exit status of a root that could not join a namespace of
/// `--join-ns`.
const JOIN_FAILED: i32 = 73;
/// The exit status of a root that could not make its cgroup namespace.
const CGNS_FAILED: i32 = 74;

/// In the newly cloned root (async-signal-safe): join the namespaces of
/// `--join-ns`, then make its cgroup namespace; on failure, the exit
/// status that says which.
fn enter_namespaces(img: &ImageSet) -> Result<(), i32> {
    img.ns.joined().enter().map_err(|_| JOIN_FAILED)?;
    match &img.cgns {
        Some(c) => c.enter().map_err(|_| CGNS_FAILED),
        None => Ok(()),
    }
}

/// The error of a root that exited with `code` from [`enter_namespaces`].
fn namespaces_refused(img: &ImageSet, root_pid: i32, code: i32) -> Error {
    let what = if code == CGNS_FAILED {
        "the root could not make its cgroup namespace (enter the namespace's root cgroup, then unshare CLONE_NEWCGROUP): see cgroup.img's cgns_prefix and --manage-cgroups".to_string()
    } else {
        format!(
            "the root could not join the namespaces given with --join-ns ({}): setns was refused",
            img.ns.joined().describe()
        )
    };
    Error::Restore {
        pid: root_pid,
        what,
    }
}

/// Create the tree's root process with its recorded pid (in new pid and
/// IPC namespaces if the tree had its own), the trampoline mapped, stopped
/// and traced (or seized, with --restore-sibling).
fn create_root(img: &ImageSet, opts: &Options, tramp: u64) -> Result<Task, Error> {
    let root_pid = img
        .procs
        .first()
        .ok_or_else(|| Error::unsupported("the images hold no process".to_string()))?
        .pid();
    let me = process::getpid();
    let clone_flags = if img.new_pidns {
        libc::CLONE_NEWPID as u64
    } else {
        0
    };
    let clone_flags = clone_flags
        | if img.ipcns.as_ref().is_some_and(|n| n.own_namespace()) {
            libc::CLONE_NEWIPC as u64
        } else {
            0
        }
        | img.ns.clone_flags();
    // The root: a child of crust. Signals stay blocked in it (and in all
    // the tasks it begets) until their own masks are loaded at the end.
    let old_mask = process::block_all_signals().map_err(sys_err(me, "sigprocmask"))?;
    // --restore-sibling: the root becomes crust's sibling (a child of
    // crust's parent, as runc wants); crust then seizes it instead of
    // tracing it as its parent.
    let sibling = opts.restore_sibling;
    let clone_flags = clone_flags
        | if sibling {
            libc::CLONE_PARENT as u64
        } else {
            0
        };
    // The tree's own time namespace: the root is born in it.
    let time_ns = match img.ns.time_for_root() {
        Ok(t) => t,
        Err(e) => {
            let _ = process::set_signal_mask(&old_mask);
            return Err(e);
        }
    };
    // crust itself, watched by the root until it is traced with
    // EXITKILL: a crust killed in between must not leave it behind.
    let me_fd = if sibling {
        None
    } else {
        match crust_sys::unix::pidfd_open(me) {
            Ok(fd) => Some(fd),
            Err(e) => {
                let _ = process::set_signal_mask(&old_mask);
                return Err(Error::Sys {
                    pid: me,
                    op: "pidfd_open of crust itself".into(),
                    source: e,
                });
            }
        }
    };
    let forked = process::clone3_fork(&[root_pid], clone_flags);
    let root_host = match forked {
        Ok(ForkResult::Child) => root_child(img, tramp, sibling, me_fd.as_ref()),
        Ok(ForkResult::Parent { child }) => {
            let _ = process::set_signal_mask(&old_mask);
            drop(me_fd);
            if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "die-after-root-clone") {
                // A crust killed before it traces the root (tests).
                let _ = process::kill(me, libc::SIGKILL);
            }
            // The root is born: crust's later children need not be in its
            // time namespace, but nothing breaks if they stay.
            if let Some(Err(e)) = time_ns.map(|t| t.leave()) {
                log::warn!("crust's children stay in the tree's time namespace: {e}");
            }
            child
        }
        Err(e) => {
            let _ = process::set_signal_mask(&old_mask);
            drop(time_ns);
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Err(pid_taken(root_pid));
            }
            if img.new_pidns {
                return Err(Error::Sys {
                    pid: root_pid,
                    op: "creating the tree's pid namespace (clone3 with CLONE_NEWPID) was refused"
                        .into(),
                    source: e,
                });
            }
            return Err(Error::Sys {
                pid: root_pid,
                op: "clone3 with the recorded pid".into(),
                source: e,
            });
        }
    };
    let adopted = if sibling {
        if img.new_pidns {
            stop_sibling_init(root_host, tramp);
        }
        seize_stopped_sibling(root_host)
    } else {
        Task::adopt_stopped_child(root_host)
    };
    let root = match adopted {
        Ok(t) => t,
        Err(crust_compel::Error::UnexpectedStop {
            status: process::WaitStatus::Exited(code @ (JOIN_FAILED | CGNS_FAILED)),
            ..
        }) => return Err(namespaces_refused(img, root_pid, code)),
        Err(source) => {
            let _ = process::kill(root_host, libc::SIGKILL);
            let _ = process::waitpid(root_host, 0);
            return Err(Error::Compel {
                pid: root_host,
                source,
            });
        }
    };
    Ok(root)
}

/// The root's side of `create_root`, in the child of the clone
/// (async-signal-safe work only): enter the namespaces, map the
/// trampoline, be traced (not with --restore-sibling: crust seizes it)
/// and stop. Never returns.
fn root_child(
    img: &ImageSet,
    tramp: u64,
    sibling: bool,
    crust: Option<&std::os::fd::OwnedFd>,
) -> ! {
    if let Err(status) = enter_namespaces(img) {
        process::exit_now(status);
    }
    // Killed with crust from here on (entering a user namespace may have
    // reset an earlier death signal); gone already if crust died since
    // the clone. The parent-death signal is set to the recorded one once
    // the tree's creds are set (EXITKILL covers it by then:
    // build::build_creds).
    if let Some(fd) = crust {
        if process::die_with_parent(std::os::fd::AsFd::as_fd(fd)).is_err() {
            process::exit_now(75);
        }
    }
    if process::map_trampoline(tramp, TRAMP_SIZE, &crust_compel::TRAMPOLINE_CODE).is_err() {
        process::exit_now(70);
    }
    if !sibling && crust_sys::ptrace::traceme().is_err() {
        process::exit_now(71);
    }
    process::stop_self();
    if sibling && img.new_pidns {
        // The init of a new pid namespace, untraced, ignores its own
        // SIGSTOP: crust stops it from outside (create_root).
        loop {
            process::stop_self();
        }
    }
    process::exit_now(72);
}

/// What needs every fd of the tree open: controlling terminals, file
/// locks, and file owners.
fn tree_wide_files(img: &ImageSet, created: &mut Created, tramp: u64) -> Result<(), Error> {
    // Every mount namespace is made: crust's fds on propagating mounts go.
    img.ns.mnt_tree_made();
    // Descriptions that name processes of the tree (pidfds), now that
    // every one exists.
    let host_of = created.host_pids(img);
    created
        .shared_mut()?
        .make_late(&|pid| host_of.get(&pid).copied())?;
    for (i, p) in img.procs.iter().enumerate() {
        let Some(live) = &p.live else { continue };
        if live.files_from_parent || !live.files.fds.iter().any(|f| created.shared.late(f.id)) {
            continue;
        }
        let Created { tasks, shared, .. } = &mut *created;
        let task = tasks
            .get_mut(i)
            .and_then(|t| t.first_mut())
            .ok_or_else(|| Error::Restore {
                pid: p.pid(),
                what: "its main thread was not created".into(),
            })?;
        let mut r = Remote::on_trampoline(task, tramp);
        live.files.give_late(&mut r, shared)?;
    }
    // Controlling terminals on the tree's ptys, once every fd is open.
    for (i, p) in img.procs.iter().enumerate() {
        let Some(live) = &p.live else { continue };
        let ptys = img.files.kind::<crate::files::pty::Ptys>();
        if let Some((fd, pgrp)) = ptys.and_then(|t| t.ctty_of(p.pid(), &live.files.fds)) {
            let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
            crate::files::ctty::set_ctty(&mut r, fd, pgrp)?;
        } else if let Some((master, pgrp)) =
            ptys.and_then(|t| t.ctty_lent(p.pid(), &live.files.fds))
        {
            // The leader holds no fd on its terminal: one is lent to it.
            let spare = live
                .files
                .fds
                .iter()
                .map(|f| f.fd as i32)
                .max()
                .unwrap_or(2)
                + 1;
            let m = created.shared.get(master).ok_or_else(|| Error::Restore {
                pid: p.pid(),
                what: format!(
                    "the pty master (file {master}) of its controlling terminal was not made"
                ),
            })?;
            let m = m
                .try_clone_to_owned()
                .map_err(crate::util::sys_err(p.pid(), "dup of a pty master"))?;
            let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
            crate::files::ctty::set_ctty_lent(&mut r, std::os::fd::AsFd::as_fd(&m), spare, pgrp)?;
        }
    }
    // Fds on /dev/tty, once the controlling terminals are set.
    for (i, p) in img.procs.iter().enumerate() {
        let Some(live) = &p.live else { continue };
        let ptys = img.files.kind::<crate::files::pty::Ptys>();
        let fds = ptys
            .map(|t| t.ctty_fds(&live.files.fds))
            .unwrap_or_default();
        if fds.is_empty() || live.files_from_parent {
            continue;
        }
        let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
        crate::files::ctty::open_ctty_fds(&mut r, &fds)?;
    }
    // File locks, once every fd of the tree is open.
    for (i, p) in img.procs.iter().enumerate() {
        if p.live.is_some() && !img.locks.is_empty() {
            let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
            img.locks.apply(&mut r, p.pid())?;
        }
    }
    // Owners of the files (F_SETOWN_EX, F_SETSIG), once every task the
    // owners are exists, and after the leases (which set the owner too);
    // O_ASYNC set again in the task, so its signals name the task's fd.
    for (i, p) in img.procs.iter().enumerate() {
        let Some(live) = &p.live else { continue };
        if img.owners.is_empty() || live.files_from_parent {
            continue;
        }
        let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
        img.owners.apply(&mut r, &live.files.fds)?;
    }
    Ok(())
}

impl Created {
    /// The tasks of process `i` (`pid` in the images), checked.
    pub(super) fn tasks_of(&mut self, i: usize, pid: i32) -> Result<&mut Vec<Task>, Error> {
        self.tasks.get_mut(i).ok_or_else(|| Error::Restore {
            pid,
            what: format!("process {i} of the tree was not created"),
        })
    }

    /// The main thread of process `i` (`pid` in the images), checked.
    pub(super) fn main_of(&mut self, i: usize, pid: i32) -> Result<&mut Task, Error> {
        self.tasks_of(i, pid)?
            .first_mut()
            .ok_or_else(|| Error::Restore {
                pid,
                what: "its main thread was not created".into(),
            })
    }
}

/// Wait until a root made with CLONE_PARENT has stopped itself, then seize
/// it (it is not crust's child, so it cannot ask crust to trace it).
/// The root made as crust's sibling (`--restore-sibling`, runc's restore)
/// as the init of a new pid namespace ignores its own SIGSTOP, being
/// untraced: once its trampoline is in place (read back from its memory),
/// crust, in the parent namespace, stops it with one.
fn stop_sibling_init(pid: i32, tramp: u64) {
    let mut code = [0u8; SYSCALL_INSN.len()];
    for _ in 0..50_000 {
        match crust_sys::mem::read(pid, RemoteAddr(tramp), &mut code) {
            Ok(n) if n == code.len() && code == SYSCALL_INSN => break,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
            _ => std::thread::sleep(std::time::Duration::from_micros(200)),
        }
    }
    let _ = process::kill(pid, libc::SIGSTOP);
}

pub(super) fn seize_stopped_sibling(pid: i32) -> crust_compel::Result<Task> {
    let proc = ProcRoot::default();
    for _ in 0..5000 {
        match crust_proc::stat(&proc, pid) {
            Ok(st) if st.state == 'T' => break,
            Ok(st) if st.state == 'Z' || st.state == 'X' => break,
            _ => std::thread::sleep(std::time::Duration::from_micros(200)),
        }
    }
    Task::seize(pid, std::time::Duration::from_secs(10))
}

/// Run clone3 inside `parent` asking for id `tid`; returns the new task.
pub(super) fn remote_clone(
    parent: &mut Task,
    tramp: u64,
    tid: i32,
    flags: u64,
    exit_signal: u64,
) -> Result<Task, Error> {
    let ppid = parent.pid();
    let scratch = tramp + PAGE_SIZE;
    let args_addr = scratch + CLONE_ARGS_OFF;
    let tid_addr = args_addr + 128;
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let words = [flags, 0, 0, 0, exit_signal, 0, 0, 0, tid_addr, 1, 0];
    let mut buf: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    buf.resize(128, 0);
    buf.extend_from_slice(&tid.to_le_bytes());
    let n = crust_sys::mem::write(ppid, RemoteAddr(args_addr), &buf)
        .map_err(sys_err(ppid, "process_vm_writev of clone3 arguments"))?;
    if n != buf.len() {
        return Err(Error::Restore {
            pid: ppid,
            what: "short write of clone3 arguments".into(),
        });
    }
    let (r, host) = parent
        .syscall_clone(libc::SYS_clone3, [args_addr, 88, 0, 0, 0, 0])
        .map_err(|source| Error::Compel { pid: ppid, source })?;
    if r < 0 {
        if r == -(libc::EEXIST as i64) {
            return Err(pid_taken(tid));
        }
        return Err(Error::Sys {
            pid: ppid,
            op: format!("clone3 for id {tid} (in the task)"),
            source: std::io::Error::from_raw_os_error(-r as i32),
        });
    }
    if r != tid as i64 {
        return Err(Error::Restore {
            pid: ppid,
            what: format!("clone3 gave id {r}, not {tid}"),
        });
    }
    let host = host.ok_or_else(|| Error::Restore {
        pid: ppid,
        what: format!("clone3 for id {tid} reported no new task"),
    })?;
    let mut t =
        Task::adopt_new_child(host).map_err(|source| Error::Compel { pid: host, source })?;
    t.use_trapping_syscall_ip(RemoteAddr(tramp));
    Ok(t)
}

/// Give process `i` its session and process group, right after it was
/// created and before it creates children (who inherit them); a process
/// that calls setsid late (see [`super::sessions`]) gets them from
/// [`set_session_now`] once its children born in its first session exist.
pub(super) fn set_session(
    img: &ImageSet,
    i: usize,
    opts: &Options,
    created: &mut Created,
    tramp: u64,
) -> Result<(), Error> {
    if img.sessions.late_setsid(i) {
        return Ok(());
    }
    set_session_now(img, i, opts, created, tramp)
}

/// Give process `i` its session and group now (it may run again: what is
/// right already is left). A group whose leader is a helper not made yet
/// is joined once the helper is.
pub(super) fn set_session_now(
    img: &ImageSet,
    i: usize,
    opts: &Options,
    created: &mut Created,
    tramp: u64,
) -> Result<(), Error> {
    let e = &img
        .procs
        .get(i)
        .ok_or_else(|| Error::unsupported(format!("no process {i} in the images")))?
        .entry;
    let (pid, sid, pgid) = (e.pid as i32, e.sid as i32, e.pgid as i32);
    let leader = img.procs.iter().position(|p| p.entry.pid as i32 == pgid);
    let helper_to_come = leader.is_some_and(|l| {
        img.procs.get(l).is_some_and(|p| p.helper)
            && created.tasks.get(l).is_none_or(|t| t.is_empty())
    });
    let t = created.main_of(i, pid)?;
    let mut r = Remote::on_trampoline(t, tramp);
    // What it inherited (both in one stop).
    let mut ask = crate::task::remote::Batch::new(r.batch_code);
    ask.push(&mut r, "getsid".into(), libc::SYS_getsid, [0; 6], None)?;
    ask.push(&mut r, "getpgid".into(), libc::SYS_getpgid, [0; 6], None)?;
    let got = ask.flush(&mut r)?;
    let (Some(&cur_sid), Some(&cur_pgid)) = (got.first(), got.get(1)) else {
        return Err(Error::Restore {
            pid,
            what: "getsid and getpgid gave no result".into(),
        });
    };
    let (cur_sid, cur_pgid) = (cur_sid as i32, cur_pgid as i32);
    if sid == pid {
        if cur_sid != pid {
            r.call("setsid", libc::SYS_setsid, [0; 6])?;
        }
    } else if sid != cur_sid && !(i == 0 && opts.shell_job) {
        if i == 0 {
            // The root's session leader is outside the tree; like CRIU,
            // it stays in crust's session (use --shell-job for a job).
            debug!("root {pid}: session {sid} is outside the tree, staying in {cur_sid}");
        } else {
            return Err(Error::unsupported(format!(
                "process {pid} is in session {sid}, but was born in {cur_sid}"
            )));
        }
    }
    let cur_pgid = if sid == pid && cur_sid != pid {
        pid
    } else {
        cur_pgid
    };
    if pgid != cur_pgid {
        if helper_to_come {
            debug!("{pid} joins group {pgid} once its helper is made");
        } else if leader.is_some() || pgid == pid {
            r.call(
                &format!("setpgid(0, {pgid})"),
                libc::SYS_setpgid,
                [0, pgid as u64, 0, 0, 0, 0],
            )?;
        } else if i != 0 {
            return Err(Error::unsupported(format!(
                "process {pid} is in process group {pgid}, whose leader is not in the tree"
            )));
        }
    }
    Ok(())
}

/// A process just killed by a dump may linger a moment as a zombie until
/// its parent reaps it: give that up to two seconds.
pub(super) fn wait_zombie_gone(pid: i32) {
    for _ in 0..200 {
        match crust_proc::stat(&ProcRoot::default(), pid) {
            Ok(st) if st.state == 'Z' || st.state == 'X' => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

/// The path of crust's own terminal, for --shell-job.
pub(super) fn own_tty() -> Option<String> {
    for fd in 0..3 {
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            let s = p.to_string_lossy().into_owned();
            if s.starts_with("/dev/pts/") || s.starts_with("/dev/tty") || s == "/dev/console" {
                return Some(s);
            }
        }
    }
    None
}

/// An address where [TRAMP_SIZE + VDSO_TEMP] is free both in crust (every
/// new task starts as a copy of it) and in every image.
pub(super) fn pick_trampoline(own: &[crust_proc::MapEntry], mms: &[&MmEntry]) -> Option<u64> {
    let need = TRAMP_SIZE + VDSO_TEMP;
    let mut busy: Vec<(u64, u64)> = own.iter().map(|m| (m.start, m.end)).collect();
    for mm in mms {
        busy.extend(mm.vmas.iter().map(|v| (v.start, v.end)));
    }
    // Leave room for stacks to grow and brk to extend: keep 1 MiB away.
    let guard = 1 << 20;
    let mut cand = 0x1_0000_0000u64;
    while cand + need < mem::TASK_SIZE {
        let clash = busy
            .iter()
            .any(|&(s, e)| cand < e + guard && s < cand + need + guard);
        if !clash {
            return Some(cand);
        }
        cand += 1 << 30;
    }
    None
}
