//! Messages of CRIU's `ipc-var.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `ipc_var_entry`
    IpcVarEntry = "ipc_var_entry" {
        1 sem_ctls: repeated Uint32,
        2 msg_ctlmax: required Uint32,
        3 msg_ctlmnb: required Uint32,
        4 msg_ctlmni: required Uint32,
        5 auto_msgmni: required Uint32,
        6 shm_ctlmax: required Uint64,
        7 shm_ctlall: required Uint64,
        8 shm_ctlmni: required Uint32,
        9 shm_rmid_forced: required Uint32,
        10 mq_queues_max: required Uint32,
        11 mq_msg_max: required Uint32,
        12 mq_msgsize_max: required Uint32,
        13 mq_msg_default: optional Uint32,
        14 mq_msgsize_default: optional Uint32,
        15 msg_next_id: optional Uint32,
        16 sem_next_id: optional Uint32,
        17 shm_next_id: optional Uint32,
    }
}
