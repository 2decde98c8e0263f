//! The ipc glue: [`VgicServer`] answers [`VgicRequest`]s with [`Action`]s.
//!
//! # The Kick/Sync protocol
//!
//! List registers are written only in the reply to a request that carries a
//! fresh [`LrStatus`] of the vCPU's physical CPU interface (`Maintenance`,
//! `Sync`, `Idle`): while the monitor handles such a request the vCPU is not
//! running, so its list registers hold still. Such a reply first folds the
//! hardware state into the distributor (what the guest acknowledged and
//! deactivated since the registers were written, see
//! [`crate::lr::guest_events`]), then chooses what the list registers hold
//! now ([`crate::lr::Selection`]), writes those that differ and GICH_HCR if
//! it changed.
//!
//! A refresh in which nothing it reads has changed since that vCPU's last
//! one (the distributor, every vCPU's slots, and the list registers as it
//! left them; see [`CpuInterface::synced`]) would fold nothing and write
//! nothing: it is skipped, and only an `Idle`'s wake-up check runs. Two
//! more come down to writing one list register: a change of the vCPU's
//! own private line with its status (the timer's tick), and the `Sync` of
//! an IPI's kick when the SGI sent is all that changed (see
//! `VgicServer::added_only`), also after SGIs the guest finished since are
//! folded in (`VgicServer::finished_then_added`: a vCPU whose WFI does not
//! trap had no `Idle` to fold them as it went idle); and one with only
//! finished interrupts to settle to clearing them
//! (`VgicServer::only_finished`).
//!
//! A request that changes interrupt state otherwise (`Mmio`, `SetLine`,
//! `Start`) answers with `Kick { vcpu }` for each vCPU whose list registers
//! may have to change: the monitor turns a kick of the vCPU it is handling
//! into a `Sync` before re-entering it, and a kick of another into a
//! physical SGI to that vCPU's CPU, whose handler sends `Sync`. An idle vCPU
//! (one that was answered `WaitForInterrupt`) is woken the same way, so a
//! wake-up is never lost.
//!
//! # Distributor accesses see the list registers
//!
//! The guest acknowledges and deactivates interrupts on the virtual CPU
//! interface without a trap, so the distributor's state lags behind until
//! the next refresh. An `Mmio` request carries the status of the accessing
//! vCPU's CPU interface (the router reads it while the vCPU is stopped in
//! its trap), and the access is answered after that status is folded in:
//! GICD_ISPENDRn, GICD_ISACTIVERn and GICD_SPENDSGIRn show what the guest
//! acknowledged and finished, and writes apply to that state. The fold only
//! takes in the guest's actions; the list registers are written at the
//! vCPU's next refresh (kicked for if an SPI it let go of is deliverable).
//! What stays stale: an interrupt in *another* vCPU's list registers (an SPI
//! it acknowledged or finished; its SGIs and PPIs are banked and not
//! visible to others anyway), until that vCPU's next refresh, because its
//! list registers can be read only on its own CPU; and every access whose
//! request carries no status (`None`: a sender other than the monitor).
//!
//! # Interrupts backed by a physical one
//!
//! An interrupt raised with `SetLine { hw: Some(physical), .. }` (the virtual
//! timer) is backed by a physical interrupt that the monitor acknowledged
//! and left active, so that it cannot fire again before the guest has
//! handled this one. Its list register is a software one that asks for EOI
//! maintenance; when the guest has finished it (or it was cleared or
//! disabled), the reply to the refresh that sees it asks the monitor to
//! deactivate the physical interrupt (`DeactivatePhysical`, GICC_DIR), and
//! a line still asserted then fires again at once.
//!
//! A hardware-linked list register (HW = 1) would spare the maintenance
//! exit, but QEMU, on which this runs, does not re-signal the physical
//! interrupt it deactivates for the guest: in QEMU's GICv2
//! (`hw/intc/arm_gic.c`, `gic_complete_irq` and `gic_deactivate_irq` for a
//! virtual CPU interface, `gic_clear_active` in `gic_internal.h`) the
//! deactivation clears the physical active bit and recomputes only the
//! virtual interface's outputs, not the physical CPU interface's. A level
//! interrupt whose line is still high at that moment (the virtual timer of
//! a guest whose handler re-arms a deadline that has already passed, i.e.
//! whenever a tick is late) is then not signalled until some unrelated
//! physical GIC event: with one vCPU the guest's ticks stopped after the
//! first late one. A GICC_DIR write by the monitor makes QEMU recompute
//! them.
//!
//! # Known limits
//!
//! - The guest's priority mask, binary point, group enables and EOI mode
//!   live in GICV and are not reported, so `Idle` judges "could be
//!   signalled" by the forwarding state and the acknowledged priorities
//!   alone: a guest that masked everything and waits gets its WFI answered
//!   at once (a busy wait, never a lost wake-up); a guest using EOImode 1
//!   that drops priority and then waits before deactivating is judged by its
//!   priority before the drop.
//! - Active entries are never evicted to make room; with more active
//!   interrupts than list registers (only possible through GICD_ISACTIVERn
//!   or a vCPU restarted while interrupts were active) the excess waits, and
//!   a deactivation of one that is in no list register (GICH_HCR.EOICount)
//!   is not tracked.
//! - An SPI pending in the list registers of a vCPU that then goes off stays
//!   there until that vCPU's next `Start`.
//! - With the guest's WFI untrapped (`ipc::WfiPolicy::Native`), a vCPU
//!   goes to sleep without a refresh: what it finished last is folded in
//!   at its next one (the next interrupt it is kicked for, or EOI
//!   maintenance), and until then another vCPU's distributor read shows
//!   such an interrupt as the list register was written (an SPI it
//!   finished still active, say), as for a vCPU that runs without
//!   trapping.

use heapless::Vec;
use ipc::msg::LrStatus;
use ipc::{
    AccessSize, Action, DeviceRegion, GuestReg, IntId, Message, MmioAccess, Reply, Server, ServerError, ServerId,
    VcpuId, VgicRequest, VmConfig, MAX_VCPUS,
};
use log::{debug, trace, warn};
use serde::{Deserialize, Serialize};

use crate::dist::{touched_all, BitIter, Distributor, Instance, Irq, Touch, Touched, SGIS};
use crate::lr::{self, GuestEvent, ListRegister, LrLink, LrState, Misr, Rank, Selection, MAX_LRS};
use crate::regs::{self, GicdReg};

/// The highest register a load may target: R15 would make an MMIO read a
/// branch, which this server does not emulate (the guest gets a data abort).
const MAX_GPR: u8 = 14;

/// What one list register holds, as this server last wrote or saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// The interrupt.
    pub irq: Irq,
    /// The register's value.
    pub lr: ListRegister,
    /// The priority the guest acknowledged it at, until it deactivates it:
    /// what the virtual CPU interface's active priorities (GICH_APR, not
    /// reported) hold for it.
    pub acked_priority: Option<u8>,
}

/// One vCPU's physical CPU interface, as far as this server knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuInterface {
    /// List registers in use (GICH_VTR, capped at [`MAX_LRS`]); 0 before
    /// the vCPU's first `Start`.
    pub list_registers: u8,
    /// What each list register holds.
    pub slots: [Option<Slot>; MAX_LRS],
    /// The GICH_HCR value last written, if any since `Start`.
    pub hcr: Option<u32>,
    /// Each list register's value as this server last wrote it or saw it
    /// in a status it folded (0 after `Start`): what
    /// [`CpuInterface::unchanged`] compares a status with, word for word.
    pub seen: [u32; MAX_LRS],
    /// The distributor's change count ([`Distributor::generation`]) and the
    /// server's count of changes to any vCPU's slots after this vCPU's last
    /// refresh, if that refresh wrote everything it chose and owes no
    /// physical deactivation: while they and the list registers stay as
    /// they were, a refresh would choose and write the same again, and is
    /// skipped.
    pub synced: Option<(u64, u64)>,
    /// Whether the last refresh listed every candidate (left none out for
    /// want of list registers).
    pub listed_all: bool,
}

/// An interrupt made pending by one change, and what a refresh reads
/// (`VgicServer::inputs`) just before and just after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Added {
    /// The interrupt.
    pub irq: Irq,
    /// The inputs before the change.
    pub before: (u64, u64),
    /// The inputs after it.
    pub after: (u64, u64),
}

impl CpuInterface {
    /// The slots of the list registers in use. (A slice, not a `take` of
    /// the array: the iterator chains over it compile to plain loops; with
    /// `take` they were a fifth of a timer tick's vGIC instructions.)
    fn in_use(&self) -> &[Option<Slot>] {
        self.slots.get(..usize::from(self.list_registers)).unwrap_or(&self.slots)
    }

    /// The SPIs held.
    fn held_spis(&self) -> Vec<u16, MAX_LRS> {
        let mut spis = Vec::new();
        for slot in self.in_use() {
            if let Some(Slot { irq: Irq::Spi { intid }, .. }) = *slot {
                // Cannot fail: at most MAX_LRS slots.
                let _ = spis.push(intid);
            }
        }
        spis
    }

    fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.in_use().iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn holds(&self, irq: Irq) -> bool {
        self.slots().any(|(_, s)| s.irq == irq)
    }

    /// Whether `status` shows the list registers exactly as this server
    /// last wrote or saw them: the guest has done nothing with them since
    /// (acknowledged, completed or deactivated nothing), and folding the
    /// status in would change nothing. Most statuses are such (a trap that
    /// has nothing to do with interrupts), and this test is a few compares
    /// where a fold decodes every register.
    ///
    /// The guest changes only the state of a valid register (the rest of it,
    /// and an invalid one, stay as written), so a status equal to what was
    /// last written or seen is one the guest did nothing with. (Compared
    /// word for word: encoding each slot to compare it was a third of the
    /// cost of a refresh that folds nothing.)
    /// (The registers past those in use are 0 in the monitor's statuses and
    /// in `seen`; a status with anything there is taken as changed, and the
    /// fold ignores those registers.)
    fn unchanged(&self, status: &LrStatus) -> bool {
        same_words(&status.lrs, &self.seen)
    }
}

#[cfg(test)]
std::thread_local! {
    /// Refreshes that took the `only_finished` path (for the tests).
    pub(crate) static FINISHED_ONLY: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    /// Refreshes that took the `added_only` path (for the tests).
    pub(crate) static ADDED_ONLY: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    /// Refreshes that took the `acked_then_fell` path (for the tests).
    pub(crate) static ACKED_FELL: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    /// Of those, the ones for an SGI a GICD_SGIR write added (for the tests).
    pub(crate) static ADDED_SGI: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    /// Of those, the ones after SGIs the guest finished were folded in (for
    /// the tests).
    pub(crate) static FINISHED_ADDED: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// A list register whose interrupt the guest finished (see
/// `VgicServer::only_finished`).
#[derive(Clone, Copy, Debug)]
struct Finished {
    index: u8,
    irq: Irq,
    /// It asked for EOI maintenance.
    eoi: bool,
}

/// A vCPU's live private interrupts ([`Distributor::live_sgis`],
/// [`Distributor::live_ppis`]), taken once per refresh.
#[derive(Clone, Copy, Debug)]
struct Live {
    sgis: u32,
    ppis: u32,
}

/// A candidate for a list register: with its [`Rank`] (which holds whether
/// it is active and its priority), all that its list register is made of.
/// (Small, so that a selection's entry is 16 bytes, which the compiler
/// moves without a `memcpy` call.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    irq: Irq,
    /// Whether the LR shows it pending (forwarded).
    pending: bool,
    /// An SGI with other requesters waiting for this INTID's list register.
    more_sources: bool,
    /// [`Instance::wants_eoi`].
    wants_eoi: bool,
    /// [`Instance::group1`].
    group1: bool,
}

/// The vGIC server: its whole state.
///
/// In this order in memory (`repr(C)`): the small fields that every
/// request reads first, the 17 KB distributor last, so that the others sit
/// within the reach of a load's immediate offset on ARM (4 KB). (In the
/// compiler's own order, adding `sent` moved fields around and cost each
/// timer tick some twenty instructions; with the distributor first, a
/// GICD read paid as much.)
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct VgicServer {
    gicd: DeviceRegion,
    /// Counts the changes of which SPIs any vCPU's list-register slots hold:
    /// a refresh of one vCPU depends on that (an SPI held elsewhere is no
    /// candidate here), and on nothing else of the others' slots (their
    /// SGIs and PPIs are theirs alone), see [`VgicServer::inputs`].
    slot_changes: u64,
    /// Kicks that did not fit in a reply, sent with the next one.
    owed_kicks: u8,
    cpus: Vec<CpuInterface, MAX_VCPUS>,
    /// Per vCPU: the SGI a GICD_SGIR write last made pending for it alone,
    /// and what a refresh reads before and after that write: while the
    /// inputs stay as the write left them, a `Sync` may take
    /// [`VgicServer::added_only`] for it (an IPI). A refresh of the vCPU
    /// makes it useless (it moves `synced` past `before`), and the next SGI
    /// sent replaces it.
    sent: [Option<Added>; MAX_VCPUS],
    dist: Distributor,
}

impl Clone for VgicServer {
    fn clone(&self) -> Self {
        let VgicServer { gicd, dist, cpus, owed_kicks, slot_changes, sent } = self;
        VgicServer {
            gicd: *gicd,
            dist: dist.clone(),
            cpus: cpus.clone(),
            owed_kicks: *owed_kicks,
            slot_changes: *slot_changes,
            sent: *sent,
        }
    }

    /// In place (see `Distributor::clone_from`): how the monitor takes its
    /// checkpoints of this server.
    fn clone_from(&mut self, source: &Self) {
        let VgicServer { gicd, dist, cpus, owed_kicks, slot_changes, sent } = source;
        self.gicd = *gicd;
        self.dist.clone_from(dist);
        self.cpus.clear();
        // Cannot fail: the same capacity.
        let _ = self.cpus.extend_from_slice(cpus);
        self.owed_kicks = *owed_kicks;
        self.slot_changes = *slot_changes;
        self.sent = *sent;
    }
}

/// The list register `flush` writes for candidate `c` of rank `rank`.
fn list_register(c: &Candidate, rank: Rank, eoi_all: bool) -> ListRegister {
    ListRegister {
        virtual_id: c.irq.intid(),
        // Never hardware-linked: see "Interrupts backed by a physical one" in
        // the module documentation.
        link: LrLink::Software { cpuid: c.irq.source(), eoi: c.wants_eoi || c.more_sources || eoi_all },
        priority: rank.priority,
        state: LrState::of(c.pending, rank.active()),
        group1: c.group1,
    }
}

