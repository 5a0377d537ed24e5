//! Inet sockets (TCP, UDP, UDP-Lite, ICMP ping and raw; IPv4 and IPv6):
//! `files.img` INETSK entries and, for TCP connections, `tcp-stream-N.img`
//! (N: the socket's inode, in hex), as CRIU writes them.
//!
//! Dump: crust takes a copy of each socket (pidfd_getfd: the same socket)
//! and reads it from outside: sock_diag for state, queues and shutdown,
//! getsockopt for options. Connections (`--tcp-established`) are locked
//! out of the network ([`crate::net::netlock`]) and put in repair mode
//! ([`crust_soccr`]); crust keeps its copies in repair mode until the tree
//! is killed, so closing them sends nothing. Datagrams queued on UDP
//! sockets are peeked (SO_PEEK_OFF, nothing consumed) and stored in
//! `sk-queues.img` with their sender, as unix sockets' messages are.
//!
//! Restore: crust makes every socket itself (options, bind, listen, or
//! the whole connection rebuilt in repair mode), gives them to the tasks
//! over SCM_RIGHTS, and once every task is built takes the connections
//! out of repair mode, sends what was never sent, and unlocks the
//! network. Queued datagrams are put back by sending them to the socket
//! from their original sender's address through a raw socket.

use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, OpenKind, Phase, PhaseCtx, RestoreKind};
use crate::net::accept::AcceptServer;
use crate::net::netlink::{attrs, diag_dump, u32_at};
use crate::net::netlock::{self, Conn};
use crate::net::SkNetns;
use crate::util::sys_err;
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::sk_inet::{InetSkEntry, IpOptsEntry, IpOptsRawEntry};
use crust_images::proto::sk_opts::SkOptsEntry;
use crust_images::proto::tcp_stream::{TcpOptsEntry, TcpStreamEntry};
use crust_soccr::{tcp_state, Builder, Repair, TcpState, Window};
use crust_sys::net as sn;
use crust_sys::unix as su;
use log::{debug, info, warn};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

// Kernel TCP states (crust-soccr's numbers), as inet_sk_entry.state
// holds them.
const TCP_ESTABLISHED: u32 = tcp_state::ESTABLISHED as u32;
const TCP_SYN_SENT: u32 = tcp_state::SYN_SENT as u32;
const TCP_CLOSE: u32 = tcp_state::CLOSE as u32;
const TCP_LISTEN: u32 = tcp_state::LISTEN as u32;

const IPPROTO_UDPLITE: i32 = 136;
const SO_PEEK_OFF: i32 = 42;

/// Is this TCP state one of a live connection that repair mode carries
/// over? (CLOSE is one only for a socket that had a peer: see
/// [`closed_connection`].)
fn is_connection(state: u32) -> bool {
    state != TCP_CLOSE && u8::try_from(state).is_ok_and(TcpState::supported_state)
}

/// A TCP socket whose connection is over (reset, or closed both ways) but
/// still holds its peer, and maybe bytes it received: CRIU carries it over
/// in repair mode like a connection.
fn closed_connection(e: &InetSkEntry) -> bool {
    e.proto as i32 == libc::IPPROTO_TCP && e.state == TCP_CLOSE && e.dst_port != 0
}

fn state_name(state: u32) -> &'static str {
    u8::try_from(state).map_or("UNKNOWN", crust_soccr::state_name)
}

fn proto_name(proto: u32) -> &'static str {
    match proto as i32 {
        libc::IPPROTO_TCP => "TCP",
        libc::IPPROTO_UDP => "UDP",
        IPPROTO_UDPLITE => "UDP-Lite",
        libc::IPPROTO_ICMP => "ICMP",
        libc::IPPROTO_ICMPV6 => "ICMPv6",
        _ => "raw",
    }
}

// ---------------------------------------------------------------- addresses

