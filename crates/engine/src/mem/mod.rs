//! Memory: the VMA list (`mm-N.img`), the pages that are present
//! (`pagemap-N.img` + `pages-N.img`) and rebuilding them on restore.
//!
//! Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS) is stored as CRIU 4.x
//! stores it: the VMA is `VMA_FILE_SHARED|VMA_AREA_MEMFD` with `shmid` = the
//! files.img id of a MEMFD file whose inode is named "/dev/zero"; the
//! object's pages go to `pagemap-shmem-<ino>.img` (vaddr = offset in the
//! object) and their own `pages-<id>.img`.
//!
//! A mapping of a packet socket's rings (`socket:[INO]` in the maps) is,
//! as in CRIU, `VMA_AREA_REGULAR|VMA_AREA_SOCKET` with `shmid` = the
//! socket's files.img id and no pages; restore reserves the range and maps
//! the rings there through the task's fd once its fds are open
//! ([`map_socket_vmas`]), empty.

use crate::files::{FileTable, ShmemInode, F_SEAL_SEAL, SHMEM_ANON_NAME};
use crate::task::remote::Remote;
use crate::task::ProcInside as Inside;
use crate::util::{proc_err, sys_err};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_images::proto::vma::VmaEntry;
use crust_proc::{MapKind, PagemapReader, Pme, ProcRoot, SmapsEntry, Stat};
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};
use log::debug;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One VMA of the dumped task, classified.
#[derive(Debug, Clone)]
pub struct Vma {
    pub map: crust_proc::MapEntry,
    pub vm_flags: Vec<String>,
    pub status: u32,
}

impl Vma {
    /// Can `syscall` be planted at its start?
    pub fn usable_for_syscall(&self) -> bool {
        self.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
    }

    /// Are its pages stored in the images?
    fn dumps_pages(&self) -> bool {
        self.status & vs::AREA_REGULAR != 0
            && self.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE) != 0
            && self.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
    }

    fn has(&self, f: &str) -> bool {
        self.vm_flags.iter().any(|x| x == f)
    }

    /// Shared anonymous memory (stored as a "/dev/zero" memfd)?
    fn is_shmem(&self) -> bool {
        self.status & vs::AREA_MEMFD != 0
    }
}

fn describe(m: &crust_proc::MapEntry) -> String {
    format!(
        "{:#x}-{:#x} {} {}",
        m.start,
        m.end,
        m.perms(),
        m.path.as_deref().unwrap_or("")
    )
}

/// Read and classify the task's VMAs ([vvar] and [vvar_vclock] are merged
/// into one VVAR area, as CRIU records them).
pub fn collect_vmas(proc: &ProcRoot, pid: i32) -> Result<Vec<Vma>, Error> {
    let smaps = crust_proc::smaps(proc, pid).map_err(proc_err(pid))?;
    let mut out: Vec<Vma> = Vec::with_capacity(smaps.len());
    for SmapsEntry { map, vm_flags, .. } in smaps {
        let kind = map.kind();
        let unsupported = |why: &str| {
            Err(Error::unsupported(format!(
                "process {pid} has a {why} mapping ({})",
                describe(&map)
            )))
        };
        if vm_flags.iter().any(|f| f == "ht") {
            return unsupported("hugetlb");
        }
        let status = match kind {
            MapKind::Vsyscall => vs::AREA_VSYSCALL | vs::ANON_PRIVATE,
            MapKind::Vdso => vs::AREA_REGULAR | vs::AREA_VDSO | vs::ANON_PRIVATE,
            MapKind::Vvar | MapKind::VvarVclock => {
                if let Some(prev) = out.last_mut() {
                    if prev.status & vs::AREA_VVAR != 0 && prev.map.end == map.start {
                        prev.map.end = map.end;
                        continue;
                    }
                }
                vs::AREA_REGULAR | vs::AREA_VVAR | vs::ANON_PRIVATE
            }
            MapKind::Heap => vs::AREA_REGULAR | vs::AREA_HEAP | vs::ANON_PRIVATE,
            MapKind::Anon | MapKind::Stack | MapKind::AnonNamed(_) => {
                if map.shared {
                    return unsupported("shared anonymous");
                }
                vs::AREA_REGULAR | vs::ANON_PRIVATE
            }
            // MAP_SHARED|MAP_ANONYMOUS: the kernel backs it with a shmem
            // file it names "/dev/zero" (deleted), on device 00:01.
            MapKind::File
                if map.shared
                    && map.deleted
                    && map.dev_major == 0
                    && map.path.as_deref() == Some(SHMEM_ANON_NAME) =>
            {
                vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD
            }
            MapKind::AnonShmemNamed(_) if map.shared => {
                vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD
            }
            MapKind::File => {
                let path = map.path.clone().unwrap_or_default();
                if map.shared && path == "/dev/zero" {
                    return unsupported("shared anonymous");
                }
                if path.starts_with("/SYSV") && map.shared {
                    // The kernel names an attached segment /SYSV<key>; its
                    // inode number is the segment id (see sysvipc).
                    out.push(Vma {
                        map,
                        vm_flags,
                        status: vs::AREA_REGULAR | vs::ANON_SHARED | vs::AREA_SYSVIPC,
                    });
                    continue;
                }
                if path.starts_with("socket:[") {
                    // A packet socket's rings (the only sockets one can
                    // map); which socket is told once the fds are known
                    // (`link_socket_vmas`).
                    out.push(Vma {
                        map,
                        vm_flags,
                        status: vs::AREA_REGULAR | vs::AREA_SOCKET,
                    });
                    continue;
                }
                if map.is_deleted() {
                    return unsupported("deleted file");
                }
                if path.starts_with("/memfd:") {
                    return unsupported("memfd");
                }
                if vm_flags.iter().any(|f| f == "io" || f == "pf")
                    || (path.starts_with("/dev/") && path != "/dev/zero")
                {
                    return unsupported("device");
                }
                if map.shared {
                    vs::AREA_REGULAR | vs::FILE_SHARED
                } else {
                    vs::AREA_REGULAR | vs::FILE_PRIVATE
                }
            }
            MapKind::AnonShmemNamed(_) => return unsupported("shared anonymous"),
            MapKind::Uprobes | MapKind::OtherSpecial(_) => return unsupported("special"),
        };
        out.push(Vma {
            map,
            vm_flags,
            status,
        });
    }
    Ok(out)
}

/// Page counts of a dump.
#[derive(Debug, Default, Clone, Copy)]
pub struct PageCounts {
    pub scanned: u64,
    pub written: u64,
    /// Private pages left out because they were the shared zero page.
    pub zero: u64,
    /// Private pages left out because they are the parent's (copy-on-write).
    pub cow: u64,
    /// Pages of shared memory objects looked at, and stored.
    pub shmem_scanned: u64,
    pub shmem_written: u64,
}

/// How many bytes are read from the task per batch. Small enough that a
/// batch is still in the CPU caches when the writer copies it out: with
/// 8 MiB batches the pipelined dump of 1 GiB took 0.28-0.7 s, with 1 MiB a
/// steady 0.28-0.3 s.
const BATCH: usize = 1 << 20;
/// Buffers of BATCH bytes going round between the reader and the writer
/// of a page dump.
const DUMP_BUFFERS: usize = 3;

/// The pages-N.img ids of shared memory objects are this bit plus the low
/// 31 bits of the object's inode number: stable for the object whichever
/// process of a tree maps it, and apart from the per-process ids (1, 2...).
const SHMEM_PAGES_ID_BIT: u32 = 1 << 31;

