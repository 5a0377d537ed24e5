//! The engine's errors.

use crate::netlock;
use std::path::PathBuf;

/// Errors of the engine. Each variant says what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not supported yet: {what}")]
    Unsupported { what: String },
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: i32 },
    #[error("{pid} is a thread of process {tgid}, not a process: dump -t takes the process id")]
    NotAProcess { pid: i32, tgid: i32 },
    #[error("cannot read /proc of task {pid}")]
    Proc {
        pid: i32,
        #[source]
        source: crust_proc::ProcError,
    },
    #[error("TCP connection repair failed: {what}")]
    Soccr {
        what: String,
        #[source]
        source: Box<crust_soccr::Error>,
    },
    #[error("cannot control task {pid}")]
    Compel {
        pid: i32,
        #[source]
        source: crust_compel::Error,
    },
    #[error("{op} failed for task {pid}")]
    Sys {
        pid: i32,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Image {
        what: String,
        #[source]
        source: crust_images::image::ImageError,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image set {dir}: {why}")]
    BadImage { dir: PathBuf, why: String },
    #[error(
        "pid {pid} is already in use by another process ({comm}); the restored process needs it"
    )]
    PidTaken { pid: i32, comm: String },
    #[error("file {path} has changed since the dump: {why}")]
    FileChanged { path: PathBuf, why: String },
    #[error("file {path} needed by the restore is missing")]
    FileMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "process {pid} has fd {fd} open on the deleted file {path} of {size} bytes, more than the ghost file limit of {limit} bytes (raise it with --ghost-limit)"
    )]
    GhostTooBig {
        pid: i32,
        fd: i32,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("restore of pid {pid}: {what}")]
    Restore { pid: i32, what: String },
    #[error(transparent)]
    NetLock(netlock::NetLockError),
}

impl Error {
    pub(crate) fn unsupported(what: impl Into<String>) -> Error {
        Error::Unsupported { what: what.into() }
    }
}
