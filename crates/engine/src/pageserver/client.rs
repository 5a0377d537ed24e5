//! The client side: a dump's pages sent to a page server
//! ([`PageServerSink`]), and lazy-pages' requests for pages ([`Remote`]).

use super::conn::{ps_err, Conn};
use super::proto::{cmd, encode_cmd, encode_dst, Iov, Target, IOV_SIZE};
use crate::mem::{PageOwner, PageSink, PageStream, Run};
use crate::Error;
use crust_images::consts::pe;
use crust_sys::PAGE_SIZE;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Commands smaller than this are gathered with the next bytes into one
/// write.
const GATHER: usize = 64 << 10;

/// With TLS, bytes are written in pieces that do not cross a multiple of
/// this (counted from the start of their run), each piece one record, and
/// every command in a record of its own: CRIU's TLS server reads a
/// command, then a run's bytes in pipe-sized chunks (64 KiB), polling the
/// socket before each, so no record may hold the end of what it is
/// reading and the start of the next.
const TLS_PIECE: u64 = 16 << 10;

/// A [`PageSink`] that sends every owner's runs and bytes to a page
/// server, as CRIU's dump does with `--page-server`. Streams of different
/// owners take turns on the one connection (the server has one pagemap
/// open at a time).
pub struct PageServerSink {
    conn: Mutex<Conn>,
    /// The dump's images directory: its statistics count the pages sent,
    /// and a process's runs are recorded there ([`record_name`]).
    local: Option<PathBuf>,
    /// The shared objects sent (each once per dump).
    claimed: crate::mem::Claims,
}

/// The name of crust's record, in a dump's images directory, of the runs
/// it sent to a page server for process `id` (a pagemap image, the pages
/// being on the server): the next run of a chain reads it to know what
/// the parent set holds.
pub fn record_name(id: u64) -> String {
    format!("crust-ps-pagemap-{id}.img")
}

/// The same record for shared memory object `shmid` (the next run of a
/// chain stores it against what the server holds).
pub fn object_record_name(shmid: u64) -> String {
    format!("crust-ps-pagemap-shmem-{shmid}.img")
}

impl PageServerSink {
    pub fn new(conn: Conn) -> PageServerSink {
        PageServerSink {
            conn: Mutex::new(conn),
            local: None,
            claimed: Default::default(),
        }
    }

    /// Count the pages sent in the statistics of the dump into `dir`,
    /// and record each process's runs there ([`record_name`]).
    pub fn with_local(mut self, dir: &Path) -> PageServerSink {
        self.local = Some(dir.to_path_buf());
        self
    }

    /// PS_IOV_PARENT: has the server a parent set holding the pagemap of
    /// `target` (CRIU's dump asks before it sends pages as in the parent)?
    pub fn has_parent(&self, target: Target) -> Result<bool, Error> {
        let mut conn = self.lock();
        conn.send_iov(&Iov {
            cmd: cmd::PARENT,
            dst_id: encode_dst(target),
            ..Default::default()
        })?;
        conn.push()?;
        let mut ans = [0u8; 4];
        conn.recv(
            &mut ans,
            "the page server did not say whether it has a parent set",
        )?;
        Ok(i32::from_ne_bytes(ans) > 0)
    }

    /// Can the pages of a stream be spliced to the server (plain TCP;
    /// TLS must see the bytes)?
    pub fn splices(&self) -> bool {
        !self.lock().is_tls()
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// All sent: PS_IOV_CLOSE (PS_IOV_FORCE_CLOSE with `force`, for a
    /// socket the server's caller keeps) and wait for the server's status,
    /// which says it has everything.
    pub fn close(self, force: bool) -> Result<(), Error> {
        let mut conn = self
            .conn
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = if force { cmd::FORCE_CLOSE } else { cmd::CLOSE };
        conn.send_iov(&Iov {
            cmd: c,
            ..Default::default()
        })?;
        conn.push()?;
        let mut st = [0u8; 4];
        conn.recv(
            &mut st,
            "the page server did not confirm that it has all pages",
        )?;
        let status = i32::from_ne_bytes(st);
        conn.end();
        if status != 0 {
            let peer = conn.peer().to_string();
            return Err(ps_err(
                &peer,
                format!("the page server answered status {status} at the end"),
                std::io::Error::other("page server failed"),
            ));
        }
        Ok(())
    }
}

impl PageSink for PageServerSink {
    fn claim_object(&self, shmid: u64) -> bool {
        self.claimed.claim(shmid)
    }

    fn open(&self, owner: PageOwner) -> Result<Box<dyn PageStream + '_>, Error> {
        let mut conn = self.lock();
        let target = match owner {
            PageOwner::Task { id, .. } => Target::Task(id),
            PageOwner::Object { shmid, .. } => Target::Object(shmid),
        };
        let dst_id = encode_dst(target);
        conn.send_iov(&Iov {
            cmd: cmd::OPEN2,
            dst_id,
            ..Default::default()
        })?;
        conn.push()?;
        let mut has_parent = [0u8; 1];
        conn.recv(&mut has_parent, "the page server did not answer an open")?;
        let tls = conn.is_tls();
        Ok(Box::new(ServerStream {
            conn,
            dst_id,
            owner,
            has_parent: has_parent[0] != 0,
            local: self.local.as_deref(),
            sent: Vec::new(),
            written: 0,
            scanned: 0,
            queue: VecDeque::new(),
            left: 0,
            run_len: 0,
            gather: Vec::with_capacity(GATHER),
            tls,
        }))
    }
}

