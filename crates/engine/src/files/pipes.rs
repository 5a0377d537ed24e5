//! Pipes and named FIFOs, in CRIU's images.
//!
//! Dump: each open file description on a pipe is one `files.img` entry of
//! type PIPE (`pipe_id` is the pipe's inode, `flags` the status flags); a
//! FIFO description is a FIFO entry plus a REG entry (`regf_id`) holding its
//! path and flags. Descriptions shared by fds, in one or several processes,
//! are found with kcmp and keep one id. The bytes queued in each pipe are
//! copied without being consumed: crust opens the pipe again through
//! `/proc/PID/fd/N` (another end of the same pipe) and tee(2)s it into a
//! pipe of its own. They go to `pipes-data.img` / `fifo-data.img`, one
//! entry per pipe with the capacity, followed by the bytes.
//!
//! Restore: crust makes every pipe itself (pipe2, or opening the FIFO's
//! path), sets its capacity, writes the queued bytes back, opens one
//! description per files.img id and sets its status flags. Tasks get them
//! over SCM_RIGHTS (see [`crate::files::fdpass`]) while they are built, so the
//! pipes are full and shared as they were before any task runs.

use crate::files::classify::Target;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, OpenKind, RestoreKind};
use crate::util::sys_err;
use crate::Error;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fifo::FifoEntry;
use crust_images::proto::fown::FownEntry;
use crust_images::proto::pipe::PipeEntry;
use crust_images::proto::pipe_data::PipeDataEntry;
use crust_images::Message;
use crust_sys::pipe as sp;
use log::debug;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Pipe or named FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pipe,
    Fifo,
}

impl Kind {
    fn data_image(self) -> ImageType {
        match self {
            Kind::Pipe => ImageType::PipesData,
            Kind::Fifo => ImageType::FifoData,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Pipe => "pipe",
            Kind::Fifo => "FIFO",
        }
    }
}

/// The inode of a `pipe:[INO]` fd link.
pub fn pipe_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

/// The status flags CRIU keeps for a pipe: the open flags without
/// O_CLOEXEC (a property of the fd) and O_DIRECT (refused).
fn entry_flags(flags: u32) -> u32 {
    flags & !(libc::O_CLOEXEC as u32) & !(libc::O_DIRECT as u32)
}

// ---------------------------------------------------------------- dump

/// One description already given an id.
struct Seen {
    pid: i32,
    fd: i32,
    kind: Kind,
    ino: u64,
    id: u32,
}

/// Bytes queued in one pipe at dump time.
struct Queued {
    pipe_id: u32,
    size: u32,
    bytes: Vec<u8>,
}

/// Pipes and FIFOs seen while dumping a tree.
#[derive(Default)]
pub struct PipeDump {
    seen: Vec<Seen>,
    /// Per kind, in the order the pipes were first seen.
    data: BTreeMap<Kind, Vec<Queued>>,
}

impl PipeDump {
    /// The files.img id of the description fd `fd` of `pid` is on, if an
    /// fd seen before (in any process) is on the same one.
    pub fn known(&self, pid: i32, fd: i32, kind: Kind, ino: u64) -> Option<u32> {
        self.seen
            .iter()
            .filter(|s| s.kind == kind && s.ino == ino)
            .find(|s| crust_sys::process::kcmp_file(s.pid, pid, s.fd, fd).unwrap_or(false))
            .map(|s| s.id)
    }

    /// Record a new description: its id, and the bytes queued in its pipe
    /// if this pipe is new.
    pub fn add(&mut self, pid: i32, fd: i32, kind: Kind, ino: u64, id: u32) -> Result<(), Error> {
        let pipe_id = ino as u32;
        let queued = self.data.entry(kind).or_default();
        if !queued.iter().any(|q| q.pipe_id == pipe_id) {
            let (size, bytes) = capture(pid, fd)?;
            debug!(
                "{pid}: {} {ino} (fd {fd}) holds {} queued bytes, capacity {size}",
                kind.name(),
                bytes.len()
            );
            queued.push(Queued {
                pipe_id,
                size,
                bytes,
            });
        }
        self.seen.push(Seen {
            pid,
            fd,
            kind,
            ino,
            id,
        });
        Ok(())
    }

