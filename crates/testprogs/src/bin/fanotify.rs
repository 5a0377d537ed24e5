//! `fanotify`: two fanotify groups, checked after restore.
//!
//! Set-up (`--dir D`, made if missing, with files D/marked and D/other):
//! - fd 3: FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, events opened
//!   O_RDONLY | O_LARGEFILE; an inode mark on D/marked for FAN_MODIFY |
//!   FAN_CLOSE_WRITE;
//! - fd 4: FAN_CLASS_NOTIF | FAN_CLOEXEC, then FD_CLOEXEC cleared (blocking,
//!   not close-on-exec), events opened O_RDONLY; a mount mark on D's mount
//!   for FAN_OPEN, and an inode mark on D/marked with only an ignored mask
//!   of FAN_OPEN (FAN_MARK_IGNORED_SURV_MODIFY).
//!
//! Until SIGTERM the program drains both groups. After SIGTERM:
//! - fd 3 is O_NONBLOCK and close-on-exec, fd 4 neither;
//! - the `fanotify` lines of both fdinfos (group flags; marks by mnt_id,
//!   mflags, mask and ignored mask) are as they were at set-up;
//! - opening D/other is reported on fd 4 as FAN_OPEN, by this process,
//!   with an fd on D/other; opening D/marked is not (ignored mask);
//! - writing to D/marked and closing it is reported on fd 3 as FAN_MODIFY
//!   and FAN_CLOSE_WRITE, with an fd on D/marked.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, term_requested};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const A: i32 = 3;
const B: i32 = 4;

fn check(r: libc::c_int, what: &str) -> i32 {
    if r < 0 {
        die(what);
    }
    r
}

fn dup_to(fd: i32, to: i32) {
    if fd != to {
        // SAFETY: dup3 and close take only integers.
        unsafe {
            check(libc::dup3(fd, to, libc::O_CLOEXEC), "dup3");
            libc::close(fd);
        }
    }
}

fn mark(fd: i32, flags: u32, mask: u64, p: &Path) {
    let c = cpath(p);
    // SAFETY: `c` is a NUL-terminated path living for the call.
    check(
        unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) },
        "fanotify_mark",
    );
}

/// The `fanotify` lines of an fd's fdinfo, keeping the fields that do not
/// depend on the inode (group flags; mark kind, mnt_id, mflags, masks),
/// sorted.
fn fan_lines(fd: i32) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| format!("fdinfo of {fd}: {e}"))?;
    let keep = [
        "flags",
        "event-flags",
        "mnt_id",
        "mflags",
        "mask",
        "ignored_mask",
    ];
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("fanotify "))
        .map(|l| {
            let kind = if l.starts_with("ino:") { "inode " } else { "" };
            let words: Vec<&str> = l
                .split_whitespace()
                .filter(|w| keep.iter().any(|k| w.split(':').next() == Some(*k)))
                .collect();
            format!("{kind}{}", words.join(" "))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One event: (mask, pid, (dev, ino) of its file if it had one).
type Event = (u64, i32, Option<(u64, u64)>);

/// Read the events queued on `fd` (waiting up to `ms` for the first).
fn read_events(fd: i32, ms: i32) -> Result<Vec<Event>, String> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n <= 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: reads into `buf`, which has that many bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(Vec::new());
        }
        return Err(format!("read of fanotify fd {fd}: {e}"));
    }
    let mut out = Vec::new();
    let mut off = 0usize;
    let n = n as usize;
    // struct fanotify_event_metadata: u32 event_len, u8 vers, u8 reserved,
    // u16 metadata_len, u64 mask, i32 fd, i32 pid.
    while off + 24 <= n {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let mask = u64::from_ne_bytes(buf[off + 8..off + 16].try_into().unwrap());
        let efd = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
        let pid = i32::from_ne_bytes(buf[off + 20..off + 24].try_into().unwrap());
        let mut file = None;
        if efd >= 0 {
            if let Ok(md) = std::fs::metadata(format!("/proc/self/fd/{efd}")) {
                file = Some((md.dev(), md.ino()));
            }
            // SAFETY: closes the fd the event handed us.
            unsafe { libc::close(efd) };
        }
        out.push((mask, pid, file));
        if len < 24 {
            break;
        }
        off += len;
    }
    Ok(out)
}

fn fd_flags(fd: i32) -> (i32, i32) {
    // SAFETY: fcntl F_GETFL/F_GETFD take only integers.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    }
}

fn id_of(p: &Path) -> Result<(u64, u64), String> {
    let md = std::fs::metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
    Ok((md.dev(), md.ino()))
}

