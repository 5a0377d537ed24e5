//! Seccomp: strict mode and filters, per thread, in CRIU's seccomp.img.
//!
//! Dump: a thread's mode is the `Seccomp:` line of its status; its filters
//! come from PTRACE_SECCOMP_GET_FILTER (index 0 is the newest) with their
//! flags from PTRACE_SECCOMP_GET_METADATA. seccomp.img lists every chain
//! oldest first, each filter's `prev` naming the one installed before it;
//! a thread's core names its newest (`seccomp_filter`). As CRIU does, when
//! every thread of a process has the same chain, only the leader keeps it,
//! with SECCOMP_FILTER_FLAG_TSYNC, and the other threads say DISABLED
//! (the restore's TSYNC gives it back to them).
//!
//! Both ways the threads are traced with PTRACE_O_SUSPEND_SECCOMP while
//! crust runs syscalls in them, so a filter (or strict mode) never sees
//! crust's calls; the option goes with the detach.

use crate::task::remote::Remote;
use crate::util::{compel_err, sys_err};
use crate::Error;
use crust_compel::Task;
use crust_images::proto::core::{seccomp_mode, CoreEntry};
use crust_images::proto::seccomp::{SeccompEntry, SeccompFilter};
use crust_proc::ProcRoot;

const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const PR_SET_SECCOMP: u64 = 22;
/// A filter of more than this many filters per thread is refused (the
/// kernel's own limit is 32768 instructions in all).
const MAX_CHAIN: usize = 4096;

/// Suspend seccomp for the traced `tasks` (`opts`: the ptrace options they
/// have) whose status shows a mode; returns the threads' modes, in order.
pub fn suspend(proc: &ProcRoot, pid: i32, tasks: &[Task], opts: u64) -> Result<Vec<u32>, Error> {
    let statuses = crate::task::thread_statuses(proc, pid, tasks)?;
    suspend_with(tasks, &statuses, opts)
}

/// [`suspend`] with the threads' status read (in the order of `tasks`).
pub fn suspend_with(
    tasks: &[Task],
    statuses: &[crust_proc::Status],
    opts: u64,
) -> Result<Vec<u32>, Error> {
    let mut modes = Vec::with_capacity(tasks.len());
    for (t, st) in tasks.iter().zip(statuses) {
        let tid = t.pid();
        if st.seccomp != 0 {
            t.set_options(opts | crust_sys::ptrace::options::SUSPEND_SECCOMP)
                .map_err(compel_err(tid))?;
        }
        modes.push(st.seccomp);
    }
    Ok(modes)
}

/// The chain of one thread, oldest filter first: (BPF bytes, flags).
type Chain = Vec<(Vec<u8>, u32)>;

