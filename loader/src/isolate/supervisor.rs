//! The supervisor: one OS process per server, watched, checkpointed and
//! restarted.
//!
//! Each server runs as `splitvisor serve SERVER` ([`super::serve`]). The
//! supervisor keeps for each server a checkpoint (its state, fetched from the
//! process every [`Options::checkpoint_every`] messages and decoded before it
//! is trusted) and the log of the messages it handled since, with the replies
//! it accepted. A server process fails when it dies (exits, or is killed by a
//! signal, `kill -9` from outside included), sends something that is not a
//! frame, does not answer within [`Options::budget`], breaks the protocol, or
//! answers with a reply that fails validation ([`super::validate`]). Its
//! process is then killed and a new one (the next generation) started from
//! the checkpoint; the logged messages are replayed into it (each reply must
//! be the one accepted before, or the restoration fails), so its state is
//! exactly the state before the failed message, which is then retried. A
//! second failure of the same message is answered by the policy
//! ([`FaultPolicy`]).

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc::transport::stream::FramedStream;
use ipc::transport::TransportError;
use ipc::{Envelope, Message, Reply, ServerError, ServerId, VmConfig};

use super::proto::{send_state, AnyServer, FromServer, StateBuffer, ToServer};
use super::{policy_reply, FaultPolicy, Options, Recovery, RecoveryOutcome, Stopped};
use crate::trace::{Answer, Backend};
use el2_monitor::validate::{self, InvalidReply};

/// How often a new instance is tried before its server is given up.
const RESTORE_ATTEMPTS: u32 = 3;

