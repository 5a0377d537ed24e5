//! The dump of cgroups: css sets of every task and thread, and, when a
//! task is in a set other than crust's, `cgroup.img` (CRIU's rules: every
//! set but crust's; every hierarchy crust is in, and the named ones the
//! tasks' sets add; in each, the directories under the tasks' cgroups,
//! empty ones too, walked from `--cgroup-root` when given). Nothing is
//! changed on the machine: the hierarchies are read through mounts crust
//! makes detached.

use super::props::{PropsConfig, PropsError};
use super::tree::{check_abs, parse_cgroup_file, CgroupDir, Controller};
use super::yard::Hierarchy;
use super::{Mode, CRUST_SET};
use crate::error::Error;
use crate::options::Options;
use crust_images::image::ImageType;
use crust_images::proto::CoreEntry;
use crust_images::proto::{CgMemberEntry, CgSetEntry, CgroupEntry, CgroupPerms};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One css set: (controllers, path, cgns prefix) sorted by controllers.
type Ctls = Vec<(String, String, Option<u32>)>;

/// The sets seen so far; the first is crust's own.
pub(crate) struct CgDump {
    mode: Mode,
    sets: Vec<Ctls>,
    /// The set of each thread, by host tid.
    of_tid: HashMap<i32, u32>,
    yard: Option<PathBuf>,
    roots: Vec<(Option<String>, String)>,
    /// The properties kept per controller (--cgroup-props...).
    props: PropsConfig,
    /// The cgns prefix of each hierarchy (by its controllers' name) where
    /// the root is in a cgroup namespace of its own; every task's set but
    /// crust's takes it (CRIU: there is one cgroup namespace in a tree).
    cgns: Vec<(String, u32)>,
}

fn read_cgroups(pid: i32, tid: i32) -> Result<Ctls, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/task/{tid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        op: "cannot read the cgroups of",
        path: path.clone(),
        source,
    })?;
    let ctls = parse_cgroup_file(&text)
        .map_err(|why| Error::unsupported(format!("{}: {why}", path.display())))?;
    Ok(ctls.into_iter().map(|(n, p)| (n, p, None)).collect())
}

impl CgDump {
    /// crust's own set first (set 1).
    fn new(opts: &Options) -> Result<CgDump, Error> {
        let me = std::process::id() as i32;
        Ok(CgDump {
            mode: Mode::of(opts)?,
            sets: vec![read_cgroups(me, me)?],
            of_tid: HashMap::new(),
            yard: opts.cgroup_yard.as_deref().map(|y| opts.in_work_dir(y)),
            roots: opts.cgroup_roots.clone(),
            props: PropsConfig::of_options(opts).map_err(PropsError::into_error)?,
            cgns: Vec::new(),
        })
    }

    /// The sets of the threads of `procs` (pid, its seized threads; none
    /// for a zombie), in the walk's order (parents first), numbered as
    /// CRIU numbers them.
    pub(crate) fn collect<'a>(
        opts: &Options,
        procs: impl Iterator<Item = (i32, &'a Vec<crust_compel::Task>)>,
    ) -> Result<CgDump, Error> {
        let mut cg = CgDump::new(opts)?;
        if opts.unprivileged {
            // As CRIU: no sets, no cgroup.img.
            return Ok(cg);
        }
        let mut procs = procs.peekable();
        if let Some((root, _)) = procs.peek() {
            // The root's view of its cgroups (read from inside its cgroup
            // namespace): where it differs from crust's, the namespace's
            // root is recorded.
            cg.cgns = super::ns::prefixes(*root)?;
            for (name, p) in &cg.cgns {
                log::info!("task {root}: cgroup namespace of {name} at {p} bytes of its path");
            }
        }
        for (pid, threads) in procs {
            for t in threads {
                let s = cg.set_of(pid, t.pid())?;
                cg.of_tid.insert(t.pid(), s);
            }
        }
        Ok(cg)
    }

