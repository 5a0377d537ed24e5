//! Messages of CRIU's `ns.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ns_file_entry`
    NsFileEntry = "ns_file_entry" {
        1 id: required Uint32,
        2 ns_id: required Uint32,
        3 ns_cflag: required Uint32,
        4 flags: required Uint32,
    }
}
