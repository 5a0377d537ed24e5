//! CRIU 4.2's `cpuinfo.img` (x86): what CPU a set was dumped on, and the
//! check of a set against the CPU it is restored on (`--cpu-cap`,
//! `crust cpuinfo dump|check`).
//!
//! The capability words are compel's: 19 32-bit words (capability
//! version 2; version 1 had 12), word n holding one CPUID register
//! (`WORD_NAMES`), plus three words of Linux's own flags (word 3: REP_GOOD,
//! NOPL, CPUID). `xfeatures_mask` is CRIU's: CPUID 0xD.0's XCR0 bits,
//! without components whose CPUID feature is off, kept to the user
//! components and without the bits of CRIU's supervisor mask (which, as
//! CRIU 4.2 writes it, also clears SSE and MPX bounds: crust writes the
//! same value, so that each reads the other's image).
//!
//! What each `--cpu-cap` bit checks (CRIU's meanings):
//! - FPU: the image's FPU, FXSR, OSXSAVE and XSAVES bits are on here; the
//!   image's xsave components are a subset of this CPU's; the xsave sizes
//!   (for the enabled features and the largest) are equal;
//! - INS: the instruction sets of `INS_FEATURES` the image has are here;
//! - CPU: every capability word is equal.

use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::cpuinfo::{cpuinfo_x86_entry_vendor, CpuinfoEntry, CpuinfoX86Entry};
use crust_sys::cpu::cpuid;
use std::path::Path;

/// `--cpu-cap` bits, as CRIU numbers them.
pub const CAP_NONE: u32 = 0;
pub const CAP_FPU: u32 = 1;
pub const CAP_CPU: u32 = 2;
pub const CAP_INS: u32 = 4;
/// Write cpuinfo.img at dump, check it at restore.
pub const CAP_IMAGE: u32 = 8;
pub const CAP_ALL: u32 = CAP_FPU | CAP_CPU | CAP_INS;
/// Without `--cpu-cap`: FPU and instructions, no image.
pub const CAP_DEFAULT: u32 = CAP_FPU | CAP_INS;

/// Capability words of image version 2, and of version 1.
pub const NCAPINTS: usize = 19;
const NCAPINTS_V1: usize = 12;

// Word numbers.
const W_1_EDX: usize = 0;
const W_8000_0001_EDX: usize = 1;
const W_LNX_1: usize = 3;
const W_1_ECX: usize = 4;
const W_8000_0001_ECX: usize = 6;
const W_7_0_EBX: usize = 9;
const W_D_1_EAX: usize = 10;
const W_7_0_ECX: usize = 11;
const W_F_1_EDX: usize = 12;
const W_8000_0008_EBX: usize = 13;
const W_6_EAX: usize = 14;
const W_8000_000A_EDX: usize = 15;
const W_F_0_EDX: usize = 16;
const W_8000_0007_EBX: usize = 17;
const W_7_0_EDX: usize = 18;

/// What each capability word holds, for messages.
const WORD_NAMES: [&str; NCAPINTS] = [
    "CPUID 1 EDX",
    "CPUID 0x80000001 EDX",
    "CPUID 0x80860001 EDX",
    "Linux flags 1",
    "CPUID 1 ECX",
    "CPUID 0xC0000001 EDX",
    "CPUID 0x80000001 ECX",
    "Linux flags 2",
    "Linux flags 3",
    "CPUID 7.0 EBX",
    "CPUID 0xD.1 EAX",
    "CPUID 7.0 ECX",
    "CPUID 0xF.1 EDX",
    "CPUID 0x80000008 EBX",
    "CPUID 6 EAX",
    "CPUID 0x8000000A EDX",
    "CPUID 0xF.0 EDX",
    "CPUID 0x80000007 EBX",
    "CPUID 7.0 EDX",
];

/// A feature: (word, bit).
type Feature = (usize, u32);

