//! Messages of CRIU's `sa.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `sa_entry`
    SaEntry = "sa_entry" {
        1 sigaction: required Hex<Uint64>,
        2 flags: required Hex<Uint64>,
        3 restorer: required Hex<Uint64>,
        4 mask: required Hex<Uint64>,
        5 compat_sigaction: optional Bool,
        6 mask_extended: optional Hex<Uint64>,
    }
}
