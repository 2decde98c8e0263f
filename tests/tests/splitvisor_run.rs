//! The test guests under `splitvisor run`: the "done when".
//!
//! Each run is `splitvisor run --kernel <guest ELF> --timeout 60
//! --no-reboot`: `--no-reboot` because a guest that finds something wrong
//! resets, and splitvisor would otherwise restart it until the time-out;
//! with it, a failing guest ends at once with status 3. The guest's console
//! is splitvisor's standard output, so its report is read from there.
//!
//! `splitvisor` is package `loader`, built by the harness in its own target
//! directory (see `tests::artifacts`): `CARGO_BIN_EXE_*` exists only for a
//! package's own binaries, and `cargo run` from a test would contend for
//! the target directory the running `cargo test` holds.

use std::path::Path;
use std::time::Duration;

use tests::output::{abort_pass_lines, hello_pass_lines};
use tests::qemu::{self, qemu_system_arm};
use tests::{run, Expect, Guest, GuestOutput, Harness, OrFail, Run};

/// The guest's own time limit, as `--timeout`.
const GUEST_TIMEOUT_SECS: &str = "60";
/// The harness's limit: the guest's, plus splitvisor's start-up (a no-op
/// monitor build), with room to spare.
const LIMIT: Duration = Duration::from_secs(240);
/// Passed with `--cmdline`: the guest prints the `/chosen/bootargs` it finds.
const CMDLINE: &str = "splitvisor-test console=ttyAMA0";
/// splitvisor's exit status when the guest resets under `--no-reboot`.
const EXIT_RESET: i32 = 3;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn splitvisor_run(guest: Guest, extra: &[&str]) -> Run {
    // splitvisor starts qemu-system-arm: fail with the install hint first.
    qemu_system_arm().or_fail();
    let harness = harness();
    let kernel = harness.guest_elf(guest).or_fail();
    harness.monitor().or_fail();
    let mut cmd =
        harness.splitvisor_command(["run", "--timeout", GUEST_TIMEOUT_SECS, "--no-reboot", "--kernel"]).or_fail();
    cmd.arg(&kernel).args(extra);
    run(&mut cmd, LIMIT, None).or_fail()
}

