//! crust-images: CRIU's on-disk image format.
//!
//! - [`wire`]: a hand-written proto2 runtime ([`wire::Message`], [`wire::DecodeError`]).
//! - [`message!`] / [`enumeration!`]: declarative message definitions.
//! - [`proto`]: every message CRIU 4.2 writes, named as in CRIU's .proto files
//!   in CamelCase (`CoreEntry`, `MmEntry`, `PagemapEntry`, ...), with CRIU's
//!   field names (`r#type` for `type`); enums are modules of `i32` constants
//!   (`fd_types::REG`, `core_entry_march::X86_64` for enums nested in a message).
//! - [`image`]: magics ([`ImageType`]), framing, [`ImageReader`] / [`ImageWriter`].
//! - [`crit`]: CRIU's crit built in: image files to crit's exact JSON and back.
//! - [`json`]: crit's JSON of an image file (over [`crit`]).
//! - [`consts`]: flag values stored in image fields (PE_*, VMA_*, task states).
//!
//! ```
//! use crust_images::proto::{PstreeEntry, InventoryEntry};
//! use crust_images::{read_all, read_one, write_all, write_one, ImageType};
//!
//! let dir = std::env::temp_dir().join(format!("crust-images-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let task = PstreeEntry { pid: 42, ppid: 0, pgid: 42, sid: 42, threads: vec![42], ..Default::default() };
//! write_all(&dir, ImageType::Pstree, "pstree.img", &[task.clone()]).unwrap();
//! assert_eq!(read_all::<PstreeEntry>(&dir, "pstree.img").unwrap(), vec![task]);
//!
//! let missing = read_one::<InventoryEntry>(&dir, "inventory.img").unwrap_err();
//! assert!(missing.is_missing());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

#[macro_use]
mod macros;
pub mod consts;
pub mod crit;
pub mod image;
pub mod json;
pub mod proto;
pub mod wire;

pub use image::{
    read_all, read_one, read_pagemap, write_all, write_one, write_pagemap, ImageError, ImageReader,
    ImageType, ImageWriter,
};
pub use wire::{DecodeError, Message};
