//! `guards`: guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13) in a
//! 16-page anonymous mapping whose last 8 pages are read-only (two VMAs):
//! pages 2-3 guarded, and 6-9, across the two VMAs. Every other page is
//! filled. After restore the same pages (and only those) are guard pages
//! in /proc/self/pagemap, and the others keep their contents. Without
//! MADV_GUARD_INSTALL it reports a pass at once (nothing to check).
//! With `--toggled FILE`, SIGUSR1 changes them: pages 2-3 lose their guard
//! (and are filled again), pages 12-13 get one; FILE is written once done
//! (e2e `snapshot-guards`: the change falls between `dump -R`'s pre-copy
//! and its freeze).

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
const PAGES: usize = 16;
const MADV_GUARD_INSTALL: i32 = 102;

fn guarded(i: usize, toggled: bool) -> bool {
    match toggled {
        false => matches!(i, 2 | 3 | 6..=9),
        true => matches!(i, 6..=9 | 12 | 13),
    }
}

const MADV_GUARD_REMOVE: i32 = 103;

static USR1: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The change of `--toggled`: guards off pages 2-3 (filled again), on
/// pages 12-13.
fn toggle(base: *mut u8) -> Result<(), String> {
    let at = |i: usize| base.wrapping_add(i * PAGE) as *mut libc::c_void;
    // SAFETY: pages 2-3 of our own mapping.
    let r = unsafe { libc::madvise(at(2), 2 * PAGE, MADV_GUARD_REMOVE) };
    ensure!(
        r == 0,
        "madvise(MADV_GUARD_REMOVE): {}",
        std::io::Error::last_os_error()
    );
    for i in [2, 3] {
        // SAFETY: page i of our own mapping, writable again.
        unsafe { crust_testprogs::fill_pattern(base.add(i * PAGE), PAGE, 0x6A2D + i as u64) };
    }
    // SAFETY: pages 12-13 of our own mapping, whose contents we give up.
    let r = unsafe { libc::madvise(at(12), 2 * PAGE, MADV_GUARD_INSTALL) };
    ensure!(
        r == 0,
        "madvise(MADV_GUARD_INSTALL): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn setup() -> Result<Option<*mut u8>, String> {
    // SAFETY: a fresh anonymous mapping; nothing existing is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(
        base != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let base = base as *mut u8;
    for i in 0..PAGES {
        // SAFETY: page i of our own mapping, PAGES pages long.
        unsafe { crust_testprogs::fill_pattern(base.add(i * PAGE), PAGE, 0x6A2D + i as u64) };
    }
    let half = base.wrapping_add(PAGES / 2 * PAGE) as *mut libc::c_void;
    // SAFETY: the second half of our own mapping.
    let r = unsafe { libc::mprotect(half, PAGES / 2 * PAGE, libc::PROT_READ) };
    ensure!(r == 0, "mprotect: {}", std::io::Error::last_os_error());
    for (first, n) in [(2usize, 2usize), (6, 4)] {
        let at = base.wrapping_add(first * PAGE) as *mut libc::c_void;
        // SAFETY: pages of our own mapping, whose contents we give up.
        let r = unsafe { libc::madvise(at, n * PAGE, MADV_GUARD_INSTALL) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if first == 2 && e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(None);
            }
            return Err(format!("madvise(MADV_GUARD_INSTALL): {e}"));
        }
    }
    Ok(Some(base))
}

fn verify(base: *mut u8, toggled: bool) -> Result<(), String> {
    let pm = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    for i in 0..PAGES {
        let addr = base as u64 + (i * PAGE) as u64;
        let mut b = [0u8; 8];
        pm.read_exact_at(&mut b, addr / PAGE as u64 * 8)
            .map_err(|e| format!("reading pagemap: {e}"))?;
        let guard = u64::from_le_bytes(b) >> 58 & 1 == 1;
        ensure!(
            guard == guarded(i, toggled),
            "page {i}: guard {guard}, expected {}",
            guarded(i, toggled)
        );
        if !guard {
            let what = format!("page {i}");
            // SAFETY: a readable page of our own mapping.
            unsafe {
                crust_testprogs::check_pattern(base.add(i * PAGE), PAGE, 0x6A2D + i as u64, &what)?
            };
        }
    }
    Ok(())
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let base = match setup() {
        Ok(x) => x,
        Err(e) => finish(&args, Err(e)),
    };
    let toggled_file = args.opts.get("toggled").cloned();
    if toggled_file.is_some() {
        // SAFETY: a handler that only stores to an atomic.
        unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    }
    ready(&args);
    let mut toggled = false;
    while !term_requested() {
        if let (Some(f), Some(b), false) = (&toggled_file, base, toggled) {
            if USR1.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = toggle(b) {
                    finish(&args, Err(e));
                }
                toggled = true;
                let _ = crust_testprogs::write_atomic(std::path::Path::new(f), "1\n");
            }
        }
        sleep_ms(20);
    }
    match base {
        Some(b) => finish(&args, verify(b, toggled)),
        None => finish(&args, Ok(())),
    }
}
