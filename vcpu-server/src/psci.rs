//! PSCI 1.0 and the SMCCC 1.1 architecture calls, over HVC and SMC.
//!
//! References: *Arm Power State Coordination Interface* (DEN 0022D),
//! chapter 5 "PSCI Functions" (each function's description and the table
//! of return codes), and *SMC Calling Convention* (DEN 0028): the function
//! identifier layout, "SMC and HVC immediate value", and the Arm
//! Architecture Calls (SMCCC_VERSION, SMCCC_ARCH_FEATURES).
//!
//! The implementation is 32-bit only (an ARMv7 guest cannot use the SMC64
//! convention at all): an SMC64 function ID is answered NOT_SUPPORTED, both
//! as a call and as a PSCI_FEATURES query, as KVM does for a 32-bit guest.
//!
//! Topology: a single cluster; vCPU *n* has MPIDR affinity 0 = *n* and
//! affinity 1 and 2 = 0. No Trusted OS exists (MIGRATE_INFO_TYPE = 2), so
//! CPU_OFF is never DENIED, even for the last vCPU on.

use ipc::msg::{LrStatus, VgicRequest};
use ipc::{Action, GuestReg, MemWindow, Message, Reply, ServerError, ShutdownReason, VcpuId, MAX_VCPUS};
use log::{debug, warn};
use serde::{Deserialize, Serialize};

/// Function IDs (SMC32 convention unless named otherwise).
pub mod fid {
    /// SMCCC_VERSION (an Arm Architecture Call).
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES (an Arm Architecture Call).
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND.
    pub const CPU_SUSPEND: u32 = 0x8400_0001;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON.
    pub const CPU_ON: u32 = 0x8400_0003;
    /// AFFINITY_INFO.
    pub const AFFINITY_INFO: u32 = 0x8400_0004;
    /// MIGRATE.
    pub const MIGRATE: u32 = 0x8400_0005;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// MIGRATE_INFO_UP_CPU.
    pub const MIGRATE_INFO_UP_CPU: u32 = 0x8400_0007;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES (PSCI 1.0).
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
    /// CPU_FREEZE (PSCI 1.0, optional).
    pub const CPU_FREEZE: u32 = 0x8400_000B;
    /// CPU_DEFAULT_SUSPEND (PSCI 1.0, optional).
    pub const CPU_DEFAULT_SUSPEND: u32 = 0x8400_000C;
    /// NODE_HW_STATE (PSCI 1.0, optional).
    pub const NODE_HW_STATE: u32 = 0x8400_000D;
    /// SYSTEM_SUSPEND (PSCI 1.0, optional).
    pub const SYSTEM_SUSPEND: u32 = 0x8400_000E;
    /// PSCI_SET_SUSPEND_MODE (PSCI 1.0, optional).
    pub const PSCI_SET_SUSPEND_MODE: u32 = 0x8400_000F;
    /// PSCI_STAT_RESIDENCY (PSCI 1.0, optional).
    pub const PSCI_STAT_RESIDENCY: u32 = 0x8400_0010;
    /// PSCI_STAT_COUNT (PSCI 1.0, optional).
    pub const PSCI_STAT_COUNT: u32 = 0x8400_0011;
    /// Bit 31 of a function ID: a fast call.
    pub const FAST_CALL: u32 = 1 << 31;
    /// Bit 30 of a function ID: the SMC64/HVC64 convention. The PSCI functions
    /// that take 64-bit arguments have an SMC64 ID of `0xC400_00xx`.
    pub const SMC64: u32 = 1 << 30;
}

/// PSCI return codes, as written to r0 (two's complement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum PsciError {
    /// NOT_SUPPORTED (also SMCCC's "unknown function identifier").
    NotSupported = -1,
    /// INVALID_PARAMETERS.
    InvalidParameters = -2,
    /// DENIED.
    Denied = -3,
    /// ALREADY_ON.
    AlreadyOn = -4,
    /// ON_PENDING.
    OnPending = -5,
    /// INTERNAL_FAILURE.
    InternalFailure = -6,
    /// NOT_PRESENT.
    NotPresent = -7,
    /// DISABLED.
    Disabled = -8,
    /// INVALID_ADDRESS.
    InvalidAddress = -9,
}

