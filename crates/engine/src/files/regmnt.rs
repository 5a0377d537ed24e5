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
//! [`in_other_ns`].

use crate::files::kind::LoadCtx;
use crate::util::read_image;
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_images::proto::mnt::MntEntry;
use std::collections::{BTreeSet, HashMap, HashSet};

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
    // Each file held from another namespace: a holder and its namespace.
    let mut holder: HashMap<u32, (i32, u32)> = HashMap::new();
    for p in &ctx.procs {
        let Some(ns) = p.ids.and_then(|i| i.mnt_ns_id).filter(|&n| n != root_ns) else {
            continue;
        };
        for f in p
            .fds
            .unwrap_or(&[])
            .iter()
            .filter(|f| f.r#type == fd_types::REG)
        {
            holder.entry(f.id).or_insert((p.pid, ns));
        }
    }
    if holder.is_empty() {
        return Ok(out);
    }
    let ids_of = |ns: u32| -> Result<BTreeSet<u32>, Error> {
        let mounts: Vec<MntEntry> = read_image(ctx.dir, ImageType::Mnts, u64::from(ns))?;
        Ok(mounts.iter().map(|m| m.mnt_id).collect())
    };
    let root_ids = ids_of(root_ns)?;
    let mut ns_ids: HashMap<u32, BTreeSet<u32>> = HashMap::new();
    for f in ctx.files.entries()? {
        let Some(r) = f.reg.as_ref() else { continue };
        let (Some(mnt), Some(&(pid, ns))) = (r.mnt_id, holder.get(&f.id)) else {
            continue;
        };
        let Ok(mnt) = u32::try_from(mnt) else {
            continue;
        };
        if root_ids.contains(&mnt) {
            continue;
        }
        // Only a mount that namespace has (a file held on a mount no
        // namespace of the tree has, e.g. one a pivoted namespace left
        // behind, is the root's business: `foreign_files`).
        if let std::collections::hash_map::Entry::Vacant(e) = ns_ids.entry(ns) {
            e.insert(ids_of(ns)?);
        }
        if ns_ids.get(&ns).is_some_and(|ids| ids.contains(&mnt)) {
            out.insert(f.id, pid);
        }
    }
    Ok(out)
}
