//! `splitvisor bench`: the cost of the message path, in instructions.
//!
//! Each item of the `bench` test guest (`tests/guests/src/bin/bench.rs`)
//! runs in its own VM under `splitvisor run --icount`: QEMU counts
//! instructions precisely, skips idle time, and the generic counter ticks
//! once per instruction, so the figures repeat exactly from run to run. The
//! guest times `n` repetitions of its operation with the virtual counter
//! (all exception levels, all CPUs, included). The monitor is the build
//! `splitvisor run` uses, uninstrumented; the `insn-count` QEMU plugin
//! (`tests/insn-count`, counting each instruction, which is exact under
//! icount) says which of the instructions were the monitor's and each
//! server's. Each item runs twice, with `n` and `2n` repetitions, and the
//! difference of the plugin's counts divided by `n` is the hypervisor's
//! share of one operation (boot and set-up cancel out). The same
//! difference of the guest's own counts checks that the figure per
//! operation is stable.
//!
//! (Until session 12 the parts came from the monitor's `profile` build,
//! which reads the counter around the trap handler and each server: its
//! reads and sums added some 50 instructions to every trap and message,
//! and the figures included them.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::monitor::{Build, MonitorError};
use crate::stats;

/// The items, in the order they are run and shown, with the target for
/// the figure the issue sets (see [`Item::target`]).
pub const ITEMS: [&str; 9] =
    ["loop", "hvc", "gicd-read", "gicd-write", "ipi", "timer", "console", "console-putc", "console-irq"];

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building the guest or the monitor failed.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The guest build failed.
    #[error("building the bench guest failed: {0}")]
    Guest(String),
    /// The `insn-count` plugin's build failed.
    #[error("building the insn-count QEMU plugin (package insn-count) failed: {0}")]
    Plugin(String),
    /// `splitvisor run` could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A run did not give its figures.
    #[error("bench item {item} (n = {n}): {why}\n--- its output ---\n{output}")]
    Run {
        /// The item.
        item: String,
        /// Its repetitions.
        n: u32,
        /// What went wrong.
        why: String,
        /// What it printed.
        output: String,
    },
    /// An unknown item was asked for.
    #[error("unknown bench item {0:?} (items: {items})", items = ITEMS.join(", "))]
    UnknownItem(String),
    /// A JSON file of figures could not be read.
    #[error("cannot read figures from {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The JSON file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What one VM run of an item gave.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sample {
    /// Counter ticks the guest measured for its `n` operations.
    guest_ticks: u64,
    /// The `ipi` item's summed latency.
    latency: u64,
    /// The monitor's counters (`trap.*`, `msg.*`) and the plugin's
    /// (`insn.*`, see [`plugin_counters`]).
    counters: BTreeMap<String, u64>,
}

impl Sample {
    fn counter(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }
}

/// The figures of one item, per operation, in instructions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// The item.
    pub item: String,
    /// Repetitions of the larger run.
    pub n: u32,
    /// Everything one operation took, as the guest measured it (its loop
    /// included; for `ipi` the round trip on CPU 0, for `timer` the period
    /// included).
    pub total: f64,
    /// How far the smaller run's figure per operation is from the larger
    /// run's, in percent.
    pub spread_percent: f64,
    /// The hypervisor's instructions per operation: every instruction
    /// executed in the monitor image (exception entry and exit, the trap
    /// handler, the servers, and the few of an idle vCPU's WFI loop).
    pub hypervisor: f64,
    /// The monitor's own part of `hypervisor` (without the servers).
    pub monitor: f64,
    /// The vCPU server's part.
    pub vcpu: f64,
    /// The vGIC server's part.
    pub vgic: f64,
    /// The vtimer server's part.
    pub vtimer: f64,
    /// Traps per operation (all kinds).
    pub traps: f64,
    /// Messages to servers per operation.
    pub messages: f64,
    /// `ipi`: instructions from the SGIR write to the handler's first
    /// counter read (both CPUs' instructions interleave in it).
    pub latency: Option<f64>,
    /// The figure the target is about, and the target.
    pub target: Option<Target>,
}

/// A target of issue 8 and the measured figure it applies to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The measured figure.
    pub measured: f64,
    /// The target (at most).
    pub limit: f64,
    /// Whether it is met.
    pub met: bool,
}

