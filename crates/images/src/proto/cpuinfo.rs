//! Messages of CRIU's `cpuinfo.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `vendor` nested in `cpuinfo_x86_entry`
    cpuinfo_x86_entry_vendor {
        UNKNOWN = 0,
        INTEL = 1,
        AMD = 2,
    }
    /// enum `endianness` nested in `cpuinfo_ppc64_entry`
    cpuinfo_ppc64_entry_endianness {
        BIGENDIAN = 0,
        LITTLEENDIAN = 1,
    }
}

crate::message! {
    /// message `cpuinfo_x86_entry`
    CpuinfoX86Entry = "cpuinfo_x86_entry" {
        /// enum [`cpuinfo_x86_entry_vendor`]
        1 vendor_id: required EnumOf<cpuinfo_x86_entry_vendor::Names>,
        2 cpu_family: required Uint32,
        3 model: required Uint32,
        4 stepping: required Uint32,
        5 capability_ver: required Uint32,
        6 capability: repeated Uint32,
        7 model_id: optional Str,
        8 xfeatures_mask: optional Uint64,
        9 xsave_size: optional Uint32,
        10 xsave_size_max: optional Uint32,
    }
    /// message `cpuinfo_ppc64_entry`
    CpuinfoPpc64Entry = "cpuinfo_ppc64_entry" {
        /// enum [`cpuinfo_ppc64_entry_endianness`]
        1 endian: required EnumOf<cpuinfo_ppc64_entry_endianness::Names>,
        2 hwcap: repeated Uint64,
    }
    /// message `cpuinfo_s390_entry`
    CpuinfoS390Entry = "cpuinfo_s390_entry" {
        2 hwcap: repeated Uint64,
    }
    /// message `cpuinfo_entry`
    CpuinfoEntry = "cpuinfo_entry" {
        1 x86_entry: repeated Msg<CpuinfoX86Entry>,
        2 ppc64_entry: repeated Msg<CpuinfoPpc64Entry>,
        3 s390_entry: repeated Msg<CpuinfoS390Entry>,
    }
}
