//! Messages of CRIU's `fown.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `fown_entry`
    FownEntry = "fown_entry" {
        1 uid: required Uint32,
        2 euid: required Uint32,
        3 signum: required Uint32,
        4 pid_type: required Uint32,
        5 pid: required Uint32,
    }
}
