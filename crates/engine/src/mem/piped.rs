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

/// Pipes in a frozen task: the task vmsplices its own pages into their
/// write ends (remote syscalls), crust reads them from the read ends.
pub trait TaskPipe {
    /// How many pipes there are (at least one).
    fn pipes(&self) -> usize;
    /// crust's read end of pipe `i`.
    fn read_end(&self, i: usize) -> Option<BorrowedFd<'_>>;
    /// Most bytes one pipe takes in a fill (its capacity).
    fn capacity(&self) -> u64;
    /// Most pieces one pipe takes in a fill.
    fn max_pieces(&self) -> usize;
    /// Queue the pages of `groups[i]` ((address, bytes), page-aligned, in
    /// order) into empty pipe `i`, for each group given (no more groups
    /// than pipes); returns what each vmsplice returned (bytes queued,
    /// fewer than asked when the pipe is full, or `-errno`), in order.
    /// It may return fewer results than groups: those after a failure
    /// may not have run, and their pipes are empty.
    fn fill(&mut self, groups: &[&[(u64, u64)]]) -> Result<Vec<i64>, Error>;
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
    /// Move what `pend` holds into `out`: through the pipes, or copied.
    fn flush(&mut self, pend: &mut Pending, out: &mut dyn PageStream) -> Result<(), Error> {
        while pend.bytes > 0 {
            let Some(pipe) = self.pipe.as_deref_mut() else {
                for (addr, len) in std::mem::take(&mut pend.pieces) {
                    self.copy(addr, len, true, out)?;
                }
                pend.bytes = 0;
                return Ok(());
            };
            let groups = split_for(
                &pend.pieces,
                pipe.pipes(),
                pipe.capacity(),
                pipe.max_pieces(),
            );
            let slices: Vec<&[(u64, u64)]> = groups.iter().map(Vec::as_slice).collect();
            let t0 = std::time::Instant::now();
            let filled = pipe.fill(&slices);
            self.fills += 1;
            self.fill_time += t0.elapsed();
            let t1 = std::time::Instant::now();
            let taken = match filled {
                Ok(got) => take_filled(pipe, &groups, &got, out)?,
                Err(e) => Err(e.to_string()),
            };
            self.take_time += t1.elapsed();
            match taken {
                Ok(n) => {
                    self.bytes += n;
                    pend.consume(n);
                }
                Err(why) => {
                    // Nothing may be left in a pipe: the bytes after it
                    // would come out of order.
                    let queued = (0..pipe.pipes())
                        .map(|i| {
                            pipe.read_end(i)
                                .map_or(0, |fd| crust_sys::pipe::queued_bytes(fd).unwrap_or(1))
                        })
                        .sum::<usize>();
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
                }
            }
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

/// Cut `pieces` into at most `pipes` groups of at most `cap` bytes and
/// `max_pieces` pieces each, in order (a piece may be cut in two).
fn split_for(
    pieces: &[(u64, u64)],
    pipes: usize,
    cap: u64,
    max_pieces: usize,
) -> Vec<Vec<(u64, u64)>> {
    let cap = (cap / PAGE_SIZE).max(1) * PAGE_SIZE;
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut cur: Vec<(u64, u64)> = Vec::new();
    let mut bytes = 0;
    for &(mut addr, mut len) in pieces {
        while len > 0 {
            if bytes == cap || cur.len() >= max_pieces.max(1) {
                out.push(std::mem::take(&mut cur));
                bytes = 0;
                if out.len() >= pipes.max(1) {
                    return out;
                }
            }
            let take = len.min(cap - bytes);
            cur.push((addr, take));
            bytes += take;
            addr += take;
            len -= take;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Take the bytes a fill queued (`got[i]` in pipe `i`, `groups[i]` asked)
/// into `out`, in order, up to the first pipe that holds fewer than asked
/// (it is taken too); the pipes after it are emptied and their bytes
/// dropped (they are queued again by the next fill). Returns the bytes
/// taken, or why none could be (the caller then copies).
fn take_filled(
    pipe: &mut dyn TaskPipe,
    groups: &[Vec<(u64, u64)>],
    got: &[i64],
    out: &mut dyn PageStream,
) -> Result<Result<u64, String>, Error> {
    let mut taken = 0u64;
    let mut short = None;
    for (i, g) in groups.iter().enumerate() {
        let asked: u64 = g.iter().map(|p| p.1).sum();
        let n = got.get(i).copied().unwrap_or(0);
        let Some(fd) = pipe.read_end(i) else { break };
        if short.is_some() {
            if n > 0 {
                drop_queued(fd, n as u64)?;
            }
            continue;
        }
        if n <= 0 || n as u64 > asked || !(n as u64).is_multiple_of(PAGE_SIZE) {
            let why = match n {
                n if n < 0 => std::io::Error::from_raw_os_error(-n as i32).to_string(),
                n => format!("vmsplice queued {n} of {asked} bytes"),
            };
            if n > 0 {
                drop_queued(fd, n as u64)?;
            }
            short = Some(why);
            continue;
        }
        out.pipe_pages(fd, n as u64)?;
        taken += n as u64;
        if (n as u64) < asked {
            short = Some(String::new());
        }
    }
    match (taken, short) {
        (0, Some(why)) => Ok(Err(why)),
        (0, None) => Ok(Err("nothing was queued".into())),
        (n, _) => Ok(Ok(n)),
    }
}

/// Read and drop `n` bytes queued in a pipe.
fn drop_queued(fd: BorrowedFd<'_>, n: u64) -> Result<(), Error> {
    use std::io::Read;
    let mut f = fd
        .try_clone_to_owned()
        .map(File::from)
        .map_err(sys_err(0, "dup a pipe of pages"))?;
    let mut left = n;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        match f.read(buf.get_mut(..want).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => left -= k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(sys_err(0, "emptying a pipe of pages")(e)),
        }
    }
    Ok(())
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
    let pipes = pipe.pipes().max(1);
    let cap = (pipe.capacity() / PAGE_SIZE).max(1) * PAGE_SIZE * pipes as u64;
    let max_pieces = pipe.max_pieces().max(1) * pipes;
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
    use std::io::Write;
    use std::os::fd::{AsFd, OwnedFd};

    const P: u64 = PAGE_SIZE;

    #[test]
    fn split_for_fills_pipes_in_order() {
        let pieces = [(0x1000, 3 * P), (0x10000, P)];
        assert_eq!(
            split_for(&pieces, 2, 2 * P, 8),
            vec![
                vec![(0x1000, 2 * P)],
                vec![(0x1000 + 2 * P, P), (0x10000, P)]
            ]
        );
        // Out of pipes: the rest waits for the next fill.
        assert_eq!(split_for(&pieces, 1, 2 * P, 8), vec![vec![(0x1000, 2 * P)]]);
        // Out of pieces per pipe.
        let singles = [(0x1000, P), (0x3000, P), (0x5000, P)];
        assert_eq!(
            split_for(&singles, 2, 8 * P, 1),
            vec![vec![(0x1000, P)], vec![(0x3000, P)]]
        );
        assert!(split_for(&[], 2, P, 1).is_empty());
    }

    /// Pipes whose fills were done by the test.
    struct Pipes(Vec<(OwnedFd, OwnedFd)>);

    impl TaskPipe for Pipes {
        fn pipes(&self) -> usize {
            self.0.len()
        }
        fn read_end(&self, i: usize) -> Option<BorrowedFd<'_>> {
            self.0.get(i).map(|p| p.0.as_fd())
        }
        fn capacity(&self) -> u64 {
            2 * P
        }
        fn max_pieces(&self) -> usize {
            8
        }
        fn fill(&mut self, _: &[&[(u64, u64)]]) -> Result<Vec<i64>, Error> {
            Ok(Vec::new())
        }
    }

    /// A stream that keeps what it is given.
    #[derive(Default)]
    struct Kept(Vec<u8>);

    impl PageStream for Kept {
        fn runs(&mut self, _: &[super::super::pages::Run]) -> Result<(), Error> {
            Ok(())
        }
        fn pages(&mut self, b: &[u8]) -> Result<(), Error> {
            self.0.extend_from_slice(b);
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), Error> {
            Ok(())
        }
    }

    fn pipes_holding(bytes: &[&[u8]]) -> Pipes {
        Pipes(
            bytes
                .iter()
                .map(|b| {
                    let (r, w) = crust_sys::pipe::pipe2(libc::O_CLOEXEC).unwrap();
                    crust_sys::pipe::set_pipe_size(w.as_fd(), (4 * P) as u32).unwrap();
                    File::from(w.try_clone().unwrap()).write_all(b).unwrap();
                    (r, w)
                })
                .collect(),
        )
    }

    /// A short pipe is taken, those after it are emptied and not taken.
    #[test]
    fn take_filled_stops_after_a_short_pipe() {
        let a = vec![1u8; 2 * P as usize];
        let b = vec![2u8; P as usize];
        let c = vec![3u8; 2 * P as usize];
        let mut pipes = pipes_holding(&[&a, &b, &c]);
        let groups = vec![
            vec![(0x1000, 2 * P)],
            vec![(0x3000, 2 * P)],
            vec![(0x5000, 2 * P)],
        ];
        let mut out = Kept::default();
        let got = [2 * P as i64, P as i64, 2 * P as i64];
        let n = take_filled(&mut pipes, &groups, &got, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(n, 3 * P);
        assert_eq!(out.0, [a, b].concat());
        for i in 0..3 {
            let fd = pipes.read_end(i).unwrap();
            assert_eq!(crust_sys::pipe::queued_bytes(fd).unwrap(), 0);
        }
    }

    /// A first pipe that failed: nothing taken, why said, pipes empty.
    #[test]
    fn take_filled_says_why_nothing_went() {
        let c = vec![3u8; 2 * P as usize];
        let mut pipes = pipes_holding(&[&[], &c]);
        let groups = vec![vec![(0x1000, 2 * P)], vec![(0x3000, 2 * P)]];
        let mut out = Kept::default();
        let got = [-(libc::EFAULT as i64), 2 * P as i64];
        let why = take_filled(&mut pipes, &groups, &got, &mut out)
            .unwrap()
            .unwrap_err();
        assert!(why.contains("Bad address"), "{why}");
        assert!(out.0.is_empty());
        let fd = pipes.read_end(1).unwrap();
        assert_eq!(crust_sys::pipe::queued_bytes(fd).unwrap(), 0);
    }

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
