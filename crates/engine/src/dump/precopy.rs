//! `dump --leave-running` whose frozen time does not grow with memory
//! (issue 15): the pages are copied BEFORE the freeze, while the tree runs,
//! and the freeze stores only what was written since.
//!
//! 1. The tree is paused just long enough for each process to make a
//!    userfaultfd (a remote syscall; crust takes the descriptor, the task's
//!    fd table is left as it was: `mem/track.rs`). It runs again at once.
//! 2. While it runs, crust registers and write-protects (asynchronous mode:
//!    the kernel lifts the protection itself on the first write) every VMA
//!    whose pages are stored, then scans and copies every page into a
//!    pre-dump set of its own, `DIR/.crust-precopy`.
//! 3. The dump proper freezes the tree as any dump does; each process's
//!    pages are stored as in the final dump of a pre-dump chain: one
//!    `PAGEMAP_SCAN` finds the pages written since step 2 began (a walk of
//!    clean, protected memory: a few ns a page), they are copied while
//!    frozen, the others are announced `PE_PARENT`. The tree is let go;
//!    nothing of its memory is read after the thaw, so an `munmap`,
//!    `MADV_DONTNEED` or `mremap` of the task no longer matters.
//! 4. After the thaw, [`flatten`] moves the pre-copied pages into the
//!    set's own pages files (file to file, `copy_file_range`) and removes
//!    the pre-copy: the set is one point-in-time image at the freeze, with
//!    no parent. The trackers go with the dump (their last descriptor
//!    closes: the kernel lifts every protection), on every path.
//!
//! A process the pre-copy did not cover (born since, or whose userfaultfd
//! could not be made) is stored whole while frozen. When the pre-copy
//! cannot be made at all, the snapshot of `mem/snapshot.rs` (protect while
//! frozen, copy after the thaw) is the fallback. `CRUST_PRECOPY=0` skips
//! the pre-copy.

use super::precheck::DEFAULT_TIMEOUT;
use super::predump::{self, Chain, Planned};
use super::seize::seize;
use super::{catch_panic, Tree};
use crate::mem::chain::{read_pagemap, Entry, Owner, Pagemap};
use crate::mem::track::{with_causes, Tracker};
use crate::util::{proc_err, us_since};
use crate::{mem, Error, Options};
use crust_images::consts::pe;
use crust_proc::ProcRoot;
use log::{debug, info};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The pre-copy's directory inside the images directory.
pub(super) const DIR: &str = ".crust-precopy";

/// The pre-copy set of a dump; removed when dropped (on every path).
pub(super) struct Precopy {
    dir: PathBuf,
}

impl Drop for Precopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove the pre-copy {}: {e}", self.dir.display());
            }
        }
    }
}

/// Does this dump copy the pages before the freeze? `-R` of a tree
/// crust freezes itself, writing its own plain images (no page server,
/// no parent set, no lazy pages, no compression), unless
/// `CRUST_PRECOPY=0`.
pub(super) fn wanted(opts: &Options) -> bool {
    super::snapshot::wanted(opts)
        && opts.freeze_cgroup.is_none()
        && opts.prev_images_dir.is_none()
        && !opts.lazy_pages
        && !opts.track_mem
        && !opts.page_server
        // The pre-copied pages are moved by their offsets in plain pages
        // files: a compressed set takes the snapshot instead.
        && opts.compress.is_none()
        && std::env::var_os("CRUST_PRECOPY").is_none_or(|v| v != "0")
}

/// Test-only (`CRUST_FAULT=snapshot-late`): the pages written during the
/// pre-copy are not stored again at the freeze, so that the tests see an
/// image that is not one moment's fail its check.
pub(super) fn late_on_purpose() -> bool {
    std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "snapshot-late")
}

/// Test-only (`CRUST_TEST_PRECOPY_WAIT=FILE`, e2e `snapshot-guards`): once
/// the pre-copy is made, create `FILE.copied` and wait (at most 30 s)
/// until FILE exists, so that a test changes the tree between the
/// pre-copy and the freeze.
fn test_wait() {
    let Some(f) = std::env::var_os("CRUST_TEST_PRECOPY_WAIT") else {
        return;
    };
    let f = PathBuf::from(f);
    let mut copied = f.clone().into_os_string();
    copied.push(".copied");
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&copied);
    let t = Instant::now();
    while !f.exists() && t.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Steps 1 and 2: start tracking every process of the tree and copy its
