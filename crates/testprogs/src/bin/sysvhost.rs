//! `sysvhost`: System V objects in the host's IPC namespace (the program's
//! own is the one it was started in) that only this tree uses, which crust
//! dumps, removes with the tree and makes again at restore.
//!
//! `--kinds` (default `shm,sem,msg`) says which to make:
//! - shm: segment A (a key, 2 pages + 16 bytes, mode 0640, a pattern)
//!   attached at ADDR_A, its page 1 made read-only (two more VMAs), and
//!   shared with a forked child that writes into it; segment P
//!   (IPC_PRIVATE, one page of 0x5A) made, filled and detached by the
//!   program: attached by no one.
//! - sem: a set of 3 (a key, mode 0600) holding 5, 1, 42 after a semop.
//! - msg: queue Q (a key, mode 0620) holding messages of types 1, 7, 3
//!   with 5, 1000 and 0 bytes; queue E (IPC_PRIVATE) used and empty.
//!
//! Keys are made from the program's pid. The ids go to `--ids FILE`
//! (lines "shm ID", "sem ID", "msg ID") for the test to check and clean.
//!
//! `--outside shm|sem|msg`: a process outside the tree (a grandchild whose
//! parent exits, so it is reparented away) uses the segment A / the set /
//! queue Q too; its pid goes to `--outside-pid FILE`. crust must refuse the
//! dump naming it.
//!
//! After SIGTERM it checks ids (key lookups), sizes, modes, contents,
//! values and messages in order, that the child still shares segment A,
//! then removes every object it made, pass or fail.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU32, Ordering};

const SIZE_A: usize = 2 * 4096 + 16;
const ADDR_A: usize = 0x2100_0000_0000;
/// Offsets in segment A: the child's write, the parent's request flag.
const CHILD_AT: usize = 2 * 4096;
const FLAG_AT: usize = 2 * 4096 + 8;

fn pattern(i: usize) -> u8 {
    (i * 13 + 1) as u8
}

fn big_text() -> Vec<u8> {
    (0..1000).map(|i| (i % 241) as u8).collect()
}

fn msgs() -> Vec<(i64, Vec<u8>)> {
    vec![(1, b"first".to_vec()), (7, big_text()), (3, Vec::new())]
}

fn flag() -> &'static AtomicU32 {
    // SAFETY: FLAG_AT is 4-byte aligned inside segment A, attached
    // read-write at ADDR_A for the life of both processes.
    unsafe { &*((ADDR_A + FLAG_AT) as *const AtomicU32) }
}

fn mem(addr: usize, len: usize) -> &'static mut [u8] {
    // SAFETY: callers pass where a segment of at least `len` bytes is
    // attached for the program's life.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

fn send(q: i32, mtype: i64, text: &[u8]) {
    let mut buf = mtype.to_ne_bytes().to_vec();
    buf.extend_from_slice(text);
    // SAFETY: `buf` is a msgbuf: the type, then the text.
    if unsafe { libc::msgsnd(q, buf.as_ptr().cast(), text.len(), 0) } != 0 {
        die("msgsnd");
    }
}

fn semop(s: i32, num: u16, op: i16) {
    let mut b = libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: 0,
    };
    // SAFETY: one sembuf, readable across the call.
    if unsafe { libc::semop(s, &mut b, 1) } != 0 {
        die("semop");
    }
}

/// The objects made (-1: not made).
#[derive(Clone, Copy)]
struct Objs {
    shm_a: i32,
    shm_p: i32,
    sem: i32,
    msg_q: i32,
    msg_e: i32,
    keys: [i32; 3],
}

