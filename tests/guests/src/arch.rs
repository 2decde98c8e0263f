//! The ARMv7-A instructions the guests need, one small wrapper each.
//!
//! Everything here runs at PL1 with the MMU off. The encodings of the CP15
//! registers are from the Arm ARM ARMv7-A/R (DDI 0406C), B4.1 "System
//! control registers in a VMSA implementation": MPIDR (c0, c0, 5), SCTLR
//! (c1, c0, 0), TTBCR (c2, c0, 2), DFSR (c5, c0, 0), IFSR (c5, c0, 1), DFAR
//! (c6, c0, 0), IFAR (c6, c0, 2), VBAR (c12, c0, 0); and B8.2 "Generic Timer
//! registers summary" for the timer registers (CNTFRQ c14, c0, 0; CNTP_TVAL
//! c14, c2, 0; CNTP_CTL c14, c2, 1; CNTV_TVAL c14, c3, 0; CNTV_CTL c14, c3,
//! 1; the 64-bit CNTPCT MRRC op1 0, CNTVCT op1 1, CNTP_CVAL op1 2, CNTV_CVAL
//! op1 3, all with CRm c14).

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

/// An 8-bit load from a device register (`LDRB`, no writeback).
///
/// # Safety
///
/// `addr` must be a device register that may be read bytewise.
#[inline(always)]
pub unsafe fn mmio_read8(addr: usize) -> u8 {
    let value: u32;
    // SAFETY: the caller vouches for the address.
    unsafe { asm!("ldrb {}, [{}]", out(reg) value, in(reg) addr, options(nostack, preserves_flags)) };
    value as u8
}

/// A 16-bit load from a device register (`LDRH`, no writeback).
///
/// # Safety
///
/// `addr` must be a 2-byte aligned device register that may be read
/// halfword-wise.
#[inline(always)]
pub unsafe fn mmio_read16(addr: usize) -> u16 {
    let value: u32;
    // SAFETY: the caller vouches for the address.
    unsafe { asm!("ldrh {}, [{}]", out(reg) value, in(reg) addr, options(nostack, preserves_flags)) };
    value as u16
}

/// An 8-bit store to a device register (`STRB`, no writeback).
///
/// # Safety
///
/// `addr` must be a device register that may be written bytewise.
#[inline(always)]
pub unsafe fn mmio_write8(addr: usize, value: u8) {
    // SAFETY: the caller vouches for the address.
    unsafe { asm!("strb {}, [{}]", in(reg) u32::from(value), in(reg) addr, options(nostack, preserves_flags)) };
}

