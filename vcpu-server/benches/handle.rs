//! Host benchmark: one [`VcpuServer::handle`] step per request kind, on a
//! server brought to a running guest's state first (both vCPUs of
//! `VmConfig::example(2)` started, the PL011 set up as Linux's driver leaves
//! it). Every iteration handles the request on a fresh clone of that state
//! (the clone is not timed), so each measures the same step.
//!
//! Each step's reply is checked once before it is timed, so that a bench
//! measures the path it is named after and not some refusal.
//!
//! `cargo bench -p vcpu-server --bench handle`; the figures are in
//! tests/perf/host.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipc::{
    AccessSize, Action, Cp15Access, Cp15WideAccess, MmioAccess, Reply, Server, Trap, TrapMsg, VcpuId, VcpuRequest,
    VmConfig,
};
use vcpu_server::cp15::enc;
use vcpu_server::pl011::{cr, lcr_h, offset};
use vcpu_server::psci::fid;
use vcpu_server::VcpuServer;

/// An arbitrary but plausible guest PC and CPSR (SVC mode, IRQs masked).
const PC: u32 = 0xc010_8a44;
const CPSR: u32 = 0x6000_0193;
/// Where the secondary vCPU starts.
const SECONDARY_ENTRY: u32 = 0x4010_0000;

fn trap(vcpu: u8, trap: Trap) -> VcpuRequest {
    VcpuRequest::Trap(TrapMsg { vcpu: VcpuId(vcpu), trap, pc: PC, cpsr: CPSR })
}

fn psci(vcpu: u8, args: [u32; 4]) -> VcpuRequest {
    trap(vcpu, Trap::Hvc { imm: 0, args })
}

/// A word access to the PL011 register at `offset`.
fn uart(config: &VmConfig, offset: u64, write: bool, value: u32) -> VcpuRequest {
    let ipa = config.uart.base + offset;
    let access = MmioAccess {
        ipa,
        far: 0xf800_0000 | ipa as u32,
        size: AccessSize::Word,
        write,
        value: if write { u64::from(value) } else { 0 },
        rt: 3,
        sign_extend: false,
    };
    trap(0, Trap::Mmio(access))
}

/// An MCR/MRC of the CP15 register `(opc1, crn, crm, opc2)`.
fn cp15(vcpu: u8, (opc1, crn, crm, opc2): (u8, u8, u8, u8), write: bool, value: u32) -> VcpuRequest {
    trap(vcpu, Trap::Cp15(Cp15Access { opc1, crn, crm, opc2, write, rt: 1, value }))
}

fn handled(server: &mut VcpuServer, request: VcpuRequest) -> Reply {
    match server.handle(request) {
        Ok(reply) => reply,
        Err(e) => panic!("setup: {request:?} refused: {e}"),
    }
}

/// vCPU 0 running, vCPU 1 still off.
fn one_running(config: &VmConfig) -> VcpuServer {
    let mut s = VcpuServer::new(config);
    handled(&mut s, VcpuRequest::Start { vcpu: VcpuId(0) });
    // The PL011 as Linux's amba-pl011 driver leaves it: FIFOs on, enabled.
    handled(&mut s, uart(config, offset::LCR_H, true, u32::from(lcr_h::FEN) | 0x60));
    handled(&mut s, uart(config, offset::CR, true, u32::from(cr::UARTEN | cr::TXE | cr::RXE)));
    s
}

/// vCPU 1 powered on by vCPU 0, not yet started.
fn secondary_pending(config: &VmConfig) -> VcpuServer {
    let mut s = one_running(config);
    handled(&mut s, psci(0, [fid::CPU_ON, 1, SECONDARY_ENTRY, 0]));
    s
}

/// Both vCPUs running.
fn running(config: &VmConfig) -> VcpuServer {
    let mut s = secondary_pending(config);
    handled(&mut s, VcpuRequest::Start { vcpu: VcpuId(1) });
    s
}

