//! System V IPC objects (shared memory segments, semaphore sets, message
//! queues) of the calling thread's IPC namespace, and joining another IPC
//! namespace with setns. Every call acts on the namespace of the calling
//! thread: crust runs them from a thread that joined the tree's namespace.

use crate::cvt;
use std::io;
use std::path::Path;

/// `ipc_perm.mode` bit of a segment marked for removal (IPC_RMID) that is
/// still attached somewhere.
pub const SHM_DEST: u32 = 0o1000;
/// `statfs.f_type` of the mqueue filesystem (POSIX message queues).
pub const MQUEUE_MAGIC: i64 = 0x1980_0202;

// Commands of shmctl/semctl/msgctl that libc does not name on every target.
const SHM_STAT: libc::c_int = 13;
const SHM_INFO: libc::c_int = 14;
const SEM_STAT: libc::c_int = 18;
const SEM_INFO: libc::c_int = 19;
const MSG_STAT: libc::c_int = 11;
const MSG_INFO: libc::c_int = 12;
const MSG_COPY: libc::c_int = 0o40000;

/// Owner and permissions of an IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcPerm {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
}

fn perm_of(p: &libc::ipc_perm) -> IpcPerm {
    IpcPerm {
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: p.mode as u32,
    }
}

/// `statfs(path).f_type`: which filesystem `path` is on.
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and lives across the call; `st` is a
    // writable statfs.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    cvt(r as libc::c_long)?;
    Ok(st.f_type as i64)
}

/// A buffer large enough for any of shm_info, seminfo and msginfo.
type InfoBuf = [u64; 16];

// ------------------------------------------------------------- shared memory

/// What SHM_STAT/IPC_STAT tell of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmStat {
    pub id: i32,
    pub perm: IpcPerm,
    pub size: u64,
    pub nattch: u64,
    /// The creator's pid and the last pid that attached or detached it
    /// (in the caller's pid namespace; 0 if it is not there).
    pub cpid: i32,
    pub lpid: i32,
}

fn shmctl_ds(id: i32, cmd: libc::c_int) -> io::Result<(i32, libc::shmid_ds)> {
    // SAFETY: an all-zero shmid_ds is a valid value of the plain C struct.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: the command writes one shmid_ds into `ds`, which is writable.
    let r = unsafe { libc::shmctl(id, cmd, &mut ds) };
    cvt(r as libc::c_long)?;
    Ok((r, ds))
}

