//! Ids as the tree's user namespace sees them.
//!
//! The images record every uid and gid as the tree's user namespace sees
//! it (CRIU's rule: its parasite reads them from inside). crust reads
//! them from outside (`/proc`, fstat, IPC_STAT: its own namespace's ids),
//! so a dump turns them into the tree's ids ([`to_ns_uid`], ...), and a
//! restore turns back into crust's those it sets from outside (file
//! owners, System V permissions: [`to_host_uid`], ...). What the tasks
//! set themselves (credentials, file owners' uids) needs no turning. The
//! maps in use are held by an [`Active`] for the time of one dump or
//! restore (one per crust process, as CRIU's); without one, ids are kept
//! as they are. The user namespace itself is `ns::user`'s.

use crate::util::sys_err;
use crate::Error;
use crust_images::proto::creds::CredsEntry;
use crust_images::proto::userns::UidGidExtent;
use std::sync::{Arc, RwLock};

/// The kernel's limit of extents per map (UID_GID_MAP_MAX_EXTENTS).
const MAX_EXTENTS: usize = 340;
/// What CRIU records for an id the namespace cannot name (its INVALID_ID,
/// which chown and friends take as "leave it").
pub(crate) const INVALID: u32 = u32::MAX;

/// One line of a map: ids `first..first+count` inside are
/// `lower..lower+count` outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub first: u32,
    pub lower: u32,
    pub count: u32,
}

/// A uid or gid map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdMap(pub Vec<Extent>);

impl IdMap {
    /// Parse `/proc/PID/uid_map` text (lines of three numbers).
    pub(crate) fn parse(text: &str) -> Result<IdMap, String> {
        let mut v = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let n: Vec<u32> = line
                .split_whitespace()
                .map(|w| w.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("line {line:?}: {e}"))?;
            let [first, lower, count] = n[..] else {
                return Err(format!("line {line:?} is not three numbers"));
            };
            v.push(Extent {
                first,
                lower,
                count,
            });
        }
        Ok(IdMap(v))
    }

    pub(crate) fn from_image(v: &[UidGidExtent]) -> IdMap {
        IdMap(
            v.iter()
                .map(|e| Extent {
                    first: e.first,
                    lower: e.lower_first,
                    count: e.count,
                })
                .collect(),
        )
    }

    pub(crate) fn to_image(&self) -> Vec<UidGidExtent> {
        self.0
            .iter()
            .map(|e| UidGidExtent {
                first: e.first,
                lower_first: e.lower,
                count: e.count,
                ..Default::default()
            })
            .collect()
    }

    /// Why the kernel would refuse the map, if it would: empty extents,
    /// ranges past 2^32, extents overlapping inside or outside, too many.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.0.len() > MAX_EXTENTS {
            return Err(format!(
                "{} extents (the kernel takes at most {MAX_EXTENTS})",
                self.0.len()
            ));
        }
        let end = |a: u32, n: u32| u64::from(a) + u64::from(n);
        for (i, e) in self.0.iter().enumerate() {
            // (id 2^32-1 is no id: an extent ends before it.)
            let past = |a: u32| end(a, e.count) > u64::from(u32::MAX);
            if e.count == 0 || past(e.first) || past(e.lower) {
                return Err(format!(
                    "extent \"{} {} {}\" is empty or goes past 2^32-2",
                    e.first, e.lower, e.count
                ));
            }
            for o in self.0.iter().skip(i + 1) {
                let meet = |a: u32, b: u32| {
                    u64::from(a) < end(b, o.count) && u64::from(b) < end(a, e.count)
                };
                if meet(e.first, o.first) || meet(e.lower, o.lower) {
                    return Err(format!(
                        "extents \"{} {} {}\" and \"{} {} {}\" overlap",
                        e.first, e.lower, e.count, o.first, o.lower, o.count
                    ));
                }
            }
        }
        Ok(())
    }

    /// The text written to `/proc/PID/uid_map` (one write, every line).
    pub(crate) fn render(&self) -> String {
        self.0
            .iter()
            .map(|e| format!("{} {} {}\n", e.first, e.lower, e.count))
            .collect()
    }

    /// The id inside for `host`, the id outside.
    pub(crate) fn inside(&self, host: u32) -> Option<u32> {
        self.0.iter().find_map(|e| {
            let off = host.checked_sub(e.lower)?;
            (off < e.count).then(|| e.first + off)
        })
    }

    /// The id outside for `id`, the id inside.
    pub(crate) fn outside(&self, id: u32) -> Option<u32> {
        self.0.iter().find_map(|e| {
            let off = id.checked_sub(e.first)?;
            (off < e.count).then(|| e.lower + off)
        })
    }
}

