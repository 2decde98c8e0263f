//! QEMU: the command line that boots the monitor with the guest images
//! beside it, and the process that runs it (time-out, signals, and the exit
//! status the monitor reports).
//!
//! Everything the monitor says reaches splitvisor on one stream, QEMU's
//! standard output (the physical UART, `-serial stdio`): the guest's console
//! bytes and the monitor's records (log lines, the exit status), framed as
//! `ipc::hostlink` says. splitvisor takes it apart: console bytes go to our
//! standard output, log lines to standard error as the log level says (the
//! statistics lines are kept for `--stats`), the exit status decides the
//! outcome. QEMU's own messages arrive on its standard error and are passed
//! on as they are. Semihosting is off: QEMU would answer it from the guest
//! too, which would let a guest write host files or fake its exit status.
//! Input comes from where [`crate::console`] chooses.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ipc::exit;
use ipc::hostlink::{Demux, Event, RecordKind};

use crate::console::{self, ConsoleInput};
use crate::stats;
use crate::trace::TraceSink;

/// The machine every splitvisor VM runs on.
pub const MACHINE: &str = "virt,virtualization=on,gic-version=2";
/// The CPU model.
pub const CPU: &str = "cortex-a15";
/// How often the run loop looks at QEMU, the clock and the signal flags.
const POLL: Duration = Duration::from_millis(20);
/// How long QEMU gets to end after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Why QEMU could not be run.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The QEMU binary is not there.
    #[error("{0} not found: install it with `apt-get install qemu-system-arm` (or pass --qemu PATH)")]
    NotFound(String),
    /// Spawning or waiting failed.
    #[error("cannot run {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A helper run of QEMU took too long.
    #[error("{program} did not finish within {secs} s")]
    Hung {
        /// The program.
        program: String,
        /// The limit.
        secs: u64,
    },
}

fn spawn_error(program: &OsStr, source: std::io::Error) -> QemuError {
    let program = program.to_string_lossy().into_owned();
    if source.kind() == std::io::ErrorKind::NotFound {
        QemuError::NotFound(program)
    } else {
        QemuError::Io { program, source }
    }
}

/// What a short helper run of QEMU produced.
#[derive(Debug)]
pub struct Captured {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// Run `cmd` with `input` on its standard input, capture its output, and
/// kill it if it has not finished within `limit`.
pub fn run_captured(cmd: &mut Command, input: &[u8], limit: Duration) -> Result<Captured, QemuError> {
    let program = cmd.get_program().to_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&program, e))?;
    let io_error = |source| QemuError::Io { program: program.to_string_lossy().into_owned(), source };
    if let Some(mut stdin) = child.stdin.take() {
        // A few bytes of monitor commands: they fit in the pipe. QEMU may
        // have exited already (EPIPE); its status tells what happened.
        let _ = stdin.write_all(input);
    }
    let readers = [child.stdout.take().map(drain), child.stderr.take().map(drain)];
    let deadline = Instant::now() + limit;
    // These runs take tens to hundreds of milliseconds, and a run waits for
    // them: the first looks come quickly, then back off to `POLL`.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_error)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(QemuError::Hung { program: program.to_string_lossy().into_owned(), secs: limit.as_secs() });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    };
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok(Captured { status, stdout, stderr })
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// One file for QEMU's generic loader to copy to a physical address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// The file.
    pub file: PathBuf,
    /// The physical address of its first byte.
    pub addr: u64,
}

/// Everything that makes the QEMU command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Number of CPUs.
    pub smp: u8,
    /// RAM for QEMU in MiB: the monitor's part and guest RAM.
    pub ram_mib: u64,
    /// The monitor ELF (QEMU's `-kernel`).
    pub monitor: PathBuf,
    /// The guest images and the VM configuration.
    pub loads: Vec<Load>,
    /// QEMU's gdb stub, if asked for.
    pub gdb: Option<GdbStub>,
    /// Instruction-count timing (`--icount`).
    pub icount: bool,
    /// More arguments, appended as given (`--qemu-arg`).
    pub extra: Vec<OsString>,
}

/// With `--icount`: QEMU's precise instruction counting, one instruction
/// per virtual nanosecond, and idle time skipped rather than slept
/// (`sleep=off`), so that runs repeat exactly.
const ICOUNT: &str = "shift=0,sleep=off";
/// With `--icount`: the generic counter at 1 GHz, so that one counter tick
/// is one instruction (the `cortex-a15` CPU's `cntfrq` property; its
/// default is 62.5 MHz, 16 instructions per tick).
const ICOUNT_CNTFRQ: u64 = 1_000_000_000;

