//! `crit x DIR ps|fds|mems|rss`: a set's processes, files and memory at a
//! glance, in the text CRIU 4.2's crit prints (column widths, names of
//! files, the order of lines), read with crust's typed decoders.
//!
//! Where crit 4.2 stops with a Python error (a dead process of the tree has
//! no `ids-`/`mm-`/`pagemap-` image), crust prints the process and a
//! `(zombie)` line (`(helper)` for a helper task) instead and goes on.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use crust_images::consts::{task_state, vma as vst};
use crust_images::proto::{
    fd_types, CoreEntry, FdinfoEntry, FileEntry, FsEntry, MmEntry, PipeEntry, PstreeEntry,
    RegFileEntry, TaskKobjIdsEntry, UnixSkEntry, VmaEntry,
};
use crust_images::{read_all, read_one, read_pagemap, Message};

const USAGE: &str = "usage: crit x DIR {ps,fds,mems,rss}";

/// Run `crit x` with the words after `x`; returns the exit code.
pub fn run_x(args: &[String]) -> Result<i32> {
    let (dir, what) = match args {
        [dir, what] if !dir.starts_with('-') => (dir, what),
        [h] if h == "-h" || h == "--help" => {
            println!("{USAGE}");
            return Ok(0);
        }
        _ => {
            eprintln!("{USAGE}");
            return Ok(2);
        }
    };
    let mut x = Explorer::new(Path::new(dir));
    let text = match what.as_str() {
        "ps" => x.ps(),
        "fds" => x.fds(),
        "mems" => x.mems(),
        "rss" => x.rss(),
        other => {
            eprintln!(
                "{USAGE}\ncrit x: invalid choice: {other:?} (choose from ps, fds, mems, rss)"
            );
            return Ok(2);
        }
    }?;
    let mut so = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = so.write_all(text.as_bytes()).and_then(|_| so.flush());
    Ok(0)
}

/// Where a file's description is found: its files.img field, or the
/// image of its kind that sets older than files.img had.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Reg,
    Pipe,
    Unix,
}

/// The set being explored, with the images read once.
pub(crate) struct Explorer {
    dir: PathBuf,
    /// files.img's entries (empty when it is missing or unreadable, as
    /// crit takes it).
    files: Option<Vec<FileEntry>>,
    reg: Option<Vec<RegFileEntry>>,
    pipes: Option<Vec<PipeEntry>>,
    unix: Option<Vec<UnixSkEntry>>,
    names: HashMap<(i32, u32), String>,
}

fn load<M: Message>(dir: &Path, name: &str) -> Result<Vec<M>> {
    read_all(dir, name).with_context(|| format!("reading {}", dir.join(name).display()))
}

fn load_one<M: Message>(dir: &Path, name: &str) -> Result<M> {
    read_one(dir, name).with_context(|| format!("reading {}", dir.join(name).display()))
}

impl Explorer {
    pub(crate) fn new(dir: &Path) -> Explorer {
        Explorer {
            dir: dir.to_path_buf(),
            files: None,
            reg: None,
            pipes: None,
            unix: None,
            names: HashMap::new(),
        }
    }

    fn tree(&self) -> Result<Vec<PstreeEntry>> {
        load(&self.dir, "pstree.img")
    }

    fn core(&self, pid: u32) -> Result<CoreEntry> {
        load_one(&self.dir, &format!("core-{pid}.img"))
    }

