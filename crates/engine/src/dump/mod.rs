//! `crust dump`: freeze a process, write its state as CRIU images, then
//! kill it (or let it run on).

mod freezer;
mod helpers;
mod images;
mod lazy;
mod outdir;
mod pagejob;
mod precheck;
mod precopy;
mod predump;
mod seize;
mod snapshot;
mod vmsplice;

use crate::cgroup::dump::CgDump;
use crate::files::filelocks::LockDump;
use crate::files::FileTable;
use crate::ns::ids::{NsIds, NsInodes, TreeNs};
use crate::task::remote::Remote;
use crate::util::{compel_err, proc_err, us_since, write_image};
use crate::{mem, task, Action, DumpStats, Error, Options};
use crust_compel::Task;
use crust_images::image::ImageType;
use crust_images::proto::core::TaskKobjIdsEntry;
use crust_images::proto::fs::FsEntry;
use crust_images::proto::pstree::PstreeEntry;
use crust_proc::ProcRoot;
use crust_sys::{process, RemoteAddr, PAGE_SIZE};
use freezer::Frozen;
use helpers::add_helpers;
#[cfg(test)]
use helpers::plan_helpers;
use images::{inventory, write_stats};
use log::{debug, info, warn};
use pagejob::{write_later, Job, PageJob};
use precheck::{precheck, DEFAULT_TIMEOUT};
pub use predump::pre_dump;
use seize::seize;
use std::path::Path;
use std::time::{Duration, Instant};

/// CRIU's image set version (CRTOOLS_IMAGES_V1_1).
pub const IMG_VERSION: u32 = 2;
/// Files and ids of crust itself get id 1; the dumped task gets 2.
const TASK_KOBJ_ID: u32 = 2;

/// One process of the tree being dumped.
struct Proc {
    pid: i32,
    /// Parent in the tree, 0 for the root.
    ppid: i32,
    /// Its threads, main thread first; empty for a zombie.
    threads: Vec<Task>,
    zombie: bool,
}

/// The frozen tree, in depth-first order (parents before children).
#[derive(Default)]
struct Tree {
    procs: Vec<Proc>,
}

impl Tree {
    /// Let every task go on (or stay stopped), undoing what was done.
    fn release(self, stop: bool) {
        for p in self.procs {
            for t in p.threads {
                let tid = t.pid();
                if let Err(e) = t.release(stop) {
                    warn!("could not release task {tid}: {e}");
                }
            }
        }
    }

    /// Kill every process after a successful dump. Returns when the tree
    /// stopped being frozen: once every SIGKILL is sent (as CRIU counts
    /// it), before the wait for the kernel to free the tree's memory (which
    /// grows with its size).
    fn kill(mut self) -> Result<Instant, Error> {
        for p in &mut self.procs {
            for t in &mut p.threads {
                t.cure().map_err(compel_err(t.pid()))?;
            }
        }
        // Pidfds taken before the kill, so that each names the process
        // killed (once it is dead its parent may reap it, and the pid
        // name another).
        let mut dying = Vec::new();
        for p in &mut self.procs {
            p.threads.iter_mut().for_each(Task::disarm);
            if !p.zombie {
                dying.extend(
                    crust_sys::unix::pidfd_open(p.pid)
                        .ok()
                        .map(|fd| (p.pid, fd)),
                );
                let _ = process::kill(p.pid, libc::SIGKILL);
            }
        }
        let killed_at = Instant::now();
        // Free their memory from here too, while each exit frees it on
        // its own CPU: a 1 GiB process is gone in about 60 ms instead of
        // 100. A process whose memory is shared with one that lives on
        // (CLONE_VM), or already freed, is refused: nothing to do.
        for (pid, fd) in dying {
            use std::os::fd::AsFd;
            if let Err(e) = crust_sys::unix::process_mrelease(fd.as_fd()) {
                log::debug!("{pid}: process_mrelease: {e}");
            }
        }
        // As their tracer we see them die; their parents reap them. A
        // group leader is reported only after its other threads. Children
        // first: the init of a pid namespace finishes dying only once its
        // children are reaped, which waits for their tracer (us).
        // Whichever dies first is reaped first: the exiting thread of a
        // namespace's init waits for its other threads (zombies we trace)
        // to be reaped, so one fixed order can deadlock. Bounded: a task
        // that never dies (it cannot, after SIGKILL) is left after 30 s.
        let mut left: Vec<i32> = (self.procs.iter().rev())
            .flat_map(|p| p.threads.iter().rev().map(Task::pid))
            .collect();
        while !left.is_empty() && killed_at.elapsed() < std::time::Duration::from_secs(30) {
            left.retain(|&t| matches!(process::waitpid(t, libc::WNOHANG), Ok(None)));
            if !left.is_empty() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        Ok(killed_at)
    }
}

/// What is ready before the freeze: the page server's sink, the parent
/// set's tracking, the root's VMAs.
type Prepared = (
    predump::Server,
    predump::Chain,
    Option<mem::EarlyVmas>,
    Option<precopy::Precopy>,
);

/// Before the freeze: the images directory made ready, the `parent` link
/// of an incremental dump, the page server connected (no server: the dump
/// is refused), the parent set's write tracking taken from its keeper.
fn prepare_output(opts: &Options) -> Result<Prepared, Error> {
    lazy::refuse(opts)?;
    let dir = &opts.images_dir;
    outdir::prepare(opts)?;
    if let Err(e) = predump::refuse_track_running(opts).and_then(|()| predump::link_parent(opts)) {
        outdir::discard(dir);
        return Err(e);
    }
    let ps = crate::pageserver::connect_sink(opts).inspect_err(|_| outdir::discard(dir))?;
    crate::util::progress::stage("freezing");
    let mut chain = predump::Chain::take(opts, ps.as_ref());
    // -R: the pages copied before the freeze (else the snapshot that
    // protects them while frozen).
    let mut pre = None;
    if precopy::wanted(opts) {
        match precopy::run(opts) {
            Ok((c, p)) => (chain, pre) = (c, Some(p)),
            Err(e) => warn!("No pre-copy ({e}): the pages are write-protected while frozen"),
        }
    }
    // The root's VMAs, read while it runs (smaps walks its page tables);
    // not when a cgroup freezer stops it first.
    let early = (opts.freeze_cgroup.is_none())
        .then(|| mem::collect_vmas_early(&ProcRoot::default(), opts.pid))
        .flatten();
    Ok((ps, chain, early, pre))
}

/// `--freeze-cgroup`: the cgroup's tasks frozen and seized (the images
/// directory discarded if that fails).
fn take_cgroup(opts: &Options, timeout: Duration) -> Result<Option<Frozen>, Error> {
    let Some(cg) = &opts.freeze_cgroup else {
        return Ok(None);
    };
    catch_panic(|| Frozen::take(cg, timeout))
        .map(Some)
        .inspect_err(|_| outdir::discard(&opts.images_dir))
}

/// Dump the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &Options) -> Result<DumpStats, Error> {
    let pid = opts.pid;
    let proc = ProcRoot::default();
    precheck(&proc, pid)?;
    // As CRIU: a bad --cgroup-props(-file) fails the dump before the tree
    // is touched.
    let _cg_props = crate::cgroup::props::PropsConfig::of_options(opts)
        .map_err(crate::cgroup::props::PropsError::into_error)?;
    run_hook(opts, Action::PreDump, Some(pid))?;
    let dir = &opts.images_dir;
    let (mut ps, mut chain, early, pre) = prepare_output(opts)?;

