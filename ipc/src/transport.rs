//! Transports: how a message reaches a server and its reply comes back.
//!
//! - [`Direct`]: the in-image synchronous call the monitor uses on bare metal
//!   (the server runs on the trapping CPU; the caller holds its lock).
//! - [`EventQueue`]: a bounded queue (heapless) for messages that wait their
//!   turn, e.g. the server-to-server messages of one reply.
//! - `channel` (feature `std`): a server on its own thread, reached over
//!   crossbeam channels, with a time-out so a stalled peer is reported
//!   instead of waited on forever.
//! - `stream` (feature `std`): a server behind any byte stream (a pipe, a
//!   socket, another process), with COBS-framed postcard envelopes.

use heapless::Deque;

use crate::action::Reply;
use crate::msg::{Message, Server, ServerError};
use crate::wire::WireError;

/// Why a call did not produce a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The server refused the request.
    Server(ServerError),
    /// The reply (or request) could not be encoded or decoded.
    Wire(WireError),
    /// The peer is gone.
    Disconnected,
    /// The peer did not answer in time.
    Timeout,
    /// A reply came from another instance of the server than the one
    /// addressed (it was restarted in between).
    StaleGeneration {
        /// The generation addressed.
        expected: u32,
        /// The generation that answered.
        got: u32,
    },
    /// A reply arrived for another request (sequence number mismatch).
    OutOfSequence {
        /// The sequence number sent.
        sent: u64,
        /// The sequence number received.
        got: u64,
    },
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::Server(e) => write!(f, "server refused: {e}"),
            TransportError::Wire(e) => write!(f, "wire: {e}"),
            TransportError::Disconnected => write!(f, "peer disconnected"),
            TransportError::Timeout => write!(f, "peer did not answer in time"),
            TransportError::StaleGeneration { expected, got } => {
                write!(f, "reply from server generation {got}, expected {expected}")
            }
            TransportError::OutOfSequence { sent, got } => {
                write!(f, "reply {got} for request {sent}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TransportError {}

impl From<ServerError> for TransportError {
    fn from(e: ServerError) -> Self {
        TransportError::Server(e)
    }
}

impl From<WireError> for TransportError {
    fn from(e: WireError) -> Self {
        TransportError::Wire(e)
    }
}

/// Something a request can be sent to, answering with a reply.
pub trait Endpoint {
    /// Deliver `message` and wait for its reply.
    fn call(&mut self, message: Message) -> Result<Reply, TransportError>;
}

/// The in-image synchronous call: the server is a value the caller owns (or
/// has locked) and the call is a function call.
#[derive(Debug, Default)]
pub struct Direct<S>(pub S);

impl<S: Server> Endpoint for Direct<S> {
    fn call(&mut self, message: Message) -> Result<Reply, TransportError> {
        Ok(self.0.handle_message(message)?)
    }
}

/// A bounded FIFO of messages. Pushing into a full queue fails and hands the
/// message back; nothing is dropped silently.
#[derive(Debug)]
pub struct EventQueue<const N: usize> {
    queue: Deque<Message, N>,
}

impl<const N: usize> Default for EventQueue<N> {
    fn default() -> Self {
        Self { queue: Deque::new() }
    }
}

impl<const N: usize> EventQueue<N> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
    /// Append a message; gives it back when the queue is full.
    pub fn push(&mut self, message: Message) -> Result<(), Message> {
        self.queue.push_back(message)
    }
    /// Take the oldest message.
    pub fn pop(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }
    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(feature = "std")]
pub mod channel {
    //! A server on its own thread, reached over crossbeam channels.

    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError};

    use super::{Endpoint, TransportError};
    use crate::action::Reply;
    use crate::msg::{Message, Server, ServerError};

    type Request = (u64, Message);
    type Answer = (u64, Result<Reply, ServerError>);

    /// How long a side that waits for the other (the client for its reply,
    /// the server for the next request) polls its channel, yielding its CPU
    /// between polls, before it blocks.
    ///
    /// crossbeam's blocking receive spins a little, yields a few times and
    /// then parks the thread, which the other side's send must then wake
    /// through the scheduler. On the host benchmark (`cargo bench -p ipc
    /// --features std --bench channel`, a loaded two-CPU machine) that made a
    /// round trip cost 6.6 µs, where the server answers in well under one;
    /// polling with yields for a while first brought it to about 1.3 µs.
    /// Spinning without yielding was slower there (5 to 45 µs): the peer is
    /// often waiting for the very CPU the spinner holds. After the poll the
    /// wait blocks as before, so an idle peer costs no CPU.
    const POLL: Duration = Duration::from_micros(20);

    /// Polls between two looks at the clock.
    const POLLS_PER_CLOCK: u32 = 4;

    /// The most polls a side spins for before it yields (a poll of an empty
    /// channel takes some tens of nanoseconds, so a few microseconds).
    const MAX_SPINS: u32 = 128;

    /// How many polls a waiting side spins for, without giving up its CPU,
    /// before it polls with yields ([`POLL`]) and then blocks: adapted to
    /// how the last waits went.
    ///
    /// Spinning pays when the peer runs on another CPU: its answer arrives
    /// while this side still spins, without a system call on either side.
    /// It costs when the two share a CPU (a loaded machine): the peer
    /// cannot run until the spinner yields, so every poll is wasted. On the
    /// project's loaded two-CPU host a fixed spin of 1-10 µs before the
    /// yields made the round trip 2-7 times slower (tests/perf/host.md).
    /// So the spin doubles (up to [`MAX_SPINS`]) each time it caught the
    /// answer, and halves each time it did not, down to none; at none, one
    /// wait in [`PROBE_EVERY`] spins [`MAX_SPINS`] again to notice that a
    /// CPU came free. Spinning is bounded either way: an idle peer costs at
    /// most one spin, then [`POLL`], then nothing; and a spin is short
    /// enough to ignore the call's time-out.
    ///
    /// Measured (`cargo bench -p ipc --features std --bench channel`): with
    /// a CPU free for each side, 0.53 µs a round trip against 0.91 µs
    /// without the spin (medians of 10 rounds); with QEMU holding one of
    /// the two CPUs, 3.3 µs either way.
    #[derive(Debug, Clone, Copy)]
    struct Spin {
        polls: u32,
        waits: u32,
    }

    /// At no spin, how often a wait spins anyway, to find out whether
    /// spinning would pay again.
    const PROBE_EVERY: u32 = 64;

    impl Spin {
        const fn new() -> Self {
            Spin { polls: MAX_SPINS, waits: 0 }
        }

        /// Spin on `channel`; adapts to whether that caught a message.
        fn spin<T>(&mut self, channel: &Receiver<T>) -> Option<Result<T, RecvTimeoutError>> {
            self.waits = self.waits.wrapping_add(1);
            let polls = if self.polls == 0 && self.waits % PROBE_EVERY == 0 { MAX_SPINS } else { self.polls };
            for _ in 0..polls {
                match channel.try_recv() {
                    Ok(value) => {
                        self.polls = (polls * 2).clamp(1, MAX_SPINS);
                        return Some(Ok(value));
                    }
                    Err(TryRecvError::Disconnected) => return Some(Err(RecvTimeoutError::Disconnected)),
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
            // A probe that missed leaves it at none.
            self.polls /= 2;
            None
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_spin_shrinks_when_it_misses_and_comes_back_when_a_probe_catches() {
            let (tx, rx) = bounded::<u8>(1);
            let mut spin = Spin::new();
            assert!(spin.spin(&rx).is_none());
            assert_eq!(spin.polls, MAX_SPINS / 2);
            while spin.polls > 0 {
                assert!(spin.spin(&rx).is_none());
            }
            // At none, a waiting message is not looked at until a probe.
            tx.send(7).unwrap();
            let mut waits = 1;
            while spin.spin(&rx).is_none() {
                waits += 1;
                assert!(waits <= PROBE_EVERY, "no probe in {PROBE_EVERY} waits");
            }
            assert_eq!(spin.polls, MAX_SPINS);
            // A caught message doubles a small spin.
            spin.polls = 3;
            tx.send(8).unwrap();
            assert!(matches!(spin.spin(&rx), Some(Ok(8))));
            assert_eq!(spin.polls, 6);
            drop(tx);
            assert!(matches!(spin.spin(&rx), Some(Err(RecvTimeoutError::Disconnected))));
        }
    }

    /// Receive from `channel`: spin as `spin` says, poll with yields for
    /// [`POLL`], then block until `deadline` (forever if `None`).
    fn receive<T>(channel: &Receiver<T>, deadline: Option<Instant>, spin: &mut Spin) -> Result<T, RecvTimeoutError> {
        if let Some(received) = spin.spin(channel) {
            return received;
        }
        // Never poll past the deadline.
        let poll_until = Instant::now().checked_add(POLL).map(|end| deadline.map_or(end, |d| d.min(end)));
        loop {
            for _ in 0..POLLS_PER_CLOCK {
                match channel.try_recv() {
                    Ok(value) => return Ok(value),
                    Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
            if poll_until.is_none_or(|end| Instant::now() >= end) {
                break;
            }
        }
        match deadline {
            Some(deadline) => channel.recv_deadline(deadline),
            None => channel.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    }

    /// The client side: sends requests, waits (with a time-out) for replies.
    #[derive(Debug)]
    pub struct ChannelClient {
        requests: Sender<Request>,
        replies: Receiver<Answer>,
        timeout: Duration,
        seq: u64,
        spin: Spin,
    }

    /// Start `server` on a new thread. The thread ends (and returns the
    /// server, with its final state) when the client is dropped.
    pub fn spawn<S>(server: S, timeout: Duration) -> (ChannelClient, JoinHandle<S>)
    where
        S: Server + Send + 'static,
    {
        let (req_tx, req_rx) = bounded::<Request>(1);
        let (rep_tx, rep_rx) = bounded::<Answer>(1);
        let handle = std::thread::spawn(move || serve(server, req_rx, rep_tx));
        let client = ChannelClient { requests: req_tx, replies: rep_rx, timeout, seq: 0, spin: Spin::new() };
        (client, handle)
    }

    /// Answer requests from `requests` until the client goes away.
    pub fn serve<S: Server>(mut server: S, requests: Receiver<Request>, replies: Sender<Answer>) -> S {
        let mut spin = Spin::new();
        while let Ok((seq, message)) = receive(&requests, None, &mut spin) {
            let answer = server.handle_message(message);
            if replies.send((seq, answer)).is_err() {
                break;
            }
        }
        server
    }

    impl Endpoint for ChannelClient {
        /// Send `message` and wait for its reply, both within the time-out.
        ///
        /// A request that timed out may still be carried out by the server
        /// later; its late reply is recognised by its sequence number and
        /// dropped by the next call, so one stall does not put every later
        /// reply out of sequence.
        fn call(&mut self, message: Message) -> Result<Reply, TransportError> {
            self.seq += 1;
            let sent = self.seq;
            // A time-out too large to add to the clock means "wait forever".
            let deadline = Instant::now().checked_add(self.timeout);
            let delivered = match deadline {
                Some(deadline) => self.requests.send_deadline((sent, message), deadline),
                None => self.requests.send((sent, message)).map_err(|e| SendTimeoutError::Disconnected(e.0)),
            };
            delivered.map_err(|e| match e {
                SendTimeoutError::Timeout(_) => TransportError::Timeout,
                SendTimeoutError::Disconnected(_) => TransportError::Disconnected,
            })?;
            loop {
                let received = receive(&self.replies, deadline, &mut self.spin);
                match received {
                    // The late reply of an earlier request that timed out.
                    Ok((got, _)) if got < sent => continue,
                    Ok((got, _)) if got != sent => return Err(TransportError::OutOfSequence { sent, got }),
                    Ok((_, answer)) => return Ok(answer?),
                    Err(RecvTimeoutError::Timeout) => return Err(TransportError::Timeout),
                    Err(RecvTimeoutError::Disconnected) => return Err(TransportError::Disconnected),
                }
            }
        }
    }
}

#[cfg(feature = "std")]
pub mod stream {
    //! A server behind a byte stream: each request and reply is a postcard
    //! [`crate::Envelope`] in one COBS frame.

    use std::io::{BufRead, BufReader, Read, Write};

    use serde::{de::DeserializeOwned, Serialize};

    use super::{Endpoint, TransportError};
    use crate::action::Reply;
    use crate::msg::{Envelope, Message, Server, ServerError};
    use crate::wire::{self, WireError, MAX_MESSAGE_SIZE, WIRE_VERSION};

    /// Reads and writes framed envelopes on a byte stream.
    #[derive(Debug)]
    pub struct FramedStream<R, W> {
        reader: BufReader<R>,
        writer: W,
        frame: Vec<u8>,
    }

    impl<R: Read, W: Write> FramedStream<R, W> {
        /// Wrap a reader and a writer (they may be two ends of one socket).
        pub fn new(reader: R, writer: W) -> Self {
            Self { reader: BufReader::new(reader), writer, frame: Vec::new() }
        }

        /// Send one envelope.
        pub fn send<T: Serialize>(&mut self, seq: u64, generation: u32, body: &T) -> Result<(), TransportError> {
            let mut plain = [0u8; MAX_MESSAGE_SIZE];
            let used = wire::encode_envelope(seq, generation, body, &mut plain)?.len();
            let mut framed = [0u8; MAX_MESSAGE_SIZE + MAX_MESSAGE_SIZE / 254 + 2];
            let len = cobs_encode(&plain[..used], &mut framed);
            self.writer.write_all(&framed[..len]).map_err(|_| TransportError::Disconnected)?;
            self.writer.flush().map_err(|_| TransportError::Disconnected)
        }

        /// Receive one envelope; `Ok(None)` at a clean end of stream.
        pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<Envelope<T>>, TransportError> {
            self.frame.clear();
            let n = (&mut self.reader)
                .take((MAX_MESSAGE_SIZE * 2) as u64)
                .read_until(0, &mut self.frame)
                .map_err(|_| TransportError::Disconnected)?;
            if n == 0 {
                return Ok(None);
            }
            if self.frame.last() != Some(&0) {
                return Err(if n >= MAX_MESSAGE_SIZE * 2 {
                    WireError::TooLarge(n).into()
                } else {
                    WireError::Truncated.into()
                });
            }
            let len = wire::cobs_decode_in_place(&mut self.frame)?;
            Ok(Some(wire::decode_envelope(&self.frame[..len])?))
        }
    }

    fn cobs_encode(input: &[u8], out: &mut [u8]) -> usize {
        // postcard's own COBS writer works on a serializer, not on an
        // already encoded envelope; this is the textbook encoder.
        let mut code_at = 0;
        let mut write = 1;
        let mut code = 1u8;
        for &byte in input {
            if byte == 0 {
                out[code_at] = code;
                code_at = write;
                write += 1;
                code = 1;
            } else {
                out[write] = byte;
                write += 1;
                code += 1;
                if code == 0xff {
                    out[code_at] = code;
                    code_at = write;
                    write += 1;
                    code = 1;
                }
            }
        }
        out[code_at] = code;
        out[write] = 0;
        write + 1
    }

    /// The client side of a server behind a stream.
    #[derive(Debug)]
    pub struct StreamClient<R, W> {
        stream: FramedStream<R, W>,
        generation: u32,
        seq: u64,
    }

    impl<R: Read, W: Write> StreamClient<R, W> {
        /// A client talking to the server instance of `generation`.
        pub fn new(reader: R, writer: W, generation: u32) -> Self {
            Self { stream: FramedStream::new(reader, writer), generation, seq: 0 }
        }
    }

    impl<R: Read, W: Write> Endpoint for StreamClient<R, W> {
        fn call(&mut self, message: Message) -> Result<Reply, TransportError> {
            self.seq += 1;
            let sent = self.seq;
            self.stream.send(sent, self.generation, &message)?;
            let answer: Envelope<Result<Reply, ServerError>> =
                self.stream.recv()?.ok_or(TransportError::Disconnected)?;
            if answer.seq != sent {
                return Err(TransportError::OutOfSequence { sent, got: answer.seq });
            }
            if answer.generation != self.generation {
                return Err(TransportError::StaleGeneration { expected: self.generation, got: answer.generation });
            }
            Ok(answer.body?)
        }
    }

    /// Serve requests from a stream until it ends. A request that does not
    /// decode is answered with nothing and reported as the error it is; the
    /// server's state is untouched by it.
    pub fn serve<S: Server, R: Read, W: Write>(
        server: &mut S,
        reader: R,
        writer: W,
        generation: u32,
    ) -> Result<(), TransportError> {
        let mut stream = FramedStream::new(reader, writer);
        while let Some(request) = stream.recv::<Message>()? {
            debug_assert_eq!(request.version, WIRE_VERSION);
            let answer = server.handle_message(request.body);
            stream.send(request.seq, generation, &answer)?;
        }
        Ok(())
    }
}
