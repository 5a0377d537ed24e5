//! `shmanon [--mb N]`: shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS).
//!
//! - A region of N MiB (default 4) holding a pattern on three pages of every
//!   four; every fourth page is never touched and one page is only read.
//!   Its third quarter is made read-only, so the object has three VMAs, two of
//!   them at a non-zero offset.
//! - An alias: the last quarter of the object mapped a second time (mremap
//!   with old_len 0), so one object is mapped twice.
//! - A second, small object that is never touched.
//! - A private anonymous region whose odd pages were only read: they map the
//!   shared zero page, which the dump leaves out; they must read as zeros.
//!
//! After restore it checks the contents, that /proc/self/maps shows every
//! mapping shared ("s", "/dev/zero (deleted)") with one inode per object,
//! that a write through the alias shows in the region, and that a child it
//! forks writes into the same memory.

use crust_testprogs::{die, ensure, finish, ready, self_maps, start, wait_for_term};

const PAGE: usize = 4096;
const SMALL: usize = 16 * PAGE;
const PRIVATE_PAGES: usize = 64;

fn pattern_word(page: usize, i: usize) -> u64 {
    0x5AA5_0000_0000_0000 ^ ((page as u64) << 20) ^ i as u64
}

fn map_anon(len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping at a kernel-chosen address overlaps nothing we own.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p as *mut u8
}

fn read_word(p: *const u8, off: usize) -> u64 {
    // SAFETY: every caller passes an 8-aligned offset inside one of our
    // readable mappings.
    unsafe { std::ptr::read_volatile(p.add(off) as *const u64) }
}

fn write_word(p: *mut u8, off: usize, v: u64) {
    // SAFETY: every caller passes an 8-aligned offset inside one of our
    // writable mappings.
    unsafe { std::ptr::write_volatile(p.add(off) as *mut u64, v) }
}

/// Which pages of the big region hold the pattern.
fn written(page: usize) -> bool {
    page % 4 != 3
}

