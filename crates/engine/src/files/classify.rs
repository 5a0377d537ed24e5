//! Dump of one fd: what its /proc link says it is ([`classify`], pure),
//! then the kind that records it, asked for the files.img id of the
//! description (an fd seen before on it, or a new entry).

use super::*;
use crate::files::kind::dump::{Carried, DumpFd, Ids};

/// What an fd is, by its /proc/PID/fd link alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An unnamed pipe (`pipe:[INO]`).
    Pipe(u64),
    /// An event file (`anon_inode:[eventfd]`...).
    Event(events::Kind),
    /// A socket (`socket:[INO]`): its family says which kind.
    Socket(u32),
    /// Something crust cannot dump, named for the error.
    Special(&'static str),
    /// A path: a regular file, directory, device, FIFO, memfd, pty, or a
    /// deleted file (told apart with what stat and fdinfo say).
    Path,
}

/// Classify an fd by its /proc link.
pub(crate) fn classify(link: &str) -> Target {
    if let Some(ino) = pipes::pipe_inode(link) {
        return Target::Pipe(ino);
    }
    if let Some(kind) = events::kind_of(link) {
        return Target::Event(kind);
    }
    if let Some(ino) = socket_inode(link) {
        return Target::Socket(ino);
    }
    if link.starts_with('/') {
        return Target::Path;
    }
    if link == IO_URING_LINK {
        return Target::Special(IO_URING);
    }
    Target::Special(if link.starts_with("pipe:") {
        "pipe"
    } else if link.starts_with("socket:") {
        "socket"
    } else if link.starts_with("anon_inode:") {
        "anonymous inode"
    } else {
        "special file"
    })
}

/// The /proc/PID/fd link of an io_uring instance.
pub(crate) const IO_URING_LINK: &str = "anon_inode:[io_uring]";
/// [`Target::Special`] of an io_uring fd.
const IO_URING: &str = "io_uring instance";

/// Why a process with an io_uring is refused: `who` is "process PID
/// (COMM)", `fd` its fd on the instance.
pub(crate) fn io_uring_refusal(who: &str, fd: i32) -> Error {
    Error::unsupported(format!(
        "{who} has fd {fd} open on an io_uring instance ({IO_URING_LINK}): its requests run \
         in kernel worker threads that ptrace cannot stop and crust cannot save, so crust \
         cannot dump it (the tree was not touched)"
    ))
}

/// Why a process with a kernel io worker thread (`iou-wrk-N`,
/// `iou-sqp-N`: PF_IO_WORKER) is refused.
pub(crate) fn io_worker_refusal(who: &str, tid: i32, comm: &str) -> Error {
    Error::unsupported(format!(
        "{who} has the kernel io worker thread {tid} ({comm}) of an io_uring: such a thread \
         never stops for ptrace and its work cannot be saved, so crust cannot dump it (the \
         tree was not touched)"
    ))
}

/// The pid of a path `/proc/PID` or `/proc/PID/...`, and the rest of it.
pub(crate) fn proc_pid(path: &str) -> Option<(u32, &str)> {
    let rest = path.strip_prefix("/proc/")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (num, tail) = rest.split_at(end);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, tail))
}

/// The inode of a `socket:[INO]` fd link.
pub(crate) fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// POSIX message queues are not dumped: refuse an fd on one.
fn refuse_mqueue(pid: i32, fd: i32, target: &str) -> Result<(), Error> {
    use crust_sys::ipc;
    let path = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    if ipc::fs_magic(&path).ok() == Some(ipc::MQUEUE_MAGIC) {
        return Err(Error::unsupported(format!(
            "process {pid} has fd {fd} open on the POSIX message queue {target}, which crust cannot dump"
        )));
    }
    Ok(())
}

/// The error for an fd crust cannot dump.
fn unsupported(f: &DumpFd<'_>, kind: &str) -> Error {
    Error::unsupported(format!(
        "process {} has fd {} open on a {kind} ({}), which crust cannot dump yet",
        f.pid, f.fd, f.target
    ))
}

