//! `crust dump`: freeze a process, write its state as CRIU images, then
//! kill it (or let it run on).

use crate::files::FileTable;
use crate::remote::Remote;
use crate::util::{compel_err, proc_err, sys_err, us_since, write_image};
use crate::{mem, task, DumpOptions, DumpStats, Error};
use crust_compel::Task;
use crust_images::image::ImageType;
use crust_images::proto::core::TaskKobjIdsEntry;
use crust_images::proto::fs::FsEntry;
use crust_images::proto::inventory::{InventoryEntry, PluginsEntry};
use crust_images::proto::pstree::PstreeEntry;
use crust_images::proto::seccomp::SeccompEntry;
use crust_images::proto::stats::{DumpStatsEntry, StatsEntry};
use crust_images::proto::timens::{TimensEntry, Timespec};
use crust_proc::ProcRoot;
use crust_sys::{process, RemoteAddr, PAGE_SIZE};
use log::{debug, info, warn};
use std::path::Path;
use std::time::{Duration, Instant};

/// CRIU's image set version (CRTOOLS_IMAGES_V1_1).
pub const IMG_VERSION: u32 = 2;
/// Files and ids of crust itself get id 1; the dumped task gets 2.
const TASK_KOBJ_ID: u32 = 2;

/// Namespace kinds in the order CRIU numbers them in `root_ids`.
pub const NS_KINDS: [&str; 8] = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

/// Dump the tree rooted at `opts.pid` into `opts.images_dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpStats, Error> {
    let pid = opts.pid;
    let proc = ProcRoot::default();
    precheck(&proc, pid)?;
    let dir = &opts.images_dir;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "cannot create images directory",
        path: dir.clone(),
        source,
    })?;

    let t0 = Instant::now();
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
    let mut task = Task::seize(pid, timeout).map_err(compel_err(pid))?;
    let freezing_time_us = us_since(t0);
    info!("Seized and froze task {pid} in {freezing_time_us} us");
    let frozen_at = Instant::now();

    // Anything that fails from here on leaves the task running, untouched.
    let result = dump_frozen(&proc, &mut task, opts, freezing_time_us, frozen_at);
    match result {
        Ok(stats) => {
            if opts.leave_running || opts.leave_stopped {
                task.release(opts.leave_stopped && !opts.leave_running)
                    .map_err(compel_err(pid))?;
                info!(
                    "Task {pid} left {}",
                    if opts.leave_running {
                        "running"
                    } else {
                        "stopped"
                    }
                );
            } else {
                task.cure().map_err(compel_err(pid))?;
                let _ = process::kill(pid, libc::SIGKILL);
                // As its tracer we see it die; its parent reaps it.
                let _ = process::waitpid(pid, 0);
                info!("Task {pid} killed after dump");
            }
            Ok(stats)
        }
        Err(e) => {
            warn!("Dump of {pid} failed; letting it run on");
            if let Err(e2) = task.release(false) {
                warn!("could not release task {pid}: {e2}");
            }
            Err(e)
        }
    }
}

