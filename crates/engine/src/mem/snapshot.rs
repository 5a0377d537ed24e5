//! A point-in-time copy of a process's private memory taken while it runs
//! (`dump --leave-running`): the tree is frozen only to collect its state
//! and write-protect the pages to save; it then runs while crust copies
//! them.
//!
//! The protection is a userfaultfd in synchronous write-protect mode, made
//! in the task and moved to crust ([`take_uffd`]; the task's fd table is
//! left as it was). While frozen ([`prepare`]): the pagemap is scanned as
//! for any dump, every private anonymous VMA holding pages to save is
//! registered and the pages to save are write-protected; the pages of
//! memory that cannot be protected this way (private file mappings, the
//! vDSO, huge pages, a range the task registered with a userfaultfd of its
//! own) are copied at once, and shared memory objects are stored as
//! before. Once the tree runs ([`copy`]): a copier walks the pages in
//! address order, reading each piece and then lifting its protection; a
//! handler thread ([`serve`]) takes the task's write faults: the page is
//! copied first (kept aside, it replaces what the copier reads later),
//! then its protection lifted, which wakes the writer. A page is thus saved
//! before any write lands. Writes the kernel makes for the task
//! (`read(2)` into a protected page) fault the same way and wait: the
//! descriptor is not "user mode only".
//!
//! What cannot be followed fails the dump (the tree runs on): an `munmap`,
//! `madvise(MADV_DONTNEED)` or `mremap` of pages not yet saved (reported
//! by the userfaultfd's events), the task's exit, a read that fails.
//! If crust dies, the last descriptor closes: the kernel lifts every
//! protection and wakes whoever waits; the task runs on untouched.

use super::dump::{dump_objects, read_task_pages, scan_halves, ReadHook, ReadRun};
use super::pages::{PageOwner, PageSink, Run};
use super::{CowParent, PageCounts, Vma};
use crate::task::fdgift::give_fd;
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::consts::vma as vs;
use crust_sys::uffd::{self, Msg, Uffd};
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, info};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Make a full (not user-mode-only) userfaultfd in the task, take it into
/// crust and close it in the task. `userfaultfd(2)` first (a task with
/// CAP_SYS_PTRACE, or `vm.unprivileged_userfaultfd` = 1); else
/// `/dev/userfaultfd`, opened by crust and given to the task for the
/// `USERFAULTFD_IOC_NEW` ioctl. Errors: the caller copies while frozen.
pub fn take_uffd(r: &mut Remote<'_>) -> Result<Uffd, Error> {
    let pid = r.pid();
    let flags = uffd::SNAPSHOT_FLAGS;
    let fd = match r.call("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0]) {
        Ok(fd) => fd,
        Err(Error::Sys { .. }) => {
            let dev = uffd::open_dev().map_err(sys_err(pid, "opening /dev/userfaultfd"))?;
            let dfd = give_fd(r, dev.as_fd())?;
            let made = r.call(
                "ioctl(USERFAULTFD_IOC_NEW) on /dev/userfaultfd",
                libc::SYS_ioctl,
                [dfd, uffd::USERFAULTFD_IOC_NEW, flags, 0, 0, 0],
            );
            r.call("close", libc::SYS_close, [dfd, 0, 0, 0, 0, 0])?;
            made?
        }
        Err(e) => return Err(e),
    };
    let taken = crust_sys::unix::pidfd_open(pid)
        .and_then(|p| crust_sys::unix::pidfd_getfd(p.as_fd(), fd as i32))
        .map_err(sys_err(
            pid,
            format!("taking the task's userfaultfd (fd {fd})"),
        ));
    // Whatever happened, the task's own copy goes.
    r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    let u = Uffd::from_fd(taken?);
    u.api(uffd::SNAPSHOT_FEATURES).map_err(sys_err(
        pid,
        "asking userfaultfd for write-protection with unmap/remove/remap events",
    ))?;
    Ok(u)
}

