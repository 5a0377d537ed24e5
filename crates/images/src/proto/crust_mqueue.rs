//! crust's OWN extension, not a CRIU 4.2 message: the POSIX message queues
//! of a tree's IPC namespace (CRIU 4.2 keeps only the fs/mqueue limits, in
//! `ipcns-var-N.img`). They live in `crust-mqueue-N.img` (N: the IPC
//! namespace id), a file CRIU never opens: CRIU 4.2 restoring crust's
//! images restores the namespace without its queues; crust restoring
//! CRIU's images finds no such file and makes none.

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// One message of a queue (crust's extension).
    CrustMqueueMsg = "crust_mqueue_msg" {
        1 prio: required Uint32,
        2 data: required Bytes,
    }
    /// One queue: its name without the leading '/', its file's mode and
    /// owner (as the tree's user namespace sees them), its limits, and its
    /// messages in the order they are received (crust's extension).
    CrustMqueueEntry = "crust_mqueue_entry" {
        1 name: required Str,
        2 mode: required Uint32,
        3 uid: required Uint32,
        4 gid: required Uint32,
        5 maxmsg: required Uint64,
        6 msgsize: required Uint64,
        7 msgs: repeated Msg<CrustMqueueMsg>,
    }
}
