//! `/proc/PID/smaps`: each mapping's maps line, then about 25 "Key: value"
//! lines and its VmFlags. A process with 30,000 mappings has 21 MB of it,
//! which the kernel takes ~150 ms to print (it walks each mapping's page
//! tables). So the text is read in big chunks, by a thread of its own once
//! it proves long, while this one parses the chunk before: bytes, not
//! strings, and by default only the fields [`SmapsEntry`] names, no
//! allocation per line or flag.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::error::{ProcError, Result};
use crate::maps::{decimal, parse_map_line, MapEntry};
use crate::root::ProcRoot;

/// The VmFlags of a mapping: a set of two-letter codes ("rd", "gd",
/// "dd"...). The codes the kernel knows today are bits of one word; any
/// other (a newer kernel's) is kept aside, so a lookup of it still works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFlags {
    known: u64,
    other: Vec<[u8; 2]>,
}

/// The codes of Linux 6.18's `show_smap_vma_flags`, each a bit of
/// [`VmFlags`] (in the kernel's order, which is the order [`VmFlags::iter`]
/// gives them in).
const KNOWN: [&str; 39] = [
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "gu", "lo", "io", "sr", "rr", "dc",
    "de", "lf", "ac", "nr", "ht", "sf", "ar", "wf", "dd", "bt", "sd", "mm", "hg", "nh", "mg", "um",
    "uw", "mt", "ui", "ss", "dp", "sl", "lk",
];

/// The bit of a code of two lowercase letters, plus one (0: not known),
/// indexed by `(first - 'a') * 26 + (second - 'a')`.
static BIT_OF: [u8; 26 * 26] = bit_table();

const fn bit_table() -> [u8; 26 * 26] {
    let mut t = [0u8; 26 * 26];
    let mut i = 0;
    while i < KNOWN.len() {
        let c = KNOWN[i].as_bytes();
        t[(c[0] - b'a') as usize * 26 + (c[1] - b'a') as usize] = i as u8 + 1;
        i += 1;
    }
    t
}

fn known_bit(code: [u8; 2]) -> Option<u32> {
    let [a, b] = code;
    if !a.is_ascii_lowercase() || !b.is_ascii_lowercase() {
        return None;
    }
    let i = usize::from(a - b'a') * 26 + usize::from(b - b'a');
    match BIT_OF.get(i) {
        Some(&n) if n > 0 => Some(u32::from(n - 1)),
        _ => None,
    }
}

impl VmFlags {
    /// The flags of a VmFlags line's value ("rd wr mr mw me ac ").
    /// Anything but a two-character token is ignored.
    pub fn parse(value: &[u8]) -> Self {
        let mut f = VmFlags::default();
        for tok in value.split(|&c| c == b' ' || c == b'\t') {
            if let &[a, b] = tok {
                f.insert([a, b]);
            }
        }
        f
    }

    /// The set of `codes` (e.g. `["rd", "wr"]`); codes not of two
    /// characters are left out.
    pub fn from_codes<'a>(codes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut f = VmFlags::default();
        for c in codes {
            if let &[a, b] = c.as_bytes() {
                f.insert([a, b]);
            }
        }
        f
    }

    /// Add a code (one of printable ASCII: others are ignored).
    pub fn insert(&mut self, code: [u8; 2]) {
        if let Some(bit) = known_bit(code) {
            self.known |= 1 << bit;
        } else if code.iter().all(u8::is_ascii_graphic) && !self.other.contains(&code) {
            self.other.push(code);
        }
    }

    /// Has it the flag with code `code` ("gd", "mw"...)?
    pub fn has(&self, code: &str) -> bool {
        let &[a, b] = code.as_bytes() else {
            return false;
        };
        match known_bit([a, b]) {
            Some(bit) => self.known & (1 << bit) != 0,
            None => self.other.contains(&[a, b]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.known == 0 && self.other.is_empty()
    }

    /// The codes: the known ones in the kernel's order, then the others.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (KNOWN.iter().enumerate())
            .filter(|(i, _)| self.known & (1 << i) != 0)
            .map(|(_, c)| *c)
            .chain(
                self.other
                    .iter()
                    .filter_map(|c| std::str::from_utf8(c).ok()),
            )
    }
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry {
    pub map: MapEntry,
    pub vm_flags: VmFlags,
    pub size_kb: u64,
    pub rss_kb: u64,
    pub anonymous_kb: u64,
    pub swap_kb: u64,
    /// KernelPageSize (0 if the kernel did not print it).
    pub kernel_page_kb: u64,
    /// Every "Key: N [kB]" line, in order, value in the file's unit (kB
    /// for most): filled by [`smaps`], [`parse_smaps`] and
    /// [`SmapsIter::with_fields`], empty otherwise. The kernel's own keys
    /// are not copied ([`SMAPS_KEYS`]).
    pub fields: Vec<(std::borrow::Cow<'static, str>, u64)>,
}

impl SmapsEntry {
    fn new(map: MapEntry) -> Self {
        SmapsEntry {
            map,
            vm_flags: VmFlags::default(),
            size_kb: 0,
            rss_kb: 0,
            anonymous_kb: 0,
            swap_kb: 0,
            kernel_page_kb: 0,
            fields: Vec::new(),
        }
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.has(flag)
    }

    /// The value of a "Key:" line, by key without the colon (only when
    /// the fields were kept: see [`SmapsEntry::fields`]).
    pub fn field(&self, key: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| *v)
    }
}

/// The keys of smaps lines (Linux 6.x), in the kernel's order: a VMA's
/// 20-odd fields take no allocation each (30,000 VMAs: 700,000 fewer).
const SMAPS_KEYS: [&str; 27] = [
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
    "THPeligible",
    "ProtectionKey",
    "Pss_Anon",
    "Pss_File",
    "Pss_Shmem",
];

/// `key`, the `nth` field of its VMA, as one of [`SMAPS_KEYS`] (looked
/// for first where the kernel's order puts it), or copied.
fn smaps_key(key: &str, nth: usize) -> std::borrow::Cow<'static, str> {
    let known = match SMAPS_KEYS.get(nth) {
        Some(k) if *k == key => Some(*k),
        _ => SMAPS_KEYS.iter().find(|k| **k == key).copied(),
    };
    match known {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(key.to_string()),
    }
}

