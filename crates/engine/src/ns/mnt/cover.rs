//! Mounts other mounts cover (overmounted): a tmpfs whose mountpoint
//! another mount hides is still archived ([`clone_mount`]), but a file
//! the tree holds open on a hidden mount is refused, as
//! CRIU does (`crate::util::overmount`): its path would reopen another
//! file at restore.

use super::info::{self, MountLine};
use super::refuse;
use crate::util::sys_err;
use crate::Error;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::util::overmount::mnt_id_of;

/// The mounts, in a copy of a mount namespace (`copy`, its mountinfo),
/// from its root down to the copy of mount `id` of the original (`orig`):
/// each the one with the same mountpoint, device and root under the copy
/// of its parent.
fn copy_chain<'a>(
    orig: &[MountLine],
    copy: &'a [MountLine],
    id: u32,
) -> Option<Vec<&'a MountLine>> {
    let mut chain = Vec::new();
    let mut at = orig.iter().find(|m| m.mnt_id == id)?;
    chain.push(at);
    while let Some(p) = orig.iter().find(|m| m.mnt_id == at.parent) {
        if chain.len() > orig.len() {
            return None;
        }
        at = p;
        chain.push(at);
    }
    let same = |a: &MountLine, b: &MountLine| {
        a.mountpoint == b.mountpoint && a.dev == b.dev && a.root == b.root
    };
    let ids: std::collections::BTreeSet<u32> = copy.iter().map(|c| c.mnt_id).collect();
    let mut out: Vec<&MountLine> = Vec::with_capacity(chain.len());
    for o in chain.iter().rev() {
        let parent = out.last().map(|p| p.mnt_id);
        let c = copy.iter().find(|c| {
            same(c, o)
                && match parent {
                    None => !ids.contains(&c.parent),
                    Some(p) => c.parent == p,
                }
        })?;
        out.push(c);
    }
    Some(out)
}

/// `/`, then each longer prefix of the absolute path `p`, then `p`.
fn prefixes(p: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut cur = String::new();
    for c in p.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(c);
        out.push(cur.clone());
    }
    out
}

/// A detached copy of the one mount `m` of process `pid`'s namespace
/// (`all`: its mountinfo). When other mounts cover it, they are detached
/// first in a private copy of the namespace made by the working thread
/// (gone with it): the tree's own mounts are not touched.
pub(crate) fn clone_mount(pid: i32, m: &MountLine, all: &[MountLine]) -> Result<OwnedFd, Error> {
    let path = format!("/proc/{pid}/root{}", m.mountpoint);
    let visible = mnt_id_of(&path) == Some(u64::from(m.mnt_id));
    let proc_dir = std::fs::File::open("/proc").map_err(sys_err(pid, "open /proc"))?;
    let mp = CString::new(m.mountpoint.as_bytes())
        .map_err(|_| refuse(pid, m, "has a mountpoint with a NUL"))?;
    let owner = if visible { None } else { foreign_owner(pid)? };
    crate::ns::in_ns(pid, &[crate::ns::ids::NsKind::Mnt], || {
        if !visible {
            join_copy(pid, owner.as_ref().map(|o| o.as_fd()), &proc_dir)?;
            uncover(pid, m, all, &proc_dir, &mp)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&m.mountpoint)
            .map_err(sys_err(pid, format!("open the mount at {}", m.mountpoint)))?;
        let id = crust_sys::mountfd::mnt_id(f.as_fd())
            .map_err(sys_err(pid, format!("statx {}", m.mountpoint)))?;
        if !visible || id == u64::from(m.mnt_id) {
            crust_sys::mount::clone_one_mount(f.as_fd()).map_err(sys_err(
                pid,
                format!("open_tree (clone) of the mount at {}", m.mountpoint),
            ))
        } else {
            Err(refuse(pid, m, "changed while crust read it"))
        }
    })
}

/// The user namespace that owns process `pid`'s mount namespace, when it
/// is not crust's (the tree has a user namespace of its own): a copy of
/// the mount namespace must be made from inside it, or the kernel locks
/// every mount of the copy (MNT_LOCKED) and none can be detached.
fn foreign_owner(pid: i32) -> Result<Option<OwnedFd>, Error> {
    use std::os::unix::fs::MetadataExt;
    let ns = crate::ns::open_ns(pid, crate::ns::ids::NsKind::Mnt)?;
    let owner = crust_sys::userns::owner(ns.as_fd())
        .map_err(sys_err(pid, "NS_GET_USERNS on its mount namespace"))?;
    let owner = std::fs::File::from(owner);
    let ino = owner
        .metadata()
        .map_err(sys_err(pid, "fstat of a user namespace"))?
        .ino();
    let mine = std::fs::metadata("/proc/self/ns/user")
        .map_err(sys_err(pid, "stat of crust's user namespace"))?
        .ino();
    Ok((ino != mine).then(|| OwnedFd::from(owner)))
}

