//! `crust pre-dump` (issue 15): the tree's memory into the images
//! directory while the tree runs on, the write tracking kept for the next
//! `pre-dump` or `dump --prev-images-dir` of the chain; and the two
//! commands of the tracking keeper: `__keeper` (hidden: the keeper
//! itself) and `track-release DIR` (drop a chain's tracking).

use crate::cli::Opts;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::Instant;

/// `crust pre-dump -t PID -D DIR [--prev-images-dir DIR] [--track-mem]`.
pub fn run(opts: &Opts) -> Result<i32> {
    let mut o = crate::engine_options(opts);
    if o.pid == 0 {
        bail!("pre-dump needs the tree's root: -t/--tree PID");
    }
    crust_engine::check_images_dir(&o.images_dir)?;
    // As CRIU: a pre-dump always tracks memory, and the tree always runs on.
    o.track_mem = true;
    log::debug!("pre-dump options: {o:?}");
    crust_sys::process::catch_stop_signals().context("cannot catch stop signals")?;
    // As the dump: a worker of its own session does the work, so that
    // killing this process makes it roll back, never leaving the tree
    // under a dead tracer.
    if std::env::var_os("CRUST_NO_WORKER").is_none() {
        log::logger().flush();
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match crust_sys::process::split_worker().context("cannot start the pre-dump's worker")? {
            crust_sys::process::Side::FrontEnd { worker } => {
                return crust_sys::process::wait_worker(worker)
                    .context("cannot wait for the pre-dump's worker");
            }
            crust_sys::process::Side::Worker => {
                log::debug!("pre-dump worker {}", std::process::id());
            }
        }
    }
    let start = Instant::now();
    let stats = crust_engine::pre_dump(&o)?;
    log::info!(
        "pre-dumped tree {} in {} us",
        o.pid,
        start.elapsed().as_micros()
    );
    if o.display_stats {
        crate::print_dump_stats(&stats);
    }
    Ok(0)
}

/// The hidden and keeper commands, recognised before option parsing:
/// the exit code when `argv` is one of them.
pub fn keeper_command(argv: &[String]) -> Option<i32> {
    match argv.first().map(String::as_str) {
        Some("__keeper") => Some(crust_engine::tracking_keeper()),
        Some("track-release") => Some(match argv.get(1) {
            Some(dir) if argv.len() == 2 => {
                match crust_engine::release_tracking(std::path::Path::new(dir)) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("Error: {e}");
                        1
                    }
                }
            }
            _ => {
                eprintln!("Error: usage: crust track-release IMAGES_DIR");
                1
            }
        }),
        _ => None,
    }
}
