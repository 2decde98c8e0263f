//! Processor modes and data-fault status decoding for ARMv7-A.
//!
//! Pure decoding of raw register values, so that it is unit-tested on the
//! host; the instructions that read the registers live in `arch`.
//!
//! Sources: Arm Architecture Reference Manual ARMv7-A/R (DDI 0406C),
//! B1.3.1 "ARM processor modes" (CPSR.M), B4.1.52 "DFSR, Data Fault Status
//! Register" and B3.13 "Exception reporting in a VMSA implementation" (the
//! fault status encodings of the short- and the long-descriptor formats).

use core::fmt;

/// CPSR.M, the mode field, is CPSR[4:0] (B1.3.1).
pub const CPSR_MODE_MASK: u32 = 0x1f;
/// CPSR.M encoding of User mode.
pub const MODE_USR: u32 = 0x10;
/// CPSR.M encoding of FIQ mode.
pub const MODE_FIQ: u32 = 0x11;
/// CPSR.M encoding of IRQ mode.
pub const MODE_IRQ: u32 = 0x12;
/// CPSR.M encoding of Supervisor mode: where the Linux boot protocol enters.
pub const MODE_SVC: u32 = 0x13;
/// CPSR.M encoding of Monitor mode (Security Extensions).
pub const MODE_MON: u32 = 0x16;
/// CPSR.M encoding of Abort mode: where data and prefetch aborts are taken.
pub const MODE_ABT: u32 = 0x17;
/// CPSR.M encoding of Hyp mode (Virtualization Extensions): a guest must
/// never see it.
pub const MODE_HYP: u32 = 0x1a;
/// CPSR.M encoding of Undefined mode.
pub const MODE_UND: u32 = 0x1b;
/// CPSR.M encoding of System mode.
pub const MODE_SYS: u32 = 0x1f;

/// A processor mode, decoded from CPSR.M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// User (PL0).
    User,
    /// FIQ (PL1).
    Fiq,
    /// IRQ (PL1).
    Irq,
    /// Supervisor (PL1).
    Supervisor,
    /// Monitor (secure PL1).
    Monitor,
    /// Abort (PL1).
    Abort,
    /// Hyp (PL2).
    Hyp,
    /// Undefined (PL1).
    Undefined,
    /// System (PL1).
    System,
    /// A reserved encoding of CPSR.M.
    Unknown(u32),
}

impl Mode {
    /// Decodes the mode field of a CPSR or SPSR value.
    pub const fn from_psr(psr: u32) -> Self {
        match psr & CPSR_MODE_MASK {
            MODE_USR => Self::User,
            MODE_FIQ => Self::Fiq,
            MODE_IRQ => Self::Irq,
            MODE_SVC => Self::Supervisor,
            MODE_MON => Self::Monitor,
            MODE_ABT => Self::Abort,
            MODE_HYP => Self::Hyp,
            MODE_UND => Self::Undefined,
            MODE_SYS => Self::System,
            other => Self::Unknown(other),
        }
    }

    /// The CPSR.M encoding of this mode.
    pub const fn bits(self) -> u32 {
        match self {
            Self::User => MODE_USR,
            Self::Fiq => MODE_FIQ,
            Self::Irq => MODE_IRQ,
            Self::Supervisor => MODE_SVC,
            Self::Monitor => MODE_MON,
            Self::Abort => MODE_ABT,
            Self::Hyp => MODE_HYP,
            Self::Undefined => MODE_UND,
            Self::System => MODE_SYS,
            Self::Unknown(bits) => bits,
        }
    }

    /// The mode's usual three-letter name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::User => "USR",
            Self::Fiq => "FIQ",
            Self::Irq => "IRQ",
            Self::Supervisor => "SVC",
            Self::Monitor => "MON",
            Self::Abort => "ABT",
            Self::Hyp => "HYP",
            Self::Undefined => "UND",
            Self::System => "SYS",
            Self::Unknown(_) => "reserved",
        }
    }
}

impl fmt::Display for Mode {
    /// Prints the name and the encoding, e.g. `SVC 0x13`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#04x}", self.name(), self.bits())
    }
}

