//! Test guest `abort`: a read from an address the VM does not own must come
//! back to the guest as a data abort on its own vector, as on hardware.
//!
//! The address read is [`PROBE_ADDR`]. With a device tree the guest first
//! checks that no node claims it and that it is not RAM. It then reads it
//! with one `LDR` and checks what its own data-abort handler saw: the abort
//! was taken in ABT mode from SVC mode at that very instruction, DFAR holds
//! the address read, DFSR reports a synchronous external abort on a read in
//! the format TTBCR.EAE selects. A read of its own RAM through the same
//! path must not abort. Then it powers off (or resets when anything failed).

#![no_std]
#![no_main]

use test_guests::cpu::{FaultKind, Mode, FSR_LPAE, TTBCR_EAE};
use test_guests::{arch, dtb, rt, BootInfo, Report};

test_guests::entry!(main);

/// The address read: 0x0980_0000 lies in the hole of QEMU `virt`'s memory
/// map between its last small on-board device (the secure GPIO at
/// 0x090B_0000) and the first virtio-mmio transport (0x0A00_0000), and no
/// splitvisor VM has anything there either: its map mirrors `virt`'s and
/// holds only GICD/GICC (0x0800_0000), the PL011 (0x0900_0000) and RAM
/// (0x4000_0000). The virtio-mmio range itself is no good: under plain QEMU
/// a read there returns a register value, not an abort. With a device tree
/// the guest checks the hole is still a hole before reading it.
const PROBE_ADDR: u32 = 0x0980_0000;

/// A word of the guest's own RAM, read through the probing load to check
/// that the path does not abort when nothing is wrong.
static CANARY: u32 = 0x5a5a_c3c3;

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("abort", boot);
    if !report.psci_allowed() {
        report.finish();
    }

    if let Ok(fdt) = &env.dtb {
        match dtb::claimant(fdt, u64::from(PROBE_ADDR)) {
            None => report.pass(format_args!("no device-tree node claims {PROBE_ADDR:#010x}")),
            Some(node) => {
                report.fail(format_args!("{node} claims {PROBE_ADDR:#010x}: it is no hole to probe"));
                report.finish();
            }
        }
    }

    // SAFETY: reading the guest's own static has no side effect.
    match unsafe { rt::probe_read(core::ptr::addr_of!(CANARY) as u32) } {
        Ok(value) => report.check(
            value == CANARY,
            format_args!("a read of own RAM through the probe returns {value:#010x} (want {CANARY:#010x})"),
        ),
        Err(abort) => {
            report.fail(format_args!("a read of own RAM aborted: DFSR {} DFAR {:#010x}", abort.dfsr, abort.dfar))
        }
    }

    report.info(format_args!("reading {PROBE_ADDR:#010x}"));
    // SAFETY: nothing lives at PROBE_ADDR (see its documentation and the
    // device-tree check above), so the read has no side effect; it aborts.
    match unsafe { rt::probe_read(PROBE_ADDR) } {
        Ok(value) => {
            report.fail(format_args!("reading {PROBE_ADDR:#010x} returned {value:#010x} without a data abort"))
        }
        Err(abort) => check_abort(&mut report, abort),
    }
    report.finish()
}

/// What the guest's data-abort handler recorded.
fn check_abort(report: &mut Report, abort: rt::DataAbort) {
    let taken_in = Mode::from_psr(abort.cpsr);
    let taken_from = Mode::from_psr(abort.spsr);
    report.info(format_args!(
        "data abort: DFSR {} DFAR {:#010x}, taken in mode {taken_in} from mode {taken_from} at pc {:#010x}",
        abort.dfsr, abort.dfar, abort.pc
    ));
    report.check(taken_in == Mode::Abort, format_args!("data abort taken in mode {taken_in} (want {})", Mode::Abort));
    report
        .check(taken_from == Mode::Supervisor, format_args!("SPSR_abt mode {taken_from} (want {})", Mode::Supervisor));
    let probe = rt::probe_instruction();
    report.check(
        abort.pc == probe,
        format_args!("aborted instruction {:#010x} (want the probing load {probe:#010x})", abort.pc),
    );
    report.check(
        abort.dfar == PROBE_ADDR,
        format_args!("DFAR {:#010x} (want the address read, {PROBE_ADDR:#010x})", abort.dfar),
    );
    report.check(
        abort.dfsr.kind() == FaultKind::SyncExternal,
        format_args!(
            "DFSR reports a {} (want {})",
            abort.dfsr.kind().description(),
            FaultKind::SyncExternal.description()
        ),
    );
    report.check(
        !abort.dfsr.is_write(),
        format_args!("DFSR.WnR says {}", if abort.dfsr.is_write() { "write (want read)" } else { "read" }),
    );
    let long_wanted = arch::read_ttbcr() & TTBCR_EAE != 0;
    report.check(
        abort.dfsr.long_format() == long_wanted,
        format_args!(
            "DFSR.LPAE {} (want TTBCR.EAE, {})",
            u32::from(abort.dfsr.0 & FSR_LPAE != 0),
            u32::from(long_wanted)
        ),
    );
}
