//! Unix sockets, in CRIU's images.
//!
//! Dump: each socket is one UNIXSK entry of files.img (a socket has one
//! open file description, so its inode names it). Its kind, state, name,
//! peer, accept queue and shutdown state come from the sock_diag netlink
//! interface (UNIX_DIAG); its options and queued messages from a copy of
//! the socket crust takes with pidfd_getfd. The queue is walked with
//! MSG_PEEK and SO_PEEK_OFF, message by message, without consuming it; each
//! message is an `sk-queues.img` entry followed by its bytes. A peer
//! outside the tree is refused unless `--ext-unix-sk`, which records it as
//! an entry of its own flagged USK_EXTERN (datagram sockets only).
//! A connection waiting in a listener's accept queue (UNIX_DIAG_ICONS) is
//! recorded, as CRIU does, as connected to the listener; one that already
//! sent data is refused (its bytes sit on the embryonic socket, out of
//! reach). Peeking a message that carries fds (SCM_RIGHTS) copies them into
//! crust: the file table gives each its files.img id (a file no task holds
//! any more is dumped from crust's copy; only regular files, pipes and unix
//! sockets), recorded in the message's `scm` entries. On a socket that
//! passes credentials (SO_PASSCRED) each message's sender pid (as the tree
//! sees it), uid and gid go to `sk_packet_entry.ucred` (field 128, which
//! CRIU reserves for it); such queues are filled after the tasks exist
//! (the kernel wants a live pid), with those credentials.
//!
//! Restore: crust makes every socket itself before any task exists:
//! socketpair for ends connected to each other (or to a peer that was
//! gone), socket + bind (+ listen) for bound and listening ones, connect
//! for datagram sockets connected one way. It sends the queued messages
//! back from the peer end (or from a throw-away socket to a bound
//! datagram socket) with the files they carried (crust's sockets, pipes,
//! regular files it opens), connects the connections that were waiting
//! in an accept queue to their listener (in their order), then sets
//! shutdown, options and status flags. Tasks
//! get the sockets with [`crate::files::fdpass`], like pipes.

use crate::util::sys_err;
use crate::Error;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::regfile::RegFileEntry;
use crust_images::proto::sk_opts::SkOptsEntry;
use crust_images::proto::sk_packet::{ScmEntry, SkPacketEntry, SkUcredEntry};
use crust_images::proto::sk_unix::{FilePermsEntry, UnixSkEntry};
use crust_images::Message;
use crust_sys::unix as su;
use log::{debug, warn};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

// Socket states as the kernel reports them (TCP_* values).
const ST_ESTABLISHED: u32 = 1;
const ST_CLOSE: u32 = 7;
const ST_LISTEN: u32 = 10;
/// `uflags`: the socket is outside the dumped tree (--ext-unix-sk).
const USK_EXTERN: u32 = 1;
/// SO_BUF_LOCK (Linux 5.14).
const SO_BUF_LOCK: i32 = 72;
/// Largest queue crust restores for one socket.
const MAX_QUEUE: usize = 256 << 20;

/// The inode of a `socket:[INO]` fd link.
pub fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn type_name(ty: u32) -> &'static str {
    match ty as i32 {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "unknown",
    }
}

fn is_dgram(ty: u32) -> bool {
    ty as i32 == libc::SOCK_DGRAM
}

/// A printable form of a socket name.
fn show_name(name: &[u8]) -> String {
    match name.first() {
        None => "(unnamed)".into(),
        Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
        Some(_) => String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(&[])).into(),
    }
}

/// The path of a name bound in the filesystem (not abstract, not empty).
fn name_path(name: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    match name.first() {
        None | Some(0) => None,
        Some(_) => Some(PathBuf::from(std::ffi::OsStr::from_bytes(
            name.split(|b| *b == 0).next().unwrap_or(&[]),
        ))),
    }
}

// ---------------------------------------------------------------- sock_diag

/// One unix socket as UNIX_DIAG reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagSock {
    pub ino: u32,
    pub ty: u32,
    pub state: u32,
    pub name: Vec<u8>,
    /// (inode, device) of the bound file.
    pub vfs: Option<(u32, u32)>,
    pub peer: u32,
    /// Inodes of connections waiting in a listener's accept queue.
    pub icons: Vec<u32>,
    /// (rqueue, wqueue): for a listener, pending connections and backlog;
    /// otherwise bytes queued to read and bytes sent not yet read.
    pub rqlen: (u32, u32),
    pub shutdown: u8,
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const UDIAG_SHOW: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20;

/// The request for a dump of every unix socket (nlmsghdr + unix_diag_req).
fn diag_request(seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&40u32.to_ne_bytes());
    b.extend_from_slice(&su::SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(libc::AF_UNIX as u8); // sdiag_family
    b.push(0); // sdiag_protocol
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    b.extend_from_slice(&0u32.to_ne_bytes()); // ino
    b.extend_from_slice(&UDIAG_SHOW.to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // no cookie
    b
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

/// Parse one netlink datagram of a UNIX_DIAG dump. Returns the sockets in
/// it and whether the dump is complete (NLMSG_DONE).
pub fn parse_diag(buf: &[u8]) -> Result<(Vec<DiagSock>, bool), String> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off).unwrap_or(0) as usize;
        let ty = u16_at(buf, off + 4).unwrap_or(0);
        if len < 16 || off + len > buf.len() {
            return Err(format!("bad netlink message length {len} at {off}"));
        }
        let body = &buf[off + 16..off + len];
        match ty {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).unwrap_or(0) as i32;
                return Err(format!(
                    "the kernel answered with error {}",
                    std::io::Error::from_raw_os_error(-errno)
                ));
            }
            su::SOCK_DIAG_BY_FAMILY => out.push(parse_one(body)?),
            _ => {}
        }
        off += len.div_ceil(4) * 4;
    }
    Ok((out, false))
}

