//! System V IPC: shared memory segments, semaphore sets and message queues
//! of a tree that has an IPC namespace of its own, scoped as CRIU scopes
//! them, and, beyond CRIU, those of crust's (the host's) namespace that
//! only the tree uses (see [`host`]).
//!
//! Images, per IPC namespace id N (the tree's own, in `ids-*.img`):
//! - `ipcns-var-N.img`: one `IpcVarEntry`, the namespace's ipc sysctls;
//! - `ipcns-shm-N.img`: an `IpcShmEntry` per segment, `in_pagemaps` set: its
//!   contents are in `pagemap-shmem-<shmid>.img` (vaddr = offset in the
//!   segment) and that pagemap's pages file, as CRIU 4.2 writes them;
//! - `ipcns-sem-N.img`: an `IpcSemEntry` per set, each followed by its
//!   `nsems` u16 values, padded to 8 bytes;
//! - `ipcns-msg-N.img`: an `IpcMsgEntry` per queue, each followed by
//!   `qnum` framed `IpcMsg` entries, each followed by its text padded to 8.
//!
//! crust reads and recreates the objects from a thread of its own that
//! joined the namespace (setns): the ipc syscalls and the ipc sysctls act on
//! the caller's namespace. On restore each object gets its id back through
//! `kernel/{shm,sem,msg}_next_id`. A task's attachment (a VMA with
//! `VMA_AREA_SYSVIPC`, `shmid` = the segment id) is made again with a
//! remote shmat at the same address; its pages come from the segment.

use crate::mem::Vma;
use crate::ns::ids::NsKind;
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_compel::Task;
use crust_images::consts::vma as vs;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::proto::ipc_desc::IpcDescEntry;
use crust_images::proto::ipc_msg::{IpcMsg, IpcMsgEntry};
use crust_images::proto::ipc_sem::IpcSemEntry;
use crust_images::proto::ipc_shm::IpcShmEntry;
use crust_images::proto::ipc_var::IpcVarEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_sys::ipc::{self, IpcPerm};
use crust_sys::PAGE_SIZE;
use log::debug;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod dump;
mod host;
mod restore;
mod restore_host;
use dump::dump_ns;
pub use host::{dump, HostObjects};
pub use restore::{attach, load_for_tree, IpcNs};
pub use restore_host::Made;

/// The pages-N.img ids of segment contents: this bit plus the low 30 bits
/// of the segment id (apart from per-process ids and the 1<<31 ones of
/// shared anonymous memory).
const SYSV_PAGES_ID_BIT: u32 = 1 << 30;
/// Largest segment crust restores (the images say the size).
const MAX_SEGMENT: u64 = 1 << 40;
/// Largest message text crust restores.
const MAX_MSG: u64 = 1 << 24;
/// Largest semaphore set (the kernel's SEMMSL limit is 32000).
const MAX_NSEMS: u32 = 32000;

/// Run `f` in a thread of crust that joined the IPC namespace of `pid`.
fn in_ns<T: Send>(pid: i32, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    crate::ns::in_ns(pid, &[NsKind::Ipc], f)
}

