//! Where crust reaches a cgroup hierarchy: a mount of it crust makes
//! detached (fsopen/fsmount: seen by no one, gone when its fd closes), or
//! the directory of a `--cgroup-yard` with it mounted there (CRIU's names:
//! `cpu,cpuacct`, `systemd` for `name=systemd`, `unified` for v2).

use crate::error::Error;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An open hierarchy: `base` is a path to its root crust can use.
pub(crate) struct Hierarchy {
    /// Holds the mount (or the yard's directory) open.
    _fd: OwnedFd,
    base: PathBuf,
}

impl Hierarchy {
    /// The hierarchy `name` (a `/proc/PID/cgroup` name, or a controller
    /// entry's names joined by commas): in `yard` when given, else
    /// mounted detached.
    pub(crate) fn open(name: &str, yard: Option<&Path>) -> Result<Hierarchy, Error> {
        let fd = match yard {
            Some(y) => {
                let dir = y.join(super::tree::yard_name(name));
                open_dir(&dir)?
            }
            None => mount_detached(name)?,
        };
        let base = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(Hierarchy { _fd: fd, base })
    }

    /// A path to the cgroup at `rel` (checked relative path; empty: the
    /// root).
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.base.clone()
        } else {
            self.base.join(rel)
        }
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|source| Error::Io {
            op: "cannot open the cgroup yard's directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// A new mount of the hierarchy `name`, detached.
fn mount_detached(name: &str) -> Result<OwnedFd, Error> {
    let bad = |source| Error::Io {
        op: "cannot mount the cgroup hierarchy",
        path: PathBuf::from(if name.is_empty() { "cgroup2" } else { name }),
        source,
    };
    let cstr =
        |s: &str| CString::new(s).map_err(|_| bad(std::io::Error::from_raw_os_error(libc::EINVAL)));
    if name.is_empty() {
        return crust_sys::fsmount::new_detached(c"cgroup2", c"none", &[]).map_err(bad);
    }
    let mut keys: Vec<(CString, Option<CString>)> = Vec::new();
    for w in name.split(',') {
        match w.strip_prefix("name=") {
            Some(n) => keys.push((cstr("name")?, Some(cstr(n)?))),
            None => keys.push((cstr(w)?, None)),
        }
    }
    // A named hierarchy of no controller: the kernel wants `none` said.
    if name.split(',').all(|w| w.starts_with("name=")) {
        keys.push((cstr("none")?, None));
    }
    let opts: Vec<(&std::ffi::CStr, Option<&std::ffi::CStr>)> = keys
        .iter()
        .map(|(k, v)| (k.as_c_str(), v.as_deref()))
        .collect();
    crust_sys::fsmount::new_detached(c"cgroup", c"none", &opts).map_err(bad)
}
