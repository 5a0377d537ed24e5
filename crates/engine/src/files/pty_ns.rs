//! Pty pairs of the devpts the tree's `/dev/ptmx` leads to, when the tree
//! has a mount namespace (and a devpts instance) of its own.
//!
//! Dump: a master is an fd whose link ends in `ptmx` (`/dev/ptmx`, or
//! `/dev/pts/ptmx` where `/dev/ptmx` is a link to the devpts instance's
//! own) and whose fdinfo has a `tty-index`. Its devpts is told by the
//! device of its slave's file, reached with TIOCGPTPEER and O_PATH (which
//! opens no terminal, so the pair's state does not change). A slave fd is
//! an end of a pair of the tree only when its file is on the devpts of the
//! master of its index. Every master must be on the devpts the tree's
//! `/dev/ptmx` leads to (looked up in the tree's mount namespace): that
//! is where the restore makes the pairs again; a pty of another devpts is
//! refused.
//!
//! Restore: `/dev/ptmx` is opened in the tree's mount namespace (by a
//! crust thread that joined it, so the slaves are files of the tree's
//! devpts and their links read as they did), again until the slave gets
//! the index it had (a new devpts numbers from 0, lowest free first; the
//! masters opened on the way are closed).
//!
//! Sessions: the session and foreground group read from crust's /proc
//! are host pids; a tree in a pid namespace of its own records them as
//! the namespace sees them (NSsid, NSpgid of a process of the group).

use crate::files::kind::dump::Ids;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::FileEntry;
use crust_images::proto::regfile::RegFileEntry;
use crust_sys::tty as sys;
use log::debug;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// statfs f_type of devpts.
const DEVPTS_MAGIC: i64 = 0x1cd1;

/// Whether an fd link names a pty master (with a `tty-index` in fdinfo).
pub(super) fn is_ptmx_link(target: &str) -> bool {
    target == "/dev/ptmx" || target.ends_with("/ptmx")
}

/// The device of the devpts instance of the pty whose master crust's copy
/// `master` is on (its slave's file, opened O_PATH).
pub(super) fn master_devpts(master: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u64> {
    let peer = sys::open_peer(master, libc::O_PATH)?;
    Ok(std::fs::File::from(peer).metadata()?.dev())
}

/// The device of the file fd `fd` of `pid` is on.
pub(super) fn fd_dev(pid: i32, fd: i32) -> std::io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))?.dev())
}

/// Run `f` where the tree's paths are: in a crust thread that joined the
/// tree's mount namespace when it has one of its own, else here.
pub(super) fn in_tree_mnt<T: Send>(
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let Some(root) = crate::util::view::ns_pid() else {
        return f();
    };
    let me = crust_sys::process::getpid();
    let ns = std::fs::File::open(format!("/proc/{root}/ns/mnt"))
        .map_err(sys_err(root, "open its mount namespace"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            crust_sys::ns::unshare(libc::CLONE_FS).map_err(sys_err(
                me,
                "unshare(CLONE_FS) before joining a mount namespace",
            ))?;
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNS)
                .map_err(sys_err(root, "setns into its mount namespace"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Restore {
                pid: root,
                what: "the crust thread working in its mount namespace panicked".into(),
            })
        })
    })
}

/// The device of the devpts instance `/dev/ptmx` leads to where it is
/// called (a link into a devpts, or the pty multiplexer device next to a
/// devpts mounted at `/dev/pts`); `None` if it leads to none.
fn ptmx_devpts_here() -> Option<u64> {
    let on_devpts =
        |p: &str| crust_sys::ipc::fs_magic(std::path::Path::new(p)).ok() == Some(DEVPTS_MAGIC);
    if on_devpts("/dev/ptmx") {
        return std::fs::metadata("/dev/ptmx").ok().map(|m| m.dev());
    }
    if on_devpts("/dev/pts") {
        return std::fs::metadata("/dev/pts").ok().map(|m| m.dev());
    }
    None
}

/// Check that every master of `masters` (index to its devpts) is on the
/// devpts the tree's `/dev/ptmx` leads to, where the restore makes them.
pub(super) fn check_tree_devpts(masters: &[(u32, u64)]) -> Result<(), Error> {
    if masters.is_empty() {
        return Ok(());
    }
    let tree = in_tree_mnt(|| Ok(ptmx_devpts_here()))?;
    for (index, dev) in masters {
        if tree != Some(*dev) {
            let where_ = match tree {
                Some(t) => format!("the devpts instance {}:{}", libc::major(t), libc::minor(t)),
                None => "no devpts instance".to_string(),
            };
            return Err(Error::unsupported(format!(
                "the pty /dev/pts/{index} of the tree is on the devpts instance {}:{}, but the tree's /dev/ptmx leads to {where_}: crust makes the tree's ptys again only through its /dev/ptmx",
                libc::major(*dev),
                libc::minor(*dev)
            )));
        }
    }
    debug!("the tree's ptys are on the devpts its /dev/ptmx leads to");
    Ok(())
}

