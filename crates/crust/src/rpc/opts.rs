//! `criu_opts` -> the options the command line fills ([`crate::cli::Opts`]
//! and its [`crust_engine::Options`]), as CRIU's cr-service.c reads them:
//! each field is applied as the command-line option of the same meaning
//! (so the same checks, warnings and refusals apply), then the RPC's own
//! ones: the images and work directories as fds of the client (opened as
//! /proc/PEER/fd/N), the log file (a name in the work directory), the
//! configuration file that overrides the request. Any error here is
//! CRIU's EBADRQC ("bad options").

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use crust_images::proto::CriuOpts;

use crate::cli::Opts;

/// What the request is for (CRIU's `opts.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dump,
    Restore,
    Check,
}

/// Who asked, and over what.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's pid (SO_PEERCRED): its fds are read through
    /// /proc/PID/fd.
    pub pid: i32,
    /// `crust swrk` (a child of the client: inherit_fd, rst_sibling and a
    /// page server fd are allowed), not `crust service`.
    pub swrk: bool,
}

/// What the RPC setup decided beside the options.
#[derive(Debug, Default)]
pub struct Setup {
    /// The log file (None: stderr).
    pub log: Option<PathBuf>,
    pub verbosity: i32,
    /// `notify_scripts`.
    pub notify: bool,
    /// The dump's root was not given: the client dumps itself.
    pub self_dump: bool,
    /// Directories and fds of the client crust holds for the request.
    pub held: Vec<File>,
}

/// CRIU's default log file name in the work directory.
pub const DEFAULT_LOG: &str = "criu.log";

/// Fill `o` from `req` for `mode`.
pub fn apply(o: &mut Opts, req: &CriuOpts, mode: Mode, peer: Peer) -> Result<Setup> {
    let mut setup = Setup {
        verbosity: req.log_level.unwrap_or(2),
        notify: req.notify_scripts == Some(true),
        ..Default::default()
    };
    if mode == Mode::Check && (req.log_file.is_none() || req.log_to_stderr == Some(true)) {
        setup.log = None;
        return Ok(setup);
    }
    apply_flags(o, req, mode, peer, &mut setup)?;
    apply_lists(o, req, peer)?;
    apply_values(o, req, peer, &mut setup)?;
    apply_places(o, req, mode, peer, &mut setup)?;
    check(o, mode)?;
    Ok(setup)
}

/// A boolean option: `--NAME` when true, `--no-NAME` (or nothing, for
/// options without a `--no-` form) when false.
fn flag(o: &mut Opts, name: &str, v: Option<bool>) -> Result<()> {
    match v {
        Some(true) => o.apply_named(name, None, false),
        Some(false) => o.apply_named(name, None, true),
        None => Ok(()),
    }
}

/// An option CRIU only turns on.
fn on(o: &mut Opts, name: &str, v: Option<bool>) -> Result<()> {
    if v == Some(true) {
        o.apply_named(name, None, false)?;
    }
    Ok(())
}

fn value(o: &mut Opts, name: &str, v: impl ToString) -> Result<()> {
    o.apply_named(name, Some(v.to_string()), false)
}

