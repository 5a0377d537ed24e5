//! Messages of CRIU's `creds.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `creds_entry`
    CredsEntry = "creds_entry" {
        1 uid: required Uint32,
        2 gid: required Uint32,
        3 euid: required Uint32,
        4 egid: required Uint32,
        5 suid: required Uint32,
        6 sgid: required Uint32,
        7 fsuid: required Uint32,
        8 fsgid: required Uint32,
        9 cap_inh: repeated Uint32,
        10 cap_prm: repeated Uint32,
        11 cap_eff: repeated Uint32,
        12 cap_bnd: repeated Uint32,
        13 secbits: required Uint32,
        14 groups: repeated Uint32,
        15 lsm_profile: optional Str,
        16 lsm_sockcreate: optional Str,
        17 apparmor_data: optional Bytes,
        18 no_new_privs: optional Uint32,
        19 cap_amb: repeated Uint32,
    }
}
