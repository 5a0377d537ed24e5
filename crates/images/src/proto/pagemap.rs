//! Messages of CRIU's `pagemap.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `pagemap_head`
    PagemapHead = "pagemap_head" {
        1 pages_id: required Uint32,
    }
    /// message `pagemap_entry`
    PagemapEntry = "pagemap_entry" {
        1 vaddr: required Hex<Uint64>,
        2 compat_nr_pages: required Uint32,
        3 in_parent: optional Bool,
        4 flags: optional Flags<Uint32, PmapFlags>,
        5 nr_pages: optional Uint64,
    }
}
