//! Messages of CRIU's `netdev.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `nd_type`
    nd_type {
        LOOPBACK = 1,
        VETH = 2,
        TUN = 3,
        EXTLINK = 4,
        VENET = 5,
        BRIDGE = 6,
        MACVLAN = 7,
        SIT = 8,
    }
}

crate::message! {
    /// message `net_device_entry`
    NetDeviceEntry = "net_device_entry" {
        /// enum [`nd_type`]
        1 r#type: required EnumOf<nd_type::Names>,
        2 ifindex: required Uint32,
        3 mtu: required Uint32,
        4 flags: required Hex<Uint32>,
        5 name: required Str,
        6 tun: optional Msg<TunLinkEntry>,
        7 address: optional Bytes,
        8 conf: repeated Int32,
        9 conf4: repeated Msg<SysctlEntry>,
        10 conf6: repeated Msg<SysctlEntry>,
        11 macvlan: optional Msg<MacvlanLinkEntry>,
        12 peer_ifindex: optional Uint32,
        13 peer_nsid: optional Uint32,
        14 master: optional Uint32,
        15 sit: optional Msg<SitEntry>,
    }
    /// message `netns_id`
    NetnsId = "netns_id" {
        1 target_ns_id: required Uint32,
        2 netnsid_value: required Int32,
    }
    /// message `netns_entry`
    NetnsEntry = "netns_entry" {
        1 def_conf: repeated Int32,
        2 all_conf: repeated Int32,
        3 def_conf4: repeated Msg<SysctlEntry>,
        4 all_conf4: repeated Msg<SysctlEntry>,
        5 def_conf6: repeated Msg<SysctlEntry>,
        6 all_conf6: repeated Msg<SysctlEntry>,
        7 nsids: repeated Msg<NetnsId>,
        8 ext_key: optional Str,
        9 unix_conf: repeated Msg<SysctlEntry>,
        10 ipv4_sysctl: repeated Msg<SysctlEntry>,
    }
}
