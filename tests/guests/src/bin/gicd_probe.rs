//! Test guest `gicd_probe`: the GICv2 distributor register by register, as
//! a conformance suite reads and writes it (Arm IHI 0048B, 4.3
//! "Distributor register descriptions").
//!
//! The CPU interface stays disabled and IRQs masked, so nothing set pending
//! here is ever signalled. Checks, each a PASS/FAIL line:
//! GICD_TYPER (CPUNumber against the device tree's CPU count, enough lines
//! for the UART's SPI, read-only), GICD_IIDR (read-only), ICPIDR2.ArchRev
//! (GICv2), GICD_CTLR (enable bits only), reserved offsets and registers
//! beyond ITLinesNumber (RAZ/WI), set/clear-enable, -pending and -active
//! pairs on an SPI (both views agree, writing 0 does nothing), SGI bits of
//! GICD_ISPENDR0 (writes ignored), GICD_IPRIORITYR (implemented bits, byte
//! access that leaves the neighbours alone), GICD_ITARGETSR (SGIs/PPIs
//! read-only, reading the accessing CPU's own bit on every CPU; SPI bits
//! only for CPUs that exist; byte access), GICD_ICFGR (SGIs read-only and
//! edge, SPI Int_config\[1\] writable), GICD_IGROUPR (writable without the
//! Security Extensions), GICD_SPENDSGIR/CPENDSGIR (byte access, per
//! requester), and from every CPU the banking of the SGI/PPI registers.
//!
//! Powers off with SYSTEM_OFF when everything held, SYSTEM_RESET otherwise.

#![no_std]
#![no_main]
// Loops run over CPU numbers and index several per-CPU arrays with them.
#![allow(clippy::needless_range_loop)]

use core::sync::atomic::{AtomicU32, Ordering};

use test_guests::dtb::MAX_CPUS;
use test_guests::gic::{bit_position, cfg_position, gicc, gicd, Gic, Typer};
use test_guests::platform::Platform;
use test_guests::psci::ReturnCode;
use test_guests::smp::{self, Secondary};
use test_guests::{arch, outln, rt, shared_check, BootInfo, Report};

test_guests::entry!(main);

/// The PPI CPU 0 enables before a secondary looks (must not show there).
const PPI_CPU0: u32 = 29;
/// The PPI a secondary enables (must not show on CPU 0).
const PPI_SECONDARY: u32 = 31;
/// The SGI whose priority each CPU sets differently.
const SGI_PRIO: u32 = 2;
/// The SGI CPU 0 makes pending through GICD_SPENDSGIR.
const SGI_PEND: u32 = 3;
/// CPU 0's and a secondary's priorities for [`SGI_PRIO`].
const PRIO_CPU0: u8 = 0x40;
const PRIO_SECONDARY: u8 = 0xc0;
/// Reserved offsets (IHI 0048B Table 4-1): RAZ/WI.
const RESERVED: [usize; 8] = [0x00c, 0x010, 0x01c, 0x040, 0x07c, 0xf04, 0xf0c, 0xf30];
const WAIT_MS: u64 = 5_000;
/// The skip name of the check that GICD_ITARGETSR keeps no bits for CPUs
/// that do not exist (IHI 0048B 4.3.12): QEMU 7.2 keeps all eight.
const SKIP_TARGET_MASK: &str = "gicd-itargetsr-mask";
/// Whether the command line skips [`SKIP_TARGET_MASK`].
static SKIP_MASK: AtomicU32 = AtomicU32::new(0);

fn platform_skips_target_mask() -> bool {
    SKIP_MASK.load(Ordering::SeqCst) != 0
}

