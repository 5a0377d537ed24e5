//! Image sets that refer to a parent (pre-dump chains): a pagemap run
//! flagged `PE_PARENT` (or, in older images, `in_parent`) has no bytes in
//! its own set; they are in the set the `parent` link of its images
//! directory names, or further up (parent/parent/...). This module finds,
//! for each such run, the set that holds each piece of it, checking every
//! set on the way as untrusted input, and tells the page source where to
//! read it.
//!
//! The pieces reach the fill code as ordinary runs whose offset carries
//! the chain level in its high bits ([`LEVEL_SHIFT`]): level 0 is the set
//! being restored, level k its k-th parent. [`level_files`] turns those
//! back into (pages file, offset) when the pages are put in.

use super::{bad, PageRun};
use crate::Error;
use crust_images::consts::pe;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::inventory::InventoryEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_images::proto::pstree::PstreeEntry;
use crust_sys::PAGE_SIZE;
use std::path::{Path, PathBuf};

/// The name of the link to the parent image set, as CRIU writes it.
pub const PARENT_LINK: &str = "parent";
/// The deepest chain followed: CRIU sets no bound; iterative migration
/// makes a handful of pre-dumps, so a longer chain is a loop or a mistake.
pub const MAX_DEPTH: usize = 64;
/// Where the chain level sits in a run's offset; below it, the offset in
/// that level's pages file (256 TiB at most).
pub const LEVEL_SHIFT: u32 = 48;
const OFF_MASK: u64 = (1 << LEVEL_SHIFT) - 1;

/// A pagemap of whose pages the `parent` link is a part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `pagemap-<pid>.img`.
    Task(u64),
    /// `pagemap-shmem-<shmid>.img`.
    Object(u64),
}

impl Owner {
    /// Its pagemap's image type and id.
    pub fn image(self) -> (ImageType, u64) {
        match self {
            Owner::Task(id) => (ImageType::Pagemap, id),
            Owner::Object(id) => (ImageType::ShmemPagemap, id),
        }
    }
}

/// One entry of a pagemap, checked: [start, end) and, for a run with
/// bytes, its offset in the pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    /// Offset of the bytes in the pages file (runs with `PRESENT`).
    pub off: u64,
}

impl Entry {
    pub fn in_parent(&self) -> bool {
        self.flags & pe::PARENT != 0
    }
    pub fn present(&self) -> bool {
        self.flags & pe::PRESENT != 0 && !self.in_parent()
    }
}

/// A pagemap read and checked on its own: entries in address order, apart,
/// page-aligned, the pages file long enough for them.
#[derive(Debug, Clone)]
pub struct Pagemap {
    pub pages_id: u32,
    pub pages: PathBuf,
    pub entries: Vec<Entry>,
}

/// The flags of an entry as CRIU reads them: the old `in_parent` bool is
/// `PE_PARENT`; no flags at all is `PE_PRESENT`.
pub fn entry_flags(e: &PagemapEntry) -> u32 {
    let mut flags = e.flags.unwrap_or(pe::PRESENT);
    if e.in_parent == Some(true) {
        flags = (flags | pe::PARENT) & !pe::PRESENT;
    }
    flags
}

