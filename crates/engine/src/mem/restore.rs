//! Restore side of memory: mapping the VMAs of the image, zeroing what a
//! child inherited but did not have, final protections and mm fields.

use super::pages::{FillRun, PageSource};
use super::shmem::{is_shmem_entry, load_shmem, restore_shmem};
use super::vma::MAP_DROPPABLE;

/// The huge page size bits of mmap flags (log2 of the size, at bit 26).
const MAP_HUGE_MASK: i32 = 0x3f << 26;
use super::{bad, PageRun, Pending, VmaSources};
use crate::task::remote::{Batch, Remote};
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_sys::RemoteAddr;
use crust_sys::PAGE_SIZE;
use std::collections::HashSet;
use std::path::Path;

/// The anonymous private VMAs (start, end) whose pages are partly
/// inherited from the parent: the restored process must keep the copies
/// it got from its parent at clone time instead of mapping them anew.
/// In address order (the order of the image's VMAs).
pub fn inherited_vmas(mm: &MmEntry, runs: &[PageRun]) -> Vec<(u64, u64)> {
    // Each copy-on-write run lies in one VMA (load_pagemap cuts them).
    let mut cow: Vec<u64> = runs.iter().filter(|r| r.cow).map(|r| r.vaddr).collect();
    cow.sort_unstable();
    mm.vmas
        .iter()
        .filter(|v| {
            let i = cow.partition_point(|&a| a < v.start);
            cow.get(i).is_some_and(|&a| a < v.end)
        })
        .map(|v| (v.start, v.end))
        .collect()
}

/// The anonymous private VMAs of `mm` that may share pages copy-on-write
/// with the same VMA of the parent (`parent`), judged as CRIU judges it:
/// the same start and end, both anonymous and private (no vDSO, vvar or
/// vsyscall) or both private mappings of the same file at the same offset, the same MAP_GROWSDOWN, and both processes running the same
/// executable (exec starts a new memory). The parent's VMA must reach the
/// child at clone time (no MADV_DONTFORK or MADV_WIPEONFORK). The restored
/// process keeps the copy it got from its parent there, and each stored
/// page equal to the inherited one stays shared.
pub fn cow_candidates(mm: &MmEntry, parent: &MmEntry) -> Vec<(u64, u64)> {
    if mm.exe_file_id != parent.exe_file_id {
        return Vec::new();
    }
    let special = vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL | vs::AREA_MEMFD;
    // Private file mappings too (their written pages are anonymous copies).
    let anon = |v: &VmaEntry| {
        v.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE) != 0
            && v.status & vs::AREA_REGULAR != 0
            && v.status & special == 0
            && v.flags & libc::MAP_HUGETLB as u32 == 0
    };
    let not_forked = (1u64 << libc::MADV_DONTFORK) | (1u64 << libc::MADV_WIPEONFORK);
    let theirs: std::collections::HashMap<(u64, u64), &VmaEntry> = parent
        .vmas
        .iter()
        .filter(|v| anon(v) && v.madv.unwrap_or(0) & not_forked == 0)
        .map(|v| ((v.start, v.end), v))
        .collect();
    let same = (libc::MAP_GROWSDOWN | libc::MAP_ANONYMOUS) as u32;
    mm.vmas
        .iter()
        .filter(|v| anon(v))
        .filter(|v| {
            theirs.get(&(v.start, v.end)).is_some_and(|p| {
                (p.flags ^ v.flags) & same == 0
                    && (v.status & vs::FILE_PRIVATE == 0
                        || (p.status == v.status && p.shmid == v.shmid && p.pgoff == v.pgoff))
            })
        })
        .map(|v| (v.start, v.end))
        .collect()
}

