//! `manyvmas --n N`: a process with N VMAs of its own (default 10,000):
//! one anonymous region of N pages, every page written, every other page
//! made read-only so that no two neighbours merge. After restore it checks
//! every page and that the VMAs are still apart.

use crust_testprogs::{ensure, finish, ready, self_maps, sleep_ms, start, term_requested};

const PAGE: usize = 4096;

fn setup(n: usize) -> Result<*mut u8, String> {
    // SAFETY: a fresh anonymous mapping; nothing existing is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let p = p as *mut u8;
    for i in 0..n {
        // SAFETY: page i of our mapping, writable.
        unsafe { (p.add(i * PAGE) as *mut u64).write(i as u64 ^ 0x5A5A) };
    }
    for i in (1..n).step_by(2) {
        // SAFETY: page i of our own mapping.
        let r =
            unsafe { libc::mprotect(p.add(i * PAGE) as *mut libc::c_void, PAGE, libc::PROT_READ) };
        ensure!(
            r == 0,
            "mprotect page {i}: {} (vm.max_map_count too low?)",
            std::io::Error::last_os_error()
        );
    }
    Ok(p)
}

fn verify(p: *mut u8, n: usize) -> Result<(), String> {
    for i in 0..n {
        // SAFETY: page i of our mapping, readable.
        let v = unsafe { (p.add(i * PAGE) as *const u64).read() };
        ensure!(v == i as u64 ^ 0x5A5A, "page {i} holds {v:#x}");
    }
    let (b, e) = (p as u64, p as u64 + (n * PAGE) as u64);
    let inside = self_maps()?.iter().filter(|m| m.0 >= b && m.1 <= e).count();
    ensure!(inside == n, "{inside} VMAs in the region, expected {n}");
    Ok(())
}

fn main() {
    let args = start();
    let n = args.num("n", 10_000) as usize;
    crust_testprogs::install_term_handler();
    let p = match setup(n) {
        Ok(p) => p,
        Err(e) => finish(&args, Err(e)),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, verify(p, n))
}
