//! The owner of open files: the process, thread or process group that
//! gets SIGIO/SIGURG for a file (fcntl F_SETOWN / F_SETOWN_EX), the signal
//! sent (F_SETSIG) and the uid/euid recorded with the owner, in CRIU's
//! `fown_entry` (in every per-kind file entry of files.img).
//!
//! `fown_entry` fields, as CRIU fills them: `pid_type` is `f_owner_ex.type`
//! (F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2), `pid` the owner's pid in
//! the tree's pid namespace (0: no owner; then uid, euid and pid_type are
//! 0), `uid`/`euid` what F_GETOWNER_UIDS reports (the creds of whoever set
//! the owner), `signum` F_GETSIG (0: SIGIO).
//!
//! Dump: read on crust's copy of the task's file (pidfd_getfd shares the
//! open file description). Restore: once every task of the tree exists and
//! every fd is open (and after file leases, which set the owner too), each
//! task sets the owner of its fds with remote fcntls, under the recorded
//! uid/euid, so the owner's credentials come back as they were.

use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::{FdinfoEntry, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_proc::ProcRoot;
use crust_sys::fown::{self as sf, OwnerEx};
use log::{debug, warn};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The owner of the file `fd` is on, its signal and creds, with pids as
/// seen from crust's pid namespace.
pub fn dump(fd: BorrowedFd<'_>) -> io::Result<FownEntry> {
    let signum = match sf::signal(fd) {
        Ok(s) => s as u32,
        // O_PATH descriptions have no owner.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(FownEntry::default()),
        Err(e) => return Err(e),
    };
    let o = sf::owner(fd)?;
    if o.pid == 0 {
        return Ok(FownEntry {
            signum,
            ..Default::default()
        });
    }
    let (uid, euid) = match sf::owner_uids(fd) {
        Ok(v) => v,
        // A kernel without F_GETOWNER_UIDS: the owner's own creds.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => owner_creds(o.pid),
        Err(e) => return Err(e),
    };
    // As the tree's user namespace sees them: the owner's task sets them
    // again from inside.
    Ok(FownEntry {
        uid: crate::util::idmap::to_ns_uid(uid),
        euid: crate::util::idmap::to_ns_uid(euid),
        signum,
        pid_type: o.kind as u32,
        pid: o.pid as u32,
        ..Default::default()
    })
}

/// The real and effective uid of process `pid` (0, 0 when it is gone).
fn owner_creds(pid: i32) -> (u32, u32) {
    match crust_proc::status(&ProcRoot::default(), pid) {
        Ok(st) => (st.uid[0], st.uid[1]),
        Err(_) => (0, 0),
    }
}

/// Set the owner and signal of the file `fd` is on from `e` (pids as seen
/// from the caller's pid namespace). The owner's creds become the
/// caller's.
#[allow(dead_code)] // for the sockets crust makes and hands over (inet)
pub fn restore(fd: BorrowedFd<'_>, e: &FownEntry) -> io::Result<()> {
    if e.signum != 0 {
        sf::set_signal(fd, e.signum as i32)?;
    }
    if e.pid != 0 {
        sf::set_owner(
            fd,
            OwnerEx {
                kind: e.pid_type as i32,
                pid: e.pid as i32,
            },
        )?;
    }
    Ok(())
}

/// `e` says something (an owner or a signal).
fn is_set(e: &FownEntry) -> bool {
    e.pid != 0 || e.signum != 0
}

/// The pid `host` (crust's view) has in its innermost pid namespace, or
/// `host` itself when it is gone.
pub(crate) fn ns_pid(host: i32) -> i32 {
    match crust_proc::status(&ProcRoot::default(), host) {
        Ok(st) => st.ns_pid.last().copied().unwrap_or(host),
        Err(_) => host,
    }
}

/// The `fown_entry` inside a files.img entry, whatever its kind, and the
/// file status flags of that entry (0 for kinds without them).
pub fn of_entry(f: &mut FileEntry) -> Option<(&mut FownEntry, u32)> {
    macro_rules! pick {
        ($($k:ident),*) => {
            $(
                if let Some(x) = f.$k.as_mut() {
                    return Some((&mut x.fown, x.flags));
                }
            )*
        };
    }
    pick!(reg, isk, psk, nlsk, efd, epfd, sgfd, tfd, ify, ffy, usk, pipe, tty, memfd, bpf, pidfd);
    if let Some(x) = f.ext.as_mut() {
        return Some((&mut x.fown, 0));
    }
    // A FIFO is a FIFO entry plus a regular file entry (handled above).
    None
}

/// The owners of the tree's files seen by a dump, by files.img id.
#[derive(Default)]
pub struct OwnerDump {
    by_id: HashMap<u32, FownEntry>,
    /// A pidfd of the last process looked at.
    pidfd: Option<(i32, OwnedFd)>,
}

impl OwnerDump {
    /// Note the owner of fd `fd` of process `pid` (crust's view), whose
    /// files.img id is `id`, unless that description was seen already.
    pub fn note(&mut self, pid: i32, fd: i32, id: u32) -> Result<(), Error> {
        if self.by_id.contains_key(&id) {
            return Ok(());
        }
        use crust_sys::unix as su;
        if self.pidfd.as_ref().map(|(p, _)| *p) != Some(pid) {
            let pfd = su::pidfd_open(pid).map_err(sys_err(pid, "pidfd_open"))?;
            self.pidfd = Some((pid, pfd));
        }
        let (_, pidfd) = self.pidfd.as_ref().expect("just set");
        // Not fatal: the file is dumped without its owner.
        let got = su::pidfd_getfd(pidfd.as_fd(), fd).and_then(|copy| dump(copy.as_fd()));
        let mut e = match got {
            Ok(e) => e,
            Err(err) => {
                warn!("{pid}: cannot read the owner of fd {fd} ({err}); dumped without one");
                FownEntry::default()
            }
        };
        if e.pid != 0 {
            let host = e.pid as i32;
            e.pid = ns_pid(host) as u32;
            debug!(
                "{pid}: fd {fd} (id {id}) is owned by {} {host} (pid {} in the tree), signal {}, uid {}/{}",
                match e.pid_type as i32 {
                    sf::F_OWNER_TID => "thread",
                    sf::F_OWNER_PGRP => "process group",
                    _ => "process",
                },
                e.pid,
                e.signum,
                e.uid,
                e.euid
            );
        }
        self.by_id.insert(id, e);
        Ok(())
    }

    /// Put the owners noted into the entries of files.img.
    pub fn fill(&self, files: &mut [FileEntry]) {
        for f in files {
            let id = f.id;
            let Some(e) = self.by_id.get(&id) else {
                continue;
            };
            if let Some((slot, _)) = of_entry(f) {
                *slot = e.clone();
            }
        }
    }
}

/// The owners to set again on restore, by files.img id (only files that
/// have an owner or a signal), and the files with O_ASYNC.
#[derive(Default)]
pub struct Owners {
    by_id: HashMap<u32, FownEntry>,
    /// O_ASYNC descriptions: crust set the flag on its own fd, so the
    /// kernel would name crust's fd number in the signals (si_fd); the task
    /// sets it again on its own fd.
    async_ids: HashSet<u32>,
}

impl Owners {
    /// Read them from files.img (none when there is no files.img).
    pub fn load(dir: &Path, loaded: &crate::files::loaded::LoadedFiles) -> Result<Owners, Error> {
        if loaded.is_missing() {
            return Ok(Owners::default());
        }
        let mut by_id = HashMap::new();
        let mut async_ids = HashSet::new();
        // One entry copied at a time (of_entry wants it mutable), not the
        // whole of files.img: every FileEntry holds every kind's part
        // inline, some KiB each, and a tree of a thousand processes has
        // thousands of entries.
        for f in loaded.entries()? {
            let id = f.id;
            let mut f = f.clone();
            if let Some((e, flags)) = of_entry(&mut f) {
                if flags & libc::O_ASYNC as u32 != 0 {
                    async_ids.insert(id);
                }
                if is_set(e) {
                    if e.signum > 64 {
                        return Err(Error::BadImage {
                            dir: dir.to_path_buf(),
                            why: format!("files.img: file {id} has a bad signal {}", e.signum),
                        });
                    }
                    if e.pid != 0 && e.pid_type > sf::F_OWNER_PGRP as u32 {
                        return Err(Error::BadImage {
                            dir: dir.to_path_buf(),
                            why: format!(
                                "files.img: file {id} has an owner of unknown kind {}",
                                e.pid_type
                            ),
                        });
                    }
                    by_id.insert(id, e.clone());
                }
            }
        }
        Ok(Owners { by_id, async_ids })
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.async_ids.is_empty()
    }

    /// Set the owners of the fds `fds` of the task behind `r` (every task
    /// of the tree exists, every fd is open, the task still has crust's
    /// root creds).
    pub fn apply(&self, r: &mut Remote<'_>, fds: &[FdinfoEntry]) -> Result<(), Error> {
        let mut done: HashSet<u32> = HashSet::new();
        for f in fds {
            let e = self.by_id.get(&f.id);
            let is_async = self.async_ids.contains(&f.id);
            // Once per open file description.
            if (e.is_none() && !is_async) || !done.insert(f.id) {
                continue;
            }
            let fd = f.fd as i32;
            if is_async {
                reset_async(r, fd)?;
            }
            if let Some(e) = e {
                apply_remote(r, fd, e)?;
            }
        }
        Ok(())
    }
}

/// Clear and set O_ASYNC again on fd `fd` of the task behind `r`, so the
/// kernel's async notification names this fd.
fn reset_async(r: &mut Remote<'_>, fd: i32) -> Result<(), Error> {
    let fdu = fd as u64;
    let fl = r.call(
        &format!("F_GETFL on fd {fd}"),
        libc::SYS_fcntl,
        [fdu, libc::F_GETFL as u64, 0, 0, 0, 0],
    )?;
    let on = fl | libc::O_ASYNC as u64;
    for v in [on & !(libc::O_ASYNC as u64), on] {
        r.call(
            &format!("F_SETFL {v:#o} on fd {fd}"),
            libc::SYS_fcntl,
            [fdu, libc::F_SETFL as u64, v, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Set the owner and signal of fd `fd` of the task behind `r` from `e`,
/// with remote fcntls; the owner is set under the recorded uid/euid (the
/// task's ids are put back after). An owner that does not exist any more
/// (a process outside the tree) is left out with a warning.
pub fn apply_remote(r: &mut Remote<'_>, fd: i32, e: &FownEntry) -> Result<(), Error> {
    let pid = r.pid();
    let fdu = fd as u64;
    if e.signum != 0 {
        r.call(
            &format!("F_SETSIG {} on fd {fd}", e.signum),
            libc::SYS_fcntl,
            [fdu, sf::F_SETSIG as u64, e.signum as u64, 0, 0, 0],
        )?;
    }
    if e.pid == 0 {
        return Ok(());
    }
    // The task's ids, to put back: getresuid writes three u32.
    let switch = e.uid != 0 || e.euid != 0;
    let mut old = [0u32; 3];
    if switch {
        let a = r.at(0);
        r.call(
            "getresuid",
            libc::SYS_getresuid,
            [a.get(), a.get() + 4, a.get() + 8, 0, 0, 0],
        )?;
        let b = r.get(0, 12)?;
        for (i, o) in old.iter_mut().enumerate() {
            *o = u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
        }
        // The saved uid stays: it lets the task take its ids back.
        r.call(
            &format!("setresuid({}, {}) for the owner of fd {fd}", e.uid, e.euid),
            libc::SYS_setresuid,
            [e.uid as u64, e.euid as u64, u32::MAX as u64, 0, 0, 0],
        )?;
    }
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&(e.pid_type as i32).to_le_bytes());
    b[4..8].copy_from_slice(&(e.pid as i32).to_le_bytes());
    let res = r.put(16, &b).and_then(|a| {
        r.call(
            &format!("F_SETOWN_EX {}:{} on fd {fd}", e.pid_type, e.pid),
            libc::SYS_fcntl,
            [fdu, sf::F_SETOWN_EX as u64, a.get(), 0, 0, 0],
        )
    });
    if switch {
        r.call(
            "setresuid back",
            libc::SYS_setresuid,
            [old[0] as u64, old[1] as u64, old[2] as u64, 0, 0, 0],
        )?;
    }
    match res {
        Ok(_) => {
            debug!(
                "{pid}: fd {fd} owned by {}:{} (uid {}/{}), signal {}",
                e.pid_type, e.pid, e.uid, e.euid, e.signum
            );
            Ok(())
        }
        Err(Error::Sys { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            warn!(
                "{pid}: the owner {} of fd {fd} does not exist any more; fd {fd} is left without an owner",
                e.pid
            );
            Ok(())
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::proto::pipe::PipeEntry;
    use crust_images::proto::regfile::RegFileEntry;

    #[test]
    fn dump_reads_owner_and_signal() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(dump(f.as_fd()).unwrap(), FownEntry::default());
        let me = std::process::id() as i32;
        let e = FownEntry {
            uid: 0,
            euid: 0,
            signum: libc::SIGRTMIN() as u32 + 3,
            pid_type: sf::F_OWNER_PID as u32,
            pid: me as u32,
            ..Default::default()
        };
        restore(f.as_fd(), &e).unwrap();
        let got = dump(f.as_fd()).unwrap();
        assert_eq!(
            (got.pid, got.pid_type, got.signum),
            (e.pid, e.pid_type, e.signum)
        );
        // The creds recorded are ours.
        let st = crust_proc::status(&ProcRoot::default(), me).unwrap();
        assert_eq!((got.uid, got.euid), (st.uid[0], st.uid[1]));
    }

    #[test]
    fn fills_the_entry_of_each_kind() {
        let mut files = vec![
            FileEntry {
                id: 1,
                reg: Some(Box::new(RegFileEntry::default())),
                ..Default::default()
            },
            FileEntry {
                id: 2,
                pipe: Some(Box::new(PipeEntry::default())),
                ..Default::default()
            },
            FileEntry {
                id: 3,
                ..Default::default()
            },
        ];
        let mut d = OwnerDump::default();
        let e = FownEntry {
            pid: 7,
            pid_type: 1,
            signum: 29,
            uid: 5,
            euid: 6,
            ..Default::default()
        };
        d.by_id.insert(2, e.clone());
        d.by_id.insert(3, e.clone());
        d.fill(&mut files);
        assert_eq!(files[0].reg.as_ref().unwrap().fown, FownEntry::default());
        assert_eq!(files[1].pipe.as_ref().unwrap().fown, e);
        assert!(of_entry(&mut files[2]).is_none());
        files[0].reg.as_mut().unwrap().flags = libc::O_ASYNC as u32;
        assert_eq!(of_entry(&mut files[0]).unwrap().1, libc::O_ASYNC as u32);
        assert!(is_set(&e));
        assert!(!is_set(&FownEntry::default()));
    }
}