/// Map the VMAs, fill their pages (from `pages`) and rebuild the shared
/// memory objects; `protect_vmas` sets the protections once the fill is
/// over. The VMAs in `inherited` are already there (copies of the
/// parent's, see [`inherited_vmas`]): they are only made writable for the
/// fill, and the pages that are neither inherited nor stored are zeroed.
/// `huge`: the ranges transparent huge pages backed at dump
/// ([`super::load_huge_ranges`]).
#[allow(clippy::too_many_arguments)] // one process's whole memory image
pub fn restore_vmas(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    (pages_id, runs, huge): (u32, &[PageRun], &[(u64, u64)]),
    inherited: &[(u64, u64)],
    src: &VmaSources<'_>,
    pages: &dyn PageSource,
    batch_code: Option<RemoteAddr>,
) -> Result<(u64, std::sync::Arc<Pending>), Error> {
    let shmem = load_shmem(dir, mm, src.memfds)?;
    // The mmaps, mprotects and madvises, many per ptrace stop.
    let mut b = Batch::new(batch_code);
    let inherited: HashSet<(u64, u64)> = inherited.iter().copied().collect();
    let sorted = sorted_spans(runs);
    let (fresh, open_fds) = map_all((r, &mut b), dir, mm, &sorted, &inherited, src)?;
    // THP mode `always`: the fill in two parts (mem/thp.rs). The task may
    // have its parent's PR_SET_THP_DISABLE of the parent's fill.
    let always = super::thp::system_always();
    let huge = if mm.thp_disabled == Some(true) {
        &[]
    } else {
        huge
    };
    if always && !huge.is_empty() {
        super::thp::set_disabled((r, &mut b), false)?;
    }
    b.flush(r)?;
    if !always {
        // Where huge pages backed the memory, the fill faults them in again.
        super::thp::touch(
            r.pid(),
            &super::thp::pages_to_touch(mm, huge, &sorted, &inherited),
        )?;
        let advised = super::thp::advise_huge((r, &mut b), mm, huge)?;
        b.flush(r)?;
        if advised > 0 {
            log::debug!(
                "{}: {} KiB advised MADV_HUGEPAGE for the fill",
                r.pid(),
                advised >> 10
            );
        }
    }
    // In inherited VMAs, what is neither inherited nor stored was absent in
    // the dumped process: make it zero again.
    let mut private_inherited: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .filter(|v| inherited.contains(&(v.start, v.end)) && !is_shmem_entry(v))
        .map(|v| (v.start, v.end))
        .collect();
    private_inherited.sort_unstable();
    // The private pages are copied in by the source (the filler's threads
    // for local images) while crust goes on; `protect_vmas` waits for them.
    // In inherited VMAs a stored page equal to the inherited one is left
    // shared with the parent.
    // Shared memory objects first: a private mapping of one is in place
    // before its own pages are filled.
    let mut restored: u64 = runs.iter().filter(|p| !p.cow).map(|p| p.npages).sum();
    for o in &shmem {
        let kept = mm
            .vmas
            .iter()
            .filter(|v| is_shmem_entry(v) && v.shmid == o.key)
            .all(|v| inherited.contains(&(v.start, v.end)));
        if !kept {
            let made = (src.made_objects)(o.ino);
            restored += restore_shmem(r, pages, mm, o, made.as_ref())?;
        }
    }
    let (mut fills, keep) = task_fills(runs, &private_inherited);
    if always {
        let (first, rest) = super::thp::split_fills(fills, huge);
        if !first.is_empty() {
            pages.fill(r.pid(), pages_id, &first, &[], None).wait()?;
            let bytes: u64 = first.iter().map(|f| f.1).sum();
            log::debug!(
                "{}: {} KiB filled first, with huge pages allowed",
                r.pid(),
                bytes >> 10
            );
        }
        super::thp::set_disabled((r, &mut b), true)?;
        b.flush(r)?;
        fills = rest;
    }
    // Fresh anonymous memory the pages go to by UFFDIO_COPY (not where
    // huge pages are made by touching first: those pages are there).
    let uffd = if huge.is_empty() && pages.fills_by_uffd() && uffd_fill_on() {
        b.flush(r)?;
        open_fill_uffd((r, &mut b), mm, &fresh, &fills)?
    } else {
        None
    };
    let pending = pages.fill(r.pid(), pages_id, &fills, &keep, uffd);
    for &(start, end) in &private_inherited {
        for (a, z) in uncovered(start, end, &sorted) {
            b.push(
                r,
                "madvise(MADV_DONTNEED)".into(),
                libc::SYS_madvise,
                [a, z - a, libc::MADV_DONTNEED as u64, 0, 0, 0],
                None,
            )?;
        }
    }
    for f in open_fds {
        b.push(
            r,
            "close".into(),
            libc::SYS_close,
            [f.fd, 0, 0, 0, 0, 0],
            None,
        )?;
    }
    b.flush(r)?;
    Ok((restored, pending))
}

/// Task address ranges [start, end), sorted.
type Spans = Vec<(u64, u64)>;

