//! `tunfds`: files of the tun/tap clone device. The process unshares
//! CLONE_NEWNET (`--where own`, the default) or stays in its parent's
//! (`--where host`: it only opens a file attached to nothing, which a dump
//! must refuse), or forks a child that unshares
//! a network namespace of its own below the process's (`--where sub`).
//! With `--sock 1` the child also holds a UDP socket.
//! The holder opens: a file attached to nothing, one on tun link `tunk0`,
//! two on multiqueue tun `tunk1` (the second's queue detached), one on
//! tap `tapk0`; and makes tap `ptapk0` persistent with no file left.
//!
//! After SIGTERM it checks that each file is on the link it was on (the
//! `iff:` line of its fdinfo), that the persistent tap is there, and
//! (holder itself) that the detached queue attaches again and the
//! unattached file takes a link.

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};
use std::os::fd::RawFd;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const TUNSETPERSIST: libc::c_ulong = 0x400454cb;
const TUNSETQUEUE: libc::c_ulong = 0x400454d9;
const IFF_TUN: i16 = 0x0001;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_ATTACH_QUEUE: i16 = 0x0200;
const IFF_DETACH_QUEUE: i16 = 0x0400;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

fn req(name: &str, flags: i16) -> IfReq {
    let mut r = IfReq {
        name: [0; 16],
        flags,
        _pad: [0; 22],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    r
}

fn open_tun() -> RawFd {
    let p = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        die("open /dev/net/tun");
    }
    fd
}

fn ioctl_req(fd: RawFd, cmd: libc::c_ulong, r: &mut IfReq) -> bool {
    // SAFETY: `r` is a struct ifreq of 40 bytes.
    unsafe { libc::ioctl(fd, cmd, r as *mut IfReq) == 0 }
}

fn attach(fd: RawFd, name: &str, flags: i16) {
    if !ioctl_req(fd, TUNSETIFF, &mut req(name, flags)) {
        die(&format!("TUNSETIFF {name}"));
    }
}

/// The files and the link each is on (None: attached to nothing).
fn make() -> Vec<(RawFd, Option<&'static str>)> {
    let free = open_tun();
    let tun = open_tun();
    attach(tun, "tunk0", IFF_TUN);
    let (q0, q1) = (open_tun(), open_tun());
    attach(q0, "tunk1", IFF_TUN | IFF_MULTI_QUEUE);
    attach(q1, "tunk1", IFF_TUN | IFF_MULTI_QUEUE);
    if !ioctl_req(q1, TUNSETQUEUE, &mut req("", IFF_DETACH_QUEUE)) {
        die("detach the queue");
    }
    let tap = open_tun();
    attach(tap, "tapk0", IFF_TAP | IFF_NO_PI);
    let p = open_tun();
    attach(p, "ptapk0", IFF_TAP);
    // SAFETY: TUNSETPERSIST takes an integer; `p` is ours to close.
    unsafe {
        if libc::ioctl(p, TUNSETPERSIST, 1) != 0 {
            die("TUNSETPERSIST");
        }
        libc::close(p);
    }
    vec![
        (free, None),
        (tun, Some("tunk0")),
        (q0, Some("tunk1")),
        (q1, Some("tunk1")),
        (tap, Some("tapk0")),
    ]
}

fn unshare_net() {
    // SAFETY: unshare takes an integer.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        die("unshare(CLONE_NEWNET)");
    }
}

/// The checks that read /proc of the holder `pid`.
fn check_proc(pid: &str, fds: &[(RawFd, Option<&str>)]) -> Result<(), String> {
    for (fd, want) in fds {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .map_err(|e| format!("fdinfo {fd}: {e}"))?;
        let iff = info
            .lines()
            .find_map(|l| l.strip_prefix("iff:"))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        ensure!(iff == *want, "fd {fd} is on {iff:?}, not {want:?}");
    }
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map_err(|e| format!("net/dev: {e}"))?;
    ensure!(dev.contains("ptapk0:"), "the persistent tap is gone: {dev}");
    Ok(())
}

/// The checks the holder makes on its own files.
fn check_own(fds: &[(RawFd, Option<&str>)]) -> Result<(), String> {
    let fd = |i: usize| fds.get(i).map_or(-1, |f| f.0);
    ensure!(
        ioctl_req(fd(3), TUNSETQUEUE, &mut req("", IFF_ATTACH_QUEUE)),
        "the detached queue does not attach again"
    );
    ensure!(
        ioctl_req(fd(0), TUNSETIFF, &mut req("tunk9", IFF_TUN)),
        "the unattached file does not take a link"
    );
    Ok(())
}

fn main() {
    let args = start();
    let mode = args.opt("where").unwrap_or("own").to_string();
    let sock = args.num("sock", 0) == 1;
    if mode != "host" {
        unshare_net();
    }
    if mode == "host" {
        // An unattached file only: nothing is made in the host's namespace.
        let fd = open_tun();
        ready(&args);
        wait_for_term(10, || {});
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        finish(
            &args,
            if info.contains("flags") {
                Ok(())
            } else {
                Err(format!("fd {fd} is gone"))
            },
        );
    }
    if mode != "sub" {
        let fds = make();
        ready(&args);
        wait_for_term(10, || {});
        let me = std::process::id().to_string();
        finish(&args, check_proc(&me, &fds).and_then(|_| check_own(&fds)));
    }
    let mut p = [0; 2];
    // SAFETY: `p` has room for two fds.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    // SAFETY: the child runs only async-signal-safe calls and the test's own.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: plain syscalls on our own fds.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        unshare_net();
        let fds = make();
        if sock {
            // A socket of the child's namespace, made again in it.
            // SAFETY: socket takes integers; the fd stays open.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        }
        let n: Vec<String> = fds.iter().map(|f| f.0.to_string()).collect();
        let line = format!("{}\n", n.join(" "));
        // SAFETY: writes a buffer we own, closes our fds, then waits.
        unsafe {
            libc::write(p[1], line.as_ptr().cast(), line.len());
            libc::close(p[1]);
            libc::close(p[0]);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closes our own write end.
    unsafe { libc::close(p[1]) };
    let mut buf = [0u8; 128];
    // SAFETY: reads into a buffer we own.
    let n = unsafe { libc::read(p[0], buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        die("the child did not start");
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]).to_string();
    let want = [
        None,
        Some("tunk0"),
        Some("tunk1"),
        Some("tunk1"),
        Some("tapk0"),
    ];
    let fds: Vec<(RawFd, Option<&str>)> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .zip(want)
        .collect();
    ready(&args);
    wait_for_term(10, || {});
    let verdict = check_proc(&child.to_string(), &fds);
    // SAFETY: the child is ours.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict);
}
