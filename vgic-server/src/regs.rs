//! The GICv2 distributor register map: offsets, field encodings and the
//! identification values, defined once, and the decoding of an access
//! (offset and size) into a typed [`GicdReg`].
//!
//! Source: the GICv2 architecture specification (Arm IHI 0048B), chapter 4
//! "Programmers' Model": the distributor register map (Table 4-1) and the
//! distributor register descriptions (§4.3), cited below by register name.
//!
//! # Access widths
//!
//! The register-access rules of chapter 4: every register supports word accesses;
//! GICD_IPRIORITYRn, GICD_ITARGETSRn, GICD_CPENDSGIRn and GICD_SPENDSGIRn
//! also support byte accesses; whether any halfword access is supported is
//! IMPLEMENTATION DEFINED, and this distributor supports none. An access of
//! a width a register does not support, or not naturally aligned, decodes to
//! [`GicdReg::BadAccess`], which the distributor answers RAZ/WI, the answer
//! it gives to every location it does not implement (reserved and
//! IMPLEMENTATION DEFINED ranges, GICD_NSACRn without the Security
//! Extensions). One rule for every unsupported access keeps the guest's view
//! predictable and matches what KVM's vGIC does.

use ipc::AccessSize;
use serde::{Deserialize, Serialize};

/// The size of the distributor's register frame; offsets at and above it
/// (inside a larger guest region) are reserved.
pub const FRAME_SIZE: u64 = 0x1000;

/// Distributor register offsets (Table 4-1).
pub mod offset {
    /// GICD_CTLR, Distributor Control Register.
    pub const CTLR: u32 = 0x000;
    /// GICD_TYPER, Interrupt Controller Type Register.
    pub const TYPER: u32 = 0x004;
    /// GICD_IIDR, Distributor Implementer Identification Register.
    pub const IIDR: u32 = 0x008;
    /// Start of the first IMPLEMENTATION DEFINED range (0x020-0x03C).
    pub const IMPDEF0: u32 = 0x020;
    /// Start of the reserved range after it (0x040-0x07C).
    pub const RESERVED0: u32 = 0x040;
    /// GICD_IGROUPRn, Interrupt Group Registers.
    pub const IGROUPR: u32 = 0x080;
    /// GICD_ISENABLERn, Interrupt Set-Enable Registers.
    pub const ISENABLER: u32 = 0x100;
    /// GICD_ICENABLERn, Interrupt Clear-Enable Registers.
    pub const ICENABLER: u32 = 0x180;
    /// GICD_ISPENDRn, Interrupt Set-Pending Registers.
    pub const ISPENDR: u32 = 0x200;
    /// GICD_ICPENDRn, Interrupt Clear-Pending Registers.
    pub const ICPENDR: u32 = 0x280;
    /// GICD_ISACTIVERn, GICv2 Interrupt Set-Active Registers.
    pub const ISACTIVER: u32 = 0x300;
    /// GICD_ICACTIVERn, Interrupt Clear-Active Registers.
    pub const ICACTIVER: u32 = 0x380;
    /// GICD_IPRIORITYRn, Interrupt Priority Registers (0x400-0x7F8; 0x7FC
    /// is reserved).
    pub const IPRIORITYR: u32 = 0x400;
    /// The reserved word after the priority registers.
    pub const IPRIORITYR_END: u32 = 0x7fc;
    /// GICD_ITARGETSRn, Interrupt Processor Targets Registers (0x800-0xBF8;
    /// 0xBFC is reserved).
    pub const ITARGETSR: u32 = 0x800;
    /// The reserved word after the target registers.
    pub const ITARGETSR_END: u32 = 0xbfc;
    /// GICD_ICFGRn, Interrupt Configuration Registers (0xC00-0xCFC).
    pub const ICFGR: u32 = 0xc00;
    /// Start of the IMPLEMENTATION DEFINED range 0xD00-0xDFC.
    pub const IMPDEF1: u32 = 0xd00;
    /// GICD_NSACRn, Non-secure Access Control Registers (0xE00-0xEFC).
    pub const NSACR: u32 = 0xe00;
    /// GICD_SGIR, Software Generated Interrupt Register.
    pub const SGIR: u32 = 0xf00;
    /// GICD_CPENDSGIRn, SGI Clear-Pending Registers (0xF10-0xF1C).
    pub const CPENDSGIR: u32 = 0xf10;
    /// GICD_SPENDSGIRn, SGI Set-Pending Registers (0xF20-0xF2C).
    pub const SPENDSGIR: u32 = 0xf20;
    /// Start of the reserved range 0xF30-0xFCC.
    pub const RESERVED1: u32 = 0xf30;
    /// Start of the identification registers (0xFD0-0xFFC).
    pub const ID: u32 = 0xfd0;
}

