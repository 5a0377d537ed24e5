//! Files: the fd table (`fdinfo-N.img`) and open files (`files.img`).
//! Regular files, character devices such as /dev/null, directories (cwd,
//! root) and mapped files are handled here; every other kind of file
//! (pipes, event files, sockets, ghosts, memfds, ptys) in its own module,
//! driven through the traits and lists of [`crate::files::kind`]
//! (docs/ARCHITECTURE.md, "Files and sockets").
//! Shared anonymous memory is recorded the way CRIU 4.x does it: as a
//! MEMFD file (`files.img`) whose inode (`memfd.img`) is named "/dev/zero".

pub(crate) mod classify;
pub(crate) mod ctty;
pub(crate) mod epoll;
pub(crate) mod events;
pub(crate) mod fanotify;
pub(crate) mod fdpass;
pub(crate) mod filelocks;
pub(crate) mod fown;
pub(crate) mod ghost;
pub(crate) mod inherit;
pub(crate) mod inotify;
pub(crate) mod kind;
pub(crate) mod loaded;
pub(crate) mod memfd;
pub(crate) mod nsfile;
mod order;
pub(crate) mod pidfd;
pub(crate) mod pipes;
pub(crate) mod procfile;
pub(crate) mod pty;
mod pty_info;
mod pty_ns;
mod pty_orphan;
mod regmnt;
pub(crate) mod regshare;
mod restore;

pub use restore::*;

