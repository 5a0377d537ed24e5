//! Fds on namespaces (nsfs: `/proc/PID/ns/net` opened, a namespace
//! bind-mounted somewhere), as CRIU 4.2's NS entries of files.img: the
//! namespace's id (the numbering of `ids-N.img`), its CLONE_NEW* flag and
//! the file's flags.
//!
//! Dump: an fd whose /proc link is `KIND:[INO]` (`net:[4026531840]`). Its
//! namespace must be one the images name: crust's own or one of the tree's
//! (the dump gives the table, [`NsfileDump::set_known`]); any other is
//! refused, as in CRIU (it would not exist at restore).
//!
//! Restore: the namespace is opened once the tree exists, from a process
//! of the tree that is in it (`/proc/HOST/ns/KIND`), as a late
//! description: a namespace the restore creates (a new pid or IPC
//! namespace) only exists then.

use crate::files::classify::Target;
use crate::files::fdpass::MadeFds;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::core::TaskKobjIdsEntry;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::ns::NsFileEntry;
use log::debug;
use std::collections::BTreeMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// One namespace the images name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownNs {
    /// Its link name in /proc/PID/ns ("net").
    pub name: &'static str,
    pub ino: u64,
    /// Its id in the images.
    pub id: u32,
    /// Its CLONE_NEW* flag.
    pub cflag: u32,
}

/// The kinds of namespace: link name, CLONE_NEW* flag, and the field of
/// an ids entry that holds a process's namespace of that kind.
type IdOf = fn(&TaskKobjIdsEntry) -> Option<u32>;
const KINDS: [(&str, i32, IdOf); 8] = [
    ("pid", libc::CLONE_NEWPID, |e| e.pid_ns_id),
    ("net", libc::CLONE_NEWNET, |e| e.net_ns_id),
    ("ipc", libc::CLONE_NEWIPC, |e| e.ipc_ns_id),
    ("uts", libc::CLONE_NEWUTS, |e| e.uts_ns_id),
    ("time", libc::CLONE_NEWTIME, |e| e.time_ns_id),
    ("mnt", libc::CLONE_NEWNS, |e| e.mnt_ns_id),
    ("user", libc::CLONE_NEWUSER, |e| e.user_ns_id),
    ("cgroup", libc::CLONE_NEWCGROUP, |e| e.cgroup_ns_id),
];

/// (kind name, inode) of an nsfs fd link `net:[4026531840]`.
pub(crate) fn ns_link(link: &str) -> Option<(&'static str, u64)> {
    let (name, rest) = link.split_once(":[")?;
    let ino = rest.strip_suffix(']')?.parse().ok()?;
    let kind = KINDS.iter().find(|(n, _, _)| *n == name)?;
    Some((kind.0, ino))
}

// ------------------------------------------------------------------- dump

/// The namespace fds seen while dumping a tree.
#[derive(Default)]
pub struct NsfileDump {
    known: Vec<KnownNs>,
    /// (pid, fd, files.img id) of each description seen.
    seen: Vec<(i32, i32, u32)>,
}

impl NsfileDump {
    /// The namespaces the images name (crust's and the tree's).
    pub fn set_known(&mut self, known: Vec<KnownNs>) {
        self.known = known;
    }

    fn known_fd(&self, pid: i32, fd: i32) -> Option<u32> {
        self.seen.iter().find_map(|&(opid, ofd, id)| {
            crust_sys::process::kcmp_file(pid, opid, fd, ofd)
                .unwrap_or(false)
                .then_some(id)
        })
    }
}

impl DumpKind for NsfileDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Special("special file") {
            return Ok(None);
        }
        let Some((name, ino)) = ns_link(f.target) else {
            return Ok(None);
        };
        let (pid, fd) = (f.pid, f.fd);
        let known = self.known_fd(pid, fd);
        let id = ids.id_for(known, |_, id| {
            let ns = self
                .known
                .iter()
                .find(|k| k.name == name && k.ino == ino)
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "process {pid} has fd {fd} on the {name} namespace {ino}, which is neither crust's nor one of the dumped tree's: it would not exist after a restore"
                    ))
                })?;
            debug!(
                "{pid}: fd {fd} is the {name} namespace {ino} (ns id {}, id {id})",
                ns.id
            );
            self.seen.push((pid, fd, id));
            Ok(Some(FileEntry {
                r#type: fd_types::NS,
                id,
                nsf: Some(Box::new(NsFileEntry {
                    id,
                    ns_id: ns.id,
                    ns_cflag: ns.cflag,
                    flags: f.flags(),
                    ..Default::default()
                })),
                ..Default::default()
            }))
        })?;
        Ok(Some((id, fd_types::NS)))
    }
}

// ---------------------------------------------------------------- restore

/// A namespace fd to open: from which process, which link, which flags.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    pid: u32,
    name: &'static str,
    flags: u32,
}

/// The namespace fds of an image set, by files.img id.
pub struct Nsfiles {
    sources: BTreeMap<u32, Source>,
}

/// O_LARGEFILE as the kernel reports it (the libc crate's is 0 on x86_64).
const O_LARGEFILE: u32 = 0o100000;
/// Flags an nsfs file can be opened with again.
const OPEN_FLAGS: u32 = (libc::O_ACCMODE | libc::O_NONBLOCK) as u32 | O_LARGEFILE;

