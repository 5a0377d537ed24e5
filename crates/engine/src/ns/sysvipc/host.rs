//! System V objects of crust's own (the host's) IPC namespace that only
//! the dumped tree uses. CRIU dumps none of them; crust dumps those it can
//! show belong to the tree alone, into the images of that namespace's id
//! (3: `ipcns-shm-3.img`, `ipcns-sem-3.img`, `ipcns-msg-3.img`, no
//! `ipcns-var`: the host's limits are not the tree's), removes them once a
//! dump has killed the tree, and makes them again at restore with their
//! ids and keys.
//!
//! Which objects are the tree's (pids as crust sees them):
//! - a segment whose creator (`shm_cpid`) is a process of the tree, or
//!   that the tree has attached, is the tree's when its creator is in the
//!   tree and every attachment is the tree's: the kernel's `shm_nattch`
//!   counts one per VMA, which must equal the VMAs of the tree that map
//!   it. Otherwise the dump is refused, naming the creator and every
//!   process outside the tree that maps it;
//! - a semaphore set or a message queue keeps no creator and no list of
//!   users, only the last pid that operated on each semaphore (GETPID) and
//!   the last sender and receiver of a queue. Such an object is the tree's
//!   when at least one of those pids is a process of the tree, none is a
//!   process outside it, and (semaphores) no task waits on it (the tree's
//!   own waiters were interrupted when it was frozen, so a waiter is
//!   someone else). With a pid of the tree and one outside, the dump is
//!   refused naming them; with no pid of the tree the object is not the
//!   tree's and is left alone. A receiver outside the tree blocked in
//!   msgrcv cannot be seen.
//!
//! At restore the tree's root makes the objects (remote shmget, SETALL,
//! msgsnd), so a second dump finds the same evidence: the root as creator
//! and as the last user of each semaphore and queue.

use super::*;
use crate::Error;
use crate::ErrorKind;
use std::collections::HashMap;
use std::sync::Arc;

/// The image id of crust's IPC namespace (CRIU's numbering).
pub(super) fn host_ns_id() -> u32 {
    crate::ns::ids::NsIds::CRUST.get(NsKind::Ipc)
}

/// Objects of crust's namespace dumped with the tree: removed once the
/// tree is dead, as its own namespace would have gone with it.
#[derive(Debug, Default)]
pub struct HostObjects {
    shm: Vec<i32>,
    sem: Vec<i32>,
    msg: Vec<i32>,
}

impl HostObjects {
    pub(super) fn of(shm: Vec<i32>, sem: Vec<i32>, msg: Vec<i32>) -> HostObjects {
        HostObjects { shm, sem, msg }
    }

    /// IPC_RMID of each (the tree is dead: its state is in the images).
    pub fn remove(self) {
        let all = [
            ("segment", &self.shm, ipc::shm_rmid as fn(i32) -> _),
            ("semaphore set", &self.sem, ipc::sem_rmid),
            ("message queue", &self.msg, ipc::msg_rmid),
        ];
        for (what, ids, rm) in all {
            for &id in ids {
                match rm(id) {
                    Ok(()) => debug!("System V {what} {id} removed with the tree"),
                    Err(e) => log::warn!("could not remove System V {what} {id}: {e}"),
                }
            }
        }
    }
}

/// The System V objects of a dump of the tree rooted at `root` (`tree`:
/// its pids, zombies too; `vmas`: the VMAs of its live processes): those
/// of the tree's own IPC namespace (`own`, its id), or those of crust's
/// namespace that only the tree uses. Returns what to remove once the tree
/// is dead.
pub fn dump(
    dir: &Path,
    root: i32,
    own: Option<u32>,
    tree: &[i32],
    vmas: &HashMap<i32, Arc<Vec<Vma>>>,
) -> Result<HostObjects, Error> {
    if let Some(id) = own {
        dump_ns(dir, root, id)?;
        return Ok(HostObjects::default());
    }
    let mut attached: HashMap<i32, u64> = HashMap::new();
    for v in vmas.values().flat_map(|v| v.iter()) {
        if v.status & vs::AREA_SYSVIPC != 0 {
            *attached.entry(v.map.inode as i32).or_default() += 1;
        }
    }
    let users = TreeUse {
        tree: tree.to_vec(),
        attached,
    };
    let ns = host_ns_id();
    let msgmax = sysctl_num("kernel/msgmax")? as usize;
    // An image only for a kind the tree has objects of (CRIU's sets never
    // have them); a set with any gets all three, read together at restore.
    let shm = dump::dump_shm(dir, root, ns, &mut |st| users.shm(st), false)?;
    let sem = dump::dump_sem(dir, root, ns, &mut |st| users.sem(st), false)?;
    let msg = dump::dump_msg(dir, root, ns, msgmax, &mut |st| users.msg(st), false)?;
    let objects = HostObjects { shm, sem, msg };
    if objects.shm.is_empty() && objects.sem.is_empty() && objects.msg.is_empty() {
        return Ok(objects);
    }
    // The kinds with no object of the tree's get their empty image.
    if objects.shm.is_empty() {
        dump::dump_shm(dir, root, ns, &mut |_| Ok(false), true)?;
    }
    if objects.sem.is_empty() {
        dump::dump_sem(dir, root, ns, &mut |_| Ok(false), true)?;
    }
    if objects.msg.is_empty() {
        dump::dump_msg(dir, root, ns, msgmax, &mut |_| Ok(false), true)?;
    }
    log::info!(
        "System V objects of the host's IPC namespace that only the tree uses: segments {:?}, semaphore sets {:?}, message queues {:?}",
        objects.shm,
        objects.sem,
        objects.msg
    );
    Ok(objects)
}

