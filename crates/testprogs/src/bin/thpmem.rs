//! `thpmem --hg-mb N --plain-mb M --sparse-mb S --expect-huge 0|1 [--report FILE]`:
//! memory backed by transparent huge pages and memory that is not
//! (issue 16).
//!
//! - The huge region: one VMA of N MiB (default 64) of pseudo-random words,
//!   2 MiB aligned, with MADV_HUGEPAGE, followed in the same VMA by S MiB
//!   (default 4) of which only every fourth 4 KiB page was written, before
//!   the advice (so those are 4 KiB pages: a range only partly present).
//! - The plain region: M MiB (default 16) of pseudo-random words, 2 MiB
//!   aligned, no advice (4 KiB pages when THP is `madvise`).
//!
//! Before READY it records, from /proc/self/smaps, the huge region's
//! AnonHugePages and Rss and the plain region's AnonHugePages (the first
//! must be above zero: huge pages must be there to be restored). After
//! SIGTERM it checks every word, then: with `--expect-huge 1` (default),
//! the huge region's AnonHugePages is at least 7/8 of what it was (the
//! kernel may fail to find a free 2 MiB block for a few); in any case the
//! plain region has no more AnonHugePages than before, and the huge
//! region's Rss is at most 1 MiB above what it was (the partly present
//! range did not become huge pages: that would add 3 MiB per 4 MiB), in
//! as many VMAs as before (one).
//! `--report FILE` gets both readings.
//!
//! For the system mode `always` (`--always 1`), where any first write makes
//! a huge page: the partly present range is written with the process's
//! THP disabled (`PR_SET_THP_DISABLE`, cleared right after, as a program
//! may do), and the plain region, huge pages there too, must get at least
//! 7/8 of them back.

use crust_testprogs::{ensure, finish, ready, start, wait_for_term, write_atomic, XorShift};

const HUGE: usize = 2 << 20;
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// A 2 MiB aligned private anonymous read-write mapping of `len` bytes
/// (the slack of the alignment unmapped).
fn map_aligned(len: usize) -> usize {
    // SAFETY: a new anonymous mapping with a null hint touches nothing of
    // ours.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        crust_testprogs::die("mmap");
    }
    let base = p as usize;
    let start = (base + HUGE - 1) & !(HUGE - 1);
    // SAFETY: both pieces are parts of the mapping just made, outside
    // [start, start + len).
    unsafe {
        if start > base {
            libc::munmap(base as *mut libc::c_void, start - base);
        }
        libc::munmap((start + len) as *mut libc::c_void, base + HUGE - start);
    }
    start
}

/// The words of [addr, addr + len), a part of a mapping made by
/// `map_aligned` and never unmapped.
fn words(addr: usize, len: usize) -> &'static mut [u64] {
    // SAFETY: the range is mapped read-write for the program's lifetime
    // and only reached through this slice at any one time.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u64, len / 8) }
}

fn fill(w: &mut [u64], seed: u64) {
    let mut rng = XorShift(seed);
    for x in w.iter_mut() {
        *x = rng.next_u64();
    }
}

fn verify(w: &[u64], seed: u64, what: &str) -> Result<(), String> {
    let mut rng = XorShift(seed);
    for (i, x) in w.iter().enumerate() {
        let v = rng.next_u64();
        ensure!(
            *x == v,
            "{what}: word {i} (offset {:#x}) is {x:#x}, expected {v:#x}",
            i * 8
        );
    }
    Ok(())
}

/// Sum of smaps field `key` (kB) over the VMAs inside [start, end); the
/// key "" counts the VMAs.
fn smaps_kb(start: usize, end: usize, key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    let mut sum = 0;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a >= start && b <= end;
                sum += u64::from(inside && key.is_empty());
                continue;
            }
        }
        if inside && !key.is_empty() {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                let kb = v.trim().trim_end_matches("kB").trim();
                sum += kb.parse::<u64>().unwrap_or(0);
            }
        }
    }
    sum
}

struct Reading {
    huge_vmas: u64,
    huge_thp: u64,
    huge_rss: u64,
    plain_thp: u64,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "huge region {} VMA(s) AnonHugePages {} kB Rss {} kB, plain region AnonHugePages {} kB",
            self.huge_vmas, self.huge_thp, self.huge_rss, self.plain_thp
        )
    }
}

fn main() {
    let args = start();
    let hg = args.num("hg-mb", 64) as usize * MIB;
    let sparse = args.num("sparse-mb", 4) as usize * MIB;
    let plain = args.num("plain-mb", 16) as usize * MIB;
    let expect_huge = args.num("expect-huge", 1) != 0;
    let report = args.opt("report").map(std::path::PathBuf::from);
    let always = args.num("always", 0) != 0;

    let h = map_aligned(hg + sparse);
    // The partly present range first, as 4 KiB pages (no advice yet; in
    // mode `always`, THP disabled meanwhile).
    let thp_off = |on: u64| {
        // SAFETY: prctl with integer arguments only.
        if always && unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, 0, 0, 0) } != 0 {
            crust_testprogs::die("prctl(PR_SET_THP_DISABLE)");
        }
    };
    thp_off(1);
    let sp = words(h + hg, sparse);
    for page in (0..sparse / PAGE).step_by(4) {
        sp[page * PAGE / 8] = 0x5EED_0000 | page as u64;
    }
    thp_off(0);
    // SAFETY: madvise on a range of our own mapping.
    if unsafe { libc::madvise(h as *mut libc::c_void, hg + sparse, libc::MADV_HUGEPAGE) } != 0 {
        crust_testprogs::die("madvise(MADV_HUGEPAGE)");
    }
    fill(words(h, hg), 0x1111);
    let p = map_aligned(plain.max(PAGE));
    fill(words(p, plain), 0x2222);
    let read = || Reading {
        huge_vmas: smaps_kb(h, h + hg + sparse, ""),
        huge_thp: smaps_kb(h, h + hg + sparse, "AnonHugePages"),
        huge_rss: smaps_kb(h, h + hg + sparse, "Rss"),
        plain_thp: smaps_kb(p, p + plain.max(PAGE), "AnonHugePages"),
    };
    let before = read();
    if hg > 0 && before.huge_thp == 0 {
        eprintln!("no transparent huge pages after MADV_HUGEPAGE ({before})");
        std::process::exit(3);
    }
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        let after = read();
        if let Some(r) = &report {
            let _ = write_atomic(r, &format!("before: {before}\nafter: {after}\n"));
        }
        verify(words(h, hg), 0x1111, "huge region")?;
        verify(words(p, plain), 0x2222, "plain region")?;
        for (page, w) in sp.chunks(PAGE / 8).enumerate() {
            let want = if page % 4 == 0 {
                0x5EED_0000 | page as u64
            } else {
                0
            };
            ensure!(
                w.first() == Some(&want) && w.iter().skip(1).all(|x| *x == 0),
                "partly present range: page {page} is wrong"
            );
        }
        ensure!(
            !expect_huge || after.huge_thp * 8 >= before.huge_thp * 7,
            "huge pages not back: before {before}; after {after}"
        );
        ensure!(
            after.plain_thp <= before.plain_thp,
            "the plain region gained huge pages: before {before}; after {after}"
        );
        ensure!(
            !always || after.plain_thp * 8 >= before.plain_thp * 7,
            "the plain region's huge pages are not back: before {before}; after {after}"
        );
        ensure!(
            after.huge_vmas == before.huge_vmas,
            "the huge region's VMAs changed: before {before}; after {after}"
        );
        ensure!(
            after.huge_rss <= before.huge_rss + 1024,
            "the huge region grew: before {before}; after {after}"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
