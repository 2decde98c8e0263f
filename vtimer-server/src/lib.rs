//! # vtimer-server: the guest's generic timers
//!
//! Owns, per VM, the virtual counter offset (CNTVOFF) and, per vCPU, the
//! emulated physical timer (CNTP_CTL, CNTP_CVAL, CNTP_TVAL and reads of
//! CNTPCT), its interrupt line and the Hyp timer deadline that stands in for
//! it; and it turns timer events into interrupts for the vGIC server.
//!
//! - **Virtual timer.** The guest uses CNTV_* directly in hardware. The first
//!   [`VtimerRequest::Start`] of the VM sets CNTVOFF to the physical count of
//!   that moment, so the guest's virtual count starts near zero; every vCPU
//!   (and every later start of a vCPU that went off and on) gets the same
//!   offset, so virtual counts agree across vCPUs and never go back. When the
//!   hardware virtual timer fires, the monitor reports
//!   [`VtimerRequest::Fired`] (leaving the physical interrupt active), and
//!   this server delivers it as the VM's [`VtimerDelivery`] says:
//!   - `Masked` (what `splitvisor run` picks for a Linux kernel): it has
//!     the monitor set the timer's IMASK ([`Action::SetVirtualTimerMask`]),
//!     which lowers the timer's output, and deactivate the physical
//!     interrupt at once, and asks the vGIC server to make the guest's
//!     virtual-timer PPI pending ([`VgicRequest::Pend`]). The guest clears
//!     IMASK when it programs its next deadline; the tick costs one trap.
//!   - `Linked` (the default, exact): it asks the vGIC server to raise the
//!     guest's virtual-timer PPI backed by the host's (`hw`), and the vGIC
//!     server has the physical interrupt deactivated once the guest has
//!     finished the virtual one (an EOI maintenance interrupt, one more
//!     trap a tick).
//! - **Physical timer.** Trapped through CNTHCTL (the vCPU server's trap
//!   policy must clear PL1PCEN, and PL1PCTEN for CNTPCT) and emulated here
//!   exactly as the architecture defines it ([`phys`]), against the host's
//!   physical count with no offset. The timer's output drives the guest's
//!   physical-timer PPI as a level line: `SetLine` is sent once per change of
//!   `ENABLE && !IMASK && count >= CVAL`. While the output is low but can rise
//!   on its own, the Hyp timer of the vCPU's physical CPU is armed at CVAL, and
//!   its firing is reported as `Fired { timer: Physical }`.
//! - **Off and on.** Timer state survives a vCPU going off and on: a `Start`
//!   re-programs CNTVOFF, re-arms the Hyp timer and re-asserts a raised line.
//!
//! The interrupt numbers come from [`ipc::VmConfig::timer`] (the PPIs the
//! loader wrote into the guest's device tree).
//!
//! It never programs hardware (it asks the monitor with [`Action`]s), never
//! touches GIC state (it sends [`VgicRequest`]s), and never decides traps.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod phys;
pub mod regs;

use heapless::Vec;
use ipc::msg::TimerKind;
use ipc::{
    Action, Cp15Access, Cp15WideAccess, GuestReg, IntId, Message, Reply, Server, ServerError, ServerId, TimerIntids,
    VcpuId, VgicRequest, VmConfig, VtimerDelivery, VtimerRequest, MAX_VCPUS,
};
use log::debug;
use serde::{Deserialize, Serialize};

use crate::phys::PhysTimer;
use crate::regs::{TimerReg32, TimerReg64};

/// The highest general-purpose register an MRC/MRRC may name here: R15 (and
/// for MRRC Rt == Rt2) is UNPREDICTABLE for these registers (DDI 0406C, the MRC and
/// MRRC instruction descriptions), and we answer UNPREDICTABLE with UNDEFINED.
const MAX_GPR: u8 = 14;

