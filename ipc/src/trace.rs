//! Trace records: what a recorded run is made of, in order.
//!
//! A trace starts with the VM configuration (from which every server's
//! initial state is built) and then holds each request and each reply, with
//! the server and sequence number that tie them together.

use serde::{Deserialize, Serialize};

use crate::action::Reply;
use crate::config::VmConfig;
use crate::ids::ServerId;
use crate::msg::{Message, ServerError};

/// One record of a trace.
// A reply (up to MAX_ACTIONS actions) is much larger than the other records;
// boxing it would need an allocator, which this no_std crate does not have.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TraceRecord {
    /// The configuration the VM was started with; always the first record.
    Config(VmConfig),
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
