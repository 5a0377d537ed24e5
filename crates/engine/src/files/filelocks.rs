//! File locks (`--file-locks`): flock(2) locks, POSIX record locks and
//! open file description (OFD) locks, in CRIU's `filelocks.img`.
//!
//! Dump: the kernel lists the locks held through an fd in its
//! `/proc/PID/fdinfo/FD` ("lock:" lines, the same format as /proc/locks):
//! POSIX locks of the fd table that owns them, flock and OFD locks and
//! leases (F_SETLEASE) of the open file description. A lock seen through several fds (dup, fork) is
//! recorded once, on the first fd that holds it. Without `--file-locks` a
//! tree holding any lock is refused, as CRIU does.
//!
//! Restore: once every fd of the tree is open, the owning task takes each
//! lock again with a remote flock(LOCK_NB) or fcntl(F_SETLK / F_OFD_SETLK /
//! F_SETLEASE); a lock that someone outside took meanwhile fails the
//! restore. Leases are CRIU's FL_LEASE entries (type F_RDLCK or F_WRLCK).
//! A lease being broken at dump time has type LEASE_BREAKING | the type it
//! is being broken to (what the kernel shows: F_UNLCK or F_RDLCK), as in
//! CRIU; the restore takes the lease its fd's access mode allows, then
//! crust breaks it again with a non-blocking open of the file (write to
//! remove it, read to downgrade it), while the file has no owner, so that
//! no break signal reaches the task a second time (it had its signal
//! before the dump); the recorded owner is set again afterwards.

use crate::task::remote::Remote;
use crate::util::{read_image, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FdinfoEntry};
use crust_images::proto::file_lock::FileLockEntry;
use log::{debug, warn};
use std::collections::HashMap;
use std::path::Path;

/// `file_lock_entry.flag` kinds (CRIU's FL_* values).
pub const FL_POSIX: u32 = 1;
pub const FL_FLOCK: u32 = 2;
pub const FL_OFD: u32 = 4;
pub const FL_LEASE: u32 = 32;

/// `file_lock_entry.type` values (struct flock's l_type).
const F_RDLCK: u32 = 0;
const F_WRLCK: u32 = 1;
const F_UNLCK: u32 = 2;

/// fcntl commands for OFD locks (not in every libc).
const F_OFD_SETLK: u64 = 37;
/// CRIU's bit in the type of a lease being broken.
const LEASE_BREAKING: u32 = 4;

/// One "lock:" line of an fdinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockLine {
    kind: u32,
    ltype: u32,
    /// The pid the kernel shows (the locker; -1 for OFD locks).
    pid: i64,
    dev: String,
    ino: u64,
    start: i64,
    /// Inclusive end, None for "EOF".
    end: Option<i64>,
    /// A lease being broken (BREAKING; its type is the one it is being
    /// broken to).
    breaking: bool,
}

impl LockLine {
    fn len(&self) -> i64 {
        match self.end {
            None => 0,
            Some(e) => e + 1 - self.start,
        }
    }
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        FL_POSIX => "POSIX",
        FL_FLOCK => "flock",
        FL_OFD => "OFD",
        FL_LEASE => "lease",
        _ => "unknown",
    }
}