impl FileTable {
    /// The fds of process `pid` (only those of `only` when given).
    pub(super) fn collect_fds_of(
        &mut self,
        proc: &ProcRoot,
        pid: i32,
        only: Option<&[Carried]>,
    ) -> Result<Vec<FdinfoEntry>, Error> {
        let mut fds = crust_proc::fds(proc, pid).map_err(proc_err(pid))?;
        if let Some(only) = only {
            fds.retain(|(fd, _)| only.iter().any(|c| c.fd == *fd));
        }
        let mut out = Vec::with_capacity(fds.len());
        for (fd, target) in fds {
            let info = crust_proc::fdinfo(proc, pid, fd).map_err(proc_err(pid))?;
            if only.is_none() && info.get("lock").is_some() {
                self.locked.push(fd);
            }
            let mut f = DumpFd {
                proc,
                pid,
                fd,
                target: &target,
                info: &info,
                class: classify(&target),
                sock: None,
                path_reg: None,
                carried: only.and_then(|c| c.iter().find(|c| c.fd == fd)).copied(),
            };
            let (id, ty) = self.dump_fd(&mut f)?;
            debug!("{pid}: fd {fd} -> {target} (id {id}, type {ty})");
            out.push(FdinfoEntry {
                id,
                flags: if info.flags & O_CLOEXEC != 0 {
                    libc::FD_CLOEXEC as u32
                } else {
                    0
                },
                r#type: ty,
                fd: fd as u32,
                ..Default::default()
            });
        }
        for e in &out {
            self.owners.note(pid, e.fd as i32, e.id)?;
        }
        Ok(out)
    }

    /// The files.img id and fd type of one fd: the first kind that claims
    /// it records it; a path no kind claims is a regular file (or a
    /// directory, a device...).
    fn dump_fd(&mut self, f: &mut DumpFd<'_>) -> Result<(u32, i32), Error> {
        let (pid, fd) = (f.pid, f.fd);
        let mut domain = None;
        match f.class {
            // A kind may know it (pidfds); if none does, it is refused below.
            Target::Special(_) => {}
            Target::Socket(_) => {
                // One copy of the socket (the same socket) serves its family.
                let sock = fdpass::take_fd(pid, fd)?;
                let d = su::getsockopt_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
                    .map_err(sys_err(pid, format!("SO_DOMAIN of fd {fd}")))?;
                domain = Some(d);
                f.sock = Some((d, sock));
            }
            Target::Path => refuse_mqueue(pid, fd, f.target)?,
            Target::Pipe(_) | Target::Event(_) => {}
        }
        let mut ids = Ids {
            next_id: &mut self.next_id,
            files: &mut self.files,
            memfd_inodes: &mut self.memfd_inodes,
        };
        for k in self.kinds.iter_mut() {
            if let Some(got) = k.claim(f, &mut ids)? {
                return Ok(got);
            }
        }
        match (f.class, domain) {
            (Target::Path, _) => self.path_id(f),
            (Target::Special(IO_URING), _) => {
                Err(io_uring_refusal(&format!("process {pid}"), fd))
            }
            (Target::Special(kind), _) => Err(unsupported(f, kind)),
            (_, Some(domain)) => Err(Error::unsupported(format!(
                "process {pid} has fd {fd} on a socket of address family {domain} ({}), which crust cannot dump yet",
                f.target
            ))),
            _ => Err(unsupported(f, "special file")),
        }
    }

    /// An fd on a path no kind claimed: a regular file, a directory or a
    /// device. An fd on the same open file description as one seen before,
    /// in this process or another of the tree (kcmp), gets its id: the
    /// restore makes them one description again.
    fn path_id(&mut self, f: &DumpFd<'_>) -> Result<(u32, i32), Error> {
        let (pid, fd, target, info) = (f.pid, f.fd, f.target, f.info);
        if is_terminal_path(target) && !self.shell_job {
            return Err(Error::unsupported(format!(
                "process {pid} has fd {fd} open on the terminal {target}; dump it with --shell-job (-j) and restore with --shell-job too"
            )));
        }
        let path = PathBuf::from(target);
        let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .map_err(sys_err(pid, format!("stat fd {fd}")))?;
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() || ft.is_block_device() {
            return Err(unsupported(f, "special file"));
        }
        let shared_with = self.paths_seen.iter().find_map(|(opid, ofd, opath, oid)| {
            (opath == target
                && crust_sys::process::kcmp_file(*opid, pid, *ofd, fd).unwrap_or(false))
            .then_some(*oid)
        });
        let id = match shared_with {
            Some(id) => id,
            None => {
                let id = self.new_id();
                // On a mount only another namespace of the tree has.
                let away = super::regmnt::away_view(pid, info.mnt_id);
                crate::util::overmount::check_file(pid, fd, info.mnt_id, target)?;
                let leased = crate::files::filelocks::write_leased(pid, fd);
                let mut reg =
                    self.reg_entry(id, &path, info.flags & !O_CLOEXEC, info.pos, !leased)?;
                drop(away);
                // The mount it is on, when the tree has mount namespaces.
                reg.mnt_id = mnt_id_of(pid, info.mnt_id);
                self.push_reg(reg);
                id
            }
        };
        self.paths_seen.push((pid, fd, target.to_string(), id));
        Ok((id, fd_types::REG))
    }
}

