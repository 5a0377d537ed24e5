//! files.img (and remap-fpath.img's ghost ids), read once per restore and
//! shared by every kind's loader and every process's fd table.

use crate::util::read_image;
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::fd_types;
use crust_images::proto::fdinfo::FileEntry;
use crust_images::proto::regfile::RegFileEntry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// files.img by id, built once and shared by every process's fd table
/// (a copy per process made a restore's memory grow with the square of
/// the number of processes).
#[derive(Debug, Default)]
pub struct FileIndex {
    /// The REG entries' regular file parts.
    pub regs: Arc<HashMap<u32, RegFileEntry>>,
    /// The type of every other entry.
    pub others: HashMap<u32, i32>,
}

/// The open files of an image set, parsed once. A part that could not be
/// read is read again when asked for, for the error to say why at the
/// point the restore first needs it (as when each step read it).
#[derive(Debug, Default)]
pub struct LoadedFiles {
    dir: PathBuf,
    /// files.img, if it could be read.
    entries: Option<Vec<FileEntry>>,
    /// files.img is not there at all.
    missing: bool,
    /// Ids of deleted files, opened by crust from ghost images, if
    /// remap-fpath.img could be read.
    ghosted: Option<HashSet<u32>>,
    /// files.img by id, made the first time it is asked for.
    index: OnceLock<FileIndex>,
}

impl LoadedFiles {
    /// Read files.img and remap-fpath.img of `dir`. Never fails: see
    /// [`LoadedFiles::entries`] and [`LoadedFiles::ghosted`].
    pub fn read(dir: &Path) -> LoadedFiles {
        LoadedFiles {
            dir: dir.to_path_buf(),
            entries: read_image(dir, ImageType::Files, 0).ok(),
            missing: !dir.join(ImageType::Files.file_name(0)).exists(),
            ghosted: crate::files::ghost::ghosted_ids(dir).ok(),
            index: OnceLock::new(),
        }
    }

    /// Entries given as they are (tests).
    #[cfg(test)]
    pub fn from_entries(entries: Vec<FileEntry>) -> LoadedFiles {
        LoadedFiles {
            entries: Some(entries),
            ghosted: Some(HashSet::new()),
            ..Default::default()
        }
    }

    /// Every files.img entry, or why files.img could not be read.
    pub fn entries(&self) -> Result<&[FileEntry], Error> {
        match &self.entries {
            Some(v) => Ok(v),
            None => Err(self.reread_error(read_image::<FileEntry>(&self.dir, ImageType::Files, 0))),
        }
    }

    /// files.img by id (see [`FileIndex`]), or why files.img could not be
    /// read.
    pub fn index(&self) -> Result<&FileIndex, Error> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let mut regs = HashMap::new();
        let mut others = HashMap::new();
        for f in self.entries()? {
            match &f.reg {
                Some(reg) if f.r#type == fd_types::REG => {
                    regs.insert(f.id, RegFileEntry::clone(reg));
                }
                _ => {
                    others.insert(f.id, f.r#type);
                }
            }
        }
        Ok(self.index.get_or_init(|| FileIndex {
            regs: Arc::new(regs),
            others,
        }))
    }

    /// files.img is absent from the image set.
    pub fn is_missing(&self) -> bool {
        self.missing
    }

    /// The files.img ids that are ghosts or link remaps (opened by crust,
    /// not from the file system).
    pub fn ghosted(&self) -> Result<&HashSet<u32>, Error> {
        match &self.ghosted {
            Some(g) => Ok(g),
            None => Err(self.reread_error(crate::files::ghost::ghosted_ids(&self.dir))),
        }
    }

    /// The error of a second read of a part whose first read failed.
    fn reread_error<T>(&self, again: Result<T, Error>) -> Error {
        match again {
            Err(e) => e,
            Ok(_) => Error::BadImage {
                dir: self.dir.clone(),
                why: "files.img or remap-fpath.img changed while the restore read it".into(),
            },
        }
    }
}
