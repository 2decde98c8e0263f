//! Traces: `splitvisor run --trace FILE` records what crosses the monitor's
//! router (the configuration, then every request to a server and its reply,
//! in the order each server handled them); `splitvisor trace show` prints a
//! trace; `splitvisor replay` runs the servers on the host from their
//! initial states, feeds each its recorded requests and compares every reply
//! with the recorded one.
//!
//! The file is a sequence of COBS frames (each ended by a zero byte), each a
//! postcard-encoded [`TraceRecord`] — the same bytes the monitor sent in its
//! trace records on the host link.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipc::trace::TraceRecord;
use ipc::{Message, Reply, Server, ServerError, ServerId, VmConfig};
use vcpu_server::VcpuServer;
use vgic_server::VgicServer;
use vtimer_server::VtimerServer;

/// Why a trace could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record does not decode.
    #[error("{path}: damaged record #{index} at byte offset {offset}: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The record's number (from 0).
        index: usize,
        /// Where it starts.
        offset: usize,
        /// What is wrong.
        why: String,
    },
    /// The records do not make a trace (no configuration first, a reply to
    /// a request never made, ...).
    #[error("{path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Where the loader writes trace records while a VM runs.
#[derive(Clone, Debug)]
pub struct TraceSink {
    out: Arc<Mutex<BufWriter<File>>>,
    path: PathBuf,
}

impl TraceSink {
    /// Create (or truncate) the trace file.
    pub fn create(path: &Path) -> Result<TraceSink, TraceError> {
        let file = File::create(path).map_err(|source| TraceError::Io { path: path.into(), source })?;
        Ok(TraceSink { out: Arc::new(Mutex::new(BufWriter::new(file))), path: path.into() })
    }

    /// Append one record's payload (postcard bytes) as a COBS frame.
    pub fn append(&self, payload: &[u8]) -> Result<(), TraceError> {
        let mut frame = Vec::with_capacity(payload.len() + payload.len() / 254 + 2);
        ipc::hostlink::encode_cobs(payload, &mut |b| frame.push(b));
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(&frame).map_err(|source| TraceError::Io { path: self.path.clone(), source })
    }

    /// Write what is buffered.
    pub fn flush(&self) -> Result<(), TraceError> {
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        out.flush().map_err(|source| TraceError::Io { path: self.path.clone(), source })
    }
}

/// Read every record of a trace file.
pub fn read(path: &Path) -> Result<Vec<TraceRecord>, TraceError> {
    let bytes = std::fs::read(path).map_err(|source| TraceError::Io { path: path.into(), source })?;
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut plain).map_err(|e| TraceError::Malformed {
            path: path.into(),
            why: format!("a damaged gzip stream (offsets below count the uncompressed trace): {e}"),
        })?;
        return parse(path, &plain);
    }
    parse(path, &bytes)
}

/// The start of a gzip member (RFC 1952: ID1, ID2, CM = deflate). A trace
/// never starts so: it starts with its configuration record, whose postcard
/// tag is a zero byte, so its COBS frame starts with the code byte 0x01.
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<TraceRecord>, TraceError> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let damaged = |why: String| TraceError::Damaged { path: path.into(), index: records.len(), offset, why };
        let Some(len) = bytes[offset..].iter().position(|&b| b == 0) else {
            return Err(damaged("the file ends inside the record (truncated)".into()));
        };
        let mut frame = bytes[offset..=offset + len].to_vec();
        let record = ipc::trace::decode_record(&mut frame).map_err(|e| damaged(e.to_string()))?;
        records.push(record);
        offset += len + 1;
    }
    Ok(records)
}

/// One line per record.
pub fn describe(record: &TraceRecord) -> String {
    match record {
        TraceRecord::Config(c) => {
            let isolation = match (c.isolation, c.domains) {
                (false, _) => "no isolation".to_string(),
                (true, domains) => format!(
                    "isolation{}, a checkpoint every {} requests, a {} ms watchdog budget",
                    if domains { "" } else { " without protection domains" },
                    c.containment.checkpoint_every,
                    c.containment.budget_ms
                ),
            };
            format!(
                "config: {} vCPU(s), RAM {:#x}+{:#x}, entry {:#x}, WFI {}, virtual timer {}, {isolation}",
                c.vcpus,
                c.ram.ipa,
                c.ram.size,
                c.entry,
                match c.wfi {
                    ipc::WfiPolicy::Trap => "trapped",
                    ipc::WfiPolicy::Native => "native",
                },
                match c.vtimer {
                    ipc::VtimerDelivery::Masked => "masked",
                    ipc::VtimerDelivery::Linked => "linked",
                }
            )
        }
        TraceRecord::Request { seq, message } => format!("#{seq} -> {}: {message:?}", message.server().name()),
        TraceRecord::Reply { seq, server, result: Ok(reply) } => {
            format!("#{seq} <- {}: {:?}", server.name(), reply.actions)
        }
        TraceRecord::Reply { seq, server, result: Err(e) } => format!("#{seq} <- {}: refused: {e}", server.name()),
    }
}

