//! A dump to a page server moves a frozen process's pages without copying
//! them in crust, as CRIU's parasite does: a pipe is planted in the task
//! (pipe2 run by the task; crust takes the read end with pidfd_getfd and
//! the task's copy of it is closed), the task vmsplices its own pages into
//! the write end (remote syscalls from the tracer: ptrace is per thread),
//! and the page stream splices them from the read end to the socket.
//! The pipe, the scratch area and the registers are put back on every
//! path; any step of the planting that fails leaves the pages to the copy.
//! `CRUST_PS_SPLICE=0` turns it off.

use super::{catch_panic, syscall_site, Proc};
use crate::task::remote::Remote;
use crate::util::{compel_err, sys_err};
use crate::{mem, Error};
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, warn};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Scratch bytes in the task for vmsplice's iovecs: 1,024 of them
/// (UIO_MAXIOV).
const SCRATCH: u64 = 4 * PAGE_SIZE;

/// The largest pipe asked for (the kernel caps it at
/// /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE).
const MAX_PIPE: u64 = 16 << 20;

/// Is the spliced path wanted (`CRUST_PS_SPLICE=0` turns it off, for
/// comparison)?
pub(super) fn wanted() -> bool {
    std::env::var_os("CRUST_PS_SPLICE").is_none_or(|v| v != "0")
}

/// The pipe planted in a task, with the scratch area its iovecs go
/// through.
struct Planted<'t> {
    r: Remote<'t>,
    /// The write end's number in the task.
    wfd: i32,
    /// crust's read end.
    read: OwnedFd,
    cap: u64,
}

impl mem::TaskPipe for Planted<'_> {
    fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    fn capacity(&self) -> u64 {
        self.cap
    }

    fn max_pieces(&self) -> usize {
        (SCRATCH / 16) as usize
    }

    fn fill(&mut self, pieces: &[(u64, u64)]) -> Result<u64, Error> {
        let n = pieces.len().min(self.max_pieces());
        let mut iov = Vec::with_capacity(n * 16);
        for (addr, len) in pieces.iter().take(n) {
            iov.extend_from_slice(&addr.to_ne_bytes());
            iov.extend_from_slice(&len.to_ne_bytes());
        }
        let at = self.r.put(0, &iov)?;
        // Non-blocking: the pipe is empty and takes `cap` bytes, so a fill
        // never waits in the task (a task blocked there when crust dies
        // would stay so).
        let flags = libc::SPLICE_F_NONBLOCK as u64;
        let args = [self.wfd as u64, at.get(), n as u64, flags, 0, 0];
        self.r.call("vmsplice", libc::SYS_vmsplice, args)
    }
}

/// Run `f` with a pipe planted in process `p` (frozen, its state already
/// read), or with None when it cannot be planted; the task is put back
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
        let mapped = syscall_site(main, pid, vmas).and_then(|_| {
            let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            (main.syscall(libc::SYS_mmap, [0, SCRATCH, prot, flags, u64::MAX, 0]))
                .map_err(compel_err(pid))
        });
        let a = match mapped {
            Ok(a) => a,
            Err(e) => {
                warn!("{pid}: no scratch area for a pipe, the pages are copied: {e}");
                return f(None);
            }
        };
        area = Some(a);
        let mut r = Remote {
            task: &mut *main,
            scratch: RemoteAddr(a),
            scratch_len: SCRATCH,
            batch_code: None,
        };
        let (wfd, read) = match plant(&mut r) {
            Ok(v) => v,
            Err(e) => {
                warn!("{pid}: no pipe for the pages, they are copied: {e}");
                return f(None);
            }
        };
        let cap = crust_sys::pipe::pipe_size(read.as_fd()).map_or(0, u64::from);
        debug!("{pid}: pipe planted (fd {wfd} in the task, {cap} bytes)");
        let mut planted = Planted { r, wfd, read, cap };
        let got = f(Some(&mut planted));
        let Planted { mut r, wfd, .. } = planted;
        let closed = r.call(
            "close the pages' pipe",
            libc::SYS_close,
            [wfd as u64, 0, 0, 0, 0, 0],
        );
        let v = got?;
        closed.map(|_| v)
    });
    let unmapped = match area {
        Some(a) => main
            .syscall(libc::SYS_munmap, [a, SCRATCH, 0, 0, 0, 0])
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
