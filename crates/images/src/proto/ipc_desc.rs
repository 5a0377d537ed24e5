//! Messages of CRIU's `ipc-desc.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ipc_desc_entry`
    IpcDescEntry = "ipc_desc_entry" {
        1 key: required Uint32,
        2 uid: required Uint32,
        3 gid: required Uint32,
        4 cuid: required Uint32,
        5 cgid: required Uint32,
        6 mode: required Uint32,
        7 id: required Uint32,
    }
}
