//! Event files, in CRIU's images: eventfd, signalfd, timerfd, epoll,
//! inotify and fanotify (its own part in `fanotify.rs`). Each open file
//! description is one `files.img` entry (EVENTFD, SIGNALFD, TIMERFD,
//! EVENTPOLL with its targets, INOTIFY with its watches, FANOTIFY),
//! its state read from `/proc/PID/fdinfo/FD` at dump time. Descriptions
//! shared by fds, in one process or several, are found with kcmp and keep
//! one id.
//!
//! Restore: crust makes every description itself before any task exists
//! (eventfd with its counter, signalfd with its mask, timerfd on its clock,
//! epoll, inotify with its watches re-added through their file handles,
//! with the recorded watch numbers) and the tasks get them over SCM_RIGHTS
//! like pipes. An epoll's targets are keyed by the fd numbers of a task,
//! so they are registered inside that task (remote epoll_ctl), once all of
//! its fds are in place (see `epoll.rs`; an epoll only a queued message
//! holds included). Timers are armed last,
//! just before the tasks run, with the time that was left at dump time
//! (as CRIU does: the time spent dumped does not count; an absolute timer
//! is moved by as much), and the expirations not yet read are put back.
//!
//! crust's own extension: an eventfd in semaphore mode has EFD_SEMAPHORE
//! (bit 0) in its `flags`; CRIU ignores that bit.

use crate::files::classify::Target;
use crate::files::epoll::{self, Epolls, OpenEpolls};
use crate::files::inotify::{add_watch, inotify_watches, GhostPaths};
pub(crate) use crate::files::inotify::{
    handle_bytes, handle_path, handle_words, kdev, open_handle,
};
use crate::files::kind::dump::{Carried, DumpFd, DumpKind, Ids};
use crate::files::kind::{CarriedFile, LoadCtx, Made, OpenKind, Phase, PhaseCtx, RestoreKind};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::eventfd::EventfdFileEntry;
use crust_images::proto::eventpoll::EventpollFileEntry;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::fsnotify::{FanotifyFileEntry, InotifyFileEntry, InotifyWdEntry};
use crust_images::proto::signalfd::SignalfdEntry;
use crust_images::proto::timerfd::TimerfdEntry;
use crust_proc::FdInfo;
use crust_sys::events as ev;
use log::debug;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// EFD_SEMAPHORE, kept in bit 0 of an EVENTFD entry's flags.
const EFD_SEMAPHORE: u32 = 1;
/// Status flags crust sets again on a restored description.
const KEEP_FLAGS: u32 = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
const NSEC: u64 = 1_000_000_000;

/// A kind of event file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Eventfd,
    Signalfd,
    Timerfd,
    Epoll,
    Inotify,
    Fanotify,
}

impl Kind {
    pub fn fd_type(self) -> i32 {
        match self {
            Kind::Eventfd => fd_types::EVENTFD,
            Kind::Signalfd => fd_types::SIGNALFD,
            Kind::Timerfd => fd_types::TIMERFD,
            Kind::Epoll => fd_types::EVENTPOLL,
            Kind::Inotify => fd_types::INOTIFY,
            Kind::Fanotify => fd_types::FANOTIFY,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Eventfd => "eventfd",
            Kind::Signalfd => "signalfd",
            Kind::Timerfd => "timerfd",
            Kind::Epoll => "epoll",
            Kind::Inotify => "inotify",
            Kind::Fanotify => "fanotify",
        }
    }
}

/// The kind of event file behind an fd link (`anon_inode:[eventfd]`...).
pub fn kind_of(link: &str) -> Option<Kind> {
    Some(match link {
        "anon_inode:[eventfd]" => Kind::Eventfd,
        "anon_inode:[signalfd]" => Kind::Signalfd,
        "anon_inode:[timerfd]" => Kind::Timerfd,
        "anon_inode:[eventpoll]" => Kind::Epoll,
        "anon_inode:inotify" => Kind::Inotify,
        "anon_inode:[fanotify]" => Kind::Fanotify,
        _ => return None,
    })
}

/// Whether an fdinfo type is an event file (handled here).
pub fn handles(fd_type: i32) -> bool {
    matches!(
        fd_type,
        fd_types::EVENTFD
            | fd_types::SIGNALFD
            | fd_types::TIMERFD
            | fd_types::EVENTPOLL
            | fd_types::INOTIFY
            | fd_types::FANOTIFY
    )
}

