//! Messages of CRIU's `core-ppc64.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_ppc64_regs_entry`
    UserPpc64RegsEntry = "user_ppc64_regs_entry" {
        1 gpr: repeated Uint64,
        2 nip: required Uint64,
        3 msr: required Uint64,
        4 orig_gpr3: required Uint64,
        5 ctr: required Uint64,
        6 link: required Uint64,
        7 xer: required Uint64,
        8 ccr: required Uint64,
        9 trap: required Uint64,
        10 texasr: optional Uint64,
        11 tfhar: optional Uint64,
        12 tfiar: optional Uint64,
    }
    /// message `user_ppc64_fpstate_entry`
    UserPpc64FpstateEntry = "user_ppc64_fpstate_entry" {
        1 fpregs: repeated Uint64,
    }
    /// message `user_ppc64_vrstate_entry`
    UserPpc64VrstateEntry = "user_ppc64_vrstate_entry" {
        1 vrregs: repeated Uint64,
        2 vrsave: required Uint32,
    }
    /// message `user_ppc64_vsxstate_entry`
    UserPpc64VsxstateEntry = "user_ppc64_vsxstate_entry" {
        1 vsxregs: repeated Uint64,
    }
    /// message `user_ppc64_tm_regs_entry`
    UserPpc64TmRegsEntry = "user_ppc64_tm_regs_entry" {
        1 gpregs: required Msg<UserPpc64RegsEntry>,
        2 fpstate: optional Msg<UserPpc64FpstateEntry>,
        3 vrstate: optional Msg<UserPpc64VrstateEntry>,
        4 vsxstate: optional Msg<UserPpc64VsxstateEntry>,
    }
    /// message `thread_info_ppc64`
    ThreadInfoPpc64 = "thread_info_ppc64" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 gpregs: required Hex<Msg<UserPpc64RegsEntry>>,
        3 fpstate: optional Msg<UserPpc64FpstateEntry>,
        4 vrstate: optional Msg<UserPpc64VrstateEntry>,
        5 vsxstate: optional Msg<UserPpc64VsxstateEntry>,
        6 tmstate: optional Msg<UserPpc64TmRegsEntry>,
    }
}
