//! crust-compel: take control of a task with ptrace and run code in it.
//!
//! A [`Task`] is a thread stopped under ptrace. It can be inspected
//! (registers, XSAVE area, signal mask, pending signals, rseq) and made to
//! execute system calls in its own context ("remote syscalls"): crust points
//! the registers at a syscall instruction, steps the task through the
//! syscall's entry and exit stops (PTRACE_SYSCALL) and reads the result;
//! at a syscall instruction followed by crust's own `int3`
//! ([`Task::use_trapping_syscall_ip`]) it resumes the task once and reads
//! the result at the trap.
//! Signals are blocked while remote syscalls run so that none is consumed
//! by accident.
//!
//! The syscall instruction is either one crust writes over the first bytes
//! of an executable mapping ([`Task::infect`], undone by [`Task::cure`]), or
//! one that already exists at a known address ([`Task::use_syscall_ip`],
//! used by restore, which maps its own trampoline page).

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crust_sys::process::{self, WaitStatus};
use crust_sys::ptrace::{self, UserRegs};
use crust_sys::RemoteAddr;
use std::io;
use std::time::{Duration, Instant};

/// `syscall; int3; int3; ...` — the 8 bytes written at the syscall ip
/// (only the `syscall` is executed; the int3s guard against running on).
pub const SYSCALL_INSN: [u8; 8] = [0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];

/// Where [`BATCH_CODE`] sits in restore's trampoline page, from its start
/// (after [`SYSCALL_INSN`] and a run of int3s).
pub const BATCH_OFFSET: u64 = 64;

/// A loop that runs a table of syscalls ([`Task::syscall_batch`]): r12
/// points at the table, r13 holds the number of entries. An entry is eight
/// words: the syscall number, its six arguments, and the result, written
/// back. The loop stops at the first result in -4095..-1 (an errno) or at
/// the end, on an int3; r13 then holds the entries not run after the
/// stop (0: all ran).
///
/// ```text
/// 0x00 test r13, r13          0x27 syscall
/// 0x03 je 0x3f                0x29 mov [r12+56], rax
/// 0x05 mov rax, [r12]         0x2e cmp rax, -4095
/// 0x09 mov rdi, [r12+8]       0x34 jae 0x3f
/// 0x0e mov rsi, [r12+16]      0x36 add r12, 64
/// 0x13 mov rdx, [r12+24]      0x3a dec r13
/// 0x18 mov r10, [r12+32]      0x3d jmp 0x00
/// 0x1d mov r8, [r12+40]       0x3f int3
/// 0x22 mov r9, [r12+48]
/// ```
pub const BATCH_CODE: [u8; 64] = [
    0x4d, 0x85, 0xed, 0x74, 0x3a, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b,
    0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44,
    0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x48, 0x3d,
    0x01, 0xf0, 0xff, 0xff, 0x73, 0x09, 0x49, 0x83, 0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc1, 0xcc,
];

/// Bytes of one entry of a syscall table run by [`BATCH_CODE`].
pub const BATCH_ENTRY: u64 = 64;

/// Where [`PARK_CODE`] sits in restore's trampoline page, from its start
/// (in the run of int3s between [`SYSCALL_INSN`] and [`BATCH_CODE`]).
pub const PARK_OFFSET: u64 = 8;

/// Where a task waits, untraced, while one tracer thread hands it to
/// another ([`Task::park_and_detach`], [`Task::seize_parked`]): it arms a
/// parent-death SIGKILL (a task let go by a tracer that then dies goes with
/// its parent, as a traced one goes with EXITKILL); if its parent (r12, as
/// the task sees it) is gone already, it exits (status 137); else it waits
/// in `pause` for ever (its signals are blocked: only the new tracer's
/// interrupt stops it, and a SIGKILL ends it). No signal is sent to it, so
/// its parent is told of nothing.
///
/// ```text
/// 0x00 mov edi, 1     (PR_SET_PDEATHSIG)   0x1b jne 0x26
/// 0x05 mov esi, 9     (SIGKILL)            0x1d mov eax, 34 (pause)
/// 0x0a mov eax, 157   (prctl)              0x22 syscall
/// 0x0f syscall                             0x24 jmp 0x1d
/// 0x11 mov eax, 110   (getppid)            0x26 mov edi, 137
/// 0x16 syscall                             0x2b mov eax, 231 (exit_group)
/// 0x18 cmp rax, r12                        0x30 syscall
/// ```
pub const PARK_CODE: [u8; 50] = [
    0xbf, 0x01, 0x00, 0x00, 0x00, 0xbe, 0x09, 0x00, 0x00, 0x00, 0xb8, 0x9d, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0xb8, 0x6e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x4c, 0x39, 0xe0, 0x75, 0x09, 0xb8, 0x22, 0x00,
    0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7, 0xbf, 0x89, 0x00, 0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00,
    0x0f, 0x05,
];

