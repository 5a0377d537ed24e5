//! `dump --lazy-pages` (CRIU's post-copy migration, source side): the
//! pages of lazy memory are announced `PE_LAZY` in the pagemaps and not
//! stored; once every image is written the dump listens at
//! `--address`/`--port` and answers the destination's lazy-pages daemon
//! (PS_IOV_GET) from the frozen tree's own memory, until the daemon says
//! PS_IOV_CLOSE. Only then is the tree killed.
//!
//! The rule when the daemon fails, stalls or goes away (docs/
//! ARCHITECTURE.md, "Lazy pages"): the first page request is the point of
//! no return. crust's daemon asks for a page (and waits for it) before it
//! lets the restored tree run, so before that request the tree has run
//! nowhere else: the dump fails and the tree is thawed here. From that
//! request on the tree lives at the destination: every task here gets
//! PTRACE_O_EXITKILL (if crust dies, the kernel kills them) and the tree
//! is never thawed again; it is killed whatever happens. The dump
//! succeeds when the daemon said PS_IOV_CLOSE or every lazy page was
//! sent (a lost close), and fails otherwise (pages not sent: the
//! destination's daemon fails and its guard kills the restored copy).
//! The daemon may be silent `CRUST_LAZY_WAIT` seconds before its first
//! request (it waits for the restore), `CRUST_LAZY_IDLE` seconds between
//! requests after it.

use crate::pageserver::{Listener, PageProvider};
use crate::util::proc_err;
use crate::{mem, Error, Options};
use crust_compel::Task;
use crust_proc::ProcRoot;
use crust_sys::{RemoteAddr, PAGE_SIZE};
use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

/// The memory of a process whose pages may be restored lazily: its lazy
/// VMAs (CRIU's rule) less the pages its threads' stack pointers are in
/// (as CRIU) and the pages of their rseq areas (the kernel writes them
/// while the restore runs, before the lazy-pages daemon has the process).
pub(super) fn ranges(vmas: &[mem::Vma], threads: &[Task]) -> Vec<Range<u64>> {
    let lazy: Vec<Range<u64>> = vmas
        .iter()
        .filter(|v| v.can_be_lazy() && v.map.start < v.map.end)
        .map(|v| v.map.start..v.map.end)
        .collect();
    let page = |a: u64| a & !(PAGE_SIZE - 1);
    let mut keep: Vec<Range<u64>> = Vec::new();
    for t in threads {
        let sp = page(t.regs().rsp);
        keep.push(sp..sp + PAGE_SIZE);
        if let Some(rs) = t.rseq().filter(|r| r.rseq_abi_pointer != 0) {
            let end = rs
                .rseq_abi_pointer
                .saturating_add(u64::from(rs.rseq_abi_size).max(1));
            keep.push(page(rs.rseq_abi_pointer)..page(end.saturating_add(PAGE_SIZE - 1)));
        }
    }
    crate::lazy::iovs::subtract(
        crate::lazy::iovs::merge(lazy),
        &crate::lazy::iovs::merge(keep),
    )
}

/// Refuse what `dump --lazy-pages` cannot be combined with, before the
/// tree is touched.
pub(super) fn refuse(opts: &Options) -> Result<(), Error> {
    if !opts.lazy_pages {
        return Ok(());
    }
    if opts.leave_running || opts.leave_stopped {
        return Err(Error::refused(
            crate::ErrorKind::InvalidRequest,
            "dump --lazy-pages keeps the tree frozen until its pages are taken, then kills it: \
             it cannot be combined with --leave-running or --leave-stopped",
        ));
    }
    // --track-mem is accepted as on any dump that ends the tree (the final
    // round of a migration passes it): nothing is tracked after it.
    Ok(())
}

/// What the frozen tree serves: per process (by its pid in the images)
/// its pid as crust sees it and its lazy memory, sorted.
struct Tree {
    procs: HashMap<u64, (i32, Vec<Range<u64>>)>,
    /// The lazy memory not sent yet, per pid in the images.
    unsent: HashMap<u64, Vec<Range<u64>>>,
    /// Every thread of the tree (host tids), given PTRACE_O_EXITKILL at
    /// the first request.
    tids: Vec<i32>,
    /// A request was answered: the tree lives at the destination.
    committed: bool,
    /// Pages sent.
    sent: u64,
    /// Silence allowed before the first request, and between requests.
    wait: Duration,
    idle: Duration,
}

