//! `crust restore`: rebuild a process tree from CRIU images.
//!
//! crust forks the root task with its recorded pid (clone3 with set_tid).
//! The child maps a small trampoline page holding a `syscall` instruction
//! at an address that is free both in crust and in every image, then stops
//! itself under ptrace. Every other process and thread of the tree is then
//! created by running clone3 (with its recorded id) inside its parent, so
//! parent/child links, sessions and groups come out as they were. Each new
//! task starts as a copy of crust with the trampoline, and crust builds it
//! from outside with remote syscalls: it unmaps everything inherited, moves
//! the vDSO to where the image has it, maps every VMA and reads the pages
//! into them, opens the files, restores signals, limits and credentials,
//! and finally unmaps the trampoline while loading the saved registers, so
//! each task returns straight into its old context.

use crate::events::EventFiles;
use crate::filelocks::RestoreLocks;
use crate::files::RestoreFiles;
use crate::mem::{self, PageRun};
use crate::pipes::{OpenShared, SharedFiles};
use crate::remote::Remote;
use crate::unix::UnixFiles;
use crate::util::{read_image, read_one, sys_err, us_since};
use crate::{task, xsave, Error, RestoreOptions, RestoreOutcome};
use crust_compel::{Task, SYSCALL_INSN};
use crust_images::consts::{task_state, vma as vs};
use crust_images::image::ImageType;
use crust_images::proto::core::{core_entry_march, CoreEntry, TaskKobjIdsEntry};
use crust_images::proto::fs::FsEntry;
use crust_images::proto::inventory::InventoryEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pstree::PstreeEntry;
use crust_proc::{MapKind, ProcRoot};
use crust_sys::process::{self, ForkResult};
use crust_sys::ptrace::options as popt;
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, info};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Trampoline: one code page plus scratch pages for remote syscall data.
const TRAMP_SIZE: u64 = 16 * PAGE_SIZE;
/// Room after the trampoline used to shuffle the vDSO.
const VDSO_TEMP: u64 = 64 * PAGE_SIZE;
/// Scratch offset of the clone3 arguments (the rest of the scratch area is
/// used by other calls, but never at the same time).
const CLONE_ARGS_OFF: u64 = 8 * PAGE_SIZE;

/// One thread of the image set.
struct ThreadImage {
    tid: i32,
    core: CoreEntry,
    xstate: Vec<u8>,
}

/// A live process of the image set.
struct LiveImage {
    threads: Vec<ThreadImage>,
    mm: MmEntry,
    fs: FsEntry,
    files: RestoreFiles,
    pages_id: u32,
    runs: Vec<PageRun>,
    pid_ns_id: Option<u32>,
    ids: TaskKobjIdsEntry,
    /// Its fd table is its parent's (CLONE_FILES): already built there.
    files_from_parent: bool,
}

/// One process of the image set.
struct ProcImage {
    entry: PstreeEntry,
    /// `None` for a zombie, whose exit status is `exit_code`, or a helper.
    live: Option<LiveImage>,
    exit_code: u32,
    /// A helper task: holds a session or group, begets its members, exits
    /// and is reaped by its parent.
    helper: bool,
}

impl ProcImage {
    fn pid(&self) -> i32 {
        self.entry.pid as i32
    }
}

/// Everything read (and checked) from the image set before anything is
/// created.
struct ImageSet {
    dir: PathBuf,
    procs: Vec<ProcImage>,
    /// The tree had a pid namespace of its own (its root is its init).
    new_pidns: bool,
    /// The tree's own IPC namespace, with its System V objects.
    ipcns: Option<crate::sysvipc::IpcNs>,
    /// Pipes and FIFOs, with their queued data.
    shared: SharedFiles,
    /// Event files (eventfd, signalfd, timerfd, epoll, inotify).
    events: EventFiles,
    /// Unix sockets and their queued messages.
    unix: UnixFiles,
    /// Inet sockets.
    inet: crate::inet::InetFiles,
    /// File locks to take again (--file-locks).
    locks: RestoreLocks,
    /// Owners (F_SETOWN) and signals (F_SETSIG) of the files, by id.
    owners: crate::fown::Owners,
    /// Files deleted while open, saved as ghost files.
    ghosts: crate::ghost::Ghosts,
    /// memfds the fds are on.
    memfds: crate::memfd::Memfds,
    /// Pty pairs the fds are on.
    ptys: crate::pty::Ptys,
    /// Packet sockets.
    packets: crate::packet::PacketFiles,
    /// Netlink sockets.
    netlinks: crate::netlink::NetlinkFiles,
    /// Files replaced by crust's own fds (`--inherit-fd`).
    inherited: crate::inherit::Inherited,
    /// How the dump locked the tree's TCP connections (inventory.img):
    /// what unlocks them once they are restored.
    #[allow(dead_code)] // read by the restore of TCP connections
    netlock: crate::netlock::Method,
}

fn bad(dir: &Path, why: impl Into<String>) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

