//! `splitvisor replay --isolate process`: each server in its own process,
//! faults injected and server processes killed, and the replay still matches
//! the recorded trace exactly.
//!
//! The trace is made here, without QEMU: a small model of the monitor (its
//! router: `Send` delivered breadth first, a `Kick` of the vCPU being handled
//! turned into a `Sync` with that CPU's list-register status, `Idle` and
//! distributor accesses completed with it; list registers as the servers
//! write them, a guest that acknowledges and completes what they hold) runs
//! a two-vCPU guest's life through the real servers: start-up, distributor
//! set-up, PSCI CPU_ON, console output, timers programmed and firing, SGIs,
//! WFI, maintenance, and records every request and reply in the trace
//! format, as `splitvisor run --trace` does.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipc::msg::{LrStatus, TimerKind};
use ipc::trace::TraceRecord;
use ipc::{
    AccessSize, Action, Cp15Access, Cp15WideAccess, Message, MmioAccess, ServerId, Trap, TrapMsg, VcpuId, VcpuRequest,
    VgicRequest, VmConfig, VtimerRequest,
};
use loader::isolate::proto::AnyServer;
use loader::trace::TraceSink;

const SPLITVISOR: &str = env!("CARGO_BIN_EXE_splitvisor");

/// GICD register offsets the model guest uses (GICv2, IHI 0048B 4.1.2).
mod gicd {
    pub const CTLR: u64 = 0x000;
    pub const TYPER: u64 = 0x004;
    pub const ISENABLER: u64 = 0x100;
    pub const ISACTIVER: u64 = 0x300;
    pub const IPRIORITYR: u64 = 0x400;
    pub const ITARGETSR: u64 = 0x800;
    pub const SGIR: u64 = 0xf00;
}

/// PL011 register offsets (UARTDR, UARTFR).
const UART_DR: u64 = 0x00;
const UART_FR: u64 = 0x18;

/// CP15 timer registers: CNTP_TVAL (opc2 0) and CNTP_CTL (opc2 1) at
/// c14, c2; CNTPCT at MRRC opc1 0, c14.
const CNTP_TVAL: u8 = 0;
const CNTP_CTL: u8 = 1;

/// GICH_LRn.State (bits [29:28]).
const LR_STATE: u32 = 0x3 << 28;

/// The model monitor and guest.
struct Model {
    servers: Vec<AnyServer>,
    records: Vec<TraceRecord>,
    seq: u64,
    lrs: [[u32; 4]; 2],
    now: u64,
    rng: u64,
    kicked: Vec<VcpuId>,
    config: VmConfig,
}

impl Model {
    fn new(seed: u64) -> Model {
        let config = VmConfig { trace: true, ..VmConfig::example(2) };
        let servers = ServerId::ALL.iter().map(|&id| AnyServer::new(id, &config)).collect();
        Model {
            servers,
            records: vec![TraceRecord::Config(config.clone())],
            seq: 0,
            lrs: [[0; 4]; 2],
            now: 0x1234_5678,
            rng: seed,
            kicked: Vec::new(),
            config,
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        // A 64-bit LCG (Knuth's MMIX constants); the high bits are good enough
        // to pick events.
        self.rng = self.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.rng >> 33) % below
    }

    fn status(&self, vcpu: VcpuId) -> LrStatus {
        let lrs = self.lrs[vcpu.index()];
        let elrsr = (0..4).filter(|&i| lrs[i] & LR_STATE == 0).fold(0, |m, i| m | 1 << i);
        LrStatus { misr: 0, eisr: 0, elrsr, lrs }
    }

    /// The guest on `vcpu` acknowledges and completes some of what its list
    /// registers hold.
    fn guest_runs(&mut self, vcpu: VcpuId) {
        for i in 0..4 {
            if self.lrs[vcpu.index()][i] & LR_STATE != 0 && self.random(2) == 0 {
                self.lrs[vcpu.index()][i] &= !LR_STATE;
            }
        }
    }

