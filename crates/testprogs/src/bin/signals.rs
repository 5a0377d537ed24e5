//! `signals`: a SA_SIGINFO|SA_ONSTACK handler for SIGUSR1 with a sa_mask, handlers
//! for SIGUSR2 and SIGRTMIN+1 which are blocked, SIGUSR2 pending from kill() and two
//! queued SIGRTMIN+1 from sigqueue() with values, and a sigaltstack. After
//! restore: dispositions, mask, pending set and altstack are unchanged, and
//! unblocking delivers the pending signals with the right siginfo.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};

const ALTSTACK_SIZE: usize = 64 * 1024;
const RT_VALUES: [u64; 2] = [0x5EED_0001, 0x5EED_0002];

static USR1_COUNT: AtomicUsize = AtomicUsize::new(0);
static USR1_ON_ALTSTACK: AtomicUsize = AtomicUsize::new(0);
static USR1_MASK_OK: AtomicUsize = AtomicUsize::new(0);
static ALT_LO: AtomicU64 = AtomicU64::new(0);
static USR2_COUNT: AtomicUsize = AtomicUsize::new(0);
static USR2_CODE: AtomicI32 = AtomicI32::new(99);
static USR2_PID: AtomicI32 = AtomicI32::new(0);
static RT_COUNT: AtomicUsize = AtomicUsize::new(0);
static RT_CODE: [AtomicI32; 2] = [AtomicI32::new(99), AtomicI32::new(99)];
static RT_VALUE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static RT_PID: AtomicI32 = AtomicI32::new(0);

fn rt_sig() -> i32 {
    libc::SIGRTMIN() + 1
}

extern "C" fn on_usr1(_sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let lo = ALT_LO.load(Ordering::SeqCst);
    if addr >= lo && addr < lo + ALTSTACK_SIZE as u64 {
        USR1_ON_ALTSTACK.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: querying the current mask into a zeroed set is always valid.
    let blocked_int = unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, libc::SIGINT) == 1 && libc::sigismember(&cur, libc::SIGQUIT) == 1
    };
    if blocked_int {
        USR1_MASK_OK.fetch_add(1, Ordering::SeqCst);
    }
    USR1_COUNT.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_usr2(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers; for
    // SI_USER the pid field is the one set.
    unsafe {
        USR2_CODE.store((*info).si_code, Ordering::SeqCst);
        USR2_PID.store((*info).si_pid(), Ordering::SeqCst);
    }
    USR2_COUNT.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_rt(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let n = RT_COUNT.fetch_add(1, Ordering::SeqCst);
    if n < 2 {
        // SAFETY: valid siginfo from the kernel; for SI_QUEUE the pid and value
        // fields are the ones set.
        unsafe {
            RT_CODE[n].store((*info).si_code, Ordering::SeqCst);
            RT_VALUE[n].store((*info).si_value().sival_ptr as u64, Ordering::SeqCst);
            RT_PID.store((*info).si_pid(), Ordering::SeqCst);
        }
    }
}

type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before sigaddset.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for &sig in sigs {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

fn members(set: &libc::sigset_t) -> Vec<i32> {
    // SAFETY: sigismember only reads an initialised set.
    (1..=64)
        .filter(|&s| unsafe { libc::sigismember(set, s) } == 1)
        .collect()
}

fn install(sig: i32, h: Handler, flags: i32, mask: &[i32]) {
    // SAFETY: zeroed sigaction with an extern "C" SA_SIGINFO handler of the
    // right signature and an initialised mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = h as *const () as libc::sighandler_t;
        sa.sa_mask = sigset(mask);
        sa.sa_flags = flags | libc::SA_SIGINFO;
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction");
        }
    }
}

/// (handler, flags, restorer, mask members) of a signal.
fn query(sig: i32) -> (usize, i32, usize, Vec<i32>) {
    // SAFETY: a null new action only queries; the old action is written into
    // a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            die("sigaction query");
        }
        let restorer = old.sa_restorer.map(|f| f as usize).unwrap_or(0);
        (
            old.sa_sigaction,
            old.sa_flags,
            restorer,
            members(&old.sa_mask),
        )
    }
}

fn current_mask() -> Vec<i32> {
    // SAFETY: query only, into a zeroed set.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        members(&cur)
    }
}

fn pending() -> Vec<i32> {
    // SAFETY: sigpending writes into a zeroed set.
    unsafe {
        let mut p: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut p);
        members(&p)
    }
}

fn altstack() -> (u64, usize, i32) {
    // SAFETY: a null new stack only queries.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut old);
        (old.ss_sp as u64, old.ss_size, old.ss_flags)
    }
}

