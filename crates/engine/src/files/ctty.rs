//! Controlling terminals given back to session leaders at restore: through
//! an fd the leader holds on the slave, or, for a leader that holds none
//! (it closed its fds on the terminal, as CRIU's zdtm tty00 and pty03 do),
//! through a slave fd crust lends it for the moment.
//!
//! An fd on `/dev/tty` (the controlling terminal by its generic name, 5:0)
//! of a process whose controlling terminal is a pty of the tree is a TTY
//! entry of files.img whose tty-info.img entry has type CTTY (rdev 5:0,
//! the session and foreground group, termios and window size read through
//! it), as CRIU records it. At restore it is opened in the task, once the
//! controlling terminals are given back.

use crate::files::fdpass::{give_fds, Gift, MadeFds};
use crate::files::kind::dump::{DumpFd, Ids};
use crate::files::kind::OpenKind;
use crate::files::pty::{End, PtyDump, Ptys, Seen};
use crate::files::pty::{KEPT_FLAGS, O_LARGEFILE_KERNEL, PTS_MAJOR};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry, FileEntry};
use crust_images::proto::tty::{TtyFileEntry, TtyInfoEntry, TtyType};
use log::debug;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};

/// /dev/tty: TTYAUX major, minor 0.
const CTTY_MAJOR: u32 = 5;
const CTTY_MINOR: u32 = 0;

/// Make the slave at `fd` the controlling terminal of the task (a session
/// leader without one) and put `pgrp` in its foreground. The task's
/// signals are blocked, so TIOCSPGRP from the background is allowed.
pub fn set_ctty(r: &mut Remote<'_>, fd: i32, pgrp: i32) -> Result<(), Error> {
    r.call(
        &format!("ioctl(TIOCSCTTY) on fd {fd}"),
        libc::SYS_ioctl,
        [fd as u64, libc::TIOCSCTTY, 0, 0, 0, 0],
    )?;
    let a = r.put(0, &pgrp.to_ne_bytes())?;
    r.call(
        &format!("ioctl(TIOCSPGRP, {pgrp}) on fd {fd}"),
        libc::SYS_ioctl,
        [fd as u64, libc::TIOCSPGRP, a.get(), 0, 0, 0],
    )?;
    debug!(
        "{}: fd {fd} is its controlling terminal, group {pgrp} in the foreground",
        r.pid()
    );
    Ok(())
}

/// Give the task the slave of the pty whose master crust holds as
/// `master` as its controlling terminal, through a slave fd lent at
/// `spare` (a number the task does not use), closed afterwards.
pub fn set_ctty_lent(
    r: &mut Remote<'_>,
    master: BorrowedFd<'_>,
    spare: i32,
    pgrp: i32,
) -> Result<(), Error> {
    use crust_sys::tty;
    let me = crust_sys::process::getpid();
    // A pty locked again (TIOCSPTLCK) opens no slave: unlocked for the
    // moment.
    let locked = tty::pty_locked(master).unwrap_or(false);
    if locked {
        tty::set_pty_locked(master, false).map_err(sys_err(me, "TIOCSPTLCK 0"))?;
    }
    let slave = tty::open_peer(master, libc::O_RDWR);
    if locked {
        tty::set_pty_locked(master, true).map_err(sys_err(me, "TIOCSPTLCK 1"))?;
    }
    let slave = slave.map_err(sys_err(me, "TIOCGPTPEER for a controlling terminal"))?;
    give_fds(
        r,
        &[Gift {
            fd: slave.as_fd(),
            target: spare,
            cloexec: true,
        }],
    )?;
    let set = set_ctty(r, spare, pgrp);
    let closed = r.call(
        &format!("close of the lent terminal fd {spare}"),
        libc::SYS_close,
        [spare as u64, 0, 0, 0, 0, 0],
    );
    set?;
    closed.map(drop)
}

impl PtyDump {
    /// An fd on /dev/tty: a CTTY entry when the process's controlling
    /// terminal is a pty whose master the tree holds; otherwise not
    /// claimed (it is the shell job's terminal).
    pub(super) fn add_ctty(
        &mut self,
        f: &DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let (pid, fd, flags) = (f.pid, f.fd, f.flags());
        let mnt_id = f.info.mnt_id;
        self.masters(f.proc)?;
        let (_, tty_nr, _) = super::pty::ctty_of(pid);
        let (major, index) = super::pty::decode_tty_nr(tty_nr);
        if major != PTS_MAJOR {
            return Ok(None);
        }
        let Some(&(sid, pgrp)) = self.ctty.get(&index) else {
            return Ok(None);
        };
        let known = self.known(pid, fd);
        let id = ids.id_for(known, |ids, id| {
            let info_id = self.ctty_info(pid, fd, index, sid, pgrp)?;
            self.seen.push(Seen { pid, fd, id });
            let e = FileEntry {
                r#type: fd_types::TTY,
                id,
                tty: Some(Box::new(TtyFileEntry {
                    id,
                    tty_info_id: info_id,
                    flags,
                    ..Default::default()
                })),
                ..Default::default()
            };
            super::pty_ns::with_regf(ids, (pid, fd, mnt_id), "/dev/tty", flags, e).map(Some)
        })?;
        debug!("{pid}: fd {fd} is /dev/tty, on /dev/pts/{index}: file {id}");
        Ok(Some((id, fd_types::TTY)))
    }

