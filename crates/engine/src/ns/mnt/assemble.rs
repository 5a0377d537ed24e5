//! The order in which a restored namespace's mounts are made (see
//! `MntNs::build_order`, which also keeps each mount after its parent and
//! the mount it is a bind of): depth first from the root, and among the
//! children of one mount the deeper mountpoints first (more `/`s; by
//! mount id when equal), so that a mount another one covers (a mount on
//! `a/b/c` under a sibling on `a`, as propagation makes them) is in place,
//! with everything under it, before the covering one arrives.

use crust_images::proto::mnt::MntEntry;

fn depth(mp: &str) -> usize {
    mp.trim_end_matches('/').matches('/').count()
}

/// The ids of `entries` (a checked tree, the root first) in the order
/// they are moved into the tree; the root is first.
pub(crate) fn order(entries: &[MntEntry]) -> Vec<u32> {
    let Some(root) = entries.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut stack = vec![root];
    while let Some(m) = stack.pop() {
        out.push(m.mnt_id);
        if out.len() > entries.len() {
            // Not a tree: the caller checked it is; stop rather than loop.
            break;
        }
        let mut kids: Vec<&MntEntry> = entries
            .iter()
            .filter(|k| k.parent_mnt_id == m.mnt_id && k.mnt_id != m.mnt_id)
            .collect();
        // Popped from the end: the last pushed is moved first.
        kids.sort_by_key(|k| (std::cmp::Reverse(depth(&k.mountpoint)), k.mnt_id));
        stack.extend(kids.into_iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u32, parent: u32, mp: &str) -> MntEntry {
        MntEntry {
            mnt_id: id,
            parent_mnt_id: parent,
            mountpoint: mp.into(),
            ..Default::default()
        }
    }

    #[test]
    fn covered_mounts_and_their_children_go_first() {
        let ents = vec![
            e(1, 0, "/"),
            e(2, 1, "/t"),
            e(3, 2, "/t/a"),
            e(4, 3, "/t/a/c"),
            e(5, 2, "/t/a/b/c"),
            e(6, 5, "/t/a/b/c/x"),
            e(7, 1, "/u"),
        ];
        assert_eq!(order(&ents), vec![1, 2, 5, 6, 3, 4, 7]);
    }
}