/// Bench `request` on clones of `server`, after checking that its reply
/// passes `check`.
fn step(c: &mut Criterion, name: &str, server: &VcpuServer, request: VcpuRequest, check: impl Fn(&[Action]) -> bool) {
    let reply = handled(&mut server.clone(), request);
    assert!(check(&reply.actions.to_vec()), "{name}: unexpected reply {:?}", reply.actions);
    c.bench_function(&format!("vcpu/{name}"), |b| {
        // By reference: moving the server into the routine would time a
        // copy of its whole state.
        b.iter_batched_ref(
            || (server.clone(), Some(request)),
            |(s, r)| r.take().map(|r| s.handle(r)),
            BatchSize::SmallInput,
        )
    });
}

fn handle(c: &mut Criterion) {
    // The bench's own report (user-facing output of this program).
    println!("vcpu: the server's state is {} bytes", std::mem::size_of::<VcpuServer>());
    let config = VmConfig { log_level: 0, ..VmConfig::example(2) };
    let running = running(&config);

    step(c, "start", &secondary_pending(&config), VcpuRequest::Start { vcpu: VcpuId(1) }, |a| {
        matches!(a, [Action::ConfigureTraps(_), ..])
    });
    step(c, "trap-hvc/psci-version", &running, psci(1, [fid::PSCI_VERSION, 0, 0, 0]), |a| {
        matches!(a, [Action::SetReg { value: 0x0001_0000, .. }, Action::AdvancePc])
    });
    step(c, "trap-hvc/reserved-immediate", &running, trap(1, Trap::Hvc { imm: 1, args: [0; 4] }), |a| {
        matches!(a, [Action::SetReg { .. }, Action::AdvancePc])
    });
    step(
        c,
        "trap-smc/cpu-on",
        &one_running(&config),
        trap(0, Trap::Smc { args: [fid::CPU_ON, 1, SECONDARY_ENTRY, 0] }),
        |a| a.iter().any(|a| matches!(a, Action::PowerOn { .. })),
    );
    step(c, "trap-mmio/uart-dr-write", &running, uart(&config, offset::DR, true, u32::from(b'A')), |a| {
        matches!(a, [Action::ConsoleWrite { .. }, .., Action::AdvancePc])
    });
    step(c, "trap-mmio/uart-fr-read", &running, uart(&config, offset::FR, false, 0), |a| {
        matches!(a, [Action::SetReg { .. }, Action::AdvancePc])
    });
    step(
        c,
        "trap-data-abort-no-syndrome",
        &running,
        trap(0, Trap::DataAbortNoSyndrome { ipa: config.uart.base, far: 0xf900_0000, write: true }),
        |a| matches!(a, [Action::InjectDataAbort { .. }]),
    );
    step(
        c,
        "trap-prefetch-abort",
        &running,
        trap(0, Trap::PrefetchAbort { ipa: 0x0a00_0000, far: 0xfa00_0000 }),
        |a| matches!(a, [Action::InjectPrefetchAbort { .. }]),
    );
    step(c, "trap-cp15/actlr-read", &running, cp15(1, enc::ACTLR, false, 0), |a| {
        matches!(a, [Action::SetReg { .. }, Action::AdvancePc])
    });
    step(c, "trap-cp15/dccisw", &running, cp15(1, enc::DCCISW, true, 0x4000_0040), |a| {
        matches!(a, [Action::CleanInvalidateDcache, Action::AdvancePc])
    });
    step(
        c,
        "trap-cp15-wide",
        &running,
        trap(1, Trap::Cp15Wide(Cp15WideAccess { opc1: 1, crm: 2, write: false, rt: 0, rt2: 1, value: 0 })),
        |a| matches!(a, [Action::InjectUndef]),
    );
    step(c, "trap-wfi", &running, trap(1, Trap::Wfi), |a| matches!(a, [Action::AdvancePc, Action::Send(_)]));
    step(c, "trap-wfe", &running, trap(1, Trap::Wfe), |a| matches!(a, [Action::AdvancePc]));
    step(c, "trap-unknown", &running, trap(1, Trap::Unknown { hsr: 0x0200_0000 }), |a| {
        matches!(a, [Action::InjectUndef])
    });
    let mut bytes = ipc::msg::InputBytes::new();
    // Cannot fail: 4 bytes fit.
    let _ = bytes.extend_from_slice(b"ls\r\n");
    step(c, "console-input", &running, VcpuRequest::ConsoleInput { bytes }, |a| {
        a.iter().any(|a| matches!(a, Action::ConsoleReady { .. }))
    });
}

criterion_group!(benches, handle);
criterion_main!(benches);
