//! `sysvipc`: System V IPC objects in an IPC namespace of the program's own
//! (it unshares CLONE_NEWIPC first), which crust dumps and restores.
//!
//! - Segment A (key KEY_SHM, 3 pages + 100 bytes, mode 0640): a pattern in
//!   page 0-1, page 2 left empty, attached read-write at ADDR_A and
//!   read-only at ADDR_RO; a forked child shares the attachment and writes
//!   into page 3 before READY.
//! - Segment B (IPC_PRIVATE, one page of 0xAB) attached at ADDR_B and
//!   marked for removal (IPC_RMID).
//! - Segment C (key KEY_SHM_C, one page of 0xCD) attached by no one.
//! - A semaphore set of 3 (key KEY_SEM) holding 5, 0, 42.
//! - A message queue (key KEY_MSG) holding messages of types 1, 7 and 3
//!   with 5, 1000 and 0 bytes of text.
//!
//! With `--mqueue 1` it also holds a POSIX message queue open (which crust
//! refuses); with `--mqueue 2` it makes one and closes it (the queue stays
//! in its IPC namespace: crust dumps it, see `posixmq`); with `--child-ns 1` the child moves to an IPC namespace of its
//! own (a tree in two IPC namespaces, which crust refuses).
//!
//! After SIGTERM it checks ids, keys, modes, contents, values and messages
//! (received in order), then writes into segment A and asks the child (a
//! flag in segment A) to check what it sees and answer there: both must
//! see each other's writes made after the restore.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};

const KEY_SHM: i32 = 0x5157_0001;
const KEY_SEM: i32 = 0x5157_0002;
const KEY_MSG: i32 = 0x5157_0003;
const KEY_SHM_C: i32 = 0x5157_0004;
const SIZE_A: usize = 3 * 4096 + 100;
const ADDR_A: usize = 0x2000_0000_0000;
const ADDR_RO: usize = 0x2000_0010_0000;
const ADDR_B: usize = 0x2000_0020_0000;
/// Offsets in segment A.
const CHILD_BEFORE: usize = 3 * 4096;
const PARENT_AFTER: usize = 3 * 4096 + 32;
const CHILD_AFTER: usize = 3 * 4096 + 64;
/// The parent's request (1) and the child's answer (2 ok, 3 bad).
const FLAG: usize = 3 * 4096 + 96;

fn pattern(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

fn big_text() -> Vec<u8> {
    (0..1000).map(|i| (i % 253) as u8).collect()
}

/// A byte slice of attached memory.
fn mem(addr: usize, len: usize) -> &'static mut [u8] {
    // SAFETY: callers pass an address where a segment of at least `len`
    // bytes is attached for the program's life.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

/// `len` bytes at `addr`, read afresh (another process writes there).
fn fresh(addr: usize, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: callers pass a range inside an attached segment.
        .map(|i| unsafe { std::ptr::read_volatile((addr + i) as *const u8) })
        .collect()
}

fn flag() -> &'static std::sync::atomic::AtomicU32 {
    // SAFETY: FLAG is 4-byte aligned inside segment A, attached read-write
    // at ADDR_A for the life of both processes.
    unsafe { &*((ADDR_A + FLAG) as *const std::sync::atomic::AtomicU32) }
}

fn shm_stat(id: i32) -> Result<libc::shmid_ds, String> {
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT writes one.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
            return Err(format!(
                "shmctl({id}, IPC_STAT): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(ds)
    }
}

fn child_loop(own_ns: bool, parent: i32) -> ! {
    // SAFETY: unshare takes a flag; the child is single-threaded.
    if own_ns && unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
        die("child unshare(CLONE_NEWIPC)");
    }
    mem(ADDR_A, SIZE_A)[CHILD_BEFORE..CHILD_BEFORE + 12].copy_from_slice(b"child-before");
    loop {
        // SAFETY: getppid has no arguments.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(0);
        }
        if flag().load(std::sync::atomic::Ordering::SeqCst) == 1 {
            let a = mem(ADDR_A, SIZE_A);
            let ok = fresh(ADDR_A + PARENT_AFTER, 12) == b"parent-after"
                && (0..2 * 4096).all(|i| a[i] == pattern(i));
            a[CHILD_AFTER..CHILD_AFTER + 11].copy_from_slice(b"child-after");
            flag().store(if ok { 2 } else { 3 }, std::sync::atomic::Ordering::SeqCst);
            std::process::exit(0);
        }
        sleep_ms(10);
    }
}

