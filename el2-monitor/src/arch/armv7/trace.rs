//! Trace recording: with `VmConfig::trace`, every request a server handles
//! and its reply go to the host as `ipc::trace::TraceRecord`s in host-link
//! records, after a first record with the configuration (from which a
//! replay builds every server's initial state). Nothing is buffered: a
//! record is on the wire before the server's lock is released.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipc::hostlink::RecordKind;
use ipc::trace::TraceRecord;
use ipc::{Message, Reply, ServerError, ServerId, VmConfig};

use super::hostlink;

static ON: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The largest encoded record: a reply of MAX_ACTIONS actions, each at most
/// a console write's 32 bytes and change.
const RECORD_BYTES: usize = 1024;

fn emit(record: &TraceRecord) {
    let mut buf = [0u8; RECORD_BYTES];
    match ipc::wire::encode(record, &mut buf) {
        Ok(bytes) => hostlink::record(RecordKind::Trace, bytes),
        Err(e) => log::error!("trace record not encoded ({e}): {record:?}"),
    }
}

/// Start recording: the configuration first.
pub fn start(config: &VmConfig) {
    emit(&TraceRecord::Config(config.clone()));
    ON.store(true, Ordering::Relaxed);
}

/// Record a request; its sequence number, when recording.
pub fn request(message: &Message) -> Option<u64> {
    // Relaxed: `start` runs on the boot CPU before the VM is published
    // (`VM`'s `Once`), and a request is only recorded once it is, which
    // orders the flag and the configuration's record before it.
    if !ON.load(Ordering::Relaxed) {
        return None;
    }
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    emit(&TraceRecord::Request { seq, message: *message });
    Some(seq)
}

/// Record the reply to request `seq`.
pub fn reply(seq: u64, server: ServerId, result: &Result<Reply, ServerError>) {
    emit(&TraceRecord::Reply { seq, server, result: result.clone() });
}
