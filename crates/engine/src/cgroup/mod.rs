//! cgroups, v1 and v2, in CRIU 4.2's `cgroup.img` (issue 14).
//!
//! - Dump (`dump.rs`): the cgroups of every task and thread
//!   (`/proc/PID/task/TID/cgroup`) make css sets, numbered from 1 = crust's
//!   own set (the inventory's `root_cg_set`); each thread's core names its
//!   set. When a task is in a set other than crust's, `cgroup.img` gets the
//!   sets (but crust's) and the hierarchies with the directories under the
//!   tasks' cgroups (empty ones too), walked through a mount of each
//!   hierarchy crust makes detached (or the one `--cgroup-yard` gives).
//! - Restore (`restore.rs`): with `--manage-cgroups` MODE (CRIU's meanings,
//!   soft when not given), `--cgroup-root`, `--cgroup-yard`: the
//!   directories are made (and removed again if the restore fails), and
//!   every task and thread is moved into its cgroups before it runs.
//! - `tree.rs`: the directory tree, the names and checks both sides share.
//! - Controller properties (`props.rs`) hang on [`CgroupDir::props`]: read
//!   at dump, written at restore by the functions below.
//! - `ns.rs`: the cgroup namespace's `cgns_prefix`.

// Parts of both are for the cgroup namespace and --cgroup-dump-controller,
// which the flows do not use yet.
#[allow(dead_code)]
pub mod ns;
#[allow(dead_code)]
pub mod props;

pub(crate) mod dump;
pub(crate) mod restore;
mod tree;
mod yard;

use crate::error::{Error, ErrorKind};
use crate::options::Options;
pub(crate) use crust_images::proto::{CgroupPerms, CgroupPropEntry};
use std::path::Path;
pub(crate) use tree::{CgroupDir, Controller};

/// The css set of the dumping (or restoring) tool itself: always the
/// first set, as CRIU numbers them.
pub(crate) const CRUST_SET: u32 = 1;

/// `--manage-cgroups` modes, CRIU's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing is restored: the tree stays in crust's cgroups (the dump
    /// still records the sets, without directories).
    Ignore,
    /// Tasks are moved into existing cgroups only; nothing is made or set.
    None,
    /// As `None`, and the properties are set.
    Props,
    /// Missing cgroups are made (with their properties); existing ones
    /// are taken as they are.
    Soft,
    /// Missing cgroups are made, and every property is set.
    Full,
    /// As `Full`, but a cgroup that exists already fails the restore.
    Strict,
}

impl Mode {
    /// The mode `opts` asks for (soft when not given, as CRIU).
    pub(crate) fn of(opts: &Options) -> Result<Mode, Error> {
        Ok(match opts.manage_cgroups.as_deref() {
            None | Some("soft") => Mode::Soft,
            Some("ignore") => Mode::Ignore,
            Some("none") => Mode::None,
            Some("props") => Mode::Props,
            Some("full") => Mode::Full,
            Some("strict") => Mode::Strict,
            Some(other) => {
                return Err(Error::refused(
                    ErrorKind::InvalidRequest,
                    format!(
                        "--manage-cgroups={other}: unknown mode (none, props, soft, full, strict or ignore)"
                    ),
                ))
            }
        })
    }

    /// Missing cgroups may be made.
    fn makes_dirs(self) -> bool {
        matches!(self, Mode::Soft | Mode::Full | Mode::Strict)
    }
}

/// The properties of the cgroup directory `dir` (a path crust can open)
/// of `ctl`, at dump: those `cfg` keeps for its controllers.
pub(crate) fn dump_props(
    ctl: &Controller,
    dir: &Path,
    cfg: &props::PropsConfig,
) -> Result<Vec<CgroupPropEntry>, Error> {
    props::read_dir_props(dir, &ctl.cnames, cfg)
        .map(|d| d.props)
        .map_err(props::PropsError::into_error)
}

/// The properties set as soon as a directory is made, before any task or
/// child is in it (cpuset.cpus, devices.list...).
pub(crate) fn restore_props_at_mkdir(
    _ctl: &Controller,
    dir: &Path,
    d: &CgroupDir,
) -> Result<(), Error> {
    props::restore_special(dir, &d.props).map_err(props::PropsError::into_error)
}

/// The other properties of a directory (props, full and strict modes; and
/// soft for the directories it made); never those of a hierarchy's root.
pub(crate) fn restore_props(
    _ctl: &Controller,
    dir: &Path,
    d: &CgroupDir,
    mode: Mode,
) -> Result<(), Error> {
    if mode == Mode::Ignore || d.name.is_empty() {
        return Ok(());
    }
    let freezer = props::restore_regular(dir, &d.props).map_err(props::PropsError::into_error)?;
    if freezer.is_some() {
        // A CRIU image of a --freeze-cgroup dump may carry it; crust puts
        // the tree's tasks back running, so the state is not written.
        log::warn!("cgroup {}: freezer.state not restored", dir.display());
    }
    Ok(())
}
