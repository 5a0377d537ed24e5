//! Where the lazy-pages daemon takes a process's pages from: its pages
//! file in the local images ([`LocalPages`]), or, for the pages a `dump
//! --lazy-pages` left on the source (`PE_LAZY` without `PE_PRESENT` in
//! the local pagemap), the source's page server ([`SourcePages`]:
//! `lazy-pages --page-server --address A --port P`, PS_IOV_GET).
//!
//! The daemon's pieces ([`Iovs`]) carry an offset; a piece whose bytes are
//! on the source has [`REMOTE`] set in it (offsets move with the pieces,
//! the bit with them), so one process's memory may come from both.

use super::can_be_lazy;
use super::iovs::Iovs;
use crate::pageserver::{Conn, Remote};
use crate::util::read_one;
use crate::{mem, Error, Options};
use crust_images::consts::pe;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_sys::PAGE_SIZE;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Set in a piece's offset: its bytes are on the source.
pub const REMOTE: u64 = 1 << 63;

/// Pages asked of the source at a time at most (the daemon copies at most
/// 1 MiB at once anyway).
const MAX_GET: u64 = 256;

/// A source of the bytes of a piece.
pub trait PageOrigin {
    /// Fill `buf` with the bytes of the memory at `addr` whose piece
    /// offset is `off`.
    fn read(&self, addr: u64, off: u64, buf: &mut [u8]) -> Result<(), Error>;
}

/// A pages file of the local images.
pub struct LocalPages {
    file: mem::zpages::PagesFile,
}

impl PageOrigin for LocalPages {
    fn read(&self, _addr: u64, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.file.read_exact_at(buf, off)
    }
}

/// The connection to the source's page server, shared by every process.
pub type Link = Rc<RefCell<Fetcher>>;

/// The daemon's side of the connection to the source, with at most one
/// request sent ahead: the background copy asks for its next chunk
/// before it copies the one it has, so the source reads and sends the
/// next while the daemon puts the last in (the answers come in the order
/// asked). Another request first (a fault elsewhere) reads that answer
/// and keeps it aside for the copy that wants it; a copy that never comes
/// for it (its memory gone) drops it. Both CRIU's source and crust's
/// give the same pages again when asked again.
pub struct Fetcher {
    remote: Remote,
    /// The request sent ahead, its answer not read yet: (pid, vaddr,
    /// pages).
    sent: Option<(u64, u64, u64)>,
    /// An answer read before it was wanted: (pid, vaddr, its bytes).
    held: Option<(u64, u64, Vec<u8>)>,
}

impl Fetcher {
    pub fn new(remote: Remote) -> Fetcher {
        Fetcher {
            remote,
            sent: None,
            held: None,
        }
    }

    /// Ask now for `pages` pages (at most [`MAX_GET`]) of process `pid` at
    /// `vaddr`; nothing when a request is out already.
    /// `CRUST_LAZY_AHEAD=0`: never (one request at a time, as before;
    /// for comparisons).
    pub fn ahead(&mut self, pid: u64, vaddr: u64, pages: u64) -> Result<(), Error> {
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let off =
            *OFF.get_or_init(|| std::env::var_os("CRUST_LAZY_AHEAD").is_some_and(|v| v == "0"));
        if off || self.sent.is_some() {
            return Ok(());
        }
        let pages = pages.clamp(1, MAX_GET);
        self.remote.request(pid, vaddr, pages)?;
        self.sent = Some((pid, vaddr, pages));
        Ok(())
    }

    /// The answer to the request out, read into `buf` (as many pages as
    /// asked fit), checked to be the one asked for. Returns the pages.
    fn answer(&mut self, (pid, vaddr): (u64, u64), buf: &mut [u8]) -> Result<u64, Error> {
        let (p, a, n) = self.remote.reply(buf)?;
        if (p, a) != (pid, vaddr) {
            return Err(Error::Restore {
                pid: pid as i32,
                what: format!(
                    "the source answered for process {p} at {a:#x}, asked for {pid} at {vaddr:#x}"
                ),
            });
        }
        Ok(n)
    }

