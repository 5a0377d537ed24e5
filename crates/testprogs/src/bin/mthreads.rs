//! `mthreads`: a process with 8 threads (`--threads N` to change), each with
//! its own TLS value, signal mask and register values. Half of them wait on
//! a condition variable (futex wait); the others spin in an asm loop that
//! keeps a marker in r15 and xmm8, sleeping 1 ms now and then. Thread 3
//! runs as SCHED_IDLE and thread 5 with nice 5; threads 6 and 7 block in
//! read(2) and poll(2) on pipes (interrupted syscalls must be restarted).
//!
//! On SIGTERM (only the main thread takes it) the main thread wakes the
//! waiters and stops the spinners; every thread checks that its tid, TLS
//! value, signal mask and registers are what they were, and the main thread
//! collects the verdicts.

use crust_testprogs::{finish, ready, sleep_ms, start, term_requested};
use std::arch::asm;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

static STOP: AtomicBool = AtomicBool::new(false);
static STARTED: AtomicUsize = AtomicUsize::new(0);
/// Pipes the threads blocked in read and poll wait on: read and write ends
/// of pipe 0, then of pipe 1 (set before any thread starts).
static PIPES: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];

fn gettid() -> i64 {
    // SAFETY: gettid takes no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn sigmask() -> u64 {
    // SAFETY: sigset_t is plain data; pthread_sigmask fills `old`.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        *(&old as *const libc::sigset_t as *const u64)
    }
}

fn block(sigs: &[i32]) {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in sigs {
            libc::sigaddset(&mut set, *s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Spin until STOP with `marker` in r15 and xmm8; returns what they held.
fn spin(marker: u64) -> (u64, u64) {
    let (r, x): (u64, u64);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    // SAFETY: the asm only reads STOP and `ts`, makes nanosleep syscalls
    // (clobbering rax, rcx, r11, rdi, rsi as declared) and uses r15/xmm8,
    // which are declared clobbered.
    unsafe {
        asm!(
            "mov r15, {m}",
            "movq xmm8, {m}",
            "2:",
            "mov ecx, 20000",
            "3:",
            "pause",
            "dec ecx",
            "jnz 3b",
            "mov eax, 35",
            "mov rdi, {ts}",
            "xor esi, esi",
            "syscall",
            "cmp byte ptr [{stop}], 0",
            "je 2b",
            "mov {r}, r15",
            "movq {x}, xmm8",
            m = in(reg) marker,
            ts = in(reg) &ts as *const libc::timespec,
            stop = in(reg) &STOP as *const AtomicBool,
            r = lateout(reg) r,
            x = lateout(reg) x,
            out("r15") _,
            out("xmm8") _,
            out("rax") _,
            out("rcx") _,
            out("r11") _,
            out("rdi") _,
            out("rsi") _,
        );
    }
    (r, x)
}

fn main() {
    let args = start();
    let n = args.num("threads", 8) as usize;
    for k in 0..2 {
        let mut p = [0i32; 2];
        // SAFETY: p is a writable array of two ints.
        unsafe { libc::pipe(p.as_mut_ptr()) };
        PIPES[2 * k].store(p[0], Ordering::SeqCst);
        PIPES[2 * k + 1].store(p[1], Ordering::SeqCst);
    }
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let mut handles = Vec::new();
    for i in 0..n {
        let gate = gate.clone();
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            // Only the main thread takes SIGTERM; odd threads also block
            // SIGUSR1, even ones SIGUSR2.
            block(&[libc::SIGTERM, if i % 2 == 1 { libc::SIGUSR1 } else { libc::SIGUSR2 }]);
            let tid = gettid();
            let mask = sigmask();
            let tls = 0x7100_0000 + i as u64;
            // Thread 3 runs as SCHED_IDLE, thread 5 with nice 5.
            // SAFETY: scheduling calls on the calling thread (tid 0 = self).
            unsafe {
                if i == 3 {
                    let p = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &p);
                }
                if i == 5 {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 5);
                }
            }
            // SAFETY: queries about the calling thread.
            let sched = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            };
            TLS.with(|t| t.set(tls));
            STARTED.fetch_add(1, Ordering::SeqCst);
            let marker = 0x5eed_0000_0000 + i as u64 * 0x111;
            if i == 6 || i == 7 {
                // Thread 6 blocks in read(2), thread 7 in poll(2) then
                // read(2), on a pipe the main thread writes to at check time.
                let fd = PIPES[2 * (i - 6)].load(Ordering::SeqCst);
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let mut b = [0u8; 1];
                // SAFETY: pfd and b are valid for the calls; fd is ours.
                let n = unsafe {
                    if i == 7 && libc::poll(&mut pfd, 1, -1) != 1 {
                        return Err(format!("thread {i}: poll failed"));
                    }
                    libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, 1)
                };
                if n != 1 || b[0] != i as u8 {
                    return Err(format!("thread {i}: read returned {n} ({:#x})", b[0]));
                }
            } else if i % 2 == 0 {
                let (lock, cv) = &*gate;
                let mut go = lock.lock().unwrap();
                while !*go {
                    go = cv.wait(go).unwrap();
                }
            } else {
                let (r, x) = spin(marker);
                if r != marker || x != marker {
                    return Err(format!(
                        "thread {i}: r15 {r:#x} / xmm8 {x:#x}, expected {marker:#x}"
                    ));
                }
            }
            // SAFETY: queries about the calling thread.
            let sched_now = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            };
            if sched_now != sched {
                return Err(format!(
                    "thread {i}: (policy, nice) was {sched:?}, now {sched_now:?}"
                ));
            }
            let now = (gettid(), sigmask(), TLS.with(|t| t.get()));
            if now != (tid, mask, tls) {
                return Err(format!(
                    "thread {i}: (tid, mask, tls) was ({tid}, {mask:#x}, {tls:#x}), now ({}, {:#x}, {:#x})",
                    now.0, now.1, now.2
                ));
            }
            Ok(())
        }));
    }
    while STARTED.load(Ordering::SeqCst) < n {
        sleep_ms(5);
    }
    sleep_ms(50);
    let main_tid = gettid();
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    STOP.store(true, Ordering::SeqCst);
    for k in 0..2 {
        let b = [6 + k as u8];
        let fd = PIPES[2 * k + 1].load(Ordering::SeqCst);
        // SAFETY: writing one byte from a valid buffer to our pipe.
        unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, 1) };
    }
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    let mut verdict = if gettid() == main_tid {
        Ok(())
    } else {
        Err("main thread id changed".to_string())
    };
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => verdict = verdict.and(Err(e)),
            Err(_) => verdict = verdict.and(Err("a thread panicked".into())),
        }
    }
    finish(&args, verdict)
}