const FPU: Feature = (W_1_EDX, 0);
const FXSR: Feature = (W_1_EDX, 24);
const OSXSAVE: Feature = (W_1_ECX, 27);
const XSAVE: Feature = (W_1_ECX, 26);
const XSAVES: Feature = (W_D_1_EAX, 3);
const CQM_LLC: Feature = (W_F_0_EDX, 1);

/// The instruction sets CRIU's INS check compares, with the names
/// /proc/cpuinfo gives them.
pub const INS_FEATURES: &[(&str, Feature)] = &[
    ("fpu", (0, 0)),
    ("tsc", (0, 4)),
    ("cx8", (0, 8)),
    ("sep", (0, 11)),
    ("cmov", (0, 15)),
    ("clflush", (0, 19)),
    ("mmx", (0, 23)),
    ("fxsr", (0, 24)),
    ("sse", (0, 25)),
    ("sse2", (0, 26)),
    ("syscall", (1, 11)),
    ("mmxext", (1, 22)),
    ("rdtscp", (1, 27)),
    ("3dnowext", (1, 30)),
    ("3dnow", (1, 31)),
    ("rep_good", (3, 16)),
    ("nopl", (3, 20)),
    ("pni", (4, 0)),
    ("pclmulqdq", (4, 1)),
    ("monitor", (4, 3)),
    ("ssse3", (4, 9)),
    ("cx16", (4, 13)),
    ("sse4_1", (4, 19)),
    ("sse4_2", (4, 20)),
    ("movbe", (4, 22)),
    ("popcnt", (4, 23)),
    ("aes", (4, 25)),
    ("xsave", (4, 26)),
    ("osxsave", (4, 27)),
    ("avx", (4, 28)),
    ("f16c", (4, 29)),
    ("rdrand", (4, 30)),
    ("abm", (6, 5)),
    ("sse4a", (6, 6)),
    ("misalignsse", (6, 7)),
    ("3dnowprefetch", (6, 8)),
    ("xop", (6, 11)),
    ("fma4", (6, 16)),
    ("tbm", (6, 21)),
    ("fsgsbase", (9, 0)),
    ("bmi1", (9, 3)),
    ("hle", (9, 4)),
    ("avx2", (9, 5)),
    ("bmi2", (9, 8)),
    ("erms", (9, 9)),
    ("rtm", (9, 11)),
    ("mpx", (9, 14)),
    ("avx512f", (9, 16)),
    ("avx512dq", (9, 17)),
    ("rdseed", (9, 18)),
    ("adx", (9, 19)),
    ("clflushopt", (9, 23)),
    ("avx512pf", (9, 26)),
    ("avx512er", (9, 27)),
    ("avx512cd", (9, 28)),
    ("sha_ni", (9, 29)),
    ("avx512bw", (9, 30)),
    ("avx512vl", (9, 31)),
    ("xsaveopt", (10, 0)),
    ("xsavec", (10, 1)),
    ("xgetbv1", (10, 2)),
    ("avx512vbmi", (11, 1)),
    ("avx512_vbmi2", (11, 6)),
    ("gfni", (11, 8)),
    ("vaes", (11, 9)),
    ("vpclmulqdq", (11, 10)),
    ("avx512_vnni", (11, 11)),
    ("avx512_bitalg", (11, 12)),
    ("tme", (11, 13)),
    ("avx512_vpopcntdq", (11, 14)),
    ("rdpid", (11, 22)),
    ("clzero", (13, 0)),
    ("avx512_4vnniw", (18, 2)),
    ("avx512_4fmaps", (18, 3)),
];

