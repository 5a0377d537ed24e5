//! Messages of CRIU's `sit.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `sit_entry`
    SitEntry = "sit_entry" {
        1 link: optional Uint32,
        2 local: repeated Ip<Uint32>,
        3 remote: repeated Ip<Uint32>,
        4 ttl: optional Uint32,
        5 tos: optional Uint32,
        6 pmtudisc: optional Bool,
        7 proto: optional Uint32,
        8 flags: optional Uint32,
        9 encap_type: optional Uint32,
        10 encap_flags: optional Uint32,
        11 encap_sport: optional Uint32,
        12 encap_dport: optional Uint32,
        13 rd_prefixlen: optional Uint32,
        14 rd_prefix: repeated Ip<Uint32>,
        15 relay_prefixlen: optional Uint32,
        16 relay_prefix: repeated Ip<Uint32>,
    }
}
