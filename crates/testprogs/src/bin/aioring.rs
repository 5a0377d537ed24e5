//! `aioring`: two AIO contexts (io_setup). The first, of 64 requests, has
//! gone round its ring: more writes to /dev/null were submitted than it
//! holds, every other one reaped, so its tail is behind its head. The
//! second, of one request, was never used. After restore both contexts
//! still work at the same addresses: the first keeps nr, head and tail, a
//! new write moves its tail by one and the events not reaped are still
//! there; the second has no event.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

/// `struct aio_ring`'s first fields: id, nr, head, tail.
fn ring(ctx: u64) -> (u32, u32, u32) {
    let p = ctx as *const u32;
    // SAFETY: `ctx` is the address of a live ring, mapped readable by the
    // kernel; its header is 32 bytes.
    unsafe {
        (
            std::ptr::read_volatile(p.add(1)),
            std::ptr::read_volatile(p.add(2)),
            std::ptr::read_volatile(p.add(3)),
        )
    }
}

fn io_setup(n: u64) -> Result<u64, String> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes one u64 into `ctx`.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, n, &mut ctx as *mut u64) };
    ensure!(r == 0, "io_setup({n}): {}", std::io::Error::last_os_error());
    Ok(ctx)
}

/// An iocb writing one byte of `buf` to `fd` (struct iocb: data, key,
/// rw_flags, opcode, reqprio, fildes, buf, nbytes, offset, reserved2,
/// flags, resfd).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

fn submit(ctx: u64, iocb: &Iocb) -> Result<(), String> {
    let mut p = iocb as *const Iocb;
    // SAFETY: one pointer to a valid iocb, whose buffer outlives the call
    // (the write to /dev/null completes at once).
    let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1i64, &mut p as *mut _) };
    ensure!(
        r == 1,
        "io_submit: {r} ({})",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reap up to `max` events without waiting; how many there were.
fn reap(ctx: u64, max: usize) -> Result<usize, String> {
    let mut ev = vec![[0u64; 4]; max.max(1)];
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: room for `max` io_events (32 bytes each); a zero timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            0i64,
            max as i64,
            ev.as_mut_ptr(),
            &zero as *const libc::timespec,
        )
    };
    ensure!(r >= 0, "io_getevents: {}", std::io::Error::last_os_error());
    Ok(r as usize)
}

struct State {
    busy: u64,
    idle: u64,
    iocb: Box<Iocb>,
    before: (u32, u32, u32),
}

fn setup(buf: &[u8; 1]) -> Result<State, String> {
    let busy = io_setup(64)?;
    let idle = io_setup(1)?;
    // SAFETY: a plain open of /dev/null.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
    ensure!(
        fd >= 0,
        "open /dev/null: {}",
        std::io::Error::last_os_error()
    );
    let iocb = Box::new(Iocb {
        opcode: 1, // IOCB_CMD_PWRITE
        fildes: fd as u32,
        buf: buf.as_ptr() as u64,
        nbytes: 1,
        ..Default::default()
    });
    let (nr, _, _) = ring(busy);
    for i in 0..nr + 2 {
        submit(busy, &iocb)?;
        if i % 2 == 1 {
            ensure!(reap(busy, 1)? == 1, "no event to reap at submit {i}");
        }
    }
    let before = ring(busy);
    ensure!(
        before.2 < before.1,
        "the tail {} did not go round past the head {}",
        before.2,
        before.1
    );
    Ok(State {
        busy,
        idle,
        iocb,
        before,
    })
}

fn verify(s: &State) -> Result<(), String> {
    let after = ring(s.busy);
    ensure!(
        after == s.before,
        "ring (nr, head, tail) {after:?} after restore, {:?} before",
        s.before
    );
    submit(s.busy, &s.iocb)?;
    let (nr, head, tail) = ring(s.busy);
    ensure!(
        (nr, head, tail) == (after.0, after.1, (after.2 + 1) % nr),
        "after one more write: (nr, head, tail) {:?}, expected the tail moved by one from {after:?}",
        (nr, head, tail)
    );
    let pending = ((tail + nr - head) % nr) as usize;
    let got = reap(s.busy, nr as usize)?;
    ensure!(
        got == pending,
        "{got} events reaped, {pending} were pending"
    );
    ensure!(reap(s.idle, 1)? == 0, "the unused context has an event");
    Ok(())
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let buf = [b'x'];
    let state = match setup(&buf) {
        Ok(s) => s,
        Err(e) => finish(&args, Err(e)),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, verify(&state))
}
