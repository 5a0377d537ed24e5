//! `lazymem --mb N [--fork 1] [--events LIST]`: memory for lazy restore
//! (issue 15). N MiB (default 64) of pseudo-random data with its checksum
//! kept elsewhere, and four 8 MiB regions of page-numbered patterns. On
//! SIGUSR1 (sent right after a lazy restore, while most pages are still in
//! the images) it makes the events of LIST (comma-separated; default
//! `dontneed,remap,unmap`, `--fork 1` puts `fork` first), each right after
//! the other, then checks all of its memory:
//!
//! - `fork`: a child checks the big region and the patterns (its pages
//!   come through a userfaultfd of its own) and exits;
//! - `dontneed`: MADV_DONTNEED of the first half of region 2 (it must read
//!   zero after); `free`: MADV_FREE of it (each page reads zero or what it
//!   held);
//! - `remap`: region 3 moved with mremap (its pages must follow);
//! - `unmap`: the first half of region 4 unmapped (the rest stays right);
//! - `mprotect`: a few pages of region 5 made read-only, which splits its
//!   mapping in the kernel (pages put in across the cut must still land);
//! - `exit`: a child forked before the dump, with 8 MiB of its own memory,
//!   is told to check half of it and exit (its other pages never come in).
//!
//! At SIGTERM: everything checked again, and its fd table must be what it
//! was (no userfaultfd left behind).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term, XorShift};
use std::sync::atomic::{AtomicBool, Ordering};

