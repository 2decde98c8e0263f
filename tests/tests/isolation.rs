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
//!   (the `smp` guest passes with each server hanging once).
//! - The fault the monitor cannot contain yet (`wild-write`) is refused on
//!   the command line.

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

fn assert_recovered(result: &Run, server: &str, n: &str) {
    let failed = format!("server {server} failed on its message #{n} ");
    let recovered = format!("server {server} recovered: message #{n} done");
    assert!(
        result.stderr.contains(&failed) && result.stderr.contains(&recovered),
        "{server} #{n}: no failure and recovery reported\n{}",
        result.describe()
    );
}

#[test]
fn each_server_recovers_from_a_panic_and_an_invalid_reply() {
    let harness = harness();
    let faults =
        [("vcpu", "panic", "40"), ("vcpu", "bad-reply", "90"), ("vgic", "panic", "30"), ("vgic", "bad-reply", "700")];
    let faults = faults.iter().chain(&[("vtimer", "panic", "100"), ("vtimer", "bad-reply", "1500")]);
    let mut extra = Vec::new();
    let specs: Vec<String> = faults.clone().map(|(s, k, n)| format!("{s}:{k}@{n}")).collect();
    for spec in &specs {
        extra.extend(["--inject", spec.as_str()]);
    }
    let result = splitvisor(&harness, Guest::Timer, &extra);
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
    let mut extra = Vec::new();
    for spec in &specs {
        extra.extend(["--inject", spec.as_str()]);
    }
    let result = splitvisor(&harness, Guest::Smp, &extra);
    assert_eq!(result.code(), Some(0), "{}", result.describe());
    assert!(result.stdout.contains("RESULT: PASS smp"), "{}", result.describe());
    for (server, n) in faults {
        assert_recovered(&result, server, n);
        assert!(result.stderr.contains("ran past its 100 ms budget (watchdog)"), "{}", result.describe());
    }
}

#[test]
fn faults_the_monitor_cannot_contain_yet_are_refused() {
    let harness = harness();
    for spec in ["vcpu:wild-write@3", "vgic:wild-write@random:1:0.5"] {
        let result = splitvisor(&harness, Guest::Hello, &["--inject", spec]);
        assert_eq!(result.code(), Some(2), "{spec}\n{}", result.describe());
        assert!(result.stderr.contains("is not available under `run` yet"), "{spec}\n{}", result.describe());
    }
}
