//! The fd table of a process at restore: its fdinfo-N.img checked
//! against files.img, the files it needs checked on disk, and its fds
//! opened in the task (regular files by path, every other kind handed
//! over from what the kinds made, see [`crate::files::kind`]).

use super::*;
use crate::files::kind::OpenFiles;
use crate::files::loaded::LoadedFiles;

/// The MEMFD entries of files.img (read already) joined with their
/// memfd.img inodes, by files.img id. Empty when the image set has no
/// memfd.
pub fn memfds_of(dir: &Path, loaded: &LoadedFiles) -> Result<HashMap<u32, MemfdInodeEntry>, Error> {
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    };
    let mut by_file: Vec<(u32, u32)> = Vec::new(); // (file id, inode_id)
    for f in loaded.entries()? {
        if f.r#type != fd_types::MEMFD {
            continue;
        }
        let m = f
            .memfd
            .as_ref()
            .ok_or_else(|| bad(format!("files.img: MEMFD entry {} has no memfd part", f.id)))?;
        by_file.push((f.id, m.inode_id));
    }
    if by_file.is_empty() {
        return Ok(HashMap::new());
    }
    let inodes: Vec<MemfdInodeEntry> = read_image(dir, ImageType::MemfdInode, 0)?;
    let mut out = HashMap::new();
    for (id, inode_id) in by_file {
        let ino = inodes
            .iter()
            .find(|i| i.inode_id == inode_id as u64)
            .ok_or_else(|| {
                bad(format!(
                    "files.img: memfd file {id} refers to inode {inode_id}, which memfd.img does not have"
                ))
            })?;
        out.insert(id, ino.clone());
    }
    Ok(out)
}

/// Files of an image set, by id.
pub struct RestoreFiles {
    /// Every REG entry of files.img, shared by every process's table.
    pub regs: std::sync::Arc<HashMap<u32, RegFileEntry>>,
    pub fds: Vec<FdinfoEntry>,
    /// Ids of deleted files, opened by crust from ghost images.
    ghosted: std::collections::HashSet<u32>,
}

