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
//! any more is dumped from crust's copy; only regular files, pipes, unix
//! sockets and epolls), recorded in the message's `scm` entries. What a
//! carried file refers to by fd number (an epoll's targets) is named by
//! the fds of one process ([`carried_names_in`]). On a socket that
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

use crate::files::kind::dump::{Carried, DumpFd, DumpKind, Ids};
use crate::files::kind::{CarriedFile, LoadCtx, Made, OpenKind, Phase, PhaseCtx, RestoreKind};
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
/// Largest queue crust restores for one socket.
const MAX_QUEUE: usize = 256 << 20;

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

/// Every unix socket of network namespace `ns`, by inode.
fn diag_all(ns: &crate::net::SkNetns) -> Result<HashMap<u32, DiagSock>, Error> {
    let me = crust_sys::process::getpid();
    let nl = ns.run(|| {
        su::netlink_socket(su::NETLINK_SOCK_DIAG).map_err(sys_err(me, "socket(NETLINK_SOCK_DIAG)"))
    })?;
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

/// The process (its pid as the images number it) whose fd numbers name
/// the files that the files carried by messages queued on socket `id`
/// refer to: an epoll no task holds has its targets recorded as fds of
/// that process, which registers them at restore. It is the process that
/// holds the socket a restore sends those messages from, as CRIU 4.2
/// picks it (the "queuer", whose task opens the carried files): the
/// socket's peer if connected back, else the first socket (by files.img
/// id) connected to it, else the socket itself; the first of those a
/// process holds, and of its holders the one with the lowest pid.
/// `socks`: (files.img id, inode, peer inode) of every socket of the tree
/// in files.img id order; `holders(ino)`: the pids holding a socket.
pub(crate) fn carried_names_in(
    socks: &[(u32, u32, u32)],
    id: u32,
    holders: &dyn Fn(u32) -> Vec<i32>,
) -> Option<i32> {
    let &(_, ino, peer) = socks.iter().find(|s| s.0 == id)?;
    let mutual = socks
        .iter()
        .filter(|s| s.1 == peer && s.2 == ino && s.1 != ino);
    let connected = socks.iter().filter(|s| s.2 == ino && s.1 != ino);
    mutual
        .chain(connected)
        .map(|s| s.1)
        .chain(std::iter::once(ino))
        .find_map(|i| holders(i).into_iter().min())
}

mod bind;
mod dump;
mod restore;
pub use dump::*;
pub use restore::*;

// ------------------------------------------------------------ kind of file

/// Unix sockets as a kind of file (see [`crate::files::kind`]): read from
/// files.img, checked against the fd tables.
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let mut unix = UnixFiles::load(ctx.dir, ctx.files, ctx.opts.ext_unix_sk)?;
    unix.check_fds(ctx.dir, ctx.live())?;
    // A fd table several processes share counts once, for the first
    // (its fds are collected there at dump, and built there at restore).
    let mut tables = std::collections::HashSet::new();
    let own_tables = ctx
        .procs
        .iter()
        .filter(|p| p.ids.is_none_or(|i| tables.insert(i.files_id)))
        .filter_map(|p| Some((p.pid, p.fds?)));
    unix.name_carried(own_tables);
    Ok(Box::new(unix))
}

impl RestoreKind for UnixFiles {
    fn name(&self) -> &'static str {
        "unix sockets"
    }

    fn carried(&self) -> Vec<CarriedFile> {
        self.carried_files()
    }

    /// Queued messages may carry the descriptions of kinds made before.
    fn make(&mut self, made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(self.open(made)?))
    }
}

