//! Messages of CRIU's `memfd.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `memfd_file_entry`
    MemfdFileEntry = "memfd_file_entry" {
        1 id: required Uint32,
        2 flags: required Flags<Uint32, RfileFlags>,
        3 pos: required Uint64,
        4 fown: required Msg<FownEntry>,
        5 inode_id: required Uint32,
    }
    /// message `memfd_inode_entry`
    MemfdInodeEntry = "memfd_inode_entry" {
        1 name: required Str,
        2 uid: required Uint32,
        3 gid: required Uint32,
        4 size: required Uint64,
        5 shmid: required Uint32,
        6 seals: required Flags<Uint32, SealsFlags>,
        7 inode_id: required Uint64,
        8 hugetlb_flag: optional Uint32,
        9 mode: optional Uint32,
    }
}
