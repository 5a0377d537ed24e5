//! Messages of CRIU's `pidfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `pidfd_entry`
    PidfdEntry = "pidfd_entry" {
        1 id: required Uint32,
        2 ino: required Uint32,
        3 flags: required Uint32,
        4 nspid: required Int32,
        5 fown: required Msg<FownEntry>,
    }
}
