//! The test guests' shared library, unit-tested on the host: device-tree
//! discovery, CPSR modes, DFSR decoding, PSCI versions and return codes.
//!
//! `tests/guests` is a workspace of its own (its binaries exist only for
//! `armv7a-none-eabi`), so `cargo test` at the root does not reach its unit
//! tests by itself; this test runs them.

use std::time::Duration;

use tests::{run, Harness};

#[test]
fn guest_library_unit_tests_pass_on_the_host() {
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let result =
        run(&mut harness.guest_library_tests(), Duration::from_secs(900), None).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(result.code(), Some(0), "the guest library's unit tests failed\n{}", result.describe());
    let passed = result
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split_once(" passed").and_then(|(n, _)| n.parse::<u32>().ok()))
        .sum::<u32>();
    assert!(passed >= 10, "expected the guest library's unit tests to run, saw {passed}\n{}", result.describe());
}
