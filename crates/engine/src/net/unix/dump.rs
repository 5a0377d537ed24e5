use super::*;

// ---------------------------------------------------------------- dump

/// One queued message.
struct Packet {
    /// files.img id of the socket it is queued on.
    id: u32,
    bytes: Vec<u8>,
    /// Copies of the fds it carries (SCM_RIGHTS), taken by peeking.
    fds: Vec<OwnedFd>,
    /// Their files.img ids, once known.
    rights: Option<Vec<u32>>,
    /// The socket, for messages.
    here: String,
    /// The sender (inet datagrams only).
    addr: Option<Vec<u8>>,
    /// Its credentials (SCM_CREDENTIALS), on a socket that passes them.
    ucred: Option<SkUcredEntry>,
}

/// SCM_RIGHTS, as `scm_entry.type` records it.
pub(super) const SCM_RIGHTS: u32 = libc::SCM_RIGHTS as u32;

/// The fd link of an epoll.
const EPOLL_LINK: &str = "anon_inode:[eventpoll]";

/// Unix sockets seen while dumping a tree.
#[derive(Default)]
pub struct UnixDump {
    pub ext_unix_sk: bool,
    /// The network namespace of the tree's sockets.
    pub netns: crate::net::SkNetns,
    diag: Option<HashMap<u32, DiagSock>>,
    /// files.img id by socket inode.
    ids: HashMap<u32, u32>,
    /// Where each socket was first seen (pid, fd), for messages.
    at: HashMap<u32, (i32, i32)>,
    entries: Vec<UnixSkEntry>,
    /// Queued messages, in queue order.
    packets: Vec<Packet>,
    /// Listeners with connections waiting to be accepted: listener inode
    /// -> inodes of the connecting sockets, in queue order.
    icons: HashMap<u32, Vec<u32>>,
    /// The processes (host pids) holding each socket, by inode.
    holders: HashMap<u32, Vec<i32>>,
}

