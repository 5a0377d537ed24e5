//! Namespaces of the dumped tree.
//!
//! - [`ids`]: the namespace kinds ([`ids::NsKind`]: `/proc/PID/ns/` names,
//!   CLONE_NEW* flags), the ids the images name a process's namespaces by
//!   ([`ids::NsIds`], numbered as CRIU numbers them by [`ids::NsTable`]),
//!   and [`ids::TreeNs`]: one dump's numbering and the rules of which
//!   namespaces crust can dump so far (crust's, plus a pid namespace the
//!   root heads and the root's IPC namespace).
//! - [`sysvipc`]: System V IPC objects belong to an IPC namespace: those of
//!   a tree with an IPC namespace of its own are dumped and restored.

pub(crate) mod ids;
pub(crate) mod sysvipc;
