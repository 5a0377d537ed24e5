//! Per-task state: registers, signals, credentials, limits, timers.
//! Dump builds CRIU's `core_entry`; restore applies it.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod creds;
pub mod fdgift;
pub mod misc;
pub(crate) mod remote;
pub mod seccomp;
mod timers;
pub mod xsave;

pub use creds::apply_creds;
use timers::{apply_itimers, collect_posix_timers, restore_posix_timers};

use crate::task::remote::Remote;
use crate::util::{cap_join, cap_words, proc_err, sys_err};
use crate::Error;
use crust_compel::Task;
use crust_images::consts::task_state;
use crust_images::proto::core::CoreEntry;
use crust_images::proto::core::{
    core_entry_march, TaskCoreEntry, TaskRlimitsEntry, ThreadCoreEntry, ThreadSasEntry,
};
use crust_images::proto::core_x86::{
    user_x86_regs_mode, ThreadInfoX86, UserDescT, UserX86RegsEntry,
};
use crust_images::proto::creds::CredsEntry;
use crust_images::proto::rlimit::RlimitEntry;
use crust_images::proto::rseq::RseqEntry;
use crust_images::proto::sa::SaEntry;
use crust_images::proto::siginfo::{SiginfoEntry, SignalQueueEntry};
use crust_images::proto::timer::{ItimerEntry, PosixTimerEntry, TaskTimersEntry};
use crust_proc::{ProcRoot, Stat, Status};
use crust_sys::ptrace::UserRegs;
use crust_sys::RemoteAddr;
use log::warn;

/// /proc/PID/task/TID/status of each of `tasks` (threads of process
/// `pid`), in their order.
pub fn thread_statuses(proc: &ProcRoot, pid: i32, tasks: &[Task]) -> Result<Vec<Status>, Error> {
    tasks
        .iter()
        .map(|t| crust_proc::task_status(proc, pid, t.pid()).map_err(proc_err(t.pid())))
        .collect()
}

/// Signals that have a sigaction slot in the image: 1..=64 minus SIGKILL
/// and SIGSTOP.
pub fn sigaction_signals() -> impl Iterator<Item = u32> {
    (1..=64u32).filter(|s| *s != libc::SIGKILL as u32 && *s != libc::SIGSTOP as u32)
}

/// Per-process state read by syscalls run inside the process.
#[derive(Debug, Default)]
pub struct ProcInside {
    pub sigactions: Vec<SaEntry>,
    pub brk: u64,
    pub dumpable: i32,
    pub thp_disabled: bool,
    pub child_subreaper: bool,
    pub membarrier: u32,
    pub itimers: [ItimerEntry; 3],
    pub posix_timers: Vec<PosixTimerEntry>,
}

/// Per-thread state read by syscalls run inside each thread.
#[derive(Debug, Default)]
pub struct ThreadInside {
    pub sas: ThreadSasEntry,
    pub clear_tid: u64,
    pub secbits: u32,
    pub pdeath_sig: u32,
    /// Policy with SCHED_RESET_ON_FORK, and real-time priority.
    pub sched: (u32, u32),
    pub seccomp: seccomp::ThreadSeccomp,
}

const PR_GET_TID_ADDRESS: u64 = 40;
const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;
const PR_GET_CHILD_SUBREAPER: u64 = 37;

/// Scratch offsets of what [`collect_process`]'s batch reads: the signal
/// actions (32 bytes each), the itimers (32 each), the subreaper flag,
/// and the batch's table.
const SA_AT: u64 = 0;
const ITIMER_AT: u64 = 64 * 32;
const SUBREAPER_AT: u64 = ITIMER_AT + 3 * 32;
/// The calls [`collect_process`] queues after the signal actions and
/// before the main thread's: brk, two prctls, the subreaper, 3 itimers.
const PROCESS_CALLS: usize = 7;
/// The main thread's part (see [`push_thread`]).
const MAIN_THREAD_AT: u64 = 3072;
const TABLE_AT: u64 = 4096;
/// Scratch offsets of the data of [`apply_core`]'s queued calls, out of
/// the way of the calls it makes one by one (which use offsets 0 to 512):
/// the thread's name and its alternate signal stack.
const NAME_AT: u64 = 2048;
const SAS_AT: u64 = 2048 + 64;

