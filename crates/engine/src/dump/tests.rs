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
    use std::cmp::Ordering;
    // Each process's object of each kind, as a number kcmp would order.
    let by = |obj: fn(i32, i32) -> i32| {
        move |a: i32, b: i32, kind: i32| -> Option<Ordering> {
            Some(obj(a, kind).cmp(&obj(b, kind)))
        }
    };
    let mut k = KobjIds::default();
    let first = k.assign_with(100, by(|p, kind| p * 10 + kind)).unwrap();
    assert_eq!(
        (first.vm, first.files, first.fs, first.sighand),
        (TASK_KOBJ_ID, TASK_KOBJ_ID, TASK_KOBJ_ID, TASK_KOBJ_ID)
    );
    assert!(!first.files_shared);
    // 101 shares its fd table (kcmp type 2) with 100.
    let shares_files = |p: i32, kind: i32| if kind == 2 { 1002 } else { p * 10 + kind };
    let second = k.assign_with(101, by(shares_files)).unwrap();
    assert_eq!(second.files, first.files);
    assert!(second.files_shared);
    assert_eq!(
        (second.vm, second.fs, second.sighand),
        (TASK_KOBJ_ID + 1, TASK_KOBJ_ID + 1, TASK_KOBJ_ID + 1)
    );
    let third = k.assign_with(102, by(|p, kind| p * 10 + kind)).unwrap();
    assert_eq!(third.vm, TASK_KOBJ_ID + 2);
    assert_eq!(
        third.files,
        TASK_KOBJ_ID + 1,
        "files ids skip the shared one"
    );
    // Sharing memory (CLONE_VM without a thread group) is refused.
    let err = k.assign_with(
        103,
        by(|p, kind| if kind == 1 { 1001 } else { p * 10 + kind }),
    );
    assert!(err.is_err());
}

#[test]
fn kobj_ids_found_by_order_match_a_scan_of_every_process() {
    use std::cmp::Ordering;
    // 200 processes in a scrambled order; fd tables shared by pid % 7,
    // fs by pid % 13 (objects numbered apart from the pid order).
    let obj = |p: i32, kind: i32| match kind {
        2 => (p % 7) * 1000 + 5,
        3 => 7000 - (p % 13) * 31,
        _ => p * 10 + kind,
    };
    let order = |a: i32, b: i32, kind: i32| Some(obj(a, kind).cmp(&obj(b, kind)));
    let pids: Vec<i32> = (0..200).map(|i| (i * 73) % 200 + 1).collect();
    let (mut sorted, mut unordered) = (KobjIds::default(), KobjIds::default());
    for &p in &pids {
        let a = sorted.assign_with(p, order).unwrap();
        // No order at all: the one-by-one search.
        let b = unordered
            .assign_with(p, |x, y, kind| {
                (order(x, y, kind) == Some(Ordering::Equal)).then_some(Ordering::Equal)
            })
            .unwrap();
        assert_eq!(a, b, "process {p}");
    }
    let held = |k: &KobjIds| k.known.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(held(&sorted), [200, 7, 13, 200]);
    assert!(sorted.unordered.iter().all(|u| !u));
    assert!(unordered.unordered.iter().all(|u| *u));
}
