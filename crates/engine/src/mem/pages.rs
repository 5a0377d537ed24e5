//! The seam of page I/O. At dump, pages go to a [`PageSink`]; at restore
//! they come from a [`PageSource`]. [`LocalImages`] is the implementation
//! both ways on an images directory (`pagemap-N.img`, `pagemap-shmem-N.img`
//! and `pages-N.img`, as CRIU writes them). See docs/ARCHITECTURE.md, "Memory and the page I/O seam" for how a
//! page server, a parent image set or userfaultfd fit in.

use super::fill::{fill_keeping, fill_vm_writev, Filler, Pending};
use super::shmem::ObjectPages;
use super::{bad, PageRun};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_images::proto::vma::VmaEntry;
use crust_sys::PAGE_SIZE;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Write a pagemap image: the head, then one entry per run of
/// (vaddr or object offset, pages, flags).
pub(crate) fn write_pagemap(
    dir: &Path,
    ty: ImageType,
    id: u64,
    pages_id: u32,
    runs: &[(u64, u64, u32)],
) -> Result<(), Error> {
    write_pagemap_named(dir, ty, &ty.file_name(id), pages_id, runs)
}

/// [`write_pagemap`] under the file name `name` (crust's own record of
/// what a dump sent to a page server: `pageserver::client`).
pub(crate) fn write_pagemap_named(
    dir: &Path,
    ty: ImageType,
    name: &str,
    pages_id: u32,
    runs: &[(u64, u64, u32)],
) -> Result<(), Error> {
    let werr = |source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    };
    let mut w = ImageWriter::create(dir, ty, name).map_err(werr)?;
    let head = PagemapHead {
        pages_id,
        ..Default::default()
    };
    w.write_entry(&head).map_err(werr)?;
    for &(vaddr, n, flags) in runs {
        w.write_entry(&PagemapEntry {
            vaddr,
            compat_nr_pages: 0,
            flags: Some(flags),
            nr_pages: Some(n),
            ..Default::default()
        })
        .map_err(werr)?;
    }
    w.finish().map_err(werr)
}

/// The VMAs of `mm` that can hold pages (all but the vsyscall page), in
/// address order: `validate_vmas` has checked that they are sorted and do
/// not overlap, so lookups can bisect.
struct SortedVmas<'a>(Vec<&'a VmaEntry>);

impl<'a> SortedVmas<'a> {
    fn new(mm: &'a MmEntry) -> Self {
        SortedVmas(
            mm.vmas
                .iter()
                .filter(|v| v.status & vs::AREA_VSYSCALL == 0)
                .collect(),
        )
    }

    /// The VMA holding `addr`, if any.
    fn at(&self, addr: u64) -> Option<&'a VmaEntry> {
        let i = self.0.partition_point(|v| v.end <= addr);
        self.0.get(i).copied().filter(|v| v.start <= addr)
    }

    /// The VMAs that cover [start, end) back to back, each accepted by
    /// `ok`; None if there is a gap or a VMA `ok` refuses.
    fn covering(
        &self,
        start: u64,
        end: u64,
        ok: impl Fn(&VmaEntry) -> bool,
    ) -> Option<Vec<&'a VmaEntry>> {
        let mut out = Vec::new();
        let mut cur = start;
        while cur < end {
            let v = self.at(cur).filter(|v| ok(v))?;
            out.push(v);
            cur = v.end;
        }
        Some(out)
    }

    /// Is [start, end) covered by VMAs that may be restored lazily?
    fn all_lazy(&self, start: u64, end: u64) -> bool {
        self.covering(start, end, super::entry_can_be_lazy)
            .is_some()
    }
}

/// Is [start, end) covered by back-to-back private VMAs whose pages can be
/// stored? (CRIU merges runs across adjacent VMAs.)
/// CRIU also stores the vDSO's pages; those are only skipped on restore
/// (`Some(true)`), the kernel provides them.
fn covered_by_private_vmas(vmas: &SortedVmas<'_>, start: u64, end: u64) -> Option<bool> {
    let cover = vmas.covering(start, end, |v| {
        v.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE | vs::AREA_AIORING) != 0
    })?;
    Some(
        cover
            .iter()
            .any(|v| v.status & (vs::AREA_VDSO | vs::AREA_VVAR) != 0),
    )
}

/// A copy-on-write run [vaddr, vaddr + n pages) cut at the boundaries of
/// the anonymous private VMAs that cover it back to back: each piece is
/// inherited with its own VMA. (crust's dumps before issue 11 wrote runs
/// across two adjacent VMAs with identical flags; such images restore.)
/// None if a piece would lie outside such VMAs.
fn split_cow_run(vmas: &SortedVmas<'_>, vaddr: u64, n: u64) -> Option<Vec<PageRun>> {
    if !vaddr.is_multiple_of(PAGE_SIZE) || n == 0 {
        return None;
    }
    let end = vaddr.checked_add(n.checked_mul(PAGE_SIZE)?)?;
    let cover = vmas.covering(vaddr, end, |v| {
        v.status & vs::ANON_PRIVATE != 0 && v.status & (vs::AREA_VDSO | vs::AREA_VVAR) == 0
    })?;
    Some(
        cover
            .iter()
            .map(|v| {
                let (a, b) = (v.start.max(vaddr), v.end.min(end));
                PageRun {
                    vaddr: a,
                    npages: (b - a) / PAGE_SIZE,
                    file_off: 0,
                    cow: true,
                }
            })
            .collect(),
    )
}

/// Read and check process `pid`'s pagemap in local images (see
/// [`PageSource::task_runs`]).
/// `lazy` (a lazy restore): runs left on the source (`PE_LAZY` only) are
/// left out for the daemon; else they are an error.
pub fn load_pagemap(
    dir: &Path,
    pid: i32,
    mm: &MmEntry,
    lazy: bool,
) -> Result<(u32, Vec<PageRun>), Error> {
    let mut l = LocalImages::new(dir);
    l.lazy_ok = lazy;
    l.task_runs(pid, mm)
}