/// Reads the process's state and its main thread's (run by `r`'s task);
/// `code`: the syscall-table loop in the task, if crust put one there (the
/// calls then run in one stop).
pub fn collect_process(
    r: &mut Remote<'_>,
    code: Option<RemoteAddr>,
) -> Result<(ProcInside, ThreadInside), Error> {
    let mut out = ProcInside::default();
    let mut b = remote::Batch::with_table_at(code, TABLE_AT);
    let sigs: Vec<u32> = sigaction_signals().collect();
    // struct kernel_sigaction: handler, flags, restorer, mask (8 bytes each).
    for (i, &sig) in sigs.iter().enumerate() {
        let at = r.at(SA_AT + 32 * i as u64).get();
        b.push(
            r,
            format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            [sig as u64, 0, at, 8, 0, 0],
            None,
        )?;
    }
    b.push(r, "brk".into(), libc::SYS_brk, [0; 6], None)?;
    for (what, opt) in [
        ("prctl(PR_GET_DUMPABLE)", libc::PR_GET_DUMPABLE as u64),
        ("prctl(PR_GET_THP_DISABLE)", libc::PR_GET_THP_DISABLE as u64),
    ] {
        b.push(r, what.into(), libc::SYS_prctl, [opt, 0, 0, 0, 0, 0], None)?;
    }
    r.put(SUBREAPER_AT, &[0u8; 8])?;
    let at = r.at(SUBREAPER_AT).get();
    b.push(
        r,
        "prctl(PR_GET_CHILD_SUBREAPER)".into(),
        libc::SYS_prctl,
        [PR_GET_CHILD_SUBREAPER, at, 0, 0, 0, 0],
        None,
    )?;
    let which = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];
    for (i, w) in which.into_iter().enumerate() {
        // struct itimerval: interval {sec, usec}, value {sec, usec}.
        let at = r.at(ITIMER_AT + 32 * i as u64).get();
        b.push(
            r,
            "getitimer".into(),
            libc::SYS_getitimer,
            [w as u64, at, 0, 0, 0, 0],
            None,
        )?;
    }
    push_thread(r, &mut b, MAIN_THREAD_AT)?;
    // Last: a kernel that cannot tell fails it.
    b.push_may_fail(
        r,
        "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)".into(),
        libc::SYS_membarrier,
        [misc::MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0],
    )?;
    let res = b.flush(r)?;
    let data = r.get(0, TABLE_AT as usize)?;
    let w = |at: u64, i: usize| xsave::u64_at(&data, at as usize + i * 8);
    for i in 0..sigs.len() as u64 {
        let at = SA_AT + 32 * i;
        out.sigactions.push(SaEntry {
            sigaction: w(at, 0),
            flags: w(at, 1),
            restorer: w(at, 2),
            mask: w(at, 3),
            compat_sigaction: Some(false),
            ..Default::default()
        });
    }
    let n = sigs.len();
    let got = |i: usize| res.get(n + i).copied().unwrap_or(0);
    out.brk = got(0);
    out.dumpable = got(1) as i32;
    out.thp_disabled = got(2) != 0;
    out.child_subreaper = w(SUBREAPER_AT, 0) as u32 != 0;
    for (i, slot) in out.itimers.iter_mut().enumerate() {
        let at = ITIMER_AT + 32 * i as u64;
        *slot = ItimerEntry {
            isec: w(at, 0),
            iusec: w(at, 1),
            vsec: w(at, 2),
            vusec: w(at, 3),
            ..Default::default()
        };
    }
    let main = match (
        data.get(MAIN_THREAD_AT as usize..),
        res.get(n + PROCESS_CALLS..),
    ) {
        (Some(d), Some(tres)) => decode_thread(d, tres),
        _ => ThreadInside::default(),
    };
    let membarrier = got(PROCESS_CALLS + THREAD_CALLS) as i64;
    out.membarrier = if membarrier < 0 { 0 } else { membarrier as u32 };
    out.posix_timers = collect_posix_timers(r)?;
    Ok((out, main))
}

/// Reads per-thread state; `code` as for [`collect_process`] (which reads
/// the main thread's with the process's).
pub fn collect_thread(r: &mut Remote<'_>, code: Option<RemoteAddr>) -> Result<ThreadInside, Error> {
    let mut b = remote::Batch::with_table_at(code, TABLE_AT);
    push_thread(r, &mut b, 0)?;
    let res = b.flush(r)?;
    let d = r.get(0, THREAD_LEN as usize)?;
    Ok(decode_thread(&d, &res))
}

