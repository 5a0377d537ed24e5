//! Messages of CRIU's `sk-netlink.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `netlink_sk_entry`
    NetlinkSkEntry = "netlink_sk_entry" {
        1 id: required Uint32,
        2 ino: required Uint32,
        3 protocol: required Uint32,
        4 state: required Uint32,
        6 flags: required Hex<Uint32>,
        7 portid: required Uint32,
        8 groups: repeated Uint32,
        9 dst_portid: required Uint32,
        10 dst_group: required Uint32,
        11 fown: required Msg<FownEntry>,
        12 opts: required Msg<SkOptsEntry>,
        13 ns_id: optional Uint32,
    }
}
