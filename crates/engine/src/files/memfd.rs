//! memfd file descriptors, in CRIU's images.
//!
//! Dump: an fd whose link reads `/memfd:NAME (deleted)` is a MEMFD entry of
//! files.img (status flags, offset, `inode_id`); its inode is one
//! `memfd.img` entry (NAME, owner, size, seals, mode, `shmid` = inode
//! number), shared by every description on it. The content goes where CRIU
//! puts it: `pagemap-shmem-<ino>.img` (vaddr = offset in the file) and a
//! pages file of its own; pages that hold only zeros are left out.
//!
//! Restore: crust makes each memfd with its name, fills it, sets its size,
//! mode and owner, opens one description per files.img id through
//! /proc/self/fd (with its flags and offset), and adds the seals last.
//! Tasks get the descriptions over SCM_RIGHTS.

use crate::files::classify::Target;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, MadeOf, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::memfd::{MemfdFileEntry, MemfdInodeEntry};
use log::debug;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Seals memfd.img may carry: SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE, EXEC.
const KNOWN_SEALS: u32 = 0x3f;
/// memfd names are at most 249 bytes (NAME_MAX less the "memfd:" prefix).
const NAME_MAX: usize = 249;
/// Largest memfd crust restores.
const MAX_SIZE: u64 = 1 << 40;
const BATCH: usize = 1 << 20;

/// The name of the memfd an fd link is on (`/memfd:NAME (deleted)`).
pub fn name_of(link: &str) -> Option<&str> {
    let rest = link.strip_prefix("/memfd:")?;
    Some(rest.strip_suffix(" (deleted)").unwrap_or(rest))
}

/// The pages-N.img id of a memfd's content: the same scheme mem.rs uses for
/// shared anonymous memory (bit 31 plus the inode number's low bits).
fn pages_id(ino: u64) -> u32 {
    (1 << 31) | (ino as u32 & !(1 << 31))
}

// ---------------------------------------------------------------- dump

struct Seen {
    pid: i32,
    fd: i32,
    id: u32,
}

struct Content {
    ino: u64,
    file: File,
    size: u64,
}

/// memfds seen while dumping a tree.
#[derive(Default)]
pub struct MemfdDump {
    seen: Vec<Seen>,
    /// inode number -> memfd.img inode_id.
    inodes: HashMap<u64, u32>,
    contents: Vec<Content>,
}

impl MemfdDump {
    /// The files.img id of the description fd `fd` of `pid` is on, if an
    /// fd seen before (in any process) is on the same one.
    pub fn known(&self, pid: i32, fd: i32) -> Option<u32> {
        self.seen
            .iter()
            .find(|s| crust_sys::process::kcmp_file(s.pid, pid, s.fd, fd).unwrap_or(false))
            .map(|s| s.id)
    }

