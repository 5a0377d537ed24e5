//! System V IPC: shared memory segments, semaphore sets and message queues
//! of a tree that has an IPC namespace of its own, scoped as CRIU scopes
//! them (a tree sharing crust's IPC namespace gets none of them dumped, and
//! is refused if a task has a segment attached).
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

/// A task with a segment attached can be dumped only with the tree's own
/// IPC namespace (whose objects are then dumped): `own_ns`, from its
/// [`NsIds`](crate::ns::ids::NsIds). Which namespaces a tree may be in is
/// [`TreeNs`](crate::ns::ids::TreeNs)'s to say.
pub fn check_vmas(pid: i32, vmas: &[Vma], own_ns: bool) -> Result<(), Error> {
    if own_ns {
        return Ok(());
    }
    match vmas.iter().find(|v| v.status & vs::AREA_SYSVIPC != 0) {
        Some(v) => Err(Error::unsupported(format!(
            "process {pid} has System V shared memory attached ({:#x}-{:#x}, shmid {}); System V IPC objects are dumped only for a tree with an IPC namespace of its own (as CRIU does)",
            v.map.start, v.map.end, v.map.inode
        ))),
        None => Ok(()),
    }
}

/// How an attachment was made, as CRIU records it in `fdflags`: read-write
/// unless attached SHM_RDONLY (the map_files link's mode tells).
pub fn attach_fdflags(pid: i32, start: u64, end: u64) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let link = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    match std::fs::symlink_metadata(link) {
        Ok(md) if md.permissions().mode() & 0o200 == 0 => libc::O_RDONLY as u32,
        _ => libc::O_RDWR as u32,
    }
}

/// POSIX message queues are not dumped: refuse an fd on one.
pub fn refuse_mqueue(pid: i32, fd: i32, target: &str) -> Result<(), Error> {
    let path = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    if ipc::fs_magic(&path).ok() == Some(ipc::MQUEUE_MAGIC) {
        return Err(Error::unsupported(format!(
            "process {pid} has fd {fd} open on the POSIX message queue {target}, which crust cannot dump"
        )));
    }
    Ok(())
}

/// Run `f` in a thread of crust that joined the IPC namespace of `pid`.
fn in_ns<T: Send>(pid: i32, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    let path = NsKind::Ipc.proc_path(&pid.to_string());
    let ns = File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsFd;
            ipc::setns_ipc(ns.as_fd())
                .map_err(sys_err(pid, format!("setns into the IPC namespace {path}")))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Restore {
                pid,
                what: "the IPC namespace thread panicked".into(),
            })
        })
    })
}

