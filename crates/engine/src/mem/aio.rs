//! AIO rings (io_setup): a VMA `/[aio] (deleted)` of the kernel's aio
//! file. Stored as CRIU stores them: the VMA has status `VMA_AREA_AIORING`
//! and all its pages (the ring header and the events); `mm.aios` has one
//! entry per ring (its address, length, and the number of events asked of
//! io_setup that gives a ring of that length).
//!
//! Restore maps plain anonymous memory at the ring's place for the pages,
//! then makes a new ring with io_setup, brings its kernel tail to the old
//! one by submitting writes to /dev/null (they complete at once), sets its
//! head, copies the events in and moves the new ring onto the old place
//! with mremap (which also drops the anonymous copy).

use super::{bad, Vma};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::proto::mm::{AioRingEntry, MmEntry};
use crust_sys::{mem, RemoteAddr, PAGE_SIZE};
use log::debug;
use std::path::Path;

/// The name the kernel gives the file behind an AIO ring.
const AIO_NAME: &str = "/[aio]";

/// Is `m` an AIO ring: the kernel's aio file, named "/[aio]" (deleted),
/// on no device, mapped shared? (Stored with status AIORING alone, as
/// CRIU stores it.)
pub(crate) fn is_ring(m: &crust_proc::MapEntry) -> bool {
    m.shared && m.dev_major == 0 && m.path.as_deref() == Some(AIO_NAME)
}
/// `struct aio_ring`'s size (its header), and that of one `io_event`.
const HEADER: u64 = 32;
const EVENT: u64 = 32;
const RING_MAGIC: u32 = 0xa10a_10a1;

/// The header fields of a ring crust uses (`struct aio_ring`: id, nr,
/// head, tail, magic, compat and incompat features, header length).
#[derive(Debug, Clone, Copy)]
struct Header {
    nr: u32,
    head: u32,
    tail: u32,
}

/// Events a ring of `len` bytes holds.
fn events_in(len: u64) -> u64 {
    len.saturating_sub(HEADER) / EVENT
}

/// The io_setup argument that makes the kernel size a ring `len` bytes
/// long (it doubles the number asked and adds two).
fn nr_req_for(len: u64) -> u32 {
    (events_in(len).saturating_sub(2) / 2) as u32
}

fn read_header(pid: i32, at: u64, len: u64) -> Result<(Header, bool), Error> {
    let mut b = [0u8; HEADER as usize];
    let n = mem::read(pid, RemoteAddr(at), &mut b).map_err(sys_err(pid, "process_vm_readv"))?;
    let word = |i: usize| {
        let mut w = [0u8; 4];
        if let Some(s) = b.get(i * 4..i * 4 + 4) {
            w.copy_from_slice(s);
        }
        u32::from_le_bytes(w)
    };
    let h = Header {
        nr: word(1),
        head: word(2),
        tail: word(3),
    };
    let sane = n == b.len()
        && word(4) == RING_MAGIC
        && word(5) == 1
        && word(6) == 0
        && word(7) as u64 == HEADER
        && h.nr as u64 == events_in(len);
    Ok((h, sane))
}

/// The `mm.aios` entry of ring VMA `v` of task `pid` (whose header must
/// be the kernel's: otherwise it is refused).
pub(crate) fn dump_ring(pid: i32, v: &Vma) -> Result<AioRingEntry, Error> {
    let len = v.map.end - v.map.start;
    let (h, sane) = read_header(pid, v.map.start, len)?;
    let nr_req = nr_req_for(len);
    if !sane || nr_req == 0 || !len.is_multiple_of(PAGE_SIZE) {
        return Err(Error::unsupported(format!(
            "process {pid} has an AIO ring at {:#x}-{:#x} whose header is not the kernel's (nr {})",
            v.map.start, v.map.end, h.nr
        )));
    }
    debug!(
        "{pid}: AIO ring {:#x}-{:#x}: nr {} head {} tail {}",
        v.map.start, v.map.end, h.nr, h.head, h.tail
    );
    Ok(AioRingEntry {
        id: v.map.start,
        nr_req,
        ring_len: len as u32,
        ..Default::default()
    })
}

