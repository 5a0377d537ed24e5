//! Messages of CRIU's `core-riscv64.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_riscv64_regs_entry`
    UserRiscv64RegsEntry = "user_riscv64_regs_entry" {
        1 pc: required Uint64,
        2 ra: required Uint64,
        3 sp: required Uint64,
        4 gp: required Uint64,
        5 tp: required Uint64,
        6 t0: required Uint64,
        7 t1: required Uint64,
        8 t2: required Uint64,
        9 s0: required Uint64,
        10 s1: required Uint64,
        11 a0: required Uint64,
        12 a1: required Uint64,
        13 a2: required Uint64,
        14 a3: required Uint64,
        15 a4: required Uint64,
        16 a5: required Uint64,
        17 a6: required Uint64,
        18 a7: required Uint64,
        19 s2: required Uint64,
        20 s3: required Uint64,
        21 s4: required Uint64,
        22 s5: required Uint64,
        23 s6: required Uint64,
        24 s7: required Uint64,
        25 s8: required Uint64,
        26 s9: required Uint64,
        27 s10: required Uint64,
        28 s11: required Uint64,
        29 t3: required Uint64,
        30 t4: required Uint64,
        31 t5: required Uint64,
        32 t6: required Uint64,
    }
    /// message `user_riscv64_d_ext_entry`
    UserRiscv64DExtEntry = "user_riscv64_d_ext_entry" {
        1 f: repeated Uint64,
        2 fcsr: required Uint32,
    }
    /// message `thread_info_riscv64`
    ThreadInfoRiscv64 = "thread_info_riscv64" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 tls: required Uint64,
        3 gpregs: required Hex<Msg<UserRiscv64RegsEntry>>,
        4 fpsimd: required Msg<UserRiscv64DExtEntry>,
    }
}
