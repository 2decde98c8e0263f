//! Trace recording and replay end to end: a guest run under
//! `splitvisor run --trace FILE` is replayed against the servers on the host
//! with `splitvisor replay`, which must find every reply equal to the
//! recorded one; a trace with one reply altered must be reported as a
//! divergence at that record; a cut trace must be a clear error.

use std::path::Path;
use std::time::Duration;

use tests::{run, Guest, Harness, OrFail, Run};

const LIMIT: Duration = Duration::from_secs(240);

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn splitvisor(harness: &Harness, args: &[&std::ffi::OsStr]) -> Run {
    let mut cmd = harness.splitvisor_command(args).or_fail();
    run(&mut cmd, LIMIT, None).or_fail()
}

fn record(harness: &Harness, guest: Guest, smp: &str, trace: &Path) -> Run {
    tests::qemu::qemu_system_arm().or_fail();
    let kernel = harness.guest_elf(guest).or_fail();
    harness.monitor().or_fail();
    splitvisor(
        harness,
        &[
            "run".as_ref(),
            "--timeout".as_ref(),
            "60".as_ref(),
            "--no-reboot".as_ref(),
            "--smp".as_ref(),
            smp.as_ref(),
            "--trace".as_ref(),
            trace.as_os_str(),
            "--kernel".as_ref(),
            kernel.as_os_str(),
        ],
    )
}

