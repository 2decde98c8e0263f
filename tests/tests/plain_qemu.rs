//! The test guests under plain `qemu-system-arm -M virt -cpu cortex-a15`,
//! without splitvisor: the guests themselves must be right before they can
//! judge a hypervisor.
//!
//! QEMU gives an ELF linked near the base of RAM no device tree, so the ELF
//! runs report `NO-DTB` (through semihosting) and do every check that needs
//! no tree. The same guests linked at 0x4001_0000 and given as raw images
//! are entered like Linux, with QEMU's device tree in r2, and must pass
//! completely. These tests fail, never skip, without `qemu-system-arm`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::output::{abort_core_lines, abort_pass_lines, hello_pass_lines};
use tests::qemu::{self, qemu_system_arm};
use tests::{run, End, Expect, Guest, GuestOutput, Harness, OrFail, Run};

/// Far more than the second a guest needs.
const LIMIT: Duration = Duration::from_secs(60);
/// QEMU `virt` without the Virtualization Extensions: the guest starts in
/// SVC mode and QEMU answers PSCI calls made with HVC itself.
const VIRT: &str = "virt";

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn qemu() -> PathBuf {
    qemu_system_arm().or_fail()
}

fn run_plain(machine: &str, kernel: &Path, semihosting: bool, stop_at: Option<&str>) -> Run {
    run(&mut qemu::plain(&qemu(), machine, kernel, semihosting), LIMIT, stop_at).or_fail()
}

/// Asserts every expectation holds and no check failed.
fn assert_report(result: &Run, expected: &[Expect<'_>]) {
    let text = result.combined();
    let out = GuestOutput::new(&text);
    let missing = out.missing(expected);
    assert!(missing.is_empty(), "missing from the guest's output: {missing:#?}\n{}", result.describe());
    assert!(out.failures().is_empty(), "the guest reported failures\n{}", result.describe());
}

fn assert_psci_version_at_least_0_2(result: &Run) {
    let text = result.combined();
    let version = GuestOutput::new(&text).psci_version();
    assert!(
        version.is_some_and(|v| v & (1 << 31) == 0 && v >= 2),
        "PSCI version {version:x?} is not at least 0.2\n{}",
        result.describe()
    );
}

/// QEMU exited by itself with status 0: after SYSTEM_OFF, or after
/// SYSTEM_RESET with `-no-reboot`.
fn assert_exited_cleanly(result: &Run) {
    assert_eq!(result.code(), Some(0), "QEMU did not exit cleanly\n{}", result.describe());
}

#[test]
fn hello_elf_without_device_tree_reports_no_dtb_and_passes_the_rest() {
    let result = run_plain(VIRT, &harness().guest_elf(Guest::Hello).or_fail(), true, None);
    assert_exited_cleanly(&result);
    assert_report(
        &result,
        &[
            Expect::Prefix("hello: boot r0=0x00000000 r1=0x00000000 r2=0x00000000 cpsr=0x"),
            Expect::Exact("NO-DTB: no device tree at r2 (r2 is 0); console is semihosting"),
            Expect::Prefix("PASS: mode SVC 0x13 (CPSR 0x"),
            Expect::Exact("PASS: boot register r0=0x00000000 (want 0)"),
            Expect::Prefix("PASS: PSCI_VERSION "),
            Expect::Exact("PASS: PSCI function 0x840000ff -> NOT_SUPPORTED (-1) (want NOT_SUPPORTED (-1))"),
            Expect::Exact("RESULT: NO-DTB hello"),
            Expect::Exact("hello: SYSTEM_RESET"),
        ],
    );
    assert_psci_version_at_least_0_2(&result);
}

#[test]
fn abort_elf_without_device_tree_catches_its_data_abort() {
    let result = run_plain(VIRT, &harness().guest_elf(Guest::Abort).or_fail(), true, None);
    assert_exited_cleanly(&result);
    let mut expected = abort_core_lines();
    expected.extend([
        Expect::Exact("NO-DTB: no device tree at r2 (r2 is 0); console is semihosting"),
        Expect::Prefix("PASS: mode SVC 0x13 (CPSR 0x"),
        Expect::Exact("RESULT: NO-DTB abort"),
        Expect::Exact("abort: SYSTEM_RESET"),
    ]);
    assert_report(&result, &expected);
}

#[test]
fn hello_raw_image_with_qemu_device_tree_passes() {
    let result = run_plain(VIRT, &harness().guest_raw(Guest::Hello).or_fail(), false, None);
    assert_exited_cleanly(&result);
    assert_report(&result, &hello_pass_lines(" holds the guest image 0x40010000.."));
    assert_psci_version_at_least_0_2(&result);
    // The console is the PL011 now, not semihosting (standard error).
    assert!(result.stdout.contains("RESULT: PASS hello"), "{}", result.describe());
}

#[test]
fn abort_raw_image_with_qemu_device_tree_passes() {
    let result = run_plain(VIRT, &harness().guest_raw(Guest::Abort).or_fail(), false, None);
    assert_exited_cleanly(&result);
    assert_report(&result, &abort_pass_lines());
    assert!(result.stdout.contains("RESULT: PASS abort"), "{}", result.describe());
}

/// The mode check can fail: QEMU with the Virtualization Extensions enters
/// an ELF in Hyp mode, which no guest of a hypervisor may see.
#[test]
fn hello_started_in_hyp_mode_fails_its_mode_check() {
    let halting = "hello: halting: PSCI is out of reach";
    let result = run_plain("virt,virtualization=on", &harness().guest_elf(Guest::Hello).or_fail(), true, Some(halting));
    assert_eq!(result.end, End::Stopped, "the guest did not stop as expected\n{}", result.describe());
    let text = result.combined();
    let out = GuestOutput::new(&text);
    let missing = out.missing(&[
        Expect::Prefix("FAIL: mode HYP 0x1a (CPSR 0x"),
        Expect::Exact("RESULT: FAIL hello (1 failed)"),
        Expect::Exact(halting),
    ]);
    assert!(missing.is_empty(), "missing: {missing:#?}\n{}", result.describe());
    assert!(
        out.find(Expect::Prefix("PASS: PSCI_VERSION")).is_none(),
        "the guest made PSCI calls from Hyp mode\n{}",
        result.describe()
    );
}

/// With neither a device tree nor semihosting the guests have no console:
/// they print nothing (their semihosting call lands on their own vector)
/// and end with SYSTEM_RESET, which `-no-reboot` turns into QEMU's exit.
#[test]
fn guests_without_any_console_print_nothing_and_reset() {
    for guest in Guest::ALL {
        let result = run_plain(VIRT, &harness().guest_elf(guest).or_fail(), false, None);
        assert_exited_cleanly(&result);
        let text = result.combined();
        for marker in ["PASS", "FAIL", "NO-DTB", "RESULT", guest.name()] {
            assert!(
                !text.contains(marker),
                "{} printed {marker:?} without a console\n{}",
                guest.name(),
                result.describe()
            );
        }
    }
}
