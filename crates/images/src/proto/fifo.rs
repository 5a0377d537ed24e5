//! Messages of CRIU's `fifo.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `fifo_entry`
    FifoEntry = "fifo_entry" {
        1 id: required Uint32,
        2 pipe_id: required Uint32,
        3 regf_id: optional Uint32,
    }
}
