//! `covered --root DIR`: the init of a tree in its own user, pid and mount
//! namespaces (started by `unshare --fork --pid --mount --mount-proc
//! DIR/bin/covered --root DIR --ready /ready --result /result` from a
//! process that is root of a new user namespace), whose tmpfs mounts other
//! mounts cover. It must be pid 1 of its pid namespace, and:
//! - makes every mount private, binds DIR over itself and pivots into it
//!   (DIR must hold `bin/covered`, `dev/null`, `old`, `proc`, `cov/a`),
//!   detaching the old root; mounts a proc of its own, puts its stdio on
//!   `/dev/null` and runs itself again from `/bin/covered` (`--stage 2`);
//! - mounts a tmpfs on `/cov/a` holding `under`, a tmpfs on `/cov/a/b`
//!   holding `deep`, then a tmpfs over `/cov/a` holding `top`: the first
//!   two are covered (hidden from every path), and made in the namespace
//!   its user namespace owns, so that a copy of it made from outside locks
//!   them;
//! - with `--hold 1`, keeps an fd open on `/cov/a/under` (a file on a
//!   covered mount, which a dump refuses);
//! - with `--binfmt 1`, mounts its user namespace's own binfmt_misc on
//!   `/bfm` (DIR must hold it) and registers two entries: `crust-e` (by
//!   extension, enabled) and `crust-m` (by magic and mask at offset 2,
//!   flags P and O, disabled), both run by `/bin/covered`; after SIGTERM
//!   they must read as before.
//!
//! After SIGTERM it checks `top`, detaches the cover, then checks `under`
//! and `deep` (the covered mounts' contents came back) and writes its
//! verdict.

use crust_testprogs::{cpath, die, finish, ready, sleep_ms, start, term_requested};
use std::path::Path;

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(Path::new(target)),
        cpath(Path::new(fstype)),
    );
    let opt = |c: &std::ffi::CString, empty: bool| {
        if empty {
            std::ptr::null()
        } else {
            c.as_ptr()
        }
    };
    // SAFETY: NUL-terminated strings (or NULL) that outlive the call.
    let r = unsafe {
        libc::mount(
            opt(&s, src.is_empty()),
            t.as_ptr(),
            opt(&f, fstype.is_empty()),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        die(&format!("mount {src} on {target} ({fstype})"));
    }
}

fn enter_root(root: &str) {
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE);
    mount(root, root, "", libc::MS_BIND);
    let r = cpath(Path::new(root));
    // SAFETY: NUL-terminated paths that outlive the calls.
    unsafe {
        if libc::chdir(r.as_ptr()) != 0 {
            die("chdir root");
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old".as_ptr()) != 0 {
            die("pivot_root");
        }
    }
    // In a user namespace the kernel wants a fully visible proc in sight
    // before it lets a new one be mounted: mounted before the old root goes.
    mount("proc", "/proc", "proc", 0);
    // SAFETY: NUL-terminated paths that outlive the calls; dup2 and close
    // take fds only.
    unsafe {
        if libc::chdir(c"/".as_ptr()) != 0 || libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH) != 0
        {
            die("detach the old root");
        }
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd < 0 {
            die("open /dev/null");
        }
        for n in 0..3 {
            libc::dup2(fd, n);
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
}

/// Run the program again from the new root, with `--stage 2` added.
fn reexec() -> ! {
    let mut argv: Vec<std::ffi::CString> = std::env::args()
        .map(|a| std::ffi::CString::new(a).unwrap_or_default())
        .collect();
    argv.push(c"--stage".into());
    argv.push(c"2".into());
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NUL-terminated path and a null-terminated array of
    // NUL-terminated strings that outlive the call.
    unsafe { libc::execv(c"/bin/covered".as_ptr(), ptrs.as_ptr()) };
    die("execv /bin/covered")
}

fn write(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        die(&format!("write {path}: {e}"));
    }
}

/// The covered stack; with `hold`, an fd on `/cov/a/under` (returned).
fn make_mounts(hold: bool) -> Option<std::fs::File> {
    mount("under", "/cov/a", "tmpfs", 0);
    write("/cov/a/under", "under the cover");
    if let Err(e) = std::fs::create_dir("/cov/a/b") {
        die(&format!("mkdir /cov/a/b: {e}"));
    }
    mount("deep", "/cov/a/b", "tmpfs", 0);
    write("/cov/a/b/deep", "deeper still");
    let held = hold.then(|| {
        std::fs::File::open("/cov/a/under").unwrap_or_else(|e| die(&format!("open under: {e}")))
    });
    mount("top", "/cov/a", "tmpfs", 0);
    write("/cov/a/top", "on top");
    held
}

fn check() -> Result<(), String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"));
    let want = |p: &str, text: &str| {
        let got = read(p);
        if got == text {
            Ok(())
        } else {
            Err(format!("{p}: {got:?}, not {text:?}"))
        }
    };
    want("/cov/a/top", "on top")?;
    if std::path::Path::new("/cov/a/under").exists() {
        return Err("/cov/a/under shows through the cover".into());
    }
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c"/cov/a".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(format!(
            "detach the cover of /cov/a: {}",
            std::io::Error::last_os_error()
        ));
    }
    want("/cov/a/under", "under the cover")?;
    want("/cov/a/b/deep", "deeper still")
}

const BINFMT: [(&str, &str); 2] = [
    ("crust-e", ":crust-e:E::crusttest::/bin/covered:"),
    (
        "crust-m",
        ":crust-m:M:2:\\x43\\x52:\\xff\\xfe:/bin/covered:PO",
    ),
];

/// Mount binfmt_misc on /bfm and register [`BINFMT`]; `crust-m` disabled.
fn make_binfmt() {
    mount("binfmt_misc", "/bfm", "binfmt_misc", 0);
    for (_, line) in BINFMT {
        write("/bfm/register", line);
    }
    write("/bfm/crust-m", "0");
}

/// The text of the entries of [`BINFMT`].
fn binfmt_state() -> String {
    BINFMT
        .iter()
        .map(|(n, _)| {
            std::fs::read_to_string(format!("/bfm/{n}")).unwrap_or_else(|e| format!("<{e}>"))
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn main() {
    let args = start();
    // SAFETY: getpid takes nothing.
    if unsafe { libc::getpid() } != 1 {
        die("not the init of a pid namespace");
    }
    if args.num("stage", 1) == 1 {
        enter_root(&args.path("root").to_string_lossy());
        reexec();
    }
    // SAFETY: setsid takes nothing.
    unsafe { libc::setsid() };
    let _held = make_mounts(args.num("hold", 0) == 1);
    let binfmt = args.num("binfmt", 0) == 1;
    if binfmt {
        make_binfmt();
    }
    let before = binfmt_state();
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check().and_then(|()| {
        let after = binfmt_state();
        if !binfmt || after == before {
            Ok(())
        } else {
            Err(format!(
                "binfmt_misc entries before: {before:?} after: {after:?}"
            ))
        }
    });
    finish(&args, verdict);
}
