//! Properties of cgroups as CRIU 4.2 keeps them in `cgroup.img`.
//!
//! Which files of a cgroup directory are "properties" is a table per
//! controller ([`PropsConfig`]): CRIU's built-in one, changed by
//! `--cgroup-props STRING` and `--cgroup-props-file FILE` (CRIU's very
//! small YAML subset, each controller with `strategy: merge|replace`), plus
//! the global files every v1 or v2 cgroup has. `--cgroup-dump-controller`
//! names the only controllers dumped.
//!
//! At dump, [`read_dir_props`] reads a cgroup directory's properties into
//! `CgroupPropEntry`s (value and the file's mode/uid/gid), as CRIU reads
//! them: an absent file is skipped, `tasks`/`cgroup.procs` keep only their
//! perms, a number at or past `LLONG_MAX` becomes `-1`,
//! `memory.oom_control` keeps only its `oom_kill_disable` flag.
//!
//! At restore, properties are written in two steps, as the kernel needs:
//! the "special" ones ([`is_special`]: cpuset.cpus and cpuset.mems, which a
//! v1 cpuset needs before a task may enter, devices.list, some memory
//! flags, cgroup.type) right after crust creates the directory
//! ([`restore_special`]); all others once the tasks are in
//! ([`restore_regular`]), `freezer.state` last of all (returned to the
//! caller). Values are written in the image's order, which is the table's
//! (memory.limit_in_bytes before memory.memsw.limit_in_bytes).

use crate::error::{Error, ErrorKind};
use crust_images::proto::{CgroupPerms, CgroupPropEntry};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// CRIU's built-in table, in its text form (the order within a controller
/// is the order properties are written back in).
const BUILTIN: &str = concat!(
    "\"cpu\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"cpu.shares\", ",
    "\"cpu.cfs_period_us\", \"cpu.cfs_quota_us\", \"cpu.rt_period_us\", \"cpu.rt_runtime_us\" ]\n",
    "\"memory\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"memory.limit_in_bytes\", ",
    "\"memory.memsw.limit_in_bytes\", \"memory.swappiness\", \"memory.soft_limit_in_bytes\", ",
    "\"memory.move_charge_at_immigrate\", \"memory.oom_control\", \"memory.use_hierarchy\", ",
    "\"memory.kmem.limit_in_bytes\", \"memory.kmem.tcp.limit_in_bytes\" ]\n",
    "\"cpuset\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"cpuset.cpus\", ",
    "\"cpuset.mems\", \"cpuset.memory_migrate\", \"cpuset.cpu_exclusive\", ",
    "\"cpuset.mem_exclusive\", \"cpuset.mem_hardwall\", \"cpuset.memory_spread_page\", ",
    "\"cpuset.memory_spread_slab\", \"cpuset.sched_load_balance\", ",
    "\"cpuset.sched_relax_domain_level\" ]\n",
    "\"blkio\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"blkio.weight\" ]\n",
    "\"freezer\":\n - \"strategy\": \"replace\"\n - \"properties\": [ ]\n",
    "\"perf_event\":\n - \"strategy\": \"replace\"\n - \"properties\": [ ]\n",
    "\"net_cls\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"net_cls.classid\" ]\n",
    "\"net_prio\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"net_prio.ifpriomap\" ]\n",
    "\"pids\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"pids.max\" ]\n",
    "\"devices\":\n - \"strategy\": \"replace\"\n - \"properties\": [ \"devices.list\" ]\n",
);

/// Files every cgroup v1 directory has, dumped whatever the controller.
pub const GLOBAL_V1: &[&str] = &[
    "cgroup.clone_children",
    "notify_on_release",
    "cgroup.procs",
    "tasks",
];

/// Files every cgroup v2 directory has, dumped for the unified hierarchy.
pub const GLOBAL_V2: &[&str] = &[
    "cgroup.subtree_control",
    "cgroup.max.descendants",
    "cgroup.max.depth",
    "cgroup.freeze",
    "cgroup.type",
];

