//! cgroups of the dumped tree (cgroup.img).

// Wired into the dump and restore flows with the rest of cgroup/.
#[allow(dead_code)]
pub mod props;
// Used by the cgroup core's dump (cgns_prefix) and restore.
#[allow(dead_code)]
pub mod ns;