/// The GIC frames, for the secondaries.
static GICD_BASE: AtomicU32 = AtomicU32::new(0);
static GICC_BASE: AtomicU32 = AtomicU32::new(0);
/// Set by a secondary when its checks are done.
static SECONDARY_DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn gic() -> Gic {
    // SAFETY: CPU 0 stored the device tree's GIC frames before starting
    // any secondary.
    unsafe { Gic::new(GICD_BASE.load(Ordering::SeqCst) as usize, GICC_BASE.load(Ordering::SeqCst) as usize) }
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("gicd_probe", boot);
    let platform = Platform::discover(&env, &mut report);
    let n = platform.cpu_count();
    SKIP_MASK.store(u32::from(platform.skipped(SKIP_TARGET_MASK)), Ordering::SeqCst);
    GICD_BASE.store(platform.gic.dist_base() as u32, Ordering::SeqCst);
    GICC_BASE.store(platform.gic_node.cpu.base as u32, Ordering::SeqCst);
    arch::irq_disable();
    let gic = gic();
    gic.cpu_write(gicc::CTLR, 0);

    let typer = Typer(gic.dist_read(gicd::TYPER));
    let intids = typer.intids();
    report.info(format_args!(
        "GICD_TYPER {:#010x}: {} INTIDs, {} CPU interface(s), SecurityExtn {}",
        typer.0,
        intids,
        typer.cpus(),
        typer.security_extn()
    ));
    report.check(
        typer.cpus() as usize == n,
        format_args!("GICD_TYPER.CPUNumber + 1 = {} (want the device tree's {n} CPUs)", typer.cpus()),
    );
    let uart = platform.uart.map_or(0, |(_, irq)| irq.intid);
    report.check(
        intids > uart && intids > 32,
        format_args!(
            "GICD_TYPER.ITLinesNumber {} gives {intids} INTIDs, enough for the UART's INTID {uart}",
            typer.it_lines()
        ),
    );
    read_only(&mut report, &gic, gicd::TYPER, "GICD_TYPER");
    let iidr = gic.dist_read(gicd::IIDR);
    report.info(format_args!("GICD_IIDR {iidr:#010x}"));
    read_only(&mut report, &gic, gicd::IIDR, "GICD_IIDR");
    let archrev = (gic.dist_read(gicd::ICPIDR2) >> gicd::PIDR2_ARCHREV_SHIFT) & 0xf;
    report.check(
        archrev == gicd::PIDR2_ARCHREV_GICV2,
        format_args!("ICPIDR2.ArchRev {archrev} (want {} for GICv2)", gicd::PIDR2_ARCHREV_GICV2),
    );

    ctlr(&mut report, &gic, typer);
    for offset in RESERVED {
        raz_wi(&mut report, &gic, offset, "reserved");
    }
    if !typer.security_extn() {
        raz_wi(&mut report, &gic, gicd::NSACR, "GICD_NSACR without the Security Extensions");
    }
    beyond_lines(&mut report, &gic, typer);

    // The SPI used for the SPI checks: the last implemented one, not the
    // UART's.
    let spi = if intids - 1 == uart { intids - 2 } else { intids - 1 };
    report.info(format_args!("SPI checks on INTID {spi}"));
    // Targeted at this CPU: a GIC may keep an SPI's pending state per
    // target (QEMU's does), and one without a target has none.
    gic.set_targets(spi, gic.own_mask());
    set_clear_pair(&mut report, &gic, spi, gicd::ISENABLER, gicd::ICENABLER, "enable");
    set_clear_pair(&mut report, &gic, spi, gicd::ISPENDR, gicd::ICPENDR, "pending");
    set_clear_pair(&mut report, &gic, spi, gicd::ISACTIVER, gicd::ICACTIVER, "active");
    sgi_pending_bits(&mut report, &gic);
    priorities(&mut report, &gic, spi);
    targets(&mut report, &gic, spi, n);
    config(&mut report, &gic, spi);
    groups(&mut report, &gic, spi, typer);
    sgi_pending_registers(&mut report, &gic, n);
    banking(&mut report, &gic, n);
    report.finish()
}

