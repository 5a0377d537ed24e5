//! `mntnssub --dir DIR`: a tree with two mount namespaces. The program
//! unshares CLONE_NEWNS, makes every mount private and detaches every mount
//! of the host's but `/` and `/dev` (the external one), mounts a proc, then
//! forks a child
//! that unshares CLONE_NEWNS again and, in its own namespace only, mounts a
//! tmpfs at `DIR/sub` holding a file, keeps an fd open on it and its cwd in
//! it. After SIGTERM the parent tells the child (a pipe) to check: the fd
//! reads the file, the cwd is `DIR/sub`, the tmpfs is a mount of its
//! namespace, which is not its parent's; the child exits 0 if so. The
//! parent checks that it does not see the tmpfs and that the child passed.
//! With `--deleted 1` the parent also binds a directory at `DIR/ddst` and
//! removes the directory (a mount with a deleted root), and checks that it
//! is so again.
//! The child has two sleeping children: one left in the root's mount
//! namespace, one in a namespace of its own made before the tmpfs; it
//! checks that neither sees the tmpfs.
//! With `--shared 1` the parent's root mount is shared, and checked so.
//! With `--lent 1` the parent mounts a tmpfs at `DIR/l` holding `x/file`;
//! the child binds `DIR/l/x` at `DIR/lx` in its namespace and unmounts
//! `DIR/l` there (a bind of a part of a mount only the root's namespace
//! has); both check they see it so again. The parent also holds an fd
//! on `DIR/l/x/gh` (the child inherits it) and the child one on
//! `DIR/lx/gh` (its own mount), then the parent removes the file: after
//! the restore the child finds both fds on the one deleted file, each on
//! its own mount (zdtm mntns_link_ghost); the same with `DIR/l/x/lk`,
//! which keeps a link `DIR/l/lk2` (dumped with `--link-remap`: zdtm
//! mntns_link_remap), found with one link. With `--lent 2` the parent
//! then unmounts `DIR/l` too (the tmpfs is left only as the child's part
//! of it: crust refuses to dump that) and checks it does not see it.
//! With `--pivot 1` the child also pivots its namespace into the tmpfs,
//! keeping the old root at `old` (a mount of the root's namespace in a
//! pivoted one: crust refuses to dump it), and only waits.
//! With `--inotify 1` the parent (in the root's namespace) creates and
//! holds open `ino` on the child's tmpfs, through the child's cwd, and
//! watches that file and the tmpfs's root with inotify (zdtm inotify01's
//! layout); after the restore it checks the file is on the tmpfs and that
//! closing it is seen by both watches, by their numbers (1 and 2).

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
    );
    let ft = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), ft, flags, std::ptr::null()) } != 0 {
        die(&format!("mount {src} on {} ({fstype})", target.display()));
    }
}

fn unshare_mnt() {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    mount(
        "none",
        Path::new("/"),
        "",
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
    );
}

/// Detach every mount but `/` and `/dev`, deepest first.
fn leave_host_mounts() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/" && m != "/dev")
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let c = cpath(Path::new(&m));
        // SAFETY: a NUL-terminated path; failure (already gone) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `--deleted 1`: `DIR/ddst` a bind of the directory `DIR/dsrc`, removed
/// since (a mount whose root is deleted).
fn bind_deleted(dir: &Path) {
    let (src, dst) = (dir.join("dsrc"), dir.join("ddst"));
    fs::create_dir(&src).unwrap_or_else(|_| die("mkdir dsrc"));
    fs::create_dir(&dst).unwrap_or_else(|_| die("mkdir ddst"));
    mount(&src.to_string_lossy(), &dst, "", libc::MS_BIND);
    fs::remove_dir(&src).unwrap_or_else(|_| die("rmdir dsrc"));
}

