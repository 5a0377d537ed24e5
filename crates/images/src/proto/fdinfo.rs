//! Messages of CRIU's `fdinfo.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `fd_types`
    fd_types {
        UND = 0,
        REG = 1,
        PIPE = 2,
        FIFO = 3,
        INETSK = 4,
        UNIXSK = 5,
        EVENTFD = 6,
        EVENTPOLL = 7,
        INOTIFY = 8,
        SIGNALFD = 9,
        PACKETSK = 10,
        TTY = 11,
        FANOTIFY = 12,
        NETLINKSK = 13,
        NS = 14,
        TUNF = 15,
        EXT = 16,
        TIMERFD = 17,
        MEMFD = 18,
        BPFMAP = 19,
        PIDFD = 20,
        CTL_TTY = 65534,
        AUTOFS_PIPE = 65535,
    }
}

crate::message! {
    /// message `fdinfo_entry`
    FdinfoEntry = "fdinfo_entry" {
        1 id: required Uint32,
        2 flags: required Uint32,
        /// enum [`fd_types`]
        3 r#type: required EnumOf<fd_types::Names>,
        4 fd: required Uint32,
        5 xattr_security_selinux: optional Str,
    }
    /// message `file_entry`
    FileEntry = "file_entry" {
        /// enum [`fd_types`]
        1 r#type: required EnumOf<fd_types::Names>,
        2 id: required Uint32,
        3 reg: optional Msg<RegFileEntry>,
        4 isk: optional Msg<InetSkEntry>,
        5 nsf: optional Msg<NsFileEntry>,
        6 psk: optional Msg<PacketSockEntry>,
        7 nlsk: optional Msg<NetlinkSkEntry>,
        8 efd: optional Msg<EventfdFileEntry>,
        9 epfd: optional Msg<EventpollFileEntry>,
        10 sgfd: optional Msg<SignalfdEntry>,
        11 tunf: optional Msg<TunfileEntry>,
        12 tfd: optional Msg<TimerfdEntry>,
        13 ify: optional Msg<InotifyFileEntry>,
        14 ffy: optional Msg<FanotifyFileEntry>,
        15 ext: optional Msg<ExtFileEntry>,
        16 usk: optional Msg<UnixSkEntry>,
        17 fifo: optional Msg<FifoEntry>,
        18 pipe: optional Msg<PipeEntry>,
        19 tty: optional Msg<TtyFileEntry>,
        20 memfd: optional Msg<MemfdFileEntry>,
        21 bpf: optional Msg<BpfmapFileEntry>,
        22 pidfd: optional Msg<PidfdEntry>,
    }
}
