//! A file the tree holds open on a mount that other mounts cover
//! (overmounted) is refused at dump, as CRIU does: its path would open
//! another file at restore. Kept here (not in ns::mnt) so that the files
//! layer may ask.

use crate::Error;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

/// The id of the mount `path` is on (`None` when it cannot be opened).
pub(crate) fn mnt_id_of(path: &str) -> Option<u64> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    crust_sys::mountfd::mnt_id(f.as_fd()).ok()
}

/// Undo mountinfo's octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b.get(i) == Some(&b'\\') && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(o) = oct {
            out.push(
                o.iter()
                    .fold(0u8, |a, c| a.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
        } else {
            out.extend(b.get(i));
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mountpoint of mount `id` in `mountinfo`'s text.
fn mountpoint_of(mountinfo: &str, id: u32) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let mut f = l.split(' ');
        let this: u32 = f.next()?.parse().ok()?;
        (this == id).then(|| f.nth(3).map(unescape))?
    })
}

/// Refuse fd `fd` of process `pid`, open on `path` of mount `mnt_id`,
/// when that mount is hidden under other mounts.
pub(crate) fn check_file(pid: i32, fd: i32, mnt_id: i32, path: &str) -> Result<(), Error> {
    let Ok(id) = u32::try_from(mnt_id) else {
        return Ok(());
    };
    // The path may show another file, or none (the cover has no such
    // name): either way the mount's own mountpoint says whether it is
    // covered.
    if mnt_id_of(&format!("/proc/{pid}/root{path}")) == Some(u64::from(id)) {
        return Ok(());
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let Some(mp) = mountpoint_of(&info, id) else {
        return Ok(());
    };
    let at = mnt_id_of(&format!("/proc/{pid}/root{mp}"));
    if at.is_some_and(|a| a != u64::from(id)) {
        return Err(Error::refused(
            crate::ErrorKind::Unsupported,
            format!(
                "process {pid} has fd {fd} open on {path}, a file of mount {id} at {mp}, which other mounts cover: its path would open another file at restore (CRIU refuses it too); close it or unmount what covers the mount before the dump"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_found_by_id_and_unescaped() {
        let t = "20 1 0:5 / / rw - ext4 x rw\n31 20 0:40 / /a\\040b rw shared:3 - tmpfs t rw\n";
        assert_eq!(mountpoint_of(t, 31).as_deref(), Some("/a b"));
        assert_eq!(mountpoint_of(t, 20).as_deref(), Some("/"));
        assert_eq!(mountpoint_of(t, 9), None);
    }
}
