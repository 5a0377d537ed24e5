//! `threads`: one extra thread that counts; for the error test "a failed
//! dump of a multi-threaded process leaves every thread running".
//!
//! `--pipe 1`: also hold a pipe (fds 3 and 4), which crust cannot dump yet.
//! `--uffd 1`: also hold a userfaultfd, which crust refuses to dump.
//! The check: the worker kept counting and ends when asked, the pipe works.

use std::sync::atomic::{AtomicU64, Ordering};

use crust_testprogs::{
    ensure, finish, make_pipe, make_undumpable_fd, pipe_works, ready, sleep_ms, start,
    term_requested, undumpable_fd_ok, wait_for_term,
};

static TICKS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args = start();
    let pipe = (args.num("pipe", 0) != 0).then(make_pipe);
    let uffd = (args.num("uffd", 0) != 0).then(make_undumpable_fd);
    let worker = std::thread::Builder::new().name("worker".into()).spawn(|| {
        while !term_requested() {
            TICKS.fetch_add(1, Ordering::SeqCst);
            sleep_ms(10);
        }
    });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot start thread: {e}");
            std::process::exit(3);
        }
    };
    while TICKS.load(Ordering::SeqCst) < 2 {
        sleep_ms(5);
    }
    let at_ready = TICKS.load(Ordering::SeqCst);
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        ensure!(worker.join().is_ok(), "the worker thread panicked");
        let t = TICKS.load(Ordering::SeqCst);
        ensure!(
            t > at_ready,
            "the worker did not count on: {t} ticks, {at_ready} at ready"
        );
        if let Some(p) = pipe {
            pipe_works(p)?;
        }
        if let Some(fd) = uffd {
            undumpable_fd_ok(fd)?;
        }
        Ok(())
    })();
    finish(&args, verdict)
}
