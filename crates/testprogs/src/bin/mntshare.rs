//! `mntshare --dir DIR`: propagation between two mount namespaces of one
//! tree. The program unshares CLONE_NEWNS, makes every mount private,
//! detaches every host mount but `/` and `/dev`, mounts a proc, then mounts
//! two tmpfs, `DIR/a` and `DIR/m`, both shared, and forks a child that
//! unshares CLONE_NEWNS (its copies of `a` and `m` are peers of the
//! parent's), makes its `m` a slave (of the parent's `m`'s peer group) and
//! binds `DIR/a/x` at `DIR/b` (a peer of `a` with a narrower root, in its
//! namespace only).
//!
//! After SIGTERM: the parent compares the ids in both mountinfos (the
//! child's `a` and `b` share the parent's `a` peer group; the child's `m`
//! is a slave of the parent's `m` group), mounts tmpfs at `DIR/a/x/q` and
//! `DIR/m/r`, and tells the child, which checks it sees them at
//! `DIR/a/x/q`, `DIR/b/q` and `DIR/m/r`, then mounts tmpfs at `DIR/a/c`
//! and `DIR/m/t`; the parent checks it sees `DIR/a/c` (peers both ways)
//! but not `DIR/m/t` (a slave does not propagate back).
//!
//! The child also mounts a tmpfs at `DIR/own` (in its namespace only),
//! opens a file there at offset 3 and forks a grandchild that holds the
//! same description; after the restore the grandchild moves the offset to
//! 7 when asked, and the child checks it sees 7 (one description, opened
//! in its namespace).
//!
//! With `--narrow 1` (a state crust refuses): once the child has its copy,
//! the parent also binds `DIR/a/x` at `DIR/bx` (a peer) and makes its own
//! `DIR/a` private, so the peer group's only mount in the root's namespace
//! is narrower than the child's `DIR/a`; the processes only wait.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::fs;
use std::io::Write;
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

fn tmpfs(target: &Path) {
    let _ = fs::create_dir_all(target);
    mount("crust-share", target, "tmpfs", 0);
}

fn propagation(target: &Path, flag: libc::c_ulong) {
    mount("none", target, "", flag);
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

/// The optional fields (`shared:N`, `master:N`) of the mount at `p` in
/// process `pid`'s mountinfo (`None`: no mount there).
fn tags(pid: &str, p: &Path) -> Option<(u32, u32)> {
    let info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let p = p.to_string_lossy();
    let line = info.lines().rfind(|l| l.split(' ').nth(4) == Some(&*p))?;
    let num = |key: &str| {
        line.split(' ')
            .take_while(|f| *f != "-")
            .find_map(|f| f.strip_prefix(key)?.parse().ok())
            .unwrap_or(0)
    };
    Some((num("shared:"), num("master:")))
}

fn is_mount(p: &Path) -> bool {
    tags("self", p).is_some()
}

fn byte(fd: i32) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a live buffer.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) == 1 }
}

fn say(fd: i32) -> bool {
    // SAFETY: writing one byte from a live buffer.
    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) == 1 }
}

/// The child's part after the parent's mounts: it sees them, then makes
/// its own.
fn child_check(dir: &Path) -> Result<(), String> {
    for p in ["a/x/q", "b/q", "m/r"] {
        ensure!(
            is_mount(&dir.join(p)),
            "the child does not see the parent's mount at {p}"
        );
    }
    tmpfs(&dir.join("a/c"));
    tmpfs(&dir.join("m/t"));
    Ok(())
}

/// The shared description: a file on the child's own tmpfs at offset 3, a
/// grandchild holding it that moves the offset to 7 when asked on `ask`
/// and answers on `done`. Returns (fd, ask, done, grandchild).
fn shared_file(dir: &Path) -> (i32, i32, i32, i32) {
    let own = dir.join("own");
    tmpfs(&own);
    fs::write(own.join("f"), "0123456789").unwrap_or_else(|_| die("write own/f"));
    let c = cpath(&own.join("f"));
    // SAFETY: a NUL-terminated path; lseek on the fd just opened.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR) };
    // SAFETY: lseek takes integers.
    if fd < 0 || unsafe { libc::lseek(fd, 3, libc::SEEK_SET) } != 3 {
        die("open own/f");
    }
    let (ask_r, ask_w) = pipe();
    let (done_r, done_w) = pipe();
    // SAFETY: the grandchild only waits, seeks and answers.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl takes integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if byte(ask_r) {
            // SAFETY: lseek takes integers.
            unsafe { libc::lseek(fd, 7, libc::SEEK_SET) };
            say(done_w);
        }
        std::process::exit(0);
    }
    if pid < 0 {
        die("fork");
    }
    (fd, ask_w, done_r, pid)
}

