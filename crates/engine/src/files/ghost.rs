//! Files deleted while open ("ghost files"), in CRIU's images.
//!
//! Dump: an fd whose link reads `PATH (deleted)` on a regular file is a
//! REG entry of files.img named PATH (the " (deleted)" suffix dropped), plus
//! a `remap-fpath.img` entry `{orig_id, remap_id, GHOST}` and
//! `ghost-file-<remap_id>.img`: one `GhostFileEntry` (owner, mode, dev,
//! ino, times, size) followed by the whole content. One ghost per inode,
//! however many descriptions are open on it. Files larger than the ghost
//! limit (`--ghost-limit`, 1 MiB by default as in CRIU) are refused.
//!
//! Restore: crust writes the content to `PATH.cr.<id>.ghost` next to where
//! the file was, links it at PATH for the time of opening (so the fds name
//! PATH, as before), opens each description with its flags and offset,
//! then unlinks both names. Tasks get the descriptions over SCM_RIGHTS.

use crate::files::classify::Target;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, MadeOf, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::ghost_file::GhostFileEntry;
use crust_images::proto::regfile::RegFileEntry;
use crust_images::proto::remap_file_path::{remap_type, RemapFilePathEntry};
use crust_images::proto::Timeval;
use log::debug;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// CRIU's default `--ghost-limit`: 1 MiB.
pub const DEFAULT_LIMIT: u64 = 1 << 20;

const DELETED: &str = " (deleted)";

/// Is this fd link a regular path whose file was deleted (not a memfd)?
pub fn is_deleted(link: &str) -> bool {
    link.starts_with('/') && link.ends_with(DELETED) && !link.starts_with("/memfd:")
}

// ---------------------------------------------------------------- dump

struct Seen {
    pid: i32,
    fd: i32,
    id: u32,
}

/// Where a deleted file is reached at dump: an fd or a mapping of a task.
struct Source {
    /// /proc/PID/fd/N or /proc/PID/map_files/START-END.
    proc_path: String,
    /// "fd N" or "the mapping START-END", for messages.
    what: String,
    /// The fd, or -1 for a mapping.
    fd: i32,
}

struct Ghost {
    id: u32,
    entry: GhostFileEntry,
    /// The file, opened through /proc/PID/fd/N, copied at write time.
    file: File,
    path: PathBuf,
}

/// Deleted files seen while dumping a tree.
pub struct GhostDump {
    limit: u64,
    /// `--link-remap`: a deleted file with other links is linked back
    /// under a new name instead of copied.
    pub link_remap: bool,
    seen: Vec<Seen>,
    /// By (dev, ino).
    ghosts: BTreeMap<(u64, u64), Ghost>,
    /// Link remaps by (dev, ino): the files.img id of the new name's REG
    /// entry.
    linked: BTreeMap<(u64, u64), u32>,
    /// REG entries of the link remap files, for files.img.
    link_entries: Vec<FileEntry>,
    /// Link remap files made, removed unless the dump is kept.
    links: Vec<PathBuf>,
    keep_links: bool,
    remaps: Vec<RemapFilePathEntry>,
}

impl Default for GhostDump {
    fn default() -> Self {
        GhostDump {
            limit: DEFAULT_LIMIT,
            link_remap: false,
            seen: Vec::new(),
            ghosts: BTreeMap::new(),
            linked: BTreeMap::new(),
            link_entries: Vec::new(),
            links: Vec::new(),
            keep_links: false,
            remaps: Vec::new(),
        }
    }
}

impl Drop for GhostDump {
    fn drop(&mut self) {
        if !self.keep_links {
            for l in &self.links {
                let _ = std::fs::remove_file(l);
            }
        }
    }
}

impl GhostDump {
    /// The REG entries of the link remap files (for files.img); from now
    /// on the link remap files are kept for the restore.
    pub fn take_link_entries(&mut self) -> Vec<FileEntry> {
        self.keep_links = true;
        std::mem::take(&mut self.link_entries)
    }

