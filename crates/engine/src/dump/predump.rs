//! `crust pre-dump` and the incremental side of `dump` (issue 15).
//!
//! A pre-dump freezes the tree only to read its VMAs, start (or refresh)
//! the write tracking (`mem/track.rs`) and scan the pagemaps; the tree
//! then runs again while the pages are copied. A page written during the
//! copy was protected again before the tree ran, so the next run of the
//! chain stores it. The tracking goes to a keeper (`mem/keeper.rs`) found
//! by the next run through `--prev-images-dir`. A run given a parent set
//! whose tracking it can take stores only the pages written since; the
//! other pages to store are announced `PE_PARENT`, as CRIU writes them.
//! The images are CRIU's pre-dump set: inventory, pagemap-PID and
//! pages-N of each process, the shared memory pagemaps, stats-dump.

use super::images::{inventory, write_stats};
use super::precheck::{precheck, DEFAULT_TIMEOUT};
use super::seize::seize;
use super::{catch_panic, outdir, run_hook, Tree};
use crate::mem::keeper;
use crate::mem::objtrack::{self, ObjRange, ObjectSince, ObjectsSince};
use crate::mem::track::{merge, split_by, start_tracking, with_causes, Tracker};
use crate::pageserver::proto::Target;
use crate::pageserver::PageServerSink;
use crate::util::{compel_err, proc_err, us_since, write_image};
use crate::{mem, task, Action, DumpStats, Error, Options};
use crust_images::image::ImageType;
use crust_proc::ProcRoot;
use log::{debug, info, warn};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The write tracking of a run: taken from the parent set's keeper (the
/// trackers that may answer "written since the parent"), by host pid.
#[derive(Default)]
pub(super) struct Chain {
    kept: HashMap<i32, Tracker>,
    /// The parent image set.
    parent: Option<PathBuf>,
    /// `--page-server`: the server holds the parent set's pages, and says
    /// whether it has a process's parent pagemap.
    ps: Option<Arc<PageServerSink>>,
    /// The parent set is the pre-copy of this very dump (`dump -R`,
    /// `precopy.rs`), not one named by `--prev-images-dir`.
    precopy: bool,
    /// The shared objects this run stores against the parent set, once
    /// [`Chain::objects_since`] has found them.
    objects: Option<Arc<ObjectsSince>>,
}

/// A dump's connection to its page server (`--page-server`), shared with
/// the chain and the store of shared objects.
pub(super) type Server = Option<Arc<PageServerSink>>;

/// What the dump of one process stores against the parent set: the
/// ranges written since, the ranges the parent's pagemap holds (stored
/// there or in its own parent), and every range it lists, whatever it
/// says of them (held, shared copy-on-write, left on a source); and the
/// shared objects stored against the parent set ([`Chain::objects_since`]).
pub(super) type Dirty = (Ranges, Ranges, Ranges, Option<Arc<ObjectsSince>>);

/// Sorted, disjoint byte ranges.
type Ranges = Vec<Range<u64>>;

impl Chain {
    /// The tracking of the parent set named by `--prev-images-dir`, if
    /// its keeper still holds it; without it every page is stored.
    pub(super) fn take(opts: &Options, ps: Option<&Arc<PageServerSink>>) -> Chain {
        let Some(prev) = parent_dir(opts) else {
            return Chain::default();
        };
        let ps = ps.cloned();
        match keeper::take_from(&prev) {
            Ok(ts) => {
                info!(
                    "Write tracking of {} processes taken from the keeper of {}",
                    ts.len(),
                    prev.display()
                );
                Chain {
                    kept: ts.into_iter().map(|t| (t.pid(), t)).collect(),
                    parent: Some(prev),
                    ps,
                    precopy: false,
                    objects: None,
                }
            }
            Err(why) => {
                keeper::not_kept(&why);
                Chain::default()
            }
        }
    }

    /// The chain of a `dump -R` pre-copy: the trackers started for it and
    /// the set it wrote in `dir`.
    pub(super) fn precopied(trackers: Vec<Tracker>, dir: PathBuf) -> Chain {
        Chain {
            kept: trackers.into_iter().map(|t| (t.pid(), t)).collect(),
            parent: Some(dir),
            ps: None,
            precopy: true,
            objects: None,
        }
    }