/// Can the pages of `v` be write-protected synchronously (anonymous
/// private memory of base pages)?
fn protectable(v: &Vma) -> bool {
    v.dumps_pages()
        && v.status & vs::ANON_PRIVATE != 0
        && v.status & vs::FILE_PRIVATE == 0
        && !v.vm_flags.has("ht")
        && !v.vm_flags.has("uw")
        && !v.vm_flags.has("um")
        && !v.vm_flags.has("ui")
}

/// A process none of whose VMAs holds this much to protect is copied
/// while frozen: that takes about a millisecond, less than making its
/// userfaultfd, and a small helper that exits right after the thaw (a
/// container runtime's) does not fail the dump.
const SMALL: u64 = 4 << 20;

/// The moving part of a snapshot, shared by the copier and the handler.
#[derive(Default)]
struct State {
    /// Every protected page below this address is saved and unprotected.
    done_below: u64,
    /// Pages saved by the handler before the task wrote them, by address.
    early: BTreeMap<u64, Vec<u8>>,
    /// Why the snapshot can no longer be one moment.
    spoiled: Option<String>,
    /// Write faults taken.
    faults: u64,
}

/// One process's snapshot: its uffd, what is protected, what was copied
/// while frozen.
pub struct Snap {
    pid: i32,
    uffd: Uffd,
    mem: File,
    /// Pages write-protected, sorted, disjoint.
    protected: Vec<Range<u64>>,
    /// Pieces copied while frozen, by address.
    held: BTreeMap<u64, Vec<u8>>,
    state: Mutex<State>,
}

/// A process whose pages are protected, to copy once the tree runs.
pub struct Prepared {
    id: u64,
    pages_id: u32,
    entries: Vec<Run>,
    reads: Vec<ReadRun>,
    counts: PageCounts,
    snap: Snap,
}

/// The frozen part: scan the pagemap, protect what can be, copy the rest
/// and the shared memory objects into `sink`. None: too small to be worth
/// it. On error or None nothing is left protected (dropping `uffd` lifts
/// everything) and no page of the process was written: the caller copies
/// while frozen instead.
pub fn prepare(
    pid: i32,
    id: u64,
    sink: &dyn PageSink,
    vmas: &[Vma],
    pages_id: u32,
    parent: Option<CowParent<'_>>,
    uffd: Uffd,
) -> Result<Option<Prepared>, Error> {
    let t = std::time::Instant::now();
    let s = scan_halves(pid, vmas, &parent)?;
    let entries = s.entries();
    debug!(
        "{pid}: snapshot: pagemap scanned in {} us",
        t.elapsed().as_micros()
    );
    let big = vmas.iter().filter(|v| protectable(v)).any(|v| {
        let stored: u64 = (s.runs.iter())
            .filter(|x| x.addr >= v.map.start && x.addr < v.map.end)
            .map(|x| x.npages)
            .sum();
        stored * PAGE_SIZE >= SMALL
    });
    if !big {
        debug!(
            "{pid}: less than {} MiB to protect in any VMA: copied while frozen",
            SMALL >> 20
        );
        return Ok(None);
    }
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))?;
    let mut registered: Vec<Range<u64>> = Vec::new();
    for v in vmas.iter().filter(|v| protectable(v)) {
        let r = v.map.start..v.map.end;
        if !s
            .runs
            .iter()
            .any(|x| x.addr < r.end && x.addr + x.npages * PAGE_SIZE > r.start)
        {
            continue;
        }
        match uffd.register_wp(r.start, r.end - r.start) {
            Ok(()) => registered.push(r),
            Err(e) => debug!(
                "{pid}: {:#x}-{:#x} copied while frozen: {e}",
                r.start, r.end
            ),
        }
    }
    let (reads, protected) = split_runs(&s.runs, &registered);
    let mut held = BTreeMap::new();
    for r in reads.iter().filter(|r| !covered(&protected, r.addr)) {
        let mut buf = vec![0u8; (r.npages * PAGE_SIZE) as usize];
        read_piece(pid, &mem, r.addr, r.readable, &mut buf)?;
        held.insert(r.addr, buf);
    }
    debug!(
        "{pid}: snapshot: registered and held pieces read by {} us",
        t.elapsed().as_micros()
    );
    protect_halves(pid, &uffd, &protected)?;
    debug!(
        "{pid}: snapshot: protected by {} us",
        t.elapsed().as_micros()
    );
    let mut counts = s.counts;
    dump_objects(pid, sink, vmas, &mut counts, None)?;
    let n: u64 = protected
        .iter()
        .map(|p| (p.end - p.start) / PAGE_SIZE)
        .sum();
    debug!(
        "{pid}: snapshot: {n} pages write-protected in {} ranges, {} pieces copied while frozen",
        protected.len(),
        held.len()
    );
    Ok(Some(Prepared {
        id,
        pages_id,
        entries,
        reads,
        counts,
        snap: Snap {
            pid,
            uffd,
            mem,
            protected,
            held,
            state: Mutex::new(State::default()),
        },
    }))
}

