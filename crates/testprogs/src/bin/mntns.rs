//! `mntns --dir DIR`: a tree in a mount namespace of its own. The program
//! unshares CLONE_NEWNS, makes every mount private, detaches every mount
//! of the host's but `/` and `/dev` (so that `/dev` is the one external
//! mount the test names), then builds under DIR (an empty directory):
//! - `DIR/t`: a tmpfs (mode 1770) holding a file, a directory with a
//!   file, a symbolic link and a second hard link;
//! - `DIR/b`: a bind mount of `DIR/t/sub`;
//! - `DIR/ro`: a tmpfs with a file, then made read-only (bind remount);
//! - `DIR/s`: a shared tmpfs, `DIR/p`: a private one (nosuid,nodev);
//! - `/proc`: a proc of its own;
//!
//! and keeps an fd open on `DIR/t/hello` and its cwd in `DIR/t/sub`.
//! With `--many N` it also mounts N small tmpfs at `DIR/m/0..N-1`, each
//! holding a file named after its number (bench/mounts.sh).
//! With `--unshare 0` it stays in the mount namespace it was started in
//! (`unshare -m mntns ...`: its binary is then on a mount of that
//! namespace, as CRIU's dump wants).
//! With `--child 1` a forked child holds the fd on `DIR/t/hello` too, and a
//! FIFO `DIR/p/fifo` is open read-write with bytes queued. With `--over 1`
//! a tmpfs is mounted over `DIR/t/over`, which holds a file.
//! With `--procfd 1` it holds an fd on its own /proc/PID/status, which must
//! still be that file of its own proc after restore.
//! With `--cgroup NAME` it mounts the named cgroup v1 hierarchy NAME (one
//! the test made) at `DIR/cg`, which must be a cgroup mount of it after.
//! After SIGTERM it checks all of it.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::fs;
use std::io::{Read, Seek};
use std::path::Path;

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) {
    let (s, t, f, d) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
        cpath(Path::new(data)),
    );
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                f.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        die(&format!("mount {src} on {} ({fstype})", target.display()));
    }
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

fn build(dir: &Path, unshare: bool) {
    let rec_private = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
    // SAFETY: unshare takes flags.
    if unshare && unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    mount("none", Path::new("/"), "", rec_private, "");
    leave_host_mounts();
    mount("proc", Path::new("/proc"), "proc", 0, "");
    for d in ["t", "b", "ro", "s", "p"] {
        let _ = fs::create_dir(dir.join(d));
    }
    let t = dir.join("t");
    mount("crust-t", &t, "tmpfs", 0, "mode=1770,size=4m");
    fs::create_dir(t.join("sub")).unwrap_or_else(|_| die("mkdir t/sub"));
    fs::write(t.join("hello"), "hello tmpfs").unwrap_or_else(|_| die("write t/hello"));
    fs::write(t.join("sub/inner"), "inner file").unwrap_or_else(|_| die("write t/sub/inner"));
    std::os::unix::fs::symlink("hello", t.join("link")).unwrap_or_else(|_| die("symlink"));
    fs::hard_link(t.join("hello"), t.join("hard")).unwrap_or_else(|_| die("link"));
    mount(
        &t.join("sub").to_string_lossy(),
        &dir.join("b"),
        "",
        libc::MS_BIND,
        "",
    );
    let ro = dir.join("ro");
    mount("crust-ro", &ro, "tmpfs", 0, "");
    fs::write(ro.join("kept"), "read only").unwrap_or_else(|_| die("write ro/kept"));
    mount(
        "none",
        &ro,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    );
    mount("crust-s", &dir.join("s"), "tmpfs", 0, "");
    mount("none", &dir.join("s"), "", libc::MS_SHARED, "");
    mount(
        "crust-p",
        &dir.join("p"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "",
    );
}

/// `--many N`: N tmpfs at DIR/m/I, each holding the file I.
fn build_many(dir: &Path, n: u64) {
    if n == 0 {
        return;
    }
    let m = dir.join("m");
    fs::create_dir_all(&m).unwrap_or_else(|_| die("mkdir m"));
    for i in 0..n {
        let d = m.join(i.to_string());
        fs::create_dir(&d).unwrap_or_else(|_| die("mkdir m/I"));
        mount("crust-m", &d, "tmpfs", 0, "size=64k");
        fs::write(d.join(i.to_string()), i.to_string()).unwrap_or_else(|_| die("write m/I/I"));
    }
}

fn check_many(dir: &Path, n: u64) -> Result<(), String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    let under = format!("{}/", dir.join("m").display());
    let count = info
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp.starts_with(&under)))
        .count() as u64;
    ensure!(count == n, "{count} mounts under {under}, not {n}");
    for i in 0..n {
        let f = dir.join("m").join(i.to_string()).join(i.to_string());
        let got = fs::read_to_string(&f).map_err(|e| format!("read {}: {e}", f.display()))?;
        ensure!(got == i.to_string(), "{} holds {got:?}", f.display());
    }
    Ok(())
}

