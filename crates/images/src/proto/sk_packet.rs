//! Messages of CRIU's `sk-packet.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `sk_ucred_entry`
    SkUcredEntry = "sk_ucred_entry" {
        1 uid: required Uint32,
        2 gid: required Uint32,
        3 pid: required Uint32,
    }
    /// message `scm_entry`
    ScmEntry = "scm_entry" {
        1 r#type: required Uint32,
        2 rights: repeated Uint32,
    }
    /// message `sk_packet_entry`
    SkPacketEntry = "sk_packet_entry" {
        1 id_for: required Uint32,
        2 length: required Uint32,
        /// The sender of a datagram (a raw sockaddr). CRIU reserves field 3
        /// for this and leaves it out; crust writes it for datagrams queued
        /// on inet sockets.
        3 addr: optional Bytes,
        4 scm: repeated Msg<ScmEntry>,
        /// The sender's credentials (SCM_CREDENTIALS) of a message on a
        /// socket that passes them. CRIU reserves field 128 for this and
        /// leaves it out; crust writes it.
        128 ucred: optional Msg<SkUcredEntry>,
    }
}
