//! fanotify files, in CRIU's images: one `files.img` entry of type FANOTIFY
//! per open file description, with the group's `fanotify_init` flags
//! (`faflags`), the flags of the files it hands out with events (`evflags`)
//! and its marks: inode marks by file handle (and the path the handle led
//! to at dump time), mount marks by mount id (and mount point), each with
//! its mark flags, event mask and ignored mask. Everything is read from
//! `/proc/PID/fdinfo/FD`:
//!
//! ```text
//! fanotify flags:10 event-flags:8000
//! fanotify ino:1b sdev:2f mflags:40 mask:0 ignored_mask:20 fhandle-bytes:8 fhandle-type:1 f_handle:1b000000aa11bb22
//! fanotify mnt_id:3c mflags:0 mask:20 ignored_mask:0
//! ```
//!
//! Restore: crust makes the group itself (`fanotify_init` with the recorded
//! flags, close-on-exec in crust) and adds every mark again: an inode mark
//! on the file its handle opens (`open_by_handle_at` on a mount of the same
//! filesystem, as for inotify watches; the recorded path if the handle is
//! stale), a mount mark on the mount point of the mount with that id
//! (or the recorded mount point), the mask with `FAN_MARK_ADD` and the
//! ignored mask with `FAN_MARK_IGNORED_MASK` (`FAN_MARK_IGNORE` if the mark
//! had it), keeping `FAN_MARK_IGNORED_SURV_MODIFY` and `FAN_MARK_EVICTABLE`.
//! The group goes to the tasks over SCM_RIGHTS like the other event files
//! (see `events.rs`).
//!
//! Not kept, as in CRIU: events already queued on the group at dump time
//! (they are dropped), permission events waiting for an answer, and
//! filesystem (`FAN_MARK_FILESYSTEM`) or mount-namespace marks, which make
//! the dump fail with a message.

use crate::files::events::{
    handle_bytes, handle_path, handle_words, hex, kdev, open_handle, words,
};
use crate::util::view;
use crate::Error;
use crust_images::proto::fh::FhEntry;
use crust_images::proto::fown::FownEntry;
use crust_images::proto::fsnotify::{
    mark_type, FanotifyFileEntry, FanotifyInodeMarkEntry, FanotifyMarkEntry, FanotifyMountMarkEntry,
};
use crust_proc::FdInfo;
use crust_sys::events as ev;
use log::{debug, warn};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const FAN_CLOEXEC: u32 = libc::FAN_CLOEXEC;
const FAN_MARK_ADD: u32 = libc::FAN_MARK_ADD;
const FAN_MARK_MOUNT: u32 = libc::FAN_MARK_MOUNT;
const FAN_MARK_IGNORED_MASK: u32 = libc::FAN_MARK_IGNORED_MASK;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = libc::FAN_MARK_IGNORED_SURV_MODIFY;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;

fn bad_line(pid: i32, fd: i32, line: &str) -> Error {
    Error::Restore {
        pid,
        what: format!("cannot parse the fanotify mark of fd {fd} in its fdinfo: 'fanotify {line}'"),
    }
}

/// One fdinfo mark line, before the paths are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    Inode {
        ino: u64,
        sdev: u32,
        mflags: u32,
        mask: u32,
        ignored: u32,
        htype: u32,
        handle: Vec<u8>,
    },
    Mount {
        mnt_id: u32,
        mflags: u32,
        mask: u32,
        ignored: u32,
    },
}