    /// The tty-info.img id of the CTTY entry for /dev/pts/`index`, read
    /// through fd `fd` of `pid` the first time.
    fn ctty_info(
        &mut self,
        pid: i32,
        fd: i32,
        index: u32,
        sid: u32,
        pgrp: u32,
    ) -> Result<u32, Error> {
        if let Some(&i) = self.ctty_info_of.get(&index) {
            return Ok(i);
        }
        let what = format!("/dev/tty (fd {fd})");
        let pidfd = crust_sys::unix::pidfd_open(pid).map_err(sys_err(pid, "pidfd_open"))?;
        let copy = crust_sys::unix::pidfd_getfd(pidfd.as_fd(), fd)
            .map_err(sys_err(pid, format!("pidfd_getfd of {what}")))?;
        // CRIU's id of the CTTY entry (index 1006, slave); a second one
        // (another session's) next to it.
        let info_id = super::pty_ns::CTTY_INFO_ID + 2 * self.ctty_info_of.len() as u32;
        let end = End {
            master: false,
            index,
        };
        let e = super::pty_info::read_info(pid, copy.as_fd(), end, info_id, &what)?;
        self.infos.push(TtyInfoEntry {
            r#type: TtyType::CTTY,
            pty: None,
            sid,
            pgrp,
            ..e
        });
        self.ctty_info_of.insert(index, info_id);
        Ok(info_id)
    }
}

impl Ptys {
    /// A TTY file whose info is a CTTY entry (/dev/tty), checked.
    pub(super) fn add_ctty_file(
        &mut self,
        id: u32,
        t: &TtyFileEntry,
        info: &TtyInfoEntry,
        bad: &dyn Fn(String) -> Error,
    ) -> Result<(), Error> {
        if info.rdev != super::pty::rdev_of(CTTY_MAJOR, CTTY_MINOR) || info.pty.is_some() {
            return Err(bad(format!(
                "tty info {}: a CTTY entry with device {:#x} or a pty index",
                info.id, info.rdev
            )));
        }
        if t.flags & !(KEPT_FLAGS | O_LARGEFILE_KERNEL | libc::O_NOCTTY as u32) != 0
            || t.flags & libc::O_ACCMODE as u32 == libc::O_ACCMODE as u32
        {
            return Err(bad(format!("tty file {id}: flags {:#o}", t.flags)));
        }
        let sid = i32::try_from(info.sid)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| bad(format!("tty info {}: session {}", info.id, info.sid)))?;
        self.ctty_files.insert(id, (t.flags, sid));
        Ok(())
    }

    /// Every /dev/tty description is on a pty pair that is given back as
    /// the controlling terminal of its session.
    pub(super) fn check_ctty_files(&self) -> Result<(), Error> {
        let sessions: HashSet<i32> = self.ctty_sessions().collect();
        for (id, (_, sid)) in &self.ctty_files {
            if !sessions.contains(sid) {
                return Err(Error::unsupported(format!(
                    "tty file {id} is /dev/tty of session {sid}, whose controlling terminal is not a pty of the image"
                )));
            }
        }
        Ok(())
    }

    /// The fds of `fds` on /dev/tty: (fd, files.img id, open flags).
    pub fn ctty_fds(&self, fds: &[FdinfoEntry]) -> Vec<(i32, u32, u32)> {
        fds.iter()
            .filter(|f| f.r#type == fd_types::TTY)
            .filter_map(|f| {
                let (flags, _) = self.ctty_files.get(&f.id)?;
                let cloexec = if f.flags & libc::FD_CLOEXEC as u32 != 0 {
                    libc::O_CLOEXEC as u32
                } else {
                    0
                };
                Some((f.fd as i32, f.id, (flags & KEPT_FLAGS) | cloexec))
            })
            .collect()
    }
}

/// Open /dev/tty in the task (whose controlling terminal is set) for each
/// of `fds` ([`Ptys::ctty_fds`]); fds on one description share it.
pub fn open_ctty_fds(r: &mut Remote<'_>, fds: &[(i32, u32, u32)]) -> Result<(), Error> {
    let mut first: HashMap<u32, i32> = HashMap::new();
    for &(target, id, flags) in fds {
        let cloexec = (flags & libc::O_CLOEXEC as u32) as u64;
        if let Some(&src) = first.get(&id) {
            r.call(
                &format!("dup3 of /dev/tty to fd {target}"),
                libc::SYS_dup3,
                [src as u64, target as u64, cloexec, 0, 0, 0],
            )?;
            continue;
        }
        let a = r.put_cstr(0, b"/dev/tty")?;
        let got = r.call(
            &format!("open /dev/tty for fd {target}"),
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                a.get(),
                (flags | libc::O_NOCTTY as u32) as u64,
                0,
                0,
                0,
            ],
        )?;
        if got != target as u64 {
            r.call(
                &format!("dup3 of /dev/tty to fd {target}"),
                libc::SYS_dup3,
                [got, target as u64, cloexec, 0, 0, 0],
            )?;
            r.call("close", libc::SYS_close, [got, 0, 0, 0, 0, 0])?;
        }
        first.insert(id, target);
    }
    debug!("{}: {} fds on /dev/tty opened", r.pid(), fds.len());
    Ok(())
}

/// The pty pairs crust made, and the /dev/tty descriptions the tasks
/// open themselves ([`open_ctty_fds`]).
pub(crate) struct MadePtys {
    pub fds: MadeFds,
    pub in_task: HashSet<u32>,
}

impl OpenKind for MadePtys {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::TTY).then_some("pty")
    }

    fn in_task(&self, id: u32) -> bool {
        self.in_task.contains(&id)
    }
}
