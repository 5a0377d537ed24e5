//! Regular files whose one open description several processes hold (a
//! file opened once and inherited by children: the stdout of a parent and
//! its children to one log file).
//!
//! The dump gives such a description one files.img id, named by the fd
//! tables of every process that holds it (kcmp finds them; CRIU's images
//! do the same). A file opened by path inside each task would come back as
//! one description per process: offsets that no longer move together,
//! writers without O_APPEND that overwrite each other. So at restore crust
//! opens such a file itself, once, with its flags and offset, and every
//! task that holds it gets that description over SCM_RIGHTS, like the other
//! kinds. A file only one process holds is still opened inside the task
//! (`RestoreFiles::open_fds`), as are terminals (a shell job's terminal is
//! replaced by crust's own) and files the ghost kind makes (deleted files).
//!
//! Paths are absolute and files are opened before a task changes its root,
//! so crust opening them finds the same files the tasks would. Files of the
//! tree's own /proc entries are the `procfile` kind's (opened late).

use crate::files::kind::{LoadCtx, Made, MadeOf, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::fd_types;
use crust_images::proto::regfile::RegFileEntry;
use log::debug;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

/// The regular files held by more than one process, by files.img id.
#[derive(Debug, Default)]
pub struct SharedRegs {
    regs: BTreeMap<u32, RegFileEntry>,
    /// Those on a mount only another mount namespace of the tree has:
    /// opened late, through the root of a holder (its pid in the images)
    /// in that namespace (see [`super::regmnt`]).
    late: BTreeMap<u32, (i32, RegFileEntry)>,
}

/// The files.img ids of REG fds that the fd tables of more than one
/// process name (`tables`: each process's REG fd ids).
fn held_by_several<'a>(tables: impl Iterator<Item = Vec<u32>> + 'a) -> HashSet<u32> {
    let mut holders: HashMap<u32, usize> = HashMap::new();
    for mut ids in tables {
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            *holders.entry(id).or_default() += 1;
        }
    }
    holders
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect()
}

impl SharedRegs {
    pub fn load(ctx: &LoadCtx<'_>) -> Result<SharedRegs, Error> {
        let tables = ctx.live().map(|(_, fds)| {
            fds.iter()
                .filter(|f| f.r#type == fd_types::REG)
                .map(|f| f.id)
                .collect::<Vec<u32>>()
        });
        let mut several = held_by_several(tables);
        // Opened in another mount namespace than their holder's.
        several.extend(super::regmnt::foreign_files(ctx)?);
        // On a mount only another namespace has, held only by processes
        // of the root's namespace (the process to open it through is not
        // a holder): crust opens it there.
        let elsewhere = super::regmnt::in_other_ns(ctx)?;
        several.extend(elsewhere.iter().filter_map(|(&id, &host)| {
            let holds = ctx
                .live()
                .any(|(p, fds)| p == host && fds.iter().any(|f| f.id == id));
            (!holds).then_some(id)
        }));
        let mut out = SharedRegs::default();
        if several.is_empty() {
            return Ok(out);
        }
        let ghosted = ctx.files.ghosted()?;
        let pids: HashSet<u32> = ctx.procs.iter().map(|p| p.pid as u32).collect();
        for f in ctx.files.entries()? {
            let Some(reg) = f.reg.as_ref() else { continue };
            if f.r#type != fd_types::REG
                || !several.contains(&f.id)
                || ghosted.contains(&f.id)
                || ctx.inherited.contains(f.id)
                || super::is_terminal_path(&reg.name)
                || super::classify::proc_pid(&reg.name).is_some_and(|(p, _)| pids.contains(&p))
            {
                continue;
            }
            if !reg.name.starts_with('/') || reg.name.contains('\0') {
                return Err(Error::BadImage {
                    dir: ctx.dir.to_path_buf(),
                    why: format!("file {} has the bad path {:?}", f.id, reg.name),
                });
            }
            match elsewhere.get(&f.id) {
                Some(&pid) => out
                    .late
                    .insert(f.id, (pid, RegFileEntry::clone(reg)))
                    .map(drop),
                None => out.regs.insert(f.id, RegFileEntry::clone(reg)).map(drop),
            };
        }
        Ok(out)
    }

    /// Open each description once, in crust.
    fn open(&self) -> Result<crate::files::fdpass::MadeFds, Error> {
        let me = crust_sys::process::getpid();
        let mut out = crate::files::fdpass::MadeFds::default();
        for (id, reg) in &self.regs {
            // The path through the tree's root when it has a mount
            // namespace of its own (see `crate::util::view`).
            let seen = crate::util::view::host_path(std::path::Path::new(&reg.name));
            let fd = match seen {
                Some(p) if p.as_os_str() != reg.name.as_str() => open_desc(&RegFileEntry {
                    name: p.to_string_lossy().into_owned(),
                    ..reg.clone()
                }),
                _ => open_desc(reg),
            }
            .map_err(sys_err(me, format!("open {} for file {id}", reg.name)))?;
            debug!(
                "file {id} ({}) is held by several processes: one description",
                reg.name
            );
            out.insert(*id, fd);
        }
        Ok(out)
    }
}

/// Open one description as recorded: flags (less those that create or
/// truncate) and offset.
pub(super) fn open_desc(reg: &RegFileEntry) -> std::io::Result<OwnedFd> {
    let flags = super::reopen_flags(reg.flags) as i32;
    let acc = flags & libc::O_ACCMODE;
    let mut o = OpenOptions::new();
    if flags & libc::O_PATH == 0 {
        o.read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR);
    } else {
        // O_PATH ignores the access mode; std wants one all the same.
        o.read(true);
    }
    let rest =
        flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
    let mut f = o
        .custom_flags(rest | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&reg.name)?;
    if reg.pos != 0 && flags & libc::O_PATH == 0 {
        f.seek(SeekFrom::Start(reg.pos))?;
    }
    Ok(OwnedFd::from(f))
}