/// Properties that must be written as soon as the directory exists: the
/// kernel refuses them once the cgroup has tasks or children (or, for
/// cpuset.cpus and cpuset.mems, refuses tasks until they are set).
const SPECIAL: &[&str] = &[
    "cpuset.cpus",
    "cpuset.mems",
    "devices.list",
    "memory.kmem.limit_in_bytes",
    "memory.swappiness",
    "memory.oom_control",
    "memory.use_hierarchy",
    "cgroup.type",
];

/// The freezer's state: written after everything else of the restore.
pub const FREEZER_STATE: &str = "freezer.state";

/// The most crust reads of one property file.
const MAX_VALUE: u64 = 1 << 20;

/// Errors of cgroup properties: each names the cgroup and the property.
#[derive(Debug, thiserror::Error)]
pub enum PropsError {
    #[error(
        "cannot parse the cgroup properties of {origin}, line {line}: expected {expected}; \
         the format is CRIU's: a controller per block, \
         \"CTRL\":\\n - \"strategy\": \"merge\" (or \"replace\")\\n - \"properties\": [\"NAME\", ...]"
    )]
    Syntax {
        origin: String,
        line: usize,
        expected: &'static str,
    },
    #[error("cannot read the cgroup properties file {path} (--cgroup-props-file)")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{origin} names cgroup property {name:?}, which is not a file name of a cgroup directory"
    )]
    BadName { origin: String, name: String },
    #[error(
        "{origin} has cgroup property {name:?}, which is not a file name of a cgroup directory"
    )]
    BadEntry { origin: String, name: String },
    #[error("cannot read property {property} of cgroup {cgroup}")]
    Read {
        cgroup: PathBuf,
        property: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "property {property} of cgroup {cgroup} holds {value:?}, which crust cannot keep: {why}"
    )]
    BadValue {
        cgroup: PathBuf,
        property: String,
        value: String,
        why: &'static str,
    },
    #[error("cannot open property {property} of cgroup {cgroup} to restore it (does the controller have it on this kernel?)")]
    Open {
        cgroup: PathBuf,
        property: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot give {path} owner {uid}:{gid} and mode {mode:o} as dumped")]
    Perms {
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel refused {value:?} for property {property} of cgroup {cgroup}: \
         check the value against the parent cgroup's and the machine's limits"
    )]
    Write {
        cgroup: PathBuf,
        property: String,
        value: String,
        #[source]
        source: io::Error,
    },
}

impl PropsError {
    /// The class of this error, for the exit code and the RPC `cr_errno`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PropsError::Syntax { .. } | PropsError::BadName { .. } => ErrorKind::InvalidRequest,
            PropsError::BadEntry { .. } => ErrorKind::BadImage,
            PropsError::BadValue { .. } => ErrorKind::Unsupported,
            PropsError::File { source, .. }
            | PropsError::Read { source, .. }
            | PropsError::Open { source, .. }
            | PropsError::Perms { source, .. }
            | PropsError::Write { source, .. } => ErrorKind::of_io(source),
        }
    }
}

impl PropsError {
    /// As the engine's error (`map_err(PropsError::into_error)`; no `From`:
    /// it would make `?` in closures ambiguous elsewhere).
    pub fn into_error(self) -> Error {
        Error::CgroupProps(Box::new(self))
    }
}

/// What `--cgroup-props` does to a controller's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Appended to the controller's list.
    Merge,
    /// The controller's list is this one.
    Replace,
}

/// The properties kept per controller, and the controllers dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropsConfig {
    /// (controller, its properties in restore order).
    controllers: Vec<(String, Vec<String>)>,
    /// `--cgroup-dump-controller`: empty means every controller.
    dump_controllers: Vec<String>,
}

