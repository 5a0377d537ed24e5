use super::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[test]
fn prefixes_as_criu_computes_them() {
    assert_eq!(cgns_prefix("/foo/bar", "/bar").unwrap(), Some(4));
    assert_eq!(cgns_prefix("/a/b/c", "/c").unwrap(), Some(4));
    assert_eq!(cgns_prefix("/foo", "/").unwrap(), Some(4));
    assert_eq!(cgns_prefix("/", "/").unwrap(), None);
    assert_eq!(cgns_prefix("/x/y", "/x/y").unwrap(), None);
    // Not a whole-component suffix, longer than the outside, or outside
    // the namespace's root: refused.
    assert!(cgns_prefix("/foobar", "/bar").is_err());
    assert!(cgns_prefix("/bar", "/foo/bar").is_err());
    assert!(cgns_prefix("/foo/bar", "/../bar").is_err());
    assert!(cgns_prefix("/foo/bar", "bar").is_err());
    assert_eq!(split_at_prefix("/foo/bar", Some(4)), Some(("/foo", "/bar")));
    assert_eq!(split_at_prefix("/foo", Some(4)), Some(("/foo", "")));
    assert_eq!(split_at_prefix("/foo/bar", None), None);
    assert_eq!(split_at_prefix("/foo/bar", Some(0)), None);
    assert_eq!(split_at_prefix("/foo/bar", Some(3)), None);
    assert_eq!(split_at_prefix("/f", Some(9)), None);
    let l = parse_lines("12:pids:/a\n1:cpu,cpuacct:/\n0::/x:y\n");
    assert_eq!(l.len(), 3);
    assert_eq!(
        (l[1].name.as_str(), l[1].path.as_str()),
        ("cpu,cpuacct", "/")
    );
    assert_eq!((l[2].name.as_str(), l[2].path.as_str()), ("", "/x:y"));
}

/// A pids cgroup of the test's own with a child "in", and a shell that
/// entered the top, unshared its cgroup namespace there, then entered
/// "in": killed and removed when dropped.
struct InNs {
    top: PathBuf,
    child: Child,
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(self.top.join("in"));
        let _ = std::fs::remove_dir(&self.top);
    }
}

#[test]
fn kernel_prefix_of_a_task_in_its_own_namespace() {
    let test = crust_sys::testing::current_test();
    if !crust_sys::testing::require_root(&test) {
        return;
    }
    let pids = std::path::Path::new("/sys/fs/cgroup/pids");
    if !pids.join("tasks").exists() {
        crust_sys::testing::skip(&test, "it needs the v1 pids hierarchy");
        return;
    }
    let name = format!("crust-cgns-{}", std::process::id());
    let top = pids.join(&name);
    std::fs::create_dir_all(top.join("in")).unwrap();
    let script = format!(
        "echo $$ > {t}/cgroup.procs && exec unshare -C sh -c 'echo $$ > {t}/in/cgroup.procs && exec sleep 60'",
        t = top.display()
    );
    let child = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let pid = child.id() as i32;
    let g = InNs { top, child };
    let want = format!("/{name}/in");
    let t0 = Instant::now();
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let moved = parse_lines(&now)
            .iter()
            .any(|l| l.name == "pids" && l.path == want);
        if moved && own_namespace(pid).unwrap_or(false) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the shell did not get into {want}: {now}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let inside = parse_lines(&inside_view(pid).unwrap());
    let p = inside.iter().find(|l| l.name == "pids").unwrap();
    assert_eq!(p.path, "/in");
    let got = prefixes(pid).unwrap();
    let pfx = got.iter().find(|(n, _)| n == "pids").map(|(_, p)| *p);
    assert_eq!(pfx, Some(name.len() as u32 + 1));
    assert_eq!(
        split_at_prefix(&want, pfx),
        Some((&*format!("/{name}"), "/in"))
    );
    // crust's own tasks share its namespace: no prefix at all.
    assert!(prefixes(std::process::id() as i32).unwrap().is_empty());
    drop(g);
}