/// Read and check a pagemap image against the VMAs and the pages file.
/// The length of `pages-<pages_id>.img`; missing is an error naming it.
pub(super) fn pages_file_len(dir: &Path, pages_id: u32) -> Result<u64, Error> {
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    match super::zpages::pages_len(&pages_path)? {
        Some(n) => Ok(n),
        None => Err(Error::Image {
            what: format!("cannot read image {}", pages_path.display()),
            source: crust_images::image::ImageError::Missing {
                path: pages_path.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
        }),
    }
}

fn read_pagemap(
    dir: &Path,
    pid: i32,
    mm: &MmEntry,
    lazy_ok: bool,
) -> Result<(u32, Vec<PageRun>), Error> {
    let name = ImageType::Pagemap.file_name(pid as u64);
    let rerr = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut r = crust_images::image::ImageReader::open_typed(dir, ImageType::Pagemap, &name)
        .map_err(rerr)?;
    let head: PagemapHead = r
        .read_entry()
        .map_err(|source| Error::Image {
            what: format!("cannot read image {name}"),
            source,
        })?
        .ok_or_else(|| bad(dir, format!("{name} holds no pagemap head")))?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(|source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    })?;
    let pages_len = pages_file_len(dir, head.pages_id)?;
    let vmas = SortedVmas::new(mm);
    let mut runs = Vec::with_capacity(entries.len());
    // Runs whose bytes are in the parent image set: [start, end).
    let mut in_parent = Vec::new();
    let mut off = 0u64;
    for e in &entries {
        let n = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let flags = super::chain::entry_flags(e);
        let end = e.vaddr.saturating_add(n.saturating_mul(PAGE_SIZE));
        if flags & pe::COW_PARENT != 0 && flags & pe::PRESENT == 0 {
            // Inherited pages must lie in anonymous private VMAs.
            let Some(pieces) = split_cow_run(&vmas, e.vaddr, n) else {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: copy-on-write pages {:#x}+{n} are not inside an anonymous private VMA of mm-{pid}.img",
                        e.vaddr
                    ),
                ));
            };
            runs.extend(pieces);
            continue;
        }
        let parent = flags & pe::PARENT != 0;
        if flags & pe::PRESENT == 0 && !parent {
            if flags & pe::LAZY != 0 {
                check_left_lazy((dir, &name), &vmas, (e.vaddr, n), lazy_ok)?;
            }
            continue;
        }
        let inside = covered_by_private_vmas(&vmas, e.vaddr, end);
        if e.vaddr % PAGE_SIZE != 0 || n == 0 || inside.is_none() {
            return Err(bad(
                dir,
                format!(
                    "{name}: pages {:#x}+{n} are not inside a private VMA of mm-{pid}.img",
                    e.vaddr
                ),
            ));
        }
        if parent {
            if inside == Some(false) {
                in_parent.push((e.vaddr, end));
            }
            continue;
        }
        if inside == Some(false) {
            runs.push(PageRun {
                vaddr: e.vaddr,
                npages: n,
                file_off: off,
                cow: false,
            });
        }
        off += n * PAGE_SIZE;
    }
    if off > pages_len {
        return Err(bad(
            dir,
            format!(
                "{} is truncated: {} bytes, the pagemap needs {off}",
                dir.join(ImageType::Pages.file_name(u64::from(head.pages_id)))
                    .display(),
                pages_len
            ),
        ));
    }
    if !in_parent.is_empty() {
        let owner = super::chain::Owner::Task(pid as u64);
        let pieces = super::chain::resolve(dir, owner, head.pages_id, &in_parent)?;
        runs.extend(super::chain::pieces_to_runs(&pieces));
    }
    Ok((head.pages_id, runs))
}

/// A run of `name` whose pages were left on the source (`PE_LAZY` only):
/// it must lie in lazy memory, and only a lazy restore can take it.
fn check_left_lazy(
    (dir, name): (&Path, &str),
    vmas: &SortedVmas<'_>,
    (vaddr, n): (u64, u64),
    lazy_ok: bool,
) -> Result<(), Error> {
    let end = vaddr.saturating_add(n.saturating_mul(PAGE_SIZE));
    let why = if !vaddr.is_multiple_of(PAGE_SIZE) || n == 0 || !vmas.all_lazy(vaddr, end) {
        "are not inside memory that may be restored lazily"
    } else if !lazy_ok {
        "are on the source (dump --lazy-pages): restore this set with --lazy-pages and a \
         lazy-pages daemon started with --page-server --address/--port of the source"
    } else {
        return Ok(());
    };
    let what =
        format!("{name}: pages {vaddr:#x}+{n} left on the source (PE_LAZY, not stored) {why}");
    Err(bad(dir, what))
}

/// One pagemap entry: `npages` pages at `vaddr` (a task address, or an
/// offset in a shared memory object) with `pe::` flags. Only runs with
/// `pe::PRESENT` have bytes; `pe::COW_PARENT` runs (and, with a parent image
/// set, `in_parent` ones) are recorded without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub npages: u64,
    pub flags: u32,
}

impl Run {
    /// Does the run come with page bytes?
    pub fn has_bytes(&self) -> bool {
        self.flags & pe::PRESENT != 0
    }

    fn end(&self) -> u64 {
        self.vaddr
            .saturating_add(self.npages.saturating_mul(PAGE_SIZE))
    }
}

/// Whose pages a stream carries; names the pagemap and the pages image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOwner {
    /// A process's private memory: `pagemap-<id>.img` (id: the pid the
    /// images use), bytes to `pages-<pages_id>.img`.
    Task { id: u64, pages_id: u32 },
    /// A shared memory object: `pagemap-shmem-<shmid>.img`, bytes to
    /// `pages-<pages_id>.img`.
    Object { shmid: u64, pages_id: u32 },
}

impl PageOwner {
    pub fn pages_id(&self) -> u32 {
        match *self {
            PageOwner::Task { pages_id, .. } | PageOwner::Object { pages_id, .. } => pages_id,
        }
    }
}