/// How long a process that closed its output is given to exit, so that its
/// exit status can be reported.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// How a server process failed.
#[derive(Debug)]
pub enum Fault {
    /// It could not be started.
    Spawn(io::Error),
    /// It ended (exit or signal).
    Died(ExitStatus),
    /// It closed its output but did not end within [`EXIT_GRACE`].
    Disconnected,
    /// It sent bytes that are not a frame.
    Garbage(ipc::WireError),
    /// It did not answer in time.
    Hang(Duration),
    /// Its reply failed validation.
    InvalidReply(InvalidReply),
    /// It answered out of turn (another sequence number, another
    /// generation, another kind of answer).
    Protocol(String),
    /// The state it sent does not decode.
    BadState(String),
    /// A logged message replayed into it got another reply than before: the
    /// state cannot be restored by replay.
    Nondeterministic(u64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Spawn(e) => write!(f, "could not be started: {e}"),
            Fault::Died(status) => match (status.code(), status.signal()) {
                (Some(code), _) => write!(f, "exited with status {code}"),
                (None, Some(signal)) => write!(f, "was killed by signal {signal}{}", signal_name(signal)),
                (None, None) => write!(f, "ended ({status})"),
            },
            Fault::Disconnected => write!(f, "closed its output"),
            Fault::Garbage(e) => write!(f, "sent garbage ({e})"),
            Fault::Hang(budget) => write!(f, "did not answer within {} ms", budget.as_millis()),
            Fault::InvalidReply(e) => write!(f, "sent a reply that fails validation: it {e}"),
            Fault::Protocol(why) => write!(f, "broke the protocol: {why}"),
            Fault::BadState(why) => write!(f, "sent a state that does not decode: {why}"),
            Fault::Nondeterministic(n) => {
                write!(f, "answered logged message {n} differently on replay (state not restorable)")
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

type Frame = Result<Envelope<FromServer>, TransportError>;

/// One running server process.
struct Instance {
    child: Child,
    writer: Option<FramedStream<io::Empty, ChildStdin>>,
    frames: Receiver<Frame>,
    reader: Option<JoinHandle<()>>,
    generation: u32,
    seq: u64,
}

impl Instance {
    fn spawn(id: ServerId, generation: u32, options: &Options) -> Result<Instance, Fault> {
        let mut command = Command::new(&options.exe);
        let level = clap::ValueEnum::to_possible_value(&options.log_level);
        command.arg("--log-level").arg(level.as_ref().map_or("warn", |v| v.get_name())).args([
            "serve",
            id.name(),
            "--generation",
            &generation.to_string(),
        ]);
        for injection in options.injections.iter().filter(|i| i.server == id) {
            command.arg("--inject").arg(injection.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(Fault::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Fault::Spawn(io::Error::other("no pipe to the process")));
        };
        let (tx, frames) = mpsc::channel();
        let reader = std::thread::Builder::new().name(format!("{}-reader", id.name())).spawn(move || {
            let mut stream = FramedStream::new(stdout, io::sink());
            loop {
                let frame = match stream.recv::<FromServer>() {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => Err(TransportError::Disconnected),
                    Err(e) => Err(e),
                };
                let end = frame.is_err();
                if tx.send(frame).is_err() || end {
                    break;
                }
            }
        });
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Fault::Spawn(e));
            }
        };
        if let Some(dir) = &options.pid_dir {
            write_pid(dir, id, child.id());
        }
        log::debug!("{} server: process {} started (generation {generation})", id.name(), child.id());
        Ok(Instance {
            child,
            writer: Some(FramedStream::new(io::empty(), stdin)),
            frames,
            reader: Some(reader),
            generation,
            seq: 0,
        })
    }

    /// Why the stream broke: the process's end if it ended.
    fn broken(&mut self, e: TransportError) -> Fault {
        match e {
            TransportError::Wire(w) => Fault::Garbage(w),
            TransportError::Disconnected => {
                let deadline = Instant::now() + EXIT_GRACE;
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) => return Fault::Died(status),
                        Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                        _ => return Fault::Disconnected,
                    }
                }
            }
            other => Fault::Protocol(other.to_string()),
        }
    }

    fn send(&mut self, seq: u64, body: &ToServer) -> Result<(), Fault> {
        let generation = self.generation;
        let Some(writer) = self.writer.as_mut() else { return Err(Fault::Disconnected) };
        writer.send(seq, generation, body).map_err(|e| self.broken(e))
    }

    fn receive(&mut self, seq: u64, budget: Duration) -> Result<FromServer, Fault> {
        let frame = match self.frames.recv_timeout(budget) {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => return Err(Fault::Hang(budget)),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Disconnected),
        };
        let frame = frame.map_err(|e| self.broken(e))?;
        if frame.generation != self.generation {
            return Err(Fault::Protocol(format!(
                "an answer from generation {}, expected {}",
                frame.generation, self.generation
            )));
        }
        if frame.seq != seq {
            return Err(Fault::Protocol(format!("the answer to request {}, expected {seq}", frame.seq)));
        }
        Ok(frame.body)
    }

    /// Hand the new instance its start state.
    fn start(&mut self, state: &[u8], attempted_through: u64, budget: Duration) -> Result<(), Fault> {
        self.seq += 1;
        let seq = self.seq;
        let generation = self.generation;
        let Some(writer) = self.writer.as_mut() else { return Err(Fault::Disconnected) };
        send_state(writer, seq, generation, state, |total, bytes| ToServer::State { total, bytes })
            .map_err(|e| self.broken(e))?;
        self.send(seq, &ToServer::Begin { attempted_through })?;
        match self.receive(seq, budget)? {
            FromServer::Ready => Ok(()),
            other => Err(Fault::Protocol(format!("{other:?} in answer to the start state"))),
        }
    }

    fn handle(
        &mut self,
        number: u64,
        message: &Message,
        budget: Duration,
    ) -> Result<Result<Reply, ServerError>, Fault> {
        self.seq += 1;
        let seq = self.seq;
        self.send(seq, &ToServer::Handle { number, message: *message })?;
        match self.receive(seq, budget)? {
            FromServer::Reply(result) => Ok(*result),
            other => Err(Fault::Protocol(format!("{other:?} in answer to a message"))),
        }
    }

    fn snapshot(&mut self, id: ServerId, budget: Duration) -> Result<Vec<u8>, Fault> {
        self.seq += 1;
        let seq = self.seq;
        self.send(seq, &ToServer::Snapshot)?;
        let deadline = Instant::now().checked_add(budget);
        let mut buffer = StateBuffer::default();
        loop {
            let left = deadline.map_or(budget, |d| d.saturating_duration_since(Instant::now()));
            match self.receive(seq, left).map_err(|f| if let Fault::Hang(_) = f { Fault::Hang(budget) } else { f })? {
                FromServer::State { total, bytes } => {
                    if buffer.add(total, &bytes).map_err(|e| Fault::BadState(e.to_string()))? {
                        break;
                    }
                }
                other => return Err(Fault::Protocol(format!("{other:?} in answer to a snapshot request"))),
            }
        }
        let state = buffer.into_bytes();
        AnyServer::decode(id, &state).map_err(|e| Fault::BadState(e.to_string()))?;
        Ok(state)
    }

    /// End the process: close its input (it exits at the end of its input),
    /// give it a moment, then kill it.
    fn finish(mut self) {
        self.writer = None;
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        // Drop kills it.
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.writer = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Its output is closed now: the reader sees the end and stops.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Write `DIR/SERVER.pid` (atomically: a temporary file renamed).
fn write_pid(dir: &Path, id: ServerId, pid: u32) {
    let path = dir.join(format!("{}.pid", id.name()));
    let temp = dir.join(format!(".{}.pid.tmp", id.name()));
    let written = std::fs::write(&temp, format!("{pid}\n")).and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        log::warn!("cannot write {}: {e}", path.display());
    }
}

/// A message handled since the checkpoint, with the reply accepted for it.
#[derive(Debug)]
struct Logged {
    number: u64,
    message: Message,
    result: Result<Reply, ServerError>,
}

