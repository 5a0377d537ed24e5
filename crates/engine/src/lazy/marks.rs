//! Which stored pages a lazy restore leaves to the daemon, when the
//! images say: CRIU marks the pages of lazy memory `PE_LAZY` (crust's
//! dumps too) and keeps a few plain (the page each thread's stack pointer
//! is in; crust also the rseq areas'). Plain ones are filled by the
//! restore at once, as CRIU's restore fills them, and CRIU's daemon
//! serves only marked ones. A pagemap without any mark (sets of older
//! crusts) goes by the VMAs alone.

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