/// The code of restore's trampoline page: [`SYSCALL_INSN`] at its start,
/// int3s, [`PARK_CODE`] at [`PARK_OFFSET`] and [`BATCH_CODE`] at
/// [`BATCH_OFFSET`].
// Evaluated at compile time: an index out of range fails the build.
#[allow(clippy::indexing_slicing)]
pub const TRAMPOLINE_CODE: [u8; 128] = {
    let mut code = [0xccu8; 128];
    let mut i = 0;
    while i < SYSCALL_INSN.len() {
        code[i] = SYSCALL_INSN[i];
        i += 1;
    }
    let mut k = 0;
    while k < PARK_CODE.len() {
        code[PARK_OFFSET as usize + k] = PARK_CODE[k];
        k += 1;
    }
    let mut j = 0;
    while j < BATCH_CODE.len() {
        code[BATCH_OFFSET as usize + j] = BATCH_CODE[j];
        j += 1;
    }
    code
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot seize task {pid}")]
    Seize {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("ptrace {op} failed on task {pid}")]
    Ptrace {
        pid: i32,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("task {pid} exited while being controlled ({status:?})")]
    Exited { pid: i32, status: WaitStatus },
    #[error("task {pid} stopped unexpectedly while {what} ({status:?})")]
    UnexpectedStop {
        pid: i32,
        what: &'static str,
        status: WaitStatus,
    },
    #[error("task {pid} did not stop within {timeout:?} (--timeout)")]
    Timeout { pid: i32, timeout: Duration },
    #[error("remote syscall {nr} in task {pid} failed")]
    Syscall {
        pid: i32,
        nr: i64,
        #[source]
        source: io::Error,
    },
    #[error("task {pid} has no syscall instruction set up for remote calls")]
    NotInfected { pid: i32 },
}

pub type Result<T> = std::result::Result<T, Error>;

fn pt<T>(pid: i32, op: &'static str, r: io::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Ptrace { pid, op, source })
}

/// A thread under ptrace control, stopped.
#[derive(Debug)]
pub struct Task {
    pid: i32,
    /// Registers when control was taken; restored by [`Task::cure`].
    orig_regs: UserRegs,
    orig_sigmask: u64,
    /// Address of a `syscall` instruction followed by `int3`.
    syscall_ip: Option<RemoteAddr>,
    /// The `int3` after the `syscall` at `syscall_ip` is crust's own
    /// ([`SYSCALL_INSN`]): remote syscalls run to it in one stop.
    trap_after: bool,
    /// Word overwritten by [`Task::infect`], to put back.
    saved_word: Option<(RemoteAddr, u64)>,
    signals_blocked: bool,
    /// The signal of the job-control stop the task was in when it was
    /// seized (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU); 0 if it was running.
    stop_signo: i32,
    /// How long crust waits for the task to stop again after resuming it
    /// (a remote syscall); `None` (the default): no bound.
    timeout: Option<Duration>,
    /// Put the task back and detach it if this `Task` is dropped without
    /// being released, killed or finished (an early return or a panic that
    /// unwinds): set for tasks taken by [`Task::seize`], which belong to
    /// someone else and must run on as before.
    release_on_drop: bool,
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.release_on_drop {
            self.release_on_drop = false;
            let _ = self.cure();
            let _ = ptrace::detach(self.pid, self.stop_signo);
        }
    }
}

/// A restored task with its final registers, XSAVE area and signal mask
/// loaded, still stopped and traced (with PTRACE_O_EXITKILL: it dies if
/// crust does). Loading every task of a tree before letting any go keeps
/// the time in which a crust killed mid-way would leave part of the tree
/// running to one loop of PTRACE_DETACH calls. Dropping it leaves the task
/// stopped: the caller kills the tree.
#[must_use = "a loaded task stays stopped until it is let go"]
#[derive(Debug)]
pub struct Loaded {
    pid: i32,
}

impl Loaded {
    /// The task's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Let the task go. `stop`: the job-control signal to leave it
    /// stopped by (SIGSTOP, SIGTSTP...), or none to let it run.
    pub fn detach(self, stop: Option<i32>) -> Result<()> {
        let pid = self.pid;
        pt(pid, "PTRACE_DETACH", ptrace::detach(pid, stop.unwrap_or(0)))
    }

    /// Let the task run but stay traced, under PTRACE_SYSCALL (every
    /// syscall entry and exit stops it), with fork, clone and exec
    /// reported: for a tracer that has to see it act (crust's accept
    /// server). Returns its pid.
    pub fn run_traced(self) -> Result<i32> {
        let pid = self.pid;
        pt(
            pid,
            "PTRACE_SETOPTIONS",
            ptrace::set_options(
                pid,
                ptrace::options::TRACESYSGOOD
                    | ptrace::options::TRACECLONE
                    | ptrace::options::TRACEFORK
                    | ptrace::options::TRACEVFORK
                    | ptrace::options::TRACEEXEC,
            ),
        )?;
        pt(pid, "PTRACE_SYSCALL", ptrace::syscall(pid, 0))?;
        Ok(pid)
    }
}

impl Task {
    /// PTRACE_SEIZE + PTRACE_INTERRUPT, then wait until the task is in a
    /// ptrace stop. Pending signals that arrive first are delivered (as the
    /// kernel would have) before the interrupt stop is taken.
    pub fn seize(pid: i32, timeout: Duration) -> Result<Task> {
        Self::begin_seize(pid)?;
        Self::end_seize(pid, timeout)
    }

    /// Seize several tasks (the threads of a process) at once: all are
    /// asked to stop before crust waits for any, so they stop in parallel.
    /// One result per pid, in order.
    pub fn seize_all(pids: &[i32], timeout: Duration) -> Vec<Result<Task>> {
        let begun: Vec<Result<()>> = pids.iter().map(|&p| Self::begin_seize(p)).collect();
        pids.iter()
            .zip(begun)
            .map(|(&p, b)| b.and_then(|()| Self::end_seize(p, timeout)))
            .collect()
    }

