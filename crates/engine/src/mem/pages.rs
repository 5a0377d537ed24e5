//! Pagemap images: writing them, and reading one back checked against the
//! VMAs and the pages file.

use super::{bad, PageRun};
use crate::Error;
use crust_images::consts::{pe, vma as vs};
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_sys::PAGE_SIZE;
use std::path::Path;

/// Write a pagemap image: the head, then one entry per run of
/// (vaddr or object offset, pages, flags).
pub(crate) fn write_pagemap(
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
