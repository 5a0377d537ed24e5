//! A child in a mount namespace of its own pivoted into a tmpfs (what
//! zdtm's mntns_pivot_root does, and a container runtime).
//!
//! The parent unshares a mount namespace (the tree's own), keeps `/` and
//! `/dev`, mounts a proc, and forks the child, which unshares again,
//! mounts a tmpfs at `DIR/newroot` holding `hello` (mode 0640), `data/f`
//! and a symlink `link -> hello`, binds `/data` at `/b` (a bind of a part
//! of its own root), pivots into it (`pivot_root(".", "old")`), detaches
//! the old root and removes `old`. With `--ro 1` it then remounts `/`
//! read-only (its superblock too). With `--bind 1` the new root is
//! `DIR/newroot` bound on itself instead of a tmpfs (a directory of the
//! root's namespace, as container runtimes do; not with `--ro`). The child
//! waits for a byte from the parent, then checks that its root is that
//! tmpfs (or not a tmpfs, `--bind 1`) with those files and modes, `/b`
//! shows `data`, writing fails with EROFS (`--ro 1`) or works, and that it
//! sees only those two mounts; the parent checks it does not see the
//! child's files (unless bound) and reports. `--unshare 0`: the parent
//! does not unshare (started by `unshare -m`).

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(Path::new(target)),
        cpath(Path::new(fstype)),
    );
    let ft = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), ft, flags, std::ptr::null()) } != 0 {
        die(&format!("mount {src} on {target} ({fstype})"));
    }
}

fn unshare_private() {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    mount(
        "none",
        "/",
        "",
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
    );
}

/// Detach every mount but `/` and `/dev`, deepest first.
fn keep_root_and_dev() {
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

/// The child's namespace: a tmpfs root with files, `/b` a bind of
/// `/data`, pivoted into; read-only with `ro`.
fn make_root(newroot: &Path, ro: bool, bind: bool) {
    let nr = newroot.to_string_lossy().into_owned();
    let _ = fs::create_dir(newroot);
    if bind {
        mount(&nr, &nr, "", libc::MS_BIND);
    } else {
        mount("crust-pivot", &nr, "tmpfs", 0);
    }
    let w = |p: &str, s: &str| {
        fs::write(newroot.join(p), s).unwrap_or_else(|_| die(&format!("write {p}")));
    };
    w("hello", "hello from the new root\n");
    fs::set_permissions(newroot.join("hello"), fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|_| die("chmod hello"));
    fs::create_dir(newroot.join("data")).unwrap_or_else(|_| die("mkdir data"));
    w("data/f", "data\n");
    std::os::unix::fs::symlink("hello", newroot.join("link")).unwrap_or_else(|_| die("symlink"));
    fs::create_dir(newroot.join("b")).unwrap_or_else(|_| die("mkdir b"));
    fs::create_dir(newroot.join("old")).unwrap_or_else(|_| die("mkdir old"));
    std::env::set_current_dir(newroot).unwrap_or_else(|_| die("chdir newroot"));
    let (dot, old) = (cpath(Path::new(".")), cpath(Path::new("old")));
    // SAFETY: NUL-terminated paths that outlive the call.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old.as_ptr()) } != 0 {
        die("pivot_root");
    }
    let old = cpath(Path::new("/old"));
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(old.as_ptr(), libc::MNT_DETACH) } != 0 {
        die("umount /old");
    }
    fs::remove_dir("/old").unwrap_or_else(|_| die("rmdir /old"));
    std::env::set_current_dir("/").unwrap_or_else(|_| die("chdir /"));
    mount("/data", "/b", "", libc::MS_BIND);
    if ro {
        mount(
            "none",
            "/",
            "",
            (libc::MS_REMOUNT | libc::MS_RDONLY) as libc::c_ulong,
        );
    }
}