fn apply_flags(
    o: &mut Opts,
    req: &CriuOpts,
    mode: Mode,
    peer: Peer,
    setup: &mut Setup,
) -> Result<()> {
    flag(o, "unprivileged", req.unprivileged)?;
    on(o, "leave-running", req.leave_running)?;
    on(o, "leave-stopped", req.leave_stopped)?;
    if mode == Mode::Dump {
        match req.pid {
            Some(pid) => value(o, "tree", pid)?,
            None => {
                setup.self_dump = true;
                value(o, "tree", peer.pid)?;
            }
        }
    }
    if let Some(v) = req.ext_unix_sk {
        flag(o, "ext-unix-sk", Some(v))?;
        if !req.unix_sk_ino.is_empty() {
            // CRIU's list of single sockets (`-x INODE`).
            o.unsupported.push("unix_sk_ino".into());
        }
    }
    if let Some(v) = req.rst_sibling {
        if !peer.swrk {
            bail!("rst_sibling is not allowed in standalone service");
        }
        flag(o, "restore-sibling", Some(v))?;
    }
    for (name, v) in [
        ("tcp-established", req.tcp_established),
        ("skip-in-flight", req.tcp_skip_in_flight),
        ("tcp-close", req.tcp_close),
        ("weak-sysctls", req.weak_sysctls),
        ("evasive-devices", req.evasive_devices),
        ("shell-job", req.shell_job),
        ("skip-file-rwx-check", req.skip_file_rwx_check),
        ("file-locks", req.file_locks),
        ("track-mem", req.track_mem),
        ("link-remap", req.link_remap),
        ("auto-dedup", req.auto_dedup),
        ("force-irmap", req.force_irmap),
        ("display-stats", req.display_stats),
    ] {
        flag(o, name, v)?;
    }
    on(o, "lazy-pages", req.lazy_pages)?;
    on(o, "enable-external-sharing", req.ext_sharing)?;
    on(o, "enable-external-masters", req.ext_masters)?;
    on(o, "tls", req.tls)?;
    on(o, "tls-no-cn-verify", req.tls_no_cn_verify)?;
    if req.auto_ext_mnt == Some(true) {
        value(o, "ext-mount-map", "auto")?;
    }
    if req.mntns_compat_mode == Some(true) {
        o.mntns_compat_mode = true;
    }
    if req.orphan_pts_master == Some(true) {
        // RPC only, as in CRIU: the container's console (a pty slave whose
        // master the runtime holds) is dumped, and its new master goes to
        // the client at restore.
        o.engine.orphan_pts_master = true;
    }
    Ok(())
}

fn apply_lists(o: &mut Opts, req: &CriuOpts, peer: Peer) -> Result<()> {
    if !req.exec_cmd.is_empty() {
        o.apply_named("exec-cmd", None, false)?;
    }
    for v in &req.veths {
        value(o, "veth-pair", format!("{}={}", v.if_in, v.if_out))?;
    }
    for m in &req.ext_mnt {
        value(o, "ext-mount-map", format!("{}:{}", m.key, m.val))?;
    }
    for j in &req.join_ns {
        let mut s = format!("{}:{}", j.ns, j.ns_file);
        if let Some(extra) = &j.extra_opt {
            s.push(',');
            s.push_str(extra);
        }
        value(o, "join-ns", s)?;
    }
    if !req.inherit_fd.is_empty() && !peer.swrk {
        bail!("inherit_fd is not allowed in standalone service");
    }
    for i in &req.inherit_fd {
        value(o, "inherit-fd", format!("fd[{}]:{}", i.fd, i.key))?;
    }
    for e in &req.external {
        value(o, "external", e)?;
    }
    for c in &req.cg_root {
        let v = match &c.ctrl {
            Some(ctrl) => format!("{ctrl}:{}", c.path),
            None => c.path.clone(),
        };
        value(o, "cgroup-root", v)?;
    }
    for f in &req.enable_fs {
        value(o, "enable-fs", f)?;
    }
    for m in &req.skip_mnt {
        value(o, "skip-mnt", m)?;
    }
    for p in &req.irmap_scan_paths {
        value(o, "irmap-scan-path", p)?;
    }
    for c in &req.cgroup_dump_controller {
        value(o, "cgroup-dump-controller", c)?;
    }
    Ok(())
}

/// CRIU's cgroup modes (rpc.proto's criu_cg_mode), by number.
fn cg_mode(v: i32) -> Option<&'static str> {
    Some(match v {
        0 => "ignore",
        1 => "none",
        2 => "props",
        3 => "soft",
        4 => "full",
        5 => "strict",
        // CG_MODE_DEFAULT: CRIU's default mode, soft.
        6 => "soft",
        _ => return None,
    })
}