fn verify(dir: &Path, before: &[Vec<String>; 2]) -> Result<(), String> {
    let (fl, fdf) = fd_flags(A);
    ensure!(
        fl & libc::O_NONBLOCK != 0 && fdf & libc::FD_CLOEXEC != 0,
        "fd {A}: status flags {fl:#o}, fd flags {fdf}: want O_NONBLOCK and FD_CLOEXEC"
    );
    let (fl, fdf) = fd_flags(B);
    ensure!(
        fl >= 0 && fl & libc::O_NONBLOCK == 0 && fdf == 0,
        "fd {B}: status flags {fl:#o}, fd flags {fdf}: want neither O_NONBLOCK nor FD_CLOEXEC"
    );
    for (i, fd) in [A, B].into_iter().enumerate() {
        let now = fan_lines(fd)?;
        ensure!(
            now == before[i],
            "fd {fd}: fdinfo says {now:?}, was {:?}",
            before[i]
        );
    }
    // Old events out of the way.
    for fd in [A, B] {
        for _ in 0..100 {
            if read_events(fd, 0)?.is_empty() {
                break;
            }
        }
    }
    let marked = dir.join("marked");
    let other = dir.join("other");
    let me = std::process::id() as i32;
    std::fs::File::open(&other).map_err(|e| format!("open {}: {e}", other.display()))?;
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&marked)
            .map_err(|e| format!("open {}: {e}", marked.display()))?;
        f.write_all(b"y")
            .map_err(|e| format!("write {}: {e}", marked.display()))?;
    }
    let (m_id, o_id) = (id_of(&marked)?, id_of(&other)?);
    let mine = |e: &Event, id| e.1 == me && e.2 == Some(id);
    let (mut modify, mut close_write, mut open_other, mut open_marked) = (0, 0, 0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3)
        && (modify == 0 || close_write == 0 || open_other == 0)
    {
        for e in read_events(A, 50)? {
            if mine(&e, m_id) && e.0 & libc::FAN_MODIFY != 0 {
                modify += 1;
            }
            if mine(&e, m_id) && e.0 & libc::FAN_CLOSE_WRITE != 0 {
                close_write += 1;
            }
            if e.2 == Some(o_id) {
                return Err(format!("fd {A} reported {e:?} on the unmarked file"));
            }
        }
        for e in read_events(B, 50)? {
            if mine(&e, o_id) && e.0 & libc::FAN_OPEN != 0 {
                open_other += 1;
            }
            if mine(&e, m_id) && e.0 & libc::FAN_OPEN != 0 {
                open_marked += 1;
            }
        }
    }
    for e in read_events(B, 100)? {
        if mine(&e, m_id) && e.0 & libc::FAN_OPEN != 0 {
            open_marked += 1;
        }
    }
    ensure!(
        modify > 0 && close_write > 0,
        "fd {A}: {modify} FAN_MODIFY and {close_write} FAN_CLOSE_WRITE events on {}",
        marked.display()
    );
    ensure!(
        open_other > 0,
        "fd {B}: no FAN_OPEN event on {} (mount mark)",
        other.display()
    );
    ensure!(
        open_marked == 0,
        "fd {B}: {open_marked} FAN_OPEN events on {} despite its ignored mask",
        marked.display()
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir: PathBuf = args
        .opt("dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| die("--dir is needed"));
    let _ = std::fs::create_dir_all(&dir);
    let marked = dir.join("marked");
    let other = dir.join("other");
    if std::fs::write(&marked, b"x").is_err() || std::fs::write(&other, b"x").is_err() {
        die("cannot make the files");
    }
    // SAFETY: fanotify_init and fcntl take only integers.
    unsafe {
        dup_to(
            check(
                libc::fanotify_init(
                    libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                    (libc::O_RDONLY | libc::O_LARGEFILE) as u32,
                ),
                "fanotify_init",
            ),
            A,
        );
        dup_to(
            check(
                libc::fanotify_init(
                    libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
                    libc::O_RDONLY as u32,
                ),
                "fanotify_init",
            ),
            B,
        );
        check(libc::fcntl(B, libc::F_SETFD, 0), "fcntl");
    }
    mark(
        A,
        libc::FAN_MARK_ADD,
        libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE,
        &marked,
    );
    mark(
        B,
        libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
        libc::FAN_OPEN,
        &dir,
    );
    mark(
        B,
        libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY,
        libc::FAN_OPEN,
        &marked,
    );
    let before = match (fan_lines(A), fan_lines(B)) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => die(&e),
    };
    if before[0].len() != 2 || before[1].len() != 3 {
        die(&format!("unexpected fdinfo: {before:?}"));
    }
    ready(&args);
    let mut failure = None;
    while !term_requested() {
        // Keep the queues short (the mount mark sees every open on it).
        for fd in [A, B] {
            if let Err(e) = read_events(fd, 0) {
                failure.get_or_insert(e);
            }
        }
        crust_testprogs::sleep_ms(50);
    }
    let verdict = match failure {
        Some(e) => Err(e),
        None => verify(&dir, &before),
    };
    finish(&args, verdict)
}
