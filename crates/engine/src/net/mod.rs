//! Sockets and the network: unix, inet (TCP through crust-soccr, UDP, raw),
//! packet and netlink sockets, accept-queue hand-over, network locking.

pub(crate) mod accept;
pub(crate) mod inet;
pub(crate) mod netlink;
pub mod netlock;
pub(crate) mod packet;
pub(crate) mod sock;
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

/// The network namespace a dump's sockets are in: all the tree's
/// processes share their root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SkNetns {
    /// A process in it when it is not crust's (the tree's root): sock_diag
    /// lists the sockets of the namespace its socket was made in, so the
    /// diag sockets are made by a crust thread that joined this one's.
    pub pid: Option<i32>,
    /// Its id in the images (CRIU's `ns_id` of inet, unix and netlink
    /// socket entries).
    pub id: u32,
}

impl Default for SkNetns {
    fn default() -> Self {
        SkNetns {
            pid: None,
            id: CRUST_NET_NS_ID,
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
        match self.pid {
            None => "crust's network namespace".into(),
            Some(pid) => format!("the network namespace of process {pid} (the tree's)"),
        }
    }
}

/// Tell the socket kinds of a dump which network namespace the tree's
/// sockets are in: that of its root `root_pid` (ids `root`), the tree's
/// own when it is not crust's.
pub(crate) fn set_dump_netns(files: &mut FileTable, root_pid: i32, root: NsIds) {
    let ns = SkNetns {
        pid: root.own(NsKind::Net).then_some(root_pid),
        id: root.get(NsKind::Net),
    };
    if let Some(k) = files.kind_mut::<inet::InetDump>() {
        k.netns = ns;
    }
    if let Some(k) = files.kind_mut::<unix::UnixDump>() {
        k.netns = ns;
    }
    if let Some(k) = files.kind_mut::<packet::PacketDump>() {
        k.netns = ns;
    }
    if let Some(k) = files.kind_mut::<netlink::NetlinkDump>() {
        k.netns = ns;
    }
}

/// Run `f` on this thread while it is in the network namespace of process
/// `pid` (the tree's root), then move the thread back to its own: the
/// sockets `f` makes (and the threads and processes it starts) are the
/// namespace's. Unlike [`crate::ns::in_ns`], `f` needs not be `Send`.
pub(crate) fn in_netns_of<T>(pid: i32, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
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
    let out = f();
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
