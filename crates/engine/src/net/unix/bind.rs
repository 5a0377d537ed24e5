//! Binding restored unix sockets to their names: paths (absolute, or
//! relative to the directory recorded as `name_dir`), abstract names, and
//! names whose file was gone at dump time (ghosts: bound, then unlinked at
//! once, reached afterwards through an O_PATH fd of the socket file, as
//! CRIU does).

use super::*;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

/// The path a socket's name stands for: its name, below its `name_dir`
/// when relative. None for abstract and empty names.
pub(super) fn full_path(u: &UnixSkEntry) -> Option<PathBuf> {
    let p = name_path(&u.name)?;
    match (&u.name_dir, p.is_absolute()) {
        (Some(dir), false) => Some(Path::new(dir).join(p)),
        _ => Some(p),
    }
}

/// How crust reaches the sockets it bound, when their name alone would not
/// do: a ghost (its file unlinked) or a relative name is reached through
/// `/proc/self/fd/N` of an O_PATH fd of its socket file.
#[derive(Debug, Default)]
pub(crate) struct Addrs {
    by_id: HashMap<u32, Vec<u8>>,
    fds: Vec<OwnedFd>,
}

impl Addrs {
    /// The address to connect or send to socket `u`.
    pub(super) fn of(&self, u: &UnixSkEntry) -> Vec<u8> {
        self.by_id
            .get(&u.id)
            .cloned()
            .unwrap_or_else(|| u.name.clone())
    }

    /// Socket `id` is reached through `file`, an O_PATH fd of its file.
    fn add(&mut self, id: u32, file: OwnedFd) {
        let mut a = format!("/proc/self/fd/{}", file.as_raw_fd()).into_bytes();
        a.push(0);
        self.by_id.insert(id, a);
        self.fds.push(file);
    }
}

pub(super) fn open_path(p: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(p)?;
    Ok(f.into())
}

/// bind(2) `s` to the name of `u`; a relative name is bound from its
/// `name_dir` (crust's working directory is changed for the call and put
/// back).
fn bind_at(s: BorrowedFd<'_>, u: &UnixSkEntry) -> std::io::Result<()> {
    let relative = name_path(&u.name).is_some_and(|p| !p.is_absolute());
    let Some(dir) = u.name_dir.as_deref().filter(|_| relative) else {
        return su::bind(s, &u.name);
    };
    let back = std::env::current_dir()?;
    std::env::set_current_dir(dir)?;
    let r = su::bind(s, &u.name);
    if let Err(e) = std::env::set_current_dir(&back) {
        warn!("cannot go back to {}: {e}", back.display());
        return Err(e);
    }
    r
}

/// The recorded mode and owner of a bound socket file.
fn set_perms(p: &Path, perms: &FilePermsEntry) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(perms.mode & 0o7777))?;
    let (uid, gid) = (
        crate::util::idmap::to_host_uid(perms.uid),
        crate::util::idmap::to_host_gid(perms.gid),
    );
    if let Err(e) = std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        warn!(
            "cannot chown {} to {}:{}: {e}",
            p.display(),
            perms.uid,
            perms.gid
        );
    }
    Ok(())
}

/// Bind `s` to the name of `u`, if it has one: a path is first cleared of
/// a stale socket file, and gets its recorded mode and owner. A name whose
/// file was gone at dump time is bound as a ghost ([`bind_ghost`]). A path
/// is bound in the tree's mount namespace, from a crust thread that joined
/// it when it is not crust's, or, for a socket bound on a mount of another
/// mount namespace of the tree (its `mnt_id`), from a crust thread whose
/// root is that namespace's root directory (`away`, see [`in_root`]). The
/// socket keeps the very name it had; crust reaches it through an O_PATH
/// fd of its file.
pub(super) fn bind_name(
    s: BorrowedFd<'_>,
    u: &UnixSkEntry,
    away: Option<&Path>,
    bound: &mut BoundFiles,
    addrs: &mut Addrs,
) -> std::io::Result<()> {
    if u.name.is_empty() {
        return Ok(());
    }
    let Some(path) = full_path(u) else {
        return su::bind(s, &u.name);
    };
    if let Some(root) = away {
        debug!(
            "unix socket {} is bound to {} in another mount namespace of the tree",
            u.id,
            path.display()
        );
        return in_root(root, || bind_path(s, u, &path, bound, addrs, true));
    }
    match crate::util::view::ns_pid() {
        Some(root) => crate::ns::in_ns(root, &[crate::ns::ids::NsKind::Mnt], || {
            Ok(bind_path(s, u, &path, bound, addrs, true))
        })
        .map_err(std::io::Error::other)?,
        None => bind_path(s, u, &path, bound, addrs, false),
    }
}

