//! A container's console: a pty slave whose master is outside the tree
//! (the runtime's console socket took it), with `orphan_pts_master` (RPC
//! only, as in CRIU).
//!
//! Dump: one such slave index is taken as a pair without master: its
//! slave end is recorded as any slave's (tty-info.img, tty-data.img), no
//! master entry. Without `orphan_pts_master` it stays refused (a shell
//! job's terminal, `-j`).
//!
//! Restore: crust opens a new master on the tree's `/dev/ptmx` (the one
//! made for the bind mount of the slave's file, `/dev/console`, when
//! there is one) with the index the slave had, unlocks it, opens the
//! slave descriptions from it, gives the slave back its settings and
//! unread input, and hands the master to the RPC client with the notify
//! `orphan-pts-master` (SCM_RIGHTS), then closes its own copy.

use super::pty::{End, OpenPtys, PairImage, PtyDump, Ptys, KEPT_FLAGS};
use crate::util::sys_err;
use crate::Error;
use crust_sys::tty as sys;
use log::debug;
use std::os::fd::AsFd;

impl PtyDump {
    /// `/dev/pts/index`, fd `fd` of `pid`, whose master the tree does not
    /// hold: the orphan slave with `orphan_pts_master` (one index only, as
    /// in CRIU), else not claimed.
    pub(super) fn orphan_end(
        &mut self,
        pid: i32,
        fd: i32,
        index: u32,
    ) -> Result<Option<End>, Error> {
        match self.orphan {
            (false, _) => Ok(None),
            (true, Some(other)) if other != index => Err(Error::unsupported(format!(
                "process {pid} fd {fd} is on /dev/pts/{index} and another process of the tree on /dev/pts/{other}, two ptys whose masters are outside the tree: only one can be handed to the runtime at restore"
            ))),
            (true, _) => {
                debug!("{pid}: fd {fd} on /dev/pts/{index}, whose master is outside the tree (orphan_pts_master)");
                self.orphan.1 = Some(index);
                Ok(Some(End {
                    master: false,
                    index,
                }))
            }
        }
    }
}

impl Ptys {
    /// Whether the pair of `index` may lack its master: with
    /// `orphan_pts_master`, one pair only.
    pub(super) fn orphan_ok(&self, index: u32) -> bool {
        self.orphan.is_some() && self.pairs_without_master().all(|i| i == index)
    }

    fn pairs_without_master(&self) -> impl Iterator<Item = u32> + '_ {
        self.pairs
            .iter()
            .filter(|(_, p)| p.master.is_none() && !p.hung)
            .map(|(i, _)| *i)
    }

    /// Make the pair of the orphan slave `index`: a new master, the slave
    /// descriptions into `out`, and the master to the RPC client.
    pub(super) fn open_orphan(
        &self,
        index: u32,
        p: &PairImage,
        out: &mut OpenPtys,
    ) -> Result<(), Error> {
        let me = crust_sys::process::getpid();
        let Some(hooks) = &self.orphan else {
            return Err(Error::unsupported(format!(
                "/dev/pts/{index} is held without its master (restore it through RPC with orphan_pts_master)"
            )));
        };
        let what = format!("the pty that was /dev/pts/{index} (its master outside the tree)");
        let err = |op: &str| sys_err(me, format!("{op} for {what}"));
        let mflags = libc::O_RDWR as u32;
        let (master, now) = match crate::util::ptmx::take_master(index) {
            Some(m) => (m, index),
            None => crate::util::ptmx::open_at_index(index, &|| super::pty_ns::open_ptmx(mflags))
                .map_err(err("open /dev/ptmx"))?,
        };
        let m = master.as_fd();
        sys::set_pty_locked(m, false).map_err(err("TIOCSPTLCK 0"))?;
        let mut first = None;
        for &(sid, sflags) in &p.slaves {
            let s = sys::open_peer(m, (sflags & KEPT_FLAGS) as i32).map_err(err("TIOCGPTPEER"))?;
            if first.is_none() {
                first = Some(s.try_clone().map_err(err("dup of the slave"))?);
            }
            out.insert(sid, s);
        }
        let s = match first {
            Some(s) => s,
            None => sys::open_peer(m, libc::O_RDWR).map_err(err("TIOCGPTPEER"))?,
        };
        if let Some(si) = &p.slave_info {
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
                std::os::unix::fs::fchown(&s, Some(uid), Some(gid))
                    .map_err(err("fchown of the slave"))?;
            }
        }
        if !p.slave_data.is_empty() {
            super::pty::inject(m, s.as_fd(), false, &p.slave_data)
                .map_err(err("putting the unread input back"))?;
        }
        hooks.send_pts_master(m).map_err(|why| Error::Action {
            action: crate::options::Action::OrphanPtsMaster.name(),
            why,
        })?;
        debug!("{what} is /dev/pts/{now} now; its master went to the RPC client");
        Ok(())
    }
}
