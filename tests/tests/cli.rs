//! `splitvisor run` with wrong input: every mistake ends with a non-zero
//! status and a message naming it, before any guest runs, and nothing
//! panics.
//!
//! Exit statuses (`splitvisor run --help`): 1 for an error before the VM
//! starts (a missing or bad file), 2 for wrong usage (clap).

use std::path::PathBuf;
use std::time::Duration;

use tests::{run, Guest, Harness, OrFail, Run};

/// splitvisor checks its input before starting anything; this is only a
/// guard (it includes a no-op build of the monitor).
const LIMIT: Duration = Duration::from_secs(240);
const EXIT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn splitvisor(args: &[&std::ffi::OsStr]) -> Run {
    let mut cmd = harness().splitvisor_command(args).or_fail();
    run(&mut cmd, LIMIT, None).or_fail()
}

fn hello() -> PathBuf {
    harness().guest_elf(Guest::Hello).or_fail()
}

/// The lines of standard error that report an error (not the log's
/// `info`/`debug` lines about what splitvisor did first).
fn error_lines(result: &Run) -> Vec<&str> {
    result.stderr.lines().filter(|line| line.to_lowercase().contains("error")).collect()
}

/// Status 1 and exactly one error line, which names `what`; no guest ran.
fn assert_one_error_line(result: &Run, what: &str) {
    assert_eq!(result.code(), Some(EXIT_ERROR), "wrong exit status\n{}", result.describe());
    let errors = error_lines(result);
    assert_eq!(errors.len(), 1, "expected one error line, got {errors:#?}\n{}", result.describe());
    assert!(errors[0].contains(what), "the error line does not name {what:?}\n{}", result.describe());
    assert_no_panic_no_guest(result);
}

fn assert_no_panic_no_guest(result: &Run) {
    assert!(!result.stderr.contains("panicked"), "splitvisor panicked\n{}", result.describe());
    assert!(!result.stdout.contains("RESULT:"), "a guest ran\n{}", result.describe());
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn missing_kernel_file_is_one_clear_error() {
    let scratch = harness().scratch().or_fail();
    let missing = scratch.join("no-such-guest.elf");
    let result =
        splitvisor(&[os("run"), os("--timeout"), os("10"), os("--no-reboot"), os("--kernel"), missing.as_os_str()]);
    assert_one_error_line(&result, &missing.display().to_string());
}

#[test]
fn kernel_option_without_a_path_is_a_usage_error() {
    // `run` without --kernel boots the default Linux guest; --kernel with
    // nothing after it is a usage error.
    let result = splitvisor(&[os("run"), os("--timeout"), os("10"), os("--kernel")]);
    assert_eq!(result.code(), Some(EXIT_USAGE), "{}", result.describe());
    assert!(result.stderr.contains("--kernel"), "the message does not name --kernel\n{}", result.describe());
    assert_no_panic_no_guest(&result);
}

#[test]
fn invalid_smp_values_are_usage_errors() {
    let kernel = hello();
    // 0 vCPUs, more than GICv2's 8 CPU interfaces, and not numbers at all
    // (given as `--smp=VALUE`, so that "-1" is not taken for an option).
    for value in ["0", "9", "two", "-1", ""] {
        let smp = format!("--smp={value}");
        let result = splitvisor(&[os("run"), os("--kernel"), kernel.as_os_str(), os(&smp)]);
        assert_eq!(result.code(), Some(EXIT_USAGE), "--smp {value:?}\n{}", result.describe());
        let first = result.stderr.lines().next().unwrap_or_default();
        assert!(first.contains("--smp"), "--smp {value:?}: the first line does not name --smp\n{}", result.describe());
        assert_no_panic_no_guest(&result);
    }
}

#[test]
fn bogus_dtb_files_are_one_clear_error() {
    let harness = harness();
    let scratch = harness.scratch().or_fail();
    let kernel = hello();

    let garbage = scratch.join("garbage.dtb");
    std::fs::write(&garbage, b"this is not a flattened device tree\n".repeat(64))
        .unwrap_or_else(|err| panic!("{}: {err}", garbage.display()));

    // A real tree cut in half: the right magic, a size that lies.
    let whole = scratch.join("whole.dtb");
    let mut cmd = harness.splitvisor_command(["dtb", "--kernel"]).or_fail();
    cmd.arg(&kernel).arg("-o").arg(&whole);
    let made = run(&mut cmd, LIMIT, None).or_fail();
    assert_eq!(made.code(), Some(0), "splitvisor dtb failed\n{}", made.describe());
    let blob = std::fs::read(&whole).unwrap_or_else(|err| panic!("{}: {err}", whole.display()));
    let truncated = scratch.join("truncated.dtb");
    std::fs::write(&truncated, &blob[..blob.len() / 2]).unwrap_or_else(|err| panic!("{}: {err}", truncated.display()));

    let absent = scratch.join("no-such.dtb");
    for dtb in [&garbage, &truncated, &absent] {
        let result = splitvisor(&[
            os("run"),
            os("--timeout"),
            os("10"),
            os("--no-reboot"),
            os("--kernel"),
            kernel.as_os_str(),
            os("--dtb"),
            dtb.as_os_str(),
        ]);
        assert_one_error_line(&result, &dtb.display().to_string());
    }
}
