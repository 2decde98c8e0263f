//! ARMv7 system registers used by the monitor, defined once, by name.
//!
//! Each register is a zero-sized value with `get`/`set` implemented by one
//! MRC/MCR (or MRRC/MCRR) instruction; field layouts are tock-registers
//! bitfields. Encodings: ARMv7-A ARM, B4.1 and Table B3-49 (Hyp registers),
//! B8 (generic timer).
//!
//! Registers keep the architecture's names (`CNTHP_CTL`), not Rust's casing.
#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;

/// Define a 32-bit CP15 register accessed with MRC/MCR.
macro_rules! cp15_32 {
    ($(#[$doc:meta])* $name:ident, $bits:ty, $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
        $(#[$doc])*
        pub struct $name;
        impl Readable for $name {
            type T = u32;
            type R = $bits;
            #[inline(always)]
            fn get(&self) -> u32 {
                let value: u32;
                // SAFETY: reading this system register has no side effects
                // and the monitor runs in Hyp mode, where it is accessible.
                unsafe {
                    core::arch::asm!(
                        concat!("mrc p15, ", $opc1, ", {0}, c", $crn, ", c", $crm, ", ", $opc2),
                        out(reg) value, options(nomem, nostack, preserves_flags)
                    );
                }
                value
            }
        }
        impl Writeable for $name {
            type T = u32;
            type R = $bits;
            #[inline(always)]
            fn set(&self, value: u32) {
                // SAFETY: the monitor runs in Hyp mode, where this register
                // is writable; every caller documents why its value is right.
                unsafe {
                    core::arch::asm!(
                        concat!("mcr p15, ", $opc1, ", {0}, c", $crn, ", c", $crm, ", ", $opc2),
                        in(reg) value, options(nostack, preserves_flags)
                    );
                }
            }
        }
    };
}

/// Define a 64-bit CP15 register accessed with MRRC/MCRR.
macro_rules! cp15_64 {
    ($(#[$doc:meta])* $name:ident, $opc1:literal, $crm:literal) => {
        $(#[$doc])*
        pub struct $name;
        impl $name {
            /// Read the register.
            #[inline(always)]
            #[allow(dead_code)]
            pub fn get(&self) -> u64 {
                let (lo, hi): (u32, u32);
                // SAFETY: reading this system register has no side effects.
                unsafe {
                    core::arch::asm!(
                        concat!("mrrc p15, ", $opc1, ", {0}, {1}, c", $crm),
                        out(reg) lo, out(reg) hi, options(nomem, nostack, preserves_flags)
                    );
                }
                u64::from(hi) << 32 | u64::from(lo)
            }
            /// Write the register.
            #[inline(always)]
            #[allow(dead_code)]
            pub fn set(&self, value: u64) {
                // SAFETY: the monitor runs in Hyp mode, where this register
                // is writable; every caller documents why its value is right.
                unsafe {
                    core::arch::asm!(
                        concat!("mcrr p15, ", $opc1, ", {0}, {1}, c", $crm),
                        in(reg) value as u32, in(reg) (value >> 32) as u32, options(nostack, preserves_flags)
                    );
                }
            }
        }
    };
}

register_bitfields! [u32,
    /// Hyp Configuration Register (B4.1.65).
    pub HCR_BITS [
        /// Stage-2 translation enable.
        VM OFFSET(0) NUMBITS(1) [],
        /// Set/way invalidation override (invalidate becomes clean+invalidate).
        SWIO OFFSET(1) NUMBITS(1) [],
        /// Physical FIQ routing to Hyp.
        FMO OFFSET(3) NUMBITS(1) [],
        /// Physical IRQ routing to Hyp.
        IMO OFFSET(4) NUMBITS(1) [],
        /// Asynchronous abort routing to Hyp.
        AMO OFFSET(5) NUMBITS(1) [],
        /// Trap WFI.
        TWI OFFSET(13) NUMBITS(1) [],
        /// Trap WFE.
        TWE OFFSET(14) NUMBITS(1) [],
        /// Trap SMC.
        TSC OFFSET(19) NUMBITS(1) [],
        /// Trap ACTLR accesses.
        TAC OFFSET(21) NUMBITS(1) [],
        /// Trap set/way cache maintenance.
        TSW OFFSET(22) NUMBITS(1) []
    ],
    /// Hyp System Control Register (B4.1.67).
    pub HSCTLR_BITS [
        /// Hyp stage-1 MMU enable.
        M OFFSET(0) NUMBITS(1) [],
        /// Alignment check.
        A OFFSET(1) NUMBITS(1) [],
        /// Data cache enable.
        C OFFSET(2) NUMBITS(1) [],
        /// Instruction cache enable.
        I OFFSET(12) NUMBITS(1) []
    ],
    /// Counter-timer Hyp Control register (B8.2.x).
    pub CNTHCTL_BITS [
        /// PL1 and PL0 may read the physical counter.
        PL1PCTEN OFFSET(0) NUMBITS(1) [],
        /// PL1 and PL0 may use the physical timer.
        PL1PCEN OFFSET(1) NUMBITS(1) []
    ],
    /// Generic timer control register (CNTHP_CTL, CNTP_CTL, CNTV_CTL).
    pub TIMER_CTL [
        /// Timer enable.
        ENABLE OFFSET(0) NUMBITS(1) [],
        /// Interrupt mask.
        IMASK OFFSET(1) NUMBITS(1) [],
        /// Condition met (read-only).
        ISTATUS OFFSET(2) NUMBITS(1) []
    ],
    /// Cache Type Register (B4.1.42).
    pub CTR_BITS [
        /// Log2 of the words in the smallest data or unified cache line.
        DMINLINE OFFSET(16) NUMBITS(4) []
    ],
    /// A register without named fields.
    pub RAW [
        /// The whole register.
        VALUE OFFSET(0) NUMBITS(32) []
    ]
];

cp15_32!(/// Main ID Register.
    MIDR, RAW::Register, 0, 0, 0, 0);
cp15_32!(/// Cache Type Register.
    CTR, CTR_BITS::Register, 0, 0, 0, 1);
cp15_32!(/// Cache Level ID Register.
    CLIDR, RAW::Register, 1, 0, 0, 1);
cp15_32!(/// Cache Size ID Register (of the level CSSELR selects).
    CCSIDR, RAW::Register, 1, 0, 0, 0);
cp15_32!(/// Cache Size Selection Register.
    CSSELR, RAW::Register, 2, 0, 0, 0);
cp15_32!(/// Guest (non-secure PL1) System Control Register.
    SCTLR, RAW::Register, 0, 1, 0, 0);
cp15_32!(/// Guest Translation Table Base Control Register.
    TTBCR, RAW::Register, 0, 2, 0, 2);
cp15_32!(/// Guest Data Fault Status Register.
    DFSR, RAW::Register, 0, 5, 0, 0);
cp15_32!(/// Guest Instruction Fault Status Register.
    IFSR, RAW::Register, 0, 5, 0, 1);
cp15_32!(/// Guest Data Fault Address Register.
    DFAR, RAW::Register, 0, 6, 0, 0);
cp15_32!(/// Guest Instruction Fault Address Register.
    IFAR, RAW::Register, 0, 6, 0, 2);
cp15_32!(/// Guest Vector Base Address Register.
    VBAR, RAW::Register, 0, 12, 0, 0);
cp15_32!(/// Virtualization Processor ID Register (the guest's MIDR).
    VPIDR, RAW::Register, 4, 0, 0, 0);
cp15_32!(/// Virtualization Multiprocessor ID Register (the guest's MPIDR).
    VMPIDR, RAW::Register, 4, 0, 0, 5);
cp15_32!(/// Hyp System Control Register.
    HSCTLR, HSCTLR_BITS::Register, 4, 1, 0, 0);
cp15_32!(/// Hyp Configuration Register.
    HCR, HCR_BITS::Register, 4, 1, 1, 0);
cp15_32!(/// Hyp Debug Configuration Register.
    HDCR, RAW::Register, 4, 1, 1, 1);
cp15_32!(/// Hyp Coprocessor Trap Register.
    HCPTR, RAW::Register, 4, 1, 1, 2);
cp15_32!(/// Hyp System Trap Register.
    HSTR, RAW::Register, 4, 1, 1, 3);
cp15_32!(/// Hyp Translation Control Register.
    HTCR, RAW::Register, 4, 2, 0, 2);
cp15_32!(/// Virtualization Translation Control Register.
    VTCR, RAW::Register, 4, 2, 1, 2);
cp15_32!(/// Hyp Syndrome Register.
    HSR, RAW::Register, 4, 5, 2, 0);
cp15_32!(/// Hyp Data Fault Address Register.
    HDFAR, RAW::Register, 4, 6, 0, 0);
cp15_32!(/// Hyp Instruction Fault Address Register.
    HIFAR, RAW::Register, 4, 6, 0, 2);
cp15_32!(/// Hyp IPA Fault Address Register.
    HPFAR, RAW::Register, 4, 6, 0, 4);
cp15_32!(/// Hyp Memory Attribute Indirection Register 0.
    HMAIR0, RAW::Register, 4, 10, 2, 0);
cp15_32!(/// Hyp Software Thread ID Register (the monitor keeps its CPU index here).
    HTPIDR, RAW::Register, 4, 13, 0, 2);
cp15_32!(/// Counter-timer Hyp Control.
    CNTHCTL, CNTHCTL_BITS::Register, 4, 14, 1, 0);
cp15_32!(/// Counter-timer Hyp Physical Timer Control.
    CNTHP_CTL, TIMER_CTL::Register, 4, 14, 2, 1);
cp15_32!(/// Counter-timer (non-secure PL1) Physical Timer Control: the monitor's
    /// watchdog (the guest's physical-timer accesses trap and are emulated).
    CNTP_CTL, TIMER_CTL::Register, 0, 14, 2, 1);
cp15_32!(/// Counter-timer Virtual Timer Control: the guest's virtual timer, live
    /// while its vCPU runs on this CPU (the monitor only sets its IMASK,
    /// `Action::SetVirtualTimerMask`).
    CNTV_CTL, TIMER_CTL::Register, 0, 14, 3, 1);
cp15_32!(/// Counter-timer Frequency.
    CNTFRQ, RAW::Register, 0, 14, 0, 0);
cp15_32!(/// Performance Monitors Control Register (for PMCR.N).
    PMCR, RAW::Register, 0, 9, 12, 0);

cp15_64!(/// Hyp Translation Table Base Register.
    HTTBR, 4, 2);
cp15_64!(/// Virtualization Translation Table Base Register.
    VTTBR, 6, 2);
cp15_64!(/// Physical Count register.
    CNTPCT, 0, 14);
cp15_64!(/// Virtual Offset register.
    CNTVOFF, 4, 14);
cp15_64!(/// Counter-timer Hyp Physical Timer CompareValue.
    CNTHP_CVAL, 6, 14);
cp15_64!(/// Counter-timer (non-secure PL1) Physical Timer CompareValue.
    CNTP_CVAL, 2, 14);
cp15_64!(/// Physical Address Register (the guest's; an address translation
    /// operation writes it).
    PAR, 0, 7);

/// Maintenance operations (write-only CP15 encodings).
pub mod ops {
    /// Run one CP15 maintenance operation with an operand.
    macro_rules! op {
        ($(#[$doc:meta])* $name:ident, $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
            $(#[$doc])*
            #[inline(always)]
            pub fn $name(operand: u32) {
                // SAFETY: a cache or TLB maintenance operation changes no
                // memory contents the compiler relies on.
                unsafe {
                    core::arch::asm!(
                        concat!("mcr p15, ", $opc1, ", {0}, c", $crn, ", c", $crm, ", ", $opc2),
                        in(reg) operand, options(nostack, preserves_flags)
                    );
                }
            }
        };
    }
    op!(/// Invalidate all instruction caches to PoU.
        iciallu, 0, 7, 5, 0);
    op!(/// Clean and invalidate data cache line by set/way.
        dccisw, 0, 7, 14, 2);
    /// Clean data cache line by address to the point of unification.
    #[inline(always)]
    pub fn dccmvau(address: u32) {
        // SAFETY: a clean changes no memory contents. `readonly`: the line
        // is read, so stores before it are done first, and nothing after it
        // need be read again (a plain asm block made the compiler reload
        // the values around the domain switch it precedes).
        unsafe {
            core::arch::asm!(
                "mcr p15, 0, {0}, c7, c11, 1",
                in(reg) address, options(nostack, preserves_flags, readonly)
            );
        }
    }
    op!(/// Invalidate entire Hyp unified TLB.
        tlbiallh, 4, 8, 7, 0);
    op!(/// Invalidate entire non-secure non-Hyp unified TLB (guest TLB).
        tlbiallnsnh, 4, 8, 7, 4);
    op!(/// Invalidate entire non-secure non-Hyp unified TLB, Inner Shareable
        /// (the guest's TLB entries on every CPU).
        tlbiallnsnhis, 4, 8, 3, 4);
    op!(/// Clean data cache line by address to the point of coherency.
        dccmvac, 0, 7, 10, 1);
    op!(/// Address translation, stage 1 of the current (the guest's) PL1
        /// regime, as a PL1 read: the result (an IPA) lands in PAR.
        ats1cpr, 0, 7, 8, 0);
}

/// Data and instruction synchronization barriers.
#[inline(always)]
pub fn barrier() {
    // SAFETY: barriers have no effect but ordering.
    unsafe { core::arch::asm!("dsb sy", "isb", options(nostack, preserves_flags)) };
}

/// Instruction synchronization barrier: the system register writes before
/// it take effect (a timer's output, say) before anything after it runs.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no effect but ordering.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// ELR_hyp: where the last exception taken to Hyp mode came from (a banked
/// register, read with MRS rather than through CP15).
#[inline(always)]
pub fn elr_hyp() -> u32 {
    let elr: u32;
    // SAFETY: reading a banked register has no side effects.
    unsafe {
        core::arch::asm!(".arch_extension virt", "mrs {0}, ELR_hyp", out(reg) elr, options(nomem, nostack, preserves_flags))
    };
    elr
}
