//! Contents of a tmpfs: `tmpfs-dev-N.tar.gz.img` (N: the superblock's
//! device, kernel encoding), a gzipped tar of the filesystem from its root
//! (entries `./`, `./a`...; numeric owners; hard links as links; one
//! filesystem only: what is mounted inside is not archived), as CRIU
//! writes it with GNU tar. Older CRIU images are named by mount id
//! (`tmpfs-ID.tar.gz.img`); both are read.

use crate::Error;
use crust_images::image::ImageType;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Archive the tmpfs whose root directory is at `root` (a path crust can
/// open, e.g. `/proc/self/fd/N`) as superblock `dev`.
pub(crate) fn dump(dir: &Path, dev: u32, root: &Path) -> Result<(), Error> {
    let path = dir.join(ImageType::TmpfsDev.file_name(u64::from(dev)));
    // A private name, recorded: a failed dump removes it with its images.
    let (file, name) =
        crust_sys::private::create_private(&path, 0).map_err(io_err("create", &path))?;
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    let mut w = Walk {
        tar: tar::Builder::new(gz),
        root,
        dev: fs::metadata(root).map_err(io_err("stat", root))?.dev(),
        links: HashMap::new(),
    };
    w.tar.follow_symlinks(false);
    w.entry(Path::new("."))
        .map_err(io_err("archive the tmpfs at", root))?;
    let gz = w.tar.into_inner().map_err(io_err("write", &path))?;
    let out = gz.finish().map_err(io_err("write", &path))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .and_then(|()| name.commit())
        .map_err(io_err("write", &path))
}

struct Walk<'a, W: io::Write> {
    tar: tar::Builder<W>,
    root: &'a Path,
    dev: u64,
    /// (inode) → first name of a file with several links.
    links: HashMap<u64, PathBuf>,
}

impl<W: io::Write> Walk<'_, W> {
    /// Archive `rel` (relative to the root) and, for a directory of the
    /// same filesystem, what it holds.
    fn entry(&mut self, rel: &Path) -> io::Result<()> {
        let full = self.root.join(rel);
        let meta = fs::symlink_metadata(&full)?;
        if meta.dev() != self.dev {
            // Another filesystem mounted here: not ours to archive.
            return Ok(());
        }
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let name = if rel == Path::new(".") {
            PathBuf::from("./")
        } else {
            Path::new(".").join(rel)
        };
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&meta.ino()) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self.tar.append_link(&mut h, &name, first);
            }
            self.links.insert(meta.ino(), name.clone());
        }
        if ft.is_symlink() {
            let target = fs::read_link(&full)?;
            return self.tar.append_link(&mut h, &name, target);
        }
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
        }
        if ft.is_file() {
            let f = File::open(&full)?;
            return self.tar.append_data(&mut h, &name, f);
        }
        h.set_size(0);
        self.tar.append_data(&mut h, &name, io::empty())?;
        if ft.is_dir() {
            let mut names = fs::read_dir(&full)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()?;
            names.sort();
            for n in names {
                let child = if rel == Path::new(".") {
                    PathBuf::from(&n)
                } else {
                    rel.join(&n)
                };
                self.entry(&child)?;
            }
        }
        Ok(())
    }
}

/// The image of tmpfs superblock `dev` mounted as `mnt_id`, if any.
pub(crate) fn image(dir: &Path, dev: u32, mnt_id: u32) -> Option<PathBuf> {
    [
        ImageType::TmpfsDev.file_name(u64::from(dev)),
        ImageType::TmpfsImg.file_name(u64::from(mnt_id)),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.exists())
}

/// Fill the tmpfs mounted at `target` from the archive `img`.
pub(crate) fn restore(img: &Path, target: &Path) -> Result<(), Error> {
    let open = || -> Result<tar::Archive<flate2::read::GzDecoder<File>>, Error> {
        let f = crate::util::open_image_data(img)?;
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_preserve_mtime(true);
        a.set_overwrite(true);
        a.set_unpack_xattrs(false);
        Ok(a)
    };
    let bad = |source: io::Error| Error::Io {
        op: "unpack the tmpfs archive",
        path: img.to_path_buf(),
        source,
    };
    open()?.unpack(target).map_err(bad)?;
    specials(open()?, target, &bad)?;
    // The root's own mode and owner (the unpacker skips the `./` entry).
    let mut a = open()?;
    let first = a.entries().map_err(bad)?.next();
    if let Some(Ok(e)) = first {
        let h = e.header();
        let is_root = e
            .path()
            .map(|p| p.components().all(|c| c == std::path::Component::CurDir))
            .unwrap_or(false);
        if is_root && h.entry_type() == tar::EntryType::Directory {
            let (mode, uid, gid) = (
                h.mode().map_err(bad)?,
                h.uid().map_err(bad)?,
                h.gid().map_err(bad)?,
            );
            std::os::unix::fs::chown(target, Some(uid as u32), Some(gid as u32))
                .map_err(io_err("chown", target))?;
            fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io_err("chmod", target))?;
        }
    }
    Ok(())
}

/// The unpacker makes FIFOs and device nodes regular files: make them
/// again as what they were (mknod), with their owner and mode.
fn specials<R: io::Read>(
    mut a: tar::Archive<R>,
    target: &Path,
    bad: &dyn Fn(io::Error) -> Error,
) -> Result<(), Error> {
    for e in a.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Fifo => libc::S_IFIFO,
            tar::EntryType::Char => libc::S_IFCHR,
            tar::EntryType::Block => libc::S_IFBLK,
            _ => continue,
        };
        let rel = e.path().map_err(bad)?.into_owned();
        // Only names inside the mount (as the unpacker itself wants).
        let inside = rel.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !inside {
            continue;
        }
        let full = target.join(&rel);
        let (mode, uid, gid) = (
            h.mode().map_err(bad)?,
            h.uid().map_err(bad)?,
            h.gid().map_err(bad)?,
        );
        let (major, minor) = (
            h.device_major().map_err(bad)?.unwrap_or(0),
            h.device_minor().map_err(bad)?.unwrap_or(0),
        );
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &full)(e)),
        }
        crust_sys::fs::mknod(&full, kind | (mode & 0o7777), libc::makedev(major, minor))
            .map_err(io_err("mknod", &full))?;
        std::os::unix::fs::lchown(&full, Some(uid as u32), Some(gid as u32))
            .map_err(io_err("chown", &full))?;
        fs::set_permissions(
            &full,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )
        .map_err(io_err("chmod", &full))?;
    }
    Ok(())
}
