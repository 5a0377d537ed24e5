//! Test programs for the end-to-end suite, and the protocol they share.
//!
//! Every program is started as `prog --ready FILE --result FILE [--key value ...]`.
//! It resets its signal dispositions and mask, builds its state, installs a
//! SIGTERM handler that only sets a flag, writes `READY\n` to the ready file
//! (tmp + rename), then runs until SIGTERM. It then checks its state and writes
//! `PASS\n` or `FAIL: <reason>\n` to the result file (tmp + rename) and exits.
//!
//! These programs poke at process state on purpose (signals, raw memory, registers),
//! so they use libc directly; each `unsafe` block says why it is sound.

pub mod memgen;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the SIGTERM handler.
pub static TERM: AtomicBool = AtomicBool::new(false);

/// Command line of a test program.
#[derive(Debug, Clone)]
pub struct Args {
    pub ready: PathBuf,
    pub result: PathBuf,
    /// Other `--key value` options (key without the dashes).
    pub opts: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args()`; exits with status 2 on a malformed command line.
    pub fn parse() -> Args {
        let argv: Vec<String> = std::env::args().collect();
        match Self::parse_from(&argv[1..]) {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "{}: {e}",
                    argv.first().map(String::as_str).unwrap_or("prog")
                );
                eprintln!("usage: prog --ready FILE --result FILE [--key value ...]");
                std::process::exit(2);
            }
        }
    }

    pub fn parse_from(argv: &[String]) -> Result<Args, String> {
        let mut opts = HashMap::new();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_string(), val.clone());
        }
        let ready = opts.remove("ready").ok_or("missing --ready")?;
        let result = opts.remove("result").ok_or("missing --result")?;
        Ok(Args {
            ready: ready.into(),
            result: result.into(),
            opts,
        })
    }

    pub fn opt(&self, key: &str) -> Option<&str> {
        self.opts.get(key).map(String::as_str)
    }

    /// A numeric option with a default; exits with status 2 if it is not a number.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        match self.opt(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{key}: not a number: {v:?}");
                std::process::exit(2)
            }),
        }
    }

    /// A required path option; exits with status 2 if absent.
    pub fn path(&self, key: &str) -> PathBuf {
        match self.opt(key) {
            Some(v) => PathBuf::from(v),
            None => {
                eprintln!("missing --{key}");
                std::process::exit(2)
            }
        }
    }
}

/// Writes `content` to `path` atomically: a temporary file in the same
/// directory, then rename.
pub fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

extern "C" fn on_term(_sig: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

/// Sets every signal to SIG_DFL and empties the signal mask.
pub fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; glibc refuses the
        // signals it reserves (32, 33) with EINVAL, which we ignore.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: the set is initialised by sigemptyset before use; a null old-set
    // pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Installs the SIGTERM handler that only sets [`TERM`].
pub fn install_term_handler() {
    // The handler only does an atomic store, which is async-signal-safe.
    // SAFETY: sigaction is zero-initialised (valid), its mask emptied, the
    // handler an `extern "C" fn(c_int)`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction(SIGTERM)");
        }
    }
}

/// True once SIGTERM arrived.
pub fn term_requested() -> bool {
    TERM.load(Ordering::SeqCst)
}

/// Prints the error with errno and exits with status 3 (before READY: the
/// harness sees the missing ready file).
/// A new anonymous read-write mapping of `len` bytes, private or shared
/// (`MAP_SHARED`: a child forked later maps the same memory), never
/// unmapped; exits on failure.
pub fn map_anon(len: usize, shared: bool) -> *mut u8 {
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    // SAFETY: mmap with a null hint and no fd creates a new mapping and
    // touches no memory of ours.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p.cast()
}

/// A new private anonymous read-write mapping of `len` bytes (a multiple
/// of 8), as words, never unmapped; exits on failure.
pub fn map_anon_words(len: usize) -> &'static mut [u64] {
    let p = map_anon(len, false);
    // SAFETY: fresh, unaliased, `len` bytes, never unmapped: may live for 'static.
    unsafe { std::slice::from_raw_parts_mut(p as *mut u64, len / 8) }
}

/// Pages whose every word follows from the page's number and a version
/// (`dirtymem`, `shmdirty`): a restored memory is checked page by page
/// against the versions written.
pub mod versioned {
    pub const PAGE: usize = 4096;
    pub const WORDS: usize = PAGE / 8;
    /// The version of a page of zeros (dropped from shared memory).
    pub const ZERO: u32 = u32::MAX;

    pub fn word(page: usize, version: u32, i: usize) -> u64 {
        if version == ZERO {
            return 0;
        }
        ((page as u64) << 32 | version as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64)
    }

    /// Write page `page` of `mem` as version `version`.
    pub fn fill(mem: &mut [u64], page: usize, version: u32) {
        for (i, w) in mem[page * WORDS..(page + 1) * WORDS].iter_mut().enumerate() {
            *w = word(page, version, i);
        }
    }

    /// Every page of `mem` holds what its version says.
    pub fn check(mem: &[u64], versions: &[u32]) -> Result<(), String> {
        for (p, v) in versions.iter().enumerate() {
            for i in 0..WORDS {
                let got = mem[p * WORDS + i];
                crate::ensure!(
                    got == word(p, *v, i),
                    "page {p} word {i} is {got:#x}, not version {v}'s {:#x}",
                    word(p, *v, i)
                );
            }
        }
        Ok(())
    }

    /// The step number the step file asks for (0: none yet).
    pub fn wanted(step_file: &str) -> u64 {
        std::fs::read_to_string(step_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Say step `done` is done (`FILE.done`), once it is the one wanted.
    pub fn done(step_file: &str, want: u64, done: u64) {
        if want > 0 && want == done {
            let _ = crate::write_atomic(
                std::path::Path::new(&format!("{step_file}.done")),
                &format!("{done}\n"),
            );
        }
    }
}

/// The result file, once `start` has parsed the command line: `die` writes
/// its reason there too, since the suite sends the programs' stderr nowhere
/// (a log file held open would be part of the image).
static RESULT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn die(what: &str) -> ! {
    let err = std::io::Error::last_os_error();
    eprintln!("{what}: {err}");
    if let Some(result) = RESULT.get() {
        let _ = write_atomic(result, &format!("FAIL: died: {what}: {err}\n"));
    }
    std::process::exit(3)
}

/// Sleeps with nanosleep (std's sleep restarts after EINTR).
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Closes every fd from 3 up, so nothing leaks in from the launcher.
pub fn close_inherited_fds() {
    // SAFETY: close_range takes no pointers; the fds closed are not owned by
    // any Rust object this early in main.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// The common start: reset signals, close inherited fds, parse args.
pub fn start() -> Args {
    reset_signals();
    close_inherited_fds();
    let args = Args::parse();
    let _ = RESULT.set(args.result.clone());
    args
}

/// Installs the SIGTERM handler and writes the ready file.
pub fn ready(args: &Args) {
    install_term_handler();
    if let Err(e) = write_atomic(&args.ready, "READY\n") {
        eprintln!("cannot write {}: {e}", args.ready.display());
        std::process::exit(3);
    }
}

/// Calls `tick` every `period_ms` until SIGTERM.
pub fn wait_for_term(period_ms: u64, mut tick: impl FnMut()) {
    while !term_requested() {
        tick();
        sleep_ms(period_ms);
    }
}

/// Writes the verdict to the result file and exits (0 on PASS, 1 on FAIL).
pub fn finish(args: &Args, verdict: Result<(), String>) -> ! {
    let (text, code) = match &verdict {
        Ok(()) => ("PASS\n".to_string(), 0),
        Err(reason) => (format!("FAIL: {}\n", reason.replace('\n', " ")), 1),
    };
    if let Err(e) = write_atomic(&args.result, &text) {
        eprintln!("cannot write {}: {e}", args.result.display());
        std::process::exit(4);
    }
    std::process::exit(code)
}

/// Returns Err(msg) from the enclosing function when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// A new pipe, `[read end, write end]`; exits on failure (before READY).
pub fn make_pipe() -> [i32; 2] {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a writable array of two c_ints, as pipe() requires.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    fds
}

/// Sends a byte through a pipe made by [`make_pipe`] and reads it back.
pub fn pipe_works(fds: [i32; 2]) -> Result<(), String> {
    let out = [0x5au8];
    // SAFETY: out is a readable 1-byte buffer.
    let w = unsafe { libc::write(fds[1], out.as_ptr() as *const libc::c_void, 1) };
    ensure!(
        w == 1,
        "write to pipe fd {}: {}",
        fds[1],
        std::io::Error::last_os_error()
    );
    let mut back = [0u8; 1];
    // SAFETY: back is a writable 1-byte buffer.
    let r = unsafe { libc::read(fds[0], back.as_mut_ptr() as *mut libc::c_void, 1) };
    ensure!(
        r == 1 && back == out,
        "read from pipe fd {}: {r} {back:?}",
        fds[0]
    );
    Ok(())
}

/// An fd crust refuses to dump (a userfaultfd), for the tests of failed
/// dumps (`--uffd 1`); exits on failure (before READY).
pub fn make_undumpable_fd() -> i32 {
    // SAFETY: userfaultfd takes only flags.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd < 0 {
        die("userfaultfd");
    }
    fd as i32
}

/// The fd made by [`make_undumpable_fd`] is still a userfaultfd.
pub fn undumpable_fd_ok(fd: i32) -> Result<(), String> {
    let l = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    ensure!(
        l == "anon_inode:[userfaultfd]",
        "fd {fd} is {l:?}, not the userfaultfd"
    );
    Ok(())
}

/// A fast deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `/proc/self/maps` lines (start, end, perms, name).
pub fn self_maps() -> Result<Vec<(u64, u64, String, String)>, String> {
    let text = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("read /proc/self/maps: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        let mut cols = Vec::with_capacity(5);
        for _ in 0..5 {
            rest = rest.trim_start();
            let i = rest.find(' ').unwrap_or(rest.len());
            cols.push(&rest[..i]);
            rest = &rest[i..];
        }
        let bad = || format!("bad maps line {line:?}");
        let (s, e) = cols[0].split_once('-').ok_or_else(bad)?;
        let s = u64::from_str_radix(s, 16).map_err(|_| bad())?;
        let e = u64::from_str_radix(e, 16).map_err(|_| bad())?;
        out.push((s, e, cols[1].to_string(), rest.trim().to_string()));
    }
    Ok(out)
}

/// A C string for a path (exits on an interior NUL, which our paths never have).
pub fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| {
        eprintln!("path with NUL: {}", p.display());
        std::process::exit(2)
    })
}

/// Seconds elapsed since `t`, as f64.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Write the pseudo-random pattern of `seed` over `len` bytes at `p`.
///
/// # Safety
/// `p..p + len` must be writable memory of the caller's, `len` a multiple
/// of 8.
pub unsafe fn fill_pattern(p: *mut u8, len: usize, seed: u64) {
    let mut rng = XorShift(seed);
    for i in (0..len).step_by(8) {
        // SAFETY: the caller's promise; i + 8 <= len.
        unsafe { (p.add(i) as *mut u64).write(rng.next_u64()) };
    }
}

/// Check that `len` bytes at `p` hold the pattern of `seed`; `what` names
/// the memory in the error.
///
/// # Safety
/// `p..p + len` must be readable memory of the caller's, `len` a multiple
/// of 8.
pub unsafe fn check_pattern(p: *const u8, len: usize, seed: u64, what: &str) -> Result<(), String> {
    let mut rng = XorShift(seed);
    for i in (0..len).step_by(8) {
        // SAFETY: the caller's promise; i + 8 <= len.
        let v = unsafe { (p.add(i) as *const u64).read() };
        ensure!(v == rng.next_u64(), "{what}: wrong data at offset {i:#x}");
    }
    Ok(())
}

/// The name of the named hierarchy mounted at `dir` (from mountinfo).
pub fn cgroup_v1_name(dir: &Path) -> Result<String, String> {
    let want = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    for l in mi.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4).map(PathBuf::from) != Some(want.clone()) {
            continue;
        }
        if let Some(n) = l.split([',', ' ']).find_map(|w| w.strip_prefix("name=")) {
            return Ok(n.to_string());
        }
    }
    Err(format!(
        "no named cgroup hierarchy mounted at {}",
        want.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let v: Vec<String> = ["--ready", "r", "--result", "x", "--mb", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse_from(&v).unwrap();
        assert_eq!(a.ready, PathBuf::from("r"));
        assert_eq!(a.num("mb", 1), 5);
        assert_eq!(a.num("other", 7), 7);
        assert!(Args::parse_from(&v[..2]).is_err());
        assert!(Args::parse_from(&["x".to_string()]).is_err());
    }

    #[test]
    fn maps_of_self() {
        let m = self_maps().unwrap();
        assert!(m.iter().any(|(_, _, _, n)| n == "[stack]"));
        assert!(m.iter().any(|(_, _, p, n)| n.is_empty() && p.len() == 4));
    }
}