/// Is `line` the maps line that starts an entry? Field keys start with a
/// capital letter; an address range has a '-' in its first token.
fn is_header(line: &[u8]) -> bool {
    if line.first().is_some_and(u8::is_ascii_uppercase) {
        return false;
    }
    let first = line.split(|&c| c == b' ').next().unwrap_or_default();
    first.contains(&b'-') && !first.ends_with(b":")
}

/// The first whitespace-delimited token of a field's value, as a number.
fn field_value(value: &[u8]) -> Option<u64> {
    let mut toks = value.split(|&c| c == b' ' || c == b'\t');
    decimal(toks.find(|t| !t.is_empty())?)
}

/// The state of a parse: the entry being read and the line number.
#[derive(Debug)]
struct Parser {
    cur: Option<SmapsEntry>,
    no: usize,
    /// Keep every field (else only the named ones).
    all: bool,
    /// The header lines, newline-terminated, when they are kept.
    headers: Option<Vec<u8>>,
}

impl Parser {
    fn new(all: bool) -> Self {
        Parser {
            cur: None,
            no: 0,
            all,
            headers: None,
        }
    }

    fn error(&self, path: &Path, line: &[u8], reason: &str) -> ProcError {
        ProcError::parse(path, self.no, &String::from_utf8_lossy(line), reason)
    }

    /// Add one line (without its newline) to the entry being read.
    /// Returns the entry it completes: the previous one, when `line` is
    /// the header of the next.
    fn line(&mut self, line: &[u8], path: &Path) -> Result<Option<SmapsEntry>> {
        self.no += 1;
        if line.is_empty() {
            return Ok(None);
        }
        if is_header(line) {
            let map = parse_map_line(line)
                .ok_or_else(|| self.error(path, line, "malformed smaps header"))?;
            if let Some(h) = self.headers.as_mut() {
                h.extend_from_slice(line);
                h.push(b'\n');
            }
            return Ok(self.cur.replace(SmapsEntry::new(map)));
        }
        if self.cur.is_none() {
            return Err(self.error(path, line, "field before first mapping"));
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Err(self.error(path, line, "expected 'Key: value'"));
        };
        let (key, value) = (line.get(..colon), line.get(colon + 1..));
        let (Some(key), Some(value), Some(e)) = (key, value, self.cur.as_mut()) else {
            return Ok(None);
        };
        let slot = match key {
            b"VmFlags" => {
                e.vm_flags = VmFlags::parse(value);
                return Ok(None);
            }
            b"Size" => Some(&mut e.size_kb),
            b"Rss" => Some(&mut e.rss_kb),
            b"Anonymous" => Some(&mut e.anonymous_kb),
            b"Swap" => Some(&mut e.swap_kb),
            b"KernelPageSize" => Some(&mut e.kernel_page_kb),
            _ if !self.all => return Ok(None),
            _ => None,
        };
        // Lines such as "THPeligible" are numeric today, but tolerate
        // future non-numeric ones by skipping them.
        let Some(n) = field_value(value) else {
            return Ok(None);
        };
        if let Some(slot) = slot {
            *slot = n;
        }
        if self.all {
            let Ok(key) = std::str::from_utf8(key) else {
                return Err(self.error(path, line, "key not UTF-8"));
            };
            e.fields.push((smaps_key(key, e.fields.len()), n));
        }
        Ok(None)
    }
}

