//! Regular files opened in another mount namespace of the tree than the
//! one of the process that holds them (a file opened before its holder
//! unshared its mount namespace: zdtm's mntns_open). The dump records a
//! file's mount (`mnt_id`, CRIU's field) for a tree in a mount namespace of
//! its own. At restore, a file held by a process outside the root's mount
//! namespace but on a mount of the root's (`mountpoints-ID.img` of the
//! root's `mnt_ns_id`) is opened by crust through the root's view and given
//! to the task ([`super::regshare`]), so it stays on the root's mount
//! rather than on the copy the holder's namespace has.
//!
//! A file several processes hold on a mount the root's namespace lacks (a
//! tmpfs one of the other namespaces mounted: zdtm mountpoints) is opened
//! by crust too, once that namespace exists: late, through the root
//! directory of one of its holders (`/proc/HOST/root/NAME`), see
//! [`in_other_ns`]. So is a file only processes of the root's namespace
//! hold on such a mount (opened there through a descriptor of a process
//! of the other namespace: zdtm inotify01), through the root directory of
//! a process of the namespace that has the mount.

use crate::files::kind::LoadCtx;
use crate::util::read_image;
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_images::proto::mnt::MntEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The files.img ids of such files.
pub(super) fn foreign_files(ctx: &LoadCtx<'_>) -> Result<HashSet<u32>, Error> {
    let mut out = HashSet::new();
    let Some(root_ns) = ctx
        .procs
        .first()
        .and_then(|p| p.ids)
        .and_then(|i| i.mnt_ns_id)
    else {
        return Ok(out);
    };
    let others: Vec<&[FdinfoEntry]> = ctx
        .procs
        .iter()
        .filter(|p| {
            p.ids
                .and_then(|i| i.mnt_ns_id)
                .is_some_and(|n| n != root_ns)
        })
        .filter_map(|p| p.fds)
        .collect();
    let img = ctx.dir.join(ImageType::Mnts.file_name(u64::from(root_ns)));
    if others.is_empty() || !img.exists() {
        return Ok(out);
    }
    let mounts: Vec<MntEntry> = read_image(ctx.dir, ImageType::Mnts, u64::from(root_ns))?;
    let root_ids: BTreeSet<i64> = mounts.iter().map(|m| i64::from(m.mnt_id)).collect();
    let held: BTreeSet<u32> = others
        .iter()
        .flat_map(|fds| fds.iter())
        .filter(|f| f.r#type == fd_types::REG)
        .map(|f| f.id)
        .collect();
    for f in ctx.files.entries()? {
        let Some(r) = f.reg.as_ref() else { continue };
        if held.contains(&f.id) && r.mnt_id.is_some_and(|m| root_ids.contains(&i64::from(m))) {
            out.insert(f.id);
        }
    }
    Ok(out)
}

/// Files on a mount the root's namespace lacks (their `mnt_id` is not in
/// the root's `mountpoints-ID.img`), by files.img id: the pid (in the
/// images) of a process that holds it from another mount namespace.
pub(super) fn in_other_ns(ctx: &LoadCtx<'_>) -> Result<HashMap<u32, i32>, Error> {
    let mut out = HashMap::new();
    let Some(root_ns) = ctx
        .procs
        .first()
        .and_then(|p| p.ids)
        .and_then(|i| i.mnt_ns_id)
    else {
        return Ok(out);
    };
    let img = ctx.dir.join(ImageType::Mnts.file_name(u64::from(root_ns)));
    if !img.exists() {
        return Ok(out);
    }
    // Each file held from another namespace: a holder and its namespace;
    // and the first process of each other namespace.
    let mut holder: HashMap<u32, (i32, u32)> = HashMap::new();
    let mut first: BTreeMap<u32, i32> = BTreeMap::new();
    let mut in_root: BTreeSet<u32> = BTreeSet::new();
    for p in &ctx.procs {
        let regs = p
            .fds
            .unwrap_or(&[])
            .iter()
            .filter(|f| f.r#type == fd_types::REG);
        let Some(ns) = p.ids.and_then(|i| i.mnt_ns_id).filter(|&n| n != root_ns) else {
            in_root.extend(regs.map(|f| f.id));
            continue;
        };
        first.entry(ns).or_insert(p.pid);
        for f in regs {
            holder.entry(f.id).or_insert((p.pid, ns));
        }
    }
    if first.is_empty() {
        return Ok(out);
    }
    let ids_of = |ns: u32| -> Result<BTreeSet<u32>, Error> {
        let mounts: Vec<MntEntry> = read_image(ctx.dir, ImageType::Mnts, u64::from(ns))?;
        Ok(mounts.iter().map(|m| m.mnt_id).collect())
    };
    let root_ids = ids_of(root_ns)?;
    let mut ns_ids: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for &ns in first.keys() {
        ns_ids.insert(ns, ids_of(ns)?);
    }
    for f in ctx.files.entries()? {
        let Some(r) = f.reg.as_ref() else { continue };
        let Some(Ok(mnt)) = r.mnt_id.map(u32::try_from) else {
            continue;
        };
        if root_ids.contains(&mnt) {
            continue;
        }
        match holder.get(&f.id) {
            // Only a mount that namespace has (a file held on a mount no
            // namespace of the tree has, e.g. one a pivoted namespace left
            // behind, is the root's business: `foreign_files`).
            Some(&(pid, ns)) if ns_ids.get(&ns).is_some_and(|ids| ids.contains(&mnt)) => {
                out.insert(f.id, pid);
            }
            Some(_) => {}
            // Held only in the root's namespace, on a mount of another
            // (a file a process of the root's opened through a child's
            // fd on its tmpfs: zdtm inotify01): opened through a process
            // of the namespace that has the mount.
            None if in_root.contains(&f.id) => {
                let host = ns_ids
                    .iter()
                    .find(|(_, ids)| ids.contains(&mnt))
                    .and_then(|(ns, _)| first.get(ns));
                if let Some(&pid) = host {
                    out.insert(f.id, pid);
                }
            }
            None => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- dump

/// `pid` and the processes under it (children of its threads, down).
pub(crate) fn tree_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        i += 1;
        if out.len() > 1 << 20 {
            break;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.filter_map(|e| e.ok()) {
            let Ok(s) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    out
}

/// Whether mount `mnt` is in the mount namespace of process `pid`.
fn has_mount(pid: i32, mnt: i32) -> bool {
    let id = mnt.to_string();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .is_ok_and(|t| t.lines().any(|l| l.split(' ').next() == Some(id.as_str())))
}

/// While it lives, the tree's paths are read through the root of a
/// process of another mount namespace; then through the tree root's again.
pub(crate) struct AwayView {
    root: i32,
    guard: Option<crate::util::view::ViewGuard>,
}

impl Drop for AwayView {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Some(g) = crate::util::view::for_dump(self.root) {
            std::mem::forget(g);
        }
    }
}

/// At dump, for an fd of process `pid` (in the tree root's mount
/// namespace) on mount `mnt` that namespace lacks (a file opened through a
/// descriptor of a process of another namespace: zdtm inotify01): the view
/// through the root of a process of the tree whose namespace has the
/// mount, so the file's path is found there.
pub(crate) fn away_view(pid: i32, mnt: i32) -> Option<AwayView> {
    let root = crate::util::view::ns_pid()?;
    let ns = super::inotify::mnt_ns_ino;
    if mnt <= 0 || ns(pid) != ns(root) || has_mount(pid, mnt) {
        return None;
    }
    let host = tree_of(root)
        .into_iter()
        .skip(1)
        .find(|&p| ns(p) != ns(root) && has_mount(p, mnt))?;
    log::debug!("{pid}: mount {mnt} is seen through process {host}");
    let base = std::path::PathBuf::from(format!("/proc/{host}/root"));
    let guard = crate::util::view::set(std::sync::Arc::new(move |p: &std::path::Path| {
        Some(crate::util::view::join(&base, p))
    }));
    Some(AwayView {
        root,
        guard: Some(guard),
    })
}