impl Default for PropsConfig {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PropsConfig {
    /// CRIU's built-in table, no controller left out.
    pub fn builtin() -> Self {
        let mut c = PropsConfig {
            controllers: Vec::new(),
            dump_controllers: Vec::new(),
        };
        // The built-in text is crust's own constant; its parse is tested.
        if let Err(e) = c.apply(BUILTIN, "the built-in table") {
            log::error!("{e}");
        }
        c
    }

    /// The table a dump uses: the built-in one changed by `--cgroup-props`
    /// then by `--cgroup-props-file`, as CRIU applies them.
    pub fn from_options(
        props: Option<&str>,
        file: Option<&Path>,
        dump_controllers: &[String],
    ) -> Result<Self, PropsError> {
        let mut c = Self::builtin();
        if let Some(text) = props.filter(|t| !t.is_empty()) {
            c.apply(text, "--cgroup-props")?;
        }
        if let Some(path) = file {
            let raw = std::fs::read(path).map_err(|source| PropsError::File {
                path: path.to_path_buf(),
                source,
            })?;
            let text = String::from_utf8_lossy(&raw);
            c.apply(&text, &format!("--cgroup-props-file {}", path.display()))?;
        }
        c.dump_controllers = dump_controllers.to_vec();
        Ok(c)
    }

    /// The table of the dump `o` asks for.
    pub fn of_options(o: &crate::options::Options) -> Result<Self, PropsError> {
        Self::from_options(
            o.cgroup_props.as_deref(),
            o.cgroup_props_file.as_deref(),
            &o.cgroup_dump_controllers,
        )
    }

    /// Parses `text` (CRIU's format) and merges or replaces each
    /// controller's list it names.
    pub fn apply(&mut self, text: &str, origin: &str) -> Result<(), PropsError> {
        for (name, strategy, props) in parse(text, origin)? {
            let at = self.controllers.iter().position(|(n, _)| *n == name);
            match (strategy, at) {
                (Strategy::Merge, Some(i)) => {
                    if let Some((_, list)) = self.controllers.get_mut(i) {
                        list.extend(props);
                    }
                }
                (Strategy::Replace, Some(i)) => {
                    self.controllers.remove(i);
                    self.controllers.push((name, props));
                }
                (_, None) => self.controllers.push((name, props)),
            }
        }
        Ok(())
    }

    /// The properties kept for `controller` (one name, as the hierarchy's
    /// mount options give it), if the table has it.
    pub fn props_of(&self, controller: &str) -> Option<&[String]> {
        self.controllers
            .iter()
            .find(|(n, _)| n == controller)
            .map(|(_, p)| p.as_slice())
    }

    /// `--cgroup-dump-controller`: is the hierarchy named `name` (as
    /// /proc/PID/cgroup names it, "cpu,cpuacct") left out of the dump?
    pub fn should_skip_controller(&self, name: &str) -> bool {
        !self.dump_controllers.is_empty() && !self.dump_controllers.iter().any(|c| c == name)
    }

    /// The property files of a directory of the hierarchy whose controllers
    /// are `cnames` (`[""]` is the v2 unified one), in dump order: each
    /// controller's, then the global ones.
    pub fn dir_props(&self, cnames: &[String]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in cnames {
            if let Some(p) = self.props_of(c) {
                out.extend(p.iter().map(String::as_str));
            }
        }
        let v2 = cnames.first().is_some_and(|c| c.is_empty());
        out.extend(if v2 { GLOBAL_V2 } else { GLOBAL_V1 });
        out
    }
}

/// One controller's block of the text: name, strategy, properties.
type Block = (String, Strategy, Vec<String>);

/// A cursor over CRIU's property text. Like CRIU's parser, "white space"
/// is the space character only and newlines are part of the syntax.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    /// Spaces, then exactly `word`; on a mismatch only the spaces are eaten.
    fn eat(&mut self, word: &str) -> bool {
        self.skip_spaces();
        let w = word.as_bytes();
        if self.s.get(self.i..self.i + w.len()) == Some(w) {
            self.i += w.len();
            true
        } else {
            false
        }
    }
    /// A non-empty "quoted" word (spaces before it skipped if `ws`).
    fn quoted(&mut self, ws: bool) -> Option<String> {
        if ws {
            self.skip_spaces();
        }
        if self.peek() != Some(b'"') {
            return None;
        }
        let rest = self.s.get(self.i + 1..)?;
        let len = rest.iter().position(|&b| b == b'"')?;
        if len == 0 {
            return None;
        }
        let word = String::from_utf8_lossy(rest.get(..len)?).into_owned();
        self.i += len + 2;
        Some(word)
    }
    fn line(&self) -> usize {
        1 + self
            .s
            .get(..self.i)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
    }
}