/// Refuse what issue-2 crust cannot dump before touching the task.
fn precheck(proc: &ProcRoot, pid: i32) -> Result<(), Error> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess { pid });
    }
    if pid == process::getpid() {
        return Err(Error::unsupported("crust cannot dump itself"));
    }
    let st = crust_proc::status(proc, pid).map_err(proc_err(pid))?;
    if st.tgid != pid {
        return Err(Error::NotAProcess { pid, tgid: st.tgid });
    }
    if st.state == 'Z' {
        return Err(Error::unsupported(format!("process {pid} is a zombie")));
    }
    let tasks = crust_proc::tasks(proc, pid).map_err(proc_err(pid))?;
    if tasks.len() > 1 {
        return Err(Error::unsupported(format!(
            "process {pid} ({}) is multi-threaded ({} threads); only single-threaded processes can be dumped so far",
            st.name,
            tasks.len()
        )));
    }
    let kids = crust_proc::children(proc, pid, pid).map_err(proc_err(pid))?;
    if !kids.is_empty() {
        return Err(Error::unsupported(format!(
            "process {pid} ({}) has children ({}); only single processes can be dumped so far",
            st.name,
            kids.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for kind in NS_KINDS {
        let own = ns_ino("self", kind);
        let theirs = ns_ino(&pid.to_string(), kind);
        if own.is_some() && theirs.is_some() && own != theirs {
            return Err(Error::unsupported(format!(
                "process {pid} is in its own {kind} namespace; only processes sharing crust's namespaces can be dumped so far"
            )));
        }
    }
    Ok(())
}

fn ns_ino(pid: &str, kind: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|m| m.ino())
}

fn dump_frozen(
    proc: &ProcRoot,
    task: &mut Task,
    opts: &DumpOptions,
    freezing_time_us: u64,
    frozen_at: Instant,
) -> Result<DumpStats, Error> {
    let pid = task.pid();
    let dir = opts.images_dir.as_path();
    // Re-check what may have changed between the precheck and the freeze.
    let tasks = crust_proc::tasks(proc, pid).map_err(proc_err(pid))?;
    if tasks.len() > 1 {
        return Err(Error::unsupported(format!(
            "process {pid} became multi-threaded while being frozen"
        )));
    }
    if !crust_proc::children(proc, pid, pid)
        .map_err(proc_err(pid))?
        .is_empty()
    {
        return Err(Error::unsupported(format!(
            "process {pid} forked a child while being frozen"
        )));
    }

    let stat = crust_proc::stat(proc, pid).map_err(proc_err(pid))?;
    let status = crust_proc::status(proc, pid).map_err(proc_err(pid))?;
    let vmas = mem::collect_vmas(proc, pid)?;
    let mut files = FileTable::new(pid, opts.shell_job);

    // Facts only the task itself can tell: run syscalls inside it, with a
    // scratch page of its own.
    let syscall_ip = vmas
        .iter()
        .find(|v| v.map.exec && v.usable_for_syscall())
        .map(|v| RemoteAddr(v.map.start))
        .ok_or_else(|| Error::unsupported(format!("process {pid} has no executable mapping")))?;
    task.infect(syscall_ip).map_err(compel_err(pid))?;
    let inside = {
        let scratch_len = 4 * PAGE_SIZE;
        let addr = task
            .syscall(
                libc::SYS_mmap,
                [
                    0,
                    scratch_len,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            )
            .map_err(compel_err(pid))?;
        let mut remote = Remote {
            task,
            scratch: RemoteAddr(addr),
            scratch_len,
        };
        let r = task::collect_inside(&mut remote);
        let _ = remote.call("munmap", libc::SYS_munmap, [addr, scratch_len, 0, 0, 0, 0]);
        r
    };
    let inside = inside?;
    task.cure().map_err(compel_err(pid))?;

    // Memory: the VMA list and the pages that are really there.
    let t_mem = Instant::now();
    let mm_pages = mem::dump_pages(pid, dir, &vmas)?;
    let memdump_time_us = us_since(t_mem);

    let core = task::build_core(proc, task, &stat, &status, &inside)?;
    let mm = mem::build_mm(proc, pid, &stat, &vmas, &inside, &mut files)?;
    files.collect_fds(proc)?;
    let cwd = crust_proc::cwd(proc, pid).map_err(proc_err(pid))?;
    let root = crust_proc::root_link(proc, pid).map_err(proc_err(pid))?;
    let cwd_id = files.add_dir(&cwd)?;
    let root_id = files.add_dir(&root)?;

    // Write the images.
    let t_write = Instant::now();
    let ids = task_ids(TASK_KOBJ_ID);
    write_image(dir, ImageType::Inventory, 0, &[inventory()])?;
    write_image(
        dir,
        ImageType::Pstree,
        0,
        &[PstreeEntry {
            pid: pid as u32,
            ppid: 0,
            pgid: stat.pgrp as u32,
            sid: stat.session as u32,
            threads: vec![pid as u32],
            ..Default::default()
        }],
    )?;
    write_image(dir, ImageType::Core, pid as u64, &[core])?;
    write_image(dir, ImageType::Ids, pid as u64, &[ids])?;
    write_image(dir, ImageType::Mm, pid as u64, &[mm])?;
    write_image(
        dir,
        ImageType::Fs,
        pid as u64,
        &[FsEntry {
            cwd_id,
            root_id,
            umask: Some(status.umask.unwrap_or(0o022)),
            ..Default::default()
        }],
    )?;
    files.write(dir, TASK_KOBJ_ID)?;
    write_image(dir, ImageType::Seccomp, 0, &[SeccompEntry::default()])?;
    write_image(dir, ImageType::Timens, 0, &[timens()?])?;
    let memwrite_time_us = us_since(t_write);
    let frozen_time_us = us_since(frozen_at);
    let stats = DumpStats {
        freezing_time_us,
        frozen_time_us,
        memdump_time_us,
        memwrite_time_us,
        pages_scanned: mm_pages.scanned,
        pages_written: mm_pages.written,
        pages_skipped_parent: 0,
    };
    write_stats(dir, &stats)?;
    debug!("dump of {pid}: {stats:?}");
    Ok(stats)
}

/// The kobj ids of a task that shares crust's namespaces; namespaces get
/// the numbers CRIU gives them (pid 1, net 2, ipc 3, uts 4, time 5, mnt 6,
/// user 7, cgroup 8).
fn task_ids(id: u32) -> TaskKobjIdsEntry {
    TaskKobjIdsEntry {
        vm_id: id,
        files_id: id,
        fs_id: id,
        sighand_id: id,
        pid_ns_id: Some(1),
        net_ns_id: Some(2),
        ipc_ns_id: Some(3),
        uts_ns_id: Some(4),
        mnt_ns_id: Some(6),
        user_ns_id: Some(7),
        cgroup_ns_id: Some(8),
        time_ns_id: Some(5),
        ..Default::default()
    }
}

fn inventory() -> InventoryEntry {
    InventoryEntry {
        img_version: IMG_VERSION,
        fdinfo_per_id: Some(true),
        root_ids: Some(task_ids(1)),
        ns_per_id: Some(true),
        lsmtype: Some(crust_images::proto::inventory::lsmtype::NO_LSM),
        network_lock_method: Some(0),
        plugins_entry: Some(PluginsEntry::default()),
        dump_criu_run_id: Some(run_id()),
        ..Default::default()
    }
}

/// A random UUID-shaped id for `dump_criu_run_id`.
fn run_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn timens() -> Result<TimensEntry, Error> {
    let me = process::getpid();
    let mono =
        process::clock_gettime(libc::CLOCK_MONOTONIC).map_err(sys_err(me, "clock_gettime"))?;
    let boot =
        process::clock_gettime(libc::CLOCK_BOOTTIME).map_err(sys_err(me, "clock_gettime"))?;
    Ok(TimensEntry {
        monotonic: Timespec {
            tv_sec: mono.0 as u64,
            tv_nsec: mono.1 as u64,
            ..Default::default()
        },
        boottime: Timespec {
            tv_sec: boot.0 as u64,
            tv_nsec: boot.1 as u64,
            ..Default::default()
        },
        ..Default::default()
    })
}

fn write_stats(dir: &Path, s: &DumpStats) -> Result<(), Error> {
    let e = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: s.freezing_time_us as u32,
            frozen_time: s.frozen_time_us as u32,
            memdump_time: s.memdump_time_us as u32,
            memwrite_time: s.memwrite_time_us as u32,
            pages_scanned: s.pages_scanned,
            pages_skipped_parent: s.pages_skipped_parent,
            pages_written: s.pages_written,
            irmap_resolve: Some(0),
            pages_lazy: 0,
            page_pipes: Some(0),
            page_pipe_bufs: Some(0),
            shpages_scanned: Some(0),
            shpages_skipped_parent: Some(0),
            shpages_written: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    // stats-dump: the "%s" of its pattern is "dump".
    let name = "stats-dump";
    let mut w = crust_images::image::ImageWriter::create(dir, ImageType::Stats, name).map_err(
        |source| Error::Image {
            what: format!("cannot write {name}"),
            source,
        },
    )?;
    w.write_entry(&e).map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })?;
    w.finish().map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })
}
