//! `creds`: a process that is not root, with every kind of credential set,
//! which must come back exactly the same after each restore.
//!
//! `--mode nobody` (the default): uid, gid and groups 65534, no
//! capabilities, securebits 0 (as a daemon that dropped to `nobody`).
//! `--mode full`: uids 2001/2002/2003 (real/effective/saved) and fsuid
//! 2003, gids 1001/1002/1003 and fsgid 1003, groups 100, 4242 and 65534;
//! permitted CHOWN, KILL, NET_BIND_SERVICE, NET_RAW, effective
//! NET_BIND_SERVICE, inheritable NET_BIND_SERVICE, NET_RAW and MKNOD (which
//! the bounding set no longer holds: SYS_MODULE, SYS_BOOT and MKNOD are
//! dropped from it), ambient NET_BIND_SERVICE, securebits NOROOT,
//! NOROOT_LOCKED and NO_CAP_AMBIENT_RAISE, no_new_privs.
//!
//! It starts as root, sets them, records them (the `Uid`, `Gid`, `Groups`,
//! `Cap*` and `NoNewPrivs` lines of its status and its securebits) and,
//! from then on, checks every 20 ms, in the main thread and in a second
//! thread, that nothing changed; the first change is the verdict written
//! after SIGTERM. Not root, it cannot open the test's files by path: it
//! writes its ready and result files through a directory fd opened first.

use crust_testprogs::{die, install_term_handler, sleep_ms, start, term_requested};
use std::ffi::CString;
use std::sync::Mutex;

const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_BOOT: u32 = 22;
const CAP_MKNOD: u32 = 27;
const SECBIT_NOROOT: u64 = 1 << 0;
const SECBIT_NOROOT_LOCKED: u64 = 1 << 1;
const SECBIT_KEEP_CAPS: u64 = 1 << 4;
const SECBIT_NO_CAP_AMBIENT_RAISE: u64 = 1 << 6;

/// The first change seen by either thread.
static CHANGED: Mutex<Option<String>> = Mutex::new(None);

fn bits(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << c)
}

fn check(ok: bool, what: &str) {
    if !ok {
        die(what);
    }
}

/// capset(2) of this thread: effective, permitted, inheritable.
fn capset(eff: u64, prm: u64, inh: u64) {
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let data: [u32; 6] = [
        eff as u32,
        prm as u32,
        inh as u32,
        (eff >> 32) as u32,
        (prm >> 32) as u32,
        (inh >> 32) as u32,
    ];
    // SAFETY: a version-3 header and two data structs, as capset reads them.
    let r = unsafe { libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr()) };
    check(r == 0, "capset");
}

/// The current effective and permitted sets (capget).
fn capget() -> (u64, u64) {
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let mut data = [0u32; 6];
    // SAFETY: a version-3 header and room for two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, hdr.as_ptr(), data.as_mut_ptr()) };
    check(r == 0, "capget");
    (
        data[0] as u64 | (data[3] as u64) << 32,
        data[1] as u64 | (data[4] as u64) << 32,
    )
}

fn prctl(op: i32, a: u64, what: &str) {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(op, a, 0u64, 0u64, 0u64) };
    check(r == 0, what);
}

/// Raw syscalls (glibc's setuid family would change every thread; there
/// is one thread yet).
fn set_ids(groups: &[u32], gids: [u32; 3], fsgid: u32, uids: [u32; 3], fsuid: u32) {
    // SAFETY: setgroups reads `groups.len()` gids; the rest take integers.
    unsafe {
        check(
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0,
            "setgroups",
        );
        check(
            libc::syscall(libc::SYS_setresgid, gids[0], gids[1], gids[2]) == 0,
            "setresgid",
        );
        libc::syscall(libc::SYS_setfsgid, fsgid);
        check(
            libc::syscall(libc::SYS_setresuid, uids[0], uids[1], uids[2]) == 0,
            "setresuid",
        );
        libc::syscall(libc::SYS_setfsuid, fsuid);
    }
}

