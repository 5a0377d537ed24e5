//! Memory: the VMA list (`mm-N.img`), the pages that are present
//! (`pagemap-N.img` + `pages-N.img`) and rebuilding them on restore.

use crate::files::FileTable;
use crate::remote::Remote;
use crate::task::Inside;
use crate::util::{proc_err, sys_err};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::{ImageType, ImageWriter};
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
            MapKind::File => {
                let path = map.path.clone().unwrap_or_default();
                if map.shared && path == "/dev/zero" {
                    return unsupported("shared anonymous");
                }
                if map.is_deleted() {
                    return unsupported("deleted file");
                }
                if path.starts_with("/memfd:") {
                    return unsupported("memfd");
                }
                if path.starts_with("/SYSV") {
                    return unsupported("System V shared memory");
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
}

/// The pages-N.img id of a process's private memory.
pub const PAGES_ID: u32 = 1;
/// How many bytes are read from the task per batch.
const BATCH: usize = 8 << 20;

/// Find the present pages of every private VMA and store them.
pub fn dump_pages(pid: i32, dir: &Path, vmas: &[Vma]) -> Result<PageCounts, Error> {
    let proc = ProcRoot::default();
    let pm = PagemapReader::open(&proc, pid).map_err(proc_err(pid))?;
    let mut counts = PageCounts::default();
    // Runs of pages to store: (vaddr, npages, readable).
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for v in vmas.iter().filter(|v| v.dumps_pages()) {
        let npages = (v.map.end - v.map.start) / PAGE_SIZE;
        counts.scanned += npages;
        let pmes = pm
            .read(v.map.start, npages as usize)
            .map_err(proc_err(pid))?;
        let file_private = v.status & vs::FILE_PRIVATE != 0;
        let mut run: Option<(u64, u64)> = None;
        for (i, raw) in pmes.iter().enumerate() {
            let p = Pme(*raw);
            let want = if file_private {
                (p.present() && !p.file_or_shared_anon()) || p.swapped()
            } else {
                p.present() || p.swapped()
            };
            let addr = v.map.start + i as u64 * PAGE_SIZE;
            match (&mut run, want) {
                (Some((s, n)), true) if *s + *n * PAGE_SIZE == addr => *n += 1,
                (r, true) => {
                    if let Some((s, n)) = r.take() {
                        runs.push((s, n, v.map.read));
                    }
                    *r = Some((addr, 1));
                }
                (r, false) => {
                    if let Some((s, n)) = r.take() {
                        runs.push((s, n, v.map.read));
                    }
                }
            }
        }
        if let Some((s, n)) = run {
            runs.push((s, n, v.map.read));
        }
    }

    let pages_name = ImageType::Pages.file_name(PAGES_ID as u64);
    let pages_path = dir.join(&pages_name);
    let mut pages = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(&pages_path).map_err(|source| Error::Io {
            op: "cannot create",
            path: pages_path.clone(),
            source,
        })?,
    );
    let mem_file =
        File::open(format!("/proc/{pid}/mem")).map_err(sys_err(pid, "open /proc/PID/mem"))?;
    let mut buf = vec![0u8; BATCH];
    for &(start, n, readable) in &runs {
        let mut done = 0u64;
        let total = n * PAGE_SIZE;
        while done < total {
            let len = ((total - done) as usize).min(BATCH);
            let addr = start + done;
            let got = if readable {
                mem::read(pid, RemoteAddr(addr), &mut buf[..len])
                    .map_err(sys_err(pid, format!("process_vm_readv at {addr:#x}")))?
            } else {
                // PROT_NONE and other unreadable areas: /proc/PID/mem reads
                // them with FOLL_FORCE.
                mem_file
                    .read_at(&mut buf[..len], addr)
                    .map_err(sys_err(pid, format!("read /proc/PID/mem at {addr:#x}")))?
            };
            if got != len {
                return Err(Error::Sys {
                    pid,
                    op: format!("short read of task memory at {addr:#x} ({got} of {len} bytes)"),
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                });
            }
            pages.write_all(&buf[..len]).map_err(|source| Error::Io {
                op: "cannot write",
                path: pages_path.clone(),
                source,
            })?;
            done += len as u64;
        }
        counts.written += n;
    }
    pages.flush().map_err(|source| Error::Io {
        op: "cannot write",
        path: pages_path.clone(),
        source,
    })?;

    let name = ImageType::Pagemap.file_name(pid as u64);
    let werr = |source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    };
    let mut w = ImageWriter::create(dir, ImageType::Pagemap, &name).map_err(werr)?;
    w.write_entry(&PagemapHead {
        pages_id: PAGES_ID,
        ..Default::default()
    })
    .map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })?;
    for &(start, n, _) in &runs {
        w.write_entry(&PagemapEntry {
            vaddr: start,
            compat_nr_pages: 0,
            flags: Some(pe::PRESENT),
            nr_pages: Some(n),
            ..Default::default()
        })
        .map_err(|source| Error::Image {
            what: format!("cannot write {name}"),
            source,
        })?;
    }
    w.finish().map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })?;
    debug!(
        "{pid}: {} pages scanned, {} written in {} runs",
        counts.scanned,
        counts.written,
        runs.len()
    );
    Ok(counts)
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
        let (shmid, fdflags) = if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
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
            pgoff: if fdflags.is_some() { m.offset } else { 0 },
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
        if v.status
            & (vs::ANON_SHARED
                | vs::AREA_SYSVIPC
                | vs::AREA_SOCKET
                | vs::AREA_AIORING
                | vs::AREA_MEMFD
                | vs::UNSUPP)
            != 0
        {
            return Err(Error::unsupported(format!(
                "restoring VMA {:#x}-{:#x} with status {:#x}",
                v.start, v.end, v.status
            )));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// A run of pages to read from `pages-N.img` into the task.
#[derive(Debug, Clone, Copy)]
pub struct PageRun {
    pub vaddr: u64,
    pub npages: u64,
    pub file_off: u64,
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
        if flags & pe::PRESENT == 0 {
            continue;
        }
        let end = e.vaddr.saturating_add(n.saturating_mul(PAGE_SIZE));
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

/// Map every VMA of the image into the task (RW where pages will be
/// filled), fill the pages, then set the final protections.
pub fn restore_vmas(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    pages_id: u32,
    runs: &[PageRun],
    paths: &dyn Fn(u64) -> Option<String>,
) -> Result<u64, Error> {
    let mut open_fds: Vec<(u64, u32, u64)> = Vec::new(); // (shmid, fdflags, fd)
    let mut scratch_off = 0u64;
    for v in &mm.vmas {
        if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
            continue;
        }
        let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
        let prot = if private {
            v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
        } else {
            v.prot
        };
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
    let mut restored = 0u64;
    if !runs.is_empty() {
        let a = r.put_cstr(0, pages_path.as_os_str().as_encoded_bytes())?;
        let pfd = r.call(
            "open pages image",
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                a.get(),
                libc::O_RDONLY as u64,
                0,
                0,
                0,
            ],
        )?;
        for run in runs {
            let total = run.npages * PAGE_SIZE;
            let mut done = 0u64;
            while done < total {
                let n = r.call(
                    &format!("pread pages into {:#x}", run.vaddr + done),
                    libc::SYS_pread64,
                    [
                        pfd,
                        run.vaddr + done,
                        total - done,
                        run.file_off + done,
                        0,
                        0,
                    ],
                )?;
                if n == 0 {
                    return Err(Error::Restore {
                        pid: r.pid(),
                        what: format!("{} ends early", pages_path.display()),
                    });
                }
                done += n;
            }
            restored += run.npages;
        }
        r.call("close", libc::SYS_close, [pfd, 0, 0, 0, 0, 0])?;
    }
    for (_, _, fd) in open_fds {
        r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    }
    // Final protections and advice.
    for v in &mm.vmas {
        if v.status & (vs::AREA_VSYSCALL | vs::AREA_VDSO | vs::AREA_VVAR) != 0 {
            continue;
        }
        let private = v.flags & libc::MAP_PRIVATE as u32 != 0;
        if private && v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
            r.call(
                "mprotect",
                libc::SYS_mprotect,
                [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
            )?;
        }
        if let Some(m) = v.madv {
            for adv in 0..64u64 {
                if m & (1 << adv) != 0 {
                    r.call(
                        "madvise",
                        libc::SYS_madvise,
                        [v.start, v.end - v.start, adv, 0, 0, 0],
                    )?;
                }
            }
        }
    }
    Ok(restored)
}

/// Write the mm fields of the image with PR_SET_MM_MAP, exe included.
pub fn set_mm_map(r: &mut Remote<'_>, mm: &MmEntry, exe_path: &str) -> Result<(), Error> {
    let a = r.put_cstr(0, exe_path.as_bytes())?;
    let exe_fd = r.call(
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
    )?;
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
    r.call("close", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
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