/// GICD_CTLR bits for a GIC without the Security Extensions (§4.3, GICD_CTLR): both
/// groups have an enable.
pub mod ctlr {
    /// EnableGrp0, bit \[0\]: forward pending Group 0 interrupts.
    pub const ENABLE_GRP0: u32 = 1 << 0;
    /// EnableGrp1, bit \[1\]: forward pending Group 1 interrupts.
    pub const ENABLE_GRP1: u32 = 1 << 1;
}

/// GICD_TYPER fields (§4.3, GICD_TYPER).
pub mod typer {
    /// ITLinesNumber, bits \[4:0\]: the distributor implements
    /// 32 * (ITLinesNumber + 1) INTIDs (at most 1020).
    pub const IT_LINES_SHIFT: u32 = 0;
    /// CPUNumber, bits \[7:5\]: implemented CPU interfaces - 1.
    pub const CPU_NUMBER_SHIFT: u32 = 5;
    /// SecurityExtn, bit \[10\]: 0, this distributor has no Security Extensions
    /// (and so LSPI, bits \[15:11\], is 0 too).
    pub const SECURITY_EXTN: u32 = 1 << 10;
}

/// GICD_IIDR (§4.3, GICD_IIDR): ProductID \[31:24\], Variant \[19:16\], Revision
/// \[15:12\], Implementer \[11:0\] (JEP106 code: continuation count in \[11:8\],
/// identity in \[6:0\]).
///
/// The implementer is Arm's JEP106 code (0x43B: four continuation codes,
/// identity 0x3B), as KVM's vGIC reports, because the programming model is
/// Arm's GICv2 architecture; the ProductID 0x53 ('S', splitvisor) keeps
/// guests from mistaking it for an Arm product and applying that product's
/// errata workarounds (Linux keys GIC quirks on the whole IIDR). Revision 2
/// says, as in KVM's numbering, that interrupt groups are programmable and
/// honoured.
pub mod iidr {
    /// Implementer, bits \[11:0\]: Arm.
    pub const IMPLEMENTER_ARM: u32 = 0x43b;
    /// Revision, bits \[15:12\].
    pub const REVISION: u32 = 2;
    /// ProductID, bits \[31:24\].
    pub const PRODUCT_ID: u32 = 0x53;
    /// The register value.
    pub const VALUE: u32 = PRODUCT_ID << 24 | REVISION << 12 | IMPLEMENTER_ARM;
}

/// GICD_SGIR fields (§4.3, GICD_SGIR).
pub mod sgir {
    /// SGIINTID, bits \[3:0\].
    pub const INTID_MASK: u32 = 0xf;
    /// NSATT, bit \[15\]: only meaningful with the Security Extensions; ignored.
    pub const NSATT: u32 = 1 << 15;
    /// CPUTargetList, bits \[23:16\].
    pub const TARGET_LIST_SHIFT: u32 = 16;
    /// TargetListFilter, bits \[25:24\].
    pub const FILTER_SHIFT: u32 = 24;
    /// Width mask of TargetListFilter (after shifting).
    pub const FILTER_MASK: u32 = 0x3;
}

/// GICD_SGIR.TargetListFilter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SgiFilter {
    /// 0b00: the CPUs in CPUTargetList.
    List(u8),
    /// 0b01: every CPU but the requesting one.
    AllButSelf,
    /// 0b10: only the requesting CPU.
    SelfOnly,
    /// 0b11: reserved; the write has no effect.
    Reserved,
}

/// A decoded GICD_SGIR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SgiRequest {
    /// Which CPUs.
    pub filter: SgiFilter,
    /// SGIINTID.
    pub sgi: u8,
}

