use super::*;
use std::fs;

fn names(list: Option<&[String]>) -> Vec<&str> {
    list.unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect()
}

#[test]
fn builtin_table_is_criu_s() {
    let c = PropsConfig::builtin();
    assert_eq!(
        names(c.props_of("cpu")),
        [
            "cpu.shares",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "cpu.rt_period_us",
            "cpu.rt_runtime_us"
        ]
    );
    let mem = names(c.props_of("memory"));
    assert_eq!(mem.len(), 9);
    assert_eq!(
        mem[..2],
        ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    );
    assert_eq!(
        names(c.props_of("cpuset"))[..2],
        ["cpuset.cpus", "cpuset.mems"]
    );
    assert_eq!(names(c.props_of("cpuset")).len(), 10);
    assert_eq!(names(c.props_of("blkio")), ["blkio.weight"]);
    assert_eq!(names(c.props_of("pids")), ["pids.max"]);
    assert_eq!(names(c.props_of("devices")), ["devices.list"]);
    assert_eq!(names(c.props_of("net_cls")), ["net_cls.classid"]);
    assert_eq!(names(c.props_of("net_prio")), ["net_prio.ifpriomap"]);
    assert_eq!(c.props_of("freezer"), Some(&[][..]));
    assert_eq!(c.props_of("perf_event"), Some(&[][..]));
    assert_eq!(c.props_of("cpuacct"), None);
    assert!(!c.should_skip_controller("cpu,cpuacct"));
}

#[test]
fn merge_and_replace() {
    let mut c = PropsConfig::builtin();
    c.apply(
        "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"cpu.idle\"]\n\
         \"pids\":\n - \"strategy\": \"replace\"\n - \"properties\": [ ]\n\
         \"hugetlb\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"a.b\", \"c.d\"]",
        "test",
    )
    .unwrap();
    assert_eq!(names(c.props_of("cpu")).last(), Some(&"cpu.idle"));
    assert_eq!(names(c.props_of("cpu")).len(), 6);
    assert_eq!(c.props_of("pids"), Some(&[][..]));
    assert_eq!(names(c.props_of("hugetlb")), ["a.b", "c.d"]);
    // CRIU's own example, spaces and all.
    c.apply(
        "\"memory\":\n - \"strategy\": \"replace\"\n - \"properties\": [\"memory.limit_in_bytes\", \"memory.memsw.limit_in_bytes\"]\n",
        "test",
    )
    .unwrap();
    assert_eq!(names(c.props_of("memory")).len(), 2);
}

#[test]
fn options_file_then_string() {
    let dir = std::env::temp_dir().join(format!("crust-cgprops-{}", std::process::id()));
    fs::write(
        &dir,
        "\"pids\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"pids.x\"]\n",
    )
    .unwrap();
    let s = "\"pids\":\n - \"strategy\": \"replace\"\n - \"properties\": [\"pids.y\"]";
    let c = PropsConfig::from_options(Some(s), Some(&dir), &["memory".into()]).unwrap();
    fs::remove_file(&dir).unwrap();
    assert_eq!(names(c.props_of("pids")), ["pids.y", "pids.x"]);
    assert!(c.should_skip_controller("cpu,cpuacct"));
    assert!(!c.should_skip_controller("memory"));
    let missing = PropsConfig::from_options(None, Some(Path::new("/nonexistent/x")), &[]);
    assert!(matches!(missing, Err(PropsError::File { .. })));
}

#[test]
fn syntax_errors_say_where() {
    let bad = [
        ("cpu:\n", 1, "controller name"),
        ("\"cpu\": - \"strategy\"", 1, "new line"),
        ("\"cpu\":\n - \"strategy\": \"keep\"\n", 2, "merge"),
        (
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"a\", ]\n",
            3,
            "new line",
        ),
        (
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"a\" \"b\"]\n",
            3,
            "']'",
        ),
        (
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\n",
            3,
            "empty property list",
        ),
        (
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": \"a\"\n",
            3,
            "'['",
        ),
        (
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": []x",
            3,
            "new line",
        ),
    ];
    for (text, line, what) in bad {
        let e = PropsConfig::builtin()
            .apply(text, "--cgroup-props")
            .unwrap_err();
        let msg = e.to_string();
        match e {
            PropsError::Syntax { line: l, .. } => assert_eq!(l, line, "{text:?}: {msg}"),
            other => panic!("{text:?}: {other}"),
        }
        assert!(msg.contains(what), "{text:?}: {msg}");
        assert!(msg.contains("--cgroup-props"), "{msg}");
    }
    let e = PropsConfig::builtin()
        .apply(
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"../x\"]",
            "t",
        )
        .unwrap_err();
    assert!(matches!(e, PropsError::BadName { .. }), "{e}");
}