/// Bytes of scratch a thread's calls read into, from their base offset.
const THREAD_LEN: u64 = 64;
/// Scratch offsets, from the base: stack_t (ss_sp 8, ss_flags 4 + pad,
/// ss_size 8), the tid address, the parent-death signal, the sched_param.
const SAS: u64 = 0;
const TID_ADDR: u64 = 32;
const PDEATH: u64 = 40;
const PARAM: u64 = 48;
/// How many calls [`push_thread`] queues.
const THREAD_CALLS: usize = 6;

/// Queue the calls that read a thread's state into `b`, their data at
/// scratch offset `base` ([`THREAD_LEN`] bytes, zeroed here).
fn push_thread(r: &mut Remote<'_>, b: &mut remote::Batch, base: u64) -> Result<(), Error> {
    r.put(base, &[0u8; THREAD_LEN as usize])?;
    let at = |o: u64| r.at(base + o).get();
    let calls: [(&str, i64, [u64; 6]); THREAD_CALLS] = [
        (
            "sigaltstack",
            libc::SYS_sigaltstack,
            [0, at(SAS), 0, 0, 0, 0],
        ),
        (
            "prctl(PR_GET_TID_ADDRESS)",
            libc::SYS_prctl,
            [PR_GET_TID_ADDRESS, at(TID_ADDR), 0, 0, 0, 0],
        ),
        (
            "prctl(PR_GET_SECUREBITS)",
            libc::SYS_prctl,
            [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
        ),
        (
            "prctl(PR_GET_PDEATHSIG)",
            libc::SYS_prctl,
            [libc::PR_GET_PDEATHSIG as u64, at(PDEATH), 0, 0, 0, 0],
        ),
        // With SCHED_RESET_ON_FORK, which /proc does not show.
        ("sched_getscheduler", libc::SYS_sched_getscheduler, [0; 6]),
        (
            "sched_getparam",
            libc::SYS_sched_getparam,
            [0, at(PARAM), 0, 0, 0, 0],
        ),
    ];
    for (what, nr, args) in calls {
        b.push(r, what.into(), nr, args, None)?;
    }
    Ok(())
}

/// A thread's state from [`push_thread`]'s data `d` (read from its base)
/// and its calls' results `res`.
fn decode_thread(d: &[u8], res: &[u64]) -> ThreadInside {
    let sas = ThreadSasEntry {
        ss_sp: xsave::u64_at(d, SAS as usize),
        ss_flags: xsave::u32_at(d, SAS as usize + 8),
        ss_size: xsave::u64_at(d, SAS as usize + 16),
        ..Default::default()
    };
    let got = |i: usize| res.get(i).copied().unwrap_or(0);
    ThreadInside {
        sas,
        clear_tid: xsave::u64_at(d, TID_ADDR as usize),
        secbits: got(2) as u32,
        pdeath_sig: xsave::u64_at(d, PDEATH as usize) as u32,
        sched: (got(4) as u32, xsave::u32_at(d, PARAM as usize)),
        seccomp: seccomp::ThreadSeccomp::default(),
    }
}

fn regs_to_image(r: &UserRegs) -> UserX86RegsEntry {
    UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(user_x86_regs_mode::NATIVE),
        ..Default::default()
    }
}

/// Registers to load into the restored task.
pub fn regs_from_image(g: &UserX86RegsEntry) -> UserRegs {
    // SAFETY-free: user_regs_struct is plain data; build it field by field.
    UserRegs {
        r15: g.r15,
        r14: g.r14,
        r13: g.r13,
        r12: g.r12,
        rbp: g.bp,
        rbx: g.bx,
        r11: g.r11,
        r10: g.r10,
        r9: g.r9,
        r8: g.r8,
        rax: g.ax,
        rcx: g.cx,
        rdx: g.dx,
        rsi: g.si,
        rdi: g.di,
        orig_rax: g.orig_ax,
        rip: g.ip,
        cs: g.cs,
        eflags: g.flags,
        rsp: g.sp,
        ss: g.ss,
        fs_base: g.fs_base,
        gs_base: g.gs_base,
        ds: g.ds,
        es: g.es,
        fs: g.fs,
        gs: g.gs,
    }
}