impl SgiRequest {
    /// Decode a GICD_SGIR value.
    pub fn decode(raw: u32) -> Self {
        let filter = match (raw >> sgir::FILTER_SHIFT) & sgir::FILTER_MASK {
            0 => SgiFilter::List((raw >> sgir::TARGET_LIST_SHIFT) as u8),
            1 => SgiFilter::AllButSelf,
            2 => SgiFilter::SelfOnly,
            _ => SgiFilter::Reserved,
        };
        SgiRequest { filter, sgi: (raw & sgir::INTID_MASK) as u8 }
    }
}

/// GICD_ICFGRn Int_config fields (§4.3, GICD_ICFGRn): two bits per interrupt.
pub mod icfgr {
    /// Int_config\[1\]: 1 edge-triggered, 0 level-sensitive.
    pub const EDGE: u32 = 0b10;
    /// Bits per interrupt.
    pub const BITS: u32 = 2;
    /// Int_config\[0\] is reserved in GICv2 (it selected the 1-N / N-N model
    /// in GICv1); this distributor holds it as 0.
    pub const RESERVED: u32 = 0b01;
}

/// The identification registers (§4.3, Identification registers): only ICPIDR2.ArchRev is architected; the rest follow the usual
/// Arm peripheral/component ID layout with the values below.
pub mod id {
    /// ICPIDR2.ArchRev, bits \[7:4\]: 2, GICv2.
    pub const ARCH_REV: u32 = 2;
    /// Part number (PIDR0 \[7:0\], PIDR1 \[3:0\]): 0x053 for splitvisor's
    /// distributor, matching the IIDR ProductID.
    pub const PART_NUMBER: u32 = 0x053;
    /// JEP106 identity code of the designer (Arm, as in the IIDR).
    pub const JEP106_ID: u32 = 0x3b;
    /// JEP106 continuation code (PIDR4 \[3:0\]).
    pub const JEP106_CONTINUATION: u32 = 0x4;
    /// PIDR2 bit \[3\]: the JEP106 code is used.
    pub const JEDEC_USED: u32 = 1 << 3;

    /// PIDR0-PIDR7 and CIDR0-CIDR3, by byte offset from 0xFD0, one word each:
    /// PIDR4, PIDR5, PIDR6, PIDR7, PIDR0, PIDR1, PIDR2, PIDR3, CIDR0-3.
    pub const VALUES: [u32; 12] = [
        JEP106_CONTINUATION,                         // 0xFD0 PIDR4
        0,                                           // 0xFD4 PIDR5
        0,                                           // 0xFD8 PIDR6
        0,                                           // 0xFDC PIDR7
        PART_NUMBER & 0xff,                          // 0xFE0 PIDR0
        (JEP106_ID & 0xf) << 4 | PART_NUMBER >> 8,   // 0xFE4 PIDR1
        ARCH_REV << 4 | JEDEC_USED | JEP106_ID >> 4, // 0xFE8 PIDR2 (ICPIDR2)
        0,                                           // 0xFEC PIDR3
        0x0d,                                        // 0xFF0 CIDR0
        0xf0,                                        // 0xFF4 CIDR1
        0x05,                                        // 0xFF8 CIDR2
        0xb1,                                        // 0xFFC CIDR3
    ];
}

/// A byte-accessible register's access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Width {
    /// One byte: one interrupt.
    Byte,
    /// One word: four interrupts.
    Word,
}

