//! `crust image verify DIR`: every check a restore makes before it creates
//! a task, run without restoring: the images read and checked as
//! [`load`] reads them (pids, threads, VMAs against pagemaps and the pages
//! files, parent image sets, files, sockets, namespaces, cgroups), then the
//! checks against this host that come before the first task (caller,
//! System V ids, pids free, room for the trampoline, a terminal).

use super::*;

/// What a verify checked: one line per check, in order.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub checked: Vec<String>,
}

/// Run the checks; the first that fails is the error (the restore's own).
pub(crate) fn verify(opts: &Options) -> Result<VerifyReport, Error> {
    let mut r = VerifyReport::default();
    let cgroups = crate::cgroup::restore::Plan::load_for(opts)?;
    r.checked.push(format!(
        "cgroup.img: {} css set(s) read",
        cgroups.sets.len()
    ));
    let img = load(opts)?;
    describe(&img, &mut r.checked);
    let me = process::getpid();
    let status = crust_proc::status(&ProcRoot::default(), me).map_err(crate::util::proc_err(me))?;
    caller::check_caller(&img, &caller::Caller::from_status(&status))?;
    r.checked
        .push("caller: may restore what the images hold".to_string());
    if let Some(ns) = &img.ipcns {
        ns.check_free()?;
        r.checked
            .push("System V IPC: the ids and keys are free".to_string());
    }
    check_pids_free(&img)?;
    r.checked.push(if img.new_pidns {
        "pids: the tree has a pid namespace of its own".to_string()
    } else {
        "pids: every pid and tid of the tree is free on this host".to_string()
    });
    let tramp = trampoline_for(&img)?;
    r.checked.push(format!(
        "trampoline: room at {tramp:#x} in every process's address space"
    ));
    terminal_for(&img, opts)?;
    r.checked
        .push("terminal: none needed, or --shell-job gives one".to_string());
    Ok(r)
}

/// What [`load`] read and checked, counted.
fn describe(img: &ImageSet, out: &mut Vec<String>) {
    let live: Vec<&LiveImage> = img.procs.iter().filter_map(|p| p.live.as_ref()).collect();
    let dead = img
        .procs
        .iter()
        .filter(|p| p.live.is_none() && !p.helper)
        .count();
    let helpers = img.procs.iter().filter(|p| p.helper).count();
    let threads: usize = live.iter().map(|l| l.threads.len()).sum();
    out.push(format!(
        "inventory.img: image version {}",
        crust_images::consts::CRTOOLS_IMAGES_V1_1
    ));
    out.push(format!(
        "pstree.img: {} process(es) ({} live, {dead} zombie(s), {helpers} helper(s)), {threads} thread(s); parents, sessions and groups consistent",
        img.procs.len(),
        live.len(),
    ));
    out.push(format!(
        "core: registers, signals, credentials and seccomp of {threads} thread(s)"
    ));
    let vmas: usize = live.iter().map(|l| l.mm.vmas.len()).sum();
    let runs: usize = live.iter().map(|l| l.runs.len()).sum();
    let pages: u64 = live
        .iter()
        .flat_map(|l| l.runs.iter())
        .map(|r| r.npages)
        .sum();
    out.push(format!(
        "memory: {vmas} VMA(s); {runs} pagemap run(s), {pages} page(s), each inside a VMA and in its pages file or a parent image set"
    ));
    if let Ok(Some(parent)) = mem::chain::parent_dir(&img.dir) {
        out.push(format!(
            "parent image set: {} (pages read from it resolved)",
            parent.display()
        ));
    }
    let fds: usize = live.iter().map(|l| l.files.fds.len()).sum();
    out.push(format!(
        "files: {fds} fd(s); files.img and every kind's images (paths, sizes, build-ids, sockets) checked"
    ));
    out.push(format!(
        "namespaces: {}",
        if img.new_pidns {
            "a pid namespace of its own; the others checked"
        } else {
            "checked"
        }
    ));
}