/// QEMU's gdb stub (`-gdb tcp:127.0.0.1:PORT`, and `-S` to wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GdbStub {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// Start with every CPU stopped until gdb continues them.
    pub wait: bool,
}

/// Escape a value for QEMU's option syntax (`key=value,...`): a comma is
/// written twice.
fn escape_option_value(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

impl Invocation {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-M".into(),
            MACHINE.into(),
            "-cpu".into(),
            if self.icount { format!("{CPU},cntfrq={ICOUNT_CNTFRQ}").into() } else { CPU.into() },
            "-smp".into(),
            self.smp.to_string().into(),
            "-m".into(),
            format!("{}M", self.ram_mib).into(),
            "-kernel".into(),
            self.monitor.clone().into(),
        ];
        for load in &self.loads {
            let mut device = OsString::from("loader,file=");
            device.push(escape_option_value(load.file.as_os_str()));
            device.push(format!(",addr={:#x},force-raw=on", load.addr));
            args.push("-device".into());
            args.push(device);
        }
        // No network card: the VM has none (and QEMU's default one needs a
        // boot ROM that a minimal QEMU install does not have).
        for arg in ["-nographic", "-nic", "none", "-monitor", "none", "-serial", "stdio"] {
            args.push(arg.into());
        }
        if self.icount {
            args.push("-icount".into());
            args.push(ICOUNT.into());
        }
        if let Some(gdb) = self.gdb {
            // Loopback only: the stub gives whoever connects the machine.
            args.push("-gdb".into());
            args.push(format!("tcp:127.0.0.1:{}", gdb.port).into());
            if gdb.wait {
                args.push("-S".into());
            }
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// The whole command line, for logs.
    pub fn display(&self) -> String {
        let mut line = self.qemu.display().to_string();
        for arg in self.args() {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// How a run of the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
    /// The monitor stopped on a fault.
    MonitorFault,
    /// The monitor refused the VM configuration.
    BadConfig,
    /// A server failed a request twice and `--on-server-fault stop` was
    /// given (exit status 6).
    ServerFault,
    /// `--timeout` elapsed; QEMU was stopped.
    TimedOut,
    /// splitvisor got this signal (SIGINT, SIGTERM, SIGHUP) and stopped
    /// QEMU.
    Interrupted(i32),
    /// The user typed the console's stop escape (`Ctrl-a x`).
    Stopped,
    /// QEMU exited with a status the monitor does not use (QEMU itself
    /// failed: a bad option, an image it could not load, ...).
    QemuStatus(i32),
    /// QEMU was killed by this signal.
    QemuSignal(i32),
    /// The machine stopped without an exit record from the monitor (it
    /// failed before it could report).
    Unreported,
}

impl Outcome {
    /// How a run ended, from QEMU's exit status and the status the monitor
    /// reported over the host link before it stopped the machine.
    pub fn from_end(status: ExitStatus, reported: Option<u8>) -> Outcome {
        match (status.code(), status.signal()) {
            (Some(0), _) => match reported {
                Some(exit::POWER_OFF) => Outcome::PowerOff,
                Some(exit::RESET) => Outcome::Reset,
                Some(exit::BAD_CONFIG) => Outcome::BadConfig,
                Some(exit::SERVER_FAULT) => Outcome::ServerFault,
                // MONITOR_FAULT, or a status this build does not know.
                Some(_) => Outcome::MonitorFault,
                None => Outcome::Unreported,
            },
            (Some(code), _) => Outcome::QemuStatus(code),
            (None, Some(signal)) => Outcome::QemuSignal(signal),
            (None, None) => Outcome::QemuStatus(-1),
        }
    }

    /// splitvisor's own exit status for this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::PowerOff => exit::POWER_OFF,
            Outcome::Reset => exit::RESET,
            Outcome::MonitorFault | Outcome::Unreported => exit::MONITOR_FAULT,
            Outcome::BadConfig => exit::BAD_CONFIG,
            Outcome::ServerFault => exit::SERVER_FAULT,
            Outcome::TimedOut => exit::TIMEOUT,
            // As a shell reports a death by signal.
            Outcome::Interrupted(signal) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
            // As if Ctrl-C had stopped it.
            Outcome::Stopped => 128 + 2,
            Outcome::QemuStatus(_) | Outcome::QemuSignal(_) => 1,
        }
    }

    /// A line for the user, if the outcome needs explaining.
    pub fn describe(self) -> Option<String> {
        match self {
            Outcome::PowerOff => None,
            Outcome::Reset => Some("the guest asked for a reset (exit status 3)".into()),
            Outcome::MonitorFault => Some("the monitor stopped on a fault; see its log above (exit status 4)".into()),
            Outcome::BadConfig => {
                Some("the monitor refused the VM configuration; see its log above (exit status 5)".into())
            }
            Outcome::ServerFault => Some(
                "a server fault stopped the VM (a request failed again after the server's state was restored \
                 under --on-server-fault stop, or a wild write landed without protection domains); see the \
                 monitor's log above (exit status 6)"
                    .into(),
            ),
            Outcome::TimedOut => Some("time-out: the VM was stopped (exit status 124)".into()),
            Outcome::Interrupted(signal) => Some(format!("stopped by signal {signal}")),
            Outcome::Stopped => Some("stopped from the terminal (Ctrl-a x; exit status 130)".into()),
            Outcome::QemuStatus(code) => Some(format!("QEMU failed with exit status {code}; see its message above")),
            Outcome::QemuSignal(signal) => Some(format!("QEMU was killed by signal {signal}")),
            Outcome::Unreported => Some(
                "the machine stopped without a status from the monitor (it failed before it could report; \
                 exit status 4)"
                    .into(),
            ),
        }
    }
}

/// Signals that stop the VM: set by handlers while QEMU runs.
pub struct StopSignals {
    flags: Vec<(i32, Arc<AtomicBool>)>,
}

impl StopSignals {
    /// Catch SIGINT, SIGTERM and SIGHUP. QEMU, in the same process group,
    /// gets a terminal's Ctrl-C too (when the terminal is not in raw mode);
    /// splitvisor waits for it to end rather than dying first and leaving
    /// the terminal to it.
    pub fn install() -> Result<StopSignals, std::io::Error> {
        let mut flags = Vec::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
            flags.push((signal, flag));
        }
        Ok(StopSignals { flags })
    }

    fn raised(&self) -> Option<i32> {
        self.flags.iter().find(|(_, f)| f.load(Ordering::Relaxed)).map(|(s, _)| *s)
    }
}