/// A property or controller name usable as a file of a cgroup directory.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Parses CRIU's property text into its blocks, in order.
fn parse(text: &str, origin: &str) -> Result<Vec<Block>, PropsError> {
    let mut c = Cursor {
        s: text.as_bytes(),
        i: 0,
    };
    let err = |c: &Cursor, expected| PropsError::Syntax {
        origin: origin.to_string(),
        line: c.line(),
        expected,
    };
    let mut out = Vec::new();
    while !c.at_end() {
        let name = c
            .quoted(false)
            .ok_or_else(|| err(&c, "a controller name in quotes at the start of a line"))?;
        if !c.eat(":\n - ") {
            return Err(err(
                &c,
                "':' then a new line and ' - ' after the controller name",
            ));
        }
        if !c.eat("\"strategy\":") {
            return Err(err(&c, "\"strategy\":"));
        }
        let strategy = match c.quoted(true).as_deref() {
            Some("merge") => Strategy::Merge,
            Some("replace") => Strategy::Replace,
            _ => return Err(err(&c, "\"merge\" or \"replace\" as the strategy")),
        };
        if !c.eat("\n - ") {
            return Err(err(&c, "a new line and ' - ' after the strategy"));
        }
        if !c.eat("\"properties\":") {
            return Err(err(&c, "\"properties\":"));
        }
        if !c.eat("[") {
            return Err(err(&c, "'[' opening the property list"));
        }
        let mut props = Vec::new();
        while let Some(p) = c.quoted(true) {
            if !safe_name(&p) {
                return Err(PropsError::BadName {
                    origin: origin.to_string(),
                    name: p,
                });
            }
            props.push(p);
            if c.eat(",") {
                continue;
            }
            if c.peek() == Some(b']') {
                c.i += 1;
                break;
            }
            return Err(err(&c, "',' or ']' after a property name"));
        }
        if props.is_empty() && !c.eat("]") {
            return Err(err(&c, "']' closing the empty property list"));
        }
        if !c.eat("\n") && !c.at_end() {
            return Err(err(&c, "a new line after the property list"));
        }
        if !safe_name(&name) && !name.starts_with("name=") {
            return Err(PropsError::BadName {
                origin: origin.to_string(),
                name,
            });
        }
        out.push((name, strategy, props));
    }
    Ok(out)
}

/// The properties of one cgroup directory as read at dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirProps {
    pub props: Vec<CgroupPropEntry>,
    /// A v1 directory (it has `tasks`) or a v2 one of type "threaded":
    /// CRIU's `is_threaded` of the controller.
    pub threaded: bool,
}

/// Mode (the whole `st_mode`, as CRIU keeps it), owner and group of `path`.
pub fn perms_of(path: &Path) -> io::Result<CgroupPerms> {
    let m = std::fs::metadata(path)?;
    Ok(CgroupPerms {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        ..Default::default()
    })
}