/// pages into `DIR/.crust-precopy`. Returns the chain the dump proper
/// stores against, and the pre-copy (removed when dropped). On error
/// nothing is left: the trackers are dropped, the directory removed.
pub(super) fn run(opts: &Options) -> Result<(Chain, Precopy), Error> {
    let t0 = Instant::now();
    let dir = opts.images_dir.join(DIR);
    let _ = std::fs::remove_dir_all(&dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Io {
                op: "cannot create the pre-copy directory",
                path: dir.clone(),
                source,
            })?;
    }
    let pre = Precopy { dir: dir.clone() };
    let (planned, trackers) = start_all(opts)?;
    let mut popts = opts.clone();
    popts.images_dir = dir.clone();
    let t = Instant::now();
    let counts = catch_panic(|| predump::write_set(&popts, &planned, None))?;
    info!(
        "Pre-copy: {} pages of {} processes copied while the tree ran, in {} us ({} us in all)",
        counts.written,
        trackers.len(),
        us_since(t),
        us_since(t0)
    );
    test_wait();
    Ok((Chain::precopied(trackers, dir), pre))
}

/// What [`start_all`] gives: each process's plan, and its tracker (with
/// its guard regions found once its memory was protected).
type Started = (Vec<Planned>, Vec<Tracker>);

/// Step 1 and the scan of step 2: the tree paused to make the
/// userfaultfds; then, running, each process's memory registered,
/// protected and its pagemap scanned.
fn start_all(opts: &Options) -> Result<Started, Error> {
    let proc = ProcRoot::default();
    let pid = opts.pid;
    // The root's VMAs read while it runs (smaps walks its page tables),
    // used when the pause finds the same mappings.
    let root_early = mem::collect_vmas_early(&proc, pid);
    let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut tree = Tree::default();
    let t = Instant::now();
    let seized = catch_panic(|| seize(&proc, &mut tree, pid, 0, timeout, None));
    debug!("Pre-copy: tree seized in {} us", us_since(t));
    let started = seized.and_then(|()| {
        catch_panic(|| {
            let mut out = Vec::new();
            let mut root_early = root_early;
            for p in tree.procs.iter_mut().filter(|p| !p.zombie) {
                // The mappings as they are while paused: the ranges are
                // registered now, whole mappings only (see
                // `Tracker::register`); protecting them walks the page
                // tables, done once the tree runs again.
                let early = root_early.take().filter(|e| e.pid() == p.pid);
                let vmas = mem::collect_vmas_frozen(&proc, p.pid, early)?;
                let status = crust_proc::status(&proc, p.pid).map_err(proc_err(p.pid))?;
                let nspid = super::ns_last(&status.ns_pid, p.pid);
                let mut tracker = predump::start(&proc, p, &vmas, &[], false);
                if let Some(t) = tracker.as_mut() {
                    for r in predump::tracked_ranges(&vmas) {
                        if let Err(e) = t.register(&r) {
                            debug!("{}: that range is stored whole", with_causes(&e));
                        }
                    }
                }
                out.push((p.pid, nspid, vmas, tracker));
            }
            Ok(out)
        })
    });
    tree.release(false);
    info!(
        "Pre-copy: tree {pid} paused {} us to make its userfaultfds",
        us_since(t)
    );
    let mut planned = Vec::new();
    let mut trackers = Vec::new();
    for (pid, nspid, vmas, tracker) in started? {
        // A process without tracking is stored whole at the freeze.
        let Some(mut tracker) = tracker else { continue };
        crate::util::check_stop()?;
        // Protected, then scanned, then read. Every page present at the
        // protection is in the scan, so in the pre-copy; a page written
        // after the protection (faulted in by the write, or written over)
        // is found at the freeze. The freeze does not look for pages
        // present but neither written nor in the pre-copy: there are none
        // but pages of zeros (`Pages::since_by_ranges`). The pages the
        // protection itself marks (never touched: see `flatten_in_place`)
        // are left out by the scan.
        for e in tracker.protect_registered() {
            debug!("{}: that range is stored whole", with_causes(&e));
        }
        // Shared anonymous objects likewise: protected before they are
        // read below (`mem/objtrack.rs`).
        if let Some(w) = tracker.objects_mut() {
            w.protect();
        }
        let plan = mem::PagePlan::scan(pid, &vmas, None)?;
        // Other shared memory objects (memfds, System V segments) are
        // stored whole at the freeze (their writes are not tracked): a
        // copy here would be thrown away.
        let vmas = (vmas.into_iter())
            .filter(|v| {
                v.status & crust_images::consts::vma::AREA_MEMFD == 0
                    || (v.map.shared && mem::objtrack::is_anon_object(&v.map))
            })
            .collect();
        planned.push(Planned {
            pid,
            nspid,
            vmas,
            plan,
        });
        trackers.push(tracker);
    }
    debug!("Pre-copy: memory protected and scanned");
    // The guard regions now, the memory protected: the freeze walks again
    // only where tracking says pages changed (`Chain::guards_now`).
    predump::note_guards(&mut trackers);
    Ok((planned, trackers))
}

