//! Conversion between the kernel's XSAVE area (standard format, as
//! PTRACE_GETREGSET NT_X86_XSTATE gives it) and CRIU's `user_x86_fpregs_entry`.

use crust_images::proto::core_x86::{UserX86FpregsEntry, UserX86XsaveEntry};
use crust_sys::cpu;

const FXSAVE_SIZE: usize = 512;
const XSAVE_HDR: usize = 512;
/// fx_sw_bytes in the software-reserved tail of the FXSAVE area.
const SW_XFEATURES: usize = 464 + 8;

// XSAVE state components.
const X_AVX: u32 = 2;
const X_BNDREGS: u32 = 3;
const X_BNDCSR: u32 = 4;
const X_OPMASK: u32 = 5;
const X_ZMM_HI256: u32 = 6;
const X_HI16_ZMM: u32 = 7;
const X_PKRU: u32 = 9;

/// The `N` bytes of `b` at `o`, or zeroes where `b` ends before them
/// (callers read fixed layouts of buffers they sized).
fn bytes_at<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    o.checked_add(N)
        .and_then(|e| b.get(o..e))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}
pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, o))
}
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, o))
}
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, o))
}
fn u32s(b: &[u8], o: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| u32_at(b, o + 4 * i)).collect()
}
fn u64s(b: &[u8], o: usize, n: usize) -> Vec<u64> {
    (0..n).map(|i| u64_at(b, o + 8 * i)).collect()
}

/// Which components the task's area holds: the kernel's xfeatures from the
/// software-reserved bytes, or x87|SSE for a plain FXSAVE area.
fn xfeatures_of(buf: &[u8]) -> u64 {
    if buf.len() <= FXSAVE_SIZE + 64 {
        return 3;
    }
    match u64_at(buf, SW_XFEATURES) {
        0 => cpu::xfeatures_supported(),
        f => f,
    }
}

/// Build the image entry from a raw XSAVE area.
pub fn fpregs_from_xstate(buf: &[u8]) -> UserX86FpregsEntry {
    let mut e = UserX86FpregsEntry {
        cwd: u32::from(u16_at(buf, 0)),
        swd: u32::from(u16_at(buf, 2)),
        twd: u32::from(u16_at(buf, 4)),
        fop: u32::from(u16_at(buf, 6)),
        rip: u64_at(buf, 8),
        rdp: u64_at(buf, 16),
        mxcsr: u32_at(buf, 24),
        mxcsr_mask: u32_at(buf, 28),
        st_space: u32s(buf, 32, 32),
        xmm_space: u32s(buf, 160, 64),
        ..Default::default()
    };
    let feats = xfeatures_of(buf);
    if buf.len() <= FXSAVE_SIZE + 64 {
        return e;
    }
    let mut x = UserX86XsaveEntry {
        xstate_bv: u64_at(buf, XSAVE_HDR),
        ..Default::default()
    };
    let comp = |n: u32| -> Option<usize> {
        if feats & (1u64 << n) == 0 {
            return None;
        }
        let c = cpu::xsave_component(n)?;
        let off = c.offset as usize;
        (off + c.size as usize <= buf.len()).then_some(off)
    };
    if let Some(o) = comp(X_AVX) {
        x.ymmh_space = u32s(buf, o, 64);
    }
    if let Some(o) = comp(X_BNDREGS) {
        x.bndreg_state = u64s(buf, o, 8);
    }
    if let Some(o) = comp(X_BNDCSR) {
        x.bndcsr_state = u64s(buf, o, 2);
    }
    if let Some(o) = comp(X_OPMASK) {
        x.opmask_reg = u64s(buf, o, 8);
    }
    if let Some(o) = comp(X_ZMM_HI256) {
        x.zmm_upper = u64s(buf, o, 64);
    }
    if let Some(o) = comp(X_HI16_ZMM) {
        x.hi16_zmm = u64s(buf, o, 128);
    }
    if let Some(o) = comp(X_PKRU) {
        x.pkru = u32s(buf, o, 2);
    }
    e.xsave = Some(x);
    e
}

