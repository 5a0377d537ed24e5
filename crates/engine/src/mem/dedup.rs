//! `dedup` and `--auto-dedup`: free, in the parent image sets, the pages a
//! newer set supersedes (CRIU's rule): for every run of the newer set's
//! pagemaps that is not in the parent, the same addresses of the same
//! process (or shared memory object) are punched out of each parent's
//! pages file, all the way up the chain, with
//! FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE. The pages a restore of the
//! newer set reads from its parents are those of its `PE_PARENT` runs,
//! other addresses: never punched. The parents themselves are no longer
//! restorable on their own afterwards (as with CRIU).

use super::bad;
use super::chain::{read_pagemap, Chain, Owner};
use crate::Error;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a dedup did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DedupStats {
    /// Parent pages files holes were punched in.
    pub files: u64,
    /// Bytes punched out.
    pub bytes: u64,
}

/// The pagemaps of the image set `dir`, by owner.
fn owners_of(dir: &Path) -> Result<Vec<Owner>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op: "cannot list",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        let Some(rest) = n
            .strip_prefix("pagemap-")
            .and_then(|r| r.strip_suffix(".img"))
        else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("shmem-") {
            if let Ok(id) = id.parse() {
                out.push(Owner::Object(id));
            }
        } else if let Ok(id) = rest.parse() {
            out.push(Owner::Task(id));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The pages file of each pagemap of `dir`; refused if two share one
/// (punching for one would take the other's pages).
fn pages_files(dir: &Path) -> Result<HashMap<PathBuf, Owner>, Error> {
    let mut files = HashMap::new();
    for o in owners_of(dir)? {
        if let Some(m) = read_pagemap(dir, o)? {
            if let Some(other) = files.insert(m.pages.clone(), o) {
                return Err(bad(
                    dir,
                    format!(
                        "{} is the pages file of both {other:?} and {o:?}: not deduplicating",
                        m.pages.display()
                    ),
                ));
            }
        }
    }
    Ok(files)
}

/// Byte ranges to punch, by pages file.
type Plan = BTreeMap<PathBuf, Vec<(u64, u64)>>;

/// Plan the holes for `owner`: its runs in `dir` that are not in the
/// parent, looked up in each parent set in turn.
fn plan_owner(dir: &Path, chain: &mut Chain, owner: Owner, plan: &mut Plan) -> Result<(), Error> {
    let Some(map) = read_pagemap(dir, owner)? else {
        return Ok(());
    };
    let own: Vec<(u64, u64)> = map
        .entries
        .iter()
        .filter(|e| !e.in_parent())
        .map(|e| (e.start, e.end))
        .collect();
    for k in 1.. {
        let Some(level) = chain.level(k)?.map(Path::to_path_buf) else {
            break;
        };
        // As CRIU: the chain of this owner ends where a set has no pagemap
        // of it.
        let Some(pm) = read_pagemap(&level, owner)? else {
            break;
        };
        for e in pm.entries.iter().filter(|e| e.present()) {
            let first = own.partition_point(|&(_, end)| end <= e.start);
            for &(s, end) in own.get(first..).unwrap_or_default() {
                if s >= e.end {
                    break;
                }
                let (a, b) = (s.max(e.start), end.min(e.end));
                let off = e.off + (a - e.start);
                plan.entry(pm.pages.clone()).or_default().push((off, b - a));
            }
        }
    }
    Ok(())
}

/// Punch out of the parent sets of `dir` the pages `dir` supersedes.
/// Nothing to do without a parent. Every set of the chain is checked as at
/// restore first; nothing is punched if a check fails.
pub fn dedup(dir: &Path) -> Result<DedupStats, Error> {
    let mut chain = Chain::new(dir);
    if chain.level(1)?.is_none() {
        return Ok(DedupStats::default());
    }
    let mut plan = Plan::new();
    let mut own_files = Vec::new();
    for (f, _) in pages_files(dir)? {
        if let Ok(m) = std::fs::metadata(&f) {
            own_files.push((m.dev(), m.ino()));
        }
    }
    for k in 1.. {
        let Some(level) = chain.level(k)?.map(Path::to_path_buf) else {
            break;
        };
        pages_files(&level)?;
    }
    for o in owners_of(dir)? {
        plan_owner(dir, &mut chain, o, &mut plan)?;
    }
    let mut stats = DedupStats::default();
    for (file, mut ranges) in plan {
        if super::zpages::is_compressed(&file) {
            // A compressed set's frames hold many pages each: none can be
            // punched out alone. The set stays whole (and restores).
            log::warn!(
                "{}: compressed (--compress), left whole: dedup punches pages out of plain \
                 pages files only",
                file.display()
            );
            continue;
        }
        ranges.sort_unstable();
        let f = open_rw(&file)?;
        let m = f.metadata().map_err(|source| Error::Io {
            op: "cannot look at",
            path: file.clone(),
            source,
        })?;
        if own_files.contains(&(m.dev(), m.ino())) {
            return Err(bad(
                dir,
                format!(
                    "{} is also a pages file of {}: not deduplicating",
                    file.display(),
                    dir.display()
                ),
            ));
        }
        for (off, len) in merge(&ranges) {
            crust_sys::fs::punch_hole(f.as_fd(), off, len).map_err(|source| Error::Io {
                op: "cannot punch a hole in",
                path: file.clone(),
                source,
            })?;
            stats.bytes += len;
        }
        stats.files += 1;
    }
    Ok(stats)
}

/// Sorted (offset, length) ranges, those that touch joined.
fn merge(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in ranges {
        match out.last_mut() {
            Some(last) if last.0 + last.1 >= off => {
                last.1 = last.1.max(off + len - last.0);
            }
            _ => out.push((off, len)),
        }
    }
    out
}

/// Open a parent's pages file to punch holes in it, with the checks of an
/// image file (not a link, a regular file of the caller or root that not
/// anyone can write).
fn open_rw(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| Error::Io {
            op: "cannot open for dedup",
            path: path.to_path_buf(),
            source,
        })?;
    let m = f.metadata().map_err(|source| Error::Io {
        op: "cannot look at",
        path: path.to_path_buf(),
        source,
    })?;
    let euid = crust_sys::private::geteuid();
    if let Some(why) = crust_images::image::file_problem(m.mode(), m.uid(), euid) {
        if !crust_images::image::untrusted_images_allowed() {
            return Err(bad(
                path.parent().unwrap_or(path),
                format!("{} {why}: not deduplicating", path.display()),
            ));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge(&[(0, 4096), (4096, 4096), (12288, 4096)]),
            vec![(0, 8192), (12288, 4096)]
        );
        assert_eq!(merge(&[]), vec![]);
    }
}
