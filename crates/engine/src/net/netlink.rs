//! Netlink sockets (AF_NETLINK), as CRIU's NETLINKSK entries of files.img,
//! and the sock_diag plumbing the packet sockets share.
//!
//! Dump: the protocol, state, own port id, multicast groups and the
//! connected peer (port id, group) come from NETLINK_DIAG (sock_diag), which
//! lists the bound sockets of crust's network namespace; a socket it does
//! not list was never bound, and only its protocol (SO_PROTOCOL) matters.
//! Groups are kept as 32-bit words of the kernel's bitmap, every word up to
//! the last non-zero one (CRIU 4.2 refuses more than one word; crust keeps
//! them). The socket options (SO_*) and the status flags come from a copy
//! of the socket crust takes with pidfd_getfd. Like CRIU, a socket with
//! unread messages is refused: the format has no room for them; so is one
//! still answering a dump request (the kernel would produce the rest on
//! the old socket only), and one bound in another network namespace. The
//! netlink options (NETLINK_PKTINFO, NETLINK_BROADCAST_ERROR,
//! NETLINK_NO_ENOBUFS, NETLINK_LISTEN_ALL_NSID, NETLINK_CAP_ACK) have no
//! field in CRIU's format either, and CRIU drops them silently: crust says
//! in the dump log which ones are lost.
//!
//! Restore: crust makes each socket before any task exists: socket, bind
//! to the port id with groups 1-32, NETLINK_ADD_MEMBERSHIP for the groups
//! above 32, connect to the recorded peer, then socket options and status
//! flags. Tasks get them with [`crate::files::fdpass`].

use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, MadeOf, OpenKind, RestoreKind};
use crate::net::SkNetns;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::sk_netlink::NetlinkSkEntry;
use crust_sys::rawsk;
use crust_sys::unix as su;
use log::{debug, warn};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

// ------------------------------------------------------------ sock_diag

// The netlink codec is crust-netlink's; these names stay for the callers.
pub(crate) use crust_netlink::{attrs, diag_of, u16_at, u32_at};
#[cfg(test)]
use crust_netlink::{split_msgs, NLMSG_DONE, NLMSG_ERROR};

/// Run a sock_diag dump of `what` (for messages) with the request body
/// `req`; every answer message body is given to `each`.
/// `ns`: the network namespace whose sockets are listed.
pub(crate) fn diag_dump(
    what: &str,
    ns: &SkNetns,
    req: &[u8],
    each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), Error> {
    use crust_netlink::DumpError;
    let me = crust_sys::process::getpid();
    let mut nl = ns.run(|| {
        crust_netlink::Socket::sock_diag().map_err(sys_err(me, "socket(NETLINK_SOCK_DIAG)"))
    })?;
    crust_netlink::diag_dump(&mut nl, req, each).map_err(|e| match e {
        DumpError::Send { source } => sys_err(me, format!("sending the {what} request"))(source),
        DumpError::Recv { source } => sys_err(me, format!("receiving the {what} answer"))(source),
        DumpError::Answer { why } => Error::Sys {
            pid: me,
            op: format!("parsing the {what} answer: {why}"),
            source: std::io::Error::from_raw_os_error(libc::EPROTO),
        },
    })
}

// ------------------------------------------------------------ netlink_diag

/// NDIAG_PROTO_ALL: every protocol.
const NDIAG_PROTO_ALL: u8 = 255;
/// NDIAG_SHOW_GROUPS | NDIAG_SHOW_FLAGS.
const NDIAG_SHOW: u32 = 0x2 | 0x8;
const NETLINK_DIAG_GROUPS: u16 = 1;
const NETLINK_DIAG_FLAGS: u16 = 4;
/// ndiag_state of a connected socket (the socket's sk_state: unconnected
/// ones say 0 or TCP_CLOSE, 7).
const NETLINK_CONNECTED: u32 = 1;
/// Size of struct netlink_diag_msg.
const DIAG_MSG_LEN: usize = 28;

/// NDIAG_FLAG_CB_RUNNING: a dump request is being answered.
const NDIAG_FLAG_CB_RUNNING: u32 = 0x1;

/// NETLINK_DIAG_FLAGS bits of the options and the option each stands for.
const FLAG_NAMES: [(u32, &str); 5] = [
    (0x2, "NETLINK_PKTINFO"),
    (0x4, "NETLINK_BROADCAST_ERROR"),
    (0x8, "NETLINK_NO_ENOBUFS"),
    (0x10, "NETLINK_LISTEN_ALL_NSID"),
    (0x20, "NETLINK_CAP_ACK"),
];

