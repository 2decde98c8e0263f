//! Test guest `escape`: a hostile guest's try at semihosting.
//!
//! QEMU answers a semihosting call (`SVC #0x123456` in A32) from any
//! privileged mode when semihosting is enabled, so a hypervisor running
//! under QEMU with semihosting on would let its guest write to the host's
//! terminal and files and end QEMU with a status of its choosing. The guest
//! writes [`MARKER`] with SYS_WRITE0 and then asks for SYS_EXIT_EXTENDED with
//! status 0. Under splitvisor neither may reach the host: the SVC must be an
//! ordinary exception taken on the guest's own vector (the run-time reports
//! it as an unexpected supervisor call and resets), so the marker never
//! appears and the run does not end with status 0.

#![no_std]
#![no_main]

use test_guests::{arch, rt, BootInfo};

test_guests::entry!(main);

/// What the guest tries to print on the host (NUL-terminated for SYS_WRITE0).
const MARKER: &[u8] = b"ESCAPED-THROUGH-SEMIHOSTING\n\0";
/// SYS_WRITE0: write a NUL-terminated string.
const SYS_WRITE0: u32 = 0x04;
/// SYS_EXIT_EXTENDED: end with a status.
const SYS_EXIT_EXTENDED: u32 = 0x20;
/// ADP_Stopped_ApplicationExit.
const APPLICATION_EXIT: u32 = 0x2_0026;

fn main(boot: BootInfo) -> ! {
    let (_env, mut report) = rt::init("escape", boot);
    report.info(format_args!("trying semihosting SYS_WRITE0 and SYS_EXIT_EXTENDED(0)"));
    let block = [APPLICATION_EXIT, 0];
    // SAFETY: both calls read only memory that lives through them (the
    // marker, a static; the block, on this stack). Under splitvisor they are
    // ordinary SVC exceptions that the guest's own vector takes.
    unsafe {
        arch::semihosting_call(SYS_WRITE0, MARKER.as_ptr() as usize);
        arch::semihosting_call(SYS_EXIT_EXTENDED, block.as_ptr() as usize);
    }
    report.fail(format_args!("semihosting calls returned to the guest"));
    report.finish()
}
