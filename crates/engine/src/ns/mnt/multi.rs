//! The tree's other mount namespaces: those its processes made with
//! unshare(CLONE_NEWNS) (or clone) below the root's own one.
//!
//! Dump ([`dump`]): one `mountpoints-ID.img` per namespace, read from the
//! first process met in it. Such a namespace started as a copy of the
//! root's; crust restores it as one again, so each of its mounts must be
//! the "twin" of a mount of the root's namespace (same mountpoint, device
//! and root: the copy), a filesystem mounted afresh in it (proc, sysfs,
//! tmpfs with its archive, devpts, mqueue) on a device the root's namespace
//! does not have, or a bind of a part of another of its mounts or of a
//! mount of the root's namespace (one it may not keep: zdtm's
//! mntns_link_remap binds part of a tmpfs, then unmounts it); its root
//! must be the twin of the root's (a namespace pivoted into another root is
//! refused). Anything else is refused, naming the mount.
//!
//! Restore ([`SubNamespaces`]): once the root's namespace is made, each
//! other one is a copy of it (its first process, just cloned, unshares
//! CLONE_NEWNS: the copy belongs to the tree's user namespace), then a
//! crust thread that joined it makes it private, the mounts it has no twin of
//! detached (the parts of them it binds cloned first), its own mounts made
//! (parents first) and flags set; crust keeps
//! an fd on it. A process whose namespace differs from its parent's joins
//! its own right after it is cloned, before its memory and files are made
//! ([`SubNamespaces::to_join`], by the restore), so its paths resolve
//! there.

use super::info::{fstype_code, fstype_name, ms, MountLine, FS_PROC, FS_TMPFS};
use super::restore::{bad, cpath, ensure_mountpoint, order, MntNs, Propagating};
use super::{
    mountinfo, propagation, refuse, root_of, skip_mounts, tmpfs, under, write_entries, NsMounts,
    FRESH,
};
use crate::ns::ids::NsKind;
use crate::ns::tree::{DumpCtx, LoadCtx};
use crate::util::{read_image, sys_err};
use crate::{Error, ErrorKind};
use crust_images::image::ImageType;
use crust_images::proto::mnt::MntEntry;
use crust_sys::mount::{self as sysmount, MountCall};
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The mount of `root` that `m` is the copy of.
fn twin<'a>(m: &MountLine, root: &'a [MountLine]) -> Option<&'a MountLine> {
    root.iter()
        .find(|r| r.mountpoint == m.mountpoint && r.dev == m.dev && r.root == m.root)
}

/// Check that the namespace of process `pid` (`mounts`) can be made again
/// from the root's (`root`): see the module's doc.
fn check(pid: i32, mounts: &[MountLine], root: &[MountLine]) -> Result<(), Error> {
    let mine = root_of(mounts).ok_or_else(|| super::no_root(pid))?;
    // Pivoted into another root: none of the root's mounts is a copy.
    let pivoted = super::pivot::pivoted(mine, root);
    if pivoted {
        super::pivot::check_root(pid, mine, root)?;
    }
    let twin = |m: &MountLine| if pivoted { None } else { twin(m, root) };
    for m in mounts {
        if m.mnt_id == mine.mnt_id || twin(m).is_some() {
            continue;
        }
        // A deleted root: a bind, made again at restore (`deleted`).
        let code = fstype_code(&m.fsname);
        if FRESH.contains(&code)
            && m.root == "/"
            && !m.deleted
            && !root.iter().any(|r| r.dev == m.dev)
        {
            continue;
        }
        let bind_of = mounts.iter().any(|o| {
            o.mnt_id != m.mnt_id
                && o.dev == m.dev
                && under(&m.root, &o.root)
                && (o.mnt_id == mine.mnt_id
                    || twin(o).is_some()
                    || (FRESH.contains(&code) && o.root == "/"))
        }) || (!pivoted
            && root
                .iter()
                .any(|r| r.dev == m.dev && under(&m.root, &r.root)));
        if !bind_of {
            return Err(refuse(
                pid,
                m,
                "(in a mount namespace made inside the tree) is neither a copy of a mount of the root process's namespace, nor a filesystem crust mounts afresh, nor a bind of a part of another mount of its namespace or of the root process's",
            ));
        }
    }
    Ok(())
}

