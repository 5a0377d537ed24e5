//! Restore of an IPC namespace's objects: read and checked from the images
//! ([`IpcNs::load`]), recreated with their ids in the new namespace, and
//! segments attached again in the tasks ([`attach`]).

use super::*;

/// (offset in the segment, offset in the pages file, bytes).
type Run = (u64, u64, u64);

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) entry: IpcShmEntry,
    runs: Vec<Run>,
    pages: PathBuf,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) entry: IpcMsgEntry,
    pub(super) msgs: Vec<(i64, Vec<u8>)>,
}

/// The tree's IPC namespace as the images have it, read and checked; or
/// the objects of crust's namespace that were the tree's alone (no `var`:
/// the host's limits are left as they are).
#[derive(Debug)]
pub struct IpcNs {
    id: u32,
    var: Option<IpcVarEntry>,
    pub(super) shms: Vec<Segment>,
    pub(super) sems: Vec<(IpcSemEntry, Vec<u16>)>,
    pub(super) msgs: Vec<Queue>,
    /// The POSIX message queues of the tree's own namespace (crust's
    /// own image, [`crate::ns::mqueue`]).
    posix: crate::ns::mqueue::Queues,
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
            var: Some(var),
            posix: crate::ns::mqueue::Queues::load(dir, id)?,
            ..IpcNs::load_objects(dir, id)?
        };
        Ok(ns)
    }

    /// The segments, semaphore sets and queues of namespace `id`.
    fn load_objects(dir: &Path, id: u32) -> Result<IpcNs, Error> {
        let ns = IpcNs {
            id,
            shms: load_shm(dir, id)?,
            sems: load_sem(dir, id)?,
            msgs: load_msg(dir, id)?,
            var: None,
            posix: Default::default(),
        };
        debug!(
            "IPC namespace {id}: {} segments, {} semaphore sets, {} queues",
            ns.shms.len(),
            ns.sems.len(),
            ns.msgs.len()
        );
        Ok(ns)
    }

    /// The tree had an IPC namespace of its own (else these are objects of
    /// crust's namespace that were the tree's alone).
    pub fn own_namespace(&self) -> bool {
        self.var.is_some()
    }

    /// Whether there are no objects to make.
    pub fn is_empty(&self) -> bool {
        self.shms.is_empty()
            && self.sems.is_empty()
            && self.msgs.is_empty()
            && self.posix.is_empty()
    }

    /// For objects of crust's own namespace: every id and key must be
    /// free before the restore creates anything.
    pub fn check_free(&self) -> Result<(), Error> {
        if self.own_namespace() {
            return Ok(());
        }
        restore_host::check_free(self)
    }

    /// Is `shmid` a segment of the images?
    pub fn has_segment(&self, shmid: u64) -> bool {
        self.shms.iter().any(|s| s.entry.desc.id as u64 == shmid)
    }

    /// Make every object again before any task maps memory: inside the
    /// IPC namespace of `root` (the new root, alone in its fresh
    /// namespace), or, for objects of crust's namespace, by the root
    /// (`made` holds them, removed if the restore fails).
    pub fn create(&self, root: &mut Task, tramp: u64, made: &mut Made) -> Result<(), Error> {
        let Some(var) = &self.var else {
            return restore_host::create(self, root, tramp, made);
        };
        let pid = root.pid();
        in_ns(pid, || {
            restore_limits(var)?;
            for s in &self.shms {
                create_segment(pid, s)?;
            }
            for (e, values) in &self.sems {
                create_sem(pid, e, values)?;
            }
            for q in &self.msgs {
                create_queue(pid, q)?;
            }
            self.posix.create(pid)?;
            debug!("IPC namespace {} made again in that of {pid}", self.id);
            Ok(())
        })
    }

    /// Once every task attached its segments: remove those that were
    /// marked for removal, then set the sysctls that act on what exists.
    pub fn finish(&self, pid: i32) -> Result<(), Error> {
        let remove_marked = || -> Result<(), Error> {
            for s in &self.shms {
                if s.entry.desc.mode & ipc::SHM_DEST != 0 {
                    let id = s.entry.desc.id as i32;
                    ipc::shm_rmid(id).map_err(sys_err(pid, format!("shmctl({id}, IPC_RMID)")))?;
                }
            }
            Ok(())
        };
        let Some(v) = &self.var else {
            return remove_marked();
        };
        in_ns(pid, || {
            remove_marked()?;
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

/// Open an objects image of the namespace; None when there is no such
/// file: CRIU 4.2 removes an image it wrote nothing into (a namespace
/// without semaphore sets has no ipcns-sem file).
fn open_objects(dir: &Path, ty: ImageType, name: &str) -> Result<Option<ImageReader>, Error> {
    match ImageReader::open_typed(dir, ty, name) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(img_r(name)(e)),
    }
}

fn load_shm(dir: &Path, ns: u32) -> Result<Vec<Segment>, Error> {
    let name = ImageType::IpcnsShm.file_name(ns as u64);
    let Some(mut r) = open_objects(dir, ImageType::IpcnsShm, &name)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    while let Some(e) = r.read_entry::<IpcShmEntry>().map_err(img_r(&name))? {
        check_desc(dir, &name, &e.desc)?;
        if e.size == 0 || e.size > MAX_SEGMENT {
            return Err(bad(
                dir,
                format!("{name}: segment {} has a bad size {}", e.desc.id, e.size),
            ));
        }
        if let Some(flag) = e.hugetlb_flag.filter(|f| *f != 0) {
            // SHM_HUGETLB with page size bits (none: the default size).
            let shm = libc::SHM_HUGETLB as u32;
            let size = (flag & shm != 0)
                .then(|| crate::mem::huge::flag_size(flag & !shm | crust_sys::memfd::MFD_HUGETLB))
                .flatten();
            if size.is_none() {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: segment {} has a bad hugetlb_flag {flag:#x}",
                        e.desc.id
                    ),
                ));
            }
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
    let Some(mut r) = open_objects(dir, ImageType::IpcnsSem, &name)? else {
        return Ok(Vec::new());
    };
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
    let Some(mut r) = open_objects(dir, ImageType::IpcnsMsg, &name)? else {
        return Ok(Vec::new());
    };
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
pub(super) fn set_next_id(kind: &str, id: u32) -> Result<(), Error> {
    write_sysctl(&format!("kernel/{kind}_next_id"), &id.to_string())
}

pub(super) fn check_id(pid: i32, what: &str, want: u32, got: i32) -> Result<(), Error> {
    if got as u32 != want {
        return Err(Error::Restore {
            pid,
            what: format!("the {what} was made with id {got}, not {want} (another object holds the slot of id {want}, or was made at the same time)"),
        });
    }
    Ok(())
}

/// Fill segment `id` (made from `s`) with its contents, through an
/// attachment of crust's own.
pub(super) fn fill_segment(pid: i32, id: i32, s: &Segment, what: &str) -> Result<(), Error> {
    if s.runs.is_empty() {
        return Ok(());
    }
    let att =
        ipc::ShmAttach::attach(id, false).map_err(sys_err(pid, format!("shmat of {what}")))?;
    let f = crate::util::open_image_data(&s.pages)?;
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

fn create_segment(pid: i32, s: &Segment) -> Result<(), Error> {
    let d = &s.entry.desc;
    let what = format!("System V segment {}", d.id);
    set_next_id("shm", d.id)?;
    crate::ns::user::thread_act_as_creator(pid, d.cuid, d.cgid)?;
    let id = ipc::shmget(
        d.key as i32,
        s.entry.size,
        (d.mode & 0o777) as i32
            | libc::IPC_CREAT
            | libc::IPC_EXCL
            | s.entry.hugetlb_flag.unwrap_or(0) as i32,
    )
    .map_err(sys_err(pid, format!("shmget of {what} (key {:#x})", d.key)))?;
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

fn create_sem(pid: i32, e: &IpcSemEntry, values: &[u16]) -> Result<(), Error> {
    let d = &e.desc;
    let what = format!("System V semaphore set {}", d.id);
    set_next_id("sem", d.id)?;
    crate::ns::user::thread_act_as_creator(pid, d.cuid, d.cgid)?;
    let id = ipc::semget(
        d.key as i32,
        e.nsems,
        (d.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL,
    )
    .map_err(sys_err(pid, format!("semget of {what} (key {:#x})", d.key)))?;
    check_id(pid, &what, d.id, id)?;
    ipc::sem_set(
        id,
        crate::util::idmap::host_uid(d.uid),
        crate::util::idmap::host_gid(d.gid),
        d.mode,
    )
    .map_err(sys_err(pid, format!("semctl(IPC_SET) of {what}")))?;
    ipc::sem_setall(id, values).map_err(sys_err(pid, format!("semctl(SETALL) of {what}")))
}

fn create_queue(pid: i32, q: &Queue) -> Result<(), Error> {
    let d = &q.entry.desc;
    let what = format!("System V message queue {}", d.id);
    set_next_id("msg", d.id)?;
    crate::ns::user::thread_act_as_creator(pid, d.cuid, d.cgid)?;
    let id = ipc::msgget(
        d.key as i32,
        (d.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL,
    )
    .map_err(sys_err(pid, format!("msgget of {what} (key {:#x})", d.key)))?;
    check_id(pid, &what, d.id, id)?;
    // The byte limit first: the messages must fit under it.
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
        // crust's namespace: objects that were the tree's alone, if any.
        (Some(t), Some(_)) if dir.join(ImageType::IpcnsShm.file_name(t as u64)).exists() => {
            // Whether their ids and keys are free is checked by the restore
            // itself (`IpcNs::check_free`): a dump checking the images it
            // wrote still holds them.
            Some(IpcNs::load_objects(dir, t)?)
        }
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
