//! Where a process's memory is in its image set: the runs of its pagemap
//! (and of shared memory objects' pagemaps), those in parent sets of a
//! pre-dump chain resolved to the set that holds their bytes, and the
//! files its file mappings map.

use crate::mem::chain::{self, Owner};
use crate::Error;
use crust_sys::PAGE_SIZE;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the bytes of a run are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// `files[i]` at this offset.
    File(usize, u64),
    /// Pages the pagemap says are zero.
    Zero,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    src: Src,
}

/// The pages one pagemap (a process's, or a shared object's) holds.
#[derive(Debug, Default)]
pub struct Pages {
    runs: Vec<Run>,
    files: Vec<(PathBuf, File)>,
}

impl Pages {
    /// Read `owner`'s pagemap of the set `dir`, following the chain of
    /// parent sets for runs marked as in the parent. No pagemap: no pages.
    pub fn load(dir: &Path, owner: Owner) -> Result<Pages, Error> {
        let Some(map) = chain::read_pagemap(dir, owner)? else {
            return Ok(Pages::default());
        };
        let mut fills = Vec::new();
        let mut parents = Vec::new();
        let mut runs = Vec::new();
        for e in &map.entries {
            if e.present() {
                fills.push((e.start, e.end - e.start, e.off));
            } else if e.in_parent() {
                parents.push((e.start, e.end));
            } else {
                runs.push(Run {
                    start: e.start,
                    end: e.end,
                    src: Src::Zero,
                });
            }
        }
        if !parents.is_empty() {
            let pieces = chain::resolve(dir, owner, map.pages_id, &parents)?;
            for r in chain::pieces_to_runs(&pieces) {
                fills.push((r.vaddr, r.npages * PAGE_SIZE, r.file_off));
            }
        }
        let mut files = Vec::new();
        for (path, part) in chain::level_files(dir, map.pages_id, &fills)? {
            let f = File::open(&path).map_err(|source| Error::Io {
                op: "cannot open the pages file",
                path: path.clone(),
                source,
            })?;
            let i = files.len();
            files.push((path, f));
            runs.extend(part.into_iter().map(|(addr, len, off)| Run {
                start: addr,
                end: addr + len,
                src: Src::File(i, off),
            }));
        }
        runs.sort_by_key(|r| r.start);
        Ok(Pages { runs, files })
    }

    /// Fill `buf` with the page at `addr` (page-aligned); false if this
    /// pagemap does not hold it.
    pub fn page(&self, addr: u64, buf: &mut [u8]) -> Result<bool, Error> {
        let i = self.runs.partition_point(|r| r.end <= addr);
        let Some(r) = self.runs.get(i).filter(|r| r.start <= addr) else {
            return Ok(false);
        };
        match r.src {
            Src::Zero => buf.fill(0),
            Src::File(f, off) => {
                let Some((path, file)) = self.files.get(f) else {
                    return Ok(false);
                };
                read_full(file, buf, off + (addr - r.start)).map_err(|source| Error::Io {
                    op: "cannot read the pages file",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(true)
    }
}

/// Read `buf.len()` bytes at `off`; what lies past the end of the file
/// is zero.
pub fn read_full(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match f.read_at(rest, off + done as u64) {
            Ok(0) => {
                rest.fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
