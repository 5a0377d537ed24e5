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
        fs::read_to_string(path).map_err(|e| ProcError::io(path, e))
    }

    pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
        fs::read(path).map_err(|e| ProcError::io(path, e))
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
