//! Epoll sets: their targets, named by fd numbers of a process.
//!
//! An EVENTPOLL entry's `tfd` entries name each target by the fd number it
//! has in one process, as CRIU 4.2 records them (with the target's inode,
//! device and offset). For an epoll a task holds, that process is the
//! first (in pstree order) that holds it. For an epoll no task holds,
//! carried by a message queued on a unix socket (SCM_RIGHTS), it is the
//! process that holds the socket the message is sent from at restore (the
//! unix kind names it; CRIU 4.2 opens such files in that task and
//! registers their targets there).
//!
//! Dump: the fdinfo `tfd:` lines give the number each target was
//! registered with; the fd of the naming process now open on that file is
//! found with kcmp KCMP_EPOLL_TFD (the fd may have been closed or moved
//! since, or, for a carried epoll, registered by another process).
//!
//! Restore: crust makes the epoll; its targets are registered inside the
//! naming process once all of its fds are in place (remote epoll_ctl with
//! its fd numbers, so each registration keeps the number it had: a later
//! EPOLL_CTL_MOD or DEL by that number works). A carried epoll is given to
//! that process for the moment, at a free number, and closed there again.

use crate::files::events::{hex, parse_err};
use crate::files::fdpass::{self, Gift};
use crate::files::kind::dump::Carried;
use crate::task::remote::Remote;
use crate::Error;
use crust_images::proto::eventpoll::{EventpollFileEntry, EventpollTfdEntry};
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_proc::FdInfo;
use log::debug;
use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;

// ---------------------------------------------------------------- dump

/// Where the targets of an epoll being dumped are looked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    /// The process holding the epoll (crust, for a carried one) and its fd.
    pub epid: i32,
    pub efd: i32,
    /// Set for an epoll carried by a queued message.
    pub carried: Option<Carried>,
}

impl Holder {
    /// The process whose fds name the targets.
    fn names_in(&self) -> Option<i32> {
        match self.carried {
            Some(c) => c.names_in,
            None => Some(self.epid),
        }
    }

    fn what(&self) -> String {
        match self.carried {
            Some(_) => "an epoll carried by a queued message (SCM_RIGHTS)".into(),
            None => format!("the epoll fd {} of process {}", self.efd, self.epid),
        }
    }
}

/// The fd of process `pid` now open on the file of the target of the epoll
/// `h` registered as `tfd` (the `toff`-th with that number): `tfd` itself
/// if it is, else another fd on that file (the target was registered
/// through an fd since closed or moved, or by another process), `None` if
/// the process has none. Without kcmp, `tfd` if it is open on the same
/// inode.
fn target_fd(pid: i32, h: &Holder, tfd: i32, toff: u32, ino: Option<u64>) -> Option<i32> {
    use crust_sys::process::kcmp_epoll_tfd_of;
    let same = |fd: i32| kcmp_epoll_tfd_of(pid, fd, h.epid, h.efd, tfd, toff);
    match same(tfd) {
        Ok(true) => return Some(tfd),
        Ok(false) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
        Err(_) => {
            let md = std::fs::metadata(format!("/proc/{pid}/fd/{tfd}")).ok()?;
            return ino.is_none_or(|i| md.ino() == i).then_some(tfd);
        }
    }
    let fds = crust_proc::fds(&crust_proc::ProcRoot::default(), pid).ok()?;
    fds.into_iter()
        .map(|(n, _)| n)
        .find(|&n| !(pid == h.epid && n == h.efd) && same(n).unwrap_or(false))
}

/// One `tfd:` line of an epoll's fdinfo: registered number, events, data,
/// inode, device, offset.
struct TfdLine {
    tfd: i32,
    events: u32,
    data: u64,
    ino: Option<u64>,
    sdev: Option<u32>,
    pos: Option<u64>,
}

