//! A large process's pages dumped in parts: its pagemap is scanned part by
//! part, low addresses first, on a thread of its own, and each part is
//! copied as soon as it is scanned, while the next ones are scanned. The
//! copy of 1 GiB starts after the scan of its first 4 MiB instead of after
//! the scan of all of it (30-40 ms).
//!
//! The images are the very ones one scan of the whole would give: each
//! part's runs are announced so that the stream ends with the same list
//! (the last run of a part and the first of the next are joined exactly
//! when one scan would have made them one run, see [`next_part`]). Only
//! for sinks that take runs in parts ([`PageSink::runs_in_parts`]: local
//! images), dumps that are not incremental (no parent image set) and
//! leave no pages on the source (`--lazy-pages`), and processes with
//! [`PARTS_FROM`] or more memory whose pages are stored; the others are
//! scanned whole first (`mem/dump.rs`).

use super::dump::{copy_pages, scan_window, CowParent, LazyMark, Scan, Todo};
use super::pages::{PageOwner, PageSink, Run};
use super::{PageCounts, Vma};
use crate::Error;
use crust_sys::PAGE_SIZE;
use log::debug;
use std::sync::mpsc::{sync_channel, SyncSender};

/// Memory whose pages are stored from which a dump goes in parts.
pub(super) const PARTS_FROM: u64 = 64 << 20;
/// The memory of the first part: the copy starts once it is scanned.
const PART_FIRST: u64 = 4 << 20;
/// Each next part has twice the memory of the one before, up to this
/// (or the memory over [`MOST_PARTS`] parts, if more: a reservation of
/// terabytes, mostly never touched, is not scanned in thousands of parts).
const PART_MAX: u64 = 256 << 20;
const MOST_PARTS: u64 = 32;
/// Parts scanned ahead of the copy at most.
const PARTS_AHEAD: usize = 4;

/// How the runs of one part are announced to the stream.
pub(super) enum Announce {
    /// With `PageStream::runs`: the first run continues the last one
    /// announced (the part's first run is the rest of that run).
    Continue(Vec<Run>),
    /// With `PageStream::runs_apart`.
    Apart(Vec<Run>),
}

/// One part, as scanned: the runs to announce, the runs to copy (in
/// address order, after those of the parts before), its counts.
pub(super) struct Part {
    pub(super) announce: Announce,
    pub(super) reads: Vec<super::dump::ReadRun>,
    pub(super) counts: PageCounts,
}

/// The addresses that cut the memory whose pages are stored into parts,
/// each with whether it falls inside a VMA; None under [`PARTS_FROM`].
/// (`CRUST_DUMP_PARTS=0`: never, for comparisons.)
pub(super) fn part_cuts(vmas: &[Vma]) -> Option<Vec<(u64, bool)>> {
    if std::env::var_os("CRUST_DUMP_PARTS").is_some_and(|v| v == "0") {
        return None;
    }
    let stored = || vmas.iter().filter(|v| v.dumps_pages());
    let total: u64 = stored().map(|v| v.map.end - v.map.start).sum();
    if total < PARTS_FROM {
        return None;
    }
    let most = PART_MAX.max(total / MOST_PARTS / PAGE_SIZE * PAGE_SIZE);
    let mut cuts = Vec::new();
    let mut size = PART_FIRST;
    // Memory still to go into the current part.
    let mut left = size;
    for v in stored() {
        let mut at = v.map.start;
        while v.map.end - at > left {
            at += left;
            cuts.push((at, at > v.map.start));
            size = (size * 2).min(most);
            left = size;
        }
        left -= v.map.end - at;
    }
    Some(cuts)
}