/// The mounts of another namespace (process `pid`'s `mounts`) in a peer
/// group that has mounts in the root's namespace (`root`) must each be
/// held by one of those (same device, root under its root): the restore
/// makes the root's namespace first and joins the others' mounts to its
/// groups (MOVE_MOUNT_SET_GROUP copies from a mount whose root holds the
/// target's).
fn check_shared(pid: i32, mounts: &[MountLine], root: &[MountLine]) -> Result<(), Error> {
    for m in mounts.iter().filter(|m| m.shared_id != 0) {
        let mut peers = root
            .iter()
            .filter(|r| r.shared_id == m.shared_id)
            .peekable();
        if peers.peek().is_none() {
            continue;
        }
        if let Some(p) = peers.clone().next().filter(|_| {
            !peers
                .clone()
                .any(|r| r.dev == m.dev && under(&m.root, &r.root))
        }) {
            return Err(Error::refused(
                ErrorKind::Unsupported,
                format!(
                    "process {pid}'s mount namespace: mount {} at {} ({} {}, root {}) is in peer group {} with mounts of the tree root's namespace (mount {} at {}, root {}), none of whose roots holds its own; crust makes the root's namespace first and cannot join a mount to a narrower one's peer group yet",
                    m.mnt_id, m.mountpoint, m.fsname, m.source, m.root, m.shared_id, p.mnt_id, p.mountpoint, p.root
                ),
            ));
        }
    }
    Ok(())
}

/// Dump the tree's mount namespaces other than the root's.
pub(crate) fn dump(ctx: &DumpCtx<'_>) -> Result<(), Error> {
    if ctx.sub_mnt.is_empty() {
        return Ok(());
    }
    let root = skip_mounts(mountinfo(ctx.root_pid)?, &ctx.opts.skip_mnt);
    // The root's tmpfs mounts are archived already.
    let mut dumped: BTreeSet<u32> = root.iter().map(|m| m.dev).collect();
    for &(id, pid) in ctx.sub_mnt {
        let all = mountinfo(pid)?;
        let mounts = skip_mounts(all.clone(), &ctx.opts.skip_mnt);
        check(pid, &mounts, &root)?;
        check_shared(pid, &mounts, &root)?;
        // The root of a pivoted namespace is archived when a tmpfs of
        // its own (its device is not in `dumped`).
        let root_id = root_of(&mounts)
            .filter(|r| !super::pivot::pivoted(r, &root))
            .map(|r| r.mnt_id);
        log::info!(
            "mount namespace {id} (of process {pid}): {} mounts",
            mounts.len()
        );
        let none = HashMap::new();
        let ns = NsMounts {
            pid,
            id,
            mounts: &mounts,
            all: &all,
            ext: &none,
            auto: &none,
            root_id,
        };
        write_entries(ctx.dir, &ns, &mut dumped)?;
    }
    Ok(())
}

/// While a process of another mount namespace of the tree is dumped, the
/// tree's paths are read through its root; then through the tree root's
/// again.
pub(crate) struct ProcView {
    root_pid: i32,
    /// Its own view's guard, dropped before the root's view is set again.
    guard: Option<crate::util::view::ViewGuard>,
}

impl ProcView {
    /// The view for process `pid` if its mount namespace is not the root's
    /// (`root_pid`).
    pub(crate) fn of(root_pid: i32, pid: i32) -> Option<ProcView> {
        let ino = |p: i32| {
            std::fs::metadata(NsKind::Mnt.proc_path(&p.to_string()))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        };
        let (root, mine) = (ino(root_pid)?, ino(pid)?);
        if root == mine {
            return None;
        }
        let base = PathBuf::from(format!("/proc/{pid}/root"));
        let guard = crate::util::view::set(std::sync::Arc::new(move |p: &Path| {
            Some(crate::util::view::join(&base, p))
        }));
        Some(ProcView {
            root_pid,
            guard: Some(guard),
        })
    }
}

impl Drop for ProcView {
    fn drop(&mut self) {
        // Back to the root's view (its guard is the dump's, kept outside).
        drop(self.guard.take());
        if let Some(g) = crate::util::view::for_dump(self.root_pid) {
            std::mem::forget(g);
        }
    }
}

/// How one mount of another namespace comes to be in the copy of the
/// root's.
#[derive(Debug)]
enum Make {
    /// A new superblock of CRIU fs type `code`; a tmpfs with its archive.
    Fresh { code: u32, tar: Option<PathBuf> },
    /// A bind of part `rel` of the mount at `of` (made before it).
    Bind { of: String, rel: String },
    /// A bind of part `rel` of the root's mount at `of`, which the copy
    /// has: cloned (open_tree) before the mounts it lacks are detached,
    /// attached in its place after.
    Lent { of: String, rel: String },
    /// In the copy already: only its flags differ.
    Flags,
}

