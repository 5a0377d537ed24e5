//! `thrcore`: a process of 3 threads, each blocked in a function of its own
//! name, for e2e `coredump` (gdb's backtrace of the core `crust coredump`
//! makes must name them): the main thread in `thrcore_main_waits`
//! (nanosleep), `thrcore_reader_blocks` in read(2) on a pipe,
//! `thrcore_poller_blocks` in poll(2) on another. On SIGTERM (only the main
//! thread takes it) the main thread wakes the others through their pipes;
//! each says it saw its byte, and the program writes PASS.

use crust_testprogs::{finish, make_pipe, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicUsize, Ordering};

static STARTED: AtomicUsize = AtomicUsize::new(0);

fn block_term() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[inline(never)]
fn thrcore_reader_blocks(fd: i32) -> Result<(), String> {
    block_term();
    STARTED.fetch_add(1, Ordering::SeqCst);
    let mut b = [0u8; 1];
    loop {
        // SAFETY: b is a writable 1-byte buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, 1) };
        if n == 1 {
            return if b[0] == b'r' {
                Ok(())
            } else {
                Err(format!("reader got {:?}", b[0]))
            };
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(format!("reader: read returned {n}"));
    }
}

#[inline(never)]
fn thrcore_poller_blocks(fd: i32) -> Result<(), String> {
    block_term();
    STARTED.fetch_add(1, Ordering::SeqCst);
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: p is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n == 1 {
            return Ok(());
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(format!("poller: poll returned {n}"));
    }
}

#[inline(never)]
fn thrcore_main_waits() {
    while !term_requested() {
        sleep_ms(50);
    }
}

fn main() {
    let args = start();
    let (r, p) = (make_pipe(), make_pipe());
    let reader = std::thread::spawn(move || thrcore_reader_blocks(r[0]));
    let poller = std::thread::spawn(move || thrcore_poller_blocks(p[0]));
    while STARTED.load(Ordering::SeqCst) < 2 {
        sleep_ms(1);
    }
    ready(&args);
    thrcore_main_waits();
    for (fd, byte) in [(r[1], b'r'), (p[1], b'p')] {
        // SAFETY: byte is a readable 1-byte buffer.
        unsafe { libc::write(fd, &byte as *const u8 as *const libc::c_void, 1) };
    }
    let verdict = [reader.join(), poller.join()]
        .into_iter()
        .map(|j| j.unwrap_or_else(|_| Err("a thread panicked".into())))
        .collect::<Result<Vec<()>, String>>()
        .map(|_| ());
    finish(&args, verdict);
}