/// After `bind_deleted`: `DIR/ddst` is still a mount whose root is deleted,
/// and `DIR/dsrc` is gone.
fn deleted_ok(dir: &Path) -> Result<(), String> {
    let dst = dir.join("ddst");
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    let dst_s = dst.to_string_lossy();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*dst_s))
        .ok_or("ddst is not a mount")?;
    let root = line.split(' ').nth(3).unwrap_or("");
    ensure!(
        root.ends_with("//deleted"),
        "the root of ddst is {root}, not deleted"
    );
    ensure!(!dir.join("dsrc").exists(), "dsrc exists again");
    Ok(())
}

fn mnt_ns_ino(pid: &str) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/mnt")).map_or(0, |m| m.ino())
}

/// Whether `p` is a mountpoint in this process's namespace.
fn is_mountpoint(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// `--lent 1`, in the parent: a tmpfs at `DIR/l` holding `x/file`.
fn lend_tmpfs(dir: &Path) {
    let l = dir.join("l");
    let _ = fs::create_dir(&l);
    let _ = fs::create_dir(dir.join("lx"));
    mount("crust-lent", &l, "tmpfs", 0);
    fs::create_dir(l.join("x")).unwrap_or_else(|_| die("mkdir l/x"));
    fs::write(l.join("x/file"), "lent").unwrap_or_else(|_| die("write l/x/file"));
    fs::write(l.join("x/gh"), "ghost data").unwrap_or_else(|_| die("write l/x/gh"));
    fs::write(l.join("x/lk"), "ghost data").unwrap_or_else(|_| die("write l/x/lk"));
    fs::hard_link(l.join("x/lk"), l.join("lk2")).unwrap_or_else(|_| die("link l/x/lk"));
}

/// The mount id of an fd (fdinfo).
fn mnt_id_of(fd: &fs::File) -> Result<u32, String> {
    use std::os::fd::AsRawFd;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|e| format!("fdinfo: {e}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no mnt_id in fdinfo".to_string())
}

/// `--lent 1`, in the child after the restore: `root_fd` (opened by the
/// parent through `DIR/l`) and `own_fd` (through `DIR/lx`) are on the one
/// deleted file, each on its own mount.
fn ghost_ok(
    dir: &Path,
    root_fd: &mut fs::File,
    own_fd: &mut fs::File,
    links: u64,
) -> Result<(), String> {
    let (a, b) = (
        root_fd.metadata().map_err(|e| format!("fstat: {e}"))?,
        own_fd.metadata().map_err(|e| format!("fstat: {e}"))?,
    );
    ensure!(
        a.ino() == b.ino() && a.dev() == b.dev(),
        "the two fds on gh are on two files"
    );
    ensure!(
        b.nlink() == links,
        "gh/lk has {} links, not {links}",
        b.nlink()
    );
    let mut s = String::new();
    own_fd.rewind().map_err(|e| format!("rewind: {e}"))?;
    own_fd
        .read_to_string(&mut s)
        .map_err(|e| format!("read: {e}"))?;
    ensure!(s == "ghost data", "gh reads {s:?}");
    let lx = fs::File::open(dir.join("lx")).map_err(|e| format!("open lx: {e}"))?;
    let (r, o, m) = (mnt_id_of(root_fd)?, mnt_id_of(own_fd)?, mnt_id_of(&lx)?);
    ensure!(o == m, "the fd through lx is on mount {o}, not lx's {m}");
    ensure!(r != o, "both fds on gh are on mount {o}");
    Ok(())
}

/// `--lent 1`, in the child's namespace: `DIR/lx` a bind of `DIR/l/x`,
/// `DIR/l` unmounted.
fn borrow_part(dir: &Path) {
    let (l, lx) = (dir.join("l"), dir.join("lx"));
    mount(&l.join("x").to_string_lossy(), &lx, "", libc::MS_BIND);
    let c = cpath(&l);
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        die("umount l");
    }
}

