//! Ghosts saved and made again: holes kept, the limit counted in blocks,
//! FIFOs, directories and symlinks.

use super::*;
use crate::files::loaded::LoadedFiles;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

#[test]
fn only_link_remap_names_are_removed() {
    assert!(is_link_remap_name(Path::new("/tmp/d/link_remap.12")));
    assert!(!is_link_remap_name(Path::new("/etc/passwd")));
    assert!(!is_link_remap_name(Path::new("/tmp/link_remap.")));
    assert!(!is_link_remap_name(Path::new("/tmp/link_remap.1x")));
    assert!(!is_link_remap_name(Path::new("link_remap.1")));
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crust-ghost-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("img")).unwrap();
    d
}

/// Dump the deleted files crust holds open at `fds` (as process `me`),
/// then load and open them again: the descriptions by files.img id.
fn round_trip(dir: &Path, fds: &[(i32, u32)], limit: Option<u64>) -> Result<Ghosts, Error> {
    let me = crust_sys::process::getpid();
    let mut g = GhostDump::default();
    g.set_limit(limit);
    let mut next = 100;
    let mut entries = Vec::new();
    for (n, (fd, flags)) in fds.iter().enumerate() {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let link = link.to_string_lossy().into_owned();
        entries.push(g.add(me, *fd, &link, *flags, 0, n as u32 + 1, &mut next)?);
    }
    let img = dir.join("img");
    g.write(&img)?;
    crate::util::write_image(&img, ImageType::Files, 0, &entries)?;
    Ghosts::load(&img, &LoadedFiles::from_entries(entries))
}

fn seek(fd: BorrowedFd<'_>, from: u64, hole: bool) -> Option<u64> {
    crust_sys::fs::seek_data_or_hole(fd, from, hole).unwrap()
}

#[test]
fn holes_of_a_deleted_file_are_kept() {
    let d = tmpdir("holes");
    let p = d.join("sparse");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    // A hole, data, a hole, data, a hole: 64 KiB in all.
    f.write_all_at(&[7u8; 4096], 8192).unwrap();
    f.write_all_at(&[9u8; 4096], 32768).unwrap();
    f.set_len(65536).unwrap();
    std::fs::remove_file(&p).unwrap();
    let sparse_here = seek(f.as_fd(), 0, false) == Some(8192);
    let ghosts = round_trip(&d, &[(f.as_raw_fd(), libc::O_RDWR as u32)], None).unwrap();
    // Chunks were written: the image holds the data, not the holes.
    let img = std::fs::metadata(d.join("img").join("ghost-file-1.img")).unwrap();
    let opened = ghosts.open().unwrap();
    let back = opened.get(1).unwrap();
    let mut got = vec![0u8; 65536];
    let n = nix_pread(back, &mut got);
    let nlink = std::fs::metadata(format!("/proc/self/fd/{}", back.as_raw_fd()))
        .unwrap()
        .nlink();
    let sparse_back = (seek(back, 0, false), seek(back, 8192, true));
    drop(opened);
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!(n, 65536);
    assert!(got[..8192].iter().all(|b| *b == 0));
    assert!(got[8192..12288].iter().all(|b| *b == 7));
    assert!(got[12288..32768].iter().all(|b| *b == 0));
    assert!(got[32768..36864].iter().all(|b| *b == 9));
    assert!(got[36864..].iter().all(|b| *b == 0));
    assert_eq!(nlink, 0, "the ghost is removed once opened");
    if sparse_here {
        assert!(img.len() < 16384, "holes stored: {} bytes", img.len());
        assert_eq!(sparse_back, (Some(8192), Some(12288)));
    }
}

fn nix_pread(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    let f = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    let mut n = 0;
    while n < buf.len() {
        let got = f.read_at(&mut buf[n..], n as u64).unwrap();
        if got == 0 {
            break;
        }
        n += got;
    }
    n
}

#[test]
fn the_ghost_limit_counts_blocks_not_size() {
    let d = tmpdir("limit");
    let p = d.join("big-but-sparse");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(&[1u8; 4096], 64 << 20).unwrap();
    std::fs::remove_file(&p).unwrap();
    let sparse = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .unwrap()
        .blocks()
        < 1024;
    let sparse_ok = round_trip(&d, &[(f.as_raw_fd(), 0)], Some(1 << 20)).map(|_| ());
    let p = d.join("dense");
    let g = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    g.write_all_at(&vec![1u8; 2 << 20], 0).unwrap();
    std::fs::remove_file(&p).unwrap();
    let dense = round_trip(&d, &[(g.as_raw_fd(), 0)], Some(1 << 20)).map(|_| ());
    std::fs::remove_dir_all(&d).unwrap();
    if sparse {
        sparse_ok.unwrap();
    }
    assert!(matches!(dense, Err(Error::GhostTooBig { .. })), "{dense:?}");
}

