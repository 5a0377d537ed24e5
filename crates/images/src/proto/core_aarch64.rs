//! Messages of CRIU's `core-aarch64.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `user_aarch64_regs_entry`
    UserAarch64RegsEntry = "user_aarch64_regs_entry" {
        1 regs: repeated Uint64,
        2 sp: required Uint64,
        3 pc: required Uint64,
        4 pstate: required Uint64,
    }
    /// message `user_aarch64_fpsimd_context_entry`
    UserAarch64FpsimdContextEntry = "user_aarch64_fpsimd_context_entry" {
        1 vregs: repeated Uint64,
        2 fpsr: required Uint32,
        3 fpcr: required Uint32,
    }
    /// message `pac_address_keys`
    PacAddressKeys = "pac_address_keys" {
        1 apiakey_lo: required Uint64,
        2 apiakey_hi: required Uint64,
        3 apibkey_lo: required Uint64,
        4 apibkey_hi: required Uint64,
        5 apdakey_lo: required Uint64,
        6 apdakey_hi: required Uint64,
        7 apdbkey_lo: required Uint64,
        8 apdbkey_hi: required Uint64,
        9 pac_enabled_key: required Uint64,
    }
    /// message `pac_generic_keys`
    PacGenericKeys = "pac_generic_keys" {
        1 apgakey_lo: required Uint64,
        2 apgakey_hi: required Uint64,
    }
    /// message `pac_keys`
    PacKeys = "pac_keys" {
        6 pac_address_keys: optional Msg<PacAddressKeys>,
        7 pac_generic_keys: optional Msg<PacGenericKeys>,
    }
    /// message `thread_info_aarch64`
    ThreadInfoAarch64 = "thread_info_aarch64" {
        1 clear_tid_addr: required Hex<Uint64>,
        2 tls: required Uint64,
        3 gpregs: required Hex<Msg<UserAarch64RegsEntry>>,
        4 fpsimd: required Msg<UserAarch64FpsimdContextEntry>,
        5 pac_keys: optional Msg<PacKeys>,
    }
}
