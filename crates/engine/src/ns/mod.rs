//! Namespaces of the dumped tree. System V IPC objects belong to an IPC
//! namespace, so they live here.

pub(crate) mod sysvipc;
