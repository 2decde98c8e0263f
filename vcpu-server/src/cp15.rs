//! Trapped CP15: what the guest's accesses trap, and what a trapped access
//! does.
//!
//! Encodings are from the ARMv7-A/R Architecture Reference Manual (DDI 0406C):
//! B4.1 (ACTLR) and B4.2.1 (cache maintenance operations); ACTLR's fields
//! from the Cortex-A15 TRM (DDI 0438), chapter 4 "System Control". The timer registers (CRn = 14) are routed to
//! the vtimer server and never reach this module.

use ipc::{Action, Cp15Access, GuestReg, Reply, ServerError, TrapConfig, VcpuId, WfiPolicy, MAX_VCPUS};
use log::{debug, warn};
use serde::{Deserialize, Serialize};

/// What the vCPU server traps, sent with every `Start`:
/// - `wfi`: as the VM's [`WfiPolicy`] says (`splitvisor run --wfi`). Trapped
///   (the default), the router sends the WFI to the vGIC server (`Wfi`),
///   which, with the fresh list-register status the monitor adds, folds in
///   what the guest finished, steps past the WFI and decides whether the
///   vCPU may idle. Untrapped, the guest's WFI sleeps on its
///   own CPU until a physical interrupt (which traps) or a virtual one in
///   its list registers: no emulated interrupt is missed, since the vGIC
///   server kicks (a physical SGI) every vCPU whose list registers may have
///   to change, and keeps a vCPU whose refresh is unfinished from running
///   before it is done (it kicks it again).
/// - `wfe`: WFE traps (HCR.TWE) and is answered by stepping past it, which
///   the architecture permits (WFE may complete at any time). With 1:1
///   placement there is nothing to yield to, so this costs one exit per WFE;
///   it is taken so that no guest wait escapes the servers' view (traces,
///   replay), and can be relaxed if the cost shows.
/// - `smc`: SMC traps (HCR.TSC): the guest's SMC must reach our PSCI, never
///   the platform firmware, which would power real CPUs on and off or stop
///   the machine behind the hypervisor's back.
/// - `actlr`: ACTLR accesses trap (HCR.TAC): the register is IMPLEMENTATION
///   DEFINED and its SMP bit controls the physical CPU's coherency, which
///   the monitor owns; the guest sees a virtual copy.
/// - `set_way`: data cache maintenance by set/way traps (HCR.TSW): it acts
///   only on the local CPU's caches and cannot be made to cover the guest's
///   memory alone, so it is turned into whole-cache clean and invalidate.
/// - `phys_timer`: the guest's physical timer traps (CNTHCTL.PL1PCEN
///   cleared): the vtimer server emulates it on the Hyp timer.
/// - `phys_counter`: CNTPCT reads do not trap (CNTHCTL.PL1PCTEN set): the
///   vtimer server would return the same physical count, so a trap would only
///   slow every read of it (Linux reads the virtual counter anyway).
pub fn trap_policy(wfi: WfiPolicy) -> TrapConfig {
    TrapConfig {
        wfi: wfi == WfiPolicy::Trap,
        wfe: true,
        smc: true,
        actlr: true,
        set_way: true,
        phys_timer: true,
        phys_counter: false,
    }
}

/// ACTLR fields (Cortex-A15 TRM, Auxiliary Control Register).
pub mod actlr {
    /// SMP: the core takes part in coherency. Linux sets it early in boot
    /// (`__v7_ca15mp_setup`) when it is clear.
    pub const SMP: u32 = 1 << 6;
    /// The Cortex-A15 reset value.
    pub const RESET: u32 = 0;
    /// The bits a guest may change in its virtual copy.
    pub const GUEST_WRITABLE: u32 = SMP;
}

/// (opc1, CRn, CRm, opc2) of the CP15 registers this module handles.
pub mod enc {
    /// ACTLR: p15, 0, c1, c0, 1.
    pub const ACTLR: (u8, u8, u8, u8) = (0, 1, 0, 1);
    /// DCISW: invalidate data cache line by set/way, p15, 0, c7, c6, 2.
    pub const DCISW: (u8, u8, u8, u8) = (0, 7, 6, 2);
    /// DCCSW: clean data cache line by set/way, p15, 0, c7, c10, 2.
    pub const DCCSW: (u8, u8, u8, u8) = (0, 7, 10, 2);
    /// DCCISW: clean and invalidate data cache line by set/way, p15, 0, c7, c14, 2.
    pub const DCCISW: (u8, u8, u8, u8) = (0, 7, 14, 2);
}

/// A trapped CP15 register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cp15Reg {
    /// Auxiliary Control Register.
    Actlr,
    /// Data cache invalidate by set/way.
    Dcisw,
    /// Data cache clean by set/way.
    Dccsw,
    /// Data cache clean and invalidate by set/way.
    Dccisw,
    /// Anything else.
    Unknown {
        /// opc1.
        opc1: u8,
        /// CRn.
        crn: u8,
        /// CRm.
        crm: u8,
        /// opc2.
        opc2: u8,
    },
}