/// Reads the properties `cfg` keeps for a directory of the hierarchy of
/// `cnames`: what CRIU's dump puts in that directory's `CgroupDirEntry`.
pub fn read_dir_props(
    dir: &Path,
    cnames: &[String],
    cfg: &PropsConfig,
) -> Result<DirProps, PropsError> {
    let mut out = DirProps::default();
    for name in cfg.dir_props(cnames) {
        let path = dir.join(name);
        let rerr = |source| PropsError::Read {
            cgroup: dir.to_path_buf(),
            property: name.to_string(),
            source,
        };
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!(
                    "cgroup {}: no {name} on this kernel, not dumped",
                    dir.display()
                );
                continue;
            }
            _ => {}
        }
        let mut f = File::open(&path).map_err(rerr)?;
        let m = f.metadata().map_err(rerr)?;
        let value = if name == "cgroup.procs" || name == "tasks" {
            String::new()
        } else {
            let mut raw = Vec::new();
            (&mut f)
                .take(MAX_VALUE)
                .read_to_end(&mut raw)
                .map_err(rerr)?;
            let value = String::from_utf8(raw).map_err(|e| PropsError::BadValue {
                cgroup: dir.to_path_buf(),
                property: name.to_string(),
                value: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                why: "it is not UTF-8 text",
            })?;
            dumped_value(dir, name, &value)?
        };
        if (name == "cgroup.type" && value == "threaded") || name == "tasks" {
            out.threaded = true;
        }
        log::info!("cgroup {}: {name} = {value:?}", dir.display());
        out.props.push(CgroupPropEntry {
            name: name.to_string(),
            value,
            perms: Some(CgroupPerms {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The value CRIU keeps for what property `name` read as `raw`: "-1" for
/// a number at or past `LLONG_MAX` ("unlimited"), one trailing new line
/// cut, and `memory.oom_control`'s `oom_kill_disable` flag alone.
fn dumped_value(dir: &Path, name: &str, raw: &str) -> Result<String, PropsError> {
    if c_strtoll(raw) == i64::MAX {
        return Ok("-1".to_string());
    }
    let v = raw.strip_suffix('\n').unwrap_or(raw);
    if name != "memory.oom_control" {
        return Ok(v.to_string());
    }
    let flag = v
        .strip_prefix("oom_kill_disable")
        .filter(|r| r.starts_with(|c: char| c.is_ascii_whitespace()))
        .and_then(|r| {
            let r = r.trim_start();
            let end = r
                .char_indices()
                .find(|&(i, ch)| !(ch.is_ascii_digit() || (i == 0 && (ch == '-' || ch == '+'))))
                .map_or(r.len(), |(i, _)| i);
            r.get(..end)?.parse::<i32>().ok()
        });
    match flag {
        Some(d) => Ok(d.to_string()),
        None => Err(PropsError::BadValue {
            cgroup: dir.to_path_buf(),
            property: name.to_string(),
            value: v.to_string(),
            why: "it does not start with \"oom_kill_disable N\"",
        }),
    }
}

/// C's `strtoll(s, NULL, 10)`: leading white space, a sign, digits,
/// saturating at the ends of `i64`; 0 without digits.
fn c_strtoll(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for d in digits.bytes().take_while(u8::is_ascii_digit) {
        let d = i64::from(d - b'0');
        v = if neg {
            v.saturating_mul(10).saturating_sub(d)
        } else {
            v.saturating_mul(10).saturating_add(d)
        };
    }
    v
}

/// Properties written as soon as crust creates their directory.
pub fn is_special(name: &str) -> bool {
    SPECIAL.contains(&name)
}

/// Checks a property read from an image before crust opens a file by its
/// name.
pub fn check_entry(p: &CgroupPropEntry, origin: &str) -> Result<(), PropsError> {
    if safe_name(&p.name) {
        Ok(())
    } else {
        Err(PropsError::BadEntry {
            origin: origin.to_string(),
            name: p.name.clone(),
        })
    }
}

/// Writes the special properties of a directory crust just created, in
/// the image's order.
pub fn restore_special(dir: &Path, props: &[CgroupPropEntry]) -> Result<(), PropsError> {
    for p in props.iter().filter(|p| is_special(&p.name)) {
        // Their defaults: writing them would fail on a cgroup that has a
        // parent with children (the kernels CRIU still supports).
        if (p.name == "memory.swappiness" && p.value == "60")
            || (p.name == "memory.oom_control" && p.value == "0")
        {
            continue;
        }
        if p.name == "devices.list" {
            restore_devices_list(dir, p)?;
        } else {
            write_prop(dir, &p.name, &p.value, p.perms.as_ref(), How::Whole)?;
        }
    }
    Ok(())
}

/// devices.list can only be read: the list comes back by denying all
/// (devices.deny "a") then allowing each line (one write a line: the
/// kernel reads one rule a write). An empty list stays all denied.
fn restore_devices_list(dir: &Path, p: &CgroupPropEntry) -> Result<(), PropsError> {
    // The allow/deny files are the owner's write-only ones, whatever
    // devices.list's mode was (CRIU does the same).
    let perms = p.perms.as_ref().map(|q| CgroupPerms {
        mode: 0o200,
        ..q.clone()
    });
    write_prop(dir, "devices.deny", "a", perms.as_ref(), How::Whole)?;
    if p.value.is_empty() {
        return Ok(());
    }
    write_prop(
        dir,
        "devices.allow",
        &p.value,
        perms.as_ref(),
        How::Lines { skip_fails: false },
    )
}

/// Writes the properties of a directory but the special ones, once the
/// tasks are in; `freezer.state` is not written but returned, for the
/// caller to write after everything else of the restore.
pub fn restore_regular(
    dir: &Path,
    props: &[CgroupPropEntry],
) -> Result<Option<CgroupPropEntry>, PropsError> {
    let mut freezer = None;
    for p in props {
        if p.name == FREEZER_STATE {
            freezer = Some(p.clone());
        } else if is_special(&p.name) {
            continue;
        } else if p.name == "net_prio.ifpriomap" {
            // Interfaces differ between machines: only non-zero
            // priorities are written, each on its own, failures skipped.
            let kept = filter_ifpriomap(dir, &p.value)?;
            if !kept.is_empty() {
                write_prop(
                    dir,
                    &p.name,
                    &kept,
                    p.perms.as_ref(),
                    How::Lines { skip_fails: true },
                )?;
            }
        } else {
            write_prop(dir, &p.name, &p.value, p.perms.as_ref(), How::Whole)?;
        }
    }
    Ok(freezer)
}

/// The lines of an ifpriomap value ("IFACE PRIO") whose priority is not 0.
fn filter_ifpriomap(dir: &Path, value: &str) -> Result<String, PropsError> {
    let mut kept: Vec<&str> = Vec::new();
    if value.is_empty() {
        return Ok(String::new());
    }
    for line in value.split('\n') {
        let Some((_, prio)) = line.split_once(' ') else {
            return Err(PropsError::BadValue {
                cgroup: dir.to_path_buf(),
                property: "net_prio.ifpriomap".into(),
                value: line.to_string(),
                why: "a line is not \"INTERFACE PRIORITY\"",
            });
        };
        if c_strtoll(prio) != 0 {
            kept.push(line);
        }
    }
    Ok(kept.join("\n"))
}

/// Gives a directory crust created (or found) its dumped mode and owner.
pub fn restore_dir_perms(dir: &Path, perms: &CgroupPerms) -> Result<(), PropsError> {
    let f = File::open(dir).map_err(|source| PropsError::Perms {
        path: dir.to_path_buf(),
        uid: perms.uid,
        gid: perms.gid,
        mode: perms.mode,
        source,
    })?;
    set_perms(&f, dir, perms)
}

/// How a value is written.
#[derive(Debug, Clone, Copy)]
enum How {
    /// In one write.
    Whole,
    /// One write a line (the kernel takes one rule a write).
    Lines { skip_fails: bool },
}

/// Writes one property as CRIU does: perms first, then the value (none for
/// `tasks` and `cgroup.procs`; `cgroup.type` only when "threaded";
/// `cgroup.subtree_control` as the change from what it holds now).
pub fn write_value(dir: &Path, p: &CgroupPropEntry) -> Result<(), PropsError> {
    write_prop(dir, &p.name, &p.value, p.perms.as_ref(), How::Whole)
}

fn write_prop(
    dir: &Path,
    name: &str,
    value: &str,
    perms: Option<&CgroupPerms>,
    how: How,
) -> Result<(), PropsError> {
    if !safe_name(name) {
        return Err(PropsError::BadEntry {
            origin: format!("cgroup {}", dir.display()),
            name: name.to_string(),
        });
    }
    let path = dir.join(name);
    let subtree = name == "cgroup.subtree_control";
    log::info!("cgroup {}: restoring {name} = {value:?}", dir.display());
    let mut f = OpenOptions::new()
        .write(true)
        .read(subtree)
        .open(&path)
        .map_err(|source| PropsError::Open {
            cgroup: dir.to_path_buf(),
            property: name.to_string(),
            source,
        })?;
    if let Some(perms) = perms {
        set_perms(&f, &path, perms)?;
    }
    let werr = |value: &str, source| PropsError::Write {
        cgroup: dir.to_path_buf(),
        property: name.to_string(),
        value: value.to_string(),
        source,
    };
    if name == "cgroup.procs" || name == "tasks" || (name == "cgroup.type" && value != "threaded") {
        return Ok(());
    }
    if subtree {
        let mut now = String::new();
        f.read_to_string(&mut now).map_err(|e| werr(value, e))?;
        let change = subtree_change(&now, value);
        return write_once(&mut f, &change).map_err(|e| werr(&change, e));
    }
    match how {
        How::Whole => match write_once(&mut f, value) {
            // Deprecated by the kernel (it says EOPNOTSUPP): nothing to set.
            Err(e)
                if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                    && name == "memory.kmem.limit_in_bytes" =>
            {
                Ok(())
            }
            r => r.map_err(|e| werr(value, e)),
        },
        How::Lines { skip_fails } => {
            for line in value.split('\n') {
                if let Err(e) = write_once(&mut f, line) {
                    if !skip_fails {
                        return Err(werr(line, e));
                    }
                    log::warn!(
                        "cgroup {}: {name}: the kernel refused {line:?}: {e}",
                        dir.display()
                    );
                }
            }
            Ok(())
        }
    }
}

/// One write(2) of all of `value`: a cgroup file takes a value a write.
fn write_once(f: &mut File, value: &str) -> io::Result<()> {
    let n = f.write(value.as_bytes())?;
    if n == value.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "short write: {n} of {} bytes",
            value.len()
        )))
    }
}