/// `splitvisor bench`'s options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repetitions of the smaller run (the larger has twice as many).
    pub n: u32,
    /// The items to run.
    pub items: Vec<String>,
    /// Where to write the JSON.
    pub json: Option<PathBuf>,
    /// Seconds each run may take.
    pub timeout: u64,
    /// Run the servers without containment (`run --no-isolation`).
    pub no_isolation: bool,
    /// Run the servers without protection domains (`run --no-domains`).
    pub no_domains: bool,
    /// Trap every UART access (`run --no-console-image`).
    pub no_console_image: bool,
    /// What the guest's WFI does (`run --wfi`).
    pub wfi: crate::cli::Wfi,
    /// How the virtual timer is delivered (`run --vtimer`).
    pub vtimer: crate::cli::Vtimer,
    /// Measure the monitor's `direct-call` build (each server called as a
    /// function, see `el2-monitor/src/arch/armv7/direct.rs`).
    pub direct_call: bool,
    /// Checkpoint every N requests (`run --checkpoint-every`).
    pub checkpoint_every: Option<u16>,
}

/// Issue 8's target for what messaging adds to a direct call, in percent.
pub const MESSAGING_OVERHEAD_TARGET_PERCENT: f64 = 15.0;

/// Build what the benchmark needs and run every item.
pub fn run(options: &Options) -> Result<Vec<Figures>, BenchError> {
    for item in &options.items {
        if !ITEMS.contains(&item.as_str()) {
            return Err(BenchError::UnknownItem(item.clone()));
        }
    }
    let base = Build::from_env();
    let guest = build_guest(&base)?;
    let plugin = build_plugin(&base)?;
    if options.direct_call {
        log::info!("bench: measuring the direct-call build (each server called as a function, no message path)");
    }
    let monitor = if options.direct_call {
        Build { target_dir: base.target_dir.join("bench-direct-call"), features: vec!["direct-call".into()], ..base }
    } else {
        base
    }
    .run()?;
    let tools = Tools { monitor, guest, plugin };
    let mut samples: BTreeMap<String, (Sample, Sample)> = BTreeMap::new();
    for item in ITEMS.iter().filter(|i| options.items.iter().any(|o| o == *i)) {
        log::info!("bench: {item} with n = {} and {}", options.n, 2 * options.n);
        let small = run_item(&tools, item, options.n, options)?;
        let large = run_item(&tools, item, 2 * options.n, options)?;
        samples.insert((*item).to_string(), (small, large));
    }
    let baseline = samples.get("loop").map(|(_, large)| large.guest_ticks as f64 / f64::from(2 * options.n));
    let figures: Vec<Figures> = ITEMS
        .iter()
        .filter_map(|item| samples.get(*item).map(|(s, l)| figures(item, options.n, s, l, baseline)))
        .collect();
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&figures).unwrap_or_default();
        std::fs::write(path, json + "\n").map_err(|source| BenchError::Write { path: path.clone(), source })?;
        log::info!("bench: wrote {}", path.display());
    }
    Ok(figures)
}

