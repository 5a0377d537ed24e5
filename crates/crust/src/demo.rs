//! `crust demo`: dump and restore a small counting program, step by step.
//!
//! The counting program is this binary in a hidden mode,
//! `crust __demo-counter FILE`: it starts its own session, then writes an
//! ever-growing count at the start of FILE every 100 ms.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crust_sys::probe;

/// The hidden counter mode. Never returns.
pub fn counter(args: &[String]) -> ! {
    let Some(path) = args.first() else {
        eprintln!("usage: crust __demo-counter FILE");
        std::process::exit(2);
    };
    // Own session and process group, so the tree is self-contained and
    // needs no --shell-job.
    let _ = probe::setsid();
    // Drop descriptors inherited from whoever started `crust demo` (only
    // the three standard ones stay), so the tree holds only what it opens.
    let inherited: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in inherited.into_iter().filter(|&fd| fd > 2) {
        // The directory's own descriptor is already closed: EBADF is fine.
        let _ = probe::close_fd(fd);
    }
    let file = match OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("demo counter: can't open {path}: {e}");
            std::process::exit(1);
        }
    };
    let mut n: u64 = 0;
    loop {
        n += 1;
        // Fixed width, always at offset 0: the file always holds one number.
        let _ = file.write_all_at(format!("{n:>20}\n").as_bytes(), 0);
        sleep(Duration::from_millis(100));
    }
}

/// What the demo started and must clean up, pass or fail.
struct Scratch {
    dir: PathBuf,
    /// A live child of ours (the counter, later the restored counter).
    pid: Option<i32>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = probe::kill(pid, libc::SIGKILL);
            let _ = probe::wait_exit(pid);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read_count(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.parse()
        .with_context(|| format!("{} holds {t:?}, not a count", path.display()))
}

/// Wait until the count reaches `target`; fail after `limit`, or as soon as
/// the count is below `floor` (it went backwards).
fn wait_for_count(path: &Path, floor: u64, target: u64, limit: Duration) -> Result<u64> {
    let start = Instant::now();
    loop {
        let n = read_count(path).unwrap_or(0);
        if n < floor {
            bail!("the count went back to {n}, below {floor}");
        }
        if n >= target {
            return Ok(n);
        }
        if start.elapsed() > limit {
            bail!("the count is stuck at {n} (waited {limit:?} for {target})");
        }
        sleep(Duration::from_millis(20));
    }
}

fn dir_size(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let md = e?.metadata()?;
        if md.is_file() {
            files += 1;
            bytes += md.len();
        }
    }
    Ok((files, bytes))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Run the demo; an error names the step that failed.
pub fn run() -> Result<i32> {
    let exe = std::env::current_exe().context("finding the crust binary")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("crust-demo-{}-{stamp}", std::process::id()));
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut scratch = Scratch { dir, pid: None };
    let images = scratch.dir.join("images");
    fs::create_dir(&images).with_context(|| format!("creating {}", images.display()))?;
    let count_file = scratch.dir.join("count");

    println!("crust demo: checkpoint a running counter, kill it, bring it back.\n");

    let pid = start_counter(&mut scratch, &exe, &count_file)?;

    // 2. Let it count.
    let before = wait_for_count(&count_file, 0, 10, Duration::from_secs(10))
        .context("step 2 (let it count) failed")?;
    println!("[2/6] it is counting: count = {before}");

    dump_counter(pid, &images)?;
    let at_dump = check_gone(&mut scratch, pid, &count_file)?;
    let root = restore_counter(&mut scratch, pid, &images)?;

    // 6. It continues from where it was.
    let after = wait_for_count(&count_file, at_dump, at_dump + 10, Duration::from_secs(10))
        .context("step 6 (check it counts on) failed")?;
    println!("[6/6] it counts on from {at_dump}: count = {after}");

    probe::kill(root, libc::SIGKILL)
        .with_context(|| format!("killing the restored counter {root}"))?;
    probe::wait_exit(root).with_context(|| format!("reaping the restored counter {root}"))?;
    scratch.pid = None;
    drop(scratch);
    println!("\nkilled the counter and removed the scratch files. Demo OK.");
    Ok(0)
}

