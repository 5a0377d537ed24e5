//! `crust`: checkpoint/restore of Linux processes, CRIU-compatible command
//! line. See `crust --help` and README.md.

mod check;
mod cli;
mod coredump;
mod crit;
mod dedup;
mod demo;
mod getopt;
mod image;
mod imgdiff;
mod lazypages;
mod logger;
mod pageserver;
mod predump;
mod rpc;
mod scripts;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use crust_sys::probe;

use cli::Opts;

/// `err` and its sources joined with ": ".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `crit ...` (crust under that name) and `crust crit ...`.
    if crit::invoked_as_crit() {
        crit::main_as_crit(&argv);
    }
    if argv.first().map(String::as_str) == Some("crit") {
        crit::main_as_crit(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("__demo-counter") {
        demo::counter(&argv[1..]);
    }
    if let Some(code) = predump::keeper_command(&argv) {
        std::process::exit(code);
    }
    if argv.first().map(String::as_str) == Some("coredump") {
        // CRIU's coredump is a tool of its own, with options of its own
        // (`-o` is its output directory, not the log file).
        let _ = logger::init(2, None, false);
        std::process::exit(coredump::run(&argv[1..]));
    }
    if argv.first().map(String::as_str) == Some("__rpc-conn") {
        std::process::exit(rpc::service_conn());
    }
    let mut logs_to_file = false;
    let code = match run(&argv, &mut logs_to_file) {
        Ok(code) => code,
        Err(e) => {
            if logs_to_file {
                log::error!("{e:#}");
            }
            let _ = std::io::stdout().flush();
            eprintln!("Error: {e:#}");
            exit_code(&e)
        }
    };
    log::logger().flush();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// The exit code CRIU gives for the failure `e`: from the kind of the
/// engine's error when there is one (see crust_engine::ErrorKind), else
/// CRIU's code for a failed command.
fn exit_code(e: &anyhow::Error) -> i32 {
    // A post-dump action script that failed: CRIU's dump returns the
    // scripts' status, -1, through WEXITSTATUS, so `criu dump` exits 255.
    let post_dump = e.chain().any(|c| {
        let engine = c
            .downcast_ref::<crust_engine::DumpError>()
            .map(|d| &*d.source)
            .or_else(|| c.downcast_ref::<crust_engine::Error>());
        matches!(
            engine,
            Some(crust_engine::Error::Action { action, .. }) if *action == "post-dump"
        )
    });
    if post_dump {
        return POST_DUMP_SCRIPT_EXIT;
    }
    error_kind(e).map_or(crust_engine::CRIU_FAILURE_EXIT, |k| k.exit_code())
}

/// `criu dump`'s exit code when a post-dump action script failed.
const POST_DUMP_SCRIPT_EXIT: i32 = 255;

/// The kind of the first engine error in `e`'s chain, if any.
pub fn error_kind(e: &anyhow::Error) -> Option<crust_engine::ErrorKind> {
    for cause in e.chain() {
        let kind = if let Some(d) = cause.downcast_ref::<crust_engine::DumpError>() {
            d.kind()
        } else if let Some(r) = cause.downcast_ref::<crust_engine::RestoreError>() {
            r.kind()
        } else if let Some(i) = cause.downcast_ref::<crust_engine::ImageSetError>() {
            i.kind()
        } else if let Some(e) = cause.downcast_ref::<crust_engine::Error>() {
            e.kind()
        } else {
            continue;
        };
        return Some(kind);
    }
    None
}

fn run(argv: &[String], logs_to_file: &mut bool) -> Result<i32> {
    let opts = cli::parse(argv)?;
    crust_images::image::allow_untrusted_images(opts.engine.allow_unsafe_images_dir);
    if opts.help {
        print!("{}", cli::USAGE);
        return Ok(0);
    }
    if opts.version {
        print!("{}", version_text());
        return Ok(0);
    }
    for &fd in &opts.close_fds {
        probe::close_fd(fd).with_context(|| format!("--close {fd}"))?;
    }
    let Some(command) = opts.command.clone() else {
        eprint!("{}", cli::USAGE);
        bail!("no command given");
    };

    let log_path = opts.log_file.as_ref().map(|p| {
        if p == Path::new("-") {
            p.clone()
        } else {
            opts.engine.in_work_dir(p)
        }
    });
    // A log file in a directory that does not exist: name the directory
    // (-D or -W, usually), not the file.
    if let Some(dir) = log_path
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        bail!(
            "directory {} does not exist (the log file {} goes there): create it or name another with -D/-W",
            dir.display(),
            log_path.as_deref().unwrap_or(dir).display()
        );
    }
    *logs_to_file = logger::init(opts.verbosity, log_path.as_deref(), opts.log_pid)?;
    log::info!(
        "crust {} ({command}), pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    for name in &opts.no_effect {
        log::debug!(
            "option {name} has no effect for crust (see docs/ARCHITECTURE.md, The command line)"
        );
    }
    for what in &opts.lacking {
        log::warn!("{what}");
    }
    if !opts.unsupported.is_empty() {
        bail!("crust does not support {} yet", opts.unsupported.join(", "));
    }
    check_command_options(&opts, &command)?;

    if matches!(
        command.as_str(),
        "dump" | "restore" | "pre-dump" | "check" | "page-server" | "lazy-pages" | "service"
    ) {
        check_caps(&opts)?;
    }
    match command.as_str() {
        "dump" => dump(&opts),
        "restore" => restore(&opts),
        "check" => check::run(&opts),
        "demo" => demo::run(),
        "image" => image::run(&opts.args),
        "pre-dump" => predump::run(&opts),
        "page-server" => pageserver::run(&opts),
        "lazy-pages" => lazypages::run(&engine_options(&opts)),
        "service" => rpc::service(&opts),
        "swrk" => rpc::swrk(&opts),
        "dedup" => dedup::run(&opts),
        "cpuinfo" => cpuinfo(&opts),
        // CRIU returns -1 from main for these two: exit code 255.
        "exec" => {
            log::error!(
                "the \"exec\" action is deprecated by the Compel library; crust does not have it"
            );
            Ok(255)
        }
        "show" => {
            log::error!(
                "the \"show\" action is deprecated by the CRIT utility; use `crust crit show FILE`"
            );
            Ok(255)
        }
        other => bail!("unknown command: {other} (see `crust --help`)"),
    }
}

/// `crust cpuinfo dump|check`: cpuinfo.img of this CPU written into the
/// images directory, or the one there checked against this CPU (with
/// `--cpu-cap`'s checks; all of them when it says none). Exit codes are
/// CRIU's: a failed dump 255, a failed check 1.
fn cpuinfo(opts: &Opts) -> Result<i32> {
    use crust_engine::cpuinfo;
    let dir = &opts.engine.images_dir;
    match opts.args.first().map(String::as_str) {
        Some("dump") => match cpuinfo::dump(dir) {
            Ok(()) => Ok(0),
            Err(e) => {
                log::error!("cpuinfo dump failed: {}", error_chain(&e));
                Ok(255)
            }
        },
        Some("check") => match cpuinfo::check(dir, cpuinfo::check_caps(opts.engine.cpu_cap)) {
            Ok(()) => {
                log::info!("cpuinfo.img of {} matches this CPU", dir.display());
                Ok(0)
            }
            Err(e) => {
                log::error!("cpuinfo check failed: {}", error_chain(&e));
                Ok(1)
            }
        },
        Some(other) => bail!("unknown cpuinfo sub-command: {other} (want dump or check)"),
        None => bail!("cpuinfo requires an action: dump or check"),
    }
}

/// CRIU's rule for who may run it: CAP_CHECKPOINT_RESTORE (or
/// CAP_SYS_ADMIN) always, and `--unprivileged` for a caller that is not
/// root. A caller that is not root then restores only what it could have
/// created itself (crust_engine checks the images' credentials).
pub fn check_caps(opts: &Opts) -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let me = crust_sys::process::getpid();
    let st = crust_proc::status(&crust_proc::ProcRoot::default(), me)
        .context("cannot read this process's credentials (/proc/self/status)")?;
    let has = |cap: u32| st.cap_eff & (1u64 << cap) != 0;
    if !has(CAP_CHECKPOINT_RESTORE) && !has(CAP_SYS_ADMIN) {
        let exe = std::env::current_exe().unwrap_or_else(|_| "crust".into());
        bail!(
            "crust needs the CAP_CHECKPOINT_RESTORE capability (or CAP_SYS_ADMIN): run it as root, \
             or give the binary the capability with `setcap cap_checkpoint_restore+eip {}` and \
             pass --unprivileged",
            exe.display()
        );
    }
    if st.uid[1] != 0 {
        if !opts.engine.unprivileged {
            bail!(
                "Running as non-root (uid {}) requires '--unprivileged': with it, crust dumps \
                 and restores only what your own credentials allow (see README, Safety)",
                st.uid[1]
            );
        }
        crust_sys::process::set_dumpable().context("prctl(PR_SET_DUMPABLE)")?;
    }
    Ok(())
}

