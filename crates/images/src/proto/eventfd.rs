//! Messages of CRIU's `eventfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `eventfd_file_entry`
    EventfdFileEntry = "eventfd_file_entry" {
        1 id: required Uint32,
        2 flags: required Uint32,
        3 fown: required Msg<FownEntry>,
        4 counter: required Uint64,
    }
}