    /// A new description on a memfd: its MEMFD entry, and its inode (pushed
    /// to `inodes`, memfd.img) if new.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        link: &str,
        flags: u32,
        pos: u64,
        id: u32,
        inodes: &mut Vec<MemfdInodeEntry>,
    ) -> Result<FileEntry, Error> {
        let name = name_of(link).unwrap_or(link);
        let proc_path = format!("/proc/{pid}/fd/{fd}");
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&proc_path)
            .map_err(sys_err(
                pid,
                format!("open memfd {name:?} of fd {fd} through {proc_path}"),
            ))?;
        let md = file
            .metadata()
            .map_err(sys_err(pid, format!("stat memfd of fd {fd}")))?;
        // A mapping of the same memfd may have named its inode already.
        let mapped = inodes
            .iter()
            .find(|i| i.shmid == md.ino() as u32)
            .map(|i| i.inode_id as u32);
        let inode_id = match self.inodes.get(&md.ino()).copied().or(mapped) {
            Some(i) => {
                if let std::collections::hash_map::Entry::Vacant(v) = self.inodes.entry(md.ino()) {
                    v.insert(i);
                    self.contents.push(Content {
                        ino: md.ino(),
                        file,
                        size: md.size(),
                    });
                }
                i
            }
            None => {
                let seals = crust_sys::memfd::seals(file.as_fd())
                    .map_err(sys_err(pid, format!("F_GET_SEALS of fd {fd}")))?;
                // A hugetlb memfd (on hugetlbfs): MFD_HUGETLB and its page size.
                let hugetlb_flag = crate::mem::hugetlb_file_flag(&file)
                    .map_err(sys_err(pid, format!("fstatfs memfd of fd {fd}")))?;
                let inode_id = inodes.len() as u32 + 1;
                inodes.push(MemfdInodeEntry {
                    name: name.to_string(),
                    uid: crate::util::idmap::to_ns_uid(md.uid()),
                    gid: crate::util::idmap::to_ns_gid(md.gid()),
                    size: md.size(),
                    shmid: md.ino() as u32,
                    seals,
                    inode_id: inode_id as u64,
                    mode: Some(md.mode()),
                    hugetlb_flag,
                    ..Default::default()
                });
                self.inodes.insert(md.ino(), inode_id);
                self.contents.push(Content {
                    ino: md.ino(),
                    file,
                    size: md.size(),
                });
                debug!(
                    "{pid}: fd {fd} is memfd {name:?} ino {} ({} bytes, seals {seals:#x}): inode {inode_id}",
                    md.ino(),
                    md.size()
                );
                inode_id
            }
        };
        self.seen.push(Seen { pid, fd, id });
        Ok(FileEntry {
            r#type: fd_types::MEMFD,
            id,
            memfd: Some(Box::new(MemfdFileEntry {
                id,
                flags,
                pos,
                fown: FownEntry::default(),
                inode_id,
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// Write the content of every memfd: `pagemap-shmem-<ino>.img` and
    /// its pages file.
    /// The memfds of inode numbers `inos` are mapped too: their pages are
    /// stored with the mappings', not here.
    pub fn stored_elsewhere(&mut self, inos: &[u64]) {
        self.contents.retain(|c| !inos.contains(&c.ino));
    }

    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        for c in &self.contents {
            write_content(dir, c)?;
        }
        Ok(())
    }
}

fn write_content(dir: &Path, c: &Content) -> Result<(), Error> {
    let what = std::path::PathBuf::from(format!("memfd inode {}", c.ino));
    crate::mem::store_object_pages(
        dir,
        &c.file,
        &what,
        c.size,
        c.ino as u32 as u64,
        pages_id(c.ino),
    )
    .map(drop)
}

// ---------------------------------------------------------------- restore

#[derive(Debug)]
struct InodeImage {
    entry: MemfdInodeEntry,
    /// (offset in the memfd, offset in the pages file, bytes).
    runs: Vec<(u64, u64, u64)>,
    pages: PathBuf,
    /// A hugetlb memfd (its memfd.img `hugetlb_flag`, checked).
    hugetlb: bool,
}

/// The memfds of an image set (those fds use), read and checked.
#[derive(Debug, Default)]
pub struct Memfds {
    inodes: BTreeMap<u64, InodeImage>,
    /// files.img id -> MEMFD entry.
    files: BTreeMap<u32, MemfdFileEntry>,
}

/// Descriptions on memfds crust made, by files.img id.
pub type OpenMemfds = crate::files::fdpass::MadeFds;

impl Memfds {
    /// Read the MEMFD entries that fds of `fd_ids` use, their memfd.img
    /// inodes and their pages; check them all.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
        fd_ids: &[u32],
    ) -> Result<Memfds, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let mut out = Memfds::default();
        if fd_ids.is_empty() {
            return Ok(out);
        }
        let files: Vec<FileEntry> = loaded.entries()?.to_vec();
        let by_id: HashMap<u32, &FileEntry> = files.iter().map(|f| (f.id, f)).collect();
        let inodes: Vec<MemfdInodeEntry> = crate::util::read_image(dir, ImageType::MemfdInode, 0)?;
        for &id in fd_ids {
            let m = by_id
                .get(&id)
                .filter(|f| f.r#type == fd_types::MEMFD)
                .and_then(|f| f.memfd.as_ref())
                .ok_or_else(|| {
                    bad(format!(
                        "an fd refers to memfd file id {id}, which files.img does not have"
                    ))
                })?;
            let ino = inodes
                .iter()
                .find(|i| i.inode_id == m.inode_id as u64)
                .ok_or_else(|| {
                    bad(format!(
                        "memfd file {id} refers to inode {}, which memfd.img does not have",
                        m.inode_id
                    ))
                })?;
            if let std::collections::btree_map::Entry::Vacant(v) = out.inodes.entry(ino.inode_id) {
                v.insert(load_inode(dir, ino)?);
            }
            out.files.insert(id, MemfdFileEntry::clone(m));
        }
        Ok(out)
    }

    /// Make every memfd, fill it, open its descriptions, seal it.
    pub fn open(&self) -> Result<OpenMemfds, Error> {
        let me = crust_sys::process::getpid();
        let mut out = OpenMemfds::default();
        for (inode_id, ino) in &self.inodes {
            let e = &ino.entry;
            let what = format!("memfd {:?} (inode {inode_id})", e.name);
            let f = make_filled(ino, &what)?;
            if let Some(mode) = e.mode {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(sys_err(me, format!("chmod {what}")))?;
            }
            std::os::unix::fs::fchown(
                &f,
                Some(crate::util::idmap::to_host_uid(e.uid)),
                Some(crate::util::idmap::to_host_gid(e.gid)),
            )
            .map_err(sys_err(me, format!("chown {what}")))?;
            let via = format!("/proc/self/fd/{}", f.as_raw_fd());
            // The first read-write description is memfd_create's own: one
            // reopened through /proc counts as a writer of the inode, and
            // execveat(fd, "", AT_EMPTY_PATH) of it then fails with
            // ETXTBSY (memfd_create's description does not count).
            let mut own_used = false;
            for (id, m) in self
                .files
                .iter()
                .filter(|(_, m)| m.inode_id as u64 == *inode_id)
            {
                let acc = m.flags as i32 & libc::O_ACCMODE;
                let flags = m.flags as i32
                    & !(libc::O_ACCMODE
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_TRUNC
                        | libc::O_CLOEXEC);
                let mut d = if acc == libc::O_RDWR && !own_used {
                    own_used = true;
                    let d = f
                        .try_clone()
                        .map_err(sys_err(me, format!("dup {what} for file {id}")))?;
                    crust_sys::pipe::set_status_flags(d.as_fd(), flags).map_err(sys_err(
                        me,
                        format!("set the flags of {what} for file {id}"),
                    ))?;
                    d
                } else {
                    OpenOptions::new()
                        .read(acc != libc::O_WRONLY)
                        .write(acc != libc::O_RDONLY)
                        .custom_flags(flags | libc::O_CLOEXEC)
                        .open(&via)
                        .map_err(sys_err(me, format!("open {what} for file {id}")))?
                };
                if m.pos != 0 {
                    d.seek(SeekFrom::Start(m.pos))
                        .map_err(sys_err(me, format!("seek {what} for file {id}")))?;
                }
                out.insert(*id, OwnedFd::from(d));
            }
            if e.seals != 0 {
                crust_sys::memfd::add_seals(f.as_fd(), e.seals)
                    .map_err(sys_err(me, format!("add seals {:#x} to {what}", e.seals)))?;
            }
            debug!("{what}: {} bytes, seals {:#x}", e.size, e.seals);
        }
        Ok(out)
    }
}

/// Make the memfd of `ino` and fill it from its pages: written, or for a
/// hugetlb memfd (hugetlbfs has no write) copied through a shared mapping.
fn make_filled(ino: &InodeImage, what: &str) -> Result<File, Error> {
    let me = crust_sys::process::getpid();
    let e = &ino.entry;
    let flags = if ino.hugetlb {
        e.hugetlb_flag.unwrap_or(0)
    } else {
        0
    };
    let mfd = crust_sys::memfd::memfd_create(&e.name, flags).map_err(sys_err(
        me,
        format!("memfd_create for {what} (flags {flags:#x})"),
    ))?;
    let f = File::from(mfd);
    f.set_len(e.size)
        .map_err(sys_err(me, format!("set the size of {what}")))?;
    // No stored page (all zeros, or empty): no pages file either.
    let mut src = match ino.runs.is_empty() {
        true => return Ok(f),
        false => crate::util::open_image_data(&ino.pages)?,
    };
    // The mapping of a hugetlb memfd reserves its huge pages at mmap: a
    // lack of free ones fails here, not with SIGBUS while copying.
    let mut map = match ino.hugetlb {
        true => Some(
            usize::try_from(e.size)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))
                .and_then(|len| crust_sys::memfd::SharedMap::new(f.as_fd(), len))
                .map_err(sys_err(
                    me,
                    format!("map {what} to fill it (are huge pages free? vm.nr_hugepages)"),
                ))?,
        ),
        false => None,
    };
    let mut buf = vec![0u8; BATCH];
    for &(at, from, len) in &ino.runs {
        src.seek(SeekFrom::Start(from))
            .map_err(sys_err(me, format!("seek in {}", ino.pages.display())))?;
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(BATCH);
            std::io::Read::read_exact(&mut src, &mut buf[..n])
                .map_err(sys_err(me, format!("read {}", ino.pages.display())))?;
            let put = match map.as_mut() {
                Some(m) => m.write_at((at + done) as usize, &buf[..n]),
                None => f.write_all_at(&buf[..n], at + done),
            };
            put.map_err(sys_err(me, format!("fill {what}")))?;
            done += n as u64;
        }
    }
    drop(map);
    // Whole pages were written: the last one may have grown it.
    f.set_len(e.size)
        .map_err(sys_err(me, format!("set the size of {what}")))?;
    Ok(f)
}

