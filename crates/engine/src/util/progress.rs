//! Progress of a dump, a restore, a page server's session or the
//! lazy-pages daemon, for people: the engine counts (tasks frozen, pages
//! to write and written, received, or put in lazily, tasks built) and
//! marks its stages; the binary calls [`start`] and [`finish`] around the
//! operation.
//!
//! When stderr is a terminal, a thread redraws one status line there every
//! 200 ms once the operation has run for a second ([`AFTER_MS_ENV`] changes
//! that delay), and ends it with a newline: the pages as MiB done of MiB
//! known so far, the rate and the time left at that rate. Nothing is shown
//! when stderr is no terminal, and nothing goes through the log (`-o`).
//!
//! The stage marks also time each stage, for `--display-stats`
//! ([`stage_times`]). Counting costs an atomic add per call, shown or not.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that sets how long (ms) an operation runs
/// before its progress shows (default 1000; the tests use 0).
pub const AFTER_MS_ENV: &str = "CRUST_PROGRESS_AFTER_MS";

static TASKS_FROZEN: AtomicU64 = AtomicU64::new(0);
static TASKS_TOTAL: AtomicU64 = AtomicU64::new(0);
static TASKS_BUILT: AtomicU64 = AtomicU64::new(0);
static BYTES_EXPECTED: AtomicU64 = AtomicU64::new(0);
static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);

