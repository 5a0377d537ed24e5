//! The options of a dump or a restore: one type, like CRIU's one `opts`.
//!
//! Front ends fill it: the command line (`crust dump ...`, `crust
//! restore ...`) today, the RPC service (`crust swrk`, CRIU's `criu_opts`
//! message) next. Fields are named after CRIU's options; a field that only
//! one operation reads says so. Some fields are read by the front end
//! rather than by [`crate::dump`] / [`crate::restore`] (the pidfile, the
//! statistics, the work directory): they are here so that every front end
//! fills the same struct.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every option of a dump or a restore.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-t/--tree PID` (CRIU's `tree_id`): root of the tree to dump; 0 when
    /// not given. Dump only.
    pub pid: i32,
    /// `-D/--images-dir DIR`; `.` when not given, like CRIU.
    pub images_dir: PathBuf,
    /// `-W/--work-dir DIR`: logs and pidfiles; the images directory when
    /// not given.
    pub work_dir: Option<PathBuf>,
    /// `-R/--leave-running`. Dump only.
    pub leave_running: bool,
    /// `-s/--leave-stopped`: after a dump, or after a restore.
    pub leave_stopped: bool,
    /// `-j/--shell-job`.
    pub shell_job: bool,
    /// RPC `orphan_pts_master` (no CLI option, as in CRIU): a pty slave
    /// whose master is outside the tree (a container's console) is dumped;
    /// the restore makes a new master for it and hands it to the RPC
    /// client ([`ActionHook::send_pts_master`]).
    pub orphan_pts_master: bool,
    /// `-d/--restore-detached` (and `--daemon`). Restore only.
    pub detached: bool,
    /// `-S/--restore-sibling`. Restore only.
    pub restore_sibling: bool,
    /// `--pidfile FILE`: where the restored root's pid goes (relative to
    /// the work directory). Read by the front end.
    pub pidfile: Option<PathBuf>,
    /// `--timeout N`: give up seizing/freezing after this long. Dump only.
    pub timeout: Option<Duration>,
    /// `--freeze-cgroup DIR`: freeze the tree through this freezer cgroup
    /// (v1: `freezer.state`; v2: `cgroup.freeze`) before seizing it,
    /// instead of interrupting each task. Dump only.
    pub freeze_cgroup: Option<PathBuf>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--tcp-close`: on dump, saved in inventory.img (the restore must say
    /// it too); on restore, bring the dumped connections back closed.
    pub tcp_close: bool,
    /// `--skip-in-flight`: skip connections not fully established yet
    /// (SYN_SENT/SYN_RECV) instead of failing.
    pub skip_in_flight: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `-l/--file-locks`.
    pub file_locks: bool,
    /// `--ghost-limit SIZE` in bytes. Dump only.
    pub ghost_limit: Option<u64>,
    /// `--link-remap`. Dump only.
    pub link_remap: bool,
    /// `--allow-unsafe-images-dir` (crust's own): dump into an images
    /// directory that is not the caller's or that others can write. Files
    /// are still never written through a symlink or a file crust did not
    /// create. Dump only.
    pub allow_unsafe_images_dir: bool,
    /// `--unprivileged`: the caller is not root (it holds
    /// CAP_CHECKPOINT_RESTORE) and accepts the limits that brings.
    pub unprivileged: bool,
    /// `--cow-parent` (crust's own): a child's pages that are still the
    /// very pages of its parent (copy-on-write since the fork) are not
    /// stored again but recorded as `COW_PARENT` runs of its pagemap
    /// (smaller images of forking trees). CRIU 4.2 cannot restore such a
    /// set; without it every page of every process is stored, as CRIU
    /// stores them, and a restore (crust's or CRIU's) shares the pages
    /// that are equal to the parent's again. Dump only.
    pub cow_parent: bool,
    /// `--compress[=CODEC[:LEVEL]]` (crust's own): a dump or pre-dump
    /// writes the pages of processes and of shared anonymous memory
    /// compressed, into `crust-zpages-N.img` instead of `pages-N.img`
    /// (`mem/zpages.rs`). CRIU 4.2 cannot restore such a set (it finds no
    /// `pages-N.img` and says so); crust's restore reads either. None: CRIU's
    /// plain pages files.
    pub compress: Option<Compress>,
    /// `--network-lock` (CRIU's `network_lock_method`): how a dump keeps
    /// TCP connections off the network, saved in inventory.img. The
    /// default (iptables) unless [`Options::network_lock_given`].
    pub network_lock: NetworkLock,
    /// Whether `--network-lock` was given. A restore ignores it (with a
    /// warning when it differs) and unlocks with the method inventory.img
    /// names, like CRIU.
    pub network_lock_given: bool,
    /// `--inherit-fd fd[N]:KEY`, repeatable, in the order given: the
    /// caller's fd N replaces every file of the image whose key is KEY.
    /// Restore only.
    pub inherit_fds: Vec<InheritFd>,
    /// `--display-stats`: print the statistics at the end. Read by the
    /// front end.
    pub display_stats: bool,
    /// `--manage-cgroups[=MODE]`: none, props, soft, full, strict or
    /// ignore (CRIU's modes; not given: soft, CRIU's default).
    pub manage_cgroups: Option<String>,
    /// `--cgroup-root [CONTROLLER:]PATH`, repeatable, in the order given:
    /// (controller, path); no controller = every controller.
    pub cgroup_roots: Vec<(Option<String>, String)>,
    /// `--cgroup-yard DIR`: a directory with the cgroup hierarchies
    /// mounted in it (one subdirectory each, named as CRIU names them).
    pub cgroup_yard: Option<PathBuf>,
    /// `--pre-dump-mode splice|read`: validated, no pre-dump yet.
    pub pre_dump_mode: Option<String>,
    /// `--file-validation filesize|buildid`: how regular files are checked
    /// at restore. `filesize`: by size only (a dump then records no
    /// build-id); `buildid` (the default): also an ELF file's build-id.
    pub file_validation: Option<String>,
    /// `--skip-file-rwx-check`: a restore does not compare the r/w/x bits
    /// of a regular file's mode with the dumped ones. Restore only.
    pub skip_file_rwx_check: bool,
    /// `--cpu-cap[=CAPS]`: CRIU's bits (`crate::cpuinfo::CAP_*`: FPU 1,
    /// CPU 2, INS 4, IMAGE 8). Without the option FPU|INS, no IMAGE: a
    /// dump writes no cpuinfo.img and a restore checks none, as CRIU.
    /// With IMAGE, dump writes cpuinfo.img and restore checks it (the
    /// other bits say what) before any task exists.
    pub cpu_cap: u32,
    /// `--cgroup-props STRING`: changes to the cgroup properties dumped per
    /// controller (CRIU's format, see `cgroup::props`). Dump only.
    pub cgroup_props: Option<String>,
    /// `--cgroup-props-file FILE`: the same, read from FILE. Dump only.
    pub cgroup_props_file: Option<PathBuf>,
    /// `--cgroup-dump-controller NAME`, repeatable: the only controllers
    /// dumped (none given: all). Dump only.
    pub cgroup_dump_controllers: Vec<String>,
    /// `--status-fd FD`.
    pub status_fd: Option<i32>,
    /// `--address ADDR` of a page server.
    pub address: Option<String>,
    /// `--port PORT` of a page server.
    pub port: Option<u16>,
    /// `--track-mem`: a dump or pre-dump keeps tracking the pages the tree
    /// writes, for a later `--prev-images-dir` run.
    pub track_mem: bool,
    /// `--prev-images-dir DIR`: the previous image set of a pre-dump chain
    /// (relative to the images directory, as CRIU takes it).
    pub prev_images_dir: Option<PathBuf>,
    /// `--page-server`: a dump/pre-dump sends its pages to the page server
    /// at `--address`/`--port`; with `lazy-pages`, fetch pages from it.
    pub page_server: bool,
    /// `--lazy-pages`: restore (or dump) with memory left to be served
    /// later, by the lazy-pages daemon.
    pub lazy_pages: bool,
    /// `--auto-dedup`: pages a new image set supersedes are punched out of
    /// the parent sets.
    pub auto_dedup: bool,
    /// `--ps-socket FD`: an already-connected page-server socket.
    pub ps_socket: Option<i32>,
    /// `--tls` and its files.
    pub tls: TlsOptions,
    /// `-r/--root DIR`: the root the tree's mount namespace is restored
    /// into (and, at dump, the root it had).
    pub root: Option<PathBuf>,
    /// `--external KIND[ID]:VALUE`, repeatable, as given (mnt[], veth[],
    /// dev[], ...): each kind's code reads the entries of its kind.
    pub external: Vec<String>,
    /// `-J/--join-ns NS:{PID|PATH}[,OPTS]`, repeatable, as given.
    pub join_ns: Vec<String>,
    /// `--empty-ns net`, repeatable, as given.
    pub empty_ns: Vec<String>,
    /// `-M/--ext-mount-map KEY:VALUE` (CRIU's older form of
    /// `--external mnt[KEY]:VALUE`), repeatable, as given.
    pub ext_mount_map: Vec<String>,
    /// `--skip-mnt PATH`, repeatable.
    pub skip_mnt: Vec<String>,
    /// `--enable-fs FS[,FS...]`, repeatable, as given.
    pub enable_fs: Vec<String>,
    /// `--enable-external-sharing`.
    pub enable_external_sharing: bool,
    /// `--enable-external-masters`.
    pub enable_external_masters: bool,
    /// Who is told at CRIU's action-script moments (pre-dump, post-dump,
    /// pre-restore, ...): the RPC's notify callbacks. None by default.
    pub hooks: Hooks,
}

/// `--tls`, `--tls-cacert`, `--tls-cacrl`, `--tls-cert`, `--tls-key`,
/// `--tls-no-cn-verify`: what was given (None: CRIU's default path).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub enabled: bool,
    pub cacert: Option<PathBuf>,
    pub cacrl: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub no_cn_verify: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pid: 0,
            images_dir: PathBuf::from("."),
            work_dir: None,
            leave_running: false,
            leave_stopped: false,
            shell_job: false,
            orphan_pts_master: false,
            detached: false,
            restore_sibling: false,
            pidfile: None,
            timeout: None,
            freeze_cgroup: None,
            tcp_established: false,
            tcp_close: false,
            skip_in_flight: false,
            ext_unix_sk: false,
            file_locks: false,
            ghost_limit: None,
            link_remap: false,
            allow_unsafe_images_dir: false,
            unprivileged: false,
            cow_parent: false,
            compress: None,
            network_lock: NetworkLock::default(),
            network_lock_given: false,
            inherit_fds: Vec::new(),
            display_stats: false,
            manage_cgroups: None,
            cgroup_roots: Vec::new(),
            cgroup_yard: None,
            pre_dump_mode: None,
            file_validation: None,
            skip_file_rwx_check: false,
            cpu_cap: 5,
            cgroup_props: None,
            cgroup_props_file: None,
            cgroup_dump_controllers: Vec::new(),
            status_fd: None,
            address: None,
            port: None,
            track_mem: false,
            prev_images_dir: None,
            page_server: false,
            lazy_pages: false,
            auto_dedup: false,
            ps_socket: None,
            tls: TlsOptions::default(),
            root: None,
            external: Vec::new(),
            join_ns: Vec::new(),
            empty_ns: Vec::new(),
            ext_mount_map: Vec::new(),
            skip_mnt: Vec::new(),
            enable_fs: Vec::new(),
            enable_external_sharing: false,
            enable_external_masters: false,
            hooks: Hooks::default(),
        }
    }
}

impl Options {
    /// Set `--network-lock` as given.
    pub fn set_network_lock(&mut self, method: NetworkLock) {
        self.network_lock = method;
        self.network_lock_given = true;
    }

    /// Whether regular files are checked by size only
    /// (`--file-validation filesize`), without their ELF build-id.
    pub fn validate_by_size_only(&self) -> bool {
        self.file_validation.as_deref() == Some("filesize")
    }

    /// `--network-lock` if it was given.
    pub fn network_lock_arg(&self) -> Option<NetworkLock> {
        self.network_lock_given.then_some(self.network_lock)
    }

    /// The directory for logs and pidfiles: `-W`, else `-D`.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| self.images_dir.clone())
    }

    /// A path given relative to the work directory (CRIU chdir()s there).
    pub fn in_work_dir(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.work_dir().join(p)
        }
    }
}

/// How `--compress` compresses pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// LZ4 blocks (`lz4_flex`): fast enough to keep up with the page copy.
    Lz4,
    /// Zstandard at this level (1 to 19; 1 by default).
    Zstd(i32),
}

impl Compress {
    /// `--compress`'s argument: none (lz4), `lz4`, `zstd` or `zstd:LEVEL`.
    pub fn parse(arg: Option<&str>) -> Result<Compress, String> {
        let Some(a) = arg.filter(|a| !a.is_empty()) else {
            return Ok(Compress::Lz4);
        };
        let (name, level) = match a.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (a, None),
        };
        match (name, level) {
            ("lz4", None) => Ok(Compress::Lz4),
            ("lz4", Some(_)) => Err("lz4 takes no level".into()),
            ("zstd", None) => Ok(Compress::Zstd(1)),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(n) if (1..=19).contains(&n) => Ok(Compress::Zstd(n)),
                _ => Err(format!("zstd level {l:?}: give 1 to 19")),
            },
            _ => Err(format!("{name:?}: give lz4, zstd or zstd:LEVEL")),
        }
    }
}

/// How connections are locked (`--network-lock`); what each method does
/// is in [`crate::netlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkLock {
    /// iptables/ip6tables DROP rules per connection (CRIU's default).
    #[default]
    Iptables,
    /// An nftables table with sets of connections.
    Nftables,
    /// No locking at all.
    Skip,
}

