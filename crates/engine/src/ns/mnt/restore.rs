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
//!    (read-only, nosuid...: a bind remount);
//! 4. pivot_root into `yard/root`, the old root detached: the stopped root
//!    task, whose root was the old one, now has the new one;
//! 5. the propagation (peer groups, slaves, unbindable) rebuilt on the
//!    mounts' own fds ([`propagation`]): only now, as pivot_root wants the
//!    new root private and nothing may propagate while the tree is built.
//!
//! If a step fails, the root is killed and its namespace vanishes with
//! what was mounted in it; the yard directory is removed here either way.

use super::info::{fstype_name, ms, FS_DEVPTS, FS_PROC, FS_TMPFS};
use super::{assemble, ext_pairs, external, propagation, tmpfs, under, FRESH};
use crate::ns::ids::NsKind;
use crate::ns::in_ns;
use crate::ns::tree::LoadCtx;
use crate::util::read_image;
use crate::{Error, ErrorKind};
use crust_images::image::ImageType;
use crust_images::proto::mnt::MntEntry;
use crust_sys::mount::{self as sysmount, MountCall};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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

/// Mounts made with a peer group or a master, each with an `O_PATH` fd of
/// its root (see [`MntNs::prepare`]).
#[derive(Debug, Default)]
pub(crate) struct Propagating {
    mounts: Vec<(MntEntry, std::os::fd::OwnedFd)>,
}

impl Propagating {
    pub(crate) fn push(&mut self, e: MntEntry, fd: std::os::fd::OwnedFd) {
        self.mounts.push((e, fd));
    }

    /// Their entries.
    pub(crate) fn entries(&self) -> Vec<MntEntry> {
        self.mounts.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The fd of mount `id`.
    pub(crate) fn fd(&self, id: u32) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.mounts
            .iter()
            .find(|(e, _)| e.mnt_id == id)
            .map(|(_, f)| f.as_fd())
    }

    pub(crate) fn extend(&mut self, other: Propagating) {
        self.mounts.extend(other.mounts);
    }

    pub(crate) fn clear(&mut self) {
        self.mounts.clear();
    }
}

