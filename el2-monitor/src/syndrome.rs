//! The ARMv7 Hyp Syndrome Register (HSR), decoded once into an [`ipc::Trap`].
//!
//! Field layouts follow the ARM Architecture Reference Manual ARMv7-A/R,
//! section B3.13.6 "Use of the HSR", and are defined here, once, by name.

use ipc::{AccessSize, Cp15Access, Cp15WideAccess, MmioAccess, Trap};
use tock_registers::LocalRegisterCopy;

/// Register field layouts (tock-registers bitfields; the macro's generated
/// items carry the field documentation below, not their own).
#[allow(missing_docs)]
pub mod fields {
    use tock_registers::register_bitfields;

    register_bitfields! [u32,
        /// HSR: exception class, instruction length, instruction-specific syndrome.
        pub HSR [
            /// Exception class (B3.13.6, Table B3-16).
            EC OFFSET(26) NUMBITS(6) [],
            /// Instruction length: 1 = 32-bit, 0 = 16-bit.
            IL OFFSET(25) NUMBITS(1) [],
            /// Instruction-specific syndrome.
            ISS OFFSET(0) NUMBITS(25) []
        ],
        /// ISS of trapped conditional instructions (WFx, MCR/MRC, MCRR/MRRC).
        pub ISS_COND [
            /// COND is valid.
            CV OFFSET(24) NUMBITS(1) [],
            /// The condition code of the trapped instruction.
            COND OFFSET(20) NUMBITS(4) []
        ],
        /// ISS of a trapped WFI/WFE (EC 0x01).
        pub ISS_WFX [
            /// 1 = WFE, 0 = WFI.
            TI OFFSET(0) NUMBITS(1) []
        ],
        /// ISS of a trapped MCR/MRC (EC 0x03).
        pub ISS_MCR [
            /// opc2.
            OPC2 OFFSET(17) NUMBITS(3) [],
            /// opc1.
            OPC1 OFFSET(14) NUMBITS(3) [],
            /// CRn.
            CRN OFFSET(10) NUMBITS(4) [],
            /// Rt.
            RT OFFSET(5) NUMBITS(4) [],
            /// CRm.
            CRM OFFSET(1) NUMBITS(4) [],
            /// Direction: 1 = read (MRC), 0 = write (MCR).
            READ OFFSET(0) NUMBITS(1) []
        ],
        /// ISS of a trapped MCRR/MRRC (EC 0x04).
        pub ISS_MCRR [
            /// opc1.
            OPC1 OFFSET(16) NUMBITS(4) [],
            /// Rt2.
            RT2 OFFSET(10) NUMBITS(4) [],
            /// Rt.
            RT OFFSET(5) NUMBITS(4) [],
            /// CRm.
            CRM OFFSET(1) NUMBITS(4) [],
            /// Direction: 1 = read (MRRC), 0 = write (MCRR).
            READ OFFSET(0) NUMBITS(1) []
        ],
        /// ISS of an HVC (EC 0x12).
        pub ISS_HVC [
            /// The immediate.
            IMM16 OFFSET(0) NUMBITS(16) []
        ],
        /// ISS of a data abort (EC 0x24/0x25).
        pub ISS_DABT [
            /// Instruction syndrome valid: SAS, SSE, SRT hold information.
            ISV OFFSET(24) NUMBITS(1) [],
            /// Access size: 0 byte, 1 halfword, 2 word.
            SAS OFFSET(22) NUMBITS(2) [],
            /// Sign-extending load.
            SSE OFFSET(21) NUMBITS(1) [],
            /// The transfer register.
            SRT OFFSET(16) NUMBITS(4) [],
            /// External abort type.
            EA OFFSET(9) NUMBITS(1) [],
            /// Fault on a cache maintenance operation.
            CM OFFSET(8) NUMBITS(1) [],
            /// Fault on the stage-2 walk of a stage-1 table access.
            S1PTW OFFSET(7) NUMBITS(1) [],
            /// Write, not read.
            WNR OFFSET(6) NUMBITS(1) [],
            /// Fault status code.
            DFSC OFFSET(0) NUMBITS(6) []
        ],
        /// HPFAR: the faulting intermediate physical address, bits [39:12].
        pub HPFAR [
            /// IPA[39:12].
            FIPA OFFSET(4) NUMBITS(28) []
        ]
    ];
}
use fields::*;