    /// Whether the guard regions of `pid` may be found from those its
    /// tracker carries (walked by the pre-copy or the parent pre-dump once
    /// the memory was protected: [`note_guards`]; see
    /// [`Chain::guards_now`]) rather than by a walk of all its memory.
    pub(super) fn knows_guards(&self, pid: i32) -> bool {
        self.kept.get(&pid).is_some_and(|t| t.guards().is_some())
    }

    /// The guard regions of `pid` now (frozen), from those the pre-copy
    /// found after the protection and what tracking says changed since:
    /// installing or removing a guard counts as a write of its pages
    /// (`crust-sys` test `guard_regions_count_as_written`), so only the
    /// pages written since (`dirty`, the answer of [`Chain::dirty`]) and
    /// the mappings not tracked are walked again; a known region is kept
    /// where its pages are tracked and not written. None: not known here
    /// (walk everything).
    pub(super) fn guards_now(
        &self,
        pid: i32,
        vmas: &[mem::Vma],
        dirty: &[Range<u64>],
    ) -> Option<Result<Vec<Range<u64>>, Error>> {
        let kept = self.kept.get(&pid)?;
        let (known, tracked) = (kept.guards()?, kept.tracked());
        let all = merge(vmas.iter().map(|v| v.map.start..v.map.end).collect());
        let (inside, outside) = split_by(&all, tracked);
        let (_, clean) = split_by(&inside, dirty);
        let mut walk = outside;
        walk.extend(dirty.iter().cloned());
        let walk = merge(walk);
        let (mut out, _) = split_by(known, &clean);
        match mem::guards_in(pid, &walk) {
            Ok(found) => out.extend(found),
            Err(e) => return Some(Err(e)),
        }
        let out = merge(out);
        debug!(
            "{pid}: {} guard regions ({} known from the protection, {} ranges walked again)",
            out.len(),
            known.len(),
            walk.len()
        );
        Some(Ok(out))
    }

    /// Is the parent set this dump's own pre-copy?
    pub(super) fn is_precopy(&self) -> bool {
        self.precopy
    }

    /// Every page sent: let go of the page server and close its sink
    /// (the server confirms it has them all).
    pub(super) fn close_server(&mut self, ps: Server, opts: &Options) -> Result<(), Error> {
        self.ps = None;
        crate::pageserver::close_sink(ps, opts)
    }

    /// The pages of `pid`'s private VMAs written since the parent set, its
    /// tracker protecting them again; None (store every page) for a
    /// process the parent's tracking does not cover. The tracker stays in
    /// the chain (a pre-dump hands it on; a dump drops it).
    pub(super) fn dirty(&mut self, pid: i32, nspid: i32, vmas: &[mem::Vma]) -> Option<Dirty> {
        let t = self.kept.get_mut(&pid)?;
        if let Some(ps) = &self.ps {
            // As CRIU asks (PS_IOV_PARENT): pages go as in the parent only
            // when the server has the parent's pagemap.
            match ps.has_parent(Target::Task(nspid as u64)) {
                Ok(true) => {}
                Ok(false) => {
                    warn!("The page server has no parent set for process {pid} (start it with --prev-images-dir): every page of {pid} is sent");
                    return None;
                }
                Err(e) => {
                    warn!("{e}: every page of {pid} is sent");
                    return None;
                }
            }
        }
        let (has, lists) = match parent_pages(self.parent.as_deref()?, nspid) {
            Ok(h) => h,
            Err(e) => {
                warn!("{e}: every page of {pid} is dumped");
                return None;
            }
        };
        if self.precopy && super::precopy::late_on_purpose() {
            // Test-only: the pages written during the pre-copy are not
            // stored again, so the image is not one moment's.
            return Some((Vec::new(), has, lists, self.objects.clone()));
        }
        match t.take_dirty(&tracked_ranges(vmas)) {
            Ok(d) => Some((d, has, lists, self.objects.clone())),
            Err(e) => {
                warn!("{e}: every page of {pid} is dumped");
                self.kept.remove(&pid);
                None
            }
        }
    }