    /// Handle one trap of `vcpu` as the monitor's router does.
    fn deliver(&mut self, vcpu: VcpuId, first: Message) {
        let mut queue = VecDeque::from([first]);
        let mut delivered = 0;
        while let Some(message) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < 64, "a message loop in the model");
            let status = self.status(vcpu);
            let message = match message {
                Message::Vgic(VgicRequest::Idle { vcpu: v, .. }) => {
                    Message::Vgic(VgicRequest::Idle { vcpu: v, status })
                }
                Message::Vgic(VgicRequest::Mmio { vcpu: v, access, .. }) => {
                    Message::Vgic(VgicRequest::Mmio { vcpu: v, access, status: (v == vcpu).then_some(status) })
                }
                other => other,
            };
            let seq = self.seq;
            self.seq += 1;
            self.records.push(TraceRecord::Request { seq, message });
            let server = message.server();
            let result = self.servers[server.index()].handle(message);
            self.records.push(TraceRecord::Reply { seq, server, result: result.clone() });
            let Ok(reply) = result else { continue };
            let mut sync_self = false;
            for action in reply.actions {
                match action {
                    Action::Send(m) => queue.push_back(m),
                    Action::Kick { vcpu: v } if v == vcpu => sync_self = true,
                    Action::Kick { vcpu: v } => self.kicked.push(v),
                    Action::WriteListRegister { index, value } => self.lrs[vcpu.index()][usize::from(index)] = value,
                    _ => {}
                }
            }
            if sync_self {
                queue.push_back(Message::Vgic(VgicRequest::Sync { vcpu, status: self.status(vcpu) }));
            }
        }
    }

    fn trap(&mut self, vcpu: VcpuId, trap: Trap) {
        let message = Message::Vcpu(VcpuRequest::Trap(TrapMsg { vcpu, trap, pc: 0xc010_0000, cpsr: 0x1d3 }));
        self.deliver(vcpu, message);
    }

    fn mmio(&mut self, vcpu: VcpuId, ipa: u64, write: bool, value: u64) {
        let access = MmioAccess {
            ipa,
            far: 0xf800_0000 | (ipa as u32 & 0xfff),
            size: AccessSize::Word,
            write,
            value,
            rt: 3,
            sign_extend: false,
        };
        if self.config.gicd.contains(ipa) {
            self.deliver(vcpu, Message::Vgic(VgicRequest::Mmio { vcpu, access, status: None }));
        } else {
            self.trap(vcpu, Trap::Mmio(access));
        }
    }

    fn gicd(&mut self, vcpu: VcpuId, offset: u64, write: bool, value: u64) {
        self.mmio(vcpu, self.config.gicd.base + offset, write, value);
    }

    fn timer(&mut self, vcpu: VcpuId, opc2: u8, write: bool, value: u32) {
        self.now += 1 + self.random(5000);
        let access = Cp15Access { opc1: 0, crn: 14, crm: 2, opc2, write, rt: 2, value };
        self.deliver(vcpu, Message::Vtimer(VtimerRequest::Cp15 { vcpu, access, now: self.now }));
    }

    fn start(&mut self, vcpu: VcpuId) {
        self.now += 100;
        for start in [
            Message::Vcpu(VcpuRequest::Start { vcpu }),
            Message::Vgic(VgicRequest::Start { vcpu, list_registers: 4 }),
            Message::Vtimer(VtimerRequest::Start { vcpu, now: self.now }),
        ] {
            self.deliver(vcpu, start);
        }
        // The per-CPU distributor set-up: SGIs and PPIs enabled, priorities.
        self.gicd(vcpu, gicd::ISENABLER, true, 0xffff_ffff);
        for n in 0..8 {
            self.gicd(vcpu, gicd::IPRIORITYR + 4 * n, true, 0xa0a0_a0a0);
        }
    }

    /// A guest's life of `events` events after boot.
    fn life(&mut self, events: usize) {
        let (v0, v1) = (VcpuId(0), VcpuId(1));
        self.start(v0);
        self.gicd(v0, gicd::TYPER, false, 0);
        self.gicd(v0, gicd::CTLR, true, 1);
        // SPIs 32-63 to vCPU 0, the UART's enabled.
        for n in 8..16 {
            self.gicd(v0, gicd::ITARGETSR + 4 * n, true, 0x0101_0101);
        }
        self.gicd(v0, gicd::ISENABLER + 4, true, 1 << (self.config.uart_intid - 32));
        // PSCI_VERSION, then CPU_ON of vCPU 1.
        self.trap(v0, Trap::Hvc { imm: 0, args: [0x8400_0000, 0, 0, 0] });
        self.trap(v0, Trap::Hvc { imm: 0, args: [0x8400_0003, 1, 0x4000_8000, 0] });
        self.start(v1);
        for _ in 0..events {
            let vcpu = VcpuId(self.random(2) as u8);
            self.guest_runs(vcpu);
            match self.random(12) {
                0..=2 => {
                    let byte = b' ' + self.random(90) as u8;
                    let uart = self.config.uart.base;
                    self.mmio(vcpu, uart + UART_FR, false, 0);
                    self.mmio(vcpu, uart + UART_DR, true, u64::from(byte));
                }
                3 => {
                    let ticks = 1000 + self.random(100_000) as u32;
                    self.timer(vcpu, CNTP_TVAL, true, ticks);
                    self.timer(vcpu, CNTP_CTL, true, 1);
                }
                4 => {
                    self.now += self.random(200_000);
                    self.deliver(
                        vcpu,
                        Message::Vtimer(VtimerRequest::Fired { vcpu, timer: TimerKind::Physical, now: self.now }),
                    );
                }
                5 => {
                    self.now += self.random(200_000);
                    self.deliver(
                        vcpu,
                        Message::Vtimer(VtimerRequest::Fired { vcpu, timer: TimerKind::Virtual, now: self.now }),
                    );
                }
                6 => {
                    let other = 1 - vcpu.0;
                    let sgi = self.random(16);
                    self.gicd(vcpu, gicd::SGIR, true, (1 << (16 + other)) | sgi);
                }
                7 => self.trap(vcpu, Trap::Wfi),
                8 => {
                    let status = self.status(vcpu);
                    self.deliver(vcpu, Message::Vgic(VgicRequest::Maintenance { vcpu, status }));
                }
                9 => self.gicd(vcpu, gicd::ISACTIVER, false, 0),
                10 => {
                    self.timer(vcpu, CNTP_CTL, false, 0);
                    self.now += 10;
                    let access = Cp15WideAccess { opc1: 0, crm: 14, write: false, rt: 0, rt2: 1, value: 0 };
                    self.deliver(vcpu, Message::Vtimer(VtimerRequest::Cp15Wide { vcpu, access, now: self.now }));
                }
                _ => {
                    // A line raised by a device: the UART's SPI.
                    let intid = ipc::IntId(self.config.uart_intid);
                    self.deliver(
                        vcpu,
                        Message::Vgic(VgicRequest::SetLine {
                            intid,
                            level: true,
                            target: None,
                            hw: None,
                            change: 0,
                            status: None,
                        }),
                    );
                    self.deliver(
                        vcpu,
                        Message::Vgic(VgicRequest::SetLine {
                            intid,
                            level: false,
                            target: None,
                            hw: None,
                            change: 0,
                            status: None,
                        }),
                    );
                }
            }
            // Kicked CPUs take their kick.
            for kicked in std::mem::take(&mut self.kicked) {
                let status = self.status(kicked);
                self.deliver(kicked, Message::Vgic(VgicRequest::Sync { vcpu: kicked, status }));
            }
        }
    }

    fn write(&self, path: &Path) {
        let sink = TraceSink::create(path).expect("creating the trace");
        for record in &self.records {
            let mut buf = [0u8; 4096];
            sink.append(ipc::wire::encode(record, &mut buf).expect("encoding a record")).expect("writing a record");
        }
        sink.flush().expect("flushing the trace");
    }

    fn requests(&self, server: ServerId) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, TraceRecord::Request { message, .. } if message.server() == server))
            .count()
    }
}

