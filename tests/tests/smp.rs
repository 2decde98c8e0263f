//! The `smp` guest (PSCI CPU power management through the CPU life cycle)
//! with 2 and 4 vCPUs under splitvisor, and under plain QEMU as the
//! reference (QEMU's own PSCI; see `tests::smp::PLAIN_QEMU_SKIPS`).

use tests::smp::{assert_passed, under_plain_qemu, under_splitvisor, CPU_COUNTS};
use tests::{Expect, Guest, Harness, OrFail};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The exact lines every run with `cpus` CPUs must print.
fn life_cycle_lines(cpus: u8) -> Vec<String> {
    let mut lines = vec![
        "PASS: cpu0: AFFINITY_INFO (the boot CPU) -> ON (0) (want ON (0))".to_string(),
        "PASS: cpu0: CPU_ON of the calling CPU -> ALREADY_ON (-4) (want ALREADY_ON (-4))".to_string(),
        format!("PASS: CPU_ON of MPIDR {cpus:#x} (no such CPU) -> INVALID_PARAMETERS (-2) (want INVALID_PARAMETERS (-2))"),
        format!(
            "PASS: AFFINITY_INFO of MPIDR {cpus:#x} (no such CPU) -> INVALID_PARAMETERS (-2) (want INVALID_PARAMETERS (-2))"
        ),
        "PASS: CPU_ON of MPIDR 0xff (no such CPU) -> INVALID_PARAMETERS (-2) (want INVALID_PARAMETERS (-2))".to_string(),
    ];
    for i in 1..cpus {
        for start in 1..=2u8 {
            lines.extend([
                format!("PASS: cpu{i}: AFFINITY_INFO (before CPU_ON) -> OFF (1) (want OFF (1))"),
                format!("PASS: cpu{i}: CPU_ON (start {start}) -> SUCCESS (0) (want SUCCESS (0))"),
                format!(
                    "PASS: cpu{i}: start {start} got context id 0x5ec00{start}0{i} in r0 (want 0x5ec00{start}0{i})"
                ),
                format!("PASS: cpu{i}: start {start} runs with MPIDR 0x8000000{i} (want affinity {i:#x})"),
                format!("PASS: cpu{i}: AFFINITY_INFO (after it reported in) -> ON (0) (want ON (0))"),
                format!(
                    "PASS: cpu{i}: CPU_ON of the running CPU (start {start}) -> ALREADY_ON (-4) (want ALREADY_ON (-4))"
                ),
                format!("PASS: cpu{i}: AFFINITY_INFO (after CPU_OFF of start {start}) -> OFF (1) (want OFF (1))"),
            ]);
        }
    }
    lines
}

fn prefixes(cpus: u8) -> Vec<String> {
    (1..cpus)
        .flat_map(|i| {
            [1, 2].map(|start| format!("PASS: cpu{i}: start {start} entered in mode SVC 0x13 with IRQ and FIQ masked"))
        })
        .collect()
}

#[test]
fn smp_guest_under_splitvisor_with_2_and_4_vcpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_splitvisor(&harness, Guest::Smp, cpus).or_fail();
        let exact = life_cycle_lines(cpus);
        let starts = prefixes(cpus);
        let mut expected: Vec<Expect<'_>> = exact.iter().map(|l| Expect::Exact(l)).collect();
        expected.extend(starts.iter().map(|p| Expect::Prefix(p)));
        // splitvisor's PSCI checks entry points and reports a started CPU
        // ON or ON_PENDING at once.
        expected.push(Expect::PrefixContaining(
            "PASS: cpu1: CPU_ON with entry 0x",
            " outside RAM -> INVALID_ADDRESS (-9) (want INVALID_ADDRESS (-9))",
        ));
        expected.push(Expect::Exact("PASS: cpu1: AFFINITY_INFO (after the refused CPU_ON) -> OFF (1) (want OFF (1))"));
        expected.push(Expect::Prefix("PASS: cpu1: AFFINITY_INFO (just after CPU_ON) -> "));
        expected.push(Expect::Prefix("PASS: cpu1: CPU_ON again at once (start 1) -> "));
        assert_passed(&result, Guest::Smp, &expected);
        println!("smp --smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}

#[test]
fn smp_guest_under_plain_qemu_with_2_and_4_cpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_plain_qemu(&harness, Guest::Smp, cpus).or_fail();
        let exact = life_cycle_lines(cpus);
        let expected: Vec<Expect<'_>> = exact.iter().map(|l| Expect::Exact(l)).collect();
        assert_passed(&result, Guest::Smp, &expected);
        println!("smp under plain QEMU -smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}
