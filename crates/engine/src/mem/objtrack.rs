//! Write tracking of shared anonymous memory objects (`mmap(MAP_SHARED |
//! MAP_ANONYMOUS)`, named or not), so that an incremental dump stores only
//! the pages of an object written since the parent set (issue 15).
//!
//! Such an object can be changed only through the mappings of the
//! processes that map it (memfds and System V segments can also be
//! written with `write(2)`, `shmat` by anyone: they are stored whole). So
//! its pages written since the parent set are the union, over every
//! mapper, of the pages written through that mapper's mappings, as long
//! as every mapper was tracked the whole time. Each mapper gets a second
//! userfaultfd, made in it and taken into crust as the private memory's
//! one is (`track.rs`), with asynchronous write-protection on its shared
//! mappings and three events the private memory's descriptor does without:
//!
//! - a **fork** (the child's mappings are not tracked: its writes would be
//!   lost if it exited before the next run): the child's descriptor is
//!   closed, and the objects of the forking process are stored whole at
//!   the next run;
//! - an **mremap** of a tracked mapping (the moved range is not the one
//!   noted): the same;
//! - an **madvise(MADV_REMOVE)** (the pages go from the object: they read
//!   as zeros, which no write shows) and `MADV_DONTNEED`: the range counts
//!   as written.
//!
//! Each event makes the task wait until it is read, so a thread reads
//! them as soon as they come, wherever the watch lives (a dump, the
//! keeper between runs). A written page whose page-table entry was
//! dropped since (reclaim, `MADV_DONTNEED`) has an empty entry; the scan
//! (`PAGEMAP_SCAN` asking only for written pages and protecting them
//! again) counts an empty entry as written, the protection of an entry
//! never written stays as a marker. The costs to the task: a minor fault
//! on the first write to a page after each run, a round trip to crust's
//! reader on each fork, mremap and madvise of a tracked mapping.
//!
//! Not seen: a write through `/proc/PID/map_files` (a descriptor opened
//! on the object by a privileged tool) and the writes of a process
//! outside the tree that maps the object.

use super::track::{scan_written, take_task_uffd};
use crate::util::sys_err;
use crate::Error;
use crust_compel::Task;
use crust_sys::uffd::{self, Msg, Uffd, OBJECT_TRACKING_FEATURES};
use log::debug;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A tracked mapping of an object: task addresses `addr`, object `ino`
/// from byte `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjRange {
    pub addr: Range<u64>,
    pub ino: u64,
    pub off: u64,
}

impl ObjRange {
    /// The object offsets of the task addresses `r` (clipped to this
    /// mapping), if any.
    fn offsets(&self, r: &Range<u64>) -> Option<Range<u64>> {
        let (s, e) = (r.start.max(self.addr.start), r.end.min(self.addr.end));
        (s < e).then(|| s - self.addr.start + self.off..e - self.addr.start + self.off)
    }
}

/// What the events said since the last run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// A fork, an mremap or an event not understood: this interval's
    /// answer is not to be trusted.
    pub broken: bool,
    /// Task addresses whose pages were dropped (`madvise`).
    pub removed: Vec<Range<u64>>,
}

impl Events {
    fn note(&mut self, m: Msg) {
        match m {
            Msg::Removed { start, end } => self.removed.push(start..end),
            // Asynchronous protection reports no fault.
            Msg::Fault { .. } => {}
            Msg::Forked | Msg::Remapped { .. } | Msg::Other(_) => self.broken = true,
        }
    }
}

