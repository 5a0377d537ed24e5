//! Messages of CRIU's `signalfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `signalfd_entry`
    SignalfdEntry = "signalfd_entry" {
        1 id: required Uint32,
        2 flags: required Hex<Uint32>,
        3 fown: required Msg<FownEntry>,
        4 sigmask: required Hex<Uint64>,
    }
}
