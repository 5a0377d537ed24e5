//! `crust coredump`: an ELF core file per process of an image set, which
//! gdb loads as it loads a core the kernel wrote (CRIU's `coredump` tool
//! makes the same from the same images).
//!
//! Per process: NT_PRPSINFO, then for every thread (the main one first)
//! NT_PRSTATUS with its registers, NT_FPREGSET and NT_X86_XSTATE from the
//! image's FPU/XSAVE state, NT_SIGINFO; then NT_AUXV and NT_FILE. One
//! PT_LOAD per VMA; which bytes are in the file follows CRIU's tool and
//! the kernel: none of a mapping without access, of `[vvar]` or
//! `[vsyscall]`; only the first page (the ELF header gdb reads build-ids
//! from) of an executable file mapping at offset 0, none at other offsets
//! (gdb reads code from the file); everything else whole. The bytes come
//! from the pages images (through the parent sets of a pre-dump chain),
//! else from the mapped file, else they are zero.
//!
//! Files written: `OUT/core.PID`, created O_EXCL|O_NOFOLLOW, mode 0600.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod elf;
mod memory;
pub mod notes;

use crate::mem::chain::Owner;
use crate::util::{read_image, read_one};
use crate::Error;
use crust_images::consts::{task_state, vma};
use crust_images::image::ImageType;
use crust_images::proto::core::{core_entry_march, CoreEntry};
use crust_images::proto::fdinfo::FileEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::pstree::PstreeEntry;
use crust_images::proto::regfile::RegFileEntry;
use crust_images::proto::vma::VmaEntry;
use crust_sys::PAGE_SIZE;
use memory::Pages;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What was written for one process.
#[derive(Debug, Clone)]
pub struct CoreFile {
    pub pid: u32,
    pub path: PathBuf,
    pub threads: usize,
    pub segments: usize,
    pub bytes: u64,
}

/// Write `out/core.PID` for every process of the image set `dir` (or only
/// `only`). Processes without memory (zombies) are skipped with a note in
/// the log.
pub fn coredump(dir: &Path, out: &Path, only: Option<u32>) -> Result<Vec<CoreFile>, Error> {
    let tree: Vec<PstreeEntry> = read_image(dir, ImageType::Pstree, 0)?;
    if let Some(p) = only {
        if !tree.iter().any(|e| e.pid == p) {
            return Err(bad(dir, format!("process {p} is not in pstree.img")));
        }
    }
    let names = reg_names(dir)?;
    let mut done = Vec::new();
    for e in tree.iter().filter(|e| only.is_none_or(|p| p == e.pid)) {
        let core: CoreEntry = read_one(dir, ImageType::Core, u64::from(e.pid))?;
        let state = core.tc.as_ref().map_or(task_state::ALIVE, |t| t.task_state);
        if state == task_state::ZOMBIE || state == task_state::DEAD {
            log::info!("process {}: a zombie, no memory: no core file", e.pid);
            continue;
        }
        done.push(one_process(dir, out, e, core, &names)?);
    }
    Ok(done)
}

fn bad(dir: &Path, why: String) -> Error {
    Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    }
}

