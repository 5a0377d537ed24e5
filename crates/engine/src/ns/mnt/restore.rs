//! Rebuilding a mount namespace: [`MntNs::load`] reads and checks
//! `mountpoints-ID.img` and everything it needs from outside (the root
//! directory, the paths of external mounts, tmpfs archives) before
//! anything is made; [`MntNs::prepare`] then works in the new mount
//! namespace of the stopped root, from a crust thread that joined it (and
//! the root's pid, net and IPC namespaces):
//!
//! 1. every mount made private, so nothing reaches crust's namespace;
//! 2. a tmpfs "yard" on a fresh directory of crust's /tmp (seen only in the
//!    new namespace), the root (`--root DIR`, or `/`) bound at `yard/root`;
//! 3. each mount, parents before children, siblings by mount id: external
//!    ones bound from their `--external mnt[KEY]:PATH`, binds from the
//!    mount they are part of, proc/sysfs/tmpfs/devpts/mqueue mounted afresh
//!    (proc by a child process forked into the pid namespace: proc takes
//!    the mounter's), tmpfs filled from its archive; then the flags
//!    (read-only, nosuid...: a bind remount) and the propagation;
//! 4. pivot_root into `yard/root`, the old root detached: the stopped root
//!    task, whose root was the old one, now has the new one.
//!
//! If a step fails, the root is killed and its namespace vanishes with
//! what was mounted in it; the yard directory is removed here either way.

use super::info::{fstype_name, ms, FS_PROC, FS_TMPFS};
use super::{ext_pairs, tmpfs, under, FRESH};
use crate::ns::ids::NsKind;
use crate::ns::in_ns;
use crate::ns::tree::LoadCtx;
use crate::util::read_image;
use crate::{Error, ErrorKind};
use crust_images::image::ImageType;
use crust_images::proto::mnt::MntEntry;
use crust_sys::mount::{self as sysmount, MountCall};
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where a mount comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The tree's root: `--root` or `/`.
    Root,
    /// An external mount's host path.
    External(PathBuf),
    /// A bind of part `rel` of the mount `of` (made before it).
    Bind { of: u32, rel: String },
    /// A new superblock of CRIU fs type `code`; a tmpfs with its archive.
    Fresh { code: u32, tar: Option<PathBuf> },
}

#[derive(Debug)]
struct Mount {
    e: MntEntry,
    src: Source,
}

/// A mount namespace to make, checked.
#[derive(Debug)]
pub(crate) struct MntNs {
    id: u32,
    /// Parents before children.
    mounts: Vec<Mount>,
    root_dir: PathBuf,
}

pub(super) fn bad(dir: &Path, id: u32, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("mountpoints-{id}.img: {why}"),
    }
}

