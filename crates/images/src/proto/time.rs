//! Messages of CRIU's `time.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `timeval`
    Timeval = "timeval" {
        1 tv_sec: required Uint64,
        2 tv_usec: required Uint64,
    }
}
