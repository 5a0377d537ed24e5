//! Small helpers shared by dump and restore.

pub mod idmap;
pub mod overmount;
pub mod progress;
pub mod ptmx;

use crate::Error;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::Message;
use std::path::Path;

pub fn proc_err(pid: i32) -> impl FnOnce(crust_proc::ProcError) -> Error {
    move |source| {
        if source.is_not_found() {
            Error::NoSuchProcess { pid }
        } else {
            Error::Proc { pid, source }
        }
    }
}

pub fn compel_err(pid: i32) -> impl FnOnce(crust_compel::Error) -> Error {
    move |source| Error::Compel { pid, source }
}

pub fn sys_err(pid: i32, op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let op = op.into();
    move |source| Error::Sys { pid, op, source }
}

fn img_err(what: String) -> impl FnOnce(crust_images::image::ImageError) -> Error {
    move |source| Error::Image { what, source }
}

/// Open a file of image data read raw (pages, ghost contents...), refusing
/// a symbolic link in its place.
pub fn open_image_data(path: &Path) -> Result<std::fs::File, Error> {
    crust_images::image::open_nofollow(path).map_err(img_err("cannot read image data".into()))
}

/// Remove a stale image file of an earlier dump (a missing one is fine).
pub fn remove_stale(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "cannot remove the stale image",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write a whole image of `entries` into `dir`.
pub fn write_image<M: Message>(
    dir: &Path,
    ty: ImageType,
    id: u64,
    entries: &[M],
) -> Result<(), Error> {
    let name = ty.file_name(id);
    let mut w =
        ImageWriter::create(dir, ty, &name).map_err(img_err(format!("cannot write {name}")))?;
    for e in entries {
        w.write_entry(e)
            .map_err(img_err(format!("cannot write {name}")))?;
    }
    w.finish().map_err(img_err(format!("cannot write {name}")))
}

/// Read every entry of an image.
pub fn read_image<M: Message>(dir: &Path, ty: ImageType, id: u64) -> Result<Vec<M>, Error> {
    let name = ty.file_name(id);
    let mut r = ImageReader::open_typed(dir, ty, &name)
        .map_err(img_err(format!("cannot read image {name}")))?;
    r.read_remaining()
        .map_err(img_err(format!("cannot read image {name}")))
}

/// Every `mountpoints-N.img` of `dir`: (mount namespace id N, its mounts).
/// No such image (or no readable dir): none.
pub fn mount_tables(
    dir: &Path,
) -> Result<Vec<(u32, Vec<crust_images::proto::mnt::MntEntry>)>, Error> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut ids: Vec<u32> = list
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_prefix("mountpoints-")?
                .strip_suffix(".img")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|ns| Ok((ns, read_image(dir, ImageType::Mnts, u64::from(ns))?)))
        .collect()
}

/// Write an image of one entry followed by raw bytes (tcp-stream...).
pub fn write_image_with_payload<M: Message>(
    dir: &Path,
    ty: ImageType,
    id: u64,
    entry: &M,
    payload: &[u8],
) -> Result<(), Error> {
    let name = ty.file_name(id);
    let err = || img_err(format!("cannot write {name}"));
    let mut w = ImageWriter::create(dir, ty, &name).map_err(err())?;
    w.write_entry(entry).map_err(err())?;
    w.write_raw(payload).map_err(err())?;
    w.finish().map_err(err())
}

/// Read the single entry of an image and the raw bytes that follow it.
pub fn read_one_with_payload<M: Message>(
    dir: &Path,
    ty: ImageType,
    id: u64,
) -> Result<(M, Vec<u8>), Error> {
    let name = ty.file_name(id);
    let err = || img_err(format!("cannot read image {name}"));
    let mut r = ImageReader::open_typed(dir, ty, &name).map_err(err())?;
    let rec = r
        .next_record()
        .map_err(err())?
        .ok_or_else(|| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("{name} holds no entry"),
        })?;
    let m = M::decode(&rec.entry).map_err(|source| Error::Image {
        what: format!("cannot read image {name}"),
        source: crust_images::image::ImageError::Decode {
            path: dir.join(&name),
            offset: rec.offset,
            message: M::NAME,
            source,
        },
    })?;
    Ok((m, rec.payload))
}

