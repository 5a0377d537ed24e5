//! Unit tests of the dump's pure parts (helpers for gone leaders, ids).

use super::*;

fn entry(pid: u32, ppid: u32, pgid: u32, sid: u32) -> PstreeEntry {
    PstreeEntry {
        pid,
        ppid,
        pgid,
        sid,
        threads: vec![pid],
        ..Default::default()
    }
}

/// (pid, ppid, pgid, sid) of every entry.
fn shape(tree: &[PstreeEntry]) -> Vec<(u32, u32, u32, u32)> {
    tree.iter()
        .map(|e| (e.pid, e.ppid, e.pgid, e.sid))
        .collect()
}

#[test]
fn ns_last_is_the_innermost_pid_or_the_host_one() {
    assert_eq!(ns_last(&[4242, 7, 1], 4242), 1);
    assert_eq!(ns_last(&[4242], 4242), 4242);
    assert_eq!(ns_last(&[], 99), 99, "kernels without NSpid");
}

#[test]
fn no_helper_when_every_leader_is_in_the_tree() {
    let tree = vec![
        entry(10, 0, 10, 10),
        entry(11, 10, 11, 10),
        entry(12, 11, 11, 10),
    ];
    let (out, helpers) = plan_helpers(tree.clone());
    assert!(helpers.is_empty());
    assert_eq!(shape(&out), shape(&tree));
    assert_eq!(plan_helpers(Vec::new()), (Vec::new(), Vec::new()));
}

#[test]
fn a_gone_group_leader_gets_a_helper() {
    let tree = vec![
        entry(10, 0, 10, 10),
        entry(11, 10, 20, 10),
        entry(12, 10, 20, 10),
    ];
    let (out, helpers) = plan_helpers(tree);
    assert_eq!(helpers, [20]);
    assert_eq!(
        shape(&out),
        [
            (10, 0, 10, 10),
            (20, 10, 20, 10),
            (11, 10, 20, 10),
            (12, 10, 20, 10)
        ]
    );
    assert!(
        out[1].threads.is_empty(),
        "a helper has no threads to restore"
    );
}

#[test]
fn a_gone_session_leader_comes_before_its_group_helper() {
    let tree = vec![entry(10, 0, 10, 10), entry(12, 10, 31, 30)];
    let (out, helpers) = plan_helpers(tree);
    assert_eq!(helpers, [30, 31]);
    assert_eq!(
        shape(&out),
        [
            (10, 0, 10, 10),
            (30, 10, 30, 30),
            (31, 30, 31, 30),
            (12, 30, 31, 30)
        ]
    );
}

#[test]
fn a_group_helper_in_the_session_of_a_child_of_init_is_born_of_its_leader() {
    // zdtm sk-unix-restore-fs-share (ns flavor): 5 leads session 5; the
    // leader of group 6 (a child of 5) is gone; its child 7, in group 6 of
    // session 5, was given to init (1). The helper 6 cannot be born of 1
    // (session 1): it is born of 5, 7 of 6, and 7 goes back to 1 when 6
    // exits.
    let tree = vec![
        entry(1, 0, 1, 1),
        entry(7, 1, 6, 5),
        entry(8, 7, 6, 5),
        entry(5, 1, 5, 5),
    ];
    let (out, helpers) = plan_helpers(tree);
    assert_eq!(helpers, [6]);
    assert_eq!(
        shape(&out),
        [
            (1, 0, 1, 1),
            (5, 1, 5, 5),
            (6, 5, 6, 5),
            (7, 6, 6, 5),
            (8, 7, 6, 5)
        ]
    );
    assert!(out[2].threads.is_empty());
    // A root that is not init would not get 7 back: the helper stays
    // under the root (and the restore refuses it).
    let tree = vec![entry(2, 0, 2, 2), entry(7, 2, 6, 5), entry(5, 2, 5, 5)];
    let (out, _) = plan_helpers(tree);
    assert_eq!(shape(&out)[1], (6, 2, 6, 5));
}

#[test]
fn the_roots_own_session_needs_no_helper() {
    // The root's session leader is outside the tree (a shell): its
    // children share that session and get no helper.
    let tree = vec![entry(10, 0, 10, 5), entry(11, 10, 10, 5)];
    let (out, helpers) = plan_helpers(tree);
    assert!(helpers.is_empty());
    assert_eq!(out.len(), 2);
}

#[test]
fn kobj_ids_are_numbered_per_kind_and_shared_by_kcmp() {
    let mut k = KobjIds::default();
    let nothing_shared = |_: i32, _: i32, _: i32| false;
    let first = k.assign_with(100, nothing_shared).unwrap();
    assert_eq!(
        (first.vm, first.files, first.fs, first.sighand),
        (TASK_KOBJ_ID, TASK_KOBJ_ID, TASK_KOBJ_ID, TASK_KOBJ_ID)
    );
    assert!(!first.files_shared);
    // 101 shares its fd table (kcmp type 2) with 100.
    let second = k
        .assign_with(101, |a, b, kind| (a, b, kind) == (101, 100, 2))
        .unwrap();
    assert_eq!(second.files, first.files);
    assert!(second.files_shared);
    assert_eq!(
        (second.vm, second.fs, second.sighand),
        (TASK_KOBJ_ID + 1, TASK_KOBJ_ID + 1, TASK_KOBJ_ID + 1)
    );
    let third = k.assign_with(102, nothing_shared).unwrap();
    assert_eq!(third.vm, TASK_KOBJ_ID + 2);
    assert_eq!(
        third.files,
        TASK_KOBJ_ID + 1,
        "files ids skip the shared one"
    );
    // Sharing memory (CLONE_VM without a thread group) is refused.
    let err = k.assign_with(103, |_, b, kind| b == 100 && kind == 1);
    assert!(err.is_err());
}
