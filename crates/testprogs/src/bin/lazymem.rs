//! `lazymem --mb N`: memory for lazy restore (issue 15). N MiB (default 64)
//! of pseudo-random data with its checksum kept elsewhere, and three 8 MiB
//! regions of page-numbered patterns. On SIGUSR1 (sent right after a lazy
//! restore, while most pages are still in the images) it (with `--fork 1`)
//! forks a child
//! that checks the big region and the patterns (the child's pages come
//! through a userfaultfd of its own), drops the first half of one region
//! with MADV_DONTNEED (it must read zero after), moves another with
//! mremap (its pages must follow), unmaps half of the third, and checks
//! all of it. At SIGTERM: everything checked again, and its fd table must
//! be what it was (no userfaultfd left behind).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term, XorShift};
use std::sync::atomic::{AtomicBool, Ordering};

const SEED: u64 = 0x1A2B_3C4D_5E6F_7081;
const PAGE: usize = 4096;
const REGION: usize = 8 << 20;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_sig: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn map_anon(len: usize) -> *mut u64 {
    // SAFETY: a fresh private anonymous mapping aliases nothing.
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
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p as *mut u64
}

fn words<'a>(p: *mut u64, len: usize) -> &'a mut [u64] {
    // SAFETY: `p` is a live mapping of at least `len` bytes made by
    // map_anon (or moved by mremap), never unmapped while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(p, len / 8) }
}

fn marker(tag: u64, page: usize) -> u64 {
    (tag << 40) | page as u64
}

fn pattern(p: *mut u64, tag: u64) {
    for (page, chunk) in words(p, REGION).chunks_mut(PAGE / 8).enumerate() {
        chunk.fill(marker(tag, page));
    }
}

fn check_pattern(p: *mut u64, tag: u64, from: usize, to: usize) -> Result<(), String> {
    for page in from..to {
        let w = &words(p, REGION)[page * PAGE / 8..(page + 1) * PAGE / 8];
        ensure!(
            w.iter().all(|&x| x == marker(tag, page)),
            "region {tag} page {page} is {:#x}, expected {:#x}",
            w[0],
            marker(tag, page)
        );
    }
    Ok(())
}

fn checksum(w: &[u64]) -> u64 {
    w.iter().fold(0u64, |s, &v| s.rotate_left(1) ^ v)
}

fn fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let l = std::fs::read_link(e.path()).ok()?;
                    Some(format!(
                        "{} {}",
                        e.file_name().to_string_lossy(),
                        l.display()
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    // The read_dir's own fd differs between calls.
    v.retain(|s| !s.contains("/proc/") || !s.contains("/fd"));
    v
}

struct Mem {
    big: *mut u64,
    big_len: usize,
    sum: u64,
    b: *mut u64,
    c: *mut u64,
    d: *mut u64,
}

impl Mem {
    fn check_big(&self) -> Result<(), String> {
        let got = checksum(words(self.big, self.big_len));
        ensure!(
            got == self.sum,
            "big region checksum {got:#x}, expected {:#x}",
            self.sum
        );
        Ok(())
    }

    /// The events, right after the restore.
    fn events(&mut self, fork: bool) -> Result<(), String> {
        if fork {
            self.fork_and_check()?;
        }
        self.change()
    }

    /// A child checks the memory (through a userfaultfd of its own).
    fn fork_and_check(&self) -> Result<(), String> {
        // SAFETY: fork in a single-threaded program; the child only reads
        // memory and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = self.check_big().is_ok()
                && check_pattern(self.b, 2, 0, REGION / PAGE).is_ok()
                && check_pattern(self.c, 3, 0, REGION / PAGE).is_ok();
            // SAFETY: _exit ends the child without running anything else.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ensure!(child > 0, "fork failed");
        let mut st = 0;
        // SAFETY: waits for our own child; `st` is writable.
        unsafe { libc::waitpid(child, &mut st, 0) };
        ensure!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "the forked child found wrong memory (status {st:#x})"
        );
        Ok(())
    }

    /// DONTNEED, mremap, munmap.
    fn change(&mut self) -> Result<(), String> {
        // SAFETY: the first half of region b, ours.
        let r =
            unsafe { libc::madvise(self.b as *mut libc::c_void, REGION / 2, libc::MADV_DONTNEED) };
        ensure!(r == 0, "madvise failed");
        // A new place for region c: reserve, then move over it.
        let to = map_anon(REGION);
        // SAFETY: moves our own mapping c onto our own reservation `to`.
        let moved = unsafe {
            libc::mremap(
                self.c as *mut libc::c_void,
                REGION,
                REGION,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        ensure!(moved == to as *mut libc::c_void, "mremap failed");
        self.c = to;
        // SAFETY: the first half of region d, ours, never used again.
        let r = unsafe { libc::munmap(self.d as *mut libc::c_void, REGION / 2) };
        ensure!(r == 0, "munmap failed");
        self.d = self.d.wrapping_add(REGION / 2 / 8);
        self.check_all()
    }

    fn check_all(&self) -> Result<(), String> {
        self.check_big()?;
        ensure!(
            words(self.b, REGION / 2).iter().all(|&w| w == 0),
            "region 2 after MADV_DONTNEED is not zero"
        );
        check_pattern(self.b, 2, REGION / PAGE / 2, REGION / PAGE)?;
        check_pattern(self.c, 3, 0, REGION / PAGE)?;
        for page in 0..REGION / PAGE / 2 {
            let w = &words(self.d, REGION / 2)[page * PAGE / 8..(page + 1) * PAGE / 8];
            let want = marker(4, page + REGION / PAGE / 2);
            ensure!(
                w.iter().all(|&x| x == want),
                "region 4 page {page} is wrong"
            );
        }
        Ok(())
    }
}

fn main() {
    let args = start();
    let mb = args.num("mb", 64) as usize;
    let fork = args.num("fork", 0) != 0;
    let big_len = mb << 20;
    let big = map_anon(big_len);
    let mut rng = XorShift(SEED);
    for w in words(big, big_len).iter_mut() {
        *w = rng.next_u64();
    }
    let sum = checksum(words(big, big_len));
    let (b, c, d) = (map_anon(REGION), map_anon(REGION), map_anon(REGION));
    pattern(b, 2);
    pattern(c, 3);
    pattern(d, 4);
    let mut mem = Mem {
        big,
        big_len,
        sum,
        b,
        c,
        d,
    };
    // SAFETY: the handler only stores to an atomic; sigaction is zeroed
    // (valid) with an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let before = fds();
    ready(&args);
    let mut verdict = Ok(());
    let mut done = false;
    wait_for_term(5, || {
        if GO.load(Ordering::SeqCst) && !done {
            done = true;
            verdict = mem.events(fork);
        }
    });
    let verdict = verdict
        .and_then(|()| {
            ensure!(done, "SIGUSR1 never came");
            Ok(())
        })
        .and_then(|()| mem.check_all())
        .and_then(|()| {
            let after = fds();
            ensure!(after == before, "fds were {before:?}, now {after:?}");
            Ok(())
        });
    finish(&args, verdict)
}