fn desc_of(id: i32, p: &IpcPerm) -> IpcDescEntry {
    IpcDescEntry {
        key: p.key as u32,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
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

fn read_sysctl(name: &str) -> Result<String, Error> {
    let path = PathBuf::from(format!("{SYS}/{name}"));
    std::fs::read_to_string(&path).map_err(|source| Error::Io {
        op: "cannot read",
        path,
        source,
    })
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

fn write_sysctl(name: &str, value: &str) -> Result<(), Error> {
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

// ------------------------------------------------------------------- dump

fn img_w(name: &str) -> impl Fn(crust_images::image::ImageError) -> Error + '_ {
    move |source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Dump the IPC namespace the tree rooted at `root` is in, as namespace
/// `id` of the images. The tree is frozen.
pub fn dump_ns(dir: &Path, root: i32, id: u32) -> Result<(), Error> {
    in_ns(root, || {
        let var = dump_var()?;
        crate::util::write_image(
            dir,
            ImageType::IpcVar,
            id as u64,
            std::slice::from_ref(&var),
        )?;
        let shm = dump_shm(dir, root, id)?;
        let msg = dump_msg(dir, root, id, var.msg_ctlmax as usize)?;
        let sem = dump_sem(dir, root, id)?;
        debug!("IPC namespace {id}: {shm} segments, {msg} queues, {sem} semaphore sets");
        Ok(())
    })
}

fn dump_shm(dir: &Path, pid: i32, ns: u32) -> Result<usize, Error> {
    let name = ImageType::IpcnsShm.file_name(ns as u64);
    let mut w = ImageWriter::create(dir, ImageType::IpcnsShm, &name).map_err(img_w(&name))?;
    let max = ipc::shm_max_index().map_err(sys_err(pid, "shmctl(SHM_INFO)"))?;
    let mut n = 0;
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::shm_stat_index(idx).map_err(sys_err(pid, format!("shmctl({idx}, SHM_STAT)")))?
        else {
            continue;
        };
        w.write_entry(&IpcShmEntry {
            desc: desc_of(st.id, &st.perm),
            size: st.size,
            in_pagemaps: Some(true),
            hugetlb_flag: None,
            ..Default::default()
        })
        .map_err(img_w(&name))?;
        dump_segment(dir, pid, &st)?;
        n += 1;
    }
    w.finish().map_err(img_w(&name))?;
    Ok(n)
}

/// The pages of segment `st` that are not all zeros:
/// `pagemap-shmem-<shmid>.img` and its pages file.
fn dump_segment(dir: &Path, pid: i32, st: &ipc::ShmStat) -> Result<(), Error> {
    let id = st.id as u32;
    let pages_id = SYSV_PAGES_ID_BIT | (id & (SYSV_PAGES_ID_BIT - 1));
    let pm_name = ImageType::ShmemPagemap.file_name(id as u64);
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    for p in [dir.join(&pm_name), pages_path.clone()] {
        if p.exists() {
            return Err(Error::unsupported(format!(
                "the contents of System V segment {id} would go to {}, which another object of the dump already uses",
                p.display()
            )));
        }
    }
    let att = ipc::ShmAttach::attach(st.id, true)
        .map_err(sys_err(pid, format!("shmat of System V segment {id}")))?;
    let total = (att.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    // Read through the segment's file (holes read as zeros without being
    // allocated); the attachment keeps it reachable.
    let link = format!(
        "/proc/self/map_files/{:x}-{:x}",
        att.addr(),
        att.addr() as u64 + total
    );
    // statfs.f_type of hugetlbfs: such segments are not restored yet.
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    if ipc::fs_magic(Path::new(&link)).ok() == Some(HUGETLBFS_MAGIC) {
        return Err(Error::unsupported(format!(
            "the System V segment {id} is on hugetlbfs (SHM_HUGETLB)"
        )));
    }
    let src = File::open(&link).map_err(sys_err(pid, format!("open {link}")))?;
    let (_, _, runs) = crate::mem::store_object_pages(
        dir,
        &src,
        Path::new(&link),
        att.len() as u64,
        id as u64,
        pages_id,
    )?;
    debug!(
        "System V segment {id}: {} bytes, {runs} runs of pages",
        st.size
    );
    Ok(())
}

fn dump_msg(dir: &Path, pid: i32, ns: u32, msgmax: usize) -> Result<usize, Error> {
    let name = ImageType::IpcnsMsg.file_name(ns as u64);
    let mut w = ImageWriter::create(dir, ImageType::IpcnsMsg, &name).map_err(img_w(&name))?;
    let max = ipc::msg_max_index().map_err(sys_err(pid, "msgctl(MSG_INFO)"))?;
    let mut n = 0;
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::msg_stat_index(idx).map_err(sys_err(pid, format!("msgctl({idx}, MSG_STAT)")))?
        else {
            continue;
        };
        w.write_entry(&IpcMsgEntry {
            desc: desc_of(st.id, &st.perm),
            qbytes: st.qbytes as u32,
            qnum: st.qnum as u32,
            ..Default::default()
        })
        .map_err(img_w(&name))?;
        for i in 0..st.qnum {
            let (mtype, text) = ipc::msg_copy(st.id, i, msgmax).map_err(sys_err(
                pid,
                format!("msgrcv(MSG_COPY) of message {i} of queue {}", st.id),
            ))?;
            w.write_entry(&IpcMsg {
                mtype: mtype as u64,
                msize: text.len() as u32,
                ..Default::default()
            })
            .map_err(img_w(&name))?;
            let mut padded = text;
            padded.resize(pad8(padded.len()), 0);
            w.write_raw(&padded).map_err(img_w(&name))?;
        }
        n += 1;
    }
    w.finish().map_err(img_w(&name))?;
    Ok(n)
}

fn dump_sem(dir: &Path, pid: i32, ns: u32) -> Result<usize, Error> {
    let name = ImageType::IpcnsSem.file_name(ns as u64);
    let mut w = ImageWriter::create(dir, ImageType::IpcnsSem, &name).map_err(img_w(&name))?;
    let max = ipc::sem_max_index().map_err(sys_err(pid, "semctl(SEM_INFO)"))?;
    let mut n = 0;
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::sem_stat_index(idx).map_err(sys_err(pid, format!("semctl({idx}, SEM_STAT)")))?
        else {
            continue;
        };
        let values = ipc::sem_getall(st.id, st.nsems)
            .map_err(sys_err(pid, format!("semctl({}, GETALL)", st.id)))?;
        w.write_entry(&IpcSemEntry {
            desc: desc_of(st.id, &st.perm),
            nsems: st.nsems,
            ..Default::default()
        })
        .map_err(img_w(&name))?;
        w.write_raw(&encode_sem_values(&values))
            .map_err(img_w(&name))?;
        n += 1;
    }
    w.finish().map_err(img_w(&name))?;
    Ok(n)
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

// ---------------------------------------------------------------- restore

/// (offset in the segment, offset in the pages file, bytes).
type Run = (u64, u64, u64);

#[derive(Debug)]
struct Segment {
    entry: IpcShmEntry,
    runs: Vec<Run>,
    pages: PathBuf,
}

#[derive(Debug)]
struct Queue {
    entry: IpcMsgEntry,
    msgs: Vec<(i64, Vec<u8>)>,
}

/// The tree's IPC namespace as the images have it, read and checked.
#[derive(Debug)]
pub struct IpcNs {
    id: u32,
    var: IpcVarEntry,
    shms: Vec<Segment>,
    sems: Vec<(IpcSemEntry, Vec<u16>)>,
    msgs: Vec<Queue>,
}

fn bad(dir: &Path, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    }
}

fn img_r(name: &str) -> impl Fn(crust_images::image::ImageError) -> Error + '_ {
    move |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    }
}

