// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crate::ns::ids::NsKind;
use std::os::unix::fs::OpenOptionsExt;

/// What every step of building the tree reads, the same for the whole
/// walk and for both builder threads (restore/split.rs).
#[derive(Clone, Copy)]
pub(super) struct Build<'a> {
    pub(super) img: &'a ImageSet,
    pub(super) opts: &'a Options,
    /// The trampoline page's address (the same in every task).
    pub(super) tramp: u64,
    pub(super) tty: Option<&'a str>,
    pub(super) filler: &'a mem::Filler,
}

/// Build process `i` (already created, with its session), then create and
/// grow its children, then its threads, then the rest of it.
pub(super) fn grow(
    b: Build<'_>,
    i: usize,
    created: &mut Created,
    pages: &mut u64,
) -> Result<(), Error> {
    let (img, opts, tramp) = (b.img, b.opts, b.tramp);
    let p = img.procs.get(i).ok_or_else(|| Error::Restore {
        pid: 0,
        what: format!("process {i} is not in the image set"),
    })?;
    let mut pending = None;
    if let Some(live) = &p.live {
        let t = Instant::now();
        let stops = crust_compel::stops_seen();
        // The nearest live process up the line of those that made it
        // (its parent, or the sibling that made it in its session): this
        // task started as a copy of it.
        let mut by = img.sessions.creator(i);
        let mut parent_mm = None;
        for _ in 0..img.procs.len() {
            let Some(q) = by.and_then(|k| img.procs.get(k)) else {
                break;
            };
            if let Some(l) = &q.live {
                parent_mm = Some(&l.mm);
                break;
            }
            by = by.and_then(|k| img.sessions.creator(k));
        }
        let mut via_crust = mapped_via_crust(live, &created.shared);
        foreign_mapped(img, live, &mut via_crust);
        let mut objects = made_memfds(live, &created.shared, &img.memfds)?;
        for (ino, file) in &created.objects {
            objects
                .entry(*ino)
                .or_insert_with(|| mem::MadeObject(file.clone()));
        }
        let (n, filling, lazy) = build_memory(
            created.main_of(i, p.pid())?,
            img,
            (live, &via_crust, &objects),
            parent_mm,
            tramp,
            (b.filler, opts.lazy_pages),
        )?;
        created.lazy.extend(lazy);
        *pages += n;
        pending = Some(filling);
        // Its shared memory objects, for the processes built after it.
        let host = created.main_of(i, p.pid())?.pid();
        // crust holds them open: a task in a pid namespace of its own
        // could not reach them through crust's /proc.
        for (ino, start, end) in mem::shmem_places(&live.mm, &img.memfds) {
            if created.objects.contains_key(&ino) {
                continue;
            }
            let path = format!("/proc/{host}/map_files/{start:x}-{end:x}");
            let open = |rw: bool| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(rw)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
            };
            let file = open(true).or_else(|_| open(false)).map_err(sys_err(
                host,
                format!("open shared memory object {ino} through {path}"),
            ))?;
            created
                .objects
                .insert(ino, std::sync::Arc::new(std::os::fd::OwnedFd::from(file)));
        }
        debug!(
            "{}: memory mapped in {} us, {} stops",
            p.pid(),
            us_since(t),
            crust_compel::stops_seen() - stops
        );
    }
    // A child that starts from this process's memory (to keep pages or
    // shared objects) must see it complete; otherwise the fill goes on
    // while the children are made and built.
    let made = img.sessions.made_by(&img.procs, i);
    let heirs = made.iter().filter_map(|&(c, _)| img.procs.get(c)).any(|c| {
        c.live.as_ref().is_some_and(|l| {
            l.runs.iter().any(|r| r.cow)
                || l.mm.vmas.iter().any(|v| v.status & vs::AREA_MEMFD != 0)
                || p.live
                    .as_ref()
                    .is_some_and(|pl| !mem::cow_candidates(&l.mm, &pl.mm).is_empty())
        })
    }) || made.iter().any(|&(c, _)| {
        img.procs.get(c).is_some_and(|c| c.helper)
            || !img.sessions.made_by(&img.procs, c).is_empty()
    });
    if heirs {
        protect(created, i, p, pending.take(), tramp)?;
    }
    make_children(b, i, &made, created, pages)?;
    if p.helper && img.sessions.exits_early(i) {
        exit_helper_now(img, i, created, tramp)?;
    }
    if let Some(live) = &p.live {
        // Threads, cloned by the main thread.
        for ti in live.threads.iter().skip(1) {
            let flags = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM) as u64;
            let t = remote_clone(created.main_of(i, p.pid())?, tramp, ti.tid, flags, 0)?;
            created.tasks_of(i, p.pid())?.push(t);
        }
        protect(created, i, p, pending.take(), tramp)?;
        let t = Instant::now();
        let stops = crust_compel::stops_seen();
        let tasks = created.tasks.get_mut(i).ok_or_else(|| Error::Restore {
            pid: p.pid(),
            what: format!("process {i} of the tree was not created"),
        })?;
        build_rest(tasks, p.pid(), live, tramp, b.tty, &created.shared)?;
        crate::util::progress::task_built();
        debug!(
            "{}: the rest built in {} us, {} stops",
            p.pid(),
            us_since(t),
            crust_compel::stops_seen() - stops
        );
    }
    Ok(())
}

