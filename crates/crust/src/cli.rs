//! The command line, CRIU-compatible: `crust <command> [options]`.
//!
//! A small hand-written getopt: short options (clustered, `-t PID`, `-tPID`),
//! long options (`--opt=value`, `--opt value`, unambiguous prefixes,
//! `--no-opt` for booleans), CRIU's `-v`/`-vN`/`-vvv`, configuration files
//! (`/etc/criu/default.conf`, `~/.criu/default.conf`, `$CRIU_CONFIG_FILE`,
//! `--config FILE`). Options are applied in order, so later ones win.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crust_engine::Options;

/// Whether an option takes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    /// Only as `--opt=value` / `-ovalue` (getopt's optional arguments),
    /// plus `--opt value` when `value` is one of the option's keywords.
    Optional,
}

/// What crust does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Implemented (or validated and passed on).
    Used,
    /// Accepted and ignored: does not change what crust does.
    Ignored,
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
}

const fn spec(long: &'static str, short: Option<char>, arg: Arg, kind: Kind) -> Spec {
    Spec {
        long,
        short,
        arg,
        negatable: false,
        kind,
    }
}

const fn flag(long: &'static str, short: Option<char>, kind: Kind) -> Spec {
    Spec {
        long,
        short,
        arg: Arg::No,
        negatable: true,
        kind,
    }
}

use Arg::{No, Optional, Required};
use Kind::{Ignored, Unsupported, Used};

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
    spec("join-ns", Some('J'), Required, Unsupported),
    spec("root", Some('r'), Required, Unsupported),
    spec("ext-unix-sk", Some('x'), Optional, Used),
    spec("help", Some('h'), No, Used),
    flag("tcp-established", None, Used),
    spec("close", None, Required, Used),
    flag("log-pid", None, Used),
    spec("version", Some('V'), No, Used),
    flag("evasive-devices", None, Ignored),
    spec("pidfile", None, Required, Used),
    spec("veth-pair", None, Required, Unsupported),
    spec("action-script", None, Required, Unsupported),
    flag("link-remap", None, Used),
    flag("allow-unsafe-images-dir", None, Used),
    flag("cow-parent", None, Used),
    flag("shell-job", Some('j'), Used),
    flag("file-locks", Some('l'), Used),
    flag("page-server", None, Unsupported),
    spec("address", None, Required, Used),
    spec("port", None, Required, Used),
    spec("prev-images-dir", None, Required, Unsupported),
    spec("ms", None, No, Used),
    flag("track-mem", None, Ignored),
    flag("auto-dedup", None, Ignored),
    spec("libdir", Some('L'), Required, Ignored),
    spec("cpu-cap", None, Optional, Used),
    flag("force-irmap", None, Ignored),
    spec("ext-mount-map", Some('M'), Required, Ignored),
    spec("exec-cmd", None, No, Unsupported),
    spec("manage-cgroups", None, Optional, Used),
    spec("cgroup-root", None, Required, Unsupported),
    spec("inherit-fd", None, Required, Used),
    spec("feature", None, Required, Used),
    spec("skip-mnt", None, Required, Ignored),
    spec("enable-fs", None, Required, Ignored),
    spec("enable-external-sharing", None, No, Ignored),
    spec("enable-external-masters", None, No, Ignored),
    spec("freeze-cgroup", None, Required, Unsupported),
    spec("ghost-limit", None, Required, Used),
    spec("irmap-scan-path", None, Required, Ignored),
    spec("lsm-profile", None, Required, Unsupported),
    spec("timeout", None, Required, Used),
    spec("external", None, Required, Unsupported),
    spec("empty-ns", None, Required, Unsupported),
    spec("lazy-pages", None, No, Unsupported),
    flag("extra", None, Used),
    flag("experimental", None, Used),
    spec("all", None, No, Used),
    spec("cgroup-props", None, Required, Ignored),
    spec("cgroup-props-file", None, Required, Ignored),
    spec("cgroup-dump-controller", None, Required, Ignored),
    flag("skip-in-flight", None, Used),
    flag("deprecated", None, Ignored),
    flag("display-stats", None, Used),
    flag("weak-sysctls", None, Ignored),
    spec("status-fd", None, Required, Used),
    flag("tcp-close", None, Used),
    spec("verbosity", Some('v'), Optional, Used),
    spec("ps-socket", None, Required, Unsupported),
    flag("stream", None, Unsupported),
    spec("config", None, Required, Used),
    spec("no-default-config", None, No, Used),
    spec("tls-cacert", None, Required, Unsupported),
    spec("tls-cacrl", None, Required, Unsupported),
    spec("tls-cert", None, Required, Unsupported),
    spec("tls-key", None, Required, Unsupported),
    flag("tls", None, Unsupported),
    spec("tls-no-cn-verify", None, No, Ignored),
    spec("cgroup-yard", None, Required, Ignored),
    spec("pre-dump-mode", None, Required, Used),
    spec("file-validation", None, Required, Used),
    flag("skip-file-rwx-check", None, Ignored),
    spec("lsm-mount-context", None, Required, Unsupported),
    spec("network-lock", None, Required, Used),
    flag("mntns-compat-mode", None, Ignored),
    flag("unprivileged", None, Used),
    flag("ghost-fiemap", None, Ignored),
    flag("allow-uprobes", None, Ignored),
];

