use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ProcError, Result};

/// The directory that stands for `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRoot {
    base: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot {
            base: PathBuf::from("/proc"),
        }
    }
}

impl ProcRoot {
    /// A root at `base` (e.g. a fixture directory laid out like /proc).
    pub fn new(base: impl Into<PathBuf>) -> Self {
        ProcRoot { base: base.into() }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `<base>/<pid>/<rel>`.
    pub fn pid_path(&self, pid: i32, rel: &str) -> PathBuf {
        let mut p = self.base.join(pid.to_string());
        if !rel.is_empty() {
            p.push(rel);
        }
        p
    }

    /// `<base>/<pid>/task/<tid>/<rel>`.
    pub fn task_path(&self, pid: i32, tid: i32, rel: &str) -> PathBuf {
        let mut p = self
            .base
            .join(pid.to_string())
            .join("task")
            .join(tid.to_string());
        if !rel.is_empty() {
            p.push(rel);
        }
        p
    }

    pub(crate) fn read_string(path: &Path) -> Result<String> {
        let bytes = Self::read_bytes(path)?;
        String::from_utf8(bytes).map_err(|_| {
            ProcError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            )
        })
    }

    /// The whole file. /proc files say they are empty: instead of the
    /// size `fs::read` asks for (then reads growing from 32 bytes), read
    /// into a page-sized buffer, doubled while it fills (one or two reads
    /// for most files).
    pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
        use std::io::Read;
        let err = |e| ProcError::io(path, e);
        let mut f = fs::File::open(path).map_err(err)?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let Some(room) = buf.get_mut(len..) else {
                break;
            };
            match f.read(room) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    pub(crate) fn read_link(path: &Path) -> Result<PathBuf> {
        fs::read_link(path).map_err(|e| ProcError::io(path, e))
    }

    /// Numeric entries of a directory, sorted.
    pub(crate) fn numeric_dir(path: &Path) -> Result<Vec<i32>> {
        let rd = fs::read_dir(path).map_err(|e| ProcError::io(path, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ProcError::io(path, e))?;
            if let Some(n) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}
