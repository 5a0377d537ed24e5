//! Copying stored pages into a stopped task: pread from a pages image and
//! process_vm_writev, on two crust threads.

use super::zpages::PagesFile;
use crate::util::sys_err;
use crate::Error;
use crust_sys::uffd::Uffd;
use crust_sys::uffd_missing::{FileWindow, Filled};
use crust_sys::{mem, RemoteAddr};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes one crust thread copies into the task at a time (1 GiB restored
/// in 0.29-0.39 s with 1 MiB, 0.31-0.35 s with 4 MiB, 0.28-0.33 s with
/// 256 KiB).
const FILL_CHUNK: u64 = 1 << 20;
/// crust threads that copy pages into the task.
const FILL_THREADS: usize = 2;
/// A process's fill of at most this many bytes is done on the thread that
/// submits it: handing it to a filler thread and waiting for it costs two
/// wakeups across CPUs (the builder is pinned to one, see restore/pin.rs),
/// tens of microseconds each on this VM, more than copying a few dozen
/// pages (a 300-process tree, 31 pages each: see docs/ARCHITECTURE.md).
const INLINE_MAX: u64 = 256 << 10;

/// Copies pages from pages images into stopped tasks on FILL_THREADS
/// threads of crust, for every process of a restore: while crust builds
/// the next process with remote syscalls, the memory of the ones before is
/// still being filled, and each process's pages are spread over the
/// threads in FILL_CHUNK pieces. A process's fill must be over
/// ([`Pending::wait`]) before its final protections are set and before it
/// begets a child that inherits its memory.
pub struct Filler {
    tx: Option<std::sync::mpsc::Sender<FillChunk>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

std::thread_local! {
    /// The buffers of the fills a building thread does itself (see
    /// [`INLINE_MAX`]): one set per thread, as a restore may build on two
    /// (restore/split.rs), each without waiting for the other.
    static INLINE: std::cell::RefCell<FillBufs> = std::cell::RefCell::new(FillBufs::default());
}

/// One thread's buffers for [`fill_chunk`].
#[derive(Default)]
struct FillBufs {
    buf: Vec<u8>,
    cur: Vec<u8>,
    open: OpenPages,
    mem: OpenMem,
}

struct FillChunk {
    pid: i32,
    path: std::sync::Arc<std::path::PathBuf>,
    addr: u64,
    len: u64,
    off: u64,
    /// Only the pages that differ from the task's are written (see
    /// [`write_differing`]).
    keep: bool,
    /// Put in with UFFDIO_COPY through the task's userfaultfd (the chunk
    /// lies in one of its registered ranges, see [`UffdFill`]).
    by_uffd: bool,
    done: std::sync::Arc<Pending>,
}

/// A userfaultfd of the task (taken by crust; user mode only, so that a
/// kernel access to a missing page of its ranges fails instead of
/// waiting) and the ranges registered with it in MISSING mode (sorted,
/// apart; each inside one fresh anonymous private mapping). Their pages
/// are put in with UFFDIO_COPY: the kernel allocates each page and copies
/// into it, where process_vm_writev would first fault in a zeroed page
/// (clear it, then copy) through the task's mmap lock.
pub struct UffdFill {
    pub uffd: Uffd,
    pub ranges: Vec<(u64, u64)>,
}

/// The fill of one process: chunks left, and the first error.
#[derive(Default)]
pub struct Pending {
    state: std::sync::Mutex<FillState>,
    cv: std::sync::Condvar,
    /// Pages left as the task had them (equal to the stored ones).
    kept: std::sync::atomic::AtomicU64,
    /// The task's userfaultfd while chunks are put in through it: closed
    /// (which unregisters its ranges) as the last chunk is over, before
    /// any waiter hears of it.
    uffd: std::sync::Mutex<Option<Arc<Uffd>>>,
}

#[derive(Default)]
struct FillState {
    /// Chunks not in yet.
    left: usize,
    /// The first error of a chunk.
    err: Option<Error>,
    /// The task addresses where the chunks not in yet start (how many
    /// start at each): [`Pending::wait_below`] waits until none is below
    /// an address.
    starts: std::collections::BTreeMap<u64, usize>,
}

impl Pending {
    /// A fill that is already over: `r` is the pages kept, or the error.
    pub fn finished_keeping(r: Result<u64, Error>) -> Pending {
        let p = Pending::default();
        match r {
            Ok(n) => p.kept.store(n, std::sync::atomic::Ordering::Relaxed),
            Err(e) => p.state.lock().unwrap_or_else(|p| p.into_inner()).err = Some(e),
        }
        p
    }

    /// Pages the fill left as the task had them (so far).
    pub fn kept(&self) -> u64 {
        self.kept.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The chunk that starts at task address `addr` is over (`r`: the
    /// pages it kept, or its error).
    fn done(&self, addr: u64, r: Result<u64, Error>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.left = g.left.saturating_sub(1);
        if g.left == 0 {
            // Every chunk has dropped its hold of it: this closes it.
            drop(self.uffd.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
        if let std::collections::btree_map::Entry::Occupied(mut e) = g.starts.entry(addr) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        match r {
            Ok(n) => {
                self.kept.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                g.err.get_or_insert(e);
            }
        }
        // Waiters of [`Pending::wait_below`] wait for any chunk.
        self.cv.notify_all();
    }

    /// Whether pages are still being put in through the task's
    /// userfaultfd: until the fill is over, a missing page of its ranges
    /// must not be faulted in by the kernel (mlock), which would fail.
    pub fn by_uffd(&self) -> bool {
        self.uffd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Wait until every chunk is in; the first error, if any.
    pub fn wait(&self) -> Result<(), Error> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while g.left > 0 {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        match g.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether every chunk that starts below task address `end` is in (a
    /// chunk that starts at or above it writes nothing below it: the
    /// memory below `end` is complete), or a chunk failed.
    pub fn in_below(&self, end: u64) -> bool {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.err.is_some() || g.starts.range(..end).next().is_none()
    }

    /// Wait until the memory below task address `end` is complete (see
    /// [`Pending::in_below`]). After a failed chunk, waits for every chunk
    /// and returns the first error, as [`Pending::wait`] does.
    pub fn wait_below(&self, end: u64) -> Result<(), Error> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while g.err.is_none() && g.starts.range(..end).next().is_some() {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.err.is_some() {
            drop(g);
            return self.wait();
        }
        Ok(())
    }
}

/// The fills from one pages file: the file, and (task address, bytes,
/// offset in the file) each.
pub type FileFills = (std::path::PathBuf, Vec<(u64, u64, u64)>);

impl Filler {
    pub fn new() -> Filler {
        let (tx, rx) = std::sync::mpsc::channel::<FillChunk>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..FILL_THREADS)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut b = FillBufs {
                        buf: vec![0u8; FILL_CHUNK as usize],
                        ..FillBufs::default()
                    };
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(c) = next else { return };
                        let r = fill_chunk(&c, &mut b);
                        c.done.done(c.addr, r);
                    }
                })
            })
            .collect();
        Filler {
            tx: Some(tx),
            workers,
        }
    }

    /// Queue the runs (task address, bytes, file offset) of each pages
    /// file (an image set's and its parents') for task `pid`; of the runs
    /// in `keep`, only the pages that differ from what the task holds are
    /// written. The pieces of `runs` inside the ranges of `uffd` are put
    /// in through it (UFFDIO_COPY); it is closed once they are all in.
    pub fn submit_files(
        &self,
        pid: i32,
        runs: &[FileFills],
        keep: &[FileFills],
        uffd: Option<UffdFill>,
    ) -> std::sync::Arc<Pending> {
        let done = std::sync::Arc::new(Pending::default());
        let mut chunks = Vec::new();
        let ranges = uffd.as_ref().map_or(&[][..], |u| &u.ranges[..]);
        let sets = runs.iter().map(|s| (s, false));
        for ((file, list), keep) in sets.chain(keep.iter().map(|s| (s, true))) {
            let path = std::sync::Arc::new(file.clone());
            for &(addr, total, off) in list {
                let pieces = if keep {
                    vec![(0, total, false)]
                } else {
                    by_range(addr, total, ranges)
                };
                for (from, to, by_uffd) in pieces {
                    let mut at = from;
                    while at < to {
                        let len = (to - at).min(FILL_CHUNK);
                        chunks.push(FillChunk {
                            pid,
                            path: path.clone(),
                            addr: addr + at,
                            len,
                            off: off + at,
                            keep,
                            by_uffd,
                            done: done.clone(),
                        });
                        at += len;
                    }
                }
            }
        }
        {
            let mut g = done.state.lock().unwrap_or_else(|p| p.into_inner());
            g.left = chunks.len();
            for c in &chunks {
                *g.starts.entry(c.addr).or_default() += 1;
            }
            if !chunks.is_empty() && chunks.iter().any(|c| c.by_uffd) {
                *done.uffd.lock().unwrap_or_else(|p| p.into_inner()) =
                    uffd.map(|u| Arc::new(u.uffd));
            }
        }
        let total: u64 = chunks.iter().map(|c| c.len).sum();
        crate::util::progress::pages_expected(total);
        if total <= INLINE_MAX {
            INLINE.with_borrow_mut(|b| {
                for c in chunks {
                    let r = fill_chunk(&c, b);
                    c.done.done(c.addr, r);
                }
                // Nothing of this task is kept open past its fill.
                b.open = None;
                b.mem = None;
            });
            return done;
        }
        if let Some(tx) = &self.tx {
            for c in chunks {
                if let Err(std::sync::mpsc::SendError(c)) = tx.send(c) {
                    c.done.done(
                        c.addr,
                        Err(Error::Restore {
                            pid,
                            what: "the page filler has stopped".into(),
                        }),
                    );
                }
            }
        }
        done
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The pieces of the run of `total` bytes at task address `addr`, cut at
/// the edges of `ranges` (sorted, apart): (from, to) offsets in the run,
/// and whether the piece lies inside one of them.
fn by_range(addr: u64, total: u64, ranges: &[(u64, u64)]) -> Vec<(u64, u64, bool)> {
    let end = addr + total;
    let mut out = Vec::new();
    let mut at = addr;
    // The first range that ends after the run starts.
    let first = ranges.partition_point(|&(_, e)| e <= at);
    for &(s, e) in ranges.get(first..).unwrap_or_default() {
        if s >= end {
            break;
        }
        if s > at {
            out.push((at - addr, s - addr, false));
            at = s;
        }
        let to = e.min(end);
        out.push((at - addr, to - addr, true));
        at = to;
    }
    if at < end {
        out.push((at - addr, end - addr, false));
    }
    out
}

/// The pages file a filler thread read last, kept open for the next chunk
/// of the same submission (many small runs: a pre-dump chain).
type OpenPages = Option<(std::sync::Arc<std::path::PathBuf>, PagesFile)>;

/// The /proc/PID/mem a thread read last, kept open for the next chunk of
/// the same fill (the [`Pending`] of the submission: a task's memory,
/// opened once it exists).
type OpenMem = Option<(std::sync::Arc<Pending>, std::fs::File)>;

/// Fill one chunk; returns the pages left as they were (`keep` chunks).
fn fill_chunk(c: &FillChunk, b: &mut FillBufs) -> Result<u64, Error> {
    let f = match b.open.take() {
        Some((p, f)) if std::sync::Arc::ptr_eq(&p, &c.path) => f,
        _ => PagesFile::open(&c.path)?,
    };
    b.buf.resize(b.buf.len().max(c.len as usize), 0);
    let buf = b
        .buf
        .get_mut(..c.len as usize)
        .ok_or_else(|| Error::Restore {
            pid: c.pid,
            what: format!("a fill chunk of {} bytes", c.len),
        })?;
    if c.by_uffd {
        let r = copy_chunk(c, &f, buf);
        b.open = Some((c.path.clone(), f));
        return r.map(|()| 0);
    }
    f.read_exact_at(buf, c.off)?;
    b.open = Some((c.path.clone(), f));
    crate::util::progress::pages_written(buf.len() as u64);
    if c.keep {
        let memf = match b.mem.take() {
            Some((p, f)) if std::sync::Arc::ptr_eq(&p, &c.done) => f,
            _ => open_mem(c.pid)?,
        };
        let r = write_differing(c.pid, &memf, c.addr, buf, &mut b.cur);
        b.mem = Some((c.done.clone(), memf));
        return r;
    }
    write_all(c.pid, c.addr, buf)?;
    Ok(0)
}

/// /proc/PID/mem of task `pid`, for [`write_differing`].
fn open_mem(pid: i32) -> Result<std::fs::File, Error> {
    std::fs::File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))
}

/// Put chunk `c` in through the task's userfaultfd: from a window of a
/// plain pages file straight from the page cache, else read into `buf`
/// first (a compressed file).
fn copy_chunk(c: &FillChunk, f: &PagesFile, buf: &mut [u8]) -> Result<(), Error> {
    let uffd = c
        .done
        .uffd
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let uffd = uffd.ok_or_else(|| Error::Restore {
        pid: c.pid,
        what: format!(
            "its userfaultfd was closed before the fill at {:#x}",
            c.addr
        ),
    })?;
    let len = buf.len();
    crate::util::progress::pages_written(len as u64);
    if let PagesFile::Plain(file, _) = f {
        let window = c
            .off
            .is_multiple_of(crust_sys::PAGE_SIZE)
            .then(|| FileWindow::map(std::os::fd::AsFd::as_fd(file), c.off, len).ok())
            .flatten();
        if let Some(w) = window {
            return copy_all(c.pid, c.addr, len, |at, n| {
                uffd.copy_window(c.addr + at as u64, &w, at, n)
            });
        }
    }
    f.read_exact_at(buf, c.off)?;
    copy_all(c.pid, c.addr, len, |at, n| {
        uffd.copy(c.addr + at as u64, buf.get(at..at + n).unwrap_or_default())
    })
}

/// UFFDIO_COPY of `len` bytes at `addr` of task `pid` (a registered range
/// whose pages are missing): `copy(at, n)` copies the `n` bytes from `at`
/// on.
fn copy_all(
    pid: i32,
    addr: u64,
    len: usize,
    copy: impl Fn(usize, usize) -> Filled,
) -> Result<(), Error> {
    let mut at = 0usize;
    // EAGAIN: the address space was changing; a few more tries.
    let mut tries = 0;
    while at < len {
        let rest = len - at;
        let dst = addr + at as u64;
        let failed = |err: i32| Error::Sys {
            pid,
            op: format!("UFFDIO_COPY at {dst:#x} ({rest} bytes)"),
            source: std::io::Error::from_raw_os_error(err),
        };
        match copy(at, rest) {
            Filled::Done { n, stopped: None } if n as usize == rest => return Ok(()),
            Filled::Done { n, stopped } => {
                at += n as usize;
                match stopped {
                    Some(libc::EAGAIN) if tries < 100 => tries += 1,
                    Some(e) => return Err(failed(e)),
                    None => return Err(failed(libc::EIO)),
                }
            }
            Filled::Gone => return Err(failed(libc::ESRCH)),
        }
    }
    Ok(())
}

/// process_vm_writev of all of `bytes` at `addr` of task `pid`.
fn write_all(pid: i32, addr: u64, bytes: &[u8]) -> Result<(), Error> {
    let w = mem::write(pid, RemoteAddr(addr), bytes)
        .map_err(sys_err(pid, format!("process_vm_writev at {addr:#x}")))?;
    if w != bytes.len() {
        return Err(Error::Sys {
            pid,
            op: format!(
                "short process_vm_writev at {addr:#x} ({w} of {} bytes)",
                bytes.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        });
    }
    Ok(())
}

/// Put `bytes` (whole pages) at `addr` of task `pid`, writing only the
/// pages that differ from what the task holds there: a task that started
/// as a copy of its parent keeps the parent's page, shared copy-on-write,
/// wherever the stored page equals it (as CRIU restores a child's
/// memory). The task's pages are read through `memf`, its /proc/PID/mem
/// (opened once per fill), which does not pin them: process_vm_readv pins, and pinning an anonymous page
/// shared copy-on-write gives the task a copy of its own. `cur` is a
/// buffer to reuse. Returns the pages kept.
pub(crate) fn write_differing(
    pid: i32,
    memf: &std::fs::File,
    addr: u64,
    bytes: &[u8],
    cur: &mut Vec<u8>,
) -> Result<u64, Error> {
    let page = crust_sys::PAGE_SIZE as usize;
    cur.resize(bytes.len(), 0);
    let n = memf
        .read_at(cur, addr)
        .map_err(sys_err(pid, format!("read /proc/PID/mem at {addr:#x}")))?;
    if n != bytes.len() {
        return Err(Error::Sys {
            pid,
            op: format!(
                "short read of /proc/PID/mem at {addr:#x} ({n} of {} bytes)",
                bytes.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        });
    }
    let npages = bytes.len() / page;
    let mut kept = 0u64;
    // The first page of a run of pages that differ, written as one.
    let mut start: Option<usize> = None;
    for i in 0..=npages {
        let at = i * page..(i + 1) * page;
        // Past the end counts as equal: it closes the last run.
        let same = match (bytes.get(at.clone()), cur.get(at)) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        if same && i < npages {
            kept += 1;
        }
        match (start, same) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                let run = bytes.get(s * page..i * page).unwrap_or_default();
                write_all(pid, addr + (s * page) as u64, run)?;
                start = None;
            }
            _ => {}
        }
    }
    Ok(kept)
}

/// Copy pages from the image file into the stopped task with
/// process_vm_writev from FILL_THREADS crust threads, FILL_CHUNK bytes at
/// a time (pread from the file into a buffer, then into the task). Each
/// item is (task address, bytes, offset in the file); the target ranges
/// are mapped read-write by now.
///
/// crust copies them itself rather than with a pread64 inside the task: on
/// a fresh mapping most of the cost is faulting the pages in, and this
/// spreads the faults over the CPUs (a remote pread64 faults them all on
/// one). Measured on 1 GiB: 0.50 s with a remote pread64, 0.30 s this way
/// (see docs/ARCHITECTURE.md).
pub(crate) fn fill_vm_writev(
    pid: i32,
    pages_path: &Path,
    runs: &[(u64, u64, u64)],
) -> Result<(), Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut chunks: Vec<(u64, u64, u64)> = Vec::new();
    for &(addr, total, off) in runs {
        let mut done = 0;
        while done < total {
            let n = (total - done).min(FILL_CHUNK);
            chunks.push((addr + done, n, off + done));
            done += n;
        }
    }
    let next = AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let worker = || -> Result<(), Error> {
        let f = PagesFile::open(pages_path)?;
        let mut buf = vec![0u8; FILL_CHUNK as usize];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(addr, n, off)) = chunks.get(i) else {
                return Ok(());
            };
            let b = &mut buf[..n as usize];
            f.read_exact_at(b, off)?;
            let w = mem::write(pid, RemoteAddr(addr), b)
                .map_err(sys_err(pid, format!("process_vm_writev at {addr:#x}")))?;
            if w != b.len() {
                return Err(Error::Sys {
                    pid,
                    op: format!("short process_vm_writev at {addr:#x} ({w} of {n} bytes)"),
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                });
            }
            crate::util::progress::pages_written(n);
        }
    };
    let total: u64 = chunks.iter().map(|c| c.1).sum();
    crate::util::progress::pages_expected(total);
    if total <= FILL_CHUNK {
        // Not worth a thread.
        return worker();
    }
    std::thread::scope(|s| {
        for _ in 0..FILL_THREADS {
            s.spawn(|| {
                if let Err(e) = worker() {
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    g.get_or_insert(e);
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The `keep` runs of [`Filler::submit`] (task address, bytes, offset in
/// the pages file), done on this thread: only the pages that differ from
/// the task's are written. Returns the pages kept.
pub(crate) fn fill_keeping(
    pid: i32,
    pages_path: &Path,
    runs: &[(u64, u64, u64)],
) -> Result<u64, Error> {
    if runs.is_empty() {
        return Ok(0);
    }
    let f = PagesFile::open(pages_path)?;
    let memf = open_mem(pid)?;
    let (mut buf, mut cur) = (Vec::new(), Vec::new());
    let mut kept = 0;
    for &(addr, total, off) in runs {
        let mut done = 0;
        while done < total {
            let n = (total - done).min(FILL_CHUNK);
            buf.resize(n as usize, 0);
            f.read_exact_at(&mut buf, off + done)?;
            kept += write_differing(pid, &memf, addr + done, &buf, &mut cur)?;
            done += n;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill of chunks starting at `starts`, none in yet.
    fn pending(starts: &[u64]) -> Pending {
        let p = Pending::default();
        {
            let mut g = p.state.lock().unwrap();
            g.left = starts.len();
            for &a in starts {
                *g.starts.entry(a).or_default() += 1;
            }
        }
        p
    }

    #[test]
    fn runs_are_cut_at_the_edges_of_registered_ranges() {
        let ranges = [(0x2000, 0x4000), (0x6000, 0x7000), (0x9000, 0xa000)];
        assert_eq!(
            by_range(0x1000, 0x7000, &ranges),
            vec![
                (0, 0x1000, false),
                (0x1000, 0x3000, true),
                (0x3000, 0x5000, false),
                (0x5000, 0x6000, true),
                (0x6000, 0x7000, false),
            ]
        );
        assert_eq!(by_range(0x2000, 0x1000, &ranges), vec![(0, 0x1000, true)]);
        assert_eq!(by_range(0xb000, 0x1000, &ranges), vec![(0, 0x1000, false)]);
        assert_eq!(by_range(0x1000, 0x1000, &[]), vec![(0, 0x1000, false)]);
    }

    #[test]
    fn memory_below_an_address_is_in_once_its_chunks_are() {
        let p = pending(&[0x1000, 0x5000, 0x5000]);
        assert!(p.in_below(0x1000));
        assert!(!p.in_below(0x1001));
        p.done(0x1000, Ok(0));
        assert!(p.in_below(0x5000));
        assert!(p.wait_below(0x5000).is_ok());
        p.done(0x5000, Ok(1));
        // One of the two chunks at 0x5000 is still out.
        assert!(!p.in_below(0x6000));
        p.done(0x5000, Ok(2));
        assert!(p.in_below(u64::MAX));
        assert!(p.wait().is_ok());
        assert_eq!(p.kept(), 3);
    }

    #[test]
    fn a_failed_chunk_ends_the_wait_with_its_error() {
        let p = std::sync::Arc::new(pending(&[0x1000, 0x9000]));
        // Below 0x1000 nothing is waited for.
        assert!(p.wait_below(0x1000).is_ok());
        let q = p.clone();
        let t = std::thread::spawn(move || {
            q.done(
                0x9000,
                Err(Error::Restore {
                    pid: 1,
                    what: "boom".into(),
                }),
            );
            q.done(0x1000, Ok(0));
        });
        // The error comes once every chunk is over.
        assert!(p.wait_below(0x2000).is_err());
        t.join().unwrap();
    }
}