    /// Write `pipes-data.img` and `fifo-data.img` (when there were pipes or
    /// FIFOs).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        for (kind, queued) in &self.data {
            if queued.is_empty() {
                continue;
            }
            let ty = kind.data_image();
            let name = ty.file_name(0);
            let err = |source| Error::Image {
                what: format!("cannot write {name}"),
                source,
            };
            let mut w = ImageWriter::create(dir, ty, &name).map_err(err)?;
            for q in queued {
                w.write_entry(&PipeDataEntry {
                    pipe_id: q.pipe_id,
                    bytes: q.bytes.len() as u32,
                    size: Some(q.size),
                    ..Default::default()
                })
                .map_err(err)?;
                w.write_raw(&q.bytes).map_err(err)?;
            }
            w.finish().map_err(err)?;
        }
        Ok(())
    }
}

/// A PIPE entry of files.img.
pub fn pipe_entry(id: u32, ino: u64, flags: u32) -> FileEntry {
    FileEntry {
        r#type: fd_types::PIPE,
        id,
        pipe: Some(Box::new(PipeEntry {
            id,
            pipe_id: ino as u32,
            flags: entry_flags(flags),
            fown: FownEntry::default(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A FIFO entry of files.img; its path and flags are in REG entry `regf_id`.
pub fn fifo_entry(id: u32, ino: u64, regf_id: u32) -> FileEntry {
    FileEntry {
        r#type: fd_types::FIFO,
        id,
        fifo: Some(Box::new(FifoEntry {
            id,
            pipe_id: ino as u32,
            regf_id: Some(regf_id),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Refuse what crust cannot restore: packet-mode pipes.
pub fn check_dumpable(pid: i32, fd: i32, flags: u32, what: &str) -> Result<(), Error> {
    if flags & libc::O_DIRECT as u32 != 0 {
        return Err(Error::unsupported(format!(
            "process {pid} has fd {fd} on a {what} in packet mode (O_DIRECT)"
        )));
    }
    Ok(())
}

/// The capacity of the pipe fd `fd` of `pid` is on and the bytes queued in
/// it, read without consuming them.
fn capture(pid: i32, fd: i32) -> Result<(u32, Vec<u8>), Error> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let other = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(sys_err(pid, format!("open {path} to read its pipe")))?;
    let size =
        sp::pipe_size(other.as_fd()).map_err(sys_err(pid, format!("F_GETPIPE_SZ of fd {fd}")))?;
    let queued =
        sp::queued_bytes(other.as_fd()).map_err(sys_err(pid, format!("FIONREAD of fd {fd}")))?;
    if queued == 0 {
        return Ok((size, Vec::new()));
    }
    let (r, w) = sp::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .map_err(sys_err(pid, "pipe2 for a copy of a pipe"))?;
    sp::set_pipe_size(w.as_fd(), size).map_err(sys_err(
        pid,
        format!("F_SETPIPE_SZ {size} for a copy of fd {fd}"),
    ))?;
    let n = match sp::tee(
        other.as_fd(),
        w.as_fd(),
        size as usize,
        libc::SPLICE_F_NONBLOCK,
    ) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => 0,
        Err(e) => return Err(sys_err(pid, format!("tee of the pipe of fd {fd}"))(e)),
    };
    if n != queued {
        return Err(Error::Restore {
            pid,
            what: format!(
                "could copy only {n} of the {queued} bytes queued in the pipe of fd {fd}"
            ),
        });
    }
    drop(w);
    let mut bytes = Vec::with_capacity(n);
    File::from(r)
        .read_to_end(&mut bytes)
        .map_err(sys_err(pid, format!("read of the copy of fd {fd}'s pipe")))?;
    if bytes.len() != n {
        return Err(Error::Restore {
            pid,
            what: format!(
                "read {} of the {n} bytes copied from fd {fd}'s pipe",
                bytes.len()
            ),
        });
    }
    Ok((size, bytes))
}

// ---------------------------------------------------------------- restore

/// One pipe or FIFO description of files.img.
#[derive(Debug, Clone)]
struct Desc {
    kind: Kind,
    pipe_id: u32,
    flags: u32,
    /// A FIFO's path.
    path: Option<PathBuf>,
    /// A deleted FIFO: the files.img id of its REG entry, opened by the
    /// ghost kind (made before this one).
    ghost: Option<u32>,
}

/// What one pipe holds at restore.
#[derive(Debug, Clone, Default)]
struct Data {
    size: Option<u32>,
    bytes: Vec<u8>,
}

/// The pipes and FIFOs of an image set, read and checked.
#[derive(Debug, Default)]
pub struct SharedFiles {
    descs: BTreeMap<u32, Desc>,
    data: HashMap<(Kind, u32), Data>,
}

/// Pipe and FIFO descriptions crust opened for the restore, by files.img
/// id; closed (dropped) once every task has its copies.
#[derive(Debug, Default)]
pub struct OpenPipes {
    by_id: HashMap<u32, OwnedFd>,
    /// Pipe ends and FIFO openings that keep the pipes alive while the
    /// descriptions are made.
    holders: Vec<OwnedFd>,
}

impl OpenPipes {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.by_id.get(&id).map(|f| f.as_fd())
    }
}

fn pipe_max_size() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

impl SharedFiles {
    /// Read the PIPE and FIFO entries of files.img and the queued data, and
    /// check them: data for a pipe no entry has, data larger than its pipe,
    /// a capacity this host refuses, a FIFO path that is gone or no longer
    /// a FIFO are errors.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
    ) -> Result<SharedFiles, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let files = loaded.entries()?;
        let ghosted = loaded.ghosted()?;
        let regs: HashMap<u32, &FileEntry> = files
            .iter()
            .filter(|f| f.r#type == fd_types::REG)
            .map(|f| (f.id, f))
            .collect();
        let mut out = SharedFiles::default();
        for f in files {
            let desc = match f.r#type {
                fd_types::PIPE => {
                    let p = f.pipe.as_ref().ok_or_else(|| {
                        bad(format!("files.img: PIPE entry {} has no pipe part", f.id))
                    })?;
                    Desc {
                        kind: Kind::Pipe,
                        pipe_id: p.pipe_id,
                        flags: p.flags,
                        path: None,
                        ghost: None,
                    }
                }
                fd_types::FIFO => {
                    let p = f.fifo.as_ref().ok_or_else(|| {
                        bad(format!("files.img: FIFO entry {} has no fifo part", f.id))
                    })?;
                    let rid = p.regf_id.unwrap_or(f.id);
                    let reg = regs
                        .get(&rid)
                        .and_then(|r| r.reg.as_ref())
                        .ok_or_else(|| {
                            bad(format!(
                                "files.img: FIFO {} refers to file {rid} for its path, which files.img does not have",
                                f.id
                            ))
                        })?;
                    let path = PathBuf::from(&reg.name);
                    let ghost = ghosted.contains(&rid).then_some(rid);
                    // Through the tree's mount namespace when it has its
                    // own; nothing to check on a mount not made yet.
                    let seen = crate::util::view::host_path(&path);
                    if let (None, Some(seen)) = (ghost, seen) {
                        let md = std::fs::metadata(seen).map_err(|source| Error::FileMissing {
                            path: path.clone(),
                            source,
                        })?;
                        if !md.file_type().is_fifo() {
                            return Err(Error::FileChanged {
                                path,
                                why: "it was a FIFO and is not one now".into(),
                            });
                        }
                    }
                    Desc {
                        kind: Kind::Fifo,
                        pipe_id: p.pipe_id,
                        flags: reg.flags,
                        path: Some(path),
                        ghost,
                    }
                }
                _ => continue,
            };
            if desc.flags & libc::O_DIRECT as u32 != 0 {
                return Err(Error::unsupported(format!(
                    "restoring {} {} in packet mode (O_DIRECT)",
                    desc.kind.name(),
                    f.id
                )));
            }
            out.descs.insert(f.id, desc);
        }
        out.load_data(dir)?;
        Ok(out)
    }

    /// The queued bytes of the pipes and FIFOs (pipes-data.img,
    /// fifo-data.img), checked against the descriptions and the host.
    fn load_data(&mut self, dir: &Path) -> Result<(), Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let max = pipe_max_size();
        for kind in [Kind::Pipe, Kind::Fifo] {
            let ty = kind.data_image();
            let name = ty.file_name(0);
            let img_err = |source| Error::Image {
                what: format!("cannot read image {name}"),
                source,
            };
            let mut rd = match ImageReader::open_typed(dir, ty, &name) {
                Ok(r) => r,
                Err(e) if e.is_missing() => continue,
                Err(e) => return Err(img_err(e)),
            };
            while let Some(rec) = rd.next_record().map_err(img_err)? {
                let e = PipeDataEntry::decode(&rec.entry).map_err(|source| {
                    img_err(crust_images::image::ImageError::Decode {
                        path: dir.join(&name),
                        offset: rec.offset,
                        message: PipeDataEntry::NAME,
                        source,
                    })
                })?;
                let known = self
                    .descs
                    .values()
                    .any(|d| d.kind == kind && d.pipe_id == e.pipe_id);
                if !known {
                    return Err(bad(format!(
                        "{name} has data for {} {}, which no files.img entry has",
                        kind.name(),
                        e.pipe_id
                    )));
                }
                if rec.payload.len() != e.bytes as usize {
                    return Err(bad(format!(
                        "{name}: {} {} should hold {} bytes, the image has {}",
                        kind.name(),
                        e.pipe_id,
                        e.bytes,
                        rec.payload.len()
                    )));
                }
                let cap = e.size.unwrap_or(max.min(1 << 16));
                if e.bytes > cap || e.bytes > max {
                    return Err(bad(format!(
                        "{name}: {} {} holds {} bytes, more than its capacity {cap}",
                        kind.name(),
                        e.pipe_id,
                        e.bytes
                    )));
                }
                if let Some(size) = e.size {
                    if size > max {
                        return Err(Error::unsupported(format!(
                            "{} {} had a capacity of {size} bytes, above this host's pipe-max-size {max}",
                            kind.name(),
                            e.pipe_id
                        )));
                    }
                }
                let data = Data {
                    size: e.size,
                    bytes: rec.payload,
                };
                if self.data.insert((kind, e.pipe_id), data).is_some() {
                    return Err(bad(format!(
                        "{name} has two entries for {} {}",
                        kind.name(),
                        e.pipe_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The fd type (`fd_types::PIPE` or `FIFO`) of files.img entry `id`,
    /// if it is a pipe or FIFO.
    #[cfg(test)]
    fn type_of(&self, id: u32) -> Option<i32> {
        self.descs.get(&id).map(|d| match d.kind {
            Kind::Pipe => fd_types::PIPE,
            Kind::Fifo => fd_types::FIFO,
        })
    }

    /// Forget the descriptions replaced by inherited fds; a pipe left with
    /// none is not made, and its queued data is not put back.
    pub fn drop_inherited(&mut self, inherited: &crate::files::inherit::Inherited) {
        self.descs.retain(|id, _| !inherited.contains(*id));
        let descs = &self.descs;
        self.data.retain(|(kind, pipe_id), _| {
            descs
                .values()
                .any(|d| d.kind == *kind && d.pipe_id == *pipe_id)
        });
    }

    /// Make every pipe and FIFO description in crust, data inside.
    #[cfg(test)]
    pub fn open(&self) -> Result<OpenPipes, Error> {
        self.open_with(&|_| None)
    }

    /// [`SharedFiles::open`], with `ghost_fd` giving the descriptions the
    /// ghost kind opened on deleted FIFOs (by their REG entry's id).
    fn open_with<'m>(
        &self,
        ghost_fd: &dyn Fn(u32) -> Option<BorrowedFd<'m>>,
    ) -> Result<OpenPipes, Error> {
        let me = crust_sys::process::getpid();
        let ghost_of = |id: u32, rid: u32| {
            ghost_fd(rid).ok_or_else(|| Error::Restore {
                pid: me,
                what: format!("the deleted FIFO of file {id} (file {rid}) was not made"),
            })
        };
        let mut out = OpenPipes::default();
        let mut groups: BTreeMap<(Kind, u32), Vec<u32>> = BTreeMap::new();
        for (id, d) in &self.descs {
            groups.entry((d.kind, d.pipe_id)).or_default().push(*id);
        }
        for ((kind, pipe_id), ids) in groups {
            let data = self.data.get(&(kind, pipe_id)).cloned().unwrap_or_default();
            let what = format!("{} {pipe_id}", kind.name());
            // The pipe, open for reading and writing by crust.
            let (rd, wr): (OwnedFd, OwnedFd) = match kind {
                Kind::Pipe => sp::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .map_err(sys_err(me, format!("pipe2 for {what}")))?,
                Kind::Fifo => {
                    let d0 = &self.descs[&ids[0]];
                    let path = match d0.ghost {
                        // Opened again through /proc: the same FIFO.
                        Some(rid) => PathBuf::from(format!(
                            "/proc/self/fd/{}",
                            ghost_of(ids[0], rid)?.as_raw_fd()
                        )),
                        None => seen(d0.path.as_deref().expect("FIFO has a path")),
                    };
                    let f = open_flags(&path, libc::O_RDWR)
                        .map_err(sys_err(me, format!("open {} for {what}", path.display())))?;
                    let g = f.try_clone().map_err(sys_err(me, "dup"))?;
                    (f, g)
                }
            };
            if let Some(size) = data.size {
                let now = sp::pipe_size(wr.as_fd()).map_err(sys_err(me, "F_GETPIPE_SZ"))?;
                if now != size {
                    sp::set_pipe_size(wr.as_fd(), size)
                        .map_err(sys_err(me, format!("F_SETPIPE_SZ {size} for {what}")))?;
                }
            }
            if !data.bytes.is_empty() {
                let mut f = File::from(wr.try_clone().map_err(sys_err(me, "dup"))?);
                f.write_all(&data.bytes).map_err(sys_err(
                    me,
                    format!("writing {} queued bytes into {what}", data.bytes.len()),
                ))?;
            }
            // One description per id: the pipe's own ends first, then new
            // openings of it.
            let (mut rd_used, mut wr_used) = (false, false);
            for id in ids {
                let d = &self.descs[&id];
                let acc = (d.flags & libc::O_ACCMODE as u32) as i32;
                let fd = match (kind, acc) {
                    (Kind::Pipe, libc::O_RDONLY) if !rd_used => {
                        rd_used = true;
                        rd.try_clone()
                    }
                    (Kind::Pipe, libc::O_WRONLY) if !wr_used => {
                        wr_used = true;
                        wr.try_clone()
                    }
                    (Kind::Pipe, _) => {
                        open_flags(Path::new(&format!("/proc/self/fd/{}", rd.as_raw_fd())), acc)
                    }
                    (Kind::Fifo, _) => match d.ghost {
                        Some(rid) => ghost_of(id, rid)?.try_clone_to_owned(),
                        None => open_flags(&seen(d.path.as_deref().expect("FIFO path")), acc),
                    },
                }
                .map_err(sys_err(me, format!("opening {what} for file {id}")))?;
                let keep = (libc::O_APPEND | libc::O_ASYNC | libc::O_NONBLOCK) as u32;
                sp::set_status_flags(fd.as_fd(), (d.flags & keep) as i32).map_err(sys_err(
                    me,
                    format!("F_SETFL {:#o} on file {id}", d.flags & keep),
                ))?;
                debug!(
                    "file {id}: {what} opened with flags {:#o}, {} bytes queued",
                    d.flags,
                    data.bytes.len()
                );
                out.by_id.insert(id, fd);
            }
            out.holders.push(rd);
            out.holders.push(wr);
        }
        Ok(out)
    }
}

/// Open `path` with access mode `acc`, non-blocking (so that a FIFO open
/// never waits), close-on-exec.
fn open_flags(path: &Path, acc: i32) -> std::io::Result<OwnedFd> {
    let mut o = OpenOptions::new();
    match acc {
        libc::O_WRONLY => o.write(true),
        libc::O_RDWR => o.read(true).write(true),
        _ => o.read(true),
    };
    o.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

// ------------------------------------------------------------ kind of file

/// Pipes and FIFOs as a kind of file (see [`crate::files::kind`]): read
/// from files.img, less those replaced by inherited fds.
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let mut s = SharedFiles::load(ctx.dir, ctx.files)?;
    s.drop_inherited(ctx.inherited);
    Ok(Box::new(s))
}

impl RestoreKind for SharedFiles {
    fn name(&self) -> &'static str {
        "pipes and FIFOs"
    }

    fn make(&mut self, made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(self.open_with(&|rid| made.get(rid))?))
    }
}

impl OpenKind for OpenPipes {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::PIPE || ty == fd_types::FIFO).then_some("pipe or FIFO")
    }
}

impl PipeDump {
    /// The files.img id of a pipe or FIFO description (fd `fd` of `pid`):
    /// the id of an fd seen before on the same description (in any
    /// process), or a new PIPE (FIFO + REG) entry whose pipe's queued
    /// bytes are saved.
    fn pipe_id(
        &mut self,
        (pid, fd): (i32, i32),
        kind: Kind,
        ino: u64,
        flags: u32,
        path: Option<(PathBuf, Option<u32>)>,
        ids: &mut Ids<'_>,
    ) -> Result<u32, Error> {
        let what = if kind == Kind::Pipe { "pipe" } else { "FIFO" };
        check_dumpable(pid, fd, flags, what)?;
        if let Some(id) = self.known(pid, fd, kind, ino) {
            return Ok(id);
        }
        let id = ids.new_id();
        self.add(pid, fd, kind, ino, id)?;
        match path {
            None => ids.files.push(pipe_entry(id, ino, flags)),
            // A deleted FIFO: its REG entry (and ghost) is recorded.
            Some((_, Some(regf_id))) => ids.files.push(fifo_entry(id, ino, regf_id)),
            Some((path, None)) => {
                let regf_id = ids.new_id();
                let cloexec = libc::O_CLOEXEC as u32;
                let reg = crate::files::reg_entry(regf_id, &path, flags & !cloexec, 0, true)?;
                ids.files.push(crate::files::reg_file(reg));
                ids.files.push(fifo_entry(id, ino, regf_id));
            }
        }
        Ok(id)
    }
}

impl DumpKind for PipeDump {
    /// Unnamed pipes by their link; FIFOs by stat, among paths.
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        use std::os::unix::fs::MetadataExt;
        let (pid, fd) = (f.pid, f.fd);
        let (kind, ino, path) = match f.class {
            Target::Pipe(ino) => (Kind::Pipe, ino, None),
            Target::Path => {
                let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                    .map_err(sys_err(pid, format!("stat fd {fd}")))?;
                if !md.file_type().is_fifo() {
                    return Ok(None);
                }
                (Kind::Fifo, md.ino(), Some(PathBuf::from(f.target)))
            }
            _ => return Ok(None),
        };
        let path = path.map(|p| (p, f.path_reg));
        let id = self.pipe_id((pid, fd), kind, ino, f.info.flags, path, ids)?;
        let ty = match kind {
            Kind::Pipe => fd_types::PIPE,
            Kind::Fifo => fd_types::FIFO,
        };
        Ok(Some((id, ty)))
    }

    fn write_images(&mut self, dir: &Path) -> Result<(), Error> {
        self.write(dir)
    }
}

/// The tree's path `p` as crust opens it: through the tree's root when it
/// has a mount namespace of its own (see [`crate::util::view`]).
fn seen(p: &Path) -> PathBuf {
    crate::util::view::host_path(p).unwrap_or_else(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::write_image;

    fn write_files(dir: &Path, entries: &[FileEntry]) -> Result<(), Error> {
        write_image(dir, ImageType::Files, 0, entries)
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crust-pipes-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn data_img(dir: &Path, entries: &[(u32, u32, Option<u32>, &[u8])]) {
        let ty = ImageType::PipesData;
        let mut w = ImageWriter::create(dir, ty, &ty.file_name(0)).unwrap();
        for (pipe_id, bytes, size, raw) in entries {
            w.write_entry(&PipeDataEntry {
                pipe_id: *pipe_id,
                bytes: *bytes,
                size: *size,
                ..Default::default()
            })
            .unwrap();
            w.write_raw(raw).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn inode_of_link() {
        assert_eq!(pipe_inode("pipe:[1178760]"), Some(1178760));
        assert_eq!(pipe_inode("socket:[5]"), None);
        assert_eq!(pipe_inode("pipe:[x]"), None);
    }

    #[test]
    fn load_checks_data() {
        let d = tmpdir("load");
        write_files(&d, &[pipe_entry(4, 77, 1), pipe_entry(5, 77, 0)]).unwrap();
        // Good: 3 bytes for pipe 77.
        data_img(&d, &[(77, 3, Some(65536), b"abc")]);
        let s = SharedFiles::load(&d, &crate::files::loaded::LoadedFiles::read(&d)).unwrap();
        assert_eq!(s.type_of(4), Some(fd_types::PIPE));
        assert_eq!(s.type_of(9), None);
        let open = s.open().unwrap();
        let rd = open.get(5).unwrap();
        assert_eq!(sp::queued_bytes(rd).unwrap(), 3);
        assert_eq!(sp::status_flags(open.get(4).unwrap()).unwrap() & 3, 1);
        drop(open);
        // Data for a pipe nobody has.
        data_img(&d, &[(78, 3, Some(65536), b"abc")]);
        let e = SharedFiles::load(&d, &crate::files::loaded::LoadedFiles::read(&d))
            .unwrap_err()
            .to_string();
        assert!(e.contains("78"), "{e}");
        // A length past the end of the file.
        data_img(&d, &[(77, 30, Some(65536), b"abc")]);
        assert!(SharedFiles::load(&d, &crate::files::loaded::LoadedFiles::read(&d)).is_err());
        // More than the capacity.
        data_img(&d, &[(77, 3, Some(2), b"abc")]);
        assert!(SharedFiles::load(&d, &crate::files::loaded::LoadedFiles::read(&d)).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