/// XSAVE state components: name, and the CPUID feature without which the
/// component is left out of the mask (CRIU's table).
const XFEATURES: [(&str, Feature); 11] = [
    ("x87", FPU),
    ("SSE", (0, 25)),
    ("AVX", (4, 28)),
    ("MPX bounds", (9, 14)),
    ("MPX CSR", (9, 14)),
    ("AVX-512 opmask", (9, 16)),
    ("AVX-512 ZMM_Hi256", (9, 16)),
    ("AVX-512 Hi16_ZMM", (9, 16)),
    ("Processor Trace", (9, 25)),
    ("PKRU", (11, 3)),
    ("HDC", (14, 13)),
];
/// x87, SSE, AVX, MPX, AVX-512, PKRU.
const XFEATURE_MASK_USER: u64 = 0x2ff;
/// CRIU 4.2's supervisor mask, as written there: PT's mask or'ed with
/// HDC's number (10), so it also clears SSE and MPX bounds.
const XFEATURE_MASK_SUPERVISOR_CRIU: u64 = (1 << 8) | 10;

/// One CPU as cpuinfo.img describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// 1 Intel, 2 AMD (the image's enum).
    pub vendor: i32,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    pub caps: [u32; NCAPINTS],
    pub model_id: String,
    pub xfeatures_mask: u64,
    pub xsave_size: u32,
    pub xsave_size_max: u32,
}

impl CpuInfo {
    pub fn has(&self, (w, b): Feature) -> bool {
        self.caps.get(w).is_some_and(|v| v & (1 << b) != 0)
    }

    fn set(&mut self, (w, b): Feature, on: bool) {
        if let Some(v) = self.caps.get_mut(w) {
            if on {
                *v |= 1 << b;
            } else {
                *v &= !(1 << b);
            }
        }
    }