/// The child's check, after the restore.
fn child_check(ro: bool, bind: bool) -> Result<(), String> {
    let s = fs::read_to_string("/hello").map_err(|e| format!("read /hello: {e}"))?;
    ensure!(s == "hello from the new root\n", "/hello reads {s:?}");
    let m = fs::metadata("/hello").map_err(|e| format!("stat /hello: {e}"))?;
    ensure!(m.mode() & 0o777 == 0o640, "/hello has mode {:o}", m.mode());
    let l = fs::read_link("/link").map_err(|e| format!("readlink /link: {e}"))?;
    ensure!(l == Path::new("hello"), "/link -> {}", l.display());
    let b = fs::read_to_string("/b/f").map_err(|e| format!("read /b/f: {e}"))?;
    ensure!(b == "data\n", "/b/f reads {b:?}");
    ensure!(!Path::new("/old").exists(), "/old is there");
    ensure!(!Path::new("/proc/self").exists(), "a /proc is there");
    let slash = cpath(Path::new("/"));
    // SAFETY: all-zero is a valid statfs; statfs fills it for a
    // NUL-terminated path that outlives the call.
    let (mut st, mut vfs): (libc::statfs, libc::statvfs) = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(slash.as_ptr(), &mut st) };
    ensure!(r == 0, "statfs /");
    ensure!(
        (st.f_type == libc::TMPFS_MAGIC) != bind,
        "/ has fs type {:#x} (bound: {bind})",
        st.f_type
    );
    // SAFETY: statvfs fills the struct for a NUL-terminated path.
    let r = unsafe { libc::statvfs(slash.as_ptr(), &mut vfs) };
    ensure!(r == 0, "statvfs /");
    let rdonly = vfs.f_flag & libc::ST_RDONLY != 0;
    ensure!(rdonly == ro, "/ read-only: {rdonly}, expected {ro}");
    match fs::write("/new", "x") {
        Err(e) if ro => ensure!(
            e.raw_os_error() == Some(libc::EROFS),
            "writing /new: {e}, not EROFS"
        ),
        Err(e) => return Err(format!("writing /new: {e}")),
        Ok(()) if ro => return Err("wrote /new on a read-only root".into()),
        Ok(()) => {}
    }
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let ro = args.num("ro", 0) == 1;
    let bind = args.num("bind", 0) == 1 && !ro;
    // `--unshare 0`: started in a mount namespace of its own already
    // (`unshare -m`), so its binary and stdio are on the tree's mounts.
    if args.num("unshare", 1) == 1 {
        unshare_private();
    }
    keep_root_and_dev();
    mount("proc", "/proc", "proc", 0);
    let newroot = dir.join("newroot");
    let mut go = [0i32; 2];
    let mut rd = [0i32; 2];
    // SAFETY: pipe fills the two ints.
    if unsafe { libc::pipe(go.as_mut_ptr()) } != 0 || unsafe { libc::pipe(rd.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    // SAFETY: the child runs its part and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl takes integers; close the ends the parent uses.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(go[1]);
            libc::close(rd[0]);
        }
        unshare_private();
        make_root(&newroot, ro, bind);
        let mut b = [0u8; 1];
        // SAFETY: one byte from and into live buffers.
        let n = unsafe {
            libc::write(rd[1], b"r".as_ptr().cast(), 1);
            libc::close(rd[1]);
            libc::read(go[0], b.as_mut_ptr().cast(), 1)
        };
        if n != 1 {
            std::process::exit(3);
        }
        match child_check(ro, bind) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                let _ = std::io::stderr().write_all(e.as_bytes());
                std::process::exit(1)
            }
        }
    }
    if pid < 0 {
        die("fork");
    }
    // SAFETY: closing the ends the child uses.
    unsafe {
        libc::close(go[0]);
        libc::close(rd[1]);
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer.
    if unsafe { libc::read(rd[0], b.as_mut_ptr().cast(), 1) } != 1 {
        die("the child did not get ready");
    }
    ready(&args);
    wait_for_term(10, || {});
    let verdict = (|| {
        ensure!(
            !Path::new("/hello").exists() && newroot.join("hello").exists() == bind,
            "the parent sees the child's files: {}",
            !bind
        );
        // Both read now: a value kept from before the dump would name a
        // namespace that died with the dumped tree, whose inode number a
        // new namespace of the restore may have taken again.
        let ours = fs::metadata("/proc/self/ns/mnt").map_or(0, |m| m.ino());
        let theirs = fs::metadata(format!("/proc/{pid}/ns/mnt")).map_or(0, |m| m.ino());
        ensure!(
            theirs != 0 && ours != 0 && theirs != ours,
            "the child is not in a mount namespace of its own (its {theirs}, the parent's {ours})"
        );
        let root = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(|e| format!("the child's mountinfo: {e}"))?;
        let mps: Vec<&str> = root.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        ensure!(mps == ["/", "/b"], "the child's mounts: {mps:?}");
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