/// Queue the mmap of every VMA of `mm` (`sorted`: the spans of its stored
/// pages); the fresh anonymous mappings made (pages may go in by
/// userfaultfd) and the files opened for mappings, to close once mapped.
fn map_all(
    (r, b): (&mut Remote<'_>, &mut Batch),
    dir: &Path,
    mm: &MmEntry,
    sorted: &[(u64, u64)],
    inherited: &HashSet<(u64, u64)>,
    src: &VmaSources<'_>,
) -> Result<(Spans, Vec<OpenFd>), Error> {
    let mut open_fds: Vec<OpenFd> = Vec::new();
    // Anonymous VMAs back to back, mapped alike, go in one mmap.
    let mut joined: Option<AnonMap> = None;
    let mut fresh: Vec<(u64, u64)> = Vec::new();
    for v in &mm.vmas {
        // A reservation (PROT_NONE, no page stored) is mapped as it is:
        // made writable for the fill, a large one would be refused by the
        // kernel's overcommit check (MariaDB reserves 8 TiB).
        let reservation = v.prot == 0 && uncovered(v.start, v.end, sorted) == [(v.start, v.end)];
        if let Some(m) = AnonMap::of(v, reservation, inherited) {
            match &mut joined {
                Some(j) if j.takes(&m) => j.end = m.end,
                _ => {
                    if let Some(j) = joined.replace(m) {
                        j.push(r, b, &mut fresh)?;
                    }
                }
            }
            continue;
        }
        if let Some(j) = joined.take() {
            j.push(r, b, &mut fresh)?;
        }
        map_vma(
            (r, b),
            dir,
            (mm, v, reservation),
            inherited,
            src,
            &mut open_fds,
        )?;
    }
    if let Some(j) = joined.take() {
        j.push(r, b, &mut fresh)?;
    }
    Ok((fresh, open_fds))
}

/// The least of a task's pages (bytes) worth a userfaultfd for the fill:
/// making it costs a stop and a few calls, each page copied through it
/// saves the zeroing of a fresh page and the lookups of process_vm_writev.
const UFFD_FILL_MIN: u64 = 1 << 20;

/// Whether pages may go in by userfaultfd: not with `CRUST_UFFD_FILL=0`
/// (for comparisons; process_vm_writev then, as before issue 16).
fn uffd_fill_on() -> bool {
    std::env::var_os("CRUST_UFFD_FILL").is_none_or(|v| v != "0")
}

/// A userfaultfd made by the task and taken by crust, with the `fresh`
/// mappings (fresh anonymous private memory, no page in yet) that `fills`
/// reach registered in MISSING mode; `None` when the fill there is small,
/// or the task cannot make one (old kernel, not allowed): the pages then
/// go in by process_vm_writev. User mode only: a kernel access to a page
/// still missing (process_vm_writev, mlock) fails at once, it does not
/// wait for crust. Its close (queued in `b`) runs with the batch's next
/// flush (here when [`pre_split`] cut the mappings).
fn open_fill_uffd(
    (r, b): (&mut Remote<'_>, &mut Batch),
    mm: &MmEntry,
    fresh: &[(u64, u64)],
    fills: &[FillRun],
) -> Result<Option<super::UffdFill>, Error> {
    let mut spans: Vec<(u64, u64)> = fills.iter().map(|f| (f.0, f.0 + f.1)).collect();
    spans.sort_unstable();
    let mut ranges = Vec::new();
    let mut bytes = 0;
    for &(s, e) in fresh {
        let first = spans.partition_point(|&(_, z)| z <= s);
        let inside: u64 = spans
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&(a, _)| a < e)
            .map(|&(a, z)| z.min(e) - a.max(s))
            .sum();
        if inside > 0 {
            ranges.push((s, e));
            bytes += inside;
        }
    }
    if bytes < UFFD_FILL_MIN {
        return Ok(None);
    }
    use crust_sys::uffd::{Uffd, USER_MODE_ONLY};
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | USER_MODE_ONLY;
    let fd = match r.call("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0]) {
        Ok(fd) => fd,
        Err(e @ Error::Sys { .. }) => {
            log::debug!("{}: pages filled by process_vm_writev: {e}", r.pid());
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let pid = r.pid();
    let taken = crust_sys::unix::pidfd_open(pid)
        .and_then(|p| crust_sys::unix::pidfd_getfd(std::os::fd::AsFd::as_fd(&p), fd as i32));
    b.push(
        r,
        "close".into(),
        libc::SYS_close,
        [fd, 0, 0, 0, 0, 0],
        None,
    )?;
    let uffd = match taken {
        Ok(fd) => Uffd::from_fd(fd),
        Err(e) => {
            log::debug!("{pid}: pages filled by process_vm_writev: taking its userfaultfd: {e}");
            return Ok(None);
        }
    };
    let cut = ranges.len();
    let ranges = pre_split((r, b), mm, ranges)?;
    if ranges.len() > cut {
        // The mappings split before the fill starts.
        b.flush(r)?;
    }
    // Closing `uffd` on the way out unregisters what was registered.
    let registered = uffd.api(0).and_then(|_| {
        ranges
            .iter()
            .try_for_each(|&(s, e)| uffd.register_missing(s, e - s))
    });
    if let Err(e) = registered {
        log::debug!("{pid}: pages filled by process_vm_writev: registering its userfaultfd: {e}");
        return Ok(None);
    }
    log::debug!(
        "{pid}: {} KiB go in by userfaultfd, {} ranges",
        bytes >> 10,
        ranges.len()
    );
    Ok(Some(super::UffdFill { uffd, ranges }))
}

/// Bytes of a mapping filled by userfaultfd between two of its VMAs whose
/// protections are set before the fill ([`pre_split`]).
const PRESPLIT_EVERY: u64 = 4 << 20;

/// Cut the `ranges` to register into pieces of about PRESPLIT_EVERY bytes
/// at VMAs whose protection (not read-write) is queued in `b` now, before
/// any page is in, each such VMA a range of its own. Each piece is then a
/// mapping of its own: while the task's mprotects split one piece (once
/// its pages are in, [`protect_vmas`]), the filler copies into the next,
/// and UFFDIO_COPY takes the lock of that one only (one mapping for all:
/// the copies and the splits took turns on its lock). Returns the ranges
/// cut.
fn pre_split(
    (r, b): (&mut Remote<'_>, &mut Batch),
    mm: &MmEntry,
    ranges: Vec<(u64, u64)>,
) -> Result<Vec<(u64, u64)>, Error> {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
    let mut out = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        // Where the piece being cut starts.
        let mut from = s;
        let first = mm.vmas.partition_point(|v| v.end <= s);
        let inside = mm.vmas.get(first..).unwrap_or_default();
        for v in inside.iter().take_while(|v| v.start < e) {
            let cut = v.start >= from.saturating_add(PRESPLIT_EVERY)
                && v.end < e
                && v.prot != rw
                && v.prot != 0
                && v.flags & libc::MAP_LOCKED as u32 == 0;
            if !cut {
                continue;
            }
            push_prot(r, b, v)?;
            out.push((from, v.start));
            out.push((v.start, v.end));
            from = v.end;
        }
        if from < e {
            out.push((from, e));
        }
    }
    Ok(out)
}

/// The pieces of a task's stored pages to fill: every run that is not
/// inherited, (address, bytes, offset in the pages file), split in two:
/// the pieces outside the `inherited` ranges (sorted, apart), and those
/// inside, whose pages are compared with the inherited ones.
pub(super) fn task_fills(
    runs: &[PageRun],
    inherited: &[(u64, u64)],
) -> (Vec<FillRun>, Vec<FillRun>) {
    let (mut plain, mut keep) = (Vec::new(), Vec::new());
    for p in runs.iter().filter(|p| !p.cow) {
        let (mut at, end) = (p.vaddr, p.vaddr + p.npages * PAGE_SIZE);
        let piece = |a: u64, b: u64| (a, b - a, p.file_off + (a - p.vaddr));
        // The first inherited range that ends after the run starts.
        let first = inherited.partition_point(|&(_, e)| e <= at);
        for &(s, e) in inherited.get(first..).unwrap_or_default() {
            if s >= end {
                break;
            }
            if s > at {
                plain.push(piece(at, s));
            }
            let to = e.min(end);
            keep.push(piece(at.max(s), to));
            at = to;
        }
        if at < end {
            plain.push(piece(at, end));
        }
    }
    (plain, keep)
}

/// The [start, end) spans of `runs`, sorted.
pub(super) fn sorted_spans(runs: &[PageRun]) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = runs
        .iter()
        .map(|p| (p.vaddr, p.vaddr.saturating_add(p.npages * PAGE_SIZE)))
        .collect();
    spans.sort_unstable();
    spans
}

/// The parts of [start, end) no span of `spans` ([`sorted_spans`]) covers,
/// in order.
pub(super) fn uncovered(start: u64, end: u64, spans: &[(u64, u64)]) -> Vec<(u64, u64)> {
    // Spans do not overlap (load_pagemap checks runs against the VMAs,
    // each run once): the first that may reach `start` is found by
    // bisection, the rest follow in order.
    let first = spans.partition_point(|&(_, b)| b <= start);
    let covered = spans
        .get(first..)
        .unwrap_or(&[])
        .iter()
        .copied()
        .take_while(|&(a, _)| a < end);
    let mut out = Vec::new();
    let mut cur = start;
    for (a, b) in covered.chain(std::iter::once((end, end))) {
        if a > cur {
            out.push((cur, a.min(end)));
        }
        cur = cur.max(b);
    }
    out
}

/// The most memory one mmap maps for several VMAs ([`AnonMap`]): the
/// kernel's overcommit check (heuristic mode) judges each mmap alone, so
/// VMAs that passed it one by one could fail it as one much larger call.
const JOIN_MAX: u64 = 256 << 20;

/// One anonymous private mmap for one VMA, or for several back to back
/// with the same protection and flags: the kernel merges such fresh
/// mappings into one VMA anyway, so one call leaves the task as one per
/// VMA would (the mprotects and madvises that follow split it as they
/// split the merged one). 30,000 VMAs of one page, every other one
/// read-only, take one mmap instead of 30,000.
struct AnonMap {
    start: u64,
    end: u64,
    prot: u64,
    flags: u64,
}

impl AnonMap {
    /// The mmap of `v` when [`map_vma`] maps it as plain anonymous private
    /// memory, in a way that may be joined with its neighbours': no file,
    /// object or kernel area, not inherited, not growing down (a stack's
    /// guard gap), not huge pages or droppable.
    fn of(v: &VmaEntry, reservation: bool, inherited: &HashSet<(u64, u64)>) -> Option<AnonMap> {
        let special = vs::AREA_VSYSCALL
            | vs::AREA_VDSO
            | vs::AREA_VVAR
            | vs::AREA_SYSVIPC
            | vs::AREA_SOCKET
            | vs::AREA_AIORING
            | vs::AREA_MEMFD
            | vs::ANON_SHARED
            | vs::FILE_PRIVATE
            | vs::FILE_SHARED;
        let odd = (libc::MAP_GROWSDOWN | libc::MAP_HUGETLB | MAP_HUGE_MASK) as u32 | MAP_DROPPABLE;
        if v.status & special != 0
            || v.flags & odd != 0
            || v.flags & libc::MAP_PRIVATE as u32 == 0
            || v.flags & libc::MAP_ANONYMOUS as u32 == 0
            || v.start >= v.end
            || inherited.contains(&(v.start, v.end))
        {
            return None;
        }
        let (prot, flags) = mmap_prot_flags(v, reservation);
        Some(AnonMap {
            start: v.start,
            end: v.end,
            prot,
            flags,
        })
    }

    /// Whether `next` continues this mapping.
    fn takes(&self, next: &AnonMap) -> bool {
        next.start == self.end
            && next.prot == self.prot
            && next.flags == self.flags
            && next.end - self.start <= JOIN_MAX
    }

    /// Queue its mmap; a mapping that takes pages (not a reservation)
    /// goes into `fresh`.
    fn push(
        self,
        r: &mut Remote<'_>,
        b: &mut Batch,
        fresh: &mut Vec<(u64, u64)>,
    ) -> Result<(), Error> {
        if self.prot != 0 {
            fresh.push((self.start, self.end));
        }
        b.push(
            r,
            format!("mmap {:#x}-{:#x}", self.start, self.end),
            libc::SYS_mmap,
            [
                self.start,
                self.end - self.start,
                self.prot,
                self.flags,
                u64::MAX,
                0,
            ],
            Some(self.start),
        )
    }
}

/// The protection and flags VMA `v` is mmapped with: private memory
/// writable for the fill (but a reservation, see [`restore_vmas`]), and
/// the flags that make the same kind of mapping, at its place.
fn mmap_prot_flags(v: &VmaEntry, reservation: bool) -> (u64, u64) {
    let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
    let prot = if private && !reservation {
        v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
    } else {
        v.prot
    };
    let keep = (libc::MAP_SHARED
        | libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_GROWSDOWN
        | libc::MAP_NORESERVE
        | libc::MAP_HUGETLB
        | MAP_HUGE_MASK) as u32
        | MAP_DROPPABLE;
    let flags = (v.flags & keep) as u64 | libc::MAP_FIXED as u64;
    (prot as u64, flags)
}

/// A file opened in the task to map it: (files.img id, open flags, fd).
struct OpenFd {
    id: u64,
    flags: u32,
    fd: u64,
}

/// Reserve a place for a VMA whose object is mapped later.
fn reserve((r, b): (&mut Remote<'_>, &mut Batch), v: &VmaEntry) -> Result<(), Error> {
    b.push(
        r,
        format!("reserve {:#x}-{:#x}", v.start, v.end),
        libc::SYS_mmap,
        [
            v.start,
            v.end - v.start,
            libc::PROT_NONE as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED)
                as u64,
            u64::MAX,
            0,
        ],
        Some(v.start),
    )
}

/// The fd to map file VMA `v` from: one opened for an earlier VMA of the
/// same file and flags, or the file opened now.
fn file_fd(
    (r, b): (&mut Remote<'_>, &mut Batch),
    dir: &Path,
    v: &VmaEntry,
    src: &VmaSources<'_>,
    open_fds: &mut Vec<OpenFd>,
) -> Result<u64, Error> {
    let flags = v.fdflags.unwrap_or(libc::O_RDONLY as u32);
    if let Some(f) = open_fds
        .iter()
        .find(|f| f.id == v.shmid && f.flags == flags)
    {
        return Ok(f.fd);
    }
    // The open goes before the queued calls otherwise.
    b.flush(r)?;
    if let Some(path) = (src.crust_paths)(v.shmid) {
        let file = open_with_flags(&path, flags).map_err(|source| Error::Io {
            op: "cannot open (for the task to map it) the file",
            path: path.clone().into(),
            source,
        })?;
        use std::os::fd::AsFd;
        let fd = crate::task::fdgift::give_fd(r, file.as_fd())?;
        open_fds.push(OpenFd {
            id: v.shmid,
            flags,
            fd,
        });
        return Ok(fd);
    }
    let path = (src.paths)(v.shmid).ok_or_else(|| {
        bad(
            dir,
            format!(
                "VMA {:#x}-{:#x} maps file id {} which files.img does not have",
                v.start, v.end, v.shmid
            ),
        )
    })?;
    let a = r.put_cstr(0, path.as_bytes())?;
    let fd = r.call(
        &format!("open {path}"),
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, a.get(), flags as u64, 0, 0, 0],
    )?;
    open_fds.push(OpenFd {
        id: v.shmid,
        flags,
        fd,
    });
    Ok(fd)
}

/// Open `path` in crust with the open(2) `flags` a task would use.
fn open_with_flags(path: &str, flags: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let acc = flags as i32 & libc::O_ACCMODE;
    std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY)
        .write(acc != libc::O_RDONLY)
        .custom_flags(flags as i32 & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC))
        .open(path)
}