/// Parse the text after "lock:" (or a /proc/locks line). `Ok(None)` for a
/// line that is not a held lock (a blocked waiter, "->").
fn parse_lock_line(s: &str) -> Result<Option<LockLine>, String> {
    let t: Vec<&str> = s.split_whitespace().collect();
    if t.len() > 1 && t[1] == "->" {
        return Ok(None);
    }
    if t.len() < 8 || !t[0].ends_with(':') {
        return Err(format!("cannot parse lock line '{}'", s.trim()));
    }
    let kind = match t[1] {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        "LEASE" | "DELEG" => FL_LEASE,
        other => return Err(format!("unknown lock kind {other}")),
    };
    if kind != FL_LEASE && t[2] != "ADVISORY" {
        return Err(format!("{} locks are not supported", t[2].to_lowercase()));
    }
    let ltype = match t[3] {
        "READ" => F_RDLCK,
        "WRITE" => F_WRLCK,
        "UNLCK" => F_UNLCK,
        other => return Err(format!("unknown lock type {other}")),
    };
    let pid: i64 = t[4]
        .parse()
        .map_err(|_| format!("bad lock owner '{}'", t[4]))?;
    // maj:min:ino
    let mut parts = t[5].rsplitn(2, ':');
    let ino: u64 = parts
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("bad lock inode '{}'", t[5]))?;
    let dev = parts.next().unwrap_or("").to_string();
    let start: i64 = t[6]
        .parse()
        .map_err(|_| format!("bad lock start '{}'", t[6]))?;
    let end = if t[7] == "EOF" {
        None
    } else {
        Some(
            t[7].parse::<i64>()
                .map_err(|_| format!("bad lock end '{}'", t[7]))?,
        )
    };
    Ok(Some(LockLine {
        kind,
        ltype,
        pid,
        dev,
        ino,
        start,
        end,
        breaking: kind == FL_LEASE && t[2] == "BREAKING",
    }))
}

/// The locks held through fd `fd` of `pid`.
fn fd_locks(pid: i32, fd: i32) -> Result<Vec<LockLine>, Error> {
    let info = crust_proc::fdinfo(&crust_proc::ProcRoot::default(), pid, fd)
        .map_err(crate::util::proc_err(pid))?;
    let mut out = Vec::new();
    for rest in info.get_all("lock") {
        match parse_lock_line(rest) {
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(why) => return Err(Error::unsupported(format!("process {pid} fd {fd}: {why}"))),
        }
    }
    Ok(out)
}

/// Fd `fd` of `pid` holds a write lease (or one being broken): nobody
/// else may open the file without breaking it.
pub fn write_leased(pid: i32, fd: i32) -> bool {
    fd_locks(pid, fd)
        .map(|v| {
            v.iter()
                .any(|l| l.kind == FL_LEASE && (l.ltype == F_WRLCK || l.breaking))
        })
        .unwrap_or(false)
}

/// The locks of a tree being dumped.
pub struct LockDump {
    enabled: bool,
    entries: Vec<FileLockEntry>,
    /// flock/OFD locks recorded so far: the lock and the (host pid, fd)
    /// it was found on, to find the same open file description again.
    seen_desc: Vec<(LockLine, i32, i32)>,
}

impl LockDump {
    /// `enabled`: `--file-locks` was given.
    pub fn new(enabled: bool) -> Self {
        LockDump {
            enabled,
            entries: Vec::new(),
            seen_desc: Vec::new(),
        }
    }