/// Make the processes process `i` makes (its children, and those it
/// makes for its parent or the init: see [`super::sessions`]), each grown
/// whole in turn; `i`'s own late setsid comes once those born in its
/// first session exist.
fn make_children(
    b: Build<'_>,
    i: usize,
    made: &[(usize, bool)],
    created: &mut Created,
    pages: &mut u64,
) -> Result<(), Error> {
    let (img, opts, tramp) = (b.img, b.opts, b.tramp);
    let p = img.procs.get(i).ok_or_else(|| Error::Restore {
        pid: 0,
        what: format!("process {i} is not in the image set"),
    })?;
    let mut late = img.sessions.late_setsid(i);
    for &(c, early) in made {
        let Some(child) = img.procs.get(c) else {
            continue;
        };
        if late && !early {
            // Its children born in its first session exist: now its own.
            set_session_now(img, i, opts, created, tramp)?;
            late = false;
        }
        let (flags, exit_signal) = clone_flags(img, p, c, child);
        let t = remote_clone(
            created.main_of(i, p.pid())?,
            tramp,
            child.pid(),
            flags,
            exit_signal,
        )?;
        if created.hand.as_ref().is_some_and(|h| h.takes(c)) {
            // Built by the second builder thread (in its parent's session
            // and namespaces: nothing to set here).
            super::split::hand_over(created, c, t, p.pid())?;
            continue;
        }
        created.tasks_of(c, child.pid())?.push(t);
        set_session(img, c, opts, created, tramp)?;
        // Into its own mount namespace before its paths are opened.
        enter_mnt_ns(img, created, c, p, tramp)?;
        enter_net_ns(img, created, c, tramp)?;
        if child.helper && child.entry.pid == p.entry.pgid {
            // The helper made its group: join it.
            set_session_now(img, i, opts, created, tramp)?;
        }
        grow(b, c, created, pages)?;
    }
    if late {
        set_session_now(img, i, opts, created, tramp)?;
    }
    Ok(())
}

/// The clone3 flags and exit signal process `c` (`child`) is made with by
/// `p`.
fn clone_flags(img: &ImageSet, p: &ProcImage, c: usize, child: &ProcImage) -> (u64, u64) {
    let mut flags = 0u64;
    let mut exit_signal = libc::SIGCHLD as u64;
    if img.sessions.adopted(c) {
        // A sibling in its session makes it; its parent is theirs,
        // and so is its exit signal (clone3 wants none given then).
        flags |= libc::CLONE_PARENT as u64;
        exit_signal = 0;
    } else if child.entry.ppid != p.entry.pid {
        // A helper makes it for the init, which inherits it.
    } else if let (Some(me), Some(pp)) = (&child.live, &p.live) {
        if me.ids.files_id == pp.ids.files_id {
            flags |= libc::CLONE_FILES as u64;
        }
        if me.ids.fs_id == pp.ids.fs_id {
            flags |= libc::CLONE_FS as u64;
        }
    }
    (flags, exit_signal)
}