/// files.img (and an old set's reg-files.img) id -> path of regular files.
fn reg_names(dir: &Path) -> Result<HashMap<u64, String>, Error> {
    let mut names = HashMap::new();
    let missing = |e: &Error| matches!(e, Error::Image { source, .. } if source.is_missing());
    match read_image::<FileEntry>(dir, ImageType::Files, 0) {
        Ok(all) => {
            for f in all {
                if let Some(r) = f.reg {
                    names.insert(u64::from(f.id), r.name);
                }
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(e),
    }
    match read_image::<RegFileEntry>(dir, ImageType::RegFiles, 0) {
        Ok(all) => {
            for r in all {
                names.entry(u64::from(r.id)).or_insert(r.name);
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(names)
}

/// A thread's image, checked to be x86-64's (the main thread's is read
/// already).
fn thread_core(dir: &Path, tid: u32, main: Option<&CoreEntry>) -> Result<CoreEntry, Error> {
    let c: CoreEntry = match main {
        Some(m) => m.clone(),
        None => read_one(dir, ImageType::Core, u64::from(tid))?,
    };
    if c.mtype != core_entry_march::X86_64 || c.thread_info.is_none() {
        return Err(Error::unsupported(format!(
            "core-{tid}.img is not of an x86-64 task: crust makes x86-64 core files only"
        )));
    }
    Ok(c)
}

fn one_process(
    dir: &Path,
    out: &Path,
    e: &PstreeEntry,
    main: CoreEntry,
    names: &HashMap<u64, String>,
) -> Result<CoreFile, Error> {
    let pid = e.pid;
    let mm: MmEntry = read_one(dir, ImageType::Mm, u64::from(pid))?;
    let mut mem = Memory::new(dir, pid, &mm.vmas, names)?;
    let ids = notes::Ids {
        pid,
        ppid: e.ppid,
        pgrp: e.pgid,
        sid: e.sid,
    };
    let mut threads = vec![pid];
    threads.extend(e.threads.iter().copied().filter(|&t| t != pid));
    let mut thread_notes = Vec::new();
    for (i, &tid) in threads.iter().enumerate() {
        let c = thread_core(dir, tid, (i == 0).then_some(&main))?;
        thread_notes.push(thread_notes_of(&c, &main, notes::Ids { pid: tid, ..ids }));
    }
    let args = mem.read(
        mm.mm_arg_start,
        mm.mm_arg_end.saturating_sub(mm.mm_arg_start),
    )?;
    let tc = main.tc.as_ref();
    let tcore = main.thread_core.as_ref();
    let creds = tcore.and_then(|t| t.creds.as_ref());
    let ps = notes::PsInfo {
        ids,
        state: tc.map_or(task_state::ALIVE, |t| t.task_state),
        nice: tcore.and_then(|t| t.sched_nice).unwrap_or(0),
        flags: u64::from(tc.map_or(0, |t| t.flags)),
        uid: creds.map_or(0, |c| c.uid),
        gid: creds.map_or(0, |c| c.gid),
        comm: tc.map(|t| t.comm.clone()).unwrap_or_default(),
        args: args
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>()
            .trim_ascii_end()
            .to_vec(),
    };
    // The kernel's order: the first thread's prstatus, the process notes,
    // the first thread's other notes, then every other thread's.
    let mut all = Vec::new();
    let mut per_thread = thread_notes.into_iter();
    if let Some(mut first) = per_thread.next() {
        let rest = first.split_off(1);
        all.extend(first);
        all.push(notes::prpsinfo(&ps));
        all.extend(rest);
    }
    all.push(notes::auxv(&mm.mm_saved_auxv));
    all.push(notes::files(&mem.file_maps()));
    all.extend(per_thread.flatten());
    let segs = mem.segments();
    let path = out.join(format!("core.{pid}"));
    let bytes = write_file(&path, &all, &segs, &mut mem)?;
    log::info!(
        "process {pid}: {} written ({} threads, {} segments, {bytes} bytes)",
        path.display(),
        threads.len(),
        segs.len()
    );
    Ok(CoreFile {
        pid,
        path,
        threads: threads.len(),
        segments: segs.len(),
        bytes,
    })
}

/// prstatus, then the other notes of one thread.
fn thread_notes_of(c: &CoreEntry, main: &CoreEntry, ids: notes::Ids) -> Vec<elf::Note> {
    let Some(ti) = c.thread_info.as_ref() else {
        return Vec::new();
    };
    let sighold = c
        .thread_core
        .as_ref()
        .and_then(|t| t.blk_sigset)
        .or_else(|| main.tc.as_ref().map(|t| t.blk_sigset))
        .unwrap_or(0);
    let [fp, xs] = notes::fp_notes(&ti.fpregs);
    vec![
        notes::prstatus(ids, sighold, &ti.gpregs),
        fp,
        notes::siginfo(),
        xs,
    ]
}

fn write_file(
    path: &Path,
    all: &[elf::Note],
    segs: &[elf::Segment],
    mem: &mut Memory,
) -> Result<u64, Error> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(
            "cannot create the core file (remove it first if it exists)",
        ))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut failed = None;
    let r = elf::write_core(&mut w, all, segs, &mut |i, s, w| {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let mut addr = s.vaddr;
        while addr < s.vaddr + s.filesz {
            if let Err(e) = mem.page(i, addr, &mut page) {
                failed = Some(e);
                return Err(std::io::Error::other("reading the image's memory failed"));
            }
            w.write_all(&page)?;
            addr += PAGE_SIZE;
        }
        Ok(())
    });
    let r = r.and_then(|l| w.flush().map(|_| l));
    match (r, failed) {
        (_, Some(e)) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
        (Err(e), None) => {
            let _ = std::fs::remove_file(path);
            Err(io("cannot write the core file")(e))
        }
        (Ok(l), None) => Ok(l.end),
    }
}

/// One process's memory as the image set holds it.
struct Memory<'a> {
    dir: &'a Path,
    vmas: &'a [VmaEntry],
    task: Pages,
    objects: HashMap<u64, Pages>,
    names: &'a HashMap<u64, String>,
    /// Mapped files opened so far (None: could not be opened).
    files: HashMap<u64, Option<File>>,
}

fn is_shared(v: &VmaEntry) -> bool {
    v.status & (vma::ANON_SHARED | vma::FILE_SHARED | vma::AREA_SYSVIPC | vma::AREA_MEMFD) != 0
}

fn is_file(v: &VmaEntry) -> bool {
    v.status & (vma::FILE_PRIVATE | vma::FILE_SHARED) != 0
}

impl<'a> Memory<'a> {
    fn new(
        dir: &'a Path,
        pid: u32,
        vmas: &'a [VmaEntry],
        names: &'a HashMap<u64, String>,
    ) -> Result<Memory<'a>, Error> {
        let task = Pages::load(dir, Owner::Task(u64::from(pid)))?;
        Ok(Memory {
            dir,
            vmas,
            task,
            objects: HashMap::new(),
            names,
            files: HashMap::new(),
        })
    }

    /// How many bytes of VMA `v` go into the file (see the module doc).
    fn dump_size(v: &VmaEntry) -> u64 {
        let len = v.end.saturating_sub(v.start);
        if v.status & (vma::AREA_VVAR | vma::AREA_VSYSCALL) != 0 || v.prot == 0 {
            0
        } else if v.status & vma::AREA_VDSO != 0 {
            len
        } else if is_file(v) && v.prot & (libc::PROT_EXEC as u32) != 0 {
            if v.pgoff == 0 {
                len.min(PAGE_SIZE)
            } else {
                0
            }
        } else {
            len
        }
    }

    fn segments(&self) -> Vec<elf::Segment> {
        self.vmas
            .iter()
            .map(|v| {
                let p = |bit: i32, f: u32| if v.prot & bit as u32 != 0 { f } else { 0 };
                elf::Segment {
                    vaddr: v.start,
                    memsz: v.end.saturating_sub(v.start),
                    filesz: Self::dump_size(v),
                    flags: p(libc::PROT_READ, elf::PF_R)
                        | p(libc::PROT_WRITE, elf::PF_W)
                        | p(libc::PROT_EXEC, elf::PF_X),
                }
            })
            .collect()
    }

    fn file_maps(&self) -> Vec<notes::FileMap> {
        self.vmas
            .iter()
            .filter(|v| is_file(v))
            .filter_map(|v| {
                Some(notes::FileMap {
                    start: v.start,
                    end: v.end,
                    off: v.pgoff,
                    name: self.names.get(&v.shmid)?.clone(),
                })
            })
            .collect()
    }

    /// The page at `addr` of VMA number `i` into `buf`.
    fn page(&mut self, i: usize, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        let Some(v) = self.vmas.get(i) else {
            buf.fill(0);
            return Ok(());
        };
        let in_obj = addr - v.start + v.pgoff;
        if is_shared(v) && v.status & vma::FILE_SHARED == 0 || v.status & vma::AREA_MEMFD != 0 {
            if !self.objects.contains_key(&v.shmid) {
                let p = Pages::load(self.dir, Owner::Object(v.shmid))?;
                self.objects.insert(v.shmid, p);
            }
            if let Some(p) = self.objects.get(&v.shmid) {
                if p.page(in_obj, buf)? {
                    return Ok(());
                }
            }
        } else if self.task.page(addr, buf)? {
            return Ok(());
        }
        if is_file(v) {
            if let Some(f) = self.file(v.shmid) {
                if memory::read_full(f, buf, in_obj).is_ok() {
                    return Ok(());
                }
            }
        }
        buf.fill(0);
        Ok(())
    }

    fn file(&mut self, id: u64) -> Option<&File> {
        if !self.files.contains_key(&id) {
            let f = self.names.get(&id).and_then(|n| match File::open(n) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::warn!("cannot open {n} (mapped by the process): {e}; its pages not in the images are zero in the core");
                    None
                }
            });
            self.files.insert(id, f);
        }
        self.files.get(&id).and_then(Option::as_ref)
    }

    /// `len` bytes at `addr`, from the VMA that holds them (zero where none
    /// does).
    fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, Error> {
        let len = len.min(4096);
        let mut out = Vec::with_capacity(len as usize);
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let mut at = addr;
        while at < addr + len {
            let base = at & !(PAGE_SIZE - 1);
            match self
                .vmas
                .iter()
                .position(|v| v.start <= base && base < v.end)
            {
                Some(i) => self.page(i, base, &mut page)?,
                None => page.fill(0),
            }
            let from = (at - base) as usize;
            let to = ((addr + len).min(base + PAGE_SIZE) - base) as usize;
            out.extend_from_slice(page.get(from..to).unwrap_or_default());
            at = base + PAGE_SIZE;
        }
        Ok(out)
    }
}
