//! Lazy restore (issue 15): `restore --lazy-pages` leaves the pages of a
//! process's private anonymous memory out, registers that memory with a
//! userfaultfd of the process, and hands the userfaultfd to the lazy-pages
//! daemon ([`daemon`]), which puts each page in when a thread touches it
//! and the rest in the background.
//!
//! CRIU's model and protocol: the daemon (`lazy-pages`) listens on the
//! unix socket `lazy-pages.socket` in the work directory; the restore
//! connects once and sends, for each process, its pid in the images (an
//! `i32`) then the userfaultfd (SCM_RIGHTS), and once all are sent the
//! word [`RESTORE_FINISHED`]. Which memory is lazy is CRIU's rule
//! ([`can_be_lazy`]), applied by both sides to the images.
//!
//! crust differs from CRIU in who makes the userfaultfd: the process makes
//! it (a remote syscall, while it is still root and before its
//! credentials), crust takes a copy with pidfd_getfd and closes the
//! process's own, so the restored fd table is exactly the images'. The
//! ranges are registered at the end of the restore, once every process
//! exists (a registered process that forks blocks until the daemon reads
//! the fork event).

// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod daemon;
mod guard;
pub(crate) mod iovs;
pub mod marks;
pub mod remote;
mod tracer;

use crate::mem::{FillRun, PageRun, PageSource};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_sys::uffd::Uffd;
use crust_sys::uffd_missing::{LAZY_CREATE_FLAGS, LAZY_FEATURES};
use crust_sys::unix::{pidfd_getfd, pidfd_open};
use std::ops::Range;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

/// The daemon's socket, in the work directory (CRIU's name).
pub const SOCKET_NAME: &str = "lazy-pages.socket";
/// The word the restore sends once every process was sent ("RSTF").
pub const RESTORE_FINISHED: u32 = 0x5253_5446;
const PAGE: u64 = 4096;

/// CRIU's rule of which VMAs may be restored lazily: private anonymous
/// memory, not locked, not hugetlb, not the vDSO, vvar or vsyscall.
pub fn can_be_lazy(v: &VmaEntry) -> bool {
    crate::mem::entry_can_be_lazy(v)
}

/// The ranges of `mm` a lazy restore leaves to the daemon: its lazy VMAs
/// (merged where they touch), less the `eager` ranges (VMAs kept from the
/// parent, pages the kernel writes while the restore runs), sorted.
pub fn lazy_ranges(mm: &MmEntry, eager: &[Range<u64>]) -> Vec<Range<u64>> {
    let lazy: Vec<Range<u64>> = mm
        .vmas
        .iter()
        .filter(|v| can_be_lazy(v) && v.start < v.end)
        .map(|v| v.start..v.end)
        .collect();
    iovs::subtract(iovs::merge(lazy), &iovs::merge(eager.to_vec()))
}

/// The pages holding the rseq areas of `rseq` (address, size): the kernel
/// writes them as soon as rseq is registered, while the restore runs, so
/// they are filled at once.
pub fn rseq_pages(rseq: impl Iterator<Item = (u64, u64)>) -> Vec<Range<u64>> {
    rseq.filter(|&(a, _)| a != 0)
        .map(|(a, n)| {
            let s = a & !(PAGE - 1);
            let e = a.saturating_add(n.max(1)).saturating_add(PAGE - 1) & !(PAGE - 1);
            s..e
        })
        .collect()
}

/// A page source that leaves the pages of the lazy ranges out of the
/// fill: the rest comes from `inner`.
pub struct LazySource<'a> {
    inner: &'a dyn PageSource,
    lazy: Vec<Range<u64>>,
}

impl<'a> LazySource<'a> {
    pub fn new(inner: &'a dyn PageSource, lazy: Vec<Range<u64>>) -> LazySource<'a> {
        LazySource { inner, lazy }
    }
}

/// The parts of `runs` outside `lazy` (sorted, apart).
fn eager_part(runs: &[FillRun], lazy: &[Range<u64>]) -> Vec<FillRun> {
    let mut out = Vec::with_capacity(runs.len());
    for &(addr, len, off) in runs {
        let end = addr.saturating_add(len);
        for piece in iovs::subtract(std::iter::once(addr..end).collect(), lazy) {
            out.push((
                piece.start,
                piece.end - piece.start,
                off + (piece.start - addr),
            ));
        }
    }
    out
}

impl PageSource for LazySource<'_> {
    fn task_runs(&self, id: i32, mm: &MmEntry) -> Result<(u32, Vec<PageRun>), Error> {
        self.inner.task_runs(id, mm)
    }

