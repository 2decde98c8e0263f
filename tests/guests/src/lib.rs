//! The shared half of splitvisor's bare-metal test guests.
//!
//! Owns what the guests (`hello`, `abort`, and the SMP guests `smp`, `ipi`,
//! `timer`, `gicd_probe`) need to run on ARMv7-A CPUs with nothing under
//! them but a boot loader and PSCI: the start-up code and exception vectors
//! (`rt`, with an IRQ hook), secondary CPUs started with PSCI CPU_ON
//! (`smp`), the console (a PL011 found in the device tree, or semihosting
//! when there is no tree), PSCI calls through HVC, device-tree discovery
//! (`dtb`: memory, console, GIC, timer interrupts, CPUs), a minimal GICv2
//! driver (`gic`), the generic timer's fields (`timer`), decoding of CPSR
//! modes and fault status (`cpu`), and the PASS/FAIL report format the
//! integration tests read.
//!
//! Never assumes a board: every address and interrupt number comes from
//! the device tree passed in r2. Never enables the MMU or caches: the
//! guests test the hypervisor's emulation of the plainest possible PL1
//! software. Only the SMP guests unmask interrupts, after installing a
//! handler.
//!
//! The decoding modules (`cpu`, `psci`, `dtb` and the PL011 register map)
//! build for the host too, where they are unit-tested and where the host
//! integration tests reuse the device-tree discovery. The rest exists only
//! on the bare-metal target.

#![no_std]

pub mod cpu;
pub mod dtb;
pub mod gic;
pub mod pl011;
pub mod psci;
pub mod timer;

#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod arch;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "arm", target_os = "none"))]
mod report;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod rt;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod semihosting;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod smp;

#[cfg(all(target_arch = "arm", target_os = "none"))]
pub use report::{shared_check, Report};

/// The registers the boot loader left: r0-r2 of the Linux boot protocol and
/// the CPSR at entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// r0: 0.
    pub r0: u32,
    /// r1: the machine type, 0xFFFFFFFF when the device tree describes the
    /// machine.
    pub r1: u32,
    /// r2: the physical address of the device tree.
    pub r2: u32,
    /// CPSR at entry: its mode must be SVC.
    pub cpsr: u32,
}

/// The value r1 holds under the Linux boot protocol when the machine is
/// described by a device tree rather than a machine number (QEMU `virt`
/// and splitvisor both pass it).
pub const MACHINE_TYPE_DEVICE_TREE: u32 = 0xffff_ffff;

#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod platform;

/// Defines the guest's entry point: `entry!(main)` with
/// `fn main(boot: BootInfo) -> !` makes the start-up code call `main` with
/// the boot registers, on the SVC stack, with `.bss` zeroed.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Called once by the start-up code in `rt`.
        #[no_mangle]
        pub extern "C" fn __guest_entry(r0: u32, r1: u32, r2: u32, cpsr: u32) -> ! {
            let main: fn($crate::BootInfo) -> ! = $main;
            main($crate::BootInfo { r0, r1, r2, cpsr })
        }
    };
}
