//! Messages of CRIU's `remap-file-path.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `remap_type`
    remap_type {
        LINKED = 0,
        GHOST = 1,
        PROCFS = 2,
    }
}

crate::message! {
    /// message `remap_file_path_entry`
    RemapFilePathEntry = "remap_file_path_entry" {
        1 orig_id: required Uint32,
        2 remap_id: required Uint32,
        /// enum [`remap_type`]
        3 remap_type: optional EnumOf<remap_type::Names>,
    }
}
