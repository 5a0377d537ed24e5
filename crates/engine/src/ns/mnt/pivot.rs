//! A mount namespace of the tree whose root is not the root of the tree
//! root's namespace: a process unshared its mount namespace and pivoted
//! (pivot_root(2)) into a new tmpfs, or into a bind of a directory of the
//! root's namespace (zdtm mntns_pivot_root, mntns_pivot_root_ro; what a
//! container runtime does).
//!
//! Dump ([`check_root`]): such a root must be a tmpfs crust mounts afresh
//! (from its archive, `tmpfs-dev-N.tar.gz.img`, written as for any tmpfs
//! of the tree) on a device the root's namespace lacks, or a bind of a part
//! of a mount of the root's namespace. None of the root's mounts is in the
//! namespace any more: its other mounts must be its own (filesystems
//! mounted afresh, binds of parts of its mounts).
//!
//! Restore ([`NewRoot`]): the namespace starts, like any other of the tree,
//! as a copy of the root's that its first process unshared; the crust
//! thread that joined it makes it private, makes the new root detached
//! (fsopen/fsmount for a tmpfs, open_tree clone of the source directory
//! for a bind), attaches it over `/`, enters it and calls
//! `pivot_root(".", ".")`, then detaches the old root with everything
//! under it. pivot_root moves the root and working directory of every task
//! that had the old root (the stopped first process) to the new one; the
//! namespace's own mounts are made after, then the root's flags (a
//! read-only superblock last, once the archive and the mountpoints are
//! in).

use super::info::{fstype_name, ms, MountLine, FS_TMPFS};
use super::restore::{bad, cpath};
use super::{refuse, tmpfs, under};
use crate::{Error, ErrorKind};
use crust_images::proto::mnt::MntEntry;
use crust_sys::mount::{self as sysmount, MountCall};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Whether a namespace whose root mount is `mine` is pivoted: its root is
/// neither a copy of the root's namespace's root (same mountpoint,
/// device and root) nor the same part of the same device.
pub(super) fn pivoted(mine: &MountLine, root: &[MountLine]) -> bool {
    let copy = root
        .iter()
        .any(|r| r.mountpoint == "/" && r.dev == mine.dev && r.root == mine.root);
    !copy
}

/// Check that the root `mine` of process `pid`'s pivoted namespace can be
/// made again (see the module's doc).
pub(super) fn check_root(pid: i32, mine: &MountLine, root: &[MountLine]) -> Result<(), Error> {
    if mine.deleted {
        return Err(refuse(
            pid,
            mine,
            "is the root of a mount namespace of the tree and its root directory was deleted",
        ));
    }
    let fresh =
        mine.fsname == "tmpfs" && mine.root == "/" && !root.iter().any(|r| r.dev == mine.dev);
    let bind = root
        .iter()
        .any(|r| r.dev == mine.dev && under(&mine.root, &r.root));
    if fresh || bind {
        return Ok(());
    }
    Err(refuse(
        pid,
        mine,
        "is the root of a mount namespace of the tree (pivot_root) but neither a tmpfs of its own nor a bind of a part of a mount of the tree root's namespace",
    ))
}

/// The root of a pivoted namespace, planned at load.
#[derive(Debug)]
pub(crate) enum NewRoot {
    /// A new tmpfs, filled from its archive.
    Fresh { e: MntEntry, tar: Option<PathBuf> },
    /// A bind of `src`, a path of the root's namespace (seen in its copy).
    Bind { e: MntEntry, src: PathBuf },
}

/// Plan the root `mine` of namespace `id` against the mounts of the
/// tree root's namespace (`base`); `dir`: the images directory.
pub(super) fn plan(
    dir: &Path,
    id: u32,
    mine: &MntEntry,
    base: &[&MntEntry],
) -> Result<NewRoot, Error> {
    let of = base
        .iter()
        .filter(|b| b.root_dev == mine.root_dev && under(&mine.root, &b.root))
        .max_by_key(|b| b.root.len());
    if let Some(b) = of {
        let rel = mine
            .root
            .strip_prefix(b.root.as_str())
            .unwrap_or("")
            .trim_start_matches('/');
        return Ok(NewRoot::Bind {
            e: mine.clone(),
            src: crate::util::view::join(Path::new(&b.mountpoint), Path::new(rel)),
        });
    }
    if mine.fstype != FS_TMPFS || mine.root != "/" {
        return Err(bad(
            dir,
            id,
            format!(
                "its root (fs type {}, device {}, root {}) is neither a tmpfs of its own nor a bind of a part of a mount of the tree root's namespace",
                mine.fstype, mine.root_dev, mine.root
            ),
        ));
    }
    let tar = tmpfs::image(dir, mine.root_dev, mine.mnt_id).ok_or_else(|| {
        bad(
            dir,
            id,
            format!(
                "its root, a tmpfs, has no tmpfs-dev-{}.tar.gz.img",
                mine.root_dev
            ),
        )
    })?;
    Ok(NewRoot::Fresh {
        e: mine.clone(),
        tar: Some(tar),
    })
}

fn sys(pid: i32, what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys {
        pid,
        op: what,
        source,
    }
}

/// A filesystem's options as fsconfig(2) takes them.
fn fs_options(options: &str) -> Vec<(CString, Option<CString>)> {
    options
        .split(',')
        .filter(|o| !o.is_empty())
        .filter_map(|o| match o.split_once('=') {
            Some((k, v)) => Some((CString::new(k).ok()?, Some(CString::new(v).ok()?))),
            None => Some((CString::new(o).ok()?, None)),
        })
        .collect()
}

impl NewRoot {
    fn entry(&self) -> &MntEntry {
        match self {
            NewRoot::Fresh { e, .. } | NewRoot::Bind { e, .. } => e,
        }
    }