    fn object_runs(
        &self,
        shmid: u64,
        size: u64,
        what: &str,
    ) -> Result<crate::mem::ObjectPages, Error> {
        self.inner.object_runs(shmid, size, what)
    }

    fn fill(
        &self,
        pid: i32,
        pages_id: u32,
        runs: &[FillRun],
        keep: &[FillRun],
        uffd: Option<crate::mem::UffdFill>,
    ) -> Arc<crate::mem::Pending> {
        // `keep` runs are in VMAs kept from the parent: never lazy.
        self.inner
            .fill(pid, pages_id, &eager_part(runs, &self.lazy), keep, uffd)
    }

    fn fill_now(&self, pid: i32, pages_id: u32, runs: &[FillRun]) -> Result<(), Error> {
        self.inner.fill_now(pid, pages_id, runs)
    }
}

/// A restored process whose lazy memory a userfaultfd will serve.
#[derive(Debug)]
pub struct LazyTask {
    /// Its pid in the images (what the daemon reads the images by).
    pub pid: i32,
    /// Its pid as crust sees it.
    pub host: i32,
    uffd: Uffd,
    ranges: Vec<Range<u64>>,
}

/// Have the process (stopped, on the trampoline, still with crust's
/// credentials) make its userfaultfd, take it into crust and close the
/// process's own: its fd table is left as it was. The features of a
/// non-cooperative handler are asked for here (fork, mremap, remove,
/// unmap events).
pub fn open_in_task(
    r: &mut Remote<'_>,
    pid: i32,
    ranges: Vec<Range<u64>>,
) -> Result<LazyTask, Error> {
    let host = r.pid();
    let fd = r.call(
        "userfaultfd",
        libc::SYS_userfaultfd,
        [LAZY_CREATE_FLAGS, 0, 0, 0, 0, 0],
    )?;
    let taken = pidfd_open(host)
        .and_then(|p| pidfd_getfd(p.as_fd(), fd as i32))
        .map_err(sys_err(host, format!("taking its userfaultfd (fd {fd})")));
    r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    let uffd = Uffd::from_fd(taken?);
    uffd.api(LAZY_FEATURES).map_err(sys_err(
        host,
        "asking userfaultfd for fork, mremap, remove and unmap events",
    ))?;
    Ok(LazyTask {
        pid,
        host,
        uffd,
        ranges,
    })
}

/// crust's daemon's first word, once it accepted the restore's connection.
pub const HELLO: u8 = b'C';
/// crust's daemon's word after [`RESTORE_FINISHED`]: the tree may go,
/// and the daemon wants to hear when it did ([`RELEASED`]).
pub const GO: u8 = b'G';
/// The restore's word once the tree runs: the daemon's guard traces it.
pub const RELEASED: u8 = b'R';
/// The daemon's answer to [`RELEASED`]: its guard traces every task of
/// the tree (`S`) or not all of them (`F`).
pub const TRACED: u8 = b'S';
pub const NOT_ALL_TRACED: u8 = b'F';

/// Register every task's lazy ranges (MISSING mode) and send the tasks to
/// the lazy-pages daemon listening in `work_dir`. Called once every
/// process of the tree exists and is built, before any runs. On error the
/// caller kills the tree. With crust's daemon, a [`Handover`] to tell it
/// once the tree runs; the caller keeps the userfaultfds until then.
pub fn hand_over(tasks: &[LazyTask], work_dir: &Path) -> Result<Option<Handover>, Error> {
    let me = crust_sys::process::getpid();
    for t in tasks {
        for r in &t.ranges {
            t.uffd
                .register_missing(r.start, r.end - r.start)
                .map_err(sys_err(
                    t.host,
                    format!(
                        "registering {:#x}-{:#x} with its userfaultfd for lazy restore",
                        r.start, r.end
                    ),
                ))?;
        }
    }
    let path = work_dir.join(SOCKET_NAME);
    let sock = std::os::unix::net::UnixStream::connect(&path).map_err(sys_err(
        me,
        format!(
            "connecting to the lazy-pages daemon at {} (start `crust lazy-pages` with the same \
             images and work directory first)",
            path.display()
        ),
    ))?;
    let crust_daemon = greeting(&sock)?;
    for t in tasks {
        let what = format!("sending process {} to the lazy-pages daemon", t.pid);
        crust_sys::unix::send(sock.as_fd(), &t.pid.to_ne_bytes(), None, 0)
            .map_err(sys_err(me, what.clone()))?;
        crust_sys::unix::send_with_fds(sock.as_fd(), &[0u8], None, &[t.uffd.as_fd()], 0)
            .map_err(sys_err(me, what))?;
    }
    crust_sys::unix::send(sock.as_fd(), &RESTORE_FINISHED.to_ne_bytes(), None, 0).map_err(
        sys_err(me, "telling the lazy-pages daemon the restore is finished"),
    )?;
    log::info!(
        "lazy restore: {} processes handed to the lazy-pages daemon",
        tasks.len()
    );
    if !crust_daemon {
        // CRIU's daemon: the tree runs at once.
        return Ok(None);
    }
    // crust's daemon says GO once its guard knows the tree (see `daemon`);
    // the tree runs only then. The end of the connection first: the
    // daemon failed or died, the tree is killed.
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let mut word = [0u8; 1];
    match std::io::Read::read(&mut &sock, &mut word) {
        Ok(1) if word == [GO] => Ok(Some(Handover { sock })),
        Ok(_) => Err(Error::Restore {
            pid: me,
            what: "the lazy-pages daemon went away before the tree ran (see its log)".into(),
        }),
        Err(e) => Err(sys_err(me, "waiting for the lazy-pages daemon's go")(e)),
    }
}

