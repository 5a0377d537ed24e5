//! Shared memory objects (shared anonymous memory, memfds, System V
//! segments): storing their non-zero pages, loading and rebuilding them.

use super::pages::{pages_file_len, FillRun, LocalImages, PageOwner, PageSink, PageSource, Run};
use super::{bad, map_files_path, PageRun, Vma, BATCH, TASK_SIZE};
use super::{MadeObject, Memfds, ShmemInode, F_SEAL_SEAL, SHMEM_ANON_NAME};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::ImageType;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_images::proto::vma::VmaEntry;
use crust_sys::PAGE_SIZE;
use log::debug;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The pages-N.img ids of shared memory objects are this bit plus the low
/// 31 bits of the object's inode number: stable for the object whichever
/// process of a tree maps it, and apart from the per-process ids (1, 2...).
const SHMEM_PAGES_ID_BIT: u32 = 1 << 31;

fn shmem_pages_id(ino: u64) -> u32 {
    SHMEM_PAGES_ID_BIT | (ino as u32 & !SHMEM_PAGES_ID_BIT)
}

fn all_zero(page: &[u8]) -> bool {
    page.chunks_exact(64).all(|c| {
        c.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8]))
        }) == 0
    })
}

/// Store the pages of the shared memory object `v` maps: the whole object
/// is read through /proc/PID/map_files (holes read as zeros without being
/// allocated, swapped pages come back in), so pages any process of the tree
/// wrote are found; pages holding only zeros are left out. Goes to `sink`
/// as object `<ino>`; returns (pages scanned, pages stored).
/// With `since` (the object's tracked writes since the parent set), only
/// the pages written since are read; the others the parent set holds are
/// announced as in the parent.
pub(crate) fn dump_shmem(
    pid: i32,
    sink: &dyn PageSink,
    v: &Vma,
    since: Option<&super::objtrack::ObjectSince>,
) -> Result<(u64, u64), Error> {
    let path = map_files_path(pid, &v.map);
    let f = File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    let size = f
        .metadata()
        .map_err(sys_err(pid, format!("stat {path}")))?
        .len();
    let ino = v.map.inode;
    let owner = PageOwner::Object {
        shmid: ino as u32 as u64,
        pages_id: shmem_pages_id(ino),
    };
    let (total, stored, runs) = store_object_since(sink, owner, &f, Path::new(&path), size, since)?;
    debug!(
        "{pid}: shared memory ino {ino} ({size} bytes): {stored} pages stored in {runs} runs{}",
        match since {
            Some(s) => format!(
                " ({} bytes written since the parent set)",
                s.dirty.iter().map(|r| r.end - r.start).sum::<u64>()
            ),
            None => String::new(),
        }
    );
    Ok((total, stored))
}

/// Store the pages of a shared memory object (memfd, shared anonymous
/// memory, System V segment) that are not all zeros in local images: its
/// content is read from `src` (`size` bytes; `src_path` names it in
/// errors) into the pages file `pages_id`, described by
/// `pagemap-shmem-<shmid>.img`. Returns (pages scanned, pages stored, runs).
/// With [`objects_to`] in force for `dir`, they go to that sink (a page
/// server) instead.
pub(crate) fn store_object_pages(
    dir: &Path,
    src: &File,
    src_path: &Path,
    size: u64,
    shmid: u64,
    pages_id: u32,
) -> Result<(u64, u64, usize), Error> {
    let owner = PageOwner::Object { shmid, pages_id };
    match object_sink(dir) {
        Some(remote) => store_object(&*remote, owner, src, src_path, size),
        None => store_object(&LocalImages::new(dir), owner, src, src_path, size),
    }
}

/// A sink shared objects' pages may go to instead of the images directory.
pub(crate) type ObjectSink = std::sync::Arc<dyn PageSink + Send + Sync>;

