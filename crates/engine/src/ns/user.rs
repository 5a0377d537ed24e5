//! The user namespace: its uid and gid maps (`userns-ID.img`, one
//! `UsernsEntry`, as CRIU 4.2 writes it: extents `first lower_first
//! count`, the lower ids as crust's own user namespace sees them).
//!
//! The images record ids as the tree's user namespace sees them: the
//! maps are put in use for the dump or restore ([`crate::util::idmap`]
//! turns the ids).
//!
//! Restore: the root is cloned with CLONE_NEWUSER together with its other
//! new namespaces (so the user namespace owns them, as it did), crust
//! writes the maps while the root is stopped ([`UserNs::prepare`], the
//! first phase), then the root takes the namespace's root ids
//! ([`UserNs::settle_root`]), so that what it creates before its own
//! credentials are set has owners the namespace can name.
//!
//! CRIU 4.2's image has no field for `/proc/PID/setgroups`: a restored
//! namespace allows setgroups (the kernel's default), so a dump refuses a
//! namespace that denies it rather than restore it more permissive.

use super::ids::{NsIds, NsKind};
use crate::task::remote::Remote;
use crate::util::idmap::{
    active, host_gid, host_uid, in_use, to_host_uid, Active, IdMap, UserMaps, INVALID,
};
use crate::util::{read_one, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::userns::UsernsEntry;
use std::path::Path;

/// In a crust thread that joined a namespace of kind `kind` (of the
/// tree's root `pid`), and ends after its work: when the tree's user
/// namespace owns it, take the namespace root's uid as the thread's
/// effective uid, keeping crust's capabilities. The kernel lets only that
/// uid write some sysctls of such a namespace (the IPC ones: kernel/sem,
/// kernel/msgmax, fs/mqueue/...). Nothing to do when crust's own user
/// namespace owns it, or when the maps have no root.
pub(crate) fn thread_act_as_ns_root(pid: i32, kind: NsKind) -> Result<(), Error> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let root = match to_host_uid(0) {
        INVALID => return Ok(()),
        _ if !in_use() => return Ok(()),
        root => root,
    };
    let path = kind.proc_path("thread-self");
    let ns = std::fs::File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    let owner = crust_sys::userns::owner(ns.as_fd())
        .map_err(sys_err(pid, format!("NS_GET_USERNS on {path}")))?;
    let owner = std::fs::File::from(owner)
        .metadata()
        .map_err(sys_err(pid, "fstat of a user namespace"))?;
    let mine = std::fs::metadata(NsKind::User.proc_path("self"))
        .map_err(sys_err(pid, "stat of crust's user namespace"))?;
    if owner.ino() == mine.ino() {
        return Ok(());
    }
    crust_sys::userns::thread_set_euid_keep_caps(root).map_err(sys_err(
        pid,
        format!("take uid {root} (root of the tree's user namespace) in a crust thread"),
    ))
}

/// In a crust thread that joined the tree's IPC namespace and ends after
/// its work, about to make an object whose creator had `cuid`/`cgid` (as
/// the tree's namespace sees them): take them (outside) as the thread's
/// effective ids, keeping crust's capabilities, so that the object's
/// creator comes back; ids the namespace had no name for become crust's
/// real ones (none it names either). Nothing to do without a user
/// namespace of the tree's.
pub(crate) fn thread_act_as_creator(pid: i32, cuid: u32, cgid: u32) -> Result<(), Error> {
    if !in_use() {
        return Ok(());
    }
    let (uid, gid) = (host_uid(cuid), host_gid(cgid));
    crust_sys::userns::thread_set_egid(gid)
        .map_err(sys_err(pid, format!("take gid {gid} in a crust thread")))?;
    crust_sys::userns::thread_set_euid_keep_caps(uid)
        .map_err(sys_err(pid, format!("take uid {uid} in a crust thread")))
}

/// Start the dump of a tree whose root `root_pid` has the namespace ids
/// `root`, `tasks` tasks in all: when its user namespace is its own, read
/// its maps, check what crust can restore of it, and put the maps in use.
pub(crate) fn enter_dump(
    root_pid: i32,
    root: &NsIds,
    tasks: usize,
) -> Result<Option<Active>, Error> {
    if !root.own(NsKind::User) {
        return Ok(None);
    }
    if !root.own(NsKind::Pid) && tasks > 1 {
        return Err(Error::unsupported(format!(
            "process {root_pid} is in a user namespace of its own but in crust's pid namespace: the restored tasks could not be given their pids from inside the user namespace; give the tree a pid namespace of its own too (as containers have)"
        )));
    }
    let path = format!("/proc/{root_pid}/setgroups");
    let sg = std::fs::read_to_string(&path).map_err(sys_err(root_pid, format!("read {path}")))?;
    if sg.trim() == "deny" {
        return Err(Error::unsupported(format!(
            "the user namespace of process {root_pid} denies setgroups ({path}); CRIU 4.2's images have no field for it and a restored namespace would allow it; run the tree with setgroups allowed (e.g. unshare --setgroups allow)"
        )));
    }
    check_owned(root_pid, root)?;
    let maps = UserMaps::read(root_pid)?;
    for (what, m) in [("uid", &maps.uid), ("gid", &maps.gid)] {
        m.check().map_err(|why| {
            Error::unsupported(format!(
                "the {what} map of process {root_pid}'s user namespace cannot be written again: {why}"
            ))
        })?;
    }
    log::debug!("user namespace of {root_pid}: {maps:?}");
    Ok(Some(Active::set(maps)))
}

