//! Dump of an IPC namespace's objects, read from a thread of crust that
//! joined it: its sysctls, segments (contents in pagemap-shmem images),
//! semaphore sets and message queues.

use super::*;

fn img_w(name: &str) -> impl Fn(crust_images::image::ImageError) -> Error + '_ {
    move |source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    }
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
        let all = true;
        let shm = dump_shm(dir, root, id, &mut |_| Ok(true), all)?.len();
        let msgmax = var.msg_ctlmax as usize;
        let msg = dump_msg(dir, root, id, msgmax, &mut |_| Ok(true), all)?.len();
        let sem = dump_sem(dir, root, id, &mut |_| Ok(true), all)?.len();
        debug!("IPC namespace {id}: {shm} segments, {msg} queues, {sem} semaphore sets");
        Ok(())
    })
}

/// An image created on its first entry, or at the end if `always` (the
/// objects of crust's namespace write none when the tree has none).
struct Lazy<'a> {
    dir: &'a Path,
    ty: ImageType,
    name: String,
    w: Option<ImageWriter>,
}

impl<'a> Lazy<'a> {
    fn new(dir: &'a Path, ty: ImageType, ns: u32) -> Lazy<'a> {
        Lazy {
            dir,
            ty,
            name: ty.file_name(ns as u64),
            w: None,
        }
    }

    fn get(&mut self) -> Result<&mut ImageWriter, Error> {
        let w = match self.w.take() {
            Some(w) => w,
            None => {
                ImageWriter::create(self.dir, self.ty, &self.name).map_err(img_w(&self.name))?
            }
        };
        Ok(self.w.insert(w))
    }

    fn finish(mut self, always: bool) -> Result<(), Error> {
        if always {
            self.get()?;
        }
        match self.w.take() {
            Some(w) => w.finish().map_err(img_w(&self.name)),
            None => Ok(()),
        }
    }
}

/// Which objects of a kind to dump: Ok(true) to dump it, Ok(false) to
/// leave it out, an error to fail the dump.
pub(super) type Keep<'a, S> = &'a mut dyn FnMut(&S) -> Result<bool, Error>;

/// The segments `keep` takes, into `ipcns-shm-<ns>.img`: their ids.
pub(super) fn dump_shm(
    dir: &Path,
    pid: i32,
    ns: u32,
    keep: Keep<'_, ipc::ShmStat>,
    always: bool,
) -> Result<Vec<i32>, Error> {
    let mut w = Lazy::new(dir, ImageType::IpcnsShm, ns);
    let name = w.name.clone();
    let max = ipc::shm_max_index().map_err(sys_err(pid, "shmctl(SHM_INFO)"))?;
    let mut n = Vec::new();
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::shm_stat_index(idx).map_err(sys_err(pid, format!("shmctl({idx}, SHM_STAT)")))?
        else {
            continue;
        };
        if !keep(&st)? {
            continue;
        }
        let hugetlb_flag = dump_segment(dir, pid, &st)?;
        w.get()?
            .write_entry(&IpcShmEntry {
                desc: desc_of(st.id, &st.perm),
                size: st.size,
                in_pagemaps: Some(true),
                hugetlb_flag,
                ..Default::default()
            })
            .map_err(img_w(&name))?;
        n.push(st.id);
    }
    w.finish(always)?;
    Ok(n)
}