const SEED: u64 = 0x1A2B_3C4D_5E6F_7081;
const PAGE: usize = 4096;
const REGION: usize = 8 << 20;
const PAGES: usize = REGION / PAGE;
/// Pages of region 5 made read-only by `mprotect` (each cuts its mapping).
const RO_PAGES: [usize; 4] = [1, 17, 300, PAGES - 2];

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_sig: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn map_anon(len: usize) -> *mut u64 {
    crust_testprogs::map_anon_words(len).as_mut_ptr()
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

fn page_words<'a>(p: *mut u64, page: usize) -> &'a [u64] {
    words(p.wrapping_add(page * PAGE / 8), PAGE)
}

fn check_pattern(p: *mut u64, tag: u64, from: usize, to: usize) -> Result<(), String> {
    for page in from..to {
        let w = page_words(p, page);
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

/// Wait for our child `child`; Ok if it exited with 0.
fn reap(child: i32, what: &str) -> Result<(), String> {
    let mut st = 0;
    // SIGTERM (its handler has no SA_RESTART) may come while the child
    // still checks: wait again.
    let r = loop {
        // SAFETY: waits for our own child; `st` is writable.
        let r = unsafe { libc::waitpid(child, &mut st, 0) };
        if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break r;
        }
    };
    ensure!(
        r == child,
        "waitpid of {what} failed ({r}: {})",
        std::io::Error::last_os_error()
    );
    ensure!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{what} found wrong memory (status {st:#x})"
    );
    Ok(())
}

/// Which events were made (and so what the memory must hold).
#[derive(Default)]
struct Done {
    dontneed: bool,
    free: bool,
    remap: bool,
    unmap: bool,
    mprotect: bool,
}

struct Mem {
    big: *mut u64,
    big_len: usize,
    sum: u64,
    b: *mut u64,
    c: *mut u64,
    d: *mut u64,
    e: *mut u64,
    /// The child forked before the dump (`exit`), until it exits.
    child: Option<i32>,
    done: Done,
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
    fn events(&mut self, list: &[String]) -> Result<(), String> {
        for ev in list {
            match ev.as_str() {
                "fork" => self.fork_and_check()?,
                "dontneed" => self.drop_half(libc::MADV_DONTNEED)?,
                "free" => self.drop_half(libc::MADV_FREE)?,
                "remap" => self.remap()?,
                "unmap" => self.unmap()?,
                "mprotect" => self.mprotect()?,
                "exit" => self.child_exit()?,
                other => return Err(format!("unknown event {other:?}")),
            }
        }
        self.check_all()
    }

    /// A child checks the memory (through a userfaultfd of its own).
    fn fork_and_check(&self) -> Result<(), String> {
        // SAFETY: fork in a single-threaded program; the child only reads
        // memory and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = self.check_all().is_ok();
            // SAFETY: _exit ends the child without running anything else.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ensure!(child > 0, "fork failed");
        reap(child, "the forked child")
    }

    /// MADV_DONTNEED or MADV_FREE of the first half of region 2.
    fn drop_half(&mut self, advice: libc::c_int) -> Result<(), String> {
        // SAFETY: the first half of region b, ours.
        let r = unsafe { libc::madvise(self.b as *mut libc::c_void, REGION / 2, advice) };
        ensure!(r == 0, "madvise({advice}) failed");
        if advice == libc::MADV_FREE {
            self.done.free = true;
        } else {
            self.done.dontneed = true;
        }
        Ok(())
    }

    /// Region 3 to a new place: reserve, then move over it.
    fn remap(&mut self) -> Result<(), String> {
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
        self.done.remap = true;
        Ok(())
    }

    fn unmap(&mut self) -> Result<(), String> {
        // SAFETY: the first half of region d, ours, never used again.
        let r = unsafe { libc::munmap(self.d as *mut libc::c_void, REGION / 2) };
        ensure!(r == 0, "munmap failed");
        self.d = self.d.wrapping_add(REGION / 2 / 8);
        self.done.unmap = true;
        Ok(())
    }

    fn mprotect(&mut self) -> Result<(), String> {
        for page in RO_PAGES {
            // SAFETY: one page of region e, ours; only read from now on.
            let r = unsafe {
                libc::mprotect(
                    self.e.wrapping_add(page * PAGE / 8) as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ,
                )
            };
            ensure!(r == 0, "mprotect failed");
        }
        self.done.mprotect = true;
        Ok(())
    }

    /// The child forked before the dump checks part of its memory and
    /// exits.
    fn child_exit(&mut self) -> Result<(), String> {
        let child = self.child.take().ok_or("no child forked before the dump")?;
        // SAFETY: a signal to our own child.
        let r = unsafe { libc::kill(child, libc::SIGUSR1) };
        ensure!(r == 0, "kill of the child failed");
        reap(child, "the child forked before the dump")
    }

    fn check_all(&self) -> Result<(), String> {
        self.check_big()?;
        let half = PAGES / 2;
        if self.done.dontneed {
            ensure!(
                words(self.b, REGION / 2).iter().all(|&w| w == 0),
                "region 2 after MADV_DONTNEED is not zero"
            );
        } else if self.done.free {
            for page in 0..half {
                let w = page_words(self.b, page);
                ensure!(
                    w.iter().all(|&x| x == 0) || w.iter().all(|&x| x == marker(2, page)),
                    "region 2 page {page} after MADV_FREE is {:#x}: neither zero nor its own",
                    w[0]
                );
            }
        } else {
            check_pattern(self.b, 2, 0, half)?;
        }
        check_pattern(self.b, 2, half, PAGES)?;
        check_pattern(self.c, 3, 0, PAGES)?;
        let d_shift = if self.done.unmap { half } else { 0 };
        for page in 0..PAGES - d_shift {
            let w = page_words(self.d, page);
            let want = marker(4, page + d_shift);
            ensure!(
                w.iter().all(|&x| x == want),
                "region 4 page {page} is {:#x}, expected {want:#x}",
                w[0]
            );
        }
        check_pattern(self.e, 5, 0, PAGES)?;
        if self.done.mprotect {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            let at = format!("{:x}-", self.e as usize + PAGE * RO_PAGES[0]);
            ensure!(
                maps.lines()
                    .any(|l| l.starts_with(&at) && l.contains(" r--p ")),
                "region 5 page {} is not read-only",
                RO_PAGES[0]
            );
        }
        Ok(())
    }
}

/// The child of `exit`: 8 MiB of its own (region 6); on SIGUSR1 it checks
/// the first half and exits. Exits too when its parent is gone.
fn exit_child() -> i32 {
    // SAFETY: getpid has no arguments.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded program.
    let child = unsafe { libc::fork() };
    if child != 0 {
        if child < 0 {
            die("fork");
        }
        return child;
    }
    let f = map_anon(REGION);
    pattern(f, 6);
    loop {
        if GO.load(Ordering::SeqCst) {
            let ok = check_pattern(f, 6, 0, PAGES / 2).is_ok();
            // SAFETY: _exit ends the child without running anything else.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        // SAFETY: getppid has no arguments.
        if unsafe { libc::getppid() } != parent && !GO.load(Ordering::SeqCst) {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        crust_testprogs::sleep_ms(5);
    }
}

fn main() {
    let args = start();
    let mb = args.num("mb", 64) as usize;
    let mut list: Vec<String> = args
        .opt("events")
        .unwrap_or("dontneed,remap,unmap")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if args.num("fork", 0) != 0 {
        list.insert(0, "fork".into());
    }
    let big_len = mb << 20;
    let big = map_anon(big_len);
    let mut rng = XorShift(SEED);
    for w in words(big, big_len).iter_mut() {
        *w = rng.next_u64();
    }
    let sum = checksum(words(big, big_len));
    let (b, c, d, e) = (
        map_anon(REGION),
        map_anon(REGION),
        map_anon(REGION),
        map_anon(REGION),
    );
    pattern(b, 2);
    pattern(c, 3);
    pattern(d, 4);
    pattern(e, 5);
    // SAFETY: the handler only stores to an atomic; sigaction is zeroed
    // (valid) with an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let child = list.iter().any(|e| e == "exit").then(exit_child);
    let mut mem = Mem {
        big,
        big_len,
        sum,
        b,
        c,
        d,
        e,
        child,
        done: Done::default(),
    };
    let before = fds();
    ready(&args);
    let mut verdict = Ok(());
    let mut done = false;
    wait_for_term(5, || {
        if GO.load(Ordering::SeqCst) && !done {
            done = true;
            verdict = mem.events(&list);
        }
    });
    if let Some(c) = mem.child.take() {
        // SAFETY: a signal to our own child, then its reaping.
        unsafe {
            libc::kill(c, libc::SIGKILL);
            libc::waitpid(c, std::ptr::null_mut(), 0);
        }
    }
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
