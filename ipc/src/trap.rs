//! Traps: what the monitor saw, decoded from the syndrome but not interpreted.

use serde::{Deserialize, Serialize};

use crate::ids::VcpuId;

/// The width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AccessSize {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits (LDRD/STRD never carry a syndrome on ARMv7, so this only
    /// appears on AArch64).
    Double,
}

impl AccessSize {
    /// The access width in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            AccessSize::Byte => 1,
            AccessSize::Half => 2,
            AccessSize::Word => 4,
            AccessSize::Double => 8,
        }
    }

    /// The mask of the bits an access of this size carries.
    pub fn mask(self) -> u64 {
        match self {
            AccessSize::Byte => 0xff,
            AccessSize::Half => 0xffff,
            AccessSize::Word => 0xffff_ffff,
            AccessSize::Double => u64::MAX,
        }
    }
}

/// A guest register, named as the guest saw it at the time of the trap:
/// `Gpr(n)` is register `n` of the mode the guest was in (so `Gpr(13)` in SVC
/// mode is SP_svc). The monitor resolves the banking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum GuestReg {
    /// R0-R14 of the guest's current mode.
    Gpr(u8),
    /// The program counter (the address of the trapping instruction).
    Pc,
    /// The guest's CPSR (SPSR_hyp at the time of the trap).
    Cpsr,
}

/// A data abort on an address the guest does not own, with a valid
/// instruction syndrome: it can be emulated as an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MmioAccess {
    /// The intermediate physical address accessed.
    pub ipa: u64,
    /// The guest virtual address accessed (HDFAR), for an injected abort.
    pub far: u32,
    /// The access width.
    pub size: AccessSize,
    /// A store (true) or a load (false).
    pub write: bool,
    /// For a store, the value stored (already masked to `size`); 0 for a load.
    pub value: u64,
    /// The transfer register (for a load, where the reply puts the value).
    pub rt: u8,
    /// A load that sign-extends its value into `rt`.
    pub sign_extend: bool,
}

/// A trapped 32-bit coprocessor 15 access (MCR/MRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cp15Access {
    /// opc1 field.
    pub opc1: u8,
    /// CRn field.
    pub crn: u8,
    /// CRm field.
    pub crm: u8,
    /// opc2 field.
    pub opc2: u8,
    /// MCR (write to the coprocessor) when true, MRC when false.
    pub write: bool,
    /// The ARM register transferred.
    pub rt: u8,
    /// For a write, the value of `rt`.
    pub value: u32,
}

/// A trapped 64-bit coprocessor 15 access (MCRR/MRRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cp15WideAccess {
    /// opc1 field.
    pub opc1: u8,
    /// CRm field.
    pub crm: u8,
    /// MCRR when true, MRRC when false.
    pub write: bool,
    /// Register with the low word.
    pub rt: u8,
    /// Register with the high word.
    pub rt2: u8,
    /// For a write, `rt2:rt`.
    pub value: u64,
}

/// What made a guest leave to the hypervisor, decoded but not interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Trap {
    /// HVC #imm, with the guest's r0-r3 (the SMC calling convention's arguments).
    Hvc {
        /// The immediate of the instruction.
        imm: u16,
        /// r0-r3.
        args: [u32; 4],
    },
    /// SMC (trapped with HCR.TSC), with r0-r3.
    Smc {
        /// r0-r3.
        args: [u32; 4],
    },
    /// A load or store to an address outside the guest's RAM, with a syndrome.
    Mmio(MmioAccess),
    /// A data abort that carries no instruction syndrome (load/store
    /// multiple, writeback forms): it cannot be emulated.
    DataAbortNoSyndrome {
        /// The faulting intermediate physical address.
        ipa: u64,
        /// The faulting virtual address (HDFAR).
        far: u32,
        /// Whether the access was a write, as far as the syndrome tells.
        write: bool,
    },
    /// An instruction fetch from an address the guest does not own.
    PrefetchAbort {
        /// The faulting intermediate physical address.
        ipa: u64,
        /// The faulting virtual address (HIFAR).
        far: u32,
    },
    /// A trapped MCR/MRC to CP15.
    Cp15(Cp15Access),
    /// A trapped MCRR/MRRC to CP15.
    Cp15Wide(Cp15WideAccess),
    /// WFI (trapped with HCR.TWI).
    Wfi,
    /// WFE (trapped with HCR.TWE).
    Wfe,
    /// A physical interrupt, acknowledged by the monitor on this CPU.
    Irq {
        /// The INTID read from the physical CPU interface.
        intid: u16,
    },
    /// The Hyp timer this vCPU's physical CPU owns fired.
    HypTimer,
    /// An exception class the decoder does not know (the raw HSR).
    Unknown {
        /// The raw syndrome register.
        hsr: u32,
    },
}

/// A trap as the router delivers it: which vCPU, what happened, and the
/// facts about the trapping instruction a server may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TrapMsg {
    /// The vCPU that trapped.
    pub vcpu: VcpuId,
    /// What happened.
    pub trap: Trap,
    /// The guest's PC at the trapping instruction.
    pub pc: u32,
    /// The guest's CPSR at the trap.
    pub cpsr: u32,
}