/// Another mount namespace of the tree, read and checked.
#[derive(Debug)]
pub(crate) struct SubMntNs {
    id: u32,
    /// Mountpoints of the root's mounts it has no copy of (deepest first).
    gone: Vec<String>,
    /// Its mounts the copy lacks or has with other flags, parents first.
    make: Vec<(MntEntry, Make)>,
    /// Mountpoints of its mounts that are not copies of the root's.
    own: Vec<String>,
    /// Its mounts with a peer group or a master (their propagation is
    /// rebuilt once it is made: [`SubMntNs::propagate`]).
    propagating: Vec<MntEntry>,
    /// The images directory (its tmpfs archives are there).
    dir: PathBuf,
    /// Its root, when it is not the root namespace's (pivot_root).
    root: Option<super::pivot::NewRoot>,
    /// The ids of its mounts in the images.
    ids: Vec<u32>,
}

/// How mount `e` of namespace `id` is bound: from the widest part of a
/// mount made before it (`before`, its own), else of a mount of the
/// root's namespace (`base`) that holds its root.
fn bind_how<'a>(
    dir: &Path,
    id: u32,
    e: &MntEntry,
    before: impl Iterator<Item = &'a MntEntry>,
    base: &[&MntEntry],
) -> Result<Make, Error> {
    let holds = |b: &MntEntry| b.root_dev == e.root_dev && under(&e.root, &b.root);
    let rel = |of: &MntEntry| {
        e.root
            .strip_prefix(of.root.as_str())
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string()
    };
    if let Some(of) = before.filter(|b| holds(b)).max_by_key(|b| b.root.len()) {
        return Ok(Make::Bind {
            of: of.mountpoint.clone(),
            rel: rel(of),
        });
    }
    let of = base
        .iter()
        .filter(|b| holds(b))
        .max_by_key(|b| b.root.len())
        .ok_or_else(|| {
            bad(dir, id, format!("the mount at {} (fs type {}, root {}) is neither one crust mounts afresh nor a bind of a mount before it or of the root's namespace", e.mountpoint, e.fstype, e.root))
        })?;
    Ok(Make::Lent {
        of: of.mountpoint.clone(),
        rel: rel(of),
    })
}

fn same(a: &MntEntry, b: &MntEntry) -> bool {
    a.mountpoint == b.mountpoint && a.root_dev == b.root_dev && a.root == b.root
}

impl SubMntNs {
    /// Read `mountpoints-ID.img` and plan it against the root's
    /// namespace `root`.
    fn load(ctx: &LoadCtx<'_>, id: u32, root: &MntNs) -> Result<SubMntNs, Error> {
        let entries: Vec<MntEntry> = read_image(ctx.dir, ImageType::Mnts, u64::from(id))?;
        let entries = order(ctx.dir, id, entries)?;
        let base: Vec<&MntEntry> = root.entries().collect();
        let (Some(mine), Some(theirs)) = (entries.first(), base.first()) else {
            return Err(bad(ctx.dir, id, "no mounts".into()));
        };
        // Pivoted into another root: every mount of the root's namespace
        // goes with the old root, none is a copy.
        let new_root = (mine.root_dev != theirs.root_dev || mine.root != theirs.root)
            .then(|| super::pivot::plan(ctx.dir, id, mine, &base))
            .transpose()?;
        let twin_of = |e: &MntEntry| {
            if new_root.is_some() {
                None
            } else {
                base.iter().find(|b| same(e, b))
            }
        };
        let mut gone: Vec<String> = base
            .iter()
            .skip(1)
            .filter(|_| new_root.is_none())
            .filter(|b| !entries.iter().any(|e| same(e, b)))
            .map(|b| b.mountpoint.clone())
            .collect();
        gone.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let mut make = Vec::new();
        let mut own = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let flags = |x: &MntEntry| x.flags & ms::MNT_MASK;
            if i == 0 && new_root.is_some() {
                own.push(e.mountpoint.clone());
                continue;
            }
            if let Some(b) = twin_of(e) {
                if flags(b) != flags(e) {
                    make.push((e.clone(), Make::Flags));
                }
                continue;
            }
            own.push(e.mountpoint.clone());
            let before = entries.iter().take(i);
            let seen = |dev: u32| {
                base.iter().any(|b| b.root_dev == dev) || before.clone().any(|b| b.root_dev == dev)
            };
            let how = if FRESH.contains(&e.fstype) && e.root == "/" && !seen(e.root_dev) {
                let tar = if e.fstype == FS_TMPFS {
                    let t = tmpfs::image(ctx.dir, e.root_dev, e.mnt_id).ok_or_else(|| {
                        bad(
                            ctx.dir,
                            id,
                            format!(
                                "the tmpfs at {} has no tmpfs-dev-{}.tar.gz.img",
                                e.mountpoint, e.root_dev
                            ),
                        )
                    })?;
                    Some(t)
                } else {
                    None
                };
                Make::Fresh {
                    code: e.fstype,
                    tar,
                }
            } else {
                bind_how(ctx.dir, id, e, before, &base)?
            };
            make.push((e.clone(), how));
        }
        let propagating = check_propagation(ctx.dir, id, &entries, &base)?;
        Ok(SubMntNs {
            id,
            gone,
            make,
            own,
            propagating,
            dir: ctx.dir.to_path_buf(),
            root: new_root,
            ids: entries.iter().map(|e| e.mnt_id).collect(),
        })
    }

    /// Every `mountpoints-N.img` of the image set but the root's (`tree`).
    pub(crate) fn load_all(
        ctx: &LoadCtx<'_>,
        root: &MntNs,
        tree: u32,
    ) -> Result<Vec<SubMntNs>, Error> {
        let list = std::fs::read_dir(ctx.dir).map_err(|source| Error::Io {
            op: "list the images directory",
            path: ctx.dir.to_path_buf(),
            source,
        })?;
        let mut ids: Vec<u32> = list
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_prefix("mountpoints-")?
                    .strip_suffix(".img")?
                    .parse()
                    .ok()
            })
            .filter(|id| *id != tree)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| SubMntNs::load(ctx, id, root))
            .collect()
    }

    /// Whether path `p` is under the same mount here as in the root's
    /// namespace (a copy of it).
    pub(crate) fn sees_as_root(&self, p: &Path) -> bool {
        let Some(s) = p.to_str() else { return false };
        if self.root.is_some() {
            return false;
        }
        let deepest = |it: &mut dyn Iterator<Item = &String>| {
            it.filter(|m| under(s, m)).max_by_key(|m| m.len()).cloned()
        };
        let own = deepest(&mut self.own.iter());
        let gone = deepest(&mut self.gone.iter());
        own.is_none() && gone.is_none()
    }
}

