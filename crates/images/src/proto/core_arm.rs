//! Messages of CRIU's `core-arm.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_arm_regs_entry`
    UserArmRegsEntry = "user_arm_regs_entry" {
        1 r0: required Uint32,
        2 r1: required Uint32,
        3 r2: required Uint32,
        4 r3: required Uint32,
        5 r4: required Uint32,
        6 r5: required Uint32,
        7 r6: required Uint32,
        8 r7: required Uint32,
        9 r8: required Uint32,
        10 r9: required Uint32,
        11 r10: required Uint32,
        12 fp: required Uint32,
        13 ip: required Uint32,
        14 sp: required Uint32,
        15 lr: required Uint32,
        16 pc: required Uint32,
        17 cpsr: required Uint32,
        18 orig_r0: required Uint32,
    }
    /// message `user_arm_vfpstate_entry`
    UserArmVfpstateEntry = "user_arm_vfpstate_entry" {
        1 vfp_regs: repeated Uint64,
        2 fpscr: required Uint32,
        3 fpexc: required Uint32,
        4 fpinst: required Uint32,
        5 fpinst2: required Uint32,
    }
    /// message `thread_info_arm`
    ThreadInfoArm = "thread_info_arm" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 tls: required Uint32,
        3 gpregs: required Hex<Msg<UserArmRegsEntry>>,
        4 fpstate: required Msg<UserArmVfpstateEntry>,
    }
}
