//! `posixmq`: POSIX message queues in an IPC namespace of the program's own
//! (it unshares CLONE_NEWIPC first, unless `--own-ipc 0`), closed before
//! READY (they stay in the namespace), which crust dumps and restores.
//!
//! - `/crust-mq-a`: mode 0640, room for 5 messages of up to 64 bytes,
//!   holding (priority, text) (3, "three-a"), (1, "one"), (3, "three-b"),
//!   (7, "seven"), (0, "") sent in that order.
//! - `/crust-mq-b`: mode 0604, 2 messages of up to 16 bytes, empty, owned
//!   by uid 1234, gid 5678.
//!
//! With `--held 1` the program keeps `/crust-mq-a` open (a descriptor crust
//! refuses). After SIGTERM it checks each queue's limits, mode, owner and
//! messages (received in priority order: seven, three-a, three-b, one, "")
//! and that a queue still takes and gives a message.

use crust_testprogs::{die, finish, ready, sleep_ms, start, term_requested};
use std::ffi::CStr;

const A: &CStr = c"/crust-mq-a";
const B: &CStr = c"/crust-mq-b";
const SENT: [(u32, &str); 5] = [
    (3, "three-a"),
    (1, "one"),
    (3, "three-b"),
    (7, "seven"),
    (0, ""),
];
const EXPECTED: [(u32, &str); 5] = [
    (7, "seven"),
    (3, "three-a"),
    (3, "three-b"),
    (1, "one"),
    (0, ""),
];

fn open(name: &CStr, flags: i32, mode: u32, maxmsg: i64, msgsize: i64) -> libc::mqd_t {
    // SAFETY: mq_attr is plain old data; zero is valid.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    // SAFETY: a NUL-terminated name and an mq_attr borrowed for the call.
    unsafe { libc::mq_open(name.as_ptr(), flags, mode as libc::mode_t, &mut attr) }
}

fn make_queues(held: bool) -> Option<libc::mqd_t> {
    // SAFETY: umask takes a mode only.
    unsafe { libc::umask(0) };
    let a = open(A, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o640, 5, 64);
    if a < 0 {
        die("mq_open /crust-mq-a");
    }
    for (prio, text) in SENT {
        // SAFETY: a buffer of text.len() bytes borrowed for the call.
        if unsafe { libc::mq_send(a, text.as_ptr().cast(), text.len(), prio) } != 0 {
            die("mq_send");
        }
    }
    let b = open(B, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o604, 2, 16);
    if b < 0 {
        die("mq_open /crust-mq-b");
    }
    // SAFETY: fchown on the queue descriptor just opened (an fd on Linux).
    if unsafe { libc::fchown(b, 1234, 5678) } != 0 {
        die("fchown /crust-mq-b");
    }
    // SAFETY: closing the queue just opened; it stays in the namespace.
    unsafe { libc::mq_close(b) };
    if held {
        return Some(a);
    }
    // SAFETY: as above.
    unsafe { libc::mq_close(a) };
    None
}

fn check_queue(
    name: &CStr,
    mode: u32,
    owner: (u32, u32),
    limits: (i64, i64),
    msgs: &[(u32, &str)],
) -> Result<(), String> {
    let n = name.to_string_lossy();
    let q = open(name, libc::O_RDWR | libc::O_NONBLOCK, 0, 0, 0);
    if q < 0 {
        return Err(format!("{n} is gone: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: plain old data, filled by the calls below.
    let (mut attr, mut st): (libc::mq_attr, libc::stat) = unsafe { std::mem::zeroed() };
    // SAFETY: writable structs borrowed for the calls; q is open.
    if unsafe { libc::mq_getattr(q, &mut attr) } != 0 || unsafe { libc::fstat(q, &mut st) } != 0 {
        return Err(format!("{n}: mq_getattr/fstat failed"));
    }
    if (attr.mq_maxmsg, attr.mq_msgsize) != limits || attr.mq_curmsgs != msgs.len() as i64 {
        return Err(format!(
            "{n}: maxmsg {} msgsize {} curmsgs {}, want {limits:?} and {}",
            attr.mq_maxmsg,
            attr.mq_msgsize,
            attr.mq_curmsgs,
            msgs.len()
        ));
    }
    if st.st_mode & 0o7777 != mode || (st.st_uid, st.st_gid) != owner {
        return Err(format!(
            "{n}: mode {:o} owner {}:{}, want {mode:o} {owner:?}",
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid
        ));
    }
    let mut buf = vec![0u8; limits.1 as usize];
    for (i, (prio, text)) in msgs.iter().enumerate() {
        let mut p: u32 = 0;
        // SAFETY: a writable buffer of msgsize bytes and a u32 borrowed for
        // the call.
        let r = unsafe { libc::mq_receive(q, buf.as_mut_ptr().cast(), buf.len(), &mut p) };
        if r < 0 {
            return Err(format!("{n}: message {i} missing"));
        }
        let got = &buf[..r as usize];
        if p != *prio || got != text.as_bytes() {
            return Err(format!(
                "{n}: message {i} is ({p}, {:?}), want ({prio}, {text:?})",
                String::from_utf8_lossy(got)
            ));
        }
    }
    // Still a working queue: one message in, the same out.
    // SAFETY: buffers borrowed for the calls; q is open.
    let ok = unsafe {
        libc::mq_send(q, c"after".as_ptr(), 5, 2) == 0
            && libc::mq_receive(q, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut()) == 5
    };
    // SAFETY: closing the queue opened above.
    unsafe { libc::mq_close(q) };
    if !ok || &buf[..5] != b"after" {
        return Err(format!(
            "{n}: a message sent after the restore did not come back"
        ));
    }
    Ok(())
}

fn main() {
    let args = start();
    // SAFETY: unshare takes flags only.
    if args.num("own-ipc", 1) == 1 && unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
        die("unshare(CLONE_NEWIPC)");
    }
    let held = make_queues(args.num("held", 0) == 1);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check_queue(A, 0o640, (0, 0), (5, 64), &EXPECTED)
        .and_then(|()| check_queue(B, 0o604, (1234, 5678), (2, 16), &[]));
    if let Some(q) = held {
        // SAFETY: closing the queue this program kept open.
        unsafe { libc::mq_close(q) };
    }
    finish(&args, verdict);
}
