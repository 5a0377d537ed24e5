//! POSIX message queues of the tree's own IPC namespace: each queue's
//! name, mode, owner, limits and messages (with their priorities, in the
//! order they are received).
//!
//! CRIU 4.2 has no image for them (its `ipcns-var-N.img` holds only the
//! fs/mqueue limits), so crust keeps them in a file of its own,
//! `crust-mqueue-N.img` (N: the IPC namespace id; messages
//! `CrustMqueueEntry`, a magic that is none of CRIU's). CRIU never opens
//! it: CRIU 4.2 restoring crust's images makes the namespace without its
//! queues, and crust restoring CRIU's images finds no such file and makes
//! none.
//!
//! Dump: a crust thread joins the IPC namespace, mounts its mqueue
//! filesystem where only that thread sees it (to list the queues and read
//! their files), and opens each queue. Reading a queue takes its messages
//! away: every one is received, then sent back in the same order (the
//! queue is as it was; the tree is frozen). A queue with a notification
//! registered is refused (the registration belongs to a process and an
//! open descriptor, which crust does not restore); an mqueue descriptor
//! held by the tree is refused by the files step (`files::classify`).
//!
//! Restore: in the root's new IPC namespace, before any task runs, each
//! queue is made again (O_EXCL), given its mode and owner, and its
//! messages sent in order.

