//! The restore of cgroups: `cgroup.img` read and checked ([`Plan`]), then,
//! once the pre-restore action ran, the hierarchies opened, the paths
//! moved under `--cgroup-root`, the directories made as the mode allows
//! ([`Made`], which removes the ones it made if the restore fails), and
//! each task and thread moved into its cgroups before it runs.

use super::tree::{check_abs, under, CgroupDir, Controller};
use super::yard::Hierarchy;
use super::{Mode, CRUST_SET};
use crate::error::{Error, ErrorKind};
use crate::options::Options;
use crust_images::image::ImageType;
use crust_images::proto::{CgroupEntry, CoreEntry};
use std::path::{Path, PathBuf};

/// One css set of the image: (controllers, path, cgns prefix).
type Ctls = Vec<(String, String, Option<u32>)>;

/// The css set a thread's core names (CRIU: the thread core's, else the
/// task core's).
pub(crate) fn set_of(core: &CoreEntry) -> Option<u32> {
    core.thread_core
        .as_ref()
        .and_then(|t| t.cg_set)
        .or_else(|| core.tc.as_ref().and_then(|t| t.cg_set))
}

/// `cgroup.img`, checked.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// crust's (the dumping tool's) set: its tasks stay where the restoring
    /// crust is.
    root_set: u32,
    pub(crate) sets: Vec<(u32, Ctls)>,
    ctrls: Vec<Controller>,
}

fn bad(dir: &Path, why: impl Into<String>) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

impl Plan {
    /// Read `cgroup.img` of `dir` if there is one; `root_set` is the
    /// inventory's `root_cg_set`.
    pub(crate) fn load(dir: &Path, root_set: Option<u32>) -> Result<Plan, Error> {
        if root_set == Some(0) {
            return Err(bad(dir, "inventory.img: root cgroup set 0"));
        }
        let root_set = root_set.unwrap_or(CRUST_SET);
        let name = ImageType::Cgroup.file_name(0);
        if std::fs::symlink_metadata(dir.join(&name)).is_err() {
            return Ok(Plan {
                root_set,
                ..Default::default()
            });
        }
        let entries: Vec<CgroupEntry> = crate::util::read_image(dir, ImageType::Cgroup, 0)?;
        let Some(e) = entries.first() else {
            return Ok(Plan {
                root_set,
                ..Default::default()
            });
        };
        if entries.len() > 1 {
            return Err(bad(dir, "cgroup.img has more than one entry"));
        }
        let ctrls = e
            .controllers
            .iter()
            .map(Controller::from_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| bad(dir, format!("cgroup.img: {why}")))?;
        let mut sets: Vec<(u32, Ctls)> = Vec::new();
        for s in &e.sets {
            if s.id == 0 || s.id == root_set || sets.iter().any(|(id, _)| *id == s.id) {
                return Err(bad(
                    dir,
                    format!("cgroup.img: bad or repeated set id {}", s.id),
                ));
            }
            let mut ctls = Vec::new();
            for m in &s.ctls {
                check_abs(&m.path)
                    .map_err(|w| bad(dir, format!("cgroup.img set {}: {w}", s.id)))?;
                let prefix = m.cgns_prefix.filter(|&p| p > 0);
                if prefix.is_some() && super::ns::split_at_prefix(&m.path, prefix).is_none() {
                    return Err(bad(
                        dir,
                        format!(
                            "cgroup.img set {}: the cgroup namespace prefix {} of {} is not a parent directory of its path {}",
                            s.id,
                            prefix.unwrap_or_default(),
                            m.name,
                            m.path
                        ),
                    ));
                }
                if !ctrls.iter().any(|c| c.named_by(&m.name)) {
                    return Err(bad(
                        dir,
                        format!(
                            "cgroup.img set {}: no hierarchy for controller {:?}",
                            s.id, m.name
                        ),
                    ));
                }
                ctls.push((m.name.clone(), m.path.clone(), prefix));
            }
            sets.push((s.id, ctls));
        }
        Ok(Plan {
            root_set,
            sets,
            ctrls,
        })
    }