/// The entries in mount order (parents first, siblings by id); checks
/// ids, paths, a single root at `/`, and that every mount hangs from it.
pub(super) fn order(dir: &Path, id: u32, entries: Vec<MntEntry>) -> Result<Vec<MntEntry>, Error> {
    let ids: BTreeSet<u32> = entries.iter().map(|e| e.mnt_id).collect();
    if ids.len() != entries.len() {
        return Err(bad(dir, id, "two mounts have the same id".into()));
    }
    for e in &entries {
        let p = Path::new(&e.mountpoint);
        let ok = p.is_absolute()
            && !e.mountpoint.contains('\0')
            && !e.root.contains('\0')
            && p.components().all(|c| c != std::path::Component::ParentDir)
            && Path::new(&e.root)
                .components()
                .all(|c| c != std::path::Component::ParentDir);
        if !ok {
            return Err(bad(
                dir,
                id,
                format!(
                    "mount {} has a bad path {:?} or root {:?}",
                    e.mnt_id, e.mountpoint, e.root
                ),
            ));
        }
    }
    let roots: Vec<&MntEntry> = entries
        .iter()
        .filter(|e| !ids.contains(&e.parent_mnt_id))
        .collect();
    let root = match roots.as_slice() {
        [r] if r.mountpoint == "/" => r.mnt_id,
        _ => {
            return Err(bad(
                dir,
                id,
                "there is not exactly one root mount at /".into(),
            ))
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut rest = entries;
    let mut level = vec![root];
    while !level.is_empty() {
        let (mut now, later): (Vec<MntEntry>, Vec<MntEntry>) =
            rest.into_iter().partition(|e| level.contains(&e.mnt_id));
        rest = later;
        now.sort_by_key(|e| e.mnt_id);
        level = Vec::new();
        for e in now {
            // Children of this level, by id.
            let mut kids: Vec<u32> = rest
                .iter()
                .filter(|k| k.parent_mnt_id == e.mnt_id)
                .map(|k| k.mnt_id)
                .collect();
            kids.sort_unstable();
            level.extend(kids);
            out.push(e);
        }
    }
    if !rest.is_empty() {
        return Err(bad(
            dir,
            id,
            "some mounts do not hang from the root mount".into(),
        ));
    }
    Ok(out)
}

/// Where mount `e` comes from, given the mounts before it.
fn source_of(
    ctx: &LoadCtx<'_>,
    id: u32,
    e: &MntEntry,
    before: &[Mount],
    ext: &HashMap<String, String>,
) -> Result<Source, Error> {
    if let Some(key) = &e.ext_key {
        let path = ext.get(key).ok_or_else(|| {
            Error::refused(
                ErrorKind::InvalidRequest,
                format!(
                    "the mount at {} is external (key {key}): give its host path with --external mnt[{key}]:PATH",
                    e.mountpoint
                ),
            )
        })?;
        let path = PathBuf::from(path);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(Error::refused(
                ErrorKind::FileMissing,
                format!(
                    "the external mount at {} (key {key}) is to come from {}, which does not exist",
                    e.mountpoint,
                    path.display()
                ),
            ));
        }
        return Ok(Source::External(path));
    }
    if FRESH.contains(&e.fstype)
        && e.root == "/"
        && !before.iter().any(|b| b.e.root_dev == e.root_dev)
    {
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
        return Ok(Source::Fresh {
            code: e.fstype,
            tar,
        });
    }
    // A bind of the mount of the same superblock whose root holds this
    // one's most closely.
    let of = before
        .iter()
        .filter(|b| b.e.root_dev == e.root_dev && under(&e.root, &b.e.root))
        .max_by_key(|b| b.e.root.len());
    match of {
        Some(b) => {
            let rel = e.root.strip_prefix(b.e.root.as_str()).unwrap_or("").trim_start_matches('/');
            Ok(Source::Bind { of: b.e.mnt_id, rel: rel.to_string() })
        }
        None => Err(bad(
            ctx.dir,
            id,
            format!(
                "the mount at {} (fs type {}, root {}) is neither one crust mounts afresh nor a bind of a mount before it",
                e.mountpoint, e.fstype, e.root
            ),
        )),
    }
}

impl MntNs {
    /// Read `mountpoints-ID.img` and check what it needs.
    pub(crate) fn load(ctx: &LoadCtx<'_>, id: u32) -> Result<MntNs, Error> {
        let entries: Vec<MntEntry> = read_image(ctx.dir, ImageType::Mnts, u64::from(id))?;
        let entries = order(ctx.dir, id, entries)?;
        let ext: HashMap<String, String> = ext_pairs(ctx.opts)?.into_iter().collect();
        let root_dir = ctx.opts.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !root_dir.is_dir() {
            return Err(Error::refused(
                ErrorKind::FileMissing,
                format!(
                    "--root {}: no such directory to restore the tree's mount namespace into",
                    root_dir.display()
                ),
            ));
        }
        let mut mounts: Vec<Mount> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let src = if i == 0 {
                Source::Root
            } else {
                source_of(ctx, id, &e, &mounts, &ext)?
            };
            log::debug!("mount {} at {}: {src:?}", e.mnt_id, e.mountpoint);
            mounts.push(Mount { e, src });
        }
        Ok(MntNs {
            id,
            mounts,
            root_dir,
        })
    }

    /// Build the mount tree in the new mount namespace of the stopped
    /// root `pid` and make it the root's.
    pub(crate) fn prepare(&self, pid: i32) -> Result<(), Error> {
        log::debug!("mount namespace {}: {} mounts", self.id, self.mounts.len());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let yard = PathBuf::from(format!("/tmp/.crust-mnt-{pid}-{nanos}"));
        std::fs::create_dir(&yard).map_err(|source| Error::Io {
            op: "create the directory to build the mount tree in",
            path: yard.clone(),
            source,
        })?;
        let built = in_ns(
            pid,
            &[NsKind::Net, NsKind::Ipc, NsKind::Pid, NsKind::Mnt],
            || {
                Builder {
                    pid,
                    ns: self,
                    made: HashMap::new(),
                }
                .build(&yard)
            },
        );
        let _ = std::fs::remove_dir(&yard);
        built
    }
}

