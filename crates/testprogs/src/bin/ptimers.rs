//! `ptimers`: POSIX timers (timer_create) with the ids the program holds.
//! Timer ids 0 and 2 are deleted first, so the kept ids have a gap. One
//! timer ticks every 20 ms with SIGRTMIN+2 (a handler counts), one is a
//! SIGEV_NONE one-shot of 1000 s. After restore the same ids still work,
//! the ticking goes on and the one-shot has not been reset.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU64, Ordering};

static TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_tick(_: libc::c_int) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

fn create(clock: libc::clockid_t, notify: libc::c_int, sig: libc::c_int) -> libc::timer_t {
    // SAFETY: sigevent is plain data; timer_create writes the id to `id`.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = notify;
        sev.sigev_signo = sig;
        let mut id: libc::timer_t = std::ptr::null_mut();
        assert_eq!(
            libc::timer_create(clock, &mut sev, &mut id),
            0,
            "timer_create"
        );
        id
    }
}

fn arm(id: libc::timer_t, value_ms: i64, interval_ms: i64) {
    let ts = |ms: i64| libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval_ms),
        it_value: ts(value_ms),
    };
    // SAFETY: `spec` is a valid itimerspec; the id is one of ours.
    let r = unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) };
    assert_eq!(r, 0);
}

fn left_ms(id: libc::timer_t) -> Result<i64, String> {
    // SAFETY: `cur` is a valid out-pointer.
    unsafe {
        let mut cur: libc::itimerspec = std::mem::zeroed();
        if libc::timer_gettime(id, &mut cur) != 0 {
            return Err(format!(
                "timer_gettime({id:?}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(cur.it_value.tv_sec * 1000 + cur.it_value.tv_nsec / 1_000_000)
    }
}

fn main() {
    let args = start();
    let sig = libc::SIGRTMIN() + 2;
    // SAFETY: installing a handler that only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_tick as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
    let gone0 = create(libc::CLOCK_MONOTONIC, libc::SIGEV_NONE, 0);
    let tick = create(libc::CLOCK_MONOTONIC, libc::SIGEV_SIGNAL, sig);
    let gone2 = create(libc::CLOCK_MONOTONIC, libc::SIGEV_NONE, 0);
    let oneshot = create(libc::CLOCK_REALTIME, libc::SIGEV_NONE, 0);
    // SAFETY: deleting two of our own timers.
    unsafe {
        libc::timer_delete(gone0);
        libc::timer_delete(gone2);
    }
    arm(tick, 20, 20);
    arm(oneshot, 1_000_000, 0);
    sleep_ms(100);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        let left = left_ms(oneshot)?;
        ensure!(
            left > 900_000 && left <= 1_000_000,
            "the one-shot timer has {left} ms left, expected a bit under 1000 s"
        );
        let t0 = TICKS.load(Ordering::SeqCst);
        ensure!(t0 > 0, "the ticking timer never fired");
        sleep_ms(200);
        let t1 = TICKS.load(Ordering::SeqCst);
        ensure!(
            t1 >= t0 + 3,
            "the ticking timer stopped: {t0} then {t1} ticks in 200 ms"
        );
        let _ = left_ms(tick)?;
        Ok(())
    })();
    finish(&args, verdict)
}
