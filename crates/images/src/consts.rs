//! Numeric constants CRIU stores in image fields (facts of the format).

/// `pagemap_entry.flags`.
pub mod pe {
    /// Pages are in the parent snapshot.
    pub const PARENT: u32 = 1 << 0;
    /// Pages may be restored lazily.
    pub const LAZY: u32 = 1 << 1;
    /// Pages are stored in pages-N.img.
    pub const PRESENT: u32 = 1 << 2;
    /// crust's extension, not CRIU's: the pages were shared copy-on-write
    /// with the same pages of the parent process (same physical page at
    /// dump time). They are not in pages-N.img; the restored process
    /// inherits them from its restored parent, so they stay shared.
    pub const COW_PARENT: u32 = 1 << 16;
}

/// `vma_entry.status` bits.
pub mod vma {
    pub const AREA_NONE: u32 = 0;
    pub const AREA_REGULAR: u32 = 1 << 0;
    pub const AREA_STACK: u32 = 1 << 1;
    pub const AREA_VSYSCALL: u32 = 1 << 2;
    pub const AREA_VDSO: u32 = 1 << 3;
    pub const AREA_HEAP: u32 = 1 << 5;
    pub const FILE_PRIVATE: u32 = 1 << 6;
    pub const FILE_SHARED: u32 = 1 << 7;
    pub const ANON_SHARED: u32 = 1 << 8;
    pub const ANON_PRIVATE: u32 = 1 << 9;
    pub const AREA_SYSVIPC: u32 = 1 << 10;
    pub const AREA_SOCKET: u32 = 1 << 11;
    pub const AREA_VVAR: u32 = 1 << 12;
    pub const AREA_AIORING: u32 = 1 << 13;
    pub const AREA_MEMFD: u32 = 1 << 14;
    pub const AREA_SHSTK: u32 = 1 << 15;
    pub const AREA_GUARD: u32 = 1 << 16;
    pub const AREA_UPROBES: u32 = 1 << 17;
    pub const EXT_PLUGIN: u32 = 1 << 27;
    pub const CLOSE: u32 = 1 << 28;
    pub const NO_PROT_WRITE: u32 = 1 << 29;
    pub const PREMMAPED: u32 = 1 << 30;
    pub const UNSUPP: u32 = 1 << 31;
}

/// `task_core_entry.task_state`.
pub mod task_state {
    pub const ALIVE: u32 = 0x01;
    pub const DEAD: u32 = 0x02;
    pub const STOPPED: u32 = 0x03;
    pub const ZOMBIE: u32 = 0x06;
    pub const HELPER: u32 = 0x80;
    pub const THREAD: u32 = 0x81;
}

/// `inventory_entry.img_version` written by CRIU since v1.1 images.
pub const CRTOOLS_IMAGES_V1_1: u32 = 2;

/// Top bit of a `remap_file_path_entry.remap_id`: remapped to a ghost file.
pub const REMAP_GHOST: u32 = 1 << 31;

/// Page size of the images (x86_64).
pub const PAGE_SIZE: u64 = 4096;