impl RestoreFiles {
    /// The fd table `files_id` (fdinfo-N.img) and the REG entries of
    /// files.img, checked against each other.
    pub fn load(dir: &Path, loaded: &LoadedFiles, files_id: u32) -> Result<RestoreFiles, Error> {
        let index = loaded.index()?;
        let (regs, others) = (&index.regs, &index.others);
        // Required: a missing fd table must not restore a task without fds.
        let fds: Vec<FdinfoEntry> = read_image(dir, ImageType::Fdinfo, files_id as u64)?;
        for fd in &fds {
            if fd.r#type == fd_types::UNIXSK || fd.r#type == fd_types::INETSK {
                // Checked by UnixFiles::check_fds and InetFiles::load.
                continue;
            }
            let event = events::handles(fd.r#type);
            let netsk = fd.r#type == fd_types::PACKETSK || fd.r#type == fd_types::NETLINKSK;
            if fd.r#type == fd_types::PIPE || fd.r#type == fd_types::FIFO || event || netsk {
                if others.get(&fd.id) != Some(&fd.r#type) {
                    return Err(Error::BadImage {
                        dir: dir.to_path_buf(),
                        why: format!(
                            "fd {} refers to {} id {}, which files.img does not have",
                            fd.fd,
                            if event {
                                events::type_name(fd.r#type)
                            } else if fd.r#type == fd_types::PACKETSK {
                                "packet socket"
                            } else if fd.r#type == fd_types::NETLINKSK {
                                "netlink socket"
                            } else if fd.r#type == fd_types::PIPE {
                                "pipe"
                            } else {
                                "FIFO"
                            },
                            fd.id
                        ),
                    });
                }
                if fd.fd > i32::MAX as u32 {
                    return Err(Error::BadImage {
                        dir: dir.to_path_buf(),
                        why: format!("fd number {} is out of range", fd.fd),
                    });
                }
                continue;
            }
            if fd.r#type == fd_types::MEMFD
                || fd.r#type == fd_types::TTY
                || fd.r#type == fd_types::PIDFD
                || fd.r#type == fd_types::NS
                || fd.r#type == fd_types::TUNF
            {
                // Checked by memfd::Memfds::load, pty::Ptys::load,
                // pidfd::load_kind, nsfile::load_kind and net::tun::load_kind.
                if fd.fd > i32::MAX as u32 {
                    return Err(Error::BadImage {
                        dir: dir.to_path_buf(),
                        why: format!("fd number {} is out of range", fd.fd),
                    });
                }
                continue;
            }
            if fd.r#type != fd_types::REG {
                return Err(Error::unsupported(format!(
                    "restoring fd {} of type {} (only regular files, pipes, FIFOs and event files so far)",
                    fd.fd, fd.r#type
                )));
            }
            if !regs.contains_key(&fd.id) {
                return Err(Error::BadImage {
                    dir: dir.to_path_buf(),
                    why: format!(
                        "fd {} refers to file id {}, which files.img does not have",
                        fd.fd, fd.id
                    ),
                });
            }
            if fd.fd > i32::MAX as u32 {
                return Err(Error::BadImage {
                    dir: dir.to_path_buf(),
                    why: format!("fd number {} is out of range", fd.fd),
                });
            }
        }
        let _ = others;
        let ghosted = loaded.ghosted()?.clone();
        Ok(RestoreFiles {
            regs: regs.clone(),
            fds,
            ghosted,
        })
    }

    /// The first fd that is open on a terminal, if any.
    pub fn terminal_fd(&self) -> Option<(u32, &str)> {
        self.fds.iter().find_map(|f| {
            let reg = self.regs.get(&f.id)?;
            is_terminal_path(&reg.name).then_some((f.fd, reg.name.as_str()))
        })
    }

    /// The mount (`mnt_id`) regular file `id` was on, when recorded.
    pub fn mnt_id_of(&self, id: u64) -> Option<i32> {
        self.regs.get(&(id as u32)).and_then(|r| r.mnt_id)
    }

    pub fn path_of(&self, id: u64) -> Option<String> {
        self.regs.get(&(id as u32)).map(|r| r.name.clone())
    }

    /// Check that a file the restore needs is there and unchanged.
    /// `opts`: `--shell-job`, `--skip-file-rwx-check`, `--file-validation`.
    pub fn check(&self, id: u32, opts: &crate::Options) -> Result<(), Error> {
        let shell_job = opts.shell_job;
        let Some(reg) = self.regs.get(&id) else {
            return Ok(());
        };
        if self.ghosted.contains(&id) {
            return Ok(());
        }
        // A process's /proc entry: its process may be one the restore
        // makes (see `procfile`), and there is nothing to compare.
        if super::classify::proc_pid(&reg.name).is_some() {
            return Ok(());
        }
        if is_terminal_path(&reg.name) {
            if shell_job {
                return Ok(());
            }
            return Err(Error::unsupported(format!(
                "the image has a file on the terminal {}: a shell job; restore it with --shell-job (-j) from a terminal",
                reg.name
            )));
        }
        // The path as crust sees it now (the tree may have a mount
        // namespace of its own): nothing to check on a mount not made yet.
        let Some(path) = crate::util::view::host_path(Path::new(&reg.name)) else {
            return Ok(());
        };
        // A symlink (an O_PATH fd on it) is checked itself, not followed.
        let link = reg.mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK);
        let md = if link {
            std::fs::symlink_metadata(&path)
        } else {
            std::fs::metadata(&path)
        };
        let md = md.map_err(|source| Error::FileMissing {
            path: path.clone(),
            source,
        })?;
        if let Some(mode) = reg.mode {
            if mode & libc::S_IFMT != md.mode() & libc::S_IFMT {
                return Err(Error::FileChanged {
                    path,
                    why: format!(
                        "type was {:o}, now {:o}",
                        mode & libc::S_IFMT,
                        md.mode() & libc::S_IFMT
                    ),
                });
            }
            // --skip-file-rwx-check: the r/w/x bits may differ (set-id and
            // sticky bits may not), as in CRIU.
            let bits = if opts.skip_file_rwx_check {
                0o7000
            } else {
                0o7777
            };
            if md.file_type().is_file() && mode & bits != md.permissions().mode() & bits {
                return Err(Error::FileChanged {
                    path,
                    why: format!(
                        "mode was {:o}, now {:o}",
                        mode & 0o7777,
                        md.permissions().mode() & 0o7777
                    ),
                });
            }
        }
        if let Some(size) = reg.size {
            if md.file_type().is_file() && size != md.size() {
                return Err(Error::FileChanged {
                    path,
                    why: format!("size was {size}, now {}", md.size()),
                });
            }
        }
        if !reg.build_id.is_empty() && !opts.validate_by_size_only() {
            let now = elf_build_id(&path);
            if now != reg.build_id {
                return Err(Error::FileChanged {
                    path,
                    why: "its ELF build-id differs".into(),
                });
            }
        }
        Ok(())
    }

    /// Hand over the fds made late (see [`crate::files::kind::OpenKind::late`]),
    /// at their numbers, once every task exists and `shared` made them.
    pub fn give_late(&self, r: &mut Remote<'_>, shared: &OpenFiles) -> Result<(), Error> {
        let mut gifts = Vec::new();
        for f in self.fds.iter().filter(|f| shared.late(f.id)) {
            let fd = shared.get(f.id).ok_or_else(|| Error::Restore {
                pid: r.pid(),
                what: format!("no description was made for file {} (fd {})", f.id, f.fd),
            })?;
            gifts.push(Gift {
                fd,
                target: f.fd as i32,
                cloexec: f.flags & libc::FD_CLOEXEC as u32 != 0,
            });
        }
        if gifts.is_empty() {
            return Ok(());
        }
        fdpass::give_fds(r, &gifts)
    }

    /// Open every fd of the image in the task, at its number, with its
    /// flags and offset. `tty` replaces terminals for --shell-job. Pipes and
    /// FIFOs, sockets... are crust's descriptions in `shared`, passed to the
    /// task. `pid`: the process's pid in the images.
    pub fn open_fds(
        &self,
        r: &mut Remote<'_>,
        pid: i32,
        tty: Option<&str>,
        shared: &OpenFiles,
    ) -> Result<(), Error> {
        let mut fds = self.fds.clone();
        fds.sort_by_key(|f| f.fd);
        let mut first_fd_of: HashMap<u32, u64> = HashMap::new();
        let mut gifts = Vec::new();
        for f in &fds {
            if shared.late(f.id) || shared.in_task(f.id) {
                // Made and handed over once every task exists
                // (see [`RestoreFiles::give_late`]), or opened by the task
                // then (/dev/tty).
                continue;
            }
            // Objects crust made (or was given) for this file: handed over.
            let missing = |what: String| Error::Restore {
                pid: r.pid(),
                what: format!("no {what} was made for file {} (fd {})", f.id, f.fd),
            };
            let made = match shared.get(f.id) {
                Some(fd) => Some(fd),
                None => match shared.type_name(f.r#type) {
                    Some(what) => return Err(missing(what.to_string())),
                    None => None,
                },
            };
            if let Some(fd) = made {
                gifts.push(Gift {
                    fd,
                    target: f.fd as i32,
                    cloexec: f.flags & libc::FD_CLOEXEC as u32 != 0,
                });
                continue;
            }
            let reg = &self.regs[&f.id];
            let target = f.fd as u64;
            let cloexec = f.flags & libc::FD_CLOEXEC as u32 != 0;
            if let Some(&src) = first_fd_of.get(&f.id) {
                let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                r.call("dup3", libc::SYS_dup3, [src, target, flags, 0, 0, 0])?;
                continue;
            }
            let name = match tty {
                Some(t) if is_terminal_path(&reg.name) => t.to_string(),
                _ => reg.name.clone(),
            };
            let a = r.put_cstr(0, name.as_bytes())?;
            let oflags = (reopen_flags(reg.flags)
                & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY) as u32)
                | libc::O_NOCTTY as u32
                | if cloexec { O_CLOEXEC } else { 0 };
            let got = r.call(
                &format!("open {name} for fd {target}"),
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, a.get(), oflags as u64, 0, 0, 0],
            )?;
            if got != target {
                let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                r.call("dup3", libc::SYS_dup3, [got, target, flags, 0, 0, 0])?;
                r.call("close", libc::SYS_close, [got, 0, 0, 0, 0, 0])?;
            }
            if reg.pos != 0 {
                r.call(
                    &format!("lseek fd {target}"),
                    libc::SYS_lseek,
                    [target, reg.pos, libc::SEEK_SET as u64, 0, 0, 0],
                )?;
            }
            first_fd_of.insert(f.id, target);
        }
        fdpass::give_fds(r, &gifts)?;
        match shared.kind::<events::OpenEvents>() {
            Some(ev) => ev.register_epolls(r, pid, &fds),
            None => Ok(()),
        }
    }
}
