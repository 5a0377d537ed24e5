//! `crust restore`: rebuild a process from CRIU images.
//!
//! crust forks a child with the recorded pid (clone3 with set_tid). The
//! child maps a small trampoline page holding a `syscall` instruction at an
//! address that is free both in crust and in the image, then stops itself
//! under ptrace. crust then builds the whole process from outside with
//! remote syscalls: it unmaps everything the child inherited, moves the
//! vDSO to where the image has it, maps every VMA and reads the pages into
//! them, opens the files, restores signals, limits and credentials, and
//! finally unmaps the trampoline itself while loading the saved registers,
//! so the task returns straight into its old context.

use crate::files::RestoreFiles;
use crate::mem::{self, PageRun};
use crate::remote::Remote;
use crate::util::{read_image, read_one, sys_err, us_since};
use crate::{task, xsave, Error, RestoreOptions, RestoreOutcome};
use crust_compel::{Task, SYSCALL_INSN};
use crust_images::consts::vma as vs;
use crust_images::image::ImageType;
use crust_images::proto::core::{core_entry_march, CoreEntry, TaskKobjIdsEntry};
use crust_images::proto::fs::FsEntry;
use crust_images::proto::inventory::InventoryEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pstree::PstreeEntry;
use crust_proc::{MapKind, ProcRoot};
use crust_sys::process::{self, ForkResult};
use crust_sys::{RemoteAddr, PAGE_SIZE};
use log::{debug, info};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Trampoline: one code page plus scratch pages for remote syscall data.
const TRAMP_SIZE: u64 = 16 * PAGE_SIZE;
/// Room after the trampoline used to shuffle the vDSO.
const VDSO_TEMP: u64 = 64 * PAGE_SIZE;

/// Everything read (and checked) from the image set before anything is
/// created.
struct ImageSet {
    dir: PathBuf,
    pid: i32,
    pstree: PstreeEntry,
    core: CoreEntry,
    mm: MmEntry,
    fs: FsEntry,
    files: RestoreFiles,
    pages_id: u32,
    runs: Vec<PageRun>,
    xstate: Vec<u8>,
}

fn bad(dir: &Path, why: impl Into<String>) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

fn load(opts: &RestoreOptions) -> Result<ImageSet, Error> {
    let dir = std::fs::canonicalize(&opts.images_dir).map_err(|source| Error::Io {
        op: "cannot open images directory",
        path: opts.images_dir.clone(),
        source,
    })?;
    if !dir.is_dir() {
        return Err(bad(&dir, "not a directory"));
    }
    let inv: InventoryEntry = read_one(&dir, ImageType::Inventory, 0)?;
    if inv.img_version != crate::dump::IMG_VERSION {
        return Err(bad(
            &dir,
            format!(
                "image version {} is not supported (expected {})",
                inv.img_version,
                crate::dump::IMG_VERSION
            ),
        ));
    }
    let tree: Vec<PstreeEntry> = read_image(&dir, ImageType::Pstree, 0)?;
    let pstree = match tree.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad(&dir, "pstree.img holds no process")),
        many => {
            return Err(Error::unsupported(format!(
                "restoring a tree of {} processes (only one so far)",
                many.len()
            )))
        }
    };
    if pstree.threads.len() > 1 {
        return Err(Error::unsupported(format!(
            "restoring a process with {} threads (only single-threaded so far)",
            pstree.threads.len()
        )));
    }
    let pid = pstree.pid as i32;
    if pid <= 0 {
        return Err(bad(&dir, format!("pstree.img has pid {}", pstree.pid)));
    }
    let core: CoreEntry = read_one(&dir, ImageType::Core, pid as u64)?;
    if core.mtype != core_entry_march::X86_64 {
        return Err(bad(
            &dir,
            format!(
                "core-{pid}.img is for another architecture ({}); this machine is x86_64",
                march_name(core.mtype)
            ),
        ));
    }
    let ti = core
        .thread_info
        .as_ref()
        .ok_or_else(|| bad(&dir, format!("core-{pid}.img has no x86 thread_info")))?;
    if ti.gpregs.mode.unwrap_or(1) != 1 {
        return Err(Error::unsupported("restoring 32-bit (compat) tasks"));
    }
    if let Some(tc) = &core.tc {
        if tc.task_state != crust_images::consts::task_state::ALIVE {
            return Err(Error::unsupported(format!(
                "restoring a task in state {}",
                tc.task_state
            )));
        }
    }
    let xstate = xsave::xstate_from_fpregs(&ti.fpregs).map_err(|m| {
        bad(
            &dir,
            format!("the image uses {} registers, which this CPU lacks", m.0),
        )
    })?;
    let ids: TaskKobjIdsEntry = read_one(&dir, ImageType::Ids, pid as u64)?;
    let mm: MmEntry = read_one(&dir, ImageType::Mm, pid as u64)?;
    mem::validate_vmas(&dir, &mm)?;
    let (pages_id, runs) = mem::load_pagemap(&dir, pid, &mm)?;
    let fs: FsEntry = read_one(&dir, ImageType::Fs, pid as u64)?;
    let files = RestoreFiles::load(&dir, ids.files_id)?;
    // Every file the task needs must be there and unchanged.
    let mut needed: Vec<u32> = files.fds.iter().map(|f| f.id).collect();
    needed.push(mm.exe_file_id);
    needed.push(fs.cwd_id);
    needed.push(fs.root_id);
    for v in &mm.vmas {
        if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            needed.push(v.shmid as u32);
        }
    }
    for id in [mm.exe_file_id, fs.cwd_id, fs.root_id] {
        if !files.regs.contains_key(&id) {
            return Err(bad(
                &dir,
                format!("file id {id} (exe, cwd or root) is missing from files.img"),
            ));
        }
    }
    needed.sort_unstable();
    needed.dedup();
    for id in needed {
        files.check(id, opts.shell_job)?;
    }
    Ok(ImageSet {
        dir,
        pid,
        pstree,
        core,
        mm,
        fs,
        files,
        pages_id,
        runs,
        xstate,
    })
}

