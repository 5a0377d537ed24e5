use super::super::track::tests::Scripted;
use super::*;

const PAGE: u64 = 4096;

/// A python3 process with 16 pages of shared anonymous memory, obeying
/// lines: `w N` writes page N, `d N` drops it from its page table
/// (MADV_DONTNEED), `r N` drops it from the memory (MADV_REMOVE), `f N`
/// forks a child that writes page N and exits.
const SCRIPT: &str = "
import mmap, ctypes, os, sys
m = mmap.mmap(-1, 16 * 4096)
for i in range(16):
    m[i * 4096] = 1
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
for line in sys.stdin:
    op, n = line.split()
    n = int(n)
    if op == 'w':
        m[n * 4096] = 2
    elif op == 'd':
        m.madvise(mmap.MADV_DONTNEED, n * 4096, 4096)
    elif op == 'r':
        m.madvise(mmap.MADV_REMOVE, n * 4096, 4096)
    elif op == 'f':
        pid = os.fork()
        if pid == 0:
            m[n * 4096] = 3
            os._exit(0)
        os.waitpid(pid, 0)
    print('ok', flush=True)
";

struct Sharer(Scripted);

impl Sharer {
    fn spawn() -> Sharer {
        Sharer(Scripted::spawn(SCRIPT, false))
    }

    fn pid(&self) -> i32 {
        self.0.pid()
    }

    fn op(&mut self, op: &str, n: u64) {
        self.0.say(&format!("{op} {n}"));
    }

    /// The mapping as maps shows it.
    fn map(&self) -> crust_proc::MapEntry {
        crust_proc::maps(&crust_proc::ProcRoot::default(), self.pid())
            .unwrap()
            .into_iter()
            .find(|m| m.start == self.0.base)
            .unwrap()
    }
}

fn seize(pid: i32) -> Task {
    let mut task = Task::seize(pid, std::time::Duration::from_secs(10)).unwrap();
    task.use_syscall_ip(super::super::track::tests::vdso_syscall(pid));
    task
}

#[test]
fn watches_writes_drops_and_forks_of_a_shared_object() {
    if !crust_sys::testing::require_root("watches_writes_drops_and_forks_of_a_shared_object") {
        return;
    }
    let mut s = Sharer::spawn();
    let map = s.map();
    assert!(is_anon_object(&map), "{map:?}");
    let ino = map.inode;
    let r = ObjRange {
        addr: map.start..map.end,
        ino,
        off: 0,
    };
    let mut task = seize(s.pid());
    let mut w = start_watch(&mut task, std::slice::from_ref(&r), true).unwrap();
    task.release(false).unwrap();
    assert!(w.covers(&map));
    let pages = |a: u64, b: u64| a * PAGE..b * PAGE;
    let take = |w: &mut ObjectWatch| {
        let (mut written, whole) = w.take();
        let offs = super::super::track::merge(written.remove(&ino).unwrap_or_default());
        (offs, whole)
    };
    assert_eq!(take(&mut w), (vec![], vec![]));
    s.op("w", 3);
    s.op("w", 4);
    assert_eq!(take(&mut w), (vec![pages(3, 5)], vec![]));
    assert_eq!(take(&mut w), (vec![], vec![]));
    // Written, then dropped from the page table: still written. Dropped
    // from the memory (zeros now) without a write: reported by its event.
    s.op("w", 6);
    s.op("d", 6);
    s.op("r", 9);
    assert_eq!(take(&mut w), (vec![pages(6, 7), pages(9, 10)], vec![]));
    assert_eq!(take(&mut w), (vec![], vec![]));
    // A child that writes and exits: the object's answer is not trusted
    // for that interval, and is again after the next scan.
    s.op("f", 12);
    assert_eq!(take(&mut w), (vec![], vec![ino]));
    s.op("w", 1);
    assert_eq!(take(&mut w), (vec![pages(1, 2)], vec![]));
    // Through the keeper's hands: the events noted travel along.
    s.op("f", 13);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (fd, ranges, ev) = w.into_parts().unwrap();
    assert!(ev.broken);
    let mut w = ObjectWatch::from_kept(s.pid(), fd, ranges, ev).unwrap();
    assert_eq!(take(&mut w), (vec![], vec![ino]));
    drop(w);
    // Closing the descriptor unregistered the mapping: the task goes on.
    s.op("w", 2);
    s.op("f", 2);
}
