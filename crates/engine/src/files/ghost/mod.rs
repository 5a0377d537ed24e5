//! Files deleted while open ("ghost files"), in CRIU's images.
//!
//! Dump: an fd (or a cwd, or a mapping) whose link reads `PATH (deleted)`
//! is a REG entry of files.img named PATH (the " (deleted)" suffix
//! dropped), plus a `remap-fpath.img` entry `{orig_id, remap_id, GHOST}`
//! and `ghost-file-<remap_id>.img`: one `GhostFileEntry` (owner, mode,
//! dev, ino, times; `rdev` of a device, `symlnk_target` of a symlink).
//! A regular file's content follows it: whole, or, from 12 KiB on (as
//! CRIU), as `chunks` (`size` set): a `GhostChunkEntry {len, off}` and its
//! bytes for each run of data, holes left out. One ghost per inode,
//! however many descriptions are open on it. Regular files taking more
//! than the ghost limit on disk (`--ghost-limit`, 1 MiB by default as in
//! CRIU; allocated blocks are counted, as CRIU does) are refused. A
//! deleted FIFO is a ghost too: this kind records its REG entry and
//! leaves it in [`DumpFd::path_reg`] for the pipes kind, which records the
//! FIFO itself.
//!
//! Restore (`restore.rs`): crust makes each ghost again (a file with its
//! data and holes, a FIFO or device node, a directory, a symlink) at its
//! old path when that is free (else at `PATH.cr.<id>.ghost`), opens each
//! description with its flags and offset, then removes it. Tasks get the
//! descriptions over SCM_RIGHTS.

mod mounts;
mod restore;

use crate::files::classify::Target;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, MadeOf, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::ghost_file::{GhostChunkEntry, GhostFileEntry};
use crust_images::proto::regfile::RegFileEntry;
use crust_images::proto::remap_file_path::{remap_type, RemapFilePathEntry};
use crust_images::proto::Timeval;
use log::debug;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// CRIU's default `--ghost-limit`: 1 MiB.
pub const DEFAULT_LIMIT: u64 = 1 << 20;

const DELETED: &str = " (deleted)";

/// Regular ghost files from this size on are stored in chunks (CRIU's
/// threshold: smaller ones are stored whole).
const CHUNKS_FROM: u64 = 3 * 4096;

/// The unit of `st_blocks`.
const BLOCK: u64 = 512;

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
    /// The fd, or -1 for a mapping or a working directory.
    fd: i32,
}

