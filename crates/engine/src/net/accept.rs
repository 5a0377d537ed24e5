//! Connections that were waiting in a listener's accept queue at dump time.
//!
//! The kernel has no way to put an established connection back into a
//! listener's accept queue. crust rebuilds each such connection (repair
//! mode, like any other) and queues a *stand-in* in its place: a real
//! loopback connection from crust to the listener, so the listener is
//! readable (poll, epoll) and `accept` returns at once, as it would have.
//! The tasks that hold the listener stay traced (PTRACE_SYSCALL) after the
//! restore; when one of them accepts a stand-in, crust swaps it, at the
//! syscall's exit, for the real connection (same fd number, the flags
//! accept4 asked for, the real peer's address written back), then lets go
//! of every task once all connections are handed over (or the tasks are
//! gone). This runs in a process of its own, so `restore -d` returns at
//! once.

use crate::files::fdpass::{self, Gift};
use crate::net::inet::AcceptQueue;
use crate::task::remote::Remote;
use crate::Error;
use crust_compel::Task;
use crust_sys::process::{self, WaitStatus};
use crust_sys::{ptrace, RemoteAddr};
use log::{debug, info, warn};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

const SYS_ACCEPT: u64 = libc::SYS_accept as u64;
const SYS_ACCEPT4: u64 = libc::SYS_accept4 as u64;

/// The traced tasks and the connections to hand over.
#[derive(Default)]
pub struct AcceptServer {
    /// Traced tasks (tids), running under PTRACE_SYSCALL.
    pub tasks: Vec<i32>,
    pub queues: Vec<AcceptQueue>,
}

impl AcceptServer {
    fn left(&self) -> usize {
        self.queues.iter().map(|q| q.conns.len()).sum()
    }

    /// Serve until every connection is handed over or no task is left,
    /// then let every task go. The end of `root` (this process's child),
    /// if seen meanwhile, is returned.
    pub fn run(mut self, root: i32) -> Option<WaitStatus> {
        let mut root_status = None;
        // Per task: inside a syscall (the next syscall stop is its exit).
        let mut insys: HashMap<i32, bool> = self.tasks.iter().map(|t| (*t, false)).collect();
        // Threads seen created whose first stop is still to come.
        let mut born: std::collections::HashSet<i32> = Default::default();
        info!(
            "Serving {} queued connection(s) to {} traced task(s)",
            self.left(),
            insys.len()
        );
        while self.left() > 0 && !insys.is_empty() {
            let (tid, st) = match process::waitpid(-1, 0) {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    warn!("accept server: waitpid: {e}");
                    break;
                }
            };
            match st {
                WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                    if tid == root {
                        root_status = Some(st);
                    }
                    insys.remove(&tid);
                }
                WaitStatus::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {
                    let inside = insys.entry(tid).or_insert(false);
                    *inside = !*inside;
                    if !*inside {
                        if let Err(e) = self.at_exit(tid) {
                            warn!("accept server: task {tid}: {e}");
                        }
                    }
                    let _ = ptrace::syscall(tid, 0);
                }
                // A new thread, or a child (forked after the restore: it
                // may accept too), traced from its birth.
                WaitStatus::Stopped { sig: _, event }
                    if event == libc::PTRACE_EVENT_CLONE
                        || event == libc::PTRACE_EVENT_FORK
                        || event == libc::PTRACE_EVENT_VFORK =>
                {
                    if let Ok(new) = ptrace::get_event_msg(tid) {
                        let new = new as i32;
                        // Its first stop (SIGSTOP) may have come already.
                        if !insys.contains_key(&new) {
                            born.insert(new);
                        }
                        insys.entry(new).or_insert(false);
                    }
                    let _ = ptrace::syscall(tid, 0);
                }
                WaitStatus::Stopped { sig: _, event } if event != 0 => {
                    let _ = ptrace::syscall(tid, 0);
                }
                WaitStatus::Stopped { sig, .. } => {
                    // A new thread's first stop, or a signal to deliver.
                    let fresh =
                        sig == libc::SIGSTOP && (born.remove(&tid) || !insys.contains_key(&tid));
                    insys.entry(tid).or_insert(false);
                    let _ = ptrace::syscall(tid, if fresh { 0 } else { sig });
                }
                WaitStatus::Continued => {}
            }
        }
        let tids: Vec<i32> = insys.keys().copied().collect();
        if let Some(s) = detach_all(&tids, root) {
            root_status = Some(s);
        }
        info!(
            "Accept server done: {} connection(s) left unhanded",
            self.left()
        );
        root_status
    }

    /// A syscall exit of `tid`: an accept of a stand-in is swapped.
    fn at_exit(&mut self, tid: i32) -> Result<(), Error> {
        let regs = ptrace::get_regs(tid).map_err(crate::util::sys_err(tid, "GETREGS"))?;
        if regs.orig_rax != SYS_ACCEPT && regs.orig_rax != SYS_ACCEPT4 {
            return Ok(());
        }
        let got = regs.rax as i64;
        if got < 0 {
            return Ok(());
        }
        let lfd = regs.rdi as i32;
        let me = process::getpid();
        let Some(qi) = self.queues.iter().position(|q| {
            !q.conns.is_empty()
                && process::kcmp_file(tid, me, lfd, q.listener.as_raw_fd()).unwrap_or(false)
        }) else {
            return Ok(());
        };
        // Is what it got one of the stand-ins?
        let tgid = tgid_of(tid).unwrap_or(tid);
        let pidfd =
            crust_sys::unix::pidfd_open(tgid).map_err(crate::util::sys_err(tid, "pidfd_open"))?;
        let acc = crust_sys::unix::pidfd_getfd(pidfd.as_fd(), got as i32).map_err(
            crate::util::sys_err(tid, "pidfd_getfd of an accepted socket"),
        )?;
        let peer = crust_sys::net::getpeername(acc.as_fd()).ok();
        drop(acc);
        let q = &mut self.queues[qi];
        let Some(si) = q.stand_ins.iter().position(|(_, a)| Some(*a) == peer) else {
            debug!("task {tid} accepted a new connection from {peer:?}");
            return Ok(());
        };
        let (conn, real_peer) = q.conns.pop_front().expect("checked non-empty");
        let flags = if regs.orig_rax == SYS_ACCEPT4 {
            regs.r10 as i32
        } else {
            0
        };
        if flags & libc::SOCK_NONBLOCK != 0 {
            let cur = crust_sys::pipe::status_flags(conn.as_fd()).unwrap_or(0);
            let _ = crust_sys::pipe::set_status_flags(conn.as_fd(), cur | libc::O_NONBLOCK);
        }
        let mut task =
            Task::at_syscall_stop(tid).map_err(|source| Error::Compel { pid: tid, source })?;
        // Scratch room on the task's stack, below the red zone.
        let scratch = (regs.rsp - 128 - 4096) & !15;
        {
            let mut r = Remote {
                task: &mut task,
                scratch: RemoteAddr(scratch),
                scratch_len: 4096,
                batch_code: None,
            };
            fdpass::give_fds(
                &mut r,
                &[Gift {
                    fd: conn.as_fd(),
                    target: got as i32,
                    cloexec: flags & libc::SOCK_CLOEXEC != 0,
                }],
            )?;
        }
        task.put_back()
            .map_err(|source| Error::Compel { pid: tid, source })?;
        // The peer's address, as accept writes it.
        if regs.rsi != 0 && regs.rdx != 0 {
            write_addr(tid, regs.rsi, regs.rdx, &real_peer);
        }
        q.stand_ins.remove(si);
        info!("task {tid}: fd {got} is the connection from {real_peer} that waited to be accepted");
        Ok(())
    }
}

