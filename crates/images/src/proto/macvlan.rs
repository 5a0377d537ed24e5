//! Messages of CRIU's `macvlan.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `macvlan_link_entry`
    MacvlanLinkEntry = "macvlan_link_entry" {
        1 mode: required Uint32,
        2 flags: optional Uint32,
    }
}
