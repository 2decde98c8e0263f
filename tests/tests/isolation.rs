//! Fault isolation on bare metal (issue 7): the monitor contains a server
//! that fails, restores its state and carries on, under `splitvisor run
//! --inject`.
//!
//! - The `timer` guest with 2 vCPUs (console traffic for the vCPU server,
//!   list registers and maintenance for the vGIC server, timer interrupts
//!   for the vtimer server) passes every check while each server is made to
//!   panic and to return an invalid reply once; each fault is reported with
//!   its server and message number, and recovered.
//! - The `ipi` guest (SGIs between vCPUs, priorities, list-register
//!   overflow) passes with faults injected at random into the vGIC server.
//! - A fault that repeats on the retry: `--on-server-fault stop` stops the
//!   VM with exit status 6; `restart` refuses the request and answers the
//!   guest architecturally (the `hello` guest then sees a data abort for
//!   its console access, reports it and resets: status 3), and the
//!   hypervisor keeps running to the end.
//! - A server that hangs is stopped by its watchdog, restored and retried
//!   (the `smp` guest passes with each server hanging once), never before
//!   its budget has passed; `--budget-ms` sets the budget.
//! - `--checkpoint-every N` sets how often a server's state is
//!   checkpointed: a recovery replays exactly the requests since the last
//!   checkpoint (none at N = 1, up to 1,023 at N = 1,024, the most).
//! - A wild write into the monitor's memory (the server's own checkpoint)
//!   faults in the server's protection domain, on the address it aimed at,
//!   and that memory is unchanged (its hash before and after); with
//!   `--no-domains` the same write lands, and the VM stops (status 6).

use std::time::Duration;

use tests::{run, Guest, Harness, OrFail, Run};

const LIMIT: Duration = Duration::from_secs(240);

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn splitvisor(harness: &Harness, guest: Guest, extra: &[&str]) -> Run {
    tests::qemu::qemu_system_arm().or_fail();
    let kernel = harness.guest_elf(guest).or_fail();
    let monitor = harness.monitor().or_fail();
    let mut args: Vec<std::ffi::OsString> =
        ["run", "--timeout", "120", "--no-reboot", "--smp", "2", "--monitor"].iter().map(Into::into).collect();
    args.push(monitor.into());
    args.extend(extra.iter().map(Into::into));
    args.push("--kernel".into());
    args.push(kernel.into());
    let mut cmd = harness.splitvisor_command(args).or_fail();
    run(&mut cmd, LIMIT, None).or_fail()
}

/// `first`, then `--inject SPEC` for each of `specs`.
fn with_injections<'a>(first: &[&'a str], specs: &'a [String]) -> Vec<&'a str> {
    let mut args = first.to_vec();
    for spec in specs {
        args.extend(["--inject", spec.as_str()]);
    }
    args
}

fn assert_recovered(result: &Run, server: &str, n: &str) {
    let failed = format!("server {server} failed on its message #{n} ");
    let recovered = format!("server {server} recovered: message #{n} done");
    assert!(
        result.stderr.contains(&failed) && result.stderr.contains(&recovered),
        "{server} #{n}: no failure and recovery reported\n{}",
        result.describe()
    );
}

/// The number in `line` just before `suffix` (`12.345 ms after`, `49
/// requests replayed`).
fn number_before(line: &str, suffix: &str) -> Option<f64> {
    let head = &line[..line.find(suffix)?];
    head.rsplit(' ').next()?.parse().ok()
}

/// How many requests the restore of `server` for its message `n` replayed,
/// as the log's recovery line says.
fn replayed(result: &Run, server: &str, n: u32) -> usize {
    let recovered = format!("server {server} recovered: message #{n} done");
    let line = result.stderr.lines().find(|l| l.contains(&recovered));
    let count = line.and_then(|l| number_before(l, " requests replayed"));
    count.unwrap_or_else(|| panic!("{server} #{n}: no recovery with a replay count\n{}", result.describe())) as usize
}

/// How long each hung request had run when its watchdog stopped it, in ms.
fn hang_times(result: &Run) -> Vec<f64> {
    result.stderr.lines().filter_map(|l| number_before(l, " ms after it began")).collect()
}