    /// The first half of [`Task::seize`]: PTRACE_SEIZE and PTRACE_INTERRUPT,
    /// without waiting. For tasks that cannot stop yet (frozen by a cgroup
    /// freezer): the interrupt is taken once they run; [`Task::end_seize`]
    /// waits for it.
    pub fn begin_seize(pid: i32) -> Result<()> {
        ptrace::seize(pid, ptrace::options::TRACESYSGOOD)
            .map_err(|source| Error::Seize { pid, source })?;
        pt(pid, "PTRACE_INTERRUPT", ptrace::interrupt(pid))
    }

    /// The second half of [`Task::seize`]: wait (within `timeout`) for a
    /// task [`Task::begin_seize`] took to reach its ptrace stop.
    pub fn end_seize(pid: i32, timeout: Duration) -> Result<Task> {
        let start = Instant::now();
        let mut stop_signo = 0;
        loop {
            let st = wait_stop(pid, Some((start, timeout)))?;
            match st {
                WaitStatus::Stopped { sig, event } if event == ptrace::EVENT_STOP => {
                    if sig == libc::SIGTRAP || stop_signo != 0 {
                        break;
                    }
                    // A job-control stop: wake it with SIGCONT (which is
                    // swallowed below) so syscalls can run in it; it is
                    // stopped again, by the same signal, when released.
                    stop_signo = sig;
                    process::kill(pid, libc::SIGCONT).map_err(|source| Error::Ptrace {
                        pid,
                        op: "kill(SIGCONT)",
                        source,
                    })?;
                    pt(pid, "PTRACE_INTERRUPT", ptrace::interrupt(pid))?;
                    pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
                }
                WaitStatus::Stopped {
                    sig: libc::SIGCONT,
                    event: 0,
                } if stop_signo != 0 => {
                    pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
                }
                WaitStatus::Stopped { sig, event: 0 } => {
                    // A signal-delivery-stop: let the signal go on as it
                    // would have; the interrupt is still pending.
                    pt(pid, "PTRACE_CONT", ptrace::cont(pid, sig))?;
                }
                WaitStatus::Stopped { .. } => {
                    pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
                }
                other => return Err(Error::Exited { pid, status: other }),
            }
        }
        let mut t = Self::from_stopped(pid)?;
        t.stop_signo = stop_signo;
        t.release_on_drop = true;
        Ok(t)
    }

    /// Bound (or not) every later wait for this task to stop: a remote
    /// syscall that does not return in time is interrupted and fails with
    /// [`Error::Timeout`]. A dump bounds its tasks by `--timeout`.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Wait for the task's next stop, within its timeout if it has one. A
    /// task that does not stop in time (a remote syscall that blocks) is
    /// interrupted, so that it stops again and can be put back as it was,
    /// and the wait fails with [`Error::Timeout`].
    fn wait_bounded(&self) -> Result<WaitStatus> {
        let Some(timeout) = self.timeout else {
            return wait_stop(self.pid, None);
        };
        match wait_stop(self.pid, Some((Instant::now(), timeout))) {
            Err(Error::Timeout { .. }) => {
                // The blocked syscall ends (EINTR or a restart) and the
                // task stops at its exit or at the interrupt.
                let _ = ptrace::interrupt(self.pid);
                let _ = wait_stop(self.pid, Some((Instant::now(), INTERRUPT_WAIT)));
                Err(Error::Timeout {
                    pid: self.pid,
                    timeout,
                })
            }
            other => other,
        }
    }

    /// Was the task in a job-control stop (SIGSTOP and the like) when it
    /// was seized?
    pub fn was_stopped(&self) -> bool {
        self.stop_signo != 0
    }

    /// The signal that stopped the task (job control), if it was stopped
    /// when seized.
    pub fn stop_signal(&self) -> Option<i32> {
        (self.stop_signo != 0).then_some(self.stop_signo)
    }

    /// Make the task resume at `ip` instead of where it was stopped (the
    /// registers [`Task::regs`] reports and [`Task::cure`] puts back): an
    /// rseq critical section interrupted by the dump goes to its abort
    /// handler, as the kernel would have sent it.
    pub fn set_resume_ip(&mut self, ip: u64) {
        self.orig_regs.rip = ip;
    }

    /// Take over a child that called PTRACE_TRACEME and stopped itself with
    /// SIGSTOP. The task is killed if the tracer dies (PTRACE_O_EXITKILL).
    pub fn adopt_stopped_child(pid: i32) -> Result<Task> {
        let st = wait_stop(pid, None)?;
        match st {
            WaitStatus::Stopped {
                sig: libc::SIGSTOP, ..
            } => {}
            other => {
                return Err(Error::UnexpectedStop {
                    pid,
                    what: "waiting for the new child to stop",
                    status: other,
                })
            }
        }
        pt(
            pid,
            "PTRACE_SETOPTIONS",
            ptrace::set_options(
                pid,
                ptrace::options::EXITKILL | ptrace::options::TRACESYSGOOD,
            ),
        )?;
        Self::from_stopped(pid)
    }

