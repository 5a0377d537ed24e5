//! `--action-script FILE`: CRIU's action scripts, run at the engine's
//! action moments ([`crust_engine::Action`]) through its action hooks.
//!
//! What CRIU 4.2 does, and crust with it:
//! - every script runs at every action, the one given last first (CRIU
//!   keeps them in a list it adds to at the head); all of them run even
//!   when one fails, and the action fails when any did not exit 0;
//! - the environment: `CRTOOLS_SCRIPT_ACTION` (the action's name),
//!   `CRTOOLS_IMAGE_DIR` (`/proc/PID/fd/N`, the images directory as the
//!   dumping or restoring process holds it open), `CRTOOLS_INIT_PID` (the
//!   root's pid, from the first action that knows it on: not at
//!   pre-restore, which comes before the root exists);
//! - the script's stdin is closed (crust: /dev/null), its stdout and
//!   stderr go to the log (the `-o` file, else stderr), it runs in the work
//!   directory (where CRIU chdirs), and a relative path is found from
//!   there (`execvp`: a bare name is searched in PATH).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crust_engine::{Action, ActionHook};

/// The action scripts of one dump or restore.
pub struct Scripts {
    /// In the order they run (the last given first).
    paths: Vec<PathBuf>,
    /// The images directory, held open for `CRTOOLS_IMAGE_DIR`.
    images: Option<File>,
    /// Where the scripts run.
    work_dir: PathBuf,
    /// `CRTOOLS_INIT_PID`, once an action gave the root's pid.
    init_pid: Mutex<Option<i32>>,
}

impl Scripts {
    /// The scripts `given` (in command-line order) for an operation on
    /// `images_dir`, run in `work_dir`.
    pub fn new(given: &[PathBuf], images_dir: &Path, work_dir: &Path) -> Scripts {
        let images = match File::open(images_dir) {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!(
                    "action scripts: cannot open the images directory {}: {e}; CRTOOLS_IMAGE_DIR is not set",
                    images_dir.display()
                );
                None
            }
        };
        Scripts {
            paths: given.iter().rev().cloned().collect(),
            images,
            work_dir: work_dir.to_path_buf(),
            init_pid: Mutex::new(None),
        }
    }

    /// The value of `CRTOOLS_INIT_PID` for this run: `root_pid` when given
    /// (and remembered), else the one remembered.
    fn init_pid(&self, root_pid: Option<i32>) -> Option<i32> {
        let mut known = match self.init_pid.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if known.is_none() {
            *known = root_pid.filter(|&p| p > 0);
        }
        *known
    }

    /// The environment a script of `action` gets beside crust's own.
    fn env(&self, action: Action, root_pid: Option<i32>) -> Vec<(&'static str, String)> {
        let mut env = vec![("CRTOOLS_SCRIPT_ACTION", action.name().to_string())];
        if let Some(f) = &self.images {
            let dir = format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd());
            env.push(("CRTOOLS_IMAGE_DIR", dir));
        }
        if let Some(pid) = self.init_pid(root_pid) {
            env.push(("CRTOOLS_INIT_PID", pid.to_string()));
        }
        env
    }

    /// Run one script; Err says how it failed.
    fn run_one(&self, path: &Path, env: &[(&'static str, String)]) -> Result<(), String> {
        let mut busy = 0;
        let status = loop {
            let (out, err) = match crate::logger::child_output() {
                Some(f) => match f.try_clone() {
                    Ok(g) => (Stdio::from(f), Stdio::from(g)),
                    Err(_) => (Stdio::from(f), Stdio::inherit()),
                },
                None => (Stdio::inherit(), Stdio::inherit()),
            };
            let run = Command::new(path)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .current_dir(&self.work_dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .status();
            match run {
                // A script just written: a process forked meanwhile by
                // another thread (of the program that wrote it) holds it
                // open for writing until it execs. Tried again for up to
                // a second.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && busy < 100 => {
                    busy += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => {
                    break r
                        .map_err(|e| format!("cannot run action script {}: {e}", path.display()))?
                }
            }
        };
        if status.success() {
            return Ok(());
        }
        Err(
            match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => format!("action script {} exited with {c}", path.display()),
                (None, Some(s)) => {
                    format!("action script {} was killed by signal {s}", path.display())
                }
                _ => format!("action script {} failed: {status}", path.display()),
            },
        )
    }
}

impl ActionHook for Scripts {
    fn run(&self, action: Action, root_pid: Option<i32>) -> Result<(), String> {
        if self.paths.is_empty() {
            return Ok(());
        }
        log::debug!("Running {} scripts", action.name());
        let env = self.env(action, root_pid);
        log::logger().flush();
        let mut failed = Vec::new();
        for path in &self.paths {
            log::debug!("\t[{}]", path.display());
            if let Err(why) = self.run_one(path, &env) {
                log::error!("{why}");
                failed.push(why);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} action script{} failed: {}",
                action.name(),
                if failed.len() > 1 { "s" } else { "" },
                failed.join("; ")
            ))
        }
    }
}

