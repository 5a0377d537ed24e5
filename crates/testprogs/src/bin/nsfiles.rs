//! `nsfiles --dir DIR`: files and memory of a tree in pid and mount
//! namespaces of its own (zdtm's ns flavor), started as the init of a new
//! pid namespace (`unshare -p -f nsfiles ...`). It unshares CLONE_NEWNS,
//! makes every mount private, detaches all of the host's but `/` and
//! `/dev`, mounts a proc of its pid namespace and a tmpfs at `DIR/t`, then:
//! - maps `t/gone` (MAP_SHARED), closes its fd and deletes it: a ghost
//!   the restore makes and crust must give to the task, whose /proc does
//!   not show crust;
//! - holds an fd on `t/sub/f`, linked as `t/f2` too, then deletes
//!   `t/sub/f` and `t/sub` (a link remap with --link-remap, in the nearest
//!   directory left);
//! - watches `t` (IN_CREATE) and `t/watched` (IN_MODIFY) with inotify,
//!   and marks the mount `t` (FAN_OPEN) with fanotify;
//! - maps a memfd it also holds an fd on;
//! - shares a MAP_SHARED|MAP_ANONYMOUS page with a forked child (the
//!   child's mapping comes from the parent's through map_files);
//! - holds an fd on /proc/N of a child killed and reaped since (CRIU's
//!   PROCFS remap: N is a pid of its namespace, its proc is its own);
//! - holds an fd on `t/ro/gone`, a file of a read-only bind of `t/rw`,
//!   deleted through `t/rw` (a ghost the restore must make on a read-only
//!   mount).
//!
//! After SIGTERM it checks each of them still works as before.

use crust_testprogs::{cpath, die, ensure, finish, ready, sleep_ms, start, wait_for_term};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const PAGE: usize = 4096;

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
    );
    let ty = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), ty, flags, std::ptr::null()) } != 0 {
        die(&format!("mount {src} on {}", target.display()));
    }
}

/// A mount namespace of its own with only `/`, `/dev`, its proc and the
/// tmpfs `dir/t` (returned).
fn namespace(dir: &Path) -> std::path::PathBuf {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut host: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m != "/" && *m != "/dev")
        .collect();
    host.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in host {
        let c = cpath(Path::new(m));
        // SAFETY: a NUL-terminated path; one already gone is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    mount("proc", Path::new("/proc"), "proc", 0);
    let t = dir.join("t");
    let _ = fs::create_dir(&t);
    mount("crust-nsfiles", &t, "tmpfs", 0);
    t
}

/// `len` bytes shared-mapped from `fd` (or anonymous with -1).
fn map_shared(fd: i32, len: usize) -> *mut u8 {
    let anon = if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
    // SAFETY: a fresh mapping the kernel places; fd is open or -1.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | anon,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p.cast()
}

/// The words of a mapping, as atomics (the child writes one of them).
fn cells(p: *mut u8) -> &'static [AtomicU64; 4] {
    // SAFETY: p is a page-aligned mapping of at least a page that is never
    // unmapped.
    unsafe { &*(p as *const [AtomicU64; 4]) }
}

/// A child sharing the anonymous page `c`: it echoes cell 0 into cell 1,
/// + 1000, and exits when cell 0 is 999.
fn fork_echo(c: &'static [AtomicU64; 4]) -> libc::pid_t {
    // SAFETY: single-threaded; the child only loops on the shared page.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            let v = c[0].load(Ordering::SeqCst);
            if v >= 100 {
                c[1].store(v + 1000, Ordering::SeqCst);
            }
            if v == 999 {
                // SAFETY: _exit ends the child.
                unsafe { libc::_exit(0) };
            }
            sleep_ms(5);
        }
    }
    if child < 0 {
        die("fork");
    }
    child
}

/// Events read from the inotify fd: (watch, mask, name).
fn events(ifd: &OwnedFd) -> Vec<(i32, u32, String)> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    for _ in 0..100 {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(ifd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let mut off = 0usize;
            let b = &buf[..n as usize];
            while off + 16 <= b.len() {
                let word =
                    |i: usize| <[u8; 4]>::try_from(&b[off + i..off + i + 4]).unwrap_or([0; 4]);
                let wd = i32::from_ne_bytes(word(0));
                let mask = u32::from_ne_bytes(word(4));
                let len = u32::from_ne_bytes(word(12)) as usize;
                let name = b.get(off + 16..off + 16 + len).unwrap_or(&[]);
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                out.push((wd, mask, name));
                off += 16 + len;
            }
            return out;
        }
        sleep_ms(10);
    }
    out
}

struct State {
    t: std::path::PathBuf,
    gone: *mut u8,
    linked: fs::File,
    ifd: OwnedFd,
    wds: (i32, i32),
    memfd: fs::File,
    memmap: *mut u8,
    shared: &'static [AtomicU64; 4],
    child: libc::pid_t,
    dead: (libc::pid_t, fs::File),
    fan: OwnedFd,
    ro_gone: fs::File,
}