fn shmem_pages_id(ino: u64) -> u32 {
    SHMEM_PAGES_ID_BIT | (ino as u32 & !SHMEM_PAGES_ID_BIT)
}

/// The page frame number of the kernel's shared zero page, or None if it
/// cannot be told (PFNs are hidden without CAP_SYS_ADMIN). Two untouched
/// pages of a fresh zeroed allocation of our own are read once: both then
/// map the zero page, and /proc/self/pagemap shows its PFN.
fn zero_page_pfn() -> Option<u64> {
    static ZERO: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| {
        // Large enough that the allocator maps it fresh (calloc: untouched).
        let v = vec![0u8; 1 << 20];
        let v = std::hint::black_box(&v);
        let start = v.as_ptr() as u64;
        let a = start.div_ceil(PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE;
        let b = a + 8 * PAGE_SIZE;
        let sum = std::hint::black_box(v[(a - start) as usize])
            | std::hint::black_box(v[(b - start) as usize]);
        if sum != 0 {
            return None;
        }
        let proc = ProcRoot::default();
        let pm = PagemapReader::open(&proc, crust_sys::process::getpid()).ok()?;
        let pa = Pme(*pm.read(a, 1).ok()?.first()?);
        let pb = Pme(*pm.read(b, 1).ok()?.first()?);
        let ok = pa.present() && pb.present() && pa.pfn() != 0 && pa.pfn() == pb.pfn();
        debug!("zero page pfn: {:?}", ok.then_some(pa.pfn()));
        ok.then_some(pa.pfn())
    })
}

/// A run of pages to copy out of the task.
#[derive(Debug, Clone, Copy)]
struct ReadRun {
    addr: u64,
    npages: u64,
    /// Readable with process_vm_readv (else through /proc/PID/mem).
    readable: bool,
}

/// Append one page to a list of runs, extending the last run if it can.
fn push_page(runs: &mut Vec<ReadRun>, addr: u64, readable: bool) {
    if let Some(last) = runs.last_mut() {
        if last.readable == readable && last.addr + last.npages * PAGE_SIZE == addr {
            last.npages += 1;
            return;
        }
    }
    runs.push(ReadRun {
        addr,
        npages: 1,
        readable,
    });
}

/// The parent process of a dumped one, with its VMAs, for finding the
/// pages they still share copy-on-write.
pub struct CowParent<'a> {
    pub pid: i32,
    pub vmas: &'a [Vma],
}

/// Find the present pages of every private VMA and store them, then the
/// pages of every shared memory object the process maps.
/// `pages_id` names the `pages-N.img` this process's private pages go to.
/// With `parent`, anonymous pages that are the very same physical page as
/// the parent's at the same address (copy-on-write, untouched since the
/// fork) are not stored but marked `COW_PARENT`: restore inherits them.
pub fn dump_pages(
    pid: i32,
    dir: &Path,
    vmas: &[Vma],
    pages_id: u32,
    parent: Option<CowParent<'_>>,
) -> Result<PageCounts, Error> {
    let proc = ProcRoot::default();
    let pm = PagemapReader::open(&proc, pid).map_err(proc_err(pid))?;
    let ppm = match &parent {
        Some(p) => Some(PagemapReader::open(&proc, p.pid).map_err(proc_err(p.pid))?),
        None => None,
    };
    let mut counts = PageCounts::default();
    let mut runs: Vec<ReadRun> = Vec::new();
    let mut cow: Vec<(u64, u64)> = Vec::new();
    let zero_pfn = zero_page_pfn();
    for v in vmas.iter().filter(|v| v.dumps_pages()) {
        let npages = (v.map.end - v.map.start) / PAGE_SIZE;
        counts.scanned += npages;
        let pmes = pm
            .read(v.map.start, npages as usize)
            .map_err(proc_err(pid))?;
        let file_private = v.status & vs::FILE_PRIVATE != 0;
        // The parent's view of the same range, when it has the very same
        // anonymous private VMA.
        let ppmes = match (&parent, &ppm) {
            (Some(p), Some(ppm)) if !file_private => {
                let same = p.vmas.iter().any(|pv| {
                    pv.map.start == v.map.start
                        && pv.map.end == v.map.end
                        && pv.status == v.status
                        && pv.dumps_pages()
                });
                debug!(
                    "{pid}: VMA {:#x}-{:#x} compared with parent {}: {}",
                    v.map.start,
                    v.map.end,
                    p.pid,
                    if same { "same VMA" } else { "no such VMA" }
                );
                if same {
                    Some(
                        ppm.read(v.map.start, npages as usize)
                            .map_err(proc_err(p.pid))?,
                    )
                } else {
                    None
                }
            }
            _ => None,
        };
        for (i, raw) in pmes.iter().enumerate() {
            let p = Pme(*raw);
            let addr = v.map.start + i as u64 * PAGE_SIZE;
            if let Some(pp) = ppmes.as_ref().map(|x| Pme(x[i])) {
                if p.present()
                    && pp.present()
                    && p.pfn() != 0
                    && p.pfn() == pp.pfn()
                    && zero_pfn != Some(p.pfn())
                {
                    match cow.last_mut() {
                        Some((s, n)) if *s + *n * PAGE_SIZE == addr => *n += 1,
                        _ => cow.push((addr, 1)),
                    }
                    counts.cow += 1;
                    continue;
                }
            }
            let want = if file_private {
                (p.present() && !p.file_or_shared_anon()) || p.swapped()
            } else {
                p.present() || p.swapped()
            };
            // Anonymous pages that are the shared zero page read as zeros
            // after restore anyway (in a private file mapping the file's
            // page would show instead, so those are kept).
            if want && !file_private && p.present() && zero_pfn == Some(p.pfn()) {
                counts.zero += 1;
                continue;
            }
            if want {
                // process_vm_readv pins the pages it reads, and pinning an
                // anonymous page that is shared copy-on-write makes the
                // kernel give this process its own copy: the sharing (with
                // a parent or a child) would be lost, even with -R. Pages
                // that are not exclusive are read through /proc/PID/mem,
                // which does not pin.
                let pinnable = !p.present() || p.exclusive() || file_private;
                push_page(
                    &mut runs,
                    v.map.start + i as u64 * PAGE_SIZE,
                    v.map.read && pinnable,
                );
            }
        }
    }
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    counts.written = write_task_pages(pid, &pages_path, &runs)?;
    let mut entries: Vec<(u64, u64, u32)> = runs
        .iter()
        .map(|r| (r.addr, r.npages, pe::PRESENT))
        .chain(cow.iter().map(|&(a, n)| (a, n, pe::COW_PARENT)))
        .collect();
    entries.sort_by_key(|e| e.0);
    write_pagemap(dir, ImageType::Pagemap, pid as u64, pages_id, &entries)?;
    debug!(
        "{pid}: {} pages scanned, {} written in {} runs, {} zero pages left out, {} shared with the parent",
        counts.scanned,
        counts.written,
        runs.len(),
        counts.zero,
        counts.cow
    );

    let mut seen: Vec<u64> = Vec::new();
    for v in vmas.iter().filter(|v| v.is_shmem()) {
        if seen.contains(&v.map.inode) {
            continue;
        }
        seen.push(v.map.inode);
        let (scanned, written) = dump_shmem(pid, dir, v)?;
        counts.shmem_scanned += scanned;
        counts.shmem_written += written;
    }
    Ok(counts)
}

