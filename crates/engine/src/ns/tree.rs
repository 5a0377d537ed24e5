//! The tree's own namespaces as one whole: those of its root that are not
//! crust's (CRIU's rule: a namespace of the root's that crust shares is
//! not dumped, and is shared again on restore).
//!
//! Dump: [`dump`] writes each kind's images once the processes are dumped.
//! Restore: [`TreeNamespaces::load`] reads and checks them before anything
//! is made; the root is cloned with [`TreeNamespaces::clone_flags`], then,
//! while it is stopped, [`TreeNamespaces::prepare`] fills its new
//! namespaces in phases, in this order:
//!
//! 1. `user`: the uid and gid maps, written from crust's namespace (the
//!    root's other new namespaces are owned by its new user namespace:
//!    clone made the user namespace first). Once the root is traced on its
//!    trampoline it takes ids of the namespace
//!    ([`TreeNamespaces::settle_root`]).
//! 2. `net`: sysctls, links (a veth's outer end in crust's namespace),
//!    addresses, routes, rules, iptables/nftables ([`super::net`]).
//! 3. `mnt`: the mount tree, pivoted into (see [`super::mnt::restore`]).
//! 4. `uts`: the host and domain names.
//!
//! The time namespace is made before the root is cloned (its offsets can
//! only be set while no process is in it): [`TreeNamespaces::time_for_root`].
//!
//! The pid namespace (the root is its init) and the IPC namespace (System V
//! objects, [`super::sysvipc`]) are made by the restore's own steps.

use super::ids::{NsIds, NsKind};
use super::join::Joined;
use super::mnt::{self, restore::MntNs};
use super::net::NetNs;
use super::time::{self, TimeNs};
use super::user::{self, UserNs};
use super::uts::{self, Uts};
use crate::{Error, Options};
use crust_images::proto::core::TaskKobjIdsEntry;
use std::path::Path;

/// What a kind's dumper is given.
pub(crate) struct DumpCtx<'a> {
    /// The images directory.
    pub dir: &'a Path,
    /// The tree's root (host pid), frozen: a member of every namespace
    /// dumped.
    pub root_pid: i32,
    /// The root's namespace ids.
    pub ids: NsIds,
    pub opts: &'a Options,
    /// The tree's other mount namespaces: (id, a process in it).
    pub sub_mnt: &'a [(u32, i32)],
    /// The tree's other network namespaces: (id, a process in it).
    pub sub_net: &'a [(u32, i32)],
    /// What the tree's tun files told of the links they are attached to.
    pub tuns: &'a [super::net::TunSeen],
}

/// What a kind's loader and preparer are given.
pub(crate) struct LoadCtx<'a> {
    /// The images directory.
    pub dir: &'a Path,
    pub opts: &'a Options,
}

/// Dump the tree's own namespaces that no other step dumps.
pub(crate) fn dump(ctx: &DumpCtx<'_>) -> Result<(), Error> {
    let (dir, root_pid, root) = (ctx.dir, ctx.root_pid, ctx.ids);
    for kind in root.own_kinds() {
        let id = root.get(kind);
        match kind {
            NsKind::Uts => uts::dump(dir, root_pid, id)?,
            NsKind::Time => time::dump(dir, root_pid, id)?,
            // System V IPC is dumped by the ipc step; POSIX message
            // queues go to crust's own image.
            NsKind::Ipc => super::mqueue::dump(dir, root_pid, id)?,
            // The pid namespace has no image.
            NsKind::Pid => {}
            // An external namespace is dumped as such even with
            // --empty-ns net (runc asks for both), as CRIU does.
            NsKind::Net
                if super::net::empty(ctx.opts)?
                    && super::net::external_key(&ctx.opts.external, root_pid).is_none() =>
            {
                if let Some((sub, pid)) = ctx.sub_net.first() {
                    return Err(Error::unsupported(format!(
                        "process {pid} is in network namespace {sub}, another than the root's: --empty-ns net leaves out one network namespace only (CRIU's rule)"
                    )));
                }
                log::info!("network namespace {id} left out (--empty-ns net)");
            }
            NsKind::Net => {
                let all: Vec<(u32, i32)> = std::iter::once((id, root_pid))
                    .chain(ctx.sub_net.iter().copied())
                    .collect();
                for &(sub, pid) in &all {
                    match super::net::external_key(&ctx.opts.external, pid) {
                        Some(key) if pid == root_pid => {
                            super::net::dump_external(dir, sub, &key)?
                        }
                        Some(key) => {
                            return Err(Error::unsupported(format!(
                                "process {pid} is in network namespace {sub}, given as external ({key}), another than the root's: crust takes an external network namespace for the root only"
                            )))
                        }
                        None => super::net::dump(dir, pid, sub, &all, ctx.tuns)?,
                    }
                }
            }
            NsKind::Mnt => {
                mnt::dump(ctx, id)?;
                mnt::multi::dump(ctx)?;
            }
            NsKind::User => user::dump(dir, root_pid, id)?,
            // Its root is recorded in cgroup.img (the sets' cgns_prefix).
            NsKind::Cgroup => {}
        }
    }
    Ok(())
}

