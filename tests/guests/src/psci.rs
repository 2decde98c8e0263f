//! PSCI function identifiers, versions and return codes.
//!
//! Source: Arm DEN 0022, "Arm Power State Coordination Interface", section
//! 5.1 (function identifiers, SMC32 calling convention) and 5.2.2 (return
//! error codes); Arm DEN 0028, "SMC Calling Convention" (function identifier
//! ranges, "Unknown Function Identifier" = -1).
//!
//! The call itself (an `hvc #0` with the identifier in r0) is in `arch`.

use core::fmt;

/// PSCI_VERSION: returns the implemented version (PSCI 0.2 and later).
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC32): power_state, entry point, context id.
pub const CPU_SUSPEND: u32 = 0x8400_0001;
/// CPU_OFF: powers the calling CPU off; never returns on success.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC32): target MPIDR, entry point address, context id.
pub const CPU_ON: u32 = 0x8400_0003;
/// AFFINITY_INFO (SMC32): target affinity, lowest affinity level.
pub const AFFINITY_INFO: u32 = 0x8400_0004;
/// SYSTEM_OFF: powers the system off; never returns on success.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET: resets the system; never returns on success.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES (PSCI 1.0 and later): asks whether a function is
/// implemented.
pub const PSCI_FEATURES: u32 = 0x8400_000a;
/// A function identifier nobody implements: fast SMC32 call, owning entity
/// "standard secure service" (4), function number 0xFF. PSCI owns only
/// function numbers 0x00..=0x1F of that range, and no other standard service
/// is implemented by QEMU or splitvisor, so the only correct answer is
/// NOT_SUPPORTED (-1, also SMCCC's "unknown function identifier").
pub const BOGUS_FUNCTION: u32 = 0x8400_00ff;

/// Bit 31 of a PSCI_VERSION result: set only when the call failed (a version
/// has a major number of at most 0x7FFF).
const VERSION_ERROR_BIT: u32 = 1 << 31;
/// PSCI_VERSION result bits [31:16]: the major version.
const VERSION_MAJOR_SHIFT: u32 = 16;
/// PSCI_VERSION result bits [15:0]: the minor version.
const VERSION_MINOR_MASK: u32 = 0xffff;

/// The value PSCI_VERSION returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version(pub u32);

impl Version {
    /// PSCI 0.2, the first version with PSCI_VERSION and the standard
    /// function identifiers.
    pub const V0_2: Self = Self(2);
    /// PSCI 1.0, the first version with PSCI_FEATURES.
    pub const V1_0: Self = Self(1 << VERSION_MAJOR_SHIFT);

    /// Whether the value is a version at all rather than an error code.
    pub const fn is_valid(self) -> bool {
        self.0 & VERSION_ERROR_BIT == 0
    }

    /// The major version.
    pub const fn major(self) -> u32 {
        self.0 >> VERSION_MAJOR_SHIFT
    }

    /// The minor version.
    pub const fn minor(self) -> u32 {
        self.0 & VERSION_MINOR_MASK
    }

    /// Whether this is a valid version at least `other`.
    pub const fn at_least(self, other: Self) -> bool {
        self.is_valid() && self.0 >= other.0
    }
}

impl fmt::Display for Version {
    /// `1.1 (0x00010001)`, or `error NOT_SUPPORTED (-1)` for a failed call.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_valid() {
            write!(f, "{}.{} ({:#010x})", self.major(), self.minor(), self.0)
        } else {
            write!(f, "error {}", ReturnCode::from_raw(self.0))
        }
    }
}

/// What AFFINITY_INFO returns for a CPU (DEN 0022 5.7.2): 0 ON, 1 OFF,
/// 2 ON_PENDING, or an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityState {
    /// 0: at least one CPU of the affinity instance is on.
    On,
    /// 1: all CPUs of the instance are off.
    Off,
    /// 2: the instance is transitioning to on (CPU_ON accepted, the CPU
    /// not yet running).
    OnPending,
    /// Anything else: an error code.
    Error(ReturnCode),
}

impl AffinityState {
    /// Decodes AFFINITY_INFO's result.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::On,
            1 => Self::Off,
            2 => Self::OnPending,
            other => Self::Error(ReturnCode::from_raw(other)),
        }
    }
}

