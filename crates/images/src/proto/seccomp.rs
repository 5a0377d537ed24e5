//! Messages of CRIU's `seccomp.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `seccomp_filter`
    SeccompFilter = "seccomp_filter" {
        1 filter: required Bytes,
        2 prev: optional Uint32,
        3 flags: optional Uint32,
    }
    /// message `seccomp_entry`
    SeccompEntry = "seccomp_entry" {
        1 seccomp_filters: repeated Msg<SeccompFilter>,
    }
}
