//! Messages of CRIU's `timerfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `timerfd_entry`
    TimerfdEntry = "timerfd_entry" {
        1 id: required Uint32,
        2 flags: required Hex<Uint32>,
        3 fown: required Msg<FownEntry>,
        4 clockid: required Uint32,
        5 ticks: required Uint64,
        6 settime_flags: required Hex<Uint32>,
        7 vsec: required Uint64,
        8 vnsec: required Uint64,
        9 isec: required Uint64,
        10 insec: required Uint64,
    }
}