#[test]
fn each_server_recovers_from_a_panic_and_an_invalid_reply() {
    let harness = harness();
    let faults =
        [("vcpu", "panic", "40"), ("vcpu", "bad-reply", "90"), ("vgic", "panic", "30"), ("vgic", "bad-reply", "700")];
    let faults = faults.iter().chain(&[("vtimer", "panic", "100"), ("vtimer", "bad-reply", "1500")]);
    let specs: Vec<String> = faults.clone().map(|(s, k, n)| format!("{s}:{k}@{n}")).collect();
    let result = splitvisor(&harness, Guest::Timer, &with_injections(&[], &specs));
    assert_eq!(result.code(), Some(0), "the timer guest did not pass with faults injected\n{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS timer"), "{}", result.describe());
    assert!(!result.stdout.contains("FAIL:"), "{}", result.describe());
    for (server, _, n) in faults {
        assert_recovered(&result, server, n);
    }
}

#[test]
fn sgis_survive_random_faults_in_the_vgic_server() {
    let harness = harness();
    let result = splitvisor(&harness, Guest::Ipi, &["--inject", "vgic:panic@random:11:0.02"]);
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS ipi"), "{}", result.describe());
    let recoveries = result.stderr.matches("server vgic recovered").count();
    assert!(recoveries >= 3, "only {recoveries} recoveries at a 2 % rate\n{}", result.describe());
    println!("ipi: {recoveries} vGIC faults recovered");
}

#[test]
fn a_fault_that_repeats_stops_the_vm_with_stop() {
    let harness = harness();
    let result = splitvisor(&harness, Guest::Hello, &["--inject", "vcpu:panic@5:repeat", "--on-server-fault", "stop"]);
    assert_eq!(result.code(), Some(6), "{}", result.describe());
    assert!(result.stderr.contains("server vcpu failed on message #5 again"), "{}", result.describe());
    assert!(result.stderr.contains("exit status 6"), "{}", result.describe());
}

#[test]
fn a_fault_that_repeats_is_refused_architecturally_with_restart() {
    let harness = harness();
    let result = splitvisor(&harness, Guest::Hello, &["--inject", "vcpu:bad-reply@5:repeat"]);
    // The guest's console write was refused with a data abort: the guest
    // reports it and resets (3); the monitor itself did not stop (4).
    assert_eq!(result.code(), Some(3), "{}", result.describe());
    assert!(result.stderr.contains("the request is refused and the guest answered architecturally"));
    assert!(result.stdout.contains("unexpected data abort"), "{}", result.describe());
}

#[test]
fn a_hanging_server_is_stopped_by_its_watchdog() {
    let harness = harness();
    let faults = [("vcpu", "30"), ("vgic", "3"), ("vtimer", "2")];
    let specs: Vec<String> = faults.iter().map(|(s, n)| format!("{s}:hang@{n}")).collect();
    let result = splitvisor(&harness, Guest::Smp, &with_injections(&[], &specs));
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS smp"), "{}", result.describe());
    for (server, n) in faults {
        assert_recovered(&result, server, n);
        assert!(result.stderr.contains("ran past its 100 ms budget (watchdog)"), "{}", result.describe());
    }
    let times = hang_times(&result);
    assert_eq!(times.len(), faults.len(), "{}", result.describe());
    // The watchdog stops a request once it has run a budget, never sooner.
    assert!(times.iter().all(|&ms| ms >= 100.0), "{times:?}\n{}", result.describe());
}

#[test]
fn the_watchdog_budget_is_a_run_option() {
    let harness = harness();
    let result =
        splitvisor(&harness, Guest::Smp, &["--budget-ms", "20", "--inject", "vgic:hang@3", "--inject", "vcpu:hang@30"]);
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS smp"), "{}", result.describe());
    assert_recovered(&result, "vgic", "3");
    assert_recovered(&result, "vcpu", "30");
    assert!(
        result.stderr.contains("containment: a checkpoint every 128 requests, a watchdog budget of 20 ms"),
        "{}",
        result.describe()
    );
    assert_eq!(result.stderr.matches("ran past its 20 ms budget (watchdog)").count(), 2, "{}", result.describe());
    let times = hang_times(&result);
    assert!(times.len() == 2 && times.iter().all(|&ms| ms >= 20.0), "{times:?}\n{}", result.describe());
}