impl UnixDump {
    /// The files.img id of socket `ino`, if seen before.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
    }

    /// Process `pid` holds socket `ino`.
    pub(super) fn held_by(&mut self, ino: u32, pid: i32) {
        let h = self.holders.entry(ino).or_default();
        if !h.contains(&pid) {
            h.push(pid);
        }
    }

    /// The process whose fd numbers name the files that the files carried
    /// by messages queued on socket `id` refer to (an epoll's targets),
    /// by the rule [`super::carried_names_in`] states, as a restore applies it.
    fn names_in(&self, id: u32) -> Option<i32> {
        let holders = |ino: u32| -> Vec<i32> {
            self.holders
                .get(&ino)
                .map(|h| h.iter().map(|p| crate::files::fown::ns_pid(*p)).collect())
                .unwrap_or_default()
        };
        let socks: Vec<(u32, u32, u32)> =
            self.entries.iter().map(|e| (e.id, e.ino, e.peer)).collect();
        let ns = super::carried_names_in(&socks, id, &holders)?;
        // Back to the host pid of that process.
        self.holders
            .values()
            .flatten()
            .copied()
            .find(|p| crate::files::fown::ns_pid(*p) == ns)
    }

    /// Record socket `ino` (fd `fd` of `pid`, status flags `flags`) as
    /// files.img id `id`.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        sock: OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<(), Error> {
        let sock = sock.as_fd();
        let opt = |o: i32| su::getsockopt_int(sock, libc::SOL_SOCKET, o);
        let all = self.netns.clone();
        let ns = all.of_socket(sock);
        let d = crate::net::netlink::diag_of(&mut self.diag, ino, || all.merged(diag_all))?
            .ok_or_else(|| {
                Error::unsupported(format!(
                    "process {pid} fd {fd}: unix socket {ino} is not in {} (crust dumps the sockets of the tree's network namespaces)",
                    all.describe()
                ))
            })?;
        let here = format!(
            "process {pid} fd {fd} (unix {} socket {ino})",
            type_name(d.ty)
        );
        let mut peer = d.peer;
        if d.state == ST_LISTEN && !d.icons.is_empty() {
            self.icons.insert(ino, d.icons.clone());
        }
        if d.state == ST_ESTABLISHED && d.peer == 0 {
            // A connection not accepted yet: its peer is an embryonic
            // socket without an inode, sitting in a listener's queue. As
            // CRIU does, it is recorded as connected to the listener.
            if let Some(l) = self.diag.as_ref().and_then(|m| {
                m.values()
                    .find(|l| l.state == ST_LISTEN && l.icons.contains(&ino))
            }) {
                if d.rqlen.1 != 0 {
                    return Err(Error::unsupported(format!(
                        "{here} waits in the accept queue of {} with {} byte(s) it sent not read yet; crust cannot dump data sent on a connection not yet accepted",
                        show_name(&l.name),
                        d.rqlen.1
                    )));
                }
                peer = l.ino;
            }
        }
        if !matches!(d.state, ST_ESTABLISHED | ST_CLOSE | ST_LISTEN) {
            return Err(Error::unsupported(format!(
                "{here} is in state {}, which crust cannot dump",
                d.state
            )));
        }
        let BoundFile {
            mut file_perms,
            mut deleted,
            name_dir,
        } = bound_file(sock, &d, &here)?;
        let BoundMount { mnt_id, away } = bound_mount(sock, &d, &here, pid)?;
        if let Some((perms, gone)) = away {
            file_perms = (!gone).then_some(perms);
            deleted = gone;
        }
        let opts = dump_opts(sock).map_err(sys_err(pid, format!("socket options of fd {fd}")))?;
        let peek_off = opt(libc::SO_PEEK_OFF).unwrap_or(-1);
        if peek_off >= 0 {
            return Err(Error::unsupported(format!(
                "{here} uses SO_PEEK_OFF (offset {peek_off}), which CRIU's image format cannot hold"
            )));
        }
        // A stream or seqpacket socket never connected has no queue (and
        // MSG_PEEK fails on it).
        let unconnected = !is_dgram(d.ty) && d.state == ST_CLOSE && d.peer == 0 && d.rqlen.0 == 0;
        if d.state != ST_LISTEN && !unconnected {
            let msgs = read_queue(sock, d.ty, d.shutdown)
                .map_err(|e| e.within(&here))?
                .into_iter()
                .map(|(bytes, fds, creds)| Packet {
                    id,
                    bytes,
                    rights: fds.is_empty().then(Vec::new),
                    fds,
                    here: here.clone(),
                    addr: None,
                    // The sender's pid and ids as the tree sees them.
                    ucred: creds.map(|(pid, uid, gid)| SkUcredEntry {
                        uid: crate::util::idmap::to_ns_uid(uid),
                        gid: crate::util::idmap::to_ns_gid(gid),
                        pid: crate::files::fown::ns_pid(pid) as u32,
                        ..Default::default()
                    }),
                });
            let before = self.packets.len();
            self.packets.extend(msgs);
            debug!("{here}: {} queued message(s)", self.packets.len() - before);
        }
        self.entries.push(UnixSkEntry {
            id,
            ino,
            r#type: d.ty,
            state: d.state,
            flags: flags & !(libc::O_CLOEXEC as u32),
            uflags: 0,
            backlog: d.rqlen.1,
            peer,
            fown: FownEntry::default(),
            opts,
            name: d.name.clone(),
            shutdown: (d.shutdown != 0).then_some(d.shutdown as i32 & 3),
            file_perms,
            deleted: deleted.then_some(true),
            name_dir,
            ns_id: Some(ns.id),
            mnt_id,
            ..Default::default()
        });
        self.ids.insert(ino, id);
        self.at.insert(ino, (pid, fd));
        Ok(())
    }

    /// Check every peer (in the tree, or outside with --ext-unix-sk) and
    /// return the UNIXSK entries of files.img; `next_id` gives ids to
    /// external peers.
    pub fn finish(&mut self, next_id: &mut u32) -> Result<Vec<FileEntry>, Error> {
        let mut ext: Vec<UnixSkEntry> = Vec::new();
        for (l, icons) in &self.icons {
            if let Some(c) = icons.iter().find(|c| !self.ids.contains_key(c)) {
                let (pid, fd) = self.at[l];
                return Err(Error::unsupported(format!(
                    "process {pid} fd {fd} (unix socket {l}) is listening with a connection from socket {c}, outside the dumped tree, waiting in its accept queue; crust cannot restore it"
                )));
            }
        }
        for e in &self.entries {
            if e.peer == 0 || self.ids.contains_key(&e.peer) {
                continue;
            }
            let (pid, fd) = self.at[&e.ino];
            let here = format!(
                "process {pid} fd {fd} (unix {} socket {})",
                type_name(e.r#type),
                e.ino
            );
            if !is_dgram(e.r#type) {
                return Err(Error::unsupported(format!(
                    "{here} is connected to socket {} outside the dumped tree; crust restores only datagram sockets with outside peers (--ext-unix-sk)",
                    e.peer
                )));
            }
            if !self.ext_unix_sk {
                return Err(Error::unsupported(format!(
                    "{here} is connected to socket {} outside the dumped tree; dump with --ext-unix-sk to reconnect it on restore",
                    e.peer
                )));
            }
            if ext.iter().any(|x| x.ino == e.peer) {
                continue;
            }
            let p = self
                .diag
                .as_ref()
                .and_then(|m| m.get(&e.peer))
                .ok_or_else(|| {
                    Error::unsupported(format!("{here}: its outside peer {} is gone", e.peer))
                })?;
            if p.name.is_empty() {
                return Err(Error::unsupported(format!(
                    "{here} is connected to the unnamed socket {} outside the tree, which a restore cannot reconnect to",
                    e.peer
                )));
            }
            let id = *next_id;
            *next_id += 1;
            ext.push(UnixSkEntry {
                id,
                ino: p.ino,
                r#type: p.ty,
                state: p.state,
                flags: libc::O_RDWR as u32,
                uflags: USK_EXTERN,
                backlog: p.rqlen.1,
                peer: p.peer,
                fown: FownEntry::default(),
                opts: SkOptsEntry::default(),
                name: p.name.clone(),
                ..Default::default()
            });
        }
        Ok(self
            .entries
            .iter()
            .chain(ext.iter())
            .map(|u| FileEntry {
                r#type: fd_types::UNIXSK,
                id: u.id,
                usk: Some(Box::new(u.clone())),
                ..Default::default()
            })
            .collect())
    }

    /// The fds (in crust) carried by queued messages whose files have no
    /// files.img id yet, each with the process whose fd numbers name what
    /// it refers to (see [`Self::names_in`]; a file carried by several
    /// messages takes the first one's). Only regular files, pipes, sockets
    /// and epolls can be carried; anything else is refused.
    pub fn carried_pending(&self) -> Result<Vec<Carried>, Error> {
        use std::os::fd::AsRawFd;
        let me = crust_sys::process::getpid();
        let mut out: Vec<Carried> = Vec::new();
        for p in self.packets.iter().filter(|p| p.rights.is_none()) {
            let names_in = self.names_in(p.id);
            for f in &p.fds {
                let fd = f.as_raw_fd();
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let epoll = target == EPOLL_LINK;
                let ok = epoll
                    || target.starts_with("pipe:[")
                    || target.starts_with("socket:[")
                    || (target.starts_with('/')
                        && !crate::files::ghost::is_deleted(&target)
                        && std::fs::metadata(format!("/proc/self/fd/{fd}"))
                            .is_ok_and(|m| m.file_type().is_file()));
                if !ok {
                    return Err(Error::unsupported(format!(
                        "{} has a queued message carrying {target} (SCM_RIGHTS); crust can dump only regular files, pipes, unix sockets and epolls carried in messages",
                        p.here
                    )));
                }
                // The same epoll carried before: its targets are named as
                // there.
                let names_in = if epoll {
                    out.iter()
                        .find(|c| crust_sys::process::kcmp_file(me, me, c.fd, fd).unwrap_or(false))
                        .map_or(names_in, |c| c.names_in)
                } else {
                    names_in
                };
                out.push(Carried { fd, names_in });
            }
        }
        Ok(out)
    }

    /// The files.img ids of the fds [`Self::carried_pending`] returned, as
    /// the file table recorded them (fdinfo entries of crust's fds).
    pub fn set_carried(&mut self, got: &[FdinfoEntry]) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        for p in self.packets.iter_mut().filter(|p| p.rights.is_none()) {
            let mut rights = Vec::with_capacity(p.fds.len());
            for f in &p.fds {
                let e = got
                    .iter()
                    .find(|e| e.fd as i32 == f.as_raw_fd())
                    .ok_or_else(|| {
                        Error::unsupported(format!(
                            "{}: a file carried by a queued message could not be dumped",
                            p.here
                        ))
                    })?;
                if !matches!(
                    e.r#type,
                    fd_types::REG | fd_types::PIPE | fd_types::UNIXSK | fd_types::EVENTPOLL
                ) {
                    return Err(Error::unsupported(format!(
                        "{} has a queued message carrying a file of type {} (SCM_RIGHTS); crust can dump only regular files, pipes, unix sockets and epolls carried in messages",
                        p.here, e.r#type
                    )));
                }
                rights.push(e.id);
            }
            p.rights = Some(rights);
        }
        Ok(())
    }

    /// Datagrams queued on inet sockets (files.img id, bytes, sender as a
    /// sockaddr), written to `sk-queues.img` with the unix messages.
    pub fn add_datagrams(&mut self, dgrams: Vec<crate::net::inet::Datagram>) {
        for (id, bytes, addr) in dgrams {
            self.packets.push(Packet {
                id,
                bytes,
                fds: Vec::new(),
                rights: Some(Vec::new()),
                here: format!("inet socket {id}"),
                addr: Some(addr),
                ucred: None,
            });
        }
    }

    /// Write `sk-queues.img` (when some socket had queued messages).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        if self.packets.is_empty() {
            return Ok(());
        }
        let ty = ImageType::SkQueues;
        let name = ty.file_name(0);
        let err = |source| Error::Image {
            what: format!("cannot write {name}"),
            source,
        };
        let mut w = ImageWriter::create(dir, ty, &name).map_err(err)?;
        for p in &self.packets {
            let rights = p.rights.clone().ok_or_else(|| {
                Error::unsupported(format!(
                    "{}: the files carried by a queued message were not identified",
                    p.here
                ))
            })?;
            let scm = if rights.is_empty() {
                Vec::new()
            } else {
                vec![ScmEntry {
                    r#type: SCM_RIGHTS,
                    rights,
                    ..Default::default()
                }]
            };
            w.write_entry(&SkPacketEntry {
                id_for: p.id,
                length: p.bytes.len() as u32,
                addr: p.addr.clone(),
                ucred: p.ucred.clone(),
                scm,
                ..Default::default()
            })
            .map_err(err)?;
            w.write_raw(&p.bytes).map_err(err)?;
        }
        w.finish().map_err(err)
    }
}

