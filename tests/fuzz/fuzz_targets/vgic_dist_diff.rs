//! Differential fuzzing of the vGIC server's distributor against the
//! reference model in `splitvisor_fuzz::gicd_ref` (GICv2, IHI 0048B
//! chapter 4): the same sequence of distributor reads and writes from any
//! vCPU and interrupt line changes goes to both, and every read must return
//! the same value. After the sequence every implemented register is read
//! back (as the last vCPU that accessed the distributor) and compared too,
//! so a divergence the sequence did not read still shows.
//!
//! Only requests that touch the distributor's register state are sent
//! (`Mmio`, `SetLine` without a hardware link): list-register traffic, which
//! acknowledges and deactivates interrupts, is the `vgic_server` target's.
#![no_main]

use arbitrary::Arbitrary;
use ipc::{AccessSize, Action, GuestReg, IntId, MmioAccess, Reply, Server, ServerError, ServerId, VcpuId, VgicRequest};
use libfuzzer_sys::fuzz_target;
use splitvisor_fuzz::check::{self, Answering};
use splitvisor_fuzz::config::FuzzConfig;
use splitvisor_fuzz::gicd_ref::{FuzzAccess, RefGicd};
use vgic_server::VgicServer;

#[derive(Debug, Arbitrary)]
enum Op {
    Read { vcpu: u8, access: FuzzAccess, rt: u8, sign_extend: bool },
    Write { vcpu: u8, access: FuzzAccess, value: u32 },
    Line { intid: u16, level: bool, target: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    ops: Vec<Op>,
}

fn load(value: u32, size: AccessSize, sign_extend: bool) -> u32 {
    match (size, sign_extend) {
        (AccessSize::Byte, true) => value as u8 as i8 as i32 as u32,
        (AccessSize::Half, true) => value as u16 as i16 as i32 as u32,
        _ => (u64::from(value) & size.mask()) as u32,
    }
}

struct Pair {
    server: VgicServer,
    model: RefGicd,
    base: u64,
    vcpus: u8,
}

impl Pair {
    #[allow(clippy::too_many_arguments)]
    fn mmio(
        &mut self,
        vcpu: u8,
        offset: u64,
        size: AccessSize,
        write: bool,
        value: u32,
        rt: u8,
        sign_extend: bool,
        shape: bool,
    ) -> Reply {
        let access = MmioAccess {
            ipa: self.base + offset,
            far: 0xE000_0000 | offset as u32,
            size,
            write,
            value: if write { u64::from(value) & size.mask() } else { 0 },
            rt,
            sign_extend,
        };
        let request = VgicRequest::Mmio { vcpu: VcpuId(vcpu), access, status: None };
        let reply = match self.server.handle(request) {
            Ok(r) => r,
            Err(e) => panic!("{request:?} refused: {e:?}"),
        };
        if shape {
            check::reply_shape(ServerId::Vgic, &reply, self.vcpus, Answering::Trap);
        }
        reply
    }

    fn read(&mut self, vcpu: u8, offset: u64, size: AccessSize, rt: u8, sign_extend: bool, shape: bool) {
        let reply = self.mmio(vcpu, offset, size, false, 0, rt, sign_extend, shape);
        if rt > 14 {
            assert!(matches!(reply.actions.to_vec().as_slice(), [Action::InjectDataAbort { .. }]), "{reply:?}");
            return;
        }
        let expected = load(self.model.read(vcpu, offset, size), size, sign_extend);
        match reply.actions.to_vec().as_slice() {
            [Action::SetReg { reg: GuestReg::Gpr(r), value }, Action::AdvancePc, kicks @ ..] => {
                assert_eq!(*r, rt);
                assert_eq!(
                    *value, expected,
                    "vcpu{vcpu} read of {size:?} at GICD+{offset:#x}: server {value:#x}, reference {expected:#x}"
                );
                assert!(kicks.iter().all(|k| matches!(k, Action::Kick { .. })), "{reply:?}");
            }
            other => panic!("read answered {other:?}"),
        }
    }

