//! Messages of CRIU's `ipc-shm.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ipc_shm_entry`
    IpcShmEntry = "ipc_shm_entry" {
        1 desc: required Msg<IpcDescEntry>,
        2 size: required Uint64,
        3 in_pagemaps: optional Bool,
        4 hugetlb_flag: optional Uint32,
    }
}
