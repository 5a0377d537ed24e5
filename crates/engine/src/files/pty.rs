//! Pseudo-terminal pairs held by the tree, in CRIU's images.
//!
//! Dump: an fd on `/dev/ptmx` or `/dev/pts/ptmx` (a master) or on
//! `/dev/pts/N` whose master (on the same devpts) is held by a process of
//! the tree is a TTY entry of files.img (status
//! flags, `tty_info_id`). Each end of a pair has one `tty-info.img` entry
//! (type PTY, `pty.index` N, `rdev` telling master from slave) with what
//! crust reads from a pidfd_getfd copy of the fd: termios, window size,
//! packet mode, the lock and exclusive mode. A `/dev/pts/N` whose master is
//! outside the tree stays the shell job's terminal (`-j`, [`crate::files`]).
//! Bytes waiting to be read on an end (what the slave wrote for the
//! master; the input the slave has not read, partial line included) are
//! read out by crust at dump and saved in `tty-data.img` (`tty_id`: the
//! end's tty-info id); they are written back into the pty, at once if the
//! tree runs on, and on restore, with the line discipline's processing off
//! so they come back as they were. (Not with packet mode on.) When the
//! slave is the controlling terminal of a session of the tree, its info
//! records the session (`sid`) and the foreground process group (`pgrp`).
//!
//! Restore: for each pair crust opens a new `/dev/ptmx` of the tree (in
//! its mount namespace when it has one: [`super::pty_ns`]), again until
//! the slave gets its number N if N is free, unlocks it, opens one
//! description per slave entry with TIOCGPTPEER, sets termios, window size and packet mode as
//! recorded, and locks the slave again if it was locked. Tasks get the
//! descriptions over SCM_RIGHTS. Only one master description per pair can
//! be made (another open of /dev/ptmx is a new pair). A session leader
//! gets its controlling terminal back (TIOCSCTTY on one of its fds on the
//! slave, then TIOCSPGRP) once every task of the tree has its fds.

use super::pty_info::{end_image, EndImage};
use crate::files::classify::Target;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, OpenKind, RestoreKind};
use crate::util::{proc_err, read_image, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::tty::{TtyDataEntry, TtyFileEntry, TtyInfoEntry, TtyType};
use crust_proc::ProcRoot;
use crust_sys::tty as sys;
use log::{debug, warn};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Major of /dev/ptmx (TTYAUX) and its minor.
const PTMX_MAJOR: u32 = 5;
const PTMX_MINOR: u32 = 2;
/// Major of Unix98 pty slaves (UNIX98_PTY_SLAVE_MAJOR): /dev/pts/N is
/// 136:N.
pub(super) const PTS_MAJOR: u32 = 136;
/// Number of c_cc entries of the kernel's termios.
pub(super) const NCCS: usize = 19;
/// O_LARGEFILE as the kernel shows it in fdinfo on x86_64 (glibc's is 0).
pub(super) const O_LARGEFILE_KERNEL: u32 = 0o100000;
/// File status flags a restored description gets back.
pub(super) const KEPT_FLAGS: u32 = (libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND) as u32;

pub(super) fn rdev_of(major: u32, minor: u32) -> u32 {
    // glibc's makedev, which is what stat's st_rdev holds.
    libc::makedev(major, minor) as u32
}

/// One end of a pty, as an fd of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub master: bool,
    pub index: u32,
}

// ---------------------------------------------------------------- dump

pub(super) struct Seen {
    pub pid: i32,
    pub fd: i32,
    pub id: u32,
}

/// Pty ends seen while dumping a tree.
#[derive(Default)]
pub struct PtyDump {
    tree: Vec<i32>,
    /// Indexes of the ptys whose master a process of the tree holds
    /// (computed at the first terminal fd).
    masters: Option<HashSet<u32>>,
    /// The device of the devpts instance of each of those, by index.
    devs: HashMap<u32, u64>,
    pub(super) seen: Vec<Seen>,
    pub(super) infos: Vec<TtyInfoEntry>,
    /// tty-info.img id of the CTTY entry (/dev/tty) of each pty, by index.
    pub(super) ctty_info_of: HashMap<u32, u32>,
    /// tty-info.img id of each end already recorded.
    info_of: HashMap<(bool, u32), u32>,
    /// tty-info.img id of each hung-up slave recorded, by index.
    hung_info_of: HashMap<u32, u32>,
    /// (session, foreground group) of the ptys that are the controlling
    /// terminal of a session of the tree, by index.
    pub(super) ctty: HashMap<u32, (u32, u32)>,
    /// crust's copy of each end seen, by (master, index).
    copies: HashMap<(bool, u32), OwnedFd>,
    /// Bytes read out of ends: (tty-info id, end, bytes).
    captured: Vec<(u32, End, Vec<u8>)>,
    /// The bytes are the image's (the tree was killed): not put back.
    kept: bool,
    /// `orphan_pts_master`, and the index of the slave taken without its
    /// master ([`super::pty_orphan`]).
    pub(super) orphan: (bool, Option<u32>),
}

