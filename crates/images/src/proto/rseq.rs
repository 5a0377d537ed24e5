//! Messages of CRIU's `rseq.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `rseq_entry`
    RseqEntry = "rseq_entry" {
        1 rseq_abi_pointer: required Uint64,
        2 rseq_abi_size: required Uint32,
        3 signature: required Uint32,
        4 rseq_cs_pointer: optional Uint64,
    }
}
