//! Memory that is rewritten while it runs, and can say whether it is intact
//! (memwriter, tcpfleet: the workloads of issue 15's pre-dump and
//! migration tests).
//!
//! A region of N pages, each page stamped with its index and a generation
//! number, the rest of the page the pseudo-random pattern of (index,
//! generation). The generations are also kept in a table outside the
//! region, so a page that came back from an older image (a lost write), a
//! page of another index (a misplaced run) or a torn page all show.
//! Rewrites go round the region from a cursor: rewriting k pages touches k
//! distinct pages (up to N), which makes "5% of the memory was written"
//! exact.
//!
//! The probe: SIGUSR1 rewrites a given fraction of the pages at once;
//! SIGUSR2 checks every page; each answers in a probe file (tmp + rename):
//! `BURST <pages> <total>` or `OK <pages> <total>` / `BAD <reason>`, where
//! total counts every page rewrite since the start.

use crate::{die, write_atomic, XorShift};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

/// Set by SIGUSR1 (rewrite a burst) and SIGUSR2 (check now).
static BURST: AtomicBool = AtomicBool::new(false);
static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        BURST.store(true, Ordering::SeqCst);
    } else {
        CHECK.store(true, Ordering::SeqCst);
    }
}

/// The seed of page `idx`'s pattern at generation `gen` (never zero).
fn seed(idx: usize, gen: u32) -> u64 {
    ((idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(gen) << 1)) | 1
}

/// The rewritten region.
pub struct MemGen {
    words: &'static mut [u64],
    gens: Vec<u32>,
    cursor: usize,
    /// Page rewrites since the start (the initial fill not counted).
    pub written: u64,
}

impl MemGen {
    /// Maps and fills `mb` MiB (generation 1 everywhere); exits on failure
    /// (before READY).
    pub fn new(mb: u64) -> MemGen {
        let len = (mb as usize) << 20;
        let words: &'static mut [u64] = if len == 0 {
            &mut []
        } else {
            crate::map_anon_words(len)
        };
        let n = len / PAGE;
        let mut m = MemGen {
            words,
            gens: vec![1; n],
            cursor: 0,
            written: 0,
        };
        for idx in 0..n {
            m.stamp(idx);
        }
        m
    }

    /// Pages in the region.
    pub fn pages(&self) -> usize {
        self.gens.len()
    }

    fn stamp(&mut self, idx: usize) {
        let gen = self.gens[idx];
        let page = &mut self.words[idx * WORDS..(idx + 1) * WORDS];
        page[0] = idx as u64;
        page[1] = u64::from(gen);
        let mut rng = XorShift(seed(idx, gen));
        for w in &mut page[2..] {
            *w = rng.next_u64();
        }
    }

    /// Rewrites the next `k` pages (at most every page once per call).
    pub fn rewrite(&mut self, k: usize) {
        let n = self.pages();
        if n == 0 {
            return;
        }
        for _ in 0..k.min(n) {
            let idx = self.cursor;
            self.gens[idx] = self.gens[idx].wrapping_add(1).max(1);
            self.stamp(idx);
            self.cursor = (idx + 1) % n;
            self.written += 1;
        }
    }

    /// Rewrites `pct` percent of the pages; returns how many.
    pub fn rewrite_fraction(&mut self, pct: f64) -> usize {
        let k = ((self.pages() as f64) * pct / 100.0).round() as usize;
        self.rewrite(k);
        k.min(self.pages())
    }

    /// Checks every page against its generation.
    pub fn verify(&self) -> Result<(), String> {
        for (idx, &gen) in self.gens.iter().enumerate() {
            let page = &self.words[idx * WORDS..(idx + 1) * WORDS];
            crate::ensure!(
                page[0] == idx as u64,
                "page {idx} holds the stamp of page {:#x}",
                page[0]
            );
            crate::ensure!(
                page[1] == u64::from(gen),
                "page {idx} is at generation {}, its table says {gen} (a lost or stale write)",
                page[1]
            );
            let mut rng = XorShift(seed(idx, gen));
            for (i, w) in page[2..].iter().enumerate() {
                crate::ensure!(
                    *w == rng.next_u64(),
                    "page {idx} (generation {gen}): wrong data at offset {:#x}",
                    (i + 2) * 8
                );
            }
        }
        Ok(())
    }
}

