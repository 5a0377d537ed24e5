//! Messages of CRIU's `sa.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `sa_entry`
    SaEntry = "sa_entry" {
        1 sigaction: required Uint64,
        2 flags: required Uint64,
        3 restorer: required Uint64,
        4 mask: required Uint64,
        5 compat_sigaction: optional Bool,
        6 mask_extended: optional Uint64,
    }
}
