use super::*;

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
    /// The network namespace of the tree's sockets.
    pub netns: SkNetns,
    ids: HashMap<u32, u32>,
    socks: Vec<Sock>,
    /// Connections locked and in repair mode once written.
    held: Option<NetHold>,
}

/// The UDP part of [`InetDump::describe`]: UDP_CORK, a datagram pending
/// (taken and put back at once), and the datagrams queued.
fn udp_part(
    s: BorrowedFd<'_>,
    (pid, fd, proto): (i32, i32, i32),
    here: &str,
    entry: &mut InetSkEntry,
    local: SocketAddr,
) -> Result<Vec<(Vec<u8>, SocketAddr)>, Error> {
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
    peek_datagrams(s).map_err(sys_err(
        pid,
        format!("peeking the datagrams queued on fd {fd}"),
    ))
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
        let all = self.netns.clone();
        let ns = all.of_socket(s);
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
            match crate::net::netlink::diag_of(&mut self.diag, ino, || all.merged(diag_all))? {
                Some(d) => Some(d),
                // A UDP socket never bound (nor connected, which binds) is
                // in no table of the kernel: nothing for sock_diag to say.
                None if ty == libc::SOCK_DGRAM && local.port() == 0 => None,
                None => {
                    return Err(Error::unsupported(format!(
                        "{here} is not in {} (crust dumps the sockets of the tree's network namespaces)",
                        all.describe()
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
        // A closed TCP socket that was connected keeps its peer, which
        // only SO_PEERNAME still tells (CRIU records it: such a socket is
        // not bound again at restore, its port went with the connection).
        let peer = if tcp_closed {
            peer.or_else(|| closed_peer(s, family))
        } else {
            peer
        };
        let state = match (&diag, peer) {
            (Some(d), _) => d.state as u32,
            (None, _) if tcp_closed => TCP_CLOSE,
            (None, Some(_)) => TCP_ESTABLISHED,
            (None, None) => TCP_CLOSE,
        };
        if ns.is_other(&all) && ty == libc::SOCK_STREAM && peer.is_some() {
            return Err(Error::unsupported(format!(
                "{here} is a TCP connection in network namespace {} of the tree, not its root's: crust locks and restores connections of the root's network namespace only",
                ns.id
            )));
        }
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
            ns_id: Some(ns.id),
            shutdown: match &diag {
                Some(d) => (d.shutdown != 0).then_some(d.shutdown as i32 & 3),
                None if tcp_closed => closed_shutdown(s),
                None => None,
            },
            tcp_opts: (proto == libc::IPPROTO_TCP).then(|| tcp_opts(s)),
            ..Default::default()
        };
        let mut conn = None;
        let mut dgrams = Vec::new();
        let mut pending = 0;
        if proto == libc::IPPROTO_TCP {
            let d = tcp_diag(diag.as_ref(), s, local, ino, tcp_closed);
            (conn, pending) = self.tcp_part(&here, &mut entry, &d, state, local, peer)?;
        } else if ty == libc::SOCK_DGRAM && (proto == libc::IPPROTO_UDP || proto == IPPROTO_UDPLITE)
        {
            dgrams = udp_part(s, (pid, fd, proto), &here, &mut entry, local)?;
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

    /// The TCP part of [`InetDump::describe`]: a listener's backlog and
    /// waiting connections, a connection to carry over (or refuse, or dump
    /// closed, as the options say). Returns (connection, waiting).
    fn tcp_part(
        &self,
        here: &str,
        entry: &mut InetSkEntry,
        d: &Diag,
        state: u32,
        local: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> Result<(Option<(SocketAddr, SocketAddr)>, u32), Error> {
        let mut conn = None;
        let mut pending = 0;
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
        } else if let (true, Some(remote)) = (state == TCP_CLOSE, peer) {
            // A connection over, its peer kept: what it received is carried
            // over in repair mode (as CRIU does) with --tcp-established.
            if self.tcp_established && !self.tcp_close {
                conn = Some((local, remote));
            } else if d.rqueue > 0 && !self.tcp_close {
                return Err(Error::unsupported(format!(
                    "{here}: the closed connection {} -> {} still has {} unread byte(s); dump with --tcp-established to keep them (or --tcp-close to drop them)",
                    show(&local),
                    show(&remote),
                    d.rqueue
                )));
            }
        } else if state != TCP_CLOSE {
            return Err(Error::unsupported(format!(
                "{here} is in TCP state {}, which crust cannot dump",
                state_name(state)
            )));
        }
        Ok((conn, pending))
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
        // The tree's own network namespace is locked as a whole, from
        // inside (CRIU's way); crust's, connection by connection.
        // (whether or not it has connections, as CRIU: nothing in it talks
        // until the restore).
        let netns = match self.netns.pid {
            Some(pid) => Some(crate::ns::open_ns(pid, crate::ns::ids::NsKind::Net)?),
            None => None,
        };
        let mut hold = NetHold {
            method: self.lock_method,
            conns: conns.clone(),
            netns: None,
            repairs: Vec::new(),
            undo: Vec::new(),
            kept: Vec::new(),
        };
        if let Some(ns) = netns {
            netlock::lock_netns(self.lock_method, &ns, &conns)?;
            hold.netns = Some(ns);
        } else if !conns.is_empty() {
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
            if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "stall-after-netlock") {
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
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
                isk: Some(Box::new(s.entry.clone())),
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
    /// The tree's own network namespace, locked as a whole.
    netns: Option<std::fs::File>,
    repairs: Vec<Repair>,
    /// Other things to undo if the tree runs on (pty bytes read out).
    undo: Vec<Box<dyn FnOnce() + Send>>,
    /// Things to do once the tree is dead (System V objects it alone used).
    kept: Vec<Box<dyn FnOnce() + Send>>,
}

impl NetHold {
    /// The `dump_criu_run_id` for the inventory: with nftables, it names
    /// the table that locks these connections (CRIU's restore deletes it).
    pub fn nft_run_id(&self) -> Option<String> {
        (self.method == netlock::Method::Nftables && self.netns.is_none())
            .then(|| netlock::nft_run_id(&self.conns))
    }

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

    /// `f` runs once the tree is dead (keep), not if it runs on.
    pub fn on_kept(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.kept.push(f);
    }

    pub fn keep(mut self) {
        for f in self.kept.drain(..) {
            f();
        }
        if !self.conns.is_empty() {
            info!(
                "{} connection(s) stay locked out of the network until restore",
                self.conns.len()
            );
        }
        self.repairs.clear();
        self.conns.clear();
        if self.netns.take().is_some() {
            // The tree is dead: its namespace's lock goes with it.
            netlock::netns_lock_kept();
        }
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
        let unlocked = match &self.netns {
            Some(ns) => netlock::unlock_netns(self.method, ns, &self.conns),
            None if !self.conns.is_empty() => netlock::unlock(self.method, &self.conns),
            None => Ok(()),
        };
        if let Err(e) = unlocked {
            warn!("could not unlock the network: {e}");
        }
        for f in self.undo.drain(..) {
            f();
        }
    }
}

/// sock_diag's view of a TCP socket, or for a closed one (not in its
/// tables) what stands in for it: its name and unread bytes.
fn tcp_diag(
    diag: Option<&Diag>,
    s: BorrowedFd<'_>,
    local: SocketAddr,
    ino: u32,
    tcp_closed: bool,
) -> Diag {
    let mut d = diag.cloned().unwrap_or(Diag {
        family: if local.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
        proto: libc::IPPROTO_TCP as u8,
        state: TCP_CLOSE as u8,
        src: local,
        dst: local,
        rqueue: 0,
        wqueue: 0,
        ino,
        shutdown: 0,
    });
    if tcp_closed {
        d.rqueue = sn::ioctl_int(s, sn::SIOCINQ).unwrap_or(0).max(0) as u32;
    }
    d
}

/// The peer of a closed TCP socket (SO_PEERNAME answers in any state,
/// getpeername not in CLOSE), if it had one.
/// The buffer must not be longer than the family's sockaddr (EINVAL).
fn closed_peer(s: BorrowedFd<'_>, family: i32) -> Option<SocketAddr> {
    let mut b = [0u8; 28];
    let len = if family == libc::AF_INET { 16 } else { 28 };
    let n = sn::getsockopt(s, libc::SOL_SOCKET, libc::SO_PEERNAME, b.get_mut(..len)?).ok()?;
    sn::from_bytes(b.get(..n)?).filter(|a| a.port() != 0)
}

/// The shutdown of a closed TCP socket (sock_diag does not list it): its
/// reading side only, the one that shows (a read gives end of file, not
/// ENOTCONN); writing to a closed socket fails anyway. As CRIU records it:
/// 1 (SK_SHUTDOWN__READ).
fn closed_shutdown(s: BorrowedFd<'_>) -> Option<i32> {
    let ev = crust_sys::rawsk::poll_now(s, libc::POLLRDHUP | libc::POLLHUP).ok()?;
    (ev & libc::POLLHUP != 0 && ev & libc::POLLRDHUP != 0).then_some(1)
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
