//! The server side: one connection's pages written into an images
//! directory as CRIU's page server writes them (`pagemap-*.img` with the
//! server's own pages ids from 0x10001, `pages-<id>.img`), and lazy-pages'
//! requests answered from a [`PageProvider`].

use super::conn::{ps_err, Conn};
use super::proto::{cmd, decode_dst, encode_cmd, Iov, Target};
use crate::mem::{LocalImages, PageOwner, PageSink, PageStream, Run};
use crate::Error;
use crust_images::consts::pe;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_sys::PAGE_SIZE;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The first pages id a page server gives (CRIU's `up_page_ids_base`).
pub const PAGES_ID_BASE: u32 = 0x10001;

/// Bytes read from the socket at a time.
const CHUNK: usize = 1 << 20;

/// Answers lazy-pages' PS_IOV_GET.
pub trait PageProvider {
    /// Append up to `nr_pages` pages of process `pid` starting at `vaddr`
    /// to `out`; returns how many (0: none there).
    fn get(&mut self, pid: u64, vaddr: u64, nr_pages: u64, out: &mut Vec<u8>)
        -> Result<u64, Error>;

    /// How long the client may stay silent (or not read) before the
    /// connection is given up; None: for ever. Asked before each command.
    fn idle_limit(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What one connection brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    /// Pages received.
    pub pages: u64,
    /// Pagemaps opened.
    pub opens: u64,
    /// Pages sent to lazy-pages.
    pub sent: u64,
    /// The client ended with PS_IOV_CLOSE (else: it went away).
    pub closed: bool,
}

struct Receiving<'a> {
    sink: &'a LocalImages<'static>,
    dir: &'a Path,
    cur: Option<(u64, Box<dyn PageStream + 'a>)>,
    /// What the parent set's pagemap of the open one holds (merged
    /// (start, end) ranges); None: no parent pagemap.
    parent: Option<Vec<(u64, u64)>>,
    next_id: u32,
    stats: ServeStats,
    /// CHUNK bytes from `at` on are page-aligned (for O_DIRECT).
    buf: Vec<u8>,
    at: usize,
    /// On a plain connection: the pipe (read end, write end, capacity)
    /// the pages go through from the socket to a pages file that takes
    /// a pipe, so that crust never copies them (on loopback: about 0.1
    /// s of CPU per GiB less, bench/pageserver.sh).
    pipe: Option<(OwnedFd, OwnedFd, usize)>,
}

impl<'a> Receiving<'a> {
    /// Complete the open pagemap, if any.
    fn close_cur(&mut self) -> Result<(), Error> {
        match self.cur.take() {
            Some((_, s)) => s.finish(),
            None => Ok(()),
        }
    }

    /// PS_IOV_OPEN / OPEN2: a new pagemap; returns whether the directory
    /// has a parent pagemap for it (OPEN2's answer).
    fn open(&mut self, peer: &str, dst_id: u64) -> Result<bool, Error> {
        self.close_cur()?;
        let Some(target) = decode_dst(dst_id) else {
            return Err(ps_err(
                peer,
                format!("unknown pagemap type in dst_id {dst_id:#x}"),
                std::io::ErrorKind::InvalidData.into(),
            ));
        };
        let pages_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let owner = match target {
            Target::Task(id) => PageOwner::Task { id, pages_id },
            Target::Object(shmid) => PageOwner::Object { shmid, pages_id },
        };
        log::debug!("page server: opening {target:?} as pages-{pages_id}.img");
        let s = self.sink.open(owner)?;
        self.cur = Some((dst_id, s));
        self.stats.opens += 1;
        // As CRIU's: a parent pagemap that cannot be read counts as none.
        self.parent = has_parent(self.dir, target)
            .then(|| parent_ranges(self.dir, target))
            .and_then(|r| {
                r.inspect_err(|e| log::warn!("page server: {e}: answered as no parent"))
                    .ok()
            });
        Ok(self.parent.is_some())
    }

    /// A run sent as in the parent must be there (CRIU's server checks
    /// it too): else the chain would not restore.
    fn check_in_parent(&self, peer: &str, run: &Run) -> Result<(), Error> {
        let end = run
            .npages
            .checked_mul(PAGE_SIZE)
            .and_then(|l| run.vaddr.checked_add(l));
        let covered = match (&self.parent, end) {
            (Some(ranges), Some(end)) => {
                let i = ranges.partition_point(|r| r.1 <= run.vaddr);
                ranges
                    .get(i)
                    .is_some_and(|r| r.0 <= run.vaddr && end <= r.1)
            }
            _ => false,
        };
        if covered {
            return Ok(());
        }
        Err(ps_err(
            peer,
            format!(
                "pages {:#x}+{} were sent as in the parent set, which {} (start the page server with --prev-images-dir naming the previous round)",
                run.vaddr,
                run.npages,
                if self.parent.is_some() { "does not hold them" } else { "this page server has not" }
            ),
            std::io::ErrorKind::InvalidData.into(),
        ))
    }

    fn add(&mut self, conn: &mut Conn, iov: &Iov, flags: u32) -> Result<(), Error> {
        if self.cur.as_ref().map(|c| c.0) != Some(iov.dst_id) {
            log::warn!("page server: pages without an open of their pagemap");
            self.open(conn.peer(), iov.dst_id)?;
        }
        let peer = conn.peer().to_string();
        let run = Run {
            vaddr: iov.vaddr,
            npages: iov.nr_pages,
            flags,
        };
        if flags & pe::PARENT != 0 {
            self.check_in_parent(&peer, &run)?;
        }
        let Some((_, s)) = self.cur.as_mut() else {
            return Err(ps_err(
                &peer,
                "no open pagemap",
                std::io::ErrorKind::InvalidData.into(),
            ));
        };
        s.runs(&[run])?;
        if flags & pe::PRESENT == 0 {
            return Ok(());
        }
        let Some(mut left) = iov.nr_pages.checked_mul(PAGE_SIZE) else {
            return Err(ps_err(
                &peer,
                "a run too long",
                std::io::ErrorKind::InvalidData.into(),
            ));
        };
        match &self.pipe {
            Some((r, w, cap)) if s.takes_pipe() => {
                while left > 0 {
                    let want = left.min(*cap as u64) as usize;
                    let n = match conn.splice_into(w.as_fd(), want) {
                        Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                        other => other,
                    }
                    .map_err(|e| {
                        ps_err(&peer, "the connection ended inside the pages of a run", e)
                    })?;
                    s.pipe_pages(r.as_fd(), n as u64)?;
                    left -= n as u64;
                }
            }
            _ => {
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    let b = self.buf.get_mut(self.at..self.at + n).unwrap_or_default();
                    conn.read_exact(b).map_err(|e| {
                        ps_err(&peer, "the connection ended inside the pages of a run", e)
                    })?;
                    s.pages(b)?;
                    left -= n as u64;
                }
            }
        }
        self.stats.pages += iov.nr_pages;
        Ok(())
    }
}

/// Does `dir/parent` hold the pagemap `target` (CRIU's answer to OPEN2 and
/// PS_IOV_PARENT)?
fn has_parent(dir: &Path, target: Target) -> bool {
    let name = match target {
        Target::Task(id) => ImageType::Pagemap.file_name(id),
        Target::Object(id) => ImageType::ShmemPagemap.file_name(id),
    };
    dir.join("parent").join(name).exists()
}

/// The ranges the parent set's pagemap of `target` holds (stored there or
/// in its own parent), merged, as (start, end).
fn parent_ranges(dir: &Path, target: Target) -> Result<Vec<(u64, u64)>, Error> {
    let (ty, id) = match target {
        Target::Task(id) => (ImageType::Pagemap, id),
        Target::Object(id) => (ImageType::ShmemPagemap, id),
    };
    let name = ty.file_name(id);
    let pdir = dir.join("parent");
    let rerr = |source| Error::Image {
        what: format!("cannot read the parent's {name}"),
        source,
    };
    let mut r = ImageReader::open_typed(&pdir, ty, &name).map_err(rerr)?;
    let _: Option<PagemapHead> = r.read_entry().map_err(rerr)?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(rerr)?;
    let mut runs: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| {
            e.in_parent == Some(true)
                || e.flags.unwrap_or(pe::PRESENT) & (pe::PRESENT | pe::PARENT) != 0
        })
        .map(|e| {
            let n = e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages));
            (e.vaddr, e.vaddr.saturating_add(n.saturating_mul(PAGE_SIZE)))
        })
        .collect();
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    Ok(out)
}