impl Tree {
    /// The point of no return: from here on the tree dies with crust
    /// (PTRACE_O_EXITKILL) and is never thawed. A task that cannot be
    /// set so fails the request: nothing was answered, the tree thaws.
    fn commit(&mut self) -> Result<(), Error> {
        use crust_sys::ptrace::options::{EXITKILL, TRACESYSGOOD};
        for &tid in &self.tids {
            crust_sys::ptrace::set_options(tid, EXITKILL | TRACESYSGOOD).map_err(
                crate::util::sys_err(
                    tid,
                    "PTRACE_SETOPTIONS(EXITKILL) before the first lazy page",
                ),
            )?;
        }
        log::info!(
            "lazy pages: first request: the tree lives at the destination now; \
             it is killed here whatever happens (and with crust, by the kernel)"
        );
        self.committed = true;
        Ok(())
    }

    /// Pages of lazy memory not sent yet.
    fn unsent_pages(&self) -> u64 {
        (self.unsent.values().flatten())
            .map(|r| (r.end - r.start) / PAGE_SIZE)
            .sum()
    }
}

impl PageProvider for Tree {
    fn get(
        &mut self,
        pid: u64,
        vaddr: u64,
        nr_pages: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, Error> {
        let Some((host, lazy)) = self.procs.get(&pid) else {
            log::warn!("lazy pages: asked for pages of process {pid}, which is not in the tree");
            return Ok(0);
        };
        let i = lazy.partition_point(|r| r.end <= vaddr);
        let Some(r) = lazy.get(i).filter(|r| r.start <= vaddr) else {
            log::warn!("lazy pages: asked for {vaddr:#x} of process {pid}, not lazy memory");
            return Ok(0);
        };
        if !vaddr.is_multiple_of(PAGE_SIZE) {
            return Ok(0);
        }
        let give = nr_pages.min((r.end - vaddr) / PAGE_SIZE);
        let host = &host.clone();
        if !self.committed {
            self.commit()?;
        }
        let at = out.len();
        out.resize(at + (give * PAGE_SIZE) as usize, 0);
        let dst = out.get_mut(at..).unwrap_or_default();
        let n = crust_sys::mem::read(*host, RemoteAddr(vaddr), dst).map_err(|e| {
            crate::util::sys_err(*host, format!("reading {give} lazy pages at {vaddr:#x}"))(e)
        })?;
        if n != dst.len() {
            return Err(crate::util::sys_err(
                *host,
                format!("reading {give} lazy pages at {vaddr:#x}: only {n} bytes"),
            )(std::io::Error::from_raw_os_error(
                libc::EFAULT,
            )));
        }
        if let Some(u) = self.unsent.get_mut(&pid) {
            let sent = vaddr..vaddr + give * PAGE_SIZE;
            *u = crate::lazy::iovs::subtract(std::mem::take(u), std::slice::from_ref(&sent));
        }
        self.sent += give;
        Ok(give)
    }

    fn idle_limit(&self) -> Option<Duration> {
        Some(if self.committed { self.idle } else { self.wait })
    }
}

/// The pids of `hosts` (processes of the frozen tree, the root first) in
/// the root's pid namespace, with their lazy memory.
fn provider(dir: &std::path::Path, hosts: &[(i32, &[Task])]) -> Result<Tree, Error> {
    let proc = ProcRoot::default();
    let nspids = |pid: i32| -> Result<Vec<i32>, Error> {
        Ok(crust_proc::status(&proc, pid)
            .map_err(proc_err(pid))?
            .ns_pid)
    };
    let depth = match hosts.first() {
        Some((root, _)) => nspids(*root)?.len().max(1),
        None => 1,
    };
    let mut procs = HashMap::new();
    let mut tids = Vec::new();
    for &(pid, threads) in hosts {
        let ns = nspids(pid)?;
        let nspid = ns.get(depth - 1).copied().unwrap_or(pid);
        let vmas = mem::collect_vmas(&proc, pid)?;
        procs.insert(nspid as u64, (pid, ranges(&vmas, threads)));
        tids.extend(threads.iter().map(Task::pid));
    }
    // What the destination will ask for: the runs the pagemaps left on
    // the source (pages in lazy memory that were there).
    let mut unsent = HashMap::new();
    for &nspid in procs.keys() {
        let left = crate::lazy::remote::left_lazy(dir, nspid as i32)?;
        let runs = left
            .iter()
            .map(|&(a, n)| a..a.saturating_add(n * PAGE_SIZE));
        unsent.insert(nspid, crate::lazy::iovs::merge(runs.collect()));
    }
    Ok(Tree {
        procs,
        unsent,
        tids,
        committed: false,
        sent: 0,
        wait: daemon_wait(),
        idle: env_secs("CRUST_LAZY_IDLE", 60),
    })
}

/// Before the tree is killed: the images made durable, then with `dump
/// --lazy-pages` the frozen tree's lazy memory served until the
/// destination's lazy-pages daemon is done. An error: the tree has run
/// nowhere else, the caller lets it run on (the tree's own network
/// namespace, `own_net`, is unlocked here). `Ok(Some(e))`: the tree went
/// to the destination and could not be completed there: the caller kills
/// it all the same and fails with `e`.
pub(super) fn before_kill(
    opts: &Options,
    tree: &super::Tree,
    own_net: bool,
) -> Result<Option<Error>, Error> {
    super::outdir::make_durable(&opts.images_dir)?;
    if !opts.lazy_pages {
        return Ok(None);
    }
    let hosts: Vec<(i32, &[Task])> = (tree.procs.iter().filter(|p| !p.zombie))
        .map(|p| (p.pid, &p.threads[..]))
        .collect();
    serve_tree(opts, &hosts).inspect_err(|_| super::net_unlock_hook(opts, own_net, opts.pid))
}

/// Serve the lazy pages of the frozen tree (`hosts`: its live processes
/// and their threads, the root first) to one lazy-pages daemon, until it
/// says PS_IOV_CLOSE. See the module's rule for the outcomes.
fn serve_tree(opts: &Options, hosts: &[(i32, &[Task])]) -> Result<Option<Error>, Error> {
    let mut tree = provider(&opts.images_dir, hosts)?;
    let listener = Listener::bind(opts)?;
    log::info!(
        "lazy pages: the tree stays frozen; serving its memory on {}:{} until the lazy-pages daemon is done",
        opts.address.as_deref().unwrap_or("0.0.0.0"),
        listener.port()
    );
    // `--status-fd`: the images are written and the pages served (the
    // destination may copy the images and start its daemon).
    if let Some(fd) = opts.status_fd {
        status_ready(fd);
    }
    let conn = listener.accept_within(opts, tree.wait)?;
    let peer = conn.peer().to_string();
    let served = crate::pageserver::serve(
        conn,
        &opts.images_dir,
        Some(&mut tree),
        opts.ps_socket.is_none(),
    );
    let why = match served {
        Ok(st) if st.closed => {
            log::info!("lazy pages: the daemon is done, {} pages sent", st.sent);
            return Ok(None);
        }
        Ok(_) => "it went away".to_string(),
        Err(e) => format!("{e}"),
    };
    let sent = tree.sent;
    let (wait, idle) = (tree.wait.as_secs(), tree.idle.as_secs());
    if !tree.committed {
        return Err(Error::PageServer {
            peer,
            what: format!(
                "the lazy-pages daemon went away or stalled (no request within {wait} s, \
                 CRUST_LAZY_WAIT) before it asked for any page ({why}): the restored tree never \
                 ran, the tree runs on here"
            ),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    let unsent = tree.unsent_pages();
    if unsent == 0 {
        log::warn!(
            "lazy pages: the daemon ended without PS_IOV_CLOSE ({why}), but every lazy page \
             was sent: the tree lives on at the destination"
        );
        return Ok(None);
    }
    log::error!("lazy pages: the daemon failed with {unsent} pages not sent ({sent} sent)");
    Ok(Some(Error::PageServer {
        peer,
        what: format!(
            "the lazy-pages daemon went away or stalled (no request for {idle} s, \
             CRUST_LAZY_IDLE) after the restored tree started, with {unsent} pages of its memory \
             not sent ({why}): the tree is lost: killed here (its copy ran at the destination; \
             it must not run twice), and the destination's daemon fails without these pages and \
             its guard kills the restored copy"
        ),
        source: std::io::ErrorKind::TimedOut.into(),
    }))
}

/// How long the frozen tree waits for the lazy-pages daemon to connect
/// and ask for its first page: `CRUST_LAZY_WAIT` seconds, 600 without
/// it. Past that the dump fails and the tree runs on where it is.
fn daemon_wait() -> Duration {
    env_secs("CRUST_LAZY_WAIT", 600)
}

/// `var` in seconds, `default` without it (or unreadable), at least 1.
fn env_secs(var: &str, default: u64) -> Duration {
    let secs = std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_secs(secs.max(1))
}

/// Write CRIU's readiness byte (a zero) to `fd`.
fn status_ready(fd: i32) {
    use std::io::Write;
    match crust_sys::psock::dup_fd(fd) {
        Ok(f) => {
            if let Err(e) = std::fs::File::from(f).write_all(&[0]) {
                log::warn!("cannot write to the status fd {fd}: {e}");
            }
        }
        Err(e) => log::warn!("status fd {fd}: {e}"),
    }
}