/// Where dumped pages go. One stream per owner; streams of different
/// owners may be open at once on different threads (the page worker of a
/// dump, the file table's memfds, System V segments).
pub trait PageSink: Sync {
    /// Start storing the pages of `owner`.
    fn open(&self, owner: PageOwner) -> Result<Box<dyn PageStream + '_>, Error>;
    /// Its streams take [`PageStream::runs_apart`], and store the same
    /// images whichever way the same runs are announced: a large task's
    /// runs may then be announced part by part as its pagemap is scanned,
    /// the copy of the first parts under way while the rest is scanned
    /// (`mem/dump.rs`). Not a page server's: the runs it sends are its
    /// protocol's messages.
    fn runs_in_parts(&self) -> bool {
        false
    }
    /// Claim shared object `shmid` for storing: true the first time in
    /// this sink's dump (an object mapped by several processes is stored
    /// once, not once per mapper). By default every time.
    fn claim_object(&self, _shmid: u64) -> bool {
        true
    }
}

/// The pages of one owner, as they are read.
///
/// Order: runs are announced with [`PageStream::runs`] in address order;
/// the bytes of the announced `PRESENT` runs follow with
/// [`PageStream::pages`] in the same order, in whole buffers (up to
/// 1 MiB, any number of whole pages, a buffer may hold the end of one run
/// and the start of the next). Bytes never come before their run. Runs in
/// one call are kept apart as given; the first run of a call continues the
/// last run of the call before when it starts where that one ended with
/// the same flags (a run cut by a buffer boundary).
pub trait PageStream {
    fn runs(&mut self, runs: &[Run]) -> Result<(), Error>;
    /// As [`PageStream::runs`], but the first run never continues the
    /// last one announced before. Only on the streams of a sink that says
    /// [`PageSink::runs_in_parts`].
    fn runs_apart(&mut self, runs: &[Run]) -> Result<(), Error> {
        Err(Error::Unsupported {
            what: format!(
                "{} runs announced apart to a stream that cannot take them (crust bug)",
                runs.len()
            ),
        })
    }
    fn pages(&mut self, bytes: &[u8]) -> Result<(), Error>;
    /// Takes pages out of a pipe without copying them
    /// ([`PageStream::pipe_pages`] is worth a task's vmsplice).
    fn takes_pipe(&self) -> bool {
        false
    }
    /// The next `len` bytes of pages, as [`PageStream::pages`] would take
    /// them, queued in `pipe`: all of them are taken out of it. By
    /// default read into a buffer and given to [`PageStream::pages`].
    fn pipe_pages(&mut self, pipe: std::os::fd::BorrowedFd<'_>, len: u64) -> Result<(), Error> {
        use std::io::Read;
        let io = |op: &str, e| Error::Sys {
            pid: 0,
            op: op.to_string(),
            source: e,
        };
        let mut from = pipe
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| io("dup a pipe of pages", e))?;
        let mut buf = vec![0u8; (len as usize).min(super::BATCH)];
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let dst = buf.get_mut(..want).unwrap_or_default();
            let n = from
                .read(dst)
                .map_err(|e| io("read pages from a pipe", e))?;
            if n == 0 {
                return Err(Error::Sys {
                    pid: 0,
                    op: format!("the pipe ended {left} bytes before the pages did"),
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            self.pages(buf.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        Ok(())
    }
    /// How many pages of the owner were looked at (a shared memory object:
    /// its size), for the dump's statistics.
    fn scanned(&mut self, _pages: u64) {}
    /// All runs and bytes are in: complete the owner's images.
    fn finish(self: Box<Self>) -> Result<(), Error>;
}

/// Add `new` to the runs announced so far, by the rule of
/// [`PageStream::runs`].
pub fn append_runs(all: &mut Vec<Run>, new: &[Run]) {
    let mut rest = new;
    if let (Some(last), Some(first)) = (all.last_mut(), new.first()) {
        if last.end() == first.vaddr && last.flags == first.flags {
            last.npages += first.npages;
            rest = &new[1..];
        }
    }
    all.extend_from_slice(rest);
}

/// Bytes the `PRESENT` runs of `runs` announce.
pub fn present_bytes(runs: &[Run]) -> u64 {
    runs.iter()
        .filter(|r| r.has_bytes())
        .map(|r| r.npages * PAGE_SIZE)
        .sum()
}

/// Pages in an images directory, as CRIU lays them out: the page sink of
/// a dump and the page source of a restore to and from local images. At
/// restore, fills go to the [`Filler`]'s threads when it has one, else are
/// done on the spot.
#[derive(Clone)]
pub struct LocalImages<'f> {
    dir: std::path::PathBuf,
    filler: Option<&'f Filler>,
    /// Pages left on the source (`PE_LAZY` only) are accepted.
    lazy_ok: bool,
    /// Dump: pages files written compressed (`--compress`).
    compress: Option<crate::options::Compress>,
    /// Pages files are written with O_DIRECT where the file system takes
    /// it (see [`LocalImages::direct_io`]).
    direct: bool,
    /// Pages files have their blocks allocated ahead of the writes (see
    /// [`LocalImages::allocate_ahead`]).
    allocate: bool,
    /// The shared objects stored through this sink ([`PageSink::claim_object`]).
    claimed: std::sync::Arc<Claims>,
}

/// The shared objects a sink has stored, by shmid (a clone of a
/// `LocalImages` shares them: the same dump).
#[derive(Debug, Default)]
pub struct Claims(std::sync::Mutex<std::collections::HashSet<u64>>);

impl Claims {
    /// True the first time `shmid` is claimed.
    pub fn claim(&self, shmid: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(shmid)
    }
}

impl LocalImages<'static> {
    pub fn new(dir: &Path) -> LocalImages<'static> {
        LocalImages {
            dir: dir.to_path_buf(),
            filler: None,
            lazy_ok: false,
            compress: None,
            direct: false,
            allocate: false,
            claimed: Default::default(),
        }
    }

    /// Dump into `dir`, pages files compressed with `c` when given
    /// (`--compress`, `mem/zpages.rs`).
    pub fn compressed(dir: &Path, c: Option<crate::options::Compress>) -> LocalImages<'static> {
        LocalImages {
            compress: c,
            ..LocalImages::new(dir)
        }
    }
}