/// The dumps whose shared objects (memfds, System V segments, stored
/// from the file table and the IPC namespace, which know only the images
/// directory) go to a page server: by images directory.
static OBJECT_SINKS: std::sync::Mutex<Vec<(std::path::PathBuf, ObjectSink)>> =
    std::sync::Mutex::new(Vec::new());

fn object_sinks() -> std::sync::MutexGuard<'static, Vec<(std::path::PathBuf, ObjectSink)>> {
    OBJECT_SINKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn object_sink(dir: &Path) -> Option<ObjectSink> {
    object_sinks()
        .iter()
        .find(|(d, _)| d == dir)
        .map(|(_, s)| s.clone())
}

/// While the returned guard lives, the shared objects a dump into `dir`
/// stores go to `sink` (`dump --page-server`: CRIU sends them too).
pub(crate) fn objects_to(dir: &Path, sink: ObjectSink) -> ObjectsTo {
    object_sinks().push((dir.to_path_buf(), sink));
    ObjectsTo(dir.to_path_buf())
}

/// See [`objects_to`]: dropped, the objects of its directory are stored
/// locally again.
pub(crate) struct ObjectsTo(std::path::PathBuf);

impl Drop for ObjectsTo {
    fn drop(&mut self) {
        object_sinks().retain(|(d, _)| *d != self.0);
    }
}

/// Move the pages of `chunk` (at object offset `off`) that are not all
/// zeros to its front, in order; their runs are added to `runs`. Returns
/// the bytes kept.
pub(super) fn keep_nonzero(chunk: &mut [u8], off: u64, runs: &mut Vec<Run>) -> usize {
    let page = PAGE_SIZE as usize;
    let mut kept = 0usize;
    for i in 0..chunk.len() / page {
        let from = i * page;
        if all_zero(&chunk[from..from + page]) {
            continue;
        }
        if from != kept {
            chunk.copy_within(from..from + page, kept);
        }
        kept += page;
        let at = off + from as u64;
        match runs.last_mut() {
            Some(r) if r.vaddr + r.npages * PAGE_SIZE == at => r.npages += 1,
            _ => runs.push(Run {
                vaddr: at,
                npages: 1,
                flags: pe::PRESENT,
            }),
        }
    }
    kept
}

/// Store the non-zero pages of an object read from `src` in `sink`, one
/// 1 MiB buffer at a time. Returns (pages scanned, pages stored, runs).
pub(crate) fn store_object(
    sink: &dyn PageSink,
    owner: PageOwner,
    src: &File,
    src_path: &Path,
    size: u64,
) -> Result<(u64, u64, usize), Error> {
    store_object_since(sink, owner, src, src_path, size, None)
}

/// A piece of an object to store: (offset, bytes, read it (else: announce
/// the pages as in the parent set)).
type Piece = (u64, u64, bool);

/// The pieces of the object's data extents, in order: with `since`, the
/// parts written since are read, the other parts the parent set holds
/// are in the parent, the rest (zeros the parent left out, not written
/// since) is left out; without, everything is read. Reads are at most
/// one buffer long.
fn pieces(extents: &[(u64, u64)], since: Option<&super::objtrack::ObjectSince>) -> Vec<Piece> {
    let mut out = Vec::new();
    let read = |a: u64, b: u64, out: &mut Vec<Piece>| {
        let mut at = a;
        while at < b {
            let n = (b - at).min(BATCH as u64);
            out.push((at, n, true));
            at += n;
        }
    };
    for &(start, end) in extents {
        let Some(s) = since else {
            read(start, end, &mut out);
            continue;
        };
        let (dirty, clean) = super::track::split_by(std::slice::from_ref(&(start..end)), &s.dirty);
        let (parent, _) = super::track::split_by(&clean, &s.parent_has);
        let mut all: Vec<Piece> = parent
            .iter()
            .map(|r| (r.start, r.end - r.start, false))
            .collect();
        for r in dirty {
            read(r.start, r.end, &mut all);
        }
        all.sort_by_key(|p| p.0);
        out.extend(all);
    }
    out
}