    /// `cgroup.img` of `opts`'s images directory, before the rest is read
    /// (an images directory or inventory that cannot be read gives no
    /// cgroups here: the load of the images says what is wrong).
    pub(crate) fn load_for(opts: &Options) -> Result<Plan, Error> {
        use crust_images::proto::inventory::InventoryEntry;
        let Ok(dir) = std::fs::canonicalize(&opts.images_dir) else {
            return Ok(Plan::default());
        };
        match crate::util::read_one::<InventoryEntry>(&dir, ImageType::Inventory, 0) {
            Ok(inv) => Plan::load(&dir, inv.root_cg_set),
            Err(_) => Ok(Plan::default()),
        }
    }

    /// Check the set a task's core names (`None`: not recorded).
    pub(crate) fn check_set(&self, dir: &Path, tid: i32, set: Option<u32>) -> Result<(), Error> {
        match set {
            None | Some(0) => Ok(()),
            Some(s) if s == self.root_set || self.sets.iter().any(|(id, _)| *id == s) => Ok(()),
            Some(s) => Err(bad(
                dir,
                format!("task {tid} is in cgroup set {s}, which cgroup.img lacks"),
            )),
        }
    }

    /// Make what the mode allows (after the pre-restore action): the
    /// hierarchies opened, the directories made.
    pub(crate) fn prepare(&self, opts: &Options) -> Result<Made, Error> {
        let mode = Mode::of(opts)?;
        let mut made = Made {
            mode,
            root_set: self.root_set,
            sets: self.sets.clone(),
            ctrls: self.ctrls.clone(),
            open: Vec::new(),
            created: Vec::new(),
            kept: false,
        };
        if mode == Mode::Ignore || self.sets.is_empty() {
            return Ok(made);
        }
        made.rewrite_roots(&opts.cgroup_roots)?;
        for c in &made.ctrls {
            let yard = opts.cgroup_yard.as_deref().map(|y| opts.in_work_dir(y));
            made.open
                .push(Hierarchy::open(&c.cnames.join(","), yard.as_deref())?);
        }
        for i in 0..made.ctrls.len() {
            made.make_controller(i)?;
        }
        Ok(made)
    }
}

/// The cgroups a restore prepared; the directories it made are removed
/// on drop unless [`Made::keep`] was called.
pub(crate) struct Made {
    mode: Mode,
    root_set: u32,
    sets: Vec<(u32, Ctls)>,
    ctrls: Vec<Controller>,
    /// Same index as `ctrls` (empty when nothing is restored).
    open: Vec<Hierarchy>,
    created: Vec<PathBuf>,
    kept: bool,
}