/// Whether `a` and `b` hold the same words: differences or'ed together
/// rather than `==` on the slices, which is a `memcmp` call comparing
/// bytes (a hundred instructions).
fn same_words(a: &[u32], b: &[u32]) -> bool {
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn bit(vcpu: VcpuId) -> u8 {
    1u8.checked_shl(u32::from(vcpu.0)).unwrap_or(0)
}

/// The value a load puts in its register: the access's bytes, sign-extended
/// if the load says so.
fn load_value(value: u32, size: AccessSize, sign_extend: bool) -> u32 {
    match (size, sign_extend) {
        (AccessSize::Byte, true) => value as u8 as i8 as i32 as u32,
        (AccessSize::Byte, false) => value & 0xff,
        (AccessSize::Half, true) => value as u16 as i16 as i32 as u32,
        (AccessSize::Half, false) => value & 0xffff,
        _ => value,
    }
}

impl VgicServer {
    /// The vGIC of a VM in its reset state: vCPU count, SPI count and the
    /// distributor's guest address from the configuration.
    pub fn new(config: &VmConfig) -> Self {
        let dist = Distributor::new(config.vcpus, config.spis);
        let mut cpus = Vec::new();
        for _ in 0..dist.vcpus() {
            // Cannot fail: the distributor has at most MAX_VCPUS.
            let _ = cpus.push(CpuInterface::default());
        }
        VgicServer { gicd: config.gicd, dist, cpus, owed_kicks: 0, slot_changes: 0, sent: [None; MAX_VCPUS] }
    }

    /// The distributor's state.
    pub fn distributor(&self) -> &Distributor {
        &self.dist
    }

    /// What this server believes `vcpu`'s CPU interface holds.
    pub fn cpu_interface(&self, vcpu: VcpuId) -> Option<&CpuInterface> {
        self.cpus.get(vcpu.index())
    }

    fn check(&self, vcpu: VcpuId) -> Result<(), ServerError> {
        if self.dist.has_vcpu(vcpu) && self.cpus.get(vcpu.index()).is_some() {
            Ok(())
        } else {
            Err(ServerError::NoSuchVcpu(vcpu))
        }
    }

    /// Everything a refresh of `vcpu` reads besides its own list registers
    /// and slots, as two counts: the distributor's state as far as `vcpu`
    /// is concerned (its own SGIs and PPIs, the SPIs, the global state) and
    /// which SPIs every vCPU's slots hold.
    fn inputs(&self, vcpu: VcpuId) -> (u64, u64) {
        (self.dist.generation(vcpu), self.slot_changes)
    }

    /// `vcpu`'s live private interrupts, now.
    fn live(&self, vcpu: VcpuId) -> Live {
        Live { sgis: self.dist.live_sgis(vcpu), ppis: self.dist.live_ppis(vcpu) }
    }

    /// The vCPU whose list registers hold `irq`.
    fn holder(&self, irq: Irq) -> Option<VcpuId> {
        self.cpus.iter().position(|c| c.holds(irq)).map(|i| VcpuId(i as u8))
    }

    /// Append kicks for the vCPUs in `mask` (and any owed); those that do not
    /// fit are owed to the next reply. (Inline, the test of the common case,
    /// no kick at all: the call and its frame cost 14 instructions more.)
    #[inline(always)]
    fn push_kicks(&mut self, reply: &mut Reply, mask: u8) {
        if mask | self.owed_kicks != 0 {
            self.push_kicks_slow(reply, mask);
        }
    }

    #[inline(never)]
    fn push_kicks_slow(&mut self, reply: &mut Reply, mask: u8) {
        let mask = (mask | self.owed_kicks) & self.dist.vcpu_mask();
        self.owed_kicks = 0;
        // Only the vCPUs in the mask (most replies kick none).
        for v in BitIter(u32::from(mask)) {
            let vcpu = VcpuId(v as u8);
            if reply.push(Action::Kick { vcpu }).is_err() {
                warn!("reply full: kick of vcpu{v} deferred");
                self.owed_kicks |= bit(vcpu);
            }
        }
    }

    // ----------------------------------------------------------------- Start

    fn start(&mut self, vcpu: VcpuId, list_registers: u8, reply: &mut Reply) -> Result<(), ServerError> {
        self.check(vcpu)?;
        if list_registers == 0 {
            // GICH_VTR.ListRegs + 1 is at least 1: a monitor bug.
            return Err(ServerError::Unexpected);
        }
        let Some(cpu) = self.cpus.get_mut(vcpu.index()) else {
            return Err(ServerError::NoSuchVcpu(vcpu));
        };
        // The CPU interface comes up empty: what the list registers held
        // before the vCPU went off is gone (its state stays in the
        // distributor, and goes back into list registers from there).
        let released = cpu.held_spis();
        *cpu = CpuInterface { list_registers: list_registers.min(MAX_LRS as u8), ..CpuInterface::default() };
        if !released.is_empty() {
            self.slot_changes = self.slot_changes.wrapping_add(1);
        }
        let mut kicks = bit(vcpu);
        for intid in released {
            kicks |= self.touch_kicks(Touch::Spi(intid));
        }
        self.push_kicks(reply, kicks);
        Ok(())
    }

    // ------------------------------------------------------------------ MMIO

    fn mmio(
        &mut self,
        vcpu: VcpuId,
        access: &MmioAccess,
        status: &Option<LrStatus>,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        self.check(vcpu)?;
        // What the guest did on the virtual CPU interface since the last
        // refresh (acknowledged an interrupt, deactivated one) shows in the
        // registers it reads, and is what its writes apply to.
        // (An access changes no list register's slot, so only a fold can
        // release an SPI: without one, none is released, and the SPIs held
        // are not gathered. Gathering them was a tenth of the vGIC's part
        // of a GICD read.)
        let held_before = match status {
            Some(status) if self.cpus.get(vcpu.index()).is_some_and(|c| !c.unchanged(status)) => {
                self.fold_status(vcpu, status)
            }
            _ => Vec::new(),
        };
        let reg = match access.ipa.checked_sub(self.gicd.base) {
            Some(offset) if offset < self.gicd.size => regs::decode(offset, access.size),
            _ => {
                warn!("vcpu{}: access at {:#x} is outside the distributor", vcpu.0, access.ipa);
                GicdReg::Reserved(u32::MAX)
            }
        };
        if matches!(reg, GicdReg::BadAccess { .. } | GicdReg::Reserved(_) | GicdReg::ImplementationDefined(_)) {
            debug!("vcpu{}: {} {reg:?}: RAZ/WI", vcpu.0, if access.write { "write" } else { "read" });
        }
        let mut kicks = 0;
        if access.write {
            let mut touched = Touched::new();
            if matches!(reg, GicdReg::Sgir) {
                self.write_sgir(vcpu, access.value as u32, &mut touched);
            } else {
                self.dist.write_into(vcpu, reg, access.value as u32, &mut touched);
            }
            trace!("vcpu{}: write {reg:?} = {:#x}: {touched:?}", vcpu.0, access.value);
            reply.push(Action::AdvancePc)?;
            kicks = self.kicks_for(&touched);
        } else if access.rt > MAX_GPR {
            debug!("vcpu{}: load of {reg:?} into r{}: data abort", vcpu.0, access.rt);
            reply.push(Action::InjectDataAbort { far: access.far })?;
        } else {
            let value = self.dist.read(vcpu, reg);
            trace!("vcpu{}: read {reg:?} = {value:#x}", vcpu.0);
            // Two pushes rather than `extend` of an array: each action of
            // the array was built whole (64 bytes) and moved out of it.
            reply.push(Action::SetReg {
                reg: GuestReg::Gpr(access.rt),
                value: load_value(value, access.size, access.sign_extend),
            })?;
            reply.push(Action::AdvancePc)?;
        }
        // SPIs the fold released may go on to a vCPU, this one included (its
        // list registers are written at its next refresh, which the kick
        // brings about).
        kicks |= self.released_kicks(&held_before);
        self.push_kicks(reply, kicks);
        Ok(())
    }

    /// A GICD_SGIR write of `value` by `vcpu`. An SGI sent to one vCPU is
    /// all that vCPU's next refresh may have to list (see `added_only`):
    /// it is noted for it. (Out of line: the other distributor writes pay
    /// only for the test of the register.)
    #[inline(never)]
    fn write_sgir(&mut self, vcpu: VcpuId, value: u32, touched: &mut Touched) {
        self.dist.write_sgir(vcpu, value, touched);
        if let [Touch::Private(target, sgi)] = touched.as_slice() {
            // The write counted once against the target's inputs, and
            // against no other part of them.
            let after = self.inputs(*target);
            let added = Added {
                irq: Irq::Sgi { target: *target, sgi: *sgi as u8, source: vcpu },
                before: (after.0.wrapping_sub(1), after.1),
                after,
            };
            if let Some(slot) = self.sent.get_mut(target.index()) {
                *slot = Some(added);
            }
        }
    }

    /// A `Sync` of `vcpu`: when an SGI sent since its last refresh is all
    /// that changed (the note in `VgicServer::sent` is for the inputs
    /// now), [`Self::added_only`] lists it where the full refresh would (an
    /// IPI's kick); else the refresh. (A note older than the last refresh
    /// is left where it is: that refresh moved `synced` past its `before`,
    /// and `added_only` refuses it. Only a `Sync` looks: an `Idle` or a
    /// `Maintenance` seldom follows an IPI alone, and the look would cost
    /// each of them a few instructions.)
    fn sync(&mut self, vcpu: VcpuId, status: &LrStatus, reply: &mut Reply) -> Result<(), ServerError> {
        let inputs = self.inputs(vcpu);
        if let Some(added) = self.sent.get(vcpu.index()).copied().flatten().filter(|a| a.after == inputs) {
            if self.sgi_alone(vcpu, added.irq) && self.added_only(vcpu, added.irq, status, added.before, reply)? {
                #[cfg(test)]
                ADDED_SGI.with(|n| n.set(n.get() + 1));
                return Ok(());
            }
            if self.finished_then_added(vcpu, added, status, reply)? {
                return Ok(());
            }
        }
        self.refresh(vcpu, status, false, reply)
    }

    /// The `Sync` of an IPI's kick when, besides the SGI sent (`added`),
    /// the guest has only finished SGIs since the vCPU's last refresh (as
    /// it does when its WFI does not trap, `WfiPolicy::Native`: no `Idle`
    /// folded them in as it went idle). Those are folded in, and if each
    /// is idle now or is the SGI sent again, [`Self::added_only`] lists the
    /// sent one where the full refresh would; else the full refresh goes on
    /// from the fold. False (nothing changed) when the status shows
    /// anything else: an entry that asked for EOI maintenance, or not an
    /// SGI (an SPI's release may kick others), or any other change (see
    /// [`Self::only_finished`], here against the inputs before the SGI was
    /// sent). The simulated machine's test checks each such refresh against
    /// the full one.
    fn finished_then_added(
        &mut self,
        vcpu: VcpuId,
        added: Added,
        status: &LrStatus,
        reply: &mut Reply,
    ) -> Result<bool, ServerError> {
        let Some(finished) = self.only_finished(vcpu, status, added.before, reply) else {
            return Ok(false);
        };
        if finished.iter().any(|f| f.eoi || !matches!(f.irq, Irq::Sgi { .. })) {
            return Ok(false);
        }
        // (All SGIs: the fold empties their registers and releases no SPI.)
        self.fold_finished(vcpu, status, &finished);
        let idle = |s: &Self, irq: Irq| s.dist.instance(irq).is_some_and(|i| !i.pending && !i.active);
        if finished.iter().all(|f| f.irq == added.irq || idle(self, f.irq))
            && self.sgi_alone(vcpu, added.irq)
            && self.added_only(vcpu, added.irq, status, added.before, reply)?
        {
            #[cfg(test)]
            FINISHED_ADDED.with(|n| n.set(n.get() + 1));
            return Ok(true);
        }
        let live = self.live(vcpu);
        let held_before = self.cpus.get(vcpu.index()).map(CpuInterface::held_spis).unwrap_or_default();
        self.refresh_folded(vcpu, status, held_before, live, false, reply)?;
        Ok(true)
    }

    /// Whether `irq` is an SGI for `vcpu` that the full refresh would list
    /// as [`Self::added_only`] does: no other requester's is pending or
    /// active, and no list register holds that SGI (the full refresh lists
    /// one requester of an SGI at a time, and asks for EOI maintenance when
    /// others wait).
    fn sgi_alone(&self, vcpu: VcpuId, irq: Irq) -> bool {
        let Irq::Sgi { target, sgi, source } = irq else {
            return false;
        };
        let only_requester = 1u8.checked_shl(u32::from(source.0));
        let alone = self.dist.sgi(target, sgi).is_some_and(|s| s.active.is_none() && Some(s.pending) == only_requester);
        let listed = self
            .cpus
            .get(vcpu.index())
            .is_none_or(|c| c.slots().any(|(_, s)| matches!(s.irq, Irq::Sgi { sgi: id, .. } if id == sgi)));
        target == vcpu && alone && !listed
    }

    // ------------------------------------------------------------- Set line

    // The fields of `VgicRequest::SetLine`, and the reply.
    #[allow(clippy::too_many_arguments)]
    fn set_line(
        &mut self,
        intid: IntId,
        level: bool,
        target: Option<VcpuId>,
        hw: Option<IntId>,
        change: u32,
        status: Option<LrStatus>,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        self.line_event(intid, target, status, level, reply, |dist, irq| {
            if hw.is_some_and(|p| !(p.is_ppi() || p.is_spi())) {
                return Err(ServerError::Unexpected);
            }
            if !dist.take_line_change(irq, change) {
                debug!("SetLine: change {change} of INTID {} is older than one already taken; ignored", intid.0);
                return Ok(false);
            }
            dist.set_line(irq, level, hw);
            Ok(true)
        })
    }

    /// `VgicRequest::Pend`: the interrupt's latch set, as GICD_ISPENDRn
    /// would, and then as a line raised. (Out of line: inlined into
    /// `handle_into` beside `set_line`, it made the code of the other
    /// requests worse, a GICD write's by some five instructions.)
    #[inline(never)]
    fn pend(
        &mut self,
        intid: IntId,
        target: Option<VcpuId>,
        status: Option<LrStatus>,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        self.line_event(intid, target, status, true, reply, |dist, irq| {
            dist.pend(irq);
            Ok(true)
        })
    }

    /// A `SetLine` or a `Pend` of `intid` (a PPI of `target`, or an SPI the
    /// distributor has), raising it (`raised`) or lowering it: `change`
    /// checks the request and applies it to the distributor, or says it is
    /// to be ignored (false; a refusal changes nothing). Then the kicks it
    /// needs, or, for the vCPU handled with its status, its list registers
    /// written in this reply. (One body for both, inlined into each with
    /// its `change`: a helper that only named the interrupt, returning it
    /// and the vCPU handled, cost a GICD write 6 instructions, a device's
    /// interrupt 39 and a linked tick 30.)
    #[inline(always)]
    fn line_event(
        &mut self,
        intid: IntId,
        target: Option<VcpuId>,
        status: Option<LrStatus>,
        raised: bool,
        reply: &mut Reply,
        change: impl FnOnce(&mut Distributor, Irq) -> Result<bool, ServerError>,
    ) -> Result<(), ServerError> {
        let irq = if intid.is_ppi() {
            let vcpu = target.ok_or(ServerError::Unexpected)?;
            self.check(vcpu)?;
            Irq::Ppi { vcpu, intid: intid.0 }
        } else if intid.is_spi() && self.dist.spi(intid.0).is_some() {
            Irq::Spi { intid: intid.0 }
        } else {
            return Err(ServerError::Unexpected);
        };
        // The vCPU being handled, with its status (a private line's own
        // vCPU; for an SPI, the one the router names): if the change may
        // alter its list registers, they are written here, in place of the
        // kick and the `Sync` it would bring (the same refresh, one message
        // sooner). (Another vCPU an SPI goes to is kicked, as without. A
        // kick names only vCPUs that exist.)
        let handled = match irq {
            Irq::Ppi { vcpu, .. } => Some(vcpu),
            _ => target,
        };
        // What its refresh reads, before this change (see `added_only`).
        let before = self.inputs(handled.unwrap_or(VcpuId(0)));
        if !change(&mut self.dist, irq)? {
            return Ok(());
        }
        let touch = match irq {
            Irq::Ppi { vcpu, intid } => Touch::Private(vcpu, intid),
            _ => Touch::Spi(intid.0),
        };
        let kicks = self.touch_kicks(touch);
        if let (Some(status), Some(vcpu)) = (status, handled.filter(|v| kicks & bit(*v) != 0)) {
            let done = if raised {
                self.added_only(vcpu, irq, &status, before, reply)?
            } else {
                self.acked_then_fell(vcpu, irq, &status, before, reply)?
            };
            if !done {
                self.refresh(vcpu, &status, false, reply)?;
            }
            self.push_kicks(reply, kicks & !bit(vcpu));
            return Ok(());
        }
        self.push_kicks(reply, kicks);
        Ok(())
    }

    // ----------------------------------------------------------------- Kicks

    fn kicks_for(&self, touched: &Touched) -> u8 {
        if touched_all(touched) {
            return self.dist.vcpu_mask();
        }
        touched.iter().fold(0, |m, t| m | self.touch_kicks(*t))
    }

    /// The vCPUs whose list registers may have to change after `touch`
    /// changed: the one holding the interrupt, and the one it is (or stays)
    /// deliverable to if it is forwardable, active, or owes a physical
    /// deactivation.
    fn touch_kicks(&self, touch: Touch) -> u8 {
        match touch {
            Touch::Private(vcpu, intid) => {
                let Some(cpu) = self.cpus.get(vcpu.index()) else {
                    return 0;
                };
                let live = if intid < SGIS {
                    self.dist
                        .sgi(vcpu, intid as u8)
                        .is_some_and(|s| s.active.is_some() || (s.pending != 0 && self.dist.group_enabled(s.group1)))
                } else {
                    self.dist
                        .instance(Irq::Ppi { vcpu, intid })
                        .is_some_and(|i| i.active || i.hw_owed || self.dist.forwardable(&i))
                };
                // The list registers are looked at only when the line is
                // idle (an SGI just sent is pending: live).
                if live || cpu.slots().any(|(_, s)| s.irq.intid() == intid) {
                    bit(vcpu)
                } else {
                    0
                }
            }
            Touch::Spi(intid) => {
                let irq = Irq::Spi { intid };
                let mut mask = self.holder(irq).map_or(0, bit);
                if let (Some(inst), Some(state)) = (self.dist.instance(irq), self.dist.spi(intid)) {
                    if inst.active || inst.hw_owed || self.dist.forwardable(&inst) {
                        mask |= match self.dist.spi_target(state) {
                            Some(t) => bit(t),
                            // An owed deactivation needs some CPU.
                            None if inst.hw_owed => 1,
                            None => 0,
                        };
                    }
                }
                mask
            }
            Touch::All => self.dist.vcpu_mask(),
        }
    }

    // ------------------------------------------------- Fold, choose, write

    fn refresh(&mut self, vcpu: VcpuId, status: &LrStatus, idle: bool, reply: &mut Reply) -> Result<(), ServerError> {
        self.check(vcpu)?;
        trace!("vcpu{}: {:?} {status:x?}", vcpu.0, Misr::decode(status.misr));
        let inputs = self.inputs(vcpu);
        if self.cpus.get(vcpu.index()).is_some_and(|c| c.synced == Some(inputs) && c.unchanged(status)) {
            // Nothing this refresh reads has changed since the last one,
            // which wrote all it chose: it would fold nothing, choose and
            // write the same, and release nothing. (A wake-up check still
            // runs: that is the answer an `Idle` asks for.)
            self.push_kicks(reply, 0);
            if idle && !self.could_signal(vcpu, self.live(vcpu)) {
                reply.push(Action::WaitForInterrupt)?;
            }
            return Ok(());
        }
        if let Some(finished) = self.only_finished(vcpu, status, inputs, reply) {
            // The guest only finished interrupts since a refresh that listed
            // every candidate, and nothing else changed: what a full refresh
            // would do comes down to the finished entries (see
            // `only_finished`), and so does the fold.
            self.fold_finished(vcpu, status, &finished);
            let live = self.live(vcpu);
            let wait = idle && !self.could_signal(vcpu, live);
            if self.settle_finished(vcpu, &finished, reply)? {
                #[cfg(test)]
                FINISHED_ONLY.with(|n| n.set(n.get() + 1));
                // Only the finished registers were emptied, and each of
                // their interrupts is idle now (neither pending nor active,
                // and an SPI owes no physical deactivation: see
                // `settle_finished`): an SPI among them goes to no vCPU, so
                // its release kicks none (`touch_kicks`), and the SPIs held
                // are not gathered.
                return self.end_refresh(vcpu, true, &[], wait, reply);
            }
            // One of them is pending or active again: the full refresh, from
            // the fold on, with every SPI held before the fold (those still
            // held, and the finished ones).
            let mut held_before = self.cpus.get(vcpu.index()).map(CpuInterface::held_spis).unwrap_or_default();
            for f in &finished {
                if let Irq::Spi { intid } = f.irq {
                    // Cannot fail: each was in a register the fold emptied.
                    let _ = held_before.push(intid);
                }
            }
            return self.refresh_folded(vcpu, status, held_before, live, wait, reply);
        }
        self.dist.tidy();
        let held_before = self.fold_status(vcpu, status);
        // Taken once, after the fold: writing the list registers makes no
        // interrupt live or idle, and the deactivation scan checks each
        // interrupt it visits anyway.
        let live = self.live(vcpu);
        let wait = idle && !self.could_signal(vcpu, live);
        self.refresh_folded(vcpu, status, held_before, live, wait, reply)
    }

    /// The rest of a refresh once `status` is folded: choose and write the
    /// list registers, deactivate what is owed, kick, answer an `Idle`.
    fn refresh_folded(
        &mut self,
        vcpu: VcpuId,
        status: &LrStatus,
        held_before: Vec<u16, MAX_LRS>,
        live: Live,
        wait: bool,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        self.flush(vcpu, status, live, reply)?;
        let settled = self.deactivate_owed(vcpu, live, reply);
        self.end_refresh(vcpu, settled, &held_before, wait, reply)
    }

    /// How every refresh that wrote `vcpu`'s list registers ends: note the
    /// inputs it saw if it owes no deactivation (`settled`), kick the vCPUs
    /// that may take the SPIs it released, answer an `Idle` that waits.
    ///
    /// A refresh that left a deactivation owed (its reply was full) kicks
    /// `vcpu` itself, which the monitor turns into a `Sync` before it
    /// re-enters the vCPU, and does not let it wait: the physical interrupt
    /// still active may be the one that would wake it (the virtual timer's),
    /// and a guest whose WFI does not trap (`WfiPolicy::Native`) would sleep
    /// through it without another refresh.
    fn end_refresh(
        &mut self,
        vcpu: VcpuId,
        settled: bool,
        held_before: &[u16],
        wait: bool,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        let inputs = self.inputs(vcpu);
        if let Some(cpu) = self.cpus.get_mut(vcpu.index()) {
            cpu.synced = settled.then_some(inputs);
        }
        // This vCPU's own list registers were just written: it is kicked
        // only to finish the refresh, first, in the place
        // `deactivate_owed` kept.
        if !settled {
            self.kick_to_finish(vcpu, reply);
        }
        let kicks = self.released_kicks(held_before) & !bit(vcpu);
        self.push_kicks(reply, kicks);
        if wait && settled {
            reply.push(Action::WaitForInterrupt)?;
        }
        Ok(())
    }

    /// Kick `vcpu` to finish its refresh (see [`Self::end_refresh`]), in
    /// the place `deactivate_owed` kept. (Out of line: it is rare, and
    /// inline it cost every refresh some instructions.)
    #[cold]
    #[inline(never)]
    fn kick_to_finish(&mut self, vcpu: VcpuId, reply: &mut Reply) {
        if reply.push(Action::Kick { vcpu }).is_err() {
            warn!("reply full: the kick finishing vcpu{}'s refresh is deferred", vcpu.0);
            self.owed_kicks |= bit(vcpu);
        }
    }

    /// The list registers in which `status` shows the guest finished an
    /// interrupt, when that is all it shows and a shorter refresh gives what
    /// the full one would (else `None`; nothing is changed either way):
    /// - the last refresh of `vcpu` listed every candidate, wrote all it
    ///   chose and owed no deactivation, and nothing it reads has changed
    ///   since (`inputs` as it left them);
    /// - every list register that differs from what this server last wrote
    ///   or saw now holds the same interrupt, invalid (finished), and is not
    ///   an SGI that asked for EOI maintenance (other requesters of its
    ///   INTID wait for the register);
    /// - the reply has room for a write and a deactivation for each.
    ///
    /// The candidates are then those listed before less the finished ones
    /// (if these are idle now, which [`Self::settle_finished`] checks), so a
    /// full refresh would keep every other register as it is, GICH_HCR too
    /// (nothing left out), write 0 into a finished register that asked for
    /// EOI maintenance (an invalid one that did not is empty already), and
    /// deactivate a finished interrupt's physical one. The simulated
    /// machine's test checks each refresh against the full one. (Inline:
    /// a timer tick's maintenance takes it, and out of line, with its two
    /// callers, it cost each some twenty instructions.)
    #[inline(always)]
    fn only_finished(
        &self,
        vcpu: VcpuId,
        status: &LrStatus,
        inputs: (u64, u64),
        reply: &Reply,
    ) -> Option<Vec<Finished, MAX_LRS>> {
        let cpu = self.cpus.get(vcpu.index())?;
        if cpu.synced != Some(inputs) || !cpu.listed_all {
            return None;
        }
        let mut finished: Vec<Finished, MAX_LRS> = Vec::new();
        let count = usize::from(cpu.list_registers).min(MAX_LRS);
        for i in 0..count {
            let (Some(&raw), Some(&was), Some(slot)) = (status.lrs.get(i), cpu.seen.get(i), cpu.slots.get(i)) else {
                break;
            };
            if raw == was {
                continue;
            }
            let held = (*slot)?;
            let observed = ListRegister::decode(raw);
            if observed.state != LrState::Invalid || !observed.same_interrupt(&held.lr) {
                return None;
            }
            let eoi = matches!(held.lr.link, LrLink::Software { eoi: true, .. });
            if eoi && matches!(held.irq, Irq::Sgi { .. }) {
                return None;
            }
            // Cannot fail: at most MAX_LRS registers.
            let _ = finished.push(Finished { index: i as u8, irq: held.irq, eoi });
        }
        // (Statuses beyond the registers in use count as changed, see
        // `CpuInterface::unchanged`: the full refresh takes those.)
        let (status_beyond, seen_beyond) =
            (status.lrs.get(count..).unwrap_or(&[]), cpu.seen.get(count..).unwrap_or(&[]));
        if finished.is_empty() || !same_words(status_beyond, seen_beyond) {
            return None;
        }
        if reply.actions.len() + 2 * finished.len() + 2 > ipc::MAX_ACTIONS {
            return None;
        }
        Some(finished)
    }

    /// After the fold of a status [`Self::only_finished`] accepted: if every
    /// finished interrupt is idle now (neither pending nor active; the
    /// physical interrupt behind one, if any, a PPI's), write 0 into the
    /// registers that asked for EOI maintenance and deactivate the physical
    /// interrupts, and say so; else change nothing and return false (the
    /// full refresh follows).
    fn settle_finished(&mut self, vcpu: VcpuId, finished: &[Finished], reply: &mut Reply) -> Result<bool, ServerError> {
        // The physical interrupt each one owes a deactivation, if any.
        let mut owed: [Option<IntId>; MAX_LRS] = [None; MAX_LRS];
        for (f, owed) in finished.iter().zip(owed.iter_mut()) {
            let Some(inst) = self.dist.instance(f.irq) else {
                return Ok(false);
            };
            if inst.pending || inst.active || (inst.hw_owed && !matches!(f.irq, Irq::Ppi { .. })) {
                return Ok(false);
            }
            *owed = inst.hw.filter(|_| inst.hw_owed);
        }
        for (f, owed) in finished.iter().zip(owed) {
            if f.eoi {
                reply.push(Action::WriteListRegister { index: f.index, value: 0 })?;
                if let Some(seen) = self.cpus.get_mut(vcpu.index()).and_then(|c| c.seen.get_mut(usize::from(f.index))) {
                    *seen = 0;
                }
            }
            if let Some(physical) = owed {
                reply.push(Action::DeactivatePhysical { intid: physical })?;
                self.dist.hw_deactivated(f.irq);
            }
        }
        Ok(true)
    }

    /// The refresh of `vcpu` after a change that made `irq` (a private line
    /// of `vcpu`, or an SGI sent to it) a new candidate, when that is all
    /// that changed and there is room for it: write it into the first free
    /// list register, and say so (else change nothing and return false; the
    /// full refresh follows). A virtual timer's tick takes this path, an
    /// IPI's `Sync` (for an SGI, the caller checks [`Self::sgi_alone`]
    /// first), and an SPI raised while the router handles the vCPU it goes
    /// to (a device's interrupt after a register write).
    ///
    /// It is what the full refresh would do when
    /// - nothing the last refresh of `vcpu` read has changed but this
    ///   interrupt (`before`, the inputs as they were before the change,
    ///   are the ones it left), that refresh listed every candidate, and the
    ///   guest has done nothing with the list registers since (`status`);
    /// - `irq` is now pending and forwardable, not active, and in no list
    ///   register (an SPI: of any vCPU), an SPI is delivered to `vcpu`, and
    ///   one of `vcpu`'s list registers is free.
    ///
    /// The candidates are then those held plus `irq`: all fit, so each held
    /// one stays where it is, unchanged (with none left out, GICH_HCR and
    /// the entries' EOI requests do not depend on what is pending, see
    /// `lr::maintenance`), and `irq` goes into the first free register,
    /// as the full refresh places a new one; nothing is folded, and no
    /// deactivation is owed (the last refresh settled all, and a pending
    /// interrupt owes none). The simulated machine's test checks each such
    /// refresh against the full one.
    // Inline: out of line it cost some fifty instructions of each timer
    // tick.
    #[inline(always)]
    fn added_only(
        &mut self,
        vcpu: VcpuId,
        irq: Irq,
        status: &LrStatus,
        before: (u64, u64),
        reply: &mut Reply,
    ) -> Result<bool, ServerError> {
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return Ok(false);
        };
        if cpu.synced != Some(before) || !cpu.listed_all || !cpu.unchanged(status) || cpu.holds(irq) {
            return Ok(false);
        }
        // An SPI is `vcpu`'s candidate only while it is delivered there and
        // in no other vCPU's list registers (see `candidates`).
        if let Irq::Spi { intid } = irq {
            if self.dist.spi(intid).and_then(|s| self.dist.spi_target(s)) != Some(vcpu) || self.holder(irq).is_some() {
                return Ok(false);
            }
        }
        let Some(inst) = self.dist.instance(irq) else {
            return Ok(false);
        };
        if inst.active || !self.dist.forwardable(&inst) {
            return Ok(false);
        }
        let count = usize::from(cpu.list_registers).min(MAX_LRS);
        let Some(free) = cpu.slots.get(..count).and_then(|slots| slots.iter().position(Option::is_none)) else {
            return Ok(false);
        };
        let (hcr, eoi_all) = lr::maintenance(false, true);
        if eoi_all || cpu.hcr != Some(hcr.encode()) || reply.actions.len() + 2 > ipc::MAX_ACTIONS {
            return Ok(false);
        }
        // The candidate as `candidates` offers it, and its entry as `flush`
        // writes it.
        let candidate =
            Candidate { irq, pending: true, more_sources: false, wants_eoi: inst.wants_eoi, group1: inst.group1 };
        let rank = Rank::new(false, inst.priority, irq.intid(), irq.source());
        let slot = Slot { irq, acked_priority: None, lr: list_register(&candidate, rank, eoi_all) };
        let value = slot.lr.encode();
        let Some(cpu) = self.cpus.get_mut(vcpu.index()) else {
            return Ok(false);
        };
        reply.push(Action::WriteListRegister { index: free as u8, value })?;
        if let (Some(s), Some(seen)) = (cpu.slots.get_mut(free), cpu.seen.get_mut(free)) {
            *s = Some(slot);
            *seen = value;
        }
        if matches!(irq, Irq::Spi { .. }) {
            self.slot_changes = self.slot_changes.wrapping_add(1);
        }
        // As `flush` ends: every held interrupt noted as written. (The
        // slots are walked where they are: `dist` is another field.)
        for slot in cpu.slots.get(..count).unwrap_or(&[]).iter().flatten() {
            self.dist.written(slot.irq, slot.lr.state.pending());
        }
        #[cfg(test)]
        ADDED_ONLY.with(|n| n.set(n.get() + 1));
        // Every interrupt held before is held still (one register was
        // filled, none emptied): no SPI is released, and none is gathered.
        self.end_refresh(vcpu, true, &[], false, reply)?;
        Ok(true)
    }

    /// The refresh of `vcpu` after the line of `irq` fell while `vcpu` was
    /// handled, when the guest has only acknowledged `irq` since its last
    /// refresh: what an interrupt-driven driver does, its handler quieting
    /// the device (say a PL011's UARTICR) with the interrupt active. The
    /// acknowledgement is folded in; if the register the full refresh would
    /// write for `irq` now is the one the guest left (active, not pending
    /// again), nothing else changes, as in [`Self::added_only`], and that is
    /// said (true). If it differs (the interrupt is pending again, say),
    /// the full refresh goes on from the fold (true as well). False, with
    /// nothing changed, when it is not that case:
    /// - the last refresh of `vcpu` listed every candidate and nothing it
    ///   reads has changed but this line (`before`, as in `added_only`);
    /// - the one list register that differs from what this server last
    ///   wrote or saw is `irq`'s (a PPI or an SPI), once pending, now the
    ///   same interrupt active.
    ///
    /// The simulated machine's test checks each such refresh against the
    /// full one. (Out of line: only a falling line takes it; the IPI and
    /// the timer tick, which never do, measured the same either way.)
    #[inline(never)]
    fn acked_then_fell(
        &mut self,
        vcpu: VcpuId,
        irq: Irq,
        status: &LrStatus,
        before: (u64, u64),
        reply: &mut Reply,
    ) -> Result<bool, ServerError> {
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return Ok(false);
        };
        if cpu.synced != Some(before) || !cpu.listed_all || matches!(irq, Irq::Sgi { .. }) {
            return Ok(false);
        }
        let count = usize::from(cpu.list_registers).min(MAX_LRS);
        let mut acked = None;
        for i in 0..count {
            let (Some(&raw), Some(&was), Some(slot)) = (status.lrs.get(i), cpu.seen.get(i), cpu.slots.get(i)) else {
                break;
            };
            if raw == was {
                continue;
            }
            let Some(held) = slot.filter(|s| s.irq == irq && acked.is_none()) else {
                return Ok(false);
            };
            let observed = ListRegister::decode(raw);
            if held.lr.state != LrState::Pending
                || observed.state != LrState::Active
                || !observed.same_interrupt(&held.lr)
            {
                return Ok(false);
            }
            acked = Some((i, raw));
        }
        let (status_beyond, seen_beyond) =
            (status.lrs.get(count..).unwrap_or(&[]), cpu.seen.get(count..).unwrap_or(&[]));
        let Some((index, raw)) = acked.filter(|_| same_words(status_beyond, seen_beyond)) else {
            return Ok(false);
        };
        let (hcr, eoi_all) = lr::maintenance(false, false);
        if cpu.hcr != Some(hcr.encode()) {
            return Ok(false);
        }
        let held_before = self.fold_status(vcpu, status);
        // `irq`'s register as `flush` would write it now (the candidate as
        // `candidates` offers a held, active one).
        let same = self.dist.instance(irq).is_some_and(|inst| {
            let candidate = Candidate {
                irq,
                pending: self.dist.forwardable(&inst),
                more_sources: false,
                wants_eoi: inst.wants_eoi,
                group1: inst.group1,
            };
            let rank = Rank::new(inst.active, inst.priority, irq.intid(), irq.source());
            inst.active && !inst.hw_owed && list_register(&candidate, rank, eoi_all).encode() == raw
        });
        if !same {
            let live = self.live(vcpu);
            self.refresh_folded(vcpu, status, held_before, live, false, reply)?;
            return Ok(true);
        }
        // As `flush` ends: every held interrupt noted as written (the fold
        // left `irq`'s slot as the guest's register shows it). (The vCPU
        // exists: its slots were just folded.)
        if let Some(cpu) = self.cpus.get(vcpu.index()) {
            debug_assert!(cpu.slots.get(index).copied().flatten().is_some_and(|s| s.lr.encode() == raw));
            for slot in cpu.slots.get(..count).unwrap_or(&[]).iter().flatten() {
                self.dist.written(slot.irq, slot.lr.state.pending());
            }
        }
        #[cfg(test)]
        ACKED_FELL.with(|n| n.set(n.get() + 1));
        // Every interrupt held before is held still: none is released.
        self.end_refresh(vcpu, true, &[], false, reply)?;
        Ok(true)
    }

    /// [`Self::fold`] `status` into `vcpu`'s state; returns the SPIs its
    /// list registers held before (what [`Self::released_kicks`] needs).
    /// When nothing changed ([`CpuInterface::unchanged`]) nothing is
    /// folded. (What was held is returned all the same: a refresh may take
    /// an interrupt out of a list register itself, one retargeted say.)
    fn fold_status(&mut self, vcpu: VcpuId, status: &LrStatus) -> Vec<u16, MAX_LRS> {
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return Vec::new();
        };
        let held_before = cpu.held_spis();
        if cpu.unchanged(status) {
            return held_before;
        }
        self.fold(vcpu, status);
        held_before
    }

    /// The vCPUs to kick for the SPIs of `held_before` that no list register
    /// holds now (the guest finished them, or they are delivered elsewhere
    /// now): they may be waiting for a vCPU that could not take them while
    /// they were held.
    fn released_kicks(&self, held_before: &[u16]) -> u8 {
        let mut kicks = 0;
        for &intid in held_before {
            if self.holder(Irq::Spi { intid }).is_none() {
                kicks |= self.touch_kicks(Touch::Spi(intid));
            }
        }
        kicks
    }

    /// [`Self::fold`] of a `status` in which [`Self::only_finished`] found
    /// that the guest only finished the interrupts of `finished`: each of
    /// those registers went from its slot's state to invalid, and no other
    /// changed. The fold would find the same registers, decode them again
    /// and come to this; here they are emptied straight away.
    fn fold_finished(&mut self, vcpu: VcpuId, status: &LrStatus, finished: &[Finished]) {
        let Some(cpu) = self.cpus.get_mut(vcpu.index()) else {
            return;
        };
        cpu.seen = status.lrs;
        for f in finished {
            let Some(held) = cpu.slots.get_mut(usize::from(f.index)).and_then(Option::take) else {
                continue;
            };
            // As the fold: what took the register from its state to invalid.
            // (A slot is never invalid, so this is never `None`.)
            for event in lr::guest_events(held.lr.state, LrState::Invalid).unwrap_or(&[]) {
                match event {
                    GuestEvent::Ack => self.dist.ack(held.irq),
                    GuestEvent::Deactivate => self.dist.deactivate(held.irq),
                }
            }
        }
        if finished.iter().any(|f| matches!(f.irq, Irq::Spi { .. })) {
            self.slot_changes = self.slot_changes.wrapping_add(1);
        }
    }

    /// Apply what the guest did to `vcpu`'s list registers since they were
    /// written.
    fn fold(&mut self, vcpu: VcpuId, status: &LrStatus) {
        let Some(cpu) = self.cpus.get_mut(vcpu.index()) else {
            return;
        };
        // Whether a slot that held an SPI was emptied (see `slot_changes`).
        let mut spi_released = false;
        let count = usize::from(cpu.list_registers).min(MAX_LRS);
        // The registers that differ from what this server last wrote or saw
        // (elsewhere nothing happened), as a mask first: a fold usually finds
        // one, and the loop below then runs once. (By index over the
        // fixed-size arrays: zipped, even as slices, iterators cost about
        // thirty instructions a register in bookkeeping alone.)
        const _: () = assert!(MAX_LRS <= 32, "a bit of a u32 for each list register");
        let mut differ = 0u32;
        for i in 0..count {
            if status.lrs.get(i) != cpu.seen.get(i) {
                differ |= 1 << i;
            }
        }
        cpu.seen = status.lrs;
        for i in BitIter(differ) {
            let (Some(&raw), Some(slot)) = (status.lrs.get(i), cpu.slots.get_mut(i)) else {
                break;
            };
            let observed = ListRegister::decode(raw);
            let Some(held) = *slot else {
                if observed.state != LrState::Invalid {
                    debug!("vcpu{}: LR{i} holds {raw:#x}, not written by us", vcpu.0);
                }
                continue;
            };
            if !observed.same_interrupt(&held.lr) {
                warn!("vcpu{}: LR{i} holds {raw:#x}, expected {:#x}", vcpu.0, held.lr.encode());
                *slot = None;
                spi_released |= matches!(held.irq, Irq::Spi { .. });
                continue;
            }
            let Some(events) = lr::guest_events(held.lr.state, observed.state) else {
                warn!(
                    "vcpu{}: LR{i} went from {:?} to {:?}, which the guest cannot do",
                    vcpu.0, held.lr.state, observed.state
                );
                *slot = None;
                spi_released |= matches!(held.irq, Irq::Spi { .. });
                continue;
            };
            let mut acked_priority = held.acked_priority;
            for event in events {
                match event {
                    GuestEvent::Ack => {
                        self.dist.ack(held.irq);
                        acked_priority = Some(held.lr.priority);
                    }
                    GuestEvent::Deactivate => {
                        self.dist.deactivate(held.irq);
                        acked_priority = None;
                    }
                }
            }
            // Only the state and the acknowledged priority change: updated
            // in place (building the whole slot anew stored each of its
            // fields).
            match slot {
                Some(s) if observed.state != LrState::Invalid => {
                    s.lr.state = observed.state;
                    s.acked_priority = acked_priority;
                }
                _ => {
                    *slot = None;
                    spi_released |= matches!(held.irq, Irq::Spi { .. });
                }
            }
        }
        if spi_released {
            self.slot_changes = self.slot_changes.wrapping_add(1);
        }
    }

    /// Whether `vcpu` has an interrupt the virtual CPU interface could
    /// signal now, as far as this server knows: forwarded, not active itself,
    /// and of higher priority than the running priority. The running
    /// priority is the highest the guest acknowledged and has not
    /// deactivated, from the list registers (the hardware's GICH_APR is not
    /// reported). The guest's priority mask and binary point are not
    /// reported either; ignoring them errs towards not idling, never towards
    /// a lost wake-up. (A guest using EOImode 1 that drops priority and then
    /// waits before deactivating is judged by the priority before the drop.)
    fn could_signal(&self, vcpu: VcpuId, live: Live) -> bool {
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return false;
        };
        // The highest priority (lowest value) of those that could be
        // signalled but for the running priority; that is compared with the
        // running priority once, at the end (most waits find none: an idle
        // vCPU's lines are idle).
        let mut best: Option<u8> = None;
        let mut offer = |priority: u8| best = Some(best.map_or(priority, |b| b.min(priority)));
        let mask = self.dist.vcpu_mask();
        for s in BitIter(live.sgis).filter_map(|sgi| self.dist.sgi(vcpu, sgi as u8)) {
            // One requester of an SGI being active holds back the others.
            if s.active.is_none() && s.pending & mask != 0 && self.dist.group_enabled(s.group1) {
                offer(s.priority);
            }
        }
        let signals = |inst: &Instance| !inst.active && self.dist.forwardable(inst);
        // An idle PPI is not pending.
        for intid in BitIter(live.ppis).map(|n| SGIS + n as u16) {
            if let Some(inst) = self.dist.instance(Irq::Ppi { vcpu, intid }).filter(signals) {
                offer(inst.priority);
            }
        }
        for (intid, state) in self.dist.busy_spis() {
            if state.active || !state.pending() || !state.enabled {
                continue;
            }
            let irq = Irq::Spi { intid };
            let mine = match self.holder(irq) {
                Some(h) => h == vcpu,
                None => self.dist.spi_target(state) == Some(vcpu),
            };
            if let Some(inst) = self.dist.instance(irq).filter(|i| mine && signals(i)) {
                offer(inst.priority);
            }
        }
        let Some(best) = best else {
            return false;
        };
        cpu.slots().filter_map(|(_, s)| s.acked_priority).min().is_none_or(|running| best < running)
    }

    /// The candidates for `vcpu`'s list registers, best first.
    /// (Offered into the caller's `selection`: returned, the selection was
    /// copied, a `memcpy` call on every refresh.)
    fn candidates(&self, vcpu: VcpuId, cpu: &CpuInterface, live: Live, selection: &mut Selection<Candidate>) {
        let mut offer = |irq: Irq, inst: Instance, forwarded: bool, more_sources: bool| {
            if !inst.active && !forwarded {
                return;
            }
            let rank = Rank::new(inst.active, inst.priority, irq.intid(), irq.source());
            let candidate =
                Candidate { irq, pending: forwarded, more_sources, wants_eoi: inst.wants_eoi, group1: inst.group1 };
            selection.offer(rank, candidate);
        };

        // SGIs: one list register per INTID (the virtual CPU interface finds
        // entries by VirtualID), so one requester at a time: the active one,
        // else the one already in a list register, else the lowest.
        let mask = self.dist.vcpu_mask();
        // An SGI neither pending nor active is no candidate.
        for sgi in BitIter(live.sgis).map(|n| n as u8) {
            let Some(state) = self.dist.sgi(vcpu, sgi) else {
                continue;
            };
            let forwarded = if self.dist.group_enabled(state.group1) { state.pending & mask } else { 0 };
            // Cheap filter first: an SGI neither active nor forwarded from
            // any source is no candidate (the match below skips it too).
            if state.active.is_none() && forwarded == 0 {
                continue;
            }
            let held = cpu.slots().find_map(|(_, s)| match s.irq {
                Irq::Sgi { sgi: id, source, .. } if id == sgi => Some(source.0),
                _ => None,
            });
            let source = match (state.active, held) {
                (Some(a), _) => a,
                (None, Some(h)) if forwarded >> h & 1 != 0 => h,
                (None, _) if forwarded != 0 => forwarded.trailing_zeros() as u8,
                _ => continue,
            };
            let irq = Irq::Sgi { target: vcpu, sgi, source: VcpuId(source) };
            let Some(inst) = self.dist.instance(irq) else {
                continue;
            };
            let others = forwarded & !(1u8.checked_shl(u32::from(source)).unwrap_or(0));
            offer(irq, inst, forwarded >> source & 1 != 0, others != 0);
        }

        // An idle PPI is neither pending nor active.
        for intid in BitIter(live.ppis).map(|n| SGIS + n as u16) {
            let irq = Irq::Ppi { vcpu, intid };
            if let Some(inst) = self.dist.instance(irq) {
                offer(irq, inst, self.dist.forwardable(&inst), false);
            }
        }

        for (intid, state) in self.dist.busy_spis() {
            // Cheap filter first: most SPIs are idle.
            if !(state.active || state.pending() && state.enabled) {
                continue;
            }
            let irq = Irq::Spi { intid };
            let Some(inst) = self.dist.instance(irq) else {
                continue;
            };
            let targeted = self.dist.spi_target(state) == Some(vcpu);
            match self.holder(irq) {
                // Held here: it stays while active; pending alone, only while
                // it is still delivered here.
                Some(h) if h == vcpu => {
                    let forwarded = self.dist.forwardable(&inst) && (targeted || inst.active);
                    offer(irq, inst, forwarded, false);
                }
                // In another vCPU's list registers: theirs until released.
                Some(_) => {}
                None if targeted => offer(irq, inst, self.dist.forwardable(&inst), false),
                None => {}
            }
        }
    }

    /// Choose and write `vcpu`'s list registers and GICH_HCR.
    fn flush(&mut self, vcpu: VcpuId, status: &LrStatus, live: Live, reply: &mut Reply) -> Result<(), ServerError> {
        // Borrowed, not copied: a copy of the 76-byte interface was a
        // `memcpy` call on every refresh.
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return Err(ServerError::NoSuchVcpu(vcpu));
        };
        let count = usize::from(cpu.list_registers).min(MAX_LRS);
        let mut selection = Selection::new(usize::from(cpu.list_registers));
        self.candidates(vcpu, cpu, live, &mut selection);

        // Keep each chosen interrupt in the register it is in; put new ones
        // in registers that are free or hold what was not chosen. (Indices
        // into the selection, not candidates: an array of four candidates was
        // cleared and copied whole, `memset` and `memcpy` calls, on every
        // refresh.)
        let mut placed: [Option<u8>; MAX_LRS] = [None; MAX_LRS];
        let mut unplaced: Vec<u8, MAX_LRS> = Vec::new();
        for (k, (_, c)) in selection.chosen().enumerate() {
            match cpu.slots().find(|(_, s)| s.irq == c.irq) {
                Some((i, _)) => {
                    if let Some(p) = placed.get_mut(i) {
                        *p = Some(k as u8);
                    }
                }
                // Cannot fail: at most MAX_LRS chosen.
                None => {
                    let _ = unplaced.push(k as u8);
                }
            }
        }
        for k in unplaced {
            if let Some(p) = placed[..count].iter_mut().find(|p| p.is_none()) {
                *p = Some(k);
            }
        }

        let any_pending = selection.chosen().any(|(_, c)| c.pending);
        let (hcr, eoi_all) = lr::maintenance(selection.left_out() > 0, any_pending);

        let mut new_slots: [Option<Slot>; MAX_LRS] = [None; MAX_LRS];
        let mut new_seen = [0; MAX_LRS];
        let mut moved = false;
        for i in 0..count {
            let (Some(p), Some(&raw), Some(old)) = (placed.get(i), status.lrs.get(i), cpu.slots.get(i)) else {
                break;
            };
            let desired = p.and_then(|k| selection.entry(usize::from(k))).map(|&(rank, c)| Slot {
                irq: c.irq,
                // A chosen interrupt that was held stays in its register.
                acked_priority: old.filter(|s| s.irq == c.irq).and_then(|s| s.acked_priority),
                lr: list_register(&c, rank, eoi_all),
            });
            let value = desired.map_or(0, |s| s.lr.encode());
            // An invalid entry that asks for nothing is as empty as 0
            // (GICH_ELRSR counts it free): leave it.
            let already_empty = || {
                let empty = ListRegister::decode(raw);
                empty.state == LrState::Invalid && !matches!(empty.link, LrLink::Software { eoi: true, .. })
            };
            let left = if value != raw && !(desired.is_none() && already_empty()) {
                reply.push(Action::WriteListRegister { index: i as u8, value })?;
                value
            } else {
                raw
            };
            if let Some(seen) = new_seen.get_mut(i) {
                *seen = left;
            }
            // (Which SPI a slot holds is what other vCPUs' refreshes read,
            // through `holder`.)
            let (was, now) = (old.map(|s| s.irq), desired.map(|s| s.irq));
            moved |= was != now && matches!((was, now), (Some(Irq::Spi { .. }), _) | (_, Some(Irq::Spi { .. })));
            if let (Some(slot), Some(new)) = (desired, new_slots.get_mut(i)) {
                *new = Some(slot);
            }
        }

        if moved {
            self.slot_changes = self.slot_changes.wrapping_add(1);
        }
        let hcr_value = hcr.encode();
        if let Some(cpu) = self.cpus.get_mut(vcpu.index()) {
            cpu.slots = new_slots;
            cpu.seen = new_seen;
            cpu.listed_all = selection.left_out() == 0;
            if cpu.hcr != Some(hcr_value) {
                reply.push(Action::WriteGichHcr { value: hcr_value })?;
                cpu.hcr = Some(hcr_value);
            }
        }
        for slot in &new_slots[..count] {
            let Some(slot) = slot else { continue };
            self.dist.written(slot.irq, slot.lr.state.pending());
        }
        Ok(())
    }

    /// Deactivate the physical interrupts backing `vcpu`'s interrupts (its
    /// PPIs, and SPIs delivered to it) whose virtual interrupt is neither
    /// pending nor active any more: the guest finished it (seen through EOI
    /// maintenance) or it went away (cleared, disabled). A deactivation that
    /// does not fit in the reply stays owed. Returns whether none is owed.
    fn deactivate_owed(&mut self, vcpu: VcpuId, live: Live, reply: &mut Reply) -> bool {
        let Some(cpu) = self.cpus.get(vcpu.index()) else {
            return false;
        };
        let mut settled = true;
        let mut owed: Vec<(Irq, IntId), 8> = Vec::new();
        let mut note = |irq: Irq, hw: Option<IntId>| {
            if let Some(physical) = hw {
                if owed.push((irq, physical)).is_err() {
                    debug!("vcpu{}: deactivation of {physical:?} deferred", vcpu.0);
                    settled = false;
                }
            }
        };
        // An idle PPI holds no physical interrupt.
        for intid in BitIter(live.ppis).map(|n| SGIS + n as u16) {
            let irq = Irq::Ppi { vcpu, intid };
            if let Some(s) = self.dist.ppi(vcpu, intid) {
                if s.hw_owed() && !cpu.holds(irq) {
                    note(irq, s.hw);
                }
            }
        }
        for (intid, s) in self.dist.busy_spis() {
            if !s.hw_owed() {
                continue;
            }
            let irq = Irq::Spi { intid };
            let here = match self.dist.spi_target(s) {
                Some(t) => t == vcpu,
                None => true,
            };
            if here && self.holder(irq).is_none() {
                note(irq, s.hw);
            }
        }
        for (irq, physical) in owed {
            // The last place is kept for the kick that finishes the refresh
            // if this one cannot (see `end_refresh`).
            if reply.actions.len() + 1 >= ipc::MAX_ACTIONS
                || reply.push(Action::DeactivatePhysical { intid: physical }).is_err()
            {
                debug!("vcpu{}: reply full, deactivation of {physical:?} deferred", vcpu.0);
                return false;
            }
            self.dist.hw_deactivated(irq);
        }
        settled
    }
}

