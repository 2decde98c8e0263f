//! Running the SMP guests (`smp`, `ipi`, `timer`, `gicd_probe`) with several
//! CPUs, under splitvisor and under plain QEMU, and judging their reports.
//!
//! The runs of one test process are serialized: the guests measure time
//! (the timer guest counts 1 kHz ticks), and two VMs with four CPUs each on
//! a small machine would measure the host's load instead.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::qemu::{self, qemu_system_arm};
use crate::{run, Expect, Guest, GuestOutput, Harness, HarnessError, Run};

/// The CPU counts every SMP guest runs with.
pub const CPU_COUNTS: [u8; 2] = [2, 4];
/// splitvisor's `--timeout` for one run.
pub const GUEST_TIMEOUT_SECS: u32 = 60;
/// The harness's limit for one run (the guest's, plus start-up).
pub const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The checks plain QEMU 7.2 cannot pass, for documented reasons (see the
/// guests): its PSCI does not check CPU_ON entry points (DEN 0022 allows
/// that) and starts a CPU that was never on asynchronously, reporting it
/// OFF until then; its GIC keeps GICD_ITARGETSR bits for CPUs that do not
/// exist.
pub const PLAIN_QEMU_SKIPS: &str = "test.skip=psci-invalid-address,psci-state-after-cpu-on,gicd-itargetsr-mask";

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the lock left nothing to repair.
    ONE_VM_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `splitvisor run --kernel <guest ELF> --smp <cpus> --timeout 60
/// --no-reboot`.
pub fn under_splitvisor(harness: &Harness, guest: Guest, cpus: u8) -> Result<Run, HarnessError> {
    under_splitvisor_with(harness, guest, cpus, &[])
}

/// [`under_splitvisor`] with more `splitvisor run` options.
pub fn under_splitvisor_with(harness: &Harness, guest: Guest, cpus: u8, options: &[&str]) -> Result<Run, HarnessError> {
    qemu_system_arm()?;
    let kernel = harness.guest_elf(guest)?;
    harness.monitor()?;
    let timeout = GUEST_TIMEOUT_SECS.to_string();
    let smp = cpus.to_string();
    let mut cmd =
        harness.splitvisor_command(["run", "--timeout", timeout.as_str(), "--no-reboot", "--smp", smp.as_str()])?;
    cmd.args(options).arg("--kernel").arg(&kernel);
    let _one = exclusive();
    run(&mut cmd, RUN_LIMIT, None)
}

/// The guest's raw image under `qemu-system-arm -M virt -cpu cortex-a15
/// -smp <cpus>` with QEMU's own device tree, GIC and PSCI, and
/// [`PLAIN_QEMU_SKIPS`] on the command line.
pub fn under_plain_qemu(harness: &Harness, guest: Guest, cpus: u8) -> Result<Run, HarnessError> {
    let qemu: PathBuf = qemu_system_arm()?;
    let raw = harness.guest_raw(guest)?;
    let mut cmd = qemu::plain(&qemu, "virt", &raw, false);
    cmd.args(["-smp", &cpus.to_string(), "-append", PLAIN_QEMU_SKIPS]);
    let _one = exclusive();
    run(&mut cmd, RUN_LIMIT, None)
}

/// The run's console holds every expected line, no `FAIL`, the guest's
/// `RESULT: PASS` and SYSTEM_OFF, and the program exited 0.
pub fn assert_passed(result: &Run, guest: Guest, expected: &[Expect<'_>]) {
    let out = GuestOutput::new(&result.stdout);
    let mut all: Vec<Expect<'_>> = expected.to_vec();
    let pass = format!("RESULT: PASS {}", guest.name());
    let off = format!("{}: SYSTEM_OFF", guest.name());
    all.push(Expect::Exact(&pass));
    all.push(Expect::Exact(&off));
    let missing = out.missing(&all);
    assert!(
        out.failures().is_empty(),
        "{} reported failures: {:#?}\n{}",
        guest.name(),
        out.failures(),
        result.describe()
    );
    assert!(missing.is_empty(), "missing from {}'s console: {missing:#?}\n{}", guest.name(), result.describe());
    assert!(!result.stderr.contains("panicked"), "something panicked\n{}", result.describe());
    assert_eq!(result.code(), Some(0), "{} did not power off (exit 0)\n{}", guest.name(), result.describe());
}

/// The lines of the report that start with `prefix` (for printing measured
/// values into the test log).
pub fn lines_with<'a>(result: &'a Run, part: &str) -> Vec<&'a str> {
    result.stdout.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.contains(part)).collect()
}