fn make(kinds: &str, keys: [i32; 3]) -> Objs {
    let mut o = Objs {
        shm_a: -1,
        shm_p: -1,
        sem: -1,
        msg_q: -1,
        msg_e: -1,
        keys,
    };
    let excl = libc::IPC_CREAT | libc::IPC_EXCL;
    // SAFETY: plain syscalls with integer arguments, fixed addresses
    // nothing else uses, and buffers that live across each call.
    unsafe {
        if kinds.contains("shm") {
            o.shm_a = libc::shmget(keys[0], SIZE_A, excl | 0o640);
            if o.shm_a < 0 || libc::shmat(o.shm_a, ADDR_A as *const _, 0) as usize != ADDR_A {
                die("segment A");
            }
            for (i, b) in mem(ADDR_A, 2 * 4096).iter_mut().enumerate() {
                *b = pattern(i);
            }
            if libc::mprotect((ADDR_A + 4096) as *mut _, 4096, libc::PROT_READ) != 0 {
                die("mprotect A");
            }
            o.shm_p = libc::shmget(libc::IPC_PRIVATE, 4096, excl | 0o600);
            let p = libc::shmat(o.shm_p, std::ptr::null(), 0);
            if o.shm_p < 0 || p as isize == -1 {
                die("segment P");
            }
            std::ptr::write_bytes(p as *mut u8, 0x5A, 4096);
            libc::shmdt(p);
        }
        if kinds.contains("sem") {
            o.sem = libc::semget(keys[1], 3, excl | 0o600);
            let vals: [u16; 3] = [5, 0, 42];
            if o.sem < 0 || libc::semctl(o.sem, 0, libc::SETALL, vals.as_ptr()) != 0 {
                die("semaphores");
            }
            semop(o.sem, 1, 1);
        }
        if kinds.contains("msg") {
            o.msg_q = libc::msgget(keys[2], excl | 0o620);
            o.msg_e = libc::msgget(libc::IPC_PRIVATE, excl | 0o600);
            if o.msg_q < 0 || o.msg_e < 0 {
                die("msgget");
            }
            for (t, text) in msgs() {
                send(o.msg_q, t, &text);
            }
            send(o.msg_e, 9, b"gone");
            let mut buf = [0u8; 64];
            if libc::msgrcv(o.msg_e, buf.as_mut_ptr().cast(), 56, 0, 0) < 0 {
                die("msgrcv E");
            }
        }
    }
    o
}

