//! The mount namespace: its mount tree (`mountpoints-ID.img`, one
//! `MntEntry` per mount, CRIU's meanings: [`info`]), the contents of its
//! tmpfs mounts ([`tmpfs`]), and its rebuilding on restore
//! ([`restore::MntNs`]).
//!
//! Dump ([`dump`]): every mount of the root's `/proc/PID/mountinfo`. The
//! mount at `/` whose parent is not in the namespace is the tree's root:
//! it is given back by `--root DIR` at restore (crust's `/` without it).
//! Each other mount must be restorable: external (`--external
//! mnt[MOUNTPOINT]:KEY` or `--ext-mount-map MOUNTPOINT:KEY`: recorded with
//! `ext_key`, given a host path at restore), a filesystem crust mounts
//! afresh (proc, sysfs, tmpfs, devpts, mqueue, binfmt_misc, cgroup v1) from its root, or a bind of
//! a part of another mount of the same superblock; anything else is
//! refused, naming the mount. `--skip-mnt MOUNTPOINT` leaves a mount (and
//! what is under it) out.

pub(crate) mod assemble;
pub(crate) mod binfmt;
pub(crate) mod cover;
pub(crate) mod deleted;
pub(crate) mod external;
pub(crate) mod info;
pub(crate) mod multi;
pub(crate) mod pivot;
pub(crate) mod propagation;
pub(crate) mod restore;
pub(crate) mod tmpfs;
pub(crate) use crate::util::view;

use super::tree::DumpCtx;
use crate::util::{sys_err, write_image};
use crate::{Error, ErrorKind, Options};
use crust_images::image::ImageType;
use crust_images::proto::mnt::MntEntry;
use info::{fstype_code, MountLine};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// CRIU's fs types crust mounts afresh on restore (binfmt_misc: see
/// [`binfmt`]).
pub(crate) const FRESH: &[u32] = &[1, 2, binfmt::FS_BINFMT_MISC, 5, 6, 12, 14];

/// The `mnt[A]:B` forms of `--external` with `--ext-mount-map A:B`, as
/// (A, B) pairs: at dump A is a mountpoint and B its key; at restore A is
/// a key and B a host path. An empty B is taken, as CRIU takes it (LXC
/// restores with `--ext-mount-map console:`), and refused only where a
/// mount uses it (`dump`, `external::host_path`).
pub(crate) fn ext_pairs(opts: &Options) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for e in &opts.external {
        let Some(rest) = e.strip_prefix("mnt[").filter(|_| !e.starts_with("mnt[]")) else {
            continue;
        };
        let pair = rest
            .split_once("]:")
            .filter(|(a, b)| !a.is_empty() && !b.is_empty());
        let Some((a, b)) = pair else {
            return Err(Error::refused(
                ErrorKind::InvalidRequest,
                format!("--external {e}: crust takes mount externals as mnt[MOUNTPOINT]:KEY at dump and mnt[KEY]:PATH at restore"),
            ));
        };
        out.push((a.to_string(), b.to_string()));
    }
    for m in opts.ext_mount_map.iter().filter(|m| *m != "auto") {
        let Some((a, b)) = m.split_once(':').filter(|(a, _)| !a.is_empty()) else {
            return Err(Error::refused(
                ErrorKind::InvalidRequest,
                format!(
                    "--ext-mount-map {m}: expected MOUNTPOINT:KEY at dump, KEY:PATH at restore"
                ),
            ));
        };
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}

/// `a` is `b` or a path under it.
pub(crate) fn under(a: &str, b: &str) -> bool {
    b == "/" || a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
}

/// Read `/proc/PID/mountinfo`.
pub(crate) fn mountinfo(pid: i32) -> Result<Vec<MountLine>, Error> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(sys_err(pid, format!("read {path}")))?;
    text.lines()
        .map(|l| {
            info::parse_line(l).ok_or_else(|| Error::Restore {
                pid,
                what: format!("{path}: a line crust cannot read: {l:?}"),
            })
        })
        .collect()
}

/// Leave out the mounts at `skip` mountpoints and everything under them.
pub(super) fn skip_mounts(mounts: Vec<MountLine>, skip: &[String]) -> Vec<MountLine> {
    let mut gone: BTreeSet<u32> = mounts
        .iter()
        .filter(|m| {
            skip.iter()
                .any(|s| s.trim_end_matches('/') == m.mountpoint.trim_end_matches('/'))
        })
        .map(|m| m.mnt_id)
        .collect();
    loop {
        let more: Vec<u32> = mounts
            .iter()
            .filter(|m| gone.contains(&m.parent) && !gone.contains(&m.mnt_id))
            .map(|m| m.mnt_id)
            .collect();
        if more.is_empty() {
            break;
        }
        gone.extend(more);
    }
    mounts
        .into_iter()
        .filter(|m| !gone.contains(&m.mnt_id))
        .collect()
}

