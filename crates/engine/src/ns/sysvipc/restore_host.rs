//! Restore of the System V objects of crust's (the host's) IPC namespace
//! that were the tree's alone (see [`super::host`]): each id and key must
//! be free ([`check_free`], before any task exists), then the tree's root
//! makes each object with remote syscalls ([`create`]) so that the kernel
//! records it as creator and user, as the dump's rule expects next time.
//! If the restore fails, [`Made`] removes what was made.

// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::restore::{check_id, fill_segment, set_next_id, Queue, Segment};
use super::*;
use crate::ErrorKind;
use crust_sys::RemoteAddr;

/// Objects made in crust's namespace by a restore not finished yet:
/// removed on drop unless [`Made::keep`] was called.
#[derive(Debug, Default)]
pub struct Made {
    shm: Vec<i32>,
    sem: Vec<i32>,
    msg: Vec<i32>,
}

impl Made {
    /// The restore succeeded: the objects are the tree's again.
    pub fn keep(&mut self) {
        self.shm.clear();
        self.sem.clear();
        self.msg.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let made = HostObjects::of(
            std::mem::take(&mut self.shm),
            std::mem::take(&mut self.sem),
            std::mem::take(&mut self.msg),
        );
        made.remove();
    }
}

fn taken(what: String) -> Error {
    Error::Refused {
        what,
        kind: ErrorKind::Busy,
    }
}

/// Every id and key of `ns` must be free in crust's namespace.
pub(super) fn check_free(ns: &IpcNs) -> Result<(), Error> {
    const FIX: &str = "remove it (ipcrm) or restore where it is free";
    for s in &ns.shms {
        let d = &s.entry.desc;
        if let Ok(st) = ipc::shm_stat(d.id as i32) {
            return Err(taken(format!(
                "System V shared memory id {} is taken in the host's IPC namespace (key {:#x}, created by pid {}): {FIX}",
                d.id, st.perm.key as u32, st.cpid
            )));
        }
        if d.key != 0 {
            if let Ok(other) = ipc::shmget(d.key as i32, 0, 0) {
                return Err(taken(format!(
                    "the key {:#x} of System V shared memory segment {} is taken in the host's IPC namespace by segment {other}: {FIX}",
                    d.key, d.id
                )));
            }
        }
    }
    for (e, _) in &ns.sems {
        let d = &e.desc;
        if let Ok(st) = ipc::sem_stat(d.id as i32) {
            return Err(taken(format!(
                "System V semaphore set id {} is taken in the host's IPC namespace (key {:#x}): {FIX}",
                d.id, st.perm.key as u32
            )));
        }
        if d.key != 0 {
            if let Ok(other) = ipc::semget(d.key as i32, 0, 0) {
                return Err(taken(format!(
                    "the key {:#x} of System V semaphore set {} is taken in the host's IPC namespace by set {other}: {FIX}",
                    d.key, d.id
                )));
            }
        }
    }
    for q in &ns.msgs {
        let d = &q.entry.desc;
        if let Ok(st) = ipc::msg_stat(d.id as i32) {
            return Err(taken(format!(
                "System V message queue id {} is taken in the host's IPC namespace (key {:#x}): {FIX}",
                d.id, st.perm.key as u32
            )));
        }
        if d.key != 0 {
            if let Ok(other) = ipc::msgget(d.key as i32, 0) {
                return Err(taken(format!(
                    "the key {:#x} of System V message queue {} is taken in the host's IPC namespace by queue {other}: {FIX}",
                    d.key, d.id
                )));
            }
        }
    }
    Ok(())
}

/// Run `get` (which makes an object) with `kernel/<kind>_next_id` set to
/// `id`. The kernel sets it back to -1 (none) once it made an object (and
/// refuses -1 from a writer); if `get` failed before, the id would go to
/// the next object anyone makes, so a throwaway private object takes it.
fn with_next_id<T>(
    kind: &str,
    id: u32,
    get: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    set_next_id(kind, id)?;
    let r = get();
    if r.is_err() {
        clear_next_id(kind);
    }
    r
}