/// The files.img entries of one kind (`ty`), by id, each checked: `part`
/// takes the kind's message out of an entry, with the id it carries (which
/// must be the entry's), `check` says why one cannot be restored. `what`
/// names the kind in errors ("packet socket").
pub fn load_kind<E>(
    dir: &Path,
    files: &[crust_images::proto::fdinfo::FileEntry],
    ty: i32,
    what: &str,
    part: impl Fn(crust_images::proto::fdinfo::FileEntry) -> Option<(u32, E)>,
    check: impl Fn(&E) -> Result<(), String>,
) -> Result<std::collections::BTreeMap<u32, E>, Error> {
    let mut out = std::collections::BTreeMap::new();
    for f in files.iter().filter(|f| f.r#type == ty).cloned() {
        let id = f.id;
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("files.img: {what} {id}: {why}"),
        };
        let (own, e) = part(f).ok_or_else(|| bad(format!("no {what} part")))?;
        if own != id {
            return Err(bad(format!("its {what} part has id {own}")));
        }
        check(&e).map_err(bad)?;
        out.insert(id, e);
    }
    Ok(out)
}

/// Read the single entry an image must hold.
pub fn read_one<M: Message>(dir: &Path, ty: ImageType, id: u64) -> Result<M, Error> {
    let mut v = read_image::<M>(dir, ty, id)?;
    if v.is_empty() {
        return Err(Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("{} holds no entry", ty.file_name(id)),
        });
    }
    Ok(v.swap_remove(0))
}