/// A fanotify group with a mount mark (FAN_OPEN) on the mount `t`.
fn fan_mount(t: &Path) -> OwnedFd {
    // SAFETY: fanotify_init takes integers; returns a new fd or -1.
    let raw = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC,
            libc::O_RDONLY as u32,
        )
    };
    if raw < 0 {
        die("fanotify_init");
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let c = cpath(t);
    let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT;
    // SAFETY: a valid fanotify fd and a NUL-terminated path.
    if unsafe { libc::fanotify_mark(raw, flags, libc::FAN_OPEN, libc::AT_FDCWD, c.as_ptr()) } != 0 {
        die("fanotify_mark");
    }
    fd
}

/// Has the fanotify group seen an open (FAN_OPEN)? Event fds are closed.
fn fan_saw_open(fan: &OwnedFd) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let mut seen = false;
            let mut off = 0usize;
            let b = &buf[..n as usize];
            // struct fanotify_event_metadata: u32 len, u8 vers, u8 reserved,
            // u16 metadata_len, u64 mask, i32 fd, i32 pid.
            while off + 24 <= b.len() {
                let u4 = |i: usize| <[u8; 4]>::try_from(&b[off + i..off + i + 4]).unwrap_or([0; 4]);
                let len = u32::from_ne_bytes(u4(0));
                let mask = u64::from_ne_bytes(
                    <[u8; 8]>::try_from(&b[off + 8..off + 16]).unwrap_or([0; 8]),
                );
                let fd = i32::from_ne_bytes(u4(16));
                if fd >= 0 {
                    // SAFETY: the event's fd is ours to close.
                    unsafe { libc::close(fd) };
                }
                seen |= mask & libc::FAN_OPEN != 0;
                if len < 24 {
                    break;
                }
                off += len as usize;
            }
            return seen;
        }
        sleep_ms(10);
    }
    false
}

/// An fd on /proc/N of a child that is gone: (N, the fd).
fn dead_proc() -> (libc::pid_t, fs::File) {
    // SAFETY: single-threaded; the child only pauses until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause takes nothing.
            unsafe { libc::pause() };
        }
    }
    if child < 0 {
        die("fork");
    }
    let f = fs::File::open(format!("/proc/{child}")).unwrap_or_else(|_| die("open /proc/N"));
    let mut st = 0;
    // SAFETY: kill and waitpid of our own child, with a valid out-pointer.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, &mut st, 0);
    }
    (child, f)
}

/// `t/rw` bound read-only at `t/ro`; `t/ro/gone` opened, then deleted
/// through `t/rw`.
fn ro_ghost(t: &Path) -> fs::File {
    for d in ["rw", "ro"] {
        fs::create_dir(t.join(d)).unwrap_or_else(|_| die("mkdir t/rw, t/ro"));
    }
    fs::write(t.join("rw/gone"), "on a read-only mount").unwrap_or_else(|_| die("write t/rw/gone"));
    mount(
        &t.join("rw").to_string_lossy(),
        &t.join("ro"),
        "",
        libc::MS_BIND,
    );
    mount(
        "none",
        &t.join("ro"),
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
    );
    let f = fs::File::open(t.join("ro/gone")).unwrap_or_else(|_| die("open t/ro/gone"));
    fs::remove_file(t.join("rw/gone")).unwrap_or_else(|_| die("unlink t/rw/gone"));
    f
}

fn set_up(dir: &Path) -> State {
    let t = namespace(dir);
    // A deleted file, mapped.
    fs::write(t.join("gone"), vec![b'g'; 2 * PAGE]).unwrap_or_else(|_| die("write t/gone"));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.join("gone"))
        .unwrap_or_else(|_| die("open t/gone"));
    let gone = map_shared(f.as_raw_fd(), 2 * PAGE);
    drop(f);
    fs::remove_file(t.join("gone")).unwrap_or_else(|_| die("unlink t/gone"));
    // A deleted file with another link, in a deleted directory.
    fs::create_dir(t.join("sub")).unwrap_or_else(|_| die("mkdir t/sub"));
    fs::write(t.join("sub/f"), "still linked").unwrap_or_else(|_| die("write t/sub/f"));
    fs::hard_link(t.join("sub/f"), t.join("f2")).unwrap_or_else(|_| die("link t/f2"));
    let linked = fs::File::open(t.join("sub/f")).unwrap_or_else(|_| die("open t/sub/f"));
    fs::remove_file(t.join("sub/f")).unwrap_or_else(|_| die("unlink t/sub/f"));
    fs::remove_dir(t.join("sub")).unwrap_or_else(|_| die("rmdir t/sub"));
    // inotify watches on paths of the tmpfs.
    fs::write(t.join("watched"), "w").unwrap_or_else(|_| die("write t/watched"));
    // SAFETY: inotify_init1 returns a new fd or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        die("inotify_init1");
    }
    // SAFETY: a new fd nothing else owns.
    let ifd = unsafe { OwnedFd::from_raw_fd(raw) };
    let watch = |p: &Path, mask: u32| {
        let c = cpath(p);
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(raw, c.as_ptr(), mask) };
        if wd < 0 {
            die("inotify_add_watch");
        }
        wd
    };
    let wds = (
        watch(&t, libc::IN_CREATE),
        watch(&t.join("watched"), libc::IN_MODIFY),
    );
    // A memfd, mapped and held.
    let name = cpath(Path::new("nsfiles"));
    // SAFETY: a NUL-terminated name; returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        die("memfd_create");
    }
    // SAFETY: a new fd nothing else owns.
    let mut memfd = unsafe { fs::File::from_raw_fd(raw) };
    memfd
        .write_all(&[b'm'; PAGE])
        .unwrap_or_else(|_| die("write memfd"));
    let memmap = map_shared(raw, PAGE);
    // Anonymous shared memory with a child.
    let shared = cells(map_shared(-1, PAGE));
    shared[0].store(1, Ordering::SeqCst);
    let dead = dead_proc();
    let fan = fan_mount(&t);
    let ro_gone = ro_ghost(&t);
    let child = fork_echo(shared);
    State {
        ro_gone,
        fan,
        dead,
        t,
        gone,
        linked,
        ifd,
        wds,
        memfd,
        memmap,
        shared,
        child,
    }
}