/// What a `dump -R` does once the tree runs: the tracking released (the
/// kernel's walk of every page lifts the protection), the snapshot's copy
/// (processes without a pre-copy), the pre-copied pages moved in, the set
/// checked. Returns the pages written and, of them, those moved in.
pub(super) fn after_thaw(
    opts: &Options,
    chain: Chain,
    deferred: Vec<mem::snapshot::Prepared>,
    pre: Option<&Precopy>,
) -> Result<(u64, u64), Error> {
    let t = Instant::now();
    drop(chain);
    debug!("write tracking released in {} us", us_since(t));
    let mut written = super::snapshot::copy(opts, deferred)?;
    let Some(pre) = pre else {
        return Ok((written, 0));
    };
    let moved = flatten(&opts.images_dir, pre)?;
    super::images::check_restorable(opts)?;
    written += moved;
    Ok((written, moved))
}

/// Step 4, after the thaw: every pagemap of `dir` with runs in the
/// pre-copy gets their pages into its own pages file. Returns the pages
/// moved.
pub(super) fn flatten(dir: &Path, pre: &Precopy) -> Result<u64, Error> {
    let t = Instant::now();
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op: "cannot list the images directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut owners = Vec::new();
    for e in rd.flatten() {
        if let Some(o) = e.file_name().to_str().and_then(owner_of) {
            owners.push(o);
        }
    }
    let mut moved = 0;
    for owner in owners {
        let Some(map) = read_pagemap(dir, owner)? else {
            continue;
        };
        if !map.entries.iter().any(Entry::in_parent) {
            continue;
        }
        let parent = read_pagemap(&pre.dir, owner)?.ok_or_else(|| {
            mem::bad(
                dir,
                format!("the pre-copy has no pagemap of {owner:?} its runs name"),
            )
        })?;
        moved += match flatten_in_place(dir, owner, &map, &parent)? {
            Some(n) => n,
            None => flatten_one(dir, owner, &map, &parent)?,
        };
    }
    info!(
        "{moved} pre-copied pages moved into the image set in {} us",
        us_since(t)
    );
    Ok(moved)
}

/// The owner of a pagemap file name (`pagemap-ID.img`,
/// `pagemap-shmem-ID.img`).
fn owner_of(name: &str) -> Option<Owner> {
    let id = name.strip_prefix("pagemap-")?.strip_suffix(".img")?;
    match id.strip_prefix("shmem-") {
        Some(n) => n.parse().ok().map(Owner::Object),
        None => id.parse().ok().map(Owner::Task),
    }
}

/// The address ranges of the pages of `entries` that `with` picks, in
/// order, neighbours merged: where each page sits in the pages file is
/// its place in this list.
fn byte_ranges(entries: &[Entry], with: impl Fn(&Entry) -> bool) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in entries.iter().filter(|e| with(e)) {
        match out.last_mut() {
            Some(last) if last.1 == e.start => last.1 = e.end,
            _ => out.push((e.start, e.end)),
        }
    }
    out
}

