//! The descriptors of a core's notes, laid out as x86-64 Linux defines
//! them (the kernel's `struct elf_prstatus`, `elf_prpsinfo`,
//! `user_regs_struct`, `siginfo_t`, the NT_FILE table), from the image's
//! thread state.

use super::elf::{self, Note};
use crate::task::xsave;
use crust_images::proto::core_x86::{UserX86FpregsEntry, UserX86RegsEntry};

/// `sizeof(struct elf_prstatus)` on x86-64.
pub const PRSTATUS_SIZE: usize = 336;
/// `sizeof(struct elf_prpsinfo)` on x86-64.
pub const PRPSINFO_SIZE: usize = 136;
const SIGINFO_SIZE: usize = 128;
const FXSAVE_SIZE: usize = 512;
/// Offset of XCR0 in the software-reserved bytes of an NT_X86_XSTATE area
/// (where the kernel and gdb put and look for it).
const XCR0_OFF: usize = 464;

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(off..off + v.len()) {
        s.copy_from_slice(v);
    }
}

/// Who a thread is, for its prstatus.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ids {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub sid: u32,
}

/// `user_regs_struct` order.
pub fn user_regs(r: &UserX86RegsEntry) -> [u64; 27] {
    [
        r.r15, r.r14, r.r13, r.r12, r.bp, r.bx, r.r11, r.r10, r.r9, r.r8, r.ax, r.cx, r.dx, r.si,
        r.di, r.orig_ax, r.ip, r.cs, r.flags, r.sp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs,
        r.gs,
    ]
}

/// NT_PRSTATUS of one thread: its ids, blocked signals and registers.
pub fn prstatus(ids: Ids, sighold: u64, regs: &UserX86RegsEntry) -> Note {
    let mut b = vec![0u8; PRSTATUS_SIZE];
    // si_signo, si_code, si_errno, pr_cursig: no signal made this core.
    put(&mut b, 24, &sighold.to_le_bytes());
    put(&mut b, 32, &ids.pid.to_le_bytes());
    put(&mut b, 36, &ids.ppid.to_le_bytes());
    put(&mut b, 40, &ids.pgrp.to_le_bytes());
    put(&mut b, 44, &ids.sid.to_le_bytes());
    // Four timevals (utime, stime, cutime, cstime) at 48..112, zero.
    for (i, v) in user_regs(regs).iter().enumerate() {
        put(&mut b, 112 + 8 * i, &v.to_le_bytes());
    }
    put(&mut b, 328, &1u32.to_le_bytes()); // pr_fpvalid
    Note::core(elf::NT_PRSTATUS, b)
}

/// What NT_PRPSINFO says of a process.
#[derive(Debug, Clone, Default)]
pub struct PsInfo {
    pub ids: Ids,
    /// CRIU's task state (1 alive, 2 dead, 3 stopped).
    pub state: u32,
    pub nice: i32,
    pub flags: u64,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The command line, NULs as spaces, at most 80 bytes kept.
    pub args: Vec<u8>,
}

pub fn prpsinfo(p: &PsInfo) -> Note {
    let mut b = vec![0u8; PRPSINFO_SIZE];
    // The kernel's state index into "RSDTZW": CRIU knows alive (shown as
    // sleeping: a dumped task was stopped in the kernel), stopped, dead.
    let state: u8 = match p.state {
        2 => 4,
        3 => 3,
        _ => 1,
    };
    let sname = b"RSDTZW".get(state as usize).copied().unwrap_or(b'.');
    put(
        &mut b,
        0,
        &[state, sname, u8::from(state == 4), p.nice as i8 as u8],
    );
    put(&mut b, 8, &p.flags.to_le_bytes());
    put(&mut b, 16, &p.uid.to_le_bytes());
    put(&mut b, 20, &p.gid.to_le_bytes());
    put(&mut b, 24, &p.ids.pid.to_le_bytes());
    put(&mut b, 28, &p.ids.ppid.to_le_bytes());
    put(&mut b, 32, &p.ids.pgrp.to_le_bytes());
    put(&mut b, 36, &p.ids.sid.to_le_bytes());
    let comm = p.comm.as_bytes();
    put(
        &mut b,
        40,
        comm.get(..comm.len().min(15)).unwrap_or_default(),
    );
    let args = p.args.get(..p.args.len().min(79)).unwrap_or_default();
    put(&mut b, 56, args);
    Note::core(elf::NT_PRPSINFO, b)
}

/// The XSAVE area of a thread in this CPU's standard layout, XCR0 in its
/// software-reserved bytes. A component this CPU lacks (a core made of a
/// set dumped elsewhere) leaves the legacy x87/SSE part only.
pub fn xstate(fp: &UserX86FpregsEntry) -> Vec<u8> {
    let mut b = match xsave::xstate_from_fpregs(fp) {
        Ok(b) => b,
        Err(missing) => {
            log::warn!(
                "the image's FPU state uses {}, which this CPU lacks: the core keeps x87/SSE state only",
                missing.0
            );
            let legacy = UserX86FpregsEntry {
                xsave: None,
                ..fp.clone()
            };
            xsave::xstate_from_fpregs(&legacy).unwrap_or_else(|_| vec![0; FXSAVE_SIZE + 64])
        }
    };
    let xcr0 = crust_sys::cpu::xfeatures_supported();
    put(&mut b, XCR0_OFF, &xcr0.to_le_bytes());
    b
}