/// Put one VMA of the image in place: skipped (kernel areas, inherited
/// shared memory), attached (System V), reserved (shared memory objects,
/// socket rings), made writable (inherited private memory) or mapped,
/// writable where pages will be filled.
fn map_vma(
    (r, b): (&mut Remote<'_>, &mut Batch),
    dir: &Path,
    (mm, v, reservation): (&MmEntry, &VmaEntry, bool),
    inherited: &HashSet<(u64, u64)>,
    src: &VmaSources<'_>,
    open_fds: &mut Vec<OpenFd>,
) -> Result<(), Error> {
    if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
        return Ok(());
    }
    if is_shmem_entry(v) && inherited.contains(&(v.start, v.end)) {
        return Ok(());
    }
    if v.status & vs::AREA_SYSVIPC != 0 {
        b.flush(r)?;
        return (src.attach_sysv)(r, mm, v);
    }
    if is_shmem_entry(v) || v.status & vs::AREA_SOCKET != 0 {
        // Reserve the place; the object comes later (restore_shmem,
        // map_socket_vmas once the fds are open).
        return reserve((r, b), v);
    }
    if v.status & vs::AREA_AIORING != 0 {
        b.flush(r)?;
        return map_aio_copy(r, v);
    }
    let (prot, flags) = mmap_prot_flags(v, reservation);
    if inherited.contains(&(v.start, v.end)) {
        return b.push(
            r,
            format!("mprotect inherited {:#x}-{:#x}", v.start, v.end),
            libc::SYS_mprotect,
            [v.start, v.end - v.start, prot, 0, 0, 0],
            None,
        );
    }
    let fd = if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
        file_fd((r, b), dir, v, src, open_fds)?
    } else {
        u64::MAX
    };
    b.push(
        r,
        format!("mmap {:#x}-{:#x}", v.start, v.end),
        libc::SYS_mmap,
        [v.start, v.end - v.start, prot, flags, fd, v.pgoff],
        Some(v.start),
    )
}