    /// Take over a task that ptrace attached automatically when a traced
    /// task cloned it (PTRACE_O_TRACEFORK/TRACECLONE): wait for its first
    /// stop.
    pub fn adopt_new_child(pid: i32) -> Result<Task> {
        match wait_stop(pid, None)? {
            WaitStatus::Stopped { .. } => Self::from_stopped(pid),
            other => Err(Error::UnexpectedStop {
                pid,
                what: "waiting for a new task to stop",
                status: other,
            }),
        }
    }

    fn from_stopped(pid: i32) -> Result<Task> {
        let orig_regs = pt(pid, "GETREGSET(NT_PRSTATUS)", ptrace::get_regs(pid))?;
        let orig_sigmask = pt(pid, "PTRACE_GETSIGMASK", ptrace::get_sigmask(pid))?;
        Ok(Task {
            pid,
            orig_regs,
            orig_sigmask,
            syscall_ip: None,
            trap_after: false,
            saved_word: None,
            signals_blocked: false,
            stop_signo: 0,
            timeout: None,
            release_on_drop: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Registers as they were when control was taken.
    pub fn regs(&self) -> &UserRegs {
        &self.orig_regs
    }

    /// Signal mask as it was when control was taken.
    pub fn sigmask(&self) -> u64 {
        self.orig_sigmask
    }

    /// The XSAVE area (standard format).
    pub fn xstate(&self) -> Result<Vec<u8>> {
        pt(
            self.pid,
            "GETREGSET(NT_X86_XSTATE)",
            ptrace::get_xstate(self.pid),
        )
    }

    /// Pending signals: the thread's own (`shared == false`) or the
    /// process-wide queue.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<ptrace::RawSiginfo>> {
        pt(
            self.pid,
            "PTRACE_PEEKSIGINFO",
            ptrace::peek_siginfo(self.pid, shared, 4096),
        )
    }

    /// The rseq registration, `None` when the kernel cannot tell.
    pub fn rseq(&self) -> Option<ptrace::RseqConfig> {
        ptrace::get_rseq_config(self.pid).ok()
    }

    /// Write `syscall; int3` at `ip` (the start of an executable mapping),
    /// saving what was there, so remote syscalls can run.
    pub fn infect(&mut self, ip: RemoteAddr) -> Result<()> {
        let word = pt(self.pid, "PTRACE_PEEKDATA", ptrace::peek(self.pid, ip))?;
        pt(
            self.pid,
            "PTRACE_POKEDATA",
            ptrace::poke(self.pid, ip, u64::from_le_bytes(SYSCALL_INSN)),
        )?;
        self.saved_word = Some((ip, word));
        self.syscall_ip = Some(ip);
        Ok(())
    }

    /// Use an existing `syscall; int3` sequence at `ip` for remote calls.
    pub fn use_syscall_ip(&mut self, ip: RemoteAddr) {
        self.syscall_ip = Some(ip);
        self.trap_after = false;
    }

    /// Like [`Task::use_syscall_ip`], for a site crust wrote itself, where
    /// an `int3` follows the `syscall` ([`SYSCALL_INSN`]: restore's
    /// trampoline): each remote syscall then takes one stop (resumed with
    /// PTRACE_CONT, the task stops at the int3) instead of two (its entry
    /// and its exit), which halves the round trips of a restore.
    pub fn use_trapping_syscall_ip(&mut self, ip: RemoteAddr) {
        self.syscall_ip = Some(ip);
        self.trap_after = true;
    }

    fn block_signals(&mut self) -> Result<()> {
        if !self.signals_blocked {
            pt(
                self.pid,
                "PTRACE_SETSIGMASK",
                ptrace::set_sigmask(self.pid, !0u64),
            )?;
            self.signals_blocked = true;
        }
        Ok(())
    }

    /// Point the task at its syscall instruction with syscall `nr` and
    /// `args` loaded (orig_rax -1: no restart logic applies).
    fn load_syscall(&self, nr: i64, args: [u64; 6]) -> Result<()> {
        let ip = self
            .syscall_ip
            .ok_or(Error::NotInfected { pid: self.pid })?;
        let mut r = self.orig_regs;
        r.rip = ip.get();
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        pt(
            self.pid,
            "SETREGSET(NT_PRSTATUS)",
            ptrace::set_regs(self.pid, &r),
        )
    }

    /// Run syscall `nr` with `args` inside the task; returns the raw result
    /// (a negative value is `-errno`). The task is stepped through the
    /// syscall's entry and exit stops (PTRACE_SYSCALL), so no signal is
    /// involved and the task's signal state is untouched.
    pub fn syscall_raw(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        if self.trap_after {
            self.block_signals()?;
            self.load_syscall(nr, args)?;
            return self.run_to_trap();
        }
        self.syscall_stepped(nr, args)
    }

    /// [`Task::syscall_raw`] stepped through the syscall's entry and exit
    /// stops whatever the site: for a syscall after which a signal that
    /// cannot be blocked may be due (queueing a pending signal), so it
    /// comes at the next resume, not instead of the syscall's stop.
    pub fn syscall_stepped(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        self.block_signals()?;
        self.load_syscall(nr, args)?;
        self.step_syscall("remote syscall entry")?;
        self.step_syscall("remote syscall exit")?;
        let after = pt(
            self.pid,
            "GETREGSET(NT_PRSTATUS)",
            ptrace::get_regs(self.pid),
        )?;
        Ok(after.rax as i64)
    }

    /// Resume the task loaded with a syscall at a trapping site
    /// ([`Task::use_trapping_syscall_ip`]) and wait for the int3 after it:
    /// the syscall's result.
    fn run_to_trap(&self) -> Result<i64> {
        let pid = self.pid;
        pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
        let status = self.wait_bounded()?;
        self.trap_result(status)
    }

    /// The result of a remote syscall at a trapping site, from the stop
    /// `status` it ended with: the int3 right after the `syscall`.
    fn trap_result(&self, status: WaitStatus) -> Result<i64> {
        let pid = self.pid;
        if !matches!(
            status,
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 0
            }
        ) {
            return Err(Error::UnexpectedStop {
                pid,
                what: "running a remote syscall",
                status,
            });
        }
        let after = pt(pid, "GETREGSET(NT_PRSTATUS)", ptrace::get_regs(pid))?;
        // The int3 right after the `syscall` (2 bytes), and nothing else.
        let trap = self.syscall_ip.map_or(0, |ip| ip.get() + 3);
        if after.rip != trap {
            return Err(Error::UnexpectedStop {
                pid,
                what: "running a remote syscall (a trap away from crust's int3)",
                status,
            });
        }
        Ok(after.rax as i64)
    }

    /// [`Task::syscall_clone`] at a trapping site, loaded: resumed with
    /// PTRACE_CONT, the task stops at the clone event (success) and, resumed
    /// again, at the int3 after the `syscall` (a failure stops there at
    /// once): two stops instead of the three of entry, event and exit.
    fn clone_to_trap(&mut self) -> Result<(i64, Option<i32>)> {
        let pid = self.pid;
        pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
        match self.wait_bounded()? {
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 1..=3,
            } => {
                let msg = pt(pid, "PTRACE_GETEVENTMSG", ptrace::get_event_msg(pid))?;
                Ok((self.run_to_trap()?, Some(msg as i32)))
            }
            status => Ok((self.trap_result(status)?, None)),
        }
    }