/// Shared regular files as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(SharedRegs::load(ctx)?))
}

impl RestoreKind for SharedRegs {
    fn name(&self) -> &'static str {
        "regular files held by several processes"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        let made = MadeOf {
            fds: self.open()?,
            what: "shared regular file",
            types: &[],
        };
        if self.late.is_empty() {
            return Ok(Box::new(made));
        }
        Ok(Box::new(OpenShared {
            made,
            late: std::mem::take(&mut self.late),
        }))
    }
}

/// The shared regular files made, some of them late (see
/// [`SharedRegs::late`]).
struct OpenShared {
    made: MadeOf,
    late: BTreeMap<u32, (i32, RegFileEntry)>,
}

impl OpenKind for OpenShared {
    fn fd(&self, id: u32) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.made.fd(id)
    }

    fn late(&self, id: u32) -> bool {
        self.late.contains_key(&id)
    }

    fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        for (&id, (pid, reg)) in &self.late {
            let host = u32::try_from(*pid)
                .ok()
                .and_then(host_pid)
                .ok_or_else(|| Error::Restore {
                    pid: *pid,
                    what: format!(
                        "file {id} ({}) is opened through its mount namespace, but it was not restored",
                        reg.name
                    ),
                })?;
            let path = crate::util::view::join(
                std::path::Path::new(&format!("/proc/{host}/root")),
                std::path::Path::new(&reg.name),
            );
            let fd = open_desc(&RegFileEntry {
                name: path.to_string_lossy().into_owned(),
                ..reg.clone()
            })
            .map_err(sys_err(
                host,
                format!("open {} for file {id}", path.display()),
            ))?;
            debug!(
                "file {id} ({}) is held by several processes: one description, opened in the mount namespace of process {host}",
                reg.name
            );
            self.made.fds.insert(id, fd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_several_tables_are_shared() {
        let tables = vec![vec![1, 2, 2, 3], vec![2, 4], vec![3], vec![5, 5]];
        let mut got: Vec<u32> = held_by_several(tables.into_iter()).into_iter().collect();
        got.sort_unstable();
        assert_eq!(got, vec![2, 3]);
    }
}
