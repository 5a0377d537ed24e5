//! Dump side of private memory: scanning /proc/PID/pagemap of every VMA
//! that stores pages (zero page and copy-on-write detection) and copying the
//! chosen runs out of the task.

use super::pages::{PageOwner, PageSink, PageStream, Run};
use super::shmem::dump_shmem;
use super::{PageCounts, Vma, BATCH};
use crate::util::{proc_err, sys_err};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_proc::{PagemapReader, Pme, ProcRoot};
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};
use log::debug;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Buffers of BATCH bytes going round between the reader and the writer
/// of a page dump.
const DUMP_BUFFERS: usize = 3;

/// The page frame number of the kernel's shared zero page, or None if it
/// cannot be told (PFNs are hidden without CAP_SYS_ADMIN). Two untouched
/// pages of a fresh zeroed allocation of our own are read once: both then
/// map the zero page, and /proc/self/pagemap shows its PFN.
fn zero_page_pfn() -> Option<u64> {
    static ZERO: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| {
        // Large enough that the allocator maps it fresh (calloc: untouched).
        let v = vec![0u8; 1 << 20];
        let v = std::hint::black_box(&v);
        let start = v.as_ptr() as u64;
        let a = start.div_ceil(PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE;
        let b = a + 8 * PAGE_SIZE;
        let sum = std::hint::black_box(v[(a - start) as usize])
            | std::hint::black_box(v[(b - start) as usize]);
        if sum != 0 {
            return None;
        }
        let proc = ProcRoot::default();
        let pm = PagemapReader::open(&proc, crust_sys::process::getpid()).ok()?;
        let pa = Pme(*pm.read(a, 1).ok()?.first()?);
        let pb = Pme(*pm.read(b, 1).ok()?.first()?);
        let ok = pa.present() && pb.present() && pa.pfn() != 0 && pa.pfn() == pb.pfn();
        debug!("zero page pfn: {:?}", ok.then_some(pa.pfn()));
        ok.then_some(pa.pfn())
    })
}

/// A run of pages to copy out of the task.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadRun {
    pub(super) addr: u64,
    pub(super) npages: u64,
    /// Readable with process_vm_readv (else through /proc/PID/mem).
    pub(super) readable: bool,
    /// A run of its own, never joined with its neighbours (the vDSO).
    pub(super) alone: bool,
}

/// Append one page to a list of runs, extending the last run if it can.
fn push_page(runs: &mut Vec<ReadRun>, addr: u64, readable: bool) {
    if let Some(last) = runs.last_mut() {
        if !last.alone && last.readable == readable && last.addr + last.npages * PAGE_SIZE == addr {
            last.npages += 1;
            return;
        }
    }
    runs.push(ReadRun {
        addr,
        npages: 1,
        readable,
        alone: false,
    });
}

/// The parent process of a dumped one, with its VMAs, for finding the
/// pages they still share copy-on-write.
pub struct CowParent<'a> {
    pub pid: i32,
    pub vmas: &'a [Vma],
}

/// What becomes of one page of a VMA whose pages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Absent, or a private file page still the file's: not stored.
    Skip,
    /// The parent's very page (copy-on-write): recorded `COW_PARENT`.
    Cow,
    /// The kernel's shared zero page in anonymous memory: left out.
    Zero,
    /// Stored; `pinnable`: may be read with process_vm_readv.
    Store { pinnable: bool },
}

/// Decide the fate of page `p` of a VMA (`file_private`: a private file
/// mapping), `pp` being the parent's page at the same address when the
/// parent has the same anonymous VMA, `zero_pfn` the shared zero page.
pub(super) fn fate(p: Pme, pp: Option<Pme>, file_private: bool, zero_pfn: Option<u64>) -> Fate {
    // A guard page has nothing to read (reading it faults): it is stored
    // as a guard region (`guard_entries`).
    if p.guard() {
        return Fate::Skip;
    }
    // No page either: the marker userfaultfd leaves where it write-protects
    // a page never touched (the write tracking of pre-dumps and `dump -R`).
    // Stored, it would come back as a page of zeros the task never had.
    if p.marker() {
        return Fate::Skip;
    }
    if let Some(pp) = pp {
        // In a private file mapping only the pages it copied (anonymous
        // ones) count: the file's own pages come from the file anyway.
        if p.present()
            && pp.present()
            && p.pfn() != 0
            && p.pfn() == pp.pfn()
            && zero_pfn != Some(p.pfn())
            && !(file_private && p.file_or_shared_anon())
        {
            return Fate::Cow;
        }
    }
    let want = if file_private {
        (p.present() && !p.file_or_shared_anon()) || p.swapped()
    } else {
        p.present() || p.swapped()
    };
    if !want {
        return Fate::Skip;
    }
    // Anonymous pages that are the shared zero page read as zeros after
    // restore anyway (in a private file mapping the file's page would show
    // instead, so those are kept).
    if !file_private && p.present() && zero_pfn == Some(p.pfn()) {
        return Fate::Zero;
    }
    // process_vm_readv pins the pages it reads, and pinning an anonymous
    // page that is shared copy-on-write makes the kernel give this process
    // its own copy: the sharing (with a parent or a child) would be lost,
    // even with -R. Pages that are not exclusive are read through
    // /proc/PID/mem, which does not pin.
    Fate::Store {
        pinnable: !p.present() || p.exclusive() || file_private,
    }
}

/// The outcome of scanning a process's pagemap: the runs to read, the runs
/// shared with the parent, and the counts so far.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) runs: Vec<ReadRun>,
    cow: Vec<(u64, u64)>,
    /// Runs left to the parent image set (`PE_PARENT`: not written since).
    in_parent: Vec<(u64, u64)>,
    /// Start addresses of the runs of `runs` that may be restored lazily
    /// (stored `PE_PRESENT | PE_LAZY`, as CRIU marks them), sorted.
    lazy_stored: Vec<u64>,
    /// Runs left on the source for a lazy restore (`PE_LAZY` only, no
    /// bytes: `dump --lazy-pages`).
    lazy_left: Vec<(u64, u64)>,
    pub(super) counts: PageCounts,
    /// The shared objects to store against the parent set.
    pub(super) objects: Option<std::sync::Arc<super::objtrack::ObjectsSince>>,
}

/// Which pages of a process may be restored lazily: `ranges` (sorted,
/// apart: its lazy VMAs less the pages its threads' stacks and rseq
/// areas are on), and whether they are left on the source (`dump
/// --lazy-pages`) rather than stored.
#[derive(Clone, Copy)]
pub struct LazyMark<'a> {
    pub ranges: &'a [std::ops::Range<u64>],
    pub leave: bool,
}

/// An incremental dump: the pages written since the parent image set
/// (the tracker's answer), the pages the parent chain holds (its
/// pagemap's runs) and every page its pagemap lists, all sorted, disjoint
/// byte ranges. A page to store that was not written and that the parent
/// holds is announced as in the parent (`PE_PARENT`), not stored; any
/// other is stored (a page read in since, the zero page where its frame
/// number is hidden, is not written yet is not in the parent either).
#[derive(Clone, Copy)]
pub struct Since<'a> {
    pub dirty: &'a [std::ops::Range<u64>],
    pub parent_has: &'a [std::ops::Range<u64>],
    pub parent_lists: &'a [std::ops::Range<u64>],
    /// The shared objects stored against the parent set too.
    pub objects: Option<&'a std::sync::Arc<super::objtrack::ObjectsSince>>,
}