impl PsciError {
    /// The value of r0.
    pub fn reg(self) -> u32 {
        self as i32 as u32
    }
}

/// SUCCESS.
pub const SUCCESS: u32 = 0;
/// PSCI_VERSION's answer: major 1 in bits `[31:16]`, minor 0 in `[15:0]`.
pub const PSCI_VERSION_1_0: u32 = 0x0001_0000;
/// SMCCC_VERSION's answer: 1.1.
pub const SMCCC_VERSION_1_1: u32 = 0x0001_0001;
/// MIGRATE_INFO_TYPE's answer: no Trusted OS, or one that needs no migration.
pub const MIGRATE_INFO_TYPE_NOT_REQUIRED: u32 = 2;
/// PSCI_FEATURES(CPU_SUSPEND) flags: bit 1 clear = the
/// original power_state format, bit 0 clear = platform-coordinated mode only.
pub const CPU_SUSPEND_FEATURES: u32 = 0;
/// PSCI_FEATURES answer for an implemented function without flags.
pub const FEATURE_PRESENT: u32 = 0;

/// The power_state bits that must be zero in the original format (CPU_SUSPEND:
/// StateID `[15:0]`, StateType `[16]` and PowerLevel `[25:24]` are defined, the
/// rest reserved).
pub const POWER_STATE_RESERVED: u32 = 0xFCFE_0000;

/// MPIDR affinity 0 (the vCPU number here), bits `[7:0]`.
pub const MPIDR_AFF0: u32 = 0xFF;
/// The affinity fields a PSCI target may carry on AArch32 (bits `[23:0]`);
/// bits `[31:24]` must be zero.
pub const MPIDR_AFFINITY: u32 = 0x00FF_FFFF;

/// A function the guest called, decoded from r0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES.
    SmcccArchFeatures,
    /// PSCI_VERSION.
    PsciVersion,
    /// CPU_SUSPEND.
    CpuSuspend,
    /// CPU_OFF.
    CpuOff,
    /// CPU_ON.
    CpuOn,
    /// AFFINITY_INFO.
    AffinityInfo,
    /// MIGRATE.
    Migrate,
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// MIGRATE_INFO_UP_CPU.
    MigrateInfoUpCpu,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// PSCI_FEATURES.
    PsciFeatures,
    /// One of PSCI 1.0's optional functions (CPU_FREEZE, CPU_DEFAULT_SUSPEND,
    /// NODE_HW_STATE, SYSTEM_SUSPEND, PSCI_SET_SUSPEND_MODE,
    /// PSCI_STAT_RESIDENCY, PSCI_STAT_COUNT), none of which is implemented.
    Optional(u32),
    /// A fast call in the SMC64 convention, which a 32-bit caller cannot make.
    Smc64(u32),
    /// Any other function ID.
    Unknown(u32),
}

impl Function {
    /// Decode r0.
    pub fn decode(raw: u32) -> Self {
        match raw {
            fid::SMCCC_VERSION => Function::SmcccVersion,
            fid::SMCCC_ARCH_FEATURES => Function::SmcccArchFeatures,
            fid::PSCI_VERSION => Function::PsciVersion,
            fid::CPU_SUSPEND => Function::CpuSuspend,
            fid::CPU_OFF => Function::CpuOff,
            fid::CPU_ON => Function::CpuOn,
            fid::AFFINITY_INFO => Function::AffinityInfo,
            fid::MIGRATE => Function::Migrate,
            fid::MIGRATE_INFO_TYPE => Function::MigrateInfoType,
            fid::MIGRATE_INFO_UP_CPU => Function::MigrateInfoUpCpu,
            fid::SYSTEM_OFF => Function::SystemOff,
            fid::SYSTEM_RESET => Function::SystemReset,
            fid::PSCI_FEATURES => Function::PsciFeatures,
            fid::CPU_FREEZE..=fid::PSCI_STAT_COUNT => Function::Optional(raw),
            r if r & (fid::FAST_CALL | fid::SMC64) == fid::FAST_CALL | fid::SMC64 => Function::Smc64(r),
            r => Function::Unknown(r),
        }
    }

