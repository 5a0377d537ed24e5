//! The keeper: where the write tracking of a pre-dump chain lives between
//! runs (issue 15).
//!
//! A userfaultfd lasts only while some process holds it, and the tracked
//! task must not (its fd table stays as it was). The run that starts or
//! refreshes tracking (`pre-dump`) hands the descriptors to a small crust
//! process, `crust __keeper`, over a socketpair (SCM_RIGHTS), with the pid,
//! start time and tracked ranges of each task, and its guard regions when
//! the run walked them (`Tracker::guards`). The keeper binds an
//! abstract unix socket of a random name; the run writes that name and a
//! random token into `crust-keeper` in its images directory. The next run
//! given that directory as `--prev-images-dir` connects, proves it is root
//! (SO_PEERCRED) and knows the token, and takes every descriptor back; the
//! keeper then exits (one keeper per image set). Tracking of a task whose
//! pid now names another process (its start time differs) is dropped.
//!
//! The keeper also exits, dropping the tracking (the kernel lifts the
//! protection), when every tracked task is gone, after a timeout
//! (`CRUST_TRACK_TIMEOUT` seconds, 3600 by default), on SIGTERM, and on
//! `crust track-release DIR`.

use super::objtrack::{Events, ObjRange, ObjectWatch};
use super::track::Tracker;
use crate::util::sys_err;
use crate::Error;
use crust_proc::ProcRoot;
use crust_sys::unix;
use log::{debug, info, warn};
use std::io::Write;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// The file in an images directory that names its keeper.
pub const KEEPER_FILE: &str = "crust-keeper";
/// The environment variable giving the keeper's timeout in seconds.
pub const TIMEOUT_ENV: &str = "CRUST_TRACK_TIMEOUT";
const DEFAULT_TIMEOUT_S: u64 = 3600;
/// The largest message: a task's ranges (a few thousand VMAs).
const MSG_MAX: usize = 1 << 20;

/// The tracking of one task, as it travels to and from the keeper.
struct Kept {
    msg: TaskMsg,
    fd: OwnedFd,
    /// Its shared object mappings' tracking, its events read while kept.
    objects: Option<ObjectWatch>,
}

/// A task's tracking without its descriptors: the message
/// `T PID START A-B,C-D...[ G A-B,...][ O A-B@INO+OFF,...[ R A-B,...][ B]]`:
/// the guard regions, when the run walked them once the memory was
/// protected; the tracked mappings of shared objects (a second descriptor
/// rides along), the ranges `madvise` dropped and whether a fork or
/// mremap broke their tracking since the last run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskMsg {
    pid: i32,
    start: u64,
    ranges: Vec<Range<u64>>,
    guards: Option<Vec<Range<u64>>>,
    objects: Option<(Vec<ObjRange>, Events)>,
}

fn obj_ranges_text(ranges: &[ObjRange]) -> String {
    let r: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                "{:x}-{:x}@{:x}+{:x}",
                r.addr.start, r.addr.end, r.ino, r.off
            )
        })
        .collect();
    r.join(",")
}

fn obj_ranges_of(text: &str) -> Option<Vec<ObjRange>> {
    let mut out = Vec::new();
    for r in text.split(',').filter(|r| !r.is_empty()) {
        let (addr, obj) = r.split_once('@')?;
        let (ino, off) = obj.split_once('+')?;
        let addr = ranges_of(addr)?.pop()?;
        out.push(ObjRange {
            addr,
            ino: u64::from_str_radix(ino, 16).ok()?,
            off: u64::from_str_radix(off, 16).ok()?,
        });
    }
    Some(out)
}

/// The start time of process `pid` (clock ticks since boot), if it lives.
fn start_time(pid: i32) -> Option<u64> {
    crust_proc::stat(&ProcRoot::default(), pid)
        .ok()
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .map(|s| s.start_time)
}

fn ranges_text(ranges: &[Range<u64>]) -> String {
    let r: Vec<String> = ranges
        .iter()
        .map(|r| format!("{:x}-{:x}", r.start, r.end))
        .collect();
    r.join(",")
}

fn ranges_of(text: &str) -> Option<Vec<Range<u64>>> {
    let mut out = Vec::new();
    for r in text.split(',').filter(|r| !r.is_empty()) {
        let (a, b) = r.split_once('-')?;
        let (a, b) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        if a >= b {
            return None;
        }
        out.push(a..b);
    }
    Some(out)
}