/// One `--inherit-fd fd[N]:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritFd {
    /// crust's fd number N.
    pub fd: i32,
    /// What it replaces: `pipe:[INO]` or a regular file's path.
    pub key: String,
}

impl InheritFd {
    /// Parse CRIU's `fd[N]:KEY`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<InheritFd, String> {
        let rest = s
            .strip_prefix("fd[")
            .ok_or_else(|| format!("{s:?} does not start with fd[N]:"))?;
        let (num, key) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not of the form fd[N]:KEY"))?;
        let fd: i32 = num
            .parse()
            .map_err(|_| format!("{s:?}: fd number {num:?} is not a number"))?;
        if fd < 0 {
            return Err(format!("{s:?}: fd number {fd} is negative"));
        }
        if key.is_empty() {
            return Err(format!("{s:?} has an empty key"));
        }
        Ok(InheritFd {
            fd,
            key: key.to_string(),
        })
    }
}

/// A moment of a dump or a restore at which CRIU runs its action scripts
/// and sends its RPC client a notify message, with CRIU's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Dump: before the tree is frozen. A failure refuses the dump.
    PreDump,
    /// Dump: images written, before the tree is killed or let go. A
    /// failure makes the dump fail and the tree run on.
    PostDump,
    /// Restore: images read, before any task is made. A failure stops it.
    PreRestore,
    /// Restore: the root exists with its new namespaces, still empty (the
    /// root's host pid is given). A failure kills what was made.
    SetupNamespaces,
    /// Restore: the root's namespaces are filled.
    PostSetupNamespaces,
    /// Restore: every task is built, none runs, the network is still
    /// locked (the root's host pid is given). A failure kills the tree.
    PostRestore,
    /// A tree with a network namespace of its own: before it is locked at
    /// dump.
    NetworkLock,
    /// A tree with a network namespace of its own: before it is unlocked
    /// (after a restore, or when a dump lets the tree run on). Failures
    /// are only logged, as in CRIU.
    NetworkUnlock,
    /// Restore: just before the tasks are let go (failures logged).
    PreResume,
    /// Restore: the tasks run (failures logged).
    PostResume,
    /// `service` (and CRIU's page server): ready for requests, before
    /// `--status-fd` is written. The engine never runs it; the front end
    /// does.
    StatusReady,
    /// Dump, RPC only: the tree frozen (after network-lock), the client
    /// may name more external resources ([`ActionHook::query_external`]).
    QueryExtFiles,
    /// Restore, RPC only: the new master of the pty whose slave had its
    /// master outside the tree goes to the client with the notify
    /// ([`ActionHook::send_pts_master`]).
    OrphanPtsMaster,
}