/// DFSR/IFSR bit 9 (LPAE): set when the status uses the long-descriptor
/// format (TTBCR.EAE = 1), clear for the short-descriptor format (B4.1.52).
pub const FSR_LPAE: u32 = 1 << 9;
/// DFSR bit 11 (WnR): set when the aborted access was a write.
pub const DFSR_WNR: u32 = 1 << 11;
/// DFSR bit 12 (ExT): implementation-defined classification of external
/// aborts.
pub const DFSR_EXT: u32 = 1 << 12;
/// Short-descriptor format: FS[3:0] are DFSR[3:0] ...
pub const FSR_SHORT_FS_LOW_MASK: u32 = 0xf;
/// ... and FS[4] is DFSR[10].
pub const FSR_SHORT_FS_HIGH_SHIFT: u32 = 10;
/// Long-descriptor format: STATUS is DFSR[5:0].
pub const FSR_LONG_STATUS_MASK: u32 = 0x3f;
/// TTBCR bit 31 (EAE): selects the long-descriptor translation table format,
/// and with it the format of the fault status registers (B4.1.153).
pub const TTBCR_EAE: u32 = 1 << 31;

/// What kind of fault a fault status value reports, whatever its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Alignment fault.
    Alignment,
    /// Debug event.
    Debug,
    /// Synchronous external abort on the access itself: what an access to an
    /// address where nothing answers gives.
    SyncExternal,
    /// Synchronous external abort on a translation table walk.
    SyncExternalOnWalk,
    /// Synchronous parity or ECC error on the access.
    SyncParity,
    /// Synchronous parity or ECC error on a translation table walk.
    SyncParityOnWalk,
    /// Asynchronous external abort.
    AsyncExternal,
    /// Asynchronous parity or ECC error.
    AsyncParity,
    /// Translation fault.
    Translation,
    /// Access flag fault.
    AccessFlag,
    /// Domain fault.
    Domain,
    /// Permission fault.
    Permission,
    /// Address size fault (long-descriptor format only).
    AddressSize,
    /// Fault on an instruction cache maintenance operation.
    CacheMaintenance,
    /// TLB conflict abort.
    TlbConflict,
    /// An encoding this decoder does not know (reserved or
    /// implementation defined).
    Unknown(u32),
}

impl FaultKind {
    /// A short human-readable description.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Alignment => "alignment fault",
            Self::Debug => "debug event",
            Self::SyncExternal => "synchronous external abort",
            Self::SyncExternalOnWalk => "synchronous external abort on a table walk",
            Self::SyncParity => "synchronous parity error",
            Self::SyncParityOnWalk => "synchronous parity error on a table walk",
            Self::AsyncExternal => "asynchronous external abort",
            Self::AsyncParity => "asynchronous parity error",
            Self::Translation => "translation fault",
            Self::AccessFlag => "access flag fault",
            Self::Domain => "domain fault",
            Self::Permission => "permission fault",
            Self::AddressSize => "address size fault",
            Self::CacheMaintenance => "fault on cache maintenance",
            Self::TlbConflict => "TLB conflict abort",
            Self::Unknown(_) => "unknown fault status",
        }
    }
}

/// A DFSR value, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFaultStatus(pub u32);

impl DataFaultStatus {
    /// Whether the value uses the long-descriptor format.
    pub const fn long_format(self) -> bool {
        self.0 & FSR_LPAE != 0
    }

    /// Whether the aborted access was a write.
    pub const fn is_write(self) -> bool {
        self.0 & DFSR_WNR != 0
    }

    /// The raw status code: the five FS bits in the short-descriptor format,
    /// the six STATUS bits in the long-descriptor format.
    pub const fn status(self) -> u32 {
        if self.long_format() {
            self.0 & FSR_LONG_STATUS_MASK
        } else {
            (self.0 & FSR_SHORT_FS_LOW_MASK) | (((self.0 >> FSR_SHORT_FS_HIGH_SHIFT) & 1) << 4)
        }
    }

