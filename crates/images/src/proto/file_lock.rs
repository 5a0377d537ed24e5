//! Messages of CRIU's `file-lock.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `file_lock_entry`
    FileLockEntry = "file_lock_entry" {
        1 flag: required Uint32,
        2 r#type: required Uint32,
        3 pid: required Int32,
        4 fd: required Int32,
        5 start: required Int64,
        6 len: required Int64,
    }
}