use super::ids::NsKind;
use super::in_ns;
use crate::util::{read_image, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::crust_mqueue::{CrustMqueueEntry, CrustMqueueMsg};
use crust_sys::mqueue as mq;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The kernel's hard limits (HARD_MSGMAX, HARD_MSGSIZEMAX, MQ_PRIO_MAX,
/// NAME_MAX).
const MAX_MSGS: u64 = 65536;
const MAX_MSGSIZE: u64 = 16 * 1024 * 1024;
const MAX_PRIO: u32 = 32768;
const MAX_NAME: usize = 255;

/// Dump the queues of the IPC namespace process `pid` is in (the tree's
/// own, id `id`) into `crust-mqueue-ID.img`; no file when it has none.
pub(crate) fn dump(dir: &Path, pid: i32, id: u32) -> Result<(), Error> {
    let queues = in_ns(pid, &[NsKind::Ipc], || read_queues(pid))?;
    if queues.is_empty() {
        return Ok(());
    }
    log::info!(
        "IPC namespace {id}: {} POSIX message queues dumped to {} (crust's own image: CRIU 4.2 does not restore them)",
        queues.len(),
        ImageType::CrustMqueue.file_name(id as u64)
    );
    write_image(dir, ImageType::CrustMqueue, id as u64, &queues)
}

/// In a thread that joined the namespace: every queue, read and put back.
fn read_queues(pid: i32) -> Result<Vec<CrustMqueueEntry>, Error> {
    let at = mq::mount_own_mqueue_privately().map_err(sys_err(
        pid,
        "mounting the mqueue filesystem of its IPC namespace (a private mount of crust's thread)",
    ))?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(at).map_err(sys_err(pid, "listing its POSIX message queues"))? {
        let e = e.map_err(sys_err(pid, "listing its POSIX message queues"))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(read_queue(pid, &at.join(&name), &name)?);
    }
    Ok(out)
}

/// The NOTIFY_PID of a queue's file (`QSIZE:.. NOTIFY:.. SIGNO:..
/// NOTIFY_PID:..`): non-zero when a process registered a notification.
fn notify_pid(text: &str) -> Option<i64> {
    let rest = text.split("NOTIFY_PID:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn read_queue(pid: i32, file: &Path, name: &str) -> Result<CrustMqueueEntry, Error> {
    use std::os::unix::fs::MetadataExt;
    let what = |op: &str| format!("{op} POSIX message queue /{name} of its IPC namespace");
    let text = std::fs::read_to_string(file).map_err(sys_err(pid, what("reading the file of")))?;
    match notify_pid(&text) {
        Some(0) => {}
        Some(p) => {
            return Err(Error::unsupported(format!(
                "POSIX message queue /{name} of the IPC namespace of process {pid} has a notification registered by process {p} (mq_notify); crust cannot restore it: remove the registration before the dump"
            )))
        }
        None => {
            return Err(Error::unsupported(format!(
                "POSIX message queue /{name} of the IPC namespace of process {pid}: its file reads {text:?}, without the NOTIFY_PID crust expects"
            )))
        }
    }
    let meta = std::fs::metadata(file).map_err(sys_err(pid, what("stat of")))?;
    let fd = mq::open_existing(name).map_err(sys_err(pid, what("opening")))?;
    let attr = mq::getattr(fd.as_fd()).map_err(sys_err(pid, what("mq_getattr on")))?;
    let msgs = take_and_put_back(pid, &fd, name, attr)?;
    log::debug!(
        "POSIX message queue /{name}: mode {:o}, maxmsg {}, msgsize {}, {} messages",
        meta.mode() & 0o7777,
        attr.maxmsg,
        attr.msgsize,
        msgs.len()
    );
    Ok(CrustMqueueEntry {
        name: name.to_string(),
        mode: meta.mode() & 0o7777,
        // As the tree's user namespace sees them (CRIU's rule for ids).
        uid: crate::util::idmap::to_ns_uid(meta.uid()),
        gid: crate::util::idmap::to_ns_gid(meta.gid()),
        maxmsg: attr.maxmsg.max(0) as u64,
        msgsize: attr.msgsize.max(0) as u64,
        msgs,
        ..Default::default()
    })
}

/// Receive every message of the queue (highest priority first, oldest
/// first within one), then send them back in that order, which leaves the
/// queue as it was. A failure part-way sends back what was taken.
fn take_and_put_back(
    pid: i32,
    fd: &OwnedFd,
    name: &str,
    attr: mq::MqAttr,
) -> Result<Vec<CrustMqueueMsg>, Error> {
    let size = usize::try_from(attr.msgsize)
        .ok()
        .filter(|&s| s as u64 <= MAX_MSGSIZE)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "POSIX message queue /{name} of the IPC namespace of process {pid} has a message size of {} bytes, beyond the kernel's limit",
                attr.msgsize
            ))
        })?;
    let mut buf = vec![0u8; size];
    let mut msgs = Vec::new();
    let mut failed = None;
    loop {
        match mq::receive(fd.as_fd(), &mut buf) {
            Ok((n, prio)) => msgs.push(CrustMqueueMsg {
                prio,
                data: buf.get(..n).unwrap_or_default().to_vec(),
                ..Default::default()
            }),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut lost = 0;
    for (i, m) in msgs.iter().enumerate() {
        if let Err(e) = mq::send(fd.as_fd(), &m.data, m.prio) {
            lost = msgs.len() - i;
            failed.get_or_insert(e);
            break;
        }
    }
    match failed {
        None => Ok(msgs),
        Some(e) => {
            let lost = if lost == 0 {
                "every message it held was put back".to_string()
            } else {
                format!("{lost} of its messages could not be put back and are lost")
            };
            Err(sys_err(
                pid,
                format!("reading POSIX message queue /{name} of its IPC namespace ({lost})"),
            )(e))
        }
    }
}

/// The queues of an IPC namespace to make again, read and checked.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    id: u32,
    queues: Vec<CrustMqueueEntry>,
}

fn bad(dir: &Path, id: u32, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("{}: {why}", ImageType::CrustMqueue.file_name(id as u64)),
    }
}

impl Queues {
    /// Read `crust-mqueue-ID.img` if the dump wrote one (crust's own file;
    /// CRIU's images have none: no queues).
    pub(crate) fn load(dir: &Path, id: u32) -> Result<Queues, Error> {
        let file = dir.join(ImageType::CrustMqueue.file_name(id as u64));
        if !file.exists() {
            return Ok(Queues::default());
        }
        let queues: Vec<CrustMqueueEntry> = read_image(dir, ImageType::CrustMqueue, id as u64)?;
        let mut seen = std::collections::HashSet::new();
        for q in &queues {
            check(q).map_err(|why| bad(dir, id, format!("queue /{}: {why}", q.name)))?;
            if !seen.insert(q.name.as_str()) {
                return Err(bad(dir, id, format!("queue /{} appears twice", q.name)));
            }
        }
        Ok(Queues { id, queues })
    }

