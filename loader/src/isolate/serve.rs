//! `splitvisor serve SERVER`: one server in its own process, for the
//! supervisor of `splitvisor replay --isolate process` (hidden from
//! `--help`; nothing else should start it).
//!
//! It reads [`ToServer`] frames on standard input and answers with
//! [`FromServer`] frames on standard output: first the state to start from,
//! then messages to handle and requests for its state. It ends at the end of
//! its input.
//!
//! # Injected faults
//!
//! The `--inject` specifications ([`ipc::fault`]) are carried out here, in
//! the serving loop, never in the servers themselves:
//!
//! - `panic`: the process panics while it handles the message (`panic =
//!   "abort"` in every profile: it dies of SIGABRT).
//! - `wild-write`: the host cannot make a real wild write without `unsafe`
//!   (an out-of-bounds raw-pointer write is undefined behaviour in Rust and
//!   the servers forbid `unsafe`). What is simulated is its effect on a
//!   protected system: the server's memory is damaged (the loop overwrites
//!   its server's state with a bit-flipped copy, so nothing that process
//!   holds can be trusted) and the stray access is caught, which kills the
//!   process: it aborts (SIGABRT rather than the SIGSEGV of a real fault).
//!   The supervisor must then rebuild the state from its checkpoint and never
//!   from the dead process.
//! - `hang`: the process stops answering (sleeps for ever); the supervisor's
//!   time budget catches it.
//! - `bad-reply`: the server handles the message (its state changes), then
//!   the reply is made invalid: an action is added (or the last replaced)
//!   that names something that does not exist (see [`bad_action`]); the
//!   supervisor's validation catches it.
//!
//! A transient injection fires only on a message's first delivery: the
//! supervisor says in [`ToServer::Begin`] which message numbers an earlier
//! instance was given; `:repeat` injections fire on every delivery. The
//! logged messages a restored instance is given again are handled with its
//! log muted (what they log was logged the first time).

use std::io::{self, Read, Write};
use std::time::Duration;

use ipc::fault::{FaultKind, Injection};
use ipc::transport::stream::FramedStream;
use ipc::transport::TransportError;
use ipc::{Action, GuestReg, Reply, ServerError, ServerId, VcpuId, MAX_VCPUS};

use super::proto::{send_state, AnyServer, FromServer, StateBuffer, StateError, ToServer};

/// Why a server process stopped serving (other than by an injected fault).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The stream broke or carried garbage.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The start state was not a state.
    #[error("the start state does not decode: {0}")]
    State(postcard::Error),
    /// The pieces of the start state do not add up.
    #[error(transparent)]
    Pieces(#[from] StateError),
    /// Our own state could not be encoded.
    #[error("cannot encode the state: {0}")]
    Encode(postcard::Error),
    /// A frame that does not belong where it came.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Serve server `id` as instance `generation` on standard input and output
/// until the input ends.
pub fn serve_stdio(id: ServerId, generation: u32, injections: &[Injection]) -> Result<(), ServeError> {
    // Die with the supervisor: a process that hangs (an injected `hang`)
    // would otherwise outlive it. (A supervisor that ends normally closes
    // our input first, and we end at its end.)
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        log::warn!("{} server: cannot ask to be killed with the supervisor: {e}", id.name());
    }
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    serve(id, generation, injections, stdin, stdout)
}

