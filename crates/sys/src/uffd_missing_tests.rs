//! Missing-page handling on crust's own memory: a thread touches a
//! registered page and waits; the test reads the fault and copies a page
//! in; a `madvise(MADV_DONTNEED)` is reported as a removal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;

const PAGE: usize = 4096;

struct Map(*mut u8, usize);

// SAFETY: the mapping is only read through volatile loads and freed once.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by mmap with this length.
        unsafe { libc::munmap(self.0 as *mut libc::c_void, self.1) };
    }
}

fn anon(pages: usize) -> Map {
    // SAFETY: a fresh anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    Map(p as *mut u8, pages * PAGE)
}

fn wait_event(u: &Uffd) -> Event {
    for _ in 0..500 {
        if let Some(e) = u.read_event().unwrap() {
            return e;
        }
        let _ = poll(&[(u.as_fd(), libc::POLLIN)], 10).unwrap();
    }
    panic!("no userfaultfd event in 5 s");
}

#[test]
fn fault_is_served_by_copy_and_dontneed_is_reported() {
    let u = Uffd::new_local().unwrap();
    u.api(FEATURE_EVENT_REMOVE).unwrap();
    let m = std::sync::Arc::new(anon(4));
    let base = m.0 as u64;
    u.register_missing(base, 4 * PAGE as u64).unwrap();
    let m2 = m.clone();
    let reader = std::thread::spawn(move || {
        let p = m2.0.wrapping_add(PAGE + 8);
        // SAFETY: inside the live mapping; volatile so the load happens.
        unsafe { std::ptr::read_volatile(p) }
    });
    match wait_event(&u) {
        Event::PageFault { addr, write } => {
            assert_eq!(addr, base + PAGE as u64);
            assert!(!write);
        }
        e => panic!("expected a page fault, got {e:?}"),
    }
    let page = vec![0x5au8; PAGE];
    assert_eq!(
        u.copy(base + PAGE as u64, &page),
        Filled::Done {
            n: PAGE as u64,
            stopped: None
        }
    );
    assert_eq!(reader.join().unwrap(), 0x5a);
    // The page is there: a second copy stops at once with EEXIST.
    assert_eq!(
        u.copy(base + PAGE as u64, &page),
        Filled::Done {
            n: 0,
            stopped: Some(libc::EEXIST)
        }
    );
    // A zero page elsewhere.
    assert!(matches!(
        u.zeropage(base, PAGE as u64),
        Filled::Done { stopped: None, .. }
    ));
    let m3 = m.clone();
    let adv = std::thread::spawn(move || {
        // SAFETY: madvise of the live mapping's own range.
        unsafe { libc::madvise(m3.0 as *mut libc::c_void, 2 * PAGE, libc::MADV_DONTNEED) }
    });
    match wait_event(&u) {
        Event::Remove { start, end } => {
            assert_eq!((start, end), (base, base + 2 * PAGE as u64));
        }
        e => panic!("expected a removal, got {e:?}"),
    }
    assert_eq!(adv.join().unwrap(), 0);
}

/// Removes a test's directory, pass or fail.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_file_window_is_copied_in_within_its_bounds() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("crust-uffd-window-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("pages");
    let bytes: Vec<u8> = (1..=3u8).flat_map(|n| vec![n; PAGE]).collect();
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    // Pages 2 and 3 of the file.
    let w = FileWindow::map(f.as_fd(), PAGE as u64, 2 * PAGE).unwrap();
    assert_eq!(w.len(), 2 * PAGE);
    let u = Uffd::new_local().unwrap();
    u.api(0).unwrap();
    let m = anon(2);
    let base = m.0 as u64;
    u.register_missing(base, 2 * PAGE as u64).unwrap();
    assert_eq!(
        u.copy_window(base, &w, 0, 2 * PAGE),
        Filled::Done {
            n: 2 * PAGE as u64,
            stopped: None
        }
    );
    for (i, want) in [2u8, 3].into_iter().enumerate() {
        // SAFETY: inside the live mapping, now present.
        let got = unsafe { std::ptr::read_volatile(m.0.wrapping_add(i * PAGE + 7)) };
        assert_eq!(got, want);
    }
    // Past the window: refused, nothing read.
    assert_eq!(
        u.copy_window(base, &w, PAGE, 2 * PAGE),
        Filled::Done {
            n: 0,
            stopped: Some(libc::EINVAL)
        }
    );
    // A page that is there already.
    assert!(matches!(
        u.copy_window(base, &w, 0, PAGE),
        Filled::Done {
            stopped: Some(libc::EEXIST),
            ..
        }
    ));
    assert!(FileWindow::map(f.as_fd(), 0, 0).is_err());
}
