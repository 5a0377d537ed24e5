//! crust-engine: checkpoint (dump) and restore of process trees.
//!
//! The binary (`crust`) parses the command line into [`DumpOptions`] /
//! [`RestoreOptions`] and calls [`dump`] / [`restore`].

use std::path::PathBuf;
use std::time::Duration;

/// Options of `crust dump` (and later `pre-dump`), named after CRIU's.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// `-t/--tree PID`: root of the tree to dump.
    pub pid: i32,
    /// `-D/--images-dir DIR`.
    pub images_dir: PathBuf,
    /// `-R/--leave-running`.
    pub leave_running: bool,
    /// `-s/--leave-stopped`.
    pub leave_stopped: bool,
    /// `-j/--shell-job`.
    pub shell_job: bool,
    /// `--timeout N`: give up seizing/freezing after this long.
    pub timeout: Option<Duration>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--ghost-limit SIZE` in bytes.
    pub ghost_limit: Option<u64>,
    /// `--link-remap`.
    pub link_remap: bool,
}

/// Options of `crust restore`, named after CRIU's.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// `-D/--images-dir DIR`.
    pub images_dir: PathBuf,
    /// `-d/--restore-detached`.
    pub detached: bool,
    /// `-s/--leave-stopped`.
    pub leave_stopped: bool,
    /// `-j/--shell-job`.
    pub shell_job: bool,
    /// `--restore-sibling`.
    pub restore_sibling: bool,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--file-locks`.
    pub file_locks: bool,
}

/// What a successful dump measured (also written to `stats-dump`).
#[derive(Debug, Clone, Default)]
pub struct DumpStats {
    pub freezing_time_us: u64,
    pub frozen_time_us: u64,
    pub memdump_time_us: u64,
    pub memwrite_time_us: u64,
    pub pages_scanned: u64,
    pub pages_written: u64,
    pub pages_skipped_parent: u64,
}

/// What a successful restore produced.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// PID of the restored root task (a child of the calling process).
    pub root_pid: i32,
    pub restore_time_us: u64,
    pub pages_restored: u64,
}

/// Errors of the engine. Each variant says what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not supported yet: {what}")]
    Unsupported { what: String },
}

/// Dump the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpStats, Error> {
    let _ = opts;
    Err(Error::Unsupported { what: "dump".into() })
}

/// Restore the tree stored in `opts.images_dir`.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreOutcome, Error> {
    let _ = opts;
    Err(Error::Unsupported { what: "restore".into() })
}
