//! Pages files written with O_DIRECT (a page server's choice: see
//! `LocalImages::direct_io`): whole pages in page-aligned memory go to the
//! device without filling the page cache; anything else, and a file
//! system that refuses O_DIRECT, through the page cache as usual.

use crust_sys::PAGE_SIZE;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Turn O_DIRECT on for `file` (at `path`, for the log); false when the
/// file system does not take it.
pub(super) fn turn_on(file: &File, path: &Path) -> bool {
    crust_sys::fs::set_direct_io(file.as_fd(), true)
        .inspect_err(|e| {
            log::debug!(
                "{}: no O_DIRECT ({e}): written through the page cache",
                path.display()
            )
        })
        .is_ok()
}

/// Write all of `bytes` at `off` of `file`. With `direct` (the file has
/// O_DIRECT), bytes that are not whole pages in page-aligned memory, or a
/// direct write the file system refuses (EINVAL), turn O_DIRECT off for
/// good (`direct` becomes false) and go through the page cache.
pub(super) fn write_at(
    file: &File,
    bytes: &[u8],
    off: u64,
    direct: &mut bool,
) -> std::io::Result<()> {
    let ps = PAGE_SIZE as usize;
    let aligned = bytes.as_ptr().align_offset(ps) == 0 && bytes.len().is_multiple_of(ps);
    if *direct && !aligned {
        crust_sys::fs::set_direct_io(file.as_fd(), false)?;
        *direct = false;
    }
    match file.write_all_at(bytes, off) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!("O_DIRECT write refused ({e}): through the page cache");
            crust_sys::fs::set_direct_io(file.as_fd(), false)?;
            *direct = false;
            file.write_all_at(bytes, off)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aligned pages go direct, an unaligned piece turns it off, and the
    /// file holds every byte where it belongs either way.
    #[test]
    fn direct_then_unaligned() {
        let dir = std::env::temp_dir().join(format!("crust-direct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let ps = PAGE_SIZE as usize;
        let mut direct = turn_on(&f, &path);
        // Two pages in aligned memory, then one page at an odd address.
        let buf: Vec<u8> = (0..4 * ps).map(|i| (i / ps) as u8 + 1).collect();
        let at = buf.as_ptr().align_offset(ps).min(ps);
        let two = &buf[at..at + 2 * ps];
        let want_direct = direct;
        write_at(&f, two, 0, &mut direct).unwrap();
        assert_eq!(direct, want_direct, "aligned pages keep O_DIRECT");
        let odd = vec![9u8; ps + 1];
        write_at(&f, &odd[1..], 2 * ps as u64, &mut direct).unwrap();
        assert!(!direct, "unaligned memory turns O_DIRECT off");
        let mut back = vec![0u8; 3 * ps];
        f.read_exact_at(&mut back, 0).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&back[..2 * ps], two);
        assert!(back[2 * ps..].iter().all(|&b| b == 9));
    }
}
