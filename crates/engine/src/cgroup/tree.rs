//! What the dump and the restore of cgroups share: a hierarchy and its
//! directory tree (`cg_controller_entry`, `cgroup_dir_entry`), the lines
//! of `/proc/PID/cgroup`, and the checks of names read from an image.

use super::{CgroupPerms, CgroupPropEntry};
use crust_images::proto::{CgControllerEntry, CgroupDirEntry};

/// One cgroup directory: `name` is a single path component, or for a
/// top directory of a hierarchy its path from the hierarchy's root without
/// the leading `/` (empty: the root itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CgroupDir {
    pub name: String,
    /// Mode (with the type bits, as CRIU's `st_mode`), owner and group.
    pub perms: Option<CgroupPerms>,
    /// Controller properties (filled by the properties hooks).
    pub props: Vec<CgroupPropEntry>,
    pub children: Vec<CgroupDir>,
}

/// One hierarchy: its controllers as `/proc/PID/cgroup` names them
/// (`cpu`, `cpuacct`; `name=systemd` for a named one; one empty name for
/// cgroup v2) and the directories dumped in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Controller {
    pub cnames: Vec<String>,
    pub dirs: Vec<CgroupDir>,
    /// Threads may be in other cgroups than their process's (every v1
    /// hierarchy; a v2 one whose cgroups are threaded).
    pub is_threaded: bool,
}

impl CgroupDir {
    pub(crate) fn to_entry(&self) -> CgroupDirEntry {
        CgroupDirEntry {
            dir_name: self.name.clone(),
            children: self.children.iter().map(CgroupDir::to_entry).collect(),
            properties: self.props.clone(),
            dir_perms: self.perms.clone(),
            ..Default::default()
        }
    }

    /// From an image entry, checked: `top` for a hierarchy's top
    /// directory (a relative path), else one component.
    pub(crate) fn from_entry(e: &CgroupDirEntry, top: bool, depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("cgroup directories nested deeper than {MAX_DEPTH}"));
        }
        let ok = if top {
            e.dir_name.is_empty() || check_rel(&e.dir_name).is_ok()
        } else {
            check_component(&e.dir_name).is_ok()
        };
        if !ok {
            return Err(format!("bad cgroup directory name {:?}", e.dir_name));
        }
        let children = e
            .children
            .iter()
            .map(|c| CgroupDir::from_entry(c, false, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CgroupDir {
            name: e.dir_name.clone(),
            perms: e.dir_perms.clone(),
            props: e.properties.clone(),
            children,
        })
    }
}

/// Deepest cgroup tree an image may describe.
const MAX_DEPTH: usize = 256;

impl Controller {
    pub(crate) fn to_entry(&self) -> CgControllerEntry {
        CgControllerEntry {
            cnames: self.cnames.clone(),
            dirs: self.dirs.iter().map(CgroupDir::to_entry).collect(),
            is_threaded: Some(self.is_threaded),
            ..Default::default()
        }
    }

    pub(crate) fn from_entry(e: &CgControllerEntry) -> Result<Self, String> {
        if e.cnames.is_empty() {
            return Err("a cgroup controller entry names no controller".into());
        }
        for n in &e.cnames {
            if n.contains(['/', ',', '\0']) || (n.is_empty() && e.cnames.len() > 1) {
                return Err(format!("bad cgroup controller name {n:?}"));
            }
        }
        let dirs = e
            .dirs
            .iter()
            .map(|d| CgroupDir::from_entry(d, true, 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Controller {
            cnames: e.cnames.clone(),
            dirs,
            is_threaded: e.is_threaded.unwrap_or(false),
        })
    }

    /// cgroup v2 (the unified hierarchy).
    pub(crate) fn is_v2(&self) -> bool {
        self.cnames.first().is_some_and(String::is_empty)
    }

    /// Whether this hierarchy is the one `name` (a `/proc/PID/cgroup`
    /// name, or a `--cgroup-root` controller) names: each of its
    /// controllers is one of `name`'s comma-separated words.
    pub(crate) fn named_by(&self, name: &str) -> bool {
        named_by(&self.cnames, name)
    }

    /// The controllers of this hierarchy `name` names (some or all).
    pub(crate) fn some_named_by(&self, name: &str) -> bool {
        if self.is_v2() {
            return name.is_empty();
        }
        self.cnames.iter().any(|c| name.split(',').any(|w| w == c))
    }
}

/// [`Controller::named_by`] of a hierarchy of controllers `cnames`.
pub(crate) fn named_by(cnames: &[String], name: &str) -> bool {
    if cnames.first().is_some_and(String::is_empty) {
        return name.is_empty();
    }
    cnames.iter().all(|c| name.split(',').any(|w| w == c))
}

/// The directory a yard mounts the hierarchy `name` (as
/// `/proc/PID/cgroup` names it) on, as CRIU names it: the controllers
/// joined by commas, `name=` dropped, `unified` for cgroup v2.
pub(crate) fn yard_name(name: &str) -> String {
    if name.is_empty() {
        return "unified".into();
    }
    name.split(',')
        .map(|w| w.strip_prefix("name=").unwrap_or(w))
        .collect::<Vec<_>>()
        .join(",")
}

/// One line of `/proc/PID/task/TID/cgroup`: (controllers, path), the
/// hierarchy id dropped.
pub(crate) fn parse_cgroup_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(name), Some(path)) = (f.next(), f.next(), f.next()) else {
            return Err(format!("cannot parse cgroup line {line:?}"));
        };
        if !path.starts_with('/') {
            return Err(format!("cgroup line {line:?}: the path is not absolute"));
        }
        out.push((name.to_string(), path.to_string()));
    }
    // CRIU keeps a set's controllers sorted by name.
    out.sort();
    Ok(out)
}