/// Run `f` in a new crust thread whose root and working directory are
/// `root`: the root directory of another mount namespace of the tree
/// (`/proc/CRUST/fd/N`, [`crate::util::view::sub_root`]). Paths walk that
/// namespace's mounts from there (a walk goes on in the mounts of the
/// mount it is on), so a socket bound by its absolute name is bound there
/// and keeps that name. The thread stops sharing crust's root and working
/// directory first (unshare(CLONE_FS)); crust's stay as they were.
fn in_root<T: Send>(
    root: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            crust_sys::ns::unshare(libc::CLONE_FS)?;
            std::env::set_current_dir(root)?;
            std::os::unix::fs::chroot(".")?;
            std::env::set_current_dir("/")?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the crust thread binding a unix socket in another mount namespace panicked",
            ))
        })
    })
}

/// [`bind_name`] for a name that is a path, `path` (relative names below
/// their `name_dir`), in the mount namespace of this thread; `foreign`:
/// not crust's, so crust reaches the socket through its file.
fn bind_path(
    s: BorrowedFd<'_>,
    u: &UnixSkEntry,
    path: &Path,
    bound: &mut BoundFiles,
    addrs: &mut Addrs,
    foreign: bool,
) -> std::io::Result<()> {
    if u.deleted == Some(true) {
        return bind_ghost(s, u, path, addrs);
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            debug!("removing the stale socket file {}", path.display());
            std::fs::remove_file(path)?;
        }
        Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::EEXIST)),
        Err(_) => {}
    }
    bind_at(s, u)?;
    bound.add(path);
    if let Some(perms) = &u.file_perms {
        set_perms(path, perms)?;
    }
    if foreign || !name_path(&u.name).is_some_and(|p| p.is_absolute()) {
        addrs.add(u.id, open_path(path)?);
    }
    Ok(())
}

/// Bind `s` to `path`, whose file was gone at dump time: the missing
/// directories are made, a file at the path is moved aside, the socket is
/// bound, kept open O_PATH (connections and messages reach it through
/// that), its file unlinked, the other file moved back, the directories
/// made removed again.
fn bind_ghost(
    s: BorrowedFd<'_>,
    u: &UnixSkEntry,
    path: &Path,
    addrs: &mut Addrs,
) -> std::io::Result<()> {
    let mut made_dirs = Vec::new();
    let missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .collect();
    let r = (|| -> std::io::Result<OwnedFd> {
        for d in missing.iter().rev() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o755).create(d)?;
            made_dirs.push(d.to_path_buf());
        }
        let mut aside = path.as_os_str().as_bytes().to_vec();
        aside.extend_from_slice(b".crust-sk-ghost");
        let aside = PathBuf::from(std::ffi::OsStr::from_bytes(&aside));
        let parked = match std::fs::symlink_metadata(path) {
            Ok(_) => {
                let _ = std::fs::remove_file(&aside);
                std::fs::rename(path, &aside)?;
                debug!("{} moved aside to bind a ghost socket", path.display());
                true
            }
            Err(_) => false,
        };
        let got = (|| -> std::io::Result<OwnedFd> {
            bind_at(s, u)?;
            let kept = (|| -> std::io::Result<OwnedFd> {
                if let Some(perms) = &u.file_perms {
                    set_perms(path, perms)?;
                }
                open_path(path)
            })();
            if let Err(e) = std::fs::remove_file(path) {
                warn!("cannot unlink the ghost socket {}: {e}", path.display());
            }
            kept
        })();
        if parked {
            if let Err(e) = std::fs::rename(&aside, path) {
                warn!(
                    "cannot move {} back to {}: {e}",
                    aside.display(),
                    path.display()
                );
            }
        }
        got
    })();
    for d in made_dirs.iter().rev() {
        if let Err(e) = std::fs::remove_dir(d) {
            warn!(
                "cannot remove {}, made for a ghost socket: {e}",
                d.display()
            );
        }
    }
    addrs.add(u.id, r?);
    debug!(
        "unix socket {} bound to {} as a ghost",
        u.id,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_paths() {
        let mut u = UnixSkEntry {
            name: b"rel.sock\0".to_vec(),
            name_dir: Some("/srv/d".into()),
            ..Default::default()
        };
        assert_eq!(full_path(&u), Some(PathBuf::from("/srv/d/rel.sock")));
        u.name = b"/abs/x.sock\0".to_vec();
        assert_eq!(full_path(&u), Some(PathBuf::from("/abs/x.sock")));
        u.name = b"\0abstract".to_vec();
        assert_eq!(full_path(&u), None);
        let a = Addrs::default();
        assert_eq!(a.of(&u), b"\0abstract".to_vec());
    }
}