    /// Run `count` syscalls of the table at `table` in the task, all in
    /// one resume, with the [`BATCH_CODE`] loop at `code` (which must be
    /// there). Returns how many ran successfully; when fewer than `count`,
    /// the next one failed and its result (`-errno`) is returned too. Each
    /// entry's result is in the table. Never for syscalls that clone or
    /// block: they would stop or hang the loop.
    pub fn syscall_batch(
        &mut self,
        code: RemoteAddr,
        table: RemoteAddr,
        count: u64,
    ) -> Result<(u64, Option<i64>)> {
        self.block_signals()?;
        let pid = self.pid;
        let mut r = self.orig_regs;
        r.rip = code.get();
        r.orig_rax = u64::MAX;
        r.r12 = table.get();
        r.r13 = count;
        pt(pid, "SETREGSET(NT_PRSTATUS)", ptrace::set_regs(pid, &r))?;
        pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
        // The int3 at the end: a SIGTRAP stop, which the next resume (with
        // no signal) discards.
        match self.wait_bounded()? {
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 0,
            } => {}
            other => {
                return Err(Error::UnexpectedStop {
                    pid,
                    what: "running a batch of remote syscalls",
                    status: other,
                })
            }
        }
        let after = pt(pid, "GETREGSET(NT_PRSTATUS)", ptrace::get_regs(pid))?;
        if after.r13 == 0 {
            return Ok((count, None));
        }
        Ok((count.saturating_sub(after.r13), Some(after.rax as i64)))
    }

    /// Run a cloning syscall (fork, clone, clone3) inside the task. The new
    /// task is attached automatically (the tracing options must include
    /// PTRACE_O_TRACEFORK/TRACECLONE) and left stopped; pick it up with
    /// [`Task::adopt_new_child`]. Returns the syscall result (the new id as
    /// the task sees it) and, on success, the new task's pid as crust sees
    /// it (they differ inside a pid namespace).
    pub fn syscall_clone(&mut self, nr: i64, args: [u64; 6]) -> Result<(i64, Option<i32>)> {
        self.block_signals()?;
        let pid = self.pid;
        self.load_syscall(nr, args)?;
        if self.trap_after {
            return self.clone_to_trap();
        }
        self.step_syscall("remote clone entry")?;
        // Next: either the fork/clone event stop (success) or the exit stop
        // (failure).
        pt(pid, "PTRACE_SYSCALL", ptrace::syscall(pid, 0))?;
        let mut child = None;
        match self.wait_bounded()? {
            WaitStatus::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {}
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 1..=3,
            } => {
                let msg = pt(pid, "PTRACE_GETEVENTMSG", ptrace::get_event_msg(pid))?;
                child = Some(msg as i32);
                self.step_syscall("remote clone exit")?
            }
            other => {
                return Err(Error::UnexpectedStop {
                    pid,
                    what: "running a remote clone",
                    status: other,
                })
            }
        }
        let after = pt(pid, "GETREGSET(NT_PRSTATUS)", ptrace::get_regs(pid))?;
        Ok((after.rax as i64, child))
    }

    /// Set the ptrace options of the task.
    pub fn set_options(&self, opts: u64) -> Result<()> {
        pt(
            self.pid,
            "PTRACE_SETOPTIONS",
            ptrace::set_options(self.pid, opts),
        )
    }

    /// Load the task's final registers, XSAVE area and signal mask (for a
    /// task that is not the one unmapping the trampoline). It stays
    /// stopped and traced until [`Loaded::detach`] or
    /// [`Loaded::run_traced`]: a restore loads every task first and lets
    /// them go in one short loop (see [`Loaded`]).
    pub fn load_final_state(
        mut self,
        regs: &UserRegs,
        xstate: Option<&[u8]>,
        sigmask: u64,
    ) -> Result<Loaded> {
        self.release_on_drop = false;
        self.load_final(regs, xstate, sigmask)?;
        Ok(Loaded { pid: self.pid })
    }

    /// Final step of a restore for the task that unmaps the trampoline:
    /// run `munmap(addr, len)` (which removes the trampoline itself, see
    /// [`Task::unmap_last`]), then load the final state as
    /// [`Task::load_final_state`] does.
    pub fn unmap_and_load(
        self,
        munmap_addr: RemoteAddr,
        munmap_len: u64,
        regs: &UserRegs,
        xstate: Option<&[u8]>,
        sigmask: u64,
    ) -> Result<Loaded> {
        self.unmap_last(munmap_addr, munmap_len)?;
        self.load_final_state(regs, xstate, sigmask)
    }

    /// The last remote syscall of a restore: `munmap(addr, len)` (the
    /// trampoline itself). One single-step over the `syscall` instruction:
    /// the task stops at the syscall's exit (the kernel reports a step
    /// that ends in a syscall there), never running the unmapped code
    /// after it; one stop, where PTRACE_SYSCALL takes two (entry, exit).
    fn unmap_last(&self, addr: RemoteAddr, len: u64) -> Result<()> {
        let pid = self.pid;
        self.load_syscall(libc::SYS_munmap, [addr.get(), len, 0, 0, 0, 0])?;
        pt(pid, "PTRACE_SINGLESTEP", ptrace::single_step(pid, 0))?;
        match self.wait_bounded()? {
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 0,
            } => Ok(()),
            other => Err(Error::UnexpectedStop {
                pid,
                what: "final munmap, single-stepped",
                status: other,
            }),
        }
    }

    /// Load the task's final registers, XSAVE area and signal mask.
    fn load_final(&self, regs: &UserRegs, xstate: Option<&[u8]>, sigmask: u64) -> Result<()> {
        let pid = self.pid;
        if let Some(x) = xstate {
            pt(pid, "SETREGSET(NT_X86_XSTATE)", ptrace::set_xstate(pid, x))?;
        }
        pt(pid, "SETREGSET(NT_PRSTATUS)", ptrace::set_regs(pid, regs))?;
        pt(pid, "PTRACE_SETSIGMASK", ptrace::set_sigmask(pid, sigmask))
    }

    /// A traced task stopped at a syscall exit (after a `syscall`
    /// instruction): remote syscalls run at that very instruction; put the
    /// task back with [`Task::put_back`].
    pub fn at_syscall_stop(pid: i32) -> Result<Task> {
        let regs = pt(pid, "GETREGSET(NT_PRSTATUS)", ptrace::get_regs(pid))?;
        let mask = pt(pid, "PTRACE_GETSIGMASK", ptrace::get_sigmask(pid))?;
        Ok(Task {
            pid,
            orig_regs: regs,
            orig_sigmask: mask,
            syscall_ip: Some(RemoteAddr(regs.rip.wrapping_sub(2))),
            trap_after: false,
            saved_word: None,
            signals_blocked: false,
            stop_signo: 0,
            timeout: None,
            release_on_drop: false,
        })
    }

    /// The registers and mask of [`Task::at_syscall_stop`] back as they
    /// were (the syscall's result included); the task stays stopped.
    pub fn put_back(self) -> Result<()> {
        let pid = self.pid;
        pt(
            pid,
            "SETREGSET(NT_PRSTATUS)",
            ptrace::set_regs(pid, &self.orig_regs),
        )?;
        if self.signals_blocked {
            pt(
                pid,
                "PTRACE_SETSIGMASK",
                ptrace::set_sigmask(pid, self.orig_sigmask),
            )?;
        }
        Ok(())
    }

    /// Run `exit_group(code)` inside the task and reap it as its tracer, so
    /// that it stays a zombie for its real parent.
    pub fn exit_as_zombie(mut self, code: i32) -> Result<()> {
        self.release_on_drop = false;
        let pid = self.pid;
        self.load_syscall(libc::SYS_exit_group, [code as u64, 0, 0, 0, 0, 0])?;
        self.syscall_ip = None;
        self.trap_after = false;
        pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
        loop {
            match process::waitpid(pid, 0) {
                Ok(Some((_, WaitStatus::Exited(_) | WaitStatus::Signaled { .. }))) => return Ok(()),
                Ok(Some((_, WaitStatus::Stopped { .. }))) => {
                    pt(pid, "PTRACE_CONT", ptrace::cont(pid, 0))?;
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(Error::Ptrace {
                        pid,
                        op: "waitpid",
                        source,
                    })
                }
            }
        }
    }

    /// Make the task die of signal `sig` (default action), as a zombie for
    /// its real parent: reset the signal's handler in the task, unblock it,
    /// detach and send it. `scratch` is 32 writable bytes in the task.
    pub fn die_by_signal(mut self, sig: i32, scratch: RemoteAddr) -> Result<()> {
        self.release_on_drop = false;
        let pid = self.pid;
        // A zeroed struct kernel_sigaction is SIG_DFL with no flags.
        // SIGKILL has no action to reset (rt_sigaction refuses it).
        if sig != libc::SIGKILL {
            let sp = scratch.get();
            crust_sys::mem::write(pid, scratch, &[0u8; 32]).map_err(|source| Error::Ptrace {
                pid,
                op: "process_vm_writev",
                source,
            })?;
            self.syscall(libc::SYS_rt_sigaction, [sig as u64, sp, 0, 8, 0, 0])?;
        }
        pt(pid, "PTRACE_SETSIGMASK", ptrace::set_sigmask(pid, 0))?;
        // It waits in pause() for the signal: left where the last remote
        // syscall returned, it would run on into the int3 after the
        // `syscall` and die of SIGTRAP before the signal came. (Sent while
        // it is still traced, SIGKILL would kill it under crust, hiding
        // the zombie from its parent until crust exits.)
        self.load_syscall(libc::SYS_pause, [0; 6])?;
        pt(pid, "PTRACE_DETACH", ptrace::detach(pid, 0))?;
        process::kill(pid, sig).map_err(|source| Error::Ptrace {
            pid,
            op: "kill",
            source,
        })
    }

    /// Resume until the next syscall stop (entry or exit).
    fn step_syscall(&self, what: &'static str) -> Result<()> {
        let pid = self.pid;
        pt(pid, "PTRACE_SYSCALL", ptrace::syscall(pid, 0))?;
        match self.wait_bounded()? {
            WaitStatus::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => Ok(()),
            other => Err(Error::UnexpectedStop {
                pid,
                what,
                status: other,
            }),
        }
    }

    /// Like [`Task::syscall_raw`], turning `-errno` into an error.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<u64> {
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::Syscall {
                pid: self.pid,
                nr,
                source: io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Undo [`Task::infect`] and put back the original registers and
    /// signal mask. The task stays stopped.
    pub fn cure(&mut self) -> Result<()> {
        if let Some((ip, word)) = self.saved_word.take() {
            pt(
                self.pid,
                "PTRACE_POKEDATA",
                ptrace::poke(self.pid, ip, word),
            )?;
        }
        self.syscall_ip = None;
        self.trap_after = false;
        // Remote syscalls leave the task at a syscall-exit stop, where the
        // kernel no longer restarts an interrupted syscall by itself: do
        // it here, as it would have.
        let regs = restart_adjusted(&self.orig_regs, true);
        pt(
            self.pid,
            "SETREGSET(NT_PRSTATUS)",
            ptrace::set_regs(self.pid, &regs),
        )?;
        if self.signals_blocked {
            pt(
                self.pid,
                "PTRACE_SETSIGMASK",
                ptrace::set_sigmask(self.pid, self.orig_sigmask),
            )?;
            self.signals_blocked = false;
        }
        Ok(())
    }

    /// Cure and let the task run on untouched (`stop`: leave it in a
    /// job-control stop instead).
    pub fn release(mut self, stop: bool) -> Result<()> {
        self.cure()?;
        let sig = match (stop, self.stop_signo) {
            (_, s) if s != 0 => s,
            (true, _) => libc::SIGSTOP,
            _ => 0,
        };
        pt(self.pid, "PTRACE_DETACH", ptrace::detach(self.pid, sig))?;
        self.release_on_drop = false;
        Ok(())
    }

    /// Hand the task over to another tracer thread: point it at the
    /// parking loop at `park` ([`PARK_CODE`], which must be there), and
    /// detach it, with no signal. It runs the loop, untraced, until
    /// [`Task::seize_parked`] (on the thread that takes it) stops it, or
    /// exits if its parent is no longer `parent` (its parent's pid as the
    /// task sees it: gone before the loop armed the parent-death signal).
    /// Its registers are left pointing into the loop: the new owner loads
    /// what it runs next. Returns its pid.
    pub fn park_and_detach(mut self, park: RemoteAddr, parent: i32) -> Result<i32> {
        self.release_on_drop = false;
        let pid = self.pid;
        let mut r = self.orig_regs;
        r.rip = park.get();
        r.r12 = parent as u64;
        // Not inside a syscall: nothing is restarted on the way out.
        r.orig_rax = u64::MAX;
        pt(pid, "SETREGSET(NT_PRSTATUS)", ptrace::set_regs(pid, &r))?;
        pt(pid, "PTRACE_DETACH", ptrace::detach(pid, 0))?;
        Ok(pid)
    }

    /// Take over, on the calling thread, a task another tracer thread let
    /// go with [`Task::park_and_detach`]: PTRACE_SEIZE with `options`
    /// (EXITKILL among them binds it to this thread at once),
    /// PTRACE_INTERRUPT, and the wait for the interrupt's stop. Its
    /// signals are blocked, so no other stop can come first. A task seized
    /// before it ran the loop's `prctl` stops at the loop's start, with
    /// nothing armed (none is needed: it is traced again, EXITKILL). The
    /// `Task` is not put back when dropped (a task being built, as one
    /// adopted).
    pub fn seize_parked(pid: i32, options: u64) -> Result<Task> {
        ptrace::seize(pid, options).map_err(|source| Error::Seize { pid, source })?;
        pt(pid, "PTRACE_INTERRUPT", ptrace::interrupt(pid))?;
        match wait_stop(pid, None)? {
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event,
            } if event == ptrace::EVENT_STOP => Self::from_stopped(pid),
            other => Err(Error::UnexpectedStop {
                pid,
                what: "taking over a parked task",
                status: other,
            }),
        }
    }

    /// Forget the task without touching it when dropped: it was killed or
    /// handed over by other means.
    pub fn disarm(&mut self) {
        self.release_on_drop = false;
    }

    /// Kill the task (SIGKILL) and reap it if it is our child.
    pub fn kill(mut self) {
        self.release_on_drop = false;
        let _ = process::kill(self.pid, libc::SIGKILL);
        let _ = process::waitpid(self.pid, libc::WNOHANG);
    }
}

