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
