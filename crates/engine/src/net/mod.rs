//! Sockets and the network: unix, inet (TCP through crust-soccr, UDP, raw),
//! packet and netlink sockets, accept-queue hand-over, network locking.

pub(crate) mod accept;
pub(crate) mod inet;
pub(crate) mod netlink;
pub mod netlock;
pub(crate) mod packet;
pub(crate) mod sock;
pub(crate) mod tun;
pub(crate) mod udpcork;
pub(crate) mod unix;

use crate::files::find_kind;
use crate::files::kind::dump::DumpKind;
use crate::files::FileTable;
use crate::ns::ids::NsIds;
use crate::ns::ids::NsKind;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::FileEntry;
use std::fs::File;
use std::path::Path;

/// The dump's step between kinds of socket before files.img is written
/// (see [`crate::files::FileTable::write`]): inet writes its images and
/// hands the datagrams queued on its sockets to unix, which writes them
/// in sk-queues.img with its own. Returns inet's entries for files.img.
pub(crate) fn queued_datagrams(
    kinds: &mut [Box<dyn DumpKind>],
    next_id: &mut u32,
    dir: &Path,
) -> Result<Vec<FileEntry>, Error> {
    let (entries, dgrams) = match find_kind::<inet::InetDump>(kinds) {
        Some(i) => i.write(dir, next_id)?,
        None => (Vec::new(), Vec::new()),
    };
    if let Some(u) = find_kind::<unix::UnixDump>(kinds) {
        u.add_datagrams(dgrams);
        u.write(dir)?;
    }
    Ok(entries)
}

/// CRIU's net ns id of crust's own network namespace (the id of the
/// second namespace numbered, after the pid namespace).
pub(crate) const CRUST_NET_NS_ID: u32 = 2;

/// The network namespaces a dump's sockets are in: the root's (the
/// tree's), and the tree's other ones, each with a process in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SkNetns {
    /// A process in it when it is not crust's (the tree's root): sock_diag
    /// lists the sockets of the namespace its socket was made in, so the
    /// diag sockets are made by a crust thread that joined this one's.
    pub pid: Option<i32>,
    /// Its id in the images (CRIU's `ns_id` of inet, unix and netlink
    /// socket entries).
    pub id: u32,
    /// The tree's other network namespaces: (inode, a process in it, id).
    pub others: Vec<(u64, i32, u32)>,
}

impl Default for SkNetns {
    fn default() -> Self {
        SkNetns {
            pid: None,
            id: CRUST_NET_NS_ID,
            others: Vec::new(),
        }
    }
}

impl SkNetns {
    /// Run `f` (which makes sockets) in this namespace: in crust's own
    /// thread when it is crust's, else in a thread that joined it.
    pub(crate) fn run<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        match self.pid {
            None => f(),
            Some(pid) => crate::ns::in_ns(pid, &[NsKind::Net], f),
        }
    }

    /// Where the sockets are, for messages.
    pub(crate) fn describe(&self) -> String {
        match (self.pid, self.others.is_empty()) {
            (None, _) => "crust's network namespace".into(),
            (Some(pid), true) => format!("the network namespace of process {pid} (the tree's)"),
            (Some(pid), false) => format!(
                "the network namespace of process {pid} (the tree's) nor in the tree's other ones"
            ),
        }
    }

    /// The namespace of socket `sock`: one of the tree's other ones
    /// (ioctl SIOCGSKNS), else this one.
    pub(crate) fn of_socket(&self, sock: std::os::fd::BorrowedFd<'_>) -> SkNetns {
        use std::os::unix::fs::MetadataExt;
        if self.others.is_empty() {
            return self.clone();
        }
        let ino = crust_sys::ns::socket_netns(sock)
            .and_then(|f| File::from(f).metadata())
            .map(|m| m.ino());
        match ino.ok().and_then(|i| self.others.iter().find(|o| o.0 == i)) {
            Some(&(_, pid, id)) => SkNetns {
                pid: Some(pid),
                id,
                others: Vec::new(),
            },
            None => self.clone(),
        }
    }

    /// Whether this is one of the tree's network namespaces other than
    /// its root's (as [`Self::of_socket`] returns it).
    pub(crate) fn is_other(&self, all: &SkNetns) -> bool {
        self.id != all.id
    }

    /// The sock_diag records of every namespace (this one's, then the
    /// others'), by inode, as `load` reads those of one.
    pub(crate) fn merged<T>(
        &self,
        load: impl Fn(&SkNetns) -> Result<std::collections::HashMap<u32, T>, Error>,
    ) -> Result<std::collections::HashMap<u32, T>, Error> {
        let mut all = load(&SkNetns {
            others: Vec::new(),
            ..self.clone()
        })?;
        for &(_, pid, id) in &self.others {
            all.extend(load(&SkNetns {
                pid: Some(pid),
                id,
                others: Vec::new(),
            })?);
        }
        Ok(all)
    }
}