/// "5 events:       19 data: ffff pos:0 ino:61 sdev:7"
fn parse_tfd(line: &str) -> Option<TfdLine> {
    let (num, rest) = line.trim().split_once(char::is_whitespace)?;
    let tfd: i32 = num.parse().ok()?;
    let toks: Vec<&str> = rest.split_whitespace().collect();
    let mut kv: HashMap<&str, &str> = HashMap::new();
    let mut i = 0;
    while let Some(t) = toks.get(i) {
        match t.split_once(':') {
            Some((k, "")) if i + 1 < toks.len() => {
                kv.insert(k, toks.get(i + 1).copied().unwrap_or(""));
                i += 2;
            }
            Some((k, v)) => {
                kv.insert(k, v);
                i += 1;
            }
            None => i += 1,
        }
    }
    Some(TfdLine {
        tfd,
        events: kv.get("events").and_then(|v| hex(v))? as u32,
        data: kv.get("data").and_then(|v| hex(v))?,
        ino: kv.get("ino").and_then(|v| hex(v)),
        sdev: kv.get("sdev").and_then(|v| hex(v)).map(|v| v as u32),
        pos: kv.get("pos").and_then(|v| v.parse::<u64>().ok()),
    })
}

/// The targets of the epoll `h` (its fdinfo `tfd:` lines), each named by
/// an fd of the naming process open on its file (see [`target_fd`]).
pub(crate) fn targets(h: &Holder, info: &FdInfo) -> Result<Vec<EventpollTfdEntry>, Error> {
    let mut tfds = Vec::new();
    // Targets seen per registered number (toff), and the numbers given.
    let mut per_num: HashMap<i32, u32> = HashMap::new();
    let mut given: HashSet<i32> = HashSet::new();
    let what = h.what();
    for line in info.get_all("tfd") {
        let t = parse_tfd(line).ok_or_else(|| parse_err(h.epid, h.efd, "epoll target", line))?;
        let Some(pid) = h.names_in() else {
            return Err(Error::unsupported(format!(
                "{what} watches a file registered as fd {}, and no process of the tree holds the socket the message is queued on or a socket sending to it, whose fd numbers would name it at restore",
                t.tfd
            )));
        };
        let toff = per_num.entry(t.tfd).or_default();
        let found = target_fd(pid, h, t.tfd, *toff, t.ino);
        *toff += 1;
        // The restore registers the target by the number of an fd on its
        // file in the naming process.
        let Some(now) = found else {
            return Err(Error::unsupported(match h.carried {
                Some(_) => format!(
                    "{what} watches a file registered as fd {}, which process {pid} (the holder of the socket its message is sent from, whose fds name its targets at restore) does not hold",
                    t.tfd
                ),
                None => format!(
                    "{what} watches a file registered as fd {}, which no fd of the process is open on any more",
                    t.tfd
                ),
            }));
        };
        if !given.insert(now) {
            return Err(Error::unsupported(format!(
                "{what} watches one file through fd {now} of process {pid} and through fd {}, since closed: one registration would be lost",
                t.tfd
            )));
        }
        if now != t.tfd {
            debug!(
                "{what}: target registered as fd {} is fd {now} of process {pid}",
                t.tfd
            );
        }
        tfds.push(EventpollTfdEntry {
            id: 0,
            tfd: now as u32,
            events: t.events,
            data: t.data,
            dev: t.sdev,
            inode: t.ino,
            pos: t.pos,
            ..Default::default()
        });
    }
    Ok(tfds)
}

// ---------------------------------------------------------------- restore

/// The epolls of an image set as read: each one's targets, and the
/// process (pid in the images) whose fd numbers name them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Epolls {
    targets: HashMap<u32, Vec<EventpollTfdEntry>>,
    owner: HashMap<u32, i32>,
    /// Epolls no task holds (carried by queued messages).
    carried: HashSet<u32>,
}

impl Epolls {
    /// Epoll `id` as files.img records it.
    pub fn add(&mut self, id: u32, e: &EventpollFileEntry) {
        self.targets.insert(id, e.tfd.clone());
    }

    /// Check the targets of the epolls among the fd table `fds` of process
    /// `pid` that no process earlier in pstree order holds: they name fds
    /// of `pid`, which registers them.
    pub fn check_held(&mut self, pid: i32, fds: &[FdinfoEntry]) -> Result<(), String> {
        for f in fds.iter().filter(|f| f.r#type == fd_types::EVENTPOLL) {
            if self.owner.contains_key(&f.id) {
                continue;
            }
            let Some(tfds) = self.targets.get(&f.id) else {
                continue;
            };
            for t in tfds {
                if !fds.iter().any(|g| g.fd == t.tfd) {
                    return Err(format!(
                        "process {pid}: epoll {} (fd {}) watches fd {}, which the process does not have",
                        f.id, f.fd, t.tfd
                    ));
                }
                if t.tfd == f.fd {
                    return Err(format!(
                        "process {pid}: epoll {} (fd {}) watches itself",
                        f.id, f.fd
                    ));
                }
            }
            self.owner.insert(f.id, pid);
        }
        Ok(())
    }