    let t0 = Instant::now();
    let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut tree = Tree::default();
    // --freeze-cgroup: the cgroup's tasks are frozen and seized first; the
    // tree then takes its own from them.
    let mut frozen = take_cgroup(opts, timeout)?;
    let seized = catch_panic(|| seize(&proc, &mut tree, pid, 0, timeout, frozen.as_mut()));
    if let Some(f) = &frozen {
        f.note_strays();
    }
    let mut frozen = Strays(frozen);
    // CRIU's network-lock action: a tree with a network namespace of its
    // own, before the dump locks it.
    let own_net = own_netns(pid);
    let locked = || match own_net {
        true => run_hook(opts, Action::NetworkLock, Some(pid)),
        false => Ok(()),
    };
    let mut with_ext = None;
    if let Err(e) = seized
        .and_then(|_| crate::util::check_stop())
        .and_then(|()| locked())
        .and_then(|()| query_external(opts).map(|o| with_ext = o))
    {
        frozen.let_go(tree, false);
        outdir::discard(dir);
        return Err(e);
    }
    // The options with what the RPC client added at query-ext-files.
    let opts = with_ext.as_ref().unwrap_or(opts);
    let freezing_time_us = us_since(t0);
    let ntasks: usize = tree.procs.iter().map(|p| p.threads.len().max(1)).sum();
    info!(
        "Froze {} processes ({ntasks} tasks) of tree {pid} in {freezing_time_us} us",
        tree.procs.len()
    );
    let frozen_at = Instant::now();

    // Anything that fails from here on leaves the tree running, untouched.
    // A panic below unwinds to here: the tree is let go as on any error
    // (every task is put back by `release`, or by its drop).
    // Which shared objects are stored against the parent set: known
    // before the first process's pages are planned.
    let live: Vec<i32> = (tree.procs.iter().filter(|p| !p.zombie))
        .map(|p| p.pid)
        .collect();
    chain.objects_since(&proc, &live);
    let at = (freezing_time_us, frozen_at, &mut chain, early);
    let dumped = catch_panic(|| dump_tree(&proc, &mut tree, opts, at, ps.as_ref()))
        .and_then(|r| chain.close_server(ps.take(), opts).map(|()| r));
    match dumped {
        Ok((stats, hold, deferred)) => {
            // Asked to stop before the tree is let go or killed (or the
            // post-dump action says no): let it run on as it was.
            if let Err(e) =
                crate::util::check_stop().and_then(|()| run_hook(opts, Action::PostDump, Some(pid)))
            {
                warn!("Dump of {pid} stopped; letting the tree run on");
                net_unlock_hook(opts, own_net, pid);
                hold.release();
                frozen.let_go(tree, false);
                outdir::discard(dir);
                return Err(e);
            }
            let (mut written, mut moved) = (stats.pages_written, 0);
            let frozen_us;
            if opts.leave_running || opts.leave_stopped {
                // Connections go on before their tasks do.
                net_unlock_hook(opts, own_net, pid);
                hold.release();
                frozen.let_go(tree, opts.leave_stopped && !opts.leave_running);
                frozen_us = us_since(frozen_at);
                let how = ["stopped", "running"][usize::from(opts.leave_running)];
                info!("Tree {pid} left {how}");
                let r = precopy::after_thaw(opts, chain, deferred, pre.as_ref())
                    .inspect_err(|_| outdir::discard(dir))?;
                (written, moved) = (written + r.0, r.1);
            } else {
                // Durable before the only other copy of the tree goes; with
                // --lazy-pages, its memory taken (`moved`: failed after that).
                let moved = match lazy::before_kill(opts, &tree, own_net) {
                    Ok(m) => m,
                    Err(e) => {
                        hold.release();
                        frozen.let_go(tree, false);
                        outdir::discard(dir);
                        return Err(e);
                    }
                };
                // The cgroup's other tasks go on first (CRIU's order);
                // it is put back once the tree is dead.
                let freezer = frozen.0.take().map(Frozen::release);
                let killed = tree.kill();
                if let Some(f) = freezer {
                    f.put_back();
                }
                match killed {
                    Ok(at) => {
                        frozen_us = at.saturating_duration_since(frozen_at).as_micros() as u64
                    }
                    Err(e) => {
                        hold.release();
                        return Err(e);
                    }
                }
                // Dead tasks: crust's copies of their connections are
                // freed in repair mode (nothing sent); the lock stays.
                hold.keep();
                info!("Tree {pid} killed after dump");
                moved.map_or(Ok(()), Err)?;
            }
            // As CRIU: frozen until let go or killed; stats-dump written
            // into the work directory once the dump succeeded (podman
            // reads it there, and packs it into its checkpoint archive).
            let stats = DumpStats {
                frozen_time_us: frozen_us,
                pages_written: written,
                pages_skipped_parent: stats.pages_skipped_parent.saturating_sub(moved),
                ..stats
            };
            if let Err(e) = write_stats(&opts.work_dir(), &stats) {
                warn!("{e}");
            }
            Ok(stats)
        }
        Err(e) => {
            warn!("Dump of {pid} failed; letting the tree run on");
            net_unlock_hook(opts, own_net, pid);
            frozen.let_go(tree, false);
            outdir::discard(dir);
            Err(e)
        }
    }
}

