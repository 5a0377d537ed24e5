//! `dump --leave-running` that copies pages while the tree runs (see
//! `mem/snapshot.rs`): the userfaultfd made in each process during its
//! remote-syscall window, the frozen part on the page worker, and the copy
//! once the tree is let go.

use super::images::check_restorable;
use crate::mem::snapshot::{self, Prepared};
use crate::mem::{self, PageCounts};
use crate::task::remote::Remote;
use crate::{Error, Options};
use crust_sys::uffd::Uffd;
use log::{info, warn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Is this dump a snapshot (pages copied while the tree runs)? `-R`,
/// unless `CRUST_SNAPSHOT=0` (for comparisons and debugging).
pub(super) fn wanted(opts: &Options) -> bool {
    opts.leave_running && std::env::var_os("CRUST_SNAPSHOT").is_none_or(|v| v != "0")
}

/// The userfaultfd of the process `r` drives, or None (its pages are then
/// copied while frozen, as without -R): a failure of the task's syscalls
/// only; an error of the remote call itself fails the dump.
pub(super) fn take_uffd(r: &mut Remote<'_>) -> Result<Option<Uffd>, Error> {
    match snapshot::take_uffd(r) {
        Ok(u) => Ok(Some(u)),
        Err(e @ Error::Compel { .. }) => Err(e),
        Err(e) => {
            warn!(
                "{}: no userfaultfd for a snapshot ({e}): its pages are copied while the tree is frozen",
                r.pid()
            );
            Ok(None)
        }
    }
}

/// The frozen part of a process's snapshot; on error its pages are copied
/// at once, as without -R (nothing was written for it yet).
pub(super) fn prepare_or_copy<'a>(
    job: (i32, u64, &[mem::Vma], u32),
    sink: &dyn mem::PageSink,
    parent: impl Fn() -> Option<mem::CowParent<'a>>,
    uffd: Uffd,
    deferred: &mut Vec<Prepared>,
) -> Result<PageCounts, Error> {
    let (pid, id, vmas, pages_id) = job;
    match snapshot::prepare(pid, id, sink, vmas, pages_id, parent(), uffd) {
        Ok(Some(p)) => {
            let counts = PageCounts {
                written: 0,
                ..p.counts()
            };
            deferred.push(p);
            Ok(counts)
        }
        Ok(None) => mem::dump_pages(pid, id, sink, vmas, pages_id, parent()),
        Err(e) => {
            warn!("{pid}: no snapshot ({e}): its pages are copied while the tree is frozen");
            mem::dump_pages(pid, id, sink, vmas, pages_id, parent())
        }
    }
}

/// Copy the pages of `deferred` while the tree runs, then check the set.
/// Returns the pages written.
pub(super) fn copy(opts: &Options, deferred: Vec<Prepared>) -> Result<u64, Error> {
    if deferred.is_empty() {
        return Ok(0);
    }
    let t = Instant::now();
    let dir = opts.images_dir.as_path();
    let sink = mem::LocalImages::compressed(dir, opts.compress);
    let stop = AtomicBool::new(false);
    let snaps: Vec<&snapshot::Snap> = deferred.iter().map(|p| p.snap()).collect();
    let copied = std::thread::scope(|sc| {
        sc.spawn(|| snapshot::serve(&snaps, &stop));
        let r = deferred.iter().try_for_each(|p| {
            crate::util::check_stop()?;
            p.copy(&sink).map(|_| ())
        });
        stop.store(true, Ordering::Release);
        r
    });
    // Every protection goes with its descriptor.
    drop(deferred);
    if let Err(e) = copied {
        warn!("Snapshot copy failed; the tree runs on");
        return Err(e);
    }
    let tally = mem::take_page_tally(dir);
    info!(
        "{} pages copied while the tree ran, in {} us",
        tally.pages_written,
        crate::util::us_since(t)
    );
    check_restorable(opts)?;
    Ok(tally.pages_written)
}