fn signal_queue(v: Vec<[u8; 128]>) -> SignalQueueEntry {
    SignalQueueEntry {
        signals: v
            .into_iter()
            .map(|s| SiginfoEntry {
                siginfo: s.to_vec(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Empty GDT TLS slots (entries 12..14), as CRIU records them for a 64-bit
/// task that uses none.
fn empty_tls() -> Vec<UserDescT> {
    (12..15)
        .map(|n| UserDescT {
            entry_number: n,
            read_exec_only: true,
            seg_not_present: true,
            ..Default::default()
        })
        .collect()
}

/// What one thread contributes to its `core-TID.img`; `process` is set for
/// the main thread (it carries the per-process part, `tc`).
pub struct CoreParts<'a> {
    pub task: &'a Task,
    pub stat: &'a Stat,
    pub status: &'a Status,
    pub thread: &'a ThreadInside,
    pub process: Option<&'a ProcInside>,
    pub multi_threaded: bool,
}

/// A thread's credentials as /proc shows them, with its securebits.
fn creds_of(status: &Status, secbits: u32) -> CredsEntry {
    CredsEntry {
        uid: status.uid[0],
        gid: status.gid[0],
        euid: status.uid[1],
        egid: status.gid[1],
        suid: status.uid[2],
        sgid: status.gid[2],
        fsuid: status.uid[3],
        fsgid: status.gid[3],
        cap_inh: cap_words(status.cap_inh),
        cap_prm: cap_words(status.cap_prm),
        cap_eff: cap_words(status.cap_eff),
        cap_bnd: cap_words(status.cap_bnd),
        secbits,
        groups: status.groups.clone(),
        no_new_privs: (status.no_new_privs != 0).then_some(status.no_new_privs),
        cap_amb: cap_words(status.cap_amb),
        ..Default::default()
    }
}

pub fn build_core(proc: &ProcRoot, tgid: i32, p: &CoreParts<'_>) -> Result<CoreEntry, Error> {
    let task = p.task;
    let (stat, status) = (p.stat, p.status);
    let tid = task.pid();
    let regs = crust_compel::restart_adjusted(task.regs(), false);
    let xstate = task
        .xstate()
        .map_err(|source| Error::Compel { pid: tid, source })?;
    let fpregs = xsave::fpregs_from_xstate(&xstate);
    let pending_p = task
        .pending_signals(false)
        .map_err(|source| Error::Compel { pid: tid, source })?;
    let (futex_rla, futex_rla_len) =
        crust_sys::process::get_robust_list(tid).map_err(sys_err(tid, "get_robust_list"))?;
    let rseq = task
        .rseq()
        .filter(|r| r.rseq_abi_pointer != 0)
        .map(|r| RseqEntry {
            rseq_abi_pointer: r.rseq_abi_pointer,
            rseq_abi_size: r.rseq_abi_size,
            signature: r.signature,
            ..Default::default()
        });
    let mut creds = creds_of(status, p.thread.secbits);
    crate::util::idmap::creds_to_ns(tgid, &mut creds)?;
    let comm = status.name.clone();
    let (policy, prio) = p.thread.sched;
    let tc = match p.process {
        None => None,
        Some(pi) => {
            let limits = crust_proc::limits(proc, tgid).map_err(proc_err(tgid))?;
            let pending_s = task
                .pending_signals(true)
                .map_err(|source| Error::Compel { pid: tid, source })?;
            Some(TaskCoreEntry {
                task_state: if task.was_stopped() {
                    task_state::STOPPED
                } else {
                    task_state::ALIVE
                },
                exit_code: 0,
                personality: crust_proc::personality(proc, tgid).map_err(proc_err(tgid))?,
                flags: stat.flags,
                blk_sigset: task.sigmask(),
                comm: comm.clone(),
                timers: Some(TaskTimersEntry {
                    real: pi.itimers[0].clone(),
                    virt: pi.itimers[1].clone(),
                    prof: pi.itimers[2].clone(),
                    posix: pi.posix_timers.clone(),
                    ..Default::default()
                }),
                rlimits: Some(TaskRlimitsEntry {
                    rlimits: limits
                        .iter()
                        .map(|(cur, max)| RlimitEntry {
                            cur: *cur,
                            max: *max,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                signals_s: Some(signal_queue(pending_s)),
                loginuid: crust_proc::loginuid(proc, tgid)
                    .ok()
                    .map(crate::util::idmap::to_ns_uid),
                oom_score_adj: crust_proc::oom_score_adj(proc, tgid).ok(),
                sigactions: pi.sigactions.clone(),
                child_subreaper: Some(pi.child_subreaper),
                stop_signo: task.stop_signal().map(|s| s as u32),
                membarrier_registration_mask: (pi.membarrier != 0).then_some(pi.membarrier),
                ..Default::default()
            })
        }
    };
    let tcore = ThreadCoreEntry {
        futex_rla,
        futex_rla_len: futex_rla_len as u32,
        sched_nice: Some(stat.nice as i32),
        sched_policy: Some(policy),
        sched_prio: [libc::SCHED_FIFO as u32, libc::SCHED_RR as u32]
            .contains(&(policy & !SCHED_RESET_ON_FORK))
            .then_some(prio),
        blk_sigset: (p.multi_threaded && p.process.is_none()).then(|| task.sigmask()),
        sas: Some(p.thread.sas.clone()),
        pdeath_sig: (p.thread.pdeath_sig != 0).then_some(p.thread.pdeath_sig),
        signals_p: Some(signal_queue(pending_p)),
        creds: Some(creds),
        comm: Some(comm),
        rseq_entry: rseq,
        ..Default::default()
    };
    let mut core = CoreEntry {
        mtype: core_entry_march::X86_64,
        thread_info: Some(Box::new(ThreadInfoX86 {
            clear_tid_addr: p.thread.clear_tid,
            gpregs: regs_to_image(&regs),
            fpregs,
            tls: empty_tls(),
            ..Default::default()
        })),
        tc: tc.map(Box::new),
        thread_core: Some(Box::new(tcore)),
        ..Default::default()
    };
    seccomp::set_core(&mut core, p.thread.seccomp);
    Ok(core)
}

/// The core of a helper task (see `dump::add_helpers`).
pub fn helper_core() -> CoreEntry {
    CoreEntry {
        mtype: core_entry_march::X86_64,
        tc: Some(Box::new(TaskCoreEntry {
            task_state: task_state::HELPER,
            comm: "crust-helper".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The core of a zombie: its exit status (as wait() reports it) and name.
pub fn zombie_core(stat: &Stat) -> CoreEntry {
    CoreEntry {
        mtype: core_entry_march::X86_64,
        tc: Some(Box::new(TaskCoreEntry {
            task_state: task_state::DEAD,
            exit_code: stat.exit_code as u32,
            comm: stat.comm.clone(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Restore side: apply what `core_entry` says to the new task, by remote
/// syscalls (everything but registers, mask and memory).
/// `tgid` and `tid` are the thread's ids as the task itself sees them
/// (they differ from crust's view in a pid namespace). `code`: the
/// syscall-table loop in the task (restore's trampoline), if any.
/// `sigactions`: the signal actions, which the restore's load takes out
/// of the core (processes with the same ones share them).
pub fn apply_core(
    r: &mut Remote<'_>,
    core: &CoreEntry,
    sigactions: &[SaEntry],
    (tgid, tid): (i32, i32),
    code: Option<RemoteAddr>,
) -> Result<(), Error> {
    let tc = core.tc.as_ref();
    let th = core.thread_core.as_ref();
    let comm = th
        .and_then(|t| t.comm.as_deref())
        .or(tc.map(|t| t.comm.as_str()));
    // The calls whose results are not needed and whose order against the
    // others does not matter run together, in as few stops as the data
    // they read allows (their data at their own scratch offsets).
    let mut b = remote::Batch::with_table_at(code, TABLE_AT);
    if let Some(comm) = comm {
        let mut name = comm.as_bytes().to_vec();
        name.truncate(15);
        let a = r.put_cstr(NAME_AT, &name)?;
        b.push(
            r,
            "prctl(PR_SET_NAME)".into(),
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, a.get(), 0, 0, 0, 0],
            None,
        )?;
    }
    if let Some(tc) = tc {
        apply_task_core(r, tc, sigactions, (tgid, tid), &mut b)?;
    }
    if let Some(th) = th {
        apply_thread_core(r, th, tgid, tid, &mut b)?;
    }
    if let Some(ti) = &core.thread_info {
        b.push(
            r,
            "set_tid_address".into(),
            libc::SYS_set_tid_address,
            [ti.clear_tid_addr, 0, 0, 0, 0, 0],
            None,
        )?;
    }
    // The rseq area, registered again (the memory is in place).
    if let Some(rs) = th.and_then(|t| t.rseq_entry.as_ref()) {
        if rs.rseq_abi_pointer != 0 {
            b.push(
                r,
                "rseq".into(),
                libc::SYS_rseq,
                [
                    rs.rseq_abi_pointer,
                    rs.rseq_abi_size as u64,
                    0,
                    rs.signature as u64,
                    0,
                    0,
                ],
                None,
            )?;
        }
    }
    b.flush(r).map(drop)
}

/// The process-wide part of a core (the main thread's): personality,
/// signal handlers, timers, limits, OOM score, subreaper and the signals
/// pending for the whole process.
fn apply_task_core(
    r: &mut Remote<'_>,
    tc: &TaskCoreEntry,
    sigactions: &[SaEntry],
    (tgid, tid): (i32, i32),
    b: &mut remote::Batch,
) -> Result<(), Error> {
    let pid = r.pid();
    b.push(
        r,
        "personality".into(),
        libc::SYS_personality,
        [tc.personality as u64, 0, 0, 0, 0, 0],
        None,
    )?;
    apply_sigactions(r, sigactions, b)?;
    // What follows puts its data at the start of the scratch area, where
    // the signal actions are: they run first.
    b.flush(r)?;
    if let Some(t) = &tc.timers {
        apply_itimers(r, t)?;
        restore_posix_timers(r, &t.posix)?;
    }
    if let Some(l) = &tc.rlimits {
        for (res, lim) in l.rlimits.iter().enumerate() {
            apply_rlimit(pid, res as u32, lim.cur, lim.max);
        }
    }
    if let Some(adj) = tc.oom_score_adj {
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()) {
            warn!("cannot restore oom_score_adj {adj} of {pid}: {e}");
        }
    }
    misc::apply_membarrier_tc(r, tc)?;
    if tc.child_subreaper == Some(true) {
        r.call(
            "prctl(PR_SET_CHILD_SUBREAPER)",
            libc::SYS_prctl,
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
        )?;
    }
    // Pending process-wide signals (blocked for now: the mask is all-ones
    // until the very end).
    if let Some(q) = &tc.signals_s {
        for s in &q.signals {
            queue_signal(r, s, tgid, tid, true)?;
        }
    }
    Ok(())
}

/// Signal handlers, in the order [`sigaction_signals`] lists them, queued
/// in `b` (one stop with the syscall-table loop, one by one without).
fn apply_sigactions(
    r: &mut Remote<'_>,
    sigactions: &[SaEntry],
    b: &mut remote::Batch,
) -> Result<(), Error> {
    let pid = r.pid();
    let sigs: Vec<u32> = sigaction_signals().collect();
    if !sigactions.is_empty() && sigactions.len() != sigs.len() {
        return Err(Error::Restore {
            pid,
            what: format!(
                "core image has {} sigactions, expected {}",
                sigactions.len(),
                sigs.len()
            ),
        });
    }
    // struct kernel_sigaction of each signal at SA_AT + 32 * i, written at
    // once; the table after them.
    let mut data = Vec::with_capacity(32 * sigs.len());
    for sa in sigactions {
        data.extend_from_slice(&sa.sigaction.to_le_bytes());
        data.extend_from_slice(&sa.flags.to_le_bytes());
        data.extend_from_slice(&sa.restorer.to_le_bytes());
        data.extend_from_slice(&sa.mask.to_le_bytes());
    }
    r.put(SA_AT, &data)?;
    for (i, (sig, _)) in sigs.iter().zip(sigactions.iter()).enumerate() {
        let at = r.at(SA_AT + 32 * i as u64).get();
        b.push(
            r,
            format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            [*sig as u64, at, 0, 8, 0, 0],
            None,
        )?;
    }
    Ok(())
}

/// The per-thread part of a core: alternate signal stack, signals pending
/// for the thread, robust futex list, scheduling, parent-death signal.
fn apply_thread_core(
    r: &mut Remote<'_>,
    th: &ThreadCoreEntry,
    tgid: i32,
    tid: i32,
    b: &mut remote::Batch,
) -> Result<(), Error> {
    if let Some(sas) = &th.sas {
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&sas.ss_sp.to_le_bytes());
        d.extend_from_slice(&sas.ss_flags.to_le_bytes());
        d.extend_from_slice(&[0u8; 4]);
        d.extend_from_slice(&sas.ss_size.to_le_bytes());
        let a = r.put(SAS_AT, &d)?;
        b.push(
            r,
            "sigaltstack".into(),
            libc::SYS_sigaltstack,
            [a.get(), 0, 0, 0, 0, 0],
            None,
        )?;
    }
    if let Some(q) = &th.signals_p {
        for s in &q.signals {
            queue_signal(r, s, tgid, tid, false)?;
        }
    }
    b.push(
        r,
        "set_robust_list".into(),
        libc::SYS_set_robust_list,
        [th.futex_rla, th.futex_rla_len as u64, 0, 0, 0, 0],
        None,
    )?;
    apply_sched(r, th)?;
    // The parent-death signal is set after the credentials (a change of
    // credentials clears it): see misc::apply_after_creds.
    Ok(())
}

/// Scheduling policy, real-time priority and nice value of one thread.
fn apply_sched(r: &mut Remote<'_>, th: &ThreadCoreEntry) -> Result<(), Error> {
    let policy = th.sched_policy.unwrap_or(0) as u64;
    // SCHED_RESET_ON_FORK is reported with the policy; keep it.
    const RESET_ON_FORK: u64 = 0x4000_0000;
    let base = policy & !RESET_ON_FORK;
    if base != libc::SCHED_OTHER as u64 || policy & RESET_ON_FORK != 0 {
        let prio = th.sched_prio.unwrap_or(0) as i32;
        let a = r.put(0, &prio.to_le_bytes())?;
        r.call(
            &format!("sched_setscheduler({policy:#x}, {prio})"),
            libc::SYS_sched_setscheduler,
            [0, policy, a.get(), 0, 0, 0],
        )?;
    }
    if let Some(nice) = th.sched_nice {
        if nice != 0 {
            r.call(
                &format!("setpriority(nice {nice})"),
                libc::SYS_setpriority,
                [libc::PRIO_PROCESS as u64, 0, nice as i64 as u64, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// The audit login uid, which only the task itself may set
/// (through /proc/self/loginuid), and only to a value it does not have.
pub fn apply_loginuid(r: &mut Remote<'_>, core: &CoreEntry) -> Result<(), Error> {
    let Some(uid) = core.tc.as_ref().and_then(|t| t.loginuid) else {
        return Ok(());
    };
    let pid = r.pid();
    let now = crust_proc::loginuid(&ProcRoot::default(), pid).map_err(proc_err(pid))?;
    let now = crate::util::idmap::to_ns_uid(now);
    if now == uid {
        return Ok(());
    }
    let path = r.put_cstr(0, b"/proc/self/loginuid")?;
    let text = uid.to_string();
    let buf = r.put(256, text.as_bytes())?;
    let fd = r.call(
        "open /proc/self/loginuid",
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.get(),
            libc::O_WRONLY as u64,
            0,
            0,
            0,
        ],
    )?;
    let w = r.call(
        "write /proc/self/loginuid",
        libc::SYS_write,
        [fd, buf.get(), text.len() as u64, 0, 0, 0],
    );
    r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    if let Err(e) = w {
        warn!("cannot restore loginuid {uid} of {pid}: {e}");
    }
    Ok(())
}

fn apply_rlimit(pid: i32, res: u32, cur: u64, max: u64) {
    if crust_sys::process::set_rlimit(pid, res, cur, max).is_ok() {
        return;
    }
    // Without CAP_SYS_RESOURCE a hard limit cannot be raised: keep ours and
    // clamp the soft one.
    if let Ok((_, our_max)) = crust_sys::process::get_rlimit(pid, res) {
        let m = max.min(our_max);
        let c = cur.min(m);
        if crust_sys::process::set_rlimit(pid, res, c, m).is_ok() {
            warn!(
                "rlimit {res} of {pid}: wanted {cur}/{max}, set {c}/{m} (no CAP_SYS_RESOURCE to raise the hard limit)"
            );
            return;
        }
    }
    warn!("cannot restore rlimit {res} ({cur}/{max}) of {pid}");
}

/// Queue a pending signal again. The kernel only accepts a kernel- or
/// kill()-style siginfo from the receiving thread itself, so per-thread
/// signals are queued by each thread and shared ones by the main thread.
fn queue_signal(
    r: &mut Remote<'_>,
    s: &SiginfoEntry,
    tgid: i32,
    tid: i32,
    shared: bool,
) -> Result<(), Error> {
    let pid = r.pid();
    if s.siginfo.len() != 128 {
        return Err(Error::Restore {
            pid,
            what: format!(
                "siginfo of {} bytes in the image (128 expected)",
                s.siginfo.len()
            ),
        });
    }
    let signo = xsave::u32_at(&s.siginfo, 0) as i32;
    if !(1..=64).contains(&signo) {
        return Err(Error::Restore {
            pid,
            what: format!("pending signal number {signo} in the image is invalid"),
        });
    }
    let a = r.put(0, &s.siginfo)?;
    if shared {
        r.call_stepped(
            "rt_sigqueueinfo",
            libc::SYS_rt_sigqueueinfo,
            [tgid as u64, signo as u64, a.get(), 0, 0, 0],
        )?;
    } else {
        r.call_stepped(
            "rt_tgsigqueueinfo",
            libc::SYS_rt_tgsigqueueinfo,
            [tgid as u64, tid as u64, signo as u64, a.get(), 0, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    /// Registers with every field distinct, so a swapped pair shows.
    fn sample_regs() -> UserRegs {
        UserRegs {
            r15: 1,
            r14: 2,
            r13: 3,
            r12: 4,
            rbp: 5,
            rbx: 6,
            r11: 7,
            r10: 8,
            r9: 9,
            r8: 10,
            rax: 11,
            rcx: 12,
            rdx: 13,
            rsi: 14,
            rdi: 15,
            orig_rax: 16,
            rip: 17,
            cs: 18,
            eflags: 19,
            rsp: 20,
            ss: 21,
            fs_base: 22,
            gs_base: 23,
            ds: 24,
            es: 25,
            fs: 26,
            gs: 27,
        }
    }

    fn fields(r: &UserRegs) -> [u64; 27] {
        [
            r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx,
            r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base,
            r.gs_base, r.ds, r.es, r.fs, r.gs,
        ]
    }

    #[test]
    fn regs_round_trip_through_the_image() {
        let r = sample_regs();
        let img = regs_to_image(&r);
        assert_eq!(img.mode, Some(user_x86_regs_mode::NATIVE));
        assert_eq!((img.ip, img.sp, img.ax, img.orig_ax), (17, 20, 11, 16));
        assert_eq!((img.bp, img.bx, img.flags), (5, 6, 19));
        assert_eq!(fields(&regs_from_image(&img)), fields(&r));
    }

    #[test]
    fn sigaction_slots_are_64_signals_but_kill_and_stop() {
        let sigs: Vec<u32> = sigaction_signals().collect();
        assert_eq!(sigs.len(), 62);
        assert_eq!(sigs.first(), Some(&1));
        assert_eq!(sigs.last(), Some(&64));
        assert!(!sigs.contains(&(libc::SIGKILL as u32)));
        assert!(!sigs.contains(&(libc::SIGSTOP as u32)));
        assert!(sigs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn capability_words_round_trip() {
        for v in [0, 1, 0x1ff_ffff_ffff, u64::MAX, 0x8000_0000_0000_0001] {
            let w = cap_words(v);
            assert_eq!(w.len(), 2, "CRIU stores two 32-bit words");
            assert_eq!(w[0], v as u32);
            assert_eq!(w[1], (v >> 32) as u32);
            assert_eq!(cap_join(&w), v);
        }
        // Short or empty lists (older images) read as zero words.
        assert_eq!(cap_join(&[7]), 7);
        assert_eq!(cap_join(&[]), 0);
    }

    #[test]
    fn zombie_and_helper_cores() {
        let stat = Stat {
            exit_code: 0x0900,
            comm: "dead".into(),
            ..Default::default()
        };
        let z = zombie_core(&stat);
        let tc = z.tc.expect("task core");
        assert_eq!(tc.task_state, task_state::DEAD);
        assert_eq!(tc.exit_code, 0x0900);
        assert_eq!(tc.comm, "dead");
        assert!(z.thread_core.is_none());
        assert_eq!(z.mtype, core_entry_march::X86_64);
        let h = helper_core();
        assert_eq!(h.mtype, core_entry_march::X86_64);
        assert_eq!(h.tc.expect("task core").task_state, task_state::HELPER);
    }

    #[test]
    fn little_endian_reads_past_the_end_are_zero() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(xsave::u64_at(&b, 0), 0x0807_0605_0403_0201);
        assert_eq!(xsave::u32_at(&b, 5), 0x0908_0706);
        assert_eq!(xsave::u64_at(&b, 2), 0, "only 7 bytes left");
        assert_eq!(xsave::u16_at(&b, usize::MAX), 0, "no overflow");
        let mut w = [0u8; 6];
        xsave::put_u32(&mut w, 1, 0xaabb_ccdd);
        assert_eq!(w, [0, 0xdd, 0xcc, 0xbb, 0xaa, 0]);
        xsave::put_u64(&mut w, 0, u64::MAX);
        assert_eq!(w, [0, 0xdd, 0xcc, 0xbb, 0xaa, 0], "too short: untouched");
    }
}
