//! `--stats`: the monitor's counters, read from its log and shown as a
//! table when the VM stops, like `kvm_stat` or bhyve's `vmm_stat`.
//!
//! The monitor logs, when it stops the VM (the guest powered off or reset,
//! or the monitor stopped on a fault), one INFO line per report:
//! `[splitvisor cpuN INFO ] stats: key=value key=value ...`, with keys such
//! as `trap.mmio` (traps by kind), `msg.vgic` (messages delivered to each
//! server), `refused` and `dropped`. Unknown keys are shown as they come;
//! anything that is not `key=number` is skipped. A VM that splitvisor stops
//! itself (`--timeout`, Ctrl-C, `Ctrl-a x`) ends before the monitor can
//! report, so it has no statistics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What starts the monitor's statistics line (after the log prefix).
pub const STATS_PREFIX: &str = "stats:";

/// One line of the monitor's log: `[splitvisor cpuN LEVEL] text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorLine<'a> {
    /// The CPU that logged it.
    pub cpu: u32,
    /// Its level.
    pub level: log::Level,
    /// The message.
    pub text: &'a str,
}

/// Read a line of the monitor's log (without its newline); `None` for
/// anything else (QEMU's own messages).
pub fn parse_line(line: &str) -> Option<MonitorLine<'_>> {
    let rest = line.strip_prefix("[splitvisor cpu")?;
    let (cpu, rest) = rest.split_once(' ')?;
    let cpu = cpu.parse().ok()?;
    let (level, text) = rest.split_once(']')?;
    let level = level.trim().parse().ok()?;
    Some(MonitorLine { cpu, level, text: text.strip_prefix(' ').unwrap_or(text) })
}

/// The counters of a line's `stats:` message, if it is one.
pub fn stats_of(line: &MonitorLine<'_>) -> Option<Vec<(String, u64)>> {
    let body = line.text.strip_prefix(STATS_PREFIX)?;
    Some(
        body.split_whitespace()
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                let value = value.parse().ok()?;
                (!key.is_empty()).then(|| (key.to_string(), value))
            })
            .collect(),
    )
}

/// The counters of every report of a `splitvisor run`, added up (the VM
/// restarts on a reset: its runs add up; several CPUs' reports too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    counters: BTreeMap<String, u64>,
    reports: usize,
    runs: usize,
    elapsed: Duration,
}

impl Stats {
    /// Add one run of QEMU: its reports and how long it ran.
    pub fn add_run(&mut self, reports: &[Vec<(String, u64)>], elapsed: Duration) {
        self.runs += 1;
        self.elapsed += elapsed;
        for report in reports {
            self.reports += 1;
            for (key, value) in report {
                let sum = self.counters.entry(key.clone()).or_default();
                *sum = sum.saturating_add(*value);
            }
        }
    }

    /// A counter's total.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.counters.get(key).copied()
    }

    /// The table, or why there is none.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let runs = if self.runs == 1 { "1 run".to_string() } else { format!("{} runs", self.runs) };
        if self.reports == 0 {
            return format!(
                "splitvisor: --stats: the monitor reported no statistics ({runs}, {secs:.1} s); it reports when \
                 the guest powers off or resets or the monitor stops on a fault, not when splitvisor stops the VM\n"
            );
        }
        let mut groups: BTreeMap<(u8, String), Vec<(&str, u64)>> = BTreeMap::new();
        for (key, &value) in &self.counters {
            let (order, title, name) = match key.split_once('.') {
                Some(("trap", name)) => (0, "traps by kind".to_string(), name),
                Some(("msg", name)) => (1, "messages by server".to_string(), name),
                Some((prefix, name)) => (2, prefix.to_string(), name),
                None => (3, "other".to_string(), key.as_str()),
            };
            groups.entry((order, title)).or_default().push((name, value));
        }
        let mut out = format!("splitvisor: statistics ({runs}, {secs:.1} s)\n");
        let _ = writeln!(out, "  {:<28}{:>12}{:>12}", "", "count", "per second");
        for ((order, title), mut rows) in groups {
            let _ = writeln!(out, "  {title}");
            // As kvm_stat: the busiest first.
            rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for (name, value) in rows.iter().filter(|(_, v)| *v != 0) {
                let _ = writeln!(out, "    {name:<26}{value:>12}{:>12}", rate(*value, secs));
            }
            let zero: Vec<&str> = rows.iter().filter(|(_, v)| *v == 0).map(|(n, _)| *n).collect();
            if !zero.is_empty() {
                let _ = writeln!(out, "    none: {}", zero.join(" "));
            }
            if order < 2 {
                let total = rows.iter().fold(0u64, |sum, (_, v)| sum.saturating_add(*v));
                let _ = writeln!(out, "    {:<26}{total:>12}{:>12}", "total", rate(total, secs));
            }
        }
        out
    }
}