/// One task's tracking (its fd rides along).
fn encode(m: &TaskMsg) -> Vec<u8> {
    let mut s = format!("T {} {} {}", m.pid, m.start, ranges_text(&m.ranges));
    if let Some(g) = &m.guards {
        s.push_str(" G ");
        s.push_str(&ranges_text(g));
    }
    if let Some((o, ev)) = &m.objects {
        s.push_str(" O ");
        s.push_str(&obj_ranges_text(o));
        if !ev.removed.is_empty() {
            s.push_str(" R ");
            s.push_str(&ranges_text(&ev.removed));
        }
        if ev.broken {
            s.push_str(" B");
        }
    }
    s.into_bytes()
}

fn decode(msg: &[u8]) -> Option<TaskMsg> {
    let s = std::str::from_utf8(msg).ok()?;
    let mut w = s.split(' ');
    if w.next()? != "T" {
        return None;
    }
    let pid = w.next()?.parse().ok()?;
    let start = w.next()?.parse().ok()?;
    let ranges = ranges_of(w.next().unwrap_or(""))?;
    let mut w = w.peekable();
    let mut guards = None;
    if w.peek() == Some(&"G") {
        w.next();
        guards = Some(ranges_of(w.next().unwrap_or(""))?);
    }
    let mut objects = None;
    if w.peek() == Some(&"O") {
        w.next();
        let o = obj_ranges_of(w.next().unwrap_or(""))?;
        let mut ev = Events::default();
        if w.peek() == Some(&"R") {
            w.next();
            ev.removed = ranges_of(w.next().unwrap_or(""))?;
        }
        if w.peek() == Some(&"B") {
            w.next();
            ev.broken = true;
        }
        objects = Some((o, ev));
    }
    if w.next().is_some() {
        return None;
    }
    Some(TaskMsg {
        pid,
        start,
        ranges,
        guards,
        objects,
    })
}

/// 16 random bytes in hex.
fn random_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The abstract socket address of a keeper named `name`.
fn addr(name: &str) -> Vec<u8> {
    let mut a = vec![0u8];
    a.extend_from_slice(format!("crust-keeper-{name}").as_bytes());
    a
}

fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let r = unix::recvmsg(fd, buf, 0)?;
    if r.full_len > r.len {
        return Err(std::io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let data = buf.get(..r.len).unwrap_or_default().to_vec();
    Ok((data, r.rights))
}

/// An object watch as it travels: its descriptor, ranges and the events
/// it read (its reader stopped: [`ObjectWatch::into_parts`]).
type Parts = (OwnedFd, Vec<ObjRange>, Events);

fn stopped(w: Option<ObjectWatch>) -> Option<Parts> {
    w.and_then(|w| w.into_parts().ok())
}

/// A task's message with its object watch's part, and its descriptors.
fn item<'a>(
    mut m: TaskMsg,
    fd: BorrowedFd<'a>,
    o: &'a Option<Parts>,
) -> (TaskMsg, Vec<BorrowedFd<'a>>) {
    m.objects = o.as_ref().map(|(_, r, e)| (r.clone(), e.clone()));
    let mut fds = vec![fd];
    fds.extend(o.as_ref().map(|(f, _, _)| f.as_fd()));
    (m, fds)
}

/// Send every tracker's descriptor and message, then `E`.
fn send_all<'a>(
    fd: BorrowedFd<'_>,
    items: impl Iterator<Item = (TaskMsg, Vec<BorrowedFd<'a>>)>,
) -> std::io::Result<()> {
    for (m, fds) in items {
        unix::send_with_fds(fd, &encode(&m), None, &fds, 0)?;
    }
    unix::send(fd, b"E", None, 0).map(drop)
}

