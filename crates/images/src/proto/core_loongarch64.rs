//! Messages of CRIU's `core-loongarch64.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_loongarch64_gpregs_entry`
    UserLoongarch64GpregsEntry = "user_loongarch64_gpregs_entry" {
        1 regs: repeated Uint64,
        2 pc: required Uint64,
    }
    /// message `user_loongarch64_fpregs_entry`
    UserLoongarch64FpregsEntry = "user_loongarch64_fpregs_entry" {
        1 regs: repeated Uint64,
        2 fcc: required Uint64,
        3 fcsr: required Uint32,
    }
    /// message `thread_info_loongarch64`
    ThreadInfoLoongarch64 = "thread_info_loongarch64" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 tls: required Uint64,
        3 gpregs: required Hex<Msg<UserLoongarch64GpregsEntry>>,
        4 fpregs: required Hex<Msg<UserLoongarch64FpregsEntry>>,
    }
}
