//! A dump to a page server moves a frozen process's pages without copying
//! them in crust, as CRIU's parasite does: pipes are planted in the task
//! (pipe2 run by the task; crust takes each read end with pidfd_getfd and
//! the task's copy of it is closed), the task vmsplices its own pages into
//! the write ends (remote syscalls from the tracer: ptrace is per thread),
//! and the page stream splices them from the read ends to the socket.
//! A pipe holds at most /proc/sys/fs/pipe-max-size (1 MiB by default; more
//! needs CAP_SYS_RESOURCE), so there are [`PIPES`] of them, filled in one
//! resume of the task by the batch loop (`crust_compel::BATCH_CODE`) where
//! the scratch area could be made executable, and drained to the socket
//! one after the other. Measured on 1 GiB to a page server on loopback
//! (`CRUST_PS_PIPES=N`, 6 runs each): one pipe 483 ms median, two 450;
//! four and eight were slower than one (each fill then leaves the socket
//! idle longer than a single pipe's round trip).
//! The pipes, the scratch area and the registers are put back on every
//! path; any step of the planting that fails leaves the pages to the copy.
//! `CRUST_PS_SPLICE=0` turns it off.

use super::{catch_panic, scratch_area, syscall_site, Proc};
use crate::task::remote::{Batch, Remote};
use crate::util::{compel_err, sys_err};
use crate::{mem, Error};
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, warn};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Scratch bytes in the task: the vmsplice iovecs of every pipe, then the
/// batch's table in the last page.
const SCRATCH: u64 = 16 * PAGE_SIZE;

/// Where the batch's table goes in the scratch area.
const TABLE_OFF: u64 = SCRATCH - PAGE_SIZE;

/// Pipes planted in a task (`CRUST_PS_PIPES` sets it, for measuring).
const PIPES: usize = 2;

/// The largest pipe asked for (the kernel caps it at
/// /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE).
const MAX_PIPE: u64 = 16 << 20;

/// Is the spliced path wanted (`CRUST_PS_SPLICE=0` turns it off, for
/// comparison)?
pub(super) fn wanted() -> bool {
    std::env::var_os("CRUST_PS_SPLICE").is_none_or(|v| v != "0")
}

/// A pipe planted in a task: the write end's number in the task, crust's
/// read end.
struct OnePipe {
    wfd: i32,
    read: OwnedFd,
}

/// The pipes planted in a task, with the scratch area their iovecs go
/// through.
struct Planted<'t> {
    r: Remote<'t>,
    pipes: Vec<OnePipe>,
    /// The capacity of each (the smallest of them).
    cap: u64,
}

impl mem::TaskPipe for Planted<'_> {
    fn pipes(&self) -> usize {
        self.pipes.len()
    }

    fn read_end(&self, i: usize) -> Option<BorrowedFd<'_>> {
        self.pipes.get(i).map(|p| p.read.as_fd())
    }

    fn capacity(&self) -> u64 {
        self.cap
    }

    fn max_pieces(&self) -> usize {
        let iovecs = (TABLE_OFF / 16) as usize;
        (iovecs / self.pipes.len().max(1)).min(1024)
    }

    fn fill(&mut self, groups: &[&[(u64, u64)]]) -> Result<Vec<i64>, Error> {
        let per = self.max_pieces();
        let mut iov = Vec::new();
        let mut calls = Vec::new();
        for (g, p) in groups.iter().zip(&self.pipes) {
            let n = g.len().min(per);
            let off = iov.len() as u64;
            for (addr, len) in g.iter().take(n) {
                iov.extend_from_slice(&addr.to_ne_bytes());
                iov.extend_from_slice(&len.to_ne_bytes());
            }
            calls.push((p.wfd, off, n as u64));
        }
        let base = self.r.put(0, &iov)?.get();
        // Non-blocking: each pipe is empty and takes `cap` bytes, so a fill
        // never waits in the task (a task blocked there when crust dies
        // would stay so).
        let flags = libc::SPLICE_F_NONBLOCK as u64;
        let args = |(wfd, off, n): (i32, u64, u64)| [wfd as u64, base + off, n, flags, 0, 0];
        if self.r.batch_code.is_none() {
            // One at a time; a failure ends the fill (what follows stays
            // unqueued, as the caller reads a short fill).
            let mut out = Vec::with_capacity(calls.len());
            for c in calls {
                let got = self.r.task.syscall_raw(libc::SYS_vmsplice, args(c));
                let got = got.map_err(compel_err(self.r.pid()))?;
                out.push(got);
                if got <= 0 {
                    break;
                }
            }
            return Ok(out);
        }
        let mut b = Batch::with_table_at(self.r.batch_code, TABLE_OFF);
        for c in calls {
            b.push_may_fail(&mut self.r, "vmsplice".into(), libc::SYS_vmsplice, args(c))?;
        }
        Ok(b.flush(&mut self.r)?
            .into_iter()
            .map(|v| v as i64)
            .collect())
    }
}