/// The tree's own namespaces to make, read from the images.
#[derive(Debug, Default)]
pub(crate) struct TreeNamespaces {
    /// The kinds the root had of its own (not the dumping tool's).
    own: Vec<NsKind>,
    user: Option<UserNs>,
    uts: Option<Uts>,
    time: Option<TimeNs>,
    /// The namespaces the root joins (`--join-ns`), taken as they are.
    joined: Joined,
    /// The root's network namespace is an external one it joins (its
    /// image names a key, see [`Self::external_net`]).
    external_net: bool,
    net: Option<NetNs>,
    /// The tree's other network namespaces (made beside the root's).
    net_subs: Vec<NetNs>,
    /// Once made: an fd on each of the tree's network namespaces, by id.
    net_files: std::sync::Mutex<Vec<(u32, std::fs::File)>>,
    mnt: Option<MntNs>,
    /// The tree's other mount namespaces (see [`mnt::multi`]).
    mnt_subs: mnt::multi::SubNamespaces,
}

impl TreeNamespaces {
    /// Read the namespaces of the tree whose root has ids `root`; `crust`:
    /// the dumping tool's (the inventory's `root_ids`). Without them (old
    /// images), the tree is taken to share every namespace but the ones
    /// the restore makes by its own steps.
    pub(crate) fn load(
        ctx: &LoadCtx<'_>,
        crust: Option<&TaskKobjIdsEntry>,
        root: &TaskKobjIdsEntry,
    ) -> Result<TreeNamespaces, Error> {
        let dir = ctx.dir;
        let mut t = TreeNamespaces {
            joined: Joined::open(ctx.opts)?,
            ..Default::default()
        };
        let Some(crust) = crust else { return Ok(t) };
        for kind in NsKind::ALL {
            let (Some(mine), Some(tree)) = (kind.id_in(crust), kind.id_in(root)) else {
                continue;
            };
            if mine == tree {
                continue;
            }
            if t.joined.joins(kind) {
                if kind == NsKind::Net {
                    if let Some(other) = super::net::load_others(dir, tree, &[])?.first() {
                        return Err(Error::unsupported(format!(
                            "the images hold network namespace {} beside the tree's own {tree}: --join-ns net gives the tree one namespace only; restore without it",
                            other.id()
                        )));
                    }
                }
                if kind == NsKind::Mnt {
                    let other = std::fs::read_dir(dir).ok().and_then(|d| {
                        d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                            .find(|n| {
                                n.strip_prefix("mountpoints-")
                                    .and_then(|r| r.strip_suffix(".img"))
                                    .is_some_and(|id| id != tree.to_string())
                            })
                    });
                    if let Some(other) = other {
                        return Err(Error::unsupported(format!(
                            "the images hold another mount namespace ({other}) beside the tree's own {tree}: --join-ns mnt gives the tree one mount namespace only; restore without it"
                        )));
                    }
                }
                log::info!("the tree's own {kind} namespace {tree} is not made: the root joins the one given with --join-ns");
                continue;
            }
            // Before --empty-ns net: runc gives both, and an external
            // namespace wins, as in CRIU.
            if kind == NsKind::Net && t.join_external_net(ctx, tree)? {
                continue;
            }
            t.own.push(kind);
            match kind {
                NsKind::Uts => t.uts = Some(Uts::load(dir, tree)?),
                NsKind::Time => t.time = Some(TimeNs::load(dir, tree)?),
                NsKind::Net if super::net::empty(ctx.opts)? => t.net = Some(NetNs::empty(tree)),
                NsKind::Net => {
                    t.net = Some(NetNs::load(dir, tree, &ctx.opts.external)?);
                    t.net_subs = super::net::load_others(dir, tree, &ctx.opts.external)?;
                }
                NsKind::Mnt => {
                    let m = MntNs::load(ctx, tree)?;
                    t.mnt_subs = mnt::multi::SubNamespaces::load(ctx, &m, tree)?;
                    t.mnt = Some(m);
                }
                NsKind::User => t.user = Some(UserNs::load(dir, tree)?),
                // Made by the root itself from cgroup.img's cgns_prefix
                // (see cgroup::restore::Cgns), not by clone.
                NsKind::Pid | NsKind::Ipc | NsKind::Cgroup => {}
            }
        }
        Ok(t)
    }