impl Cp15Reg {
    /// Decode the register an MCR/MRC names.
    pub fn decode(access: &Cp15Access) -> Self {
        match (access.opc1, access.crn, access.crm, access.opc2) {
            enc::ACTLR => Cp15Reg::Actlr,
            enc::DCISW => Cp15Reg::Dcisw,
            enc::DCCSW => Cp15Reg::Dccsw,
            enc::DCCISW => Cp15Reg::Dccisw,
            (opc1, crn, crm, opc2) => Cp15Reg::Unknown { opc1, crn, crm, opc2 },
        }
    }
}

/// The highest register an MRC/MCR may name for these registers: R15 is
/// UNPREDICTABLE (DDI 0406C A8.8.98 MCR, A8.8.108 MRC; the APSR_nzcv form is
/// only for debug registers), answered with UNDEFINED.
const MAX_GPR: u8 = 14;

/// The virtual CP15 state of every vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cp15 {
    /// Each vCPU's ACTLR as the guest sees it.
    actlr: [u32; MAX_VCPUS],
    /// The ACTLR a vCPU comes out of reset with.
    actlr_reset: u32,
}

impl Cp15 {
    /// The CP15 state of a VM with `vcpus` vCPUs. As KVM does, ACTLR.SMP
    /// reads as set from reset on a VM with more than one vCPU, so that an
    /// SMP guest finds coherency on and need not write it.
    pub fn new(vcpus: u8) -> Self {
        let actlr_reset = if vcpus > 1 { actlr::RESET | actlr::SMP } else { actlr::RESET };
        Cp15 { actlr: [actlr_reset; MAX_VCPUS], actlr_reset }
    }

    /// `vcpu` comes out of reset (its first run after power-on).
    pub fn reset(&mut self, vcpu: VcpuId) {
        if let Some(a) = self.actlr.get_mut(vcpu.index()) {
            *a = self.actlr_reset;
        }
    }

    /// The guest's view of `vcpu`'s ACTLR.
    pub fn actlr(&self, vcpu: VcpuId) -> Option<u32> {
        self.actlr.get(vcpu.index()).copied()
    }

