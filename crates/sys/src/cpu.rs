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

/// CPUID leaf 0xD (the XSAVE layout), sub-leaf `subleaf`. Sub-leaves 0
/// to 31 are asked of the CPU once per process and kept: they do not
/// change while it runs (XCR0 is set by the kernel at boot), and the XSAVE
/// area of every task dumped or restored needs several of them, each
/// CPUID a trap to the hypervisor in a virtual machine.
fn leaf_d(subleaf: u32) -> (u32, u32, u32, u32) {
    type Regs = (u32, u32, u32, u32);
    static LEAF_D: [std::sync::OnceLock<Regs>; 32] = [const { std::sync::OnceLock::new() }; 32];
    match LEAF_D.get(subleaf as usize) {
        Some(r) => *r.get_or_init(|| cpuid(0xd, subleaf)),
        None => cpuid(0xd, subleaf),
    }
}

/// Where XSAVE component `n` (2 = AVX, 5 = opmask, 6 = ZMM_Hi256,
/// 7 = Hi16_ZMM, 9 = PKRU, 11 = CET user) sits in the standard format.
/// `None` when the CPU does not support it.
pub fn xsave_component(n: u32) -> Option<XsaveComponent> {
    let (eax, _, _, edx) = leaf_d(0);
    let supported = (u64::from(edx) << 32) | u64::from(eax);
    let (ecx1_eax, _, ecx1_ecx, ecx1_edx) = leaf_d(1);
    let _ = ecx1_eax;
    let supervisor = (u64::from(ecx1_edx) << 32) | u64::from(ecx1_ecx);
    if (supported | supervisor) & (1u64 << n) == 0 {
        return None;
    }
    let (size, offset, _, _) = leaf_d(n);
    if size == 0 {
        return None;
    }
    Some(XsaveComponent { offset, size })
}

/// User xfeatures the CPU supports (XCR0 bits reported by CPUID 0xD.0).
pub fn xfeatures_supported() -> u64 {
    let (eax, _, _, edx) = leaf_d(0);
    (u64::from(edx) << 32) | u64::from(eax)
}

/// Size of the user-visible XSAVE area for all enabled features.
pub fn xsave_size() -> u32 {
    let (_, ebx, _, _) = leaf_d(0);
    ebx.max(512 + 64)
}