    /// Name thread `tid`'s set in its core.
    pub(crate) fn record(&self, tid: i32, core: &mut CoreEntry) {
        if let Some(tc) = core.thread_core.as_mut() {
            tc.cg_set = self.of_tid.get(&tid).copied();
        }
    }

    /// The set of thread `tid` of process `pid`, numbered as CRIU.
    fn set_of(&mut self, pid: i32, tid: i32) -> Result<u32, Error> {
        let mut ctls = read_cgroups(pid, tid)?;
        for (name, p, prefix) in &mut ctls {
            check_abs(p).map_err(|why| {
                Error::unsupported(format!(
                    "task {tid} is in a cgroup crust cannot name: {why}"
                ))
            })?;
            if let Some((_, n)) = self.cgns.iter().find(|(c, _)| c == name) {
                if super::ns::split_at_prefix(p, Some(*n)).is_none() {
                    return Err(Error::unsupported(format!(
                        "task {tid} is in cgroup {p} of {name}, outside the cgroup namespace of the tree's root (its first {n} bytes): crust dumps one cgroup namespace per tree, as CRIU"
                    )));
                }
                *prefix = Some(*n);
            }
        }
        let i = match self.sets.iter().position(|s| *s == ctls) {
            Some(i) => i,
            None => {
                self.sets.push(ctls);
                self.sets.len() - 1
            }
        };
        Ok(CRUST_SET + i as u32)
    }

    /// Write `cgroup.img` into `dir` when a task is in a set other than
    /// crust's (else nothing, as CRIU).
    pub(crate) fn write(self, dir: &Path) -> Result<(), Error> {
        if self.sets.len() <= 1 {
            log::info!("All tasks in crust's cgroups: no cgroup.img");
            return Ok(());
        }
        let entry = self.entry()?;
        crate::util::write_image(dir, ImageType::Cgroup, 0, &[entry])
    }