#[test]
fn dir_props_of_v1_and_v2() {
    let c = PropsConfig::builtin();
    let v1 = c.dir_props(&["cpu".into(), "cpuacct".into()]);
    assert_eq!(v1.len(), 5 + GLOBAL_V1.len());
    assert_eq!(v1.last(), Some(&"tasks"));
    let v2 = c.dir_props(&[String::new()]);
    assert_eq!(v2, GLOBAL_V2);
    assert_eq!(c.dir_props(&["name=systemd".into()]), GLOBAL_V1);
}

#[test]
fn values_as_criu_keeps_them() {
    let d = Path::new("/x");
    assert_eq!(
        dumped_value(d, "memory.limit_in_bytes", "9223372036854771712\n").unwrap(),
        "9223372036854771712"
    );
    assert_eq!(
        dumped_value(d, "memory.limit_in_bytes", "9223372036854775807\n").unwrap(),
        "-1"
    );
    assert_eq!(
        dumped_value(d, "x", "18446744073709551615\n").unwrap(),
        "-1"
    );
    assert_eq!(dumped_value(d, "pids.max", "max\n").unwrap(), "max");
    assert_eq!(
        dumped_value(d, "devices.list", "a *:* rwm\n").unwrap(),
        "a *:* rwm"
    );
    assert_eq!(dumped_value(d, "x", "1\n\n").unwrap(), "1\n");
    let oom = "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n";
    assert_eq!(dumped_value(d, "memory.oom_control", oom).unwrap(), "1");
    assert!(dumped_value(d, "memory.oom_control", "under_oom 0\n").is_err());
    assert_eq!(c_strtoll("  -12x"), -12);
    assert_eq!(c_strtoll("-99999999999999999999"), i64::MIN);
    assert_eq!(c_strtoll("abc"), 0);
}

#[test]
fn ifpriomap_and_subtree_control() {
    let d = Path::new("/x");
    assert_eq!(
        filter_ifpriomap(d, "lo 0\neth0 5\neth1 0\nbr0 2").unwrap(),
        "eth0 5\nbr0 2"
    );
    assert_eq!(filter_ifpriomap(d, "lo 0").unwrap(), "");
    assert_eq!(filter_ifpriomap(d, "").unwrap(), "");
    assert!(filter_ifpriomap(d, "lo0").is_err());
    assert_eq!(subtree_change("cpu memory\n", "pids"), "-cpu -memory +pids");
    assert_eq!(subtree_change("", ""), "");
    assert!(is_special("cpuset.mems") && !is_special("pids.max"));
    let mut p = CgroupPropEntry {
        name: "../tasks".into(),
        ..Default::default()
    };
    assert!(check_entry(&p, "cgroup.img").is_err());
    let e = restore_regular(Path::new("/nonexistent"), std::slice::from_ref(&p)).unwrap_err();
    assert!(matches!(e, PropsError::BadEntry { .. }), "{e}");
    assert_eq!(e.into_error().kind(), ErrorKind::BadImage);
    p.name = "pids.max".into();
    assert!(check_entry(&p, "cgroup.img").is_ok());
}

/// A v1 cgroup directory of the test's own, removed (with its children)
/// when dropped.
struct TestCg(PathBuf);

