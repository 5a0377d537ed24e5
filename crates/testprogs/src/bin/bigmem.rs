//! `bigmem --mb N`: N MiB (default 1024) of pseudo-random anonymous memory whose
//! checksum is kept elsewhere, plus a region of which only every fourth page
//! was touched (the holes must read back as zero). `--mask M`: each word
//! of the big region is ANDed with M (e.g. 65535: compressible memory).

use crust_testprogs::{ensure, finish, ready, start, wait_for_term, XorShift};

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const PAGE: usize = 4096;
const HOLES_PAGES: usize = 4096; // 16 MiB

fn fill(words: &mut [u64], mask: u64) -> u64 {
    let mut rng = XorShift(SEED);
    let mut sum = 0u64;
    for w in words.iter_mut() {
        let v = rng.next_u64() & mask;
        *w = v;
        sum = sum.rotate_left(1) ^ v;
    }
    sum
}

fn verify(words: &[u64], sum: u64, mask: u64) -> Result<(), String> {
    let mut rng = XorShift(SEED);
    let mut got = 0u64;
    for (i, w) in words.iter().enumerate() {
        let v = rng.next_u64() & mask;
        ensure!(
            *w == v,
            "big region word {i} (offset {:#x}) is {w:#x}, expected {v:#x}",
            i * 8
        );
        got = got.rotate_left(1) ^ *w;
    }
    ensure!(got == sum, "checksum {got:#x}, expected {sum:#x}");
    Ok(())
}

fn page_marker(page: usize) -> u64 {
    0xB16_0000_0000 | page as u64
}

fn main() {
    let args = start();
    let mb = args.num("mb", 1024) as usize;
    let big = crust_testprogs::map_anon_words(mb << 20);
    let mask = args.num("mask", u64::MAX);
    let sum = Box::new(fill(big, mask));
    let holes = crust_testprogs::map_anon_words(HOLES_PAGES * PAGE);
    let per_page = PAGE / 8;
    for page in (0..HOLES_PAGES).step_by(4) {
        holes[page * per_page] = page_marker(page);
        holes[page * per_page + per_page - 1] = !page_marker(page);
    }
    ready(&args);
    wait_for_term(20, || {});
    let verdict = (|| {
        verify(big, *sum, mask)?;
        for page in 0..HOLES_PAGES {
            let words = &holes[page * per_page..(page + 1) * per_page];
            if page % 4 == 0 {
                ensure!(
                    words[0] == page_marker(page) && words[per_page - 1] == !page_marker(page),
                    "touched page {page} of the sparse region lost its markers"
                );
                ensure!(
                    words[1..per_page - 1].iter().all(|w| *w == 0),
                    "touched page {page} of the sparse region has stray data"
                );
            } else {
                ensure!(
                    words.iter().all(|w| *w == 0),
                    "untouched page {page} of the sparse region is not zero"
                );
            }
        }
        Ok(())
    })();
    finish(&args, verdict)
}