/// Which of the monitor's log lines reach standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogFilter {
    /// The most detailed level shown (the user's `--log-level`; the monitor
    /// may log more, at INFO, for `--stats`).
    pub show: log::LevelFilter,
    /// Keep the statistics lines for the table instead of showing them.
    pub stats: bool,
}

/// How one run of QEMU ended, and what its monitor reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEnd {
    /// How it ended.
    pub outcome: Outcome,
    /// The monitor's statistics reports (one per `stats:` line).
    pub stats: Vec<Vec<(String, u64)>>,
    /// How long QEMU ran.
    pub elapsed: Duration,
}

/// Run QEMU once, the guest's console on our standard output and its input
/// as `console` says, until it ends, the deadline passes, a stop signal
/// arrives or the user types the console's stop escape.
pub fn run(
    inv: &Invocation,
    deadline: Option<Instant>,
    signals: &StopSignals,
    console: &ConsoleInput,
    filter: LogFilter,
    trace: Option<&TraceSink>,
) -> Result<RunEnd, QemuError> {
    log::debug!("starting {}", inv.display());
    let started = Instant::now();
    let mut child = Command::new(&inv.qemu)
        .args(inv.args())
        .stdin(console.qemu_stdin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(inv.qemu.as_os_str(), e))?;
    let feeding = console.attach(child.stdin.take());
    let link = child.stdout.take().map(|stdout| read_link(stdout, filter, trace.cloned()));
    let qemu_messages = child.stderr.take().map(forward_qemu_messages);
    let io_error = |source| QemuError::Io { program: inv.qemu.display().to_string(), source };
    let ended = loop {
        if let Some(status) = child.try_wait().map_err(io_error)? {
            break match signals.raised() {
                Some(signal) => Err(Outcome::Interrupted(signal)),
                None => Ok(status),
            };
        }
        if let Some(signal) = signals.raised() {
            stop(&mut child, &inv.qemu);
            break Err(Outcome::Interrupted(signal));
        }
        if console.stop_requested() {
            stop(&mut child, &inv.qemu);
            break Err(Outcome::Stopped);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop(&mut child, &inv.qemu);
            break Err(Outcome::TimedOut);
        }
        thread::sleep(POLL);
    };
    let elapsed = started.elapsed();
    // QEMU is gone: its pipes are closed, so the threads end.
    drop(feeding);
    let report = link.and_then(|thread| thread.join().ok()).unwrap_or_default();
    if let Some(thread) = qemu_messages {
        let _ = thread.join();
    }
    let outcome = match ended {
        Ok(status) => Outcome::from_end(status, report.exit),
        Err(outcome) => outcome,
    };
    Ok(RunEnd { outcome, stats: report.stats, elapsed })
}