/// What NETLINK_DIAG says of one socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetlinkDiag {
    pub ino: u32,
    pub protocol: u32,
    pub state: u32,
    pub portid: u32,
    pub dst_portid: u32,
    pub dst_group: u32,
    /// Multicast group bitmap as 32-bit words, trailing zero words cut.
    pub groups: Vec<u32>,
    /// NETLINK_DIAG_FLAGS, if reported.
    pub flags: Option<u32>,
}

/// The netlink_diag_req of a dump of every netlink socket.
fn netlink_diag_req() -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.push(libc::AF_NETLINK as u8);
    b.push(NDIAG_PROTO_ALL);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // ino
    b.extend_from_slice(&NDIAG_SHOW.to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // no cookie
    b
}

/// Parse one netlink_diag_msg and its attributes.
pub fn parse_netlink_diag(b: &[u8]) -> Result<NetlinkDiag, String> {
    if b.len() < DIAG_MSG_LEN {
        return Err(format!("short netlink_diag_msg ({} bytes)", b.len()));
    }
    let mut d = NetlinkDiag {
        protocol: b[2] as u32,
        state: b[3] as u32,
        portid: u32_at(b, 4).unwrap_or(0),
        dst_portid: u32_at(b, 8).unwrap_or(0),
        dst_group: u32_at(b, 12).unwrap_or(0),
        ino: u32_at(b, 16).unwrap_or(0),
        ..Default::default()
    };
    for (ty, data) in
        attrs(b, DIAG_MSG_LEN).map_err(|e| format!("netlink socket {}: {e}", d.ino))?
    {
        match ty {
            NETLINK_DIAG_GROUPS => {
                // An array of unsigned long: on a little-endian machine its
                // 32-bit words are the groups 1-32, 33-64, ... in order.
                d.groups = data
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                while d.groups.last() == Some(&0) {
                    d.groups.pop();
                }
            }
            NETLINK_DIAG_FLAGS => d.flags = u32_at(data, 0),
            _ => {}
        }
    }
    Ok(d)
}

