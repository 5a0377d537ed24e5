//! Helper tasks for sessions and process groups whose leader is gone (the
//! pstree entries without threads CRIU restores as TASK_HELPER).

use super::*;

/// Sessions and process groups whose leader is gone cannot be joined on
/// restore unless someone holds them: like CRIU, add a helper task with the
/// leader's pid for each (it creates the session or group, begets the
/// processes that belong to it, and exits), and write its core.
pub(super) fn add_helpers(dir: &Path, tree: Vec<PstreeEntry>) -> Result<Vec<PstreeEntry>, Error> {
    let (tree, helpers) = plan_helpers(tree);
    for hpid in helpers {
        write_image(dir, ImageType::Core, hpid as u64, &[task::helper_core()])?;
    }
    Ok(tree)
}

/// The pstree with the helpers [`add_helpers`] needs inserted (each just
/// before the first process that needs it, the processes it holds moved
/// under it; or, see [`born_of_leader`], after the rest), and the helpers'
/// pids. Pure: writes nothing.
pub(super) fn plan_helpers(mut tree: Vec<PstreeEntry>) -> (Vec<PstreeEntry>, Vec<u32>) {
    let Some(root) = tree.first().cloned() else {
        return (tree, Vec::new());
    };
    let mut helpers = Vec::new();
    let mut i = 1;
    while i < tree.len() {
        let e = tree[i].clone();
        let exists = |id: u32| tree.iter().any(|t| t.pid == id);
        // A missing session first (a group helper must live inside it),
        // then a missing group.
        let missing = if e.sid != e.pid && e.sid != root.sid && !exists(e.sid) {
            Some((e.sid, e.sid))
        } else if e.pgid != e.pid && e.pgid != root.pgid && !exists(e.pgid) {
            Some((e.pgid, e.sid))
        } else {
            None
        };
        let Some((hpid, hsid)) = missing else {
            i += 1;
            continue;
        };
        helpers.push(hpid);
        if hpid != hsid && born_of_leader(&tree, &root, &e) {
            debug!(
                "adding helper {hpid} (session {hsid}) for {}, whose group leader is gone, under the session's leader",
                e.pid
            );
            adopt_group(&mut tree, i, &e, hpid);
            // Index i now holds the next process.
            continue;
        }
        let helper = PstreeEntry {
            pid: hpid,
            ppid: e.ppid,
            pgid: hpid,
            sid: hsid,
            threads: vec![],
            ..Default::default()
        };
        debug!(
            "adding helper {hpid} (session {hsid}) for {} whose {} is gone",
            e.pid,
            if hpid == e.sid {
                "session leader"
            } else {
                "group leader"
            }
        );
        // A session can only be entered by birth: every later process of
        // the same parent in it goes under the helper. A group is joined
        // (setpgid) by its members where they are, so they keep their
        // parent (a zombie's parent must be able to wait for it).
        if hpid == e.sid {
            for t in tree.iter_mut().skip(i) {
                if t.ppid == e.ppid && t.sid == hpid {
                    t.ppid = hpid;
                }
            }
        }
        tree.insert(i, helper);
        // Look at the helper's children again (they may need a group).
        i += 1;
    }
    (tree, helpers)
}

/// Process `e` is a child of the root in a session that is not the root's
/// but whose leader is in the tree, and its group's leader is gone: the
/// group's helper cannot be born of the root (a session is entered by
/// birth only). As CRIU does for the children of init, the helper is born
/// of the session's leader and begets the group's members, which the
/// kernel gives back to the root when it exits: so only when the root is
/// the init of its pid namespace (pid 1).
fn born_of_leader(tree: &[PstreeEntry], root: &PstreeEntry, e: &PstreeEntry) -> bool {
    root.pid == 1
        && e.ppid == root.pid
        && e.sid != root.sid
        && tree
            .iter()
            .any(|t| t.pid == e.sid && t.sid == e.sid && !t.threads.is_empty())
}

/// [`born_of_leader`]'s case: the helper `hpid` of `e`'s group goes under
/// the session's leader, and the root's children of that group and session
/// from index `i` on (`e` first) go under the helper, with their
/// descendants, all of them after the rest of the tree (a parent comes
/// before its children in a pstree).
fn adopt_group(tree: &mut Vec<PstreeEntry>, i: usize, e: &PstreeEntry, hpid: u32) {
    let mut moved: Vec<PstreeEntry> = Vec::new();
    let mut kept: Vec<PstreeEntry> = Vec::new();
    for (j, mut t) in std::mem::take(tree).into_iter().enumerate() {
        let member = j >= i && t.ppid == e.ppid && t.pgid == hpid && t.sid == e.sid;
        if member {
            t.ppid = hpid;
            moved.push(t);
        } else if j >= i && moved.iter().any(|m| m.pid == t.ppid) {
            moved.push(t);
        } else {
            kept.push(t);
        }
    }
    kept.push(PstreeEntry {
        pid: hpid,
        ppid: e.sid,
        pgid: hpid,
        sid: e.sid,
        threads: vec![],
        ..Default::default()
    });
    kept.extend(moved);
    *tree = kept;
}
