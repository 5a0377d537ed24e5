//! Transparent huge pages (issue 16): memory that huge pages backed at
//! dump comes back backed by huge pages, and memory that was not stays in
//! 4 KiB pages.
//!
//! Dump: the ranges of each private anonymous VMA that a PMD-mapped huge
//! page backs (`PAGEMAP_SCAN`, category `PAGE_IS_HUGE`) go to crust's own
//! `crust-thp-N.img` (N: the pid of `mm-N.img`; no file when there are
//! none). Only VMAs where the kernel may have made huge pages are asked:
//! those with VmFlags `hg` (MADV_HUGEPAGE), and, when the system's
//! `transparent_hugepage/enabled` is `always`, every one without `nh`.
//!
//! Restore: before the fill, each recorded range of a VMA whose recorded
//! advice has MADV_HUGEPAGE gets MADV_HUGEPAGE, so the fill's first write
//! into each 2 MiB piece faults in a huge page (its VMA is split for the
//! time of the fill; the advice of the whole VMA, given once the pages
//! are in, merges it again). The rest of such a VMA has no advice during
//! the fill, so with `enabled=madvise` it is filled with 4 KiB pages, and
//! a range that was only partly present does not grow to a huge page.
//!
//! With the system's mode `always`, any first write into a 2 MiB piece of
//! a VMA without `nh` makes a huge page, and there is no advice that
//! returns a VMA to "no advice" once given. So the fill runs in two
//! parts ([`split_fills`]): the pieces inside the recorded ranges first,
//! with the task's THP allowed (huge pages fault in), then the rest with
//! `PR_SET_THP_DISABLE` set on the task (4 KiB pages, as they were), the
//! recorded value set again once the pages are in ([`set_disabled`]).

use super::pages::FillRun;
use super::{bad, Vma};
use crate::task::remote::{Batch, Remote};
use crate::util::{proc_err, read_image, sys_err, write_image};
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::image::ImageType;
use crust_images::proto::crust_thp::CrustThpEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_proc::{PagemapReader, ProcRoot};
use crust_sys::mem;
use std::path::Path;

/// `PAGE_IS_HUGE` of `PAGEMAP_SCAN`: a PMD-mapped huge page (or hugetlb).
const PAGE_IS_HUGE: u64 = 1 << 6;
/// The madvise advice that asks for huge pages.
const HUGEPAGE_BIT: u64 = 1 << libc::MADV_HUGEPAGE;

/// Is the system's THP mode `always` (every anonymous VMA without `nh` may
/// get huge pages)? Read once.
pub(super) fn system_always() -> bool {
    static ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALWAYS.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"))
    })
}

/// Might the kernel have backed VMA `v` with transparent huge pages?
fn may_be_huge(v: &Vma, always: bool) -> bool {
    v.status & vs::ANON_PRIVATE != 0
        && v.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
        && !v.vm_flags.has("ht")
        && (v.vm_flags.has("hg") || (always && !v.vm_flags.has("nh")))
}

/// The ranges of task `pid`'s private anonymous VMAs that huge pages back,
/// each inside one VMA, in address order.
pub(crate) fn huge_ranges(pid: i32, vmas: &[Vma]) -> Result<Vec<CrustThpEntry>, Error> {
    let always = system_always();
    let wanted: Vec<&Vma> = vmas.iter().filter(|v| may_be_huge(v, always)).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let proc = ProcRoot::default();
    let pm = PagemapReader::open(&proc, pid).map_err(proc_err(pid))?;
    let mut regions = [mem::PageRegion::default(); 256];
    let mut out: Vec<CrustThpEntry> = Vec::new();
    for v in wanted {
        let (mut cur, end) = (v.map.start, v.map.end);
        // Ranges merge inside a VMA, never across two.
        let first = out.len();
        while cur < end {
            let (n, stop) = mem::pagemap_scan(pm.file(), cur, end, PAGE_IS_HUGE, &mut regions)
                .map_err(sys_err(pid, "ioctl(PAGEMAP_SCAN) for huge pages"))?;
            for r in regions.iter().take(n) {
                match out.get_mut(first..).and_then(|o| o.last_mut()) {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => out.push(CrustThpEntry {
                        start: r.start,
                        end: r.end,
                        ..Default::default()
                    }),
                }
            }
            if stop <= cur {
                break;
            }
            cur = stop;
        }
    }
    if !out.is_empty() {
        let bytes: u64 = out.iter().map(|r| r.end - r.start).sum();
        log::debug!(
            "{pid}: {} KiB in {} ranges of transparent huge pages",
            bytes >> 10,
            out.len()
        );
    }
    Ok(out)
}

