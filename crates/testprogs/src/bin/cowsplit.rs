//! `cowsplit --kb N`: copy-on-write pages shared across the boundary of two
//! adjacent anonymous VMAs with identical flags, as nginx's workers have
//! after a reload.
//!
//! The root fills region A (N KiB, default 256) and forks M. M maps region
//! B right after A: the kernel cannot merge B into A (A's anon_vma is
//! shared with the root since the fork), so M has two adjacent VMAs with
//! the same flags. M fills B and forks G, which reads both: every page of
//! A and B is then shared copy-on-write by M and G, across the boundary.
//! After restore each process checks the contents (the restored VMAs may
//! be merged with their neighbours: that is the kernel's choice).

use crust_testprogs::{ensure, finish, ready, self_maps, sleep_ms, start, term_requested};

fn map_at(addr: usize, len: usize) -> Result<*mut u8, String> {
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | if addr == 0 {
            0
        } else {
            libc::MAP_FIXED_NOREPLACE
        };
    // SAFETY: a fresh anonymous private mapping; with MAP_FIXED_NOREPLACE
    // nothing mapped is replaced.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    ensure!(
        p != libc::MAP_FAILED && (addr == 0 || p as usize == addr),
        "mmap at {addr:#x}: {}",
        std::io::Error::last_os_error()
    );
    Ok(p as *mut u8)
}

fn fill(p: *mut u8, len: usize, seed: u64) {
    // SAFETY: every caller passes a mapping of its own of `len` bytes.
    unsafe { crust_testprogs::fill_pattern(p, len, seed) }
}

fn check(p: *const u8, len: usize, seed: u64, what: &str) -> Result<(), String> {
    // SAFETY: as in fill.
    unsafe { crust_testprogs::check_pattern(p, len, seed, what) }
}

/// Are [a, a+len) and [a+len, a+2len) two VMAs of this process?
fn two_vmas(a: usize, len: usize) -> Result<(), String> {
    let maps = self_maps()?;
    let has = |s: usize, e: usize| maps.iter().any(|m| m.0 == s as u64 && m.1 == e as u64);
    ensure!(
        has(a, a + len) && has(a + len, a + 2 * len),
        "regions {a:#x}+{len:#x} and the next are not two VMAs: {:x?}",
        maps.iter()
            .filter(|m| m.0 < (a + 2 * len) as u64 && m.1 > a as u64)
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Wait for SIGTERM, pass it on to `child`, and check `child`'s exit.
fn term_and_reap(child: i32) -> Result<(), String> {
    while !term_requested() {
        sleep_ms(20);
    }
    // SAFETY: kill and waitpid with a valid out-pointer.
    let st = unsafe {
        libc::kill(child, libc::SIGTERM);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
        st
    };
    ensure!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child {child} failed its check (status {st:#x})"
    );
    Ok(())
}

fn exit_with(r: Result<(), String>) -> ! {
    if let Err(e) = &r {
        eprintln!("cowsplit {}: {e}", std::process::id());
    }
    // SAFETY: _exit ends this forked process.
    unsafe { libc::_exit(i32::from(r.is_err())) }
}

fn main() {
    let args = start();
    let len = (args.num("kb", 256) as usize) << 10;
    crust_testprogs::install_term_handler();
    // Reserve room for A and B together, keep A.
    let a = match map_at(0, 2 * len) {
        Ok(p) => p,
        Err(e) => finish(&args, Err(e)),
    };
    // SAFETY: unmapping the second half of our own fresh mapping.
    unsafe { libc::munmap(a.add(len) as *mut libc::c_void, len) };
    fill(a, len, 0xA);
    // SAFETY: single-threaded; the child only runs the code below.
    let m = unsafe { libc::fork() };
    if m == 0 {
        let setup = map_at(a as usize + len, len).and_then(|b| {
            fill(b, len, 0xB);
            two_vmas(a as usize, len).map(|_| b)
        });
        let b = match setup {
            Ok(b) => b,
            Err(e) => exit_with(Err(e)),
        };
        // SAFETY: single-threaded; the child only runs the code below.
        let g = unsafe { libc::fork() };
        if g == 0 {
            let _ = check(a, len, 0xA, "G before dump").and_then(|_| check(b, len, 0xB, "G"));
            while !term_requested() {
                sleep_ms(20);
            }
            exit_with(
                check(a, len, 0xA, "G region A").and_then(|_| check(b, len, 0xB, "G region B")),
            );
        }
        let r = term_and_reap(g)
            .and_then(|_| check(a, len, 0xA, "M region A"))
            .and_then(|_| check(b, len, 0xB, "M region B"));
        exit_with(r);
    }
    sleep_ms(300);
    ready(&args);
    let verdict = term_and_reap(m).and_then(|_| check(a, len, 0xA, "root region A"));
    finish(&args, verdict)
}