fn main() {
    let args = start();
    // SAFETY: plain syscalls with integer arguments and fixed addresses
    // that nothing else of the program uses; each result is checked.
    let (shm_a, shm_b, sem, msq) = unsafe {
        if libc::unshare(libc::CLONE_NEWIPC) != 0 {
            die("unshare(CLONE_NEWIPC)");
        }
        let a = libc::shmget(KEY_SHM, SIZE_A, libc::IPC_CREAT | 0o640);
        if a < 0 {
            die("shmget A");
        }
        if libc::shmat(a, ADDR_A as *const _, 0) as usize != ADDR_A {
            die("shmat A");
        }
        let b = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
        if b < 0 {
            die("shmget B");
        }
        if libc::shmat(b, ADDR_B as *const _, 0) as usize != ADDR_B {
            die("shmat B");
        }
        let s = libc::semget(KEY_SEM, 3, libc::IPC_CREAT | 0o600);
        if s < 0 {
            die("semget");
        }
        let vals: [u16; 3] = [5, 0, 42];
        if libc::semctl(s, 0, libc::SETALL, vals.as_ptr()) != 0 {
            die("semctl SETALL");
        }
        let q = libc::msgget(KEY_MSG, libc::IPC_CREAT | 0o620);
        if q < 0 {
            die("msgget");
        }
        (a, b, s, q)
    };
    let a = mem(ADDR_A, SIZE_A);
    for (i, b) in a.iter_mut().enumerate().take(2 * 4096) {
        *b = pattern(i);
    }
    mem(ADDR_B, 4096).fill(0xAB);
    // SAFETY: segment A is attached read-write at ADDR_A; ADDR_RO is free.
    unsafe {
        if libc::shmat(shm_a, ADDR_RO as *const _, libc::SHM_RDONLY) as usize != ADDR_RO {
            die("shmat A read-only");
        }
        // Page 1 of the read-write attachment made read-only (the VMA
        // splits in three), the last page of the read-only one unmapped.
        if libc::mprotect((ADDR_A + 4096) as *mut _, 4096, libc::PROT_READ) != 0 {
            die("mprotect A page 1");
        }
        if libc::munmap((ADDR_RO + 3 * 4096) as *mut _, 4096) != 0 {
            die("munmap read-only A page 3");
        }
        if libc::shmctl(shm_b, libc::IPC_RMID, std::ptr::null_mut()) != 0 {
            die("shmctl B IPC_RMID");
        }
    }
    for (mtype, text) in [(1i64, b"first".to_vec()), (7, big_text()), (3, Vec::new())] {
        let mut buf = mtype.to_ne_bytes().to_vec();
        buf.extend_from_slice(&text);
        // SAFETY: `buf` is a msgbuf: the type, then the text.
        if unsafe { libc::msgsnd(msq, buf.as_ptr().cast(), text.len(), 0) } != 0 {
            die("msgsnd");
        }
    }
    // SAFETY: segment C is attached wherever the kernel likes, filled
    // through its one page and detached again.
    unsafe {
        let c = libc::shmget(KEY_SHM_C, 4096, libc::IPC_CREAT | 0o600);
        if c < 0 {
            die("shmget C");
        }
        let p = libc::shmat(c, std::ptr::null(), 0);
        if p as isize == -1 {
            die("shmat C");
        }
        std::ptr::write_bytes(p as *mut u8, 0xCD, 4096);
        libc::shmdt(p);
    }
    // SAFETY: getpid has no arguments.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded program; the child only touches
    // the segment and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        child_loop(args.num("child-ns", 0) == 1, parent);
    }
    let mq_mode = args.num("mqueue", 0);
    let mq = if mq_mode >= 1 {
        let name = c"/crust-sysvipc";
        // SAFETY: a NUL-terminated name, flags, a mode and a null attr
        // (default limits).
        let q = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_RDWR,
                0o600 as libc::mode_t,
                std::ptr::null_mut::<libc::mq_attr>(),
            )
        };
        if q < 0 {
            die("mq_open");
        }
        if mq_mode == 2 {
            // SAFETY: closing the queue just opened; it stays in the
            // namespace.
            unsafe { libc::mq_close(q) };
            None
        } else {
            Some(q)
        }
    } else {
        None
    };
    while fresh(ADDR_A + CHILD_BEFORE, 12) != b"child-before" {
        sleep_ms(5);
    }
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = check(shm_a, shm_b, sem, msq, child);
    if let Some(q) = mq {
        // SAFETY: closing the queue this program opened.
        unsafe { libc::mq_close(q) };
    }
    finish(&args, verdict);
}

