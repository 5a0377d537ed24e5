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
        3 reg: optional BoxMsg<RegFileEntry>,
        4 isk: optional BoxMsg<InetSkEntry>,
        5 nsf: optional BoxMsg<NsFileEntry>,
        6 psk: optional BoxMsg<PacketSockEntry>,
        7 nlsk: optional BoxMsg<NetlinkSkEntry>,
        8 efd: optional BoxMsg<EventfdFileEntry>,
        9 epfd: optional BoxMsg<EventpollFileEntry>,
        10 sgfd: optional BoxMsg<SignalfdEntry>,
        11 tunf: optional BoxMsg<TunfileEntry>,
        12 tfd: optional BoxMsg<TimerfdEntry>,
        13 ify: optional BoxMsg<InotifyFileEntry>,
        14 ffy: optional BoxMsg<FanotifyFileEntry>,
        15 ext: optional BoxMsg<ExtFileEntry>,
        16 usk: optional BoxMsg<UnixSkEntry>,
        17 fifo: optional BoxMsg<FifoEntry>,
        18 pipe: optional BoxMsg<PipeEntry>,
        19 tty: optional BoxMsg<TtyFileEntry>,
        20 memfd: optional BoxMsg<MemfdFileEntry>,
        21 bpf: optional BoxMsg<BpfmapFileEntry>,
        22 pidfd: optional BoxMsg<PidfdEntry>,
    }
}