    /// Epoll `id`, carried by a queued message and perhaps held by no
    /// task: unless a task holds it, its targets name fds of `names_in`
    /// (the first message carrying it says which process, see the unix
    /// kind), whose table `fds` is.
    pub fn check_carried(
        &mut self,
        id: u32,
        names_in: Option<(i32, &[FdinfoEntry])>,
    ) -> Result<(), String> {
        if self.owner.contains_key(&id) || self.carried.contains(&id) {
            return Ok(());
        }
        let Some(tfds) = self.targets.get(&id) else {
            return Ok(());
        };
        self.carried.insert(id);
        if tfds.is_empty() {
            return Ok(());
        }
        let Some((pid, fds)) = names_in else {
            return Err(format!(
                "epoll {id}, carried by a queued message, watches fd {} but no process holds the socket the message is sent from",
                tfds.first().map_or(0, |t| t.tfd)
            ));
        };
        if let Some(t) = tfds.iter().find(|t| !fds.iter().any(|g| g.fd == t.tfd)) {
            return Err(format!(
                "epoll {id}, carried by a queued message, watches fd {} of process {pid}, which the process does not have",
                t.tfd
            ));
        }
        self.owner.insert(id, pid);
        Ok(())
    }
}

/// The epolls crust made, whose targets the tasks register.
#[derive(Debug, Default)]
pub(crate) struct OpenEpolls {
    read: Epolls,
    /// Epolls whose targets are registered already (a restore may build
    /// two subtrees at once: see `restore::split`).
    registered: std::sync::Mutex<HashSet<u32>>,
}

impl OpenEpolls {
    pub fn new(read: Epolls) -> OpenEpolls {
        OpenEpolls {
            read,
            registered: std::sync::Mutex::default(),
        }
    }

    /// Register the targets of the epolls process `pid` names them for
    /// (see [`Epolls`]), now that its fds (`fds`, all installed) are in
    /// place: EPOLL_CTL_ADD inside the task, keyed by its fd numbers. An
    /// epoll the process holds is used at its fd; one no task holds
    /// (`made(id)`, crust's) is given to the task for the moment.
    pub fn register<'m>(
        &self,
        r: &mut Remote<'_>,
        pid: i32,
        fds: &[FdinfoEntry],
        made: &dyn Fn(u32) -> Option<BorrowedFd<'m>>,
    ) -> Result<(), Error> {
        let mut mine: Vec<u32> = self
            .read
            .owner
            .iter()
            .filter(|(_, p)| **p == pid)
            .map(|(id, _)| *id)
            .collect();
        mine.sort_unstable();
        for id in mine {
            let first = self
                .registered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id);
            if !first {
                continue;
            }
            let tfds = self.read.targets.get(&id).map_or(&[][..], |t| t.as_slice());
            let held = fds
                .iter()
                .find(|f| f.id == id && f.r#type == fd_types::EVENTPOLL);
            match held {
                Some(f) => add_targets(r, f.fd as u64, tfds)?,
                None => {
                    let fd = made(id).ok_or_else(|| Error::Restore {
                        pid: r.pid(),
                        what: format!("epoll {id}, carried by a queued message, was not made"),
                    })?;
                    // A number above every fd of the table: free.
                    let spare = fds.iter().map(|f| f.fd as i32 + 1).max().unwrap_or(0);
                    let gift = Gift {
                        fd,
                        target: spare,
                        cloexec: true,
                    };
                    fdpass::give_fds(r, &[gift])?;
                    let added = add_targets(r, spare as u64, tfds);
                    let closed = r.call("close", libc::SYS_close, [spare as u64, 0, 0, 0, 0, 0]);
                    added?;
                    closed?;
                }
            }
            debug!("{}: epoll {id} has its {} targets", r.pid(), tfds.len());
        }
        Ok(())
    }

    /// Every carried epoll with targets had them registered (its naming
    /// process built its own fd table).
    pub fn check_done(&self) -> Result<(), Error> {
        let done = self
            .registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut left: Vec<u32> = self
            .read
            .carried
            .iter()
            .filter(|id| !done.contains(id))
            .filter(|id| self.read.targets.get(id).is_some_and(|t| !t.is_empty()))
            .copied()
            .collect();
        left.sort_unstable();
        match left.first() {
            None => Ok(()),
            Some(id) => Err(Error::Restore {
                pid: crust_sys::process::getpid(),
                what: format!(
                    "the targets of epoll {id}, carried by a queued message, were not registered: process {} shares the fd table of another, which crust does not register them through",
                    self.read.owner.get(id).copied().unwrap_or(0)
                ),
            }),
        }
    }
}

