//! crust-sys: the only crate of crust with `unsafe`. Thin, checked wrappers
//! over the raw syscalls that std and libc do not wrap safely: ptrace,
//! process_vm_readv/writev, clone3 with set_tid, waitpid, cpuid and a few
//! more. Every function returns `std::io::Error` (errno) on failure; callers
//! add context (pid, address, path) in their own error types.

pub mod cpu;
pub mod events;
pub mod fdpass;
pub mod fown;
pub mod fs;
pub mod fsmount;
pub mod ipc;
pub mod killswitch;
pub mod mem;
pub mod memfd;
pub mod mount;
pub mod mount_group;
pub mod mountfd;
pub mod mqueue;
pub mod net;
pub mod ns;
pub mod pipe;
pub mod private;
pub mod probe;
pub mod process;
pub mod psock;
pub mod ptrace;
pub mod rawsk;
pub mod sockfilter;
#[doc(hidden)]
pub mod testing;
pub mod tty;
pub mod tun;
pub mod uffd;
pub mod uffd_missing;
pub mod unix;
pub mod userns;

use std::fmt;

/// An address in another process's address space. Never dereferenced here;
/// only passed to syscalls that act on the other process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RemoteAddr(pub u64);

impl RemoteAddr {
    pub const fn new(a: u64) -> Self {
        RemoteAddr(a)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    pub const fn add(self, off: u64) -> Self {
        RemoteAddr(self.0 + off)
    }
}

impl fmt::Debug for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Size of a page on x86_64.
pub const PAGE_SIZE: u64 = 4096;

/// Turn a raw syscall return value (`-1` + errno) into a Result.
pub(crate) fn cvt(ret: libc::c_long) -> std::io::Result<libc::c_long> {
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