fn load(opts: &RestoreOptions) -> Result<ImageSet, Error> {
    let dir = std::fs::canonicalize(&opts.images_dir).map_err(|source| Error::Io {
        op: "cannot open images directory",
        path: opts.images_dir.clone(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(bad(&dir, "not a directory"));
    }
    let inv: InventoryEntry = read_one(&dir, ImageType::Inventory, 0)?;
    if inv.img_version != crust_images::consts::CRTOOLS_IMAGES_V1_1 {
        return Err(bad(
            &dir,
            format!(
                "image version {} is not supported (expected {})",
                inv.img_version,
                crust_images::consts::CRTOOLS_IMAGES_V1_1
            ),
        ));
    }
    let netlock = crate::netlock::restore_method(inv.network_lock_method, opts.network_lock)
        .map_err(Error::NetLock)?;
    if inv.tcp_close == Some(true) && !opts.tcp_close {
        return Err(bad(
            &dir,
            "it was dumped with --tcp-close: restore it with --tcp-close too",
        ));
    }
    let tree: Vec<PstreeEntry> = read_image(&dir, ImageType::Pstree, 0)?;
    let inherited = crate::inherit::Inherited::resolve(&dir, &opts.inherit_fds)?;
    if tree.is_empty() {
        return Err(bad(&dir, "pstree.img holds no process"));
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut procs = Vec::with_capacity(tree.len());
    for (i, e) in tree.into_iter().enumerate() {
        let pid = e.pid as i32;
        if pid <= 0 || seen.insert(e.pid, i).is_some() {
            return Err(bad(
                &dir,
                format!("pstree.img has a bad or repeated pid {}", e.pid),
            ));
        }
        if i == 0 && e.ppid != 0 {
            debug!("root {} had parent {} outside the tree", e.pid, e.ppid);
        }
        if i > 0 && !seen.contains_key(&e.ppid) {
            return Err(bad(
                &dir,
                format!(
                    "pstree.img lists {} before its parent {} (or the parent is missing)",
                    e.pid, e.ppid
                ),
            ));
        }
        procs.push(load_proc(&dir, e, opts, &inherited)?);
    }
    share_with_parents(&dir, &mut procs)?;
    let mut shared = SharedFiles::load(&dir)?;
    shared.drop_inherited(&inherited);
    let events = EventFiles::load(&dir)?;
    events.check_fds(
        &dir,
        procs
            .iter()
            .filter_map(|p| Some((p.pid(), p.live.as_ref()?.files.fds.as_slice()))),
    )?;
    let unix = UnixFiles::load(&dir, opts.ext_unix_sk)?;
    let inet_ids: Vec<u32> = procs
        .iter()
        .filter_map(|p| p.live.as_ref())
        .flat_map(|l| l.files.fds.iter())
        .filter(|f| f.r#type == crust_images::proto::fdinfo::fd_types::INETSK)
        .map(|f| f.id)
        .collect();
    let inet = crate::inet::InetFiles::load(
        &dir,
        &inet_ids,
        opts.tcp_established,
        opts.tcp_close,
        netlock,
    )?;
    unix.check_fds(
        &dir,
        procs
            .iter()
            .filter_map(|p| Some((p.pid(), p.live.as_ref()?.files.fds.as_slice()))),
    )?;
    let locks = RestoreLocks::load(
        &dir,
        opts.file_locks,
        procs
            .iter()
            .filter_map(|p| Some((p.pid(), p.live.as_ref()?.files.fds.as_slice()))),
    )?;
    let owners = crate::fown::Owners::load(&dir)?;
    let ghosts = crate::ghost::Ghosts::load(&dir)?;
    let memfd_ids: Vec<u32> = procs
        .iter()
        .filter_map(|p| p.live.as_ref())
        .flat_map(|l| l.files.fds.iter())
        .filter(|f| f.r#type == crust_images::proto::fdinfo::fd_types::MEMFD)
        .map(|f| f.id)
        .collect();
    let memfds = crate::memfd::Memfds::load(&dir, &memfd_ids)?;
    let tty_ids: Vec<u32> = procs
        .iter()
        .filter_map(|p| p.live.as_ref())
        .flat_map(|l| l.files.fds.iter())
        .filter(|f| f.r#type == crust_images::proto::fdinfo::fd_types::TTY)
        .map(|f| f.id)
        .collect();
    let ptys = crate::pty::Ptys::load(&dir, &tty_ids)?;
    let packets = crate::packet::PacketFiles::load(&dir)?;
    let netlinks = crate::netlink::NetlinkFiles::load(&dir)?;
    ptys.check_sessions(procs.iter().map(|p| {
        let e = &p.entry;
        let fds = p.live.as_ref().map(|l| l.files.fds.as_slice());
        (e.pid as i32, e.sid as i32, e.pgid as i32, fds)
    }))?;
    let root_ns = inv.root_ids.as_ref().and_then(|r| r.pid_ns_id);
    let tree_ns = procs[0].live.as_ref().and_then(|l| l.pid_ns_id);
    let new_pidns = tree_ns.is_some() && root_ns.is_some() && tree_ns != root_ns;
    if new_pidns && procs[0].entry.pid != 1 {
        return Err(bad(
            &dir,
            format!(
                "the tree has a pid namespace of its own but its root is pid {}, not 1",
                procs[0].entry.pid
            ),
        ));
    }
    let ipcns = crate::sysvipc::load_for_tree(
        &dir,
        inv.root_ids.as_ref().and_then(|r| r.ipc_ns_id),
        procs.iter().filter_map(|p| {
            Some((
                p.pid(),
                p.live.as_ref()?.ids.ipc_ns_id,
                &p.live.as_ref()?.mm,
            ))
        }),
    )?;
    for p in &procs {
        if let Some(l) = &p.live {
            if l.pid_ns_id != tree_ns {
                return Err(Error::unsupported(format!(
                    "process {} is in another pid namespace than the root (nested pid namespaces)",
                    p.entry.pid
                )));
            }
        }
    }
    Ok(ImageSet {
        dir,
        procs,
        new_pidns,
        ipcns,
        shared,
        events,
        unix,
        inet,
        locks,
        owners,
        ghosts,
        memfds,
        ptys,
        packets,
        netlinks,
        inherited,
        netlock,
    })
}

fn load_proc(
    dir: &Path,
    entry: PstreeEntry,
    opts: &RestoreOptions,
    inherited: &crate::inherit::Inherited,
) -> Result<ProcImage, Error> {
    let pid = entry.pid as i32;
    let main: CoreEntry = read_one(dir, ImageType::Core, pid as u64)?;
    check_arch(dir, pid, &main)?;
    let tc = main
        .tc
        .as_ref()
        .ok_or_else(|| bad(dir, format!("core-{pid}.img has no task core")))?;
    if tc.task_state == task_state::HELPER {
        return Ok(ProcImage {
            exit_code: 0,
            entry,
            live: None,
            helper: true,
        });
    }
    if tc.task_state == task_state::DEAD || entry.threads.iter().all(|t| *t == 0) {
        return Ok(ProcImage {
            exit_code: tc.exit_code,
            entry,
            live: None,
            helper: false,
        });
    }
    if tc.task_state != task_state::ALIVE && tc.task_state != task_state::STOPPED {
        return Err(Error::unsupported(format!(
            "restoring task {pid} in state {:#x} (helper tasks are not supported yet)",
            tc.task_state
        )));
    }
    if entry.threads.first() != Some(&entry.pid) {
        return Err(bad(
            dir,
            format!("pstree.img: the first thread of {pid} is not {pid}"),
        ));
    }
    let mut threads = Vec::with_capacity(entry.threads.len());
    for (i, &tid) in entry.threads.iter().enumerate() {
        let core = if i == 0 {
            main.clone()
        } else {
            let c: CoreEntry = read_one(dir, ImageType::Core, tid as u64)?;
            check_arch(dir, tid as i32, &c)?;
            c
        };
        let ti = core
            .thread_info
            .as_ref()
            .ok_or_else(|| bad(dir, format!("core-{tid}.img has no x86 thread_info")))?;
        if ti.gpregs.mode.unwrap_or(1) != 1 {
            return Err(Error::unsupported("restoring 32-bit (compat) tasks"));
        }
        let xstate = xsave::xstate_from_fpregs(&ti.fpregs).map_err(|m| {
            bad(
                dir,
                format!("the image uses {} registers, which this CPU lacks", m.0),
            )
        })?;
        threads.push(ThreadImage {
            tid: tid as i32,
            core,
            xstate,
        });
    }
    let ids: TaskKobjIdsEntry = read_one(dir, ImageType::Ids, pid as u64)?;
    let mm: MmEntry = read_one(dir, ImageType::Mm, pid as u64)?;
    mem::validate_vmas(dir, &mm)?;
    let (pages_id, runs) = mem::load_pagemap(dir, pid, &mm)?;
    let fs: FsEntry = read_one(dir, ImageType::Fs, pid as u64)?;
    let files = RestoreFiles::load(dir, ids.files_id)?;
    // Every file the task needs must be there and unchanged.
    // (Not the files replaced by inherited fds.)
    let mut needed: Vec<u32> = files
        .fds
        .iter()
        .map(|f| f.id)
        .filter(|id| !inherited.contains(*id))
        .collect();
    for id in [mm.exe_file_id, fs.cwd_id, fs.root_id] {
        if !files.regs.contains_key(&id) {
            return Err(bad(
                dir,
                format!("file id {id} (exe, cwd or root of {pid}) is missing from files.img"),
            ));
        }
        needed.push(id);
    }
    for v in &mm.vmas {
        if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            needed.push(v.shmid as u32);
        }
    }
    needed.sort_unstable();
    needed.dedup();
    for id in needed {
        files.check(id, opts.shell_job)?;
    }
    Ok(ProcImage {
        entry,
        exit_code: 0,
        live: Some(LiveImage {
            threads,
            mm,
            fs,
            files,
            pages_id,
            runs,
            pid_ns_id: ids.pid_ns_id,
            ids,
            files_from_parent: false,
        }),
        helper: false,
    })
}

/// Kernel objects shared between processes can only be recreated by
/// inheriting them at clone time: from the parent. Mark those, refuse
/// other sharing.
fn share_with_parents(dir: &Path, procs: &mut [ProcImage]) -> Result<(), Error> {
    let index: HashMap<u32, usize> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.entry.pid, i))
        .collect();
    for i in 0..procs.len() {
        let Some(me) = procs[i].live.as_ref().map(|l| l.ids.clone()) else {
            continue;
        };
        let parent = index
            .get(&procs[i].entry.ppid)
            .and_then(|&j| procs[j].live.as_ref().map(|l| l.ids.clone()));
        for (j, other) in procs.iter().enumerate() {
            let Some(o) = other.live.as_ref().map(|l| &l.ids) else {
                continue;
            };
            if j == i {
                continue;
            }
            let is_parent = other.entry.pid == procs[i].entry.ppid;
            if o.vm_id == me.vm_id {
                return Err(Error::unsupported(format!(
                    "processes {} and {} share their memory (vfork or CLONE_VM)",
                    procs[i].entry.pid, other.entry.pid
                )));
            }
            let shares = o.files_id == me.files_id || o.fs_id == me.fs_id;
            let child_of_i = other.entry.ppid == procs[i].entry.pid;
            if shares && !is_parent && !child_of_i {
                let same_as_parent = parent
                    .as_ref()
                    .map(|p| p.files_id == me.files_id && p.fs_id == me.fs_id)
                    .unwrap_or(false);
                if !same_as_parent {
                    return Err(bad(
                        dir,
                        format!(
                            "processes {} and {} share an fd table or fs but neither is the other's parent",
                            procs[i].entry.pid, other.entry.pid
                        ),
                    ));
                }
            }
        }
        if let (Some(p), Some(l)) = (parent, procs[i].live.as_mut()) {
            l.files_from_parent = p.files_id == me.files_id;
        }
    }
    Ok(())
}

fn check_arch(dir: &Path, id: i32, core: &CoreEntry) -> Result<(), Error> {
    if core.mtype != core_entry_march::X86_64 {
        return Err(bad(
            dir,
            format!(
                "core-{id}.img is for another architecture ({}); this machine is x86_64",
                march_name(core.mtype)
            ),
        ));
    }
    Ok(())
}

fn march_name(m: i32) -> String {
    use crust_images::proto::core::core_entry_march as a;
    match m {
        a::ARM => "arm".into(),
        a::AARCH64 => "aarch64".into(),
        a::PPC64 => "ppc64".into(),
        a::S390 => "s390".into(),
        a::MIPS => "mips".into(),
        a::LOONGARCH64 => "loongarch64".into(),
        a::RISCV64 => "riscv64".into(),
        other => format!("unknown machine type {other}"),
    }
}

fn pid_taken(pid: i32) -> Error {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string();
    Error::PidTaken { pid, comm }
}

/// Tasks created so far, killed if the restore fails.
#[derive(Default)]
struct Created {
    /// Per process (same index as `ImageSet::procs`): its threads' tasks.
    tasks: Vec<Vec<Task>>,
    /// crust's pipes and FIFOs, given to the tasks as they are built and
    /// closed before any task runs.
    shared: OpenShared,
}

impl Created {
    fn kill_all(self) {
        for threads in self.tasks.iter().rev() {
            if let Some(t) = threads.first() {
                let _ = process::kill(t.pid(), libc::SIGKILL);
            }
        }
        for threads in self.tasks {
            // The other threads first: a group leader is not reaped while
            // a thread of its group (traced by crust) waits to be.
            for t in threads.into_iter().rev() {
                let pid = t.pid();
                t.kill();
                let _ = process::waitpid(pid, 0);
            }
        }
    }
}

/// Restore the tree stored in `opts.images_dir`.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreOutcome, Error> {
    let t0 = Instant::now();
    let img = load(opts)?;
    if img.inet.accept_listeners().is_empty() {
        return restore_loaded(img, opts, t0, None);
    }
    restore_serving(img, opts, t0)
}

/// Restore in a child process that stays, after the restore, to hand
/// over the connections that waited in accept queues (see
/// [`crate::accept`]); this process returns once the tree is restored.
fn restore_serving(
    img: ImageSet,
    opts: &RestoreOptions,
    t0: Instant,
) -> Result<RestoreOutcome, Error> {
    use std::io::{BufRead, Write};
    let me = process::getpid();
    let (parent_end, child_end) =
        std::os::unix::net::UnixStream::pair().map_err(sys_err(me, "socketpair"))?;
    match process::clone3_fork(&[], 0).map_err(sys_err(me, "fork of the accept server"))? {
        ForkResult::Parent { child } => {
            drop(child_end);
            let mut line = String::new();
            let _ = std::io::BufReader::new(parent_end).read_line(&mut line);
            let mut w = line.trim_end().splitn(2, ' ');
            match (w.next(), w.next()) {
                (Some("ok"), Some(rest)) => {
                    let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                    if v.len() == 3 {
                        return Ok(RestoreOutcome {
                            root_pid: v[0] as i32,
                            restore_time_us: v[1],
                            pages_restored: v[2],
                            // Not detached: the root is the child's child;
                            // the child ends with the root's status.
                            waiter: (!opts.detached).then_some(child),
                        });
                    }
                    Err(Error::Restore {
                        pid: child,
                        what: format!("the restoring process said {line:?}"),
                    })
                }
                (Some("err"), Some(why)) => Err(Error::Restore {
                    pid: child,
                    what: why.to_string(),
                }),
                _ => {
                    let _ = process::waitpid(child, 0);
                    Err(Error::Restore {
                        pid: child,
                        what: "the restoring process died".into(),
                    })
                }
            }
        }
        ForkResult::Child => {
            drop(parent_end);
            let mut out = child_end;
            let mut server = crate::accept::AcceptServer::default();
            match restore_loaded(img, opts, t0, Some(&mut server)) {
                Ok(o) => {
                    let _ = writeln!(
                        out,
                        "ok {} {} {}",
                        o.root_pid, o.restore_time_us, o.pages_restored
                    );
                    drop(out);
                    let root_status = server.run(o.root_pid);
                    if opts.detached {
                        std::process::exit(0)
                    }
                    // Stay the root's parent until it ends, and end the
                    // same way (crust restore's caller waits for this).
                    let status = match root_status {
                        Some(s) => Some(s),
                        None => loop {
                            match process::waitpid(o.root_pid, 0) {
                                Ok(Some((_, s @ process::WaitStatus::Exited(_))))
                                | Ok(Some((_, s @ process::WaitStatus::Signaled { .. }))) => {
                                    break Some(s)
                                }
                                Ok(_) => continue,
                                Err(_) => break None,
                            }
                        },
                    };
                    match status {
                        Some(process::WaitStatus::Signaled { sig, .. }) => {
                            // The same signal if it is not handled here,
                            // else the shell's convention.
                            let _ = process::kill(process::getpid(), sig);
                            std::process::exit(128 + sig)
                        }
                        Some(process::WaitStatus::Exited(c)) => std::process::exit(c),
                        _ => std::process::exit(0),
                    }
                }
                Err(e) => {
                    let mut why = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        why.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    let _ = writeln!(out, "err {}", why.replace('\n', " "));
                    std::process::exit(1)
                }
            }
        }
    }
}

fn restore_loaded(
    mut img: ImageSet,
    opts: &RestoreOptions,
    t0: Instant,
    mut server: Option<&mut crate::accept::AcceptServer>,
) -> Result<RestoreOutcome, Error> {
    // In a new pid namespace the recorded pids cannot clash with ours.
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
        pid: img.procs[0].pid(),
        what: "no free address range for the restore trampoline".into(),
    })?;
    debug!("trampoline at {tramp:#x}");
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

    // Pipes exist, full, before any task does.
    let mut created = Created {
        shared: img.shared.open()?,
        ..Default::default()
    };
    created.shared.events = img.events.open()?;
    created.shared.unix = img.unix.open(&created.shared)?;
    created.shared.inet = img.inet.open()?;
    created.shared.ghosts = img.ghosts.open()?;
    created.shared.memfds = img.memfds.open()?;
    created.shared.ptys = img.ptys.open()?;
    created.shared.packets = img.packets.open()?;
    created.shared.netlinks = img.netlinks.open()?;
    created.shared.inherited = std::mem::take(&mut img.inherited);
    let result = create_and_build(&img, opts, tramp, tty.as_deref(), &mut created);
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
    // Messages that carry their senders' credentials go back now that
    // the senders exist (the kernel wants a live pid).
    let host_of: HashMap<u32, i32> = img
        .procs
        .iter()
        .zip(created.tasks.iter())
        .filter_map(|(p, t)| Some((p.entry.pid, t.first()?.pid())))
        .collect();
    if let Err(e) = created
        .shared
        .unix
        .refill_late(&img.unix, &created.shared, &|pid| {
            host_of.get(&pid).copied()
        })
    {
        created.kill_all();
        return Err(e);
    }
    // Every task holds its sockets: connections leave repair mode (what
    // was never sent goes out) and the network is unlocked.
    if let Err(e) = created.shared.inet.finish() {
        created.kill_all();
        return Err(e);
    }
    // Timers run from now on, with the time they had left at dump time.
    if let Err(e) = created.shared.events.arm_timers() {
        created.kill_all();
        return Err(e);
    }
    if let Some(sv) = server.as_deref_mut() {
        match created.shared.inet.take_accept_queues() {
            Ok(q) => sv.queues = q,
            Err(e) => {
                created.kill_all();
                return Err(e);
            }
        }
    }
    // Every task holds its pipes now: crust lets go of its own ends (a
    // reader must see end-of-file once the writers it had are gone).
    drop(std::mem::take(&mut created.shared));
    // Let everything go: zombies die first, then the live tasks get their
    // registers, children before parents, the root last.
    let mut order: Vec<usize> = (0..img.procs.len()).collect();
    order.reverse();
    let mut tasks = std::mem::take(&mut created.tasks);
    let index: HashMap<u32, usize> = img
        .procs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.entry.pid, i))
        .collect();
    for &i in &order {
        let p = &img.procs[i];
        if p.live.is_none() {
            if let Some(t) = tasks[i].pop() {
                let pid = t.pid();
                zombie_exit(t, p.exit_code, tramp)
                    .map_err(|source| Error::Compel { pid, source })?;
            }
            if p.helper {
                // Its parent reaps it, as if it had waited for it.
                let parent = &mut tasks[index[&p.entry.ppid]][0];
                let mut r = Remote {
                    task: parent,
                    scratch: RemoteAddr(tramp + PAGE_SIZE),
                    scratch_len: TRAMP_SIZE - PAGE_SIZE,
                };
                r.call(
                    &format!("wait4 for helper {}", p.entry.pid),
                    libc::SYS_wait4,
                    [p.entry.pid as u64, 0, libc::__WALL as u64, 0, 0, 0],
                )?;
            }
        }
    }
    // Processes holding a listener whose queued connections are to be
    // handed over stay traced (see crate::accept).
    let listeners = img.inet.accept_listeners();
    for &i in &order {
        let p = &img.procs[i];
        let Some(live) = &p.live else { continue };
        let stopped = opts.leave_stopped
            || live.threads[0].core.tc.as_ref().map(|t| t.task_state) == Some(task_state::STOPPED);
        let traced = server.is_some()
            && !stopped
            && live.files.fds.iter().any(|f| listeners.contains(&f.id));
        let threads = std::mem::take(&mut tasks[i]);
        let mut it = threads.into_iter();
        let main = it.next().expect("live process has a main task");
        for (t, ti) in it.zip(live.threads.iter().skip(1)) {
            let tid = t.pid();
            let (regs, mask) = final_regs(&ti.core);
            if let (true, Some(sv)) = (traced, server.as_deref_mut()) {
                sv.tasks.push(
                    t.finish_traced(&regs, Some(&ti.xstate), mask)
                        .map_err(|source| Error::Compel { pid: tid, source })?,
                );
                continue;
            }
            t.finish_with(&regs, Some(&ti.xstate), mask, stopped)
                .map_err(|source| Error::Compel { pid: tid, source })?;
        }
        let ti = &live.threads[0];
        let (regs, mask) = final_regs(&ti.core);
        let pid = main.pid();
        if let (true, Some(sv)) = (traced, server.as_deref_mut()) {
            sv.tasks.push(
                main.finish_restore_traced(
                    RemoteAddr(tramp),
                    TRAMP_SIZE,
                    &regs,
                    Some(&ti.xstate),
                    mask,
                )
                .map_err(|source| Error::Compel { pid, source })?,
            );
            continue;
        }
        main.finish_restore(
            RemoteAddr(tramp),
            TRAMP_SIZE,
            &regs,
            Some(&ti.xstate),
            mask,
            stopped,
        )
        .map_err(|source| Error::Compel { pid, source })?;
    }
    let restore_time_us = us_since(t0);
    info!(
        "Restored {} processes of tree {root_pid} in {restore_time_us} us ({pages_restored} pages)",
        img.procs.len()
    );
    Ok(RestoreOutcome {
        root_pid,
        restore_time_us,
        pages_restored,
        waiter: None,
    })
}

