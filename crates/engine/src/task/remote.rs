//! Remote syscalls with a scratch buffer in the task's memory.

use crate::util::sys_err;
use crate::Error;
use crust_compel::Task;
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};

/// Restore's trampoline, mapped in every task it creates: one code page
/// (the syscall instruction remote syscalls run) then scratch pages for
/// their data.
pub(crate) const TRAMP_SIZE: u64 = 16 * PAGE_SIZE;

/// A task under control plus a scratch area in its address space for the
/// arguments and results of remote syscalls.
pub struct Remote<'a> {
    pub task: &'a mut Task,
    pub scratch: RemoteAddr,
    pub scratch_len: u64,
}

impl<'a> Remote<'a> {
    /// `task` driven through the trampoline at `tramp`: its scratch area is
    /// the trampoline after the code page.
    pub fn on_trampoline(task: &'a mut Task, tramp: u64) -> Self {
        Remote {
            task,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
        }
    }

    pub fn pid(&self) -> i32 {
        self.task.pid()
    }

    /// Run a syscall; `-errno` becomes an error naming `what`.
    pub fn call(&mut self, what: &str, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        let pid = self.pid();
        match self.task.syscall(nr, args) {
            Ok(v) => Ok(v),
            Err(crust_compel::Error::Syscall { source, .. }) => Err(Error::Sys {
                pid,
                op: format!("{what} (in the task)"),
                source,
            }),
            Err(e) => Err(Error::Compel { pid, source: e }),
        }
    }

    /// Address of scratch offset `off`.
    pub fn at(&self, off: u64) -> RemoteAddr {
        self.scratch.add(off)
    }

    /// Copy `data` to scratch offset `off`; returns its remote address.
    pub fn put(&self, off: u64, data: &[u8]) -> Result<RemoteAddr, Error> {
        let pid = self.pid();
        if off.saturating_add(data.len() as u64) > self.scratch_len {
            return Err(Error::Sys {
                pid,
                op: format!(
                    "copying {} bytes to offset {off} of a {}-byte scratch area (crust bug: the scratch area is too small)",
                    data.len(),
                    self.scratch_len
                ),
                source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
            });
        }
        let addr = self.at(off);
        let n = mem::write(pid, addr, data).map_err(sys_err(pid, "process_vm_writev"))?;
        if n != data.len() {
            return Err(Error::Sys {
                pid,
                op: format!("short process_vm_writev at {addr}"),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        Ok(addr)
    }

    /// Copy a NUL-terminated string to scratch offset `off`.
    pub fn put_cstr(&self, off: u64, s: &[u8]) -> Result<RemoteAddr, Error> {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        self.put(off, &v)
    }

    /// Read `len` bytes at scratch offset `off`.
    pub fn get(&self, off: u64, len: usize) -> Result<Vec<u8>, Error> {
        let pid = self.pid();
        let mut buf = vec![0u8; len];
        let n = mem::read(pid, self.at(off), &mut buf).map_err(sys_err(pid, "process_vm_readv"))?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn get_u64(&self, off: u64) -> Result<u64, Error> {
        let b = self.get(off, 8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
}