fn read_chain(tid: i32) -> Result<Chain, Error> {
    let mut newest_first = Vec::new();
    for i in 0..MAX_CHAIN as u64 {
        let Some(bpf) = crust_sys::ptrace::seccomp_filter(tid, i)
            .map_err(sys_err(tid, format!("PTRACE_SECCOMP_GET_FILTER {i}")))?
        else {
            break;
        };
        let flags = crust_sys::ptrace::seccomp_filter_flags(tid, i)
            .map_err(sys_err(tid, format!("PTRACE_SECCOMP_GET_METADATA {i}")))?;
        newest_first.push((bpf, flags as u32));
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// What a dump records of seccomp: the filters of seccomp.img, in order.
#[derive(Default)]
pub struct SeccompDump {
    filters: Vec<SeccompFilter>,
}

/// Mode and newest filter of one thread, for its core.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadSeccomp {
    pub mode: u32,
    pub filter: Option<u32>,
}

impl SeccompDump {
    /// Record the filters of the threads of one process (`modes` from
    /// [`suspend`]), returning what each thread's core says.
    pub fn collect(&mut self, tasks: &[Task], modes: &[u32]) -> Result<Vec<ThreadSeccomp>, Error> {
        let mut chains = Vec::with_capacity(tasks.len());
        for (t, mode) in tasks.iter().zip(modes) {
            chains.push(if *mode == seccomp_mode::filter as u32 {
                Some(read_chain(t.pid())?)
            } else {
                None
            });
        }
        // Every thread with the leader's very chain: TSYNC on the leader.
        let first = chains.first().cloned().flatten();
        let tsync = first.is_some() && chains.iter().all(|c| *c == first);
        let mut out = Vec::with_capacity(tasks.len());
        for (i, (chain, mode)) in chains.into_iter().zip(modes).enumerate() {
            let Some(mut chain) = chain else {
                out.push(ThreadSeccomp {
                    mode: *mode,
                    filter: None,
                });
                continue;
            };
            if tsync && i > 0 {
                out.push(ThreadSeccomp::default());
                continue;
            }
            if tsync {
                for (_, flags) in chain.iter_mut() {
                    *flags |= SECCOMP_FILTER_FLAG_TSYNC;
                }
            }
            out.push(ThreadSeccomp {
                mode: *mode,
                filter: self.push_chain(chain),
            });
        }
        Ok(out)
    }

    /// Append a chain (oldest first); the index of its newest filter.
    fn push_chain(&mut self, chain: Chain) -> Option<u32> {
        let mut prev: Option<u32> = None;
        for (bpf, flags) in chain {
            let idx = self.filters.len() as u32;
            self.filters.push(SeccompFilter {
                filter: bpf,
                prev,
                flags: Some(flags),
                ..Default::default()
            });
            prev = Some(idx);
        }
        prev
    }

    pub fn entry(&self) -> SeccompEntry {
        SeccompEntry {
            seccomp_filters: self.filters.clone(),
            ..Default::default()
        }
    }
}

/// Put a thread's seccomp state in its core.
pub fn set_core(core: &mut CoreEntry, s: ThreadSeccomp) {
    if let Some(th) = core.thread_core.as_mut() {
        if s.mode != seccomp_mode::disabled as u32 {
            th.seccomp_mode = Some(s.mode as i32);
            th.seccomp_filter = s.filter;
        }
    }
}

/// seccomp.img as read at restore.
#[derive(Default, Debug)]
pub struct SeccompImage {
    filters: Vec<SeccompFilter>,
}

impl SeccompImage {
    pub fn new(e: Option<SeccompEntry>) -> Self {
        SeccompImage {
            filters: e.map(|e| e.seccomp_filters).unwrap_or_default(),
        }
    }

    /// The chain ending at filter `newest`, oldest first, checked: every
    /// index in range, no loop, each program a whole number of 8-byte
    /// instructions, neither empty nor longer than the kernel allows.
    pub fn chain(&self, newest: u32) -> Result<Vec<&SeccompFilter>, String> {
        let mut out = Vec::new();
        let mut at = Some(newest);
        while let Some(i) = at {
            let f = self
                .filters
                .get(i as usize)
                .ok_or_else(|| format!("seccomp filter {i} is not in seccomp.img"))?;
            if out.len() >= self.filters.len().min(MAX_CHAIN) {
                return Err(format!("the seccomp filters from {newest} loop"));
            }
            let n = f.filter.len();
            if n == 0 || n % 8 != 0 || n / 8 > crust_sys::ptrace::BPF_MAXINSNS {
                return Err(format!("seccomp filter {i} is {n} bytes long"));
            }
            out.push(f);
            at = f.prev;
        }
        out.reverse();
        Ok(out)
    }

    /// Check what a thread's core says of seccomp.
    pub fn check_core(&self, core: &CoreEntry) -> Result<(), String> {
        let Some(th) = core.thread_core.as_ref() else {
            return Ok(());
        };
        match th.seccomp_mode.unwrap_or(seccomp_mode::disabled) {
            seccomp_mode::disabled | seccomp_mode::strict => Ok(()),
            seccomp_mode::filter => {
                let newest = th
                    .seccomp_filter
                    .ok_or("seccomp mode filter without a filter")?;
                self.chain(newest).map(drop)
            }
            m => Err(format!("unknown seccomp mode {m}")),
        }
    }
}

/// Does the thread's core give it a seccomp mode?
pub fn has_mode(core: &CoreEntry) -> bool {
    core.thread_core
        .as_ref()
        .and_then(|t| t.seccomp_mode)
        .is_some_and(|m| m != seccomp_mode::disabled)
}

/// Restore side: put the thread's mode and filters back, oldest filter
/// first. The caller has suspended seccomp for the task
/// (PTRACE_O_SUSPEND_SECCOMP) so that crust's later calls pass.
pub fn apply(r: &mut Remote<'_>, core: &CoreEntry, img: &SeccompImage) -> Result<(), Error> {
    let pid = r.pid();
    let Some(th) = core.thread_core.as_ref() else {
        return Ok(());
    };
    let mode = th.seccomp_mode.unwrap_or(seccomp_mode::disabled);
    if mode == seccomp_mode::disabled {
        return Ok(());
    }
    if mode == seccomp_mode::strict {
        r.call(
            "prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)",
            libc::SYS_prctl,
            [PR_SET_SECCOMP, seccomp_mode::strict as u64, 0, 0, 0, 0],
        )?;
        return Ok(());
    }
    let bad = |what: String| Error::Restore { pid, what };
    let chain = img
        .chain(th.seccomp_filter.unwrap_or(u32::MAX))
        .map_err(bad)?;
    for f in chain {
        // struct sock_fprog: len (u16, padded to 8), filter pointer.
        let prog = r.put(64, &f.filter)?;
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&((f.filter.len() / 8) as u64).to_le_bytes());
        b.extend_from_slice(&prog.get().to_le_bytes());
        let fprog = r.put(0, &b)?;
        r.call(
            "seccomp(SECCOMP_SET_MODE_FILTER)",
            libc::SYS_seccomp,
            [
                SECCOMP_SET_MODE_FILTER,
                f.flags.unwrap_or(0) as u64,
                fprog.get(),
                0,
                0,
                0,
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Chain {
        (0..n).map(|i| (vec![i as u8; 8], 0)).collect()
    }

    #[test]
    fn chains_are_written_oldest_first_and_read_back() {
        let mut d = SeccompDump::default();
        assert_eq!(d.push_chain(chain(3)), Some(2));
        assert_eq!(d.push_chain(chain(1)), Some(3));
        assert_eq!(d.push_chain(Vec::new()), None);
        let e = d.entry();
        assert_eq!(e.seccomp_filters[0].prev, None);
        assert_eq!(e.seccomp_filters[2].prev, Some(1));
        assert_eq!(e.seccomp_filters[3].prev, None, "a chain of its own");
        let img = SeccompImage::new(Some(e));
        let c = img.chain(2).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].filter, vec![0u8; 8], "oldest first");
        assert_eq!(c[2].filter, vec![2u8; 8]);
        assert_eq!(img.chain(3).unwrap().len(), 1);
    }

    #[test]
    fn bad_chains_are_refused() {
        let f = |filter: Vec<u8>, prev| SeccompFilter {
            filter,
            prev,
            ..Default::default()
        };
        let img = |v| {
            SeccompImage::new(Some(SeccompEntry {
                seccomp_filters: v,
                ..Default::default()
            }))
        };
        assert!(
            img(vec![f(vec![0; 8], None)]).chain(1).is_err(),
            "out of range"
        );
        assert!(
            img(vec![f(vec![0; 8], Some(0))]).chain(0).is_err(),
            "a loop"
        );
        assert!(
            img(vec![f(vec![0; 7], None)]).chain(0).is_err(),
            "a partial insn"
        );
        assert!(img(vec![f(Vec::new(), None)]).chain(0).is_err(), "empty");
        let mut core = CoreEntry {
            thread_core: Some(Default::default()),
            ..Default::default()
        };
        let ok = img(vec![f(vec![0; 8], None)]);
        assert!(ok.check_core(&core).is_ok(), "no mode");
        core.thread_core.as_mut().unwrap().seccomp_mode = Some(seccomp_mode::filter);
        assert!(
            ok.check_core(&core).is_err(),
            "filter mode without a filter"
        );
        core.thread_core.as_mut().unwrap().seccomp_filter = Some(0);
        assert!(ok.check_core(&core).is_ok());
        core.thread_core.as_mut().unwrap().seccomp_mode = Some(7);
        assert!(ok.check_core(&core).is_err(), "unknown mode");
    }
}