    /// PSCI_FEATURES' answer for this function: only PSCI
    /// functions and SMCCC_VERSION can be queried.
    pub fn psci_features(self) -> Result<u32, PsciError> {
        match self {
            Function::CpuSuspend => Ok(CPU_SUSPEND_FEATURES),
            Function::PsciVersion
            | Function::CpuOff
            | Function::CpuOn
            | Function::AffinityInfo
            | Function::MigrateInfoType
            | Function::SystemOff
            | Function::SystemReset
            | Function::PsciFeatures
            | Function::SmcccVersion => Ok(FEATURE_PRESENT),
            Function::SmcccArchFeatures
            | Function::Migrate
            | Function::MigrateInfoUpCpu
            | Function::Optional(_)
            | Function::Smc64(_)
            | Function::Unknown(_) => Err(PsciError::NotSupported),
        }
    }

    /// SMCCC_ARCH_FEATURES' answer: the Arm architecture calls
    /// implemented are SMCCC_VERSION and SMCCC_ARCH_FEATURES; no workaround
    /// call (SMCCC_ARCH_WORKAROUND_*) is offered.
    pub fn arch_features(self) -> Result<u32, PsciError> {
        match self {
            Function::SmcccVersion | Function::SmcccArchFeatures => Ok(FEATURE_PRESENT),
            _ => Err(PsciError::NotSupported),
        }
    }
}

/// A vCPU's power state, as AFFINITY_INFO reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    /// Running (or suspended, which counts as on).
    On,
    /// Off: only CPU_ON starts it.
    Off,
    /// Started by CPU_ON (or at boot), not yet running.
    OnPending,
}

impl PowerState {
    /// AFFINITY_INFO's value for the state.
    pub fn affinity_info(self) -> u32 {
        match self {
            PowerState::On => 0,
            PowerState::Off => 1,
            PowerState::OnPending => 2,
        }
    }
}

/// The power state of every vCPU and what PSCI needs to know about the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Psci {
    /// vCPUs in the VM (at most [`MAX_VCPUS`]).
    vcpus: u8,
    /// Guest RAM, where a CPU_ON entry point must lie.
    ram: MemWindow,
    /// Each vCPU's power state.
    power: [PowerState; MAX_VCPUS],
}

/// r0 = `value`, then return past the call.
fn ret(reply: &mut Reply, value: u32) -> Result<(), ServerError> {
    // Two pushes rather than `extend` of an array: each action of the array
    // was built whole (64 bytes) and moved out of it.
    reply.push(Action::SetReg { reg: GuestReg::Gpr(0), value })?;
    Ok(reply.push(Action::AdvancePc)?)
}

fn ret_err(reply: &mut Reply, e: PsciError) -> Result<(), ServerError> {
    ret(reply, e.reg())
}

fn ret_result(reply: &mut Reply, r: Result<u32, PsciError>) -> Result<(), ServerError> {
    ret(reply, r.unwrap_or_else(PsciError::reg))
}

impl Psci {
    /// The power states at boot: vCPU 0 is being started by the monitor,
    /// every other vCPU is off.
    pub fn new(vcpus: u8, ram: MemWindow) -> Self {
        let mut power = [PowerState::Off; MAX_VCPUS];
        power[0] = PowerState::OnPending;
        Psci { vcpus: vcpus.min(MAX_VCPUS as u8), ram, power }
    }

    /// `vcpu`'s power state, if the VM has it.
    pub fn power(&self, vcpu: VcpuId) -> Option<PowerState> {
        (vcpu.0 < self.vcpus).then(|| self.power.get(vcpu.index()).copied()).flatten()
    }

    fn power_mut(&mut self, vcpu: VcpuId) -> Option<&mut PowerState> {
        if vcpu.0 < self.vcpus {
            self.power.get_mut(vcpu.index())
        } else {
            None
        }
    }

