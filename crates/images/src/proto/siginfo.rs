//! Messages of CRIU's `siginfo.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `siginfo_entry`
    SiginfoEntry = "siginfo_entry" {
        1 siginfo: required Bytes,
    }
    /// message `signal_queue_entry`
    SignalQueueEntry = "signal_queue_entry" {
        1 signals: repeated Msg<SiginfoEntry>,
    }
}
