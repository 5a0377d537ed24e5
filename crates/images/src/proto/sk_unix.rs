//! Messages of CRIU's `sk-unix.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::message! {
    /// message `file_perms_entry`
    FilePermsEntry = "file_perms_entry" {
        1 mode: required Uint32,
        2 uid: required Uint32,
        3 gid: required Uint32,
    }
    /// message `unix_sk_entry`
    UnixSkEntry = "unix_sk_entry" {
        1 id: required Uint32,
        2 ino: required Uint32,
        3 r#type: required Dict<Uint32, SkType>,
        4 state: required Dict<Uint32, SkState>,
        5 flags: required Hex<Uint32>,
        6 uflags: required Hex<Uint32>,
        7 backlog: required Uint32,
        8 peer: required Uint32,
        9 fown: required Msg<FownEntry>,
        10 opts: required Msg<SkOptsEntry>,
        11 name: required UnixName,
        /// enum [`sk_shutdown`]
        12 shutdown: optional EnumOf<sk_shutdown::Names>,
        13 file_perms: optional Msg<FilePermsEntry>,
        14 name_dir: optional Str,
        15 deleted: optional Bool,
        16 ns_id: optional Uint32,
        17 mnt_id: optional Sint32,
    }
}
