//! Files of the restored tree's own /proc entries (`/proc/PID/stat` of a
//! child, `/proc/PID/fdinfo/N` of the process itself): a kind at restore
//! only.
//!
//! Such a file names a process of the tree, which does not exist while
//! the fd tables are built. So it is a late description
//! ([`OpenKind::late`]): crust opens it once the whole tree exists, at the
//! host pid of the process it names (they differ in a new pid namespace),
//! or through the tree's own /proc when it has a mount namespace of its
//! own, with its flags and offset, and hands it over like the other late
//! fds.
//! CRIU gets the same by opening files only once every task is forked.
//! A /proc file of a process outside the tree is opened in the task as any
//! file.

use crate::files::kind::{LoadCtx, Made, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::fd_types;
use crust_images::proto::regfile::RegFileEntry;
use log::debug;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::BorrowedFd;

use super::classify::proc_pid;

/// The /proc files of the tree's processes, by files.img id.
#[derive(Debug, Default)]
pub struct ProcFiles {
    regs: BTreeMap<u32, RegFileEntry>,
}

impl ProcFiles {
    /// The REG entries whose path is a /proc entry of a process of `pids`.
    fn pick<'a>(
        entries: impl Iterator<Item = (u32, &'a RegFileEntry)>,
        pids: &HashSet<u32>,
    ) -> BTreeMap<u32, RegFileEntry> {
        entries
            .filter(|(_, r)| proc_pid(&r.name).is_some_and(|(pid, _)| pids.contains(&pid)))
            .map(|(id, r)| (id, r.clone()))
            .collect()
    }

    pub fn load(ctx: &LoadCtx<'_>) -> Result<ProcFiles, Error> {
        let pids: HashSet<u32> = ctx.procs.iter().map(|p| p.pid as u32).collect();
        let used: HashSet<u32> = ctx
            .live()
            .flat_map(|(_, fds)| fds.iter())
            .filter(|f| f.r#type == fd_types::REG && !ctx.inherited.contains(f.id))
            .map(|f| f.id)
            .collect();
        let entries = ctx.files.entries()?;
        let regs = entries
            .iter()
            .filter(|f| f.r#type == fd_types::REG && used.contains(&f.id))
            .filter_map(|f| Some((f.id, f.reg.as_deref()?)));
        Ok(ProcFiles {
            regs: Self::pick(regs, &pids),
        })
    }
}

pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(ProcFiles::load(ctx)?))
}

impl RestoreKind for ProcFiles {
    fn name(&self) -> &'static str {
        "files of the tree's /proc entries"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(OpenProcFiles {
            regs: self.regs.clone(),
            fds: Default::default(),
        }))
    }
}

/// The /proc files, opened once the tree exists.
pub struct OpenProcFiles {
    regs: BTreeMap<u32, RegFileEntry>,
    fds: crate::files::fdpass::MadeFds,
}

impl OpenKind for OpenProcFiles {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn late(&self, id: u32) -> bool {
        self.regs.contains_key(&id)
    }

    fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        for (&id, reg) in &self.regs {
            let Some((pid, tail)) = proc_pid(&reg.name) else {
                continue;
            };
            let host = host_pid(pid).ok_or_else(|| Error::Restore {
                pid: pid as i32,
                what: format!("file {id} ({}) names it, but it was not restored", reg.name),
            })?;
            let mut at = reg.clone();
            // In the tree's own mount namespace, through its own proc (a
            // file of another proc would be another inode); else at the
            // host pid in crust's.
            let own = std::path::Path::new(&reg.name);
            at.name = match crate::util::view::host_path(own) {
                Some(p) if p.as_path() != own && p.exists() => p.to_string_lossy().into_owned(),
                _ => format!("/proc/{host}{tail}"),
            };
            let fd = super::regshare::open_desc(&at)
                .map_err(sys_err(me, format!("open {} for file {id}", at.name)))?;
            debug!("file {id} ({}): opened as {}", reg.name, at.name);
            self.fds.insert(id, fd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_proc_entries() {
        assert_eq!(proc_pid("/proc/67/stat"), Some((67, "/stat")));
        assert_eq!(proc_pid("/proc/67"), Some((67, "")));
        assert_eq!(proc_pid("/proc/66/fdinfo/4"), Some((66, "/fdinfo/4")));
        assert_eq!(proc_pid("/proc/self/stat"), None);
        assert_eq!(proc_pid("/proc/sys/fs/nr_open"), None);
        assert_eq!(proc_pid("/proc/"), None);
        assert_eq!(proc_pid("/tmp/proc/1"), None);
    }

    #[test]
    fn only_entries_of_the_tree_are_picked() {
        let reg = |name: &str| RegFileEntry {
            name: name.into(),
            ..Default::default()
        };
        let (a, b, c) = (
            reg("/proc/10/stat"),
            reg("/proc/99/stat"),
            reg("/etc/hosts"),
        );
        let pids: HashSet<u32> = [10, 11].into_iter().collect();
        let got = ProcFiles::pick([(1, &a), (2, &b), (3, &c)].into_iter(), &pids);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1]);
    }
}