/// Parses the text of an smaps file, every field kept; `path` only names
/// it in errors.
pub fn parse_smaps(text: &str, path: &Path) -> Result<Vec<SmapsEntry>> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    let mut p = Parser::new(true);
    for line in text.lines() {
        out.extend(p.line(line.as_bytes(), path)?);
    }
    out.extend(p.cur);
    Ok(out)
}

/// `/proc/PID/smaps`, every field kept.
pub fn smaps(root: &ProcRoot, pid: i32) -> Result<Vec<SmapsEntry>> {
    smaps_iter(root, pid)?.with_fields().collect()
}

/// The size of each read of smaps (and of maps in [`maps_match`]).
const CHUNK: usize = 256 << 10;
/// What is read before a thread is started for the rest.
const FIRST: usize = 64 << 10;
/// Chunks in flight: one parsed here, the others read by the thread.
const CHUNKS: usize = 3;
/// No line is longer (a path is at most 4 KiB).
const MAX_LINE: usize = 64 << 10;

/// `/proc/PID/smaps` read as it is parsed, one entry at a time: neither
/// the text nor the entries are kept, so a process with tens of thousands
/// of VMAs costs a few chunks' worth of memory here. Only the fields
/// [`SmapsEntry`] names are read, unless [`SmapsIter::with_fields`].
pub fn smaps_iter(root: &ProcRoot, pid: i32) -> Result<SmapsIter> {
    let path = root.pid_path(pid, "smaps");
    let file = File::open(&path).map_err(|e| ProcError::io(&path, e))?;
    Ok(SmapsIter {
        path,
        src: Source::Here(Some(file)),
        size: CHUNK,
        chunk: Vec::new(),
        len: 0,
        pos: 0,
        carry: Vec::new(),
        parser: Parser::new(false),
        done: false,
    })
}

/// See [`smaps_iter`].
#[derive(Debug)]
pub struct SmapsIter {
    path: PathBuf,
    src: Source,
    /// The size of each read.
    size: usize,
    /// The chunk being parsed: `len` bytes read, parsed up to `pos`.
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    /// The start of a line the last chunk cut.
    carry: Vec<u8>,
    parser: Parser,
    done: bool,
}

/// Where the chunks come from.
#[derive(Debug)]
enum Source {
    /// Read by this thread (the first chunk; all of a short file); None
    /// once at its end.
    Here(Option<File>),
    /// Read ahead by a thread of its own.
    Thread(ReadAhead),
}