impl Server for VgicServer {
    const ID: ServerId = ServerId::Vgic;
    type Request = VgicRequest;

    fn handle_into(&mut self, request: &VgicRequest, reply: &mut Reply) -> Result<(), ServerError> {
        match *request {
            VgicRequest::Start { vcpu, list_registers } => self.start(vcpu, list_registers, reply),
            // By reference: by value, the access and the status were copied
            // into the frame first (10 instructions a GICD access).
            VgicRequest::Mmio { vcpu, ref access, ref status } => self.mmio(vcpu, access, status, reply),
            VgicRequest::SetLine { intid, level, target, hw, change, status } => {
                self.set_line(intid, level, target, hw, change, status, reply)
            }
            VgicRequest::Pend { intid, target, status, .. } => self.pend(intid, target, status, reply),
            VgicRequest::Sync { vcpu, ref status } => self.sync(vcpu, status, reply),
            VgicRequest::Maintenance { vcpu, ref status } => self.refresh(vcpu, status, false, reply),
            VgicRequest::Idle { vcpu, ref status } => self.refresh(vcpu, status, true, reply),
            VgicRequest::Wfi { vcpu, ref status } => {
                // Stepping past the WFI completes it (it may complete at any
                // time); a wait follows if nothing could be signalled. (A
                // vCPU the VM lacks: `refresh` refuses it, and a refused
                // request's reply means nothing.)
                reply.push(Action::AdvancePc)?;
                self.refresh(vcpu, status, true, reply)
            }
        }
    }

    fn request_of(message: &Message) -> Result<&VgicRequest, ServerError> {
        match message {
            Message::Vgic(request) => Ok(request),
            _ => Err(ServerError::WrongServer),
        }
    }
}

#[cfg(test)]
mod tests;
