//! Messages of CRIU's `pidns.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `pidns_entry`
    PidnsEntry = "pidns_entry" {
        1 ext_key: optional Str,
    }
}
