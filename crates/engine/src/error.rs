//! The engine's errors, their kinds, and what CRIU reports for each.
//!
//! [`Error`] says what failed and on what. [`Error::kind`] sorts it into an
//! [`ErrorKind`], the class a caller acts on: the command line turns it into
//! CRIU's exit code, the RPC service into the response's `cr_errno`. At the
//! API boundary the error says which operation failed: [`DumpError`] from
//! [`crate::dump`], [`RestoreError`] from [`crate::restore`], and
//! [`ImageSetError`] for an images directory that cannot be used at all.
//!
//! What CRIU 4.2 reports (facts read from its source):
//! - The `criu` binary exits with 1 when `dump`, `restore` or `check` fail
//!   (its main returns `ret != 0`; the dump's final step returns the same),
//!   and with 1 on a bad command line. It never encodes the error class in
//!   the exit code; a restore without `-d` exits as the restored root does.
//! - The RPC response (`criu_resp`) carries `cr_errno` only when CRIU set
//!   one (`has_cr_errno` is false otherwise), next to `cr_errmsg`, the first
//!   error logged. CRIU sets only a few: `ESRCH` when the tree's root can't
//!   be seized (no such process), `EEXIST` when a restored task can't get
//!   its pid (taken by another process), `EBADRQC` when the request's
//!   options are invalid; and `ENOTSUP` from a `cpuinfo` request.

use crate::netlock;
use std::io;
use std::path::PathBuf;

/// Errors of the engine. Each variant says what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stopped by signal {signal} before it was done: every task was released as it was")]
    Stopped { signal: i32 },
    #[error("not supported yet: {what}")]
    Unsupported { what: String },
    /// crust itself failed (a panic, caught): a bug to report.
    #[error("crust bug: {what}; every task was released as it was (please report this, with the log of -v4 -o FILE)")]
    Panicked { what: String },
    /// A tree crust will not touch (a kernel thread, the machine's init,
    /// crust itself, a task someone else traces): `what` says why and what
    /// to do instead.
    #[error("{what}")]
    Refused { what: String, kind: ErrorKind },
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
    /// A front end's hook at one of CRIU's action moments (an RPC notify
    /// the client answered with failure, or could not answer) said no.
    #[error("the {action} action failed: {why}")]
    Action { action: &'static str, why: String },
    /// The images a dump wrote fail the checks a restore makes: the dump
    /// fails and the tree runs on.
    #[error("the images just written to {} would not restore, so the tree was left running (a bug in crust's dump: please report it with the log)", dir.display())]
    Unrestorable {
        dir: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The connection to or from a page server (crates/engine/src/pageserver).
    #[error("page server {peer}: {what}")]
    PageServer {
        peer: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    NetLock(netlock::NetLockError),
    /// A cgroup property that could not be parsed, read or written.
    #[error(transparent)]
    CgroupProps(Box<crate::cgroup::props::PropsError>),
}

impl Error {
    pub(crate) fn unsupported(what: impl Into<String>) -> Error {
        Error::Unsupported { what: what.into() }
    }

    pub(crate) fn refused(kind: ErrorKind, what: impl Into<String>) -> Error {
        Error::Refused {
            what: what.into(),
            kind,
        }
    }

    /// The class of this error, for the exit code and the RPC `cr_errno`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Stopped { .. } => ErrorKind::Interrupted,
            Error::Panicked { .. } => ErrorKind::Internal,
            Error::Refused { kind, .. } => *kind,
            Error::NoSuchProcess { .. } => ErrorKind::NoSuchProcess,
            Error::NotAProcess { .. } => ErrorKind::InvalidRequest,
            Error::Proc { source, .. } => proc_kind(source),
            Error::Soccr { .. } | Error::NetLock(_) | Error::PageServer { .. } => {
                ErrorKind::Network
            }
            Error::Compel { source, .. } => compel_kind(source),
            Error::Sys { source, .. } | Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Image { source, .. } => image_kind(source),
            Error::BadImage { .. } => ErrorKind::BadImage,
            Error::PidTaken { .. } => ErrorKind::PidTaken,
            Error::FileChanged { .. } => ErrorKind::FileChanged,
            Error::FileMissing { .. } => ErrorKind::FileMissing,
            Error::GhostTooBig { .. } => ErrorKind::Limit,
            Error::Restore { .. } | Error::Action { .. } => ErrorKind::Other,
            Error::Unrestorable { .. } => ErrorKind::Internal,
            Error::CgroupProps(e) => e.kind(),
        }
    }
}