/// Write `peer` at `addr` (a sockaddr buffer of `*lenp` bytes) and its
/// real length at `lenp`, as accept(2) does.
fn write_addr(tid: i32, addr: u64, lenp: u64, peer: &SocketAddr) {
    let mut len = [0u8; 4];
    if crust_sys::mem::read(tid, RemoteAddr(lenp), &mut len).is_err() {
        return;
    }
    let room = u32::from_ne_bytes(len) as usize;
    let bytes = crust_sys::net::to_bytes(peer);
    let n = room.min(bytes.len());
    let _ = crust_sys::mem::write(tid, RemoteAddr(addr), &bytes[..n]);
    let _ = crust_sys::mem::write(tid, RemoteAddr(lenp), &(bytes.len() as u32).to_ne_bytes());
}

fn tgid_of(tid: i32) -> Option<i32> {
    crust_proc::status(&crust_proc::ProcRoot::default(), tid)
        .ok()
        .map(|s| s.tgid)
}

/// Let every traced task go: each is stopped with a SIGSTOP of its own,
/// and detached at that stop with the signal discarded.
fn detach_all(tids: &[i32], root: i32) -> Option<WaitStatus> {
    let mut root_status = None;
    let mut waiting: HashMap<i32, ()> = HashMap::new();
    for &t in tids {
        let tgid = tgid_of(t).unwrap_or(t);
        if process::tgkill(tgid, t, libc::SIGSTOP).is_ok() {
            waiting.insert(t, ());
        }
    }
    while !waiting.is_empty() {
        let (tid, st) = match process::waitpid(-1, 0) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(_) => break,
        };
        match st {
            WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                if tid == root {
                    root_status = Some(st);
                }
                waiting.remove(&tid);
            }
            WaitStatus::Stopped { sig, event: 0 } if sig == libc::SIGSTOP => {
                let _ = ptrace::detach(tid, 0);
                waiting.remove(&tid);
            }
            WaitStatus::Stopped { sig, event: 0 } if sig != (libc::SIGTRAP | 0x80) => {
                let _ = ptrace::syscall(tid, sig);
            }
            WaitStatus::Stopped { .. } => {
                let _ = ptrace::syscall(tid, 0);
            }
            WaitStatus::Continued => {}
        }
    }
    root_status
}