impl<'f> LocalImages<'f> {
    /// Restore from `dir`, queueing fills on `filler`.
    pub fn with_filler(dir: &Path, filler: &'f Filler) -> LocalImages<'f> {
        LocalImages {
            dir: dir.to_path_buf(),
            filler: Some(filler),
            lazy_ok: false,
            compress: None,
            direct: false,
            allocate: false,
            claimed: Default::default(),
        }
    }

    /// Write pages files with O_DIRECT (a page server's choice, see
    /// `pageserver::server`): bytes handed over page-aligned go to the
    /// device without filling the page cache; others, and file systems
    /// without O_DIRECT, are written as usual.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// Allocate the blocks of pages files ahead of the writes (a page
    /// server's choice, see [`LocalStream::reserve`]). Not for dumps:
    /// their files are made durable at the end, and on ext4 the fsync of
    /// blocks allocated ahead has their extents to convert as well (no
    /// gain measured there).
    pub fn allocate_ahead(mut self, on: bool) -> Self {
        self.allocate = on;
        self
    }

    /// The path of `pages-<pages_id>.img`.
    pub fn pages_path(&self, pages_id: u32) -> std::path::PathBuf {
        self.dir.join(ImageType::Pages.file_name(pages_id as u64))
    }
}

/// A stream into local images: the pages file is written as bytes come,
/// the pagemap image when the stream finishes.
struct LocalStream<'a> {
    dir: &'a Path,
    owner: PageOwner,
    path: std::path::PathBuf,
    out: File,
    /// `--compress`: the compressing writer in front of `out`.
    z: Option<super::zpages::ZWriter>,
    /// The pages file's name, given once it is complete.
    name: crust_sys::private::PrivateName,
    runs: Vec<Run>,
    written: u64,
    scanned: u64,
    /// The file is open O_DIRECT (see [`LocalImages::direct_io`]).
    direct: bool,
    /// Bytes of pages the runs announced so far hold.
    announced: u64,
    /// The file's blocks are allocated up to here ahead of the writes
    /// (None: not done, see [`LocalStream::reserve`]).
    allocated: Option<u64>,
}

/// `CRUST_ALLOCATE_AHEAD=0`: pages files are not allocated ahead (see
/// [`LocalStream::reserve`]; for measuring it).
fn allocate_ahead() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CRUST_ALLOCATE_AHEAD").is_none_or(|v| v != "0"))
}

/// Allocate a pages file's blocks in steps of at least this.
const ALLOCATE_MIN: u64 = 64 << 10;

impl LocalStream<'_> {
    /// With [`LocalImages::allocate_ahead`]: allocate the blocks of the
    /// bytes announced and not yet written in one fallocate, before `len`
    /// more bytes are written: on ext4, a
    /// buffered write into allocated blocks skips the delayed-allocation
    /// bookkeeping of each 4 KiB block (a third of a page server's CPU;
    /// writes of 1 GiB ran at 6.1-6.9 GB/s instead of 4.3-4.7 here). Not
    /// on tmpfs (it would clear pages the write then fills), not for
    /// compressed or O_DIRECT files; a file system that refuses is
    /// written as usual from then on.
    fn reserve(&mut self, len: u64) {
        let Some(at) = self.allocated else { return };
        let end = self.announced.max(self.written + len);
        if end < at + ALLOCATE_MIN {
            return;
        }
        use std::os::fd::AsFd;
        match crust_sys::fs::allocate(self.out.as_fd(), at, end - at) {
            Ok(()) => self.allocated = Some(end),
            Err(e) => {
                log::debug!(
                    "{}: pages file not allocated ahead: {e}",
                    self.path.display()
                );
                self.allocated = None;
            }
        }
    }
}

/// What the pages files of one images directory hold, as this process's
/// dumps wrote them: for the statistics (stats-dump), which count each
/// pages file once, as it ended up (an object written twice is counted
/// once).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageTally {
    /// Pages of processes' private memory in pages files.
    pub pages_written: u64,
    /// Pages of shared memory objects looked at, and stored.
    pub shpages_scanned: u64,
    pub shpages_written: u64,
}

/// (images directory, pages file id) -> (a shared object?, scanned, written).
type TallyMap = std::collections::BTreeMap<(std::path::PathBuf, u32), (bool, u64, u64)>;

static TALLY: std::sync::Mutex<TallyMap> = std::sync::Mutex::new(TallyMap::new());

fn tally() -> std::sync::MutexGuard<'static, TallyMap> {
    TALLY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The totals of the pages files written in `dir` since the last call,
/// forgotten then (the next dump into `dir` starts from nothing).
pub fn take_page_tally(dir: &Path) -> PageTally {
    let mut t = tally();
    let mut out = PageTally::default();
    let keys: Vec<_> = t.keys().filter(|(d, _)| d == dir).cloned().collect();
    for k in keys {
        if let Some((object, scanned, written)) = t.remove(&k) {
            if object {
                out.shpages_scanned += scanned;
                out.shpages_written += written;
            } else {
                out.pages_written += written;
            }
        }
    }
    out
}

/// Count a pages file kept elsewhere (on a page server) with those of
/// `dir`, for the statistics of the dump writing `dir`: as
/// [`take_page_tally`] counts the local ones.
pub(crate) fn note_pages(dir: &Path, pages_id: u32, object: bool, scanned: u64, written: u64) {
    let mut t = tally();
    let e = t
        .entry((dir.to_path_buf(), pages_id))
        .or_insert((object, 0, 0));
    e.1 += scanned;
    e.2 += written;
}

impl PageSink for LocalImages<'_> {
    fn open(&self, owner: PageOwner) -> Result<Box<dyn PageStream + '_>, Error> {
        let mut path = self.pages_path(owner.pages_id());
        if self.compress.is_some() {
            path = self
                .dir
                .join(super::zpages::file_name(owner.pages_id().into()));
        }
        let cerr = |source| Error::Io {
            op: "cannot create",
            path: path.clone(),
            source,
        };
        let (mut out, name) = crust_sys::private::create_private(&path, 0).map_err(cerr)?;
        let z = match self.compress {
            Some(c) => Some(super::zpages::ZWriter::start(&mut out, c).map_err(cerr)?),
            None => None,
        };
        // O_DIRECT only for plain pages files: the compressing writer writes
        // whole frames at the file's position.
        let direct = self.direct && self.compress.is_none() && super::direct::turn_on(&out, &path);
        let allocated = (self.allocate
            && z.is_none()
            && !direct
            && allocate_ahead()
            && !crust_sys::private::in_memory_only(&self.dir))
        .then_some(0);
        Ok(Box::new(LocalStream {
            dir: &self.dir,
            owner,
            path,
            out,
            z,
            name,
            runs: Vec::new(),
            written: 0,
            scanned: 0,
            direct,
            announced: 0,
            allocated,
        }))
    }

    fn claim_object(&self, shmid: u64) -> bool {
        self.claimed.claim(shmid)
    }

    fn runs_in_parts(&self) -> bool {
        true
    }
}

