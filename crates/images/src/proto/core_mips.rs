//! Messages of CRIU's `core-mips.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_mips_regs_entry`
    UserMipsRegsEntry = "user_mips_regs_entry" {
        1 r0: required Uint64,
        2 r1: required Uint64,
        3 r2: required Uint64,
        4 r3: required Uint64,
        5 r4: required Uint64,
        6 r5: required Uint64,
        7 r6: required Uint64,
        8 r7: required Uint64,
        9 r8: required Uint64,
        10 r9: required Uint64,
        11 r10: required Uint64,
        12 r11: required Uint64,
        13 r12: required Uint64,
        14 r13: required Uint64,
        15 r14: required Uint64,
        16 r15: required Uint64,
        17 r16: required Uint64,
        18 r17: required Uint64,
        19 r18: required Uint64,
        20 r19: required Uint64,
        21 r20: required Uint64,
        22 r21: required Uint64,
        23 r22: required Uint64,
        24 r23: required Uint64,
        25 r24: required Uint64,
        26 r25: required Uint64,
        27 r26: required Uint64,
        28 r27: required Uint64,
        29 r28: required Uint64,
        30 r29: required Uint64,
        31 r30: required Uint64,
        32 r31: required Uint64,
        33 lo: required Uint64,
        34 hi: required Uint64,
        35 cp0_epc: required Uint64,
        36 cp0_badvaddr: required Uint64,
        37 cp0_status: required Uint64,
        38 cp0_cause: required Uint64,
    }
    /// message `user_mips_fpregs_entry`
    UserMipsFpregsEntry = "user_mips_fpregs_entry" {
        1 r0: required Uint64,
        2 r1: required Uint64,
        3 r2: required Uint64,
        4 r3: required Uint64,
        5 r4: required Uint64,
        6 r5: required Uint64,
        7 r6: required Uint64,
        8 r7: required Uint64,
        9 r8: required Uint64,
        10 r9: required Uint64,
        11 r10: required Uint64,
        12 r11: required Uint64,
        13 r12: required Uint64,
        14 r13: required Uint64,
        15 r14: required Uint64,
        16 r15: required Uint64,
        17 r16: required Uint64,
        18 r17: required Uint64,
        19 r18: required Uint64,
        20 r19: required Uint64,
        21 r20: required Uint64,
        22 r21: required Uint64,
        23 r22: required Uint64,
        24 r23: required Uint64,
        25 r24: required Uint64,
        26 r25: required Uint64,
        27 r26: required Uint64,
        28 r27: required Uint64,
        29 r28: required Uint64,
        30 r29: required Uint64,
        31 r30: required Uint64,
        32 r31: required Uint64,
        33 lo: required Uint64,
        34 hi: required Uint64,
        35 fpu_fcr31: required Uint32,
        36 fpu_id: required Uint32,
    }
    /// message `thread_info_mips`
    ThreadInfoMips = "thread_info_mips" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 tls: required Uint64,
        3 gpregs: required Hex<Msg<UserMipsRegsEntry>>,
        4 fpregs: required Hex<Msg<UserMipsFpregsEntry>>,
    }
}
