//! The command line, CRIU-compatible: `crust <command> [options]`.
//!
//! Words are split as CRIU's getopt_long splits them (see [`getopt`]);
//! configuration files are read first, as CRIU reads them
//! (`/etc/criu/default.conf`, `~/.criu/default.conf`, `$CRIU_CONFIG_FILE`,
//! `--config FILE`; a file that does not exist is skipped). Options are
//! applied in order, so later ones win.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use crust_engine::Options;

use crate::getopt::{self, atoi, Arg};

/// What crust does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Implemented (or validated and passed on).
    Used,
    /// Accepted and has no effect for crust, for a reason docs/ARCHITECTURE.md, "The command line"
    /// gives (it acts on something crust does not do or refuses anyway).
    NoEffect,
    /// Would change the semantics of the operation; crust can't do it yet.
    Unsupported,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    /// CRIU's BOOL_OPT: `--no-NAME` exists too.
    negatable: bool,
    kind: Kind,
    /// crust's own option (CRIU does not have it).
    extension: bool,
}

const fn spec(long: &'static str, short: Option<char>, arg: Arg, kind: Kind) -> Spec {
    Spec {
        long,
        short,
        arg,
        negatable: false,
        kind,
        extension: false,
    }
}

const fn flag(long: &'static str, short: Option<char>, kind: Kind) -> Spec {
    Spec {
        long,
        short,
        arg: Arg::No,
        negatable: true,
        kind,
        extension: false,
    }
}

/// crust's own boolean option.
const fn own_flag(long: &'static str) -> Spec {
    Spec {
        long,
        short: None,
        arg: Arg::No,
        negatable: true,
        kind: Used,
        extension: true,
    }
}

use Arg::{No, Optional, Required};
use Kind::{NoEffect, Unsupported, Used};

/// CRIU 4.2's options, with what crust does with each.
static SPECS: &[Spec] = &[
    spec("tree", Some('t'), Required, Used),
    spec("leave-stopped", Some('s'), No, Used),
    spec("leave-running", Some('R'), No, Used),
    flag("restore-detached", Some('d'), Used),
    flag("restore-sibling", Some('S'), Used),
    flag("daemon", None, Used),
    spec("images-dir", Some('D'), Required, Used),
    spec("work-dir", Some('W'), Required, Used),
    spec("log-file", Some('o'), Required, Used),
    spec("join-ns", Some('J'), Required, Used),
    spec("root", Some('r'), Required, Used),
    spec("ext-unix-sk", Some('x'), Optional, Used),
    spec("help", Some('h'), No, Used),
    flag("tcp-established", None, Used),
    spec("close", None, Required, Used),
    flag("log-pid", None, Used),
    spec("version", Some('V'), No, Used),
    flag("evasive-devices", None, NoEffect),
    spec("pidfile", None, Required, Used),
    spec("veth-pair", None, Required, Used),
    spec("action-script", None, Required, Used),
    flag("link-remap", None, Used),
    own_flag("allow-unsafe-images-dir"),
    own_flag("cow-parent"),
    Spec {
        long: "compress",
        short: None,
        arg: Optional,
        negatable: false,
        kind: Used,
        extension: true,
    },
    flag("shell-job", Some('j'), Used),
    flag("file-locks", Some('l'), Used),
    flag("page-server", None, Used),
    spec("address", None, Required, Used),
    spec("port", None, Required, Used),
    spec("prev-images-dir", None, Required, Used),
    spec("ms", None, No, Used),
    flag("track-mem", None, Used),
    flag("auto-dedup", None, Used),
    spec("libdir", Some('L'), Required, NoEffect),
    spec("cpu-cap", None, Optional, Used),
    flag("force-irmap", None, NoEffect),
    spec("ext-mount-map", Some('M'), Required, Used),
    spec("exec-cmd", None, No, Unsupported),
    spec("manage-cgroups", None, Optional, Used),
    spec("cgroup-root", None, Required, Used),
    spec("inherit-fd", None, Required, Used),
    spec("feature", None, Required, Used),
    spec("skip-mnt", None, Required, Used),
    spec("enable-fs", None, Required, NoEffect),
    spec("enable-external-sharing", None, No, Used),
    spec("enable-external-masters", None, No, Used),
    spec("freeze-cgroup", None, Required, Used),
    spec("ghost-limit", None, Required, Used),
    spec("irmap-scan-path", None, Required, NoEffect),
    spec("lsm-profile", None, Required, Unsupported),
    spec("timeout", None, Required, Used),
    spec("external", None, Required, Used),
    spec("empty-ns", None, Required, Used),
    spec("lazy-pages", None, No, Used),
    flag("extra", None, Used),
    flag("experimental", None, Used),
    spec("all", None, No, Used),
    spec("cgroup-props", None, Required, Used),
    spec("cgroup-props-file", None, Required, Used),
    spec("cgroup-dump-controller", None, Required, Used),
    flag("skip-in-flight", None, Used),
    flag("deprecated", None, NoEffect),
    flag("display-stats", None, Used),
    flag("weak-sysctls", None, NoEffect),
    spec("status-fd", None, Required, Used),
    flag("tcp-close", None, Used),
    spec("verbosity", Some('v'), Optional, Used),
    spec("ps-socket", None, Required, Used),
    flag("stream", None, Unsupported),
    spec("config", None, Required, Used),
    spec("no-default-config", None, No, Used),
    spec("tls-cacert", None, Required, Used),
    spec("tls-cacrl", None, Required, Used),
    spec("tls-cert", None, Required, Used),
    spec("tls-key", None, Required, Used),
    flag("tls", None, Used),
    spec("tls-no-cn-verify", None, No, Used),
    spec("cgroup-yard", None, Required, Used),
    spec("pre-dump-mode", None, Required, Used),
    spec("file-validation", None, Required, Used),
    flag("skip-file-rwx-check", None, Used),
    spec("lsm-mount-context", None, Required, Unsupported),
    spec("network-lock", None, Required, Used),
    flag("mntns-compat-mode", None, Used),
    flag("unprivileged", None, Used),
    flag("ghost-fiemap", None, NoEffect),
    flag("allow-uprobes", None, NoEffect),
    // crust's own: a restore without -d exits as its root task ends.
    own_flag("root-exit-code"),
];

