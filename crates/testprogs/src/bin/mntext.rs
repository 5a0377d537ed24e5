//! `mntext --dir DIR --ext SRC`: a tree in a mount namespace of its own
//! with mounts from outside it (issue 13, external mounts). SRC is a tmpfs
//! of the host's holding a file `file` ("ext file"). The program unshares
//! CLONE_NEWNS, makes every mount private, detaches every mount but `/`,
//! `/dev` and SRC, then under DIR (an empty directory):
//! - `DIR/e`: a bind of SRC (an external directory mount);
//! - `DIR/ef`: a bind of SRC/file (an external file mount);
//! - `DIR/c`: a tmpfs holding `under`, covered by a second tmpfs;
//! - with `--binfmt 1`, `DIR/bm`: a binfmt_misc (no entry registered);
//!
//! and detaches SRC itself, so that only the binds show it. After SIGTERM
//! it checks the files through the binds and, once the covering tmpfs is
//! unmounted, `DIR/c/under`.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};
use std::fs;
use std::path::Path;

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
    );
    let fptr = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fptr, flags, std::ptr::null()) } != 0 {
        die(&format!("mount {src} on {}", target.display()));
    }
}

fn umount(p: &Path) -> Result<(), String> {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(format!(
            "umount {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn build(dir: &Path, src: &Path, binfmt: bool) {
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
    let keep = src.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/" && m != "/dev" && *m != keep)
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let _ = umount(Path::new(&m));
    }
    let e = dir.join("e");
    fs::create_dir(&e).unwrap_or_else(|_| die("mkdir e"));
    mount(&keep, &e, "", libc::MS_BIND);
    let ef = dir.join("ef");
    fs::write(&ef, "").unwrap_or_else(|_| die("create ef"));
    mount(&format!("{keep}/file"), &ef, "", libc::MS_BIND);
    let c = dir.join("c");
    fs::create_dir(&c).unwrap_or_else(|_| die("mkdir c"));
    mount("crust-under", &c, "tmpfs", 0);
    fs::write(c.join("under"), "beneath").unwrap_or_else(|_| die("write c/under"));
    mount("crust-over", &c, "tmpfs", 0);
    umount(src).unwrap_or_else(|e| die(&e));
    if binfmt {
        let bm = dir.join("bm");
        fs::create_dir(&bm).unwrap_or_else(|_| die("mkdir bm"));
        mount("none", &bm, "binfmt_misc", 0);
    }
}

fn check(dir: &Path, binfmt: bool) -> Result<(), String> {
    ensure!(
        !binfmt || dir.join("bm/register").exists(),
        "bm is no longer a binfmt_misc"
    );
    let rd = |p: &Path| fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()));
    ensure!(rd(&dir.join("e/file"))? == "ext file", "e/file changed");
    ensure!(
        rd(&dir.join("ef"))? == "ext file",
        "the file bind ef changed"
    );
    ensure!(!dir.join("c/under").exists(), "c is no longer covered");
    umount(&dir.join("c"))?;
    ensure!(rd(&dir.join("c/under"))? == "beneath", "c/under changed");
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let binfmt = args.num("binfmt", 0) == 1;
    build(&dir, &args.path("ext"), binfmt);
    ready(&args);
    wait_for_term(10, || {});
    finish(&args, check(&dir, binfmt));
}