/// Write-protect `ranges` on two threads, each about half of the pages
/// (the kernel's walk of the page tables is most of the frozen time; two
/// walks of one address space may run at once).
fn protect_halves(pid: i32, uffd: &Uffd, ranges: &[Range<u64>]) -> Result<(), Error> {
    let protect = |part: &[Range<u64>]| {
        part.iter().try_for_each(|p| {
            uffd.write_protect(p.start, p.end - p.start, true)
                .map_err(sys_err(
                    pid,
                    format!("write-protecting {:#x}-{:#x}", p.start, p.end),
                ))
        })
    };
    let (low, high) = halves(ranges);
    if high.is_empty() {
        return protect(&low);
    }
    std::thread::scope(|sc| {
        let h = sc.spawn(|| protect(&high));
        let low = protect(&low);
        let high = h.join().unwrap_or_else(|_| {
            Err(Error::Sys {
                pid,
                op: "write-protecting (the thread panicked)".to_string(),
                source: std::io::Error::other("panic"),
            })
        });
        low.and(high)
    })
}

/// Cut sorted, disjoint, page-aligned `ranges` into two lists of about
/// the same number of pages (the second empty under 16 MiB in all).
fn halves(ranges: &[Range<u64>]) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    if total < 16 << 20 {
        return (ranges.to_vec(), Vec::new());
    }
    let mut left = total / 2 / PAGE_SIZE * PAGE_SIZE;
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for r in ranges {
        let len = r.end - r.start;
        if left >= len {
            low.push(r.clone());
            left -= len;
        } else if left > 0 {
            low.push(r.start..r.start + left);
            high.push(r.start + left..r.end);
            left = 0;
        } else {
            high.push(r.clone());
        }
    }
    (low, high)
}

/// Cut the runs at the edges of `registered`: the reads (each wholly
/// inside or wholly outside), and the parts inside (to protect), merged.
fn split_runs(runs: &[ReadRun], registered: &[Range<u64>]) -> (Vec<ReadRun>, Vec<Range<u64>>) {
    let mut reads = Vec::new();
    let mut inside: Vec<Range<u64>> = Vec::new();
    for r in runs {
        let end = r.addr + r.npages * PAGE_SIZE;
        let mut at = r.addr;
        while at < end {
            let cut = match registered.iter().find(|g| g.end > at && g.start < end) {
                Some(g) if g.start <= at => {
                    let e = g.end.min(end);
                    match inside.last_mut() {
                        Some(l) if l.end == at => l.end = e,
                        _ => inside.push(at..e),
                    }
                    e
                }
                Some(g) => g.start,
                None => end,
            };
            reads.push(ReadRun {
                addr: at,
                npages: (cut - at) / PAGE_SIZE,
                ..*r
            });
            at = cut;
        }
    }
    (reads, inside)
}

/// Is `addr` inside one of `ranges` (sorted, disjoint)?
fn covered(ranges: &[Range<u64>], addr: u64) -> bool {
    let i = ranges.partition_point(|r| r.end <= addr);
    ranges.get(i).is_some_and(|r| r.start <= addr)
}

