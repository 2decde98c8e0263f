//! The wire format: postcard, inside an [`Envelope`] that carries the wire
//! version; COBS framing (a zero byte ends each frame) for byte streams; a
//! magic-and-length header for blobs placed in memory (the VM configuration).
//!
//! Every decoder answers garbage or truncated input with a [`WireError`],
//! never a panic.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::msg::Envelope;

/// The version of the message catalogue. Bumped on every incompatible change.
///
/// 7: a [`crate::TrapMsg`] is one byte string of a fixed layout
/// ([`crate::trap::layout`]); a trace's configuration record carries the
/// version ([`crate::trace::decode_record`]).
/// 8: the console's read image ([`crate::Action::ConsoleImageWord`],
/// [`crate::Action::ConsoleImageMap`], [`crate::VmConfig::console_image`]).
/// 9: the WFI policy ([`crate::VmConfig::wfi`]).
/// 10: a trapped WFI goes to the vGIC server ([`crate::VgicRequest::Wfi`]).
/// 11: the checkpoint interval and the watchdog budget
/// ([`crate::VmConfig::containment`]).
/// 12: the virtual timer's delivery ([`crate::VmConfig::vtimer`],
/// [`crate::Action::SetVirtualTimerMask`], [`crate::VgicRequest::Pend`]).
pub const WIRE_VERSION: u16 = 12;

/// The largest encoded message (envelope included), in bytes.
pub const MAX_MESSAGE_SIZE: usize = 512;

/// The largest encoded blob (the VM configuration), in bytes.
pub const MAX_BLOB_SIZE: usize = 4096;

/// The magic that starts a blob: "SPVB".
pub const BLOB_MAGIC: [u8; 4] = *b"SPVB";

/// Why bytes could not be turned into a value (or a value into bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end before the value does.
    Truncated,
    /// The bytes are not a valid encoding; postcard's reason is kept.
    Malformed(postcard::Error),
    /// Bytes are left over after the value.
    TrailingBytes(usize),
    /// The encoding is larger than allowed.
    TooLarge(usize),
    /// The sender speaks another version of the catalogue.
    Version {
        /// What the bytes say.
        got: u16,
        /// What this build speaks.
        expected: u16,
    },
    /// A trace recorded before traces carried their wire version (wire
    /// version 6 and older).
    Unversioned,
    /// A blob does not start with [`BLOB_MAGIC`].
    BadMagic,
    /// The output buffer is too small.
    BufferFull,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "message truncated"),
            WireError::Malformed(e) => write!(f, "malformed message: {e}"),
            WireError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
            WireError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the limit"),
            WireError::Version { got, expected } => {
                write!(f, "wire version {got}, this build speaks {expected}")
            }
            WireError::Unversioned => write!(
                f,
                "recorded before traces carried their wire version (wire version 6 or older); \
                 this build speaks {WIRE_VERSION}"
            ),
            WireError::BadMagic => write!(f, "blob magic missing"),
            WireError::BufferFull => write!(f, "output buffer too small"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

fn from_postcard(e: postcard::Error) -> WireError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => WireError::Truncated,
        postcard::Error::SerializeBufferFull => WireError::BufferFull,
        other => WireError::Malformed(other),
    }
}

/// A postcard output flavor that writes into a byte slice one byte at a
/// time.
///
/// postcard's own `Slice` flavor copies every multi-byte piece (each varint
/// is one) with `copy_nonoverlapping` of a length known only at run time,
/// which becomes a call to `memmove`: on the host benchmark
/// (`cargo bench -p ipc --bench wire`) that call was a third of the time of
/// encoding an MMIO trap. The pieces of a message are a few bytes long, so
/// a plain loop is faster, and needs no `unsafe`. A longer piece (a trap
/// message's fixed layout, [`crate::trap::layout`], is one) is copied at
/// once: byte by byte it was a third of the time of encoding one.
struct Bytes<'b> {
    buf: &'b mut [u8],
    used: usize,
}