/// Wait for process `i`'s pages to be in, then set its final protections.
pub(super) fn protect(
    created: &mut Created,
    i: usize,
    p: &ProcImage,
    pending: Option<std::sync::Arc<mem::Pending>>,
    tramp: u64,
) -> Result<(), Error> {
    let (Some(pending), Some(live)) = (pending, &p.live) else {
        return Ok(());
    };
    let t = Instant::now();
    let mut r = Remote::on_trampoline(created.main_of(i, p.pid())?, tramp);
    mem::protect_vmas(
        &mut r,
        &live.mm,
        &pending,
        Some(crate::task::remote::batch_code(tramp)),
    )?;
    debug!(
        "{}: pages in and protections set in {} us",
        p.pid(),
        us_since(t)
    );
    mem::install_guards(&mut r, &live.guards)
}

/// Build the memory of one process inside its (still single) task: forget
/// what it inherited, move the vDSO, map the VMAs, fill the pages, set the
/// mm fields. Returns pages restored.
/// The files mapped by `live` that crust made at restore (deleted files
/// recreated from their ghosts), by files.img id: crust opens them again
/// through its fd (/proc/CRUST/fd/N), since no path leads to them, and
/// gives them to the task.
/// Paths by files.img id.
type Paths = std::collections::HashMap<u64, String>;
/// Shared memory objects that exist already, by inode number.
type Objects = std::collections::HashMap<u64, mem::MadeObject>;

fn mapped_via_crust(
    live: &LiveImage,
    shared: &crate::files::kind::OpenFiles,
) -> std::collections::HashMap<u64, String> {
    use std::os::fd::AsRawFd;
    let me = process::getpid();
    live.mm
        .vmas
        .iter()
        .filter(|v| v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0)
        .filter(|v| v.status & vs::AREA_MEMFD == 0)
        .filter_map(|v| {
            let fd = shared.get(v.shmid as u32)?;
            Some((v.shmid, format!("/proc/{me}/fd/{}", fd.as_raw_fd())))
        })
        .collect()
}

/// The files mapped by `live`, a process of a mount namespace pivoted
/// into a root of its own (`ns::mnt::pivot`), that are not on a mount of
/// its namespace: files of the tree root's namespace (its exe and
/// libraries, mapped before it pivoted), which its namespace no longer
/// has. crust opens them through the root's view and gives them. A file
/// without a recorded mount is taken as the root namespace's when the
/// root's view has it.
fn foreign_mapped(img: &ImageSet, live: &LiveImage, out: &mut Paths) {
    let Some(own) = crate::ns::ids::NsKind::Mnt
        .id_in(&live.ids)
        .and_then(|id| img.ns.mnt_pivoted(id))
    else {
        return;
    };
    let files = &live.files;
    for v in live
        .mm
        .vmas
        .iter()
        .filter(|v| v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0)
        .filter(|v| v.status & vs::AREA_MEMFD == 0)
    {
        if out.contains_key(&v.shmid) {
            continue;
        }
        let mnt = files.mnt_id_of(v.shmid);
        if mnt.is_some_and(|m| u32::try_from(m).is_ok_and(|m| own.contains(&m))) {
            continue;
        }
        let Some(path) = files.path_of(v.shmid) else {
            continue;
        };
        let Some(host) = crate::util::view::host_path(Path::new(&path)) else {
            continue;
        };
        if mnt.is_none() && std::fs::symlink_metadata(&host).is_err() {
            continue;
        }
        out.insert(v.shmid, host.to_string_lossy().into_owned());
    }
}

