//! Messages of CRIU's `eventpoll.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `eventpoll_tfd_entry`
    EventpollTfdEntry = "eventpoll_tfd_entry" {
        1 id: required Uint32,
        2 tfd: required Uint32,
        3 events: required Uint32,
        4 data: required Uint64,
        5 dev: optional Uint32,
        6 inode: optional Uint64,
        7 pos: optional Uint64,
    }
    /// message `eventpoll_file_entry`
    EventpollFileEntry = "eventpoll_file_entry" {
        1 id: required Uint32,
        2 flags: required Uint32,
        3 fown: required Msg<FownEntry>,
        4 tfd: repeated Msg<EventpollTfdEntry>,
    }
}