/// Name of an event fdinfo type, for messages.
pub fn type_name(fd_type: i32) -> &'static str {
    match fd_type {
        fd_types::EVENTFD => "eventfd",
        fd_types::SIGNALFD => "signalfd",
        fd_types::TIMERFD => "timerfd",
        fd_types::EVENTPOLL => "epoll",
        fd_types::INOTIFY => "inotify",
        fd_types::FANOTIFY => "fanotify",
        _ => "file",
    }
}

// ---------------------------------------------------------------- dump

/// Event file descriptions seen while dumping a tree.
#[derive(Default)]
pub struct EventDump {
    seen: Vec<(i32, i32, Kind, u32)>,
}

impl EventDump {
    /// The files.img id of the description fd `fd` of `pid` is on, if an
    /// fd seen before (in any process) is on the same one.
    pub fn known(&self, pid: i32, fd: i32, kind: Kind) -> Option<u32> {
        self.seen
            .iter()
            .filter(|s| s.2 == kind)
            .find(|s| crust_sys::process::kcmp_file(s.0, pid, s.1, fd).unwrap_or(false))
            .map(|s| s.3)
    }

    pub fn add(&mut self, pid: i32, fd: i32, kind: Kind, id: u32) {
        self.seen.push((pid, fd, kind, id));
    }
}

pub(crate) fn parse_err(pid: i32, fd: i32, what: &str, line: &str) -> Error {
    Error::Restore {
        pid,
        what: format!("cannot parse the {what} of fd {fd} in its fdinfo: '{line}'"),
    }
}

pub(crate) fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim(), 16).ok()
}

/// "(sec, nsec)" of a timerfd's fdinfo.
fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = s.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// "key:value" words of an fdinfo line (after the first word).
pub(crate) fn words(s: &str) -> HashMap<&str, &str> {
    s.split_whitespace()
        .filter_map(|w| w.split_once(':'))
        .collect()
}

/// The files.img entry of event file `fd` of `pid` (description `id`);
/// `carried`: it is crust's copy of a file carried by a queued message.
pub(crate) fn entry(
    pid: i32,
    fd: i32,
    kind: Kind,
    id: u32,
    info: &FdInfo,
    carried: Option<Carried>,
) -> Result<FileEntry, Error> {
    let flags = info.flags & !(libc::O_CLOEXEC as u32);
    let get = |key: &str| {
        info.get(key)
            .ok_or_else(|| parse_err(pid, fd, key, "(missing)"))
    };
    let mut e = FileEntry {
        r#type: kind.fd_type(),
        id,
        ..Default::default()
    };
    match kind {
        Kind::Eventfd => {
            let c = get("eventfd-count")?;
            let counter = hex(c).ok_or_else(|| parse_err(pid, fd, "eventfd-count", c))?;
            let sem = info.get("eventfd-semaphore").map(str::trim) == Some("1");
            e.efd = Some(Box::new(EventfdFileEntry {
                id,
                flags: flags | if sem { EFD_SEMAPHORE } else { 0 },
                fown: FownEntry::default(),
                counter,
                ..Default::default()
            }));
        }
        Kind::Signalfd => {
            let m = get("sigmask")?;
            let sigmask = hex(m).ok_or_else(|| parse_err(pid, fd, "sigmask", m))?;
            e.sgfd = Some(Box::new(SignalfdEntry {
                id,
                flags,
                fown: FownEntry::default(),
                sigmask,
                ..Default::default()
            }));
        }
        Kind::Timerfd => {
            let num = |key: &str, radix: u32| -> Result<u64, Error> {
                let v = get(key)?;
                u64::from_str_radix(v.trim(), radix).map_err(|_| parse_err(pid, fd, key, v))
            };
            let pair = |key: &str| -> Result<(u64, u64), Error> {
                let v = get(key)?;
                parse_pair(v).ok_or_else(|| parse_err(pid, fd, key, v))
            };
            let (vsec, vnsec) = pair("it_value")?;
            let (isec, insec) = pair("it_interval")?;
            e.tfd = Some(Box::new(TimerfdEntry {
                id,
                flags,
                fown: FownEntry::default(),
                clockid: num("clockid", 10)? as u32,
                ticks: num("ticks", 10)?,
                settime_flags: num("settime flags", 8)? as u32,
                vsec,
                vnsec,
                isec,
                insec,
                ..Default::default()
            }));
        }
        Kind::Epoll => {
            let holder = epoll::Holder {
                epid: pid,
                efd: fd,
                carried,
            };
            let tfds = epoll::targets(&holder, info)?;
            e.epfd = Some(Box::new(EventpollFileEntry {
                id,
                flags,
                fown: FownEntry::default(),
                tfd: tfds,
                ..Default::default()
            }));
        }
        Kind::Inotify => {
            let wds = inotify_watches(pid, fd, info)?;
            e.ify = Some(Box::new(InotifyFileEntry {
                id,
                flags,
                fown: FownEntry::default(),
                wd: wds,
                ..Default::default()
            }));
        }
        Kind::Fanotify => {
            e.ffy = Some(Box::new(crate::files::fanotify::entry(
                pid, fd, id, flags, info,
            )?))
        }
    }
    debug!("{pid}: fd {fd} is {} file {id}", kind.name());
    Ok(e)
}