use crate::task::remote::Remote;
use crate::util::{proc_err, read_image, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::memfd::{MemfdFileEntry, MemfdInodeEntry};
use crust_images::proto::regfile::RegFileEntry;
use crust_proc::ProcRoot;
use crust_sys::unix as su;
use fdpass::Gift;
use kind::dump::DumpKind;
use log::debug;
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const O_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// The flags to open a recorded description's file again with: a file
/// made with O_TMPFILE (an unlinked file in a directory, or linked since)
/// keeps that flag in its fdinfo, but opening its path with it would make
/// a new file in a directory (or fail with ENOTDIR): it is left out, with
/// the O_DIRECTORY it implies, as CRIU does.
pub(crate) fn reopen_flags(flags: u32) -> u32 {
    const TMPFILE_BIT: u32 = libc::O_TMPFILE as u32 & !(libc::O_DIRECTORY as u32);
    if flags & TMPFILE_BIT != 0 {
        flags & !(libc::O_TMPFILE as u32)
    } else {
        flags
    }
}

fn is_terminal_path(p: &str) -> bool {
    p.starts_with("/dev/pts/")
        || p.starts_with("/dev/tty")
        || p == "/dev/console"
        || p == "/dev/ptmx"
}

/// A step between kinds of file the dump flow runs before files.img is
/// written (see [`FileTable::write`]): given the kinds, the next free
/// files.img id and the images directory, it returns entries for files.img.
pub(crate) type BetweenKinds<'a> =
    &'a mut dyn FnMut(&mut [Box<dyn DumpKind>], &mut u32, &Path) -> Result<Vec<FileEntry>, Error>;

/// The open files of a dumped tree (one `files.img`), with ids shared by
/// all its processes.
pub struct FileTable {
    shell_job: bool,
    next_id: u32,
    files: Vec<FileEntry>,
    /// Mapped files (and the exe) by (path, open flags).
    mapped: HashMap<(PathBuf, u32), u32>,
    /// memfd.img entries, in inode_id order.
    memfd_inodes: Vec<MemfdInodeEntry>,
    /// files.img id of each shared memory object, by its inode number.
    shmem_ids: HashMap<u64, u32>,
    /// Every kind of file (pipes, sockets, event files...), asked in
    /// order for each fd (see [`kind::dump`]).
    kinds: Vec<Box<dyn DumpKind>>,
    /// Owners (F_SETOWN) of the descriptions seen.
    owners: crate::files::fown::OwnerDump,
    /// Whether regular files' ELF build-ids are recorded.
    build_ids: bool,
    /// (pid, fd, path, files.img id) of every fd on a path recorded by
    /// the table, in every process: fds on one description share its id.
    paths_seen: Vec<(i32, i32, String, u32)>,
    /// The fds of the last [`FileTable::collect_fds`] whose fdinfo has
    /// `lock:` lines (the only ones [`crate::files::filelocks`] reads
    /// again).
    locked: Vec<i32>,
}

use crate::mem::ShmemInode;

impl crate::mem::MappedFiles for FileTable {
    fn mapped(&mut self, path: &Path, flags: u32) -> Result<u32, Error> {
        self.add_mapped(path, flags)
    }

    fn mapped_deleted(
        &mut self,
        pid: i32,
        start: u64,
        end: u64,
        path: &Path,
        flags: u32,
    ) -> Result<u32, Error> {
        let key = (
            PathBuf::from(format!("{} (deleted)", path.display())),
            flags,
        );
        if let Some(id) = self.mapped.get(&key) {
            return Ok(*id);
        }
        let id = self.new_id();
        let mut next_id = self.next_id;
        let name = path.to_string_lossy().into_owned();
        let ghosts = self.kind_mut::<ghost::GhostDump>().ok_or_else(|| {
            Error::unsupported(format!(
                "process {pid} maps the deleted file {name}, and no kind of file keeps deleted files"
            ))
        })?;
        let entry = ghosts.add_mapped(pid, start, end, &name, flags, id, &mut next_id)?;
        self.next_id = next_id;
        self.files.push(entry);
        self.mapped.insert(key, id);
        Ok(id)
    }

    fn shmem(&mut self, obj: &ShmemInode) -> u32 {
        self.add_shmem(obj)
    }

    fn packet_rings(&self, ino: u32) -> Option<(u32, u64)> {
        self.kinds.iter().find_map(|k| k.mapped_len(ino))
    }
}

impl FileTable {
    /// A table asking `kinds` (the one list is
    /// [`crate::registry::dump_kinds`]), in order, for each fd.
    pub fn new(shell_job: bool, kinds: Vec<Box<dyn kind::dump::DumpKind>>) -> Self {
        FileTable {
            shell_job,
            next_id: 1,
            files: Vec::new(),
            mapped: HashMap::new(),
            memfd_inodes: Vec::new(),
            shmem_ids: HashMap::new(),
            kinds,
            owners: Default::default(),
            build_ids: true,
            paths_seen: Vec::new(),
            locked: Vec::new(),
        }
    }

    /// `--file-validation filesize`: regular files are recorded without
    /// their ELF build-id (a restore then checks their size only).
    pub fn set_build_ids(&mut self, on: bool) {
        self.build_ids = on;
    }

    /// `orphan_pts_master`: a pty slave whose master is outside the tree
    /// is dumped (see [`pty_orphan`]).
    pub fn set_orphan_pts_master(&mut self, on: bool) {
        if let Some(p) = self.kind_mut::<pty::PtyDump>() {
            p.orphan.0 = on;
        }
    }

    /// The processes of the tree (see [`pty::PtyDump::set_tree`]).
    pub fn set_tree(&mut self, pids: Vec<i32>) {
        if let Some(p) = self.kind_mut::<pidfd::PidfdDump>() {
            p.set_tree(&pids);
        }
        if let Some(p) = self.kind_mut::<pty::PtyDump>() {
            p.set_tree(pids);
        }
    }

    /// The namespaces the images name: (kind, inode, id, CLONE_NEW* flag)
    /// (see [`nsfile::NsfileDump::set_known`]).
    pub fn set_namespaces(&mut self, known: impl Iterator<Item = (&'static str, u64, u32, u64)>) {
        let known = known
            .map(|(name, ino, id, cflag)| nsfile::KnownNs {
                name,
                ino,
                id,
                cflag: cflag as u32,
            })
            .collect();
        if let Some(n) = self.kind_mut::<nsfile::NsfileDump>() {
            n.set_known(known);
        }
    }

    /// The kind of type `T` (the tests look at a kind's state).
    #[cfg(test)]
    pub(crate) fn kind<T: DumpKind>(&self) -> Option<&T> {
        self.kinds
            .iter()
            .find_map(|k| (**k).as_any().downcast_ref::<T>())
    }

    /// The kind of type `T`, to change.
    pub(crate) fn kind_mut<T: DumpKind>(&mut self) -> Option<&mut T> {
        find_kind(&mut self.kinds)
    }

    /// A shared memory object the task maps (shared anonymous memory): one
    /// MEMFD files.img entry and one memfd.img inode per object. Returns the
    /// files.img id, which the VMAs carry as `shmid`.
    pub fn add_shmem(&mut self, obj: &ShmemInode) -> u32 {
        if let Some(id) = self.shmem_ids.get(&obj.ino) {
            return *id;
        }
        let id = self.new_id();
        // A memfd also open as an fd of the tree has its inode already:
        // the mapping's MEMFD entry names the same one.
        let known = self
            .memfd_inodes
            .iter()
            .find(|i| i.shmid == obj.ino as u32)
            .map(|i| i.inode_id as u32);
        let inode_id = known.unwrap_or(self.memfd_inodes.len() as u32 + 1);
        self.files.push(FileEntry {
            r#type: fd_types::MEMFD,
            id,
            memfd: Some(Box::new(MemfdFileEntry {
                id,
                flags: 0,
                pos: 0,
                fown: FownEntry::default(),
                inode_id,
                ..Default::default()
            })),
            ..Default::default()
        });
        self.shmem_ids.insert(obj.ino, id);
        debug!(
            "shared memory object ino {} ({} bytes) is file id {id} (memfd inode {inode_id})",
            obj.ino, obj.size
        );
        if known.is_some() {
            return id;
        }
        self.memfd_inodes.push(MemfdInodeEntry {
            name: obj.name.clone(),
            uid: obj.uid,
            gid: obj.gid,
            size: obj.size,
            shmid: obj.ino as u32,
            seals: obj.seals,
            inode_id: inode_id as u64,
            mode: Some(obj.mode),
            hugetlb_flag: obj.hugetlb_flag,
            ..Default::default()
        });
        id
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn reg_entry(
        &self,
        id: u32,
        path: &Path,
        flags: u32,
        pos: u64,
        build_id: bool,
    ) -> Result<RegFileEntry, Error> {
        reg_entry(id, path, flags, pos, build_id && self.build_ids)
    }

    fn push_reg(&mut self, reg: RegFileEntry) {
        self.files.push(reg_file(reg));
    }

    /// A file the task maps (or its exe): one files.img entry per file and
    /// open mode.
    pub fn add_mapped(&mut self, path: &Path, flags: u32) -> Result<u32, Error> {
        if let Some(id) = self.mapped.get(&(path.to_path_buf(), flags)) {
            return Ok(*id);
        }
        let id = self.new_id();
        let reg = self.reg_entry(id, path, flags, 0, true)?;
        self.push_reg(reg);
        self.mapped.insert((path.to_path_buf(), flags), id);
        Ok(id)
    }

    /// A directory of process `pid`: its cwd or root (`which`, the name
    /// of its /proc link). A deleted one (a cwd removed) is a ghost
    /// directory.
    pub fn add_dir(&mut self, pid: i32, path: &Path, which: &str) -> Result<u32, Error> {
        let id = self.new_id();
        let link = path.to_string_lossy();
        if ghost::is_deleted(&link) {
            let ghosts = find_kind::<ghost::GhostDump>(&mut self.kinds).ok_or_else(|| {
                Error::unsupported(format!(
                    "process {pid} works in the deleted directory {link}, and ghost files are not dumped"
                ))
            })?;
            let e = ghosts.add_dir(pid, which, &link, id, &mut self.next_id)?;
            self.files.push(e);
            return Ok(id);
        }
        let mut reg = self.reg_entry(id, path, 0, 0, true)?;
        // Its mount, as for fds: CRIU opens it in the mount namespace
        // that mount is in (a process pivoted into another root).
        reg.mnt_id = classify::dir_mnt_id(pid, which);
        self.push_reg(reg);
        Ok(id)
    }

    /// `--ghost-limit`: the largest deleted file saved (default 1 MiB).
    pub fn set_ghost_limit(&mut self, limit: Option<u64>) {
        if let Some(g) = self.kind_mut::<ghost::GhostDump>() {
            g.set_limit(limit);
        }
    }

    /// The write-back of pty bytes read out (see [`pty::PtyDump`]).
    pub fn take_pty_put_back(&mut self) -> Box<dyn FnOnce() + Send> {
        match self.kind_mut::<pty::PtyDump>() {
            Some(p) => p.take_put_back(),
            None => Box::new(|| {}),
        }
    }

    /// `--link-remap`: deleted files still linked elsewhere are linked back.
    pub fn set_link_remap(&mut self, on: bool) {
        if let Some(g) = self.kind_mut::<ghost::GhostDump>() {
            g.link_remap = on;
        }
    }

    /// Every fd of process `pid`, for its `fdinfo-N.img`.
    pub fn collect_fds(&mut self, proc: &ProcRoot, pid: i32) -> Result<Vec<FdinfoEntry>, Error> {
        self.locked.clear();
        self.collect_fds_of(proc, pid, None)
    }

    /// Whether fd `fd` of the last [`FileTable::collect_fds`] showed a
    /// lock in its fdinfo.
    pub fn fd_locked(&self, fd: u32) -> bool {
        self.locked.iter().any(|l| *l as u32 == fd)
    }

    /// Files carried by SCM_RIGHTS messages queued on the tree's unix
    /// sockets (crust holds copies of them, see
    /// [`DumpKind::carried_fds`]): each gets a files.img id like an fd of
    /// a task, until no new message carries more. What such a file refers
    /// to by fd number (an epoll's targets) is named by the fds of the
    /// process the kind gives with it.
    fn collect_carried(&mut self) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        loop {
            let mut fds = Vec::new();
            for k in &self.kinds {
                fds.extend(k.carried_fds()?);
            }
            if fds.is_empty() {
                return Ok(());
            }
            let got = self.collect_fds_of(&ProcRoot::default(), me, Some(&fds))?;
            for k in self.kinds.iter_mut() {
                k.carried_entries(&got)?;
            }
        }
    }

    /// Write `files.img`. Before it, the kinds' late entries (see
    /// [`DumpKind::late_entries`]), then `between`, the dump flow's step
    /// between kinds (inet hands the datagrams queued on its sockets to
    /// sk-queues.img, which unix writes): it may take ids from the table
    /// and returns entries for files.img.
    pub fn write(&mut self, dir: &Path, between: BetweenKinds<'_>) -> Result<(), Error> {
        self.collect_carried()?;
        // The pages of a memfd that is also mapped are stored once, by
        // the memory dump (pagemap-shmem-<ino>.img).
        let mapped: Vec<u64> = self.shmem_ids.keys().copied().collect();
        if let Some(m) = self.kind_mut::<memfd::MemfdDump>() {
            m.stored_elsewhere(&mapped);
        }
        let kinds = &mut self.kinds;
        for k in kinds.iter_mut() {
            self.files.extend(k.late_entries(&mut self.next_id)?);
        }
        self.files.extend(between(kinds, &mut self.next_id, dir)?);
        self.files.sort_by_key(|f| f.id);
        // Unix sockets in CRIU's order, which CRIU's restore needs.
        order::order_as_criu(&mut self.files);
        self.owners.fill(&mut self.files);
        write_image(dir, ImageType::Files, 0, &self.files)?;
        for k in kinds.iter_mut() {
            k.write_images(dir)?;
        }
        if !self.memfd_inodes.is_empty() {
            write_image(dir, ImageType::MemfdInode, 0, &self.memfd_inodes)?;
        }
        Ok(())
    }
}

/// The kind of type `T` among `kinds`.
pub(crate) fn find_kind<T: DumpKind>(kinds: &mut [Box<dyn DumpKind>]) -> Option<&mut T> {
    kinds
        .iter_mut()
        .find_map(|k| (**k).as_any_mut().downcast_mut::<T>())
}

/// `build_id`: the file may be opened to read its ELF build-id (not
/// when the tree holds a write lease on it: the open would break it).
pub(crate) fn reg_entry(
    id: u32,
    path: &Path,
    flags: u32,
    pos: u64,
    build_id: bool,
) -> Result<RegFileEntry, Error> {
    // The path as crust sees it (the tree may have a mount namespace of
    // its own).
    let seen = crate::util::view::host_path(path).unwrap_or_else(|| path.to_path_buf());
    // An O_PATH fd may be on a symlink itself (O_NOFOLLOW): not followed.
    let md = if flags & libc::O_PATH as u32 != 0 {
        std::fs::symlink_metadata(&seen)
    } else {
        std::fs::metadata(&seen)
    };
    let md = md.map_err(|source| Error::Io {
        op: "cannot stat",
        path: path.to_path_buf(),
        source,
    })?;
    let is_reg = md.file_type().is_file();
    Ok(RegFileEntry {
        id,
        flags,
        pos,
        fown: FownEntry::default(),
        name: path.to_string_lossy().into_owned(),
        size: is_reg.then_some(md.size()),
        mode: Some(md.mode()),
        build_id: if is_reg && build_id {
            elf_build_id(&seen)
        } else {
            Vec::new()
        },
        ..Default::default()
    })
}

/// The files.img entry of a regular file.
pub(crate) fn reg_file(reg: RegFileEntry) -> FileEntry {
    FileEntry {
        r#type: fd_types::REG,
        id: reg.id,
        reg: Some(Box::new(reg)),
        ..Default::default()
    }
}

/// The GNU build-id of an ELF file as CRIU stores it (little-endian u32
/// words), or nothing.
fn elf_build_id(path: &Path) -> Vec<u32> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return Vec::new(),
    };
    let mut head = vec![0u8; 64];
    if f.read_exact(&mut head).is_err() || &head[0..4] != b"\x7fELF" || head[4] != 2 {
        return Vec::new();
    }
    let u16le = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64le = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64le(&head, 32);
    let phentsize = u16le(&head, 54);
    let phnum = u16le(&head, 56);
    use std::os::unix::fs::FileExt;
    if phentsize < 56 || phnum > 256 {
        return Vec::new();
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    if f.read_exact_at(&mut ph, phoff).is_err() {
        return Vec::new();
    }
    for i in 0..phnum {
        let p = &ph[(i * phentsize) as usize..];
        if u32le(p, 0) != 4 {
            continue; // PT_NOTE
        }
        let off = u64le(p, 8);
        let size = u64le(p, 32).min(1 << 16);
        let mut notes = vec![0u8; size as usize];
        if f.read_exact_at(&mut notes, off).is_err() {
            continue;
        }
        let mut o = 0usize;
        while o + 12 <= notes.len() {
            let namesz = u32le(&notes, o) as usize;
            let descsz = u32le(&notes, o + 4) as usize;
            let ty = u32le(&notes, o + 8);
            let name_off = o + 12;
            let desc_off = name_off + namesz.div_ceil(4) * 4;
            let next = desc_off + descsz.div_ceil(4) * 4;
            if next > notes.len() {
                break;
            }
            if ty == 3 && namesz == 4 && &notes[name_off..name_off + 3] == b"GNU" {
                return notes[desc_off..desc_off + descsz]
                    .chunks(4)
                    .map(|c| {
                        let mut w = [0u8; 4];
                        w[..c.len()].copy_from_slice(c);
                        u32::from_le_bytes(w)
                    })
                    .collect();
            }
            o = next;
        }
    }
    Vec::new()
}
