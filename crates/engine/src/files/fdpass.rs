//! Open files crust makes for a restore ([`MadeFds`]) and copies of a
//! task's files ([`take_fd`]). Giving crust's files to a task at chosen
//! numbers is [`crate::task::fdgift`] (re-exported here): memory restore
//! needs it too.

pub use crate::task::fdgift::{give_fds, Gift};
use crate::util::sys_err;
use crate::Error;
use std::os::fd::{BorrowedFd, OwnedFd};

/// A copy (pidfd_getfd) of fd `fd` of `pid`: crust's own description of
/// a task's file (the dump reads a socket's state through it).
pub(crate) fn take_fd(pid: i32, fd: i32) -> Result<OwnedFd, Error> {
    use crust_sys::unix as su;
    use std::os::fd::AsFd;
    let pidfd = su::pidfd_open(pid).map_err(sys_err(pid, "pidfd_open"))?;
    su::pidfd_getfd(pidfd.as_fd(), fd).map_err(sys_err(pid, format!("pidfd_getfd of fd {fd}")))
}

/// Objects crust made for a restore, by files.img id, until they are
/// given to the tasks.
#[derive(Debug, Default)]
pub struct MadeFds {
    by_id: std::collections::HashMap<u32, std::os::fd::OwnedFd>,
}

impl MadeFds {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.by_id.get(&id).map(|f| f.as_fd())
    }

    pub fn insert(&mut self, id: u32, fd: std::os::fd::OwnedFd) {
        self.by_id.insert(id, fd);
    }
}
