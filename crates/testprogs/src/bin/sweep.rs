//! `sweep --mb N --probe FILE`: the target of the kill sweep (issue 10).
//!
//! N MiB (default 32) of pseudo-random memory whose checksum is kept
//! elsewhere, and three threads in the states a dump meets most: the main
//! thread sleeps in nanosleep between counter steps (a syscall to restart),
//! a second one spins in user space, a third blocks in read(2) on a pipe.
//! SIGUSR2 is blocked in every thread (and SIGWINCH too in the spinner):
//! the masks must survive whatever happens to crust.
//!
//! The main thread also writes its counter into one page after another of
//! 1 MiB of shared anonymous memory, dropping a page from its page table
//! (`MADV_DONTNEED`: crust's tracking of shared memory hears of it) every
//! 64 steps; at the end each page must hold the last count written there.
//!
//! Probe: SIGUSR1 makes the main thread write "MAIN SPIN" (its own and the
//! spinner's counters) to the probe file, so a checker can see both
//! advance. On SIGTERM it checks memory, masks and the pipe and writes the
//! verdict.

use crust_testprogs::{die, ensure, finish, ready, start, term_requested, write_atomic, XorShift};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SEED: u64 = 0x5EE9_0000_1234_5678;
/// Pages of the shared anonymous memory.
const SHARED_PAGES: usize = 256;

static PROBE: AtomicBool = AtomicBool::new(false);
static SPIN: AtomicU64 = AtomicU64::new(0);
static READER_GOT: AtomicU64 = AtomicU64::new(0);
/// Set by the spinner when its own mask changed under it.
static SPIN_MASK_LOST: AtomicBool = AtomicBool::new(false);

/// Threads that have started (see `started`).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Called by each thread first: its start-up is done, and an allocation
/// makes its malloc arena now rather than later.
fn started() {
    std::hint::black_box(Vec::<u64>::with_capacity(4));
    STARTED.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_usr1(_sig: libc::c_int) {
    PROBE.store(true, Ordering::SeqCst);
}

fn blocked_mask() -> u64 {
    // SAFETY: a zeroed sigset_t is a valid out-buffer; a null new-set pointer
    // only reads the mask.
    let set: libc::sigset_t = unsafe {
        let mut set = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        set
    };
    let mut mask = 0u64;
    for sig in 1..=64 {
        // SAFETY: `set` is a valid, initialised sigset_t.
        if unsafe { libc::sigismember(&set, sig) } == 1 {
            mask |= 1 << (sig - 1);
        }
    }
    mask
}

fn block(sigs: &[i32]) {
    // SAFETY: the set is emptied before use; a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn main() {
    let args = start();
    let mb = args.num("mb", 32) as usize;
    let probe = args.path("probe");
    let mut rng = XorShift(SEED);
    let mut big = vec![0u64; (mb << 20) / 8];
    let mut sum = 0u64;
    for w in big.iter_mut() {
        *w = rng.next_u64();
        sum = sum.rotate_left(1) ^ *w;
    }
    block(&[libc::SIGUSR2]);
    let main_mask = blocked_mask();
    // SAFETY: the handler only does an atomic store; the zeroed sigaction
    // is valid and its mask is emptied.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction(SIGUSR1)");
        }
    }
    // SAFETY: mmap with a null hint and no fd creates a new mapping.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHARED_PAGES * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        die("mmap shared");
    }
    let shared = shared as *mut u64;
    let mut mirror = vec![0u64; SHARED_PAGES];
    let pipe = crust_testprogs::make_pipe();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            block(&[libc::SIGWINCH]);
            started();
            let mine = blocked_mask();
            while !stop.load(Ordering::Relaxed) {
                let n = SPIN.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1 << 20) && blocked_mask() != mine {
                    SPIN_MASK_LOST.store(true, Ordering::SeqCst);
                }
                std::hint::spin_loop();
            }
        });
    }
    let rd = pipe[0];
    std::thread::spawn(move || {
        started();
        loop {
            let mut b = [0u8; 1];
            // SAFETY: `b` is a valid 1-byte buffer.
            let n = unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                READER_GOT.fetch_add(u64::from(b[0]), Ordering::SeqCst);
            } else if n == 0 {
                return;
            }
        }
    });
    // READY only once both threads run their own code: a thread's start
    // maps its signal stack and, at its first allocation, a malloc arena;
    // made after the checker's snapshot of the maps (a loaded machine may
    // start a thread late), they read as maps changed by crust.
    while STARTED.load(Ordering::SeqCst) < 2 {
        crust_testprogs::sleep_ms(1);
    }
    ready(&args);
    let mut main_count = 0u64;
    while !term_requested() {
        main_count += 1;
        let page = (main_count % SHARED_PAGES as u64) as usize;
        // SAFETY: word 0 of a page of our own shared mapping.
        unsafe { std::ptr::write_volatile(shared.add(page * 512), main_count) };
        mirror[page] = main_count;
        if main_count.is_multiple_of(64) {
            // SAFETY: advice on a page of our own mapping; shared memory
            // keeps its contents.
            unsafe { libc::madvise(shared.add(page * 512).cast(), 4096, libc::MADV_DONTNEED) };
        }
        if PROBE.swap(false, Ordering::SeqCst) {
            let text = format!("{main_count} {}\n", SPIN.load(Ordering::Relaxed));
            if write_atomic(&probe, &text).is_err() {
                die("write probe");
            }
        }
        // SAFETY: a valid timespec, no remainder wanted.
        unsafe {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
        }
    }
    let verdict = (|| {
        let mut got = 0u64;
        for w in &big {
            got = got.rotate_left(1) ^ *w;
        }
        ensure!(got == sum, "memory checksum {got:#x}, expected {sum:#x}");
        for (p, want) in mirror.iter().enumerate() {
            // SAFETY: word 0 of a page of our own shared mapping.
            let have = unsafe { std::ptr::read_volatile(shared.add(p * 512)) };
            ensure!(have == *want, "shared page {p} holds {have}, not {want}");
        }
        big.clear();
        ensure!(
            blocked_mask() == main_mask,
            "main thread's mask {:#x}, expected {main_mask:#x}",
            blocked_mask()
        );
        ensure!(
            !SPIN_MASK_LOST.load(Ordering::SeqCst),
            "the spinning thread's mask changed"
        );
        // The reader thread still reads the pipe.
        // SAFETY: writing one byte from a valid buffer.
        let n = unsafe { libc::write(pipe[1], [7u8].as_ptr().cast(), 1) };
        ensure!(n == 1, "cannot write to the reader's pipe");
        for _ in 0..200 {
            if READER_GOT.load(Ordering::SeqCst) == 7 {
                break;
            }
            crust_testprogs::sleep_ms(5);
        }
        ensure!(
            READER_GOT.load(Ordering::SeqCst) == 7,
            "the reader thread did not get the byte"
        );
        // A loaded machine may not run it at once: up to 2 s.
        let before = SPIN.load(Ordering::Relaxed);
        for _ in 0..200 {
            if SPIN.load(Ordering::Relaxed) > before {
                break;
            }
            crust_testprogs::sleep_ms(10);
        }
        ensure!(
            SPIN.load(Ordering::Relaxed) > before,
            "the spinning thread does not run"
        );
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })();
    finish(&args, verdict)
}
