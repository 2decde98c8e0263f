//! # loader: splitvisor's host command line
//!
//! `splitvisor run` boots a guest: it asks QEMU about the platform, places
//! the guest's kernel, initrd and device tree in guest RAM by the rules of
//! QEMU's own `-kernel`/`-initrd`, builds (or takes) the monitor, hands it
//! the VM configuration, and starts `qemu-system-arm` with the guest console
//! on the terminal. Without `--kernel` it boots the default guest, Debian's
//! armmp kernel with a busybox initramfs, fetched with apt and cached.
//! `splitvisor dtb` writes the guest device tree; `splitvisor guest`
//! fetches the default guest, says where it is and builds its initramfs.
//!
//! This crate owns the CLI, the guest images and their placement, the
//! default guest and its cache, the guest device tree, the VM configuration
//! blob, the QEMU process and the console on the host terminal. It never
//! runs guest code, never decides what a trap means, and holds no platform
//! address: QEMU's own device tree and device list say where things are.
//!
//! Modules: [`cli`] (arguments), [`platform`] (what QEMU says), [`images`]
//! (formats and placement), [`mod@dtb`] (device trees), [`monitor`] (the
//! monitor ELF and its build), [`config`] (the `ipc::VmConfig` blob),
//! [`guest`] (the default guest), [`initramfs`] (cpio archives), [`plan`]
//! (putting it together), [`qemu`] (command line and process), [`console`]
//! (the terminal), [`setup`] (installing QEMU on first use), [`stats`]
//! (`--stats`), [`trace`] (traces and replay) and [`isolate`] (replay with
//! each server in its own supervised process, fault injection).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod dtb;
pub mod guest;
pub mod images;
pub mod initramfs;
pub mod isolate;
pub mod monitor;
pub mod plan;
pub mod platform;
pub mod qemu;
pub mod setup;
pub mod stats;
pub mod trace;