    /// The kind of fault reported.
    pub const fn kind(self) -> FaultKind {
        let status = self.status();
        if self.long_format() {
            // Long-descriptor encodings: the two low bits of the walk-related codes give the
            // lookup level.
            match status {
                0b00_0000..=0b00_0011 => FaultKind::AddressSize,
                0b00_0100..=0b00_0111 => FaultKind::Translation,
                0b00_1000..=0b00_1011 => FaultKind::AccessFlag,
                0b00_1100..=0b00_1111 => FaultKind::Permission,
                0b01_0000 => FaultKind::SyncExternal,
                0b01_0001 => FaultKind::AsyncExternal,
                0b01_0100..=0b01_0111 => FaultKind::SyncExternalOnWalk,
                0b01_1000 => FaultKind::SyncParity,
                0b01_1001 => FaultKind::AsyncParity,
                0b01_1100..=0b01_1111 => FaultKind::SyncParityOnWalk,
                0b10_0001 => FaultKind::Alignment,
                0b10_0010 => FaultKind::Debug,
                0b11_0000 => FaultKind::TlbConflict,
                0b11_1101 | 0b11_1110 => FaultKind::Domain,
                other => FaultKind::Unknown(other),
            }
        } else {
            // Short-descriptor encodings.
            match status {
                0b00001 => FaultKind::Alignment,
                0b00010 => FaultKind::Debug,
                0b00011 | 0b00110 => FaultKind::AccessFlag,
                0b00100 => FaultKind::CacheMaintenance,
                0b00101 | 0b00111 => FaultKind::Translation,
                0b01000 => FaultKind::SyncExternal,
                0b01001 | 0b01011 => FaultKind::Domain,
                0b01100 | 0b01110 => FaultKind::SyncExternalOnWalk,
                0b01101 | 0b01111 => FaultKind::Permission,
                0b10000 => FaultKind::TlbConflict,
                0b10110 => FaultKind::AsyncExternal,
                0b11000 => FaultKind::AsyncParity,
                0b11001 => FaultKind::SyncParity,
                0b11100 | 0b11110 => FaultKind::SyncParityOnWalk,
                other => FaultKind::Unknown(other),
            }
        }
    }
}

impl fmt::Display for DataFaultStatus {
    /// E.g. `0x00000008 (synchronous external abort, read, short format)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#010x} ({}, {}, {} format)",
            self.0,
            self.kind().description(),
            if self.is_write() { "write" } else { "read" },
            if self.long_format() { "long" } else { "short" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_decode_from_the_low_five_bits() {
        assert_eq!(Mode::from_psr(0x6000_01d3), Mode::Supervisor);
        assert_eq!(Mode::from_psr(0x0000_01da), Mode::Hyp);
        assert_eq!(Mode::from_psr(0x17), Mode::Abort);
        assert_eq!(Mode::from_psr(0x0000_0015), Mode::Unknown(0x15));
        for bits in 0..32 {
            assert_eq!(Mode::from_psr(bits).bits(), bits);
        }
    }

    #[test]
    fn mode_display_names_and_encodes() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Mode::Supervisor.to_string(), "SVC 0x13");
        assert_eq!(Mode::Hyp.to_string(), "HYP 0x1a");
        assert_eq!(Mode::Unknown(5).to_string(), "reserved 0x05");
    }

    #[test]
    fn short_format_external_abort_read() {
        let s = DataFaultStatus(0x0000_0008);
        assert!(!s.long_format());
        assert!(!s.is_write());
        assert_eq!(s.status(), 0b01000);
        assert_eq!(s.kind(), FaultKind::SyncExternal);
    }

    #[test]
    fn short_format_fs4_comes_from_bit_10() {
        // FS = 0b10110: asynchronous external abort, written as DFSR[10] = 1,
        // DFSR[3:0] = 0b0110.
        let s = DataFaultStatus((1 << 10) | 0b0110 | DFSR_WNR);
        assert_eq!(s.status(), 0b10110);
        assert_eq!(s.kind(), FaultKind::AsyncExternal);
        assert!(s.is_write());
        // Without bit 10 the same low bits mean an access flag fault.
        assert_eq!(DataFaultStatus(0b0110).kind(), FaultKind::AccessFlag);
    }

    #[test]
    fn long_format_codes() {
        assert_eq!(DataFaultStatus(FSR_LPAE | 0b01_0000).kind(), FaultKind::SyncExternal);
        assert_eq!(DataFaultStatus(FSR_LPAE | 0b00_0101).kind(), FaultKind::Translation);
        assert_eq!(DataFaultStatus(FSR_LPAE | 0b10_0001).kind(), FaultKind::Alignment);
        // The short-format code for an external abort means something else
        // in the long format: the decoder must look at the LPAE bit.
        assert_eq!(DataFaultStatus(FSR_LPAE | 0b00_1000).kind(), FaultKind::AccessFlag);
        assert_eq!(DataFaultStatus(FSR_LPAE | 0b11_1111).kind(), FaultKind::Unknown(0b11_1111));
    }

    #[test]
    fn unknown_short_codes_keep_their_value() {
        assert_eq!(DataFaultStatus((0b11010 & 0xf) | (1 << 10)).kind(), FaultKind::Unknown(0b11010));
    }
}