/// Plain anonymous memory at the place of AIO ring `v`, for its stored
/// pages; the ring is made again over it once they are in
/// ([`protect_vmas`]).
fn map_aio_copy(r: &mut Remote<'_>, v: &VmaEntry) -> Result<(), Error> {
    let got = r.call(
        &format!("mmap AIO ring copy {:#x}-{:#x}", v.start, v.end),
        libc::SYS_mmap,
        [
            v.start,
            v.end - v.start,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64,
            u64::MAX,
            0,
        ],
    )?;
    if got != v.start {
        return Err(Error::Restore {
            pid: r.pid(),
            what: format!("mmap placed {:#x} at {got:#x}", v.start),
        });
    }
    Ok(())
}

/// Map the packet socket rings of the socket VMAs of `mm` at their places
/// (reserved by `restore_vmas`), through the task's fds (`fds`, open
/// already) of the files.img ids the VMAs name. The rings come back
/// empty.
pub fn map_socket_vmas(r: &mut Remote<'_>, mm: &MmEntry, fds: &[FdinfoEntry]) -> Result<(), Error> {
    for v in mm.vmas.iter().filter(|v| v.status & vs::AREA_SOCKET != 0) {
        let fd = fds
            .iter()
            .filter(|f| f.id as u64 == v.shmid && f.r#type == fd_types::PACKETSK)
            .map(|f| f.fd)
            .min()
            .ok_or_else(|| Error::Restore {
                pid: r.pid(),
                what: format!(
                    "VMA {:#x}-{:#x} maps packet socket file {}, which the process has no fd of",
                    v.start, v.end, v.shmid
                ),
            })?;
        let flags = (v.flags & (libc::MAP_SHARED | libc::MAP_PRIVATE) as u32) as u64
            | libc::MAP_FIXED as u64;
        let got = r.call(
            &format!(
                "mmap the rings of packet socket fd {fd} at {:#x}-{:#x}",
                v.start, v.end
            ),
            libc::SYS_mmap,
            [
                v.start,
                v.end - v.start,
                v.prot as u64,
                flags,
                fd as u64,
                v.pgoff,
            ],
        )?;
        if got != v.start {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mmap placed {:#x} at {got:#x}", v.start),
            });
        }
        let mut b = Batch::new(None);
        advise((r, &mut b), v)?;
        b.flush(r)?;
    }
    Ok(())
}