struct State {
    op: &'static str,
    /// Stages begun, in order, with when.
    stages: Vec<(&'static str, Instant)>,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new operation (`op`: "dump", "restore"): counters from zero, and the
/// status line on stderr if it is a terminal.
pub fn start(op: &'static str) {
    for c in [
        &TASKS_FROZEN,
        &TASKS_TOTAL,
        &TASKS_BUILT,
        &BYTES_EXPECTED,
        &BYTES_WRITTEN,
    ] {
        c.store(0, Relaxed);
    }
    let started = Instant::now();
    let ticker = std::io::stderr().is_terminal().then(|| {
        let after = std::env::var(AFTER_MS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_millis);
        let (stop, stopped) = channel::<()>();
        let h = std::thread::spawn(move || {
            let mut shown = false;
            loop {
                let wait = after.saturating_sub(started.elapsed());
                let tick = if shown {
                    Duration::from_millis(200)
                } else {
                    wait
                };
                match stopped.recv_timeout(tick) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                if started.elapsed() >= after {
                    draw(op, started, false);
                    shown = true;
                }
            }
            if shown {
                draw(op, started, true);
            }
        });
        (stop, h)
    });
    if let Some(old) = state().replace(State {
        op,
        stages: Vec::new(),
        ticker,
    }) {
        stop_ticker(old);
    }
}

fn stop_ticker(s: State) {
    if let Some((stop, h)) = s.ticker {
        let _ = stop.send(());
        let _ = h.join();
    }
}

/// The operation is over (done or failed): the status line ends.
pub fn finish() {
    let ticker = state().as_mut().and_then(|s| s.ticker.take());
    if let Some((stop, h)) = ticker {
        let _ = stop.send(());
        let _ = h.join();
    }
}

/// The operation enters stage `name` (the previous one ends).
pub fn stage(name: &'static str) {
    if let Some(s) = state().as_mut() {
        s.stages.push((name, Instant::now()));
    }
}

/// Each stage of the last operation with its time in microseconds, up to
/// now for the last one.
pub fn stage_times() -> Vec<(&'static str, u64)> {
    let g = state();
    let Some(s) = g.as_ref() else {
        return Vec::new();
    };
    let now = Instant::now();
    let ends = s.stages.iter().skip(1).map(|(_, t)| *t).chain([now]);
    s.stages
        .iter()
        .zip(ends)
        .map(|((name, from), to)| (*name, to.duration_since(*from).as_micros() as u64))
        .collect()
}

/// The name of the running operation, if any (for tests).
pub fn current() -> Option<&'static str> {
    state().as_ref().map(|s| s.op)
}

/// `n` tasks are frozen: the dump of their state and pages begins.
pub fn tasks_frozen(n: u64) {
    TASKS_FROZEN.store(n, Relaxed);
    stage("dumping tasks and pages");
}

/// The restore builds `n` tasks.
pub fn tasks_total(n: u64) {
    TASKS_TOTAL.store(n, Relaxed);
}

/// One more task is built.
pub fn task_built() {
    TASKS_BUILT.fetch_add(1, Relaxed);
}

/// `bytes` more of pages are to be written.
pub fn pages_expected(bytes: u64) {
    BYTES_EXPECTED.fetch_add(bytes, Relaxed);
}

/// `bytes` of pages are still to come (the lazy-pages daemon: the total
/// is what is in plus what is left, which events change).
pub fn pages_to_come(bytes: u64) {
    BYTES_EXPECTED.store(BYTES_WRITTEN.load(Relaxed).saturating_add(bytes), Relaxed);
}

/// `bytes` of pages were written.
pub fn pages_written(bytes: u64) {
    BYTES_WRITTEN.fetch_add(bytes, Relaxed);
}

/// The status line, from the counters.
fn line(op: &str, secs: f64) -> String {
    let mut parts = vec![format!("crust {op}: {secs:.1} s")];
    let frozen = TASKS_FROZEN.load(Relaxed);
    if frozen > 0 {
        parts.push(format!("{frozen} tasks frozen"));
    }
    let (done, want) = (BYTES_WRITTEN.load(Relaxed), BYTES_EXPECTED.load(Relaxed));
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let rate = done as f64 / secs.max(1e-3);
    if op == "page-server" {
        // The dump announces its runs one process at a time: no total.
        parts.push(format!(
            "received {:.0} MiB at {:.2} GB/s",
            mib(done),
            rate / f64::from(1 << 30)
        ));
    } else if want > 0 || done > 0 {
        let what = if op == "lazy-pages" {
            "pages in"
        } else {
            "pages"
        };
        let mut p = format!(
            "{what} {:.0}/{:.0} MiB at {:.2} GB/s",
            mib(done),
            mib(want.max(done)),
            rate / f64::from(1 << 30)
        );
        if want > done && rate > 0.0 {
            p += &format!(", ETA {:.1} s", (want - done) as f64 / rate);
        }
        parts.push(p);
    }
    let total = TASKS_TOTAL.load(Relaxed);
    if total > 0 {
        parts.push(format!("{}/{total} tasks built", TASKS_BUILT.load(Relaxed)));
    }
    parts.join(", ")
}

fn draw(op: &str, started: Instant, last: bool) {
    let text = line(op, started.elapsed().as_secs_f64());
    let end = if last { "\n" } else { "" };
    // Back to the start of the line, the text, the rest of the line
    // cleared.
    let _ = write!(std::io::stderr().lock(), "\r{text}\x1b[K{end}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_and_stages() {
        start("dump");
        stage("freezing");
        tasks_frozen(3);
        pages_expected(4 << 20);
        pages_written(1 << 20);
        let l = line("dump", 1.0);
        assert!(
            l.starts_with(
                "crust dump: 1.0 s, 3 tasks frozen, pages 1/4 MiB at 0.00 GB/s, ETA 3.0 s"
            ),
            "{l}"
        );
        let t = stage_times();
        assert_eq!(
            t.iter().map(|x| x.0).collect::<Vec<_>>(),
            ["freezing", "dumping tasks and pages"]
        );
        assert_eq!(current(), Some("dump"));
        finish();
        start("restore");
        tasks_total(2);
        task_built();
        assert_eq!(
            line("restore", 2.0),
            "crust restore: 2.0 s, 1/2 tasks built"
        );
        assert!(stage_times().is_empty());
        finish();
        start("page-server");
        pages_expected(8 << 20);
        pages_written(2 << 20);
        assert_eq!(
            line("page-server", 1.0),
            "crust page-server: 1.0 s, received 2 MiB at 0.00 GB/s"
        );
        finish();
        start("lazy-pages");
        pages_written(1 << 20);
        pages_to_come(3 << 20);
        assert!(
            line("lazy-pages", 1.0)
                .starts_with("crust lazy-pages: 1.0 s, pages in 1/4 MiB at 0.00 GB/s, ETA 3.0 s"),
            "{}",
            line("lazy-pages", 1.0)
        );
        finish();
    }
}