/// The name of a request's kind, for the summary: "vgic Sync", or for a
/// trap "vcpu Trap Hvc".
fn kind(message: &Message) -> String {
    let server = message.server().name();
    let request = message.request_name();
    if let Message::Vcpu(ipc::VcpuRequest::Trap(t)) = message {
        // The trap's variant name, as its Debug form begins ("Hvc { .. }").
        let debug = format!("{:?}", t.trap);
        let trap = debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("?");
        format!("{server} {request} {trap}")
    } else {
        format!("{server} {request}")
    }
}

/// `splitvisor trace show`: every record, then a summary per server and
/// request kind.
pub fn show(path: &Path, json: bool, out: &mut impl Write) -> Result<(), TraceError> {
    let records = read(path)?;
    let io = |source| TraceError::Io { path: PathBuf::from("standard output"), source };
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for record in &records {
        if json {
            let line = serde_json::to_string(record)
                .map_err(|e| TraceError::Malformed { path: path.into(), why: e.to_string() })?;
            writeln!(out, "{line}").map_err(io)?;
        } else {
            writeln!(out, "{}", describe(record)).map_err(io)?;
        }
        if let TraceRecord::Request { message, .. } = record {
            *kinds.entry(kind(message)).or_default() += 1;
        }
    }
    if !json {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        writeln!(out, "summary: {} records", records.len()).map_err(io)?;
        for (kind, n) in kinds {
            writeln!(out, "  {n:>9}  {kind}").map_err(io)?;
        }
    }
    Ok(())
}

/// The servers of one VM, on the host.
struct Servers {
    vcpu: VcpuServer,
    vgic: VgicServer,
    vtimer: VtimerServer,
}

impl Servers {
    fn new(config: &VmConfig) -> Servers {
        Servers { vcpu: VcpuServer::new(config), vgic: VgicServer::new(config), vtimer: VtimerServer::new(config) }
    }

    fn handle(&mut self, message: Message) -> Result<Reply, ServerError> {
        match message.server() {
            ServerId::Vcpu => self.vcpu.handle_message(message),
            ServerId::Vgic => self.vgic.handle_message(message),
            ServerId::Vtimer => self.vtimer.handle_message(message),
        }
    }
}

/// How a replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Every reply matched: counts per server ([`ServerId::index`]).
    Matched([u64; 3]),
    /// The first reply that did not.
    Diverged(Box<Divergence>),
}

/// The first reply a replay found different from the recorded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The record's number in the file.
    pub index: usize,
    /// The request's sequence number.
    pub seq: u64,
    /// The server.
    pub server: ServerId,
    /// The request.
    pub request: Message,
    /// What the trace says it answered.
    pub expected: Result<Reply, ServerError>,
    /// What it answers now.
    pub actual: Result<Reply, ServerError>,
}

/// A server's answer during a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The reply or the error.
    pub result: Result<Reply, ServerError>,
    /// The server failed on the message and the answer is the fault
    /// policy's, not the server's.
    pub by_policy: bool,
}

/// What a replay runs the servers on: this process, or supervised server
/// processes ([`crate::isolate`]).
pub trait Backend {
    /// Why it could not go on.
    type Halt;
    /// Start (or start again, after a guest reset) the servers of the VM
    /// `config` describes.
    fn boot(&mut self, config: &VmConfig) -> Result<(), Self::Halt>;
    /// Deliver one message to its server.
    fn handle(&mut self, message: &Message) -> Result<Answer, Self::Halt>;
}

/// The servers in this process.
#[derive(Default)]
struct InProcess(Option<Servers>);

impl Backend for InProcess {
    type Halt = std::convert::Infallible;

    fn boot(&mut self, config: &VmConfig) -> Result<(), Self::Halt> {
        self.0 = Some(Servers::new(config));
        Ok(())
    }

    fn handle(&mut self, message: &Message) -> Result<Answer, Self::Halt> {
        let result = match self.0.as_mut() {
            Some(servers) => servers.handle(*message),
            // The driver boots before it delivers.
            None => Err(ServerError::Unexpected),
        };
        Ok(Answer { result, by_policy: false })
    }
}