/// The memfds mapped by `live` that crust made already because an fd of
/// the tree is on them, by inode number: the task maps the object through
/// crust's own description (a dup of it, given to the task), so that fd
/// and mapping stay one object. The read-write description of lowest id
/// is memfd_create's own (see `files::memfd`), which counts as no writer.
fn made_memfds(
    live: &LiveImage,
    shared: &crate::files::kind::OpenFiles,
    memfds: &mem::Memfds,
) -> Result<std::collections::HashMap<u64, mem::MadeObject>, Error> {
    let mut out = std::collections::HashMap::new();
    for v in live
        .mm
        .vmas
        .iter()
        .filter(|v| v.status & vs::AREA_MEMFD != 0)
    {
        let Some(inode) = memfds.get(&(v.shmid as u32)) else {
            continue;
        };
        let mut fds: Vec<(u32, std::os::fd::BorrowedFd<'_>)> = memfds
            .iter()
            .filter(|(_, m)| m.inode_id == inode.inode_id)
            .filter_map(|(id, _)| Some((*id, shared.get(*id)?)))
            .collect();
        fds.sort_by_key(|(id, fd)| {
            let rw = crust_sys::pipe::status_flags(*fd)
                .is_ok_and(|f| f & libc::O_ACCMODE == libc::O_RDWR);
            (!rw, *id)
        });
        let Some((_, fd)) = fds.first() else {
            continue;
        };
        let own = fd.try_clone_to_owned().map_err(sys_err(
            process::getpid(),
            format!("dup of memfd {}", inode.shmid),
        ))?;
        out.insert(
            u64::from(inode.shmid),
            mem::MadeObject(std::sync::Arc::new(own)),
        );
    }
    Ok(out)
}

pub(super) fn build_memory(
    task: &mut Task,
    img: &ImageSet,
    (live, via_crust, objects): (&LiveImage, &Paths, &Objects),
    parent: Option<&MmEntry>,
    tramp: u64,
    (filler, lazy): (&mem::Filler, bool),
) -> Result<
    (
        u64,
        std::sync::Arc<mem::Pending>,
        Option<crate::lazy::LazyTask>,
    ),
    Error,
> {
    let dir: &Path = &img.dir;
    let proc = ProcRoot::default();
    let main = task;
    // /proc wants crust's view of the pid.
    let host = main.pid();
    let rseq = main.rseq();
    let mut r = Remote::on_trampoline(main, tramp);
    // 1. Forget crust: its rseq area, its mappings, its fds (in one
    // stop: the unregister comes before crust's memory goes).
    let mut forget = crate::task::remote::Batch::new(Some(crate::task::remote::batch_code(tramp)));
    if let Some(rs) = rseq.filter(|x| x.rseq_abi_pointer != 0) {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        forget.push(
            &mut r,
            "rseq unregister".into(),
            libc::SYS_rseq,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                rs.signature as u64,
                0,
                0,
            ],
            None,
        )?;
    }
    let maps = crust_proc::maps(&proc, host).map_err(crate::util::proc_err(host))?;
    let inherited = inherited_ranges(host, img, (live, lazy), parent, &maps)?;
    let special = unmap_all_but(&mut r, &mut forget, &maps, &inherited, tramp)?;
    const SYS_CLOSE_RANGE: i64 = 436;
    if !live.files_from_parent {
        forget.push(
            &mut r,
            "close_range".into(),
            SYS_CLOSE_RANGE,
            [0, u32::MAX as u64, 0, 0, 0, 0],
            None,
        )?;
    }
    forget.flush(&mut r)?;

    // 2. The vDSO goes where the image had it.
    move_vdso(&mut r, dir, &live.mm, &special, tramp + TRAMP_SIZE)?;

    // 3. Memory: pages from the local images, filled on the filler's
    // threads.
    let local = mem::LocalImages::with_filler(dir, filler);
    let mut lazy_task = None;
    let lazy_source;
    let source: &dyn mem::PageSource = if lazy {
        // `--lazy-pages`: private anonymous memory is left empty for the
        // lazy-pages daemon, but for VMAs kept from the parent and the
        // pages the kernel writes during the restore (rseq areas).
        let mut eager: Vec<std::ops::Range<u64>> = inherited.iter().map(|&(s, e)| s..e).collect();
        eager.extend(crate::lazy::rseq_pages(live.threads.iter().filter_map(
            |t| {
                let rs = t.core.thread_core.as_ref()?.rseq_entry.as_ref()?;
                Some((rs.rseq_abi_pointer, u64::from(rs.rseq_abi_size)))
            },
        )));
        // Pages the images keep plain (not PE_LAZY) are filled now.
        let img_pid = live.threads.first().map_or(host, |t| t.tid);
        eager.extend(crate::lazy::marks::eager_too(dir, img_pid, &eager)?);
        let ranges = crate::lazy::lazy_ranges(&live.mm, &eager);
        lazy_source = crate::lazy::LazySource::new(&local, ranges.clone());
        lazy_task = Some(crate::lazy::open_in_task(
            &mut r,
            live.threads.first().map_or(host, |t| t.tid),
            ranges,
        )?);
        &lazy_source
    } else {
        &local
    };
    let files = &live.files;
    let pages = mem::restore_vmas(
        &mut r,
        dir,
        &live.mm,
        // A lazy restore leaves huge pages to the kernel (its pages come
        // by UFFDIO_COPY, 4 KiB each; no page may be touched before).
        (
            live.pages_id,
            &live.runs,
            if lazy { &[] } else { &live.huge },
        ),
        &inherited,
        &mem::VmaSources {
            paths: &|id| files.path_of(id),
            memfds: &img.memfds,
            made_objects: &|id| objects.get(&id).cloned(),
            attach_sysv: &crate::ns::sysvipc::attach,
            crust_paths: &|id| via_crust.get(&id).cloned(),
        },
        source,
        Some(crate::task::remote::batch_code(tramp)),
    )?;
    let exe = files
        .path_of(live.mm.exe_file_id as u64)
        .ok_or_else(|| Error::Restore {
            pid: host,
            what: format!(
                "its exe, file id {}, is not in files.img (checked at load)",
                live.mm.exe_file_id
            ),
        })?;
    mem::set_mm_map(&mut r, &live.mm, &exe)?;
    Ok((pages.0, pages.1, lazy_task))
}