/// What this server knows about one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VcpuTimers {
    /// The emulated physical timer.
    pub phys: PhysTimer,
    /// The level last sent for the guest's physical-timer PPI.
    pub phys_line: bool,
    /// The Hyp timer deadline last asked of the monitor for this vCPU's
    /// physical CPU (`None`: disarmed).
    pub hyp_deadline: Option<u64>,
    /// The vCPU has been started at least once.
    pub started: bool,
}

/// The whole state of the virtual-timer server of one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtimerServer {
    /// The timer interrupts, from the VM configuration.
    intids: TimerIntids,
    /// How the virtual timer's interrupt is delivered, from the VM
    /// configuration.
    delivery: VtimerDelivery,
    /// The VM's CNTVOFF, chosen at the first start of any vCPU.
    cntvoff: Option<u64>,
    /// Per-vCPU state, indexed by vCPU number.
    vcpus: Vec<VcpuTimers, MAX_VCPUS>,
}

impl VtimerServer {
    /// The state of a VM that has not started: no offset chosen yet, every
    /// physical timer disabled with CVAL 0, every line low.
    pub fn new(config: &VmConfig) -> Self {
        let mut vcpus = Vec::new();
        // A validated configuration has at most MAX_VCPUS; extra are ignored.
        for _ in 0..usize::from(config.vcpus).min(MAX_VCPUS) {
            let _ = vcpus.push(VcpuTimers::default());
        }
        Self { intids: config.timer, delivery: config.vtimer, cntvoff: None, vcpus }
    }

    /// The VM's CNTVOFF, once the first vCPU started.
    pub fn cntvoff(&self) -> Option<u64> {
        self.cntvoff
    }