/// One pagemap whose pages (its own and those left to the pre-copy) are
/// exactly the pre-copy's, in the same order: the usual case, when the
/// task neither unmapped, dropped nor newly touched memory meanwhile. The
/// pre-copy's pages file then is the set's, but for the pages written
/// since: those are written over it at their place, and it is renamed
/// into place. Nothing is copied twice. None: not that case (nothing was
/// changed).
fn flatten_in_place(
    dir: &Path,
    owner: Owner,
    map: &Pagemap,
    parent: &Pagemap,
) -> Result<Option<u64>, Error> {
    let with_bytes = |e: &Entry| e.present() || e.in_parent();
    let (mine, theirs) = (
        byte_ranges(&map.entries, with_bytes),
        byte_ranges(&parent.entries, Entry::present),
    );
    if mine != theirs {
        let at = mine.iter().zip(&theirs).position(|(a, b)| a != b);
        let at = at.unwrap_or(mine.len().min(theirs.len()));
        debug!(
            "{owner:?}: the pages differ from the pre-copy's ({} and {} ranges; first difference: {:x?} against {:x?}), copied run by run",
            mine.len(),
            theirs.len(),
            mine.get(at),
            theirs.get(at)
        );
        return Ok(None);
    }
    let mut own = File::open(&map.pages).map_err(io("cannot open the pages", &map.pages))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&parent.pages)
        .map_err(io("cannot open the pre-copied pages", &parent.pages))?;
    let (mut at, mut moved) = (0u64, 0u64);
    for e in &map.entries {
        let len = e.end - e.start;
        if e.present() {
            let copied = (|| -> std::io::Result<u64> {
                own.seek(SeekFrom::Start(e.off))?;
                out.seek(SeekFrom::Start(at))?;
                std::io::copy(&mut std::io::Read::take(&mut own, len), &mut out)
            })()
            .map_err(io("cannot write pages into the pre-copy", &parent.pages))?;
            if copied != len {
                return Err(mem::bad(
                    &map.pages,
                    format!("{owner:?}: {copied} of {len} bytes at {:#x}", e.off),
                ));
            }
        } else if e.in_parent() {
            moved += len / crust_sys::PAGE_SIZE;
        } else {
            continue;
        }
        at += len;
    }
    out.sync_data()
        .map_err(io("cannot sync the pages", &parent.pages))?;
    std::fs::rename(&parent.pages, &map.pages)
        .map_err(io("cannot rename the pre-copied pages", &map.pages))?;
    write_flattened(dir, owner, map)?;
    debug!("{owner:?}: {moved} pre-copied pages kept in place");
    Ok(Some(moved))
}

/// `owner`'s pagemap rewritten with its runs in the parent made present.
fn write_flattened(dir: &Path, owner: Owner, map: &Pagemap) -> Result<(), Error> {
    let runs: Vec<(u64, u64, u32)> = (map.entries.iter())
        .map(|e| {
            let npages = (e.end - e.start) / crust_sys::PAGE_SIZE;
            match e.in_parent() {
                true => (e.start, npages, (e.flags & !pe::PARENT) | pe::PRESENT),
                false => (e.start, npages, e.flags),
            }
        })
        .collect();
    let (ty, id) = owner.image();
    mem::write_pagemap_named(dir, ty, &ty.file_name(id), map.pages_id, &runs)
}

