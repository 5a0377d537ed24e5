//! Who makes each process so that it is born in its session, and the
//! helper tasks that hold sessions and groups whose leader is gone.
//!
//! A process can only get its session by inheriting it (or by setsid,
//! which makes it the leader of a new one). So:
//! - a process in the session of an ancestor is made by its parent; each
//!   process on the way that later called setsid is born in that session
//!   and calls setsid only once the children that need the old session
//!   exist ("late setsid");
//! - a process reparented away from its session (to the init of the pid
//!   namespace, a subreaper) is made by a sibling in that session with
//!   CLONE_PARENT: the sibling that leads it (alive or a zombie), or a
//!   helper task with the leader's pid, made for the purpose (a session
//!   whose leader is gone);
//! - a process in a group whose leader is gone gets a helper child with
//!   the group's id, which makes the group, so the process can join it.
//!
//! Helpers exit and are reaped by their parents once the tree is made.

use super::{Error, ProcImage};
use crust_images::proto::pstree::PstreeEntry;
use log::debug;
use std::collections::{HashMap, HashSet};

/// The order in which the tree's processes get their sessions.
#[derive(Debug, Default)]
pub(super) struct SessionPlan {
    /// Per process (index of `ImageSet::procs`): the process whose task
    /// makes it: its parent, or a sibling (made with CLONE_PARENT).
    creator: Vec<usize>,
    /// Processes that call setsid only after making their children born
    /// in the session they themselves were born in.
    late: HashSet<usize>,
    /// The session each of those is born in.
    born_in: HashMap<usize, u32>,
    /// Processes made with CLONE_PARENT (by a sibling in their session).
    adopt: HashSet<usize>,
    /// Helpers that exit (and are reaped) as soon as they have made their
    /// children, which the pid namespace's init, the root, inherits.
    exit_early: HashSet<usize>,
}

impl SessionPlan {
    /// The process that makes process `i`; `None` for the root.
    pub(super) fn creator(&self, i: usize) -> Option<usize> {
        self.creator.get(i).copied().filter(|&c| c != i)
    }

    /// Whether process `i` calls setsid only after some of its children
    /// are made.
    pub(super) fn late_setsid(&self, i: usize) -> bool {
        self.late.contains(&i)
    }

    /// Whether process `i` is made with CLONE_PARENT.
    pub(super) fn adopted(&self, i: usize) -> bool {
        self.adopt.contains(&i)
    }

    /// Whether helper `i` exits once it has made its children.
    pub(super) fn exits_early(&self, i: usize) -> bool {
        self.exit_early.contains(&i)
    }

    /// The processes made by process `i`, in the order to make them:
    /// group helpers and those born in `i`'s first session before the
    /// others. The flag says whether it is born before `i`'s late setsid.
    pub(super) fn made_by(&self, procs: &[ProcImage], i: usize) -> Vec<(usize, bool)> {
        let me = procs.get(i).map(|p| &p.entry);
        let mut out: Vec<(usize, bool)> = (1..procs.len())
            .filter(|&c| self.creator(c) == Some(i))
            .map(|c| {
                let e = procs.get(c).map(|p| &p.entry);
                // Born in another session than the one `i` ends in.
                let born = self.born_in.get(&c).copied().or(e.map(|e| e.sid));
                let early = self.late_setsid(i)
                    && match (e, me) {
                        (Some(e), Some(me)) => born != Some(e.pid) && born != Some(me.pid),
                        _ => false,
                    };
                (c, early)
            })
            .collect();
        // Stable: the images' order otherwise.
        out.sort_by_key(|&(c, early)| {
            let helper = procs.get(c).is_some_and(|p| p.helper);
            (!early, !helper)
        });
        out
    }
}

fn unsupported(what: String) -> Error {
    Error::unsupported(what)
}

