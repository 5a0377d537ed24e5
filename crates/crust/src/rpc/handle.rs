//! Each request type, answered as CRIU 4.2 answers it (cr-service.c):
//! the response's type is the request's, `success` says how it went, and a
//! failure carries `cr_errmsg` (crust's error, as `crust` prints it) and
//! `cr_errno` where CRIU sets one (ESRCH, EEXIST, EBADRQC for bad options,
//! ENOTSUP for cpuinfo on a CPU crust cannot describe).

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use anyhow::{Context, Result};
use crust_images::proto::{
    criu_req_type as ty, CriuDumpResp, CriuFeatures, CriuOpts, CriuReq, CriuResp, CriuRestoreResp,
    CriuVersion,
};

use super::notify::Notifier;
use super::opts::{self, Mode, Peer, Setup};
use super::wire;
use crate::cli::Opts;

/// The connection and what every request starts from.
pub struct Ctx<'a> {
    pub sk: BorrowedFd<'a>,
    pub peer: Peer,
    /// The options before the request's (swrk: crust's command line and
    /// configuration files, as CRIU's; service: CRIU's defaults).
    pub base: &'a Opts,
}

/// A failed response of type `t`.
pub fn failure(t: i32, errno: Option<i32>, msg: &str) -> CriuResp {
    CriuResp {
        r#type: t,
        success: false,
        cr_errno: errno,
        cr_errmsg: Some(msg.to_string()),
        ..Default::default()
    }
}

fn send(ctx: &Ctx<'_>, resp: &CriuResp) -> bool {
    match wire::send_resp(ctx.sk, resp, None) {
        Ok(()) => true,
        Err(e) => {
            log::error!("Can't send response: {e}");
            false
        }
    }
}

fn send_fail(ctx: &Ctx<'_>, resp: &CriuResp) -> bool {
    send(ctx, resp);
    false
}

/// Serve one request; whether it succeeded (and its answer was sent).
pub fn request(ctx: &Ctx<'_>, req: &CriuReq) -> bool {
    let t = req.r#type;
    match t {
        ty::DUMP => dump(ctx, req),
        ty::RESTORE => restore(ctx, req),
        ty::CHECK => check(ctx, req),
        ty::FEATURE_CHECK => send(ctx, &features(req)),
        ty::VERSION => send(ctx, &version()),
        ty::WAIT_PID => wait_pid(ctx, req.pid.unwrap_or(0) as i32),
        ty::PRE_DUMP | ty::SINGLE_PRE_DUMP => dump(ctx, req),
        ty::PAGE_SERVER | ty::PAGE_SERVER_CHLD => page_server(ctx, req, t == ty::PAGE_SERVER),
        ty::CPUINFO_DUMP | ty::CPUINFO_CHECK => cpuinfo(ctx, req, t),
        _ => {
            log::error!("RPC error: Invalid req (type {t})");
            send(
                ctx,
                &failure(
                    ty::EMPTY,
                    None,
                    &format!("Invalid req: unknown request type {t}"),
                ),
            );
            false
        }
    }
}

/// The options of a dump, restore or check: the request's over the base,
/// the log set up as the request says, CRIU's checks made. Errors are
/// CRIU's "bad options".
fn setup(ctx: &Ctx<'_>, req: &CriuReq, mode: Mode) -> Result<(Opts, Setup)> {
    let mut o = ctx.base.clone();
    if mode == Mode::Restore {
        // CRIU restores detached under the service, always.
        o.engine.detached = true;
    }
    let empty = CriuOpts {
        images_dir_fd: -1,
        ..Default::default()
    };
    let ro = req.opts.as_ref().unwrap_or(&empty);
    let setup = match opts::apply(&mut o, ro, mode, ctx.peer) {
        Ok(s) => s,
        Err(e) => {
            log_refused(ro, ctx.peer, mode);
            return Err(e);
        }
    };
    if setup.log.is_some() || mode != Mode::Check {
        crate::logger::init(setup.verbosity, setup.log.as_deref(), false)
            .context("Can't initiate log")?;
    }
    log::info!(
        "crust {} (RPC {mode:?} from process {}), pid {}",
        env!("CARGO_PKG_VERSION"),
        ctx.peer.pid,
        std::process::id()
    );
    for name in &o.no_effect {
        log::debug!("option {name} has no effect for crust");
    }
    // Once each (runc names a cgroup root per controller).
    let mut warned = std::collections::HashSet::new();
    for what in o.lacking.iter().filter(|w| warned.insert(w.as_str())) {
        log::warn!("{what}");
    }
    crate::check_caps(&o)?;
    Ok((o, setup))
}

