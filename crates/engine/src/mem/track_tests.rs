// One-element lists of ranges are lists here, not mistaken ranges.
#![allow(clippy::single_range_in_vec_init)]

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

#[test]
fn merge_sorts_and_joins() {
    assert_eq!(merge(vec![]), vec![]);
    assert_eq!(
        merge(vec![8..10, 0..2, 2..4, 5..5, 9..12, 20..21]),
        vec![0..4, 8..12, 20..21]
    );
    // Contained and identical ranges.
    assert_eq!(merge(vec![0..10, 2..3, 0..10]), vec![0..10]);
    // Gaps of one byte stay.
    assert_eq!(merge(vec![0..1, 2..3]), vec![0..1, 2..3]);
}

#[test]
fn split_by_separates_tracked_parts() {
    let cover = [10..20, 30..40];
    let (i, o) = split_by(&[0..50], &cover);
    assert_eq!(i, vec![10..20, 30..40]);
    assert_eq!(o, vec![0..10, 20..30, 40..50]);
    let (i, o) = split_by(&[12..15, 18..32, 45..50], &cover);
    assert_eq!(i, vec![12..15, 18..20, 30..32]);
    assert_eq!(o, vec![20..30, 45..50]);
    let (i, o) = split_by(&[10..20], &cover);
    assert_eq!((i, o), (vec![10..20], vec![]));
    let (i, o) = split_by(&[0..5], &[]);
    assert_eq!((i, o), (vec![], vec![0..5]));
}

const PAGE: u64 = 4096;

/// A python3 process running a script that prints an address first, then
/// answers each line it is sent with "ok" (shared with `objtrack_tests`).
pub(crate) struct Scripted {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    pub(crate) base: u64,
}

