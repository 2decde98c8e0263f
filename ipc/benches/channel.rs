//! Host benchmark: one request/reply round trip over the channel transport
//! ([`ipc::transport::channel`]: the server on its own thread, crossbeam
//! channels between), against the same request through [`Direct`] (a
//! function call), so that what the channel itself costs is visible.
//!
//! The server here answers every request at once with a fixed two-action
//! reply (what a PSCI call gets), so the figures are the transport's; what
//! the real servers take per request is in their own `handle` benches.
//!
//! `cargo bench -p ipc --features std --bench channel`; the figures are in
//! tests/perf/host.md (issue 8's target: a round trip within 1 µs).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ipc::transport::{channel, Direct, Endpoint};
use ipc::{Action, GuestReg, Message, Reply, Server, ServerError, ServerId, Trap, TrapMsg, VcpuId, VcpuRequest};

/// A server that answers every vCPU request as a PSCI_VERSION call is
/// answered: r0 = 1.0, step past the HVC.
struct Answering;

impl Server for Answering {
    const ID: ServerId = ServerId::Vcpu;
    type Request = VcpuRequest;

    fn handle_into(&mut self, request: &VcpuRequest, reply: &mut Reply) -> Result<(), ServerError> {
        match request {
            VcpuRequest::Trap(_) => {
                Ok(reply.extend([Action::SetReg { reg: GuestReg::Gpr(0), value: 0x0001_0000 }, Action::AdvancePc])?)
            }
            _ => Err(ServerError::Unexpected),
        }
    }

    fn request_of(message: &Message) -> Result<&VcpuRequest, ServerError> {
        match message {
            Message::Vcpu(request) => Ok(request),
            _ => Err(ServerError::WrongServer),
        }
    }
}

/// A null hypercall (PSCI_VERSION) from vCPU 0.
fn hvc() -> Message {
    Message::Vcpu(VcpuRequest::Trap(TrapMsg {
        vcpu: VcpuId(0),
        trap: Trap::Hvc { imm: 0, args: [0x8400_0000, 0, 0, 0] },
        pc: 0xc010_8a44,
        cpsr: 0x6000_0193,
    }))
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport/round-trip");
    let mut direct = Direct(Answering);
    group.bench_function("direct", |b| b.iter(|| direct.call(black_box(hvc()))));

    // A time-out far beyond any figure measured, so that a slow machine
    // shows as a slow round trip, not as an error.
    let (mut client, server) = channel::spawn(Answering, Duration::from_secs(10));
    match client.call(hvc()) {
        Ok(reply) => assert_eq!(reply.actions.len(), 2),
        Err(e) => panic!("channel server does not answer: {e}"),
    }
    group.bench_function("channel", |b| {
        b.iter(|| match client.call(black_box(hvc())) {
            Ok(reply) => reply,
            Err(e) => panic!("channel round trip failed: {e}"),
        })
    });
    group.finish();
    drop(client);
    if server.join().is_err() {
        panic!("the channel server thread panicked");
    }
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