/// The ranges of the task (a copy of its parent at clone time) to keep:
/// private VMAs holding copy-on-write pages shared with the parent, and
/// shared memory objects the parent maps at the same places (keeping them
/// is what keeps them shared). Each must be there in the task's `maps`.
fn inherited_ranges(
    host: i32,
    img: &ImageSet,
    (live, lazy): (&LiveImage, bool),
    parent: Option<&MmEntry>,
    maps: &[crust_proc::MapEntry],
) -> Result<Vec<(u64, u64)>, Error> {
    let mut inherited = mem::inherited_vmas(&live.mm, &live.runs);
    let (shared, candidates) = match parent {
        Some(pm) => (
            mem::inherited_shmem(&img.dir, &live.mm, pm, &img.memfds)?,
            mem::cow_candidates(&live.mm, pm),
        ),
        None => (Vec::new(), Vec::new()),
    };
    for &(s, e) in &shared {
        if !maps.iter().any(|m| m.start == s && m.end == e && m.shared) {
            return Err(Error::Restore {
                pid: host,
                what: format!(
                    "shared memory at {s:#x}-{e:#x} is the parent's, but the parent's restored mapping is not there"
                ),
            });
        }
    }
    for &(s, e) in &inherited {
        let cur = anon_up_to(maps, s, e);
        if cur < e {
            return Err(Error::Restore {
                pid: host,
                what: format!(
                    "pages at {s:#x}-{e:#x} are shared with the parent process, but the parent's restored memory is not there ({cur:#x})"
                ),
            });
        }
    }
    // VMAs that may share pages with the parent's (every page stored, as
    // CRIU stores them): kept when the parent's copy is there, and none of
    // their pages was left on the source (`dump --lazy-pages`).
    let img_pid = live.threads.first().map_or(host, |t| t.tid);
    let left = match lazy {
        true => crate::lazy::marks::left_on_source(&img.dir, img_pid)?,
        false => Vec::new(),
    };
    for (s, e) in candidates {
        if left.iter().any(|r| r.start < e && s < r.end) {
            continue;
        }
        if !inherited.contains(&(s, e)) && private_up_to(maps, s, e) == e {
            inherited.push((s, e));
        }
    }
    inherited.extend(shared);
    Ok(inherited)
}