fn covers(ranges: &[std::ops::Range<u64>], addr: u64) -> bool {
    let i = ranges.partition_point(|r| r.end <= addr);
    ranges.get(i).is_some_and(|r| r.start <= addr)
}

/// Where the answer of [`covers`] for `ranges` may change next after `at`
/// (u64::MAX: never).
fn next_edge(ranges: &[std::ops::Range<u64>], at: u64) -> u64 {
    let i = ranges.partition_point(|r| r.end <= at);
    match ranges.get(i) {
        Some(r) if r.start <= at => r.end,
        Some(r) => r.start,
        None => u64::MAX,
    }
}

impl Since<'_> {
    /// Must the page at `addr` be stored (else: in the parent)?
    fn written(&self, addr: u64) -> bool {
        covers(self.dirty, addr) || !covers(self.parent_has, addr)
    }

    /// The parts of [start, end) that may hold pages: written since, or
    /// listed by the parent's pagemap; sorted, disjoint.
    fn candidates(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let clip = |rs: &[std::ops::Range<u64>]| {
            let first = rs.partition_point(|r| r.end <= start);
            (rs.get(first..).unwrap_or_default().iter())
                .take_while(|r| r.start < end)
                .map(|r| r.start.max(start)..r.end.min(end))
                .collect::<Vec<_>>()
        };
        let mut all = clip(self.dirty);
        all.extend(clip(self.parent_lists));
        (super::track::merge(all).into_iter())
            .map(|r| (r.start, r.end))
            .collect()
    }

    /// [`Since::written`] of `at`, and where the answer may change next
    /// (at most `end`): every page of [at, next) has the same answer.
    fn piece(&self, at: u64, end: u64) -> (bool, u64) {
        let next = next_edge(self.dirty, at)
            .min(next_edge(self.parent_has, at))
            .min(end);
        (self.written(at), next.max(at + PAGE_SIZE))
    }
}

/// Add the page at `addr` to the runs of `list`, extending the last run
/// if it is the page before, within the same VMA `v`.
fn push_run(list: &mut Vec<(u64, u64)>, v: &Vma, addr: u64) {
    match list.last_mut() {
        Some((s, n)) if *s >= v.map.start && *s + *n * PAGE_SIZE == addr => *n += 1,
        _ => list.push((addr, 1)),
    }
}

/// Append `more` to `list`, joining the runs that meet at the junction
/// when `join` says they may.
fn append_runs(list: &mut Vec<(u64, u64)>, more: Vec<(u64, u64)>, join: bool) {
    let mut more = more.into_iter();
    if let (true, Some((s, n)), Some(first)) = (join, list.last_mut(), more.as_slice().first()) {
        if *s + *n * PAGE_SIZE == first.0 {
            *n += first.1;
            more.next();
        }
    }
    list.extend(more);
}

impl Scan {
    /// This scan followed by `high`, of the memory above it, as one scan of
    /// both would be: runs to read meet across VMAs, runs to announce only
    /// within one (`inside`: the cut is inside a VMA). Both may be marked
    /// lazy (by the same [`LazyMark`], not leaving pages): runs to read meet
    /// only if both are lazy or neither (no lazy range ends at the cut).
    pub(super) fn join(mut self, high: Scan, inside: bool) -> Scan {
        let mut more = high.runs.into_iter();
        let mut lazy_more = high.lazy_stored.into_iter();
        if let (Some(l), Some(f)) = (self.runs.last_mut(), more.as_slice().first()) {
            let f_lazy = lazy_more.as_slice().first() == Some(&f.addr);
            let l_lazy = self.lazy_stored.last() == Some(&l.addr);
            if !l.alone
                && !f.alone
                && l.readable == f.readable
                && l.addr + l.npages * PAGE_SIZE == f.addr
                && l_lazy == f_lazy
            {
                l.npages += f.npages;
                more.next();
                if f_lazy {
                    lazy_more.next();
                }
            }
        }
        self.runs.extend(more);
        self.lazy_stored.extend(lazy_more);
        self.lazy_left.extend(high.lazy_left);
        append_runs(&mut self.cow, high.cow, inside);
        append_runs(&mut self.in_parent, high.in_parent, inside);
        self.counts.add(&high.counts);
        self
    }

    /// Only the last run of each kind: all a [`Scan::join`] with the
    /// memory above looks at (no counts, not marked lazy).
    pub(super) fn last_runs(mut self) -> Scan {
        fn last<T>(v: &mut Vec<T>) -> Vec<T> {
            v.pop().into_iter().collect()
        }
        let runs = last(&mut self.runs);
        let lazy = |a: &u64| runs.first().is_some_and(|r| r.addr == *a);
        Scan {
            lazy_stored: last(&mut self.lazy_stored)
                .into_iter()
                .filter(lazy)
                .collect(),
            runs,
            cow: last(&mut self.cow),
            in_parent: last(&mut self.in_parent),
            ..Scan::default()
        }
    }

    /// The pagemap entries: stored runs and copy-on-write runs, by address.
    pub(super) fn entries(&self) -> Vec<Run> {
        let mut entries: Vec<Run> = self
            .runs
            .iter()
            .map(|r| Run {
                vaddr: r.addr,
                npages: r.npages,
                flags: match self.lazy_stored.binary_search(&r.addr) {
                    Ok(_) => pe::PRESENT | pe::LAZY,
                    Err(_) => pe::PRESENT,
                },
            })
            .chain(self.cow.iter().map(|&(vaddr, npages)| Run {
                vaddr,
                npages,
                flags: pe::COW_PARENT,
            }))
            .chain(self.in_parent.iter().map(|&(vaddr, npages)| Run {
                vaddr,
                npages,
                flags: pe::PARENT,
            }))
            .chain(self.lazy_left.iter().map(|&(vaddr, npages)| Run {
                vaddr,
                npages,
                flags: pe::LAZY,
            }))
            .collect();
        entries.sort_by_key(|e| e.vaddr);
        entries
    }

    /// Cut the runs to store at the ends of the lazy ranges of `mark`:
    /// the pieces inside are marked lazy, or with `mark.leave` taken out
    /// of the runs to read and announced as lazy only.
    pub(super) fn mark_lazy(&mut self, mark: LazyMark<'_>) {
        if mark.ranges.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.runs.len());
        for r in std::mem::take(&mut self.runs) {
            let end = r.addr + r.npages * PAGE_SIZE;
            let mut at = r.addr;
            while at < end {
                let i = mark.ranges.partition_point(|x| x.end <= at);
                let hit = mark.ranges.get(i).filter(|x| x.start <= at);
                let stop = match (hit, mark.ranges.get(i)) {
                    (Some(x), _) => x.end.min(end),
                    (None, Some(x)) => x.start.min(end),
                    (None, None) => end,
                };
                let piece = ReadRun {
                    addr: at,
                    npages: (stop - at) / PAGE_SIZE,
                    ..r
                };
                match hit {
                    Some(_) if mark.leave => {
                        self.lazy_left.push((at, piece.npages));
                        self.counts.lazy += piece.npages;
                    }
                    Some(_) => {
                        self.lazy_stored.push(at);
                        out.push(piece);
                    }
                    None => out.push(piece),
                }
                at = stop;
            }
        }
        self.runs = out;
    }

    /// Add the page at `addr` of `v` with its fate; with `since`, a page
    /// to store that was not written since the parent set is left to it.
    fn add(&mut self, v: &Vma, addr: u64, f: Fate, since: Option<Since<'_>>) {
        match f {
            Fate::Skip => {}
            Fate::Cow => {
                // A run never crosses into the next VMA, even one right
                // after with the same flags: each is inherited whole, by
                // itself (restore checks each run against one VMA).
                push_run(&mut self.cow, v, addr);
                self.counts.cow += 1;
            }
            Fate::Zero => self.counts.zero += 1,
            Fate::Store { .. } if since.is_some_and(|s| !s.written(addr)) => {
                push_run(&mut self.in_parent, v, addr);
                self.counts.in_parent += 1;
            }
            Fate::Store { pinnable } => push_page(&mut self.runs, addr, v.map.read && pinnable),
        }
    }
}

