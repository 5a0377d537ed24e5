//! crust's OWN extension, not a CRIU 4.2 message: the ranges of a
//! process's private anonymous memory that transparent huge pages backed
//! at dump (PMD-mapped, `PAGEMAP_SCAN`'s `PAGE_IS_HUGE`). They live in
//! `crust-thp-N.img` (N: the process's pid, as in `mm-N.img`), a file CRIU
//! never opens: CRIU 4.2 restoring crust's images restores that memory as
//! 4 KiB pages (as it restores its own); crust restoring CRIU's images
//! finds no such file and fills every page as 4 KiB pages, as before.

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// One range [start, end) of huge pages, aligned to the huge page
    /// size (crust's extension).
    CrustThpEntry = "crust_thp_entry" {
        1 start: required Uint64,
        2 end: required Uint64,
    }
}