/// The guest's report on standard output holds every expectation and no
/// failure, nothing panicked, and splitvisor exited 0 (SYSTEM_OFF).
fn assert_guest_passed(result: &Run, expected: &[Expect<'_>]) {
    let out = GuestOutput::new(&result.stdout);
    let missing = out.missing(expected);
    assert!(missing.is_empty(), "missing from the guest's console: {missing:#?}\n{}", result.describe());
    assert!(out.failures().is_empty(), "the guest reported failures\n{}", result.describe());
    assert!(out.find(Expect::Prefix("NO-DTB")).is_none(), "the guest got no device tree\n{}", result.describe());
    assert!(!result.stderr.contains("panicked"), "something panicked\n{}", result.describe());
    assert_eq!(result.code(), Some(0), "splitvisor did not exit 0 (SYSTEM_OFF)\n{}", result.describe());
}

#[test]
fn hello_sees_pl1_a_device_tree_and_psci_then_powers_off() {
    let result = splitvisor_run(Guest::Hello, &["--cmdline", CMDLINE]);
    let mut expected = hello_pass_lines(" holds the guest image 0x40008000..");
    expected.push(Expect::Exact("hello: bootargs \"splitvisor-test console=ttyAMA0\""));
    assert_guest_passed(&result, &expected);
    let version = GuestOutput::new(&result.stdout).psci_version();
    assert!(
        version.is_some_and(|v| v & (1 << 31) == 0 && v >= 2),
        "PSCI version {version:x?} is not at least 0.2\n{}",
        result.describe()
    );
}

#[test]
fn abort_gets_a_data_abort_for_an_address_the_vm_does_not_own() {
    let result = splitvisor_run(Guest::Abort, &[]);
    assert_guest_passed(&result, &abort_pass_lines());
}

/// The message path is real: with `--log-level debug` the monitor's log
/// shows the guest's bogus PSCI call as a trap message to the vCPU server,
/// and that server's reply setting r0 to NOT_SUPPORTED.
#[test]
fn a_psci_call_travels_as_a_message_to_the_vcpu_server_and_back() {
    let result = splitvisor_run(Guest::Hello, &["--log-level", "debug"]);
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    let bogus = [format!("{}", 0x8400_00ffu32), "0x840000ff".to_string()];
    let lines: Vec<&str> = result.stderr.lines().collect();
    let call = lines.iter().position(|line| {
        line.contains("-> vcpu") && line.contains("Hvc") && bogus.iter().any(|id| line.contains(id.as_str()))
    });
    let Some(call) = call else {
        panic!("no trap message for the HVC with function {:#x} in the log\n{}", 0x8400_00ffu32, result.describe());
    };
    let reply = lines.iter().skip(call + 1).find(|line| line.contains("<- vcpu"));
    let not_supported = ["4294967295", "0xffffffff", "-1"];
    assert!(
        reply.is_some_and(|line| line.contains("SetReg") && not_supported.iter().any(|v| line.contains(v))),
        "the vCPU server's reply to the bogus PSCI call does not set r0 to -1: {reply:?}\n{}",
        result.describe()
    );
}

/// A failing guest ends with SYSTEM_RESET, which `--no-reboot` turns into
/// status 3: here `hello` is given a device tree whose PSCI method is `smc`
/// (it calls PSCI with HVC, so its check of the method fails).
#[test]
fn a_failing_guest_resets_and_splitvisor_reports_it() {
    let harness = harness();
    let scratch = harness.scratch().or_fail();
    let kernel = harness.guest_elf(Guest::Hello).or_fail();
    let generated = scratch.join("splitvisor-hello.dtb");
    write_splitvisor_dtb(&harness, &kernel, &generated, &[]);
    let smc = scratch.join("splitvisor-hello-smc.dtb");
    let blob = std::fs::read(&generated).unwrap_or_else(|err| panic!("{}: {err}", generated.display()));
    std::fs::write(&smc, with_psci_method_smc(&blob)).unwrap_or_else(|err| panic!("{}: {err}", smc.display()));

    let mut dtb_arg = std::ffi::OsString::from("--dtb=");
    dtb_arg.push(&smc);
    let result = splitvisor_run(Guest::Hello, &[dtb_arg.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {smc:?}"))]);
    let out = GuestOutput::new(&result.stdout);
    let missing = out.missing(&[
        Expect::PrefixContaining("FAIL: ", " method smc (want hvc)"),
        Expect::Exact("RESULT: FAIL hello (1 failed)"),
        Expect::Exact("hello: SYSTEM_RESET"),
    ]);
    assert!(missing.is_empty(), "missing from the guest's console: {missing:#?}\n{}", result.describe());
    assert_eq!(result.code(), Some(EXIT_RESET), "a reset under --no-reboot must exit 3\n{}", result.describe());
}

/// The device tree `splitvisor dtb` generates is the one the guests get;
/// handed to plain QEMU with the raw guest images, it must satisfy them too
/// (QEMU rewrites only /memory and /chosen in it).
#[test]
fn guests_accept_the_splitvisor_device_tree_under_plain_qemu() {
    let harness = harness();
    let qemu = qemu_system_arm().or_fail();
    let scratch = harness.scratch().or_fail();
    let elf = harness.guest_elf(Guest::Hello).or_fail();
    let dtb = scratch.join("splitvisor-plain.dtb");
    write_splitvisor_dtb(&harness, &elf, &dtb, &["--cmdline", CMDLINE]);

    for (guest, mut expected) in
        [(Guest::Hello, hello_pass_lines(" holds the guest image 0x40010000..")), (Guest::Abort, abort_pass_lines())]
    {
        let raw = harness.guest_raw(guest).or_fail();
        let mut cmd = qemu::plain(&qemu, "virt", &raw, false);
        // QEMU sets /chosen/bootargs from -append, as for its own tree.
        cmd.arg("-dtb").arg(&dtb).args(["-append", CMDLINE]);
        let result = run(&mut cmd, Duration::from_secs(60), None).or_fail();
        if guest == Guest::Hello {
            expected.push(Expect::Exact("hello: bootargs \"splitvisor-test console=ttyAMA0\""));
        }
        let out = GuestOutput::new(&result.stdout);
        let missing = out.missing(&expected);
        assert!(missing.is_empty(), "missing from {}'s output: {missing:#?}\n{}", guest.name(), result.describe());
        assert!(out.failures().is_empty(), "{} reported failures\n{}", guest.name(), result.describe());
        assert_eq!(result.code(), Some(0), "{}", result.describe());
    }
}

/// `splitvisor dtb --kernel <kernel> -o <out> [extra]`.
fn write_splitvisor_dtb(harness: &Harness, kernel: &Path, out: &Path, extra: &[&str]) {
    let mut cmd = harness.splitvisor_command(["dtb", "--kernel"]).or_fail();
    cmd.arg(kernel).arg("-o").arg(out).args(extra);
    let result = run(&mut cmd, LIMIT, None).or_fail();
    assert_eq!(result.code(), Some(0), "splitvisor dtb failed\n{}", result.describe());
}

/// The blob with its one `method = "hvc"` value turned into `"smc"` (same
/// length, so nothing else moves).
fn with_psci_method_smc(blob: &[u8]) -> Vec<u8> {
    let needle = b"hvc\0";
    let at: Vec<usize> = blob.windows(needle.len()).enumerate().filter(|(_, w)| w == needle).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "expected exactly one \"hvc\" string in the generated device tree");
    let mut patched = blob.to_vec();
    patched[at[0]..at[0] + needle.len()].copy_from_slice(b"smc\0");
    patched
}

/// A guest's semihosting call must not reach the host: the SVC is an
/// ordinary exception on the guest's own vector (its run-time reports an
/// unexpected supervisor call and resets), the marker it tried to print
/// appears nowhere, and its SYS_EXIT_EXTENDED(0) does not end the run with
/// status 0.
#[test]
fn semihosting_from_the_guest_does_not_reach_the_host() {
    let result = splitvisor_run(Guest::Escape, &[]);
    for (stream, text) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
        assert!(
            !text.contains("ESCAPED-THROUGH-SEMIHOSTING"),
            "the guest's semihosting output reached the host's {stream}\n{}",
            result.describe()
        );
    }
    let out = GuestOutput::new(&result.stdout);
    assert!(
        out.failures().iter().any(|f| f.contains("unexpected supervisor call exception")),
        "the guest did not take its own SVC exception\n{}",
        result.describe()
    );
    assert_eq!(result.code(), Some(EXIT_RESET), "the guest's exit request was not refused\n{}", result.describe());
}

/// The monitor's `profile` build (`--features profile`) reports, with
/// `--stats`, the counter time of each part: the trap handler, each
/// server, idle waits, lock waits and UART writes. The normal build
/// reports none (its profiling compiles to nothing).
#[test]
fn the_profile_build_reports_where_the_hypervisor_time_goes() {
    qemu_system_arm().or_fail();
    let harness = harness();
    let kernel = harness.guest_elf(Guest::Smp).or_fail();
    let profiled = harness.profiled_monitor().or_fail();
    let mut cmd = harness
        .splitvisor_command(["run", "--timeout", GUEST_TIMEOUT_SECS, "--no-reboot", "--stats", "--smp", "2"])
        .or_fail();
    cmd.arg("--monitor").arg(&profiled).arg("--kernel").arg(&kernel);
    let result = run(&mut cmd, LIMIT, None).or_fail();
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS smp"), "{}", result.describe());
    let ticks = result.stats_section("ticks");
    let names: Vec<&str> = ticks.iter().map(|(n, _)| n.as_str()).collect();
    for part in ["hyp", "vcpu", "vgic", "vtimer", "idle", "lock", "uart"] {
        assert!(names.contains(&part), "no {part} in the ticks: {ticks:?}\n{}", result.describe());
    }
    let count = |part: &str| ticks.iter().find(|(n, _)| n == part).map_or(0, |(_, c)| *c);
    // Every trap runs the handler; the guest's console output goes to the
    // UART; its PSCI calls and its GIC accesses reach the vCPU and vGIC
    // servers.
    for part in ["hyp", "uart", "vcpu", "vgic"] {
        assert!(count(part) > 0, "{part}: no time counted: {ticks:?}");
    }
    // A server's time is spent inside the trap handler's.
    assert!(count("hyp") > count("vcpu") + count("vgic"), "{ticks:?}");

    harness.monitor().or_fail();
    let plain = splitvisor_run(Guest::Smp, &["--stats", "--smp", "2"]);
    assert_eq!(plain.code(), Some(0), "{}", plain.describe());
    assert!(plain.stats_section("ticks").is_empty(), "the normal build counted time\n{}", plain.describe());
    assert!(!plain.stats_section("traps by kind").is_empty(), "no --stats table\n{}", plain.describe());
}