fn check_desc(dir: &Path, name: &str, d: &IpcDescEntry) -> Result<(), Error> {
    if d.id > i32::MAX as u32 {
        return Err(bad(
            dir,
            format!("{name}: object id {} is out of range", d.id),
        ));
    }
    Ok(())
}

impl IpcNs {
    /// Read namespace `id`'s images (the tree's own IPC namespace).
    pub fn load(dir: &Path, id: u32) -> Result<IpcNs, Error> {
        let var: IpcVarEntry = crate::util::read_one(dir, ImageType::IpcVar, id as u64)?;
        let vname = ImageType::IpcVar.file_name(id as u64);
        if var.sem_ctls.len() != 4 {
            return Err(bad(
                dir,
                format!("{vname} has {} semaphore limits, not 4", var.sem_ctls.len()),
            ));
        }
        let ns = IpcNs {
            id,
            shms: load_shm(dir, id)?,
            sems: load_sem(dir, id)?,
            msgs: load_msg(dir, id)?,
            var,
        };
        debug!(
            "IPC namespace {id}: {} segments, {} semaphore sets, {} queues",
            ns.shms.len(),
            ns.sems.len(),
            ns.msgs.len()
        );
        Ok(ns)
    }

    /// Is `shmid` a segment of the images?
    pub fn has_segment(&self, shmid: u64) -> bool {
        self.shms.iter().any(|s| s.entry.desc.id as u64 == shmid)
    }

    /// Make every object again inside the IPC namespace of `pid` (the new
    /// root, alone in its fresh namespace), before any task maps memory.
    pub fn create(&self, pid: i32) -> Result<(), Error> {
        in_ns(pid, || {
            restore_limits(&self.var)?;
            for s in &self.shms {
                create_segment(pid, s)?;
            }
            for (e, values) in &self.sems {
                create_sem(pid, e, values)?;
            }
            for q in &self.msgs {
                create_queue(pid, q)?;
            }
            debug!("IPC namespace {} made again in that of {pid}", self.id);
            Ok(())
        })
    }