/// The pages of segment `st` that are not all zeros:
/// `pagemap-shmem-<shmid>.img` and its pages file. Returns its
/// `hugetlb_flag` (CRIU's: SHM_HUGETLB with the page size bits) when it
/// was made with SHM_HUGETLB.
fn dump_segment(dir: &Path, pid: i32, st: &ipc::ShmStat) -> Result<Option<u32>, Error> {
    let id = st.id as u32;
    let pages_id = SYSV_PAGES_ID_BIT | (id & (SYSV_PAGES_ID_BIT - 1));
    let pm_name = ImageType::ShmemPagemap.file_name(id as u64);
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    // Written by this dump (a file of an earlier dump in the same directory
    // is replaced).
    for p in [dir.join(&pm_name), pages_path.clone()] {
        if crust_sys::private::was_written(&p) {
            return Err(Error::unsupported(format!(
                "the contents of System V segment {id} would go to {}, which another object of the dump already uses",
                p.display()
            )));
        }
    }
    let att = ipc::ShmAttach::attach(st.id, true)
        .map_err(sys_err(pid, format!("shmat of System V segment {id}")))?;
    // The attachment's VMA: whole pages, huge ones for a SHM_HUGETLB
    // segment (its end told by crust's maps).
    let start = att.addr() as u64;
    let total = crust_proc::maps(
        &crust_proc::ProcRoot::default(),
        crust_sys::process::getpid(),
    )
    .ok()
    .and_then(|ms| ms.iter().find(|m| m.start == start).map(|m| m.end - start))
    .unwrap_or_else(|| (att.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE);
    // Read through the segment's file (holes read as zeros without being
    // allocated); the attachment keeps it reachable.
    let link = format!(
        "/proc/self/map_files/{:x}-{:x}",
        att.addr(),
        att.addr() as u64 + total
    );
    let src = File::open(&link).map_err(sys_err(pid, format!("open {link}")))?;
    let huge = crust_sys::memfd::hugetlb_page_size(std::os::fd::AsFd::as_fd(&src))
        .map_err(sys_err(pid, format!("statfs {link}")))?;
    let hugetlb_flag = match huge {
        None => None,
        Some(size) => Some(
            crate::mem::huge::size_bits(size)
                .filter(|_| Some(size) == crate::mem::huge::default_size())
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "the System V segment {id} has huge pages of {size} bytes, not the default size"
                    ))
                })?
                | libc::SHM_HUGETLB as u32,
        ),
    };
    let (_, _, runs) = crate::mem::store_object_pages(
        dir,
        &src,
        Path::new(&link),
        att.len() as u64,
        id as u64,
        pages_id,
    )?;
    debug!(
        "System V segment {id}: {} bytes, {runs} runs of pages, hugetlb flag {hugetlb_flag:?}",
        st.size
    );
    Ok(hugetlb_flag)
}

/// The queues `keep` takes, into `ipcns-msg-<ns>.img`: their ids.
pub(super) fn dump_msg(
    dir: &Path,
    pid: i32,
    ns: u32,
    msgmax: usize,
    keep: Keep<'_, ipc::MsgStat>,
    always: bool,
) -> Result<Vec<i32>, Error> {
    let mut w = Lazy::new(dir, ImageType::IpcnsMsg, ns);
    let name = w.name.clone();
    let max = ipc::msg_max_index().map_err(sys_err(pid, "msgctl(MSG_INFO)"))?;
    let mut n = Vec::new();
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::msg_stat_index(idx).map_err(sys_err(pid, format!("msgctl({idx}, MSG_STAT)")))?
        else {
            continue;
        };
        if !keep(&st)? {
            continue;
        }
        w.get()?
            .write_entry(&IpcMsgEntry {
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
            w.get()?
                .write_entry(&IpcMsg {
                    mtype: mtype as u64,
                    msize: text.len() as u32,
                    ..Default::default()
                })
                .map_err(img_w(&name))?;
            let mut padded = text;
            padded.resize(pad8(padded.len()), 0);
            w.get()?.write_raw(&padded).map_err(img_w(&name))?;
        }
        n.push(st.id);
    }
    w.finish(always)?;
    Ok(n)
}

/// The semaphore sets `keep` takes, into `ipcns-sem-<ns>.img`: their ids.
pub(super) fn dump_sem(
    dir: &Path,
    pid: i32,
    ns: u32,
    keep: Keep<'_, ipc::SemStat>,
    always: bool,
) -> Result<Vec<i32>, Error> {
    let mut w = Lazy::new(dir, ImageType::IpcnsSem, ns);
    let name = w.name.clone();
    let max = ipc::sem_max_index().map_err(sys_err(pid, "semctl(SEM_INFO)"))?;
    let mut n = Vec::new();
    for idx in 0..=max.max(-1) {
        let Some(st) =
            ipc::sem_stat_index(idx).map_err(sys_err(pid, format!("semctl({idx}, SEM_STAT)")))?
        else {
            continue;
        };
        if !keep(&st)? {
            continue;
        }
        let values = ipc::sem_getall(st.id, st.nsems)
            .map_err(sys_err(pid, format!("semctl({}, GETALL)", st.id)))?;
        w.get()?
            .write_entry(&IpcSemEntry {
                desc: desc_of(st.id, &st.perm),
                nsems: st.nsems,
                ..Default::default()
            })
            .map_err(img_w(&name))?;
        w.get()?
            .write_raw(&encode_sem_values(&values))
            .map_err(img_w(&name))?;
        n.push(st.id);
    }
    w.finish(always)?;
    Ok(n)
}
