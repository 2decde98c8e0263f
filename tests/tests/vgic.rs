//! The vGIC guests with 2 and 4 vCPUs under splitvisor, and under plain
//! QEMU (its real GICv2) as the reference: `ipi` (SGIs with every target
//! filter, priority order and masking, preemption, active state, more
//! pending interrupts than list registers, the PL011's level-triggered SPI)
//! and `gicd_probe` (the distributor register by register).

use tests::smp::{assert_passed, under_plain_qemu, under_splitvisor, CPU_COUNTS};
use tests::{Expect, Guest, Harness, OrFail, Run};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn ipi_exact(cpus: u8) -> Vec<String> {
    let mut lines = Vec::new();
    for p in 0..cpus {
        for q in (0..cpus).filter(|q| *q != p) {
            lines.push(format!(
                "PASS: ping cpu{p} -> cpu{q} (target list {:#04x}): cpu{q} took 1 SGI 1 from CPU {p}, cpu{p} took 1 \
                 pong SGI 2 from CPU {q} (want 1 and 1)",
                1u8 << q
            ));
        }
        let others: Vec<String> = (0..cpus).filter(|i| *i != p).map(|i| format!("cpu{i}")).collect();
        let others = others.join(" ");
        lines.push(format!("PASS: SGI 3 from cpu{p} with filter all but self: taken by {others} (want {others})"));
        lines.push(format!("PASS: SGI 4 from cpu{p} with filter self only: taken by cpu{p} (want cpu{p})"));
        lines.push(format!(
            "PASS: cpu{p}: 8 SGIs pending at once with priorities 0x10-0x80 acknowledged as [8, 9, 10, 11, 12, 13, 14, \
             15, 1023] (want [8, 9, 10, 11, 12, 13, 14, 15, 1023])"
        ));
        lines.push(format!(
            "PASS: cpu{p}: 8 SGIs pending at once with equal priority: 8 acknowledged, INTIDs 0xff00 (want 8, 0xff00)"
        ));
        for order in ["low first", "high first"] {
            lines.push(format!(
                "PASS: cpu{p}: SGIs 8 (priority 0x80) and 9 (0x40) sent {order}: acknowledged 9, 8, then 1023 (want 9, \
                 8, then 1023)"
            ));
        }
    }
    let all: Vec<String> = (0..cpus).map(|i| format!("cpu{i}")).collect();
    lines.push(format!(
        "PASS: SGI 5 from cpu0 to target list 0xff (CPUs that do not exist included): taken by {} (want every CPU once)",
        all.join(" ")
    ));
    lines.push(format!(
        "PASS: cpu0 took {} SGIs 8-15 pending at once from {} other CPU(s) through the IRQ vector (want {}, each once)",
        8 * (cpus - 1),
        cpus - 1,
        8 * (cpus - 1)
    ));
    lines
}

fn ipi_prefixes(cpus: u8) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..cpus {
        lines.push(format!("PASS: cpu{i}: GICC_PMR 0x60: acknowledged 9, then 1023"));
        lines.push(format!("PASS: cpu{i}: with SGI 8 active, SGI 9 preempts (9)"));
        lines.push(format!("PASS: cpu{i}: SGI 10 acknowledged (10): GICD_ISACTIVER0 active true"));
        lines.push(format!("PASS: PL011 INTID 33 with GICD_ITARGETSR {:#04x}: taken by cpu{i}, once,", 1u8 << i));
    }
    lines.extend(
        [
            "PASS: PL011 UARTRIS.TX true with UARTIMSC 0",
            "PASS: PL011 UARTIMSC.TX set: UARTMIS.TX true, INTID 33 pending true, acknowledged 33 and active true",
            "PASS: PL011 INTID 33 pending again after EOI while the level holds: true",
            "PASS: PL011 UARTIMSC.TX cleared: INTID 33 no longer pending true",
            "PASS: no unexpected interrupt was taken (0)",
        ]
        .map(String::from),
    );
    lines
}

fn check_ipi(result: &Run, cpus: u8) {
    let exact = ipi_exact(cpus);
    let prefixes = ipi_prefixes(cpus);
    let mut expected: Vec<Expect<'_>> = exact.iter().map(|l| Expect::Exact(l)).collect();
    expected.extend(prefixes.iter().map(|p| Expect::Prefix(p)));
    assert_passed(result, Guest::Ipi, &expected);
}

