//! Messages of CRIU's `bpfmap-data.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `bpfmap_data_entry`
    BpfmapDataEntry = "bpfmap_data_entry" {
        1 map_id: required Uint32,
        2 keys_bytes: required Uint32,
        3 values_bytes: required Uint32,
        4 count: required Uint32,
    }
}
