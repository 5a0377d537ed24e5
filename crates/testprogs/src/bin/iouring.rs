//! `iouring`: an io_uring (raw io_uring_setup/io_uring_enter, no liburing)
//! with one read pending on an empty pipe, submitted with IOSQE_ASYNC so
//! that a kernel io worker thread (`iou-wrk-N`) takes it. crust refuses to
//! dump such a process; the refusal tests check that it runs on untouched.
//!
//! Set-up: fd 3/4 a pipe, fd 5 the io_uring; the read (user_data 42, 16
//! bytes, from fd 3) is submitted before ready; ready waits (1 s at most)
//! for an io worker thread to show in /proc/self/task.
//!
//! A counter ticks every 10 ms until SIGTERM. The check: the counter
//! advanced after ready; fd 5 is still the io_uring; writing "hello" to the
//! pipe completes the pending read: one completion, user_data 42, result 5,
//! the buffer holds "hello".

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{fence, AtomicU64, Ordering};

const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_OP_READ: u8 = 22;
const IOSQE_ASYNC: u8 = 1 << 4;
const IORING_ENTER_GETEVENTS: u32 = 1;
const USER_DATA: u64 = 42;
const RING_FD: i32 = 5;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

#[repr(C)]
#[derive(Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    rw_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// The rings as mapped in this process.
struct Ring {
    params: Params,
    sq: *mut u8,
    cq: *mut u8,
    sqes: *mut Sqe,
}

fn map(len: usize, off: i64) -> *mut u8 {
    // SAFETY: a fresh shared mapping of the ring fd; the kernel checks the
    // offset and length.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            RING_FD,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap io_uring");
    }
    p.cast()
}

fn setup() -> Ring {
    let mut params = Params::default();
    // SAFETY: params is a writable io_uring_params of the kernel's layout.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut params as *mut Params) };
    if fd < 0 {
        die("io_uring_setup");
    }
    // SAFETY: dup2/close take integers only.
    unsafe {
        if fd as i32 != RING_FD {
            if libc::dup2(fd as i32, RING_FD) < 0 {
                die("dup2");
            }
            libc::close(fd as i32);
        }
    }
    let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
    let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * 16;
    let sq = map(sq_len, IORING_OFF_SQ_RING);
    let cq = map(cq_len, IORING_OFF_CQ_RING);
    let sqes = map(params.sq_entries as usize * 64, IORING_OFF_SQES).cast();
    Ring {
        params,
        sq,
        cq,
        sqes,
    }
}

/// A u32 of a ring at byte offset `off`.
fn word(base: *mut u8, off: u32) -> *mut u32 {
    // SAFETY: `off` is one of the offsets the kernel gave, inside the map.
    unsafe { base.add(off as usize).cast() }
}

fn submit_read(ring: &Ring, fd: i32, buf: &mut [u8; 16]) {
    let so = ring.params.sq_off;
    // SAFETY: the rings are mapped and the kernel only reads the SQ entry
    // and array slot once the tail moves past them; buf outlives the read
    // (it lives in main until exit).
    unsafe {
        let tail = word(ring.sq, so.tail).read_volatile();
        let mask = word(ring.sq, so.ring_mask).read_volatile();
        let idx = tail & mask;
        ring.sqes.add(idx as usize).write(Sqe {
            opcode: IORING_OP_READ,
            flags: IOSQE_ASYNC,
            fd,
            off: u64::MAX,
            addr: buf.as_mut_ptr() as u64,
            len: buf.len() as u32,
            user_data: USER_DATA,
            ..Sqe::default()
        });
        word(ring.sq, so.array)
            .add(idx as usize)
            .write_volatile(idx);
        fence(Ordering::Release);
        word(ring.sq, so.tail).write_volatile(tail.wrapping_add(1));
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            RING_FD,
            1u32,
            0u32,
            0u32,
            0usize,
            0usize,
        );
        if n != 1 {
            die("io_uring_enter (submit)");
        }
    }
}

/// Is an io worker thread in /proc/self/task?
fn has_io_worker() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .map(|c| c.starts_with("iou-"))
            .unwrap_or(false)
    })
}

fn complete(ring: &Ring, wfd: i32, buf: &[u8; 16]) -> Result<(), String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{RING_FD}")).map_err(|e| e.to_string())?;
    ensure!(
        link.to_string_lossy() == "anon_inode:[io_uring]",
        "fd {RING_FD} is {} now",
        link.display()
    );
    // SAFETY: a 5-byte buffer is written to a pipe fd.
    let w = unsafe { libc::write(wfd, b"hello".as_ptr().cast(), 5) };
    ensure!(w == 5, "write to the pipe: {w}");
    let co = ring.params.cq_off;
    // SAFETY: io_uring_enter waits for one completion; then the CQ ring
    // (mapped) is read between head and tail as the kernel published them.
    let (res, user_data) = unsafe {
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            RING_FD,
            0u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            0usize,
            0usize,
        );
        ensure!(
            n >= 0,
            "io_uring_enter (wait): {}",
            std::io::Error::last_os_error()
        );
        let head = word(ring.cq, co.head).read_volatile();
        let tail = word(ring.cq, co.tail).read_volatile();
        fence(Ordering::Acquire);
        ensure!(
            tail.wrapping_sub(head) == 1,
            "{} completions, expected 1",
            tail.wrapping_sub(head)
        );
        let mask = word(ring.cq, co.ring_mask).read_volatile();
        let cqe = ring
            .cq
            .add(co.cqes as usize)
            .cast::<Cqe>()
            .add((head & mask) as usize)
            .read_volatile();
        word(ring.cq, co.head).write_volatile(head.wrapping_add(1));
        (cqe.res, cqe.user_data)
    };
    ensure!(
        user_data == USER_DATA,
        "completion of {user_data}, expected {USER_DATA}"
    );
    ensure!(res == 5, "the read returned {res}, expected 5");
    ensure!(&buf[..5] == b"hello", "the read got {:?}", &buf[..5]);
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args = start();
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a writable array of two c_ints; dup2 takes integers.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0
            || libc::dup2(fds[0], 3) < 0
            || libc::dup2(fds[1], 4) < 0
        {
            die("pipe");
        }
        for fd in fds {
            if fd != 3 && fd != 4 {
                libc::close(fd);
            }
        }
    }
    let ring = setup();
    let mut buf = Box::new([0u8; 16]);
    submit_read(&ring, 3, &mut buf);
    for _ in 0..100 {
        if has_io_worker() {
            break;
        }
        sleep_ms(10);
    }
    ready(&args);
    let at_ready = COUNTER.load(Ordering::SeqCst);
    while !term_requested() {
        COUNTER.fetch_add(1, Ordering::SeqCst);
        sleep_ms(10);
    }
    let verdict = (|| {
        let c = COUNTER.load(Ordering::SeqCst);
        ensure!(c > at_ready, "counter {c} not above {at_ready}");
        complete(&ring, 4, &buf)
    })();
    finish(&args, verdict);
}