fn march_name(m: i32) -> String {
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

/// Restore the tree stored in `opts.images_dir`.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreOutcome, Error> {
    let t0 = Instant::now();
    let img = load(opts)?;
    let pid = img.pid;
    wait_zombie_gone(pid);
    if Path::new(&format!("/proc/{pid}")).exists() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        return Err(Error::PidTaken { pid, comm });
    }
    let proc = ProcRoot::default();
    let me = process::getpid();
    let own_maps = crust_proc::maps(&proc, me).map_err(crate::util::proc_err(me))?;
    let tramp = pick_trampoline(&own_maps, &img.mm).ok_or_else(|| Error::Restore {
        pid,
        what: "no free address range for the restore trampoline".into(),
    })?;
    debug!("trampoline at {tramp:#x}");
    let tty = if opts.shell_job { own_tty() } else { None };

    // Fork the task with its pid. Signals stay blocked in the child until
    // its own mask is loaded at the very end.
    let old_mask = process::block_all_signals().map_err(sys_err(me, "sigprocmask"))?;
    let forked = process::clone3_fork(&[pid], 0);
    match forked {
        Ok(ForkResult::Child) => {
            // In the child: async-signal-safe work only.
            if process::map_trampoline(tramp, TRAMP_SIZE, &SYSCALL_INSN).is_err() {
                process::exit_now(70);
            }
            if crust_sys::ptrace::traceme().is_err() {
                process::exit_now(71);
            }
            process::stop_self();
            process::exit_now(72);
        }
        Ok(ForkResult::Parent { .. }) => {
            let _ = process::set_signal_mask(&old_mask);
        }
        Err(e) => {
            let _ = process::set_signal_mask(&old_mask);
            if e.raw_os_error() == Some(libc::EEXIST) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                return Err(Error::PidTaken { pid, comm });
            }
            return Err(Error::Sys {
                pid,
                op: "clone3 with the recorded pid".into(),
                source: e,
            });
        }
    }
    let mut task = match Task::adopt_stopped_child(pid) {
        Ok(t) => t,
        Err(source) => {
            let _ = process::kill(pid, libc::SIGKILL);
            let _ = process::waitpid(pid, 0);
            return Err(Error::Compel { pid, source });
        }
    };
    task.use_syscall_ip(RemoteAddr(tramp));
    let built = build(&mut task, &img, opts, tramp, tty.as_deref());
    let pages_restored = match built {
        Ok(n) => n,
        Err(e) => {
            task.kill();
            let _ = process::waitpid(pid, 0);
            return Err(e);
        }
    };
    let ti = img.core.thread_info.as_ref().expect("checked in load");
    let regs = task::regs_from_image(&ti.gpregs);
    let mask = img
        .core
        .thread_core
        .as_ref()
        .and_then(|t| t.blk_sigset)
        .or(img.core.tc.as_ref().map(|t| t.blk_sigset))
        .unwrap_or(0);
    if let Err(source) = task.finish_restore(
        RemoteAddr(tramp),
        TRAMP_SIZE,
        &regs,
        Some(&img.xstate),
        mask,
        opts.leave_stopped,
    ) {
        let _ = process::kill(pid, libc::SIGKILL);
        let _ = process::waitpid(pid, 0);
        return Err(Error::Compel { pid, source });
    }
    let restore_time_us = us_since(t0);
    info!("Restored {pid} in {restore_time_us} us ({pages_restored} pages)");
    Ok(RestoreOutcome {
        root_pid: pid,
        restore_time_us,
        pages_restored,
    })
}