/// Check that every ring VMA of `mm` has its `aios` entry and the other
/// way round, with matching sizes.
pub(crate) fn validate_rings(dir: &Path, mm: &MmEntry) -> Result<(), Error> {
    let rings = mm.vmas.iter().filter(|v| v.status & vs::AREA_AIORING != 0);
    if rings.clone().count() != mm.aios.len() {
        return Err(bad(
            dir,
            format!(
                "mm image has {} AIO ring VMAs but {} AIO entries",
                rings.count(),
                mm.aios.len()
            ),
        ));
    }
    for v in rings {
        let ok = mm.aios.iter().any(|a| {
            a.id == v.start
                && u64::from(a.ring_len) == v.end - v.start
                && a.nr_req > 0
                && nr_req_for(v.end - v.start) == a.nr_req
        });
        if !ok {
            return Err(bad(
                dir,
                format!(
                    "AIO ring VMA {:#x}-{:#x} has no matching AIO entry",
                    v.start, v.end
                ),
            ));
        }
    }
    Ok(())
}

/// Scratch offsets: the context id io_setup writes, "/dev/null", the iocb,
/// then the array of iocb pointers io_submit takes.
const CTX_OFF: u64 = 0;
const PATH_OFF: u64 = 16;
const IOCB_OFF: u64 = 64;
const IOCBP_OFF: u64 = 128;
/// iocb pointers submitted at once at most.
const BATCH: u64 = 512;

/// Make every ring of `mm` again (its pages are in place already).
pub fn restore_rings(r: &mut Remote<'_>, mm: &MmEntry) -> Result<(), Error> {
    for a in &mm.aios {
        restore_ring(r, a)?;
    }
    Ok(())
}

fn restore_ring(r: &mut Remote<'_>, a: &AioRingEntry) -> Result<(), Error> {
    let pid = r.pid();
    let len = u64::from(a.ring_len);
    let (old, sane) = read_header(pid, a.id, len)?;
    if !sane || old.head >= old.nr || old.tail >= old.nr {
        return Err(Error::Restore {
            pid,
            what: format!(
                "the stored AIO ring at {:#x} is not sane (nr {} head {} tail {})",
                a.id, old.nr, old.head, old.tail
            ),
        });
    }
    r.put(CTX_OFF, &0u64.to_le_bytes())?;
    let ctx_at = r.at(CTX_OFF);
    r.call(
        "io_setup",
        libc::SYS_io_setup,
        [u64::from(a.nr_req), ctx_at.0, 0, 0, 0, 0],
    )?;
    let ctx = r.get_u64(CTX_OFF)?;
    let (new, _) = read_header(pid, ctx, len)?;
    if new.nr != old.nr {
        let _ = r.call("io_destroy", libc::SYS_io_destroy, [ctx, 0, 0, 0, 0, 0]);
        return Err(Error::Restore {
            pid,
            what: format!(
                "io_setup({}) made a ring of {} events, the stored one at {:#x} has {}",
                a.nr_req, new.nr, a.id, old.nr
            ),
        });
    }
    if old.head != 0 || old.tail != 0 {
        advance(r, ctx, old)?;
    }
    // The events, after the header (head and tail are the kernel's now).
    let mut events = vec![0u8; (len - HEADER) as usize];
    let n = mem::read(pid, RemoteAddr(a.id + HEADER), &mut events)
        .map_err(sys_err(pid, "process_vm_readv"))?;
    let w = mem::write(
        pid,
        RemoteAddr(ctx + HEADER),
        events.get(..n).unwrap_or(&[]),
    )
    .map_err(sys_err(pid, "process_vm_writev"))?;
    if n != events.len() || w != n {
        return Err(Error::Restore {
            pid,
            what: format!("short copy of the events of the AIO ring at {:#x}", a.id),
        });
    }
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let got = r.call(
        "mremap (AIO ring)",
        libc::SYS_mremap,
        [ctx, len, len, flags, a.id, 0],
    )?;
    if got != a.id {
        return Err(Error::Restore {
            pid,
            what: format!("mremap put the AIO ring for {:#x} at {got:#x}", a.id),
        });
    }
    debug!(
        "{pid}: AIO ring at {:#x}: nr {} head {} tail {}",
        a.id, old.nr, old.head, old.tail
    );
    Ok(())
}