/// Work out the plan for `procs` (root first, parents before children),
/// adding the helper tasks it needs at the end of `procs`.
pub(super) fn plan(procs: &mut Vec<ProcImage>) -> Result<SessionPlan, Error> {
    let mut index: HashMap<u32, usize> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        index.insert(p.entry.pid, i);
    }
    let threads: HashSet<u32> = procs
        .iter()
        .flat_map(|p| p.entry.threads.iter().copied())
        .collect();
    let taken =
        |id: u32, index: &HashMap<u32, usize>| index.contains_key(&id) || threads.contains(&id);
    let root_pgid = procs.first().map(|p| p.entry.pgid).unwrap_or(0);
    let mut plan = SessionPlan {
        creator: (0..procs.len()).collect(),
        ..Default::default()
    };
    // Ids no process, thread, group or session of the tree has.
    let mut free = procs
        .iter()
        .flat_map(|p| {
            [p.entry.pid, p.entry.pgid, p.entry.sid]
                .into_iter()
                .chain(p.entry.threads.iter().copied())
        })
        .max()
        .unwrap_or(1);
    let root_is_init = procs.first().is_some_and(|p| p.entry.pid == 1);
    let n = procs.len();
    for i in 1..n {
        let Some(e) = procs.get(i).map(|p| p.entry.clone()) else {
            continue;
        };
        let parent = parent_of(procs, i, &index).ok_or_else(|| {
            unsupported(format!(
                "process {} has parent {}, which is not in the tree",
                e.pid, e.ppid
            ))
        })?;
        set_creator(&mut plan, i, parent);
        // (Session 0: the root's, outside the tree's pid namespace.)
        if e.sid == e.pid {
            continue;
        }
        if let Some(marks) = born_with(procs, &index, parent, e.sid) {
            for a in marks {
                match plan.born_in.insert(a, e.sid) {
                    Some(other) if other != e.sid => {
                        return Err(unsupported(format!(
                            "process {} has children in sessions {other} and {}: which one it was born in cannot be told",
                            procs.get(a).map(|p| p.entry.pid).unwrap_or(0),
                            e.sid
                        )))
                    }
                    _ => {}
                }
                plan.late.insert(a);
            }
            continue;
        }
        // Reparented away from its session: a sibling in it makes it.
        let sibling = index
            .get(&e.sid)
            .copied()
            .filter(|&k| parent_of(procs, k, &index) == Some(parent));
        let leader = index.get(&e.sid).copied();
        let maker = match sibling {
            Some(k) => {
                plan.adopt.insert(i);
                k
            }
            None if e.sid != 0 && !taken(e.sid, &index) => {
                debug!("helper {} holds the session of {}", e.sid, e.pid);
                let h = push_helper(procs, &mut index, e.sid, e.ppid, e.sid);
                set_creator(&mut plan, h, parent);
                plan.adopt.insert(i);
                h
            }
            None => match leader.filter(|_| root_is_init && parent == 0) {
                Some(l) => {
                    // The leader is further down: a helper child of it
                    // makes the process and exits; the init adopts it.
                    free += 1;
                    let lpid = procs.get(l).map(|p| p.entry.pid).unwrap_or(0);
                    debug!("helper {free} (a child of {lpid}) makes {} for the init", e.pid);
                    let h = push_helper(procs, &mut index, free, lpid, e.sid);
                    set_creator(&mut plan, h, l);
                    plan.exit_early.insert(h);
                    h
                }
                None => {
                    return Err(unsupported(format!(
                        "process {} is in session {}, whose leader is neither its ancestor nor its sibling",
                        e.pid, e.sid
                    )))
                }
            },
        };
        let shares = procs.get(i).and_then(|p| p.live.as_ref()).is_some_and(|l| {
            procs
                .get(parent)
                .and_then(|p| p.live.as_ref())
                .is_some_and(|pl| l.ids.files_id == pl.ids.files_id || l.ids.fs_id == pl.ids.fs_id)
        });
        if shares {
            return Err(unsupported(format!(
                "process {} shares its files or fs with its parent {} but was reparented away from its session {}",
                e.pid, e.ppid, e.sid
            )));
        }
        set_creator(&mut plan, i, maker);
    }
    // A group whose leader is gone (after the sessions: a session helper
    // leads its group too): a helper child of its first member makes it.
    for i in 1..n {
        let Some(e) = procs.get(i).map(|p| p.entry.clone()) else {
            continue;
        };
        if e.pgid != 0 && e.pgid != e.pid && e.pgid != root_pgid && !taken(e.pgid, &index) {
            debug!("helper {} holds the group of {}", e.pgid, e.pid);
            let h = push_helper(procs, &mut index, e.pgid, e.pid, e.sid);
            set_creator(&mut plan, h, i);
        }
    }
    Ok(plan)
}

/// The index of process `i`'s parent; `None` for the root.
fn parent_of(procs: &[ProcImage], i: usize, index: &HashMap<u32, usize>) -> Option<usize> {
    procs
        .get(i)
        .and_then(|p| index.get(&p.entry.ppid).copied())
        .filter(|_| i != 0)
}

fn set_creator(plan: &mut SessionPlan, i: usize, by: usize) {
    if let Some(slot) = plan.creator.get_mut(i) {
        *slot = by;
    } else {
        plan.creator.resize(i, 0);
        plan.creator.push(by);
    }
}

/// Add a helper task with id `pid` (its group's too), a child of `ppid`,
/// in session `sid`; its index.
fn push_helper(
    procs: &mut Vec<ProcImage>,
    index: &mut HashMap<u32, usize>,
    pid: u32,
    ppid: u32,
    sid: u32,
) -> usize {
    procs.push(ProcImage {
        entry: PstreeEntry {
            pid,
            ppid,
            pgid: pid,
            sid,
            threads: vec![pid],
            ..Default::default()
        },
        live: None,
        exit_code: 0,
        helper: true,
    });
    let h = procs.len() - 1;
    index.insert(pid, h);
    h
}