fn load_inode(dir: &Path, e: &MemfdInodeEntry) -> Result<InodeImage, Error> {
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("memfd.img: inode {} ({:?}): {why}", e.inode_id, e.name),
    };
    if e.name.len() > NAME_MAX || e.name.contains('\0') {
        return Err(bad("bad name".into()));
    }
    if e.size > MAX_SIZE {
        return Err(bad(format!("size {} is too large", e.size)));
    }
    if e.seals & !KNOWN_SEALS != 0 {
        return Err(bad(format!("unknown seals {:#x}", e.seals)));
    }
    if let Some(mode) = e.mode {
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad(format!("mode {mode:o} is not a regular file's")));
        }
    }
    let hugetlb = crate::mem::hugetlb_page_size(dir, e)?.is_some();
    let p =
        crate::mem::object_page_runs(dir, e.shmid as u64, e.size, &format!("memfd {}", e.name))?;
    Ok(InodeImage {
        entry: e.clone(),
        runs: p.runs,
        pages: p.pages,
        hugetlb,
    })
}

// ------------------------------------------------------------ kind of file

/// Memfds as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(Memfds::load(
        ctx.dir,
        ctx.files,
        &ctx.ids_of_type(fd_types::MEMFD),
    )?))
}

impl RestoreKind for Memfds {
    fn name(&self) -> &'static str {
        "memfds"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(MadeOf {
            fds: self.open()?,
            what: "memfd",
            types: &[fd_types::MEMFD],
        }))
    }
}

impl DumpKind for MemfdDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Path || name_of(f.target).is_none() {
            return Ok(None);
        }
        let (pid, fd, flags) = (f.pid, f.fd, f.flags());
        let known = self.known(pid, fd);
        let id = ids.id_for(known, |ids, id| {
            self.add(pid, fd, f.target, flags, f.info.pos, id, ids.memfd_inodes)
                .map(Some)
        })?;
        Ok(Some((id, fd_types::MEMFD)))
    }

    fn write_images(&mut self, dir: &Path) -> Result<(), Error> {
        self.write(dir)
    }
}
