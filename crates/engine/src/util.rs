//! Small helpers shared by dump and restore.

use crate::Error;
use crust_images::image::{ImageReader, ImageType, ImageWriter};
use crust_images::Message;
use std::path::Path;

/// VMA status bits of CRIU's images (`vma_entry.status`).
pub mod vma_status {
    pub const REGULAR: u32 = 1 << 0;
    pub const STACK: u32 = 1 << 1;
    pub const VSYSCALL: u32 = 1 << 2;
    pub const VDSO: u32 = 1 << 3;
    pub const HEAP: u32 = 1 << 5;
    pub const FILE_PRIVATE: u32 = 1 << 6;
    pub const FILE_SHARED: u32 = 1 << 7;
    pub const ANON_SHARED: u32 = 1 << 8;
    pub const ANON_PRIVATE: u32 = 1 << 9;
    pub const SYSVIPC: u32 = 1 << 10;
    pub const SOCKET: u32 = 1 << 11;
    pub const VVAR: u32 = 1 << 12;
    pub const AIORING: u32 = 1 << 13;
    pub const MEMFD: u32 = 1 << 14;
    pub const UNSUPP: u32 = 1 << 31;
}

/// Pagemap entry flags (`pagemap_entry.flags`).
pub mod pe {
    pub const PARENT: u32 = 1 << 0;
    pub const LAZY: u32 = 1 << 1;
    pub const PRESENT: u32 = 1 << 2;
}

/// CRIU's task states (`task_core_entry.task_state`).
pub mod task_state {
    pub const ALIVE: u32 = 1;
    pub const DEAD: u32 = 2;
    pub const STOPPED: u32 = 3;
}

pub fn proc_err(pid: i32) -> impl FnOnce(crust_proc::ProcError) -> Error {
    move |source| {
        if source.is_not_found() {
            Error::NoSuchProcess { pid }
        } else {
            Error::Proc { pid, source }
        }
    }
}

pub fn compel_err(pid: i32) -> impl FnOnce(crust_compel::Error) -> Error {
    move |source| Error::Compel { pid, source }
}

pub fn sys_err(pid: i32, op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let op = op.into();
    move |source| Error::Sys { pid, op, source }
}

fn img_err(what: String) -> impl FnOnce(crust_images::image::ImageError) -> Error {
    move |source| Error::Image { what, source }
}

/// Write a whole image of `entries` into `dir`.
pub fn write_image<M: Message>(
    dir: &Path,
    ty: ImageType,
    id: u64,
    entries: &[M],
) -> Result<(), Error> {
    let name = ty.file_name(id);
    let mut w =
        ImageWriter::create(dir, ty, &name).map_err(img_err(format!("cannot write {name}")))?;
    for e in entries {
        w.write_entry(e)
            .map_err(img_err(format!("cannot write {name}")))?;
    }
    w.finish().map_err(img_err(format!("cannot write {name}")))
}

/// Read every entry of an image.
pub fn read_image<M: Message>(dir: &Path, ty: ImageType, id: u64) -> Result<Vec<M>, Error> {
    let name = ty.file_name(id);
    let mut r = ImageReader::open_typed(dir, ty, &name)
        .map_err(img_err(format!("cannot read image {name}")))?;
    r.read_remaining()
        .map_err(img_err(format!("cannot read image {name}")))
}

/// Read the single entry an image must hold.
pub fn read_one<M: Message>(dir: &Path, ty: ImageType, id: u64) -> Result<M, Error> {
    let mut v = read_image::<M>(dir, ty, id)?;
    if v.is_empty() {
        return Err(Error::BadImage {
            dir: dir.to_path_buf(),
            why: format!("{} holds no entry", ty.file_name(id)),
        });
    }
    Ok(v.swap_remove(0))
}

/// Split a 64-bit capability set into CRIU's two u32 words.
pub fn cap_words(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// Join CRIU's capability words back into one u64.
pub fn cap_join(w: &[u32]) -> u64 {
    let lo = w.first().copied().unwrap_or(0) as u64;
    let hi = w.get(1).copied().unwrap_or(0) as u64;
    lo | (hi << 32)
}

/// Microseconds since `t`.
pub fn us_since(t: std::time::Instant) -> u64 {
    t.elapsed().as_micros() as u64
}
