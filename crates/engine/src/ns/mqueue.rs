//! POSIX message queues of the tree's own IPC namespace. CRIU 4.2 has no
//! image for them (its ipc-var image holds only the fs/mqueue limits), so
//! a tree whose IPC namespace holds any is refused at dump rather than
//! restored without them (an fd open on a queue is refused by the files
//! step, `files::classify`).

use super::ids::NsKind;
use super::in_ns;
use crate::util::sys_err;
use crate::Error;

/// Refuse the dump if the IPC namespace of process `pid` (the tree's own)
/// holds POSIX message queues, naming them.
pub(crate) fn refuse_queues(pid: i32) -> Result<(), Error> {
    let names = in_ns(pid, &[NsKind::Ipc], || {
        crust_sys::mqueue::queues_of_own_ipcns_in_private_mount().map_err(sys_err(
            pid,
            "listing the POSIX message queues of its IPC namespace (a private mount of its mqueue filesystem)",
        ))
    })?;
    if names.is_empty() {
        return Ok(());
    }
    Err(Error::unsupported(format!(
        "the IPC namespace of process {pid} holds POSIX message queues ({}); crust, as CRIU 4.2, has no image for them and cannot dump them: remove them (mq_unlink) or dump without an IPC namespace of the tree's own",
        names.iter().map(|n| format!("/{n}")).collect::<Vec<_>>().join(", ")
    )))
}