pub(super) fn cpath(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        Error::refused(
            ErrorKind::InvalidRequest,
            format!("the path {} holds a NUL", p.display()),
        )
    })
}

struct Builder<'a> {
    pid: i32,
    ns: &'a MntNs,
    /// Mount id → where it was made (under the yard).
    made: HashMap<u32, PathBuf>,
}

impl Builder<'_> {
    fn sys(&self, what: String) -> impl FnOnce(std::io::Error) -> Error {
        let pid = self.pid;
        move |source| Error::Sys {
            pid,
            op: what,
            source,
        }
    }

    fn mount(&self, what: &str, m: &MountCall<'_>) -> Result<(), Error> {
        sysmount::mount(m).map_err(self.sys(what.to_string()))
    }

    fn build(mut self, yard: &Path) -> Result<(), Error> {
        let slash = cpath(Path::new("/"))?;
        let private = (ms::REC | ms::PRIVATE) as u64;
        self.mount(
            "make the new mount namespace private",
            &MountCall {
                source: None,
                target: &slash,
                fstype: None,
                flags: private,
                data: None,
            },
        )?;
        let cyard = cpath(yard)?;
        let tmpfs = CString::new("tmpfs").unwrap_or_default();
        self.mount(
            "mount the yard tmpfs",
            &MountCall {
                source: Some(&tmpfs),
                target: &cyard,
                fstype: Some(&tmpfs),
                flags: 0,
                data: None,
            },
        )?;
        let top = yard.join("root");
        std::fs::create_dir(&top).map_err(self.sys(format!("mkdir {}", top.display())))?;
        for m in &self.ns.mounts {
            self.make(m, &top)?;
        }
        // The root's propagation once pivoted into: pivot_root refuses a
        // shared new root (it is also where the old root goes).
        for m in self.ns.mounts.iter().skip(1) {
            self.propagation(m)?;
        }
        let ctop = cpath(&top)?;
        std::env::set_current_dir(&top).map_err(self.sys(format!("chdir {}", top.display())))?;
        let dot = cpath(Path::new("."))?;
        sysmount::pivot_root(&dot, &dot)
            .map_err(self.sys(format!("pivot_root into {}", ctop.to_string_lossy())))?;
        sysmount::umount2(&dot, libc::MNT_DETACH)
            .map_err(self.sys("detach the old root".into()))?;
        std::env::set_current_dir("/").map_err(self.sys("chdir / in the new root".into()))?;
        match self.ns.mounts.first() {
            Some(root) => {
                self.made.insert(root.e.mnt_id, PathBuf::from("/"));
                self.propagation(root)
            }
            None => Ok(()),
        }
    }

    /// Make mount `m` under `top` (the root: at `top`).
    fn make(&mut self, m: &Mount, top: &Path) -> Result<(), Error> {
        let e = &m.e;
        let target = top.join(e.mountpoint.trim_start_matches('/'));
        let what = |w: &str| {
            format!(
                "restore the mount at {} (id {}): {w}",
                e.mountpoint, e.mnt_id
            )
        };
        let ctarget = cpath(&target)?;
        let bind = |src: &Path, dir_expected: bool| -> Result<(), Error> {
            if std::fs::symlink_metadata(src).is_err() {
                return Err(Error::refused(
                    ErrorKind::FileMissing,
                    what(&format!("its source {} is gone", src.display())),
                ));
            }
            ensure_mountpoint(&target, dir_expected || src.is_dir())
                .map_err(self.sys(what("create its mountpoint")))?;
            let csrc = cpath(src)?;
            self.mount(
                &what(&format!("bind {}", src.display())),
                &MountCall {
                    source: Some(&csrc),
                    target: &ctarget,
                    fstype: None,
                    flags: ms::BIND as u64,
                    data: None,
                },
            )
        };
        match &m.src {
            Source::Root => bind(&self.ns.root_dir, true)?,
            Source::External(p) => bind(p, false)?,
            Source::Bind { of, rel } => {
                let base = self.made.get(of).cloned().unwrap_or_default();
                let src = if rel.is_empty() { base } else { base.join(rel) };
                let again = super::deleted::make_again(e, &src, &target)
                    .map_err(self.sys(what("make its deleted root again")))?;
                let bound = bind(&src, false);
                super::deleted::remove(again, &src)
                    .map_err(self.sys(what("remove its deleted root again")))?;
                bound?;
            }
            Source::Fresh { code, tar } => {
                ensure_mountpoint(&target, true)
                    .map_err(self.sys(what("create its mountpoint")))?;
                let fstype = CString::new(fstype_name(*code).unwrap_or("none")).unwrap_or_default();
                let source = CString::new(e.source.as_bytes()).unwrap_or_default();
                let data = CString::new(e.options.as_bytes()).unwrap_or_default();
                let sb = e.sb_flags.unwrap_or(0) & (ms::SYNCHRONOUS | ms::DIRSYNC | ms::MANDLOCK);
                let flags = ((e.flags & ms::MNT_MASK & !ms::RDONLY) | sb) as u64;
                let call = MountCall {
                    source: Some(&source),
                    target: &ctarget,
                    fstype: Some(&fstype),
                    flags,
                    data: (!e.options.is_empty()).then_some(data.as_c_str()),
                };
                let w = what(&format!("mount {}", fstype.to_string_lossy()));
                if *code == FS_PROC {
                    sysmount::mount_in_child(&call).map_err(self.sys(w))?;
                } else {
                    self.mount(&w, &call)?;
                }
                if let Some(t) = tar {
                    tmpfs::restore(t, &target)?;
                }
                if e.sb_flags.unwrap_or(0) & ms::RDONLY != 0 {
                    let ro = MountCall {
                        flags: flags | (ms::REMOUNT | ms::RDONLY) as u64,
                        source: None,
                        fstype: None,
                        ..call
                    };
                    self.mount(&what("remount its superblock read-only"), &ro)?;
                }
            }
        }
        let flags = (ms::REMOUNT | ms::BIND | (e.flags & ms::MNT_MASK)) as u64;
        self.mount(
            &what(&format!("set its flags {:#x}", e.flags & ms::MNT_MASK)),
            &MountCall {
                source: None,
                target: &ctarget,
                fstype: None,
                flags,
                data: None,
            },
        )?;
        self.made.insert(e.mnt_id, target);
        Ok(())
    }

    /// Shared, unbindable or private as recorded; peer groups and slaves
    /// are not rebuilt (a slave becomes private).
    fn propagation(&self, m: &Mount) -> Result<(), Error> {
        let f = m.e.flags;
        let p = if f & ms::UNBINDABLE != 0 {
            ms::UNBINDABLE
        } else if f & ms::SHARED != 0 {
            ms::SHARED
        } else {
            return Ok(());
        };
        let Some(target) = self.made.get(&m.e.mnt_id) else {
            return Ok(());
        };
        let ctarget = cpath(target)?;
        self.mount(
            &format!("set the propagation of the mount at {}", m.e.mountpoint),
            &MountCall {
                source: None,
                target: &ctarget,
                fstype: None,
                flags: p as u64,
                data: None,
            },
        )
    }
}