    /// One vCPU's timer state.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<&VcpuTimers> {
        self.vcpus.get(vcpu.index())
    }

    /// `Start`: program CNTVOFF and state the line and the Hyp timer again,
    /// into `reply`.
    fn start(&mut self, vcpu: VcpuId, now: u64, reply: &mut Reply) -> Result<(), ServerError> {
        let offset = *self.cntvoff.get_or_insert(now);
        let intids = self.intids;
        let state = self.state(vcpu)?;
        state.started = true;
        reply.push(Action::SetCntvoff { value: offset })?;
        // The physical CPU's Hyp timer and the vGIC's view of the line may
        // both have been reset while the vCPU was off: state both again.
        let line = state.phys.output(now);
        state.phys_line = line;
        if line {
            reply.push(set_line(intids.guest_phys, vcpu, true, None))?;
        }
        state.hyp_deadline = state.phys.deadline(now);
        reply.push(Action::SetHypTimer { deadline: state.hyp_deadline })?;
        Ok(())
    }

    /// `Fired`: raise the virtual-timer PPI, or bring the physical timer's
    /// line and Hyp timer up to date, into `reply`.
    fn fired(&mut self, vcpu: VcpuId, timer: TimerKind, now: u64, reply: &mut Reply) -> Result<(), ServerError> {
        let intids = self.intids;
        let state = self.state(vcpu)?;
        match timer {
            TimerKind::Virtual => match self.delivery {
                VtimerDelivery::Masked => {
                    // Masked, the output is low: the physical interrupt is
                    // done with, and the guest's is pending by a latch that
                    // its acknowledge consumes (no EOI maintenance). The
                    // order matters: deactivated before the mask, it would
                    // fire again at once.
                    reply.push(Action::SetVirtualTimerMask { masked: true })?;
                    reply.push(Action::DeactivatePhysical { intid: intids.host_virt })?;
                    reply.push(Action::Send(Message::Vgic(VgicRequest::Pend {
                        intid: intids.guest_virt,
                        target: Some(vcpu),
                        status: None,
                        masked_timer: true,
                    })))?;
                }
                VtimerDelivery::Linked => {
                    // The hardware timer's output is a level that stays high
                    // until the guest handles its timer; the physical
                    // interrupt stays active until the vGIC server has it
                    // deactivated after the guest's EOI, and may then fire
                    // again. The vGIC server owns what a repeated `true`
                    // means.
                    reply.push(set_line(intids.guest_virt, vcpu, true, Some(intids.host_virt)))?;
                }
            },
            TimerKind::Physical => {
                // The Hyp timer stays asserted until it is re-programmed, so
                // always say what it should do now (a stale or early firing
                // re-arms it).
                sync_line(state, intids.guest_phys, vcpu, now, reply)?;
                state.hyp_deadline = state.phys.deadline(now);
                reply.push(Action::SetHypTimer { deadline: state.hyp_deadline })?;
            }
        }
        Ok(())
    }

    /// A trapped MRC/MCR of a timer register, answered into `reply`.
    fn cp15(&mut self, vcpu: VcpuId, access: Cp15Access, now: u64, reply: &mut Reply) -> Result<(), ServerError> {
        let intids = self.intids;
        let state = self.state(vcpu)?;
        let reg = TimerReg32::decode(&access);
        let Some(rt) = gpr(access.rt) else {
            debug!("vtimer: vCPU {} MRC/MCR {reg:?} with r{}: undefined", vcpu.0, access.rt);
            reply.push(Action::InjectUndef)?;
            return Ok(());
        };
        match (reg, access.write) {
            (TimerReg32::CntpCtl, false) => {
                reply.push(Action::SetReg { reg: rt, value: state.phys.read_ctl(now) })?;
            }
            (TimerReg32::CntpCtl, true) => state.phys.write_ctl(access.value),
            (TimerReg32::CntpTval, false) => {
                reply.push(Action::SetReg { reg: rt, value: state.phys.read_tval(now) })?;
            }
            (TimerReg32::CntpTval, true) => state.phys.write_tval(now, access.value),
            (TimerReg32::Unknown { .. }, _) => {
                debug!("vtimer: vCPU {} accessed {reg:?}: undefined", vcpu.0);
                reply.push(Action::InjectUndef)?;
                return Ok(());
            }
        }
        reply.push(Action::AdvancePc)?;
        update(state, intids.guest_phys, vcpu, now, reply)
    }

    /// A trapped MRRC/MCRR of a timer register, answered into `reply`.
    fn cp15_wide(
        &mut self,
        vcpu: VcpuId,
        access: Cp15WideAccess,
        now: u64,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        let intids = self.intids;
        let state = self.state(vcpu)?;
        let reg = TimerReg64::decode(&access);
        let regs = match (gpr(access.rt), gpr(access.rt2)) {
            // MRRC with Rt == Rt2 is UNPREDICTABLE; MCRR with it is fine.
            (Some(lo), Some(hi)) if access.write || access.rt != access.rt2 => Some((lo, hi)),
            _ => None,
        };
        // The low and high words of the 64-bit value, into Rt and Rt2.
        let read = |value: u64, (lo, hi): (GuestReg, GuestReg)| {
            [Action::SetReg { reg: lo, value: value as u32 }, Action::SetReg { reg: hi, value: (value >> 32) as u32 }]
        };
        match (reg, access.write, regs) {
            (TimerReg64::Cntpct, false, Some(pair)) => reply.extend(read(now, pair))?,
            (TimerReg64::CntpCval, false, Some(pair)) => reply.extend(read(state.phys.read_cval(), pair))?,
            (TimerReg64::CntpCval, true, Some(_)) => state.phys.write_cval(access.value),
            // CNTPCT is read-only: MCRR to it is UNDEFINED.
            (TimerReg64::Cntpct, true, _) | (TimerReg64::Unknown { .. }, _, _) | (_, _, None) => {
                debug!(
                    "vtimer: vCPU {} MRRC/MCRR {reg:?} (write {}) with r{}, r{}: undefined",
                    vcpu.0, access.write, access.rt, access.rt2
                );
                reply.push(Action::InjectUndef)?;
                return Ok(());
            }
        }
        reply.push(Action::AdvancePc)?;
        update(state, intids.guest_phys, vcpu, now, reply)
    }

    fn state(&mut self, vcpu: VcpuId) -> Result<&mut VcpuTimers, ServerError> {
        self.vcpus.get_mut(vcpu.index()).ok_or(ServerError::NoSuchVcpu(vcpu))
    }
}

