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

use crate::net::netlink::{attrs, diag_dump, u32_at};
use crate::net::netlock::{self, Conn};
use crate::util::{read_image, sys_err};
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
/// CRIU's net ns id of crust's own network namespace.
const NET_NS_ID: u32 = 2;

/// Is this TCP state one of a connection that repair mode carries over?
fn is_connection(state: u32) -> bool {
    u8::try_from(state).is_ok_and(TcpState::supported_state)
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

/// Every TCP, UDP and UDP-Lite socket of crust's network namespace, by
/// inode.
fn diag_all() -> Result<HashMap<u32, Diag>, Error> {
    let mut out = HashMap::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for proto in [
            libc::IPPROTO_TCP as u8,
            libc::IPPROTO_UDP as u8,
            IPPROTO_UDPLITE as u8,
        ] {
            let got = diag_dump("INET_DIAG", &diag_request(family, proto), |m| {
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
    let mut o = crate::net::netlink::dump_sk_opts(s)?;
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

// ---------------------------------------------------------------- dump

/// A datagram queued on an inet socket: (files.img id, bytes, sender as a
/// raw sockaddr), as sk-queues.img holds it.
pub type Datagram = (u32, Vec<u8>, Vec<u8>);

/// One inet socket of the tree.
struct Sock {
    pid: i32,
    fd: i32,
    /// crust's copy of it (the same socket).
    copy: OwnedFd,
    entry: InetSkEntry,
    /// A connection to carry over in repair mode: (local, remote).
    conn: Option<(SocketAddr, SocketAddr)>,
    /// Datagrams queued on it: (bytes, sender).
    dgrams: Vec<(Vec<u8>, SocketAddr)>,
    /// A listener: connections waiting in its accept queue.
    pending: u32,
}

/// Inet sockets of a dumped tree.
#[derive(Default)]
pub struct InetDump {
    pub tcp_established: bool,
    pub tcp_close: bool,
    pub skip_in_flight: bool,
    /// dump -R: the tree runs on (its accept queues are left alone).
    pub leave_running: bool,
    pub lock_method: netlock::Method,
    diag: Option<HashMap<u32, Diag>>,
    ids: HashMap<u32, u32>,
    socks: Vec<Sock>,
    /// Connections locked and in repair mode once written.
    held: Option<NetHold>,
}

impl InetDump {
    /// The files.img id of socket inode `ino` if it was seen already.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
    }

    /// Dump the socket on fd `fd` of `pid` (`copy`: crust's copy of it)
    /// as files.img entry `id`.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        copy: OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<(), Error> {
        let sock = self.describe(pid, fd, copy, ino, flags, id)?;
        self.ids.insert(ino, id);
        self.socks.push(sock);
        Ok(())
    }

    /// Everything about one socket (crust's copy `copy`; `fd` -1 for a
    /// connection crust took from an accept queue).
    fn describe(
        &mut self,
        pid: i32,
        fd: i32,
        copy: OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<Sock, Error> {
        let s = copy.as_fd();
        let get = |level: i32, o: i32, what: &str| {
            su::getsockopt_int(s, level, o).map_err(sys_err(pid, format!("{what} of fd {fd}")))
        };
        let family = get(libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")?;
        let ty = get(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
        let proto = get(libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?;
        let here = format!(
            "process {pid} fd {fd} ({} socket {ino})",
            proto_name(proto as u32)
        );
        let local = sn::getsockname(s).map_err(sys_err(pid, format!("getsockname of fd {fd}")))?;
        let peer = sn::getpeername(s).ok();
        // A TCP socket neither listening nor connected (bound or not) is
        // not in INET_DIAG's tables: not looked up (a miss reloads them).
        let mut info = [0u8; 1];
        let tcp_closed = ty == libc::SOCK_STREAM
            && sn::getsockopt(s, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info).is_ok()
            && info[0] as u32 == TCP_CLOSE;
        let diag = if (ty == libc::SOCK_STREAM && !tcp_closed)
            || (ty == libc::SOCK_DGRAM && (proto == libc::IPPROTO_UDP || proto == IPPROTO_UDPLITE))
        {
            match crate::net::netlink::diag_of(&mut self.diag, ino, diag_all)? {
                Some(d) => Some(d),
                None => {
                    return Err(Error::unsupported(format!(
                        "{here} is not in crust's network namespace (sockets of other network namespaces are not supported)"
                    )))
                }
            }
        } else {
            None
        };
        // A socket still in SYN_SENT has no peer name: sock_diag knows it.
        let peer = peer.or_else(|| {
            diag.as_ref()
                .filter(|d| d.state as u32 == TCP_SYN_SENT && d.dst.port() != 0)
                .map(|d| d.dst)
        });
        let state = match (&diag, peer) {
            (Some(d), _) => d.state as u32,
            (None, Some(_)) => TCP_ESTABLISHED,
            (None, None) => TCP_CLOSE,
        };
        let opts = dump_sk_opts(s).map_err(sys_err(pid, format!("socket options of fd {fd}")))?;
        let mut entry = InetSkEntry {
            id,
            ino,
            family: family as u32,
            r#type: ty as u32,
            proto: proto as u32,
            state,
            src_port: local.port() as u32,
            dst_port: peer.map(|p| p.port() as u32).unwrap_or(0),
            flags: flags & !(libc::O_CLOEXEC as u32),
            backlog: 0,
            src_addr: addr_words(&local.ip()),
            dst_addr: addr_words(&peer.map(|p| p.ip()).unwrap_or(match family {
                libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            })),
            fown: FownEntry::default(),
            opts,
            v6only: if family == libc::AF_INET6 {
                int_opt(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).map(|v| v != 0)
            } else {
                None
            },
            ip_opts: Some(ip_opts(s, family, ty, proto)),
            ifname: None,
            ns_id: Some(NET_NS_ID),
            shutdown: diag
                .as_ref()
                .and_then(|d| (d.shutdown != 0).then_some(d.shutdown as i32 & 3)),
            tcp_opts: (proto == libc::IPPROTO_TCP).then(|| tcp_opts(s)),
            ..Default::default()
        };
        let mut conn = None;
        let mut dgrams = Vec::new();
        let mut pending = 0;
        if proto == libc::IPPROTO_TCP {
            let d = diag.clone().unwrap_or(Diag {
                family: family as u8,
                proto: proto as u8,
                state: TCP_CLOSE as u8,
                src: local,
                dst: local,
                rqueue: 0,
                wqueue: 0,
                ino,
                shutdown: 0,
            });
            if state == TCP_LISTEN {
                entry.backlog = d.wqueue;
                if d.rqueue > 0 && self.tcp_established && !self.skip_in_flight {
                    if self.leave_running {
                        warn!(
                            "{here}: {} connection(s) waiting in the accept queue of {} stay with the running tree; they are not in the images",
                            d.rqueue,
                            show(&local)
                        );
                    } else {
                        pending = d.rqueue;
                    }
                } else if d.rqueue > 0 {
                    if self.skip_in_flight {
                        warn!(
                            "{here}: {} connection(s) waiting in the accept queue of {} are skipped (--skip-in-flight); their peers will see them reset",
                            d.rqueue,
                            show(&local)
                        );
                    } else {
                        return Err(Error::unsupported(format!(
                            "{here}: the listening socket {} has {} connection(s) not yet accepted; dump with --tcp-established to carry them over, or --skip-in-flight to drop them (their peers will see them reset)",
                            show(&local),
                            d.rqueue
                        )));
                    }
                }
            } else if is_connection(state) {
                let remote = peer.unwrap_or(d.dst);
                entry.backlog = d.wqueue;
                if self.tcp_close {
                    debug!(
                        "{here}: connection {} -> {} dumped as closed (--tcp-close)",
                        show(&local),
                        show(&remote)
                    );
                } else if !self.tcp_established {
                    return Err(Error::unsupported(format!(
                        "{here} holds an established TCP connection {} -> {} ({}); dump with --tcp-established to carry it over (or --tcp-close to drop it)",
                        show(&local),
                        show(&remote),
                        state_name(state)
                    )));
                } else {
                    conn = Some((local, remote));
                }
            } else if state != TCP_CLOSE {
                return Err(Error::unsupported(format!(
                    "{here} is in TCP state {}, which crust cannot dump",
                    state_name(state)
                )));
            }
        } else if ty == libc::SOCK_DGRAM && (proto == libc::IPPROTO_UDP || proto == IPPROTO_UDPLITE)
        {
            let cork = int_opt(s, libc::IPPROTO_UDP, libc::UDP_CORK).unwrap_or(0);
            if cork != 0 {
                entry
                    .tcp_opts
                    .get_or_insert_with(TcpOptsEntry::default)
                    .cork = Some(true);
            }
            // A datagram pending (UDP_CORK or MSG_MORE): taken through
            // NFLOG without reaching the network, and put back at once
            // (the task keeps it if it runs on; the image has it).
            if sn::ioctl_int(s, sn::SIOCOUTQ).unwrap_or(0) > 0 && proto == libc::IPPROTO_UDP {
                if let Some((data, dst)) = crate::net::udpcork::take_corked(s, local)? {
                    crate::net::udpcork::put_back(s, local, &data, dst)?;
                    debug!("{here}: {} bytes pending to {dst}", data.len());
                    entry.corked_data = Some(data);
                    entry.corked_dst = Some(sn::to_bytes(&dst));
                }
            }
            dgrams = peek_datagrams(s).map_err(sys_err(
                pid,
                format!("peeking the datagrams queued on fd {fd}"),
            ))?;
        }
        debug!(
            "{here}: {} {} -> {:?}, {} datagram(s) queued",
            proto_name(proto as u32),
            show(&local),
            peer,
            dgrams.len()
        );
        Ok(Sock {
            pid,
            fd,
            copy,
            entry,
            conn,
            dgrams,
            pending,
        })
    }

    /// Take the connections waiting in the accept queues of the tree's
    /// listeners out of them (accept4 on crust's copy of the listener):
    /// each becomes a connection of the image, marked as queued on its
    /// listener, and is carried over like the others.
    fn take_accept_queues(&mut self, next_id: &mut u32) -> Result<(), Error> {
        let mut taken = Vec::new();
        for l in self.socks.iter().filter(|s| s.pending > 0) {
            let flags = crust_sys::pipe::status_flags(l.copy.as_fd()).unwrap_or(0);
            // Non-blocking while crust takes them (the file is the task's
            // too: its flags are put back).
            let _ = crust_sys::pipe::set_status_flags(l.copy.as_fd(), flags | libc::O_NONBLOCK);
            for _ in 0..l.pending {
                match sn::accept4(l.copy.as_fd(), libc::SOCK_CLOEXEC) {
                    Ok((c, _)) => taken.push((l.pid, l.fd, l.entry.id, c)),
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                    Err(e) => {
                        let _ = crust_sys::pipe::set_status_flags(l.copy.as_fd(), flags);
                        return Err(sys_err(l.pid, format!("accept4 on fd {}", l.fd))(e));
                    }
                }
            }
            let _ = crust_sys::pipe::set_status_flags(l.copy.as_fd(), flags);
        }
        if taken.is_empty() {
            return Ok(());
        }
        for (pid, lfd, lid, c) in taken {
            let ino = std::fs::metadata(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&c)
            ))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
            .map_err(sys_err(pid, "stat of an accepted socket"))?;
            let id = *next_id;
            *next_id += 1;
            let mut sock = self.describe(pid, -1, c, ino, libc::O_RDWR as u32, id)?;
            sock.entry.accept_queue_of = Some(lid);
            info!(
                "process {pid} fd {lfd}: connection from {} taken from the accept queue (file {id})",
                sock.conn.map(|c| show(&c.1)).unwrap_or_default()
            );
            self.ids.insert(ino, id);
            self.socks.push(sock);
        }
        Ok(())
    }

    /// The files.img entries, the datagrams queued (files.img id, bytes,
    /// sender as a sockaddr), and `tcp-stream-N.img` of each connection:
    /// the connections are locked out of the network and put in repair
    /// mode here, and stay so (see [`InetDump::take_hold`]).
    pub fn write(
        &mut self,
        dir: &Path,
        next_id: &mut u32,
    ) -> Result<(Vec<FileEntry>, Vec<Datagram>), Error> {
        self.take_accept_queues(next_id)?;
        let conns: Vec<Conn> = self
            .socks
            .iter()
            .filter_map(|s| s.conn)
            .map(|(local, remote)| Conn { local, remote })
            .collect();
        let mut hold = NetHold {
            method: self.lock_method,
            conns: conns.clone(),
            repairs: Vec::new(),
            undo: Vec::new(),
        };
        if !conns.is_empty() {
            netlock::lock(self.lock_method, &conns)?;
            info!(
                "Locked {} TCP connection(s) out of the network",
                conns.len()
            );
        }
        let written = (|| {
            for s in &self.socks {
                let Some((local, remote)) = s.conn else {
                    continue;
                };
                let failed = |doing: &str| {
                    let what = format!(
                        "process {} fd {}: {doing} the connection {} -> {}",
                        s.pid,
                        s.fd,
                        show(&local),
                        show(&remote)
                    );
                    move |source| Error::Soccr {
                        what,
                        source: Box::new(source),
                    }
                };
                let dup = s.copy.try_clone().map_err(sys_err(s.pid, "dup"))?;
                let rep = Repair::start(dup).map_err(failed("putting in repair mode"))?;
                // SYN_SENT has no peer name yet: sock_diag's is given.
                let st = rep.state_with_remote(Some(remote));
                hold.repairs.push(rep);
                let st = st.map_err(failed("reading the state of"))?;
                write_stream(dir, s.entry.ino, &st)?;
            }
            // Fault injection for the tests (as CRIU's CRIU_FAULT): fail
            // with every connection locked and in repair mode.
            if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "after-netlock") {
                return Err(Error::unsupported(
                    "CRUST_FAULT=after-netlock: failing the dump on purpose".to_string(),
                ));
            }
            Ok::<(), Error>(())
        })();
        // On failure, dropping `hold` releases what was held.
        written?;
        self.held = Some(hold);
        let files = self
            .socks
            .iter()
            .map(|s| FileEntry {
                r#type: fd_types::INETSK,
                id: s.entry.id,
                isk: Some(s.entry.clone()),
                ..Default::default()
            })
            .collect();
        let dgrams = self
            .socks
            .iter()
            .flat_map(|s| {
                s.dgrams
                    .iter()
                    .map(move |(b, from)| (s.entry.id, b.clone(), sn::to_bytes(from)))
            })
            .collect();
        Ok((files, dgrams))
    }

    /// The connections held in repair mode and locked, for the end of the
    /// dump: [`NetHold::release`] (the tree runs on, or the dump failed)
    /// or [`NetHold::keep`] (the tree was killed: the lock stays until
    /// restore).
    pub fn take_hold(&mut self) -> NetHold {
        self.held.take().unwrap_or_default()
    }
}

/// Connections of a dumped tree held in repair mode and locked. Dropping
/// it releases them (see [`NetHold::release`]).
#[derive(Default)]
pub struct NetHold {
    method: netlock::Method,
    conns: Vec<Conn>,
    repairs: Vec<Repair>,
    /// Other things to undo if the tree runs on (pty bytes read out).
    undo: Vec<Box<dyn FnOnce() + Send>>,
}

impl NetHold {
    /// Take the connections out of repair mode and unlock them: the tree
    /// runs on (dump -R) or the dump failed.
    pub fn release(self) {
        drop(self)
    }

    /// The tree is dead: free crust's copies still in repair mode (so
    /// nothing is sent) and leave the lock for the restore to remove.
    /// `f` runs if the tree runs on (release), not if it was killed.
    pub fn on_release(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.undo.push(f);
    }

    pub fn keep(mut self) {
        if !self.conns.is_empty() {
            info!(
                "{} connection(s) stay locked out of the network until restore",
                self.conns.len()
            );
        }
        self.repairs.clear();
        self.conns.clear();
        self.undo.clear();
    }
}

impl Drop for NetHold {
    fn drop(&mut self) {
        for r in self.repairs.drain(..) {
            if let Err(e) = r.resume() {
                warn!("could not take a connection out of repair mode: {e}");
            }
        }
        if !self.conns.is_empty() {
            if let Err(e) = netlock::unlock(self.method, &self.conns) {
                warn!("could not unlock the network: {e}");
            }
        }
        for f in self.undo.drain(..) {
            f();
        }
    }
}

/// Every datagram queued on a UDP socket, with its sender, left in place.
fn peek_datagrams(s: BorrowedFd<'_>) -> std::io::Result<Vec<(Vec<u8>, SocketAddr)>> {
    if sn::ioctl_int(s, sn::SIOCINQ)? == 0 {
        // SIOCINQ is the size of the first datagram: none queued (or an
        // empty one, which peeking below still finds).
        let mut b = [0u8; 1];
        match sn::recvfrom(s, &mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(Vec::new()),
            _ => {}
        }
    }
    su::setsockopt_int(s, libc::SOL_SOCKET, SO_PEEK_OFF, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let walk = (|| loop {
        match sn::recvfrom(s, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok((n, Some(from))) => out.push((buf[..n].to_vec(), from)),
            Ok((_, None)) => return Err(std::io::Error::from_raw_os_error(libc::EPROTO)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        }
        if out.len() > 100_000 {
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        }
    })();
    su::setsockopt_int(s, libc::SOL_SOCKET, SO_PEEK_OFF, -1)?;
    walk.map(|_| out)
}

/// tcp-stream-N.img of one connection: the entry, then the receive queue
/// and the send queue.
fn write_stream(dir: &Path, ino: u32, st: &TcpState) -> Result<(), Error> {
    let w = st.window.as_ref();
    let e = TcpStreamEntry {
        inq_len: st.inq.len() as u32,
        inq_seq: st.inq_seq,
        outq_len: st.outq.len() as u32,
        outq_seq: st.outq_seq,
        opt_mask: st.opt_mask,
        snd_wscale: st.snd_wscale,
        mss_clamp: st.mss_clamp,
        rcv_wscale: Some(st.rcv_wscale),
        timestamp: Some(st.timestamp),
        cork: None,
        nodelay: None,
        unsq_len: Some(st.unsq_len),
        snd_wl1: w.map(|w| w.snd_wl1),
        snd_wnd: w.map(|w| w.snd_wnd),
        max_window: w.map(|w| w.max_window),
        rcv_wnd: w.map(|w| w.rcv_wnd),
        rcv_wup: w.map(|w| w.rcv_wup),
        ..Default::default()
    };
    let mut data = Vec::with_capacity(st.inq.len() + st.outq.len());
    data.extend_from_slice(&st.inq);
    data.extend_from_slice(&st.outq);
    crate::util::write_image_with_payload(dir, ImageType::TcpStream, ino as u64, &e, &data)
}

// ---------------------------------------------------------------- restore

/// One inet socket of an image set.
#[derive(Debug, Clone)]
struct RSock {
    entry: InetSkEntry,
    local: SocketAddr,
    remote: SocketAddr,
    /// A connection's state (tcp-stream-N.img).
    stream: Option<TcpState>,
    /// Datagrams to queue again: (bytes, sender).
    dgrams: Vec<(Vec<u8>, SocketAddr)>,
}

/// The inet sockets of an image set, read and checked.
#[derive(Debug, Default)]
pub struct InetFiles {
    socks: HashMap<u32, RSock>,
    method: netlock::Method,
}

impl InetFiles {
    /// Read the INETSK entries of files.img (those of `ids`) and their
    /// tcp-stream images. `tcp_established`/`tcp_close` as on the command
    /// line; `method` unlocks the connections at the end.
    pub fn load(
        dir: &Path,
        ids: &[u32],
        tcp_established: bool,
        tcp_close: bool,
        method: netlock::Method,
    ) -> Result<InetFiles, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let mut out = InetFiles {
            socks: HashMap::new(),
            method,
        };
        if ids.is_empty() {
            return Ok(out);
        }
        let files: Vec<FileEntry> = read_image(dir, ImageType::Files, 0)?;
        for f in files {
            if f.r#type != fd_types::INETSK {
                continue;
            }
            let e = f
                .isk
                .ok_or_else(|| bad(format!("files.img: INETSK entry {} has no inet part", f.id)))?;
            let here = format!("files.img: inet socket {}", f.id);
            let fam = e.family as i32;
            if fam != libc::AF_INET && fam != libc::AF_INET6 {
                return Err(bad(format!("{here} has address family {}", e.family)));
            }
            let ip = |w: &[u32], what: &str| {
                words_addr(e.family, w).ok_or_else(|| {
                    bad(format!(
                        "{here}: its {what} address has {} words, not {}",
                        w.len(),
                        if fam == libc::AF_INET { 1 } else { 4 }
                    ))
                })
            };
            if e.src_port > 65535 || e.dst_port > 65535 {
                return Err(bad(format!("{here} has a port out of range")));
            }
            let local = SocketAddr::new(ip(&e.src_addr, "source")?, e.src_port as u16);
            let remote = SocketAddr::new(ip(&e.dst_addr, "destination")?, e.dst_port as u16);
            let ty = e.r#type as i32;
            if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_RAW].contains(&ty) {
                return Err(bad(format!("{here} has socket type {}", e.r#type)));
            }
            if e.corked_data.is_some() && e.corked_dst.as_deref().and_then(sn::from_bytes).is_none()
            {
                return Err(bad(format!(
                    "{here} has a pending datagram without a valid destination"
                )));
            }
            let mut stream = None;
            if e.proto as i32 == libc::IPPROTO_TCP && is_connection(e.state) {
                if tcp_close {
                    debug!("{here}: connection restored closed (--tcp-close)");
                } else if !tcp_established {
                    return Err(Error::unsupported(format!(
                        "the image has the established TCP connection {local} -> {remote} (socket {}); restore with --tcp-established (or --tcp-close to restore it closed)",
                        f.id
                    )));
                } else {
                    stream = Some(read_stream(dir, &e, local, remote)?);
                }
            }
            out.socks.insert(
                f.id,
                RSock {
                    entry: e,
                    local,
                    remote,
                    stream,
                    dgrams: Vec::new(),
                },
            );
        }
        for (id, s) in &out.socks {
            let Some(l) = s.entry.accept_queue_of else {
                continue;
            };
            let ok = out.socks.get(&l).is_some_and(|l| {
                l.entry.proto as i32 == libc::IPPROTO_TCP && l.entry.state == TCP_LISTEN
            });
            if !ok {
                return Err(bad(format!(
                    "files.img: connection {id} waits in the accept queue of socket {l}, which is not a TCP listener"
                )));
            }
            if s.stream.is_none() && !tcp_close {
                return Err(bad(format!(
                    "files.img: socket {id} in the accept queue of socket {l} is not a TCP connection"
                )));
            }
        }
        for id in ids {
            if !out.socks.contains_key(id) {
                return Err(bad(format!(
                    "an fd refers to inet socket {id}, which files.img does not have"
                )));
            }
        }
        for (id, bytes, addr) in read_datagrams(dir, &out)? {
            let s = out.socks.get_mut(&id).ok_or_else(|| {
                bad(format!(
                    "sk-queues.img has a datagram for file {id}, which is not an inet socket of files.img"
                ))
            })?;
            let from = sn::from_bytes(&addr).ok_or_else(|| {
                bad(format!(
                    "sk-queues.img: a datagram for inet socket {id} has a bad sender address"
                ))
            })?;
            s.dgrams.push((bytes, from));
        }
        Ok(out)
    }

    /// Listeners (files.img ids) that had connections waiting in their
    /// accept queue at dump time.
    pub fn accept_listeners(&self) -> std::collections::HashSet<u32> {
        self.socks
            .values()
            .filter(|s| s.stream.is_some())
            .filter_map(|s| s.entry.accept_queue_of)
            .collect()
    }

    /// The connections the dump locked, to unlock after restore.
    pub fn conns(&self) -> Vec<Conn> {
        self.socks
            .values()
            .filter(|s| s.stream.is_some())
            .map(|s| Conn {
                local: s.local,
                remote: s.remote,
            })
            .collect()
    }

    /// Make every socket.
    pub fn open(&self) -> Result<OpenInet, Error> {
        let mut out = OpenInet {
            method: self.method,
            conns: self.conns(),
            ..Default::default()
        };
        // Connections first, then the rest: they bind in repair mode, which
        // forces the reuse of their address; every other TCP socket binds
        // with SO_REUSEADDR (the recorded value set back once it is bound),
        // as CRIU does, so a listener shares its port with them.
        let mut ids: Vec<&u32> = self.socks.keys().collect();
        ids.sort_by_key(|id| (self.socks[*id].stream.is_none(), **id));
        for id in ids {
            let s = &self.socks[id];
            let here = format!(
                "inet socket {id} ({} {} {})",
                proto_name(s.entry.proto),
                state_name(s.entry.state),
                s.local
            );
            let fail = |what: &str, source: std::io::Error| Error::Restore {
                pid: crust_sys::process::getpid(),
                what: format!("{here}: {what}: {source}"),
            };
            if let Some(st) = &s.stream {
                let mut b =
                    Builder::new(&s.local, s.entry.v6only).map_err(|source| Error::Soccr {
                        what: format!("{here}: making a socket in repair mode"),
                        source: Box::new(source),
                    })?;
                // Buffers big enough for the queues first; the recorded
                // sizes once they are in (the kernel refuses queue data
                // beyond the buffer, ENOBUFS).
                let mut first = s.entry.clone();
                first.opts.so_rcvbuf = 0;
                first.opts.so_sndbuf = 0;
                // Not before the bind: repair mode's forced reuse (which
                // binds over anything: a listener of the same port, a
                // TIME_WAIT left by an earlier connection) would give way
                // to SO_REUSEADDR's rules. Set once bound, below.
                first.opts.reuseaddr = None;
                set_options(b.fd(), &first).map_err(|e| fail("setting its options", e))?;
                let big = |n: usize| (n.min(1 << 30) as i32).saturating_add(1 << 16);
                su::setsockopt_int(
                    b.fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    big(st.inq.len()),
                )
                .map_err(|e| fail("SO_RCVBUFFORCE", e))?;
                su::setsockopt_int(
                    b.fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUFFORCE,
                    big(st.outq.len()),
                )
                .map_err(|e| fail("SO_SNDBUFFORCE", e))?;
                // The MSS must be known before the repair-mode connect,
                // which sizes segments from it (the MSS option given after
                // the connect only clamps): without it segments are 524
                // bytes.
                // TCP_MAXSEG takes at most 32767 (MAX_TCP_WINDOW).
                if st.mss_clamp >= 88 {
                    let mss = st.mss_clamp.min(32767) as i32;
                    su::setsockopt_int(b.fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss)
                        .map_err(|e| fail("TCP_MAXSEG", e))?;
                }
                b.restore(st).map_err(|source| Error::Soccr {
                    what: format!("{here}: rebuilding the connection to {}", s.remote),
                    source: Box::new(source),
                })?;
                su::setsockopt_int(
                    b.fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (s.entry.opts.reuseaddr == Some(true)) as i32,
                )
                .map_err(|e| fail("SO_REUSEADDR", e))?;

                set_status(b.fd(), s.entry.flags).map_err(|e| fail("F_SETFL", e))?;
                out.builders.push((
                    *id,
                    b,
                    st.clone(),
                    s.entry.opts.clone(),
                    s.entry.accept_queue_of,
                ));
                continue;
            }
            let fam = s.entry.family as i32;
            let ty = s.entry.r#type as i32;
            let proto = s.entry.proto as i32;
            let fd = sn::socket(fam, ty, proto).map_err(|e| fail("socket()", e))?;
            if let Some(v6) = s.entry.v6only.filter(|_| ty != libc::SOCK_RAW) {
                su::setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6 as i32)
                    .map_err(|e| fail("IPV6_V6ONLY", e))?;
            }
            set_options(fd.as_fd(), &s.entry).map_err(|e| fail("setting its options", e))?;
            if proto == libc::IPPROTO_TCP {
                su::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                    .map_err(|e| fail("SO_REUSEADDR", e))?;
            }
            let bound = s.local.port() != 0 || !s.local.ip().is_unspecified();
            if bound && !(proto == libc::IPPROTO_TCP && is_connection(s.entry.state)) {
                sn::bind(fd.as_fd(), &s.local).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EADDRINUSE) {
                        Error::Restore {
                            pid: crust_sys::process::getpid(),
                            what: format!(
                                "{here}: the address {} is already in use on this host; free it and restore again",
                                s.local
                            ),
                        }
                    } else {
                        fail(&format!("bind to {}", s.local), e)
                    }
                })?;
            }
            if proto == libc::IPPROTO_TCP && s.entry.state == TCP_LISTEN {
                su::listen(fd.as_fd(), s.entry.backlog.min(i32::MAX as u32) as i32)
                    .map_err(|e| fail("listen", e))?;
            }
            if proto == libc::IPPROTO_TCP && s.entry.opts.reuseaddr != Some(true) {
                su::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 0)
                    .map_err(|e| fail("SO_REUSEADDR", e))?;
            }
            if ty != libc::SOCK_STREAM && s.remote.port() != 0 {
                sn::connect(fd.as_fd(), &s.remote)
                    .map_err(|e| fail(&format!("connect to {}", s.remote), e))?;
            }
            if let Some(sh) = s.entry.shutdown.filter(|v| *v != 0) {
                if ty != libc::SOCK_STREAM {
                    let how = match sh {
                        1 => libc::SHUT_RD,
                        2 => libc::SHUT_WR,
                        _ => libc::SHUT_RDWR,
                    };
                    su::shutdown(fd.as_fd(), how).map_err(|e| fail("shutdown", e))?;
                }
            }
            for (bytes, from) in &s.dgrams {
                inject_udp(from, &s.local, bytes, proto)
                    .map_err(|e| fail(&format!("queueing a datagram from {from} again"), e))?;
            }
            if let Some(cork) = s.entry.tcp_opts.as_ref().and_then(|t| t.cork) {
                if ty == libc::SOCK_DGRAM && cork {
                    su::setsockopt_int(fd.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1)
                        .map_err(|e| fail("UDP_CORK", e))?;
                }
            }
            if let (Some(data), Some(dst)) = (&s.entry.corked_data, &s.entry.corked_dst) {
                let dst = sn::from_bytes(dst).ok_or_else(|| Error::Restore {
                    pid: crust_sys::process::getpid(),
                    what: format!("{here}: a bad destination for its pending datagram"),
                })?;
                crate::net::udpcork::put_back(fd.as_fd(), s.local, data, dst)?;
            }
            set_status(fd.as_fd(), s.entry.flags).map_err(|e| fail("F_SETFL", e))?;
            out.fds.insert(*id, fd);
        }
        Ok(out)
    }
}

/// The datagrams of sk-queues.img queued on inet sockets: (files.img id,
/// bytes, sender as a raw sockaddr).
fn read_datagrams(dir: &Path, socks: &InetFiles) -> Result<Vec<Datagram>, Error> {
    use crust_images::image::{ImageError, ImageReader};
    use crust_images::proto::sk_packet::SkPacketEntry;
    use crust_images::Message;
    let ty = ImageType::SkQueues;
    let name = ty.file_name(0);
    let err = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut rd = match ImageReader::open_typed(dir, ty, &name) {
        Ok(r) => r,
        Err(e) if e.is_missing() => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    while let Some(rec) = rd.next_record().map_err(err)? {
        let e = SkPacketEntry::decode(&rec.entry).map_err(|source| {
            err(ImageError::Decode {
                path: dir.join(&name),
                offset: rec.offset,
                message: SkPacketEntry::NAME,
                source,
            })
        })?;
        if !socks.socks.contains_key(&e.id_for) {
            continue;
        }
        if rec.payload.len() != e.length as usize {
            return Err(Error::BadImage {
                dir: dir.to_path_buf(),
                why: format!(
                    "{name}: a datagram for inet socket {} should hold {} bytes, the image has {}",
                    e.id_for,
                    e.length,
                    rec.payload.len()
                ),
            });
        }
        out.push((e.id_for, rec.payload, e.addr.unwrap_or_default()));
    }
    Ok(out)
}

fn read_stream(
    dir: &Path,
    e: &InetSkEntry,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<TcpState, Error> {
    let (t, data) = crate::util::read_one_with_payload::<TcpStreamEntry>(
        dir,
        ImageType::TcpStream,
        e.ino as u64,
    )?;
    let name = ImageType::TcpStream.file_name(e.ino as u64);
    let want = t.inq_len as u64 + t.outq_len as u64;
    if data.len() as u64 != want {
        return Err(Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!(
                "{name} should hold {} + {} queued bytes, it has {}",
                t.inq_len,
                t.outq_len,
                data.len()
            ),
        });
    }
    let unsq = t.unsq_len.unwrap_or(0);
    if unsq > t.outq_len {
        return Err(Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!(
                "{name}: {unsq} unsent bytes out of a send queue of {}",
                t.outq_len
            ),
        });
    }
    let (inq, outq) = data.split_at(t.inq_len as usize);
    let window = match (t.snd_wl1, t.snd_wnd, t.max_window, t.rcv_wnd, t.rcv_wup) {
        (Some(snd_wl1), Some(snd_wnd), Some(max_window), Some(rcv_wnd), Some(rcv_wup)) => {
            Some(Window {
                snd_wl1,
                snd_wnd,
                max_window,
                rcv_wnd,
                rcv_wup,
            })
        }
        _ => None,
    };
    Ok(TcpState {
        local,
        remote,
        state: e.state as u8,
        inq_seq: t.inq_seq,
        outq_seq: t.outq_seq,
        inq: inq.to_vec(),
        outq: outq.to_vec(),
        unsq_len: unsq,
        opt_mask: t.opt_mask,
        snd_wscale: t.snd_wscale,
        rcv_wscale: t.rcv_wscale.unwrap_or(0),
        mss_clamp: t.mss_clamp,
        timestamp: t.timestamp.unwrap_or(0),
        window,
        nodelay: e.tcp_opts.as_ref().and_then(|o| o.nodelay).unwrap_or(false),
        cork: e.tcp_opts.as_ref().and_then(|o| o.cork).unwrap_or(false),
    })
}

/// Socket, IP and TCP options of an entry, on a socket crust made.
fn set_options(s: BorrowedFd<'_>, e: &InetSkEntry) -> std::io::Result<()> {
    crate::net::netlink::set_sk_opts(s, &e.opts)?;
    let o = &e.opts;
    if o.so_reuseport == Some(true) {
        su::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if let Some(secs) = o.so_linger {
        let mut l = [0u8; 8];
        l[0..4].copy_from_slice(&1i32.to_ne_bytes());
        l[4..8].copy_from_slice(&(secs as i32).to_ne_bytes());
        sn::setsockopt(s, libc::SOL_SOCKET, libc::SO_LINGER, &l)?;
    }
    let fam = e.family as i32;
    if let Some(ip) = &e.ip_opts {
        let (lvl, fb, pk, tos, ttl) = if fam == libc::AF_INET {
            (
                libc::IPPROTO_IP,
                libc::IP_FREEBIND,
                libc::IP_PKTINFO,
                libc::IP_TOS,
                libc::IP_TTL,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_FREEBIND,
                libc::IPV6_RECVPKTINFO,
                libc::IPV6_TCLASS,
                libc::IPV6_UNICAST_HOPS,
            )
        };
        if ip.freebind == Some(true) {
            su::setsockopt_int(s, lvl, fb, 1)?;
        }
        if ip.pktinfo == Some(true) {
            su::setsockopt_int(s, lvl, pk, 1)?;
        }
        if let Some(t) = ip.tos.filter(|t| *t != 0) {
            su::setsockopt_int(s, lvl, tos, t as i32)?;
        }
        // The default TTL reads back as 64 but is "use the route's".
        if let Some(t) = ip.ttl.filter(|t| *t != 64 && *t != 0) {
            su::setsockopt_int(s, lvl, ttl, t as i32)?;
        }
        if let Some(raw) = &ip.raw {
            if fam == libc::AF_INET {
                if raw.hdrincl == Some(true) {
                    su::setsockopt_int(s, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)?;
                }
                if raw.nodefrag == Some(true) {
                    su::setsockopt_int(s, libc::IPPROTO_IP, IP_NODEFRAG, 1)?;
                }
                if let Some(f) = raw.icmpv_filter.first() {
                    sn::setsockopt(s, libc::SOL_RAW, ICMP_FILTER, &f.to_ne_bytes())?;
                }
            } else {
                if raw.hdrincl == Some(true) {
                    su::setsockopt_int(s, libc::IPPROTO_IPV6, IPV6_HDRINCL, 1)?;
                }
                if raw.icmpv_filter.len() == 8 {
                    let f: Vec<u8> = raw
                        .icmpv_filter
                        .iter()
                        .flat_map(|w| w.to_ne_bytes())
                        .collect();
                    sn::setsockopt(s, libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &f)?;
                }
            }
        }
    }
    // IP_TOS sets the priority too: the recorded one goes last.
    if let Some(p) = o.so_priority {
        su::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_PRIORITY, p as i32)?;
    }
    if e.proto as i32 == libc::IPPROTO_TCP {
        if let Some(t) = &e.tcp_opts {
            let set = |o: i32, v: u32| su::setsockopt_int(s, libc::IPPROTO_TCP, o, v as i32);
            if t.nodelay == Some(true) {
                set(libc::TCP_NODELAY, 1)?;
            }
            if t.cork == Some(true) {
                set(libc::TCP_CORK, 1)?;
            }
            if let Some(v) = t.keepcnt {
                set(libc::TCP_KEEPCNT, v)?;
            }
            if let Some(v) = t.keepidle {
                set(libc::TCP_KEEPIDLE, v)?;
            }
            if let Some(v) = t.keepintvl {
                set(libc::TCP_KEEPINTVL, v)?;
            }
        }
    }
    Ok(())
}

/// Queue a datagram on the socket bound at `to` as if `from` had sent it:
/// a UDP (or UDP-Lite) packet with that source, written whole through a
/// raw socket and delivered locally. IPv4-mapped addresses travel as IPv4.
fn inject_udp(from: &SocketAddr, to: &SocketAddr, data: &[u8], proto: i32) -> std::io::Result<()> {
    let lite = match proto {
        libc::IPPROTO_UDP => false,
        IPPROTO_UDPLITE => true,
        _ => return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
    };
    let udp_len = 8 + data.len();
    if udp_len > 65507 {
        return Err(std::io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let from = crust_soccr::wire_addr(from);
    // A socket bound to any address gets it through loopback.
    let dst = match (from.ip(), crust_soccr::wire_addr(to).ip()) {
        (IpAddr::V4(_), IpAddr::V4(d)) if !d.is_unspecified() => IpAddr::V4(d),
        (IpAddr::V4(_), _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), IpAddr::V6(d)) if !d.is_unspecified() => IpAddr::V6(d),
        (IpAddr::V6(_), IpAddr::V4(d)) if !d.is_unspecified() => IpAddr::V6(d.to_ipv6_mapped()),
        (IpAddr::V6(_), _) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let octets = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (src_b, dst_b) = (octets(from.ip()), octets(dst));
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    // UDP-Lite: the checksum coverage, 0 for the whole datagram.
    let len_field = if lite { 0 } else { udp_len as u16 };
    udp.extend_from_slice(&len_field.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    // The checksum over the pseudo-header (src, dst, length, proto) and
    // the datagram (RFC 768, RFC 3828, RFC 8200 8.1), 0 sent as 0xffff;
    // plain UDP over IPv4 may go without (0).
    if lite || dst.is_ipv6() {
        let mut pseudo = [src_b.as_slice(), dst_b.as_slice()].concat();
        pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto as u8]);
        let c = match crust_soccr::checksum(&[&pseudo, &udp]) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    let (family, mut p) = if dst.is_ipv4() {
        let total = (20 + udp.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto as u8, 0, 0]);
        (libc::AF_INET, h)
    } else {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        h.extend_from_slice(&[proto as u8, 64]);
        (libc::AF_INET6, h)
    };
    p.extend_from_slice(&src_b);
    p.extend_from_slice(&dst_b);
    if family == libc::AF_INET {
        let c = crust_soccr::checksum(&[&p[..20]]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(&udp);
    let raw = sn::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    sn::sendto(raw.as_fd(), &p, 0, &SocketAddr::new(dst, 0))?;
    Ok(())
}

/// The inet sockets crust made for a restore.
#[derive(Default)]
pub struct OpenInet {
    fds: HashMap<u32, OwnedFd>,
    /// Connections still in repair mode: (file id, socket, state, the
    /// recorded options, for the buffer sizes set once the queues are in).
    builders: Vec<(u32, Builder, TcpState, SkOptsEntry, Option<u32>)>,
    /// Connections out of repair mode that wait to be accepted:
    /// (listener id, socket, peer).
    queued: Vec<(u32, OwnedFd, SocketAddr)>,
    method: netlock::Method,
    conns: Vec<Conn>,
}

/// Connections that waited in a listener's accept queue, to hand to the
/// task that accepts them (see [`crate::net::accept`]).
pub struct AcceptQueue {
    /// crust's copy of the listener.
    pub listener: OwnedFd,
    /// The connections, in queue order, with their peers.
    pub conns: std::collections::VecDeque<(OwnedFd, SocketAddr)>,
    /// Stand-ins queued on the listener in their place (crust's client
    /// ends and their addresses): what the task really accepts.
    pub stand_ins: Vec<(OwnedFd, SocketAddr)>,
}

impl OpenInet {
    /// After [`OpenInet::finish`]: for each listener with queued
    /// connections, as many stand-in connections made to it from crust
    /// (so that it is readable and accept returns at once, as it did).
    pub fn take_accept_queues(&mut self) -> Result<Vec<AcceptQueue>, Error> {
        let me = crust_sys::process::getpid();
        let mut out: Vec<(u32, AcceptQueue)> = Vec::new();
        for (lid, fd, peer) in std::mem::take(&mut self.queued) {
            let i = match out.iter().position(|(l, _)| *l == lid) {
                Some(i) => i,
                None => {
                    let l = self.fds.get(&lid).ok_or_else(|| Error::Restore {
                        pid: me,
                        what: format!("listener {lid} of a queued connection was not made"),
                    })?;
                    let listener = l.try_clone().map_err(sys_err(me, "dup of a listener"))?;
                    out.push((
                        lid,
                        AcceptQueue {
                            listener,
                            conns: Default::default(),
                            stand_ins: Vec::new(),
                        },
                    ));
                    out.len() - 1
                }
            };
            out[i].1.conns.push_back((fd, peer));
        }
        for (lid, q) in &mut out {
            let mut to = sn::getsockname(q.listener.as_fd())
                .map_err(sys_err(me, format!("getsockname of listener {lid}")))?;
            if to.ip().is_unspecified() {
                to.set_ip(match to {
                    SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            for _ in 0..q.conns.len() {
                let c = sn::socket(sn::family_of(&to), libc::SOCK_STREAM, libc::IPPROTO_TCP)
                    .map_err(sys_err(me, "socket for a stand-in connection"))?;
                sn::connect(c.as_fd(), &to).map_err(sys_err(
                    me,
                    format!("stand-in connection to listener {lid} on {to}"),
                ))?;
                let at = sn::getsockname(c.as_fd()).map_err(sys_err(me, "getsockname"))?;
                q.stand_ins.push((c, at));
            }
            info!(
                "listener {lid} on {to}: {} connection(s) to hand over when accepted",
                q.conns.len()
            );
        }
        Ok(out.into_iter().map(|(_, q)| q).collect())
    }
}

/// The file status flags of an entry (O_NONBLOCK, O_ASYNC...) on a socket
/// crust made.
fn set_status(s: BorrowedFd<'_>, flags: u32) -> std::io::Result<()> {
    let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
    if flags & keep != 0 {
        let cur = crust_sys::pipe::status_flags(s)?;
        crust_sys::pipe::set_status_flags(s, cur | (flags & keep) as i32)?;
    }
    Ok(())
}

impl std::fmt::Debug for OpenInet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenInet")
            .field("sockets", &self.fds.len())
            .field("connections", &self.builders.len())
            .finish()
    }
}

impl OpenInet {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        if let Some(f) = self.fds.get(&id) {
            return Some(f.as_fd());
        }
        self.builders
            .iter()
            .find(|(i, _, _, _, _)| *i == id)
            .map(|(_, b, _, _, _)| b.fd())
    }

    /// Every task holds its sockets: take the connections out of repair
    /// mode (what was never sent goes out now) and unlock the network.
    pub fn finish(&mut self) -> Result<(), Error> {
        for (id, b, st, opts, queued_on) in std::mem::take(&mut self.builders) {
            let local = st.local;
            let remote = st.remote;
            let fd = b.finish(&st).map_err(|source| Error::Soccr {
                what: format!("inet socket {id}: taking the connection {local} -> {remote} out of repair mode"),
                source: Box::new(source),
            })?;
            // The recorded buffer sizes, now that the queues are in.
            let bufs = SkOptsEntry {
                so_sndbuf: opts.so_sndbuf,
                so_rcvbuf: opts.so_rcvbuf,
                ..Default::default()
            };
            if let Err(e) = crate::net::unix::set_opts(fd.as_fd(), &bufs) {
                warn!("inet socket {id}: could not set its buffer sizes back: {e}");
            }
            if let Some(l) = queued_on {
                self.queued.push((l, fd, remote));
            }
        }
        if !self.conns.is_empty() {
            netlock::unlock(self.method, &self.conns)?;
            info!("Unlocked {} TCP connection(s)", self.conns.len());
            self.conns.clear();
        }
        Ok(())
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
