//! Trace records: what a recorded run is made of, in order.
//!
//! A trace starts with the VM configuration (from which every server's
//! initial state is built) and then holds each request and each reply, with
//! the server and sequence number that tie them together.
//!
//! A trace is kept in files and replayed by later builds, so its first
//! record says which wire version wrote it: [`decode_record`] refuses a
//! trace of another version (or of one from before versions were recorded)
//! by name, instead of misreading its messages.

use serde::{Deserialize, Serialize};

use crate::action::Reply;
use crate::config::VmConfig;
use crate::ids::ServerId;
use crate::msg::{Message, ServerError};
use crate::wire::{self, WireError, WIRE_VERSION};

/// What precedes the wire version in a trace's configuration record.
pub const TRACE_MARK: [u8; 4] = *b"SPVT";

/// One record of a trace.
// A reply (up to MAX_ACTIONS actions) is much larger than the other records;
// boxing it would need an allocator, which this no_std crate does not have.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TraceRecord {
    /// The configuration the VM was started with; always the first record.
    /// On the wire (not in human-readable formats) [`TRACE_MARK`] and the
    /// [`WIRE_VERSION`] of the build that recorded it, two bytes
    /// little-endian, come before it.
    Config(#[serde(with = "versioned")] VmConfig),
    /// A request delivered to a server.
    Request {
        /// Sequence number (per VM, over all servers).
        seq: u64,
        /// The message.
        message: Message,
    },
    /// A server's answer to request `seq`.
    Reply {
        /// The request's sequence number.
        seq: u64,
        /// The server that answered.
        server: ServerId,
        /// The reply or the error.
        result: Result<Reply, ServerError>,
    },
}

/// The postcard variant index of [`TraceRecord::Config`].
const CONFIG_TAG: u8 = 0;

/// Decode one trace record from its COBS frame (in place; the trailing
/// zero may be present or not), as [`wire::decode_frame`] does, but refuse
/// a configuration record written by another wire version with
/// [`WireError::Version`], and one written before traces carried their
/// version with [`WireError::Unversioned`].
pub fn decode_record(frame: &mut [u8]) -> Result<TraceRecord, WireError> {
    let len = wire::cobs_decode_in_place(frame)?;
    let payload = frame.get(..len).ok_or(WireError::Truncated)?;
    if let Some((&CONFIG_TAG, rest)) = payload.split_first() {
        match rest.split_first_chunk::<6>() {
            Some(([m0, m1, m2, m3, v0, v1], _)) if [*m0, *m1, *m2, *m3] == TRACE_MARK => {
                let got = u16::from_le_bytes([*v0, *v1]);
                if got != WIRE_VERSION {
                    return Err(WireError::Version { got, expected: WIRE_VERSION });
                }
            }
            _ => return Err(WireError::Unversioned),
        }
    }
    wire::decode(payload)
}

/// The configuration record's serde form: mark, version, configuration.
mod versioned {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TRACE_MARK;
    use crate::config::VmConfig;
    use crate::wire::WIRE_VERSION;

    pub(super) fn serialize<S: Serializer>(config: &VmConfig, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return config.serialize(serializer);
        }
        (TRACE_MARK, WIRE_VERSION.to_le_bytes(), config).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<VmConfig, D::Error> {
        if deserializer.is_human_readable() {
            return VmConfig::deserialize(deserializer);
        }
        let (mark, version, config) = <([u8; 4], [u8; 2], VmConfig)>::deserialize(deserializer)?;
        if mark != TRACE_MARK || u16::from_le_bytes(version) != WIRE_VERSION {
            return Err(D::Error::custom("a trace of another wire version"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;
    use crate::wire::WireError;

    fn frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::new();
        crate::hostlink::encode_cobs(payload, &mut |b| out.push(b));
        out
    }

    fn config_record() -> std::vec::Vec<u8> {
        let mut buf = [0u8; 1024];
        wire::encode(&TraceRecord::Config(VmConfig::example(2)), &mut buf).unwrap().to_vec()
    }

    #[test]
    fn a_configuration_record_carries_the_wire_version() {
        let payload = config_record();
        assert_eq!(payload[0], CONFIG_TAG);
        assert_eq!(payload[1..5], TRACE_MARK);
        assert_eq!(payload[5..7], WIRE_VERSION.to_le_bytes());
        assert_eq!(decode_record(&mut frame(&payload)), Ok(TraceRecord::Config(VmConfig::example(2))));
        // The plain frame decoder reads it too.
        assert_eq!(
            wire::decode_frame::<TraceRecord>(&mut frame(&payload)),
            Ok(TraceRecord::Config(VmConfig::example(2)))
        );
    }

    #[test]
    fn human_readable_formats_see_the_configuration_alone() {
        let record = TraceRecord::Config(VmConfig::example(2));
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, std::format!(r#"{{"Config":{}}}"#, serde_json::to_string(&VmConfig::example(2)).unwrap()));
        assert_eq!(serde_json::from_str::<TraceRecord>(&json).unwrap(), record);
    }

    #[test]
    fn a_trace_of_another_version_is_refused_by_name() {
        let mut payload = config_record();
        payload[5..7].copy_from_slice(&6u16.to_le_bytes());
        assert_eq!(decode_record(&mut frame(&payload)), Err(WireError::Version { got: 6, expected: WIRE_VERSION }));
        assert!(matches!(wire::decode_frame::<TraceRecord>(&mut frame(&payload)), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_trace_from_before_versions_were_recorded_is_refused_by_name() {
        // Wire version 6 and older: the configuration right after the tag.
        let mut payload = std::vec![CONFIG_TAG];
        let mut buf = [0u8; 1024];
        payload.extend_from_slice(wire::encode(&VmConfig::example(2), &mut buf).unwrap());
        assert_eq!(decode_record(&mut frame(&payload)), Err(WireError::Unversioned));
        assert!(WireError::Unversioned.to_string().contains("wire version 6 or older"));
    }

    #[test]
    fn other_records_decode_as_before() {
        let record = TraceRecord::Reply { seq: 9, server: ServerId::Vgic, result: Err(ServerError::Unexpected) };
        let mut buf = [0u8; 64];
        let payload = wire::encode(&record, &mut buf).unwrap();
        assert_eq!(decode_record(&mut frame(payload)), Ok(record));
        assert_eq!(decode_record(&mut []), Err(WireError::Truncated));
    }
}
