//! `cow --mb N`: a parent fills N MiB (default 64) of private anonymous
//! memory, then forks a child that only reads it, so every page stays
//! shared copy-on-write between them. A second region is written by the
//! child after the fork (private copies). After restore both check the
//! contents, and the child checks in /proc/self/smaps that the first region
//! is still shared with its parent (its Pss is about half its Rss).

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

fn map(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping; no existing memory is
    // touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p as *mut u8
}

fn fill(p: *mut u8, len: usize, seed: u64) {
    // SAFETY: every caller passes a mapping of its own of `len` bytes.
    unsafe { crust_testprogs::fill_pattern(p, len, seed) }
}

fn check(p: *const u8, len: usize, seed: u64, what: &str) -> Result<(), String> {
    // SAFETY: as in fill.
    unsafe { crust_testprogs::check_pattern(p, len, seed, what) }
}

/// (Rss, Pss) in KiB of the mapping that holds `addr` (the kernel may have
/// merged it with a neighbour).
fn rss_pss(addr: usize) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    let (mut rss, mut pss) = (None, None);
    for l in smaps.lines() {
        if let Some((range, _)) = l.split_once(' ') {
            if let Some((s, _)) = range.split_once('-') {
                let end = range.split_once('-').map(|(_, e)| e).unwrap_or("");
                if let (Ok(start), Ok(end)) =
                    (usize::from_str_radix(s, 16), usize::from_str_radix(end, 16))
                {
                    if inside && rss.is_some() {
                        break;
                    }
                    inside = start <= addr && addr < end;
                    continue;
                }
            }
        }
        if !inside {
            continue;
        }
        let num = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        if l.starts_with("Rss:") {
            rss = num(l);
        } else if l.starts_with("Pss:") {
            pss = num(l);
        }
    }
    Some((rss?, pss?))
}

fn main() {
    let args = start();
    let len = (args.num("mb", 64) as usize) << 20;
    crust_testprogs::install_term_handler();
    let shared = map(len);
    fill(shared, len, 0xC0FFEE);
    let own = map(len / 4);
    // SAFETY: single-threaded; the child only runs the code below.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // Read every page (still shared), write our own region.
        let _ = check(shared, len, 0xC0FFEE, "child before dump");
        fill(own, len / 4, 0xBEEF);
        while !term_requested() {
            sleep_ms(20);
        }
        let r = check(shared, len, 0xC0FFEE, "child shared region")
            .and_then(|_| check(own, len / 4, 0xBEEF, "child own region"))
            .and_then(|_| {
                let (rss, pss) = rss_pss(shared as usize).ok_or("no smaps entry")?;
                // The shared part counts half in Pss; the neighbour this
                // mapping may have merged with (our own region, a quarter
                // of its size) counts whole.
                ensure!(
                    rss * 3 / 4 > pss,
                    "the shared region is not shared with the parent any more: Rss {rss} kB, Pss {pss} kB"
                );
                Ok(())
            });
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        // SAFETY: _exit ends the child.
        unsafe { libc::_exit(i32::from(r.is_err())) };
    }
    fill(own, len / 4, 0xFACE);
    sleep_ms(200);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        check(shared, len, 0xC0FFEE, "parent shared region")?;
        check(own, len / 4, 0xFACE, "parent own region")?;
        // SAFETY: kill and waitpid with a valid out-pointer.
        let st = unsafe {
            libc::kill(child, libc::SIGTERM);
            let mut st = 0;
            libc::waitpid(child, &mut st, 0);
            st
        };
        ensure!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "the child failed its check (status {st:#x})"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