/// The recorded madvise advice of a VMA (one call per advice bit).
fn advise((r, b): (&mut Remote<'_>, &mut Batch), v: &VmaEntry) -> Result<(), Error> {
    let mut m = v.madv.unwrap_or(0);
    while m != 0 {
        // The lowest bit left (no loop over 64 bits for every VMA).
        let adv = u64::from(m.trailing_zeros());
        m &= m - 1;
        b.push(
            r,
            "madvise".into(),
            libc::SYS_madvise,
            [v.start, v.end - v.start, adv, 0, 0, 0],
            None,
        )?;
    }
    Ok(())
}

/// Batched calls queued before the task's protections wait for more of
/// the fill: fewer are left queued while the filler catches up.
const PROTECT_FLUSH_AT: usize = 64;

/// Once the pages are in (`pending`), make the AIO rings again, set the
/// final protections and the madvise advice of every VMA. The VMAs are
/// taken in address order as the fill completes below them (the filler
/// goes on with the memory above while the task changes the memory
/// below): the task's calls, which split the one mapping of many VMAs
/// mapped back to back, run beside the copy instead of after it.
pub fn protect_vmas(
    r: &mut Remote<'_>,
    mm: &MmEntry,
    pending: &Pending,
    batch_code: Option<RemoteAddr>,
) -> Result<(), Error> {
    let rings = mm.vmas.iter().any(|v| v.status & vs::AREA_AIORING != 0);
    if rings {
        // A ring is made over its copy once every page is in.
        pending.wait()?;
        super::aio::restore_rings(r, mm)?;
    }
    let mut b = Batch::new(batch_code);
    for v in &mm.vmas {
        if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
            continue;
        }
        if !pending.in_below(v.end) {
            // The task works on what is queued while the fill goes on.
            if b.queued() >= PROTECT_FLUSH_AT {
                b.flush(r)?;
            }
            pending.wait_below(v.end)?;
        }
        if v.flags & libc::MAP_LOCKED as u32 != 0 {
            if pending.by_uffd() {
                // mlock faults in every page of the range: none may be
                // missing under the userfaultfd any more.
                b.flush(r)?;
                pending.wait()?;
            }
            // Locked while still writable (its pages are in): mlock of a
            // PROT_NONE range would not fault its pages in. Not mapped
            // MAP_LOCKED: an inherited VMA (fork does not copy the lock)
            // needs the call anyway.
            b.push(
                r,
                "mlock".into(),
                libc::SYS_mlock,
                [v.start, v.end - v.start, 0, 0, 0, 0],
                None,
            )?;
        }
        let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
        let sysv = v.status & vs::AREA_SYSVIPC != 0;
        if (private || sysv || is_shmem_entry(v))
            && v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32
        {
            push_prot(r, &mut b, v)?;
        }
        advise((r, &mut b), v)?;
    }
    // Every chunk, above the last VMA too, and the first error.
    pending.wait()?;
    // The recorded value, over what the fill set (mode `always`: only
    // now that every page is in) or the task inherited from its parent.
    super::thp::set_disabled((r, &mut b), mm.thp_disabled == Some(true))?;
    b.flush(r)?;
    if pending.kept() > 0 {
        log::debug!(
            "{}: {} stored pages equal to the parent's left shared",
            r.pid(),
            pending.kept()
        );
    }
    Ok(())
}