/// Read `owner`'s pagemap in `dir`; `None` if the set has none.
pub fn read_pagemap(dir: &Path, owner: Owner) -> Result<Option<Pagemap>, Error> {
    let (ty, id) = owner.image();
    let name = ty.file_name(id);
    let rerr = |source| Error::Image {
        what: format!("cannot read image {}", dir.join(&name).display()),
        source,
    };
    let mut r = match ImageReader::open_typed(dir, ty, &name) {
        Ok(r) => r,
        Err(err) if err.is_missing() => return Ok(None),
        Err(err) => return Err(rerr(err)),
    };
    let head: PagemapHead = r
        .read_entry()
        .map_err(rerr)?
        .ok_or_else(|| bad(dir, format!("{name} holds no pagemap head")))?;
    let raw: Vec<PagemapEntry> = r.read_remaining().map_err(rerr)?;
    let mut entries = Vec::with_capacity(raw.len());
    let (mut off, mut last_end) = (0u64, 0u64);
    for e in &raw {
        let n = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let end = n
            .checked_mul(PAGE_SIZE)
            .and_then(|l| e.vaddr.checked_add(l))
            .filter(|&end| n > 0 && e.vaddr % PAGE_SIZE == 0 && e.vaddr >= last_end && end > 0);
        let Some(end) = end else {
            return Err(bad(
                dir,
                format!(
                    "{name}: run {:#x}+{n} pages is empty, unaligned, out of order or overlaps the one before",
                    e.vaddr
                ),
            ));
        };
        let en = Entry {
            start: e.vaddr,
            end,
            flags: entry_flags(e),
            off,
        };
        if en.present() {
            off = off.saturating_add(end - e.vaddr);
        }
        last_end = end;
        entries.push(en);
    }
    let pages = dir.join(ImageType::Pages.file_name(u64::from(head.pages_id)));
    if off > 0 {
        let have = super::pages::pages_file_len(dir, head.pages_id)?;
        if off > have || off > OFF_MASK {
            return Err(bad(
                dir,
                format!(
                    "{} is truncated: {have} bytes, {name} needs {off}",
                    pages.display()
                ),
            ));
        }
    }
    Ok(Some(Pagemap {
        pages_id: head.pages_id,
        pages,
        entries,
    }))
}

/// The images directory `dir`'s parent set, if it has a `parent` link:
/// the link must belong to the caller or root (an images directory others
/// can write is accepted, so what is in it is checked); relative, it is
/// followed from `dir` (as CRIU writes it, from `--prev-images-dir`); it
/// must lead to a directory. The result is canonical.
pub fn parent_dir(dir: &Path) -> Result<Option<PathBuf>, Error> {
    use std::os::unix::fs::MetadataExt;
    let link = dir.join(PARENT_LINK);
    let meta = match std::fs::symlink_metadata(&link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "cannot look at",
                path: link,
                source,
            })
        }
    };
    let euid = crust_sys::private::geteuid();
    if meta.uid() != euid && meta.uid() != 0 && !crust_images::image::untrusted_images_allowed() {
        return Err(bad(
            dir,
            format!(
                "{} belongs to uid {}, neither the caller (uid {euid}) nor root: refusing to follow it (--allow-unsafe-images-dir to accept)",
                link.display(),
                meta.uid()
            ),
        ));
    }
    let target = std::fs::canonicalize(&link).map_err(|e| {
        let to = std::fs::read_link(&link)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        bad(
            dir,
            format!(
                "the parent image set {} (-> {to}) cannot be reached: {e}; give dump the right --prev-images-dir, or restore the set it was made from",
                link.display()
            ),
        )
    })?;
    if !target.is_dir() {
        return Err(bad(
            dir,
            format!(
                "{} leads to {}, which is not a directory",
                link.display(),
                target.display()
            ),
        ));
    }
    Ok(Some(target))
}

/// The chain of image sets above one: level 0 is the set itself, level k
/// its k-th parent, found as needed and checked once each.
pub struct Chain {
    levels: Vec<PathBuf>,
    /// Set by [`Chain::level`] when the last level has no parent.
    ended: bool,
}

impl Chain {
    pub fn new(dir: &Path) -> Chain {
        let first = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Chain {
            levels: vec![first],
            ended: false,
        }
    }

    /// The directory of level `k`, `None` past the oldest set.
    pub fn level(&mut self, k: usize) -> Result<Option<&Path>, Error> {
        while self.levels.len() <= k && !self.ended {
            let Some(last) = self.levels.last().cloned() else {
                return Ok(None);
            };
            match parent_dir(&last)? {
                None => self.ended = true,
                Some(p) => {
                    if self.levels.contains(&p) {
                        return Err(bad(
                            &last,
                            format!("the chain of parent links loops back to {}", p.display()),
                        ));
                    }
                    if self.levels.len() > MAX_DEPTH {
                        return Err(bad(
                            &last,
                            format!(
                                "the chain of parent image sets is deeper than {MAX_DEPTH}: merge it with a full dump"
                            ),
                        ));
                    }
                    check_same_tree(&last, &p)?;
                    self.levels.push(p);
                }
            }
        }
        Ok(self.levels.get(k).map(PathBuf::as_path))
    }
}

