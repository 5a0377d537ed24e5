//! `--freeze-cgroup DIR`: stop the tree through a freezer cgroup instead
//! of interrupting its tasks one by one.
//!
//! CRIU's way (facts from its seize.c): the cgroup is v1 if `DIR` has
//! `freezer.state` (THAWED, FREEZING, FROZEN), v2 if it has `cgroup.freeze`
//! (0 or 1; frozen once `cgroup.events` says `frozen 1`). Its state is
//! read first (FREEZING counts as frozen); a thawed cgroup is frozen and
//! waited for within `--timeout`. Every task of the cgroup and of the
//! cgroups below it (`tasks`, v2 `cgroup.threads`) is then seized and
//! interrupted while frozen, the cgroup is thawed, and each task comes to
//! its ptrace stop. The tree is then collected from /proc as usual, taking
//! the tasks seized here: a task of the tree outside the cgroup fails the
//! dump (as in CRIU). Tasks of the cgroup that are not in the tree stay
//! stopped during the dump and are let go with it. A cgroup that was
//! frozen before the dump is frozen again before the tree is let go, so
//! that it never runs (the kernel lets a tracer detach a frozen tracee).

use crate::error::ErrorKind;
use crate::Error;
use crust_compel::Task;
use log::{debug, info, warn};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest pause between two looks at a freezing cgroup.
const MAX_NAP: Duration = Duration::from_millis(100);

/// How often a v1 cgroup still FREEZING is asked again to freeze (v1's
/// freezer can miss a task that was busy forking or exiting).
const V1_RETRY: Duration = Duration::from_secs(1);

/// Cgroups walked at most under the freezer cgroup.
const MAX_CGROUPS: usize = 10_000;

/// A freezer cgroup, and whether it was frozen before crust came.
pub(super) struct Freezer {
    dir: PathBuf,
    v2: bool,
    was_frozen: bool,
}

impl Freezer {
    /// Look at the cgroup `dir`: its version and its state.
    pub(super) fn open(dir: &Path) -> Result<Freezer, Error> {
        let not_freezer = |why: &str| {
            Error::refused(
                ErrorKind::InvalidRequest,
                format!(
                    "--freeze-cgroup {}: {why}; give the tree's freezer cgroup directory (v1: \
                     /sys/fs/cgroup/freezer/..., v2: a cgroup2 directory other than the root)",
                    dir.display()
                ),
            )
        };
        let v2 = if dir.join("freezer.state").exists() {
            false
        } else if dir.join("cgroup.freeze").exists() {
            true
        } else if !dir.is_dir() {
            return Err(not_freezer("no such directory"));
        } else {
            return Err(not_freezer(
                "neither a v1 freezer cgroup (freezer.state) nor a v2 cgroup (cgroup.freeze)",
            ));
        };
        let mut f = Freezer {
            dir: dir.to_path_buf(),
            v2,
            was_frozen: false,
        };
        let state = f.state()?;
        f.was_frozen = state != State::Thawed;
        info!(
            "Freezer cgroup {} (v{}) is {state:?}",
            dir.display(),
            if v2 { 2 } else { 1 }
        );
        Ok(f)
    }

    fn control(&self) -> PathBuf {
        self.dir.join(if self.v2 {
            "cgroup.freeze"
        } else {
            "freezer.state"
        })
    }