/// Split a 64-bit capability set into CRIU's two u32 words.
pub fn cap_words(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// Join CRIU's capability words back into one u64.
pub fn cap_join(w: &[u32]) -> u64 {
    let lo = w.first().copied().unwrap_or(0) as u64;
    let hi = w.get(1).copied().unwrap_or(0) as u64;
    lo | (hi << 32)
}

/// Microseconds since `t`.
pub fn us_since(t: std::time::Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

/// An error if a stop signal (SIGINT, SIGTERM...) was caught by the front
/// end (see [`crust_sys::process::catch_stop_signals`]): the caller is at
/// a point where it can roll back.
pub fn check_stop() -> Result<(), Error> {
    match crust_sys::process::stop_asked() {
        Some(signal) => Err(Error::Stopped { signal }),
        None => Ok(()),
    }
}

// The view of the tree's paths from crust's mount namespace (used by
// every file kind; set by `ns::mnt`).
pub mod view {
    //! Where crust finds, in its own mount namespace, a path the tree sees in
    //! its own: every file kind that stats or reads a file by the path the
    //! images record asks [`host_path`].
    //!
    //! - Dump of a tree in a mount namespace of its own: `/proc/ROOT/root` +
    //!   the path (the root's namespace and root directory).
    //! - Restore load, before the namespace exists: the path through the
    //!   mount that holds it: under the tree's root, `--root DIR` + the path;
    //!   under an external mount, its host path; under a mount made afresh
    //!   (a tmpfs...), nowhere yet (`None`: nothing to check against). Once
    //!   the root task exists, the restore opens paths in the task itself.
    //!
    //! The view is set for one dump or restore ([`set`]) and reset when its
    //! guard goes.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::{Arc, RwLock};

    type MapFn = dyn Fn(&Path) -> Option<PathBuf> + Send + Sync;

    static VIEW: RwLock<Option<Arc<MapFn>>> = RwLock::new(None);

    /// The process whose mount namespace the view looks into ([`for_dump`]),
    /// 0 for none.
    static NS_PID: AtomicI32 = AtomicI32::new(0);

    /// The process (crust's pid for it) whose mount namespace, not crust's,
    /// the tree's paths are in: a dump's root, or a restored tree's once
    /// it exists. Its mountinfo lists the tree's mounts; what must be done
    /// in that namespace, not only seen through it (binding a unix socket
    /// to its name), is done by a thread that joined it.
    pub(crate) fn ns_pid() -> Option<i32> {
        Some(NS_PID.load(Ordering::Relaxed)).filter(|&p| p > 0)
    }

    /// Resets the view when dropped.
    pub(crate) struct ViewGuard(());

    impl Drop for ViewGuard {
        fn drop(&mut self) {
            if let Ok(mut v) = VIEW.write() {
                *v = None;
            }
            NS_PID.store(0, Ordering::Relaxed);
            if let Ok(mut s) = SUBS.write() {
                s.clear();
            }
        }
    }

    /// At restore, the roots of the tree's other mount namespaces once
    /// made: namespace id (the images') -> an O_PATH fd crust holds on its
    /// root directory. `/proc/CRUST/fd/N/PATH` then walks the tree's PATH
    /// in that namespace's mounts (the walk goes on from the mount the fd
    /// is on), without joining it.
    static SUBS: RwLock<Vec<(u32, std::os::fd::OwnedFd)>> = RwLock::new(Vec::new());

    /// Record `root` (an fd on the root directory of mount namespace `id`)
    /// until the restore's view goes.
    pub(crate) fn set_sub_root(id: u32, root: std::os::fd::OwnedFd) {
        if let Ok(mut s) = SUBS.write() {
            s.retain(|(i, _)| *i != id);
            s.push((id, root));
        }
    }

    /// Where crust walks paths of mount namespace `id` (see [`set_sub_root`]).
    pub(crate) fn sub_root(id: u32) -> Option<PathBuf> {
        let s = SUBS.read().ok()?;
        let (_, fd) = s.iter().find(|(i, _)| *i == id)?;
        Some(PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(fd)
        )))
    }

    /// Use `f` as the view until the guard goes.
    pub(crate) fn set(f: Arc<MapFn>) -> ViewGuard {
        if let Ok(mut v) = VIEW.write() {
            *v = Some(f);
        }
        ViewGuard(())
    }

    /// For a dump of the tree whose root is `root_pid`, or a restore once
    /// its root exists in its namespaces: the root's view when its mount
    /// namespace is not crust's.
    pub(crate) fn for_dump(root_pid: i32) -> Option<ViewGuard> {
        let ino = |p: String| {
            std::fs::metadata(p)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        };
        let (mine, theirs) = (
            ino("/proc/self/ns/mnt".into()),
            ino(format!("/proc/{root_pid}/ns/mnt")),
        );
        if theirs.is_none() || mine == theirs {
            return None;
        }
        let base = PathBuf::from(format!("/proc/{root_pid}/root"));
        let guard = set(Arc::new(move |p: &Path| Some(join(&base, p))));
        NS_PID.store(root_pid, Ordering::Relaxed);
        Some(guard)
    }

    /// `base` + `p` (absolute or not); for an empty `p` or `/`, `base/`
    /// when `base` is a directory and `base` itself otherwise (a trailing
    /// slash fails on a file, such as the mountpoint of a file bind
    /// mount, with ENOTDIR).
    pub(crate) fn join(base: &Path, p: &Path) -> PathBuf {
        let rel = p.strip_prefix("/").unwrap_or(p);
        if rel.as_os_str().is_empty() {
            // A directory keeps its trailing slash: `/proc/PID/root/` is
            // resolved through the magic link even under O_NOFOLLOW, where
            // `/proc/PID/root` would open the link itself.
            if std::fs::metadata(base).is_ok_and(|m| m.is_dir()) {
                return base.join("");
            }
            return base.to_path_buf();
        }
        base.join(rel)
    }

    /// Where crust finds the tree's path `p`: `p` itself without a view;
    /// `None` when it cannot be seen yet.
    pub(crate) fn host_path(p: &Path) -> Option<PathBuf> {
        let v = VIEW.read().ok().and_then(|v| v.clone());
        match v {
            Some(f) => f(p),
            None => Some(p.to_path_buf()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn join_never_adds_a_trailing_slash() {
            let b = Path::new("/proc/7/root/run/podman-init");
            assert_eq!(join(b, Path::new("")), b);
            assert_eq!(join(b, Path::new("/")), b);
            assert_eq!(
                join(Path::new("/proc/7/root"), Path::new("/run/podman-init")),
                Path::new("/proc/7/root/run/podman-init")
            );
            assert_eq!(join(Path::new("/r"), Path::new("a/b")), Path::new("/r/a/b"));
            // A directory (here through the magic link) keeps the slash
            // that makes O_NOFOLLOW still resolve the link.
            let root = join(Path::new("/proc/self/root"), Path::new("/"));
            assert_eq!(root.as_os_str(), "/proc/self/root/");
        }
    }
}