/// Its mounts whose propagation is rebuilt (a peer group, a master or
/// unbindable), checked: the plan against the root's namespace's mounts
/// (its peer groups and masters may be theirs) must stand, and each must
/// be the only mount at its mountpoint (it is found by its path once made).
fn check_propagation(
    dir: &Path,
    id: u32,
    entries: &[MntEntry],
    base: &[&MntEntry],
) -> Result<Vec<MntEntry>, Error> {
    let outside: Vec<MntEntry> = base.iter().map(|&b| b.clone()).collect();
    propagation::plan_with(entries, &outside).map_err(|why| bad(dir, id, why))?;
    let propagating: Vec<MntEntry> = entries
        .iter()
        .filter(|e| {
            e.shared_id.unwrap_or(0) != 0
                || e.master_id.unwrap_or(0) != 0
                || e.flags & ms::UNBINDABLE != 0
        })
        .cloned()
        .collect();
    // A mount found by its path once made must be the only one at its
    // place: one stacked with another keeps no propagation (as every
    // mount of these namespaces did before crust rebuilt it), said so.
    let (alone, stacked): (Vec<MntEntry>, Vec<MntEntry>) = propagating.into_iter().partition(|e| {
        !entries
            .iter()
            .any(|o| o.mnt_id != e.mnt_id && o.mountpoint == e.mountpoint)
    });
    for e in &stacked {
        log::warn!(
            "mount namespace {id}: the mount at {} (id {}) has a peer group, a master or is unbindable, and another mount of the namespace is at the same place: crust cannot rebuild the propagation of such a mount in a namespace other than the root's yet, so it is made private",
            e.mountpoint,
            e.mnt_id
        );
    }
    Ok(alone)
}

fn sys(pid: i32, what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys {
        pid,
        op: what,
        source,
    }
}

/// A mount(2) call on `target` with `flags` only.
fn call(target: &CString, flags: u32) -> MountCall<'_> {
    MountCall {
        source: None,
        target: target.as_c_str(),
        fstype: None,
        flags: flags as u64,
        data: None,
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_default()
}