/// Waits for an interrupt. WFI wakes when an interrupt is pending for the
/// CPU even while CPSR.I masks it (Arm ARM B1.8.14 "Wait For Interrupt").
#[inline(always)]
pub fn wfi() {
    // SAFETY: WFI only pauses the CPU.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// CPSR.I (bit 7): IRQs masked.
pub const CPSR_I: u32 = 1 << 7;
/// CPSR.F (bit 6): FIQs masked.
pub const CPSR_F: u32 = 1 << 6;
/// CPSR.A (bit 8): asynchronous aborts masked.
pub const CPSR_A: u32 = 1 << 8;

/// Unmasks IRQs (`CPSIE i`).
#[inline(always)]
pub fn irq_enable() {
    // SAFETY: only CPSR.I changes; the IRQ vector is installed by
    // `rt::init`/the secondary start-up before anyone unmasks. A compiler
    // barrier (no `nomem`): memory the handler shares must be re-read.
    unsafe { asm!("cpsie i", options(nostack, preserves_flags)) };
}

/// Masks IRQs (`CPSID i`).
#[inline(always)]
pub fn irq_disable() {
    // SAFETY: only CPSR.I changes.
    unsafe { asm!("cpsid i", options(nostack, preserves_flags)) };
}

/// Restores CPSR.I to what `cpsr` (an earlier [`read_cpsr`]) had.
#[inline(always)]
pub fn irq_restore(cpsr: u32) {
    if cpsr & CPSR_I == 0 {
        irq_enable();
    } else {
        irq_disable();
    }
}

/// Reads MPIDR, the multiprocessor affinity of this CPU (a hypervisor
/// presents VMPIDR here).
#[inline(always)]
pub fn read_mpidr() -> u32 {
    let value: u32;
    // SAFETY: reading MPIDR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c0, c0, 5", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads VBAR.
#[inline(always)]
pub fn read_vbar() -> u32 {
    let value: u32;
    // SAFETY: reading VBAR has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c12, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// A data memory barrier (`DMB SY`).
#[inline(always)]
pub fn dmb() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dmb sy", options(nostack, preserves_flags)) };
}

/// A data synchronization barrier (`DSB SY`): device writes before it
/// have completed.
#[inline(always)]
pub fn dsb() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// An instruction synchronization barrier (`ISB`): system register writes
/// before it take effect.
#[inline(always)]
pub fn isb() {
    // SAFETY: ISB only flushes the pipeline.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Reads CNTFRQ, the system counter's frequency in Hz.
#[inline(always)]
pub fn read_cntfrq() -> u32 {
    let value: u32;
    // SAFETY: reading CNTFRQ has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CNTVCT, the virtual count (ISB first, so that it is not read
/// early; Arm ARM B8.1.2).
#[inline(always)]
pub fn read_cntvct() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading the counter has no side effect.
    unsafe { asm!("isb", "mrrc p15, 1, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Reads CNTPCT, the physical count (ISB first).
#[inline(always)]
pub fn read_cntpct() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading the counter has no side effect (a hypervisor may
    // trap it).
    unsafe { asm!("isb", "mrrc p15, 0, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Reads CNTV_CTL.
#[inline(always)]
pub fn read_cntv_ctl() -> u32 {
    let value: u32;
    // SAFETY: reading a timer register has no side effect.
    unsafe { asm!("mrc p15, 0, {}, c14, c3, 1", out(reg) value, options(nostack, preserves_flags)) };
    value
}

/// Writes CNTV_CTL (and synchronizes).
#[inline(always)]
pub fn write_cntv_ctl(value: u32) {
    // SAFETY: the virtual timer only raises its PPI, which the guest's GIC
    // set-up decides about.
    unsafe { asm!("mcr p15, 0, {}, c14, c3, 1", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CNTV_TVAL.
#[inline(always)]
pub fn read_cntv_tval() -> u32 {
    let value: u32;
    // SAFETY: reading a timer register has no side effect.
    unsafe { asm!("isb", "mrc p15, 0, {}, c14, c3, 0", out(reg) value, options(nostack, preserves_flags)) };
    value
}

/// Writes CNTV_TVAL: CNTV_CVAL becomes CNTVCT + the sign-extended value.
#[inline(always)]
pub fn write_cntv_tval(value: u32) {
    // SAFETY: see `write_cntv_ctl`.
    unsafe { asm!("mcr p15, 0, {}, c14, c3, 0", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CNTV_CVAL.
#[inline(always)]
pub fn read_cntv_cval() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading a timer register has no side effect.
    unsafe { asm!("mrrc p15, 3, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes CNTV_CVAL.
#[inline(always)]
pub fn write_cntv_cval(value: u64) {
    // SAFETY: see `write_cntv_ctl`.
    unsafe {
        asm!("mcrr p15, 3, {}, {}, c14", "isb", in(reg) value as u32, in(reg) (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

/// Reads CNTP_CTL.
#[inline(always)]
pub fn read_cntp_ctl() -> u32 {
    let value: u32;
    // SAFETY: reading a timer register has no side effect (a hypervisor
    // may trap it).
    unsafe { asm!("isb", "mrc p15, 0, {}, c14, c2, 1", out(reg) value, options(nostack, preserves_flags)) };
    value
}

/// Writes CNTP_CTL (and synchronizes).
#[inline(always)]
pub fn write_cntp_ctl(value: u32) {
    // SAFETY: the physical timer only raises its PPI.
    unsafe { asm!("mcr p15, 0, {}, c14, c2, 1", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CNTP_TVAL.
#[inline(always)]
pub fn read_cntp_tval() -> u32 {
    let value: u32;
    // SAFETY: reading a timer register has no side effect.
    unsafe { asm!("isb", "mrc p15, 0, {}, c14, c2, 0", out(reg) value, options(nostack, preserves_flags)) };
    value
}

/// Writes CNTP_TVAL.
#[inline(always)]
pub fn write_cntp_tval(value: u32) {
    // SAFETY: see `write_cntp_ctl`.
    unsafe { asm!("mcr p15, 0, {}, c14, c2, 0", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CNTP_CVAL.
#[inline(always)]
pub fn read_cntp_cval() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading a timer register has no side effect.
    unsafe { asm!("mrrc p15, 2, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes CNTP_CVAL.
#[inline(always)]
pub fn write_cntp_cval(value: u64) {
    // SAFETY: see `write_cntp_ctl`.
    unsafe {
        asm!("mcrr p15, 2, {}, {}, c14", "isb", in(reg) value as u32, in(reg) (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}
