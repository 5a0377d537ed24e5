//! Inet sockets (TCP, UDP, raw; IPv4 and IPv6): `files.img` INETSK entries
//! and, for TCP connections, `tcp-stream-N.img`.

use crate::Error;
use std::collections::HashMap;

/// Inet sockets of a dumped tree, by inode.
#[derive(Default)]
pub struct InetDump {
    ids: HashMap<u32, u32>,
}

impl InetDump {
    /// The files.img id of socket inode `ino` if it was seen already.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
    }

    /// Dump the socket on fd `fd` of `pid` as files.img entry `id`.
    pub fn add(&mut self, pid: i32, fd: i32, ino: u32, _flags: u32, id: u32) -> Result<(), Error> {
        let _ = (ino, id);
        Err(Error::unsupported(format!(
            "process {pid} has fd {fd} on an inet socket, which crust cannot dump yet"
        )))
    }
}