impl SubMntNs {
    /// In a crust thread that joined the namespaces of `pid`, the first
    /// process of this namespace, which unshared its mount namespace (a
    /// copy of the root's, owned by the tree's user namespace): change the
    /// copy into this namespace.
    fn build(&self, pid: i32, imgdir: &std::fs::File) -> Result<(), Error> {
        let what = |w: &str| format!("mount namespace {}: {w}", self.id);
        let slash = cstr("/");
        sysmount::mount(&call(&slash, ms::REC | ms::PRIVATE))
            .map_err(sys(pid, what("make it private")))?;
        let mut lent = self.lend(pid)?;
        if let Some(r) = &self.root {
            r.enter(pid, imgdir)?;
        }
        for mp in &self.gone {
            sysmount::umount2(&cstr(mp), libc::MNT_DETACH)
                .map_err(sys(pid, what(&format!("detach the mount at {mp}"))))?;
        }
        for (e, how) in &self.make {
            let w = |x: &str| {
                what(&format!(
                    "the mount at {} (id {}): {x}",
                    e.mountpoint, e.mnt_id
                ))
            };
            let target = Path::new(&e.mountpoint);
            let ctarget = cpath(target)?;
            match how {
                Make::Flags => {}
                Make::Lent { .. } => {
                    let (copy, dir) = lent.remove(&e.mnt_id).ok_or_else(|| Error::Restore {
                        pid,
                        what: w("its source was not cloned"),
                    })?;
                    ensure_mountpoint(target, dir).map_err(sys(pid, w("create its mountpoint")))?;
                    crust_sys::mountfd::move_mount_to(copy.as_fd(), &ctarget)
                        .map_err(sys(pid, w("attach its clone")))?;
                }
                Make::Bind { of, rel } => {
                    let src = crate::util::view::join(Path::new(of), Path::new(rel));
                    let again = super::deleted::make_again(e, &src, target)
                        .map_err(sys(pid, w("make its deleted root again")))?;
                    if std::fs::symlink_metadata(&src).is_err() {
                        return Err(Error::refused(
                            ErrorKind::FileMissing,
                            w(&format!("its source {} is gone", src.display())),
                        ));
                    }
                    ensure_mountpoint(target, src.is_dir())
                        .map_err(sys(pid, w("create its mountpoint")))?;
                    let csrc = cpath(&src)?;
                    let m = MountCall {
                        source: Some(&csrc),
                        ..call(&ctarget, ms::BIND)
                    };
                    let bound = sysmount::mount(&m);
                    super::deleted::remove(again, &src)
                        .map_err(sys(pid, w("remove its deleted root again")))?;
                    bound.map_err(sys(pid, w(&format!("bind {}", src.display()))))?;
                }
                Make::Fresh { code, tar } => {
                    ensure_mountpoint(target, true)
                        .map_err(sys(pid, w("create its mountpoint")))?;
                    let fstype = cstr(fstype_name(*code).unwrap_or("none"));
                    let source = cstr(&e.source);
                    let data = cstr(&e.options);
                    let m = MountCall {
                        source: Some(&source),
                        target: &ctarget,
                        fstype: Some(&fstype),
                        flags: 0,
                        data: (!e.options.is_empty()).then_some(data.as_c_str()),
                    };
                    let mounted = if *code == FS_PROC {
                        sysmount::mount_in_child(&m)
                    } else {
                        sysmount::mount(&m)
                    };
                    mounted.map_err(sys(pid, w(&format!("mount {}", fstype.to_string_lossy()))))?;
                    if let Some(t) = tar {
                        // The archive by its name from the images
                        // directory (crust's namespace), the working one.
                        crust_sys::fs::fchdir(imgdir.as_fd())
                            .map_err(sys(pid, w("fchdir to the images directory")))?;
                        let name = t.file_name().map(Path::new).unwrap_or(t);
                        tmpfs::restore(name, target)?;
                    }
                }
            }
            let flags = ms::REMOUNT | ms::BIND | (e.flags & ms::MNT_MASK);
            sysmount::mount(&call(&ctarget, flags)).map_err(sys(
                pid,
                w(&format!("set its flags {:#x}", e.flags & ms::MNT_MASK)),
            ))?;
        }
        if let Some(r) = &self.root {
            r.finish(pid)?;
        }
        Ok(())
    }