/// Does the parent have the very same anonymous private VMA as `v`, so
/// that their pages may be shared copy-on-write?
fn parent_has_same(pid: i32, v: &Vma, parent: &Option<CowParent<'_>>) -> bool {
    let Some(p) = parent else {
        return false;
    };
    // Huge pages are stored whole: restore cannot zero 4 KiB of one.
    if v.vm_flags.has("ht") {
        return false;
    }
    // The parent's VMAs are in address order, as /proc/PID/maps lists them.
    let i = p.vmas.partition_point(|pv| pv.map.start < v.map.start);
    let same = p.vmas.get(i).is_some_and(|pv| {
        pv.map.start == v.map.start
            && pv.map.end == v.map.end
            && pv.status == v.status
            && pv.dumps_pages()
            // A private file mapping: of the same file, at the same offset.
            && (v.status & vs::FILE_PRIVATE == 0
                || (pv.map.inode == v.map.inode
                    && pv.map.dev_major == v.map.dev_major
                    && pv.map.dev_minor == v.map.dev_minor
                    && pv.map.offset == v.map.offset
                    && pv.map.path == v.map.path))
    });
    debug!(
        "{pid}: VMA {:#x}-{:#x} compared with parent {}: {}",
        v.map.start,
        v.map.end,
        p.pid,
        if same { "same VMA" } else { "no such VMA" }
    );
    same
}

/// Pagemap entries read at once: 512 KiB of them, whatever the size of
/// the VMA.
const PAGEMAP_CHUNK: u64 = 1 << 16;

/// Pieces of [`Pages::look_near`] this many pages apart or closer share
/// one pagemap read. The kernel's walk costs per page read (about 160 ns
/// a page here, exclusivity included), a read about a microsecond: past a
/// few pages of gap, two reads cost less than one over the gap. (With the
/// gap bounded only by [`PAGEMAP_CHUNK`], 12 MiB written at random over
/// 1 GiB read the whole GiB's pagemap while frozen: 28-35 ms.)
const LOOK_GAP: u64 = 8;

/// A written range of an incremental dump this many pages long or longer
/// is cut to its populated parts before its entries are read (see
/// [`Pages::holding_pages`]).
const POPULATED_FROM: u64 = 512;

/// The parts of [start, end) of `pid` that hold pages (present or
/// swapped), as `PAGEMAP_SCAN` finds them: what was never touched (a
/// PROT_NONE reservation of terabytes) costs neither time nor memory.
/// On a kernel without it, the whole range.
fn populated(pid: i32, pm: &PagemapReader, start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
    let anyof = mem::PAGE_IS_PRESENT | mem::PAGE_IS_SWAPPED;
    let any = |f: &File, a, b, out: &mut [mem::PageRegion]| mem::pagemap_scan(f, a, b, anyof, out);
    Ok(regions_of(pid, pm, start, end, any)?.unwrap_or_else(|| vec![(start, end)]))
}

/// The regions of [start, end) `PAGEMAP_SCAN` finds with `how`, merged;
/// None on a kernel without it.
pub(super) fn regions_of(
    pid: i32,
    pm: &PagemapReader,
    start: u64,
    end: u64,
    how: impl Fn(&File, u64, u64, &mut [mem::PageRegion]) -> std::io::Result<(usize, u64)>,
) -> Result<Option<Vec<(u64, u64)>>, Error> {
    let mut regions = [mem::PageRegion::default(); 256];
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut cur = start;
    while cur < end {
        let (n, stop) = match how(pm.file(), cur, end, &mut regions) {
            Ok(x) => x,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                debug!("{pid}: no PAGEMAP_SCAN ({e}): reading the whole pagemap");
                return Ok(None);
            }
            Err(e) => return Err(sys_err(pid, "ioctl(PAGEMAP_SCAN)")(e)),
        };
        for r in regions.iter().take(n) {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if stop <= cur || stop >= end {
            break;
        }
        cur = stop;
    }
    Ok(Some(out))
}

/// Scan the pagemap of every VMA whose pages are stored: only the parts
/// that hold pages, in bounded chunks.
pub(super) fn scan(
    pid: i32,
    vmas: &[Vma],
    parent: &Option<CowParent<'_>>,
    since: Option<Since<'_>>,
) -> Result<Scan, Error> {
    let objects = since.as_ref().and_then(|s| s.objects.cloned());
    let mut s = scan_window(pid, vmas, parent, since, 0..u64::MAX)?;
    s.objects = objects;
    Ok(s)
}

/// Memory below which [`scan_halves`] uses one thread...
const HALVES_FROM: u64 = 64 << 20;
/// ...unless it is spread over this many VMAs or more (the kernel walks
/// each VMA's page tables on its own: 10,000 one-page VMAs, 15 ms).
const HALVES_FROM_VMAS: usize = 4096;

/// [`scan`] on two threads, each over about half of the memory whose
/// pages are stored (the frozen part of a snapshot: the kernel's page
/// table walks are most of it, and they run on both CPUs).
pub(super) fn scan_halves(
    pid: i32,
    vmas: &[Vma],
    parent: &Option<CowParent<'_>>,
) -> Result<Scan, Error> {
    let Some((mid, inside)) = midpoint(vmas) else {
        return scan(pid, vmas, parent, None);
    };
    let (low, high) = std::thread::scope(|sc| {
        let h = sc.spawn(|| scan_window(pid, vmas, parent, None, mid..u64::MAX));
        let low = scan_window(pid, vmas, parent, None, 0..mid);
        (low, h.join())
    });
    let high = high.map_err(|_| Error::Sys {
        pid,
        op: "scanning the upper half of the pagemap (the thread panicked)".to_string(),
        source: std::io::Error::other("panic"),
    })?;
    Ok(low?.join(high?, inside))
}

/// The page-aligned address that cuts the memory whose pages are stored
/// in two halves, and whether it falls inside a VMA; None under
/// [`HALVES_FROM`] in fewer than [`HALVES_FROM_VMAS`] VMAs.
fn midpoint(vmas: &[Vma]) -> Option<(u64, bool)> {
    let size = |v: &&Vma| v.map.end - v.map.start;
    let stored = || vmas.iter().filter(|v| v.dumps_pages());
    let total: u64 = stored().map(|v| size(&v)).sum();
    if total < HALVES_FROM && stored().count() < HALVES_FROM_VMAS {
        return None;
    }
    let mut left = total / 2;
    for v in stored() {
        if size(&v) > left {
            let mid = v.map.start + left / PAGE_SIZE * PAGE_SIZE;
            return Some((mid, mid > v.map.start));
        }
        left -= size(&v);
    }
    None
}

