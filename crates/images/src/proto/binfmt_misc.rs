//! Messages of CRIU's `binfmt-misc.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `binfmt_misc_entry`
    BinfmtMiscEntry = "binfmt_misc_entry" {
        1 name: required Str,
        2 enabled: required Bool,
        3 interpreter: required Str,
        4 flags: optional Str,
        5 extension: optional Str,
        6 magic: optional Str,
        7 mask: optional Str,
        8 offset: optional Int32,
    }
}