    /// Which shared anonymous memory objects this run stores against the
    /// parent set, found while the tree is frozen and before any process's
    /// pages are planned (`mem/objtrack.rs`): an object qualifies when
    /// every shared mapping of it in the tree (`pids`, live) lies within
    /// one its process's watch tracked since the parent run, no event
    /// broke that tracking, and the parent set holds the object's pagemap
    /// (with a page server: the server says so, and crust's record of the
    /// runs sent says what it holds). Every watch is scanned (protected
    /// again for the next run) either way. The answer rides with
    /// [`Chain::dirty`]'s.
    pub(super) fn objects_since(&mut self, proc: &ProcRoot, pids: &[i32]) {
        self.objects = None;
        let mut dirty: HashMap<u64, Ranges> = HashMap::new();
        let mut broken: HashSet<u64> = HashSet::new();
        for t in self.kept.values_mut() {
            if let Some(w) = t.objects_mut() {
                let (written, whole) = w.take();
                broken.extend(whole);
                for (ino, r) in written {
                    dirty.entry(ino).or_default().extend(r);
                }
            }
        }
        let Some(parent) = self.parent.clone() else {
            return;
        };
        // No watch: nothing can be stored against the parent; the maps of
        // every process are not read (a frozen tree of many processes
        // would wait for them).
        if !self.kept.values().any(|t| t.objects().is_some()) {
            return;
        }
        // Every shared mapping of an object now, and whether all of an
        // object's are covered.
        let mut covered: HashMap<u64, bool> = HashMap::new();
        for &pid in pids {
            let Ok(maps) = crust_proc::maps(proc, pid) else {
                return;
            };
            let watch = self.kept.get(&pid).and_then(|t| t.objects());
            for m in maps
                .iter()
                .filter(|m| m.shared && objtrack::is_anon_object(m))
            {
                let ok = watch.is_some_and(|w| w.covers(m));
                *covered.entry(m.inode).or_insert(true) &= ok;
            }
        }
        let mut out = ObjectsSince::new();
        for (ino, ok) in covered {
            if !ok || broken.contains(&ino) {
                debug!("shared object ino {ino}: stored whole (not every mapping of it tracked since the parent set)");
                continue;
            }
            match self.object_parent_pages(&parent, ino as u32 as u64) {
                Ok(Some(parent_has)) => {
                    let d = merge(dirty.remove(&ino).unwrap_or_default());
                    out.insert(
                        ino,
                        ObjectSince {
                            dirty: d,
                            parent_has,
                        },
                    );
                }
                Ok(None) => debug!("shared object ino {ino}: stored whole (not in the parent set)"),
                Err(e) => warn!("{e}: shared object ino {ino} stored whole"),
            }
        }
        self.objects = Some(Arc::new(out));
    }

    /// The pages of shared object `shmid` the parent set `dir` holds
    /// (stored there or in its own parent); None: it has no pagemap of
    /// that object. With a page server, the server must say it has the
    /// object's parent pagemap (PS_IOV_PARENT), and what it holds is read
    /// from crust's record of the runs sent.
    fn object_parent_pages(&self, dir: &Path, shmid: u64) -> Result<Option<Ranges>, Error> {
        if let Some(ps) = &self.ps {
            if !ps.has_parent(Target::Object(shmid))? {
                return Ok(None);
            }
        }
        let record = crate::pageserver::object_record_name(shmid);
        let ty = ImageType::ShmemPagemap;
        if !dir.join(ty.file_name(shmid)).exists() && !dir.join(&record).exists() {
            return Ok(None);
        }
        Ok(Some(owner_parent_pages(dir, ty, shmid, &record)?.0))
    }
}

