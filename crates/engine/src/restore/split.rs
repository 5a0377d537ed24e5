// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

//! Building a tree on two CPUs: subtrees that share nothing with the rest
//! of the tree are built by a second tracer thread, on a CPU of its own,
//! while the first builds the rest on its CPU.
//!
//! Building is a ptrace round trip after another (see [`super::pin`]):
//! one tracer thread keeps one CPU busy and leaves the other idle. So,
//! once a plan picked them ([`plan`]), the first thread makes the top
//! task of each such subtree (clone3 in its parent, as always), points it
//! at the parking loop of the trampoline page ([`crust_compel::PARK_CODE`])
//! and detaches it; the second thread seizes it, and builds the subtree as
//! the first would have (the tasks the top task begets are the second
//! thread's by PTRACE_O_TRACEFORK). Once all is built the second thread
//! parks and detaches its tasks, and the first seizes them back: what
//! follows (credentials, late phases, letting go) runs on it as before.
//! A parked task is untraced for a moment: it arms a parent-death
//! SIGKILL, so a crust killed then leaves nothing; the credentials set
//! the recorded one.
//!
//! A subtree qualifies when building it touches nothing that the rest of
//! the build makes or reads as it goes: every process in it alive (no
//! zombie, no helper), made by its parent, in its parent's session and
//! namespaces, with its own memory, files and fs (the top one), in its
//! parent's process group or leading a group that has no member outside
//! the subtree, and mapping no shared memory object that a process outside
//! the subtree maps. Files several processes hold are crust's own
//! descriptions, made before any task: both threads read them. Anything
//! else is built by one thread, as before. `CRUST_PARTREE=0` turns it off.

use super::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Set `CRUST_PARTREE=0` to build every tree on one thread.
const SWITCH_ENV: &str = "CRUST_PARTREE";

/// Trees of fewer processes are built by one thread: the handover would
/// cost about what it saves.
const MIN_PROCS: usize = 16;

/// Which subtrees the second thread builds, and on which CPUs.
pub(super) struct Plan {
    /// The top processes of the subtrees (indices of `ImageSet::procs`).
    tops: HashSet<usize>,
    /// How many processes they hold together.
    count: usize,
    /// The first thread's CPU alone, and the second's.
    cpus: (process::CpuSet, process::CpuSet),
}

/// What the first thread hands over as it builds (in `Created::hand`).
pub(super) struct Hand {
    tops: HashSet<usize>,
    tx: mpsc::Sender<(usize, i32)>,
    /// The second thread failed: hand nothing more.
    failed: Arc<AtomicBool>,
    /// The parking loop's address.
    park: u64,
}

impl Hand {
    /// Whether process `c` is the top of a subtree the second thread builds.
    pub(super) fn takes(&self, c: usize) -> bool {
        self.tops.contains(&c)
    }
}

/// Where each process is in a depth-first walk of the tree (by who makes
/// whom): process `x` is in the subtree of `c` when
/// `enter[c] <= enter[x] < leave[c]`.
struct Walk {
    made: Vec<Vec<usize>>,
    enter: Vec<usize>,
    leave: Vec<usize>,
    /// Processes in each one's subtree, itself included.
    size: Vec<usize>,
}