    /// A process without images of its own: its core says it is not alive
    /// and `name` (its ids- or mm- image) is missing. Returns the line
    /// printed for it instead (crit 4.2 stops there with a Python error).
    fn dead(&self, pid: u32, name: &str) -> Option<&'static str> {
        if self.dir.join(name).exists() {
            return None;
        }
        let state = self.core(pid).ok().and_then(|c| c.tc)?.task_state;
        match state {
            task_state::ALIVE => None,
            task_state::HELPER => Some("\t(helper)\n"),
            // CRIU's TASK_DEAD is a zombie.
            task_state::DEAD | task_state::ZOMBIE => Some("\t(zombie)\n"),
            _ => Some("\t(not alive)\n"),
        }
    }

    fn ps(&mut self) -> Result<String> {
        let tree = self.tree()?;
        let mut comm = HashMap::new();
        for p in &tree {
            let core = self.core(p.pid)?;
            let Some(tc) = core.tc else {
                bail!("core-{}.img has no task core (tc)", p.pid);
            };
            comm.insert(p.pid, tc.comm);
        }
        let Some(root) = tree.iter().find(|p| p.ppid == 0) else {
            bail!("pstree.img has no root (a process with ppid 0)");
        };
        for p in &tree {
            if p.ppid != 0 && !tree.iter().any(|q| q.pid == p.ppid) {
                bail!(
                    "pstree.img: the parent {} of {} is not in the tree",
                    p.ppid,
                    p.pid
                );
            }
        }
        let mut out = format!("{:>7}{:>7}{:>7}   {}\n", "PID", "PGID", "SID", "COMM");
        // Depth first, children in pstree.img's order (crit's order).
        let mut stack = vec![(root, 0usize)];
        while let Some((p, depth)) = stack.pop() {
            let name = comm.get(&p.pid).map(String::as_str).unwrap_or("");
            out += &format!(
                "{:>7}{:>7}{:>7}   {}{}\n",
                p.pid,
                p.pgid,
                p.sid,
                " ".repeat(4 * depth),
                name
            );
            // The root's ppid is 0: skip it so a pid-0 entry cannot loop.
            let kids: Vec<_> = tree
                .iter()
                .filter(|k| k.ppid == p.pid && k.ppid != 0)
                .collect();
            if depth > tree.len() {
                bail!("pstree.img has a cycle at {}", p.pid);
            }
            stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1)));
        }
        Ok(out)
    }

    fn files_img(&mut self) -> &[FileEntry] {
        let dir = self.dir.clone();
        self.files
            .get_or_insert_with(|| read_all(&dir, "files.img").unwrap_or_default())
    }

    /// A file's name as crit shows it, cached by (type, id) as crit does.
    pub(crate) fn file_str(&mut self, ty: i32, id: u32) -> Result<String> {
        if let Some(s) = self.names.get(&(ty, id)) {
            return Ok(s.clone());
        }
        let kind = match ty {
            fd_types::REG => Some(Kind::Reg),
            fd_types::PIPE => Some(Kind::Pipe),
            fd_types::UNIXSK => Some(Kind::Unix),
            _ => None,
        };
        let s = match kind {
            Some(k) => self.described(k, id)?,
            None => match fd_types::name(ty) {
                Some(n) => format!("{n}.{id}"),
                None => format!("{ty}.{id}"),
            },
        };
        if !s.is_empty() {
            self.names.insert((ty, id), s.clone());
        }
        Ok(s)
    }

    fn described(&mut self, k: Kind, id: u32) -> Result<String> {
        let files = self.files_img();
        if !files.is_empty() {
            if let Some(f) = files.iter().find(|f| f.id == id) {
                return Ok(match k {
                    Kind::Reg => reg_str(f.reg.as_deref()),
                    Kind::Pipe => pipe_str(f.pipe.as_deref()),
                    Kind::Unix => unix_str(f.usk.as_deref()),
                });
            }
        }
        // Sets older than files.img: the kind's own image.
        let dir = self.dir.clone();
        Ok(match k {
            Kind::Reg => {
                let v = match &self.reg {
                    Some(v) => v,
                    None => self.reg.insert(load(&dir, "reg-files.img")?),
                };
                reg_str(v.iter().find(|e| e.id == id))
            }
            Kind::Pipe => {
                let v = match &self.pipes {
                    Some(v) => v,
                    None => self.pipes.insert(load(&dir, "pipes.img")?),
                };
                pipe_str(v.iter().find(|e| e.id == id))
            }
            Kind::Unix => {
                let v = match &self.unix {
                    Some(v) => v,
                    None => self.unix.insert(load(&dir, "unixsk.img")?),
                };
                unix_str(v.iter().find(|e| e.id == id))
            }
        })
    }

    /// One block per process of the tree, in pstree.img's order: the pid
    /// line, then `body`'s lines, or one line saying why a process has no
    /// images of its own (`img`: the image it would need).
    fn per_process(
        &mut self,
        img: &str,
        mut body: impl FnMut(&mut Self, u32, &mut String) -> Result<()>,
    ) -> Result<String> {
        let mut out = String::new();
        for p in self.tree()? {
            let pid = p.pid;
            out += &format!("{pid}\n");
            if let Some(line) = self.dead(pid, &format!("{img}-{pid}.img")) {
                out += line;
                continue;
            }
            body(self, pid, &mut out)?;
        }
        Ok(out)
    }

    fn fds(&mut self) -> Result<String> {
        self.per_process("ids", |x, pid, out| {
            let ids: TaskKobjIdsEntry = load_one(&x.dir, &format!("ids-{pid}.img"))?;
            let fdi: Vec<FdinfoEntry> = load(&x.dir, &format!("fdinfo-{}.img", ids.files_id))?;
            for fd in &fdi {
                let s = x.file_str(fd.r#type, fd.id)?;
                *out += &format!("\t{:>7}: {}\n", fd.fd, s);
            }
            let fs: FsEntry = load_one(&x.dir, &format!("fs-{pid}.img"))?;
            let cwd = x.file_str(fd_types::REG, fs.cwd_id)?;
            *out += &format!("\t{:>7}: {}\n", "cwd", cwd);
            let root = x.file_str(fd_types::REG, fs.root_id)?;
            *out += &format!("\t{:>7}: {}\n", "root", root);
            Ok(())
        })
    }

    fn mems(&mut self) -> Result<String> {
        // Shared memory objects numbered from 1 in the order met, over
        // the whole tree.
        let mut vids: HashMap<u64, u64> = HashMap::new();
        self.per_process("mm", |x, pid, out| {
            let mm: MmEntry = load_one(&x.dir, &format!("mm-{pid}.img"))?;
            let exe = x.file_str(fd_types::REG, mm.exe_file_id)?;
            *out += &format!("\t{:<36}    {}\n", "exe", exe);
            for vma in &mm.vmas {
                let fname = x.vma_str(vma, &mut vids)?;
                let astr = format!("{:08x}-{:08x}", vma.start, vma.end);
                *out += &format!("\t{:<36}{}{}\n", astr, prot_str(vma.prot), fname);
            }
            Ok(())
        })
    }

    fn vma_str(&mut self, vma: &VmaEntry, vids: &mut HashMap<u64, u64>) -> Result<String> {
        let st = vma.status;
        let mut vid = |id: u64| {
            let next = vids.len() as u64 + 1;
            *vids.entry(id).or_insert(next)
        };
        let mut s = if st & vst::AREA_SYSVIPC != 0 {
            format!(" ips[{:x}]", vid(vma.shmid))
        } else if st & vst::ANON_SHARED != 0 {
            format!(" shmem[{:x}]", vid(vma.shmid))
        } else if st & vst::AREA_SOCKET != 0 {
            format!(" packet[{:x}]", vid(vma.shmid))
        } else if st & (vst::FILE_PRIVATE | vst::FILE_SHARED) != 0 {
            let id = u32::try_from(vma.shmid).unwrap_or(u32::MAX);
            let mut f = format!(" {}", self.file_str(fd_types::REG, id)?);
            if vma.pgoff != 0 {
                f += &format!(" + {:#x}", vma.pgoff);
            }
            if st & vst::FILE_SHARED != 0 {
                f += " (s)";
            }
            f
        } else if st & vst::AREA_STACK != 0 {
            " [stack]".to_string()
        } else if st & vst::AREA_VSYSCALL != 0 {
            " [vsyscall]".to_string()
        } else if st & vst::AREA_VDSO != 0 {
            " [vdso]".to_string()
        } else if vma.flags & 0x0100 != 0 {
            // MAP_GROWSDOWN
            " [stack?]".to_string()
        } else {
            String::new()
        };
        if st & vst::AREA_REGULAR == 0 {
            s += " *";
        }
        Ok(s)
    }

    fn rss(&mut self) -> Result<String> {
        self.per_process("mm", |x, pid, out| {
            let mm: MmEntry = load_one(&x.dir, &format!("mm-{pid}.img"))?;
            let name = format!("pagemap-{pid}.img");
            let (_, pms) = read_pagemap(&x.dir, &name)
                .with_context(|| format!("reading {}", x.dir.join(&name).display()))?;
            let runs: Vec<(u64, u64)> = pms
                .iter()
                .map(|pm| (pm.vaddr, pm.nr_pages.unwrap_or(pm.compat_nr_pages.into())))
                .collect();
            let mut names = HashMap::new();
            for v in &mm.vmas {
                if v.status & (vst::FILE_PRIVATE | vst::FILE_SHARED) != 0 {
                    let id = u32::try_from(v.shmid).unwrap_or(u32::MAX);
                    names.insert(v.shmid, x.file_str(fd_types::REG, id)?);
                }
            }
            *out += &rss_lines(&mm.vmas, &runs, &names).with_context(|| {
                format!("pagemap-{pid}.img and mm-{pid}.img do not go together")
            })?;
            Ok(())
        })
    }
}