/// The tasks `--freeze-cgroup` seized that are not in the tree, and its
/// freezer; empty without the option. Dropped unused (a panic), they are
/// let go by their own drops and the cgroup is left thawed.
struct Strays(Option<Frozen>);

impl Strays {
    /// Let the tree go on (or stay stopped) with the cgroup's other tasks.
    /// A cgroup frozen before the dump is frozen again first, so that no
    /// task of it runs (a frozen tracee can be detached and stays frozen).
    fn let_go(&mut self, tree: Tree, stop: bool) {
        let Some(f) = self.0.take() else {
            tree.release(stop);
            return;
        };
        f.put_back();
        tree.release(stop);
        f.release();
    }
}

/// Run the front end's hook of `action` (see [`crate::Options::hooks`]).
pub(crate) fn run_hook(opts: &Options, action: Action, pid: Option<i32>) -> Result<(), Error> {
    debug!("Running {} scripts", action.name());
    opts.hooks.run(action, pid).map_err(|why| Error::Action {
        action: action.name(),
        why,
    })
}

/// CRIU's query-ext-files: an RPC client may name more external resources
/// once the tree is frozen; the options with them, when it did.
fn query_external(opts: &Options) -> Result<Option<Options>, Error> {
    let extra = opts.hooks.query_external().map_err(|why| Error::Action {
        action: Action::QueryExtFiles.name(),
        why,
    })?;
    if extra.is_empty() {
        return Ok(None);
    }
    let mut o = opts.clone();
    for key in extra {
        info!("Adding external object: {key}");
        o.external.push(key);
    }
    Ok(Some(o))
}

/// CRIU's network-unlock action, whose failure is only logged.
fn net_unlock_hook(opts: &Options, own_net: bool, pid: i32) {
    if own_net {
        if let Err(e) = run_hook(opts, Action::NetworkUnlock, Some(pid)) {
            warn!("{e}");
        }
    }
}

/// Whether process `pid` is in another network namespace than crust.
fn own_netns(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (
        ino(format!("/proc/{pid}/ns/net")),
        ino("/proc/self/ns/net".into()),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Run `f`, turning a panic in it into [`Error::Panicked`], so that the
/// caller rolls back as it does on any error (release builds unwind).
fn catch_panic<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        Err(Error::Panicked { what })
    })
}

/// Is `pid` the init of a pid namespace of its own (one level below ours)?
fn heads_pid_ns(proc: &ProcRoot, pid: i32) -> bool {
    crust_proc::status(proc, pid)
        .map(|s| s.ns_pid.len() == 2 && s.ns_pid[1] == 1)
        .unwrap_or(false)
}

/// A pid as the tree's own pid namespace sees it.
fn ns_last(v: &[i32], host: i32) -> i32 {
    v.last().copied().unwrap_or(host)
}

/// The tun devices the tree's files were found attached to.
fn seen_tuns(files: &mut FileTable) -> Vec<crate::ns::net::TunSeen> {
    files
        .kind_mut::<crate::net::tun::TunDump>()
        .map(|k| k.seen().to_vec())
        .unwrap_or_default()
}

/// The fd table of a dump, its kinds set up from the options.
fn file_table(tree: &Tree, opts: &Options) -> FileTable {
    let mut files = FileTable::new(opts.shell_job, crate::registry::dump_kinds());
    if let Some(inet) = files.kind_mut::<crate::net::inet::InetDump>() {
        inet.tcp_established = opts.tcp_established;
        inet.tcp_close = opts.tcp_close;
        inet.skip_in_flight = opts.skip_in_flight;
        inet.leave_running = opts.leave_running || opts.leave_stopped;
        inet.lock_method = opts.network_lock;
    }
    if let Some(u) = files.kind_mut::<crate::net::unix::UnixDump>() {
        u.ext_unix_sk = opts.ext_unix_sk;
    }
    files.set_ghost_limit(opts.ghost_limit);
    files.set_link_remap(opts.link_remap);
    files.set_build_ids(!opts.validate_by_size_only());
    files.set_orphan_pts_master(opts.orphan_pts_master);
    files.set_tree(
        tree.procs
            .iter()
            .filter(|p| !p.zombie)
            .map(|p| p.pid)
            .collect(),
    );
    files
}

/// A tree dumped: its stats, its held connections, and the processes
/// whose pages are still to copy (a snapshot, -R).
type Dumped = (
    DumpStats,
    crate::net::inet::NetHold,
    Vec<mem::snapshot::Prepared>,
);

/// Every process's namespaces, before any file: one the dump cannot take
/// (a second mount namespace...) is refused before any file of it is
/// looked at by paths it does not share. Fds on namespaces may then name
/// any of them (the tree's other mount and network namespaces too).
fn namespaces_first(
    tree: &Tree,
    walk: &mut Walk<'_>,
    files: &mut FileTable,
    root_pid: i32,
) -> Result<(), Error> {
    for p in tree.procs.iter().filter(|p| !p.zombie) {
        let ids = walk.nss.check(p.pid, &NsInodes::of(p.pid))?;
        walk.ns_ids.insert(p.pid, ids);
    }
    files.set_namespaces(
        walk.nss
            .known()
            .map(|(k, i, id)| (k.name(), i, id, k.clone_flag())),
    );
    crate::net::set_dump_netns(files, root_pid, walk.nss.root_ids(), walk.nss.sub_net());
    Ok(())
}

/// When the tree was frozen and what came before: the time it took to
/// freeze, the moment, the parent set's tracking, the root's VMAs read
/// before the freeze.
type Frozen4<'a> = (u64, Instant, &'a mut predump::Chain, Option<mem::EarlyVmas>);