/// The reader of a watch's events: a thread waiting on the descriptor; it
/// stops when the other end of its wake pipe closes.
#[derive(Debug)]
struct Reader {
    wake: OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

/// The write tracking of the shared object mappings of one process.
#[derive(Debug)]
pub struct ObjectWatch {
    pid: i32,
    uffd: Arc<Uffd>,
    pagemap: File,
    ranges: Vec<ObjRange>,
    /// Registered, not protected yet ([`ObjectWatch::protect`]).
    pending: Vec<ObjRange>,
    events: Arc<Mutex<Events>>,
    reader: Option<Reader>,
}

fn lock(e: &Mutex<Events>) -> MutexGuard<'_, Events> {
    e.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read whatever waits on `uffd` into `events` (the lock held across the
/// read: a message read is noted before anyone looks). An error breaks
/// the interval.
fn drain(uffd: &Uffd, events: &Mutex<Events>) -> bool {
    let mut ev = lock(events);
    match uffd.read_msgs() {
        Ok(msgs) => {
            let any = !msgs.is_empty();
            msgs.into_iter().for_each(|m| ev.note(m));
            any
        }
        Err(_) => {
            ev.broken = true;
            false
        }
    }
}

fn start_reader(pid: i32, uffd: &Arc<Uffd>, events: &Arc<Mutex<Events>>) -> Option<Reader> {
    let (rd, wake) = match crust_sys::pipe::pipe2(libc::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            debug!("{pid}: no reader for the object tracking's events ({e})");
            lock(events).broken = true;
            return None;
        }
    };
    let (u, ev) = (uffd.clone(), events.clone());
    let thread = std::thread::Builder::new()
        .name(format!("objwatch-{pid}"))
        .spawn(move || loop {
            // Never gives up (a task waits on every event until it is
            // read), never spins: a poll that says readable with nothing
            // to read, or fails, waits a little before the next one.
            let idle = || std::thread::sleep(std::time::Duration::from_millis(10));
            match uffd::wait_readable(&[u.as_fd(), rd.as_fd()], -1) {
                Ok(r) if r.get(1) == Some(&true) => break,
                Ok(r) if r.first() == Some(&true) => {
                    if !drain(&u, &ev) {
                        idle();
                    }
                }
                Ok(_) => {}
                Err(_) => idle(),
            }
        });
    match thread {
        Ok(thread) => Some(Reader { wake, thread }),
        Err(_) => {
            lock(events).broken = true;
            None
        }
    }
}

/// Start watching the object mappings `ranges` of `task` (seized, set up
/// for remote syscalls as for [`super::track::start_tracking`]). With
/// `protect` false they are only registered: [`ObjectWatch::protect`]
/// protects them later, once the task runs (the walk of their page
/// tables is then not part of a pause).
pub fn start_watch(
    task: &mut Task,
    ranges: &[ObjRange],
    protect: bool,
) -> Result<ObjectWatch, Error> {
    let pid = task.pid();
    let uffd = take_task_uffd(task)?;
    uffd.api(OBJECT_TRACKING_FEATURES).map_err(sys_err(
        pid,
        "asking userfaultfd for asynchronous write-protection with fork, mremap and madvise events",
    ))?;
    let mut w = ObjectWatch::new(pid, uffd, Vec::new(), Events::default())?;
    w.register(ranges);
    if protect {
        w.protect();
    }
    Ok(w)
}

impl ObjectWatch {
    fn new(
        pid: i32,
        uffd: Uffd,
        ranges: Vec<ObjRange>,
        events: Events,
    ) -> Result<ObjectWatch, Error> {
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(sys_err(pid, format!("opening /proc/{pid}/pagemap")))?;
        let uffd = Arc::new(uffd);
        let events = Arc::new(Mutex::new(events));
        let reader = start_reader(pid, &uffd, &events);
        Ok(ObjectWatch {
            pid,
            uffd,
            pagemap,
            ranges,
            pending: Vec::new(),
            events,
            reader,
        })
    }

    /// A watch handed back by the keeper.
    pub fn from_kept(
        pid: i32,
        fd: OwnedFd,
        ranges: Vec<ObjRange>,
        events: Events,
    ) -> Result<ObjectWatch, Error> {
        ObjectWatch::new(pid, Uffd::from_fd(fd), ranges, events)
    }

    /// Is the mapping `m` (read from maps now) one this watch tracks, at
    /// the same place in the same object?
    pub fn covers(&self, m: &crust_proc::MapEntry) -> bool {
        self.ranges.iter().any(|r| {
            r.ino == m.inode
                && r.addr.start <= m.start
                && m.end <= r.addr.end
                && r.off.checked_add(m.start - r.addr.start) == Some(m.offset)
        })
    }

    /// The mappings watched.
    pub fn ranges(&self) -> &[ObjRange] {
        &self.ranges
    }

    /// Register `ranges` (whole mappings, the task stopped) without
    /// protecting them: [`ObjectWatch::protect`] does. A range the kernel
    /// refuses is left out: its object is then stored whole.
    pub fn register(&mut self, ranges: &[ObjRange]) {
        for r in ranges {
            let (a, len) = (r.addr.start, r.addr.end - r.addr.start);
            match self.uffd.register_wp(a, len) {
                Ok(()) => self.pending.push(r.clone()),
                Err(e) => debug!(
                    "{}: object mapping {:#x}-{:#x} not tracked ({e}): its object is stored whole",
                    self.pid, r.addr.start, r.addr.end
                ),
            }
        }
    }

