//! Messages of CRIU's `fh.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `fh_entry_sizes`
    fh_entry_sizes {
        min_entries = 16,
    }
}

crate::message! {
    /// message `fh_entry`
    FhEntry = "fh_entry" {
        1 bytes: required Uint32,
        2 r#type: required Uint32,
        3 handle: repeated Uint64,
        4 path: optional Str,
        5 mnt_id: optional Uint32,
    }
    /// message `irmap_cache_entry`
    IrmapCacheEntry = "irmap_cache_entry" {
        1 dev: required ODev<Uint32>,
        2 inode: required Uint64,
        3 path: required Str,
    }
}
