//! crust-proc: parsers for the files under `/proc` that checkpoint/restore needs.
//!
//! Every parser takes a [`ProcRoot`], the directory that plays the role of `/proc`
//! (the real one by default), so tests can point it at fixture directories.
//! Nothing here uses `unsafe`.

#![forbid(unsafe_code)]

mod error;
mod fd;
mod maps;
mod misc;
mod mountinfo;
mod pagemap;
mod root;
mod smaps;
mod stat;
mod status;
mod timers;

pub use error::{ProcError, Result};
pub use fd::{fdinfo, fds, FdInfo};
pub use maps::{maps, parse_maps, MapEntry, MapKind};
pub use misc::{
    auxv, children, cmdline, comm, cwd, environ, exe, limits, loginuid, oom_score_adj, personality,
    root_link, split_nul, tasks, timerslack_ns, RLIMIT_NLIMITS, RLIM_INFINITY,
};
pub use mountinfo::{mountinfo, parse_mountinfo, MountInfo};
pub use pagemap::{PagemapReader, Pme, PAGE_SIZE};
pub use root::ProcRoot;
pub use smaps::{maps_match, parse_smaps, smaps, smaps_iter, SmapsEntry, SmapsIter, VmFlags};
pub use stat::{parse_stat, stat, task_stat, Stat, PF_IO_WORKER, PF_KTHREAD};
pub use status::{parse_status, status, task_status, Status};
pub use timers::{parse_timers, timers, PosixTimer};