fn become_full() {
    let inh = bits(&[CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_MKNOD]);
    let (eff, prm) = capget();
    // Inheritable first: MKNOD leaves the bounding set next.
    capset(eff, prm, inh);
    for cap in [CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_MKNOD] {
        prctl(libc::PR_CAPBSET_DROP, cap as u64, "PR_CAPBSET_DROP");
    }
    prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_KEEP_CAPS,
        "PR_SET_SECUREBITS(KEEP_CAPS)",
    );
    set_ids(
        &[100, 4242, 65534],
        [1001, 1002, 1003],
        1003,
        [2001, 2002, 2003],
        2003,
    );
    let prm = bits(&[CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_NET_RAW]);
    let eff = bits(&[CAP_NET_BIND_SERVICE]);
    let setpcap = bits(&[CAP_SETPCAP]);
    capset(eff | setpcap, prm | setpcap, inh);
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as u64,
            CAP_NET_BIND_SERVICE as u64,
            0u64,
            0u64,
        )
    };
    check(r == 0, "PR_CAP_AMBIENT_RAISE");
    prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE,
        "PR_SET_SECUREBITS",
    );
    capset(eff, prm, inh);
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS");
}

/// This thread's credentials: its status lines and its securebits.
fn creds() -> Result<String, String> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|e| format!("/proc/thread-self/status: {e}"))?;
    let mut out: Vec<String> = status
        .lines()
        .filter(|l| {
            ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    // SAFETY: prctl with integer arguments.
    let sb = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0u64, 0u64, 0u64, 0u64) };
    out.push(format!("secbits {sb:#x}"));
    Ok(out.join("; "))
}

/// Compare this thread's credentials with `want`; record the first change.
fn watch(who: &str, want: &str) {
    let got = creds().unwrap_or_else(|e| e);
    if got != want {
        let mut c = CHANGED.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(format!("{who}: credentials were [{want}], now [{got}]"));
        }
    }
}

/// Write `text` to `name` in the directory `dir` (tmp + rename).
fn write_at(dir: i32, name: &str, text: &str) {
    let tmp = CString::new(format!("{name}.tmp")).unwrap_or_default();
    let dst = CString::new(name).unwrap_or_default();
    // SAFETY: NUL-terminated names relative to an open directory fd; the
    // buffer is `text`, readable for its length.
    unsafe {
        let fd = libc::openat(
            dir,
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            die(&format!("openat {name}.tmp"));
        }
        libc::write(fd, text.as_ptr().cast(), text.len());
        libc::close(fd);
        if libc::renameat(dir, tmp.as_ptr(), dir, dst.as_ptr()) != 0 {
            die(&format!("renameat {name}"));
        }
    }
}

fn main() {
    let args = start();
    let dir_of = |p: &std::path::Path| -> (i32, String) {
        let parent = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
        let c = CString::new(parent.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        if fd < 0 {
            die("open the result directory");
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (fd, name)
    };
    let (dir, ready_name) = dir_of(&args.ready);
    let result_name = args
        .result
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match args.opt("mode").unwrap_or("nobody") {
        "full" => become_full(),
        "nobody" => set_ids(&[65534], [65534; 3], 65534, [65534; 3], 65534),
        m => {
            eprintln!("--mode {m}: nobody or full");
            std::process::exit(2)
        }
    }
    let want = creds().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(3)
    });
    let want2 = want.clone();
    std::thread::spawn(move || loop {
        watch("the second thread", &want2);
        sleep_ms(20);
    });
    install_term_handler();
    write_at(dir, &ready_name, "READY\n");
    while !term_requested() {
        watch("the main thread", &want);
        sleep_ms(20);
    }
    watch("the main thread", &want);
    let verdict = CHANGED.lock().unwrap_or_else(|p| p.into_inner()).take();
    let text = match verdict {
        None => "PASS\n".to_string(),
        Some(why) => format!("FAIL: {why}\n"),
    };
    write_at(dir, &result_name, &text);
    std::process::exit(if text.starts_with("PASS") { 0 } else { 1 })
}
