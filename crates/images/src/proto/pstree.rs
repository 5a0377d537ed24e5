//! Messages of CRIU's `pstree.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `pstree_entry`
    PstreeEntry = "pstree_entry" {
        1 pid: required Uint32,
        2 ppid: required Uint32,
        3 pgid: required Uint32,
        4 sid: required Uint32,
        5 threads: repeated Uint32,
    }
}