/// A synthetic trace of `events` guest events, in a fresh directory.
fn trace(events: usize) -> (tempfile::TempDir, PathBuf, Model) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("model.trace");
    let mut model = Model::new(0x5eed);
    model.life(events);
    model.write(&path);
    (dir, path, model)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn describe(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn finished(output: Output, took: Duration) -> Run {
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took,
    }
}

fn replay(trace: &Path, flags: &[&str]) -> Run {
    let started = Instant::now();
    let output = Command::new(SPLITVISOR)
        .arg("replay")
        .args(flags)
        .arg(trace)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running splitvisor");
    finished(output, started.elapsed())
}

#[test]
fn the_model_trace_is_realistic_and_replays_in_process() {
    let (_dir, path, model) = trace(400);
    // Every server is busy, and the replies hold the actions that matter.
    for server in ServerId::ALL {
        assert!(model.requests(server) > 100, "{}: {} requests", server.name(), model.requests(server));
    }
    let replies: Vec<Action> = model
        .records
        .iter()
        .filter_map(|r| match r {
            TraceRecord::Reply { result: Ok(reply), .. } => Some(reply.actions.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    for (what, wanted) in [
        (
            "a list-register write",
            &(|a: &Action| matches!(a, Action::WriteListRegister { .. })) as &dyn Fn(&Action) -> bool,
        ),
        ("console output", &|a| matches!(a, Action::ConsoleWrite { .. })),
        ("a vCPU started", &|a| matches!(a, Action::PowerOn { .. })),
        ("the Hyp timer armed", &|a| matches!(a, Action::SetHypTimer { deadline: Some(_) })),
        ("a kick", &|a| matches!(a, Action::Kick { .. })),
        ("a message to another server", &|a| matches!(a, Action::Send(_))),
    ] {
        assert!(replies.iter().any(wanted), "no {what} in the model trace");
    }
    let run = replay(&path, &[]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("every reply matched"), "{}", run.describe());
}

#[test]
fn a_process_replay_matches_like_the_in_process_one() {
    let (_dir, path, model) = trace(1500);
    let counts = format!(
        "({} vcpu, {} vgic, {} vtimer requests",
        model.requests(ServerId::Vcpu),
        model.requests(ServerId::Vgic),
        model.requests(ServerId::Vtimer)
    );
    let inproc = replay(&path, &[]);
    assert_eq!(inproc.code, Some(0), "{}", inproc.describe());
    assert!(inproc.stdout.contains(&counts), "{counts}\n{}", inproc.describe());
    let isolated = replay(&path, &["--isolate", "process", "--checkpoint-every", "32"]);
    assert_eq!(isolated.code, Some(0), "{}", isolated.describe());
    assert!(isolated.stdout.contains(&format!("every reply matched {counts}")), "{}", isolated.describe());
    assert!(isolated.stdout.contains("0 recoveries"), "{}", isolated.describe());
    eprintln!(
        "{} requests: in-process replay {:.3} s, process-isolated {:.3} s (whole commands)",
        model.records.len() / 2 - 1,
        inproc.took.as_secs_f64(),
        isolated.took.as_secs_f64()
    );
}

/// What the recovery line says for each kind of fault.
fn symptom(kind: &str) -> &'static str {
    match kind {
        "panic" | "wild-write" => "the process was killed by signal 6 (SIGABRT)",
        "hang" => "the process did not answer within 1000 ms",
        "bad-reply" => "the process sent a reply that fails validation",
        _ => unreachable!(),
    }
}

#[test]
fn every_server_and_fault_kind_is_recovered_and_the_replay_matches() {
    let (_dir, path, _model) = trace(600);
    for server in ["vcpu", "vgic", "vtimer"] {
        for kind in ["panic", "wild-write", "hang", "bad-reply"] {
            // Message 77: past two checkpoints (every 32), so the restored
            // state is a checkpoint and 12 logged messages. The default
            // budget (1 s) leaves room for a loaded machine.
            let spec = format!("{server}:{kind}@77");
            let run = replay(&path, &["--isolate", "process", "--checkpoint-every", "32", "--inject", &spec]);
            let context = format!("--inject {spec}\n{}", run.describe());
            assert_eq!(run.code, Some(0), "{context}");
            assert!(run.stdout.contains("every reply matched"), "{context}");
            assert!(run.stdout.contains("1 recoveries (1 retried successfully)"), "{context}");
            let line = format!("{server} server, message 77: {}", symptom(kind));
            assert!(run.stderr.contains(&line), "{line}\n{context}");
            assert!(
                run.stderr.contains(
                    "from the checkpoint after message 64 and 12 logged message(s), retried it: recovered in"
                ),
                "{context}"
            );
        }
    }
}

#[test]
fn a_random_campaign_on_every_server_is_recovered() {
    let (_dir, path, _model) = trace(600);
    let run = replay(
        &path,
        &[
            "--isolate",
            "process",
            "--checkpoint-every",
            "50",
            "--inject",
            "vcpu:panic@random:11:0.01",
            "--inject",
            "vgic:bad-reply@random:12:0.01",
            "--inject",
            "vtimer:wild-write@random:13:0.02",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("every reply matched"), "{}", run.describe());
    let recoveries = run.stderr.matches("retried it: recovered").count();
    for server in ["vcpu", "vgic", "vtimer"] {
        assert!(run.stderr.contains(&format!("{server} server, message ")), "no {server} fault\n{}", run.describe());
    }
    assert!(recoveries >= 6, "{recoveries} recoveries\n{}", run.describe());
    assert!(
        run.stdout.contains(&format!("{recoveries} recoveries ({recoveries} retried successfully)")),
        "{}",
        run.describe()
    );
}

fn wait_for_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} never appeared", file.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_server_process_killed_with_sigkill_mid_replay_is_recovered() {
    let (dir, path, _model) = trace(600);
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).expect("the pid directory");
    // The vGIC process stops answering at its message 150 (the budget is
    // long): its pid is then killed from here, mid-replay, at a known point.
    let started = Instant::now();
    let mut child = Command::new(SPLITVISOR)
        .args(["--log-level", "debug", "replay", "--isolate", "process", "--checkpoint-every", "64"])
        .args(["--budget-ms", "60000", "--inject", "vgic:hang@150", "--pid-dir"])
        .arg(&pids)
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running splitvisor");
    let stderr = child.stderr.take().expect("the stderr pipe");
    let (hung_tx, hung_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("vgic server: injected fault hang on message 150") {
                let _ = hung_tx.send(());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    hung_rx.recv_timeout(Duration::from_secs(30)).expect("the vgic process never reached its message 150");
    let pid = wait_for_pid(&pids.join("vgic.pid"));
    let target = rustix::process::Pid::from_raw(pid).expect("a pid is positive");
    rustix::process::kill_process(target, rustix::process::Signal::KILL).expect("kill -9 of the vgic process");
    let output = child.wait_with_output().expect("waiting for splitvisor");
    let stderr = reader.join().expect("the stderr reader");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
        took: started.elapsed(),
    };
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("every reply matched"), "{}", run.describe());
    let line = "vgic server, message 150: the process was killed by signal 9 (SIGKILL); restarted as generation 2 \
                from the checkpoint after message 128 and 21 logged message(s), retried it: recovered in";
    assert!(run.stderr.contains(line), "{}", run.describe());
    // Noticed at once, not at the end of the budget.
    assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
    // The pids are on stderr too, and the new process wrote its own.
    assert!(run.stderr.contains(&format!("vgic server: process {pid} started (generation 1)")), "{}", run.describe());
    assert_ne!(wait_for_pid(&pids.join("vgic.pid")), pid);
}

