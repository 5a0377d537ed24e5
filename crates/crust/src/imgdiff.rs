//! `crust image diff DIR1 DIR2 [--json]`: what changed between two image
//! sets of the same tree: tasks, threads, VMAs, fds, sockets, and pages
//! (compared by content, each set's pages resolved through its parent
//! image sets), as text or JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use crust_images::consts::{pe, PAGE_SIZE};
use crust_images::proto::{
    fd_types, CoreEntry, FdinfoEntry, FileEntry, InetSkEntry, MmEntry, PstreeEntry,
    TaskKobjIdsEntry, VmaEntry,
};
use crust_images::{read_all, read_one, read_pagemap};

use crate::crit::x::Explorer;

const USAGE: &str = "usage: crust image diff DIR1 DIR2 [--json]";

/// Parent image sets followed at most (a chain longer is an error).
const MAX_CHAIN: usize = 64;

/// Where one page's bytes are: a pages file and an offset in it.
#[derive(Clone, PartialEq, Eq)]
enum Loc {
    File {
        path: PathBuf,
        off: u64,
    },
    /// Listed (lazy, or in a parent set that lacks it): no bytes to compare.
    Unknown,
}

/// One process as a set holds it.
#[derive(Default)]
struct Proc {
    comm: String,
    threads: Vec<u32>,
    vmas: Option<Vec<VmaEntry>>,
    fds: Option<BTreeMap<u32, String>>,
    pages: Option<BTreeMap<u64, Loc>>,
}

struct Set {
    dir: PathBuf,
    procs: BTreeMap<u32, Proc>,
    /// Shared memory objects' pages (pagemap-shmem-N.img), by object id.
    shmem: BTreeMap<u64, BTreeMap<u64, Loc>>,
    sockets: BTreeSet<String>,
}

/// Run `crust image diff`; returns the exit code (0: no difference, 1:
/// differences, as diff(1)).
pub fn run(args: &[String]) -> Result<i32> {
    let mut json = false;
    let mut dirs = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            d if !d.starts_with('-') => dirs.push(d.to_string()),
            other => bail!("unknown option {other} for `crust image diff`\n{USAGE}"),
        }
    }
    let [a, b] = dirs.as_slice() else {
        bail!("`crust image diff` needs two image directories\n{USAGE}");
    };
    let a = load_set(Path::new(a))?;
    let b = load_set(Path::new(b))?;
    let d = diff(&a, &b)?;
    print!("{}", if json { d.json() } else { d.text(&a, &b) });
    Ok(if d.is_empty() { 0 } else { 1 })
}