/// One supervised server.
struct Supervised {
    id: ServerId,
    config: VmConfig,
    instance: Option<Instance>,
    /// The generation of the newest instance.
    generation: u32,
    /// The state after message `checkpoint_after`.
    checkpoint: Vec<u8>,
    checkpoint_after: u64,
    /// The messages handled since the checkpoint.
    log: Vec<Logged>,
    /// The number of the last message delivered (counted from 1 over the
    /// whole replay).
    number: u64,
    /// What the checkpoints cost.
    stats: CheckpointStats,
}

impl Supervised {
    /// Start server `id` in the initial state `config` gives it; message
    /// numbers go on from `number`, generations from `generation`.
    fn boot(id: ServerId, config: &VmConfig, number: u64, generation: u32, options: &Options) -> Result<Self, Fault> {
        let checkpoint = AnyServer::new(id, config).encode().map_err(|e| Fault::BadState(e.to_string()))?;
        let mut server = Supervised {
            id,
            config: config.clone(),
            instance: None,
            generation,
            checkpoint,
            checkpoint_after: number,
            log: Vec::new(),
            number,
            stats: CheckpointStats::default(),
        };
        server.restore(options).map(|_| server)
    }

    /// Start a new instance from the checkpoint and replay the log into it;
    /// the number of messages replayed. Tries [`RESTORE_ATTEMPTS`] times.
    fn restore(&mut self, options: &Options) -> Result<usize, Fault> {
        let mut attempt = 1;
        loop {
            self.instance = None;
            self.generation += 1;
            match self.try_restore(options) {
                Ok(replayed) => return Ok(replayed),
                Err(fault) if attempt < RESTORE_ATTEMPTS => {
                    log::warn!(
                        "{} server: generation {} {fault} while being restored; trying again",
                        self.id.name(),
                        self.generation
                    );
                    attempt += 1;
                }
                Err(fault) => {
                    self.instance = None;
                    return Err(fault);
                }
            }
        }
    }

    fn try_restore(&mut self, options: &Options) -> Result<usize, Fault> {
        let mut instance = Instance::spawn(self.id, self.generation, options)?;
        instance.start(&self.checkpoint, self.number, options.startup_budget())?;
        for logged in &self.log {
            let result = instance.handle(logged.number, &logged.message, options.budget)?;
            if result != logged.result {
                return Err(Fault::Nondeterministic(logged.number));
            }
        }
        self.instance = Some(instance);
        Ok(self.log.len())
    }

    /// Deliver message `number` to the running instance and validate its
    /// answer.
    fn attempt(
        &mut self,
        number: u64,
        message: &Message,
        options: &Options,
    ) -> Result<Result<Reply, ServerError>, Fault> {
        let Some(instance) = self.instance.as_mut() else { return Err(Fault::Disconnected) };
        let result = instance.handle(number, message, options.budget)?;
        if let Ok(reply) = &result {
            validate::check(reply, &self.config).map_err(Fault::InvalidReply)?;
        }
        Ok(result)
    }

    /// Log an accepted reply; take a checkpoint when one is due.
    fn accept(
        &mut self,
        message: &Message,
        result: &Result<Reply, ServerError>,
        options: &Options,
    ) -> Result<(), Fault> {
        self.log.push(Logged { number: self.number, message: *message, result: result.clone() });
        if self.number - self.checkpoint_after < options.checkpoint_every {
            return Ok(());
        }
        let Some(instance) = self.instance.as_mut() else { return Err(Fault::Disconnected) };
        let started = Instant::now();
        let state = instance.snapshot(self.id, options.budget)?;
        self.stats.taken += 1;
        self.stats.bytes += state.len() as u64;
        self.stats.time += started.elapsed();
        self.checkpoint = state;
        self.checkpoint_after = self.number;
        self.log.clear();
        Ok(())
    }

    fn recovery(&self, fault: &Fault, replayed: usize, took: Duration, outcome: RecoveryOutcome) -> Recovery {
        Recovery {
            server: self.id,
            message: self.number,
            fault: fault.to_string(),
            generation: self.generation,
            checkpoint_after: self.checkpoint_after,
            replayed,
            took,
            outcome,
        }
    }