/// After `lend_tmpfs` (`mine`: in the child's namespace, after
/// `borrow_part` too): who sees what.
fn lent_ok(dir: &Path, mine: bool) -> Result<(), String> {
    let (l, lx) = (dir.join("l"), dir.join("lx"));
    let (file, there) = if mine {
        (lx.join("file"), &lx)
    } else {
        (l.join("x/file"), &l)
    };
    let got = fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
    ensure!(got == "lent", "{} reads {got:?}", file.display());
    ensure!(is_mountpoint(there), "{} is not a mount", there.display());
    let other = if mine { &l } else { &lx };
    ensure!(!is_mountpoint(other), "{} is a mount", other.display());
    Ok(())
}

/// The child's check, after the restore.
fn child_check(sub: &Path, fd: &mut fs::File, parent_ns: u64) -> Result<(), String> {
    let mut s = String::new();
    fd.rewind().map_err(|e| format!("rewind: {e}"))?;
    fd.read_to_string(&mut s)
        .map_err(|e| format!("read: {e}"))?;
    ensure!(s == "in the child's tmpfs", "the fd reads {s:?}");
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    ensure!(cwd == sub, "cwd is {}", cwd.display());
    ensure!(
        is_mountpoint(sub),
        "{} is not a mount of its namespace",
        sub.display()
    );
    ensure!(
        mnt_ns_ino("self") != parent_ns,
        "it shares its parent's mount namespace"
    );
    Ok(())
}

/// A grandchild that sleeps until killed; `own`: in a mount namespace of
/// its own (unshared at once).
fn sleeper(own: bool) -> libc::pid_t {
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the two ints.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    // SAFETY: the child only unshares, says so and sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl, unshare, write and close take integers and a
        // live buffer.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if own && libc::unshare(libc::CLONE_NEWNS) != 0 {
                libc::_exit(2);
            }
            libc::write(p[1], b"s".as_ptr().cast(), 1);
            libc::close(p[1]);
            libc::close(p[0]);
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    if pid < 0 {
        die("fork");
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer; closing our ends.
    unsafe {
        libc::close(p[1]);
        if libc::read(p[0], b.as_mut_ptr().cast(), 1) != 1 {
            die("the grandchild did not start");
        }
        libc::close(p[0]);
    }
    pid
}

/// The grandchildren do not see the child's tmpfs; one is in the root's
/// namespace (`root_ns`), the other in one of its own.
fn grandchildren_check(sub: &Path, root_ns: u64, in_root: i32, in_copy: i32) -> Result<(), String> {
    let sub_s = sub.to_string_lossy();
    for g in [in_root, in_copy] {
        let info = fs::read_to_string(format!("/proc/{g}/mountinfo"))
            .map_err(|e| format!("mountinfo of {g}: {e}"))?;
        ensure!(
            !info.lines().any(|l| l.split(' ').nth(4) == Some(&*sub_s)),
            "grandchild {g} sees the child's tmpfs"
        );
    }
    let (a, b) = (
        mnt_ns_ino(&in_root.to_string()),
        mnt_ns_ino(&in_copy.to_string()),
    );
    ensure!(
        a == root_ns,
        "the grandchild {in_root} is not in the root's namespace"
    );
    ensure!(
        b != root_ns && b != mnt_ns_ino("self"),
        "the grandchild {in_copy} shares a namespace"
    );
    Ok(())
}

/// The child: its own namespace with a tmpfs at `sub`; says it is ready on
/// `ready_w`, waits for a byte on `go`, then checks and exits.
type Held = Option<(fs::File, fs::File)>;

