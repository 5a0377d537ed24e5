//! Messages of CRIU's `regfile.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `reg_file_entry`
    RegFileEntry = "reg_file_entry" {
        1 id: required Uint32,
        2 flags: required Flags<Uint32, RfileFlags>,
        3 pos: required Uint64,
        5 fown: required Msg<FownEntry>,
        6 name: required Str,
        7 mnt_id: optional Sint32,
        8 size: optional Uint64,
        9 ext: optional Bool,
        10 mode: optional Uint32,
        11 build_id: repeated Uint32,
        12 checksum: optional Uint32,
        13 checksum_config: optional Uint32,
        14 checksum_parameter: optional Uint32,
    }
}
