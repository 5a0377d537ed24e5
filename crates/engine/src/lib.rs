//! crust-engine: checkpoint (dump) and restore of process trees.
//!
//! A front end (the `crust` command line today, the RPC service next) fills
//! one [`Options`] and calls [`dump`] / [`restore`]. Their errors,
//! [`DumpError`] / [`RestoreError`] (and [`ImageSetError`] for the images
//! directory itself), have an [`ErrorKind`] that maps to what CRIU reports:
//! its exit code and the RPC response's `cr_errno`.

/// What a successful dump measured (also written to `stats-dump`).
#[derive(Debug, Clone, Default)]
pub struct DumpStats {
    pub freezing_time_us: u64,
    pub frozen_time_us: u64,
    pub memdump_time_us: u64,
    pub memwrite_time_us: u64,
    /// Pages of the processes' private memory looked at, and written to
    /// the pages files (CRIU's meaning: `pages_written + shpages_written`
    /// pages make the pages-*.img files).
    pub pages_scanned: u64,
    pub pages_written: u64,
    /// Pages left to a parent images directory (incremental dumps, which
    /// crust does not make yet: 0).
    pub pages_skipped_parent: u64,
    /// Pages of shared memory objects (shared anonymous memory, memfds,
    /// System V segments) looked at, and written.
    pub shpages_scanned: u64,
    pub shpages_written: u64,
    /// Pages left on the source for a lazy restore (`dump --lazy-pages`).
    pub pages_lazy: u64,
}

/// What a successful restore produced.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// PID of the restored root task (a child of the calling process).
    pub root_pid: i32,
    pub restore_time_us: u64,
    pub pages_restored: u64,
    /// Without `--restore-detached`, when the root is not the caller's
    /// child but a child of this process (a crust process that stays to
    /// hand over queued connections): it ends with the root's status.
    pub waiter: Option<i32>,
}

mod cgroup;
pub mod coredump;
pub mod cpuinfo;
mod dump;
mod error;
mod files;
mod lazy;
mod mem;
mod net;
mod ns;
mod options;
pub mod pageserver;
mod registry;
mod restore;
mod task;
mod util;

pub use lazy::daemon::DaemonStats as LazyPagesStats;
pub use net::netlock;
pub use task::xsave;
pub use util::progress;

pub use error::{
    check_images_dir, DumpError, Error, ErrorKind, ImageSetError, RestoreError, CRIU_FAILURE_EXIT,
};
pub use options::{
    Action, ActionHook, Compress, Hooks, InheritFd, NetworkLock, Options, TlsOptions,
};

pub use mem::dedup::DedupStats;

/// Punch out of the parent image sets of `dir` (its `parent` link, and
/// theirs) the pages `dir` supersedes: `crust dedup`, `--auto-dedup`.
pub fn dedup(dir: &std::path::Path) -> Result<DedupStats, Error> {
    mem::dedup::dedup(dir)
}

/// Dump the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &Options) -> Result<DumpStats, DumpError> {
    dump::dump(opts).map_err(|source| DumpError {
        pid: opts.pid,
        source: Box::new(source),
    })
}

/// The lazy-pages daemon (`crust lazy-pages`): serve the pages of a tree
/// that `restore --lazy-pages` restores from `opts.images_dir`, listening
/// on `lazy-pages.socket` in `opts.work_dir()`; `ready` is called once it
/// listens. Returns when every page is in or every process is gone.
pub fn lazy_pages(opts: &Options, ready: &mut dyn FnMut()) -> Result<LazyPagesStats, Error> {
    lazy::daemon::serve(opts, ready)
}

/// Pre-dump the tree rooted at `opts.pid` (its memory, the tree left
/// running, the write tracking kept for the next run of the chain).
pub fn pre_dump(opts: &Options) -> Result<DumpStats, DumpError> {
    dump::pre_dump(opts).map_err(|source| DumpError {
        pid: opts.pid,
        source: Box::new(source),
    })
}

/// `crust __keeper`: the process that keeps a chain's write tracking
/// between runs (see `mem/keeper.rs`). Returns its exit code.
pub fn tracking_keeper() -> i32 {
    mem::keeper::keeper_main()
}

/// `crust track-release DIR`: the keeper of image set `dir` drops the
/// tracking it holds and exits.
pub fn release_tracking(dir: &std::path::Path) -> Result<(), String> {
    mem::keeper::release(dir)
}

pub use restore::VerifyReport;

/// `crust image verify`: every check a restore of `opts.images_dir` makes
/// before it creates a task (the images, and this host's pids, caller and
/// address space), without restoring; the report lists what was checked.
pub fn verify(opts: &Options) -> Result<VerifyReport, RestoreError> {
    restore::verify(opts).map_err(|source| RestoreError {
        dir: opts.images_dir.clone(),
        source: Box::new(source),
    })
}

/// Restore the tree whose images are in `opts.images_dir`.
pub fn restore(opts: &Options) -> Result<RestoreOutcome, RestoreError> {
    restore::restore(opts).map_err(|source| RestoreError {
        dir: opts.images_dir.clone(),
        source: Box::new(source),
    })
}