    /// Once every task attached its segments: remove those that were
    /// marked for removal, then set the sysctls that act on what exists.
    pub fn finish(&self, pid: i32) -> Result<(), Error> {
        in_ns(pid, || {
            for s in &self.shms {
                if s.entry.desc.mode & ipc::SHM_DEST != 0 {
                    let id = s.entry.desc.id as i32;
                    ipc::shm_rmid(id).map_err(sys_err(pid, format!("shmctl({id}, IPC_RMID)")))?;
                }
            }
            let v = &self.var;
            write_sysctl("kernel/shm_rmid_forced", &v.shm_rmid_forced.to_string())?;
            for (name, next) in [
                ("kernel/msg_next_id", v.msg_next_id),
                ("kernel/sem_next_id", v.sem_next_id),
                ("kernel/shm_next_id", v.shm_next_id),
            ] {
                if let Some(n) = next {
                    write_sysctl(name, &n.to_string())?;
                }
            }
            Ok(())
        })
    }
}

fn load_shm(dir: &Path, ns: u32) -> Result<Vec<Segment>, Error> {
    let name = ImageType::IpcnsShm.file_name(ns as u64);
    let mut r = ImageReader::open_typed(dir, ImageType::IpcnsShm, &name).map_err(img_r(&name))?;
    let mut out = Vec::new();
    while let Some(e) = r.read_entry::<IpcShmEntry>().map_err(img_r(&name))? {
        check_desc(dir, &name, &e.desc)?;
        if e.size == 0 || e.size > MAX_SEGMENT {
            return Err(bad(
                dir,
                format!("{name}: segment {} has a bad size {}", e.desc.id, e.size),
            ));
        }
        if e.hugetlb_flag.is_some_and(|f| f != 0) {
            return Err(Error::unsupported(format!(
                "restoring the hugetlb System V segment {} of {name}",
                e.desc.id
            )));
        }
        let (runs, pages) = if e.in_pagemaps == Some(true) {
            load_segment_pages(dir, &e)?
        } else {
            // Older images: the contents follow the entry, padded to 4.
            let off = r.offset();
            let len = e.size.div_ceil(4) * 4;
            r.read_raw(len as usize).map_err(img_r(&name))?;
            (vec![(0, off, e.size)], dir.join(&name))
        };
        out.push(Segment {
            entry: e,
            runs,
            pages,
        });
    }
    Ok(out)
}

fn load_segment_pages(dir: &Path, e: &IpcShmEntry) -> Result<(Vec<Run>, PathBuf), Error> {
    let crate::mem::ObjectPages {
        mut runs, pages, ..
    } = crate::mem::object_page_runs(
        dir,
        e.desc.id as u64,
        e.size,
        &format!("System V segment {}", e.desc.id),
    )?;
    // The last page may reach past the segment's size: only its first
    // bytes are written.
    for r in &mut runs {
        r.2 = r.2.min(e.size - r.0);
    }
    Ok((runs, pages))
}

fn load_sem(dir: &Path, ns: u32) -> Result<Vec<(IpcSemEntry, Vec<u16>)>, Error> {
    let name = ImageType::IpcnsSem.file_name(ns as u64);
    let mut r = ImageReader::open_typed(dir, ImageType::IpcnsSem, &name).map_err(img_r(&name))?;
    let mut out = Vec::new();
    while let Some(e) = r.read_entry::<IpcSemEntry>().map_err(img_r(&name))? {
        check_desc(dir, &name, &e.desc)?;
        if e.nsems == 0 || e.nsems > MAX_NSEMS {
            return Err(bad(
                dir,
                format!(
                    "{name}: semaphore set {} has a bad size {}",
                    e.desc.id, e.nsems
                ),
            ));
        }
        let raw = r
            .read_raw(pad8(e.nsems as usize * 2))
            .map_err(img_r(&name))?;
        let values = decode_sem_values(&raw, e.nsems as usize);
        out.push((e, values));
    }
    Ok(out)
}

