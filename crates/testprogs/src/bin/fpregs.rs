//! `fpregs`: marker values held in x87/SSE control words and in the SSE (xmm0-15),
//! AVX (ymm0-15) or, with avx512f, AVX-512 (zmm0-31, k1-7) registers across the
//! checkpoint. One asm block loads them once and then loops, storing the registers
//! to a scratch buffer and comparing it with the expected values, sleeping 1 ms
//! now and then in a raw nanosleep, until SIGTERM or a mismatch.

use std::sync::atomic::{AtomicPtr, Ordering};

use crust_testprogs::{finish, ready, start, XorShift, TERM};

/// Comparisons between two 1 ms sleeps.
const SPIN: u64 = 2000;
/// x87 control word with 53-bit precision (default is 0x37f).
const FCW: u16 = 0x027f;
const FCW_DEFAULT: u16 = 0x037f;
/// MXCSR with flush-to-zero and denormals-are-zero (default is 0x1f80).
const MXCSR: u32 = 0x9fc0;
const MXCSR_DEFAULT: u32 = 0x1f80;

/// Self-test support: `--selftest-flip OFFSET` makes SIGUSR1 flip a byte of the
/// expected values, which the loop must then report as a mismatch.
static FLIP_AT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_usr1(_sig: libc::c_int) {
    let p = FLIP_AT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: FLIP_AT points into the boxed expected buffer, which lives
        // until exit; the asm loop only reads it.
        unsafe { *p ^= 0x10 };
    }
}

#[repr(C, align(64))]
struct Buf([u8; 2048 + 56 + 32]);

/// Registers part of the buffer in mode `sse`: 256 bytes.
const SSE_REGS: usize = 256;

/// Loads the markers of `exp` into the registers, then loops comparing the
/// registers (stored into `scratch`) with `exp` until a mismatch or SIGTERM.
/// Returns the byte offset of the first mismatching quadword, or u64::MAX on SIGTERM.
///
/// # Safety
/// `exp` and `scratch` hold at least `SSE_REGS + 32` bytes.
unsafe fn spin_sse(
    exp: *const u8,
    scratch: *mut u8,
    flag: *const bool,
    ts: *const libc::timespec,
) -> u64 {
    let ret: u64;
    // SAFETY: the caller guarantees both buffers are large enough and the CPU
    // features; every register the block writes is declared as clobbered; the
    // only memory written is `scratch`; nanosleep only reads `ts`.
    unsafe {
        core::arch::asm!(
            "ldmxcsr dword ptr [rdi + {mx}]",
            "fldcw word ptr [rdi + {cw}]",
            "movdqu xmm0, [rdi + 0]",
            "movdqu xmm1, [rdi + 16]",
            "movdqu xmm2, [rdi + 32]",
            "movdqu xmm3, [rdi + 48]",
            "movdqu xmm4, [rdi + 64]",
            "movdqu xmm5, [rdi + 80]",
            "movdqu xmm6, [rdi + 96]",
            "movdqu xmm7, [rdi + 112]",
            "movdqu xmm8, [rdi + 128]",
            "movdqu xmm9, [rdi + 144]",
            "movdqu xmm10, [rdi + 160]",
            "movdqu xmm11, [rdi + 176]",
            "movdqu xmm12, [rdi + 192]",
            "movdqu xmm13, [rdi + 208]",
            "movdqu xmm14, [rdi + 224]",
            "movdqu xmm15, [rdi + 240]",
            "mov r9, {spin}",
            "2:",
            "movdqu [rsi + 0], xmm0",
            "movdqu [rsi + 16], xmm1",
            "movdqu [rsi + 32], xmm2",
            "movdqu [rsi + 48], xmm3",
            "movdqu [rsi + 64], xmm4",
            "movdqu [rsi + 80], xmm5",
            "movdqu [rsi + 96], xmm6",
            "movdqu [rsi + 112], xmm7",
            "movdqu [rsi + 128], xmm8",
            "movdqu [rsi + 144], xmm9",
            "movdqu [rsi + 160], xmm10",
            "movdqu [rsi + 176], xmm11",
            "movdqu [rsi + 192], xmm12",
            "movdqu [rsi + 208], xmm13",
            "movdqu [rsi + 224], xmm14",
            "movdqu [rsi + 240], xmm15",
            "stmxcsr dword ptr [rsi + {mx}]",
            "fnstcw word ptr [rsi + {cw}]",
            "xor ecx, ecx",
            "3:",
            "mov rax, [rsi + rcx]",
            "cmp rax, [rdi + rcx]",
            "jne 5f",
            "add rcx, 8",
            "cmp rcx, {len}",
            "jb 3b",
            "cmp byte ptr [rdx], 0",
            "jne 6f",
            "dec r9",
            "jnz 2b",
            "mov r9, {spin}",
            "mov r10, rdi",
            "mov r12, rsi",
            "mov rdi, r8",
            "xor esi, esi",
            "mov eax, 35",
            "syscall",
            "mov rdi, r10",
            "mov rsi, r12",
            "jmp 2b",
            "5:",
            "mov rax, rcx",
            "jmp 7f",
            "6:",
            "mov rax, -1",
            "7:",
            "ldmxcsr dword ptr [rdi + {dmx}]",
            "fldcw word ptr [rdi + {dcw}]",
            mx = const SSE_REGS,
            cw = const SSE_REGS + 8,
            dmx = const SSE_REGS + 16,
            dcw = const SSE_REGS + 24,
            len = const SSE_REGS + 16,
            spin = const SPIN,
            in("rdi") exp,
            in("rsi") scratch,
            in("rdx") flag,
            in("r8") ts,
            lateout("rax") ret,
            out("rcx") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("xmm0") _,
            out("xmm1") _,
            out("xmm2") _,
            out("xmm3") _,
            out("xmm4") _,
            out("xmm5") _,
            out("xmm6") _,
            out("xmm7") _,
            out("xmm8") _,
            out("xmm9") _,
            out("xmm10") _,
            out("xmm11") _,
            out("xmm12") _,
            out("xmm13") _,
            out("xmm14") _,
            out("xmm15") _,
        );
    }
    ret
}

