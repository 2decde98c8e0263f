//! Host benchmark: the wire format. One representative value of every
//! request kind ([`Message`]: each [`VcpuRequest`], [`Trap`] kind,
//! [`VgicRequest`] and [`VtimerRequest`]) and of typical replies, each
//! encoded in a wire [`ipc::Envelope`] ([`wire::encode_envelope`]), decoded
//! from one ([`wire::decode_envelope`]), and both in turn.
//!
//! `cargo bench -p ipc --bench wire`; the figures are in tests/perf/host.md
//! (issue 8's target: encode + decode of a trap message within 50 ns).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ipc::msg::{LrStatus, TimerKind};
use ipc::{wire, TrapConfig};
use ipc::{
    AccessSize, Action, Cp15Access, Cp15WideAccess, GuestReg, IntId, Message, MmioAccess, Reply, ServerError, Trap,
    TrapMsg, VcpuId, VcpuRequest, VgicRequest, VtimerRequest, MAX_MESSAGE_SIZE,
};
use serde::{de::DeserializeOwned, Serialize};

/// An arbitrary but plausible guest PC and CPSR (SVC mode, IRQs masked).
const PC: u32 = 0xc010_8a44;
const CPSR: u32 = 0x6000_0193;
/// A physical count well away from zero, as after some host uptime (it is
/// a varint on the wire, so its size matters).
const NOW: u64 = 0x0000_0123_4567_89ab;

fn trap(trap: Trap) -> Message {
    Message::Vcpu(VcpuRequest::Trap(TrapMsg { vcpu: VcpuId(1), trap, pc: PC, cpsr: CPSR }))
}

/// A store to the PL011's data register (QEMU virt: 0x0900_0000).
fn uart_store() -> MmioAccess {
    MmioAccess {
        ipa: 0x0900_0000,
        far: 0xf900_0000,
        size: AccessSize::Word,
        write: true,
        value: 0x41,
        rt: 3,
        sign_extend: false,
    }
}

/// A load of GICD_ISENABLER1 (QEMU virt's distributor at 0x0800_0000).
fn gicd_load() -> MmioAccess {
    MmioAccess {
        ipa: 0x0800_0104,
        far: 0xf800_0104,
        size: AccessSize::Word,
        write: false,
        value: 0,
        rt: 2,
        sign_extend: false,
    }
}

/// A list-register status with two entries in use (one pending SGI, one
/// active timer PPI) and two empty.
fn status() -> LrStatus {
    LrStatus { misr: 0, eisr: 0, elrsr: 0b1100, lrs: [0x1000_0001 | 1 << 10, 0xa000_0000 | 27 << 10 | 27, 0, 0] }
}

/// One request of every kind, named `server/kind`.
fn messages() -> std::vec::Vec<(&'static str, Message)> {
    let mut input = ipc::msg::InputBytes::new();
    // Cannot fail: 4 bytes fit in MAX_INPUT_BYTES.
    let _ = input.extend_from_slice(b"ls\r\n");
    vec![
        ("vcpu/start", Message::Vcpu(VcpuRequest::Start { vcpu: VcpuId(1) })),
        ("vcpu/trap-hvc", trap(Trap::Hvc { imm: 0, args: [0x8400_0000, 0, 0, 0] })),
        ("vcpu/trap-smc", trap(Trap::Smc { args: [0x8400_0003, 1, 0x4000_8000, 0] })),
        ("vcpu/trap-mmio", trap(Trap::Mmio(uart_store()))),
        (
            "vcpu/trap-data-abort-no-syndrome",
            trap(Trap::DataAbortNoSyndrome { ipa: 0x0900_0000, far: 0xf900_0000, write: true }),
        ),
        ("vcpu/trap-prefetch-abort", trap(Trap::PrefetchAbort { ipa: 0x0a00_0000, far: 0xfa00_0000 })),
        (
            "vcpu/trap-cp15",
            trap(Trap::Cp15(Cp15Access { opc1: 0, crn: 7, crm: 14, opc2: 2, write: true, rt: 0, value: 0x8000_0040 })),
        ),
        (
            "vcpu/trap-cp15-wide",
            trap(Trap::Cp15Wide(Cp15WideAccess { opc1: 0, crm: 14, write: false, rt: 0, rt2: 1, value: 0 })),
        ),
        ("vcpu/trap-wfi", trap(Trap::Wfi)),
        ("vcpu/trap-wfe", trap(Trap::Wfe)),
        ("vcpu/trap-irq", trap(Trap::Irq { intid: 27 })),
        ("vcpu/trap-hyp-timer", trap(Trap::HypTimer)),
        ("vcpu/trap-unknown", trap(Trap::Unknown { hsr: 0x0200_0000 })),
        ("vcpu/console-input", Message::Vcpu(VcpuRequest::ConsoleInput { bytes: input })),
        ("vgic/start", Message::Vgic(VgicRequest::Start { vcpu: VcpuId(1), list_registers: 4 })),
        (
            "vgic/mmio",
            Message::Vgic(VgicRequest::Mmio { vcpu: VcpuId(1), access: gicd_load(), status: Some(status()) }),
        ),
        (
            "vgic/set-line",
            Message::Vgic(VgicRequest::SetLine {
                intid: IntId(27),
                level: true,
                target: Some(VcpuId(1)),
                hw: Some(IntId(27)),
                change: 0,
                status: None,
            }),
        ),
        ("vgic/maintenance", Message::Vgic(VgicRequest::Maintenance { vcpu: VcpuId(1), status: status() })),
        ("vgic/sync", Message::Vgic(VgicRequest::Sync { vcpu: VcpuId(1), status: status() })),
        ("vgic/idle", Message::Vgic(VgicRequest::Idle { vcpu: VcpuId(1), status: status() })),
        ("vtimer/start", Message::Vtimer(VtimerRequest::Start { vcpu: VcpuId(1), now: NOW })),
        (
            "vtimer/cp15",
            Message::Vtimer(VtimerRequest::Cp15 {
                vcpu: VcpuId(1),
                access: Cp15Access { opc1: 0, crn: 14, crm: 2, opc2: 0, write: true, rt: 3, value: 62_500 },
                now: NOW,
            }),
        ),
        (
            "vtimer/cp15-wide",
            Message::Vtimer(VtimerRequest::Cp15Wide {
                vcpu: VcpuId(1),
                access: Cp15WideAccess { opc1: 2, crm: 14, write: true, rt: 4, rt2: 5, value: NOW + 62_500 },
                now: NOW,
            }),
        ),
        (
            "vtimer/fired",
            Message::Vtimer(VtimerRequest::Fired { vcpu: VcpuId(1), timer: TimerKind::Virtual, now: NOW }),
        ),
    ]
}