#[test]
fn a_recorded_run_replays_exactly_and_an_altered_one_diverges() {
    let harness = harness();
    let scratch = harness.scratch().or_fail();
    let trace = scratch.join("smp.trace");
    let ran = record(&harness, Guest::Smp, "2", &trace);
    assert_eq!(ran.code(), Some(0), "the traced guest did not pass\n{}", ran.describe());

    let replayed = splitvisor(&harness, &["replay".as_ref(), trace.as_os_str()]);
    assert_eq!(replayed.code(), Some(0), "{}", replayed.describe());
    assert!(replayed.stdout.contains("every reply matched"), "{}", replayed.describe());

    // Each server in its own process, each made to fail once: still exact.
    let isolated = splitvisor(
        &harness,
        &[
            "replay".as_ref(),
            "--isolate".as_ref(),
            "process".as_ref(),
            "--checkpoint-every".as_ref(),
            "8".as_ref(),
            "--inject".as_ref(),
            "vcpu:panic@12".as_ref(),
            "--inject".as_ref(),
            "vgic:bad-reply@5".as_ref(),
            "--inject".as_ref(),
            "vtimer:wild-write@3".as_ref(),
            trace.as_os_str(),
        ],
    );
    assert_eq!(isolated.code(), Some(0), "{}", isolated.describe());
    assert!(isolated.stdout.contains("every reply matched"), "{}", isolated.describe());
    assert!(isolated.stdout.contains("3 recoveries (3 retried successfully)"), "{}", isolated.describe());

    let shown = splitvisor(&harness, &["trace".as_ref(), "show".as_ref(), trace.as_os_str()]);
    assert_eq!(shown.code(), Some(0), "{}", shown.describe());
    assert!(shown.stdout.contains("config: 2 vCPU(s)"), "{}", shown.describe());
    assert!(shown.stdout.contains("vcpu Trap Hvc"), "no PSCI call in the summary\n{}", shown.describe());

    // Alter one reply: find the first record that is a reply with a
    // register write and flip a bit of the value, by decoding and
    // re-encoding through the trace's own format.
    let bytes = std::fs::read(&trace).expect("the trace file");
    let frames: Vec<&[u8]> = bytes.split_inclusive(|&b| b == 0).collect();
    let mut altered = Vec::new();
    let mut done = false;
    for frame in frames {
        let mut buf = frame.to_vec();
        let mut record: ipc::trace::TraceRecord = ipc::wire::decode_frame(&mut buf).expect("a record of the trace");
        if !done {
            if let ipc::trace::TraceRecord::Reply { result: Ok(reply), .. } = &mut record {
                let mut actions = reply.actions.to_vec();
                if let Some(ipc::Action::SetReg { value, .. }) = actions.first_mut() {
                    *value ^= 1;
                    done = true;
                }
                reply.actions = actions.into_iter().collect();
            }
        }
        let mut out = [0u8; 4096];
        altered.extend_from_slice(ipc::wire::encode_frame(&record, &mut out).expect("re-encoding a record"));
    }
    assert!(done, "the trace holds no register write to alter");
    let bad = scratch.join("altered.trace");
    std::fs::write(&bad, &altered).expect("writing the altered trace");
    let replayed = splitvisor(&harness, &["replay".as_ref(), bad.as_os_str()]);
    assert_eq!(replayed.code(), Some(1), "{}", replayed.describe());
    assert!(replayed.stdout.contains("divergence at record #"), "{}", replayed.describe());

    // A cut trace is one clear error.
    let cut = scratch.join("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() - 2]).expect("writing the cut trace");
    let replayed = splitvisor(&harness, &["replay".as_ref(), cut.as_os_str()]);
    assert_eq!(replayed.code(), Some(1), "{}", replayed.describe());
    assert!(replayed.stderr.contains("truncated"), "{}", replayed.describe());
}

/// The Debian boot recorded in `tests/traces` (see `tests/traces/record`):
/// the servers of today must answer every request of that boot exactly as
/// the servers that recorded it did. A change to a server that alters any
/// reply of a real Linux boot fails here; when the change is intended,
/// re-record with `tests/traces/record`.
#[test]
fn the_recorded_linux_boot_replays_exactly() {
    let harness = harness();
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces").join("linux-2vcpu-boot.trace.gz");
    let records = loader::trace::read(&trace).unwrap_or_else(|e| panic!("{e}"));
    let requests = |server: ipc::ServerId| {
        records
            .iter()
            .filter(|r| matches!(r, ipc::trace::TraceRecord::Request { message, .. } if message.server() == server))
            .count()
    };
    // A whole boot, not a fragment: every server did real work. (The boot
    // is quiet: the vCPU server has some 580 requests, its WFIs going to
    // the vGIC server, which has some 2,350: the virtual timer is delivered
    // masked to a Linux kernel, with no EOI maintenance request a tick.)
    for (server, least) in [(ipc::ServerId::Vcpu, 500), (ipc::ServerId::Vgic, 2_000), (ipc::ServerId::Vtimer, 500)] {
        assert!(requests(server) >= least, "{server:?}: {} requests, want at least {least}", requests(server));
    }

    let replayed = splitvisor(&harness, &["replay".as_ref(), trace.as_os_str()]);
    assert_eq!(replayed.code(), Some(0), "{}", replayed.describe());
    assert!(replayed.stdout.contains("every reply matched"), "{}", replayed.describe());

    // The same boot with one vGIC reply altered (a list-register value)
    // must be reported as a divergence.
    let mut altered = Vec::new();
    let mut done = false;
    for mut record in records {
        if !done {
            if let ipc::trace::TraceRecord::Reply { server: ipc::ServerId::Vgic, result: Ok(reply), .. } = &mut record {
                let mut actions = reply.actions.to_vec();
                if let Some(ipc::Action::WriteListRegister { value, .. }) = actions.first_mut() {
                    *value ^= 1 << 28;
                    done = true;
                }
                reply.actions = actions.into_iter().collect();
            }
        }
        let mut out = [0u8; 4096];
        altered.extend_from_slice(ipc::wire::encode_frame(&record, &mut out).expect("re-encoding a record"));
    }
    assert!(done, "the boot has no list-register write to alter");
    let bad = harness.scratch().or_fail().join("linux-altered.trace");
    std::fs::write(&bad, &altered).expect("writing the altered trace");
    let replayed = splitvisor(&harness, &["replay".as_ref(), bad.as_os_str()]);
    assert_eq!(replayed.code(), Some(1), "{}", replayed.describe());
    assert!(replayed.stdout.contains("divergence at record #"), "{}", replayed.describe());
}

/// `splitvisor trace show FILE | head`: the reader stops early, and
/// splitvisor ends quietly, with status 0 (it said "Broken pipe" and
/// exited 1 before).
#[test]
fn trace_show_into_a_pipe_closed_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let harness = harness();
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces").join("linux-2vcpu-boot.trace.gz");
    let mut cmd = harness.splitvisor_command(["trace".as_ref(), "show".as_ref(), trace.as_os_str()]).or_fail();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("splitvisor starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("its stdout")).read_line(&mut first).expect("a first line");
    // The reader is dropped here: the rest of the output (hundreds of KB)
    // meets a closed pipe.
    let output = child.wait_with_output().expect("splitvisor ends");
    assert!(first.starts_with("config: 2 vCPU(s)"), "{first}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