fn main() {
    let args = start();
    let mb = args.num("mb", 4) as usize;
    let len = mb.max(1) << 20;
    let npages = len / PAGE;
    let quarter = len / 4;
    let big = map_anon(len, libc::MAP_SHARED);
    for page in (0..npages).filter(|p| written(*p)) {
        for i in 0..PAGE / 8 {
            write_word(big, page * PAGE + i * 8, pattern_word(page, i));
        }
    }
    // Page 3 is never written, only read: it must still read as zeros.
    let _ = read_word(big, 3 * PAGE);
    // Third quarter read-only: three VMAs.
    // SAFETY: a range inside our own mapping.
    if unsafe {
        libc::mprotect(
            big.add(2 * quarter) as *mut libc::c_void,
            quarter,
            libc::PROT_READ,
        )
    } != 0
    {
        die("mprotect");
    }
    // The last quarter once more, elsewhere.
    // SAFETY: old_len 0 on a shared mapping makes a second mapping of the
    // same pages at a kernel-chosen address; nothing of ours is moved.
    let alias = unsafe {
        libc::mremap(
            big.add(3 * quarter) as *mut libc::c_void,
            0,
            quarter,
            libc::MREMAP_MAYMOVE,
        )
    };
    if alias == libc::MAP_FAILED {
        die("mremap");
    }
    let alias = alias as *mut u8;
    let small = map_anon(SMALL, libc::MAP_SHARED);
    let private = map_anon(PRIVATE_PAGES * PAGE, libc::MAP_PRIVATE);
    let mut sum = 0u64;
    for page in 0..PRIVATE_PAGES {
        if page % 2 == 0 {
            write_word(private, page * PAGE + 8, pattern_word(page, 1));
        } else {
            sum |= read_word(private, page * PAGE + 8);
        }
    }
    if sum != 0 {
        eprintln!("fresh private memory is not zero");
        std::process::exit(3);
    }

    ready(&args);
    wait_for_term(20, || {});

    let verdict = (|| {
        for page in 0..npages {
            for i in [0, 1, PAGE / 16, PAGE / 8 - 1] {
                let got = read_word(big, page * PAGE + i * 8);
                let want = if written(page) {
                    pattern_word(page, i)
                } else {
                    0
                };
                ensure!(
                    got == want,
                    "page {page} word {i}: {got:#x}, expected {want:#x}"
                );
            }
        }
        for off in (0..quarter).step_by(PAGE) {
            let a = read_word(alias, off);
            let b = read_word(big, 3 * quarter + off);
            ensure!(a == b, "alias differs from the region at {off:#x}");
        }
        for off in (0..SMALL).step_by(8) {
            ensure!(
                read_word(small, off) == 0,
                "small object not zero at {off:#x}"
            );
        }

        for page in 0..PRIVATE_PAGES {
            let want = if page % 2 == 0 {
                pattern_word(page, 1)
            } else {
                0
            };
            for off in (0..PAGE).step_by(8) {
                let got = read_word(private, page * PAGE + off);
                let w = if off == 8 { want } else { 0 };
                ensure!(
                    got == w,
                    "private page {page} at {off}: {got:#x}, expected {w:#x}"
                );
            }
        }

        let maps = self_maps()?;
        let find = |addr: u64| {
            maps.iter()
                .find(|(s, e, _, _)| *s <= addr && addr < *e)
                .cloned()
                .ok_or_else(|| format!("no mapping contains {addr:#x}"))
        };
        let shm_name = "/dev/zero (deleted)";
        let b = big as u64;
        let q = quarter as u64;
        for (addr, perms) in [
            (b, "rw-s"),
            (b + 2 * q, "r--s"),
            (b + 3 * q, "rw-s"),
            (alias as u64, "rw-s"),
            (small as u64, "rw-s"),
        ] {
            let m = find(addr)?;
            ensure!(
                m.2 == perms && m.3.ends_with(shm_name),
                "mapping at {addr:#x} is {} {:?}, expected {perms} {shm_name}",
                m.2,
                m.3
            );
        }
        let first = find(b)?;
        let mid = find(b + 2 * q)?;
        ensure!(
            first.1 == b + 2 * q && mid.0 == b + 2 * q && mid.1 == b + 3 * q,
            "the region's VMAs are {first:x?} and {mid:x?}"
        );
        let inode = |addr: u64| -> Result<String, String> {
            let text = std::fs::read_to_string("/proc/self/maps")
                .map_err(|e| format!("read /proc/self/maps: {e}"))?;
            for line in text.lines() {
                let mut cols = line.split_whitespace();
                let range = cols.next().unwrap_or("");
                let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
                let s = u64::from_str_radix(s, 16).unwrap_or(0);
                let e = u64::from_str_radix(e, 16).unwrap_or(0);
                if s <= addr && addr < e {
                    return Ok(cols.nth(3).unwrap_or("").to_string());
                }
            }
            Err(format!("no mapping contains {addr:#x}"))
        };
        let ino_big = inode(b)?;
        ensure!(
            inode(b + 2 * q)? == ino_big && inode(b + 3 * q)? == ino_big,
            "the region's VMAs are not one object"
        );
        ensure!(
            inode(alias as u64)? == ino_big,
            "the alias is not the region's object"
        );
        ensure!(
            inode(small as u64)? != ino_big,
            "the small object is the big one"
        );

        // Sharing: through the alias, and with a child.
        write_word(alias, 8, 0xA11A5);
        ensure!(
            read_word(big, 3 * quarter + 8) == 0xA11A5,
            "a write through the alias does not show in the region"
        );
        // SAFETY: the child only stores to shared memory and calls _exit.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if child == 0 {
            write_word(big, 16, 0xC41D);
            write_word(small, 0, 0xC41D);
            // SAFETY: _exit in the forked child, no destructors run.
            unsafe { libc::_exit(0) };
        }
        let mut st = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        if unsafe { libc::waitpid(child, &mut st, 0) } != child {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        ensure!(
            read_word(big, 16) == 0xC41D && read_word(small, 0) == 0xC41D,
            "a child's write does not show: the memory is not shared"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