/// Everything the command line said: the engine's [`Options`], filled
/// directly, and what only the command line has (the command, logging,
/// help...).
#[derive(Debug, Clone)]
pub struct Opts {
    /// The command (`dump`, `restore`, ...), if any.
    pub command: Option<String>,
    /// Positional words after the command (`cpuinfo dump`, `image decode`).
    pub args: Vec<String>,
    pub verbosity: i32,
    pub log_file: Option<PathBuf>,
    pub log_pid: bool,
    /// `crust check --feature NAME`.
    pub feature: Option<String>,
    pub check_extra: bool,
    pub check_experimental: bool,
    /// `--close FD`, in the order given.
    pub close_fds: Vec<i32>,
    pub help: bool,
    pub version: bool,
    /// Options given that have no effect for crust (logged at debug).
    pub no_effect: Vec<String>,
    /// Options given that CRIU acts on and crust lacks, with what is
    /// missing (a warning each).
    pub lacking: Vec<String>,
    /// `--root-exit-code` (crust's own): a restore without -d exits as its
    /// root task ends (its code, 128 + the signal that killed it), where
    /// CRIU exits 0.
    pub root_exit_code: bool,
    /// `--unprivileged`.
    pub unprivileged: bool,
    /// `--mntns-compat-mode` (restore only, as in CRIU).
    pub mntns_compat_mode: bool,
    /// Options given that crust cannot honour yet (an error for commands).
    pub unsupported: Vec<String>,
    /// `--action-script FILE`, in the order given (see [`crate::scripts`]).
    pub action_scripts: Vec<PathBuf>,
    /// The options of a dump or a restore, as the engine takes them.
    pub engine: Options,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            command: None,
            args: Vec::new(),
            // CRIU's default: errors and warnings.
            verbosity: 2,
            log_file: None,
            log_pid: false,
            feature: None,
            check_extra: false,
            check_experimental: false,
            close_fds: Vec::new(),
            help: false,
            version: false,
            no_effect: Vec::new(),
            lacking: Vec::new(),
            root_exit_code: false,
            unprivileged: false,
            mntns_compat_mode: false,
            unsupported: Vec::new(),
            action_scripts: Vec::new(),
            engine: Options::default(),
        }
    }
}

/// One option of the command line, as found.
type Occurrence = getopt::Found<Spec>;

impl getopt::OptSpec for Spec {
    fn long(&self) -> &'static str {
        self.long
    }
    fn short(&self) -> Option<char> {
        self.short
    }
    fn arg(&self) -> Arg {
        self.arg
    }
    fn negatable(&self) -> bool {
        self.negatable
    }
    fn extension(&self) -> bool {
        self.extension
    }
}

/// CRIU's sizes (`--ghost-limit`): the number C's `atol()` reads, times
/// 1 KiB, 1 MiB or 1 GiB when the argument holds a `K`, `M` or `G`
/// anywhere (upper case only: `1k` is 1 byte, `1T` is 1 byte, as in CRIU).
pub fn parse_size(s: &str) -> u64 {
    let n = getopt::atol(s);
    let mult: i64 = if s.contains('K') {
        1 << 10
    } else if s.contains('M') {
        1 << 20
    } else if s.contains('G') {
        1 << 30
    } else {
        1
    };
    // CRIU keeps it in a size_t: a negative size wraps to a huge limit.
    n.wrapping_mul(mult) as u64
}

fn bad(spec: &Spec, v: &str, why: &str) -> anyhow::Error {
    anyhow!("invalid argument for --{}: {v:?} ({why})", spec.long)
}

fn one_of(spec: &Spec, v: &str, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(bad(
            spec,
            v,
            &format!("expected one of {}", allowed.join(", ")),
        ))
    }
}

impl Opts {
    fn apply(&mut self, o: Occurrence) -> Result<()> {
        let s = o.spec;
        let name = format!("--{}", s.long);
        match s.kind {
            NoEffect => self.no_effect.push(name),
            Unsupported if o.negated => self.unsupported.retain(|n| n != &name),
            Unsupported => {
                if !self.unsupported.contains(&name) {
                    self.unsupported.push(name);
                }
            }
            Used if s.long == "external" && external_unread(o.value.as_deref()) => {
                // A resource CRIU stores and never looks up (LXC's
                // `console:`): no effect there either.
                self.no_effect
                    .push(format!("--external {}", o.value.unwrap_or_default()));
            }
            Used => {
                if !apply_engine(&mut self.engine, &o)? {
                    self.apply_cli(&o)?;
                }
                if s.long == "ext-unix-sk" && o.value.is_some() {
                    // The old `-x INODE` form names single sockets.
                    self.unsupported.push("--ext-unix-sk=ID".into());
                }
            }
        }
        Ok(())
    }

    /// The options only the command line has: the command's own (check,
    /// logging, help) and what crust does before any command (`--close`).
    fn apply_cli(&mut self, o: &Occurrence) -> Result<()> {
        let s = o.spec;
        let on = !o.negated;
        let v = o.value.as_deref();
        match s.long {
            "log-file" => self.log_file = Some(PathBuf::from(required(o)?)),
            "action-script" => self.action_scripts.push(PathBuf::from(required(o)?)),
            "help" => self.help = true,
            // CRIU closes atoi(FD), whatever the word holds.
            "close" => self.close_fds.push(atoi(required(o)?)),
            "log-pid" => self.log_pid = on,
            "version" => self.version = true,
            "ms" => bail!("--ms is deprecated; see \"Check options\" of crust --help"),
            "feature" => {
                // As CRIU: an unknown name fails at once, whatever the command.
                let name = required(o)?;
                if !crate::check::is_feature(name) {
                    bail!("Unknown feature {name}");
                }
                self.feature = Some(name.to_string());
            }
            "extra" => self.check_extra = on,
            "experimental" => self.check_experimental = on,
            "all" => {
                self.check_extra = true;
                self.check_experimental = true;
            }
            // CRIU: `-vv...` adds one per v, `-vN` sets N (C's atoi, so
            // `-verbosity=0`, which is `-v` with `erbosity=0`, is 0).
            "verbosity" => match v {
                Some(n) if n.starts_with('v') => self.verbosity += n.len() as i32 + 1,
                Some(n) => self.verbosity = atoi(n),
                None => self.verbosity += 1,
            },
            "root-exit-code" => self.root_exit_code = on,
            "mntns-compat-mode" => self.mntns_compat_mode = on,
            "unprivileged" => {
                self.unprivileged = on;
                self.engine.unprivileged = on;
            }
            // Read before the command line is applied.
            "config" | "no-default-config" => {}
            other => bail!("internal error: option --{other} has no handler"),
        }
        Ok(())
    }
}

