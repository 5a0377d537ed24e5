//! Messages of CRIU's `pipe-data.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `pipe_data_entry`
    PipeDataEntry = "pipe_data_entry" {
        1 pipe_id: required Uint32,
        2 bytes: required Uint32,
        3 size: optional Uint32,
    }
}
