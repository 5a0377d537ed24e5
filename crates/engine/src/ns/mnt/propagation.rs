//! Mount propagation of a restored mount namespace: peer groups
//! (mountinfo's `shared:N`, `MntEntry.shared_id`), slaves (`master:N`,
//! `master_id`) and unbindable mounts, rebuilt as CRIU 4.2 does with
//! MOVE_MOUNT_SET_GROUP ("mounts v2").
//!
//! Every mount is made private; only once the whole tree stands (so that
//! no mount propagates while it is built) does [`plan`]'s list of steps
//! run, on an `O_PATH` descriptor of each mount's root:
//!
//! - mounts with the same (shared_id, master_id) pair form a group; a
//!   group whose master_id is another group's shared_id is that group's
//!   slave, so groups are walked masters first (tree order);
//! - in each group the mount with the widest root (shortest root path)
//!   comes first: a slave takes its master group's peer group (from that
//!   group's first mount) and is made MS_SLAVE, then a shared one is made
//!   MS_SHARED (a new peer group); every other mount of the group then
//!   copies the first one's peer group and master (the kernel wants the
//!   source's root to hold the target's, on the same superblock: checked
//!   here, before anything is made); slaves without a peer group whose
//!   roots do not nest each take the master group's instead (CRIU 4.2
//!   refuses those);
//! - unbindable mounts are made so last.
//!
//! A master outside the namespace (a slave of a host mount) is not
//! rebuilt here: such a mount keeps its peer group but not its master,
//! with a warning (external sharing is `--enable-external-masters`'
//! business).

use super::under;
use crust_images::proto::mnt::MntEntry;
use std::collections::HashMap;

/// MS_SHARED, MS_SLAVE, MS_UNBINDABLE (linux/mount.h).
const MS_UNBINDABLE: u32 = 1 << 17;

/// One step of rebuilding the propagation, by mount id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `to` joins `from`'s peer group and gets `from`'s master.
    SetGroup { from: u32, to: u32 },
    /// The mount becomes a slave of its peer group (and leaves it).
    Slave(u32),
    /// The mount gets a peer group of its own (it may stay a slave).
    Shared(u32),
    /// The mount becomes unbindable.
    Unbindable(u32),
}

/// The steps to rebuild the propagation, and the ids of mounts whose
/// master is outside the namespace (not rebuilt).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub outside_master: Vec<u32>,
}

struct Group<'a> {
    shared: u32,
    master: u32,
    /// In mount order.
    members: Vec<&'a MntEntry>,
    /// Index of the group this one is a slave of.
    parent: Option<usize>,
}

impl Group<'_> {
    /// The member with the widest root (the first such in mount order).
    fn first(&self) -> Option<&MntEntry> {
        self.members
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(i, m)| (m.root.len(), *i))
            .map(|(_, m)| m)
    }
}

fn ids(e: &MntEntry) -> (u32, u32) {
    (e.shared_id.unwrap_or(0), e.master_id.unwrap_or(0))
}

/// Can the peer group (and master) of `from` be copied to `to`?
fn holds(from: &MntEntry, to: &MntEntry) -> bool {
    from.root_dev == to.root_dev && under(&to.root, &from.root)
}

fn groups(entries: &[MntEntry]) -> Result<Vec<Group<'_>>, String> {
    let mut out: Vec<Group<'_>> = Vec::new();
    for e in entries {
        let (shared, master) = ids(e);
        if shared == 0 && master == 0 {
            continue;
        }
        match out
            .iter_mut()
            .find(|g| g.shared == shared && g.master == master)
        {
            Some(g) => g.members.push(e),
            None => out.push(Group {
                shared,
                master,
                members: vec![e],
                parent: None,
            }),
        }
    }
    for i in 0..out.len() {
        let Some(g) = out.get(i) else { continue };
        let (shared, master) = (g.shared, g.master);
        if shared != 0 && out.iter().filter(|o| o.shared == shared).count() > 1 {
            return Err(format!(
                "peer group {shared} has mounts with different masters"
            ));
        }
        if master == 0 {
            continue;
        }
        let parent = out.iter().position(|o| o.shared == master);
        if let Some(g) = out.get_mut(i) {
            g.parent = parent;
        }
    }
    Ok(out)
}