fn load_msg(dir: &Path, ns: u32) -> Result<Vec<Queue>, Error> {
    let name = ImageType::IpcnsMsg.file_name(ns as u64);
    let mut r = ImageReader::open_typed(dir, ImageType::IpcnsMsg, &name).map_err(img_r(&name))?;
    let mut out = Vec::new();
    while let Some(e) = r.read_entry::<IpcMsgEntry>().map_err(img_r(&name))? {
        check_desc(dir, &name, &e.desc)?;
        let mut msgs = Vec::new();
        for i in 0..e.qnum {
            let m: IpcMsg = r.read_entry().map_err(img_r(&name))?.ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "{name}: queue {} has {} messages, the image ends after {i}",
                        e.desc.id, e.qnum
                    ),
                )
            })?;
            if m.msize as u64 > MAX_MSG {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: a message of {} bytes in queue {}",
                        m.msize, e.desc.id
                    ),
                ));
            }
            let mut text = r.read_raw(pad8(m.msize as usize)).map_err(img_r(&name))?;
            text.truncate(m.msize as usize);
            if (m.mtype as i64) <= 0 {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: a message of type {} in queue {}",
                        m.mtype as i64, e.desc.id
                    ),
                ));
            }
            msgs.push((m.mtype as i64, text));
        }
        out.push(Queue { entry: e, msgs });
    }
    Ok(out)
}

/// Make the next object of kind `kind` get id `id`.
fn set_next_id(kind: &str, id: u32) -> Result<(), Error> {
    write_sysctl(&format!("kernel/{kind}_next_id"), &id.to_string())
}

fn check_id(pid: i32, what: &str, want: u32, got: i32) -> Result<(), Error> {
    if got as u32 != want {
        return Err(Error::Restore {
            pid,
            what: format!("the {what} was made with id {got}, not {want}"),
        });
    }
    Ok(())
}