fn dump_tree(
    proc: &ProcRoot,
    tree: &mut Tree,
    opts: &Options,
    (freezing_time_us, frozen_at, chain, mut early): Frozen4<'_>,
    ps: Option<&std::sync::Arc<crate::pageserver::PageServerSink>>,
) -> Result<Dumped, Error> {
    let dir = opts.images_dir.as_path();
    // memfd and System V pages go to the page server too, as CRIU sends them.
    let _objects = ps.map(|p| mem::objects_to(dir, p.clone()));
    let ps = ps.map(|p| &**p);
    // Paths of a tree in a mount namespace of its own are read through it.
    let _view = (tree.procs.first()).and_then(|p| crate::util::view::for_dump(p.pid));
    let mut files = file_table(tree, opts);
    let mut locks = LockDump::new(opts.file_locks);
    let mut seccomp = task::seccomp::SeccompDump::default();
    let root_pid = tree.procs.first().map_or(opts.pid, |p| p.pid);
    let mut walk = Walk::new(proc, root_pid, tree.procs.len());
    // The tree's own user namespace: ids are recorded as it sees them.
    let ntasks = tree.procs.iter().map(|p| p.threads.len().max(1)).sum();
    crate::util::progress::tasks_frozen(ntasks as u64);
    let _userns = crate::ns::user::enter_dump(root_pid, &walk.nss.root_ids(), ntasks)?;
    let ipcns = walk.ipcns;
    let cg = CgDump::collect(opts, tree.procs.iter().map(|p| (p.pid, &p.threads)))?;
    // Pages are copied by a second thread while this one (the tracer: only
    // it may make ptrace requests) goes on with the next process.
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    // Counted from the pages files this dump writes.
    let _ = mem::take_page_tally(dir);
    let mut vmas_of = std::collections::HashMap::new();
    // Without TLS, the pages go to the server from the tracer, through a
    // pipe in each task (`vmsplice.rs`).
    let pipe_to = ps
        .filter(|p| vmsplice::wanted() && p.splices())
        .map(|p| (p, opts.lazy_pages));
    let ahead_pids = ahead_pids(tree, early.as_ref());
    let (ahead_tx, ahead) = std::sync::mpsc::sync_channel::<VmasAhead>(VMAS_AHEAD);
    let (walked, pages) = std::thread::scope(|sc| {
        let worker = sc.spawn(move || pagejob::worker(dir, opts, queue, ps));
        sc.spawn(move || read_vmas_ahead(proc, ahead_pids, ahead_tx));
        let walked = (|| -> Result<(), Error> {
            namespaces_first(tree, &mut walk, &mut files, root_pid)?;
            for p in &mut tree.procs {
                let mut out = Sinks {
                    dir,
                    files: &mut files,
                    jobs: &jobs,
                    vmas_of: &mut vmas_of,
                    locks: &mut locks,
                    seccomp: &mut seccomp,
                    cg: &cg,
                    snap: snapshot::wanted(opts) && ps.is_none() && !chain.is_precopy(),
                    chain: &mut *chain,
                    early: &mut early,
                    piped: pipe_to,
                    ahead: &ahead,
                };
                crate::util::check_stop()?;
                // Paths of a process in another mount namespace of the
                // tree are read through its own root.
                let _own = crate::ns::mnt::multi::ProcView::of(root_pid, p.pid);
                walk.process(p, &mut out)?;
            }
            Ok(())
        })();
        // The workers' queues closed: they end.
        drop((jobs, ahead));
        let pages = worker.join().expect("page worker panicked");
        (walked, pages)
    });
    walked?;
    let (mut counts, page_us, deferred) = pages?;
    counts.add(&walk.piped);
    let pids: Vec<i32> = tree.procs.iter().map(|p| p.pid).collect();
    // timens-0.img (the dumping tool's clocks) is written only for a tree
    // in crust's time namespace, as CRIU does: one in its own has
    // timens-ID.img instead.
    let own_time = walk.nss.root_ids().own(crate::ns::ids::NsKind::Time);
    let tuns = seen_tuns(&mut files);
    crate::ns::tree::dump(&crate::ns::tree::DumpCtx {
        dir,
        root_pid,
        ids: walk.nss.root_ids(),
        opts,
        sub_mnt: walk.nss.sub_mnt(),
        sub_net: walk.nss.sub_net(),
        tuns: &tuns,
    })?;
    let ipc_gone = crate::ns::sysvipc::dump(dir, root_pid, ipcns, &pids, &vmas_of)?;
    // Not needed past here, when the image check loads the set again.
    drop(vmas_of);
    debug!("pages copied in {page_us} us, alongside the rest");

    let t_write = Instant::now();
    crate::util::progress::stage("writing images");
    files.write(dir, &mut crate::net::queued_datagrams)?;
    // Connections locked and in repair mode: released if anything below
    // fails (dropped), kept or released by the caller otherwise.
    let mut hold = files
        .kind_mut::<crate::net::inet::InetDump>()
        .map(|i| i.take_hold())
        .unwrap_or_default();
    hold.on_release(files.take_pty_put_back());
    hold.on_kept(Box::new(move || ipc_gone.remove()));
    locks.write(dir).and_then(|()| cg.write(dir))?;
    write_image(
        dir,
        ImageType::Inventory,
        0,
        &[inventory(opts, hold.nft_run_id())],
    )?;
    if opts.cpu_cap & crate::cpuinfo::CAP_IMAGE != 0 {
        crate::cpuinfo::dump(dir)?;
    }
    let pstree = add_helpers(dir, walk.pstree)?;
    write_image(dir, ImageType::Pstree, 0, &pstree)?;
    write_image(dir, ImageType::Seccomp, 0, &[seccomp.entry()])?;
    if !own_time {
        let clocks = crate::ns::time::own_clocks()?;
        write_image(dir, ImageType::Timens, 0, &[clocks])?;
    }
    // Every pages file is written: count them as they ended up.
    let tally = mem::take_page_tally(dir);
    let stats = DumpStats {
        freezing_time_us,
        frozen_time_us: us_since(frozen_at),
        memdump_time_us: walk.memdump_time_us,
        memwrite_time_us: us_since(t_write),
        pages_scanned: counts.scanned,
        pages_written: tally.pages_written,
        pages_skipped_parent: counts.in_parent,
        shpages_scanned: tally.shpages_scanned,
        shpages_written: tally.shpages_written,
        pages_lazy: counts.lazy,
    };
    // A snapshot's set is checked once its pages are copied.
    // So is a pre-copied one, once its pages are moved in (after the thaw).
    (deferred.is_empty() && !chain.is_precopy())
        .then(|| images::check_restorable(opts))
        .transpose()?;
    // Fault injection for the tests (as CRIU's CRIU_FAULT): fail once every
    // image is written; the dump must remove them all.
    if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "images-written") {
        return Err(Error::unsupported(
            "CRUST_FAULT=images-written: failing the dump on purpose".to_string(),
        ));
    }
    Ok((stats, hold, deferred))
}

