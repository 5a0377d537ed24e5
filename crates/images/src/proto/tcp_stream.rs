//! Messages of CRIU's `tcp-stream.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `tcp_opts_entry`
    TcpOptsEntry = "tcp_opts_entry" {
        1 cork: optional Bool,
        2 nodelay: optional Bool,
        3 keepcnt: optional Uint32,
        4 keepidle: optional Uint32,
        5 keepintvl: optional Uint32,
    }
    /// message `tcp_stream_entry`
    TcpStreamEntry = "tcp_stream_entry" {
        1 inq_len: required Uint32,
        2 inq_seq: required Uint32,
        3 outq_len: required Uint32,
        4 outq_seq: required Uint32,
        5 opt_mask: required Hex<Uint32>,
        6 snd_wscale: required Uint32,
        7 mss_clamp: required Uint32,
        8 rcv_wscale: optional Uint32,
        9 timestamp: optional Uint32,
        10 cork: optional Bool,
        11 nodelay: optional Bool,
        12 unsq_len: optional Uint32,
        13 snd_wl1: optional Uint32,
        14 snd_wnd: optional Uint32,
        15 max_window: optional Uint32,
        16 rcv_wnd: optional Uint32,
        17 rcv_wup: optional Uint32,
    }
}
