//! Dump of one fd: what its /proc link says it is ([`classify`], pure),
//! then the kind that records it, asked for the files.img id of the
//! description (an fd seen before on it, or a new entry).

use super::*;

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
    if let Some(ino) = unix::socket_inode(link) {
        return Target::Socket(ino);
    }
    if link.starts_with('/') {
        return Target::Path;
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

/// One fd of a process being dumped.
pub(super) struct Fd<'a> {
    pub pid: i32,
    pub fd: i32,
    pub target: &'a str,
    pub info: &'a crust_proc::FdInfo,
}

impl Fd<'_> {
    fn unsupported(&self, kind: &str) -> Error {
        Error::unsupported(format!(
            "process {} has fd {} open on a {kind} ({}), which crust cannot dump yet",
            self.pid, self.fd, self.target
        ))
    }
}

impl FileTable {
    /// The fds of process `pid` (only those of `only` when given).
    pub(super) fn collect_fds_of(
        &mut self,
        proc: &ProcRoot,
        pid: i32,
        only: Option<&[i32]>,
    ) -> Result<Vec<FdinfoEntry>, Error> {
        let mut fds = crust_proc::fds(proc, pid).map_err(proc_err(pid))?;
        if let Some(only) = only {
            fds.retain(|(fd, _)| only.contains(fd));
        }
        let mut out = Vec::with_capacity(fds.len());
        // fd -> files.img id of the fds seen so far, to find shared open
        // file descriptions.
        let mut seen: Vec<(i32, String, u32)> = Vec::new();
        for (fd, target) in fds {
            let info = crust_proc::fdinfo(proc, pid, fd).map_err(proc_err(pid))?;
            let f = Fd {
                pid,
                fd,
                target: &target,
                info: &info,
            };
            let (id, ty) = match classify(&target) {
                Target::Pipe(ino) => (
                    self.pipe_id(pid, fd, pipes::Kind::Pipe, ino, info.flags, None)?,
                    fd_types::PIPE,
                ),
                Target::Event(kind) => (self.event_id(&f, kind)?, kind.fd_type()),
                Target::Socket(ino) => self.socket_id(&f, ino)?,
                Target::Special(kind) => return Err(f.unsupported(kind)),
                Target::Path => self.path_id(proc, &f, &mut seen)?,
            };
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

    fn event_id(&mut self, f: &Fd<'_>, kind: events::Kind) -> Result<u32, Error> {
        let (pid, fd) = (f.pid, f.fd);
        let known = self.events.known(pid, fd, kind);
        self.id_for(known, |t, id| {
            let e = events::entry(pid, fd, kind, id, f.info)?;
            t.events.add(pid, fd, kind, id);
            Ok(Some(e))
        })
    }

    /// A socket: its family (SO_DOMAIN of a copy of it) says which kind
    /// records it; that copy serves the kind.
    fn socket_id(&mut self, f: &Fd<'_>, ino: u32) -> Result<(u32, i32), Error> {
        let (pid, fd, flags) = (f.pid, f.fd, f.info.flags);
        let sock = crate::net::sock::take_fd(pid, fd)?;
        let domain = su::getsockopt_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(sys_err(pid, format!("SO_DOMAIN of fd {fd}")))?;
        match domain {
            libc::AF_INET | libc::AF_INET6 => {
                let known = self.inet.known(ino);
                let id = self.id_for(known, |t, id| {
                    t.inet.add(pid, fd, sock, ino, flags, id).map(|_| None)
                })?;
                Ok((id, fd_types::INETSK))
            }
            libc::AF_PACKET => {
                let known = self.packets.known(ino);
                let id = self.id_for(known, |t, id| {
                    t.packets.add(pid, fd, sock, ino, flags, id).map(Some)
                })?;
                Ok((id, fd_types::PACKETSK))
            }
            libc::AF_NETLINK => {
                let known = self.netlinks.known(ino);
                let id = self.id_for(known, |t, id| {
                    t.netlinks.add(pid, fd, sock, ino, flags, id).map(Some)
                })?;
                Ok((id, fd_types::NETLINKSK))
            }
            libc::AF_UNIX => {
                let known = self.unix.known(ino);
                let id = self.id_for(known, |t, id| {
                    t.unix.add(pid, fd, sock, ino, flags, id).map(|_| None)
                })?;
                Ok((id, fd_types::UNIXSK))
            }
            _ => Err(Error::unsupported(format!(
                "process {pid} has fd {fd} on a socket of address family {domain} ({}), which crust cannot dump yet",
                f.target
            ))),
        }
    }

    /// An fd on a path: a deleted file, a memfd, a pty, a FIFO, or a
    /// regular file (shared with an earlier fd of `seen` if kcmp says so).
    fn path_id(
        &mut self,
        proc: &ProcRoot,
        f: &Fd<'_>,
        seen: &mut Vec<(i32, String, u32)>,
    ) -> Result<(u32, i32), Error> {
        let (pid, fd, target, info) = (f.pid, f.fd, f.target, f.info);
        crate::ns::sysvipc::refuse_mqueue(pid, fd, target)?;
        let flags = info.flags & !O_CLOEXEC;
        if ghost::is_deleted(target) {
            let known = self.ghosts.known(pid, fd);
            let id = self.id_for(known, |t, id| {
                t.ghosts
                    .add(pid, fd, target, flags, info.pos, id, &mut t.next_id)
                    .map(Some)
            })?;
            return Ok((id, fd_types::REG));
        }
        if memfd::name_of(target).is_some() {
            let known = self.memfds.known(pid, fd);
            let id = self.id_for(known, |t, id| {
                t.memfds
                    .add(pid, fd, target, flags, info.pos, id, &mut t.memfd_inodes)
                    .map(Some)
            })?;
            return Ok((id, fd_types::MEMFD));
        }
        if let Some(end) = self.ptys.end_of(proc, pid, target, info)? {
            let known = self.ptys.known(pid, fd);
            let id = self.id_for(known, |t, id| t.ptys.add(pid, fd, end, flags, id).map(Some))?;
            return Ok((id, fd_types::TTY));
        }
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
        if ft.is_fifo() {
            let id = self.pipe_id(
                pid,
                fd,
                pipes::Kind::Fifo,
                md.ino(),
                info.flags,
                Some(&path),
            )?;
            return Ok((id, fd_types::FIFO));
        }
        if ft.is_socket() || ft.is_block_device() {
            return Err(f.unsupported("special file"));
        }
        let shared_with = seen.iter().find_map(|(ofd, opath, oid)| {
            (opath == target && crust_sys::process::kcmp_file(pid, pid, *ofd, fd).unwrap_or(false))
                .then_some(*oid)
        });
        let id = match shared_with {
            Some(id) => id,
            None => {
                let id = self.new_id();
                let leased = crate::files::filelocks::write_leased(pid, fd);
                let reg = self.reg_entry(id, &path, info.flags & !O_CLOEXEC, info.pos, !leased)?;
                self.push_reg(reg);
                id
            }
        };
        seen.push((fd, target.to_string(), id));
        Ok((id, fd_types::REG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            classify("anon_inode:bpf-map"),
            Target::Special("anonymous inode")
        );
        assert_eq!(
            classify("net:[4026531840]"),
            Target::Special("special file")
        );
    }
}