/// The pages of one owner on their way to the server.
struct ServerStream<'a> {
    conn: MutexGuard<'a, Conn>,
    dst_id: u64,
    owner: PageOwner,
    /// The server's answer to the open: it has a parent set for this
    /// pagemap (runs `PE_PARENT` need one).
    has_parent: bool,
    /// See [`PageServerSink::with_local`].
    local: Option<&'a Path>,
    /// The runs sent: (vaddr, pages, flags).
    sent: Vec<(u64, u64, u32)>,
    /// Bytes of pages sent, and pages looked at (objects).
    written: u64,
    scanned: u64,
    /// Runs announced and not yet sent.
    queue: VecDeque<Run>,
    /// Bytes still due for the run whose header was sent last.
    left: u64,
    /// Bytes of that run.
    run_len: u64,
    /// Commands not yet written.
    gather: Vec<u8>,
    /// TLS: no gathering, bytes in pieces (see [`TLS_PIECE`]).
    tls: bool,
}

impl ServerStream<'_> {
    fn header(&mut self, r: &Run) -> Result<(), Error> {
        if r.flags & !0xffff != 0 {
            let peer = self.conn.peer().to_string();
            return Err(ps_err(
                &peer,
                format!(
                    "pages {:#x}+{} have flags {:#x} that CRIU's page-server protocol cannot carry (--cow-parent cannot be used with --page-server)",
                    r.vaddr, r.npages, r.flags
                ),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        if r.flags & pe::PARENT != 0 && !self.has_parent {
            let peer = self.conn.peer().to_string();
            return Err(ps_err(
                &peer,
                format!(
                    "pages {:#x}+{} are in the parent set, but the page server has no parent set for {:?} (start it with --prev-images-dir naming the previous round's directory)",
                    r.vaddr, r.npages, self.owner
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        self.sent.push((r.vaddr, r.npages, r.flags));
        let iov = Iov {
            cmd: encode_cmd(cmd::ADD_F, r.flags),
            nr_pages: r.npages,
            vaddr: r.vaddr,
            dst_id: self.dst_id,
        };
        self.gather.extend_from_slice(&iov.to_bytes());
        if self.tls || self.gather.len() + IOV_SIZE > GATHER {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), Error> {
        if self.gather.is_empty() {
            return Ok(());
        }
        let g = std::mem::take(&mut self.gather);
        self.conn.send(&g, "cannot send pages to the page server")?;
        self.gather = g;
        self.gather.clear();
        Ok(())
    }

    /// Send the headers of the runs up to the next run with bytes, and
    /// that run's header.
    fn next_run(&mut self) -> Result<bool, Error> {
        while let Some(r) = self.queue.pop_front() {
            self.header(&r)?;
            if r.has_bytes() {
                self.left = r.npages.saturating_mul(PAGE_SIZE);
                self.run_len = self.left;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn bad_count(&self, what: String) -> Error {
        ps_err(
            self.conn.peer(),
            what,
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        )
    }
}

impl PageStream for ServerStream<'_> {
    fn runs(&mut self, runs: &[Run]) -> Result<(), Error> {
        self.queue.extend(runs.iter().copied());
        Ok(())
    }

    fn scanned(&mut self, pages: u64) {
        self.scanned += pages;
    }

    fn pages(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.left == 0 && !self.next_run()? {
                return Err(self.bad_count(format!(
                    "{} bytes of pages more than the runs announce (crust bug)",
                    bytes.len()
                )));
            }
            let mut n = self.left.min(bytes.len() as u64);
            if self.tls {
                let done = self.run_len - self.left;
                n = n.min(TLS_PIECE - done % TLS_PIECE);
            }
            let n = n as usize;
            let (now, rest) = bytes.split_at(n);
            if !self.tls && now.len() < GATHER && self.gather.len() + now.len() <= GATHER {
                self.gather.extend_from_slice(now);
            } else {
                self.drain()?;
                self.conn
                    .send(now, "cannot send pages to the page server")?;
            }
            self.left -= n as u64;
            bytes = rest;
        }
        Ok(())
    }

    fn takes_pipe(&self) -> bool {
        !self.tls
    }

    fn pipe_pages(&mut self, pipe: std::os::fd::BorrowedFd<'_>, len: u64) -> Result<(), Error> {
        if self.tls {
            return Err(self.bad_count(
                "pages offered through a pipe to a TLS connection (crust bug)".to_string(),
            ));
        }
        self.written += len;
        let mut rest = len;
        while rest > 0 {
            if self.left == 0 && !self.next_run()? {
                return Err(self.bad_count(format!(
                    "{rest} bytes of pages more than the runs announce (crust bug)"
                )));
            }
            let n = self.left.min(rest);
            self.drain()?;
            self.conn
                .splice_from(pipe, n, "cannot send pages to the page server")?;
            self.left -= n;
            rest -= n;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), Error> {
        if self.left == 0 {
            // The runs without bytes at the end; a run with bytes here
            // never got them.
            self.next_run()?;
        }
        if self.left != 0 {
            return Err(self.bad_count(format!(
                "{} bytes of announced pages never came (crust bug)",
                self.left
            )));
        }
        self.drain()?;
        self.conn.push()?;
        self.note_local()
    }
}

impl ServerStream<'_> {
    /// The pages sent counted in the local dump's statistics; a process's
    /// runs recorded beside its images ([`record_name`]).
    fn note_local(&self) -> Result<(), Error> {
        let Some(dir) = self.local else {
            return Ok(());
        };
        let (object, id) = match self.owner {
            PageOwner::Task { id, .. } => (false, id),
            PageOwner::Object { shmid, .. } => (true, shmid),
        };
        let pages_id = self.owner.pages_id();
        crate::mem::note_pages(
            dir,
            pages_id,
            object,
            self.scanned,
            self.written / PAGE_SIZE,
        );
        let (ty, name) = match object {
            true => (
                crust_images::image::ImageType::ShmemPagemap,
                object_record_name(id),
            ),
            false => (crust_images::image::ImageType::Pagemap, record_name(id)),
        };
        crate::mem::write_pagemap_named(dir, ty, &name, pages_id, &self.sent)
    }
}

/// lazy-pages' end of a connection to a page server that serves pages
/// (`page-server --lazy-pages` or `dump --lazy-pages`): PS_IOV_GET.
pub struct Remote {
    conn: Conn,
    /// PS_IOV_CLOSE said and answered.
    closed: bool,
}

impl Remote {
    pub fn new(conn: Conn) -> Remote {
        Remote {
            conn,
            closed: false,
        }
    }

    /// Ask for `nr_pages` pages of process `pid` at `vaddr`; the answer is
    /// read by [`Remote::reply`] (requests may be sent ahead).
    pub fn request(&mut self, pid: u64, vaddr: u64, nr_pages: u64) -> Result<(), Error> {
        if self.closed {
            return Err(ps_err(
                self.conn.peer(),
                format!("pages of process {pid} at {vaddr:#x} asked for after the close"),
                std::io::ErrorKind::NotConnected.into(),
            ));
        }
        self.conn.send_iov(&Iov {
            cmd: cmd::GET,
            nr_pages,
            vaddr,
            dst_id: pid,
        })?;
        self.conn.push()
    }

    /// The answer to the oldest request: its pages into the front of
    /// `buf` (which must hold as many as were asked for). Returns (pid,
    /// vaddr, pages), pages possibly fewer than asked. A server that has
    /// none of them closes the connection: an error.
    pub fn reply(&mut self, buf: &mut [u8]) -> Result<(u64, u64, u64), Error> {
        let peer = self.conn.peer().to_string();
        let Some(iov) = self.conn.recv_iov()? else {
            return Err(ps_err(
                &peer,
                "the page server closed the connection (it has not the pages asked for, or died)",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        };
        let len = iov.nr_pages.saturating_mul(PAGE_SIZE);
        let Some(dst) = usize::try_from(len).ok().and_then(|l| buf.get_mut(..l)) else {
            return Err(ps_err(
                &peer,
                format!(
                    "the page server sent {} pages, more than asked for",
                    iov.nr_pages
                ),
                std::io::ErrorKind::InvalidData.into(),
            ));
        };
        if iov.command() != cmd::ADD_F || iov.flags() & pe::PRESENT == 0 {
            return Err(ps_err(
                &peer,
                format!("unexpected answer {:#x} to a page request", iov.cmd),
                std::io::ErrorKind::InvalidData.into(),
            ));
        }
        self.conn
            .recv(dst, "cannot read pages from the page server")?;
        Ok((iov.dst_id, iov.vaddr, iov.nr_pages))
    }

    /// [`Remote::request`] then [`Remote::reply`]: pages received.
    pub fn get(
        &mut self,
        pid: u64,
        vaddr: u64,
        nr_pages: u64,
        buf: &mut [u8],
    ) -> Result<u64, Error> {
        self.request(pid, vaddr, nr_pages)?;
        Ok(self.reply(buf)?.2)
    }

    /// Tell the server all is done and wait for its status (once; a
    /// request after it is an error).
    pub fn close(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.conn.send_iov(&Iov {
            cmd: cmd::CLOSE,
            ..Default::default()
        })?;
        self.conn.push()?;
        let mut st = [0u8; 4];
        self.conn.recv(
            &mut st,
            "the page server did not confirm the end (PS_IOV_CLOSE)",
        )?;
        self.closed = true;
        // The server waits for the end of the stream after the close; the
        // daemon may keep this Remote until its last local page is in.
        self.conn.end_sending();
        let status = i32::from_ne_bytes(st);
        if status != 0 {
            let peer = self.conn.peer().to_string();
            return Err(ps_err(
                &peer,
                format!("the page server answered status {status} at the end"),
                std::io::Error::other("page server failed"),
            ));
        }
        Ok(())
    }
}
