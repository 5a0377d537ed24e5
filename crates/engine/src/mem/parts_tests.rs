use super::*;
use crate::mem::pages::tests::CollectSink;
use crate::mem::LazyMark;
use crust_images::consts::pe;
use crust_proc::ProcRoot;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// A process with 80 MiB of private memory whose pages are, in turn,
/// untouched, shared with its parent (copy-on-write: read through
/// /proc/PID/mem) and its own (read with process_vm_readv): adjacent runs
/// of both kinds, cut by the parts anywhere. Prints its pid, then waits
/// for its stdin to close.
const FORKED: &str = "
import mmap, os, sys
n = 20480 + 37
m = mmap.mmap(-1, n * 4096, flags=mmap.MAP_PRIVATE)
for i in range(n):
    if i % 7 != 3:
        m[i * 4096] = i % 251 + 1
if os.fork() == 0:
    for i in range(0, n, 5):
        m[i * 4096 + 1] = 9
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    os._exit(0)
os.wait()
";

/// The python parent; both end when its stdin (the child's too) closes.
struct Forked(Child);

impl Drop for Forked {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn a_dump_in_parts_stores_what_one_scan_does() {
    let mut p = Forked(
        Command::new("python3")
            .args(["-c", FORKED])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(p.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    let vmas = crate::mem::collect_vmas(&ProcRoot::default(), pid).unwrap();
    let cuts = part_cuts(&vmas).unwrap();
    assert!(cuts.len() >= 4, "{cuts:?}");
    // Lazy ranges (marked, stored): one ends at a cut, one crosses one.
    let c = |i: usize| cuts[i].0;
    let lazy = [
        c(0) - 10 * PAGE_SIZE..c(1),
        c(1) + PAGE_SIZE..c(2) + 7 * PAGE_SIZE,
    ];
    for mark in [None, Some(&lazy[..])] {
        let dump = |parts| {
            let mut sink = CollectSink::default();
            sink.parts = parts;
            let lazy = mark.map(|ranges| LazyMark {
                ranges,
                leave: false,
            });
            let counts =
                crate::mem::dump_pages_since(pid, 7, &sink, &vmas, 1, None, None, lazy, None)
                    .unwrap();
            (counts, sink.take())
        };
        let (whole, in_parts) = (dump(false), dump(true));
        assert_eq!(format!("{:?}", whole.0), format!("{:?}", in_parts.0));
        assert_eq!(whole.1.len(), 1);
        let (runs, bytes) = (&whole.1[0].1, &whole.1[0].2);
        assert_eq!(runs, &in_parts.1[0].1);
        assert!(bytes == &in_parts.1[0].2);
        // Runs side by side (both kinds of pages), to be kept apart.
        let apart = runs
            .windows(2)
            .filter(|w| w[0].vaddr + w[0].npages * PAGE_SIZE == w[1].vaddr)
            .count();
        assert!(apart > 1000, "{apart} runs follow another");
        let lazy_runs = runs.iter().filter(|r| r.flags == pe::PRESENT | pe::LAZY);
        assert_eq!(lazy_runs.count() > 0, mark.is_some());
    }
    p.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
}

#[test]
fn parts_double_from_4_mib_and_stay_few() {
    use crate::mem::dump::tests::anon;
    const M: u64 = 1 << 20;
    let base = 0x7f00_0000_0000u64;
    // Two VMAs of 40 MiB back to back, then one of 1 GiB 20 MiB above
    // them: the cuts fall after 4, 12, 28, 60, 124, 252 MiB of the stored
    // memory, inside VMAs.
    let vmas = [
        anon(base, base + 40 * M),
        anon(base + 40 * M, base + 80 * M),
        anon(base + 100 * M, base + 1124 * M),
    ];
    let cuts = part_cuts(&vmas).unwrap();
    let at: Vec<u64> = cuts.iter().map(|c| (c.0 - base) / M).collect();
    assert_eq!(&at[..6], &[4, 12, 28, 60, 144, 272]);
    assert!(cuts.iter().all(|c| c.1));
    assert!(at.windows(2).all(|w| w[1] - w[0] <= 256));
    // Under 64 MiB: one scan.
    assert!(part_cuts(&vmas[..1]).is_none());
    // 4 TiB reserved: a few dozen parts, not thousands.
    let huge = [anon(base, base + (4u64 << 40))];
    let n = part_cuts(&huge).unwrap().len();
    assert!((10..64).contains(&n), "{n} parts");
}