/// [`store_object`], with the object's writes since the parent set (see
/// [`pieces`]).
pub(crate) fn store_object_since(
    sink: &dyn PageSink,
    owner: PageOwner,
    src: &File,
    src_path: &Path,
    size: u64,
    since: Option<&super::objtrack::ObjectSince>,
) -> Result<(u64, u64, usize), Error> {
    let mut out = sink.open(owner)?;
    let total = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    out.scanned(total / PAGE_SIZE);
    let mut runs: Vec<Run> = Vec::new();
    let mut nruns = 0usize;
    let mut last_end = None;
    let mut buf = vec![0u8; BATCH];
    let mut stored = 0u64;
    for (off, len, read) in pieces(&data_extents(src, total), since) {
        if !read {
            out.runs(&[Run {
                vaddr: off,
                npages: len / PAGE_SIZE,
                flags: pe::PARENT,
            }])?;
            nruns += 1;
            last_end = None;
            continue;
        }
        let len = len as usize;
        let chunk = &mut buf[..len];
        let mut got = 0usize;
        while got < len {
            match src.read_at(&mut chunk[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "cannot read",
                        path: src_path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        chunk[got..].fill(0);
        runs.clear();
        let kept = keep_nonzero(chunk, off, &mut runs);
        if let Some(first) = runs.first() {
            // A run that goes on from the last chunk is the same run.
            nruns += runs.len() - usize::from(last_end == Some(first.vaddr));
            last_end = runs.last().map(|r| r.vaddr + r.npages * PAGE_SIZE);
            out.runs(&runs)?;
            out.pages(&chunk[..kept])?;
            stored += (kept as u64) / PAGE_SIZE;
        }
    }
    out.finish()?;
    Ok((total / PAGE_SIZE, stored, nruns))
}

/// The parts of `src`'s first `total` bytes that may hold data, page
/// aligned and in order: its holes (never written: zeros) are not read at
/// all (SEEK_DATA and SEEK_HOLE; a 1 GiB object never touched took 72 ms
/// to read as zeros). The whole of it where the file system cannot tell.
fn data_extents(src: &File, total: u64) -> Vec<(u64, u64)> {
    use crust_sys::fs::seek_data_or_hole;
    use std::os::fd::AsFd;
    let fd = src.as_fd();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < total {
        let data = match seek_data_or_hole(fd, at, false) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(_) => {
                out.push((at, total));
                break;
            }
        };
        if data >= total {
            break;
        }
        let hole = match seek_data_or_hole(fd, data, true) {
            Ok(Some(h)) => h,
            _ => total,
        };
        let start = data / PAGE_SIZE * PAGE_SIZE;
        let end = (hole.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .max(start + PAGE_SIZE)
            .min(total);
        out.push((start, end));
        at = end;
    }
    out
}

/// What memfd.img records of the shared memory object VMA `v` maps.
pub(crate) fn shmem_inode(pid: i32, v: &Vma, vmas: &[Vma]) -> ShmemInode {
    use std::os::unix::fs::MetadataExt;
    let ino = v.map.inode;
    let memfd = super::vma::memfd_name(&v.map).filter(|_| super::vma::is_memfd_map(&v.map));
    let name = super::huge::object_name(v, memfd).to_string();
    match File::open(map_files_path(pid, &v.map)).and_then(|f| Ok((f.metadata()?, f))) {
        Ok((md, f)) => ShmemInode {
            ino,
            name,
            hugetlb_flag: super::huge::file_flag(&f).unwrap_or_else(|_| super::huge::vma_flag(v)),
            size: md.size(),
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode(),
            seals: match memfd {
                Some(_) => {
                    use std::os::fd::AsFd;
                    crust_sys::memfd::seals(f.as_fd()).unwrap_or(F_SEAL_SEAL)
                }
                None => F_SEAL_SEAL,
            },
        },
        // Without map_files: the object reaches at least as far as its
        // mappings; the kernel creates it as root's, mode 0100777.
        Err(_) => ShmemInode {
            ino,
            name,
            hugetlb_flag: super::huge::vma_flag(v),
            size: vmas
                .iter()
                .filter(|o| o.is_shmem() && o.map.inode == ino)
                .map(|o| o.map.offset + o.map.len())
                .max()
                .unwrap_or(0),
            uid: 0,
            gid: 0,
            mode: libc::S_IFREG | 0o777,
            seals: F_SEAL_SEAL,
        },
    }
}

/// Is this VMA shared anonymous memory (a "/dev/zero" memfd as CRIU 4.x
/// writes it, or VMA_ANON_SHARED as older CRIU did)?
pub(crate) fn is_shmem_entry(v: &VmaEntry) -> bool {
    v.status & (vs::ANON_SHARED | vs::AREA_MEMFD) != 0 && v.status & vs::AREA_SYSVIPC == 0
}

/// A shared memory object to rebuild, with the pages to read into it.
#[derive(Debug, Clone)]
pub struct ShmemObject {
    /// The `shmid` its VMAs carry: a files.img id (memfd) or, for
    /// VMA_ANON_SHARED, the inode number itself.
    pub key: u64,
    /// The inode number: N of pagemap-shmem-N.img.
    pub ino: u64,
    /// A named memfd's name (made again with memfd_create); `None` for
    /// shared anonymous memory.
    pub name: Option<String>,
    /// A named memfd's size (its VMAs may reach past it).
    pub file_size: u64,
    /// Bytes to create, page aligned; covers every VMA of the object.
    pub size: u64,
    pub pages_id: u32,
    /// vaddr = offset in the object.
    pub runs: Vec<PageRun>,
    /// Hugetlb memory (its VMAs have MAP_HUGETLB, or its memfd.img inode
    /// a `hugetlb_flag`).
    pub huge: bool,
    /// The page size bits of a hugetlb object (none: the default size).
    pub huge_bits: u32,
}

/// memfd names are at most 249 bytes (NAME_MAX less the "memfd:" prefix).
const MEMFD_NAME_MAX: usize = 249;

/// Read and check every shared memory object the VMAs of `mm` map:
/// `memfds` (files.img/memfd.img, read by the caller) for memfd VMAs, then
/// pagemap-shmem-N.img and the length of its pages file. Shared
/// anonymous memory ("/dev/zero") and named memfds mapped shared.
pub fn load_shmem(dir: &Path, mm: &MmEntry, memfds: &Memfds) -> Result<Vec<ShmemObject>, Error> {
    if !mm.vmas.iter().any(is_shmem_entry) {
        return Ok(Vec::new());
    }
    let mut out: Vec<ShmemObject> = Vec::new();
    for v in mm.vmas.iter().filter(|v| is_shmem_entry(v)) {
        let what = format!("VMA {:#x}-{:#x}", v.start, v.end);
        let len = v.end - v.start;
        if v.pgoff % PAGE_SIZE != 0 {
            return Err(bad(
                dir,
                format!("{what} has an unaligned offset {:#x}", v.pgoff),
            ));
        }
        let end_off = v
            .pgoff
            .checked_add(len)
            .filter(|e| *e <= TASK_SIZE)
            .ok_or_else(|| {
                bad(
                    dir,
                    format!("{what} has offset {:#x} out of range", v.pgoff),
                )
            })?;
        if let Some(o) = out.iter_mut().find(|o| o.key == v.shmid) {
            o.size = o.size.max(end_off);
            o.huge |= is_huge(v);
            continue;
        }
        let mut huge = is_huge(v).then_some(v.flags & crust_sys::memfd::HUGE_MASK);
        let (ino, size, name) = if v.status & vs::AREA_MEMFD != 0 {
            let shared = v.status & vs::FILE_SHARED != 0 && v.flags & libc::MAP_SHARED as u32 != 0;
            let private =
                v.status & vs::FILE_PRIVATE != 0 && v.flags & libc::MAP_PRIVATE as u32 != 0;
            if !shared && !private {
                return Err(bad(
                    dir,
                    format!(
                        "{what} maps a memfd with flags {:#x} and status {:#x}",
                        v.flags, v.status
                    ),
                ));
            }
            let inode = memfds.get(&(v.shmid as u32)).ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "{what} maps memfd file id {}, which files.img does not have",
                        v.shmid
                    ),
                )
            })?;
            if inode.name.len() > MEMFD_NAME_MAX || inode.name.contains('\0') {
                return Err(bad(
                    dir,
                    format!("memfd.img: object {} has a bad name", inode.shmid),
                ));
            }
            if inode.size > TASK_SIZE {
                return Err(bad(
                    dir,
                    format!("memfd.img: object {} has size {}", inode.shmid, inode.size),
                ));
            }
            if super::huge::inode_page_size(dir, inode)?.is_some() {
                huge = inode.hugetlb_flag.map(|f| f & crust_sys::memfd::HUGE_MASK);
            }
            // CRIU 4.2 names shared anonymous hugetlb memory so.
            let anon = inode.name == SHMEM_ANON_NAME
                || (inode.name == super::huge::ANON_NAME && huge.is_some());
            (
                inode.shmid as u64,
                inode.size.div_ceil(PAGE_SIZE) * PAGE_SIZE,
                (!anon).then(|| (inode.name.clone(), inode.size)),
            )
        } else {
            (v.shmid, 0, None)
        };
        let (name, file_size) = match name {
            Some((n, s)) => (Some(n), s),
            None => (None, 0),
        };
        out.push(ShmemObject {
            key: v.shmid,
            ino,
            name,
            file_size,
            size: size.max(end_off),
            pages_id: 0,
            runs: Vec::new(),
            huge: huge.is_some(),
            huge_bits: huge.unwrap_or(0),
        });
    }
    let source = LocalImages::new(dir);
    for o in &mut out {
        if o.huge {
            super::huge::check_object_size(dir, o.ino, o.size, o.huge_bits)?;
        }
        let p = source.object_runs(o.ino, o.size, "the shared memory object")?;
        o.pages_id = p.pages_id;
        o.runs = p
            .runs
            .iter()
            .map(|&(vaddr, file_off, len)| PageRun {
                vaddr,
                npages: len / PAGE_SIZE,
                file_off,
                cow: false,
            })
            .collect();
    }
    Ok(out)
}