fn check(shm_a: i32, shm_b: i32, sem: i32, msq: i32, child: i32) -> Result<(), String> {
    // Ids and keys.
    // SAFETY: lookups by key with integer arguments.
    let (ga, gs, gq) = unsafe {
        (
            libc::shmget(KEY_SHM, 0, 0),
            libc::semget(KEY_SEM, 0, 0),
            libc::msgget(KEY_MSG, 0),
        )
    };
    ensure!(
        ga == shm_a,
        "segment A: key lookup gives id {ga}, had {shm_a}"
    );
    ensure!(gs == sem, "semaphores: key lookup gives id {gs}, had {sem}");
    ensure!(gq == msq, "queue: key lookup gives id {gq}, had {msq}");
    let ds = shm_stat(shm_a)?;
    ensure!(
        ds.shm_segsz == SIZE_A,
        "segment A has size {}",
        ds.shm_segsz
    );
    ensure!(
        ds.shm_perm.mode & 0o777 == 0o640,
        "segment A has mode {:o}",
        ds.shm_perm.mode
    );
    // The kernel counts VMAs: the read-write attachment split in three
    // and the read-only one, in the parent and the same in the child.
    ensure!(
        ds.shm_nattch == 8,
        "segment A has {} attachments, not 8",
        ds.shm_nattch
    );
    // Segment C: attached by no one, its contents kept.
    // SAFETY: a key lookup, then an attachment wherever the kernel likes,
    // read through its one page and detached.
    let c_ok = unsafe {
        let c = libc::shmget(KEY_SHM_C, 0, 0);
        ensure!(
            c >= 0,
            "segment C is gone: {}",
            std::io::Error::last_os_error()
        );
        let p = libc::shmat(c, std::ptr::null(), libc::SHM_RDONLY);
        ensure!(
            p as isize != -1,
            "shmat C: {}",
            std::io::Error::last_os_error()
        );
        let ok = std::slice::from_raw_parts(p as *const u8, 4096)
            .iter()
            .all(|&b| b == 0xCD);
        libc::shmdt(p);
        ok
    };
    ensure!(c_ok, "segment C changed");
    let db = shm_stat(shm_b)?;
    ensure!(
        db.shm_perm.mode as u32 & 0o1000 != 0,
        "segment B is no longer marked for removal (mode {:o})",
        db.shm_perm.mode
    );
    ensure!(
        db.shm_nattch == 2,
        "segment B has {} attachments, not 2",
        db.shm_nattch
    );
    // Contents.
    let a = mem(ADDR_A, SIZE_A);
    let bad = (0..2 * 4096).find(|&i| a[i] != pattern(i));
    ensure!(bad.is_none(), "segment A byte {bad:?} changed");
    ensure!(
        a[2 * 4096..3 * 4096].iter().all(|&b| b == 0),
        "segment A page 2 is not empty"
    );
    ensure!(
        a[CHILD_BEFORE..CHILD_BEFORE + 12] == *b"child-before",
        "the child's write is gone"
    );
    let ro = mem(ADDR_RO, 2 * 4096);
    ensure!(
        ro[..2 * 4096] == a[..2 * 4096],
        "the read-only attachment differs"
    );
    ensure!(
        mem(ADDR_B, 4096).iter().all(|&b| b == 0xAB),
        "segment B changed"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    for (at, end, perms) in [
        (ADDR_A, ADDR_A + 4096, "rw-s"),
        (ADDR_A + 4096, ADDR_A + 2 * 4096, "r--s"),
        (ADDR_A + 2 * 4096, ADDR_A + 4 * 4096, "rw-s"),
        (ADDR_RO, ADDR_RO + 3 * 4096, "r--s"),
        (ADDR_B, ADDR_B + 4096, "rw-s"),
    ] {
        let head = format!("{at:x}-{end:x} ");
        ensure!(
            maps.lines()
                .any(|l| l.starts_with(&head) && l.contains(perms) && l.contains("/SYSV")),
            "no {perms} System V mapping at {head}"
        );
    }
    // Semaphores.
    let mut vals = [0u16; 3];
    // SAFETY: GETALL writes 3 values into `vals`.
    if unsafe { libc::semctl(sem, 0, libc::GETALL, vals.as_mut_ptr()) } != 0 {
        return Err(format!(
            "semctl GETALL: {}",
            std::io::Error::last_os_error()
        ));
    }
    ensure!(vals == [5, 0, 42], "semaphore values {vals:?}");
    // Messages, in order.
    for (mtype, text) in [(1i64, b"first".to_vec()), (7, big_text()), (3, Vec::new())] {
        let mut buf = vec![0u8; 8 + 2000];
        // SAFETY: `buf` holds the type and 2000 bytes of text.
        let n = unsafe { libc::msgrcv(msq, buf.as_mut_ptr().cast(), 2000, 0, libc::IPC_NOWAIT) };
        ensure!(n >= 0, "msgrcv: {}", std::io::Error::last_os_error());
        let got = i64::from_ne_bytes(buf[..8].try_into().unwrap());
        ensure!(got == mtype, "message of type {got}, expected {mtype}");
        ensure!(
            buf[8..8 + n as usize] == text[..],
            "message of type {mtype}: wrong text ({n} bytes)"
        );
    }
    // The child shares segment A: each sees the other's writes.
    a[PARENT_AFTER..PARENT_AFTER + 12].copy_from_slice(b"parent-after");
    flag().store(1, std::sync::atomic::Ordering::SeqCst);
    let mut waited = 0;
    while flag().load(std::sync::atomic::Ordering::SeqCst) == 1 && waited < 500 {
        sleep_ms(10);
        waited += 1;
    }
    let answer = flag().load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    ensure!(
        answer == 2,
        "the child answered {answer} (1: no answer, 3: it saw wrong contents)"
    );
    ensure!(
        fresh(ADDR_A + CHILD_AFTER, 11) == b"child-after",
        "the child's write after restore is not seen"
    );
    Ok(())
}
