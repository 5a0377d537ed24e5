//! A `log` backend with CRIU's levels and line format.
//!
//! Verbosity (`-v`): 0 nothing, 1 errors, 2 + warnings (default), 3 + info,
//! 4 + debug, 5 and up + trace. Lines go to stderr, or to the `-o` file.
//! In a file every line starts with the time since start, `(SS.uuuuuu) `,
//! as CRIU's do; on stderr only from -v3 up. `--log-pid` adds `PID: `.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

enum Sink {
    Stderr,
    File(File),
}

struct State {
    level: LevelFilter,
    sink: Sink,
    start: Instant,
    timestamps: bool,
    log_pid: bool,
}

/// The one logger of the process. Its state can be set again
/// ([`init`] once more): the RPC service gives each request the log file
/// and level the request names.
struct Logger {
    state: Mutex<Option<State>>,
}

static LOGGER: Logger = Logger {
    state: Mutex::new(None),
};

impl Logger {
    fn state(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The `log` level for a CRIU verbosity.
pub fn level_for(verbosity: i32) -> LevelFilter {
    match verbosity {
        i32::MIN..=0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

fn format_line(
    elapsed: std::time::Duration,
    timestamps: bool,
    pid: Option<u32>,
    level: Level,
    target: &str,
    msg: &std::fmt::Arguments,
) -> String {
    let mut line = String::new();
    if timestamps {
        line.push_str(&format!(
            "({:02}.{:06}) ",
            elapsed.as_secs(),
            elapsed.subsec_micros()
        ));
    }
    if let Some(pid) = pid {
        line.push_str(&format!("{pid:>6}: "));
    }
    match level {
        Level::Error => line.push_str(&format!("Error ({target}): ")),
        Level::Warn => line.push_str(&format!("Warn  ({target}): ")),
        _ => {}
    }
    line.push_str(&msg.to_string());
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.state()
            .as_ref()
            .is_some_and(|s| metadata.level() <= s.level)
    }

    fn log(&self, record: &Record) {
        let mut state = self.state();
        let Some(st) = state.as_mut() else {
            return;
        };
        if record.level() > st.level {
            return;
        }
        let pid = st.log_pid.then(std::process::id);
        let line = format_line(
            st.start.elapsed(),
            st.timestamps,
            pid,
            record.level(),
            record.target(),
            record.args(),
        );
        // One write per line: with O_APPEND, forked children's lines do not
        // interleave within a line.
        let _ = match &mut st.sink {
            Sink::Stderr => io::stderr().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {
        if let Some(st) = self.state().as_mut() {
            let _ = match &mut st.sink {
                Sink::Stderr => io::stderr().flush(),
                Sink::File(f) => f.flush(),
            };
        }
    }
}

/// A copy of the log file for a child's stdout and stderr (CRIU's action
/// scripts write into its log); None when the log goes to stderr.
pub fn child_output() -> Option<File> {
    LOGGER.state().as_ref().and_then(|st| match &st.sink {
        Sink::File(f) => f.try_clone().ok(),
        Sink::Stderr => None,
    })
}

/// Install the logger, or point it elsewhere when it is installed
/// already. `file` is the resolved `-o` path (`-` is stderr). Returns
/// whether logging goes to a file.
pub fn init(verbosity: i32, file: Option<&Path>, log_pid: bool) -> io::Result<bool> {
    let (sink, to_file) = match file {
        Some(p) if p != Path::new("-") => {
            // A new file of crust's, never one found under that name (a
            // symlink, another user's file): the caller's own earlier log
            // is replaced, not written through.
            let named = crust_sys::private::create_private(p, libc::O_APPEND)
                .and_then(|(f, name)| name.commit().map(|()| f));
            let f = named.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("can't open log file {}: {e}", p.display()),
                )
            })?;
            (Sink::File(f), true)
        }
        _ => (Sink::Stderr, false),
    };
    let level = level_for(verbosity);
    *LOGGER.state() = Some(State {
        level,
        sink,
        start: Instant::now(),
        timestamps: to_file || verbosity >= 3,
        log_pid,
    });
    // Only the first call installs it; every call sets the level.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    Ok(to_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levels_match_criu() {
        assert_eq!(level_for(0), LevelFilter::Off);
        assert_eq!(level_for(1), LevelFilter::Error);
        assert_eq!(level_for(2), LevelFilter::Warn);
        assert_eq!(level_for(3), LevelFilter::Info);
        assert_eq!(level_for(4), LevelFilter::Debug);
        assert_eq!(level_for(6), LevelFilter::Trace);
    }

    #[test]
    fn line_format() {
        let l = format_line(
            Duration::from_micros(1_234_567),
            true,
            Some(42),
            Level::Error,
            "crust_engine::dump",
            &format_args!("can't seize {}", 7),
        );
        assert_eq!(
            l,
            "(01.234567)     42: Error (crust_engine::dump): can't seize 7\n"
        );
        let l = format_line(
            Duration::from_micros(5),
            false,
            None,
            Level::Info,
            "x",
            &format_args!("hello"),
        );
        assert_eq!(l, "hello\n");
    }
}
