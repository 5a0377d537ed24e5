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

mod aio;
pub mod chain;
pub mod dedup;
mod direct;
mod dump;
mod fill;
mod guard;
pub(crate) mod huge;
pub mod keeper;
pub mod objtrack;
mod pages;
mod parts;
mod piped;
mod restore;
mod shmem;
pub mod snapshot;
mod thp;
pub mod track;
mod vma;
pub mod zpages;

#[allow(unused_imports)]
pub use dump::{dump_pages, dump_pages_since, write_pages, CowParent, LazyMark, PagePlan, Since};
pub use fill::{Filler, Pending, UffdFill};
pub(crate) use guard::{entries_of as guard_vma_entries, guard_entries, guard_regions, guards_in};
pub use guard::{install_guards, split_guards};
pub(crate) use huge::{file_flag as hugetlb_file_flag, inode_page_size as hugetlb_page_size};
pub use pages::{load_pagemap, take_page_tally, Claims, LocalImages, PageSink};
pub(crate) use pages::{note_pages, write_pagemap_named};
#[allow(unused_imports)] // the rest of the seam, for the next sinks and sources
pub use pages::{FillRun, PageOwner, PageSource, PageStream, Run};
pub use piped::TaskPipe;
pub use restore::{
    cow_candidates, inherited_vmas, map_socket_vmas, protect_vmas, restore_vmas, set_mm_map,
};
pub use shmem::{inherited_shmem, shmem_places};
pub(crate) use shmem::{object_page_runs, objects_to, store_object_pages, ObjectPages};
pub use thp::load_huge_ranges;
pub(crate) use thp::{walk_extents, write_huge_ranges};

pub use vma::{
    build_mm, collect_vmas, collect_vmas_early, collect_vmas_frozen, link_socket_vmas, maps_memfd,
    validate_shmem, validate_vmas, EarlyVmas,
};

use crate::task::remote::Remote;
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use std::path::Path;

/// Name CRIU gives the memfd inode of shared anonymous memory.
pub const SHMEM_ANON_NAME: &str = "/dev/zero";
/// F_SEAL_SEAL: the only seal shared anonymous memory has (and it forbids
/// adding others).
pub const F_SEAL_SEAL: u32 = 1;

/// A shared memory object a task maps, as memfd.img records it.
#[derive(Debug, Clone)]
pub struct ShmemInode {
    /// Inode number (memfd.img `shmid`, the N of pagemap-shmem-N.img).
    pub ino: u64,
    pub name: String,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub seals: u32,
    /// memfd.img's `hugetlb_flag` of a hugetlb object (MFD_HUGETLB and
    /// the page size bits), `None` for shmem.
    pub hugetlb_flag: Option<u32>,
}

/// The files a dumped task maps, as the fd table records them (files.img
/// ids): implemented by [`crate::files::FileTable`], so memory names no
/// kind of file.
pub trait MappedFiles {
    /// The files.img id of the file at `path` mapped (or run, the exe)
    /// with open flags `flags`.
    fn mapped(&mut self, path: &Path, flags: u32) -> Result<u32, Error>;
    /// The files.img id of the deleted file `path` that process `pid`
    /// maps at `start`-`end` with open flags `flags` (saved as a ghost).
    fn mapped_deleted(
        &mut self,
        pid: i32,
        start: u64,
        end: u64,
        path: &Path,
        flags: u32,
    ) -> Result<u32, Error>;
    /// The files.img id of a shared memory object (one MEMFD entry and
    /// one memfd.img inode per object).
    fn shmem(&mut self, obj: &ShmemInode) -> u32;
    /// The files.img id of packet socket `ino`, dumped already as an fd of
    /// the tree, and the length of a mapping of its rings.
    fn packet_rings(&self, ino: u32) -> Option<(u32, u64)>;
}

/// The memfd inodes of an image set, by files.img id (the MEMFD entries of
/// files.img joined with memfd.img): read once per restore, by the caller
/// (`crate::files::memfds_of`).
pub type Memfds = std::collections::HashMap<u32, crust_images::proto::memfd::MemfdInodeEntry>;

/// Attach the System V segment a VMA maps (`VMA_AREA_SYSVIPC`), in the
/// task, given the whole VMA list: the IPC namespace's business.
pub type AttachSysv = dyn Fn(&mut Remote<'_>, &MmEntry, &VmaEntry) -> Result<(), Error>;

/// What the restore of a process's VMAs takes from outside memory.
pub struct VmaSources<'a> {
    /// The path of the file of files.img id `id` (mapped files).
    pub paths: &'a dyn Fn(u64) -> Option<String>,
    /// The memfd inodes of the image set.
    pub memfds: &'a Memfds,
    /// How the task gets a shared memory object that exists already, by
    /// inode number: a memfd crust made (an fd of the tree is on it), or
    /// an object a process built before maps.
    pub made_objects: &'a dyn Fn(u64) -> Option<MadeObject>,
    /// How System V segments are attached.
    pub attach_sysv: &'a AttachSysv,
    /// The files crust opens itself and gives to the task, by files.img
    /// id: a path of crust's (its /proc/CRUST/fd/N of a deleted file it
    /// made again), which the task's /proc, of another pid namespace
    /// maybe, does not have.
    pub crust_paths: &'a dyn Fn(u64) -> Option<String>,
}