fn reg_str(r: Option<&RegFileEntry>) -> String {
    match r {
        Some(r) if !r.name.is_empty() => r.name.clone(),
        _ => "unknown path".to_string(),
    }
}

fn pipe_str(p: Option<&PipeEntry>) -> String {
    match p {
        Some(p) => format!("pipe[{}]", p.pipe_id),
        None => "pipe[?]".to_string(),
    }
}

fn unix_str(u: Option<&UnixSkEntry>) -> String {
    let Some(u) = u else {
        return "unix[?]".to_string();
    };
    let q = quoted_printable(&u.name);
    let name = if q.is_empty() {
        String::new()
    } else {
        format!(" {q}")
    };
    format!("unix[{} ({}){}]", u.ino, u.peer, name)
}

fn prot_str(prot: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if prot & 1 != 0 { 'r' } else { '-' });
    s.push(if prot & 2 != 0 { 'w' } else { '-' });
    s.push(if prot & 4 != 0 { 'x' } else { '-' });
    s
}

/// The rss listing of one process: each page run of its pagemap (the head
/// left out) beside the VMAs it falls in. The walk keeps crit's index
/// arithmetic, negative indexes counting from the end as Python's do, so
/// that odd sets print what crit prints; an index out of range is an error
/// (where crit fails too).
fn rss_lines(
    vmas: &[VmaEntry],
    runs: &[(u64, u64)],
    names: &HashMap<u64, String>,
) -> Result<String> {
    let len = vmas.len() as i64;
    let at = |i: i64| -> Result<&VmaEntry> {
        let j = if i < 0 { len + i } else { i };
        usize::try_from(j)
            .ok()
            .and_then(|j| vmas.get(j))
            .with_context(|| format!("VMA index {i} out of range ({len} VMAs)"))
    };
    let mut out = String::new();
    let mut vmi: i64 = 0;
    let mut pvmi: i64 = -1;
    for &(vaddr, nr) in runs {
        let pstr = format!("\t{:x} / {:<8}", vaddr, nr);
        while vmi < len && at(vmi)?.end <= vaddr {
            vmi += 1;
        }
        let pme = vaddr.wrapping_add(nr.wrapping_shl(12));
        let mut vstr = String::new();
        while vmi < len && at(vmi)?.start < pme {
            let vma = at(vmi)?;
            if vmi == pvmi {
                vstr += " ~";
            } else {
                vstr += &format!(
                    " {:08x} / {:<8}",
                    vma.start,
                    vma.end.wrapping_sub(vma.start) >> 12
                );
                if let Some(n) = names
                    .get(&vma.shmid)
                    .filter(|_| vma.status & (vst::FILE_PRIVATE | vst::FILE_SHARED) != 0)
                {
                    vstr += &format!(" {n}");
                }
                pvmi = vmi;
            }
            vstr += &format!("\n\t{:23}", "");
            vmi += 1;
        }
        vmi -= 1;
        out += &format!("{pstr:<24}{vstr}\n");
    }
    Ok(out)
}