fn read_only(report: &mut Report, gic: &Gic, offset: usize, name: &str) {
    let before = gic.dist_read(offset);
    gic.dist_write(offset, !before);
    let after = gic.dist_read(offset);
    report.check(
        before == after,
        format_args!("{name} is read-only: {before:#010x}, after writing its complement {after:#010x}"),
    );
}

fn raz_wi(report: &mut Report, gic: &Gic, offset: usize, what: &str) {
    let before = gic.dist_read(offset);
    gic.dist_write(offset, 0xffff_ffff);
    let after = gic.dist_read(offset);
    report.check(
        before == 0 && after == 0,
        format_args!("offset {offset:#05x} ({what}) is RAZ/WI: {before:#x}, after writing ones {after:#x}"),
    );
}

fn ctlr(report: &mut Report, gic: &Gic, typer: Typer) {
    let mask =
        if typer.security_extn() { gicd::CTLR_ENABLE_GRP0 } else { gicd::CTLR_ENABLE_GRP0 | gicd::CTLR_ENABLE_GRP1 };
    gic.dist_write(gicd::CTLR, 0);
    let off = gic.dist_read(gicd::CTLR);
    gic.dist_write(gicd::CTLR, 0xffff_ffff);
    let all = gic.dist_read(gicd::CTLR);
    gic.dist_write(gicd::CTLR, gicd::CTLR_ENABLE_GRP0);
    let one = gic.dist_read(gicd::CTLR);
    report.check(
        off == 0 && all == mask && one == gicd::CTLR_ENABLE_GRP0,
        format_args!(
            "GICD_CTLR: 0 reads {off:#x}, ones read {all:#x}, 1 reads {one:#x} (want 0, {mask:#x}, 0x1: only the enable bits)"
        ),
    );
}

/// The first register of each bank past ITLinesNumber is RAZ/WI.
fn beyond_lines(report: &mut Report, gic: &Gic, typer: Typer) {
    if typer.it_lines() >= 31 {
        return;
    }
    let first = typer.intids();
    let (bit_word, _) = bit_position(first);
    for (bank, name) in
        [(gicd::ISENABLER, "GICD_ISENABLER"), (gicd::ISPENDR, "GICD_ISPENDR"), (gicd::ISACTIVER, "GICD_ISACTIVER")]
    {
        raz_wi(report, gic, bank + bit_word, name);
    }
    raz_wi(report, gic, gicd::IPRIORITYR + first as usize, "GICD_IPRIORITYR");
    raz_wi(report, gic, gicd::ITARGETSR + first as usize, "GICD_ITARGETSR");
    raz_wi(report, gic, gicd::ICFGR + cfg_position(first).0, "GICD_ICFGR");
}

/// A set/clear register pair on one SPI bit: both read the state, writing 1
/// to the set register sets, writing 0 anywhere does nothing, writing 1 to
/// the clear register clears.
fn set_clear_pair(report: &mut Report, gic: &Gic, intid: u32, set: usize, clear: usize, what: &str) {
    let (offset, bit) = bit_position(intid);
    gic.dist_write(clear + offset, bit);
    let cleared = (gic.dist_read(set + offset) & bit, gic.dist_read(clear + offset) & bit);
    gic.dist_write(set + offset, bit);
    let set_views = (gic.dist_read(set + offset) & bit, gic.dist_read(clear + offset) & bit);
    gic.dist_write(set + offset, 0);
    gic.dist_write(clear + offset, 0);
    let zeros = gic.dist_read(set + offset) & bit;
    gic.dist_write(clear + offset, bit);
    let again = gic.dist_read(set + offset) & bit;
    report.check(
        cleared == (0, 0) && set_views == (bit, bit) && zeros == bit && again == 0,
        format_args!(
            "INTID {intid} {what}: clear -> {}/{}, set -> {}/{} (set/clear views), zeros written -> {}, clear -> {} \
             (want 0/0, 1/1, 1, 0)",
            u32::from(cleared.0 != 0),
            u32::from(cleared.1 != 0),
            u32::from(set_views.0 != 0),
            u32::from(set_views.1 != 0),
            u32::from(zeros != 0),
            u32::from(again != 0)
        ),
    );
}

