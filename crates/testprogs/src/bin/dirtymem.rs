//! `dirtymem --mb N --dirty-mb M --step FILE`: N MiB (default 256) of
//! anonymous memory, each page filled from its number and a version. Each
//! time FILE holds a number higher than the steps done, M MiB of pages
//! (default 5% of N), chosen anew each step, are rewritten with their next
//! version (a page may be chosen twice);
//! then `FILE.done` gets the step number. With `--written LOG`, LOG then
//! holds the memory's address and the numbers of the pages that step
//! rewrote (for `crust image diff`'s test). With `--pageout 1`, the memory
//! is handed to swap (`MADV_PAGEOUT`) once filled and after each step
//! (e2e `predump-swap`). At SIGTERM every page must hold what its version
//! says (an incremental dump chain restored exactly).

use crust_testprogs::{ensure, finish, ready, start, wait_for_term, write_atomic, XorShift};

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;

fn word(page: usize, version: u32, i: usize) -> u64 {
    ((page as u64) << 32 | version as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64)
}

fn fill(mem: &mut [u64], page: usize, version: u32) {
    for (i, w) in mem[page * WORDS..(page + 1) * WORDS].iter_mut().enumerate() {
        *w = word(page, version, i);
    }
}

/// Ask the kernel to swap `mem` out (where swap is on; else a no-op).
fn page_out(mem: &mut [u64]) {
    // SAFETY: advice on this program's own mapping; MADV_PAGEOUT keeps
    // its contents (they come back from swap on the next touch).
    unsafe {
        libc::madvise(
            mem.as_mut_ptr().cast(),
            std::mem::size_of_val(mem),
            libc::MADV_PAGEOUT,
        )
    };
}

fn main() {
    let args = start();
    let mb = args.num("mb", 256) as usize;
    let dirty = args.num("dirty-mb", (mb * 5 / 100) as u64) as usize;
    let step_file = args.opts.get("step").cloned().unwrap_or_default();
    let written_log = args.opts.get("written").cloned();
    let pageout = args.num("pageout", 0) != 0;
    let pages = (mb << 20) / PAGE;
    let mem = crust_testprogs::map_anon_words(pages * PAGE);
    let mut versions = vec![0u32; pages];
    for p in 0..pages {
        fill(mem, p, 0);
    }
    if pageout {
        page_out(mem);
    }
    let mut done = 0u64;
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    ready(&args);
    wait_for_term(20, || {
        let want: u64 = std::fs::read_to_string(&step_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        while done < want {
            let mut written = std::collections::BTreeSet::new();
            for _ in 0..(dirty << 20) / PAGE {
                let p = (rng.next_u64() % pages as u64) as usize;
                versions[p] += 1;
                fill(mem, p, versions[p]);
                // Only with --written: the set's heap would count as
                // pages written (the chain tests bound those).
                if written_log.is_some() {
                    written.insert(p);
                }
            }
            done += 1;
            if pageout {
                page_out(mem);
            }
            if let Some(log) = &written_log {
                let list: Vec<String> = written.iter().map(|p| p.to_string()).collect();
                let text = format!(
                    "{:#x} {}\n{}\n",
                    mem.as_ptr() as usize,
                    pages,
                    list.join(" ")
                );
                let _ = write_atomic(std::path::Path::new(log), &text);
            }
        }
        if want > 0 && want == done {
            let _ = write_atomic(
                std::path::Path::new(&format!("{step_file}.done")),
                &format!("{done}\n"),
            );
        }
    });
    let verdict = (|| {
        for (p, v) in versions.iter().enumerate() {
            for i in 0..WORDS {
                let got = mem[p * WORDS + i];
                ensure!(
                    got == word(p, *v, i),
                    "page {p} word {i} is {got:#x}, not version {v}'s {:#x}",
                    word(p, *v, i)
                );
            }
        }
        Ok(())
    })();
    finish(&args, verdict)
}