/// What a socket's name says of its file: its mode and owner, whether it
/// is gone, the directory of a relative name.
struct BoundFile {
    file_perms: Option<FilePermsEntry>,
    /// Bound to a path that was unlinked since (or replaced by another
    /// file): recorded as CRIU does (`deleted`), bound as a ghost on
    /// restore.
    deleted: bool,
    /// A relative name: the directory it was bound in, as CRIU records it
    /// (`name_dir`), found from the bound file itself.
    name_dir: Option<String>,
}

fn bound_file(sock: BorrowedFd<'_>, d: &DiagSock, here: &str) -> Result<BoundFile, Error> {
    let mut file_perms = None;
    let mut deleted = false;
    let mut name_dir = None;
    if let Some(named) = name_path(&d.name) {
        let path = if named.is_absolute() {
            named
        } else {
            let dir = rel_name_dir(sock, &named).map_err(|why| {
                Error::unsupported(format!(
                    "{here} is bound to the relative path {}, whose directory crust cannot find: {why}",
                    named.display()
                ))
            })?;
            let full = Path::new(&dir).join(&named);
            name_dir = Some(dir);
            full
        };
        // Sockets accepted from a listener carry its name but are not
        // the bound file; only a socket the file is for owns it. (A
        // datagram socket others connected to is established too, and
        // owns its file.)
        let bound_here = d.vfs.map(|(vino, _)| vino);
        let accepted = d.state == ST_ESTABLISHED && !is_dgram(d.ty);
        // Looked up in the tree's mount namespace (through its root's view
        // when that is not crust's).
        let seen = crate::util::view::host_path(&path).unwrap_or_else(|| path.clone());
        match std::fs::symlink_metadata(&seen) {
            Ok(md) if md.file_type().is_socket() => {
                if bound_here.is_some_and(|v| v as u64 != md.ino()) && !accepted {
                    debug!("{here}: {} was replaced since it was bound", path.display());
                    deleted = true;
                } else {
                    file_perms = Some(FilePermsEntry {
                        mode: md.mode(),
                        uid: crate::util::idmap::to_ns_uid(md.uid()),
                        gid: crate::util::idmap::to_ns_gid(md.gid()),
                        ..Default::default()
                    });
                }
            }
            _ if accepted => {}
            _ => {
                debug!("{here}: {} was deleted since it was bound", path.display());
                deleted = true;
            }
        }
    }
    Ok(BoundFile {
        file_perms,
        deleted,
        name_dir,
    })
}

