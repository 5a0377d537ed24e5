//! `restore --inherit-fd fd[N]:KEY`: an fd crust got from its caller takes
//! the place, in the restored tree, of every file whose key is KEY.
//!
//! Keys are CRIU's: `pipe:[INO]` for the pipe (or FIFO) whose dumped inode
//! is INO, and for a regular file its path as files.img has it (with or
//! without the leading `/`). Nothing is made for such a file and no data is
//! put back into an inherited pipe: the tasks get crust's own description
//! of fd N (the same open file description, like a dup). This is how a
//! container's stdio pipes, whose other ends live outside the dumped tree,
//! are handed over to the restored tree.

use crate::files::kind::{Made, OpenKind, RestoreKind};
use crate::Error;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use log::{debug, warn};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub use crate::options::InheritFd;

/// The key of a files.img entry, when it can be inherited.
fn matches(f: &FileEntry, key: &str) -> bool {
    match f.r#type {
        fd_types::PIPE | fd_types::FIFO => {
            let pipe_id = match (&f.pipe, &f.fifo) {
                (Some(p), _) if f.r#type == fd_types::PIPE => p.pipe_id,
                (_, Some(p)) if f.r#type == fd_types::FIFO => p.pipe_id,
                _ => return false,
            };
            // The dump keeps the inode in 32 bits, as CRIU does.
            crate::files::pipes::pipe_inode(key).is_some_and(|ino| ino as u32 == pipe_id)
        }
        fd_types::REG => f.reg.as_ref().is_some_and(|r| {
            !key.starts_with("pipe:[")
                && r.name.trim_start_matches('/') == key.trim_start_matches('/')
        }),
        _ => false,
    }
}

/// The files of an image set replaced by inherited fds, by files.img id.
#[derive(Debug, Default)]
pub struct Inherited {
    by_id: HashMap<u32, OwnedFd>,
}

impl Inherited {
    /// Match every `--inherit-fd` against files.img and take a copy of
    /// crust's fd N for each. An fd crust does not have is an error; a key
    /// that matches no file is only a warning (as CRIU). Two options for
    /// one file are an error.
    pub fn resolve(
        loaded: &crate::files::loaded::LoadedFiles,
        wanted: &[InheritFd],
    ) -> Result<Inherited, Error> {
        let mut out = Inherited::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        let files: Vec<FileEntry> = loaded.entries()?.to_vec();
        let me = crust_sys::process::getpid();
        let pidfd = crust_sys::unix::pidfd_open(me).map_err(|source| Error::Sys {
            pid: me,
            op: "pidfd_open of crust itself for --inherit-fd".into(),
            source,
        })?;
        let mut owner: HashMap<u32, i32> = HashMap::new();
        for w in wanted {
            let fd =
                crust_sys::unix::pidfd_getfd(pidfd.as_fd(), w.fd).map_err(|source| Error::Sys {
                    pid: me,
                    op: format!(
                        "--inherit-fd fd[{}]:{}: taking crust's fd {}",
                        w.fd, w.key, w.fd
                    ),
                    source,
                })?;
            let ids: Vec<u32> = files
                .iter()
                .filter(|f| matches(f, &w.key))
                .map(|f| f.id)
                .collect();
            if ids.is_empty() {
                warn!(
                    "--inherit-fd fd[{}]:{}: no file of the image has this key",
                    w.fd, w.key
                );
                continue;
            }
            for id in ids {
                if let Some(other) = owner.insert(id, w.fd) {
                    return Err(Error::Restore {
                        pid: me,
                        what: format!(
                            "file {id} ({}) is given by both --inherit-fd fd[{other}] and fd[{}]",
                            w.key, w.fd
                        ),
                    });
                }
                let copy = fd.try_clone().map_err(|source| Error::Sys {
                    pid: me,
                    op: format!("dup of crust's fd {}", w.fd),
                    source,
                })?;
                debug!("file {id} ({}) is crust's inherited fd {}", w.key, w.fd);
                out.by_id.insert(id, copy);
            }
        }
        Ok(out)
    }

    /// crust's copy of the inherited fd that replaces file `id`.
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.by_id.get(&id).map(|f| f.as_fd())
    }

    pub fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }
}

// ------------------------------------------------------------ kind of file

/// Inherited fds are a kind of file of their own (see
/// [`crate::files::kind`]): resolved before the other kinds are read (they
/// leave out what these replace) and looked up first.
impl RestoreKind for Inherited {
    fn name(&self) -> &'static str {
        "inherited fds"
    }

    /// crust's copies move to the made files.
    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(std::mem::take(self)))
    }
}

impl OpenKind for Inherited {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::proto::regfile::RegFileEntry;

    #[test]
    fn parse() {
        assert_eq!(
            InheritFd::parse("fd[3]:pipe:[1234]").unwrap(),
            InheritFd {
                fd: 3,
                key: "pipe:[1234]".into()
            }
        );
        assert_eq!(InheritFd::parse("fd[10]:tmp/a:b").unwrap().key, "tmp/a:b");
        for bad in [
            "", "3:pipe", "fd[3]", "fd[]:x", "fd[x]:y", "fd[-1]:y", "fd[3]:", "fd3]:x",
        ] {
            assert!(InheritFd::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        let p = crate::files::pipes::pipe_entry(4, 77, 1);
        assert!(matches(&p, "pipe:[77]"));
        assert!(!matches(&p, "pipe:[78]"));
        assert!(!matches(&p, "77"));
        let r = FileEntry {
            r#type: fd_types::REG,
            id: 5,
            reg: Some(Box::new(RegFileEntry {
                name: "/tmp/log".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(matches(&r, "/tmp/log"));
        assert!(matches(&r, "tmp/log"));
        assert!(!matches(&r, "tmp/lo"));
    }
}