/// Rebuild one shared memory object: a MAP_SHARED|MAP_ANONYMOUS mapping of
/// its whole size at an address the kernel picks (every VMA of the image is
/// already reserved, so it lands apart from them), filled from its pages
/// image; then each VMA of the object is a new mapping of that same object
/// (mremap with old_len 0 duplicates a shared mapping) moved onto its
/// reserved place; finally the whole-object mapping goes away.
pub(crate) fn restore_shmem(
    r: &mut Remote<'_>,
    pages: &dyn PageSource,
    mm: &MmEntry,
    o: &ShmemObject,
    made: Option<&MadeObject>,
) -> Result<u64, Error> {
    let base = match made {
        // Made and filled already (by crust, or by another process).
        Some(m) => map_made(r, o, m)?,
        None => {
            let base = map_object(r, o)?;
            let fill: Vec<FillRun> = o
                .runs
                .iter()
                .map(|p| (base + p.vaddr, p.npages * PAGE_SIZE, p.file_off))
                .collect();
            pages.fill_now(r.pid(), o.pages_id, &fill)?;
            base
        }
    };
    let vmas: Vec<&VmaEntry> = mm
        .vmas
        .iter()
        .filter(|v| is_shmem_entry(v) && v.shmid == o.key)
        .collect();
    if vmas.iter().any(|v| is_private(v) || o.huge) {
        map_through_files(r, o, base, &vmas)?;
    }
    for v in vmas.into_iter().filter(|v| !is_private(v) && !o.huge) {
        let len = v.end - v.start;
        let got = r.call(
            &format!("mremap shared memory onto {:#x}-{:#x}", v.start, v.end),
            libc::SYS_mremap,
            [
                base + v.pgoff,
                0,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                v.start,
                0,
            ],
        )?;
        if got != v.start {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mremap placed {:#x} at {got:#x}", v.start),
            });
        }
    }
    r.call(
        "munmap shared memory object",
        libc::SYS_munmap,
        [base, o.size, 0, 0, 0, 0],
    )?;
    Ok(match made {
        Some(_) => 0,
        None => o.runs.iter().map(|p| p.npages).sum(),
    })
}