/// The steps for the mounts `entries` (in mount order, parents first);
/// an error says why the recorded propagation cannot be rebuilt.
pub(crate) fn plan(entries: &[MntEntry]) -> Result<Plan, String> {
    plan_with(entries, &[])
}

/// [`plan`] for a mount namespace made after others of the tree, whose
/// mounts (`outside`, made already, their propagation set) a group of
/// `entries` takes its peer group or master from when it has the same
/// shared id or master as one of them (peer groups are global: a mount of
/// one namespace may be the peer or master of one of another). The steps
/// name `outside` mounts by id too.
pub(crate) fn plan_with(entries: &[MntEntry], outside: &[MntEntry]) -> Result<Plan, String> {
    let groups = groups(entries)?;
    let mut plan = Plan::default();
    let mut done = vec![false; groups.len()];
    // Masters first: groups with no master in the namespace, then each
    // one's slaves depth first.
    let mut stack: Vec<usize> = (0..groups.len())
        .rev()
        .filter(|&i| groups.get(i).is_some_and(|g| g.parent.is_none()))
        .collect();
    while let Some(i) = stack.pop() {
        let Some(g) = groups.get(i) else { continue };
        if std::mem::replace(done.get_mut(i).ok_or("group index")?, true) {
            continue;
        }
        group_steps(&groups, g, outside, &mut plan)?;
        stack.extend(
            (0..groups.len())
                .rev()
                .filter(|&k| groups.get(k).is_some_and(|s| s.parent == Some(i))),
        );
    }
    if let Some(i) = done.iter().position(|d| !d) {
        let g = groups.get(i).map_or((0, 0), |g| (g.shared, g.master));
        return Err(format!(
            "the masters of peer group {} (master {}) form a loop",
            g.0, g.1
        ));
    }
    for e in entries {
        if e.flags & MS_UNBINDABLE != 0 {
            plan.steps.push(Step::Unbindable(e.mnt_id));
        }
    }
    Ok(plan)
}

/// The mount of `outside` that `pick` accepts whose root holds `to`'s, the
/// widest.
fn widest<'a>(
    outside: &'a [MntEntry],
    to: &MntEntry,
    pick: impl Fn(&MntEntry) -> bool,
) -> Option<&'a MntEntry> {
    outside
        .iter()
        .filter(|o| pick(o) && holds(o, to))
        .min_by_key(|o| o.root.len())
}

/// Where mount `to`, a slave of peer group `master`, takes its master
/// from: the master group's widest mount in its namespace (`inside`), else
/// a mount of that group made in another namespace, then made MS_SLAVE
/// (`true`); or a mount of another namespace that is a slave of the same
/// master without a peer group (`false`: nothing more to do).
fn master_source(
    master: u32,
    inside: Option<&MntEntry>,
    outside: &[MntEntry],
    to: &MntEntry,
) -> Option<(u32, bool)> {
    if let Some(m) = inside.filter(|m| holds(m, to)) {
        return Some((m.mnt_id, true));
    }
    if let Some(m) = widest(outside, to, |o| o.shared_id == Some(master)) {
        return Some((m.mnt_id, true));
    }
    widest(outside, to, |o| {
        o.master_id == Some(master) && o.shared_id.unwrap_or(0) == 0
    })
    .map(|m| (m.mnt_id, false))
}

fn push_master(plan: &mut Plan, (from, slave): (u32, bool), to: u32) {
    plan.steps.push(Step::SetGroup { from, to });
    if slave {
        plan.steps.push(Step::Slave(to));
    }
}