/// Hand the trackers of a pre-dump to a new keeper and name it in
/// `dir/crust-keeper`. Nothing to keep: no keeper. The trackers' object
/// watches go to the keeper (their events are read there from now on).
pub fn start_keeper(dir: &Path, trackers: &mut [Tracker]) -> Result<(), Error> {
    if trackers.is_empty() {
        return Ok(());
    }
    // Each object watch stopped, what it noted read: (fd, ranges, events).
    let objects: Vec<Option<Parts>> = trackers
        .iter_mut()
        .map(|t| stopped(t.take_objects()))
        .collect();
    let me = crust_sys::process::getpid();
    let err = |op: &str| sys_err(me, format!("starting the tracking keeper: {op}"));
    let (ours, theirs) = unix::socketpair(libc::SOCK_SEQPACKET).map_err(err("socketpair"))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(err("finding crust's binary"))?;
    let mut child = std::process::Command::new(exe)
        .arg("__keeper")
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(err("spawning `crust __keeper`"))?;
    let (name, token) = (random_hex(), random_hex());
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT_S);
    let fd = ours.as_fd();
    let handed = (|| -> std::io::Result<()> {
        unix::setsockopt_timeval(fd, libc::SO_RCVTIMEO, 10, 0)?;
        unix::send(
            fd,
            format!("K {name} {token} {timeout}").as_bytes(),
            None,
            0,
        )?;
        send_all(
            fd,
            trackers.iter().zip(&objects).map(|(t, o)| {
                let m = TaskMsg {
                    pid: t.pid(),
                    start: start_time(t.pid()).unwrap_or(0),
                    ranges: t.tracked().to_vec(),
                    guards: t.guards().map(<[Range<u64>]>::to_vec),
                    objects: None,
                };
                item(m, t.uffd(), o)
            }),
        )?;
        let mut buf = [0u8; 16];
        match recv(fd, &mut buf)?.0.as_slice() {
            b"R" => Ok(()),
            _ => Err(std::io::Error::from_raw_os_error(libc::EPROTO)),
        }
    })();
    if let Err(e) = handed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err("handing the descriptors over")(e));
    }
    let body = format!(
        "crust-keeper 1\nsocket {name}\ntoken {token}\npid {}\n",
        child.id()
    );
    let path = dir.join(KEEPER_FILE);
    let wrote = crust_sys::private::create_private(&path, 0).and_then(|(mut f, n)| {
        f.write_all(body.as_bytes())?;
        n.commit()
    });
    // `C`: the keeper is named, it may serve. Until then a run that dies
    // (killed at any moment) takes the keeper with it: it sees the
    // socketpair close and exits, dropping the tracking.
    let committed = wrote.and_then(|()| unix::send(fd, b"C", None, 0).map(drop));
    if let Err(source) = committed {
        let _ = std::fs::remove_file(&path);
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Io {
            op: "cannot write the tracking keeper's name",
            path,
            source,
        });
    }
    info!(
        "Write tracking of {} processes kept by crust keeper {} (timeout {timeout} s)",
        trackers.len(),
        child.id()
    );
    Ok(())
}

/// What `dir/crust-keeper` says: the keeper's socket name and token.
fn read_keeper_file(dir: &Path) -> Result<(String, String), String> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(KEEPER_FILE);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| format!("{}: {e} (no keeper: tracking was not kept)", path.display()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: not a regular file of root's that only root may write",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(' ')))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
    };
    match (
        text.starts_with("crust-keeper 1\n"),
        field("socket"),
        field("token"),
    ) {
        (true, Some(s), Some(t)) => Ok((s, t)),
        _ => Err(format!("{}: not a crust keeper file", path.display())),
    }
}

/// Connect to the keeper of image set `dir` and send `what TOKEN`.
fn ask(dir: &Path, what: &str) -> Result<OwnedFd, String> {
    let (name, token) = read_keeper_file(dir)?;
    let s = unix::socket(libc::SOCK_SEQPACKET).map_err(|e| format!("socket: {e}"))?;
    unix::connect(s.as_fd(), &addr(&name))
        .map_err(|e| format!("the keeper of {} is gone ({e})", dir.display()))?;
    unix::setsockopt_timeval(s.as_fd(), libc::SO_RCVTIMEO, 10, 0)
        .and_then(|()| unix::send(s.as_fd(), format!("{what} {token}").as_bytes(), None, 0))
        .map_err(|e| format!("asking the keeper: {e}"))?;
    Ok(s)
}

/// Take the write tracking kept for image set `dir` (the keeper exits):
/// the trackers of the tasks that still live, by host pid. Why there is
/// none, as an error.
pub fn take_from(dir: &Path) -> Result<Vec<Tracker>, String> {
    let s = ask(dir, "TAKE")?;
    let mut buf = vec![0u8; MSG_MAX];
    let mut out = Vec::new();
    loop {
        let (msg, mut fds) = recv(s.as_fd(), &mut buf).map_err(|e| format!("keeper: {e}"))?;
        if msg == b"E" {
            break;
        }
        if let Some(why) = msg.strip_prefix(b"N ") {
            return Err(format!("keeper refused: {}", String::from_utf8_lossy(why)));
        }
        let Some(m) = decode(&msg) else {
            return Err("keeper: malformed message".to_string());
        };
        let want = 1 + usize::from(m.objects.is_some());
        if fds.len() != want {
            return Err("keeper: malformed message".to_string());
        }
        let objfd = (want == 2).then(|| fds.pop()).flatten();
        let Some(fd) = fds.pop() else {
            return Err("keeper: malformed message".to_string());
        };
        let pid = m.pid;
        if start_time(pid) != Some(m.start) {
            warn!("Tracking of process {pid} dropped: it is gone or its pid names another process now");
            continue;
        }
        match Tracker::from_kept(pid, fd, m.ranges) {
            Ok(mut t) => {
                if let Some(g) = m.guards {
                    t.set_guards(g);
                }
                if let (Some(ofd), Some((r, ev))) = (objfd, m.objects) {
                    match ObjectWatch::from_kept(pid, ofd, r, ev) {
                        Ok(w) => t.set_objects(w),
                        Err(e) => debug!("{pid}: object tracking dropped: {e}"),
                    }
                }
                out.push(t)
            }
            Err(e) => warn!("Tracking of process {pid} dropped: {e}"),
        }
    }
    Ok(out)
}

