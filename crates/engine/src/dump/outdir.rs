//! The images directory of a dump: checked before anything is written,
//! emptied of what the dump wrote if it fails, made durable before the
//! tree is killed. Every image file is created by
//! `crust_sys::private::create_private` (through `ImageWriter` or the page
//! sink), which records its name once complete.

use crate::{Error, Options};
use crust_sys::private;
use log::{debug, warn};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Create the images directory if needed (mode 0700) and warn about one
/// that is not the caller's or that others can write. Forgets earlier records of files written
/// there (the log, a dump before this one in the same process).
pub(super) fn prepare(opts: &Options) -> Result<(), Error> {
    let dir = &opts.images_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            op: "cannot create images directory",
            path: dir.clone(),
            source,
        })?;
    check_private(dir, "images directory", opts)?;
    // The log goes to the work dir (-W): the same rule.
    if let Some(w) = opts.work_dir.as_ref().filter(|w| *w != dir) {
        check_private(w, "work directory (-W)", opts)?;
    }
    drop(private::take_written_in(dir));
    Ok(())
}

/// Warn when `dir` is not the caller's or others can write it. CRIU
/// writes there without a word (its test suite makes every images
/// directory 0777), and crust's writes are safe in such a directory: every
/// file is created new under a temporary name (`O_EXCL|O_NOFOLLOW`, mode
/// 0600) and renamed into place, and a reader refuses an image another
/// user could have put there (`crust_images::image::file_problem`).
fn check_private(dir: &Path, what: &'static str, opts: &Options) -> Result<(), Error> {
    if let Err(e) = private::check_dir(dir) {
        if !opts.allow_unsafe_images_dir {
            warn!(
                "{what} {}: {e}; its images are written safely, but keep them in a \
                 directory of your own (chmod 0700)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// A failed dump: remove every image it wrote in `dir` (unfinished ones
/// never got their name and are already gone).
pub(super) fn discard(dir: &Path) {
    let written = private::take_written_in(dir);
    for p in &written {
        match std::fs::remove_file(p) {
            Ok(()) => debug!("removed {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot remove {} of the failed dump: {e}", p.display()),
        }
    }
    if !written.is_empty() {
        if let Err(e) = private::sync_dir(dir) {
            warn!("{e}");
        }
        warn!(
            "removed the {} images the failed dump wrote in {}",
            written.len(),
            dir.display()
        );
    }
}

/// Before the tree is killed: fsync every image written in `dir`, then
/// `dir`, so a crash of the machine right after the dump loses nothing.
pub(super) fn make_durable(dir: &Path) -> Result<(), Error> {
    let t = std::time::Instant::now();
    private::sync_written_in(dir).map_err(|source| Error::Io {
        op: "cannot make the images durable in",
        path: dir.to_path_buf(),
        source,
    })?;
    if private::in_memory_only(dir) {
        log::debug!("images not synced: their directory is in memory only (tmpfs)");
    } else {
        log::debug!("images made durable in {} us", crate::util::us_since(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::image::ImageType;
    use crust_images::proto::seccomp::SeccompEntry;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuse_unsafe_dir_discard_what_was_written() {
        let dir = std::env::temp_dir().join(format!("crust-outdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = Options {
            images_dir: dir.join("img"),
            ..Options::default()
        };
        // Created private.
        prepare(&opts).unwrap();
        let img = &opts.images_dir;
        let mode = std::fs::metadata(img).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // A directory others can write is used (CRIU's test suite makes
        // them 0777): readers refuse what others could plant there.
        std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare(&opts).unwrap();
        opts.allow_unsafe_images_dir = true;
        prepare(&opts).unwrap();
        std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o700)).unwrap();

        // A file of the caller's that is not an image of this dump stays.
        std::fs::write(img.join("dump.log"), "log").unwrap();
        crate::util::write_image(img, ImageType::Seccomp, 0, &[SeccompEntry::default()]).unwrap();
        make_durable(img).unwrap();
        discard(img);
        let names: Vec<_> = std::fs::read_dir(img)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dump.log"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
