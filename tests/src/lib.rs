//! The harness of splitvisor's integration tests.
//!
//! Owns what the tests in `tests/tests/` share: building the bare-metal test
//! guests (`tests/guests`, their own workspace, for `armv7a-none-eabi`) and
//! the `splitvisor` binary, once per test process; finding
//! `qemu-system-arm`; running a program with a time limit while capturing
//! its output; and reading the guests' PASS/FAIL report.
//!
//! Never builds into the target directory of the `cargo test` that runs it:
//! that cargo holds the directory's lock while the tests run, so a nested
//! build there could wait for it forever. Everything nested goes to
//! `<target>/splitvisor-tests/`, found from `CARGO_TARGET_TMPDIR`, which
//! cargo gives integration tests (see [`Harness::new`]).

#![deny(missing_docs)]

pub mod artifacts;
pub mod output;
pub mod process;
pub mod qemu;
pub mod smp;

use std::path::PathBuf;

pub use artifacts::{Guest, Harness};
pub use output::{Expect, GuestOutput};
pub use process::{run, End, Run};

/// Everything that can keep a test from running its subject.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Waiting for or killing a program failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A nested cargo build failed.
    #[error("{what} failed ({status}): {command}\n{stderr}")]
    Build {
        /// What was built.
        what: String,
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// The bare-metal Rust target is missing and could not be added.
    #[error("the Rust target the guests and the monitor need: {0}")]
    Target(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A guest ELF is not what the raw-image conversion expects.
    #[error("{path}: {why}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// qemu-system-arm is not installed.
    #[error(
        "qemu-system-arm is not in PATH: install it (Debian: `apt-get install -y qemu-system-arm`); \
         these tests do not skip without it"
    )]
    QemuMissing,
    /// A build failed earlier in this test process (the first test to need
    /// it reported the whole error).
    #[error("{0}")]
    Earlier(String),
}

/// Unwraps a harness result, failing the test with the error's message.
pub trait OrFail<T> {
    /// The value, or a test failure that prints the error.
    fn or_fail(self) -> T;
}

impl<T> OrFail<T> for Result<T, HarnessError> {
    #[track_caller]
    fn or_fail(self) -> T {
        match self {
            Ok(value) => value,
            Err(err) => panic!("{err}"),
        }
    }
}
