//! The guard of a lazy restore: a small process forked by the daemon, in a
//! session of its own, that holds a copy of every userfaultfd the daemon
//! serves and the pids of the restored tree.
//!
//! Why: a userfaultfd whose last holder goes away is unregistered, and the
//! threads waiting in it go on with empty (zero) pages. If the daemon dies
//! before every page is in, the guard's copies keep the tree's threads
//! waiting instead, and the guard kills the tree (SIGKILL to every process
//! and its descendants): a lazily restored tree is complete or killed,
//! never running on wrong memory, never left hanging. When the daemon is
//! done it tells the guard, which exits without touching the tree.
//!
//! Once the restore has let the tree go, the guard also becomes the tree's
//! tracer with PTRACE_O_EXITKILL ([`super::tracer`]): if the daemon and
//! the guard die together, the kernel kills the tree. It detaches when
//! the daemon is done.

use super::tracer::Tracer;
use crate::util::sys_err;
use crate::Error;
use crust_sys::process::{self, ForkResult};
use crust_sys::uffd::Uffd;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// The daemon's end of the guard.
pub struct Guard {
    sock: Option<OwnedFd>,
    pid: i32,
}

impl Guard {
    /// Fork the guard.
    pub fn start() -> Result<Guard, Error> {
        let me = process::getpid();
        let (ours, theirs) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET)
            .map_err(sys_err(me, "socketpair for the lazy-pages guard"))?;
        match process::clone3_fork(&[], 0).map_err(sys_err(me, "fork of the lazy-pages guard"))? {
            ForkResult::Parent { child } => {
                drop(theirs);
                log::debug!("lazy-pages: guard is {child}");
                Ok(Guard {
                    sock: Some(ours),
                    pid: child,
                })
            }
            ForkResult::Child => {
                drop(ours);
                // Out of the daemon's session and group: a signal to them
                // does not reach the guard.
                let _ = crust_sys::probe::setsid();
                process::exit_now(watch(theirs))
            }
        }
    }

    fn send(&mut self, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        let Some(s) = &self.sock else { return };
        let r = if fds.is_empty() {
            crust_sys::unix::send(s.as_fd(), data, None, libc::MSG_NOSIGNAL)
        } else {
            crust_sys::unix::send_with_fds(s.as_fd(), data, None, fds, libc::MSG_NOSIGNAL)
        };
        if let Err(e) = r {
            log::warn!("lazy-pages: the guard is gone ({e}): a death of the daemon would leave the tree unguarded");
            self.sock = None;
        }
    }

    /// Keep a copy of `uffd` (of process `pid`, if known).
    pub fn hold(&mut self, uffd: &Uffd, _pid: Option<i32>) {
        self.send(b"U", &[uffd.as_fd()]);
    }

    /// The host pids of the restored tree, killed if the daemon dies.
    pub fn tree(&mut self, pids: &[i32]) {
        let mut m = vec![b'P'];
        for p in pids {
            m.extend_from_slice(&p.to_ne_bytes());
        }
        self.send(&m, &[]);
    }

    /// The restore has let the tree go: the guard traces it (see
    /// [`super::tracer`]). Whether the guard says it traces every task.
    pub fn trace(&mut self) -> bool {
        self.send(b"T", &[]);
        let Some(s) = &self.sock else { return false };
        let mut b = [0u8; 1];
        loop {
            match crust_sys::unix::recvmsg(s.as_fd(), &mut b, 0) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(m) if m.len == 1 => return b == *b"S",
                _ => {
                    log::warn!("lazy-pages: the guard is gone: a death of the daemon would leave the tree unguarded");
                    self.sock = None;
                    return false;
                }
            }
        }
    }

    /// Every page is in: the guard lets go.
    pub fn done(&mut self) {
        self.send(b"D", &[]);
        self.reap();
    }

    /// The tree cannot be completed: the guard kills it.
    pub fn kill_tree(&mut self) {
        self.send(b"K", &[]);
        self.reap();
    }

    fn reap(&mut self) {
        self.sock = None;
        let _ = process::waitpid(self.pid, 0);
    }
}

