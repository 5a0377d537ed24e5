//! Ghosts held on mounts of several mount namespaces of the tree (zdtm
//! mntns_link_ghost: one deleted file open through a mount of the root's
//! namespace and through a bind of a part of the same file system in
//! another namespace).
//!
//! A ghost REG entry records the mount it was open on (`mnt_id`, CRIU's
//! field, the ids of the `mountpoints-N.img` entries). The ghost is made
//! once, at the first holder's path; a holder on a mount of another
//! namespace of the tree (made before the files, see `ns::mnt::multi`) is
//! opened at its own path in that namespace
//! ([`crate::util::view::sub_root`]), so its fd is on its own mount. When
//! that path is another name of the file system than the ghost's, the
//! ghost is linked there for the moment, through a mount of the root's
//! namespace that holds both names (a link cannot cross mounts), and the
//! link removed once opened.

use crate::Error;
use crust_images::proto::mnt::MntEntry;
use crust_images::proto::regfile::RegFileEntry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The mounts of every mount namespace of the image set, by mount id.
#[derive(Debug, Default)]
pub(super) struct TreeMounts {
    /// mnt_id -> (namespace id, entry).
    by_id: HashMap<u32, (u32, MntEntry)>,
}

impl TreeMounts {
    /// Every `mountpoints-N.img` of `dir` (none: an empty table).
    pub(super) fn load(dir: &Path) -> Result<TreeMounts, Error> {
        let mut out = TreeMounts::default();
        for (ns, entries) in crate::util::mount_tables(dir)? {
            for e in entries {
                out.by_id.insert(e.mnt_id, (ns, e));
            }
        }
        Ok(out)
    }

    /// The mount `reg` was open on, and whether it is in a namespace other
    /// than the root's (one with a root of its own registered).
    fn mount_of(&self, reg: &RegFileEntry) -> Option<(&MntEntry, Option<PathBuf>)> {
        let m = u32::try_from(reg.mnt_id?).ok()?;
        let (ns, e) = self.by_id.get(&m)?;
        Some((e, crate::util::view::sub_root(*ns)))
    }

    /// Where crust opens `reg`: in its other namespace when it was open on
    /// a mount of one, else `None` (the root's view).
    pub(super) fn away_path(&self, reg: &RegFileEntry) -> Option<PathBuf> {
        let (_, base) = self.mount_of(reg)?;
        Some(crate::util::view::join(&base?, Path::new(&reg.name)))
    }

    /// The path of `reg`'s file from its file system's root (its mount's
    /// root + its path under the mountpoint), and that file system.
    fn fs_path(&self, reg: &RegFileEntry) -> Option<(u32, String)> {
        let (m, _) = self.mount_of(reg)?;
        let rest = reg.name.strip_prefix(m.mountpoint.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let root = m.root.trim_end_matches('/');
        Some((m.root_dev, format!("{root}{rest}")))
    }

    /// For a holder `reg` of a ghost first made for `first`, away in
    /// another namespace under another name of the file system: the two
    /// names of the file through one mount of the root's namespace
    /// (`seen` turns a tree path into crust's): link from the first to
    /// the second.
    pub(super) fn link_for(
        &self,
        first: &RegFileEntry,
        reg: &RegFileEntry,
        seen: impl Fn(&Path) -> PathBuf,
    ) -> Option<(PathBuf, PathBuf)> {
        let (dev, a) = self.fs_path(first)?;
        let (dev2, b) = self.fs_path(reg)?;
        if dev != dev2 || a == b {
            return None;
        }
        let holds = |root: &str, p: &str| {
            let root = root.trim_end_matches('/');
            p.strip_prefix(root)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        };
        let (_, w) = self
            .by_id
            .values()
            .filter(|(ns, m)| {
                crate::util::view::sub_root(*ns).is_none()
                    && m.root_dev == dev
                    && holds(&m.root, &a)
                    && holds(&m.root, &b)
            })
            .min_by_key(|(_, m)| m.mountpoint.len())?;
        let at = |p: &str| {
            let rest = p.strip_prefix(w.root.trim_end_matches('/')).unwrap_or("");
            seen(Path::new(&format!(
                "{}{rest}",
                w.mountpoint.trim_end_matches('/')
            )))
        };
        Some((at(&a), at(&b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnt(id: u32, mp: &str, root: &str, dev: u32) -> MntEntry {
        MntEntry {
            mnt_id: id,
            mountpoint: mp.into(),
            root: root.into(),
            root_dev: dev,
            ..Default::default()
        }
    }

    fn reg(name: &str, mnt: i32) -> RegFileEntry {
        RegFileEntry {
            name: name.into(),
            mnt_id: Some(mnt),
            ..Default::default()
        }
    }

    /// zdtm mntns_link_ghost: the root's /d/0 (a tmpfs, root /) and /d/1
    /// (its /1); another namespace's /d/2 (its /2).
    #[test]
    fn a_ghost_is_linked_through_a_mount_holding_both_names() {
        let mut t = TreeMounts::default();
        for (ns, m) in [
            (1, mnt(10, "/", "/", 8)),
            (1, mnt(11, "/d/0", "/", 40)),
            (1, mnt(12, "/d/1", "/1", 40)),
            (2, mnt(20, "/d/2", "/2", 40)),
        ] {
            t.by_id.insert(m.mnt_id, (ns, m));
        }
        let (a, b) = (reg("/d/1/F", 12), reg("/d/2/F", 20));
        assert_eq!(t.fs_path(&a), Some((40, "/1/F".into())));
        assert_eq!(t.fs_path(&b), Some((40, "/2/F".into())));
        let seen = |p: &Path| Path::new("/proc/7/root").join(p.strip_prefix("/").unwrap_or(p));
        assert_eq!(
            t.link_for(&a, &b, seen),
            Some((
                PathBuf::from("/proc/7/root/d/0/1/F"),
                PathBuf::from("/proc/7/root/d/0/2/F")
            ))
        );
        // The same name of the file system: nothing to link.
        assert_eq!(t.link_for(&a, &reg("/d/1/F", 12), seen), None);
        // Not a mount of the image set: nothing known.
        assert_eq!(t.link_for(&a, &reg("/d/9/F", 99), seen), None);
    }
}
