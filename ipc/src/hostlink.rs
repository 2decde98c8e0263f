//! The host link: one byte stream, on the physical UART the monitor owns,
//! that carries both the guest's console output and the monitor's own
//! records (log lines, trace records, the exit status) to `splitvisor`.
//!
//! Why not semihosting: QEMU answers a semihosting call from any privileged
//! mode, so a guest at PL1 could use it to write host files or fake the
//! VM's exit status. The UART is reached only through the monitor.
//!
//! Framing: a guest byte goes as itself, except [`ESCAPE`], which goes
//! twice. A record is [`ESCAPE`], its [`RecordKind`] byte, and its payload
//! COBS-encoded and ended by a zero byte. Bytes typed on the host go to the
//! guest unframed.

use serde::{Deserialize, Serialize};

/// The byte that starts a record (DLE, which consoles do not use).
pub const ESCAPE: u8 = 0x10;

/// The largest record payload a receiver accepts.
pub const MAX_RECORD: usize = 4096;

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    /// A monitor log line (UTF-8 text).
    Log,
    /// A postcard-encoded [`crate::trace::TraceRecord`].
    Trace,
    /// The VM's exit status (one byte, see [`crate::exit`]); the monitor
    /// stops the machine right after it.
    Exit,
}

impl RecordKind {
    /// The byte that names the kind on the wire.
    pub fn byte(self) -> u8 {
        match self {
            RecordKind::Log => b'L',
            RecordKind::Trace => b'T',
            RecordKind::Exit => b'X',
        }
    }

    /// The kind a wire byte names.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'L' => Some(RecordKind::Log),
            b'T' => Some(RecordKind::Trace),
            b'X' => Some(RecordKind::Exit),
            _ => None,
        }
    }
}

/// Send console bytes.
pub fn encode_console(bytes: &[u8], out: &mut impl FnMut(u8)) {
    for &b in bytes {
        if b == ESCAPE {
            out(ESCAPE);
        }
        out(b);
    }
}

/// Send one record: [`ESCAPE`], the kind, the payload as a COBS frame.
pub fn encode_record(kind: RecordKind, payload: &[u8], out: &mut impl FnMut(u8)) {
    out(ESCAPE);
    out(kind.byte());
    encode_cobs(payload, out);
}

/// Write `payload` as one COBS frame ended by a zero byte (the framing
/// postcard's `to_slice_cobs` produces, so `wire::decode_frame` reads it).
/// Written here because the monitor streams records straight to the UART
/// without a buffer, which postcard's slice-based COBS functions cannot do.
pub fn encode_cobs(payload: &[u8], out: &mut impl FnMut(u8)) {
    for run in payload.split(|&b| b == 0) {
        let mut chunks = run.chunks(254).peekable();
        if chunks.peek().is_none() {
            out(1);
        }
        while let Some(chunk) = chunks.next() {
            // A full 254-byte chunk is followed by a code that implies no zero.
            out(chunk.len() as u8 + 1);
            chunk.iter().for_each(|&b| out(b));
            if chunk.len() == 254 && chunks.peek().is_none() {
                out(1);
            }
        }
    }
    out(0);
}

#[cfg(feature = "std")]
pub use demux::{Demux, Event};

#[cfg(feature = "std")]
mod demux {
    use super::{RecordKind, ESCAPE, MAX_RECORD};

    /// One thing taken off the link.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Event {
        /// A byte of guest console output.
        Console(u8),
        /// A whole record.
        Record(RecordKind, Vec<u8>),
        /// A record that could not be taken apart (unknown kind, bad COBS,
        /// too long); the stream goes on after it.
        Damaged,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum State {
        Console,
        Escaped,
        Record(RecordKind),
        Skip,
    }

    /// Takes the link apart, byte by byte.
    #[derive(Clone, Debug)]
    pub struct Demux {
        state: State,
        frame: Vec<u8>,
    }

    impl Default for Demux {
        fn default() -> Self {
            Self { state: State::Console, frame: Vec::new() }
        }
    }

    impl Demux {
        /// A demultiplexer at the start of a stream.
        pub fn new() -> Self {
            Self::default()
        }

