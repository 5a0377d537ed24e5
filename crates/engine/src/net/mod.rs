//! Sockets and the network: unix, inet (TCP through crust-soccr, UDP, raw),
//! packet and netlink sockets, accept-queue hand-over, network locking.

pub(crate) mod accept;
pub(crate) mod inet;
pub(crate) mod netlink;
pub mod netlock;
pub(crate) mod packet;
pub(crate) mod sock;
pub(crate) mod udpcork;
pub(crate) mod unix;

use crate::files::find_kind;
use crate::files::kind::dump::DumpKind;
use crate::Error;
use crust_images::proto::fdinfo::FileEntry;
use std::path::Path;

/// The dump's step between kinds of socket before files.img is written
/// (see [`crate::files::FileTable::write`]): inet writes its images and
/// hands the datagrams queued on its sockets to unix, which writes them
/// in sk-queues.img with its own. Returns inet's entries for files.img.
pub(crate) fn queued_datagrams(
    kinds: &mut [Box<dyn DumpKind>],
    next_id: &mut u32,
    dir: &Path,
) -> Result<Vec<FileEntry>, Error> {
    let (entries, dgrams) = match find_kind::<inet::InetDump>(kinds) {
        Some(i) => i.write(dir, next_id)?,
        None => (Vec::new(), Vec::new()),
    };
    if let Some(u) = find_kind::<unix::UnixDump>(kinds) {
        u.add_datagrams(dgrams);
        u.write(dir)?;
    }
    Ok(entries)
}