fn walk(img: &ImageSet) -> Walk {
    let n = img.procs.len();
    // made_by looks at every process: asked only of those that make one.
    let mut makes = vec![false; n];
    for c in 1..n {
        if let Some(m) = img.sessions.creator(c).and_then(|p| makes.get_mut(p)) {
            *m = true;
        }
    }
    let made: Vec<Vec<usize>> = (0..n)
        .map(|i| match makes.get(i) {
            Some(true) => img
                .sessions
                .made_by(&img.procs, i)
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut enter = vec![usize::MAX; n];
    let mut leave = vec![0; n];
    let mut size = vec![1; n];
    let mut order = Vec::with_capacity(n);
    // (process, whether its children are pushed already)
    let mut stack = vec![(0usize, false)];
    let mut clock = 0;
    while let Some((i, done)) = stack.pop() {
        if done {
            if let Some(l) = leave.get_mut(i) {
                *l = clock;
            }
            continue;
        }
        if enter.get(i).is_none_or(|&e| e != usize::MAX) {
            continue;
        }
        if let Some(e) = enter.get_mut(i) {
            *e = clock;
        }
        clock += 1;
        order.push(i);
        stack.push((i, true));
        for &c in made.get(i).map_or(&[][..], |m| m.as_slice()).iter().rev() {
            stack.push((c, false));
        }
    }
    for &i in order.iter().rev() {
        let below: usize = made
            .get(i)
            .map_or(0, |m| m.iter().filter_map(|&c| size.get(c)).sum());
        if let Some(s) = size.get_mut(i) {
            *s += below;
        }
    }
    Walk {
        made,
        enter,
        leave,
        size,
    }
}

/// The namespaces of a process, to compare with its parent's.
fn ns_ids(l: &LiveImage) -> [Option<u32>; 8] {
    let i = &l.ids;
    [
        i.pid_ns_id,
        i.net_ns_id,
        i.ipc_ns_id,
        i.uts_ns_id,
        i.mnt_ns_id,
        i.user_ns_id,
        i.cgroup_ns_id,
        i.time_ns_id,
    ]
}

/// Whether process `x` can be built by either thread as far as it alone
/// goes (see the module's comment; what it shares with others is checked
/// by [`reach`]).
fn alone(img: &ImageSet, x: usize) -> bool {
    let s = &img.sessions;
    let (Some(q), Some(p)) = (
        img.procs.get(x),
        s.creator(x).and_then(|p| img.procs.get(p)),
    ) else {
        return false;
    };
    let (Some(ql), Some(pl)) = (&q.live, &p.live) else {
        return false;
    };
    let (qe, pe) = (&q.entry, &p.entry);
    !q.helper
        && !s.adopted(x)
        && !s.late_setsid(x)
        && !s.exits_early(x)
        && qe.ppid == pe.pid
        && qe.sid == pe.sid
        && (qe.pgid == pe.pgid || qe.pgid == qe.pid)
        && ns_ids(ql) == ns_ids(pl)
        && ql.pid_ns_id == pl.pid_ns_id
}

/// Whether the top process `c` of a subtree shares nothing of its own
/// with its parent (memory, fd table, fs, signal handlers).
fn own_top(img: &ImageSet, c: usize) -> bool {
    let q = img.procs.get(c).and_then(|q| q.live.as_ref());
    let p = img
        .sessions
        .creator(c)
        .and_then(|p| img.procs.get(p))
        .and_then(|p| p.live.as_ref());
    let (Some(q), Some(p)) = (q, p) else {
        return false;
    };
    let (a, b) = (&q.ids, &p.ids);
    a.vm_id != b.vm_id
        && a.files_id != b.files_id
        && a.fs_id != b.fs_id
        && a.sighand_id != b.sighand_id
        && !q.files_from_parent
}

/// Per process: the first and last place in the walk of the processes it
/// shares a thing with (a shared memory object; the members of the group
/// it leads), itself included.
fn reach(img: &ImageSet, w: &Walk) -> Vec<(usize, usize)> {
    let n = img.procs.len();
    let at = |x: usize| w.enter.get(x).copied().unwrap_or(0);
    let mut users: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut groups: HashMap<u32, (usize, usize)> = HashMap::new();
    let widen = |r: &mut (usize, usize), e: usize| *r = (r.0.min(e), r.1.max(e));
    // The shared memory objects each process maps, listed once.
    let objects: Vec<Vec<u64>> = img
        .procs
        .iter()
        .map(|p| match &p.live {
            Some(l) => mem::shmem_places(&l.mm, &img.memfds)
                .into_iter()
                .map(|(ino, _, _)| ino)
                .collect(),
            None => Vec::new(),
        })
        .collect();
    for (x, p) in img.procs.iter().enumerate() {
        let e = at(x);
        widen(groups.entry(p.entry.pgid).or_insert((e, e)), e);
        for &ino in objects.get(x).map_or(&[][..], |o| o.as_slice()) {
            widen(users.entry(ino).or_insert((e, e)), e);
        }
    }
    (0..n)
        .map(|x| {
            let e = at(x);
            let mut r = (e, e);
            let Some(p) = img.procs.get(x) else {
                return r;
            };
            if p.entry.pgid == p.entry.pid {
                if let Some(&g) = groups.get(&p.entry.pgid) {
                    widen(&mut r, g.0);
                    widen(&mut r, g.1);
                }
            }
            for ino in objects.get(x).map_or(&[][..], |o| o.as_slice()) {
                if let Some(&u) = users.get(ino) {
                    widen(&mut r, u.0);
                    widen(&mut r, u.1);
                }
            }
            r
        })
        .collect()
}

/// Which subtrees qualify (see the module's comment), per process.
fn qualifying(img: &ImageSet, w: &Walk) -> Vec<bool> {
    let n = img.procs.len();
    let reach = reach(img, w);
    // Bottom up: all of a subtree alone, and how far it reaches.
    let mut all_alone: Vec<bool> = (0..n).map(|x| alone(img, x)).collect();
    let mut span: Vec<(usize, usize)> = reach;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&x| std::cmp::Reverse(w.enter.get(x).copied().unwrap_or(0)));
    for &x in &order {
        let kids = w.made.get(x).map_or(&[][..], |m| m.as_slice());
        let ok = kids
            .iter()
            .all(|&c| all_alone.get(c).copied().unwrap_or(false));
        let r = kids
            .iter()
            .fold(span.get(x).copied().unwrap_or((0, usize::MAX)), |r, &c| {
                let s = span.get(c).copied().unwrap_or((0, usize::MAX));
                (r.0.min(s.0), r.1.max(s.1))
            });
        if let Some(a) = all_alone.get_mut(x) {
            *a = *a && ok;
        }
        if let Some(s) = span.get_mut(x) {
            *s = r;
        }
    }
    (0..n)
        .map(|c| {
            let (Some(&a), Some(&(lo, hi)), Some(&e), Some(&l)) = (
                all_alone.get(c),
                span.get(c),
                w.enter.get(c),
                w.leave.get(c),
            ) else {
                return false;
            };
            a && e <= lo && hi < l && own_top(img, c)
        })
        .collect()
}

/// Pick the subtrees the second thread builds: in the order the first
/// thread reaches them, whole subtrees that qualify while they fit in
/// half the tree, else a look inside. `None`: the tree is built by one
/// thread (too small, nothing qualifies, one CPU, the switch off).
pub(super) fn plan(img: &ImageSet, opts: &Options, pin: Option<&pin::Pin>) -> Option<Plan> {
    if std::env::var_os(SWITCH_ENV).is_some_and(|v| v == "0") {
        return None;
    }
    let n = img.procs.len();
    if n < MIN_PROCS || opts.lazy_pages {
        return None;
    }
    let pin = pin?;
    let other = pin.other_cpu()?;
    let t = Instant::now();
    let w = walk(img);
    let ok = qualifying(img, &w);
    let mut tops = HashSet::new();
    let mut left = n / 2;
    // Depth first, as the first thread builds.
    let mut stack: Vec<usize> = w
        .made
        .first()
        .map_or(Vec::new(), |m| m.iter().rev().copied().collect());
    while let Some(c) = stack.pop() {
        if left == 0 {
            break;
        }
        let size = w.size.get(c).copied().unwrap_or(usize::MAX);
        if ok.get(c).copied().unwrap_or(false) && size <= left {
            tops.insert(c);
            left -= size;
        } else if let Some(m) = w.made.get(c) {
            stack.extend(m.iter().rev().copied());
        }
    }
    let count = n / 2 - left;
    if count < MIN_PROCS / 2 {
        debug!("building the tree on one thread: {count} processes qualify to be built apart");
        return None;
    }
    debug!(
        "building {} processes on CPU {} and {count} on CPU {other} ({} subtrees, planned in {} us)",
        n - count,
        pin.cpu(),
        tops.len(),
        us_since(t)
    );
    Some(Plan {
        tops,
        count,
        cpus: (pin.only(pin.cpu()), pin.only(other)),
    })
}

/// [`grow`] the whole tree from the root on this thread, with the
/// subtrees of `plan` built by a second thread meanwhile; their tasks are
/// this thread's again when it returns (also on failure: killed then,
/// with the rest, by `Created::kill_all`).
pub(super) fn grow_split(
    b: Build<'_>,
    created: &mut Created,
    pages: &mut u64,
    plan: Plan,
) -> Result<(), Error> {
    let img = b.img;
    let (tx, rx) = mpsc::channel();
    let failed = Arc::new(AtomicBool::new(false));
    let part = Created {
        tasks: (0..img.procs.len()).map(|_| Vec::new()).collect(),
        shared: Arc::clone(&created.shared),
        objects: created.objects.clone(),
        ..Created::default()
    };
    let park = b.tramp + crust_compel::PARK_OFFSET;
    let count = plan.count;
    let cpus = plan.cpus;
    let second = Second {
        b,
        cpus,
        failed: Arc::clone(&failed),
    };
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("crust-build2".into())
            .spawn_scoped(s, move || second.run(rx, part));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                debug!("building on one thread: no second thread ({e})");
                return grow(b, 0, created, pages);
            }
        };
        created.hand = Some(Hand {
            tops: plan.tops,
            tx,
            failed: Arc::clone(&failed),
            park,
        });
        let t = Instant::now();
        let mine = grow(b, 0, created, pages);
        // No more subtrees: the second thread ends once it built those it has.
        created.hand = None;
        if mine.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let waited = Instant::now();
        let theirs = handle.join().unwrap_or_else(|_| {
            Err(Error::Restore {
                pid: 0,
                what: "the second builder thread failed".into(),
            })
        });
        debug!(
            "first builder done in {} us, then waited {} us for the second",
            waited.duration_since(t).as_micros(),
            us_since(waited)
        );
        mine?;
        let back = theirs?;
        take_back(created, back, b.tramp, pages)?;
        debug!(
            "{count} processes built on the second thread are back in {} us",
            us_since(waited)
        );
        Ok(())
    })
}