/// The `fanotify ...` lines of an fdinfo (the text after "fanotify"):
/// (faflags, evflags) and the marks. Filesystem and other marks are
/// refused.
pub(crate) fn parse_lines<'a>(
    pid: i32,
    fd: i32,
    lines: impl Iterator<Item = &'a str>,
) -> Result<((u32, u32), Vec<Mark>), Error> {
    let mut flags = None;
    let mut marks = Vec::new();
    for line in lines {
        let w = words(line);
        let bad = || bad_line(pid, fd, line);
        let n = |k: &str| w.get(k).and_then(|v| hex(v)).ok_or_else(bad);
        let n32 = |k: &str| n(k).and_then(|v| u32::try_from(v).map_err(|_| bad()));
        if w.contains_key("event-flags") {
            flags = Some((n32("flags")?, n32("event-flags")?));
        } else if w.contains_key("ino") {
            let bytes = n("fhandle-bytes")? as usize;
            let raw = w.get("f_handle").ok_or_else(bad)?;
            if raw.len() % 2 != 0 || bytes > ev::MAX_HANDLE_SZ || raw.len() / 2 < bytes {
                return Err(bad());
            }
            let mut handle: Vec<u8> = (0..raw.len() / 2)
                .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            handle.truncate(bytes);
            marks.push(Mark::Inode {
                ino: n("ino")?,
                sdev: n32("sdev")?,
                mflags: n32("mflags")?,
                mask: n32("mask")?,
                ignored: n32("ignored_mask")?,
                htype: n32("fhandle-type")?,
                handle,
            });
        } else if w.contains_key("mnt_id") {
            marks.push(Mark::Mount {
                mnt_id: n32("mnt_id")?,
                mflags: n32("mflags")?,
                mask: n32("mask")?,
                ignored: n32("ignored_mask")?,
            });
        } else if w.contains_key("sdev") {
            return Err(Error::unsupported(format!(
                "process {pid} has the fanotify fd {fd} with a filesystem mark (FAN_MARK_FILESYSTEM: 'fanotify {line}'), which crust (like CRIU) cannot restore"
            )));
        } else {
            return Err(Error::unsupported(format!(
                "process {pid} has the fanotify fd {fd} with a mark crust does not know: 'fanotify {line}'"
            )));
        }
    }
    let flags = flags.ok_or_else(|| Error::Restore {
        pid,
        what: format!("the fdinfo of fanotify fd {fd} has no 'fanotify flags:' line"),
    })?;
    Ok((flags, marks))
}

