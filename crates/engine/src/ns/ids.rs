//! Namespace ids: how the namespaces of the dumped processes are named in
//! the images (the `*_ns_id` fields of `ids-N.img` and of the inventory's
//! `root_ids`).
//!
//! Numbered as CRIU numbers them: one counter shared by every kind, from 1;
//! a namespace gets the next number the first time it is met, and keeps it.
//! crust's own namespaces are met first, kind by kind in [`NsKind::ALL`]
//! order (pid 1, net 2, ipc 3, uts 4, time 5, mnt 6, user 7, cgroup 8: the
//! inventory's `root_ids`), then each process's, in tree order (the root
//! first), kinds in the same order. A namespace is its `/proc/PID/ns/KIND`
//! inode; a link that cannot be read counts as crust's namespace.
//!
//! [`TreeNs`] holds the numbering of one dump and the rules of what crust
//! can dump so far: every process shares the root's namespaces, except
//! mount and network namespaces made in a tree whose root has its own of
//! that kind (recorded as the tree's other ones: [`TreeNs::sub_mnt`],
//! [`TreeNs::sub_net`]); a pid namespace of the tree's own is headed by
//! its root.

use crate::Error;
use crust_images::proto::core::TaskKobjIdsEntry;
use log::debug;

/// A kind of namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NsKind {
    Pid,
    Net,
    Ipc,
    Uts,
    Time,
    Mnt,
    User,
    Cgroup,
}

impl NsKind {
    /// Every kind, in the order CRIU numbers a process's namespaces.
    pub const ALL: [NsKind; 8] = [
        NsKind::Pid,
        NsKind::Net,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Time,
        NsKind::Mnt,
        NsKind::User,
        NsKind::Cgroup,
    ];

    /// The name of its link in `/proc/PID/ns/`.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Pid => "pid",
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Time => "time",
            NsKind::Mnt => "mnt",
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
        }
    }

    /// Its CLONE_NEW* flag (clone, unshare, setns).
    pub fn clone_flag(self) -> u64 {
        let f = match self {
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Time => libc::CLONE_NEWTIME,
            NsKind::Mnt => libc::CLONE_NEWNS,
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Cgroup => libc::CLONE_NEWCGROUP,
        };
        f as u64
    }

    /// `/proc/<pid>/ns/<name>`; `pid` is a number or "self".
    pub fn proc_path(self, pid: &str) -> String {
        format!("/proc/{pid}/ns/{}", self.name())
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its id in an `ids` entry, if the entry has one.
    pub fn id_in(self, e: &TaskKobjIdsEntry) -> Option<u32> {
        match self {
            NsKind::Pid => e.pid_ns_id,
            NsKind::Net => e.net_ns_id,
            NsKind::Ipc => e.ipc_ns_id,
            NsKind::Uts => e.uts_ns_id,
            NsKind::Time => e.time_ns_id,
            NsKind::Mnt => e.mnt_ns_id,
            NsKind::User => e.user_ns_id,
            NsKind::Cgroup => e.cgroup_ns_id,
        }
    }

    fn set_in(self, e: &mut TaskKobjIdsEntry, id: u32) {
        let field = match self {
            NsKind::Pid => &mut e.pid_ns_id,
            NsKind::Net => &mut e.net_ns_id,
            NsKind::Ipc => &mut e.ipc_ns_id,
            NsKind::Uts => &mut e.uts_ns_id,
            NsKind::Time => &mut e.time_ns_id,
            NsKind::Mnt => &mut e.mnt_ns_id,
            NsKind::User => &mut e.user_ns_id,
            NsKind::Cgroup => &mut e.cgroup_ns_id,
        };
        *field = Some(id);
    }
}

impl std::fmt::Display for NsKind {
    /// How messages name the kind ("IPC", "mount", ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NsKind::Pid => "pid",
            NsKind::Net => "network",
            NsKind::Ipc => "IPC",
            NsKind::Uts => "UTS",
            NsKind::Time => "time",
            NsKind::Mnt => "mount",
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
        })
    }
}

