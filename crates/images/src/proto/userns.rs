//! Messages of CRIU's `userns.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `uid_gid_extent`
    UidGidExtent = "uid_gid_extent" {
        1 first: required Uint32,
        2 lower_first: required Uint32,
        3 count: required Uint32,
    }
    /// message `userns_entry`
    UsernsEntry = "userns_entry" {
        1 uid_map: repeated Msg<UidGidExtent>,
        2 gid_map: repeated Msg<UidGidExtent>,
    }
}
