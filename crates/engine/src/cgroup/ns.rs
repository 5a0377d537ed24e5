//! The cgroup namespace of a dumped task: CRIU's `cgns_prefix`.
//!
//! /proc/PID/cgroup shows a task's cgroups relative to the root of the
//! reader's cgroup namespace. crust, in the first namespace, sees the whole
//! path (`/foo/bar`); the task, in a namespace made at `/foo`, sees `/bar`.
//! CRIU records the length of the namespace's root in each
//! `CgMemberEntry.cgns_prefix` (`/foo`: 4), only where the two views differ.
//! At restore the task enters the root (`/foo`), unshares its cgroup
//! namespace there, then enters the rest ([`split_at_prefix`]).
//!
//! crust reads the task's own view from a thread of its own that joins the
//! task's cgroup namespace ([`inside_view`]): no code runs in the task.

use crate::error::{Error, ErrorKind};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// One line of /proc/PID/cgroup: the hierarchy's controllers as the kernel
/// names them ("cpu,cpuacct", "name=systemd", "" for v2) and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgLine {
    pub name: String,
    pub path: String,
}

/// The lines of a /proc/PID/cgroup text ("ID:CONTROLLERS:PATH").
pub fn parse_lines(text: &str) -> Vec<CgLine> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, name, path) = (f.next()?, f.next()?, f.next()?);
            Some(CgLine {
                name: name.to_string(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// CRIU's cgns prefix of a task whose cgroup is `external` to crust and
/// `internal` to itself: the length of the namespace's root in `external`,
/// or None when the views are the same (no namespace of its own there).
pub fn cgns_prefix(external: &str, internal: &str) -> Result<Option<u32>, Error> {
    if external == internal {
        return Ok(None);
    }
    let bad = || {
        Error::refused(
            ErrorKind::Unsupported,
            format!(
                "invalid cgroup configuration: the task's own cgroup path {internal} is not the end \
                 of {external}, its path from crust's cgroup namespace"
            ),
        )
    };
    let tail = internal.strip_prefix('/').ok_or_else(bad)?;
    let pos = external.len().checked_sub(tail.len()).ok_or_else(bad)?;
    if !external.ends_with(tail) {
        return Err(bad());
    }
    // The root ends where the tail starts, without the '/' between them
    // (a task at its namespace's root: the whole path).
    let root = external.get(..pos).ok_or_else(bad)?;
    let root = if tail.is_empty() {
        root
    } else {
        root.strip_suffix('/').ok_or_else(bad)?
    };
    u32::try_from(root.len()).map(Some).map_err(|_| bad())
}

/// A member's path cut at its prefix: the namespace's root (entered before
/// the unshare) and the rest, or None without a prefix (or a bad one).
pub fn split_at_prefix(path: &str, prefix: Option<u32>) -> Option<(&str, &str)> {
    let p = usize::try_from(prefix?).ok().filter(|&p| p > 0)?;
    let root = path.get(..p)?;
    let rest = path.get(p..)?;
    (rest.is_empty() || rest.starts_with('/')).then_some((root, rest))
}

/// Whether task `pid` is in another cgroup namespace than crust.
pub fn own_namespace(pid: i32) -> Result<bool, Error> {
    let ino = |p: PathBuf| {
        std::fs::metadata(&p)
            .map(|m| m.ino())
            .map_err(|source| Error::Io {
                op: "cannot look at the cgroup namespace",
                path: p,
                source,
            })
    };
    Ok(ino(PathBuf::from(format!("/proc/{pid}/ns/cgroup")))?
        != ino(PathBuf::from("/proc/self/ns/cgroup"))?)
}

/// /proc/PID/cgroup as task `pid` sees it: read by a thread of crust's
/// that joins the task's cgroup namespace (only that thread moves).
pub fn inside_view(pid: i32) -> Result<String, Error> {
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/cgroup"));
    let ns = File::open(&ns_path).map_err(|source| Error::Io {
        op: "cannot open the cgroup namespace of",
        path: ns_path.clone(),
        source,
    })?;
    let cg_path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let reader = {
        let cg_path = cg_path.clone();
        std::thread::spawn(move || {
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWCGROUP)
                .map_err(|e| ("cannot join the cgroup namespace of", e))?;
            std::fs::read_to_string(&cg_path).map_err(|e| ("cannot read", e))
        })
    };
    match reader.join() {
        Ok(Ok(text)) => Ok(text),
        Ok(Err((op, source))) => Err(Error::Io {
            op,
            path: if op == "cannot read" {
                cg_path
            } else {
                ns_path
            },
            source,
        }),
        Err(_) => Err(Error::Panicked {
            what: format!("the thread reading the cgroups of task {pid} from its namespace"),
        }),
    }
}

/// The cgns prefix of each hierarchy of task `pid` (by its controllers'
/// name) where the task's view differs from crust's; empty when the task
/// shares crust's cgroup namespace.
pub fn prefixes(pid: i32) -> Result<Vec<(String, u32)>, Error> {
    if !own_namespace(pid)? {
        return Ok(Vec::new());
    }
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let outside = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        op: "cannot read",
        path,
        source,
    })?;
    let inside = parse_lines(&inside_view(pid)?);
    let mut out = Vec::new();
    for ext in parse_lines(&outside) {
        let Some(int) = inside.iter().find(|i| i.name == ext.name) else {
            continue;
        };
        if let Some(p) = cgns_prefix(&ext.path, &int.path)? {
            out.push((ext.name, p));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "ns_tests.rs"]
mod tests;