fn desc_of(id: i32, p: &IpcPerm) -> IpcDescEntry {
    IpcDescEntry {
        key: p.key as u32,
        // As the tree's user namespace sees them (CRIU's rule).
        uid: crate::util::idmap::to_ns_uid(p.uid),
        gid: crate::util::idmap::to_ns_gid(p.gid),
        cuid: crate::util::idmap::to_ns_uid(p.cuid),
        cgid: crate::util::idmap::to_ns_gid(p.cgid),
        mode: p.mode,
        id: id as u32,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- sysctls

const SYS: &str = "/proc/sys";

/// Parse a sysctl's text: whitespace-separated unsigned numbers.
fn parse_numbers(text: &str) -> Option<Vec<u64>> {
    text.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// Like [`parse_numbers`], for sysctls that may be -1 (the *_next_id ones):
/// None for -1.
fn parse_next_id(text: &str) -> Option<u32> {
    let v: i64 = text.trim().parse().ok()?;
    (0..=i32::MAX as i64).contains(&v).then_some(v as u32)
}

/// A sysctl's text, read in one read(2): a sysctl gives nothing to a read
/// at an offset other than 0, so a short first read (std's
/// `read_to_string` probes with 32 bytes first) would cut a long value,
/// as the four numbers of kernel/sem can be.
fn read_sysctl(name: &str) -> Result<String, Error> {
    use std::io::Read;
    let path = PathBuf::from(format!("{SYS}/{name}"));
    let io = |source| Error::Io {
        op: "cannot read",
        path: path.clone(),
        source,
    };
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open(&path)
        .and_then(|mut f| f.read(&mut buf))
        .map_err(io)?;
    buf.truncate(n);
    String::from_utf8(buf).map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn sysctl_num(name: &str) -> Result<u64, Error> {
    let text = read_sysctl(name)?;
    match parse_numbers(&text).as_deref() {
        Some([v]) => Ok(*v),
        _ => Err(Error::unsupported(format!(
            "{SYS}/{name} holds {:?}, not a number",
            text.trim()
        ))),
    }
}

/// (In a thread that joined the IPC namespace: the sysctls of one the
/// tree's user namespace owns are writable by that namespace's root only.)
fn write_sysctl(name: &str, value: &str) -> Result<(), Error> {
    crate::ns::user::thread_act_as_ns_root(0, NsKind::Ipc)?;
    let path = PathBuf::from(format!("{SYS}/{name}"));
    std::fs::write(&path, value).map_err(|source| Error::Io {
        op: "cannot write the ipc sysctl",
        path,
        source,
    })
}

fn dump_var() -> Result<IpcVarEntry, Error> {
    let sem_text = read_sysctl("kernel/sem")?;
    let sem_ctls: Vec<u32> = parse_numbers(&sem_text)
        .filter(|v| v.len() == 4)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "{SYS}/kernel/sem holds {:?}, not 4 numbers",
                sem_text.trim()
            ))
        })?
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let has_mq = Path::new(&format!("{SYS}/fs/mqueue")).exists();
    let mq = |n: &str| -> Result<u32, Error> {
        if has_mq {
            Ok(sysctl_num(&format!("fs/mqueue/{n}"))? as u32)
        } else {
            Ok(0)
        }
    };
    let next = |n: &str| -> Result<Option<u32>, Error> {
        Ok(parse_next_id(&read_sysctl(&format!("kernel/{n}"))?))
    };
    Ok(IpcVarEntry {
        sem_ctls,
        msg_ctlmax: sysctl_num("kernel/msgmax")? as u32,
        msg_ctlmnb: sysctl_num("kernel/msgmnb")? as u32,
        msg_ctlmni: sysctl_num("kernel/msgmni")? as u32,
        auto_msgmni: sysctl_num("kernel/auto_msgmni")? as u32,
        shm_ctlmax: sysctl_num("kernel/shmmax")?,
        shm_ctlall: sysctl_num("kernel/shmall")?,
        shm_ctlmni: sysctl_num("kernel/shmmni")? as u32,
        shm_rmid_forced: sysctl_num("kernel/shm_rmid_forced")? as u32,
        mq_queues_max: mq("queues_max")?,
        mq_msg_max: mq("msg_max")?,
        mq_msgsize_max: mq("msgsize_max")?,
        mq_msg_default: has_mq.then(|| mq("msg_default")).transpose()?,
        mq_msgsize_default: has_mq.then(|| mq("msgsize_default")).transpose()?,
        msg_next_id: next("msg_next_id")?,
        sem_next_id: next("sem_next_id")?,
        shm_next_id: next("shm_next_id")?,
        ..Default::default()
    })
}