fn probe_exact(cpus: u8) -> Vec<String> {
    let mut lines = vec![
        format!("PASS: GICD_TYPER.CPUNumber + 1 = {cpus} (want the device tree's {cpus} CPUs)"),
        "PASS: ICPIDR2.ArchRev 2 (want 2 for GICv2)".to_string(),
        "PASS: GICD_ISPENDR0 SGI bits ignore writes: 0x0000, after writing 1 to SGI 0 0x0000".to_string(),
        "PASS: GICD_ICFGR0 (SGIs) reads 0xaaaaaaaa, edge-triggered, and ignores writes (0xaaaaaaaa)".to_string(),
        "PASS: GICD_SPENDSGIR byte 0x02 for SGI 3: SPENDSGIR 0x02, CPENDSGIR 0x02, ISPENDR0 true; after CPENDSGIR: \
         0x00, false (want 0x02, 0x02, true, 0x00, false)"
            .to_string(),
        "PASS: offset 0xe00 (GICD_NSACR without the Security Extensions) is RAZ/WI: 0x0, after writing ones 0x0"
            .to_string(),
    ];
    for offset in ["0x00c", "0x010", "0x01c", "0x040", "0x07c", "0xf04", "0xf0c", "0xf30"] {
        lines.push(format!("PASS: offset {offset} (reserved) is RAZ/WI: 0x0, after writing ones 0x0"));
    }
    for i in 1..cpus {
        let mask = 1u32 << i;
        lines.push(format!(
            "PASS: cpu{i}: GICD_ITARGETSR0-7 (SGIs, PPIs) read {:#010x}, its own CPU interface mask {mask:#04x}, and ignore \
             writes",
            mask * 0x0101_0101
        ));
        lines.push(format!(
            "PASS: cpu0 after cpu{i}'s writes: PPI 31 enabled false, SGI 2 priority 0x40, SGI 3 pending true (want false, \
             0x40, true: its own banked state)"
        ));
    }
    lines
}

fn probe_prefixes(cpus: u8, splitvisor: bool) -> Vec<(String, String)> {
    let mut lines = vec![
        ("PASS: GICD_TYPER is read-only".to_string(), String::new()),
        ("PASS: GICD_IIDR is read-only".to_string(), String::new()),
        ("PASS: GICD_CTLR: 0 reads 0x0".to_string(), String::new()),
        ("PASS: INTID ".to_string(), " enable: clear -> 0/0, set -> 1/1".to_string()),
        ("PASS: INTID ".to_string(), " pending: clear -> 0/0, set -> 1/1".to_string()),
        ("PASS: INTID ".to_string(), " active: clear -> 0/0, set -> 1/1".to_string()),
        ("PASS: GICD_IPRIORITYR of INTID ".to_string(), "implemented bits".to_string()),
        ("PASS: GICD_IPRIORITYR byte write 0xa0".to_string(), String::new()),
        ("PASS: cpu0: GICD_ITARGETSR0-7 (SGIs, PPIs) read its own CPU interface mask 0x01".to_string(), String::new()),
        ("PASS: GICD_ITARGETSR byte write 0x01".to_string(), String::new()),
        ("PASS: GICD_ICFGR Int_config[1] of INTID ".to_string(), "edge reads 1, level reads 0".to_string()),
        ("PASS: GICD_IGROUPR bit of INTID ".to_string(), "1 then 0".to_string()),
    ];
    for i in 1..cpus {
        lines.push((
            format!("PASS: cpu{i}: banked SGI/PPI state: cpu0's PPI 29 enable false, own PPI 31 enable true"),
            String::new(),
        ));
    }
    if splitvisor {
        let exist = (1u32 << cpus) - 1;
        lines.push((
            "PASS: GICD_ITARGETSR of INTID ".to_string(),
            format!(": 0xff reads {exist:#04x} (want {exist:#04x}"),
        ));
    }
    lines
}

fn check_probe(result: &Run, cpus: u8, splitvisor: bool) {
    let exact = probe_exact(cpus);
    let prefixes = probe_prefixes(cpus, splitvisor);
    let mut expected: Vec<Expect<'_>> = exact.iter().map(|l| Expect::Exact(l)).collect();
    expected.extend(prefixes.iter().map(|(p, c)| Expect::PrefixContaining(p, c)));
    assert_passed(result, Guest::GicdProbe, &expected);
}

#[test]
fn ipi_guest_under_splitvisor_with_2_and_4_vcpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_splitvisor(&harness, Guest::Ipi, cpus).or_fail();
        check_ipi(&result, cpus);
        println!("ipi --smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}

#[test]
fn ipi_guest_under_plain_qemu_with_2_and_4_cpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_plain_qemu(&harness, Guest::Ipi, cpus).or_fail();
        check_ipi(&result, cpus);
        println!("ipi under plain QEMU -smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}

#[test]
fn gicd_probe_under_splitvisor_with_2_and_4_vcpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_splitvisor(&harness, Guest::GicdProbe, cpus).or_fail();
        check_probe(&result, cpus, true);
        println!("gicd_probe --smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}

#[test]
fn gicd_probe_under_plain_qemu_with_2_and_4_cpus() {
    let harness = harness();
    for cpus in CPU_COUNTS {
        let result = under_plain_qemu(&harness, Guest::GicdProbe, cpus).or_fail();
        check_probe(&result, cpus, false);
        println!("gicd_probe under plain QEMU -smp {cpus}: passed in {:.1?}", result.elapsed);
    }
}
