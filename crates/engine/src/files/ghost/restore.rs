//! Ghost files at restore: `remap-fpath.img` and the ghost images read and
//! checked, each ghost made again on the file system for the time of
//! opening its descriptions, then removed.

use crate::files::fdpass::MadeFds;
use crate::util::sys_err;
use crate::Error;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::fdinfo::fd_types;
use crust_images::proto::ghost_file::{GhostChunkEntry, GhostFileEntry};
use crust_images::proto::regfile::RegFileEntry;
use crust_images::proto::remap_file_path::{remap_type, RemapFilePathEntry};
use crust_images::proto::Timeval;
use crust_images::Message;
use log::debug;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files.img ids that `remap-fpath.img` says are ghosts (files opened
/// by crust from the ghost images, not from the file system).
pub fn ghosted_ids(dir: &Path) -> Result<HashSet<u32>, Error> {
    // (Link remaps too: their files are opened by crust through the link.)
    // Not /proc files of dead processes: opened by their path while a
    // helper holds the pid.
    Ok(load_remaps(dir)?
        .iter()
        .filter(|r| r.remap_type != Some(remap_type::PROCFS))
        .map(|r| r.orig_id)
        .collect())
}

/// The pids of dead processes whose /proc files the tree had open
/// (CRIU's PROCFS remaps): the restore makes a helper task of each pid
/// while files are opened, so that `/proc/N` resolves, then reaps it.
pub fn dead_proc_pids(dir: &Path) -> Result<Vec<u32>, Error> {
    let mut pids: Vec<u32> = load_remaps(dir)?
        .iter()
        .filter(|r| r.remap_type == Some(remap_type::PROCFS))
        .map(|r| r.remap_id)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn load_remaps(dir: &Path) -> Result<Vec<RemapFilePathEntry>, Error> {
    match crate::util::read_image(dir, ImageType::RemapFpath, 0) {
        Ok(v) => Ok(v),
        Err(Error::Image { source, .. }) if source.is_missing() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Where a regular ghost's bytes are in its image.
#[derive(Debug)]
enum Content {
    /// Not a regular file.
    None,
    /// Everything from `off` to the end of the image.
    Whole { off: u64 },
    /// Runs of data: (offset in the file, length, offset in the image);
    /// the rest is holes up to the size.
    Chunks(Vec<(u64, u64, u64)>),
}

#[derive(Debug)]
struct GhostImage {
    entry: GhostFileEntry,
    image: PathBuf,
    content: Content,
    /// The file's size (regular files).
    size: u64,
}

/// The ghost files of an image set, read and checked.
#[derive(Debug, Default)]
pub struct Ghosts {
    ghosts: BTreeMap<u32, GhostImage>,
    /// files.img id -> (ghost id, REG entry).
    opens: BTreeMap<u32, (u32, RegFileEntry)>,
    /// Link remaps: the link's files.img id -> its REG entry (path, mount).
    links: BTreeMap<u32, RegFileEntry>,
    /// files.img id -> (link id, REG entry).
    link_opens: BTreeMap<u32, (u32, RegFileEntry)>,
    /// The tree's mounts, when ghosts were open on mounts of several
    /// namespaces (`mounts.rs`).
    mounts: super::mounts::TreeMounts,
}

/// Descriptions on ghost files crust opened, by files.img id.
pub type OpenGhosts = MadeFds;

impl Ghosts {
    /// Read `remap-fpath.img` and every ghost it names; check them against
    /// files.img.
    pub fn load(dir: &Path, loaded: &crate::files::loaded::LoadedFiles) -> Result<Ghosts, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let remaps = load_remaps(dir)?;
        let mut out = Ghosts::default();
        if remaps.is_empty() {
            return Ok(out);
        }
        // Borrowed, not a copy of files.img (thousands of entries in a big
        // tree).
        let regs: HashMap<u32, &RegFileEntry> = loaded
            .entries()?
            .iter()
            .filter(|f| f.r#type == fd_types::REG)
            .filter_map(|f| Some((f.id, f.reg.as_deref()?)))
            .collect();
        for r in remaps {
            let orig = regs.get(&r.orig_id).ok_or_else(|| {
                bad(format!(
                    "remap-fpath.img remaps file id {}, which files.img does not have as a regular file",
                    r.orig_id
                ))
            })?;
            match r.remap_type {
                Some(remap_type::GHOST) => {}
                // Opened by path; see dead_proc_pids.
                Some(remap_type::PROCFS) => continue,
                Some(remap_type::LINKED) => {
                    out.load_link(dir, &r, orig, &regs)?;
                    continue;
                }
                t => {
                    return Err(Error::unsupported(format!(
                        "restoring file {} through a remap of type {t:?}",
                        r.orig_id
                    )))
                }
            }
            if !orig.name.starts_with('/') || orig.name.contains('\0') || orig.name.ends_with('/') {
                return Err(bad(format!(
                    "ghost file {} has the bad path {:?}",
                    r.remap_id, orig.name
                )));
            }
            if out.opens.contains_key(&r.orig_id) {
                return Err(bad(format!(
                    "remap-fpath.img remaps file id {} twice",
                    r.orig_id
                )));
            }
            if let std::collections::btree_map::Entry::Vacant(v) = out.ghosts.entry(r.remap_id) {
                v.insert(load_ghost(dir, r.remap_id)?);
            }
            let g = out
                .ghosts
                .get(&r.remap_id)
                .ok_or_else(|| bad(format!("ghost file {} could not be read", r.remap_id)))?;
            let regular = g.entry.mode & libc::S_IFMT == libc::S_IFREG;
            if let (Some(size), true) = (orig.size, regular) {
                if size != g.size {
                    return Err(bad(format!(
                        "ghost file {} holds {} bytes, but file {} ({}) had {size}",
                        r.remap_id, g.size, r.orig_id, orig.name
                    )));
                }
            }
            out.opens.insert(r.orig_id, (r.remap_id, (*orig).clone()));
        }
        let mounted =
            |m: &BTreeMap<u32, (u32, RegFileEntry)>| m.values().any(|(_, r)| r.mnt_id.is_some());
        if mounted(&out.opens) || mounted(&out.link_opens) {
            out.mounts = super::mounts::TreeMounts::load(dir)?;
        }
        Ok(out)
    }

    /// A LINKED remap: file `r.orig_id` is opened through the link the
    /// dump made (file `r.remap_id`).
    fn load_link(
        &mut self,
        dir: &Path,
        r: &RemapFilePathEntry,
        orig: &RegFileEntry,
        regs: &HashMap<u32, &RegFileEntry>,
    ) -> Result<(), Error> {
        let link = regs.get(&r.remap_id).ok_or_else(|| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!(
                "remap-fpath.img links file {} back as file {}, which files.img does not have",
                r.orig_id, r.remap_id
            ),
        })?;
        let path = PathBuf::from(&link.name);
        // The link is removed once opened: only a name the dump makes
        // (link_remap.N, as CRIU's), never any file the image names.
        if !is_link_remap_name(&path) {
            return Err(Error::BadImage {
                dir: dir.to_path_buf(),
                why: format!(
                    "remap-fpath.img links file {} back through {}, which is not a link_remap.N file",
                    r.orig_id,
                    path.display()
                ),
            });
        }
        // Checked where crust sees it (under a mount made afresh at
        // restore: not yet, and the open tells).
        let seen = crate::util::view::host_path(&path);
        let regular = seen.as_ref().is_none_or(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.file_type().is_file())
                .unwrap_or(false)
        });
        if !regular {
            return Err(Error::FileMissing {
                path,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        self.links.insert(r.remap_id, (*link).clone());
        self.link_opens
            .insert(r.orig_id, (r.remap_id, orig.clone()));
        Ok(())
    }

    /// Make every ghost again, open its descriptions, remove it; open
    /// the descriptions of link remaps and remove the link.
    pub fn open(&self) -> Result<OpenGhosts, Error> {
        let mut out = OpenGhosts::default();
        for (lid, link) in &self.links {
            let regs = users(&self.link_opens, *lid);
            if regs.is_empty() {
                continue;
            }
            let Some((_, first)) = regs.first() else {
                continue;
            };
            // Each on its own mount: in another mount namespace of the
            // tree when it was open on a mount of one.
            let at = |r: &RegFileEntry| {
                self.mounts
                    .away_path(r)
                    .unwrap_or_else(|| seen(Path::new(&r.name)))
            };
            let orig = at(first);
            let link = &at(link);
            open_linked(&regs, link, &orig, &mut out)?;
            let _ = std::fs::remove_file(link);
            debug!(
                "link remap {}: {} file(s) opened",
                link.display(),
                regs.len()
            );
        }
        for (gid, g) in &self.ghosts {
            let regs = users(&self.opens, *gid);
            let Some((_, first)) = regs.first() else {
                continue;
            };
            let first_at = self
                .mounts
                .away_path(first)
                .unwrap_or_else(|| seen(Path::new(&first.name)));
            let made = make_node(g, &first_at, *gid)?;
            // Holders on a mount of another namespace than the ghost's
            // are opened there, on their own mount.
            let (away, here): (Vec<_>, Vec<_>) = regs
                .iter()
                .partition(|(_, r)| r.mnt_id != first.mnt_id && self.mounts.away_path(r).is_some());
            let result = open_all(g, &here, &made.path, &mut out)
                .and_then(|()| self.open_away(first, &away, &mut out));
            made.remove(g);
            result?;
            debug!(
                "ghost {gid}: {} (mode {:o}, {} bytes) made at {} and opened for {} file(s)",
                first.name,
                g.entry.mode,
                g.size,
                made.path.display(),
                regs.len()
            );
        }
        Ok(out)
    }
}

impl Ghosts {
    /// Open the descriptions `away` of the ghost made for `first` on their
    /// own mounts, in other mount namespaces of the tree (`mounts.rs`).
    fn open_away(
        &self,
        first: &RegFileEntry,
        away: &[(u32, &RegFileEntry)],
        out: &mut OpenGhosts,
    ) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        for (id, reg) in away {
            let Some(at) = self.mounts.away_path(reg) else {
                continue;
            };
            let link = self.mounts.link_for(first, reg, seen);
            if let Some((from, to)) = &link {
                crate::util::idmap::as_ns_root(|| std::fs::hard_link(from, to)).map_err(
                    sys_err(
                        me,
                        format!(
                            "link the ghost of {} as {} for file {id} (on a mount of another namespace)",
                            first.name, reg.name
                        ),
                    ),
                )?;
            }
            let opened = open_desc(&at, reg, 0);
            if let Some((_, to)) = &link {
                let _ = std::fs::remove_file(to);
            }
            let f = opened.map_err(sys_err(
                me,
                format!(
                    "open {} (a ghost, on a mount of another namespace) for file {id}",
                    reg.name
                ),
            ))?;
            debug!(
                "ghost of {}: file {id} opened as {} on its own mount",
                first.name, reg.name
            );
            out.insert(*id, f);
        }
        Ok(())
    }
}

/// Where crust reaches the tree's path `p`: through the restored root when
/// the tree has a mount namespace of its own (the ghost is made, and the
/// link remap opened, in the tree's file system, where its fds show it).
fn seen(p: &Path) -> PathBuf {
    crate::util::view::host_path(p).unwrap_or_else(|| p.to_path_buf())
}

/// A link remap's name as the dump makes it: `link_remap.<number>`.
pub(super) fn is_link_remap_name(p: &Path) -> bool {
    p.is_absolute()
        && p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("link_remap."))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The files.img ids (and REG entries) opened on source `src`.
fn users(opens: &BTreeMap<u32, (u32, RegFileEntry)>, src: u32) -> Vec<(u32, &RegFileEntry)> {
    opens
        .iter()
        .filter(|(_, (x, _))| *x == src)
        .map(|(id, (_, reg))| (*id, reg))
        .collect()
}

/// Open every description of `regs` on the linked-back file at `source`:
/// through the original name when it is free (linked there for the time
/// of the opens), so the fds show it (with " (deleted)") as before.
fn open_linked(
    regs: &[(u32, &RegFileEntry)],
    source: &Path,
    orig: &Path,
    out: &mut OpenGhosts,
) -> Result<(), Error> {
    let me = crust_sys::process::getpid();
    // As the tree's user namespace's root (see `as_ns_root`).
    let linked = crate::util::idmap::as_ns_root(|| std::fs::hard_link(source, orig)).is_ok();
    let via = if linked { orig } else { source };
    let opened = (|| {
        for (id, reg) in regs {
            let f = open_desc(via, reg, 0).map_err(sys_err(
                me,
                format!(
                    "open {} (from {}) for file {id}",
                    reg.name,
                    source.display()
                ),
            ))?;
            out.insert(*id, f);
        }
        Ok::<(), Error>(())
    })();
    if linked {
        let _ = std::fs::remove_file(orig);
    }
    opened
}

/// Open every description of `regs` on the ghost made at `path`.
fn open_all(
    g: &GhostImage,
    regs: &[(u32, &RegFileEntry)],
    path: &Path,
    out: &mut OpenGhosts,
) -> Result<(), Error> {
    let me = crust_sys::process::getpid();
    let fifo = g.entry.mode & libc::S_IFMT == libc::S_IFIFO;
    // A FIFO is held open both ways while its descriptions are opened
    // (without waiting for a peer); the pipes kind sets their flags.
    let _holder = if fifo {
        Some(
            open_desc(path, &rw_reg(), libc::O_NONBLOCK)
                .map_err(sys_err(me, format!("open the FIFO {}", path.display())))?,
        )
    } else {
        None
    };
    let extra = if fifo { libc::O_NONBLOCK } else { 0 };
    for (id, reg) in regs {
        let f = open_desc(path, reg, extra).map_err(sys_err(
            me,
            format!(
                "open {} (made at {}) for file {id}",
                reg.name,
                path.display()
            ),
        ))?;
        out.insert(*id, f);
    }
    Ok(())
}

/// A REG entry opening read-write.
fn rw_reg() -> RegFileEntry {
    RegFileEntry {
        flags: libc::O_RDWR as u32,
        ..Default::default()
    }
}

/// Open one description with the recorded flags (and `extra`) and offset.
fn open_desc(path: &Path, reg: &RegFileEntry, extra: i32) -> std::io::Result<OwnedFd> {
    let acc = reg.flags as i32 & libc::O_ACCMODE;
    let flags = crate::files::reopen_flags(reg.flags) as i32
        & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
    let mut f = OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(flags | extra | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    if reg.pos != 0 {
        f.seek(SeekFrom::Start(reg.pos))?;
    }
    Ok(OwnedFd::from(f))
}

/// Read ghost image `gid`: its entry, and where its content is.
fn load_ghost(dir: &Path, gid: u32) -> Result<GhostImage, Error> {
    let name = ImageType::GhostFile.file_name(gid as u64);
    let err = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("{name}: {why}"),
    };
    let mut r = ImageReader::open_typed(dir, ImageType::GhostFile, &name).map_err(err)?;
    let entry: GhostFileEntry = r
        .read_entry()
        .map_err(err)?
        .ok_or_else(|| bad("it has no ghost_file_entry".into()))?;
    let data_off = r.offset();
    drop(r);
    let image = dir.join(&name);
    let total = std::fs::metadata(&image)
        .map_err(|source| Error::Io {
            op: "cannot stat",
            path: image.clone(),
            source,
        })?
        .len();
    if total < data_off {
        return Err(bad("shorter than its header".into()));
    }
    let fmt = entry.mode & libc::S_IFMT;
    let (content, size) = match fmt {
        libc::S_IFREG if entry.chunks == Some(true) => {
            let size = entry
                .size
                .ok_or_else(|| bad("its content is in chunks but it has no size".into()))?;
            let chunks = read_chunks(&image, data_off, total, size).map_err(bad)?;
            (Content::Chunks(chunks), size)
        }
        libc::S_IFREG => (Content::Whole { off: data_off }, total - data_off),
        libc::S_IFIFO | libc::S_IFDIR => (Content::None, 0),
        libc::S_IFCHR | libc::S_IFBLK if entry.rdev.is_some() => (Content::None, 0),
        libc::S_IFCHR | libc::S_IFBLK => return Err(bad("a device without rdev".into())),
        libc::S_IFLNK => match &entry.symlnk_target {
            Some(t) if !t.is_empty() && !t.contains('\0') => (Content::None, 0),
            _ => return Err(bad("a symlink without a target".into())),
        },
        _ => {
            return Err(Error::unsupported(format!(
                "{name}: restoring a deleted file of mode {:o}",
                entry.mode
            )))
        }
    };
    Ok(GhostImage {
        entry,
        image,
        content,
        size,
    })
}

/// The chunks of a ghost image (after the ghost entry at `from`, up to
/// `total`): each within the image and within the file's `size`, in
/// order and apart.
fn read_chunks(
    image: &Path,
    from: u64,
    total: u64,
    size: u64,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let mut f = crate::util::open_image_data(image).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut at = from;
    let mut file_end = 0u64;
    while at < total {
        let mut len4 = [0u8; 4];
        f.read_exact(&mut len4)
            .map_err(|e| format!("a chunk header at {at}: {e}"))?;
        let n = u32::from_le_bytes(len4) as u64;
        if n > 64 || at + 4 + n > total {
            return Err(format!("a bad chunk header at {at}"));
        }
        let mut msg = vec![0u8; n as usize];
        f.read_exact(&mut msg)
            .map_err(|e| format!("a chunk header at {at}: {e}"))?;
        let c = GhostChunkEntry::decode(&msg).map_err(|e| format!("chunk at {at}: {e}"))?;
        let data = at + 4 + n;
        let end = c.off.checked_add(c.len);
        if c.off < file_end || end.is_none_or(|e| e > size) || data + c.len > total {
            return Err(format!(
                "the chunk at {at} ({} bytes at {}) is out of order or out of bounds",
                c.len, c.off
            ));
        }
        out.push((c.off, c.len, data));
        file_end = c.off + c.len;
        at = data + c.len;
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A ghost made on the file system, and what was made for it.
struct MadeNode {
    path: PathBuf,
    /// Directories made for it (its parents were gone), deepest last.
    parents: Vec<PathBuf>,
    /// On a read-only mount: made, and removed, through a writable copy
    /// of the mount (kept open until then) at this path.
    rw: Option<(std::os::fd::OwnedFd, PathBuf)>,
}

impl MadeNode {
    /// Remove the ghost and the directories made for it.
    fn remove(&self, g: &GhostImage) {
        let at = self.rw.as_ref().map_or(&self.path, |(_, p)| p);
        let _ = if g.entry.mode & libc::S_IFMT == libc::S_IFDIR {
            std::fs::remove_dir(at)
        } else {
            std::fs::remove_file(at)
        };
        for p in self.parents.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Make ghost `gid` at `orig` (its old path) if that is free, else at
/// `orig.cr.<gid>.ghost`; missing parent directories are made (and
/// removed with it).
fn make_node(g: &GhostImage, orig: &Path, gid: u32) -> Result<MadeNode, Error> {
    let alt = PathBuf::from(format!("{}.cr.{gid:x}.ghost", orig.display()));
    let mut parents = Vec::new();
    if let Some(dir) = orig.parent() {
        make_parents(dir, &mut parents)?;
    }
    let made = MadeNode {
        path: orig.to_path_buf(),
        parents,
        rw: None,
    };
    let first = create(g, orig);
    let made = match first {
        Ok(()) => made,
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            let rw = make_on_readonly(g, orig).map_err(|e| node_err(orig, e))?;
            MadeNode {
                rw: Some(rw),
                ..made
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let m = MadeNode {
                path: alt.clone(),
                parents: made.parents,
                rw: None,
            };
            if let Err(e) = create(g, &alt) {
                m.remove_parents();
                return Err(node_err(&alt, e));
            }
            m
        }
        Err(e) => {
            made.remove_parents();
            return Err(node_err(orig, e));
        }
    };
    let at = made.rw.as_ref().map_or(&made.path, |(_, p)| p).clone();
    if let Err(e) = apply_metadata(g, &at) {
        made.remove(g);
        return Err(node_err(&made.path, e));
    }
    Ok(made)
}

impl MadeNode {
    fn remove_parents(&self) {
        for p in self.parents.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Make ghost `g` at `orig` (`/proc/ROOT/root/...`, the tree's path seen
/// through its root) on a read-only mount of the tree's mount namespace:
/// through a writable copy of that mount rooted at its directory, made by
/// a thread that joined the namespace (open_tree clones only a mount of
/// the caller's namespace). Returns the copy and the ghost's path in it.
fn make_on_readonly(
    g: &GhostImage,
    orig: &Path,
) -> std::io::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let not_here = || std::io::Error::from_raw_os_error(libc::EROFS);
    let root = crate::util::view::ns_pid().ok_or_else(not_here)?;
    let inside = orig
        .strip_prefix(format!("/proc/{root}/root"))
        .map_err(|_| not_here())?;
    let (dir, name) = match (inside.parent(), orig.file_name()) {
        (Some(d), Some(n)) => (Path::new("/").join(d), n.to_os_string()),
        _ => return Err(not_here()),
    };
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let ns = std::fs::File::open(format!("/proc/{root}/ns/mnt"))?;
    let copy = std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsFd;
            crust_sys::ns::unshare(libc::CLONE_FS)?;
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNS)?;
            crust_sys::mount_group::writable_clone(&cdir)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a crust thread panicked")))
    })?;
    let at = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&copy)
    ))
    .join(name);
    create(g, &at)?;
    Ok((copy, at))
}

fn node_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op: "cannot make the deleted file again at",
        path: path.to_path_buf(),
        source,
    }
}

/// Make the missing directories of `dir` (recorded in `made`, outermost
/// first), owned by root, 0700, as places for a ghost.
fn make_parents(dir: &Path, made: &mut Vec<PathBuf>) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut d = dir;
    while std::fs::symlink_metadata(d).is_err() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for m in missing.into_iter().rev() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&m)
            .map_err(|source| Error::Io {
                op: "cannot make a directory for a deleted file at",
                path: m.clone(),
                source,
            })?;
        made.push(m);
    }
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// Create the ghost's node at `path` (never over an existing name).
fn create(g: &GhostImage, path: &Path) -> std::io::Result<()> {
    let perm = g.entry.mode & 0o7777;
    match g.entry.mode & libc::S_IFMT {
        libc::S_IFREG => {
            let dst = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)?;
            let filled = fill(g, &dst);
            if filled.is_err() {
                let _ = std::fs::remove_file(path);
            }
            filled
        }
        libc::S_IFDIR => std::fs::DirBuilder::new().mode(0o700).create(path),
        libc::S_IFLNK => {
            let target = g.entry.symlnk_target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(target, path)
        }
        fmt => {
            let rdev = g.entry.rdev.unwrap_or(0) as u64;
            crust_sys::fs::mknod(path, fmt | (perm & 0o600), rdev)
        }
    }
}