// ---------------------------------------------------------------- restore

#[derive(Debug, Clone)]
enum Desc {
    Eventfd(EventfdFileEntry),
    Signalfd(SignalfdEntry),
    Timerfd(TimerfdEntry),
    Epoll(EventpollFileEntry),
    Inotify(InotifyFileEntry),
    Fanotify(FanotifyFileEntry),
}

/// The event files of an image set, read and checked.
#[derive(Debug, Default)]
pub struct EventFiles {
    descs: BTreeMap<u32, Desc>,
    /// Ghost files by path, for watches on files deleted while open.
    ghosts: GhostPaths,
    /// The epolls' targets and the processes whose fd numbers name them.
    epolls: Epolls,
}

/// A timer to arm once the tasks are built.
#[derive(Debug)]
struct Timer {
    id: u32,
    e: TimerfdEntry,
}

/// Event file descriptions crust made for the restore, by files.img id.
#[derive(Debug, Default)]
pub struct OpenEvents {
    by_id: HashMap<u32, OwnedFd>,
    timers: Vec<Timer>,
    /// The epolls, whose targets the tasks register.
    epolls: OpenEpolls,
}

const CLOCKS: [i32; 5] = [
    libc::CLOCK_REALTIME,
    libc::CLOCK_MONOTONIC,
    libc::CLOCK_BOOTTIME,
    libc::CLOCK_REALTIME_ALARM,
    libc::CLOCK_BOOTTIME_ALARM,
];