fn mountinfo_line(mp: &Path) -> Result<String, String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    let mp = mp.to_string_lossy();
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&*mp))
        .map(String::from)
        .ok_or_else(|| format!("no mount at {mp}: {info}"))
}

fn check(dir: &Path, fd: &mut fs::File) -> Result<(), String> {
    let t = dir.join("t");
    let rd = |p: &Path| fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()));
    ensure!(rd(&t.join("hello"))? == "hello tmpfs", "t/hello changed");
    ensure!(
        rd(&t.join("sub/inner"))? == "inner file",
        "t/sub/inner changed"
    );
    ensure!(
        rd(&t.join("link"))? == "hello tmpfs",
        "t/link does not lead to hello"
    );
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (fs::metadata(t.join("hello")), fs::metadata(t.join("hard")));
    ensure!(
        matches!((&a, &b), (Ok(a), Ok(b)) if a.ino() == b.ino()),
        "t/hard is no longer a link of t/hello"
    );
    let tl = mountinfo_line(&t)?;
    ensure!(tl.contains(" - tmpfs crust-t "), "t is not the tmpfs: {tl}");
    ensure!(
        fs::metadata(&t).map(|m| m.mode() & 0o7777).ok() == Some(0o1770),
        "t lost its mode 1770"
    );
    ensure!(
        rd(&dir.join("b/inner"))? == "inner file",
        "b is not a bind of t/sub"
    );
    let bl = mountinfo_line(&dir.join("b"))?;
    ensure!(
        bl.split(' ').nth(3) == Some("/sub"),
        "b's root is not /sub: {bl}"
    );
    ensure!(rd(&dir.join("ro/kept"))? == "read only", "ro/kept changed");
    let w = fs::write(dir.join("ro/new"), "x");
    ensure!(
        w.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS),
        "ro is writable: {w:?}"
    );
    let sl = mountinfo_line(&dir.join("s"))?;
    ensure!(sl.contains(" shared:"), "s is not shared: {sl}");
    let pl = mountinfo_line(&dir.join("p"))?;
    ensure!(
        !pl.contains("shared:") && pl.contains("nosuid,nodev"),
        "p is not private nosuid,nodev: {pl}"
    );
    let proc = mountinfo_line(Path::new("/proc"))?;
    ensure!(proc.contains(" - proc "), "/proc is not a proc: {proc}");
    let mut s = String::new();
    fd.rewind().map_err(|e| format!("rewind: {e}"))?;
    fd.read_to_string(&mut s)
        .map_err(|e| format!("read the open fd: {e}"))?;
    ensure!(s == "hello tmpfs", "the fd open on t/hello reads {s:?}");
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    ensure!(cwd == t.join("sub"), "cwd is {}", cwd.display());
    Ok(())
}

/// `--child 1`: a forked child that holds the fd on `t/hello` too (one
/// description of a file of the namespace held by two processes), sleeping
/// until killed.
fn fork_holder() -> libc::pid_t {
    // SAFETY: the child only sleeps until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: prctl takes integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    if child < 0 {
        die("fork");
    }
    child
}

/// `--over 1`: a file in `p` (a directory of the tmpfs `t`), then a tmpfs
/// mounted over `p`, which hides it.
fn cover(p: &Path) {
    fs::create_dir(p).unwrap_or_else(|_| die("mkdir t/over"));
    fs::write(p.join("hidden"), "under the mount").unwrap_or_else(|_| die("write t/over/hidden"));
    mount("crust-over", p, "tmpfs", 0, "");
}

