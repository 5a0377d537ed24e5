//! `loop`: a counter incremented every 10 ms, kept in three places (a static,
//! the stack and the heap) that must agree and keep advancing after restore.
//!
//! Options:
//! - `--pipe 1`: also hold both ends of a pipe (fds 3 and 4), which crust
//!   cannot dump yet: the error test checks that the failed dump leaves it
//!   working. The check sends a byte through it.
//! - `--uffd 1`: also hold a userfaultfd (fd 3 without `--pipe`), which
//!   crust refuses to dump (for the failed-dump tests).
//! - `--tty 1`: fds 0-2 must be a terminal, at start (exit 3 otherwise) and
//!   at the check (for the --shell-job test); the check also writes a line
//!   to stdout.

use std::sync::atomic::{AtomicU64, Ordering};

use crust_testprogs::{
    ensure, finish, make_pipe, make_undumpable_fd, pipe_works, ready, sleep_ms, start,
    term_requested, undumpable_fd_ok,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn not_ttys() -> Vec<i32> {
    // SAFETY: isatty takes an fd number only.
    (0..3)
        .filter(|&fd| unsafe { libc::isatty(fd) } != 1)
        .collect()
}

fn main() {
    let args = start();
    let want_tty = args.num("tty", 0) != 0;
    if want_tty && !not_ttys().is_empty() {
        eprintln!("--tty: fds {:?} are not terminals", not_ttys());
        std::process::exit(3);
    }
    let pipe = (args.num("pipe", 0) != 0).then(make_pipe);
    let uffd = (args.num("uffd", 0) != 0).then(make_undumpable_fd);
    let mut on_stack: u64 = 0;
    let mut on_heap: Box<u64> = Box::new(0);
    let tick = |stack: &mut u64, heap: &mut u64| {
        COUNTER.fetch_add(1, Ordering::SeqCst);
        *stack += 1;
        *heap += 1;
    };
    for _ in 0..3 {
        tick(&mut on_stack, &mut on_heap);
        sleep_ms(10);
    }
    let at_ready = COUNTER.load(Ordering::SeqCst);
    ready(&args);
    while !term_requested() {
        tick(&mut on_stack, &mut on_heap);
        sleep_ms(10);
    }
    let verdict = (|| {
        let c1 = COUNTER.load(Ordering::SeqCst);
        ensure!(
            c1 == on_stack && c1 == *on_heap,
            "copies disagree: static {c1}, stack {on_stack}, heap {}",
            *on_heap
        );
        ensure!(
            c1 > at_ready,
            "counter {c1} not above its value at ready {at_ready}"
        );
        for _ in 0..10 {
            tick(&mut on_stack, &mut on_heap);
            sleep_ms(10);
        }
        let c2 = COUNTER.load(Ordering::SeqCst);
        ensure!(c2 == c1 + 10, "counter went from {c1} to {c2} in 10 ticks");
        if let Some(p) = pipe {
            pipe_works(p)?;
        }
        if let Some(fd) = uffd {
            undumpable_fd_ok(fd)?;
        }
        if want_tty {
            let bad = not_ttys();
            ensure!(bad.is_empty(), "fds {bad:?} are no longer terminals");
            let line = b"loop: still on a terminal\n";
            // SAFETY: line is a readable buffer of line.len() bytes.
            let w = unsafe { libc::write(1, line.as_ptr() as *const libc::c_void, line.len()) };
            ensure!(
                w == line.len() as isize,
                "write to the terminal: {w} ({})",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    })();
    finish(&args, verdict)
}