struct Ghost {
    id: u32,
    entry: GhostFileEntry,
    /// A regular file, opened through /proc, copied at write time.
    file: Option<File>,
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
    /// Link remaps by (dev, ino, mount id): the files.img id of the new
    /// name's REG entry.
    linked: BTreeMap<(u64, u64, i32), u32>,
    /// The mount id (fdinfo) of the fd being added, 0 if none.
    cur_mnt: i32,
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
            cur_mnt: 0,
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
        // One link per mount: an fd on another mount of the file (a
        // bind, in another mount namespace) is opened at restore through
        // a link on its own mount.
        let key = (md.dev(), md.ino(), self.cur_mnt);
        if let Some(r) = self.linked.get(&key) {
            return Ok(*r);
        }
        let base = link_base(pid, self.cur_mnt);
        let rid = *next_id;
        *next_id += 1;
        let src = PathBuf::from(&from.proc_path);
        // Next to where it was; in the nearest ancestor directory that
        // still exists when its own went too (as CRIU does).
        let mut parent = Path::new(name).parent().unwrap_or(Path::new("/"));
        let (link, seen) = loop {
            let link = parent.join(format!("link_remap.{rid}"));
            // Made where crust sees the tree's path (through the root's
            // root when the tree has a mount namespace of its own).
            let seen = match &base {
                Some(b) => crate::util::view::join(b, &link),
                None => crate::util::view::host_path(&link).unwrap_or_else(|| link.clone()),
            };
            // As the namespace's root when the tree has a user namespace
            // of its own: a file system it mounted refuses names made by
            // ids it cannot map (EOVERFLOW).
            let linked =
                crate::util::idmap::as_ns_root(|| crust_sys::fs::link_following(&src, &seen));
            let err = match linked {
                Ok(()) => break (link, seen),
                Err(e) => e,
            };
            match parent.parent() {
                Some(up) if err.raw_os_error() == Some(libc::ENOENT) => parent = up,
                _ => {
                    return Err(sys_err(
                        pid,
                        format!(
                            "link the deleted file {name} of {} back as {} (--link-remap)",
                            from.what,
                            link.display()
                        ),
                    )(err))
                }
            }
        };
        self.links.push(seen);
        debug!(
            "{pid}: {}: {name} linked back as {}",
            from.what,
            link.display()
        );
        self.link_entries.push(FileEntry {
            r#type: fd_types::REG,
            id: rid,
            reg: Some(Box::new(RegFileEntry {
                id: rid,
                flags: libc::O_RDONLY as u32,
                name: link.to_string_lossy().into_owned(),
                size: Some(md.size()),
                mode: Some(md.mode()),
                mnt_id: crate::files::classify::mnt_id_of(pid, self.cur_mnt),
                ..Default::default()
            })),
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

    /// A deleted directory a process works in (`which`: "cwd" or "root",
    /// whose /proc link reads `link`): its REG entry (id `id`) and ghost.
    pub fn add_dir(
        &mut self,
        pid: i32,
        which: &str,
        link: &str,
        id: u32,
        next_id: &mut u32,
    ) -> Result<FileEntry, Error> {
        let src = Source {
            proc_path: format!("/proc/{pid}/{which}"),
            what: format!("its {which}"),
            fd: -1,
        };
        let flags = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;
        self.add_from(pid, &src, link, flags, 0, id, next_id)
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
        // stat, not open: opening a FIFO could wait for a writer forever.
        let md = std::fs::metadata(proc_path).map_err(sys_err(
            pid,
            format!("stat the deleted file {name} of {what} through {proc_path}"),
        ))?;
        if let Some(dead) = dead_proc_pid(pid, name, &md) {
            // /proc/N of a process gone since: CRIU's PROCFS remap. The
            // restore makes a helper of pid N while files are opened.
            debug!("{pid}: {what} is in {name} of the dead process {dead}");
            // One remap per file (CRIU's restore makes one helper per pid
            // however many name it).
            self.remaps.push(RemapFilePathEntry {
                orig_id: id,
                remap_id: dead,
                remap_type: Some(remap_type::PROCFS),
                ..Default::default()
            });
            return Ok(reg_of(id, flags, pos, name, &md));
        }
        let ft = md.file_type();
        let regular = ft.is_file();
        if !(regular
            || ft.is_dir()
            || ft.is_fifo()
            || ft.is_char_device()
            || ft.is_block_device()
            || ft.is_symlink())
        {
            return Err(Error::unsupported(format!(
                "process {pid} has {what} open on {link}, a deleted socket, which crust cannot dump"
            )));
        }
        if md.nlink() > 0 && !regular && !ft.is_dir() {
            // A new node made at restore would not be the one still
            // linked elsewhere (a FIFO others open, a device...).
            return Err(Error::unsupported(format!(
                "process {pid} has {what} open on {name}, deleted from there but still linked elsewhere ({} link(s)), and not a regular file: crust cannot keep it the same file",
                md.nlink()
            )));
        }
        if md.nlink() > 0 && regular {
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
        // As CRIU: what the file takes on disk, holes not counted.
        let used = md.blocks().saturating_mul(BLOCK);
        if regular && used > self.limit {
            if src.fd < 0 {
                return Err(Error::unsupported(format!(
                    "process {pid} has {what} on the deleted file {name}, which takes {used} bytes on disk, more than the ghost file limit of {} bytes (raise it with --ghost-limit)",
                    self.limit
                )));
            }
            return Err(Error::GhostTooBig {
                pid,
                fd: src.fd,
                path: PathBuf::from(name),
                size: used,
                limit: self.limit,
            });
        }
        let key = (md.dev(), md.ino());
        if !self.ghosts.contains_key(&key) {
            let g = new_ghost(pid, src, name, &md, self.ghosts.len() as u32 + 1)?;
            self.ghosts.insert(key, g);
        }
        let gid = self.ghosts.get(&key).map(|g| g.id).unwrap_or(0);
        debug!(
            "{pid}: {what} is on the deleted file {name} (mode {:o}, {} bytes): ghost {gid}",
            md.mode(),
            md.size()
        );
        self.remaps.push(RemapFilePathEntry {
            orig_id: id,
            remap_id: gid,
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
            if let Some(f) = &g.file {
                let size = g.entry.size;
                let runs = match size {
                    Some(size) => data_runs(f, size, &g.path)?,
                    None => vec![(0, u64::MAX)],
                };
                for (off, len) in runs {
                    if size.is_some() {
                        w.write_entry(&GhostChunkEntry {
                            len,
                            off,
                            ..Default::default()
                        })
                        .map_err(err)?;
                    }
                    copy_run(f, off, len, size.is_some(), &g.path, &mut |b| {
                        w.write_raw(b).map_err(err)
                    })?;
                }
            }
            w.finish().map_err(err)?;
        }
        Ok(())
    }
}

/// Where a link remap of a file of process `pid` open on mount `mnt` is
/// made: when the process is in a mount namespace of the tree other than
/// the root's, through the root of the namespace that has that mount (its
/// own, or the root's for an fd opened before it unshared: a link cannot
/// cross mounts); else `None` (the view of the tree's paths).
fn link_base(pid: i32, mnt: i32) -> Option<PathBuf> {
    let root = crate::util::view::ns_pid()?;
    let ns = |p: i32| {
        std::fs::metadata(format!("/proc/{p}/ns/mnt"))
            .ok()
            .map(|m| m.ino())
    };
    if mnt <= 0 || root == pid || ns(root) == ns(pid) {
        return None;
    }
    let has = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/mountinfo")).is_ok_and(|t| {
            t.lines()
                .any(|l| l.split(' ').next() == Some(mnt.to_string().as_str()))
        })
    };
    [pid, root]
        .into_iter()
        .find(|p| has(*p))
        .map(|p| PathBuf::from(format!("/proc/{p}/root")))
}

/// The ghost of a deleted file seen for the first time (id `id`): its
/// entry and, for a regular file, the file opened to be copied.
fn new_ghost(
    pid: i32,
    src: &Source,
    name: &str,
    md: &std::fs::Metadata,
    id: u32,
) -> Result<Ghost, Error> {
    let ft = md.file_type();
    let tv = |s: i64, ns: i64| Timeval {
        tv_sec: s as u64,
        tv_usec: (ns / 1000) as u64,
        ..Default::default()
    };
    let mut entry = GhostFileEntry {
        uid: crate::util::idmap::to_ns_uid(md.uid()),
        gid: crate::util::idmap::to_ns_gid(md.gid()),
        mode: md.mode(),
        dev: Some(kernel_dev(md.dev())),
        ino: Some(md.ino()),
        atim: Some(tv(md.atime(), md.atime_nsec())),
        mtim: Some(tv(md.mtime(), md.mtime_nsec())),
        ..Default::default()
    };
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_CLOEXEC)
            .open(&src.proc_path)
            .map_err(sys_err(
                pid,
                format!(
                    "open the deleted file {name} of {} through {}",
                    src.what, src.proc_path
                ),
            ))
    };
    let mut file = None;
    if ft.is_char_device() || ft.is_block_device() {
        // The userspace dev_t, cut to 32 bits, as CRIU stores it.
        entry.rdev = Some(md.rdev() as u32);
    } else if ft.is_symlink() {
        // O_PATH through the /proc link: the symlink itself.
        let l = open(libc::O_PATH)?;
        let target = crust_sys::fs::readlink_fd(l.as_fd())
            .map_err(sys_err(pid, format!("read the deleted symlink {name}")))?;
        entry.symlnk_target = Some(String::from_utf8(target).map_err(|_| {
            Error::unsupported(format!(
                "process {pid} has {} on the deleted symlink {name}, whose target is not UTF-8",
                src.what
            ))
        })?);
    } else if ft.is_file() {
        file = Some(open(libc::O_NONBLOCK)?);
        if md.size() >= CHUNKS_FROM {
            entry.chunks = Some(true);
            entry.size = Some(md.size());
        }
    }
    Ok(Ghost {
        id,
        entry,
        file,
        path: PathBuf::from(name),
    })
}

