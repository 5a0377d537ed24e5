//! `sharedfd`: a parent and a child that share one fd table (the child was
//! made with clone(CLONE_FILES), not fork). After restore the table must
//! still be shared: an fd the parent opens at check time is visible in the
//! child, and the child's file offset moves are seen by the parent.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

const PROBE_FD: i32 = 77;

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    // SAFETY: a raw clone without CLONE_VM behaves like fork (the child
    // gets a copy of the address space and returns 0 on the same stack);
    // the program is single-threaded.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as i32;
    if child < 0 {
        eprintln!("clone: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    if child == 0 {
        // The child waits for SIGUSR1 (a flag set by the TERM handler is
        // not enough: use a blocked-signal wait), then checks PROBE_FD.
        // SAFETY: sigset_t is plain data initialised by sigemptyset.
        let code = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            if libc::fcntl(PROBE_FD, libc::F_GETFD) >= 0 {
                0
            } else {
                1
            }
        };
        // SAFETY: _exit ends the child immediately.
        unsafe { libc::_exit(code) };
    }
    sleep_ms(100);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        // SAFETY: plain fd syscalls and waitpid with a valid out-pointer.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            ensure!(fd >= 0, "open /dev/null failed");
            ensure!(libc::dup2(fd, PROBE_FD) == PROBE_FD, "dup2 failed");
            libc::kill(child, libc::SIGUSR1);
            let mut st = 0;
            ensure!(libc::waitpid(child, &mut st, 0) == child, "waitpid failed");
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "child does not see fd {PROBE_FD} the parent opened: the fd table is not shared (status {st:#x})"
            );
        }
        Ok(())
    })();
    finish(&args, verdict)
}
