//! `snapwriter --mb N --go FILE`: N MiB (default 64) of anonymous memory
//! rewritten without pause while FILE exists, so that a `dump -R` copies
//! it while it changes. Write number k (k = 1, 2, ...) fills page
//! `order(k)` whole with words naming (k, page), then stores k in a header
//! page: at any one moment, with the header at S, every page holds the
//! words of the last write to it numbered at most S, except the page of
//! write S+1, which may be part old, part new. Every fourth write goes
//! through the kernel (read(2) from a pipe into the page). On SIGTERM the
//! writer stops and the whole region is checked against that rule: an
//! image that is not one moment's (a page saved after it changed, or
//! before an earlier write to it) fails it. The writer stops by itself
//! once FILE is gone (checked every 256 writes), so that a restored copy
//! keeps most of what the image held until it is checked.
//!
//! With `--churn 1`, every 64th write also changes the mappings of a
//! second region of 16 MiB whose pages hold a fixed pattern: a piece of
//! 64 KiB dropped (`MADV_DONTNEED`) and filled again, the region moved
//! (`mremap`), or a scratch mapping made, filled and unmapped. Checked on
//! SIGTERM: each of its pages holds the pattern or is zero (a piece
//! dropped and not yet filled again: at most 16 pages).

use crust_testprogs::{die, ensure, finish, ready, start, term_requested, XorShift};
use std::sync::atomic::{AtomicU64, Ordering};

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

