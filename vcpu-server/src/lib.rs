//! # vcpu-server: what a vCPU does when it leaves the guest
//!
//! Owns, for one VM: each vCPU's power state and the PSCI 1.0 / SMCCC 1.1
//! interface over HVC and SMC ([`psci`]); the MMIO bus and the devices on it
//! ([`mmio`]), the PL011 console among them ([`pl011`]), fed by the VM's
//! console input with flow control; the trap policy and the trapped CP15
//! registers ([`cp15`]); what WFI and WFE do; and which exception a guest
//! gets for an access nothing can emulate (an abort or an undefined
//! instruction).
//!
//! It never touches GIC or timer state: interrupt lines and idling go to the
//! vGIC server as messages ([`ipc::VgicRequest`]), and everything that changes the
//! machine is an [`Action`] the monitor carries out. Its whole state is
//! [`VcpuServer`], a plain serde value.
//!
//! Conventions of the monitor it relies on: a trap's PC is the address of the
//! trapping instruction and the guest resumes there unless the reply holds
//! [`Action::AdvancePc`] (HVC included); `GuestReg::Gpr(n)` is register `n`
//! of the mode the guest was in; `Start { vcpu }` arrives before a vCPU first
//! runs after power-on (vCPU 0 at boot, others after a `PowerOn`).
//!
//! `no_std`; the `std` feature only passes `std` on to `ipc`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cp15;
pub mod image;
pub mod mmio;
pub mod pl011;
pub mod psci;

use ipc::{
    Action, GuestReg, IntId, MemWindow, Message, Reply, Server, ServerError, ServerId, Trap, TrapConfig, TrapMsg,
    VcpuId, VcpuRequest, VmConfig, MAX_VCPUS,
};
use log::{debug, error, warn};
use serde::{Deserialize, Serialize};

use crate::cp15::{trap_policy, Cp15};
use crate::mmio::{Device, MmioBus};
use crate::pl011::Pl011;
use crate::psci::{Psci, PsciError};

/// The vCPU server's whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuServer {
    /// vCPUs in the VM (1 to [`MAX_VCPUS`]).
    vcpus: u8,
    /// Power states and PSCI.
    psci: Psci,
    /// Virtual CP15 registers.
    cp15: Cp15,
    /// Emulated devices.
    bus: MmioBus,
    /// What the guest's accesses trap (from the VM's configuration).
    traps: TrapConfig,
}

impl VcpuServer {
    /// The server for the VM `config` describes, its vCPUs at reset (vCPU 0
    /// about to be started by the monitor), its PL011 on the bus. The
    /// monitor validates `config` first; a vCPU count beyond [`MAX_VCPUS`] is
    /// cut to it.
    pub fn new(config: &VmConfig) -> Self {
        let vcpus = config.vcpus.min(MAX_VCPUS as u8);
        if vcpus != config.vcpus {
            error!("VM config names {} vCPUs; using {vcpus}", config.vcpus);
        }
        let ram: MemWindow = config.ram;
        let mut bus = MmioBus::new();
        if let Err(e) =
            bus.attach(config.uart, Device::Pl011(Pl011::with_image(IntId(config.uart_intid), config.console_image)))
        {
            error!("cannot attach the PL011 at {:#x}: {e:?}", config.uart.base);
        }
        VcpuServer { vcpus, psci: Psci::new(vcpus, ram), cp15: Cp15::new(vcpus), bus, traps: trap_policy(config.wfi) }
    }

    /// The PSCI state (power states).
    pub fn psci(&self) -> &Psci {
        &self.psci
    }

    /// The virtual CP15 state.
    pub fn cp15(&self) -> &Cp15 {
        &self.cp15
    }

    /// The MMIO bus.
    pub fn bus(&mut self) -> &mut MmioBus {
        &mut self.bus
    }

    fn check(&self, vcpu: VcpuId) -> Result<(), ServerError> {
        if vcpu.0 < self.vcpus {
            Ok(())
        } else {
            Err(ServerError::NoSuchVcpu(vcpu))
        }
    }

    /// `vcpu` is about to run for the first time since power-on: it is on,
    /// its CP15 state comes out of reset, and it gets the trap policy; the
    /// monitor is told the console's receive room.
    fn start(&mut self, vcpu: VcpuId, reply: &mut Reply) -> Result<(), ServerError> {
        self.check(vcpu)?;
        self.psci.started(vcpu)?;
        self.cp15.reset(vcpu);
        reply.push(Action::ConfigureTraps(self.traps))?;
        if let Some(console) = self.bus.console() {
            console.started(reply)?;
        }
        Ok(())
    }

