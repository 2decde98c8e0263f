//! What the supervisor and a server process say to each other over the
//! server process's standard input and output.
//!
//! Each frame is an `ipc` [`ipc::Envelope`] in ipc's byte-stream framing
//! ([`ipc::transport::stream::FramedStream`]: postcard, COBS, at most
//! [`ipc::MAX_MESSAGE_SIZE`] bytes), carrying the server instance's
//! generation so that a frame from an instance the supervisor has given up on
//! is recognised. The body is one of the enums below rather than a bare
//! [`ipc::Message`] (what `ipc::transport::stream::serve` speaks), because
//! the supervisor also hands a new instance its start state and asks for
//! checkpoints; a server state does not fit in one frame, so it travels in
//! [`STATE_CHUNK`]-byte pieces.

use ipc::transport::stream::FramedStream;
use ipc::transport::TransportError;
use ipc::{Message, Reply, Server, ServerError, ServerId, VmConfig};
use serde::{Deserialize, Serialize};
use vcpu_server::VcpuServer;
use vgic_server::VgicServer;
use vtimer_server::VtimerServer;

/// The most state bytes one frame carries (with its envelope it stays well
/// inside [`ipc::MAX_MESSAGE_SIZE`]).
pub const STATE_CHUNK: usize = 384;

/// The largest server state either side accepts (the real ones are a few
/// KiB): a bound on what a confused peer can make the other allocate.
pub const MAX_STATE: usize = 16 << 20;

/// From the supervisor to a server process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToServer {
    /// A piece of the state to start from (postcard bytes of the server
    /// value), sent in order before [`ToServer::Begin`].
    State {
        /// The length of the whole state.
        total: u32,
        /// This piece.
        bytes: Vec<u8>,
    },
    /// The state is complete: start serving. Messages numbered up to
    /// `attempted_through` were delivered to an earlier instance already, so
    /// a transient injected fault does not fire on them again.
    Begin {
        /// The highest message number delivered before.
        attempted_through: u64,
    },
    /// Handle message number `number` (counted from 1 per server).
    Handle {
        /// The message's number.
        number: u64,
        /// The message.
        message: Message,
    },
    /// Send the current state (for a checkpoint).
    Snapshot,
}

/// From a server process to the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromServer {
    /// The start state was taken in.
    Ready,
    /// The answer to a [`ToServer::Handle`].
    Reply(Box<Result<Reply, ServerError>>),
    /// A piece of the state asked for with [`ToServer::Snapshot`].
    State {
        /// The length of the whole state.
        total: u32,
        /// This piece.
        bytes: Vec<u8>,
    },
}

/// One of the three servers, as a value that can be handled, encoded and
/// decoded by its id (each boxed: their sizes differ by kilobytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyServer {
    /// The vCPU server.
    Vcpu(Box<VcpuServer>),
    /// The vGIC server.
    Vgic(Box<VgicServer>),
    /// The virtual-timer server.
    Vtimer(Box<VtimerServer>),
}

impl AnyServer {
    /// Server `id` in the initial state `config` gives it.
    pub fn new(id: ServerId, config: &VmConfig) -> AnyServer {
        match id {
            ServerId::Vcpu => AnyServer::Vcpu(Box::new(VcpuServer::new(config))),
            ServerId::Vgic => AnyServer::Vgic(Box::new(VgicServer::new(config))),
            ServerId::Vtimer => AnyServer::Vtimer(Box::new(VtimerServer::new(config))),
        }
    }

    /// Which server this is.
    pub fn id(&self) -> ServerId {
        match self {
            AnyServer::Vcpu(_) => ServerId::Vcpu,
            AnyServer::Vgic(_) => ServerId::Vgic,
            AnyServer::Vtimer(_) => ServerId::Vtimer,
        }
    }

    /// Handle one message.
    pub fn handle(&mut self, message: Message) -> Result<Reply, ServerError> {
        match self {
            AnyServer::Vcpu(s) => s.handle_message(message),
            AnyServer::Vgic(s) => s.handle_message(message),
            AnyServer::Vtimer(s) => s.handle_message(message),
        }
    }

    /// The state as postcard bytes.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            AnyServer::Vcpu(s) => postcard::to_stdvec(s),
            AnyServer::Vgic(s) => postcard::to_stdvec(s),
            AnyServer::Vtimer(s) => postcard::to_stdvec(s),
        }
    }

    /// Server `id` from postcard bytes (all of them).
    pub fn decode(id: ServerId, bytes: &[u8]) -> Result<AnyServer, postcard::Error> {
        fn exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
            match postcard::take_from_bytes(bytes)? {
                (value, []) => Ok(value),
                _ => Err(postcard::Error::DeserializeBadEncoding),
            }
        }
        Ok(match id {
            ServerId::Vcpu => AnyServer::Vcpu(Box::new(exact(bytes)?)),
            ServerId::Vgic => AnyServer::Vgic(Box::new(exact(bytes)?)),
            ServerId::Vtimer => AnyServer::Vtimer(Box::new(exact(bytes)?)),
        })
    }
}

