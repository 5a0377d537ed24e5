//! Tracking the pages a task writes, without soft-dirty bits: the
//! foundation of incremental dumps (issue 15).
//!
//! [`start_tracking`] has the (seized) task create a userfaultfd, which
//! tracks the memory of the process that creates it, takes a copy with
//! pidfd_getfd and closes the task's own, so the task's fd table is as it
//! was. Through crust's copy it asks for asynchronous write-protection
//! (`UFFD_FEATURE_WP_ASYNC`: a write is never reported, the kernel lifts
//! the protection itself), registers the given ranges and protects them.
//! [`Tracker::take_dirty`] then asks `PAGEMAP_SCAN` for the pages written
//! since, protecting them again in the same walk. Dropping the tracker
//! closes the last descriptor: the kernel unregisters every range and
//! lifts the protection; nothing is left in the task.
//!
//! What it costs the task: one minor fault on the first write to each
//! page after each scan; the mappings' `VmFlags` in smaps show `uw` while
//! tracked. Mappings as the task sees them (maps, contents, protections)
//! do not change.

// The foundation of `pre-dump` and `dump --track-mem` (issue 15): their
// flows, which use it, come next; until then only its tests do.
#![allow(dead_code)]

use crate::util::{compel_err, sys_err};
use crate::Error;
use crust_compel::Task;
use crust_sys::mem::{pagemap_scan_written, PageRegion};
use crust_sys::uffd::{Uffd, CREATE_FLAGS, TRACKING_FEATURES};
use crust_sys::unix::{pidfd_getfd, pidfd_open};
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Regions one `PAGEMAP_SCAN` call may return.
const SCAN_BATCH: usize = 512;

/// The write tracking of one address space (one `mm`: a process and its
/// threads).
#[derive(Debug)]
pub struct Tracker {
    pid: i32,
    uffd: Uffd,
    /// `/proc/PID/pagemap`, for `PAGEMAP_SCAN`.
    pagemap: File,
    /// The ranges registered and protected, sorted, disjoint.
    tracked: Vec<Range<u64>>,
    /// The ranges registered and not protected yet.
    registered: Vec<Range<u64>>,
    /// The task's guard regions as walked once its memory was protected,
    /// if a run walked them (a pre-dump, for the next run: see
    /// `dump::predump::Chain::guards_now`).
    guards: Option<Vec<Range<u64>>>,
    /// The tracking of its shared anonymous memory objects' mappings.
    objects: Option<super::objtrack::ObjectWatch>,
}

/// Start tracking the writes to `ranges` (page-aligned, each within
/// mappings of the task: whole VMAs) of `task`'s address space. `task` is
/// seized and set up for remote syscalls (a syscall instruction chosen);
/// its fds are left as they were, and the caller cures it as after any
/// remote syscall. On error nothing is left: the task's descriptor is
/// closed and crust's copy dropped, which unregisters whatever was
/// registered. Transparent huge pages are tracked whole: a write to one
/// byte reports the 2 MiB page.
pub fn start_tracking(task: &mut Task, ranges: &[Range<u64>]) -> Result<Tracker, Error> {
    let pid = task.pid();
    let uffd = take_task_uffd(task)?;
    uffd.api(TRACKING_FEATURES).map_err(sys_err(
        pid,
        "asking userfaultfd for asynchronous write-protection (Linux 6.7+)",
    ))?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))
        .map_err(sys_err(pid, format!("opening /proc/{pid}/pagemap")))?;
    let mut tracker = Tracker {
        pid,
        uffd,
        pagemap,
        tracked: Vec::new(),
        registered: Vec::new(),
        guards: None,
        objects: None,
    };
    tracker.track(ranges)?;
    Ok(tracker)
}

/// userfaultfd(2) run in the task, the descriptor taken into crust and
/// closed in the task.
pub(super) fn take_task_uffd(task: &mut Task) -> Result<Uffd, Error> {
    let pid = task.pid();
    // User mode only: any task may make one, whatever
    // vm.unprivileged_userfaultfd says (asynchronous write-protection
    // resolves kernel-mode writes too).
    let fd = task
        .syscall(libc::SYS_userfaultfd, [CREATE_FLAGS, 0, 0, 0, 0, 0])
        .map_err(compel_err(pid))?;
    let taken = pidfd_open(pid)
        .and_then(|pidfd| pidfd_getfd(pidfd.as_fd(), fd as i32))
        .map_err(sys_err(
            pid,
            format!("taking the task's userfaultfd (fd {fd})"),
        ));
    // Whatever happened, the task's own copy goes: its fd table is left
    // as it was.
    task.syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0])
        .map_err(compel_err(pid))?;
    Ok(Uffd::from_fd(taken?))
}

