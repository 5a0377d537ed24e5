//! `mntprop --dir DIR`: a tree in a mount namespace of its own whose
//! mounts propagate to each other. The program unshares CLONE_NEWNS,
//! makes every mount private, detaches every host mount but `/` and
//! `/dev` (the test names `/dev` external), mounts a proc of its own, then
//! builds under DIR (an empty directory):
//! - `s`: a shared tmpfs; in it `a` (a bind of its `a/b`, a peer that
//!   covers a directory of `s`) and on that `a/c` (a bind of `s/d`), which
//!   propagates a copy to `s`'s hidden `a/b/c`;
//! - `peer`: a bind of `s/sub` (same peer group, a narrower root);
//! - `slave`: a bind of `s` made a slave of it;
//! - `ss`, `ss2`: binds of `s` made slave then shared (one new peer group,
//!   slave of `s`'s);
//! - `u`: an unbindable tmpfs; `p`: a private one.
//!
//! It records, for the mounts under DIR, mountpoint, root and
//! propagation with peer group numbers renamed by first use, and after
//! SIGTERM checks that they are the same, and that propagation works:
//! a mount in `s` shows in `slave`, `ss`, `ss2` and `peer` (under `sub`),
//! one in `slave` not in `s`, one in `ss` in `ss2`; `u` cannot be bound;
//! `a/c` then `a` unmount (the hidden copy went with `a/c`).
//!
//! With `--unshare 0` it stays in the mount namespace it was started in
//! (`unshare -m mntprop ...`: its binary is then on a mount of that
//! namespace, as CRIU's dump wants).
//!
//! With `--bad 1` it adds `g1` and `g2`, binds of two sibling directories
//! of a shared bind that is then unmounted: peers whose roots do not
//! nest, a peer group that cannot be rebuilt (crust refuses the dump).
//! With `--bad 2` a tmpfs is mounted on `u/x`: crust cannot read what it
//! covers (the kernel will not clone an unbindable mount), so it refuses.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

fn mount_r(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) -> i32 {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
    );
    let fp = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call.
    unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fp, flags, std::ptr::null()) }
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) {
    if mount_r(src, target, fstype, flags) != 0 {
        die(&format!("mount {src} on {} ({fstype})", target.display()));
    }
}

fn bind(src: &Path, target: &Path) {
    mount(&src.to_string_lossy(), target, "", libc::MS_BIND);
}

fn prop(target: &Path, flag: libc::c_ulong) {
    mount("none", target, "", flag);
}

fn umount(p: &Path) -> i32 {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path that outlives the call.
    unsafe { libc::umount2(c.as_ptr(), 0) }
}