/// GICv2: GICD_ISPENDR0/ICPENDR0 bits for SGIs ignore writes.
fn sgi_pending_bits(report: &mut Report, gic: &Gic) {
    let before = gic.dist_read(gicd::ISPENDR) & 0xffff;
    gic.dist_write(gicd::ISPENDR, 0x0001);
    let after = gic.dist_read(gicd::ISPENDR) & 0xffff;
    gic.dist_write(gicd::ICPENDR, 0xffff);
    report.check(
        before == 0 && after == 0,
        format_args!("GICD_ISPENDR0 SGI bits ignore writes: {before:#06x}, after writing 1 to SGI 0 {after:#06x}"),
    );
}

fn priorities(report: &mut Report, gic: &Gic, spi: u32) {
    let byte = gicd::IPRIORITYR + spi as usize;
    gic.dist_write8(byte, 0xff);
    let implemented = gic.dist_read8(byte);
    let bits = implemented.leading_ones();
    report.check(
        bits >= 4 && bits + implemented.trailing_zeros() == 8,
        format_args!("GICD_IPRIORITYR of INTID {spi}: 0xff reads {implemented:#04x} ({bits} implemented bits, the high ones, at least 4)"),
    );
    let word = byte & !3;
    let shift = 8 * (byte & 3);
    gic.dist_write(word, 0);
    gic.dist_write8(byte, 0xa0);
    let got = gic.dist_read(word);
    let want = (0xa0 & u32::from(implemented)) << shift;
    report.check(
        got == want,
        format_args!("GICD_IPRIORITYR byte write 0xa0 at {byte:#x} leaves its neighbours alone: word {got:#010x} (want {want:#010x})"),
    );
    gic.dist_write(word, 0);
}

fn targets(report: &mut Report, gic: &Gic, spi: u32, n: usize) {
    let own = gic.own_mask();
    check_own_targets(report, gic, 0, own);
    let byte = gicd::ITARGETSR + spi as usize;
    gic.dist_write8(byte, 0xff);
    let got = gic.dist_read8(byte);
    let exist = ((1u32 << n) - 1) as u8;
    if platform_skips_target_mask() {
        outln!("gicd_probe: GICD_ITARGETSR 0xff reads {got:#04x}: check skipped ({SKIP_TARGET_MASK})");
    } else {
        report.check(
            got == exist,
            format_args!(
                "GICD_ITARGETSR of INTID {spi}: 0xff reads {got:#04x} (want {exist:#04x}: only CPUs that exist)"
            ),
        );
    }
    let word = byte & !3;
    let shift = 8 * (byte & 3);
    gic.dist_write(word, 0);
    gic.dist_write8(byte, own);
    let got = gic.dist_read(word);
    let want = u32::from(own) << shift;
    report.check(
        got == want,
        format_args!("GICD_ITARGETSR byte write {own:#04x} at {byte:#x} leaves its neighbours alone: word {got:#010x} (want {want:#010x})"),
    );
    gic.dist_write(word, 0);
}

/// GICD_ITARGETSR0-7 read the accessing CPU's own bit in every byte and
/// ignore writes.
fn check_own_targets(report: &mut Report, gic: &Gic, cpu: usize, own: u8) {
    let want = u32::from(own) * 0x0101_0101;
    let mut first_bad = None;
    for word in 0..8 {
        let offset = gicd::ITARGETSR + 4 * word;
        let before = gic.dist_read(offset);
        gic.dist_write(offset, 0);
        let after = gic.dist_read(offset);
        if first_bad.is_none() && (before != want || after != want) {
            first_bad = Some((offset, before, after));
        }
    }
    let (offset, before, after) = first_bad.unwrap_or((gicd::ITARGETSR, want, want));
    report.check(
        first_bad.is_none() && own.count_ones() == 1,
        format_args!(
            "cpu{cpu}: GICD_ITARGETSR0-7 (SGIs, PPIs) read its own CPU interface mask {own:#04x} in every byte and ignore \
             writes (at {offset:#x}: {before:#010x}, after writing 0 {after:#010x})"
        ),
    );
}