/// The maps of a user namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UserMaps {
    pub uid: IdMap,
    pub gid: IdMap,
}

impl UserMaps {
    /// Read the maps of the user namespace process `pid` is in.
    pub(crate) fn read(pid: i32) -> Result<UserMaps, Error> {
        let one = |name: &str| -> Result<IdMap, Error> {
            let path = format!("/proc/{pid}/{name}");
            let text =
                std::fs::read_to_string(&path).map_err(sys_err(pid, format!("read {path}")))?;
            IdMap::parse(&text).map_err(|why| Error::Restore {
                pid,
                what: format!("{path} cannot be parsed: {why}"),
            })
        };
        Ok(UserMaps {
            uid: one("uid_map")?,
            gid: one("gid_map")?,
        })
    }
}

/// The maps in use by this crust process's dump or restore.
static ACTIVE: RwLock<Option<Arc<UserMaps>>> = RwLock::new(None);

/// The maps of the tree's user namespace, in use while this lives (the
/// ones in use before come back when it goes).
#[derive(Debug)]
pub(crate) struct Active {
    before: Option<Arc<UserMaps>>,
}

impl Active {
    pub(crate) fn set(maps: UserMaps) -> Active {
        let mut g = ACTIVE.write().unwrap_or_else(|p| p.into_inner());
        Active {
            before: g.replace(Arc::new(maps)),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut g = ACTIVE.write().unwrap_or_else(|p| p.into_inner());
        *g = self.before.take();
    }
}

pub(crate) fn active() -> Option<Arc<UserMaps>> {
    ACTIVE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Run `f` in a crust thread (ended after it) whose effective, hence file
/// system, uid and gid are those of the tree's user namespace's root as
/// crust sees them, keeping crust's capabilities, when the tree has a user
/// namespace of its own; else in the calling thread. The kernel refuses
/// (EOVERFLOW) to create a name (link, mknod, open O_CREAT) on a file
/// system its user namespace owns for a caller whose fsuid or fsgid that
/// namespace cannot map: crust's own root is such a caller.
pub(crate) fn as_ns_root<T: Send>(
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    if !in_use() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::userns::thread_set_egid(host_gid(0))?;
            crust_sys::userns::thread_set_euid_keep_caps(host_uid(0))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a crust thread panicked")))
    })
}

/// Whether the tree has a user namespace of its own (ids are turned).
pub(crate) fn in_use() -> bool {
    active().is_some()
}

fn turn(id: u32, f: impl FnOnce(&UserMaps, u32) -> Option<u32>) -> u32 {
    match active() {
        Some(m) => f(&m, id).unwrap_or(INVALID),
        None => id,
    }
}

/// A uid crust sees, as the tree's user namespace sees it ([`INVALID`]
/// when it cannot).
pub(crate) fn to_ns_uid(host: u32) -> u32 {
    turn(host, |m, id| m.uid.inside(id))
}

/// A gid crust sees, as the tree's user namespace sees it.
pub(crate) fn to_ns_gid(host: u32) -> u32 {
    turn(host, |m, id| m.gid.inside(id))
}

/// A uid of the images, as crust's namespace sees it ([`INVALID`] when
/// the tree's maps have no such id).
pub(crate) fn to_host_uid(id: u32) -> u32 {
    turn(id, |m, id| m.uid.outside(id))
}

/// A gid of the images, as crust's namespace sees it.
pub(crate) fn to_host_gid(id: u32) -> u32 {
    turn(id, |m, id| m.gid.outside(id))
}

/// A uid of the images for crust to set from outside: crust's own
/// (real) uid when the tree's namespace had no name for it (it
/// recorded [`INVALID`]; crust's is none the namespace names either,
/// unless crust shares it).
pub(crate) fn host_uid(id: u32) -> u32 {
    match to_host_uid(id) {
        INVALID => crust_sys::userns::real_ids().0,
        h => h,
    }
}

/// A gid of the images for crust to set from outside (see [`host_uid`]).
pub(crate) fn host_gid(id: u32) -> u32 {
    match to_host_gid(id) {
        INVALID => crust_sys::userns::real_ids().1,
        h => h,
    }
}

/// Turn the credentials of task `pid`, read from outside, into the ones
/// its user namespace sees. An id the namespace cannot name could not be
/// set again from inside: refused.
pub(crate) fn creds_to_ns(pid: i32, c: &mut CredsEntry) -> Result<(), Error> {
    match active() {
        Some(m) => creds_inside(&m, pid, c),
        None => Ok(()),
    }
}