/// Registers part of the buffer in mode `avx`: 512 bytes.
const AVX_REGS: usize = 512;

/// Loads the markers of `exp` into the registers, then loops comparing the
/// registers (stored into `scratch`) with `exp` until a mismatch or SIGTERM.
/// Returns the byte offset of the first mismatching quadword, or u64::MAX on SIGTERM.
///
/// # Safety
/// `exp` and `scratch` hold at least `AVX_REGS + 32` bytes; the CPU has avx.
#[target_feature(enable = "avx")]
unsafe fn spin_avx(
    exp: *const u8,
    scratch: *mut u8,
    flag: *const bool,
    ts: *const libc::timespec,
) -> u64 {
    let ret: u64;
    // SAFETY: the caller guarantees both buffers are large enough and the CPU
    // features; every register the block writes is declared as clobbered; the
    // only memory written is `scratch`; nanosleep only reads `ts`.
    unsafe {
        core::arch::asm!(
            "ldmxcsr dword ptr [rdi + {mx}]",
            "fldcw word ptr [rdi + {cw}]",
            "vmovdqu ymm0, [rdi + 0]",
            "vmovdqu ymm1, [rdi + 32]",
            "vmovdqu ymm2, [rdi + 64]",
            "vmovdqu ymm3, [rdi + 96]",
            "vmovdqu ymm4, [rdi + 128]",
            "vmovdqu ymm5, [rdi + 160]",
            "vmovdqu ymm6, [rdi + 192]",
            "vmovdqu ymm7, [rdi + 224]",
            "vmovdqu ymm8, [rdi + 256]",
            "vmovdqu ymm9, [rdi + 288]",
            "vmovdqu ymm10, [rdi + 320]",
            "vmovdqu ymm11, [rdi + 352]",
            "vmovdqu ymm12, [rdi + 384]",
            "vmovdqu ymm13, [rdi + 416]",
            "vmovdqu ymm14, [rdi + 448]",
            "vmovdqu ymm15, [rdi + 480]",
            "mov r9, {spin}",
            "2:",
            "vmovdqu [rsi + 0], ymm0",
            "vmovdqu [rsi + 32], ymm1",
            "vmovdqu [rsi + 64], ymm2",
            "vmovdqu [rsi + 96], ymm3",
            "vmovdqu [rsi + 128], ymm4",
            "vmovdqu [rsi + 160], ymm5",
            "vmovdqu [rsi + 192], ymm6",
            "vmovdqu [rsi + 224], ymm7",
            "vmovdqu [rsi + 256], ymm8",
            "vmovdqu [rsi + 288], ymm9",
            "vmovdqu [rsi + 320], ymm10",
            "vmovdqu [rsi + 352], ymm11",
            "vmovdqu [rsi + 384], ymm12",
            "vmovdqu [rsi + 416], ymm13",
            "vmovdqu [rsi + 448], ymm14",
            "vmovdqu [rsi + 480], ymm15",
            "stmxcsr dword ptr [rsi + {mx}]",
            "fnstcw word ptr [rsi + {cw}]",
            "xor ecx, ecx",
            "3:",
            "mov rax, [rsi + rcx]",
            "cmp rax, [rdi + rcx]",
            "jne 5f",
            "add rcx, 8",
            "cmp rcx, {len}",
            "jb 3b",
            "cmp byte ptr [rdx], 0",
            "jne 6f",
            "dec r9",
            "jnz 2b",
            "mov r9, {spin}",
            "mov r10, rdi",
            "mov r12, rsi",
            "mov rdi, r8",
            "xor esi, esi",
            "mov eax, 35",
            "syscall",
            "mov rdi, r10",
            "mov rsi, r12",
            "jmp 2b",
            "5:",
            "mov rax, rcx",
            "jmp 7f",
            "6:",
            "mov rax, -1",
            "7:",
            "ldmxcsr dword ptr [rdi + {dmx}]",
            "fldcw word ptr [rdi + {dcw}]",
            mx = const AVX_REGS,
            cw = const AVX_REGS + 8,
            dmx = const AVX_REGS + 16,
            dcw = const AVX_REGS + 24,
            len = const AVX_REGS + 16,
            spin = const SPIN,
            in("rdi") exp,
            in("rsi") scratch,
            in("rdx") flag,
            in("r8") ts,
            lateout("rax") ret,
            out("rcx") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
        );
    }
    ret
}

