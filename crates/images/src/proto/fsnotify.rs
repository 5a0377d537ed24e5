//! Messages of CRIU's `fsnotify.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `mark_type`
    mark_type {
        INODE = 1,
        MOUNT = 2,
    }
}

crate::message! {
    /// message `inotify_wd_entry`
    InotifyWdEntry = "inotify_wd_entry" {
        1 id: required Uint32,
        2 i_ino: required Uint64,
        3 mask: required Hex<Uint32>,
        4 ignored_mask: required Hex<Uint32>,
        5 s_dev: required Dev<Uint32>,
        6 wd: required Uint32,
        7 f_handle: required Msg<FhEntry>,
    }
    /// message `inotify_file_entry`
    InotifyFileEntry = "inotify_file_entry" {
        1 id: required Uint32,
        2 flags: required Hex<Uint32>,
        4 fown: required Msg<FownEntry>,
        5 wd: repeated Msg<InotifyWdEntry>,
    }
    /// message `fanotify_inode_mark_entry`
    FanotifyInodeMarkEntry = "fanotify_inode_mark_entry" {
        1 i_ino: required Uint64,
        2 f_handle: required Msg<FhEntry>,
    }
    /// message `fanotify_mount_mark_entry`
    FanotifyMountMarkEntry = "fanotify_mount_mark_entry" {
        1 mnt_id: required Uint32,
        2 path: optional Str,
    }
    /// message `fanotify_mark_entry`
    FanotifyMarkEntry = "fanotify_mark_entry" {
        1 id: required Uint32,
        /// enum [`mark_type`]
        2 r#type: required EnumOf<mark_type::Names>,
        3 mflags: required Hex<Uint32>,
        4 mask: required Hex<Uint32>,
        5 ignored_mask: required Hex<Uint32>,
        6 s_dev: required Dev<Uint32>,
        7 ie: optional Msg<FanotifyInodeMarkEntry>,
        8 me: optional Msg<FanotifyMountMarkEntry>,
    }
    /// message `fanotify_file_entry`
    FanotifyFileEntry = "fanotify_file_entry" {
        1 id: required Uint32,
        2 flags: required Hex<Uint32>,
        3 fown: required Msg<FownEntry>,
        4 faflags: required Hex<Uint32>,
        5 evflags: required Hex<Uint32>,
        6 mark: repeated Msg<FanotifyMarkEntry>,
    }
}