/// `dump --track-mem` of a tree left running: tracking would have to be
/// started in a dump, which crust does only in `pre-dump`. A dump that
/// kills the tree has nothing left to track: the option is moot there.
pub(super) fn refuse_track_running(opts: &Options) -> Result<(), Error> {
    if opts.track_mem && (opts.leave_running || opts.leave_stopped) {
        return Err(Error::unsupported(
            "dump --track-mem with --leave-running/--leave-stopped (use `crust pre-dump` to start tracking)",
        ));
    }
    Ok(())
}

/// The pages the parent set's pagemap of process `nspid` holds (stored
/// there, or in its own parent), and every page it lists. A set whose
/// pages went to a page server has crust's record of the runs sent
/// instead.
fn parent_pages(dir: &Path, nspid: i32) -> Result<(Ranges, Ranges), Error> {
    let record = crate::pageserver::record_name(nspid as u64);
    owner_parent_pages(dir, ImageType::Pagemap, nspid as u64, &record)
}

/// [`parent_pages`] of a pagemap of type `ty` (a process's or a shared
/// object's) of id `id`, or of crust's record `record` of the runs sent to
/// a page server.
fn owner_parent_pages(
    dir: &Path,
    ty: ImageType,
    id: u64,
    record: &str,
) -> Result<(Ranges, Ranges), Error> {
    use crust_images::consts::pe;
    use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
    let mut name = ty.file_name(id);
    if !dir.join(&name).exists() && dir.join(record).exists() {
        name = record.to_string();
    }
    let err = |source| Error::Image {
        what: format!("cannot read the parent's {name} in {}", dir.display()),
        source,
    };
    let mut r = crust_images::image::ImageReader::open_typed(dir, ty, &name).map_err(err)?;
    let _: Option<PagemapHead> = r.read_entry().map_err(err)?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(err)?;
    let mut has = Vec::with_capacity(entries.len());
    let mut lists = Vec::with_capacity(entries.len());
    for e in entries {
        let n = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let flags = e.flags.unwrap_or(pe::PRESENT);
        let end = e
            .vaddr
            .saturating_add(n.saturating_mul(crust_sys::PAGE_SIZE));
        if e.in_parent == Some(true) || flags & (pe::PRESENT | pe::PARENT) != 0 {
            has.push(e.vaddr..end);
        }
        lists.push(e.vaddr..end);
    }
    Ok((merge(has), merge(lists)))
}

/// The parent image set, as the images directory's `parent` link will
/// name it (a relative path is relative to the images directory).
fn parent_dir(opts: &Options) -> Option<PathBuf> {
    opts.prev_images_dir
        .as_ref()
        .map(|p| opts.images_dir.join(p))
}

/// `--prev-images-dir`: see [`mem::chain::link_parent`].
pub(super) fn link_parent(opts: &Options) -> Result<(), Error> {
    mem::chain::link_parent(opts)
}

/// The ranges whose writes are tracked: every VMA whose pages are stored
/// (the vDSO and AIO rings are stored whole anyway).
pub(super) fn tracked_ranges(vmas: &[mem::Vma]) -> Vec<Range<u64>> {
    merge(
        vmas.iter()
            .filter(|v| v.dumps_pages())
            .map(|v| v.map.start..v.map.end)
            .collect(),
    )
}

/// The page filter of [`Dirty`].
pub(super) fn as_since(d: &Dirty) -> mem::Since<'_> {
    mem::Since {
        dirty: &d.0,
        parent_has: &d.1,
        parent_lists: &d.2,
        objects: d.3.as_ref(),
    }
}

/// What the frozen part of a pre-dump found for one process.
pub(super) struct Planned {
    pub(super) pid: i32,
    pub(super) nspid: i32,
    pub(super) vmas: Vec<mem::Vma>,
    pub(super) plan: mem::PagePlan,
}