    /// Note the locks held through the fds of process `pid` (`nspid` in
    /// the tree's pid namespace), whose fdinfo entries are `fds`.
    pub fn collect(&mut self, pid: i32, nspid: i32, fds: &[FdinfoEntry]) -> Result<(), Error> {
        // POSIX locks of this fd table, as (line) already recorded.
        let mut posix_seen: Vec<LockLine> = Vec::new();
        for f in fds {
            let fd = f.fd as i32;
            let locks = fd_locks(pid, fd)?;
            if locks.is_empty() {
                continue;
            }
            if !self.enabled {
                let l = &locks[0];
                return Err(Error::unsupported(format!(
                    "process {pid} holds a {} lock through fd {fd} (inode {}); dump file locks with --file-locks (-l) and restore with --file-locks too",
                    kind_name(l.kind),
                    l.ino
                )));
            }
            if f.r#type != fd_types::REG {
                return Err(Error::unsupported(format!(
                    "process {pid} holds a {} lock through fd {fd}, which is not a regular file (type {})",
                    kind_name(locks[0].kind),
                    f.r#type
                )));
            }
            for l in locks {
                match l.kind {
                    FL_POSIX => {
                        if posix_seen.contains(&l) {
                            continue;
                        }
                        posix_seen.push(l.clone());
                    }
                    _ => {
                        let same = self.seen_desc.iter().any(|(o, opid, ofd)| {
                            *o == l
                                && crust_sys::process::kcmp_file(*opid, pid, *ofd, fd)
                                    .unwrap_or(false)
                        });
                        if same {
                            continue;
                        }
                        self.seen_desc.push((l.clone(), pid, fd));
                    }
                }
                debug!("{pid}: fd {fd} holds a {} lock ({l:?})", kind_name(l.kind));
                self.entries.push(FileLockEntry {
                    flag: l.kind,
                    r#type: l.ltype | if l.breaking { LEASE_BREAKING } else { 0 },
                    pid: nspid,
                    fd,
                    start: l.start,
                    len: l.len(),
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// Write `filelocks.img` (only with --file-locks, as CRIU).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        write_image(dir, ImageType::FileLocks, 0, &self.entries)
    }
}

/// The locks to take again on restore, by the pid (in the images) of the
/// process that takes them.
#[derive(Default)]
pub struct RestoreLocks {
    by_pid: HashMap<i32, Vec<FileLockEntry>>,
}

impl RestoreLocks {
    /// Read and check `filelocks.img`. `procs` gives each live process's
    /// pid and its fd table. Without `--file-locks` the image is ignored,
    /// as CRIU does.
    pub fn load<'a>(
        dir: &Path,
        enabled: bool,
        procs: impl Iterator<Item = (i32, &'a [FdinfoEntry])>,
    ) -> Result<RestoreLocks, Error> {
        let name = ImageType::FileLocks.file_name(0);
        if !dir.join(&name).exists() {
            return Ok(RestoreLocks::default());
        }
        let entries: Vec<FileLockEntry> = read_image(dir, ImageType::FileLocks, 0)?;
        if entries.is_empty() {
            return Ok(RestoreLocks::default());
        }
        if !enabled {
            warn!(
                "{name} holds {} file locks, not restored without --file-locks",
                entries.len()
            );
            return Ok(RestoreLocks::default());
        }
        let fds: HashMap<i32, &[FdinfoEntry]> = procs.collect();
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("{name}: {why}"),
        };
        let mut by_pid: HashMap<i32, Vec<FileLockEntry>> = HashMap::new();
        for e in entries {
            let Some(table) = fds.get(&e.pid) else {
                return Err(bad(format!(
                    "a lock belongs to pid {}, which is not a live process of the tree",
                    e.pid
                )));
            };
            let Some(f) = table.iter().find(|f| f.fd as i64 == e.fd as i64) else {
                return Err(bad(format!(
                    "a lock of pid {} is on fd {}, which it does not have",
                    e.pid, e.fd
                )));
            };
            if f.r#type != fd_types::REG {
                return Err(bad(format!(
                    "a lock of pid {} is on fd {}, which is not a regular file",
                    e.pid, e.fd
                )));
            }
            if ![FL_POSIX, FL_FLOCK, FL_OFD, FL_LEASE].contains(&e.flag) {
                return Err(bad(format!("unknown lock kind {:#x}", e.flag)));
            }
            let breaking = e.flag == FL_LEASE && e.r#type & LEASE_BREAKING != 0;
            if breaking && e.r#type & !LEASE_BREAKING == F_WRLCK {
                return Err(bad(format!(
                    "the lease of pid {} on fd {} is being broken to a write lease",
                    e.pid, e.fd
                )));
            }
            if e.r#type & !(if breaking { LEASE_BREAKING } else { 0 }) > F_UNLCK {
                return Err(bad(format!("unknown lock type {}", e.r#type)));
            }
            if e.start < 0 || e.len < 0 || e.start.checked_add(e.len).is_none() {
                return Err(bad(format!(
                    "a lock of pid {} has a bad range (start {}, length {})",
                    e.pid, e.start, e.len
                )));
            }
            by_pid.entry(e.pid).or_default().push(e);
        }
        Ok(RestoreLocks { by_pid })
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Take the locks of process `pid` (the image's pid) in its task,
    /// whose fds are all open.
    pub fn apply(&self, r: &mut Remote<'_>, pid: i32) -> Result<(), Error> {
        let Some(locks) = self.by_pid.get(&pid) else {
            return Ok(());
        };
        for e in locks {
            let fd = e.fd as u64;
            let what = format!(
                "{} {} lock on fd {} ({}+{})",
                kind_name(e.flag),
                match e.r#type {
                    F_RDLCK => "read",
                    F_WRLCK => "write",
                    _ => "unlock",
                },
                e.fd,
                e.start,
                e.len
            );
            if e.r#type == F_UNLCK {
                continue;
            }
            debug!("{pid}: taking the {what}");
            let res = if e.flag == FL_LEASE && e.r#type & LEASE_BREAKING != 0 {
                break_lease(r, e.fd, e.r#type & !LEASE_BREAKING)
            } else if e.flag == FL_LEASE {
                set_lease_as_owner(r, e.fd, e.r#type, &what)
            } else if e.flag == FL_FLOCK {
                let op = if e.r#type == F_RDLCK {
                    libc::LOCK_SH
                } else {
                    libc::LOCK_EX
                } | libc::LOCK_NB;
                r.call(&what, libc::SYS_flock, [fd, op as u64, 0, 0, 0, 0])
            } else {
                // struct flock: l_type, l_whence (shorts), l_start, l_len
                // (at 8 and 16), l_pid (at 24, 0 for OFD locks); 32 bytes.
                let mut b = [0u8; 32];
                b[0..2].copy_from_slice(&(e.r#type as i16).to_le_bytes());
                b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
                b[8..16].copy_from_slice(&e.start.to_le_bytes());
                b[16..24].copy_from_slice(&e.len.to_le_bytes());
                let a = r.put(0, &b)?;
                let cmd = if e.flag == FL_OFD {
                    F_OFD_SETLK
                } else {
                    libc::F_SETLK as u64
                };
                r.call(&what, libc::SYS_fcntl, [fd, cmd, a.get(), 0, 0, 0])
            };
            match res {
                Ok(_) => {}
                Err(Error::Sys { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EAGAIN) | Some(libc::EACCES)
                    ) =>
                {
                    return Err(Error::Restore {
                        pid,
                        what: format!(
                            "cannot take the {what} again: another process holds a conflicting lock on the file{}",
                            if e.flag == FL_LEASE {
                                " or has it open"
                            } else {
                                ""
                            }
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// F_SETLEASE `ty` on fd `fd` of the task, with its fsuid the file's
/// owner for the call: the kernel lets the owner take a lease, anyone
/// else only with CAP_LEASE in the first user namespace, which a task of
/// a user namespace of its own lacks.
fn set_lease_as_owner(r: &mut Remote<'_>, fd: i32, ty: u32, what: &str) -> Result<u64, Error> {
    // struct stat (x86_64): st_uid is the u32 at 28 of its 144 bytes.
    const STAT_SIZE: usize = 144;
    const ST_UID: u64 = 28;
    let fd = fd as u64;
    let st = r.put(0, &[0u8; STAT_SIZE])?;
    r.call(
        &format!("fstat of fd {fd}"),
        libc::SYS_fstat,
        [fd, st.get(), 0, 0, 0, 0],
    )?;
    let uid = r.get(ST_UID, 4)?;
    let uid = uid
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(u32::MAX);
    // setfsuid answers the fsuid before the call, whether it took or not.
    let old = r.call(
        "setfsuid",
        libc::SYS_setfsuid,
        [u64::from(uid), 0, 0, 0, 0, 0],
    )?;
    let res = r.call(
        what,
        libc::SYS_fcntl,
        [fd, libc::F_SETLEASE as u64, u64::from(ty), 0, 0, 0],
    );
    r.call("setfsuid back", libc::SYS_setfsuid, [old, 0, 0, 0, 0, 0])?;
    res
}

/// Take the lease of fd `fd` again and break it towards `target`
/// (F_UNLCK or F_RDLCK), with no owner on the file meanwhile.
fn break_lease(r: &mut Remote<'_>, fd: i32, target: u32) -> Result<u64, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let fd64 = fd as u64;
    let fl = r.call(
        &format!("F_GETFL of fd {fd}"),
        libc::SYS_fcntl,
        [fd64, libc::F_GETFL as u64, 0, 0, 0, 0],
    )?;
    // The lease its fd could hold before the break.
    let held = if fl & libc::O_ACCMODE as u64 == libc::O_RDONLY as u64 {
        F_RDLCK
    } else {
        F_WRLCK
    };
    set_lease_as_owner(
        r,
        fd,
        held,
        &format!("lease (type {held}) on fd {fd} before breaking it"),
    )?;
    r.call(
        &format!("F_SETOWN 0 on fd {fd}"),
        libc::SYS_fcntl,
        [fd64, libc::F_SETOWN as u64, 0, 0, 0, 0],
    )?;
    let flags = if target == F_RDLCK {
        libc::O_RDONLY
    } else {
        libc::O_WRONLY
    } | libc::O_NONBLOCK
        | libc::O_CLOEXEC
        | libc::O_NOCTTY;
    let path = format!("/proc/{}/fd/{fd}", r.pid());
    let opened = std::fs::OpenOptions::new()
        .read(target == F_RDLCK)
        .write(target != F_RDLCK)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(&path);
    match opened {
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            debug!("{}: lease on fd {fd} breaking again", r.pid());
            Ok(0)
        }
        Err(source) => Err(Error::Sys {
            pid: r.pid(),
            op: format!("open {path} to break the lease of fd {fd} again"),
            source,
        }),
        Ok(_) => Err(Error::Restore {
            pid: r.pid(),
            what: format!("the lease of fd {fd} did not break when its file was opened"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_lines() {
        let l = parse_lock_line("\t1: FLOCK  ADVISORY  WRITE 1234 00:2b:5678 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.kind, l.ltype, l.pid, l.ino),
            (FL_FLOCK, F_WRLCK, 1234, 5678)
        );
        assert_eq!((l.dev.as_str(), l.start, l.len()), ("00:2b", 0, 0));
        let l = parse_lock_line("2: POSIX  ADVISORY  READ 77 fd:01:12 200 299")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.kind, l.ltype, l.start, l.len()),
            (FL_POSIX, F_RDLCK, 200, 100)
        );
        let l = parse_lock_line("3: OFDLCK ADVISORY  WRITE -1 00:2b:9 10 19")
            .unwrap()
            .unwrap();
        assert_eq!((l.kind, l.pid, l.len()), (FL_OFD, -1, 10));
        assert!(
            parse_lock_line("4: -> POSIX  ADVISORY  WRITE 1 00:2b:9 0 EOF")
                .unwrap()
                .is_none()
        );
        assert!(parse_lock_line("5: POSIX  MANDATORY WRITE 1 00:2b:9 0 EOF").is_err());
        assert!(parse_lock_line("garbage").is_err());
        let l = parse_lock_line("6: LEASE  ACTIVE    READ 5 00:2b:9 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!((l.kind, l.ltype, l.breaking), (FL_LEASE, F_RDLCK, false));
        let l = parse_lock_line("7: LEASE  BREAKING  UNLCK 5 00:2b:9 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!((l.kind, l.ltype, l.breaking), (FL_LEASE, F_UNLCK, true));
    }
}