    /// The monitor is about to run `vcpu` for the first time since it was
    /// powered on: it is on.
    pub fn started(&mut self, vcpu: VcpuId) -> Result<(), ServerError> {
        let state = self.power_mut(vcpu).ok_or(ServerError::NoSuchVcpu(vcpu))?;
        if *state != PowerState::OnPending {
            warn!("vcpu{}: started while {:?} (no CPU_ON pending)", vcpu.0, state);
        }
        *state = PowerState::On;
        Ok(())
    }

    /// The vCPU a PSCI target affinity names, if it exists.
    fn target(&self, mpidr: u32) -> Option<VcpuId> {
        if mpidr & !MPIDR_AFF0 != 0 {
            return None;
        }
        let vcpu = VcpuId((mpidr & MPIDR_AFF0) as u8);
        self.power(vcpu).map(|_| vcpu)
    }

    /// Whether `entry` (bit 0 set: a Thumb entry point) can start a vCPU:
    /// an aligned instruction inside guest RAM.
    fn entry_valid(&self, entry: u32) -> bool {
        let thumb = entry & 1 != 0;
        let (addr, len) = if thumb { (entry & !1, 2) } else { (entry, 4) };
        (thumb || entry & 3 == 0) && self.ram.contains_ipa(u64::from(addr), len)
    }

    /// A PSCI or SMCCC call from `caller` with r0-r3 = `args`; its answer
    /// goes into `reply`.
    pub fn call(&mut self, caller: VcpuId, args: [u32; 4], reply: &mut Reply) -> Result<(), ServerError> {
        let [r0, r1, r2, r3] = args;
        let function = Function::decode(r0);
        debug!("vcpu{}: {function:?} ({r1:#x}, {r2:#x}, {r3:#x})", caller.0);
        match function {
            Function::SmcccVersion => ret(reply, SMCCC_VERSION_1_1),
            Function::SmcccArchFeatures => ret_result(reply, Function::decode(r1).arch_features()),
            Function::PsciVersion => ret(reply, PSCI_VERSION_1_0),
            Function::PsciFeatures => ret_result(reply, Function::decode(r1).psci_features()),
            Function::CpuSuspend => self.cpu_suspend(caller, r1, reply),
            Function::CpuOff => self.cpu_off(caller, reply),
            Function::CpuOn => self.cpu_on(caller, [r1, r2, r3], reply),
            Function::AffinityInfo => ret_result(reply, self.affinity_info(r1, r2)),
            Function::MigrateInfoType => ret(reply, MIGRATE_INFO_TYPE_NOT_REQUIRED),
            Function::SystemOff => Self::system(ShutdownReason::PowerOff, reply),
            Function::SystemReset => Self::system(ShutdownReason::Reset, reply),
            // MIGRATE and MIGRATE_INFO_UP_CPU are optional when
            // MIGRATE_INFO_TYPE is 2.
            Function::Migrate
            | Function::MigrateInfoUpCpu
            | Function::Optional(_)
            | Function::Smc64(_)
            | Function::Unknown(_) => ret_err(reply, PsciError::NotSupported),
        }
    }

    /// CPU_SUSPEND, treated as a standby whatever state is asked for: the
    /// vCPU waits for an interrupt as with WFI and returns SUCCESS, which the
    /// specification allows for a power-down request too (a shallower state
    /// may always be entered; the caller then resumes after the call with its
    /// context intact; KVM does the same).
    fn cpu_suspend(&self, caller: VcpuId, power_state: u32, reply: &mut Reply) -> Result<(), ServerError> {
        if power_state & POWER_STATE_RESERVED != 0 {
            debug!("vcpu{}: CPU_SUSPEND power_state {power_state:#x} has reserved bits set", caller.0);
            return ret_err(reply, PsciError::InvalidParameters);
        }
        ret(reply, SUCCESS)?;
        Ok(reply.push(idle(caller))?)
    }

