//! The ARMv7-A instructions the guests need, one small wrapper each.
//!
//! Everything here runs at PL1 with the MMU off. The encodings of the CP15
//! registers are from the Arm ARM ARMv7-A/R (DDI 0406C), B4.1 "System
//! control registers in a VMSA implementation": SCTLR (c1, c0, 0), TTBCR
//! (c2, c0, 2), DFSR (c5, c0, 0), IFSR (c5, c0, 1), DFAR (c6, c0, 0), IFAR
//! (c6, c0, 2), VBAR (c12, c0, 0).

use core::arch::asm;

/// SCTLR.V (bit 13): high exception vectors at 0xFFFF0000, ignoring VBAR.
pub const SCTLR_V: u32 = 1 << 13;
/// SCTLR.TE (bit 30): exceptions are taken in Thumb state.
pub const SCTLR_TE: u32 = 1 << 30;

/// Reads CPSR.
#[inline(always)]
pub fn read_cpsr() -> u32 {
    let value: u32;
    // SAFETY: MRS reads the status register and has no side effect.
    unsafe { asm!("mrs {}, cpsr", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads SCTLR.
#[inline(always)]
pub fn read_sctlr() -> u32 {
    let value: u32;
    // SAFETY: reading SCTLR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c1, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes SCTLR and synchronises the context.
///
/// # Safety
///
/// The new value must keep the MMU, caches and alignment checking in a state
/// the running code is correct for.
#[inline(always)]
pub unsafe fn write_sctlr(value: u32) {
    // SAFETY: the caller vouches for the value; ISB makes it take effect
    // before the next instruction.
    unsafe { asm!("mcr p15, 0, {}, c1, c0, 0", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads TTBCR.
#[inline(always)]
pub fn read_ttbcr() -> u32 {
    let value: u32;
    // SAFETY: reading TTBCR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c2, c0, 2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads DFSR, the data fault status.
#[inline(always)]
pub fn read_dfsr() -> u32 {
    let value: u32;
    // SAFETY: reading DFSR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c5, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads IFSR, the instruction fault status.
#[inline(always)]
pub fn read_ifsr() -> u32 {
    let value: u32;
    // SAFETY: reading IFSR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c5, c0, 1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads DFAR, the data fault address.
#[inline(always)]
pub fn read_dfar() -> u32 {
    let value: u32;
    // SAFETY: reading DFAR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c6, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads IFAR, the instruction fault address.
#[inline(always)]
pub fn read_ifar() -> u32 {
    let value: u32;
    // SAFETY: reading IFAR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c6, c0, 2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes VBAR, the base of the PL1 exception vectors.
///
/// # Safety
///
/// `base` must be the 32-byte aligned address of a complete vector table
/// that stays in place.
#[inline(always)]
pub unsafe fn write_vbar(base: u32) {
    // SAFETY: the caller vouches for the table; ISB makes the new base
    // apply to the next exception.
    unsafe { asm!("mcr p15, 0, {}, c12, c0, 0", "isb", in(reg) base, options(nostack, preserves_flags)) };
}

/// A PSCI call through HVC with the SMC Calling Convention (SMC32): the
/// function identifier in r0, arguments in r1-r3, the result in r0.
///
/// The callee may change r0-r3 and r12 and preserves everything else.
#[inline(always)]
pub fn hvc_call(function: u32, arg1: u32, arg2: u32, arg3: u32) -> u32 {
    let result: u32;
    // SAFETY: a conforming PSCI implementation (QEMU's or splitvisor's)
    // changes only the registers declared here; SYSTEM_OFF and SYSTEM_RESET
    // do not return at all. The HVC instruction belongs to the
    // Virtualization Extensions, enabled for this instruction alone.
    unsafe {
        asm!(
            ".arch_extension virt",
            "hvc #0",
            inout("r0") function => result,
            inout("r1") arg1 => _,
            inout("r2") arg2 => _,
            inout("r3") arg3 => _,
            out("r12") _,
            options(nostack),
        );
    }
    result
}

/// An Arm semihosting call in A32 state (`SVC #0x123456`): operation in r0,
/// parameter block pointer in r1, result in r0.
///
/// # Safety
///
/// `param` must be what operation `op` expects. If no debugger or emulator
/// services semihosting, the SVC is taken by the guest's own vector table,
/// which reports it and stops.
#[inline(always)]
pub unsafe fn semihosting_call(op: u32, param: usize) -> u32 {
    let result: u32;
    // SAFETY: the caller vouches for the parameter block; the semihosting
    // host reads it and changes only r0.
    unsafe {
        asm!(
            "svc #0x123456",
            inout("r0") op => result,
            in("r1") param,
            options(nostack, preserves_flags),
        );
    }
    result
}

/// A 32-bit load from a device register: one `LDR` without writeback, so
/// that a hypervisor gets a data abort with a valid syndrome (HSR.ISV = 1)
/// to emulate it from.
///
/// # Safety
///
/// `addr` must be a 4-byte aligned device register whose read side effects
/// the caller wants.
#[inline(always)]
pub unsafe fn mmio_read32(addr: usize) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches for the address.
    unsafe { asm!("ldr {}, [{}]", out(reg) value, in(reg) addr, options(nostack, preserves_flags)) };
    value
}

/// A 32-bit store to a device register: one `STR` without writeback (see
/// [`mmio_read32`]).
///
/// # Safety
///
/// `addr` must be a 4-byte aligned device register the caller may write.
#[inline(always)]
pub unsafe fn mmio_write32(addr: usize, value: u32) {
    // SAFETY: the caller vouches for the address.
    unsafe { asm!("str {}, [{}]", in(reg) value, in(reg) addr, options(nostack, preserves_flags)) };
}

/// Waits for an interrupt (which never comes: interrupts stay masked).
#[inline(always)]
pub fn wfi() {
    // SAFETY: WFI only pauses the CPU.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}