fn rate(count: u64, secs: f64) -> String {
    if secs > 0.0 {
        format!("{:.1}", count as f64 / secs)
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "[splitvisor cpu0 INFO ] stats: msg.vcpu=25132 msg.vgic=2850 msg.vtimer=817 trap.hvc=10 \
                        trap.mmio=25154 trap.wfi=450 trap.irq=1093 refused=0 dropped=0";

    #[test]
    fn parses_monitor_lines() {
        let line = parse_line(LINE).unwrap();
        assert_eq!((line.cpu, line.level), (0, log::Level::Info));
        assert!(line.text.starts_with("stats: msg.vcpu=25132"));
        let warn = parse_line("[splitvisor cpu12 WARN ] guest did something").unwrap();
        assert_eq!((warn.cpu, warn.level, warn.text), (12, log::Level::Warn, "guest did something"));
        let debug = parse_line("[splitvisor cpu1 DEBUG] x").unwrap();
        assert_eq!(debug.level, log::Level::Debug);
        for other in [
            "qemu-system-arm: -gdb tcp:127.0.0.1:1: Failed to bind socket",
            "[splitvisor cpuX INFO ] x",
            "[splitvisor cpu0 LOUD ] x",
            "[splitvisor cpu0 INFO x",
            "",
        ] {
            assert_eq!(parse_line(other), None, "{other:?}");
        }
    }

    #[test]
    fn reads_counters_tolerantly() {
        let line = parse_line(LINE).unwrap();
        let counters = stats_of(&line).unwrap();
        assert_eq!(counters.len(), 9);
        assert_eq!(counters[0], ("msg.vcpu".to_string(), 25132));
        let odd = parse_line("[splitvisor cpu0 INFO ] stats: new.key=7 junk =3 x=-1 y=2.5 z= trap.mmio=4").unwrap();
        assert_eq!(stats_of(&odd).unwrap(), vec![("new.key".to_string(), 7), ("trap.mmio".to_string(), 4)]);
        let not = parse_line("[splitvisor cpu0 INFO ] VM stopped with status 0").unwrap();
        assert_eq!(stats_of(&not), None);
    }

    #[test]
    fn adds_up_runs_and_renders() {
        let report = stats_of(&parse_line(LINE).unwrap()).unwrap();
        let mut stats = Stats::default();
        stats.add_run(std::slice::from_ref(&report), Duration::from_secs(2));
        stats.add_run(&[report, vec![("future.thing".into(), 5)]], Duration::from_secs(3));
        assert_eq!(stats.get("trap.mmio"), Some(50308));
        assert_eq!(stats.get("future.thing"), Some(5));
        let table = stats.render();
        assert!(table.starts_with("splitvisor: statistics (2 runs, 5.0 s)"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        let traps = lines.iter().position(|l| l.trim() == "traps by kind").unwrap();
        // The busiest kind first, then a total.
        assert!(lines[traps + 1].trim_start().starts_with("mmio"), "{table}");
        assert!(lines[traps + 1].contains("50308") && lines[traps + 1].contains("10061.6"), "{table}");
        let msgs = lines.iter().position(|l| l.trim() == "messages by server").unwrap();
        assert!(lines[msgs - 1].trim_start().starts_with("total") && lines[msgs - 1].contains("53414"), "{table}");
        assert!(lines[msgs + 1].trim_start().starts_with("vcpu"), "{table}");
        assert!(lines.iter().any(|l| l.trim() == "future"), "unknown prefixes get a group\n{table}");
        assert!(lines.iter().any(|l| l.trim() == "none: dropped refused"), "zero counters on one line\n{table}");
        assert!(!lines.iter().any(|l| l.trim_start().starts_with("refused")), "{table}");
    }

    #[test]
    fn no_report_is_said_so() {
        let mut stats = Stats::default();
        stats.add_run(&[], Duration::from_secs(1));
        assert!(stats.render().contains("reported no statistics"));
    }
}