/// Walk the guard regions of each tracked process, its memory protected
/// (the tree running), and note them with its tracker, for this dump's
/// freeze (`dump -R`'s pre-copy) or the next run (a pre-dump's, through
/// the keeper): that freeze then walks again only the pages written
/// since and the mappings not tracked (`Chain::guards_now`). Installing or removing a guard counts
/// as a write of its pages, so a change after the protection, before or
/// after this walk, is walked again there. A process that cannot be
/// walked (gone) is left unnoted: the next run walks all of it.
pub(super) fn note_guards(trackers: &mut [Tracker]) {
    let t = Instant::now();
    for tr in trackers.iter_mut() {
        let pid = tr.pid();
        match mem::guard_regions(pid) {
            Ok(g) => tr.set_guards(g),
            Err(e) => debug!("{pid}: guard regions not noted for the next run: {e}"),
        }
    }
    debug!(
        "guard regions of {} processes noted for the next run in {} us",
        trackers.len(),
        t.elapsed().as_micros()
    );
}

/// `crust pre-dump`: the tree's memory into `opts.images_dir`, the tree
/// left running.
pub fn pre_dump(opts: &Options) -> Result<DumpStats, Error> {
    let pid = opts.pid;
    let proc = ProcRoot::default();
    precheck(&proc, pid)?;
    if opts.freeze_cgroup.is_some() {
        return Err(Error::unsupported(
            "pre-dump with --freeze-cgroup (crust's pre-dump seizes the tree with ptrace)",
        ));
    }
    if opts.lazy_pages {
        return Err(Error::unsupported("pre-dump --lazy-pages"));
    }
    run_hook(opts, Action::PreDump, Some(pid))?;
    let dir = &opts.images_dir;
    outdir::prepare(opts)?;
    // --page-server: connected before the freeze (no server: refused
    // before the tree is touched).
    let ps = match link_parent(opts).and_then(|()| crate::pageserver::connect_sink(opts)) {
        Ok(ps) => ps,
        Err(e) => {
            discard(opts);
            return Err(e);
        }
    };
    let mut chain = Chain::take(opts, ps.as_ref());
    let t0 = Instant::now();
    let mut tree = Tree::default();
    let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let seized = catch_panic(|| seize(&proc, &mut tree, pid, 0, timeout, None))
        .and_then(|()| crate::util::check_stop());
    if let Err(e) = seized {
        tree.release(false);
        discard(opts);
        return Err(e);
    }
    let freezing_time_us = us_since(t0);
    let frozen_at = Instant::now();
    let planned = catch_panic(|| plan_tree(&proc, &mut tree, &mut chain));
    // The tree runs again: its pages are copied while it runs.
    tree.release(false);
    let frozen_time_us = us_since(frozen_at);
    info!("Tree {pid} frozen for {frozen_time_us} us; copying its pages while it runs");
    let (planned, trackers) = match planned {
        Ok(x) => x,
        Err(e) => {
            discard(opts);
            return Err(e);
        }
    };
    let t_write = Instant::now();
    let mut trackers = trackers;
    note_guards(&mut trackers);
    // Asked to stop (or the front end died) before the keeper is named:
    // no keeper. Just after: the keeper named is released again.
    // The chain's own handle on the server goes: the sink is closed below.
    drop(chain);
    let written = catch_panic(|| write_set(opts, &planned, ps.as_deref()))
        .and_then(|c| crate::pageserver::close_sink(ps, opts).map(|()| c))
        .and_then(|c| crate::util::check_stop().map(|()| c))
        .and_then(|c| keeper::start_keeper(dir, &mut trackers).map(|()| c))
        .and_then(|c| match crate::util::check_stop() {
            Ok(()) => Ok(c),
            Err(e) => {
                let _ = keeper::release(dir);
                Err(e)
            }
        });
    drop(trackers);
    let counts = match written {
        Ok(c) => c,
        Err(e) => {
            warn!("Pre-dump of {pid} failed; the tree runs on");
            discard(opts);
            return Err(e);
        }
    };
    let stats = DumpStats {
        freezing_time_us,
        frozen_time_us,
        memdump_time_us: frozen_time_us,
        memwrite_time_us: us_since(t_write),
        pages_scanned: counts.scanned,
        pages_written: counts.written,
        pages_skipped_parent: counts.in_parent,
        shpages_scanned: counts.shmem_scanned,
        shpages_written: counts.shmem_written,
        pages_lazy: 0,
    };
    if let Err(e) = write_stats(&opts.work_dir(), &stats) {
        warn!("{e}");
    }
    info!(
        "Pre-dump of {pid}: {} pages written, {} left to the parent set",
        counts.written, counts.in_parent
    );
    Ok(stats)
}