/// `crust track-release DIR`: the keeper of image set `dir` drops its
/// tracking and exits.
pub fn release(dir: &Path) -> Result<(), String> {
    let s = ask(dir, "RELEASE")?;
    let mut buf = [0u8; 256];
    match recv(s.as_fd(), &mut buf) {
        Ok((m, _)) if m == b"E" => Ok(()),
        Ok((m, _)) => Err(format!("keeper: {}", String::from_utf8_lossy(&m))),
        Err(e) => Err(format!("keeper: {e}")),
    }
}

/// `crust __keeper`: the keeper process itself (fd 0: the socketpair from
/// the run that started it). Returns the exit code.
pub fn keeper_main() -> i32 {
    let stdin = std::io::stdin();
    let init = stdin.as_fd();
    let mut buf = vec![0u8; MSG_MAX];
    let Ok((head, _)) = recv(init, &mut buf) else {
        return 1;
    };
    let head = String::from_utf8_lossy(&head).to_string();
    let w: Vec<&str> = head.split(' ').collect();
    let (Some(&"K"), Some(name), Some(token), Some(Ok(timeout))) = (
        w.first(),
        w.get(1),
        w.get(2),
        w.get(3).map(|t| t.parse::<u64>()),
    ) else {
        return 1;
    };
    let mut kept = Vec::new();
    loop {
        let Ok((msg, mut fds)) = recv(init, &mut buf) else {
            return 1;
        };
        if msg == b"E" {
            break;
        }
        let Some(mut msg) = decode(&msg) else {
            return 1;
        };
        let objfd = match msg.objects.is_some() {
            true if fds.len() == 2 => fds.pop(),
            false if fds.len() == 1 => None,
            _ => return 1,
        };
        let Some(fd) = fds.pop() else {
            return 1;
        };
        // The object watch's events are read here while kept.
        let objects = match (objfd, msg.objects.take()) {
            (Some(ofd), Some((r, ev))) => ObjectWatch::from_kept(msg.pid, ofd, r, ev).ok(),
            _ => None,
        };
        kept.push(Kept { msg, fd, objects });
    }
    let Ok(listener) = unix::socket(libc::SOCK_SEQPACKET) else {
        return 1;
    };
    if unix::bind(listener.as_fd(), &addr(name))
        .and_then(|()| unix::listen(listener.as_fd(), 8))
        .and_then(|()| unix::setsockopt_timeval(listener.as_fd(), libc::SO_RCVTIMEO, 1, 0))
        .is_err()
    {
        return 1;
    }
    // Out of the caller's session: its terminal's hangup is not ours.
    let _ = crust_sys::probe::setsid();
    if unix::send(init, b"R", None, 0).is_err() {
        return 1;
    }
    // Named by the run (`C`), or the run is gone (EOF): then nobody will
    // ever ask for the tracking.
    match recv(init, &mut buf) {
        Ok((m, _)) if m == b"C" => {}
        _ => return 1,
    }
    serve(&listener, token, &mut kept, Duration::from_secs(timeout));
    0
}

