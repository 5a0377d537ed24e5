//! binfmt_misc mounts. The kernel keeps one binfmt_misc instance per user
//! namespace (one for all before Linux 6.7): a tree in crust's user
//! namespace shares crust's, whose entries outlive the tree, so its mount
//! is only mounted afresh at restore, as CRIU does for an instance that is
//! not virtualized. The entries of an instance of the tree's own user
//! namespace (CRIU's `binfmt-misc.img`) are not dumped or restored yet:
//! such a dump, and a restore of images that hold entries, are refused.

use super::info::MountLine;
use super::refuse;
use crate::{Error, ErrorKind};
use std::path::Path;

/// CRIU's fs type number of binfmt_misc.
pub(crate) const FS_BINFMT_MISC: u32 = 4;

fn userns_ino(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Refuse the binfmt_misc mount `m` of process `pid` when its instance is
/// not crust's (the tree has a user namespace of its own).
pub(crate) fn check_dump(pid: i32, m: &MountLine) -> Result<(), Error> {
    let (tree, mine) = (userns_ino(&pid.to_string()), userns_ino("self"));
    if tree.is_some() && tree == mine {
        return Ok(());
    }
    Err(refuse(
        pid,
        m,
        "is the binfmt_misc of the tree's own user namespace, whose entries crust does not dump yet (CRIU's binfmt-misc.img)",
    ))
}

/// Refuse images that hold binfmt_misc entries (`binfmt-misc.img`, or
/// CRIU's older `binfmt-misc-DEV.img`) for the mount at `mountpoint`.
pub(crate) fn check_restore(dir: &Path, mountpoint: &str, dev: u32) -> Result<(), Error> {
    let has = |name: String| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() > 0);
    if has("binfmt-misc.img".into()) || has(format!("binfmt-misc-{dev}.img")) {
        return Err(Error::refused(
            ErrorKind::Unsupported,
            format!(
                "the binfmt_misc mount at {mountpoint} comes with registered entries (binfmt-misc.img), which crust does not restore yet"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_with_entries_are_refused() {
        let d = std::env::temp_dir().join(format!("crust-binfmt-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(check_restore(&d, "/b", 7).is_ok());
        std::fs::write(d.join("binfmt-misc-7.img"), b"").unwrap();
        assert!(check_restore(&d, "/b", 7).is_ok());
        std::fs::write(d.join("binfmt-misc.img"), b"\x23\x33\x34\x67").unwrap();
        let e = check_restore(&d, "/b", 7).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&d);
        assert!(e.contains("binfmt_misc mount at /b"), "{e}");
    }
}
