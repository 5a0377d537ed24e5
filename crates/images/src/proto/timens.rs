//! Messages of CRIU's `timens.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `timespec`
    Timespec = "timespec" {
        1 tv_sec: required Uint64,
        2 tv_nsec: required Uint64,
    }
    /// message `timens_entry`
    TimensEntry = "timens_entry" {
        1 monotonic: required Msg<Timespec>,
        2 boottime: required Msg<Timespec>,
    }
}