    /// This CPU, read as compel reads it.
    pub fn host() -> Result<CpuInfo, Error> {
        let (level, b, c, d) = cpuid(0, 0);
        let vendor_id: Vec<u8> = [b, d, c].iter().flat_map(|r| r.to_le_bytes()).collect();
        let vendor = match vendor_id.as_slice() {
            b"GenuineIntel" => 1,
            b"AuthenticAMD" | b"HygonGenuine" => 2,
            other => {
                return Err(Error::unsupported(format!(
                    "CPU vendor {} (cpuinfo.img knows Intel and AMD)",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let mut c = CpuInfo {
            vendor,
            family: 4,
            model: 0,
            stepping: 0,
            caps: [0; NCAPINTS],
            model_id: String::new(),
            xfeatures_mask: 0,
            xsave_size: 0,
            xsave_size_max: 0,
        };
        c.read_leaves(level);
        c.fixups(level);
        c.read_xsave();
        Ok(c)
    }

    fn read_leaves(&mut self, level: u32) {
        let caps = &mut self.caps;
        if level >= 1 {
            let (a, _, ecx, edx) = cpuid(1, 0);
            self.family = (a >> 8) & 0xf;
            self.model = (a >> 4) & 0xf;
            self.stepping = a & 0xf;
            if self.family == 0xf {
                self.family += (a >> 20) & 0xff;
            }
            if self.family >= 6 {
                self.model += ((a >> 16) & 0xf) << 4;
            }
            caps[W_1_EDX] = edx;
            caps[W_1_ECX] = ecx;
        }
        if level >= 6 {
            caps[W_6_EAX] = cpuid(6, 0).0;
        }
        if level >= 7 {
            let (_, b, c, d) = cpuid(7, 0);
            caps[W_7_0_EBX] = b;
            caps[W_7_0_ECX] = c;
            caps[W_7_0_EDX] = d;
        }
        if level >= 0xd {
            caps[W_D_1_EAX] = cpuid(0xd, 1).0;
        }
        if level >= 0xf {
            caps[W_F_0_EDX] = cpuid(0xf, 0).3;
            if caps[W_F_0_EDX] & (1 << CQM_LLC.1) != 0 {
                caps[W_F_1_EDX] = cpuid(0xf, 1).3;
            }
        }
        let ext = cpuid(0x8000_0000, 0).0;
        if ext & 0xffff_0000 == 0x8000_0000 {
            if ext >= 0x8000_0001 {
                let (_, _, c, d) = cpuid(0x8000_0001, 0);
                caps[W_8000_0001_ECX] = c;
                caps[W_8000_0001_EDX] = d;
            }
            if ext >= 0x8000_0004 {
                let mut id = Vec::with_capacity(48);
                for leaf in 0x8000_0002..=0x8000_0004u32 {
                    let (a, b, c, d) = cpuid(leaf, 0);
                    for r in [a, b, c, d] {
                        id.extend_from_slice(&r.to_le_bytes());
                    }
                }
                let end = id.iter().position(|&b| b == 0).unwrap_or(id.len());
                let s = String::from_utf8_lossy(id.get(..end).unwrap_or_default());
                self.model_id = s.trim_start_matches(' ').to_string();
            }
            if ext >= 0x8000_0007 {
                caps[W_8000_0007_EBX] = cpuid(0x8000_0007, 0).1;
            }
            if ext >= 0x8000_000a {
                caps[W_8000_000A_EDX] = cpuid(0x8000_000a, 0).3;
            }
            if ext >= 0x8000_0008 {
                caps[W_8000_0008_EBX] = cpuid(0x8000_0008, 0).1;
            }
        }
    }

    /// compel's adjustments: Linux's own flags, and vendor quirks.
    fn fixups(&mut self, level: u32) {
        self.set((W_LNX_1, 25), true); // CPUID
        self.set((W_LNX_1, 20), true); // NOPL
        if level < 0xd {
            self.set(XSAVE, false);
        }
        let rep_good = (W_LNX_1, 16);
        match (self.vendor, self.family) {
            (1, 15) => {
                self.set(rep_good, false);
                self.set((W_7_0_EBX, 9), false); // ERMS
            }
            (1, 6) => self.set(rep_good, true),
            (2, f) => {
                self.set((W_1_EDX, 31), false);
                if f >= 0x10 {
                    self.set(rep_good, true);
                }
                if f == 0xf {
                    let l = cpuid(1, 0).0;
                    if (0x0f48..0x0f50).contains(&l) || l >= 0x0f58 {
                        self.set(rep_good, true);
                    }
                }
            }
            _ => {}
        }
    }

    fn read_xsave(&mut self) {
        if !self.has(FPU) || !self.has(XSAVE) {
            return;
        }
        let (a, b, c, d) = cpuid(0xd, 0);
        let mut mask = u64::from(a) | (u64::from(d) << 32);
        for (i, (_, f)) in XFEATURES.iter().enumerate() {
            if !self.has(*f) {
                mask &= !(1u64 << i);
            }
        }
        self.xfeatures_mask = mask & XFEATURE_MASK_USER & !XFEATURE_MASK_SUPERVISOR_CRIU;
        self.xsave_size = b;
        self.xsave_size_max = c;
    }

    /// The image entry, as CRIU's dump writes it.
    pub fn to_entry(&self) -> CpuinfoEntry {
        CpuinfoEntry {
            x86_entry: vec![CpuinfoX86Entry {
                vendor_id: if self.vendor == 1 {
                    cpuinfo_x86_entry_vendor::INTEL
                } else {
                    cpuinfo_x86_entry_vendor::AMD
                },
                cpu_family: self.family,
                model: self.model,
                stepping: self.stepping,
                capability_ver: 2,
                capability: self.caps.to_vec(),
                model_id: (!self.model_id.is_empty()).then(|| self.model_id.clone()),
                xfeatures_mask: Some(self.xfeatures_mask),
                xsave_size: Some(self.xsave_size),
                xsave_size_max: Some(self.xsave_size_max),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The image's CPU, checked as CRIU checks it; what an older image
    /// lacks is taken from `host`.
    pub fn from_entry(e: &CpuinfoEntry, host: &CpuInfo) -> Result<CpuInfo, String> {
        let [x] = e.x86_entry.as_slice() else {
            return Err(format!(
                "it holds {} x86 entries, not one",
                e.x86_entry.len()
            ));
        };
        if x.vendor_id != cpuinfo_x86_entry_vendor::INTEL
            && x.vendor_id != cpuinfo_x86_entry_vendor::AMD
        {
            return Err(format!("unknown CPU vendor {}", x.vendor_id));
        }
        let want = match x.capability_ver {
            1 => NCAPINTS_V1,
            2 => NCAPINTS,
            v => return Err(format!("unknown capability version {v}")),
        };
        if x.capability.len() != want {
            return Err(format!(
                "{} capability words, {want} expected for version {}",
                x.capability.len(),
                x.capability_ver
            ));
        }
        let mut caps = host.caps;
        for (d, s) in caps.iter_mut().zip(&x.capability) {
            *d = *s;
        }
        Ok(CpuInfo {
            vendor: x.vendor_id,
            family: x.cpu_family,
            model: x.model,
            stepping: x.stepping,
            caps,
            model_id: x.model_id.clone().unwrap_or_default(),
            xfeatures_mask: x.xfeatures_mask.unwrap_or(host.xfeatures_mask),
            xsave_size: x.xsave_size.unwrap_or(host.xsave_size),
            xsave_size_max: x.xsave_size_max.unwrap_or(host.xsave_size_max),
        })
    }
}

/// What the image's CPU has that `host` lacks, under the checks of
/// `caps`: one line each. Empty: the set may be restored here.
pub fn mismatches(img: &CpuInfo, host: &CpuInfo, caps: u32) -> Vec<String> {
    let mut out = Vec::new();
    if caps & CAP_FPU != 0 {
        for (name, f) in [
            ("fpu", FPU),
            ("fxsr", FXSR),
            ("osxsave", OSXSAVE),
            ("xsaves", XSAVES),
        ] {
            if img.has(f) && !host.has(f) {
                out.push(format!("FPU feature {name}"));
            }
        }
        let m = img.xfeatures_mask & !host.xfeatures_mask;
        for (i, (name, _)) in XFEATURES.iter().enumerate() {
            if m & (1 << i) != 0 {
                out.push(format!("xsave component {i} ({name})"));
            }
        }
        if m >> XFEATURES.len() != 0 {
            out.push(format!("xsave components {m:#x}"));
        }
        if img.xsave_size != host.xsave_size {
            out.push(format!(
                "xsave area of {} bytes (this CPU's is {})",
                img.xsave_size, host.xsave_size
            ));
        }
        if img.xsave_size_max != host.xsave_size_max {
            out.push(format!(
                "largest xsave area of {} bytes (this CPU's is {})",
                img.xsave_size_max, host.xsave_size_max
            ));
        }
    }
    if caps & CAP_INS != 0 {
        for (name, f) in INS_FEATURES {
            if img.has(*f) && !host.has(*f) {
                out.push(format!("instructions {name}"));
            }
        }
    }
    if caps & CAP_CPU != 0 {
        for (i, (a, b)) in img.caps.iter().zip(&host.caps).enumerate() {
            if a != b {
                out.push(format!(
                    "capability word {i} ({}): {a:#010x}, this CPU {b:#010x}",
                    WORD_NAMES.get(i).copied().unwrap_or("?")
                ));
            }
        }
    }
    out
}

/// The checks `cpuinfo check` makes: those of `--cpu-cap`, or every one
/// when it says none (CRIU's rule).
pub fn check_caps(caps: u32) -> u32 {
    if caps == CAP_NONE {
        CAP_ALL
    } else {
        caps
    }
}

/// Write `dir/cpuinfo.img` for this CPU.
pub fn dump(dir: &Path) -> Result<(), Error> {
    let host = CpuInfo::host()?;
    crate::util::write_image(dir, ImageType::Cpuinfo, 0, &[host.to_entry()])
}

/// Check `dir/cpuinfo.img` against this CPU with the checks of `caps`;
/// the error names everything missing.
pub fn check(dir: &Path, caps: u32) -> Result<(), Error> {
    let host = CpuInfo::host()?;
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    };
    let entries: Vec<CpuinfoEntry> = crate::util::read_image(dir, ImageType::Cpuinfo, 0)?;
    let Some(e) = entries.first() else {
        return Err(bad("cpuinfo.img is empty (no cpuinfo image)".into()));
    };
    let img = CpuInfo::from_entry(e, &host).map_err(|w| bad(format!("cpuinfo.img: {w}")))?;
    let missing = mismatches(&img, &host, caps);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::refused(
        crate::ErrorKind::Unsupported,
        format!(
            "the image set was dumped on a CPU ({}) with what this one ({}) lacks: {}; restore it on such a CPU, or pass --cpu-cap=none to skip the check",
            describe(&img),
            describe(&host),
            missing.join(", ")
        ),
    ))
}

fn describe(c: &CpuInfo) -> String {
    let name = if c.model_id.is_empty() {
        if c.vendor == 1 {
            "Intel"
        } else {
            "AMD"
        }
    } else {
        c.model_id.as_str()
    };
    format!(
        "{name}, family {} model {} stepping {}",
        c.family, c.model, c.stepping
    )
}

/// Parse `--cpu-cap[=CAPS]` as CRIU does, starting from `cur` (the
/// default, or what earlier occurrences made): no argument is everything
/// (and the image); words `fpu`, `cpu`, `ins`, `all`, `none` add their
/// checks, `^` before a word takes it away (`^none` is everything), a
/// comma ends a `^`; any check at all also turns the image on.
pub fn parse_cap(cur: u32, arg: Option<&str>) -> Result<u32, String> {
    let Some(arg) = arg else {
        return Ok(cur | CAP_ALL | CAP_IMAGE);
    };
    let mut caps = cur;
    let mut inverse = false;
    let mut rest = arg;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('^') {
            inverse = !inverse;
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix(',') {
            inverse = false;
            rest = r;
            continue;
        }
        let (bits, len) = if rest.starts_with("fpu") {
            (CAP_FPU, 3)
        } else if rest.starts_with("all") {
            (CAP_ALL, 3)
        } else if rest.starts_with("none") {
            caps = if inverse { CAP_ALL } else { CAP_NONE };
            rest = rest.get(4..).unwrap_or_default();
            continue;
        } else if rest.starts_with("cpu") {
            (CAP_CPU, 3)
        } else if rest.starts_with("ins") {
            (CAP_INS, 3)
        } else {
            return Err(format!(
                "unknown capability at '{rest}'; want cpu, fpu, ins, all or none"
            ));
        };
        if inverse {
            caps &= !bits;
        } else {
            caps |= bits;
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    if caps != CAP_NONE {
        caps |= CAP_IMAGE;
    }
    Ok(caps)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn cpu() -> CpuInfo {
        let mut c = CpuInfo {
            vendor: 1,
            family: 6,
            model: 0x55,
            stepping: 4,
            caps: [0; NCAPINTS],
            model_id: "Test CPU".into(),
            xfeatures_mask: 0xe5,
            xsave_size: 2688,
            xsave_size_max: 2696,
        };
        for f in [FPU, FXSR, OSXSAVE, (4, 28), (9, 5)] {
            c.set(f, true);
        }
        c
    }

    #[test]
    fn parse_cap_is_criu_s() {
        assert_eq!(parse_cap(CAP_DEFAULT, None), Ok(CAP_ALL | CAP_IMAGE));
        // Words add to what was there (the default's FPU|INS stays).
        assert_eq!(
            parse_cap(CAP_DEFAULT, Some("fpu")),
            Ok(CAP_FPU | CAP_INS | CAP_IMAGE)
        );
        assert_eq!(parse_cap(CAP_DEFAULT, Some("cpu")), Ok(CAP_ALL | CAP_IMAGE));
        assert_eq!(
            parse_cap(CAP_DEFAULT, Some("^ins")),
            Ok(CAP_FPU | CAP_IMAGE)
        );
        assert_eq!(parse_cap(CAP_DEFAULT, Some("none")), Ok(CAP_NONE));
        assert_eq!(
            parse_cap(CAP_DEFAULT, Some("^none")),
            Ok(CAP_ALL | CAP_IMAGE)
        );
        assert_eq!(
            parse_cap(CAP_DEFAULT, Some("none,ins")),
            Ok(CAP_INS | CAP_IMAGE)
        );
        assert_eq!(parse_cap(CAP_DEFAULT, Some("^fpu,^ins")), Ok(CAP_NONE));
        assert!(parse_cap(CAP_DEFAULT, Some("avx")).is_err());
    }

    #[test]
    fn same_cpu_passes_every_check() {
        let c = cpu();
        assert!(mismatches(&c, &c, CAP_ALL).is_empty());
    }

    #[test]
    fn missing_features_are_named() {
        let host = cpu();
        let mut img = cpu();
        img.set((9, 16), true); // avx512f
        img.set((18, 2), true); // avx512_4vnniw
        img.xfeatures_mask |= 0xe0;
        img.xfeatures_mask |= 1 << 9;
        let m = mismatches(&img, &host, CAP_DEFAULT);
        let all = m.join("; ");
        assert!(all.contains("instructions avx512f"), "{all}");
        assert!(all.contains("instructions avx512_4vnniw"), "{all}");
        assert!(all.contains("xsave component 9 (PKRU)"), "{all}");
        // Only FPU: instructions are not looked at.
        let f = mismatches(&img, &host, CAP_FPU).join("; ");
        assert!(!f.contains("avx512f") && f.contains("PKRU"), "{f}");
        // None: nothing is checked.
        assert!(mismatches(&img, &host, CAP_NONE).is_empty());
        // A CPU with more than the image's is fine, except in strict mode.
        assert!(mismatches(&host, &img, CAP_DEFAULT).is_empty());
        assert!(!mismatches(&host, &img, CAP_CPU).is_empty());
    }

    #[test]
    fn xsave_sizes_must_match_under_fpu() {
        let host = cpu();
        let mut img = cpu();
        img.xsave_size = 832;
        let m = mismatches(&img, &host, CAP_FPU).join("; ");
        assert!(m.contains("xsave area of 832 bytes"), "{m}");
        assert!(mismatches(&img, &host, CAP_INS).is_empty());
    }

    #[test]
    fn entry_round_trip_and_old_versions() {
        let c = cpu();
        let e = c.to_entry();
        assert_eq!(CpuInfo::from_entry(&e, &c).unwrap(), c);
        let mut old = e.clone();
        old.x86_entry[0].capability_ver = 1;
        old.x86_entry[0].capability.truncate(NCAPINTS_V1);
        old.x86_entry[0].xsave_size = None;
        let back = CpuInfo::from_entry(&old, &c).unwrap();
        assert_eq!(back.caps, c.caps);
        assert_eq!(back.xsave_size, c.xsave_size);
        let mut bad = e.clone();
        bad.x86_entry[0].capability.pop();
        assert!(CpuInfo::from_entry(&bad, &c).is_err());
        let mut bad = e;
        bad.x86_entry[0].vendor_id = 0;
        assert!(CpuInfo::from_entry(&bad, &c).is_err());
    }

    #[test]
    fn host_reads_as_criu_does() {
        let h = CpuInfo::host().unwrap();
        assert!(h.has(FPU));
        assert!(h.has((W_LNX_1, 25)) && h.has((W_LNX_1, 20)));
        // CRIU's supervisor mask also clears SSE.
        assert_eq!(h.xfeatures_mask & 2, 0);
        assert!(mismatches(&h, &h, CAP_ALL).is_empty());
    }
}