/// Keywords that may follow an optional-argument option as a separate word.
fn optional_keywords(long: &str) -> &'static [&'static str] {
    match long {
        "manage-cgroups" => &["none", "props", "soft", "full", "strict", "ignore"],
        "cpu-cap" => &["none", "fpu", "ins", "cpu", "all"],
        _ => &[],
    }
}

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
    /// Options given that crust accepts and ignores (logged at debug).
    pub ignored: Vec<String>,
    /// Options given that crust cannot honour yet (an error for commands).
    pub unsupported: Vec<String>,
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
            ignored: Vec::new(),
            unsupported: Vec::new(),
            engine: Options::default(),
        }
    }
}

/// One parsed option occurrence.
struct Occurrence {
    spec: &'static Spec,
    /// `--no-NAME`.
    negated: bool,
    value: Option<String>,
    /// For `-vvv`: the number of extra `v`s.
    extra_v: usize,
}

fn find_long(name: &str) -> Result<(&'static Spec, bool)> {
    if let Some(s) = SPECS.iter().find(|s| s.long == name) {
        return Ok((s, false));
    }
    if let Some(rest) = name.strip_prefix("no-") {
        if let Some(s) = SPECS.iter().find(|s| s.long == rest && s.negatable) {
            return Ok((s, true));
        }
    }
    // getopt_long accepts an unambiguous prefix.
    let matches: Vec<&'static Spec> = SPECS.iter().filter(|s| s.long.starts_with(name)).collect();
    match matches.as_slice() {
        [one] => Ok((one, false)),
        [] => bail!("unknown option --{name}"),
        many => {
            let names: Vec<String> = many.iter().map(|s| format!("--{}", s.long)).collect();
            bail!(
                "option --{name} is ambiguous (could be {})",
                names.join(", ")
            )
        }
    }
}

/// Split `argv` into option occurrences and positional words.
fn scan(argv: &[String], stop_at_image: bool) -> Result<(Vec<Occurrence>, Vec<String>)> {
    let mut occ = Vec::new();
    let mut pos: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if stop_at_image && pos.first().map(String::as_str) == Some("image") {
            // `crust image ...` parses the rest itself.
            pos.push(a.clone());
            continue;
        }
        if a == "--" {
            pos.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            occ.push(scan_long(body, argv, &mut i)?);
        } else if a.len() > 1 && a.starts_with('-') {
            scan_short(&a[1..], argv, &mut i, &mut occ)?;
        } else {
            pos.push(a.clone());
        }
    }
    Ok((occ, pos))
}

/// One long option, `body` being the word without its `--`; its argument
/// may be the next word, `argv[*next]` (then `*next` moves past it).
fn scan_long(body: &str, argv: &[String], next: &mut usize) -> Result<Occurrence> {
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (body, None),
    };
    let (spec, negated) = find_long(name)?;
    let value = match (spec.arg, inline) {
        (No, Some(_)) => bail!("option --{} takes no argument", spec.long),
        (No, None) => None,
        (Required | Optional, Some(v)) => Some(v),
        (Required, None) => {
            let v = argv
                .get(*next)
                .ok_or_else(|| anyhow!("option --{} requires an argument", spec.long))?;
            *next += 1;
            Some(v.clone())
        }
        (Optional, None) => {
            // getopt only takes `--opt=value`; CRIU's keywords and
            // `--verbosity N` may also be the next word.
            let word = argv.get(*next).map(String::as_str);
            let takes = match word {
                Some(n) if spec.long == "verbosity" => {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                }
                Some(n) => optional_keywords(spec.long).contains(&n),
                None => false,
            };
            if takes {
                *next += 1;
            }
            word.filter(|_| takes).map(str::to_string)
        }
    };
    Ok(Occurrence {
        spec,
        negated,
        value,
        extra_v: 0,
    })
}