/// When session `sid` is reached up the ancestors from `parent`: the
/// session leaders on the way, which must be born in `sid` and call
/// setsid later. `None` when an ancestor on the way left `sid` without
/// leading a session of its own (the process was reparented).
fn born_with(
    procs: &[ProcImage],
    index: &HashMap<u32, usize>,
    parent: usize,
    sid: u32,
) -> Option<Vec<usize>> {
    let mut marks = Vec::new();
    let mut a = parent;
    for _ in 0..procs.len() {
        let e = &procs.get(a)?.entry;
        if e.pid == sid || e.sid == sid {
            return Some(marks);
        }
        if e.sid != e.pid || a == 0 {
            return None;
        }
        marks.push(a);
        a = parent_of(procs, a, index)?;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, sid: u32, pgid: u32, alive: bool) -> ProcImage {
        ProcImage {
            entry: PstreeEntry {
                pid,
                ppid,
                pgid,
                sid,
                threads: if alive { vec![pid] } else { vec![0] },
                ..Default::default()
            },
            live: None,
            exit_code: 0,
            helper: false,
        }
    }

    #[test]
    fn session_of_a_dead_leader_gets_a_helper_sibling() {
        // 6 called setsid, forked 7 and died: 7 went to init, session 6.
        let mut v = vec![p(1, 0, 1, 1, true), p(7, 1, 6, 6, true)];
        let plan = plan(&mut v).unwrap();
        assert_eq!(v.len(), 3);
        assert!(v[2].helper);
        assert_eq!((v[2].entry.pid, v[2].entry.ppid, v[2].entry.sid), (6, 1, 6));
        assert_eq!(plan.creator(2), Some(0));
        assert_eq!(plan.creator(1), Some(2), "7 is made by the helper");
        assert!(plan.adopted(1));
        let order = plan.made_by(&v, 0);
        assert_eq!(order, vec![(2, false)]);
    }

    #[test]
    fn zombie_or_live_leader_sibling_makes_the_orphan() {
        let mut v = vec![
            p(1, 0, 1, 1, true),
            p(6, 1, 6, 6, false),
            p(8, 1, 6, 6, true),
        ];
        let plan = plan(&mut v).unwrap();
        assert_eq!(v.len(), 3, "no helper: the leader is there");
        assert_eq!(plan.creator(2), Some(1));
    }

    #[test]
    fn orphan_of_a_nephew_leader_comes_through_a_helper_that_exits() {
        // 6 (under 5) leads session 6; its child 7 went to init 1.
        let mut v = vec![
            p(1, 0, 1, 1, true),
            p(5, 1, 5, 5, true),
            p(6, 5, 6, 6, false),
            p(7, 1, 6, 6, true),
        ];
        let plan = plan(&mut v).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!((v[4].entry.pid, v[4].entry.ppid, v[4].entry.sid), (8, 6, 6));
        assert_eq!(plan.creator(4), Some(2));
        assert!(plan.exits_early(4));
        assert_eq!(plan.creator(3), Some(4));
        assert!(!plan.adopted(3), "the init adopts it when the helper exits");
    }

    #[test]
    fn setsid_after_fork_is_late() {
        // 10 forked 11 then setsid; 11 forked 12 then setsid; 12 in 1.
        let mut v = vec![
            p(1, 0, 1, 1, true),
            p(10, 1, 10, 10, true),
            p(11, 10, 11, 11, true),
            p(12, 11, 1, 1, true),
        ];
        let plan = plan(&mut v).unwrap();
        assert!(plan.late_setsid(1) && plan.late_setsid(2));
        assert!(!plan.late_setsid(0) && !plan.late_setsid(3));
        assert_eq!(plan.creator(3), Some(2));
        assert_eq!(plan.made_by(&v, 2), vec![(3, true)]);
        assert_eq!(plan.made_by(&v, 1), vec![(2, true)], "11 is born in 1 too");
    }

    #[test]
    fn group_of_a_dead_leader_gets_a_helper_child() {
        let mut v = vec![
            p(1, 0, 1, 1, true),
            p(4, 1, 4, 4, true),
            p(18, 4, 4, 17, true),
        ];
        let plan = plan(&mut v).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(
            (
                v[3].entry.pid,
                v[3].entry.ppid,
                v[3].entry.sid,
                v[3].entry.pgid
            ),
            (17, 18, 4, 17)
        );
        assert_eq!(plan.creator(3), Some(2));
    }

    #[test]
    fn session_outside_the_pid_namespace_is_inherited_too() {
        // The root's session is outside (0); 2 forked 5, then setsid.
        let mut v = vec![
            p(1, 0, 0, 0, true),
            p(2, 1, 2, 2, true),
            p(5, 2, 0, 0, true),
        ];
        let plan = plan(&mut v).unwrap();
        assert_eq!(v.len(), 3, "no helper");
        assert!(plan.late_setsid(1));
        assert_eq!(plan.made_by(&v, 1), vec![(2, true)]);
    }

    #[test]
    fn session_leader_elsewhere_is_refused() {
        // 5 leads session 5 under 2; 9 in session 5 hangs under 3.
        let mut v = vec![
            p(1, 0, 1, 1, true),
            p(2, 1, 1, 1, true),
            p(5, 2, 5, 5, true),
            p(3, 1, 1, 1, true),
            p(9, 3, 5, 5, true),
        ];
        let err = plan(&mut v).unwrap_err().to_string();
        assert!(err.contains("process 9 is in session 5"), "{err}");
    }
}