impl Drop for PtyDump {
    fn drop(&mut self) {
        if !self.kept {
            put_back(&self.captured, &self.copies);
        }
    }
}

/// Write back what was read out of the ends (the tree runs on).
fn put_back(captured: &[(u32, End, Vec<u8>)], copies: &HashMap<(bool, u32), OwnedFd>) {
    for (_, end, data) in captured {
        let (Some(m), Some(sl)) = (
            copies.get(&(true, end.index)),
            copies.get(&(false, end.index)),
        ) else {
            warn!(
                "{} unread bytes of /dev/pts/{} could not be put back",
                data.len(),
                end.index
            );
            continue;
        };
        if let Err(e) = inject(m.as_fd(), sl.as_fd(), end.master, data) {
            warn!(
                "putting {} unread bytes back into /dev/pts/{}: {e}",
                data.len(),
                end.index
            );
        }
    }
}

/// Queue `data` to be read on one end of a pty: on the master
/// (`for_master`: as if the slave had written it, its output processing
/// off) or on the slave (as if typed on the master, input processing,
/// signals and echo off; in canonical mode lines stay lines, a partial
/// line stays partial).
pub(super) fn inject(
    master: BorrowedFd<'_>,
    slave: BorrowedFd<'_>,
    for_master: bool,
    data: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let t = sys::termios(slave)?;
    let mut quiet = t;
    let (via, reader) = if for_master {
        quiet.c_oflag &= !libc::OPOST;
        (slave, master)
    } else {
        quiet.c_iflag = 0;
        quiet.c_lflag &=
            !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ISIG | libc::IEXTEN);
        (master, slave)
    };
    sys::set_termios(slave, &quiet)?;
    // What the reader will count as readable (a canonical slave counts
    // complete lines only).
    let expect = if !for_master && t.c_lflag & libc::ICANON != 0 {
        data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
    } else {
        data.len()
    };
    let before = sys::queued(reader).unwrap_or(0) as usize;
    let wrote = std::fs::File::from(via.try_clone_to_owned()?).write_all(data);
    // The pty hands the bytes to the reading side's line discipline from
    // a work queue: wait until they are there before the termios change.
    let t0 = std::time::Instant::now();
    if expect == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    while wrote.is_ok()
        && expect > 0
        && (sys::queued(reader).unwrap_or(0) as usize) < before + expect
        && t0.elapsed() < std::time::Duration::from_secs(1)
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if expect < data.len() {
        // The partial line has no count to wait for.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sys::set_termios(slave, &t)?;
    wrote
}