/// The `mnt_id` a file of process `pid` on mount `mnt_id` records: the
/// mount, when the process is not in crust's mount namespace (CRIU's
/// field; the restore tells by it in which mount namespace of the tree the
/// file was opened: `files::regmnt`).
pub(crate) fn mnt_id_of(pid: i32, mnt_id: i32) -> Option<i32> {
    let ino = |p: String| {
        std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let theirs = ino(format!("/proc/{pid}/ns/mnt"))?;
    (mnt_id > 0 && ino("/proc/self/ns/mnt".into()) != Some(theirs)).then_some(mnt_id)
}

/// The `mnt_id` the directory `which` (`cwd` or `root`) of process `pid`
/// records, as [`mnt_id_of`]: the mount its /proc link leads to.
pub(crate) fn dir_mnt_id(pid: i32, which: &str) -> Option<i32> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/{which}"))
        .ok()?;
    let id = crust_sys::mountfd::mnt_id(std::os::fd::AsFd::as_fd(&f)).ok()?;
    mnt_id_of(pid, i32::try_from(id).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::kind::dump::DumpKind;

    #[test]
    fn fd_links_are_classified() {
        assert_eq!(classify("pipe:[4242]"), Target::Pipe(4242));
        assert_eq!(classify("socket:[77]"), Target::Socket(77));
        assert_eq!(
            classify("anon_inode:[eventfd]"),
            Target::Event(events::Kind::Eventfd)
        );
        assert_eq!(classify("/etc/passwd"), Target::Path);
        assert_eq!(classify("/memfd:x (deleted)"), Target::Path);
        assert_eq!(classify("/dev/pts/3"), Target::Path);
        assert_eq!(classify("pipe:[oops]"), Target::Special("pipe"));
        assert_eq!(classify(IO_URING_LINK), Target::Special(IO_URING));
        assert_eq!(
            classify("anon_inode:bpf-map"),
            Target::Special("anonymous inode")
        );
        assert_eq!(
            classify("net:[4026531840]"),
            Target::Special("special file")
        );
    }

    /// Claims every unnamed pipe, with ids from the table.
    struct FakePipes(Vec<(i32, i32)>);

    impl DumpKind for FakePipes {
        fn claim(
            &mut self,
            f: &mut DumpFd<'_>,
            ids: &mut Ids<'_>,
        ) -> Result<Option<(u32, i32)>, Error> {
            let Target::Pipe(_) = f.class else {
                return Ok(None);
            };
            self.0.push((f.pid, f.fd));
            let id = ids.id_for(None, |_, id| {
                Ok(Some(FileEntry {
                    id,
                    r#type: fd_types::PIPE,
                    ..Default::default()
                }))
            })?;
            Ok(Some((id, fd_types::PIPE)))
        }
    }

    /// A kind the table was not given.
    struct NotListed;

    impl DumpKind for NotListed {
        fn claim(
            &mut self,
            _f: &mut DumpFd<'_>,
            _ids: &mut Ids<'_>,
        ) -> Result<Option<(u32, i32)>, Error> {
            Ok(None)
        }
    }

    #[test]
    fn the_table_asks_its_kinds_in_order() {
        let mut t = FileTable::new(false, vec![Box::new(FakePipes(Vec::new()))]);
        let proc = ProcRoot::default();
        let info = crust_proc::FdInfo::default();
        let fd = |t: &mut FileTable, n: i32, link: &str| {
            let mut f = DumpFd {
                proc: &proc,
                pid: 1,
                fd: n,
                target: link,
                info: &info,
                class: classify(link),
                sock: None,
                path_reg: None,
                carried: None,
            };
            t.dump_fd(&mut f)
        };
        assert_eq!(fd(&mut t, 3, "pipe:[9]").ok(), Some((1, fd_types::PIPE)));
        assert_eq!(fd(&mut t, 4, "pipe:[9]").ok(), Some((2, fd_types::PIPE)));
        // No kind claims it: refused, and no id is used.
        assert!(fd(&mut t, 5, "anon_inode:[eventfd]").is_err());
        assert!(fd(&mut t, 6, "anon_inode:bpf-prog").is_err());
        assert_eq!(t.next_id, 3);
        assert_eq!(t.files.len(), 2);
        let fake = t.kind::<FakePipes>().map(|k| k.0.clone());
        assert_eq!(fake, Some(vec![(1, 3), (1, 4)]));
        assert!(t.kind::<NotListed>().is_none());
    }
}