/// Copy the runs of task memory into a new pages file; returns the number
/// of pages written.
fn write_task_pages(pid: i32, pages_path: &Path, runs: &[ReadRun]) -> Result<u64, Error> {
    use std::sync::mpsc::sync_channel;
    let mut out = File::create(pages_path).map_err(|source| Error::Io {
        op: "cannot create",
        path: pages_path.to_path_buf(),
        source,
    })?;
    let mem_file =
        File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))?;
    // Two threads: this one writes the pages file while a reader fills the
    // next buffer from the task. Buffers go round: empty -> reader -> full
    // -> writer -> empty.
    let (full_tx, full_rx) = sync_channel::<Result<(Vec<u8>, usize), Error>>(DUMP_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(DUMP_BUFFERS);
    for _ in 0..DUMP_BUFFERS {
        let _ = empty_tx.send(vec![0u8; BATCH]);
    }
    let reader = move || {
        let mut buf = match empty_rx.recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut fill = 0usize;
        for run in runs {
            let total = (run.npages * PAGE_SIZE) as usize;
            let mut done = 0usize;
            while done < total {
                if fill == buf.len() {
                    if full_tx.send(Ok((buf, fill))).is_err() {
                        return;
                    }
                    buf = match empty_rx.recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                    fill = 0;
                }
                let len = (total - done).min(buf.len() - fill);
                let addr = run.addr + done as u64;
                let dst = &mut buf[fill..fill + len];
                let got = if run.readable {
                    mem::read(pid, RemoteAddr(addr), dst)
                        .map_err(sys_err(pid, format!("process_vm_readv at {addr:#x}")))
                } else {
                    // PROT_NONE and other unreadable areas: /proc/PID/mem
                    // reads them with FOLL_FORCE.
                    mem_file
                        .read_at(dst, addr)
                        .map_err(sys_err(pid, format!("read /proc/PID/mem at {addr:#x}")))
                };
                let got = match got {
                    Ok(n) if n == len => n,
                    Ok(n) => {
                        let _ = full_tx.send(Err(Error::Sys {
                            pid,
                            op: format!(
                                "short read of task memory at {addr:#x} ({n} of {len} bytes)"
                            ),
                            source: std::io::Error::from_raw_os_error(libc::EFAULT),
                        }));
                        return;
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                };
                fill += got;
                done += got;
            }
        }
        if fill > 0 {
            let _ = full_tx.send(Ok((buf, fill)));
        }
    };
    let written = std::thread::scope(|s| -> Result<u64, Error> {
        // Owned here, so that they are gone (and a waiting reader stops)
        // as soon as this writer returns, even on an error.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        s.spawn(reader);
        let mut bytes = 0u64;
        // Ends when the reader is done and has dropped its sender.
        for msg in &full_rx {
            let (buf, len) = msg?;
            out.write_all(&buf[..len]).map_err(|source| Error::Io {
                op: "cannot write",
                path: pages_path.to_path_buf(),
                source,
            })?;
            bytes += len as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(bytes)
    });
    let bytes = written?;
    let want: u64 = runs.iter().map(|r| r.npages * PAGE_SIZE).sum();
    if bytes != want {
        return Err(Error::Sys {
            pid,
            op: format!("reading task memory stopped after {bytes} of {want} bytes"),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        });
    }
    Ok(bytes / PAGE_SIZE)
}

/// Write a pagemap image: the head, then one entry per run of
/// (vaddr or object offset, pages, flags).
fn write_pagemap(
    dir: &Path,
    ty: ImageType,
    id: u64,
    pages_id: u32,
    runs: &[(u64, u64, u32)],
) -> Result<(), Error> {
    let name = ty.file_name(id);
    let werr = |source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    };
    let mut w = ImageWriter::create(dir, ty, &name).map_err(werr)?;
    let head = PagemapHead {
        pages_id,
        ..Default::default()
    };
    w.write_entry(&head).map_err(werr)?;
    for &(vaddr, n, flags) in runs {
        w.write_entry(&PagemapEntry {
            vaddr,
            compat_nr_pages: 0,
            flags: Some(flags),
            nr_pages: Some(n),
            ..Default::default()
        })
        .map_err(werr)?;
    }
    w.finish().map_err(werr)
}

/// `/proc/PID/map_files/` entry of a mapping: opens the mapped object itself.
fn map_files_path(pid: i32, m: &crust_proc::MapEntry) -> String {
    format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)
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
/// wrote are found; pages holding only zeros are left out. Writes
/// `pagemap-shmem-<ino>.img` and its pages file; returns (pages scanned,
/// pages stored).
fn dump_shmem(pid: i32, dir: &Path, v: &Vma) -> Result<(u64, u64), Error> {
    let path = map_files_path(pid, &v.map);
    let f = File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    let size = f
        .metadata()
        .map_err(sys_err(pid, format!("stat {path}")))?
        .len();
    let ino = v.map.inode;
    let (total, stored, runs) = store_object_pages(
        dir,
        &f,
        Path::new(&path),
        size,
        ino as u32 as u64,
        shmem_pages_id(ino),
    )?;
    debug!("{pid}: shared memory ino {ino} ({size} bytes): {stored} pages stored in {runs} runs");
    Ok((total, stored))
}

/// Store the pages of a shared memory object (memfd, shared anonymous
/// memory, System V segment) that are not all zeros: its content is read
/// from `src` (`size` bytes; `src_path` names it in errors) into the pages
/// file `pages_id`, described by `pagemap-shmem-<shmid>.img`. Returns
/// (pages scanned, pages stored, runs).
pub(crate) fn store_object_pages(
    dir: &Path,
    src: &File,
    src_path: &Path,
    size: u64,
    shmid: u64,
    pages_id: u32,
) -> Result<(u64, u64, usize), Error> {
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    let ioerr = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(&pages_path).map_err(ioerr("cannot create", &pages_path))?,
    );
    let total = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; BATCH];
    let mut off = 0u64;
    let mut stored = 0u64;
    while off < total {
        let len = ((total - off) as usize).min(BATCH);
        let chunk = &mut buf[..len];
        let mut got = 0usize;
        while got < len {
            match src.read_at(&mut chunk[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ioerr("cannot read", src_path)(e)),
            }
        }
        chunk[got..].fill(0);
        for (i, page) in chunk.chunks_exact(PAGE_SIZE as usize).enumerate() {
            if all_zero(page) {
                continue;
            }
            let at = off + i as u64 * PAGE_SIZE;
            match runs.last_mut() {
                Some((s, n)) if *s + *n * PAGE_SIZE == at => *n += 1,
                _ => runs.push((at, 1)),
            }
            out.write_all(page)
                .map_err(ioerr("cannot write", &pages_path))?;
            stored += 1;
        }
        off += len as u64;
    }
    out.flush().map_err(ioerr("cannot write", &pages_path))?;
    let entries: Vec<(u64, u64, u32)> = runs.iter().map(|&(a, n)| (a, n, pe::PRESENT)).collect();
    write_pagemap(dir, ImageType::ShmemPagemap, shmid, pages_id, &entries)?;
    Ok((total / PAGE_SIZE, stored, runs.len()))
}

/// madvise advice numbers that VmFlags letters stand for.
fn madv_bits(v: &Vma) -> u64 {
    let mut m = 0u64;
    for (flag, advice) in [
        ("dd", libc::MADV_DONTDUMP),
        ("dc", libc::MADV_DONTFORK),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("mg", libc::MADV_MERGEABLE),
        ("wf", libc::MADV_WIPEONFORK),
    ] {
        if v.has(flag) {
            m |= 1u64 << advice;
        }
    }
    m
}