    fn console_input(&mut self, bytes: &[u8], reply: &mut Reply) -> Result<(), ServerError> {
        let console = self.bus.console().ok_or(ServerError::Unexpected)?;
        Ok(console.console_input(bytes, reply)?)
    }

    fn trap(&mut self, msg: &TrapMsg, reply: &mut Reply) -> Result<(), ServerError> {
        let vcpu = msg.vcpu;
        self.check(vcpu)?;
        match msg.trap {
            // SMCCC reserves non-zero HVC immediates; a call through one is
            // answered as an unknown function (NOT_SUPPORTED, -1), as KVM
            // answers a reserved SMC immediate. Not UNDEFINED: the HVC
            // instruction exists and was taken, and a hypervisor-specific ABI
            // (Xen's HVC #0xEA1) is probed this way.
            Trap::Hvc { imm, args } if imm != 0 => {
                debug!("vcpu{}: HVC #{imm:#x} (function {:#x}) is not an SMCCC call", vcpu.0, args[0]);
                Ok(reply.extend([
                    Action::SetReg { reg: GuestReg::Gpr(0), value: PsciError::NotSupported.reg() },
                    Action::AdvancePc,
                ])?)
            }
            Trap::Hvc { args, .. } | Trap::Smc { args } => self.psci.call(vcpu, args, reply),
            Trap::Mmio(access) => self.bus.emulate(&access, reply),
            Trap::DataAbortNoSyndrome { ipa, far, write } => {
                warn!(
                    "vcpu{}: {} at {ipa:#x} (va {far:#x}) without a syndrome (load/store multiple or writeback) cannot be emulated; injecting a data abort",
                    vcpu.0,
                    if write { "store" } else { "load" }
                );
                Ok(reply.push(Action::InjectDataAbort { far })?)
            }
            Trap::PrefetchAbort { ipa, far } => {
                warn!("vcpu{}: instruction fetch from {ipa:#x} (va {far:#x}) outside guest RAM", vcpu.0);
                Ok(reply.push(Action::InjectPrefetchAbort { far })?)
            }
            Trap::Cp15(access) => self.cp15.access(vcpu, &access, reply),
            Trap::Cp15Wide(access) => {
                warn!("vcpu{}: trapped 64-bit CP15 access {access:?}; injecting undef", vcpu.0);
                Ok(reply.push(Action::InjectUndef)?)
            }
            // The monitor's router sends a trapped WFI to the vGIC server
            // (`VgicRequest::Wfi`), which steps past it and decides whether
            // the vCPU may idle. Given one all the same (by another sender),
            // the same in two steps: step past the WFI and ask the vGIC
            // server (it answers WaitForInterrupt, or nothing when an
            // interrupt is pending; the router fills in the list-register
            // status of the `Idle` request before delivering it).
            Trap::Wfi => {
                reply.push(Action::AdvancePc)?;
                Ok(reply.push(psci::idle(vcpu))?)
            }
            // WFE may complete at any time; with one vCPU per physical CPU
            // there is nothing to yield to.
            Trap::Wfe => Ok(reply.push(Action::AdvancePc)?),
            Trap::Unknown { hsr } => {
                warn!("vcpu{}: unknown trap (HSR {hsr:#010x}) at pc {:#x}; injecting undef", vcpu.0, msg.pc);
                Ok(reply.push(Action::InjectUndef)?)
            }
            // Interrupts belong to the vGIC and vtimer servers.
            Trap::Irq { .. } | Trap::HypTimer => Err(ServerError::Unexpected),
        }
    }
}

impl Server for VcpuServer {
    const ID: ServerId = ServerId::Vcpu;
    type Request = VcpuRequest;

    fn handle_into(&mut self, request: &VcpuRequest, reply: &mut Reply) -> Result<(), ServerError> {
        match request {
            VcpuRequest::Start { vcpu } => self.start(*vcpu, reply),
            VcpuRequest::Trap(msg) => self.trap(msg, reply),
            VcpuRequest::ConsoleInput { bytes } => self.console_input(bytes, reply),
        }
    }