/// A distributor access, decoded from its offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GicdReg {
    /// GICD_CTLR.
    Ctlr,
    /// GICD_TYPER (read-only).
    Typer,
    /// GICD_IIDR (read-only).
    Iidr,
    /// GICD_IGROUPRn: interrupts 32n to 32n+31.
    Igroupr(u8),
    /// GICD_ISENABLERn.
    Isenabler(u8),
    /// GICD_ICENABLERn.
    Icenabler(u8),
    /// GICD_ISPENDRn.
    Ispendr(u8),
    /// GICD_ICPENDRn.
    Icpendr(u8),
    /// GICD_ISACTIVERn.
    Isactiver(u8),
    /// GICD_ICACTIVERn.
    Icactiver(u8),
    /// GICD_IPRIORITYRn, from INTID `first` (one byte per interrupt).
    Ipriorityr {
        /// The INTID of the lowest byte accessed.
        first: u16,
        /// Byte or word.
        width: Width,
    },
    /// GICD_ITARGETSRn, from INTID `first`.
    Itargetsr {
        /// The INTID of the lowest byte accessed.
        first: u16,
        /// Byte or word.
        width: Width,
    },
    /// GICD_ICFGRn: interrupts 16n to 16n+15.
    Icfgr(u8),
    /// GICD_NSACRn (RAZ/WI: no Security Extensions).
    Nsacr(u8),
    /// GICD_SGIR (write-only).
    Sgir,
    /// GICD_CPENDSGIRn, from SGI `first`.
    Cpendsgir {
        /// The SGI of the lowest byte accessed.
        first: u8,
        /// Byte or word.
        width: Width,
    },
    /// GICD_SPENDSGIRn, from SGI `first`.
    Spendsgir {
        /// The SGI of the lowest byte accessed.
        first: u8,
        /// Byte or word.
        width: Width,
    },
    /// An identification register: index into [`id::VALUES`] (read-only).
    Id(u8),
    /// An IMPLEMENTATION DEFINED location this distributor does not use
    /// (RAZ/WI); the offset.
    ImplementationDefined(u32),
    /// A reserved location (RAZ/WI); the offset.
    Reserved(u32),
    /// An access of a width the register does not support, or misaligned
    /// (RAZ/WI).
    BadAccess {
        /// The offset.
        offset: u32,
        /// The access size.
        size: AccessSize,
    },
}