/// Every other namespace of the tree's own must be owned by its user
/// namespace: a restore makes them inside it (CRIU checks the same).
fn check_owned(root_pid: i32, root: &NsIds) -> Result<(), Error> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let user = super::open_ns(root_pid, NsKind::User)?;
    let user_ino = user
        .metadata()
        .map_err(sys_err(root_pid, "fstat of its user namespace"))?
        .ino();
    for kind in root.own_kinds().filter(|k| *k != NsKind::User) {
        let ns = super::open_ns(root_pid, kind)?;
        let owner = crust_sys::userns::owner(ns.as_fd()).map_err(sys_err(
            root_pid,
            format!("NS_GET_USERNS on its {kind} namespace"),
        ))?;
        let ino = std::fs::File::from(owner)
            .metadata()
            .map_err(sys_err(root_pid, "fstat of a user namespace"))?
            .ino();
        if ino != user_ino {
            return Err(Error::unsupported(format!(
                "the {kind} namespace of process {root_pid} is not owned by its user namespace; a restore makes every namespace of the tree inside its user namespace"
            )));
        }
    }
    Ok(())
}

/// Write `userns-ID.img` with the maps in use.
pub(crate) fn dump(dir: &Path, root_pid: i32, id: u32) -> Result<(), Error> {
    let maps = match active() {
        Some(m) => (*m).clone(),
        None => UserMaps::read(root_pid)?,
    };
    let e = UsernsEntry {
        uid_map: maps.uid.to_image(),
        gid_map: maps.gid.to_image(),
        ..Default::default()
    };
    write_image(dir, ImageType::Userns, u64::from(id), &[e])
}

/// A user namespace to make: its maps, checked.
#[derive(Debug)]
pub(crate) struct UserNs {
    id: u32,
    maps: UserMaps,
    /// The maps in use for the restore.
    _active: Active,
}

impl UserNs {
    /// Read `userns-ID.img` and check its maps as the kernel would.
    pub(crate) fn load(dir: &Path, id: u32) -> Result<UserNs, Error> {
        let e: UsernsEntry = read_one(dir, ImageType::Userns, u64::from(id))?;
        let maps = UserMaps {
            uid: IdMap::from_image(&e.uid_map),
            gid: IdMap::from_image(&e.gid_map),
        };
        for (what, m) in [("uid", &maps.uid), ("gid", &maps.gid)] {
            m.check().map_err(|why| Error::BadImage {
                dir: dir.to_path_buf(),
                why: format!("userns-{id}.img: its {what} map cannot be written: {why}"),
            })?;
        }
        Ok(UserNs {
            id,
            _active: Active::set(maps.clone()),
            maps,
        })
    }

    /// Write the maps of the new user namespace of the root, host pid
    /// `pid` (stopped): uid_map, then gid_map, each in one write.
    pub(crate) fn prepare(&self, pid: i32) -> Result<(), Error> {
        for (name, m) in [("uid_map", &self.maps.uid), ("gid_map", &self.maps.gid)] {
            let path = format!("/proc/{pid}/{name}");
            let text = m.render();
            log::debug!("user namespace {}: {name} {text:?}", self.id);
            std::fs::write(&path, text.as_bytes()).map_err(sys_err(
                pid,
                format!(
                    "write the {name} {:?} of the tree's user namespace (userns-{}.img) to {path}",
                    text.trim_end(),
                    self.id
                ),
            ))?;
        }
        Ok(())
    }

    /// Give the root (stopped, `r` on it) ids its namespace can name, as
    /// CRIU does: root's if the maps have 0, else the first of each map;
    /// no supplementary groups. Its capabilities in the namespace stay
    /// whole (neither the old ids nor the new are the namespace's root, or
    /// the new ones are). Its recorded credentials come last, as always.
    pub(crate) fn settle_root(&self, r: &mut Remote<'_>) -> Result<(), Error> {
        let pick = |m: &IdMap| {
            m.outside(0)
                .map(|_| 0)
                .or_else(|| m.0.first().map(|e| e.first))
        };
        let (Some(uid), Some(gid)) = (pick(&self.maps.uid), pick(&self.maps.gid)) else {
            // An empty map names no id: the tasks keep crust's.
            return Ok(());
        };
        let (uid, gid) = (u64::from(uid), u64::from(gid));
        r.call(
            "setresgid in the new user namespace",
            libc::SYS_setresgid,
            [gid, gid, gid, 0, 0, 0],
        )?;
        r.call(
            "setgroups(0) in the new user namespace",
            libc::SYS_setgroups,
            [0; 6],
        )?;
        r.call(
            "setresuid in the new user namespace",
            libc::SYS_setresuid,
            [uid, uid, uid, 0, 0, 0],
        )?;
        Ok(())
    }
}

/// Run `f` in a new crust thread (in the calling thread's namespaces)
/// whose effective gid is the tree's user namespace's root gid, when the
/// tree has a user namespace of its own; else in the calling thread. What
/// the kernel allows by the creator's group inside that namespace (an
/// ICMP echo socket: `net/ipv4/ping_group_range`) is then allowed as it
/// was to the tree, whose tasks make their files as that root.
pub(crate) fn as_ns_root_group<T: Send>(
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    if !in_use() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::userns::thread_set_egid(host_gid(0))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a crust thread panicked")))
    })
}