/// How far from `s` (up to `e`) the task's `maps` hold private memory
/// (anonymous, or a private file mapping: the parent's copy of the same
/// file, `mem::cow_candidates` having compared the images) without a gap.
fn private_up_to(maps: &[crust_proc::MapEntry], s: u64, e: u64) -> u64 {
    let mut cur = s;
    while cur < e {
        let private = maps.iter().find(|m| {
            m.start <= cur
                && cur < m.end
                && !m.shared
                && matches!(
                    m.kind(),
                    MapKind::Anon
                        | MapKind::Heap
                        | MapKind::Stack
                        | MapKind::AnonNamed(_)
                        | MapKind::File
                )
        });
        match private {
            Some(m) => cur = m.end.min(e),
            None => break,
        }
    }
    cur
}

/// How far from `s` (up to `e`) the task's `maps` hold private anonymous
/// memory without a gap.
fn anon_up_to(maps: &[crust_proc::MapEntry], s: u64, e: u64) -> u64 {
    let mut cur = s;
    while cur < e {
        let anon = maps.iter().find(|m| {
            m.start <= cur
                && cur < m.end
                && !m.shared
                && matches!(
                    m.kind(),
                    MapKind::Anon | MapKind::Heap | MapKind::Stack | MapKind::AnonNamed(_)
                )
        });
        match anon {
            Some(m) => cur = m.end.min(e),
            None => break,
        }
    }
    cur
}

/// Unmap every mapping of the task but the trampoline, the kernel's
/// special areas and the `inherited` ranges. Returns the special areas
/// (vDSO and vvar) with where they are.
fn unmap_all_but(
    r: &mut Remote<'_>,
    b: &mut crate::task::remote::Batch,
    maps: &[crust_proc::MapEntry],
    inherited: &[(u64, u64)],
    tramp: u64,
) -> Result<Vec<(MapKind, u64, u64)>, Error> {
    let mut special: Vec<(MapKind, u64, u64)> = Vec::new();
    for m in maps {
        match m.kind() {
            MapKind::Vdso | MapKind::Vvar | MapKind::VvarVclock => {
                special.push((m.kind(), m.start, m.end));
                continue;
            }
            MapKind::Vsyscall => continue,
            _ => {}
        }
        if m.start == tramp {
            continue;
        }
        // Unmap what is outside the inherited ranges.
        let mut cur = m.start;
        let mut cuts: Vec<(u64, u64)> = inherited
            .iter()
            .copied()
            .filter(|&(s, e)| s < m.end && e > m.start)
            .collect();
        cuts.sort_unstable();
        for (s, e) in cuts.into_iter().chain(std::iter::once((m.end, m.end))) {
            if s > cur {
                b.push(
                    r,
                    format!("munmap {cur:#x}-{s:#x}"),
                    libc::SYS_munmap,
                    [cur, s - cur, 0, 0, 0, 0],
                    None,
                )?;
            }
            cur = cur.max(e);
        }
    }
    Ok(special)
}