fn load_set(dir: &Path) -> Result<Set> {
    let tree = tree_of(dir)?;
    let mut x = Explorer::new(dir);
    let mut procs = BTreeMap::new();
    for p in &tree {
        let pid = p.pid;
        let core: Option<CoreEntry> = read_one(dir, &format!("core-{pid}.img")).ok();
        let mm: Option<MmEntry> = read_one(dir, &format!("mm-{pid}.img")).ok();
        let mut fds = None;
        if let Ok(ids) = read_one::<TaskKobjIdsEntry>(dir, &format!("ids-{pid}.img")) {
            if let Ok(fdi) = read_all::<FdinfoEntry>(dir, &format!("fdinfo-{}.img", ids.files_id)) {
                let mut m = BTreeMap::new();
                for fd in fdi {
                    let s = x
                        .file_str(fd.r#type, fd.id)
                        .unwrap_or_else(|_| format!("{}.{}", fd.r#type, fd.id));
                    m.insert(fd.fd, s);
                }
                fds = Some(m);
            }
        }
        let pages = if dir.join(format!("pagemap-{pid}.img")).exists() {
            Some(page_locs(dir, &format!("pagemap-{pid}.img"), 0)?)
        } else {
            None
        };
        procs.insert(
            pid,
            Proc {
                comm: core.and_then(|c| c.tc).map(|t| t.comm).unwrap_or_default(),
                threads: p.threads.clone(),
                vmas: mm.map(|m| m.vmas),
                fds,
                pages,
            },
        );
    }
    let files: Vec<FileEntry> = read_all(dir, "files.img").unwrap_or_default();
    let mut sockets = BTreeSet::new();
    for f in &files {
        if let Some(s) = socket_str(f, &mut x) {
            sockets.insert(s);
        }
    }
    let mut shmem = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix("pagemap-shmem-")
            .and_then(|n| n.strip_suffix(".img"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            shmem.insert(id, page_locs(dir, &name, 0)?);
        }
    }
    Ok(Set {
        dir: dir.to_path_buf(),
        procs,
        shmem,
        sockets,
    })
}

/// The processes of the set: pstree.img's, or, in a pre-dump's set (which
/// has none), those with a pagemap image.
fn tree_of(dir: &Path) -> Result<Vec<PstreeEntry>> {
    if dir.join("pstree.img").exists() {
        return read_all(dir, "pstree.img")
            .with_context(|| format!("reading {}", dir.join("pstree.img").display()));
    }
    let mut pids = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(pid) = name
            .strip_prefix("pagemap-")
            .and_then(|n| n.strip_suffix(".img"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        bail!(
            "{}: no pstree.img and no pagemap image: not an image set",
            dir.display()
        );
    }
    pids.sort_unstable();
    Ok(pids
        .into_iter()
        .map(|pid| PstreeEntry {
            pid,
            threads: vec![pid],
            ..Default::default()
        })
        .collect())
}

/// Every page of pagemap image `name` in `dir` and where its bytes are,
/// following the `parent` link for pages kept in a parent set.
fn page_locs(dir: &Path, name: &str, depth: usize) -> Result<BTreeMap<u64, Loc>> {
    if depth > MAX_CHAIN {
        bail!(
            "{}: more than {MAX_CHAIN} parent image sets (a loop of parent links?)",
            dir.display()
        );
    }
    let (head, entries) =
        read_pagemap(dir, name).with_context(|| format!("reading {}", dir.join(name).display()))?;
    let pages = dir.join(format!("pages-{}.img", head.pages_id));
    let mut parent: Option<BTreeMap<u64, Loc>> = None;
    let mut out = BTreeMap::new();
    let mut off = 0u64;
    for e in &entries {
        let flags = e.flags.unwrap_or(if e.in_parent == Some(true) {
            pe::PARENT
        } else {
            pe::PRESENT
        });
        let nr = e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages));
        for i in 0..nr {
            let va = e.vaddr.wrapping_add(i.wrapping_mul(PAGE_SIZE));
            let loc = if flags & pe::PRESENT != 0 {
                let l = Loc::File {
                    path: pages.clone(),
                    off,
                };
                off += PAGE_SIZE;
                l
            } else if flags & pe::PARENT != 0 {
                if parent.is_none() {
                    let pdir = dir.join("parent");
                    parent = Some(if pdir.join(name).exists() {
                        page_locs(&pdir, name, depth + 1)?
                    } else {
                        BTreeMap::new()
                    });
                }
                parent
                    .as_ref()
                    .and_then(|p| p.get(&va).cloned())
                    .unwrap_or(Loc::Unknown)
            } else {
                Loc::Unknown
            };
            out.insert(va, loc);
        }
    }
    Ok(out)
}

fn socket_str(f: &FileEntry, x: &mut Explorer) -> Option<String> {
    match f.r#type {
        fd_types::INETSK => f.isk.as_deref().map(inet_str),
        fd_types::UNIXSK => x.file_str(f.r#type, f.id).ok(),
        fd_types::PACKETSK => {
            let p = f.psk.as_ref()?;
            Some(format!(
                "packet socket type {} protocol {}",
                p.r#type, p.protocol
            ))
        }
        fd_types::NETLINKSK => Some(format!("netlink socket ino {}", f.nlsk.as_ref()?.ino)),
        _ => None,
    }
}

fn addr_str(family: u32, a: &[u32]) -> String {
    match (family, a) {
        (2, [v]) => std::net::Ipv4Addr::from(u32::from_be(*v)).to_string(),
        (10, [p, q, r, s]) => {
            let mut b = [0u8; 16];
            for (i, w) in [p, q, r, s].into_iter().enumerate() {
                if let Some(c) = b.get_mut(i * 4..i * 4 + 4) {
                    c.copy_from_slice(&w.to_ne_bytes());
                }
            }
            format!("[{}]", std::net::Ipv6Addr::from(b))
        }
        _ => "?".to_string(),
    }
}

fn inet_str(s: &InetSkEntry) -> String {
    let proto = match s.proto {
        6 => "tcp",
        17 => "udp",
        _ => "ip",
    };
    format!(
        "{proto} ino {} {}:{} -> {}:{} state {}",
        s.ino,
        addr_str(s.family, &s.src_addr),
        s.src_port,
        addr_str(s.family, &s.dst_addr),
        s.dst_port,
        s.state
    )
}

fn vma_str(v: &VmaEntry) -> String {
    let p = |b: u32, c: char| if v.prot & b != 0 { c } else { '-' };
    format!(
        "{:x}-{:x} {}{}{} flags {:#x} status {:#x}",
        v.start,
        v.end,
        p(1, 'r'),
        p(2, 'w'),
        p(4, 'x'),
        v.flags,
        v.status
    )
}

/// What differs for one process present in both sets.
#[derive(Default)]
struct ProcDiff {
    comm: Option<(String, String)>,
    threads: Option<(Vec<u32>, Vec<u32>)>,
    vmas_added: Vec<String>,
    vmas_removed: Vec<String>,
    fds_added: Vec<(u32, String)>,
    fds_removed: Vec<(u32, String)>,
    fds_changed: Vec<(u32, String, String)>,
    pages_changed: Vec<(u64, u64)>,
    pages_added: Vec<(u64, u64)>,
    pages_removed: Vec<(u64, u64)>,
    pages_unknown: u64,
}

impl ProcDiff {
    fn is_empty(&self) -> bool {
        self.comm.is_none()
            && self.threads.is_none()
            && self.vmas_added.is_empty()
            && self.vmas_removed.is_empty()
            && self.fds_added.is_empty()
            && self.fds_removed.is_empty()
            && self.fds_changed.is_empty()
            && self.pages_changed.is_empty()
            && self.pages_added.is_empty()
            && self.pages_removed.is_empty()
    }
}

struct Diff {
    added: Vec<u32>,
    removed: Vec<u32>,
    procs: Vec<(u32, ProcDiff)>,
    /// Shared memory objects in both sets whose pages differ.
    shmem: Vec<(u64, ProcDiff)>,
    sockets_added: Vec<String>,
    sockets_removed: Vec<String>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.procs.iter().all(|(_, d)| d.is_empty())
            && self.shmem.iter().all(|(_, d)| d.is_empty())
            && self.sockets_added.is_empty()
            && self.sockets_removed.is_empty()
    }
}

/// Consecutive pages as [start, end) ranges.
fn ranges(pages: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((_, end)) if *end == p => *end = p + PAGE_SIZE,
            _ => out.push((p, p + PAGE_SIZE)),
        }
    }
    out
}

