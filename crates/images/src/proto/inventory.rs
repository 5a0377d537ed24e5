//! Messages of CRIU's `inventory.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `lsmtype`
    lsmtype {
        NO_LSM = 0,
        SELINUX = 1,
        APPARMOR = 2,
    }
}

crate::message! {
    /// message `plugins_entry`
    PluginsEntry = "plugins_entry" {
        12 plugins: repeated Str,
    }
    /// message `inventory_entry`
    InventoryEntry = "inventory_entry" {
        1 img_version: required Uint32,
        2 fdinfo_per_id: optional Bool,
        3 root_ids: optional Msg<TaskKobjIdsEntry>,
        4 ns_per_id: optional Bool,
        5 root_cg_set: optional Uint32,
        /// enum [`lsmtype`]
        6 lsmtype: optional EnumOf<lsmtype::Names>,
        8 dump_uptime: optional Uint64,
        9 pre_dump_mode: optional Uint32,
        10 tcp_close: optional Bool,
        11 network_lock_method: optional Uint32,
        12 plugins_entry: optional Msg<PluginsEntry>,
        13 dump_criu_run_id: optional Str,
        14 allow_uprobes: optional Bool,
    }
}