    /// Pages of process `pid` from `vaddr` on into `buf` (at most its
    /// length, at least one page): the pages got, maybe fewer (the
    /// source's run ends), zero when the source has none.
    pub fn get(&mut self, pid: u64, vaddr: u64, buf: &mut [u8]) -> Result<u64, Error> {
        let room = buf.len() as u64 / PAGE_SIZE;
        if let Some((p, a, bytes)) = self.held.take() {
            let len = bytes.len();
            if (p, a) == (pid, vaddr) && len as u64 <= room * PAGE_SIZE {
                if let Some(dst) = buf.get_mut(..len) {
                    dst.copy_from_slice(&bytes);
                    return Ok(len as u64 / PAGE_SIZE);
                }
            }
        }
        if let Some((p, a, n)) = self.sent.take() {
            if (p, a) == (pid, vaddr) && n <= room {
                return self.answer((p, a), buf);
            }
            // Another range was asked for first: its answer aside.
            let mut aside = vec![0u8; (n * PAGE_SIZE) as usize];
            let got = self.answer((p, a), &mut aside)?;
            aside.truncate((got * PAGE_SIZE) as usize);
            self.held = Some((p, a, aside));
        }
        self.remote.get(pid, vaddr, room.clamp(1, MAX_GET), buf)
    }

    /// Tell the source the daemon needs nothing more (an answer still
    /// out is read first and dropped).
    pub fn close(&mut self) -> Result<(), Error> {
        if let Some((p, a, n)) = self.sent.take() {
            let mut aside = vec![0u8; (n * PAGE_SIZE) as usize];
            self.answer((p, a), &mut aside)?;
        }
        self.held = None;
        self.remote.close()
    }
}

/// The pages of one process (by its pid in the images) on the source.
pub struct SourcePages {
    link: Link,
    pid: i32,
}

impl PageOrigin for SourcePages {
    /// `off`: the address the pages had in the dumped process (a piece
    /// moved by an `mremap` since keeps it), which the source knows them
    /// by.
    fn read(&self, _addr: u64, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        let addr = off;
        let mut link = self.link.borrow_mut();
        let mut done = 0usize;
        while done < buf.len() {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            let at = addr + done as u64;
            // The source may give fewer pages than asked (one of its runs
            // ends): ask again for the rest.
            let n = link.get(self.pid as u64, at, rest)?;
            if n == 0 {
                return Err(Error::Restore {
                    pid: self.pid,
                    what: format!("the source has no lazy pages at {at:#x}"),
                });
            }
            done += (n * PAGE_SIZE) as usize;
        }
        Ok(())
    }
}

/// Where one process's pieces come from: local ones from its pages file,
/// [`REMOTE`] ones from the source.
pub struct Pages {
    local: LocalPages,
    source: Option<SourcePages>,
}

impl Pages {
    /// The piece with offset `off` will be read next, `len` bytes: from
    /// the source, ask for it now ([`Fetcher::ahead`]).
    pub fn ahead(&self, off: u64, len: u64) -> Result<(), Error> {
        match &self.source {
            Some(s) if off & REMOTE != 0 => {
                // The source knows pages by their address at the dump.
                s.link
                    .borrow_mut()
                    .ahead(s.pid as u64, off & !REMOTE, len / PAGE_SIZE)
            }
            _ => Ok(()),
        }
    }
}

impl PageOrigin for Pages {
    fn read(&self, addr: u64, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        if off & REMOTE == 0 {
            return self.local.read(addr, off, buf);
        }
        match &self.source {
            Some(s) => s.read(addr, off & !REMOTE, buf),
            None => Err(Error::Restore {
                pid: crust_sys::process::getpid(),
                what: format!(
                    "the pages at {addr:#x} are on the source, and no page server was given"
                ),
            }),
        }
    }
}

/// The daemon's way to the source, if it has one (`--page-server`).
pub struct Sources {
    link: Option<Link>,
}