/// Make the mountpoint `p` if missing: a directory, or an empty file for a
/// file bind mount.
pub(super) fn ensure_mountpoint(p: &Path, dir: bool) -> std::io::Result<()> {
    if std::fs::symlink_metadata(p).is_ok() {
        return Ok(());
    }
    if dir {
        std::fs::create_dir_all(p)
    } else {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(drop)
    }
}

impl MntNs {
    /// The entries of its mounts, parents before children (the root first).
    pub(super) fn entries(&self) -> impl Iterator<Item = &MntEntry> {
        self.mounts.iter().map(|m| &m.e)
    }

    /// Where crust finds, before the namespace is made, the tree's path
    /// `p` (see [`super::view`]); `None` under a mount made afresh.
    pub(crate) fn host_path(&self, p: &Path) -> Option<PathBuf> {
        let s = p.to_str()?;
        let m = self
            .mounts
            .iter()
            .filter(|m| under(s, &m.e.mountpoint))
            .max_by_key(|m| m.e.mountpoint.len())?;
        let rel = s.strip_prefix(m.e.mountpoint.as_str()).unwrap_or("");
        self.base_of(m, 0)
            .map(|b| crate::util::view::join(&b, Path::new(rel)))
    }

    fn base_of(&self, m: &Mount, depth: usize) -> Option<PathBuf> {
        match &m.src {
            Source::Root => Some(self.root_dir.clone()),
            Source::External(p) => Some(p.clone()),
            Source::Bind { of, rel } if depth < self.mounts.len() => {
                let o = self.mounts.iter().find(|x| x.e.mnt_id == *of)?;
                let b = self.base_of(o, depth + 1)?;
                Some(crate::util::view::join(&b, Path::new(rel)))
            }
            Source::Bind { .. } | Source::Fresh { .. } => None,
        }
    }
}