/// Map the whole of an object that exists already, shared, where the
/// kernel likes: read-write, or read-only if its seals forbid writing
/// (then no VMA of it was writable). Crust holds it (see [`MadeObject`])
/// and gives it to the task, whose /proc may be another pid namespace's.
fn map_made(r: &mut Remote<'_>, o: &ShmemObject, m: &MadeObject) -> Result<u64, Error> {
    let what = format!("shared memory object {} ({:?})", o.ino, o.name);
    use std::os::fd::AsFd;
    let fd = crate::task::fdgift::give_fd(r, m.0.as_fd())?;
    let map = |r: &mut Remote<'_>, prot: i32| {
        r.call(
            &format!("mmap {what}"),
            libc::SYS_mmap,
            [0, o.size, prot as u64, libc::MAP_SHARED as u64, fd, 0],
        )
    };
    let mapped = map(r, libc::PROT_READ | libc::PROT_WRITE).or_else(|_| map(r, libc::PROT_READ));
    r.call("close memfd", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    mapped
}

/// A private mapping of a shared memory object (VMA_FILE_PRIVATE)?
fn is_private(v: &VmaEntry) -> bool {
    v.flags & libc::MAP_PRIVATE as u32 != 0
}

/// Shared hugetlb memory (mremap cannot duplicate it)?
fn is_huge(v: &VmaEntry) -> bool {
    v.flags & libc::MAP_HUGETLB as u32 != 0
}