/// A cluster of short options, `cluster` being the word without its `-`
/// (`dj`, `t42`, `vvv`); an argument may be the rest of the cluster or the
/// next word, `argv[*next]`.
fn scan_short(
    cluster: &str,
    argv: &[String],
    next: &mut usize,
    occ: &mut Vec<Occurrence>,
) -> Result<()> {
    let chars: Vec<char> = cluster.chars().collect();
    for (j, &c) in chars.iter().enumerate() {
        let spec = SPECS
            .iter()
            .find(|s| s.short == Some(c))
            .ok_or_else(|| anyhow!("unknown option -{c}"))?;
        let rest: String = chars[j + 1..].iter().collect();
        let (value, extra_v) = match spec.arg {
            No => {
                occ.push(Occurrence {
                    spec,
                    negated: false,
                    value: None,
                    extra_v: 0,
                });
                continue;
            }
            Required if !rest.is_empty() => (Some(rest), 0),
            Required => {
                let v = argv
                    .get(*next)
                    .ok_or_else(|| anyhow!("option -{c} requires an argument"))?;
                *next += 1;
                (Some(v.clone()), 0)
            }
            // `-v`, `-v4`, `-vvv` (CRIU: each extra v adds one).
            Optional if c == 'v' && !rest.is_empty() && rest.chars().all(|x| x == 'v') => {
                (None, rest.len())
            }
            Optional if rest.is_empty() => (None, 0),
            Optional => (Some(rest), 0),
        };
        // An option with an argument ends the cluster.
        occ.push(Occurrence {
            spec,
            negated: false,
            value,
            extra_v,
        });
        break;
    }
    Ok(())
}

/// CRIU's size syntax: a number with an optional K, M or G suffix.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?} (want N, NK, NM or NG)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))
}

fn bad(spec: &Spec, v: &str, why: &str) -> anyhow::Error {
    anyhow!("invalid argument for --{}: {v:?} ({why})", spec.long)
}

