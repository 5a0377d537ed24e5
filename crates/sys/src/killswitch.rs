//! A dead man's switch for a set of processes: a small process of its own
//! that kills them all (SIGKILL through pidfds) unless its maker tells it
//! not to before it dies.
//!
//! Made for the end of a restore: the tasks of a tree are let go one
//! PTRACE_DETACH after another, and no kernel call lets many go at once.
//! While they are traced with PTRACE_O_EXITKILL a crust that dies takes
//! them along; once some are let go, it would leave those running without
//! the rest. With the switch armed first, a crust killed anywhere in the
//! loop (or before it says the restore is done) closes the switch's pipe
//! by dying, and the switch kills every process of the tree: all of it or
//! none of it. The tasks let go before crust died may have run for a
//! moment by then.
//!
//! The switch is forked (no exec; arming it for 20 processes took 0.35 to
//! 0.6 ms here, the pidfds included) and leaves crust's session at once,
//! so that a signal to crust's process group does not end it too;
//! [`KillSwitch::arm`] returns once it has. After the fork it runs raw system calls only, on memory made
//! before the fork (the rule for a child of a threaded process).

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The byte that tells the switch to end without killing.
const GO: u8 = b'g';
/// The byte the switch sends once it has its own session.
const READY: u8 = b'r';

/// An armed switch (see the module's documentation). Dropped without
/// [`KillSwitch::disarm`], it kills its processes and is reaped.
#[derive(Debug)]
pub struct KillSwitch {
    pid: i32,
    /// crust's end of the pipe the switch waits on.
    go: Option<OwnedFd>,
}

impl KillSwitch {
    /// Fork the switch for the processes of `targets` (pidfds, see
    /// [`crate::unix::pidfd_open`]) and wait until it has left crust's
    /// session and process group.
    pub fn arm(targets: &[BorrowedFd<'_>]) -> io::Result<KillSwitch> {
        let (go_r, go_w) = crate::pipe::pipe2(libc::O_CLOEXEC)?;
        let (ready_r, ready_w) = crate::pipe::pipe2(libc::O_CLOEXEC)?;
        // Everything the child touches is made before the fork.
        let fds: Vec<i32> = targets.iter().map(|f| f.as_raw_fd()).collect();
        let (gr, gw, rr, rw) = (
            go_r.as_raw_fd(),
            go_w.as_raw_fd(),
            ready_r.as_raw_fd(),
            ready_w.as_raw_fd(),
        );
        // A fork in a threaded process: the child runs `switch_main` (raw
        // system calls on `fds` and integers made before the fork, then
        // _exit) and never returns here.
        // SAFETY: the child touches no lock or allocator state (above).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            switch_main(gr, gw, rr, rw, &fds);
        }
        cvt(pid as libc::c_long)?;
        drop(go_r);
        drop(ready_w);
        let mut me = KillSwitch {
            pid,
            go: Some(go_w),
        };
        let mut b = [0u8; 1];
        let n = loop {
            // SAFETY: `b` is a live 1-byte buffer; `ready_r` is open.
            let r = unsafe { libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            match cvt(r as libc::c_long) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match n {
            Ok(1) if b[0] == READY => Ok(me),
            Ok(_) => {
                me.go = None;
                me.reap();
                Err(io::Error::other(
                    "the kill switch ended before it was ready",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The switch's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Tell the switch to end without killing anything, and reap it.
    pub fn disarm(mut self) -> io::Result<()> {
        let Some(w) = self.go.take() else {
            return Ok(());
        };
        let b = [GO];
        let r = loop {
            // SAFETY: `b` is a live 1-byte buffer; `w` is open.
            let r = unsafe { libc::write(w.as_raw_fd(), b.as_ptr().cast(), 1) };
            match cvt(r as libc::c_long) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        drop(w);
        let status = self.reap();
        match (r, status) {
            (Ok(1), Some(0)) => Ok(()),
            (Err(e), _) => Err(e),
            (_, s) => Err(io::Error::other(format!(
                "the kill switch (pid {}) ended with status {s:?}",
                self.pid
            ))),
        }
    }

    /// Wait for the switch to end; its wait status, if it was reaped.
    fn reap(&mut self) -> Option<i32> {
        let pid = std::mem::replace(&mut self.pid, 0);
        if pid <= 0 {
            return None;
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid out-pointer; `pid` is our child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                return Some(status);
            }
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
    }
}

impl Drop for KillSwitch {
    fn drop(&mut self) {
        // Closing the pipe unsaid tells the switch to kill.
        self.go = None;
        self.reap();
    }
}

/// The switch, in the forked child. Raw system calls only.
fn switch_main(go_r: i32, go_w: i32, ready_r: i32, ready_w: i32, fds: &[i32]) -> ! {
    // SAFETY: closing this process's copies of the two ends crust keeps.
    unsafe { libc::close(go_w) };
    // SAFETY: as above.
    unsafe { libc::close(ready_r) };
    // Signals meant for crust's group, or its terminal's, are not for the
    // switch; SIGKILL still ends it.
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN runs no code of this process.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        exit_now(1);
    }
    let b = [READY];
    // SAFETY: `b` is a live 1-byte buffer.
    if unsafe { libc::write(ready_w, b.as_ptr().cast(), 1) } != 1 {
        exit_now(1);
    }
    // SAFETY: this process's own descriptor, not used after.
    unsafe { libc::close(ready_w) };
    let mut got = [0u8; 1];
    let n = loop {
        // SAFETY: `got` is a live 1-byte buffer.
        let n = unsafe { libc::read(go_r, got.as_mut_ptr().cast(), 1) };
        // (errno read right after the call; an OS error is no allocation.)
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n == 1 && got == [GO] {
        exit_now(0);
    }
    for &fd in fds {
        // A null siginfo is allowed: the kernel fills one as kill does.
        // SAFETY: `fd` is a pidfd inherited from crust; no pointer is read.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    exit_now(0)
}

/// _exit: no atexit handler, no flush of crust's buffers.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process and touches no memory of it.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    fn gone_within(c: &mut std::process::Child, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if c.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn disarmed_switch_kills_nothing() {
        let mut a = sleeper();
        let fd = crate::unix::pidfd_open(a.id() as i32).unwrap();
        let s = KillSwitch::arm(&[fd.as_fd()]).unwrap();
        s.disarm().unwrap();
        assert!(!gone_within(&mut a, Duration::from_millis(100)));
        a.kill().unwrap();
        a.wait().unwrap();
    }

    #[test]
    fn dropped_switch_kills_all() {
        let mut a = sleeper();
        let mut b = sleeper();
        let fa = crate::unix::pidfd_open(a.id() as i32).unwrap();
        let fb = crate::unix::pidfd_open(b.id() as i32).unwrap();
        let s = KillSwitch::arm(&[fa.as_fd(), fb.as_fd()]).unwrap();
        assert!(s.pid() > 0);
        drop(s);
        assert!(gone_within(&mut a, Duration::from_secs(5)));
        assert!(gone_within(&mut b, Duration::from_secs(5)));
    }

    #[test]
    fn switch_leaves_the_process_group() {
        let mut a = sleeper();
        let fd = crate::unix::pidfd_open(a.id() as i32).unwrap();
        let s = KillSwitch::arm(&[fd.as_fd()]).unwrap();
        // SAFETY: getpgid on a live child of ours.
        let theirs = unsafe { libc::getpgid(s.pid()) };
        // SAFETY: getpgid of ourselves.
        let ours = unsafe { libc::getpgid(0) };
        assert_ne!(theirs, ours);
        s.disarm().unwrap();
        a.kill().unwrap();
        a.wait().unwrap();
    }
}