/// A process just killed by a dump may linger a moment as a zombie until
/// its parent reaps it: give that up to two seconds.
fn wait_zombie_gone(pid: i32) {
    for _ in 0..200 {
        match crust_proc::stat(&ProcRoot::default(), pid) {
            Ok(st) if st.state == 'Z' || st.state == 'X' => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

/// The path of crust's own terminal, for --shell-job.
fn own_tty() -> Option<String> {
    for fd in 0..3 {
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            let s = p.to_string_lossy().into_owned();
            if s.starts_with("/dev/pts/") || s.starts_with("/dev/tty") || s == "/dev/console" {
                return Some(s);
            }
        }
    }
    None
}

/// An address where [TRAMP_SIZE + VDSO_TEMP] is free both in crust (the
/// child starts as a copy of it) and in the image.
fn pick_trampoline(own: &[crust_proc::MapEntry], mm: &MmEntry) -> Option<u64> {
    let need = TRAMP_SIZE + VDSO_TEMP;
    let mut busy: Vec<(u64, u64)> = own.iter().map(|m| (m.start, m.end)).collect();
    busy.extend(mm.vmas.iter().map(|v| (v.start, v.end)));
    // Leave room for stacks to grow and brk to extend: keep 1 MiB away.
    let guard = 1 << 20;
    let mut cand = 0x1_0000_0000u64;
    while cand + need < mem::TASK_SIZE {
        let clash = busy
            .iter()
            .any(|&(s, e)| cand < e + guard && s < cand + need + guard);
        if !clash {
            return Some(cand);
        }
        cand += 1 << 30;
    }
    None
}

/// Build the process inside the stopped child. Returns pages restored.
fn build(
    task: &mut Task,
    img: &ImageSet,
    opts: &RestoreOptions,
    tramp: u64,
    tty: Option<&str>,
) -> Result<u64, Error> {
    let pid = task.pid();
    let proc = ProcRoot::default();
    let rseq = task.rseq();
    let mut r = Remote {
        task,
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    // 1. Forget crust: its rseq area, its mappings, its fds.
    if let Some(rs) = rseq.filter(|x| x.rseq_abi_pointer != 0) {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        r.call(
            "rseq unregister",
            libc::SYS_rseq,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                rs.signature as u64,
                0,
                0,
            ],
        )?;
    }
    let maps = crust_proc::maps(&proc, pid).map_err(crate::util::proc_err(pid))?;
    let mut special: Vec<(MapKind, u64, u64)> = Vec::new();
    for m in &maps {
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
        r.call(
            "munmap",
            libc::SYS_munmap,
            [m.start, m.end - m.start, 0, 0, 0, 0],
        )?;
    }
    const SYS_CLOSE_RANGE: i64 = 436;
    r.call(
        "close_range",
        SYS_CLOSE_RANGE,
        [0, u32::MAX as u64, 0, 0, 0, 0],
    )?;

    // 2. The vDSO goes where the image had it.
    move_vdso(&mut r, &img.dir, &img.mm, &special, tramp + TRAMP_SIZE)?;

    // 3. Memory.
    let files = &img.files;
    let pages = mem::restore_vmas(&mut r, &img.dir, &img.mm, img.pages_id, &img.runs, &|id| {
        files.path_of(id)
    })?;
    let exe = files
        .path_of(img.mm.exe_file_id as u64)
        .expect("checked in load");
    mem::set_mm_map(&mut r, &img.mm, &exe)?;

    // 4. Files, cwd, root, umask, session.
    files.open_fds(&mut r, tty)?;
    let root = files.path_of(img.fs.root_id as u64).expect("checked");
    let cwd = files.path_of(img.fs.cwd_id as u64).expect("checked");
    if root != "/" {
        let a = r.put_cstr(0, root.as_bytes())?;
        r.call(
            &format!("chroot {root}"),
            libc::SYS_chroot,
            [a.get(), 0, 0, 0, 0, 0],
        )?;
    }
    let a = r.put_cstr(0, cwd.as_bytes())?;
    r.call(
        &format!("chdir {cwd}"),
        libc::SYS_chdir,
        [a.get(), 0, 0, 0, 0, 0],
    )?;
    r.call(
        "umask",
        libc::SYS_umask,
        [img.fs.umask.unwrap_or(0o022) as u64, 0, 0, 0, 0, 0],
    )?;
    let (sid, pgid) = (img.pstree.sid as i32, img.pstree.pgid as i32);
    if !opts.shell_job {
        if sid == pid {
            r.call("setsid", libc::SYS_setsid, [0; 6])?;
        } else if pgid == pid {
            r.call("setpgid", libc::SYS_setpgid, [0, 0, 0, 0, 0, 0])?;
        }
    } else if pgid == pid {
        r.call("setpgid", libc::SYS_setpgid, [0, 0, 0, 0, 0, 0])?;
    }

    // 5. Signals, timers, limits, rseq, and credentials last.
    task::apply_core(&mut r, &img.core)?;
    task::apply_rseq(&mut r, &img.core)?;
    task::apply_creds(&mut r, &img.core)?;
    Ok(pages)
}

/// Move [vvar], [vvar_vclock] and [vdso] of the child to the addresses the
/// image records (via a temporary spot, so no move lands on another).
fn move_vdso(
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
