//! Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): pages of a VMA
//! that fault on any access, kept in the page tables, not as VMAs.
//! Stored as CRIU 4.2 stores them: after the real VMAs of `mm.vmas`, one
//! entry per region with status `VMA_AREA_GUARD` alone (found with
//! PAGEMAP_SCAN's PAGE_IS_GUARD). Restore takes them out of the VMA list
//! and installs them again once the memory is in place.

use super::{bad, TASK_SIZE};
use crate::task::remote::Remote;
use crate::util::proc_err;
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_proc::{PagemapReader, ProcRoot};
use crust_sys::{mem, PAGE_SIZE};
use std::path::Path;

/// PAGEMAP_SCAN's category of guard pages.
const PAGE_IS_GUARD: u64 = 1 << 8;
/// madvise advice that installs guard pages.
const MADV_GUARD_INSTALL: u64 = 102;

/// The guard regions of task `pid`, as VMA entries to append to its mm.
/// A kernel whose PAGEMAP_SCAN does not know guard pages has none to find
/// (none can have been installed without 6.13's madvise; the 6.13 kernels
/// that have MADV_GUARD_INSTALL but not PAGE_IS_GUARD are refused there).
pub(crate) fn guard_entries(pid: i32) -> Result<Vec<VmaEntry>, Error> {
    let out = entries_of(&guard_regions(pid)?);
    log::debug!("{pid}: {} guard regions", out.len());
    Ok(out)
}

/// The guard regions of task `pid` (a walk of all its memory).
pub(crate) fn guard_regions(pid: i32) -> Result<Vec<std::ops::Range<u64>>, Error> {
    guards_in(pid, std::slice::from_ref(&(0..TASK_SIZE)))
}

/// Guard regions as VMA entries.
pub(crate) fn entries_of(regions: &[std::ops::Range<u64>]) -> Vec<VmaEntry> {
    (regions.iter())
        .map(|r| VmaEntry {
            start: r.start,
            end: r.end,
            status: vs::AREA_GUARD,
            ..Default::default()
        })
        .collect()
}

/// Ranges walked apart by [`guards_in`] at most; past that, one walk
/// from the first to the last (the kernel walks the gaps, at about 20 ns
/// a page, instead of a system call per range).
const WALKS: usize = 256;

/// The guard regions inside `ranges` (sorted, disjoint) of task `pid`,
/// merged where they meet. Ranges closer than 64 pages are walked
/// together.
pub(crate) fn guards_in(
    pid: i32,
    ranges: &[std::ops::Range<u64>],
) -> Result<Vec<std::ops::Range<u64>>, Error> {
    let mut walks: Vec<std::ops::Range<u64>> = Vec::new();
    // User memory only (the vsyscall page lies above TASK_SIZE: the
    // kernel refuses to scan there, and it has no guard pages).
    for r in ranges.iter().filter(|r| r.start < TASK_SIZE) {
        let r = r.start..r.end.min(TASK_SIZE);
        match walks.last_mut() {
            Some(w) if r.start <= w.end + 64 * PAGE_SIZE => w.end = w.end.max(r.end),
            _ => walks.push(r),
        }
    }
    if walks.len() > WALKS {
        let (Some(first), Some(last)) = (walks.first(), walks.last()) else {
            return Ok(Vec::new());
        };
        let all = first.start..last.end;
        walks = std::iter::once(all).collect();
    }
    let proc = ProcRoot::default();
    let pm = PagemapReader::open(&proc, pid).map_err(proc_err(pid))?;
    let guards = |f: &std::fs::File, a, b, out: &mut [mem::PageRegion]| {
        mem::pagemap_scan(f, a, b, PAGE_IS_GUARD, out)
    };
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for w in walks {
        // None: no PAGEMAP_SCAN (or no guard pages in it): none to find.
        let Some(found) = super::dump::regions_of(pid, &pm, w.start, w.end, guards)? else {
            log::debug!("{pid}: PAGEMAP_SCAN knows no guard pages");
            return Ok(Vec::new());
        };
        out.extend(found.into_iter().map(|(a, b)| a..b));
    }
    Ok(super::track::merge(out))
}

/// Take the guard regions out of `mm`'s VMA list: (start, end) each,
/// checked to be page aligned and covered by VMAs of the list
/// (a region may span VMAs back to back).
pub fn split_guards(dir: &Path, mm: &mut MmEntry) -> Result<Vec<(u64, u64)>, Error> {
    let is_guard = |v: &VmaEntry| v.status & vs::AREA_GUARD != 0;
    let guards: Vec<VmaEntry> = mm.vmas.iter().filter(|v| is_guard(v)).cloned().collect();
    // Kept for the whole restore, every process's at once: no spare room
    // (the list as decoded grew by doubling).
    mm.vmas.retain(|v| !is_guard(v));
    mm.vmas.shrink_to_fit();
    let mut out = Vec::with_capacity(guards.len());
    for g in guards {
        let inside = covered(&mm.vmas, g.start, g.end);
        if g.start >= g.end || g.start % PAGE_SIZE != 0 || g.end % PAGE_SIZE != 0 || !inside {
            return Err(bad(
                dir,
                format!(
                    "mm image has a bad guard region {:#x}-{:#x}",
                    g.start, g.end
                ),
            ));
        }
        out.push((g.start, g.end));
    }
    Ok(out)
}

/// Is [start, end) covered by VMAs of `vmas` (sorted), back to back?
fn covered(vmas: &[VmaEntry], start: u64, end: u64) -> bool {
    let mut at = start;
    for v in vmas {
        if v.start <= at && at < v.end {
            at = v.end;
            if at >= end {
                return true;
            }
        }
    }
    false
}

/// Install the guard regions again (the memory around them is in place).
pub fn install_guards(r: &mut Remote<'_>, guards: &[(u64, u64)]) -> Result<(), Error> {
    for &(s, e) in guards {
        r.call(
            &format!("madvise({s:#x}-{e:#x}, MADV_GUARD_INSTALL)"),
            libc::SYS_madvise,
            [s, e - s, MADV_GUARD_INSTALL, 0, 0, 0],
        )?;
    }
    Ok(())
}