/// How a replay on a [`Backend`] ended.
#[derive(Debug)]
pub enum End<H> {
    /// Every reply matched (those answered by policy aside).
    Completed,
    /// The first reply of a server that differs from the recorded one.
    Diverged(Box<Divergence>),
    /// The backend could not go on at record `index`.
    Halted {
        /// The record of the request.
        index: usize,
        /// Why.
        halt: H,
    },
}

/// A replay on a [`Backend`].
#[derive(Debug)]
pub struct Driven<H> {
    /// Requests delivered per server ([`ServerId::index`]).
    pub counts: [u64; 3],
    /// How it ended.
    pub end: End<H>,
    /// Requests answered by the fault policy.
    pub policy_answers: u64,
    /// Of those, the ones whose answer differs from the recorded reply.
    pub policy_divergences: u64,
    /// The first of those.
    pub first_policy_divergence: Option<Box<Divergence>>,
}

/// `splitvisor replay`.
pub fn replay(path: &Path) -> Result<Replayed, TraceError> {
    let records = read(path)?;
    replay_records(path, &records)
}

fn replay_records(path: &Path, records: &[TraceRecord]) -> Result<Replayed, TraceError> {
    let driven = drive(path, records, &mut InProcess::default())?;
    Ok(match driven.end {
        End::Completed => Replayed::Matched(driven.counts),
        End::Diverged(d) => Replayed::Diverged(d),
        End::Halted { halt, .. } => match halt {},
    })
}

