use super::*;

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
        loaded: &crate::files::loaded::LoadedFiles,
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
        // Only the inet entries are copied (a FileEntry holds every kind's
        // part inline: a copy of files.img is some KiB per entry).
        let inet = loaded
            .entries()?
            .iter()
            .filter(|f| f.r#type == fd_types::INETSK);
        for f in inet.cloned() {
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
            // A closed connection has its queue in an image when it was
            // dumped with --tcp-established (always, by CRIU).
            let closed_with_stream = closed_connection(&e)
                && dir
                    .join(ImageType::TcpStream.file_name(e.ino as u64))
                    .exists();
            if e.proto as i32 == libc::IPPROTO_TCP && is_connection(e.state) || closed_with_stream {
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
                    entry: *e,
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
            netns: crate::net::tree_netns(),
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
            if let Some(st) = &s.stream {
                let b = open_connection(s, st, &here)?;
                out.builders.push((
                    *id,
                    b,
                    st.clone(),
                    s.entry.opts.clone(),
                    s.entry.accept_queue_of,
                ));
                continue;
            }
            out.fds.insert(*id, open_plain(s, &here)?);
            if s.entry.proto as i32 == libc::IPPROTO_TCP {
                let o = &s.entry.opts;
                out.reuse
                    .push((*id, o.reuseaddr == Some(true), o.so_reuseport == Some(true)));
            }
        }
        Ok(out)
    }
}

/// `{here}: {what}: {source}` errors of the socket being made.
fn fail_at(here: &str) -> impl Fn(&str, std::io::Error) -> Error + '_ {
    move |what: &str, source: std::io::Error| Error::Restore {
        pid: crust_sys::process::getpid(),
        what: format!("{here}: {what}: {source}"),
    }
}

