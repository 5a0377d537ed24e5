//! `crust dedup -D DIR`: punch out of the parent image sets of DIR the
//! pages DIR supersedes (CRIU's command), and `--auto-dedup` after a dump.

use anyhow::{Context, Result};

use crate::cli::Opts;

/// `crust dedup`.
pub fn run(opts: &Opts) -> Result<i32> {
    let dir = &opts.engine.images_dir;
    crust_engine::check_images_dir(dir)?;
    let s = crust_engine::dedup(dir)
        .with_context(|| format!("cannot deduplicate the parents of {}", dir.display()))?;
    log::info!(
        "Deduplicated: {} bytes punched out of {} parent pages files",
        s.bytes,
        s.files
    );
    Ok(0)
}

/// `--auto-dedup` after a dump into `dir` succeeded: the images are
/// complete whatever happens here, so a failure is reported, not fatal
/// (the parents keep their pages).
pub fn after_dump(dir: &std::path::Path) {
    match crust_engine::dedup(dir) {
        Ok(s) => log::info!(
            "auto-dedup: {} bytes punched out of {} parent pages files",
            s.bytes,
            s.files
        ),
        Err(e) => log::error!(
            "auto-dedup of the parents of {} failed (the dump is complete; the parents keep their pages): {}",
            dir.display(),
            crate::error_chain(&e)
        ),
    }
}