/// Read out the bytes waiting to be read on an end (crust's copy `f`).
/// The slave's partial line is only readable out of canonical mode.
fn read_out(f: BorrowedFd<'_>, master: bool) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let saved = if master {
        None
    } else {
        let t = sys::termios(f)?;
        let mut raw = t;
        raw.c_lflag &= !libc::ICANON;
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        sys::set_termios(f, &raw)?;
        Some(t)
    };
    let n = sys::queued(f).unwrap_or(0) as usize;
    let mut out = vec![0u8; n];
    let mut got = 0;
    let mut file = std::fs::File::from(f.try_clone_to_owned()?);
    let r = (|| {
        while got < n {
            match file.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    if let Some(t) = saved {
        sys::set_termios(f, &t)?;
    }
    r?;
    out.truncate(got);
    Ok(out)
}

/// The pty index of a /dev/pts/N link.
fn pts_index(link: &str) -> Option<u32> {
    let n = link.strip_prefix("/dev/pts/")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// (session, controlling terminal (tty_nr: the kernel's encoding of
/// major:minor, 0 for none), foreground group of it) of `pid`, from
/// /proc/PID/stat.
pub(super) fn ctty_of(pid: i32) -> (u32, u32, i64) {
    match crust_proc::stat(&crust_proc::ProcRoot::default(), pid) {
        Ok(st) => (st.session as u32, st.tty_nr as u32, i64::from(st.tpgid)),
        Err(_) => (0, 0, -1),
    }
}

/// (major, minor) of the kernel's encoding of tty_nr.
pub(super) fn decode_tty_nr(v: u32) -> (u32, u32) {
    ((v >> 8) & 0xfff, (v & 0xff) | ((v >> 12) & 0xfff00))
}

impl PtyDump {
    /// The processes of the tree (those whose /dev/ptmx fds make a
    /// /dev/pts/N fd part of a pair rather than a shell job's terminal).
    pub fn set_tree(&mut self, pids: Vec<i32>) {
        self.tree = pids;
    }

    pub(super) fn masters(&mut self, proc: &ProcRoot) -> Result<&HashSet<u32>, Error> {
        if self.masters.is_none() {
            let found = self.find_masters(proc)?;
            super::pty_ns::check_tree_devpts(&found)?;
            let mut devs: HashMap<u32, u64> = HashMap::new();
            for (i, dev) in found {
                if devs.insert(i, dev).is_some_and(|d| d != dev) {
                    return Err(Error::unsupported(format!(
                        "the tree holds the masters of two ptys /dev/pts/{i}, of two devpts instances: crust makes the tree's ptys again in one"
                    )));
                }
            }
            let set: HashSet<u32> = devs.keys().copied().collect();
            self.find_cttys(&set)?;
            debug!("pty masters held by the tree: {set:?}");
            self.devs = devs;
            self.masters = Some(set);
        }
        self.masters
            .as_ref()
            .ok_or_else(|| Error::unsupported("the tree's pty masters were not read".to_string()))
    }

    /// The ptys whose master a process of the tree holds: (index, device
    /// of their devpts instance) of each master fd.
    fn find_masters(&self, proc: &ProcRoot) -> Result<Vec<(u32, u64)>, Error> {
        let mut devs = Vec::new();
        for &pid in &self.tree {
            let fds = crust_proc::fds(proc, pid).map_err(proc_err(pid))?;
            for (fd, target) in fds {
                if !super::pty_ns::is_ptmx_link(&target) {
                    continue;
                }
                let info = crust_proc::fdinfo(proc, pid, fd).map_err(proc_err(pid))?;
                let Some(i) = info
                    .get("tty-index")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                else {
                    continue;
                };
                let copy = crate::files::fdpass::take_fd(pid, fd)?;
                let dev = super::pty_ns::master_devpts(copy.as_fd()).map_err(sys_err(
                    pid,
                    format!("TIOCGPTPEER (O_PATH) on the pty master of /dev/pts/{i} (fd {fd})"),
                ))?;
                devs.push((i, dev));
            }
        }
        Ok(devs)
    }

    /// The sessions of the tree whose controlling terminal is one of the
    /// ptys `set` (by index): (session, foreground group) as the images
    /// record them.
    fn find_cttys(&mut self, set: &HashSet<u32>) -> Result<(), Error> {
        for &pid in &self.tree {
            let (sid, tty_nr, tpgid) = ctty_of(pid);
            let (major, minor) = decode_tty_nr(tty_nr);
            if major != PTS_MAJOR || !(set.contains(&minor) || self.orphan.0) {
                continue;
            }
            let index = minor;
            if tpgid <= 0 {
                return Err(Error::unsupported(format!(
                    "process {pid} has /dev/pts/{index} as its controlling terminal with no foreground process group"
                )));
            }
            if !self.tree.contains(&(sid as i32)) {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} is the controlling terminal of session {sid}, whose leader is not a process of the dumped tree"
                )));
            }
            let ids = if same_pid_ns(pid) {
                (sid, tpgid as u32)
            } else {
                super::pty_ns::ns_session(pid, tpgid as i32, &self.tree)?
            };
            self.ctty.insert(index, ids);
        }
        Ok(())
    }

    /// Whether fd link `target` (with fdinfo `info`) is an end of a pty
    /// pair whose master the tree holds.
    pub fn end_of(
        &mut self,
        proc: &ProcRoot,
        pid: i32,
        fd: i32,
        target: &str,
        info: &crust_proc::FdInfo,
    ) -> Result<Option<End>, Error> {
        let index = info.get("tty-index").and_then(|v| v.trim().parse().ok());
        if super::pty_ns::is_ptmx_link(target) && index.is_some() {
            // Also finds the controlling terminals on the tree's ptys.
            self.masters(proc)?;
            return Ok(index.map(|index| End {
                master: true,
                index,
            }));
        }
        let Some(index) = pts_index(target) else {
            return Ok(None);
        };
        if !self.masters(proc)?.contains(&index) {
            return self.orphan_end(pid, fd, index);
        }
        // A /dev/pts/N of another devpts than the master N's is not its
        // slave.
        if let Some(dev) = self.devs.get(&index) {
            let own =
                super::pty_ns::fd_dev(pid, fd).map_err(sys_err(pid, format!("stat of fd {fd}")))?;
            if own != *dev {
                return Ok(None);
            }
        }
        Ok(Some(End {
            master: false,
            index,
        }))
    }

    /// The files.img id of the description fd `fd` of `pid` is on, if an
    /// fd seen before (in any process) is on the same one.
    pub fn known(&self, pid: i32, fd: i32) -> Option<u32> {
        self.seen
            .iter()
            .find(|s| crust_sys::process::kcmp_file(s.pid, pid, s.fd, fd).unwrap_or(false))
            .map(|s| s.id)
    }

    /// A new description on a pty end: its TTY entry of files.img; the
    /// end's tty-info.img entry is recorded the first time.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        end: End,
        flags: u32,
        id: u32,
    ) -> Result<FileEntry, Error> {
        let what = if end.master {
            format!("the pty master of /dev/pts/{} (fd {fd})", end.index)
        } else {
            format!("/dev/pts/{} (fd {fd})", end.index)
        };
        let info_id = match self.info_of.get(&(end.master, end.index)) {
            Some(i) => *i,
            None => {
                let pidfd = crust_sys::unix::pidfd_open(pid).map_err(sys_err(pid, "pidfd_open"))?;
                let copy = crust_sys::unix::pidfd_getfd(pidfd.as_fd(), fd)
                    .map_err(sys_err(pid, format!("pidfd_getfd of {what}")))?;
                let info_id = super::pty_ns::info_id(end)?;
                let mut e = super::pty_info::read_info(pid, copy.as_fd(), end, info_id, &what)?;
                if sys::queued(copy.as_fd()).unwrap_or(0) > 0 || !end.master {
                    if e.packet_mode {
                        warn!("{pid}: unread bytes on {what} (packet mode) are not saved");
                    } else {
                        let data = read_out(copy.as_fd(), end.master)
                            .map_err(sys_err(pid, format!("reading the unread bytes of {what}")))?;
                        if !data.is_empty() {
                            debug!("{pid}: {what}: {} unread bytes saved", data.len());
                            self.captured.push((info_id, end, data));
                        }
                    }
                }
                self.copies.insert((end.master, end.index), copy);
                // On both ends, as CRIU records it.
                if let Some(&(sid, pgrp)) = self.ctty.get(&end.index) {
                    e.sid = sid;
                    e.pgrp = pgrp;
                }
                debug!(
                    "{pid}: {what}: tty info {info_id}, locked {} packet {} winsize {:?}",
                    e.locked, e.packet_mode, e.winsize
                );
                self.infos.push(e);
                self.info_of.insert((end.master, end.index), info_id);
                info_id
            }
        };
        self.seen.push(Seen { pid, fd, id });
        Ok(FileEntry {
            r#type: fd_types::TTY,
            id,
            tty: Some(Box::new(TtyFileEntry {
                id,
                tty_info_id: info_id,
                flags,
                fown: FownEntry::default(),
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// A new description on a hung-up slave ([`super::pty_hung`]).
    fn add_hung(
        &mut self,
        pid: i32,
        fd: i32,
        index: u32,
        flags: u32,
        id: u32,
    ) -> Result<FileEntry, Error> {
        let info_id = match self.hung_info_of.get(&index) {
            Some(i) => *i,
            None => {
                let info_id = super::pty_ns::info_id(End {
                    master: false,
                    index,
                })?;
                self.infos
                    .push(super::pty_info::hung_info(pid, fd, index, info_id)?);
                self.hung_info_of.insert(index, info_id);
                info_id
            }
        };
        self.seen.push(Seen { pid, fd, id });
        Ok(FileEntry {
            r#type: fd_types::TTY,
            id,
            tty: Some(Box::new(TtyFileEntry {
                id,
                tty_info_id: info_id,
                flags,
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// Write `tty-info.img` (nothing without ptys).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        if self.infos.is_empty() {
            return Ok(());
        }
        write_image(dir, ImageType::TtyInfo, 0, &self.infos)?;
        if !self.captured.is_empty() {
            let data: Vec<TtyDataEntry> = self
                .captured
                .iter()
                .map(|(id, _, d)| TtyDataEntry {
                    tty_id: *id,
                    data: d.clone(),
                    ..Default::default()
                })
                .collect();
            write_image(dir, ImageType::TtyData, 0, &data)?;
        }
        Ok(())
    }

    /// The dump succeeded: what was read out of the ptys belongs to the
    /// images. The returned action writes it back, for a tree that runs
    /// on (dump -R, or a failure after this point).
    pub fn take_put_back(&mut self) -> Box<dyn FnOnce() + Send> {
        self.kept = true;
        let captured = std::mem::take(&mut self.captured);
        let copies = std::mem::take(&mut self.copies);
        Box::new(move || put_back(&captured, &copies))
    }
}

/// Whether `pid` is in crust's pid namespace (its pids in /proc are
/// those the images record).
fn same_pid_ns(pid: i32) -> bool {
    let a = std::fs::read_link("/proc/self/ns/pid");
    let b = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
    matches!((a, b), (Ok(a), Ok(b)) if a == b)
}

// ---------------------------------------------------------------- restore

#[derive(Debug, Default)]
pub(super) struct PairImage {
    /// (files.img id, flags) of the master description.
    pub(super) master: Option<(u32, u32)>,
    master_info: Option<EndImage>,
    /// (files.img id, flags) of each slave description.
    pub(super) slaves: Vec<(u32, u32)>,
    pub(super) slave_info: Option<EndImage>,
    /// (session, foreground group) when the slave is the controlling
    /// terminal of a session of the tree.
    ctty: Option<(i32, i32)>,
    /// Hung up: its master was closed (only slaves, no termios).
    pub(super) hung: bool,
    /// Bytes that were waiting to be read on the master and on the slave.
    master_data: Vec<u8>,
    pub(super) slave_data: Vec<u8>,
}

/// The pty pairs of an image set (those fds use), read and checked.
#[derive(Debug, Default)]
pub struct Ptys {
    /// By dump-time pty index.
    pub(super) pairs: BTreeMap<u32, PairImage>,
    /// Descriptions on /dev/tty (CTTY): files.img id to (flags, session).
    pub(super) ctty_files: BTreeMap<u32, (u32, i32)>,
    /// `orphan_pts_master`: where the master of a slave without one goes.
    pub(super) orphan: Option<crate::options::Hooks>,
}

/// Descriptions on ptys crust made, by files.img id.
pub type OpenPtys = crate::files::fdpass::MadeFds;

impl Ptys {
    /// Read the TTY entries that fds of `fd_ids` use and their
    /// tty-info.img entries; check them all.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
        fd_ids: &[u32],
        orphan: Option<crate::options::Hooks>,
    ) -> Result<Ptys, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let mut out = Ptys {
            orphan,
            ..Default::default()
        };
        if fd_ids.is_empty() {
            return Ok(out);
        }
        let files: Vec<FileEntry> = loaded.entries()?.to_vec();
        let by_id: HashMap<u32, &FileEntry> = files.iter().map(|f| (f.id, f)).collect();
        let infos: Vec<TtyInfoEntry> = read_image(dir, ImageType::TtyInfo, 0)?;
        let data: Vec<TtyDataEntry> = match read_image(dir, ImageType::TtyData, 0) {
            Ok(v) => v,
            Err(Error::Image { source, .. }) if source.is_missing() => Vec::new(),
            Err(e) => return Err(e),
        };
        for d in &data {
            if !infos.iter().any(|i| i.id == d.tty_id) {
                return Err(bad(format!(
                    "tty-data.img has bytes for tty {}, which tty-info.img does not have",
                    d.tty_id
                )));
            }
        }
        let data_of = |info: u32| -> Vec<u8> {
            data.iter()
                .filter(|d| d.tty_id == info)
                .flat_map(|d| d.data.iter().copied())
                .collect()
        };
        let mut done = HashSet::new();
        for &id in fd_ids {
            if !done.insert(id) {
                continue;
            }
            let t = by_id
                .get(&id)
                .filter(|f| f.r#type == fd_types::TTY)
                .and_then(|f| f.tty.as_ref())
                .ok_or_else(|| {
                    bad(format!(
                        "an fd refers to tty file id {id}, which files.img does not have"
                    ))
                })?;
            let info = infos
                .iter()
                .find(|i| i.id == t.tty_info_id)
                .ok_or_else(|| {
                    bad(format!(
                        "tty file {id} refers to tty info {}, which tty-info.img does not have",
                        t.tty_info_id
                    ))
                })?;
            if info.r#type == TtyType::CTTY {
                out.add_ctty_file(id, t, info, &bad)?;
                continue;
            }
            if info.r#type != TtyType::PTY {
                return Err(Error::unsupported(format!(
                    "tty file {id} is a terminal of type {:?} (only pty pairs so far)",
                    info.r#type
                )));
            }
            let index = info
                .pty
                .as_ref()
                .ok_or_else(|| bad(format!("tty info {} (a pty) has no pty index", info.id)))?
                .index;
            let (major, minor) = (libc::major(info.rdev as u64), libc::minor(info.rdev as u64));
            let master = if info.rdev == rdev_of(PTMX_MAJOR, PTMX_MINOR) {
                true
            } else if major == PTS_MAJOR && minor == index {
                false
            } else {
                return Err(bad(format!(
                    "tty info {}: device {major}:{minor} is neither /dev/ptmx nor /dev/pts/{index}",
                    info.id
                )));
            };
            if t.flags & !(KEPT_FLAGS | O_LARGEFILE_KERNEL | libc::O_NOCTTY as u32) != 0
                || t.flags & libc::O_ACCMODE as u32 == libc::O_ACCMODE as u32
            {
                return Err(bad(format!("tty file {id}: flags {:#o}", t.flags)));
            }
            let end = end_image(info, &bad)?;
            let pair = out.pairs.entry(index).or_default();
            if master {
                if let Some((other, _)) = pair.master {
                    return Err(Error::unsupported(format!(
                        "the pty master of /dev/pts/{index} has two open file descriptions (files {other} and {id}): only one can be made again"
                    )));
                }
                pair.master = Some((id, t.flags));
                pair.master_info = Some(end);
                pair.master_data = data_of(info.id);
            } else {
                pair.slaves.push((id, t.flags));
                pair.hung |= info.termios.is_none();
                pair.slave_info = Some(end);
                pair.slave_data = data_of(info.id);
            }
            // The session is recorded on either end (CRIU: on both).
            if info.sid != 0 {
                let (sid, pgrp) = (info.sid as i32, info.pgrp as i32);
                if sid <= 0 || pgrp <= 0 {
                    return Err(bad(format!(
                        "tty info {}: session {} or group {} out of range",
                        info.id, info.sid, info.pgrp
                    )));
                }
                pair.ctty = Some((sid, pgrp));
            }
        }
        out.check_pairs()?;
        out.check_ctty_files()?;
        Ok(out)
    }

    /// Every pair has its master, but a hung-up one, which has only slaves.
    fn check_pairs(&self) -> Result<(), Error> {
        for (index, p) in &self.pairs {
            if p.hung && (p.master.is_some() || p.ctty.is_some()) {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} is both hung up and part of a live pair"
                )));
            }
            if p.master.is_none() && !p.hung && !self.orphan_ok(*index) {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} is held without its master (a pty whose master is outside the tree needs --shell-job)"
                )));
            }
        }
        Ok(())
    }

    /// Check that every controlling terminal can be given back: its
    /// session leader is a live process of the tree (given the slave
    /// through a lent fd if it holds none), and its foreground group is a
    /// group of that session.
    /// `procs`: (pid, sid, pgid, fds) of every process.
    pub fn check_sessions<'a>(
        &self,
        procs: impl Iterator<Item = (i32, i32, i32, Option<&'a [FdinfoEntry]>)> + Clone,
    ) -> Result<(), Error> {
        for (index, p) in &self.pairs {
            let Some((sid, pgrp)) = p.ctty else { continue };
            let leader = procs.clone().find(|q| q.0 == sid);
            let Some((_, lsid, _, Some(_))) = leader else {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} was the controlling terminal of session {sid}, whose leader is not a live process of the tree"
                )));
            };
            if lsid != sid {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} was the controlling terminal of session {sid}, whose leader is in session {lsid}"
                )));
            }
            if !procs.clone().any(|q| q.1 == sid && q.2 == pgrp) {
                return Err(Error::unsupported(format!(
                    "/dev/pts/{index} had process group {pgrp} in the foreground, which is not a group of session {sid} in the tree"
                )));
            }
        }
        Ok(())
    }

    /// The sessions whose controlling terminal is a pty of the image.
    pub(super) fn ctty_sessions(&self) -> impl Iterator<Item = i32> + '_ {
        self.pairs.values().filter_map(|p| p.ctty.map(|c| c.0))
    }

    /// For the leader of a session whose controlling terminal is a pty of
    /// the tree: its fd on the slave and the foreground group.
    pub fn ctty_of(&self, pid: i32, fds: &[FdinfoEntry]) -> Option<(i32, i32)> {
        self.pairs.values().find_map(|p| {
            let (sid, pgrp) = p.ctty?;
            if sid != pid {
                return None;
            }
            let fd = fds.iter().find(|f| {
                f.r#type == fd_types::TTY && p.slaves.iter().any(|(id, _)| *id == f.id)
            })?;
            Some((fd.fd as i32, pgrp))
        })
    }

    /// For the leader of a session whose controlling terminal is a pty of
    /// the tree but which holds no fd on its slave: the master's files.img
    /// id and the foreground group.
    pub fn ctty_lent(&self, pid: i32, fds: &[FdinfoEntry]) -> Option<(u32, i32)> {
        if self.ctty_of(pid, fds).is_some() {
            return None;
        }
        self.pairs.values().find_map(|p| {
            let (sid, pgrp) = p.ctty?;
            (sid == pid).then_some((p.master?.0, pgrp))
        })
    }

    /// Make every pair and its descriptions, through the tree's
    /// `/dev/ptmx` (in its mount namespace when it has its own), each
    /// slave with the index it had if it is free.
    pub fn open(&self) -> Result<OpenPtys, Error> {
        if self.pairs.is_empty() {
            return Ok(OpenPtys::default());
        }
        let made = super::pty_ns::in_tree_mnt(|| self.open_here());
        // Masters made for bind mounts and not taken are of no pair.
        crate::util::ptmx::drop_kept();
        made
    }

    fn open_here(&self) -> Result<OpenPtys, Error> {
        let me = crust_sys::process::getpid();
        let mut out = OpenPtys::default();
        for (index, p) in &self.pairs {
            if p.hung {
                let made = super::pty_info::open_hung(&p.slaves, KEPT_FLAGS, *index).map_err(
                    sys_err(me, format!("making the hung-up /dev/pts/{index} again")),
                )?;
                for (id, s) in made {
                    out.insert(id, s);
                }
                continue;
            }
            let Some((mid, mflags)) = p.master else {
                self.open_orphan(*index, p, &mut out)?;
                continue;
            };
            let what = format!("the pty pair that was /dev/pts/{index}");
            let err = |op: &str| sys_err(me, format!("{op} for {what}"));
            let (master, now) = match crate::util::ptmx::take_master(*index) {
                // Made with the mount tree, for a bind mount of its slave.
                Some(m) => {
                    super::pty_ns::set_status_flags(m.as_fd(), mflags)
                        .map_err(err("F_SETFL on the master"))?;
                    (m, *index)
                }
                None => {
                    crate::util::ptmx::open_at_index(*index, &|| super::pty_ns::open_ptmx(mflags))
                        .map_err(err("open /dev/ptmx"))?
                }
            };
            let m = master.as_fd();
            sys::set_pty_locked(m, false).map_err(err("TIOCSPTLCK 0"))?;
            for &(sid, sflags) in &p.slaves {
                let s =
                    sys::open_peer(m, (sflags & KEPT_FLAGS) as i32).map_err(err("TIOCGPTPEER"))?;
                out.insert(sid, s);
            }
            if let Some(si) = &p.slave_info {
                // Through a slave description of the pair (any will do).
                let s = p
                    .slaves
                    .first()
                    .and_then(|(sid, _)| out.get(*sid))
                    .expect("a slave info comes with a slave file");
                if let Some(t) = &si.termios {
                    sys::set_termios(s.as_fd(), t).map_err(err("TCSETS2 on the slave"))?;
                }
                if let Some(w) = &si.winsize {
                    sys::set_winsize(s.as_fd(), w).map_err(err("TIOCSWINSZ on the slave"))?;
                }
                if si.exclusive {
                    sys::set_exclusive(s.as_fd(), true).map_err(err("TIOCEXCL on the slave"))?;
                }
                if let Some((uid, gid)) = si.owner {
                    let uid = crate::util::idmap::to_host_uid(uid);
                    let gid = crate::util::idmap::to_host_gid(gid);
                    std::os::unix::fs::fchown(s, Some(uid), Some(gid))
                        .map_err(err("fchown of the slave"))?;
                }
            }
            let mi = p.master_info.as_ref().expect("checked by load");
            if let Some(t) = &mi.termios {
                sys::set_termios(m, t).map_err(err("TCSETS2 on the master"))?;
            }
            if p.slave_info.is_none() {
                if let Some(w) = &mi.winsize {
                    sys::set_winsize(m, w).map_err(err("TIOCSWINSZ on the master"))?;
                }
            }
            // The bytes that were waiting to be read, through a slave
            // description (a spare one if the tree holds none).
            if !p.master_data.is_empty() || !p.slave_data.is_empty() {
                let spare;
                let s = match p.slaves.first().and_then(|(sid, _)| out.get(*sid)) {
                    Some(s) => s,
                    None => {
                        spare = sys::open_peer(m, libc::O_RDWR).map_err(err("TIOCGPTPEER"))?;
                        spare.as_fd()
                    }
                };
                for (for_master, d) in [(true, &p.master_data), (false, &p.slave_data)] {
                    if !d.is_empty() {
                        inject(m, s, for_master, d)
                            .map_err(err("putting the unread bytes back"))?;
                    }
                }
            }
            if mi.packet_mode {
                sys::set_packet_mode(m, true).map_err(err("TIOCPKT 1"))?;
            }
            if mi.locked {
                sys::set_pty_locked(m, true).map_err(err("TIOCSPTLCK 1"))?;
            }
            debug!(
                "{what} is /dev/pts/{now} now: master file {mid}, {} slave files, packet {} locked {}",
                p.slaves.len(),
                mi.packet_mode,
                mi.locked
            );
            out.insert(mid, master);
        }
        Ok(out)
    }
}