    /// The new root, detached.
    fn detached(&self, pid: i32) -> Result<OwnedFd, Error> {
        match self {
            NewRoot::Fresh { e, .. } => {
                let fstype =
                    CString::new(fstype_name(e.fstype).unwrap_or("tmpfs")).unwrap_or_default();
                let source = CString::new(e.source.as_bytes()).unwrap_or_default();
                let opts = fs_options(&e.options);
                let refs: Vec<(&std::ffi::CStr, Option<&std::ffi::CStr>)> = opts
                    .iter()
                    .map(|(k, v)| (k.as_c_str(), v.as_deref()))
                    .collect();
                crust_sys::fsmount::new_detached(&fstype, &source, &refs).map_err(sys(
                    pid,
                    format!(
                        "make the tmpfs root of its mount namespace ({} {})",
                        e.source, e.options
                    ),
                ))
            }
            NewRoot::Bind { src, .. } => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(src)
                    .map_err(|source| {
                        Error::refused(
                            ErrorKind::FileMissing,
                            format!(
                                "process {pid}'s mount namespace: the directory its root is a bind of, {}, cannot be opened: {source}",
                                src.display()
                            ),
                        )
                    })?;
                sysmount::clone_one_mount(f.as_fd())
                    .map_err(sys(pid, format!("clone the mount of {}", src.display())))
            }
        }
    }

    /// In a crust thread that joined the copy (made private) of the root's
    /// namespace the first process `pid` unshared: make the new root, pivot
    /// into it and detach the old one. `imgdir`: the images directory.
    pub(super) fn enter(&self, pid: i32, imgdir: &std::fs::File) -> Result<(), Error> {
        let fd = self.detached(pid)?;
        let slash = cpath(Path::new("/"))?;
        crust_sys::mountfd::move_mount_to(fd.as_fd(), &slash)
            .map_err(sys(pid, "attach its new root over /".into()))?;
        crust_sys::fs::fchdir(fd.as_fd()).map_err(sys(pid, "enter its new root".into()))?;
        let dot = cpath(Path::new("."))?;
        sysmount::pivot_root(&dot, &dot)
            .map_err(sys(pid, "pivot_root into its new root".into()))?;
        sysmount::umount2(&dot, libc::MNT_DETACH)
            .map_err(sys(pid, "detach the old root".into()))?;
        std::env::set_current_dir("/").map_err(sys(pid, "chdir / in its new root".into()))?;
        if let NewRoot::Fresh { tar: Some(t), .. } = self {
            // The archive by its name from the images directory (crust's
            // namespace), the working one.
            crust_sys::fs::fchdir(imgdir.as_fd())
                .map_err(sys(pid, "fchdir to the images directory".into()))?;
            let name = t.file_name().map(Path::new).unwrap_or(t);
            tmpfs::restore(name, Path::new("/"))?;
            std::env::set_current_dir("/").map_err(sys(pid, "chdir / in its new root".into()))?;
        }
        Ok(())
    }

    /// Once its mounts are made: the root's superblock made read-only if
    /// it was, then its mount flags.
    pub(super) fn finish(&self, pid: i32) -> Result<(), Error> {
        let e = self.entry();
        let slash = cpath(Path::new("/"))?;
        let call = |flags: u32| MountCall {
            source: None,
            target: &slash,
            fstype: None,
            flags: u64::from(flags),
            data: None,
        };
        let sb = e.sb_flags.unwrap_or(0);
        if matches!(self, NewRoot::Fresh { .. }) && sb & ms::RDONLY != 0 {
            let keep = sb & (ms::SYNCHRONOUS | ms::DIRSYNC | ms::MANDLOCK);
            sysmount::mount(&call(ms::REMOUNT | ms::RDONLY | keep))
                .map_err(sys(pid, "remount its root's superblock read-only".into()))?;
        }
        let flags = e.flags & ms::MNT_MASK;
        sysmount::mount(&call(ms::REMOUNT | ms::BIND | flags))
            .map_err(sys(pid, format!("set its root's flags {flags:#x}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u32, mp: &str, fs: &str, root: &str, dev: u32) -> MountLine {
        MountLine {
            mnt_id: id,
            parent: 1,
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
    fn roots_of_pivoted_namespaces() {
        let root = vec![
            line(10, "/", "ext4", "/srv", 8),
            line(11, "/t", "tmpfs", "/", 21),
        ];
        // A copy of the root's root is not pivoted.
        assert!(!pivoted(&line(30, "/", "ext4", "/srv", 8), &root));
        // A tmpfs of its own, a bind of a directory of the root's: taken.
        let own = line(31, "/", "tmpfs", "/", 40);
        assert!(pivoted(&own, &root));
        check_root(5, &own, &root).unwrap();
        check_root(5, &line(32, "/", "ext4", "/srv/c1", 8), &root).unwrap();
        // A tmpfs the root's namespace has too, but not bound from it: a
        // part of it is a bind (taken), the whole of another device not.
        check_root(5, &line(33, "/", "tmpfs", "/sub", 21), &root).unwrap();
        let e = check_root(5, &line(34, "/", "xfs", "/", 50), &root)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mount 34 at /") && e.contains("pivot_root"),
            "{e}"
        );
        let mut gone = line(35, "/", "tmpfs", "/", 41);
        gone.deleted = true;
        assert!(check_root(5, &gone, &root).is_err());
    }

    #[test]
    fn options_for_fsconfig() {
        let o = fs_options("size=64k,mode=755,inode64");
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].0.to_str().unwrap(), "size");
        assert_eq!(o[0].1.as_deref().and_then(|v| v.to_str().ok()), Some("64k"));
        assert!(o[2].1.is_none());
        assert!(fs_options("").is_empty());
    }
}
