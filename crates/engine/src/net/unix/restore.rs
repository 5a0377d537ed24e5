use super::bind::{bind_name, Addrs};
use super::*;

// ---------------------------------------------------------------- restore

/// The unix sockets of an image set, read and checked.
#[derive(Debug, Default)]
pub struct UnixFiles {
    /// By files.img id.
    pub(super) socks: BTreeMap<u32, UnixSkEntry>,
    /// files.img id by inode.
    by_ino: HashMap<u32, u32>,
    /// Queued messages by files.img id, in order.
    pub(super) queues: HashMap<u32, Vec<Vec<u8>>>,
    /// Files carried by queued messages (SCM_RIGHTS), by (socket id,
    /// message index): files.img ids.
    rights: HashMap<(u32, usize), Vec<u32>>,
    /// Regular files carried by messages, which crust opens itself.
    carried_reg: HashMap<u32, RegFileEntry>,
    /// The sender's credentials of queued messages (SCM_CREDENTIALS), by
    /// (socket id, message index).
    creds: HashMap<(u32, usize), SkUcredEntry>,
    /// Every file carried by a queued message, in image order, with the
    /// socket the message is queued on: (file id, socket id).
    carried_on: Vec<(u32, u32)>,
    /// The same, with the process whose fd numbers name what each refers
    /// to (see [`super::carried_names_in`]), once the fd tables are known.
    carried: Vec<CarriedFile>,
    /// Sockets bound on a mount the images have (`mnt_id`): files.img id
    /// -> the id of its mount namespace (`mountpoints-N.img`).
    mnt_ns: HashMap<u32, u32>,
}

