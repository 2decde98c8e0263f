//! The generic timer's CP15 registers that reach this server, defined once by
//! encoding, and the bits of the timer control register.
//!
//! Source: ARM Architecture Reference Manual, ARMv7-A and ARMv7-R edition
//! (ARM DDI 0406C), chapter B8 "The Generic Timer", the register descriptions
//! CNTP_CTL, CNTP_TVAL, CNTP_CVAL and CNTPCT in B4.1, and the CP15 c14 summary
//! in B3.17 ("Generic Timer registers").
//!
//! Only the guest's physical timer and physical counter trap (CNTHCTL.PL1PCEN
//! and CNTHCTL.PL1PCTEN cleared); the virtual timer (CNTV_*), the virtual
//! counter, CNTFRQ and CNTKCTL never trap to Hyp mode, and the Hyp-mode
//! registers (CNTHCTL, CNTHP_*, CNTVOFF) are UNDEFINED at PL1 without a trap.
//! Anything else that reaches this server decodes to `Unknown`.

use ipc::{Cp15Access, Cp15WideAccess};

/// Bits of CNTP_CTL (and CNTV_CTL, CNTHP_CTL): DDI 0406C B4.1 "CNTP_CTL,
/// PL1 Physical Timer Control register".
pub mod ctl {
    /// Bit 0, ENABLE: the timer is enabled.
    pub const ENABLE: u32 = 1 << 0;
    /// Bit 1, IMASK: the timer interrupt is masked (the condition is still
    /// reported in ISTATUS).
    pub const IMASK: u32 = 1 << 1;
    /// Bit 2, ISTATUS: read-only, the timer condition is met (reads 0 while
    /// the timer is disabled, as QEMU and hardware in practice do; the
    /// architecture leaves it UNKNOWN then). Writes to it are ignored.
    pub const ISTATUS: u32 = 1 << 2;
    /// The bits a write can change; bits [31:3] are UNK/SBZP and read as 0.
    pub const WRITABLE: u32 = ENABLE | IMASK;
}

/// Coprocessor register number of every generic-timer register (CRn of the
/// 32-bit forms, CRm of the 64-bit forms): c14.
pub const C14: u8 = 14;

/// MRC/MCR p15, 0, <Rt>, c14, c2, 0: CNTP_TVAL.
pub const CNTP_TVAL: (u8, u8, u8, u8) = (0, C14, 2, 0);
/// MRC/MCR p15, 0, <Rt>, c14, c2, 1: CNTP_CTL.
pub const CNTP_CTL: (u8, u8, u8, u8) = (0, C14, 2, 1);
/// MRRC p15, 0, <Rt>, <Rt2>, c14: CNTPCT (read-only).
pub const CNTPCT: (u8, u8) = (0, C14);
/// MRRC/MCRR p15, 2, <Rt>, <Rt2>, c14: CNTP_CVAL.
pub const CNTP_CVAL: (u8, u8) = (2, C14);

/// A 32-bit (MRC/MCR) timer register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReg32 {
    /// CNTP_TVAL: the physical timer's signed 32-bit down-counting view.
    CntpTval,
    /// CNTP_CTL: the physical timer's control register.
    CntpCtl,
    /// Anything else: `(opc1, CRn, CRm, opc2)` as trapped.
    Unknown {
        /// opc1.
        opc1: u8,
        /// CRn.
        crn: u8,
        /// CRm.
        crm: u8,
        /// opc2.
        opc2: u8,
    },
}

impl TimerReg32 {
    /// Decode the register an MRC/MCR names.
    pub fn decode(access: &Cp15Access) -> Self {
        match (access.opc1, access.crn, access.crm, access.opc2) {
            CNTP_TVAL => TimerReg32::CntpTval,
            CNTP_CTL => TimerReg32::CntpCtl,
            (opc1, crn, crm, opc2) => TimerReg32::Unknown { opc1, crn, crm, opc2 },
        }
    }
}

/// A 64-bit (MRRC/MCRR) timer register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReg64 {
    /// CNTPCT: the physical count (read-only).
    Cntpct,
    /// CNTP_CVAL: the physical timer's 64-bit compare value.
    CntpCval,
    /// Anything else: `(opc1, CRm)` as trapped.
    Unknown {
        /// opc1.
        opc1: u8,
        /// CRm.
        crm: u8,
    },
}

impl TimerReg64 {
    /// Decode the register an MRRC/MCRR names.
    pub fn decode(access: &Cp15WideAccess) -> Self {
        match (access.opc1, access.crm) {
            CNTPCT => TimerReg64::Cntpct,
            CNTP_CVAL => TimerReg64::CntpCval,
            (opc1, crm) => TimerReg64::Unknown { opc1, crm },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mrc(opc1: u8, crn: u8, crm: u8, opc2: u8) -> Cp15Access {
        Cp15Access { opc1, crn, crm, opc2, write: false, rt: 0, value: 0 }
    }

    fn mrrc(opc1: u8, crm: u8) -> Cp15WideAccess {
        Cp15WideAccess { opc1, crm, write: false, rt: 0, rt2: 1, value: 0 }
    }

    #[test]
    fn decodes_the_physical_timer_registers() {
        assert_eq!(TimerReg32::decode(&mrc(0, 14, 2, 0)), TimerReg32::CntpTval);
        assert_eq!(TimerReg32::decode(&mrc(0, 14, 2, 1)), TimerReg32::CntpCtl);
        assert_eq!(TimerReg64::decode(&mrrc(0, 14)), TimerReg64::Cntpct);
        assert_eq!(TimerReg64::decode(&mrrc(2, 14)), TimerReg64::CntpCval);
    }

    #[test]
    fn everything_else_is_unknown() {
        // CNTV_CTL, CNTFRQ, CNTHP_CTL: never ours.
        assert_eq!(TimerReg32::decode(&mrc(0, 14, 3, 1)), TimerReg32::Unknown { opc1: 0, crn: 14, crm: 3, opc2: 1 });
        assert!(matches!(TimerReg32::decode(&mrc(0, 14, 0, 0)), TimerReg32::Unknown { .. }));
        assert!(matches!(TimerReg32::decode(&mrc(4, 14, 2, 1)), TimerReg32::Unknown { .. }));
        assert!(matches!(TimerReg32::decode(&mrc(0, 1, 2, 1)), TimerReg32::Unknown { .. }));
        // CNTVCT, CNTV_CVAL, CNTVOFF, CNTHP_CVAL, a 64-bit TTBR.
        for opc1 in [1, 3, 4, 6] {
            assert_eq!(TimerReg64::decode(&mrrc(opc1, 14)), TimerReg64::Unknown { opc1, crm: 14 });
        }
        assert_eq!(TimerReg64::decode(&mrrc(0, 2)), TimerReg64::Unknown { opc1: 0, crm: 2 });
    }
}