fn pages_of(r: &[(u64, u64)]) -> u64 {
    r.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum()
}

/// Whether two pages hold the same bytes.
fn same_bytes(a: &Loc, b: &Loc, files: &mut HashMap<PathBuf, File>) -> Result<Option<bool>> {
    let (Loc::File { path: pa, off: oa }, Loc::File { path: pb, off: ob }) = (a, b) else {
        return Ok(None);
    };
    if pa == pb && oa == ob {
        return Ok(Some(true));
    }
    let mut read = |p: &PathBuf, off: u64| -> Result<Vec<u8>> {
        if !files.contains_key(p) {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            files.insert(p.clone(), f);
        }
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        if let Some(f) = files.get(p) {
            f.read_exact_at(&mut buf, off)
                .with_context(|| format!("reading {} at {off:#x}", p.display()))?;
        }
        Ok(buf)
    };
    Ok(Some(read(pa, *oa)? == read(pb, *ob)?))
}

fn diff_pages(
    a: &BTreeMap<u64, Loc>,
    b: &BTreeMap<u64, Loc>,
    d: &mut ProcDiff,
    files: &mut HashMap<PathBuf, File>,
) -> Result<()> {
    let mut changed = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (va, lb) in b {
        match a.get(va) {
            None => added.push(*va),
            Some(la) => match same_bytes(la, lb, files)? {
                Some(true) => {}
                Some(false) => changed.push(*va),
                None => d.pages_unknown += 1,
            },
        }
    }
    removed.extend(a.keys().filter(|va| !b.contains_key(va)));
    d.pages_changed = ranges(&changed);
    d.pages_added = ranges(&added);
    d.pages_removed = ranges(&removed);
    Ok(())
}