/// Map the private VMAs of object `o` (mapped whole at `base`) at their
/// reserved places: MAP_PRIVATE of the object itself, opened through the
/// task's /proc/PID/map_files (mremap would only duplicate a shared
/// mapping), writable for the fill of their own pages that follows. Opened
/// read-only (a private mapping needs no more): a read-write open kept by
/// the mapping would count as a writer of a memfd, and execveat of it
/// would fail with ETXTBSY.
fn map_through_files(
    r: &mut Remote<'_>,
    o: &ShmemObject,
    base: u64,
    vmas: &[&VmaEntry],
) -> Result<(), Error> {
    let huge = o.huge;
    // Shared hugetlb VMAs are mapped from it too, so it is opened
    // read-write (no exec of hugetlb memory to spoil). Crust opens it and
    // gives it over: a task in a user namespace of its own may not open
    // map_files (that takes CAP_CHECKPOINT_RESTORE in the first one).
    let acc = if huge { libc::O_RDWR } else { libc::O_RDONLY };
    let fd = give_map_file(r, o, base, acc)?;
    let mut mapped = Ok(());
    for v in vmas.iter().filter(|v| is_private(v) || huge) {
        let prot = u64::from(v.prot) | (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let kind = if is_private(v) {
            libc::MAP_PRIVATE
        } else {
            libc::MAP_SHARED
        };
        let flags = (kind | libc::MAP_FIXED) as u64;
        let got = r.call(
            &format!(
                "mmap shared memory privately at {:#x}-{:#x}",
                v.start, v.end
            ),
            libc::SYS_mmap,
            [v.start, v.end - v.start, prot, flags, fd, v.pgoff],
        );
        mapped = match got {
            Ok(got) if got == v.start => Ok(()),
            Ok(got) => Err(Error::Restore {
                pid: r.pid(),
                what: format!("mmap placed {:#x} at {got:#x}", v.start),
            }),
            Err(e) => Err(e),
        };
        if mapped.is_err() {
            break;
        }
    }
    r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    mapped
}

/// Open the map_files link of object `o` (mapped whole at `base` in the
/// task) from crust, with `acc`, and give it to the task; returns its
/// number there.
fn give_map_file(r: &mut Remote<'_>, o: &ShmemObject, base: u64, acc: i32) -> Result<u64, Error> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let pid = r.pid();
    let path = format!("/proc/{pid}/map_files/{base:x}-{:x}", base + o.size);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(acc == libc::O_RDWR)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(sys_err(
            pid,
            format!("open {path} (shared memory object {})", o.ino),
        ))?;
    crate::task::fdgift::give_fd(r, file.as_fd())
}

/// Map a new object of `o.size` bytes shared, read-write, where the kernel
/// likes: anonymous shared memory, or a memfd of `o.name` (made in the
/// task, its fd closed once mapped, so /proc/PID/maps names it as before).
fn map_object(r: &mut Remote<'_>, o: &ShmemObject) -> Result<u64, Error> {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let what = format!("shared memory object {} ({} bytes)", o.ino, o.size);
    let Some(name) = &o.name else {
        let huge = if o.huge {
            libc::MAP_HUGETLB as u32 | o.huge_bits
        } else {
            0
        };
        let flags =
            (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64 | u64::from(huge);
        return r.call(
            &format!("mmap {what}"),
            libc::SYS_mmap,
            [0, o.size, rw, flags, u64::MAX, 0],
        );
    };
    let a = r.put_cstr(0, name.as_bytes())?;
    let huge = if o.huge {
        crust_sys::memfd::MFD_HUGETLB | o.huge_bits
    } else {
        0
    };
    let fd = r.call(
        &format!("memfd_create {name:?} for {what}"),
        libc::SYS_memfd_create,
        [a.get(), u64::from(libc::MFD_CLOEXEC | huge), 0, 0, 0, 0],
    )?;
    let mapped = r
        .call(
            &format!("ftruncate memfd {name:?}"),
            libc::SYS_ftruncate,
            [fd, o.file_size, 0, 0, 0, 0],
        )
        .and_then(|_| {
            r.call(
                &format!("mmap memfd {name:?}"),
                libc::SYS_mmap,
                [0, o.size, rw, libc::MAP_SHARED as u64, fd, 0],
            )
        });
    r.call("close memfd", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    mapped
}

/// Where `mm` maps each of its shared memory objects: (inode number,
/// start, end) of one VMA per object. Entries `memfds` does not know are
/// left out (the restore checked them at load).
pub fn shmem_places(mm: &MmEntry, memfds: &Memfds) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for v in mm.vmas.iter().filter(|v| is_shmem_entry(v)) {
        let ino = if v.status & vs::AREA_MEMFD != 0 {
            match memfds.get(&(v.shmid as u32)) {
                Some(m) => u64::from(m.shmid),
                None => continue,
            }
        } else {
            v.shmid
        };
        if !out.iter().any(|o| o.0 == ino) {
            out.push((ino, v.start, v.end));
        }
    }
    out
}

/// Shared anonymous memory (and memfd mappings) a child has at the same
/// places as its parent, on the same object: the child cloned from its
/// restored parent already maps the parent's object there, and keeping it
/// is what keeps them sharing. An object counts only when all its VMAs in
/// the child are such copies.
pub fn inherited_shmem(
    dir: &Path,
    mm: &MmEntry,
    parent: &MmEntry,
    memfds: &Memfds,
) -> Result<Vec<(u64, u64)>, Error> {
    let mine = load_shmem(dir, mm, memfds)?;
    let theirs = load_shmem(dir, parent, memfds)?;
    let mut out = Vec::new();
    for o in &mine {
        let Some(po) = theirs.iter().find(|p| p.ino == o.ino) else {
            continue;
        };
        let vmas: Vec<&VmaEntry> = mm
            .vmas
            .iter()
            .filter(|v| is_shmem_entry(v) && v.shmid == o.key)
            .collect();
        // A private mapping is not the object: the child maps it itself.
        let all_in_parent = vmas.iter().all(|v| {
            !is_private(v)
                && parent.vmas.iter().any(|pv| {
                    is_shmem_entry(pv)
                        && pv.shmid == po.key
                        && pv.start == v.start
                        && pv.end == v.end
                        && pv.pgoff == v.pgoff
                })
        });
        if all_in_parent {
            out.extend(vmas.iter().map(|v| (v.start, v.end)));
        }
    }
    Ok(out)
}

/// A run of an object's stored pages: (offset in the object, offset in
/// the pages file, bytes).
pub(crate) type ObjectRun = (u64, u64, u64);

/// The stored pages of a shared memory object.
pub(crate) struct ObjectPages {
    /// Whole pages, in the order of the pages file.
    pub runs: Vec<ObjectRun>,
    pub pages_id: u32,
    /// The pages file (empty when there is no page).
    pub pages: std::path::PathBuf,
}

/// The stored pages of a shared memory object (anonymous shared memory,
/// memfd, System V segment) of `size` bytes: `pagemap-shmem-<shmid>.img`,
/// checked against the object and its pages file. No pagemap image means
/// no pages (all zeros). `what` names the object in errors.
pub(crate) fn object_page_runs(
    dir: &Path,
    shmid: u64,
    size: u64,
    what: &str,
) -> Result<ObjectPages, Error> {
    use crust_images::image::ImageReader;
    let mut out = ObjectPages {
        runs: Vec::new(),
        pages_id: 0,
        pages: std::path::PathBuf::new(),
    };
    let name = ImageType::ShmemPagemap.file_name(shmid);
    let rerr = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut r = match ImageReader::open_typed(dir, ImageType::ShmemPagemap, &name) {
        Ok(r) => r,
        Err(err) if err.is_missing() => return Ok(out),
        Err(err) => return Err(rerr(err)),
    };
    let head: PagemapHead = r
        .read_entry()
        .map_err(rerr)?
        .ok_or_else(|| bad(dir, format!("{name} holds no pagemap head")))?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(rerr)?;
    let limit = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut from = 0u64;
    for p in &entries {
        let n = p.nr_pages.unwrap_or(p.compat_nr_pages as u64);
        let flags = p.flags.unwrap_or(pe::PRESENT);
        if p.in_parent == Some(true) || flags & pe::PARENT != 0 {
            return Err(Error::unsupported(
                "images that refer to a parent (pre-dump) image set",
            ));
        }
        if flags & pe::PRESENT == 0 {
            continue;
        }
        let len = n
            .checked_mul(PAGE_SIZE)
            .filter(|l| {
                *l > 0
                    && p.vaddr % PAGE_SIZE == 0
                    && p.vaddr.checked_add(*l).is_some_and(|end| end <= limit)
            })
            .ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "{name}: {n} pages at offset {:#x} are outside {what} of {size} bytes",
                        p.vaddr
                    ),
                )
            })?;
        out.runs.push((p.vaddr, from, len));
        from += len;
    }
    out.pages_id = head.pages_id;
    if from > 0 {
        out.pages = dir.join(ImageType::Pages.file_name(head.pages_id as u64));
        let have = pages_file_len(dir, head.pages_id)?;
        if from > have {
            return Err(bad(
                dir,
                format!(
                    "{name} lists {from} bytes of pages, {} holds {have}",
                    out.pages.display()
                ),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "shmem_tests.rs"]
mod tests;