    /// A deleted file that still has other links: linked back as
    /// `link_remap.<id>` next to where it was (`--link-remap`), recorded
    /// as a LINKED remap whose REG entry (a new files.img id) names it.
    fn link_back(
        &mut self,
        pid: i32,
        from: &Source,
        name: &str,
        md: &std::fs::Metadata,
        next_id: &mut u32,
    ) -> Result<u32, Error> {
        let key = (md.dev(), md.ino());
        if let Some(r) = self.linked.get(&key) {
            return Ok(*r);
        }
        let rid = *next_id;
        *next_id += 1;
        let parent = Path::new(name).parent().unwrap_or(Path::new("/"));
        let link = parent.join(format!("link_remap.{rid}"));
        let src = PathBuf::from(&from.proc_path);
        crust_sys::fs::link_following(&src, &link).map_err(sys_err(
            pid,
            format!(
                "link the deleted file {name} of {} back as {} (--link-remap)",
                from.what,
                link.display()
            ),
        ))?;
        self.links.push(link.clone());
        debug!(
            "{pid}: {}: {name} linked back as {}",
            from.what,
            link.display()
        );
        self.link_entries.push(FileEntry {
            r#type: fd_types::REG,
            id: rid,
            reg: Some(RegFileEntry {
                id: rid,
                flags: libc::O_RDONLY as u32,
                name: link.to_string_lossy().into_owned(),
                size: Some(md.size()),
                mode: Some(md.mode()),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.linked.insert(key, rid);
        Ok(rid)
    }

    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit.unwrap_or(DEFAULT_LIMIT);
    }

    /// The files.img id of the description fd `fd` of `pid` is on, if an
    /// fd seen before (in any process) is on the same one.
    pub fn known(&self, pid: i32, fd: i32) -> Option<u32> {
        self.seen
            .iter()
            .find(|s| crust_sys::process::kcmp_file(s.pid, pid, s.fd, fd).unwrap_or(false))
            .map(|s| s.id)
    }

    /// A new description on a deleted file: its REG entry (id `id`), and a
    /// ghost of the file if its inode is new.
    #[allow(clippy::too_many_arguments)] // one fd and the table's id counter
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        link: &str,
        flags: u32,
        pos: u64,
        id: u32,
        next_id: &mut u32,
    ) -> Result<FileEntry, Error> {
        let src = Source {
            proc_path: format!("/proc/{pid}/fd/{fd}"),
            what: format!("fd {fd}"),
            fd,
        };
        let e = self.add_from(pid, &src, link, flags, pos, id, next_id)?;
        self.seen.push(Seen { pid, fd, id });
        Ok(e)
    }

    /// A deleted file a task maps (`start`-`end`, path `name`): a REG entry
    /// (id `id`) and its ghost, opened at restore for the mapping as for an
    /// fd.
    #[allow(clippy::too_many_arguments)] // one mapping and the table's id counter
    pub fn add_mapped(
        &mut self,
        pid: i32,
        start: u64,
        end: u64,
        name: &str,
        flags: u32,
        id: u32,
        next_id: &mut u32,
    ) -> Result<FileEntry, Error> {
        let src = Source {
            proc_path: format!("/proc/{pid}/map_files/{start:x}-{end:x}"),
            what: format!("the mapping {start:#x}-{end:#x}"),
            fd: -1,
        };
        self.add_from(pid, &src, name, flags, 0, id, next_id)
    }

    #[allow(clippy::too_many_arguments)] // one file and the table's id counter
    fn add_from(
        &mut self,
        pid: i32,
        src: &Source,
        link: &str,
        flags: u32,
        pos: u64,
        id: u32,
        next_id: &mut u32,
    ) -> Result<FileEntry, Error> {
        let (proc_path, what) = (&src.proc_path, &src.what);
        let name = link.strip_suffix(DELETED).unwrap_or(link);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(proc_path)
            .or_else(|_| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(proc_path)
            })
            .map_err(sys_err(
                pid,
                format!("open the deleted file {name} of {what} through {proc_path}"),
            ))?;
        let md = file
            .metadata()
            .map_err(sys_err(pid, format!("stat the deleted file of {what}")))?;
        if !md.file_type().is_file() {
            return Err(Error::unsupported(format!(
                "process {pid} has {what} open on {link}, a deleted file that is not a regular file"
            )));
        }
        if md.nlink() > 0 {
            // Unlinked here but linked elsewhere: CRIU links it back
            // (--link-remap) rather than copying a file others still see.
            if !self.link_remap {
                return Err(Error::unsupported(format!(
                    "process {pid} has {what} open on {name}, deleted from there but still linked elsewhere ({} link(s)); dump with --link-remap to link it back",
                    md.nlink()
                )));
            }
            let rid = self.link_back(pid, src, name, &md, next_id)?;
            self.remaps.push(RemapFilePathEntry {
                orig_id: id,
                remap_id: rid,
                remap_type: Some(remap_type::LINKED),
                ..Default::default()
            });
            return Ok(reg_of(id, flags, pos, name, &md));
        }
        if md.size() > self.limit && src.fd < 0 {
            return Err(Error::unsupported(format!(
                "process {pid} maps the deleted file {name} of {} bytes ({what}), more than the ghost file limit of {} bytes (raise it with --ghost-limit)",
                md.size(),
                self.limit
            )));
        }
        if md.size() > self.limit {
            return Err(Error::GhostTooBig {
                pid,
                fd: src.fd,
                path: PathBuf::from(name),
                size: md.size(),
                limit: self.limit,
            });
        }
        let key = (md.dev(), md.ino());
        let next = self.ghosts.len() as u32 + 1;
        let ghost = self.ghosts.entry(key).or_insert_with(|| Ghost {
            id: next,
            entry: GhostFileEntry {
                uid: md.uid(),
                gid: md.gid(),
                mode: md.mode(),
                dev: Some(kernel_dev(md.dev())),
                ino: Some(md.ino()),
                atim: Some(Timeval {
                    tv_sec: md.atime() as u64,
                    tv_usec: (md.atime_nsec() / 1000) as u64,
                    ..Default::default()
                }),
                mtim: Some(Timeval {
                    tv_sec: md.mtime() as u64,
                    tv_usec: (md.mtime_nsec() / 1000) as u64,
                    ..Default::default()
                }),
                ..Default::default()
            },
            file,
            path: PathBuf::from(name),
        });
        debug!(
            "{pid}: {what} is on the deleted file {name} ({} bytes): ghost {}",
            md.size(),
            ghost.id
        );
        self.remaps.push(RemapFilePathEntry {
            orig_id: id,
            remap_id: ghost.id,
            remap_type: Some(remap_type::GHOST),
            ..Default::default()
        });
        Ok(reg_of(id, flags, pos, name, &md))
    }

    /// Write `remap-fpath.img` and the `ghost-file-N.img` files.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        if self.remaps.is_empty() {
            return Ok(());
        }
        crate::util::write_image(dir, ImageType::RemapFpath, 0, &self.remaps)?;
        for g in self.ghosts.values() {
            let name = ImageType::GhostFile.file_name(g.id as u64);
            let err = |source| Error::Image {
                what: format!("cannot write {name} (ghost of {})", g.path.display()),
                source,
            };
            let mut w = ImageWriter::create(dir, ImageType::GhostFile, &name).map_err(err)?;
            w.write_entry(&g.entry).map_err(err)?;
            let mut f = &g.file;
            f.seek(SeekFrom::Start(0)).map_err(|source| Error::Io {
                op: "cannot rewind the deleted file",
                path: g.path.clone(),
                source,
            })?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|source| Error::Io {
                    op: "cannot read the deleted file",
                    path: g.path.clone(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                w.write_raw(&buf[..n]).map_err(err)?;
            }
            w.finish().map_err(err)?;
        }
        Ok(())
    }
}