/// The namespaces of one process, as inodes of its `/proc/PID/ns/*`
/// links, per kind (None: the link cannot be read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsInodes([Option<u64>; 8]);

impl NsInodes {
    /// Given per kind, in [`NsKind::ALL`] order.
    #[cfg(test)]
    pub fn new(inodes: [Option<u64>; 8]) -> NsInodes {
        NsInodes(inodes)
    }

    /// Those of process `pid` ("self": crust's).
    pub fn read(pid: &str) -> NsInodes {
        use std::os::unix::fs::MetadataExt;
        NsInodes(NsKind::ALL.map(|k| std::fs::metadata(k.proc_path(pid)).ok().map(|m| m.ino())))
    }

    /// Those of process `pid`.
    pub fn of(pid: i32) -> NsInodes {
        NsInodes::read(&pid.to_string())
    }

    pub fn get(&self, kind: NsKind) -> Option<u64> {
        self.0.get(kind.index()).copied().flatten()
    }
}

/// The image ids of one process's namespaces, per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsIds([u32; 8]);

impl NsIds {
    /// crust's own namespaces: met first, they get 1 to 8.
    pub const CRUST: NsIds = NsIds([1, 2, 3, 4, 5, 6, 7, 8]);

    pub fn get(&self, kind: NsKind) -> u32 {
        self.0.get(kind.index()).copied().unwrap_or(0)
    }

    /// Is its namespace of `kind` another than crust's?
    pub fn own(&self, kind: NsKind) -> bool {
        self.get(kind) != NsIds::CRUST.get(kind)
    }

    /// The kinds whose namespace is not crust's, in [`NsKind::ALL`] order.
    pub fn own_kinds(&self) -> impl Iterator<Item = NsKind> + '_ {
        NsKind::ALL.into_iter().filter(|k| self.own(*k))
    }

    /// Set every `*_ns_id` field of `e`.
    pub fn fill(&self, e: &mut TaskKobjIdsEntry) {
        for k in NsKind::ALL {
            k.set_in(e, self.get(k));
        }
    }
}

/// Namespace numbering across a tree: a namespace gets an id the first
/// time it is met; crust's own are met first.
#[derive(Debug)]
pub struct NsTable {
    crust: NsInodes,
    /// (kind, inode, id) of every namespace met.
    known: Vec<(NsKind, u64, u32)>,
    next: u32,
}

impl NsTable {
    /// A numbering whose first namespaces are crust's (`crust`).
    pub fn new(crust: NsInodes) -> NsTable {
        let mut t = NsTable {
            crust,
            known: Vec::new(),
            next: 1,
        };
        for k in NsKind::ALL {
            let id = t.next;
            t.next += 1;
            if let Some(ino) = crust.get(k) {
                t.known.push((k, ino, id));
            }
        }
        t
    }

    /// The ids of a process with namespaces `inodes`, numbering those not
    /// met before.
    pub fn assign(&mut self, inodes: &NsInodes) -> NsIds {
        let mut ids = NsIds::CRUST;
        for k in NsKind::ALL {
            let (Some(_), Some(ino)) = (self.crust.get(k), inodes.get(k)) else {
                continue;
            };
            let id = match self.known.iter().find(|(kk, i, _)| *kk == k && *i == ino) {
                Some((_, _, id)) => *id,
                None => {
                    let id = self.next;
                    self.next += 1;
                    self.known.push((k, ino, id));
                    id
                }
            };
            if let Some(slot) = ids.0.get_mut(k.index()) {
                *slot = id;
            }
        }
        ids
    }
}

/// The namespaces of the tree being dumped: their numbering, the root's,
/// and what crust accepts so far.
#[derive(Debug)]
pub struct TreeNs {
    table: NsTable,
    root_pid: i32,
    root: NsIds,
    /// The root heads a pid namespace of its own (its pids are the tree's).
    own_pidns: bool,
    /// The tree's other mount namespaces (the root has one of its own):
    /// (id, the first process met in it).
    sub_mnt: Vec<(u32, i32)>,
    /// The tree's other network namespaces (the root has one of its own):
    /// (id, the first process met in it).
    sub_net: Vec<(u32, i32)>,
}

