//! `crust page-server`: receive one dump's pages into `-D DIR`, as CRIU's
//! page server does (one connection, then exit).

use crate::cli::Opts;
use anyhow::{Context, Result};
use crust_engine::pageserver::{serve, ImagesProvider, Listener};

pub fn run(opts: &Opts) -> Result<i32> {
    let o = &opts.engine;
    crust_engine::check_images_dir(&o.images_dir)?;
    crust_engine::pageserver::link_parent(o)?;
    let listener = Listener::bind(o)?;
    log::info!(
        "page server: listening on {}:{}",
        o.address.as_deref().unwrap_or("0.0.0.0"),
        listener.port()
    );
    if o.detached {
        // CRIU's --daemon: the caller gets its shell back once the server
        // listens; the pidfile holds the server's pid.
        crate::rpc::flush_all();
        match crust_sys::process::clone3_fork(&[], 0)
            .context("Can't run the page server in the background")?
        {
            crust_sys::process::ForkResult::Parent { child } => {
                if let Some(p) = &o.pidfile {
                    if let Err(e) = crate::write_pidfile(&o.in_work_dir(p), child) {
                        let _ = crust_sys::process::kill(child, libc::SIGKILL);
                        let _ = crust_sys::process::waitpid(child, 0);
                        return Err(e);
                    }
                }
                return Ok(0);
            }
            crust_sys::process::ForkResult::Child => {
                crust_sys::probe::setsid().context("setsid")?;
                for fd in 0..3 {
                    let _ = crust_sys::probe::close_fd(fd);
                }
                crate::rpc::fill_std_fds();
            }
        }
    }
    if let Some(fd) = o.status_fd {
        crate::rpc::status_ready(fd);
    }
    let conn = listener.accept(o)?;
    // --lazy-pages: a remote lazy-pages daemon takes the pages of the
    // images in -D (PS_IOV_GET).
    let mut images = o.lazy_pages.then(|| ImagesProvider::open(&o.images_dir));
    let provider = images
        .as_mut()
        .map(|p| p as &mut dyn crust_engine::pageserver::PageProvider);
    // On a terminal: bytes received and the rate, from the connection on.
    crust_engine::progress::start("page-server");
    let st = serve(conn, &o.images_dir, provider, o.ps_socket.is_none());
    crust_engine::progress::finish();
    let st = st?;
    log::info!(
        "page server: session over, {} pages in {} pagemaps, {} pages sent",
        st.pages,
        st.opens,
        st.sent
    );
    Ok(0)
}
