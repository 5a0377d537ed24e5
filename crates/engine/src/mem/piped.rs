//! A frozen task's pages moved without a copy on crust's side: the task
//! itself vmsplices them into a pipe whose read end crust holds
//! ([`TaskPipe`], planted by the dump), and the page stream takes them
//! out of the pipe ([`PageStream::pipe_pages`]: a page server's stream
//! splices them to its socket). Pages that cannot be pinned, or that the
//! task cannot read, are copied as before.

use super::dump::ReadRun;
use super::pages::PageStream;
use super::BATCH;
use crate::util::sys_err;
use crate::Error;
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};
use log::{debug, warn};
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

/// A pipe in a frozen task: the task vmsplices its own pages into the
/// write end (a remote syscall), crust reads them from the read end.
pub trait TaskPipe {
    /// crust's read end.
    fn read_end(&self) -> BorrowedFd<'_>;
    /// Most bytes one [`TaskPipe::fill`] may queue (the pipe's capacity).
    fn capacity(&self) -> u64;
    /// Most pieces one fill takes.
    fn max_pieces(&self) -> usize;
    /// Queue the pages of `pieces` ((address, bytes), page-aligned, in
    /// order) into the empty pipe; returns the bytes queued, from the
    /// first piece on (fewer than asked when the pipe is full).
    fn fill(&mut self, pieces: &[(u64, u64)]) -> Result<u64, Error>;
}

/// Pieces gathered for the next fill.
struct Pending {
    pieces: Vec<(u64, u64)>,
    bytes: u64,
}

impl Pending {
    /// Drop the first `n` bytes (queued by a fill).
    fn consume(&mut self, mut n: u64) {
        let mut whole = 0;
        for p in self.pieces.iter_mut() {
            if n >= p.1 {
                n -= p.1;
                whole += 1;
                continue;
            }
            p.0 += n;
            p.1 -= n;
            break;
        }
        self.pieces.drain(..whole);
        self.bytes = self.pieces.iter().map(|p| p.1).sum();
    }
}

/// Copy state of [`pipe_task_pages`]: the pipe (None once it failed: the
/// rest is copied), and what copies need.
struct Mover<'a> {
    pid: i32,
    pipe: Option<&'a mut dyn TaskPipe>,
    mem_file: File,
    buf: Vec<u8>,
    bytes: u64,
    /// Fills made, and the time spent in them and in taking their bytes
    /// out of the pipe (for the debug log).
    fills: u64,
    fill_time: std::time::Duration,
    take_time: std::time::Duration,
}

impl Mover<'_> {
    /// Move what `pend` holds into `out`: through the pipe, or copied.
    fn flush(&mut self, pend: &mut Pending, out: &mut dyn PageStream) -> Result<(), Error> {
        while pend.bytes > 0 {
            let Some(pipe) = self.pipe.as_deref_mut() else {
                for (addr, len) in std::mem::take(&mut pend.pieces) {
                    self.copy(addr, len, true, out)?;
                }
                pend.bytes = 0;
                return Ok(());
            };
            let t0 = std::time::Instant::now();
            let filled = pipe.fill(&pend.pieces);
            self.fills += 1;
            self.fill_time += t0.elapsed();
            let n = match filled {
                Ok(n) if n > 0 && n <= pend.bytes && n % PAGE_SIZE == 0 => n,
                other => {
                    // Nothing may be left in the pipe: the bytes after
                    // it would come out of order.
                    let queued = crust_sys::pipe::queued_bytes(pipe.read_end()).unwrap_or(1);
                    let why = match other {
                        Ok(n) => format!("vmsplice queued {n} of {} bytes", pend.bytes),
                        Err(e) => e.to_string(),
                    };
                    if queued != 0 {
                        return Err(Error::Sys {
                            pid: self.pid,
                            op: format!(
                                "vmsplice of task pages failed with bytes in the pipe: {why}"
                            ),
                            source: std::io::Error::from_raw_os_error(libc::EIO),
                        });
                    }
                    warn!(
                        "{}: pages copied instead of spliced from here on: {why}",
                        self.pid
                    );
                    self.pipe = None;
                    continue;
                }
            };
            let t1 = std::time::Instant::now();
            out.pipe_pages(pipe.read_end(), n)?;
            self.take_time += t1.elapsed();
            self.bytes += n;
            pend.consume(n);
        }
        pend.pieces.clear();
        Ok(())
    }

    /// Copy `len` bytes at `addr` into `out` (`readable`: with
    /// process_vm_readv, else through /proc/PID/mem).
    fn copy(
        &mut self,
        addr: u64,
        len: u64,
        readable: bool,
        out: &mut dyn PageStream,
    ) -> Result<(), Error> {
        let pid = self.pid;
        if self.buf.is_empty() {
            self.buf = vec![0u8; BATCH];
        }
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(self.buf.len());
            let at = addr + done;
            let dst = self.buf.get_mut(..n).unwrap_or_default();
            let got = if readable {
                mem::read(pid, RemoteAddr(at), dst)
                    .map_err(sys_err(pid, format!("process_vm_readv at {at:#x}")))?
            } else {
                self.mem_file
                    .read_at(dst, at)
                    .map_err(sys_err(pid, format!("read /proc/PID/mem at {at:#x}")))?
            };
            if got != n {
                return Err(Error::Sys {
                    pid,
                    op: format!("short read of task memory at {at:#x} ({got} of {n} bytes)"),
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                });
            }
            out.pages(self.buf.get(..n).unwrap_or_default())?;
            self.bytes += n as u64;
            done += n as u64;
        }
        Ok(())
    }
}