impl EventFiles {
    /// Read the event entries of files.img and check them.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
    ) -> Result<EventFiles, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("files.img: {why}"),
        };
        // Borrowed: a copy of files.img would be some KiB per entry (every
        // kind's part is inline), thousands of entries in a big tree.
        let files = loaded.entries()?;
        let mut out = EventFiles::default();
        if files.iter().any(|f| f.r#type == fd_types::INOTIFY) {
            let regs = files
                .iter()
                .filter_map(|f| Some((f.id, f.reg.as_ref()?.name.as_str())));
            out.ghosts = GhostPaths::new(regs, loaded.ghosted()?);
            out.ghosts.read_mounts(dir)?;
        }
        let kinds = [
            fd_types::EVENTFD,
            fd_types::SIGNALFD,
            fd_types::TIMERFD,
            fd_types::EVENTPOLL,
            fd_types::INOTIFY,
            fd_types::FANOTIFY,
        ];
        // Only the event entries are copied.
        for f in files.iter().filter(|f| kinds.contains(&f.r#type)).cloned() {
            let id = f.id;
            let missing = |what: &str| bad(format!("{what} entry {id} has no {what} part"));
            let d = match f.r#type {
                fd_types::EVENTFD => {
                    let e = *f.efd.ok_or_else(|| missing("EVENTFD"))?;
                    if e.counter == u64::MAX {
                        return Err(bad(format!("eventfd {id} has counter {}", e.counter)));
                    }
                    Desc::Eventfd(e)
                }
                fd_types::SIGNALFD => Desc::Signalfd(*f.sgfd.ok_or_else(|| missing("SIGNALFD"))?),
                fd_types::TIMERFD => {
                    let e = *f.tfd.ok_or_else(|| missing("TIMERFD"))?;
                    if !CLOCKS.contains(&(e.clockid as i32)) {
                        return Err(bad(format!("timerfd {id} has clock id {}", e.clockid)));
                    }
                    if e.vnsec >= NSEC
                        || e.insec >= NSEC
                        || e.vsec > i64::MAX as u64 / 2
                        || e.isec > i64::MAX as u64 / 2
                    {
                        return Err(bad(format!(
                            "timerfd {id} has an invalid time (value {}.{:09}, interval {}.{:09})",
                            e.vsec, e.vnsec, e.isec, e.insec
                        )));
                    }
                    if e.settime_flags & !3 != 0 {
                        return Err(bad(format!(
                            "timerfd {id} has settime flags {:#x}",
                            e.settime_flags
                        )));
                    }
                    Desc::Timerfd(e)
                }
                fd_types::EVENTPOLL => {
                    let e = *f.epfd.ok_or_else(|| missing("EVENTPOLL"))?;
                    if let Some(t) = e.tfd.iter().find(|t| t.tfd > i32::MAX as u32) {
                        return Err(bad(format!("epoll {id} has target fd {}", t.tfd)));
                    }
                    out.epolls.add(id, &e);
                    Desc::Epoll(e)
                }
                fd_types::INOTIFY => {
                    let e = *f.ify.ok_or_else(|| missing("INOTIFY"))?;
                    for w in &e.wd {
                        let h = &w.f_handle;
                        if w.wd == 0
                            || w.wd > i32::MAX as u32
                            || h.bytes as usize > ev::MAX_HANDLE_SZ
                            || h.bytes as usize > h.handle.len() * 8
                        {
                            return Err(bad(format!(
                                "inotify {id} has a bad watch (wd {}, handle of {} bytes in {} words)",
                                w.wd,
                                h.bytes,
                                h.handle.len()
                            )));
                        }
                    }
                    Desc::Inotify(e)
                }
                fd_types::FANOTIFY => {
                    let e = *f.ffy.ok_or_else(|| missing("FANOTIFY"))?;
                    crate::files::fanotify::check(id, &e).map_err(bad)?;
                    Desc::Fanotify(e)
                }
                _ => continue,
            };
            out.descs.insert(id, d);
        }
        Ok(out)
    }

    /// Check the fd tables against the event files: every event fd names
    /// an entry of its type, and every epoll's targets are fds of the first
    /// process (in `procs` order) that holds the epoll.
    pub fn check_fds<'a>(
        &mut self,
        dir: &Path,
        procs: impl Iterator<Item = (i32, &'a [FdinfoEntry])>,
    ) -> Result<(), Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        for (pid, fds) in procs {
            for f in fds.iter().filter(|f| handles(f.r#type)) {
                let d = self.descs.get(&f.id);
                let ok = matches!(
                    (f.r#type, d),
                    (fd_types::EVENTFD, Some(Desc::Eventfd(_)))
                        | (fd_types::SIGNALFD, Some(Desc::Signalfd(_)))
                        | (fd_types::TIMERFD, Some(Desc::Timerfd(_)))
                        | (fd_types::EVENTPOLL, Some(Desc::Epoll(_)))
                        | (fd_types::INOTIFY, Some(Desc::Inotify(_)))
                        | (fd_types::FANOTIFY, Some(Desc::Fanotify(_)))
                );
                if !ok {
                    return Err(bad(format!(
                        "process {pid}: fd {} refers to {} id {}, which files.img does not have",
                        f.fd,
                        type_name(f.r#type),
                        f.id
                    )));
                }
            }
            self.epolls.check_held(pid, fds).map_err(bad)?;
        }
        Ok(())
    }

    /// Make every event description in crust (timers not armed yet);
    /// `made`: the descriptions of the kinds made before (ghosts).
    pub fn open(&self, made: &Made<'_>) -> Result<OpenEvents, Error> {
        let me = crust_sys::process::getpid();
        let mut out = OpenEvents {
            epolls: OpenEpolls::new(self.epolls.clone()),
            ..Default::default()
        };
        for (&id, d) in &self.descs {
            let err = |what: String| sys_err(me, format!("{what} for file {id}"));
            let (fd, flags) = match d {
                Desc::Eventfd(e) => {
                    let mode = if e.flags & EFD_SEMAPHORE != 0 {
                        libc::EFD_SEMAPHORE
                    } else {
                        0
                    };
                    let fd =
                        ev::eventfd(0, libc::EFD_CLOEXEC | mode).map_err(err("eventfd".into()))?;
                    if e.counter != 0 {
                        let mut f = std::fs::File::from(fd.try_clone().map_err(err("dup".into()))?);
                        f.write_all(&e.counter.to_ne_bytes())
                            .map_err(err(format!("setting eventfd counter {}", e.counter)))?;
                    }
                    (fd, e.flags)
                }
                Desc::Signalfd(e) => {
                    let fd = ev::signalfd(e.sigmask, libc::SFD_CLOEXEC)
                        .map_err(err(format!("signalfd of mask {:#x}", e.sigmask)))?;
                    (fd, e.flags)
                }
                Desc::Timerfd(e) => {
                    let fd = ev::timerfd_create(e.clockid as i32, libc::TFD_CLOEXEC)
                        .map_err(err(format!("timerfd_create on clock {}", e.clockid)))?;
                    out.timers.push(Timer { id, e: e.clone() });
                    (fd, e.flags)
                }
                Desc::Epoll(e) => {
                    let fd = ev::epoll_create1(libc::EPOLL_CLOEXEC)
                        .map_err(err("epoll_create1".into()))?;
                    (fd, e.flags)
                }
                Desc::Inotify(e) => {
                    let fd =
                        ev::inotify_init1(libc::IN_CLOEXEC).map_err(err("inotify_init1".into()))?;
                    let mut wds: Vec<&InotifyWdEntry> = e.wd.iter().collect();
                    wds.sort_by_key(|w| w.wd);
                    for w in wds {
                        add_watch(fd.as_fd(), id, w, &self.ghosts, made)?;
                    }
                    (fd, e.flags)
                }
                Desc::Fanotify(e) => (crate::files::fanotify::open(id, e)?, e.flags),
            };
            crust_sys::pipe::set_status_flags(fd.as_fd(), (flags & KEEP_FLAGS) as i32).map_err(
                sys_err(
                    me,
                    format!("F_SETFL {:#o} on file {id}", flags & KEEP_FLAGS),
                ),
            )?;
            out.by_id.insert(id, fd);
        }
        Ok(out)
    }
}

impl OpenEvents {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.by_id.get(&id).map(|f| f.as_fd())
    }

    /// Register the targets of the epolls whose targets are fds of process
    /// `pid` (its fds `fds`, all installed): EPOLL_CTL_ADD inside the task,
    /// keyed by its fd numbers (see [`crate::files::epoll`]).
    pub fn register_epolls(
        &self,
        r: &mut Remote<'_>,
        pid: i32,
        fds: &[FdinfoEntry],
    ) -> Result<(), Error> {
        self.epolls.register(r, pid, fds, &|id| self.get(id))
    }

    /// Arm the timers with the time they had left, and put back the
    /// expirations not read yet. Called just before the tasks run.
    pub fn arm_timers(&self) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        for t in &self.timers {
            let e = &t.e;
            let fd = self.by_id[&t.id].as_fd();
            let interval = (e.isec as i64, e.insec as i64);
            // A periodic timer that expired and was not read since shows
            // no time left (the kernel moves it on at the next read): it
            // goes on from now, one period at a time.
            let value = match (e.vsec, e.vnsec) {
                (0, 0) if e.ticks != 0 => interval,
                v => (v.0 as i64, v.1 as i64),
            };
            if value != (0, 0) || interval != (0, 0) {
                let mut value = value;
                let abs = e.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0;
                // (No time left with an interval: disarmed, the interval
                // kept, as the kernel shows it.)
                if abs && value != (0, 0) {
                    let base = match e.clockid as i32 {
                        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
                        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
                        c => c,
                    };
                    let now = ev::clock_gettime(base)
                        .map_err(sys_err(me, format!("clock_gettime({base})")))?;
                    value = (now.0 + value.0, now.1 + value.1);
                    if value.1 >= NSEC as i64 {
                        value = (value.0 + 1, value.1 - NSEC as i64);
                    }
                }
                ev::timerfd_settime(fd, e.settime_flags as i32, value, interval).map_err(
                    sys_err(
                        me,
                        format!(
                            "timerfd_settime of file {} ({}.{:09} s left, interval {}.{:09} s)",
                            t.id, e.vsec, e.vnsec, e.isec, e.insec
                        ),
                    ),
                )?;
            }
            if e.ticks != 0 {
                ev::timerfd_set_ticks(fd, e.ticks).map_err(sys_err(
                    me,
                    format!("TFD_IOC_SET_TICKS {} on file {}", e.ticks, t.id),
                ))?;
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------ kind of file

/// Event files as a kind of file (see [`crate::files::kind`]): read from
/// files.img and checked against the fd tables.
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let mut events = EventFiles::load(ctx.dir, ctx.files)?;
    events.check_fds(ctx.dir, ctx.live())?;
    Ok(Box::new(events))
}

impl RestoreKind for EventFiles {
    fn name(&self) -> &'static str {
        "event files"
    }

    fn make(&mut self, made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(self.open(made)?))
    }

    /// An epoll carried by a queued message that no task holds has its
    /// targets registered by the process the carrying kind names.
    fn carried_by_others(
        &mut self,
        ctx: &LoadCtx<'_>,
        carried: &[CarriedFile],
    ) -> Result<(), Error> {
        for c in carried {
            let names_in = c
                .names_in
                .and_then(|pid| Some((pid, ctx.live().find(|(p, _)| *p == pid)?.1)));
            self.epolls
                .check_carried(c.id, names_in)
                .map_err(|why| Error::BadImage {
                    dir: ctx.dir.to_path_buf(),
                    why,
                })?;
        }
        Ok(())
    }
}