/// The walk over a frozen tree, parents before children: what it keeps
/// from one process to the next, and the pstree it builds.
struct Walk<'a> {
    proc: &'a ProcRoot,
    /// The root's pid when it heads its own pid namespace.
    pidns: Option<i32>,
    /// The id of the tree's own IPC namespace, if it has one.
    ipcns: Option<u32>,
    /// Namespace ids, numbered as CRIU does.
    nss: TreeNs,
    /// Host pid -> the pid the tree's namespace sees (equal without pidns).
    ns_of: std::collections::HashMap<i32, i32>,
    /// Each live process's namespace ids, as `namespaces_first` found them
    /// (the tree is frozen: read once).
    ns_ids: std::collections::HashMap<i32, NsIds>,
    kobjs: KobjIds,
    next_pages: u32,
    memdump_time_us: u64,
    /// Pages the tracer moved itself (`Sinks::piped`).
    piped: mem::PageCounts,
    pstree: Vec<PstreeEntry>,
}

impl<'a> Walk<'a> {
    fn new(proc: &'a ProcRoot, root_pid: i32, procs: usize) -> Self {
        let pidns = heads_pid_ns(proc, root_pid).then_some(root_pid);
        // Namespace ids, numbered as CRIU does, and the tree's own IPC
        // namespace (its System V objects are dumped).
        let nss = TreeNs::read(root_pid, pidns.is_some());
        let ipcns = nss.own_ipc();
        Walk {
            proc,
            pidns,
            ipcns,
            nss,
            ns_of: std::collections::HashMap::new(),
            ns_ids: std::collections::HashMap::new(),
            kobjs: KobjIds::default(),
            next_pages: 1,
            memdump_time_us: 0,
            piped: mem::PageCounts::default(),
            pstree: Vec::with_capacity(procs),
        }
    }

    /// Dump process `p` (a zombie: its core only) and add it to the pstree.
    fn process(&mut self, p: &mut Proc, out: &mut Sinks<'_>) -> Result<(), Error> {
        let (proc, pid, pidns) = (self.proc, p.pid, self.pidns);
        let stat = crust_proc::stat(proc, pid).map_err(proc_err(pid))?;
        let status = crust_proc::status(proc, pid).map_err(proc_err(pid))?;
        let nspid = ns_last(&status.ns_pid, pid);
        self.ns_of.insert(pid, nspid);
        let ns_ppid = match p.ppid {
            0 => 0,
            ppid => *self.ns_of.get(&ppid).ok_or_else(|| {
                Error::unsupported(format!(
                    "process {pid}: its parent {ppid} was not walked before it"
                ))
            })?,
        };
        let (pgid, sid) = if pidns.is_some() {
            (ns_last(&status.ns_pgid, 0), ns_last(&status.ns_sid, 0))
        } else {
            (stat.pgrp, stat.session)
        };
        let entry = |threads: Vec<u32>| PstreeEntry {
            pid: nspid as u32,
            ppid: ns_ppid as u32,
            pgid: pgid as u32,
            sid: sid as u32,
            threads,
            ..Default::default()
        };
        if p.zombie {
            let core = task::zombie_core(&stat);
            write_image(out.dir, ImageType::Core, nspid as u64, &[core])?;
            self.pstree.push(entry(vec![0]));
            return Ok(());
        }
        let ns = match self.ns_ids.remove(&pid) {
            Some(ids) => ids,
            None => self.nss.check(pid, &NsInodes::of(pid))?,
        };
        let mut tids = Vec::with_capacity(p.threads.len());
        for t in &p.threads {
            let tid = t.pid();
            tids.push(if tid == pid {
                nspid
            } else {
                let ts = crust_proc::task_status(proc, pid, tid).map_err(proc_err(tid))?;
                ns_last(&ts.ns_pid, tid)
            });
        }
        let t_mem = Instant::now();
        let ids = ProcIds {
            nspid,
            tids: tids.clone(),
            kobj: self.kobjs.assign(pid)?,
            pages_id: self.next_pages,
            ns,
        };
        let piped = dump_process(proc, p, &stat, &status, out, &ids)?;
        self.piped.add(&piped);
        self.memdump_time_us += us_since(t_mem);
        self.pstree
            .push(entry(tids.iter().map(|t| *t as u32).collect()));
        self.next_pages += 1;
        Ok(())
    }
}

/// Ids of the kernel objects a process may share with others (mm, fd
/// table, fs, signal handlers), numbered per kind as CRIU does, from 2
/// (1 is crust's own). Sharing is found with kcmp, whose answer orders
/// the objects: per kind, one process per object seen is kept sorted in
/// that order, so a process is placed by a binary search (log n kcmp
/// calls, not one per process seen: a 1,000-process tree took 2 million).
#[derive(Default)]
struct KobjIds {
    /// Per kind: (host pid, id) of one holder of each object seen so far,
    /// in the kernel's order of the objects.
    known: [Vec<(i32, u32)>; 4],
    /// Per kind: kcmp gave no order (or failed) once; searched one by one
    /// from then on (and new objects appended).
    unordered: [bool; 4],
    next: [u32; 4],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kobj {
    vm: u32,
    files: u32,
    fs: u32,
    sighand: u32,
    /// The fd table was seen before: its fdinfo image is already written.
    files_shared: bool,
}

/// Where `pid`'s object of `kind` is in `known` (sorted by `order`):
/// `Ok(i)`, the object of `known[i]`; `Err(i)`, a new one, which goes at
/// `i`; `None` when `order` gave no answer.
fn search_kobj(
    known: &[(i32, u32)],
    pid: i32,
    kind: i32,
    order: &impl Fn(i32, i32, i32) -> Option<std::cmp::Ordering>,
) -> Option<Result<usize, usize>> {
    let (mut lo, mut hi) = (0, known.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (other, _) = *known.get(mid)?;
        match order(pid, other, kind)? {
            std::cmp::Ordering::Equal => return Some(Ok(mid)),
            std::cmp::Ordering::Less => hi = mid,
            std::cmp::Ordering::Greater => lo = mid + 1,
        }
    }
    Some(Err(lo))
}

impl KobjIds {
    fn assign(&mut self, pid: i32) -> Result<Kobj, Error> {
        self.assign_with(pid, |a, b, kind| {
            crust_sys::process::kcmp_order(a, b, kind).ok().flatten()
        })
    }

