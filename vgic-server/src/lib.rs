//! # vgic-server: the guest's GICv2 distributor and virtual interrupt state
//!
//! Owns everything about a VM's interrupts:
//! - the emulated GICv2 distributor at the guest's GICD address, every
//!   register of the GICv2 architecture specification (Arm IHI 0048B) with
//!   its access widths, banking and RAZ/WI rules ([`regs`], [`dist`]);
//! - the pending and active state of every interrupt, per vCPU for SGIs
//!   (per requester) and PPIs, and for SPIs ([`dist`]);
//! - SGIs between vCPUs (GICD_SGIR with all three target filters);
//! - which interrupts occupy each vCPU's list registers, by priority, the
//!   maintenance interrupts that refill them, EOI maintenance for
//!   level-sensitive interrupts and for interrupts backed by a physical one
//!   such as the virtual timer, whose deactivation it then asks for ([`lr`],
//!   [`server`]);
//! - the Kick/Sync protocol with the monitor, and folding what the guest did
//!   on its virtual CPU interface into what distributor reads show
//!   ([`server`]).
//!
//! The guest's CPU interface is not emulated here: the monitor maps the
//! hardware GICV frame at the guest's GICC address, so acknowledge and EOI
//! run without traps, and this server learns of them from the list-register
//! status the monitor reports.
//!
//! It never programs hardware: it asks the monitor to write list registers
//! and GICH_HCR ([`ipc::Action::WriteListRegister`],
//! [`ipc::Action::WriteGichHcr`]), to deactivate a physical interrupt, or to
//! kick a vCPU. It never touches another server's state. Its whole state is
//! [`VgicServer`], a plain serde value.
//!
//! `no_std`; the `std` feature only passes `std` on to `ipc`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dist;
pub mod lr;
pub mod regs;
pub mod server;

pub use server::VgicServer;

#[cfg(test)]
mod testutil;