/// Queue the mprotect that gives VMA `v` its recorded protection.
fn push_prot(r: &mut Remote<'_>, b: &mut Batch, v: &VmaEntry) -> Result<(), Error> {
    b.push(
        r,
        "mprotect".into(),
        libc::SYS_mprotect,
        [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
        None,
    )
}

/// Write the mm fields of the image with PR_SET_MM_MAP, exe included.
pub fn set_mm_map(r: &mut Remote<'_>, mm: &MmEntry, exe_path: &str) -> Result<(), Error> {
    // The kernel refuses to replace the exe link while the old exe file is
    // still mapped (EBUSY): when the task already has the right one (a
    // child of a restored parent, or crust restoring its own binary),
    // leave it as it is.
    use std::os::unix::fs::MetadataExt;
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let current = std::fs::metadata(format!("/proc/{}/exe", r.pid()));
    // Through the tree's root when it has a mount namespace of its own.
    let wanted = crate::util::view::host_path(std::path::Path::new(exe_path))
        .map_or_else(|| std::fs::metadata(exe_path), std::fs::metadata);
    let keep_exe = matches!((&current, &wanted), (Ok(c), Ok(w)) if same(c, w));
    let exe_fd = if keep_exe {
        u64::from(u32::MAX)
    } else {
        let a = r.put_cstr(0, exe_path.as_bytes())?;
        r.call(
            &format!("open exe {exe_path}"),
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                a.get(),
                libc::O_RDONLY as u64,
                0,
                0,
                0,
            ],
        )?
    };
    let auxv: Vec<u8> = mm
        .mm_saved_auxv
        .iter()
        .take(50)
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let auxv_addr = r.put(1024, &auxv)?;
    let mut b = Vec::with_capacity(104);
    for v in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_addr.get(),
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let m = r.put(0, &b)?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    // The map, the close of the exe and dumpable in one stop: the table
    // after the map and the auxv it points to (at 0 and 1024).
    let mut batch = Batch::with_table_at(r.batch_code, MM_MAP_TABLE_AT);
    batch.push(
        r,
        "prctl(PR_SET_MM_MAP)".into(),
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, m.get(), b.len() as u64, 0, 0],
        None,
    )?;
    if !keep_exe {
        batch.push(
            r,
            "close of the exe".into(),
            libc::SYS_close,
            [exe_fd, 0, 0, 0, 0, 0],
            None,
        )?;
    }
    if let Some(d) = mm.dumpable {
        if d == 0 || d == 1 {
            batch.push(
                r,
                "prctl(PR_SET_DUMPABLE)".into(),
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as u64, d as u64, 0, 0, 0, 0],
                None,
            )?;
        }
    }
    batch.flush(r)?;
    // PR_SET_THP_DISABLE is set by `protect_vmas`, once the pages are in.
    Ok(())
}

