//! CPU facts needed to lay out the XSAVE area.

/// Offset and size of one XSAVE state component in the standard
/// (non-compacted) format, as CPUID leaf 0xD sub-leaf `n` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XsaveComponent {
    pub offset: u32,
    pub size: u32,
}

/// CPUID leaf/sub-leaf query: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Where XSAVE component `n` (2 = AVX, 5 = opmask, 6 = ZMM_Hi256,
/// 7 = Hi16_ZMM, 9 = PKRU, 11 = CET user) sits in the standard format.
/// `None` when the CPU does not support it.
pub fn xsave_component(n: u32) -> Option<XsaveComponent> {
    let (eax, _, _, edx) = cpuid(0xd, 0);
    let supported = (u64::from(edx) << 32) | u64::from(eax);
    let (ecx1_eax, _, ecx1_ecx, ecx1_edx) = cpuid(0xd, 1);
    let _ = ecx1_eax;
    let supervisor = (u64::from(ecx1_edx) << 32) | u64::from(ecx1_ecx);
    if (supported | supervisor) & (1u64 << n) == 0 {
        return None;
    }
    let (size, offset, _, _) = cpuid(0xd, n);
    if size == 0 {
        return None;
    }
    Some(XsaveComponent { offset, size })
}

/// User xfeatures the CPU supports (XCR0 bits reported by CPUID 0xD.0).
pub fn xfeatures_supported() -> u64 {
    let (eax, _, _, edx) = cpuid(0xd, 0);
    (u64::from(edx) << 32) | u64::from(eax)
}

/// Size of the user-visible XSAVE area for all enabled features.
pub fn xsave_size() -> u32 {
    let (_, ebx, _, _) = cpuid(0xd, 0);
    ebx.max(512 + 64)
}
