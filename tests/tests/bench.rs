//! `splitvisor bench` (issue 8): it builds the bench guest, the monitor and
//! the insn-count plugin itself, runs every item under precise icount, and reports
//! figures per operation; `--direct-call` measures the monitor build that
//! calls each server as a function, and `--against` compares the two.
//!
//! Small repetition counts keep this quick: under `-icount` the figures
//! per operation are exact whatever `n` is (the difference of an `n` and a
//! `2n` run), only the boot's cost is spread over fewer operations.

use std::path::Path;
use std::time::Duration;

use loader::bench::{read_json, Figures, ITEMS};
use tests::qemu::qemu_system_arm;
use tests::{run, Harness, OrFail, Run};

/// Two monitor builds, the bench guest's, and 2 × 8 short VM runs each.
const LIMIT: Duration = Duration::from_secs(900);
const N: &str = "1000";
/// How far a per-operation count may be from its exact value: a periodic
/// event (a timer tick, a console line) may fall into one run of an item
/// and not the other.
const SLACK: f64 = 0.02;

/// How far the measured hypervisor instructions of an item may be from
/// those recorded in `tests/perf/` (which the README's table shows) before
/// the record counts as stale: the counts are exact for one build, but a
/// different compiler, or code that moves where QEMU switches between the
/// IPI's two CPUs, moves them by a few per cent.
const RECORD_SLACK: f64 = 0.10;

fn about(measured: f64, expected: f64) -> bool {
    (measured - expected).abs() <= SLACK
}

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn bench(json: &Path, extra: &[&str]) -> Run {
    qemu_system_arm().or_fail();
    let harness = harness();
    let mut cmd = harness.splitvisor_command(["bench", "-n", N, "--json"]).or_fail();
    cmd.arg(json).args(extra);
    let result = run(&mut cmd, LIMIT, None).or_fail();
    assert_eq!(result.code(), Some(0), "splitvisor bench failed\n{}", result.describe());
    assert!(!result.stderr.contains("panicked"), "something panicked\n{}", result.describe());
    result
}

fn item<'a>(figures: &'a [Figures], name: &str) -> &'a Figures {
    figures.iter().find(|f| f.item == name).unwrap_or_else(|| panic!("no figures for {name}: {figures:#?}"))
}

/// Every item has stable figures of the expected shape. `direct`: the
/// direct-call build, where the compiler inlines some server code into the
/// monitor's functions, and the insn-count plugin, which goes by function
/// symbols, counts it as the monitor's.
fn check_shape(figures: &[Figures], result: &Run, direct: bool) {
    let names: Vec<&str> = figures.iter().map(|f| f.item.as_str()).collect();
    assert_eq!(names, ITEMS, "{}", result.describe());
    for f in figures {
        assert!(f.spread_percent.abs() < 1.0, "{} is not stable: {f:#?}", f.item);
        assert!(f.total > 0.0, "{f:#?}");
        // Every instruction of the hypervisor is the monitor's or a server's.
        assert!((f.monitor + f.vcpu + f.vgic + f.vtimer - f.hypervisor).abs() < 0.5, "{f:#?}");
    }
    // The guest's own loop never enters the hypervisor.
    assert!(about(item(figures, "loop").traps, 0.0), "{figures:#?}");
    // A null hypercall: one trap, one message, to the vCPU server.
    let hvc = item(figures, "hvc");
    assert!(about(hvc.traps, 1.0) && about(hvc.messages, 1.0), "{hvc:#?}");
    assert!(hvc.vcpu > 0.0 && hvc.vgic < 1.0 && hvc.vtimer < 1.0, "{hvc:#?}");
    assert!(hvc.hypervisor < hvc.total, "{hvc:#?}");
    // A distributor access: one trap, one message, to the vGIC server.
    for name in ["gicd-read", "gicd-write"] {
        let f = item(figures, name);
        assert!(about(f.traps, 1.0) && about(f.messages, 1.0), "{f:#?}");
        assert!(f.vgic > if direct { 10.0 } else { 100.0 } && f.vcpu < 10.0, "{f:#?}");
    }
    // Each item with a target reports it.
    for name in ["hvc", "gicd-read", "gicd-write", "ipi", "timer"] {
        assert!(item(figures, name).target.is_some(), "{name} has no target");
    }
    assert!(item(figures, "ipi").latency.is_some_and(|l| l > 0.0), "{figures:#?}");
    assert!(direct || item(figures, "timer").vtimer > 0.0, "{figures:#?}");
    // A byte as a driver writes it: the flag read does not trap while the
    // console's read image is mapped, so only the data register's write
    // does.
    let putc = item(figures, "console-putc");
    assert!(about(putc.traps, 1.0) && about(putc.messages, 1.0), "{putc:#?}");
    // A device's interrupt: the data register's write raises the line (the
    // vCPU server's `SetLine`, which lists the SPI in the same reply), the
    // handler's UARTICR write lowers it (another pair), its EOI asks for
    // maintenance: three traps, five messages, no kick and no `Sync`.
    let irq = item(figures, "console-irq");
    assert!(about(irq.traps, 3.0) && about(irq.messages, 5.0), "{irq:#?}");
    assert!(direct || (irq.vcpu > 100.0 && irq.vgic > 100.0), "{irq:#?}");
    for name in ITEMS {
        assert!(result.stdout.lines().any(|l| first_word(l) == Some(name)), "{name} missing\n{}", result.stdout);
    }
}