/// After the restore: the grandchild's seek shows in the child's fd.
fn shared_file_check((fd, ask, done, pid): (i32, i32, i32, i32)) -> Result<(), String> {
    // SAFETY: lseek takes integers.
    let at = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    ensure!(
        at == 3,
        "the file on its own tmpfs is at offset {at}, not 3"
    );
    ensure!(say(ask) && byte(done), "the grandchild did not answer");
    // SAFETY: lseek takes integers.
    let at = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    ensure!(
        at == 7,
        "the grandchild's seek did not move the child's offset ({at}): two descriptions"
    );
    Ok(())
}

/// The child: its own namespace (a copy), `m` a slave, `b` a bind of
/// `a/x`; ready on `up`, then waits for `go`.
fn child(dir: &Path, up: i32, go: i32, narrow: bool) -> ! {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    propagation(&dir.join("m"), libc::MS_SLAVE);
    let _ = fs::create_dir_all(dir.join("b"));
    mount(
        &dir.join("a/x").to_string_lossy(),
        &dir.join("b"),
        "",
        libc::MS_BIND,
    );
    let file = (!narrow).then(|| shared_file(dir));
    say(up);
    if !byte(go) || narrow {
        std::process::exit(3);
    }
    let verdict = child_check(dir).and_then(|()| file.map_or(Ok(()), shared_file_check));
    let done = say(up);
    match verdict {
        Ok(()) if done => std::process::exit(0),
        Ok(()) => std::process::exit(2),
        Err(e) => {
            let _ = std::io::stderr().write_all(e.as_bytes());
            std::process::exit(1)
        }
    }
}

fn pipe() -> (i32, i32) {
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the two ints.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    (p[0], p[1])
}

/// The parent's check after the restore (child `pid`).
fn parent_check(dir: &Path, pid: i32, go: i32, up: i32) -> Result<(), String> {
    let child = pid.to_string();
    let (a, m) = (dir.join("a"), dir.join("m"));
    let mine = tags("self", &a).ok_or("a is not a mount")?;
    let theirs = tags(&child, &a).ok_or("the child has no mount at a")?;
    let bind = tags(&child, &dir.join("b")).ok_or("the child has no mount at b")?;
    ensure!(
        mine.0 != 0 && theirs.0 == mine.0 && bind.0 == mine.0,
        "a and b are not one peer group: parent {mine:?}, child a {theirs:?}, b {bind:?}"
    );
    let pm = tags("self", &m).ok_or("m is not a mount")?;
    let cm = tags(&child, &m).ok_or("the child has no mount at m")?;
    ensure!(
        pm.0 != 0 && cm == (0, pm.0),
        "the child's m is not a slave of the parent's: parent {pm:?}, child {cm:?}"
    );
    tmpfs(&dir.join("a/x/q"));
    tmpfs(&dir.join("m/r"));
    ensure!(say(go), "write to the child");
    ensure!(byte(up), "the child did not answer");
    ensure!(
        is_mount(&dir.join("a/c")),
        "the child's mount at a/c did not reach the parent"
    );
    ensure!(
        !is_mount(&dir.join("m/t")),
        "the child's mount at m/t (a slave) reached the parent"
    );
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(waited == pid, "waitpid");
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's check failed (status {status:#x})"
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let narrow = args.num("narrow", 0) == 1;
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    propagation(Path::new("/"), libc::MS_REC | libc::MS_PRIVATE);
    leave_host_mounts();
    mount("proc", Path::new("/proc"), "proc", 0);
    let (a, m) = (dir.join("a"), dir.join("m"));
    tmpfs(&a);
    tmpfs(&m);
    propagation(&a, libc::MS_SHARED);
    propagation(&m, libc::MS_SHARED);
    fs::create_dir_all(a.join("x")).unwrap_or_else(|_| die("mkdir a/x"));
    let (up_r, up_w) = pipe();
    let (go_r, go_w) = pipe();
    // SAFETY: the child runs `child` and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl takes integers; closing the parent's ends.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(up_r);
            libc::close(go_w);
        }
        child(&dir, up_w, go_r, narrow);
    }
    if pid < 0 {
        die("fork");
    }
    // SAFETY: closing the child's ends.
    unsafe {
        libc::close(up_w);
        libc::close(go_r);
    }
    if !byte(up_r) {
        die("the child did not get ready");
    }
    if narrow {
        let bx = dir.join("bx");
        let _ = fs::create_dir_all(&bx);
        mount(&a.join("x").to_string_lossy(), &bx, "", libc::MS_BIND);
        propagation(&a, libc::MS_PRIVATE);
    }
    ready(&args);
    wait_for_term(10, || {});
    let verdict = if narrow {
        Err("the narrow state is not meant to be restored".to_string())
    } else {
        parent_check(&dir, pid, go_w, up_r)
    };
    finish(&args, verdict);
}