/// Bring the kernel's tail of new ring `ctx` to `old.tail` (a full turn
/// first when the tail is behind the head, so that the kernel's count of
/// completed events comes out right), and its head to `old.head`, with
/// writes of one byte to /dev/null, which complete at once.
fn advance(r: &mut Remote<'_>, ctx: u64, old: Header) -> Result<(), Error> {
    let pid = r.pid();
    let count = if old.tail < old.head {
        u64::from(old.nr) + u64::from(old.tail)
    } else {
        u64::from(old.tail)
    };
    let path = r.put_cstr(PATH_OFF, b"/dev/null")?;
    let fd = r.call(
        "open /dev/null",
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.0,
            (libc::O_WRONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    )?;
    // struct iocb: data, key+rw_flags, opcode(u16) reqprio(i16) fildes(u32),
    // buf, nbytes, offset, reserved2, flags, resfd. The byte written is
    // the iocb's own first byte.
    let iocb_at = r.at(IOCB_OFF).0;
    let iocb: Vec<u8> = [0u64.to_le_bytes(), 0u64.to_le_bytes()]
        .concat()
        .into_iter()
        .chain(1u16.to_le_bytes()) // IOCB_CMD_PWRITE
        .chain(0u16.to_le_bytes())
        .chain((fd as u32).to_le_bytes())
        .chain(iocb_at.to_le_bytes())
        .chain(1u64.to_le_bytes())
        .chain([0u8; 24])
        .collect();
    let maxr = count
        .min(u64::from(old.nr).saturating_sub(1))
        .clamp(1, BATCH);
    let ptrs: Vec<u8> = (0..maxr).flat_map(|_| iocb_at.to_le_bytes()).collect();
    let result = (|| {
        r.put(IOCB_OFF, &iocb)?;
        r.put(IOCBP_OFF, &ptrs)?;
        let mut done = 0u64;
        while done < count {
            let want = (count - done).min(maxr);
            let ptrs_at = r.at(IOCBP_OFF).0;
            let n = r.call(
                "io_submit (AIO ring tail)",
                libc::SYS_io_submit,
                [ctx, want, ptrs_at, 0, 0, 0],
            )?;
            if n == 0 {
                return Err(Error::Restore {
                    pid,
                    what: format!("io_submit took no request moving the tail of AIO ring {ctx:#x}"),
                });
            }
            done += n;
            // Consume the events as io_getevents would: the head is the
            // user's to write.
            let head = done.min(u64::from(old.head)) as u32;
            mem::write(pid, RemoteAddr(ctx + 8), &head.to_le_bytes())
                .map_err(sys_err(pid, "process_vm_writev"))?;
        }
        Ok(())
    })();
    r.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nr_req_round_trips_the_kernel_sizing() {
        // io_setup(n): max(n, 4 * cpus), doubled, plus two, rounded up to
        // pages with the header: a one-page ring holds 127 events.
        assert_eq!(events_in(4096), 127);
        assert_eq!(nr_req_for(4096), 62);
        let len = 3 * 4096;
        let n = u64::from(nr_req_for(len));
        let pages = (HEADER + EVENT * (n * 2 + 2)).div_ceil(4096);
        assert_eq!(pages * 4096, len);
    }
}