/// Write a regular ghost's content into `dst`: whole, or its chunks at
/// their offsets, the rest holes up to its size.
fn fill(g: &GhostImage, dst: &File) -> std::io::Result<()> {
    let mut src =
        crate::util::open_image_data(&g.image).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut dst = dst;
    match &g.content {
        Content::None => Ok(()),
        Content::Whole { off } => {
            src.seek(SeekFrom::Start(*off))?;
            let n = std::io::copy(&mut (&mut src).take(g.size), &mut dst)?;
            short(n, g.size)
        }
        Content::Chunks(chunks) => {
            dst.set_len(g.size)?;
            for (off, len, at) in chunks {
                src.seek(SeekFrom::Start(*at))?;
                dst.seek(SeekFrom::Start(*off))?;
                let n = std::io::copy(&mut (&mut src).take(*len), &mut dst)?;
                short(n, *len)?;
            }
            Ok(())
        }
    }
}

fn short(got: u64, want: u64) -> std::io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the ghost image is {} bytes short", want - got),
        ))
    }
}

/// The ghost's owner, mode and times.
fn apply_metadata(g: &GhostImage, path: &Path) -> std::io::Result<()> {
    let e = &g.entry;
    std::os::unix::fs::lchown(
        path,
        Some(crate::util::idmap::to_host_uid(e.uid)),
        Some(crate::util::idmap::to_host_gid(e.gid)),
    )?;
    if e.mode & libc::S_IFMT != libc::S_IFLNK {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    }
    let tv = |t: &Option<Timeval>| {
        t.as_ref()
            .map(|t| (t.tv_sec as i64, t.tv_usec.min(999_999) as i64))
    };
    if let (Some(a), Some(m)) = (tv(&e.atim), tv(&e.mtim)) {
        let _ = crust_sys::fs::set_times_nofollow(path, a, m);
    }
    Ok(())
}
