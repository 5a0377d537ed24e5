//! `reserve --gb N`: a PROT_NONE reservation of N GiB (default 1024: one
//! TiB) that holds almost no page, as databases and runtimes reserve
//! address space. Inside it, 16 pages are made read-write and filled, and
//! 4 more are filled and then made PROT_NONE again (present pages in a
//! PROT_NONE VMA). After restore both are checked, and the reservation
//! must still be there, whole and PROT_NONE.

use crust_testprogs::{ensure, finish, ready, self_maps, sleep_ms, start, term_requested};

const PAGE: usize = 4096;

fn mprotect(p: *mut u8, len: usize, prot: i32) -> Result<(), String> {
    // SAFETY: p..p+len lies inside our own reservation.
    let r = unsafe { libc::mprotect(p as *mut libc::c_void, len, prot) };
    ensure!(r == 0, "mprotect: {}", std::io::Error::last_os_error());
    Ok(())
}

fn fill(p: *mut u8, len: usize, seed: u64) {
    // SAFETY: every caller passes a mapping of its own of `len` bytes.
    unsafe { crust_testprogs::fill_pattern(p, len, seed) }
}

fn check(p: *const u8, len: usize, seed: u64, what: &str) -> Result<(), String> {
    // SAFETY: as in fill.
    unsafe { crust_testprogs::check_pattern(p, len, seed, what) }
}

/// Set up: (reservation start, length, the read-write part, the part
/// filled then hidden).
fn setup(len: usize) -> Result<(*mut u8, *mut u8, *mut u8), String> {
    // SAFETY: a fresh anonymous mapping; nothing existing is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    ensure!(
        base != libc::MAP_FAILED,
        "mmap of {len:#x} bytes PROT_NONE: {}",
        std::io::Error::last_os_error()
    );
    let base = base as *mut u8;
    // SAFETY: offsets well inside the reservation (len >= 1 GiB).
    let (rw, hidden) = unsafe { (base.add(len / 2), base.add(len / 4)) };
    mprotect(rw, 16 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    fill(rw, 16 * PAGE, 0x5EED);
    mprotect(hidden, 4 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    fill(hidden, 4 * PAGE, 0x41D);
    mprotect(hidden, 4 * PAGE, libc::PROT_NONE)?;
    Ok((base, rw, hidden))
}

fn verify(base: *mut u8, len: usize, rw: *mut u8, hidden: *mut u8) -> Result<(), String> {
    check(rw, 16 * PAGE, 0x5EED, "read-write part")?;
    // The hidden pages merged back with the reservation: one PROT_NONE VMA
    // from base to rw.
    let maps = self_maps()?;
    let (b, e) = (base as u64, base as u64 + len as u64);
    let none: u64 = maps
        .iter()
        .filter(|m| m.0 >= b && m.1 <= e && m.2.starts_with("---"))
        .map(|m| m.1 - m.0)
        .sum();
    ensure!(
        none == (len - 16 * PAGE) as u64,
        "the PROT_NONE reservation holds {none:#x} bytes, expected {:#x}",
        len - 16 * PAGE
    );
    mprotect(hidden, 4 * PAGE, libc::PROT_READ)?;
    check(hidden, 4 * PAGE, 0x41D, "pages hidden behind PROT_NONE")
}

fn main() {
    let args = start();
    let len = (args.num("gb", 1024) as usize) << 30;
    crust_testprogs::install_term_handler();
    let (base, rw, hidden) = match setup(len) {
        Ok(x) => x,
        Err(e) => finish(&args, Err(e)),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, verify(base, len, rw, hidden))
}
