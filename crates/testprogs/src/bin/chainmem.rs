//! `chainmem --mb N`: N MiB (default 64) of anonymous memory whose every
//! word follows from its page, its place and how many times the page was
//! rewritten. Each round (asked for by writing the round number to
//! `<result>.step`; done when `<result>.stepped` says it) rewrites a tenth
//! of the pages, a different tenth each round: the memory of successive
//! dumps differs in known pages, which makes chains of image sets whose
//! later sets hold only what changed. At the end every word is checked
//! against the rounds done.

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term, write_atomic};

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

/// Is page `p` rewritten in round `r` (1-based)?
fn touched(p: usize, r: u64) -> bool {
    (p as u64 + r * 7).is_multiple_of(10)
}

/// How many times page `p` was rewritten after `rounds` rounds.
fn generation(p: usize, rounds: u64) -> u64 {
    (1..=rounds).filter(|&r| touched(p, r)).count() as u64
}

fn word(p: usize, i: usize, generation: u64) -> u64 {
    let x = (p as u64) << 20 ^ (i as u64) << 4 ^ generation;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) | 1
}

fn write_page(mem: &mut [u64], p: usize, generation: u64) {
    if let Some(words) = mem.get_mut(p * WORDS..(p + 1) * WORDS) {
        for (i, w) in words.iter_mut().enumerate() {
            *w = word(p, i, generation);
        }
    }
}

fn main() {
    let args = start();
    let pages = (args.num("mb", 64) as usize) << 20 >> 12;
    let mem = crust_testprogs::map_anon_words(pages * PAGE);
    for p in 0..pages {
        write_page(mem, p, 0);
    }
    let step = args.result.with_extension("step");
    let stepped = args.result.with_extension("stepped");
    let mut rounds = 0u64;
    ready(&args);
    wait_for_term(20, || {
        let want = std::fs::read_to_string(&step)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        while rounds < want {
            rounds += 1;
            for p in (0..pages).filter(|&p| touched(p, rounds)) {
                write_page(mem, p, generation(p, rounds));
            }
            if write_atomic(&stepped, &format!("{rounds}\n")).is_err() {
                die("write the stepped file");
            }
        }
    });
    let verdict = (|| {
        for p in 0..pages {
            let g = generation(p, rounds);
            for i in 0..WORDS {
                let (have, want) = (mem[p * WORDS + i], word(p, i, g));
                ensure!(
                    have == want,
                    "page {p} word {i} is {have:#x}, expected {want:#x} (generation {g} after {rounds} rounds)"
                );
            }
        }
        Ok(())
    })();
    finish(&args, verdict)
}