impl Made {
    /// `--cgroup-root [CTRL:]PATH`: the top directories of a hierarchy,
    /// and the sets' paths under them, go to PATH (CRIU's rule: the
    /// hierarchy's own root, else the global one).
    fn rewrite_roots(&mut self, roots: &[(Option<String>, String)]) -> Result<(), Error> {
        let invalid = |w: String| Error::refused(ErrorKind::InvalidRequest, w);
        for (_, r) in roots {
            check_abs(r).map_err(|w| invalid(format!("--cgroup-root {r}: {w}")))?;
        }
        for c in &mut self.ctrls {
            let mut new: Option<&str> = None;
            for (ctl, r) in roots {
                let Some(ctl) = ctl else { continue };
                if c.some_named_by(ctl) {
                    if new.is_some_and(|n| n != r) {
                        return Err(invalid(format!(
                            "--cgroup-root: two roots for {}: {} and {r}",
                            c.cnames.join(","),
                            new.unwrap_or_default()
                        )));
                    }
                    new = Some(r);
                }
            }
            let global = roots.iter().rev().find(|(c, _)| c.is_none());
            let Some(new) = new.or(global.map(|(_, r)| r.as_str())) else {
                continue;
            };
            let Controller { cnames, dirs, .. } = c;
            for d in dirs.iter_mut() {
                let old = format!("/{}", d.name);
                let mut renamed: Option<String> = None;
                for (_, ctls) in &mut self.sets {
                    for (name, path, prefix) in ctls.iter_mut() {
                        if !super::tree::named_by(cnames, name) {
                            continue;
                        }
                        let Some(rest) = under(path, &old) else {
                            continue;
                        };
                        let moved = match prefix {
                            // In a cgroup namespace (CRIU's rule): the
                            // namespace's root becomes the new root, what
                            // is under it stays.
                            Some(p) => {
                                let at = usize::try_from(*p).unwrap_or(usize::MAX);
                                let base = new.trim_end_matches('/');
                                let tail = path.get(at..).unwrap_or_default();
                                let dir = old.get(at..).unwrap_or_default();
                                let len = u32::try_from(base.len()).map_err(|_| {
                                    invalid(format!("--cgroup-root {new}: too long"))
                                })?;
                                *path = format!("{base}{tail}");
                                if path.is_empty() {
                                    *path = "/".into();
                                }
                                *prefix = (len > 0).then_some(len);
                                format!("{base}{dir}")
                            }
                            None => {
                                *path = join(new, rest);
                                new.to_string()
                            }
                        };
                        renamed.get_or_insert(moved);
                    }
                }
                if let Some(to) = renamed {
                    log::info!("cgroup {old} of {} restored as {to}", cnames.join(","));
                    d.name = to.trim_start_matches('/').to_string();
                }
            }
        }
        Ok(())
    }

    fn make_controller(&mut self, i: usize) -> Result<(), Error> {
        let dirs = self
            .ctrls
            .get(i)
            .map(|c| c.dirs.clone())
            .unwrap_or_default();
        for d in &dirs {
            self.make_dir(i, d.name.clone(), d)?;
        }
        Ok(())
    }

