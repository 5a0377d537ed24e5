//! Messages of CRIU's `sysctl.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `SysctlType`
    SysctlType {
        CTL_STR = 5,
        CTL_32 = 6,
    }
}

crate::message! {
    /// message `sysctl_entry`
    SysctlEntry = "sysctl_entry" {
        /// enum [`SysctlType`]
        1 r#type: required EnumOf<SysctlType::Names>,
        2 iarg: optional Int32,
        3 sarg: optional Str,
    }
}
