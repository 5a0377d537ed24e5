//! `shmchild`: a MAP_SHARED|MAP_ANONYMOUS region shared by a parent and
//! the child it forked. After restore a write by one is seen by the other,
//! both ways.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::atomic::{AtomicU64, Ordering};

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    // SAFETY: a fresh shared anonymous mapping of one page.
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
    // SAFETY: the page is ours and suitably aligned for two u64 atomics.
    let cells = unsafe { &*(p as *const [AtomicU64; 2]) };
    cells[0].store(1, Ordering::SeqCst);
    // SAFETY: single-threaded program; the child runs the loop below.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // Echo what the parent writes in cell 0 into cell 1, + 1000.
        loop {
            let v = cells[0].load(Ordering::SeqCst);
            if v >= 100 {
                cells[1].store(v + 1000, Ordering::SeqCst);
            }
            if v == 999 {
                // SAFETY: _exit ends the child.
                unsafe { libc::_exit(0) };
            }
            sleep_ms(5);
        }
    }
    sleep_ms(100);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        cells[0].store(123, Ordering::SeqCst);
        let mut seen = 0;
        for _ in 0..400 {
            seen = cells[1].load(Ordering::SeqCst);
            if seen == 1123 {
                break;
            }
            sleep_ms(5);
        }
        ensure!(
            seen == 1123,
            "the child did not see the parent's write through the shared mapping (cell 1 is {seen})"
        );
        cells[0].store(999, Ordering::SeqCst);
        // SAFETY: waitpid with a valid out-pointer.
        let st = unsafe {
            let mut st = 0;
            libc::waitpid(child, &mut st, 0);
            st
        };
        ensure!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "child status {st:#x}"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