/// Write the namespace's limits (all but shm_rmid_forced and the next
/// ids, which come once the objects exist).
fn restore_limits(v: &IpcVarEntry) -> Result<(), Error> {
    let sem: Vec<String> = v.sem_ctls.iter().map(u32::to_string).collect();
    write_sysctl("kernel/sem", &sem.join(" "))?;
    write_sysctl("kernel/msgmax", &v.msg_ctlmax.to_string())?;
    write_sysctl("kernel/msgmnb", &v.msg_ctlmnb.to_string())?;
    write_sysctl("kernel/auto_msgmni", &v.auto_msgmni.to_string())?;
    write_sysctl("kernel/msgmni", &v.msg_ctlmni.to_string())?;
    write_sysctl("kernel/shmmax", &v.shm_ctlmax.to_string())?;
    write_sysctl("kernel/shmall", &v.shm_ctlall.to_string())?;
    write_sysctl("kernel/shmmni", &v.shm_ctlmni.to_string())?;
    if Path::new(&format!("{SYS}/fs/mqueue")).exists() {
        write_sysctl("fs/mqueue/queues_max", &v.mq_queues_max.to_string())?;
        write_sysctl("fs/mqueue/msg_max", &v.mq_msg_max.to_string())?;
        write_sysctl("fs/mqueue/msgsize_max", &v.mq_msgsize_max.to_string())?;
        if let Some(d) = v.mq_msg_default {
            write_sysctl("fs/mqueue/msg_default", &d.to_string())?;
        }
        if let Some(d) = v.mq_msgsize_default {
            write_sysctl("fs/mqueue/msgsize_default", &d.to_string())?;
        }
    }
    Ok(())
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Semaphore values as the image holds them: u16 each, padded to 8 bytes.
fn encode_sem_values(values: &[u16]) -> Vec<u8> {
    let mut b: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    b.resize(pad8(b.len()), 0);
    b
}

fn decode_sem_values(raw: &[u8], n: usize) -> Vec<u16> {
    raw.chunks_exact(2)
        .take(n)
        .map(|c| u16::from_ne_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            parse_numbers("250\t32000\t32\t128\n"),
            Some(vec![250, 32000, 32, 128])
        );
        assert_eq!(
            parse_numbers("18446744073692774399\n"),
            Some(vec![18446744073692774399])
        );
        assert_eq!(parse_numbers("-1\n"), None);
        assert_eq!(parse_numbers("x"), None);
        assert_eq!(parse_next_id("-1\n"), None);
        assert_eq!(parse_next_id("32768\n"), Some(32768));
        assert_eq!(parse_next_id("junk"), None);
    }

    /// kernel/sem with four long values (zdtm's ipc_namespace writes
    /// random ones) reads back whole: the text is longer than the 32 bytes
    /// std's read_to_string reads first, and a sysctl gives nothing to a
    /// second read. Needs root (a thread's own IPC namespace).
    #[test]
    fn long_sysctl_reads_whole() {
        if crust_sys::userns::real_ids().0 != 0 {
            return;
        }
        let got = std::thread::spawn(|| {
            crust_sys::ns::unshare(libc::CLONE_NEWIPC).map_err(|e| e.to_string())?;
            std::fs::write(
                format!("{SYS}/kernel/sem"),
                "1677987595 213649708 2025021994 100\n",
            )
            .map_err(|e| e.to_string())?;
            read_sysctl("kernel/sem").map_err(|e| e.to_string())
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            parse_numbers(&got.expect("kernel/sem read")),
            Some(vec![1677987595, 213649708, 2025021994, 100])
        );
    }

    #[test]
    fn sem_values_round_trip() {
        let v = [1u16, 65535, 7];
        let b = encode_sem_values(&v);
        assert_eq!(b.len(), 8);
        assert_eq!(decode_sem_values(&b, 3), v);
        assert_eq!(encode_sem_values(&[1, 2, 3, 4]).len(), 8);
        assert_eq!(encode_sem_values(&[1, 2, 3, 4, 5]).len(), 16);
    }

    /// kernel/sem longer than 32 bytes (as zdtm's ipc_namespace sets it)
    /// is read whole: a sysctl answers a second read with nothing. In a
    /// thread's own IPC namespace (needs root; skipped without).
    #[test]
    fn long_sem_sysctl_read_whole() {
        let got = std::thread::spawn(|| {
            crust_sys::ns::unshare(libc::CLONE_NEWIPC).ok()?;
            std::fs::write(
                format!("{SYS}/kernel/sem"),
                "2058720075 2050719775 664588119 100\n",
            )
            .ok()?;
            Some(dump_var().map(|v| v.sem_ctls))
        })
        .join()
        .expect("the test thread");
        match got {
            None => eprintln!("skipped: cannot unshare an IPC namespace"),
            Some(v) => assert_eq!(
                v.expect("dump_var"),
                vec![2058720075, 2050719775, 664588119, 100]
            ),
        }
    }
}