/// What memfd.img records of the shared memory object VMA `v` maps.
fn shmem_inode(pid: i32, v: &Vma, vmas: &[Vma]) -> ShmemInode {
    use std::os::unix::fs::MetadataExt;
    let ino = v.map.inode;
    match std::fs::metadata(map_files_path(pid, &v.map)) {
        Ok(md) => ShmemInode {
            ino,
            name: SHMEM_ANON_NAME.into(),
            size: md.size(),
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode(),
            seals: F_SEAL_SEAL,
        },
        // Without map_files: the object reaches at least as far as its
        // mappings; the kernel creates it as root's, mode 0100777.
        Err(_) => ShmemInode {
            ino,
            name: SHMEM_ANON_NAME.into(),
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

pub fn build_mm(
    proc: &ProcRoot,
    pid: i32,
    stat: &Stat,
    vmas: &[Vma],
    inside: &Inside,
    files: &mut FileTable,
) -> Result<MmEntry, Error> {
    let exe = crust_proc::exe(proc, pid).map_err(proc_err(pid))?;
    let exe_file_id = files.add_mapped(&exe, libc::O_RDONLY as u32)?;
    let mut entries = Vec::with_capacity(vmas.len());
    for v in vmas {
        let m = &v.map;
        let mut prot = 0u32;
        if m.read {
            prot |= libc::PROT_READ as u32;
        }
        if m.write {
            prot |= libc::PROT_WRITE as u32;
        }
        if m.exec {
            prot |= libc::PROT_EXEC as u32;
        }
        let mut flags = if m.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        } as u32;
        if v.status & (vs::ANON_PRIVATE | vs::ANON_SHARED) != 0 {
            flags |= libc::MAP_ANONYMOUS as u32;
        }
        if v.has("gd") {
            flags |= libc::MAP_GROWSDOWN as u32;
        }
        if v.has("nr") {
            flags |= libc::MAP_NORESERVE as u32;
        }
        let (shmid, fdflags) = if v.status & vs::AREA_SOCKET != 0 {
            // The socket inode for now; `link_socket_vmas` puts its
            // files.img id.
            (m.inode as u32, None)
        } else if v.status & vs::AREA_SYSVIPC != 0 {
            let ff = crate::ns::sysvipc::attach_fdflags(pid, m.start, m.end);
            (m.inode as u32, Some(ff))
        } else if v.is_shmem() {
            // As CRIU records it: the memfd is opened read-write.
            let obj = shmem_inode(pid, v, vmas);
            (files.add_shmem(&obj), Some(libc::O_RDWR as u32))
        } else if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            let fdflags = if m.shared && (m.write || v.has("mw")) {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            } as u32;
            let path = m.path.clone().unwrap_or_default();
            (files.add_mapped(Path::new(&path), fdflags)?, Some(fdflags))
        } else {
            (0, None)
        };
        let madv = madv_bits(v);
        entries.push(VmaEntry {
            start: m.start,
            end: m.end,
            pgoff: if fdflags.is_some() || v.status & vs::AREA_SOCKET != 0 {
                m.offset
            } else {
                0
            },
            shmid: shmid as u64,
            prot,
            flags,
            status: v.status,
            fd: -1,
            madv: (madv != 0).then_some(madv),
            fdflags,
            ..Default::default()
        });
    }
    let mut auxv = crust_proc::auxv(proc, pid).map_err(proc_err(pid))?;
    while auxv.len() >= 2 && auxv[auxv.len() - 2] == 0 && auxv[auxv.len() - 1] == 0 {
        auxv.truncate(auxv.len() - 2);
    }
    Ok(MmEntry {
        mm_start_code: stat.start_code,
        mm_end_code: stat.end_code,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.start_stack,
        mm_start_brk: stat.start_brk,
        mm_brk: inside.brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id,
        mm_saved_auxv: auxv,
        vmas: entries,
        dumpable: Some(inside.dumpable),
        thp_disabled: Some(inside.thp_disabled),
        ..Default::default()
    })
}

/// Name the packet socket each socket VMA of `mm` maps (its rings), as
/// CRIU does: `shmid` becomes the socket's files.img id. `fds` are the
/// process's fds (None when it shares another process's table). Refused:
/// a mapped socket no fd of the tree holds as a packet socket (e.g. its fd
/// was closed after mmap), one the process itself holds no fd of, and a
/// mapping of part of the rings (the kernel maps them only whole).
pub fn link_socket_vmas(
    pid: i32,
    mm: &mut MmEntry,
    files: &FileTable,
    fds: Option<&[FdinfoEntry]>,
) -> Result<(), Error> {
    for v in mm
        .vmas
        .iter_mut()
        .filter(|v| v.status & vs::AREA_SOCKET != 0)
    {
        let ino = v.shmid as u32;
        let here = format!(
            "process {pid} maps socket {ino} at {:#x}-{:#x}",
            v.start, v.end
        );
        let (id, len) = files.packet_rings(ino).ok_or_else(|| {
            Error::unsupported(format!(
                "{here}, which no fd of the tree holds as a packet socket (only packet socket rings can be mapped; its fd may have been closed)"
            ))
        })?;
        if v.pgoff != 0 || v.end - v.start != len {
            return Err(Error::unsupported(format!(
                "{here} at offset {:#x}: part of its rings ({len} bytes), which cannot be mapped again",
                v.pgoff
            )));
        }
        if let Some(fds) = fds {
            if !fds.iter().any(|f| f.id == id) {
                return Err(Error::unsupported(format!(
                    "{here}, a packet socket it has no fd of (restore maps the rings through the process's own fd)"
                )));
            }
        }
        debug!("{here}: rings of packet socket file {id}");
        v.shmid = id as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------- restore

/// Highest user address on x86_64 with 4-level paging.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn bad(dir: &Path, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    }
}

/// Check the VMA list of an image: sorted, page aligned, non-overlapping,
/// inside user space (vsyscall excepted).
pub fn validate_vmas(dir: &Path, mm: &MmEntry) -> Result<(), Error> {
    let mut prev_end = 0u64;
    for v in &mm.vmas {
        if v.status & vs::AREA_VSYSCALL != 0 {
            continue;
        }
        if v.start >= v.end
            || v.start % PAGE_SIZE != 0
            || v.end % PAGE_SIZE != 0
            || v.end > TASK_SIZE
            || v.start < prev_end
        {
            return Err(bad(
                dir,
                format!("mm image has a bad VMA {:#x}-{:#x}", v.start, v.end),
            ));
        }
        if v.status & (vs::AREA_AIORING | vs::UNSUPP) != 0 {
            return Err(Error::unsupported(format!(
                "restoring VMA {:#x}-{:#x} with status {:#x}",
                v.start, v.end, v.status
            )));
        }
        prev_end = v.end;
    }
    // Shared memory objects: their memfd entries and pages must hold up.
    load_shmem(dir, mm)?;
    Ok(())
}

/// A run of pages to read from `pages-N.img` into the task.
#[derive(Debug, Clone, Copy)]
pub struct PageRun {
    pub vaddr: u64,
    pub npages: u64,
    pub file_off: u64,
    /// Not in the pages file: inherited from the parent (`COW_PARENT`).
    pub cow: bool,
}

/// Is [start, end) covered by back-to-back private VMAs whose pages can be
/// stored? (CRIU merges runs across adjacent VMAs.)
/// CRIU also stores the vDSO's pages; those are only skipped on restore
/// (`Some(true)`), the kernel provides them.
fn covered_by_private_vmas(mm: &MmEntry, start: u64, end: u64) -> Option<bool> {
    let mut cur = start;
    let mut vdso = false;
    while cur < end {
        let v = mm.vmas.iter().find(|v| {
            v.start <= cur
                && cur < v.end
                && v.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE) != 0
                && v.status & vs::AREA_VSYSCALL == 0
        })?;
        vdso |= v.status & (vs::AREA_VDSO | vs::AREA_VVAR) != 0;
        cur = v.end;
    }
    Some(vdso)
}

/// Read and check a pagemap image against the VMAs and the pages file.
pub fn load_pagemap(dir: &Path, pid: i32, mm: &MmEntry) -> Result<(u32, Vec<PageRun>), Error> {
    let name = ImageType::Pagemap.file_name(pid as u64);
    let rerr = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut r = crust_images::image::ImageReader::open_typed(dir, ImageType::Pagemap, &name)
        .map_err(rerr)?;
    let head: PagemapHead = r
        .read_entry()
        .map_err(|source| Error::Image {
            what: format!("cannot read image {name}"),
            source,
        })?
        .ok_or_else(|| bad(dir, format!("{name} holds no pagemap head")))?;
    let entries: Vec<PagemapEntry> = r.read_remaining().map_err(|source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    })?;
    let pages_path = dir.join(ImageType::Pages.file_name(head.pages_id as u64));
    let pages_len = std::fs::metadata(&pages_path)
        .map_err(|source| Error::Image {
            what: format!("cannot read image {}", pages_path.display()),
            source: crust_images::image::ImageError::Missing {
                path: pages_path.clone(),
                source,
            },
        })?
        .len();
    let mut runs = Vec::with_capacity(entries.len());
    let mut off = 0u64;
    for e in &entries {
        let n = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let flags = e.flags.unwrap_or(pe::PRESENT);
        if e.in_parent == Some(true) || flags & pe::PARENT != 0 {
            return Err(Error::unsupported(
                "images that refer to a parent (pre-dump) image set",
            ));
        }
        let end = e.vaddr.saturating_add(n.saturating_mul(PAGE_SIZE));
        if flags & pe::COW_PARENT != 0 && flags & pe::PRESENT == 0 {
            // Inherited pages must lie in one anonymous private VMA.
            let ok = e.vaddr % PAGE_SIZE == 0
                && n > 0
                && mm.vmas.iter().any(|v| {
                    v.start <= e.vaddr
                        && end <= v.end
                        && v.status & vs::ANON_PRIVATE != 0
                        && v.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
                });
            if !ok {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: copy-on-write pages {:#x}+{n} are not inside an anonymous private VMA of mm-{pid}.img",
                        e.vaddr
                    ),
                ));
            }
            runs.push(PageRun {
                vaddr: e.vaddr,
                npages: n,
                file_off: 0,
                cow: true,
            });
            continue;
        }
        if flags & pe::PRESENT == 0 {
            continue;
        }
        let inside = covered_by_private_vmas(mm, e.vaddr, end);
        if e.vaddr % PAGE_SIZE != 0 || n == 0 || inside.is_none() {
            return Err(bad(
                dir,
                format!(
                    "{name}: pages {:#x}+{n} are not inside a private VMA of mm-{pid}.img",
                    e.vaddr
                ),
            ));
        }
        if inside == Some(false) {
            runs.push(PageRun {
                vaddr: e.vaddr,
                npages: n,
                file_off: off,
                cow: false,
            });
        }
        off += n * PAGE_SIZE;
    }
    if off > pages_len {
        return Err(bad(
            dir,
            format!(
                "{} is truncated: {} bytes, the pagemap needs {off}",
                pages_path.display(),
                pages_len
            ),
        ));
    }
    Ok((head.pages_id, runs))
}

