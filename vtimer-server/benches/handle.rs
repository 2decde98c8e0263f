//! Host benchmark: one [`VtimerServer::handle`] step per request kind, on a
//! server brought to a running guest's state first (both vCPUs of
//! `VmConfig::example(2)` started, vCPU 0's physical timer armed). Every
//! iteration handles the request on a fresh clone of that state (the clone
//! is not timed), so each measures the same step; each step's reply is
//! checked once first, so that it measures the path it is named after.
//!
//! `cargo bench -p vtimer-server --bench handle`; the figures are in
//! tests/perf/host.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipc::msg::TimerKind;
use ipc::{Action, Cp15Access, Cp15WideAccess, Message, Reply, Server, VcpuId, VgicRequest, VmConfig, VtimerRequest};
use vtimer_server::regs::{ctl, CNTPCT, CNTP_CTL, CNTP_CVAL, CNTP_TVAL};
use vtimer_server::VtimerServer;

/// A physical count well away from zero, as after a while of host uptime.
const T0: u64 = 0x0000_0123_4567_89ab;
/// One tick of a 100 Hz guest at 62.5 MHz.
const TICK: u64 = 625_000;

const V0: VcpuId = VcpuId(0);
const V1: VcpuId = VcpuId(1);

fn mrc_mcr(vcpu: VcpuId, (opc1, crn, crm, opc2): (u8, u8, u8, u8), write: bool, value: u32, now: u64) -> VtimerRequest {
    VtimerRequest::Cp15 { vcpu, access: Cp15Access { opc1, crn, crm, opc2, write, rt: 3, value }, now }
}

fn mrrc_mcrr(vcpu: VcpuId, (opc1, crm): (u8, u8), write: bool, value: u64, now: u64) -> VtimerRequest {
    VtimerRequest::Cp15Wide { vcpu, access: Cp15WideAccess { opc1, crm, write, rt: 4, rt2: 5, value }, now }
}

fn handled(server: &mut VtimerServer, request: VtimerRequest) -> Reply {
    match server.handle(request) {
        Ok(reply) => reply,
        Err(e) => panic!("setup: {request:?} refused: {e}"),
    }
}

/// Both vCPUs started; vCPU 0's physical timer enabled with its deadline
/// one tick after T0.
fn running(config: &VmConfig) -> VtimerServer {
    let mut s = VtimerServer::new(config);
    handled(&mut s, VtimerRequest::Start { vcpu: V0, now: T0 });
    handled(&mut s, VtimerRequest::Start { vcpu: V1, now: T0 + 1_000 });
    handled(&mut s, mrrc_mcrr(V0, CNTP_CVAL, true, T0 + TICK, T0 + 2_000));
    handled(&mut s, mrc_mcr(V0, CNTP_CTL, true, ctl::ENABLE, T0 + 3_000));
    s
}

/// Bench `request` on clones of `server`, after checking that its reply
/// passes `check`.
fn step(
    c: &mut Criterion,
    name: &str,
    server: &VtimerServer,
    request: VtimerRequest,
    check: impl Fn(&[Action]) -> bool,
) {
    let reply = handled(&mut server.clone(), request);
    assert!(check(&reply.actions.to_vec()), "{name}: unexpected reply {:?}", reply.actions);
    c.bench_function(&format!("vtimer/{name}"), |b| {
        // By reference: moving the server into the routine would time a
        // copy of its whole state.
        b.iter_batched_ref(
            || (server.clone(), Some(request)),
            |(s, r)| r.take().map(|r| s.handle(r)),
            BatchSize::SmallInput,
        )
    });
}

fn sets_line(actions: &[Action], level: bool) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Send(Message::Vgic(VgicRequest::SetLine { level: l, .. })) if *l == level))
}

fn handle(c: &mut Criterion) {
    // The bench's own report (user-facing output of this program).
    println!("vtimer: the server's state is {} bytes", std::mem::size_of::<VtimerServer>());
    let config = VmConfig { log_level: 0, ..VmConfig::example(2) };
    let running = running(&config);
    let now = T0 + 10_000;

    step(c, "start", &running, VtimerRequest::Start { vcpu: V1, now }, |a| {
        matches!(a, [Action::SetCntvoff { value: T0 }, Action::SetHypTimer { .. }])
    });
    step(c, "cp15/cntp-ctl-read", &running, mrc_mcr(V0, CNTP_CTL, false, 0, now), |a| {
        matches!(a, [Action::SetReg { value: 1, .. }, Action::AdvancePc])
    });
    // Linux's clockevent programs the next tick through TVAL.
    step(c, "cp15/cntp-tval-write", &running, mrc_mcr(V0, CNTP_TVAL, true, TICK as u32, now), |a| {
        matches!(a, [Action::AdvancePc, Action::SetHypTimer { deadline: Some(_) }])
    });
    step(c, "cp15/cntp-ctl-write (arm)", &running, mrc_mcr(V1, CNTP_CTL, true, ctl::ENABLE, now), |a| {
        matches!(a, [Action::AdvancePc, ..])
    });
    step(c, "cp15-wide/cntpct-read", &running, mrrc_mcrr(V0, CNTPCT, false, 0, now), |a| {
        matches!(a, [Action::SetReg { .. }, Action::SetReg { .. }, Action::AdvancePc])
    });
    step(c, "cp15-wide/cntp-cval-write", &running, mrrc_mcrr(V0, CNTP_CVAL, true, now + TICK, now), |a| {
        matches!(a, [Action::AdvancePc, Action::SetHypTimer { deadline: Some(_) }])
    });
    step(c, "fired/virtual", &running, VtimerRequest::Fired { vcpu: V1, timer: TimerKind::Virtual, now }, |a| {
        sets_line(a, true)
    });
    step(
        c,
        "fired/physical",
        &running,
        VtimerRequest::Fired { vcpu: V0, timer: TimerKind::Physical, now: T0 + TICK + 100 },
        |a| sets_line(a, true) && a.contains(&Action::SetHypTimer { deadline: None }),
    );
}

criterion_group!(benches, handle);
criterion_main!(benches);