/// [`scan`] of the part of every VMA inside `w` (the vDSO and AIO rings
/// whole, in the window of their start).
pub(super) fn scan_window(
    pid: i32,
    vmas: &[Vma],
    parent: &Option<CowParent<'_>>,
    since: Option<Since<'_>>,
    w: std::ops::Range<u64>,
) -> Result<Scan, Error> {
    let proc = ProcRoot::default();
    let pm = PagemapReader::open(&proc, pid).map_err(proc_err(pid))?;
    let ppm = match parent {
        Some(p) => Some((
            p.pid,
            PagemapReader::open(&proc, p.pid).map_err(proc_err(p.pid))?,
        )),
        None => None,
    };
    let mut scan = Scan::default();
    let zero_pfn = zero_page_pfn();
    let plain = Pages {
        pid,
        pm: &pm,
        ppm: None,
        zero_pfn,
    };
    // VMAs back to back whose pagemap alone decides (no parent's, no
    // record of written pages) are scanned as one range (see
    // `Pages::look_span`).
    let mut span: Vec<(&Vma, u64, u64)> = Vec::new();
    for v in vmas
        .iter()
        .filter(|v| v.dumps_pages() || v.is_vdso() || v.is_aio())
    {
        let (start, end) = (v.map.start.max(w.start), v.map.end.min(w.end));
        if start >= end || ((v.is_vdso() || v.is_aio()) && !w.contains(&v.map.start)) {
            continue;
        }
        let npages = (v.map.end - v.map.start) / PAGE_SIZE;
        scan.counts.scanned += (end - start) / PAGE_SIZE;
        let special = v.is_vdso() || v.is_aio();
        let with_parent = !special && ppm.is_some() && parent_has_same(pid, v, parent);
        if !special && !with_parent && since.is_none() {
            if span.last().is_some_and(|l| l.2 != start) {
                plain.look_span(&std::mem::take(&mut span), &mut scan)?;
            }
            span.push((v, start, end));
            continue;
        }
        // Runs are added in address order.
        if !span.is_empty() {
            plain.look_span(&std::mem::take(&mut span), &mut scan)?;
        }
        if v.is_vdso() || v.is_aio() {
            // Every page of the vDSO is stored, present or not, as CRIU
            // stores it: CRIU's restore reads the dumped vDSO's symbols
            // from them (crust's restore skips them: the kernel's vDSO is
            // moved in place). A run of its own, so that no neighbour's
            // pages are skipped with it.
            scan.runs.push(ReadRun {
                addr: v.map.start,
                npages,
                readable: v.map.read,
                alone: true,
            });
            continue;
        }
        let ppm = ppm.as_ref().filter(|_| with_parent);
        let pages = Pages {
            pid,
            pm: &pm,
            ppm,
            zero_pfn,
        };
        if let (Some(s), None) = (since, ppm) {
            if pages.since_by_ranges(v, (start, end), s, &mut scan)? {
                continue;
            }
        }
        for (start, end) in populated(pid, &pm, start, end)? {
            pages.look(v, start, end, since, &mut scan)?;
        }
    }
    if !span.is_empty() {
        plain.look_span(&span, &mut scan)?;
    }
    Ok(scan)
}

/// The pagemaps a scan reads: the process's, and its parent's where the
/// parent has the same VMA.
struct Pages<'a> {
    pid: i32,
    pm: &'a PagemapReader,
    ppm: Option<&'a (i32, PagemapReader)>,
    zero_pfn: Option<u64>,
}

