//! inotify, the part of the event files (`events.rs`) that names files:
//! watches read from fdinfo at dump (inode, device, mask and the file
//! handle, with the path the handle opens, as CRIU records it), and added
//! again at restore through the handle, or the recorded path when the
//! handle is stale. File handles are shared with fanotify's marks.
//!
//! A watch on a file deleted while open (the task still holds it, so the
//! inode lives on) cannot be reached by handle or path after the dump: the
//! ghost kind recreates that file for the fds that hold it, and the watch
//! is put on that description (a ghost REG entry of the same path, made
//! before the event files), so it watches the file the tasks hold.

use crate::files::events::{hex, parse_err, words};
use crate::files::kind::Made;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fh::FhEntry;
use crust_images::proto::fsnotify::InotifyWdEntry;
use crust_proc::FdInfo;
use crust_sys::events as ev;
use log::{debug, warn};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Handle words CRIU always writes (fh_entry_sizes.min_entries).
const FH_WORDS: usize = 16;
/// What /proc shows after the path of a deleted file.
const DELETED: &str = " (deleted)";

/// The watches of inotify fd `fd` (its fdinfo `inotify` lines).
pub(crate) fn inotify_watches(
    pid: i32,
    fd: i32,
    info: &FdInfo,
) -> Result<Vec<InotifyWdEntry>, Error> {
    let mut wds = Vec::new();
    for line in info.get_all("inotify") {
        let bad = || parse_err(pid, fd, "inotify watch", line);
        let w = words(line);
        let n = |k: &str| w.get(k).and_then(|v| hex(v)).ok_or_else(bad);
        let bytes = n("fhandle-bytes")? as usize;
        let htype = n("fhandle-type")? as u32;
        let raw = w.get("f_handle").ok_or_else(bad)?;
        if raw.len() % 2 != 0 || bytes > ev::MAX_HANDLE_SZ || raw.len() / 2 < bytes {
            return Err(bad());
        }
        let hb: Vec<u8> = (0..raw.len() / 2)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let sdev = n("sdev")? as u32;
        let place = handle_place(sdev, htype as i32, &hb[..bytes]);
        let (path, mnt_id) = match place {
            Some((p, m)) => (Some(p), m),
            None => (None, None),
        };
        if path.is_none() {
            warn!("{pid}: fd {fd}: cannot find the path of an inotify watch (handle {raw})");
        }
        wds.push(InotifyWdEntry {
            id: 0,
            i_ino: n("ino")?,
            mask: n("mask")? as u32,
            ignored_mask: n("ignored_mask").unwrap_or(0) as u32,
            s_dev: sdev,
            // The kernel prints the watch number in hex, as every field.
            wd: u32::try_from(n("wd")?).map_err(|_| bad())?,
            f_handle: FhEntry {
                bytes: bytes as u32,
                r#type: htype,
                handle: handle_words(&hb[..bytes]),
                path,
                mnt_id,
                ..Default::default()
            },
            ..Default::default()
        });
    }
    Ok(wds)
}

/// Handle bytes as CRIU stores them: little-endian u64 words, at least 16.
pub(crate) fn handle_words(b: &[u8]) -> Vec<u64> {
    let mut out: Vec<u64> = b
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    if out.len() < FH_WORDS {
        out.resize(FH_WORDS, 0);
    }
    out
}

pub(crate) fn handle_bytes(words: &[u64], n: usize) -> Vec<u8> {
    let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    b.truncate(n);
    b
}

/// A kernel-internal dev_t (as fdinfo prints it) as (major, minor).
pub(crate) fn kdev(d: u32) -> (u32, u32) {
    (d >> 20, d & 0xfffff)
}

/// The mount of the file system `sdev` in the mountinfo of `pid` (one at
/// the file system's root first): its mount point and id.
fn mount_in(pid: i32, maj: u32, min: u32) -> Option<(String, i32)> {
    let mounts = crust_proc::mountinfo(&crust_proc::ProcRoot::default(), pid).ok()?;
    let m = mounts
        .iter()
        .find(|m| m.major == maj && m.minor == min && m.root == "/")
        .or_else(|| mounts.iter().find(|m| m.major == maj && m.minor == min))?;
    Some((m.mount_point.clone(), m.mnt_id))
}

fn open_dir(at: &Path) -> Option<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(at)
        .ok()
        .map(OwnedFd::from)
}