fn build_guest(base: &Build) -> Result<PathBuf, BenchError> {
    let manifest = base.workspace.join("tests").join("guests").join("Cargo.toml");
    let target_dir = base.target_dir.join("bench-guest");
    log::info!("bench: building the bench guest ({})", manifest.display());
    let status = Command::new(&base.cargo)
        .args(["build", "--quiet", "--release", "--target", crate::monitor::TARGET, "--bin", "bench"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("TEST_GUEST_BASE")
        .status()
        .map_err(|e| BenchError::Guest(format!("{}: {e}", base.cargo.to_string_lossy())))?;
    if !status.success() {
        return Err(BenchError::Guest(format!("cargo ended with {status}")));
    }
    Ok(target_dir.join(crate::monitor::TARGET).join("release").join("bench"))
}

/// Build the `insn-count` QEMU plugin (a host library of the workspace).
fn build_plugin(base: &Build) -> Result<PathBuf, BenchError> {
    log::info!("bench: building the insn-count QEMU plugin (cargo build --release -p insn-count)");
    let status = Command::new(&base.cargo)
        .args(["build", "--quiet", "--release", "-p", "insn-count"])
        .current_dir(&base.workspace)
        .env("CARGO_TARGET_DIR", &base.target_dir)
        .status()
        .map_err(|e| BenchError::Plugin(format!("{}: {e}", base.cargo.to_string_lossy())))?;
    if !status.success() {
        return Err(BenchError::Plugin(format!("cargo ended with {status}")));
    }
    Ok(base.target_dir.join("release").join("libinsn_count.so"))
}

/// What every run of an item takes.
struct Tools {
    monitor: PathBuf,
    guest: PathBuf,
    plugin: PathBuf,
}

/// The `insn-count` report's totals (its `Report::render`: `key: count`
/// lines, some with a share after the count) as `insn.*` counters: `all`,
/// `hyp` (the monitor image), and its parts `monitor`, `vcpu`, `vgic`,
/// `vtimer`. `None` if a total is missing.
fn plugin_counters(report: &str) -> Option<BTreeMap<String, u64>> {
    const KEYS: [(&str, &str); 6] = [
        ("instructions", "insn.all"),
        ("hypervisor", "insn.hyp"),
        ("monitor", "insn.monitor"),
        ("vcpu server", "insn.vcpu"),
        ("vgic server", "insn.vgic"),
        ("vtimer server", "insn.vtimer"),
    ];
    let mut counters = BTreeMap::new();
    for line in report.lines() {
        let Some((key, rest)) = line.split_once(": ") else { continue };
        let Some(&(_, name)) = KEYS.iter().find(|(k, _)| *k == key) else { continue };
        let count = rest.split_whitespace().next()?.parse::<u64>().ok()?;
        counters.insert(name.to_string(), count);
    }
    (counters.len() == KEYS.len()).then_some(counters)
}

fn run_item(tools: &Tools, item: &str, n: u32, options: &Options) -> Result<Sample, BenchError> {
    let report = tempfile::Builder::new()
        .prefix("splitvisor-bench-")
        .suffix(".txt")
        .tempfile()
        .map_err(|source| BenchError::Write { path: std::env::temp_dir(), source })?;
    let plugin_arg = format!(
        "{},monitor={},out={},count=insn",
        tools.plugin.display(),
        tools.monitor.display(),
        report.path().display()
    );
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("splitvisor"));
    let mut cmd = Command::new(&program);
    cmd.args(["--log-level", "info", "run", "--icount", "--smp", "2", "--no-reboot"]);
    if options.no_isolation {
        cmd.arg("--no-isolation");
    }
    if options.no_domains {
        cmd.arg("--no-domains");
    }
    if options.no_console_image {
        cmd.arg("--no-console-image");
    }
    cmd.args(["--wfi", options.wfi.name()]);
    cmd.args(["--vtimer", options.vtimer.name()]);
    if let Some(n) = options.checkpoint_every {
        cmd.arg("--checkpoint-every").arg(n.to_string());
    }
    let output = cmd
        .arg("--timeout")
        .arg(options.timeout.to_string())
        .arg("--monitor")
        .arg(&tools.monitor)
        .arg("--kernel")
        .arg(&tools.guest)
        .arg("--cmdline")
        .arg(format!("bench.item={item} bench.n={n}"))
        .args(["--qemu-arg", "-plugin", "--qemu-arg"])
        .arg(&plugin_arg)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn { program: program.display().to_string(), source })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fail = |why: String| BenchError::Run {
        item: item.into(),
        n,
        why,
        output: format!("{stdout}{stderr}").lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().fold(
            String::new(),
            |mut acc, line| {
                let _ = writeln!(acc, "{line}");
                acc
            },
        ),
    };
    if !output.status.success() {
        return Err(fail(format!("splitvisor run ended with {}", output.status)));
    }
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH ")) else {
        return Err(fail("the guest printed no BENCH line".into()));
    };
    let fields: BTreeMap<&str, &str> = line.split_whitespace().filter_map(|w| w.split_once('=')).collect();
    let number = |key: &str| fields.get(key).and_then(|v| v.parse::<u64>().ok());
    if number("cntfrq") != Some(1_000_000_000) {
        return Err(fail(format!("the counter runs at {:?} Hz, not 1 GHz: was --icount lost?", fields.get("cntfrq"))));
    }
    let Some(guest_ticks) = number("ticks") else {
        return Err(fail(format!("no ticks in {line:?}")));
    };
    let mut counters = BTreeMap::new();
    for line in stderr.lines() {
        if let Some(report) = stats::parse_line(line).as_ref().and_then(stats::stats_of) {
            for (key, value) in report {
                *counters.entry(key).or_insert(0) += value;
            }
        }
    }
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    let Some(instructions) = plugin_counters(&text) else {
        return Err(fail(format!("the insn-count plugin wrote no report to {}", report.path().display())));
    };
    counters.extend(instructions);
    Ok(Sample { guest_ticks, latency: number("latency").unwrap_or(0), counters })
}