    /// The root's network namespace `id` was dumped as external (its
    /// image holds a key, CRIU's `--external net[INO]:KEY`): the root
    /// joins the namespace given with `--inherit-fd fd[N]:KEY` instead of
    /// making one (as CRIU's net_set_ext); its links and addresses are
    /// that namespace's. True when so.
    fn join_external_net(&mut self, ctx: &LoadCtx<'_>, id: u32) -> Result<bool, Error> {
        let Some(key) = super::net::load_external_key(ctx.dir, id)? else {
            return Ok(false);
        };
        let given = ctx.opts.inherit_fds.iter().find(|i| i.key == key);
        let path = match given {
            Some(i) => std::path::PathBuf::from(format!("/proc/self/fd/{}", i.fd)),
            // The dump's own check of its images: the dumped root is
            // still in the namespace its options name.
            None if ctx.opts.pid > 0
                && super::net::external_key(&ctx.opts.external, ctx.opts.pid).as_ref()
                    == Some(&key) =>
            {
                std::path::PathBuf::from(NsKind::Net.proc_path(&ctx.opts.pid.to_string()))
            }
            None => {
                return Err(Error::unsupported(format!(
                    "the tree's network namespace {id} was dumped as external ({key}): give the namespace to join with --inherit-fd fd[N]:{key}"
                )))
            }
        };
        if let Some(other) = super::net::load_others(ctx.dir, id, &[])?.first() {
            return Err(Error::unsupported(format!(
                "the images hold network namespace {} beside the tree's external one {id}: crust joins an external namespace only for a tree with one network namespace",
                other.id()
            )));
        }
        log::info!(
            "the tree's network namespace {id} is external ({key}): the root joins {}",
            path.display()
        );
        self.joined.add_external(NsKind::Net, path, &key)?;
        self.external_net = true;
        Ok(true)
    }

    /// The external network namespace the root joins, if its images name
    /// one: the dump locked it, and it outlived the tree, so the restore
    /// unlocks it once every task is built (as CRIU unlocks the tree's
    /// namespace, whatever its sockets).
    pub(crate) fn external_net(&self) -> Option<&std::fs::File> {
        if self.external_net {
            self.joined.file(NsKind::Net)
        } else {
            None
        }
    }

    /// Whether the tree has a namespace of kind `kind` of its own.
    pub(crate) fn own(&self, kind: NsKind) -> bool {
        self.own.contains(&kind)
    }

    /// Whether the tree has namespaces of its own to make here (making
    /// them needs CAP_SYS_ADMIN).
    pub(crate) fn any(&self) -> bool {
        self.uts.is_some()
            || self.time.is_some()
            || self.net.is_some()
            || self.mnt.is_some()
            || self.user.is_some()
            || self.joined.flags() != 0
    }

    /// The CLONE_NEW* flags the root is cloned with for the kinds made
    /// here (not pid, IPC and cgroup: the restore's own steps decide
    /// those; not time: its offsets are set before the root is born in it, see
    /// [`Self::time_for_root`]).
    pub(crate) fn clone_flags(&self) -> u64 {
        self.own
            .iter()
            .filter(|k| !matches!(k, NsKind::Pid | NsKind::Ipc | NsKind::Time | NsKind::Cgroup))
            .fold(0, |f, k| f | k.clone_flag())
    }

    /// The namespaces the root joins (`--join-ns`).
    pub(crate) fn joined(&self) -> &Joined {
        &self.joined
    }

    /// Before the root is cloned: make its time namespace (for the
    /// children of crust's thread, its clocks set), if the tree had one of
    /// its own. Leave it once the root is cloned (dropping the result
    /// does too, on failure).
    pub(crate) fn time_for_root(&self) -> Result<Option<time::ForChildren>, Error> {
        self.time
            .as_ref()
            .map(TimeNs::enter_for_children)
            .transpose()
    }

