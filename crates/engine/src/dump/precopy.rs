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
//!    set's own pages files and removes the pre-copy: the set is one
//!    point-in-time image at the freeze, with no parent. When a process's
//!    layout did not change since the pre-copy (the common case), the pages
//!    stored at the freeze are written into their slots of the pre-copy's
//!    file, which takes the set's name: only what was written since is
//!    copied again. Otherwise the two files are merged into a new one
//!    (file to file, `copy_file_range`). The trackers go with the dump (their last descriptor
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
use crate::mem::track::Tracker;
use crate::util::{proc_err, us_since};
use crate::{mem, Error, Options};
use crust_images::consts::pe;
use crust_images::image::ImageType;
use crust_proc::ProcRoot;
use log::{debug, info};
use std::fs::File;
use std::io::{Seek, SeekFrom};
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
/// crust freezes itself, writing its own images (no page server, no
/// parent set, no lazy pages), unless `CRUST_PRECOPY=0`.
pub(super) fn wanted(opts: &Options) -> bool {
    super::snapshot::wanted(opts)
        && opts.freeze_cgroup.is_none()
        && opts.prev_images_dir.is_none()
        && !opts.lazy_pages
        && !opts.track_mem
        && !opts.page_server
        && std::env::var_os("CRUST_PRECOPY").is_none_or(|v| v != "0")
}

/// Test-only (`CRUST_FAULT=snapshot-late`): the pages written during the
/// pre-copy are not stored again at the freeze, so that the tests see an
/// image that is not one moment's fail its check.
pub(super) fn late_on_purpose() -> bool {
    std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "snapshot-late")
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
    Ok((Chain::precopied(trackers, dir), pre))
}