/// A thread that reads chunks into the buffers it is given back.
#[derive(Debug)]
struct ReadAhead {
    full: Receiver<std::io::Result<(Vec<u8>, usize)>>,
    empty: SyncSender<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One read of `f` into `buf`, again when interrupted.
fn read_some(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match f.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Fill `buf` from `f` (a /proc file gives at most a page of text per
/// read: the kernel's buffer holds no more). Fewer bytes than `buf`
/// holds: the end of the file.
fn fill(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while let Some(room) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match read_some(f, room)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl ReadAhead {
    /// A thread reading on from `file`'s position (None if none could be
    /// started).
    fn start(file: &File, size: usize) -> Option<ReadAhead> {
        let mut file = file.try_clone().ok()?;
        let (full_tx, full) = sync_channel(CHUNKS);
        let (empty, empty_rx) = sync_channel::<Vec<u8>>(CHUNKS);
        let body = move || {
            while let Ok(mut buf) = empty_rx.recv() {
                let r = fill(&mut file, &mut buf);
                let last = !matches!(r, Ok(n) if n == buf.len());
                if full_tx.send(r.map(|n| (buf, n))).is_err() || last {
                    return;
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("smaps-read".into())
            .spawn(body)
            .ok()?;
        for _ in 1..CHUNKS {
            let _ = empty.send(vec![0u8; size]);
        }
        Some(ReadAhead {
            full,
            empty,
            thread: Some(thread),
        })
    }
}

impl Drop for SmapsIter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl SmapsIter {
    /// Keep every field of each entry ([`SmapsEntry::fields`]).
    pub fn with_fields(mut self) -> Self {
        self.parser.all = true;
        self
    }

    /// Read `size` bytes at a time (tests: lines cut anywhere).
    #[cfg(test)]
    fn chunk_size(mut self, size: usize) -> Self {
        self.size = size.max(1);
        self
    }

    /// Keep the header line of each entry, the text /proc/PID/maps had
    /// (see [`SmapsIter::take_headers`] and [`maps_match`]).
    pub fn keep_headers(mut self) -> Self {
        self.parser.headers = Some(Vec::new());
        self
    }

    /// The header lines read so far, newline-terminated: at the end, what
    /// /proc/PID/maps listed as the entries were read (empty unless
    /// [`SmapsIter::keep_headers`]).
    pub fn take_headers(&mut self) -> Vec<u8> {
        self.parser.headers.take().unwrap_or_default()
    }

    /// Close the file; the reader thread, if any, ends after the read
    /// under way once its channels are closed.
    fn stop_thread(&mut self) {
        if let Source::Thread(r) = std::mem::replace(&mut self.src, Source::Here(None)) {
            let ReadAhead {
                full,
                empty,
                thread,
            } = r;
            drop((full, empty));
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }

    /// The next chunk into `self.chunk`; false at the end of the file.
    fn refill(&mut self) -> Result<bool> {
        let path = &self.path;
        let io = |e| ProcError::io(path, e);
        let (buf, n) = match &mut self.src {
            Source::Here(None) => return Ok(false),
            Source::Here(Some(f)) => {
                // The first FIRST bytes here: a small process's whole file.
                if self.chunk.is_empty() {
                    self.chunk = vec![0u8; self.size.min(FIRST)];
                }
                let n = fill(f, &mut self.chunk).map_err(io)?;
                if n < self.chunk.len() {
                    self.src = Source::Here(None);
                } else if let Some(r) = ReadAhead::start(f, self.size) {
                    // A long file: the rest read by a thread while this
                    // one parses.
                    self.src = Source::Thread(r);
                }
                (None, n)
            }
            Source::Thread(r) => {
                let _ = r.empty.send(std::mem::take(&mut self.chunk));
                let stopped = || std::io::Error::other("the smaps reader thread stopped");
                let (buf, n) = r.full.recv().map_err(|_| io(stopped()))?.map_err(io)?;
                (Some(buf), n)
            }
        };
        if let Some(buf) = buf {
            // A short chunk is the last: the thread has ended.
            if n < buf.len() {
                self.stop_thread();
            }
            self.chunk = buf;
        }
        (self.len, self.pos) = (n, 0);
        Ok(n > 0)
    }

    /// Parse the lines of the chunk up to the first that completes an
    /// entry. None: the chunk is used up (its cut line kept in `carry`).
    fn parse_chunk(&mut self) -> Result<Option<SmapsEntry>> {
        let rest = self.chunk.get(self.pos..self.len).unwrap_or_default();
        let mut at = 0;
        while let Some(nl) = rest
            .get(at..)
            .and_then(|r| r.iter().position(|&c| c == b'\n'))
        {
            let line = rest.get(at..at + nl).unwrap_or_default();
            at += nl + 1;
            let done = if self.carry.is_empty() {
                self.parser.line(line, &self.path)
            } else {
                self.carry.extend_from_slice(line);
                let r = self.parser.line(&self.carry, &self.path);
                self.carry.clear();
                r
            };
            if let Some(e) = done? {
                self.pos += at;
                return Ok(Some(e));
            }
        }
        self.carry
            .extend_from_slice(rest.get(at..).unwrap_or_default());
        self.pos = self.len;
        if self.carry.len() > MAX_LINE {
            let head = self.carry.get(..80).unwrap_or_default();
            return Err(self.parser.error(&self.path, head, "line too long"));
        }
        Ok(None)
    }

    fn next_entry(&mut self) -> Result<Option<SmapsEntry>> {
        loop {
            if let Some(e) = self.parse_chunk()? {
                return Ok(Some(e));
            }
            if !self.refill()? {
                break;
            }
        }
        // A last line without its newline.
        if !self.carry.is_empty() {
            let last = std::mem::take(&mut self.carry);
            if let Some(e) = self.parser.line(&last, &self.path)? {
                return Ok(Some(e));
            }
        }
        Ok(self.parser.cur.take())
    }
}

impl Iterator for SmapsIter {
    type Item = Result<SmapsEntry>;

    fn next(&mut self) -> Option<Result<SmapsEntry>> {
        if self.done {
            return None;
        }
        let r = self.next_entry().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Does /proc/PID/maps hold exactly `text` (e.g. the header lines an
/// earlier read of smaps kept: [`SmapsIter::keep_headers`])? Read in
/// chunks, compared as it is read; stops at the first difference.
pub fn maps_match(root: &ProcRoot, pid: i32, text: &[u8]) -> Result<bool> {
    let path = root.pid_path(pid, "maps");
    let io = |e| ProcError::io(&path, e);
    let mut f = File::open(&path).map_err(io)?;
    let mut buf = vec![0u8; CHUNK.min(text.len() + 4096)];
    let mut at = 0usize;
    loop {
        let n = read_some(&mut f, &mut buf).map_err(io)?;
        if n == 0 {
            return Ok(at == text.len());
        }
        let (Some(got), Some(want)) = (buf.get(..n), text.get(at..at + n)) else {
            return Ok(false);
        };
        if got != want {
            return Ok(false);
        }
        at += n;
    }
}

#[cfg(test)]
#[path = "smaps_tests.rs"]
mod tests;