fn group_steps(
    groups: &[Group<'_>],
    g: &Group<'_>,
    outside: &[MntEntry],
    plan: &mut Plan,
) -> Result<(), String> {
    let first = g.first().ok_or("an empty peer group")?;
    let master = g.parent.and_then(|p| groups.get(p)).and_then(Group::first);
    // A peer group with a mount in a namespace made already: join it (its
    // master comes with it).
    let peer = (g.shared != 0)
        .then(|| widest(outside, first, |o| o.shared_id == Some(g.shared)))
        .flatten();
    if peer.is_none() {
        if let Some(o) = outside
            .iter()
            .find(|o| g.shared != 0 && o.shared_id == Some(g.shared))
        {
            return Err(format!(
                "peer group {} has mounts in another mount namespace of the tree (mount {} at {}, root {}), none of whose roots holds the root of mount {} at {} ({}); crust cannot join them",
                g.shared, o.mnt_id, o.mountpoint, o.root, first.mnt_id, first.mountpoint, first.root
            ));
        }
    }
    let mut linked = g.shared != 0;
    if let Some(p) = peer {
        plan.steps.push(Step::SetGroup {
            from: p.mnt_id,
            to: first.mnt_id,
        });
    } else {
        if g.master != 0 {
            match master_source(g.master, master, outside, first) {
                Some(src) => {
                    push_master(plan, src, first.mnt_id);
                    linked = true;
                }
                None => {
                    if let Some(m) = master {
                        return Err(format!(
                            "mount {} at {} (root {}) is a slave of peer group {}, whose widest mount {} at {} (root {}) does not hold its root on the same filesystem",
                            first.mnt_id, first.mountpoint, first.root, g.master, m.mnt_id, m.mountpoint, m.root
                        ));
                    }
                    plan.outside_master
                        .extend(g.members.iter().map(|m| m.mnt_id));
                }
            }
        }
        if g.shared != 0 {
            plan.steps.push(Step::Shared(first.mnt_id));
        }
    }
    if !linked {
        // Slaves of an outside master with no peers: nothing links them.
        return Ok(());
    }
    for o in g.members.iter().filter(|o| o.mnt_id != first.mnt_id) {
        // Slaves with no peer group of their own need not nest: each can
        // take its master from the master group.
        if g.shared == 0 && !holds(first, o) {
            if let Some(src) = master_source(g.master, master, outside, o) {
                push_master(plan, src, o.mnt_id);
                continue;
            }
        }
        if !holds(first, o) {
            return Err(format!(
                "mounts {} at {} (root {}) and {} at {} (root {}) are in one peer group (shared {}, master {}) but neither's root holds the other's",
                first.mnt_id, first.mountpoint, first.root, o.mnt_id, o.mountpoint, o.root, g.shared, g.master
            ));
        }
        plan.steps.push(Step::SetGroup {
            from: first.mnt_id,
            to: o.mnt_id,
        });
    }
    Ok(())
}

/// Run the steps on the mounts' root descriptors (`fds`, by mount id);
/// `name` names a mount in errors.
pub(crate) fn run(
    plan: &Plan,
    fds: &HashMap<u32, std::os::fd::OwnedFd>,
    name: impl Fn(u32) -> String,
) -> Result<(), (String, std::io::Error)> {
    use std::os::fd::AsFd;
    run_on(plan, |id| fds.get(&id).map(AsFd::as_fd), name)
}

/// [`run`] with the descriptors looked up by `fds`.
pub(crate) fn run_on<'a>(
    plan: &Plan,
    fds: impl Fn(u32) -> Option<std::os::fd::BorrowedFd<'a>>,
    name: impl Fn(u32) -> String,
) -> Result<(), (String, std::io::Error)> {
    use crust_sys::mount_group::{set_group, set_propagation};
    for m in &plan.outside_master {
        log::warn!(
            "{}: its master is outside the mount namespace; it is restored without it",
            name(*m)
        );
    }
    let fd = |id: u32| {
        fds(id).ok_or_else(|| {
            (
                format!("{}: no descriptor of it", name(id)),
                std::io::Error::from_raw_os_error(libc::EBADF),
            )
        })
    };
    for s in &plan.steps {
        log::debug!("propagation: {s:?}");
        let (r, what) = match *s {
            Step::SetGroup { from, to } => (
                set_group(fd(from)?, fd(to)?),
                format!("{} joins the peer group of {}", name(to), name(from)),
            ),
            Step::Slave(id) => (
                set_propagation(fd(id)?, libc::MS_SLAVE),
                format!("make {} a slave", name(id)),
            ),
            Step::Shared(id) => (
                set_propagation(fd(id)?, libc::MS_SHARED),
                format!("make {} shared", name(id)),
            ),
            Step::Unbindable(id) => (
                set_propagation(fd(id)?, libc::MS_UNBINDABLE),
                format!("make {} unbindable", name(id)),
            ),
        };
        r.map_err(|e| (what, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: u32, root: &str, shared: u32, master: u32) -> MntEntry {
        MntEntry {
            mnt_id: id,
            root_dev: 7,
            root: root.into(),
            mountpoint: format!("/m{id}"),
            shared_id: Some(shared),
            master_id: Some(master),
            ..Default::default()
        }
    }

    #[test]
    fn masters_come_before_slaves_and_peers_copy_the_widest() {
        // 3 and 4 are slaves of group 2 (mounts 1 and 2), 4 a peer of 3
        // with a narrower root; 5 is private and unbindable.
        let mut un = e(5, "/", 0, 0);
        un.flags = MS_UNBINDABLE;
        let ents = vec![
            e(4, "/a", 3, 2),
            e(3, "/", 3, 2),
            e(2, "/sub", 2, 0),
            e(1, "/", 2, 0),
            un,
        ];
        let p = plan(&ents).unwrap();
        use Step::*;
        assert_eq!(
            p.steps,
            vec![
                Shared(1),
                SetGroup { from: 1, to: 2 },
                SetGroup { from: 1, to: 3 },
                Slave(3),
                Shared(3),
                SetGroup { from: 3, to: 4 },
                Unbindable(5),
            ]
        );
        assert!(p.outside_master.is_empty());
    }

    #[test]
    fn what_cannot_be_rebuilt_is_said() {
        // Peers whose roots do not nest.
        let err = plan(&[e(1, "/a", 2, 0), e(2, "/b", 2, 0)]).unwrap_err();
        assert!(err.contains("mounts 1 at /m1"), "{err}");
        // A slave whose master's root is narrower.
        let err = plan(&[e(1, "/a", 2, 0), e(2, "/", 0, 2)]).unwrap_err();
        assert!(err.contains("slave of peer group 2"), "{err}");
        // Masters in a loop.
        let err = plan(&[e(1, "/", 2, 3), e(2, "/", 3, 2)]).unwrap_err();
        assert!(err.contains("loop"), "{err}");
        // Slaves whose roots do not nest each take the master's group.
        let p = plan(&[e(1, "/", 2, 0), e(2, "/a", 0, 2), e(3, "/b", 0, 2)]).unwrap();
        use Step::*;
        assert_eq!(
            p.steps,
            vec![
                Shared(1),
                SetGroup { from: 1, to: 2 },
                Slave(2),
                SetGroup { from: 1, to: 3 },
                Slave(3)
            ]
        );
        // A master outside: kept apart, the peers still linked.
        let p = plan(&[e(1, "/", 4, 9), e(2, "/x", 4, 9)]).unwrap();
        assert_eq!(p.outside_master, vec![1, 2]);
        assert_eq!(
            p.steps,
            vec![Step::Shared(1), Step::SetGroup { from: 1, to: 2 }]
        );
    }

    #[test]
    fn groups_of_a_namespace_made_before_are_joined() {
        use Step::*;
        // Made already (another namespace): 1 shared (group 2), 2 a slave
        // of group 2 without peers.
        let outside = vec![e(1, "/", 2, 0), e(2, "/", 0, 2)];
        // A peer of 1 (narrower root) and its peer 11: they join 1's group.
        // 12: a slave of group 2 whose master group is outside; 13: a
        // slave of a master no mount here has (kept apart).
        let ents = vec![
            e(10, "/a", 2, 0),
            e(11, "/a/b", 2, 0),
            e(12, "/c", 0, 2),
            e(13, "/", 0, 9),
        ];
        let p = plan_with(&ents, &outside).unwrap();
        assert_eq!(
            p.steps,
            vec![
                SetGroup { from: 1, to: 10 },
                SetGroup { from: 10, to: 11 },
                SetGroup { from: 1, to: 12 },
                Slave(12),
            ]
        );
        assert_eq!(p.outside_master, vec![13]);
        // A slave of a master outside with no mount of its group made,
        // only another slave of it: that one's master is copied.
        let p = plan_with(&[e(20, "/x", 0, 7)], &[e(3, "/", 0, 7)]).unwrap();
        assert_eq!(p.steps, vec![SetGroup { from: 3, to: 20 }]);
        // An outside peer whose root does not hold this one's: refused.
        let err = plan_with(&[e(30, "/", 2, 0)], &[e(4, "/sub", 2, 0)]).unwrap_err();
        assert!(err.contains("peer group 2 has mounts in another"), "{err}");
    }
}
