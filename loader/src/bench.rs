//! `splitvisor bench`: the cost of the message path, in instructions.
//!
//! Each item of the `bench` test guest (`tests/guests/src/bin/bench.rs`)
//! runs in its own VM under `splitvisor run --icount`: QEMU counts
//! instructions precisely, skips idle time, and the generic counter ticks
//! once per instruction, so the figures repeat exactly from run to run. The
//! guest times `n` repetitions of its operation with the virtual counter
//! (all exception levels, all CPUs, included). The monitor is built with
//! its `profile` feature, which adds up counter ticks in its trap handler,
//! in each server and in idle WFI; each item runs twice, with `n` and `2n`
//! repetitions, and the difference of the monitor's totals divided by `n`
//! is the hypervisor's share of one operation (boot and set-up cancel out).
//! The same difference of the guest's own counts checks that the figure
//! per operation is stable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::monitor::{Build, MonitorError};
use crate::stats;

/// The items, in the order they are run and shown, with the target for
/// the figure the issue sets (see [`Item::target`]).
pub const ITEMS: [&str; 7] = ["loop", "hvc", "gicd-read", "gicd-write", "ipi", "timer", "console"];

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building the guest or the monitor failed.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The guest build failed.
    #[error("building the bench guest failed: {0}")]
    Guest(String),
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
    /// The monitor's counters (`ticks.*`, `trap.*`, `msg.*`).
    counters: BTreeMap<String, u64>,
}

impl Sample {
    fn counter(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }
}

/// The figures of one item, per operation, in instructions.
#[derive(Clone, Debug, Serialize, PartialEq)]
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
    /// The hypervisor's instructions per operation (trap handler with the
    /// servers, idle WFI excluded; exception entry and exit code excepted).
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
}

/// Build what the benchmark needs and run every item.
pub fn run(options: &Options) -> Result<Vec<Figures>, BenchError> {
    for item in &options.items {
        if !ITEMS.contains(&item.as_str()) {
            return Err(BenchError::UnknownItem(item.clone()));
        }
    }
    let base = Build::from_env();
    let guest = build_guest(&base)?;
    let monitor =
        Build { target_dir: base.target_dir.join("bench-profile"), features: vec!["profile".into()], ..base.clone() }
            .run()?;
    let mut samples: BTreeMap<String, (Sample, Sample)> = BTreeMap::new();
    for item in ITEMS.iter().filter(|i| options.items.iter().any(|o| o == *i)) {
        log::info!("bench: {item} with n = {} and {}", options.n, 2 * options.n);
        let small = run_item(&monitor, &guest, item, options.n, options)?;
        let large = run_item(&monitor, &guest, item, 2 * options.n, options)?;
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

fn run_item(monitor: &Path, guest: &Path, item: &str, n: u32, options: &Options) -> Result<Sample, BenchError> {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("splitvisor"));
    let mut cmd = Command::new(&program);
    cmd.args(["--log-level", "info", "run", "--icount", "--smp", "2", "--no-reboot"]);
    if options.no_isolation {
        cmd.arg("--no-isolation");
    }
    if options.no_domains {
        cmd.arg("--no-domains");
    }
    let output = cmd
        .arg("--timeout")
        .arg(options.timeout.to_string())
        .arg("--monitor")
        .arg(monitor)
        .arg("--kernel")
        .arg(guest)
        .arg("--cmdline")
        .arg(format!("bench.item={item} bench.n={n}"))
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
    if !counters.contains_key("ticks.hyp") {
        return Err(fail("the monitor reported no profile (was it built with --features profile?)".into()));
    }
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
    let hypervisor = per_op("ticks.hyp") - per_op("ticks.idle");
    let (vcpu, vgic, vtimer) = (per_op("ticks.vcpu"), per_op("ticks.vgic"), per_op("ticks.vtimer"));
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
        monitor: hypervisor - vcpu - vgic - vtimer,
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
        "{:<11} {:>9} {:>7} {:>10} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5}  target",
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
            "{:<11} {:>9.1} {:>6.2}% {:>10.1} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>6.2} {:>5.2}  {target}",
            f.item, f.total, f.spread_percent, f.hypervisor, f.monitor, f.vcpu, f.vgic, f.vtimer, f.traps, f.messages
        );
        if let Some(latency) = f.latency {
            let _ =
                writeln!(out, "{:<11} SGIR write to handler: {latency:.1} instructions (both CPUs interleaved)", "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(guest_ticks: u64, pairs: &[(&str, u64)]) -> Sample {
        Sample { guest_ticks, latency: 0, counters: pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect() }
    }

    #[test]
    fn figures_are_the_difference_of_the_two_runs_per_operation() {
        // Boot costs 1000 in the monitor; each operation 300 (100 in the vCPU server).
        let small = sample(
            400_000,
            &[("ticks.hyp", 1_000 + 300_000), ("ticks.vcpu", 100_000), ("trap.hvc", 1_001), ("msg.vcpu", 1_001)],
        );
        let large = sample(
            800_000,
            &[("ticks.hyp", 1_000 + 600_000), ("ticks.vcpu", 200_000), ("trap.hvc", 2_001), ("msg.vcpu", 2_001)],
        );
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
    fn idle_time_is_not_the_hypervisor_s() {
        let small = sample(10, &[("ticks.hyp", 5_000), ("ticks.idle", 4_000)]);
        let large = sample(20, &[("ticks.hyp", 9_000), ("ticks.idle", 7_000)]);
        let f = figures("timer", 1, &small, &large, None);
        assert_eq!(f.hypervisor, 1_000.0);
        assert!(f.target.as_ref().expect("timer has a target").met);
        assert!(render(&[f]).contains("hypervisor per tick 1000 <= 1000: met"));
    }
}