/// Write `crust-thp-ID.img` when there are ranges.
pub(crate) fn write_huge_ranges(
    dir: &Path,
    id: u64,
    ranges: &[CrustThpEntry],
) -> Result<(), Error> {
    if ranges.is_empty() {
        return Ok(());
    }
    write_image(dir, ImageType::CrustThp, id, ranges)
}

/// Read `crust-thp-ID.img` if the dump wrote one (CRIU's images have
/// none: every page is filled as a 4 KiB page) and check it against the
/// VMAs of `mm`: (start, end) each, sorted.
pub fn load_huge_ranges(dir: &Path, id: u64, mm: &MmEntry) -> Result<Vec<(u64, u64)>, Error> {
    let name = ImageType::CrustThp.file_name(id);
    if !dir.join(&name).exists() {
        return Ok(Vec::new());
    }
    let entries: Vec<CrustThpEntry> = read_image(dir, ImageType::CrustThp, id)?;
    check_ranges(&entries, &mm.vmas).map_err(|why| bad(dir, format!("{name}: {why}")))
}

/// Each range non-empty, page aligned, after the one before, and inside
/// one private anonymous VMA (not hugetlb memory).
fn check_ranges(entries: &[CrustThpEntry], vmas: &[VmaEntry]) -> Result<Vec<(u64, u64)>, String> {
    let page = crust_sys::PAGE_SIZE;
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        let what = format!("huge page range {:#x}-{:#x}", e.start, e.end);
        if e.start >= e.end || e.start % page != 0 || e.end % page != 0 {
            return Err(format!("{what} is empty or not page aligned"));
        }
        if out.last().is_some_and(|&(_, end)| end > e.start) {
            return Err(format!("{what} overlaps or precedes the one before"));
        }
        let inside = vmas.iter().any(|v| {
            v.start <= e.start
                && e.end <= v.end
                && v.status & vs::ANON_PRIVATE != 0
                && v.flags & libc::MAP_HUGETLB as u32 == 0
        });
        if !inside {
            return Err(format!("{what} is not inside one private anonymous VMA"));
        }
        out.push((e.start, e.end));
    }
    Ok(out)
}

/// The VMA of `mm` that holds [s, e) and has MADV_HUGEPAGE recorded.
fn hg_vma(mm: &MmEntry, s: u64, e: u64) -> Option<&VmaEntry> {
    mm.vmas
        .iter()
        .find(|v| v.start <= s && e <= v.end)
        .filter(|v| v.madv.unwrap_or(0) & HUGEPAGE_BIT != 0)
}

/// Pages to touch before [`advise_huge`] splits their VMA: one stored page
/// (`spans`: the stored runs, sorted) outside the huge ranges of each VMA
/// that the advice splits, that is not `inherited` (a fork gave those an
/// anon_vma already). The touch gives the whole VMA one anon_vma before
/// the split, so that the pieces, all given the advice at the end, merge
/// again: pieces that each got an anon_vma of their own at their first
/// fault never merge. A piece with no page has none, and merges anyway.
/// The page is filled with its stored contents afterwards.
pub(super) fn pages_to_touch(
    mm: &MmEntry,
    huge: &[(u64, u64)],
    spans: &[(u64, u64)],
    inherited: &std::collections::HashSet<(u64, u64)>,
) -> Vec<u64> {
    let mut out = Vec::new();
    for v in &mm.vmas {
        if inherited.contains(&(v.start, v.end)) || v.madv.unwrap_or(0) & HUGEPAGE_BIT == 0 {
            continue;
        }
        let mine: Vec<(u64, u64)> = huge
            .iter()
            .copied()
            .filter(|&(s, e)| v.start <= s && e <= v.end)
            .collect();
        if mine.is_empty() || mine == [(v.start, v.end)] {
            continue;
        }
        // The first stored page of the VMA outside its huge ranges.
        let first = spans.partition_point(|&(_, b)| b <= v.start);
        let stored = spans.get(first..).unwrap_or_default().iter();
        let found = stored
            .take_while(|&&(a, _)| a < v.end)
            .flat_map(|&(a, b)| super::restore::uncovered(a.max(v.start), b.min(v.end), &mine))
            .map(|(a, _)| a)
            .next();
        out.extend(found);
    }
    out
}

/// Touch each page of `pages` ([`pages_to_touch`]) of task `pid`: a write
/// of zeros into its first bytes.
pub(super) fn touch(pid: i32, pages: &[u64]) -> Result<(), Error> {
    for &a in pages {
        mem::write(pid, crust_sys::RemoteAddr(a), &[0u8; 8])
            .map_err(sys_err(pid, format!("process_vm_writev at {a:#x}")))?;
    }
    Ok(())
}