/// Options refused: the log file the request names gets the error too
/// (`opts::refused_log`), so the path runc and podman point at says why.
fn log_refused(req: &CriuOpts, peer: Peer, mode: Mode) {
    if mode == Mode::Check {
        return;
    }
    let Some(p) = opts::refused_log(req, peer) else {
        return;
    };
    if crate::logger::init(req.log_level.unwrap_or(2), Some(&p), false).is_ok() {
        log::info!(
            "crust {} (RPC {mode:?} from process {}), pid {}: options refused",
            env!("CARGO_PKG_VERSION"),
            peer.pid,
            std::process::id()
        );
    }
}

/// The response to a failed operation `t`: CRIU's cr_errno for the kind
/// of the error, its message.
fn failed(t: i32, e: &anyhow::Error) -> CriuResp {
    log::error!("{e:#}");
    let errno = crate::error_kind(e).and_then(|k| k.cr_errno());
    failure(t, errno, &format!("{e:#}"))
}

fn bad_options(t: i32, e: &anyhow::Error) -> CriuResp {
    log::error!("{e:#}");
    failure(t, Some(libc::EBADRQC), &format!("{e:#}"))
}

/// The notify callbacks, then the action scripts a configuration file (or
/// swrk's command line) gave, as CRIU runs both.
fn hooks(ctx: &Ctx<'_>, o: &Opts, notify: bool) -> Result<crust_engine::Hooks> {
    let sk = ctx
        .sk
        .try_clone_to_owned()
        .context("dup of the RPC socket")?;
    let notifier: Arc<dyn crust_engine::ActionHook> = Arc::new(Notifier { sk, notify });
    if o.action_scripts.is_empty() {
        return Ok(crust_engine::Hooks::new(notifier));
    }
    let e = &o.engine;
    let scripts = crate::scripts::Scripts::new(&o.action_scripts, &e.images_dir, &e.work_dir());
    Ok(crust_engine::Hooks::new(Arc::new(crate::scripts::Chain(
        vec![notifier, Arc::new(scripts)],
    ))))
}

