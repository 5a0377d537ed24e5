use super::*;

/// The rest of one process, once its children and threads exist: fds,
/// cwd, root, umask, then per thread signals, timers, limits, rseq.
/// Credentials come later, for all processes at once.
pub(super) fn build_rest(
    tasks: &mut [Task],
    pid: i32,
    live: &LiveImage,
    tramp: u64,
    tty: Option<&str>,
    shared: &OpenFiles,
) -> Result<(), Error> {
    let (main, others) = tasks.split_first_mut().expect("main task");
    let mut r = Remote {
        task: main,
        scratch: RemoteAddr(tramp + PAGE_SIZE),
        scratch_len: TRAMP_SIZE - PAGE_SIZE,
    };
    let files = &live.files;
    // 4. Files, cwd, root, umask.
    if !live.files_from_parent {
        files.open_fds(&mut r, tty, shared)?;
    }
    // Packet socket rings mapped through those fds.
    mem::map_socket_vmas(&mut r, &live.mm, &files.fds)?;
    let root = files.path_of(live.fs.root_id as u64).expect("checked");
    let cwd = files.path_of(live.fs.cwd_id as u64).expect("checked");
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
        [live.fs.umask.unwrap_or(0o022) as u64, 0, 0, 0, 0, 0],
    )?;

    // 5. Signals, timers, limits, rseq, and credentials last; per thread.
    let main_core = &live.threads[0].core;
    task::apply_core(&mut r, main_core, pid, pid)?;
    task::apply_loginuid(&mut r, main_core)?;
    task::apply_rseq(&mut r, main_core)?;
    for (t, ti) in others.iter_mut().zip(live.threads.iter().skip(1)) {
        let mut tr = Remote {
            task: t,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        };
        task::apply_core(&mut tr, &ti.core, pid, ti.tid)?;
        task::apply_rseq(&mut tr, &ti.core)?;
    }
    Ok(())
}

/// Credentials of every thread of one process (last: afterwards the task
/// may not be allowed to do the rest).
pub(super) fn build_creds(tasks: &mut [Task], live: &LiveImage, tramp: u64) -> Result<(), Error> {
    for (t, ti) in tasks.iter_mut().zip(live.threads.iter()) {
        let mut r = Remote {
            task: t,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        };
        task::apply_creds(&mut r, &ti.core)?;
    }
    Ok(())
}