impl Pages<'_> {
    /// Decide the fate of every page of [start, end) of `v` from its
    /// pagemap entry.
    fn look(
        &self,
        v: &Vma,
        start: u64,
        end: u64,
        since: Option<Since<'_>>,
        scan: &mut Scan,
    ) -> Result<(), Error> {
        let file_private = v.status & vs::FILE_PRIVATE != 0;
        let mut addr = start;
        while addr < end {
            let n = ((end - addr) / PAGE_SIZE).min(PAGEMAP_CHUNK) as usize;
            let pmes = self.pm.read(addr, n).map_err(proc_err(self.pid))?;
            let ppmes = match self.ppm {
                Some((ppid, ppm)) => Some(ppm.read(addr, n).map_err(proc_err(*ppid))?),
                None => None,
            };
            for (i, raw) in pmes.iter().enumerate() {
                let pp = ppmes.as_ref().and_then(|x| x.get(i)).map(|x| Pme(*x));
                let a = addr + i as u64 * PAGE_SIZE;
                let f = fate(Pme(*raw), pp, file_private, self.zero_pfn);
                scan.add(v, a, f, since);
            }
            addr += n as u64 * PAGE_SIZE;
        }
        Ok(())
    }

    /// [`Pages::look`] at `span`, VMAs back to back (each with the part of
    /// it to scan), as one range: one `PAGEMAP_SCAN` and one pagemap read
    /// per [`PAGEMAP_CHUNK`] pages for all of them (30,000 VMAs of one
    /// page took 30,000 of each). Each page is judged as its own VMA's,
    /// in the same order as VMA by VMA.
    fn look_span(&self, span: &[(&Vma, u64, u64)], scan: &mut Scan) -> Result<(), Error> {
        let (Some(first), Some(last)) = (span.first(), span.last()) else {
            return Ok(());
        };
        let mut j = 0;
        for (start, end) in populated(self.pid, self.pm, first.1, last.2)? {
            let mut addr = start;
            while addr < end {
                let n = ((end - addr) / PAGE_SIZE).min(PAGEMAP_CHUNK) as usize;
                let pmes = self.pm.read(addr, n).map_err(proc_err(self.pid))?;
                for (i, raw) in pmes.iter().enumerate() {
                    let a = addr + i as u64 * PAGE_SIZE;
                    while span.get(j).is_some_and(|s| s.2 <= a) {
                        j += 1;
                    }
                    let Some(&(v, _, _)) = span.get(j).filter(|s| s.1 <= a) else {
                        continue;
                    };
                    let file_private = v.status & vs::FILE_PRIVATE != 0;
                    scan.add(
                        v,
                        a,
                        fate(Pme(*raw), None, file_private, self.zero_pfn),
                        None,
                    );
                }
                addr += n as u64 * PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// An incremental dump of anonymous private memory, by ranges, without
    /// a walk of every page: only the pages written since the parent set
    /// (the tracker's answer) and those its pagemap lists can hold data.
    /// Tracking makes it so: the tracker reports a page written at its
    /// first write (a page faulted in by a write is written), and reports
    /// a page dropped since (`MADV_DONTNEED`, its page table freed) as
    /// written too (it is not protected any more); the pages present when
    /// tracking began are the parent's (scanned after the protection, or
    /// both while frozen). A page read in since maps the zero page, still
    /// protected: not stored, it is restored as zeros. So the pages not
    /// written that the parent holds are left to it by ranges, and only the
    /// others are looked at one by one (the parts of a written range that
    /// hold pages: a mapping made since tracking began counts as written
    /// whole, and may be a reservation of terabytes). The frozen time then
    /// follows what was written, not the memory size (the kernel's
    /// category walk of every page costs 20 ns a page: 21 ms at 4 GiB).
    /// False (nothing done): not such a VMA.
    fn since_by_ranges(
        &self,
        v: &Vma,
        (start, end): (u64, u64),
        s: Since<'_>,
        scan: &mut Scan,
    ) -> Result<bool, Error> {
        if v.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE) != vs::ANON_PRIVATE
            || v.vm_flags.has("ht")
        {
            return Ok(false);
        }
        let mut look = Vec::new();
        for (start, end) in s.candidates(start, end) {
            let mut at = start;
            while at < end {
                let (store, next) = s.piece(at, end);
                if store {
                    look.push((at, next));
                } else {
                    let n = (next - at) / PAGE_SIZE;
                    match scan.in_parent.last_mut() {
                        Some((a, k)) if *a >= v.map.start && *a + *k * PAGE_SIZE == at => *k += n,
                        _ => scan.in_parent.push((at, n)),
                    }
                    scan.counts.in_parent += n;
                }
                at = next;
            }
        }
        let look = self.holding_pages(look)?;
        self.look_near(v, &look, s, scan)?;
        Ok(true)
    }

    /// The parts of `pieces` (sorted, disjoint) that hold pages: a piece
    /// of [`POPULATED_FROM`] pages or more is cut to what `PAGEMAP_SCAN`
    /// finds there, a smaller one is kept whole (one scan each would cost
    /// more than reading its entries).
    fn holding_pages(&self, pieces: Vec<(u64, u64)>) -> Result<Vec<(u64, u64)>, Error> {
        if pieces
            .iter()
            .all(|p| p.1 - p.0 < POPULATED_FROM * PAGE_SIZE)
        {
            return Ok(pieces);
        }
        let mut out = Vec::with_capacity(pieces.len());
        for (a, b) in pieces {
            if b - a < POPULATED_FROM * PAGE_SIZE {
                out.push((a, b));
            } else {
                out.extend(populated(self.pid, self.pm, a, b)?);
            }
        }
        Ok(out)
    }

    /// [`Pages::look`] at sorted, disjoint `pieces` of anonymous memory,
    /// one pagemap read for pieces at most [`LOOK_GAP`] pages apart, within
    /// [`PAGEMAP_CHUNK`] pages in all (written pages are often scattered:
    /// one read each costs a system call per few pages, one read over the
    /// gaps a walk of every page between them).
    fn look_near(
        &self,
        v: &Vma,
        pieces: &[(u64, u64)],
        s: Since<'_>,
        scan: &mut Scan,
    ) -> Result<(), Error> {
        let span = PAGEMAP_CHUNK * PAGE_SIZE;
        let mut i = 0;
        while let Some(&(g0, first_end)) = pieces.get(i) {
            let mut j = i;
            let mut end = first_end;
            while let Some(p) = pieces
                .get(j + 1)
                .filter(|p| p.1 - g0 <= span && p.0.saturating_sub(end) <= LOOK_GAP * PAGE_SIZE)
            {
                end = p.1;
                j += 1;
            }
            let group = pieces.get(i..=j).unwrap_or_default();
            let gend = group.last().map_or(first_end, |p| p.1);
            i = j + 1;
            if gend - g0 > span {
                // One piece longer than a read: read it in chunks.
                self.look(v, g0, gend, Some(s), scan)?;
                continue;
            }
            let n = ((gend - g0) / PAGE_SIZE) as usize;
            let pmes = self.pm.read(g0, n).map_err(proc_err(self.pid))?;
            for &(a, b) in group {
                for addr in (a..b).step_by(PAGE_SIZE as usize) {
                    let Some(raw) = pmes.get(((addr - g0) / PAGE_SIZE) as usize) else {
                        break;
                    };
                    let f = fate(Pme(*raw), None, false, self.zero_pfn);
                    scan.add(v, addr, f, Some(s));
                }
            }
        }
        Ok(())
    }
}

/// Find the present pages of every private VMA and store them in `sink`
/// (as owner `id`, the pid the images use, pages file `pages_id`), then the
/// pages of every shared memory object the process maps.
/// With `parent`, anonymous pages that are the very same physical page as
/// the parent's at the same address (copy-on-write, untouched since the
/// fork) are not stored but marked `COW_PARENT`: restore inherits them.
#[allow(dead_code)] // the dump calls dump_pages_since; kept for the other page flows
pub fn dump_pages(
    pid: i32,
    id: u64,
    sink: &dyn PageSink,
    vmas: &[Vma],
    pages_id: u32,
    parent: Option<CowParent<'_>>,
) -> Result<PageCounts, Error> {
    dump_pages_since(pid, id, sink, vmas, pages_id, parent, None, None, None)
}

/// [`dump_pages`] of an incremental dump: with `since`, only the pages
/// written since the parent image set are stored, the others announced as
/// in the parent (`PE_PARENT`).
///
/// With `lazy`, pages that may be restored lazily are marked `PE_LAZY`
/// (with `lazy.leave`, not stored: left on the source).
///
/// With `pipe` (the tree frozen, and a stream that takes pipes), the
/// pages go through the task's pipe instead of being copied
/// ([`super::TaskPipe`]).
#[allow(clippy::too_many_arguments)]
pub fn dump_pages_since(
    pid: i32,
    id: u64,
    sink: &dyn PageSink,
    vmas: &[Vma],
    pages_id: u32,
    parent: Option<CowParent<'_>>,
    since: Option<Since<'_>>,
    lazy: Option<LazyMark<'_>>,
    pipe: Option<&mut dyn super::TaskPipe>,
) -> Result<PageCounts, Error> {
    // A plain dump of much memory into local images: scanned and copied
    // in parts, the copy under way while the rest is scanned.
    let plain = since.is_none() && lazy.is_none_or(|m| !m.leave) && pipe.is_none();
    if plain && sink.runs_in_parts() {
        if let Some(cuts) = super::parts::part_cuts(vmas) {
            let (who, how) = ((id, pages_id), (&parent, lazy));
            return super::parts::dump_in_parts(pid, who, sink, vmas, how, cuts);
        }
    }
    let t = std::time::Instant::now();
    // Without a parent set, on two threads when there is much to scan
    // (the kernel's page-table walks are most of it: 30,000 VMAs, 25 ms).
    let mut scan = match since {
        None => scan_halves(pid, vmas, &parent)?,
        Some(_) => scan(pid, vmas, &parent, since)?,
    };
    debug!("{pid}: pagemap scanned in {} us", t.elapsed().as_micros());
    if let Some(m) = lazy {
        scan.mark_lazy(m);
    }
    let plan = PagePlan(scan);
    let how = match pipe {
        Some(p) => Reading::Pipe(p),
        None => Reading::Copy { running: false },
    };
    write_pages_by(pid, (id, pages_id), sink, vmas, &plan, how)
}

/// How [`write_pages_by`] takes the pages out of the task.
enum Reading<'a> {
    /// Copied (`running`: see [`write_pages`]).
    Copy { running: bool },
    /// Through the frozen task's pipe, when the stream takes pipes.
    Pipe(&'a mut dyn super::TaskPipe),
}

/// Which pages of a process to store and which to announce (the scan of
/// its pagemap), made while the tree is frozen and written later.
pub struct PagePlan(Scan);

impl PagePlan {
    /// Scan the pagemap of `pid` (see [`dump_pages_since`]).
    pub fn scan(pid: i32, vmas: &[Vma], since: Option<Since<'_>>) -> Result<PagePlan, Error> {
        Ok(PagePlan(scan(pid, vmas, &None, since)?))
    }
}

/// Store the pages `plan` chose (see [`dump_pages`]), then the pages of
/// every shared memory object of `vmas`. With `running` (a pre-dump: the
/// tree runs on while its pages are copied), a page that cannot be read
/// any more (unmapped since the scan) is stored as zeros: its range is no
/// longer tracked, so the next dump of the chain stores it anew.
pub fn write_pages(
    pid: i32,
    id: u64,
    sink: &dyn PageSink,
    vmas: &[Vma],
    pages_id: u32,
    plan: &PagePlan,
    running: bool,
) -> Result<PageCounts, Error> {
    let how = Reading::Copy { running };
    write_pages_by(pid, (id, pages_id), sink, vmas, plan, how)
}

/// [`write_pages`], the pages taken out of the task as `how` says.
fn write_pages_by(
    pid: i32,
    (id, pages_id): (u64, u32),
    sink: &dyn PageSink,
    vmas: &[Vma],
    plan: &PagePlan,
    how: Reading<'_>,
) -> Result<PageCounts, Error> {
    let s = &plan.0;
    let mut counts = s.counts;
    let mut out = sink.open(PageOwner::Task { id, pages_id })?;
    out.runs(&s.entries())?;
    counts.written = match how {
        Reading::Pipe(p) if out.takes_pipe() => {
            super::piped::pipe_task_pages(pid, &s.runs, &mut *out, p)?
        }
        Reading::Pipe(_) => read_task_pages(pid, &s.runs, &mut *out, None, false)?,
        Reading::Copy { running } => read_task_pages(pid, &s.runs, &mut *out, None, running)?,
    };
    out.finish()?;
    debug!(
        "{pid}: {} pages scanned, {} written in {} runs, {} zero pages left out, {} shared with the parent, {} in the parent image set, {} left for lazy restore",
        counts.scanned,
        counts.written,
        s.runs.len(),
        counts.zero,
        counts.cow,
        counts.in_parent,
        counts.lazy
    );

    dump_objects(pid, sink, vmas, &mut counts, s.objects.as_deref())?;
    Ok(counts)
}

/// Store the pages of every shared memory object the process maps; those
/// in `since`, against the parent set.
pub(super) fn dump_objects(
    pid: i32,
    sink: &dyn PageSink,
    vmas: &[Vma],
    counts: &mut PageCounts,
    since: Option<&super::objtrack::ObjectsSince>,
) -> Result<(), Error> {
    let mut seen: Vec<u64> = Vec::new();
    for v in vmas.iter().filter(|v| v.is_shmem()) {
        if seen.contains(&v.map.inode) {
            continue;
        }
        seen.push(v.map.inode);
        // Mapped by an earlier process of this dump: stored already.
        if !sink.claim_object(v.map.inode as u32 as u64) {
            continue;
        }
        let obj = since.and_then(|s| s.get(&v.map.inode));
        let (scanned, written) = dump_shmem(pid, sink, v, obj)?;
        counts.shmem_scanned += scanned;
        counts.shmem_written += written;
    }
    Ok(())
}

/// What a snapshot copy (`dump -R` while the tree runs) does around each
/// read of the reader thread (see `mem/snapshot.rs`).
pub(super) trait ReadHook: Sync {
    /// Fill `dst` with the pages at `addr` if they were copied while the
    /// tree was frozen; false: read them from the task.
    fn held(&self, addr: u64, dst: &mut [u8]) -> bool;
    /// `dst` was just read from the task at `addr`: put back the pages
    /// saved before the task wrote them, then let the task write these.
    fn after_read(&self, addr: u64, dst: &mut [u8]) -> Result<(), Error>;
}

/// Copy the runs of task memory into `out`, on two threads: a reader
/// copies from the task into 1 MiB buffers, this thread hands each full
/// buffer to the stream. Returns the number of pages copied. `hook`: a
/// snapshot's, told of each piece read; `running`: see [`write_pages`].
pub(super) fn read_task_pages(
    pid: i32,
    runs: &[ReadRun],
    out: &mut dyn PageStream,
    hook: Option<&dyn ReadHook>,
    running: bool,
) -> Result<u64, Error> {
    let c = copy_pages(pid, Todo::Runs(runs), out, hook, running)?;
    if c.bytes != c.want {
        return Err(Error::Sys {
            pid,
            op: format!(
                "reading task memory stopped after {} of {} bytes",
                c.bytes, c.want
            ),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        });
    }
    Ok(c.bytes / PAGE_SIZE)
}

/// What a page copy copies.
pub(super) enum Todo<'a> {
    /// Runs already announced to the stream.
    Runs(&'a [ReadRun]),
    /// The parts of a dump in parts (`mem/parts.rs`) as they are scanned:
    /// each announced, then copied.
    Parts(Receiver<Result<super::parts::Part, Error>>),
}

/// What the writer of a page copy gets from the reader.
enum Got {
    /// A part's runs, announced before the bytes that follow, with the
    /// part's counts and the bytes its runs hold.
    Part(super::parts::Announce, PageCounts, u64),
    /// A buffer, filled up to the length given.
    Full(PageBuf, usize),
}

/// A buffer of a page copy, its bytes starting on a page boundary: the
/// kernel's copies into it (from the task) and out of it (to a file) are
/// 3 to 6 times slower when it is not aligned to a cache line (measured
/// on AMD EPYC: 1 GiB read with process_vm_readv in 0.7 s into memory at
/// 16 bytes past a page, 0.13 s into aligned memory), and where the heap
/// puts a 1 MiB Vec depends on what was freed before.
struct PageBuf {
    mem: Vec<u8>,
    /// Where the aligned bytes start in `mem`, and how many.
    at: usize,
    len: usize,
}

impl PageBuf {
    fn new(len: usize) -> PageBuf {
        let page = PAGE_SIZE as usize;
        let mem = match len {
            0 => Vec::new(),
            _ => vec![0u8; len + page],
        };
        let at = mem.as_ptr().align_offset(page).min(page);
        PageBuf { mem, at, len }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The first `n` bytes (fewer if it holds fewer).
    fn get(&self, n: usize) -> &[u8] {
        let end = self.at + n.min(self.len);
        self.mem.get(self.at..end).unwrap_or_default()
    }

    /// Bytes [from, to) (None: out of the buffer).
    fn get_mut(&mut self, from: usize, to: usize) -> Option<&mut [u8]> {
        if from > to || to > self.len {
            return None;
        }
        self.mem.get_mut(self.at + from..self.at + to)
    }
}

/// What a page copy did.
pub(super) struct Copied {
    /// Bytes handed to the stream, and bytes the runs hold.
    pub(super) bytes: u64,
    pub(super) want: u64,
    /// Parts announced, and the sum of their counts.
    pub(super) parts: usize,
    pub(super) counts: PageCounts,
}

/// Copy what `todo` says from task `pid` into `out` (see
/// [`read_task_pages`]): a reader thread fills buffers from the task, this
/// thread hands them to the stream. Buffers go round: empty -> reader ->
/// full -> writer -> empty.
pub(super) fn copy_pages(
    pid: i32,
    todo: Todo<'_>,
    out: &mut dyn PageStream,
    hook: Option<&dyn ReadHook>,
    running: bool,
) -> Result<Copied, Error> {
    let mem_file =
        File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))?;
    let (full_tx, full_rx) = sync_channel::<Result<Got, Error>>(DUMP_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<PageBuf>(DUMP_BUFFERS);
    // No bigger than the pages to read: a small process's few pages do
    // not cost three zeroed BATCH-sized buffers.
    let mut want: u64 = match &todo {
        Todo::Runs(runs) => runs.iter().map(|r| r.npages * PAGE_SIZE).sum(),
        Todo::Parts(_) => 0,
    };
    let size = match todo {
        Todo::Runs(_) => {
            usize::try_from(want).map_or(BATCH, |t| t.clamp(PAGE_SIZE as usize, BATCH))
        }
        Todo::Parts(_) => BATCH,
    };
    for _ in 0..DUMP_BUFFERS {
        let _ = empty_tx.send(PageBuf::new(size));
    }
    let reader = Reader {
        pid,
        mem_file: &mem_file,
        hook,
        running,
        full_tx,
        empty_rx,
        buf: PageBuf::new(0),
        fill: 0,
    };
    std::thread::scope(|s| -> Result<Copied, Error> {
        // Owned here, so that they are gone (and a waiting reader stops)
        // as soon as this writer returns, even on an error.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        s.spawn(move || reader.run(todo));
        let (mut bytes, mut parts, mut counts) = (0u64, 0usize, PageCounts::default());
        // Ends when the reader is done and has dropped its sender.
        for msg in &full_rx {
            match msg? {
                Got::Part(announce, c, len) => {
                    match announce {
                        super::parts::Announce::Continue(r) => out.runs(&r)?,
                        super::parts::Announce::Apart(r) => out.runs_apart(&r)?,
                    }
                    (parts, want) = (parts + 1, want + len);
                    counts.add(&c);
                }
                Got::Full(buf, len) => {
                    out.pages(buf.get(len))?;
                    bytes += len as u64;
                    let _ = empty_tx.send(buf);
                }
            }
        }
        Ok(Copied {
            bytes,
            want,
            parts,
            counts,
        })
    })
}

/// The reader thread of a page copy.
struct Reader<'a> {
    pid: i32,
    mem_file: &'a File,
    hook: Option<&'a dyn ReadHook>,
    running: bool,
    full_tx: SyncSender<Result<Got, Error>>,
    empty_rx: Receiver<PageBuf>,
    /// The buffer being filled, and how far.
    buf: PageBuf,
    fill: usize,
}