/// The one mount whose parent is not in the namespace: the tree's root.
pub(crate) fn root_of(mounts: &[MountLine]) -> Option<&MountLine> {
    let ids: BTreeSet<u32> = mounts.iter().map(|m| m.mnt_id).collect();
    let mut roots = mounts.iter().filter(|m| !ids.contains(&m.parent));
    let r = roots.next()?;
    (roots.next().is_none() && r.mountpoint == "/").then_some(r)
}

pub(crate) fn refuse(pid: i32, m: &MountLine, why: &str) -> Error {
    Error::refused(
        ErrorKind::Unsupported,
        format!(
            "process {pid}'s mount namespace: mount {} at {} ({} {}, root {}) {why}; mark it external with --external mnt[{}]:KEY (and give it back at restore with --external mnt[KEY]:PATH) or leave it out with --skip-mnt {}",
            m.mnt_id, m.mountpoint, m.fsname, m.source, m.root, m.mountpoint, m.mountpoint
        ),
    )
}

/// Why mount `m` cannot be rebuilt from inside the tree (or `Ok`): it
/// must be the root, external, a filesystem crust mounts afresh, or a bind
/// of a part of one of those.
fn restorable(
    m: &MountLine,
    mounts: &[MountLine],
    root_id: u32,
    ext: &HashMap<String, String>,
) -> Result<(), &'static str> {
    if m.mnt_id == root_id || ext.contains_key(&m.mountpoint) {
        return Ok(());
    }
    // A deleted root is a bind of what was there: made again at restore
    // for the bind (see `deleted`).
    let code = fstype_code(&m.fsname);
    if FRESH.contains(&code) && m.root == "/" && !m.deleted {
        return Ok(());
    }
    let bind_of = mounts.iter().any(|o| {
        o.mnt_id != m.mnt_id
            && o.dev == m.dev
            && under(&m.root, &o.root)
            && (o.mnt_id == root_id
                || ext.contains_key(&o.mountpoint)
                || (FRESH.contains(&code) && o.root == "/"))
    });
    if bind_of {
        Ok(())
    } else {
        Err("is neither a filesystem crust mounts afresh (proc, sysfs, tmpfs, devpts, mqueue, binfmt_misc, cgroup v1) nor a bind of a part of the tree's root or of another mount in the namespace")
    }
}

pub(super) fn no_root(pid: i32) -> Error {
    Error::refused(
        ErrorKind::Unsupported,
        format!("process {pid}'s mount namespace has no single root mount at / (is its root a directory inside a mount? crust restores only a root that is a mount's)"),
    )
}

/// Check that each mount can be restored (see the module's doc).
fn check(pid: i32, mounts: &[MountLine], ext: &HashMap<String, String>) -> Result<(), Error> {
    let root = root_of(mounts).ok_or_else(|| no_root(pid))?;
    for m in mounts {
        restorable(m, mounts, root.mnt_id, ext).map_err(|why| refuse(pid, m, why))?;
    }
    Ok(())
}

/// Dump the mount namespace of the tree's root as id `id`.
pub(crate) fn dump(ctx: &DumpCtx<'_>, id: u32) -> Result<(), Error> {
    let pid = ctx.root_pid;
    let all = mountinfo(pid)?;
    let mounts = skip_mounts(all.clone(), &ctx.opts.skip_mnt);
    let mut ext: HashMap<String, String> = ext_pairs(ctx.opts)?.into_iter().collect();
    // A key that names no mount is left out, as CRIU leaves it (runc
    // names every device of its container, bind-mounted or not).
    ext.retain(|mp, _| {
        let used = mounts.iter().any(|m| &m.mountpoint == mp);
        if !used {
            log::info!("--external mnt[{mp}]: process {pid}'s mount namespace has no mount at {mp}: not used");
        }
        used
    });
    if let Some((mp, _)) = ext.iter().find(|(_, key)| key.is_empty()) {
        return Err(Error::refused(
            ErrorKind::InvalidRequest,
            format!("--ext-mount-map {mp}: gives the external mount at {mp} an empty key, which no restore can name: give it a key (MOUNTPOINT:KEY)"),
        ));
    }
    let root_id = root_of(&mounts).map(|r| r.mnt_id);
    let auto = external::detect(&mounts, root_id, &mut ext, external::mode(ctx.opts)?)?;
    check(pid, &mounts, &ext)?;
    let mut binfmt_done = None;
    for m in &mounts {
        if fstype_code(&m.fsname) == binfmt::FS_BINFMT_MISC && !ext.contains_key(&m.mountpoint) {
            binfmt::dump(ctx.dir, pid, m, &mut binfmt_done)?;
        }
    }
    let ns = NsMounts {
        pid,
        id,
        mounts: &mounts,
        all: &all,
        ext: &ext,
        auto: &auto,
        root_id,
    };
    write_entries(ctx.dir, &ns, &mut BTreeSet::new())
}

