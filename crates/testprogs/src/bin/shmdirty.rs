//! `shmdirty --mb N --dirty-mb M --step FILE --mode child|fork|remove`:
//! N MiB (default 64) of shared anonymous memory (`MAP_SHARED |
//! MAP_ANONYMOUS`), each page filled from its number and a version, the
//! versions kept in a second shared anonymous mapping. Each time FILE
//! holds a number higher than the steps done, M MiB of pages (default 5%
//! of N) get their next version, written:
//!
//! - `child`: half by this process (even pages), half by a child forked
//!   at the start that maps the memory too (odd pages);
//! - `fork`: by a child forked for the step, which exits once done;
//! - `remove`: by this process, which also drops 16 other pages from the
//!   memory (`MADV_REMOVE`: they read as zeros) and reads them again.
//!
//! then `FILE.done` gets the step number. At SIGTERM every page must hold
//! what its version says (an incremental chain of a shared object
//! restored exactly).

use crust_testprogs::versioned::{check, fill, PAGE, WORDS, ZERO};
use crust_testprogs::{finish, map_anon, ready, sleep_ms, start, term_requested, versioned};
use crust_testprogs::{wait_for_term, XorShift};

/// Words of the versions mapping before the versions: the steps wanted,
/// the steps the child did, whether the child is to exit.
const HEAD: usize = 4;

/// Write `n` pages chosen by `rng` whose number has parity `parity`
/// (None: any), each with its next version.
fn write_pages(
    mem: &mut [u64],
    versions: &mut [u32],
    rng: &mut XorShift,
    n: usize,
    parity: Option<usize>,
) {
    let pages = versions.len();
    for _ in 0..n {
        let mut p = (rng.next_u64() % pages as u64) as usize;
        if let Some(par) = parity {
            p = (p & !1 | par).min(pages - 1);
        }
        let v = match versions[p] {
            ZERO => 1,
            v => v + 1,
        };
        versions[p] = v;
        fill(mem, p, v);
    }
}

fn main() {
    let args = start();
    let mb = args.num("mb", 64) as usize;
    let dirty = args.num("dirty-mb", (mb * 5 / 100).max(1) as u64) as usize;
    let step_file = args.opts.get("step").cloned().unwrap_or_default();
    let mode = args
        .opts
        .get("mode")
        .cloned()
        .unwrap_or_else(|| "child".into());
    let pages = (mb << 20) / PAGE;
    let per_step = (dirty << 20) / PAGE;
    let mem_p = map_anon(pages * PAGE, true);
    let ver_p = map_anon((HEAD + pages) * 4, true);
    // The child and this process write disjoint pages (and head words).
    // SAFETY: fresh mappings of these sizes, never unmapped.
    let mem = unsafe { std::slice::from_raw_parts_mut(mem_p as *mut u64, pages * WORDS) };
    // SAFETY: as above.
    let all = unsafe { std::slice::from_raw_parts_mut(ver_p as *mut u32, HEAD + pages) };
    let (head, versions) = all.split_at_mut(HEAD);
    for p in 0..pages {
        fill(mem, p, 0);
    }
    let vol = |w: &u32| {
        // SAFETY: a live word of the shared head.
        unsafe { std::ptr::read_volatile(w) }
    };
    let set = |w: &mut u32, v: u32| {
        // SAFETY: a live word of the shared head.
        unsafe { std::ptr::write_volatile(w, v) }
    };
    let mut child = 0;
    if mode == "child" {
        // SAFETY: fork in a single-threaded program.
        child = unsafe { libc::fork() };
        if child == 0 {
            let mut rng = XorShift(0x5EED_0000_C41D_0002);
            let mut done = 0u32;
            while vol(&head[2]) == 0 {
                while done < vol(&head[0]) {
                    write_pages(mem, versions, &mut rng, per_step / 2, Some(1));
                    done += 1;
                    set(&mut head[1], done);
                }
                sleep_ms(10);
            }
            // SAFETY: exit without running the parent's handlers.
            unsafe { libc::_exit(0) };
        }
    }
    let mut done = 0u32;
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    ready(&args);
    wait_for_term(20, || {
        let want = versioned::wanted(&step_file) as u32;
        while done < want {
            match mode.as_str() {
                "child" => {
                    set(&mut head[0], done + 1);
                    write_pages(mem, versions, &mut rng, per_step / 2, Some(0));
                    while vol(&head[1]) < done + 1 && !term_requested() {
                        sleep_ms(5);
                    }
                }
                "fork" => {
                    // SAFETY: fork in a single-threaded program.
                    let c = unsafe { libc::fork() };
                    if c == 0 {
                        write_pages(mem, versions, &mut rng, per_step, None);
                        // SAFETY: exit without running the parent's handlers.
                        unsafe { libc::_exit(0) };
                    }
                    // The versions are shared: the child's writes show.
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    unsafe { libc::waitpid(c, &mut status, 0) };
                    // The next child chooses other pages.
                    let _ = rng.next_u64();
                }
                _ => {
                    write_pages(mem, versions, &mut rng, per_step, None);
                    for _ in 0..16 {
                        let p = (rng.next_u64() % pages as u64) as usize;
                        // SAFETY: advice on a page of our own mapping.
                        let r = unsafe {
                            libc::madvise(mem_p.add(p * PAGE).cast(), PAGE, libc::MADV_REMOVE)
                        };
                        if r == 0 {
                            versions[p] = ZERO;
                            // Read again: a new page of zeros.
                            // SAFETY: a live word of our own mapping.
                            let _ = unsafe { std::ptr::read_volatile(&mem[p * WORDS]) };
                        }
                    }
                }
            }
            done += 1;
        }
        versioned::done(&step_file, want.into(), done.into());
    });
    if child > 0 {
        set(&mut head[2], 1);
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
    }
    let verdict = check(mem, versions);
    finish(&args, verdict)
}