fn main() {
    let args = start();
    let me = std::process::id() as i32;
    let rt = rt_sig();

    // Alternate signal stack.
    // SAFETY: a fresh anonymous mapping, used only as the signal stack.
    let alt = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            ALTSTACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            die("mmap altstack");
        }
        let ss = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: ALTSTACK_SIZE,
        };
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            die("sigaltstack");
        }
        p as u64
    };
    ALT_LO.store(alt, Ordering::SeqCst);

    install(
        libc::SIGUSR1,
        on_usr1,
        libc::SA_ONSTACK | libc::SA_RESTART,
        &[libc::SIGINT, libc::SIGQUIT],
    );
    install(libc::SIGUSR2, on_usr2, 0, &[]);
    install(rt, on_rt, 0, &[libc::SIGUSR1]);

    // SIGUSR1 once now: the handler must work before the checkpoint too.
    // SAFETY: plain kill to ourselves.
    unsafe { libc::kill(me, libc::SIGUSR1) };

    let block = sigset(&[libc::SIGUSR2, rt]);
    // SAFETY: an initialised set; null old set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut()) };
    // SAFETY: kill and sigqueue to ourselves with blocked signals: they stay pending.
    unsafe {
        libc::kill(me, libc::SIGUSR2);
        for v in RT_VALUES {
            let val = libc::sigval {
                sival_ptr: v as usize as *mut libc::c_void,
            };
            if libc::sigqueue(me, rt, val) != 0 {
                die("sigqueue");
            }
        }
    }

    let before = [query(libc::SIGUSR1), query(libc::SIGUSR2), query(rt)];
    let alt_before = altstack();
    let usr1_before = USR1_COUNT.load(Ordering::SeqCst);
    ready(&args);
    wait_for_term(20, || {});

    let verdict = (|| {
        ensure!(
            usr1_before == 1,
            "SIGUSR1 handler ran {usr1_before} times before READY"
        );
        let after = [query(libc::SIGUSR1), query(libc::SIGUSR2), query(rt)];
        for (i, sig) in [libc::SIGUSR1, libc::SIGUSR2, rt].iter().enumerate() {
            ensure!(
                before[i] == after[i],
                "sigaction of signal {sig} changed: {:x?} -> {:x?}",
                before[i],
                after[i]
            );
        }
        ensure!(
            after[0].3 == [libc::SIGINT, libc::SIGQUIT],
            "SIGUSR1 sa_mask is {:?}",
            after[0].3
        );
        let want_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        ensure!(
            after[0].1 & want_flags == want_flags,
            "SIGUSR1 sa_flags {:#x}",
            after[0].1
        );
        let mask = current_mask();
        ensure!(
            mask == [libc::SIGUSR2, rt],
            "signal mask is {mask:?}, expected [12, {rt}]"
        );
        let pend = pending();
        ensure!(
            pend == [libc::SIGUSR2, rt],
            "pending set is {pend:?}, expected [12, {rt}]"
        );
        let alt_after = altstack();
        ensure!(
            alt_after == alt_before,
            "sigaltstack {alt_after:x?}, expected {alt_before:x?}"
        );

        // SIGUSR1 again, after restore: on the alt stack, with its mask.
        // SAFETY: kill to ourselves; the handler is installed.
        unsafe { libc::kill(me, libc::SIGUSR1) };
        ensure!(
            USR1_COUNT.load(Ordering::SeqCst) == 2,
            "SIGUSR1 handler did not run after restore"
        );
        ensure!(
            USR1_ON_ALTSTACK.load(Ordering::SeqCst) == 2,
            "SIGUSR1 handler not on the alt stack"
        );
        ensure!(
            USR1_MASK_OK.load(Ordering::SeqCst) == 2,
            "SIGUSR1 handler ran without SIGINT|SIGQUIT blocked"
        );

        // Unblock: the pending signals are delivered before sigprocmask returns.
        // SAFETY: an initialised set; null old set.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &block, std::ptr::null_mut()) };
        ensure!(
            USR2_COUNT.load(Ordering::SeqCst) == 1,
            "SIGUSR2 delivered {} times",
            USR2_COUNT.load(Ordering::SeqCst)
        );
        let code = USR2_CODE.load(Ordering::SeqCst);
        ensure!(
            code == libc::SI_USER,
            "SIGUSR2 si_code {code}, expected SI_USER"
        );
        let pid = USR2_PID.load(Ordering::SeqCst);
        ensure!(pid == me, "SIGUSR2 si_pid {pid}, expected {me}");
        let n = RT_COUNT.load(Ordering::SeqCst);
        ensure!(n == 2, "SIGRTMIN+1 delivered {n} times, expected 2");
        for i in 0..2 {
            let code = RT_CODE[i].load(Ordering::SeqCst);
            ensure!(
                code == libc::SI_QUEUE,
                "SIGRTMIN+1 #{i} si_code {code}, expected SI_QUEUE"
            );
            let v = RT_VALUE[i].load(Ordering::SeqCst);
            ensure!(
                v == RT_VALUES[i],
                "SIGRTMIN+1 #{i} si_value {v:#x}, expected {:#x}",
                RT_VALUES[i]
            );
        }
        let pid = RT_PID.load(Ordering::SeqCst);
        ensure!(pid == me, "SIGRTMIN+1 si_pid {pid}, expected {me}");
        ensure!(
            pending().is_empty(),
            "still pending after unblock: {:?}",
            pending()
        );
        Ok(())
    })();
    finish(&args, verdict)
}
