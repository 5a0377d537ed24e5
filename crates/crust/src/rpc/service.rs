//! `crust service [--address PATH] [--daemon] [--pidfile FILE]`: CRIU's
//! RPC daemon. It works in the work directory (`-W`, else `-D`, else `.`)
//! as CRIU does, binds a SOCK_SEQPACKET socket to PATH (CRIU's default
//! `./criu_service.socket`, replacing a file of that name), lets anyone
//! connect (mode 0666) and serves each connection in a crust process of
//! its own (`crust __rpc-conn`, the connection as its fd 0), so that one
//! client's dump cannot disturb another's.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use crust_sys::unix;

use crate::cli::Opts;

/// CRIU's default address (cr-service-const.h), relative to the work
/// directory.
pub const DEFAULT_ADDRESS: &str = "./criu_service.socket";

pub fn service(o: &Opts) -> Result<i32> {
    let work = o.engine.work_dir();
    std::env::set_current_dir(&work)
        .with_context(|| format!("Can't change directory to {}", work.display()))?;
    let addr = match &o.engine.address {
        Some(a) => a.clone(),
        None => {
            log::warn!("Binding to local dir address!");
            DEFAULT_ADDRESS.to_string()
        }
    };
    let sk = listen(&addr)?;
    log::info!("The service socket is bound to {addr}");
    let pidfile = o.engine.pidfile.clone();
    if o.engine.detached {
        // daemon(3): the caller gets its shell back, the service runs on
        // in a session of its own with /dev/null as its stdio.
        super::flush_all();
        match crust_sys::process::clone3_fork(&[], 0)
            .context("Can't run service server in the background")?
        {
            crust_sys::process::ForkResult::Parent { child } => {
                if let Some(p) = &pidfile {
                    crate::write_pidfile(p, child)?;
                }
                return Ok(0);
            }
            crust_sys::process::ForkResult::Child => {
                crust_sys::probe::setsid().context("setsid")?;
                for fd in 0..3 {
                    let _ = crust_sys::probe::close_fd(fd);
                }
                super::fill_std_fds();
            }
        }
    } else if let Some(p) = &pidfile {
        crate::write_pidfile(p, crust_sys::process::getpid())?;
    }
    // CRIU's status_ready(): the status-ready action scripts (a failure
    // stops the service), then the status fd.
    if !o.action_scripts.is_empty() {
        use crust_engine::ActionHook;
        crate::scripts::Scripts::new(&o.action_scripts, &o.engine.images_dir, &work)
            .run(crust_engine::Action::StatusReady, None)
            .map_err(|why| anyhow::anyhow!("{why}"))?;
    }
    if let Some(fd) = o.engine.status_fd {
        super::status_ready(fd);
    }
    serve_forever(sk.as_fd())
}

/// A listening SOCK_SEQPACKET socket at `addr`, which anyone may connect to.
fn listen(addr: &str) -> Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    let sk = unix::socket(libc::SOCK_SEQPACKET).context("Can't initialize service socket")?;
    let _ = std::fs::remove_file(addr);
    unix::bind(sk.as_fd(), addr.as_bytes()).with_context(|| format!("Can't bind to {addr}"))?;
    std::fs::set_permissions(addr, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("Can't change permissions of the service socket {addr}"))?;
    unix::listen(sk.as_fd(), 16).context("Can't listen for socket connections")?;
    Ok(sk)
}

fn serve_forever(sk: std::os::fd::BorrowedFd<'_>) -> Result<i32> {
    let exe = std::env::current_exe().context("crust's own executable (/proc/self/exe)")?;
    loop {
        log::info!("Waiting for connection...");
        let conn = match unix::accept(sk) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("Can't accept connection"),
        };
        log::info!("Connected.");
        match Command::new(&exe)
            .arg("__rpc-conn")
            .stdin(Stdio::from(conn))
            .spawn()
        {
            Ok(mut child) => {
                // Reaped when it ends, as CRIU's SIGCHLD handler does.
                std::thread::spawn(move || {
                    let pid = child.id();
                    match child.wait() {
                        Ok(st) => log::info!("Worker(pid {pid}) exited: {st}"),
                        Err(e) => log::warn!("Worker(pid {pid}): {e}"),
                    }
                });
            }
            Err(e) => log::error!("Can't start a crust for the connection: {e}"),
        }
    }
}