impl Scripted {
    /// `nobody`: run as uid and gid 65534.
    pub(crate) fn spawn(script: &str, nobody: bool) -> Scripted {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if nobody {
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let base = line.trim().parse().unwrap();
        Scripted { child, out, base }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send `line`, wait for its "ok".
    pub(crate) fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        let mut got = String::new();
        self.out.read_line(&mut got).unwrap();
        assert_eq!(got.trim(), "ok");
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A python3 process with a 16-page private anonymous mapping, writing
/// page N of it when it reads the line "N".
struct Writer {
    s: Scripted,
    base: u64,
}

const WRITER: &str = "
import mmap, ctypes, sys
m = mmap.mmap(-1, 16 * 4096, flags=mmap.MAP_PRIVATE)
for i in range(16):
    m[i * 4096] = 1
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
for line in sys.stdin:
    m[int(line) * 4096] = 2
    print('ok', flush=True)
";

impl Writer {
    fn spawn() -> Writer {
        // Not root: any task may be tracked (a user-mode-only userfaultfd,
        // whatever vm.unprivileged_userfaultfd says).
        let s = Scripted::spawn(WRITER, true);
        let base = s.base;
        Writer { s, base }
    }

    fn pid(&self) -> i32 {
        self.s.pid()
    }

    fn write_page(&mut self, n: u64) {
        self.s.say(&n.to_string());
    }

    fn pages(&self, a: u64, b: u64) -> Range<u64> {
        self.base + a * PAGE..self.base + b * PAGE
    }

    fn fds(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The VmFlags of the mapping starting at the region.
    fn vm_flags(&self) -> String {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid())).unwrap();
        let head = format!("{:x}-", self.base);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        lines
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap()
            .to_string()
    }
}

/// The address of a `syscall` instruction in the vDSO of `pid`.
pub(crate) fn vdso_syscall(pid: i32) -> crust_sys::RemoteAddr {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
    let (s, e) = line
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    let (s, e) = (
        u64::from_str_radix(s, 16).unwrap(),
        u64::from_str_radix(e, 16).unwrap(),
    );
    let mut code = vec![0u8; (e - s) as usize];
    let n = crust_sys::mem::read(pid, crust_sys::RemoteAddr(s), &mut code).unwrap();
    let off = code[..n]
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .unwrap();
    crust_sys::RemoteAddr(s + off as u64)
}

#[test]
fn tracks_a_seized_process_through_compel() {
    if !crust_sys::testing::require_root("tracks_a_seized_process_through_compel") {
        return;
    }
    let mut w = Writer::spawn();
    let fds_before = w.fds();
    let mut task = Task::seize(w.pid(), std::time::Duration::from_secs(10)).unwrap();
    task.use_syscall_ip(vdso_syscall(w.pid()));
    let region = w.pages(0, 16);
    let mut tracker = start_tracking(&mut task, std::slice::from_ref(&region)).unwrap();
    task.release(false).unwrap();
    // The task's fds are those it had; the mapping is tracked.
    assert_eq!(w.fds(), fds_before);
    assert!(w.vm_flags().contains(" uw"), "{}", w.vm_flags());
    assert_eq!(tracker.tracked(), std::slice::from_ref(&region));
    // Everything was protected at the start: nothing written yet.
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![]
    );
    w.write_page(3);
    w.write_page(7);
    w.write_page(8);
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![w.pages(3, 4), w.pages(7, 9)]
    );
    // Protected again by that scan.
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![]
    );
    // Asking past the tracked range: the untracked part counts as written
    // (and joins the written page 15 before it).
    w.write_page(15);
    assert_eq!(
        tracker.take_dirty(&[w.pages(10, 20)]).unwrap(),
        vec![w.pages(15, 20)]
    );
    w.write_page(11);
    assert_eq!(
        tracker
            .take_dirty(&[w.pages(10, 14), w.pages(18, 20)])
            .unwrap(),
        vec![w.pages(11, 12), w.pages(18, 20)]
    );
    // Only the part scanned was protected again.
    w.write_page(1);
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![w.pages(1, 2)]
    );
    // A range tracked later (as for a mapping made since): protected at
    // once, then only its written pages count.
    let (first, second) = (w.pages(0, 8), w.pages(8, 16));
    drop(tracker);
    let mut tracker = {
        let mut task = Task::seize(w.pid(), std::time::Duration::from_secs(10)).unwrap();
        task.use_syscall_ip(vdso_syscall(w.pid()));
        let t = start_tracking(&mut task, std::slice::from_ref(&first));
        task.release(false).unwrap();
        t.unwrap()
    };
    w.write_page(9);
    w.write_page(2);
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![w.pages(2, 3), w.pages(8, 16)]
    );
    tracker.track(std::slice::from_ref(&second)).unwrap();
    assert_eq!(tracker.tracked(), std::slice::from_ref(&region));
    w.write_page(12);
    assert_eq!(
        tracker.take_dirty(std::slice::from_ref(&region)).unwrap(),
        vec![w.pages(12, 13)]
    );
    assert_eq!(w.fds(), fds_before);
    // A second tracker cannot take ranges the first one has.
    {
        let mut task = Task::seize(w.pid(), std::time::Duration::from_secs(10)).unwrap();
        task.use_syscall_ip(vdso_syscall(w.pid()));
        let err = start_tracking(&mut task, std::slice::from_ref(&second)).unwrap_err();
        task.release(false).unwrap();
        assert!(err.to_string().contains("registering"), "{err}");
        assert!(format!("{:?}", err).contains("Busy"), "{err:?}");
    }
    assert_eq!(w.fds(), fds_before);
    drop(tracker);
    // Closing crust's descriptor unregistered the mapping.
    assert!(!w.vm_flags().contains(" uw"), "{}", w.vm_flags());
    w.write_page(2);
    assert_eq!(w.fds(), fds_before);
}

#[test]
fn a_failed_start_leaves_nothing() {
    if !crust_sys::testing::require_root("a_failed_start_leaves_nothing") {
        return;
    }
    let mut w = Writer::spawn();
    let fds_before = w.fds();
    let mut task = Task::seize(w.pid(), std::time::Duration::from_secs(10)).unwrap();
    task.use_syscall_ip(vdso_syscall(w.pid()));
    // The second range is not mapped: registering it fails after the
    // first was registered.
    let ranges = [w.pages(0, 16), 0x1000..0x2000];
    let err = start_tracking(&mut task, &ranges).unwrap_err();
    assert!(err.to_string().contains("registering"), "{err}");
    task.release(false).unwrap();
    assert_eq!(w.fds(), fds_before);
    assert!(!w.vm_flags().contains(" uw"), "{}", w.vm_flags());
    w.write_page(4);
}