    /// Directory `rel` of hierarchy `i` and those under it.
    fn make_dir(&mut self, i: usize, rel: String, d: &CgroupDir) -> Result<(), Error> {
        let (Some(path), Some(cn)) = (
            self.open.get(i).map(|h| h.path(&rel)),
            self.ctrls.get(i).map(|c| c.cnames.join(",")),
        ) else {
            return Ok(());
        };
        let what = format!("cgroup /{rel} of {cn}");
        let made_now = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                if self.mode == Mode::Strict {
                    return Err(Error::refused(
                        ErrorKind::Busy,
                        format!("{what} exists already (--manage-cgroups=strict restores into new cgroups only)"),
                    ));
                }
                if self.mode != Mode::None && !rel.is_empty() {
                    set_perms(&path, d)?;
                }
                false
            }
            Ok(_) => {
                return Err(Error::unsupported(format!("{what} is not a directory")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.mode.makes_dirs() {
                    return Err(Error::refused(
                        ErrorKind::FileMissing,
                        format!("{what} does not exist (--manage-cgroups none and props make no cgroup)"),
                    ));
                }
                self.mkdirs(i, &rel)?;
                log::info!("Created {what}");
                set_perms(&path, d)?;
                true
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "cannot look at the cgroup",
                    path,
                    source,
                })
            }
        };
        if let Some(c) = self.ctrls.get(i) {
            if made_now {
                super::restore_props_at_mkdir(c, &path, d)?;
            }
            if made_now || matches!(self.mode, Mode::Props | Mode::Full) {
                super::restore_props(c, &path, d, self.mode)?;
            }
        }
        for ch in &d.children {
            let r = if rel.is_empty() {
                ch.name.clone()
            } else {
                format!("{rel}/{}", ch.name)
            };
            self.make_dir(i, r, ch)?;
        }
        Ok(())
    }

    /// Make `rel` and its missing parents in hierarchy `i`, each recorded.
    fn mkdirs(&mut self, i: usize, rel: &str) -> Result<(), Error> {
        let Some(h) = self.open.get(i) else {
            return Ok(());
        };
        let mut cur = String::new();
        for comp in rel.split('/') {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(comp);
            let p = h.path(&cur);
            match std::fs::create_dir(&p) {
                Ok(()) => {
                    self.created.push(p.clone());
                    if self
                        .ctrls
                        .get(i)
                        .is_some_and(|c| c.cnames.iter().any(|n| n == "cpuset"))
                    {
                        cpuset_from_parent(&p)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "cannot make the cgroup",
                        path: p,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Move process `pid` (all its threads) into the cgroups of `set`.
    pub(crate) fn move_process(&self, pid: i32, set: u32) -> Result<(), Error> {
        self.move_task(pid, set, false)
    }

    /// Move thread `tid` into the cgroups of `set`, in the hierarchies
    /// where a thread may be elsewhere than its process.
    pub(crate) fn move_thread(&self, tid: i32, set: u32) -> Result<(), Error> {
        self.move_task(tid, set, true)
    }

    fn move_task(&self, tid: i32, set: u32, thread: bool) -> Result<(), Error> {
        if self.open.is_empty() || set == 0 || set == self.root_set {
            return Ok(());
        }
        let Some((_, ctls)) = self.sets.iter().find(|(id, _)| *id == set) else {
            return Err(Error::Restore {
                pid: tid,
                what: format!("cgroup set {set} is not in cgroup.img"),
            });
        };
        for (name, path, _) in ctls {
            let Some(i) = self.ctrls.iter().position(|c| c.named_by(name)) else {
                continue;
            };
            let (Some(c), Some(h)) = (self.ctrls.get(i), self.open.get(i)) else {
                continue;
            };
            let file = match (thread, c.is_v2()) {
                (false, _) => "cgroup.procs",
                (true, _) if !c.is_threaded => continue,
                (true, false) => "tasks",
                (true, true) => "cgroup.threads",
            };
            let p = h.path(path.trim_start_matches('/')).join(file);
            std::fs::write(&p, tid.to_string()).map_err(|source| Error::Io {
                op: "cannot move a restored task into its cgroup",
                path: PathBuf::from(format!("{name}:{path}/{file} (task {tid})")),
                source,
            })?;
        }
        Ok(())
    }

    /// The cgroup namespace the root makes for itself when its set (`set`,
    /// from its core) records one: the `cgroup.procs` of the namespace's
    /// root in each hierarchy with a prefix, opened now (None when the set
    /// has no prefix or cgroups are not restored: the root keeps crust's
    /// namespace, as CRIU).
    pub(crate) fn cgns_for_root(&self, set: Option<u32>) -> Result<Option<Cgns>, Error> {
        let Some(set) = set.filter(|&s| s != 0 && s != self.root_set) else {
            return Ok(None);
        };
        if self.open.is_empty() {
            return Ok(None);
        }
        let Some((_, ctls)) = self.sets.iter().find(|(id, _)| *id == set) else {
            return Ok(None);
        };
        let mut procs = Vec::new();
        for (name, path, prefix) in ctls {
            let Some((root, _)) = super::ns::split_at_prefix(path, *prefix) else {
                continue;
            };
            let Some(h) = self
                .ctrls
                .iter()
                .position(|c| c.named_by(name))
                .and_then(|i| self.open.get(i))
            else {
                continue;
            };
            let p = h.path(root.trim_start_matches('/')).join("cgroup.procs");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|source| Error::Io {
                    op: "cannot open, for the root's cgroup namespace, the cgroup",
                    path: PathBuf::from(format!("{name}:{root}/cgroup.procs")),
                    source,
                })?;
            log::info!("the root's cgroup namespace of {name} is made at {root}");
            procs.push(f);
        }
        Ok((!procs.is_empty()).then_some(Cgns { procs }))
    }

    /// The restore succeeded: the cgroups made stay.
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for p in self.created.iter().rev() {
            // The tasks just killed leave a cgroup a moment after they are
            // reaped (EBUSY until then).
            let mut r = std::fs::remove_dir(p);
            for _ in 0..50 {
                match &r {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        r = std::fs::remove_dir(p);
                    }
                    _ => break,
                }
            }
            if let Err(e) = r {
                log::warn!(
                    "cannot remove the cgroup {} made by the restore: {e}",
                    p.display()
                );
            }
        }
    }
}

/// The cgroup namespace of the restored root (CRIU's order: the root
/// enters the namespace's root cgroup in every hierarchy with a prefix,
/// unshares CLONE_NEWCGROUP there, and is moved into its own cgroups with
/// the rest of the tree).
#[derive(Debug)]
pub(crate) struct Cgns {
    procs: Vec<std::fs::File>,
}

impl Cgns {
    /// In the newly cloned root (single-threaded, before it runs anything
    /// of its own): system calls only.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        use std::io::Write;
        for mut f in &self.procs {
            // "0": the writing task itself.
            f.write_all(b"0")?;
        }
        crust_sys::ns::unshare(libc::CLONE_NEWCGROUP)
    }
}

