//! Memory that is being rewritten (issue 15: pre-dumps, snapshots,
//! migration).
//!
//! `memwriter --ready F --result F [--mb N] [--rate MBPS] [--fraction PCT]
//! [--probe FILE]`
//!
//! N MiB (default 64) of pages stamped with their index and a generation,
//! the rest of each page the pattern of both (crust_testprogs::memgen).
//! Until SIGTERM it rewrites MBPS MB/s (10^6 bytes; default 0) going round
//! the region; SIGUSR1 rewrites PCT percent of the pages at once (default
//! 5) and answers `BURST <pages> <total>` in FILE; SIGUSR2 checks every
//! page and answers `OK <pages> <total>` or `BAD <reason>`. At SIGTERM it
//! checks every page: PASS if each holds its latest generation, intact.
//! stderr says how many page rewrites there were.

use crust_testprogs::memgen::{nap, MemGen, Probe, Rate};
use crust_testprogs::{finish, ready, start, term_requested};

fn main() {
    let args = start();
    let mut m = MemGen::new(args.num("mb", 64));
    let fraction: f64 = match args.opt("fraction").map(str::parse) {
        None => 5.0,
        Some(Ok(v)) => v,
        Some(Err(_)) => {
            eprintln!("--fraction: not a number");
            std::process::exit(2)
        }
    };
    let probe = Probe::new(args.opt("probe").map(std::path::Path::new), fraction);
    let mut rate = Rate::new(args.num("rate", 0) * 1_000_000);
    ready(&args);
    while !term_requested() {
        probe.poll(&mut m);
        rate.tick(&mut m);
        nap(5);
    }
    let verdict = m.verify();
    eprintln!(
        "memwriter: {} page rewrites over {} pages",
        m.written,
        m.pages()
    );
    finish(&args, verdict)
}