/// Kernel-internal "restart this syscall" return values.
pub const ERESTARTSYS: i64 = -512;
pub const ERESTARTNOINTR: i64 = -513;
pub const ERESTARTNOHAND: i64 = -514;
pub const ERESTART_RESTARTBLOCK: i64 = -516;

/// Registers of a task stopped inside an interrupted syscall, rewritten the
/// way the kernel would on return to user space without a signal handler:
/// the syscall is set up to run again. A syscall that needs its kernel-side
/// restart block (`ERESTART_RESTARTBLOCK`, e.g. nanosleep) is restarted with
/// `restart_syscall` when `keep_restart_block` (the task keeps its kernel
/// state, as after a dump that lets it run on); otherwise it returns
/// `-EINTR`, as the restart block does not survive a checkpoint.
pub fn restart_adjusted(regs: &UserRegs, keep_restart_block: bool) -> UserRegs {
    let mut r = *regs;
    if (r.orig_rax as i64) < 0 {
        return r;
    }
    match r.rax as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = r.orig_rax;
            r.rip -= 2;
        }
        ERESTART_RESTARTBLOCK => {
            if keep_restart_block {
                r.rax = libc::SYS_restart_syscall as u64;
                r.rip -= 2;
            } else if restartable_as_is(&r) {
                // Running the same call again waits exactly as long.
                r.rax = r.orig_rax;
                r.rip -= 2;
            } else {
                r.rax = (-libc::EINTR as i64) as u64;
            }
        }
        _ => {}
    }
    r
}

