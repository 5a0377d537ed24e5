//! `crust lazy-pages`: the daemon that serves the memory of a tree
//! restored with `restore --lazy-pages` (see the engine's `lazy` module).
//!
//! `-D DIR` the images, `-W DIR` where `lazy-pages.socket` is made (the
//! images directory by default); with `--page-server --address A --port
//! P`, the pages `dump --lazy-pages` left on the source come from its
//! page server there. It listens, takes the restore's
//! processes, and returns once every page is in or every process is gone.
//! With `-d/--daemon` the command returns once the socket listens and the
//! daemon goes on in the background.

use anyhow::{bail, Result};
use crust_sys::process::{self, ForkResult};
use std::io::{Read, Write};

pub fn run(o: &crust_engine::Options) -> Result<i32> {
    if !o.detached {
        let mut ready = || {};
        // On a terminal: pages put in of those to serve, rate, time left.
        crust_engine::progress::start("lazy-pages");
        let stats = crust_engine::lazy_pages(o, &mut ready);
        crust_engine::progress::finish();
        let stats = stats?;
        log::info!("lazy-pages: {stats:?}");
        return Ok(0);
    }
    let (mut rd, wr) = pipe()?;
    match process::clone3_fork(&[], 0)? {
        ForkResult::Parent { child } => {
            drop(wr);
            let mut b = [0u8; 1];
            if rd.read(&mut b)? == 1 {
                return Ok(0);
            }
            let _ = process::waitpid(child, 0);
            bail!("the lazy-pages daemon failed before it listened (see its log)")
        }
        ForkResult::Child => {
            drop(rd);
            let _ = crust_sys::probe::setsid();
            let mut wr = Some(wr);
            let mut ready = || {
                if let Some(mut w) = wr.take() {
                    let _ = w.write_all(&[1]);
                }
            };
            let code = match crust_engine::lazy_pages(o, &mut ready) {
                Ok(stats) => {
                    log::info!("lazy-pages: {stats:?}");
                    0
                }
                Err(e) => {
                    log::error!("lazy-pages: {e:#}");
                    1
                }
            };
            process::exit_now(code)
        }
    }
}

fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = crust_sys::pipe::pipe2(libc::O_CLOEXEC)?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}