/// Why pieces of a state do not make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The announced length is beyond [`MAX_STATE`].
    #[error("a state of {0} bytes is beyond the limit")]
    TooLarge(u32),
    /// A piece announces another length than the first, or runs past it.
    #[error("the pieces of the state do not add up")]
    Inconsistent,
    /// A piece is empty although bytes are missing.
    #[error("an empty piece of state")]
    Empty,
}

/// Collects the pieces of a state.
#[derive(Debug, Default)]
pub struct StateBuffer {
    total: Option<u32>,
    bytes: Vec<u8>,
}

impl StateBuffer {
    /// Take one piece in; `Ok(true)` once the state is complete.
    pub fn add(&mut self, total: u32, piece: &[u8]) -> Result<bool, StateError> {
        if total as usize > MAX_STATE {
            return Err(StateError::TooLarge(total));
        }
        if *self.total.get_or_insert(total) != total || self.bytes.len() + piece.len() > total as usize {
            return Err(StateError::Inconsistent);
        }
        if piece.is_empty() && self.bytes.len() < total as usize {
            return Err(StateError::Empty);
        }
        self.bytes.extend_from_slice(piece);
        Ok(self.bytes.len() == total as usize)
    }

    /// The complete state.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Send `state` in pieces, each made into a frame body by `piece`, all with
/// sequence number `seq`. An empty state is one empty piece.
pub fn send_state<R, W, T>(
    stream: &mut FramedStream<R, W>,
    seq: u64,
    generation: u32,
    state: &[u8],
    piece: impl Fn(u32, Vec<u8>) -> T,
) -> Result<(), TransportError>
where
    R: std::io::Read,
    W: std::io::Write,
    T: Serialize,
{
    // MAX_STATE is far below u32::MAX; a larger state is refused whole.
    let total = u32::try_from(state.len())
        .ok()
        .filter(|&t| t as usize <= MAX_STATE)
        .ok_or(TransportError::Wire(ipc::WireError::TooLarge(state.len())))?;
    if state.is_empty() {
        return stream.send(seq, generation, &piece(0, Vec::new()));
    }
    for chunk in state.chunks(STATE_CHUNK) {
        stream.send(seq, generation, &piece(total, chunk.to_vec()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_state_survives_encoding() {
        let config = VmConfig::example(4);
        for id in ServerId::ALL {
            let server = AnyServer::new(id, &config);
            assert_eq!(server.id(), id);
            let bytes = server.encode().unwrap();
            assert_eq!(AnyServer::decode(id, &bytes).unwrap(), server);
            // Trailing or missing bytes are refused.
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(AnyServer::decode(id, &longer).is_err());
            assert!(AnyServer::decode(id, &bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn a_state_goes_through_a_stream_in_pieces() {
        let config = VmConfig::example(8);
        let state = AnyServer::new(ServerId::Vgic, &config).encode().unwrap();
        assert!(state.len() > STATE_CHUNK, "the test wants several pieces: {}", state.len());
        let mut wire = Vec::new();
        let mut out = FramedStream::new(std::io::empty(), &mut wire);
        send_state(&mut out, 1, 3, &state, |total, bytes| ToServer::State { total, bytes }).unwrap();
        let mut input = FramedStream::new(&wire[..], std::io::sink());
        let mut buffer = StateBuffer::default();
        loop {
            let frame = input.recv::<ToServer>().unwrap().unwrap();
            assert_eq!((frame.seq, frame.generation), (1, 3));
            let ToServer::State { total, bytes } = frame.body else { panic!("not a state piece") };
            if buffer.add(total, &bytes).unwrap() {
                break;
            }
        }
        assert_eq!(buffer.into_bytes(), state);
    }

    #[test]
    fn inconsistent_pieces_are_refused() {
        let mut b = StateBuffer::default();
        assert_eq!(b.add(u32::MAX, &[1]), Err(StateError::TooLarge(u32::MAX)));
        let mut b = StateBuffer::default();
        assert_eq!(b.add(4, &[1, 2]), Ok(false));
        assert_eq!(b.add(5, &[3]), Err(StateError::Inconsistent));
        assert_eq!(b.add(4, &[3, 4, 5]), Err(StateError::Inconsistent));
        assert_eq!(b.add(4, &[]), Err(StateError::Empty));
        assert_eq!(b.add(4, &[3, 4]), Ok(true));
        let mut b = StateBuffer::default();
        assert_eq!(b.add(0, &[]), Ok(true));
    }
}
