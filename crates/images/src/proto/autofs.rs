//! Messages of CRIU's `autofs.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `autofs_entry`
    AutofsEntry = "autofs_entry" {
        1 fd: required Int32,
        2 pgrp: required Int32,
        3 timeout: required Int32,
        4 minproto: required Int32,
        5 maxproto: required Int32,
        6 mode: required Int32,
        7 uid: optional Int32,
        8 gid: optional Int32,
        9 read_fd: optional Int32,
    }
}