/// Registers part of the buffer in mode `avx512`: 2104 bytes.
const AVX512_REGS: usize = 2104;

/// Loads the markers of `exp` into the registers, then loops comparing the
/// registers (stored into `scratch`) with `exp` until a mismatch or SIGTERM.
/// Returns the byte offset of the first mismatching quadword, or u64::MAX on SIGTERM.
///
/// # Safety
/// `exp` and `scratch` hold at least `AVX512_REGS + 32` bytes; the CPU has avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn spin_avx512(
    exp: *const u8,
    scratch: *mut u8,
    flag: *const bool,
    ts: *const libc::timespec,
) -> u64 {
    let ret: u64;
    // SAFETY: the caller guarantees both buffers are large enough and the CPU
    // features; every register the block writes is declared as clobbered; the
    // only memory written is `scratch`; nanosleep only reads `ts`.
    unsafe {
        core::arch::asm!(
            "ldmxcsr dword ptr [rdi + {mx}]",
            "fldcw word ptr [rdi + {cw}]",
            "vmovdqu64 zmm0, [rdi + 0]",
            "vmovdqu64 zmm1, [rdi + 64]",
            "vmovdqu64 zmm2, [rdi + 128]",
            "vmovdqu64 zmm3, [rdi + 192]",
            "vmovdqu64 zmm4, [rdi + 256]",
            "vmovdqu64 zmm5, [rdi + 320]",
            "vmovdqu64 zmm6, [rdi + 384]",
            "vmovdqu64 zmm7, [rdi + 448]",
            "vmovdqu64 zmm8, [rdi + 512]",
            "vmovdqu64 zmm9, [rdi + 576]",
            "vmovdqu64 zmm10, [rdi + 640]",
            "vmovdqu64 zmm11, [rdi + 704]",
            "vmovdqu64 zmm12, [rdi + 768]",
            "vmovdqu64 zmm13, [rdi + 832]",
            "vmovdqu64 zmm14, [rdi + 896]",
            "vmovdqu64 zmm15, [rdi + 960]",
            "vmovdqu64 zmm16, [rdi + 1024]",
            "vmovdqu64 zmm17, [rdi + 1088]",
            "vmovdqu64 zmm18, [rdi + 1152]",
            "vmovdqu64 zmm19, [rdi + 1216]",
            "vmovdqu64 zmm20, [rdi + 1280]",
            "vmovdqu64 zmm21, [rdi + 1344]",
            "vmovdqu64 zmm22, [rdi + 1408]",
            "vmovdqu64 zmm23, [rdi + 1472]",
            "vmovdqu64 zmm24, [rdi + 1536]",
            "vmovdqu64 zmm25, [rdi + 1600]",
            "vmovdqu64 zmm26, [rdi + 1664]",
            "vmovdqu64 zmm27, [rdi + 1728]",
            "vmovdqu64 zmm28, [rdi + 1792]",
            "vmovdqu64 zmm29, [rdi + 1856]",
            "vmovdqu64 zmm30, [rdi + 1920]",
            "vmovdqu64 zmm31, [rdi + 1984]",
            "kmovw k1, word ptr [rdi + 2048]",
            "kmovw k2, word ptr [rdi + 2056]",
            "kmovw k3, word ptr [rdi + 2064]",
            "kmovw k4, word ptr [rdi + 2072]",
            "kmovw k5, word ptr [rdi + 2080]",
            "kmovw k6, word ptr [rdi + 2088]",
            "kmovw k7, word ptr [rdi + 2096]",
            "mov r9, {spin}",
            "2:",
            "vmovdqu64 [rsi + 0], zmm0",
            "vmovdqu64 [rsi + 64], zmm1",
            "vmovdqu64 [rsi + 128], zmm2",
            "vmovdqu64 [rsi + 192], zmm3",
            "vmovdqu64 [rsi + 256], zmm4",
            "vmovdqu64 [rsi + 320], zmm5",
            "vmovdqu64 [rsi + 384], zmm6",
            "vmovdqu64 [rsi + 448], zmm7",
            "vmovdqu64 [rsi + 512], zmm8",
            "vmovdqu64 [rsi + 576], zmm9",
            "vmovdqu64 [rsi + 640], zmm10",
            "vmovdqu64 [rsi + 704], zmm11",
            "vmovdqu64 [rsi + 768], zmm12",
            "vmovdqu64 [rsi + 832], zmm13",
            "vmovdqu64 [rsi + 896], zmm14",
            "vmovdqu64 [rsi + 960], zmm15",
            "vmovdqu64 [rsi + 1024], zmm16",
            "vmovdqu64 [rsi + 1088], zmm17",
            "vmovdqu64 [rsi + 1152], zmm18",
            "vmovdqu64 [rsi + 1216], zmm19",
            "vmovdqu64 [rsi + 1280], zmm20",
            "vmovdqu64 [rsi + 1344], zmm21",
            "vmovdqu64 [rsi + 1408], zmm22",
            "vmovdqu64 [rsi + 1472], zmm23",
            "vmovdqu64 [rsi + 1536], zmm24",
            "vmovdqu64 [rsi + 1600], zmm25",
            "vmovdqu64 [rsi + 1664], zmm26",
            "vmovdqu64 [rsi + 1728], zmm27",
            "vmovdqu64 [rsi + 1792], zmm28",
            "vmovdqu64 [rsi + 1856], zmm29",
            "vmovdqu64 [rsi + 1920], zmm30",
            "vmovdqu64 [rsi + 1984], zmm31",
            "kmovw word ptr [rsi + 2048], k1",
            "kmovw word ptr [rsi + 2056], k2",
            "kmovw word ptr [rsi + 2064], k3",
            "kmovw word ptr [rsi + 2072], k4",
            "kmovw word ptr [rsi + 2080], k5",
            "kmovw word ptr [rsi + 2088], k6",
            "kmovw word ptr [rsi + 2096], k7",
            "stmxcsr dword ptr [rsi + {mx}]",
            "fnstcw word ptr [rsi + {cw}]",
            "xor ecx, ecx",
            "3:",
            "mov rax, [rsi + rcx]",
            "cmp rax, [rdi + rcx]",
            "jne 5f",
            "add rcx, 8",
            "cmp rcx, {len}",
            "jb 3b",
            "cmp byte ptr [rdx], 0",
            "jne 6f",
            "dec r9",
            "jnz 2b",
            "mov r9, {spin}",
            "mov r10, rdi",
            "mov r12, rsi",
            "mov rdi, r8",
            "xor esi, esi",
            "mov eax, 35",
            "syscall",
            "mov rdi, r10",
            "mov rsi, r12",
            "jmp 2b",
            "5:",
            "mov rax, rcx",
            "jmp 7f",
            "6:",
            "mov rax, -1",
            "7:",
            "ldmxcsr dword ptr [rdi + {dmx}]",
            "fldcw word ptr [rdi + {dcw}]",
            mx = const AVX512_REGS,
            cw = const AVX512_REGS + 8,
            dmx = const AVX512_REGS + 16,
            dcw = const AVX512_REGS + 24,
            len = const AVX512_REGS + 16,
            spin = const SPIN,
            in("rdi") exp,
            in("rsi") scratch,
            in("rdx") flag,
            in("r8") ts,
            lateout("rax") ret,
            out("rcx") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            out("k1") _,
            out("k2") _,
            out("k3") _,
            out("k4") _,
            out("k5") _,
            out("k6") _,
            out("k7") _,
        );
    }
    ret
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sse,
    Avx,
    Avx512,
}