/// A connection rebuilt in repair mode (left in it until
/// [`OpenInet::finish`]).
fn open_connection(s: &RSock, st: &TcpState, here: &str) -> Result<Builder, Error> {
    let fail = fail_at(here);
    let mut b = Builder::new(&s.local, s.entry.v6only).map_err(|source| Error::Soccr {
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
    // The recorded receive buffer now that the received bytes are in, and
    // before the connection leaves repair mode: from then on the window it
    // advertises is computed from that buffer. Left as big as above, the
    // windows sent with the never-sent tail (finish) offer the peer
    // megabytes the original never offered; the peer sends them, the buffer
    // is cut back, the kernel drops what it had invited, and a peer that had
    // a closed window (zdtm's socket-tcpbuf) can be left unheard for good.
    // The send buffer stays big until the unsent tail is queued (finish).
    let rcvbuf = s.entry.opts.so_rcvbuf;
    let cur = su::getsockopt_int(b.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(-1);
    if rcvbuf != 0 && cur != rcvbuf as i32 {
        su::setsockopt_int(
            b.fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (rcvbuf / 2) as i32,
        )
        .map_err(|e| fail("SO_RCVBUFFORCE (the recorded size)", e))?;
    }
    // Bound: SO_REUSEADDR until every socket is made, so that the
    // listener of its port binds too (the recorded value is set back by
    // OpenInet::finish).
    su::setsockopt_int(b.fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
        .map_err(|e| fail("SO_REUSEADDR", e))?;
    set_status(b.fd(), s.entry.flags).map_err(|e| fail("F_SETFL", e))?;
    Ok(b)
}

/// Any other inet socket: made, bound, listening or connected (UDP),
/// its datagrams queued again.
fn open_plain(s: &RSock, here: &str) -> Result<OwnedFd, Error> {
    let fail = fail_at(here);
    let fam = s.entry.family as i32;
    let ty = s.entry.r#type as i32;
    let proto = s.entry.proto as i32;
    // In the tree's network namespace it was in (when not the root's).
    let fd = crate::net::in_sock_netns(s.entry.ns_id, || {
        if matches!(proto, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) && ty == libc::SOCK_DGRAM {
            // An ICMP echo socket is allowed by its maker's group.
            crate::ns::user::as_ns_root_group(|| sn::socket(fam, ty, proto))
        } else {
            sn::socket(fam, ty, proto)
        }
    })
    .map_err(|e| fail("socket()", e))?;
    if let Some(v6) = s.entry.v6only.filter(|_| ty != libc::SOCK_RAW) {
        su::setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6 as i32)
            .map_err(|e| fail("IPV6_V6ONLY", e))?;
    }
    set_options(fd.as_fd(), &s.entry).map_err(|e| fail("setting its options", e))?;
    bind_plain(fd.as_fd(), s, here)?;
    // A datagram socket connected to port 0 (0.0.0.0:0 included) is
    // connected all the same: its state says so, its peer name does not.
    if ty != libc::SOCK_STREAM && (s.remote.port() != 0 || s.entry.state == TCP_ESTABLISHED) {
        sn::connect(fd.as_fd(), &s.remote)
            .map_err(|e| fail(&format!("connect to {}", s.remote), e))?;
    }
    shutdown_plain(fd.as_fd(), s, here)?;
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
    Ok(fd)
}

/// Bind a socket of [`open_plain`] where it was bound (and listen), as
/// CRIU does: a TCP socket binds with SO_REUSEADDR and SO_REUSEPORT (so
/// that sockets which shared a port bind again whatever their options
/// became since), which it keeps until every socket is made
/// ([`OpenInet::finish`] sets the recorded values); an IPv6 one binds with
/// IP_FREEBIND (its address may still be tentative), set back at once. A TCP socket closed since it was connected (peer
/// recorded) or a connection restored closed (--tcp-close) is not bound:
/// its port went with its connection.
fn bind_plain(fd: BorrowedFd<'_>, s: &RSock, here: &str) -> Result<(), Error> {
    let fail = fail_at(here);
    let (fam, ty, proto) = (
        s.entry.family as i32,
        s.entry.r#type as i32,
        s.entry.proto as i32,
    );
    let tcp = proto == libc::IPPROTO_TCP;
    let bound = s.local.port() != 0 || !s.local.ip().is_unspecified();
    let closed_conn = tcp && s.entry.state == TCP_CLOSE && s.remote.port() != 0;
    let binds = bound && !(tcp && is_connection(s.entry.state)) && !closed_conn;
    let freebind = s.entry.ip_opts.as_ref().and_then(|o| o.freebind) == Some(true);
    let free_bind = binds && fam == libc::AF_INET6 && ty != libc::SOCK_RAW && !freebind;
    let set = |(level, opt): (i32, i32), v: bool, what: &str| {
        su::setsockopt_int(fd, level, opt, v as i32).map_err(|e| fail(what, e))
    };
    let ip_freebind = (libc::IPPROTO_IP, libc::IP_FREEBIND);
    if tcp {
        set((libc::SOL_SOCKET, libc::SO_REUSEADDR), true, "SO_REUSEADDR")?;
        set((libc::SOL_SOCKET, libc::SO_REUSEPORT), true, "SO_REUSEPORT")?;
    }
    if free_bind {
        set(ip_freebind, true, "IP_FREEBIND")?;
    }
    if binds {
        sn::bind(fd, &s.local).map_err(|e| {
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
    if free_bind {
        set(ip_freebind, false, "IP_FREEBIND")?;
    }
    if tcp && s.entry.state == TCP_LISTEN {
        su::listen(fd, s.entry.backlog.min(i32::MAX as u32) as i32)
            .map_err(|e| fail("listen", e))?;
    }
    Ok(())
}

/// The recorded shutdown of a socket of [`open_plain`]; a connection
/// restored closed (--tcp-close) is shut down both ways, as CRIU does (a
/// read gives end of file, a write EPIPE). A socket never connected
/// answers ENOTCONN but is shut down all the same.
fn shutdown_plain(fd: BorrowedFd<'_>, s: &RSock, here: &str) -> Result<(), Error> {
    let proto = s.entry.proto as i32;
    let how = if proto == libc::IPPROTO_TCP && is_connection(s.entry.state) {
        Some(libc::SHUT_RDWR)
    } else {
        s.entry.shutdown.filter(|v| *v != 0).map(|sh| match sh {
            1 => libc::SHUT_RD,
            2 => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        })
    };
    let Some(how) = how else {
        return Ok(());
    };
    // Only a datagram socket was connected again.
    let connected = s.entry.r#type as i32 != libc::SOCK_STREAM && s.entry.state == TCP_ESTABLISHED;
    match su::shutdown(fd, how) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && !connected => Ok(()),
        r => r.map_err(|e| fail_at(here)("shutdown", e)),
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
    crate::net::sock::set_sk_opts(s, &e.opts)?;
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
    /// The tree's own network namespace the sockets were made in: its
    /// lock is lifted from inside, stand-in connections made there.
    netns: Option<std::fs::File>,
    /// TCP sockets that keep SO_REUSEADDR and SO_REUSEPORT set until every
    /// socket is made: (file id, recorded SO_REUSEADDR, SO_REUSEPORT).
    reuse: Vec<(u32, bool, bool)>,
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
                let new = || {
                    sn::socket(sn::family_of(&to), libc::SOCK_STREAM, libc::IPPROTO_TCP)
                        .map_err(sys_err(me, "socket for a stand-in connection"))
                };
                // In the listener's namespace.
                let c = match &self.netns {
                    Some(ns) => crate::net::in_netns_file(ns, new)?,
                    None => new()?,
                };
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

/// SO_REUSEADDR and SO_REUSEPORT as recorded.
fn set_reuse(s: BorrowedFd<'_>, (addr, port): (bool, bool)) -> std::io::Result<()> {
    su::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_REUSEADDR, addr as i32)?;
    su::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_REUSEPORT, port as i32)
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

    /// Every task holds its sockets: unlock the network, then take the
    /// connections out of repair mode (what was never sent goes out now).
    /// CRIU's order: leaving repair mode sends a window probe, which must
    /// reach the peer, so a peer that reset the connection while it was
    /// locked answers with a reset at once (and the unsent tail is not
    /// dropped by the lock to wait for a retransmission).
    pub fn finish(&mut self) -> Result<(), Error> {
        if let Some(ns) = &self.netns {
            // CRIU's lock of the namespace comes back with its iptables
            // rules, if they were dumped: lifted if there.
            netlock::unlock_netns(self.method, ns, &self.conns)?;
            self.conns.clear();
        } else if !self.conns.is_empty() {
            netlock::unlock(self.method, &self.conns)?;
            info!("Unlocked {} TCP connection(s)", self.conns.len());
            self.conns.clear();
        }
        // The crafted segments that replay FINs and ACKs go through a raw
        // socket, which must be in the connections' own namespace to reach
        // them: leave repair mode there.
        // The tree's own firewall rules (restored with its namespace) must
        // let those segments through too.
        let builders = std::mem::take(&mut self.builders);
        let replays = builders
            .iter()
            .any(|(_, _, st, _, _)| st.peer_fin() || st.own_fin_acked());
        let method = self.method;
        let queued = match &self.netns {
            Some(ns) if replays => crate::net::in_netns_file(ns, move || {
                netlock::with_marked_passing(method, || finish_connections(builders))
            })?,
            Some(ns) => crate::net::in_netns_file(ns, move || finish_connections(builders))?,
            None => finish_connections(builders)?,
        };
        self.queued.extend(queued);
        for (id, addr, port) in std::mem::take(&mut self.reuse) {
            if let Some(fd) = self.fds.get(&id) {
                set_reuse(fd.as_fd(), (addr, port)).map_err(|e| {
                    fail_at(&format!("inet socket {id}"))(
                        "setting SO_REUSEADDR/SO_REUSEPORT back",
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// Take connections rebuilt in repair mode out of it (see
/// [`crust_soccr::Builder::finish`]), their recorded buffer sizes and
/// SO_REUSEADDR/SO_REUSEPORT set back; run in their network namespace.
/// Returns those that wait in a listener's accept queue: (listener id,
/// socket, peer).
fn finish_connections(
    builders: Vec<(u32, Builder, TcpState, SkOptsEntry, Option<u32>)>,
) -> Result<Vec<(u32, OwnedFd, SocketAddr)>, Error> {
    let mut queued = Vec::new();
    for (id, b, st, opts, queued_on) in builders {
        let local = st.local;
        let remote = st.remote;
        let fd = b.finish(&st).map_err(|source| Error::Soccr {
            what: format!(
                "inet socket {id}: taking the connection {local} -> {remote} out of repair mode"
            ),
            source: Box::new(source),
        })?;
        // The recorded send buffer, now that the unsent tail is queued (the
        // receive buffer was set back before leaving repair mode).
        let bufs = SkOptsEntry {
            so_sndbuf: opts.so_sndbuf,
            so_rcvbuf: opts.so_rcvbuf,
            ..Default::default()
        };
        if let Err(e) = crate::net::sock::set_opts(fd.as_fd(), &bufs) {
            warn!("inet socket {id}: could not set its buffer sizes back: {e}");
        }
        let reuse = (
            opts.reuseaddr == Some(true),
            opts.so_reuseport == Some(true),
        );
        set_reuse(fd.as_fd(), reuse).map_err(|e| {
            fail_at(&format!("inet socket {id}"))("setting SO_REUSEADDR/SO_REUSEPORT back", e)
        })?;
        if let Some(l) = queued_on {
            queued.push((l, fd, remote));
        }
    }
    Ok(queued)
}