    fn request_of(message: &Message) -> Result<&VcpuRequest, ServerError> {
        match message {
            Message::Vcpu(request) => Ok(request),
            _ => Err(ServerError::WrongServer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pl011::offset;
    use crate::psci::{fid, PowerState};
    use ipc::msg::{LrStatus, VgicRequest};
    use ipc::{AccessSize, Cp15Access, Cp15WideAccess, MmioAccess};

    /// A VM without the console's read image: most tests here are about
    /// other actions (`console_read_image_follows_the_fifo` is about it).
    fn config(vcpus: u8) -> VmConfig {
        VmConfig {
            ram: MemWindow { ipa: 0x4000_0000, pa: 0x4000_0000, size: 128 << 20 },
            console_image: false,
            ..VmConfig::example(vcpus)
        }
    }

    fn trap(vcpu: u8, trap: Trap) -> VcpuRequest {
        VcpuRequest::Trap(TrapMsg { vcpu: VcpuId(vcpu), trap, pc: 0x4000_8000, cpsr: 0x1d3 })
    }

    fn booted(vcpus: u8) -> VcpuServer {
        let mut s = VcpuServer::new(&config(vcpus));
        s.handle(VcpuRequest::Start { vcpu: VcpuId(0) }).expect("start");
        s
    }

    fn actions(s: &mut VcpuServer, r: VcpuRequest) -> std::vec::Vec<Action> {
        s.handle(r).expect("reply").actions.iter().collect()
    }

    fn mmio(ipa: u64, write: bool, value: u64) -> Trap {
        Trap::Mmio(MmioAccess { ipa, far: ipa as u32, size: AccessSize::Word, write, value, rt: 2, sign_extend: false })
    }

    #[test]
    fn start_configures_traps_and_console_room() {
        let mut s = VcpuServer::new(&config(2));
        assert_eq!(s.psci().power(VcpuId(0)), Some(PowerState::OnPending));
        let a = actions(&mut s, VcpuRequest::Start { vcpu: VcpuId(0) });
        assert_eq!(
            a,
            [
                Action::ConfigureTraps(ipc::TrapConfig {
                    wfi: true,
                    wfe: true,
                    smc: true,
                    actlr: true,
                    set_way: true,
                    phys_timer: true,
                    phys_counter: false,
                }),
                Action::ConsoleReady { room: 1, report: 1 },
            ]
        );
        assert_eq!(s.psci().power(VcpuId(0)), Some(PowerState::On));
        assert_eq!(s.handle(VcpuRequest::Start { vcpu: VcpuId(2) }), Err(ServerError::NoSuchVcpu(VcpuId(2))));
        // With WFI run natively, only TWI changes, on every vCPU.
        let mut s = VcpuServer::new(&VmConfig { wfi: ipc::WfiPolicy::Native, ..config(2) });
        for vcpu in [VcpuId(0), VcpuId(1)] {
            if vcpu.0 == 1 {
                s.handle(trap(0, Trap::Hvc { imm: 0, args: [fid::CPU_ON, 1, 0x4000_8000, 0] })).expect("CPU_ON");
            }
            let a = actions(&mut s, VcpuRequest::Start { vcpu });
            let Some(Action::ConfigureTraps(t)) = a.first() else { panic!("no traps configured: {a:?}") };
            assert_eq!(*t, ipc::TrapConfig { wfi: false, ..crate::cp15::trap_policy(ipc::WfiPolicy::Trap) });
        }
    }

    #[test]
    fn psci_over_hvc_and_smc() {
        let mut s = booted(2);
        for t in
            [Trap::Hvc { imm: 0, args: [fid::PSCI_VERSION, 0, 0, 0] }, Trap::Smc { args: [fid::PSCI_VERSION, 0, 0, 0] }]
        {
            assert_eq!(
                actions(&mut s, trap(0, t)),
                [Action::SetReg { reg: GuestReg::Gpr(0), value: 0x0001_0000 }, Action::AdvancePc]
            );
        }
        assert_eq!(
            actions(&mut s, trap(0, Trap::Hvc { imm: 1, args: [fid::PSCI_VERSION, 0, 0, 0] })),
            [Action::SetReg { reg: GuestReg::Gpr(0), value: 0xFFFF_FFFF }, Action::AdvancePc]
        );
    }

    #[test]
    fn secondary_life_cycle_through_start() {
        let mut s = booted(2);
        let on = trap(0, Trap::Smc { args: [fid::CPU_ON, 1, 0x4001_0000, 42] });
        let a = actions(&mut s, on);
        assert!(a.contains(&Action::PowerOn { vcpu: VcpuId(1), entry: 0x4001_0000, context_id: 42 }));
        let info = |s: &mut VcpuServer| match actions(
            s,
            trap(0, Trap::Hvc { imm: 0, args: [fid::AFFINITY_INFO, 1, 0, 0] }),
        )[0]
        {
            Action::SetReg { value, .. } => value,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(info(&mut s), 2);
        actions(&mut s, VcpuRequest::Start { vcpu: VcpuId(1) });
        assert_eq!(info(&mut s), 0);
        // vCPU 1's ACTLR came out of reset with SMP set.
        let read_actlr = Trap::Cp15(Cp15Access { opc1: 0, crn: 1, crm: 0, opc2: 1, write: false, rt: 4, value: 0 });
        assert_eq!(
            actions(&mut s, trap(1, read_actlr))[0],
            Action::SetReg { reg: GuestReg::Gpr(4), value: cp15::actlr::SMP }
        );
        assert_eq!(actions(&mut s, trap(1, Trap::Hvc { imm: 0, args: [fid::CPU_OFF, 0, 0, 0] })), [Action::PowerOff]);
        assert_eq!(info(&mut s), 1);
    }

    #[test]
    fn mmio_console_round_trip() {
        let mut s = booted(1);
        let base = 0x0900_0000;
        assert_eq!(
            actions(&mut s, trap(0, mmio(base + offset::DR, true, u64::from(b'h')))),
            [Action::console(b"h"), Action::AdvancePc]
        );
        let mut bytes = ipc::msg::InputBytes::new();
        bytes.push(b'k').expect("room");
        let a = actions(&mut s, VcpuRequest::ConsoleInput { bytes });
        assert_eq!(a, [Action::ConsoleReady { room: 0, report: 2 }]);
        let a = actions(&mut s, trap(0, mmio(base + offset::DR, false, 0)));
        assert_eq!(
            a,
            [
                Action::ConsoleReady { room: 1, report: 3 },
                Action::SetReg { reg: GuestReg::Gpr(2), value: u32::from(b'k') },
                Action::AdvancePc
            ]
        );
        // Nothing at the GIC CPU interface window or beyond the UART.
        let a = actions(&mut s, trap(0, mmio(0x0801_0000, false, 0)));
        assert_eq!(a, [Action::InjectDataAbort { far: 0x0801_0000 }]);
    }

    fn image_actions(a: &[Action]) -> std::vec::Vec<Action> {
        a.iter()
            .filter(|a| matches!(a, Action::ConsoleImageWord { .. } | Action::ConsoleImageMap { .. }))
            .cloned()
            .collect()
    }

    #[test]
    fn console_read_image_follows_the_fifo() {
        let mut s = VcpuServer::new(&VmConfig { console_image: true, ..config(1) });
        let base = 0x0900_0000;
        // Start sends what fits of the image beside the trap policy and the
        // room; the UART's next accesses send the rest, then map it.
        let mut image = image_actions(&actions(&mut s, VcpuRequest::Start { vcpu: VcpuId(0) }));
        assert!(!image.is_empty() && !image.contains(&Action::ConsoleImageMap { mapped: true, generation: 2 }));
        let mut accesses = 0;
        while !image.iter().any(|a| matches!(a, Action::ConsoleImageMap { mapped: true, .. })) {
            image = image_actions(&actions(&mut s, trap(0, mmio(base + offset::FR, false, 0))));
            accesses += 1;
            assert!(accesses < 4, "the image is never mapped");
        }
        let console = s.bus().console().expect("uart");
        assert!(console.image().mapped());
        assert_eq!(console.image().sent(), &console.image_words());
        // Bytes written change nothing the image shows after the first
        // (which raises the transmit interrupt): no more image actions.
        let write = trap(0, mmio(base + offset::DR, true, u64::from(b'h')));
        assert_eq!(image_actions(&actions(&mut s, write)).len(), 1);
        assert_eq!(actions(&mut s, write), [Action::console(b"h"), Action::AdvancePc]);
        // Input makes a read of UARTDR pop the FIFO: the image is unmapped.
        let mut bytes = ipc::msg::InputBytes::new();
        bytes.push(b'k').expect("room");
        let a = actions(&mut s, VcpuRequest::ConsoleInput { bytes });
        assert!(matches!(image_actions(&a).as_slice(), [Action::ConsoleImageMap { mapped: false, .. }]));
        // Reading the FIFO empty maps it again, with UARTFR's RXFE back.
        let a = actions(&mut s, trap(0, mmio(base + offset::DR, false, 0)));
        assert!(a.contains(&Action::SetReg { reg: GuestReg::Gpr(2), value: u32::from(b'k') }));
        assert!(matches!(image_actions(&a).last(), Some(Action::ConsoleImageMap { mapped: true, .. })));
        let console = s.bus().console().expect("uart");
        assert_eq!(console.image().sent(), &console.image_words());
    }

    #[test]
    fn wait_instructions() {
        let mut s = booted(2);
        assert_eq!(
            actions(&mut s, trap(0, Trap::Wfi)),
            [
                Action::AdvancePc,
                Action::Send(Message::Vgic(VgicRequest::Idle { vcpu: VcpuId(0), status: LrStatus::default() }))
            ]
        );
        assert_eq!(actions(&mut s, trap(0, Trap::Wfe)), [Action::AdvancePc]);
    }

    #[test]
    fn faults_and_unknown_traps() {
        let mut s = booted(1);
        assert_eq!(
            actions(&mut s, trap(0, Trap::DataAbortNoSyndrome { ipa: 0x0900_0000, far: 0xF000_0000, write: true })),
            [Action::InjectDataAbort { far: 0xF000_0000 }]
        );
        assert_eq!(
            actions(&mut s, trap(0, Trap::PrefetchAbort { ipa: 0x1000, far: 0x1000 })),
            [Action::InjectPrefetchAbort { far: 0x1000 }]
        );
        assert_eq!(actions(&mut s, trap(0, Trap::Unknown { hsr: 0xFC00_0000 })), [Action::InjectUndef]);
        let wide = Cp15WideAccess { opc1: 0, crm: 2, write: false, rt: 0, rt2: 1, value: 0 };
        assert_eq!(actions(&mut s, trap(0, Trap::Cp15Wide(wide))), [Action::InjectUndef]);
        assert_eq!(s.handle(trap(0, Trap::Irq { intid: 27 })), Err(ServerError::Unexpected));
        assert_eq!(s.handle(trap(0, Trap::HypTimer)), Err(ServerError::Unexpected));
        assert_eq!(s.handle(trap(1, Trap::Wfi)), Err(ServerError::NoSuchVcpu(VcpuId(1))));
    }

    #[test]
    fn messages_for_other_servers_are_refused() {
        let mut s = booted(1);
        let m = Message::Vgic(VgicRequest::Idle { vcpu: VcpuId(0), status: LrStatus::default() });
        assert_eq!(s.handle_message(m), Err(ServerError::WrongServer));
        let m = Message::Vcpu(VcpuRequest::Start { vcpu: VcpuId(0) });
        assert!(s.handle_message(m).is_ok());
    }

    #[test]
    fn state_round_trips_through_postcard() {
        let mut s = booted(4);
        // Put some state everywhere: a pending CPU_ON, ACTLR, FIFO contents, masks.
        actions(&mut s, trap(0, Trap::Smc { args: [fid::CPU_ON, 2, 0x4000_0000, 1] }));
        let w = Cp15Access { opc1: 0, crn: 1, crm: 0, opc2: 1, write: true, rt: 0, value: 0 };
        actions(&mut s, trap(0, Trap::Cp15(w)));
        actions(&mut s, trap(0, mmio(0x0900_0000 + offset::LCR_H, true, 0x70)));
        actions(&mut s, trap(0, mmio(0x0900_0000 + offset::IMSC, true, 0x50)));
        let mut bytes = ipc::msg::InputBytes::new();
        bytes.extend_from_slice(b"abc").expect("room");
        actions(&mut s, VcpuRequest::ConsoleInput { bytes });

        let mut buf = [0u8; 1024];
        let encoded = postcard::to_slice(&s, &mut buf).expect("encode");
        let restored: VcpuServer = postcard::from_bytes(encoded).expect("decode");
        assert_eq!(restored, s);
        // And it behaves the same: the next read gives the same answer.
        let mut a = s.clone();
        let mut b = restored;
        let read = trap(0, mmio(0x0900_0000 + offset::DR, false, 0));
        assert_eq!(actions(&mut a, read), actions(&mut b, read));
        assert_eq!(a, b);
    }

    #[test]
    fn garbage_state_does_not_panic() {
        // A deserialized state can claim anything; requests still get
        // answers or errors.
        let mut s = booted(1);
        s.vcpus = 200;
        for v in [0u8, 7, 8, 199, 255] {
            let _ = s.handle(trap(v, Trap::Hvc { imm: 0, args: [fid::CPU_ON, u32::from(v), 0x4000_0000, 0] }));
            let _ = s.handle(trap(v, Trap::Hvc { imm: 0, args: [fid::AFFINITY_INFO, u32::from(v), 0, 0] }));
            let _ = s.handle(trap(v, Trap::Hvc { imm: 0, args: [fid::CPU_OFF, 0, 0, 0] }));
            let _ = s.handle(trap(
                v,
                Trap::Cp15(Cp15Access { opc1: 0, crn: 1, crm: 0, opc2: 1, write: false, rt: 0, value: 0 }),
            ));
            let _ = s.handle(VcpuRequest::Start { vcpu: VcpuId(v) });
        }
    }
}