/// One mount namespace's mounts, for [`write_entries`].
pub(super) struct NsMounts<'a> {
    /// A process of the namespace.
    pub pid: i32,
    /// The namespace's id in the images.
    pub id: u32,
    /// Its mounts, those `--skip-mnt` leaves out gone.
    pub mounts: &'a [MountLine],
    /// All its mounts (a tmpfs is archived from a copy that needs them).
    pub all: &'a [MountLine],
    /// External mounts: mountpoint → key.
    pub ext: &'a HashMap<String, String>,
    /// Auto-detected externals: mountpoint → host path (their source).
    pub auto: &'a HashMap<String, String>,
    /// Its root mount.
    pub root_id: Option<u32>,
}

/// Write `mountpoints-ID.img` for the mounts of namespace `ns`, archiving
/// each tmpfs whose device is not in `dumped` yet (and adding it there).
pub(super) fn write_entries(
    dir: &Path,
    ns: &NsMounts<'_>,
    dumped: &mut BTreeSet<u32>,
) -> Result<(), Error> {
    let NsMounts {
        pid,
        id,
        mounts,
        all,
        ext,
        auto,
        root_id,
    } = *ns;
    let host_pts = std::fs::metadata("/dev/pts")
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .ok();
    let mut entries = Vec::new();
    for m in mounts.iter().rev() {
        let code = fstype_code(&m.fsname);
        let key = ext.get(&m.mountpoint);
        let mut options = m.options.clone();
        if code == info::FS_DEVPTS && host_pts != Some(kdev_to_dev(m.dev)) {
            // The kernel hides it, but a devpts that is not the host's was
            // mounted as a new instance.
            options = if options.is_empty() {
                "newinstance".into()
            } else {
                format!("{options},newinstance")
            };
        }
        if code == info::FS_TMPFS
            && key.is_none()
            && Some(m.mnt_id) != root_id
            && m.root == "/"
            && dumped.insert(m.dev)
        {
            dump_tmpfs(dir, pid, m, all)?;
        }
        log::debug!(
            "mount {} {} at {} ({})",
            m.mnt_id,
            m.fsname,
            m.mountpoint,
            m.root
        );
        entries.push(MntEntry {
            fstype: code,
            mnt_id: m.mnt_id,
            root_dev: m.dev,
            parent_mnt_id: m.parent,
            flags: m.flags,
            root: m.root.clone(),
            mountpoint: m.mountpoint.clone(),
            source: auto
                .get(&m.mountpoint)
                .filter(|_| key.is_some_and(|k| k == external::AUTO_KEY))
                .unwrap_or(&m.source)
                .clone(),
            options,
            shared_id: Some(m.shared_id),
            master_id: Some(m.master_id),
            deleted: m.deleted.then_some(true),
            sb_flags: Some(m.sb_flags),
            ext_key: key.cloned(),
            ..Default::default()
        });
    }
    write_image(dir, ImageType::Mnts, u64::from(id), &entries)
}

/// The kernel encoding of a device (major << 20 | minor) as st_dev.
pub(crate) fn kdev_to_dev(k: u32) -> u64 {
    libc::makedev(k >> 20, k & 0xfffff)
}

/// Archive the unbindable tmpfs `m` in place, through `/proc/PID/root`:
/// refused when another mount covers it or has mounts on its directories
/// (crust could not read the files they hide).
fn dump_unbindable_tmpfs(
    dir: &Path,
    pid: i32,
    m: &MountLine,
    all: &[MountLine],
) -> Result<(), Error> {
    let path = format!("/proc/{pid}/root{}", m.mountpoint);
    let f = std::fs::File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let seen = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if seen != Some(m.mnt_id) {
        return Err(refuse(
            pid,
            m,
            "is unbindable and covered by another mount, so crust cannot read its files",
        ));
    }
    if all.iter().any(|c| c.parent == m.mnt_id) {
        return Err(refuse(
            pid,
            m,
            "is unbindable and has mounts on its directories, so crust cannot read the files they cover",
        ));
    }
    tmpfs::dump(dir, m.dev, Path::new(&path))
}