/// What to write to cgroup.subtree_control holding `now` for it to hold
/// `want`: every controller of `now` off, every one of `want` on.
fn subtree_change(now: &str, want: &str) -> String {
    let off = now.split_whitespace().map(|c| format!("-{c}"));
    let on = want.split_whitespace().map(|c| format!("+{c}"));
    off.chain(on).collect::<Vec<_>>().join(" ")
}

/// CRIU's change of owner then mode: a chown the kernel refuses with EPERM
/// is tolerated only if the owner already is the dumped one.
fn set_perms(f: &File, path: &Path, perms: &CgroupPerms) -> Result<(), PropsError> {
    let perr = |source| PropsError::Perms {
        path: path.to_path_buf(),
        uid: perms.uid,
        gid: perms.gid,
        mode: perms.mode,
        source,
    };
    match std::os::unix::fs::fchown(f, Some(perms.uid), Some(perms.gid)) {
        Err(e) if e.raw_os_error() != Some(libc::EPERM) => return Err(perr(e)),
        _ => {}
    }
    let m = f.metadata().map_err(perr)?;
    if m.uid() != perms.uid || m.gid() != perms.gid {
        return Err(perr(io::Error::from_raw_os_error(libc::EPERM)));
    }
    if m.mode() != perms.mode {
        f.set_permissions(std::fs::Permissions::from_mode(perms.mode & 0o7777))
            .map_err(perr)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "props_tests.rs"]
mod tests;