/// The guard's loop; its exit code.
fn watch(sock: OwnedFd) -> i32 {
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    let mut tracer = Tracer::default();
    let mut sigchld = Sigchld::open();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if tracer.active() {
            // Stops and exits of the tree wait for the guard.
            let readable = sigchld.wait(Some(sock.as_fd()), None);
            tracer.reap(false);
            if !readable {
                continue;
            }
        }
        let m = match crust_sys::unix::recvmsg(sock.as_fd(), &mut buf, 0) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        held.extend(m.rights);
        match buf.get(..m.len) {
            Some([b'U', ..]) => {}
            Some([b'P', rest @ ..]) => {
                pids.extend(
                    rest.chunks_exact(4)
                        .filter_map(|c| c.try_into().ok().map(i32::from_ne_bytes))
                        .filter(|&p| p > 0),
                );
            }
            Some([b'T', ..]) => {
                let all = tracer.seize_tree(&pids);
                let _ = crust_sys::unix::send(
                    sock.as_fd(),
                    if all { b"S" } else { b"F" },
                    None,
                    libc::MSG_NOSIGNAL,
                );
            }
            Some([b'D', ..]) => {
                tracer.detach_all(&mut |d| {
                    sigchld.wait(None, Some(d));
                });
                return 0;
            }
            // 'K', or the daemon died (end of file).
            _ => break,
        }
    }
    pids.extend(tracer.tasks());
    kill_all(&pids);
    drop(held);
    // Exiting kills whatever is still traced (EXITKILL).
    1
}

/// SIGCHLD as a file the guard polls (blocked, read from a signalfd);
/// without one, the guard looks every 10 ms.
struct Sigchld(Option<std::fs::File>);

impl Sigchld {
    fn open() -> Sigchld {
        let fd = crust_sys::process::block_sigchld().ok().and_then(|()| {
            crust_sys::events::signalfd(
                1 << (libc::SIGCHLD - 1),
                libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
            )
            .ok()
        });
        Sigchld(fd.map(std::fs::File::from))
    }

    /// Sleep until `sock` is readable, a SIGCHLD came, or `limit` passed
    /// (10 ms without a signalfd). Whether `sock` is readable.
    fn wait(&mut self, sock: Option<BorrowedFd<'_>>, limit: Option<Duration>) -> bool {
        let mut fds: Vec<(BorrowedFd<'_>, i16)> = sock.iter().map(|s| (*s, libc::POLLIN)).collect();
        let ms = match (&self.0, limit) {
            (None, _) => 10,
            (Some(_), None) => -1,
            (Some(_), Some(d)) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        if let Some(f) = &self.0 {
            fds.push((f.as_fd(), libc::POLLIN));
        }
        let rev = crust_sys::uffd_missing::poll(&fds, ms);
        self.drain();
        sock.is_some() && rev.is_ok_and(|r| r.first().is_some_and(|&e| e != 0))
    }

    /// Read every pending SIGCHLD.
    fn drain(&mut self) {
        let Some(f) = &mut self.0 else { return };
        let mut b = [0u8; 128 * 8];
        while std::io::Read::read(f, &mut b).is_ok_and(|n| n > 0) {}
    }
}

/// SIGKILL to `pids` and every descendant of theirs, descendants found
/// first (a killed parent's children would move to a reaper).
fn kill_all(pids: &BTreeSet<i32>) {
    let mut all: BTreeSet<i32> = BTreeSet::new();
    let mut todo: Vec<i32> = pids.iter().copied().collect();
    while let Some(p) = todo.pop() {
        if !all.insert(p) {
            continue;
        }
        todo.extend(children(p));
    }
    for p in all.into_iter().filter(|&p| p > 0) {
        let _ = process::kill(p, libc::SIGKILL);
    }
}

/// The children of every thread of `pid`.
pub(super) fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
