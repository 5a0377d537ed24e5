//! Messages of CRIU's `cgroup.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `cgroup_perms`
    CgroupPerms = "cgroup_perms" {
        1 mode: required Uint32,
        2 uid: required Uint32,
        3 gid: required Uint32,
    }
    /// message `cgroup_prop_entry`
    CgroupPropEntry = "cgroup_prop_entry" {
        1 name: required Str,
        2 value: required Str,
        3 perms: optional Msg<CgroupPerms>,
    }
    /// message `cgroup_dir_entry`
    CgroupDirEntry = "cgroup_dir_entry" {
        1 dir_name: required Str,
        2 children: repeated Msg<CgroupDirEntry>,
        3 properties: repeated Msg<CgroupPropEntry>,
        4 dir_perms: optional Msg<CgroupPerms>,
    }
    /// message `cg_controller_entry`
    CgControllerEntry = "cg_controller_entry" {
        1 cnames: repeated Str,
        2 dirs: repeated Msg<CgroupDirEntry>,
        3 is_threaded: optional Bool,
    }
    /// message `cg_member_entry`
    CgMemberEntry = "cg_member_entry" {
        1 name: required Str,
        2 path: required Str,
        3 cgns_prefix: optional Uint32,
    }
    /// message `cg_set_entry`
    CgSetEntry = "cg_set_entry" {
        1 id: required Uint32,
        2 ctls: repeated Msg<CgMemberEntry>,
    }
    /// message `cgroup_entry`
    CgroupEntry = "cgroup_entry" {
        1 sets: repeated Msg<CgSetEntry>,
        2 controllers: repeated Msg<CgControllerEntry>,
    }
}