/// One unix_diag_msg and its attributes.
fn parse_one(b: &[u8]) -> Result<DiagSock, String> {
    if b.len() < 16 {
        return Err("short unix_diag_msg".into());
    }
    let mut s = DiagSock {
        ty: b[1] as u32,
        state: b[2] as u32,
        ino: u32_at(b, 4).unwrap_or(0),
        ..Default::default()
    };
    let mut off = 16usize;
    while off + 4 <= b.len() {
        let len = u16_at(b, off).unwrap_or(0) as usize;
        let ty = u16_at(b, off + 2).unwrap_or(0);
        if len < 4 || off + len > b.len() {
            return Err(format!("bad attribute length {len} for socket {}", s.ino));
        }
        let d = &b[off + 4..off + len];
        match ty {
            0 => s.name = d.to_vec(),
            1 => s.vfs = Some((u32_at(d, 0).unwrap_or(0), u32_at(d, 4).unwrap_or(0))),
            2 => s.peer = u32_at(d, 0).unwrap_or(0),
            3 => {
                s.icons = d
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
            4 => s.rqlen = (u32_at(d, 0).unwrap_or(0), u32_at(d, 4).unwrap_or(0)),
            6 => s.shutdown = d.first().copied().unwrap_or(0),
            _ => {}
        }
        off += len.div_ceil(4) * 4;
    }
    Ok(s)
}

/// Every unix socket of crust's network namespace, by inode.
fn diag_all() -> Result<HashMap<u32, DiagSock>, Error> {
    let me = crust_sys::process::getpid();
    let nl = su::netlink_socket(su::NETLINK_SOCK_DIAG)
        .map_err(sys_err(me, "socket(NETLINK_SOCK_DIAG)"))?;
    su::netlink_send(nl.as_fd(), &diag_request(1))
        .map_err(sys_err(me, "sending the UNIX_DIAG request"))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut out = HashMap::new();
    loop {
        let n = su::netlink_recv(nl.as_fd(), &mut buf)
            .map_err(sys_err(me, "receiving the UNIX_DIAG answer"))?;
        let (socks, done) = parse_diag(&buf[..n]).map_err(|why| Error::Sys {
            pid: me,
            op: format!("parsing the UNIX_DIAG answer: {why}"),
            source: std::io::Error::from_raw_os_error(libc::EPROTO),
        })?;
        for s in socks {
            out.insert(s.ino, s);
        }
        if done || n == 0 {
            return Ok(out);
        }
    }
}

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
const SCM_RIGHTS: u32 = libc::SCM_RIGHTS as u32;

/// Unix sockets seen while dumping a tree.
#[derive(Default)]
pub struct UnixDump {
    pub ext_unix_sk: bool,
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
}

impl UnixDump {
    /// The files.img id of socket `ino`, if seen before.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
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
        let d = crate::net::netlink::diag_of(&mut self.diag, ino, diag_all)?.ok_or_else(|| {
                Error::unsupported(format!(
                    "process {pid} fd {fd}: unix socket {ino} is not in crust's network namespace (sockets of other network namespaces are not supported)"
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
        let mut file_perms = None;
        // Bound to a path that was unlinked since (or replaced by another
        // file): recorded as CRIU does (`deleted`), bound and unlinked
        // again on restore.
        let mut deleted = false;
        if let Some(path) = name_path(&d.name) {
            if !path.is_absolute() {
                return Err(Error::unsupported(format!(
                    "{here} is bound to the relative path {}",
                    path.display()
                )));
            }
            // Sockets accepted from a listener carry its name but are not
            // the bound file; only a socket the file is for owns it.
            let bound_here = d.vfs.map(|(vino, _)| vino);
            match std::fs::symlink_metadata(&path) {
                Ok(md) if md.file_type().is_socket() => {
                    if bound_here.is_some_and(|v| v as u64 != md.ino()) && d.state != ST_ESTABLISHED
                    {
                        debug!("{here}: {} was replaced since it was bound", path.display());
                        deleted = true;
                    } else {
                        file_perms = Some(FilePermsEntry {
                            mode: md.mode(),
                            uid: md.uid(),
                            gid: md.gid(),
                            ..Default::default()
                        });
                    }
                }
                _ if d.state == ST_ESTABLISHED => {}
                _ => {
                    debug!("{here}: {} was deleted since it was bound", path.display());
                    deleted = true;
                }
            }
        }
        let opts = dump_opts(sock).map_err(sys_err(pid, format!("socket options of fd {fd}")))?;
        let peek_off = opt(libc::SO_PEEK_OFF).unwrap_or(-1);
        if peek_off >= 0 {
            return Err(Error::unsupported(format!(
                "{here} uses SO_PEEK_OFF (offset {peek_off}), which CRIU's image format cannot hold"
            )));
        }
        if d.state != ST_LISTEN {
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
                    // The sender's pid as the tree sees it.
                    ucred: creds.map(|(pid, uid, gid)| SkUcredEntry {
                        uid,
                        gid,
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
                usk: Some(u.clone()),
                ..Default::default()
            })
            .collect())
    }

    /// The fds (in crust) carried by queued messages whose files have no
    /// files.img id yet. Only regular files, pipes and sockets can be
    /// carried; anything else is refused.
    pub fn carried_pending(&self) -> Result<Vec<i32>, Error> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        for p in self.packets.iter().filter(|p| p.rights.is_none()) {
            for f in &p.fds {
                let fd = f.as_raw_fd();
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ok = target.starts_with("pipe:[")
                    || target.starts_with("socket:[")
                    || (target.starts_with('/')
                        && !crate::files::ghost::is_deleted(&target)
                        && std::fs::metadata(format!("/proc/self/fd/{fd}"))
                            .is_ok_and(|m| m.file_type().is_file()));
                if !ok {
                    return Err(Error::unsupported(format!(
                        "{} has a queued message carrying {target} (SCM_RIGHTS); crust can dump only regular files, pipes and unix sockets carried in messages",
                        p.here
                    )));
                }
                out.push(fd);
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
                if !matches!(e.r#type, fd_types::REG | fd_types::PIPE | fd_types::UNIXSK) {
                    return Err(Error::unsupported(format!(
                        "{} has a queued message carrying a file of type {} (SCM_RIGHTS); crust can dump only regular files, pipes and unix sockets carried in messages",
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

/// Failure to read a socket's queue.
#[derive(Debug)]
enum QueueError {
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
fn read_queue(sock: BorrowedFd<'_>, ty: u32, shutdown: u8) -> Result<Queued, QueueError> {
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
    crate::net::netlink::dump_sk_opts(sock)
}

// ---------------------------------------------------------------- restore

/// The unix sockets of an image set, read and checked.
#[derive(Debug, Default)]
pub struct UnixFiles {
    /// By files.img id.
    socks: BTreeMap<u32, UnixSkEntry>,
    /// files.img id by inode.
    by_ino: HashMap<u32, u32>,
    /// Queued messages by files.img id, in order.
    queues: HashMap<u32, Vec<Vec<u8>>>,
    /// Files carried by queued messages (SCM_RIGHTS), by (socket id,
    /// message index): files.img ids.
    rights: HashMap<(u32, usize), Vec<u32>>,
    /// Regular files carried by messages, which crust opens itself.
    carried_reg: HashMap<u32, RegFileEntry>,
    /// The sender's credentials of queued messages (SCM_CREDENTIALS), by
    /// (socket id, message index).
    creds: HashMap<(u32, usize), SkUcredEntry>,
}

fn check_entry(u: &UnixSkEntry) -> Result<(), String> {
    let ty = u.r#type as i32;
    if !matches!(
        ty,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Err(format!("unix socket {} has a bad type {}", u.id, u.r#type));
    }
    match u.state {
        ST_ESTABLISHED | ST_CLOSE => {}
        ST_LISTEN if ty != libc::SOCK_DGRAM => {}
        s => return Err(format!("unix socket {} has a bad state {s}", u.id)),
    }
    if u.name.len() > crust_sys::fdpass::SUN_PATH_LEN {
        return Err(format!("unix socket {} has a name too long", u.id));
    }
    if let Some(p) = name_path(&u.name) {
        if !p.is_absolute() {
            return Err(format!(
                "unix socket {} is bound to the relative path {}",
                u.id,
                p.display()
            ));
        }
    }
    if u.uflags & !USK_EXTERN != 0 {
        return Err(format!(
            "unix socket {} has flags {:#x} crust does not know",
            u.id, u.uflags
        ));
    }
    if let Some(s) = u.shutdown {
        if !(0..=3).contains(&s) {
            return Err(format!("unix socket {} has a bad shutdown {s}", u.id));
        }
    }
    if u.backlog > 1 << 20 && u.state == ST_LISTEN {
        return Err(format!(
            "unix socket {} has a bad backlog {}",
            u.id, u.backlog
        ));
    }
    Ok(())
}

impl UnixFiles {
    /// Read the UNIXSK entries of files.img and `sk-queues.img`, and check
    /// them: peers the image does not have, peers outside the tree without
    /// `--ext-unix-sk`, messages for sockets that do not exist or carrying
    /// fds, lengths that disagree are errors.
    pub fn load(dir: &Path, ext_unix_sk: bool) -> Result<UnixFiles, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let files: Vec<FileEntry> = crate::util::read_image(dir, ImageType::Files, 0)?;
        let mut out = UnixFiles::default();
        let inet_ids: std::collections::HashSet<u32> = files
            .iter()
            .filter(|f| f.r#type == fd_types::INETSK)
            .map(|f| f.id)
            .collect();
        for f in files.iter().filter(|f| f.r#type == fd_types::UNIXSK) {
            let u = f
                .usk
                .as_ref()
                .ok_or_else(|| bad(format!("files.img: UNIXSK entry {} has no usk part", f.id)))?;
            if u.id != f.id {
                return Err(bad(format!(
                    "files.img: UNIXSK entry {} says it is {}",
                    f.id, u.id
                )));
            }
            check_entry(u).map_err(|w| bad(format!("files.img: {w}")))?;
            if u.ino != 0 && out.by_ino.insert(u.ino, u.id).is_some() {
                return Err(bad(format!(
                    "files.img: two unix sockets have inode {}",
                    u.ino
                )));
            }
            out.socks.insert(u.id, u.clone());
        }
        for u in out.socks.values() {
            if u.uflags & USK_EXTERN != 0 || u.peer == 0 {
                continue;
            }
            let here = format!(
                "unix {} socket {} (inode {})",
                type_name(u.r#type),
                u.id,
                u.ino
            );
            let pid = *out.by_ino.get(&u.peer).ok_or_else(|| {
                bad(format!(
                    "{here} is connected to socket {}, which files.img does not have",
                    u.peer
                ))
            })?;
            let p = &out.socks[&pid];
            if p.r#type != u.r#type {
                return Err(bad(format!(
                    "{here} is connected to a socket of another type"
                )));
            }
            if p.uflags & USK_EXTERN != 0 {
                if !ext_unix_sk {
                    return Err(Error::unsupported(format!(
                        "{here} was connected to {} outside the dumped tree; restore with --ext-unix-sk to reconnect it",
                        show_name(&p.name)
                    )));
                }
                if !is_dgram(u.r#type) || p.name.is_empty() {
                    return Err(Error::unsupported(format!(
                        "{here} was connected to a socket outside the tree that crust cannot reconnect (only named datagram peers)"
                    )));
                }
            } else if p.state == ST_LISTEN {
                // A connection waiting in the listener's accept queue: made
                // again by connecting to the listener's name.
                if u.state != ST_ESTABLISHED || p.name.is_empty() {
                    return Err(bad(format!(
                        "{here} is connected to the listening socket {}, but is not established or the listener has no name",
                        p.id
                    )));
                }
            } else if p.peer != u.ino && (!is_dgram(u.r#type) || p.name.is_empty()) {
                return Err(bad(format!(
                    "{here} is connected to socket {}, which is not connected back and has no name to connect to",
                    u.peer
                )));
            }
        }
        // Queued messages.
        let ty = ImageType::SkQueues;
        let name = ty.file_name(0);
        let img_err = |source| Error::Image {
            what: format!("cannot read image {name}"),
            source,
        };
        let mut rd = match ImageReader::open_typed(dir, ty, &name) {
            Ok(r) => Some(r),
            Err(e) if e.is_missing() => None,
            Err(e) => return Err(img_err(e)),
        };
        let mut sizes: HashMap<u32, usize> = HashMap::new();
        while let Some(rec) = match rd.as_mut() {
            Some(r) => r.next_record().map_err(img_err)?,
            None => None,
        } {
            let e = SkPacketEntry::decode(&rec.entry).map_err(|source| {
                img_err(crust_images::image::ImageError::Decode {
                    path: dir.join(&name),
                    offset: rec.offset,
                    message: SkPacketEntry::NAME,
                    source,
                })
            })?;
            if inet_ids.contains(&e.id_for) {
                // A datagram queued on a UDP socket: see crate::net::inet.
                continue;
            }
            let u = out.socks.get(&e.id_for).ok_or_else(|| {
                bad(format!(
                    "{name} has a message for file {}, which is not a unix socket of files.img",
                    e.id_for
                ))
            })?;
            if u.uflags & USK_EXTERN != 0 || u.state == ST_LISTEN {
                return Err(bad(format!(
                    "{name} has a message for unix socket {}, which cannot hold one",
                    e.id_for
                )));
            }
            if rec.payload.len() != e.length as usize {
                return Err(bad(format!(
                    "{name}: a message for socket {} should hold {} bytes, the image has {}",
                    e.id_for,
                    e.length,
                    rec.payload.len()
                )));
            }
            let here = format!("{name}: a message for unix socket {}", e.id_for);
            let mut rights = Vec::new();
            for scm in &e.scm {
                if scm.r#type != SCM_RIGHTS {
                    return Err(Error::unsupported(format!(
                        "{here} carries control data of type {}; crust restores only SCM_RIGHTS",
                        scm.r#type
                    )));
                }
                rights.extend_from_slice(&scm.rights);
            }
            if rights.len() > crust_sys::fdpass::MAX_FDS_PER_MSG {
                return Err(bad(format!("{here} carries {} files", rights.len())));
            }
            for r in &rights {
                let f = files.iter().find(|f| f.id == *r).ok_or_else(|| {
                    bad(format!(
                        "{here} carries file {r}, which files.img does not have"
                    ))
                })?;
                match f.r#type {
                    fd_types::PIPE => {}
                    fd_types::UNIXSK if out.has(*r) => {}
                    fd_types::REG => {
                        let reg = f
                            .reg
                            .as_ref()
                            .filter(|g| g.id == *r && g.name.starts_with('/'))
                            .ok_or_else(|| {
                                bad(format!(
                                    "{here} carries file {r}, whose entry is not a regular file by absolute path"
                                ))
                            })?;
                        out.carried_reg.insert(*r, reg.clone());
                    }
                    t => {
                        return Err(Error::unsupported(format!(
                            "{here} carries file {r} of type {t}; crust restores only regular files, pipes and unix sockets carried in messages"
                        )))
                    }
                }
            }
            if !rights.is_empty() {
                if e.length == 0 && !is_dgram(u.r#type) {
                    return Err(bad(format!("{here} carries files but no byte")));
                }
                let idx = out.queues.get(&e.id_for).map_or(0, |q| q.len());
                out.rights.insert((e.id_for, idx), rights);
            }
            let total = sizes.entry(e.id_for).or_default();
            *total += rec.payload.len();
            if *total > MAX_QUEUE {
                return Err(bad(format!(
                    "{name}: more than {MAX_QUEUE} bytes queued on socket {}",
                    e.id_for
                )));
            }
            if let Some(c) = e.ucred {
                let idx = out.queues.get(&e.id_for).map_or(0, |q| q.len());
                out.creds.insert((e.id_for, idx), c);
            }
            out.queues.entry(e.id_for).or_default().push(rec.payload);
        }
        Ok(out)
    }

    /// Whether files.img id `id` is a unix socket a task can hold.
    pub fn has(&self, id: u32) -> bool {
        self.socks
            .get(&id)
            .is_some_and(|u| u.uflags & USK_EXTERN == 0)
    }

    /// Check that every UNIXSK fd of every process refers to a socket of
    /// files.img that a task can hold.
    pub fn check_fds<'a>(
        &self,
        dir: &Path,
        fds: impl Iterator<Item = (i32, &'a [FdinfoEntry])>,
    ) -> Result<(), Error> {
        for (pid, list) in fds {
            for f in list.iter().filter(|f| f.r#type == fd_types::UNIXSK) {
                if !self.has(f.id) {
                    return Err(Error::BadImage {
                        dir: dir.to_path_buf(),
                        why: format!(
                            "fd {} of process {pid} refers to unix socket {}, which files.img does not have (or is outside the tree)",
                            f.fd, f.id
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Make every socket of the image in crust, connected, queues filled,
    /// options set.
    /// `shared` holds the pipes, which messages may carry.
    pub fn open(&self, shared: &crate::files::pipes::OpenShared) -> Result<OpenUnix, Error> {
        let me = crust_sys::process::getpid();
        let mut made: HashMap<u32, OwnedFd> = HashMap::new();
        // The other end of a socket whose peer was gone: sends its queue,
        // then is closed.
        let mut feeders: HashMap<u32, OwnedFd> = HashMap::new();
        // Datagram sockets to connect once queues are filled: (id, name).
        let mut connects: Vec<(u32, Vec<u8>)> = Vec::new();
        let ours = |u: &UnixSkEntry| u.uflags & USK_EXTERN == 0;
        for u in self.socks.values().filter(|u| ours(u)) {
            if made.contains_key(&u.id) {
                continue;
            }
            let what = format!("unix {} socket {}", type_name(u.r#type), u.id);
            let e = |op: String| sys_err(me, format!("{op} for {what}"));
            let ty = u.r#type as i32;
            let peer = (u.peer != 0)
                .then(|| self.by_ino.get(&u.peer).map(|id| &self.socks[id]))
                .flatten();
            let mutual = peer.filter(|p| ours(p) && p.peer == u.ino && p.id != u.id);
            if u.state == ST_ESTABLISHED && (mutual.is_some() || u.peer == 0) {
                let (a, b) = su::socketpair(ty).map_err(e("socketpair".into()))?;
                match mutual {
                    Some(p) => {
                        if is_dgram(u.r#type) {
                            bind_name(a.as_fd(), u)
                                .map_err(e(format!("bind {}", show_name(&u.name))))?;
                            bind_name(b.as_fd(), p)
                                .map_err(e(format!("bind {}", show_name(&p.name))))?;
                        }
                        made.insert(p.id, b);
                    }
                    None => {
                        if is_dgram(u.r#type) {
                            bind_name(a.as_fd(), u)
                                .map_err(e(format!("bind {}", show_name(&u.name))))?;
                        }
                        feeders.insert(u.id, b);
                    }
                }
                made.insert(u.id, a);
                continue;
            }
            let s = su::socket(ty).map_err(e("socket".into()))?;
            bind_name(s.as_fd(), u).map_err(e(format!("bind {}", show_name(&u.name))))?;
            if u.state == ST_LISTEN {
                su::listen(s.as_fd(), u.backlog as i32).map_err(e("listen".into()))?;
            }
            if u.state == ST_ESTABLISHED {
                let p = peer.expect("checked in load");
                connects.push((u.id, p.name.clone()));
            }
            made.insert(u.id, s);
        }
        // Queues, before any datagram socket connects elsewhere (a
        // connected socket takes messages from its peer only). Queues with
        // credentials wait until the senders' processes exist (see
        // [`OpenUnix::refill_late`]).
        let mut late = Vec::new();
        for id in self.queues.keys() {
            let u = &self.socks[id];
            let what = format!("unix {} socket {id}", type_name(u.r#type));
            let peer_id = self.by_ino.get(&u.peer).copied();
            let from: Option<BorrowedFd<'_>> = feeders
                .get(id)
                .or_else(|| {
                    let p = &self.socks[&peer_id?];
                    (ours(p) && p.peer == u.ino).then(|| made.get(&p.id))?
                })
                .map(|f| f.as_fd());
            let temp;
            let (sender, to) = match from {
                Some(f) => (f, None),
                None if is_dgram(u.r#type) && !u.name.is_empty() => {
                    temp = su::socket(libc::SOCK_DGRAM)
                        .map_err(sys_err(me, format!("socket to fill {what}")))?;
                    (temp.as_fd(), Some(u.name.as_slice()))
                }
                None => {
                    return Err(Error::unsupported(format!(
                        "{what} has queued messages but no peer crust can send them from"
                    )))
                }
            };
            if self.creds.keys().any(|(i, _)| i == id) {
                let keep = sender
                    .try_clone_to_owned()
                    .map_err(sys_err(me, format!("dup of the sender to {what}")))?;
                late.push((*id, keep, to.map(|t| t.to_vec())));
                continue;
            }
            self.fill_queue(*id, sender, to, &made, shared, &|_| None)?;
        }
        drop(feeders);
        for (id, name) in connects {
            // Non-blocking: a listener whose queue is full (a bad image)
            // fails the restore instead of hanging it; the recorded flags
            // are set below.
            crust_sys::pipe::set_status_flags(made[&id].as_fd(), libc::O_NONBLOCK)
                .map_err(sys_err(me, format!("F_SETFL of unix socket {id}")))?;
            su::connect(made[&id].as_fd(), &name).map_err(sys_err(
                me,
                format!("connect unix socket {id} to {}", show_name(&name)),
            ))?;
        }
        for u in self.socks.values().filter(|u| ours(u)) {
            let s = made[&u.id].as_fd();
            let what = format!("unix {} socket {}", type_name(u.r#type), u.id);
            if let Some(sh) = u.shutdown.filter(|s| *s != 0) {
                if u.state == ST_ESTABLISHED && u.peer != 0 {
                    let how = match sh {
                        1 => libc::SHUT_RD,
                        2 => libc::SHUT_WR,
                        _ => libc::SHUT_RDWR,
                    };
                    su::shutdown(s, how).map_err(sys_err(me, format!("shutdown of {what}")))?;
                }
            }
            set_opts(s, &u.opts).map_err(sys_err(me, format!("socket options of {what}")))?;
            let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
            crust_sys::pipe::set_status_flags(s, (u.flags & keep) as i32)
                .map_err(sys_err(me, format!("F_SETFL of {what}")))?;
        }
        // Sockets whose bound file had been deleted: every connection by
        // name is made, the file goes again.
        for u in self
            .socks
            .values()
            .filter(|u| ours(u) && u.deleted == Some(true))
        {
            if let Some(p) = name_path(&u.name) {
                if let Err(e) = std::fs::remove_file(&p) {
                    warn!("cannot unlink {} again: {e}", p.display());
                }
            }
        }
        Ok(OpenUnix { by_id: made, late })
    }
}

impl UnixFiles {
    /// Copies of the files `ids` a queued message carries: sockets crust
    /// made, pipes from `shared`, regular files opened here.
    /// Put the queued messages of socket `id` back, sent from `sender`
    /// (to `to` when it is not connected). `host_pid` gives the pid, in
    /// crust's view, of a recorded sender pid (credentials); crust's own
    /// pid stands in for one it does not know.
    fn fill_queue(
        &self,
        id: u32,
        sender: BorrowedFd<'_>,
        to: Option<&[u8]>,
        made: &HashMap<u32, OwnedFd>,
        shared: &crate::files::pipes::OpenShared,
        host_pid: &dyn Fn(u32) -> Option<i32>,
    ) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        let u = &self.socks[&id];
        let what = format!("unix {} socket {id}", type_name(u.r#type));
        let msgs = &self.queues[&id];
        let total: usize = msgs.iter().map(|m| m.len()).sum();
        let cur = su::getsockopt_int(sender, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0);
        if (cur as usize) < total * 2 + (64 << 10) {
            let want = (total + (64 << 10)).min(i32::MAX as usize / 4) as i32;
            su::setsockopt_int(sender, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
                .map_err(sys_err(me, format!("SO_SNDBUFFORCE to fill {what}")))?;
        }
        let rcv =
            su::getsockopt_int(made[&id].as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0);
        if (rcv as usize) < total * 2 + (64 << 10) {
            let want = (total + (64 << 10)).min(i32::MAX as usize / 4) as i32;
            su::setsockopt_int(
                made[&id].as_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                want,
            )
            .map_err(sys_err(me, format!("SO_RCVBUFFORCE of {what}")))?;
        }
        for (i, m) in msgs.iter().enumerate() {
            let carried = match self.rights.get(&(id, i)) {
                Some(r) => self.carried_fds(r, made, shared)?,
                None => Vec::new(),
            };
            let mut done = 0;
            loop {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                let creds = self.creds.get(&(id, i)).map(|c| {
                    let pid = host_pid(c.pid).unwrap_or(me);
                    (pid, c.uid, c.gid)
                });
                let sent = if done == 0 && (!carried.is_empty() || creds.is_some()) {
                    let fds: Vec<BorrowedFd<'_>> = carried.iter().map(|f| f.as_fd()).collect();
                    su::send_msg(sender, m, to, &fds, creds, flags)
                } else {
                    su::send(sender, &m[done..], to, flags)
                };
                let n = sent.map_err(sys_err(
                    me,
                    format!(
                        "sending a queued message of {} bytes back into {what}",
                        m.len()
                    ),
                ))?;
                done += n;
                if done >= m.len() || u.r#type as i32 != libc::SOCK_STREAM {
                    break;
                }
            }
        }
        debug!("{what}: {} message(s), {total} bytes put back", msgs.len());
        Ok(())
    }

    fn carried_fds(
        &self,
        ids: &[u32],
        made: &HashMap<u32, OwnedFd>,
        shared: &crate::files::pipes::OpenShared,
    ) -> Result<Vec<OwnedFd>, Error> {
        let me = crust_sys::process::getpid();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let f = if let Some(reg) = self.carried_reg.get(id) {
                open_reg(reg).map_err(sys_err(
                    me,
                    format!(
                        "opening {} (file {id}) carried by a queued message",
                        reg.name
                    ),
                ))?
            } else {
                let fd = made.get(id).map(|f| f.as_fd()).or_else(|| shared.get(*id));
                let fd = fd.ok_or_else(|| Error::Restore {
                    pid: me,
                    what: format!("file {id}, carried by a queued message, was not made"),
                })?;
                fd.try_clone_to_owned()
                    .map_err(sys_err(me, format!("dup of file {id}")))?
            };
            out.push(f);
        }
        Ok(out)
    }
}

/// Open a regular file as `reg` records it (access mode, append and
/// non-blocking flags, offset).
fn open_reg(reg: &RegFileEntry) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let acc = reg.flags as i32 & libc::O_ACCMODE;
    let mut f = std::fs::OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(reg.flags as i32 & (libc::O_APPEND | libc::O_NONBLOCK))
        .open(&reg.name)?;
    if reg.flags as i32 & libc::O_APPEND == 0 {
        f.seek(SeekFrom::Start(reg.pos))?;
    }
    Ok(f.into())
}

/// The sockets crust made for the restore, by files.img id; closed once
/// every task has its copies.
#[derive(Debug, Default)]
pub struct OpenUnix {
    by_id: HashMap<u32, OwnedFd>,
    /// Queues whose messages carry credentials, filled once the senders
    /// exist: (socket id, sender, name to send to).
    late: Vec<(u32, OwnedFd, Option<Vec<u8>>)>,
}

impl OpenUnix {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.by_id.get(&id).map(|f| f.as_fd())
    }

    /// Fill the queues whose messages carry their senders' credentials
    /// (SCM_CREDENTIALS), now that the processes of the tree exist (the
    /// kernel wants a live pid): `host_pid` maps a recorded pid to the
    /// restored process's pid in crust's view.
    pub fn refill_late(
        &self,
        files: &UnixFiles,
        shared: &crate::files::pipes::OpenShared,
        host_pid: &dyn Fn(u32) -> Option<i32>,
    ) -> Result<(), Error> {
        for (id, sender, to) in &self.late {
            files.fill_queue(
                *id,
                sender.as_fd(),
                to.as_deref(),
                &self.by_id,
                shared,
                host_pid,
            )?;
        }
        Ok(())
    }
}

/// Bind `s` to the name of `u`, if it has one: a path is first cleared of
/// a stale socket file, and gets its recorded mode and owner.
fn bind_name(s: BorrowedFd<'_>, u: &UnixSkEntry) -> std::io::Result<()> {
    if u.name.is_empty() {
        return Ok(());
    }
    let path = name_path(&u.name);
    if let (Some(p), Some(true)) = (&path, u.deleted) {
        // Its file was gone at dump time: the path must be free (it is
        // unlinked again once every socket is connected).
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
        }
    } else if let Some(p) = &path {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.file_type().is_socket() => {
                debug!("removing the stale socket file {}", p.display());
                std::fs::remove_file(p)?;
            }
            Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::EEXIST)),
            Err(_) => {}
        }
    }
    su::bind(s, &u.name)?;
    if let (Some(p), Some(perms)) = (&path, &u.file_perms) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(perms.mode & 0o7777))?;
        if let Err(e) = std::os::unix::fs::lchown(p, Some(perms.uid), Some(perms.gid)) {
            warn!(
                "cannot chown {} to {}:{}: {e}",
                p.display(),
                perms.uid,
                perms.gid
            );
        }
    }
    Ok(())
}

pub(crate) fn set_opts(s: BorrowedFd<'_>, o: &SkOptsEntry) -> std::io::Result<()> {
    let set = |opt: i32, v: i32| su::setsockopt_int(s, libc::SOL_SOCKET, opt, v);
    let cur = |opt: i32| su::getsockopt_int(s, libc::SOL_SOCKET, opt).unwrap_or(-1);
    // The kernel doubles the value it is given.
    if o.so_sndbuf != 0 && cur(libc::SO_SNDBUF) != o.so_sndbuf as i32 {
        set(libc::SO_SNDBUFFORCE, (o.so_sndbuf / 2) as i32)?;
    }
    if o.so_rcvbuf != 0 && cur(libc::SO_RCVBUF) != o.so_rcvbuf as i32 {
        set(libc::SO_RCVBUFFORCE, (o.so_rcvbuf / 2) as i32)?;
    }
    if let Some(l) = o.so_buf_lock {
        if let Err(e) = set(SO_BUF_LOCK, l as i32) {
            debug!("SO_BUF_LOCK: {e}");
        }
    }
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        su::setsockopt_timeval(s, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)?;
    }
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        su::setsockopt_timeval(s, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)?;
    }
    let flags = [
        (o.reuseaddr, libc::SO_REUSEADDR),
        (o.so_passcred, libc::SO_PASSCRED),
        (o.so_passsec, libc::SO_PASSSEC),
        (o.so_dontroute, libc::SO_DONTROUTE),
        (o.so_no_check, libc::SO_NO_CHECK),
        (o.so_broadcast, libc::SO_BROADCAST),
        (o.so_keepalive, libc::SO_KEEPALIVE),
    ];
    for (v, opt) in flags {
        if v == Some(true) {
            set(opt, 1)?;
        }
    }
    if let Some(p) = o.so_priority.filter(|p| *p != 0) {
        set(libc::SO_PRIORITY, p as i32)?;
    }
    if let Some(l) = o.so_rcvlowat.filter(|l| *l > 1) {
        set(libc::SO_RCVLOWAT, l as i32)?;
    }
    if let Some(m) = o.so_mark.filter(|m| *m != 0) {
        set(libc::SO_MARK, m as i32)?;
    }
    if let Some(v) = o.so_oobinline.filter(|v| *v != 0) {
        set(libc::SO_OOBINLINE, v as i32)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_of_link() {
        assert_eq!(socket_inode("socket:[1179514]"), Some(1179514));
        assert_eq!(socket_inode("pipe:[5]"), None);
    }

    #[test]
    fn names() {
        assert_eq!(show_name(b"/tmp/x.sock\0"), "/tmp/x.sock");
        assert_eq!(show_name(b"\0abs"), "@abs");
        assert_eq!(
            name_path(b"/tmp/x.sock\0"),
            Some(PathBuf::from("/tmp/x.sock"))
        );
        assert_eq!(name_path(b"\0abs"), None);
    }

    #[test]
    fn diag_of_a_live_pair() {
        let (a, b) = su::socketpair(libc::SOCK_STREAM).unwrap();
        let ino = |f: &OwnedFd| {
            use std::os::fd::AsRawFd;
            let l = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
            socket_inode(&l.to_string_lossy()).unwrap()
        };
        su::send(a.as_fd(), b"abc", None, 0).unwrap();
        su::shutdown(a.as_fd(), libc::SHUT_WR).unwrap();
        let all = diag_all().unwrap();
        let da = &all[&ino(&a)];
        let db = &all[&ino(&b)];
        assert_eq!(da.peer, ino(&b));
        assert_eq!(db.peer, ino(&a));
        assert_eq!(da.ty, libc::SOCK_STREAM as u32);
        assert_eq!(da.state, ST_ESTABLISHED);
        assert_eq!(da.shutdown, 2);
        assert_eq!(db.shutdown, 1);
        let q = read_queue(b.as_fd(), db.ty, db.shutdown).unwrap();
        assert_eq!(
            q.into_iter().map(|m| m.0).collect::<Vec<_>>().concat(),
            b"abc"
        );
        // Nothing was consumed.
        let mut buf = [0u8; 8];
        let r = su::recvmsg(b.as_fd(), &mut buf, libc::MSG_DONTWAIT).unwrap();
        assert_eq!(&buf[..r.len], b"abc");
    }

    #[test]
    fn dgram_queue_walk() {
        let (a, b) = su::socketpair(libc::SOCK_DGRAM).unwrap();
        for m in [&b"one"[..], b"", &[7u8; 100_000], b"four"] {
            su::send(a.as_fd(), m, None, libc::MSG_DONTWAIT).unwrap();
        }
        let q: Vec<Vec<u8>> = read_queue(b.as_fd(), libc::SOCK_DGRAM as u32, 0)
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(q.len(), 4);
        assert_eq!(q[0], b"one");
        assert!(q[1].is_empty());
        assert_eq!(q[2].len(), 100_000);
        assert_eq!(q[3], b"four");
        assert_eq!(
            su::getsockopt_int(b.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            -1
        );
    }

    /// CRIU 4.2's golden `files` set: a stream pair with a message each
    /// way, a datagram socket bound to a path with a datagram queued, a
    /// listener with backlog 8.
    #[test]
    fn golden_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/files");
        let u = UnixFiles::load(&dir, false).unwrap();
        assert_eq!(u.socks.len(), 4);
        assert!(u.has(9) && u.has(12) && !u.has(8));
        assert_eq!(u.socks[&9].peer, u.socks[&10].ino);
        assert_eq!(u.socks[&10].peer, u.socks[&9].ino);
        assert_eq!(u.socks[&12].state, ST_LISTEN);
        assert_eq!(u.socks[&12].backlog, 8);
        assert_eq!(
            name_path(&u.socks[&11].name),
            Some(PathBuf::from("/tmp/crust-golden/data/files-dgram.sock"))
        );
        assert_eq!(u.queues[&9], vec![b"sv[1] -> sv[0] 24 bytes\n".to_vec()]);
        assert_eq!(u.queues[&10], vec![b"sv[0] -> sv[1] 24 bytes\n".to_vec()]);
        assert_eq!(u.queues[&11], vec![b"dgram to itself\n".to_vec()]);
        let fds: Vec<FdinfoEntry> = crate::util::read_image(&dir, ImageType::Fdinfo, 2).unwrap();
        u.check_fds(&dir, [(1514, fds.as_slice())].into_iter())
            .unwrap();
    }

    /// Bad entries are refused when loading.
    #[test]
    fn bad_entries() {
        let mut e = UnixSkEntry {
            id: 3,
            ino: 5,
            r#type: libc::SOCK_STREAM as u32,
            state: ST_CLOSE,
            ..Default::default()
        };
        assert!(check_entry(&e).is_ok());
        e.r#type = 3;
        assert!(check_entry(&e).is_err());
        e.r#type = libc::SOCK_DGRAM as u32;
        e.state = ST_LISTEN;
        assert!(check_entry(&e).is_err());
        e.state = ST_CLOSE;
        e.name = b"relative/path\0".to_vec();
        assert!(check_entry(&e).is_err());
        e.name = vec![b'/'; 200];
        assert!(check_entry(&e).is_err());
        e.name = Vec::new();
        e.uflags = 4;
        assert!(check_entry(&e).is_err());
        e.uflags = 0;
        e.shutdown = Some(9);
        assert!(check_entry(&e).is_err());
    }

    #[test]
    fn diag_parse_rejects_garbage() {
        assert!(parse_diag(&[0xff; 20]).is_err());
        let (v, done) = parse_diag(&[]).unwrap();
        assert!(v.is_empty() && !done);
    }
}
