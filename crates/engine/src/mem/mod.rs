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

mod dump;
mod fill;
mod pages;
mod restore;
mod shmem;
mod vma;

pub use dump::{dump_pages, CowParent};
pub use fill::{Filler, Pending};
pub use pages::{load_pagemap, LocalImages, PageSink};
#[allow(unused_imports)] // the rest of the seam, for the next sinks and sources
pub use pages::{FillRun, PageOwner, PageSource, PageStream, Run};
pub use restore::{inherited_vmas, map_socket_vmas, protect_vmas, restore_vmas, set_mm_map};
pub use shmem::inherited_shmem;
pub(crate) use shmem::{object_page_runs, store_object_pages, ObjectPages};
pub use vma::{build_mm, collect_vmas, link_socket_vmas, validate_vmas};

use crate::Error;
use crust_images::consts::vma as vs;
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
pub(crate) const BATCH: usize = 1 << 20;
/// `/proc/PID/map_files/` entry of a mapping: opens the mapped object itself.
pub(crate) fn map_files_path(pid: i32, m: &crust_proc::MapEntry) -> String {
    format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)
}

/// Highest user address on x86_64 with 4-level paging.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

pub(crate) fn bad(dir: &Path, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    }
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