/// Every bound netlink socket of network namespace `ns`, by inode.
fn diag_all(ns: &SkNetns) -> Result<HashMap<u32, NetlinkDiag>, Error> {
    let mut out = HashMap::new();
    diag_dump("NETLINK_DIAG", ns, &netlink_diag_req(), |m| {
        let d = parse_netlink_diag(m)?;
        out.insert(d.ino, d);
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------- dump

/// Netlink sockets of a dumped tree.
#[derive(Default)]
pub struct NetlinkDump {
    /// files.img id by inode.
    ids: HashMap<u32, u32>,
    /// NETLINK_DIAG answer, read when the first socket is met.
    diag: Option<HashMap<u32, NetlinkDiag>>,
    /// The network namespace of the tree's sockets.
    pub netns: SkNetns,
}

impl NetlinkDump {
    /// The files.img id of socket inode `ino` if it was seen already.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
    }

    /// Dump the netlink socket on fd `fd` of `pid` (`sock`: crust's copy
    /// of it; inode `ino`, status flags `flags`) as files.img entry `id`.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        sock: OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<FileEntry, Error> {
        let sock = sock.as_fd();
        let here = format!("process {pid} fd {fd} (netlink socket {ino})");
        if rawsk::has_data(sock).map_err(sys_err(pid, format!("poll of fd {fd}")))? {
            return Err(Error::unsupported(format!(
                "{here} has unread messages, which CRIU's image format cannot keep"
            )));
        }
        let ns = self.netns.clone();
        let mine = ns.of_socket(sock);
        if mine.is_other(&ns) {
            return Err(Error::unsupported(format!(
                "{here} is in network namespace {} of the tree, not its root's: crust restores netlink sockets of the root's network namespace only",
                mine.id
            )));
        }
        let mut bound = true;
        let d = match diag_of(&mut self.diag, ino, || diag_all(&ns))? {
            Some(d) => d,
            None => {
                // Never bound: not in the kernel's tables. A bound socket
                // missing from them is in another network namespace.
                let (portid, _) = rawsk::netlink_name(sock, false)
                    .map_err(sys_err(pid, format!("getsockname of fd {fd}")))?;
                if portid != 0 {
                    return Err(Error::unsupported(format!(
                        "{here} is not in {} (a tree's processes share one network namespace)",
                        ns.describe()
                    )));
                }
                bound = false;
                let protocol = su::getsockopt_int(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL)
                    .map_err(sys_err(pid, format!("SO_PROTOCOL of fd {fd}")))?;
                NetlinkDiag {
                    ino,
                    protocol: protocol as u32,
                    ..Default::default()
                }
            }
        };
        if d.flags.is_some_and(|f| f & NDIAG_FLAG_CB_RUNNING != 0) {
            return Err(Error::unsupported(format!(
                "{here} is in the middle of answering a dump request, whose rest a restored socket would never get"
            )));
        }
        if let Some(f) = d.flags {
            let lost: Vec<&str> = FLAG_NAMES
                .iter()
                .filter(|(bit, _)| f & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            if !lost.is_empty() {
                warn!(
                    "{here}: {} not kept (CRIU's image format has no room for them)",
                    lost.join(", ")
                );
            }
        }
        if d.state == NETLINK_CONNECTED && d.dst_group > 32 {
            return Err(Error::unsupported(format!(
                "{here} is connected to multicast group {}, above 32, which connect() cannot name",
                d.dst_group
            )));
        }
        let opts = crate::net::sock::dump_sk_opts(sock)
            .map_err(sys_err(pid, format!("socket options of fd {fd}")))?;
        debug!(
            "{here}: protocol {} port {} groups {:x?} state {} peer {}/{}",
            d.protocol, d.portid, d.groups, d.state, d.dst_portid, d.dst_group
        );
        self.ids.insert(ino, id);
        Ok(FileEntry {
            r#type: fd_types::NETLINKSK,
            id,
            nlsk: Some(Box::new(NetlinkSkEntry {
                id,
                ino,
                protocol: d.protocol,
                state: d.state,
                flags: flags & !(libc::O_CLOEXEC as u32),
                portid: d.portid,
                groups: d.groups,
                dst_portid: d.dst_portid,
                dst_group: d.dst_group,
                fown: FownEntry::default(),
                opts,
                // As CRIU: a bound socket names its namespace; an unbound
                // one only when the namespace is the tree's own.
                ns_id: (bound || ns.pid.is_some()).then_some(ns.id),
                ..Default::default()
            })),
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------- restore

/// The netlink sockets of an image set, by files.img id.
#[derive(Debug, Default)]
pub struct NetlinkFiles {
    socks: BTreeMap<u32, NetlinkSkEntry>,
}

/// Netlink sockets crust made, by files.img id.
pub type OpenNetlinks = crate::files::fdpass::MadeFds;

/// Whether an image of `e` can be restored; the reason if not.
fn check_entry(e: &NetlinkSkEntry) -> Result<(), String> {
    if e.protocol > 31 {
        return Err(format!("protocol {} is not a netlink protocol", e.protocol));
    }
    if e.state == NETLINK_CONNECTED && e.dst_group > 32 {
        return Err(format!("connected to group {}, above 32", e.dst_group));
    }
    if e.groups.len() > 1024 {
        return Err(format!("{} words of groups", e.groups.len()));
    }
    if e.ns_id.is_some_and(|n| n != 0) {
        debug!(
            "netlink socket {}: net namespace id {:?} ignored",
            e.id, e.ns_id
        );
    }
    Ok(())
}

impl NetlinkFiles {
    /// Read and check the NETLINKSK entries of files.img.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
    ) -> Result<NetlinkFiles, Error> {
        let socks = crate::util::load_kind(
            dir,
            loaded.entries()?,
            fd_types::NETLINKSK,
            "netlink socket",
            |f| f.nlsk.map(|e| (e.id, *e)),
            check_entry,
        )?;
        Ok(NetlinkFiles { socks })
    }

    /// Make every netlink socket.
    pub fn open(&self) -> Result<OpenNetlinks, Error> {
        let me = crust_sys::process::getpid();
        let mut out = OpenNetlinks::default();
        for (id, e) in &self.socks {
            let s = open_one(e).map_err(|(op, source)| Error::Sys {
                pid: me,
                op: format!(
                    "making netlink socket {id} (protocol {}, port {}): {op}",
                    e.protocol, e.portid
                ),
                source,
            })?;
            out.insert(*id, s);
        }
        Ok(out)
    }
}

type OpResult<T> = Result<T, (String, std::io::Error)>;

fn at(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> (String, std::io::Error) {
    let op = op.into();
    move |e| (op, e)
}

/// NETLINK_ADD_MEMBERSHIP (linux/netlink.h).
const NETLINK_ADD_MEMBERSHIP: i32 = 1;

fn open_one(e: &NetlinkSkEntry) -> OpResult<OwnedFd> {
    let s = su::netlink_socket(e.protocol as i32).map_err(at("socket"))?;
    let sf = s.as_fd();
    let low = e.groups.first().copied().unwrap_or(0);
    if e.portid != 0 {
        rawsk::netlink_bind(sf, e.portid, low)
            .map_err(at(format!("bind to port {} groups {low:#x}", e.portid)))?;
    } else if low != 0 {
        // Subscribed but never bound (NETLINK_ADD_MEMBERSHIP only).
        for b in 0..32 {
            if low & (1 << b) != 0 {
                add_membership(sf, b + 1)?;
            }
        }
    }
    for (w, word) in e.groups.iter().enumerate().skip(1) {
        for b in 0..32u32 {
            if word & (1 << b) != 0 {
                add_membership(sf, w as u32 * 32 + b + 1)?;
            }
        }
    }
    if e.state == NETLINK_CONNECTED {
        let mask = if e.dst_group == 0 {
            0
        } else {
            1u32 << (e.dst_group - 1)
        };
        rawsk::netlink_connect(sf, e.dst_portid, mask).map_err(at(format!(
            "connect to port {} group {}",
            e.dst_portid, e.dst_group
        )))?;
    }
    crate::net::sock::set_sk_opts(sf, &e.opts).map_err(at("socket options"))?;
    let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
    crust_sys::pipe::set_status_flags(sf, (e.flags & keep) as i32).map_err(at("F_SETFL"))?;
    Ok(s)
}

fn add_membership(s: BorrowedFd<'_>, group: u32) -> OpResult<()> {
    su::setsockopt_int(s, libc::SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group as i32)
        .map_err(at(format!("NETLINK_ADD_MEMBERSHIP of group {group}")))
}

// ------------------------------------------------------------ kind of file

/// Netlink sockets as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(NetlinkFiles::load(ctx.dir, ctx.files)?))
}

impl RestoreKind for NetlinkFiles {
    fn name(&self) -> &'static str {
        "netlink sockets"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(MadeOf {
            fds: self.open()?,
            what: "netlink socket",
            types: &[fd_types::NETLINKSK],
        }))
    }
}

impl DumpKind for NetlinkDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let Some((ino, sock)) = f.socket_of(&[libc::AF_NETLINK]) else {
            return Ok(None);
        };
        let (pid, fd, flags) = (f.pid, f.fd, f.info.flags);
        let known = self.known(ino);
        let id = ids.id_for(known, |_, id| {
            self.add(pid, fd, sock, ino, flags, id).map(Some)
        })?;
        Ok(Some((id, fd_types::NETLINKSK)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&su::SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(body);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_a_made_up_answer() {
        let mut body = vec![libc::AF_NETLINK as u8, 3, 0, 1];
        for v in [1234u32, 0, 5, 777, 0xffff_ffff, 0xffff_ffff] {
            body.extend_from_slice(&v.to_ne_bytes());
        }
        // Groups 1 and 34 (words 0x1, 0x2), as two unsigned longs.
        let mut g = Vec::new();
        g.extend_from_slice(&0x0000_0002_0000_0001u64.to_le_bytes());
        g.extend_from_slice(&0u64.to_le_bytes());
        body.extend(attr(NETLINK_DIAG_GROUPS, &g));
        body.extend(attr(NETLINK_DIAG_FLAGS, &0x6u32.to_ne_bytes()));
        let mut buf = msg(&body);
        let mut done = msg(&[0; 4]);
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf.extend(done);
        let (msgs, fin) = split_msgs(&buf).unwrap();
        assert!(fin);
        assert_eq!(msgs.len(), 1);
        let d = parse_netlink_diag(msgs[0]).unwrap();
        assert_eq!(
            d,
            NetlinkDiag {
                ino: 777,
                protocol: 0,
                state: 1,
                portid: 1234,
                dst_portid: 0,
                dst_group: 5,
                groups: vec![1, 2],
                flags: Some(6),
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_netlink_diag(&[0; 10]).is_err());
        let mut body = vec![0u8; DIAG_MSG_LEN];
        body.extend_from_slice(&[200, 0, 1, 0]); // attribute longer than the message
        assert!(parse_netlink_diag(&body).is_err());
        let mut err = msg(&(-libc::EINVAL).to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(split_msgs(&err).unwrap_err().contains("error"));
        assert!(split_msgs(&[40, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn live_socket_round_trip() {
        let s = su::netlink_socket(0).unwrap();
        rawsk::netlink_bind(s.as_fd(), 0, 1).unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            s.as_raw_fd()
        }))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino() as u32
        })
        .unwrap();
        su::setsockopt_int(s.as_fd(), libc::SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, 33).unwrap();
        let all = diag_all(&SkNetns::default()).unwrap();
        let d = &all[&ino];
        assert_eq!(d.protocol, 0);
        assert_eq!(d.groups, vec![1, 1]);
        let e = NetlinkSkEntry {
            id: 1,
            ino,
            protocol: 0,
            portid: 0,
            groups: d.groups.clone(),
            ..Default::default()
        };
        let t = open_one(&e).unwrap();
        let (_, g) = rawsk::netlink_name(t.as_fd(), false).unwrap();
        assert_eq!(g, 1);
    }
}