/// The runs of data (offset, length) of the first `size` bytes of `f`,
/// holes left out; the whole file if its file system cannot tell.
fn data_runs(f: &File, size: u64, path: &Path) -> Result<Vec<(u64, u64)>, Error> {
    use crust_sys::fs::seek_data_or_hole;
    let io = |source| Error::Io {
        op: "cannot find the data and holes of the deleted file",
        path: path.to_path_buf(),
        source,
    };
    let mut runs = Vec::new();
    let mut at = 0;
    while at < size {
        let data = match seek_data_or_hole(f.as_fd(), at, false) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if at == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(io(e)),
        };
        if data >= size {
            break;
        }
        let hole = seek_data_or_hole(f.as_fd(), data, true)
            .map_err(io)?
            .unwrap_or(size)
            .min(size);
        if hole <= data {
            break;
        }
        runs.push((data, hole - data));
        at = hole;
    }
    Ok(runs)
}

/// Copy `len` bytes of `f` from `off` into `out` (to the end of the file
/// when `exact` is false; `exact`: exactly `len` bytes, or an error).
fn copy_run(
    f: &File,
    off: u64,
    len: u64,
    exact: bool,
    path: &Path,
    out: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let io = |op| {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut f = f;
    f.seek(SeekFrom::Start(off))
        .map_err(io("cannot seek in the deleted file"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = (&mut f)
            .take(left)
            .read(&mut buf)
            .map_err(io("cannot read the deleted file"))?;
        if n == 0 {
            if exact {
                return Err(Error::FileChanged {
                    path: path.to_path_buf(),
                    why: format!("it shrank while being saved ({left} bytes missing)"),
                });
            }
            break;
        }
        if let Some(b) = buf.get(..n) {
            out(b)?;
        }
        left -= n as u64;
    }
    Ok(())
}

/// The pid N of `name` = `/proc/N` or `/proc/N/...` when the file is on
/// a proc of process `pid`'s (crust's, or the one at /proc in its root:
/// a tree in a pid namespace of its own has its own): a file of a
/// process that died while it was open (its /proc entries are unhashed,
/// so its link mostly reads "(deleted)").
fn dead_proc_pid(pid: i32, name: &str, md: &std::fs::Metadata) -> Option<u32> {
    let n = crate::files::classify::proc_pid(name)
        .map(|(n, _)| n)
        .filter(|&n| n > 0)?;
    on_proc(pid, md).then_some(n)
}

/// Is `md` a file of crust's proc or of the proc at /proc in process
/// `pid`'s root?
fn on_proc(pid: i32, md: &std::fs::Metadata) -> bool {
    ["/proc".to_string(), format!("/proc/{pid}/root/proc")]
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == md.dev()))
}

