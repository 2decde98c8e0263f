//! The console's read image seen from a guest: the `uart_image` guest loads
//! every register of its PL011 after each of its writes (and in loopback,
//! where data in the receive FIFO must withdraw the image), under
//! splitvisor with the image (the default) and with `--no-console-image`
//! (every access traps). Both runs pass the guest's own checks and load
//! the same values (the same digest), and with the image far fewer of
//! those loads trap.

use std::time::Duration;

use tests::output::boot_lines;
use tests::qemu::qemu_system_arm;
use tests::{run, Expect, Guest, GuestOutput, Harness, OrFail, Run};

const LIMIT: Duration = Duration::from_secs(240);

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn uart_image(extra: &[&str]) -> Run {
    qemu_system_arm().or_fail();
    let harness = harness();
    let kernel = harness.guest_elf(Guest::UartImage).or_fail();
    harness.monitor().or_fail();
    let mut cmd = harness
        .splitvisor_command(["--log-level", "warn", "run", "--timeout", "60", "--no-reboot", "--stats", "--kernel"])
        .or_fail();
    cmd.arg(&kernel).args(extra);
    let result = run(&mut cmd, LIMIT, None).or_fail();
    let out = GuestOutput::new(&result.stdout);
    let mut expected = boot_lines(Guest::UartImage);
    expected.push(Expect::Exact("RESULT: PASS uart_image"));
    let missing = out.missing(&expected);
    assert!(missing.is_empty(), "missing from the guest's console: {missing:#?}\n{}", result.describe());
    assert!(out.failures().is_empty(), "the guest reported failures\n{}", result.describe());
    assert!(!result.stderr.contains("panicked"), "something panicked\n{}", result.describe());
    assert_eq!(result.code(), Some(0), "splitvisor did not exit 0\n{}", result.describe());
    result
}

/// The guest's `uart_image: digest ... over N loads` line: (digest, loads).
fn digest(result: &Run) -> (String, u64) {
    let line = result
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("uart_image: digest "))
        .unwrap_or_else(|| panic!("no digest line\n{}", result.describe()));
    let (digest, loads) = line.split_once(" over ").unwrap_or_else(|| panic!("digest line {line:?}"));
    let loads = loads.trim_end_matches(" loads").parse().unwrap_or_else(|_| panic!("digest line {line:?}"));
    (digest.to_string(), loads)
}

/// The MMIO traps in `--stats`' table.
fn mmio_traps(result: &Run) -> u64 {
    let traps = result.stats_section("traps by kind");
    traps
        .iter()
        .find_map(|(name, count)| (name == "mmio").then_some(*count))
        .unwrap_or_else(|| panic!("no MMIO count in --stats' table\n{}", result.describe()))
}

#[test]
fn the_guest_reads_the_same_uart_with_and_without_the_read_image() {
    let imaged = uart_image(&[]);
    let trapped = uart_image(&["--no-console-image"]);
    let (with, loads) = digest(&imaged);
    let (without, loads_trapped) = digest(&trapped);
    assert_eq!(loads, loads_trapped, "the guest's loads differ in number");
    assert_eq!(with, without, "the guest loaded other values from the read image than through traps");
    // Without the image every load traps; with it, loads trap only before
    // the first accesses have mapped it and while loopback data withdraws
    // it (stores trap either way).
    let (traps_with, traps_without) = (mmio_traps(&imaged), mmio_traps(&trapped));
    assert!(traps_without >= loads, "{traps_without} MMIO traps for {loads} loads without the image");
    assert!(
        traps_with * 5 < traps_without,
        "{traps_with} MMIO traps with the image against {traps_without} without\n{}",
        imaged.describe()
    );
}
