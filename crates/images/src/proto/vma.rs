//! Messages of CRIU's `vma.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `vma_entry`
    VmaEntry = "vma_entry" {
        1 start: required Hex<Uint64>,
        2 end: required Hex<Uint64>,
        3 pgoff: required Uint64,
        4 shmid: required Uint64,
        5 prot: required Flags<Uint32, MmapProt>,
        6 flags: required Flags<Uint32, MmapFlags>,
        7 status: required Flags<Uint32, MmapStatus>,
        8 fd: required Sint64,
        9 madv: optional Hex<Uint64>,
        10 fdflags: optional Hex<Uint32>,
    }
}