    /// [`Self::assign`] with `order(pid, other, kcmp type)` ordering two
    /// processes' objects (kcmp in a dump, a table in tests; `None`: no
    /// order).
    fn assign_with(
        &mut self,
        pid: i32,
        order: impl Fn(i32, i32, i32) -> Option<std::cmp::Ordering>,
    ) -> Result<Kobj, Error> {
        // kcmp types: KCMP_VM 1, KCMP_FILES 2, KCMP_FS 3, KCMP_SIGHAND 4.
        let mut ids = [0u32; 4];
        let mut shared = [false; 4];
        let kinds = self
            .known
            .iter_mut()
            .zip(self.unordered.iter_mut())
            .zip(self.next.iter_mut())
            .zip(ids.iter_mut().zip(shared.iter_mut()));
        for (k, (((known, unordered), next), (id, shared))) in kinds.enumerate() {
            let kind = k as i32 + 1;
            let place = match *unordered {
                false => search_kobj(known, pid, kind, &order),
                true => None,
            };
            let place = place.unwrap_or_else(|| {
                *unordered = true;
                known
                    .iter()
                    .position(|(other, _)| order(pid, *other, kind).is_some_and(|o| o.is_eq()))
                    .ok_or(known.len())
            });
            *id = match place {
                Ok(i) => {
                    *shared = true;
                    known.get(i).map_or(0, |(_, id)| *id)
                }
                Err(at) => {
                    if *next == 0 {
                        *next = TASK_KOBJ_ID;
                    }
                    *next += 1;
                    known.insert(at.min(known.len()), (pid, *next - 1));
                    *next - 1
                }
            };
        }
        if shared[0] {
            return Err(Error::unsupported(format!(
                "process {pid} shares its memory with another process (vfork or CLONE_VM)"
            )));
        }
        Ok(Kobj {
            vm: ids[0],
            files: ids[1],
            fs: ids[2],
            sighand: ids[3],
            files_shared: shared[1],
        })
    }
}

/// How one process is named in the images.
struct ProcIds {
    /// Its pid and its threads' ids in the tree's pid namespace.
    nspid: i32,
    tids: Vec<i32>,
    /// mm/files/fs/sighand ids, and its pages-N.img id.
    kobj: Kobj,
    pages_id: u32,
    /// Its namespaces' ids.
    ns: NsIds,
}

/// Dump one live process: its threads' cores, mm, pages, fds and fs.
fn dump_process(
    proc: &ProcRoot,
    p: &mut Proc,
    stat: &crust_proc::Stat,
    status: &crust_proc::Status,
    out: &mut Sinks<'_>,
    ids: &ProcIds,
) -> Result<mem::PageCounts, Error> {
    let (dir, jobs) = (out.dir, out.jobs);
    let files = &mut *out.files;
    let pid = p.pid;
    let (kobj, pages_id, nspid) = (ids.kobj, ids.pages_id, ids.nspid);
    let t0 = Instant::now();
    let early = out.early.take_if(|e| e.pid() == pid);
    let vmas = match early {
        Some(e) => mem::collect_vmas_frozen(proc, pid, Some(e))?,
        None => vmas_read_ahead(out.ahead, proc, pid)?,
    };
    debug!("{pid}: {} vmas read in {} us", vmas.len(), us_since(t0));

    // Facts only the tasks themselves can tell: run syscalls inside them
    // (seccomp suspended for them; rseq sections cut by the stop aborted).
    // Each thread's status read once (the main thread's is `status`).
    let statuses = thread_statuses(proc, p, status)?;
    task::misc::refuse_sigtrap_in(pid, &p.threads, &statuses)?;
    task::misc::refuse_time_for_children(pid)?;
    let modes = task::seccomp::suspend_with(
        &p.threads,
        &statuses,
        crust_sys::ptrace::options::TRACESYSGOOD,
    )?;
    for t in p.threads.iter_mut() {
        task::misc::abort_rseq_cs(t)?;
    }
    let (pinside, mut tinside, uffd) = collect_inside(p, &vmas, out.snap)?;
    let sc = out.seccomp.collect(&p.threads, &modes)?;
    for (ti, s) in tinside.iter_mut().zip(sc) {
        ti.seccomp = s;
    }
    debug!("{pid}: state read inside the task by {} us", us_since(t0));
    // Guard regions and huge pages, found while the rest is collected
    // (after the syscalls run inside the task: the walks hold its mmap
    // lock, which those may need).
    let vmas = std::sync::Arc::new(vmas);
    let walk_guards = !out.chain.knows_guards(pid);
    let extents = mem::walk_extents(pid, &vmas, walk_guards);

    // If the page worker has stopped on an error, the send fails and the
    // error comes out when it is joined.
    out.vmas_of.insert(pid, vmas.clone());
    let since = out.chain.dirty(pid, nspid, &vmas);
    // A process the pre-copy covered: its guard regions from the
    // pre-copy's and what was written since (not a walk of all memory).
    let guards_now = match &since {
        Some(d) if !walk_guards => out.chain.guards_now(pid, &vmas, &d.0),
        _ => None,
    };
    let job = PageJob {
        pid,
        nspid,
        vmas: vmas.clone(),
        pages_id,
        parent: out.vmas_of.get(&p.ppid).map(|v| (p.ppid, v.clone())),
        uffd,
        since,
        lazy: lazy::ranges(&vmas, &p.threads),
    };
    let piped = match out.piped {
        Some((ps, leave_lazy)) if job.uffd.is_none() => job.run_piped(ps, p, leave_lazy)?,
        _ => {
            let _ = jobs.send(Job::Pages(job));
            mem::PageCounts::default()
        }
    };
    let to = (dir, out.cg, jobs);
    write_cores(
        proc,
        p,
        (stat, &statuses),
        &pinside,
        &tinside,
        to,
        &ids.tids,
    )?;
    debug!("{pid}: cores written by {} us", us_since(t0));
    let mut mm = mem::build_mm(proc, pid, stat, &vmas, &pinside, files)?;
    let fds = if kobj.files_shared {
        Vec::new()
    } else {
        files.collect_fds(proc, pid)?
    };
    let own_fds = (!kobj.files_shared).then_some(&fds[..]);
    mem::link_socket_vmas(pid, &mut mm, files, own_fds)?;
    let extents = extents.join(pid)?;
    // Guard regions after the real VMAs, as CRIU lists them.
    mm.vmas.extend(match guards_now {
        Some(g) => mem::guard_vma_entries(&g?),
        None if walk_guards => extents.guards,
        None => mem::guard_entries(pid)?,
    });
    // Where transparent huge pages back its memory (crust's own image).
    mem::write_huge_ranges(dir, nspid as u64, &extents.huge)?;
    // Only the fds whose fdinfo showed a lock are read again for it.
    let locked: Vec<_> = fds
        .iter()
        .filter(|f| files.fd_locked(f.fd))
        .cloned()
        .collect();
    out.locks.collect(pid, nspid, &locked)?;
    let cwd = crust_proc::cwd(proc, pid).map_err(proc_err(pid))?;
    let root = crust_proc::root_link(proc, pid).map_err(proc_err(pid))?;
    let cwd_id = files.add_dir(pid, &cwd, "cwd")?;
    let root_id = files.add_dir(pid, &root, "root")?;
    let mut kids = task_ids(kobj.vm, &ids.ns);
    kids.files_id = kobj.files;
    kids.fs_id = kobj.fs;
    kids.sighand_id = kobj.sighand;
    // Written by the page worker: the tracer goes on with the next process.
    write_later(jobs, dir, ImageType::Ids, nspid as u64, vec![kids]);
    write_later(jobs, dir, ImageType::Mm, nspid as u64, vec![mm]);
    let fs = FsEntry {
        cwd_id,
        root_id,
        umask: Some(status.umask.unwrap_or(0o022)),
        ..Default::default()
    };
    write_later(jobs, dir, ImageType::Fs, nspid as u64, vec![fs]);
    if !kobj.files_shared {
        write_later(jobs, dir, ImageType::Fdinfo, kobj.files as u64, fds);
    }
    Ok(piped)
}

/// Run the syscalls that read what only a task itself can tell (signal
/// actions, timers, sigaltstack...), in every thread of `p`, from a
/// scratch area mapped for the purpose; the tasks are cured (registers,
/// signal mask, and a planted syscall instruction if there is no vDSO, put
/// back) whatever happens.
type Inside = (
    task::ProcInside,
    Vec<task::ThreadInside>,
    Option<crust_sys::uffd::Uffd>,
);

/// Where `main` (of process `pid`, with `vmas`) makes remote syscalls: a
/// `syscall` the vDSO already holds, so no byte of the task's code is
/// changed; without a vDSO, one written at the start of an executable
/// mapping (put back by `cure`).
pub(super) fn syscall_site(
    main: &mut Task,
    pid: i32,
    vmas: &[mem::Vma],
) -> Result<RemoteAddr, Error> {
    if let Some(ip) = mem::Vma::vdso_syscall(pid, vmas) {
        main.use_syscall_ip(ip);
        return Ok(ip);
    }
    let ip = vmas
        .iter()
        .find(|v| v.map.exec && v.usable_for_syscall())
        .map(|v| RemoteAddr(v.map.start))
        .ok_or_else(|| Error::unsupported(format!("process {pid} has no executable mapping")))?;
    main.infect(ip).map_err(compel_err(pid))?;
    Ok(ip)
}

fn collect_inside(p: &mut Proc, vmas: &[mem::Vma], snap: bool) -> Result<Inside, Error> {
    let pid = p.pid;
    let scratch_len = 4 * PAGE_SIZE;
    let Some((main, others)) = p.threads.split_first_mut() else {
        return Err(Error::NoSuchProcess { pid });
    };
    let syscall_ip = syscall_site(main, pid, vmas)?;
    let (area, area_len, batch_code) = scratch_area(main, pid, scratch_len)?;
    let scratch = area + (area_len - scratch_len);
    let collected = catch_panic(|| -> Result<_, Error> {
        let mut r = Remote {
            task: &mut *main,
            scratch: RemoteAddr(scratch),
            scratch_len,
            batch_code: None,
        };
        // The process and its main thread, in one batch.
        let (pinside, main_inside) = task::collect_process(&mut r, batch_code)?;
        // Test-only: a crust bug while a task runs remote syscalls (its
        // registers borrowed, the scratch area mapped).
        if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "panic-remote") {
            panic!("CRUST_FAULT=panic-remote: panicking on purpose in a remote call");
        }
        let mut tinside = vec![main_inside];
        for t in others.iter_mut() {
            t.use_syscall_ip(syscall_ip);
            let mut r = Remote {
                task: t,
                scratch: RemoteAddr(scratch),
                scratch_len,
                batch_code: None,
            };
            tinside.push(task::collect_thread(&mut r, batch_code)?);
        }
        // -R: the userfaultfd of a snapshot, made in the task.
        let mut r = Remote {
            task: &mut *main,
            scratch: RemoteAddr(scratch),
            scratch_len,
            batch_code: None,
        };
        let uffd = match snap {
            true => snapshot::take_uffd(&mut r)?,
            false => None,
        };
        Ok((pinside, tinside, uffd))
    });
    // Stepped through entry and exit, not single-stepped (one stop fewer):
    // the kernel clears a single-step's state on PTRACE_DETACH and on any
    // other resume, not when the tracer dies, so a task let go by a killed
    // crust would die of a SIGTRAP (e2e kill-netmisc-netlock).
    let _ = main.syscall(libc::SYS_munmap, [area, area_len, 0, 0, 0, 0]);
    for t in p.threads.iter_mut() {
        t.cure().map_err(compel_err(t.pid()))?;
    }
    collected
}