impl Tracker {
    /// A tracker handed back by the keeper: the userfaultfd `fd` of
    /// process `pid`, with the ranges registered through it.
    pub fn from_kept(pid: i32, fd: OwnedFd, ranges: Vec<Range<u64>>) -> Result<Tracker, Error> {
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(sys_err(pid, format!("opening /proc/{pid}/pagemap")))?;
        Ok(Tracker {
            pid,
            uffd: Uffd::from_fd(fd),
            pagemap,
            tracked: merge(ranges),
            registered: Vec::new(),
            guards: None,
            objects: None,
        })
    }

    /// The tracking of the process's shared object mappings.
    pub fn objects(&self) -> Option<&super::objtrack::ObjectWatch> {
        self.objects.as_ref()
    }

    pub fn objects_mut(&mut self) -> Option<&mut super::objtrack::ObjectWatch> {
        self.objects.as_mut()
    }

    pub fn set_objects(&mut self, w: super::objtrack::ObjectWatch) {
        self.objects = Some(w);
    }

    pub fn take_objects(&mut self) -> Option<super::objtrack::ObjectWatch> {
        self.objects.take()
    }

    /// Note the task's guard regions, walked after its memory was
    /// protected (kept with the tracker by the keeper).
    pub fn set_guards(&mut self, guards: Vec<Range<u64>>) {
        self.guards = Some(guards);
    }

    /// The guard regions noted with [`Tracker::set_guards`].
    pub fn guards(&self) -> Option<&[Range<u64>]> {
        self.guards.as_deref()
    }