fn config(report: &mut Report, gic: &Gic, spi: u32) {
    let sgis = gic.dist_read(gicd::ICFGR);
    gic.dist_write(gicd::ICFGR, !sgis);
    let after = gic.dist_read(gicd::ICFGR);
    report.check(
        sgis == after && sgis & 0xaaaa_aaaa == 0xaaaa_aaaa,
        format_args!("GICD_ICFGR0 (SGIs) reads {sgis:#010x}, edge-triggered, and ignores writes ({after:#010x})"),
    );
    let (offset, shift) = cfg_position(spi);
    let reg = gicd::ICFGR + offset;
    let before = gic.dist_read(reg);
    gic.dist_write(reg, before | 2 << shift);
    let edge = (gic.dist_read(reg) >> shift) & 2;
    gic.dist_write(reg, before & !(2 << shift));
    let level = (gic.dist_read(reg) >> shift) & 2;
    gic.dist_write(reg, before);
    report.check(
        edge == 2 && level == 0,
        format_args!(
            "GICD_ICFGR Int_config[1] of INTID {spi} is writable: edge reads {}, level reads {} (want 1, 0)",
            edge >> 1,
            level >> 1
        ),
    );
}

fn groups(report: &mut Report, gic: &Gic, spi: u32, typer: Typer) {
    if typer.security_extn() {
        return;
    }
    let (offset, bit) = bit_position(spi);
    let reg = gicd::IGROUPR + offset;
    let before = gic.dist_read(reg);
    gic.dist_write(reg, before | bit);
    let set = gic.dist_read(reg) & bit;
    gic.dist_write(reg, before & !bit);
    let clear = gic.dist_read(reg) & bit;
    report.check(
        set == bit && clear == 0,
        format_args!(
            "GICD_IGROUPR bit of INTID {spi} is writable without the Security Extensions: {} then {} (want 1, 0)",
            u32::from(set != 0),
            u32::from(clear != 0)
        ),
    );
}

/// GICD_SPENDSGIR/CPENDSGIR: byte access, one bit per requester.
fn sgi_pending_registers(report: &mut Report, gic: &Gic, n: usize) {
    let source = if n > 1 { 0x02 } else { 0x01 };
    let byte = SGI_PEND as usize;
    gic.dist_write8(gicd::SPENDSGIR + byte, source);
    let spend = gic.dist_read8(gicd::SPENDSGIR + byte);
    let cpend = gic.dist_read8(gicd::CPENDSGIR + byte);
    let pending = gic.is_pending(SGI_PEND);
    gic.dist_write8(gicd::CPENDSGIR + byte, source);
    let spend_after = gic.dist_read8(gicd::SPENDSGIR + byte);
    let pending_after = gic.is_pending(SGI_PEND);
    report.check(
        spend == source && cpend == source && pending && spend_after == 0 && !pending_after,
        format_args!(
            "GICD_SPENDSGIR byte {source:#04x} for SGI {SGI_PEND}: SPENDSGIR {spend:#04x}, CPENDSGIR {cpend:#04x}, ISPENDR0 \
             {pending}; after CPENDSGIR: {spend_after:#04x}, {pending_after} (want {source:#04x}, {source:#04x}, true, 0x00, false)"
        ),
    );
}