fn proc_kind(e: &crust_proc::ProcError) -> ErrorKind {
    if e.is_not_found() {
        // /proc/PID gone: the task ended.
        return ErrorKind::NoSuchProcess;
    }
    match e.io_error() {
        Some(io) => ErrorKind::of_io(io),
        // A /proc file crust can't parse: crust's bug or a new kernel.
        None => ErrorKind::Internal,
    }
}

fn compel_kind(e: &crust_compel::Error) -> ErrorKind {
    use crust_compel::Error as C;
    match e {
        C::Seize { source, .. } | C::Ptrace { source, .. } | C::Syscall { source, .. } => {
            ErrorKind::of_io(source)
        }
        C::Exited { .. } => ErrorKind::NoSuchProcess,
        C::Timeout { .. } => ErrorKind::Interrupted,
        C::UnexpectedStop { .. } | C::NotInfected { .. } => ErrorKind::Internal,
    }
}

fn image_kind(e: &crust_images::image::ImageError) -> ErrorKind {
    use crust_images::image::ImageError as I;
    match e {
        // Reading or writing failed: the images are not to blame.
        I::Io { source, .. } => ErrorKind::of_io(source),
        // Missing, bad magic, truncated, undecodable: a bad image set.
        _ => ErrorKind::BadImage,
    }
}

/// The class of an error: what a caller can tell apart and act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The process (or one of the tree) does not exist or ended meanwhile.
    NoSuchProcess,
    /// The request itself is wrong (a thread id for `-t`, bad options).
    InvalidRequest,
    /// The kernel refused: not enough privilege (EPERM, EACCES).
    Permission,
    /// Something crust can't do yet, or the kernel lacks.
    Unsupported,
    /// The image set is invalid: missing, truncated or inconsistent images.
    BadImage,
    /// A pid the restored tree needs is used by another process.
    PidTaken,
    /// A resource the operation needs is in use (a port, a lock: EBUSY,
    /// EADDRINUSE).
    Busy,
    /// A file changed since the dump (size, inode...).
    FileChanged,
    /// A file (or images directory) the operation needs does not exist.
    FileMissing,
    /// A limit was exceeded (`--ghost-limit`).
    Limit,
    /// TCP repair or the network lock failed.
    Network,
    /// Reading or writing failed (disk full, I/O error...).
    Io,
    /// A timeout or a signal cut the operation short.
    Interrupted,
    /// crust met a state it does not expect: a bug to report.
    Internal,
    /// A failure with no finer class.
    Other,
}

/// The exit code of CRIU's binary when a command fails: always 1, whatever
/// the error (its main returns `ret != 0`).
pub const CRIU_FAILURE_EXIT: i32 = 1;

impl ErrorKind {
    /// The class of an `errno`-carrying I/O error.
    pub fn of_io(e: &io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(libc::ESRCH) => ErrorKind::NoSuchProcess,
            Some(libc::EPERM | libc::EACCES) => ErrorKind::Permission,
            Some(libc::EBUSY | libc::EADDRINUSE) => ErrorKind::Busy,
            Some(libc::EINTR | libc::ETIMEDOUT) => ErrorKind::Interrupted,
            Some(libc::ENOSYS | libc::EOPNOTSUPP) => ErrorKind::Unsupported,
            Some(libc::ENOENT) => ErrorKind::FileMissing,
            _ => ErrorKind::Io,
        }
    }

    /// The exit code `criu` gives for this failure: 1 for every class (CRIU
    /// does not encode the class in its exit code).
    pub fn exit_code(self) -> i32 {
        CRIU_FAILURE_EXIT
    }

    /// The `cr_errno` CRIU's RPC response carries for this class, `None`
    /// where CRIU leaves it unset (`has_cr_errno` false; the message alone,
    /// `cr_errmsg`, says what failed).
    pub fn cr_errno(self) -> Option<i32> {
        match self {
            // seize.c: the root of the tree can't be interrupted.
            ErrorKind::NoSuchProcess => Some(libc::ESRCH),
            // cr-restore.c: a task could not be created with its pid.
            ErrorKind::PidTaken => Some(libc::EEXIST),
            // cr-service.c: the request's options are invalid.
            ErrorKind::InvalidRequest => Some(libc::EBADRQC),
            _ => None,
        }
    }
}