impl TestCg {
    /// A new cgroup under controller `ctl`'s v1 hierarchy, or None (the
    /// test skips) if that hierarchy is not mounted or not root.
    fn new(ctl: &str, tag: &str) -> Option<TestCg> {
        let test = crust_sys::testing::current_test();
        if !crust_sys::testing::require_root(&test) {
            return None;
        }
        let top = Path::new("/sys/fs/cgroup").join(ctl);
        if !top.join("tasks").exists() {
            crust_sys::testing::skip(
                &test,
                &format!("it needs the v1 {ctl} hierarchy at {}", top.display()),
            );
            return None;
        }
        let dir = top.join(format!("crust-props-{}-{tag}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        if ctl == "cpuset" {
            // A child's cpus and mems must be within its parent's.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                fs::write(dir.join(f), read(&top, f)).unwrap();
            }
        }
        Some(TestCg(dir))
    }
    fn child(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        fs::create_dir(&d).unwrap();
        d
    }
}

impl Drop for TestCg {
    fn drop(&mut self) {
        if let Ok(rd) = fs::read_dir(&self.0) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

fn prop<'a>(p: &'a DirProps, name: &str) -> &'a CgroupPropEntry {
    p.props.iter().find(|e| e.name == name).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn kernel_pids_and_perms_come_back() {
    let Some(cg) = TestCg::new("pids", "perms") else {
        return;
    };
    let a = cg.child("a");
    fs::write(a.join("pids.max"), "7").unwrap();
    fs::write(a.join("notify_on_release"), "1").unwrap();
    let f = File::open(a.join("notify_on_release")).unwrap();
    std::os::unix::fs::fchown(&f, Some(1000), Some(1000)).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o666))
        .unwrap();
    let procs = File::open(a.join("cgroup.procs")).unwrap();
    std::os::unix::fs::fchown(&procs, Some(1000), Some(1000)).unwrap();
    let cnames = ["pids".to_string()];
    let got = read_dir_props(&a, &cnames, &PropsConfig::builtin()).unwrap();
    assert!(got.threaded);
    assert_eq!(prop(&got, "pids.max").value, "7");
    assert_eq!(prop(&got, "tasks").value, "");
    let n = prop(&got, "notify_on_release");
    assert_eq!(n.value, "1");
    assert_eq!(
        n.perms.as_ref().map(|p| (p.mode & 0o7777, p.uid)),
        Some((0o666, 1000))
    );
    let dir_perms = perms_of(&a).unwrap();

    let b = cg.child("b");
    restore_special(&b, &got.props).unwrap();
    assert_eq!(restore_regular(&b, &got.props).unwrap(), None);
    restore_dir_perms(&b, &dir_perms).unwrap();
    assert_eq!(read(&b, "pids.max"), "7");
    assert_eq!(read(&b, "notify_on_release"), "1");
    let m = fs::metadata(b.join("notify_on_release")).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid(), m.gid()), (0o666, 1000, 1000));
    assert_eq!(fs::metadata(b.join("cgroup.procs")).unwrap().uid(), 1000);
    assert_eq!(fs::metadata(b.join("tasks")).unwrap().uid(), 0);
    // "max" comes back too.
    fs::write(a.join("pids.max"), "max").unwrap();
    let got = read_dir_props(&a, &cnames, &PropsConfig::builtin()).unwrap();
    restore_regular(&b, &got.props).unwrap();
    assert_eq!(read(&b, "pids.max"), "max");
}

#[test]
fn kernel_devices_list_comes_back() {
    let Some(cg) = TestCg::new("devices", "list") else {
        return;
    };
    let a = cg.child("a");
    fs::write(a.join("devices.deny"), "a").unwrap();
    fs::write(a.join("devices.allow"), "c 1:3 rwm").unwrap();
    fs::write(a.join("devices.allow"), "b 7:* r").unwrap();
    let got = read_dir_props(&a, &["devices".into()], &PropsConfig::builtin()).unwrap();
    let list = prop(&got, "devices.list").value.clone();
    assert_eq!(list.lines().count(), 2, "{list:?}");
    let b = cg.child("b");
    restore_special(&b, &got.props).unwrap();
    restore_regular(&b, &got.props).unwrap();
    assert_eq!(read(&b, "devices.list"), list);
    // An empty list: everything denied.
    fs::write(a.join("devices.deny"), "a").unwrap();
    let got = read_dir_props(&a, &["devices".into()], &PropsConfig::builtin()).unwrap();
    let c = cg.child("c");
    restore_special(&c, &got.props).unwrap();
    assert_eq!(read(&c, "devices.list"), "");
}

