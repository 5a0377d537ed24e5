//! Messages of CRIU's `rlimit.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `rlimit_entry`
    RlimitEntry = "rlimit_entry" {
        1 cur: required Uint64,
        2 max: required Uint64,
    }
}