/// The page written by write number `k`.
fn order(k: u64, pages: u64) -> u64 {
    let mut x = XorShift(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    x.next_u64() % pages
}

/// Word `i` of `page` after write `k` (0: never written).
fn word(k: u64, page: u64, i: usize) -> u64 {
    (k << 24) ^ (page << 9) ^ i as u64
}

fn page_words(k: u64, page: u64) -> [u64; WORDS] {
    let mut w = [0u64; WORDS];
    for (i, x) in w.iter_mut().enumerate() {
        *x = word(k, page, i);
    }
    w
}

fn write_page(dst: &mut [u64], k: u64, page: u64, pipe: [i32; 2]) {
    let src = page_words(k, page);
    if k.is_multiple_of(4) {
        // SAFETY: both buffers are live and PAGE bytes long.
        let ok = unsafe {
            libc::write(pipe[1], src.as_ptr().cast(), PAGE) == PAGE as isize
                && libc::read(pipe[0], dst.as_mut_ptr().cast(), PAGE) == PAGE as isize
        };
        if !ok {
            die("pipe write/read of a page");
        }
    } else {
        dst.copy_from_slice(&src);
    }
}

fn check(data: &[u64], pages: u64, s: u64) -> Result<(), String> {
    let mut last = vec![0u64; pages as usize];
    for k in 1..=s {
        last[order(k, pages) as usize] = k;
    }
    let torn = order(s + 1, pages);
    for p in 0..pages {
        let words = &data[p as usize * WORDS..(p as usize + 1) * WORDS];
        let k = last[p as usize];
        for (i, w) in words.iter().enumerate() {
            let ok = *w == word(k, p, i) || (p == torn && *w == word(s + 1, p, i));
            ensure!(
                ok,
                "page {p} word {i} is {w:#x}: expected write {k} ({:#x}) with the header at {s}",
                word(k, p, i)
            );
        }
    }
    Ok(())
}

const CHURN_LEN: usize = 16 << 20;
const PIECE: usize = 64 << 10;

fn churn_word(page: usize, i: usize) -> u64 {
    ((page as u64) << 12) ^ i as u64 ^ 0x5a5a_0000_0000
}

fn churn_fill(base: usize, from: usize, len: usize) {
    for off in (from..from + len).step_by(8) {
        let (page, i) = (off / PAGE, (off % PAGE) / 8);
        // SAFETY: [base, base + CHURN_LEN) is the churn region, mapped
        // read-write; off < CHURN_LEN.
        unsafe { *((base + off) as *mut u64) = churn_word(page, i) };
    }
}

fn map_rw(len: usize, prot: i32) -> usize {
    // SAFETY: a fresh anonymous private mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p as usize
}

/// One step of the churn of the region at `base`; returns where it is now.
fn churn_step(base: usize, j: u64) -> usize {
    match j % 3 {
        0 => {
            let from = (j as usize * 7 * PIECE) % CHURN_LEN;
            // SAFETY: a piece inside the churn region.
            if unsafe { libc::madvise((base + from) as *mut _, PIECE, libc::MADV_DONTNEED) } != 0 {
                die("madvise(MADV_DONTNEED)");
            }
            churn_fill(base, from, PIECE);
            base
        }
        1 => {
            let to = map_rw(CHURN_LEN, libc::PROT_NONE);
            // SAFETY: the whole churn region moved over a placeholder of
            // ours of the same length.
            let p = unsafe {
                libc::mremap(
                    base as *mut _,
                    CHURN_LEN,
                    CHURN_LEN,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    to as *mut libc::c_void,
                )
            };
            if p == libc::MAP_FAILED {
                die("mremap");
            }
            p as usize
        }
        _ => {
            let s = map_rw(1 << 20, libc::PROT_READ | libc::PROT_WRITE);
            // SAFETY: the scratch mapping just made, 1 MiB long.
            unsafe {
                std::ptr::write_bytes(s as *mut u8, 0x77, 1 << 20);
                libc::munmap(s as *mut _, 1 << 20);
            }
            base
        }
    }
}

fn churn_check(base: usize) -> Result<(), String> {
    let mut zero = 0;
    for page in 0..CHURN_LEN / PAGE {
        // SAFETY: the churn region is mapped, CHURN_LEN bytes.
        let words =
            unsafe { std::slice::from_raw_parts((base + page * PAGE) as *const u64, WORDS) };
        if words.iter().all(|w| *w == 0) {
            zero += 1;
            continue;
        }
        for (i, w) in words.iter().enumerate() {
            ensure!(
                *w == churn_word(page, i),
                "churn region page {page} word {i} is {w:#x}, expected {:#x}",
                churn_word(page, i)
            );
        }
    }
    ensure!(zero <= PIECE / PAGE, "{zero} churn pages are zero");
    Ok(())
}

fn main() {
    let args = start();
    let pages = (args.num("mb", 64) << 20) / PAGE as u64;
    let go = args.path("go");
    let go_c = crust_testprogs::cpath(&go);
    let data = crust_testprogs::map_anon_words(pages as usize * PAGE);
    let header: &'static AtomicU64 = {
        let h = crust_testprogs::map_anon_words(PAGE);
        // SAFETY: the header page is mapped for the life of the process
        // and only used through this atomic.
        unsafe { &*(h.as_mut_ptr() as *const AtomicU64) }
    };
    for p in 0..pages {
        let at = p as usize * WORDS;
        data[at..at + WORDS].copy_from_slice(&page_words(0, p));
    }
    let pipe = crust_testprogs::make_pipe();
    let churn = args.num("churn", 0) != 0;
    let mut cbase = 0;
    if churn {
        cbase = map_rw(CHURN_LEN, libc::PROT_READ | libc::PROT_WRITE);
        churn_fill(cbase, 0, CHURN_LEN);
    }
    ready(&args);
    let mut writing = true;
    while !term_requested() {
        if !writing {
            crust_testprogs::sleep_ms(20);
            continue;
        }
        let k = header.load(Ordering::Relaxed) + 1;
        let p = order(k, pages);
        let at = p as usize * WORDS;
        write_page(&mut data[at..at + WORDS], k, p, pipe);
        header.store(k, Ordering::Release);
        if churn && k.is_multiple_of(64) {
            cbase = churn_step(cbase, k / 64);
        }
        // SAFETY: access(2) on a live NUL-terminated path.
        if k.is_multiple_of(256) && unsafe { libc::access(go_c.as_ptr(), libc::F_OK) } != 0 {
            writing = false;
        }
    }
    let s = header.load(Ordering::Acquire);
    eprintln!("snapwriter: {s} writes");
    let verdict = check(data, pages, s).and_then(|()| match churn {
        true => churn_check(cbase),
        false => Ok(()),
    });
    finish(&args, verdict);
}
