//! `dump --lazy-pages` (CRIU's post-copy migration, source side): the
//! pages of lazy memory are announced `PE_LAZY` in the pagemaps and not
//! stored; once every image is written the dump listens at
//! `--address`/`--port` and answers the destination's lazy-pages daemon
//! (PS_IOV_GET) from the frozen tree's own memory, until the daemon says
//! PS_IOV_CLOSE. Only then is the tree killed: a daemon that fails or
//! vanishes first fails the dump, and the tree is thawed and runs on.

use crate::pageserver::{Listener, PageProvider, ServeStats};
use crate::util::proc_err;
use crate::{mem, Error, Options};
use crust_compel::Task;
use crust_proc::ProcRoot;
use crust_sys::{RemoteAddr, PAGE_SIZE};
use std::collections::HashMap;
use std::ops::Range;

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
        Ok(give)
    }
}

/// The pids of `hosts` (processes of the frozen tree, the root first) in
/// the root's pid namespace, with their lazy memory.
fn provider(hosts: &[(i32, &[Task])]) -> Result<Tree, Error> {
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
    for &(pid, threads) in hosts {
        let ns = nspids(pid)?;
        let nspid = ns.get(depth - 1).copied().unwrap_or(pid);
        let vmas = mem::collect_vmas(&proc, pid)?;
        procs.insert(nspid as u64, (pid, ranges(&vmas, threads)));
    }
    Ok(Tree { procs })
}

/// Before the tree is killed: the images made durable, then with `dump
/// --lazy-pages` the frozen tree's lazy memory served until the
/// destination's lazy-pages daemon is done. On a failure of the latter
/// the tree's own network namespace (`own_net`) is unlocked: the caller
/// lets the tree run on.
pub(super) fn before_kill(opts: &Options, tree: &super::Tree, own_net: bool) -> Result<(), Error> {
    super::outdir::make_durable(&opts.images_dir)?;
    if !opts.lazy_pages {
        return Ok(());
    }
    let hosts: Vec<(i32, &[Task])> = (tree.procs.iter().filter(|p| !p.zombie))
        .map(|p| (p.pid, &p.threads[..]))
        .collect();
    serve_tree(opts, &hosts)
        .map(drop)
        .inspect_err(|_| super::net_unlock_hook(opts, own_net, opts.pid))
}

/// Serve the lazy pages of the frozen tree (`hosts`: its live processes
/// and their threads, the root first) to one lazy-pages daemon, until it
/// says PS_IOV_CLOSE. An error (no daemon, the daemon gone before its
/// close) means the pages did not all move: the caller thaws the tree.
fn serve_tree(opts: &Options, hosts: &[(i32, &[Task])]) -> Result<ServeStats, Error> {
    let mut tree = provider(hosts)?;
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
    let conn = listener.accept_within(opts, daemon_wait())?;
    let peer = conn.peer().to_string();
    let st = crate::pageserver::serve(
        conn,
        &opts.images_dir,
        Some(&mut tree),
        opts.ps_socket.is_none(),
    )?;
    if !st.closed {
        return Err(Error::PageServer {
            peer,
            what: format!(
                "the lazy-pages daemon went away before it said it had every page it needs \
                 ({} pages sent): the tree runs on here",
                st.sent
            ),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    log::info!("lazy pages: the daemon is done, {} pages sent", st.sent);
    Ok(st)
}

/// How long the frozen tree waits for the lazy-pages daemon to connect:
/// `CRUST_LAZY_WAIT` seconds, 600 without it. Past that the dump fails
/// and the tree runs on where it is.
fn daemon_wait() -> std::time::Duration {
    let secs = std::env::var("CRUST_LAZY_WAIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(600);
    std::time::Duration::from_secs(secs)
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