/// What the monitor said over the host link during one run.
#[derive(Debug, Default)]
struct LinkReport {
    /// The exit status it reported, if it did.
    exit: Option<u8>,
    /// Its statistics reports.
    stats: Vec<Vec<(String, u64)>>,
}

/// Take the host link apart: console bytes to our standard output, log
/// records to standard error as `filter` says, the exit status and the
/// statistics into the report.
fn read_link(mut link: ChildStdout, filter: LogFilter, trace: Option<TraceSink>) -> thread::JoinHandle<LinkReport> {
    thread::spawn(move || {
        let mut demux = Demux::new();
        let mut report = LinkReport::default();
        let mut buf = [0u8; 4096];
        let mut console_bytes = Vec::with_capacity(buf.len());
        let stdout = std::io::stdout();
        // Our standard output or error closed: nothing to tell anyone, but
        // keep reading so that QEMU never blocks on a full pipe.
        let flush = |bytes: &mut Vec<u8>| {
            if !bytes.is_empty() {
                let _ = console::write_all_blocking(stdout.as_fd(), bytes);
                bytes.clear();
            }
        };
        loop {
            let n = match link.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &byte in &buf[..n] {
                match demux.feed(byte) {
                    None => {}
                    Some(Event::Console(b)) => console_bytes.push(b),
                    Some(Event::Record(kind, payload)) => {
                        flush(&mut console_bytes);
                        match kind {
                            RecordKind::Log => monitor_log_line(&payload, filter, &mut report.stats),
                            RecordKind::Exit => report.exit = payload.first().copied(),
                            RecordKind::Trace => match &trace {
                                Some(sink) => {
                                    if let Err(e) = sink.append(&payload) {
                                        log::error!("{e}; the trace is incomplete");
                                    }
                                }
                                None => log::debug!("a trace record of {} bytes, but no --trace", payload.len()),
                            },
                        }
                    }
                    Some(Event::Damaged) => {
                        flush(&mut console_bytes);
                        log::warn!("a damaged record on the monitor's link was skipped");
                    }
                }
            }
            flush(&mut console_bytes);
        }
        report
    })
}

/// Show one monitor log line as `filter` says, or keep it as statistics.
fn monitor_log_line(payload: &[u8], filter: LogFilter, reports: &mut Vec<Vec<(String, u64)>>) {
    let text = String::from_utf8_lossy(payload);
    let show = match stats::parse_line(text.trim_end_matches(['\n', '\r'])) {
        None => true,
        Some(monitor) => match stats::stats_of(&monitor) {
            Some(report) if filter.stats => {
                reports.push(report);
                false
            }
            _ => monitor.level <= filter.show,
        },
    };
    if show {
        let mut line = text.into_owned().into_bytes();
        line.push(b'\n');
        let _ = console::write_all_blocking(std::io::stderr().as_fd(), &line);
    }
}

/// Pass QEMU's own messages (its standard error) on as they are.
fn forward_qemu_messages(stderr: ChildStderr) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        let out = std::io::stderr();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = console::write_all_blocking(out.as_fd(), &line);
                }
            }
        }
    })
}