    fn write(&mut self, vcpu: u8, offset: u64, size: AccessSize, value: u32) {
        let reply = self.mmio(vcpu, offset, size, true, value, 0, false, true);
        match reply.actions.to_vec().as_slice() {
            [Action::AdvancePc, kicks @ ..] => assert!(kicks.iter().all(|k| matches!(k, Action::Kick { .. }))),
            other => panic!("write answered {other:?}"),
        }
        self.model.write(vcpu, offset, size, (u64::from(value) & size.mask()) as u32);
    }

    /// Read every implemented register as `vcpu`.
    fn sweep(&mut self, vcpu: u8) {
        let lines = u64::from(self.model.interrupt_lines());
        let mut offsets: Vec<u64> = vec![0x000, 0x004, 0x008, 0xF00];
        for bank in [0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380] {
            offsets.extend((0..lines / 32).map(|n| bank + 4 * n));
        }
        offsets.extend((0..lines / 4).map(|n| 0x400 + 4 * n));
        offsets.extend((0..lines / 4).map(|n| 0x800 + 4 * n));
        offsets.extend((0..lines / 16).map(|n| 0xC00 + 4 * n));
        offsets.extend((0..8).map(|n| 0xF10 + 4 * n));
        offsets.extend((0..12).map(|n| 0xFD0 + 4 * n));
        for offset in offsets {
            self.read(vcpu, offset, AccessSize::Word, 0, false, false);
        }
    }
}

fuzz_target!(|input: Input| {
    splitvisor_fuzz::logsink::init();
    let config = input.config.build_or_default();
    let server = VgicServer::new(&config);
    let model = RefGicd::new(config.vcpus, config.spis, vgic_server::regs::id::VALUES, vgic_server::regs::iidr::VALUE);
    let lines = model.interrupt_lines();
    let mut pair = Pair { server, model, base: config.gicd.base, vcpus: config.vcpus };
    let vcpu = |n: u8| n % config.vcpus;
    let mut last = 0;
    for op in input.ops.iter().take(256) {
        match *op {
            Op::Read { vcpu: v, access, rt, sign_extend } => {
                let (offset, size) = access.resolve(lines);
                last = vcpu(v);
                pair.read(last, offset, size, if rt % 16 == 15 { 15 } else { rt % 15 }, sign_extend, true);
            }
            Op::Write { vcpu: v, access, value } => {
                let (offset, size) = access.resolve(lines);
                last = vcpu(v);
                pair.write(last, offset, size, value);
            }
            Op::Line { intid, level, target } => {
                let intid = intid % (lines as u16 + 8);
                let target = (target % 16 < 15).then_some(target % (config.vcpus + 1));
                let request = VgicRequest::SetLine {
                    intid: IntId(intid),
                    level,
                    target: target.map(VcpuId),
                    hw: None,
                    change: 0,
                    status: None,
                };
                let before = pair.server.clone();
                let got = pair.server.handle(request);
                let accepted = pair.model.set_line(intid, level, target);
                match got {
                    Ok(reply) => {
                        assert!(accepted, "{request:?} accepted; the reference has no such line");
                        check::reply_shape(ServerId::Vgic, &reply, config.vcpus, Answering::NotATrap);
                        assert!(reply.actions.iter().all(|a| matches!(a, Action::Kick { .. })), "{reply:?}");
                    }
                    Err(e) => {
                        assert!(!accepted, "{request:?} refused ({e:?}); the reference takes it");
                        assert!(matches!(e, ServerError::Unexpected | ServerError::NoSuchVcpu(_)));
                        assert_eq!(pair.server, before, "a refused request changed the state");
                    }
                }
            }
        }
    }
    pair.sweep(last);
    check::round_trip(&pair.server);
});
