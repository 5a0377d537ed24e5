//! Messages of CRIU's `pipe.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `pipe_entry`
    PipeEntry = "pipe_entry" {
        1 id: required Uint32,
        2 pipe_id: required Uint32,
        3 flags: required Hex<Uint32>,
        4 fown: required Msg<FownEntry>,
    }
}