use config::LogLevel;
use console::ConsoleInput;
use qemu::{LogFilter, Outcome};

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
    /// QEMU is missing and could not be installed.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    /// The default guest is not there and could not be fetched.
    #[error(transparent)]
    Guest(#[from] guest::GuestError),
    /// `run` without a kernel.
    #[error("no kernel to run (pass --kernel PATH)")]
    NoKernel,
    /// A trace could not be written or read.
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    /// The path of the running executable is unknown.
    #[error("cannot find the splitvisor executable to start server processes from: {0}")]
    Exe(std::io::Error),
    /// A server process stopped serving.
    #[error("serve: {0}")]
    Serve(isolate::serve::ServeError),
    /// `splitvisor bench` failed.
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The monitor's log level: the user's, but at least INFO with `--stats`
/// (the statistics line is an INFO line; [`LogFilter`] hides the other INFO
/// lines the user did not ask for).
pub fn monitor_log_level(user: LogLevel, stats: bool) -> LogLevel {
    if stats {
        user.max(LogLevel::Info)
    } else {
        user
    }
}

/// `splitvisor run`: boot the VM, restart it on every guest reset unless
/// `--no-reboot`, and say how it ended (with `--stats`, print the
/// monitor's counters first).
pub fn run(args: &cli::RunArgs, log_level: LogLevel) -> Result<Outcome, Error> {
    ensure_qemu(&args.guest)?;
    let staged = plan::prepare(args, monitor_log_level(log_level, args.stats))?;
    let signals = qemu::StopSignals::install().map_err(Error::Signals)?;
    let deadline = args.timeout.map(|secs| Instant::now() + Duration::from_secs(secs));
    let filter = LogFilter { show: log_level.filter(), stats: args.stats };
    let trace = args.trace.as_deref().map(trace::TraceSink::create).transpose()?;
    let mut stats = stats::Stats::default();
    let flags = console::StdioFlags::save();
    // Raw mode from here: every error above printed on a normal terminal.
    let console = ConsoleInput::from_stdin();
    let result = loop {
        let ran = qemu::run(&staged.invocation, deadline, &signals, &console, filter, trace.as_ref());
        // QEMU leaves the descriptors it shared with us non-blocking.
        flags.restore();
        let end = match ran {
            Ok(end) => end,
            Err(e) => break Err(Error::from(e)),
        };
        stats.add_run(&end.stats, end.elapsed);
        if end.outcome == Outcome::Reset && !args.no_reboot {
            log::info!("the guest reset; restarting it from the same images");
            continue;
        }
        break Ok(end.outcome);
    };
    // The terminal as it was before the table and the last words.
    drop(console);
    if let Some(trace) = &trace {
        trace.flush()?;
    }
    if args.stats {
        eprint!("{}", stats.render());
    }
    result
}

/// `splitvisor trace ...`.
pub fn trace_command(command: &cli::TraceCommand) -> Result<(), Error> {
    match command {
        cli::TraceCommand::Show { file, json } => {
            let stdout = std::io::stdout();
            match trace::show(file, *json, &mut stdout.lock()) {
                // The reader stopped reading (`| head`): nothing is wrong.
                Err(trace::TraceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {}
                result => result?,
            }
        }
    }
    Ok(())
}

/// `splitvisor replay`: 0 when every reply matches, 1 at the first
/// divergence (which is printed); with `--isolate process`, 4 when a server
/// fault stopped the replay.
pub fn replay(args: &cli::ReplayArgs, log_level: LogLevel) -> Result<u8, Error> {
    let started = Instant::now();
    let file = &args.file;
    if args.isolate == isolate::Isolation::None {
        return Ok(match trace::replay(file)? {
            trace::Replayed::Matched(counts) => {
                println!(
                    "replay: every reply matched ({} vcpu, {} vgic, {} vtimer requests) in {:.3} s",
                    counts[0],
                    counts[1],
                    counts[2],
                    started.elapsed().as_secs_f64()
                );
                0
            }
            trace::Replayed::Diverged(d) => {
                print_divergence("divergence", &d);
                1
            }
        });
    }
    let options = isolate::Options {
        exe: std::env::current_exe().map_err(Error::Exe)?,
        budget: Duration::from_millis(args.budget_ms.unwrap_or(cli::ReplayArgs::BUDGET_MS)),
        checkpoint_every: args.checkpoint_every.unwrap_or(cli::ReplayArgs::CHECKPOINT_EVERY),
        on_fault: args.on_server_fault.unwrap_or_default(),
        injections: args.inject.clone(),
        pid_dir: args.pid_dir.clone(),
        log_level,
    };
    let replayed = isolate::replay(file, options)?;
    let driven = &replayed.driven;
    let counts = driven.counts;
    let retried = replayed.recoveries.iter().filter(|r| r.outcome == isolate::RecoveryOutcome::Retried).count();
    let summary = format!(
        "{} vcpu, {} vgic, {} vtimer requests, each server in its own process; {} recoveries ({retried} retried \
         successfully), {} answered by policy ({} of them differing); {} checkpoints ({} KiB, {:.1} ms) in {:.3} s",
        counts[0],
        counts[1],
        counts[2],
        replayed.recoveries.len(),
        driven.policy_answers,
        driven.policy_divergences,
        replayed.checkpoints.taken,
        replayed.checkpoints.bytes / 1024,
        replayed.checkpoints.time.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    Ok(match &driven.end {
        trace::End::Completed if driven.policy_divergences == 0 => {
            println!("replay: every reply matched ({summary})");
            0
        }
        trace::End::Completed => {
            println!(
                "replay: {} policy answer(s) differ from the recorded replies ({summary})",
                driven.policy_divergences
            );
            if let Some(d) = &driven.first_policy_divergence {
                print_divergence("first policy answer that differs", d);
            }
            1
        }
        trace::End::Diverged(d) => {
            println!("replay: {summary}");
            print_divergence("divergence", d);
            1
        }
        trace::End::Halted { index, halt } => {
            println!("replay: stopped at record #{index} ({summary})");
            match halt {
                isolate::supervisor::Halt::Stopped(stopped) => {
                    eprintln!("splitvisor: replay stopped (--on-server-fault stop): {stopped}");
                    eprintln!("splitvisor:   request: {:?}", stopped.request);
                }
                isolate::supervisor::Halt::Start(server, fault) => {
                    eprintln!("splitvisor: replay stopped: the {} server process {fault}", server.name());
                }
            }
            ipc::exit::MONITOR_FAULT
        }
    })
}

fn print_divergence(what: &str, d: &trace::Divergence) {
    println!("replay: {what} at record #{} (request #{} to {}):", d.index, d.seq, d.server.name());
    println!("  request:  {:?}", d.request);
    println!("  recorded: {:?}", d.expected);
    println!("  replayed: {:?}", d.actual);
}

/// `splitvisor serve SERVER` (the server process of `replay --isolate
/// process`).
pub fn serve(server: ipc::ServerId, generation: u32, injections: &[ipc::fault::Injection]) -> Result<(), Error> {
    isolate::serve::serve_stdio(server, generation, injections).map_err(Error::Serve)
}

/// `splitvisor bench`: run the items, print the table.
pub fn bench(args: &cli::BenchArgs) -> Result<(), Error> {
    let against = args.against.as_deref().map(bench::read_json).transpose()?;
    let show = |figures: &[bench::Figures]| {
        print!("{}", bench::render(figures));
        if let Some(baseline) = &against {
            print!("{}", bench::render_against(figures, baseline));
        }
    };
    if let Some(json) = &args.from_json {
        let figures = bench::read_json(json)?;
        if let Some(svg) = &args.plot {
            bench::write_plot(&figures, svg)?;
        }
        show(&figures);
        return Ok(());
    }
    setup::ensure_qemu()?;
    let items =
        if args.items.is_empty() { bench::ITEMS.iter().map(|s| s.to_string()).collect() } else { args.items.clone() };
    let options = bench::Options {
        n: args.iterations,
        items,
        json: Some(args.json.clone()),
        timeout: args.timeout,
        no_isolation: args.no_isolation,
        no_domains: args.no_domains,
        no_console_image: args.no_console_image,
        wfi: args.wfi,
        vtimer: args.vtimer,
        direct_call: args.direct_call,
        checkpoint_every: args.checkpoint_every,
    };
    let figures = bench::run(&options)?;
    if let Some(svg) = &args.plot {
        bench::write_plot(&figures, svg)?;
    }
    show(&figures);
    Ok(())
}

/// `splitvisor dtb`.
pub fn dtb(args: &cli::DtbArgs) -> Result<(), Error> {
    ensure_qemu(&args.guest)?;
    plan::write_dtb(args)
}

/// Install the default QEMU on first use (a `--qemu` of the user's is
/// taken as it is).
fn ensure_qemu(guest: &cli::GuestArgs) -> Result<(), Error> {
    if guest.qemu.as_os_str() == setup::QEMU {
        setup::ensure_qemu()?;
    }
    Ok(())
}

/// `splitvisor guest ...`.
pub fn guest_command(command: &cli::GuestCommand) -> Result<(), Error> {
    let cache = guest::Cache::locate()?;
    match command {
        cli::GuestCommand::Fetch { refresh } => {
            let fetched = if *refresh { guest::fetch(&cache, true)? } else { guest::ensure(&cache)? };
            println!("kernel:  {}", fetched.kernel.display());
            println!("busybox: {}", fetched.busybox.display());
        }
        cli::GuestCommand::Path { kernel, busybox, dir } => {
            if *kernel {
                println!("{}", cache.kernel().display());
            } else if *busybox {
                println!("{}", cache.busybox().display());
            } else if *dir {
                println!("{}", cache.dir().display());
            } else {
                let state =
                    |p: &std::path::Path| if p.is_file() { "" } else { "  (not fetched: splitvisor guest fetch)" };
                println!("cache:   {}", cache.dir().display());
                println!("kernel:  {}{}", cache.kernel().display(), state(&cache.kernel()));
                println!("busybox: {}{}", cache.busybox().display(), state(&cache.busybox()));
                if let Some(packages) = cache.packages() {
                    for line in packages.lines() {
                        println!("from:    {line}");
                    }
                }
            }
        }
        cli::GuestCommand::Initramfs { init, output } => {
            let default = guest::ensure(&cache)?;
            let init = init
                .as_deref()
                .map(|p| std::fs::read(p).map_err(|source| Error::Read { what: "init", path: p.into(), source }))
                .transpose()?;
            let bytes = guest::initramfs(&default, init)?;
            std::fs::write(output, &bytes).map_err(|source| Error::Write { path: output.clone(), source })?;
            log::info!("wrote {} ({} bytes)", output.display(), bytes.len());
        }
    }
    Ok(())
}