/// Does `parent` look like an earlier image set of the tree `child` is of?
/// As CRIU, an inventory is needed (pre-dump writes one) of the same image
/// version; dumped earlier when both say when they were dumped. Other
/// checks are per process ([`resolve`]). A page server's set has only
/// pagemaps and pages (the inventory stayed with the dumping side), as
/// CRIU's migration flow leaves the rounds before the last: accepted
/// without inventory when it holds a pages file numbered as a page
/// server numbers them.
fn check_same_tree(child: &Path, parent: &Path) -> Result<(), Error> {
    let read = |d: &Path| crate::util::read_one::<InventoryEntry>(d, ImageType::Inventory, 0);
    for d in [child, parent] {
        match read(d) {
            Err(Error::Image { source, .. }) if source.is_missing() && from_page_server(d) => {
                log::debug!("image set {}: a page server's (no inventory)", d.display());
                return Ok(());
            }
            _ => {}
        }
    }
    let p = read(parent).map_err(|e| {
        bad(
            child,
            format!(
                "the parent image set {} is not an image set: {e}",
                parent.display()
            ),
        )
    })?;
    let c = read(child)?;
    if p.img_version != c.img_version {
        return Err(bad(
            child,
            format!(
                "the parent image set {} has image version {:#x}, this one {:#x}",
                parent.display(),
                p.img_version,
                c.img_version
            ),
        ));
    }
    if let (Some(pu), Some(cu)) = (p.dump_uptime, c.dump_uptime) {
        if pu >= cu {
            return Err(bad(
                child,
                format!(
                    "the parent image set {} was made after this one (uptime {pu} vs {cu}): not its parent",
                    parent.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Does `dir` hold the pages of a page server (`pages-<n>.img` from
/// CRIU's base for a page server, 0x10001)?
fn from_page_server(dir: &Path) -> bool {
    let base = ImageType::Pages.file_name(0x10001);
    dir.join(base).is_file()
}

/// Is process `pid` in the tree of `dir`'s pstree.img, if it has one? (A
/// pre-dump writes none.)
fn pstree_lists(dir: &Path, pid: u64) -> Result<bool, Error> {
    match crate::util::read_image::<PstreeEntry>(dir, ImageType::Pstree, 0) {
        Ok(all) => Ok(all.iter().any(|e| u64::from(e.pid) == pid)),
        Err(Error::Image { source, .. }) if source.is_missing() => Ok(true),
        Err(e) => Err(e),
    }
}

/// A piece of a parent run: [start, end) whose bytes are at `off` of the
/// pages file of chain level `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub level: usize,
    pub off: u64,
}

/// The pieces of [start, end), a run in the parent of chain level
/// `level - 1`, found in level `level` and above. `maps` caches each
/// level's pagemap of `owner` (index: level).
fn resolve_in(
    chain: &mut Chain,
    maps: &mut Vec<Option<std::rc::Rc<Pagemap>>>,
    owner: Owner,
    level: usize,
    (start, end): (u64, u64),
    out: &mut Vec<Piece>,
) -> Result<(), Error> {
    let below = chain
        .level(level.saturating_sub(1))?
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let Some(dir) = chain.level(level)?.map(Path::to_path_buf) else {
        return Err(bad(
            &below,
            format!(
                "pages {start:#x}-{end:#x} of {} are in the parent image set, and there is none (no `{PARENT_LINK}` link)",
                name_of(owner)
            ),
        ));
    };
    while maps.len() <= level {
        maps.push(None);
    }
    if maps.get(level).is_some_and(Option::is_none) {
        let (_, id) = owner.image();
        if matches!(owner, Owner::Task(_)) && !pstree_lists(&dir, id)? {
            return Err(another_tree(&below, &dir, owner));
        }
        let m = read_pagemap(&dir, owner)?.ok_or_else(|| another_tree(&below, &dir, owner))?;
        if let Some(slot) = maps.get_mut(level) {
            *slot = Some(std::rc::Rc::new(m));
        }
    }
    // Shared, not copied: a run after another looks in the same entries.
    let map = maps.get(level).and_then(Option::clone);
    let entries = map
        .as_ref()
        .map(|m| m.entries.as_slice())
        .unwrap_or_default();
    let first = entries.partition_point(|e| e.end <= start);
    let mut at = start;
    for e in entries.get(first..).unwrap_or_default() {
        if at >= end || e.start > at {
            break;
        }
        let to = e.end.min(end);
        if e.present() {
            out.push(Piece {
                start: at,
                end: to,
                level,
                off: e.off + (at - e.start),
            });
        } else if e.in_parent() {
            if level >= MAX_DEPTH {
                return Err(bad(
                    &dir,
                    format!("pages {at:#x}-{to:#x} are in a parent set deeper than {MAX_DEPTH}"),
                ));
            }
            resolve_in(chain, maps, owner, level + 1, (at, to), out)?;
        } else {
            break;
        }
        at = to;
    }
    if at < end {
        return Err(bad(
            &dir,
            format!(
                "the parent image set does not hold pages {at:#x}-{end:#x} of {} that {} says it holds: it was altered, or is another tree's",
                name_of(owner),
                below.display()
            ),
        ));
    }
    Ok(())
}

fn name_of(owner: Owner) -> String {
    let (ty, id) = owner.image();
    ty.file_name(id)
}

fn another_tree(child: &Path, parent: &Path, owner: Owner) -> Error {
    let what = match owner {
        Owner::Task(pid) => format!("process {pid}"),
        Owner::Object(id) => format!("shared memory object {id}"),
    };
    bad(
        child,
        format!(
            "the parent image set {} has no pages of {what} ({} missing or not in its pstree.img): it is not a parent of this image set",
            parent.display(),
            name_of(owner)
        ),
    )
}

/// Resolve the parent runs `runs` ([start, end) each) of `owner` in the
/// image set `dir` through its chain of parents: the pieces, each with the
/// level that holds its bytes; the pages files of the levels are recorded
/// for [`level_files`] under (`dir`, `pages_id`).
pub fn resolve(
    dir: &Path,
    owner: Owner,
    pages_id: u32,
    runs: &[(u64, u64)],
) -> Result<Vec<Piece>, Error> {
    let mut chain = Chain::new(dir);
    let mut maps = vec![None];
    let mut out = Vec::new();
    for &r in runs {
        resolve_in(&mut chain, &mut maps, owner, 1, r, &mut out)?;
    }
    let mut files = vec![dir.join(ImageType::Pages.file_name(u64::from(pages_id)))];
    files.extend(
        maps.iter()
            .skip(1)
            .map(|m| m.as_ref().map(|m| m.pages.clone()).unwrap_or_default()),
    );
    files_table().insert((dir.to_path_buf(), pages_id), files);
    Ok(out)
}

/// Turn resolved pieces into page runs, the level in the offset's high bits.
pub fn pieces_to_runs(pieces: &[Piece]) -> Vec<PageRun> {
    pieces
        .iter()
        .map(|p| PageRun {
            vaddr: p.start,
            npages: (p.end - p.start) / PAGE_SIZE,
            file_off: ((p.level as u64) << LEVEL_SHIFT) | p.off,
            cow: false,
        })
        .collect()
}

/// The stored pages of shared memory object `shmid` of `size` bytes in
/// the image set `dir` (see [`super::shmem::object_page_runs`]), runs in
/// parent sets resolved: their offsets carry the chain level.
pub(crate) fn object_runs(
    dir: &Path,
    shmid: u64,
    size: u64,
    what: &str,
) -> Result<super::shmem::ObjectPages, Error> {
    let owner = Owner::Object(shmid);
    let map = match read_pagemap(dir, owner)? {
        Some(m) if m.entries.iter().any(Entry::in_parent) => m,
        _ => return super::shmem::object_page_runs(dir, shmid, size, what),
    };
    let limit = size.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
    let mut runs = Vec::new();
    let mut parents = Vec::new();
    for e in &map.entries {
        if e.end > limit {
            return Err(bad(
                dir,
                format!(
                    "{}: pages {:#x}-{:#x} are outside {what} of {size} bytes",
                    name_of(owner),
                    e.start,
                    e.end
                ),
            ));
        }
        if e.present() {
            runs.push((e.start, e.off, e.end - e.start));
        } else if e.in_parent() {
            parents.push((e.start, e.end));
        }
    }
    for p in resolve(dir, owner, map.pages_id, &parents)? {
        let off = ((p.level as u64) << LEVEL_SHIFT) | p.off;
        runs.push((p.start, off, p.end - p.start));
    }
    Ok(super::shmem::ObjectPages {
        runs,
        pages_id: map.pages_id,
        pages: map.pages,
    })
}

type FilesTable = std::collections::HashMap<(PathBuf, u32), Vec<PathBuf>>;
static FILES: std::sync::Mutex<Option<FilesTable>> = std::sync::Mutex::new(None);

struct Files(std::sync::MutexGuard<'static, Option<FilesTable>>);
impl Files {
    fn insert(&mut self, k: (PathBuf, u32), v: Vec<PathBuf>) {
        self.0.get_or_insert_with(Default::default).insert(k, v);
    }
    fn get(&self, k: &(PathBuf, u32)) -> Option<&Vec<PathBuf>> {
        self.0.as_ref().and_then(|t| t.get(k))
    }
}

fn files_table() -> Files {
    Files(
        FILES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// A piece to fill: (task address, bytes, offset in the level's file).
type FillRun = (u64, u64, u64);

/// Split the fills of pages file `pages_id` of `dir` by the chain level
/// their offsets carry: (pages file, fills with plain offsets) per level
/// that has any. Offsets without a level are the set's own file.
pub fn level_files(
    dir: &Path,
    pages_id: u32,
    runs: &[FillRun],
) -> Result<Vec<super::fill::FileFills>, Error> {
    let own = dir.join(ImageType::Pages.file_name(u64::from(pages_id)));
    if runs.iter().all(|r| r.2 >> LEVEL_SHIFT == 0) {
        return Ok(if runs.is_empty() {
            Vec::new()
        } else {
            vec![(own, runs.to_vec())]
        });
    }
    let t = files_table();
    let files = t.get(&(dir.to_path_buf(), pages_id)).ok_or_else(|| {
        bad(
            dir,
            format!("pages-{pages_id}.img: pages of a parent set were not resolved"),
        )
    })?;
    let mut by: std::collections::BTreeMap<usize, Vec<FillRun>> = Default::default();
    for &(addr, len, off) in runs {
        by.entry((off >> LEVEL_SHIFT) as usize)
            .or_default()
            .push((addr, len, off & OFF_MASK));
    }
    by.into_iter()
        .map(|(level, v)| {
            let f = files.get(level).cloned().ok_or_else(|| {
                bad(
                    dir,
                    format!("pages-{pages_id}.img: no parent set at level {level}"),
                )
            })?;
            Ok((f, v))
        })
        .collect()
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;

/// `--prev-images-dir`: the parent set must exist; `parent` in the images
/// directory is made a symlink to it, as given (CRIU's link). A dump, a
/// pre-dump and a page server (whose OPEN2 answers come from it) make it.
pub fn link_parent(opts: &crate::Options) -> Result<(), Error> {
    let Some(prev) = &opts.prev_images_dir else {
        return Ok(());
    };
    let full = opts.images_dir.join(prev);
    if !full.is_dir() {
        return Err(Error::unsupported(format!(
            "--prev-images-dir {}: {} is not a directory (a relative path is taken from the images directory)",
            prev.display(),
            full.display()
        )));
    }
    let link = opts.images_dir.join("parent");
    if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(&link);
    }
    std::os::unix::fs::symlink(prev, &link).map_err(|source| Error::Io {
        op: "cannot link the parent image set",
        path: link,
        source,
    })
}