/// Map the scratch area of [`collect_inside`] in `main`: a page holding
/// the syscall-table loop (so the process's state is read in a few stops)
/// then `scratch_len` bytes; (address, length, the loop's address). A
/// task that may not map writable and executable memory (memory-deny-
/// write-execute) gets the scratch area alone, and its calls run one by
/// one.
pub(super) fn scratch_area(
    main: &mut Task,
    pid: i32,
    scratch_len: u64,
) -> Result<(u64, u64, Option<RemoteAddr>), Error> {
    let map = |main: &mut Task, len: u64, prot: i32| {
        main.syscall(
            libc::SYS_mmap,
            [
                0,
                len,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    };
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    let len = scratch_len + PAGE_SIZE;
    // Test-only (`CRUST_FAULT=no-exec-scratch`): as for a task that may
    // not map writable and executable memory.
    let refused = std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "no-exec-scratch");
    if let Some(Ok(area)) = (!refused).then(|| map(main, len, rwx)) {
        let code = RemoteAddr(area);
        match crust_sys::mem::write(pid, code, &crust_compel::BATCH_CODE) {
            Ok(n) if n == crust_compel::BATCH_CODE.len() => return Ok((area, len, Some(code))),
            _ => {
                let _ = main.syscall(libc::SYS_munmap, [area, len, 0, 0, 0, 0]);
            }
        }
    }
    let area =
        map(main, scratch_len, libc::PROT_READ | libc::PROT_WRITE).map_err(compel_err(pid))?;
    Ok((area, scratch_len, None))
}

/// The status of every thread of `p`, in order: the main thread's is
/// `main`, the others' are read.
fn thread_statuses(
    proc: &ProcRoot,
    p: &Proc,
    main: &crust_proc::Status,
) -> Result<Vec<crust_proc::Status>, Error> {
    let others = p.threads.get(1..).unwrap_or_default();
    let mut out = vec![main.clone()];
    out.extend(task::thread_statuses(proc, p.pid, others)?);
    Ok(out)
}

/// Write the core image of every thread of `p` (the main thread's `stat`
/// already read, the others' read here; every thread's status read, in
/// order), named by its id in the tree's pid namespace (`tids`).
fn write_cores(
    proc: &ProcRoot,
    p: &Proc,
    (stat, statuses): (&crust_proc::Stat, &[crust_proc::Status]),
    pinside: &task::ProcInside,
    tinside: &[task::ThreadInside],
    (dir, cg, jobs): (&Path, &CgDump, &std::sync::mpsc::Sender<Job>),
    tids: &[i32],
) -> Result<(), Error> {
    let pid = p.pid;
    let multi = p.threads.len() > 1;
    let threads = p.threads.iter().zip(tinside.iter()).zip(tids.iter());
    for (i, ((t, ti), nstid)) in threads.enumerate() {
        let tid = t.pid();
        let tstatus = statuses.get(i).ok_or(Error::NoSuchProcess { pid: tid })?;
        let tstat = if i == 0 {
            stat.clone()
        } else {
            crust_proc::task_stat(proc, pid, tid).map_err(proc_err(tid))?
        };
        let mut core = task::build_core(
            proc,
            pid,
            &task::CoreParts {
                task: t,
                stat: &tstat,
                status: tstatus,
                thread: ti,
                process: (i == 0).then_some(pinside),
                multi_threaded: multi,
            },
        )?;
        cg.record(tid, &mut core);
        write_later(jobs, dir, ImageType::Core, *nstid as u64, vec![core]);
    }
    Ok(())
}

/// Where a process's dump goes: the images directory, the tree's file
/// table, and the page worker.
struct Sinks<'a> {
    dir: &'a Path,
    files: &'a mut FileTable,
    jobs: &'a std::sync::mpsc::Sender<Job>,
    /// VMAs of the processes dumped so far, by host pid.
    vmas_of: &'a mut std::collections::HashMap<i32, std::sync::Arc<Vec<mem::Vma>>>,
    /// File locks held through the fds (--file-locks).
    locks: &'a mut LockDump,
    seccomp: &'a mut task::seccomp::SeccompDump,
    /// The css set of each thread.
    cg: &'a CgDump,
    /// A snapshot (-R): pages copied while the tree runs.
    snap: bool,
    /// The write tracking of a parent image set (incremental dumps).
    chain: &'a mut predump::Chain,
    /// The root's VMAs read before the freeze.
    early: &'a mut Option<mem::EarlyVmas>,
    /// The page server whose streams take pipes, and `--lazy-pages`: the
    /// tracer moves each process's pages itself ([`PageJob::run_piped`]).
    piped: Option<(&'a crate::pageserver::PageServerSink, bool)>,
    /// The VMAs read ahead of the walk (see [`vmas_read_ahead`]).
    ahead: &'a std::sync::mpsc::Receiver<VmasAhead>,
}

/// A process's VMAs read ahead of the walk, with its pid.
type VmasAhead = (i32, Result<Vec<mem::Vma>, Error>);

/// How many processes' VMAs may be read ahead of the tracer.
const VMAS_AHEAD: usize = 8;

/// The processes whose VMAs are read ahead of the walk, in its order:
/// every live one but the one whose VMAs were read before the freeze
/// (checked by the tracer itself).
fn ahead_pids(tree: &Tree, early: Option<&mem::EarlyVmas>) -> Vec<i32> {
    (tree.procs.iter())
        .filter(|p| !p.zombie && early.is_none_or(|e| e.pid() != p.pid))
        .map(|p| p.pid)
        .collect()
}

/// The reader thread of the walk: the VMAs of the frozen processes
/// `pids` (smaps, a page-table walk per mapping), read ahead of the
/// tracer into `to`; it stops when the tracer is gone (the walk ended or
/// failed).
fn read_vmas_ahead(proc: &ProcRoot, pids: Vec<i32>, to: std::sync::mpsc::SyncSender<VmasAhead>) {
    for pid in pids {
        if to.send((pid, mem::collect_vmas(proc, pid))).is_err() {
            break;
        }
    }
}

/// The VMAs of frozen process `pid`: those read ahead for it, or read now
/// (a process the reader did not have in that order, or a reader gone).
fn vmas_read_ahead(
    ahead: &std::sync::mpsc::Receiver<VmasAhead>,
    proc: &ProcRoot,
    pid: i32,
) -> Result<Vec<mem::Vma>, Error> {
    // The walk's order is the reader's: any other process before it was
    // not walked, and its VMAs are dropped.
    while let Ok((p, vmas)) = ahead.recv() {
        if p == pid {
            return vmas;
        }
    }
    mem::collect_vmas(proc, pid)
}

/// The kobj ids of a task: `id` for its mm, files, fs and sighand, and
/// its namespaces' ids `ns` (see [`crate::ns::ids`]).
fn task_ids(id: u32, ns: &NsIds) -> TaskKobjIdsEntry {
    let mut e = TaskKobjIdsEntry {
        vm_id: id,
        files_id: id,
        fs_id: id,
        sighand_id: id,
        ..Default::default()
    };
    ns.fill(&mut e);
    e
}

#[cfg(test)]
mod tests;