impl Mode {
    fn regs(self) -> usize {
        match self {
            Mode::Sse => SSE_REGS,
            Mode::Avx => AVX_REGS,
            Mode::Avx512 => AVX512_REGS,
        }
    }

    /// Names what lives at a byte offset of the buffer.
    fn describe(self, off: usize) -> String {
        let (n, size, name) = match self {
            Mode::Sse => (16, 16, "xmm"),
            Mode::Avx => (16, 32, "ymm"),
            Mode::Avx512 => (32, 64, "zmm"),
        };
        let regs = self.regs();
        if off < n * size {
            format!(
                "{name}{} bytes {}..{}",
                off / size,
                off % size,
                off % size + 8
            )
        } else if off < regs {
            format!("k{}", (off - n * size) / 8 + 1)
        } else if off == regs {
            "MXCSR".to_string()
        } else {
            "x87 control word".to_string()
        }
    }
}

fn main() {
    let args = start();
    let best = if std::arch::is_x86_feature_detected!("avx512f") {
        Mode::Avx512
    } else if std::arch::is_x86_feature_detected!("avx") {
        Mode::Avx
    } else {
        Mode::Sse
    };
    // `--mode sse|avx` forces a lower mode (never a higher one than the CPU has).
    let mode = match args.opt("mode") {
        Some("sse") => Mode::Sse,
        Some("avx") if best != Mode::Sse => Mode::Avx,
        _ => best,
    };
    let regs = mode.regs();
    let mut exp = Box::new(Buf([0; 2048 + 56 + 32]));
    let mut scratch = Box::new(Buf([0; 2048 + 56 + 32]));
    let mut rng = XorShift(0x5EED_F00D_1234_5678);
    for chunk in exp.0[..regs].chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    if mode == Mode::Avx512 {
        // k registers: kmovw moves 16 bits, the rest of each 8-byte slot stays zero.
        for k in 0..7 {
            let off = 16 * 32 * 4 + 8 * k;
            exp.0[off..off + 8].copy_from_slice(&(0xA500 | (k as u64 + 1)).to_le_bytes());
        }
    }
    exp.0[regs..regs + 4].copy_from_slice(&MXCSR.to_le_bytes());
    exp.0[regs + 8..regs + 10].copy_from_slice(&FCW.to_le_bytes());
    exp.0[regs + 16..regs + 20].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    exp.0[regs + 24..regs + 26].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let flag = TERM.as_ptr() as *const bool;
    if let Some(off) = args.opt("selftest-flip") {
        let off: usize = off.parse().unwrap_or(0).min(regs + 8);
        FLIP_AT.store(exp.0.as_mut_ptr().wrapping_add(off), Ordering::SeqCst);
        // SAFETY: a zeroed sigaction with an extern "C" handler that only does
        // the single byte write described above.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
    }
    ready(&args);
    let e = exp.0.as_ptr();
    let s = scratch.0.as_mut_ptr();
    // SAFETY: both buffers are 2136 bytes, more than any mode's registers + 32;
    // the mode was chosen from the CPU features detected above.
    let ret = unsafe {
        match mode {
            Mode::Sse => spin_sse(e, s, flag, &ts),
            Mode::Avx => spin_avx(e, s, flag, &ts),
            Mode::Avx512 => spin_avx512(e, s, flag, &ts),
        }
    };
    let verdict = if ret == u64::MAX {
        Ok(())
    } else {
        let off = ret as usize;
        let got = u64::from_le_bytes(scratch.0[off..off + 8].try_into().unwrap_or([0; 8]));
        let want = u64::from_le_bytes(exp.0[off..off + 8].try_into().unwrap_or([0; 8]));
        Err(format!(
            "{mode:?} mode: {} is {got:#018x}, expected {want:#018x}",
            mode.describe(off)
        ))
    };
    finish(&args, verdict)
}
