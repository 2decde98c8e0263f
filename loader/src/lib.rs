//! # loader: splitvisor's host command line
//!
//! `splitvisor run` boots a guest: it asks QEMU about the platform, places
//! the guest's kernel, initrd and device tree in guest RAM by the rules of
//! QEMU's own `-kernel`/`-initrd`, builds (or takes) the monitor, hands it
//! the VM configuration, and starts `qemu-system-arm` with the guest console
//! on the terminal. `splitvisor dtb` writes the guest device tree.
//!
//! This crate owns the CLI, the guest images and their placement, the guest
//! device tree, the VM configuration blob and the QEMU process. It never runs
//! guest code, never decides what a trap means, and holds no platform
//! address: QEMU's own device tree and device list say where things are.
//!
//! Modules: [`cli`] (arguments), [`platform`] (what QEMU says), [`images`]
//! (formats and placement), [`mod@dtb`] (device trees), [`monitor`] (the
//! monitor ELF and its build), [`config`] (the `ipc::VmConfig` blob),
//! [`plan`] (putting it together) and [`qemu`] (command line and process).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod cli;
pub mod config;
pub mod dtb;
pub mod images;
pub mod monitor;
pub mod plan;
pub mod platform;
pub mod qemu;

use qemu::Outcome;

/// Everything that stops splitvisor before or while it runs a VM; each
/// prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What it was.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No temporary directory.
    #[error("cannot create a temporary directory: {0}")]
    Temp(std::io::Error),
    /// An image cannot be used or placed.
    #[error(transparent)]
    Image(#[from] images::ImageError),
    /// The user's device tree is unusable.
    #[error("--dtb {path}: {source}")]
    UserDtb {
        /// The file.
        path: PathBuf,
        /// Why.
        source: dtb::DtbError,
    },
    /// The guest device tree could not be written.
    #[error(transparent)]
    Dtb(#[from] dtb::DtbError),
    /// The platform could not be read.
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    /// The monitor is unusable or did not build.
    #[error(transparent)]
    Monitor(#[from] monitor::MonitorError),
    /// The VM configuration was refused.
    #[error(transparent)]
    Config(#[from] config::VmConfigError),
    /// QEMU could not be run.
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    /// `run` without a kernel.
    #[error("no kernel to run (pass --kernel PATH)")]
    NoKernel,
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// `splitvisor run`: boot the VM, restart it on every guest reset unless
/// `--no-reboot`, and say how it ended.
pub fn run(args: &cli::RunArgs, log_level: config::LogLevel) -> Result<Outcome, Error> {
    let staged = plan::prepare(args, log_level)?;
    let signals = qemu::StopSignals::install().map_err(Error::Signals)?;
    let deadline = args.timeout.map(|secs| Instant::now() + Duration::from_secs(secs));
    loop {
        let outcome = qemu::run(&staged.invocation, deadline, &signals)?;
        if outcome == Outcome::Reset && !args.no_reboot {
            log::info!("the guest reset; restarting it from the same images");
            continue;
        }
        return Ok(outcome);
    }
}

/// `splitvisor dtb`.
pub fn dtb(args: &cli::DtbArgs) -> Result<(), Error> {
    plan::write_dtb(args)
}