/// The highest index in use in the segment table (SHM_INFO).
pub fn shm_max_index() -> io::Result<i32> {
    let mut buf: InfoBuf = [0; 16];
    // SAFETY: SHM_INFO writes a struct shm_info (48 bytes), smaller than
    // `buf`, which is writable.
    let r = unsafe { libc::shmctl(0, SHM_INFO, buf.as_mut_ptr().cast()) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

fn shm_stat_of(id: i32, ds: &libc::shmid_ds) -> ShmStat {
    ShmStat {
        id,
        perm: perm_of(&ds.shm_perm),
        size: ds.shm_segsz as u64,
        nattch: ds.shm_nattch,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
    }
}

/// The segment at table index `idx` (SHM_STAT), None if the slot is free.
pub fn shm_stat_index(idx: i32) -> io::Result<Option<ShmStat>> {
    match shmctl_ds(idx, SHM_STAT) {
        Ok((id, ds)) => Ok(Some(shm_stat_of(id, &ds))),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// IPC_STAT of segment `id`.
pub fn shm_stat(id: i32) -> io::Result<ShmStat> {
    let (_, ds) = shmctl_ds(id, libc::IPC_STAT)?;
    Ok(shm_stat_of(id, &ds))
}

/// shmget(2).
pub fn shmget(key: i32, size: u64, flags: i32) -> io::Result<i32> {
    // SAFETY: shmget takes integers only.
    let r = unsafe { libc::shmget(key, size as usize, flags) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// IPC_SET of segment `id`: its owner and permission bits.
pub fn shm_set(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let (_, mut ds) = shmctl_ds(id, libc::IPC_STAT)?;
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as libc::c_ushort;
    // SAFETY: IPC_SET reads one shmid_ds from `ds`, filled just above.
    let r = unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) };
    cvt(r as libc::c_long).map(drop)
}

/// IPC_RMID of segment `id`: gone once the last attachment goes.
pub fn shm_rmid(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer; null is allowed.
    let r = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    cvt(r as libc::c_long).map(drop)
}

/// A segment attached in crust's own address space; detached on drop.
#[derive(Debug)]
pub struct ShmAttach {
    addr: *mut u8,
    len: usize,
}

impl ShmAttach {
    /// Attach segment `id` (read-only or read-write) wherever the kernel
    /// likes; its length is the segment's size.
    pub fn attach(id: i32, read_only: bool) -> io::Result<ShmAttach> {
        let size = shm_stat(id)?.size as usize;
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        // SAFETY: a null address lets the kernel pick a free place, so no
        // existing mapping of crust is replaced.
        let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(ShmAttach {
            addr: p.cast(),
            len: size,
        })
    }

    /// Where it is attached.
    pub fn addr(&self) -> usize {
        self.addr as usize
    }

    /// The segment's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy `data` into the segment at `off` (attached read-write).
    pub fn write_at(&self, off: usize, data: &[u8]) -> io::Result<()> {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // SAFETY: [off, off + len) is inside the attachment (checked
        // above), which stays mapped while `self` lives; `data` is a
        // separate Rust buffer, so the ranges do not overlap. A read-only
        // attachment faults, which the caller avoids by attaching
        // read-write.
        let dst = self.addr.wrapping_add(off);
        // SAFETY: see above: `dst` is inside the attachment, `data` a separate
        // buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Copy `buf.len()` bytes of the segment at `off` into `buf`.
    pub fn read_at(&self, off: usize, buf: &mut [u8]) -> io::Result<()> {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // SAFETY: [off, off + len) is inside the attachment, mapped while
        // `self` lives; `buf` is a separate Rust buffer.
        let src = self.addr.wrapping_add(off);
        // SAFETY: see above: `src` is inside the attachment, `buf` a separate
        // buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

impl Drop for ShmAttach {
    fn drop(&mut self) {
        // SAFETY: `addr` is where shmat attached the segment; nothing
        // refers to it once `self` goes.
        unsafe { libc::shmdt(self.addr.cast()) };
    }
}

// ------------------------------------------------------------------ semaphores

/// What SEM_STAT tells of a semaphore set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemStat {
    pub id: i32,
    pub perm: IpcPerm,
    pub nsems: u32,
}

fn semctl_raw(id: i32, num: i32, cmd: libc::c_int, arg: u64) -> io::Result<i64> {
    // SAFETY: callers pass as `arg` either 0 or the address of a buffer
    // of the size the command reads or writes, valid across the call.
    let r = unsafe { libc::syscall(libc::SYS_semctl, id, num, cmd, arg) };
    cvt(r)
}

fn semctl_ds(id: i32, cmd: libc::c_int) -> io::Result<(i32, libc::semid_ds)> {
    // SAFETY: an all-zero semid_ds is a valid value of the plain C struct.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    let r = semctl_raw(id, 0, cmd, &mut ds as *mut libc::semid_ds as u64)?;
    Ok((r as i32, ds))
}

/// The highest index in use in the semaphore table (SEM_INFO).
pub fn sem_max_index() -> io::Result<i32> {
    let mut buf: InfoBuf = [0; 16];
    // struct seminfo is 40 bytes, smaller than `buf`.
    semctl_raw(0, 0, SEM_INFO, buf.as_mut_ptr() as u64).map(|v| v as i32)
}

/// The set at table index `idx` (SEM_STAT), None if the slot is free.
pub fn sem_stat_index(idx: i32) -> io::Result<Option<SemStat>> {
    match semctl_ds(idx, SEM_STAT) {
        Ok((id, ds)) => Ok(Some(SemStat {
            id,
            perm: perm_of(&ds.sem_perm),
            nsems: ds.sem_nsems as u32,
        })),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// semget(2).
pub fn semget(key: i32, nsems: u32, flags: i32) -> io::Result<i32> {
    // SAFETY: semget takes integers only.
    let r = unsafe { libc::semget(key, nsems as libc::c_int, flags) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// GETALL: the values of the `n` semaphores of set `id`.
pub fn sem_getall(id: i32, n: u32) -> io::Result<Vec<u16>> {
    let mut v = vec![0u16; n as usize];
    // GETALL writes one u16 per semaphore of the set; `v` holds `n`, the
    // set's size the caller read with SEM_STAT (sets never change size).
    semctl_raw(id, 0, libc::GETALL, v.as_mut_ptr() as u64)?;
    Ok(v)
}

/// SETALL: set every semaphore of set `id`; `values` must hold one value
/// per semaphore of the set.
pub fn sem_setall(id: i32, values: &[u16]) -> io::Result<()> {
    let (_, ds) = semctl_ds(id, libc::IPC_STAT)?;
    if ds.sem_nsems as usize != values.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SETALL reads sem_nsems u16 values: `values` holds that many.
    semctl_raw(id, 0, libc::SETALL, values.as_ptr() as u64).map(drop)
}

/// Who used each semaphore of set `id` (`n` of them): the pid of the
/// last operation on it (GETPID; 0 if none, or not in the caller's pid
/// namespace) and how many tasks wait for it to grow or to be zero
/// (GETNCNT, GETZCNT).
pub fn sem_users(id: i32, n: u32) -> io::Result<Vec<SemUsers>> {
    (0..n as i32)
        .map(|i| {
            Ok(SemUsers {
                pid: semctl_raw(id, i, libc::GETPID, 0)? as i32,
                waiting: semctl_raw(id, i, libc::GETNCNT, 0)? as u32
                    + semctl_raw(id, i, libc::GETZCNT, 0)? as u32,
            })
        })
        .collect()
}

/// What [`sem_users`] tells of one semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemUsers {
    pub pid: i32,
    pub waiting: u32,
}

/// IPC_STAT of set `id`.
pub fn sem_stat(id: i32) -> io::Result<SemStat> {
    let (_, ds) = semctl_ds(id, libc::IPC_STAT)?;
    Ok(SemStat {
        id,
        perm: perm_of(&ds.sem_perm),
        nsems: ds.sem_nsems as u32,
    })
}

/// IPC_RMID of set `id`.
pub fn sem_rmid(id: i32) -> io::Result<()> {
    semctl_raw(id, 0, libc::IPC_RMID, 0).map(drop)
}

/// IPC_SET of set `id`: its owner and permission bits.
pub fn sem_set(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let (_, mut ds) = semctl_ds(id, libc::IPC_STAT)?;
    ds.sem_perm.uid = uid;
    ds.sem_perm.gid = gid;
    ds.sem_perm.mode = (mode & 0o777) as libc::c_ushort;
    semctl_raw(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds as u64).map(drop)
}

// -------------------------------------------------------------- message queues

/// What MSG_STAT tells of a message queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgStat {
    pub id: i32,
    pub perm: IpcPerm,
    pub qnum: u64,
    pub qbytes: u64,
    /// The last pids that sent and received (0: none, or not in the
    /// caller's pid namespace).
    pub lspid: i32,
    pub lrpid: i32,
}

fn msgctl_ds(id: i32, cmd: libc::c_int) -> io::Result<(i32, libc::msqid_ds)> {
    // SAFETY: an all-zero msqid_ds is a valid value of the plain C struct.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: the command writes one msqid_ds into `ds`, which is writable.
    let r = unsafe { libc::msgctl(id, cmd, &mut ds) };
    cvt(r as libc::c_long)?;
    Ok((r, ds))
}

/// The highest index in use in the queue table (MSG_INFO).
pub fn msg_max_index() -> io::Result<i32> {
    let mut buf: InfoBuf = [0; 16];
    // SAFETY: MSG_INFO writes a struct msginfo (32 bytes), smaller than
    // `buf`, which is writable.
    let r = unsafe { libc::msgctl(0, MSG_INFO, buf.as_mut_ptr().cast()) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

fn msg_stat_of(id: i32, ds: &libc::msqid_ds) -> MsgStat {
    MsgStat {
        id,
        perm: perm_of(&ds.msg_perm),
        qnum: ds.msg_qnum,
        qbytes: ds.msg_qbytes,
        lspid: ds.msg_lspid,
        lrpid: ds.msg_lrpid,
    }
}

/// The queue at table index `idx` (MSG_STAT), None if the slot is free.
pub fn msg_stat_index(idx: i32) -> io::Result<Option<MsgStat>> {
    match msgctl_ds(idx, MSG_STAT) {
        Ok((id, ds)) => Ok(Some(msg_stat_of(id, &ds))),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// IPC_STAT of queue `id`.
pub fn msg_stat(id: i32) -> io::Result<MsgStat> {
    let (_, ds) = msgctl_ds(id, libc::IPC_STAT)?;
    Ok(msg_stat_of(id, &ds))
}

/// IPC_RMID of queue `id`.
pub fn msg_rmid(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer; null is allowed.
    let r = unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    cvt(r as libc::c_long).map(drop)
}

/// msgget(2).
pub fn msgget(key: i32, flags: i32) -> io::Result<i32> {
    // SAFETY: msgget takes integers only.
    let r = unsafe { libc::msgget(key, flags) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// IPC_SET of queue `id`: owner, permission bits and byte limit.
pub fn msg_set(id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> io::Result<()> {
    let (_, mut ds) = msgctl_ds(id, libc::IPC_STAT)?;
    ds.msg_perm.uid = uid;
    ds.msg_perm.gid = gid;
    ds.msg_perm.mode = (mode & 0o777) as libc::c_ushort;
    ds.msg_qbytes = qbytes;
    // SAFETY: IPC_SET reads one msqid_ds from `ds`, filled just above.
    let r = unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) };
    cvt(r as libc::c_long).map(drop)
}

/// A copy of message number `index` (0 = oldest) of queue `id`, left in
/// the queue (MSG_COPY): (type, text). `max` is the largest text expected
/// (kernel/msgmax).
pub fn msg_copy(id: i32, index: u64, max: usize) -> io::Result<(i64, Vec<u8>)> {
    // struct msgbuf: a long type, then the text.
    let mut buf = vec![0u64; 1 + max.div_ceil(8)];
    // SAFETY: `buf` holds 8 bytes of type plus at least `max` bytes of
    // text, and msgrcv writes at most the type and `max` bytes.
    let r = unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            index as libc::c_long,
            libc::IPC_NOWAIT | MSG_COPY,
        )
    };
    let n = cvt(r as libc::c_long)? as usize;
    let mtype = buf[0] as i64;
    let text: Vec<u8> = buf[1..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(n)
        .collect();
    Ok((mtype, text))
}

/// msgsnd(2) without waiting: append a message of type `mtype`.
pub fn msgsnd(id: i32, mtype: i64, text: &[u8]) -> io::Result<()> {
    let mut buf = vec![0u8; 8 + text.len()];
    buf[..8].copy_from_slice(&mtype.to_ne_bytes());
    buf[8..].copy_from_slice(text);
    // SAFETY: `buf` is a struct msgbuf: the type, then `text.len()` bytes
    // of text, all readable across the call.
    let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) };
    cvt(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_calls_work_in_our_namespace() {
        assert!(shm_max_index().is_ok());
        assert!(sem_max_index().is_ok());
        assert!(msg_max_index().is_ok());
    }

    #[test]
    fn private_queue_copy_and_send() {
        let id = msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600).unwrap();
        msgsnd(id, 7, b"hello").unwrap();
        msgsnd(id, 9, b"").unwrap();
        let st = msg_stat(id).unwrap();
        let r = (|| -> io::Result<()> {
            assert_eq!(st.qnum, 2);
            assert_eq!(msg_copy(id, 0, 8192)?, (7, b"hello".to_vec()));
            assert_eq!(msg_copy(id, 1, 8192)?, (9, Vec::new()));
            assert_eq!(msg_stat(id)?.qnum, 2);
            Ok(())
        })();
        // SAFETY-free cleanup through the same wrappers.
        let _ = msgctl_ds(id, libc::IPC_RMID);
        r.unwrap();
    }

    #[test]
    fn private_sem_and_shm() {
        let s = semget(libc::IPC_PRIVATE, 3, libc::IPC_CREAT | 0o600).unwrap();
        let r = (|| -> io::Result<()> {
            sem_setall(s, &[1, 2, 3])?;
            assert_eq!(sem_getall(s, 3)?, vec![1, 2, 3]);
            assert!(sem_setall(s, &[1]).is_err());
            Ok(())
        })();
        let _ = semctl_raw(s, 0, libc::IPC_RMID, 0);
        r.unwrap();
        let m = shmget(libc::IPC_PRIVATE, 10000, libc::IPC_CREAT | 0o600).unwrap();
        let r = (|| -> io::Result<()> {
            let a = ShmAttach::attach(m, false)?;
            assert_eq!(a.len(), 10000);
            a.write_at(9990, b"0123456789")?;
            assert!(a.write_at(9991, b"0123456789").is_err());
            let mut b = [0u8; 4];
            a.read_at(9996, &mut b)?;
            assert_eq!(&b, b"6789");
            assert_eq!(shm_stat(m)?.nattch, 1);
            Ok(())
        })();
        let _ = shm_rmid(m);
        r.unwrap();
    }
}
