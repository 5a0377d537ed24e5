//! Messages of CRIU's `sk-opts.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `sk_shutdown`
    sk_shutdown {
        NONE = 0,
        READ = 1,
        WRITE = 2,
        BOTH = 3,
    }
}

crate::message! {
    /// message `sk_opts_entry`
    SkOptsEntry = "sk_opts_entry" {
        1 so_sndbuf: required Uint32,
        2 so_rcvbuf: required Uint32,
        3 so_snd_tmo_sec: required Uint64,
        4 so_snd_tmo_usec: required Uint64,
        5 so_rcv_tmo_sec: required Uint64,
        6 so_rcv_tmo_usec: required Uint64,
        7 reuseaddr: optional Bool,
        8 so_priority: optional Uint32,
        9 so_rcvlowat: optional Uint32,
        10 so_mark: optional Uint32,
        11 so_passcred: optional Bool,
        12 so_passsec: optional Bool,
        13 so_dontroute: optional Bool,
        14 so_no_check: optional Bool,
        15 so_bound_dev: optional Str,
        16 so_filter: repeated Fixed64,
        17 so_reuseport: optional Bool,
        18 so_broadcast: optional Bool,
        19 so_keepalive: optional Bool,
        20 tcp_keepcnt: optional Uint32,
        21 tcp_keepidle: optional Uint32,
        22 tcp_keepintvl: optional Uint32,
        23 so_oobinline: optional Uint32,
        24 so_linger: optional Uint32,
        25 so_buf_lock: optional Uint32,
    }
}