/// NT_FPREGSET (the FXSAVE area, `user_fpregs_struct`) and NT_X86_XSTATE
/// of one thread.
pub fn fp_notes(fp: &UserX86FpregsEntry) -> [Note; 2] {
    let x = xstate(fp);
    let mut fx = x.get(..FXSAVE_SIZE).unwrap_or_default().to_vec();
    fx.resize(FXSAVE_SIZE, 0);
    // The software-reserved bytes are not part of user_fpregs_struct's
    // meaning; the kernel leaves them zero there.
    put(&mut fx, XCR0_OFF, &[0; 8]);
    [
        Note::core(elf::NT_FPREGSET, fx),
        Note {
            name: "LINUX",
            ty: elf::NT_X86_XSTATE,
            desc: x,
        },
    ]
}

/// NT_SIGINFO: no signal made this core, so all zero.
pub fn siginfo() -> Note {
    Note::core(elf::NT_SIGINFO, vec![0; SIGINFO_SIZE])
}

/// NT_AUXV: the saved auxiliary vector, words as they are.
pub fn auxv(words: &[u64]) -> Note {
    let mut b = Vec::with_capacity(words.len() * 8 + 16);
    for w in words {
        b.extend_from_slice(&w.to_le_bytes());
    }
    // End with AT_NULL if the image's vector lacks it.
    if words.len() < 2
        || words
            .chunks(2)
            .last()
            .is_some_and(|p| p.first() != Some(&0))
    {
        b.extend_from_slice(&[0; 16]);
    }
    Note::core(elf::NT_AUXV, b)
}

/// One file mapping for NT_FILE: [start, end), offset in the file in
/// bytes, the file's name.
#[derive(Debug, Clone)]
pub struct FileMap {
    pub start: u64,
    pub end: u64,
    pub off: u64,
    pub name: String,
}

/// NT_FILE: count, page size, (start, end, offset in pages) each, then the
/// names, each ended by a NUL.
pub fn files(maps: &[FileMap]) -> Note {
    let page = crust_sys::PAGE_SIZE;
    let mut b = Vec::new();
    b.extend_from_slice(&(maps.len() as u64).to_le_bytes());
    b.extend_from_slice(&page.to_le_bytes());
    for m in maps {
        for v in [m.start, m.end, m.off / page] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    for m in maps {
        b.extend_from_slice(m.name.as_bytes());
        b.push(0);
    }
    Note::core(elf::NT_FILE, b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn prstatus_places_registers() {
        let regs = UserX86RegsEntry {
            r15: 15,
            ip: 0x401000,
            sp: 0x7ffd0000,
            gs: 0x2b,
            ..Default::default()
        };
        let n = prstatus(
            Ids {
                pid: 7,
                ppid: 1,
                pgrp: 7,
                sid: 7,
            },
            0x4000,
            &regs,
        );
        assert_eq!(n.desc.len(), PRSTATUS_SIZE);
        assert_eq!(u64_at(&n.desc, 24), 0x4000);
        assert_eq!(n.desc[32], 7);
        assert_eq!(u64_at(&n.desc, 112), 15);
        assert_eq!(u64_at(&n.desc, 112 + 16 * 8), 0x401000);
        assert_eq!(u64_at(&n.desc, 112 + 19 * 8), 0x7ffd0000);
        assert_eq!(u64_at(&n.desc, 112 + 26 * 8), 0x2b);
    }

    #[test]
    fn prpsinfo_and_files() {
        let p = PsInfo {
            ids: Ids {
                pid: 9,
                ..Default::default()
            },
            state: 1,
            comm: "a-very-long-command-name".into(),
            args: b"prog --x 1".to_vec(),
            ..Default::default()
        };
        let n = prpsinfo(&p);
        assert_eq!(n.desc.len(), PRPSINFO_SIZE);
        assert_eq!(n.desc[1], b'S');
        assert_eq!(&n.desc[40..55], b"a-very-long-com");
        assert_eq!(n.desc[55], 0);
        assert_eq!(&n.desc[56..66], b"prog --x 1");
        let f = files(&[FileMap {
            start: 0x1000,
            end: 0x3000,
            off: 0x2000,
            name: "/bin/x".into(),
        }]);
        assert_eq!(u64_at(&f.desc, 0), 1);
        assert_eq!(u64_at(&f.desc, 8), 4096);
        assert_eq!(u64_at(&f.desc, 32), 2);
        assert_eq!(&f.desc[40..], b"/bin/x\0");
        let a = auxv(&[6, 4096]);
        assert_eq!(a.desc.len(), 32);
    }
}