/// Move [vvar], [vvar_vclock] and [vdso] of the task to the addresses the
/// image records (via a temporary spot, so no move lands on another).
pub(super) fn move_vdso(
    r: &mut Remote<'_>,
    dir: &Path,
    mm: &MmEntry,
    special: &[(MapKind, u64, u64)],
    temp: u64,
) -> Result<(), Error> {
    let want_vvar = mm.vmas.iter().find(|v| v.status & vs::AREA_VVAR != 0);
    let want_vdso = mm.vmas.iter().find(|v| v.status & vs::AREA_VDSO != 0);
    let get = |k: MapKind| {
        special
            .iter()
            .find(|(kk, _, _)| *kk == k)
            .map(|x| (x.1, x.2))
    };
    let (vvar, vclock, vdso) = (
        get(MapKind::Vvar),
        get(MapKind::VvarVclock),
        get(MapKind::Vdso),
    );
    let Some(want_vdso) = want_vdso else {
        // The task had no vDSO: drop ours.
        for (_, s, e) in special {
            r.call("munmap vdso", libc::SYS_munmap, [*s, e - s, 0, 0, 0, 0])?;
        }
        return Ok(());
    };
    let Some(vdso) = vdso else {
        return Err(Error::Restore {
            pid: r.pid(),
            what: "crust has no vDSO to give the restored task".into(),
        });
    };
    // Our layout: [vvar][vvar_vclock][vdso], back to back.
    let ours_vvar_len =
        vvar.map(|(s, e)| e - s).unwrap_or(0) + vclock.map(|(s, e)| e - s).unwrap_or(0);
    let want_vvar_len = want_vvar.map(|v| v.end - v.start).unwrap_or(0);
    if vdso.1 - vdso.0 != want_vdso.end - want_vdso.start
        || ours_vvar_len != want_vvar_len
        || want_vvar.map(|v| v.end != want_vdso.start).unwrap_or(false)
    {
        return Err(bad(
            dir,
            format!(
                "the image's vDSO layout (vvar {want_vvar_len:#x} bytes, vdso {:#x} bytes) differs from this kernel's (vvar {ours_vvar_len:#x}, vdso {:#x}); was it dumped on another kernel?",
                want_vdso.end - want_vdso.start,
                vdso.1 - vdso.0
            ),
        ));
    }
    let mut parts: Vec<(u64, u64, u64)> = Vec::new(); // (from, len, to)
    let mut to = want_vvar.map(|v| v.start).unwrap_or(want_vdso.start);
    for (s, e) in [vvar, vclock].into_iter().flatten() {
        parts.push((s, e - s, to));
        to += e - s;
    }
    parts.push((vdso.0, vdso.1 - vdso.0, want_vdso.start));
    if parts.iter().all(|(f, _, t)| f == t) {
        return Ok(());
    }
    let mremap = |r: &mut Remote<'_>, from: u64, len: u64, to: u64| -> Result<(), Error> {
        let got = r.call(
            &format!("mremap {from:#x} -> {to:#x}"),
            libc::SYS_mremap,
            [
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                to,
                0,
            ],
        )?;
        if got != to {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("mremap of the vDSO went to {got:#x}, not {to:#x}"),
            });
        }
        Ok(())
    };
    let mut t = temp;
    let mut staged = Vec::new();
    for (from, len, to) in &parts {
        mremap(r, *from, *len, t)?;
        staged.push((t, *len, *to));
        t += len;
    }
    for (from, len, to) in staged {
        mremap(r, from, len, to)?;
    }
    Ok(())
}

/// Process `c` just cloned by `p`: into its own mount namespace if it is
/// not its parent's (joined, or made from a copy it unshares).
fn enter_mnt_ns(
    img: &ImageSet,
    created: &mut Created,
    c: usize,
    p: &ProcImage,
    tramp: u64,
) -> Result<(), Error> {
    let child = img.procs.get(c).ok_or_else(|| Error::Restore {
        pid: 0,
        what: format!("process {c} is not in the image set"),
    })?;
    let mnt = |q: &ProcImage| {
        let l = q.live.as_ref()?;
        crate::ns::ids::NsKind::Mnt.id_in(&l.ids)
    };
    use crate::ns::mnt::multi::Join;
    match img.ns.mnt_to_join(child.pid(), mnt(child), mnt(p))? {
        Join::Stay => {}
        Join::Fd(ns) => {
            let mut r = Remote::on_trampoline(created.main_of(c, child.pid())?, tramp);
            join_ns(&mut r, std::os::fd::AsFd::as_fd(&ns), NsKind::Mnt)?;
        }
        Join::Make(id, root) => {
            if let Some(ns) = root {
                let mut r = Remote::on_trampoline(created.main_of(c, child.pid())?, tramp);
                join_ns(&mut r, std::os::fd::AsFd::as_fd(&ns), NsKind::Mnt)?;
            }
            let task = created.main_of(c, child.pid())?;
            let host = task.pid();
            Remote::on_trampoline(task, tramp).call(
                "unshare(CLONE_NEWNS)",
                libc::SYS_unshare,
                [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0],
            )?;
            img.ns.mnt_made_in(host, id)?;
        }
    }
    Ok(())
}