/// Quoted-printable text of `data` as Python's `binascii.b2a_qp` makes it
/// with its defaults (text mode, tabs and spaces kept inside lines, lines
/// of at most 76 characters with `=` soft breaks): crit's form of a unix
/// socket's name. Written here from the encoding's rules (RFC 2045 and the
/// Python function's documented behaviour); no crate reproduces Python's
/// exact choices.
fn quoted_printable(data: &[u8]) -> String {
    const MAX: usize = 76;
    let n = data.len();
    // Line ends are written as the input's first one is.
    let crlf = data
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|i| i > 0 && data.get(i - 1) == Some(&b'\r'));
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let hex = |b: u8| format!("={b:02X}");
    let mut out: Vec<u8> = Vec::with_capacity(n * 3);
    let mut linelen = 0usize;
    let mut i = 0usize;
    while let Some(&c) = data.get(i) {
        let next = data.get(i + 1).copied();
        let last = i + 1 == n;
        let encode = c > 126
            || c == b'='
            || (c == b'.'
                && linelen == 0
                && (last || matches!(next, Some(b'\n') | Some(b'\r') | Some(0))))
            || ((c == b'\t' || c == b' ') && last)
            || (c < 33 && c != b'\r' && c != b'\n' && c != b'\t' && c != b' ');
        if encode {
            if linelen + 3 >= MAX {
                out.push(b'=');
                out.extend_from_slice(eol);
                linelen = 0;
            }
            out.extend_from_slice(hex(c).as_bytes());
            linelen += 3;
            i += 1;
        } else if c == b'\n' || (c == b'\r' && next == Some(b'\n')) {
            linelen = 0;
            // Whitespace at the end of a line is encoded.
            if let Some(&w) = out.last().filter(|&&w| w == b' ' || w == b'\t') {
                out.pop();
                out.extend_from_slice(hex(w).as_bytes());
            }
            out.extend_from_slice(eol);
            i += if c == b'\r' { 2 } else { 1 };
        } else {
            if !last && next != Some(b'\n') && linelen + 1 >= MAX {
                out.push(b'=');
                out.extend_from_slice(eol);
                linelen = 0;
            }
            linelen += 1;
            out.push(c);
            i += 1;
        }
    }
    // Only ASCII is written.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_as_python() {
        // Values from Python 3.11's binascii.b2a_qp.
        assert_eq!(quoted_printable(b""), "");
        assert_eq!(quoted_printable(b"abc"), "abc");
        assert_eq!(quoted_printable(b"a b \n"), "a b=20\n");
        let long = "x".repeat(80);
        assert_eq!(
            quoted_printable(long.as_bytes()),
            format!("{}=\n{}", "x".repeat(75), "x".repeat(5))
        );
        assert_eq!(quoted_printable(b".\nabc"), "=2E\nabc");
        assert_eq!(quoted_printable(b"a\r\nb"), "a\r\nb");
        assert_eq!(quoted_printable(b"tab\t"), "tab=09");
        assert_eq!(quoted_printable(b"\x00/x\x7f\xff="), "=00/x=7F=FF=3D");
    }

    fn vma(start: u64, end: u64) -> VmaEntry {
        VmaEntry {
            start,
            end,
            status: vst::AREA_REGULAR,
            ..Default::default()
        }
    }

    #[test]
    fn rss_runs_beside_vmas() {
        let vmas = [
            vma(0x1000, 0x3000),
            vma(0x3000, 0x4000),
            vma(0x8000, 0x9000),
        ];
        let runs = [(0x2000, 2), (0x3000, 1), (0x8000, 1)];
        let got = rss_lines(&vmas, &runs, &HashMap::new()).unwrap();
        // As crit 4.2 prints it: each run padded to 24 columns, the second
        // run's VMA already shown ("~").
        let want = "\t2000 / 2                00001000 / 2       \n\t                        00003000 / 1       \n\t                       \n\t3000 / 1                ~\n\t                       \n\t8000 / 1                00008000 / 1       \n\t                       \n";
        assert_eq!(got, want);
    }

    #[test]
    fn prot_letters() {
        assert_eq!(prot_str(0), "---");
        assert_eq!(prot_str(5), "r-x");
        assert_eq!(prot_str(7), "rwx");
    }
}