/// The mount a socket's bound file is on, as the images record it.
#[derive(Default)]
struct BoundMount {
    /// CRIU's `mnt_id`: the mount its file is on (SIOCUNIXFILE), recorded
    /// when the tree's mount namespace is dumped (as CRIU does).
    mnt_id: Option<i32>,
    /// On a mount only another mount namespace of the tree has: its file's
    /// mode and owner, and whether it is unlinked, read from the file
    /// itself (the root's namespace sees another file or none at its path).
    away: Option<(FilePermsEntry, bool)>,
}

/// Whether mount `mnt` is in the mount namespace of process `pid`; None
/// when its mountinfo cannot be read.
fn has_mount(pid: i32, mnt: u64) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    Some(
        info.lines()
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .any(|id| id == mnt),
    )
}

/// The mount of the file a socket bound to a path is on (SIOCUNIXFILE),
/// when the tree has a mount namespace of its own. A socket bound on a
/// mount of the root's namespace is bound there again; one on a mount only
/// the namespace of its holder `pid` has (zdtm sk-unix-mntns: a tmpfs a
/// child mounted after unsharing) is bound in that namespace at restore
/// (see `bind.rs`). One on a mount of neither whose file the root's
/// namespace does not find at its path is refused: its namespace is not
/// dumped.
fn bound_mount(
    sock: BorrowedFd<'_>,
    d: &DiagSock,
    here: &str,
    pid: i32,
) -> Result<BoundMount, Error> {
    use std::os::fd::AsFd;
    let none = BoundMount::default();
    let (Some(root), Some(path)) = (crate::util::view::ns_pid(), name_path(&d.name)) else {
        return Ok(none);
    };
    let file = match su::unix_file(sock) {
        Ok(f) => std::fs::File::from(f),
        Err(e) => {
            debug!("{here}: SIOCUNIXFILE failed ({e}), its mount is not recorded");
            return Ok(none);
        }
    };
    let (Ok(mnt), Ok(md)) = (crust_sys::mountfd::mnt_id(file.as_fd()), file.metadata()) else {
        return Ok(none);
    };
    debug!(
        "{here}: bound file on mount {mnt} (dev {} ino {} nlink {})",
        md.dev(),
        md.ino(),
        md.nlink()
    );
    let mnt_id = i32::try_from(mnt).ok();
    if mnt_id.is_none() || has_mount(root, mnt) != Some(false) {
        return Ok(BoundMount { mnt_id, away: None });
    }
    if pid != root && has_mount(pid, mnt) == Some(true) {
        let perms = FilePermsEntry {
            mode: md.mode(),
            uid: crate::util::idmap::to_ns_uid(md.uid()),
            gid: crate::util::idmap::to_ns_gid(md.gid()),
            ..Default::default()
        };
        debug!("{here}: bound in the mount namespace of process {pid}");
        return Ok(BoundMount {
            mnt_id,
            away: Some((perms, md.nlink() == 0)),
        });
    }
    // A mount of neither: bound in the root's namespace as before when
    // the root's namespace finds that very file at the path.
    let seen = crate::util::view::join(Path::new(&format!("/proc/{root}/root")), &path);
    if md.nlink() == 0
        || std::fs::symlink_metadata(&seen)
            .is_ok_and(|m| m.dev() == md.dev() && m.ino() == md.ino())
    {
        return Ok(none);
    }
    let holder = if pid == root {
        String::new()
    } else {
        format!(" nor that of process {pid}, which holds it,")
    };
    Err(Error::unsupported(format!(
        "{here} is bound to {} on mount {mnt}, which neither the tree's mount namespace{holder} has \
         (the namespace it was bound in is gone or not the tree's): crust can bind a unix socket again \
         only in a mount namespace of the tree",
        path.display()
    )))
}