/// Decode an access at `offset` from the distributor base. (Inline: the
/// server's one call site then drops the call and the enum's return through
/// memory, 17 instructions of each GICD access.)
#[inline]
pub fn decode(offset: u64, size: AccessSize) -> GicdReg {
    if offset >= FRAME_SIZE {
        return GicdReg::Reserved(u32::try_from(offset).unwrap_or(u32::MAX));
    }
    // In range: fits in u32.
    let off = offset as u32;
    let bytes = size.bytes();
    let width = match size {
        AccessSize::Byte => Width::Byte,
        AccessSize::Word => Width::Word,
        AccessSize::Half | AccessSize::Double => {
            return GicdReg::BadAccess { offset: off, size };
        }
    };
    if off % bytes != 0 {
        return GicdReg::BadAccess { offset: off, size };
    }
    let word_only = |reg: GicdReg| match width {
        Width::Word => reg,
        Width::Byte => GicdReg::BadAccess { offset: off, size },
    };
    // Index of the 32-bit register in a bank starting at `base`.
    let n = |base: u32| ((off - base) / 4) as u8;
    use offset::*;
    // One jump on the access's block of 128 bytes first, for the wide
    // banks that fill whole blocks and for GICD_SGIR: the match after it
    // tests its ranges one after another, some forty instructions to reach
    // GICD_IPRIORITYRn or GICD_SGIR. (That match stays the whole map: the
    // blocks' last words, reserved or not, and the other offsets.)
    const BLOCK: u32 = 0x80;
    const B_IPRIORITYR: u32 = IPRIORITYR / BLOCK;
    // The last whole blocks (the reserved word after a bank is in the next).
    const B_IPRIORITYR_LAST: u32 = IPRIORITYR_END / BLOCK - 1;
    const B_ITARGETSR: u32 = ITARGETSR / BLOCK;
    const B_ITARGETSR_LAST: u32 = ITARGETSR_END / BLOCK - 1;
    const B_SGIR: u32 = SGIR / BLOCK;
    const _: () = assert!(IPRIORITYR % BLOCK == 0 && ITARGETSR % BLOCK == 0 && SGIR % BLOCK == 0);
    if off >= IPRIORITYR {
        match off / BLOCK {
            B_IPRIORITYR..=B_IPRIORITYR_LAST => {
                return GicdReg::Ipriorityr { first: (off - IPRIORITYR) as u16, width };
            }
            B_ITARGETSR..=B_ITARGETSR_LAST => return GicdReg::Itargetsr { first: (off - ITARGETSR) as u16, width },
            B_SGIR if off == SGIR => return word_only(GicdReg::Sgir),
            _ => {}
        }
    }
    match off {
        // A byte inside a word-only register is a bad access to it.
        CTLR..TYPER => word_only(GicdReg::Ctlr),
        TYPER..IIDR => word_only(GicdReg::Typer),
        IIDR..0x00c => word_only(GicdReg::Iidr),
        0x00c..IMPDEF0 | RESERVED0..IGROUPR => GicdReg::Reserved(off),
        IMPDEF0..RESERVED0 => GicdReg::ImplementationDefined(off),
        IGROUPR..ISENABLER => word_only(GicdReg::Igroupr(n(IGROUPR))),
        ISENABLER..ICENABLER => word_only(GicdReg::Isenabler(n(ISENABLER))),
        ICENABLER..ISPENDR => word_only(GicdReg::Icenabler(n(ICENABLER))),
        ISPENDR..ICPENDR => word_only(GicdReg::Ispendr(n(ISPENDR))),
        ICPENDR..ISACTIVER => word_only(GicdReg::Icpendr(n(ICPENDR))),
        ISACTIVER..ICACTIVER => word_only(GicdReg::Isactiver(n(ISACTIVER))),
        ICACTIVER..IPRIORITYR => word_only(GicdReg::Icactiver(n(ICACTIVER))),
        IPRIORITYR..IPRIORITYR_END => GicdReg::Ipriorityr { first: (off - IPRIORITYR) as u16, width },
        IPRIORITYR_END..ITARGETSR => GicdReg::Reserved(off),
        ITARGETSR..ITARGETSR_END => GicdReg::Itargetsr { first: (off - ITARGETSR) as u16, width },
        ITARGETSR_END..ICFGR => GicdReg::Reserved(off),
        ICFGR..IMPDEF1 => word_only(GicdReg::Icfgr(n(ICFGR))),
        IMPDEF1..NSACR => GicdReg::ImplementationDefined(off),
        NSACR..SGIR => word_only(GicdReg::Nsacr(n(NSACR))),
        SGIR..0xf04 => word_only(GicdReg::Sgir),
        0xf04..CPENDSGIR => GicdReg::Reserved(off),
        CPENDSGIR..SPENDSGIR => GicdReg::Cpendsgir { first: (off - CPENDSGIR) as u8, width },
        SPENDSGIR..RESERVED1 => GicdReg::Spendsgir { first: (off - SPENDSGIR) as u8, width },
        RESERVED1..ID => GicdReg::Reserved(off),
        ID..0x1000 => word_only(GicdReg::Id(n(ID))),
        _ => GicdReg::Reserved(off),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessSize::{Byte, Double, Half, Word};

    #[test]
    fn the_register_map() {
        assert_eq!(decode(0x000, Word), GicdReg::Ctlr);
        assert_eq!(decode(0x004, Word), GicdReg::Typer);
        assert_eq!(decode(0x008, Word), GicdReg::Iidr);
        assert_eq!(decode(0x00c, Word), GicdReg::Reserved(0xc));
        assert_eq!(decode(0x020, Word), GicdReg::ImplementationDefined(0x20));
        assert_eq!(decode(0x03c, Word), GicdReg::ImplementationDefined(0x3c));
        assert_eq!(decode(0x040, Word), GicdReg::Reserved(0x40));
        assert_eq!(decode(0x080, Word), GicdReg::Igroupr(0));
        assert_eq!(decode(0x0fc, Word), GicdReg::Igroupr(31));
        assert_eq!(decode(0x104, Word), GicdReg::Isenabler(1));
        assert_eq!(decode(0x1fc, Word), GicdReg::Icenabler(31));
        assert_eq!(decode(0x200, Word), GicdReg::Ispendr(0));
        assert_eq!(decode(0x284, Word), GicdReg::Icpendr(1));
        assert_eq!(decode(0x300, Word), GicdReg::Isactiver(0));
        assert_eq!(decode(0x3fc, Word), GicdReg::Icactiver(31));
        assert_eq!(decode(0x400, Word), GicdReg::Ipriorityr { first: 0, width: Width::Word });
        assert_eq!(decode(0x7fb, Byte), GicdReg::Ipriorityr { first: 1019, width: Width::Byte });
        assert_eq!(decode(0x7fc, Word), GicdReg::Reserved(0x7fc));
        assert_eq!(decode(0x81d, Byte), GicdReg::Itargetsr { first: 29, width: Width::Byte });
        assert_eq!(decode(0xbfc, Word), GicdReg::Reserved(0xbfc));
        assert_eq!(decode(0xc04, Word), GicdReg::Icfgr(1));
        assert_eq!(decode(0xcfc, Word), GicdReg::Icfgr(63));
        assert_eq!(decode(0xd00, Word), GicdReg::ImplementationDefined(0xd00));
        assert_eq!(decode(0xe00, Word), GicdReg::Nsacr(0));
        assert_eq!(decode(0xf00, Word), GicdReg::Sgir);
        assert_eq!(decode(0xf04, Word), GicdReg::Reserved(0xf04));
        assert_eq!(decode(0xf13, Byte), GicdReg::Cpendsgir { first: 3, width: Width::Byte });
        assert_eq!(decode(0xf2c, Word), GicdReg::Spendsgir { first: 12, width: Width::Word });
        assert_eq!(decode(0xf30, Word), GicdReg::Reserved(0xf30));
        assert_eq!(decode(0xfcc, Word), GicdReg::Reserved(0xfcc));
        assert_eq!(decode(0xfd0, Word), GicdReg::Id(0));
        assert_eq!(decode(0xfe8, Word), GicdReg::Id(6));
        assert_eq!(decode(0xffc, Word), GicdReg::Id(11));
        assert_eq!(decode(0x1000, Word), GicdReg::Reserved(0x1000));
        assert_eq!(decode(0xffff, Byte), GicdReg::Reserved(0xffff));
        assert_eq!(decode(u64::MAX, Word), GicdReg::Reserved(u32::MAX));
    }

    #[test]
    fn widths_and_alignment() {
        // Byte access only where chapter 4 allows it.
        for off in [0x000, 0x004, 0x080, 0x100, 0x180, 0x200, 0x300, 0xc00, 0xe00, 0xf00, 0xfe8] {
            assert_eq!(decode(off, Byte), GicdReg::BadAccess { offset: off as u32, size: Byte });
        }
        for off in [0x400, 0x401, 0x802, 0xf10, 0xf2f] {
            assert!(!matches!(decode(off, Byte), GicdReg::BadAccess { .. }), "{off:#x}");
        }
        // No halfword or doubleword accesses anywhere.
        for off in [0x000, 0x400, 0x800, 0xf10] {
            assert_eq!(decode(off, Half), GicdReg::BadAccess { offset: off as u32, size: Half });
            assert_eq!(decode(off, Double), GicdReg::BadAccess { offset: off as u32, size: Double });
        }
        // A byte inside a word-only register.
        assert_eq!(decode(0x001, Byte), GicdReg::BadAccess { offset: 0x001, size: Byte });
        assert_eq!(decode(0x00b, Byte), GicdReg::BadAccess { offset: 0x00b, size: Byte });
        assert_eq!(decode(0xf03, Byte), GicdReg::BadAccess { offset: 0xf03, size: Byte });
        assert_eq!(decode(0xfe9, Byte), GicdReg::BadAccess { offset: 0xfe9, size: Byte });
        // Misaligned words.
        assert_eq!(decode(0x401, Word), GicdReg::BadAccess { offset: 0x401, size: Word });
        assert_eq!(decode(0x102, Word), GicdReg::BadAccess { offset: 0x102, size: Word });
    }

    #[test]
    fn every_offset_and_size_decodes() {
        for off in 0..0x1100u64 {
            for size in [Byte, Half, Word, Double] {
                let _ = decode(off, size);
            }
        }
    }

    #[test]
    fn sgir_fields() {
        assert_eq!(SgiRequest::decode(0x00a5_800f), SgiRequest { filter: SgiFilter::List(0xa5), sgi: 15 });
        assert_eq!(SgiRequest::decode(0x0100_0003).filter, SgiFilter::AllButSelf);
        assert_eq!(SgiRequest::decode(0x02ff_0001).filter, SgiFilter::SelfOnly);
        assert_eq!(SgiRequest::decode(0x0300_0001).filter, SgiFilter::Reserved);
        // Bits [31:26], [14:4] are ignored.
        assert_eq!(SgiRequest::decode(0xfc00_7ff2), SgiRequest { filter: SgiFilter::List(0), sgi: 2 });
    }

    #[test]
    fn identification_values() {
        assert_eq!(id::VALUES[6] >> 4, 2, "ICPIDR2.ArchRev is 2 for GICv2");
        assert_eq!(id::VALUES[8..], [0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(iidr::VALUE, 0x5300_243b);
        // PIDR1/PIDR2 carry the JEP106 identity 0x3B.
        assert_eq!(id::VALUES[5] >> 4 | (id::VALUES[6] & 7) << 4, 0x3b);
    }
}