impl<'b> postcard::ser_flavors::Flavor for Bytes<'b> {
    type Output = &'b mut [u8];

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self.buf.get_mut(self.used).ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.used += 1;
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 8 {
            return bytes.iter().try_for_each(|&byte| self.try_push(byte));
        }
        let end = self.used + bytes.len();
        let slot = self.buf.get_mut(self.used..end).ok_or(postcard::Error::SerializeBufferFull)?;
        slot.copy_from_slice(bytes);
        self.used = end;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<&'b mut [u8]> {
        let Bytes { buf, used } = self;
        buf.get_mut(..used).ok_or(postcard::Error::SerializeBufferFull)
    }
}

/// Encode `value` into `buf`; returns the used part.
pub fn encode<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], WireError> {
    postcard::serialize_with_flavor(value, Bytes { buf, used: 0 }).map_err(from_postcard)
}

/// Decode exactly one value from `bytes` (no trailing bytes allowed).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_BLOB_SIZE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(from_postcard)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Encode a message or reply in an [`Envelope`] of the current version.
pub fn encode_envelope<'b, T: Serialize>(
    seq: u64,
    generation: u32,
    body: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], WireError> {
    let envelope = Envelope { version: WIRE_VERSION, seq, generation, body };
    let used = encode(&envelope, buf)?;
    if used.len() > MAX_MESSAGE_SIZE {
        return Err(WireError::TooLarge(used.len()));
    }
    Ok(used)
}

/// Decode an [`Envelope`], refusing other versions and oversized input.
pub fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, WireError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    // The version is the first field: check it before the body, so that a
    // message from another version reports that rather than garbage.
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(from_postcard)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version { got: version, expected: WIRE_VERSION });
    }
    decode(bytes)
}

/// Encode `value` as one COBS frame (ending in a zero byte) into `buf`.
pub fn encode_frame<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], WireError> {
    postcard::to_slice_cobs(value, buf).map_err(from_postcard)
}

/// Decode one COBS frame in place (the trailing zero may be present or not).
pub fn decode_frame<T: DeserializeOwned>(frame: &mut [u8]) -> Result<T, WireError> {
    let len = cobs_decode_in_place(frame)?;
    decode(&frame[..len])
}

pub(crate) fn cobs_decode_in_place(frame: &mut [u8]) -> Result<usize, WireError> {
    // postcard::from_bytes_cobs would do both steps, but it does not tell a
    // bad COBS encoding apart from a bad body; keep them apart.
    let end = frame.iter().position(|&b| b == 0).unwrap_or(frame.len());
    let mut read = 0;
    let mut write = 0;
    while read < end {
        let code = usize::from(frame[read]);
        read += 1;
        for _ in 1..code {
            if read >= end {
                return Err(WireError::Truncated);
            }
            frame[write] = frame[read];
            write += 1;
            read += 1;
        }
        if code != 0xff && read < end {
            frame[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

/// Encode a blob for placing in memory: magic, little-endian u32 length,
/// postcard body.
pub fn encode_blob<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], WireError> {
    if buf.len() < 8 {
        return Err(WireError::BufferFull);
    }
    let (head, body) = buf.split_at_mut(8);
    let len = encode(value, body)?.len();
    if len + 8 > MAX_BLOB_SIZE {
        return Err(WireError::TooLarge(len + 8));
    }
    head[..4].copy_from_slice(&BLOB_MAGIC);
    // `len` is below MAX_BLOB_SIZE, so it fits in u32.
    head[4..].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(&mut buf[..len + 8])
}

/// Decode a blob written by [`encode_blob`] from memory that may hold more
/// bytes after it.
pub fn decode_blob<T: DeserializeOwned>(mem: &[u8]) -> Result<T, WireError> {
    if mem.len() < 8 {
        return Err(WireError::Truncated);
    }
    if mem[..4] != BLOB_MAGIC {
        return Err(WireError::BadMagic);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&mem[4..8]);
    // On a 32-bit target `len + 8` can overflow usize: compare without adding.
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_BLOB_SIZE - 8 {
        return Err(WireError::TooLarge(len.saturating_add(8)));
    }
    let body = mem.get(8..8 + len).ok_or(WireError::Truncated)?;
    decode(body)
}