/// DFSC (long-descriptor format, which HSR uses): the fault type, without
/// the level in bits \[1:0\].
const DFSC_TYPE_MASK: u32 = 0b11_1100;
/// DFSC type: permission fault.
const DFSC_PERMISSION: u32 = 0b00_1100;
/// PAR.F: the address translation failed.
const PAR_F: u32 = 1;

/// Exception classes (HSR.EC), with a fallback for the ones not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason.
    Unknown,
    /// 0x01: WFI or WFE.
    Wfx,
    /// 0x03: MCR/MRC to CP15.
    Cp15,
    /// 0x04: MCRR/MRRC to CP15.
    Cp15Wide,
    /// 0x12: HVC.
    Hvc,
    /// 0x13: SMC.
    Smc,
    /// 0x20: prefetch abort from the guest.
    PrefetchAbortGuest,
    /// 0x24: data abort from the guest.
    DataAbortGuest,
    /// Any other class (CP14, HCPTR traps, Jazelle, aborts in Hyp mode, ...).
    Other(u8),
}

impl ExceptionClass {
    /// Decode HSR.EC.
    pub fn from_raw(ec: u8) -> Self {
        match ec {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x03 => Self::Cp15,
            0x04 => Self::Cp15Wide,
            0x12 => Self::Hvc,
            0x13 => Self::Smc,
            0x20 => Self::PrefetchAbortGuest,
            0x24 => Self::DataAbortGuest,
            other => Self::Other(other),
        }
    }
}

/// The snapshot the vector code takes of the fault registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Syndrome {
    /// HSR.
    pub hsr: u32,
    /// HDFAR: faulting virtual address of a data abort.
    pub hdfar: u32,
    /// HIFAR: faulting virtual address of a prefetch abort.
    pub hifar: u32,
    /// HPFAR: faulting IPA page of a stage-2 abort.
    pub hpfar: u32,
}

/// What the monitor does with a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Deliver this trap to its server.
    Trap(Trap),
    /// Resume after the instruction without involving a server: a
    /// conditional instruction whose condition failed (the architecture
    /// allows such instructions to trap), or a cache maintenance operation by
    /// virtual address on an address with no memory behind it (it has
    /// nothing to maintain).
    Skip,
}

impl Syndrome {
    /// The exception class.
    pub fn class(&self) -> ExceptionClass {
        let hsr = LocalRegisterCopy::<u32, HSR::Register>::new(self.hsr);
        // EC is a 6-bit field.
        ExceptionClass::from_raw(hsr.read(HSR::EC) as u8)
    }

    /// Length in bytes of the trapping instruction (2 or 4).
    pub fn insn_len(&self) -> u32 {
        let hsr = LocalRegisterCopy::<u32, HSR::Register>::new(self.hsr);
        if hsr.is_set(HSR::IL) {
            4
        } else {
            2
        }
    }

    /// The faulting virtual address of a guest abort whose HPFAR need not
    /// hold the faulting IPA: a stage-2 permission fault (a store to a page
    /// stage 2 maps read-only, such as the console's read image, or an
    /// instruction fetched from a page it maps never-executable) that did
    /// not happen on a walk of the guest's own tables. The architecture
    /// writes HPFAR for translation and access-flag faults and for faults
    /// on stage-1 walks only; for these the IPA is found by translating the
    /// address with the guest's stage 1 ([`Syndrome::hpfar_from_par`]).
    /// (Data and prefetch aborts keep the fault status and S1PTW in the
    /// same ISS bits.)
    #[inline(always)]
    pub fn permission_fault_va(&self) -> Option<u32> {
        let va = match self.class() {
            ExceptionClass::DataAbortGuest => self.hdfar,
            ExceptionClass::PrefetchAbortGuest => self.hifar,
            _ => return None,
        };
        let f = LocalRegisterCopy::<u32, ISS_DABT::Register>::new(self.hsr);
        (f.read(ISS_DABT::DFSC) & DFSC_TYPE_MASK == DFSC_PERMISSION && !f.is_set(ISS_DABT::S1PTW)).then_some(va)
    }

