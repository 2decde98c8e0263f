//! The monitor's link to the host: the physical UART, carrying the guest's
//! console output and the monitor's records (log lines, exit status) framed
//! as `ipc::hostlink` says. Semihosting is not used: QEMU would answer it
//! from the guest's PL1 too, which would let a guest reach the host.

use ipc::hostlink::{self, RecordKind};
use spin::Once;

use super::devices::Uart;

static UART: Once<Uart> = Once::new();
/// Serialises everything written to the UART, so that a record is never
/// cut by another CPU's bytes (a CPU that waits long sleeps, see `lock`).
static LOCK: super::lock::SleepLock<(), super::Cpus> = super::lock::SleepLock::new(());

/// PSCI SYSTEM_OFF (SMC32), answered by the platform firmware (QEMU).
const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// Start using the UART at `base`.
///
/// # Safety
/// `base` must be the PL011's register frame, identity-mapped as device
/// memory, and used by nothing but this module.
pub unsafe fn init(base: usize) {
    // SAFETY: passed on from the caller.
    UART.call_once(|| unsafe { Uart::new(base) });
}

/// The UART, once known.
pub fn uart() -> Option<&'static Uart> {
    UART.get()
}

/// Write guest console output.
pub fn console(bytes: &[u8]) {
    if let Some(uart) = UART.get() {
        let _guard = LOCK.lock();
        let start = super::profile::now();
        hostlink::encode_console(bytes, &mut |b| uart.write_byte(b));
        super::profile::add_here(super::profile::Part::Uart, start);
    }
}

/// Write one record (dropped while no UART is known).
pub fn record(kind: RecordKind, payload: &[u8]) {
    if let Some(uart) = UART.get() {
        let _guard = LOCK.lock();
        let start = super::profile::now();
        hostlink::encode_record(kind, payload, &mut |b| uart.write_byte(b));
        super::profile::add_here(super::profile::Part::Uart, start);
    }
}

/// Report `status` and stop the machine.
pub fn exit(status: u8) -> ! {
    record(RecordKind::Exit, &[status]);
    loop {
        // SAFETY: a PSCI call to the firmware, which powers the machine off
        // and does not return; if it does, try again.
        unsafe {
            core::arch::asm!(".arch_extension sec", "smc #0", inout("r0") PSCI_SYSTEM_OFF => _, options(nostack));
        }
    }
}