fn final_regs(core: &CoreEntry) -> (crust_sys::ptrace::UserRegs, u64) {
    let ti = core.thread_info.as_ref().expect("checked in load");
    let regs = task::regs_from_image(&ti.gpregs);
    let mask = core
        .thread_core
        .as_ref()
        .and_then(|t| t.blk_sigset)
        .or(core.tc.as_ref().map(|t| t.blk_sigset))
        .unwrap_or(0);
    (regs, mask)
}

/// Make a created task die the way the image's zombie did.
fn zombie_exit(t: Task, status: u32, tramp: u64) -> Result<(), crust_compel::Error> {
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        return t.exit_as_zombie(((status >> 8) & 0xff) as i32);
    }
    // Killed by a signal: no core file, default action, unblocked.
    let pid = t.pid();
    let _ = process::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0);
    t.die_by_signal(sig, RemoteAddr(tramp + PAGE_SIZE))
}

/// Create every process and thread, then build each one.
fn create_and_build(
    img: &ImageSet,
    opts: &RestoreOptions,
    tramp: u64,
    tty: Option<&str>,
    created: &mut Created,
) -> Result<u64, Error> {
    let root_pid = img.procs[0].pid();
    let me = process::getpid();
    let clone_flags = if img.new_pidns {
        libc::CLONE_NEWPID as u64
    } else {
        0
    };
    let clone_flags = clone_flags
        | if img.ipcns.is_some() {
            libc::CLONE_NEWIPC as u64
        } else {
            0
        };
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
    let forked = process::clone3_fork(&[root_pid], clone_flags);
    let root_host = match forked {
        Ok(ForkResult::Child) => {
            // In the child: async-signal-safe work only.
            if process::map_trampoline(tramp, TRAMP_SIZE, &SYSCALL_INSN).is_err() {
                process::exit_now(70);
            }
            if !sibling && crust_sys::ptrace::traceme().is_err() {
                process::exit_now(71);
            }
            process::stop_self();
            process::exit_now(72);
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = process::set_signal_mask(&old_mask);
            child
        }
        Err(e) => {
            let _ = process::set_signal_mask(&old_mask);
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
        seize_stopped_sibling(root_host)
    } else {
        Task::adopt_stopped_child(root_host)
    };
    let mut root = match adopted {
        Ok(t) => t,
        Err(source) => {
            let _ = process::kill(root_host, libc::SIGKILL);
            let _ = process::waitpid(root_host, 0);
            return Err(Error::Compel {
                pid: root_host,
                source,
            });
        }
    };
    root.use_syscall_ip(RemoteAddr(tramp));
    let opts_all = popt::EXITKILL | popt::TRACESYSGOOD | popt::TRACEFORK | popt::TRACECLONE;
    root.set_options(opts_all).map_err(|source| Error::Compel {
        pid: root_host,
        source,
    })?;
    created.tasks = (0..img.procs.len()).map(|_| Vec::new()).collect();
    created.tasks[0].push(root);
    set_session(img, 0, opts, created, tramp)?;
    // System V objects exist before any task maps them.
    if let Some(ns) = &img.ipcns {
        ns.create(root_host)?;
    }

    // Then depth first: a process's memory is built before it begets its
    // children, so they start from it (and could inherit what they share).
    let mut pages = 0;
    let filler = mem::Filler::new();
    grow(img, 0, opts, tramp, tty, created, &mut pages, &filler)?;
    if let Some(ns) = &img.ipcns {
        ns.finish(root_host)?;
    }
    // Controlling terminals on the tree's ptys, once every fd is open.
    for (i, p) in img.procs.iter().enumerate() {
        let Some(live) = &p.live else { continue };
        if let Some((fd, pgrp)) = img.ptys.ctty_of(p.pid(), &live.files.fds) {
            let mut r = Remote {
                task: &mut created.tasks[i][0],
                scratch: RemoteAddr(tramp + PAGE_SIZE),
                scratch_len: TRAMP_SIZE - PAGE_SIZE,
            };
            crate::pty::set_ctty(&mut r, fd, pgrp)?;
        }
    }
    // File locks, once every fd of the tree is open.
    for (i, p) in img.procs.iter().enumerate() {
        if p.live.is_some() && !img.locks.is_empty() {
            let mut r = Remote {
                task: &mut created.tasks[i][0],
                scratch: RemoteAddr(tramp + PAGE_SIZE),
                scratch_len: TRAMP_SIZE - PAGE_SIZE,
            };
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
        let mut r = Remote {
            task: &mut created.tasks[i][0],
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        };
        img.owners.apply(&mut r, &live.files.fds)?;
    }
    for (i, p) in img.procs.iter().enumerate() {
        if let Some(live) = &p.live {
            build_creds(&mut created.tasks[i], live, tramp)?;
        }
    }
    Ok(pages)
}

/// Build process `i` (already created, with its session), then create and
/// grow its children, then its threads, then the rest of it.
#[allow(clippy::too_many_arguments)] // the state of one depth-first walk
fn grow(
    img: &ImageSet,
    i: usize,
    opts: &RestoreOptions,
    tramp: u64,
    tty: Option<&str>,
    created: &mut Created,
    pages: &mut u64,
    filler: &mem::Filler,
) -> Result<(), Error> {
    let p = &img.procs[i];
    let mut pending = None;
    if let Some(live) = &p.live {
        let t = Instant::now();
        // The nearest live ancestor: this task started as a copy of it.
        let mut anc = p.entry.ppid;
        let parent_mm = loop {
            match img.procs.iter().find(|q| q.entry.pid == anc && i != 0) {
                Some(q) => match &q.live {
                    Some(l) => break Some(&l.mm),
                    None => anc = q.entry.ppid,
                },
                None => break None,
            }
        };
        let (n, filling) = build_memory(
            &mut created.tasks[i][0],
            &img.dir,
            live,
            parent_mm,
            tramp,
            filler,
        )?;
        *pages += n;
        pending = Some(filling);
        debug!("{}: memory mapped in {} us", p.pid(), us_since(t));
    }
    // A child that starts from this process's memory (to keep pages or
    // shared objects) must see it complete; otherwise the fill goes on
    // while the children are made and built.
    let heirs = img.procs.iter().any(|c| {
        c.entry.ppid == p.entry.pid
            && c.live.as_ref().is_some_and(|l| {
                l.runs.iter().any(|r| r.cow)
                    || l.mm.vmas.iter().any(|v| v.status & vs::AREA_MEMFD != 0)
            })
    }) || img
        .procs
        .iter()
        .any(|c| c.entry.ppid == p.entry.pid && c.helper);
    if heirs {
        protect(created, i, p, pending.take(), tramp)?;
    }
    for c in 0..img.procs.len() {
        let child = &img.procs[c];
        if c == 0 || child.entry.ppid != p.entry.pid {
            continue;
        }
        let mut flags = 0u64;
        if let (Some(me), Some(pp)) = (&child.live, &p.live) {
            if me.ids.files_id == pp.ids.files_id {
                flags |= libc::CLONE_FILES as u64;
            }
            if me.ids.fs_id == pp.ids.fs_id {
                flags |= libc::CLONE_FS as u64;
            }
        }
        let t = remote_clone(
            &mut created.tasks[i][0],
            tramp,
            child.pid(),
            flags,
            libc::SIGCHLD as u64,
        )?;
        created.tasks[c].push(t);
        set_session(img, c, opts, created, tramp)?;
        grow(img, c, opts, tramp, tty, created, pages, filler)?;
    }
    if let Some(live) = &p.live {
        // Threads, cloned by the main thread.
        for ti in live.threads.iter().skip(1) {
            let flags = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM) as u64;
            let t = remote_clone(&mut created.tasks[i][0], tramp, ti.tid, flags, 0)?;
            created.tasks[i].push(t);
        }
        protect(created, i, p, pending.take(), tramp)?;
        let t = Instant::now();
        build_rest(
            &mut created.tasks[i],
            p.pid(),
            live,
            tramp,
            tty,
            &created.shared,
        )?;
        debug!("{}: the rest built in {} us", p.pid(), us_since(t));
    }
    Ok(())
}

/// Wait for process `i`'s pages to be in, then set its final protections.
fn protect(
    created: &mut Created,
    i: usize,
    p: &ProcImage,
    pending: Option<std::sync::Arc<mem::Pending>>,
    tramp: u64,
) -> Result<(), Error> {
    let (Some(pending), Some(live)) = (pending, &p.live) else {
        return Ok(());
    };
    let mut r = Remote {
        task: &mut created.tasks[i][0],
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    mem::protect_vmas(&mut r, &live.mm, &pending)
}

/// Wait until a root made with CLONE_PARENT has stopped itself, then seize
/// it (it is not crust's child, so it cannot ask crust to trace it).
fn seize_stopped_sibling(pid: i32) -> crust_compel::Result<Task> {
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
fn remote_clone(
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
    t.use_syscall_ip(RemoteAddr(tramp));
    Ok(t)
}

/// Give process `i` its session and process group, right after it was
/// created and before it creates children (who inherit them).
fn set_session(
    img: &ImageSet,
    i: usize,
    opts: &RestoreOptions,
    created: &mut Created,
    tramp: u64,
) -> Result<(), Error> {
    let e = &img.procs[i].entry;
    let (pid, sid, pgid) = (e.pid as i32, e.sid as i32, e.pgid as i32);
    let t = &mut created.tasks[i][0];
    let mut r = Remote {
        task: t,
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    // What it inherited.
    let cur_sid = r.call("getsid", libc::SYS_getsid, [0; 6])? as i32;
    let cur_pgid = r.call("getpgid", libc::SYS_getpgid, [0; 6])? as i32;
    if sid == pid {
        r.call("setsid", libc::SYS_setsid, [0; 6])?;
    } else if sid != cur_sid && !(i == 0 && opts.shell_job) {
        if i == 0 {
            // The root's session leader is outside the tree; like CRIU,
            // it stays in crust's session (use --shell-job for a job).
            debug!("root {pid}: session {sid} is outside the tree, staying in {cur_sid}");
        } else {
            return Err(Error::unsupported(format!(
                "process {pid} is in session {sid}, but its parent is in {cur_sid} (sessions whose leader is gone need helper tasks)"
            )));
        }
    }
    let cur_pgid = if sid == pid { pid } else { cur_pgid };
    if pgid != cur_pgid {
        let in_tree = img.procs.iter().any(|p| p.entry.pid as i32 == pgid) || pgid == pid;
        if in_tree {
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
fn wait_zombie_gone(pid: i32) {
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
fn own_tty() -> Option<String> {
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
fn pick_trampoline(own: &[crust_proc::MapEntry], mms: &[&MmEntry]) -> Option<u64> {
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

/// Build the memory of one process inside its (still single) task: forget
/// what it inherited, move the vDSO, map the VMAs, fill the pages, set the
/// mm fields. Returns pages restored.
fn build_memory(
    task: &mut Task,
    dir: &Path,
    live: &LiveImage,
    parent: Option<&MmEntry>,
    tramp: u64,
    filler: &mem::Filler,
) -> Result<(u64, std::sync::Arc<mem::Pending>), Error> {
    let proc = ProcRoot::default();
    let main = task;
    // /proc wants crust's view of the pid.
    let host = main.pid();
    let rseq = main.rseq();
    let mut r = Remote {
        task: main,
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    // 1. Forget crust: its rseq area, its mappings, its fds.
    if let Some(rs) = rseq.filter(|x| x.rseq_abi_pointer != 0) {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        r.call(
            "rseq unregister",
            libc::SYS_rseq,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                rs.signature as u64,
                0,
                0,
            ],
        )?;
    }
    let maps = crust_proc::maps(&proc, host).map_err(crate::util::proc_err(host))?;
    // Copy-on-write pages shared with the parent: keep the copies of the
    // parent's VMAs this task got at clone time; everything else goes.
    let mut inherited = mem::inherited_vmas(&live.mm, &live.runs);
    // Shared memory objects the parent maps at the same places stay the
    // parent's: that is what keeps them shared.
    let shared = match parent {
        Some(pm) => mem::inherited_shmem(dir, &live.mm, pm)?,
        None => Vec::new(),
    };
    for &(s, e) in &shared {
        if !maps.iter().any(|m| m.start == s && m.end == e && m.shared) {
            return Err(Error::Restore {
                pid: host,
                what: format!(
                    "shared memory at {s:#x}-{e:#x} is the parent's, but the parent's restored mapping is not there"
                ),
            });
        }
    }
    for &(s, e) in &inherited {
        let mut cur = s;
        while cur < e {
            let anon = maps.iter().find(|m| {
                m.start <= cur
                    && cur < m.end
                    && !m.shared
                    && matches!(
                        m.kind(),
                        MapKind::Anon | MapKind::Heap | MapKind::Stack | MapKind::AnonNamed(_)
                    )
            });
            match anon {
                Some(m) => cur = m.end.min(e),
                None => break,
            }
        }
        if cur < e {
            return Err(Error::Restore {
                pid: host,
                what: format!(
                    "pages at {s:#x}-{e:#x} are shared with the parent process, but the parent's restored memory is not there ({cur:#x})"
                ),
            });
        }
    }
    inherited.extend(shared);
    let mut special: Vec<(MapKind, u64, u64)> = Vec::new();
    for m in &maps {
        match m.kind() {
            MapKind::Vdso | MapKind::Vvar | MapKind::VvarVclock => {
                special.push((m.kind(), m.start, m.end));
                continue;
            }
            MapKind::Vsyscall => continue,
            _ => {}
        }
        if m.start == tramp {
            continue;
        }
        // Unmap what is outside the inherited ranges.
        let mut cur = m.start;
        let mut cuts: Vec<(u64, u64)> = inherited
            .iter()
            .copied()
            .filter(|&(s, e)| s < m.end && e > m.start)
            .collect();
        cuts.sort_unstable();
        for (s, e) in cuts.into_iter().chain(std::iter::once((m.end, m.end))) {
            if s > cur {
                r.call("munmap", libc::SYS_munmap, [cur, s - cur, 0, 0, 0, 0])?;
            }
            cur = cur.max(e);
        }
    }
    const SYS_CLOSE_RANGE: i64 = 436;
    if !live.files_from_parent {
        r.call(
            "close_range",
            SYS_CLOSE_RANGE,
            [0, u32::MAX as u64, 0, 0, 0, 0],
        )?;
    }

    // 2. The vDSO goes where the image had it.
    move_vdso(&mut r, dir, &live.mm, &special, tramp + TRAMP_SIZE)?;

    // 3. Memory.
    let files = &live.files;
    let pages = mem::restore_vmas(
        &mut r,
        dir,
        &live.mm,
        live.pages_id,
        &live.runs,
        &inherited,
        &|id| files.path_of(id),
        filler,
    )?;
    let exe = files
        .path_of(live.mm.exe_file_id as u64)
        .expect("checked in load");
    mem::set_mm_map(&mut r, &live.mm, &exe)?;
    Ok(pages)
}

/// The rest of one process, once its children and threads exist: fds,
/// cwd, root, umask, then per thread signals, timers, limits, rseq.
/// Credentials come later, for all processes at once.
fn build_rest(
    tasks: &mut [Task],
    pid: i32,
    live: &LiveImage,
    tramp: u64,
    tty: Option<&str>,
    shared: &OpenShared,
) -> Result<(), Error> {
    let (main, others) = tasks.split_first_mut().expect("main task");
    let mut r = Remote {
        task: main,
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    let files = &live.files;
    // 4. Files, cwd, root, umask.
    if !live.files_from_parent {
        files.open_fds(&mut r, tty, shared)?;
    }
    // Packet socket rings mapped through those fds.
    mem::map_socket_vmas(&mut r, &live.mm, &files.fds)?;
    let root = files.path_of(live.fs.root_id as u64).expect("checked");
    let cwd = files.path_of(live.fs.cwd_id as u64).expect("checked");
    if root != "/" {
        let a = r.put_cstr(0, root.as_bytes())?;
        r.call(
            &format!("chroot {root}"),
            libc::SYS_chroot,
            [a.get(), 0, 0, 0, 0, 0],
        )?;
    }
    let a = r.put_cstr(0, cwd.as_bytes())?;
    r.call(
        &format!("chdir {cwd}"),
        libc::SYS_chdir,
        [a.get(), 0, 0, 0, 0, 0],
    )?;
    r.call(
        "umask",
        libc::SYS_umask,
        [live.fs.umask.unwrap_or(0o022) as u64, 0, 0, 0, 0, 0],
    )?;

    // 5. Signals, timers, limits, rseq, and credentials last; per thread.
    let main_core = &live.threads[0].core;
    task::apply_core(&mut r, main_core, pid, pid)?;
    task::apply_loginuid(&mut r, main_core)?;
    task::apply_rseq(&mut r, main_core)?;
    for (t, ti) in others.iter_mut().zip(live.threads.iter().skip(1)) {
        let mut tr = Remote {
            task: t,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        };
        task::apply_core(&mut tr, &ti.core, pid, ti.tid)?;
        task::apply_rseq(&mut tr, &ti.core)?;
    }
    Ok(())
}

/// Credentials of every thread of one process (last: afterwards the task
/// may not be allowed to do the rest).
fn build_creds(tasks: &mut [Task], live: &LiveImage, tramp: u64) -> Result<(), Error> {
    for (t, ti) in tasks.iter_mut().zip(live.threads.iter()) {
        let mut r = Remote {
            task: t,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        };
        task::apply_creds(&mut r, &ti.core)?;
    }
    Ok(())
}

/// Move [vvar], [vvar_vclock] and [vdso] of the task to the addresses the
/// image records (via a temporary spot, so no move lands on another).
fn move_vdso(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    special: &[(MapKind, u64, u64)],
    temp: u64,
) -> Result<(), Error> {
    let want_vvar = mm.vmas.iter().find(|v| v.status & vs::AREA_VVAR != 0);
    let want_vdso = mm.vmas.iter().find(|v| v.status & vs::AREA_VDSO != 0);
    let get = |k: MapKind| {
        special
            .iter()
            .find(|(kk, _, _)| *kk == k)
            .map(|x| (x.1, x.2))
    };
    let (vvar, vclock, vdso) = (
        get(MapKind::Vvar),
        get(MapKind::VvarVclock),
        get(MapKind::Vdso),
    );
    let Some(want_vdso) = want_vdso else {
        // The task had no vDSO: drop ours.
        for (_, s, e) in special {
            r.call("munmap vdso", libc::SYS_munmap, [*s, e - s, 0, 0, 0, 0])?;
        }
        return Ok(());
    };
    let Some(vdso) = vdso else {
        return Err(Error::Restore {
            pid: r.pid(),
            what: "crust has no vDSO to give the restored task".into(),
        });
    };
    // Our layout: [vvar][vvar_vclock][vdso], back to back.
    let ours_vvar_len =
        vvar.map(|(s, e)| e - s).unwrap_or(0) + vclock.map(|(s, e)| e - s).unwrap_or(0);
    let want_vvar_len = want_vvar.map(|v| v.end - v.start).unwrap_or(0);
    if vdso.1 - vdso.0 != want_vdso.end - want_vdso.start
        || ours_vvar_len != want_vvar_len
        || want_vvar.map(|v| v.end != want_vdso.start).unwrap_or(false)
    {
        return Err(bad(
            dir,
            format!(
                "the image's vDSO layout (vvar {want_vvar_len:#x} bytes, vdso {:#x} bytes) differs from this kernel's (vvar {ours_vvar_len:#x}, vdso {:#x}); was it dumped on another kernel?",
                want_vdso.end - want_vdso.start,
                vdso.1 - vdso.0
            ),
        ));
    }
    let mut parts: Vec<(u64, u64, u64)> = Vec::new(); // (from, len, to)
    let mut to = want_vvar.map(|v| v.start).unwrap_or(want_vdso.start);
    for (s, e) in [vvar, vclock].into_iter().flatten() {
        parts.push((s, e - s, to));
        to += e - s;
    }
    parts.push((vdso.0, vdso.1 - vdso.0, want_vdso.start));
    if parts.iter().all(|(f, _, t)| f == t) {
        return Ok(());
    }
    let mremap = |r: &mut Remote<'_>, from: u64, len: u64, to: u64| -> Result<(), Error> {
        let got = r.call(
            &format!("mremap {from:#x} -> {to:#x}"),
            libc::SYS_mremap,
            [
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                to,
                0,
            ],
        )?;
        if got != to {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mremap of the vDSO went to {got:#x}, not {to:#x}"),
            });
        }
        Ok(())
    };
    let mut t = temp;
    let mut staged = Vec::new();
    for (from, len, to) in &parts {
        mremap(r, *from, *len, t)?;
        staged.push((t, *len, *to));
        t += len;
    }
    for (from, len, to) in staged {
        mremap(r, from, len, to)?;
    }
    Ok(())
}