    /// Answer a trapped MCR/MRC of `vcpu`, into `reply`.
    pub fn access(&mut self, vcpu: VcpuId, access: &Cp15Access, reply: &mut Reply) -> Result<(), ServerError> {
        let reg = Cp15Reg::decode(access);
        if access.rt > MAX_GPR {
            warn!("vcpu{}: CP15 {reg:?} with r15 is UNPREDICTABLE; injecting undef", vcpu.0);
            return Ok(reply.push(Action::InjectUndef)?);
        }
        let actions = match (reg, access.write) {
            (Cp15Reg::Actlr, false) => {
                let value = self.actlr(vcpu).ok_or(ServerError::NoSuchVcpu(vcpu))?;
                [Action::SetReg { reg: GuestReg::Gpr(access.rt), value }, Action::AdvancePc]
            }
            (Cp15Reg::Actlr, true) => {
                let slot = self.actlr.get_mut(vcpu.index()).ok_or(ServerError::NoSuchVcpu(vcpu))?;
                let kept = (*slot & !actlr::GUEST_WRITABLE) | (access.value & actlr::GUEST_WRITABLE);
                if (access.value ^ kept) & !actlr::GUEST_WRITABLE != 0 {
                    debug!("vcpu{}: ACTLR write {:#x}: only SMP is writable", vcpu.0, access.value);
                }
                *slot = kept;
                return Ok(reply.push(Action::AdvancePc)?);
            }
            // Set/way operations act on one cache level of this CPU only; the
            // guest cannot be given that safely, so each becomes a clean and
            // invalidate of the whole hierarchy. DCISW is upgraded to clean
            // as well: invalidating without cleaning would throw away dirty
            // lines that are not the guest's (the hypervisor's own data
            // shares the cache), and cleaning a guest line early is harmless.
            (Cp15Reg::Dcisw | Cp15Reg::Dccsw | Cp15Reg::Dccisw, true) => {
                [Action::CleanInvalidateDcache, Action::AdvancePc]
            }
            (Cp15Reg::Dcisw | Cp15Reg::Dccsw | Cp15Reg::Dccisw, false) | (Cp15Reg::Unknown { .. }, _) => {
                warn!(
                    "vcpu{}: {} of CP15 {reg:?} not permitted; injecting undef",
                    vcpu.0,
                    if access.write { "MCR" } else { "MRC" }
                );
                return Ok(reply.push(Action::InjectUndef)?);
            }
        };
        Ok(reply.extend(actions)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mcr(opc1: u8, crn: u8, crm: u8, opc2: u8, rt: u8, value: u32) -> Cp15Access {
        Cp15Access { opc1, crn, crm, opc2, write: true, rt, value }
    }

    fn mrc(opc1: u8, crn: u8, crm: u8, opc2: u8, rt: u8) -> Cp15Access {
        Cp15Access { opc1, crn, crm, opc2, write: false, rt, value: 0 }
    }

    fn access(c: &mut Cp15, vcpu: VcpuId, a: &Cp15Access) -> Result<Reply, ServerError> {
        let mut reply = Reply::none();
        c.access(vcpu, a, &mut reply).map(|()| reply)
    }

    const V0: VcpuId = VcpuId(0);
    const V1: VcpuId = VcpuId(1);

    #[test]
    fn decode() {
        assert_eq!(Cp15Reg::decode(&mrc(0, 1, 0, 1, 0)), Cp15Reg::Actlr);
        assert_eq!(Cp15Reg::decode(&mcr(0, 7, 6, 2, 0, 0)), Cp15Reg::Dcisw);
        assert_eq!(Cp15Reg::decode(&mcr(0, 7, 10, 2, 0, 0)), Cp15Reg::Dccsw);
        assert_eq!(Cp15Reg::decode(&mcr(0, 7, 14, 2, 0, 0)), Cp15Reg::Dccisw);
        assert_eq!(Cp15Reg::decode(&mrc(0, 1, 0, 0, 0)), Cp15Reg::Unknown { opc1: 0, crn: 1, crm: 0, opc2: 0 });
    }

    #[test]
    fn actlr_reads_virtual_smp_value() {
        let mut c = Cp15::new(2);
        let r = access(&mut c, V1, &mrc(0, 1, 0, 1, 5)).expect("reply");
        assert_eq!(
            r.actions.to_vec().as_slice(),
            [Action::SetReg { reg: GuestReg::Gpr(5), value: actlr::SMP }, Action::AdvancePc]
        );
        let mut c = Cp15::new(1);
        let r = access(&mut c, V0, &mrc(0, 1, 0, 1, 5)).expect("reply");
        assert_eq!(r.actions.to_vec()[0], Action::SetReg { reg: GuestReg::Gpr(5), value: 0 });
    }

    #[test]
    fn actlr_write_keeps_only_smp_per_vcpu() {
        let mut c = Cp15::new(1);
        // Linux's __v7_ca15mp_setup: read, set SMP, write back.
        let r = access(&mut c, V0, &mcr(0, 1, 0, 1, 0, 0xFFFF_FFFF)).expect("reply");
        assert_eq!(r.actions.to_vec().as_slice(), [Action::AdvancePc]);
        assert_eq!(c.actlr(V0), Some(actlr::SMP));
        access(&mut c, V0, &mcr(0, 1, 0, 1, 0, 0x1)).expect("reply");
        assert_eq!(c.actlr(V0), Some(0));
        // Per vCPU, and reset restores the reset value.
        let mut c = Cp15::new(2);
        access(&mut c, V1, &mcr(0, 1, 0, 1, 0, 0)).expect("reply");
        assert_eq!(c.actlr(V1), Some(0));
        assert_eq!(c.actlr(V0), Some(actlr::SMP));
        c.reset(V1);
        assert_eq!(c.actlr(V1), Some(actlr::SMP));
    }

    #[test]
    fn set_way_becomes_whole_cache_maintenance() {
        let mut c = Cp15::new(1);
        for crm in [6, 10, 14] {
            let r = access(&mut c, V0, &mcr(0, 7, crm, 2, 1, 0x8000_0002)).expect("reply");
            assert_eq!(
                r.actions.to_vec().as_slice(),
                [Action::CleanInvalidateDcache, Action::AdvancePc],
                "c7, c{crm}, 2"
            );
            // MRC of a write-only operation is undefined.
            let r = access(&mut c, V0, &mrc(0, 7, crm, 2, 1)).expect("reply");
            assert_eq!(r.actions.to_vec().as_slice(), [Action::InjectUndef]);
        }
    }

    #[test]
    fn anything_else_is_undefined() {
        let mut c = Cp15::new(1);
        for a in [
            mrc(0, 1, 0, 0, 0),
            mcr(0, 1, 0, 0, 0, 0),
            mcr(0, 7, 5, 0, 0, 0),
            mrc(1, 0, 0, 0, 0),
            mcr(0, 9, 12, 0, 0, 0),
        ] {
            let before = c.clone();
            let r = access(&mut c, V0, &a).expect("reply");
            assert_eq!(r.actions.to_vec().as_slice(), [Action::InjectUndef], "{a:?}");
            assert_eq!(c, before);
        }
        // r15 with ACTLR: UNPREDICTABLE, answered undefined.
        let r = access(&mut c, V0, &mrc(0, 1, 0, 1, 15)).expect("reply");
        assert_eq!(r.actions.to_vec().as_slice(), [Action::InjectUndef]);
    }

    #[test]
    fn missing_vcpu_is_an_error_not_a_panic() {
        let mut c = Cp15::new(1);
        assert_eq!(access(&mut c, VcpuId(200), &mrc(0, 1, 0, 1, 0)), Err(ServerError::NoSuchVcpu(VcpuId(200))));
        c.reset(VcpuId(200));
    }
}
