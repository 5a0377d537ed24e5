//! pidfds (fds made by pidfd_open(2) or clone's CLONE_PIDFD), as CRIU
//! 4.2's PIDFD entries of files.img: the pidfs inode, the file status
//! flags without the access mode, and the pid the fd names as the tree's
//! pid namespace sees it (`nspid`), -1 when that process is gone.
//!
//! Dump: an fd whose /proc link is `anon_inode:[pidfd]` (the kernel says so
//! with pidfs too). fdinfo gives `Pid:` (crust's view) and `NSpid:` (the
//! last one is the process's own namespace's view, the tree's). A pidfd on
//! a process outside the tree is refused (it would not exist at restore),
//! and so is a thread pidfd (PIDFD_THREAD), as in CRIU.
//!
//! Restore: a pidfd on a process that is gone is made at once from a
//! process crust forks, which exits at once and is reaped (every pidfd of
//! one dumped inode comes from the same such process, so they still name
//! one process). A pidfd on a process of the tree can only be made once
//! that process exists: it is a late description ([`OpenKind::late`]),
//! opened by crust with the process's host pid once the whole tree exists
//! and handed to the tasks like every description crust makes.

use crate::files::classify::Target;
use crate::files::fdpass::MadeFds;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, OpenKind, RestoreKind};
use crate::files::loaded::LoadedFiles;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::pidfd::PidfdEntry;
use crust_sys::process::{self, ForkResult};
use crust_sys::unix as su;
use log::debug;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::BorrowedFd;
use std::path::Path;

/// What /proc/PID/fd says of a pidfd.
const LINK: &str = "anon_inode:[pidfd]";
/// PIDFD_NONBLOCK: the one flag pidfd_open takes that a restore can give.
const PIDFD_NONBLOCK: u32 = libc::O_NONBLOCK as u32;
/// PIDFD_THREAD (Linux 6.9) is O_EXCL: a pidfd on a thread.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

// ------------------------------------------------------------------- dump

/// The pidfds seen while dumping a tree.
#[derive(Default)]
pub struct PidfdDump {
    /// Host pids of the tree's processes.
    tree: HashSet<i32>,
    /// (pid, fd, files.img id) of each description seen, to find fds that
    /// share one.
    seen: Vec<(i32, i32, u32)>,
}

impl PidfdDump {
    /// The processes of the dumped tree (host pids).
    pub fn set_tree(&mut self, pids: &[i32]) {
        self.tree = pids.iter().copied().collect();
    }

    /// The id of a description seen before on another fd, if any.
    fn known(&self, pid: i32, fd: i32) -> Option<u32> {
        self.seen.iter().find_map(|&(opid, ofd, id)| {
            crust_sys::process::kcmp_file(pid, opid, fd, ofd)
                .unwrap_or(false)
                .then_some(id)
        })
    }

    /// The PIDFD entry of fd `f`, refused if a restore could not make it.
    fn entry(&self, f: &DumpFd<'_>, id: u32) -> Result<PidfdEntry, Error> {
        let (pid, fd) = (f.pid, f.fd);
        let refuse =
            |why: String| Error::unsupported(format!("process {pid} has fd {fd} on a pidfd {why}"));
        let flags = f.flags() & !(libc::O_ACCMODE as u32);
        if flags & PIDFD_THREAD != 0 {
            return Err(refuse(
                "of a thread (PIDFD_THREAD), which crust cannot dump".into(),
            ));
        }
        let num = |key: &str| -> Result<i32, Error> {
            f.info
                .get(key)
                .and_then(|v| v.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| refuse(format!("whose fdinfo has no {key} line")))
        };
        let host = num("Pid")?;
        let nspid = if host == -1 { -1 } else { num("NSpid")? };
        if host != -1 && !self.tree.contains(&host) {
            return Err(refuse(format!(
                "of process {host}, which is not in the dumped tree (it would not exist after a restore): dump a tree that holds it"
            )));
        }
        Ok(PidfdEntry {
            id,
            ino: f.info.ino as u32,
            flags,
            nspid,
            ..Default::default()
        })
    }
}

impl DumpKind for PidfdDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Special("anonymous inode") || f.target != LINK {
            return Ok(None);
        }
        let known = self.known(f.pid, f.fd);
        let id = ids.id_for(known, |_, id| {
            let e = self.entry(f, id)?;
            debug!(
                "{}: fd {} is a pidfd of {} (id {id}, flags {:#o})",
                f.pid, f.fd, e.nspid, e.flags
            );
            self.seen.push((f.pid, f.fd, id));
            Ok(Some(FileEntry {
                r#type: fd_types::PIDFD,
                id,
                pidfd: Some(Box::new(e)),
                ..Default::default()
            }))
        })?;
        Ok(Some((id, fd_types::PIDFD)))
    }
}

// ---------------------------------------------------------------- restore

/// The pidfds of an image set, by files.img id.
pub struct Pidfds {
    entries: BTreeMap<u32, PidfdEntry>,
}

