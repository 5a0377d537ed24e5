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
    /// Where the syscall-table loop ([`crust_compel::BATCH_CODE`]) is in
    /// the task, if it is there: what [`Batch`]es of this task run on.
    pub batch_code: Option<RemoteAddr>,
}

impl<'a> Remote<'a> {
    /// `task` driven through the trampoline at `tramp`: its scratch area is
    /// the trampoline after the code page.
    pub fn on_trampoline(task: &'a mut Task, tramp: u64) -> Self {
        Remote {
            task,
            scratch: RemoteAddr(tramp + PAGE_SIZE),
            scratch_len: TRAMP_SIZE - PAGE_SIZE,
            batch_code: Some(batch_code(tramp)),
        }
    }

    pub fn pid(&self) -> i32 {
        self.task.pid()
    }

    /// Run a syscall; `-errno` becomes an error naming `what`.
    pub fn call(&mut self, what: &str, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        let r = self.task.syscall_raw(nr, args);
        self.result(what, r)
    }

    /// [`Remote::call`] stepped through the syscall's entry and exit stops
    /// ([`Task::syscall_stepped`]): for a syscall that may make a signal
    /// that cannot be blocked due in the task.
    pub fn call_stepped(&mut self, what: &str, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        let r = self.task.syscall_stepped(nr, args);
        self.result(what, r)
    }

    fn result(&self, what: &str, r: Result<i64, crust_compel::Error>) -> Result<u64, Error> {
        let pid = self.pid();
        match r {
            Ok(v) if (-4095..0).contains(&v) => Err(Error::Sys {
                pid,
                op: format!("{what} (in the task)"),
                source: std::io::Error::from_raw_os_error(-v as i32),
            }),
            Ok(v) => Ok(v as u64),
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

/// Where the syscall-table loop ([`crust_compel::BATCH_CODE`]) is in
/// restore's trampoline at `tramp`.
pub fn batch_code(tramp: u64) -> RemoteAddr {
    RemoteAddr(tramp + crust_compel::BATCH_OFFSET)
}

/// One syscall of a [`Batch`]: what it does (for errors), its number and
/// arguments, and the result it must give (`mmap` at a fixed place), if
/// any.
struct Entry {
    what: String,
    nr: i64,
    args: [u64; 6],
    expect: Option<u64>,
}

/// Remote syscalls whose results are not needed at once, gathered and run
/// many per ptrace stop by the trampoline's loop (a few hundred times
/// faster per call than [`Remote::call`], which stops once or twice per
/// syscall).
/// Entries run in order when the scratch area is full and at
/// [`Batch::flush`], which must come before anything that depends on them;
/// the first failure ends the run and is reported as `call` would. Without
/// the loop (`code` None: not on restore's trampoline) each runs by
/// `call`.
pub struct Batch {
    code: Option<RemoteAddr>,
    entries: Vec<Entry>,
    /// Where the table goes in the scratch area (what is before it is left
    /// to the syscalls' own data).
    table_off: u64,
}

impl Batch {
    pub fn new(code: Option<RemoteAddr>) -> Self {
        Batch {
            code,
            entries: Vec::new(),
            table_off: 0,
        }
    }

    /// A batch whose table goes at scratch offset `off`, after the data
    /// its syscalls read or write.
    pub fn with_table_at(code: Option<RemoteAddr>, off: u64) -> Self {
        Batch {
            code,
            entries: Vec::new(),
            table_off: off,
        }
    }

    /// Queue syscall `nr`; `expect`: the only result that is a success.
    pub fn push(
        &mut self,
        r: &mut Remote<'_>,
        what: String,
        nr: i64,
        args: [u64; 6],
        expect: Option<u64>,
    ) -> Result<(), Error> {
        self.entries.push(Entry {
            what,
            nr,
            args,
            expect,
        });
        let room = r.scratch_len.saturating_sub(self.table_off) / crust_compel::BATCH_ENTRY;
        if self.entries.len() as u64 >= room.max(1) {
            self.flush(r)?;
        }
        Ok(())
    }

    /// Run every queued syscall, in order; their results, in order.
    pub fn flush(&mut self, r: &mut Remote<'_>) -> Result<Vec<u64>, Error> {
        let entries = std::mem::take(&mut self.entries);
        let mut results = Vec::with_capacity(entries.len());
        let Some(code) = self.code else {
            for e in &entries {
                let got = r.call(&e.what, e.nr, e.args)?;
                check(r.pid(), e, got)?;
                results.push(got);
            }
            return Ok(results);
        };
        if entries.is_empty() {
            return Ok(results);
        }
        let mut table = Vec::with_capacity(entries.len() * crust_compel::BATCH_ENTRY as usize);
        for e in &entries {
            table.extend_from_slice(&(e.nr as u64).to_le_bytes());
            for a in e.args {
                table.extend_from_slice(&a.to_le_bytes());
            }
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        let at = r.put(self.table_off, &table)?;
        let pid = r.pid();
        let (ran, failed) = r
            .task
            .syscall_batch(code, at, entries.len() as u64)
            .map_err(|e| Error::Compel { pid, source: e })?;
        if let (Some(res), Some(e)) = (failed, entries.get(ran as usize)) {
            return Err(Error::Sys {
                pid,
                op: format!("{} (in the task)", e.what),
                source: std::io::Error::from_raw_os_error(res.saturating_neg() as i32),
            });
        }
        let back = r.get(self.table_off, table.len())?;
        for (e, w) in entries
            .iter()
            .zip(back.chunks_exact(crust_compel::BATCH_ENTRY as usize))
        {
            let got = w
                .get(56..64)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            check(pid, e, got)?;
            results.push(got);
        }
        if results.len() != entries.len() {
            return Err(Error::Sys {
                pid,
                op: format!("short read of {} batched syscall results", entries.len()),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        Ok(results)
    }
}

/// An entry's result against the one it must give.
fn check(pid: i32, e: &Entry, got: u64) -> Result<(), Error> {
    match e.expect {
        Some(want) if want != got => Err(Error::Restore {
            pid,
            what: format!("{}: placed at {got:#x}, not {want:#x}", e.what),
        }),
        _ => Ok(()),
    }
}