fn check(s: &mut State) -> Result<(), String> {
    // SAFETY: both mappings live for the whole program.
    let (gone, memmap) = unsafe {
        (
            std::slice::from_raw_parts(s.gone, 2 * PAGE),
            std::slice::from_raw_parts_mut(s.memmap, PAGE),
        )
    };
    ensure!(
        gone.iter().all(|&b| b == b'g'),
        "the mapped deleted t/gone changed"
    );
    let mut text = String::new();
    s.linked
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("seek: {e}"))?;
    s.linked
        .read_to_string(&mut text)
        .map_err(|e| format!("read t/sub/f: {e}"))?;
    ensure!(
        text == "still linked",
        "the fd on the deleted t/sub/f reads {text:?}"
    );
    fs::write(s.t.join("watched"), "again").map_err(|e| format!("write t/watched: {e}"))?;
    fs::write(s.t.join("new"), "n").map_err(|e| format!("write t/new: {e}"))?;
    let ev = events(&s.ifd);
    ensure!(
        ev.iter()
            .any(|e| e.0 == s.wds.1 && e.1 & libc::IN_MODIFY != 0),
        "no IN_MODIFY of t/watched on watch {}: {ev:?}",
        s.wds.1
    );
    ensure!(
        ev.iter()
            .any(|e| e.0 == s.wds.0 && e.1 & libc::IN_CREATE != 0 && e.2 == "new"),
        "no IN_CREATE of t/new on watch {}: {ev:?}",
        s.wds.0
    );
    fs::read(s.t.join("watched")).map_err(|e| format!("read t/watched: {e}"))?;
    ensure!(
        fan_saw_open(&s.fan),
        "the fanotify mark on the mount t saw no open"
    );
    ensure!(
        memmap.iter().all(|&b| b == b'm'),
        "the memfd mapping changed"
    );
    s.memfd
        .write_all_at(b"Z", 0)
        .map_err(|e| format!("write the memfd: {e}"))?;
    ensure!(
        memmap[0] == b'Z',
        "a write to the memfd is not seen in its mapping"
    );
    s.shared[0].store(123, Ordering::SeqCst);
    let mut seen = 0;
    for _ in 0..400 {
        seen = s.shared[1].load(Ordering::SeqCst);
        if seen == 1123 {
            break;
        }
        sleep_ms(5);
    }
    ensure!(
        seen == 1123,
        "the child does not share the anonymous page (cell 1 is {seen})"
    );
    s.shared[0].store(999, Ordering::SeqCst);
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    unsafe { libc::waitpid(s.child, &mut st, 0) };
    ensure!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child status {st:#x}"
    );
    let mut text = String::new();
    s.ro_gone
        .read_to_string(&mut text)
        .map_err(|e| format!("read the deleted file of the read-only mount: {e}"))?;
    ensure!(
        text == "on a read-only mount",
        "the deleted file of the read-only mount holds {text:?}"
    );
    let ro = fs::read_link(format!("/proc/self/fd/{}", s.ro_gone.as_raw_fd()))
        .map_err(|e| format!("readlink of the fd on t/ro/gone: {e}"))?;
    ensure!(
        ro.to_string_lossy() == format!("{}/ro/gone (deleted)", s.t.display()),
        "the fd on t/ro/gone is on {}",
        ro.display()
    );
    let link = fs::read_link(format!("/proc/self/fd/{}", s.dead.1.as_raw_fd()))
        .map_err(|e| format!("readlink of the fd on /proc/N: {e}"))?;
    let want = format!("/proc/{}", s.dead.0);
    let link = link.to_string_lossy();
    ensure!(
        link == want || link.starts_with(&format!("{want} ")),
        "the fd on /proc/{} of the dead child is on {}",
        s.dead.0,
        link
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let mut state = set_up(&dir);
    ready(&args);
    wait_for_term(10, || {});
    let verdict = check(&mut state);
    finish(&args, verdict)
}
