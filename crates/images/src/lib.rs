//! crust-images: CRIU's on-disk image format.
//!
//! - [`wire`]: a hand-written proto2 runtime ([`wire::Message`], [`wire::DecodeError`]).
//! - [`message!`] / [`enumeration!`]: declarative message definitions.
//! - [`proto`]: every message CRIU writes, named as in CRIU's .proto files
//!   (`CoreEntry`, `MmEntry`, `PagemapEntry`, ...), enums as modules of `i32`
//!   constants (`fd_types::REG`).

#[macro_use]
mod macros;
pub mod proto;
pub mod wire;

pub use wire::{DecodeError, Message};
pub mod image;
pub mod json;

pub use image::{
    read_all, read_one, write_all, write_one, ImageError, ImageReader, ImageType, ImageWriter,
};