/// `CRUST_PS_SPLICE=0` turns the server's splicing off too (pages read
/// into a buffer and written: the way before, for measuring).
fn splice_wanted() -> bool {
    std::env::var_os("CRUST_PS_SPLICE").is_none_or(|v| v != "0")
}

/// A pipe for the pages of a plain connection, as large as the system
/// lets it be (None: no pipe, the pages are read and written).
fn page_pipe() -> Option<(OwnedFd, OwnedFd, usize)> {
    let (r, w) = crust_sys::pipe::pipe2(libc::O_CLOEXEC)
        .inspect_err(|e| log::debug!("page server: no pipe for splicing pages: {e}"))
        .ok()?;
    let cap = crust_sys::pipe::set_pipe_size(w.as_fd(), CHUNK as u32)
        .or_else(|_| crust_sys::pipe::pipe_size(w.as_fd()))
        .ok()?;
    Some((r, w, cap as usize))
}

/// Serve one connection until PS_IOV_CLOSE (or FORCE_CLOSE): pages go
/// into `dir`, PS_IOV_GET is answered by `provider` (None: refused). With
/// `wait_eof` (not with `--ps-socket`), the server waits for the client to
/// close after the final answer, as CRIU's does.
pub fn serve(
    mut conn: Conn,
    dir: &Path,
    provider: Option<&mut dyn PageProvider>,
    wait_eof: bool,
) -> Result<ServeStats, Error> {
    conn.set_timeout(None)?;
    let direct = std::env::var_os("CRUST_PS_DIRECT").is_some_and(|v| v == "1");
    let sink = LocalImages::new(dir).direct_io(direct).allocate_ahead(true);
    let buf = vec![0u8; CHUNK + PAGE_SIZE as usize];
    let at = buf
        .as_ptr()
        .align_offset(PAGE_SIZE as usize)
        .min(PAGE_SIZE as usize);
    let pipe = (!conn.is_tls() && !direct && splice_wanted())
        .then(page_pipe)
        .flatten();
    let mut rx = Receiving {
        sink: &sink,
        dir,
        cur: None,
        parent: None,
        next_id: PAGES_ID_BASE,
        stats: ServeStats::default(),
        buf,
        at,
        pipe,
    };
    let r = serve_loop(&mut conn, &mut rx, provider);
    let closed = match r {
        Ok(c) => c,
        Err(e) => {
            conn.end();
            return Err(e);
        }
    };
    let mut stats = rx.stats;
    stats.closed = closed;
    let peer = conn.peer().to_string();
    if !closed {
        // The open pagemap is incomplete: its pages file goes, no pagemap.
        drop(rx.cur.take());
        if stats.opens > 0 {
            return Err(ps_err(
                &peer,
                "the client went away before it sent all pages (no PS_IOV_CLOSE): the images are incomplete",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        return Ok(stats);
    }
    conn.end();
    if wait_eof {
        let mut c = [0u8; 1];
        match conn.read(&mut c) {
            Ok(0) => {}
            Ok(_) => log::warn!("page server: unexpected data after the close"),
            Err(e) => log::warn!("page server: waiting for the client to close: {e}"),
        }
    }
    Ok(stats)
}

/// The command loop; true when the client said CLOSE.
fn serve_loop(
    conn: &mut Conn,
    rx: &mut Receiving<'_>,
    mut provider: Option<&mut dyn PageProvider>,
) -> Result<bool, Error> {
    let mut limit = None;
    loop {
        let want = provider.as_deref().and_then(|p| p.idle_limit());
        if want != limit {
            conn.set_timeout(want)?;
            limit = want;
        }
        let Some(iov) = conn.recv_iov()? else { break };
        let peer = conn.peer().to_string();
        match iov.command() {
            cmd::OPEN => {
                rx.open(&peer, iov.dst_id)?;
            }
            cmd::OPEN2 => {
                let p = rx.open(&peer, iov.dst_id)?;
                conn.send(&[u8::from(p)], "cannot answer an open")?;
                conn.push()?;
            }
            cmd::PARENT => {
                let p = decode_dst(iov.dst_id).is_some_and(|t| has_parent(rx.dir, t));
                conn.send(&i32::from(p).to_ne_bytes(), "cannot answer")?;
                conn.push()?;
            }
            cmd::ADD_F => rx.add(conn, &iov, iov.flags())?,
            cmd::ADD => rx.add(conn, &iov, pe::PRESENT)?,
            cmd::HOLE => rx.add(conn, &iov, pe::PARENT)?,
            cmd::CLOSE | cmd::FORCE_CLOSE => {
                rx.close_cur()?;
                conn.send(&0i32.to_ne_bytes(), "cannot send the final answer")?;
                conn.push()?;
                return Ok(true);
            }
            cmd::GET => {
                let Some(p) = provider.as_deref_mut() else {
                    return Err(ps_err(
                        &peer,
                        "asked for pages (PS_IOV_GET), but this page server only receives (start it with --lazy-pages)",
                        std::io::ErrorKind::InvalidInput.into(),
                    ));
                };
                rx.stats.sent += answer_get(conn, p, &iov)?;
            }
            other => {
                return Err(ps_err(
                    &peer,
                    format!("unknown command {other:#x}"),
                    std::io::ErrorKind::InvalidData.into(),
                ))
            }
        }
    }
    Ok(false)
}

/// PS_IOV_GET: the pages the provider has, with their header; none: an
/// error (the connection ends, as CRIU's does).
fn answer_get(conn: &mut Conn, p: &mut dyn PageProvider, iov: &Iov) -> Result<u64, Error> {
    let mut out = Vec::new();
    let n = p.get(iov.dst_id, iov.vaddr, iov.nr_pages, &mut out)?;
    let peer = conn.peer().to_string();
    if n == 0 || out.len() as u64 != n * PAGE_SIZE || n > iov.nr_pages {
        return Err(ps_err(
            &peer,
            format!(
                "no pages of process {} at {:#x}+{} to give",
                iov.dst_id, iov.vaddr, iov.nr_pages
            ),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    let head = Iov {
        cmd: encode_cmd(cmd::ADD_F, pe::PRESENT),
        nr_pages: n,
        ..*iov
    };
    conn.send_iov(&head)?;
    conn.send(&out, "cannot send pages")?;
    conn.push()?;
    Ok(n)
}

/// A process's pages file and its runs with bytes: (vaddr, pages, offset
/// in the file).
type Loaded = (crate::mem::zpages::PagesFile, Vec<(u64, u64, u64)>);

/// Pages read out of an images directory (`pagemap-<pid>.img` and its
/// pages file), for `page-server --lazy-pages`.
pub struct ImagesProvider {
    dir: PathBuf,
    /// pid -> (pages file, runs as (vaddr, pages, offset in the file)).
    cache: std::collections::HashMap<u64, Loaded>,
}

impl ImagesProvider {
    pub fn open(dir: &Path) -> ImagesProvider {
        ImagesProvider {
            dir: dir.to_path_buf(),
            cache: Default::default(),
        }
    }

    fn load(&self, pid: u64) -> Result<Loaded, Error> {
        let name = ImageType::Pagemap.file_name(pid);
        let rerr = |source| Error::Image {
            what: format!("cannot read image {name}"),
            source,
        };
        let mut r = ImageReader::open_typed(&self.dir, ImageType::Pagemap, &name).map_err(rerr)?;
        let head: Option<PagemapHead> = r.read_entry().map_err(rerr)?;
        let Some(head) = head else {
            return Err(Error::BadImage {
                dir: self.dir.clone(),
                why: format!("{name} holds no pagemap head"),
            });
        };
        let entries: Vec<PagemapEntry> = r.read_remaining().map_err(rerr)?;
        let mut runs = Vec::new();
        let mut off = 0u64;
        for e in entries {
            let n = e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages));
            if e.flags.unwrap_or(pe::PRESENT) & pe::PRESENT == 0 {
                continue;
            }
            runs.push((e.vaddr, n, off));
            off = off.saturating_add(n.saturating_mul(PAGE_SIZE));
        }
        let path = self
            .dir
            .join(ImageType::Pages.file_name(u64::from(head.pages_id)));
        let f = crate::mem::zpages::PagesFile::open(&path)?;
        Ok((f, runs))
    }
}

impl PageProvider for ImagesProvider {
    fn get(
        &mut self,
        pid: u64,
        vaddr: u64,
        nr_pages: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, Error> {
        if !self.cache.contains_key(&pid) {
            let l = self.load(pid)?;
            self.cache.insert(pid, l);
        }
        let Some((f, runs)) = self.cache.get(&pid) else {
            return Ok(0);
        };
        let i = runs.partition_point(|r| r.0.saturating_add(r.1 * PAGE_SIZE) <= vaddr);
        let Some(&(start, n, off)) = runs.get(i).filter(|r| r.0 <= vaddr) else {
            return Ok(0);
        };
        let skip = (vaddr - start) / PAGE_SIZE;
        let give = nr_pages.min(n - skip);
        let at = out.len();
        out.resize(at + (give * PAGE_SIZE) as usize, 0);
        let dst = out.get_mut(at..).unwrap_or_default();
        f.read_exact_at(dst, off + skip * PAGE_SIZE)?;
        Ok(give)
    }
}