/// PAGE_SERVER (a server in a session of its own) and PAGE_SERVER_CHLD
/// (a child of this process): crust's page server listens, then a child
/// serves the one connection into the images directory; the answer holds
/// its pid and port (port 0 asked: the one the kernel chose), as CRIU's.
fn page_server(ctx: &Ctx<'_>, req: &CriuReq, daemon: bool) -> bool {
    let t = req.r#type;
    let (o, _setup) = match setup(ctx, req, Mode::Dump) {
        Ok(s) => s,
        Err(e) => return send_fail(ctx, &bad_options(t, &e)),
    };
    let e = &o.engine;
    // parent_img: the parent link its OPEN2 answers come from, as CRIU's.
    let listener = crust_engine::check_images_dir(&e.images_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| crust_engine::pageserver::link_parent(e).map_err(anyhow::Error::from))
        .and_then(|()| crust_engine::pageserver::Listener::bind(e).map_err(anyhow::Error::from));
    let listener = match listener {
        Ok(l) => l,
        Err(err) => return send_fail(ctx, &failed(t, &err)),
    };
    let port = listener.port();
    flush();
    match crust_sys::process::clone3_fork(&[], 0) {
        Ok(crust_sys::process::ForkResult::Parent { child }) => {
            log::info!("page server {child} started on port {port}");
            let resp = CriuResp {
                r#type: t,
                success: true,
                ps: Some(crust_images::proto::CriuPageServerInfo {
                    pid: Some(child),
                    port: Some(i32::from(port)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            send(ctx, &resp)
        }
        Ok(crust_sys::process::ForkResult::Child) => {
            if daemon {
                let _ = crust_sys::probe::setsid();
            }
            let served = listener.accept(e).and_then(|c| {
                crust_engine::pageserver::serve(c, &e.images_dir, None, e.ps_socket.is_none())
            });
            let code = match served {
                Ok(st) => {
                    log::info!("page server: session over, {} pages", st.pages);
                    0
                }
                Err(err) => {
                    log::error!("page server: {err}");
                    1
                }
            };
            flush();
            crust_sys::process::exit_now(code)
        }
        Err(err) => send_fail(
            ctx,
            &failed(
                t,
                &anyhow::Error::from(err).context("cannot start the page server"),
            ),
        ),
    }
}

fn dump_resp(t: i32, success: bool) -> CriuResp {
    CriuResp {
        r#type: t,
        success,
        dump: Some(CriuDumpResp {
            restored: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// DUMP, and PRE_DUMP / SINGLE_PRE_DUMP (`crust pre-dump`: the tree runs
/// on, its write tracking kept for the next run; runc's `checkpoint
/// --pre-dump`), answered with the request's type.
fn dump(ctx: &Ctx<'_>, req: &CriuReq) -> bool {
    let t = req.r#type;
    let (mut o, setup) = match setup(ctx, req, Mode::Dump) {
        Ok(s) => s,
        Err(e) => {
            let mut r = bad_options(t, &e);
            r.dump = dump_resp(t, false).dump;
            return send_fail(ctx, &r);
        }
    };
    let prepared = crust_engine::check_images_dir(&o.engine.images_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| hooks(ctx, &o, setup.notify));
    match prepared {
        Ok(h) => o.engine.hooks = h,
        Err(e) => {
            let mut r = failed(t, &e);
            r.dump = dump_resp(t, false).dump;
            send(ctx, &r);
            return false;
        }
    }
    log::debug!("dump options: {:?}", o.engine);
    // As `crust dump`: the dump runs in a worker of its own session that
    // rolls back if this process dies; the worker answers the client.
    if std::env::var_os("CRUST_NO_WORKER").is_none() {
        if let Err(e) = crust_sys::process::catch_stop_signals() {
            return send_fail(
                ctx,
                &failed(
                    t,
                    &anyhow::Error::from(e).context("cannot catch stop signals"),
                ),
            );
        }
        flush();
        match crust_sys::process::split_worker() {
            Ok(crust_sys::process::Side::FrontEnd { worker }) => {
                return match crust_sys::process::wait_worker(worker) {
                    Ok(0) => true,
                    Ok(1) => false,
                    Ok(code) => {
                        let e = anyhow::anyhow!("the dump's worker {worker} ended with {code}");
                        send(ctx, &failed(t, &e));
                        false
                    }
                    Err(e) => {
                        log::error!("cannot wait for the dump's worker: {e}");
                        false
                    }
                };
            }
            Ok(crust_sys::process::Side::Worker) => {
                let ok = dump_work(ctx, &o, setup.self_dump, t);
                flush();
                std::process::exit(i32::from(!ok));
            }
            Err(e) => {
                let e = anyhow::Error::from(e).context("cannot start the dump's worker");
                return send_fail(ctx, &failed(t, &e));
            }
        }
    }
    dump_work(ctx, &o, setup.self_dump, t)
}

fn flush() {
    log::logger().flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// Run the dump and answer it. A client that dumped itself is gone after
/// a dump that killed it: no answer then, as in CRIU.
fn dump_work(ctx: &Ctx<'_>, o: &Opts, self_dump: bool, t: i32) -> bool {
    let e = &o.engine;
    let done = if t == ty::DUMP {
        crust_engine::dump(e)
    } else {
        // As CRIU: a pre-dump tracks memory and leaves the tree running.
        let mut pre = e.clone();
        pre.track_mem = true;
        crust_engine::pre_dump(&pre)
    };
    match done {
        Ok(stats) => {
            log::info!("dumped tree {} over RPC", e.pid);
            if e.auto_dedup {
                crate::dedup::after_dump(&e.images_dir);
            }
            if e.display_stats {
                crate::print_dump_stats(&stats);
            }
            if self_dump && !e.leave_running && t == ty::DUMP {
                return true;
            }
            send(ctx, &dump_resp(t, true))
        }
        Err(err) => {
            let mut r = failed(t, &anyhow::Error::from(err));
            r.dump = dump_resp(t, false).dump;
            send(ctx, &r);
            false
        }
    }
}

fn restore_resp(success: bool, pid: i32) -> CriuResp {
    CriuResp {
        r#type: ty::RESTORE,
        success,
        restore: Some(CriuRestoreResp {
            pid,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restore(ctx: &Ctx<'_>, req: &CriuReq) -> bool {
    let fail = |r: CriuResp| {
        let mut r = r;
        r.restore = restore_resp(false, -1).restore;
        send(ctx, &r);
        false
    };
    let (mut o, setup) = match setup(ctx, req, Mode::Restore) {
        Ok(s) => s,
        Err(e) => return fail(bad_options(ty::RESTORE, &e)),
    };
    let prepared = crust_engine::check_images_dir(&o.engine.images_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| hooks(ctx, &o, setup.notify));
    match prepared {
        Ok(h) => o.engine.hooks = h,
        Err(e) => return fail(failed(ty::RESTORE, &e)),
    }
    log::debug!("restore options: {:?}", o.engine);
    match crust_engine::restore(&o.engine) {
        Ok(out) => {
            log::info!(
                "restored root task {} in {} us over RPC",
                out.root_pid,
                out.restore_time_us
            );
            send(ctx, &restore_resp(true, out.root_pid))
        }
        Err(err) => fail(failed(ty::RESTORE, &anyhow::Error::from(err))),
    }
}

fn check(ctx: &Ctx<'_>, req: &CriuReq) -> bool {
    if req.opts.is_some() {
        if let Err(e) = setup(ctx, req, Mode::Check) {
            return send_fail(ctx, &bad_options(ty::CHECK, &e));
        }
    }
    let ok = matches!(crate::check::run(&Opts::default()), Ok(0));
    flush();
    let resp = if ok {
        CriuResp {
            r#type: ty::CHECK,
            success: true,
            ..Default::default()
        }
    } else {
        failure(
            ty::CHECK,
            None,
            "crust check: the kernel lacks what crust needs (see crust check -v4)",
        )
    };
    send(ctx, &resp) && ok
}

/// CPUINFO_DUMP, CPUINFO_CHECK: `crust cpuinfo dump|check` in the
/// request's images directory, with its `cpu_cap` (CRIU's RPC adds the
/// image bit to it; check with no bits at all checks everything).
fn cpuinfo(ctx: &Ctx<'_>, req: &CriuReq, t: i32) -> bool {
    // CRIU sets the options in a child whose errno is lost: a failure
    // carries the message only.
    let o = match setup(ctx, req, Mode::Restore) {
        Ok((o, _)) => o,
        Err(e) => return send_fail(ctx, &failure(t, None, &format!("{e:#}"))),
    };
    let dir = &o.engine.images_dir;
    let r = if t == ty::CPUINFO_DUMP {
        crust_engine::cpuinfo::dump(dir)
    } else {
        crust_engine::cpuinfo::check(dir, crust_engine::cpuinfo::check_caps(o.engine.cpu_cap))
    };
    flush();
    match r {
        Ok(()) => send(
            ctx,
            &CriuResp {
                r#type: t,
                success: true,
                ..Default::default()
            },
        ),
        Err(e) => {
            let msg = crate::error_chain(&e);
            log::error!("{msg}");
            let errno = (e.kind() == crust_engine::ErrorKind::Unsupported && t == ty::CPUINFO_DUMP)
                .then_some(libc::ENOTSUP);
            send_fail(ctx, &failure(t, errno, &msg))
        }
    }
}

/// FEATURE_CHECK: each feature asked for, as crust can do it (mem_track:
/// `mem_dirty_track`, lazy_pages: `uffd-noncoop`, as CRIU answers them).
pub fn features(req: &CriuReq) -> CriuResp {
    let asked = req.features.clone().unwrap_or_default();
    let answer = |wanted: Option<bool>, name: &str| {
        Some(wanted == Some(true) && crate::check::feature_supported(name))
    };
    CriuResp {
        r#type: ty::FEATURE_CHECK,
        success: true,
        features: Some(CriuFeatures {
            mem_track: answer(asked.mem_track, "mem_dirty_track"),
            lazy_pages: answer(asked.lazy_pages, "uffd-noncoop"),
            pidfd_store: answer(asked.pidfd_store, "pidfd_store"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// VERSION: the CRIU release crust implements (4.2: runc wants 3.0 or
/// later, go-criu reads major * 10000 + minor * 100), and `name` says
/// crust and its own version. No gitid (go-criu counts a git build as the
/// next minor release).
pub fn version() -> CriuResp {
    let (major, minor) = crate::CRIU_VERSION
        .split_once('.')
        .map(|(a, b)| (a.parse().unwrap_or(0), b.parse().unwrap_or(0)))
        .unwrap_or((0, 0));
    CriuResp {
        r#type: ty::VERSION,
        success: true,
        version: Some(CriuVersion {
            major_number: major,
            minor_number: minor,
            name: Some(format!("crust {}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The raw wait status of `s`, as waitpid(2) gives it.
fn raw_status(s: crust_sys::process::WaitStatus) -> i32 {
    use crust_sys::process::WaitStatus as W;
    match s {
        W::Exited(c) => (c & 0xff) << 8,
        W::Signaled { sig, core } => sig | if core { 0x80 } else { 0 },
        W::Stopped { sig, event } => 0x7f | (sig << 8) | (event << 16),
        W::Continued => 0xffff,
    }
}

fn wait_pid(ctx: &Ctx<'_>, pid: i32) -> bool {
    match crust_sys::process::waitpid(pid, 0) {
        Ok(Some((_, st))) => send(
            ctx,
            &CriuResp {
                r#type: ty::WAIT_PID,
                success: true,
                status: Some(raw_status(st)),
                ..Default::default()
            },
        ),
        Ok(None) => send_fail(
            ctx,
            &failure(ty::WAIT_PID, None, "waitpid returned nothing"),
        ),
        Err(e) => {
            // CRIU fills cr_errno here but does not mark it set.
            log::error!("Unable to wait {pid}: {e}");
            send_fail(
                ctx,
                &failure(ty::WAIT_PID, None, &format!("Unable to wait {pid}: {e}")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_criu_4_2_and_names_crust() {
        let r = version();
        assert!(r.success && r.r#type == ty::VERSION);
        let v = r.version.unwrap();
        assert_eq!((v.major_number, v.minor_number), (4, 2));
        assert!(v.gitid.is_none());
        assert!(v.name.unwrap().starts_with("crust "));
    }

    #[test]
    fn features_answer_only_what_is_asked() {
        let r = features(&CriuReq {
            r#type: ty::FEATURE_CHECK,
            features: Some(CriuFeatures {
                mem_track: Some(true),
                lazy_pages: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(r.success);
        let f = r.features.unwrap();
        // Dirty-page tracking (this kernel: userfaultfd), lazy pages (as
        // root); pidfd_store not asked.
        assert_eq!(
            (f.mem_track, f.lazy_pages, f.pidfd_store),
            (Some(true), Some(true), Some(false))
        );
    }

    #[test]
    fn wait_status_as_the_kernel_gives_it() {
        use crust_sys::process::WaitStatus as W;
        for raw in [0, 3 << 8, 9, 0x8b, 0x137f] {
            assert_eq!(raw_status(W::from_raw(raw)), raw, "{raw:#x}");
        }
    }
}