/// The `prctl(PR_SET_THP_DISABLE, on)` of task `r`, in batch `b`.
pub(super) fn set_disabled((r, b): (&mut Remote<'_>, &mut Batch), on: bool) -> Result<(), Error> {
    b.push(
        r,
        format!("prctl(PR_SET_THP_DISABLE, {})", u8::from(on)),
        libc::SYS_prctl,
        [libc::PR_SET_THP_DISABLE as u64, u64::from(on), 0, 0, 0, 0],
        None,
    )
}

/// `fills` (address, bytes, offset; sorted, apart) cut at the edges of
/// `huge` (sorted, apart): the pieces inside a huge range, and the others.
pub(super) fn split_fills(
    fills: Vec<FillRun>,
    huge: &[(u64, u64)],
) -> (Vec<FillRun>, Vec<FillRun>) {
    if huge.is_empty() {
        return (Vec::new(), fills);
    }
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for (a, len, off) in fills {
        let end = a + len;
        let piece = |s: u64, e: u64| (s, e - s, off + (s - a));
        let mut at = a;
        let first = huge.partition_point(|&(_, he)| he <= a);
        for &(hs, he) in huge.get(first..).unwrap_or_default() {
            if hs >= end {
                break;
            }
            let (s, e) = (hs.max(at), he.min(end));
            if s > at {
                outside.push(piece(at, s));
            }
            inside.push(piece(s, e));
            at = e;
        }
        if at < end {
            outside.push(piece(at, end));
        }
    }
    (inside, outside)
}

/// Before the fill: MADV_HUGEPAGE on each huge range (`huge`, checked by
/// [`load_huge_ranges`]) of a VMA whose recorded advice has it, so the
/// fill faults in huge pages there. Returns the bytes so advised.
pub(super) fn advise_huge(
    (r, b): (&mut Remote<'_>, &mut Batch),
    mm: &MmEntry,
    huge: &[(u64, u64)],
) -> Result<u64, Error> {
    let mut advised = 0;
    for &(s, e) in huge {
        if hg_vma(mm, s, e).is_none() {
            // Without MADV_HUGEPAGE recorded (enabled=always at dump):
            // huge pages come only if the system's mode gives them.
            continue;
        }
        b.push(
            r,
            format!("madvise(MADV_HUGEPAGE) {s:#x}-{e:#x}"),
            libc::SYS_madvise,
            [s, e - s, libc::MADV_HUGEPAGE as u64, 0, 0, 0],
            None,
        )?;
        advised += e - s;
    }
    Ok(advised)
}

/// What two walks of a process's page tables add to its images: its guard
/// regions (VMA entries for its mm) and the ranges transparent huge pages
/// back.
pub(crate) struct Extents {
    pub(crate) guards: Vec<VmaEntry>,
    pub(crate) huge: Vec<CrustThpEntry>,
}

/// [`Extents`] being found: on a thread of their own for a process with
/// much memory (each walk is the kernel's category walk of every page,
/// 20 ns a page: 5 ms each at 4 GiB, while the rest of the process is
/// collected on the other core), else right away.
pub(crate) enum ExtentsWalk {
    Done(Result<Extents, Error>),
    Running(std::thread::JoinHandle<Result<Extents, Error>>),
}

/// Memory of a process (in VMAs whose pages are stored) from which
/// [`walk_extents`] walks on a thread of its own.
const WALK_APART_FROM: u64 = 256 << 20;

/// Start finding the [`Extents`] of task `pid` (frozen), whose VMAs are
/// `vmas` (without `guards`, its guard regions are left out: the caller
/// finds them otherwise).
pub(crate) fn walk_extents(pid: i32, vmas: &std::sync::Arc<Vec<Vma>>, guards: bool) -> ExtentsWalk {
    let walk = move |vmas: &[Vma]| -> Result<Extents, Error> {
        Ok(Extents {
            guards: match guards {
                true => super::guard_entries(pid)?,
                false => Vec::new(),
            },
            huge: huge_ranges(pid, vmas)?,
        })
    };
    let size: u64 = (vmas.iter())
        .filter(|v| v.dumps_pages())
        .map(|v| v.map.end - v.map.start)
        .sum();
    if size < WALK_APART_FROM {
        return ExtentsWalk::Done(walk(vmas));
    }
    let owned = vmas.clone();
    match std::thread::Builder::new()
        .name("crust-extents".into())
        .spawn(move || walk(&owned))
    {
        Ok(h) => ExtentsWalk::Running(h),
        // No thread: walked here.
        Err(_) => ExtentsWalk::Done(walk(vmas.as_slice())),
    }
}

impl ExtentsWalk {
    /// The extents found (`pid`: for the error of a thread that panicked).
    pub(crate) fn join(self, pid: i32) -> Result<Extents, Error> {
        match self {
            ExtentsWalk::Done(r) => r,
            ExtentsWalk::Running(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Sys {
                    pid,
                    op: "walking the page tables for guard regions and huge pages (the thread \
                         panicked)"
                        .into(),
                    source: std::io::Error::other("panic"),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_are_cut_at_the_edges_of_huge_ranges() {
        const M: u64 = 1 << 20;
        let fills = vec![(0, 5 * M, 0), (8 * M, M, 5 * M), (10 * M, 4096, 6 * M)];
        let huge = [(2 * M, 4 * M), (7 * M, 9 * M), (12 * M, 14 * M)];
        let (inside, outside) = split_fills(fills.clone(), &huge);
        assert_eq!(inside, vec![(2 * M, 2 * M, 2 * M), (8 * M, M, 5 * M)]);
        assert_eq!(
            outside,
            vec![(0, 2 * M, 0), (4 * M, M, 4 * M), (10 * M, 4096, 6 * M)]
        );
        assert_eq!(split_fills(fills.clone(), &[]), (Vec::new(), fills));
    }

    fn vma(start: u64, end: u64, status: u32) -> VmaEntry {
        VmaEntry {
            start,
            end,
            status,
            ..Default::default()
        }
    }

    fn r(start: u64, end: u64) -> CrustThpEntry {
        CrustThpEntry {
            start,
            end,
            ..Default::default()
        }
    }

    #[test]
    fn one_stored_page_outside_the_huge_ranges_is_touched() {
        let hg = |start, end| VmaEntry {
            madv: Some(HUGEPAGE_BIT),
            ..vma(start, end, vs::AREA_REGULAR | vs::ANON_PRIVATE)
        };
        let mm = MmEntry {
            vmas: vec![
                hg(0x20_0000, 0x80_0000),
                hg(0x80_0000, 0xa0_0000),
                hg(0xa0_0000, 0xe0_0000),
                hg(0xe0_0000, 0x120_0000),
            ],
            ..Default::default()
        };
        let huge = [
            (0x20_0000, 0x60_0000),
            (0x80_0000, 0xa0_0000),
            (0xa0_0000, 0xc0_0000),
            (0xe0_0000, 0x100_0000),
        ];
        // Stored: the first VMA's huge range and two pages after it; the
        // third VMA's huge range only; the fourth's pages after its range.
        let spans = [
            (0x20_0000, 0x60_2000),
            (0x80_0000, 0xc0_0000),
            (0x100_0000, 0x100_1000),
        ];
        let none = std::collections::HashSet::new();
        // The second VMA is huge whole (no split), the third has no page
        // outside its range (its other piece merges without anon_vma).
        assert_eq!(
            pages_to_touch(&mm, &huge, &spans, &none),
            vec![0x60_0000, 0x100_0000]
        );
        let inherited = [(0x20_0000, 0x80_0000)].into_iter().collect();
        assert_eq!(
            pages_to_touch(&mm, &huge, &spans, &inherited),
            vec![0x100_0000]
        );
    }

    #[test]
    fn ranges_are_checked_against_the_vmas() {
        let anon = vs::AREA_REGULAR | vs::ANON_PRIVATE;
        let vmas = [
            vma(0x20_0000, 0x60_0000, anon),
            vma(0x60_0000, 0xa0_0000, anon),
            vma(0xa0_0000, 0xc0_0000, vs::AREA_REGULAR | vs::FILE_PRIVATE),
        ];
        let ok = [r(0x20_0000, 0x40_0000), r(0x60_0000, 0xa0_0000)];
        assert_eq!(
            check_ranges(&ok, &vmas),
            Ok(vec![(0x20_0000, 0x40_0000), (0x60_0000, 0xa0_0000)])
        );
        // Across two VMAs, in a file mapping, out of order, unaligned,
        // empty, outside every VMA.
        for bad in [
            vec![r(0x40_0000, 0x80_0000)],
            vec![r(0xa0_0000, 0xc0_0000)],
            vec![r(0x60_0000, 0x80_0000), r(0x20_0000, 0x40_0000)],
            vec![r(0x20_0800, 0x40_0000)],
            vec![r(0x40_0000, 0x40_0000)],
            vec![r(0x100_0000, 0x120_0000)],
        ] {
            assert!(check_ranges(&bad, &vmas).is_err(), "{bad:?}");
        }
    }
}
