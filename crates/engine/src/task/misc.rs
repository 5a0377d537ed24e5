//! Per-task state that needs care about when it is read or set: rseq
//! critical sections cut by the dump, scheduling policy with its
//! reset-on-fork flag, membarrier registrations, and what a change of
//! credentials resets (dumpable, parent-death signal).

use crate::task::remote::Remote;
use crate::Error;
use crust_compel::Task;
use crust_images::proto::core::{CoreEntry, TaskCoreEntry};
use crust_images::proto::mm::MmEntry;
use crust_sys::RemoteAddr;
use log::debug;

const RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL: u32 = 2;
pub(crate) const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

fn read_u64(pid: i32, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    crust_sys::mem::read(pid, RemoteAddr(addr), &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// A thread stopped inside an rseq critical section would resume there
/// with the section's descriptor cleared (the kernel clears it when
/// crust's remote syscalls return to user space), finishing a section it
/// should have restarted. Send it to the section's abort handler, as the
/// kernel would have on the way back, unless the section asks not to be
/// restarted on signals (then it goes on as it was). Call before any
/// remote syscall runs in the task.
pub fn abort_rseq_cs(t: &mut Task) -> Result<(), Error> {
    let tid = t.pid();
    let Some(conf) = t.rseq().filter(|c| c.rseq_abi_pointer != 0) else {
        return Ok(());
    };
    // struct rseq: cpu_id_start, cpu_id (u32 each), rseq_cs (u64), flags.
    let cs_ptr = read_u64(tid, conf.rseq_abi_pointer + 8).unwrap_or(0);
    if cs_ptr == 0 {
        return Ok(());
    }
    let mut b = [0u8; 32];
    if crust_sys::mem::read(tid, RemoteAddr(cs_ptr), &mut b).is_err() {
        return Ok(());
    }
    // struct rseq_cs: version, flags (u32), start_ip, post_commit_offset,
    // abort_ip (u64).
    let version = crate::task::xsave::u32_at(&b, 0);
    let mut flags = crate::task::xsave::u32_at(&b, 4);
    let start = crate::task::xsave::u64_at(&b, 8);
    let len = crate::task::xsave::u64_at(&b, 16);
    let abort = crate::task::xsave::u64_at(&b, 24);
    if version != 0 {
        return Err(Error::unsupported(format!(
            "thread {tid} is in an rseq critical section of ABI version {version}"
        )));
    }
    let mut fb = [0u8; 4];
    if crust_sys::mem::read(tid, RemoteAddr(conf.rseq_abi_pointer + 24), &mut fb).is_ok() {
        flags |= u32::from_le_bytes(fb);
    }
    let ip = t.regs().rip;
    if aborts(ip, start, len, flags) {
        debug!("{tid}: in an rseq critical section at {ip:#x}: resumes at its abort handler {abort:#x}");
        t.set_resume_ip(abort);
    }
    Ok(())
}

/// Would the kernel send a thread at `ip` to the abort handler of the
/// critical section [start, start + len) with `flags` on a signal?
fn aborts(ip: u64, start: u64, len: u64, flags: u32) -> bool {
    ip >= start && ip - start < len && flags & RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL == 0
}

/// Register the process for the membarrier commands it had.
pub fn apply_membarrier_tc(r: &mut Remote<'_>, tc: &TaskCoreEntry) -> Result<(), Error> {
    let mask = tc.membarrier_registration_mask.unwrap_or(0);
    for bit in 0..32u32 {
        if mask & (1 << bit) != 0 {
            r.call(
                &format!("membarrier({:#x})", 1u32 << bit),
                libc::SYS_membarrier,
                [1u64 << bit, 0, 0, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// What a change of credentials resets, to set again after it: the
/// dumpable flag (of the process, `mm`: the main thread only) and the
/// thread's parent-death signal; queued, for
/// [`crate::task::apply_creds`] to run once the credentials are set.
pub fn after_creds(
    r: &mut Remote<'_>,
    core: &CoreEntry,
    mm: Option<&MmEntry>,
    reset_pdeath: bool,
) -> Result<crate::task::remote::Batch, Error> {
    let mut b = crate::task::remote::Batch::new(r.batch_code);
    if let Some(d) = mm.and_then(|m| m.dumpable) {
        if d == 0 || d == 1 {
            b.push(
                r,
                "prctl(PR_SET_DUMPABLE)".into(),
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as u64, d as u64, 0, 0, 0, 0],
                None,
            )?;
        }
    }
    let pd = core.thread_core.as_ref().and_then(|t| t.pdeath_sig);
    // `reset_pdeath`: crust armed one of its own; none recorded clears it.
    let pd = if reset_pdeath {
        Some(pd.unwrap_or(0))
    } else {
        pd
    };
    if let Some(pd) = pd {
        b.push(
            r,
            "prctl(PR_SET_PDEATHSIG)".into(),
            libc::SYS_prctl,
            [libc::PR_SET_PDEATHSIG as u64, pd as u64, 0, 0, 0, 0],
            None,
        )?;
    }
    Ok(b)
}

/// A SIGTRAP pending for a thread (or its process) is refused, as CRIU
/// refuses it: the kernel's own traps (breakpoints, single steps) cannot
/// be told apart from a queued one, and crust's ptrace work would take it.
pub fn refuse_pending_sigtrap(
    proc: &crust_proc::ProcRoot,
    pid: i32,
    tasks: &[Task],
) -> Result<(), Error> {
    let statuses = crate::task::thread_statuses(proc, pid, tasks)?;
    refuse_sigtrap_in(pid, tasks, &statuses)
}

/// [`refuse_pending_sigtrap`] with the threads' status read (in the order
/// of `tasks`).
pub fn refuse_sigtrap_in(
    pid: i32,
    tasks: &[Task],
    statuses: &[crust_proc::Status],
) -> Result<(), Error> {
    let bit = 1u64 << (libc::SIGTRAP - 1);
    for (t, st) in tasks.iter().zip(statuses) {
        let tid = t.pid();
        if (st.sig_pnd | st.shd_pnd) & bit != 0 {
            return Err(Error::unsupported(format!(
                "thread {tid} of process {pid} has a SIGTRAP pending (as CRIU, crust does not dump a task with a pending SIGTRAP: let it handle the signal first)"
            )));
        }
    }
    Ok(())
}

/// A process whose children would be born in another time namespace than
/// its own (it called unshare(CLONE_NEWTIME)) is refused, as CRIU refuses
/// it (a nested time namespace): crust dumps the time namespace the tree
/// is in, not one made for children nobody has yet.
pub fn refuse_time_for_children(pid: i32) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let ino = |name: &str| std::fs::metadata(format!("/proc/{pid}/ns/{name}")).map(|m| m.ino());
    match (ino("time"), ino("time_for_children")) {
        (Ok(own), Ok(kids)) if own != kids => Err(Error::unsupported(format!(
            "process {pid} has a time namespace for its children other than its own (unshare(CLONE_NEWTIME)); crust, as CRIU, does not dump such a nested time namespace"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ip_inside_a_restartable_section_aborts() {
        assert!(aborts(0x1000, 0x1000, 0x20, 0), "the first instruction");
        assert!(aborts(0x101f, 0x1000, 0x20, 0), "the last byte");
        assert!(
            !aborts(0x1020, 0x1000, 0x20, 0),
            "the post-commit ip is outside"
        );
        assert!(!aborts(0xfff, 0x1000, 0x20, 0), "before the section");
        assert!(!aborts(
            0x1010,
            0x1000,
            0x20,
            RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL
        ));
        assert!(
            aborts(0x1010, 0x1000, 0x20, 1 | 4),
            "other flags do not keep it"
        );
        assert!(!aborts(5, u64::MAX, 10, 0), "no overflow");
    }
}