/// Syscalls that use a restart block but whose arguments (still in the
/// registers: the kernel keeps rdi, rsi, rdx, r10, r8, r9) make running
/// them again exact: poll(2) without a timeout and clock_nanosleep with an
/// absolute time.
fn restartable_as_is(r: &UserRegs) -> bool {
    const TIMER_ABSTIME: u64 = 1;
    match r.orig_rax as i64 {
        libc::SYS_poll => (r.rdx as i32) < 0,
        libc::SYS_clock_nanosleep => r.rsi & TIMER_ABSTIME != 0,
        _ => false,
    }
}

thread_local! {
    /// SIGCHLD is blocked in this thread (see [`wait_stop`]).
    static SIGCHLD_BLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The longest sleep of a bounded wait between two looks at the task.
const SIGCHLD_NAP: Duration = Duration::from_millis(1);

/// How long a task interrupted after a timeout may take to stop.
const INTERRUPT_WAIT: Duration = Duration::from_secs(1);

/// Stops waited for by [`wait_stop`] in this process, every task and
/// thread together (read by [`stops_seen`]).
static STOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many ptrace stops crust has waited for so far (remote syscalls,
/// batches, clones...): a restore logs what it took per process.
pub fn stops_seen() -> u64 {
    STOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Wait for `pid` to stop; an exit is an error. With a deadline, looks
/// with WNOHANG and sleeps until the next SIGCHLD in between.
fn wait_stop(pid: i32, deadline: Option<(Instant, Duration)>) -> Result<WaitStatus> {
    if deadline.is_some() && !SIGCHLD_BLOCKED.get() {
        // Once per thread (this runs at every stop of a remote syscall).
        // Errors only for a bad signal set: then the waits below still end,
        // by their cap.
        SIGCHLD_BLOCKED.set(process::block_sigchld().is_ok());
    }
    loop {
        let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
        let r = process::waitpid(pid, flags).map_err(|source| Error::Ptrace {
            pid,
            op: "waitpid",
            source,
        })?;
        match r {
            Some((_, st @ WaitStatus::Stopped { .. })) => {
                STOPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(st);
            }
            Some((_, st @ (WaitStatus::Exited(_) | WaitStatus::Signaled { .. }))) => {
                return Err(Error::Exited { pid, status: st })
            }
            Some((_, WaitStatus::Continued)) => continue,
            // WNOHANG (so None) only with a deadline.
            None => {
                let Some((start, timeout)) = deadline else {
                    continue;
                };
                let spent = start.elapsed();
                if spent > timeout {
                    return Err(Error::Timeout { pid, timeout });
                }
                // Sleep until a child or tracee changes state (SIGCHLD),
                // which wakes crust at once even on a busy machine (a
                // yield or a short sleep waits for other tasks' time
                // slices). A SIGCHLD taken by another thread is not seen
                // here: the sleep is capped, so that costs 1 ms at most.
                let nap = (timeout - spent).min(SIGCHLD_NAP);
                if process::wait_sigchld(nap).is_err() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
}