pub(crate) fn mnt_ns_ino(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// An fd on the root of a mount of the filesystem `sdev` (not O_PATH:
/// open_by_handle_at refuses those): a mount of the tree's mount
/// namespace when it has one of its own (so the path the handle opens is
/// the tree's, as the images record), else of crust's. A file system only
/// another mount namespace of the tree has (a tmpfs a child mounted after
/// it unshared: zdtm inotify01) is reached through the root of a process
/// of that namespace, and its mount id comes back with the fd (the mount
/// the watch's handle names, CRIU's `FhEntry.mnt_id`).
fn mount_fd(sdev: u32) -> Option<(OwnedFd, Option<u32>)> {
    let (maj, min) = kdev(sdev);
    let ns = crate::util::view::ns_pid();
    let of = ns.unwrap_or_else(crust_sys::process::getpid);
    if let Some((mp, _)) = mount_in(of, maj, min) {
        let at = match ns {
            Some(_) => crate::util::view::host_path(Path::new(&mp))?,
            None => PathBuf::from(&mp),
        };
        return open_dir(&at).map(|f| (f, None));
    }
    let root = ns?;
    let root_ns = mnt_ns_ino(root);
    super::regmnt::tree_of(root)
        .into_iter()
        .skip(1)
        .filter(|&p| mnt_ns_ino(p).is_some_and(|n| Some(n) != root_ns))
        .find_map(|p| {
            let (mp, id) = mount_in(p, maj, min)?;
            let at = crate::util::view::join(Path::new(&format!("/proc/{p}/root")), Path::new(&mp));
            Some((open_dir(&at)?, u32::try_from(id).ok()))
        })
}

/// Open the file behind a handle (O_PATH).
pub(crate) fn open_handle(sdev: u32, htype: i32, handle: &[u8]) -> std::io::Result<OwnedFd> {
    let (m, _) = mount_fd(sdev).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
    ev::open_by_handle_at(m.as_fd(), htype, handle, libc::O_PATH | libc::O_CLOEXEC)
}

/// The path of the file behind a handle, seen from crust.
pub(crate) fn handle_path(sdev: u32, htype: i32, handle: &[u8]) -> Option<String> {
    handle_place(sdev, htype, handle).map(|(p, _)| p)
}

/// The path of the file behind a handle and, when the handle was opened
/// on a mount of another mount namespace of the tree than the root's, the
/// id of that mount.
fn handle_place(sdev: u32, htype: i32, handle: &[u8]) -> Option<(String, Option<u32>)> {
    let (m, away) = mount_fd(sdev)?;
    let f = ev::open_by_handle_at(m.as_fd(), htype, handle, libc::O_PATH | libc::O_CLOEXEC).ok()?;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    Some((p.to_string_lossy().into_owned(), away))
}

/// The ghost files (REG entries recreated by the ghost kind) by path, for
/// watches on files deleted while open; and the namespace of each mount of
/// the images (`mountpoints-NS.img`), for watches on a mount of another
/// namespace than the root's.
#[derive(Debug, Default, Clone)]
pub(crate) struct GhostPaths(BTreeMap<String, Vec<u32>>, BTreeMap<u32, u32>);

impl GhostPaths {
    /// From files.img's REG entries and the ids the ghost kind recreates.
    pub fn new<'a>(
        regs: impl Iterator<Item = (u32, &'a str)>,
        ghosted: &std::collections::HashSet<u32>,
    ) -> GhostPaths {
        let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (id, name) in regs.filter(|(id, _)| ghosted.contains(id)) {
            m.entry(name.to_string()).or_default().push(id);
        }
        GhostPaths(m, BTreeMap::new())
    }

    /// Read which namespace has each mount: every `mountpoints-N.img` of
    /// `dir`.
    pub fn read_mounts(&mut self, dir: &Path) -> Result<(), Error> {
        let Ok(list) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let nss: Vec<u32> = list
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_prefix("mountpoints-")?
                    .strip_suffix(".img")?
                    .parse()
                    .ok()
            })
            .collect();
        for ns in nss {
            let mounts: Vec<crust_images::proto::mnt::MntEntry> =
                crate::util::read_image(dir, crust_images::image::ImageType::Mnts, u64::from(ns))?;
            self.1.extend(mounts.iter().map(|m| (m.mnt_id, ns)));
        }
        Ok(())
    }

    /// Where crust finds `path` of a watch on mount `mnt`, when that mount
    /// is in another namespace than the root's (made before the files,
    /// under `view::sub_root`).
    fn away(&self, mnt: Option<u32>, path: &str) -> Option<PathBuf> {
        let ns = self.1.get(&mnt?)?;
        let base = crate::util::view::sub_root(*ns)?;
        Some(crate::util::view::join(&base, Path::new(path)))
    }

    /// The files.img ids of ghosts recreated for a watch whose recorded
    /// path is `path` (`PATH (deleted)`).
    fn of(&self, path: &str) -> &[u32] {
        path.strip_suffix(DELETED)
            .and_then(|p| self.0.get(p))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
}

