//! crust-sys: the only crate of crust with `unsafe`. Thin, checked wrappers
//! over the raw syscalls that std and libc do not wrap safely.

pub mod probe;
