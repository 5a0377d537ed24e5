//! `pidfds`: fds made by pidfd_open(2). The process holds
//! - a pidfd on its child (fd A), a second description of it opened with
//!   PIDFD_NONBLOCK (fd B), and a dup of A (fd C, same description);
//! - a pidfd on itself (fd S);
//! - a pidfd on a child that has exited and been reaped (fd Z: the kernel
//!   says `Pid: -1`).
//!
//! After restore: A, B and S still name the same processes (fdinfo `Pid:`),
//! B is still non-blocking and A/C still share one description, Z still
//! names no process, a signal sent through A reaches the child, and
//! waitid(P_PIDFD) through A reaps it.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

const PIDFD_NONBLOCK: libc::c_uint = libc::O_NONBLOCK as libc::c_uint;

fn pidfd_open(pid: i32, flags: libc::c_uint) -> i32 {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) as i32 }
}

/// The `Pid:` line of an fd's fdinfo.
fn fdinfo_pid(fd: i32) -> Result<i32, String> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| format!("fdinfo of fd {fd}: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("fd {fd} has no Pid: line in its fdinfo"))
}

/// A child that waits for SIGUSR1 and exits with 7 when it comes.
fn spawn_waiter() -> i32 {
    // SAFETY: fork in a single-threaded program; the child only calls
    // async-signal-safe functions before _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: sigset_t is plain data set up by sigemptyset/sigaddset;
        // sigwait blocks until SIGUSR1; _exit ends the child.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            libc::_exit(7);
        }
    }
    if pid < 0 {
        crust_testprogs::die("fork");
    }
    pid
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let child = spawn_waiter();
    let a = pidfd_open(child, 0);
    let b = pidfd_open(child, PIDFD_NONBLOCK);
    // SAFETY: dup of an fd this process owns.
    let c = unsafe { libc::dup(a) };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let s = pidfd_open(me, 0);
    // A child that is gone: its pidfd says Pid -1.
    // SAFETY: fork in a single-threaded program; the child exits at once.
    let gone = unsafe { libc::fork() };
    if gone == 0 {
        // SAFETY: _exit ends the child.
        unsafe { libc::_exit(0) };
    }
    let z = pidfd_open(gone, 0);
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    unsafe { libc::waitpid(gone, &mut st, 0) };
    if a < 0 || b < 0 || c < 0 || s < 0 || z < 0 {
        crust_testprogs::die("pidfd_open");
    }
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        ensure!(
            fdinfo_pid(a)? == child,
            "fd {a} no longer names the child {child}"
        );
        ensure!(
            fdinfo_pid(b)? == child,
            "fd {b} no longer names the child {child}"
        );
        ensure!(
            fdinfo_pid(s)? == me,
            "fd {s} no longer names this process {me}"
        );
        ensure!(fdinfo_pid(z)? == -1, "fd {z} should name no process");
        // SAFETY: fcntl on fds this process owns.
        let (fa, fb) = unsafe { (libc::fcntl(a, libc::F_GETFL), libc::fcntl(b, libc::F_GETFL)) };
        ensure!(fa & libc::O_NONBLOCK == 0, "fd {a} became non-blocking");
        ensure!(fb & libc::O_NONBLOCK != 0, "fd {b} lost PIDFD_NONBLOCK");
        // A and C share a description: a flag set on one shows on the other.
        // SAFETY: fcntl on fds this process owns.
        let shared = unsafe {
            libc::fcntl(c, libc::F_SETFL, libc::O_NONBLOCK);
            let on = libc::fcntl(a, libc::F_GETFL) & libc::O_NONBLOCK != 0;
            libc::fcntl(c, libc::F_SETFL, 0);
            on
        };
        ensure!(shared, "fds {a} and {c} no longer share one description");
        // SAFETY: pidfd_send_signal with a null siginfo and no flags.
        let sent =
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, a, libc::SIGUSR1, 0usize, 0) };
        ensure!(sent == 0, "pidfd_send_signal through fd {a} failed");
        // SAFETY: waitid(P_PIDFD) with a zeroed siginfo to fill.
        let (r, code, status) = unsafe {
            let mut si: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_PIDFD, a as libc::id_t, &mut si, libc::WEXITED);
            (r, si.si_code, si.si_status())
        };
        ensure!(r == 0, "waitid(P_PIDFD) through fd {a} failed");
        ensure!(
            code == libc::CLD_EXITED && status == 7,
            "child ended with code {code} status {status}, not exit 7"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