        /// Feed one byte; returns what it completes, if anything.
        pub fn feed(&mut self, byte: u8) -> Option<Event> {
            match self.state {
                State::Console if byte == ESCAPE => {
                    self.state = State::Escaped;
                    None
                }
                State::Console => Some(Event::Console(byte)),
                State::Escaped if byte == ESCAPE => {
                    self.state = State::Console;
                    Some(Event::Console(ESCAPE))
                }
                State::Escaped => match RecordKind::from_byte(byte) {
                    Some(kind) => {
                        self.frame.clear();
                        self.state = State::Record(kind);
                        None
                    }
                    None => {
                        self.state = State::Skip;
                        None
                    }
                },
                State::Record(kind) if byte == 0 => {
                    self.state = State::Console;
                    Some(match cobs_decode(&self.frame) {
                        Some(payload) => Event::Record(kind, payload),
                        None => Event::Damaged,
                    })
                }
                State::Record(_) if self.frame.len() >= MAX_RECORD + MAX_RECORD / 254 + 2 => {
                    self.state = State::Skip;
                    None
                }
                State::Record(_) => {
                    self.frame.push(byte);
                    None
                }
                State::Skip if byte == 0 => {
                    self.state = State::Console;
                    Some(Event::Damaged)
                }
                State::Skip => None,
            }
        }
    }

    fn cobs_decode(frame: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(frame.len());
        let mut i = 0;
        while i < frame.len() {
            let code = usize::from(frame[i]);
            if code == 0 || i + code > frame.len() {
                return None;
            }
            out.extend_from_slice(&frame[i + 1..i + code]);
            i += code;
            if code < 0xff && i < frame.len() {
                out.push(0);
            }
        }
        Some(out)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn wire(f: impl FnOnce(&mut dyn FnMut(u8))) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut |b| v.push(b));
        v
    }

    fn events(bytes: &[u8]) -> Vec<Event> {
        let mut d = Demux::new();
        bytes.iter().filter_map(|&b| d.feed(b)).collect()
    }

    #[test]
    fn console_bytes_pass_and_escape_is_doubled() {
        let w = wire(|o| encode_console(b"a\x10b", &mut |b| o(b)));
        assert_eq!(w, b"a\x10\x10b");
        assert_eq!(events(&w), vec![Event::Console(b'a'), Event::Console(0x10), Event::Console(b'b')]);
    }

    #[test]
    fn records_round_trip_between_console_bytes() {
        let payloads: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0, 1],
            b"hello".to_vec(),
            (0..=255u8).collect(),
            vec![7; 254],
            vec![7; 255],
            vec![7; 508],
            (0..1000u32).map(|i| (i % 7) as u8).collect(),
        ];
        for p in payloads {
            let mut w = wire(|o| encode_console(b"x", &mut |b| o(b)));
            w.extend(wire(|o| encode_record(RecordKind::Trace, &p, &mut |b| o(b))));
            w.extend(wire(|o| encode_console(b"y", &mut |b| o(b))));
            assert_eq!(
                events(&w),
                vec![Event::Console(b'x'), Event::Record(RecordKind::Trace, p.clone()), Event::Console(b'y')],
                "payload of {} bytes",
                p.len()
            );
        }
    }

    #[test]
    fn damage_is_reported_and_the_stream_goes_on() {
        let mut w = vec![ESCAPE, b'?', 1, 2, 0, b'a'];
        w.extend([ESCAPE, b'L', 5, b'h', 0]);
        w.push(b'b');
        assert_eq!(events(&w), vec![Event::Damaged, Event::Console(b'a'), Event::Damaged, Event::Console(b'b')]);
        // An endless record is cut off instead of growing without bound.
        let mut w = vec![ESCAPE, b'T'];
        w.extend(std::iter::repeat_n(1u8, 20_000));
        w.extend([0, b'c']);
        assert_eq!(events(&w), vec![Event::Damaged, Event::Console(b'c')]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 99;
        let mut d = Demux::new();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let _ = d.feed((x % 7) as u8 * 0x10 / 4);
        }
    }
}