fn mkdirs(base: &Path, dirs: &[&str]) {
    for d in dirs {
        fs::create_dir_all(base.join(d)).unwrap_or_else(|_| die(&format!("mkdir {d}")));
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

fn build(dir: &Path, bad: u64, unshare: bool) {
    // SAFETY: unshare takes flags.
    if unshare && unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        die("unshare(CLONE_NEWNS)");
    }
    prop(Path::new("/"), libc::MS_REC | libc::MS_PRIVATE);
    leave_host_mounts();
    mount("proc", Path::new("/proc"), "proc", 0);
    mkdirs(dir, &["s", "peer", "slave", "ss", "ss2", "u", "p"]);
    let s = dir.join("s");
    mount("crust-s", &s, "tmpfs", 0);
    prop(&s, libc::MS_SHARED);
    mkdirs(&s, &["a/b/c", "d", "sub"]);
    fs::write(s.join("d/file"), "d").unwrap_or_else(|_| die("write s/d/file"));
    bind(&s.join("a/b"), &s.join("a"));
    bind(&s.join("d"), &s.join("a/c"));
    bind(&s.join("sub"), &dir.join("peer"));
    bind(&s, &dir.join("slave"));
    prop(&dir.join("slave"), libc::MS_SLAVE);
    bind(&s, &dir.join("ss"));
    prop(&dir.join("ss"), libc::MS_SLAVE);
    prop(&dir.join("ss"), libc::MS_SHARED);
    bind(&dir.join("ss"), &dir.join("ss2"));
    mount("crust-u", &dir.join("u"), "tmpfs", 0);
    prop(&dir.join("u"), libc::MS_UNBINDABLE);
    mount("crust-p", &dir.join("p"), "tmpfs", 0);
    if bad == 2 {
        mkdirs(dir, &["u/x"]);
        mount("crust-ux", &dir.join("u/x"), "tmpfs", 0);
    }
    if bad == 1 {
        let g = dir.join("g");
        mkdirs(dir, &["g/x1", "g/x2", "g1", "g2"]);
        bind(&g, &g);
        prop(&g, libc::MS_SHARED);
        bind(&g.join("x1"), &dir.join("g1"));
        bind(&g.join("x2"), &dir.join("g2"));
        if umount(&g) != 0 {
            die("umount g");
        }
    }
}

/// The mounts under `dir`: "MOUNTPOINT ROOT PROPAGATION" with peer group
/// numbers renamed in order of first use, sorted.
fn shape(dir: &Path) -> Result<Vec<String>, String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    let under = format!("{}/", dir.display());
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for l in info.lines() {
        let head = l.split(" - ").next().unwrap_or("");
        let f: Vec<&str> = head.split(' ').collect();
        let (Some(root), Some(mp)) = (f.get(3), f.get(4)) else {
            continue;
        };
        if !mp.starts_with(&under) {
            continue;
        }
        let opts = f.iter().skip(6).map(|s| s.to_string()).collect();
        rows.push((mp.to_string(), root.to_string(), opts));
    }
    rows.sort();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (mp, root, opts) in rows {
        let mut p: Vec<String> = Vec::new();
        for o in opts {
            let (kind, id) = o.split_once(':').unwrap_or((o.as_str(), ""));
            if id.is_empty() {
                p.push(kind.to_string());
            } else {
                let n = names.len();
                let g = *names.entry(id.to_string()).or_insert(n);
                p.push(format!("{kind}:G{g}"));
            }
        }
        p.sort();
        out.push(format!("{} {root} {}", &mp[under.len()..], p.join(",")));
    }
    Ok(out)
}

fn exists(p: &Path) -> bool {
    p.exists()
}

/// Propagation at work on the restored tree.
fn behaves(dir: &Path) -> Result<(), String> {
    let s = dir.join("s");
    mkdirs(&s, &["sub/n"]);
    mkdirs(&dir.join("ss"), &["m"]);
    mount("crust-n", &s.join("sub/n"), "tmpfs", 0);
    fs::write(s.join("sub/n/f"), "n").map_err(|e| format!("write s/sub/n/f: {e}"))?;
    for seen in ["slave/sub/n/f", "ss/sub/n/f", "ss2/sub/n/f", "peer/n/f"] {
        ensure!(
            exists(&dir.join(seen)),
            "a mount in s/sub/n does not show at {seen}"
        );
    }
    mount("crust-m", &dir.join("ss/m"), "tmpfs", 0);
    fs::write(dir.join("ss/m/f"), "m").map_err(|e| format!("write ss/m/f: {e}"))?;
    ensure!(
        exists(&dir.join("ss2/m/f")),
        "a mount in ss does not show in its peer ss2"
    );
    ensure!(
        !exists(&dir.join("s/m/f")),
        "a mount in the slave ss shows in its master s"
    );
    fs::create_dir_all(dir.join("p/x")).map_err(|e| format!("mkdir p/x: {e}"))?;
    let r = mount_r(
        &dir.join("u").to_string_lossy(),
        &dir.join("p/x"),
        "",
        libc::MS_BIND,
    );
    ensure!(r != 0, "the unbindable u could be bound");
    ensure!(umount(&s.join("a/c")) == 0, "umount s/a/c failed");
    ensure!(
        umount(&s.join("a")) == 0,
        "umount s/a failed: something is still mounted on it"
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    build(&dir, args.num("bad", 0), args.num("unshare", 1) == 1);
    let before = shape(&dir).unwrap_or_else(|e| die(&e));
    ready(&args);
    wait_for_term(10, || {});
    let verdict = shape(&dir).and_then(|after| {
        ensure!(
            after == before,
            "the mounts differ: before {before:?}, after {after:?}"
        );
        behaves(&dir)
    });
    finish(&args, verdict);
}
