//! Support for tests that need privileges (root, CAP_NET_ADMIN, iptables,
//! nft, criu's crit...). Not part of crust's API.
//!
//! Locally such a test may skip: it says why and passes. In CI it must
//! not, or a test that never ran would count as passed: .ci/run sets
//! `CRUST_REQUIRE_PRIVILEGED=1`, and then every skip is a failure that
//! names the test and what it lacked.
//!
//! ```ignore
//! #[test]
//! fn locks_with_iptables() {
//!     if !crust_sys::testing::require_root("locks_with_iptables") {
//!         return;
//!     }
//!     ...
//! }
//! ```

// Failing the test is the point of `skip` under CI.
#![allow(clippy::panic)]

/// The environment variable that turns skips into failures.
pub const REQUIRE_PRIVILEGED: &str = "CRUST_REQUIRE_PRIVILEGED";

/// Whether skipping is forbidden (`CRUST_REQUIRE_PRIVILEGED` set, not "0").
pub fn skipping_forbidden() -> bool {
    std::env::var_os(REQUIRE_PRIVILEGED).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `true` if the caller runs as root. Otherwise the test `test` cannot run:
/// [`skip`] it (returns `false`, or panics under CI).
pub fn require_root(test: &str) -> bool {
    is_root() || skip(test, "it needs root")
}

/// Test `test` cannot run here because of `why`. Returns `false` (the test
/// should return, passing) after saying so on stderr, or panics with that
/// message when `CRUST_REQUIRE_PRIVILEGED` is set.
pub fn skip(test: &str, why: &str) -> bool {
    if skipping_forbidden() {
        panic!(
            "{test} cannot run: {why}. {REQUIRE_PRIVILEGED} is set, so this is a failure, \
             not a skip: run the tests as root on a machine with the tools .ci/run installs, \
             or unset {REQUIRE_PRIVILEGED} to let them skip"
        );
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// The name of the running test: libtest names each test's thread after
/// it ("module::test"); "test" when that is not available.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_string()
}