/// The tree's other mount namespaces, each made by the root (`root`, on
/// its trampoline, its own namespace prepared) before any file is opened:
/// it unshares a copy of its namespace (owned by the tree's user
/// namespace), crust makes it that one and keeps an fd on it, and the root
/// joins its own again. A file may be held in one namespace and opened in
/// another, so every one exists before the files are made; the processes
/// of each join it when they are cloned.
pub(super) fn make_mnt_subs(img: &ImageSet, root: &mut Task, tramp: u64) -> Result<(), Error> {
    let host = root.pid();
    let (ids, back) = img.ns.mnt_subs_to_make(host)?;
    let Some(back) = back else {
        return Ok(());
    };
    for id in ids {
        let mut r = Remote::on_trampoline(root, tramp);
        r.call(
            "unshare(CLONE_NEWNS)",
            libc::SYS_unshare,
            [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0],
        )?;
        let made = img.ns.mnt_made_in(host, id);
        // Back in its own, made or not.
        join_ns(&mut r, std::os::fd::AsFd::as_fd(&back), NsKind::Mnt)?;
        made?;
    }
    Ok(())
}

/// Process `c` just cloned: into its own network namespace, one of the
/// tree's, when it is not the one it was born in (its parent's).
fn enter_net_ns(img: &ImageSet, created: &mut Created, c: usize, tramp: u64) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let child = img.procs.get(c).ok_or_else(|| Error::Restore {
        pid: 0,
        what: format!("process {c} is not in the image set"),
    })?;
    let Some(id) = child.live.as_ref().and_then(|l| NsKind::Net.id_in(&l.ids)) else {
        return Ok(());
    };
    let files = img.ns.net_files();
    if files.is_empty() {
        return Ok(());
    }
    let Some((_, ns)) = files.iter().find(|(i, _)| *i == id) else {
        return Err(Error::Restore {
            pid: child.pid(),
            what: format!(
                "it was in network namespace {id}, which is not among the tree's in the images (no netns-{id}.img)"
            ),
        });
    };
    let task = created.main_of(c, child.pid())?;
    let now = std::fs::metadata(format!("/proc/{}/ns/net", task.pid())).map(|m| m.ino());
    if now.ok() == ns.metadata().ok().map(|m| m.ino()) {
        return Ok(());
    }
    let mut r = Remote::on_trampoline(task, tramp);
    join_ns(&mut r, std::os::fd::AsFd::as_fd(ns), NsKind::Net)
}

/// Make the task `r` (just cloned; alone in its fs struct for a mount
/// namespace) join the namespace of kind `kind` open as `ns` in crust: the
/// fd is given to it at a free number, setns, closed.
fn join_ns(r: &mut Remote<'_>, ns: std::os::fd::BorrowedFd<'_>, kind: NsKind) -> Result<(), Error> {
    let pid = r.pid();
    let free = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .max()
                .unwrap_or(2)
        })
        .unwrap_or(2)
        + 1;
    let gift = crate::files::fdpass::Gift {
        fd: ns,
        target: free,
        cloexec: true,
    };
    crate::files::fdpass::give_fds(r, &[gift])?;
    let joined = r.call(
        &format!("setns into its {kind} namespace"),
        libc::SYS_setns,
        [free as u64, kind.clone_flag(), 0, 0, 0, 0],
    );
    let closed = r.call("close", libc::SYS_close, [free as u64, 0, 0, 0, 0, 0]);
    joined?;
    closed?;
    debug!("{pid}: joined {kind} namespace");
    Ok(())
}