impl fmt::Display for AffinityState {
    /// `ON (0)`, `OFF (1)`, `ON_PENDING (2)` or the error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::On => write!(f, "ON (0)"),
            Self::Off => write!(f, "OFF (1)"),
            Self::OnPending => write!(f, "ON_PENDING (2)"),
            Self::Error(code) => write!(f, "{code}"),
        }
    }
}

/// A PSCI return value, decoded (DEN 0022 section 5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnCode {
    /// 0.
    Success,
    /// -1.
    NotSupported,
    /// -2.
    InvalidParameters,
    /// -3.
    Denied,
    /// -4.
    AlreadyOn,
    /// -5.
    OnPending,
    /// -6.
    InternalFailure,
    /// -7.
    NotPresent,
    /// -8.
    Disabled,
    /// -9.
    InvalidAddress,
    /// Any other value (a positive one is a result, not an error).
    Unknown(i32),
}

impl ReturnCode {
    /// Decodes the value a call left in r0.
    pub const fn from_raw(raw: u32) -> Self {
        // PSCI returns signed 32-bit values in a 32-bit register.
        match raw as i32 {
            0 => Self::Success,
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::AlreadyOn,
            -5 => Self::OnPending,
            -6 => Self::InternalFailure,
            -7 => Self::NotPresent,
            -8 => Self::Disabled,
            -9 => Self::InvalidAddress,
            other => Self::Unknown(other),
        }
    }

    /// The signed value.
    pub const fn value(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::NotSupported => -1,
            Self::InvalidParameters => -2,
            Self::Denied => -3,
            Self::AlreadyOn => -4,
            Self::OnPending => -5,
            Self::InternalFailure => -6,
            Self::NotPresent => -7,
            Self::Disabled => -8,
            Self::InvalidAddress => -9,
            Self::Unknown(value) => value,
        }
    }

    /// The name the specification uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::NotSupported => "NOT_SUPPORTED",
            Self::InvalidParameters => "INVALID_PARAMETERS",
            Self::Denied => "DENIED",
            Self::AlreadyOn => "ALREADY_ON",
            Self::OnPending => "ON_PENDING",
            Self::InternalFailure => "INTERNAL_FAILURE",
            Self::NotPresent => "NOT_PRESENT",
            Self::Disabled => "DISABLED",
            Self::InvalidAddress => "INVALID_ADDRESS",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ReturnCode {
    /// `NOT_SUPPORTED (-1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.value())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn versions() {
        assert!(Version(0x0000_0002).at_least(Version::V0_2));
        assert!(Version(0x0001_0001).at_least(Version::V0_2));
        assert!(Version(0x0001_0000).at_least(Version::V1_0));
        assert!(!Version(0x0000_0002).at_least(Version::V1_0));
        assert!(!Version(0x0000_0001).at_least(Version::V0_2));
        // -1 (NOT_SUPPORTED) is numerically huge but is no version.
        assert!(!Version(u32::MAX).is_valid());
        assert!(!Version(u32::MAX).at_least(Version::V0_2));
        assert_eq!(Version(0x0001_0001).to_string(), "1.1 (0x00010001)");
        assert_eq!(Version(u32::MAX).to_string(), "error NOT_SUPPORTED (-1)");
    }

    #[test]
    fn affinity_states() {
        assert_eq!(AffinityState::from_raw(0), AffinityState::On);
        assert_eq!(AffinityState::from_raw(1), AffinityState::Off);
        assert_eq!(AffinityState::from_raw(2), AffinityState::OnPending);
        assert_eq!(AffinityState::from_raw(0xffff_fffe), AffinityState::Error(ReturnCode::InvalidParameters));
        assert_eq!(AffinityState::OnPending.to_string(), "ON_PENDING (2)");
        assert_eq!(AffinityState::from_raw(u32::MAX).to_string(), "NOT_SUPPORTED (-1)");
    }

    #[test]
    fn return_codes_round_trip() {
        for value in -12..3 {
            let code = ReturnCode::from_raw(value as u32);
            assert_eq!(code.value(), value);
        }
        assert_eq!(ReturnCode::from_raw(0xffff_ffff), ReturnCode::NotSupported);
        assert_eq!(ReturnCode::from_raw(0xffff_fff7), ReturnCode::InvalidAddress);
        assert_eq!(ReturnCode::from_raw(0xffff_fff6), ReturnCode::Unknown(-10));
        assert_eq!(ReturnCode::NotSupported.to_string(), "NOT_SUPPORTED (-1)");
    }
}