/// Read [addr, addr + buf.len()) of the task, whole.
fn read_piece(
    pid: i32,
    mem: &File,
    addr: u64,
    readable: bool,
    buf: &mut [u8],
) -> Result<(), Error> {
    let got = if readable {
        crust_sys::mem::read(pid, RemoteAddr(addr), buf)
    } else {
        mem.read_at(buf, addr)
    };
    match got {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(Error::Sys {
            pid,
            op: format!(
                "short read of task memory at {addr:#x} ({n} of {} bytes)",
                buf.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        }),
        Err(e) => Err(sys_err(pid, format!("reading task memory at {addr:#x}"))(e)),
    }
}

/// Test-only (`CRUST_FAULT=snapshot-late`): let the task write to a
/// protected range of 32 MiB or more without saving the page first, so
/// that the tests see a snapshot that is not one moment's fail its check
/// (stacks and heaps stay right: the program lives to say so).
fn late_on_purpose() -> bool {
    static LATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LATE.get_or_init(|| std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "snapshot-late"))
}

impl Snap {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is `addr` in a protected range of 32 MiB or more?
    fn in_big_range(&self, addr: u64) -> bool {
        let i = self.protected.partition_point(|r| r.end <= addr);
        self.protected
            .get(i)
            .is_some_and(|r| r.start <= addr && r.end - r.start >= 32 << 20)
    }

    /// Pages not yet saved in [start, end)?
    fn unsaved(&self, st: &State, start: u64, end: u64) -> bool {
        self.protected
            .iter()
            .any(|p| p.start < end && p.end > start && p.end > st.done_below)
    }

    /// One message of the task's userfaultfd.
    fn on_msg(&self, m: Msg) {
        let pid = self.pid;
        match m {
            Msg::Fault { addr, .. } => {
                let mut st = self.lock();
                st.faults += 1;
                if st.spoiled.is_none()
                    && !(late_on_purpose() && self.in_big_range(addr))
                    && addr >= st.done_below
                    && covered(&self.protected, addr)
                    && !st.early.contains_key(&addr)
                {
                    let mut page = vec![0u8; PAGE_SIZE as usize];
                    match read_piece(pid, &self.mem, addr, true, &mut page)
                        .or_else(|_| read_piece(pid, &self.mem, addr, false, &mut page))
                    {
                        Ok(()) => {
                            st.early.insert(addr, page);
                        }
                        Err(e) => st.spoiled = Some(format!("{e}")),
                    }
                }
                drop(st);
                // Wakes the writer.
                let _ = self.uffd.write_protect(addr, PAGE_SIZE, false);
            }
            Msg::Removed { start, end } => self.spoil_if(start, end, "unmapped or dropped"),
            Msg::Remapped { from, len, .. } => self.spoil_if(from, from + len, "moved (mremap)"),
            Msg::Other(e) => debug!("{pid}: userfaultfd event {e:#x} ignored"),
            // Not asked for on this descriptor.
            Msg::Forked => debug!("{pid}: userfaultfd fork event ignored"),
        }
    }

    fn spoil_if(&self, start: u64, end: u64, how: &str) {
        let mut st = self.lock();
        if st.spoiled.is_none() && self.unsaved(&st, start, end) {
            st.spoiled = Some(format!(
                "process {} {how} memory at {start:#x}-{end:#x} not yet saved during the copy",
                self.pid
            ));
        }
    }

    /// The error of a spoiled snapshot.
    fn check(&self) -> Result<(), Error> {
        match &self.lock().spoiled {
            None => Ok(()),
            Some(why) => Err(Error::Sys {
                pid: self.pid,
                op: format!(
                    "copying memory while the tree runs (dump -R): {why}; the tree runs on, \
                     dump it again"
                ),
                source: std::io::Error::from_raw_os_error(libc::EAGAIN),
            }),
        }
    }
}

impl ReadHook for Snap {
    fn held(&self, addr: u64, dst: &mut [u8]) -> bool {
        let Some((start, bytes)) = self.held.range(..=addr).next_back() else {
            return false;
        };
        let off = (addr - start) as usize;
        match bytes.get(off..off + dst.len()) {
            Some(src) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn after_read(&self, addr: u64, dst: &mut [u8]) -> Result<(), Error> {
        let end = addr + dst.len() as u64;
        {
            let mut st = self.lock();
            let saved: Vec<u64> = st.early.range(addr..end).map(|(a, _)| *a).collect();
            for a in saved {
                let off = (a - addr) as usize;
                if let (Some(page), Some(d)) = (
                    st.early.remove(&a),
                    dst.get_mut(off..off + PAGE_SIZE as usize),
                ) {
                    d.copy_from_slice(&page);
                }
            }
            st.done_below = st.done_below.max(end);
        }
        self.check()?;
        match self.uffd.write_protect(addr, end - addr, false) {
            // The process is gone (exited after this read): nothing is
            // left to unprotect.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(sys_err(
                self.pid,
                format!("unprotecting {addr:#x}-{end:#x}"),
            )),
        }
    }
}

