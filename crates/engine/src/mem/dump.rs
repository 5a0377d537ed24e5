//! Dump side of private memory: scanning /proc/PID/pagemap of every VMA
//! that stores pages (zero page and copy-on-write detection) and copying the
//! chosen runs out of the task.

use super::shmem::dump_shmem;
use super::{write_pagemap, PageCounts, Vma, BATCH};
use crate::util::{proc_err, sys_err};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::ImageType;
use crust_proc::{PagemapReader, Pme, ProcRoot};
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};
use log::debug;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Buffers of BATCH bytes going round between the reader and the writer
/// of a page dump.
const DUMP_BUFFERS: usize = 3;

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
