//! `forker`: forks one child that sleeps (it dies with its parent); for the
//! "process has children" error test. Ends on SIGTERM with PASS.

use crust_testprogs::{die, finish, ready, sleep_ms, start, wait_for_term};

fn main() {
    let args = start();
    // SAFETY: the process is single-threaded, so the child may run any code;
    // it only calls prctl, getppid and sleeps.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        loop {
            sleep_ms(100);
        }
    }
    ready(&args);
    wait_for_term(20, || {});
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, Ok(()))
}
