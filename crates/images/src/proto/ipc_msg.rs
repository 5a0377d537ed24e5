//! Messages of CRIU's `ipc-msg.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ipc_msg`
    IpcMsg = "ipc_msg" {
        1 mtype: required Uint64,
        2 msize: required Uint32,
    }
    /// message `ipc_msg_entry`
    IpcMsgEntry = "ipc_msg_entry" {
        1 desc: required Msg<IpcDescEntry>,
        2 qbytes: required Uint32,
        3 qnum: required Uint32,
    }
}