fn num<T: std::str::FromStr>(spec: &Spec, v: &str) -> Result<T> {
    v.trim()
        .parse::<T>()
        .map_err(|_| bad(spec, v, "not a number"))
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
            Ignored => self.ignored.push(name),
            Unsupported if o.negated => self.unsupported.retain(|n| n != &name),
            Unsupported => {
                if !self.unsupported.contains(&name) {
                    self.unsupported.push(name);
                }
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
            "help" => self.help = true,
            "close" => self.close_fds.push(num(s, required(o)?)?),
            "log-pid" => self.log_pid = on,
            "version" => self.version = true,
            "ms" => bail!("--ms is deprecated (see `crust check --help`)"),
            "feature" => self.feature = Some(required(o)?.to_string()),
            "extra" => self.check_extra = on,
            "experimental" => self.check_experimental = on,
            "all" => {
                self.check_extra = true;
                self.check_experimental = true;
            }
            "verbosity" => {
                if let Some(n) = v {
                    self.verbosity = num(s, n)?;
                } else {
                    self.verbosity += 1 + o.extra_v as i32;
                }
            }
            // Handled before the command line is applied.
            "config" | "no-default-config" => {}
            other => bail!("internal error: option --{other} has no handler"),
        }
        Ok(())
    }
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
            let v = required(o)?;
            let pid: i32 = num(s, v)?;
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
        "ext-unix-sk" => e.ext_unix_sk = on,
        "tcp-established" => e.tcp_established = on,
        "tcp-close" => e.tcp_close = on,
        "skip-in-flight" => e.skip_in_flight = on,
        "link-remap" => e.link_remap = on,
        "allow-unsafe-images-dir" => e.allow_unsafe_images_dir = on,
        "unprivileged" => e.unprivileged = on,
        "cow-parent" => e.cow_parent = on,
        "shell-job" => e.shell_job = on,
        "file-locks" => e.file_locks = on,
        "display-stats" => e.display_stats = on,
        "inherit-fd" => {
            let v = required(o)?;
            let i = crust_engine::InheritFd::parse(v).map_err(|why| bad(s, v, &why))?;
            e.inherit_fds.push(i);
        }
        "ghost-limit" => {
            let v = required(o)?;
            e.ghost_limit = Some(parse_size(v).map_err(|err| bad(s, v, &err.to_string()))?);
        }
        "timeout" => {
            let secs: u32 = num(s, required(o)?)?;
            e.timeout = Some(Duration::from_secs(secs.into()));
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

/// The engine's options that crust validates and keeps without acting on
/// them yet (page server, cgroups, pre-dump, CPU...); false when `o` is not
/// one of them.
fn apply_engine_checked(e: &mut Options, o: &Occurrence) -> Result<bool> {
    let s = o.spec;
    let v = o.value.as_deref();
    match s.long {
        "address" => e.address = Some(required(o)?.to_string()),
        "port" => {
            let v = required(o)?;
            let p: u16 = num(s, v)?;
            if p == 0 {
                return Err(bad(s, v, "port 0"));
            }
            e.port = Some(p);
        }
        "status-fd" => e.status_fd = Some(num(s, required(o)?)?),
        "cpu-cap" => {
            let caps = v.unwrap_or("all");
            for c in caps.split(',') {
                let c = c.trim_start_matches('^');
                if !["none", "fpu", "ins", "cpu", "all"].contains(&c) {
                    return Err(bad(s, caps, "expected none, fpu, ins, cpu or all"));
                }
            }
            e.cpu_cap = Some(caps.to_string());
        }
        "manage-cgroups" => {
            let m = v.unwrap_or("soft");
            e.manage_cgroups = Some(one_of(s, m, optional_keywords("manage-cgroups"))?);
        }
        "pre-dump-mode" => {
            e.pre_dump_mode = Some(one_of(s, required(o)?, &["splice", "read"])?);
        }
        "file-validation" => {
            e.file_validation = Some(one_of(s, required(o)?, &["filesize", "buildid"])?);
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
            1 => words.push(format!("--{}", parts[0])),
            2 => words.push(format!("--{}={}", parts[0], parts[1])),
            _ => bail!(
                "{origin}:{}: expected `option [argument]`, got {} words",
                n + 1,
                parts.len()
            ),
        }
    }
    Ok(words)
}

fn config_files(argv: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let no_default = argv.iter().any(|a| a == "--no-default-config");
    if !no_default {
        files.push(PathBuf::from("/etc/criu/default.conf"));
        if let Some(home) = std::env::var_os("HOME") {
            files.push(PathBuf::from(home).join(".criu/default.conf"));
        }
    }
    let mut explicit = Vec::new();
    if let Some(f) = std::env::var_os("CRIU_CONFIG_FILE") {
        explicit.push(PathBuf::from(f));
    }
    let (occ, _) = scan(argv, true)?;
    for o in occ {
        if o.spec.long == "config" {
            explicit.push(PathBuf::from(o.value.unwrap_or_default()));
        }
    }
    // Default files are optional; the ones asked for must exist.
    files.retain(|f| f.exists());
    files.extend(explicit);
    Ok(files)
}

/// Parse `argv` (without the program name), configuration files first.
pub fn parse(argv: &[String]) -> Result<Opts> {
    let mut opts = Opts::default();
    for f in config_files(argv)? {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("reading configuration file {}", f.display()))?;
        let words = config_words(&text, &f.display().to_string())?;
        let (occ, pos) = scan(&words, false)
            .with_context(|| format!("in configuration file {}", f.display()))?;
        if !pos.is_empty() {
            bail!(
                "configuration file {}: commands are not allowed there",
                f.display()
            );
        }
        for o in occ {
            opts.apply(o)
                .with_context(|| format!("in configuration file {}", f.display()))?;
        }
    }
    let (occ, mut pos) = scan(argv, true)?;
    for o in occ {
        opts.apply(o)?;
    }
    if !pos.is_empty() {
        opts.command = Some(pos.remove(0));
        opts.args = pos;
    }
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
  crust cpuinfo dump|check
  crust demo
  crust image decode -i FILE [--pretty] [-o FILE]

Commands:
  dump           checkpoint a process tree identified by PID
  pre-dump       pre-dump a task (not supported yet)
  restore        restore a process tree
  check          check that the kernel has what crust needs
  page-server    launch a page server (not supported yet)
  service        launch the RPC service (not supported yet)
  swrk           RPC over a socket for a parent (not supported yet)
  lazy-pages     launch the lazy-pages daemon (not supported yet)
  cpuinfo        dump/check CPU features (not supported yet)
  demo           show a dump and a restore of a small counting program
  image          image tools (decode)

Dump/restore options:
  -t|--tree PID          checkpoint the tree rooted at PID
  -R|--leave-running     leave the tasks running after dump
  -s|--leave-stopped     leave the tasks stopped after dump or restore
  -j|--shell-job         the tree is a shell job (inherits session/pgid)
  -d|--restore-detached  exit once the tree is restored
  -S|--restore-sibling   restore the root as our sibling (needs -d)
  --pidfile FILE         write the restored root's pid to FILE
  --timeout SEC          give up seizing/freezing after SEC seconds
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
  --inherit-fd fd[N]:KEY restore: our fd N replaces the file KEY
                         (pipe:[INO] or a file's path); repeatable
  --display-stats        print statistics at the end
  --manage-cgroups[=M], --network-lock M, --pre-dump-mode M, --cpu-cap[=C],
  --evasive-devices, --track-mem, --auto-dedup, --skip-in-flight ...
                         accepted for CRIU compatibility

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
        assert!(o.unsupported.is_empty());
        assert_eq!(o.ignored, vec!["--track-mem".to_string()]);
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
            "--ghost-limit=2k",
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
        assert_eq!(p(&["check", "--verbosity", "1"]).unwrap().verbosity, 1);
        assert_eq!(p(&["check", "--verbosity=3"]).unwrap().verbosity, 3);
        assert_eq!(p(&["--verbosity", "check"]).unwrap().verbosity, 3);
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
            p(&["dump", "--ghost-limit=3k"]).unwrap().engine.ghost_limit,
            Some(3 << 10)
        );
        assert_eq!(
            p(&["dump", "--ghost-limit=1G"]).unwrap().engine.ghost_limit,
            Some(1 << 30)
        );
        assert!(p(&["dump", "--ghost-limit=1T"]).is_err());
        let e = p(&["dump", "--frobnicate"]).unwrap_err().to_string();
        assert!(e.contains("--frobnicate"), "{e}");
        let e = p(&["dump", "-Q"]).unwrap_err().to_string();
        assert!(e.contains("-Q"), "{e}");
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
        assert_eq!(
            p(&["restore", "--manage-cgroups", "full"])
                .unwrap()
                .engine
                .manage_cgroups
                .as_deref(),
            Some("full")
        );
        assert!(p(&["restore", "--manage-cgroups=bogus"]).is_err());
        let o = p(&["restore", "--network-lock", "skip"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), Some(Method::Skip));
        let o = p(&["dump", "--network-lock=none"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), Some(Method::Skip));
        let o = p(&["dump"]).unwrap();
        assert_eq!(o.engine.network_lock_arg(), None);
        assert_eq!(o.engine.network_lock, Method::Iptables);
        let o = p(&["restore", "--external", "mnt[]", "--inherit-fd", "fd[3]:x"]).unwrap();
        assert_eq!(o.unsupported, vec!["--external".to_string()]);
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
                "--work-dir=/a b/\"c\"",
                "--ghost-limit=1M"
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
                ("inherit-fd", _) => Some("fd[3]:pipe:[1]".into()),
                ("pre-dump-mode", _) => Some("read".into()),
                ("file-validation", _) => Some("buildid".into()),
                ("network-lock", _) => Some("skip".into()),
                (_, Required) => Some("x".into()),
                _ => None,
            };
            let r = o.apply(Occurrence {
                spec: s,
                negated: false,
                value,
                extra_v: 0,
            });
            if s.long == "ms" {
                assert!(r.is_err());
            } else {
                r.unwrap_or_else(|e| panic!("--{}: {e}", s.long));
            }
        }
    }
}
