//! The host link (`ipc::hostlink`): console bytes and monitor records
//! multiplexed on one UART stream.
//!
//! - Round trip: an arbitrary interleaving of console output and records of
//!   every kind (payloads up to the receiver's limit), encoded as the
//!   monitor does, demultiplexes to exactly the same console bytes and
//!   records, in order, with nothing damaged.
//! - Garbage: arbitrary bytes never panic the demultiplexer, and after two
//!   zero bytes it is back in step: the next record sent arrives intact.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ipc::hostlink::{encode_console, encode_record, Demux, Event, RecordKind, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
enum Item {
    Console(Vec<u8>),
    Record(RecordKind, Vec<u8>),
}

fn kind(u: &mut Unstructured<'_>) -> arbitrary::Result<RecordKind> {
    Ok(*u.choose(&[RecordKind::Log, RecordKind::Trace, RecordKind::Exit])?)
}

fn payload(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    // Long runs without zeros are where COBS has its corner cases (254).
    let mut bytes: Vec<u8> = Vec::arbitrary(u)?;
    if u.arbitrary::<bool>()? {
        let filler = u.int_in_range(1..=255u8)?;
        let run = u.int_in_range(0..=600usize)?;
        let at = u.choose_index(bytes.len() + 1)?;
        bytes.splice(at..at, std::iter::repeat_n(filler, run));
    }
    bytes.truncate(MAX_RECORD);
    Ok(bytes)
}

fn items(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Item>> {
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < 64 {
        out.push(if u.arbitrary::<bool>()? {
            Item::Console(Vec::arbitrary(u)?)
        } else {
            Item::Record(kind(u)?, payload(u)?)
        });
    }
    Ok(out)
}

fn encode(items: &[Item]) -> (Vec<u8>, Vec<Event>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for item in items {
        match item {
            Item::Console(bytes) => {
                encode_console(bytes, &mut |b| wire.push(b));
                expected.extend(bytes.iter().map(|&b| Event::Console(b)));
            }
            Item::Record(kind, payload) => {
                encode_record(*kind, payload, &mut |b| wire.push(b));
                expected.push(Event::Record(*kind, payload.clone()));
            }
        }
    }
    (wire, expected)
}

fuzz_target!(|data: &[u8]| {
    // Garbage first.
    let mut demux = Demux::new();
    for &b in data {
        if let Some(Event::Record(_, p)) = demux.feed(b) {
            assert!(p.len() < data.len(), "a record is longer than the stream it came from");
        }
    }
    let _ = demux.feed(0);
    let _ = demux.feed(0);
    let mut wire = Vec::new();
    encode_record(RecordKind::Log, b"in step", &mut |b| wire.push(b));
    let events: Vec<Event> = wire.iter().filter_map(|&b| demux.feed(b)).collect();
    assert_eq!(events, [Event::Record(RecordKind::Log, b"in step".to_vec())], "not back in step after two zeros");

    // Then the same bytes as structure.
    let mut u = Unstructured::new(data);
    let Ok(items) = items(&mut u) else { return };
    let (wire, expected) = encode(&items);
    let mut demux = Demux::new();
    let events: Vec<Event> = wire.iter().filter_map(|&b| demux.feed(b)).collect();
    assert_eq!(events, expected, "host link round trip of {items:?}");
});