    fn read(&self, name: &str) -> Result<String, Error> {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| Error::Io {
            op: "read freezer cgroup file",
            path,
            source,
        })
    }

    fn state(&self) -> Result<State, Error> {
        if !self.v2 {
            let s = self.read("freezer.state")?;
            return match s.trim() {
                "THAWED" => Ok(State::Thawed),
                "FREEZING" => Ok(State::Freezing),
                "FROZEN" => Ok(State::Frozen),
                other => Err(self.odd(format!("freezer.state reads {other:?}"))),
            };
        }
        match self.read("cgroup.freeze")?.trim() {
            "0" => return Ok(State::Thawed),
            "1" => {}
            other => return Err(self.odd(format!("cgroup.freeze reads {other:?}"))),
        }
        let events = self.read("cgroup.events")?;
        let frozen = events
            .lines()
            .find_map(|l| l.strip_prefix("frozen "))
            .map(str::trim);
        Ok(match frozen {
            Some("1") => State::Frozen,
            _ => State::Freezing,
        })
    }

    fn odd(&self, what: String) -> Error {
        Error::refused(
            ErrorKind::Internal,
            format!("freezer cgroup {}: {what}", self.dir.display()),
        )
    }

    fn write(&self, frozen: bool) -> Result<(), Error> {
        let v = match (self.v2, frozen) {
            (true, true) => "1",
            (true, false) => "0",
            (false, true) => "FROZEN",
            (false, false) => "THAWED",
        };
        let path = self.control();
        std::fs::write(&path, v).map_err(|source| Error::Io {
            op: if frozen {
                "freeze the cgroup through"
            } else {
                "thaw the cgroup through"
            },
            path,
            source,
        })
    }

    /// Freeze the cgroup (if it is not already) and wait until every task
    /// in it is frozen, within `timeout`. On failure the cgroup is put
    /// back as it was.
    fn freeze(&self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        if !self.was_frozen {
            self.write(true)?;
        }
        let mut nap = Duration::from_micros(100);
        let mut asked = Instant::now();
        loop {
            let st = match self.state() {
                Ok(s) => s,
                Err(e) => {
                    self.put_back();
                    return Err(e);
                }
            };
            if st == State::Frozen {
                debug!(
                    "cgroup {} frozen in {:?}",
                    self.dir.display(),
                    start.elapsed()
                );
                return Ok(());
            }
            // Asked to stop (SIGINT, SIGTERM...): the cgroup goes back first.
            if let Err(e) = crate::util::check_stop() {
                self.put_back();
                return Err(e);
            }
            if start.elapsed() > timeout {
                let stuck = self.unfrozen_hint();
                self.put_back();
                return Err(Error::refused(
                    ErrorKind::Interrupted,
                    format!(
                        "cgroup {} did not freeze within {}s (still {st:?}){stuck}; the tree was \
                         left running; find what keeps it from freezing, or raise --timeout",
                        self.dir.display(),
                        timeout.as_secs()
                    ),
                ));
            }
            if !self.v2 && asked.elapsed() > V1_RETRY {
                let _ = self.write(true);
                asked = Instant::now();
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(MAX_NAP);
        }
    }

    /// The tasks of the cgroup in uninterruptible sleep, to name in an
    /// error (a task in D state is what keeps a freezer from finishing).
    fn unfrozen_hint(&self) -> String {
        let Ok(tids) = self.tids() else {
            return String::new();
        };
        let d: Vec<String> = tids
            .iter()
            .filter(|t| {
                std::fs::read_to_string(format!("/proc/{t}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('D')))
                    .unwrap_or(false)
            })
            .map(|t| t.to_string())
            .collect();
        match d.is_empty() {
            true => String::new(),
            false => format!(" (tasks in uninterruptible sleep: {})", d.join(", ")),
        }
    }

    /// Every task (thread) id of the cgroup and of the cgroups below it.
    fn tids(&self) -> Result<Vec<i32>, Error> {
        let list = if self.v2 { "cgroup.threads" } else { "tasks" };
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        let mut seen = 0usize;
        while let Some(d) = dirs.pop() {
            seen += 1;
            if seen > MAX_CGROUPS {
                return Err(self.odd(format!("more than {MAX_CGROUPS} cgroups below it")));
            }
            let path = d.join(list);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                op: "read the tasks of cgroup",
                path,
                source,
            })?;
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            let rd = std::fs::read_dir(&d).map_err(|source| Error::Io {
                op: "list the cgroups below",
                path: d.clone(),
                source,
            })?;
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Put the cgroup's state back as it was before the dump (frozen or
    /// thawed). Failures are logged: this runs on the way out.
    pub(super) fn put_back(&self) {
        if let Err(e) = self.write(self.was_frozen) {
            warn!("could not put cgroup {} back: {e}", self.dir.display());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Thawed,
    Freezing,
    Frozen,
}

/// The tasks of a freezer cgroup, seized while it was frozen and now in
/// their ptrace stops; the tree takes its own, the rest stay here.
pub(super) struct Frozen {
    freezer: Freezer,
    tasks: HashMap<i32, Task>,
}

impl Frozen {
    /// Freeze the cgroup `dir`, seize every task in it, thaw it, and wait
    /// for each task's ptrace stop. On failure nothing stays seized and the
    /// cgroup is as it was.
    pub(super) fn take(dir: &Path, timeout: Duration) -> Result<Frozen, Error> {
        let freezer = Freezer::open(dir)?;
        freezer.freeze(timeout)?;
        let tids = match freezer.tids() {
            Ok(t) => t,
            Err(e) => {
                freezer.put_back();
                return Err(e);
            }
        };
        // Frozen, so none can fork or exit: seize them all. One that
        // fails is a zombie or a kernel thread (never frozen, never ours).
        let mut begun = Vec::with_capacity(tids.len());
        for &tid in &tids {
            match Task::begin_seize(tid) {
                Ok(()) => begun.push(tid),
                Err(e) => debug!("task {tid} of the freezer cgroup not seized: {e}"),
            }
        }
        // Thawed, each takes its pending interrupt and stops for crust.
        let thawed = freezer.write(false);
        let mut tasks = HashMap::with_capacity(begun.len());
        let mut first_err = thawed.err();
        if first_err.is_none() {
            for tid in begun {
                match Task::end_seize(tid, timeout) {
                    Ok(mut t) => {
                        t.set_timeout(Some(timeout));
                        tasks.insert(tid, t);
                    }
                    // It exited meanwhile (killed: a frozen task dies).
                    Err(crust_compel::Error::Exited { .. }) => {}
                    Err(e) => {
                        first_err.get_or_insert(crate::util::compel_err(tid)(e));
                    }
                }
            }
        }
        let frozen = Frozen { freezer, tasks };
        if let Some(e) = first_err {
            frozen.freezer.put_back();
            frozen.release();
            return Err(e);
        }
        info!(
            "Seized {} tasks of freezer cgroup {}",
            frozen.tasks.len(),
            dir.display()
        );
        Ok(frozen)
    }

    /// Hand the seized task `tid` to the tree; `None` if it was not seized
    /// here (not in the cgroup, or gone).
    pub(super) fn claim(&mut self, tid: i32) -> Option<Task> {
        self.tasks.remove(&tid)
    }

    /// Whether task `tid` was seized here and not claimed yet.
    pub(super) fn holds(&self, tid: i32) -> bool {
        self.tasks.contains_key(&tid)
    }

    /// Put the cgroup back as it was before the dump.
    pub(super) fn put_back(&self) {
        self.freezer.put_back();
    }

    /// The cgroup named on the command line.
    pub(super) fn dir(&self) -> &Path {
        &self.freezer.dir
    }

    /// Say which tasks of the cgroup are not in the tree (held stopped
    /// during the dump, let go with it, as CRIU does).
    pub(super) fn note_strays(&self) {
        let mut s: Vec<i32> = self.tasks.keys().copied().collect();
        s.sort_unstable();
        if !s.is_empty() {
            warn!(
                "{} task(s) of freezer cgroup {} are not in the dumped tree ({s:?}): \
                 they are held stopped during the dump and then let go",
                s.len(),
                self.freezer.dir.display()
            );
        }
    }

    /// Let the tasks not in the tree go on, and give back the freezer for
    /// the caller to put back (before or after, as the tree needs).
    pub(super) fn release(self) -> Freezer {
        for (tid, t) in self.tasks {
            if let Err(e) = t.release(false) {
                warn!("could not release task {tid} of the freezer cgroup: {e}");
            }
        }
        self.freezer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_freezer() {
        let e = Freezer::open(Path::new("/nonexistent/cg")).err();
        assert!(matches!(
            e,
            Some(Error::Refused {
                kind: ErrorKind::InvalidRequest,
                ..
            })
        ));
        let e = Freezer::open(Path::new("/tmp"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("neither a v1 freezer cgroup")));
    }
}