    /// In the copy of the root's namespace (the thread joined it), before
    /// the mounts it lacks go: a detached clone (open_tree) of the part of
    /// the root's mount each `Lent` mount binds, and whether it is a
    /// directory, by mount id.
    fn lend(&self, pid: i32) -> Result<HashMap<u32, (OwnedFd, bool)>, Error> {
        let mut out = HashMap::new();
        for (e, how) in &self.make {
            let Make::Lent { of, rel } = how else {
                continue;
            };
            let w = |x: String| {
                format!(
                    "mount namespace {}: the mount at {} (id {}): {x}",
                    self.id, e.mountpoint, e.mnt_id
                )
            };
            let src = crate::util::view::join(Path::new(of), Path::new(rel));
            let again = super::deleted::make_again(e, &src, Path::new(&e.mountpoint))
                .map_err(sys(pid, w("make its deleted root again".into())))?;
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&src);
            let cloned = opened.and_then(|f| {
                let dir = f.metadata()?.is_dir();
                Ok((sysmount::clone_one_mount(f.as_fd())?, dir))
            });
            super::deleted::remove(again, &src)
                .map_err(sys(pid, w("remove its deleted root again".into())))?;
            let got = cloned.map_err(sys(pid, w(format!("clone its source {}", src.display()))))?;
            out.insert(e.mnt_id, got);
        }
        Ok(out)
    }

    /// Once it is made (every mount private) in the namespace of process
    /// `host`: rebuild the propagation of its mounts, joining the peer
    /// groups and masters of the tree's namespaces made before it
    /// (`made`), to which its own mounts are then added.
    fn propagate(&self, host: i32, made: &mut Propagating) -> Result<(), Error> {
        if self.propagating.is_empty() {
            return Ok(());
        }
        let plan = propagation::plan_with(&self.propagating, &made.entries())
            .map_err(|why| bad(&self.dir, self.id, why))?;
        let live = super::mountinfo(host)?;
        let mut mine = Propagating::default();
        for e in &self.propagating {
            mine.push(e.clone(), self.open_mount(host, e, &live)?);
        }
        let name = |id: u32| {
            let e = self.propagating.iter().find(|e| e.mnt_id == id);
            format!(
                "the mount at {} (id {id}{})",
                e.map_or("?", |e| e.mountpoint.as_str()),
                if e.is_some() {
                    ""
                } else {
                    ", of another namespace"
                }
            )
        };
        // mount_setattr wants the mount in the caller's namespace.
        let (mine_ref, made_ref) = (&mine, &*made);
        crate::ns::in_ns(host, &[NsKind::Mnt], move || {
            let fd = |id: u32| mine_ref.fd(id).or_else(|| made_ref.fd(id));
            propagation::run_on(&plan, fd, name).map_err(|(what, source)| Error::Sys {
                pid: host,
                op: format!(
                    "mount namespace {}: restore mount propagation: {what}",
                    self.id
                ),
                source,
            })
        })?;
        made.extend(mine);
        Ok(())
    }

    /// An `O_PATH` fd of the root of mount `e` of this namespace, made in
    /// that of process `host` (`live`: its mountinfo): its mountpoint
    /// through the process's root, checked to be a mount there (the only
    /// one at that place: [`check_propagation`]).
    fn open_mount(&self, host: i32, e: &MntEntry, live: &[MountLine]) -> Result<OwnedFd, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let what = |w: &str| {
            format!(
                "mount namespace {}: the mount at {} (id {}): {w}",
                self.id, e.mountpoint, e.mnt_id
            )
        };
        let path = crate::util::view::join(
            Path::new(&format!("/proc/{host}/root")),
            Path::new(&e.mountpoint),
        );
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(sys(host, what(&format!("open {}", path.display()))))?;
        let fd = OwnedFd::from(f);
        let id = crust_sys::mountfd::mnt_id(fd.as_fd())
            .map_err(sys(host, what("read the mount id of its root")))?;
        match live.iter().find(|l| u64::from(l.mnt_id) == id) {
            Some(l) if l.mountpoint == e.mountpoint => Ok(fd),
            _ => Err(Error::Restore {
                pid: host,
                what: what(&format!(
                    "{} is not the root of a mount at that place once made (mount {id})",
                    path.display()
                )),
            }),
        }
    }

    /// Make this namespace in the copy of the root's that process `host`
    /// made (unshare); an fd on it.
    fn make(&self, host: i32) -> Result<OwnedFd, Error> {
        let imgdir = std::fs::File::open(&self.dir).map_err(|source| Error::Io {
            op: "open the images directory",
            path: self.dir.clone(),
            source,
        })?;
        let imgdir = &imgdir;
        crate::ns::in_ns(
            host,
            &[NsKind::Net, NsKind::Ipc, NsKind::Pid, NsKind::Mnt],
            move || self.build(host, imgdir),
        )?;
        let path = NsKind::Mnt.proc_path(&host.to_string());
        let f = std::fs::File::open(&path).map_err(sys_err(host, format!("open {path}")))?;
        Ok(OwnedFd::from(f))
    }
}

/// An O_PATH fd on the root directory of the mount namespace `ns` (made
/// by `pid`), opened by a crust thread that joined it.
fn root_dir(pid: i32, ns: &OwnedFd) -> Result<OwnedFd, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::ns::unshare(libc::CLONE_FS)?;
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNS)?;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open("/")
                .map(OwnedFd::from)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a crust thread panicked")))
    })
    .map_err(sys(
        pid,
        "open the root of a mount namespace of the tree".into(),
    ))
}

/// What a process just cloned does about its mount namespace.
#[derive(Debug)]
pub(crate) enum Join {
    /// Its parent's is its own.
    Stay,
    /// It joins the one made already (setns).
    Fd(OwnedFd),
    /// It is the first of namespace N: it unshares (after joining the
    /// root's namespace, given when its parent's is another), and crust
    /// makes the copy namespace N ([`SubNamespaces::made_in`]).
    Make(u32, Option<OwnedFd>),
}

