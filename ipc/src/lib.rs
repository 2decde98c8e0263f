//! # ipc: everything that crosses a component boundary in splitvisor
//!
//! splitvisor has one rule: only messages cross a component boundary. This
//! crate owns every message type (the [`Trap`]s the monitor reports, the
//! [`Reply`]s and [`Action`]s the servers answer with, the requests one server
//! sends another), the VM configuration handed to the monitor at boot
//! ([`VmConfig`]), trace records, the wire format ([`wire`]: postcard with a
//! version, a size limit and COBS framing for byte streams) and the
//! transports ([`transport`]), and fault-injection specifications
//! ([`fault`]).
//!
//! It holds no policy: nothing here decides what a trap means.
//!
//! `no_std`; the `std` feature adds crossbeam-channel and byte-stream
//! transports for running servers as host threads or processes. The
//! `arbitrary` feature (host fuzzing only; implies `std`) derives
//! `arbitrary::Arbitrary` for every message type ([`fuzzing`]).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod action;
pub mod config;
pub mod fault;
#[cfg(feature = "arbitrary")]
pub mod fuzzing;
pub mod hostlink;
pub mod ids;
pub mod input;
pub mod msg;
pub mod trace;
pub mod transport;
pub mod trap;
pub mod wire;

pub use action::{Action, ActionRef, Reply, ShutdownReason, TrapConfig, MAX_ACTIONS};
pub use config::{Containment, DeviceRegion, MemWindow, TimerIntids, VmConfig, VtimerDelivery, WfiPolicy};
pub use ids::{IntId, ServerId, VcpuId, MAX_VCPUS};
pub use msg::{Envelope, Message, Server, ServerError, VcpuRequest, VgicRequest, VtimerRequest};
pub use trap::{AccessSize, Cp15Access, Cp15WideAccess, GuestReg, MmioAccess, Trap, TrapMsg};
pub use wire::{WireError, MAX_MESSAGE_SIZE, WIRE_VERSION};

pub mod exit {
    //! Exit statuses: the monitor ends QEMU with one of these (semihosting
    //! SYS_EXIT_EXTENDED), and `splitvisor` maps them to its own.

    /// The guest powered off (PSCI SYSTEM_OFF).
    pub const POWER_OFF: u8 = 0;
    /// The guest asked for a reset (PSCI SYSTEM_RESET).
    pub const RESET: u8 = 3;
    /// The monitor met a condition it cannot go on from (a hypervisor bug or
    /// a failed server under the `stop` policy), reported on its log.
    pub const MONITOR_FAULT: u8 = 4;
    /// The VM configuration handed to the monitor was missing or invalid.
    pub const BAD_CONFIG: u8 = 5;
    /// A server failed a message again after its state was restored, and
    /// the VM was set to stop then (`--on-server-fault stop`).
    pub const SERVER_FAULT: u8 = 6;
    /// `splitvisor` stopped a guest that ran past `--timeout` (as timeout(1)).
    pub const TIMEOUT: u8 = 124;
}