    /// The HPFAR value for the result of a stage-1 address translation of
    /// the faulting address (PAR after an ATS1CPR of it), or none when the
    /// translation failed (PAR.F: the guest changed its tables meanwhile;
    /// it retries the access). Only PAR's low word is read: its bits
    /// \[31:12\] are the page in both PAR formats, and the guest's IPA
    /// space is 4 GiB.
    pub fn hpfar_from_par(par: u64) -> Option<u32> {
        let low = par as u32;
        if low & PAR_F != 0 {
            return None;
        }
        Some((low >> 12) << 4)
    }

    /// The faulting IPA of a stage-2 abort: HPFAR's page and HDFAR's offset.
    pub fn fault_ipa(&self, far: u32) -> u64 {
        let hpfar = LocalRegisterCopy::<u32, HPFAR::Register>::new(self.hpfar);
        (u64::from(hpfar.read(HPFAR::FIPA)) << 12) | u64::from(far & 0xfff)
    }
}

/// The CPSR fields the decoder needs (ARMv7 B1.3.3).
mod cpsr {
    pub const N: u32 = 1 << 31;
    pub const Z: u32 = 1 << 30;
    pub const C: u32 = 1 << 29;
    pub const V: u32 = 1 << 28;

    /// ITSTATE, gathered from CPSR[15:10] (IT[7:2]) and CPSR[26:25] (IT[1:0]).
    pub fn itstate(cpsr: u32) -> u32 {
        ((cpsr >> 8) & 0xfc) | ((cpsr >> 25) & 0x3)
    }
}

/// Evaluate an ARM condition code against the N, Z, C, V flags of `cpsr`
/// (ARMv7 A8.3, Table A8-1).
pub fn condition_holds(cond: u32, cpsr: u32) -> bool {
    let n = cpsr & cpsr::N != 0;
    let z = cpsr & cpsr::Z != 0;
    let c = cpsr & cpsr::C != 0;
    let v = cpsr & cpsr::V != 0;
    let base = match cond >> 1 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => !z && n == v,
        _ => true,
    };
    // 0b1111 is "always" too (unconditional encodings).
    if cond & 1 == 1 && cond != 0xf {
        !base
    } else {
        base
    }
}

/// Whether a trapped conditional instruction passed its condition check.
fn passed(iss: u32, cpsr: u32) -> bool {
    let iss = LocalRegisterCopy::<u32, ISS_COND::Register>::new(iss);
    let cond = if iss.is_set(ISS_COND::CV) {
        iss.read(ISS_COND::COND)
    } else {
        // No valid COND in the syndrome: in Thumb state inside an IT block
        // the condition is ITSTATE[7:4]; otherwise the instruction is
        // unconditional.
        let it = cpsr::itstate(cpsr);
        if it == 0 {
            return true;
        }
        it >> 4
    };
    condition_holds(cond, cpsr)
}

