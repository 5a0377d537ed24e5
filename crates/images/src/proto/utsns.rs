//! Messages of CRIU's `utsns.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `utsns_entry`
    UtsnsEntry = "utsns_entry" {
        1 nodename: required Str,
        2 domainname: required Str,
    }
}