/// The directory a socket bound to the relative name `name` was bound
/// in: the path of its bound file (SIOCUNIXFILE) less `/name`.
fn rel_name_dir(sock: BorrowedFd<'_>, name: &Path) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let f = su::unix_file(sock).map_err(|e| format!("SIOCUNIXFILE failed: {e}"))?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| format!("cannot read the link of its bound file: {e}"))?;
    let link = link
        .to_str()
        .ok_or_else(|| format!("its bound file {} is not UTF-8", link.display()))?;
    let link = link.strip_suffix(" (deleted)").unwrap_or(link);
    let name = name.to_str().ok_or("the name is not UTF-8")?;
    link.strip_suffix(name)
        .and_then(|d| d.strip_suffix('/'))
        .map(|d| {
            if d.is_empty() {
                "/".into()
            } else {
                d.to_string()
            }
        })
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| format!("its bound file is {link}, which does not end in /{name}"))
}

/// Failure to read a socket's queue.
#[derive(Debug)]
pub(super) enum QueueError {
    Io(&'static str, std::io::Error),
    TooBig,
}

impl QueueError {
    fn within(self, here: &str) -> Error {
        match self {
            QueueError::Io(op, source) => Error::Sys {
                pid: crust_sys::process::getpid(),
                op: format!("{op} on {here}"),
                source,
            },
            QueueError::TooBig => {
                Error::unsupported(format!("{here} has more than {MAX_QUEUE} bytes queued"))
            }
        }
    }
}

/// The messages queued to be read on `sock`, read with MSG_PEEK and
/// SO_PEEK_OFF (put back to off afterwards) so that nothing is consumed.
/// Stream data comes back in chunks; datagrams one by one. Each comes with
/// copies of the fds it carries (SCM_RIGHTS).
/// Queued messages: bytes, carried fds, the sender's credentials.
type Queued = Vec<(Vec<u8>, Vec<OwnedFd>, Option<(i32, u32, u32)>)>;
pub(super) fn read_queue(
    sock: BorrowedFd<'_>,
    ty: u32,
    shutdown: u8,
) -> Result<Queued, QueueError> {
    let set_off = |v: i32| {
        su::setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF, v)
            .map_err(|e| QueueError::Io("setting SO_PEEK_OFF", e))
    };
    set_off(0)?;
    let walk = (|| {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut off = 0usize;
        loop {
            let r = match su::recvmsg(sock, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
                Ok(r) => r,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(out),
                Err(e) => return Err(QueueError::Io("MSG_PEEK", e)),
            };
            if is_dgram(ty) || ty as i32 == libc::SOCK_SEQPACKET {
                if r.full_len > buf.len() {
                    // Truncated: look again from its start with room for it.
                    buf.resize(r.full_len, 0);
                    set_off(off as i32)?;
                    continue;
                }
                if r.len == 0 && shutdown & 1 != 0 {
                    return Ok(out);
                }
            } else if r.len == 0 {
                return Ok(out);
            }
            off += r.len;
            if off > MAX_QUEUE {
                return Err(QueueError::TooBig);
            }
            out.push((buf[..r.len].to_vec(), r.rights, r.creds));
        }
    })();
    set_off(-1)?;
    walk
}

fn dump_opts(sock: BorrowedFd<'_>) -> std::io::Result<SkOptsEntry> {
    crate::net::sock::dump_sk_opts(sock)
}
