//! The lazy-pages daemon (`crust lazy-pages`): takes the userfaultfds of a
//! lazily restored tree from the restore, puts each page in when a thread
//! touches it (`UFFDIO_COPY` from the images, a zero page where nothing was
//! stored), copies the rest in the background, and follows the processes'
//! forks, `mremap`s, `MADV_DONTNEED`s, `munmap`s and exits. It ends once
//! every page is in or every process is gone.
//!
//! A guard process ([`super::guard`]) holds a copy of every userfaultfd:
//! if the daemon dies before the end, the tree is killed rather than left
//! to run with empty pages (a userfaultfd whose last holder closes it
//! lets waiting threads on, with zero pages).

use super::guard::Guard;
use super::iovs::Iovs;
use super::remote::{PageOrigin, Pages, Sources, REMOTE};
use super::{GO, HELLO, NOT_ALL_TRACED, RESTORE_FINISHED, SOCKET_NAME, TRACED};
use crate::util::sys_err;
use crate::{Error, Options};
use crust_sys::uffd::Uffd;
use crust_sys::uffd_missing::{poll, Event, Filled};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
/// Bytes put in at a fault: the page touched and those after it in the
/// same piece (most accesses go on forward).
const FAULT_CHUNK: u64 = 64 << 10;
/// Bytes of one background copy: a fault waits at most for one.
const PREFETCH_CHUNK: u64 = 1 << 20;

/// What the daemon did.
#[derive(Debug, Default, Clone)]
pub struct DaemonStats {
    /// Processes handled (restored ones and their forked children).
    pub tasks: usize,
    pub faults: u64,
    pub pages_on_fault: u64,
    pub pages_prefetched: u64,
    pub zero_pages: u64,
    /// Microseconds from the end of the restore's hand-over to the first
    /// fault, and to the last page in.
    pub first_fault_us: Option<u64>,
    pub all_in_us: Option<u64>,
}

/// What one `UFFDIO_COPY` did.
enum Copied {
    /// Bytes put in, and whether a pending event stopped it (EAGAIN).
    Done(u64, bool),
    /// Nothing: part of the range is not registered memory (ENOENT).
    Unregistered,
}

/// One process served.
struct Served {
    /// Its pid in the images (-1: a child forked since the restore).
    pid: i32,
    uffd: Uffd,
    iovs: Iovs,
    pages: Rc<Pages>,
    /// Faults read but not served yet (an event was pending: EAGAIN).
    waiting: Vec<u64>,
    gone: bool,
}