/// Write `v` into `b` at `o`; nothing where `b` ends before (callers write
/// fixed layouts into buffers they sized).
fn put_bytes(b: &mut [u8], o: usize, v: &[u8]) {
    if let Some(d) = o.checked_add(v.len()).and_then(|e| b.get_mut(o..e)) {
        d.copy_from_slice(v);
    }
}
fn put_u16(b: &mut [u8], o: usize, v: u16) {
    put_bytes(b, o, &v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], o: usize, v: u32) {
    put_bytes(b, o, &v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], o: usize, v: u64) {
    put_bytes(b, o, &v.to_le_bytes());
}
fn put_u32s(b: &mut [u8], o: usize, v: &[u32], max: usize) {
    for (i, w) in v.iter().take(max).enumerate() {
        put_u32(b, o + 4 * i, *w);
    }
}
fn put_u64s(b: &mut [u8], o: usize, v: &[u64], max: usize) {
    for (i, w) in v.iter().take(max).enumerate() {
        put_u64(b, o + 8 * i, *w);
    }
}

/// A component of the image this CPU cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFeature(pub &'static str);

/// Build a standard-format XSAVE area for this CPU from the image entry.
/// Components present in the image but in their init state are fine on a
/// CPU without them; live state of a missing component is an error.
pub fn xstate_from_fpregs(e: &UserX86FpregsEntry) -> Result<Vec<u8>, MissingFeature> {
    let size = cpu::xsave_size() as usize;
    let mut b = vec![0u8; size.max(FXSAVE_SIZE + 64)];
    put_u16(&mut b, 0, e.cwd as u16);
    put_u16(&mut b, 2, e.swd as u16);
    put_u16(&mut b, 4, e.twd as u16);
    put_u16(&mut b, 6, e.fop as u16);
    put_u64(&mut b, 8, e.rip);
    put_u64(&mut b, 16, e.rdp);
    put_u32(&mut b, 24, e.mxcsr);
    put_u32(&mut b, 28, e.mxcsr_mask);
    put_u32s(&mut b, 32, &e.st_space, 32);
    put_u32s(&mut b, 160, &e.xmm_space, 64);
    let supported = cpu::xfeatures_supported();
    let mut bv: u64 = 3;
    if let Some(x) = &e.xsave {
        bv = x.xstate_bv;
        let mut place = |n: u32, name: &'static str, f: &mut dyn FnMut(&mut [u8], usize)| {
            match cpu::xsave_component(n) {
                Some(c) if (c.offset + c.size) as usize <= b.len() => f(&mut b, c.offset as usize),
                _ => {
                    if bv & (1u64 << n) != 0 {
                        return Err(MissingFeature(name));
                    }
                }
            }
            Ok(())
        };
        if !x.ymmh_space.is_empty() {
            place(X_AVX, "AVX", &mut |b, o| put_u32s(b, o, &x.ymmh_space, 64))?;
        }
        if !x.bndreg_state.is_empty() {
            place(X_BNDREGS, "MPX", &mut |b, o| {
                put_u64s(b, o, &x.bndreg_state, 8)
            })?;
        }
        if !x.bndcsr_state.is_empty() {
            place(X_BNDCSR, "MPX", &mut |b, o| {
                put_u64s(b, o, &x.bndcsr_state, 2)
            })?;
        }
        if !x.opmask_reg.is_empty() {
            place(X_OPMASK, "AVX-512", &mut |b, o| {
                put_u64s(b, o, &x.opmask_reg, 8)
            })?;
        }
        if !x.zmm_upper.is_empty() {
            place(X_ZMM_HI256, "AVX-512", &mut |b, o| {
                put_u64s(b, o, &x.zmm_upper, 64)
            })?;
        }
        if !x.hi16_zmm.is_empty() {
            place(X_HI16_ZMM, "AVX-512", &mut |b, o| {
                put_u64s(b, o, &x.hi16_zmm, 128)
            })?;
        }
        if !x.pkru.is_empty() {
            place(X_PKRU, "PKRU", &mut |b, o| put_u32s(b, o, &x.pkru, 2))?;
        }
    }
    let bv = bv & supported;
    put_u64(&mut b, XSAVE_HDR, bv);
    Ok(b)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_own_layout() {
        let mut e = UserX86FpregsEntry {
            cwd: 0x37f,
            mxcsr: 0x1f80,
            mxcsr_mask: 0xffff,
            st_space: vec![0; 32],
            xmm_space: (0..64).collect(),
            ..Default::default()
        };
        if cpu::xsave_component(X_AVX).is_some() {
            e.xsave = Some(UserX86XsaveEntry {
                xstate_bv: 0x7,
                ymmh_space: (100..164).collect(),
                ..Default::default()
            });
        }
        let raw = xstate_from_fpregs(&e).unwrap();
        let back = fpregs_from_xstate(&raw);
        assert_eq!(back.cwd, 0x37f);
        assert_eq!(back.xmm_space, e.xmm_space);
        assert_eq!(back.mxcsr, 0x1f80);
    }
}