#[test]
fn a_fault_that_repeats_stops_the_replay_with_status_4_under_the_stop_policy() {
    let (_dir, path, _model) = trace(300);
    let run =
        replay(&path, &["--isolate", "process", "--on-server-fault", "stop", "--inject", "vtimer:bad-reply@40:repeat"]);
    assert_eq!(run.code, Some(4), "{}", run.describe());
    assert!(run.stdout.contains("replay: stopped at record #"), "{}", run.describe());
    assert!(
        run.stderr.contains("replay stopped (--on-server-fault stop): the vtimer server failed on its message 40"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("after a restart it sent a reply that fails validation: it names vCPU 8"),
        "{}",
        run.describe()
    );
    // A transient fault under the same policy is recovered.
    let run = replay(&path, &["--isolate", "process", "--on-server-fault", "stop", "--inject", "vtimer:bad-reply@40"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

#[test]
fn a_fault_that_repeats_is_answered_by_policy_under_the_restart_policy() {
    let (_dir, path, _model) = trace(300);
    let run = replay(&path, &["--isolate", "process", "--inject", "vcpu:panic@30:repeat"]);
    assert!(run.stderr.contains("vcpu server, message 30: the process was killed by signal 6"), "{}", run.describe());
    assert!(run.stderr.contains("the retry failed too: answered by policy"), "{}", run.describe());
    assert!(run.stdout.contains("1 answered by policy"), "{}", run.describe());
    // The policy's answer (an abort, an undefined instruction, ...) is not
    // what the server recorded: a divergence, and the exit status says so.
    assert_eq!(run.code, Some(1), "{}", run.describe());
}

#[test]
fn fault_flags_need_process_isolation() {
    let (_dir, path, _model) = trace(10);
    for flags in
        [&["--inject", "vgic:panic@1"][..], &["--budget-ms", "10"], &["--pid-dir", "x"], &["--on-server-fault", "stop"]]
    {
        let run = replay(&path, flags);
        assert_eq!(run.code, Some(2), "{flags:?}\n{}", run.describe());
        assert!(run.stderr.contains("needs --isolate process"), "{}", run.describe());
    }
    let run = replay(&path, &["--isolate", "process", "--inject", "vgic:panic@zero"]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("is not a decimal number"), "{}", run.describe());
}

#[test]
fn a_server_process_that_sends_garbage_is_refused() {
    let (dir, path, _model) = trace(10);
    // A "splitvisor" that answers with bytes that are not a frame.
    let fake = dir.path().join("fake-splitvisor");
    std::fs::write(&fake, "#!/bin/sh\nprintf 'this is not a frame\\000'\nexec sleep 30\n").expect("the fake");
    let chmod = Command::new("chmod").arg("+x").arg(&fake).status().expect("chmod");
    assert!(chmod.success());
    let options = loader::isolate::Options {
        exe: fake,
        budget: Duration::from_millis(500),
        checkpoint_every: 8,
        on_fault: loader::isolate::FaultPolicy::Restart,
        injections: Vec::new(),
        pid_dir: None,
        log_level: loader::config::LogLevel::Warn,
    };
    let started = Instant::now();
    let replayed = loader::isolate::replay(&path, options).expect("the trace reads");
    match &replayed.driven.end {
        loader::trace::End::Halted {
            index: 0,
            halt: loader::isolate::supervisor::Halt::Start(ServerId::Vcpu, fault),
        } => {
            assert!(fault.to_string().starts_with("sent garbage"), "{fault}");
        }
        other => panic!("not refused at the start: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn message_numbers_and_recoveries_go_on_across_a_guest_reset() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("two-boots.trace");
    let mut first = Model::new(1);
    first.life(200);
    let mut second = Model::new(2);
    second.life(200);
    let before = first.requests(ServerId::Vgic);
    let mut both = Model::new(3);
    both.records = first.records.iter().chain(&second.records).cloned().collect();
    assert_eq!(both.records.iter().filter(|r| matches!(r, TraceRecord::Config(_))).count(), 2);
    both.write(&path);
    // The 20th vGIC message of the second boot.
    let n = before + 20;
    let spec = format!("vgic:panic@{n}");
    let run = replay(&path, &["--isolate", "process", "--checkpoint-every", "16", "--inject", &spec]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("every reply matched"), "{}", run.describe());
    // The second boot's processes start from its own initial state, so the
    // checkpoint is the one taken 16 messages into it.
    let line =
        format!("vgic server, message {n}: the process was killed by signal 6 (SIGABRT); restarted as generation 3");
    assert!(run.stderr.contains(&line), "{line}\n{}", run.describe());
    assert!(run.stderr.contains(&format!("from the checkpoint after message {}", before + 16)), "{}", run.describe());
}

/// The Debian boot (2 vCPUs) recorded under QEMU and checked in under
/// `tests/traces`.
fn recorded_linux_boot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/traces/linux-2vcpu-boot.trace.gz")
}

#[test]
fn the_recorded_linux_boot_replays_exactly_with_every_server_failing_with_every_kind() {
    let path = recorded_linux_boot();
    let records = loader::trace::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let requests = |server: ServerId| {
        records
            .iter()
            .filter(|r| matches!(r, TraceRecord::Request { message, .. } if message.server() == server))
            .count()
    };
    // Faults deep into the boot, past several checkpoints.
    // (The vCPU server has some 580 requests: WFIs go to the vGIC server;
    // the vGIC server some 2,350, as the virtual timer is delivered masked
    // to a Linux kernel, without an EOI maintenance request a tick.)
    let at = [(ServerId::Vcpu, 500), (ServerId::Vgic, 2_000), (ServerId::Vtimer, 700)];
    for (server, n) in at {
        assert!(requests(server) > n, "{}: {} requests", server.name(), requests(server));
    }
    for kind in ["panic", "wild-write", "hang", "bad-reply"] {
        let specs: Vec<String> = at.iter().map(|(server, n)| format!("{}:{kind}@{n}", server.name())).collect();
        let mut flags = vec!["--isolate", "process"];
        for spec in &specs {
            flags.extend(["--inject", spec.as_str()]);
        }
        let run = replay(&path, &flags);
        let context = format!("{specs:?}\n{}", run.describe());
        assert_eq!(run.code, Some(0), "{context}");
        assert!(run.stdout.contains("every reply matched"), "{context}");
        assert!(run.stdout.contains("3 recoveries (3 retried successfully)"), "{context}");
        for (server, n) in at {
            let line = format!("{} server, message {n}: {}", server.name(), symptom(kind));
            assert!(run.stderr.contains(&line), "{line}\n{context}");
        }
    }
}