    fn entry(&self) -> Result<CgroupEntry, Error> {
        let mut ctrls = own_controllers()?;
        // The cgroups to walk, per hierarchy.
        let mut roots: Vec<BTreeSet<String>> = vec![BTreeSet::new(); ctrls.len()];
        for set in self.sets.iter().skip(1) {
            for (name, path, _) in set {
                let i = match ctrls.iter().position(|c| c.named_by(name)) {
                    Some(i) => i,
                    None if name.starts_with("name=") => {
                        ctrls.push(Controller {
                            cnames: vec![name.clone()],
                            ..Default::default()
                        });
                        roots.push(BTreeSet::new());
                        ctrls.len() - 1
                    }
                    None => {
                        return Err(Error::unsupported(format!(
                            "a task is in cgroup {path} of controller {name}, a hierarchy crust is not in: run crust in that hierarchy too"
                        )))
                    }
                };
                if let Some(r) = roots.get_mut(i) {
                    r.insert(self.walk_root(name, path)?);
                }
            }
        }
        if self.mode != Mode::Ignore {
            for (c, r) in ctrls.iter_mut().zip(roots.iter()) {
                self.walk(c, r)?;
            }
        }
        let sets = self
            .sets
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| CgSetEntry {
                id: CRUST_SET + i as u32,
                ctls: s
                    .iter()
                    .map(|(n, p, prefix)| CgMemberEntry {
                        name: n.clone(),
                        path: p.clone(),
                        cgns_prefix: *prefix,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        Ok(CgroupEntry {
            sets,
            controllers: ctrls.iter().map(Controller::to_entry).collect(),
            ..Default::default()
        })
    }

    /// Where the walk of `name`'s cgroups starts for a task in `path`:
    /// `--cgroup-root` (this controller's, else the global one; the first
    /// given), else the task's cgroup.
    fn walk_root(&self, name: &str, path: &str) -> Result<String, Error> {
        let given = self
            .roots
            .iter()
            .find(|(c, _)| c.as_deref() == Some(name))
            .or_else(|| self.roots.iter().find(|(c, _)| c.is_none()));
        let root = given.map_or(path, |(_, r)| r.as_str());
        let root = if root.len() > 1 {
            root.trim_end_matches('/')
        } else {
            root
        };
        check_abs(root).map_err(|why| {
            Error::refused(
                crate::error::ErrorKind::InvalidRequest,
                format!("--cgroup-root: {why}"),
            )
        })?;
        Ok(root.to_string())
    }

    /// Read the directories under `roots` (the outermost of them) into
    /// `c.dirs`.
    fn walk(&self, c: &mut Controller, roots: &BTreeSet<String>) -> Result<(), Error> {
        if roots.is_empty() {
            return Ok(());
        }
        let name = c.cnames.join(",");
        if self.props.should_skip_controller(&name) {
            // --cgroup-dump-controller names others: the hierarchy and the
            // tasks' places in it are recorded, its directories are not
            // (CRIU's meaning).
            log::info!(
                "cgroup hierarchy {name:?}: directories not dumped (--cgroup-dump-controller)"
            );
            return Ok(());
        }
        let h = Hierarchy::open(&c.cnames.join(","), self.yard.as_deref())?;
        let outer: Vec<&String> = roots
            .iter()
            .filter(|r| {
                !roots
                    .iter()
                    .any(|o| o != *r && super::tree::under(r, o).is_some())
            })
            .collect();
        for r in outer {
            let rel = r.trim_start_matches('/');
            let path = h.path(rel);
            let Some(mut d) = walk_dir(c, &path, rel.to_string(), &self.props, 0)? else {
                return Err(Error::unsupported(format!(
                    "cgroup {r} of {} is gone (or --cgroup-root names none)",
                    c.cnames.join(",")
                )));
            };
            d.name = rel.to_string();
            c.dirs.push(d);
        }
        c.is_threaded = threaded(c, &h, roots);
        Ok(())
    }
}

/// The hierarchies crust is in (`/proc/self/cgroup`), named ones aside,
/// in its order, as CRIU lists them.
fn own_controllers() -> Result<Vec<Controller>, Error> {
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(|source| Error::Io {
        op: "cannot read",
        path: "/proc/self/cgroup".into(),
        source,
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(names) = line.split(':').nth(1) else {
            continue;
        };
        let cnames: Vec<String> = names
            .split(',')
            .filter(|w| !w.starts_with("name="))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            out.push(Controller {
                cnames: vec![String::new()],
                ..Default::default()
            });
        } else if !cnames.is_empty() {
            out.push(Controller {
                cnames,
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// The directory at `path` (cgroup `rel` of `c`) and everything under it;
/// `None` when it is gone (a cgroup removed meanwhile).
fn walk_dir(
    c: &Controller,
    path: &Path,
    name: String,
    cfg: &PropsConfig,
    depth: usize,
) -> Result<Option<CgroupDir>, Error> {
    use std::os::unix::fs::MetadataExt;
    let io = |op, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read the cgroup directory", e)),
    };
    if depth > 256 {
        return Err(Error::unsupported(format!(
            "cgroup directories nested too deep at {}",
            path.display()
        )));
    }
    let mut names = Vec::new();
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot list the cgroup directory", e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| io("cannot list the cgroup directory", e))?;
        if ent.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut children = Vec::new();
    for n in names {
        if let Some(d) = walk_dir(c, &path.join(&n), n, cfg, depth + 1)? {
            children.push(d);
        }
    }
    Ok(Some(CgroupDir {
        props: super::dump_props(c, path, cfg)?,
        name,
        perms: Some(CgroupPerms {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            ..Default::default()
        }),
        children,
    }))
}

/// CRIU's `is_threaded`: a v1 hierarchy (its cgroups have `tasks`), or a
/// v2 one whose walked cgroups are threaded.
fn threaded(c: &Controller, h: &Hierarchy, roots: &BTreeSet<String>) -> bool {
    roots.iter().any(|r| {
        let p = h.path(r.trim_start_matches('/'));
        if c.is_v2() {
            std::fs::read_to_string(p.join("cgroup.type")).is_ok_and(|t| t.trim() == "threaded")
        } else {
            p.join("tasks").exists()
        }
    })
}