#[test]
fn a_recovery_replays_the_requests_since_the_last_checkpoint() {
    let harness = harness();
    // The server's first request is checkpointed before it runs, and then
    // every `every` requests: the restore for request n replays the
    // (n - 1) % every handled since.
    for (every, faults) in [
        (1, [("vcpu", 90), ("vgic", 700), ("vtimer", 1024)]),
        (50, [("vcpu", 90), ("vgic", 700), ("vtimer", 1024)]),
        (1024, [("vcpu", 90), ("vgic", 1030), ("vtimer", 1024)]),
    ] {
        let every_arg = every.to_string();
        let specs: Vec<String> = faults.iter().map(|(s, n)| format!("{s}:panic@{n}")).collect();
        let extra = with_injections(&["--checkpoint-every", every_arg.as_str()], &specs);
        let result = splitvisor(&harness, Guest::Timer, &extra);
        assert_eq!(result.code(), Some(0), "--checkpoint-every {every}\n{}", result.describe());
        assert!(result.stdout.contains("RESULT: PASS timer"), "{}", result.describe());
        for (server, n) in faults {
            let expected = (n as usize - 1) % every;
            assert_eq!(replayed(&result, server, n), expected, "{server} #{n}, --checkpoint-every {every}");
        }
    }
}

/// The address a line of the log names after `prefix` (`0x...`).
fn address_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    Some(rest.split(|c: char| !c.is_ascii_hexdigit() && c != 'x').next().unwrap_or(rest))
}

#[test]
fn a_wild_write_into_the_monitor_is_stopped_by_the_domain_and_changes_nothing() {
    let harness = harness();
    let faults = [("vcpu", "60"), ("vgic", "40"), ("vtimer", "120")];
    let specs: Vec<String> = faults.iter().map(|(s, n)| format!("{s}:wild-write@{n}")).collect();
    let result = splitvisor(&harness, Guest::Timer, &with_injections(&[], &specs));
    assert_eq!(result.code(), Some(0), "the timer guest did not pass with wild writes\n{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS timer"), "{}", result.describe());
    assert!(!result.stdout.contains("FAIL:"), "{}", result.describe());
    for (server, n) in faults {
        assert_recovered(&result, server, n);
        // The store faulted on the very address it aimed at, which is in
        // the monitor's memory, outside the server's domain...
        let aimed = result
            .stderr
            .lines()
            .find_map(|l| address_after(l, &format!("server {server}: its wild write to ")))
            .unwrap_or_else(|| panic!("{server}: no wild-write report\n{}", result.describe()));
        let abort = result
            .stderr
            .lines()
            .find(|l| l.contains(&format!("server {server}: data abort at ")))
            .unwrap_or_else(|| panic!("{server}: no data abort reported\n{}", result.describe()));
        assert_eq!(address_after(abort, " on "), Some(aimed), "{server}: {abort}");
        assert!(abort.contains("in the monitor's memory: outside its protection domain"), "{abort}");
        // ...and the memory it aimed at is as it was.
        assert!(
            result.stderr.lines().any(|l| l.contains(&format!("server {server}: its wild write to {aimed}"))
                && l.contains("changed nothing there")),
            "{server}: the target was not shown unchanged\n{}",
            result.describe()
        );
    }
}

#[test]
fn without_domains_a_wild_write_lands_and_the_vm_stops() {
    // The control for the test above: the same injection with the servers
    // in the monitor's translation. The store lands in the checkpoint, the
    // monitor sees its hash change and stops the VM (status 6).
    let harness = harness();
    let result = splitvisor(&harness, Guest::Hello, &["--inject", "vcpu:wild-write@30", "--no-domains"]);
    assert_eq!(result.code(), Some(6), "{}", result.describe());
    assert!(
        result.stderr.contains("server vcpu: its wild write to ")
            && result.stderr.contains("landed in the monitor's memory")
            && result.stderr.contains("protection domains are off (--no-domains)"),
        "{}",
        result.describe()
    );
    assert!(!result.stderr.contains("data abort"), "{}", result.describe());
}