impl TreeNs {
    /// The numbering of a dump by crust (in namespaces `crust`) of the tree
    /// rooted at `root_pid` (in `root`); `root_heads_pidns`: the root is
    /// the init of its own pid namespace.
    pub fn new(crust: NsInodes, root_pid: i32, root: &NsInodes, root_heads_pidns: bool) -> TreeNs {
        let mut table = NsTable::new(crust);
        let root = table.assign(root);
        TreeNs {
            table,
            root_pid,
            root,
            own_pidns: root_heads_pidns,
            sub_mnt: Vec::new(),
            sub_net: Vec::new(),
        }
    }

    /// Read crust's and the root's namespaces.
    pub fn read(root_pid: i32, root_heads_pidns: bool) -> TreeNs {
        let t = TreeNs::new(
            NsInodes::read("self"),
            root_pid,
            &NsInodes::of(root_pid),
            root_heads_pidns,
        );
        let own: Vec<_> = t.root.own_kinds().map(NsKind::name).collect();
        debug!("namespaces of {root_pid} that are not crust's: {own:?}");
        t
    }

    /// (kind, inode, id) of every namespace numbered so far: crust's and
    /// the root's (the only ones a tree crust dumps may be in).
    pub fn known(&self) -> impl Iterator<Item = (NsKind, u64, u32)> + '_ {
        self.table.known.iter().copied()
    }

    /// The id of the tree's own IPC namespace, if it is not crust's: its
    /// System V objects are dumped.
    pub fn own_ipc(&self) -> Option<u32> {
        self.root
            .own(NsKind::Ipc)
            .then_some(self.root.get(NsKind::Ipc))
    }

    /// The ids of the root's namespaces.
    pub fn root_ids(&self) -> NsIds {
        self.root
    }

    /// The tree's mount namespaces other than the root's: (id, a process
    /// in it), in the order met.
    pub fn sub_mnt(&self) -> &[(u32, i32)] {
        &self.sub_mnt
    }

    /// The tree's network namespaces other than the root's: (id, a
    /// process in it), in the order met.
    pub fn sub_net(&self) -> &[(u32, i32)] {
        &self.sub_net
    }

    /// Whether process `pid` (ids `ids`) is in a mount or network
    /// namespace (`k`) of the tree other than the root's (the root has
    /// its own one of that kind); it is recorded.
    fn other_sub(&mut self, k: NsKind, pid: i32, ids: &NsIds) -> bool {
        let id = ids.get(k);
        if !(self.root.own(k) && ids.own(k)) || id == self.root.get(k) {
            return false;
        }
        let list = match k {
            NsKind::Mnt => &mut self.sub_mnt,
            NsKind::Net => &mut self.sub_net,
            _ => return false,
        };
        if !list.iter().any(|(i, _)| *i == id) {
            list.push((id, pid));
        }
        true
    }

    /// The ids of process `pid` (in namespaces `inodes`), or why crust
    /// cannot dump it. Every process must share the root's namespaces
    /// (the tree's); of those, the ones that are not crust's must be of a
    /// kind crust dumps ([`crate::ns::dumps_own`]), and a pid namespace of
    /// the tree's own must be headed by the root.
    pub fn check(&mut self, pid: i32, inodes: &NsInodes) -> Result<NsIds, Error> {
        let ids = self.table.assign(inodes);
        for k in NsKind::ALL {
            let dumpable = match k {
                NsKind::Pid => self.own_pidns,
                _ => crate::ns::dumps_own(k),
            };
            if self.root.own(k) && !dumpable {
                let whose = if pid == self.root_pid {
                    String::new()
                } else {
                    format!(" (that of the tree's root {})", self.root_pid)
                };
                return Err(Error::unsupported(format!(
                    "process {pid} is in its own {k} namespace{whose}; crust cannot dump {k} namespaces yet"
                )));
            }
            if matches!(k, NsKind::Mnt | NsKind::Net) && self.other_sub(k, pid, &ids) {
                continue;
            }
            if ids.get(k) != self.root.get(k) {
                let msg = if ids.own(k) && !self.root.own(k) {
                    format!(
                        "process {pid} is in its own {k} namespace; crust dumps a tree whose processes all share the namespaces of its root {}",
                        self.root_pid
                    )
                } else {
                    format!(
                        "process {pid} is in another {k} namespace than the root {} of the tree; crust dumps a tree whose processes all share the root's namespaces",
                        self.root_pid
                    )
                };
                return Err(Error::unsupported(msg));
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inodes 100 + i for crust's namespace of kind i, changed where given.
    fn inodes(changes: &[(NsKind, u64)]) -> NsInodes {
        let mut v: [Option<u64>; 8] = std::array::from_fn(|i| Some(100 + i as u64));
        for (k, ino) in changes {
            v[k.index()] = Some(*ino);
        }
        NsInodes::new(v)
    }

    #[test]
    fn kinds() {
        assert_eq!(
            NsKind::ALL.map(|k| k.name()).join(" "),
            "pid net ipc uts time mnt user cgroup"
        );
        assert_eq!(NsKind::Mnt.clone_flag(), 0x0002_0000);
        assert_eq!(NsKind::Time.clone_flag(), 0x80);
        assert_eq!(NsKind::Ipc.proc_path("self"), "/proc/self/ns/ipc");
        let mut e = TaskKobjIdsEntry::default();
        NsIds::CRUST.fill(&mut e);
        // CRIU's numbers for its own namespaces.
        let want = [
            (NsKind::Pid, 1),
            (NsKind::Net, 2),
            (NsKind::Ipc, 3),
            (NsKind::Uts, 4),
        ];
        for (k, id) in want.into_iter().chain([
            (NsKind::Time, 5),
            (NsKind::Mnt, 6),
            (NsKind::User, 7),
            (NsKind::Cgroup, 8),
        ]) {
            assert_eq!(k.id_in(&e), Some(id));
        }
    }

    #[test]
    fn shared_namespaces_get_crusts_ids() {
        let mut t = NsTable::new(inodes(&[]));
        assert_eq!(t.assign(&inodes(&[])), NsIds::CRUST);
        assert_eq!(t.assign(&inodes(&[])).own_kinds().count(), 0);
        // An unreadable link counts as crust's.
        let mut gone = inodes(&[]);
        gone.0[NsKind::Time.index()] = None;
        assert_eq!(t.assign(&gone), NsIds::CRUST);
    }

    #[test]
    fn new_namespaces_numbered_in_order_met() {
        let mut t = NsTable::new(inodes(&[]));
        // Root: own pid and ipc namespaces: 9 and 10.
        let root = t.assign(&inodes(&[(NsKind::Pid, 900), (NsKind::Ipc, 901)]));
        assert_eq!((root.get(NsKind::Pid), root.get(NsKind::Ipc)), (9, 10));
        assert_eq!(root.get(NsKind::Net), 2);
        assert_eq!(
            root.own_kinds().collect::<Vec<_>>(),
            vec![NsKind::Pid, NsKind::Ipc]
        );
        // A child in the same ones, and a new uts namespace: 11.
        let child = t.assign(&inodes(&[
            (NsKind::Pid, 900),
            (NsKind::Ipc, 901),
            (NsKind::Uts, 5),
        ]));
        assert_eq!(child.get(NsKind::Pid), 9);
        assert_eq!(child.get(NsKind::Ipc), 10);
        assert_eq!(child.get(NsKind::Uts), 11);
        // Met again: same id; the same inode under another kind is another.
        assert_eq!(t.assign(&inodes(&[(NsKind::Uts, 5)])).get(NsKind::Uts), 11);
        assert_eq!(t.assign(&inodes(&[(NsKind::Net, 5)])).get(NsKind::Net), 12);
        // Only the ipc namespace of its own: 9 (as CRIU numbers it).
        let mut t = NsTable::new(inodes(&[]));
        assert_eq!(t.assign(&inodes(&[(NsKind::Ipc, 7)])).get(NsKind::Ipc), 9);
    }

    #[test]
    fn tree_rules() {
        // A tree sharing crust's namespaces.
        let mut tree = TreeNs::new(inodes(&[]), 10, &inodes(&[]), false);
        assert_eq!(tree.own_ipc(), None);
        assert_eq!(tree.check(10, &inodes(&[])).unwrap(), NsIds::CRUST);
        let e = tree.check(11, &inodes(&[(NsKind::Net, 1)])).unwrap_err();
        assert!(
            e.to_string()
                .contains("process 11 is in its own network namespace"),
            "{e}"
        );
        let e = tree.check(12, &inodes(&[(NsKind::Ipc, 1)])).unwrap_err();
        assert!(
            e.to_string()
                .contains("process 12 is in its own IPC namespace; crust dumps a tree"),
            "{e}"
        );
        let e = tree.check(13, &inodes(&[(NsKind::Pid, 1)])).unwrap_err();
        assert!(e.to_string().contains("own pid namespace"), "{e}");

        // A root heading its own pid namespace, in its own IPC namespace.
        let root = inodes(&[(NsKind::Pid, 900), (NsKind::Ipc, 901)]);
        let mut tree = TreeNs::new(inodes(&[]), 20, &root, true);
        assert_eq!(tree.own_ipc(), Some(10));
        let ids = tree.check(20, &root).unwrap();
        assert_eq!((ids.get(NsKind::Pid), ids.get(NsKind::Ipc)), (9, 10));
        assert_eq!(tree.check(21, &root).unwrap(), ids);
        // A child in crust's pid namespace, or in a nested one: refused.
        let e = tree.check(22, &inodes(&[(NsKind::Ipc, 901)])).unwrap_err();
        assert!(
            e.to_string()
                .contains("another pid namespace than the root 20"),
            "{e}"
        );
        let nested = inodes(&[(NsKind::Pid, 902), (NsKind::Ipc, 901)]);
        assert!(tree.check(23, &nested).is_err());
        // A child in crust's IPC namespace: refused.
        let e = tree.check(24, &inodes(&[(NsKind::Pid, 900)])).unwrap_err();
        assert!(e.to_string().contains("another IPC namespace"), "{e}");
        // A child in a UTS namespace of its own (the root shares crust's).
        let both = inodes(&[
            (NsKind::Pid, 900),
            (NsKind::Ipc, 901),
            (NsKind::Uts, 3),
            (NsKind::User, 4),
        ]);
        let e = tree.check(25, &both).unwrap_err();
        assert!(e.to_string().contains("own UTS namespace"), "{e}");

        // A root in a mount namespace of its own: a child in another one
        // (made in the tree) is recorded; one in crust's is refused.
        let root = inodes(&[(NsKind::Mnt, 900)]);
        let mut tree = TreeNs::new(inodes(&[]), 30, &root, false);
        assert!(tree.check(30, &root).is_ok());
        let sub = inodes(&[(NsKind::Mnt, 901)]);
        assert_eq!(tree.check(31, &sub).unwrap().get(NsKind::Mnt), 10);
        assert!(tree.check(32, &sub).is_ok());
        assert_eq!(tree.sub_mnt(), &[(10, 31)]);
        let e = tree.check(33, &inodes(&[])).unwrap_err();
        assert!(e.to_string().contains("another mount namespace"), "{e}");

        // A root in a network namespace of its own: a child in another one
        // is recorded, one back in the root's is fine, one in crust's is
        // refused.
        let root = inodes(&[(NsKind::Net, 900)]);
        let mut tree = TreeNs::new(inodes(&[]), 40, &root, false);
        assert!(tree.check(40, &root).is_ok());
        let sub = inodes(&[(NsKind::Net, 901)]);
        assert_eq!(tree.check(41, &sub).unwrap().get(NsKind::Net), 10);
        assert!(tree.check(42, &root).is_ok());
        assert_eq!(tree.sub_net(), &[(10, 41)]);
        let e = tree.check(43, &inodes(&[])).unwrap_err();
        assert!(e.to_string().contains("another network namespace"), "{e}");
    }
}
