//! Messages of CRIU's `apparmor.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `aa_policy`
    AaPolicy = "aa_policy" {
        1 name: required Str,
        2 blob: required Bytes,
    }
    /// message `aa_namespace`
    AaNamespace = "aa_namespace" {
        1 name: required Str,
        2 policies: repeated Msg<AaPolicy>,
        3 namespaces: repeated Msg<AaNamespace>,
    }
    /// message `apparmor_entry`
    ApparmorEntry = "apparmor_entry" {
        1 namespaces: repeated Msg<AaNamespace>,
    }
}
