//! Messages of CRIU's `fs.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `fs_entry`
    FsEntry = "fs_entry" {
        1 cwd_id: required Uint32,
        2 root_id: required Uint32,
        3 umask: optional Uint32,
    }
}