/// Move the calling thread (in the tree's mount namespace) into a private
/// copy of it, made by a child that first joined `owner` (when given, the
/// user namespace owning the tree's mount namespace), so that the copy's
/// mounts are owned as the originals are and can be detached. The copy
/// lives as long as the thread.
fn join_copy(
    pid: i32,
    owner: Option<std::os::fd::BorrowedFd<'_>>,
    proc_dir: &std::fs::File,
) -> Result<(), Error> {
    let copy = crust_sys::ns::MntNsCopy::make(owner)
        .map_err(sys_err(pid, "make a private copy of its mount namespace"))?;
    let name = CString::new(format!("{}/ns/mnt", copy.pid()))
        .map_err(|_| Error::unsupported("a /proc path with a NUL".to_string()))?;
    let ns =
        crust_sys::mountfd::open_at(proc_dir.as_fd(), &name, libc::O_RDONLY).map_err(sys_err(
            pid,
            "open the mount namespace of the child holding the copy",
        ))?;
    crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNS).map_err(sys_err(
        pid,
        "setns into a private copy of its mount namespace",
    ))
}

/// In a private copy of the tree's mount namespace the calling thread is
/// in ([`join_copy`]), detach the mounts over `m` (at most as many as
/// there are mounts).
fn uncover(
    pid: i32,
    m: &MountLine,
    all: &[MountLine],
    proc_dir: &std::fs::File,
    mp: &CString,
) -> Result<(), Error> {
    let text = crust_sys::mountfd::read_at(proc_dir.as_fd(), c"thread-self/mountinfo")
        .map_err(sys_err(pid, "read the copy's mountinfo"))?;
    let copy: Vec<MountLine> = text.lines().filter_map(info::parse_line).collect();
    let chain = copy_chain(all, &copy, m.mnt_id).ok_or_else(|| {
        refuse(
            pid,
            m,
            "is covered and crust cannot find it in a copy of the namespace",
        )
    })?;
    // Along the path to `m`, each prefix must be on the deepest mount of
    // its chain there; what shows instead covers it and is detached.
    for _ in 0..=copy.len() {
        let mut cover = None;
        for p in prefixes(&m.mountpoint) {
            let want = chain
                .iter()
                .rev()
                .find(|c| super::under(&p, &c.mountpoint))
                .map(|c| u64::from(c.mnt_id));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&p)
                .map_err(sys_err(pid, format!("open {p} in a copy of the namespace")))?;
            let id = crust_sys::mountfd::mnt_id(f.as_fd())
                .map_err(sys_err(pid, format!("statx {p}")))?;
            if Some(id) != want {
                cover = Some(id);
                break;
            }
        }
        let Some(id) = cover else {
            return Ok(());
        };
        let top = copy
            .iter()
            .find(|c| u64::from(c.mnt_id) == id)
            .ok_or_else(|| refuse(pid, m, "is covered by a mount crust cannot find"))?;
        let at = CString::new(top.mountpoint.as_bytes()).unwrap_or_else(|_| mp.clone());
        crust_sys::mount::umount2(&at, libc::MNT_DETACH).map_err(sys_err(
            pid,
            format!(
                "detach the mount at {} over {} in a copy of the namespace",
                top.mountpoint, m.mountpoint
            ),
        ))?;
    }
    Err(refuse(
        pid,
        m,
        "stays covered after every mount over it was detached",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(id: u32, parent: u32, mp: &str, dev: u32) -> MountLine {
        info::parse_line(&format!("{id} {parent} 0:{dev} / {mp} rw - tmpfs x rw"))
            .unwrap_or_else(|| panic!("line {id}"))
    }

    #[test]
    fn a_stacked_mount_is_found_in_the_copy_by_its_parents() {
        // 3 is a bind of 2 on itself: same mountpoint, device and root.
        let orig = vec![l(1, 0, "/", 1), l(2, 1, "/a", 5), l(3, 2, "/a", 5)];
        let copy = vec![l(11, 9, "/", 1), l(13, 12, "/a", 5), l(12, 11, "/a", 5)];
        let last = |id| copy_chain(&orig, &copy, id).and_then(|c| c.last().map(|l| l.mnt_id));
        assert_eq!(last(2), Some(12));
        assert_eq!(last(3), Some(13));
        assert_eq!(last(4), None);
        assert_eq!(prefixes("/a/b"), vec!["/", "/a", "/a/b"]);
    }
}