impl PageStream for LocalStream<'_> {
    fn runs(&mut self, runs: &[Run]) -> Result<(), Error> {
        append_runs(&mut self.runs, runs);
        self.announced += present_bytes(runs);
        crate::util::progress::pages_expected(present_bytes(runs));
        Ok(())
    }

    fn runs_apart(&mut self, runs: &[Run]) -> Result<(), Error> {
        self.runs.extend_from_slice(runs);
        self.announced += present_bytes(runs);
        crate::util::progress::pages_expected(present_bytes(runs));
        Ok(())
    }

    fn pages(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.reserve(bytes.len() as u64);
        let r = match &mut self.z {
            Some(z) => z.write(&mut self.out, bytes),
            None => super::direct::write_at(&self.out, bytes, self.written, &mut self.direct),
        };
        r.map_err(|source| Error::Io {
            op: "cannot write",
            path: self.path.clone(),
            source,
        })?;
        self.written += bytes.len() as u64;
        crate::util::progress::pages_written(bytes.len() as u64);
        Ok(())
    }

    /// Plain pages files written through the page cache take pages
    /// spliced in: a page server's bytes go from the socket to the file
    /// without passing through crust (`pageserver/server.rs`).
    fn takes_pipe(&self) -> bool {
        self.z.is_none() && !self.direct
    }

    fn pipe_pages(&mut self, pipe: std::os::fd::BorrowedFd<'_>, len: u64) -> Result<(), Error> {
        use std::os::fd::AsFd;
        if !self.takes_pipe() {
            return Err(Error::Unsupported {
                what: format!(
                    "{}: pages spliced into a compressed or O_DIRECT pages file (crust bug)",
                    self.path.display()
                ),
            });
        }
        self.reserve(len);
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            let r = crust_sys::pipe::splice_at(pipe, self.out.as_fd(), self.written, want, 0);
            let n = match r {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the pipe of pages ended {left} bytes early"),
                )),
                Ok(n) => Ok(n as u64),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            }
            .map_err(|source| Error::Io {
                op: "cannot write",
                path: self.path.clone(),
                source,
            })?;
            self.written += n;
            left -= n;
            crate::util::progress::pages_written(n);
        }
        Ok(())
    }

    fn scanned(&mut self, pages: u64) {
        self.scanned += pages;
    }

    fn finish(mut self: Box<Self>) -> Result<(), Error> {
        if let Some(z) = self.z.take() {
            z.finish(&mut self.out).map_err(|source| Error::Io {
                op: "cannot write",
                path: self.path.clone(),
                source,
            })?;
        }
        let want = present_bytes(&self.runs);
        if self.written != want {
            return Err(Error::Io {
                op: "cannot complete",
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} bytes of pages written, the pagemap lists {want}",
                        self.written
                    ),
                ),
            });
        }
        let entries: Vec<(u64, u64, u32)> = self
            .runs
            .iter()
            .map(|r| (r.vaddr, r.npages, r.flags))
            .collect();
        let (ty, id) = match self.owner {
            PageOwner::Task { id, .. } => (ImageType::Pagemap, id),
            PageOwner::Object { shmid, .. } => (ImageType::ShmemPagemap, shmid),
        };
        self.name.commit().map_err(|source| Error::Io {
            op: "cannot complete",
            path: self.path.clone(),
            source,
        })?;
        // An earlier dump's file of the same pages id in the other form
        // would make the set ambiguous.
        let plain = self
            .dir
            .join(ImageType::Pages.file_name(self.owner.pages_id().into()));
        let other = match self.path == plain {
            true => super::zpages::sibling(&plain),
            false => Some(plain),
        };
        if let Some(o) = other {
            crate::util::remove_stale(&o)?;
        }
        let object = matches!(self.owner, PageOwner::Object { .. });
        tally().insert(
            (self.dir.to_path_buf(), self.owner.pages_id()),
            (object, self.scanned, self.written / PAGE_SIZE),
        );
        write_pagemap(self.dir, ty, id, self.owner.pages_id(), &entries)
    }
}

/// A piece of pages to put into a task: (task address, bytes, offset of
/// the bytes among the owner's stored pages).
pub type FillRun = (u64, u64, u64);

/// Where restored pages come from. The runs are read and checked when the
/// images are loaded; the fills happen once the task's VMAs are mapped
/// (writable where pages go).
pub trait PageSource: Sync {
    /// The runs of process `id`'s pagemap, checked against its VMAs: the
    /// pages file id and the runs (`cow`: inherited, no bytes).
    fn task_runs(&self, id: i32, mm: &MmEntry) -> Result<(u32, Vec<PageRun>), Error>;
    /// The stored pages of shared memory object `shmid` of `size` bytes
    /// (`what` names it in errors).
    fn object_runs(&self, shmid: u64, size: u64, what: &str) -> Result<ObjectPages, Error>;
    /// Start putting `runs` of pages file `pages_id` into task `pid`; the
    /// task must not run, nor its protections change, before the returned
    /// [`Pending`] is over. Of the runs in `keep` (memory the task
    /// inherited from its parent), only the pages that differ from what
    /// the task holds are written: the others stay shared copy-on-write.
    /// With `uffd` (only when [`PageSource::fills_by_uffd`]), the pieces
    /// inside the ranges registered with it go in through it; it is
    /// closed once the fill is over.
    fn fill(
        &self,
        pid: i32,
        pages_id: u32,
        runs: &[FillRun],
        keep: &[FillRun],
        uffd: Option<super::UffdFill>,
    ) -> Arc<Pending>;
    /// Whether [`PageSource::fill`] puts pages in through a userfaultfd
    /// it is given (else the caller makes none).
    fn fills_by_uffd(&self) -> bool {
        false
    }
    /// Put `runs` into task `pid` now (a shared memory object, whose
    /// temporary mapping goes away right after).
    fn fill_now(&self, pid: i32, pages_id: u32, runs: &[FillRun]) -> Result<(), Error>;
}