/// Tell the socket kinds of a dump which network namespaces the tree's
/// sockets are in: that of its root `root_pid` (ids `root`), the tree's
/// own when it is not crust's, and the tree's other ones (`subs`: id, a
/// process in it).
pub(crate) fn set_dump_netns(
    files: &mut FileTable,
    root_pid: i32,
    root: NsIds,
    subs: &[(u32, i32)],
) {
    use std::os::unix::fs::MetadataExt;
    let others = subs
        .iter()
        .filter_map(|&(id, pid)| {
            let m = std::fs::metadata(NsKind::Net.proc_path(&pid.to_string())).ok()?;
            Some((m.ino(), pid, id))
        })
        .collect();
    let ns = SkNetns {
        pid: root.own(NsKind::Net).then_some(root_pid),
        id: root.get(NsKind::Net),
        others,
    };
    if let Some(k) = files.kind_mut::<inet::InetDump>() {
        k.netns = ns.clone();
    }
    if let Some(k) = files.kind_mut::<unix::UnixDump>() {
        k.netns = ns.clone();
    }
    if let Some(k) = files.kind_mut::<packet::PacketDump>() {
        k.netns = ns.clone();
    }
    if let Some(k) = files.kind_mut::<netlink::NetlinkDump>() {
        k.netns = ns.clone();
    }
    if let Some(k) = files.kind_mut::<tun::TunDump>() {
        k.netns = ns;
    }
}

/// Run `f` on this thread while it is in the network namespace of process
/// `pid` (the tree's root), then move the thread back to its own: the
/// sockets `f` makes (and the threads and processes it starts) are the
/// namespace's, but for those made by [`in_sock_netns`] in one of the
/// tree's other namespaces (`others`: id, an fd on it). Unlike
/// [`crate::ns::in_ns`], `f` needs not be `Send`.
pub(crate) fn in_netns_of<T>(
    pid: i32,
    others: Vec<(u32, File)>,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    use std::os::fd::AsFd;
    let me = crust_sys::process::getpid();
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(sys_err(me, "open /proc/thread-self/ns/net"))?;
    let theirs = crate::ns::open_ns(pid, NsKind::Net)?;
    crust_sys::ns::setns(theirs.as_fd(), libc::CLONE_NEWNET).map_err(sys_err(
        pid,
        format!("setns into the network namespace of process {pid}"),
    ))?;
    let dup = theirs.try_clone().ok();
    let before = TREE_NETNS.with(|t| t.replace(dup));
    let before_others = OTHER_NETNS.with(|t| t.replace(others));
    let out = f();
    OTHER_NETNS.with(|t| t.replace(before_others));
    TREE_NETNS.with(|t| t.replace(before));
    crust_sys::ns::setns(own.as_fd(), libc::CLONE_NEWNET)
        .map_err(sys_err(me, "setns back into crust's network namespace"))?;
    out
}

thread_local! {
    /// The tree's network namespace while [`in_netns_of`] runs on this
    /// thread: the sockets made then remember it for what they do later,
    /// back in crust's namespace (unlocking it, stand-in connections).
    static TREE_NETNS: std::cell::RefCell<Option<File>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// The tree's network namespaces while [`in_netns_of`] runs on this
    /// thread: (id, an fd on it).
    static OTHER_NETNS: std::cell::RefCell<Vec<(u32, File)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Make a socket with `make` in the tree's network namespace of id `ns_id`
/// (a socket entry's `ns_id`) when it is one of the tree's others than the
/// root's, this thread being in the root's (see [`in_netns_of`]); else
/// where the thread is. The thread goes back to the root's namespace.
pub(crate) fn in_sock_netns<T>(
    ns_id: Option<u32>,
    make: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsFd;
    let find = |id: u32| {
        OTHER_NETNS.with(|t| {
            t.borrow()
                .iter()
                .find(|(i, _)| *i == id)
                .and_then(|(_, f)| f.try_clone().ok())
        })
    };
    let (Some(id), Some(back)) = (ns_id, tree_netns()) else {
        return make();
    };
    let Some(there) = find(id) else {
        return make();
    };
    let same = |a: &File, b: &File| {
        use std::os::unix::fs::MetadataExt;
        matches!((a.metadata(), b.metadata()), (Ok(x), Ok(y)) if x.ino() == y.ino())
    };
    if same(&there, &back) {
        return make();
    }
    crust_sys::ns::setns(there.as_fd(), libc::CLONE_NEWNET)?;
    let out = make();
    crust_sys::ns::setns(back.as_fd(), libc::CLONE_NEWNET)?;
    out
}

/// The network namespace [`in_netns_of`] runs this thread in, if it does:
/// the sockets made now are the tree's own namespace's.
pub(crate) fn tree_netns() -> Option<File> {
    TREE_NETNS.with(|t| t.borrow().as_ref().and_then(|f| f.try_clone().ok()))
}

/// Run `f` in a crust thread that joined network namespace `ns`.
pub(crate) fn in_netns_file<T: Send>(
    ns: &File,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    use std::os::fd::AsFd;
    let me = crust_sys::process::getpid();
    std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNET)
                .map_err(sys_err(me, "setns into the tree's network namespace"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Restore {
                pid: me,
                what: "the thread working in the tree's network namespace panicked".into(),
            })
        })
    })
}
