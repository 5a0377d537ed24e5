//! Messages of CRIU's `core-x86.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `user_x86_regs_mode`
    user_x86_regs_mode {
        NATIVE = 1,
        COMPAT = 2,
    }
}

crate::message! {
    /// message `user_x86_regs_entry`
    UserX86RegsEntry = "user_x86_regs_entry" {
        1 r15: required Uint64,
        2 r14: required Uint64,
        3 r13: required Uint64,
        4 r12: required Uint64,
        5 bp: required Uint64,
        6 bx: required Uint64,
        7 r11: required Uint64,
        8 r10: required Uint64,
        9 r9: required Uint64,
        10 r8: required Uint64,
        11 ax: required Uint64,
        12 cx: required Uint64,
        13 dx: required Uint64,
        14 si: required Uint64,
        15 di: required Uint64,
        16 orig_ax: required Uint64,
        17 ip: required Uint64,
        18 cs: required Uint64,
        19 flags: required Uint64,
        20 sp: required Uint64,
        21 ss: required Uint64,
        22 fs_base: required Uint64,
        23 gs_base: required Uint64,
        24 ds: required Uint64,
        25 es: required Uint64,
        26 fs: required Uint64,
        27 gs: required Uint64,
        /// enum [`user_x86_regs_mode`]
        28 mode: optional EnumOf<user_x86_regs_mode::Names>,
    }
    /// message `user_x86_cet_entry`
    UserX86CetEntry = "user_x86_cet_entry" {
        1 cet: required Hex<Uint64>,
        2 ssp: required Hex<Uint64>,
    }
    /// message `user_x86_xsave_entry`
    UserX86XsaveEntry = "user_x86_xsave_entry" {
        1 xstate_bv: required Uint64,
        2 ymmh_space: repeated Uint32,
        3 bndreg_state: repeated Uint64,
        4 bndcsr_state: repeated Uint64,
        5 opmask_reg: repeated Uint64,
        6 zmm_upper: repeated Uint64,
        7 hi16_zmm: repeated Uint64,
        8 pkru: repeated Uint32,
        9 cet: optional Msg<UserX86CetEntry>,
    }
    /// message `user_x86_fpregs_entry`
    UserX86FpregsEntry = "user_x86_fpregs_entry" {
        1 cwd: required Uint32,
        2 swd: required Uint32,
        3 twd: required Uint32,
        4 fop: required Uint32,
        5 rip: required Uint64,
        6 rdp: required Uint64,
        7 mxcsr: required Uint32,
        8 mxcsr_mask: required Uint32,
        9 st_space: repeated Uint32,
        10 xmm_space: repeated Uint32,
        11 padding: repeated Uint32,
        13 xsave: optional Msg<UserX86XsaveEntry>,
    }
    /// message `user_desc_t`
    UserDescT = "user_desc_t" {
        1 entry_number: required Uint32,
        2 base_addr: required Uint32,
        3 limit: required Uint32,
        4 seg_32bit: required Bool,
        5 contents_h: required Bool,
        6 contents_l: required Bool,
        7 read_exec_only: required Bool,
        8 limit_in_pages: required Bool,
        9 seg_not_present: required Bool,
        10 usable: required Bool,
    }
    /// message `thread_info_x86`
    ThreadInfoX86 = "thread_info_x86" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 gpregs: required Hex<Msg<UserX86RegsEntry>>,
        3 fpregs: required Msg<UserX86FpregsEntry>,
        4 tls: repeated Msg<UserDescT>,
    }
}