/// Dump the private pages of `pid` (owner `id`, pages file `pages_id`)
/// in parts cut at `cuts` (see the module's documentation), then the pages
/// of the shared memory objects it maps.
pub(super) fn dump_in_parts(
    pid: i32,
    (id, pages_id): (u64, u32),
    sink: &dyn PageSink,
    vmas: &[Vma],
    (parent, lazy): (&Option<CowParent<'_>>, Option<LazyMark<'_>>),
    cuts: Vec<(u64, bool)>,
) -> Result<PageCounts, Error> {
    let t = std::time::Instant::now();
    let mut out = sink.open(PageOwner::Task { id, pages_id })?;
    let nparts = cuts.len() + 1;
    let (tx, rx) = sync_channel(PARTS_AHEAD);
    let (copied, scanner) = std::thread::scope(|sc| {
        let scanner = sc.spawn(move || scan_parts(pid, (vmas, parent, lazy), &cuts, tx));
        let copied = copy_pages(pid, Todo::Parts(rx), &mut *out, None, false);
        (copied, scanner.join())
    });
    scanner.map_err(|_| Error::Sys {
        pid,
        op: "scanning the pagemap in parts (the thread panicked)".to_string(),
        source: std::io::Error::other("panic"),
    })?;
    let c = copied?;
    if c.parts != nparts || c.bytes != c.want {
        return Err(Error::Sys {
            pid,
            op: format!(
                "the dump in parts stopped after {} of {nparts} parts, {} of {} bytes",
                c.parts, c.bytes, c.want
            ),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        });
    }
    out.finish()?;
    let mut counts = c.counts;
    counts.written = c.bytes / PAGE_SIZE;
    debug!(
        "{pid}: {} pages scanned, {} written in {nparts} parts in {} us, {} zero pages left out, {} shared with the parent",
        counts.scanned,
        counts.written,
        t.elapsed().as_micros(),
        counts.zero,
        counts.cow,
    );
    super::dump::dump_objects(pid, sink, vmas, &mut counts, None)?;
    Ok(counts)
}

/// Scan the memory of `pid` part by part, low addresses first, sending
/// each part as it is scanned; stops at the first error (sent) or when
/// the copy is gone.
fn scan_parts(
    pid: i32,
    (vmas, parent, lazy): (&[Vma], &Option<CowParent<'_>>, Option<LazyMark<'_>>),
    cuts: &[(u64, bool)],
    tx: SyncSender<Result<Part, Error>>,
) {
    let mut tail = None;
    let (mut lo, mut inside) = (0, false);
    let ends = cuts
        .iter()
        .copied()
        .chain(std::iter::once((u64::MAX, false)));
    for (hi, cut_inside) in ends {
        let part = scan_window(pid, vmas, parent, None, lo..hi).and_then(|mut win| {
            if let Some(m) = lazy {
                win.mark_lazy(m);
            }
            next_part(&mut tail, win, inside)
        });
        let failed = part.is_err();
        if tx.send(part).is_err() || failed {
            return;
        }
        (lo, inside) = (hi, cut_inside);
    }
}

/// The part `win` (the scan of the memory right above the parts before)
/// makes. `tail`: the last runs of the parts before (what a scan joins
/// with the next), None before the first part; `inside`: the cut between
/// them falls inside a VMA. The stream then holds what one scan of all the
/// memory so far would announce: the last run announced grows by what
/// the join adds to it (announced to continue it), and the other runs
/// follow apart.
pub(super) fn next_part(tail: &mut Option<Scan>, win: Scan, inside: bool) -> Result<Part, Error> {
    let reads = win.runs.clone();
    let counts = win.counts;
    let Some(t) = tail.take() else {
        let announce = Announce::Apart(win.entries());
        *tail = Some(win.last_runs());
        return Ok(Part {
            announce,
            reads,
            counts,
        });
    };
    let before = t.entries();
    let joined = t.join(win, inside);
    let mut after = joined.entries();
    let announce = match before.split_last() {
        None => Announce::Apart(after),
        Some((last, same)) => {
            let k = same.len();
            let grown = after.get(k).copied().filter(|a| {
                after.get(..k) == Some(same)
                    && a.vaddr == last.vaddr
                    && a.flags == last.flags
                    && a.npages >= last.npages
            });
            let Some(grown) = grown else {
                return Err(Error::Unsupported {
                    what: format!(
                        "a part's scan does not follow the run {:#x}+{} before it (crust bug)",
                        last.vaddr, last.npages
                    ),
                });
            };
            let rest = after.split_off(k + 1);
            if grown.npages > last.npages {
                let more = Run {
                    vaddr: last.vaddr + last.npages * PAGE_SIZE,
                    npages: grown.npages - last.npages,
                    flags: last.flags,
                };
                Announce::Continue(std::iter::once(more).chain(rest).collect())
            } else {
                Announce::Apart(rest)
            }
        }
    };
    *tail = Some(joined.last_runs());
    Ok(Part {
        announce,
        reads,
        counts,
    })
}

#[cfg(test)]
#[path = "parts_tests.rs"]
mod tests;