/// Run `f` with pipes planted in process `p` (frozen, its state already
/// read), or with None when none can be planted; the task is put back
/// as it was whatever happens (an error putting it back fails the dump).
pub(super) fn with_pipe<T>(
    p: &mut Proc,
    vmas: &[mem::Vma],
    f: impl FnOnce(Option<&mut dyn mem::TaskPipe>) -> Result<T, Error>,
) -> Result<T, Error> {
    let pid = p.pid;
    let Some(main) = p.threads.first_mut() else {
        return f(None);
    };
    let mut area = None;
    let out = catch_panic(|| {
        let mapped = syscall_site(main, pid, vmas).and_then(|_| scratch_area(main, pid, SCRATCH));
        let (a, len, code) = match mapped {
            Ok(v) => v,
            Err(e) => {
                warn!("{pid}: no scratch area for a pipe, the pages are copied: {e}");
                return f(None);
            }
        };
        area = Some((a, len));
        let mut r = Remote {
            task: &mut *main,
            scratch: RemoteAddr(a + (len - SCRATCH)),
            scratch_len: SCRATCH,
            batch_code: code,
        };
        let want = std::env::var("CRUST_PS_PIPES")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(PIPES, |n: usize| n.clamp(1, 16));
        let mut pipes = Vec::with_capacity(want);
        while pipes.len() < want {
            match plant(&mut r) {
                Ok((wfd, read)) => pipes.push(OnePipe { wfd, read }),
                Err(e) if pipes.is_empty() => {
                    warn!("{pid}: no pipe for the pages, they are copied: {e}");
                    return f(None);
                }
                Err(e) => {
                    debug!("{pid}: {} pipes planted, not more: {e}", pipes.len());
                    break;
                }
            }
        }
        let cap = (pipes.iter())
            .map(|p| crust_sys::pipe::pipe_size(p.read.as_fd()).map_or(0, u64::from))
            .min()
            .unwrap_or(0);
        debug!(
            "{pid}: {} pipes planted ({cap} bytes each), filled {}",
            pipes.len(),
            if code.is_some() {
                "in one resume"
            } else {
                "one by one"
            }
        );
        let mut planted = Planted { r, pipes, cap };
        let got = f(Some(&mut planted));
        let Planted { mut r, pipes, .. } = planted;
        let mut closed = Ok(0);
        for p in pipes {
            let c = r.call(
                "close the pages' pipe",
                libc::SYS_close,
                [p.wfd as u64, 0, 0, 0, 0, 0],
            );
            closed = closed.and(c);
        }
        let v = got?;
        closed.map(|_| v)
    });
    let unmapped = match area {
        Some((a, len)) => main
            .syscall(libc::SYS_munmap, [a, len, 0, 0, 0, 0])
            .map(drop),
        None => Ok(()),
    };
    main.cure().map_err(compel_err(pid))?;
    let v = out?;
    unmapped.map_err(compel_err(pid))?;
    Ok(v)
}

/// pipe2 in the task; the read end taken by crust and closed in the task
/// (so that, crust gone, the task's write end has no reader and nothing
/// can wait on it), the pipe made as large as allowed. Returns the write
/// end's number in the task and crust's read end. On an error the task
/// holds no end of it.
fn plant(r: &mut Remote<'_>) -> Result<(i32, OwnedFd), Error> {
    let pid = r.pid();
    let at = r.at(0).get();
    r.call(
        "pipe2",
        libc::SYS_pipe2,
        [at, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
    )?;
    let fds = r.get(0, 8)?;
    let fd = |i: usize| {
        fds.get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(-1, i32::from_ne_bytes)
    };
    let (rfd, wfd) = (fd(0), fd(1));
    let taken = crust_sys::unix::pidfd_open(pid)
        .and_then(|pidfd| crust_sys::unix::pidfd_getfd(pidfd.as_fd(), rfd))
        .map_err(sys_err(pid, "pidfd_getfd of the pages' pipe"));
    let close =
        |r: &mut Remote<'_>, fd: i32| r.call("close", libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
    let closed = close(r, rfd);
    let read = match (taken, closed) {
        (Ok(read), Ok(_)) => read,
        (Err(e), _) | (_, Err(e)) => {
            let _ = close(r, wfd);
            return Err(e);
        }
    };
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_PIPE);
    if max > 0 {
        let _ = crust_sys::pipe::set_pipe_size(read.as_fd(), max as u32);
    }
    Ok((wfd, read))
}