fn figures(item: &str, n: u32, small: &Sample, large: &Sample, baseline: Option<f64>) -> Figures {
    let per_op = |key: &str| large.counter(key).saturating_sub(small.counter(key)) as f64 / f64::from(n);
    let sum_per_op = |prefix: &str| {
        let total = |s: &Sample| s.counters.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| *v).sum::<u64>();
        total(large).saturating_sub(total(small)) as f64 / f64::from(n)
    };
    let total = large.guest_ticks as f64 / f64::from(2 * n);
    let small_total = small.guest_ticks as f64 / f64::from(n);
    let hypervisor = per_op("insn.hyp");
    let (vcpu, vgic, vtimer) = (per_op("insn.vcpu"), per_op("insn.vgic"), per_op("insn.vtimer"));
    let latency = (item == "ipi").then(|| large.latency as f64 / f64::from(2 * n));
    let round_trip = total - baseline.unwrap_or(0.0);
    let target = match item {
        "hvc" => Some(("round trip (total - loop)", round_trip, 400.0)),
        "gicd-read" | "gicd-write" => Some(("round trip (total - loop)", round_trip, 1_000.0)),
        "ipi" => Some(("hypervisor per IPI", hypervisor, 2_000.0)),
        "timer" => Some(("hypervisor per tick", hypervisor, 1_000.0)),
        _ => None,
    }
    .map(|(what, measured, limit)| Target { what: what.into(), measured, limit, met: measured <= limit });
    Figures {
        item: item.into(),
        n: 2 * n,
        total,
        spread_percent: if total > 0.0 { 100.0 * (small_total - total).abs() / total } else { 0.0 },
        hypervisor,
        monitor: per_op("insn.monitor"),
        vcpu,
        vgic,
        vtimer,
        traps: sum_per_op("trap."),
        messages: sum_per_op("msg."),
        latency,
        target,
    }
}

/// The table `splitvisor bench` prints.
pub fn render(figures: &[Figures]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>7} {:>10} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5}  target",
        "item", "instr/op", "spread", "hypervisor", "monitor", "vcpu", "vgic", "vtimer", "traps", "msgs"
    );
    for f in figures {
        let target = match &f.target {
            Some(t) => {
                format!("{} {:.0} <= {:.0}: {}", t.what, t.measured, t.limit, if t.met { "met" } else { "MISSED" })
            }
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:>8.1} {:>6.2}% {:>10.1} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>6.2} {:>5.2}  {target}",
            f.item, f.total, f.spread_percent, f.hypervisor, f.monitor, f.vcpu, f.vgic, f.vtimer, f.traps, f.messages
        );
        if let Some(latency) = f.latency {
            let _ =
                writeln!(out, "{:<12} SGIR write to handler: {latency:.1} instructions (both CPUs interleaved)", "");
        }
    }
    out
}

