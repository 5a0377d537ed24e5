//! `forker`: forks one child that sleeps (it dies with its parent); for the
//! error test "a failed dump of a tree leaves every process running".
//!
//! `--pipe 1`: the child holds a pipe (fds 3 and 4), which crust cannot dump
//! yet; the parent has none. The check: the child is still this process's
//! live child, and dies of the SIGKILL the parent sends it.
//! `--uffd 1`: the child holds a userfaultfd, which crust refuses to dump.

use crust_testprogs::{
    die, ensure, finish, make_pipe, make_undumpable_fd, ready, sleep_ms, start, wait_for_term,
};

fn main() {
    let args = start();
    let pipe = (args.num("pipe", 0) != 0).then(make_pipe);
    let uffd = (args.num("uffd", 0) != 0).then(make_undumpable_fd);
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
    if let Some(fd) = uffd {
        // Only the child keeps it.
        // SAFETY: closing our own fd, which nothing else owns.
        unsafe { libc::close(fd) };
    }
    if let Some(p) = pipe {
        // Only the child keeps the pipe.
        // SAFETY: closing our own fds, which nothing else owns.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        ensure!(
            r == 0,
            "child {child} is not a live child any more (waitpid: {r}, status {status:#x})"
        );
        // SAFETY: kill and waitpid on our own child, valid status pointer.
        let r = unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, &mut status, 0)
        };
        ensure!(
            r == child && libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "waitpid({child}) after SIGKILL: {r}, status {status:#x}"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
