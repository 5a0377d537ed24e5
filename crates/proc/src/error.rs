use std::io;
use std::path::PathBuf;

/// Errors of the /proc parsers. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Opening, reading or listing a file or directory failed.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line of the file did not have the expected shape.
    #[error("cannot parse {path} line {line}: {reason}: {text:?}")]
    Parse {
        path: PathBuf,
        /// 1-based line number (0 when the problem is not tied to one line).
        line: usize,
        text: String,
        reason: String,
    },
    /// A field the parser requires is absent from the file.
    #[error("{path} has no {field:?} field")]
    Missing { path: PathBuf, field: &'static str },
}

impl ProcError {
    /// True when the error comes from a file or directory that does not exist
    /// (typically: the process or thread is gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ProcError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            ProcError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ProcError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(
        path: impl Into<PathBuf>,
        line: usize,
        text: &str,
        reason: impl Into<String>,
    ) -> Self {
        ProcError::Parse {
            path: path.into(),
            line,
            text: text.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ProcError>;
