//! ptrace requests used to seize, inspect and drive a task.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::{cvt, RemoteAddr};
use std::io;

pub use libc::user_regs_struct as UserRegs;

/// `PTRACE_O_*` options.
pub mod options {
    pub const TRACESYSGOOD: u64 = 1;
    pub const TRACEFORK: u64 = 1 << 1;
    pub const TRACEVFORK: u64 = 1 << 2;
    pub const TRACECLONE: u64 = 1 << 3;
    pub const TRACEEXEC: u64 = 1 << 4;
    pub const TRACEEXIT: u64 = 1 << 6;
    pub const EXITKILL: u64 = 1 << 20;
    /// Seccomp filters and strict mode do not apply to the tracee's
    /// syscalls while it is traced with this option (needs CAP_SYS_ADMIN).
    pub const SUSPEND_SECCOMP: u64 = 1 << 21;
}

/// `PTRACE_EVENT_STOP`: the stop that PTRACE_INTERRUPT and group stops
/// produce for a seized task.
pub const EVENT_STOP: i32 = 128;

const PTRACE_GETREGSET: libc::c_uint = 0x4204;
const PTRACE_SETREGSET: libc::c_uint = 0x4205;
const PTRACE_SEIZE: libc::c_uint = 0x4206;
const PTRACE_INTERRUPT: libc::c_uint = 0x4207;
const PTRACE_LISTEN: libc::c_uint = 0x4208;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

fn req(request: libc::c_uint, pid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // ptrace never retains `addr`/`data`.
    // SAFETY: callers here pass integers or pointers to live buffers of
    // the size the request reads or writes.
    let r = unsafe { libc::ptrace(request, pid, addr, data) };
    cvt(r)
}

/// PTRACE_SEIZE: attach without stopping the task.
pub fn seize(pid: i32, opts: u64) -> io::Result<()> {
    req(PTRACE_SEIZE, pid, 0, opts as usize).map(drop)
}

/// PTRACE_INTERRUPT: stop a seized task (it reports PTRACE_EVENT_STOP).
pub fn interrupt(pid: i32) -> io::Result<()> {
    req(PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// PTRACE_LISTEN: let a seized task in a group stop (PTRACE_EVENT_STOP
/// with a stop signal) stay stopped as if untraced: a SIGCONT wakes it
/// (it reports PTRACE_EVENT_STOP again).
pub fn listen(pid: i32) -> io::Result<()> {
    req(PTRACE_LISTEN, pid, 0, 0).map(drop)
}

/// PTRACE_SETOPTIONS.
pub fn set_options(pid: i32, opts: u64) -> io::Result<()> {
    req(libc::PTRACE_SETOPTIONS, pid, 0, opts as usize).map(drop)
}

/// PTRACE_TRACEME, called by a child that wants its parent to trace it.
pub fn traceme() -> io::Result<()> {
    req(libc::PTRACE_TRACEME, 0, 0, 0).map(drop)
}

/// PTRACE_CONT, delivering `sig` (0 for none).
pub fn cont(pid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_CONT, pid, 0, sig as usize).map(drop)
}

/// PTRACE_SYSCALL: resume until the next syscall entry or exit.
pub fn syscall(pid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_SYSCALL, pid, 0, sig as usize).map(drop)
}

/// PTRACE_SINGLESTEP: resume for one instruction (a `syscall`
/// instruction: until that syscall's exit), delivering `sig` (0 for none).
pub fn single_step(pid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_SINGLESTEP, pid, 0, sig as usize).map(drop)
}

/// PTRACE_DETACH, delivering `sig` (0 for none).
pub fn detach(pid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_DETACH, pid, 0, sig as usize).map(drop)
}