/// Where to open the namespace of entry `e`: a process of the tree
/// (`procs`: pid and ids of every live process) in it.
fn source_of(e: &NsFileEntry, procs: &[(u32, &TaskKobjIdsEntry)]) -> Result<Source, String> {
    let Some(&(name, _, id_of)) = KINDS.iter().find(|(_, f, _)| *f as u32 == e.ns_cflag) else {
        return Err(format!(
            "namespace flag {:#x} is no CLONE_NEW* flag",
            e.ns_cflag
        ));
    };
    if e.flags & !(OPEN_FLAGS | libc::O_CLOEXEC as u32) != 0 {
        return Err(format!("flags {:#o} cannot be restored", e.flags));
    }
    let pid = procs
        .iter()
        .find(|(_, ids)| id_of(ids) == Some(e.ns_id))
        .map(|(pid, _)| *pid)
        .ok_or_else(|| {
            format!(
                "no process of the tree is in its {name} namespace {} (ids-N.img)",
                e.ns_id
            )
        })?;
    Ok(Source {
        pid,
        name,
        flags: e.flags & OPEN_FLAGS,
    })
}

pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let procs: Vec<(u32, &TaskKobjIdsEntry)> = ctx
        .procs
        .iter()
        .filter_map(|p| Some((p.pid as u32, p.ids?)))
        .collect();
    let entries = crate::util::load_kind(
        ctx.dir,
        ctx.files.entries()?,
        fd_types::NS,
        "namespace file",
        |f| f.nsf.map(|e| (e.id, e)),
        |e| source_of(e, &procs).map(|_| ()),
    )?;
    let mut sources = BTreeMap::new();
    for (id, e) in &entries {
        let s = source_of(e, &procs).map_err(|why| Error::BadImage {
            dir: ctx.dir.to_path_buf(),
            why: format!("namespace file {id}: {why}"),
        })?;
        sources.insert(*id, s);
    }
    if let Some(id) = ctx
        .ids_of_type(fd_types::NS)
        .into_iter()
        .find(|id| !sources.contains_key(id))
    {
        return Err(Error::BadImage {
            dir: ctx.dir.to_path_buf(),
            why: format!("an fd refers to namespace file {id}, which files.img does not have"),
        });
    }
    Ok(Box::new(Nsfiles { sources }))
}

impl RestoreKind for Nsfiles {
    fn name(&self) -> &'static str {
        "namespace files"
    }

    fn make(&mut self, _made: &crate::files::kind::Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(OpenNsfiles {
            sources: self.sources.clone(),
            fds: MadeFds::default(),
        }))
    }
}

/// The namespace fds, opened once the tree exists.
pub struct OpenNsfiles {
    sources: BTreeMap<u32, Source>,
    fds: MadeFds,
}

impl OpenKind for OpenNsfiles {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::NS).then_some("namespace file")
    }

    fn late(&self, id: u32) -> bool {
        self.sources.contains_key(&id)
    }

    fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt;
        for (&id, s) in &self.sources {
            let host = host_pid(s.pid).ok_or_else(|| Error::Restore {
                pid: s.pid as i32,
                what: format!("namespace file {id} is opened from it, but it was not restored"),
            })?;
            let path = format!("/proc/{host}/ns/{}", s.name);
            let acc = s.flags & libc::O_ACCMODE as u32;
            let file = std::fs::OpenOptions::new()
                .read(acc != libc::O_WRONLY as u32)
                .write(acc != libc::O_RDONLY as u32)
                .custom_flags(
                    ((s.flags & !(libc::O_ACCMODE as u32)) | libc::O_CLOEXEC as u32) as i32,
                )
                .open(Path::new(&path))
                .map_err(sys_err(
                    host,
                    format!("open {path} for namespace file {id}"),
                ))?;
            self.fds.insert(id, OwnedFd::from(file));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_of_namespaces() {
        assert_eq!(ns_link("net:[4026531840]"), Some(("net", 4026531840)));
        assert_eq!(ns_link("mnt:[7]"), Some(("mnt", 7)));
        assert_eq!(ns_link("pipe:[7]"), None);
        assert_eq!(ns_link("net:[x]"), None);
        assert_eq!(ns_link("/proc/self/ns/net"), None);
    }

    #[test]
    fn entries_are_opened_from_a_process_in_the_namespace() {
        let a = TaskKobjIdsEntry {
            net_ns_id: Some(2),
            ipc_ns_id: Some(3),
            ..Default::default()
        };
        let b = TaskKobjIdsEntry {
            net_ns_id: Some(2),
            ipc_ns_id: Some(9),
            ..Default::default()
        };
        let procs = [(10, &a), (11, &b)];
        let e = |ns_id, cflag: i32, flags: i32| NsFileEntry {
            id: 1,
            ns_id,
            ns_cflag: cflag as u32,
            flags: flags as u32,
            ..Default::default()
        };
        let s = source_of(&e(9, libc::CLONE_NEWIPC, libc::O_RDONLY), &procs).expect("ipc 9");
        assert_eq!((s.pid, s.name), (11, "ipc"));
        let s = source_of(&e(2, libc::CLONE_NEWNET, O_LARGEFILE as i32), &procs).expect("net 2");
        assert_eq!((s.pid, s.name), (10, "net"));
        // A namespace no process is in, a flag that names no kind, flags
        // an open cannot give.
        assert!(source_of(&e(5, libc::CLONE_NEWNET, 0), &procs).is_err());
        assert!(source_of(&e(2, libc::SIGCHLD, 0), &procs).is_err());
        assert!(source_of(&e(2, libc::CLONE_NEWNET, libc::O_CREAT), &procs).is_err());
    }
}
