//! Messages of CRIU's `vma.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `vma_entry`
    VmaEntry = "vma_entry" {
        1 start: required Uint64,
        2 end: required Uint64,
        3 pgoff: required Uint64,
        4 shmid: required Uint64,
        5 prot: required Uint32,
        6 flags: required Uint32,
        7 status: required Uint32,
        8 fd: required Sint64,
        9 madv: optional Uint64,
        10 fdflags: optional Uint32,
    }
}