/// The files.img REG entry of a description on a deleted file.
fn reg_of(id: u32, flags: u32, pos: u64, name: &str, md: &std::fs::Metadata) -> FileEntry {
    FileEntry {
        r#type: fd_types::REG,
        id,
        reg: Some(RegFileEntry {
            id,
            flags,
            pos,
            fown: FownEntry::default(),
            name: name.to_string(),
            size: Some(md.size()),
            mode: Some(md.mode()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A device number as the kernel encodes it in `new_encode_dev` (what
/// CRIU stores in `dev`).
fn kernel_dev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

// ---------------------------------------------------------------- restore

/// The files.img ids that `remap-fpath.img` says are ghosts (files opened
/// by crust from the ghost images, not from the file system).
pub fn ghosted_ids(dir: &Path) -> Result<HashSet<u32>, Error> {
    // (Link remaps too: their files are opened by crust through the link.)
    Ok(load_remaps(dir)?.iter().map(|r| r.orig_id).collect())
}

fn load_remaps(dir: &Path) -> Result<Vec<RemapFilePathEntry>, Error> {
    match crate::util::read_image(dir, ImageType::RemapFpath, 0) {
        Ok(v) => Ok(v),
        Err(Error::Image { source, .. }) if source.is_missing() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct GhostImage {
    entry: GhostFileEntry,
    /// Image file and offset of the content.
    image: PathBuf,
    data_off: u64,
    size: u64,
}

/// The ghost files of an image set, read and checked.
#[derive(Debug, Default)]
pub struct Ghosts {
    ghosts: BTreeMap<u32, GhostImage>,
    /// files.img id -> (ghost id, REG entry).
    opens: BTreeMap<u32, (u32, RegFileEntry)>,
    /// Link remaps: the link's files.img id -> its path.
    links: BTreeMap<u32, PathBuf>,
    /// files.img id -> (link id, REG entry).
    link_opens: BTreeMap<u32, (u32, RegFileEntry)>,
}

/// Descriptions on ghost files crust opened, by files.img id.
pub type OpenGhosts = crate::files::fdpass::MadeFds;

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
        let files: Vec<FileEntry> = loaded.entries()?.to_vec();
        let regs: HashMap<u32, &RegFileEntry> = files
            .iter()
            .filter(|f| f.r#type == fd_types::REG)
            .filter_map(|f| Some((f.id, f.reg.as_ref()?)))
            .collect();
        for r in remaps {
            match r.remap_type {
                Some(remap_type::GHOST) => {}
                Some(remap_type::LINKED) => {
                    let orig = regs.get(&r.orig_id).ok_or_else(|| {
                        bad(format!(
                            "remap-fpath.img remaps file id {}, which files.img does not have as a regular file",
                            r.orig_id
                        ))
                    })?;
                    let link = regs.get(&r.remap_id).ok_or_else(|| {
                        bad(format!(
                            "remap-fpath.img links file {} back as file {}, which files.img does not have",
                            r.orig_id, r.remap_id
                        ))
                    })?;
                    let path = PathBuf::from(&link.name);
                    // The link is removed once opened: only a name the dump
                    // makes (link_remap.N, as CRIU's), never any file the
                    // image names.
                    if !is_link_remap_name(&path) {
                        return Err(bad(format!(
                            "remap-fpath.img links file {} back through {}, which is not a link_remap.N file",
                            r.orig_id,
                            path.display()
                        )));
                    }
                    let regular = std::fs::symlink_metadata(&path)
                        .map(|m| m.file_type().is_file())
                        .unwrap_or(false);
                    if !regular {
                        return Err(Error::FileMissing {
                            path,
                            source: std::io::Error::from_raw_os_error(libc::ENOENT),
                        });
                    }
                    out.links.insert(r.remap_id, path);
                    out.link_opens
                        .insert(r.orig_id, (r.remap_id, (*orig).clone()));
                    continue;
                }
                t => {
                    return Err(Error::unsupported(format!(
                        "restoring file {} through a remap of type {t:?}",
                        r.orig_id
                    )))
                }
            }
            let reg = regs.get(&r.orig_id).ok_or_else(|| {
                bad(format!(
                    "remap-fpath.img remaps file id {}, which files.img does not have as a regular file",
                    r.orig_id
                ))
            })?;
            if !reg.name.starts_with('/') || reg.name.contains('\0') || reg.name.ends_with('/') {
                return Err(bad(format!(
                    "ghost file {} has the bad path {:?}",
                    r.remap_id, reg.name
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
            let g = &out.ghosts[&r.remap_id];
            if let Some(size) = reg.size {
                if size != g.size {
                    return Err(bad(format!(
                        "ghost file {} holds {} bytes, but file {} ({}) had {size}",
                        r.remap_id, g.size, r.orig_id, reg.name
                    )));
                }
            }
            out.opens.insert(r.orig_id, (r.remap_id, (*reg).clone()));
        }
        Ok(out)
    }

    /// Create every ghost file, open its descriptions, unlink it; open
    /// the descriptions of link remaps and remove the link.
    pub fn open(&self) -> Result<OpenGhosts, Error> {
        let mut out = OpenGhosts::default();
        for (lid, link) in &self.links {
            let regs = users(&self.link_opens, *lid);
            if regs.is_empty() {
                continue;
            }
            open_all(&regs, link, &mut out)?;
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
            let ghost_path = PathBuf::from(format!("{}.cr.{gid:x}.ghost", first.name));
            let result =
                create_ghost(g, &ghost_path).and_then(|_| open_all(&regs, &ghost_path, &mut out));
            let _ = std::fs::remove_file(&ghost_path);
            result?;
            debug!(
                "ghost {gid}: {} ({} bytes) opened for {} file(s)",
                first.name,
                g.size,
                regs.len()
            );
        }
        Ok(out)
    }
}

/// A link remap's name as the dump makes it: `link_remap.<number>`.
fn is_link_remap_name(p: &Path) -> bool {
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

/// Open every description of `regs` on the file at `source`: through the
/// original name when it is free (linked there for the time of the
/// opens), so the fds show it (with " (deleted)") as before the dump.
fn open_all(
    regs: &[(u32, &RegFileEntry)],
    source: &Path,
    out: &mut OpenGhosts,
) -> Result<(), Error> {
    let me = crust_sys::process::getpid();
    let Some((_, first)) = regs.first() else {
        return Ok(());
    };
    let orig = PathBuf::from(&first.name);
    let linked = std::fs::hard_link(source, &orig).is_ok();
    let via = if linked { &orig } else { source };
    let opened = (|| {
        for (id, reg) in regs {
            let f = open_desc(via, reg).map_err(sys_err(
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
        let _ = std::fs::remove_file(&orig);
    }
    opened
}

fn load_ghost(dir: &Path, gid: u32) -> Result<GhostImage, Error> {
    let name = ImageType::GhostFile.file_name(gid as u64);
    let err = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let mut r = ImageReader::open_typed(dir, ImageType::GhostFile, &name).map_err(err)?;
    let entry: GhostFileEntry = r
        .read_entry()
        .map_err(err)?
        .ok_or_else(|| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("{name} has no ghost_file_entry"),
        })?;
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("{name}: {why}"),
    };
    if entry.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::unsupported(format!(
            "{name}: restoring a deleted file of mode {:o} (only regular files)",
            entry.mode
        )));
    }
    if entry.chunks == Some(true) {
        return Err(Error::unsupported(format!(
            "{name}: ghost contents stored in chunks"
        )));
    }
    let data_off = r.offset();
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
    Ok(GhostImage {
        entry,
        image,
        data_off,
        size: total - data_off,
    })
}

/// Write the ghost's content into a new file at `path`, with its owner,
/// mode and times.
fn create_ghost(g: &GhostImage, path: &Path) -> Result<(), Error> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let mut src = crate::util::open_image_data(&g.image)?;
    src.seek(SeekFrom::Start(g.data_off))
        .map_err(io("cannot seek in", &g.image))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io("cannot create the ghost file", path))?;
    let copied = (|| {
        let n = std::io::copy(&mut (&mut src).take(g.size), &mut dst)
            .map_err(io("cannot fill the ghost file", path))?;
        if n != g.size {
            return Err(Error::BadImage {
                dir: g.image.parent().unwrap_or(Path::new("")).to_path_buf(),
                why: format!("{} is shorter than it was", g.image.display()),
            });
        }
        dst.flush()
            .map_err(io("cannot write the ghost file", path))?;
        std::os::unix::fs::fchown(&dst, Some(g.entry.uid), Some(g.entry.gid))
            .map_err(io("cannot chown the ghost file", path))?;
        use std::os::unix::fs::PermissionsExt;
        dst.set_permissions(std::fs::Permissions::from_mode(g.entry.mode & 0o7777))
            .map_err(io("cannot chmod the ghost file", path))?;
        let t = |tv: &Option<Timeval>| {
            tv.as_ref().map(|t| {
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(t.tv_sec, (t.tv_usec.min(999_999) * 1000) as u32)
            })
        };
        let mut times = std::fs::FileTimes::new();
        if let Some(a) = t(&g.entry.atim) {
            times = times.set_accessed(a);
        }
        if let Some(m) = t(&g.entry.mtim) {
            times = times.set_modified(m);
        }
        let _ = dst.set_times(times);
        Ok(())
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(path);
    }
    copied
}

/// Open one description with the recorded flags and offset.
fn open_desc(path: &Path, reg: &RegFileEntry) -> std::io::Result<OwnedFd> {
    let acc = reg.flags as i32 & libc::O_ACCMODE;
    let flags = crate::files::reopen_flags(reg.flags) as i32
        & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
    let mut f = OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(flags | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    if reg.pos != 0 {
        f.seek(SeekFrom::Start(reg.pos))?;
    }
    Ok(OwnedFd::from(f))
}

// ------------------------------------------------------------ kind of file

/// Ghost files as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(Ghosts::load(ctx.dir, ctx.files)?))
}

impl RestoreKind for Ghosts {
    fn name(&self) -> &'static str {
        "ghost files"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(MadeOf {
            fds: self.open()?,
            what: "ghost file",
            types: &[],
        }))
    }
}

impl DumpKind for GhostDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Path || !is_deleted(f.target) {
            return Ok(None);
        }
        let (pid, fd, flags) = (f.pid, f.fd, f.flags());
        let known = self.known(pid, fd);
        let id = ids.id_for(known, |ids, id| {
            self.add(pid, fd, f.target, flags, f.info.pos, id, ids.next_id)
                .map(Some)
        })?;
        Ok(Some((id, fd_types::REG)))
    }

    /// The REG entries of the links made back (`--link-remap`).
    fn late_entries(&mut self, _next_id: &mut u32) -> Result<Vec<FileEntry>, Error> {
        Ok(self.take_link_entries())
    }

    fn write_images(&mut self, dir: &Path) -> Result<(), Error> {
        self.write(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_link_remap_names_are_removed() {
        assert!(is_link_remap_name(Path::new("/tmp/d/link_remap.12")));
        assert!(!is_link_remap_name(Path::new("/etc/passwd")));
        assert!(!is_link_remap_name(Path::new("/tmp/link_remap.")));
        assert!(!is_link_remap_name(Path::new("/tmp/link_remap.1x")));
        assert!(!is_link_remap_name(Path::new("link_remap.1")));
    }
}