/// The kinds of `--external` CRIU 4.2 looks up (`KIND[...]`): each is
/// either read by crust or refused. CRIU keeps any other value and never
/// reads it.
const EXTERNAL_KINDS: &[&str] = &[
    "mnt[", "dev[", "file[", "pid[", "net[", "veth[", "macvlan[", "netdev[", "unix[", "tty[",
];

/// `--external V` names nothing CRIU ever looks up (LXC's `console:`).
fn external_unread(v: Option<&str>) -> bool {
    v.is_some_and(|v| !EXTERNAL_KINDS.iter().any(|k| v.starts_with(k)))
}

/// The argument of `o`, which must have one.
fn required(o: &Occurrence) -> Result<&str> {
    o.value
        .as_deref()
        .ok_or_else(|| anyhow!("option --{} requires an argument", o.spec.long))
}

/// Apply `o` to the engine's options; false when it is not one of them.
fn apply_engine(e: &mut Options, o: &Occurrence) -> Result<bool> {
    let s = o.spec;
    let on = !o.negated;
    match s.long {
        "tree" => {
            // CRIU: atoi(), and what is not above 0 is refused.
            let v = required(o)?;
            let pid = atoi(v);
            if pid <= 0 {
                return Err(bad(s, v, "not a pid"));
            }
            e.pid = pid;
        }
        "leave-stopped" => {
            e.leave_stopped = true;
            e.leave_running = false;
        }
        "leave-running" => {
            e.leave_running = true;
            e.leave_stopped = false;
        }
        "restore-detached" | "daemon" => e.detached = on,
        "restore-sibling" => e.restore_sibling = on,
        "images-dir" => e.images_dir = PathBuf::from(required(o)?),
        "work-dir" => e.work_dir = Some(PathBuf::from(required(o)?)),
        "pidfile" => e.pidfile = Some(PathBuf::from(required(o)?)),
        "freeze-cgroup" => e.freeze_cgroup = Some(PathBuf::from(required(o)?)),
        "ext-unix-sk" => e.ext_unix_sk = on,
        "tcp-established" => e.tcp_established = on,
        "tcp-close" => e.tcp_close = on,
        "skip-in-flight" => e.skip_in_flight = on,
        "link-remap" => e.link_remap = on,
        "allow-unsafe-images-dir" => e.allow_unsafe_images_dir = on,
        "cow-parent" => e.cow_parent = on,
        "compress" => {
            let v = o.value.as_deref();
            let c =
                crust_engine::Compress::parse(v).map_err(|why| bad(s, v.unwrap_or(""), &why))?;
            e.compress = Some(c);
        }
        "shell-job" => e.shell_job = on,
        "file-locks" => e.file_locks = on,
        "display-stats" => e.display_stats = on,
        "inherit-fd" => {
            let v = required(o)?;
            let i = crust_engine::InheritFd::parse(v).map_err(|why| bad(s, v, &why))?;
            e.inherit_fds.push(i);
        }
        "ghost-limit" => e.ghost_limit = Some(parse_size(required(o)?)),
        "cgroup-dump-controller" => e.cgroup_dump_controllers.push(required(o)?.to_string()),
        // The namespaces issue: kept as given, read by each kind's code.
        "root" => e.root = Some(PathBuf::from(required(o)?)),
        "external" => {
            // The kinds crust reads (mnt: ns::mnt; veth, macvlan, netdev,
            // net: ns::net); CRIU's others (dev, tty, unix, file...) are
            // refused rather than ignored (what CRIU never reads is taken
            // as having no effect: `external_unread`).
            let v = required(o)?;
            let kinds = ["mnt[", "veth[", "macvlan[", "netdev[", "net["];
            if !kinds.iter().any(|k| v.starts_with(k)) {
                return Err(bad(
                    s,
                    v,
                    "crust handles mnt[...], veth[...], macvlan[...], netdev[...] and net[...] external resources only so far",
                ));
            }
            e.external.push(v.to_string());
        }
        // CRIU: --veth-pair IN=OUT is --external veth[IN]:OUT.
        "veth-pair" => {
            let v = required(o)?;
            let (i, out) = v
                .split_once('=')
                .ok_or_else(|| bad(s, v, "expected IN=OUT"))?;
            e.external.push(format!("veth[{i}]:{out}"));
        }
        "join-ns" => e.join_ns.push(required(o)?.to_string()),
        "empty-ns" => e.empty_ns.push(required(o)?.to_string()),
        "ext-mount-map" => e.ext_mount_map.push(required(o)?.to_string()),
        "skip-mnt" => e.skip_mnt.push(required(o)?.to_string()),
        "enable-fs" => e.enable_fs.push(required(o)?.to_string()),
        "enable-external-sharing" => e.enable_external_sharing = on,
        "enable-external-masters" => e.enable_external_masters = on,
        "timeout" => {
            // CRIU: atoi(); 0 (or less) sets no alarm at all, so no limit.
            let secs = atoi(required(o)?);
            let secs = if secs > 0 {
                secs as u64
            } else {
                NO_TIMEOUT_SECS
            };
            e.timeout = Some(Duration::from_secs(secs));
        }
        "skip-file-rwx-check" => e.skip_file_rwx_check = on,
        // CRIU's parsing: each occurrence changes what the earlier ones
        // (or the default, FPU|INS) made; an argument only glued.
        "cpu-cap" => {
            e.cpu_cap = crust_engine::cpuinfo::parse_cap(e.cpu_cap, o.value.as_deref())
                .map_err(|why| bad(s, o.value.as_deref().unwrap_or(""), &why))?;
        }
        "file-validation" => {
            e.file_validation = Some(one_of(s, required(o)?, &["filesize", "buildid"])?);
        }
        "network-lock" => {
            let v = required(o)?;
            let m = one_of(s, v, &["iptables", "nftables", "skip", "none"])?;
            // `none` is CRIU's synonym of `skip`.
            e.set_network_lock(m.parse().map_err(|why: String| bad(s, v, &why))?);
        }
        _ => return apply_engine_checked(e, o),
    }
    Ok(true)
}

