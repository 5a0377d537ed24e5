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

mod build;
mod caller;
mod create;
mod finish;
mod load;
mod memory;
mod pin;
mod pstree;
mod sessions;
mod share;
mod split;
mod verify;

use build::*;
use create::*;
use finish::*;
use load::*;
use memory::*;

use crate::files::filelocks::RestoreLocks;
use crate::files::kind::{FileKinds, LoadCtx, OpenFiles, Phase, PhaseCtx, ProcFds};
use crate::files::loaded::LoadedFiles;
use crate::files::RestoreFiles;
use crate::mem::{self, PageRun};
use crate::task::remote::Remote;
use crate::util::{read_image, read_one, sys_err, us_since};
use crate::{task, task::xsave, Error, Options, RestoreOutcome};
use crust_compel::{Loaded, Task, SYSCALL_INSN};
use crust_images::consts::{task_state, vma as vs};
use crust_images::image::ImageType;
use crust_images::proto::core::{core_entry_march, CoreEntry, TaskKobjIdsEntry};
use crust_images::proto::fs::FsEntry;
use crust_images::proto::inventory::InventoryEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pstree::PstreeEntry;
use crust_images::proto::sa::SaEntry;
use crust_proc::{MapKind, ProcRoot};
use crust_sys::process::{self, ForkResult};
use crust_sys::ptrace::options as popt;
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, info};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Trampoline: one code page plus scratch pages for remote syscall data.
use crate::task::remote::TRAMP_SIZE;
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
    /// Guard regions (MADV_GUARD_INSTALL), out of `mm`'s VMA list.
    guards: Vec<(u64, u64)>,
    /// Ranges transparent huge pages backed at dump (`crust-thp-N.img`).
    huge: Vec<(u64, u64)>,
    pid_ns_id: Option<u32>,
    ids: TaskKobjIdsEntry,
    /// The signal actions of the main thread's core, taken out of it:
    /// shared by every process whose actions are the same (most of a
    /// tree), not 64 entries per process.
    sigactions: Arc<[SaEntry]>,
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
    /// Which process makes which, so each is born in its session; the
    /// helpers it needs are in `procs`.
    sessions: sessions::SessionPlan,
    /// The tree had a pid namespace of its own (its root is its init).
    new_pidns: bool,
    /// The tree's own IPC namespace, with its System V objects.
    ipcns: Option<crate::ns::sysvipc::IpcNs>,
    /// The tree's other namespaces of its own (UTS, ...), made with the
    /// root.
    ns: crate::ns::tree::TreeNamespaces,
    /// Every kind of file (pipes, event files, sockets...), see
    /// [`crate::files::kind`].
    files: FileKinds,
    /// File locks to take again (--file-locks).
    locks: RestoreLocks,
    /// Owners (F_SETOWN) and signals (F_SETSIG) of the files, by id.
    owners: crate::files::fown::Owners,
    /// How the dump locked the tree's TCP connections (inventory.img):
    /// what unlocks them (and an external network namespace) once restored.
    netlock: crate::net::netlock::Method,
    /// The memfd inodes of files.img (empty when no process maps one).
    memfds: mem::Memfds,
    /// seccomp.img: the filters threads are restored with.
    seccomp: task::seccomp::SeccompImage,
    /// The cgroup namespace the root makes for itself (cgroup.img's
    /// cgns_prefix), set once the cgroups are made.
    cgns: Option<crate::cgroup::restore::Cgns>,
}

/// Tasks created so far, killed if the restore fails.
#[derive(Default)]
struct Created {
    /// Per process (same index as `ImageSet::procs`): its threads' tasks.
    tasks: Vec<Vec<Task>>,
    /// The descriptions crust made (pipes, sockets...), given to the tasks
    /// as they are built and closed before any task runs (read by both
    /// builder threads of a split build, see [`split`]).
    shared: Arc<OpenFiles>,
    /// System V objects made in crust's IPC namespace (removed on failure).
    ipc: crate::ns::sysvipc::Made,
    /// Shared memory objects a process built already maps, by inode
    /// number: crust's description of each (opened through
    /// /proc/HOST/map_files/START-END), given to a later process.
    objects: HashMap<u64, std::sync::Arc<std::os::fd::OwnedFd>>,
    /// `--lazy-pages`: each process's userfaultfd and lazy memory, handed
    /// to the lazy-pages daemon before the tree runs.
    lazy: Vec<crate::lazy::LazyTask>,
    /// crust's thread and the tasks on one CPU while they are built
    /// ([`pin::Pin`]).
    pin: Option<pin::Pin>,
    /// Subtrees this thread hands to the second builder thread as it
    /// reaches them ([`split`]).
    hand: Option<split::Hand>,
    /// Tasks between two tracer threads (parked, untraced): killed with
    /// the rest if the restore fails.
    loose: Vec<i32>,
    /// Processes whose threads crust armed with a parent-death SIGKILL of
    /// its own while they changed tracer threads ([`split`]): set to the
    /// recorded one with the credentials.
    armed: std::collections::HashSet<usize>,
}

