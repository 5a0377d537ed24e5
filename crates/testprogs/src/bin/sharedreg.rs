//! `sharedreg --dir DIR`: a parent and two children write in turn to one
//! open file description of `DIR/shared.log` (opened once by the parent,
//! without O_APPEND, inherited by fork; also the children's stdout). Each
//! writes one fixed-size line when a counter in shared memory says it is
//! its turn. After restore the three must still share the description:
//! the lines follow each other with no overwrite, the shared offset is the
//! file's size, and kcmp(KCMP_FILE) says the fds are one description.
//!
//! On SIGTERM the parent lets 30 more lines be written (so writing goes on
//! after a restore), stops the children, which check kcmp against the
//! parent and exit 0 if it holds, then checks the file.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU64, Ordering};

const FD: i32 = 20;
const WRITERS: u64 = 3;
const LINE: usize = 16;
const STOP: u64 = u64::MAX;

fn line(n: u64) -> String {
    let s = format!("w{} n{:010}", n % WRITERS, n);
    format!("{s:<width$}\n", width = LINE - 1)
}

/// Write the turns of writer `me` until the counter says stop.
fn write_turns(me: u64, turn: &AtomicU64) {
    loop {
        let n = turn.load(Ordering::SeqCst);
        if n == STOP {
            return;
        }
        if n % WRITERS == me {
            let l = line(n);
            // SAFETY: writes a valid buffer to an fd of this process.
            let w = unsafe { libc::write(FD, l.as_ptr().cast(), l.len()) };
            if w != l.len() as isize {
                // SAFETY: _exit ends this process (a child) at once.
                unsafe { libc::_exit(3) };
            }
            turn.store(n + 1, Ordering::SeqCst);
        } else {
            sleep_ms(1);
        }
    }
}

fn kcmp_file(pid1: i32, pid2: i32, fd1: i32, fd2: i32) -> i64 {
    // SAFETY: kcmp only compares kernel objects; no memory is passed.
    unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, 0, fd1, fd2) }
}

fn check_file(path: &std::path::Path, written: u64) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    ensure!(
        data.len() as u64 == written * LINE as u64,
        "the file holds {} bytes, {} lines of {LINE} were written: writers overwrote each other",
        data.len(),
        written
    );
    for (n, got) in data.chunks(LINE).enumerate() {
        let want = line(n as u64);
        ensure!(
            got == want.as_bytes(),
            "line {n} is {:?}, expected {want:?}: the writers' offsets diverged",
            String::from_utf8_lossy(got)
        );
    }
    // SAFETY: lseek on an fd of this process.
    let pos = unsafe { libc::lseek(FD, 0, libc::SEEK_CUR) };
    ensure!(
        pos as usize == data.len(),
        "the shared offset is {pos}, the file holds {} bytes",
        data.len()
    );
    Ok(())
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let path = args.path("dir").join("shared.log");
    let cpath = crust_testprogs::cpath(&path);
    // SAFETY: plain open/dup2 of a path we own.
    unsafe {
        let fd = libc::open(
            cpath.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        assert!(fd >= 0, "open {}", path.display());
        assert_eq!(libc::dup2(fd, FD), FD);
        libc::close(fd);
    }
    // SAFETY: a fresh shared anonymous page for the turn counter.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the page is ours and aligned for an AtomicU64.
    let turn = unsafe { &*(p as *const AtomicU64) };
    let parent = std::process::id() as i32;
    let mut children = Vec::new();
    for me in 1..WRITERS {
        // SAFETY: single-threaded program; the child only writes its turns.
        let c = unsafe { libc::fork() };
        if c == 0 {
            // The children's stdout is the shared file too.
            // SAFETY: dup2 of our own fd.
            unsafe { libc::dup2(FD, 1) };
            write_turns(me, turn);
            let same = kcmp_file(std::process::id() as i32, parent, FD, FD) == 0
                && kcmp_file(std::process::id() as i32, parent, 1, FD) == 0;
            // SAFETY: _exit ends the child.
            unsafe { libc::_exit(if same { 0 } else { 4 }) };
        }
        children.push(c);
    }
    // The parent writes its turns on a thread-less loop, between checks.
    let mut ready_sent = false;
    let mut stop_at = None;
    let written = loop {
        let n = turn.load(Ordering::SeqCst);
        if !ready_sent && n >= 60 {
            ready(&args);
            ready_sent = true;
        }
        if stop_at.is_none() && term_requested() {
            stop_at = Some(n + 30);
        }
        if let Some(s) = stop_at {
            if n >= s && n % WRITERS == 0 {
                turn.store(STOP, Ordering::SeqCst);
                break n;
            }
        }
        if n % WRITERS == 0 {
            let l = line(n);
            // SAFETY: writes a valid buffer to our fd.
            let w = unsafe { libc::write(FD, l.as_ptr().cast(), l.len()) };
            assert_eq!(w, l.len() as isize);
            turn.store(n + 1, Ordering::SeqCst);
        } else {
            sleep_ms(1);
        }
    };
    let verdict = (|| -> Result<(), String> {
        for c in &children {
            let mut st = 0;
            // SAFETY: waitpid on our child with a valid out-pointer.
            let r = unsafe { libc::waitpid(*c, &mut st, 0) };
            ensure!(r == *c, "waitpid {c} failed");
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "child {c} ended with status {st:#x} (4: kcmp says its fd is not the parent's description)"
            );
        }
        check_file(&path, written)
    })();
    finish(&args, verdict);
}
