//! Messages of CRIU's `ext-file.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ext_file_entry`
    ExtFileEntry = "ext_file_entry" {
        1 id: required Uint32,
        5 fown: required Msg<FownEntry>,
    }
}
