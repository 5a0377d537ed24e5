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
    /// An `-errno` result is the answer, not a failure: the entries after
    /// it run on.
    may_fail: bool,
}

impl Entry {
    /// Syscall `nr` whose every result but `-errno` is a success.
    fn plain(what: String, nr: i64, args: [u64; 6]) -> Entry {
        Entry {
            what,
            nr,
            args,
            expect: None,
            may_fail: false,
        }
    }
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

    /// Calls queued and not run yet.
    pub fn queued(&self) -> usize {
        self.entries.len()
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
        self.queue(
            r,
            Entry {
                expect,
                ..Entry::plain(what, nr, args)
            },
        )
    }

    /// Queue syscall `nr` whose failure is an answer: its result is the
    /// raw return value (`-errno` as a u64 when it failed).
    pub fn push_may_fail(
        &mut self,
        r: &mut Remote<'_>,
        what: String,
        nr: i64,
        args: [u64; 6],
    ) -> Result<(), Error> {
        self.queue(
            r,
            Entry {
                may_fail: true,
                ..Entry::plain(what, nr, args)
            },
        )
    }

    /// Queue the syscalls `other` holds after those of `self`, in order.
    pub fn append(&mut self, r: &mut Remote<'_>, other: Batch) -> Result<(), Error> {
        for e in other.entries {
            self.queue(r, e)?;
        }
        Ok(())
    }

    fn queue(&mut self, r: &mut Remote<'_>, e: Entry) -> Result<(), Error> {
        self.entries.push(e);
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
                let got = match e.may_fail {
                    true => {
                        let pid = r.pid();
                        let raw = r.task.syscall_raw(e.nr, e.args);
                        raw.map_err(|source| Error::Compel { pid, source })? as u64
                    }
                    false => r.call(&e.what, e.nr, e.args)?,
                };
                check(r.pid(), e, got)?;
                results.push(got);
            }
            return Ok(results);
        };
        // The loop stops at a failure: one that may fail is recorded and
        // the rest run from the entry after it.
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let failed = self.run_table(r, code, rest, &mut results)?;
            let Some(res) = failed else { break };
            let ran = results.len() - (entries.len() - rest.len());
            match rest.get(ran) {
                Some(e) if e.may_fail => {
                    results.push(res as u64);
                    rest = rest.get(ran + 1..).unwrap_or(&[]);
                }
                e => {
                    let what = e.map_or("a batched syscall", |e| e.what.as_str());
                    return Err(Error::Sys {
                        pid: r.pid(),
                        op: format!("{what} (in the task)"),
                        source: std::io::Error::from_raw_os_error(res.saturating_neg() as i32),
                    });
                }
            }
        }
        if results.len() != entries.len() {
            return Err(Error::Sys {
                pid: r.pid(),
                op: format!("short read of {} batched syscall results", entries.len()),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        Ok(results)
    }

    /// Run `entries` as one table with the loop at `code`, appending the
    /// results of those that ran to `results`; the result of the one that
    /// failed and stopped the loop, if one did.
    fn run_table(
        &self,
        r: &mut Remote<'_>,
        code: RemoteAddr,
        entries: &[Entry],
        results: &mut Vec<u64>,
    ) -> Result<Option<i64>, Error> {
        let mut table = Vec::with_capacity(entries.len() * crust_compel::BATCH_ENTRY as usize);
        for e in entries {
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
        let ran = (ran as usize).min(entries.len());
        let back = r.get(self.table_off, ran * crust_compel::BATCH_ENTRY as usize)?;
        let mut got_n = 0;
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
            got_n += 1;
        }
        if got_n != ran {
            return Err(Error::Sys {
                pid,
                op: format!("short read of {ran} batched syscall results"),
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            });
        }
        Ok(failed)
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
