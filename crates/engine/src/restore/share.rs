//! Kernel objects several processes share: the fd table (CLONE_FILES), the
//! fs struct (CLONE_FS) and the memory (CLONE_VM).
//!
//! A restore can only make two processes share such an object by cloning
//! one from the other with the flag, so the processes that hold one object
//! must form a connected piece of the tree: every holder but one (the top)
//! has its parent among the holders. Siblings that both share their
//! parent's fd table (fd01, fdt_shared) qualify; a grandchild sharing with
//! its grandparent across a parent that does not, or two unrelated holders,
//! do not, and are refused. Memory shared by two processes (vfork,
//! CLONE_VM without CLONE_THREAD) is refused outright.

use super::load::bad;
use super::ProcImage;
use crate::Error;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the sharing check needs of one process.
#[derive(Clone, Copy, Debug)]
pub(super) struct Holder {
    pub pid: u32,
    pub ppid: u32,
    /// (vm, files, fs) ids; `None` for a zombie or a helper.
    pub ids: Option<[u32; 3]>,
}

const WHAT: [&str; 3] = ["memory", "fd table", "fs struct (cwd, root, umask)"];

/// Why these processes' sharing cannot be rebuilt, if it cannot.
pub(super) fn problem(procs: &[Holder]) -> Option<String> {
    let ids: HashMap<u32, [u32; 3]> = procs
        .iter()
        .filter_map(|p| p.ids.map(|i| (p.pid, i)))
        .collect();
    for k in 0..3 {
        // Holders of each object, in tree order.
        let mut holders: BTreeMap<u32, Vec<&Holder>> = BTreeMap::new();
        for p in procs {
            if let Some(i) = p.ids {
                holders.entry(i[k]).or_default().push(p);
            }
        }
        for group in holders.values().filter(|g| g.len() > 1) {
            if k == 0 {
                return Some(format!(
                    "processes {} and {} share their memory (vfork or CLONE_VM), which crust cannot restore",
                    group[0].pid, group[1].pid
                ));
            }
            let tops: Vec<u32> = group
                .iter()
                .filter(|p| {
                    let mine = p.ids.map(|i| i[k]);
                    ids.get(&p.ppid).map(|i| i[k]) != mine
                })
                .map(|p| p.pid)
                .collect();
            if let [a, b, ..] = tops[..] {
                return Some(format!(
                    "processes {a} and {b} share a {} but neither descends from the other through processes that share it too (it can only be given at clone time)",
                    WHAT[k]
                ));
            }
        }
    }
    None
}

/// Refuse sharing a restore cannot rebuild, and mark the processes whose fd
/// table is their parent's (they are cloned with CLONE_FILES and open no
/// fd of their own).
pub(super) fn with_parents(dir: &Path, procs: &mut [ProcImage]) -> Result<(), Error> {
    let holders: Vec<Holder> = procs
        .iter()
        .map(|p| Holder {
            pid: p.entry.pid,
            ppid: p.entry.ppid,
            ids: p
                .live
                .as_ref()
                .map(|l| [l.ids.vm_id, l.ids.files_id, l.ids.fs_id]),
        })
        .collect();
    if let Some(why) = problem(&holders) {
        return Err(bad(dir, why));
    }
    let files: HashMap<u32, u32> = holders
        .iter()
        .filter_map(|h| h.ids.map(|i| (h.pid, i[1])))
        .collect();
    for p in procs.iter_mut() {
        let parent = files.get(&p.entry.ppid).copied();
        if let Some(l) = p.live.as_mut() {
            l.files_from_parent = parent == Some(l.ids.files_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: u32, ppid: u32, vm: u32, files: u32, fs: u32) -> Holder {
        Holder {
            pid,
            ppid,
            ids: Some([vm, files, fs]),
        }
    }

    #[test]
    fn siblings_sharing_their_parents_table_are_fine() {
        // fd01, fdt_shared: two children cloned with CLONE_FILES, own fs.
        let t = [
            h(1, 0, 10, 20, 30),
            h(2, 1, 11, 20, 31),
            h(3, 1, 12, 20, 32),
        ];
        assert_eq!(problem(&t), None);
        // A chain of three sharing fs and files.
        let t = [
            h(1, 0, 10, 20, 30),
            h(2, 1, 11, 20, 30),
            h(3, 2, 12, 20, 30),
        ];
        assert_eq!(problem(&t), None);
    }

    #[test]
    fn sharing_across_a_gap_or_between_strangers_is_refused() {
        // Grandchild shares the root's table, its parent does not.
        let t = [
            h(1, 0, 10, 20, 30),
            h(2, 1, 11, 21, 31),
            h(3, 2, 12, 20, 32),
        ];
        let why = problem(&t).expect("refused");
        assert!(why.contains("fd table"), "{why}");
        // Two children share an fs struct that is not their parent's.
        let t = [
            h(1, 0, 10, 20, 30),
            h(2, 1, 11, 21, 31),
            h(3, 1, 12, 22, 31),
        ];
        let why = problem(&t).expect("refused");
        assert!(why.contains("processes 2 and 3"), "{why}");
        assert!(why.contains("fs struct"), "{why}");
    }

    #[test]
    fn shared_memory_is_refused_and_the_dead_hold_nothing() {
        let t = [h(1, 0, 10, 20, 30), h(2, 1, 10, 21, 31)];
        assert!(problem(&t).expect("refused").contains("memory"));
        let dead = Holder {
            pid: 2,
            ppid: 1,
            ids: None,
        };
        let t = [h(1, 0, 10, 20, 30), dead, h(3, 2, 12, 20, 32)];
        // 3 shares the root's table through a zombie: refused.
        assert!(problem(&t).is_some());
        let t = [h(1, 0, 10, 20, 30), dead, h(3, 1, 12, 21, 32)];
        assert_eq!(problem(&t), None);
    }
}
