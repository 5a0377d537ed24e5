//! Mounts whose root was deleted (a bind of a directory or file removed
//! since: mountinfo marks its root `//deleted`; `MntEntry.deleted`). The
//! restore binds it from a directory or file made again for the moment at
//! that path (a directory or a file as its mountpoint is), then removes it,
//! so the restored mount's root is deleted too.

use crust_images::proto::mnt::MntEntry;
use std::path::Path;

/// What [`make_again`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Made {
    Nothing,
    Dir,
    File,
}

/// If mount `e` had a deleted root and its source `src` is missing, make
/// it again: a directory, or an empty file when the mountpoint `target`
/// is a file.
pub(crate) fn make_again(e: &MntEntry, src: &Path, target: &Path) -> std::io::Result<Made> {
    if e.deleted != Some(true) || std::fs::symlink_metadata(src).is_ok() {
        return Ok(Made::Nothing);
    }
    let file = std::fs::symlink_metadata(target).is_ok_and(|m| !m.is_dir());
    if file {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(src)?;
        Ok(Made::File)
    } else {
        std::fs::create_dir(src)?;
        Ok(Made::Dir)
    }
}

/// Remove what [`make_again`] made at `src`.
pub(crate) fn remove(made: Made, src: &Path) -> std::io::Result<()> {
    match made {
        Made::Nothing => Ok(()),
        Made::Dir => std::fs::remove_dir(src),
        Made::File => std::fs::remove_file(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_again_then_removed() {
        let d = std::env::temp_dir().join(format!("crust-deleted-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = MntEntry {
            deleted: Some(true),
            ..Default::default()
        };
        std::fs::write(d.join("target-file"), "").unwrap();
        let m = make_again(&e, &d.join("src-file"), &d.join("target-file")).unwrap();
        assert_eq!(m, Made::File);
        assert!(d.join("src-file").is_file());
        remove(m, &d.join("src-file")).unwrap();
        let m = make_again(&e, &d.join("src-dir"), &d.join("missing")).unwrap();
        assert_eq!(m, Made::Dir);
        remove(m, &d.join("src-dir")).unwrap();
        assert!(!d.join("src-dir").exists());
        // Not deleted, or there: nothing made.
        let live = MntEntry::default();
        assert_eq!(make_again(&live, &d.join("x"), &d).unwrap(), Made::Nothing);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