/// Hooks run one after the other until one fails: the RPC's notify, then
/// the action scripts of a configuration file (CRIU runs both in RPC
/// mode, the scripts only when the client agreed).
pub struct Chain(pub Vec<Arc<dyn ActionHook>>);

impl ActionHook for Chain {
    fn run(&self, action: Action, root_pid: Option<i32>) -> Result<(), String> {
        self.0.iter().try_for_each(|h| h.run(action, root_pid))
    }

    fn query_external(&self) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        for h in &self.0 {
            keys.extend(h.query_external()?);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crust-scripts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn last_given_runs_first_with_criu_environment() {
        let d = tmpdir("order");
        let log = d.join("log");
        let body = |tag: &str| {
            format!(
                "echo \"{tag} $CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-none}} $(cd \"$CRTOOLS_IMAGE_DIR\" && pwd -P)\" >> {}",
                log.display()
            )
        };
        let a = script(&d, "a.sh", &body("a"));
        let b = script(&d, "b.sh", &body("b"));
        let s = Scripts::new(&[a, b], &d, &d);
        s.run(Action::PreRestore, None).unwrap();
        s.run(Action::SetupNamespaces, Some(42)).unwrap();
        s.run(Action::PostSetupNamespaces, None).unwrap();
        let got = std::fs::read_to_string(&log).unwrap();
        let real = std::fs::canonicalize(&d).unwrap();
        let want: String = [
            "b pre-restore none",
            "a pre-restore none",
            "b setup-namespaces 42",
            "a setup-namespaces 42",
            "b post-setup-namespaces 42",
            "a post-setup-namespaces 42",
        ]
        .iter()
        .map(|l| format!("{l} {}\n", real.display()))
        .collect();
        assert_eq!(got, want);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_script_runs_and_any_failure_fails() {
        let d = tmpdir("fail");
        let mark = d.join("ran");
        let bad = script(&d, "bad.sh", "exit 3");
        let good = script(&d, "good.sh", &format!("touch {}", mark.display()));
        // good.sh is given first, so it runs after bad.sh.
        let s = Scripts::new(&[good, bad], &d, &d);
        let e = s.run(Action::PreDump, Some(1)).unwrap_err();
        assert!(e.contains("bad.sh exited with 3"), "{e}");
        assert!(mark.exists());
        let missing = Scripts::new(&[d.join("nope.sh")], &d, &d);
        assert!(missing.run(Action::PostDump, Some(1)).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chain_stops_at_the_first_failure() {
        struct Fail;
        impl ActionHook for Fail {
            fn run(&self, _: Action, _: Option<i32>) -> Result<(), String> {
                Err("no".into())
            }
        }
        let d = tmpdir("chain");
        let mark = d.join("ran");
        let s = script(&d, "s.sh", &format!("touch {}", mark.display()));
        let c = Chain(vec![Arc::new(Fail), Arc::new(Scripts::new(&[s], &d, &d))]);
        assert!(c.run(Action::PreDump, None).is_err());
        assert!(!mark.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