/// Is fd `fd` of `pid`, whose link reads `link`, on /proc/N/... of a
/// process N that is gone from the proc the tree sees? (In a pid
/// namespace of its own, the link of a file of a dead process's /proc
/// need not read "(deleted)".)
fn dead_proc_file(pid: i32, fd: i32, link: &str) -> bool {
    let Some((n, _)) = crate::files::classify::proc_pid(link) else {
        return false;
    };
    let gone = !Path::new(&format!("/proc/{pid}/root/proc/{n}")).exists();
    gone && std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|md| on_proc(pid, &md))
}

/// The files.img REG entry of a description on a deleted file.
fn reg_of(id: u32, flags: u32, pos: u64, name: &str, md: &std::fs::Metadata) -> FileEntry {
    FileEntry {
        r#type: fd_types::REG,
        id,
        reg: Some(Box::new(RegFileEntry {
            id,
            flags,
            pos,
            fown: FownEntry::default(),
            name: name.to_string(),
            size: md.file_type().is_file().then_some(md.size()),
            mode: Some(md.mode()),
            ..Default::default()
        })),
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

#[cfg(test)]
use restore::is_link_remap_name;
pub use restore::{dead_proc_pids, ghosted_ids, Ghosts};

// ------------------------------------------------------------ kind of file

/// Ghost files as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(Ghosts::load(ctx.dir, ctx.files)?))
}

impl RestoreKind for Ghosts {
    fn name(&self) -> &'static str {
        "ghost files"
    }

    fn make(&mut self, _made: &crate::files::kind::Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
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
        if f.class != Target::Path
            || !(is_deleted(f.target) || dead_proc_file(f.pid, f.fd, f.target))
        {
            return Ok(None);
        }
        let (pid, fd, flags) = (f.pid, f.fd, f.flags());
        let known = self.known(pid, fd);
        let fifo = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        if fifo {
            // The pipes kind records the FIFO (its queued bytes too); its
            // path is the REG entry made here, with the ghost. A
            // description seen before is known to the pipes kind as well.
            if known.is_none() {
                let id = ids.new_id();
                let e = self.add(pid, fd, f.target, flags, 0, id, ids.next_id)?;
                ids.files.push(e);
                f.path_reg = Some(id);
            }
            return Ok(None);
        }
        // The mount it is on, when the tree has mount namespaces (the
        // restore opens it on that mount's namespace).
        let mnt = crate::files::classify::mnt_id_of(pid, f.info.mnt_id);
        self.cur_mnt = f.info.mnt_id;
        let id = ids.id_for(known, |ids, id| {
            let mut e = self.add(pid, fd, f.target, flags, f.info.pos, id, ids.next_id)?;
            if let Some(r) = e.reg.as_mut() {
                r.mnt_id = mnt;
            }
            Ok(Some(e))
        });
        self.cur_mnt = 0;
        let id = id?;
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
mod tests;
