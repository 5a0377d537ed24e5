//! Messages of CRIU's `packet-sock.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `packet_mclist`
    PacketMclist = "packet_mclist" {
        1 index: required Uint32,
        2 r#type: required Uint32,
        3 addr: required Bytes,
    }
    /// message `packet_ring`
    PacketRing = "packet_ring" {
        1 block_size: required Uint32,
        2 block_nr: required Uint32,
        3 frame_size: required Uint32,
        4 frame_nr: required Uint32,
        5 retire_tmo: required Uint32,
        6 sizeof_priv: required Uint32,
        7 features: required Uint32,
    }
    /// message `packet_sock_entry`
    PacketSockEntry = "packet_sock_entry" {
        1 id: required Uint32,
        2 r#type: required Uint32,
        3 protocol: required Uint32,
        4 flags: required Hex<Uint32>,
        5 ifindex: required Uint32,
        6 fown: required Msg<FownEntry>,
        7 opts: required Msg<SkOptsEntry>,
        8 version: required Uint32,
        9 reserve: required Uint32,
        10 aux_data: required Bool,
        11 orig_dev: required Bool,
        12 vnet_hdr: required Bool,
        13 loss: required Bool,
        14 timestamp: required Uint32,
        15 copy_thresh: required Uint32,
        16 mclist: repeated Msg<PacketMclist>,
        17 fanout: optional Uint32,
        18 rx_ring: optional Msg<PacketRing>,
        19 tx_ring: optional Msg<PacketRing>,
        20 ns_id: optional Uint32,
    }
}