/// Each item's overhead over `baseline`'s figures for the same item (the
/// `direct-call` build's, for the cost of messaging), with issue 8's target.
/// The figure compared is the one the item's own target is about: the
/// round trip the guest measured, except for `ipi` and `timer`, whose
/// round trips are mostly the guest's own work (the timer's period), where
/// it is the hypervisor's instructions per operation. Items missing from
/// either side are left out; so is `loop`, which does not enter the
/// hypervisor.
pub fn render_against(figures: &[Figures], baseline: &[Figures]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<12} {:<10} {:>9} {:>9} {:>9}  target (messaging overhead <= {:.0} %)",
        "item", "figure", "measured", "baseline", "overhead", MESSAGING_OVERHEAD_TARGET_PERCENT
    );
    for f in figures.iter().filter(|f| f.item != "loop") {
        let Some(b) = baseline.iter().find(|b| b.item == f.item) else { continue };
        let (figure, measured, base) = if matches!(f.item.as_str(), "ipi" | "timer") {
            ("hypervisor", f.hypervisor, b.hypervisor)
        } else {
            ("round trip", f.total, b.total)
        };
        let overhead = overhead_percent(measured, base);
        let met = overhead <= MESSAGING_OVERHEAD_TARGET_PERCENT;
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:>9.1} {:>9.1} {:>8.1}%  {}",
            f.item,
            figure,
            measured,
            base,
            overhead,
            if met { "met" } else { "MISSED" }
        );
    }
    out
}

/// How much more `measured` is than `baseline`, in percent of `baseline`.
fn overhead_percent(measured: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        (measured - baseline) * 100.0 / baseline
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_gives_each_items_overhead_over_the_baseline() {
        let figure = |item: &str, total: f64, hypervisor: f64| Figures {
            item: item.into(),
            n: 4000,
            total,
            spread_percent: 0.0,
            hypervisor,
            monitor: 0.0,
            vcpu: 0.0,
            vgic: 0.0,
            vtimer: 0.0,
            traps: 1.0,
            messages: 1.0,
            latency: None,
            target: None,
        };
        let messages = [
            figure("loop", 3.0, 1.0),
            figure("hvc", 1100.0, 1050.0),
            figure("ipi", 5000.0, 4000.0),
            figure("timer", 30000.0, 6000.0),
        ];
        let direct = [
            figure("loop", 3.0, 1.0),
            figure("hvc", 1000.0, 950.0),
            figure("gicd-read", 900.0, 800.0),
            figure("timer", 29000.0, 5000.0),
        ];
        let text = render_against(&messages, &direct);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        // A header, hvc and timer: loop is left out, ipi has no baseline.
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("messaging overhead <= 15 %"), "{text}");
        assert!(lines[1].starts_with("hvc          round trip"), "{text}");
        assert!(lines[1].contains("10.0%"), "{text}");
        assert!(lines[1].ends_with("met"), "{text}");
        // The timer's round trip is mostly its period: its hypervisor part.
        assert!(lines[2].starts_with("timer        hypervisor"), "{text}");
        assert!(lines[2].contains("20.0%"), "{text}");
        let slower = [figure("hvc", 1200.0, 1150.0)];
        assert!(render_against(&slower, &direct).contains("20.0%  "));
        assert!(render_against(&slower, &direct).trim_end().ends_with("MISSED"));
        assert_eq!(overhead_percent(5.0, 0.0), 0.0);
    }

    fn sample(guest_ticks: u64, pairs: &[(&str, u64)]) -> Sample {
        Sample { guest_ticks, latency: 0, counters: pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect() }
    }

    #[test]
    fn figures_are_the_difference_of_the_two_runs_per_operation() {
        // Boot costs 1000 in the monitor; each operation 300 (100 in the vCPU server).
        let counts = |ops: u64| {
            [
                ("insn.hyp", 1_000 + 300 * ops),
                ("insn.monitor", 1_000 + 200 * ops),
                ("insn.vcpu", 100 * ops),
                ("trap.hvc", 1 + ops),
                ("msg.vcpu", 1 + ops),
            ]
        };
        let small = sample(400_000, &counts(1_000));
        let large = sample(800_000, &counts(2_000));
        let f = figures("hvc", 1_000, &small, &large, Some(3.0));
        assert_eq!(f.total, 400.0);
        assert_eq!(f.spread_percent, 0.0);
        assert_eq!(f.hypervisor, 300.0);
        assert_eq!(f.vcpu, 100.0);
        assert_eq!(f.monitor, 200.0);
        assert_eq!(f.traps, 1.0);
        assert_eq!(f.messages, 1.0);
        let t = f.target.expect("hvc has a target");
        assert_eq!(t.measured, 397.0);
        assert!(t.met);
    }

    #[test]
    fn the_plot_shows_each_target_item_with_its_anchors_and_reads_back_from_json() {
        let small = sample(10, &[("insn.hyp", 5_000)]);
        let large = sample(20, &[("insn.hyp", 9_000)]);
        let figures = vec![
            figures("loop", 1, &small, &large, None),
            figures("hvc", 1, &small, &large, Some(0.0)),
            figures("ipi", 1, &small, &large, None),
        ];
        let svg = plot(&figures);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(">null hypercall<") && svg.contains(">virtual IPI (hypervisor)<"));
        assert!(!svg.contains(">loop<"), "an item without a target is not plotted");
        assert!(svg.contains(">Xen/ARM<") && svg.contains(">seL4 fault A53<") && svg.contains(">KVM/ARM<"));
        assert_eq!(svg.matches("stroke-dasharray").count(), 2, "one target line per row");
        assert_eq!(thousands(25_823.6), "25,824");
        assert_eq!(thousands(400.0), "400");
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("f.json");
        std::fs::write(&json, serde_json::to_string(&figures).unwrap()).unwrap();
        assert_eq!(read_json(&json).unwrap(), figures);
        assert!(matches!(read_json(&dir.path().join("none.json")), Err(BenchError::Read { .. })));
    }

    #[test]
    fn the_plugin_s_report_gives_the_parts() {
        let report = "instructions: 760\nhypervisor: 60 (7.895 %)\nmonitor: 10 (1.316 %)\nvcpu server: 0 (0.000 %)\n\
                      vgic server: 50 (6.579 %)\nvtimer server: 0 (0.000 %)\nguest and firmware: 700\n\
                      top functions in the hypervisor (instructions, share of the hypervisor's):\n\
                      50  83.33 %  vgic_server::x\n";
        let counters = plugin_counters(report).expect("a whole report");
        assert_eq!(counters["insn.all"], 760);
        assert_eq!(counters["insn.hyp"], 60);
        assert_eq!(counters["insn.monitor"], 10);
        assert_eq!(counters["insn.vgic"], 50);
        assert_eq!(counters.len(), 6);
        // A part missing, or a count that is not one, is no report.
        assert_eq!(plugin_counters("instructions: 760\nhypervisor: 60 (7.895 %)\n"), None);
        assert_eq!(plugin_counters(&report.replace("monitor: 10", "monitor: ten")), None);
        // The timer's figure is the plugin's count: idle time is no
        // instructions.
        let small = sample(10, &[("insn.hyp", 5_000)]);
        let large = sample(20, &[("insn.hyp", 6_000)]);
        let f = figures("timer", 1, &small, &large, None);
        assert_eq!(f.hypervisor, 1_000.0);
        assert!(render(&[f]).contains("hypervisor per tick 1000 <= 1000: met"));
    }
}

