//! `container --root DIR`: the init of a "container without a runtime"
//! (issue 13). Started by `unshare --fork --pid --mount --uts --ipc --net
//! --mount-proc [--time ...] DIR/bin/container --root DIR --ready /ready
//! --result /result` (the ready and result files are inside DIR), it
//! must be pid 1 of its pid namespace, and:
//! - makes every mount private, binds DIR over itself and pivots into it
//!   (DIR must hold `bin/container`, `dev/null`, `old`, `proc`, `tmp`,
//!   `data/data.txt`, `bind`, `ro`), detaching the old root; mounts a proc
//!   of its own, puts its stdio on `/dev/null` and runs itself again from `/bin/container` (`--stage 2`);
//! - starts a session of its own; sets the host name `crust-ctr` and domain name `ctr.local`;
//! - mounts a tmpfs on `/tmp` holding `/tmp/hello` and `/tmp/sub/f`;
//! - binds `/data` on `/bind` (read-write) and on `/ro`, remounted
//!   read-only;
//! - makes a POSIX message queue `/ctr-q` holding (5, "five"), (1, "one"),
//!   (5, "five-b");
//! - makes a System V segment (key 0x43545201, 2 pages) with a pattern,
//!   attached;
//! - listens on TCP port 7777 (any address); a forked child accepts one
//!   connection and echoes what it reads until the peer closes.
//!
//! After SIGTERM it checks all of it (with `--mq-may-vanish 1` the queue
//! may be gone: CRIU 4.2 has no image for it) (and that its clocks never went
//! back), stops the child and writes its verdict.

use crust_testprogs::{cpath, die, finish, ready, sleep_ms, start, term_requested};
use std::path::Path;

const SHM_KEY: i32 = 0x4354_5201;
const SHM_SIZE: usize = 8192;
const PORT: u16 = 7777;
const MQ: &std::ffi::CStr = c"/ctr-q";
const MQ_MSGS: [(u32, &str); 3] = [(5, "five"), (1, "one"), (5, "five-b")];
const MQ_ORDER: [(u32, &str); 3] = [(5, "five"), (5, "five-b"), (1, "one")];

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) {
    let (s, t, f, d) = (
        cpath(Path::new(src)),
        cpath(Path::new(target)),
        cpath(Path::new(fstype)),
        cpath(Path::new(data)),
    );
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            if src.is_empty() {
                std::ptr::null()
            } else {
                s.as_ptr()
            },
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
        die(&format!("mount {src} on {target} ({fstype})"));
    }
}

fn enter_root(root: &str) {
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "");
    mount(root, root, "", libc::MS_BIND, "");
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
    // A proc of its own while the old root's is still in sight (in a user
    // namespace the kernel wants a fully visible proc already mounted).
    mount("proc", "/proc", "proc", 0, "");
    // SAFETY: NUL-terminated paths that outlive the calls.
    unsafe {
        if libc::chdir(c"/".as_ptr()) != 0 || libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH) != 0
        {
            die("detach the old root");
        }
    }
    // Stdio on the container's own /dev/null, as a runtime gives it (the
    // launcher's files are not in this mount namespace).
    // SAFETY: a NUL-terminated path; dup2 and close take fds only.
    unsafe {
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

/// Run the program again from the new root (as a runtime starts a
/// container's init: its executable on the container's own mount), with
/// `--stage 2` added.
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
    unsafe { libc::execv(c"/bin/container".as_ptr(), ptrs.as_ptr()) };
    die("execv /bin/container")
}

fn set_names() {
    let (h, d) = ("crust-ctr", "ctr.local");
    // SAFETY: buffers of the lengths given, borrowed for the calls.
    unsafe {
        if libc::sethostname(h.as_ptr().cast(), h.len()) != 0
            || libc::setdomainname(d.as_ptr().cast(), d.len()) != 0
        {
            die("sethostname");
        }
    }
}

fn make_files() {
    mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m,mode=1777");
    let ok = std::fs::write("/tmp/hello", "hello from the tmpfs").is_ok()
        && std::fs::create_dir("/tmp/sub").is_ok()
        && std::fs::write("/tmp/sub/f", "sub file").is_ok();
    if !ok {
        die("files on the tmpfs");
    }
    mount("/data", "/bind", "", libc::MS_BIND, "");
    mount("/data", "/ro", "", libc::MS_BIND, "");
    mount(
        "",
        "/ro",
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    );
}

fn make_queue() {
    // SAFETY: mq_attr is plain old data; zero is valid.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 4;
    attr.mq_msgsize = 32;
    // SAFETY: a NUL-terminated name and an mq_attr borrowed for the call.
    let q = unsafe {
        libc::mq_open(
            MQ.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o600,
            &mut attr,
        )
    };
    if q < 0 {
        die("mq_open");
    }
    for (prio, text) in MQ_MSGS {
        // SAFETY: a buffer of text.len() bytes borrowed for the call.
        if unsafe { libc::mq_send(q, text.as_ptr().cast(), text.len(), prio) } != 0 {
            die("mq_send");
        }
    }
    // SAFETY: closing the queue just opened; it stays in the namespace.
    unsafe { libc::mq_close(q) };
}

fn shm_byte(i: usize) -> u8 {
    (i * 13 + 5) as u8
}

