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

use crust_testprogs::versioned::{check, fill, PAGE};
use crust_testprogs::{finish, ready, start, versioned, wait_for_term, write_atomic, XorShift};

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
        let want = versioned::wanted(&step_file);
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
        versioned::done(&step_file, want, done);
    });
    let verdict = check(mem, &versions);
    finish(&args, verdict)
}