    /// Whether there are no queues to make.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// In a crust thread that joined the root's new IPC namespace (host
    /// pid `pid`): make every queue with its messages.
    pub(crate) fn create(&self, pid: i32) -> Result<(), Error> {
        for q in &self.queues {
            create_queue(pid, q)?;
        }
        if !self.queues.is_empty() {
            log::debug!(
                "IPC namespace {}: {} POSIX message queues made again",
                self.id,
                self.queues.len()
            );
        }
        Ok(())
    }
}

/// Whether an entry read from the image is one the kernel can hold.
fn check(q: &CrustMqueueEntry) -> Result<(), String> {
    if q.name.is_empty() || q.name.len() > MAX_NAME || q.name.contains(['/', '\0']) {
        return Err("the name is empty, too long or holds '/' or NUL".into());
    }
    if q.mode > 0o7777 {
        return Err(format!("mode {:o} is not a permission mode", q.mode));
    }
    if q.maxmsg == 0 || q.maxmsg > MAX_MSGS || q.msgsize == 0 || q.msgsize > MAX_MSGSIZE {
        return Err(format!(
            "limits maxmsg {} / msgsize {} are beyond the kernel's (1..={MAX_MSGS} / 1..={MAX_MSGSIZE})",
            q.maxmsg, q.msgsize
        ));
    }
    if q.msgs.len() as u64 > q.maxmsg {
        return Err(format!(
            "{} messages for room for {}",
            q.msgs.len(),
            q.maxmsg
        ));
    }
    for (i, m) in q.msgs.iter().enumerate() {
        if m.data.len() as u64 > q.msgsize || m.prio >= MAX_PRIO {
            return Err(format!(
                "message {i} ({} bytes, priority {}) does not fit the queue (msgsize {}, priorities below {MAX_PRIO})",
                m.data.len(),
                m.prio,
                q.msgsize
            ));
        }
    }
    Ok(())
}

fn create_queue(pid: i32, q: &CrustMqueueEntry) -> Result<(), Error> {
    let name = &q.name;
    let what = |op: &str| format!("{op} POSIX message queue /{name} in its IPC namespace");
    // The limits were checked against the kernel's hard ones.
    let fd = mq::create(name, q.mode, q.maxmsg as i64, q.msgsize as i64).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EMFILE) {
            " (crust's RLIMIT_MSGQUEUE is too low for its size: raise it)"
        } else {
            ""
        };
        sys_err(pid, format!("{}{hint}", what("creating")))(e)
    })?;
    let file = std::fs::File::from(fd);
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(q.mode))
        .map_err(sys_err(pid, what("setting the mode of")))?;
    let (uid, gid) = (
        crate::util::idmap::host_uid(q.uid),
        crate::util::idmap::host_gid(q.gid),
    );
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        .map_err(sys_err(pid, what("setting the owner of")))?;
    for (i, m) in q.msgs.iter().enumerate() {
        mq::send(file.as_fd(), &m.data, m.prio)
            .map_err(sys_err(pid, what(&format!("sending message {i} to"))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_pid_of_queue_file() {
        let t = "QSIZE:12         NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n";
        assert_eq!(notify_pid(t), Some(0));
        let t = "QSIZE:0          NOTIFY:0     SIGNO:10    NOTIFY_PID:4242  \n";
        assert_eq!(notify_pid(t), Some(4242));
        assert_eq!(notify_pid("QSIZE:0"), None);
    }

    #[test]
    fn check_refuses_what_the_kernel_cannot_hold() {
        let ok = CrustMqueueEntry {
            name: "q".into(),
            mode: 0o640,
            maxmsg: 2,
            msgsize: 4,
            msgs: vec![CrustMqueueMsg {
                prio: 3,
                data: b"abcd".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(check(&ok).is_ok());
        let mut q = ok.clone();
        q.name = "a/b".into();
        assert!(check(&q).is_err());
        let mut q = ok.clone();
        q.msgs[0].data = b"abcde".to_vec();
        assert!(check(&q).is_err());
        let mut q = ok.clone();
        q.maxmsg = 0;
        assert!(check(&q).is_err());
        let mut q = ok.clone();
        q.msgs[0].prio = MAX_PRIO;
        assert!(check(&q).is_err());
        let mut q = ok;
        q.msgs = vec![q.msgs[0].clone(); 3];
        assert!(check(&q).is_err());
    }
}