fn apply_values(o: &mut Opts, req: &CriuOpts, peer: Peer, setup: &mut Setup) -> Result<()> {
    if let Some(m) = req.pre_dump_mode {
        let v = match m {
            1 => "splice",
            2 => "read",
            _ => bail!("unknown pre_dump_mode {m}"),
        };
        value(o, "pre-dump-mode", v)?;
    }
    if let Some(m) = req.network_lock {
        let v = match m {
            1 => "iptables",
            2 => "nftables",
            3 => "skip",
            _ => bail!("unknown network_lock method {m}"),
        };
        value(o, "network-lock", v)?;
    }
    if let Some(ps) = &req.ps {
        if ps.fd.is_some() && !peer.swrk {
            bail!("a page server fd is not allowed in standalone service");
        }
        // CRIU's: the port always (lazy-pages' server too), the rest for
        // a dump to a page server.
        if let Some(p) = ps.port {
            o.engine.port =
                Some(u16::try_from(p).map_err(|_| anyhow!("bad page server port {p}"))?);
        }
        if req.lazy_pages != Some(true) {
            o.apply_named("page-server", None, false)?;
            o.engine.address = ps.address.clone();
            o.engine.ps_socket = ps.fd;
        }
    }
    if let Some(caps) = req.cpu_cap {
        // CRIU's RPC: the request's bits, with the image (cpuinfo.img
        // written at dump, checked at restore) whatever they are.
        o.engine.cpu_cap = caps | crust_engine::cpuinfo::CAP_IMAGE;
    }
    if let Some(m) = req.manage_cgroups {
        value(o, "manage-cgroups", if m { "soft" } else { "ignore" })?;
    }
    if let Some(m) = req.manage_cgroups_mode {
        let v = cg_mode(m).ok_or_else(|| anyhow!("unknown manage_cgroups_mode {m}"))?;
        value(o, "manage-cgroups", v)?;
    }
    for (name, v) in [
        ("lsm-profile", &req.lsm_profile),
        ("lsm-mount-context", &req.lsm_mount_context),
        ("cgroup-props", &req.cgroup_props),
        ("cgroup-props-file", &req.cgroup_props_file),
        ("cgroup-yard", &req.cgroup_yard),
        ("tls-cacert", &req.tls_cacert),
        ("tls-cacrl", &req.tls_cacrl),
        ("tls-cert", &req.tls_cert),
        ("tls-key", &req.tls_key),
        ("root", &req.root),
        ("freeze-cgroup", &req.freeze_cgroup),
        ("prev-images-dir", &req.parent_img),
    ] {
        if let Some(v) = v {
            value(o, name, v)?;
        }
    }
    if let Some(t) = req.timeout {
        value(o, "timeout", t)?;
    }
    if let Some(g) = req.ghost_limit {
        value(o, "ghost-limit", g)?;
    }
    if let Some(ns) = req.empty_ns {
        if ns & !(libc::CLONE_NEWNET as u32) != 0 {
            bail!("empty_ns {ns:#x}: only CLONE_NEWNET can be asked for");
        }
        if ns != 0 {
            value(o, "empty-ns", "net")?;
        }
    }
    if let Some(fd) = req.status_fd {
        log::warn!("status_fd is obsoleted; use status-ready notification instead");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/fd/{fd}", peer.pid))
            .with_context(|| format!("Can't reopen status fd {fd} of process {}", peer.pid))?;
        o.engine.status_fd = Some(f.as_raw_fd());
        setup.held.push(f);
    }
    if let Some(fd) = req.pidfd_store_sk {
        // For pid reuse across pre-dumps, which crust does not make: only
        // checked, as CRIU takes it.
        let path = format!("/proc/{}/fd/{fd}", peer.pid);
        let meta = std::fs::metadata(&path).with_context(|| format!("pidfd_store_sk: {path}"))?;
        if meta.mode() & libc::S_IFMT != libc::S_IFSOCK {
            bail!(
                "pidfd_store_sk {fd} of process {} is not a socket",
                peer.pid
            );
        }
        o.no_effect.push("pidfd_store_sk".into());
    }
    Ok(())
}

/// A directory the client gives as its fd N (/proc/PEER/fd/N): the path
/// it is at, when that is the same directory, else the copy crust holds.
fn client_dir(peer: i32, fd: i32, setup: &mut Setup) -> Result<PathBuf> {
    let link = format!("/proc/{peer}/fd/{fd}");
    let f = File::open(&link)
        .with_context(|| format!("Can't open the client's directory fd {fd} ({link})"))?;
    let meta = f.metadata().with_context(|| format!("stat of {link}"))?;
    if !meta.is_dir() {
        bail!("fd {fd} of process {peer} is not a directory");
    }
    if let Ok(path) = std::fs::read_link(&link) {
        let same =
            std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
        if same && path.is_absolute() {
            setup.held.push(f);
            return Ok(path);
        }
    }
    let held = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    setup.held.push(f);
    Ok(held)
}