/// An address as inet_sk_entry stores it: the raw network-order bytes read
/// as host-order u32 words (1 word for IPv4, 4 for IPv6).
pub fn addr_words(ip: &IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(a) => vec![u32::from_ne_bytes(a.octets())],
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// The address of `words` for a socket of `family`.
pub fn words_addr(family: u32, words: &[u32]) -> Option<IpAddr> {
    match (family as i32, words.len()) {
        (libc::AF_INET, 1) => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        (libc::AF_INET, 0) | (libc::AF_INET6, 0) => Some(if family as i32 == libc::AF_INET {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }),
        (libc::AF_INET6, 4) => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn show(a: &SocketAddr) -> String {
    a.to_string()
}

// ---------------------------------------------------------------- sock_diag

/// One inet socket as INET_DIAG reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub family: u8,
    pub proto: u8,
    pub state: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// LISTEN: connections waiting to be accepted; else bytes to read.
    pub rqueue: u32,
    /// LISTEN: the backlog; else bytes in the send queue.
    pub wqueue: u32,
    pub ino: u32,
    pub shutdown: u8,
}

const INET_DIAG_SHUTDOWN: u16 = 8;

/// The inet_diag_req_v2 asking for every socket of (family, proto).
fn diag_request(family: u8, proto: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(56);
    b.push(family);
    b.push(proto);
    b.push(0); // idiag_ext: INET_DIAG_SHUTDOWN comes anyway
    b.push(0);
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    b.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    b
}

fn diag_addr(family: u8, b: &[u8], port: u16) -> SocketAddr {
    let ip = if family as i32 == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    SocketAddr::new(ip, port)
}

/// One inet_diag_msg (a SOCK_DIAG_BY_FAMILY message body) and its
/// attributes.
pub fn parse_diag(b: &[u8], proto: u8) -> Result<Diag, String> {
    if b.len() < 72 {
        return Err("short inet_diag_msg".into());
    }
    let family = b[0];
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let mut d = Diag {
        family,
        proto,
        state: b[1],
        src: diag_addr(family, &b[8..24], sport),
        dst: diag_addr(family, &b[24..40], dport),
        rqueue: u32_at(b, 56).unwrap_or(0),
        wqueue: u32_at(b, 60).unwrap_or(0),
        ino: u32_at(b, 68).unwrap_or(0),
        shutdown: 0,
    };
    for (ty, data) in attrs(b, 72).map_err(|e| format!("socket {}: {e}", d.ino))? {
        if ty == INET_DIAG_SHUTDOWN && !data.is_empty() {
            d.shutdown = data[0];
        }
    }
    Ok(d)
}

/// Every TCP, UDP and UDP-Lite socket of network namespace `ns`, by
/// inode.
fn diag_all(ns: &SkNetns) -> Result<HashMap<u32, Diag>, Error> {
    let mut out = HashMap::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for proto in [
            libc::IPPROTO_TCP as u8,
            libc::IPPROTO_UDP as u8,
            IPPROTO_UDPLITE as u8,
        ] {
            let got = diag_dump("INET_DIAG", ns, &diag_request(family, proto), |m| {
                let d = parse_diag(m, proto)?;
                out.insert(d.ino, d);
                Ok(())
            });
            match got {
                Ok(()) => {}
                // UDP-Lite may be missing from this kernel.
                Err(_) if proto as i32 == IPPROTO_UDPLITE => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- options

fn int_opt(s: BorrowedFd<'_>, level: i32, opt: i32) -> Option<i32> {
    su::getsockopt_int(s, level, opt).ok()
}

/// The socket options CRIU keeps in sk_opts_entry (with the bound device
/// and the BPF filter), plus linger.
fn dump_sk_opts(s: BorrowedFd<'_>) -> std::io::Result<SkOptsEntry> {
    let mut o = crate::net::sock::dump_sk_opts(s)?;
    let mut l = [0u8; 8];
    if sn::getsockopt(s, libc::SOL_SOCKET, libc::SO_LINGER, &mut l).is_ok() {
        let on = i32::from_ne_bytes([l[0], l[1], l[2], l[3]]);
        let secs = i32::from_ne_bytes([l[4], l[5], l[6], l[7]]);
        if on != 0 {
            o.so_linger = Some(secs as u32);
        }
    }
    Ok(o)
}

fn tcp_opts(s: BorrowedFd<'_>) -> TcpOptsEntry {
    let t = |o: i32| int_opt(s, libc::IPPROTO_TCP, o);
    TcpOptsEntry {
        cork: t(libc::TCP_CORK).filter(|v| *v != 0).map(|_| true),
        nodelay: t(libc::TCP_NODELAY).filter(|v| *v != 0).map(|_| true),
        keepcnt: t(libc::TCP_KEEPCNT).map(|v| v as u32),
        keepidle: t(libc::TCP_KEEPIDLE).map(|v| v as u32),
        keepintvl: t(libc::TCP_KEEPINTVL).map(|v| v as u32),
        ..Default::default()
    }
}

fn ip_opts(s: BorrowedFd<'_>, family: i32, ty: i32, proto: i32) -> IpOptsEntry {
    let v4 = |o: i32| int_opt(s, libc::IPPROTO_IP, o);
    let mut e = IpOptsEntry::default();
    if family == libc::AF_INET {
        e.freebind = v4(libc::IP_FREEBIND).filter(|v| *v != 0).map(|_| true);
        e.pktinfo = v4(libc::IP_PKTINFO).filter(|v| *v != 0).map(|_| true);
        e.tos = v4(libc::IP_TOS).filter(|v| *v != 0).map(|v| v as u32);
        e.ttl = v4(libc::IP_TTL).map(|v| v as u32);
    } else {
        let v6 = |o: i32| int_opt(s, libc::IPPROTO_IPV6, o);
        e.freebind = v6(libc::IPV6_FREEBIND).filter(|v| *v != 0).map(|_| true);
        e.pktinfo = v6(libc::IPV6_RECVPKTINFO).filter(|v| *v != 0).map(|_| true);
        e.tos = v6(libc::IPV6_TCLASS).filter(|v| *v > 0).map(|v| v as u32);
        e.ttl = v6(libc::IPV6_UNICAST_HOPS).map(|v| v as u32);
    }
    if ty == libc::SOCK_RAW {
        let mut raw = IpOptsRawEntry::default();
        if family == libc::AF_INET {
            raw.hdrincl = v4(libc::IP_HDRINCL).filter(|v| *v != 0).map(|_| true);
            raw.nodefrag = v4(IP_NODEFRAG).filter(|v| *v != 0).map(|_| true);
            if proto == libc::IPPROTO_ICMP {
                let mut f = [0u8; 4];
                if sn::getsockopt(s, libc::SOL_RAW, ICMP_FILTER, &mut f).ok() == Some(4) {
                    raw.icmpv_filter = vec![u32::from_ne_bytes(f)];
                }
            }
        } else {
            let v6 = |o: i32| int_opt(s, libc::IPPROTO_IPV6, o);
            raw.hdrincl = v6(IPV6_HDRINCL).filter(|v| *v != 0).map(|_| true);
            raw.checksum = int_opt(s, libc::SOL_RAW, IPV6_CHECKSUM)
                .filter(|v| *v >= 0)
                .map(|_| true);
            if proto == libc::IPPROTO_ICMPV6 {
                let mut f = [0u8; 32];
                if sn::getsockopt(s, libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &mut f).ok() == Some(32) {
                    raw.icmpv_filter = f
                        .chunks(4)
                        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                }
            }
        }
        e.raw = Some(raw);
    }
    e
}

const IP_NODEFRAG: i32 = 22;
const ICMP_FILTER: i32 = 1;
const IPV6_HDRINCL: i32 = 36;
const IPV6_CHECKSUM: i32 = 7;
const ICMPV6_FILTER: i32 = 1;

mod dump;
mod restore;
pub use dump::*;
pub use restore::*;

// ------------------------------------------------------------ kind of file

/// Inet sockets as a kind of file (see [`crate::files::kind`]): those the
/// fds use, read from files.img.
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let inet = InetFiles::load(
        ctx.dir,
        ctx.files,
        &ctx.ids_of_type(fd_types::INETSK),
        ctx.opts.tcp_established,
        ctx.opts.tcp_close,
        ctx.netlock,
    )?;
    Ok(Box::new(inet))
}

impl RestoreKind for InetFiles {
    fn name(&self) -> &'static str {
        "inet sockets"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(self.open()?))
    }
}

impl OpenKind for OpenInet {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::INETSK).then_some("inet socket")
    }

    /// At [`Phase::NetworkUp`], the network is unlocked and then the
    /// connections leave repair mode (what was never sent goes out); at
    /// [`Phase::Handover`], the connections waiting in accept queues go to
    /// the accept server, if there is one.
    fn at(
        &mut self,
        phase: Phase,
        _loaded: &dyn RestoreKind,
        _made: &Made<'_>,
        ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        match phase {
            Phase::NetworkUp => self.finish(),
            Phase::Handover => {
                let server = ctx.accept_server.as_deref_mut();
                if let Some(sv) = server.and_then(|s| s.downcast_mut::<AcceptServer>()) {
                    sv.queues = self.take_accept_queues()?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl DumpKind for InetDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let Some((ino, sock)) = f.socket_of(&[libc::AF_INET, libc::AF_INET6]) else {
            return Ok(None);
        };
        let (pid, fd, flags) = (f.pid, f.fd, f.info.flags);
        let known = self.known(ino);
        let id = ids.id_for(known, |_, id| {
            self.add(pid, fd, sock, ino, flags, id).map(|_| None)
        })?;
        Ok(Some((id, fd_types::INETSK)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_round_trip() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let w = addr_words(&a);
        assert_eq!(w, vec![u32::from_ne_bytes([127, 0, 0, 1])]);
        assert_eq!(words_addr(libc::AF_INET as u32, &w), Some(a));
        let b: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let w = addr_words(&b);
        assert_eq!(w.len(), 4);
        assert_eq!(words_addr(libc::AF_INET6 as u32, &w), Some(b));
        assert_eq!(words_addr(libc::AF_INET as u32, &[1, 2]), None);
    }

    #[test]
    fn golden_tcp_addresses() {
        // CRIU 4.2 golden `tcp`: 127.0.0.1 is stored as 16777343.
        assert_eq!(
            words_addr(libc::AF_INET as u32, &[16777343]),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn sockaddr_bytes_round_trip() {
        for a in ["10.0.0.2:5353", "[fe80::1]:53", "[::ffff:1.2.3.4]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(sn::from_bytes(&sn::to_bytes(&a)), Some(a));
        }
        assert_eq!(sn::from_bytes(&[1, 0]), None);
    }

    #[test]
    fn internet_checksum() {
        // RFC 1071 example words.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(crust_soccr::checksum(&[&b]), !0xddf2);
    }

    #[test]
    fn diag_parse() {
        assert!(parse_diag(&[0xff; 20], 6).is_err());
        // 127.0.0.1:80 -> 10.0.0.2:1234, ESTABLISHED, inode 77, shut
        // down for writing.
        let mut m = vec![0u8; 72];
        m[0] = libc::AF_INET as u8;
        m[1] = 1;
        m[4..6].copy_from_slice(&80u16.to_be_bytes());
        m[6..8].copy_from_slice(&1234u16.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[24..28].copy_from_slice(&[10, 0, 0, 2]);
        m[56..60].copy_from_slice(&5u32.to_ne_bytes());
        m[68..72].copy_from_slice(&77u32.to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_SHUTDOWN.to_ne_bytes());
        m.extend_from_slice(&[2, 0, 0, 0]);
        let d = parse_diag(&m, 6).unwrap();
        assert_eq!(d.src, "127.0.0.1:80".parse().unwrap());
        assert_eq!(d.dst, "10.0.0.2:1234".parse().unwrap());
        assert_eq!((d.state, d.rqueue, d.ino, d.shutdown), (1, 5, 77, 2));
        m.truncate(76);
        assert!(parse_diag(&m, 6).is_err());
    }
}
