use super::*;
use crust_images::proto::{CgroupRoot, CriuOpts, InheritFd, JoinNamespace};
use std::time::Duration;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crust-rpc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn me(swrk: bool) -> Peer {
    Peer {
        pid: crust_sys::process::getpid(),
        swrk,
    }
}

fn base(dir: &Path) -> CriuOpts {
    CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(dir.display().to_string()),
        ..Default::default()
    }
}

/// Every field runc and go-criu send lands where the command line's
/// option of the same meaning puts it.
#[test]
fn dump_options_fill_the_engine_options() {
    let dir = tmpdir("dump");
    let mut req = base(&dir);
    req.pid = Some(4242);
    req.leave_running = Some(true);
    req.tcp_established = Some(true);
    req.ext_unix_sk = Some(true);
    req.shell_job = Some(true);
    req.file_locks = Some(true);
    req.link_remap = Some(true);
    req.tcp_skip_in_flight = Some(true);
    req.ghost_limit = Some(2048);
    req.timeout = Some(7);
    req.network_lock = Some(2);
    req.log_level = Some(4);
    req.log_file = Some("dump.log".into());
    req.notify_scripts = Some(true);
    req.manage_cgroups = Some(true);
    req.root = Some("/srv/root".into());
    req.external = vec!["mnt[/dev]:dev".into()];
    req.ext_mnt = vec![crust_images::proto::ExtMountMap {
        key: "/etc/hosts".into(),
        val: "/etc/hosts".into(),
        ..Default::default()
    }];
    req.freeze_cgroup = Some("/sys/fs/cgroup/freezer/c1".into());
    req.orphan_pts_master = Some(true);
    let mut o = Opts::default();
    let s = apply(&mut o, &req, Mode::Dump, me(true)).unwrap();
    let e = &o.engine;
    assert_eq!(e.pid, 4242);
    assert!(e.leave_running && e.tcp_established && e.ext_unix_sk && e.shell_job);
    assert!(e.file_locks && e.link_remap && e.skip_in_flight);
    assert_eq!(e.ghost_limit, Some(2048));
    assert_eq!(e.timeout, Some(Duration::from_secs(7)));
    assert_eq!(
        e.network_lock_arg(),
        Some(crust_engine::NetworkLock::Nftables)
    );
    assert_eq!(e.root, Some(PathBuf::from("/srv/root")));
    assert_eq!(e.external, vec!["mnt[/dev]:dev"]);
    assert_eq!(e.ext_mount_map, vec!["/etc/hosts:/etc/hosts"]);
    assert_eq!(e.manage_cgroups.as_deref(), Some("soft"));
    // RPC only, as in CRIU: the console's master goes to the client.
    assert!(e.orphan_pts_master);
    assert_eq!(e.images_dir, dir);
    assert_eq!(e.work_dir, Some(dir.clone()));
    assert_eq!(s.log, Some(dir.join("dump.log")));
    assert_eq!(s.verbosity, 4);
    assert!(s.notify && !s.self_dump);
    // The freezer cgroup is used, not warned about.
    assert_eq!(
        e.freeze_cgroup,
        Some(PathBuf::from("/sys/fs/cgroup/freezer/c1"))
    );
    assert!(!o.lacking.iter().any(|w| w.contains("freeze_cgroup")));
    assert!(o.unsupported.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The images and work directories as fds of the client; the dump's root
/// defaults to the client; the log goes to CRIU's default name.
#[test]
fn directories_as_client_fds() {
    let dir = tmpdir("fds");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let d = File::open(&dir).unwrap();
    let w = File::open(&work).unwrap();
    let mut req = base(Path::new("/nonexistent"));
    req.images_dir_fd = d.as_raw_fd();
    req.work_dir_fd = Some(w.as_raw_fd());
    let mut o = Opts::default();
    let s = apply(&mut o, &req, Mode::Dump, me(false)).unwrap();
    assert_eq!(o.engine.images_dir, dir);
    assert_eq!(o.engine.work_dir, Some(work.clone()));
    assert_eq!(o.engine.pid, crust_sys::process::getpid());
    assert!(s.self_dump);
    assert_eq!(s.log, Some(work.join(DEFAULT_LOG)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CRIU's EBADRQC cases: what the standalone service refuses, bad enum
/// values, a log file in a subdirectory, no images directory, options
/// crust cannot honour.
#[test]
fn bad_options_are_refused() {
    let dir = tmpdir("bad");
    let try_with = |f: &dyn Fn(&mut CriuOpts), mode: Mode, swrk: bool| {
        let mut req = base(&dir);
        f(&mut req);
        apply(&mut Opts::default(), &req, mode, me(swrk)).map(drop)
    };
    let inherit = |r: &mut CriuOpts| {
        r.inherit_fd = vec![InheritFd {
            key: "pipe:[1]".into(),
            fd: 3,
            ..Default::default()
        }]
    };
    assert!(try_with(&inherit, Mode::Restore, false).is_err());
    assert!(try_with(&inherit, Mode::Restore, true).is_ok());
    assert!(try_with(&inherit, Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.rst_sibling = Some(true), Mode::Restore, false).is_err());
    assert!(try_with(&|r| r.network_lock = Some(9), Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.manage_cgroups_mode = Some(7), Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.pre_dump_mode = Some(0), Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.empty_ns = Some(0x2000_0000), Mode::Restore, true).is_err());
    assert!(try_with(&|r| r.log_file = Some("a/b.log".into()), Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.images_dir = None, Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.track_mem = Some(true), Mode::Dump, true).is_ok());
    assert!(try_with(&|r| r.track_mem = Some(false), Mode::Dump, true).is_ok());
    assert!(try_with(&|r| r.parent_img = Some("../p".into()), Mode::Dump, true).is_ok());
    assert!(try_with(&|r| r.exec_cmd = vec!["true".into()], Mode::Restore, true).is_err());
    assert!(try_with(&|r| r.pid = Some(0), Mode::Dump, true).is_err());
    let cg = |r: &mut CriuOpts| {
        r.cg_root = vec![CgroupRoot {
            ctrl: None,
            path: "/x".into(),
            ..Default::default()
        }]
    };
    // Where cgroups go (--cgroup-root).
    assert!(try_with(&cg, Mode::Restore, true).is_ok());
    assert!(try_with(&|r| r.mntns_compat_mode = Some(true), Mode::Dump, true).is_err());
    assert!(try_with(&|r| r.mntns_compat_mode = Some(true), Mode::Restore, true).is_ok());
    // A check needs no images directory unless it logs to a file.
    assert!(try_with(&|r| r.images_dir = None, Mode::Check, true).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restore_lists_and_modes() {
    let dir = tmpdir("rst");
    let mut req = base(&dir);
    req.rst_sibling = Some(true);
    req.inherit_fd = vec![InheritFd {
        key: "pipe:[77]".into(),
        fd: 5,
        ..Default::default()
    }];
    req.join_ns = vec![JoinNamespace {
        ns: "net".into(),
        ns_file: "/proc/1/ns/net".into(),
        extra_opt: None,
        ..Default::default()
    }];
    req.manage_cgroups_mode = Some(0);
    req.empty_ns = Some(libc::CLONE_NEWNET as u32);
    req.log_to_stderr = Some(true);
    req.tcp_close = Some(true);
    let mut o = Opts::default();
    o.engine.detached = true;
    let s = apply(&mut o, &req, Mode::Restore, me(true)).unwrap();
    let e = &o.engine;
    assert!(e.restore_sibling && e.tcp_close);
    assert_eq!(
        (e.inherit_fds[0].fd, e.inherit_fds[0].key.as_str()),
        (5, "pipe:[77]")
    );
    assert_eq!(e.join_ns, vec!["net:/proc/1/ns/net"]);
    assert_eq!(e.empty_ns, vec!["net"]);
    assert_eq!(e.manage_cgroups.as_deref(), Some("ignore"));
    assert_eq!(s.log, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The RPC configuration file wins over the request (runc's runc.conf).
#[test]
fn config_file_overrides_the_request() {
    let dir = tmpdir("conf");
    let other = dir.join("imgs");
    std::fs::create_dir_all(&other).unwrap();
    let conf = dir.join("runc.conf");
    std::fs::write(
        &conf,
        format!(
            "tcp-established\nimages-dir {}\nlog-file conf.log\n",
            other.display()
        ),
    )
    .unwrap();
    let mut req = base(&dir);
    req.config_file = Some(conf.display().to_string());
    req.log_file = Some("req.log".into());
    let mut o = Opts::default();
    let s = apply(&mut o, &req, Mode::Dump, me(true)).unwrap();
    assert!(o.engine.tcp_established);
    assert_eq!(o.engine.images_dir, other);
    assert_eq!(s.log, Some(other.join("conf.log")));
    std::fs::remove_dir_all(&dir).unwrap();
}

type Set = Box<dyn Fn(&mut CriuOpts)>;

/// What crust does with a `criu_opts` field.
enum Outcome {
    /// Applied: the check holds on the options.
    Used(fn(&Opts) -> bool),
    /// Refused (CRIU's EBADRQC, "crust does not support ...").
    Refused,
    /// Accepted; no effect for crust (logged at -v4).
    NoEffect,
}

/// Every field of CRIU 4.2's `criu_opts` not covered by the tests above is
/// applied, refused or warned about (the cgroup fields and freeze_cgroup
/// belong to the cgroup and freezer work; orphan_pts_master is checked
/// above).
#[test]
fn every_criu_opts_field_has_an_outcome() {
    use Outcome::*;
    let dir = tmpdir("table");
    let null = File::open("/dev/null").unwrap();
    let null_fd = null.as_raw_fd();
    let (sk, _peer) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
    let sk_fd = sk.as_raw_fd();
    let mut table = field_table(sk_fd);
    table.extend(field_table_refused(null_fd));
    for (name, mode, set, want) in &table {
        let mut req = base(&dir);
        set(&mut req);
        let mut o = Opts::default();
        let got = apply(&mut o, &req, *mode, me(true));
        match want {
            Used(check) => assert!(got.is_ok() && check(&o), "{name}: {got:?}"),
            Refused => assert!(got.is_err(), "{name} accepted"),
            NoEffect => assert!(
                got.is_ok() && !o.no_effect.is_empty() && o.lacking.is_empty(),
                "{name}: {got:?} {:?}",
                o.no_effect
            ),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fields of [`every_criu_opts_field_has_an_outcome`] crust applies or
/// takes without effect (`sk_fd`: a socket of this process).
fn field_table(sk_fd: i32) -> Vec<(&'static str, Mode, Set, Outcome)> {
    use Outcome::*;
    vec![
        (
            "leave_stopped",
            Mode::Dump,
            Box::new(|r| r.leave_stopped = Some(true)),
            Used(|o| o.engine.leave_stopped),
        ),
        (
            "evasive_devices",
            Mode::Dump,
            Box::new(|r| r.evasive_devices = Some(true)),
            NoEffect,
        ),
        (
            "weak_sysctls",
            Mode::Restore,
            Box::new(|r| r.weak_sysctls = Some(true)),
            NoEffect,
        ),
        (
            "force_irmap",
            Mode::Dump,
            Box::new(|r| r.force_irmap = Some(true)),
            NoEffect,
        ),
        (
            "irmap_scan_paths",
            Mode::Dump,
            Box::new(|r| r.irmap_scan_paths = vec!["/usr".into()]),
            NoEffect,
        ),
        (
            "enable_fs",
            Mode::Dump,
            Box::new(|r| r.enable_fs = vec!["fuse".into()]),
            NoEffect,
        ),
        (
            "tls_no_cn_verify",
            Mode::Dump,
            Box::new(|r| r.tls_no_cn_verify = Some(true)),
            Used(|o| o.engine.tls.no_cn_verify),
        ),
        (
            "skip_file_rwx_check",
            Mode::Restore,
            Box::new(|r| r.skip_file_rwx_check = Some(true)),
            Used(|o| o.engine.skip_file_rwx_check),
        ),
        (
            "display_stats",
            Mode::Dump,
            Box::new(|r| r.display_stats = Some(true)),
            Used(|o| o.engine.display_stats),
        ),
        (
            "auto_ext_mnt",
            Mode::Dump,
            Box::new(|r| r.auto_ext_mnt = Some(true)),
            Used(|o| o.engine.ext_mount_map == ["auto"]),
        ),
        (
            "ext_sharing",
            Mode::Dump,
            Box::new(|r| r.ext_sharing = Some(true)),
            Used(|o| o.engine.enable_external_sharing),
        ),
        (
            "ext_masters",
            Mode::Dump,
            Box::new(|r| r.ext_masters = Some(true)),
            Used(|o| o.engine.enable_external_masters),
        ),
        (
            "skip_mnt",
            Mode::Dump,
            Box::new(|r| r.skip_mnt = vec!["/x".into()]),
            Used(|o| o.engine.skip_mnt == ["/x"]),
        ),
        (
            "veths",
            Mode::Restore,
            Box::new(|r| {
                r.veths = vec![crust_images::proto::CriuVethPair {
                    if_in: "a".into(),
                    if_out: "b".into(),
                    ..Default::default()
                }]
            }),
            Used(|o| o.engine.external == ["veth[a]:b"]),
        ),
        (
            "pre_dump_mode",
            Mode::Dump,
            Box::new(|r| r.pre_dump_mode = Some(2)),
            Used(|o| o.engine.pre_dump_mode.as_deref() == Some("read")),
        ),
        (
            "unprivileged",
            Mode::Dump,
            Box::new(|r| r.unprivileged = Some(true)),
            Used(|o| o.unprivileged && o.engine.unprivileged),
        ),
        (
            "pidfd_store_sk",
            Mode::Dump,
            Box::new(move |r| r.pidfd_store_sk = Some(sk_fd)),
            NoEffect,
        ),
    ]
}

/// More fields: the status fd (`null_fd`, a file that is not a socket),
/// and those crust refuses or warns about.
fn field_table_refused(null_fd: i32) -> Vec<(&'static str, Mode, Set, Outcome)> {
    use Outcome::*;
    vec![
        (
            "status_fd",
            Mode::Dump,
            Box::new(move |r| r.status_fd = Some(null_fd)),
            Used(|o| o.engine.status_fd.is_some()),
        ),
        (
            "pidfd_store_sk not a socket",
            Mode::Dump,
            Box::new(move |r| r.pidfd_store_sk = Some(null_fd)),
            Refused,
        ),
        (
            "cpu_cap",
            Mode::Restore,
            Box::new(|r| r.cpu_cap = Some(1)),
            // CRIU: the request's bits, and the image always.
            Used(|o| o.engine.cpu_cap == 9),
        ),
        (
            "auto_dedup",
            Mode::Dump,
            Box::new(|r| r.auto_dedup = Some(true)),
            Used(|o| o.engine.auto_dedup),
        ),
        (
            "lazy_pages",
            Mode::Dump,
            Box::new(|r| r.lazy_pages = Some(true)),
            // Taken; the dump itself refuses it (engine: prepare_output).
            Used(|o| o.engine.lazy_pages),
        ),
        (
            "ps",
            Mode::Dump,
            Box::new(|r| {
                r.ps = Some(crust_images::proto::rpc::CriuPageServerInfo {
                    address: Some("127.0.0.1".into()),
                    port: Some(1234),
                    ..Default::default()
                })
            }),
            Used(|o| {
                o.engine.page_server
                    && o.engine.port == Some(1234)
                    && o.engine.address.as_deref() == Some("127.0.0.1")
            }),
        ),
        (
            "tls",
            Mode::Dump,
            Box::new(|r| r.tls = Some(true)),
            Used(|o| o.engine.tls.enabled),
        ),
        (
            "tls_cacert",
            Mode::Dump,
            Box::new(|r| r.tls_cacert = Some("/ca".into())),
            Used(|o| o.engine.tls.cacert.is_some()),
        ),
        (
            "tls_cacrl",
            Mode::Dump,
            Box::new(|r| r.tls_cacrl = Some("/crl".into())),
            Used(|o| o.engine.tls.cacrl.is_some()),
        ),
        (
            "tls_cert",
            Mode::Dump,
            Box::new(|r| r.tls_cert = Some("/cert".into())),
            Used(|o| o.engine.tls.cert.is_some()),
        ),
        (
            "tls_key",
            Mode::Dump,
            Box::new(|r| r.tls_key = Some("/key".into())),
            Used(|o| o.engine.tls.key.is_some()),
        ),
        (
            "lsm_profile",
            Mode::Restore,
            Box::new(|r| r.lsm_profile = Some("apparmor:x".into())),
            Refused,
        ),
        (
            "lsm_mount_context",
            Mode::Restore,
            Box::new(|r| r.lsm_mount_context = Some("ctx".into())),
            Refused,
        ),
        (
            "unix_sk_ino",
            Mode::Dump,
            Box::new(|r| {
                r.ext_unix_sk = Some(true);
                r.unix_sk_ino = vec![Default::default()];
            }),
            Refused,
        ),
    ]
}