    /// Fill the new namespaces of the root, host pid `root`, cloned with
    /// [`Self::clone_flags`] and stopped, phase by phase.
    pub(crate) fn prepare(&self, ctx: &LoadCtx<'_>, root: i32) -> Result<(), Error> {
        let _ = ctx;
        if let Some(user) = &self.user {
            user.prepare(root)?;
        }
        if let Some(net) = &self.net {
            self.prepare_net(net, root)?;
        }
        if let Some(mnt) = &self.mnt {
            let propagating = mnt.prepare(root)?;
            self.mnt_subs.prepare(root, propagating)?;
        }
        if let Some(uts) = &self.uts {
            uts.prepare(root)?;
        }
        Ok(())
    }

    /// Make the tree's other network namespaces (owned by its user
    /// namespace when it has one: its tasks must be able to join them),
    /// then fill them all, the root's first; keep an fd on each.
    fn prepare_net(&self, net: &NetNs, root: i32) -> Result<(), Error> {
        use std::os::fd::AsFd;
        let mut files = vec![(net.id(), super::open_ns(root, NsKind::Net)?)];
        let user = match self.user {
            Some(_) => Some(super::open_ns(root, NsKind::User)?),
            None => None,
        };
        for sub in &self.net_subs {
            let f = crust_sys::ns::new_netns(user.as_ref().map(|u| u.as_fd())).map_err(
                crate::util::sys_err(root, format!("make network namespace {}", sub.id())),
            )?;
            files.push((sub.id(), f));
        }
        let nets: Vec<(&NetNs, &std::fs::File)> = std::iter::once(net)
            .chain(&self.net_subs)
            .zip(files.iter().map(|(_, f)| f))
            .collect();
        super::net::prepare_all(root, &nets)?;
        if let Ok(mut g) = self.net_files.lock() {
            *g = files;
        }
        Ok(())
    }

    /// An fd on each of the tree's network namespaces, by id, once made
    /// (none when the tree has none of its own).
    pub(crate) fn net_files(&self) -> Vec<(u32, std::fs::File)> {
        self.net_files
            .lock()
            .map(|g| {
                g.iter()
                    .filter_map(|(id, f)| Some((*id, f.try_clone().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What a process just cloned (`pid`) does about its mount namespace
    /// before its memory and files: its own (`mine`) is not its parent's
    /// (`parent`).
    pub(crate) fn mnt_to_join(
        &self,
        pid: i32,
        mine: Option<u32>,
        parent: Option<u32>,
    ) -> Result<mnt::multi::Join, Error> {
        self.mnt_subs.to_join(pid, mine, parent)
    }

    /// The mount ids of the tree's mount namespace `id` when it was
    /// pivoted into a root of its own ([`mnt::multi::SubNamespaces::pivoted_mounts`]).
    pub(crate) fn mnt_pivoted(&self, id: u32) -> Option<&[u32]> {
        self.mnt_subs.pivoted_mounts(id)
    }

    /// The ids of the tree's mount namespaces other than the root's, and
    /// an fd on the root's (once prepared), for the restore to make them
    /// all from the root before any file is opened.
    pub(crate) fn mnt_subs_to_make(
        &self,
        pid: i32,
    ) -> Result<(Vec<u32>, Option<std::os::fd::OwnedFd>), Error> {
        self.mnt_subs.to_make(pid)
    }

    /// Every process of the tree exists (so every mount namespace is
    /// made): drop crust's fds on the mounts other namespaces could join.
    pub(crate) fn mnt_tree_made(&self) {
        self.mnt_subs.forget_mounts();
    }

    /// Process `host` unshared its mount namespace as the first of
    /// namespace `id`: make it that one.
    pub(crate) fn mnt_made_in(&self, host: i32, id: u32) -> Result<(), Error> {
        self.mnt_subs.made_in(host, id)
    }

    /// Once the root (`r` on it) is traced on its trampoline, before it
    /// does anything: in a new user namespace, give it ids the namespace
    /// names ([`UserNs::settle_root`]).
    pub(crate) fn settle_root(&self, r: &mut crate::task::remote::Remote<'_>) -> Result<(), Error> {
        match &self.user {
            Some(user) => user.settle_root(r),
            None => Ok(()),
        }
    }
}