    /// CPU_OFF: never DENIED here (no Trusted OS needs migrating); on
    /// success the call does not return.
    fn cpu_off(&mut self, caller: VcpuId, reply: &mut Reply) -> Result<(), ServerError> {
        let state = self.power_mut(caller).ok_or(ServerError::NoSuchVcpu(caller))?;
        *state = PowerState::Off;
        if self.power.iter().take(usize::from(self.vcpus)).all(|s| *s == PowerState::Off) {
            warn!("vcpu{}: CPU_OFF of the last vCPU on; the VM can no longer run", caller.0);
        }
        Ok(reply.push(Action::PowerOff)?)
    }

    /// CPU_ON: target affinity, entry point, context ID.
    fn cpu_on(
        &mut self,
        caller: VcpuId,
        [target, entry, context_id]: [u32; 3],
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        let Some(vcpu) = self.target(target) else {
            warn!("vcpu{}: CPU_ON of missing CPU {target:#x}", caller.0);
            return ret_err(reply, PsciError::InvalidParameters);
        };
        // The caller is running whatever the record says.
        let state = if vcpu == caller { PowerState::On } else { self.power(vcpu).unwrap_or(PowerState::Off) };
        match state {
            PowerState::On => {
                debug!("vcpu{}: CPU_ON of vcpu{}, already on", caller.0, vcpu.0);
                return ret_err(reply, PsciError::AlreadyOn);
            }
            PowerState::OnPending => return ret_err(reply, PsciError::OnPending),
            PowerState::Off => {}
        }
        if !self.entry_valid(entry) {
            warn!("vcpu{}: CPU_ON of vcpu{} at {entry:#x}, outside guest RAM", caller.0, vcpu.0);
            return ret_err(reply, PsciError::InvalidAddress);
        }
        if let Some(s) = self.power_mut(vcpu) {
            *s = PowerState::OnPending;
        }
        ret(reply, SUCCESS)?;
        // The monitor starts the vCPU as the PSCI specification has it (SVC
        // mode, MMU and caches off, IRQ/FIQ masked, r0 = context ID, Thumb
        // when bit 0 of the entry is set) and reports its `Start`.
        Ok(reply.push(Action::PowerOn { vcpu, entry, context_id })?)
    }

    /// AFFINITY_INFO. Only affinity level 0 is supported (the
    /// specification makes higher levels optional from PSCI 1.0 on; Trusted
    /// Firmware answers them INVALID_PARAMETERS likewise).
    fn affinity_info(&self, target: u32, lowest_level: u32) -> Result<u32, PsciError> {
        if lowest_level != 0 {
            return Err(PsciError::InvalidParameters);
        }
        let vcpu = self.target(target).ok_or(PsciError::InvalidParameters)?;
        self.power(vcpu).map(PowerState::affinity_info).ok_or(PsciError::InvalidParameters)
    }

    /// SYSTEM_OFF / SYSTEM_RESET: the VM stops. Should the vCPU ever run on,
    /// it sees INTERNAL_FAILURE, as on KVM.
    fn system(reason: ShutdownReason, reply: &mut Reply) -> Result<(), ServerError> {
        ret(reply, PsciError::InternalFailure.reg())?;
        Ok(reply.push(Action::Shutdown(reason))?)
    }
}

