//! Kinds of files at dump: the trait each kind implements and the list of
//! kinds [`crate::files::FileTable`] asks, in order, for each fd.

use crate::files::classify::Target;
use crate::Error;
use crust_images::proto::fdinfo::{FdinfoEntry, FileEntry};
use crust_images::proto::memfd::MemfdInodeEntry;
use crust_proc::{FdInfo, ProcRoot};
use std::os::fd::OwnedFd;
use std::path::Path;

/// One fd of a process being dumped, as the kinds see it.
pub(crate) struct DumpFd<'a> {
    pub proc: &'a ProcRoot,
    pub pid: i32,
    pub fd: i32,
    /// Its /proc/PID/fd link.
    pub target: &'a str,
    pub info: &'a FdInfo,
    /// What the link says it is.
    pub class: Target,
    /// A socket: its family (SO_DOMAIN) and crust's copy of it, for the
    /// kind that records it to take.
    pub sock: Option<(i32, OwnedFd)>,
    /// The files.img id of a REG entry a kind already recorded for this
    /// fd's path (the ghost kind, for a deleted FIFO): the kind that
    /// records the fd names its path with it.
    pub path_reg: Option<u32>,
    /// A file carried by a queued message (`pid` is crust's, `fd` its
    /// copy): what a kind needs to know of it.
    pub carried: Option<Carried>,
}

impl DumpFd<'_> {
    /// Its open flags without O_CLOEXEC (an fd flag, not the file's).
    pub fn flags(&self) -> u32 {
        self.info.flags & !(libc::O_CLOEXEC as u32)
    }

    /// The socket inode and crust's copy of the socket, if the fd is a
    /// socket of one of the families `domains` (the copy is taken: one kind
    /// records it).
    pub fn socket_of(&mut self, domains: &[i32]) -> Option<(u32, OwnedFd)> {
        let Target::Socket(ino) = self.class else {
            return None;
        };
        let d = self.sock.as_ref().map(|(d, _)| *d)?;
        if !domains.contains(&d) {
            return None;
        }
        self.sock.take().map(|(_, s)| (ino, s))
    }
}

/// The files.img ids and entries of the tree, shared by every kind.
pub(crate) struct Ids<'a> {
    pub next_id: &'a mut u32,
    pub files: &'a mut Vec<FileEntry>,
    /// memfd.img inodes (memfds and shared anonymous memory).
    pub memfd_inodes: &'a mut Vec<MemfdInodeEntry>,
}

impl Ids<'_> {
    pub fn new_id(&mut self) -> u32 {
        let id = *self.next_id;
        *self.next_id += 1;
        id
    }

    /// The files.img id of a description: `known` (an fd seen before on
    /// it), else a new one, with which `make` records it (and returns the
    /// files.img entry, for kinds whose entries are made at once).
    pub fn id_for(
        &mut self,
        known: Option<u32>,
        make: impl FnOnce(&mut Self, u32) -> Result<Option<FileEntry>, Error>,
    ) -> Result<u32, Error> {
        if let Some(id) = known {
            return Ok(id);
        }
        let id = self.new_id();
        if let Some(e) = make(self, id)? {
            self.files.push(e);
        }
        Ok(id)
    }
}

/// A file carried by a message queued on a socket of the tree
/// (SCM_RIGHTS), which crust holds a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carried {
    /// Crust's fd of it.
    pub fd: i32,
    /// The process (host pid) whose fd numbers name the files it refers
    /// to, as a restore reads them: the targets of an epoll no task holds
    /// are registered by that process, at those numbers. `None` when no
    /// process of the tree can (a file it refers to is then refused).
    pub names_in: Option<i32>,
}

/// A kind of file at dump.
pub(crate) trait DumpKind: crate::files::kind::AsAny {
    /// If fd `f` is of this kind, its files.img id and fd type (a new id
    /// and entry for a description not seen before); `None` if it is not.
    fn claim(&mut self, f: &mut DumpFd<'_>, ids: &mut Ids<'_>)
        -> Result<Option<(u32, i32)>, Error>;
    /// The files.img id of the file of inode `ino` this kind recorded, if
    /// a task may map it (packet sockets: their rings), and the length of
    /// a mapping of it.
    fn mapped_len(&self, _ino: u32) -> Option<(u32, u64)> {
        None
    }
    /// Crust's fds of files carried by the kind's files (SCM_RIGHTS
    /// messages queued on unix sockets) that have no files.img id yet.
    fn carried_fds(&self) -> Result<Vec<Carried>, Error> {
        Ok(Vec::new())
    }
    /// The fd entries the table made for [`Self::carried_fds`].
    fn carried_entries(&mut self, _got: &[FdinfoEntry]) -> Result<(), Error> {
        Ok(())
    }
    /// Entries for files.img made once every fd is seen (peers outside
    /// the tree, links of deleted files), asked in registry order.
    fn late_entries(&mut self, _next_id: &mut u32) -> Result<Vec<FileEntry>, Error> {
        Ok(Vec::new())
    }
    /// Write the kind's own images (files.img is written by the table).
    fn write_images(&mut self, _dir: &Path) -> Result<(), Error> {
        Ok(())
    }
}