impl OpenKind for OpenUnix {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::UNIXSK).then_some("unix socket")
    }

    fn keep(&mut self) {
        OpenUnix::keep(self);
    }

    /// At [`Phase::TasksExist`], the messages that carry their senders'
    /// credentials are queued (the kernel wants a live pid).
    fn at(
        &mut self,
        phase: Phase,
        loaded: &dyn RestoreKind,
        made: &Made<'_>,
        ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        let (Phase::TasksExist, Some(files)) = (phase, loaded.as_any().downcast_ref::<UnixFiles>())
        else {
            return Ok(());
        };
        self.refill_late(files, made, ctx.host_pid)
    }
}

impl DumpKind for UnixDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let Some((ino, sock)) = f.socket_of(&[libc::AF_UNIX]) else {
            return Ok(None);
        };
        let (pid, fd, flags) = (f.pid, f.fd, f.info.flags);
        if f.carried.is_none() {
            self.held_by(ino, pid);
        }
        let known = self.known(ino);
        let id = ids.id_for(known, |_, id| {
            self.add(pid, fd, sock, ino, flags, id).map(|_| None)
        })?;
        Ok(Some((id, fd_types::UNIXSK)))
    }

    fn carried_fds(&self) -> Result<Vec<Carried>, Error> {
        self.carried_pending()
    }

    fn carried_entries(&mut self, got: &[FdinfoEntry]) -> Result<(), Error> {
        self.set_carried(got)
    }

    /// Ids for the peers crust saw outside the tree.
    fn late_entries(&mut self, next_id: &mut u32) -> Result<Vec<FileEntry>, Error> {
        self.finish(next_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::classify::socket_inode;

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
        let all = diag_all(&crate::net::SkNetns::default()).unwrap();
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
        let u =
            UnixFiles::load(&dir, &crate::files::loaded::LoadedFiles::read(&dir), false).unwrap();
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
        // A relative name needs the absolute directory it was bound in.
        e.name_dir = Some("/tmp".into());
        assert!(check_entry(&e).is_ok());
        e.name_dir = Some("tmp".into());
        assert!(check_entry(&e).is_err());
        e.name_dir = None;
        e.name = vec![b'/'; 200];
        assert!(check_entry(&e).is_err());
        e.name = Vec::new();
        e.uflags = 4;
        assert!(check_entry(&e).is_err());
        e.uflags = 0;
        e.shutdown = Some(9);
        assert!(check_entry(&e).is_err());
    }

    /// The process naming what carried files refer to: the holder (lowest
    /// pid) of the peer connected back, else of the first socket connected
    /// to it, else of the socket itself.
    #[test]
    fn carried_files_are_named_by_the_sender() {
        let socks = [(8, 100, 101), (9, 101, 100), (10, 102, 101), (11, 103, 0)];
        let held = |h: &'static [(u32, &'static [i32])]| {
            move |ino: u32| -> Vec<i32> {
                h.iter()
                    .find(|x| x.0 == ino)
                    .map(|x| x.1.to_vec())
                    .unwrap_or_default()
            }
        };
        let all = held(&[
            (100, &[70, 66]),
            (101, &[66, 71]),
            (102, &[50]),
            (103, &[80]),
        ]);
        assert_eq!(carried_names_in(&socks, 9, &all), Some(66));
        assert_eq!(carried_names_in(&socks, 8, &all), Some(66));
        // Not connected back to 101: itself.
        assert_eq!(carried_names_in(&socks, 10, &all), Some(50));
        assert_eq!(carried_names_in(&socks, 11, &all), Some(80));
        // The peer is held by no process (carried itself): the next sender.
        let no_peer = held(&[(101, &[66]), (102, &[50])]);
        assert_eq!(carried_names_in(&socks, 9, &no_peer), Some(50));
        assert_eq!(carried_names_in(&socks, 12, &no_peer), None);
        assert_eq!(carried_names_in(&socks, 11, &no_peer), None);
    }

    #[test]
    fn diag_parse_rejects_garbage() {
        assert!(parse_diag(&[0xff; 20]).is_err());
        let (v, done) = parse_diag(&[]).unwrap();
        assert!(v.is_empty() && !done);
    }
}
