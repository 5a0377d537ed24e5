use super::*;
use crate::ns::ids::NsKind;

pub(super) fn bad(dir: &Path, why: impl Into<String>) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

pub(super) fn load(opts: &Options) -> Result<ImageSet, Error> {
    let dir = std::fs::canonicalize(&opts.images_dir).map_err(|source| Error::Io {
        op: "cannot open images directory",
        path: opts.images_dir.clone(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(bad(&dir, "not a directory"));
    }
    let inv: InventoryEntry = read_one(&dir, ImageType::Inventory, 0)?;
    if inv.img_version != crust_images::consts::CRTOOLS_IMAGES_V1_1 {
        return Err(bad(
            &dir,
            format!(
                "image version {} is not supported (expected {})",
                inv.img_version,
                crust_images::consts::CRTOOLS_IMAGES_V1_1
            ),
        ));
    }
    let netlock =
        crate::net::netlock::restore_method(inv.network_lock_method, opts.network_lock_arg())
            .map_err(Error::NetLock)?;
    if inv.tcp_close == Some(true) && !opts.tcp_close {
        return Err(bad(
            &dir,
            "it was dumped with --tcp-close: restore it with --tcp-close too",
        ));
    }
    let tree: Vec<PstreeEntry> = read_image(&dir, ImageType::Pstree, 0)?;
    // files.img once, for every fd table and every kind of file.
    let loaded = LoadedFiles::read(&dir);
    let inherited = crate::files::inherit::Inherited::resolve(&loaded, &opts.inherit_fds)?;
    let mut memfds = None;
    // Paths of a tree with a mount namespace of its own are checked
    // through its mounts.
    let _view = crate::ns::mnt::restore::view_for_load(
        &crate::ns::tree::LoadCtx { dir: &dir, opts },
        inv.root_ids.as_ref(),
        tree.first().map(|t| t.pid),
    )?;
    let mut procs = load_procs(&dir, tree, opts, &loaded, &inherited, &mut memfds)?;
    let sessions = super::sessions::plan(&mut procs)?;
    let (files, locks, owners) = load_files(&dir, &loaded, opts, netlock, &procs, inherited)?;
    let root_ns = inv.root_ids.as_ref().and_then(|r| NsKind::Pid.id_in(r));
    let tree_ns = procs[0].live.as_ref().and_then(|l| l.pid_ns_id);
    let new_pidns = tree_ns.is_some() && root_ns.is_some() && tree_ns != root_ns;
    if new_pidns && procs[0].entry.pid != 1 {
        return Err(bad(
            &dir,
            format!(
                "the tree has a pid namespace of its own but its root is pid {}, not 1",
                procs[0].entry.pid
            ),
        ));
    }
    let ipcns = crate::ns::sysvipc::load_for_tree(
        &dir,
        inv.root_ids.as_ref().and_then(|r| NsKind::Ipc.id_in(r)),
        procs.iter().filter_map(|p| {
            Some((
                p.pid(),
                NsKind::Ipc.id_in(&p.live.as_ref()?.ids),
                &p.live.as_ref()?.mm,
            ))
        }),
    )?;
    for p in &procs {
        if let Some(l) = &p.live {
            if l.pid_ns_id != tree_ns {
                return Err(Error::unsupported(format!(
                    "process {} is in another pid namespace than the root (nested pid namespaces)",
                    p.entry.pid
                )));
            }
        }
    }
    let seccomp = load_seccomp(&dir, &procs)?;
    // cgroup.img, checked (the restore made its cgroups already).
    let cgroups = crate::cgroup::restore::Plan::load(&dir, inv.root_cg_set)?;
    for t in procs
        .iter()
        .filter_map(|p| p.live.as_ref())
        .flat_map(|l| &l.threads)
    {
        cgroups.check_set(&dir, t.tid, crate::cgroup::restore::set_of(&t.core))?;
    }
    let ns = match procs.first().and_then(|p| p.live.as_ref()) {
        Some(root) => crate::ns::tree::TreeNamespaces::load(
            &crate::ns::tree::LoadCtx { dir: &dir, opts },
            inv.root_ids.as_ref(),
            &root.ids,
        )?,
        None => Default::default(),
    };
    // --join-ns ipc: the namespace given is taken as it is; the tree's
    // System V objects cannot be made in it.
    let ipcns = match ipcns {
        Some(n) if ns.joined().joins(NsKind::Ipc) => {
            if !n.is_empty() {
                return Err(Error::unsupported(
                    "the images hold System V IPC objects of the tree, which crust cannot make in the IPC namespace given with --join-ns ipc: restore without joining it".to_string(),
                ));
            }
            None
        }
        other => other,
    };
    Ok(ImageSet {
        sessions,
        ns,
        seccomp,
        dir,
        procs,
        new_pidns,
        ipcns,
        files,
        locks,
        owners,
        netlock,
        memfds: memfds.unwrap_or_default(),
        cgns: None,
    })
}

/// seccomp.img (optional: CRIU's sets without filters may lack it), each
/// thread's mode and filter chain checked against it.
fn load_seccomp(dir: &Path, procs: &[ProcImage]) -> Result<task::seccomp::SeccompImage, Error> {
    use crust_images::image::ImageReader;
    let name = ImageType::Seccomp.file_name(0);
    let err = |source| Error::Image {
        what: format!("cannot read image {name}"),
        source,
    };
    let entry = match ImageReader::open_typed(dir, ImageType::Seccomp, &name) {
        Ok(mut r) => r.read_remaining().map_err(err)?.into_iter().next(),
        Err(e) if e.is_missing() => None,
        Err(e) => return Err(err(e)),
    };
    let img = task::seccomp::SeccompImage::new(entry);
    for live in procs.iter().filter_map(|p| p.live.as_ref()) {
        for t in &live.threads {
            img.check_core(&t.core)
                .map_err(|why| bad(dir, format!("core-{}.img: {why}", t.tid)))?;
        }
    }
    Ok(img)
}

/// Every process of pstree.img, in order (parents before children),
/// with what its live tasks need; sharing between processes checked.
fn load_procs(
    dir: &Path,
    tree: Vec<PstreeEntry>,
    opts: &Options,
    loaded: &LoadedFiles,
    inherited: &crate::files::inherit::Inherited,
    memfds: &mut Option<mem::Memfds>,
) -> Result<Vec<ProcImage>, Error> {
    super::pstree::check_tree(&tree).map_err(|why| bad(dir, why))?;
    let mut procs = Vec::with_capacity(tree.len());
    // Files checked already (by id in files.img): the processes of a tree
    // share most (their exe, libraries, cwd), each checked once.
    let mut checked = std::collections::HashSet::new();
    let mut sigactions = Sigactions::default();
    for (i, e) in tree.into_iter().enumerate() {
        if i == 0 && e.ppid != 0 {
            debug!("root {} had parent {} outside the tree", e.pid, e.ppid);
        }
        let shared = (loaded, inherited, &mut checked, &mut sigactions);
        procs.push(load_proc(dir, e, opts, shared, memfds)?);
    }
    if procs.first().is_some_and(|p| p.live.is_none()) {
        let pid = procs.first().map(|p| p.entry.pid).unwrap_or(0);
        return Err(bad(
            dir,
            format!("core-{pid}.img says the root process {pid} is dead: nothing would run"),
        ));
    }
    super::share::with_parents(dir, &mut procs)?;
    add_dead_proc_helpers(dir, &mut procs)?;
    Ok(procs)
}

/// A helper task for each dead process whose /proc directory the tree
/// had open (its cwd in /proc/N, an fd on /proc/N/...): a child of the
/// root, in its session and group, alive while files are opened, then
/// reaped, so that what was opened is unhashed again.
fn add_dead_proc_helpers(dir: &Path, procs: &mut Vec<ProcImage>) -> Result<(), Error> {
    let dead = crate::files::ghost::dead_proc_pids(dir)?;
    let Some(root) = procs.first().map(|p| p.entry.clone()) else {
        return Ok(());
    };
    for pid in dead {
        if procs.iter().any(|p| p.entry.pid == pid) {
            // A process of the tree has that pid again: /proc/N exists.
            continue;
        }
        if pid == 0 || procs.iter().any(|p| p.entry.threads.contains(&pid)) {
            return Err(bad(
                dir,
                format!("remap-fpath.img names the dead process {pid}, whose pid a thread of the tree has"),
            ));
        }
        debug!("helper {pid} holds /proc/{pid} while files are opened");
        procs.push(ProcImage {
            entry: PstreeEntry {
                pid,
                ppid: root.pid,
                pgid: root.pgid,
                sid: root.sid,
                threads: vec![pid],
                ..Default::default()
            },
            live: None,
            exit_code: 0,
            helper: true,
        });
    }
    Ok(())
}

/// Every kind of file of the registry (see [`crate::files::kind`]), with
/// the inherited fds first; then file locks and owners, which apply to
/// files of every kind.
fn load_files(
    dir: &Path,
    loaded: &LoadedFiles,
    opts: &Options,
    netlock: crate::net::netlock::Method,
    procs: &[ProcImage],
    inherited: crate::files::inherit::Inherited,
) -> Result<(FileKinds, RestoreLocks, crate::files::fown::Owners), Error> {
    let ctx = LoadCtx {
        dir,
        files: loaded,
        opts,
        netlock,
        inherited: &inherited,
        procs: procs
            .iter()
            .map(|p| ProcFds {
                pid: p.pid(),
                sid: p.entry.sid as i32,
                pgid: p.entry.pgid as i32,
                fds: p.live.as_ref().map(|l| l.files.fds.as_slice()),
                ids: p.live.as_ref().map(|l| &l.ids),
            })
            .collect(),
    };
    let mut files = FileKinds::load_with(&ctx, crate::registry::RESTORE)?;
    let locks = RestoreLocks::load(dir, opts.file_locks, ctx.live())?;
    let owners = crate::files::fown::Owners::load(dir, loaded)?;
    drop(ctx);
    files.put_first(Box::new(inherited));
    Ok((files, locks, owners))
}

pub(super) fn load_proc(
    dir: &Path,
    entry: PstreeEntry,
    opts: &Options,
    (loaded, inherited, checked, sigactions): (
        &LoadedFiles,
        &crate::files::inherit::Inherited,
        &mut std::collections::HashSet<u32>,
        &mut Sigactions,
    ),
    memfds: &mut Option<mem::Memfds>,
) -> Result<ProcImage, Error> {
    let pid = entry.pid as i32;
    let mut main: CoreEntry = read_one(dir, ImageType::Core, pid as u64)?;
    check_arch(dir, pid, &main)?;
    let actions = main
        .tc
        .as_mut()
        .map(|tc| std::mem::take(&mut tc.sigactions))
        .unwrap_or_default();
    let tc = main
        .tc
        .as_ref()
        .ok_or_else(|| bad(dir, format!("core-{pid}.img has no task core")))?;
    if tc.task_state == task_state::HELPER {
        return Ok(ProcImage {
            exit_code: 0,
            entry,
            live: None,
            helper: true,
        });
    }
    let kind =
        super::pstree::entry_kind(&entry).map_err(|w| bad(dir, format!("pstree.img: {w}")))?;
    if kind == super::pstree::EntryKind::Zombie
        && tc.task_state != task_state::DEAD
        && entry.threads != [0]
    {
        return Err(bad(
            dir,
            format!(
                "pstree.img: process {pid} lists thread {:?} first, not itself, and core-{pid}.img says it is not a zombie",
                entry.threads
            ),
        ));
    }
    if tc.task_state == task_state::DEAD || kind != super::pstree::EntryKind::Live {
        return Ok(ProcImage {
            exit_code: tc.exit_code,
            entry,
            live: None,
            helper: false,
        });
    }
    if tc.task_state != task_state::ALIVE && tc.task_state != task_state::STOPPED {
        return Err(Error::unsupported(format!(
            "restoring task {pid} in state {:#x} (helper tasks are not supported yet)",
            tc.task_state
        )));
    }
    let threads = load_threads(dir, &entry, main)?;
    let ids: TaskKobjIdsEntry = read_one(dir, ImageType::Ids, pid as u64)?;
    let mut mm: MmEntry = read_one(dir, ImageType::Mm, pid as u64)?;
    let guards = mem::split_guards(dir, &mut mm)?;
    mem::validate_vmas(dir, &mm)?;
    let huge = mem::load_huge_ranges(dir, pid as u64, &mm)?;
    // The memfd inodes, from files.img as read once, the first time a
    // process maps a memfd.
    if memfds.is_none() && mem::maps_memfd(&mm) {
        *memfds = Some(crate::files::memfds_of(dir, loaded)?);
    }
    mem::validate_shmem(dir, &mm, memfds.as_ref().unwrap_or(&mem::Memfds::new()))?;
    let (pages_id, runs) = mem::load_pagemap(dir, pid, &mm, opts.lazy_pages)?;
    let fs: FsEntry = read_one(dir, ImageType::Fs, pid as u64)?;
    let files = RestoreFiles::load(dir, loaded, ids.files_id).map_err(|e| match e {
        // Name what refers to the fd table: a missing one is not "no fds".
        Error::Image { what, source } if source.is_missing() => Error::Image {
            what: format!(
                "{what} (ids-{pid}.img gives process {pid} fd table {})",
                ids.files_id
            ),
            source,
        },
        e => e,
    })?;
    // Every file the task needs must be there and unchanged.
    // (Not the files replaced by inherited fds.)
    let mut needed: Vec<u32> = files
        .fds
        .iter()
        .map(|f| f.id)
        .filter(|id| !inherited.contains(*id))
        .collect();
    for id in [mm.exe_file_id, fs.cwd_id, fs.root_id] {
        if !files.regs.contains_key(&id) {
            return Err(bad(
                dir,
                format!("file id {id} (exe, cwd or root of {pid}) is missing from files.img"),
            ));
        }
        needed.push(id);
    }
    for v in &mm.vmas {
        if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            needed.push(v.shmid as u32);
        }
    }
    needed.sort_unstable();
    needed.dedup();
    for id in needed {
        if checked.insert(id) {
            files.check(id, opts)?;
        }
    }
    Ok(ProcImage {
        entry,
        exit_code: 0,
        live: Some(LiveImage {
            threads,
            mm,
            fs,
            files,
            pages_id,
            runs,
            guards,
            huge,
            pid_ns_id: NsKind::Pid.id_in(&ids),
            ids,
            sigactions: sigactions.intern(actions),
            files_from_parent: false,
        }),
        helper: false,
    })
}

/// The threads of a live process: the main one's core already read
/// (`main`), the others' from their core-TID.img. (pstree.img's thread
/// list is checked: the first is the process.)
fn load_threads(
    dir: &Path,
    entry: &PstreeEntry,
    main: CoreEntry,
) -> Result<Vec<ThreadImage>, Error> {
    let mut threads = Vec::with_capacity(entry.threads.len());
    for (i, &tid) in entry.threads.iter().enumerate() {
        let core = if i == 0 {
            main.clone()
        } else {
            let c: CoreEntry = read_one(dir, ImageType::Core, tid as u64)?;
            check_arch(dir, tid as i32, &c)?;
            c
        };
        let ti = core
            .thread_info
            .as_ref()
            .ok_or_else(|| bad(dir, format!("core-{tid}.img has no x86 thread_info")))?;
        if ti.gpregs.mode.unwrap_or(1) != 1 {
            return Err(Error::unsupported("restoring 32-bit (compat) tasks"));
        }
        let xstate = xsave::xstate_from_fpregs(&ti.fpregs).map_err(|m| {
            bad(
                dir,
                format!("the image uses {} registers, which this CPU lacks", m.0),
            )
        })?;
        threads.push(ThreadImage {
            tid: tid as i32,
            core,
            xstate,
        });
    }
    Ok(threads)
}

pub(super) fn check_arch(dir: &Path, id: i32, core: &CoreEntry) -> Result<(), Error> {
    if core.mtype != core_entry_march::X86_64 {
        return Err(bad(
            dir,
            format!(
                "core-{id}.img is for another architecture ({}); this machine is x86_64",
                march_name(core.mtype)
            ),
        ));
    }
    Ok(())
}

pub(super) fn march_name(m: i32) -> String {
    use crust_images::proto::core::core_entry_march as a;
    match m {
        a::ARM => "arm".into(),
        a::AARCH64 => "aarch64".into(),
        a::PPC64 => "ppc64".into(),
        a::S390 => "s390".into(),
        a::MIPS => "mips".into(),
        a::LOONGARCH64 => "loongarch64".into(),
        a::RISCV64 => "riscv64".into(),
        other => format!("unknown machine type {other}"),
    }
}

pub(super) fn pid_taken(pid: i32) -> Error {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string();
    Error::PidTaken { pid, comm }
}

/// The signal actions of the processes loaded so far, each distinct list
/// once: a tree's processes mostly have the same (64 entries of some 80
/// bytes each per process otherwise, at the restore's peak of memory).
#[derive(Default)]
pub(super) struct Sigactions {
    seen: std::collections::HashMap<u64, Vec<Arc<[SaEntry]>>>,
}

impl Sigactions {
    fn intern(&mut self, actions: Vec<SaEntry>) -> Arc<[SaEntry]> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for a in &actions {
            (a.sigaction, a.flags, a.restorer, a.mask).hash(&mut h);
        }
        let same = self.seen.entry(h.finish()).or_default();
        if let Some(s) = same.iter().find(|s| ***s == *actions) {
            return Arc::clone(s);
        }
        let s: Arc<[SaEntry]> = actions.into();
        same.push(Arc::clone(&s));
        s
    }
}