/// CPU 0 sets its banked state, each secondary in turn checks that it does
/// not see it and sets its own, and CPU 0 checks it does not see that.
fn banking(report: &mut Report, gic: &Gic, n: usize) {
    gic.enable(PPI_CPU0);
    gic.disable(PPI_SECONDARY);
    gic.set_priority(SGI_PRIO, PRIO_CPU0);
    gic.dist_write8(gicd::SPENDSGIR + SGI_PEND as usize, 0x01);
    for i in 1..n {
        let code = smp::cpu_on(i, 1, secondary);
        report.check(code == ReturnCode::Success, format_args!("cpu{i}: CPU_ON -> {code}"));
        let done = smp::wait_for(WAIT_MS, || SECONDARY_DONE[i].load(Ordering::SeqCst) != 0);
        report.check(done, format_args!("cpu{i}: finished its banked-register checks"));
        let ppi = gic.is_enabled(PPI_SECONDARY);
        let prio = gic.dist_read8(gicd::IPRIORITYR + SGI_PRIO as usize);
        let pend = gic.is_pending(SGI_PEND);
        report.check(
            !ppi && prio == PRIO_CPU0 && pend,
            format_args!(
                "cpu0 after cpu{i}'s writes: PPI {PPI_SECONDARY} enabled {ppi}, SGI {SGI_PRIO} priority {prio:#04x}, SGI {SGI_PEND} \
                 pending {pend} (want false, {PRIO_CPU0:#04x}, true: its own banked state)"
            ),
        );
        smp::wait_for(WAIT_MS, || smp::affinity_info(smp::mpidr_of(i)) == test_guests::psci::AffinityState::Off);
    }
    gic.dist_write8(gicd::CPENDSGIR + SGI_PEND as usize, 0xff);
    gic.disable(PPI_CPU0);
}

fn secondary(boot: Secondary) {
    let me = boot.index;
    let gic = gic();
    let own = gic.own_mask();
    let want = u32::from(own) * 0x0101_0101;
    let mut targets_ok = own.count_ones() == 1;
    for word in 0..8 {
        let offset = gicd::ITARGETSR + 4 * word;
        let before = gic.dist_read(offset);
        gic.dist_write(offset, 0);
        targets_ok &= before == want && gic.dist_read(offset) == want;
    }
    shared_check(
        targets_ok,
        format_args!("cpu{me}: GICD_ITARGETSR0-7 (SGIs, PPIs) read {want:#010x}, its own CPU interface mask {own:#04x}, and ignore writes"),
    );
    let ppi = gic.is_enabled(PPI_CPU0);
    gic.enable(PPI_SECONDARY);
    let mine = gic.is_enabled(PPI_SECONDARY);
    gic.disable(PPI_SECONDARY);
    let prio_before = gic.dist_read8(gicd::IPRIORITYR + SGI_PRIO as usize);
    gic.set_priority(SGI_PRIO, PRIO_SECONDARY);
    let prio = gic.dist_read8(gicd::IPRIORITYR + SGI_PRIO as usize);
    let pend = gic.is_pending(SGI_PEND);
    let spend = gic.dist_read8(gicd::SPENDSGIR + SGI_PEND as usize);
    shared_check(
        !ppi && mine && prio_before != PRIO_CPU0 && prio == PRIO_SECONDARY && !pend && spend == 0,
        format_args!(
            "cpu{me}: banked SGI/PPI state: cpu0's PPI {PPI_CPU0} enable {ppi}, own PPI {PPI_SECONDARY} enable {mine}, SGI \
             {SGI_PRIO} priority {prio_before:#04x} then {prio:#04x}, cpu0's SGI {SGI_PEND} pending {pend} (SPENDSGIR {spend:#04x}) \
             (want false, true, not {PRIO_CPU0:#04x} then {PRIO_SECONDARY:#04x}, false, 0x00)"
        ),
    );
    gic.enable(PPI_SECONDARY);
    SECONDARY_DONE[me].store(1, Ordering::SeqCst);
}