/// Replay `records` (read from `path`) on `backend`: boot it on each
/// configuration, deliver each request, compare each reply with the
/// recorded one. A server's reply that differs ends the replay; an answer
/// by the fault policy that differs is counted and the replay goes on (as
/// the VM would).
pub fn drive<B: Backend>(path: &Path, records: &[TraceRecord], backend: &mut B) -> Result<Driven<B::Halt>, TraceError> {
    let malformed = |why: String| TraceError::Malformed { path: path.into(), why };
    let mut booted = false;
    let mut answered: HashMap<u64, (Message, Answer)> = HashMap::new();
    let mut driven = Driven {
        counts: [0; 3],
        end: End::Completed,
        policy_answers: 0,
        policy_divergences: 0,
        first_policy_divergence: None,
    };
    for (index, record) in records.iter().enumerate() {
        match record {
            // A new boot (the first, or after a guest reset).
            TraceRecord::Config(config) => {
                config.validate().map_err(|e| malformed(format!("record #{index}: configuration invalid: {e}")))?;
                if let Err(halt) = backend.boot(config) {
                    driven.end = End::Halted { index, halt };
                    return Ok(driven);
                }
                booted = true;
                answered.clear();
            }
            TraceRecord::Request { seq, message } => {
                if !booted {
                    return Err(malformed(format!("record #{index}: a request before the configuration")));
                }
                let answer = match backend.handle(message) {
                    Ok(answer) => answer,
                    Err(halt) => {
                        driven.end = End::Halted { index, halt };
                        return Ok(driven);
                    }
                };
                driven.counts[message.server().index()] += 1;
                driven.policy_answers += u64::from(answer.by_policy);
                answered.insert(*seq, (*message, answer));
            }
            TraceRecord::Reply { seq, server, result } => {
                let (request, answer) = answered.remove(seq).ok_or_else(|| {
                    malformed(format!("record #{index}: a reply to request #{seq}, which was never made"))
                })?;
                if answer.result != *result || request.server() != *server {
                    let divergence = Box::new(Divergence {
                        index,
                        seq: *seq,
                        server: *server,
                        request,
                        expected: result.clone(),
                        actual: answer.result,
                    });
                    if answer.by_policy {
                        driven.policy_divergences += 1;
                        driven.first_policy_divergence.get_or_insert(divergence);
                        continue;
                    }
                    driven.end = End::Diverged(divergence);
                    return Ok(driven);
                }
            }
        }
    }
    if !booted {
        return Err(malformed("no configuration record: not a trace".into()));
    }
    Ok(driven)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::{Action, TrapMsg, VcpuId, VcpuRequest};

    fn config() -> ipc::VmConfig {
        ipc::VmConfig { vcpus: 1, trace: true, ..ipc::VmConfig::example(1) }
    }

    /// Record a run the way the monitor does: each request, then the real
    /// server's reply.
    fn recorded(requests: &[Message]) -> Vec<TraceRecord> {
        let c = config();
        let mut servers = Servers::new(&c);
        let mut records = vec![TraceRecord::Config(c)];
        for (seq, m) in requests.iter().enumerate() {
            let seq = seq as u64;
            records.push(TraceRecord::Request { seq, message: *m });
            records.push(TraceRecord::Reply { seq, server: m.server(), result: servers.handle(*m) });
        }
        records
    }

    #[test]
    fn the_configuration_line_says_how_servers_were_contained() {
        let line = describe(&TraceRecord::Config(config()));
        assert_eq!(
            line,
            "config: 1 vCPU(s), RAM 0x40000000+0x8000000, entry 0x40008000, WFI trapped, virtual timer linked, \
             isolation, a checkpoint every 128 requests, a 100 ms watchdog budget"
        );
        let c = ipc::VmConfig {
            domains: false,
            wfi: ipc::WfiPolicy::Native,
            vtimer: ipc::VtimerDelivery::Masked,
            containment: ipc::Containment { checkpoint_every: 7, budget_ms: 9 },
            ..config()
        };
        let line = describe(&TraceRecord::Config(c));
        assert!(
            line.ends_with(
                "WFI native, virtual timer masked, isolation without protection domains, a checkpoint every 7 \
                 requests, a 9 ms watchdog budget"
            ),
            "{line}"
        );
        let c = ipc::VmConfig { isolation: false, ..config() };
        assert!(describe(&TraceRecord::Config(c)).ends_with(", no isolation"));
    }

    fn hvc(function: u32) -> Message {
        Message::Vcpu(VcpuRequest::Trap(TrapMsg {
            vcpu: VcpuId(0),
            trap: ipc::Trap::Hvc { imm: 0, args: [function, 0, 0, 0] },
            pc: 0x4001_0000,
            cpsr: 0x1d3,
        }))
    }

    fn requests() -> Vec<Message> {
        vec![
            Message::Vcpu(VcpuRequest::Start { vcpu: VcpuId(0) }),
            hvc(0x8400_0000),
            hvc(0x8400_00ff),
            Message::Vgic(ipc::VgicRequest::Start { vcpu: VcpuId(0), list_registers: 4 }),
        ]
    }

    fn write(dir: &Path, records: &[TraceRecord]) -> PathBuf {
        let path = dir.join("t.trace");
        let sink = TraceSink::create(&path).unwrap();
        for r in records {
            let mut buf = [0u8; 2048];
            sink.append(ipc::wire::encode(r, &mut buf).unwrap()).unwrap();
        }
        sink.flush().unwrap();
        path
    }

    #[test]
    fn a_faithful_trace_replays_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &recorded(&requests()));
        assert_eq!(read(&path).unwrap().len(), 9);
        assert_eq!(replay(&path).unwrap(), Replayed::Matched([3, 1, 0]));
        let mut text = Vec::new();
        show(&path, false, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("#1 -> vcpu: Vcpu(Trap("), "{text}");
        assert!(text.contains("summary: 9 records"), "{text}");
        assert!(text.contains("2  vcpu Trap Hvc"), "{text}");
        let mut json = Vec::new();
        show(&path, true, &mut json).unwrap();
        assert_eq!(String::from_utf8(json).unwrap().lines().count(), 9);
    }

    #[test]
    fn an_altered_reply_is_the_first_divergence() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = recorded(&requests());
        // Make the PSCI_VERSION answer claim 0.2.
        if let TraceRecord::Reply { result: Ok(reply), .. } = &mut records[4] {
            let mut actions = reply.actions.to_vec();
            actions[0] = Action::SetReg { reg: ipc::GuestReg::Gpr(0), value: 2 };
            reply.actions = actions.into_iter().collect();
        }
        let path = write(dir.path(), &records);
        match replay(&path).unwrap() {
            Replayed::Diverged(d) => {
                assert_eq!((d.index, d.seq, d.server), (4, 1, ServerId::Vcpu));
                assert_ne!(d.expected, d.actual);
            }
            other => panic!("not a divergence: {other:?}"),
        }
    }

    #[test]
    fn damaged_and_truncated_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &recorded(&requests()));
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.trace");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let err = read(&cut).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("record #8"), "{err}");
        let mut garbage = bytes.clone();
        garbage[3] ^= 0xff;
        garbage[4] ^= 0x5a;
        let bad = dir.path().join("bad.trace");
        std::fs::write(&bad, &garbage).unwrap();
        assert!(read(&bad).is_err() || replay(&bad).is_err() || matches!(replay(&bad), Ok(Replayed::Diverged(_))));
        let empty = dir.path().join("empty.trace");
        std::fs::write(&empty, b"").unwrap();
        assert!(replay(&empty).unwrap_err().to_string().contains("not a trace"));
        // Every truncation: an error or a replay, never a panic.
        for n in 0..bytes.len() {
            let _ = parse(&cut, &bytes[..n]).map(|r| replay_records(&cut, &r));
        }
    }
}
