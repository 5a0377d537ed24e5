//! Messages of CRIU's `bpfmap-file.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `bpfmap_file_entry`
    BpfmapFileEntry = "bpfmap_file_entry" {
        1 id: required Uint32,
        2 flags: required Flags<Uint32, RfileFlags>,
        3 pos: required Uint64,
        4 fown: required Msg<FownEntry>,
        5 map_type: required Uint32,
        6 key_size: required Uint32,
        7 value_size: required Uint32,
        8 map_id: required Uint32,
        9 max_entries: required Uint32,
        10 map_flags: required Uint32,
        11 memlock: required Uint64,
        12 frozen: required Bool,
        13 map_name: required Str,
        14 ifindex: required Uint32,
        15 mnt_id: optional Sint32,
        16 map_extra: optional Uint64,
    }
}