/// End QEMU: SIGTERM first (it restores the terminal), SIGKILL if it lingers.
fn stop(child: &mut Child, qemu: &Path) {
    let pid = rustix::process::Pid::from_child(child);
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        log::debug!("SIGTERM to {}: {e}", qemu.display());
    }
    let until = Instant::now() + TERM_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(POLL);
    }
    log::warn!("{} ignored SIGTERM; killing it", qemu.display());
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Invocation {
        Invocation {
            qemu: "qemu-system-arm".into(),
            smp: 2,
            ram_mib: 260,
            monitor: "/m/el2-monitor".into(),
            gdb: None,
            icount: false,
            extra: Vec::new(),
            loads: vec![
                Load { file: "/t/kernel-0.bin".into(), addr: 0x4041_0000 },
                Load { file: "/t/a,b.cfg".into(), addr: 0x4021_3000 },
            ],
        }
    }

    #[test]
    fn argv() {
        let args: Vec<String> = inv().args().into_iter().map(|a| a.into_string().unwrap()).collect();
        let expected = [
            "-M",
            "virt,virtualization=on,gic-version=2",
            "-cpu",
            "cortex-a15",
            "-smp",
            "2",
            "-m",
            "260M",
            "-kernel",
            "/m/el2-monitor",
            "-device",
            "loader,file=/t/kernel-0.bin,addr=0x40410000,force-raw=on",
            "-device",
            "loader,file=/t/a,,b.cfg,addr=0x40213000,force-raw=on",
            "-nographic",
            "-nic",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ];
        assert_eq!(args, expected);
        assert!(inv().display().starts_with("qemu-system-arm -M virt,"));
        let gdb = |wait| {
            let inv = Invocation { gdb: Some(GdbStub { port: 1234, wait }), ..inv() };
            inv.args().into_iter().map(|a| a.into_string().unwrap()).skip(expected.len()).collect::<Vec<_>>()
        };
        assert_eq!(gdb(false), ["-gdb", "tcp:127.0.0.1:1234"]);
        assert_eq!(gdb(true), ["-gdb", "tcp:127.0.0.1:1234", "-S"]);
        let icount: Vec<String> =
            Invocation { icount: true, ..inv() }.args().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(icount[3], "cortex-a15,cntfrq=1000000000");
        assert_eq!(icount[expected.len()..], ["-icount", "shift=0,sleep=off"]);
        // --qemu-arg: appended last, as given.
        let extra = Invocation { extra: vec!["-d".into(), "int,guest_errors".into()], ..inv() };
        let extra: Vec<String> = extra.args().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(extra[expected.len()..], ["-d", "int,guest_errors"]);
    }

    #[test]
    fn exit_statuses() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(Outcome::from_end(st(0), Some(0)), Outcome::PowerOff);
        assert_eq!(Outcome::from_end(st(0), Some(3)), Outcome::Reset);
        assert_eq!(Outcome::from_end(st(0), Some(4)), Outcome::MonitorFault);
        assert_eq!(Outcome::from_end(st(0), Some(5)), Outcome::BadConfig);
        assert_eq!(Outcome::from_end(st(0), Some(77)), Outcome::MonitorFault);
        assert_eq!(Outcome::from_end(st(0), None), Outcome::Unreported);
        // QEMU's own status wins over anything the link said.
        assert_eq!(Outcome::from_end(st(1), Some(0)), Outcome::QemuStatus(1));
        assert_eq!(Outcome::from_end(st(300 & 0xff), None), Outcome::QemuStatus(44));
        assert_eq!(Outcome::from_end(ExitStatus::from_raw(9), Some(0)), Outcome::QemuSignal(9));
        assert_eq!(Outcome::Unreported.exit_code(), 4);
        assert_eq!(Outcome::PowerOff.exit_code(), 0);
        assert_eq!(Outcome::Reset.exit_code(), 3);
        assert_eq!(Outcome::MonitorFault.exit_code(), 4);
        assert_eq!(Outcome::BadConfig.exit_code(), 5);
        assert_eq!(Outcome::from_end(st(0), Some(6)), Outcome::ServerFault);
        assert_eq!(Outcome::ServerFault.exit_code(), 6);
        assert_eq!(Outcome::TimedOut.exit_code(), 124);
        assert_eq!(Outcome::Interrupted(2).exit_code(), 130);
        assert_eq!(Outcome::Interrupted(1).exit_code(), 129);
        assert_eq!(Outcome::Stopped.exit_code(), 130);
        assert!(Outcome::Stopped.describe().unwrap().contains("Ctrl-a x"));
        assert_eq!(Outcome::QemuStatus(1).exit_code(), 1);
        assert_eq!(Outcome::QemuSignal(9).exit_code(), 1);
        assert!(Outcome::PowerOff.describe().is_none());
    }

    #[test]
    fn captured_run_and_missing_program() {
        let out = run_captured(Command::new("cat").arg("-"), b"abc", Duration::from_secs(10)).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"abc");
        let err = run_captured(&mut Command::new("/nonexistent/qemu"), b"", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, QemuError::NotFound(_)));
        assert!(err.to_string().contains("apt-get install qemu-system-arm"));
        let err = run_captured(Command::new("sleep").arg("5"), b"", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, QemuError::Hung { .. }));
    }

    /// An executable script standing in for QEMU (it ignores the argv).
    fn fake_qemu(script: &str) -> (tempfile::TempDir, Invocation) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        (dir, Invocation { qemu: path, ..inv() })
    }

    /// A shell `printf` argument that writes `bytes` (octal escapes).
    fn printf(bytes: &[u8]) -> String {
        let escaped: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
        format!("printf '{escaped}'")
    }

    /// The host-link bytes of a record.
    fn record(kind: RecordKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ipc::hostlink::encode_record(kind, payload, &mut |b| out.push(b));
        out
    }

    /// A fake QEMU's script line that reports `status` like the monitor.
    fn report_exit(status: u8) -> String {
        printf(&record(RecordKind::Exit, &[status]))
    }

    const SHOW_INFO: LogFilter = LogFilter { show: log::LevelFilter::Info, stats: false };

    fn run(inv: &Invocation, deadline: Option<Instant>, signals: &StopSignals) -> Result<Outcome, QemuError> {
        super::run(inv, deadline, signals, &ConsoleInput::Null, SHOW_INFO, None).map(|end| end.outcome)
    }

    #[test]
    fn run_maps_status_and_timeout() {
        let signals = StopSignals { flags: Vec::new() };
        for (script, outcome) in [
            (format!("{}; exit 0", report_exit(0)), Outcome::PowerOff),
            (format!("{}; exit 0", report_exit(3)), Outcome::Reset),
            (format!("{}; exit 0", report_exit(5)), Outcome::BadConfig),
            ("exit 0".to_string(), Outcome::Unreported),
            ("exit 1".to_string(), Outcome::QemuStatus(1)),
            ("kill -9 $$".to_string(), Outcome::QemuSignal(9)),
        ] {
            let (_dir, fake) = fake_qemu(&script);
            assert_eq!(run(&fake, None, &signals).unwrap(), outcome, "{script}");
        }
        let (_dir, fake) = fake_qemu("exec sleep 10");
        let start = Instant::now();
        let outcome = run(&fake, Some(start + Duration::from_millis(200)), &signals).unwrap();
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_stop_signal_ends_the_run() {
        let flag = Arc::new(AtomicBool::new(true));
        let signals = StopSignals { flags: vec![(signal_hook::consts::SIGINT, flag)] };
        let (_dir, fake) = fake_qemu("exec sleep 10");
        let start = Instant::now();
        assert_eq!(run(&fake, None, &signals).unwrap(), Outcome::Interrupted(2));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_log_is_filtered_and_statistics_kept() {
        let signals = StopSignals { flags: Vec::new() };
        let mut link = record(RecordKind::Log, b"[splitvisor cpu0 INFO ] hello");
        link.extend(b"guest says hi\n");
        link.extend(record(RecordKind::Log, b"[splitvisor cpu0 INFO ] stats: trap.mmio=7 msg.vcpu=7"));
        link.extend(record(RecordKind::Log, b"[splitvisor cpu1 INFO ] stats: trap.mmio=1"));
        link.extend(record(RecordKind::Exit, &[0]));
        let (_dir, fake) = fake_qemu(&format!("{}\necho 'qemu-system-arm: something' >&2\nexit 0", printf(&link)));
        let filter = LogFilter { show: log::LevelFilter::Warn, stats: true };
        let end = super::run(&fake, None, &signals, &ConsoleInput::Null, filter, None).unwrap();
        assert_eq!(end.outcome, Outcome::PowerOff);
        assert_eq!(
            end.stats,
            vec![vec![("trap.mmio".to_string(), 7), ("msg.vcpu".to_string(), 7)], vec![("trap.mmio".to_string(), 1)]]
        );
        // Without --stats, nothing is kept.
        let end = super::run(&fake, None, &signals, &ConsoleInput::Null, SHOW_INFO, None).unwrap();
        assert!(end.stats.is_empty());
    }
}
