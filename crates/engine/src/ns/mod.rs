//! Namespaces of the dumped tree.
//!
//! - [`ids`]: the namespace kinds ([`ids::NsKind`]: `/proc/PID/ns/` names,
//!   CLONE_NEW* flags), the ids the images name a process's namespaces by
//!   ([`ids::NsIds`], numbered as CRIU numbers them by [`ids::NsTable`]),
//!   and [`ids::TreeNs`]: one dump's numbering and the rule of which
//!   namespaces a tree may be in: every process shares the root's, and
//!   those of the root that are not crust's are of a kind crust dumps
//!   ([`dumps_own`]).
//! - [`tree`]: the tree's own namespaces as one whole: dumped after the
//!   processes ([`tree::dump`]), loaded and checked before anything is made
//!   ([`tree::TreeNamespaces::load`]), and made with the root
//!   ([`tree::TreeNamespaces::clone_flags`], then
//!   [`tree::TreeNamespaces::prepare`] in named phases).
//! - [`join`]: `--join-ns` (the root made in existing namespaces) and
//!   `--empty-ns` parsing.
//! - [`mqueue`]: POSIX message queues of the tree's IPC namespace (crust's own image).
//! - One module per kind: [`user`] (uid/gid maps, and the ids of the
//!   images as the tree's user namespace sees them), [`uts`], [`time`]
//!   (clocks), [`mnt`] (mounts), [`net`] (the network namespace's own
//!   state: sysctls, links, addresses, routes, rules, firewall),
//!   [`sysvipc`] (System V IPC objects of the tree's IPC namespace).

pub(crate) mod ids;
pub(crate) mod join;
pub(crate) mod mnt;
pub(crate) mod mqueue;
pub(crate) mod net;
pub(crate) mod sysvipc;
pub(crate) mod time;
pub(crate) mod tree;
pub(crate) mod user;
pub(crate) mod uts;

use crate::util::sys_err;
use crate::Error;
use ids::NsKind;
use std::fs::File;

/// Whether crust dumps a namespace of kind `kind` the tree's root has of
/// its own (not crust's). The pid namespace is decided apart (the root
/// must head it).
pub(crate) fn dumps_own(kind: NsKind) -> bool {
    matches!(
        kind,
        NsKind::Ipc
            | NsKind::Uts
            | NsKind::Time
            | NsKind::Net
            | NsKind::Mnt
            | NsKind::User
            | NsKind::Cgroup
    )
}

/// Open `/proc/PID/ns/KIND`.
pub(crate) fn open_ns(pid: i32, kind: NsKind) -> Result<File, Error> {
    let path = kind.proc_path(&pid.to_string());
    File::open(&path).map_err(sys_err(pid, format!("open {path}")))
}

/// Run `f` in a new thread of crust that joined the namespaces `kinds` of
/// process `pid` (never a user namespace: a thread cannot join one). A
/// mount namespace is joined after the thread stops sharing crust's
/// root and working directory (unshare(CLONE_FS)).
pub(crate) fn in_ns<T: Send>(
    pid: i32,
    kinds: &[NsKind],
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let files = kinds
        .iter()
        .map(|&k| Ok((k, open_ns(pid, k)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    in_ns_files(pid, files, f)
}

/// [`in_ns`] with the namespaces given open (`files`: kind, an fd on
/// it); `pid` names the process they are of, for messages.
pub(crate) fn in_ns_files<T: Send>(
    pid: i32,
    files: Vec<(NsKind, File)>,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsFd;
            for (k, file) in &files {
                if *k == NsKind::User {
                    return Err(Error::unsupported(format!(
                        "a thread cannot join the user namespace of process {pid}"
                    )));
                }
                if *k == NsKind::Mnt {
                    crust_sys::ns::unshare(libc::CLONE_FS).map_err(sys_err(
                        pid,
                        "unshare(CLONE_FS) before joining a mount namespace",
                    ))?;
                }
                crust_sys::ns::setns(file.as_fd(), k.clone_flag() as i32).map_err(sys_err(
                    pid,
                    format!("setns into the {k} namespace of process {pid}"),
                ))?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Restore {
                pid,
                what: "the thread working in its namespaces panicked".into(),
            })
        })
    })
}