impl Sources {
    /// With `--page-server`: connect to the source at `--address`/`--port`
    /// (no source: an error, before any restore is taken).
    pub fn open(opts: &Options) -> Result<Sources, Error> {
        if !opts.page_server {
            return Ok(Sources { link: None });
        }
        let conn = Conn::connect(opts)?;
        log::info!(
            "lazy-pages: pages left on the source come from {}",
            conn.peer()
        );
        Ok(Sources {
            link: Some(Rc::new(RefCell::new(Fetcher::new(Remote::new(conn))))),
        })
    }

    /// Whether pages come from a source (`--page-server`).
    pub fn remote(&self) -> bool {
        self.link.is_some()
    }

    /// Tell the source the daemon needs nothing more (PS_IOV_CLOSE, and
    /// its answer), which may then let its tree go. Once only.
    pub fn close(&self) -> Result<(), Error> {
        match &self.link {
            Some(link) => link.borrow_mut().close(),
            None => Ok(()),
        }
    }

    /// The lazy pieces of process `pid` of the images in `dir` (its pages
    /// in VMAs that may be lazy, cut at VMA ends: a copy stays inside one
    /// VMA) and where their bytes are.
    pub fn load(&self, dir: &Path, pid: i32) -> Result<(Iovs, Pages), Error> {
        let mut mm: MmEntry = read_one(dir, ImageType::Mm, pid as u64)?;
        mem::split_guards(dir, &mut mm)?;
        mem::validate_vmas(dir, &mm)?;
        let (pages_id, runs) = mem::load_pagemap(dir, pid, &mm, true)?;
        let path = dir.join(ImageType::Pages.file_name(u64::from(pages_id)));
        let file = mem::zpages::PagesFile::open(&path)?;
        let mut vmas: Vec<(u64, u64)> = mm
            .vmas
            .iter()
            .filter(|v| can_be_lazy(v))
            .map(|v| (v.start, v.end))
            .collect();
        vmas.sort_unstable();
        let mut iovs = Iovs::default();
        let stored = runs
            .iter()
            .filter(|r| !r.cow)
            .map(|r| (r.vaddr, r.npages, r.file_off));
        let left = left_lazy(dir, pid)?;
        if !left.is_empty() && self.link.is_none() {
            return Err(Error::Restore {
                pid,
                what: format!(
                    "{} pages of process {pid} were left on the source (dump --lazy-pages): start \
                     lazy-pages with --page-server --address/--port of the source",
                    left.iter().map(|r| r.1).sum::<u64>()
                ),
            });
        }
        let remote = left.iter().map(|&(a, n)| (a, n, REMOTE | a));
        for (vaddr, npages, off) in stored.chain(remote) {
            let end = vaddr.saturating_add(npages * PAGE_SIZE);
            let first = vmas.partition_point(|&(_, e)| e <= vaddr);
            for &(s, e) in vmas.iter().skip(first) {
                if s >= end {
                    break;
                }
                let (a, b) = (s.max(vaddr), e.min(end));
                iovs.add(a, b, off + (a - vaddr));
            }
        }
        // Pages the images keep plain were filled by the restore.
        for r in super::marks::unmarked(dir, pid)? {
            iovs.remove(r.start, r.end);
        }
        let source = self.link.as_ref().map(|l| SourcePages {
            link: l.clone(),
            pid,
        });
        let local = LocalPages { file };
        Ok((iovs, Pages { local, source }))
    }
}

/// The runs of `pagemap-<pid>.img` whose pages were left on the source
/// (`PE_LAZY` without `PE_PRESENT`): (vaddr, pages). `load_pagemap`
/// has checked them.
pub(crate) fn left_lazy(dir: &Path, pid: i32) -> Result<Vec<(u64, u64)>, Error> {
    let name = ImageType::Pagemap.file_name(pid as u64);
    let rerr = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut r = ImageReader::open_typed(dir, ImageType::Pagemap, &name).map_err(rerr)?;
    let _head: Option<PagemapHead> = r.read_entry().map_err(rerr)?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(rerr)?;
    Ok(entries
        .iter()
        .filter(|e| {
            let f = mem::chain::entry_flags(e);
            f & pe::LAZY != 0 && f & (pe::PRESENT | pe::PARENT) == 0
        })
        .map(|e| (e.vaddr, e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages))))
        .collect())
}