impl Action {
    /// CRIU's name of the action (its scripts' `CRTOOLS_SCRIPT_ACTION`, the
    /// RPC notify's `script`).
    pub fn name(self) -> &'static str {
        match self {
            Action::PreDump => "pre-dump",
            Action::PostDump => "post-dump",
            Action::PreRestore => "pre-restore",
            Action::SetupNamespaces => "setup-namespaces",
            Action::PostSetupNamespaces => "post-setup-namespaces",
            Action::PostRestore => "post-restore",
            Action::NetworkLock => "network-lock",
            Action::NetworkUnlock => "network-unlock",
            Action::PreResume => "pre-resume",
            Action::PostResume => "post-resume",
            Action::StatusReady => "status-ready",
            Action::QueryExtFiles => "query-ext-files",
            Action::OrphanPtsMaster => "orphan-pts-master",
        }
    }
}

/// What a front end does at each [`Action`] (the RPC service sends a
/// notify message and waits for the client's answer). An `Err` says why
/// the action failed; the operation then stops where CRIU stops.
pub trait ActionHook: Send + Sync {
    /// `root_pid` is the tree's root (host pid) where CRIU gives it.
    fn run(&self, action: Action, root_pid: Option<i32>) -> Result<(), String>;

    /// CRIU's query-ext-files moment of a dump (the tree frozen, after
    /// network-lock): more `--external` keys for this dump. Only an RPC
    /// client is asked (no action script runs for it); none by default.
    fn query_external(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// CRIU's orphan-pts-master moment of a restore: `master` goes to the
    /// RPC client with the notify, and the client answers. Only an RPC
    /// client can take it (no action script runs for it).
    fn send_pts_master(&self, _master: BorrowedFd<'_>) -> Result<(), String> {
        Err("only an RPC client can take the master of the pty".into())
    }
}

/// The [`ActionHook`] of an operation, if any.
#[derive(Clone, Default)]
pub struct Hooks(Option<Arc<dyn ActionHook>>);

impl Hooks {
    /// Hooks that call `h`.
    pub fn new(h: Arc<dyn ActionHook>) -> Hooks {
        Hooks(Some(h))
    }

    /// The hook's [`ActionHook::query_external`]: none without a hook.
    pub fn query_external(&self) -> Result<Vec<String>, String> {
        match &self.0 {
            Some(h) => h.query_external(),
            None => Ok(Vec::new()),
        }
    }

    /// The hook's [`ActionHook::send_pts_master`]: an error without a hook.
    pub fn send_pts_master(&self, master: BorrowedFd<'_>) -> Result<(), String> {
        match &self.0 {
            Some(h) => h.send_pts_master(master),
            None => Err("no RPC client to take the master of the pty".into()),
        }
    }

    /// Run `action`: Ok when there is no hook.
    pub fn run(&self, action: Action, root_pid: Option<i32>) -> Result<(), String> {
        match &self.0 {
            Some(h) => h.run(action, root_pid),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hooks(set)"
        } else {
            "Hooks(none)"
        })
    }
}
