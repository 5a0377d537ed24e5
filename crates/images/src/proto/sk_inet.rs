//! Messages of CRIU's `sk-inet.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `ip_opts_raw_entry`
    IpOptsRawEntry = "ip_opts_raw_entry" {
        1 hdrincl: optional Bool,
        2 nodefrag: optional Bool,
        3 checksum: optional Bool,
        4 icmpv_filter: repeated Uint32,
    }
    /// message `ip_opts_entry`
    IpOptsEntry = "ip_opts_entry" {
        1 freebind: optional Bool,
        4 raw: optional Msg<IpOptsRawEntry>,
        5 pktinfo: optional Bool,
        6 tos: optional Uint32,
        7 ttl: optional Uint32,
    }
    /// message `inet_sk_entry`
    InetSkEntry = "inet_sk_entry" {
        1 id: required Uint32,
        2 ino: required Uint32,
        3 family: required Dict<Uint32, SkFamily>,
        4 r#type: required Dict<Uint32, SkType>,
        5 proto: required Dict<Uint32, SkProto>,
        6 state: required Dict<Uint32, SkState>,
        7 src_port: required Uint32,
        8 dst_port: required Uint32,
        9 flags: required Hex<Uint32>,
        10 backlog: required Uint32,
        11 src_addr: repeated Ip<Uint32>,
        12 dst_addr: repeated Ip<Uint32>,
        13 fown: required Msg<FownEntry>,
        14 opts: required Msg<SkOptsEntry>,
        15 v6only: optional Bool,
        16 ip_opts: optional Msg<IpOptsEntry>,
        17 ifname: optional Str,
        18 ns_id: optional Uint32,
        /// enum [`sk_shutdown`]
        19 shutdown: optional EnumOf<sk_shutdown::Names>,
        20 tcp_opts: optional Msg<TcpOptsEntry>,
        /// crust's extension (CRIU has no such field): a connection still
        /// waiting in the accept queue of the listening socket with this
        /// files.img id at dump time; no fd refers to it.
        100 accept_queue_of: optional Uint32,
        /// crust's extension: a UDP datagram pending on the socket (corked
        /// with UDP_CORK or MSG_MORE), not sent yet at dump time.
        101 corked_data: optional Bytes,
        /// crust's extension: its destination (a raw sockaddr).
        102 corked_dst: optional Bytes,
    }
}
