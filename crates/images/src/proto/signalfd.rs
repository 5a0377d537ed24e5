//! Messages of CRIU's `signalfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `signalfd_entry`
    SignalfdEntry = "signalfd_entry" {
        1 id: required Uint32,
        2 flags: required Uint32,
        3 fown: required Msg<FownEntry>,
        4 sigmask: required Uint64,
    }
}