fn diff_proc(pa: &Proc, pb: &Proc, files: &mut HashMap<PathBuf, File>) -> Result<ProcDiff> {
    let mut d = ProcDiff::default();
    if pa.comm != pb.comm {
        d.comm = Some((pa.comm.clone(), pb.comm.clone()));
    }
    if pa.threads.len() != pb.threads.len() || pa.threads != pb.threads {
        d.threads = Some((pa.threads.clone(), pb.threads.clone()));
    }
    if let (Some(va), Some(vb)) = (&pa.vmas, &pb.vmas) {
        let sa: BTreeSet<String> = va.iter().map(vma_str).collect();
        let sb: BTreeSet<String> = vb.iter().map(vma_str).collect();
        d.vmas_added = sb.difference(&sa).cloned().collect();
        d.vmas_removed = sa.difference(&sb).cloned().collect();
    }
    if let (Some(fa), Some(fb)) = (&pa.fds, &pb.fds) {
        for (fd, s) in fb {
            match fa.get(fd) {
                None => d.fds_added.push((*fd, s.clone())),
                Some(o) if o != s => d.fds_changed.push((*fd, o.clone(), s.clone())),
                Some(_) => {}
            }
        }
        for (fd, s) in fa {
            if !fb.contains_key(fd) {
                d.fds_removed.push((*fd, s.clone()));
            }
        }
    }
    if let (Some(ma), Some(mb)) = (&pa.pages, &pb.pages) {
        diff_pages(ma, mb, &mut d, files)?;
    }
    Ok(d)
}

fn diff(a: &Set, b: &Set) -> Result<Diff> {
    let mut files = HashMap::new();
    let mut procs = Vec::new();
    for (pid, pa) in &a.procs {
        if let Some(pb) = b.procs.get(pid) {
            procs.push((*pid, diff_proc(pa, pb, &mut files)?));
        }
    }
    let mut shmem = Vec::new();
    for (id, ma) in &a.shmem {
        if let Some(mb) = b.shmem.get(id) {
            let mut d = ProcDiff::default();
            diff_pages(ma, mb, &mut d, &mut files)?;
            if !d.is_empty() {
                shmem.push((*id, d));
            }
        }
    }
    Ok(Diff {
        shmem,
        added: b
            .procs
            .keys()
            .filter(|p| !a.procs.contains_key(p))
            .copied()
            .collect(),
        removed: a
            .procs
            .keys()
            .filter(|p| !b.procs.contains_key(p))
            .copied()
            .collect(),
        procs,
        sockets_added: b.sockets.difference(&a.sockets).cloned().collect(),
        sockets_removed: a.sockets.difference(&b.sockets).cloned().collect(),
    })
}