/// Is this VMA shared anonymous memory (a "/dev/zero" memfd as CRIU 4.x
/// writes it, or VMA_ANON_SHARED as older CRIU did)?
fn is_shmem_entry(v: &VmaEntry) -> bool {
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
    /// Bytes to create, page aligned; covers every VMA of the object.
    pub size: u64,
    pub pages_id: u32,
    /// vaddr = offset in the object.
    pub runs: Vec<PageRun>,
}

fn pages_file_len(dir: &Path, pages_id: u32) -> Result<u64, Error> {
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    Ok(std::fs::metadata(&pages_path)
        .map_err(|source| Error::Image {
            what: format!("cannot read image {}", pages_path.display()),
            source: crust_images::image::ImageError::Missing {
                path: pages_path.clone(),
                source,
            },
        })?
        .len())
}

/// Read and check every shared memory object the VMAs of `mm` map:
/// files.img/memfd.img for memfd VMAs, then pagemap-shmem-N.img and the
/// length of its pages file. Only shared anonymous memory ("/dev/zero") can
/// be rebuilt so far; other memfds are refused.
pub fn load_shmem(dir: &Path, mm: &MmEntry) -> Result<Vec<ShmemObject>, Error> {
    if !mm.vmas.iter().any(is_shmem_entry) {
        return Ok(Vec::new());
    }
    let memfds = if mm.vmas.iter().any(|v| v.status & vs::AREA_MEMFD != 0) {
        crate::files::load_memfds(dir)?
    } else {
        Default::default()
    };
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
            continue;
        }
        let (ino, size) = if v.status & vs::AREA_MEMFD != 0 {
            if v.status & vs::FILE_SHARED == 0 || v.flags & libc::MAP_SHARED as u32 == 0 {
                return Err(Error::unsupported(format!(
                    "restoring the private memfd mapping {what}"
                )));
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
            if inode.name != crate::files::SHMEM_ANON_NAME {
                return Err(Error::unsupported(format!(
                    "restoring {what}, a mapping of memfd {:?} (only shared anonymous memory so far)",
                    inode.name
                )));
            }
            if inode.size > TASK_SIZE {
                return Err(bad(
                    dir,
                    format!("memfd.img: object {} has size {}", inode.shmid, inode.size),
                ));
            }
            (
                inode.shmid as u64,
                inode.size.div_ceil(PAGE_SIZE) * PAGE_SIZE,
            )
        } else {
            (v.shmid, 0)
        };
        out.push(ShmemObject {
            key: v.shmid,
            ino,
            size: size.max(end_off),
            pages_id: 0,
            runs: Vec::new(),
        });
    }
    for o in &mut out {
        let p = object_page_runs(dir, o.ino, o.size, "the shared memory object")?;
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

/// Read pages from a pages image into the stopped task: each item is
/// (task address, bytes, offset in the file). The target ranges are mapped
/// read-write by now.
///
/// crust copies them itself with process_vm_writev, from FILL_THREADS
/// threads at once: on a fresh mapping most of the cost is faulting the
/// pages in, and this spreads the faults over the CPUs (a remote pread64
/// in the task faults them all on one). Measured on 1 GiB: 0.50 s with a
/// remote pread64, 0.30 s this way (see docs/ARCHITECTURE.md).
fn fill_from_pages(
    r: &mut Remote<'_>,
    pages_path: &Path,
    runs: &[(u64, u64, u64)],
) -> Result<(), Error> {
    if runs.is_empty() {
        return Ok(());
    }
    fill_vm_writev(r.pid(), pages_path, runs)
}

/// Bytes one crust thread copies into the task at a time (1 GiB restored
/// in 0.29-0.39 s with 1 MiB, 0.31-0.35 s with 4 MiB, 0.28-0.33 s with
/// 256 KiB).
const FILL_CHUNK: u64 = 1 << 20;
/// crust threads that copy pages into the task.
const FILL_THREADS: usize = 2;

/// Copies pages from pages images into stopped tasks on FILL_THREADS
/// threads of crust, for every process of a restore: while crust builds
/// the next process with remote syscalls, the memory of the ones before is
/// still being filled, and each process's pages are spread over the
/// threads in FILL_CHUNK pieces. A process's fill must be over
/// ([`Pending::wait`]) before its final protections are set and before it
/// begets a child that inherits its memory.
pub struct Filler {
    tx: Option<std::sync::mpsc::Sender<FillChunk>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct FillChunk {
    pid: i32,
    path: std::sync::Arc<std::path::PathBuf>,
    addr: u64,
    len: u64,
    off: u64,
    done: std::sync::Arc<Pending>,
}

/// The fill of one process: chunks left, and the first error.
#[derive(Default)]
pub struct Pending {
    state: std::sync::Mutex<(usize, Option<Error>)>,
    cv: std::sync::Condvar,
}

impl Pending {
    fn done(&self, r: Result<(), Error>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        if let Err(e) = r {
            g.1.get_or_insert(e);
        }
        if g.0 == 0 {
            self.cv.notify_all();
        }
    }

    /// Wait until every chunk is in; the first error, if any.
    pub fn wait(&self) -> Result<(), Error> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while g.0 > 0 {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        match g.1.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Filler {
    pub fn new() -> Filler {
        let (tx, rx) = std::sync::mpsc::channel::<FillChunk>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..FILL_THREADS)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; FILL_CHUNK as usize];
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(c) = next else { return };
                        let r = fill_chunk(&c, &mut buf[..c.len as usize]);
                        c.done.done(r);
                    }
                })
            })
            .collect();
        Filler {
            tx: Some(tx),
            workers,
        }
    }

    /// Queue the runs (task address, bytes, file offset) of `pages_path`
    /// for task `pid`.
    pub fn submit(
        &self,
        pid: i32,
        pages_path: &Path,
        runs: &[(u64, u64, u64)],
    ) -> std::sync::Arc<Pending> {
        let done = std::sync::Arc::new(Pending::default());
        let path = std::sync::Arc::new(pages_path.to_path_buf());
        let mut chunks = Vec::new();
        for &(addr, total, off) in runs {
            let mut at = 0;
            while at < total {
                let len = (total - at).min(FILL_CHUNK);
                chunks.push(FillChunk {
                    pid,
                    path: path.clone(),
                    addr: addr + at,
                    len,
                    off: off + at,
                    done: done.clone(),
                });
                at += len;
            }
        }
        done.state.lock().unwrap_or_else(|p| p.into_inner()).0 = chunks.len();
        if let Some(tx) = &self.tx {
            for c in chunks {
                if let Err(std::sync::mpsc::SendError(c)) = tx.send(c) {
                    c.done.done(Err(Error::Restore {
                        pid,
                        what: "the page filler has stopped".into(),
                    }));
                }
            }
        }
        done
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn fill_chunk(c: &FillChunk, buf: &mut [u8]) -> Result<(), Error> {
    let f = File::open(&*c.path).map_err(|source| Error::Io {
        op: "cannot open",
        path: c.path.to_path_buf(),
        source,
    })?;
    f.read_exact_at(buf, c.off).map_err(|source| Error::Io {
        op: "cannot read",
        path: c.path.to_path_buf(),
        source,
    })?;
    let w = mem::write(c.pid, RemoteAddr(c.addr), buf).map_err(sys_err(
        c.pid,
        format!("process_vm_writev at {:#x}", c.addr),
    ))?;
    if w != buf.len() {
        return Err(Error::Sys {
            pid: c.pid,
            op: format!(
                "short process_vm_writev at {:#x} ({w} of {} bytes)",
                c.addr,
                buf.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        });
    }
    Ok(())
}

/// Copy pages from the image file into the stopped task with
/// process_vm_writev from FILL_THREADS crust threads, FILL_CHUNK bytes at
/// a time (pread from the file into a buffer, then into the task).
fn fill_vm_writev(pid: i32, pages_path: &Path, runs: &[(u64, u64, u64)]) -> Result<(), Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut chunks: Vec<(u64, u64, u64)> = Vec::new();
    for &(addr, total, off) in runs {
        let mut done = 0;
        while done < total {
            let n = (total - done).min(FILL_CHUNK);
            chunks.push((addr + done, n, off + done));
            done += n;
        }
    }
    let next = AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let worker = || -> Result<(), Error> {
        let f = File::open(pages_path).map_err(|source| Error::Io {
            op: "cannot open",
            path: pages_path.to_path_buf(),
            source,
        })?;
        let mut buf = vec![0u8; FILL_CHUNK as usize];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(addr, n, off)) = chunks.get(i) else {
                return Ok(());
            };
            let b = &mut buf[..n as usize];
            f.read_exact_at(b, off).map_err(|source| Error::Io {
                op: "cannot read",
                path: pages_path.to_path_buf(),
                source,
            })?;
            let w = mem::write(pid, RemoteAddr(addr), b)
                .map_err(sys_err(pid, format!("process_vm_writev at {addr:#x}")))?;
            if w != b.len() {
                return Err(Error::Sys {
                    pid,
                    op: format!("short process_vm_writev at {addr:#x} ({w} of {n} bytes)"),
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                });
            }
        }
    };
    let total: u64 = chunks.iter().map(|c| c.1).sum();
    if total <= FILL_CHUNK {
        // Not worth a thread.
        return worker();
    }
    std::thread::scope(|s| {
        for _ in 0..FILL_THREADS {
            s.spawn(|| {
                if let Err(e) = worker() {
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    g.get_or_insert(e);
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rebuild one shared memory object: a MAP_SHARED|MAP_ANONYMOUS mapping of
/// its whole size at an address the kernel picks (every VMA of the image is
/// already reserved, so it lands apart from them), filled from its pages
/// image; then each VMA of the object is a new mapping of that same object
/// (mremap with old_len 0 duplicates a shared mapping) moved onto its
/// reserved place; finally the whole-object mapping goes away.
fn restore_shmem(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    o: &ShmemObject,
) -> Result<u64, Error> {
    let base = r.call(
        &format!("mmap shared memory object {} ({} bytes)", o.ino, o.size),
        libc::SYS_mmap,
        [
            0,
            o.size,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let pages_path = dir.join(ImageType::Pages.file_name(o.pages_id as u64));
    let fill: Vec<(u64, u64, u64)> = o
        .runs
        .iter()
        .map(|p| (base + p.vaddr, p.npages * PAGE_SIZE, p.file_off))
        .collect();
    fill_from_pages(r, &pages_path, &fill)?;
    for v in mm
        .vmas
        .iter()
        .filter(|v| is_shmem_entry(v) && v.shmid == o.key)
    {
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
    Ok(o.runs.iter().map(|p| p.npages).sum())
}

/// Map every VMA of the image into the task (RW where pages will be
/// filled), fill the pages, rebuild shared memory objects, then set the
/// final protections.
/// The anonymous private VMAs (start, end) whose pages are partly
/// inherited from the parent: the restored process must keep the copies
/// it got from its parent at clone time instead of mapping them anew.
pub fn inherited_vmas(mm: &MmEntry, runs: &[PageRun]) -> Vec<(u64, u64)> {
    mm.vmas
        .iter()
        .filter(|v| {
            runs.iter()
                .any(|r| r.cow && v.start <= r.vaddr && r.vaddr < v.end)
        })
        .map(|v| (v.start, v.end))
        .collect()
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
) -> Result<Vec<(u64, u64)>, Error> {
    let mine = load_shmem(dir, mm)?;
    let theirs = load_shmem(dir, parent)?;
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
        let all_in_parent = vmas.iter().all(|v| {
            parent.vmas.iter().any(|pv| {
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

/// Map the VMAs, fill their pages and set their protections. The VMAs in
/// `inherited` are already there (copies of the parent's, see
/// [`inherited_vmas`]): they are only made writable for the fill, and the
/// pages that are neither inherited nor stored are zeroed.
#[allow(clippy::too_many_arguments)] // one process's whole memory image
pub fn restore_vmas(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    pages_id: u32,
    runs: &[PageRun],
    inherited: &[(u64, u64)],
    paths: &dyn Fn(u64) -> Option<String>,
    filler: &Filler,
) -> Result<(u64, std::sync::Arc<Pending>), Error> {
    let shmem = load_shmem(dir, mm)?;
    let mut open_fds: Vec<(u64, u32, u64)> = Vec::new(); // (shmid, fdflags, fd)
    let mut scratch_off = 0u64;
    for v in &mm.vmas {
        if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
            continue;
        }
        if is_shmem_entry(v) && inherited.contains(&(v.start, v.end)) {
            continue;
        }
        if v.status & vs::AREA_SYSVIPC != 0 {
            crate::ns::sysvipc::attach(r, mm, v)?;
            continue;
        }
        if is_shmem_entry(v) || v.status & vs::AREA_SOCKET != 0 {
            // Reserve the place; the object comes later (restore_shmem,
            // map_socket_vmas once the fds are open).
            let got = r.call(
                &format!("reserve {:#x}-{:#x}", v.start, v.end),
                libc::SYS_mmap,
                [
                    v.start,
                    v.end - v.start,
                    libc::PROT_NONE as u64,
                    (libc::MAP_PRIVATE
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_NORESERVE
                        | libc::MAP_FIXED) as u64,
                    u64::MAX,
                    0,
                ],
            )?;
            if got != v.start {
                return Err(Error::Restore {
                    pid: r.pid(),
                    what: format!("mmap placed {:#x} at {got:#x}", v.start),
                });
            }
            continue;
        }
        let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
        let prot = if private {
            v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
        } else {
            v.prot
        };
        if inherited.contains(&(v.start, v.end)) {
            r.call(
                &format!("mprotect inherited {:#x}-{:#x}", v.start, v.end),
                libc::SYS_mprotect,
                [v.start, v.end - v.start, prot as u64, 0, 0, 0],
            )?;
            continue;
        }
        let keep = (libc::MAP_SHARED
            | libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_GROWSDOWN
            | libc::MAP_NORESERVE) as u32;
        let flags = (v.flags & keep) as u64 | libc::MAP_FIXED as u64;
        let mut fd = u64::MAX;
        if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            let fdflags = v.fdflags.unwrap_or(libc::O_RDONLY as u32);
            if let Some((_, _, f)) = open_fds
                .iter()
                .find(|(s, ff, _)| *s == v.shmid && *ff == fdflags)
            {
                fd = *f;
            } else {
                let path = paths(v.shmid).ok_or_else(|| {
                    bad(
                        dir,
                        format!(
                            "VMA {:#x}-{:#x} maps file id {} which files.img does not have",
                            v.start, v.end, v.shmid
                        ),
                    )
                })?;
                let a = r.put_cstr(scratch_off, path.as_bytes())?;
                scratch_off = 0;
                fd = r.call(
                    &format!("open {path}"),
                    libc::SYS_openat,
                    [libc::AT_FDCWD as u64, a.get(), fdflags as u64, 0, 0, 0],
                )?;
                open_fds.push((v.shmid, fdflags, fd));
            }
        }
        let got = r.call(
            &format!("mmap {:#x}-{:#x}", v.start, v.end),
            libc::SYS_mmap,
            [v.start, v.end - v.start, prot as u64, flags, fd, v.pgoff],
        )?;
        if got != v.start {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mmap placed {:#x} at {got:#x}", v.start),
            });
        }
    }
    // Pages.
    let pages_path = dir.join(ImageType::Pages.file_name(pages_id as u64));
    let fill: Vec<(u64, u64, u64)> = runs
        .iter()
        .filter(|p| !p.cow)
        .map(|p| (p.vaddr, p.npages * PAGE_SIZE, p.file_off))
        .collect();
    // The private pages are copied in by the filler's threads while crust
    // goes on (see `Filler`); `protect_vmas` waits for them.
    let pending = filler.submit(r.pid(), &pages_path, &fill);
    let mut restored: u64 = runs.iter().filter(|p| !p.cow).map(|p| p.npages).sum();
    // In inherited VMAs, what is neither inherited nor stored was absent in
    // the dumped process: make it zero again.
    let private_inherited = inherited.iter().filter(|r| {
        mm.vmas
            .iter()
            .any(|v| (v.start, v.end) == **r && !is_shmem_entry(v))
    });
    for &(start, end) in private_inherited {
        let mut covered: Vec<(u64, u64)> = runs
            .iter()
            .map(|p| (p.vaddr, p.vaddr + p.npages * PAGE_SIZE))
            .filter(|&(a, b)| a < end && b > start)
            .collect();
        covered.sort_unstable();
        let mut cur = start;
        for (a, b) in covered.into_iter().chain(std::iter::once((end, end))) {
            if a > cur {
                r.call(
                    "madvise(MADV_DONTNEED)",
                    libc::SYS_madvise,
                    [cur, a.min(end) - cur, libc::MADV_DONTNEED as u64, 0, 0, 0],
                )?;
            }
            cur = cur.max(b);
        }
    }
    for (_, _, fd) in open_fds {
        r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    }
    for o in &shmem {
        let kept = mm
            .vmas
            .iter()
            .filter(|v| is_shmem_entry(v) && v.shmid == o.key)
            .all(|v| inherited.contains(&(v.start, v.end)));
        if !kept {
            restored += restore_shmem(r, dir, mm, o)?;
        }
    }
    Ok((restored, pending))
}

/// Map the packet socket rings of the socket VMAs of `mm` at their places
/// (reserved by `restore_vmas`), through the task's fds (`fds`, open
/// already) of the files.img ids the VMAs name. The rings come back
/// empty.
pub fn map_socket_vmas(r: &mut Remote<'_>, mm: &MmEntry, fds: &[FdinfoEntry]) -> Result<(), Error> {
    for v in mm.vmas.iter().filter(|v| v.status & vs::AREA_SOCKET != 0) {
        let fd = fds
            .iter()
            .filter(|f| f.id as u64 == v.shmid && f.r#type == fd_types::PACKETSK)
            .map(|f| f.fd)
            .min()
            .ok_or_else(|| Error::Restore {
                pid: r.pid(),
                what: format!(
                    "VMA {:#x}-{:#x} maps packet socket file {}, which the process has no fd of",
                    v.start, v.end, v.shmid
                ),
            })?;
        let flags = (v.flags & (libc::MAP_SHARED | libc::MAP_PRIVATE) as u32) as u64
            | libc::MAP_FIXED as u64;
        let got = r.call(
            &format!(
                "mmap the rings of packet socket fd {fd} at {:#x}-{:#x}",
                v.start, v.end
            ),
            libc::SYS_mmap,
            [
                v.start,
                v.end - v.start,
                v.prot as u64,
                flags,
                fd as u64,
                v.pgoff,
            ],
        )?;
        if got != v.start {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mmap placed {:#x} at {got:#x}", v.start),
            });
        }
        advise(r, v)?;
    }
    Ok(())
}

/// The recorded madvise advice of a VMA (one call per advice bit).
fn advise(r: &mut Remote<'_>, v: &VmaEntry) -> Result<(), Error> {
    let m = v.madv.unwrap_or(0);
    for adv in (0..64u64).filter(|a| m & (1 << a) != 0) {
        r.call(
            "madvise",
            libc::SYS_madvise,
            [v.start, v.end - v.start, adv, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Once the pages are in (`pending`), set the final protections and the
/// madvise advice of every VMA.
pub fn protect_vmas(r: &mut Remote<'_>, mm: &MmEntry, pending: &Pending) -> Result<(), Error> {
    pending.wait()?;
    for v in &mm.vmas {
        if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
            continue;
        }
        let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
        let sysv = v.status & vs::AREA_SYSVIPC != 0;
        if (private || sysv || is_shmem_entry(v))
            && v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32
        {
            r.call(
                "mprotect",
                libc::SYS_mprotect,
                [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
            )?;
        }
        advise(r, v)?;
    }
    Ok(())
}

/// Write the mm fields of the image with PR_SET_MM_MAP, exe included.
pub fn set_mm_map(r: &mut Remote<'_>, mm: &MmEntry, exe_path: &str) -> Result<(), Error> {
    // The kernel refuses to replace the exe link while the old exe file is
    // still mapped (EBUSY): when the task already has the right one (a
    // child of a restored parent, or crust restoring its own binary),
    // leave it as it is.
    use std::os::unix::fs::MetadataExt;
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let current = std::fs::metadata(format!("/proc/{}/exe", r.pid()));
    let wanted = std::fs::metadata(exe_path);
    let keep_exe = matches!((&current, &wanted), (Ok(c), Ok(w)) if same(c, w));
    let exe_fd = if keep_exe {
        u64::from(u32::MAX)
    } else {
        let a = r.put_cstr(0, exe_path.as_bytes())?;
        r.call(
            &format!("open exe {exe_path}"),
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                a.get(),
                libc::O_RDONLY as u64,
                0,
                0,
                0,
            ],
        )?
    };
    let auxv: Vec<u8> = mm
        .mm_saved_auxv
        .iter()
        .take(50)
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let auxv_addr = r.put(1024, &auxv)?;
    let mut b = Vec::with_capacity(104);
    for v in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_addr.get(),
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let m = r.put(0, &b)?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    r.call(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        [PR_SET_MM, PR_SET_MM_MAP, m.get(), b.len() as u64, 0, 0],
    )?;
    if !keep_exe {
        r.call("close", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
    }
    if let Some(d) = mm.dumpable {
        if d == 0 || d == 1 {
            r.call(
                "prctl(PR_SET_DUMPABLE)",
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as u64, d as u64, 0, 0, 0, 0],
            )?;
        }
    }
    if mm.thp_disabled == Some(true) {
        r.call(
            "prctl(PR_SET_THP_DISABLE)",
            libc::SYS_prctl,
            [libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0, 0],
        )?;
    }
    Ok(())
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
mod tests {
    use super::*;
    use crate::util::{read_one, write_image};
    use crust_images::proto::fdinfo::{fd_types, FileEntry};
    use crust_images::proto::memfd::{MemfdFileEntry, MemfdInodeEntry};

    fn golden_files() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/files")
    }

    /// CRIU 4.2 stored P's MAP_SHARED|MAP_ANONYMOUS area as memfd file 4,
    /// inode 11665, 2 pages at offset 0 in pages-1.img.
    #[test]
    fn golden_shared_anon_loads() {
        let dir = golden_files();
        if !dir.join("mm-1514.img").exists() {
            return;
        }
        let mm: MmEntry = read_one(&dir, ImageType::Mm, 1514).unwrap();
        validate_vmas(&dir, &mm).unwrap();
        let objs = load_shmem(&dir, &mm).unwrap();
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        assert_eq!((o.key, o.ino, o.size, o.pages_id), (4, 11665, 16384, 1));
        assert_eq!(o.runs.len(), 1);
        assert_eq!(
            (o.runs[0].vaddr, o.runs[0].npages, o.runs[0].file_off),
            (0, 2, 0)
        );
        let pages = std::fs::read(dir.join("pages-1.img")).unwrap();
        assert!(pages.starts_with(b"SHM-ANON page 0 written by parent"));
        assert!(pages[4096..].starts_with(b"SHM-ANON page 1 written by child"));
        // The private pagemap still loads beside it.
        load_pagemap(&dir, 1514, &mm).unwrap();
    }

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An image set with one memfd-backed shared VMA of 4 pages whose
    /// pagemap-shmem entry is (vaddr, npages), with `pages_len` bytes of pages.
    fn shmem_set(
        tag: &str,
        name: &str,
        vaddr: u64,
        npages: u64,
        pages_len: usize,
    ) -> (TempDir, MmEntry) {
        let dir = std::env::temp_dir().join(format!("crust-mem-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = TempDir(dir.clone());
        let file = FileEntry {
            r#type: fd_types::MEMFD,
            id: 7,
            memfd: Some(MemfdFileEntry {
                id: 7,
                inode_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        write_image(&dir, ImageType::Files, 0, &[file]).unwrap();
        let inode = MemfdInodeEntry {
            name: name.into(),
            size: 4 * PAGE_SIZE,
            shmid: 99,
            seals: 1,
            inode_id: 1,
            ..Default::default()
        };
        write_image(&dir, ImageType::MemfdInode, 0, &[inode]).unwrap();
        write_pagemap(
            &dir,
            ImageType::ShmemPagemap,
            99,
            5,
            &[(vaddr, npages, pe::PRESENT)],
        )
        .unwrap();
        std::fs::write(dir.join("pages-5.img"), vec![0u8; pages_len]).unwrap();
        let mm = MmEntry {
            vmas: vec![VmaEntry {
                start: 0x10000,
                end: 0x14000,
                shmid: 7,
                prot: 3,
                flags: libc::MAP_SHARED as u32,
                status: vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD,
                fd: -1,
                ..Default::default()
            }],
            ..Default::default()
        };
        (t, mm)
    }

    #[test]
    fn shmem_image_checks() {
        let (t, mm) = shmem_set("ok", "/dev/zero", PAGE_SIZE, 2, 2 * PAGE_SIZE as usize);
        let objs = load_shmem(&t.0, &mm).unwrap();
        assert_eq!(
            (objs[0].ino, objs[0].size, objs[0].pages_id),
            (99, 4 * PAGE_SIZE, 5)
        );
        // Pages past the end of the object.
        let (t, mm) = shmem_set(
            "past",
            "/dev/zero",
            3 * PAGE_SIZE,
            2,
            2 * PAGE_SIZE as usize,
        );
        assert!(matches!(load_shmem(&t.0, &mm), Err(Error::BadImage { .. })));
        // Overflowing run.
        let (t, mm) = shmem_set("ovf", "/dev/zero", PAGE_SIZE, u64::MAX / 2, 0);
        assert!(matches!(load_shmem(&t.0, &mm), Err(Error::BadImage { .. })));
        // Truncated pages file.
        let (t, mm) = shmem_set("trunc", "/dev/zero", 0, 2, PAGE_SIZE as usize);
        assert!(matches!(load_shmem(&t.0, &mm), Err(Error::BadImage { .. })));
        // A real memfd is not shared anonymous memory.
        let (t, mm) = shmem_set("memfd", "mine", 0, 1, PAGE_SIZE as usize);
        assert!(matches!(
            load_shmem(&t.0, &mm),
            Err(Error::Unsupported { .. })
        ));
        // A VMA naming a file id files.img lacks.
        let (t, mut mm) = shmem_set("noid", "/dev/zero", 0, 1, PAGE_SIZE as usize);
        mm.vmas[0].shmid = 8;
        assert!(matches!(load_shmem(&t.0, &mm), Err(Error::BadImage { .. })));
    }

    #[test]
    fn zero_pages() {
        let mut p = vec![0u8; PAGE_SIZE as usize];
        assert!(all_zero(&p));
        p[4095] = 1;
        assert!(!all_zero(&p));
    }
}