/// Step 1: start the counter, a copy of this binary (so that the restored
/// task's executable is not the file crust itself runs from); its pid.
fn start_counter(scratch: &mut Scratch, exe: &Path, count_file: &Path) -> Result<i32> {
    let counter_exe = scratch.dir.join("crust-demo-counter");
    fs::copy(exe, &counter_exe).with_context(|| {
        format!(
            "step 1 (start the counter) failed: copying {} to {}",
            exe.display(),
            counter_exe.display()
        )
    })?;
    let child = Command::new(&counter_exe)
        .arg("__demo-counter")
        .arg(count_file)
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("step 1 (start the counter) failed")?;
    let pid = child.id() as i32;
    // We reap it ourselves (by pid), not through `child`.
    drop(child);
    scratch.pid = Some(pid);
    println!("[1/6] started the counter: pid {pid}, it counts every 100 ms into");
    println!("      {}", count_file.display());
    Ok(pid)
}

/// Step 3: dump the counter into `images`.
fn dump_counter(pid: i32, images: &Path) -> Result<()> {
    println!("[3/6] dumping pid {pid} into {} ...", images.display());
    let opts = crust_engine::Options {
        pid,
        images_dir: images.to_path_buf(),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let t = Instant::now();
    let stats = crust_engine::dump(&opts)
        .map_err(|e| *e.source)
        .context("step 3 (dump) failed")?;
    let dump_time = t.elapsed();
    let (files, bytes) = dir_size(images).context("step 3 (dump) failed")?;
    println!(
        "      done in {}: {files} image files, {} (the task was frozen for {})",
        ms(dump_time),
        human(bytes),
        ms(Duration::from_micros(stats.frozen_time_us)),
    );
    Ok(())
}

/// Step 4: the dump killed the counter, and the count stays; the count.
fn check_gone(scratch: &mut Scratch, pid: i32, count_file: &Path) -> Result<u64> {
    // The engine may have reaped it already (it was its tracer and our child).
    let gone = match probe::wait_exit(pid) {
        Ok(st) => Some(st),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => None,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("step 4 (check pid {pid} is gone) failed: reaping it"))
        }
    };
    scratch.pid = None;
    if Path::new(&format!("/proc/{pid}")).exists() {
        bail!("step 4 (check pid {pid} is gone) failed: /proc/{pid} still exists");
    }
    let at_dump = read_count(count_file).context("step 4 failed")?;
    sleep(Duration::from_millis(500));
    let still = read_count(count_file).context("step 4 failed")?;
    if still != at_dump {
        bail!("step 4 failed: the count still moves ({at_dump} -> {still}) after the dump");
    }
    println!(
        "[4/6] pid {pid} is gone ({}); the count stays at {at_dump}",
        match gone {
            Some(probe::ExitStatus::Signaled(s)) => format!("killed by signal {s}"),
            Some(probe::ExitStatus::Exited(c)) => format!("exited with {c}"),
            None => "killed by the dump".to_string(),
        }
    );
    Ok(at_dump)
}

/// Step 5: restore the counter (dumped as `pid`) detached; its new pid.
fn restore_counter(scratch: &mut Scratch, pid: i32, images: &Path) -> Result<i32> {
    println!("[5/6] restoring from {} ...", images.display());
    let opts = crust_engine::Options {
        images_dir: images.to_path_buf(),
        detached: true,
        ..Default::default()
    };
    let t = Instant::now();
    let out = crust_engine::restore(&opts)
        .map_err(|e| *e.source)
        .context("step 5 (restore) failed")?;
    let restore_time = t.elapsed();
    scratch.pid = Some(out.root_pid);
    println!(
        "      done in {}: the counter runs again as pid {}{}",
        ms(restore_time),
        out.root_pid,
        if out.root_pid == pid {
            " (its old pid)"
        } else {
            ""
        }
    );
    Ok(out.root_pid)
}