/// What the second thread built: its tasks (parked) by process, and what
/// `grow` gathered.
struct Back {
    tasks: Vec<(usize, Vec<i32>)>,
    pages: u64,
    objects: HashMap<u64, std::sync::Arc<std::os::fd::OwnedFd>>,
    lazy: Vec<crate::lazy::LazyTask>,
}

/// Seize the parked tasks of `back` on this thread again.
fn take_back(created: &mut Created, back: Back, tramp: u64, pages: &mut u64) -> Result<(), Error> {
    created
        .loose
        .extend(back.tasks.iter().flat_map(|(_, p)| p.iter().copied()));
    if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "die-while-parked") {
        // A crust killed while the second thread's tasks are parked,
        // untraced (tests): their parent-death signals must end them.
        let _ = process::kill(process::getpid(), libc::SIGKILL);
    }
    for (i, pids) in back.tasks {
        created.armed.insert(i);
        for pid in pids {
            let mut t = Task::seize_parked(pid, TRACE_OPTS)
                .map_err(|source| Error::Compel { pid, source })?;
            t.use_trapping_syscall_ip(RemoteAddr(tramp));
            created
                .tasks
                .get_mut(i)
                .ok_or_else(|| Error::Restore {
                    pid,
                    what: format!("process {i} of the tree is not in the plan"),
                })?
                .push(t);
        }
    }
    // Every one is in `tasks` again.
    created.loose.clear();
    *pages += back.pages;
    for (ino, f) in back.objects {
        created.objects.entry(ino).or_insert(f);
    }
    created.lazy.extend(back.lazy);
    Ok(())
}