fn creds_inside(m: &UserMaps, pid: i32, c: &mut CredsEntry) -> Result<(), Error> {
    let fail = |what: &str, id: u32| {
        Error::unsupported(format!(
            "task {pid}: its {what} {id} has no id in the tree's user namespace (not in its map); it could not be set again from inside"
        ))
    };
    for (name, v) in [
        ("uid", &mut c.uid),
        ("euid", &mut c.euid),
        ("suid", &mut c.suid),
        ("fsuid", &mut c.fsuid),
    ] {
        *v = m.uid.inside(*v).ok_or_else(|| fail(name, *v))?;
    }
    for (name, v) in [
        ("gid", &mut c.gid),
        ("egid", &mut c.egid),
        ("sgid", &mut c.sgid),
        ("fsgid", &mut c.fsgid),
    ] {
        *v = m.gid.inside(*v).ok_or_else(|| fail(name, *v))?;
    }
    for g in c.groups.iter_mut() {
        *g = m
            .gid
            .inside(*g)
            .ok_or_else(|| fail("supplementary group", *g))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> IdMap {
        IdMap::parse(text).unwrap()
    }

    #[test]
    fn parse_and_render() {
        let m = map("         0     100000      65536\n  70000 1000 1\n");
        assert_eq!(
            m.0,
            vec![
                Extent {
                    first: 0,
                    lower: 100000,
                    count: 65536
                },
                Extent {
                    first: 70000,
                    lower: 1000,
                    count: 1
                }
            ]
        );
        assert_eq!(m.render(), "0 100000 65536\n70000 1000 1\n");
        assert_eq!(map(""), IdMap::default());
        assert!(IdMap::parse("1 2\n").is_err());
        assert!(IdMap::parse("1 2 x\n").is_err());
    }

    #[test]
    fn turns_ids_both_ways() {
        // zdtm's uns flavor's uid map.
        let m = map("0 20000 20000\n100000 200000 50000\n");
        assert_eq!(m.inside(20000), Some(0));
        assert_eq!(m.inside(39999), Some(19999));
        assert_eq!(m.inside(40000), None);
        assert_eq!(m.inside(200001), Some(100001));
        assert_eq!(m.inside(0), None);
        assert_eq!(m.outside(0), Some(20000));
        assert_eq!(m.outside(100000), Some(200000));
        assert_eq!(m.outside(20000), None);
        assert_eq!(m.outside(u32::MAX), None);
        let whole = map("0 0 4294967295\n");
        assert_eq!(whole.inside(12345), Some(12345));
        assert_eq!(whole.inside(u32::MAX), None);
    }

    #[test]
    fn checks_what_the_kernel_refuses() {
        assert!(map("0 100000 65536\n70000 1000 1\n").check().is_ok());
        assert!(map("0 0 4294967295\n").check().is_ok());
        assert!(map("0 1 4294967295\n").check().is_err());
        let e = map("0 100000 10\n5 200000 10\n").check().unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        let e = map("0 100000 10\n50 100005 10\n").check().unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        assert!(map("0 100000 0\n").check().is_err());
        assert!(map("1 0 4294967295\n").check().is_err());
        let many: String = (0..341).map(|i| format!("{i} {} 1\n", 1000 + i)).collect();
        assert!(map(&many).check().is_err());
        let ok: String = (0..340).map(|i| format!("{i} {} 1\n", 1000 + i)).collect();
        assert!(map(&ok).check().is_ok());
    }

    #[test]
    fn creds_turned_or_refused() {
        let maps = UserMaps {
            uid: map("0 100000 1000\n"),
            gid: map("0 200000 1000\n"),
        };
        let mut c = CredsEntry {
            uid: 100000,
            euid: 100001,
            suid: 100000,
            fsuid: 100001,
            gid: 200000,
            egid: 200000,
            sgid: 200005,
            fsgid: 200000,
            groups: vec![200007],
            ..Default::default()
        };
        // (The maps are not put in use: tests run side by side.)
        creds_inside(&maps, 7, &mut c).unwrap();
        assert_eq!(
            (c.uid, c.euid, c.sgid, c.groups.clone()),
            (0, 1, 5, vec![7])
        );
        let mut c = CredsEntry {
            uid: 100000,
            euid: 100000,
            suid: 100000,
            fsuid: 100000,
            gid: 200000,
            egid: 200000,
            sgid: 200000,
            fsgid: 200000,
            groups: vec![0],
            ..Default::default()
        };
        let e = creds_inside(&maps, 7, &mut c).unwrap_err();
        assert!(e.to_string().contains("supplementary group 0"), "{e}");
    }
}