/// Step 1 and the scan of step 2: the tree paused to make the
/// userfaultfds; then, running, each process's memory registered,
/// protected and its pagemap scanned.
fn start_all(opts: &Options) -> Result<(Vec<Planned>, Vec<Tracker>), Error> {
    let proc = ProcRoot::default();
    let pid = opts.pid;
    // The root's VMAs read while it runs (smaps walks its page tables).
    let root_vmas = mem::collect_vmas(&proc, pid)?;
    let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut tree = Tree::default();
    let t = Instant::now();
    let seized = catch_panic(|| seize(&proc, &mut tree, pid, 0, timeout, None));
    debug!("Pre-copy: tree seized in {} us", us_since(t));
    let started = seized.and_then(|()| {
        catch_panic(|| {
            let mut out = Vec::new();
            for p in tree.procs.iter_mut().filter(|p| !p.zombie) {
                let vmas = match p.pid == pid {
                    true => root_vmas.clone(),
                    false => mem::collect_vmas(&proc, p.pid)?,
                };
                let status = crust_proc::status(&proc, p.pid).map_err(proc_err(p.pid))?;
                let nspid = super::ns_last(&status.ns_pid, p.pid);
                let tracker = predump::start(&proc, p, &vmas, &[]);
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
        // Protected first, then scanned and read: a write after the
        // protection is seen by the freeze's scan.
        predump::track_each(&mut tracker, &predump::tracked_ranges(&vmas));
        let plan = mem::PagePlan::scan(pid, &vmas, None)?;
        planned.push(Planned {
            pid,
            nspid,
            vmas,
            plan,
        });
        trackers.push(tracker);
    }
    debug!("Pre-copy: memory protected and scanned");
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
        moved += flatten_one(dir, owner, &map, &parent)?;
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

/// One pagemap: a new pages file with its own bytes and the pre-copy's,
/// run by run, then the pagemap with its parent runs made present.
fn flatten_one(dir: &Path, owner: Owner, map: &Pagemap, parent: &Pagemap) -> Result<u64, Error> {
    if let Some(writes) = slots_in_parent(map, parent) {
        return flatten_in_place(dir, owner, map, parent, &writes);
    }
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
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
    let mut runs = Vec::with_capacity(map.entries.len());
    let mut moved = 0;
    let ps = crust_sys::PAGE_SIZE;
    for e in &map.entries {
        let npages = (e.end - e.start) / ps;
        if e.present() {
            copy(&own, e.off, e.end - e.start).map_err(io("cannot copy pages", &map.pages))?;
            runs.push((e.start, npages, e.flags));
            continue;
        }
        if !e.in_parent() {
            runs.push((e.start, npages, e.flags));
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
        runs.push((e.start, npages, (e.flags & !pe::PARENT) | pe::PRESENT));
    }
    out.sync_data()
        .map_err(io("cannot sync the pages", &map.pages))?;
    name.commit()
        .map_err(io("cannot name the pages", &map.pages))?;
    let (ty, id) = match owner {
        Owner::Task(id) => (ImageType::Pagemap, id),
        Owner::Object(id) => (ImageType::ShmemPagemap, id),
    };
    mem::write_pagemap_named(dir, ty, &ty.file_name(id), map.pages_id, &runs)?;
    debug!("{owner:?}: {moved} pre-copied pages moved in");
    Ok(moved)
}

/// A copy of `len` bytes of the set's own pages file (from `own`) into the
/// pre-copy's (at `slot`).
type SlotWrite = (u64, u64, u64);

/// Whether the pre-copy's pages file has a slot, in the same order, for
/// every page the set stores and nothing else: the common case, nothing
/// unmapped, dropped or mapped since the pre-copy. Then the set's own pages
/// can be written into those slots and the file given the set's name,
/// instead of copying every pre-copied page again. `None` when the layouts
/// differ (or either file is not a plain `pages-N.img`).
fn slots_in_parent(map: &Pagemap, parent: &Pagemap) -> Option<Vec<SlotWrite>> {
    let plain = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pages-"))
    };
    if !plain(&map.pages) || !plain(&parent.pages) {
        return None;
    }
    let mut slots = parent.entries.iter().filter(|p| p.present());
    let mut cur: Option<&Entry> = None;
    let mut cursor = 0u64;
    let mut writes = Vec::new();
    for e in map.entries.iter().filter(|e| e.present() || e.in_parent()) {
        let mut at = e.start;
        while at < e.end {
            let p = match cur {
                Some(p) if p.start <= at && at < p.end => p,
                _ => {
                    let p = slots.next()?;
                    if p.start != at {
                        return None;
                    }
                    cur = Some(p);
                    p
                }
            };
            let slot = p.off + (at - p.start);
            if slot != cursor {
                return None;
            }
            let to = p.end.min(e.end);
            if e.present() {
                writes.push((e.off + (at - e.start), slot, to - at));
            }
            cursor += to - at;
            at = to;
        }
    }
    let last_full = cur.is_none_or(|p| p.off + (p.end - p.start) == cursor);
    (last_full && slots.next().is_none()).then_some(writes)
}

/// [`flatten_one`] when [`slots_in_parent`] found the layouts equal: the
/// pages stored at the freeze overwrite their older copies in the
/// pre-copy's file, which then replaces the set's own pages file. Only
/// what was written since the pre-copy is copied again.
fn flatten_in_place(
    dir: &Path,
    owner: Owner,
    map: &Pagemap,
    parent: &Pagemap,
    writes: &[SlotWrite],
) -> Result<u64, Error> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let own = File::open(&map.pages).map_err(io("cannot open the pages", &map.pages))?;
    let old = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&parent.pages)
        .map_err(io("cannot open the pages", &parent.pages))?;
    let mut buf = vec![0u8; 1 << 20];
    for &(from, slot, len) in writes {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            own.read_exact_at(chunk, from + done)
                .map_err(io("cannot read pages", &map.pages))?;
            old.write_all_at(chunk, slot + done)
                .map_err(io("cannot write pre-copied pages", &parent.pages))?;
            done += n as u64;
        }
    }
    old.sync_data()
        .map_err(io("cannot sync the pages", &parent.pages))?;
    std::fs::rename(&parent.pages, &map.pages)
        .map_err(io("cannot move the pre-copied pages", &map.pages))?;
    let ps = crust_sys::PAGE_SIZE;
    let mut moved = 0;
    let runs: Vec<_> = map
        .entries
        .iter()
        .map(|e| {
            let npages = (e.end - e.start) / ps;
            if e.in_parent() {
                moved += npages;
                (e.start, npages, (e.flags & !pe::PARENT) | pe::PRESENT)
            } else {
                (e.start, npages, e.flags)
            }
        })
        .collect();
    let (ty, id) = match owner {
        Owner::Task(id) => (ImageType::Pagemap, id),
        Owner::Object(id) => (ImageType::ShmemPagemap, id),
    };
    mem::write_pagemap_named(dir, ty, &ty.file_name(id), map.pages_id, &runs)?;
    debug!(
        "{owner:?}: {moved} pre-copied pages kept in place, {} runs stored since written into them",
        writes.len()
    );
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(name: &str, entries: &[(u64, u64, u32, u64)]) -> Pagemap {
        let ps = crust_sys::PAGE_SIZE;
        Pagemap {
            pages_id: 1,
            pages: PathBuf::from(name),
            entries: entries
                .iter()
                .map(|&(start, n, flags, off)| Entry {
                    start: start * ps,
                    end: (start + n) * ps,
                    flags,
                    off: off * ps,
                })
                .collect(),
        }
    }

    #[test]
    fn slots_found_only_for_the_same_layout() {
        let ps = crust_sys::PAGE_SIZE;
        let (p, r) = (pe::PRESENT, pe::PARENT);
        // The pre-copy: pages 10..14 and 20..22 at file pages 0..4, 4..6.
        let parent = pm("pre/pages-1.img", &[(10, 4, p, 0), (20, 2, p, 4)]);
        // Page 12 and 21 written since: stored at own file pages 0 and 1.
        let map = pm(
            "set/pages-1.img",
            &[
                (10, 2, r, 0),
                (12, 1, p, 0),
                (13, 1, r, 0),
                (20, 1, r, 0),
                (21, 1, p, 1),
            ],
        );
        let w = slots_in_parent(&map, &parent);
        assert_eq!(w, Some(vec![(0, 2 * ps, ps), (ps, 5 * ps, ps)]));
        // A page dropped since (13 gone): layouts differ.
        let gone = pm("set/pages-1.img", &[(10, 3, r, 0), (20, 2, r, 0)]);
        assert_eq!(slots_in_parent(&gone, &parent), None);
        // A page mapped since (14): no slot for it.
        let more = pm(
            "set/pages-1.img",
            &[(10, 4, r, 0), (14, 1, p, 0), (20, 2, r, 0)],
        );
        assert_eq!(slots_in_parent(&more, &parent), None);
        // A compressed file is never written in place.
        let z = pm("set/crust-zpages-1.img", &[(10, 4, r, 0), (20, 2, r, 0)]);
        assert_eq!(slots_in_parent(&z, &parent), None);
        let all = pm("set/pages-1.img", &[(10, 4, r, 0), (20, 2, r, 0)]);
        assert_eq!(slots_in_parent(&all, &parent), Some(vec![]));
    }

    #[test]
    fn pagemap_names() {
        assert_eq!(owner_of("pagemap-42.img"), Some(Owner::Task(42)));
        assert_eq!(owner_of("pagemap-shmem-7.img"), Some(Owner::Object(7)));
        assert_eq!(owner_of("pages-1.img"), None);
        assert_eq!(owner_of(".pagemap-1.img.crust-1-0.tmp"), None);
    }
}
