//! Messages of CRIU's `ipc-sem.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ipc_sem_entry`
    IpcSemEntry = "ipc_sem_entry" {
        1 desc: required Msg<IpcDescEntry>,
        2 nsems: required Uint32,
    }
}