pub(super) fn check_entry(u: &UnixSkEntry) -> Result<(), String> {
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
        let dir_ok = u
            .name_dir
            .as_deref()
            .is_some_and(|d| d.starts_with('/') && !d.contains('\0'));
        if !p.is_absolute() && !dir_ok {
            return Err(format!(
                "unix socket {} is bound to the relative path {} without an absolute name_dir",
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
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
        ext_unix_sk: bool,
    ) -> Result<UnixFiles, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let files = loaded.entries()?;
        let mut out = UnixFiles::default();
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
            out.socks.insert(u.id, UnixSkEntry::clone(u));
        }
        out.check_peers(dir, ext_unix_sk)?;
        out.check_mounts(dir)?;
        out.load_queues(dir, files)?;
        Ok(out)
    }

    /// The mount each socket bound to a path was bound on (`mnt_id`) is a
    /// mount of the images' mount namespaces; its namespace is noted (see
    /// [`Self::away`]). Images without mount namespaces (a tree in crust's)
    /// record none: a `mnt_id` there is not used.
    fn check_mounts(&mut self, dir: &Path) -> Result<(), Error> {
        let recorded: Vec<(u32, u32, PathBuf)> = self
            .socks
            .values()
            .filter(|u| u.uflags & USK_EXTERN == 0)
            .filter_map(|u| {
                let m = u32::try_from(u.mnt_id?).ok()?;
                Some((u.id, m, super::bind::full_path(u)?))
            })
            .collect();
        if recorded.is_empty() {
            return Ok(());
        }
        let by_mnt = mounts_by_ns(dir)?;
        if by_mnt.is_empty() {
            return Ok(());
        }
        for (id, m, path) in recorded {
            let ns = by_mnt.get(&m).ok_or_else(|| Error::BadImage {
                dir: dir.to_path_buf(),
                why: format!(
                    "files.img: unix socket {id} (bound to {}) was bound on mount {m}, which no mountpoints-N.img of the images has",
                    path.display()
                ),
            })?;
            self.mnt_ns.insert(id, *ns);
        }
        Ok(())
    }

    /// The root directory (in crust's view) of the other mount namespace
    /// of the tree that socket `u` was bound in; None for the root's.
    fn away(&self, u: &UnixSkEntry) -> Option<PathBuf> {
        crate::util::view::sub_root(*self.mnt_ns.get(&u.id)?)
    }

    /// Every connected socket's peer is in the image (or outside the tree
    /// with `--ext-unix-sk`) and can be connected to again.
    fn check_peers(&self, dir: &Path, ext_unix_sk: bool) -> Result<(), Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        for u in self.socks.values() {
            if u.uflags & USK_EXTERN != 0 || u.peer == 0 {
                continue;
            }
            let here = format!(
                "unix {} socket {} (inode {})",
                type_name(u.r#type),
                u.id,
                u.ino
            );
            let pid = *self.by_ino.get(&u.peer).ok_or_else(|| {
                bad(format!(
                    "{here} is connected to socket {}, which files.img does not have",
                    u.peer
                ))
            })?;
            let p = &self.socks[&pid];
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
        Ok(())
    }

    /// The messages of sk-queues.img queued on unix sockets, checked.
    fn load_queues(&mut self, dir: &Path, files: &[FileEntry]) -> Result<(), Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let inet_ids: std::collections::HashSet<u32> = files
            .iter()
            .filter(|f| f.r#type == fd_types::INETSK)
            .map(|f| f.id)
            .collect();
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
            let u = self.socks.get(&e.id_for).ok_or_else(|| {
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
            let dgram = is_dgram(u.r#type);
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
            self.check_rights(dir, &here, &rights, files)?;
            self.carried_on
                .extend(rights.iter().map(|r| (*r, e.id_for)));
            if !rights.is_empty() {
                if e.length == 0 && !dgram {
                    return Err(bad(format!("{here} carries files but no byte")));
                }
                let idx = self.queues.get(&e.id_for).map_or(0, |q| q.len());
                self.rights.insert((e.id_for, idx), rights);
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
                let idx = self.queues.get(&e.id_for).map_or(0, |q| q.len());
                self.creds.insert((e.id_for, idx), c);
            }
            self.queues.entry(e.id_for).or_default().push(rec.payload);
        }
        Ok(())
    }

    /// The files a queued message carries (`rights`, files.img ids) are
    /// files crust can make again: pipes, unix sockets, regular files,
    /// epolls (made by the event files, before the sockets).
    fn check_rights(
        &mut self,
        dir: &Path,
        here: &str,
        rights: &[u32],
        files: &[FileEntry],
    ) -> Result<(), Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        for r in rights {
            let f = files.iter().find(|f| f.id == *r).ok_or_else(|| {
                bad(format!(
                    "{here} carries file {r}, which files.img does not have"
                ))
            })?;
            match f.r#type {
                fd_types::PIPE | fd_types::EVENTPOLL => {}
                fd_types::UNIXSK if self.has(*r) => {}
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
                    self.carried_reg.insert(*r, RegFileEntry::clone(reg));
                }
                t => {
                    return Err(Error::unsupported(format!(
                        "{here} carries file {r} of type {t}; crust restores only regular files, pipes, unix sockets and epolls carried in messages"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The process whose fd numbers name what each carried file refers to
    /// (see [`super::carried_names_in`]), from the fd tables of the tree
    /// (`procs`, pid and fd table of every live process).
    pub fn name_carried<'a>(&mut self, procs: impl Iterator<Item = (i32, &'a [FdinfoEntry])>) {
        if self.carried_on.is_empty() {
            return;
        }
        let procs: Vec<(i32, &[FdinfoEntry])> = procs.collect();
        let socks: Vec<(u32, u32, u32)> = self
            .socks
            .values()
            .filter(|u| u.uflags & USK_EXTERN == 0)
            .map(|u| (u.id, u.ino, u.peer))
            .collect();
        let holders = |ino: u32| -> Vec<i32> {
            let Some(id) = socks.iter().find(|s| s.1 == ino).map(|s| s.0) else {
                return Vec::new();
            };
            procs
                .iter()
                .filter(|(_, fds)| {
                    fds.iter()
                        .any(|f| f.r#type == fd_types::UNIXSK && f.id == id)
                })
                .map(|(pid, _)| *pid)
                .collect()
        };
        self.carried = self
            .carried_on
            .iter()
            .map(|&(id, on)| CarriedFile {
                id,
                names_in: super::carried_names_in(&socks, on, &holders),
            })
            .collect();
    }

    /// The files carried by queued messages (see [`Self::name_carried`]).
    pub(crate) fn carried_files(&self) -> Vec<CarriedFile> {
        self.carried.clone()
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
    pub fn open(&self, shared: &crate::files::kind::Made<'_>) -> Result<OpenUnix, Error> {
        let me = crust_sys::process::getpid();
        // Socket files bound here go again if the restore fails.
        let mut bound = BoundFiles::default();
        // How crust reaches each bound socket (its ghost, for one whose
        // file was gone).
        let mut addrs = Addrs::default();
        let (made, feeders, connects) = self.make_sockets(&mut bound, &mut addrs)?;
        let ours = |u: &UnixSkEntry| u.uflags & USK_EXTERN == 0;
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
                    // Names are looked up in the sender's namespace.
                    temp = crate::net::in_sock_netns(u.ns_id, || su::socket(libc::SOCK_DGRAM))
                        .map_err(sys_err(me, format!("socket to fill {what}")))?;
                    (temp.as_fd(), Some(addrs.of(u)))
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
                late.push((*id, keep, to));
                continue;
            }
            self.fill_queue(*id, sender, to.as_deref(), &made, shared, &|_| None)?;
        }
        drop(feeders);
        for (id, peer) in connects {
            let name = addrs.of(&self.socks[&peer]);
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
        self.finish_sockets(&made)?;
        Ok(OpenUnix {
            by_id: made,
            late,
            bound,
            _addrs: addrs,
        })
    }
    /// Make every socket of the tree: pairs for sockets connected to each
    /// other (or to a peer that is gone: its end, a feeder, sends the
    /// queue), bound sockets, listeners. Returns the sockets by id, the
    /// feeders, and the datagram sockets to connect once queues are in.
    #[allow(clippy::type_complexity)]
    fn make_sockets(
        &self,
        bound: &mut BoundFiles,
        addrs: &mut Addrs,
    ) -> Result<
        (
            HashMap<u32, OwnedFd>,
            HashMap<u32, OwnedFd>,
            Vec<(u32, u32)>,
        ),
        Error,
    > {
        let me = crust_sys::process::getpid();
        let mut made: HashMap<u32, OwnedFd> = HashMap::new();
        // The other end of a socket whose peer was gone: sends its queue,
        // then is closed.
        let mut feeders: HashMap<u32, OwnedFd> = HashMap::new();
        // Sockets to connect once queues are filled: (id, peer id).
        let mut connects: Vec<(u32, u32)> = Vec::new();
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
            // A datagram socket others connected to (the kernel reports it
            // established) but itself connected nowhere: made on its own,
            // unless only a feeder can put its queue back.
            let lone_dgram = is_dgram(u.r#type)
                && u.peer == 0
                && (!u.name.is_empty() || !self.queues.contains_key(&u.id));
            if u.state == ST_ESTABLISHED && (mutual.is_some() || (u.peer == 0 && !lone_dgram)) {
                let (a, b) = crate::net::in_sock_netns(u.ns_id, || su::socketpair(ty))
                    .map_err(e("socketpair".into()))?;
                match mutual {
                    Some(p) => {
                        if is_dgram(u.r#type) {
                            bind_name(a.as_fd(), u, self.away(u).as_deref(), bound, addrs)
                                .map_err(e(format!("bind {}", show_name(&u.name))))?;
                            bind_name(b.as_fd(), p, self.away(p).as_deref(), bound, addrs)
                                .map_err(e(format!("bind {}", show_name(&p.name))))?;
                        }
                        made.insert(p.id, b);
                    }
                    None => {
                        if is_dgram(u.r#type) {
                            bind_name(a.as_fd(), u, self.away(u).as_deref(), bound, addrs)
                                .map_err(e(format!("bind {}", show_name(&u.name))))?;
                        }
                        feeders.insert(u.id, b);
                    }
                }
                made.insert(u.id, a);
                continue;
            }
            let s = crate::net::in_sock_netns(u.ns_id, || su::socket(ty))
                .map_err(e("socket".into()))?;
            bind_name(s.as_fd(), u, self.away(u).as_deref(), bound, addrs)
                .map_err(e(format!("bind {}", show_name(&u.name))))?;
            if u.state == ST_LISTEN {
                su::listen(s.as_fd(), u.backlog as i32).map_err(e("listen".into()))?;
            }
            if let (ST_ESTABLISHED, Some(p)) = (u.state, peer) {
                connects.push((u.id, p.id));
            }
            made.insert(u.id, s);
        }
        Ok((made, feeders, connects))
    }

    /// Shutdowns, options and status flags of every socket made.
    fn finish_sockets(&self, made: &HashMap<u32, OwnedFd>) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        let ours = |u: &UnixSkEntry| u.uflags & USK_EXTERN == 0;
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
            crate::net::sock::set_opts(s, &u.opts)
                .map_err(sys_err(me, format!("socket options of {what}")))?;
            let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
            crust_sys::pipe::set_status_flags(s, (u.flags & keep) as i32)
                .map_err(sys_err(me, format!("F_SETFL of {what}")))?;
        }
        Ok(())
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
        shared: &crate::files::kind::Made<'_>,
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
                    // Sent by crust: ids as its namespace sees them.
                    let uid = crate::util::idmap::host_uid(c.uid);
                    (pid, uid, crate::util::idmap::host_gid(c.gid))
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
        shared: &crate::files::kind::Made<'_>,
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

/// The mounts of the images' mount namespaces (every `mountpoints-N.img`):
/// mount id -> namespace id. Empty without any.
fn mounts_by_ns(dir: &Path) -> Result<HashMap<u32, u32>, Error> {
    Ok(crate::util::mount_tables(dir)?
        .into_iter()
        .flat_map(|(ns, mounts)| mounts.into_iter().map(move |m| (m.mnt_id, ns)))
        .collect())
}

/// The sockets crust made for the restore, by files.img id; closed once
/// every task has its copies.
#[derive(Debug, Default)]
pub struct OpenUnix {
    by_id: HashMap<u32, OwnedFd>,
    /// Queues whose messages carry credentials, filled once the senders
    /// exist: (socket id, sender, name to send to).
    late: Vec<(u32, OwnedFd, Option<Vec<u8>>)>,
    /// The socket files bound for the restore.
    bound: BoundFiles,
    /// Held while queues may still be filled through them.
    _addrs: Addrs,
}

/// Socket files a restore bound: removed when it fails (dropped before
/// [`BoundFiles::keep`]), so a failed restore leaves no file behind. Each
/// is known by its inode: a file put at the path since is left alone; and
/// reached through an O_PATH fd of its directory, as the path may be in
/// the tree's mount namespace (bound from a thread that joined it).
#[derive(Debug, Default)]
pub(crate) struct BoundFiles {
    /// (directory, the file's name in it, shown path, dev, inode).
    files: Vec<(OwnedFd, std::ffi::OsString, PathBuf, u64, u64)>,
    kept: bool,
}

impl BoundFiles {
    /// Record the socket file just bound at `p`.
    pub(super) fn add(&mut self, p: &Path) {
        use std::os::unix::fs::MetadataExt;
        let (Some(name), Ok(md)) = (p.file_name(), std::fs::symlink_metadata(p)) else {
            return;
        };
        let dir = match p.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d,
            None => Path::new("."),
        };
        match bind::open_path(dir) {
            Ok(d) => self
                .files
                .push((d, name.to_owned(), p.to_path_buf(), md.dev(), md.ino())),
            Err(e) => warn!(
                "cannot open the directory of socket file {}: {e}; it stays if the restore fails",
                p.display()
            ),
        }
    }

    /// The restore succeeded: the files stay.
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for BoundFiles {
    fn drop(&mut self) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if self.kept {
            return;
        }
        for (dir, name, shown, dev, ino) in self.files.drain(..) {
            use std::os::fd::AsRawFd;
            let p = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(&name);
            let ours = std::fs::symlink_metadata(&p)
                .map(|md| md.file_type().is_socket() && md.dev() == dev && md.ino() == ino)
                .unwrap_or(false);
            if !ours {
                continue;
            }
            match std::fs::remove_file(&p) {
                Ok(()) => debug!(
                    "the restore failed: removed socket file {}",
                    shown.display()
                ),
                Err(e) => warn!("cannot remove socket file {}: {e}", shown.display()),
            }
        }
    }
}

impl OpenUnix {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.by_id.get(&id).map(|f| f.as_fd())
    }

    /// The restore succeeded: the socket files bound for it stay.
    pub fn keep(&mut self) {
        self.bound.keep();
    }

    /// Fill the queues whose messages carry their senders' credentials
    /// (SCM_CREDENTIALS), now that the processes of the tree exist (the
    /// kernel wants a live pid): `host_pid` maps a recorded pid to the
    /// restored process's pid in crust's view.
    pub fn refill_late(
        &self,
        files: &UnixFiles,
        shared: &crate::files::kind::Made<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::proto::mnt::MntEntry;

    fn bound(id: u32, mnt: Option<i32>) -> UnixSkEntry {
        UnixSkEntry {
            id,
            name: b"/srv/s.sock\0".to_vec(),
            mnt_id: mnt,
            ..Default::default()
        }
    }

    #[test]
    fn recorded_mounts_are_the_images() {
        let dir = std::env::temp_dir().join(format!("crust-usk-mnt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mnt = |id: u32| MntEntry {
            mnt_id: id,
            ..Default::default()
        };
        let mut u = UnixFiles::default();
        u.socks.insert(1, bound(1, Some(30)));
        u.socks.insert(2, bound(2, Some(-1)));
        u.socks.insert(3, bound(3, None));
        // No mountpoints images: a recorded mount is not used.
        u.check_mounts(&dir).unwrap();
        assert!(u.mnt_ns.is_empty());
        crate::util::write_image(&dir, ImageType::Mnts, 7, &[mnt(20), mnt(21)]).unwrap();
        crate::util::write_image(&dir, ImageType::Mnts, 8, &[mnt(30)]).unwrap();
        u.check_mounts(&dir).unwrap();
        assert_eq!(u.mnt_ns.get(&1), Some(&8));
        assert_eq!(u.mnt_ns.len(), 1);
        u.socks.insert(4, bound(4, Some(99)));
        let e = u.check_mounts(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("unix socket 4") && e.contains("mount 99"), "{e}");
    }
}
