//! The ipc wire format on arbitrary bytes, and every catalogue value through
//! every encoding.
//!
//! Bytes side: the bytes go into every decoder (envelope of a request,
//! envelope of a reply, COBS frame, VM configuration blob, trace record, and
//! the byte-stream transport). Whatever decodes must re-encode, and the
//! re-encoding must decode to the same value (and re-encode to the same
//! bytes: encoding is a function of the value).
//!
//! Value side: the same bytes, read as structured input, give arbitrary
//! catalogue values; each must encode within the wire format's limits
//! (a request or reply the servers can produce that does not fit an
//! envelope could not cross a stream) and decode back unchanged.
#![no_main]

use std::fmt::Debug;
use std::io::Cursor;

use arbitrary::{Arbitrary, Unstructured};
use ipc::trace::TraceRecord;
use ipc::transport::stream::FramedStream;
use ipc::wire::{self, WireError, MAX_BLOB_SIZE};
use ipc::{Envelope, Message, Reply, ServerError, VmConfig, MAX_MESSAGE_SIZE, WIRE_VERSION};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

type Answer = Result<Reply, ServerError>;

/// A decoded envelope re-encodes to bytes that decode to the same envelope
/// and encode to the same bytes again.
fn envelope_again<T: Serialize + DeserializeOwned + PartialEq + Debug>(env: &Envelope<T>) {
    assert_eq!(env.version, WIRE_VERSION, "decode_envelope let another version through");
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let bytes = wire::encode_envelope(env.seq, env.generation, &env.body, &mut buf)
        .unwrap_or_else(|e| panic!("a decoded envelope does not re-encode: {e}: {env:?}"))
        .to_vec();
    let again: Envelope<T> =
        wire::decode_envelope(&bytes).unwrap_or_else(|e| panic!("re-encoded envelope does not decode: {e}: {env:?}"));
    assert_eq!(&again, env);
    let mut buf2 = [0u8; MAX_MESSAGE_SIZE];
    let bytes2 = wire::encode_envelope(again.seq, again.generation, &again.body, &mut buf2).expect("encodes");
    assert_eq!(bytes, bytes2, "encoding is not a function of the value");
}

/// A value decoded from a frame re-frames and decodes to itself.
fn frame_again<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let mut buf = vec![0u8; MAX_BLOB_SIZE * 2];
    let frame = wire::encode_frame(value, &mut buf).unwrap_or_else(|e| panic!("does not re-frame: {e}: {value:?}"));
    assert_eq!(frame.last(), Some(&0), "a frame ends with its zero byte");
    assert!(!frame[..frame.len() - 1].contains(&0), "a COBS frame holds no zero before its end");
    let again: T = wire::decode_frame(frame).unwrap_or_else(|e| panic!("re-framed value does not decode: {e}"));
    assert_eq!(&again, value);
}

fn frame_decode<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let mut copy = data.to_vec();
    if let Ok(value) = wire::decode_frame::<T>(&mut copy) {
        frame_again(&value);
    }
}

fn plain_decode<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    if let Ok(value) = wire::decode::<T>(data) {
        let bytes = postcard::to_allocvec(&value).expect("encodes");
        assert!(bytes.len() <= data.len(), "re-encoding is longer than the bytes it came from");
        let again: T = wire::decode(&bytes).expect("decodes");
        assert_eq!(again, value);
    }
}

fn bytes_side(data: &[u8]) {
    match wire::decode_envelope::<Message>(data) {
        Ok(env) => envelope_again(&env),
        Err(WireError::TooLarge(n)) => assert!(n > MAX_MESSAGE_SIZE),
        Err(_) => {}
    }
    if let Ok(env) = wire::decode_envelope::<Answer>(data) {
        envelope_again(&env);
    }
    frame_decode::<Envelope<Message>>(data);
    frame_decode::<Envelope<Answer>>(data);
    frame_decode::<TraceRecord>(data);
    plain_decode::<TraceRecord>(data);
    plain_decode::<Message>(data);

    match wire::decode_blob::<VmConfig>(data) {
        Ok(config) => {
            // Whatever a blob says, checking it must not panic.
            let _ = config.validate();
            let mut buf = [0u8; MAX_BLOB_SIZE];
            let blob = wire::encode_blob(&config, &mut buf).expect("a decoded configuration re-encodes");
            let again: VmConfig = wire::decode_blob(blob).expect("re-encoded blob decodes");
            assert_eq!(again, config);
            // The blob decoder reads only its own bytes: trailing memory
            // does not matter.
            let mut longer = blob.to_vec();
            longer.extend_from_slice(data);
            assert_eq!(wire::decode_blob::<VmConfig>(&longer), Ok(config));
        }
        Err(WireError::BadMagic) => assert!(data.len() >= 8 && data[..4] != wire::BLOB_MAGIC),
        Err(_) => {}
    }

    // The stream transport: read envelopes until the stream ends or fails.
    let mut stream = FramedStream::new(Cursor::new(data), std::io::sink());
    for _ in 0..data.len() + 1 {
        match stream.recv::<Message>() {
            Ok(Some(env)) => envelope_again(&env),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Arbitrary values of the catalogue encode within the limits and come back.
fn value_side(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(message) = Message::arbitrary(&mut u) else { return };
    let Ok(answer) = Answer::arbitrary(&mut u) else { return };
    let (seq, generation) = (u64::arbitrary(&mut u).unwrap_or(0), u32::arbitrary(&mut u).unwrap_or(0));

    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let bytes = wire::encode_envelope(seq, generation, &message, &mut buf)
        .unwrap_or_else(|e| panic!("a request does not fit an envelope: {e}: {message:?}"))
        .to_vec();
    let env: Envelope<Message> = wire::decode_envelope(&bytes).expect("request envelope decodes");
    assert_eq!((env.seq, env.generation, &env.body), (seq, generation, &message));

    let bytes = wire::encode_envelope(seq, generation, &answer, &mut buf)
        .unwrap_or_else(|e| panic!("a reply does not fit an envelope: {e}: {answer:?}"))
        .to_vec();
    let env: Envelope<Answer> = wire::decode_envelope(&bytes).expect("reply envelope decodes");
    assert_eq!(env.body, answer);

    // Through the byte-stream transport, as a server process would see it.
    let mut wire_bytes = Vec::new();
    FramedStream::new(std::io::empty(), &mut wire_bytes).send(seq, generation, &message).expect("sends");
    let mut stream = FramedStream::new(Cursor::new(wire_bytes), std::io::sink());
    let got = stream.recv::<Message>().expect("receives").expect("one envelope");
    assert_eq!(got.body, message);
    assert!(matches!(stream.recv::<Message>(), Ok(None)), "one envelope sent, one received");

    if let Ok(record) = TraceRecord::arbitrary(&mut u) {
        frame_again(&record);
    }
    if let Ok(config) = VmConfig::arbitrary(&mut u) {
        let _ = config.validate();
        let mut buf = [0u8; MAX_BLOB_SIZE];
        let blob = wire::encode_blob(&config, &mut buf).expect("any configuration fits a blob");
        assert_eq!(wire::decode_blob::<VmConfig>(blob), Ok(config));
    }
}

fuzz_target!(|data: &[u8]| {
    bytes_side(data);
    value_side(data);
});
