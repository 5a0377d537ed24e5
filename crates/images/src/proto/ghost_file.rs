//! Messages of CRIU's `ghost-file.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `ghost_file_entry`
    GhostFileEntry = "ghost_file_entry" {
        1 uid: required Uint32,
        2 gid: required Uint32,
        3 mode: required Uint32,
        4 dev: optional Dev<Uint32>,
        5 ino: optional Uint64,
        6 rdev: optional ODev<Uint32>,
        7 atim: optional Msg<Timeval>,
        8 mtim: optional Msg<Timeval>,
        9 chunks: optional Bool,
        10 size: optional Uint64,
        11 symlnk_target: optional Str,
    }
    /// message `ghost_chunk_entry`
    GhostChunkEntry = "ghost_chunk_entry" {
        1 len: required Uint64,
        2 off: required Uint64,
    }
}