impl OpenKind for OpenEvents {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        handles(ty).then(|| type_name(ty))
    }

    /// Epolls carried by queued messages are checked to have their targets
    /// at [`Phase::TasksExist`]; timers are armed at [`Phase::ClocksStart`].
    fn at(
        &mut self,
        phase: Phase,
        _loaded: &dyn RestoreKind,
        _made: &Made<'_>,
        _ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        match phase {
            Phase::TasksExist => self.epolls.check_done(),
            Phase::ClocksStart => self.arm_timers(),
            _ => Ok(()),
        }
    }
}

impl DumpKind for EventDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let Target::Event(kind) = f.class else {
            return Ok(None);
        };
        let (pid, fd, carried) = (f.pid, f.fd, f.carried);
        let known = self.known(pid, fd, kind);
        let id = ids.id_for(known, |_, id| {
            let e = entry(pid, fd, kind, id, f.info, carried)?;
            self.add(pid, fd, kind, id);
            Ok(Some(e))
        })?;
        Ok(Some((id, kind.fd_type())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::read_image;
    use crust_images::image::ImageType;

    #[test]
    fn parsing() {
        assert_eq!(parse_pair("(997, 761700000)"), Some((997, 761700000)));
        assert_eq!(parse_pair("997"), None);
        assert_eq!(kdev(0xfe00000), (254, 0));
        let w = handle_words(&[0xc8, 0x42, 0x99, 0x00, 0xa2, 0x57, 0xd2, 0x6a]);
        assert_eq!(w.len(), 16);
        assert_eq!(w[0], 0x6ad257a2009942c8);
        assert_eq!(handle_bytes(&w, 8)[0], 0xc8);
        assert_eq!(kind_of("anon_inode:[eventfd]"), Some(Kind::Eventfd));
        assert_eq!(kind_of("anon_inode:[userfaultfd]"), None);
    }

    /// CRIU 4.2's golden `files` set: its eventfd, signalfd, timerfd, epoll
    /// and inotify entries load and pass the checks against fdinfo-2.img.
    #[test]
    fn golden_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/files");
        if !dir.join("files.img").exists() {
            return;
        }
        let mut ev =
            EventFiles::load(&dir, &crate::files::loaded::LoadedFiles::read(&dir)).unwrap();
        assert_eq!(ev.descs.len(), 5);
        match &ev.descs[&15] {
            Desc::Timerfd(t) => assert_eq!((t.clockid, t.isec, t.vsec), (1, 500, 997)),
            d => panic!("{d:?}"),
        }
        match &ev.descs[&17] {
            Desc::Inotify(i) => {
                assert_eq!(i.wd[0].wd, 1);
                assert_eq!(handle_bytes(&i.wd[0].f_handle.handle, 8)[0], 0xc8);
            }
            d => panic!("{d:?}"),
        }
        let fds: Vec<FdinfoEntry> = read_image(&dir, ImageType::Fdinfo, 2).unwrap();
        ev.check_fds(&dir, [(1514, fds.as_slice())].into_iter())
            .unwrap();
    }
}