/// Typical replies, as the servers answer (`Result`, as the stream transport
/// carries them).
fn replies() -> std::vec::Vec<(&'static str, Result<Reply, ServerError>)> {
    let reply = |actions: &[Action]| Reply::of(actions).map_err(ServerError::from);
    vec![
        // A PSCI call or an emulated load: the result in r0, step past.
        ("reply/set-reg", reply(&[Action::SetReg { reg: GuestReg::Gpr(0), value: 0x0001_0000 }, Action::AdvancePc])),
        // The vCPU server's answer to WFI.
        (
            "reply/wfi",
            reply(&[
                Action::AdvancePc,
                Action::Send(Message::Vgic(VgicRequest::Idle { vcpu: VcpuId(1), status: LrStatus::default() })),
            ]),
        ),
        // A console byte.
        ("reply/console", reply(&[Action::console(b"A"), Action::AdvancePc])),
        // A vGIC refresh: two list registers and GICH_HCR.
        (
            "reply/refresh",
            reply(&[
                Action::WriteListRegister { index: 0, value: 0x1000_0001 | 1 << 10 },
                Action::WriteListRegister { index: 1, value: 0x5008_0000 | 27 },
                Action::WriteGichHcr { value: 1 },
            ]),
        ),
        // The vCPU server's answer to Start.
        (
            "reply/start",
            reply(&[Action::ConfigureTraps(TrapConfig::default()), Action::ConsoleReady { room: 16, report: 1 }]),
        ),
        ("reply/error", Err(ServerError::NoSuchVcpu(VcpuId(9)))),
    ]
}

fn bench_value<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let len = match wire::encode_envelope(7, 1, value, &mut buf) {
        Ok(used) => used.len(),
        Err(e) => panic!("{name}: does not encode: {e}"),
    };
    let encoded = buf[..len].to_vec();
    // The bench's own report (user-facing output of this program).
    println!("wire/{name}: {len} bytes in its envelope");
    match wire::decode_envelope::<T>(&encoded) {
        Ok(envelope) => assert_eq!(&envelope.body, value, "{name}: does not decode to itself"),
        Err(e) => panic!("{name}: does not decode: {e}"),
    }

    let mut group = c.benchmark_group(format!("wire/{name}"));
    group.bench_function("encode", |b| {
        let mut buf = [0u8; MAX_MESSAGE_SIZE];
        b.iter(|| wire::encode_envelope(7, 1, black_box(value), black_box(&mut buf)).map(|used| used.len()))
    });
    group.bench_function("decode", |b| b.iter(|| wire::decode_envelope::<T>(black_box(&encoded))));
    group.bench_function("encode+decode", |b| {
        let mut buf = [0u8; MAX_MESSAGE_SIZE];
        b.iter(|| {
            let used = wire::encode_envelope(7, 1, black_box(value), &mut buf)?;
            wire::decode_envelope::<T>(black_box(used))
        })
    });
    group.finish();
}

fn wire(c: &mut Criterion) {
    for (name, message) in messages() {
        bench_value(c, name, &message);
    }
    for (name, reply) in replies() {
        bench_value(c, name, &reply);
    }
}

criterion_group!(benches, wire);
criterion_main!(benches);
