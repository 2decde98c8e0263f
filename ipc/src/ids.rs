//! Identifiers shared by every component.

use serde::{Deserialize, Serialize};

/// The most vCPUs a VM can have: GICv2 addresses at most eight CPU interfaces.
pub const MAX_VCPUS: usize = 8;

/// A virtual CPU, numbered from 0. Its MPIDR affinity 0 is the same number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VcpuId(pub u8);

impl VcpuId {
    /// The index of this vCPU, for per-vCPU arrays.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A GIC interrupt identifier (INTID): 0-15 SGIs, 16-31 PPIs, 32-1019 SPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IntId(pub u16);

impl IntId {
    /// The first INTID that is not a valid interrupt (1020-1023 are special).
    pub const LIMIT: u16 = 1020;
    /// The "spurious" INTID read from an acknowledge register when nothing is pending.
    pub const SPURIOUS: IntId = IntId(1023);

    /// True for a software-generated interrupt (0-15).
    pub fn is_sgi(self) -> bool {
        self.0 < 16
    }
    /// True for a private peripheral interrupt (16-31).
    pub fn is_ppi(self) -> bool {
        (16..32).contains(&self.0)
    }
    /// True for a shared peripheral interrupt (32-1019).
    pub fn is_spi(self) -> bool {
        (32..Self::LIMIT).contains(&self.0)
    }
}

/// The servers a message can be addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServerId {
    /// vCPU power state, PSCI, MMIO bus and devices, trapped CP15, WFI policy.
    Vcpu,
    /// The emulated GICv2 distributor and list-register management.
    Vgic,
    /// The virtual and physical generic timers.
    Vtimer,
}

impl ServerId {
    /// Every server, in a fixed order (for per-server tables).
    pub const ALL: [ServerId; 3] = [ServerId::Vcpu, ServerId::Vgic, ServerId::Vtimer];

    /// The short name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ServerId::Vcpu => "vcpu",
            ServerId::Vgic => "vgic",
            ServerId::Vtimer => "vtimer",
        }
    }

    /// The index of this server in [`ServerId::ALL`].
    pub fn index(self) -> usize {
        match self {
            ServerId::Vcpu => 0,
            ServerId::Vgic => 1,
            ServerId::Vtimer => 2,
        }
    }
}