/// The FANOTIFY entry of fanotify fd `fd` of `pid` (description `id`).
pub(crate) fn entry(
    pid: i32,
    fd: i32,
    id: u32,
    flags: u32,
    info: &FdInfo,
) -> Result<FanotifyFileEntry, Error> {
    let ((faflags, evflags), marks) = parse_lines(pid, fd, info.get_all("fanotify"))?;
    let mut mounts = None;
    let mut out = Vec::new();
    for m in marks {
        let e = match m {
            Mark::Inode {
                ino,
                sdev,
                mflags,
                mask,
                ignored,
                htype,
                handle,
            } => {
                let path = handle_path(sdev, htype as i32, &handle);
                if path.is_none() {
                    warn!(
                        "{pid}: fd {fd}: cannot find the path of the fanotify mark on inode {ino} (dev {}:{})",
                        kdev(sdev).0,
                        kdev(sdev).1
                    );
                }
                FanotifyMarkEntry {
                    id,
                    r#type: mark_type::INODE,
                    mflags,
                    mask,
                    ignored_mask: ignored,
                    s_dev: sdev,
                    ie: Some(FanotifyInodeMarkEntry {
                        i_ino: ino,
                        f_handle: FhEntry {
                            bytes: handle.len() as u32,
                            r#type: htype,
                            handle: handle_words(&handle),
                            path,
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
            Mark::Mount {
                mnt_id,
                mflags,
                mask,
                ignored,
            } => {
                if mounts.is_none() {
                    let root = crust_proc::ProcRoot::default();
                    mounts =
                        Some(
                            crust_proc::mountinfo(&root, pid).map_err(|e| Error::Restore {
                                pid,
                                what: format!(
                                    "cannot read the mountinfo (for fanotify fd {fd}): {e}"
                                ),
                            })?,
                        );
                }
                let m = mounts
                    .as_ref()
                    .and_then(|ms| ms.iter().find(|m| m.mnt_id as u32 == mnt_id))
                    .ok_or_else(|| {
                        Error::unsupported(format!(
                            "process {pid} has the fanotify fd {fd} marking mount {mnt_id}, which is not in its mountinfo"
                        ))
                    })?;
                FanotifyMarkEntry {
                    id,
                    r#type: mark_type::MOUNT,
                    mflags,
                    mask,
                    ignored_mask: ignored,
                    s_dev: (m.major << 20) | (m.minor & 0xfffff),
                    me: Some(FanotifyMountMarkEntry {
                        mnt_id,
                        path: Some(m.mount_point.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
        };
        out.push(e);
    }
    debug!(
        "{pid}: fd {fd} is fanotify {id} (flags {faflags:#x}, event flags {evflags:#x}, {} marks)",
        out.len()
    );
    Ok(FanotifyFileEntry {
        id,
        flags,
        fown: FownEntry::default(),
        faflags,
        evflags,
        mark: out,
        ..Default::default()
    })
}

// ---------------------------------------------------------------- restore

/// Why the FANOTIFY entry `id` cannot be restored, if it cannot.
pub(crate) fn check(id: u32, e: &FanotifyFileEntry) -> Result<(), String> {
    for m in &e.mark {
        match (m.r#type, &m.ie, &m.me) {
            (mark_type::INODE, Some(ie), _) => {
                let h = &ie.f_handle;
                if h.bytes as usize > ev::MAX_HANDLE_SZ || h.bytes as usize > h.handle.len() * 8 {
                    return Err(format!(
                        "fanotify {id} has a mark on inode {} with a handle of {} bytes in {} words",
                        ie.i_ino,
                        h.bytes,
                        h.handle.len()
                    ));
                }
            }
            (mark_type::MOUNT, _, Some(_)) => {}
            (t, _, _) => {
                return Err(format!(
                    "fanotify {id} has a mark of type {t} without its inode or mount part"
                ))
            }
        }
    }
    Ok(())
}

fn restore_err(what: String) -> Error {
    Error::Restore {
        pid: crust_sys::process::getpid(),
        what,
    }
}

/// An O_PATH fd on the file an inode mark is on.
fn inode_target(
    id: u32,
    m: &FanotifyMarkEntry,
    ie: &FanotifyInodeMarkEntry,
) -> Result<OwnedFd, Error> {
    let h = &ie.f_handle;
    let hb = handle_bytes(&h.handle, h.bytes as usize);
    match open_handle(m.s_dev, h.r#type as i32, &hb) {
        Ok(f) => Ok(f),
        Err(e) => {
            let (maj, min) = kdev(m.s_dev);
            let was = h
                .path
                .as_deref()
                .map(|p| format!(", was {p}"))
                .unwrap_or_default();
            // A stale handle (the inode is gone, another filesystem): the
            // recorded path, if it is there.
            // (Where crust sees the tree's path.)
            let seen = h
                .path
                .as_deref()
                .and_then(|p| view::host_path(Path::new(p)));
            let Some(p) = seen.filter(|p| p.exists()) else {
                return Err(restore_err(format!(
                    "fanotify {id}: cannot open the file of the mark on inode {} (dev {maj}:{min}{was}): {e}",
                    ie.i_ino
                )));
            };
            warn!(
                "fanotify {id}: mark on inode {} by its path {}: {e}",
                ie.i_ino,
                p.display()
            );
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&p)
                .map(OwnedFd::from)
                .map_err(|source| Error::FileMissing { path: p, source })
        }
    }
}

/// An O_PATH fd on the mount point of a mount mark's mount: the mount with
/// that id if it is still at the recorded place (or no place was
/// recorded), else the mount at the recorded place. The mounts are the
/// restored tree's when it has a mount namespace of its own (its mount
/// ids are new: the place decides), else crust's.
fn mount_target(id: u32, me: &FanotifyMountMarkEntry) -> Result<OwnedFd, Error> {
    let ns = view::ns_pid();
    let of = ns.unwrap_or_else(crust_sys::process::getpid);
    let mounts = crust_proc::mountinfo(&crust_proc::ProcRoot::default(), of).map_err(|e| {
        restore_err(format!(
            "fanotify {id}: cannot read the mountinfo of {of}: {e}"
        ))
    })?;
    let by_id = mounts.iter().find(|m| m.mnt_id as u32 == me.mnt_id);
    let path = match (me.path.as_deref(), by_id) {
        (None, Some(m)) => m.mount_point.clone(),
        (Some(p), Some(m)) if m.mount_point == p => m.mount_point.clone(),
        (Some(p), _) if mounts.iter().any(|m| m.mount_point == p) => {
            warn!(
                "fanotify {id}: mount {} is not at {p} any more: marking the mount there",
                me.mnt_id
            );
            p.to_string()
        }
        (p, _) => {
            return Err(restore_err(format!(
                "fanotify {id}: the marked mount {}{} is not mounted",
                me.mnt_id,
                p.map(|p| format!(" (at {p})")).unwrap_or_default()
            )))
        }
    };
    let at = match ns {
        Some(_) => view::host_path(Path::new(&path)).unwrap_or_else(|| PathBuf::from(&path)),
        None => PathBuf::from(&path),
    };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&at)
        .map(OwnedFd::from)
        .map_err(|source| Error::FileMissing { path: at, source })
}

/// The fanotify_mark flags for the mask and the ignored mask of a mark of
/// type bit `kind` (0 or FAN_MARK_MOUNT) with kernel mark flags `mflags`.
fn mark_flags(kind: u32, mflags: u32) -> (u32, u32) {
    let base = FAN_MARK_ADD | kind | (mflags & FAN_MARK_EVICTABLE);
    let ignore = if mflags & FAN_MARK_IGNORE != 0 {
        FAN_MARK_IGNORE
    } else {
        FAN_MARK_IGNORED_MASK
    };
    (
        base,
        base | ignore | (mflags & FAN_MARK_IGNORED_SURV_MODIFY),
    )
}

fn add_mark(gfd: BorrowedFd<'_>, id: u32, m: &FanotifyMarkEntry) -> Result<(), Error> {
    let (target, kind, what) = match (m.r#type, &m.ie, &m.me) {
        (mark_type::INODE, Some(ie), _) => {
            (inode_target(id, m, ie)?, 0, format!("inode {}", ie.i_ino))
        }
        (mark_type::MOUNT, _, Some(me)) => (
            mount_target(id, me)?,
            FAN_MARK_MOUNT,
            format!("mount {}", me.mnt_id),
        ),
        (t, _, _) => return Err(restore_err(format!("fanotify {id}: bad mark type {t}"))),
    };
    let path = CString::new(format!("/proc/self/fd/{}", target.as_raw_fd())).expect("no NUL");
    let (flags, iflags) = mark_flags(kind, m.mflags);
    let me = crust_sys::process::getpid();
    if m.mask != 0 {
        ev::fanotify_mark(gfd, flags, m.mask as u64, &path).map_err(crate::util::sys_err(
            me,
            format!(
                "fanotify_mark (flags {flags:#x}) of mask {:#x} on {what} for fanotify {id}",
                m.mask
            ),
        ))?;
    }
    if m.ignored_mask != 0 {
        ev::fanotify_mark(gfd, iflags, m.ignored_mask as u64, &path).map_err(
            crate::util::sys_err(
                me,
                format!(
                    "fanotify_mark (flags {iflags:#x}) of ignored mask {:#x} on {what} for fanotify {id}",
                    m.ignored_mask
                ),
            ),
        )?;
    }
    debug!(
        "fanotify {id}: mark on {what}, mask {:#x}, ignored {:#x}, mflags {:#x}",
        m.mask, m.ignored_mask, m.mflags
    );
    Ok(())
}

/// Make fanotify group `id` with its marks (crust's fd close-on-exec; the
/// caller sets the status flags).
pub(crate) fn open(id: u32, e: &FanotifyFileEntry) -> Result<OwnedFd, Error> {
    let me = crust_sys::process::getpid();
    let what = || {
        format!(
            "fanotify_init (flags {:#x}, event flags {:#x}) for file {id}",
            e.faflags, e.evflags
        )
    };
    // The group keeps its init flags (fdinfo shows them): FAN_CLOEXEC only
    // if the task gave it; crust's own fd is made close-on-exec by a dup.
    let fd = ev::fanotify_init(e.faflags, e.evflags).map_err(crate::util::sys_err(me, what()))?;
    let fd = if e.faflags & FAN_CLOEXEC == 0 {
        fd.try_clone()
            .map_err(crate::util::sys_err(me, format!("dup of {}", what())))?
    } else {
        fd
    };
    for m in &e.mark {
        add_mark(fd.as_fd(), id, m)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lines() {
        // As fs/notify/fdinfo.c prints them (after the "fanotify" word).
        let text = [
            "flags:11 event-flags:8000",
            "ino:1b sdev:2f mflags:40 mask:0 ignored_mask:20 fhandle-bytes:8 fhandle-type:1 f_handle:1b000000aa11bb22",
            "mnt_id:3c mflags:0 mask:20 ignored_mask:0",
            "ino:1c sdev:800001 mflags:0 mask:a ignored_mask:0 fhandle-bytes:c fhandle-type:81 f_handle:0102030405060708090a0b0c",
        ];
        let ((fa, evf), marks) = parse_lines(1, 3, text.iter().copied()).unwrap();
        assert_eq!((fa, evf), (0x11, 0x8000));
        assert_eq!(marks.len(), 3);
        assert_eq!(
            marks[0],
            Mark::Inode {
                ino: 0x1b,
                sdev: 0x2f,
                mflags: 0x40,
                mask: 0,
                ignored: 0x20,
                htype: 1,
                handle: vec![0x1b, 0, 0, 0, 0xaa, 0x11, 0xbb, 0x22],
            }
        );
        assert_eq!(
            marks[1],
            Mark::Mount {
                mnt_id: 0x3c,
                mflags: 0,
                mask: 0x20,
                ignored: 0
            }
        );
        match &marks[2] {
            Mark::Inode {
                sdev,
                handle,
                htype,
                mask,
                ..
            } => {
                assert_eq!(kdev(*sdev), (8, 1));
                assert_eq!(handle.len(), 12);
                assert_eq!(handle[11], 0x0c);
                assert_eq!((*htype, *mask), (0x81, 0xa));
                let w = handle_words(handle);
                assert_eq!(w.len(), 16);
                assert_eq!(handle_bytes(&w, 12), *handle);
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn bad_lines() {
        let one = |l: &'static str| parse_lines(1, 3, ["flags:0 event-flags:0", l].into_iter());
        // A filesystem mark: refused, naming it.
        let e = one("sdev:2f mflags:0 mask:2 ignored_mask:0").unwrap_err();
        assert!(e.to_string().contains("FAN_MARK_FILESYSTEM"), "{e}");
        // Odd handle digits, a handle shorter than its size, a bad number.
        assert!(one("ino:1 sdev:2 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:123").is_err());
        assert!(one("ino:1 sdev:2 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:1234").is_err());
        assert!(one("mnt_id:zz mflags:0 mask:2 ignored_mask:0").is_err());
        assert!(one("mnt_id:1 mflags:0 mask:2").is_err());
        // No flags line at all.
        assert!(parse_lines(1, 3, std::iter::empty()).is_err());
        // No marks is fine.
        let (f, m) = parse_lines(1, 3, ["flags:3 event-flags:2"].into_iter()).unwrap();
        assert_eq!((f, m.len()), ((3, 2), 0));
    }

    #[test]
    fn flags_of_marks() {
        assert_eq!(mark_flags(0, 0), (1, 1 | 0x20));
        assert_eq!(mark_flags(FAN_MARK_MOUNT, 0x40), (0x11, 0x11 | 0x20 | 0x40));
        assert_eq!(
            mark_flags(0, 0x400 | 0x40 | 0x200),
            (0x201, 0x201 | 0x400 | 0x40)
        );
    }

    #[test]
    fn checks() {
        let mut e = FanotifyFileEntry {
            id: 5,
            mark: vec![FanotifyMarkEntry {
                id: 5,
                r#type: mark_type::MOUNT,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(check(5, &e).unwrap_err().contains("fanotify 5"));
        e.mark[0].me = Some(FanotifyMountMarkEntry::default());
        check(5, &e).unwrap();
        e.mark[0].r#type = mark_type::INODE;
        e.mark[0].ie = Some(FanotifyInodeMarkEntry {
            f_handle: FhEntry {
                bytes: 200,
                handle: vec![0; 16],
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(check(5, &e).is_err());
    }

    /// A group made and marked by `open`, checked through its fdinfo.
    #[test]
    fn open_marks() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            return;
        }
        let dir = std::env::temp_dir().join(format!("crust-fan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        let (sdev, htype, handle) = name_to_handle(&file);
        let e = FanotifyFileEntry {
            id: 7,
            faflags: libc::FAN_CLASS_NOTIF,
            evflags: libc::O_RDONLY as u32,
            mark: vec![FanotifyMarkEntry {
                id: 7,
                r#type: mark_type::INODE,
                mflags: FAN_MARK_IGNORED_SURV_MODIFY,
                mask: libc::FAN_MODIFY as u32,
                ignored_mask: libc::FAN_OPEN as u32,
                s_dev: sdev,
                ie: Some(FanotifyInodeMarkEntry {
                    i_ino: 0,
                    f_handle: FhEntry {
                        bytes: handle.len() as u32,
                        r#type: htype,
                        handle: handle_words(&handle),
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = open(7, &e);
        let info = r
            .as_ref()
            .map(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())));
        // (Deleting the file drops the mark.)
        let _ = std::fs::remove_dir_all(&dir);
        let info = info.unwrap().unwrap();
        assert!(info.contains("mflags:40 mask:2 ignored_mask:20"), "{info}");
    }

    /// (kernel s_dev, handle type, handle) of a path, as the kernel prints
    /// them in fdinfo: through an inotify watch.
    fn name_to_handle(p: &Path) -> (u32, u32, Vec<u8>) {
        let i = ev::inotify_init1(libc::IN_CLOEXEC).unwrap();
        let c = CString::new(p.to_str().unwrap()).unwrap();
        ev::inotify_add_watch(i.as_fd(), &c, libc::IN_OPEN).unwrap();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", i.as_raw_fd())).unwrap();
        let line = info.lines().find(|l| l.starts_with("inotify")).unwrap();
        let w = words(line);
        let raw = w["f_handle"];
        let n = hex(w["fhandle-bytes"]).unwrap() as usize;
        let b: Vec<u8> = (0..n)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        (
            hex(w["sdev"]).unwrap() as u32,
            hex(w["fhandle-type"]).unwrap() as u32,
            b,
        )
    }
}