/// Serve server `id` as instance `generation` on a reader and a writer.
pub fn serve<R: Read, W: Write>(
    id: ServerId,
    generation: u32,
    injections: &[Injection],
    input: R,
    output: W,
) -> Result<(), ServeError> {
    let mut stream = FramedStream::new(input, output);
    let (mut server, attempted_through) = start(&mut stream, id, generation)?;
    while let Some(frame) = stream.recv::<ToServer>()? {
        if frame.generation != generation {
            return Err(ServeError::Protocol("a frame for another instance"));
        }
        match frame.body {
            ToServer::Handle { number, message } => {
                let fault = injections
                    .iter()
                    .find(|i| i.fires(id, number) && (i.repeat || number > attempted_through))
                    .map(|i| i.kind);
                if let Some(kind) = fault {
                    log::debug!("{} server: injected fault {kind} on message {number}", id.name());
                }
                // A message below `attempted_through` is a logged one
                // replayed to restore the state: what it logs was logged
                // when it was first handled.
                let replayed = number < attempted_through;
                let level = log::max_level();
                if replayed {
                    log::set_max_level(log::LevelFilter::Off);
                }
                let answer = match fault {
                    None => server.handle(message),
                    Some(FaultKind::Panic) => panic!("injected fault: {} panics on message {number}", id.name()),
                    Some(FaultKind::WildWrite) => {
                        damage(&mut server);
                        std::process::abort()
                    }
                    Some(FaultKind::Hang) => loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    },
                    Some(FaultKind::BadReply) => Ok(spoil(server.handle(message), id)),
                };
                log::set_max_level(level);
                stream.send(frame.seq, generation, &FromServer::Reply(Box::new(answer)))?;
            }
            ToServer::Snapshot => {
                let state = server.encode().map_err(ServeError::Encode)?;
                send_state(&mut stream, frame.seq, generation, &state, |total, bytes| FromServer::State {
                    total,
                    bytes,
                })?;
            }
            ToServer::State { .. } | ToServer::Begin { .. } => {
                return Err(ServeError::Protocol("a start state after the start"));
            }
        }
    }
    Ok(())
}

/// Take in the start state; answer `Ready`.
fn start<R: Read, W: Write>(
    stream: &mut FramedStream<R, W>,
    id: ServerId,
    generation: u32,
) -> Result<(AnyServer, u64), ServeError> {
    let mut buffer = StateBuffer::default();
    let mut complete = false;
    loop {
        let frame = stream.recv::<ToServer>()?.ok_or(TransportError::Disconnected)?;
        if frame.generation != generation {
            return Err(ServeError::Protocol("a frame for another instance"));
        }
        match frame.body {
            ToServer::State { total, bytes } if !complete => complete = buffer.add(total, &bytes)?,
            ToServer::Begin { attempted_through } if complete => {
                let server = AnyServer::decode(id, &buffer.into_bytes()).map_err(ServeError::State)?;
                stream.send(frame.seq, generation, &FromServer::Ready)?;
                return Ok((server, attempted_through));
            }
            _ => return Err(ServeError::Protocol("expected the start state, then Begin")),
        }
    }
}

/// What a wild write does to the server's own memory: flip bits in the
/// middle of its state.
fn damage(server: &mut AnyServer) {
    let id = server.id();
    let Ok(mut bytes) = server.encode() else { return };
    let len = bytes.len();
    for byte in bytes.iter_mut().skip(len / 3).take(len / 3 + 1) {
        *byte ^= 0xa5;
    }
    // A state that no longer decodes at all stays as it was: either way the
    // process is about to die.
    if let Ok(damaged) = AnyServer::decode(id, &bytes) {
        *server = damaged;
    }
}

/// The invalid action a `bad-reply` fault puts in server `id`'s reply:
/// vcpu: a write of r16, which does not exist; vgic: a write of list
/// register 4 (a CPU interface reports at most 4, numbered from 0); vtimer:
/// a kick of vCPU 8 (a VM has at most 8, numbered from 0).
pub fn bad_action(id: ServerId) -> Action {
    match id {
        ServerId::Vcpu => Action::SetReg { reg: GuestReg::Gpr(16), value: 0 },
        ServerId::Vgic => Action::WriteListRegister { index: vgic_server::lr::MAX_LRS as u8, value: 0 },
        ServerId::Vtimer => Action::Kick { vcpu: VcpuId(MAX_VCPUS as u8) },
    }
}

/// Make a reply invalid (see [`bad_action`]).
fn spoil(answer: Result<Reply, ServerError>, id: ServerId) -> Reply {
    let mut reply = answer.unwrap_or_default();
    if reply.push(bad_action(id)).is_err() {
        // A full reply: the bad action takes the last one's place.
        let mut actions: Vec<Action> = reply.actions.iter().collect();
        actions.pop();
        actions.push(bad_action(id));
        reply = Reply { actions: actions.into_iter().collect() };
    }
    reply
}