/// A mount namespace to make, checked.
#[derive(Debug)]
pub(crate) struct MntNs {
    id: u32,
    /// Parents before children.
    mounts: Vec<Mount>,
    root_dir: PathBuf,
    ext_mode: external::Mode,
    /// How the mounts' propagation is rebuilt once they stand.
    prop: propagation::Plan,
    /// binfmt_misc entries to register again, and the mount they go to.
    binfmt: Option<(u32, Vec<super::binfmt::Register>)>,
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
        // By id, but filesystems mounted afresh before the binds among
        // them (a bind of a sibling, as runc's /dev/console of /dev/pts/N
        // mounted before /dev/pts got a lower id, needs its source first).
        now.sort_by_key(|e| (!(FRESH.contains(&e.fstype) && e.root == "/"), e.mnt_id));
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
    mode: external::Mode,
) -> Result<Source, Error> {
    if let Some(key) = &e.ext_key {
        return Ok(Source::External(external::host_path(e, key, ext, mode)?));
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
        let ext_mode = external::mode(ctx.opts)?;
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
                source_of(ctx, id, &e, &mounts, &ext, ext_mode)?
            };
            log::debug!("mount {} at {}: {src:?}", e.mnt_id, e.mountpoint);
            mounts.push(Mount { e, src });
        }
        let entries: Vec<MntEntry> = mounts.iter().map(|m| m.e.clone()).collect();
        let prop = propagation::plan(&entries).map_err(|why| bad(ctx.dir, id, why))?;
        let joins = prop
            .steps
            .iter()
            .any(|s| matches!(s, propagation::Step::SetGroup { .. }));
        if joins && !crust_sys::mount_group::has_set_group() {
            return Err(Error::refused(
                ErrorKind::Unsupported,
                format!("mountpoints-{id}.img: mounts share peer groups or masters, which crust rebuilds with move_mount(MOVE_MOUNT_SET_GROUP); this kernel lacks it (Linux 5.15 or later has it)"),
            ));
        }
        let fresh_binfmt: Vec<(u32, &str, u32)> = mounts
            .iter()
            .filter(|m| {
                m.e.fstype == super::binfmt::FS_BINFMT_MISC && matches!(m.src, Source::Fresh { .. })
            })
            .map(|m| (m.e.mnt_id, m.e.mountpoint.as_str(), m.e.root_dev))
            .collect();
        let binfmt = super::binfmt::load(ctx.dir, &fresh_binfmt)?;
        Ok(MntNs {
            id,
            mounts,
            root_dir,
            ext_mode,
            prop,
            binfmt,
        })
    }

    /// Build the mount tree in the new mount namespace of the stopped
    /// root `pid` and make it the root's. Gives an `O_PATH` fd of the root
    /// of each of its mounts that has a peer group or a master, by mount
    /// id: the tree's other mount namespaces join those (see
    /// [`super::multi`]); held, they keep the mounts busy, so they must be
    /// dropped before the tree runs.
    pub(crate) fn prepare(&self, pid: i32) -> Result<Propagating, Error> {
        log::debug!("mount namespace {}: {} mounts", self.id, self.mounts.len());
        // External mounts are cloned here, in crust's namespace.
        let mut ext_fds = HashMap::new();
        for m in &self.mounts {
            if let Source::External(p) = &m.src {
                ext_fds.insert(m.e.mnt_id, external::clone_source(p)?);
            }
        }
        let userns = super::binfmt::restored_userns(pid)?;
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
                    ext_fds,
                    own: HashMap::new(),
                    userns,
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
    /// External mounts' clones (made in crust's namespace) by mount id.
    ext_fds: HashMap<u32, std::os::fd::OwnedFd>,
    /// Each mount made, by id: an O_PATH fd on its root (`made` holds its
    /// /proc/self/fd path), so that children are mounted on it and binds
    /// taken from it even once other mounts cover it.
    own: HashMap<u32, std::os::fd::OwnedFd>,
    /// The tree's own user namespace, when it has one (binfmt_misc is
    /// mounted from inside it).
    userns: Option<std::fs::File>,
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

    fn build(mut self, yard: &Path) -> Result<Propagating, Error> {
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
        for m in self.ns.build_order() {
            self.make(m, &top)?;
        }
        let ctop = cpath(&top)?;
        std::env::set_current_dir(&top).map_err(self.sys(format!("chdir {}", top.display())))?;
        let dot = cpath(Path::new("."))?;
        sysmount::pivot_root(&dot, &dot)
            .map_err(self.sys(format!("pivot_root into {}", ctop.to_string_lossy())))?;
        sysmount::umount2(&dot, libc::MNT_DETACH)
            .map_err(self.sys("detach the old root".into()))?;
        std::env::set_current_dir("/").map_err(self.sys("chdir / in the new root".into()))?;
        let name = |id: u32| {
            let mp = self.ns.mounts.iter().find(|m| m.e.mnt_id == id);
            format!(
                "the mount at {} (id {id})",
                mp.map_or("?", |m| m.e.mountpoint.as_str())
            )
        };
        propagation::run(&self.ns.prop, &self.own, name).map_err(|(what, source)| Error::Sys {
            pid: self.pid,
            op: format!("restore mount propagation: {what}"),
            source,
        })?;
        match &self.ns.binfmt {
            Some((id, regs)) => match self.own.get(id) {
                Some(fd) => super::binfmt::register(self.pid, self.userns.is_some(), fd, regs),
                None => Err(Error::unsupported(format!(
                    "the binfmt_misc mount (id {id}) for the entries of binfmt-misc.img was not made"
                ))),
            },
            None => Ok(()),
        }?;
        let mut out = Propagating::default();
        for m in &self.ns.mounts {
            let e = &m.e;
            if e.shared_id.unwrap_or(0) == 0 && e.master_id.unwrap_or(0) == 0 {
                continue;
            }
            if let Some(fd) = self.own.remove(&e.mnt_id) {
                out.push(e.clone(), fd);
            }
        }
        Ok(out)
    }

    /// Where mount `e` goes: its mountpoint in its parent, reached through
    /// the parent's own fd (the root, or a mount whose parent is unknown:
    /// under `top`).
    fn target_of(&self, e: &MntEntry, top: &Path) -> PathBuf {
        let parent = self.made.get(&e.parent_mnt_id).zip(
            self.ns
                .mounts
                .iter()
                .find(|p| p.e.mnt_id == e.parent_mnt_id),
        );
        match parent {
            Some((at, p)) if under(&e.mountpoint, &p.e.mountpoint) => {
                let rel = if p.e.mountpoint == "/" {
                    e.mountpoint.as_str()
                } else {
                    e.mountpoint
                        .strip_prefix(p.e.mountpoint.as_str())
                        .unwrap_or("")
                };
                let rel = rel.trim_start_matches('/');
                if rel.is_empty() {
                    at.clone()
                } else {
                    at.join(rel)
                }
            }
            _ => top.join(e.mountpoint.trim_start_matches('/')),
        }
    }

    /// Make mount `m`: the root bound at `top`; any other made at a
    /// staging place of the yard (a directory, or a file for a file bind),
    /// its own fd taken there, then moved onto its mountpoint in its
    /// parent (reached through the parent's own fd: see [`Self::own`]).
    fn make(&mut self, m: &Mount, top: &Path) -> Result<(), Error> {
        let e = &m.e;
        let what = |w: &str| {
            format!(
                "restore the mount at {} (id {}): {w}",
                e.mountpoint, e.mnt_id
            )
        };
        let bind_src = match &m.src {
            Source::Root => Some(self.ns.root_dir.clone()),
            Source::External(p) => Some(p.clone()),
            Source::Bind { of, rel } => {
                let base = self.made.get(of).cloned().unwrap_or_default();
                Some(if rel.is_empty() { base } else { base.join(rel) })
            }
            Source::Fresh { .. } => None,
        };
        // A bind whose root was deleted: made again for the bind, removed
        // once bound (see `deleted`).
        let again = match (&m.src, &bind_src) {
            (Source::Bind { .. }, Some(src)) => {
                super::deleted::make_again(e, src, &self.target_of(e, top))
                    .map_err(self.sys(what("make its deleted root again")))?
            }
            _ => super::deleted::Made::Nothing,
        };
        if let (Source::Bind { of, rel }, Some(src)) = (&m.src, &bind_src) {
            self.pty_for_bind(*of, rel, src)
                .map_err(self.sys(what("make the pty whose slave it binds")))?;
        }
        if let Some(src) = &bind_src {
            if std::fs::symlink_metadata(src).is_err() {
                return Err(Error::refused(
                    ErrorKind::FileMissing,
                    what(&format!("its source {} is gone", src.display())),
                ));
            }
        }
        let dir = bind_src.as_ref().is_none_or(|p| p.is_dir());
        let root = matches!(m.src, Source::Root);
        let yard = top.parent().unwrap_or(top);
        let at = match (root, dir) {
            (true, _) => top.to_path_buf(),
            (false, true) => yard.join("stage"),
            (false, false) => yard.join("stagef"),
        };
        ensure_mountpoint(&at, dir).map_err(self.sys(what("create its mountpoint")))?;
        let cat = cpath(&at)?;
        let made = match (&m.src, &bind_src) {
            (Source::External(_), Some(src)) => match self.ext_fds.get(&e.mnt_id) {
                Some(fd) => external::attach(self.pid, e, fd, &cat, self.ns.ext_mode),
                None => self.bind_from(src, &cat, &what),
            },
            (Source::Fresh { code, tar }, _) => self.fresh(e, *code, tar.as_deref(), &at, &what),
            (_, Some(src)) => self.bind_from(src, &cat, &what),
            (_, None) => Ok(()),
        };
        // A deleted root made again stays until the mount is in place.
        let placed = (|| {
            made?;
            self.place(e, &at, top, dir, root, &what)
        })();
        if let Some(src) = &bind_src {
            super::deleted::remove(again, src)
                .map_err(self.sys(what("remove its deleted root again")))?;
        }
        let own_path = placed?;
        let cown = cpath(&own_path)?;
        let flags = (ms::REMOUNT | ms::BIND | (e.flags & ms::MNT_MASK)) as u64;
        self.mount(
            &what(&format!("set its flags {:#x}", e.flags & ms::MNT_MASK)),
            &MountCall {
                source: None,
                target: &cown,
                fstype: None,
                flags,
                data: None,
            },
        )?;
        self.made.insert(e.mnt_id, own_path);
        Ok(())
    }

    /// Take an fd of the mount just made at `at` (its own, kept: see
    /// [`Self::own`]) and, unless it is the root, move it onto its
    /// mountpoint under `top` (`dir`: a directory, else a file bind);
    /// returns the fd's /proc/self/fd path.
    fn place(
        &mut self,
        e: &MntEntry,
        at: &Path,
        top: &Path,
        dir: bool,
        root: bool,
        what: &dyn Fn(&str) -> String,
    ) -> Result<PathBuf, Error> {
        let cat = cpath(at)?;
        let own = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(at)
            .map_err(self.sys(what("open it")))?;
        let own_path = PathBuf::from(format!("/proc/self/fd/{}", own.as_raw_fd()));
        self.own.insert(e.mnt_id, own.into());
        if !root {
            let target = self.target_of(e, top);
            ensure_mountpoint(&target, dir).map_err(self.sys(what("create its mountpoint")))?;
            let ctarget = cpath(&target)?;
            self.mount(
                &what("move it in place"),
                &MountCall {
                    source: Some(&cat),
                    target: &ctarget,
                    fstype: None,
                    flags: libc::MS_MOVE,
                    data: None,
                },
            )?;
        }
        Ok(own_path)
    }

    /// A bind of the file of pty slave N of a devpts made afresh
    /// (`/dev/console` bound from `/dev/pts/N`): the pty is made now, its
    /// master opened on that devpts's ptmx until it has index N, and kept
    /// for the pty kind ([`crate::util::ptmx`]), as the file exists only
    /// while its pair does.
    fn pty_for_bind(&self, of: u32, rel: &str, src: &Path) -> std::io::Result<()> {
        let devpts = self.ns.mounts.iter().any(|x| {
            x.e.mnt_id == of && matches!(x.src, Source::Fresh { code, .. } if code == FS_DEVPTS)
        });
        let index = (!rel.is_empty() && rel.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rel.parse::<u32>().ok())
            .flatten();
        let (Some(index), Some(base)) = (index.filter(|_| devpts), self.made.get(&of)) else {
            return Ok(());
        };
        if std::fs::symlink_metadata(src).is_ok() {
            return Ok(());
        }
        let ptmx = base.join("ptmx");
        let open = || -> std::io::Result<std::os::fd::OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(&ptmx)?
                .into())
        };
        let (master, got) = crate::util::ptmx::open_at_index(index, &open)?;
        if got == index {
            log::debug!("pty {index} made for a bind mount of its slave");
            crate::util::ptmx::keep_master(index, master);
        }
        Ok(())
    }

    fn bind_from(
        &self,
        src: &Path,
        target: &CStr,
        what: &dyn Fn(&str) -> String,
    ) -> Result<(), Error> {
        let csrc = cpath(src)?;
        self.mount(
            &what(&format!("bind {}", src.display())),
            &MountCall {
                source: Some(&csrc),
                target,
                fstype: None,
                flags: ms::BIND as u64,
                data: None,
            },
        )
    }

    /// A new superblock of CRIU fs type `code` at `at`, filled from its
    /// archive `tar` (a tmpfs), its superblock made read-only if recorded.
    fn fresh(
        &self,
        e: &MntEntry,
        code: u32,
        tar: Option<&Path>,
        at: &Path,
        what: &dyn Fn(&str) -> String,
    ) -> Result<(), Error> {
        let cat = cpath(at)?;
        let fstype = CString::new(fstype_name(code).unwrap_or("none")).unwrap_or_default();
        let source = CString::new(e.source.as_bytes()).unwrap_or_default();
        let data = CString::new(e.options.as_bytes()).unwrap_or_default();
        let sb = e.sb_flags.unwrap_or(0) & (ms::SYNCHRONOUS | ms::DIRSYNC | ms::MANDLOCK);
        let flags = ((e.flags & ms::MNT_MASK & !ms::RDONLY) | sb) as u64;
        let call = MountCall {
            source: Some(&source),
            target: &cat,
            fstype: Some(&fstype),
            flags,
            data: (!e.options.is_empty()).then_some(data.as_c_str()),
        };
        let w = what(&format!("mount {}", fstype.to_string_lossy()));
        if code == FS_PROC {
            sysmount::mount_in_child(&call).map_err(self.sys(w))?;
        } else if code == super::binfmt::FS_BINFMT_MISC {
            super::binfmt::mount_fresh(self.userns.as_ref(), &call).map_err(self.sys(w))?;
        } else {
            self.mount(&w, &call)?;
        }
        if let Some(t) = tar {
            tmpfs::restore(t, at)?;
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
        Ok(())
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
    /// The mounts in the order they are made: depth first from the root,
    /// a mount another one covers before it ([`assemble::order`]: a mount
    /// on `a/b/c` under a sibling on `a` must be in place before `a` hides
    /// its mountpoint), yet never before its parent or the mount it is a
    /// bind of.
    fn build_order(&self) -> Vec<&Mount> {
        use std::collections::HashSet;
        let entries: Vec<MntEntry> = self.mounts.iter().map(|m| m.e.clone()).collect();
        let by_id: HashMap<u32, &Mount> = self.mounts.iter().map(|m| (m.e.mnt_id, m)).collect();
        let mut pending: Vec<&Mount> = assemble::order(&entries)
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
        let listed: HashSet<u32> = pending.iter().map(|m| m.e.mnt_id).collect();
        pending.extend(self.mounts.iter().filter(|m| !listed.contains(&m.e.mnt_id)));
        let mut done: HashSet<u32> = HashSet::new();
        let mut out = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready = |m: &Mount| {
                let after = |id: u32| done.contains(&id) || !by_id.contains_key(&id);
                let src = match &m.src {
                    Source::Bind { of, .. } => after(*of),
                    _ => true,
                };
                (out.is_empty() || after(m.e.parent_mnt_id)) && src
            };
            // None ready cannot happen in a checked tree; take the first.
            let at = pending.iter().position(|m| ready(m)).unwrap_or(0);
            let m = pending.remove(at);
            done.insert(m.e.mnt_id);
            out.push(m);
        }
        out
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u32, parent: u32, mp: &str, fstype: u32, root: &str) -> MntEntry {
        MntEntry {
            mnt_id: id,
            parent_mnt_id: parent,
            mountpoint: mp.into(),
            fstype,
            root: root.into(),
            ..Default::default()
        }
    }

    /// runc's /dev/console, a bind of /dev/pts/0 with a lower id than the
    /// devpts at /dev/pts: the devpts comes first among its siblings.
    #[test]
    fn fresh_siblings_before_binds() {
        let ents = vec![
            e(10, 1, "/", 0, "/"),
            e(20, 10, "/dev", FS_TMPFS, "/"),
            e(73, 20, "/dev/console", FS_DEVPTS, "/0"),
            e(98, 20, "/dev/pts", FS_DEVPTS, "/"),
            e(99, 20, "/dev/mqueue", 14, "/"),
        ];
        let got: Vec<u32> = order(Path::new("/x"), 1, ents)
            .unwrap()
            .iter()
            .map(|m| m.mnt_id)
            .collect();
        assert_eq!(got, [10, 20, 98, 99, 73]);
    }
}