/// An I/O error of `op` on `path`, for `map_err`.
fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// One pagemap: a new pages file with its own bytes and the pre-copy's,
/// run by run, then the pagemap with its parent runs made present.
fn flatten_one(dir: &Path, owner: Owner, map: &Pagemap, parent: &Pagemap) -> Result<u64, Error> {
    let own = File::open(&map.pages).map_err(io("cannot open the pages", &map.pages))?;
    let old = File::open(&parent.pages).map_err(io("cannot open the pages", &parent.pages))?;
    let (mut out, name) = crust_sys::private::create_private(&map.pages, 0)
        .map_err(io("cannot create the pages", &map.pages))?;
    let mut copy = |from: &File, off: u64, len: u64| -> std::io::Result<()> {
        let mut f = from;
        f.seek(SeekFrom::Start(off))?;
        let n = std::io::copy(&mut std::io::Read::take(f, len), &mut out)?;
        match n == len {
            true => Ok(()),
            false => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        }
    };
    let mut moved = 0;
    for e in &map.entries {
        let npages = (e.end - e.start) / crust_sys::PAGE_SIZE;
        if e.present() {
            copy(&own, e.off, e.end - e.start).map_err(io("cannot copy pages", &map.pages))?;
            continue;
        }
        if !e.in_parent() {
            continue;
        }
        let first = parent.entries.partition_point(|p| p.end <= e.start);
        let mut at = e.start;
        for p in parent.entries.get(first..).unwrap_or_default() {
            if at >= e.end || p.start > at || !p.present() {
                break;
            }
            let to = p.end.min(e.end);
            copy(&old, p.off + (at - p.start), to - at)
                .map_err(io("cannot copy pre-copied pages", &parent.pages))?;
            at = to;
        }
        if at < e.end {
            return Err(mem::bad(
                dir,
                format!(
                    "{owner:?}: pages {at:#x}-{:#x} are announced in the pre-copy, which does not hold them",
                    e.end
                ),
            ));
        }
        moved += npages;
    }
    out.sync_data()
        .map_err(io("cannot sync the pages", &map.pages))?;
    name.commit()
        .map_err(io("cannot name the pages", &map.pages))?;
    write_flattened(dir, owner, map)?;
    debug!("{owner:?}: {moved} pre-copied pages moved in");
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::image::ImageType;

    const P: u64 = crust_sys::PAGE_SIZE;

    /// A directory with `sub` in it, removed first.
    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crust-precopy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(DIR)).unwrap();
        d
    }

    /// Pagemap 1 of `dir` with `runs` (address, pages, flags) and pages
    /// file `id` holding one page of each byte of `fill`.
    fn set(dir: &Path, id: u32, runs: &[(u64, u64, u32)], fill: &[u8]) -> Pagemap {
        let ty = ImageType::Pagemap;
        mem::write_pagemap_named(dir, ty, &ty.file_name(1), id, runs).unwrap();
        let bytes: Vec<u8> = (fill.iter())
            .flat_map(|b| std::iter::repeat_n(*b, P as usize))
            .collect();
        std::fs::write(dir.join(ImageType::Pages.file_name(id.into())), bytes).unwrap();
        read_pagemap(dir, Owner::Task(1)).unwrap().unwrap()
    }

    fn pages_of(path: &Path) -> Vec<u8> {
        let b = std::fs::read(path).unwrap();
        b.chunks(P as usize).map(|c| c[0]).collect()
    }

    #[test]
    fn same_pages_are_kept_in_place_and_written_pages_put_over_them() {
        let d = tmpdir("inplace");
        let pre = set(&d.join(DIR), 7, &[(0x10000, 4, pe::PRESENT)], b"ABCD");
        let runs = [
            (0x10000, 1, pe::PARENT),
            (0x11000, 1, pe::PRESENT | pe::LAZY),
            (0x12000, 2, pe::PARENT),
        ];
        let map = set(&d, 3, &runs, b"X");
        assert_eq!(
            flatten_in_place(&d, Owner::Task(1), &map, &pre).unwrap(),
            Some(3)
        );
        assert_eq!(pages_of(&map.pages), b"AXCD");
        assert!(!pre.pages.exists());
        let after = read_pagemap(&d, Owner::Task(1)).unwrap().unwrap();
        let flags: Vec<u32> = after.entries.iter().map(|e| e.flags).collect();
        assert_eq!(flags, [pe::PRESENT, pe::PRESENT | pe::LAZY, pe::PRESENT]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn other_pages_than_the_pre_copys_are_copied_run_by_run() {
        let d = tmpdir("byrun");
        // The pre-copy holds a page the task dropped since (0x12000), and
        // lacks one it touched since (0x14000).
        let pre = set(&d.join(DIR), 7, &[(0x10000, 3, pe::PRESENT)], b"ABC");
        let runs = [(0x10000, 2, pe::PARENT), (0x14000, 1, pe::PRESENT)];
        let map = set(&d, 3, &runs, b"N");
        assert_eq!(
            flatten_in_place(&d, Owner::Task(1), &map, &pre).unwrap(),
            None
        );
        assert_eq!(pages_of(&pre.pages), b"ABC");
        assert_eq!(flatten_one(&d, Owner::Task(1), &map, &pre).unwrap(), 2);
        assert_eq!(pages_of(&map.pages), b"ABN");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pagemap_names() {
        assert_eq!(owner_of("pagemap-42.img"), Some(Owner::Task(42)));
        assert_eq!(owner_of("pagemap-shmem-7.img"), Some(Owner::Object(7)));
        assert_eq!(owner_of("pages-1.img"), None);
        assert_eq!(owner_of(".pagemap-1.img.crust-1-0.tmp"), None);
    }
}