/// Decode a trap. `reg(n)` reads guest register `n` as the guest's mode
/// sees it (for the value a store or MCR transfers, and the HVC/SMC
/// arguments); `cpsr` is the guest's CPSR at the trap.
pub fn decode(s: &Syndrome, cpsr: u32, reg: impl Fn(u8) -> u32) -> Decoded {
    let hsr = LocalRegisterCopy::<u32, HSR::Register>::new(s.hsr);
    let iss = hsr.read(HSR::ISS);
    let args = || [reg(0), reg(1), reg(2), reg(3)];
    let trap = match s.class() {
        ExceptionClass::Wfx => {
            if !passed(iss, cpsr) {
                return Decoded::Skip;
            }
            if LocalRegisterCopy::<u32, ISS_WFX::Register>::new(iss).is_set(ISS_WFX::TI) {
                Trap::Wfe
            } else {
                Trap::Wfi
            }
        }
        ExceptionClass::Cp15 => {
            if !passed(iss, cpsr) {
                return Decoded::Skip;
            }
            let f = LocalRegisterCopy::<u32, ISS_MCR::Register>::new(iss);
            let rt = f.read(ISS_MCR::RT) as u8;
            let write = !f.is_set(ISS_MCR::READ);
            Trap::Cp15(Cp15Access {
                opc1: f.read(ISS_MCR::OPC1) as u8,
                crn: f.read(ISS_MCR::CRN) as u8,
                crm: f.read(ISS_MCR::CRM) as u8,
                opc2: f.read(ISS_MCR::OPC2) as u8,
                write,
                rt,
                value: if write { reg(rt) } else { 0 },
            })
        }
        ExceptionClass::Cp15Wide => {
            if !passed(iss, cpsr) {
                return Decoded::Skip;
            }
            let f = LocalRegisterCopy::<u32, ISS_MCRR::Register>::new(iss);
            let rt = f.read(ISS_MCRR::RT) as u8;
            let rt2 = f.read(ISS_MCRR::RT2) as u8;
            let write = !f.is_set(ISS_MCRR::READ);
            Trap::Cp15Wide(Cp15WideAccess {
                opc1: f.read(ISS_MCRR::OPC1) as u8,
                crm: f.read(ISS_MCRR::CRM) as u8,
                write,
                rt,
                rt2,
                value: if write { u64::from(reg(rt2)) << 32 | u64::from(reg(rt)) } else { 0 },
            })
        }
        ExceptionClass::Hvc => Trap::Hvc {
            imm: LocalRegisterCopy::<u32, ISS_HVC::Register>::new(iss).read(ISS_HVC::IMM16) as u16,
            args: args(),
        },
        ExceptionClass::Smc => {
            if !passed(iss, cpsr) {
                return Decoded::Skip;
            }
            Trap::Smc { args: args() }
        }
        ExceptionClass::PrefetchAbortGuest => Trap::PrefetchAbort { ipa: s.fault_ipa(s.hifar), far: s.hifar },
        ExceptionClass::DataAbortGuest => return decode_data_abort(s, iss, reg),
        ExceptionClass::Unknown | ExceptionClass::Other(_) => Trap::Unknown { hsr: s.hsr },
    };
    Decoded::Trap(trap)
}