/// Make `kernel/<kind>_next_id` -1 again, if it is not, by making and
/// removing a private object.
fn clear_next_id(kind: &str) {
    let set = read_sysctl(&format!("kernel/{kind}_next_id"))
        .ok()
        .and_then(|t| parse_next_id(&t));
    if set.is_none() {
        return;
    }
    let private = libc::IPC_PRIVATE;
    let flags = libc::IPC_CREAT | 0o600;
    let removed = match kind {
        "shm" => ipc::shmget(private, 1, flags).and_then(ipc::shm_rmid),
        "sem" => ipc::semget(private, 1, flags).and_then(ipc::sem_rmid),
        _ => ipc::msgget(private, flags).and_then(ipc::msg_rmid),
    };
    if let Err(e) = removed {
        log::warn!("kernel/{kind}_next_id is left set: {e}");
    }
}

/// A buffer in the root for the calls' data, mapped for the purpose.
struct Buf {
    addr: u64,
    len: u64,
}

/// Make every object of `ns` by the root `root` (driven through the
/// trampoline at `tramp`); what was made goes into `made`.
pub(super) fn create(
    ns: &IpcNs,
    root: &mut Task,
    tramp: u64,
    made: &mut Made,
) -> Result<(), Error> {
    let mut r = Remote::on_trampoline(root, tramp);
    let need = ns
        .sems
        .iter()
        .map(|(e, _)| e.nsems as u64 * 2)
        .chain(
            ns.msgs
                .iter()
                .flat_map(|q| q.msgs.iter().map(|m| 8 + m.1.len() as u64)),
        )
        .max()
        .unwrap_or(0)
        .max(8);
    let len = need.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let addr = r.call(
        "mmap of a buffer for System V objects",
        libc::SYS_mmap,
        [
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let buf = Buf { addr, len };
    let res = (|| -> Result<(), Error> {
        for s in &ns.shms {
            create_segment(&mut r, s, made)?;
        }
        for (e, values) in &ns.sems {
            create_sem(&mut r, &buf, e, values, made)?;
        }
        for q in &ns.msgs {
            create_queue(&mut r, &buf, q, made)?;
        }
        Ok(())
    })();
    let unmapped = r.call(
        "munmap of the System V buffer",
        libc::SYS_munmap,
        [buf.addr, buf.len, 0, 0, 0, 0],
    );
    res?;
    unmapped?;
    debug!(
        "System V objects of the host's namespace made again by the root: {} segments, {} semaphore sets, {} queues",
        ns.shms.len(),
        ns.sems.len(),
        ns.msgs.len()
    );
    Ok(())
}

/// Copy `data` into the buffer.
fn put(r: &Remote<'_>, buf: &Buf, data: &[u8]) -> Result<(), Error> {
    let pid = r.pid();
    if data.len() as u64 > buf.len {
        return Err(Error::Restore {
            pid,
            what: format!(
                "{} bytes do not fit the {}-byte System V buffer (crust bug)",
                data.len(),
                buf.len
            ),
        });
    }
    let n = crust_sys::mem::write(pid, RemoteAddr(buf.addr), data)
        .map_err(sys_err(pid, "process_vm_writev into the System V buffer"))?;
    if n != data.len() {
        return Err(Error::Restore {
            pid,
            what: format!(
                "short write into the System V buffer ({n} of {})",
                data.len()
            ),
        });
    }
    Ok(())
}

fn create_segment(r: &mut Remote<'_>, s: &Segment, made: &mut Made) -> Result<(), Error> {
    let d = &s.entry.desc;
    let pid = r.pid();
    let what = format!("System V segment {}", d.id);
    // With SHM_HUGETLB and its page size bits when it had huge pages
    // (checked at load).
    let flags = (d.mode & 0o777) as u64
        | (libc::IPC_CREAT | libc::IPC_EXCL) as u64
        | u64::from(s.entry.hugetlb_flag.unwrap_or(0));
    let id = with_next_id("shm", d.id, || {
        r.call(
            &format!("shmget of {what} (key {:#x})", d.key),
            libc::SYS_shmget,
            [d.key as u64, s.entry.size, flags, 0, 0, 0],
        )
    })? as i32;
    made.shm.push(id);
    check_id(pid, &what, d.id, id)?;
    ipc::shm_set(
        id,
        crate::util::idmap::host_uid(d.uid),
        crate::util::idmap::host_gid(d.gid),
        d.mode,
    )
    .map_err(sys_err(pid, format!("shmctl(IPC_SET) of {what}")))?;
    fill_segment(pid, id, s, &what)
}

fn create_sem(
    r: &mut Remote<'_>,
    buf: &Buf,
    e: &IpcSemEntry,
    values: &[u16],
    made: &mut Made,
) -> Result<(), Error> {
    let d = &e.desc;
    let pid = r.pid();
    let what = format!("System V semaphore set {}", d.id);
    let flags = (d.mode & 0o777) as u64 | (libc::IPC_CREAT | libc::IPC_EXCL) as u64;
    let id = with_next_id("sem", d.id, || {
        r.call(
            &format!("semget of {what} (key {:#x})", d.key),
            libc::SYS_semget,
            [d.key as u64, e.nsems as u64, flags, 0, 0, 0],
        )
    })? as i32;
    made.sem.push(id);
    check_id(pid, &what, d.id, id)?;
    ipc::sem_set(
        id,
        crate::util::idmap::host_uid(d.uid),
        crate::util::idmap::host_gid(d.gid),
        d.mode,
    )
    .map_err(sys_err(pid, format!("semctl(IPC_SET) of {what}")))?;
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    put(r, buf, &raw)?;
    r.call(
        &format!("semctl(SETALL) of {what}"),
        libc::SYS_semctl,
        [id as u64, 0, libc::SETALL as u64, buf.addr, 0, 0],
    )?;
    Ok(())
}

fn create_queue(r: &mut Remote<'_>, buf: &Buf, q: &Queue, made: &mut Made) -> Result<(), Error> {
    let d = &q.entry.desc;
    let pid = r.pid();
    let what = format!("System V message queue {}", d.id);
    let flags = (d.mode & 0o777) as u64 | (libc::IPC_CREAT | libc::IPC_EXCL) as u64;
    let id = with_next_id("msg", d.id, || {
        r.call(
            &format!("msgget of {what} (key {:#x})", d.key),
            libc::SYS_msgget,
            [d.key as u64, flags, 0, 0, 0, 0],
        )
    })? as i32;
    made.msg.push(id);
    check_id(pid, &what, d.id, id)?;
    ipc::msg_set(
        id,
        crate::util::idmap::host_uid(d.uid),
        crate::util::idmap::host_gid(d.gid),
        d.mode,
        q.entry.qbytes as u64,
    )
    .map_err(sys_err(
        pid,
        format!("msgctl(IPC_SET) of {what} (qbytes {})", q.entry.qbytes),
    ))?;
    let nowait = libc::IPC_NOWAIT as u64;
    for (i, (mtype, text)) in q.msgs.iter().enumerate() {
        let mut m = mtype.to_ne_bytes().to_vec();
        m.extend_from_slice(text);
        put(r, buf, &m)?;
        r.call(
            &format!("msgsnd of message {i} ({} bytes) into {what}", text.len()),
            libc::SYS_msgsnd,
            [id as u64, buf.addr, text.len() as u64, nowait, 0, 0],
        )?;
    }
    if q.msgs.is_empty() {
        // An empty queue: one message sent and received by the root, so
        // that the kernel names it as the queue's last user.
        put(r, buf, &1i64.to_ne_bytes())?;
        r.call(
            &format!("msgsnd of a marker into {what}"),
            libc::SYS_msgsnd,
            [id as u64, buf.addr, 0, nowait, 0, 0],
        )?;
        r.call(
            &format!("msgrcv of the marker from {what}"),
            libc::SYS_msgrcv,
            [id as u64, buf.addr, 0, 0, nowait, 0],
        )?;
    }
    Ok(())
}
