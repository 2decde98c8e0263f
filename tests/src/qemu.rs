//! Plain QEMU: finding `qemu-system-arm`, running a guest on it without
//! splitvisor, and dumping the device tree it generates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{process, HarnessError};

/// The QEMU binary the tests use (as splitvisor does by default).
pub const QEMU: &str = "qemu-system-arm";
/// The CPU every test runs: the first target of splitvisor.
pub const CPU: &str = "cortex-a15";
/// How long `-machine dumpdtb=` may take.
const DUMP_LIMIT: Duration = Duration::from_secs(30);

/// `qemu-system-arm` from PATH, installed first (as splitvisor itself does,
/// when run as root with apt) if it is missing; else
/// [`HarnessError::QemuMissing`] (which says how to install it). The tests
/// never skip for want of QEMU.
pub fn qemu_system_arm() -> Result<PathBuf, HarnessError> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loader::setup::ensure(QEMU, loader::setup::QEMU_PACKAGE).map_err(|e| {
        eprintln!("{e}");
        HarnessError::QemuMissing
    })
}

/// `qemu-system-arm -M <machine> -cpu cortex-a15 -nographic -nic none
/// -no-reboot [-semihosting] -kernel <kernel>`: the guest's console on
/// standard output, semihosting output on standard error, no network card
/// (as under splitvisor), and a reset ends QEMU (exit status 0) instead of
/// rebooting the guest.
pub fn plain(qemu: &Path, machine: &str, kernel: &Path, semihosting: bool) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", machine, "-cpu", CPU, "-nographic", "-nic", "none", "-no-reboot"]);
    if semihosting {
        cmd.arg("-semihosting");
    }
    cmd.arg("-kernel").arg(kernel);
    cmd
}

/// The device tree QEMU generates for `machine` (e.g.
/// `virt,virtualization=on,gic-version=2`), written to `out` and read back.
pub fn dump_dtb(qemu: &Path, machine: &str, out: &Path) -> Result<Vec<u8>, HarnessError> {
    let mut option = std::ffi::OsString::from(format!("{machine},dumpdtb="));
    option.push(out);
    let mut cmd = Command::new(qemu);
    cmd.arg("-M").arg(option).args(["-cpu", CPU, "-nographic"]);
    let run = process::run(&mut cmd, DUMP_LIMIT, None)?;
    if run.code() != Some(0) {
        return Err(HarnessError::Spawn {
            program: run.command.clone(),
            source: std::io::Error::other(format!("dumping the device tree failed\n{}", run.describe())),
        });
    }
    std::fs::read(out).map_err(|source| HarnessError::Io { path: out.into(), source })
}