impl Server for VtimerServer {
    const ID: ServerId = ServerId::Vtimer;
    type Request = VtimerRequest;

    fn handle_into(&mut self, request: &VtimerRequest, reply: &mut Reply) -> Result<(), ServerError> {
        // A request that fails leaves no half-done change behind (a reply
        // that does not fit is an error, not a partial answer: the actions
        // already in `reply` are dropped by the caller). A request changes
        // only its vCPU's timers and the VM's CNTVOFF, so those are what is
        // kept to put back (copying the whole state on every request cost
        // more than the request).
        let vcpu = match *request {
            VtimerRequest::Start { vcpu, .. }
            | VtimerRequest::Fired { vcpu, .. }
            | VtimerRequest::Cp15 { vcpu, .. }
            | VtimerRequest::Cp15Wide { vcpu, .. } => vcpu,
        };
        let saved = (self.cntvoff, self.vcpus.get(vcpu.index()).copied());
        let result = match *request {
            VtimerRequest::Start { vcpu, now } => self.start(vcpu, now, reply),
            VtimerRequest::Fired { vcpu, timer, now } => self.fired(vcpu, timer, now, reply),
            VtimerRequest::Cp15 { vcpu, access, now } => self.cp15(vcpu, access, now, reply),
            VtimerRequest::Cp15Wide { vcpu, access, now } => self.cp15_wide(vcpu, access, now, reply),
        };
        if result.is_err() {
            let (cntvoff, timers) = saved;
            self.cntvoff = cntvoff;
            if let (Some(timers), Some(slot)) = (timers, self.vcpus.get_mut(vcpu.index())) {
                *slot = timers;
            }
        }
        result
    }

    fn request_of(message: &Message) -> Result<&VtimerRequest, ServerError> {
        match message {
            Message::Vtimer(request) => Ok(request),
            Message::Vcpu(_) | Message::Vgic(_) => Err(ServerError::WrongServer),
        }
    }
}

/// The register an MRC/MRRC names, when it is one the guest may name here.
fn gpr(n: u8) -> Option<GuestReg> {
    (n <= MAX_GPR).then_some(GuestReg::Gpr(n))
}

/// A `SetLine` for the vGIC server on `vcpu`'s private line `intid`.
fn set_line(intid: IntId, vcpu: VcpuId, level: bool, hw: Option<IntId>) -> Action {
    Action::Send(Message::Vgic(VgicRequest::SetLine { intid, level, target: Some(vcpu), hw, change: 0, status: None }))
}

/// Send the physical timer's output level if it changed since it was last
/// sent.
fn sync_line(
    state: &mut VcpuTimers,
    intid: IntId,
    vcpu: VcpuId,
    now: u64,
    reply: &mut Reply,
) -> Result<(), ServerError> {
    let level = state.phys.output(now);
    if level != state.phys_line {
        reply.push(set_line(intid, vcpu, level, None))?;
        state.phys_line = level;
    }
    Ok(())
}

/// After a register access: bring the line and the Hyp timer up to date,
/// asking the monitor only for what changed.
fn update(state: &mut VcpuTimers, intid: IntId, vcpu: VcpuId, now: u64, reply: &mut Reply) -> Result<(), ServerError> {
    sync_line(state, intid, vcpu, now, reply)?;
    let deadline = state.phys.deadline(now);
    if deadline != state.hyp_deadline {
        reply.push(Action::SetHypTimer { deadline })?;
        state.hyp_deadline = deadline;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