fn decode_data_abort(s: &Syndrome, iss: u32, reg: impl Fn(u8) -> u32) -> Decoded {
    let f = LocalRegisterCopy::<u32, ISS_DABT::Register>::new(iss);
    let ipa = s.fault_ipa(s.hdfar);
    let write = f.is_set(ISS_DABT::WNR);
    if f.is_set(ISS_DABT::CM) {
        return Decoded::Skip;
    }
    // A fault on the stage-2 walk of the guest's own page tables, an
    // external abort, or a load/store without syndrome (LDM/STM, writeback
    // forms) cannot be emulated as one register transfer.
    if !f.is_set(ISS_DABT::ISV) || f.is_set(ISS_DABT::S1PTW) || f.is_set(ISS_DABT::EA) {
        return Decoded::Trap(Trap::DataAbortNoSyndrome { ipa, far: s.hdfar, write });
    }
    let size = match f.read(ISS_DABT::SAS) {
        0 => AccessSize::Byte,
        1 => AccessSize::Half,
        2 => AccessSize::Word,
        _ => AccessSize::Double,
    };
    let rt = f.read(ISS_DABT::SRT) as u8;
    let value = if write { u64::from(reg(rt)) & size.mask() } else { 0 };
    Decoded::Trap(Trap::Mmio(MmioAccess {
        ipa,
        far: s.hdfar,
        size,
        write,
        value,
        rt,
        sign_extend: f.is_set(ISS_DABT::SSE),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hsr(ec: u32, il: bool, iss: u32) -> u32 {
        ec << 26 | u32::from(il) << 25 | iss
    }

    /// HPFAR for a fault on `ipa`: IPA[39:12] in bits [31:4].
    fn hpfar(ipa: u32) -> u32 {
        (ipa >> 12) << 4
    }

    fn regs(n: u8) -> u32 {
        0x1000 + u32::from(n)
    }

    const ALWAYS: u32 = 1 << 24 | 0xe << 20;

    #[test]
    fn hvc_carries_immediate_and_arguments() {
        let s = Syndrome { hsr: hsr(0x12, true, 0x1234), ..Default::default() };
        assert_eq!(
            decode(&s, 0x13, regs),
            Decoded::Trap(Trap::Hvc { imm: 0x1234, args: [0x1000, 0x1001, 0x1002, 0x1003] })
        );
        assert_eq!(s.insn_len(), 4);
    }

    #[test]
    fn mmio_store_word() {
        // ISV, SAS=word, SRT=5, WnR, DFSC = translation fault level 2.
        let iss = 1 << 24 | 2 << 22 | 5 << 16 | 1 << 6 | 0b000110;
        let s = Syndrome { hsr: hsr(0x24, true, iss), hdfar: 0xc080_0018, hpfar: hpfar(0x0900_0018), hifar: 0 };
        match decode(&s, 0x13, regs) {
            Decoded::Trap(Trap::Mmio(m)) => {
                assert_eq!(m.ipa, 0x0900_0018);
                assert_eq!(m.far, 0xc080_0018);
                assert_eq!(m.size, AccessSize::Word);
                assert!(m.write);
                assert_eq!(m.value, 0x1005);
                assert_eq!(m.rt, 5);
                assert!(!m.sign_extend);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn mmio_signed_byte_load_masks_nothing() {
        let iss = 1 << 24 | 1 << 21 | 3 << 16;
        let s = Syndrome { hsr: hsr(0x24, false, iss), hdfar: 0x0800_0001, hpfar: hpfar(0x0800_0001), hifar: 0 };
        let Decoded::Trap(Trap::Mmio(m)) = decode(&s, 0x13, regs) else { panic!("not mmio") };
        assert_eq!((m.ipa, m.size, m.write, m.value, m.sign_extend), (0x0800_0001, AccessSize::Byte, false, 0, true));
        assert_eq!(s.insn_len(), 2);
    }

    #[test]
    fn permission_faults_take_their_ipa_from_stage_1() {
        // ISV, SAS=halfword, SRT=3, WnR, DFSC = permission fault level 3.
        let iss = (1 << 24) | (1 << 22) | (3 << 16) | (1 << 6) | 0b00_1111;
        let s = Syndrome { hsr: hsr(0x24, true, iss), hdfar: 0xc080_0000, hpfar: 0, hifar: 0x1234 };
        assert_eq!(s.permission_fault_va(), Some(0xc080_0000));
        // An instruction fetched from a never-executable page.
        let fetch = Syndrome { hsr: hsr(0x20, true, 0b00_1111), ..s };
        assert_eq!(fetch.permission_fault_va(), Some(0x1234));
        // On a stage-1 walk HPFAR is valid; translation faults have it.
        let walk = Syndrome { hsr: hsr(0x24, true, iss | (1 << 7)), ..s };
        assert_eq!(walk.permission_fault_va(), None);
        let translation = Syndrome { hsr: hsr(0x24, true, (iss & !0x3f) | 0b00_0111), ..s };
        assert_eq!(translation.permission_fault_va(), None);
        // Other classes carry no fault status.
        assert_eq!(Syndrome { hsr: hsr(0x12, true, 0b00_1111), ..s }.permission_fault_va(), None);
        // PAR: the page in bits [31:12], F in bit 0 (64-bit format: bit 11
        // set, attributes above).
        assert_eq!(Syndrome::hpfar_from_par(0xff00_0000_0900_0800), Some(hpfar(0x0900_0000)));
        assert_eq!(Syndrome::hpfar_from_par(0x0900_0000), Some(hpfar(0x0900_0000)));
        assert_eq!(Syndrome::hpfar_from_par(0x0900_0001), None);
    }

    #[test]
    fn abort_without_syndrome_is_not_emulated() {
        let iss = 1 << 6 | 0b000101;
        let s = Syndrome { hsr: hsr(0x24, true, iss), hdfar: 0x1234_5678, hpfar: hpfar(0x0a00_0000), hifar: 0 };
        assert_eq!(
            decode(&s, 0x13, regs),
            Decoded::Trap(Trap::DataAbortNoSyndrome { ipa: 0x0a00_0678, far: 0x1234_5678, write: true })
        );
        // A stage-1 walk fault is refused too, even with ISV set.
        let s = Syndrome { hsr: hsr(0x24, true, 1 << 24 | 1 << 7), ..s };
        assert!(matches!(decode(&s, 0x13, regs), Decoded::Trap(Trap::DataAbortNoSyndrome { .. })));
        // Cache maintenance on an address with nothing behind it is skipped.
        let s = Syndrome { hsr: hsr(0x24, true, 1 << 8), ..s };
        assert_eq!(decode(&s, 0x13, regs), Decoded::Skip);
    }

    #[test]
    fn mcr_and_mrc_fields() {
        // MCR p15, 0, r3, c7, c14, 2 (DCCISW), condition always.
        let iss = ALWAYS | 2 << 17 | 7 << 10 | 3 << 5 | 14 << 1;
        let s = Syndrome { hsr: hsr(0x03, true, iss), ..Default::default() };
        assert_eq!(
            decode(&s, 0x13, regs),
            Decoded::Trap(Trap::Cp15(Cp15Access {
                opc1: 0,
                crn: 7,
                crm: 14,
                opc2: 2,
                write: true,
                rt: 3,
                value: 0x1003
            }))
        );
        // MRC p15, 0, r2, c1, c0, 1 (ACTLR read).
        let iss = ALWAYS | 1 << 17 | 1 << 10 | 2 << 5 | 1;
        let s = Syndrome { hsr: hsr(0x03, true, iss), ..Default::default() };
        assert_eq!(
            decode(&s, 0x13, regs),
            Decoded::Trap(Trap::Cp15(Cp15Access { opc1: 0, crn: 1, crm: 0, opc2: 1, write: false, rt: 2, value: 0 }))
        );
    }

    #[test]
    fn mcrr_joins_both_registers() {
        // MCRR p15, 2, r4, r5, c14 (CNTP_CVAL write).
        let iss = ALWAYS | 2 << 16 | 5 << 10 | 4 << 5 | 14 << 1;
        let s = Syndrome { hsr: hsr(0x04, true, iss), ..Default::default() };
        assert_eq!(
            decode(&s, 0x13, regs),
            Decoded::Trap(Trap::Cp15Wide(Cp15WideAccess {
                opc1: 2,
                crm: 14,
                write: true,
                rt: 4,
                rt2: 5,
                value: 0x1005_0000_1004
            }))
        );
    }

    #[test]
    fn failed_condition_is_skipped() {
        // WFIEQ with Z clear: skipped. With Z set: a WFI.
        let iss = 1 << 24;
        let s = Syndrome { hsr: hsr(0x01, true, iss), ..Default::default() };
        assert_eq!(decode(&s, 0x13, regs), Decoded::Skip);
        assert_eq!(decode(&s, 0x13 | 1 << 30, regs), Decoded::Trap(Trap::Wfi));
        // WFE, no COND in the syndrome, not in an IT block: unconditional.
        let s = Syndrome { hsr: hsr(0x01, false, 1), ..Default::default() };
        assert_eq!(decode(&s, 0x33, regs), Decoded::Trap(Trap::Wfe));
        // Thumb, IT block with condition NE (ITSTATE = 0b0001_1000) and Z set.
        let it: u32 = 0x18;
        let cpsr = 0x33 | 1 << 30 | (it & 0xfc) << 8 | (it & 3) << 25;
        assert_eq!(decode(&s, cpsr, regs), Decoded::Skip);
    }

    #[test]
    fn conditions() {
        let (n, z, c, v) = (1 << 31, 1 << 30, 1 << 29, 1 << 28);
        assert!(condition_holds(0x0, z));
        assert!(!condition_holds(0x1, z));
        assert!(condition_holds(0x8, c));
        assert!(!condition_holds(0x8, c | z));
        assert!(condition_holds(0xa, n | v));
        assert!(condition_holds(0xb, n));
        assert!(condition_holds(0xc, 0));
        assert!(!condition_holds(0xd, 0));
        assert!(condition_holds(0xe, 0));
        assert!(condition_holds(0xf, 0));
    }

    #[test]
    fn unknown_classes_keep_the_raw_syndrome() {
        for ec in [0x00u32, 0x05, 0x07, 0x11, 0x21, 0x25, 0x3f] {
            let s = Syndrome { hsr: hsr(ec, true, 0x42), ..Default::default() };
            assert_eq!(decode(&s, 0x13, regs), Decoded::Trap(Trap::Unknown { hsr: s.hsr }), "ec {ec:#x}");
        }
    }

    #[test]
    fn every_syndrome_decodes_without_panic() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let s = Syndrome { hsr: x, hdfar: x.rotate_left(7), hifar: x.rotate_left(3), hpfar: x.rotate_left(11) };
            let _ = decode(&s, x.rotate_left(13), regs);
        }
    }
}