/// Check one PIDFD entry against the tree (`pids`: every pid of pstree.img).
fn check_entry(e: &PidfdEntry, pids: &HashSet<u32>) -> Result<(), String> {
    if e.flags & !PIDFD_NONBLOCK != 0 {
        return Err(format!(
            "flags {:#o}: only PIDFD_NONBLOCK can be restored",
            e.flags
        ));
    }
    if e.nspid != -1 && (e.nspid <= 0 || !pids.contains(&(e.nspid as u32))) {
        return Err(format!(
            "it names process {}, which pstree.img does not have",
            e.nspid
        ));
    }
    Ok(())
}

impl Pidfds {
    pub fn load(dir: &Path, loaded: &LoadedFiles, pids: &HashSet<u32>) -> Result<Pidfds, Error> {
        let entries = crate::util::load_kind(
            dir,
            loaded.entries()?,
            fd_types::PIDFD,
            "pidfd",
            |f| f.pidfd.map(|e| (e.id, *e)),
            |e| check_entry(e, pids),
        )?;
        Ok(Pidfds { entries })
    }
}

pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let pids = ctx.procs.iter().map(|p| p.pid as u32).collect();
    let kind = Pidfds::load(ctx.dir, ctx.files, &pids)?;
    if let Some(id) = ctx
        .ids_of_type(fd_types::PIDFD)
        .into_iter()
        .find(|id| !kind.entries.contains_key(id))
    {
        return Err(Error::BadImage {
            dir: ctx.dir.to_path_buf(),
            why: format!("an fd refers to pidfd {id}, which files.img does not have"),
        });
    }
    Ok(Box::new(kind))
}

/// pidfds of processes that are gone: one process, forked, opened and
/// reaped, for every dumped inode.
fn make_dead(entries: &BTreeMap<u32, PidfdEntry>, out: &mut MadeFds) -> Result<(), Error> {
    let me = process::getpid();
    let mut inodes: BTreeMap<u32, Vec<&PidfdEntry>> = BTreeMap::new();
    for e in entries.values().filter(|e| e.nspid == -1) {
        inodes.entry(e.ino).or_default().push(e);
    }
    for (ino, group) in inodes {
        let child = match process::clone3_fork(&[], 0)
            .map_err(sys_err(me, "fork for a pidfd of a process that is gone"))?
        {
            ForkResult::Child => process::exit_now(0),
            ForkResult::Parent { child } => child,
        };
        // The child may have exited already: a zombie still has its pid.
        let opened: Result<Vec<_>, Error> = group
            .iter()
            .map(|e| {
                su::pidfd_open_with(child, e.flags)
                    .map(|fd| (e.id, fd))
                    .map_err(sys_err(me, format!("pidfd_open of process {child}")))
            })
            .collect();
        let _ = process::waitpid(child, 0);
        for (id, fd) in opened? {
            out.insert(id, fd);
        }
        debug!("pidfds of dumped inode {ino}: from process {child}, now gone");
    }
    Ok(())
}

impl RestoreKind for Pidfds {
    fn name(&self) -> &'static str {
        "pidfds"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        let mut fds = MadeFds::default();
        make_dead(&self.entries, &mut fds)?;
        let live = self
            .entries
            .values()
            .filter(|e| e.nspid != -1)
            .map(|e| (e.id, (e.nspid as u32, e.flags)))
            .collect();
        Ok(Box::new(OpenPidfds { fds, live }))
    }
}

/// The pidfds made: those of processes gone at once, those of the tree's
/// processes once they exist.
pub struct OpenPidfds {
    fds: MadeFds,
    /// files.img id -> (pid in the images, flags) of the late ones.
    live: BTreeMap<u32, (u32, u32)>,
}

impl OpenKind for OpenPidfds {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::PIDFD).then_some("pidfd")
    }

    fn late(&self, id: u32) -> bool {
        self.live.contains_key(&id)
    }

    fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        let me = process::getpid();
        for (&id, &(pid, flags)) in &self.live {
            let host = host_pid(pid).ok_or_else(|| Error::Restore {
                pid: pid as i32,
                what: format!("pidfd {id} names it, but it was not restored"),
            })?;
            let fd = su::pidfd_open_with(host, flags).map_err(sys_err(
                me,
                format!("pidfd_open of process {host} for pidfd {id}"),
            ))?;
            self.fds.insert(id, fd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, nspid: i32, flags: u32) -> PidfdEntry {
        PidfdEntry {
            id,
            ino: 7,
            flags,
            nspid,
            ..Default::default()
        }
    }

    #[test]
    fn entries_are_checked_against_the_tree() {
        let pids: HashSet<u32> = [10, 11].into_iter().collect();
        assert!(check_entry(&entry(1, 10, 0), &pids).is_ok());
        assert!(check_entry(&entry(1, -1, PIDFD_NONBLOCK), &pids).is_ok());
        assert!(check_entry(&entry(1, 12, 0), &pids).is_err());
        assert!(check_entry(&entry(1, 0, 0), &pids).is_err());
        assert!(check_entry(&entry(1, 10, PIDFD_THREAD), &pids).is_err());
    }

    #[test]
    fn only_pids_of_the_tree_are_late() {
        let mut live = BTreeMap::new();
        live.insert(3, (10, 0));
        let open = OpenPidfds {
            fds: MadeFds::default(),
            live,
        };
        assert!(open.late(3));
        assert!(!open.late(4));
        assert_eq!(open.type_name(fd_types::PIDFD), Some("pidfd"));
    }
}