/// Ask the vGIC server whether `vcpu` may idle. The status here is a
/// placeholder: only the monitor can read the list registers, and its router
/// replaces the status of every `Idle` with the real one of that vCPU's CPU
/// interface before delivering it.
pub fn idle(vcpu: VcpuId) -> Action {
    Action::Send(Message::Vgic(VgicRequest::Idle { vcpu, status: LrStatus::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: MemWindow = MemWindow { ipa: 0x4000_0000, pa: 0x4000_0000, size: 128 << 20 };
    const V0: VcpuId = VcpuId(0);
    const V1: VcpuId = VcpuId(1);
    const V2: VcpuId = VcpuId(2);

    fn booted(vcpus: u8) -> Psci {
        let mut p = Psci::new(vcpus, RAM);
        p.started(V0).expect("vcpu 0");
        p
    }

    fn r0(reply: &Reply) -> u32 {
        match reply.actions.first() {
            Some(Action::SetReg { reg: GuestReg::Gpr(0), value }) => value,
            other => panic!("expected r0 first, got {other:?}"),
        }
    }

    fn call(p: &mut Psci, caller: VcpuId, args: [u32; 4]) -> Reply {
        let mut reply = Reply::none();
        p.call(caller, args, &mut reply).expect("reply");
        reply
    }

    fn simple(p: &mut Psci, args: [u32; 4]) -> u32 {
        let reply = call(p, V0, args);
        assert_eq!(reply.actions.len(), 2, "{reply:?}");
        assert_eq!(reply.actions.to_vec()[1], Action::AdvancePc);
        r0(&reply)
    }

    const NOT_SUPPORTED: u32 = 0xFFFF_FFFF;
    const INVALID_PARAMETERS: u32 = 0xFFFF_FFFE;

    #[test]
    fn return_codes_are_twos_complement() {
        assert_eq!(PsciError::NotSupported.reg(), NOT_SUPPORTED);
        assert_eq!(PsciError::InvalidParameters.reg(), INVALID_PARAMETERS);
        assert_eq!(PsciError::Denied.reg(), 0xFFFF_FFFD);
        assert_eq!(PsciError::AlreadyOn.reg(), 0xFFFF_FFFC);
        assert_eq!(PsciError::OnPending.reg(), 0xFFFF_FFFB);
        assert_eq!(PsciError::InternalFailure.reg(), 0xFFFF_FFFA);
        assert_eq!(PsciError::NotPresent.reg(), 0xFFFF_FFF9);
        assert_eq!(PsciError::Disabled.reg(), 0xFFFF_FFF8);
        assert_eq!(PsciError::InvalidAddress.reg(), 0xFFFF_FFF7);
    }

    #[test]
    fn versions() {
        let mut p = booted(1);
        assert_eq!(simple(&mut p, [fid::PSCI_VERSION, 0, 0, 0]), 0x0001_0000);
        assert_eq!(simple(&mut p, [fid::SMCCC_VERSION, 0, 0, 0]), 0x0001_0001);
        assert_eq!(simple(&mut p, [fid::MIGRATE_INFO_TYPE, 0, 0, 0]), 2);
    }

    #[test]
    fn features() {
        let mut p = booted(1);
        let q = |p: &mut Psci, f: u32| simple(p, [fid::PSCI_FEATURES, f, 0, 0]);
        for f in [
            fid::PSCI_VERSION,
            fid::CPU_OFF,
            fid::CPU_ON,
            fid::AFFINITY_INFO,
            fid::MIGRATE_INFO_TYPE,
            fid::SYSTEM_OFF,
            fid::SYSTEM_RESET,
            fid::PSCI_FEATURES,
            fid::SMCCC_VERSION,
        ] {
            assert_eq!(q(&mut p, f), 0, "{f:#x}");
        }
        assert_eq!(q(&mut p, fid::CPU_SUSPEND), CPU_SUSPEND_FEATURES);
        for f in [
            fid::MIGRATE,
            fid::MIGRATE_INFO_UP_CPU,
            fid::CPU_FREEZE,
            fid::SYSTEM_SUSPEND,
            fid::PSCI_STAT_COUNT,
            0xC400_0003, // CPU_ON, SMC64
            0xC400_0001, // CPU_SUSPEND, SMC64
            fid::SMCCC_ARCH_FEATURES,
            0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
            0x1234_5678,
        ] {
            assert_eq!(q(&mut p, f), NOT_SUPPORTED, "{f:#x}");
        }
        let a = |p: &mut Psci, f: u32| simple(p, [fid::SMCCC_ARCH_FEATURES, f, 0, 0]);
        assert_eq!(a(&mut p, fid::SMCCC_VERSION), 0);
        assert_eq!(a(&mut p, fid::SMCCC_ARCH_FEATURES), 0);
        assert_eq!(a(&mut p, 0x8000_8000), NOT_SUPPORTED);
        assert_eq!(a(&mut p, fid::PSCI_VERSION), NOT_SUPPORTED);
    }

    #[test]
    fn unsupported_and_smc64_functions() {
        let mut p = booted(2);
        for f in [
            fid::MIGRATE,
            fid::MIGRATE_INFO_UP_CPU,
            fid::CPU_FREEZE,
            fid::CPU_DEFAULT_SUSPEND,
            fid::NODE_HW_STATE,
            fid::SYSTEM_SUSPEND,
            fid::PSCI_SET_SUSPEND_MODE,
            fid::PSCI_STAT_RESIDENCY,
            fid::PSCI_STAT_COUNT,
            0xC400_0001,
            0xC400_0003,
            0xC400_0004,
            0x8400_0012, // SYSTEM_RESET2 is PSCI 1.1
            0x0000_0000,
            0xDEAD_BEEF,
        ] {
            let before = p.clone();
            assert_eq!(simple(&mut p, [f, 1, 0x4000_0000, 0]), NOT_SUPPORTED, "{f:#x}");
            assert_eq!(p, before, "{f:#x} changed state");
        }
        assert_eq!(Function::decode(0xC400_0003), Function::Smc64(0xC400_0003));
        assert_eq!(Function::decode(0x8400_000B), Function::Optional(0x8400_000B));
    }

    #[test]
    fn cpu_on_life_cycle() {
        let mut p = booted(3);
        let info = |p: &mut Psci, t: u32| simple(p, [fid::AFFINITY_INFO, t, 0, 0]);
        assert_eq!(info(&mut p, 0), 0);
        assert_eq!(info(&mut p, 1), 1);
        let reply = call(&mut p, V0, [fid::CPU_ON, 1, 0x4000_8000, 0xC0FFEE]);
        assert_eq!(
            reply.actions.to_vec().as_slice(),
            [
                Action::SetReg { reg: GuestReg::Gpr(0), value: SUCCESS },
                Action::AdvancePc,
                Action::PowerOn { vcpu: V1, entry: 0x4000_8000, context_id: 0xC0FFEE },
            ]
        );
        assert_eq!(info(&mut p, 1), 2, "ON_PENDING until Start");
        assert_eq!(simple(&mut p, [fid::CPU_ON, 1, 0x4000_8000, 0]), PsciError::OnPending.reg());
        p.started(V1).expect("start");
        assert_eq!(info(&mut p, 1), 0);
        assert_eq!(simple(&mut p, [fid::CPU_ON, 1, 0x4000_8000, 0]), PsciError::AlreadyOn.reg());
        // CPU_OFF from vcpu 1.
        let reply = call(&mut p, V1, [fid::CPU_OFF, 0, 0, 0]);
        assert_eq!(reply.actions.to_vec().as_slice(), [Action::PowerOff]);
        assert_eq!(info(&mut p, 1), 1);
        // And on again, with a Thumb entry point.
        let reply = call(&mut p, V0, [fid::CPU_ON, 1, 0x4000_8001, 7]);
        assert_eq!(reply.actions.to_vec()[2], Action::PowerOn { vcpu: V1, entry: 0x4000_8001, context_id: 7 });
        // vcpu 2 is still off.
        assert_eq!(p.power(V2), Some(PowerState::Off));
    }

    #[test]
    fn cpu_on_misuse() {
        let mut p = booted(2);
        let on = |p: &mut Psci, t: u32, e: u32| simple(p, [fid::CPU_ON, t, e, 0]);
        assert_eq!(on(&mut p, 0, 0x4000_8000), PsciError::AlreadyOn.reg(), "self");
        assert_eq!(on(&mut p, 2, 0x4000_8000), INVALID_PARAMETERS, "missing CPU");
        assert_eq!(on(&mut p, 0xFF, 0x4000_8000), INVALID_PARAMETERS, "missing CPU");
        assert_eq!(on(&mut p, 0x101, 0x4000_8000), INVALID_PARAMETERS, "Aff1 set");
        assert_eq!(on(&mut p, 0x8000_0001, 0x4000_8000), INVALID_PARAMETERS, "bits [31:24] set");
        for bad in [0x0, 0x3FFF_FFFC, 0x4800_0000, 0xFFFF_FFFC, 0x4000_8002, 0x47FF_FFFE, 0xFFFF_FFFF] {
            assert_eq!(on(&mut p, 1, bad), PsciError::InvalidAddress.reg(), "entry {bad:#x}");
        }
        // None of that changed anything.
        assert_eq!(p.power(V1), Some(PowerState::Off));
        // The last word of RAM is a valid ARM entry; the last halfword a Thumb one.
        assert_eq!(r0(&call(&mut p, V0, [fid::CPU_ON, 1, 0x47FF_FFFC, 0])), SUCCESS);
        let mut p = booted(2);
        assert_eq!(r0(&call(&mut p, V0, [fid::CPU_ON, 1, 0x47FF_FFFF, 0])), SUCCESS);
    }

    #[test]
    fn affinity_info_misuse() {
        let mut p = booted(2);
        let info = |p: &mut Psci, t: u32, l: u32| simple(p, [fid::AFFINITY_INFO, t, l, 0]);
        assert_eq!(info(&mut p, 0, 1), INVALID_PARAMETERS);
        assert_eq!(info(&mut p, 0, 0xFFFF_FFFF), INVALID_PARAMETERS);
        assert_eq!(info(&mut p, 2, 0), INVALID_PARAMETERS);
        assert_eq!(info(&mut p, 0x1_0000, 0), INVALID_PARAMETERS);
        assert_eq!(info(&mut p, 0x8000_0000, 0), INVALID_PARAMETERS);
    }

    #[test]
    fn cpu_off_of_last_vcpu_is_allowed() {
        let mut p = booted(1);
        let reply = call(&mut p, V0, [fid::CPU_OFF, 0, 0, 0]);
        assert_eq!(reply.actions.to_vec().as_slice(), [Action::PowerOff]);
        assert_eq!(p.power(V0), Some(PowerState::Off));
    }

    #[test]
    fn cpu_suspend_is_a_wfi() {
        let mut p = booted(1);
        let reply = call(&mut p, V0, [fid::CPU_SUSPEND, 0x0001_0000, 0x4000_8000, 0]);
        assert_eq!(
            reply.actions.to_vec().as_slice(),
            [Action::SetReg { reg: GuestReg::Gpr(0), value: SUCCESS }, Action::AdvancePc, idle(V0)]
        );
        assert_eq!(p.power(V0), Some(PowerState::On));
        assert_eq!(simple(&mut p, [fid::CPU_SUSPEND, 0x0002_0000, 0, 0]), INVALID_PARAMETERS);
        assert_eq!(simple(&mut p, [fid::CPU_SUSPEND, 0x8000_0000, 0, 0]), INVALID_PARAMETERS);
    }

    #[test]
    fn system_off_and_reset() {
        let mut p = booted(1);
        let reply = call(&mut p, V0, [fid::SYSTEM_OFF, 0, 0, 0]);
        assert_eq!(reply.actions.last(), Some(Action::Shutdown(ShutdownReason::PowerOff)));
        assert_eq!(r0(&reply), PsciError::InternalFailure.reg());
        let reply = call(&mut p, V0, [fid::SYSTEM_RESET, 0, 0, 0]);
        assert_eq!(reply.actions.last(), Some(Action::Shutdown(ShutdownReason::Reset)));
    }

    #[test]
    fn missing_vcpus_are_errors_not_panics() {
        let mut p = booted(1);
        assert_eq!(p.started(VcpuId(1)), Err(ServerError::NoSuchVcpu(VcpuId(1))));
        assert_eq!(p.started(VcpuId(255)), Err(ServerError::NoSuchVcpu(VcpuId(255))));
        assert_eq!(
            p.call(VcpuId(9), [fid::CPU_OFF, 0, 0, 0], &mut Reply::none()),
            Err(ServerError::NoSuchVcpu(VcpuId(9)))
        );
        assert_eq!(p.power(VcpuId(8)), None);
        // A VM claiming more vCPUs than exist is clamped.
        let p = Psci::new(200, RAM);
        assert_eq!(p.power(VcpuId(7)), Some(PowerState::Off));
        assert_eq!(p.power(VcpuId(8)), None);
    }
}
