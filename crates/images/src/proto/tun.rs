//! Messages of CRIU's `tun.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `tunfile_entry`
    TunfileEntry = "tunfile_entry" {
        1 id: required Uint32,
        2 netdev: optional Str,
        3 detached: optional Bool,
        4 ns_id: optional Uint32,
    }
    /// message `tun_link_entry`
    TunLinkEntry = "tun_link_entry" {
        1 flags: required Hex<Uint32>,
        2 owner: required Int32,
        3 group: required Int32,
        4 vnethdr: required Uint32,
        5 sndbuf: required Uint32,
    }
}