/// What the dump knows of the tree's use of System V objects.
struct TreeUse {
    tree: Vec<i32>,
    /// Segment id -> how many VMAs of the tree map it.
    attached: HashMap<i32, u64>,
}

/// "pid N (comm)", or "pid N (gone)".
fn who(pid: i32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(c) => format!("pid {pid} ({})", c.trim()),
        Err(_) => format!("pid {pid} (gone)"),
    }
}

fn refuse(what: String) -> Error {
    Error::Refused {
        what,
        kind: ErrorKind::Busy,
    }
}

impl TreeUse {
    fn ours(&self, pid: i32) -> bool {
        self.tree.contains(&pid)
    }

    fn shm(&self, st: &ipc::ShmStat) -> Result<bool, Error> {
        let ours = self.attached.get(&st.id).copied().unwrap_or(0);
        let created = self.ours(st.cpid);
        if !created && ours == 0 {
            return Ok(false);
        }
        if created && st.nattch == ours {
            return Ok(true);
        }
        let mut why = Vec::new();
        if !created {
            why.push(format!("it was created by {}", who(st.cpid)));
        }
        if st.nattch != ours {
            let others = mapped_outside(st.id, &self.tree);
            why.push(format!(
                "it is attached {} times, {ours} of them by the tree{}",
                st.nattch,
                if others.is_empty() {
                    String::new()
                } else {
                    format!("; also mapped by {}", others.join(", "))
                }
            ));
        }
        Err(refuse(format!(
            "System V shared memory segment {} (key {:#x}) is not the tree's alone: {}. crust dumps System V objects of the host's IPC namespace only when the tree alone uses them (or give the tree an IPC namespace of its own)",
            st.id,
            st.perm.key as u32,
            why.join("; ")
        )))
    }

    /// The rule of semaphore sets and queues: `pids` are the last users the
    /// kernel recorded (0: none), `waiting` the tasks blocked on it.
    fn by_pids(&self, what: String, pids: &[i32], waiting: u32) -> Result<bool, Error> {
        if !pids.iter().any(|p| self.ours(*p)) {
            return Ok(false);
        }
        let mut outside: Vec<String> = pids
            .iter()
            .filter(|p| **p != 0 && !self.ours(**p))
            .map(|p| who(*p))
            .collect();
        outside.sort();
        outside.dedup();
        if outside.is_empty() && waiting == 0 {
            return Ok(true);
        }
        let mut why = Vec::new();
        if !outside.is_empty() {
            why.push(format!("also used by {}", outside.join(", ")));
        }
        if waiting > 0 {
            why.push(format!("{waiting} task(s) outside the tree wait on it"));
        }
        Err(refuse(format!(
            "{what} is not the tree's alone: {}. crust dumps System V objects of the host's IPC namespace only when the tree alone uses them (or give the tree an IPC namespace of its own)",
            why.join("; ")
        )))
    }

    fn sem(&self, st: &ipc::SemStat) -> Result<bool, Error> {
        let users = ipc::sem_users(st.id, st.nsems)
            .map_err(sys_err(0, format!("semctl({}, GETPID)", st.id)))?;
        let pids: Vec<i32> = users.iter().map(|u| u.pid).collect();
        let waiting = users.iter().map(|u| u.waiting).sum();
        self.by_pids(
            format!(
                "System V semaphore set {} (key {:#x})",
                st.id, st.perm.key as u32
            ),
            &pids,
            waiting,
        )
    }

    fn msg(&self, st: &ipc::MsgStat) -> Result<bool, Error> {
        self.by_pids(
            format!(
                "System V message queue {} (key {:#x})",
                st.id, st.perm.key as u32
            ),
            &[st.lspid, st.lrpid],
            0,
        )
    }
}

/// Processes outside `tree` that map segment `id` ("pid N (comm)").
fn mapped_outside(id: i32, tree: &[i32]) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if tree.contains(&pid) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        // start-end perms offset dev inode path
        let maps_it = maps.lines().any(|l| {
            let mut f = l.split_whitespace().skip(4);
            let ino = f.next().and_then(|i| i.parse::<i64>().ok());
            let path = f.next().unwrap_or("");
            path.starts_with("/SYSV") && ino == Some(id as i64)
        });
        if maps_it {
            out.push(who(pid));
        }
    }
    out
}
