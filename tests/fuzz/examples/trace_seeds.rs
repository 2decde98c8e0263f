//! Turn a recorded trace (`splitvisor run --trace FILE`) into seeds for the
//! server fuzz targets: for each server, the longest prefix of its requests
//! that fits a seed of `--max-bytes` (4 KiB by default), with the trace's VM
//! configuration, in the format of `splitvisor_fuzz::trace_seed`.
//!
//! ```sh
//! cd tests/fuzz
//! cargo run --example trace_seeds -- TRACE [OUT_DIR] [--max-bytes N]
//! ```
//!
//! writes `OUT_DIR/{vcpu,vgic,vtimer}_server/trace-<name>` (`OUT_DIR`
//! defaults to `corpus`). Prefixes, because a server's state at a request is
//! made by every request before it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ipc::trace::TraceRecord;
use ipc::{Message, VmConfig};
use serde::Serialize;
use splitvisor_fuzz::trace_seed;

fn write_seed<R: Serialize>(
    dir: &Path,
    name: &str,
    config: &VmConfig,
    requests: &[R],
    max_bytes: usize,
) -> Result<usize, String> {
    // The longest prefix that fits (binary search on the encoded size).
    let fits = |n: usize| trace_seed::encode(config, &requests[..n]).map(|s| s.len() <= max_bytes).unwrap_or(false);
    let (mut lo, mut hi) = (0, requests.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return Ok(0);
    }
    let seed = trace_seed::encode(config, &requests[..lo]).map_err(|e| format!("cannot encode a seed: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("trace-{name}"));
    std::fs::write(&path, seed).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(lo)
}

fn run(args: &[String]) -> Result<(), String> {
    let mut positional = Vec::new();
    let mut max_bytes = 4096;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--max-bytes" {
            max_bytes =
                it.next().and_then(|n| n.parse().ok()).ok_or_else(|| "--max-bytes needs a number".to_string())?;
        } else {
            positional.push(a.as_str());
        }
    }
    let [trace, rest @ ..] = positional.as_slice() else {
        return Err("usage: trace_seeds TRACE [OUT_DIR] [--max-bytes N]".into());
    };
    let out = PathBuf::from(rest.first().copied().unwrap_or("corpus"));
    let records = loader::trace::read(Path::new(trace)).map_err(|e| e.to_string())?;
    let Some(TraceRecord::Config(config)) = records.first() else {
        return Err(format!("{trace}: does not start with the VM configuration"));
    };
    let (mut vcpu, mut vgic, mut vtimer) = (Vec::new(), Vec::new(), Vec::new());
    for record in &records {
        if let TraceRecord::Request { message, .. } = record {
            match *message {
                Message::Vcpu(r) => vcpu.push(r),
                Message::Vgic(r) => vgic.push(r),
                Message::Vtimer(r) => vtimer.push(r),
            }
        }
    }
    let name = Path::new(trace).file_stem().and_then(|s| s.to_str()).unwrap_or("trace");
    let written = [
        ("vcpu_server", write_seed(&out.join("vcpu_server"), name, config, &vcpu, max_bytes)?, vcpu.len()),
        ("vgic_server", write_seed(&out.join("vgic_server"), name, config, &vgic, max_bytes)?, vgic.len()),
        ("vtimer_server", write_seed(&out.join("vtimer_server"), name, config, &vtimer, max_bytes)?, vtimer.len()),
    ];
    for (target, n, of) in written {
        println!("{target}: the first {n} of {of} requests");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace_seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