/// Rewrites at a steady rate, in small steps from a loop's ticks.
pub struct Rate {
    pages_per_sec: f64,
    start: Instant,
    done: u64,
}

impl Rate {
    /// `bytes_per_sec` of rewrites (0: none).
    pub fn new(bytes_per_sec: u64) -> Rate {
        Rate {
            pages_per_sec: bytes_per_sec as f64 / PAGE as f64,
            start: Instant::now(),
            done: 0,
        }
    }

    /// Rewrites the pages due since the last tick. After a long gap (the
    /// task was frozen or not yet restored) at most 100 ms worth are
    /// caught up: the rate is what the task does while it runs.
    pub fn tick(&mut self, m: &mut MemGen) {
        if self.pages_per_sec <= 0.0 {
            return;
        }
        let due = (self.start.elapsed().as_secs_f64() * self.pages_per_sec) as u64;
        let cap = (self.pages_per_sec / 10.0).ceil() as u64 + 1;
        if due > self.done + cap {
            self.done = due - cap;
        }
        if due > self.done {
            m.rewrite((due - self.done) as usize);
            self.done = due;
        }
    }
}

/// The SIGUSR1/SIGUSR2 probe of a [`MemGen`].
pub struct Probe {
    file: Option<PathBuf>,
    fraction: f64,
}

impl Probe {
    /// Installs the handlers; `file` is where answers go (none: the
    /// signals still act, answers are dropped), `fraction` the percent of
    /// pages a SIGUSR1 rewrites.
    pub fn new(file: Option<&Path>, fraction: f64) -> Probe {
        for sig in [libc::SIGUSR1, libc::SIGUSR2] {
            // SAFETY: an all-zero sigaction is a valid value (no handler,
            // empty flags).
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_usr as *const () as libc::sighandler_t;
            // SAFETY: sa_mask is a valid sigset_t we own.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            sa.sa_flags = libc::SA_RESTART;
            // SAFETY: `sa` is fully set; the handler is an extern "C"
            // fn(c_int) doing only atomic stores (async-signal-safe).
            if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
                die("sigaction(SIGUSR)");
            }
        }
        Probe {
            file: file.map(Path::to_path_buf),
            fraction,
        }
    }

    fn answer(&self, text: &str) {
        if let Some(f) = &self.file {
            if let Err(e) = write_atomic(f, &format!("{text}\n")) {
                eprintln!("cannot write the probe answer to {}: {e}", f.display());
            }
        }
    }

    /// Acts on a signal that came since the last call.
    pub fn poll(&self, m: &mut MemGen) {
        if BURST.swap(false, Ordering::SeqCst) {
            let k = m.rewrite_fraction(self.fraction);
            self.answer(&format!("BURST {k} {}", m.written));
        }
        if CHECK.swap(false, Ordering::SeqCst) {
            match m.verify() {
                Ok(()) => self.answer(&format!("OK {} {}", m.pages(), m.written)),
                Err(e) => self.answer(&format!("BAD {e}")),
            }
        }
    }
}

/// Sleeps `ms`, waking early is fine (signals).
pub fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_and_verify() {
        let mut m = MemGen::new(1);
        assert_eq!(m.pages(), 256);
        m.verify().unwrap();
        assert_eq!(m.rewrite_fraction(5.0), 13);
        assert_eq!(m.written, 13);
        m.rewrite(300);
        assert_eq!(m.written, 13 + 256);
        m.verify().unwrap();
        // A stale page (an older generation's content) is caught.
        m.gens[3] += 1;
        assert!(m.verify().unwrap_err().contains("page 3"));
        m.gens[3] -= 1;
        m.words[WORDS * 7 + 100] ^= 1;
        assert!(m.verify().unwrap_err().contains("page 7"));
    }
}