/// A `--timeout` of 0: no limit, as CRIU sets no alarm (about 136 years).
const NO_TIMEOUT_SECS: u64 = u32::MAX as u64;

/// The engine's options that crust validates and keeps without acting on
/// (page server, pre-dump: commands crust refuses); false when `o` is not
/// one of them.
fn apply_engine_checked(e: &mut Options, o: &Occurrence) -> Result<bool> {
    let s = o.spec;
    match s.long {
        "manage-cgroups" => {
            let m = o.value.as_deref().unwrap_or("soft");
            let modes = ["none", "props", "soft", "full", "strict", "ignore"];
            e.manage_cgroups = Some(one_of(s, m, &modes)?);
        }
        // CRIU: [CONTROLLER:]PATH, split at the first ':'.
        "cgroup-root" => {
            let v = required(o)?;
            e.cgroup_roots.push(match v.split_once(':') {
                Some((c, p)) => (Some(c.to_string()), p.to_string()),
                None => (None, v.to_string()),
            });
        }
        "cgroup-yard" => e.cgroup_yard = Some(PathBuf::from(required(o)?)),
        "cgroup-props" => e.cgroup_props = Some(required(o)?.to_string()),
        "cgroup-props-file" => e.cgroup_props_file = Some(PathBuf::from(required(o)?)),
        "address" => e.address = Some(required(o)?.to_string()),
        "port" => {
            // CRIU: atoi(), 0 refused.
            let v = required(o)?;
            let p = atoi(v);
            if p == 0 {
                return Err(bad(s, v, "port 0"));
            }
            e.port = Some(p as u16);
        }
        "status-fd" => {
            // CRIU: sscanf("%d"): a number must start the word.
            let v = required(o)?;
            let t = v.trim_start();
            let t = t.strip_prefix(['-', '+']).unwrap_or(t);
            if !t.starts_with(|c: char| c.is_ascii_digit()) {
                bail!("Unable to parse a value of --status-fd: {v:?}");
            }
            e.status_fd = Some(atoi(v));
        }
        "track-mem" => e.track_mem = !o.negated,
        "prev-images-dir" => e.prev_images_dir = Some(PathBuf::from(required(o)?)),
        "page-server" => e.page_server = !o.negated,
        "lazy-pages" => e.lazy_pages = true,
        "auto-dedup" => e.auto_dedup = !o.negated,
        "ps-socket" => e.ps_socket = Some(atoi(required(o)?)),
        "tls" => e.tls.enabled = !o.negated,
        "tls-cacert" => e.tls.cacert = Some(PathBuf::from(required(o)?)),
        "tls-cacrl" => e.tls.cacrl = Some(PathBuf::from(required(o)?)),
        "tls-cert" => e.tls.cert = Some(PathBuf::from(required(o)?)),
        "tls-key" => e.tls.key = Some(PathBuf::from(required(o)?)),
        "tls-no-cn-verify" => e.tls.no_cn_verify = true,
        "pre-dump-mode" => {
            e.pre_dump_mode = Some(one_of(s, required(o)?, &["splice", "read"])?);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Split a configuration file into command-line words: one option per line
/// without its `--`, an optional argument (double quotes allowed, `\"`
/// escapes a quote), `#` comments.
pub fn config_words(text: &str, origin: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '\\' if chars.peek() == Some(&'"') => {
                        cur.push('"');
                        chars.next();
                    }
                    '"' => quoted = false,
                    _ => cur.push(c),
                }
                continue;
            }
            match c {
                '#' => break,
                '"' => {
                    quoted = true;
                    in_word = true;
                }
                c if c.is_whitespace() => {
                    if in_word {
                        parts.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                _ => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if quoted {
            bail!("{origin}:{}: unterminated quote", n + 1);
        }
        if in_word {
            parts.push(cur);
        }
        match parts.len() {
            0 => {}
            // Two words, as CRIU makes them: `verbosity 4` is `--verbosity`
            // and `4`, which getopt does not take as the optional argument.
            1 => words.push(format!("--{}", parts[0])),
            2 => words.extend([format!("--{}", parts[0]), parts[1].clone()]),
            _ => bail!(
                "{origin}:{}: expected `option [argument]`, got {} words",
                n + 1,
                parts.len()
            ),
        }
    }
    Ok(words)
}

/// What CRIU reads of the command line before getopt does: `-h`/`--help`
/// anywhere (help wins over any error), `--no-default-config`, and the
/// file of `--config FILE` or `--config=FILE` (which also turns the
/// default files off). Only these exact words count.
#[derive(Debug, Default, PartialEq)]
struct PreParse {
    help: bool,
    no_default: bool,
    config: Option<PathBuf>,
}

fn pre_parse(argv: &[String]) -> PreParse {
    let mut p = PreParse::default();
    for (i, a) in argv.iter().enumerate() {
        if a == "image" {
            // crust's own `image` tool reads the words after it itself.
            break;
        }
        if a == "--help" || a == "-h" {
            p.help = true;
            break;
        } else if a == "--no-default-config" {
            p.no_default = true;
        } else if a == "--config" {
            p.config = argv.get(i + 1).map(PathBuf::from);
            p.no_default = true;
        } else if let Some(at) = a.find("--config=") {
            p.config = Some(PathBuf::from(&a[at + "--config=".len()..]));
            p.no_default = true;
        }
    }
    p
}

/// The configuration files CRIU would read, in its order: the global and
/// the user's default files (unless turned off), `$CRIU_CONFIG_FILE`, then
/// `--config`'s. Any of them may be missing: CRIU skips a file it cannot
/// open, and so does crust.
fn config_files(pre: &PreParse) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if !pre.no_default {
        files.push(PathBuf::from("/etc/criu/default.conf"));
        if let Some(home) = std::env::var_os("HOME") {
            files.push(PathBuf::from(home).join(".criu/default.conf"));
        }
    }
    if let Some(f) = std::env::var_os("CRIU_CONFIG_FILE") {
        files.push(PathBuf::from(f));
    }
    files.extend(pre.config.clone());
    files
}

impl Opts {
    /// Apply what `words` hold, in order; true when `-V` or `-h` ends the
    /// parsing there (getopt's caller acts on them at once).
    fn apply_words(&mut self, words: &[String], command_line: bool) -> Result<bool> {
        let sc = getopt::scan(SPECS, words, command_line);
        for o in sc.found {
            self.apply(o)?;
            if self.version || self.help {
                return Ok(true);
            }
        }
        if let Some(e) = sc.error {
            return Err(e);
        }
        if command_line && !sc.words.is_empty() {
            let mut w = sc.words;
            self.command = Some(w.remove(0));
            self.args = w;
        }
        Ok(false)
    }
}

impl Opts {
    /// Apply the option `--LONG` (its exact name in CRIU's table) with
    /// `value`, `negated` for `--no-LONG`, as the command line applies it:
    /// the RPC service fills the same options this way.
    pub fn apply_named(&mut self, long: &str, value: Option<String>, negated: bool) -> Result<()> {
        let spec = SPECS
            .iter()
            .find(|s| s.long == long)
            .ok_or_else(|| anyhow!("internal error: no option --{long}"))?;
        self.apply(Occurrence {
            spec,
            negated,
            value,
        })
    }

    /// Apply the configuration file `path` over what is set (CRIU's RPC
    /// `config_file`); a file that cannot be read is skipped, as CRIU
    /// skips it.
    pub fn apply_config_file(&mut self, path: &std::path::Path) -> Result<()> {
        let Ok(bytes) = std::fs::read(path) else {
            log::debug!("configuration file {} not read", path.display());
            return Ok(());
        };
        let text = String::from_utf8_lossy(&bytes);
        let words = config_words(&text, &path.display().to_string())?;
        self.apply_words(&words, false)
            .map_err(|e| e.context(format!("in configuration file {}", path.display())))?;
        Ok(())
    }
}

/// Parse `argv` (without the program name), configuration files first.
/// Words that are not options in a configuration file are ignored, as CRIU
/// ignores them.
pub fn parse(argv: &[String]) -> Result<Opts> {
    let mut opts = Opts::default();
    let pre = pre_parse(argv);
    if pre.help {
        opts.help = true;
        return Ok(opts);
    }
    for f in config_files(&pre) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let words = config_words(&text, &f.display().to_string())?;
        let done = opts
            .apply_words(&words, false)
            .map_err(|e| e.context(format!("in configuration file {}", f.display())))?;
        if done {
            return Ok(opts);
        }
    }
    opts.apply_words(argv, true)?;
    Ok(opts)
}

pub const USAGE: &str = "\
Usage:
  crust dump|pre-dump -t PID [<options>]
  crust restore [<options>]
  crust check [--feature FEAT | --extra | --experimental | --all]
  crust page-server
  crust service [<options>]
  crust swrk FD
  crust lazy-pages -D DIR [<options>]
  crust dedup -D DIR
  crust cpuinfo dump|check [-D DIR] [--cpu-cap[=CAPS]]
  crust coredump [-i DIR] [-o DIR] [-p PID]
  crust demo
  crust image decode|encode|show -i FILE [--pretty] [-o FILE]
  crust image x DIR ps|fds|mems|rss
  crust image verify DIR [--tcp-close] [--shell-job]
  crust image diff DIR1 DIR2 [--json]
  crust crit decode|encode|info|show|x ...   (crit 4.2's command line; also as `crit`)

Commands:
  dump           checkpoint a process tree identified by PID
  pre-dump       pre-dump a task
  restore        restore a process tree
  check          check that the kernel has what crust needs
  page-server    launch a page server (not supported yet)
  service        launch the RPC service (CRIU's protocol; --address, --daemon)
  swrk           serve CRIU's RPC on the socket FD (runc, go-criu, pycriu)
  dedup          punch out of the parent image sets the pages DIR supersedes
  lazy-pages     launch the lazy-pages daemon
  cpuinfo        write this CPU's cpuinfo.img (dump), or check one (check)
  coredump       an ELF core file core.PID per process of an image set, for
                 gdb (CRIU's coredump tool; `crust coredump -h`)
  demo           show a dump and a restore of a small counting program
  image          image tools (decode, encode, show: crit's)
  crit           CRIU's crit, built in (`crust crit --help`)

Dump/restore options:
  -t|--tree PID          checkpoint the tree rooted at PID
  -R|--leave-running     leave the tasks running after dump (a snapshot: pages
                         copied before the freeze, those written since stored
                         at it; CRUST_PRECOPY=0 protects them while frozen)
  -s|--leave-stopped     leave the tasks stopped after dump or restore
  -j|--shell-job         the tree is a shell job (inherits session/pgid)
  -d|--restore-detached  exit once the tree is restored
  -S|--restore-sibling   restore the root as our sibling (needs -d)
  --pidfile FILE         write the restored root's pid to FILE
  --timeout SEC          give up seizing/freezing after SEC seconds
  --freeze-cgroup DIR    freeze the tree through this freezer cgroup (v1/v2)
  --tcp-established      dump/restore established TCP connections
  -x|--ext-unix-sk       allow external unix sockets
  -l|--file-locks        dump/restore file locks
  --link-remap           link unlinked files back if possible
  --ghost-limit SIZE     largest deleted file kept in images (K/M/G)
  --allow-unsafe-images-dir
                         dump into a directory that is not the caller's or
                         that others can write (files are still never
                         written through a symlink or another's file)
  --cow-parent           dump: store pages a child still shares with its
                         parent once (smaller images that CRIU cannot
                         restore)
  --compress[=lz4|zstd[:LEVEL]]
                         dump, pre-dump: write pages compressed (lz4 by
                         default; zstd level 1-19, 1 by default) into
                         crust-zpages-N.img: crust restores such a set,
                         CRIU cannot (crust's own)
  --inherit-fd fd[N]:KEY restore: our fd N replaces the file KEY
                         (pipe:[INO] or a file's path); repeatable
  --display-stats        print statistics at the end
  --skip-file-rwx-check  restore: r/w/x bits of files may have changed
  --file-validation M    filesize or buildid (default): how files are checked
  --root-exit-code       restore without -d: exit as the root task ends
                         (crust's own; CRIU exits 0)
  --cpu-cap[=CAPS]       dump: write cpuinfo.img; restore: refuse a set whose
                         CPU had what this one lacks (CAPS: fpu, ins, cpu,
                         all, none, ^ to remove; no CAPS: all)
  --network-lock M, --skip-in-flight, and CRIU's other options: see
                         docs/ARCHITECTURE.md (section: The command line)

Check options:
  --feature NAME         check one feature (`--feature list` lists them)
  --extra, --experimental, --all
                         also check optional features

Common options:
  -D|--images-dir DIR    images directory (default .)
  -W|--work-dir DIR      directory for logs and pidfiles (default: -D)
  -o|--log-file FILE     log to FILE (relative to the work directory)
  --log-pid              prefix every log line with the pid
  -v[v...], -vN, --verbosity[=N]
                         0 silent, 1 errors, 2 +warnings (default),
                         3 +info and timestamps, 4 +debug, 5 +trace
  --config FILE, --no-default-config
                         configuration files as in CRIU
  -V|--version           print the version
  -h|--help              print this help
";

#[cfg(test)]
mod tests {
    use super::*;
    use crust_engine::netlock::Method;

    fn p(args: &[&str]) -> Result<Opts> {
        let mut v: Vec<String> = vec!["--no-default-config".into()];
        v.extend(args.iter().map(|s| s.to_string()));
        parse(&v)
    }

    #[test]
    fn dump_line_from_zdtm() {
        let o = p(&[
            "dump",
            "-o",
            "dump.log",
            "-D",
            "/tmp/img",
            "-v4",
            "-t",
            "1234",
            "--pre-dump-mode",
            "splice",
            "--timeout",
            "10",
            "--track-mem",
        ])
        .unwrap();
        assert_eq!(o.command.as_deref(), Some("dump"));
        assert_eq!(o.engine.pid, 1234);
        assert_eq!(o.verbosity, 4);
        assert_eq!(o.engine.timeout, Some(Duration::from_secs(10)));
        assert_eq!(o.engine.pre_dump_mode.as_deref(), Some("splice"));
        assert_eq!(o.engine.images_dir, PathBuf::from("/tmp/img"));
        assert_eq!(
            o.engine.in_work_dir(o.log_file.as_ref().unwrap()),
            PathBuf::from("/tmp/img/dump.log")
        );
        assert!(o.unsupported.is_empty(), "{:?}", o.unsupported);
        assert!(o.engine.track_mem);
    }

    /// A dump and a restore command line, with CRIU's quirks (clusters,
    /// an argument glued to its option, prefixes, `--no-`, later options
    /// winning, `-vvv`, `none` for `skip`), fill the engine's Options.
    #[test]
    fn command_lines_fill_engine_options() {
        let o = p(&[
            "dump",
            "-t4242",
            "-Rs",
            "-D/img",
            "--tcp-est",
            "--tcp-close",
            "--no-tcp-close",
            "--ghost-limit=2K",
            "--timeout",
            "7",
            "--network-lock",
            "none",
            "-jlx",
            "--link-remap",
            "--skip-in-flight",
            "-vvv",
        ])
        .unwrap();
        let e = &o.engine;
        assert_eq!(o.command.as_deref(), Some("dump"));
        assert_eq!(o.verbosity, 5);
        assert_eq!(e.pid, 4242);
        assert!(e.leave_stopped && !e.leave_running);
        assert_eq!(e.images_dir, PathBuf::from("/img"));
        assert!(e.tcp_established && !e.tcp_close && e.skip_in_flight);
        assert_eq!(e.ghost_limit, Some(2048));
        assert_eq!(e.timeout, Some(Duration::from_secs(7)));
        assert_eq!(e.network_lock, Method::Skip);
        assert!(e.ext_unix_sk && e.shell_job && e.file_locks && e.link_remap);
        assert!(!e.allow_unsafe_images_dir);
        assert!(o.unsupported.is_empty());
        let o = p(&["dump", "--allow-unsafe-images-dir"]).unwrap();
        assert!(o.engine.allow_unsafe_images_dir);
        // getopt: an optional argument glues to its option, `-xjl` is -x jl.
        let o = p(&["dump", "-xjl"]).unwrap();
        assert!(!o.engine.shell_job && o.unsupported == ["--ext-unix-sk=ID"]);
        assert!(!e.detached && e.inherit_fds.is_empty());

        let o = p(&[
            "restore",
            "--daemon",
            "-S",
            "--images-dir",
            "/img",
            "-W",
            "/w",
            "--pidfile=pf",
            "--inherit-fd",
            "fd[5]:pipe:[7]",
            "--display-stats",
            "--tcp-established",
            "--tcp-close",
        ])
        .unwrap();
        let e = &o.engine;
        assert_eq!(o.command.as_deref(), Some("restore"));
        assert!(e.detached && e.restore_sibling && e.display_stats);
        assert!(e.tcp_established && e.tcp_close);
        assert_eq!(e.pid, 0);
        assert_eq!(e.images_dir, PathBuf::from("/img"));
        assert_eq!(
            e.in_work_dir(e.pidfile.as_ref().unwrap()),
            PathBuf::from("/w/pf")
        );
        assert_eq!(e.inherit_fds.len(), 1);
        assert_eq!(
            (e.inherit_fds[0].fd, e.inherit_fds[0].key.as_str()),
            (5, "pipe:[7]")
        );
        assert_eq!(e.network_lock_arg(), None);
        // Without -D: the current directory, for images and logs alike.
        let o = p(&["restore"]).unwrap();
        assert_eq!(o.engine.images_dir, PathBuf::from("."));
        assert_eq!(o.engine.work_dir(), PathBuf::from("."));
    }

    #[test]
    fn long_forms_and_clusters() {
        let o = p(&[
            "restore",
            "--images-dir=/x",
            "-dj",
            "--pidfile",
            "pf",
            "-W",
            "/w",
            "--restore-sibling",
        ])
        .unwrap();
        assert!(o.engine.detached && o.engine.shell_job && o.engine.restore_sibling);
        assert_eq!(
            o.engine.in_work_dir(o.engine.pidfile.as_ref().unwrap()),
            PathBuf::from("/w/pf")
        );
        let o = p(&["dump", "-t42", "-Rs"]).unwrap();
        assert_eq!(o.engine.pid, 42);
        assert!(o.engine.leave_stopped && !o.engine.leave_running);
        let o = p(&["restore", "--restore-detached", "--no-restore-detached"]).unwrap();
        assert!(!o.engine.detached);
        // Unambiguous prefix, like getopt_long.
        let o = p(&["dump", "--tcp-est"]).unwrap();
        assert!(o.engine.tcp_established);
        assert!(p(&["dump", "--t"]).is_err());
    }

    #[test]
    fn verbosity_forms() {
        assert_eq!(p(&["check"]).unwrap().verbosity, 2);
        assert_eq!(p(&["check", "-v"]).unwrap().verbosity, 3);
        assert_eq!(p(&["check", "-vv"]).unwrap().verbosity, 4);
        assert_eq!(p(&["check", "-vvv"]).unwrap().verbosity, 5);
        assert_eq!(p(&["check", "-v0"]).unwrap().verbosity, 0);
        assert_eq!(p(&["check", "--verbosity=3"]).unwrap().verbosity, 3);
        assert_eq!(p(&["check", "--verbosity=vv"]).unwrap().verbosity, 5);
        assert_eq!(p(&["--verbosity", "check"]).unwrap().verbosity, 3);
        // getopt: `-verbosity=0` is -v with the argument "erbosity=0",
        // which atoi() makes 0 (what callers of CRIU rely on).
        let o = p(&["check", "-verbosity=0", "--feature", "mnt_id"]).unwrap();
        assert_eq!((o.verbosity, o.feature.as_deref()), (0, Some("mnt_id")));
        // An optional argument is never the next word: `1` is a word.
        let o = p(&["check", "--verbosity", "1"]).unwrap();
        assert_eq!((o.verbosity, o.args.clone()), (3, vec!["1".to_string()]));
        assert_eq!(p(&["check", "-v4x"]).unwrap().verbosity, 4);
    }

    /// `-V` ends the parsing where it is (CRIU prints and exits there);
    /// `-h`/`--help` as a word anywhere wins over any error.
    #[test]
    fn version_and_help_end_the_parsing() {
        let o = p(&["-V", "--bogus"]).unwrap();
        assert!(o.version);
        assert!(p(&["--bogus", "-V"]).is_err());
        assert!(p(&["check", "--bogus", "-h"]).unwrap().help);
        assert!(p(&["check", "-dh"]).unwrap().help);
        assert!(p(&["check", "--help=1"]).is_err());
    }

    /// CRIU reads the configuration files it can open and skips the rest;
    /// `--config FILE` turns the default files off.
    #[test]
    fn config_files_as_criu_reads_them() {
        let pre = pre_parse(&["check".into(), "--config".into(), "/x/y.conf".into()]);
        assert_eq!(
            pre,
            PreParse {
                help: false,
                no_default: true,
                config: Some(PathBuf::from("/x/y.conf"))
            }
        );
        let pre = pre_parse(&["--config=/a".into(), "--no-default-config".into()]);
        assert_eq!(pre.config, Some(PathBuf::from("/a")));
        // An abbreviation is an option getopt takes, but no file is read.
        let pre = pre_parse(&["image".into(), "decode".into(), "-h".into()]);
        assert!(!pre.help);
        let pre = pre_parse(&["--conf=/a".into()]);
        assert_eq!(pre.config, None);
        assert!(!pre.no_default);
        let o = parse(&[
            "check".into(),
            "--config".into(),
            "/nonexistent/c.conf".into(),
        ])
        .unwrap();
        assert_eq!(o.command.as_deref(), Some("check"));
        let dir = std::env::temp_dir().join(format!("crust-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.conf");
        std::fs::write(
            &f,
            "tcp-established\nverbosity 4\nghost-limit 1M\nfoo-word\n",
        )
        .unwrap();
        let r = parse(&["dump".into(), format!("--config={}", f.display())]);
        std::fs::remove_dir_all(&dir).unwrap();
        // `foo-word` becomes --foo-word, which getopt does not know.
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("foo-word") && e.contains("c.conf"), "{e}");
    }

    /// Unknown feature names fail at once, as CRIU's parser fails them.
    #[test]
    fn feature_names_are_checked_by_the_parser() {
        assert!(p(&["check", "--feature", "timerfd"]).is_ok());
        let e = p(&["dump", "--feature", "seize"]).unwrap_err().to_string();
        assert!(e.contains("Unknown feature seize"), "{e}");
    }

    /// What has no effect, what crust lacks (a warning), what it refuses.
    #[test]
    fn options_without_effect_are_said_so() {
        let o = p(&["dump", "--evasive-devices", "--libdir=/x", "--weak-sysctls"]).unwrap();
        assert_eq!(o.no_effect.len(), 3);
        let o = p(&[
            "dump",
            "--manage-cgroups=full",
            "--cpu-cap",
            "--cgroup-yard",
            "/y",
            "--cgroup-root",
            "name=zdtmtst:/prefix",
            "--cgroup-root=/r",
        ])
        .unwrap();
        assert!(o.lacking.is_empty(), "{:?}", o.lacking);
        assert_eq!(o.engine.cpu_cap, 0xf);
        assert_eq!(o.engine.manage_cgroups.as_deref(), Some("full"));
        assert_eq!(o.engine.cgroup_yard, Some(PathBuf::from("/y")));
        assert_eq!(
            o.engine.cgroup_roots,
            vec![
                (Some("name=zdtmtst".into()), "/prefix".into()),
                (None, "/r".into())
            ]
        );
        let o = p(&["dump", "--manage-cgroups=none"]).unwrap();
        assert!(o.lacking.is_empty());
        let o = p(&[
            "dump",
            "--cgroup-props",
            "\"pids\":",
            "--cgroup-props-file=/f",
            "--cgroup-dump-controller",
            "cpu,cpuacct",
            "--cgroup-dump-controller=pids",
        ])
        .unwrap();
        assert_eq!(o.engine.cgroup_props.as_deref(), Some("\"pids\":"));
        assert_eq!(o.engine.cgroup_props_file, Some(PathBuf::from("/f")));
        assert_eq!(o.engine.cgroup_dump_controllers, ["cpu,cpuacct", "pids"]);
        assert!(o.lacking.is_empty(), "{:?}", o.lacking);
        let o = p(&["restore", "--auto-dedup", "--track-mem"]).unwrap();
        assert!(o.unsupported.is_empty(), "{:?}", o.unsupported);
        assert_eq!(
            p(&["dump", "--cpu-cap=fpu,^cpu"]).unwrap().engine.cpu_cap,
            0xd
        );
        assert_eq!(p(&["dump", "--cpu-cap=none"]).unwrap().engine.cpu_cap, 0);
        assert_eq!(p(&["dump"]).unwrap().engine.cpu_cap, 5);
        assert!(p(&["dump", "--cpu-cap=bogus"]).is_err());
        let o = p(&[
            "restore",
            "--skip-file-rwx-check",
            "--file-validation",
            "filesize",
        ])
        .unwrap();
        assert!(o.engine.skip_file_rwx_check && o.engine.validate_by_size_only());
        let o = p(&["restore", "--root-exit-code", "--allow-u"]).unwrap();
        assert!(o.root_exit_code);
        // `--allow-u` is CRIU's --allow-uprobes, whatever crust adds.
        assert_eq!(o.no_effect, vec!["--allow-uprobes"]);
    }

    #[test]
    fn values_and_errors() {
        assert_eq!(
            p(&["dump", "--ghost-limit", "2M"])
                .unwrap()
                .engine
                .ghost_limit,
            Some(2 << 20)
        );
        assert_eq!(
            p(&["dump", "--ghost-limit=3K"]).unwrap().engine.ghost_limit,
            Some(3 << 10)
        );
        assert_eq!(
            p(&["dump", "--ghost-limit=1G"]).unwrap().engine.ghost_limit,
            Some(1 << 30)
        );
        // CRIU's parse_size: upper-case suffixes only, atol() for the rest.
        assert_eq!(
            p(&["dump", "--ghost-limit=1T"]).unwrap().engine.ghost_limit,
            Some(1)
        );
        assert_eq!(
            p(&["dump", "--ghost-limit=2k"]).unwrap().engine.ghost_limit,
            Some(2)
        );
        assert_eq!(p(&["dump", "-t", "12abc"]).unwrap().engine.pid, 12);
        let e = p(&["dump", "--frobnicate"]).unwrap_err().to_string();
        assert!(e.contains("--frobnicate"), "{e}");
        let e = p(&["dump", "-Q"]).unwrap_err().to_string();
        assert!(e.contains("'Q'"), "{e}");
        assert!(p(&["dump", "-t"]).is_err());
        assert!(p(&["dump", "-t", "abc"]).is_err());
        assert!(p(&["dump", "--pre-dump-mode=write"]).is_err());
        assert_eq!(
            p(&["restore", "--manage-cgroups"])
                .unwrap()
                .engine
                .manage_cgroups
                .as_deref(),
            Some("soft")
        );
        // getopt: `full` is a word of its own, not the optional argument.
        let o = p(&["restore", "--manage-cgroups", "full"]).unwrap();
        assert_eq!(o.engine.manage_cgroups.as_deref(), Some("soft"));
        assert_eq!(o.args, vec!["full"]);
        assert!(p(&["restore", "--manage-cgroups=bogus"]).is_err());
        let o = p(&["restore", "--network-lock", "skip"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), Some(Method::Skip));
        let o = p(&["dump", "--network-lock=none"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), Some(Method::Skip));
        let o = p(&["dump"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), None);
        assert_eq!(o.engine.network_lock, Method::Iptables);
        let o = p(&[
            "restore",
            "--external",
            "veth[a]:b",
            "--veth-pair",
            "c=d@br",
        ])
        .unwrap();
        assert!(o.unsupported.is_empty());
        assert_eq!(o.engine.external, vec!["veth[a]:b", "veth[c]:d@br"]);
        // LXC's restore: `console:` is nothing CRIU reads; a kind CRIU
        // reads and crust does not stays refused.
        let o = p(&[
            "restore",
            "--external",
            "console:",
            "--ext-mount-map",
            "console:",
        ])
        .unwrap();
        assert!(o.engine.external.is_empty());
        assert_eq!(o.no_effect, vec!["--external console:"]);
        assert_eq!(o.engine.ext_mount_map, vec!["console:"]);
        assert!(p(&["restore", "--external", "tty[88:1]"]).is_err());
        let o = p(&[
            "restore",
            "--inherit-fd",
            "fd[3]:pipe:[12]",
            "--inherit-fd=fd[7]:tmp/log",
        ])
        .unwrap();
        let got: Vec<(i32, &str)> = o
            .engine
            .inherit_fds
            .iter()
            .map(|i| (i.fd, i.key.as_str()))
            .collect();
        assert_eq!(got, vec![(3, "pipe:[12]"), (7, "tmp/log")]);
        for bad in ["3", "fd[x]:y", "fd[3]:", "fd[3]pipe"] {
            let e = p(&["restore", "--inherit-fd", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--inherit-fd"), "{e}");
        }
    }

    #[test]
    fn image_subcommand_keeps_its_options() {
        let o = p(&["-v4", "image", "decode", "-i", "core-1.img", "--pretty"]).unwrap();
        assert_eq!(o.command.as_deref(), Some("image"));
        assert_eq!(o.args, vec!["decode", "-i", "core-1.img", "--pretty"]);
        assert_eq!(o.verbosity, 4);
    }

    #[test]
    fn config_file_syntax() {
        let w = config_words(
            "# comment\ntcp-established\nwork-dir \"/a b/\\\"c\\\"\"  # trailing\n\n  ghost-limit 1M\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            w,
            vec![
                "--tcp-established",
                "--work-dir",
                "/a b/\"c\"",
                "--ghost-limit",
                "1M"
            ]
        );
        assert!(config_words("a b c\n", "t").is_err());
        assert!(config_words("a \"b\n", "t").is_err());
    }

    #[test]
    fn every_used_option_has_a_handler() {
        for s in SPECS.iter().filter(|s| s.kind == Used) {
            let mut o = Opts::default();
            let value = match (s.long, s.arg) {
                ("tree" | "close" | "port" | "status-fd" | "timeout" | "verbosity", _) => {
                    Some("3".to_string())
                }
                ("ghost-limit", _) => Some("1M".into()),
                ("feature", _) => Some("mnt_id".into()),
                ("inherit-fd", _) => Some("fd[3]:pipe:[1]".into()),
                ("pre-dump-mode", _) => Some("read".into()),
                ("file-validation", _) => Some("buildid".into()),
                ("network-lock", _) => Some("skip".into()),
                ("veth-pair", _) => Some("a=b".into()),
                ("external", _) => Some("mnt[/dev]:dev".into()),
                (_, Required) => Some("x".into()),
                _ => None,
            };
            let r = o.apply(Occurrence {
                spec: s,
                negated: false,
                value,
            });
            if s.long == "ms" {
                assert!(r.is_err());
            } else {
                r.unwrap_or_else(|e| panic!("--{}: {e}", s.long));
            }
        }
    }
}
