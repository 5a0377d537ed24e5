// Runs while tasks are under crust's control: no panics, only errors the
// caller rolls back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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
    let Some((main, others)) = tasks.split_first_mut() else {
        return Err(Error::Restore {
            pid,
            what: "no task was created for the process".into(),
        });
    };
    let mut r = Remote::on_trampoline(main, tramp);
    let files = &live.files;
    // 4. Files, cwd, root, umask.
    if !live.files_from_parent {
        files.open_fds(&mut r, pid, tty, shared)?;
    }
    // Packet socket rings mapped through those fds.
    mem::map_socket_vmas(&mut r, &live.mm, &files.fds)?;
    enter_dirs(&mut r, pid, live, shared)?;

    // 5. Signals, timers, limits, rseq, and credentials last; per thread.
    let Some(main_thread) = live.threads.first() else {
        return Err(Error::Restore {
            pid,
            what: "the images hold no thread of the process".into(),
        });
    };
    let main_core = &main_thread.core;
    let code = Some(crate::task::remote::batch_code(tramp));
    task::apply_core(&mut r, main_core, &live.sigactions, (pid, pid), code)?;
    task::apply_loginuid(&mut r, main_core)?;
    for (t, ti) in others.iter_mut().zip(live.threads.iter().skip(1)) {
        let mut tr = Remote::on_trampoline(t, tramp);
        // A thread's core has no actions of its own as crust and CRIU
        // write it; any there are applied as before.
        let own = ti.core.tc.as_ref().map_or(&[][..], |tc| &tc.sigactions);
        task::apply_core(&mut tr, &ti.core, own, (pid, ti.tid), code)?;
    }
    Ok(())
}

/// Seccomp and credentials of every thread of one process (last:
/// afterwards the task may not be allowed to do the rest), then what the
/// change of credentials reset (dumpable, parent-death signal). `root`:
/// the tree's root, whose main thread crust armed with a parent-death
/// SIGKILL of its own (`create::create_root`), set to the recorded one
/// (none: cleared) here; `armed`: every thread was armed so (it changed
/// tracer threads, see [`super::split`]).
pub(super) fn build_creds(
    tasks: &mut [Task],
    live: &LiveImage,
    tramp: u64,
    seccomp: &task::seccomp::SeccompImage,
    (root, armed): (bool, bool),
) -> Result<(), Error> {
    // A filter synced to every thread (TSYNC) reaches threads whose own
    // core says nothing: suspend seccomp for all of them first.
    if live
        .threads
        .iter()
        .any(|t| task::seccomp::has_mode(&t.core))
    {
        for t in tasks.iter() {
            t.set_options(TRACE_OPTS | popt::SUSPEND_SECCOMP)
                .map_err(|source| Error::Compel {
                    pid: t.pid(),
                    source,
                })?;
        }
    }
    for (i, (t, ti)) in tasks.iter_mut().zip(live.threads.iter()).enumerate() {
        let mut r = Remote::on_trampoline(t, tramp);
        task::seccomp::apply(&mut r, &ti.core, seccomp)?;
        let after = task::misc::after_creds(
            &mut r,
            &ti.core,
            (i == 0).then_some(&live.mm),
            (root && i == 0) || armed,
        )?;
        task::apply_creds(&mut r, &ti.core, after)?;
    }
    Ok(())
}

/// Enter the process's working directory, then its root: the cwd first,
/// by its path (host paths, reachable before the chroot) or, when it was
/// deleted, through the description of it crust made (a ghost
/// directory); then chroot, which leaves the cwd where it is (possibly
/// outside the new root, as it was); then the umask.
fn enter_dirs(
    r: &mut Remote<'_>,
    pid: i32,
    live: &LiveImage,
    shared: &OpenFiles,
) -> Result<(), Error> {
    let files = &live.files;
    let dir_of = |id: u32, what: &str| {
        files.path_of(id as u64).ok_or_else(|| Error::Restore {
            pid,
            what: format!("its {what} (file id {id}) is not in the images"),
        })
    };
    let root = dir_of(live.fs.root_id, "root")?;
    let cwd = dir_of(live.fs.cwd_id, "working directory")?;
    if shared.get(live.fs.root_id).is_some() {
        return Err(Error::unsupported(format!(
            "restoring process {pid} in the deleted root directory {root}"
        )));
    }
    // chdir by path, chroot and umask run in one stop: their paths at
    // their own scratch offsets, the table after them.
    let mut calls = crate::task::remote::Batch::with_table_at(r.batch_code, 2 * PATH_MAX);
    match shared.get(live.fs.cwd_id) {
        Some(fd) => {
            // A free fd number for a moment: above every fd of the table.
            let tmp = files.fds.iter().map(|f| f.fd).max().map_or(0, |m| m + 1) as i32;
            let gift = crate::files::fdpass::Gift {
                fd,
                target: tmp,
                cloexec: true,
            };
            crate::files::fdpass::give_fds(r, &[gift])?;
            let entered = r.call(
                &format!("fchdir to the deleted {cwd}"),
                libc::SYS_fchdir,
                [tmp as u64, 0, 0, 0, 0, 0],
            );
            r.call("close", libc::SYS_close, [tmp as u64, 0, 0, 0, 0, 0])?;
            entered?;
        }
        None => {
            let a = put_path(r, 0, &cwd)?;
            calls.push(
                r,
                format!("chdir {cwd}"),
                libc::SYS_chdir,
                [a.get(), 0, 0, 0, 0, 0],
                None,
            )?;
        }
    }
    if root != "/" {
        let a = put_path(r, PATH_MAX, &root)?;
        calls.push(
            r,
            format!("chroot {root}"),
            libc::SYS_chroot,
            [a.get(), 0, 0, 0, 0, 0],
            None,
        )?;
    }
    calls.push(
        r,
        "umask".into(),
        libc::SYS_umask,
        [live.fs.umask.unwrap_or(0o022) as u64, 0, 0, 0, 0, 0],
        None,
    )?;
    calls.flush(r).map(drop)
}

/// The longest path the kernel takes, with its NUL: the room of each
/// path [`enter_dirs`] writes into the scratch area.
const PATH_MAX: u64 = 4096;

/// Copy `path` to scratch offset `off`, refused when longer than the
/// kernel takes (it would run into what follows it there).
fn put_path(r: &mut Remote<'_>, off: u64, path: &str) -> Result<RemoteAddr, Error> {
    if path.len() as u64 >= PATH_MAX {
        return Err(Error::Restore {
            pid: r.pid(),
            what: format!("the path {path} is longer than the kernel takes"),
        });
    }
    r.put_cstr(off, path.as_bytes())
}
