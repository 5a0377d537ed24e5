//! `threads`: one extra thread that sleeps; for the "multi-threaded dump is not
//! supported" error test. Ends on SIGTERM with PASS.

use crust_testprogs::{finish, ready, sleep_ms, start, term_requested, wait_for_term};

fn main() {
    let args = start();
    let worker = std::thread::Builder::new().name("worker".into()).spawn(|| {
        while !term_requested() {
            sleep_ms(50);
        }
    });
    if let Err(e) = worker {
        eprintln!("cannot start thread: {e}");
        std::process::exit(3);
    }
    ready(&args);
    wait_for_term(20, || {});
    finish(&args, Ok(()))
}