/// A shared memory object that exists already, for a task to map:
/// crust's own description of it (a memfd crust made, or the object a
/// process built before maps, opened through its /proc/PID/map_files),
/// given to the task over a unix socket ([`crate::task::fdgift`]). The same
/// description, so a memfd mapped through memfd_create's own one gains no
/// writer (execveat of it would fail with ETXTBSY); given, not taken by
/// pidfd_getfd, since a task in a pid namespace of its own cannot name
/// crust.
#[derive(Debug, Clone)]
pub struct MadeObject(pub std::sync::Arc<std::os::fd::OwnedFd>);

/// One VMA of the dumped task, classified.
#[derive(Debug, Clone)]
pub struct Vma {
    pub map: crust_proc::MapEntry,
    pub vm_flags: VmFlags,
    pub status: u32,
}

/// The VmFlags of a VMA (two-letter codes of /proc/PID/smaps), a set of
/// bits: a dump keeps them for every VMA of the tree.
pub use crust_proc::VmFlags;

impl Vma {
    /// The address of a `syscall` instruction (bytes 0f 05) in the vDSO
    /// of `pid`, whose VMAs are `vmas`: remote syscalls can run there
    /// without changing a byte of the task's code. Any 0f 05 pair serves,
    /// even one that is the tail of a longer instruction: the CPU decodes
    /// from where the instruction pointer is put. `None` if the process
    /// has no vDSO (or it cannot be read).
    pub fn vdso_syscall(pid: i32, vmas: &[Vma]) -> Option<crust_sys::RemoteAddr> {
        let v = vmas
            .iter()
            .find(|v| v.status & vs::AREA_VDSO != 0 && v.map.exec)?;
        let len = usize::try_from(v.map.end.checked_sub(v.map.start)?).ok()?;
        let mut code = vec![0u8; len.min(1 << 20)];
        let n = crust_sys::mem::read(pid, crust_sys::RemoteAddr(v.map.start), &mut code).ok()?;
        let off = code.get(..n)?.windows(2).position(|w| w == [0x0f, 0x05])?;
        Some(crust_sys::RemoteAddr(v.map.start + off as u64))
    }

    /// Can `syscall` be planted at its start?
    pub fn usable_for_syscall(&self) -> bool {
        self.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
    }

    /// Are its pages stored in the images?
    pub(crate) fn dumps_pages(&self) -> bool {
        self.status & vs::AREA_REGULAR != 0
            && self.status & (vs::ANON_PRIVATE | vs::FILE_PRIVATE) != 0
            && self.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
            && !self.has("dp")
    }

    fn has(&self, f: &str) -> bool {
        self.vm_flags.has(f)
    }

    /// May its pages be restored lazily (CRIU's rule, as
    /// `lazy::can_be_lazy` on its image entry): private anonymous memory,
    /// not locked, not hugetlb, not droppable, not vDSO/vvar/vsyscall.
    pub(crate) fn can_be_lazy(&self) -> bool {
        self.status & vs::ANON_PRIVATE != 0
            && !self.map.shared
            && self.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
            && !self.has("lo")
            && !self.has("ht")
            && !self.has("dp")
    }

    /// The vDSO (its pages are stored whole, as CRIU stores them)?
    fn is_vdso(&self) -> bool {
        self.status & vs::AREA_VDSO != 0
    }

    /// An AIO ring (io_setup)?
    fn is_aio(&self) -> bool {
        self.status & vs::AREA_AIORING != 0
    }

    /// Shared anonymous memory (stored as a "/dev/zero" memfd)?
    fn is_shmem(&self) -> bool {
        self.status & vs::AREA_MEMFD != 0
    }
}

/// CRIU's rule of which VMAs may be restored lazily, on an image entry:
/// private anonymous memory, not locked, not hugetlb, not the vDSO, vvar
/// or vsyscall.
pub fn entry_can_be_lazy(v: &crust_images::proto::vma::VmaEntry) -> bool {
    let f = v.flags as i32;
    f & libc::MAP_ANONYMOUS != 0
        && f & libc::MAP_PRIVATE != 0
        && f & libc::MAP_LOCKED == 0
        && f & libc::MAP_HUGETLB == 0
        && v.status & (vs::AREA_VDSO | vs::AREA_VVAR | vs::AREA_VSYSCALL) == 0
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
    /// Private pages left to the parent image set (incremental dumps).
    pub in_parent: u64,
    /// Private pages left on the source for lazy restore (`PE_LAZY`
    /// only: `dump --lazy-pages`).
    pub lazy: u64,
    /// Pages of shared memory objects looked at, and stored.
    pub shmem_scanned: u64,
    pub shmem_written: u64,
}

impl PageCounts {
    /// Add the counts of another process.
    pub fn add(&mut self, n: &PageCounts) {
        self.scanned += n.scanned;
        self.written += n.written;
        self.zero += n.zero;
        self.cow += n.cow;
        self.in_parent += n.in_parent;
        self.lazy += n.lazy;
        self.shmem_scanned += n.shmem_scanned;
        self.shmem_written += n.shmem_written;
    }
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