/// A failed pre-dump: its images and the `parent` link go.
fn discard(opts: &Options) {
    outdir::discard(&opts.images_dir);
    if opts.prev_images_dir.is_some() {
        let _ = std::fs::remove_file(opts.images_dir.join("parent"));
    }
}

/// The frozen part: each process's VMAs, tracking started or refreshed,
/// its pagemap scanned. Returns the plans and the trackers to keep.
fn plan_tree(
    proc: &ProcRoot,
    tree: &mut Tree,
    chain: &mut Chain,
) -> Result<(Vec<Planned>, Vec<Tracker>), Error> {
    let mut planned = Vec::new();
    let mut trackers = Vec::new();
    let live: Vec<i32> = tree
        .procs
        .iter()
        .filter(|p| !p.zombie)
        .map(|p| p.pid)
        .collect();
    chain.objects_since(proc, &live);
    for p in tree.procs.iter_mut().filter(|p| !p.zombie) {
        crate::util::check_stop()?;
        let pid = p.pid;
        let status = crust_proc::status(proc, pid).map_err(proc_err(pid))?;
        let nspid = super::ns_last(&status.ns_pid, pid);
        let vmas = mem::collect_vmas(proc, pid)?;
        let ranges = tracked_ranges(&vmas);
        let since = chain.dirty(pid, nspid, &vmas);
        let tracker = match chain.kept.remove(&pid) {
            Some(mut t) => {
                // Mappings made since: tracked from now on.
                let (_, new) = split_new(&ranges, t.tracked());
                track_each(&mut t, &new);
                watch_new_objects(proc, p, &vmas, &mut t);
                Some(t)
            }
            None => start(proc, p, &vmas, &ranges, true),
        };
        let plan = mem::PagePlan::scan(pid, &vmas, since.as_ref().map(as_since))?;
        debug!(
            "{pid}: {} VMAs, {}",
            vmas.len(),
            match &since {
                Some((d, ..)) => format!("{} ranges written since the parent set", d.len()),
                None => "every page stored".to_string(),
            }
        );
        planned.push(Planned {
            pid,
            nspid,
            vmas,
            plan,
        });
        trackers.extend(tracker);
    }
    Ok((planned, trackers))
}

/// The parts of `ranges` inside `tracked` and the parts outside.
fn split_new(ranges: &[Range<u64>], tracked: &[Range<u64>]) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let mut new = Vec::new();
    let mut old = Vec::new();
    for r in ranges {
        let mut at = r.start;
        for c in tracked
            .iter()
            .filter(|c| c.end > r.start && c.start < r.end)
        {
            if c.start > at {
                new.push(at..c.start);
            }
            old.push(c.start.max(at)..c.end.min(r.end));
            at = c.end.min(r.end);
        }
        if at < r.end {
            new.push(at..r.end);
        }
    }
    (old, new)
}

/// Track each of `ranges`; one the kernel refuses (the task uses
/// userfaultfd there itself, a special mapping) stays untracked: it counts
/// as written whole at every run.
pub(super) fn track_each(t: &mut Tracker, ranges: &[Range<u64>]) {
    for r in ranges {
        if let Err(e) = t.track(std::slice::from_ref(r)) {
            debug!(
                "{}: that range is dumped whole at every run",
                with_causes(&e)
            );
        }
    }
}

/// Run `f` in process `p` (seized): a pending SIGTRAP refused, seccomp
/// suspended, a syscall site chosen, the task cured after.
fn in_task<T>(
    proc: &ProcRoot,
    p: &mut super::Proc,
    vmas: &[mem::Vma],
    f: impl FnOnce(&mut crust_compel::Task) -> Result<T, Error>,
) -> Result<T, Error> {
    let pid = p.pid;
    task::misc::refuse_pending_sigtrap(proc, pid, &p.threads)?;
    // A seccomp filter must not see (or kill the task for) the
    // userfaultfd call made on crust's behalf.
    task::seccomp::suspend(
        proc,
        pid,
        &p.threads,
        crust_sys::ptrace::options::TRACESYSGOOD,
    )?;
    let main = p.threads.first_mut().ok_or(Error::NoSuchProcess { pid })?;
    super::syscall_site(main, pid, vmas)?;
    let r = f(main);
    main.cure().map_err(compel_err(pid))?;
    r
}