    /// Protect what [`ObjectWatch::register`] registered and track it; a
    /// range whose protection fails (unmapped or moved since) stays
    /// untracked (its object is stored whole).
    pub fn protect(&mut self) {
        for r in std::mem::take(&mut self.pending) {
            let (a, len) = (r.addr.start, r.addr.end - r.addr.start);
            match self.uffd.write_protect(a, len, true) {
                Ok(()) => {
                    // It replaces what was noted there (a mapping split
                    // or moved since).
                    let end = r.addr.end;
                    self.ranges.retain(|o| o.addr.end <= a || o.addr.start >= end);
                    self.ranges.push(r);
                }
                Err(e) => debug!(
                    "{}: object mapping {:#x}-{:#x} not protected ({e}): its object is stored whole",
                    self.pid, r.addr.start, r.addr.end
                ),
            }
        }
        self.ranges.sort_by_key(|r| r.addr.start);
    }

    /// Also watch `ranges` (whole mappings, the task stopped): registered
    /// and protected at once.
    pub fn watch(&mut self, ranges: &[ObjRange]) {
        self.register(ranges);
        self.protect();
    }

    /// The object pages written since the last call (by object: offset
    /// ranges, unsorted), protected again by the same scan, with the
    /// objects whose answer is not to be trusted (a fork or mremap since,
    /// a mapping gone or replaced): those are stored whole. Only while the
    /// task is stopped.
    pub fn take(&mut self) -> (HashMap<u64, Vec<Range<u64>>>, Vec<u64>) {
        let _ = drain(&self.uffd, &self.events);
        let ev = std::mem::take(&mut *lock(&self.events));
        let mut written: HashMap<u64, Vec<Range<u64>>> = HashMap::new();
        let mut whole: Vec<u64> = Vec::new();
        for r in &self.ranges {
            let mut hit = Vec::new();
            // Scanned even when broken: the protection is set again for
            // the next run.
            let scanned = scan_written(&self.pagemap, r.addr.clone(), &mut hit);
            if ev.broken || !matches!(scanned, Ok(None)) {
                whole.push(r.ino);
                continue;
            }
            hit.extend(ev.removed.iter().cloned());
            let offs = written.entry(r.ino).or_default();
            offs.extend(hit.iter().filter_map(|h| r.offsets(h)));
        }
        (written, whole)
    }

    /// Stop the reader and read what is left: (a copy of) the
    /// descriptor, the ranges and the events, for the keeper.
    pub fn into_parts(mut self) -> std::io::Result<(OwnedFd, Vec<ObjRange>, Events)> {
        self.stop_reader();
        let _ = drain(&self.uffd, &self.events);
        let ev = std::mem::take(&mut *lock(&self.events));
        let fd = self.uffd.as_fd().try_clone_to_owned()?;
        Ok((fd, std::mem::take(&mut self.ranges), ev))
    }

    fn stop_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            drop(r.wake);
            let _ = r.thread.join();
        }
    }
}

impl Drop for ObjectWatch {
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// The object mappings of `vmas` that can be tracked: mappings of shared
/// anonymous memory, shared (a private mapping of one does not write it).
pub fn object_ranges(vmas: &[super::Vma]) -> Vec<ObjRange> {
    vmas.iter()
        .filter(|v| v.map.shared && is_anon_object(&v.map) && !v.vm_flags.has("ht"))
        .map(|v| ObjRange {
            addr: v.map.start..v.map.end,
            ino: v.map.inode,
            off: v.map.offset,
        })
        .collect()
}

/// Is `m` a mapping of shared anonymous memory ("/dev/zero (deleted)" on
/// the internal shmem mount, or named with PR_SET_VMA_ANON_NAME)?
pub fn is_anon_object(m: &crust_proc::MapEntry) -> bool {
    use crust_proc::MapKind;
    match m.kind() {
        MapKind::AnonShmemNamed(_) => true,
        MapKind::File => {
            m.deleted && m.dev_major == 0 && m.path.as_deref() == Some(super::SHMEM_ANON_NAME)
        }
        _ => false,
    }
}

/// What an incremental dump stores of one shared object: the offsets
/// written since the parent set and those the parent set holds (sorted,
/// disjoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectSince {
    pub dirty: Vec<Range<u64>>,
    pub parent_has: Vec<Range<u64>>,
}

/// The objects of a dump stored against the parent set, by inode number;
/// an object not here is stored whole.
pub type ObjectsSince = HashMap<u64, ObjectSince>;

#[cfg(test)]
#[path = "objtrack_tests.rs"]
mod tests;