/// PTRACE_GETEVENTMSG.
pub fn get_event_msg(pid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    req(
        libc::PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// General purpose registers (NT_PRSTATUS).
pub fn get_regs(pid: i32) -> io::Result<UserRegs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is valid.
    let mut regs: UserRegs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: &mut regs as *mut UserRegs as *mut libc::c_void,
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    req(
        PTRACE_GETREGSET,
        pid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(regs)
}

/// Set general purpose registers (NT_PRSTATUS).
pub fn set_regs(pid: i32, regs: &UserRegs) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: regs as *const UserRegs as *mut libc::c_void,
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    req(
        PTRACE_SETREGSET,
        pid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// The task's XSAVE area in the standard (uabi) format. Returns the bytes
/// the kernel filled.
pub fn get_xstate(pid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16384];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    req(
        PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE,
        &mut iov as *mut libc::iovec as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Set the task's XSAVE area (standard format, as [`get_xstate`] gives).
pub fn set_xstate(pid: i32, xstate: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: xstate.as_ptr() as *mut libc::c_void,
        iov_len: xstate.len(),
    };
    req(
        PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// The blocked signal mask of a stopped task.
pub fn get_sigmask(pid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    req(PTRACE_GETSIGMASK, pid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// Set the blocked signal mask of a stopped task.
pub fn set_sigmask(pid: i32, mask: u64) -> io::Result<()> {
    req(PTRACE_SETSIGMASK, pid, 8, &mask as *const u64 as usize).map(drop)
}

/// A raw `siginfo_t` (128 bytes), as the images store it.
pub type RawSiginfo = [u8; 128];

/// Read up to `max` pending signals without dequeuing them: the thread's
/// own queue, or the process-wide one when `shared`.
pub fn peek_siginfo(pid: i32, shared: bool, max: usize) -> io::Result<Vec<RawSiginfo>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let n = req(
            PTRACE_PEEKSIGINFO,
            pid,
            &args as *const PeekArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        if n == 0 {
            break;
        }
        out.extend_from_slice(buf.get(..n).unwrap_or(&buf));
        if out.len() >= max {
            out.truncate(max);
            break;
        }
    }
    Ok(out)
}

/// rseq registration of a task (PTRACE_GET_RSEQ_CONFIGURATION).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
}

pub fn get_rseq_config(pid: i32) -> io::Result<RseqConfig> {
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        ptr: u64,
        size: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut raw = Raw::default();
    req(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<Raw>(),
        &mut raw as *mut Raw as usize,
    )?;
    Ok(RseqConfig {
        rseq_abi_pointer: raw.ptr,
        rseq_abi_size: raw.size,
        signature: raw.sig,
        flags: raw.flags,
    })
}

/// Longest classic BPF program the kernel accepts (BPF_MAXINSNS).
pub const BPF_MAXINSNS: usize = 4096;

/// PTRACE_SECCOMP_GET_FILTER: the classic BPF instructions (8 bytes each)
/// of the task's seccomp filter number `index`, 0 being the one installed
/// last. `Ok(None)` past the oldest filter (ENOENT).
pub fn seccomp_filter(pid: i32, index: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; BPF_MAXINSNS * 8];
    match req(
        PTRACE_SECCOMP_GET_FILTER,
        pid,
        index as usize,
        buf.as_mut_ptr() as usize,
    ) {
        Ok(n) => {
            let len = usize::try_from(n).unwrap_or(0).min(BPF_MAXINSNS) * 8;
            buf.truncate(len);
            Ok(Some(buf))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// PTRACE_SECCOMP_GET_METADATA: the flags (SECCOMP_FILTER_FLAG_LOG...)
/// seccomp filter number `index` of the task was installed with.
pub fn seccomp_filter_flags(pid: i32, index: u64) -> io::Result<u64> {
    #[repr(C)]
    #[derive(Default)]
    struct Meta {
        filter_off: u64,
        flags: u64,
    }
    let mut m = Meta {
        filter_off: index,
        flags: 0,
    };
    req(
        PTRACE_SECCOMP_GET_METADATA,
        pid,
        std::mem::size_of::<Meta>(),
        &mut m as *mut Meta as usize,
    )?;
    Ok(m.flags)
}

/// PTRACE_PEEKDATA: one word of the task's memory (ignores protections).
pub fn peek(pid: i32, addr: RemoteAddr) -> io::Result<u64> {
    // errno must be cleared: -1 is a valid word.
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: `errno` points to this thread's errno slot, a live c_int.
    unsafe { *errno = 0 };
    // SAFETY: PEEKDATA takes the remote address as an integer and returns
    // the word; no local memory is passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr.0 as usize, 0usize) };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(0) {
            return Err(e);
        }
    }
    Ok(r as u64)
}

/// PTRACE_POKEDATA: write one word (works on read-only private mappings,
/// which get a COW copy).
pub fn poke(pid: i32, addr: RemoteAddr, word: u64) -> io::Result<()> {
    req(libc::PTRACE_POKEDATA, pid, addr.0 as usize, word as usize).map(drop)
}
