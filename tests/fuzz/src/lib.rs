//! # splitvisor-fuzz: libFuzzer targets for every splitvisor component
//!
//! The targets live in `fuzz_targets/` (one binary each, run with
//! `cargo fuzz`, see `README.md`); this library holds what they share: a
//! generator of valid VM configurations ([`config`]), the invariant checks
//! every server target applies ([`check`]), a logger that formats and drops
//! every record so that log arguments are exercised too ([`logsink`]), a
//! simulation of the GICv2 virtual interface's list registers ([`gich`]), an
//! independent reference model of the GICv2 distributor ([`gicd_ref`]), and
//! the format of seeds made from recorded traces ([`trace_seed`]).
//!
//! Invariant breaches are panics with a message that says which invariant:
//! libFuzzer reports them as crashes and keeps the input.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod config;
pub mod gicd_ref;
pub mod gich;
pub mod logsink;
pub mod trace_seed;
