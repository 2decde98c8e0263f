//! Host benchmark: replay throughput, in requests per second per server, on
//! a recorded trace (`splitvisor run --trace FILE`).
//!
//! Each server is fed, from its initial state, the requests the trace holds
//! for it, in their recorded order (a server's state depends only on its own
//! requests), starting again from the initial state at each configuration
//! record (a guest reset). Only the `handle` calls are timed.
//!
//! The trace is read from the file `SPLITVISOR_BENCH_TRACE` names; none is
//! kept in the repository. To record one (a Linux boot on two vCPUs):
//!
//! ```text
//! splitvisor run --smp 2 --trace /tmp/boot.trace --timeout 120
//! SPLITVISOR_BENCH_TRACE=/tmp/boot.trace cargo bench -p loader --bench replay
//! ```
//!
//! Without the variable the benchmark says so and measures nothing.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipc::trace::TraceRecord;
use ipc::{Message, Reply, Server, ServerId, VmConfig};
use loader::trace::{self, Replayed};
use vcpu_server::VcpuServer;
use vgic_server::VgicServer;
use vtimer_server::VtimerServer;

/// The environment variable that names the trace.
const TRACE_VAR: &str = "SPLITVISOR_BENCH_TRACE";

/// One boot of the VM: its configuration and every request, in order.
struct Boot {
    config: VmConfig,
    requests: Vec<Message>,
}

fn boots(records: Vec<TraceRecord>) -> Vec<Boot> {
    let mut boots: Vec<Boot> = Vec::new();
    for record in records {
        match record {
            TraceRecord::Config(config) => boots.push(Boot { config, requests: Vec::new() }),
            TraceRecord::Request { message, .. } => {
                if let Some(boot) = boots.last_mut() {
                    boot.requests.push(message);
                }
            }
            TraceRecord::Reply { .. } => {}
        }
    }
    boots
}

/// Bench one server over the trace: `new` builds its initial state.
fn bench_server<S: Server>(c: &mut Criterion, boots: &[Boot], new: fn(&VmConfig) -> S)
where
    S::Request: Clone,
{
    let id = S::ID;
    // Each boot's requests for this server, unwrapped once, outside the timing.
    let requests: Vec<(VmConfig, Vec<S::Request>)> = boots
        .iter()
        .map(|boot| {
            let mine = boot.requests.iter().filter(|m| m.server() == id).filter_map(|m| S::request_of(m).ok().cloned());
            (boot.config.clone(), mine.collect())
        })
        .collect();
    let count: usize = requests.iter().map(|(_, r)| r.len()).sum();
    if count == 0 {
        println!("replay/{}: no requests in the trace", id.name());
        return;
    }
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(count as u64));
    // A whole replay is long: few samples suffice.
    group.sample_size(10);
    group.bench_function(id.name(), |b| {
        b.iter_batched(
            || requests.iter().map(|(config, reqs)| (new(config), reqs.clone())).collect::<Vec<_>>(),
            |runs| {
                // One reply, lent to every request, as the monitor does.
                let mut reply = Reply::none();
                let mut refused = 0usize;
                for (mut server, reqs) in runs {
                    for request in &reqs {
                        reply.clear();
                        refused += usize::from(server.handle_into(request, &mut reply).is_err());
                    }
                }
                refused
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    // The bench's own messages are its user-facing output.
    let Some(path) = std::env::var_os(TRACE_VAR).map(PathBuf::from) else {
        println!(
            "replay: skipped, no trace. Record one and name it in {TRACE_VAR}:\n  \
             splitvisor run --smp 2 --trace /tmp/boot.trace --timeout 120\n  \
             {TRACE_VAR}=/tmp/boot.trace cargo bench -p loader --bench replay"
        );
        return;
    };
    // The replay must reproduce the recorded replies, or the figures would
    // be for some other work than the recorded run's.
    match trace::replay(&path) {
        Ok(Replayed::Matched(counts)) => {
            for server in ServerId::ALL {
                println!("replay/{}: {} requests in {}", server.name(), counts[server.index()], path.display());
            }
        }
        Ok(Replayed::Diverged(d)) => panic!(
            "{}: the replay diverges at record #{} (request #{} to {}): not a trace of this build",
            path.display(),
            d.index,
            d.seq,
            d.server.name()
        ),
        Err(e) => panic!("{e}"),
    }
    let records = match trace::read(&path) {
        Ok(records) => records,
        Err(e) => panic!("{e}"),
    };
    let boots = boots(records);
    for (n, boot) in boots.iter().enumerate() {
        println!("replay: boot {n}: {} vCPU(s), {} requests", boot.config.vcpus, boot.requests.len());
    }
    bench_server(c, &boots, VcpuServer::new);
    bench_server(c, &boots, VgicServer::new);
    bench_server(c, &boots, VtimerServer::new);
}

criterion_group!(benches, replay);
criterion_main!(benches);