/// The file a watch is put on: through its handle; else (a stale handle)
/// the recreated ghost of a deleted file, or the recorded path.
fn watch_target(
    id: u32,
    w: &InotifyWdEntry,
    ghosts: &GhostPaths,
    made: &Made<'_>,
) -> Result<OwnedFd, Error> {
    let me = crust_sys::process::getpid();
    let h = &w.f_handle;
    let hb = handle_bytes(&h.handle, h.bytes as usize);
    let e = match open_handle(w.s_dev, h.r#type as i32, &hb) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    let path = h.path.as_deref().unwrap_or("");
    if let Some(fd) = ghosts.of(path).iter().find_map(|g| made.get(*g)) {
        debug!(
            "inotify {id}: watch {} on the recreated ghost of {path}",
            w.wd
        );
        return fd
            .try_clone_to_owned()
            .map_err(sys_err(me, format!("dup of the ghost of {path}")));
    }
    let seen = ghosts.away(h.mnt_id, path).or_else(|| {
        h.path
            .as_deref()
            .and_then(|p| crate::util::view::host_path(Path::new(p)))
    });
    let Some(p) = seen.filter(|p| p.exists()) else {
        return Err(Error::Restore {
            pid: me,
            what: format!(
                "inotify {id}: cannot open the file of watch {} (inode {}, dev {}:{}{}): {e}",
                w.wd,
                w.i_ino,
                kdev(w.s_dev).0,
                kdev(w.s_dev).1,
                h.path
                    .as_deref()
                    .map(|p| format!(", was {p}"))
                    .unwrap_or_default()
            ),
        });
    };
    warn!(
        "inotify {id}: watch {} by its path {}: {e}",
        w.wd,
        p.display()
    );
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&p)
        .map(OwnedFd::from)
        .map_err(|source| Error::FileMissing { path: p, source })
}

/// Add inotify watch `w` to `ifd`, with its recorded number if the kernel
/// can give it (watch numbers are handed out in increasing order: numbers
/// below the one wanted are taken and dropped).
pub(crate) fn add_watch(
    ifd: BorrowedFd<'_>,
    id: u32,
    w: &InotifyWdEntry,
    ghosts: &GhostPaths,
    made: &Made<'_>,
) -> Result<(), Error> {
    let me = crust_sys::process::getpid();
    let target = watch_target(id, w, ghosts, made)?;
    let path = CString::new(format!("/proc/self/fd/{}", target.as_raw_fd())).expect("no NUL");
    let want = w.wd as i32;
    for _ in 0..100_000 {
        let got = ev::inotify_add_watch(ifd, &path, w.mask).map_err(sys_err(
            me,
            format!("inotify_add_watch mask {:#x} for inotify {id}", w.mask),
        ))?;
        if got == want {
            debug!("inotify {id}: watch {want} mask {:#x}", w.mask);
            return Ok(());
        }
        if got > want {
            warn!("inotify {id}: watch {want} came back as {got}");
            return Ok(());
        }
        // Two watches on one inode come back as one number: that is a
        // duplicate the kernel merged, not a number to skip.
        ev::inotify_rm_watch(ifd, got).map_err(sys_err(
            me,
            format!("inotify_rm_watch {got} for inotify {id}"),
        ))?;
    }
    Err(Error::Restore {
        pid: me,
        what: format!("inotify {id}: could not get watch number {want}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fdinfo prints watch numbers in hex (inotify02 has 64 watches).
    #[test]
    fn inotify_watch_numbers_are_hex() {
        let line = "wd:3f ino:10c454 sdev:fe00000 mask:708 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:54c4100017d5ad7f";
        let info = FdInfo {
            other: vec![("inotify".into(), line.into())],
            ..Default::default()
        };
        let w = inotify_watches(1, 4, &info).expect("parses");
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].wd, w[0].i_ino, w[0].mask), (63, 0x10c454, 0x708));
    }

    #[test]
    fn ghosts_by_the_path_of_a_watch() {
        let ghosted = [2, 5].into_iter().collect();
        let regs = [(1, "/a"), (2, "/d/f"), (5, "/d/f"), (6, "/d/g")];
        let g = GhostPaths::new(regs.into_iter(), &ghosted);
        assert_eq!(g.of("/d/f (deleted)"), &[2, 5]);
        assert!(g.of("/d/f").is_empty());
        assert!(g.of("/d/g (deleted)").is_empty());
        assert!(g.of("").is_empty());
    }
}