/// (session, foreground group) of a controlling terminal as the images
/// record them: `pid`'s session and the group `tpgid` (host pids) as
/// `pid`'s pid namespace sees them, the group through a process of `tree`
/// in it.
pub(super) fn ns_session(pid: i32, tpgid: i32, tree: &[i32]) -> Result<(u32, u32), Error> {
    let proc = crust_proc::ProcRoot::default();
    let st = crust_proc::status(&proc, pid).map_err(crate::util::proc_err(pid))?;
    let sid = st.ns_sid.last().copied().unwrap_or(0);
    for &q in tree {
        let Ok(qs) = crust_proc::stat(&proc, q) else {
            continue;
        };
        if qs.pgrp != tpgid {
            continue;
        }
        let qst = crust_proc::status(&proc, q).map_err(crate::util::proc_err(q))?;
        let pgrp = qst.ns_pgid.last().copied().unwrap_or(0);
        if sid > 0 && pgrp > 0 {
            return Ok((sid as u32, pgrp as u32));
        }
    }
    Err(Error::unsupported(format!(
        "process {pid}: the foreground group {tpgid} of its controlling terminal has no process in the tree"
    )))
}

/// The master of a new pair opened on `/dev/ptmx` (where called) with
/// access and status flags of `mflags`.
pub(super) fn open_ptmx(mflags: u32) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let acc = mflags & libc::O_ACCMODE as u32;
    Ok(std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY as u32)
        .write(acc != libc::O_RDONLY as u32)
        .custom_flags(
            (mflags & (libc::O_NONBLOCK | libc::O_APPEND) as u32) as i32
                | libc::O_NOCTTY
                | libc::O_CLOEXEC,
        )
        .open("/dev/ptmx")?
        .into())
}

/// The tty-info.img id CRIU gives the CTTY entry (/dev/tty): its index
/// 1006, as a slave.
pub(super) const CTTY_INFO_ID: u32 = 1006 << 1;

/// The highest pty index CRIU 4.2 takes.
const MAX_PTY_INDEX: u32 = 1000;

/// The tty-info.img id of an end of a pty: CRIU's (index times 2, plus 1
/// for a master), which CRIU 4.2 needs to pair the ends at restore.
pub(super) fn info_id(end: super::pty::End) -> Result<u32, Error> {
    if end.index > MAX_PTY_INDEX {
        return Err(Error::unsupported(format!(
            "/dev/pts/{}: a pty index above {MAX_PTY_INDEX}, which CRIU's images cannot hold",
            end.index
        )));
    }
    Ok((end.index << 1) + u32::from(end.master))
}

/// TTY file entry `e` of fd `fd` of `pid` (on the file `path` of mount
/// `mnt_id`, with open flags `flags`) with the REG entry CRIU records with it (`regf_id`: the
/// path, flags and mode of the device file; CRIU 4.2 refuses a TTY file
/// without one), recorded in `ids`.
pub(super) fn with_regf(
    ids: &mut Ids<'_>,
    (pid, fd, mnt_id): (i32, i32, i32),
    path: &str,
    flags: u32,
    mut e: FileEntry,
) -> Result<FileEntry, Error> {
    let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .map_err(sys_err(pid, format!("stat of fd {fd} ({path})")))?;
    let regf_id = ids.new_id();
    ids.files.push(crate::files::reg_file(RegFileEntry {
        id: regf_id,
        flags,
        name: path.to_string(),
        mode: Some(md.mode()),
        // The mount it is on, when the tree has mount namespaces (CRIU
        // opens the file in the namespace of that mount).
        mnt_id: crate::files::classify::mnt_id_of(pid, mnt_id),
        ..Default::default()
    }));
    if let Some(t) = e.tty.as_mut() {
        t.regf_id = Some(regf_id);
    }
    Ok(e)
}

/// Give a master made early ([`crate::util::ptmx`]) the status flags of
/// `mflags` (O_NONBLOCK, O_APPEND).
pub(super) fn set_status_flags(m: std::os::fd::BorrowedFd<'_>, mflags: u32) -> std::io::Result<()> {
    let keep = (mflags & (libc::O_NONBLOCK | libc::O_APPEND) as u32) as i32;
    crust_sys::pipe::set_status_flags(m, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptmx_links() {
        assert!(is_ptmx_link("/dev/ptmx"));
        assert!(is_ptmx_link("/dev/pts/ptmx"));
        assert!(!is_ptmx_link("/dev/pts/0"));
        assert!(!is_ptmx_link("/dev/ptmx (deleted)"));
    }

    /// A master's devpts is the one its slave's file is on.
    #[test]
    fn master_devpts_is_the_slaves() {
        let m = open_ptmx(libc::O_RDWR as u32).unwrap();
        let dev = master_devpts(m.as_fd()).unwrap();
        sys::set_pty_locked(m.as_fd(), false).unwrap();
        let s = sys::open_peer(m.as_fd(), libc::O_RDWR).unwrap();
        assert_eq!(std::fs::File::from(s).metadata().unwrap().dev(), dev);
    }

    /// Masters are opened until the wanted free index comes.
    #[test]
    fn opens_until_the_index() {
        let first = open_ptmx(libc::O_RDWR as u32).unwrap();
        let n = sys::pty_index(first.as_fd()).unwrap();
        drop(first);
        // n is free again; n + 2 is very likely free too (others may take
        // indexes meanwhile: then the first opened is given).
        let (m, got) =
            crate::util::ptmx::open_at_index(n + 2, &|| open_ptmx(libc::O_RDWR as u32)).unwrap();
        assert_eq!(sys::pty_index(m.as_fd()).unwrap(), got);
    }
}