#[test]
fn deleted_fifos_dirs_and_symlinks_are_made_again() {
    let d = tmpdir("nodes");
    let fifo = d.join("fifo");
    crust_sys::fs::mknod(&fifo, libc::S_IFIFO | 0o640, 0).unwrap();
    let ff = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let dir = d.join("gone").join("sub");
    std::fs::create_dir_all(&dir).unwrap();
    let df = std::fs::File::open(&dir).unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink("some/target", &link).unwrap();
    use std::os::unix::fs::OpenOptionsExt;
    let lf = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&link)
        .unwrap();
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    std::fs::remove_dir(d.join("gone")).unwrap();
    std::fs::remove_file(&link).unwrap();
    let path_flags = (libc::O_PATH | libc::O_NOFOLLOW) as u32;
    let ghosts = round_trip(
        &d,
        &[
            (ff.as_raw_fd(), libc::O_RDONLY as u32),
            (df.as_raw_fd(), libc::O_RDONLY as u32),
            (lf.as_raw_fd(), path_flags),
        ],
        None,
    )
    .unwrap();
    let opened = ghosts.open().unwrap();
    let md = |id: u32| {
        std::fs::metadata(format!(
            "/proc/self/fd/{}",
            opened.get(id).unwrap().as_raw_fd()
        ))
        .unwrap()
    };
    let (fifo_md, dir_md, link_md) = (md(1), md(2), md(3));
    let target = crust_sys::fs::readlink_fd(opened.get(3).unwrap()).unwrap();
    let dir_link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        opened.get(2).unwrap().as_raw_fd()
    ))
    .unwrap();
    drop(opened);
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::remove_dir_all(&d).unwrap();
    assert!(fifo_md.file_type().is_fifo());
    assert_eq!(fifo_md.mode() & 0o7777, 0o640);
    assert!(dir_md.is_dir());
    assert_eq!(dir_md.nlink(), 0);
    assert_eq!(
        dir_link.to_string_lossy(),
        format!("{} (deleted)", dir.display())
    );
    assert!(link_md.file_type().is_symlink());
    assert_eq!(target, b"some/target");
    // Only the image directory is left: ghosts and the parents made for
    // them are gone.
    assert_eq!(left, vec![std::ffi::OsString::from("img")]);
}

#[test]
fn a_deleted_fifo_linked_elsewhere_is_refused() {
    let d = tmpdir("linked-fifo");
    let a = d.join("a");
    crust_sys::fs::mknod(&a, libc::S_IFIFO | 0o600, 0).unwrap();
    std::fs::hard_link(&a, d.join("b")).unwrap();
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&a)
        .unwrap();
    std::fs::remove_file(&a).unwrap();
    let r = round_trip(&d, &[(f.as_raw_fd(), libc::O_RDWR as u32)], None).map(|_| ());
    std::fs::remove_dir_all(&d).unwrap();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("still linked elsewhere"), "{e}");
}

#[test]
fn chunks_out_of_bounds_are_refused() {
    let d = tmpdir("bad-chunks");
    let img = d.join("img");
    let write = |chunks: &[(u64, u64)]| {
        let name = ImageType::GhostFile.file_name(1);
        let mut w = ImageWriter::create(&img, ImageType::GhostFile, &name).unwrap();
        w.write_entry(&GhostFileEntry {
            mode: libc::S_IFREG | 0o600,
            chunks: Some(true),
            size: Some(100),
            ..Default::default()
        })
        .unwrap();
        for (off, len) in chunks {
            w.write_entry(&GhostChunkEntry {
                off: *off,
                len: *len,
                ..Default::default()
            })
            .unwrap();
            w.write_raw(&vec![1u8; *len as usize]).unwrap();
        }
        w.finish().unwrap();
    };
    let entries = vec![reg_file_entry(1, d.join("x"), 100)];
    crate::util::write_image(&img, ImageType::Files, 0, &entries).unwrap();
    let remap = RemapFilePathEntry {
        orig_id: 1,
        remap_id: 1,
        remap_type: Some(remap_type::GHOST),
        ..Default::default()
    };
    crate::util::write_image(&img, ImageType::RemapFpath, 0, &[remap]).unwrap();
    let load = || Ghosts::load(&img, &LoadedFiles::from_entries(entries.clone())).map(|_| ());
    write(&[(0, 10), (50, 10)]);
    let good = load();
    write(&[(95, 10)]);
    let past_size = load();
    write(&[(50, 10), (0, 10)]);
    let backwards = load();
    std::fs::remove_dir_all(&d).unwrap();
    good.unwrap();
    assert!(
        matches!(past_size, Err(Error::BadImage { .. })),
        "{past_size:?}"
    );
    assert!(
        matches!(backwards, Err(Error::BadImage { .. })),
        "{backwards:?}"
    );
}

fn reg_file_entry(id: u32, path: PathBuf, size: u64) -> FileEntry {
    FileEntry {
        r#type: fd_types::REG,
        id,
        reg: Some(Box::new(RegFileEntry {
            id,
            name: path.to_string_lossy().into_owned(),
            size: Some(size),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn proc_dirs_of_dead_processes_are_recognised_by_path_and_device() {
    let proc_md = std::fs::metadata("/proc/self").unwrap();
    let me = std::process::id() as i32;
    let tmp_md = std::fs::metadata(std::env::temp_dir()).unwrap();
    assert_eq!(super::dead_proc_pid(me, "/proc/123", &proc_md), Some(123));
    assert_eq!(
        super::dead_proc_pid(me, "/proc/123/fd", &proc_md),
        Some(123)
    );
    assert_eq!(super::dead_proc_pid(me, "/proc/self", &proc_md), None);
    assert_eq!(super::dead_proc_pid(me, "/proc/0", &proc_md), None);
    assert_eq!(super::dead_proc_pid(me, "/proc/12x", &proc_md), None);
    assert_eq!(super::dead_proc_pid(me, "/tmp/123", &proc_md), None);
    // Not on /proc's file system: a directory named like one.
    assert_eq!(super::dead_proc_pid(me, "/proc/123", &tmp_md), None);
}