/// For a restore's load: when the tree's root (pid `root_pid` in the
/// images) had a mount namespace of its own (not `crust`'s, the
/// inventory's), the view of its paths from crust's namespace until it is
/// made (see [`super::view`]).
pub(crate) fn view_for_load(
    ctx: &LoadCtx<'_>,
    crust: Option<&crust_images::proto::core::TaskKobjIdsEntry>,
    root_pid: Option<u32>,
) -> Result<Option<crate::util::view::ViewGuard>, Error> {
    let (Some(crust), Some(pid)) = (crust, root_pid) else {
        return Ok(None);
    };
    let ids: crust_images::proto::core::TaskKobjIdsEntry =
        match crate::util::read_one(ctx.dir, ImageType::Ids, u64::from(pid)) {
            Ok(i) => i,
            Err(_) => return Ok(None),
        };
    let (Some(mine), Some(tree)) = (NsKind::Mnt.id_in(crust), NsKind::Mnt.id_in(&ids)) else {
        return Ok(None);
    };
    if mine == tree {
        return Ok(None);
    }
    let ns = std::sync::Arc::new(MntNs::load(ctx, tree)?);
    // A path another mount namespace of the tree sees elsewhere is not
    // checked.
    let subs = super::multi::SubMntNs::load_all(ctx, &ns, tree)?;
    Ok(Some(crate::util::view::set(std::sync::Arc::new(
        move |p: &Path| {
            subs.iter()
                .all(|s| s.sees_as_root(p))
                .then(|| ns.host_path(p))
                .flatten()
        },
    ))))
}
