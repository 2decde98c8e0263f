//! The `direct-call` build: each server called as a plain function, for
//! measuring what the message path costs (`splitvisor bench --direct-call`,
//! issue 8's item 6).
//!
//! The default build hands every request to its server through the message
//! path: the router builds the request, and the server's `Guarded` copies
//! it into the server's protection domain, switches to the domain's
//! translation and stack under a watchdog, logs it for replay, takes
//! checkpoints, copies the reply out of the domain and checks it. In this
//! build a [`Direct`] stands where the `Guarded` stands: the same server
//! code (`Server::handle_message_into`, the function the domain runs) is
//! called on the monitor's stack, in its translation, and writes its reply
//! straight into the router's buffer; no containment, checkpoint, replay
//! log, reply check or trace. What is left, the router's routing and
//! applying of replies, is what any hypervisor built of these servers
//! would do with a function call's result. So the default build's figures
//! minus this build's are the cost of messaging and isolation together.
//!
//! Not for running guests one cares about: a server's fault stops the
//! monitor, and `--inject`, `--trace` and the isolation options do
//! nothing (the monitor says so at boot).

use ipc::{Message, Reply, Server, ServerError, VmConfig};

/// A server called directly.
pub struct Direct<S> {
    server: S,
}

impl<S: Server> Direct<S> {
    /// Hold `server`. (`Option` to match `isolate::Guarded::new`.)
    pub fn new(server: S) -> Option<Self> {
        Some(Direct { server })
    }

    /// Call the server on `message`; its reply is written into `reply`.
    #[inline(always)]
    pub fn deliver(&mut self, message: &Message, _config: &VmConfig, reply: &mut Reply) -> Result<(), ServerError> {
        super::call_in_place(&mut self.server, message, reply)
    }
}

/// Say at boot what this build leaves out of the configuration.
pub fn announce(config: &VmConfig) {
    log::warn!(
        "direct-call build: the servers are called as functions, without containment, checkpoints, reply checks \
         or traces (for measuring the message path; a server's fault stops the monitor)"
    );
    if !config.faults.is_empty() || config.trace {
        log::warn!("direct-call build: --inject and --trace do nothing here");
    }
}