fn child(sub: &Path, go: i32, ready_w: i32, pivot: bool, lent: (bool, Held)) -> ! {
    // A grandchild left in the root's namespace, and one in a namespace
    // of its own made before the tmpfs (a copy of the root's).
    let in_root = sleeper(false);
    unshare_mnt();
    let in_copy = sleeper(true);
    mount("crust-sub", sub, "tmpfs", 0);
    fs::write(sub.join("f"), "in the child's tmpfs").unwrap_or_else(|_| die("write sub/f"));
    let mut fd = fs::File::open(sub.join("f")).unwrap_or_else(|_| die("open sub/f"));
    let dir = sub.parent().unwrap_or(Path::new("/")).to_path_buf();
    if lent.0 {
        borrow_part(&dir);
    }
    let mut ghost = lent.1.map(|(root_gh, root_lk)| {
        let own = fs::File::open(dir.join("lx/gh")).unwrap_or_else(|_| die("open lx/gh"));
        let own_lk = fs::File::open(dir.join("lx/lk")).unwrap_or_else(|_| die("open lx/lk"));
        (root_gh, own, root_lk, own_lk)
    });
    std::env::set_current_dir(sub).unwrap_or_else(|_| die("chdir sub"));
    if pivot {
        fs::create_dir(sub.join("old")).unwrap_or_else(|_| die("mkdir sub/old"));
        let (n, o) = (cpath(sub), cpath(&sub.join("old")));
        // SAFETY: NUL-terminated paths that outlive the call.
        if unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } != 0 {
            die("pivot_root");
        }
    }
    // SAFETY: writing one byte from a live buffer; closing our end.
    unsafe {
        libc::write(ready_w, b"r".as_ptr().cast(), 1);
        libc::close(ready_w);
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer.
    let n = unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) };
    if n != 1 || pivot {
        std::process::exit(3);
    }
    // Namespace inodes are numbered anew by the restore: the parent's
    // namespace as it is now.
    let parent_ns = mnt_ns_ino(&std::os::unix::process::parent_id().to_string());
    let verdict = child_check(sub, &mut fd, parent_ns)
        .and_then(|()| grandchildren_check(sub, parent_ns, in_root, in_copy))
        .and_then(|()| match &mut ghost {
            Some((r, o, rl, ol)) => lent_ok(&dir, true)
                .and_then(|()| ghost_ok(&dir, r, o, 0))
                .and_then(|()| ghost_ok(&dir, rl, ol, 1)),
            None => Ok(()),
        });
    // SAFETY: kill and reap our own children.
    unsafe {
        for g in [in_root, in_copy] {
            libc::kill(g, libc::SIGKILL);
            libc::waitpid(g, std::ptr::null_mut(), 0);
        }
    }
    match verdict {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let _ = std::io::stderr().write_all(e.as_bytes());
            // Where the test finds why.
            let _ = fs::write(dir.join("child.err"), e.as_bytes());
            std::process::exit(1)
        }
    }
}

/// `--inotify 1`: a file of the parent's on the child's tmpfs, and an
/// inotify fd watching it and the tmpfs's root.
fn watch_child_tmpfs(child: libc::pid_t) -> (fs::File, i32) {
    let dir = std::path::PathBuf::from(format!("/proc/{child}/cwd"));
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("ino"))
        .unwrap_or_else(|_| die("create ino on the child's tmpfs"));
    // SAFETY: inotify_init1 takes flags.
    let ifd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if ifd < 0 {
        die("inotify_init1");
    }
    let mask = libc::IN_DELETE | libc::IN_CLOSE_WRITE | libc::IN_DELETE_SELF | libc::IN_CREATE;
    for p in [dir.clone(), dir.join("ino")] {
        let c = cpath(&p);
        // SAFETY: a live inotify fd and a NUL-terminated path that
        // outlives the call.
        if unsafe { libc::inotify_add_watch(ifd, c.as_ptr(), mask) } < 0 {
            die(&format!("inotify_add_watch {}", p.display()));
        }
    }
    (f, ifd)
}

