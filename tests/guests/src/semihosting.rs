//! Output through Arm semihosting, the guests' console when no device tree
//! names a UART.
//!
//! Semihosting is an architected debug channel, not a board device: QEMU
//! services it when started with `-semihosting`, so a guest that got no
//! device tree (QEMU passes none to an ELF linked near the base of RAM) can
//! still report. Source: Arm "Semihosting for AArch32 and AArch64"
//! (IHI 0091), 5.3 "SYS_WRITEC".

/// SYS_WRITEC: writes the byte its parameter points at to the debug console.
pub const SYS_WRITEC: u32 = 0x03;

/// Writes one byte.
pub fn write_byte(byte: u8) {
    let cell = byte;
    // SAFETY: SYS_WRITEC reads one byte at the address in r1, which points
    // at `cell`, alive for the whole call.
    unsafe { crate::arch::semihosting_call(SYS_WRITEC, core::ptr::addr_of!(cell) as usize) };
}