/// A path component an image may give: no `/`, `.`, `..` or NUL.
pub(crate) fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\0']) {
        return Err(format!("bad cgroup name {c:?}"));
    }
    Ok(())
}

/// A relative path an image may give: components checked, not empty.
pub(crate) fn check_rel(p: &str) -> Result<(), String> {
    p.split('/').try_for_each(check_component)
}

/// A cgroup path (from the hierarchy's root): `/` or `/A/B`, components
/// checked: it cannot leave the hierarchy.
pub(crate) fn check_abs(p: &str) -> Result<(), String> {
    match p.strip_prefix('/') {
        Some("") => Ok(()),
        Some(rest) => check_rel(rest).map_err(|e| format!("cgroup path {p:?}: {e}")),
        None => Err(format!("cgroup path {p:?} is not absolute")),
    }
}

/// `path` relative to `root` (both checked absolute cgroup paths), or
/// `None` when it is not under it (component-wise).
pub(crate) fn under<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines_are_sorted_by_controller() {
        let v = parse_cgroup_file("2:name=systemd:/a\n1:cpu,cpuacct:/b/c\n0::/d\n").unwrap();
        assert_eq!(
            v,
            vec![
                ("".into(), "/d".into()),
                ("cpu,cpuacct".into(), "/b/c".into()),
                ("name=systemd".into(), "/a".into())
            ]
        );
        assert!(parse_cgroup_file("garbage\n").is_err());
        assert!(parse_cgroup_file("1:cpu:rel\n").is_err());
    }

    #[test]
    fn paths_from_images_cannot_escape() {
        assert!(check_abs("/").is_ok());
        assert!(check_abs("/a/b").is_ok());
        for bad in ["a", "/a/../b", "/..", "/a//b", "/a/", "/./a", "/a\0"] {
            assert!(check_abs(bad).is_err(), "{bad:?}");
        }
        assert!(check_rel("a/b").is_ok());
        assert!(check_rel("../a").is_err());
        assert!(check_rel("/a").is_err());
        assert!(check_component("a/b").is_err());
    }

    #[test]
    fn hierarchies_are_matched_by_whole_words() {
        let c = Controller {
            cnames: vec!["cpu".into(), "cpuacct".into()],
            ..Default::default()
        };
        assert!(c.named_by("cpu,cpuacct"));
        assert!(c.named_by("cpuacct,cpu"));
        assert!(!c.named_by("cpu"));
        assert!(c.some_named_by("cpu"));
        assert!(!c.some_named_by("cpuset"));
        assert_eq!(yard_name("cpu,cpuacct"), "cpu,cpuacct");
        let v2 = Controller {
            cnames: vec![String::new()],
            ..Default::default()
        };
        assert!(v2.named_by("") && !v2.named_by("cpu"));
        assert_eq!(yard_name(""), "unified");
        assert_eq!(yard_name("name=zdtmtst"), "zdtmtst");
    }

    #[test]
    fn paths_under_a_root() {
        assert_eq!(under("/a/b", "/a"), Some("b"));
        assert_eq!(under("/a", "/a"), Some(""));
        assert_eq!(under("/ab", "/a"), None);
        assert_eq!(under("/a/b", "/"), Some("a/b"));
    }

    #[test]
    fn image_dirs_are_checked() {
        let e = CgroupDirEntry {
            dir_name: "a/b".into(),
            children: vec![CgroupDirEntry {
                dir_name: "..".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(CgroupDir::from_entry(&e, true, 0).is_err());
        let ok = CgroupDirEntry {
            dir_name: "a/b".into(),
            ..Default::default()
        };
        assert!(CgroupDir::from_entry(&ok, true, 0).is_ok());
        assert!(CgroupDir::from_entry(&ok, false, 0).is_err());
    }
}