/// Answer the next runs until one takes the tracking, one releases it,
/// every task is gone or `timeout` passes.
fn serve(listener: &OwnedFd, token: &str, kept: &mut Vec<Kept>, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        kept.retain(|k| start_time(k.msg.pid) == Some(k.msg.start));
        if kept.is_empty() || t0.elapsed() >= timeout {
            return;
        }
        let Ok(c) = unix::accept(listener.as_fd()) else {
            continue;
        };
        let c = c.as_fd();
        let _ = unix::setsockopt_timeval(c, libc::SO_RCVTIMEO, 5, 0);
        let mut buf = [0u8; 256];
        let Ok((msg, _)) = recv(c, &mut buf) else {
            continue;
        };
        let msg = String::from_utf8_lossy(&msg).to_string();
        let root = matches!(unix::peer_cred(c), Ok((_, 0, _)));
        let (what, tok) = msg.split_once(' ').unwrap_or((&msg, ""));
        if !root || tok != token {
            let _ = unix::send(
                c,
                b"N not root, or not the token of this image set",
                None,
                0,
            );
            continue;
        }
        match what {
            "TAKE" => {
                // The object watches stop reading: their events go along.
                let objects: Vec<_> = kept.iter_mut().map(|k| stopped(k.objects.take())).collect();
                let items =
                    (kept.iter().zip(&objects)).map(|(k, o)| item(k.msg.clone(), k.fd.as_fd(), o));
                if send_all(c, items).is_ok() {
                    return;
                }
                // Not taken after all: watched here again.
                for (k, o) in kept.iter_mut().zip(objects) {
                    if let Some((f, r, e)) = o {
                        k.objects = ObjectWatch::from_kept(k.msg.pid, f, r, e).ok();
                    }
                }
            }
            "RELEASE" => {
                let _ = unix::send(c, b"E", None, 0);
                return;
            }
            _ => {
                let _ = unix::send(c, b"N unknown request", None, 0);
            }
        }
    }
}

/// Log why tracking is not used for this run.
pub fn not_kept(why: &str) {
    warn!("No write tracking from the parent image set ({why}): every page is dumped");
    debug!("(tracking is kept by `crust __keeper` between runs; see ARCHITECTURE)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let r = vec![0x1000..0x3000, 0x7f00_0000_0000..0x7f00_0010_0000];
        let msg = |pid, start, ranges: Vec<Range<u64>>, guards| TaskMsg {
            pid,
            start,
            ranges,
            guards,
            objects: None,
        };
        let obj = |r: Vec<Range<u64>>, broken| {
            let o = vec![
                ObjRange {
                    addr: 0x7000_0000..0x7000_4000,
                    ino: 0x1234,
                    off: 0,
                },
                ObjRange {
                    addr: 0x7100_0000..0x7100_2000,
                    ino: 0x1234,
                    off: 0x3000,
                },
            ];
            Some((o, Events { broken, removed: r }))
        };
        for m in [
            msg(42, 12345, r.clone(), None),
            msg(7, 1, vec![], None),
            msg(
                42,
                12345,
                r.clone(),
                Some(vec![0x2000..0x3000, 0x5000..0x6000]),
            ),
            msg(42, 12345, r.clone(), Some(vec![])),
            msg(
                7,
                1,
                vec![],
                Some(std::iter::once(0x5000..0x7000).collect()),
            ),
        ] {
            assert_eq!(decode(&encode(&m)), Some(m));
        }
        for objects in [
            obj(vec![], false),
            obj(std::iter::once(0x7000_1000..0x7000_2000).collect(), false),
            obj(vec![], true),
            obj(std::iter::once(0x7000_1000..0x7000_2000).collect(), true),
        ] {
            for guards in [None, Some(std::iter::once(0x2000..0x3000).collect())] {
                let m = TaskMsg {
                    objects: objects.clone(),
                    ..msg(42, 12345, r.clone(), guards)
                };
                assert_eq!(decode(&encode(&m)), Some(m));
            }
        }
        for bad in [
            &b"X 1 2 1000-2000"[..],
            b"T x 2 1000-2000",
            b"T 1 2 2000-1000",
            b"T 1 2 zz-2000",
            b"T 1",
            b"T 1 2 1000-2000 X 1000-2000",
            b"T 1 2 1000-2000 G 3000-2000",
            b"T 1 2 1000-2000 G 1000-2000 more",
            b"T 1 2 1000-2000 O 1000-2000",
            b"T 1 2 1000-2000 O 1000-2000@zz+0",
            b"T 1 2 1000-2000 O 1000-2000@1+0 B R 1000-2000",
            b"T 1 2 1000-2000 O 1000-2000@1+0 G 1000-2000",
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_set_without_keeper_gives_a_reason() {
        let dir = std::env::temp_dir().join(format!("crust-keeper-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let why = take_from(&dir).err().unwrap();
        assert!(why.contains("no keeper"), "{why}");
        std::fs::write(
            dir.join(KEEPER_FILE),
            "crust-keeper 1\nsocket 00\ntoken 00\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join(KEEPER_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // Named, but nobody listens there.
        let why = take_from(&dir).err().unwrap();
        assert!(why.contains("gone"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