/// The tree's mount namespaces beside the root's: loaded, then made, and
/// the fds crust keeps on every one (the root's too) while processes join
/// them.
#[derive(Debug, Default)]
pub(crate) struct SubNamespaces {
    root_id: u32,
    subs: Vec<SubMntNs>,
    made: Mutex<HashMap<u32, OwnedFd>>,
    /// The mounts with a peer group or a master of the namespaces made so
    /// far, with fds of their roots; dropped once every namespace is made
    /// (the fds keep the mounts busy).
    propagating: Mutex<Propagating>,
}

impl SubNamespaces {
    /// Those of the image set whose root namespace (id `tree`) is `root`.
    pub(crate) fn load(ctx: &LoadCtx<'_>, root: &MntNs, tree: u32) -> Result<SubNamespaces, Error> {
        Ok(SubNamespaces {
            root_id: tree,
            subs: SubMntNs::load_all(ctx, root, tree)?,
            made: Mutex::default(),
            propagating: Mutex::default(),
        })
    }

    /// Once the root's namespace is made in `root` (host pid): keep an fd
    /// on it (processes of the others may have children in it), and its
    /// mounts with a peer group or a master (`propagating`), which mounts
    /// of the others may join. The others are made when their first
    /// process is cloned ([`Self::made_in`]).
    pub(crate) fn prepare(&self, root: i32, propagating: Propagating) -> Result<(), Error> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let path = NsKind::Mnt.proc_path(&root.to_string());
        let f = std::fs::File::open(&path).map_err(sys_err(root, format!("open {path}")))?;
        self.lock(root)?.insert(self.root_id, OwnedFd::from(f));
        *self.lock_propagating(root)? = propagating;
        Ok(())
    }

    fn lock_propagating(&self, pid: i32) -> Result<std::sync::MutexGuard<'_, Propagating>, Error> {
        self.propagating.lock().map_err(|_| Error::Restore {
            pid,
            what: "the mounts made with propagation are not readable".into(),
        })
    }

    fn lock(&self, pid: i32) -> Result<std::sync::MutexGuard<'_, HashMap<u32, OwnedFd>>, Error> {
        self.made.lock().map_err(|_| Error::Restore {
            pid,
            what: "the mount namespaces made are not readable".into(),
        })
    }

    /// The ids of the namespaces not made yet, and a copy of the fd on the
    /// root's (none before [`Self::prepare`]).
    pub(crate) fn to_make(&self, pid: i32) -> Result<(Vec<u32>, Option<OwnedFd>), Error> {
        let made = self.lock(pid)?;
        let ids = self
            .subs
            .iter()
            .map(|s| s.id)
            .filter(|id| !made.contains_key(id))
            .collect();
        let root = match made.get(&self.root_id) {
            Some(fd) => Some(
                fd.try_clone()
                    .map_err(sys_err(pid, "dup of a mount namespace fd"))?,
            ),
            None => None,
        };
        Ok((ids, root))
    }

    /// Process `host` (just cloned) unshared its mount namespace as the
    /// first process of namespace `id`: make it that one.
    pub(crate) fn made_in(&self, host: i32, id: u32) -> Result<(), Error> {
        let sub = self
            .subs
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::Restore {
                pid: host,
                what: format!("mount namespace {id} has no image"),
            })?;
        log::debug!(
            "mount namespace {id} (made by {host}): {} mounts gone, {} made or changed",
            sub.gone.len(),
            sub.make.len()
        );
        let fd = sub.make(host)?;
        let root = root_dir(host, &fd)?;
        crate::util::view::set_sub_root(id, root);
        let mut propagating = self.lock_propagating(host)?;
        sub.propagate(host, &mut propagating)?;
        let mut made = self.lock(host)?;
        made.insert(id, fd);
        if self.subs.iter().all(|s| made.contains_key(&s.id)) {
            // Every namespace is made: no mount joins these any more.
            propagating.clear();
        }
        Ok(())
    }

    /// Drop the fds on the mounts made with propagation (kept while other
    /// namespaces may join their groups): they keep those mounts busy.
    pub(crate) fn forget_mounts(&self) {
        match self.propagating.lock() {
            Ok(mut p) => p.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// The mount ids (in the images) of namespace `id` when it was
    /// pivoted into a root of its own: a file a process of it maps from
    /// another mount is not in its namespace (crust opens it).
    pub(crate) fn pivoted_mounts(&self, id: u32) -> Option<&[u32]> {
        self.subs
            .iter()
            .find(|s| s.id == id && s.root.is_some())
            .map(|s| s.ids.as_slice())
    }

    /// What a process just cloned (`pid`) does about its mount namespace
    /// `mine` when its parent's is `parent`.
    pub(crate) fn to_join(
        &self,
        pid: i32,
        mine: Option<u32>,
        parent: Option<u32>,
    ) -> Result<Join, Error> {
        let (Some(mine), Some(parent)) = (mine, parent) else {
            return Ok(Join::Stay);
        };
        if mine == parent {
            return Ok(Join::Stay);
        }
        if let Some(fd) = self.lock(pid)?.get(&mine) {
            let fd = fd
                .try_clone()
                .map_err(sys_err(pid, "dup of a mount namespace fd"))?;
            return Ok(Join::Fd(fd));
        }
        if self.subs.iter().any(|s| s.id == mine) {
            // Its copy is of the root's namespace, which it joins first if
            // its parent's is another.
            let root = match self.lock(pid)?.get(&self.root_id) {
                Some(fd) if parent != self.root_id => Some(
                    fd.try_clone()
                        .map_err(sys_err(pid, "dup of a mount namespace fd"))?,
                ),
                _ => None,
            };
            return Ok(Join::Make(mine, root));
        }
        Err(Error::Restore {
            pid,
            what: format!("it was in mount namespace {mine}, which crust did not make (no mountpoints-{mine}.img beside the root's)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::line;

    fn root_ns() -> Vec<MountLine> {
        vec![
            line(10, 1, "/", "ext4", "/srv", 8),
            line(11, 10, "/dev", "tmpfs", "/", 20),
            line(12, 10, "/t", "tmpfs", "/", 21),
        ]
    }

    #[test]
    fn a_copy_with_mounts_of_its_own_is_accepted() {
        let root = root_ns();
        // A copy: its root and /dev are twins, /t is gone, a tmpfs of its
        // own and a bind of a part of it.
        let sub = vec![
            line(30, 29, "/", "ext4", "/srv", 8),
            line(31, 30, "/dev", "tmpfs", "/", 20),
            line(32, 30, "/own", "tmpfs", "/", 40),
            line(33, 30, "/b", "tmpfs", "/x", 40),
            line(34, 30, "/home", "ext4", "/srv/home", 8),
        ];
        check(5, &sub, &root).unwrap();
        // A bind of a part of a tmpfs of the root's namespace that this
        // one does not mount (zdtm mntns_link_remap): accepted.
        let lent = vec![
            line(30, 29, "/", "ext4", "/srv", 8),
            line(35, 30, "/elsewhere", "tmpfs", "/sub", 21),
        ];
        check(5, &lent, &root).unwrap();
        // A part of a tmpfs no namespace of the tree mounts whole (not a
        // twin, not a bind of a mount of either): refused, naming it.
        let bad = vec![
            line(30, 29, "/", "ext4", "/srv", 8),
            line(35, 30, "/elsewhere", "tmpfs", "/sub", 22),
        ];
        let e = check(5, &bad, &root).unwrap_err().to_string();
        assert!(e.contains("mount 35 at /elsewhere"), "{e}");
    }

    #[test]
    fn a_namespace_pivoted_into_its_own_root() {
        let root = root_ns();
        // Its root a tmpfs of its own, a bind of a part of it, a proc.
        let pivoted = vec![
            line(40, 39, "/", "tmpfs", "/", 40),
            line(42, 40, "/b", "tmpfs", "/x", 40),
            line(43, 40, "/proc", "proc", "/", 41),
        ];
        check(6, &pivoted, &root).unwrap();
        // The old root left under it (not detached): no mount of the
        // root's namespace can be a copy in a pivoted one.
        let kept = vec![
            line(40, 39, "/", "tmpfs", "/", 40),
            line(41, 40, "/old", "ext4", "/srv", 8),
        ];
        let e = check(6, &kept, &root).unwrap_err().to_string();
        assert!(e.contains("mount 41 at /old"), "{e}");
        // A root of a device the root's namespace has, not a part of its
        // mounts: refused, naming it.
        let other = vec![line(44, 39, "/", "ext4", "/", 8)];
        let e = check(6, &other, &root).unwrap_err().to_string();
        assert!(
            e.contains("mount 44 at /") && e.contains("pivot_root"),
            "{e}"
        );
    }

    #[test]
    fn paths_seen_as_the_root_sees_them() {
        let s = SubMntNs {
            id: 9,
            gone: vec!["/t".into()],
            make: Vec::new(),
            own: vec!["/own".into()],
            propagating: Vec::new(),
            dir: PathBuf::from("/nonexistent"),
            root: None,
            ids: Vec::new(),
        };
        assert!(s.sees_as_root(Path::new("/etc/passwd")));
        assert!(!s.sees_as_root(Path::new("/own/f")));
        assert!(!s.sees_as_root(Path::new("/t/x")));
        assert!(s.sees_as_root(Path::new("/tx")));
    }
}