/// Start tracking process `p` (seized) by a userfaultfd made in it; None
/// (and a warning) when that fails: the next run dumps every page. Its
/// shared object mappings get a watch of their own (none: they are
/// stored whole next time); with `protect_objects` false they are only
/// registered (see [`objtrack::start_watch`]).
pub(super) fn start(
    proc: &ProcRoot,
    p: &mut super::Proc,
    vmas: &[mem::Vma],
    ranges: &[Range<u64>],
    protect_objects: bool,
) -> Option<Tracker> {
    let pid = p.pid;
    let objects = objtrack::object_ranges(vmas);
    let started = in_task(proc, p, vmas, |main| {
        let mut t = start_tracking(main, &[])?;
        if !objects.is_empty() {
            match objtrack::start_watch(main, &objects, protect_objects) {
                Ok(w) => t.set_objects(w),
                Err(e) => debug!("{pid}: shared objects not tracked: {}", with_causes(&e)),
            }
        }
        Ok(t)
    });
    match started {
        Ok(mut t) => {
            track_each(&mut t, ranges);
            Some(t)
        }
        Err(e) => {
            warn!("Cannot track the writes of process {pid} ({e}): the next dump stores all its pages");
            None
        }
    }
}

/// Shared object mappings made since tracking began (or all of them, for
/// a tracker without a watch yet): watched from now on.
fn watch_new_objects(proc: &ProcRoot, p: &mut super::Proc, vmas: &[mem::Vma], t: &mut Tracker) {
    let pid = p.pid;
    let objects = objtrack::object_ranges(vmas);
    let new: Vec<ObjRange> = match t.objects() {
        Some(w) => objects
            .into_iter()
            .filter(|o| !w.ranges().contains(o))
            .collect(),
        None => objects,
    };
    if new.is_empty() {
        return;
    }
    if let Some(w) = t.objects_mut() {
        w.watch(&new);
        return;
    }
    match in_task(proc, p, vmas, |main| {
        objtrack::start_watch(main, &new, true)
    }) {
        Ok(w) => t.set_objects(w),
        Err(e) => debug!(
            "{pid}: new shared object mappings not tracked: {}",
            with_causes(&e)
        ),
    }
}

/// The part done while the tree runs: every process's pages, then the
/// inventory. Returns the page counts.
pub(super) fn write_set(
    opts: &Options,
    planned: &[Planned],
    ps: Option<&PageServerSink>,
) -> Result<mem::PageCounts, Error> {
    let dir: &Path = &opts.images_dir;
    let _ = mem::take_page_tally(dir);
    let local = mem::LocalImages::compressed(dir, opts.compress);
    let sink: &dyn mem::PageSink = match ps {
        Some(p) => p,
        None => &local,
    };
    let mut total = mem::PageCounts::default();
    for (i, p) in planned.iter().enumerate() {
        crate::util::check_stop()?;
        let c = mem::write_pages(
            p.pid,
            p.nspid as u64,
            sink,
            &p.vmas,
            i as u32 + 1,
            &p.plan,
            true,
        )?;
        total.add(&c);
    }
    let tally = mem::take_page_tally(dir);
    total.shmem_written = tally.shpages_written;
    let mut inv = inventory(opts, None);
    inv.dump_uptime = super::images::uptime_us();
    // CRIU's PRE_DUMP_SPLICE 1, PRE_DUMP_READ 2: crust reads either way.
    inv.pre_dump_mode = Some(match opts.pre_dump_mode.as_deref() {
        Some("read") => 2,
        _ => 1,
    });
    write_image(dir, ImageType::Inventory, 0, &[inv])?;
    Ok(total)
}