    /// Deliver the next message: on a failure restore and retry; on a second
    /// failure follow the policy. Each recovery is reported and added to
    /// `recoveries`.
    fn deliver(
        &mut self,
        message: &Message,
        options: &Options,
        recoveries: &mut Vec<Recovery>,
    ) -> Result<Answer, Box<Stopped>> {
        self.number += 1;
        let mut note = |r: Recovery| {
            log::warn!("{r}");
            recoveries.push(r);
        };
        let first = match self.attempt(self.number, message, options) {
            Ok(result) => {
                if let Err(fault) = self.accept(message, &result, options) {
                    // The reply stands; the instance failed while it gave
                    // its state. Restore it (the log holds this message).
                    let started = Instant::now();
                    let replayed = self.restore(options).map_err(|again| self.stopped(message, &fault, &again))?;
                    note(self.recovery(&fault, replayed, started.elapsed(), RecoveryOutcome::Restored));
                }
                return Ok(Answer { result, by_policy: false });
            }
            Err(fault) => fault,
        };
        let started = Instant::now();
        let replayed = self.restore(options).map_err(|again| self.stopped(message, &first, &again))?;
        match self.attempt(self.number, message, options) {
            Ok(result) => {
                note(self.recovery(&first, replayed, started.elapsed(), RecoveryOutcome::Retried));
                if let Err(fault) = self.accept(message, &result, options) {
                    let started = Instant::now();
                    let replayed = self.restore(options).map_err(|again| self.stopped(message, &fault, &again))?;
                    note(self.recovery(&fault, replayed, started.elapsed(), RecoveryOutcome::Restored));
                }
                Ok(Answer { result, by_policy: false })
            }
            Err(again) => match options.on_fault {
                FaultPolicy::Stop => {
                    self.instance = None;
                    note(self.recovery(&first, replayed, started.elapsed(), RecoveryOutcome::Stopped));
                    Err(self.stopped(message, &first, &again))
                }
                FaultPolicy::Restart => {
                    // The server never took the message in: restore it to
                    // the state before it once more and answer by policy.
                    let replayed = self.restore(options).map_err(|third| self.stopped(message, &again, &third))?;
                    note(self.recovery(&first, replayed, started.elapsed(), RecoveryOutcome::AnsweredByPolicy));
                    Ok(Answer { result: Ok(policy_reply(message, &self.config.timer)), by_policy: true })
                }
            },
        }
    }

    fn stopped(&self, message: &Message, first: &Fault, again: &Fault) -> Box<Stopped> {
        Box::new(Stopped {
            server: self.id,
            message_number: self.number,
            request: *message,
            first: first.to_string(),
            again: again.to_string(),
        })
    }
}

/// Why an isolated replay could not go on.
#[derive(Debug)]
pub enum Halt {
    /// A server failed again and the policy is `stop`, or it could not be
    /// restored.
    Stopped(Box<Stopped>),
    /// A server process could not be started at all.
    Start(ServerId, Fault),
}

/// The three supervised servers of one replay.
pub struct Supervisor {
    options: Options,
    servers: Vec<Supervised>,
    /// Messages delivered per server so far, and the newest generation
    /// (carried across boots so that numbers and generations never repeat).
    numbers: [u64; 3],
    generations: [u32; 3],
    /// Every recovery, in order.
    pub recoveries: Vec<Recovery>,
    /// What the checkpoints of servers no longer running cost.
    pub checkpoints: CheckpointStats,
}

/// What taking checkpoints cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints taken.
    pub taken: u64,
    /// Bytes of state fetched for them.
    pub bytes: u64,
    /// Time spent fetching them (asking, receiving, decoding).
    pub time: Duration,
}

impl CheckpointStats {
    fn add(&mut self, other: &CheckpointStats) {
        self.taken += other.taken;
        self.bytes += other.bytes;
        self.time += other.time;
    }
}

impl Supervisor {
    /// A supervisor that starts nothing until the first configuration.
    pub fn new(options: Options) -> Supervisor {
        Supervisor {
            options,
            servers: Vec::new(),
            numbers: [0; 3],
            generations: [0; 3],
            recoveries: Vec::new(),
            checkpoints: CheckpointStats::default(),
        }
    }

    /// Close every server process.
    pub fn shutdown(&mut self) {
        for mut server in self.servers.drain(..) {
            self.checkpoints.add(&server.stats);
            if let Some(instance) = server.instance.take() {
                instance.finish();
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Backend for Supervisor {
    type Halt = Halt;

    fn boot(&mut self, config: &VmConfig) -> Result<(), Halt> {
        for server in &self.servers {
            self.numbers[server.id.index()] = server.number;
            self.generations[server.id.index()] = server.generation;
        }
        self.shutdown();
        for id in ServerId::ALL {
            let (number, generation) = (self.numbers[id.index()], self.generations[id.index()]);
            let server =
                Supervised::boot(id, config, number, generation, &self.options).map_err(|f| Halt::Start(id, f))?;
            self.servers.push(server);
        }
        Ok(())
    }

    fn handle(&mut self, message: &Message) -> Result<Answer, Halt> {
        let id = message.server();
        let Some(server) = self.servers.iter_mut().find(|s| s.id == id) else {
            return Err(Halt::Start(id, Fault::Disconnected));
        };
        server.deliver(message, &self.options, &mut self.recoveries).map_err(Halt::Stopped)
    }
}
