use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

pub const PAGE_SIZE: u64 = 4096;

/// Reader of `/proc/PID/pagemap`.
#[derive(Debug)]
pub struct PagemapReader {
    file: File,
    path: PathBuf,
}

impl PagemapReader {
    pub fn open(root: &ProcRoot, pid: i32) -> Result<Self> {
        let path = root.pid_path(pid, "pagemap");
        let file = File::open(&path).map_err(|e| ProcError::io(&path, e))?;
        Ok(PagemapReader { file, path })
    }

    /// The open pagemap file (for `PAGEMAP_SCAN`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The entries of `npages` pages starting at the page holding `start_vaddr`.
    /// Returns fewer entries only if the file ends first.
    pub fn read(&self, start_vaddr: u64, npages: usize) -> Result<Vec<u64>> {
        let mut buf = vec![0u8; npages * 8];
        let base = start_vaddr / PAGE_SIZE * 8;
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], base + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ProcError::io(&self.path, e)),
            }
        }
        buf.truncate(done / 8 * 8);
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }
}

/// A pagemap entry with accessors for its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pme(pub u64);

impl Pme {
    pub fn present(self) -> bool {
        self.0 >> 63 & 1 == 1
    }
    pub fn swapped(self) -> bool {
        self.0 >> 62 & 1 == 1
    }
    pub fn file_or_shared_anon(self) -> bool {
        self.0 >> 61 & 1 == 1
    }
    /// A guard page (MADV_GUARD_INSTALL, Linux 6.13): no page, and reading
    /// it faults.
    pub fn guard(self) -> bool {
        self.0 >> 58 & 1 == 1
    }
    /// A page-table marker, not a page: a "swapped" entry of swap type 31,
    /// the kernel's last one (`SWP_PTE_MARKER`, whatever its configuration:
    /// the types below it are swap files, device, migration and poison
    /// entries), e.g. where userfaultfd write-protected a page never
    /// touched. Needs the frame bits (CAP_SYS_ADMIN); without them, false.
    pub fn marker(self) -> bool {
        self.swapped() && self.pfn() & 0x1f == 0x1f
    }
    pub fn exclusive(self) -> bool {
        self.0 >> 56 & 1 == 1
    }
    pub fn soft_dirty(self) -> bool {
        self.0 >> 55 & 1 == 1
    }
    /// Bits 0-54 (zero without CAP_SYS_ADMIN).
    pub fn pfn(self) -> u64 {
        self.0 & ((1u64 << 55) - 1)
    }
}
