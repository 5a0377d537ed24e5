//! Messages of CRIU's `core-s390.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_s390_regs_entry`
    UserS390RegsEntry = "user_s390_regs_entry" {
        1 psw_mask: required Uint64,
        2 psw_addr: required Uint64,
        3 gprs: repeated Uint64,
        4 acrs: repeated Uint32,
        5 orig_gpr2: required Uint64,
        6 system_call: required Uint32,
    }
    /// message `user_s390_vxrs_low_entry`
    UserS390VxrsLowEntry = "user_s390_vxrs_low_entry" {
        1 regs: repeated Uint64,
    }
    /// message `user_s390_vxrs_high_entry`
    UserS390VxrsHighEntry = "user_s390_vxrs_high_entry" {
        1 regs: repeated Uint64,
    }
    /// message `user_s390_fpregs_entry`
    UserS390FpregsEntry = "user_s390_fpregs_entry" {
        1 fpc: required Uint32,
        2 fprs: repeated Uint64,
    }
    /// message `user_s390_gs_cb_entry`
    UserS390GsCbEntry = "user_s390_gs_cb_entry" {
        1 regs: repeated Uint64,
    }
    /// message `user_s390_ri_entry`
    UserS390RiEntry = "user_s390_ri_entry" {
        1 ri_on: required Uint32,
        2 regs: repeated Uint64,
    }
    /// message `thread_info_s390`
    ThreadInfoS390 = "thread_info_s390" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 gpregs: required Hex<Msg<UserS390RegsEntry>>,
        3 fpregs: required Hex<Msg<UserS390FpregsEntry>>,
        4 vxrs_low: optional Hex<Msg<UserS390VxrsLowEntry>>,
        5 vxrs_high: optional Hex<Msg<UserS390VxrsHighEntry>>,
        6 gs_cb: optional Hex<Msg<UserS390GsCbEntry>>,
        7 gs_bc: optional Hex<Msg<UserS390GsCbEntry>>,
        8 ri_cb: optional Hex<Msg<UserS390RiEntry>>,
    }
}