// ------------------------------------------------------------ kind of file

/// Pty pairs as a kind of file (see [`crate::files::kind`]): the pairs the
/// fds use, checked against the sessions of the tree.
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let orphan = ctx.opts.orphan_pts_master.then(|| ctx.opts.hooks.clone());
    let ptys = Ptys::load(ctx.dir, ctx.files, &ctx.ids_of_type(fd_types::TTY), orphan)?;
    ptys.check_sessions(ctx.procs.iter().map(|p| (p.pid, p.sid, p.pgid, p.fds)))?;
    Ok(Box::new(ptys))
}

impl RestoreKind for Ptys {
    fn name(&self) -> &'static str {
        "pty pairs"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(super::ctty::MadePtys {
            fds: self.open()?,
            in_task: self.ctty_files.keys().copied().collect(),
        }))
    }
}

impl DumpKind for PtyDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Path {
            return Ok(None);
        }
        let (pid, fd, flags) = (f.pid, f.fd, f.flags());
        if let Some(index) = super::pty_info::hung_index(f.target) {
            if self.masters(f.proc)?.contains(&index) {
                return Err(Error::unsupported(format!(
                    "process {pid} fd {fd}: a hung-up /dev/pts/{index} and a live pair of the same index"
                )));
            }
            let known = self.known(pid, fd);
            let path = format!("/dev/pts/{index}");
            let id = ids.id_for(known, |ids, id| {
                let e = self.add_hung(pid, fd, index, flags, id)?;
                super::pty_ns::with_regf(ids, (pid, fd, f.info.mnt_id), &path, flags, e).map(Some)
            })?;
            return Ok(Some((id, fd_types::TTY)));
        }
        if f.target == "/dev/tty" {
            return self.add_ctty(f, ids);
        }
        let Some(end) = self.end_of(f.proc, f.pid, f.fd, f.target, f.info)? else {
            return Ok(None);
        };
        let known = self.known(pid, fd);
        let (path, mnt_id) = (f.target, f.info.mnt_id);
        let id = ids.id_for(known, |ids, id| {
            let e = self.add(pid, fd, end, flags, id)?;
            super::pty_ns::with_regf(ids, (pid, fd, mnt_id), path, flags, e).map(Some)
        })?;
        Ok(Some((id, fd_types::TTY)))
    }

    fn write_images(&mut self, dir: &Path) -> Result<(), Error> {
        self.write(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_paths() {
        assert_eq!(pts_index("/dev/pts/7"), Some(7));
        assert_eq!(pts_index("/dev/pts/ptmx"), None);
        assert_eq!(pts_index("/dev/pts/"), None);
        assert_eq!(pts_index("/dev/tty1"), None);
    }

    #[test]
    fn tty_nr() {
        // /dev/pts/3: 136:3; /dev/pts/300: 137:44.
        assert_eq!(decode_tty_nr(136 << 8 | 3), (136, 3));
        assert_eq!(decode_tty_nr(137 << 8 | 44), (137, 44));
        assert_eq!(decode_tty_nr((1 << 20) | (136 << 8)), (136, 256));
    }
}