/// After `cover`: the file is back once the mount over it goes.
fn uncover(p: &Path) -> Result<(), String> {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path that outlives the call.
    let r = unsafe { libc::umount2(c.as_ptr(), 0) };
    ensure!(r == 0, "umount t/over failed");
    let got =
        fs::read_to_string(p.join("hidden")).map_err(|e| format!("read t/over/hidden: {e}"))?;
    ensure!(got == "under the mount", "t/over/hidden changed: {got:?}");
    Ok(())
}

/// `--child 1`: a FIFO at `p`, opened read-write, with bytes queued in it.
fn fifo_with_data(p: &Path) -> fs::File {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        die("mkfifo p/fifo");
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|_| die("open p/fifo"));
    std::io::Write::write_all(&mut f, b"fifo data").unwrap_or_else(|_| die("write p/fifo"));
    f
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    build(&dir, args.num("unshare", 1) == 1);
    let many = args.num("many", 0);
    build_many(&dir, many);
    let mut fd = fs::File::open(dir.join("t/hello")).unwrap_or_else(|_| die("open t/hello"));
    std::env::set_current_dir(dir.join("t/sub")).unwrap_or_else(|_| die("chdir t/sub"));
    let over = args.num("over", 0) == 1;
    if over {
        cover(&dir.join("t/over"));
    }
    let cgroup = args.opt("cgroup").unwrap_or_default().to_string();
    if !cgroup.is_empty() {
        let cg = dir.join("cg");
        fs::create_dir_all(&cg).unwrap_or_else(|_| die("mkdir cg"));
        mount("none", &cg, "cgroup", 0, &format!("none,name={cgroup}"));
    }
    let holder = args.num("child", 0) == 1;
    // An fd on its own /proc entry (opened through /proc/self: its link
    // names its pid as its namespace sees it).
    let procfd = (args.num("procfd", 0) == 1).then(|| {
        fs::File::open("/proc/self/status").unwrap_or_else(|_| die("open /proc/self/status"))
    });
    let fifo = holder.then(|| fifo_with_data(&dir.join("p/fifo")));
    let child = holder.then(fork_holder);
    ready(&args);
    wait_for_term(10, || {});
    let verdict = check(&dir, &mut fd).and_then(|()| check_many(&dir, many));
    let verdict = verdict.and_then(|()| {
        if cgroup.is_empty() {
            return Ok(());
        }
        let line = mountinfo_line(&dir.join("cg"))?;
        ensure!(
            line.contains(" - cgroup ") && line.contains(&format!("name={cgroup}")),
            "cg is not a mount of the cgroup hierarchy {cgroup}: {line}"
        );
        ensure!(
            dir.join("cg/cgroup.procs").exists(),
            "cg has no cgroup.procs"
        );
        Ok(())
    });
    let verdict = verdict.and_then(|()| match fifo {
        Some(mut f) => {
            let mut buf = [0u8; 9];
            f.read_exact(&mut buf)
                .map_err(|e| format!("read p/fifo: {e}"))?;
            ensure!(&buf == b"fifo data", "p/fifo lost its queued bytes");
            Ok(())
        }
        None => Ok(()),
    });
    let verdict = verdict.and_then(|()| match &procfd {
        Some(f) => {
            use std::os::unix::fs::MetadataExt;
            let had = f.metadata().map_err(|e| format!("fstat /proc fd: {e}"))?;
            let now = fs::metadata("/proc/self/status")
                .map_err(|e| format!("stat /proc/self/status: {e}"))?;
            ensure!(
                (had.dev(), had.ino()) == (now.dev(), now.ino()),
                "the fd on /proc/self/status is on another proc file ({}:{}, not {}:{})",
                had.dev(),
                had.ino(),
                now.dev(),
                now.ino()
            );
            Ok(())
        }
        None => Ok(()),
    });
    let verdict = verdict.and_then(|()| {
        if over {
            uncover(&dir.join("t/over"))
        } else {
            Ok(())
        }
    });
    if let Some(c) = child {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(c, libc::SIGKILL);
            libc::waitpid(c, std::ptr::null_mut(), 0);
        }
    }
    finish(&args, verdict);
}