fn make_segment() -> *mut u8 {
    // SAFETY: shmget/shmat take no pointers but a null address hint.
    let p = unsafe {
        let id = libc::shmget(SHM_KEY, SHM_SIZE, libc::IPC_CREAT | 0o600);
        if id < 0 {
            die("shmget");
        }
        libc::shmat(id, std::ptr::null(), 0)
    };
    if p as isize == -1 {
        die("shmat");
    }
    let p = p.cast::<u8>();
    for i in 0..SHM_SIZE {
        // SAFETY: i is inside the SHM_SIZE bytes just attached.
        unsafe { *p.add(i) = shm_byte(i) };
    }
    p
}

/// Listen on PORT and fork the echo server; its pid.
fn serve() -> i32 {
    let l = std::net::TcpListener::bind(("0.0.0.0", PORT)).unwrap_or_else(|_| die("bind 7777"));
    // SAFETY: fork in a single-threaded program; the child only serves.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        use std::io::{Read, Write};
        let Ok((mut s, _)) = l.accept() else {
            std::process::exit(3)
        };
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => std::process::exit(0),
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        std::process::exit(4);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::process::exit(5),
            }
        }
    }
    child
}

fn monotonic() -> f64 {
    // SAFETY: a timespec filled by the call.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn check_names() -> Result<(), String> {
    // SAFETY: utsname is plain old data, filled by uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::uname(&mut u) };
    // SAFETY: uname fills NUL-terminated strings.
    let (h, d) = unsafe {
        (
            std::ffi::CStr::from_ptr(u.nodename.as_ptr())
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(u.domainname.as_ptr())
                .to_string_lossy()
                .into_owned(),
        )
    };
    need(
        h == "crust-ctr" && d == "ctr.local",
        format!("names are {h:?} / {d:?}"),
    )
}

fn check_files() -> Result<(), String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"));
    need(
        read("/tmp/hello") == "hello from the tmpfs",
        format!("/tmp/hello: {:?}", read("/tmp/hello")),
    )?;
    need(
        read("/tmp/sub/f") == "sub file",
        "/tmp/sub/f lost".to_string(),
    )?;
    need(
        read("/bind/data.txt") == "data\n",
        format!("/bind/data.txt: {:?}", read("/bind/data.txt")),
    )?;
    need(
        read("/ro/data.txt") == "data\n",
        "/ro/data.txt lost".to_string(),
    )?;
    need(
        std::fs::write("/bind/w", "w").is_ok(),
        "/bind is not writable".to_string(),
    )?;
    let _ = std::fs::remove_file("/bind/w");
    let e = std::fs::write("/ro/w", "w")
        .err()
        .and_then(|e| e.raw_os_error());
    need(
        e == Some(libc::EROFS),
        format!("a write to /ro gives {e:?}, not EROFS"),
    )
}

/// `may_vanish`: a restore by CRIU 4.2, or from CRIU's images, has no
/// queues (CRIU has no image for them); one that is there must be whole.
fn check_queue(may_vanish: bool) -> Result<(), String> {
    // SAFETY: a NUL-terminated name; no O_CREAT.
    let q = unsafe { libc::mq_open(MQ.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    if q < 0 && may_vanish {
        return Ok(());
    }
    need(q >= 0, "/ctr-q is gone".to_string())?;
    let mut buf = [0u8; 32];
    for (i, (prio, text)) in MQ_ORDER.iter().enumerate() {
        let mut p = 0u32;
        // SAFETY: a 32-byte buffer (the queue's msgsize) and a u32.
        let n = unsafe { libc::mq_receive(q, buf.as_mut_ptr().cast(), 32, &mut p) };
        need(n >= 0, format!("/ctr-q: message {i} missing"))?;
        let got = &buf[..n as usize];
        need(
            p == *prio && got == text.as_bytes(),
            format!("/ctr-q: message {i} is ({p}, {got:?})"),
        )?;
    }
    // SAFETY: closing the queue opened above.
    unsafe { libc::mq_close(q) };
    Ok(())
}

fn check_segment(p: *mut u8) -> Result<(), String> {
    for i in 0..SHM_SIZE {
        // SAFETY: the segment stays attached at p for the program's life.
        let b = unsafe { *p.add(i) };
        need(b == shm_byte(i), format!("segment byte {i} is {b}"))?;
    }
    Ok(())
}

fn main() {
    let args = start();
    // SAFETY: getpid takes nothing.
    if unsafe { libc::getpid() } != 1 {
        die("not the init of a pid namespace");
    }
    if args.num("stage", 1) == 1 {
        let root = args.path("root");
        enter_root(&root.to_string_lossy());
        reexec();
    }
    // A session of its own, as a runtime starts an init (CRIU refuses a
    // session leader outside the pid namespace).
    // SAFETY: setsid takes nothing.
    unsafe { libc::setsid() };
    set_names();
    make_files();
    make_queue();
    let seg = make_segment();
    let child = serve();
    let mut last = monotonic();
    let mut back = false;
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
        let now = monotonic();
        back |= now < last;
        last = now;
    }
    let verdict = need(!back, "CLOCK_MONOTONIC went back".to_string())
        .and_then(|()| check_names())
        .and_then(|()| check_files())
        .and_then(|()| check_queue(args.num("mq-may-vanish", 0) == 1))
        .and_then(|()| check_segment(seg))
        .and_then(|()| {
            // SAFETY: signal 0 only checks the child exists.
            let alive = unsafe { libc::kill(child, 0) } == 0;
            need(alive, "the echo child is gone".to_string())
        });
    // SAFETY: stopping the child this program forked.
    unsafe { libc::kill(child, libc::SIGKILL) };
    finish(&args, verdict);
}

fn need(ok: bool, why: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}
