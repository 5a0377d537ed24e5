//! Copying stored pages into a stopped task: pread from a pages image and
//! process_vm_writev, on two crust threads.

use crate::util::sys_err;
use crate::Error;
use crust_sys::{mem, RemoteAddr};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes one crust thread copies into the task at a time (1 GiB restored
/// in 0.29-0.39 s with 1 MiB, 0.31-0.35 s with 4 MiB, 0.28-0.33 s with
/// 256 KiB).
const FILL_CHUNK: u64 = 1 << 20;
/// crust threads that copy pages into the task.
const FILL_THREADS: usize = 2;

/// Copies pages from pages images into stopped tasks on FILL_THREADS
/// threads of crust, for every process of a restore: while crust builds
/// the next process with remote syscalls, the memory of the ones before is
/// still being filled, and each process's pages are spread over the
/// threads in FILL_CHUNK pieces. A process's fill must be over
/// ([`Pending::wait`]) before its final protections are set and before it
/// begets a child that inherits its memory.
pub struct Filler {
    tx: Option<std::sync::mpsc::Sender<FillChunk>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct FillChunk {
    pid: i32,
    path: std::sync::Arc<std::path::PathBuf>,
    addr: u64,
    len: u64,
    off: u64,
    done: std::sync::Arc<Pending>,
}

/// The fill of one process: chunks left, and the first error.
#[derive(Default)]
pub struct Pending {
    state: std::sync::Mutex<(usize, Option<Error>)>,
    cv: std::sync::Condvar,
}

impl Pending {
    /// A fill that is already over, with its outcome.
    pub fn finished(r: Result<(), Error>) -> Pending {
        Pending {
            state: std::sync::Mutex::new((0, r.err())),
            cv: std::sync::Condvar::new(),
        }
    }

    fn done(&self, r: Result<(), Error>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        if let Err(e) = r {
            g.1.get_or_insert(e);
        }
        if g.0 == 0 {
            self.cv.notify_all();
        }
    }

    /// Wait until every chunk is in; the first error, if any.
    pub fn wait(&self) -> Result<(), Error> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while g.0 > 0 {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        match g.1.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Filler {
    pub fn new() -> Filler {
        let (tx, rx) = std::sync::mpsc::channel::<FillChunk>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..FILL_THREADS)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; FILL_CHUNK as usize];
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(c) = next else { return };
                        let r = fill_chunk(&c, &mut buf[..c.len as usize]);
                        c.done.done(r);
                    }
                })
            })
            .collect();
        Filler {
            tx: Some(tx),
            workers,
        }
    }

    /// Queue the runs (task address, bytes, file offset) of `pages_path`
    /// for task `pid`.
    pub fn submit(
        &self,
        pid: i32,
        pages_path: &Path,
        runs: &[(u64, u64, u64)],
    ) -> std::sync::Arc<Pending> {
        let done = std::sync::Arc::new(Pending::default());
        let path = std::sync::Arc::new(pages_path.to_path_buf());
        let mut chunks = Vec::new();
        for &(addr, total, off) in runs {
            let mut at = 0;
            while at < total {
                let len = (total - at).min(FILL_CHUNK);
                chunks.push(FillChunk {
                    pid,
                    path: path.clone(),
                    addr: addr + at,
                    len,
                    off: off + at,
                    done: done.clone(),
                });
                at += len;
            }
        }
        done.state.lock().unwrap_or_else(|p| p.into_inner()).0 = chunks.len();
        if let Some(tx) = &self.tx {
            for c in chunks {
                if let Err(std::sync::mpsc::SendError(c)) = tx.send(c) {
                    c.done.done(Err(Error::Restore {
                        pid,
                        what: "the page filler has stopped".into(),
                    }));
                }
            }
        }
        done
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn fill_chunk(c: &FillChunk, buf: &mut [u8]) -> Result<(), Error> {
    let f = crate::util::open_image_data(&c.path)?;
    f.read_exact_at(buf, c.off).map_err(|source| Error::Io {
        op: "cannot read",
        path: c.path.to_path_buf(),
        source,
    })?;
    let w = mem::write(c.pid, RemoteAddr(c.addr), buf).map_err(sys_err(
        c.pid,
        format!("process_vm_writev at {:#x}", c.addr),
    ))?;
    if w != buf.len() {
        return Err(Error::Sys {
            pid: c.pid,
            op: format!(
                "short process_vm_writev at {:#x} ({w} of {} bytes)",
                c.addr,
                buf.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        });
    }
    Ok(())
}

/// Copy pages from the image file into the stopped task with
/// process_vm_writev from FILL_THREADS crust threads, FILL_CHUNK bytes at
/// a time (pread from the file into a buffer, then into the task). Each
/// item is (task address, bytes, offset in the file); the target ranges
/// are mapped read-write by now.
///
/// crust copies them itself rather than with a pread64 inside the task: on
/// a fresh mapping most of the cost is faulting the pages in, and this
/// spreads the faults over the CPUs (a remote pread64 faults them all on
/// one). Measured on 1 GiB: 0.50 s with a remote pread64, 0.30 s this way
/// (see docs/ARCHITECTURE.md).
pub(crate) fn fill_vm_writev(
    pid: i32,
    pages_path: &Path,
    runs: &[(u64, u64, u64)],
) -> Result<(), Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut chunks: Vec<(u64, u64, u64)> = Vec::new();
    for &(addr, total, off) in runs {
        let mut done = 0;
        while done < total {
            let n = (total - done).min(FILL_CHUNK);
            chunks.push((addr + done, n, off + done));
            done += n;
        }
    }
    let next = AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let worker = || -> Result<(), Error> {
        let f = crate::util::open_image_data(pages_path)?;
        let mut buf = vec![0u8; FILL_CHUNK as usize];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(addr, n, off)) = chunks.get(i) else {
                return Ok(());
            };
            let b = &mut buf[..n as usize];
            f.read_exact_at(b, off).map_err(|source| Error::Io {
                op: "cannot read",
                path: pages_path.to_path_buf(),
                source,
            })?;
            let w = mem::write(pid, RemoteAddr(addr), b)
                .map_err(sys_err(pid, format!("process_vm_writev at {addr:#x}")))?;
            if w != b.len() {
                return Err(Error::Sys {
                    pid,
                    op: format!("short process_vm_writev at {addr:#x} ({w} of {n} bytes)"),
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                });
            }
        }
    };
    let total: u64 = chunks.iter().map(|c| c.1).sum();
    if total <= FILL_CHUNK {
        // Not worth a thread.
        return worker();
    }
    std::thread::scope(|s| {
        for _ in 0..FILL_THREADS {
            s.spawn(|| {
                if let Err(e) = worker() {
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    g.get_or_insert(e);
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
