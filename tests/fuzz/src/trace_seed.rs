//! Seeds from recorded traces (`splitvisor run --trace FILE`): one server's
//! requests in the order the server handled them, with the VM configuration
//! they started from, in a format the server targets recognise beside their
//! structured input.
//!
//! Format: [`MAGIC`], then a postcard-encoded `(VmConfig, Vec<R>)` where `R`
//! is the server's request type. `examples/trace_seeds.rs` writes them; a
//! target replays the requests from the server's initial state with every
//! check that holds for any input, and libFuzzer's mutations of the tail
//! explore around the states a real guest reaches.

use ipc::VmConfig;
use serde::{de::DeserializeOwned, Serialize};

/// What starts a trace seed ("SPVS": splitvisor seed).
pub const MAGIC: [u8; 4] = *b"SPVS";

/// Encode a seed.
pub fn encode<R: Serialize>(config: &VmConfig, requests: &[R]) -> Result<Vec<u8>, postcard::Error> {
    let mut out = MAGIC.to_vec();
    out.extend(postcard::to_allocvec(&(config, requests))?);
    Ok(out)
}

/// Decode a seed: `None` for anything that is not one (the target then
/// reads its structured input), or whose configuration the monitor would
/// refuse.
pub fn decode<R: DeserializeOwned>(data: &[u8]) -> Option<(VmConfig, Vec<R>)> {
    let body = data.strip_prefix(&MAGIC)?;
    // Trailing bytes (a mutation that appended some) are ignored.
    let ((config, requests), _rest): ((VmConfig, Vec<R>), _) = postcard::take_from_bytes(body).ok()?;
    config.validate().ok()?;
    Some((config, requests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::{VcpuId, VcpuRequest};

    #[test]
    fn round_trip_and_refusals() {
        let config = crate::config::qemu_virt(1);
        let requests = vec![VcpuRequest::Start { vcpu: VcpuId(0) }];
        let seed = encode(&config, &requests).expect("encodes");
        assert_eq!(decode::<VcpuRequest>(&seed), Some((config.clone(), requests.clone())));
        assert_eq!(decode::<VcpuRequest>(&seed[4..]), None, "no magic");
        assert_eq!(decode::<VcpuRequest>(&seed[..seed.len() - 1]), None, "truncated");
        let mut bad = config;
        bad.vcpus = 0;
        assert_eq!(decode::<VcpuRequest>(&encode(&bad, &requests).expect("encodes")), None, "invalid configuration");
    }
}