/// Read figures written by `splitvisor bench --json`.
pub fn read_json(path: &Path) -> Result<Vec<Figures>, BenchError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| BenchError::Read { path: path.to_path_buf(), why: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Read { path: path.to_path_buf(), why: e.to_string() })
}

/// Write [`plot`]'s SVG to `path`.
pub fn write_plot(figures: &[Figures], path: &Path) -> Result<(), BenchError> {
    std::fs::write(path, plot(figures)).map_err(|source| BenchError::Write { path: path.to_path_buf(), source })?;
    log::info!("bench: wrote {}", path.display());
    Ok(())
}

/// A published cost of the same operation in another hypervisor (issue 8:
/// cycles on real hardware, where the figures here are instructions under
/// QEMU, so the comparison is of orders, not of exact values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    /// Which system and where it was measured.
    pub who: &'static str,
    /// The low end of the published figure.
    pub low: f64,
    /// The high end (the same as `low` for a single figure).
    pub high: f64,
}

/// The published anchors of each item that has a target (issue 8).
pub fn anchors(item: &str) -> &'static [Anchor] {
    static HVC: [Anchor; 4] = [
        Anchor { who: "Xen/ARM", low: 376.0, high: 376.0 },
        Anchor { who: "seL4 fault A53", low: 1_240.0, high: 1_240.0 },
        Anchor { who: "seL4 fault A9", low: 1_540.0, high: 1_540.0 },
        Anchor { who: "KVM/ARM", low: 5_000.0, high: 6_500.0 },
    ];
    static GICD: [Anchor; 2] = [
        Anchor { who: "Xen/ARM", low: 1_356.0, high: 1_356.0 },
        Anchor { who: "KVM/ARM", low: 7_370.0, high: 7_370.0 },
    ];
    static IPI: [Anchor; 2] = [
        Anchor { who: "Xen/ARM", low: 6_000.0, high: 6_000.0 },
        Anchor { who: "KVM/ARM", low: 11_600.0, high: 11_600.0 },
    ];
    match item {
        "hvc" => &HVC,
        "gicd-read" | "gicd-write" => &GICD,
        "ipi" => &IPI,
        _ => &[],
    }
}

