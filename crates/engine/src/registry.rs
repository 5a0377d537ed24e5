//! The registry: every kind of file crust knows, in one place. Dump asks
//! the kinds of [`dump_kinds`] in order for each fd; restore reads the
//! kinds of [`RESTORE`] in order. Adding a kind of file is one module
//! implementing [`DumpKind`] and [`RestoreKind`](crate::files::kind::RestoreKind)
//! (see docs/ARCHITECTURE.md, "How to add a kind of file") plus one line
//! in each list below.
//!
//! It sits above the kinds (it names them all), beside the dump and
//! restore flows, so that no kind has to know another.

use crate::files::kind::dump::DumpKind;
use crate::files::kind::Loader;

/// Every kind of file at restore, in the order they are read and made (a
/// kind may use the descriptions of those before it: unix sockets carry
/// pipes and event files in their queued messages). Files replaced by
/// inherited fds come first, added by the restore itself.
pub(crate) const RESTORE: &[Loader] = &[
    // Ghosts first: deleted FIFOs are opened by it, used by pipes.
    crate::files::ghost::load_kind,
    crate::files::pipes::load_kind,
    crate::files::events::load_kind,
    crate::net::unix::load_kind,
    crate::net::inet::load_kind,
    crate::files::regshare::load_kind,
    crate::files::memfd::load_kind,
    crate::files::pty::load_kind,
    crate::net::packet::load_kind,
    crate::net::netlink::load_kind,
    crate::files::pidfd::load_kind,
    crate::files::nsfile::load_kind,
    crate::files::procfile::load_kind,
    crate::net::tun::load_kind,
];

/// Every kind of file at dump, in the order they are asked. Kinds that
/// claim paths come last, pipes (FIFOs) after the others: a FIFO is told
/// apart by stat.
pub(crate) fn dump_kinds() -> Vec<Box<dyn DumpKind>> {
    vec![
        Box::new(crate::files::events::EventDump::default()),
        Box::new(crate::net::inet::InetDump::default()),
        Box::new(crate::net::packet::PacketDump::default()),
        Box::new(crate::net::netlink::NetlinkDump::default()),
        Box::new(crate::net::unix::UnixDump::default()),
        // Before the kinds that claim paths: /dev/net/tun is one.
        Box::new(crate::net::tun::TunDump::default()),
        // Before ghosts: a hung-up pty slave's link reads "(deleted)".
        Box::new(crate::files::pty::PtyDump::default()),
        Box::new(crate::files::ghost::GhostDump::default()),
        Box::new(crate::files::memfd::MemfdDump::default()),
        Box::new(crate::files::pidfd::PidfdDump::default()),
        Box::new(crate::files::nsfile::NsfileDump::default()),
        Box::new(crate::files::pipes::PipeDump::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once() {
        let mut seen: Vec<usize> = RESTORE.iter().map(|f| *f as usize).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), RESTORE.len());
        let mut names: Vec<std::any::TypeId> = dump_kinds()
            .iter()
            .map(|k| (**k).as_any().type_id())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        // Regular files held by several processes and files of the tree's
        // /proc entries are kinds at restore only (at dump they are the fd
        // table's own).
        assert_eq!(RESTORE.len(), n + 2);
    }
}