fn range_list(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(s, e)| format!("{s:x}-{e:x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn pids(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

fn pages_text(d: &ProcDiff) -> String {
    let mut o = String::new();
    for (what, r) in [
        ("changed", &d.pages_changed),
        ("added", &d.pages_added),
        ("removed", &d.pages_removed),
    ] {
        if !r.is_empty() {
            o += &format!(
                "  pages {what}: {} in {} range(s): {}\n",
                pages_of(r),
                r.len(),
                range_list(r)
            );
        }
    }
    if d.pages_unknown > 0 {
        o += &format!(
            "  pages not compared (lazy or missing): {}\n",
            d.pages_unknown
        );
    }
    o
}

impl Diff {
    fn text(&self, a: &Set, b: &Set) -> String {
        let mut o = format!(
            "--- {}\n+++ {}\ntasks: {} and {}",
            a.dir.display(),
            b.dir.display(),
            a.procs.len(),
            b.procs.len()
        );
        if !self.added.is_empty() {
            o += &format!("; added: {}", pids(&self.added));
        }
        if !self.removed.is_empty() {
            o += &format!("; removed: {}", pids(&self.removed));
        }
        o.push('\n');
        for (pid, d) in &self.procs {
            o += &format!("process {pid}:");
            if d.is_empty() {
                o += " unchanged";
                if d.pages_unknown > 0 {
                    o += &format!(
                        " ({} page(s) not compared: lazy or missing)",
                        d.pages_unknown
                    );
                }
                o.push('\n');
                continue;
            }
            o.push('\n');
            if let Some((x, y)) = &d.comm {
                o += &format!("  comm: {x} -> {y}\n");
            }
            if let Some((x, y)) = &d.threads {
                o += &format!("  threads: {} -> {}\n", pids(x), pids(y));
            }
            for v in &d.vmas_removed {
                o += &format!("  - vma {v}\n");
            }
            for v in &d.vmas_added {
                o += &format!("  + vma {v}\n");
            }
            for (fd, s) in &d.fds_removed {
                o += &format!("  - fd {fd}: {s}\n");
            }
            for (fd, s) in &d.fds_added {
                o += &format!("  + fd {fd}: {s}\n");
            }
            for (fd, x, y) in &d.fds_changed {
                o += &format!("  ~ fd {fd}: {x} -> {y}\n");
            }
            o += &pages_text(d);
        }
        for (id, d) in &self.shmem {
            o += &format!("shared memory {id}:\n{}", pages_text(d));
        }
        for s in &self.sockets_removed {
            o += &format!("- socket {s}\n");
        }
        for s in &self.sockets_added {
            o += &format!("+ socket {s}\n");
        }
        if self.is_empty() {
            o += "no differences\n";
        }
        o
    }

    fn json(&self) -> String {
        let strs = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| jstr(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let nums = |v: &[u32]| format!("[{}]", pids(v).replace(' ', ", "));
        let rng = |r: &[(u64, u64)]| {
            format!(
                "{{\"pages\": {}, \"ranges\": [{}]}}",
                pages_of(r),
                r.iter()
                    .map(|(s, e)| format!("[\"{s:#x}\", \"{e:#x}\"]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let fds = |v: &[(u32, String)]| {
            let items: Vec<String> = v
                .iter()
                .map(|(fd, s)| format!("{{\"fd\": {fd}, \"file\": {}}}", jstr(s)))
                .collect();
            format!("[{}]", items.join(", "))
        };
        let mut procs = Vec::new();
        for (pid, d) in &self.procs {
            let changed: Vec<String> = d
                .fds_changed
                .iter()
                .map(|(fd, x, y)| {
                    format!(
                        "{{\"fd\": {fd}, \"from\": {}, \"to\": {}}}",
                        jstr(x),
                        jstr(y)
                    )
                })
                .collect();
            let mut p = format!("{{\"pid\": {pid}");
            if let Some((x, y)) = &d.comm {
                p += &format!(", \"comm\": {{\"from\": {}, \"to\": {}}}", jstr(x), jstr(y));
            }
            if let Some((x, y)) = &d.threads {
                p += &format!(
                    ", \"threads\": {{\"from\": {}, \"to\": {}}}",
                    nums(x),
                    nums(y)
                );
            }
            p += &format!(
                ", \"vmas\": {{\"added\": {}, \"removed\": {}}}",
                strs(&d.vmas_added),
                strs(&d.vmas_removed)
            );
            p += &format!(
                ", \"fds\": {{\"added\": {}, \"removed\": {}, \"changed\": [{}]}}",
                fds(&d.fds_added),
                fds(&d.fds_removed),
                changed.join(", ")
            );
            p += &format!(
                ", \"pages\": {{\"changed\": {}, \"added\": {}, \"removed\": {}, \"not_compared\": {}}}}}",
                rng(&d.pages_changed),
                rng(&d.pages_added),
                rng(&d.pages_removed),
                d.pages_unknown
            );
            procs.push(p);
        }
        let shmem: Vec<String> = self
            .shmem
            .iter()
            .map(|(id, d)| {
                format!(
                    "{{\"id\": {id}, \"pages\": {{\"changed\": {}, \"added\": {}, \"removed\": {}, \"not_compared\": {}}}}}",
                    rng(&d.pages_changed),
                    rng(&d.pages_added),
                    rng(&d.pages_removed),
                    d.pages_unknown
                )
            })
            .collect();
        format!(
            "{{\"same\": {}, \"tasks\": {{\"added\": {}, \"removed\": {}}}, \"processes\": [{}], \"shmem\": [{}], \"sockets\": {{\"added\": {}, \"removed\": {}}}}}\n",
            self.is_empty(),
            nums(&self.added),
            nums(&self.removed),
            procs.join(", "),
            shmem.join(", "),
            strs(&self.sockets_added),
            strs(&self.sockets_removed)
        )
    }
}

/// A JSON string.
fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o += &format!("\\u{:04x}", c as u32),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_merge() {
        let p = PAGE_SIZE;
        assert_eq!(
            ranges(&[0x1000, 0x1000 + p, 0x5000, 0x9000, 0x9000 + p]),
            vec![
                (0x1000, 0x1000 + 2 * p),
                (0x5000, 0x5000 + p),
                (0x9000, 0x9000 + 2 * p)
            ]
        );
        assert_eq!(pages_of(&ranges(&[0x1000, 0x3000])), 2);
    }

    #[test]
    fn json_strings() {
        assert_eq!(jstr("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