/// A dump failed: which tree, and why.
#[derive(Debug, thiserror::Error)]
#[error("dump of tree {pid} failed")]
pub struct DumpError {
    /// The root of the tree (`-t`).
    pub pid: i32,
    #[source]
    pub source: Box<Error>,
}

impl DumpError {
    pub fn kind(&self) -> ErrorKind {
        self.source.kind()
    }
}

/// A restore failed: from which images, and why.
#[derive(Debug, thiserror::Error)]
#[error("restore failed")]
pub struct RestoreError {
    /// The images directory (`-D`).
    pub dir: PathBuf,
    #[source]
    pub source: Box<Error>,
}

impl RestoreError {
    pub fn kind(&self) -> ErrorKind {
        self.source.kind()
    }
}

/// The images directory can't be used at all (checked before a dump or a
/// restore starts).
#[derive(Debug, thiserror::Error)]
pub enum ImageSetError {
    #[error("images directory {} does not exist or is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
}

impl ImageSetError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageSetError::NotADirectory { .. } => ErrorKind::FileMissing,
        }
    }
}

/// Check that `dir` can hold (or holds) an image set.
pub fn check_images_dir(dir: &std::path::Path) -> Result<(), ImageSetError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(ImageSetError::NotADirectory {
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn kinds_and_what_criu_reports() {
        let gone = DumpError {
            pid: 7,
            source: Box::new(Error::NoSuchProcess { pid: 7 }),
        };
        assert_eq!(gone.kind(), ErrorKind::NoSuchProcess);
        assert_eq!(gone.kind().cr_errno(), Some(libc::ESRCH));
        assert_eq!(gone.kind().exit_code(), 1);
        assert_eq!(gone.to_string(), "dump of tree 7 failed");

        let taken = RestoreError {
            dir: PathBuf::from("/img"),
            source: Box::new(Error::PidTaken {
                pid: 9,
                comm: "sh".into(),
            }),
        };
        assert_eq!(taken.kind().cr_errno(), Some(libc::EEXIST));
        assert_eq!(taken.to_string(), "restore failed");

        assert_eq!(Error::unsupported("x").kind(), ErrorKind::Unsupported);
        assert_eq!(ErrorKind::Unsupported.cr_errno(), None);
        assert_eq!(
            Error::NotAProcess { pid: 2, tgid: 1 }.kind().cr_errno(),
            Some(libc::EBADRQC)
        );
        let sys = |e| Error::Sys {
            pid: 1,
            op: "x".into(),
            source: os(e),
        };
        assert_eq!(sys(libc::EPERM).kind(), ErrorKind::Permission);
        assert_eq!(sys(libc::ESRCH).kind(), ErrorKind::NoSuchProcess);
        assert_eq!(sys(libc::EADDRINUSE).kind(), ErrorKind::Busy);
        assert_eq!(sys(libc::ENOSPC).kind(), ErrorKind::Io);
        let seize = Error::Compel {
            pid: 1,
            source: crust_compel::Error::Seize {
                pid: 1,
                source: os(libc::EPERM),
            },
        };
        assert_eq!(seize.kind(), ErrorKind::Permission);
    }

    #[test]
    fn images_dir_must_be_a_directory() {
        let e = check_images_dir(std::path::Path::new("/nonexistent/crust-img")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FileMissing);
        assert_eq!(
            e.to_string(),
            "images directory /nonexistent/crust-img does not exist or is not a directory"
        );
        assert!(check_images_dir(std::path::Path::new("/")).is_ok());
    }
}