/// The figures recorded in `tests/perf/<file>` still describe this code:
/// each item's hypervisor instructions within [`RECORD_SLACK`] of those
/// measured now. A change that makes the message path slower, or faster,
/// than that updates the record and the README's table with it.
fn check_record(figures: &[Figures], file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf").join(file);
    let recorded = read_json(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for f in figures.iter().filter(|f| f.item != "loop") {
        let r = item(&recorded, &f.item);
        let change = f.hypervisor / r.hypervisor - 1.0;
        assert!(
            change.abs() <= RECORD_SLACK,
            "{}: {:.0} hypervisor instructions now, {:.0} in {} ({:+.1} %): measure again \
             (splitvisor bench --json {}, see the README) and update the README's table",
            f.item,
            f.hypervisor,
            r.hypervisor,
            path.display(),
            change * 100.0,
            path.display()
        );
    }
}

/// The first column of a table line.
fn first_word(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

#[test]
fn without_the_console_image_a_driver_s_byte_traps_twice() {
    let scratch = harness().scratch().or_fail();
    let json = scratch.join("bench-no-console-image.json");
    bench(&json, &["--item", "console-putc", "--no-console-image"]);
    let figures = read_json(&json).unwrap_or_else(|e| panic!("{e}"));
    let putc = item(&figures, "console-putc");
    assert!(about(putc.traps, 2.0) && about(putc.messages, 2.0), "{putc:#?}");
}

/// With the guest's WFI run natively, the vCPU that waits for the IPI or
/// the tick in WFI no longer traps as it goes idle: an IPI is the SGIR
/// write and the kick, a tick the timer's interrupt and its EOI
/// maintenance.
#[test]
fn with_native_wfi_an_idle_vcpu_does_not_trap() {
    let scratch = harness().scratch().or_fail();
    let json = scratch.join("bench-native-wfi.json");
    bench(&json, &["--item", "ipi", "--item", "timer", "--wfi", "native"]);
    let figures = read_json(&json).unwrap_or_else(|e| panic!("{e}"));
    let ipi = item(&figures, "ipi");
    assert!(about(ipi.traps, 2.0) && about(ipi.messages, 2.0), "{ipi:#?}");
    let timer = item(&figures, "timer");
    assert!(about(timer.traps, 2.0) && about(timer.messages, 3.0) && timer.vtimer > 0.0, "{timer:#?}");
    check_record(&figures, "bench-native-wfi.json");
}

/// The README's `--no-domains` and `--no-isolation` columns: each option
/// takes its part of the message path away (the domain switch; then the
/// containment, checkpoints and reply checks too), and the figures
/// recorded for them still hold.
#[test]
fn domains_and_isolation_each_cost_instructions_as_recorded() {
    let scratch = harness().scratch().or_fail();
    let mut runs = Vec::new();
    // The default build is measured again here: its record may lie within
    // the slack of either option's figures.
    for (option, file) in [
        (None, "bench.json"),
        (Some("--no-domains"), "bench-no-domains.json"),
        (Some("--no-isolation"), "bench-no-isolation.json"),
    ] {
        let json = scratch.join(file);
        let result = bench(&json, option.as_slice());
        let figures = read_json(&json).unwrap_or_else(|e| panic!("{e}"));
        check_shape(&figures, &result, false);
        check_record(&figures, file);
        runs.push(figures);
    }
    for name in ["hvc", "gicd-read", "gicd-write", "console"] {
        let (all, no_domains, no_isolation) = (item(&runs[0], name), item(&runs[1], name), item(&runs[2], name));
        assert!(
            all.hypervisor > no_domains.hypervisor && no_domains.hypervisor > no_isolation.hypervisor,
            "{name}: {all:#?}\n{no_domains:#?}\n{no_isolation:#?}"
        );
    }
}

#[test]
fn bench_measures_every_item_and_the_message_path_against_direct_calls() {
    let scratch = harness().scratch().or_fail();
    let messages_json = scratch.join("bench.json");
    let direct_json = scratch.join("bench-direct-call.json");

    let direct = bench(&direct_json, &["--direct-call"]);
    assert!(
        direct.stderr.contains("the direct-call build"),
        "the direct-call monitor did not run\n{}",
        direct.describe()
    );
    let direct_figures = read_json(&direct_json).unwrap_or_else(|e| panic!("{e}"));
    check_shape(&direct_figures, &direct, true);
    check_record(&direct_figures, "bench-direct-call.json");

    let against = direct_json.display().to_string();
    let messages = bench(&messages_json, &["--against", &against]);
    assert!(!messages.stderr.contains("the direct-call build"), "{}", messages.describe());
    let figures = read_json(&messages_json).unwrap_or_else(|e| panic!("{e}"));
    check_shape(&figures, &messages, false);
    check_record(&figures, "bench.json");

    // The message path (containment, domains, copies, checks) costs
    // something on top of direct calls into the same server code.
    for name in ["hvc", "gicd-read", "gicd-write"] {
        let (m, d) = (item(&figures, name), item(&direct_figures, name));
        assert!(m.hypervisor > d.hypervisor, "{name}: messages {m:#?}\ndirect calls {d:#?}");
        assert!(about(m.messages, d.messages), "{name}: the same messages either way");
    }
    // The comparison: one line per item but the loop, with the target.
    assert!(messages.stdout.contains("messaging overhead <= 15 %"), "{}", messages.stdout);
    for name in ITEMS.iter().filter(|n| **n != "loop") {
        let line = messages
            .stdout
            .lines()
            .filter(|l| first_word(l) == Some(name))
            .nth(1)
            .unwrap_or_else(|| panic!("no comparison line for {name}\n{}", messages.stdout));
        assert!(line.ends_with("met") || line.ends_with("MISSED"), "{line}");
    }

    // The comparison again from the files, without running anything.
    let harness = harness();
    let mut cmd = harness.splitvisor_command(["bench", "--from-json"]).or_fail();
    cmd.arg(&messages_json).arg("--against").arg(&direct_json);
    let again = run(&mut cmd, Duration::from_secs(60), None).or_fail();
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    assert_eq!(again.stdout, messages.stdout, "the same tables from the files");
}