/// Serve the write faults of every snapshot until `stop`.
pub fn serve(snaps: &[&Snap], stop: &AtomicBool) {
    let fds: Vec<_> = snaps.iter().map(|s| s.uffd.as_fd()).collect();
    while !stop.load(Ordering::Acquire) {
        let ready = match uffd::wait_readable(&fds, 20) {
            Ok(r) => r,
            Err(e) => {
                for s in snaps {
                    s.lock()
                        .spoiled
                        .get_or_insert(format!("poll on userfaultfds: {e}"));
                }
                return;
            }
        };
        for (s, _) in snaps.iter().zip(ready).filter(|(_, r)| *r) {
            match s.uffd.read_msgs() {
                Ok(msgs) => msgs.into_iter().for_each(|m| s.on_msg(m)),
                Err(e) => {
                    s.lock()
                        .spoiled
                        .get_or_insert(format!("reading the userfaultfd: {e}"));
                }
            }
        }
    }
}

impl Prepared {
    /// The counts of the frozen part (pages scanned, shared objects).
    pub fn counts(&self) -> PageCounts {
        self.counts
    }

    /// The snapshot, for [`serve`].
    pub fn snap(&self) -> &Snap {
        &self.snap
    }

    /// Copy the pages into `sink` while the task runs; the handler
    /// ([`serve`]) must be running. Returns the page counts.
    pub fn copy(&self, sink: &dyn PageSink) -> Result<PageCounts, Error> {
        if late_on_purpose() {
            // The task surely writes unsaved pages first, however busy the
            // machine (the test must see the late snapshot caught).
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let pid = self.snap.pid;
        let mut counts = self.counts;
        let mut out = sink.open(PageOwner::Task {
            id: self.id,
            pages_id: self.pages_id,
        })?;
        out.runs(&self.entries)?;
        counts.written = read_task_pages(pid, &self.reads, &mut *out, Some(&self.snap), false)?;
        self.snap.check()?;
        out.finish()?;
        let st = self.snap.lock();
        info!(
            "{pid}: {} pages copied while running, {} write faults taken",
            counts.written, st.faults
        );
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, npages: u64) -> ReadRun {
        ReadRun {
            addr,
            npages,
            readable: true,
            alone: false,
        }
    }

    #[test]
    fn halves_split_by_pages() {
        let m = 1u64 << 20;
        let (low, high) = halves(&[0..4 * m, 10 * m..30 * m, 40 * m..42 * m]);
        assert_eq!(low, vec![0..4 * m, 10 * m..19 * m]);
        assert_eq!(high, vec![19 * m..30 * m, 40 * m..42 * m]);
        let (low, high) = halves(&[0..m, 2 * m..3 * m]);
        assert_eq!((low, high), (vec![0..m, 2 * m..3 * m], vec![]));
    }

    #[test]
    fn runs_are_cut_at_registered_edges() {
        let p = PAGE_SIZE;
        let runs = [run(0, 4), run(6 * p, 4)];
        let reg = [2 * p..7 * p, 8 * p..20 * p];
        let (reads, inside) = split_runs(&runs, &reg);
        let got: Vec<(u64, u64)> = reads.iter().map(|r| (r.addr / p, r.npages)).collect();
        assert_eq!(got, vec![(0, 2), (2, 2), (6, 1), (7, 1), (8, 2)]);
        assert_eq!(inside, vec![2 * p..4 * p, 6 * p..7 * p, 8 * p..10 * p]);
        assert!(covered(&inside, 3 * p));
        assert!(!covered(&inside, 7 * p));
        assert!(!covered(&inside, 4 * p));
    }
}
