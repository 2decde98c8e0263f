//! The `timer` guest with 2 and 4 vCPUs under splitvisor, and under plain
//! QEMU as the reference: the virtual timer at 1 kHz for 1 s on every vCPU
//! (within 5 %), the emulated physical timer, WFI waking on every tick,
//! CNTVCT near zero, monotonic and consistent between CPUs. The measured
//! counts are printed (`cargo test -- --nocapture` shows them).

use tests::smp::{assert_passed, lines_with, under_plain_qemu, under_splitvisor_with, CPU_COUNTS};
use tests::{Expect, Guest, Harness, OrFail, Run};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn check(result: &Run, cpus: u8) {
    let mut prefixes = vec![
        "PASS: CNTFRQ is ".to_string(),
        "PASS: CNTVCT at the first instruction: ".to_string(),
        format!("PASS: all {cpus} CPUs finished the three phases"),
    ];
    for i in 0..cpus {
        prefixes.extend([
            format!("PASS: cpu{i}: CNTVCT never went backwards"),
            format!("PASS: cpu{i}: virtual timer at 1000 Hz for 1 s: "),
            format!(
                "PASS: cpu{i}: physical timer: 5 of 5 shots arrived, 0 before CNTP_CVAL, 0 without ISTATUS, 0 with"
            ),
            format!("PASS: cpu{i}: physical timer with IMASK: ISTATUS rose true, not before CNTP_CVAL true"),
            format!("PASS: cpu{i}: WFI with IRQs masked woke for 100 of 100 ticks"),
            format!("PASS: cpu{i}: no unexpected interrupt (0)"),
        ]);
        if i > 0 {
            prefixes.push(format!("PASS: cpu{i}: first CNTVCT "));
        }
    }
    let expected: Vec<Expect<'_>> = prefixes.iter().map(|p| Expect::Prefix(p)).collect();
    for line in lines_with(result, "virtual timer at").into_iter().chain(lines_with(result, "WFI with IRQs")) {
        println!("  {line}");
    }
    assert_passed(result, Guest::Timer, &expected);
}

/// The `splitvisor run` options for `cpus` vCPUs on this machine: with
/// more vCPUs than host cores, without protection domains.
///
/// Each request to a server in its protection domain invalidates the Hyp
/// TLB (Hyp stage 1 has no ASIDs), which QEMU's TCG pays for in host time
/// (it empties the CPU's TLB and its jump cache), not in guest
/// instructions. A tick of this guest is five requests. At 4 vCPUs x 1 kHz
/// on 2 host cores that host time exceeds what the cores have, each tick
/// comes later than the next is due, and the guest, which arms each tick
/// one period after the last deadline, never catches up (measured on this
/// project's 2-core machine: never finishes with domains; 1.5 ms mean
/// lateness without; 3 ms with the HTTBR switch but no invalidation). The
/// domains are exercised with 2 vCPUs here, and with 2 and 4 by the other
/// SMP, isolation and Linux tests.
fn options(cpus: u8) -> &'static [&'static str] {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if usize::from(cpus) > cores {
        &["--no-domains"]
    } else {
        &[]
    }
}

#[test]
fn timer_guest_under_splitvisor_with_2_and_4_vcpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let options = options(cpus);
        let result = under_splitvisor_with(&harness, Guest::Timer, cpus, options).or_fail();
        println!("timer --smp {cpus} {options:?}: ran {:.1?}", result.elapsed);
        check(&result, cpus);
    }
}

#[test]
fn timer_guest_under_plain_qemu_with_2_and_4_cpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_plain_qemu(&harness, Guest::Timer, cpus).or_fail();
        println!("timer under plain QEMU -smp {cpus}: ran {:.1?}", result.elapsed);
        check(&result, cpus);
    }
}