fn create_segment(pid: i32, s: &Segment) -> Result<(), Error> {
    let d = &s.entry.desc;
    let what = format!("System V segment {}", d.id);
    set_next_id("shm", d.id)?;
    let id = ipc::shmget(
        d.key as i32,
        s.entry.size,
        (d.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL,
    )
    .map_err(sys_err(pid, format!("shmget of {what} (key {:#x})", d.key)))?;
    check_id(pid, &what, d.id, id)?;
    ipc::shm_set(id, d.uid, d.gid, d.mode)
        .map_err(sys_err(pid, format!("shmctl(IPC_SET) of {what}")))?;
    if s.runs.is_empty() {
        return Ok(());
    }
    let att =
        ipc::ShmAttach::attach(id, false).map_err(sys_err(pid, format!("shmat of {what}")))?;
    let f = File::open(&s.pages).map_err(|source| Error::Io {
        op: "cannot open",
        path: s.pages.clone(),
        source,
    })?;
    let mut buf = Vec::new();
    for &(at, from, len) in &s.runs {
        buf.resize(len as usize, 0);
        f.read_exact_at(&mut buf, from)
            .map_err(|source| Error::Io {
                op: "cannot read the segment contents from",
                path: s.pages.clone(),
                source,
            })?;
        att.write_at(at as usize, &buf)
            .map_err(sys_err(pid, format!("write into {what}")))?;
    }
    Ok(())
}

fn create_sem(pid: i32, e: &IpcSemEntry, values: &[u16]) -> Result<(), Error> {
    let d = &e.desc;
    let what = format!("System V semaphore set {}", d.id);
    set_next_id("sem", d.id)?;
    let id = ipc::semget(
        d.key as i32,
        e.nsems,
        (d.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL,
    )
    .map_err(sys_err(pid, format!("semget of {what} (key {:#x})", d.key)))?;
    check_id(pid, &what, d.id, id)?;
    ipc::sem_set(id, d.uid, d.gid, d.mode)
        .map_err(sys_err(pid, format!("semctl(IPC_SET) of {what}")))?;
    ipc::sem_setall(id, values).map_err(sys_err(pid, format!("semctl(SETALL) of {what}")))
}

fn create_queue(pid: i32, q: &Queue) -> Result<(), Error> {
    let d = &q.entry.desc;
    let what = format!("System V message queue {}", d.id);
    set_next_id("msg", d.id)?;
    let id = ipc::msgget(
        d.key as i32,
        (d.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL,
    )
    .map_err(sys_err(pid, format!("msgget of {what} (key {:#x})", d.key)))?;
    check_id(pid, &what, d.id, id)?;
    // The byte limit first: the messages must fit under it.
    ipc::msg_set(id, d.uid, d.gid, d.mode, q.entry.qbytes as u64).map_err(sys_err(
        pid,
        format!("msgctl(IPC_SET) of {what} (qbytes {})", q.entry.qbytes),
    ))?;
    for (i, (mtype, text)) in q.msgs.iter().enumerate() {
        ipc::msgsnd(id, *mtype, text).map_err(sys_err(
            pid,
            format!("msgsnd of message {i} ({} bytes) into {what}", text.len()),
        ))?;
    }
    Ok(())
}

/// The tree's IPC namespace, if it had one of its own (its processes'
/// `ipc_ns_id` differs from `root_ipc`, crust's at dump time: the
/// [`NsKind::Ipc`] ids of the images): read and checked, with every
/// process's System V attachments. `procs`: (pid, ipc_ns_id, mm) of each
/// live process, the root first.
pub fn load_for_tree<'a>(
    dir: &Path,
    root_ipc: Option<u32>,
    procs: impl Iterator<Item = (i32, Option<u32>, &'a MmEntry)>,
) -> Result<Option<IpcNs>, Error> {
    let procs: Vec<_> = procs.collect();
    let tree_ipc = procs.first().and_then(|p| p.1);
    for (pid, ipc, _) in &procs {
        if *ipc != tree_ipc {
            return Err(Error::unsupported(format!(
                "process {pid} is in another IPC namespace than the root of the tree"
            )));
        }
    }
    let ns = match (tree_ipc, root_ipc) {
        (Some(t), Some(r)) if t != r => Some(IpcNs::load(dir, t)?),
        _ => None,
    };
    for (_, _, mm) in &procs {
        check_vma_entries(dir, mm, ns.as_ref())?;
    }
    Ok(ns)
}

/// Check a task's System V attachments against the namespace's segments.
fn check_vma_entries(dir: &Path, mm: &MmEntry, ns: Option<&IpcNs>) -> Result<(), Error> {
    for v in mm.vmas.iter().filter(|v| v.status & vs::AREA_SYSVIPC != 0) {
        let Some(ns) = ns else {
            return Err(bad(
                dir,
                format!(
                    "VMA {:#x}-{:#x} is System V segment {}, but the tree has no IPC namespace of its own in the images",
                    v.start, v.end, v.shmid
                ),
            ));
        };
        if !ns.has_segment(v.shmid) {
            return Err(bad(
                dir,
                format!(
                    "VMA {:#x}-{:#x} is System V segment {}, which ipcns-shm-{}.img does not have",
                    v.start, v.end, v.shmid, ns.id
                ),
            ));
        }
        if v.flags & libc::MAP_SHARED as u32 == 0 || v.pgoff % PAGE_SIZE != 0 {
            return Err(bad(
                dir,
                format!(
                    "System V VMA {:#x}-{:#x} is not a shared, aligned mapping",
                    v.start, v.end
                ),
            ));
        }
    }
    Ok(())
}

/// Attach the segment of the System V VMA `v` in the task, where the image
/// has it. A segment attached once shows as several VMAs when parts of it
/// were protected differently: the first (offset 0) attaches the whole
/// segment, the others only get their protection later. A tail that was
/// unmapped is unmapped again.
pub fn attach(r: &mut Remote<'_>, mm: &MmEntry, v: &VmaEntry) -> Result<(), Error> {
    let same = |o: &VmaEntry| o.status & vs::AREA_SYSVIPC != 0 && o.shmid == v.shmid;
    if v.pgoff != 0 {
        // Part of an attachment that starts right before it.
        let prev = mm
            .vmas
            .iter()
            .find(|o| same(o) && o.end == v.start && o.pgoff + (o.end - o.start) == v.pgoff);
        if prev.is_none() {
            return Err(Error::unsupported(format!(
                "restoring System V segment {} attached at {:#x} from offset {:#x} (its start was unmapped)",
                v.shmid, v.start, v.pgoff
            )));
        }
        return Ok(());
    }
    let flags = if v.fdflags == Some(libc::O_RDONLY as u32) {
        libc::SHM_RDONLY
    } else {
        0
    } as u64;
    let got = r.call(
        &format!("shmat of System V segment {} at {:#x}", v.shmid, v.start),
        libc::SYS_shmat,
        [v.shmid, v.start, flags, 0, 0, 0],
    )?;
    if got != v.start {
        return Err(Error::Restore {
            pid: r.pid(),
            what: format!(
                "shmat put System V segment {} at {got:#x}, not {:#x}",
                v.shmid, v.start
            ),
        });
    }
    // Where the image's chain of VMAs of this attachment ends.
    let mut end = v.end;
    while let Some(n) = mm
        .vmas
        .iter()
        .find(|o| same(o) && o.start == end && o.pgoff == end - v.start)
    {
        end = n.end;
    }
    // The segment's size (struct shmid64_ds: shm_segsz after the 48-byte
    // ipc64_perm).
    r.call(
        &format!("shmctl({}, IPC_STAT)", v.shmid),
        libc::SYS_shmctl,
        [v.shmid, libc::IPC_STAT as u64, r.at(0).get(), 0, 0, 0],
    )?;
    let size = r.get_u64(48)?;
    let seg_end = v.start + size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    if end < seg_end {
        r.call(
            "munmap of an unmapped System V tail",
            libc::SYS_munmap,
            [end, seg_end - end, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::consts::pe;
    use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};

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

    #[test]
    fn sem_values_round_trip() {
        let v = [1u16, 65535, 7];
        let b = encode_sem_values(&v);
        assert_eq!(b.len(), 8);
        assert_eq!(decode_sem_values(&b, 3), v);
        assert_eq!(encode_sem_values(&[1, 2, 3, 4]).len(), 8);
        assert_eq!(encode_sem_values(&[1, 2, 3, 4, 5]).len(), 16);
    }

    fn write_shm_image(dir: &Path, size: u64, runs: &[(u64, u64)], pages: usize) {
        let name = ImageType::IpcnsShm.file_name(9);
        let mut w = ImageWriter::create(dir, ImageType::IpcnsShm, &name).unwrap();
        w.write_entry(&IpcShmEntry {
            desc: IpcDescEntry {
                key: 5,
                id: 32768,
                mode: 0o600,
                ..Default::default()
            },
            size,
            in_pagemaps: Some(true),
            hugetlb_flag: None,
            ..Default::default()
        })
        .unwrap();
        w.finish().unwrap();
        let pm = ImageType::ShmemPagemap.file_name(32768);
        let mut w = ImageWriter::create(dir, ImageType::ShmemPagemap, &pm).unwrap();
        w.write_entry(&PagemapHead {
            pages_id: 77,
            ..Default::default()
        })
        .unwrap();
        for &(a, n) in runs {
            w.write_entry(&PagemapEntry {
                vaddr: a,
                flags: Some(pe::PRESENT),
                nr_pages: Some(n),
                ..Default::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
        std::fs::write(
            dir.join(ImageType::Pages.file_name(77)),
            vec![1u8; pages * PAGE_SIZE as usize],
        )
        .unwrap();
    }

    #[test]
    fn segment_pages_are_checked() {
        let dir = std::env::temp_dir().join(format!("crust-sysvipc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = std::panic::catch_unwind(|| {
            write_shm_image(&dir, 3 * PAGE_SIZE + 10, &[(0, 1), (2 * PAGE_SIZE, 2)], 3);
            let s = load_shm(&dir, 9).unwrap();
            assert_eq!(s.len(), 1);
            assert_eq!(
                s[0].runs,
                vec![
                    (0, 0, PAGE_SIZE),
                    (2 * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE + 10)
                ]
            );
            // Pages past the segment's end.
            write_shm_image(&dir, 3 * PAGE_SIZE, &[(2 * PAGE_SIZE, 2)], 2);
            assert!(load_shm(&dir, 9).is_err());
            // The pages file is short.
            write_shm_image(&dir, 3 * PAGE_SIZE, &[(0, 3)], 2);
            assert!(load_shm(&dir, 9).is_err());
        });
        let _ = std::fs::remove_dir_all(&dir);
        r.unwrap();
    }
}