/// Whether the daemon at the end of `sock` is crust's: it says [`HELLO`]
/// when it accepts. CRIU's says nothing: a daemon that is the same
/// program as this one is waited for, any other 3 s. The end of the
/// connection: the daemon died.
fn greeting(sock: &std::os::unix::net::UnixStream) -> Result<bool, Error> {
    let me = crust_sys::process::getpid();
    let same = crust_sys::unix::peer_cred(sock.as_fd())
        .ok()
        .and_then(|(pid, _, _)| {
            let peer = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
            let mine = std::fs::metadata("/proc/self/exe").ok()?;
            use std::os::unix::fs::MetadataExt;
            Some(pid > 0 && peer.dev() == mine.dev() && peer.ino() == mine.ino())
        })
        .unwrap_or(false);
    let wait = std::time::Duration::from_secs(if same { 60 } else { 3 });
    let _ = sock.set_read_timeout(Some(wait));
    let mut word = [0u8; 1];
    match std::io::Read::read(&mut &*sock, &mut word) {
        Ok(1) if word == [HELLO] => Ok(true),
        Err(e)
            if !same
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
        {
            log::info!("lazy restore: the lazy-pages daemon says nothing: CRIU's, the tree runs once handed over");
            Ok(false)
        }
        Ok(_) => Err(Error::Restore {
            pid: me,
            what: "the lazy-pages daemon closed the connection at once (see its log)".into(),
        }),
        Err(e) => Err(sys_err(me, "waiting for the lazy-pages daemon's greeting")(
            e,
        )),
    }
}

/// The connection to crust's lazy-pages daemon after the hand-over.
pub struct Handover {
    sock: std::os::unix::net::UnixStream,
}

impl Handover {
    /// The tree runs: the daemon's guard becomes its tracer (see
    /// `lazy/tracer.rs`). An error when the daemon went away first (its
    /// guard, if alive, killed the tree; the caller kills what is left).
    pub fn released(self) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        let gone = |why: String| Error::Restore {
            pid: me,
            what: format!("the lazy-pages daemon went away before its guard took the tree ({why})"),
        };
        crust_sys::unix::send(self.sock.as_fd(), &[RELEASED], None, libc::MSG_NOSIGNAL)
            .map_err(|e| gone(e.to_string()))?;
        let _ = self
            .sock
            .set_read_timeout(Some(std::time::Duration::from_secs(60)));
        let mut word = [0u8; 1];
        match std::io::Read::read(&mut &self.sock, &mut word) {
            Ok(1) if word == [TRACED] => {
                log::info!("lazy restore: the daemon's guard traces the tree");
                Ok(())
            }
            Ok(1) if word == [NOT_ALL_TRACED] => {
                log::warn!(
                    "lazy restore: the daemon's guard could not trace every task: killing the \
                     daemon and the guard together may let those run on zero pages"
                );
                Ok(())
            }
            Ok(_) => Err(gone("end of file".into())),
            Err(e) => Err(gone(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eager_part_cuts_lazy_ranges_out_keeping_offsets() {
        let runs = [(0x1000, 0x4000, 0), (0x10000, 0x1000, 0x4000)];
        let lazy = [0x2000..0x3000, 0x10000..0x20000];
        assert_eq!(
            eager_part(&runs, &lazy),
            vec![(0x1000, 0x1000, 0), (0x3000, 0x2000, 0x2000)]
        );
    }

    #[test]
    fn rseq_page_covers_an_area_across_a_page_end() {
        assert_eq!(
            rseq_pages([(0x1ff0, 32), (0, 32)].into_iter()),
            vec![0x1000..0x3000]
        );
    }
}