/// Images and work directories, the configuration file, the log (CRIU's
/// order: the configuration file wins over the request).
fn apply_places(
    o: &mut Opts,
    req: &CriuOpts,
    mode: Mode,
    peer: Peer,
    setup: &mut Setup,
) -> Result<()> {
    let mut conf_images = None;
    let mut conf_work = None;
    let mut conf_log = None;
    if let Some(cf) = &req.config_file {
        let (img0, work0, log0) = (
            o.engine.images_dir.clone(),
            o.engine.work_dir.clone(),
            o.log_file.clone(),
        );
        o.engine.images_dir = PathBuf::new();
        o.engine.work_dir = None;
        o.log_file = None;
        o.apply_config_file(Path::new(cf))?;
        conf_images = Some(std::mem::replace(&mut o.engine.images_dir, img0))
            .filter(|p| !p.as_os_str().is_empty());
        conf_work = std::mem::replace(&mut o.engine.work_dir, work0);
        conf_log = std::mem::replace(&mut o.log_file, log0);
    }
    let images = if let Some(p) = conf_images {
        Some(p)
    } else if req.images_dir_fd != -1 {
        Some(client_dir(peer.pid, req.images_dir_fd, setup)?)
    } else if let Some(p) = &req.images_dir {
        Some(PathBuf::from(p))
    } else if mode == Mode::Check {
        None
    } else {
        bail!("Neither images_dir_fd nor images_dir was passed by RPC client.");
    };
    if let Some(p) = &images {
        if mode != Mode::Check && !p.is_dir() {
            bail!("Can't open images directory {}", p.display());
        }
        o.engine.images_dir = p.clone();
    }
    let work = if let Some(w) = conf_work {
        Some(w)
    } else if let Some(fd) = req.work_dir_fd {
        Some(client_dir(peer.pid, fd, setup)?)
    } else {
        o.engine.work_dir.clone().or(images)
    };
    let Some(work) = work else {
        bail!("images-dir or work-dir is required when using log file");
    };
    std::env::set_current_dir(&work)
        .with_context(|| format!("Can't chdir to work_dir {}", work.display()))?;
    o.engine.work_dir = Some(work.clone());
    setup.log = if let Some(l) = conf_log {
        Some(work.join(l))
    } else if let Some(l) = &req.log_file {
        if l.contains('/') {
            bail!("No subdirs are allowed in log_file name ({l})");
        }
        Some(work.join(l))
    } else if req.log_to_stderr == Some(true) {
        None
    } else {
        Some(work.join(o.log_file.clone().unwrap_or_else(|| DEFAULT_LOG.into())))
    };
    Ok(())
}

/// The log file of a request whose options were refused: the one it names
/// (`log_file`, else `criu.log`) in its work directory, else its images
/// directory, the configuration file left aside; None for stderr or when
/// neither directory can be found. CRIU reports such errors before its log
/// is set up, on its stderr, which runc and podman drop: they only show
/// the client the log file's path, so crust writes the reason there.
pub fn refused_log(req: &CriuOpts, peer: Peer) -> Option<PathBuf> {
    if req.log_to_stderr == Some(true) {
        return None;
    }
    let name = req.log_file.as_deref().unwrap_or(DEFAULT_LOG);
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let fd = req
        .work_dir_fd
        .or(Some(req.images_dir_fd).filter(|&fd| fd >= 0));
    let dir = match fd {
        Some(fd) => PathBuf::from(format!("/proc/{}/fd/{fd}", peer.pid)),
        None => PathBuf::from(req.images_dir.as_ref()?),
    };
    dir.is_dir().then(|| dir.join(name))
}

/// CRIU's check_options, where it applies to the RPC.
fn check(o: &Opts, mode: Mode) -> Result<()> {
    if o.mntns_compat_mode && mode != Mode::Restore {
        bail!("Option --mntns-compat-mode is only valid on restore");
    }
    if !o.engine.inherit_fds.is_empty() && mode != Mode::Restore {
        bail!("--inherit-fd is restore-only option");
    }
    if !o.unsupported.is_empty() {
        bail!("crust does not support {} yet", o.unsupported.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