/// A v1 cpuset cgroup is made with no CPUs and no memory nodes: no task
/// can go in until they are set. Until the dumped values are set (the
/// properties hooks, after this), it takes its parent's, as the kernel's
/// `cgroup.clone_children` would.
fn cpuset_from_parent(dir: &Path) -> Result<(), Error> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if !mine.trim().is_empty() {
            continue;
        }
        let theirs = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
        if theirs.trim().is_empty() {
            continue;
        }
        std::fs::write(dir.join(f), theirs.trim()).map_err(|source| Error::Io {
            op: "cannot set the cpuset of the new cgroup",
            path: dir.join(f),
            source,
        })?;
    }
    Ok(())
}

fn set_perms(path: &Path, d: &CgroupDir) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let Some(p) = &d.perms else {
        return Ok(());
    };
    let io = |source| Error::Io {
        op: "cannot set the owner and mode of the cgroup",
        path: path.to_path_buf(),
        source,
    };
    let r = std::os::unix::fs::chown(path, Some(p.uid), Some(p.gid)).and_then(|()| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(p.mode & 0o7777))
    });
    match r {
        // Removed meanwhile by its owner (a cgroup the tree is not in).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(io),
    }
}

/// `rest` (relative) under the root `root`.
fn join(root: &str, rest: &str) -> String {
    match (root, rest) {
        (r, "") => r.to_string(),
        ("/", r) => format!("/{r}"),
        (root, r) => format!("{}/{r}", root.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(ctrls: Vec<Controller>, sets: Vec<(u32, Ctls)>) -> Made {
        Made {
            mode: Mode::Soft,
            root_set: 1,
            sets,
            ctrls,
            open: Vec::new(),
            created: Vec::new(),
            kept: true,
        }
    }

    fn ctl(name: &str, dirs: &[&str]) -> Controller {
        Controller {
            cnames: vec![name.into()],
            dirs: dirs
                .iter()
                .map(|d| CgroupDir {
                    name: d.to_string(),
                    ..Default::default()
                })
                .collect(),
            is_threaded: true,
        }
    }

    #[test]
    fn cgroup_root_moves_sets_and_top_dirs() {
        // zdtm's cgroup02: dumped with name=zdtmtst:/prefix, restored with
        // /newroot and name=zdtmtst:/prefix.
        let mut m = made(
            vec![
                ctl("name=zdtmtst", &["prefix"]),
                ctl("name=zdtmtst.defaultroot", &["prefix/oldroot"]),
            ],
            vec![(
                2,
                vec![
                    ("name=zdtmtst".into(), "/prefix/oldroot".into(), None),
                    (
                        "name=zdtmtst.defaultroot".into(),
                        "/prefix/oldroot".into(),
                        None,
                    ),
                ],
            )],
        );
        m.rewrite_roots(&[
            (None, "/newroot".into()),
            (Some("name=zdtmtst".into()), "/prefix".into()),
        ])
        .unwrap();
        assert_eq!(m.ctrls[0].dirs[0].name, "prefix");
        assert_eq!(m.ctrls[1].dirs[0].name, "newroot");
        assert_eq!(m.sets[0].1[0].1, "/prefix/oldroot");
        assert_eq!(m.sets[0].1[1].1, "/newroot");
    }

    #[test]
    fn cgroup_root_moves_a_cgroup_namespace() {
        // LXC: the container's init in /lxc.payload.c (its namespace's
        // root), a child in /lxc.payload.c/sub; restored with
        // --cgroup-root /lxc.payload.d.
        let mut m = made(
            vec![ctl("pids", &["lxc.payload.c"])],
            vec![
                (2, vec![("pids".into(), "/lxc.payload.c".into(), Some(14))]),
                (
                    3,
                    vec![("pids".into(), "/lxc.payload.c/sub".into(), Some(14))],
                ),
            ],
        );
        m.rewrite_roots(&[(None, "/lxc.payload.d".into())]).unwrap();
        assert_eq!(m.ctrls[0].dirs[0].name, "lxc.payload.d");
        assert_eq!(m.sets[0].1[0].1, "/lxc.payload.d");
        assert_eq!(m.sets[0].1[0].2, Some(14));
        assert_eq!(m.sets[1].1[0].1, "/lxc.payload.d/sub");
        let mut m = made(
            vec![ctl("pids", &["a/b"])],
            vec![(2, vec![("pids".into(), "/a/b/c".into(), Some(2))])],
        );
        m.rewrite_roots(&[(None, "/x".into())]).unwrap();
        assert_eq!(m.ctrls[0].dirs[0].name, "x/b");
        assert_eq!(m.sets[0].1[0].1, "/x/b/c");
        assert_eq!(m.sets[0].1[0].2, Some(2));
    }

    #[test]
    fn bad_cgroup_roots_are_refused() {
        let mut m = made(
            vec![ctl("cpu", &["a"])],
            vec![(2, vec![("cpu".into(), "/a".into(), None)])],
        );
        assert!(m.rewrite_roots(&[(None, "../x".into())]).is_err());
        assert!(m
            .rewrite_roots(&[
                (Some("cpu".into()), "/x".into()),
                (Some("cpu".into()), "/y".into())
            ])
            .is_err());
    }

    #[test]
    fn image_sets_are_checked() {
        let dir = std::env::temp_dir().join(format!("crust-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = CgroupEntry {
            sets: vec![crust_images::proto::CgSetEntry {
                id: 2,
                ctls: vec![crust_images::proto::CgMemberEntry {
                    name: "cpu".into(),
                    path: "/a/../../etc".into(),
                    cgns_prefix: None,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            controllers: vec![ctl("cpu", &[]).to_entry()],
            ..Default::default()
        };
        crate::util::write_image(&dir, ImageType::Cgroup, 0, std::slice::from_ref(&e)).unwrap();
        let err = Plan::load(&dir, Some(1)).unwrap_err().to_string();
        assert!(err.contains(".."), "{err}");
        let mut ok = e;
        ok.sets[0].ctls[0].path = "/a".into();
        crate::util::write_image(&dir, ImageType::Cgroup, 0, &[ok]).unwrap();
        let p = Plan::load(&dir, Some(1)).unwrap();
        assert!(p.check_set(&dir, 5, Some(2)).is_ok());
        assert!(p.check_set(&dir, 5, Some(1)).is_ok());
        assert!(p.check_set(&dir, 5, Some(3)).is_err());
        assert!(Plan::load(&dir, Some(0)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