impl Created {
    /// The host pid of each process's main task, by its pid in the images
    /// (they differ in a new pid namespace).
    fn host_pids(&self, img: &ImageSet) -> HashMap<u32, i32> {
        img.procs
            .iter()
            .zip(self.tasks.iter())
            .filter_map(|(p, t)| Some((p.entry.pid, t.first()?.pid())))
            .collect()
    }

    /// crust's descriptions, to change: once no second builder thread
    /// holds them any more.
    fn shared_mut(&mut self) -> Result<&mut OpenFiles, Error> {
        Arc::get_mut(&mut self.shared).ok_or_else(|| Error::Restore {
            pid: 0,
            what: "crust's descriptions are still held by a builder thread".into(),
        })
    }

    fn kill_all(mut self) {
        // No more subtrees for a second builder (it ends with its own).
        self.hand = None;
        for &pid in &self.loose {
            let _ = process::kill(pid, libc::SIGKILL);
        }
        for threads in self.tasks.iter().rev() {
            if let Some(t) = threads.first() {
                let _ = process::kill(t.pid(), libc::SIGKILL);
            }
        }
        // Children before their parents: a root that is the init of its
        // pid namespace is not reaped before its children, and a child
        // traced by crust, a zombie, waits for crust to reap it.
        for threads in self.tasks.into_iter().rev() {
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

/// Read and check the image set in `opts.images_dir` as a restore does
/// before it touches anything (every image, the tree's pids, memory,
/// files): a dump runs it on the images it has just written, before it
/// kills or lets go of the tree.
pub(crate) fn check_images(opts: &Options) -> Result<(), Error> {
    load(&crate::ns::mnt::as_restore_check(opts)).map(drop)
}

pub use verify::VerifyReport;

/// Every check a restore of `opts.images_dir` makes before it creates a
/// task, without restoring (`crust image verify`).
pub fn verify(opts: &Options) -> Result<VerifyReport, Error> {
    verify::verify(opts)
}

/// Restore the tree stored in `opts.images_dir`.
pub fn restore(opts: &Options) -> Result<RestoreOutcome, Error> {
    let t0 = Instant::now();
    crate::util::progress::stage("reading images");
    // `--cpu-cap`: the set's CPU against this one, before anything is made.
    if opts.cpu_cap & crate::cpuinfo::CAP_IMAGE != 0 {
        crate::cpuinfo::check(&opts.images_dir, opts.cpu_cap)?;
    }
    // The cgroups first, as CRIU (a file of the tree may be in one; they
    // are removed again if the restore fails).
    let cgroups = crate::cgroup::restore::Plan::load_for(opts)?.prepare(opts)?;
    let img = load(opts)?;
    let me = process::getpid();
    let status = crust_proc::status(&ProcRoot::default(), me).map_err(crate::util::proc_err(me))?;
    caller::check_caller(&img, &caller::Caller::from_status(&status))?;
    if let Some(ns) = &img.ipcns {
        ns.check_free()?;
    }
    let out = if accept_listeners(&img).is_empty() {
        restore_loaded(img, opts, t0, None, cgroups)?
    } else {
        restore_serving(img, opts, t0, cgroups)?
    };
    write_restore_stats(&opts.work_dir(), &out);
    Ok(out)
}

/// stats-restore, which CRIU writes into its work directory once a restore
/// succeeded; a file that cannot be written is only logged (CRIU ignores
/// it). `pages_compared` and `pages_skipped_cow` are not counted yet (0:
/// the compare of a child's pages with its parent's, `fill::write_differing`,
/// does not report them here), `forking_time` neither (tasks are created
/// while they are built, not in a stage of their own).
fn write_restore_stats(dir: &std::path::Path, o: &RestoreOutcome) {
    use crust_images::proto::stats::{RestoreStatsEntry, StatsEntry};
    let e = StatsEntry {
        restore: Some(RestoreStatsEntry {
            pages_compared: 0,
            pages_skipped_cow: 0,
            forking_time: 0,
            restore_time: o.restore_time_us.min(u64::from(u32::MAX)) as u32,
            pages_restored: Some(o.pages_restored),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = crust_images::image::ImageWriter::create(
        dir,
        crust_images::image::ImageType::Stats,
        "stats-restore",
    )
    .and_then(|mut w| {
        w.write_entry(&e)?;
        w.finish()
    });
    if let Err(err) = r {
        log::warn!("cannot write stats-restore in {}: {err}", dir.display());
    }
}

/// Restore in a child process that stays, after the restore, to hand
/// over the connections that waited in accept queues (see
/// [`crate::net::accept`]); this process returns once the tree is restored.
fn restore_serving(
    img: ImageSet,
    opts: &Options,
    t0: Instant,
    mut cgroups: crate::cgroup::restore::Made,
) -> Result<RestoreOutcome, Error> {
    use std::io::{BufRead, Write};
    let me = process::getpid();
    let (parent_end, child_end) =
        std::os::unix::net::UnixStream::pair().map_err(sys_err(me, "socketpair"))?;
    match process::clone3_fork(&[], 0).map_err(sys_err(me, "fork of the accept server"))? {
        ForkResult::Parent { child } => {
            drop(child_end);
            // The child restores: it removes the cgroups it made if it fails.
            cgroups.keep();
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
            let mut server = crate::net::accept::AcceptServer::default();
            match restore_loaded(img, opts, t0, Some(&mut server), cgroups) {
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