/// Archive the tmpfs mounted as `m` in process `pid`'s namespace: a copy
/// of that one mount (without the mounts over its directories: what they
/// cover is the tmpfs's too), reached even when other mounts cover it
/// ([`cover::clone_mount`]). An unbindable tmpfs, which the kernel will
/// not clone, is read in place ([`dump_unbindable_tmpfs`]).
fn dump_tmpfs(dir: &Path, pid: i32, m: &MountLine, all: &[MountLine]) -> Result<(), Error> {
    if m.flags & info::ms::UNBINDABLE != 0 {
        return dump_unbindable_tmpfs(dir, pid, m, all);
    }
    let one = cover::clone_mount(pid, m, all)?;
    let ofd = std::os::fd::AsRawFd::as_raw_fd(&one);
    tmpfs::dump(dir, m.dev, Path::new(&format!("/proc/self/fd/{ofd}")))
}

/// The options a dump's own check of its images (a restore's load) runs
/// with: the dumped tree's mounts are still there, so the tree's root is
/// `/proc/PID/root` and each external mount `mnt[MOUNTPOINT]:KEY` is
/// given back as `mnt[KEY]:/proc/PID/root/MOUNTPOINT`.
pub(crate) fn as_restore_check(opts: &Options) -> Options {
    let mut o = opts.clone();
    if opts.pid <= 0 {
        return o;
    }
    let root = std::path::PathBuf::from(format!("/proc/{}/root", opts.pid));
    let pairs = ext_pairs(opts).unwrap_or_default();
    o.external =
        opts.external
            .iter()
            .filter(|e| !e.starts_with("mnt[") || external::is_auto(e))
            .cloned()
            .chain(pairs.iter().map(|(mp, key)| {
                format!("mnt[{key}]:{}", view::join(&root, Path::new(mp)).display())
            }))
            .collect();
    o.ext_mount_map.retain(|m| m == "auto");
    o.root = Some(root);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mountinfo line for tests (also `multi`'s).
    pub(super) fn line(
        id: u32,
        parent: u32,
        mp: &str,
        fs: &str,
        root: &str,
        dev: u32,
    ) -> MountLine {
        MountLine {
            mnt_id: id,
            parent,
            dev,
            root: root.into(),
            mountpoint: mp.into(),
            flags: 0,
            shared_id: 0,
            master_id: 0,
            fsname: fs.into(),
            source: fs.into(),
            sb_flags: 0,
            options: String::new(),
            deleted: false,
        }
    }

    #[test]
    fn mounts_crust_cannot_restore_are_refused_unless_external_or_skipped() {
        let ms = vec![
            line(1, 0, "/", "ext4", "/srv/root", 8),
            line(2, 1, "/t", "tmpfs", "/", 40),
            line(3, 1, "/b", "tmpfs", "/sub", 40),
            line(4, 1, "/in", "ext4", "/srv/root/x", 8),
            line(5, 1, "/out", "ext4", "/etc", 8),
            line(6, 5, "/out/p", "proc", "/", 9),
        ];
        let none = HashMap::new();
        let e = check(7, &ms, &none).unwrap_err().to_string();
        assert!(e.contains("mount 5 at /out"), "{e}");
        let ext: HashMap<String, String> = [("/out".to_string(), "K".to_string())].into();
        check(7, &ms, &ext).unwrap();
        let skipped = skip_mounts(ms, &["/out/".to_string()]);
        assert_eq!(skipped.len(), 4);
        check(7, &skipped, &none).unwrap();
        assert_eq!(root_of(&skipped).map(|r| r.mnt_id), Some(1));
    }

    #[test]
    fn externals_are_read_from_both_options() {
        let mut o = Options {
            external: vec!["mnt[/dev]:DEV".into(), "veth[a]:b".into()],
            ext_mount_map: vec!["/x:X".into()],
            ..Default::default()
        };
        let p = ext_pairs(&o).unwrap();
        assert_eq!(
            p,
            vec![("/dev".into(), "DEV".into()), ("/x".into(), "X".into())]
        );
        o.external = vec!["mnt[/a]".into()];
        assert!(ext_pairs(&o).is_err());
        // LXC's `console:`: taken, empty, refused only where used.
        o.external.clear();
        o.ext_mount_map = vec!["console:".into()];
        assert_eq!(ext_pairs(&o).unwrap(), vec![("console".into(), "".into())]);
        o.ext_mount_map = vec![":x".into()];
        assert!(ext_pairs(&o).is_err());
        o.external = vec!["mnt[]:s".into()];
        o.ext_mount_map = vec!["auto".into()];
        assert!(ext_pairs(&o).unwrap().is_empty());
        assert!(
            under("/a/b", "/a") && under("/a", "/a") && under("/x", "/") && !under("/ab", "/a")
        );
    }
}