/// An SVG chart of the figures that have a target, against the target and
/// the published anchors, on a logarithmic scale: one row per item, a bar
/// for splitvisor, a tick for each anchor, a dashed line for the target.
///
/// Hand-written rather than drawn with `plotters`: the chart is a few
/// rectangles, lines and labels, and `plotters` (not yet a dependency of the
/// workspace) would be built on every clean build of the loader for that.
pub fn plot(figures: &[Figures]) -> String {
    const WIDTH: f64 = 900.0;
    const LEFT: f64 = 190.0;
    const RIGHT: f64 = 40.0;
    const TOP: f64 = 60.0;
    const ROW: f64 = 70.0;
    const DECADES: (f64, f64) = (2.0, 5.0); // 100 to 100,000 on the axis
    let rows: Vec<(&Figures, &Target)> = figures.iter().filter_map(|f| f.target.as_ref().map(|t| (f, t))).collect();
    let height = TOP + ROW * rows.len() as f64 + 60.0;
    let x = |v: f64| {
        let d = v.max(1.0).log10().clamp(DECADES.0, DECADES.1);
        LEFT + (d - DECADES.0) / (DECADES.1 - DECADES.0) * (WIDTH - LEFT - RIGHT)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">splitvisor bench: instructions per operation (log scale)</text>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="42" fill="#555">bar: splitvisor (QEMU, instructions); dashed: target; ticks: published anchors (cycles on hardware)</text>"##
    );
    let bottom = TOP + ROW * rows.len() as f64;
    for exp in 2..=5 {
        for m in 1..10 {
            let v = f64::from(m) * 10f64.powi(exp);
            if v > 10f64.powf(DECADES.1) {
                break;
            }
            let (stroke, label) = if m == 1 { ("#bbb", true) } else { ("#eee", false) };
            let xv = x(v);
            let _ = writeln!(svg, r##"<line x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{bottom}" stroke="{stroke}"/>"##);
            if label {
                let _ = writeln!(
                    svg,
                    r##"<text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                    bottom + 16.0,
                    thousands(v)
                );
            }
        }
    }
    for (i, (f, t)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let label = match f.item.as_str() {
            "ipi" => "virtual IPI (hypervisor)",
            "timer" => "timer tick (hypervisor)",
            "hvc" => "null hypercall",
            "gicd-read" => "GICD read",
            "gicd-write" => "GICD write",
            other => other,
        };
        let _ = writeln!(svg, r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##, LEFT - 8.0, y + 26.0);
        let colour = if t.met { "#2a8f3c" } else { "#c0392b" };
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="16" fill="{colour}"/>"##,
            y + 14.0,
            x(t.measured) - LEFT
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
            x(t.measured) + 4.0,
            y + 26.0,
            thousands(t.measured)
        );
        let xt = x(t.limit);
        let _ = writeln!(
            svg,
            r##"<line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{:.1}" stroke="black" stroke-dasharray="4 3" stroke-width="1.5"/>"##,
            y + 6.0,
            y + 38.0
        );
        for (k, a) in anchors(&f.item).iter().enumerate() {
            let (xl, xh) = (x(a.low), x(a.high));
            let ya = y + 44.0 + 8.0 * (k % 2) as f64;
            let _ = writeln!(
                svg,
                r##"<line x1="{xl:.1}" y1="{ya:.1}" x2="{:.1}" y2="{ya:.1}" stroke="#2c5aa0" stroke-width="3"/>"##,
                xh.max(xl + 2.0)
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#2c5aa0">{}</text>"##,
                xh.max(xl + 2.0) + 3.0,
                ya + 3.5,
                a.who
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// `12,345` for 12345.4.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