#[test]
fn kernel_cpuset_memory_cpu_come_back() {
    for (ctl, set) in [
        (
            "cpuset",
            &[
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0"),
                ("cpuset.memory_migrate", "1"),
            ][..],
        ),
        (
            "memory",
            &[
                ("memory.limit_in_bytes", "67108864"),
                ("memory.soft_limit_in_bytes", "33554432"),
            ][..],
        ),
        (
            "cpu",
            &[
                ("cpu.cfs_period_us", "50000"),
                ("cpu.cfs_quota_us", "20000"),
                ("cpu.shares", "512"),
            ][..],
        ),
    ] {
        let Some(cg) = TestCg::new(ctl, "values") else {
            return;
        };
        let a = cg.child("a");
        for (n, v) in set {
            fs::write(a.join(n), v).unwrap();
        }
        let got = read_dir_props(&a, &[ctl.to_string()], &PropsConfig::builtin()).unwrap();
        let b = cg.child("b");
        restore_special(&b, &got.props).unwrap();
        restore_regular(&b, &got.props).unwrap();
        for (n, v) in set {
            assert_eq!(read(&b, n), *v, "{ctl}: {n}");
        }
        if ctl == "memory" {
            // "Unlimited" went to the image as -1 and came back.
            let m = prop(&got, "memory.memsw.limit_in_bytes");
            assert!(m.value == "-1" || m.value.parse::<u64>().is_ok(), "{m:?}");
        }
    }
}

#[test]
fn kernel_refused_value_names_cgroup_and_property() {
    let Some(cg) = TestCg::new("pids", "refused") else {
        return;
    };
    let b = cg.child("b");
    let bad = CgroupPropEntry {
        name: "pids.max".into(),
        value: "lots".into(),
        ..Default::default()
    };
    let e = restore_regular(&b, &[bad]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("pids.max") && msg.contains(&b.display().to_string()),
        "{msg}"
    );
    assert!(matches!(e, PropsError::Write { .. }));
    let absent = CgroupPropEntry {
        name: "pids.nothing".into(),
        value: "1".into(),
        ..Default::default()
    };
    assert!(matches!(
        restore_regular(&b, &[absent]),
        Err(PropsError::Open { .. })
    ));
}

#[test]
fn kernel_v2_globals_come_back() {
    let test = crust_sys::testing::current_test();
    if !crust_sys::testing::require_root(&test) {
        return;
    }
    let top = Path::new("/sys/fs/cgroup/unified");
    if !top.join("cgroup.subtree_control").exists() {
        crust_sys::testing::skip(&test, "it needs cgroup v2 at /sys/fs/cgroup/unified");
        return;
    }
    let cg = TestCg(top.join(format!("crust-props-{}-v2", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let a = cg.child("a");
    fs::write(a.join("cgroup.max.depth"), "3").unwrap();
    fs::write(a.join("cgroup.max.descendants"), "5").unwrap();
    // Only a controller the machine already hands down to the test's dir
    // (the test changes nothing above it).
    let ctl = read(&cg.0, "cgroup.controllers");
    let one = ctl.split_whitespace().next().map(str::to_string);
    if let Some(c) = &one {
        // A controller the parent hands down, for a's subtree_control.
        fs::write(cg.0.join("cgroup.subtree_control"), format!("+{c}")).unwrap();
        fs::write(a.join("cgroup.subtree_control"), format!("+{c}")).unwrap();
    }
    let got = read_dir_props(&a, &[String::new()], &PropsConfig::builtin()).unwrap();
    assert!(!got.threaded);
    assert_eq!(prop(&got, "cgroup.type").value, "domain");
    let b = cg.child("b");
    restore_special(&b, &got.props).unwrap();
    restore_regular(&b, &got.props).unwrap();
    assert_eq!(read(&b, "cgroup.max.depth"), "3");
    assert_eq!(read(&b, "cgroup.max.descendants"), "5");
    assert_eq!(read(&b, "cgroup.subtree_control"), one.unwrap_or_default());
    // subtree_control is set from what it holds: nothing stays on.
    let none = CgroupPropEntry {
        name: "cgroup.subtree_control".into(),
        ..Default::default()
    };
    restore_regular(&b, &[none]).unwrap();
    assert_eq!(read(&b, "cgroup.subtree_control"), "");
}