impl Reader<'_> {
    fn run(mut self, todo: Todo<'_>) {
        self.buf = match self.empty_rx.recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        match todo {
            Todo::Runs(runs) => {
                if !self.copy(runs) {
                    return;
                }
            }
            Todo::Parts(parts) => {
                for part in parts {
                    let p = match part {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = self.full_tx.send(Err(e));
                            return;
                        }
                    };
                    let len = p.reads.iter().map(|r| r.npages * PAGE_SIZE).sum();
                    let got = Got::Part(p.announce, p.counts, len);
                    if self.full_tx.send(Ok(got)).is_err() || !self.copy(&p.reads) {
                        return;
                    }
                }
            }
        }
        if self.fill > 0 {
            let _ = self.full_tx.send(Ok(Got::Full(self.buf, self.fill)));
        }
    }

    /// Copy `runs` into the buffers, sending each one full. False: stop
    /// (the writer is gone, or was sent an error).
    fn copy(&mut self, runs: &[ReadRun]) -> bool {
        for run in runs {
            let total = (run.npages * PAGE_SIZE) as usize;
            let mut done = 0usize;
            while done < total {
                if self.fill == self.buf.len() && !self.next_buffer() {
                    return false;
                }
                let len = (total - done).min(self.buf.len() - self.fill);
                if let Err(e) = self.read(run, run.addr + done as u64, len) {
                    let _ = self.full_tx.send(Err(e));
                    return false;
                }
                self.fill += len;
                done += len;
            }
        }
        true
    }

    /// Send the full buffer, take an empty one. False: the writer is gone.
    fn next_buffer(&mut self) -> bool {
        let full = std::mem::replace(&mut self.buf, PageBuf::new(0));
        if self.full_tx.send(Ok(Got::Full(full, self.fill))).is_err() {
            return false;
        }
        match self.empty_rx.recv() {
            Ok(b) => {
                (self.buf, self.fill) = (b, 0);
                true
            }
            Err(_) => false,
        }
    }

    /// Read `len` bytes of `run` at `addr` into the buffer where it is
    /// filled up to.
    fn read(&mut self, run: &ReadRun, addr: u64, len: usize) -> Result<(), Error> {
        let (pid, hook, running, mem_file) = (self.pid, self.hook, self.running, self.mem_file);
        let Some(dst) = self.buf.get_mut(self.fill, self.fill + len) else {
            return Err(Error::Sys {
                pid,
                op: format!("a page buffer too small for {len} bytes at {addr:#x} (crust bug)"),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        };
        let held = hook.is_some_and(|h| h.held(addr, dst));
        let got = if held {
            Ok(len)
        } else if run.readable {
            mem::read(pid, RemoteAddr(addr), dst)
                .map_err(sys_err(pid, format!("process_vm_readv at {addr:#x}")))
        } else {
            // PROT_NONE and other unreadable areas: /proc/PID/mem
            // reads them with FOLL_FORCE.
            mem_file
                .read_at(dst, addr)
                .map_err(sys_err(pid, format!("read /proc/PID/mem at {addr:#x}")))
        };
        let got = match got {
            Ok(n) if n == len => Ok(n),
            _ if running => Ok(reread(mem_file, pid, addr, dst)),
            other => other,
        };
        match got.and_then(|n| match hook {
            Some(h) if !held && n == len => h.after_read(addr, dst).map(|()| n),
            _ => Ok(n),
        })? {
            n if n == len => Ok(()),
            n => Err(Error::Sys {
                pid,
                op: format!("short read of task memory at {addr:#x} ({n} of {len} bytes)"),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            }),
        }
    }
}

/// A read of a running task's memory that failed: again through
/// /proc/PID/mem (a mapping made unreadable since the scan), page by page,
/// with zeros for each page that is still unreadable (unmapped since: its
/// range is no longer tracked, so the freeze stores what is there then).
/// Only those pages: the others of the run are still the task's, and may
/// be taken from this copy at the freeze. Returns `dst.len()`.
fn reread(mem_file: &File, pid: i32, addr: u64, dst: &mut [u8]) -> usize {
    if matches!(mem_file.read_at(dst, addr), Ok(n) if n == dst.len()) {
        return dst.len();
    }
    let mut at = addr;
    for page in dst.chunks_mut(PAGE_SIZE as usize) {
        if !matches!(mem_file.read_at(page, at), Ok(n) if n == page.len()) {
            debug!("{pid}: {at:#x} unreadable while running; stored as zeros (its range is no longer tracked)");
            page.fill(0);
        }
        at += PAGE_SIZE;
    }
    dst.len()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE: u64 = 1 << 61;
    const EXCLUSIVE: u64 = 1 << 56;

    #[test]
    fn page_fates() {
        let zero = Some(7);
        let anon = |p: u64, pp: Option<u64>| fate(Pme(p), pp.map(Pme), false, zero);
        assert_eq!(anon(0, None), Fate::Skip);
        assert_eq!(
            anon(PRESENT | EXCLUSIVE | 5, None),
            Fate::Store { pinnable: true }
        );
        assert_eq!(anon(PRESENT | 5, None), Fate::Store { pinnable: false });
        assert_eq!(anon(SWAPPED, None), Fate::Store { pinnable: true });
        // A swapped page (type 3, offset 9) is stored; the marker of a
        // write-protected page never touched (as 6.18 reports it: type 31,
        // offset 1, uffd-wp bit) is not, nor in a private file mapping.
        assert_eq!(
            anon(SWAPPED | 3 | 9 << 5, None),
            Fate::Store { pinnable: true }
        );
        assert_eq!(anon(0x4200_0000_0000_003f, None), Fate::Skip);
        assert_eq!(
            fate(Pme(0x4200_0000_0000_003f), None, true, zero),
            Fate::Skip
        );
        assert_eq!(anon(PRESENT | 7, None), Fate::Zero);
        // The parent's very page.
        assert_eq!(anon(PRESENT | 5, Some(PRESENT | 5)), Fate::Cow);
        assert_eq!(
            anon(PRESENT | 5, Some(PRESENT | 6)),
            Fate::Store { pinnable: false }
        );
        // Both on the zero page: nothing to share, nothing to store.
        assert_eq!(anon(PRESENT | 7, Some(PRESENT | 7)), Fate::Zero);
        // Private file pages: only the task's own copies, zero page kept.
        let file = |p: u64| fate(Pme(p), None, true, zero);
        assert_eq!(file(PRESENT | FILE | 5), Fate::Skip);
        assert_eq!(file(PRESENT | 5), Fate::Store { pinnable: true });
        assert_eq!(file(PRESENT | 7), Fate::Store { pinnable: true });
    }

    pub(in crate::mem) fn anon(start: u64, end: u64) -> Vma {
        Vma {
            map: crust_proc::MapEntry {
                start,
                end,
                read: true,
                write: true,
                exec: false,
                shared: false,
                offset: 0,
                dev_major: 0,
                dev_minor: 0,
                inode: 0,
                path: None,
                deleted: false,
            },
            vm_flags: Default::default(),
            status: vs::AREA_REGULAR | vs::ANON_PRIVATE,
        }
    }

    #[test]
    fn cow_runs_stop_at_vma_boundaries() {
        // Two adjacent anonymous VMAs with the same flags (nginx's heap
        // after a reload), every page shared with the parent.
        let (a, b) = (anon(0x10000, 0x12000), anon(0x12000, 0x14000));
        let mut scan = Scan::default();
        for v in [&a, &b] {
            for addr in (v.map.start..v.map.end).step_by(PAGE_SIZE as usize) {
                scan.add(v, addr, Fate::Cow, None);
            }
        }
        assert_eq!(scan.cow, vec![(0x10000, 2), (0x12000, 2)]);
        assert_eq!(scan.counts.cow, 4);
    }

    #[test]
    fn pieces_agree_with_pages() {
        let dirty: Vec<std::ops::Range<u64>> = vec![0x11000..0x12000, 0x15000..0x16000];
        let parent_has: Vec<std::ops::Range<u64>> = vec![0x10000..0x14000, 0x15000..0x20000];
        let since = Since {
            dirty: &dirty,
            parent_has: &parent_has,
            parent_lists: &parent_has,
            objects: None,
        };
        let (start, end) = (0xe000, 0x22000);
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let (store, next) = since.piece(at, end);
            assert!(next > at && next <= end);
            for a in (at..next).step_by(PAGE_SIZE as usize) {
                assert_eq!(since.written(a), store, "{a:#x}");
            }
            pieces.push((at, next, store));
            at = next;
        }
        assert_eq!(
            pieces,
            vec![
                (0xe000, 0x10000, true),
                (0x10000, 0x11000, false),
                (0x11000, 0x12000, true),
                (0x12000, 0x14000, false),
                (0x14000, 0x15000, true),
                (0x15000, 0x16000, true),
                (0x16000, 0x20000, false),
                (0x20000, 0x22000, true),
            ]
        );
    }

    #[test]
    fn pages_not_written_and_in_the_parent_are_left_to_it() {
        let v = anon(0x10000, 0x18000);
        let dirty: Vec<std::ops::Range<u64>> = std::iter::once(0x11000..0x12000).collect();
        let parent_has: Vec<std::ops::Range<u64>> = std::iter::once(0x10000..0x14000).collect();
        let since = Since {
            dirty: &dirty,
            parent_has: &parent_has,
            parent_lists: &parent_has,
            objects: None,
        };
        let mut scan = Scan::default();
        for addr in (v.map.start..v.map.end).step_by(PAGE_SIZE as usize) {
            scan.add(&v, addr, Fate::Store { pinnable: true }, Some(since));
        }
        // Written: stored; not written, in the parent: PE_PARENT; not in
        // the parent (read in since): stored.
        let stored: Vec<_> = scan.runs.iter().map(|r| (r.addr, r.npages)).collect();
        assert_eq!(stored, vec![(0x11000, 1), (0x14000, 4)]);
        assert_eq!(scan.in_parent, vec![(0x10000, 1), (0x12000, 2)]);
        assert_eq!(scan.counts.in_parent, 3);
        let flags: Vec<_> = scan.entries().iter().map(|e| (e.vaddr, e.flags)).collect();
        assert_eq!(
            flags,
            vec![
                (0x10000, pe::PARENT),
                (0x11000, pe::PRESENT),
                (0x12000, pe::PARENT),
                (0x14000, pe::PRESENT)
            ]
        );
    }

    #[test]
    fn lazy_ranges_cut_runs_and_mark_or_leave_them() {
        let run = |addr, npages| ReadRun {
            addr,
            npages,
            readable: true,
            alone: false,
        };
        let lazy = [0x12000..0x14000, 0x20000..0x30000];
        for leave in [false, true] {
            let mut scan = Scan {
                runs: vec![run(0x10000, 6), run(0x20000, 1)],
                ..Default::default()
            };
            scan.mark_lazy(LazyMark {
                ranges: &lazy,
                leave,
            });
            let flags: Vec<_> = scan
                .entries()
                .iter()
                .map(|e| (e.vaddr, e.npages, e.flags))
                .collect();
            let l = if leave {
                pe::LAZY
            } else {
                pe::PRESENT | pe::LAZY
            };
            assert_eq!(
                flags,
                vec![
                    (0x10000, 2, pe::PRESENT),
                    (0x12000, 2, l),
                    (0x14000, 2, pe::PRESENT),
                    (0x20000, 1, l)
                ]
            );
            let read: u64 = scan.runs.iter().map(|r| r.npages).sum();
            assert_eq!(read, if leave { 4 } else { 7 });
            assert_eq!(scan.counts.lazy, if leave { 3 } else { 0 });
        }
    }

    #[test]
    fn pages_join_runs() {
        let mut runs = Vec::new();
        for (addr, readable) in [
            (0x1000, true),
            (0x2000, true),
            (0x3000, false),
            (0x5000, false),
        ] {
            push_page(&mut runs, addr, readable);
        }
        let got: Vec<_> = runs
            .iter()
            .map(|r| (r.addr, r.npages, r.readable))
            .collect();
        assert_eq!(
            got,
            vec![(0x1000, 2, true), (0x3000, 1, false), (0x5000, 1, false)]
        );
    }

    #[test]
    fn a_failed_read_while_running_zeroes_only_the_pages_that_fail() {
        // Two readable pages, then one that is not (past the end stands for
        // an address unmapped since the scan).
        let path = std::env::temp_dir().join(format!("crust-reread-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, vec![0xab_u8; 2 * PAGE_SIZE as usize]).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut dst = vec![0x11_u8; 3 * PAGE_SIZE as usize];
        assert_eq!(reread(&file, 1, 0, &mut dst), dst.len());
        let (kept, zeroed) = dst.split_at(2 * PAGE_SIZE as usize);
        assert!(kept.iter().all(|b| *b == 0xab));
        assert!(zeroed.iter().all(|b| *b == 0));
    }
}
