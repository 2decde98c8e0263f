//! # el2-monitor: splitvisor's Hyp-mode monitor
//!
//! The monitor owns the hardware: boot, per-CPU Hyp set-up, the vectors and
//! the world switch, stage-2 tables, the physical GIC CPU interface and list
//! registers, and the physical UART. It turns every guest trap into an `ipc`
//! message, routes it to the server that owns it, and applies the actions of
//! the reply. It never decides what an MMIO access, a system register, a PSCI
//! call or an interrupt means: that is the servers' business.
//!
//! This library is the machine-independent part, unit-tested on the host:
//! - [`syndrome`]: the ARMv7 Hyp Syndrome Register decoded into a [`ipc::Trap`];
//! - [`guest`]: architectural arithmetic on guest state (advancing the PC
//!   through an IT block, entering a guest exception vector);
//! - [`router`]: which server owns a trap, and the delivery loop that follows
//!   `Send` actions and collects what the hardware must do;
//! - [`validate`]: the rules every reply must meet before it is applied
//!   (also used by `splitvisor replay --isolate process`).
//!
//! The hardware part lives in `src/arch/armv7/` of the binary; it is the only
//! place with `unsafe` code and assembly.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::panic, clippy::todo, clippy::unimplemented))]

pub mod guest;
pub mod ratelimit;
pub mod router;
pub mod syndrome;
pub mod validate;
