//! Messages of CRIU's `mnt.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `fstype`
    fstype {
        UNSUPPORTED = 0,
        PROC = 1,
        SYSFS = 2,
        DEVTMPFS = 3,
        BINFMT_MISC = 4,
        TMPFS = 5,
        DEVPTS = 6,
        SIMFS = 7,
        PSTORE = 8,
        SECURITYFS = 9,
        FUSECTL = 10,
        DEBUGFS = 11,
        CGROUP = 12,
        AUFS = 13,
        MQUEUE = 14,
        FUSE = 15,
        AUTO = 16,
        OVERLAYFS = 17,
        AUTOFS = 18,
        TRACEFS = 19,
        CGROUP2 = 23,
    }
}

crate::message! {
    /// message `mnt_entry`
    MntEntry = "mnt_entry" {
        1 fstype: required Uint32,
        2 mnt_id: required Uint32,
        3 root_dev: required Dev<Uint32>,
        4 parent_mnt_id: required Uint32,
        5 flags: required Hex<Uint32>,
        6 root: required Str,
        7 mountpoint: required Str,
        8 source: required Str,
        9 options: required Str,
        10 shared_id: optional Uint32,
        11 master_id: optional Uint32,
        12 with_plugin: optional Bool,
        13 ext_mount: optional Bool,
        14 fsname: optional Str,
        15 internal_sharing: optional Bool,
        16 deleted: optional Bool,
        17 sb_flags: optional Hex<Uint32>,
        18 ext_key: optional Str,
    }
}
