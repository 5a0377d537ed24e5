//! Which stored pages a lazy restore leaves to the daemon, when the
//! images say: CRIU marks the pages of lazy memory `PE_LAZY` (crust's
//! dumps too) and keeps a few plain (the page each thread's stack pointer
//! is in; crust also the rseq areas'). Plain ones are filled by the
//! restore at once, as CRIU's restore fills them, and CRIU's daemon
//! serves only marked ones. A pagemap without any mark (sets of older
//! crusts) goes by the VMAs alone.

use super::iovs::{merge, subtract};
use crate::mem::chain::{read_pagemap, Owner};
use crate::Error;
use crust_images::consts::pe;
use std::ops::Range;
use std::path::Path;

/// The runs of process `pid`'s pagemap in `dir` that hold pages (stored,
/// or in the parent set) and are not marked `PE_LAZY`, when the pagemap
/// marks any; else none.
pub fn unmarked(dir: &Path, pid: i32) -> Result<Vec<Range<u64>>, Error> {
    let Some(pm) = read_pagemap(dir, Owner::Task(pid as u64))? else {
        return Ok(Vec::new());
    };
    if !pm.entries.iter().any(|e| e.flags & pe::LAZY != 0) {
        return Ok(Vec::new());
    }
    Ok(pm
        .entries
        .iter()
        .filter(|e| e.flags & pe::LAZY == 0 && e.flags & (pe::PRESENT | pe::PARENT) != 0)
        .map(|e| e.start..e.end)
        .collect())
}

/// The runs of process `pid`'s pagemap in `dir` whose pages were left on
/// the source (`PE_LAZY` only).
pub fn left_on_source(dir: &Path, pid: i32) -> Result<Vec<Range<u64>>, Error> {
    let Some(pm) = read_pagemap(dir, Owner::Task(pid as u64))? else {
        return Ok(Vec::new());
    };
    Ok(pm
        .entries
        .iter()
        .filter(|e| e.flags & pe::LAZY != 0 && e.flags & (pe::PRESENT | pe::PARENT) == 0)
        .map(|e| e.start..e.end)
        .collect())
}

/// What a lazy restore of process `pid` fills at once besides `eager`
/// (memory it must fill now: VMAs kept from the parent, rseq pages): the
/// pages the images keep plain ([`unmarked`]). Pages left on the source
/// (`PE_LAZY` only) inside `eager` cannot be had: refused.
pub fn eager_too(dir: &Path, pid: i32, eager: &[Range<u64>]) -> Result<Vec<Range<u64>>, Error> {
    let left = merge(left_on_source(dir, pid)?);
    let bytes = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
    if bytes(&subtract(left.clone(), &merge(eager.to_vec()))) != bytes(&left) {
        return Err(Error::unsupported(format!(
            "a lazy restore of process {pid} whose pages left on the source (dump --lazy-pages) \
             lie in memory the restore must fill at once (kept from its parent, or its rseq area)"
        )));
    }
    unmarked(dir, pid)
}