/// After the restore: the file is not on the parent's `sub` (a plain
/// directory in its namespace), and closing it gives IN_CLOSE_WRITE on
/// watches 1 (the tmpfs's root) and 2 (the file).
fn inotify_ok(held: (fs::File, i32), sub: &Path) -> Result<(), String> {
    let (f, ifd) = held;
    let dev = f.metadata().map_err(|e| format!("fstat ino: {e}"))?.dev();
    let here = fs::metadata(sub)
        .map_err(|e| format!("stat sub: {e}"))?
        .dev();
    ensure!(dev != here, "ino is not on the child's tmpfs");
    drop(f);
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a live buffer of that size.
    let n = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
    ensure!(n > 0, "no inotify event after closing ino");
    let mut wds = Vec::new();
    let mut off = 0usize;
    let word = |o: usize| -> Option<u32> {
        let b = buf.get(o..o + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    while off < n as usize {
        let (Some(wd), Some(mask), Some(len)) = (word(off), word(off + 4), word(off + 12)) else {
            break;
        };
        if mask & libc::IN_CLOSE_WRITE != 0 {
            wds.push(wd);
        }
        off += 16 + len as usize;
    }
    wds.sort_unstable();
    ensure!(wds == [1, 2], "IN_CLOSE_WRITE seen by watches {wds:?}");
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let pivot = args.num("pivot", 0) == 1;
    unshare_mnt();
    leave_host_mounts();
    mount("proc", Path::new("/proc"), "proc", 0);
    let shared = args.num("shared", 0) == 1;
    if shared {
        mount("none", Path::new("/"), "", libc::MS_SHARED);
    }
    let deleted = args.num("deleted", 0) == 1;
    if deleted {
        bind_deleted(&dir);
    }
    let lent_mode = args.num("lent", 0);
    let lent = lent_mode > 0;
    if lent {
        lend_tmpfs(&dir);
    }
    let sub = dir.join("sub");
    let _ = fs::create_dir(&sub);
    let mut go = [0i32; 2];
    // SAFETY: pipe fills the two ints.
    if unsafe { libc::pipe(go.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    let (ready_r, ready_w) = {
        let mut p = [0i32; 2];
        // SAFETY: pipe fills the two ints.
        if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
            die("pipe");
        }
        (p[0], p[1])
    };
    // SAFETY: the child runs `child` and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl takes integers; close our copy of the read end.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(go[1]);
            libc::close(ready_r);
        }
        let root_fd = (lent_mode == 1).then(|| {
            let open = |n: &str| fs::File::open(dir.join(n)).unwrap_or_else(|_| die(n));
            (open("l/x/gh"), open("l/x/lk"))
        });
        child(&sub, go[0], ready_w, pivot, (lent, root_fd));
    }
    if pid < 0 {
        die("fork");
    }
    // SAFETY: closing our copies of the ends the child uses.
    unsafe {
        libc::close(go[0]);
        libc::close(ready_w);
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer.
    if unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), 1) } != 1 {
        die("the child did not get ready");
    }
    let mut inotify = (args.num("inotify", 0) == 1).then(|| watch_child_tmpfs(pid));
    if lent_mode == 1 {
        fs::remove_file(dir.join("l/x/gh")).unwrap_or_else(|_| die("remove l/x/gh"));
        fs::remove_file(dir.join("l/x/lk")).unwrap_or_else(|_| die("remove l/x/lk"));
    }
    if lent_mode == 2 {
        let c = cpath(&dir.join("l"));
        // SAFETY: a NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            die("umount l");
        }
    }
    ready(&args);
    wait_for_term(10, || {});
    let verdict = (|| {
        ensure!(!sub.join("f").exists(), "the parent sees the child's tmpfs");
        if deleted {
            deleted_ok(&dir)?;
        }
        if let Some(w) = inotify.take() {
            inotify_ok(w, &sub)?;
        }
        if lent_mode == 1 {
            lent_ok(&dir, false)?;
        }
        if lent_mode == 2 {
            ensure!(!is_mountpoint(&dir.join("l")), "l is a mount again");
        }
        if shared {
            let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let root = info.lines().find(|l| l.split(' ').nth(4) == Some("/"));
            ensure!(
                root.is_some_and(|l| l.contains(" shared:")),
                "/ is not shared: {root:?}"
            );
        }
        // SAFETY: writing one byte from a live buffer.
        let wrote = unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
        ensure!(wrote == 1, "write to the child");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        ensure!(waited == pid, "waitpid");
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's check failed (status {status:#x})"
        );
        Ok(())
    })();
    finish(&args, verdict);
}