/// What `--version` prints: CRIU's `Version:` line with the CRIU version
/// whose command line, images and behaviour crust implements (callers
/// parse its X.Y: LXC wants 2.0 or later), then crust's own version on a
/// line of its own, which CRIU's callers skip (CRIU prints a `GitID:`
/// line there, when it has one).
pub fn version_text() -> String {
    format!(
        "Version: {CRIU_VERSION}\ncrust: {}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The CRIU release crust is a drop-in replacement for.
pub const CRIU_VERSION: &str = "4.2";

/// The checks CRIU makes of the command line once it knows the command:
/// words after it (`excessive parameter`), options that belong to another
/// command, `--unprivileged`.
fn check_command_options(opts: &Opts, command: &str) -> Result<()> {
    let allowed = match command {
        "image" => usize::MAX,
        "cpuinfo" | "swrk" => 1,
        _ => 0,
    };
    if opts.args.len() > allowed {
        bail!(
            "excessive parameter{} for command {command}: {}",
            if opts.args.len() > 1 { "s" } else { "" },
            opts.args.join(" ")
        );
    }
    if opts.mntns_compat_mode && command != "restore" {
        bail!("Option --mntns-compat-mode is only valid on restore");
    }
    if !opts.engine.inherit_fds.is_empty() && command != "restore" {
        bail!("--inherit-fd is restore-only option");
    }
    if opts.engine.compress.is_some() {
        if command != "dump" && command != "pre-dump" {
            bail!("--compress is a dump and pre-dump option (restore reads compressed sets as they are)");
        }
        if opts.engine.page_server {
            bail!(
                "--compress with --page-server is not supported: the page server writes CRIU's \
                 plain pages files; dump without --compress, or into local images"
            );
        }
    }
    if opts.engine.lazy_pages && command == "pre-dump" {
        bail!("pre-dump --lazy-pages is not supported: pre-dump, then dump --lazy-pages");
    }
    // Who may run it (CAP_CHECKPOINT_RESTORE, --unprivileged): check_caps.
    Ok(())
}

/// The engine's options with the action scripts of `--action-script`
/// installed as its hooks.
fn engine_options(opts: &Opts) -> crust_engine::Options {
    let mut o = opts.engine.clone();
    if !opts.action_scripts.is_empty() {
        let s = scripts::Scripts::new(&opts.action_scripts, &o.images_dir, &o.work_dir());
        o.hooks = crust_engine::Hooks::new(std::sync::Arc::new(s));
    }
    o
}

fn dump(opts: &Opts) -> Result<i32> {
    let o = &engine_options(opts);
    if o.pid == 0 {
        bail!("dump needs the tree's root: -t/--tree PID");
    }
    crust_engine::check_images_dir(&o.images_dir)?;
    if let Some(mode) = &o.manage_cgroups {
        log::debug!("--manage-cgroups={mode}: cgroups are not dumped yet");
    }
    log::debug!("dump options: {o:?}");
    // SIGINT, SIGTERM, SIGHUP, SIGQUIT: the dump rolls back at its next
    // safe point and fails, instead of crust dying with tasks under its
    // control.
    crust_sys::process::catch_stop_signals().context("cannot catch stop signals")?;
    // The dump runs in a worker of its own session: killing this process
    // (even with SIGKILL) or its process group makes the worker roll back
    // instead of leaving tasks under the control of a dead tracer.
    if std::env::var_os("CRUST_NO_WORKER").is_none() {
        log::logger().flush();
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match crust_sys::process::split_worker().context("cannot start the dump's worker")? {
            crust_sys::process::Side::FrontEnd { worker } => {
                return crust_sys::process::wait_worker(worker)
                    .context("cannot wait for the dump's worker");
            }
            crust_sys::process::Side::Worker => {
                log::debug!("dump worker {}", std::process::id());
            }
        }
    }
    let start = Instant::now();
    crust_engine::progress::start("dump");
    let stats = crust_engine::dump(o);
    crust_engine::progress::finish();
    let stats = stats?;
    if o.auto_dedup {
        dedup::after_dump(&o.images_dir);
    }
    log::info!(
        "dumped tree {} in {} us",
        o.pid,
        start.elapsed().as_micros()
    );
    if o.display_stats {
        print_dump_stats(&stats);
    }
    Ok(0)
}

/// `--display-stats` after a dump, as CRIU prints it.
pub fn print_dump_stats(s: &crust_engine::DumpStats) {
    println!("Displaying dump stats:");
    println!("Freezing time: {} us", s.freezing_time_us);
    println!("Frozen time: {} us", s.frozen_time_us);
    println!("Memory dump time: {} us", s.memdump_time_us);
    println!("Memory write time: {} us", s.memwrite_time_us);
    println!("IRMAP resolve time: 0 us");
    let count = |what: &str, n: u64| println!("{what}: {n} ({n:#x})");
    count("Memory pages scanned", s.pages_scanned);
    count("Memory pages skipped from parent", s.pages_skipped_parent);
    count("Memory pages written", s.pages_written);
    count("Lazy memory pages", 0);
    print_stage_times();
}

/// `--display-stats`: the time of each stage of the dump or restore, after
/// CRIU's fields.
pub fn print_stage_times() {
    for (name, us) in crust_engine::progress::stage_times() {
        println!("Stage {name}: {us} us");
    }
}

/// Write `pid` into `path` like CRIU (mode 0600, no newline), complete
/// under a temporary name first (`crust_sys::private`): never through a
/// symlink or another user's file, and a reader never sees half a pid.
/// (`restore` refuses an existing pidfile before it starts, as CRIU does.)
pub fn write_pidfile(path: &Path, pid: i32) -> Result<()> {
    let (mut f, name) = crust_sys::private::create_private(path, 0)
        .with_context(|| format!("pidfile: can't create {}", path.display()))?;
    write!(f, "{pid}").with_context(|| format!("pidfile: can't write {}", path.display()))?;
    name.commit()
        .with_context(|| format!("pidfile: can't create {}", path.display()))?;
    Ok(())
}

fn restore(opts: &Opts) -> Result<i32> {
    let o = &engine_options(opts);
    crust_engine::check_images_dir(&o.images_dir)?;
    if o.restore_sibling && !o.detached {
        bail!("--restore-sibling only makes sense with --restore-detached");
    }
    let pidfile = o.pidfile.as_ref().map(|p| o.in_work_dir(p));
    if let Some(p) = &pidfile {
        if p.symlink_metadata().is_ok() {
            bail!("pidfile: {} already exists", p.display());
        }
    }
    log::debug!("restore options: {o:?}");
    crust_engine::progress::start("restore");
    let out = crust_engine::restore(o);
    crust_engine::progress::finish();
    let out = out?;
    log::info!(
        "restored root task {} in {} us",
        out.root_pid,
        out.restore_time_us
    );
    if let Some(p) = &pidfile {
        if let Err(e) = write_pidfile(p, out.root_pid) {
            // Whoever asked for the pidfile can't find the tree: don't leave
            // it running unseen.
            let _ = probe::kill(out.root_pid, libc::SIGKILL);
            if !o.restore_sibling {
                let _ = probe::wait_exit(out.waiter.unwrap_or(out.root_pid));
            }
            return Err(e);
        }
    }
    if o.display_stats {
        // As CRIU prints them (see the engine's stats-restore).
        println!("Displaying restore stats:");
        println!("Pages compared: 0 (0x0)");
        println!("Pages skipped COW: 0 (0x0)");
        let n = out.pages_restored;
        println!("Pages restored: {n} ({n:#x})");
        println!("Restore time: {} us", out.restore_time_us);
        println!("Forking time: 0 us");
        print_stage_times();
    }
    if o.detached {
        return Ok(0);
    }
    let _ = std::io::stdout().flush();
    // The root, or the crust process whose child it is (it ends the same
    // way) when one stays to hand over queued connections.
    let status = probe::wait_exit(out.waiter.unwrap_or(out.root_pid))
        .with_context(|| format!("waiting for the restored root task {}", out.root_pid))?;
    log::info!("restored root task {} ended: {status:?}", out.root_pid);
    // CRIU waits for the tree and exits 0 however its root ended; with
    // crust's own --root-exit-code, the root's code (128 + N if signal N
    // killed it).
    Ok(if opts.root_exit_code {
        status.code()
    } else {
        0
    })
}