    /// The userfaultfd, to hand to the keeper.
    pub fn uffd(&self) -> BorrowedFd<'_> {
        self.uffd.as_fd()
    }

    /// The process whose memory is tracked.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The ranges tracked, sorted.
    pub fn tracked(&self) -> &[Range<u64>] {
        &self.tracked
    }

    /// Also track `ranges` (mappings made since tracking began): register
    /// and write-protect them. On error the ranges registered by this call
    /// are unregistered again. Only for a stopped task: see [`register`].
    ///
    /// [`register`]: Tracker::register
    pub fn track(&mut self, ranges: &[Range<u64>]) -> Result<(), Error> {
        let mut done: Vec<Range<u64>> = Vec::new();
        let result = ranges.iter().try_for_each(|r| {
            if r.start >= r.end {
                return Ok(());
            }
            self.register_one(r)?;
            done.push(r.clone());
            self.protect_one(r)
        });
        if result.is_err() {
            for r in &done {
                let _ = self.uffd.unregister(r.start, r.end - r.start);
            }
            return result;
        }
        self.tracked.extend(done);
        self.tracked = merge(std::mem::take(&mut self.tracked));
        Ok(())
    }

    /// Register `r` without protecting it yet: [`protect_registered`] does
    /// that later, while the task runs (it walks the page tables). Only
    /// while the task is stopped, with `r` made of whole mappings read
    /// while it is: registering part of a mapping splits it in two, and a
    /// running task's mappings may have moved since they were read. A
    /// split the task did not make can fail its own calls (an `mremap` of
    /// the whole old mapping gets EFAULT).
    ///
    /// [`protect_registered`]: Tracker::protect_registered
    pub fn register(&mut self, r: &Range<u64>) -> Result<(), Error> {
        if r.start >= r.end {
            return Ok(());
        }
        self.register_one(r)?;
        self.registered.push(r.clone());
        Ok(())
    }

    /// Write-protect what [`register`] registered, and track it. A range
    /// whose protection fails (its mapping unmapped or moved since) stays
    /// registered, which costs the task nothing, and untracked: it counts
    /// as written whole. Returns the errors, one per range.
    ///
    /// [`register`]: Tracker::register
    pub fn protect_registered(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        for r in std::mem::take(&mut self.registered) {
            match self.protect_one(&r) {
                Ok(()) => self.tracked.push(r),
                Err(e) => errors.push(e),
            }
        }
        self.tracked = merge(std::mem::take(&mut self.tracked));
        errors
    }

    fn register_one(&self, r: &Range<u64>) -> Result<(), Error> {
        self.uffd
            .register_wp(r.start, r.end - r.start)
            .map_err(|e| self.range_err("registering", r, e))
    }

    fn protect_one(&self, r: &Range<u64>) -> Result<(), Error> {
        self.uffd
            .write_protect(r.start, r.end - r.start, true)
            .map_err(|e| self.range_err("write-protecting", r, e))
    }

    fn range_err(&self, op: &str, r: &Range<u64>, e: std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::EBUSY) => " (EBUSY: the task uses userfaultfd there itself)",
            _ => "",
        };
        sys_err(
            self.pid,
            format!("{op} {:#x}-{:#x} for write tracking{hint}", r.start, r.end),
        )(e)
    }

    /// The pages of `ranges` written since the last call (since tracking
    /// began, the first time), protected again by the same scan: sorted,
    /// merged byte ranges. A part of `ranges` that is not tracked counts as
    /// written whole, and so does a tracked range whose mapping was
    /// replaced since (the kernel refuses to scan it): the answer may be
    /// too large, never too small.
    pub fn take_dirty(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Range<u64>>, Error> {
        let (inside, outside) = split_by(&merge(ranges.to_vec()), &self.tracked);
        let mut dirty = outside;
        for r in inside {
            self.scan(r, &mut dirty)?;
        }
        Ok(merge(dirty))
    }

    /// `PAGEMAP_SCAN` of one tracked range, adding what was written to
    /// `dirty`; a part that cannot be scanned counts as written.
    fn scan(&self, r: Range<u64>, dirty: &mut Vec<Range<u64>>) -> Result<(), Error> {
        match scan_written(&self.pagemap, r.clone(), dirty) {
            Ok(None) => Ok(()),
            Ok(Some(at)) => {
                // Give up on exactness, not on safety.
                dirty.push(at..r.end);
                Ok(())
            }
            Err(e) => Err(sys_err(
                self.pid,
                format!(
                    "PAGEMAP_SCAN of {:#x}-{:#x} for written pages",
                    r.start, r.end
                ),
            )(e)),
        }
    }
}

/// The written regions of `r` (`PAGEMAP_SCAN`, protected again by the
/// same walk), added to `dirty`. `Some(at)`: from `at` on the range could
/// not be scanned (not registered any more: unmapped and mapped anew; or
/// the walk made no progress); `None`: all of it was.
pub(super) fn scan_written(
    pagemap: &File,
    r: Range<u64>,
    dirty: &mut Vec<Range<u64>>,
) -> std::io::Result<Option<u64>> {
    let mut out = vec![PageRegion::default(); SCAN_BATCH];
    let mut at = r.start;
    while at < r.end {
        match pagemap_scan_written(pagemap, at, r.end, &mut out) {
            Ok((n, walk_end)) if walk_end > at => {
                dirty.extend(out.iter().take(n).map(|p| p.start..p.end));
                at = walk_end;
            }
            Ok(_) => return Ok(Some(at)),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(Some(at)),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `e` and its causes, for a log line (an error returned goes up with its
/// causes; one only logged would lose them).
pub fn with_causes(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Sort `ranges` and merge those that overlap or touch; empty ones go.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Split `ranges` (sorted, disjoint) into the parts inside `cover`
/// (sorted, disjoint) and the parts outside it.
pub fn split_by(ranges: &[Range<u64>], cover: &[Range<u64>]) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for r in ranges {
        let mut at = r.start;
        for c in cover.iter().filter(|c| c.end > r.start && c.start < r.end) {
            if c.start > at {
                outside.push(at..c.start);
            }
            let s = c.start.max(at);
            let e = c.end.min(r.end);
            inside.push(s..e);
            at = e;
        }
        if at < r.end {
            outside.push(at..r.end);
        }
    }
    (inside, outside)
}

#[cfg(test)]
#[path = "track_tests.rs"]
pub(crate) mod tests;