/// Move the runs of task memory into `out` through `pipe` (the tree is
/// frozen: nothing changes the pages until the stream's reader has them),
/// in the order and with the bytes [`super::dump`]'s copy would give.
/// Returns the number of pages moved.
pub(super) fn pipe_task_pages(
    pid: i32,
    runs: &[ReadRun],
    out: &mut dyn PageStream,
    pipe: &mut dyn TaskPipe,
) -> Result<u64, Error> {
    let mem_file =
        File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))?;
    let cap = (pipe.capacity() / PAGE_SIZE).max(1) * PAGE_SIZE;
    let max_pieces = pipe.max_pieces().max(1);
    let mut m = Mover {
        pid,
        pipe: Some(pipe),
        mem_file,
        buf: Vec::new(),
        bytes: 0,
        fills: 0,
        fill_time: std::time::Duration::ZERO,
        take_time: std::time::Duration::ZERO,
    };
    let mut pend = Pending {
        pieces: Vec::with_capacity(max_pieces),
        bytes: 0,
    };
    for run in runs {
        let (mut addr, end) = (run.addr, run.addr + run.npages * PAGE_SIZE);
        if !run.readable || m.pipe.is_none() {
            m.flush(&mut pend, out)?;
            m.copy(addr, end - addr, run.readable, out)?;
            continue;
        }
        while addr < end {
            let take = (end - addr).min(cap - pend.bytes);
            pend.pieces.push((addr, take));
            pend.bytes += take;
            addr += take;
            if pend.bytes >= cap || pend.pieces.len() >= max_pieces {
                m.flush(&mut pend, out)?;
            }
        }
    }
    m.flush(&mut pend, out)?;
    let want: u64 = runs.iter().map(|r| r.npages * PAGE_SIZE).sum();
    if m.bytes != want {
        return Err(Error::Sys {
            pid,
            op: format!(
                "moving task memory stopped after {} of {want} bytes",
                m.bytes
            ),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        });
    }
    debug!(
        "{pid}: {} bytes of pages through the task's pipe: {} fills of it in {} us, taken out in {} us",
        m.bytes,
        m.fills,
        m.fill_time.as_micros(),
        m.take_time.as_micros()
    );
    Ok(want / PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_cuts_pieces() {
        let mut p = Pending {
            pieces: vec![(0x1000, 0x2000), (0x8000, 0x1000)],
            bytes: 0x3000,
        };
        p.consume(0x1000);
        assert_eq!(p.pieces, vec![(0x2000, 0x1000), (0x8000, 0x1000)]);
        assert_eq!(p.bytes, 0x2000);
        p.consume(0x1000);
        assert_eq!(p.pieces, vec![(0x8000, 0x1000)]);
        p.consume(0x1000);
        assert!(p.pieces.is_empty());
        assert_eq!(p.bytes, 0);
    }
}
