//! What pstree.img says about pids, checked before anything is read on
//! its word: an image that lies about pids must not make crust report a
//! process that does not exist (and a caller signal an unrelated one).

use crust_images::proto::pstree::PstreeEntry;
use std::collections::HashSet;

/// What kind of process an entry describes, by its thread list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    /// Threads listed, the first being the process itself.
    Live,
    /// One thread that is not the process: a zombie. crust writes thread
    /// 0; CRIU 4.2 leaves a zombie's thread id unset (any value, seen
    /// 225643408), so only the core image tells (`load_proc` checks it).
    Zombie,
    /// No thread: a helper that only holds a session or group.
    Helper,
}

/// The kind of `e`, or why its thread list cannot be right.
pub(super) fn entry_kind(e: &PstreeEntry) -> Result<EntryKind, String> {
    match e.threads.as_slice() {
        [] => Ok(EntryKind::Helper),
        [0] => Ok(EntryKind::Zombie),
        [t] if *t != e.pid => Ok(EntryKind::Zombie),
        [first, ..] if *first != e.pid => Err(format!(
            "process {} lists thread {first} first, not itself",
            e.pid
        )),
        ts => match ts.iter().find(|t| **t == 0 || **t > i32::MAX as u32) {
            Some(t) => Err(format!("process {} lists a bad thread id {t}", e.pid)),
            None => Ok(EntryKind::Live),
        },
    }
}

/// Every pid of the tree, checked: pids and thread ids positive and used
/// once in the whole tree, parents listed before their children, groups
/// and sessions in range, and a root that is a live process (a tree whose
/// root is a zombie or helper would "restore" nothing that runs).
pub(super) fn check_tree(tree: &[PstreeEntry]) -> Result<(), String> {
    let Some(root) = tree.first() else {
        return Err("pstree.img holds no process".into());
    };
    let mut pids = HashSet::new();
    let mut ids = HashSet::new();
    for (i, e) in tree.iter().enumerate() {
        if e.pid == 0 || e.pid > i32::MAX as u32 {
            return Err(format!("pstree.img has a bad pid {}", e.pid));
        }
        if !ids.insert(e.pid) {
            return Err(format!("pstree.img lists pid {} twice", e.pid));
        }
        for (name, v) in [("group", e.pgid), ("session", e.sid)] {
            // 0: a group or session outside the tree's pid namespace.
            if v > i32::MAX as u32 {
                return Err(format!(
                    "pstree.img: process {} has a bad {name} {v}",
                    e.pid
                ));
            }
        }
        if i > 0 && !pids.contains(&e.ppid) {
            return Err(format!(
                "pstree.img lists {} before its parent {} (or the parent is missing)",
                e.pid, e.ppid
            ));
        }
        pids.insert(e.pid);
        let kind = entry_kind(e).map_err(|w| format!("pstree.img: {w}"))?;
        if i == 0 && kind != EntryKind::Live {
            return Err(format!(
                "pstree.img: the root process {} is {} (it lists thread{} {:?}): nothing would run",
                root.pid,
                if kind == EntryKind::Zombie {
                    "a zombie"
                } else {
                    "a helper"
                },
                if e.threads.len() == 1 { "" } else { "s" },
                e.threads
            ));
        }
        if kind == EntryKind::Live {
            for &t in e.threads.iter().skip(1) {
                if !ids.insert(t) {
                    return Err(format!(
                        "pstree.img: thread {t} of process {} is used twice in the tree",
                        e.pid
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: u32, ppid: u32, threads: &[u32]) -> PstreeEntry {
        PstreeEntry {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            threads: threads.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn good_trees_pass() {
        assert_eq!(check_tree(&[e(10, 1, &[10, 11])]), Ok(()));
        let t = [
            e(10, 1, &[10]),
            e(12, 10, &[0]),
            e(13, 10, &[]),
            e(14, 13, &[14]),
        ];
        assert_eq!(check_tree(&t), Ok(()));
    }

    #[test]
    fn root_listing_thread_zero_is_refused() {
        let err = check_tree(&[e(10, 1, &[0])]).unwrap_err();
        assert!(err.contains("root process 10 is a zombie"), "{err}");
        let err = check_tree(&[e(10, 1, &[])]).unwrap_err();
        assert!(err.contains("a helper"), "{err}");
    }

    #[test]
    fn bad_pids_are_refused() {
        assert!(check_tree(&[]).is_err());
        assert!(check_tree(&[e(0, 1, &[0])]).is_err());
        assert!(check_tree(&[e(u32::MAX, 1, &[u32::MAX])]).is_err());
        // Repeated pid, a tid equal to another's pid, a repeated tid.
        assert!(check_tree(&[e(10, 1, &[10]), e(10, 10, &[10])]).is_err());
        assert!(check_tree(&[e(10, 1, &[10, 12]), e(12, 10, &[12])]).is_err());
        assert!(check_tree(&[e(10, 1, &[10, 11, 11])]).is_err());
        // Parent missing or after the child.
        assert!(check_tree(&[e(10, 1, &[10]), e(12, 11, &[12])]).is_err());
        // Group out of range.
        let mut bad = e(10, 1, &[10]);
        bad.pgid = u32::MAX;
        assert!(check_tree(&[bad]).is_err());
    }

    #[test]
    fn thread_lists_are_checked() {
        assert_eq!(entry_kind(&e(10, 1, &[10, 11])), Ok(EntryKind::Live));
        assert_eq!(entry_kind(&e(10, 1, &[0])), Ok(EntryKind::Zombie));
        assert_eq!(entry_kind(&e(10, 1, &[])), Ok(EntryKind::Helper));
        // CRIU 4.2 leaves a zombie's thread id unset.
        assert_eq!(entry_kind(&e(10, 1, &[225643408])), Ok(EntryKind::Zombie));
        assert!(entry_kind(&e(10, 1, &[11, 10])).is_err());
        assert!(entry_kind(&e(10, 1, &[10, 0])).is_err());
        assert!(entry_kind(&e(10, 1, &[0, 0])).is_err());
    }
}