/// Where [`set_mm_map`]'s batch table goes in the scratch area: past the
/// map (at 0) and the auxv (at 1024, at most 50 words).
const MM_MAP_TABLE_AT: u64 = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(vaddr: u64, npages: u64, file_off: u64, cow: bool) -> PageRun {
        PageRun {
            vaddr,
            npages,
            file_off,
            cow,
        }
    }

    #[test]
    fn fills_leave_out_inherited_runs() {
        let runs = [
            pr(0x1000, 2, 0, false),
            pr(0x3000, 1, 0, true),
            pr(0x4000, 1, 0x2000, false),
        ];
        assert_eq!(
            task_fills(&runs, &[]),
            (vec![(0x1000, 0x2000, 0), (0x4000, 0x1000, 0x2000)], vec![])
        );
    }

    #[test]
    fn fills_in_inherited_ranges_are_compared() {
        let runs = [pr(0x1000, 6, 0x8000, false), pr(0x9000, 1, 0xe000, false)];
        // Inherited: 0x2000-0x3000 and 0x4000-0x6000 (inside the first
        // run), 0x6000-0x7000 (back to back), 0x9000-0xa000 (the whole
        // second run).
        let inherited = [
            (0x2000, 0x3000),
            (0x4000, 0x6000),
            (0x6000, 0x7000),
            (0x9000, 0xa000),
        ];
        let (plain, keep) = task_fills(&runs, &inherited);
        assert_eq!(
            plain,
            vec![(0x1000, 0x1000, 0x8000), (0x3000, 0x1000, 0xa000)]
        );
        assert_eq!(
            keep,
            vec![
                (0x2000, 0x1000, 0x9000),
                (0x4000, 0x2000, 0xb000),
                (0x6000, 0x1000, 0xd000),
                (0x9000, 0x1000, 0xe000)
            ]
        );
    }

    #[test]
    fn uncovered_parts() {
        let runs = [
            pr(0x3000, 1, 0, true),
            pr(0x1000, 1, 0, false),
            pr(0x9000, 2, 0, false),
        ];
        let runs = sorted_spans(&runs);
        assert_eq!(
            uncovered(0x0, 0xa000, &runs),
            vec![(0x0, 0x1000), (0x2000, 0x3000), (0x4000, 0x9000)]
        );
        assert_eq!(uncovered(0x1000, 0x2000, &runs), vec![]);
        assert_eq!(uncovered(0xa000, 0xc000, &runs), vec![(0xb000, 0xc000)]);
        assert_eq!(uncovered(0x3800, 0x5000, &runs), vec![(0x4000, 0x5000)]);
    }

    fn anon(start: u64, end: u64, prot: u32) -> VmaEntry {
        VmaEntry {
            start,
            end,
            prot,
            flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            status: vs::AREA_REGULAR | vs::ANON_PRIVATE,
            ..Default::default()
        }
    }

    /// The mmaps [`restore_vmas`] makes of `vmas` (start, end, prot).
    fn joined(vmas: &[VmaEntry], inherited: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
        let inherited: HashSet<(u64, u64)> = inherited.iter().copied().collect();
        let mut out: Vec<AnonMap> = Vec::new();
        for v in vmas {
            match AnonMap::of(v, false, &inherited) {
                Some(m) => match out.last_mut() {
                    Some(j) if j.takes(&m) => j.end = m.end,
                    _ => out.push(m),
                },
                // Mapped alone: the next one starts a new mmap.
                None => out.push(AnonMap {
                    start: v.start,
                    end: v.end,
                    prot: u64::MAX,
                    flags: 0,
                }),
            }
        }
        out.iter().map(|m| (m.start, m.end, m.prot)).collect()
    }

    #[test]
    fn anonymous_vmas_back_to_back_take_one_mmap() {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let (r, n) = (libc::PROT_READ as u32, libc::PROT_NONE as u32);
        // Read-only and read-write private memory is mapped writable for
        // the fill: one mmap; a gap, a file, an inherited VMA, a stack
        // and a reservation (PROT_NONE, no page) break the run.
        let mut file = anon(0x9000, 0xa000, r);
        file.status = vs::AREA_REGULAR | vs::FILE_PRIVATE;
        file.flags = libc::MAP_PRIVATE as u32;
        let mut stack = anon(0xc000, 0xd000, 3);
        stack.flags |= libc::MAP_GROWSDOWN as u32;
        let vmas = [
            anon(0x1000, 0x2000, 3),
            anon(0x2000, 0x3000, r),
            anon(0x3000, 0x4000, 3),
            anon(0x5000, 0x6000, 3),
            anon(0x6000, 0x9000, r),
            file,
            anon(0xa000, 0xb000, 3),
            anon(0xb000, 0xc000, 3),
            stack,
        ];
        assert_eq!(
            joined(&vmas, &[(0xb000, 0xc000)]),
            vec![
                (0x1000, 0x4000, rw),
                (0x5000, 0x9000, rw),
                (0x9000, 0xa000, u64::MAX),
                (0xa000, 0xb000, rw),
                (0xb000, 0xc000, u64::MAX),
                (0xc000, 0xd000, u64::MAX),
            ]
        );
        let inherited = HashSet::new();
        let none = AnonMap::of(&anon(0x1000, 0x2000, n), true, &inherited);
        assert_eq!(none.map(|m| m.prot), Some(0));
        // No mmap larger than JOIN_MAX for several VMAs.
        let half = JOIN_MAX / 2;
        let big = [
            anon(0x1000_0000, 0x1000_0000 + half, 3),
            anon(0x1000_0000 + half, 0x1000_0000 + 2 * half, 3),
            anon(0x1000_0000 + 2 * half, 0x1000_0000 + 2 * half + 0x1000, 3),
        ];
        assert_eq!(joined(&big, &[]).len(), 2);
    }

    #[test]
    fn inherited_vmas_are_those_with_cow_runs() {
        let vma = |start, end| VmaEntry {
            start,
            end,
            ..Default::default()
        };
        let mm = MmEntry {
            vmas: vec![
                vma(0x1000, 0x3000),
                vma(0x3000, 0x5000),
                vma(0x8000, 0x9000),
            ],
            ..Default::default()
        };
        let runs = [
            pr(0x8000, 1, 0, true),
            pr(0x1000, 1, 0, false),
            pr(0x4000, 1, 0, true),
        ];
        assert_eq!(
            inherited_vmas(&mm, &runs),
            vec![(0x3000, 0x5000), (0x8000, 0x9000)]
        );
    }
}