/// Run the daemon for the images in `opts.images_dir`, listening in
/// `opts.work_dir()`. `ready` is called once the socket listens.
pub fn serve(opts: &Options, ready: &mut dyn FnMut()) -> Result<DaemonStats, Error> {
    let me = crust_sys::process::getpid();
    let path = opts.work_dir().join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(sys_err(me, format!("listening on {}", path.display())))?;
    let mut guard = Guard::start()?;
    // After the guard's fork: the guard holds no copy of the connection.
    let sources = Sources::open(opts)?;
    let mut loaded = preload(opts, &sources);
    ready();
    log::info!("lazy-pages: waiting for the restore on {}", path.display());
    let (conn, _) = listener
        .accept()
        .map_err(sys_err(me, format!("accepting on {}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    log::info!("lazy-pages: the restore connected");
    // crust's restore waits for it (CRIU's reads nothing).
    let _ = crust_sys::unix::send(conn.as_fd(), &[HELLO], None, libc::MSG_NOSIGNAL);
    // The restore lets the tree run once told GO (or when this connection
    // closes): on a failure it is closed only after the guard killed the
    // tree.
    let mut conn = Some(conn.into());
    let result = run(opts, (&mut conn, &mut loaded), &mut guard, &sources);
    // Every page in: the source may let its tree go. It has answered a
    // request already (`commit`): it never thaws its tree again, so a
    // close lost now leaves one tree, the complete one here.
    // CRUST_LAZY_TEST_LOSE_CLOSE (e2e lazy-remote-close-lost): the close
    // is lost on the way, the connection just ends.
    let lose = std::env::var_os("CRUST_LAZY_TEST_LOSE_CLOSE").is_some();
    let result = result.inspect(|_| {
        if lose {
            log::warn!("lazy-pages: CRUST_LAZY_TEST_LOSE_CLOSE: PS_IOV_CLOSE not sent");
        } else if let Err(e) = sources.close() {
            log::warn!(
                "lazy-pages: every page is in, but the source did not confirm the end ({e}): \
                 it kills its tree all the same once the connection is gone"
            );
        }
    });
    match &result {
        Ok(_) => guard.done(),
        // The tree cannot be complete: the guard kills it.
        Err(_) => guard.kill_tree(),
    }
    drop(conn);
    result
}

/// Before the restored tree may run, with a source (`--page-server`):
/// the point of no return of the migration (the rule in `dump/lazy.rs`).
/// The first piece whose bytes are on the source is put in, its request
/// answered: from then on the source never thaws its tree. Without such
/// a piece the source is told PS_IOV_CLOSE at once. An error here: the
/// source's tree runs on there, the restored one is killed before it ran.
fn commit(tasks: &mut [Served], sources: &Sources) -> Result<(), Error> {
    if !sources.remote() {
        return Ok(());
    }
    for t in tasks.iter_mut().filter(|t| !t.gone) {
        if let Some(addr) = t.iovs.first_where(|off| off & REMOTE != 0) {
            t.copy(addr, PAGE, None)?;
            log::info!("lazy-pages: the source answered the first request: the tree is ours now");
            return Ok(());
        }
    }
    log::info!("lazy-pages: no page to take from the source: telling it so before the tree runs");
    sources.close()
}

fn run(
    opts: &Options,
    (conn, loaded): (&mut Option<OwnedFd>, &mut Loaded),
    guard: &mut Guard,
    sources: &Sources,
) -> Result<DaemonStats, Error> {
    let me = crust_sys::process::getpid();
    let mut tasks: Vec<Served> = Vec::new();
    let mut stats = DaemonStats::default();
    let mut t0: Option<Instant> = None;
    // CRUST_LAZY_PREFETCH=0 (tests): no background copy but one page per
    // idle second, so pages come in at faults and exits are still seen.
    let background = std::env::var("CRUST_LAZY_PREFETCH").map_or(true, |v| v != "0");
    let mut shown = Instant::now();
    loop {
        if shown.elapsed() >= Duration::from_millis(100) {
            // The progress line's total: what is in plus what is left.
            crate::util::progress::pages_to_come(tasks.iter().map(|t| t.iovs.bytes()).sum());
            shown = Instant::now();
        }
        if conn.is_none() && tasks.iter().all(|t| t.done()) {
            break;
        }
        let left = t0.is_some() && tasks.iter().any(|t| !t.gone && !t.iovs.is_empty());
        // The background copy waits until the tree runs (crust's restore
        // said so, or CRIU's closed the connection): until then it would
        // only take CPU from the restore's last steps.
        let prefetch = left && background && conn.is_none();
        let mut fds: Vec<(std::os::fd::BorrowedFd<'_>, i16)> = tasks
            .iter()
            .map(|t| (t.uffd.as_fd(), libc::POLLIN))
            .collect();
        if let Some(c) = &conn {
            fds.push((c.as_fd(), libc::POLLIN));
        }
        let rev = poll(&fds, if prefetch { 0 } else { 1000 })
            .map_err(sys_err(me, "poll of the userfaultfds"))?;
        drop(fds);
        let from_restore = conn.is_some() && rev.last().is_some_and(|&r| r != 0);
        match conn.as_ref() {
            Some(_) if from_restore && t0.is_some() => tree_released(conn, guard),
            Some(c) if from_restore => match receive(opts, c, guard, (sources, loaded))? {
                Received::Task(t) => {
                    stats.tasks += 1;
                    tasks.push(t);
                }
                Received::Finished => {
                    restore_finished(c, &mut tasks, guard, sources)?;
                    t0 = Some(Instant::now());
                }
                Received::Nothing => {}
            },
            _ => {}
        }
        let mut busy = false;
        let mut born = Vec::new();
        for (t, r) in tasks.iter_mut().zip(rev.iter()) {
            if *r != 0 || !t.waiting.is_empty() {
                busy |= t.events(&mut stats, &mut born, t0)?;
            }
        }
        for child in born {
            guard.hold(&child.uffd, None);
            stats.tasks += 1;
            tasks.push(child);
        }
        if !busy && prefetch {
            if let Some(t) = tasks.iter_mut().find(|t| !t.gone && !t.iovs.is_empty()) {
                stats.pages_prefetched += t.prefetch(PREFETCH_CHUNK)?;
            }
        } else if left && !background && rev.iter().all(|&r| r == 0) {
            for t in tasks.iter_mut().filter(|t| !t.gone && !t.iovs.is_empty()) {
                stats.pages_prefetched += t.prefetch(PAGE)?;
            }
        }
    }
    stats.all_in_us = t0.map(|t| t.elapsed().as_micros() as u64);
    log::info!(
        "lazy-pages: done: {} processes, {} faults ({} pages), {} pages in the background, {} zero pages",
        stats.tasks,
        stats.faults,
        stats.pages_on_fault,
        stats.pages_prefetched,
        stats.zero_pages
    );
    Ok(stats)
}

/// The restore has sent every process: the guard learns the tree, the
/// pieces are cut to the registered memory, the migration commits, and
/// the restore is told it may let the tree go ([`GO`]). crust's restore
/// says when it did ([`tree_released`]).
fn restore_finished(
    c: &OwnedFd,
    tasks: &mut [Served],
    guard: &mut Guard,
    sources: &Sources,
) -> Result<(), Error> {
    log::info!("lazy-pages: the restore is finished");
    let tree = tree_of(c);
    guard.tree(&tree);
    trim_to_registered(tasks, &tree);
    commit(tasks, sources)?;
    // CRIU's restore does not read it (it may have closed already).
    let _ = crust_sys::unix::send(c.as_fd(), &[GO], None, libc::MSG_NOSIGNAL);
    Ok(())
}

/// The restore let the tree go ([`super::RELEASED`]), or went away (CRIU's
/// restore, or crust's failed and killed the tree): the guard becomes the
/// tree's tracer, the restore hears whether it traces every task, and the
/// connection closes.
fn tree_released(conn: &mut Option<OwnedFd>, guard: &mut Guard) {
    let Some(c) = conn.take() else { return };
    let mut word = [0u8; 1];
    let _ = crust_sys::unix::recvmsg(c.as_fd(), &mut word, libc::MSG_DONTWAIT);
    let all = guard.trace();
    if all {
        log::info!("lazy-pages: the guard traces the tree");
    } else {
        log::warn!("lazy-pages: the guard does not trace every task of the tree: killing the daemon and the guard together may let those run on zero pages");
    }
    let answer = if all { TRACED } else { NOT_ALL_TRACED };
    let _ = crust_sys::unix::send(c.as_fd(), &[answer], None, libc::MSG_NOSIGNAL);
}

/// The host pids of the tree the restore at the other end of `conn` made
/// (its descendants; every task is still stopped under it).
fn tree_of(conn: &OwnedFd) -> Vec<i32> {
    let Ok((restore, _, _)) = crust_sys::unix::peer_cred(conn.as_fd()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut todo = super::guard::children(restore);
    while let Some(p) = todo.pop() {
        if p > 0 && !out.contains(&p) {
            out.push(p);
            todo.extend(super::guard::children(p));
        }
    }
    out
}

/// Cut each process's pieces to the memory registered with its
/// userfaultfd ("um" in its smaps): the restore fills some lazy VMAs at
/// once (VMAs kept from the parent, rseq pages) and does not register
/// them, and a copy there would fail. `tree`: the host pids, every task
/// still stopped under crust's restore (a VMA that moved after this read
/// would be missed; CRIU's restore does not wait for the daemon). A
/// process not found, or with nothing registered, keeps its pieces: a
/// copy outside registered memory is then dropped page by page.
fn trim_to_registered(tasks: &mut [Served], tree: &[i32]) {
    let root = crust_proc::ProcRoot::default();
    for &host in tree {
        let Ok(st) = crust_proc::status(&root, host) else {
            continue;
        };
        let pid = st.ns_pid.last().copied().unwrap_or(host);
        let Some(t) = tasks.iter_mut().find(|t| t.pid == pid && !t.gone) else {
            continue;
        };
        // Only VmFlags are needed: not every field kept.
        let maps =
            crust_proc::smaps_iter(&root, host).and_then(|it| it.collect::<Result<Vec<_>, _>>());
        let Ok(maps) = maps else {
            continue;
        };
        let registered: Vec<std::ops::Range<u64>> = maps
            .iter()
            .filter(|m| m.has_flag("um"))
            .map(|m| m.map.start..m.map.end)
            .collect();
        if registered.is_empty() {
            // Nothing registered yet (another restore's order): keep all.
            continue;
        }
        let before = t.iovs.bytes();
        t.iovs.keep_within(&super::iovs::merge(registered));
        log::debug!(
            "lazy-pages: process {pid} (host {host}): {} KiB to serve in registered memory, {} KiB filled by the restore",
            t.iovs.bytes() >> 10,
            (before - t.iovs.bytes()) >> 10
        );
    }
}

enum Received {
    Task(Served),
    Finished,
    Nothing,
}

/// Each process's lazy pieces, by pid, loaded from the images while the
/// daemon waits for the restore (for 1 GiB that was 0.9 ms the restore
/// waited on); a process not there is loaded when the restore sends it.
type Loaded = HashMap<i32, (Iovs, Pages)>;

/// [`Loaded`] for every process of the images' tree whose pieces load
/// (an error is met again, and reported, when that process comes).
fn preload(opts: &Options, sources: &Sources) -> Loaded {
    use crust_images::image::ImageType;
    use crust_images::proto::pstree::PstreeEntry;
    let dir = &opts.images_dir;
    let Ok(tree) = crate::util::read_image::<PstreeEntry>(dir, ImageType::Pstree, 0) else {
        return Loaded::new();
    };
    (tree.iter())
        .filter_map(|e| {
            let pid = i32::try_from(e.pid).ok()?;
            Some((pid, sources.load(dir, pid).ok()?))
        })
        .collect()
}

/// Read one message of the restore: a pid and its userfaultfd, or the end.
fn receive(
    opts: &Options,
    conn: &OwnedFd,
    guard: &mut Guard,
    (sources, loaded): (&Sources, &mut Loaded),
) -> Result<Received, Error> {
    let me = crust_sys::process::getpid();
    let mut word = [0u8; 4];
    let got = crust_sys::unix::recvmsg(conn.as_fd(), &mut word, libc::MSG_WAITALL)
        .map_err(sys_err(me, "reading from the restore"))?;
    if got.len == 0 {
        return Err(Error::Restore {
            pid: me,
            what: "the restore closed the lazy-pages socket before it finished (it failed: \
                   see its log)"
                .into(),
        });
    }
    if got.len != 4 {
        return Err(Error::Restore {
            pid: me,
            what: format!("a short message ({} bytes) from the restore", got.len),
        });
    }
    let v = u32::from_ne_bytes(word);
    if v == RESTORE_FINISHED {
        return Ok(Received::Finished);
    }
    let pid = v as i32;
    if pid <= 0 {
        // A zombie (CRIU sends its pid negated): nothing to serve.
        return Ok(Received::Nothing);
    }
    let mut one = [0u8; 1];
    let mut m = crust_sys::unix::recvmsg(conn.as_fd(), &mut one, 0)
        .map_err(sys_err(me, format!("receiving the userfaultfd of {pid}")))?;
    let fd = m.rights.pop().ok_or_else(|| Error::Restore {
        pid,
        what: "the restore sent no userfaultfd with the pid".into(),
    })?;
    let uffd = Uffd::from_fd(fd);
    guard.hold(&uffd, Some(pid));
    let (iovs, pages) = match loaded.remove(&pid) {
        Some(l) => l,
        None => sources.load(&opts.images_dir, pid)?,
    };
    log::info!(
        "lazy-pages: process {pid}: {} KiB to serve",
        iovs.bytes() >> 10
    );
    Ok(Received::Task(Served {
        pid,
        uffd,
        iovs,
        pages: Rc::new(pages),
        waiting: Vec::new(),
        gone: false,
    }))
}

impl Served {
    fn done(&self) -> bool {
        self.gone || (self.iovs.is_empty() && self.waiting.is_empty())
    }

    fn name(&self) -> String {
        if self.pid > 0 {
            format!("process {}", self.pid)
        } else {
            "a forked child".into()
        }
    }

    /// Read and handle every message there is, and retry waiting faults.
    /// Children forked meanwhile go to `born`. Whether anything happened.
    fn events(
        &mut self,
        stats: &mut DaemonStats,
        born: &mut Vec<Served>,
        t0: Option<Instant>,
    ) -> Result<bool, Error> {
        let me = crust_sys::process::getpid();
        let mut any = false;
        loop {
            let ev = self.uffd.read_event().map_err(sys_err(
                me,
                format!("reading the userfaultfd of {}", self.name()),
            ))?;
            let Some(ev) = ev else { break };
            any = true;
            match ev {
                Event::PageFault { addr, .. } => {
                    stats.faults += 1;
                    if stats.first_fault_us.is_none() {
                        stats.first_fault_us = t0.map(|t| t.elapsed().as_micros() as u64);
                    }
                    self.waiting.push(addr);
                }
                Event::Fork(uffd) => born.push(Served {
                    pid: -1,
                    uffd,
                    iovs: self.iovs.clone(),
                    pages: self.pages.clone(),
                    waiting: Vec::new(),
                    gone: false,
                }),
                Event::Remap { from, to, len } => self.iovs.remap(from, to, len),
                Event::Remove { start, end } | Event::Unmap { start, end } => {
                    self.iovs.remove(start, end)
                }
                Event::Other(e) => log::warn!("lazy-pages: unknown userfaultfd event {e:#x}"),
            }
        }
        let waiting = std::mem::take(&mut self.waiting);
        for (k, addr) in waiting.iter().enumerate() {
            if self.gone {
                break;
            }
            if !self.fault(*addr, stats)? {
                // An event came first: keep the rest for the next round.
                self.waiting.extend(waiting.iter().skip(k).copied());
                break;
            }
        }
        Ok(any)
    }

    /// Put the page at `addr` (and those after it in its piece) in.
    /// False when an event is pending first (EAGAIN).
    fn fault(&mut self, addr: u64, stats: &mut DaemonStats) -> Result<bool, Error> {
        match self.iovs.find(addr) {
            Some((_, e, _)) => {
                let len = (e - addr).min(FAULT_CHUNK);
                let (n, again) = self.copy(addr, len, None)?;
                stats.pages_on_fault += n / PAGE;
                Ok(!again || n > 0)
            }
            None => match self.uffd.zeropage(addr, PAGE) {
                Filled::Gone => {
                    self.exited();
                    Ok(true)
                }
                Filled::Done { stopped: None, .. } => {
                    stats.zero_pages += 1;
                    Ok(true)
                }
                Filled::Done {
                    stopped: Some(libc::EAGAIN),
                    ..
                } => Ok(false),
                Filled::Done { .. } => {
                    // There already (put in meanwhile): wake the thread.
                    let _ = self.uffd.wake(addr, PAGE);
                    Ok(true)
                }
            },
        }
    }

    /// One background copy (up to `chunk` bytes) of the first piece left;
    /// pages put in.
    fn prefetch(&mut self, chunk: u64) -> Result<u64, Error> {
        let Some((s, e, _)) = self.iovs.first() else {
            return Ok(0);
        };
        let len = (e - s).min(chunk);
        // The chunk after it, asked of the source while this one goes in.
        let next = self
            .iovs
            .from(s + len)
            .map(|(a, b, off)| (a, off, (b - a).min(chunk)));
        let (n, _) = self.copy(s, len, next)?;
        Ok(n / PAGE)
    }

    /// Copy up to `len` bytes of the piece holding `addr` from the pages
    /// file. Returns the bytes put in and whether an event stopped it.
    /// Pages that are there already, or outside the registered memory
    /// (VMAs the restore filled), are dropped from the pieces. `next`
    /// (address, offset, bytes): what the next copy will want, asked of
    /// the source once this copy's bytes are read.
    fn copy(
        &mut self,
        addr: u64,
        len: u64,
        next: Option<(u64, u64, u64)>,
    ) -> Result<(u64, bool), Error> {
        let Some((s, e, off)) = self.iovs.find(addr) else {
            return Ok((0, false));
        };
        let mut len = len.min(e - addr);
        let mut buf = vec![0u8; len as usize];
        self.pages.read(addr, off + (addr - s), &mut buf)?;
        if let Some((_, o, l)) = next {
            self.pages.ahead(o, l)?;
        }
        loop {
            let part = buf.get(..len as usize).unwrap_or(&[]);
            match self.copy_once(addr, part)? {
                // Part of the range is not registered memory: it crosses
                // the end of a VMA the kernel split (an eager page the
                // restore filled, an mprotect since), and the kernel copies
                // nothing (ENOENT). Try the first half until the page at
                // `addr` alone is tried.
                Copied::Unregistered if len > PAGE => {
                    len = (len / 2).next_multiple_of(PAGE).min(len - PAGE);
                }
                Copied::Unregistered => {
                    // Not registered at all: the restore filled it.
                    log::debug!(
                        "lazy-pages: {:#x} of {} is not registered memory",
                        addr,
                        self.name()
                    );
                    self.iovs.remove(addr, addr + PAGE);
                    let _ = self.uffd.wake(addr, PAGE);
                    return Ok((0, false));
                }
                Copied::Done(n, again) => {
                    crate::util::progress::pages_written(n);
                    return Ok((n, again));
                }
            }
        }
    }

    /// One `UFFDIO_COPY` of `buf` to `addr`.
    fn copy_once(&mut self, addr: u64, buf: &[u8]) -> Result<Copied, Error> {
        let len = buf.len();
        match self.uffd.copy(addr, buf) {
            Filled::Gone => {
                self.exited();
                Ok(Copied::Done(0, false))
            }
            Filled::Done { n, stopped } => {
                let n = n - n % PAGE;
                self.iovs.remove(addr, addr + n);
                match stopped {
                    None => Ok(Copied::Done(n, false)),
                    Some(libc::EAGAIN) => Ok(Copied::Done(n, true)),
                    Some(libc::ENOENT) if n == 0 => Ok(Copied::Unregistered),
                    // ENOENT after some pages: the memory changed
                    // meanwhile (its event comes next); the rest stays.
                    Some(libc::ENOENT) => Ok(Copied::Done(n, false)),
                    Some(libc::EEXIST) => {
                        // That page is there already (put in by a fault
                        // of another thread, or written by the restore).
                        self.iovs.remove(addr + n, addr + n + PAGE);
                        if n == 0 {
                            let _ = self.uffd.wake(addr, PAGE);
                        }
                        Ok(Copied::Done(n, false))
                    }
                    Some(err) => Err(sys_err(
                        crust_sys::process::getpid(),
                        format!(
                            "UFFDIO_COPY of {len} bytes at {addr:#x} into {}",
                            self.name()
                        ),
                    )(std::io::Error::from_raw_os_error(
                        err,
                    ))),
                }
            }
        }
    }

    fn exited(&mut self) {
        log::info!("lazy-pages: {} exited", self.name());
        self.gone = true;
        self.iovs = Iovs::default();
        self.waiting.clear();
    }
}