/// EPOLL_CTL_ADD of every target in `tfds` to the epoll at fd `efd` of
/// the task.
fn add_targets(r: &mut Remote<'_>, efd: u64, tfds: &[EventpollTfdEntry]) -> Result<(), Error> {
    for t in tfds {
        // struct epoll_event is packed on x86_64: u32 events, u64 data.
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&t.events.to_le_bytes());
        b[4..].copy_from_slice(&t.data.to_le_bytes());
        let a = r.put(0, &b)?;
        r.call(
            &format!(
                "epoll_ctl(ADD) of fd {} to epoll fd {efd} (events {:#x})",
                t.tfd, t.events
            ),
            libc::SYS_epoll_ctl,
            [efd, libc::EPOLL_CTL_ADD as u64, t.tfd as u64, a.get(), 0, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfd_lines() {
        let t = parse_tfd("5 events:       19 data: ffff pos:0 ino:61 sdev:7").unwrap();
        assert_eq!((t.tfd, t.events, t.data), (5, 0x19, 0xffff));
        assert_eq!((t.ino, t.sdev, t.pos), (Some(0x61), Some(7), Some(0)));
        assert!(parse_tfd("x events: 1 data: 2").is_none());
        assert!(parse_tfd("5 events: 1").is_none());
    }

    fn tfd(n: u32) -> EventpollTfdEntry {
        EventpollTfdEntry {
            tfd: n,
            events: 1,
            ..Default::default()
        }
    }

    fn fd(n: u32, id: u32, ty: i32) -> FdinfoEntry {
        FdinfoEntry {
            fd: n,
            id,
            r#type: ty,
            ..Default::default()
        }
    }

    /// A held epoll is named by its first holder; a carried one by the
    /// process the unix kind gives, unless a task holds it; targets the
    /// process lacks are refused.
    #[test]
    fn owners() {
        let mut e = Epolls::default();
        let ep = |t: Vec<EventpollTfdEntry>| EventpollFileEntry {
            tfd: t,
            ..Default::default()
        };
        e.add(10, &ep(vec![tfd(5)]));
        e.add(11, &ep(vec![tfd(4)]));
        e.add(12, &ep(vec![]));
        let p1 = [
            fd(4, 8, fd_types::UNIXSK),
            fd(5, 9, fd_types::UNIXSK),
            fd(6, 11, fd_types::EVENTPOLL),
        ];
        let p2 = [fd(4, 11, fd_types::EVENTPOLL), fd(5, 9, fd_types::UNIXSK)];
        e.check_held(7, &p1).unwrap();
        e.check_held(8, &p2).unwrap();
        assert_eq!(e.owner.get(&11), Some(&7));
        e.check_carried(11, Some((8, &p2))).unwrap();
        assert_eq!(e.owner.get(&11), Some(&7));
        assert!(!e.carried.contains(&11));
        // Fd 5 of process 8 exists, fd 5 of a process without it does not.
        let mut bad = e.clone();
        assert!(bad.check_carried(10, Some((9, &p2[..1]))).is_err());
        assert!(bad.check_carried(12, None).is_ok());
        let mut none = e.clone();
        assert!(none.check_carried(10, None).is_err());
        e.check_carried(10, Some((8, &p2))).unwrap();
        assert_eq!(e.owner.get(&10), Some(&8));
        assert!(e.carried.contains(&10));
        // A second message naming another process changes nothing.
        e.check_carried(10, Some((7, &p1))).unwrap();
        assert_eq!(e.owner.get(&10), Some(&8));
        // An epoll watching a fd its holder lacks, or itself.
        let mut e2 = Epolls::default();
        e2.add(3, &ep(vec![tfd(9)]));
        assert!(e2.check_held(1, &[fd(2, 3, fd_types::EVENTPOLL)]).is_err());
        let mut e3 = Epolls::default();
        e3.add(3, &ep(vec![tfd(2)]));
        assert!(e3.check_held(1, &[fd(2, 3, fd_types::EVENTPOLL)]).is_err());
    }
}
