//! Messages of CRIU's `mm.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `aio_ring_entry`
    AioRingEntry = "aio_ring_entry" {
        1 id: required Uint64,
        2 nr_req: required Uint32,
        3 ring_len: required Uint32,
    }
    /// message `mm_entry`
    MmEntry = "mm_entry" {
        1 mm_start_code: required Hex<Uint64>,
        2 mm_end_code: required Hex<Uint64>,
        3 mm_start_data: required Hex<Uint64>,
        4 mm_end_data: required Hex<Uint64>,
        5 mm_start_stack: required Hex<Uint64>,
        6 mm_start_brk: required Hex<Uint64>,
        7 mm_brk: required Hex<Uint64>,
        8 mm_arg_start: required Hex<Uint64>,
        9 mm_arg_end: required Hex<Uint64>,
        10 mm_env_start: required Hex<Uint64>,
        11 mm_env_end: required Hex<Uint64>,
        12 exe_file_id: required Uint32,
        13 mm_saved_auxv: repeated Uint64,
        14 vmas: repeated Msg<VmaEntry>,
        15 dumpable: optional Int32,
        16 aios: repeated Msg<AioRingEntry>,
        17 thp_disabled: optional Bool,
    }
}