fn remove(o: &Objs) {
    // SAFETY: IPC_RMID of the objects this program made; a null buffer is
    // allowed.
    unsafe {
        for id in [o.shm_a, o.shm_p] {
            if id >= 0 {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
        if o.sem >= 0 {
            libc::semctl(o.sem, 0, libc::IPC_RMID);
        }
        for id in [o.msg_q, o.msg_e] {
            if id >= 0 {
                libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

/// The child sharing segment A: writes into it, then waits for the
/// parent's request (flag 1) to check and answer (2 ok, 3 bad).
fn child_loop(parent: i32) -> ! {
    mem(ADDR_A, SIZE_A)[CHILD_AT..CHILD_AT + 5].copy_from_slice(b"child");
    loop {
        // SAFETY: getppid has no arguments.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(0);
        }
        if flag().load(Ordering::SeqCst) == 1 {
            let ok = (0..2 * 4096).all(|i| mem(ADDR_A, SIZE_A)[i] == pattern(i));
            flag().store(if ok { 2 } else { 3 }, Ordering::SeqCst);
            std::process::exit(0);
        }
        sleep_ms(10);
    }
}

/// A process outside the tree that uses `what` of `o`: a grandchild whose
/// parent exits at once. Returns its pid.
fn outside_user(what: &str, o: &Objs) -> i32 {
    let mut p = [0i32; 2];
    // SAFETY: a pipe for the grandchild's pid; fork in a single-threaded
    // program; the children only make syscalls and exit.
    unsafe {
        if libc::pipe(p.as_mut_ptr()) != 0 {
            die("pipe");
        }
        if libc::fork() == 0 {
            let g = libc::fork();
            if g == 0 {
                libc::setsid();
                match what {
                    "sem" => {
                        semop(o.sem, 2, 1);
                        semop(o.sem, 2, -1);
                    }
                    "msg" => send(o.msg_q, 5, b"outside"),
                    _ => {} // keeps segment A attached
                }
                loop {
                    libc::pause();
                }
            }
            libc::write(p[1], (&g as *const i32).cast(), 4);
            libc::_exit(0);
        }
        let mut g = 0i32;
        libc::read(p[0], (&mut g as *mut i32).cast(), 4);
        libc::wait(std::ptr::null_mut());
        g
    }
}

fn main() {
    let args = start();
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    let base = 0x5300_0000 | ((me & 0xffff) << 4);
    let kinds = args.opt("kinds").unwrap_or("shm,sem,msg").to_string();
    let o = make(&kinds, [base | 1, base | 2, base | 3]);
    if let Some(f) = args.opt("ids") {
        let text = format!(
            "shm {}\nshm {}\nsem {}\nmsg {}\nmsg {}\n",
            o.shm_a, o.shm_p, o.sem, o.msg_q, o.msg_e
        );
        if std::fs::write(f, text).is_err() {
            die("write --ids");
        }
    }
    let mut child = 0;
    if o.shm_a >= 0 {
        // SAFETY: fork in a single-threaded program; the child only
        // touches segment A and exits.
        child = unsafe { libc::fork() };
        if child < 0 {
            die("fork");
        }
        if child == 0 {
            child_loop(me);
        }
        while &mem(ADDR_A, SIZE_A)[CHILD_AT..CHILD_AT + 5] != b"child" {
            sleep_ms(5);
        }
    }
    if let Some(what) = args.opt("outside") {
        let g = outside_user(what, &o);
        if let Some(f) = args.opt("outside-pid") {
            let _ = std::fs::write(f, format!("{g}\n"));
        }
    }
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check(&o, child);
    remove(&o);
    finish(&args, verdict);
}

fn check(o: &Objs, child: i32) -> Result<(), String> {
    // SAFETY: lookups by key, stats into zeroed structs, reads of attached
    // memory; every result is checked.
    unsafe {
        if o.shm_a >= 0 {
            let id = libc::shmget(o.keys[0], 0, 0);
            ensure!(
                id == o.shm_a,
                "segment A: key lookup gives {id}, had {}",
                o.shm_a
            );
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            ensure!(libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0, "shmctl A");
            ensure!(
                ds.shm_segsz == SIZE_A,
                "segment A has size {}",
                ds.shm_segsz
            );
            ensure!(
                ds.shm_perm.mode & 0o777 == 0o640,
                "segment A mode {:o}",
                ds.shm_perm.mode
            );
            // Three VMAs in each of the two processes.
            ensure!(
                ds.shm_nattch == 6,
                "segment A has {} attachments, not 6",
                ds.shm_nattch
            );
            let bad = (0..2 * 4096).find(|&i| mem(ADDR_A, SIZE_A)[i] != pattern(i));
            ensure!(bad.is_none(), "segment A byte {bad:?} changed");
            ensure!(
                &mem(ADDR_A, SIZE_A)[CHILD_AT..CHILD_AT + 5] == b"child",
                "the child's write is gone"
            );
            let p = libc::shmat(o.shm_p, std::ptr::null(), libc::SHM_RDONLY);
            ensure!(
                p as isize != -1,
                "segment P: {}",
                std::io::Error::last_os_error()
            );
            let ok = std::slice::from_raw_parts(p as *const u8, 4096)
                .iter()
                .all(|&b| b == 0x5A);
            libc::shmdt(p);
            ensure!(ok, "segment P changed");
            flag().store(1, Ordering::SeqCst);
            let mut n = 0;
            while flag().load(Ordering::SeqCst) == 1 && n < 500 {
                sleep_ms(10);
                n += 1;
            }
            libc::waitpid(child, std::ptr::null_mut(), 0);
            let f = flag().load(Ordering::SeqCst);
            ensure!(
                f == 2,
                "the child answered {f} (1: nothing, 3: it saw other contents)"
            );
        }
        if o.sem >= 0 {
            let id = libc::semget(o.keys[1], 0, 0);
            ensure!(
                id == o.sem,
                "semaphores: key lookup gives {id}, had {}",
                o.sem
            );
            let mut v = [0u16; 3];
            ensure!(
                libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) == 0,
                "GETALL"
            );
            ensure!(v == [5, 1, 42], "semaphore values {v:?}");
            semop(id, 1, -1);
        }
        if o.msg_q >= 0 {
            let id = libc::msgget(o.keys[2], 0);
            ensure!(
                id == o.msg_q,
                "queue Q: key lookup gives {id}, had {}",
                o.msg_q
            );
            for (mtype, text) in msgs() {
                let mut buf = vec![0u8; 8 + 2000];
                let n = libc::msgrcv(id, buf.as_mut_ptr().cast(), 2000, 0, libc::IPC_NOWAIT);
                ensure!(n >= 0, "msgrcv: {}", std::io::Error::last_os_error());
                let got = i64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
                ensure!(got == mtype, "message of type {got}, expected {mtype}");
                ensure!(
                    buf[8..8 + n as usize] == text[..],
                    "message {mtype}: wrong text"
                );
            }
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            ensure!(
                libc::msgctl(o.msg_e, libc::IPC_STAT, &mut ds) == 0,
                "queue E is gone"
            );
            ensure!(ds.msg_qnum == 0, "queue E holds {} messages", ds.msg_qnum);
        }
    }
    Ok(())
}