impl PageSource for LocalImages<'_> {
    fn task_runs(&self, id: i32, mm: &MmEntry) -> Result<(u32, Vec<PageRun>), Error> {
        read_pagemap(&self.dir, id, mm, self.lazy_ok)
    }

    fn object_runs(&self, shmid: u64, size: u64, what: &str) -> Result<ObjectPages, Error> {
        super::chain::object_runs(&self.dir, shmid, size, what)
    }

    fn fills_by_uffd(&self) -> bool {
        self.filler.is_some()
    }

    fn fill_now(&self, pid: i32, pages_id: u32, runs: &[FillRun]) -> Result<(), Error> {
        for (path, r) in super::chain::level_files(&self.dir, pages_id, runs)? {
            fill_vm_writev(pid, &path, &r)?;
        }
        Ok(())
    }

    fn fill(
        &self,
        pid: i32,
        pages_id: u32,
        runs: &[FillRun],
        keep: &[FillRun],
        uffd: Option<super::UffdFill>,
    ) -> Arc<Pending> {
        // Pieces of a parent set carry their chain level (mem/chain.rs).
        let by_file = |r| super::chain::level_files(&self.dir, pages_id, r);
        let (runs, keep) = match by_file(runs).and_then(|r| Ok((r, by_file(keep)?))) {
            Ok(x) => x,
            Err(e) => return Arc::new(Pending::finished_keeping(Err(e))),
        };
        match self.filler {
            Some(f) => f.submit_files(pid, &runs, &keep, uffd),
            None => {
                // Its ranges unregistered: process_vm_writev reaches them.
                drop(uffd);
                Arc::new(Pending::finished_keeping((|| {
                    for (path, r) in &runs {
                        fill_vm_writev(pid, path, r)?;
                    }
                    let mut kept = 0;
                    for (path, r) in &keep {
                        kept += fill_keeping(pid, path, r)?;
                    }
                    Ok(kept)
                })()))
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crust_images::consts::vma as vs;
    use crust_images::proto::vma::VmaEntry;
    use std::sync::Mutex;

    /// A page sink that keeps what it is given: per owner, the runs (by
    /// the rule of `PageStream::runs`) and the bytes.
    #[derive(Default)]
    pub(crate) struct CollectSink {
        got: Mutex<Vec<Collected>>,
        /// Takes runs in parts ([`PageSink::runs_in_parts`]).
        pub(crate) parts: bool,
    }

    /// What a [`CollectSink`] got for one owner.
    pub(crate) type Collected = (PageOwner, Vec<Run>, Vec<u8>);

    impl CollectSink {
        pub(crate) fn take(&self) -> Vec<Collected> {
            std::mem::take(&mut *self.got.lock().unwrap())
        }
    }

    struct CollectStream<'a> {
        sink: &'a CollectSink,
        owner: PageOwner,
        runs: Vec<Run>,
        bytes: Vec<u8>,
    }

    impl PageSink for CollectSink {
        fn open(&self, owner: PageOwner) -> Result<Box<dyn PageStream + '_>, Error> {
            Ok(Box::new(CollectStream {
                sink: self,
                owner,
                runs: Vec::new(),
                bytes: Vec::new(),
            }))
        }

        fn runs_in_parts(&self) -> bool {
            self.parts
        }
    }

    impl PageStream for CollectStream<'_> {
        fn runs(&mut self, runs: &[Run]) -> Result<(), Error> {
            append_runs(&mut self.runs, runs);
            Ok(())
        }
        fn runs_apart(&mut self, runs: &[Run]) -> Result<(), Error> {
            assert!(self.sink.parts);
            self.runs.extend_from_slice(runs);
            Ok(())
        }
        fn pages(&mut self, bytes: &[u8]) -> Result<(), Error> {
            // Bytes never come before their runs.
            assert!(self.bytes.len() as u64 + bytes.len() as u64 <= present_bytes(&self.runs));
            self.bytes.extend_from_slice(bytes);
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), Error> {
            assert_eq!(self.bytes.len() as u64, present_bytes(&self.runs));
            let mut g = self.sink.got.lock().unwrap();
            g.push((self.owner, self.runs, self.bytes));
            Ok(())
        }
    }

    /// A page source whose pages are a Vec, filling a fake memory (a
    /// Vec of bytes from address `base`).
    struct VecSource {
        pages: Vec<u8>,
        base: u64,
        memory: Mutex<Vec<u8>>,
    }

    impl VecSource {
        fn put(&self, runs: &[FillRun]) -> Result<(), Error> {
            let mut m = self.memory.lock().unwrap();
            for &(addr, len, off) in runs {
                let at = (addr - self.base) as usize;
                let from = &self.pages[off as usize..(off + len) as usize];
                m[at..at + len as usize].copy_from_slice(from);
            }
            Ok(())
        }
    }

    impl PageSource for VecSource {
        fn task_runs(&self, _: i32, _: &MmEntry) -> Result<(u32, Vec<PageRun>), Error> {
            Ok((1, Vec::new()))
        }
        fn object_runs(&self, _: u64, _: u64, _: &str) -> Result<ObjectPages, Error> {
            Ok(ObjectPages {
                runs: Vec::new(),
                pages_id: 0,
                pages: std::path::PathBuf::new(),
            })
        }
        fn fill(
            &self,
            _: i32,
            _: u32,
            runs: &[FillRun],
            keep: &[FillRun],
            _: Option<crate::mem::UffdFill>,
        ) -> Arc<Pending> {
            Arc::new(Pending::finished_keeping(
                self.put(runs).and_then(|()| self.put(keep)).map(|()| 0),
            ))
        }
        fn fill_now(&self, _: i32, _: u32, runs: &[FillRun]) -> Result<(), Error> {
            self.put(runs)
        }
    }

    fn run(vaddr: u64, npages: u64, flags: u32) -> Run {
        Run {
            vaddr,
            npages,
            flags,
        }
    }

    #[test]
    fn runs_continue_only_across_calls() {
        let p = pe::PRESENT;
        let mut all = Vec::new();
        // Within one call, adjacent runs stay apart.
        append_runs(&mut all, &[run(0, 1, p), run(PAGE_SIZE, 1, p)]);
        assert_eq!(all.len(), 2);
        // The first run of the next call continues the last one.
        append_runs(
            &mut all,
            &[run(2 * PAGE_SIZE, 2, p), run(8 * PAGE_SIZE, 1, p)],
        );
        assert_eq!(
            all,
            vec![run(0, 1, p), run(PAGE_SIZE, 3, p), run(8 * PAGE_SIZE, 1, p)]
        );
        // Not with other flags, nor with a gap.
        append_runs(&mut all, &[run(9 * PAGE_SIZE, 1, pe::COW_PARENT)]);
        append_runs(&mut all, &[run(11 * PAGE_SIZE, 1, pe::COW_PARENT)]);
        assert_eq!(all.len(), 5);
        assert_eq!(present_bytes(&all), 5 * PAGE_SIZE);
    }

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("crust-pages-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// An mm with two back-to-back anonymous private VMAs
    /// 0x10000-0x14000 and 0x14000-0x18000, a file private one at
    /// 0x20000-0x22000, and a vDSO at 0x30000-0x32000.
    fn mm() -> MmEntry {
        let vma = |start, end, status| VmaEntry {
            start,
            end,
            prot: 3,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            status: vs::AREA_REGULAR | status,
            fd: -1,
            ..Default::default()
        };
        MmEntry {
            vmas: vec![
                vma(0x10000, 0x14000, vs::ANON_PRIVATE),
                vma(0x14000, 0x18000, vs::ANON_PRIVATE),
                vma(0x20000, 0x22000, vs::FILE_PRIVATE),
                vma(0x30000, 0x32000, vs::ANON_PRIVATE | vs::AREA_VDSO),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn runs_across_vmas() {
        let mm = mm();
        let vmas = SortedVmas::new(&mm);
        // Back-to-back private VMAs make one run (CRIU merges them).
        assert_eq!(
            covered_by_private_vmas(&vmas, 0x12000, 0x16000),
            Some(false)
        );
        // A gap between VMAs.
        assert_eq!(covered_by_private_vmas(&vmas, 0x17000, 0x21000), None);
        assert_eq!(covered_by_private_vmas(&vmas, 0x8000, 0x11000), None);
        assert_eq!(covered_by_private_vmas(&vmas, 0x40000, 0x41000), None);
        // The vDSO's pages are stored but not restored.
        assert_eq!(covered_by_private_vmas(&vmas, 0x30000, 0x32000), Some(true));
    }

    #[test]
    fn cow_runs_are_cut_at_vma_boundaries() {
        let mm = mm();
        let vmas = SortedVmas::new(&mm);
        let pieces = |vaddr, n| {
            split_cow_run(&vmas, vaddr, n)
                .map(|v| v.iter().map(|r| (r.vaddr, r.npages)).collect::<Vec<_>>())
        };
        // Inside one VMA: as is.
        assert_eq!(pieces(0x11000, 2), Some(vec![(0x11000, 2)]));
        // Across two adjacent anonymous VMAs (nginx after a reload): one
        // piece per VMA.
        assert_eq!(pieces(0x12000, 4), Some(vec![(0x12000, 2), (0x14000, 2)]));
        // Past the end, into a file mapping, into the vDSO, empty, unaligned.
        assert_eq!(pieces(0x16000, 4), None);
        assert_eq!(pieces(0x20000, 1), None);
        assert_eq!(pieces(0x30000, 1), None);
        assert_eq!(pieces(0x10000, 0), None);
        assert_eq!(pieces(0x10001, 1), None);
        assert_eq!(pieces(0x10000, u64::MAX), None);
        // And through load_pagemap: the run that crosses is taken.
        let t = pagemap_with("cowsplit", &[(0x12000, 4, pe::COW_PARENT)], 0);
        let (_, runs) = load_pagemap(&t.0, 42, &mm, false).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r.cow));
    }

    #[test]
    fn local_images_round_trip() {
        let t = temp("rt");
        let sink = LocalImages::new(&t.0);
        let mut s = task_stream(&sink, 7);
        let runs = [
            run(0x10000, 2, pe::PRESENT),
            run(0x12000, 1, pe::COW_PARENT),
            run(0x13000, 2, pe::PRESENT),
            run(0x30000, 1, pe::PRESENT),
        ];
        s.runs(&runs).unwrap();
        let bytes: Vec<u8> = (0..5 * PAGE_SIZE).map(|i| (i / PAGE_SIZE) as u8).collect();
        s.pages(&bytes[..3 * PAGE_SIZE as usize]).unwrap();
        s.pages(&bytes[3 * PAGE_SIZE as usize..]).unwrap();
        s.finish().unwrap();
        let (pages_id, back) = load_pagemap(&t.0, 42, &mm(), false).unwrap();
        assert_eq!(pages_id, 7);
        let got: Vec<_> = back
            .iter()
            .map(|r| (r.vaddr, r.npages, r.file_off, r.cow))
            .collect();
        // The vDSO's page is skipped but its bytes are counted.
        assert_eq!(
            got,
            vec![
                (0x10000, 2, 0, false),
                (0x12000, 1, 0, true),
                (0x13000, 2, 2 * PAGE_SIZE, false)
            ]
        );
        // Fill a fake memory from the same bytes through a source.
        let src = VecSource {
            pages: bytes,
            base: 0x10000,
            memory: Mutex::new(vec![0xff; 0x8000]),
        };
        let (fills, keep) = crate::mem::restore::task_fills(&back, &[]);
        src.fill(1, pages_id, &fills, &keep, None).wait().unwrap();
        let m = src.memory.lock().unwrap();
        let pg = PAGE_SIZE as usize;
        assert_eq!((m[0], m[pg], m[3 * pg], m[4 * pg]), (0, 1, 2, 3));
        // The inherited page is left alone.
        assert_eq!(m[2 * pg], 0xff);
    }

    /// The stream of task 42's pages, as pages file `pages_id`.
    fn task_stream<'a>(sink: &'a LocalImages<'_>, pages_id: u32) -> Box<dyn PageStream + 'a> {
        sink.open(PageOwner::Task { id: 42, pages_id }).unwrap()
    }

    /// A page server's stream: blocks allocated ahead, bytes given and
    /// bytes spliced from a pipe land in order, the file ends as long as
    /// its pages (on tmpfs nothing is allocated ahead: the same bytes).
    #[test]
    fn pages_spliced_into_a_file_allocated_ahead() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let t = temp("spliced");
        let sink = LocalImages::new(&t.0).allocate_ahead(true);
        let mut s = task_stream(&sink, 9);
        assert!(s.takes_pipe());
        let pg = PAGE_SIZE as usize;
        let bytes: Vec<u8> = (0..40 * pg)
            .map(|i| (i / pg) as u8 ^ (i % 251) as u8)
            .collect();
        s.runs(&[run(0x10000, 8, pe::PRESENT)]).unwrap();
        s.pages(&bytes[..8 * pg]).unwrap();
        s.runs(&[run(0x18000, 32, pe::PRESENT)]).unwrap();
        let (r, w) = crust_sys::pipe::pipe2(libc::O_CLOEXEC).unwrap();
        crust_sys::pipe::set_pipe_size(w.as_fd(), 1 << 20).unwrap();
        std::fs::File::from(w).write_all(&bytes[8 * pg..]).unwrap();
        s.pipe_pages(r.as_fd(), 32 * PAGE_SIZE).unwrap();
        s.finish().unwrap();
        let got = std::fs::read(sink.pages_path(9)).unwrap();
        assert_eq!(got.len(), bytes.len());
        assert!(got == bytes);
    }

    /// A stream allocated ahead whose bytes do not all come fails, as any.
    #[test]
    fn allocated_ahead_refuses_short_pages() {
        let t = temp("ahead-short");
        let sink = LocalImages::new(&t.0).allocate_ahead(true);
        let mut s = task_stream(&sink, 3);
        s.runs(&[run(0x10000, 64, pe::PRESENT)]).unwrap();
        s.pages(&vec![7u8; 16 * PAGE_SIZE as usize]).unwrap();
        assert!(matches!(s.finish(), Err(Error::Io { .. })));
        assert!(!sink.pages_path(3).exists());
    }

    #[test]
    fn local_images_refuse_short_pages() {
        let t = temp("short");
        let sink = LocalImages::new(&t.0);
        let mut s = sink
            .open(PageOwner::Object {
                shmid: 5,
                pages_id: 2,
            })
            .unwrap();
        s.runs(&[run(0, 2, pe::PRESENT)]).unwrap();
        s.pages(&vec![1u8; PAGE_SIZE as usize]).unwrap();
        assert!(matches!(s.finish(), Err(Error::Io { .. })));
    }

    /// The tally counts each pages file once, as it ended up: an object
    /// stored twice counts once; task pages and object pages apart.
    #[test]
    fn page_tally_counts_each_file_once() {
        let t = temp("tally");
        let sink = LocalImages::new(&t.0);
        let store = |owner: PageOwner, pages: u64, scanned: u64| {
            let mut s = sink.open(owner).unwrap();
            s.scanned(scanned);
            s.runs(&[run(0x10000, pages, pe::PRESENT)]).unwrap();
            s.pages(&vec![7u8; (pages * PAGE_SIZE) as usize]).unwrap();
            s.finish().unwrap();
        };
        let task = PageOwner::Task {
            id: 42,
            pages_id: 1,
        };
        let object = PageOwner::Object {
            shmid: 5,
            pages_id: 1 << 31 | 5,
        };
        store(task, 3, 0);
        store(object, 2, 4);
        store(object, 2, 4);
        let files: u64 = std::fs::read_dir(&t.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let got = take_page_tally(&t.0);
        assert_eq!(
            got,
            PageTally {
                pages_written: 3,
                shpages_scanned: 4,
                shpages_written: 2
            }
        );
        assert_eq!((got.pages_written + got.shpages_written) * PAGE_SIZE, files);
        // Taken: the next dump into the directory starts from nothing.
        assert_eq!(take_page_tally(&t.0), PageTally::default());
    }

    fn pagemap_with(tag: &str, entries: &[(u64, u64, u32)], pages_len: u64) -> TempDir {
        let t = temp(tag);
        write_pagemap(&t.0, ImageType::Pagemap, 42, 1, entries).unwrap();
        std::fs::write(t.0.join("pages-1.img"), vec![0u8; pages_len as usize]).unwrap();
        t
    }

    #[test]
    fn pagemap_checks() {
        let p = pe::PRESENT;
        let ok = pagemap_with("ok", &[(0x10000, 8, p)], 8 * PAGE_SIZE);
        assert_eq!(load_pagemap(&ok.0, 42, &mm(), false).unwrap().1.len(), 1);
        // Past the VMAs.
        let t = pagemap_with("past", &[(0x16000, 4, p)], 4 * PAGE_SIZE);
        assert!(matches!(
            load_pagemap(&t.0, 42, &mm(), false),
            Err(Error::BadImage { .. })
        ));
        // Unaligned.
        let t = pagemap_with("unal", &[(0x10001, 1, p)], PAGE_SIZE);
        assert!(matches!(
            load_pagemap(&t.0, 42, &mm(), false),
            Err(Error::BadImage { .. })
        ));
        // The pages file is shorter than the pagemap says.
        let t = pagemap_with("trunc", &[(0x10000, 2, p)], PAGE_SIZE);
        assert!(matches!(
            load_pagemap(&t.0, 42, &mm(), false),
            Err(Error::BadImage { .. })
        ));
        // Copy-on-write pages only in anonymous private memory.
        let t = pagemap_with("cowfile", &[(0x20000, 1, pe::COW_PARENT)], 0);
        assert!(matches!(
            load_pagemap(&t.0, 42, &mm(), false),
            Err(Error::BadImage { .. })
        ));
        // Pages in a parent image set, and there is none.
        let t = pagemap_with("parent", &[(0x10000, 1, pe::PARENT)], 0);
        assert!(matches!(
            load_pagemap(&t.0, 42, &mm(), false),
            Err(Error::BadImage { .. })
        ));
    }
}
