//! Messages of CRIU's `tty.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `TtyType`
    TtyType {
        UNKNOWN = 0,
        PTY = 1,
        CONSOLE = 2,
        VT = 3,
        CTTY = 4,
        EXT_TTY = 5,
        SERIAL = 6,
    }
}

crate::message! {
    /// message `winsize_entry`
    WinsizeEntry = "winsize_entry" {
        1 ws_row: required Uint32,
        2 ws_col: required Uint32,
        3 ws_xpixel: required Uint32,
        4 ws_ypixel: required Uint32,
    }
    /// message `termios_entry`
    TermiosEntry = "termios_entry" {
        1 c_iflag: required Uint32,
        2 c_oflag: required Uint32,
        3 c_cflag: required Uint32,
        4 c_lflag: required Uint32,
        5 c_line: required Uint32,
        6 c_ispeed: required Uint32,
        7 c_ospeed: required Uint32,
        8 c_cc: repeated Uint32,
    }
    /// message `tty_pty_entry`
    TtyPtyEntry = "tty_pty_entry" {
        1 index: required Uint32,
    }
    /// message `tty_data_entry`
    TtyDataEntry = "tty_data_entry" {
        1 tty_id: required Uint32,
        2 data: required Bytes,
    }
    /// message `tty_info_entry`
    TtyInfoEntry = "tty_info_entry" {
        1 id: required Uint32,
        /// enum [`TtyType`]
        2 r#type: required EnumOf<TtyType::Names>,
        3 locked: required Bool,
        4 exclusive: required Bool,
        5 packet_mode: required Bool,
        6 sid: required Uint32,
        7 pgrp: required Uint32,
        8 rdev: required Uint32,
        9 termios: optional Msg<TermiosEntry>,
        10 termios_locked: optional Msg<TermiosEntry>,
        11 winsize: optional Msg<WinsizeEntry>,
        12 pty: optional Msg<TtyPtyEntry>,
        13 dev: optional Uint32,
        14 uid: optional Uint32,
        15 gid: optional Uint32,
    }
    /// message `tty_file_entry`
    TtyFileEntry = "tty_file_entry" {
        1 id: required Uint32,
        2 tty_info_id: required Uint32,
        3 flags: required Hex<Uint32>,
        4 fown: required Msg<FownEntry>,
        6 regf_id: optional Uint32,
    }
}