/// Hand the just-made top task `t` of process `c`'s subtree to the second
/// thread.
/// `parent`: its parent's pid in the images (as the task sees it).
pub(super) fn hand_over(
    created: &mut Created,
    c: usize,
    t: Task,
    parent: i32,
) -> Result<(), Error> {
    let pid = t.pid();
    let Some(h) = &created.hand else {
        return Err(Error::Restore {
            pid,
            what: "no second builder thread to hand it to".into(),
        });
    };
    created.loose.push(pid);
    if h.failed.load(Ordering::Relaxed) {
        return Err(Error::Restore {
            pid,
            what: "the second builder thread failed".into(),
        });
    }
    t.park_and_detach(RemoteAddr(h.park), parent)
        .map_err(|source| Error::Compel { pid, source })?;
    h.tx.send((c, pid)).map_err(|_| Error::Restore {
        pid,
        what: "the second builder thread is gone".into(),
    })
}

/// The second builder thread's share of [`grow_split`].
struct Second<'a> {
    b: Build<'a>,
    cpus: (process::CpuSet, process::CpuSet),
    failed: Arc<AtomicBool>,
}

impl Second<'_> {
    /// Build each subtree whose top task comes through `rx`, then park
    /// every task for the first thread. On failure (its own, or the
    /// first thread's) its tasks are killed, and so is every top task that
    /// still comes.
    fn run(self, rx: mpsc::Receiver<(usize, i32)>, mut part: Created) -> Result<Back, Error> {
        if let Err(e) = process::sched_setaffinity(0, &self.cpus.1) {
            debug!("the second builder thread stays on the first's CPU: {e}");
        }
        let mut pages = 0;
        let mut built = Ok(());
        for (c, pid) in &rx {
            if built.is_err() || self.failed.load(Ordering::Relaxed) {
                let _ = process::kill(pid, libc::SIGKILL);
                continue;
            }
            built = self.build(c, pid, &mut part, &mut pages);
            if built.is_err() {
                self.failed.store(true, Ordering::Relaxed);
            }
        }
        if let Err(e) = built {
            part.kill_all();
            return Err(e);
        }
        if self.failed.load(Ordering::Relaxed) {
            part.kill_all();
            return Err(Error::Restore {
                pid: 0,
                what: "stopped: the first builder thread failed".into(),
            });
        }
        self.park_all(part, pages)
    }

    /// Seize the parked top task `pid` of process `c` and grow its subtree.
    fn build(&self, c: usize, pid: i32, part: &mut Created, pages: &mut u64) -> Result<(), Error> {
        let t0 = Instant::now();
        let mut t = match Task::seize_parked(pid, TRACE_OPTS) {
            Ok(t) => t,
            Err(source) => {
                let _ = process::kill(pid, libc::SIGKILL);
                return Err(Error::Compel { pid, source });
            }
        };
        t.use_trapping_syscall_ip(RemoteAddr(self.b.tramp));
        part.tasks_of(c, pid)?.push(t);
        // A group leader makes its group (all of it in this subtree).
        set_session(self.b.img, c, self.b.opts, part, self.b.tramp)?;
        // Its children inherit the CPU.
        if let Err(e) = process::sched_setaffinity(pid, &self.cpus.1) {
            debug!("{pid} stays on the first builder's CPU: {e}");
        }
        grow(self.b, c, part, pages)?;
        debug!(
            "{pid}: its subtree built on the second thread in {} us",
            us_since(t0)
        );
        Ok(())
    }

    /// Park every task built here for the first thread, on its CPU.
    fn park_all(&self, mut part: Created, pages: u64) -> Result<Back, Error> {
        let park = RemoteAddr(self.b.tramp + crust_compel::PARK_OFFSET);
        let mut tasks = Vec::new();
        let mut parked = Vec::new();
        let mut failure = None;
        for (i, threads) in part.tasks.iter_mut().enumerate() {
            if threads.is_empty() || failure.is_some() {
                continue;
            }
            let mut pids = Vec::new();
            let parent = self.b.img.procs.get(i).map_or(0, |p| p.entry.ppid as i32);
            while !threads.is_empty() {
                let t = threads.remove(0);
                let pid = t.pid();
                let _ = process::sched_setaffinity(pid, &self.cpus.0);
                match t.park_and_detach(park, parent) {
                    Ok(p) => {
                        pids.push(p);
                        parked.push(p);
                    }
                    Err(source) => {
                        failure = Some(Error::Compel { pid, source });
                        let _ = process::kill(pid, libc::SIGKILL);
                        break;
                    }
                }
            }
            tasks.push((i, pids));
        }
        if let Some(e) = failure {
            for &pid in &parked {
                let _ = process::kill(pid, libc::SIGKILL);
            }
            part.kill_all();
            return Err(e);
        }
        Ok(Back {
            tasks,
            pages,
            objects: std::mem::take(&mut part.objects),
            lazy: std::mem::take(&mut part.lazy),
        })
    }
}
