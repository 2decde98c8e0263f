//! Test guest `timer`: the architected Generic Timer on every CPU.
//!
//! Every CPU the device tree lists runs the same three phases at the same
//! time, and CPU 0 reports the results:
//!
//! 1. the virtual timer (CNTV_*, the tree's virtual-timer PPI) at 1 kHz for
//!    1 s of guest time, the CPU in WFI between ticks: the tick count must
//!    be within 5 % of 1000 (the counts, the handler's lateness and the
//!    wake-ups are printed). The handler re-arms from the previous deadline
//!    (CNTV_CVAL += period), not with CNTV_TVAL = period: a TVAL re-arm
//!    adds the interrupt latency to every period, and under QEMU's TCG
//!    alone (no hypervisor) that latency averages about 100 us, which costs
//!    9 % of the ticks; the deadline re-arm counts each period once however
//!    late its interrupt is, so the count measures lost ticks, and the
//!    printed lateness measures latency;
//! 2. the physical timer (CNTP_*, the tree's physical-timer PPI): a few
//!    shots of 2 ms, each checked just after arming for CNTP_CTL.ISTATUS and
//!    CNTP_TVAL agreeing with CNTPCT read around them, and at arrival for
//!    ISTATUS set and no earlier than CNTP_CVAL; then one with
//!    CNTP_CTL.IMASK set, which must raise ISTATUS but no interrupt, with
//!    CNTP_TVAL then reading negative. (Just after arming, ISTATUS is
//!    usually clear and TVAL near the shot, but not always: a CPU of a VM
//!    may be held up between two instructions for longer than the shot, e.g.
//!    under QEMU's TCG with more vCPUs than host cores. So the check brackets
//!    each register read between counter reads, which holds however long the
//!    CPU waits, and such shots are only counted.)
//! 3. a WFI loop with IRQs masked (CPSR.I) that must wake for each of 100
//!    virtual-timer ticks (WFI wakes on a pending interrupt whatever
//!    CPSR.I says; the loop acknowledges by polling GICC_IAR). The
//!    physical timer is a watchdog, so that a WFI that never wakes ends the
//!    test instead of hanging it.
//!
//! Also: CNTFRQ is set, CNTVCT starts near zero (below one second of
//! counts when the guest's first instruction runs: a hypervisor must offset
//! the virtual counter per VM), never goes backwards on one CPU, and is
//! consistent between CPUs (a value one CPU read before another read its
//! own is never larger).
//!
//! With `timer.rearm=ctl` on the command line, every re-arm of the virtual
//! timer also writes CNTV_CTL (ENABLE, IMASK clear), as Linux's timer
//! driver does: the guest then works with a hypervisor that masks the timer
//! as it delivers it (`splitvisor run --vtimer masked`, as Xen does), and
//! counts the ticks at which it found IMASK set by someone else. Without it,
//! it re-arms by CNTV_CVAL and CNTV_TVAL alone, as the architecture allows.
//!
//! Powers off with SYSTEM_OFF when everything held, SYSTEM_RESET otherwise.

#![no_std]
#![no_main]
// Loops run over CPU numbers and index several per-CPU arrays with them.
#![allow(clippy::needless_range_loop)]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use test_guests::dtb::MAX_CPUS;
use test_guests::gic::Gic;
use test_guests::platform::Platform;
use test_guests::psci::ReturnCode;
use test_guests::smp::{self, Secondary};
use test_guests::timer::{micros, ticks, within_percent, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS};
use test_guests::{arch, rt, BootInfo};

test_guests::entry!(main);

/// The periodic tick rate.
const TICK_HZ: u64 = 1000;
/// How long the periodic phase runs, in microseconds of guest time.
const PERIODIC_US: u64 = 1_000_000;
/// The tolerance on the tick count, in percent.
const TOLERANCE_PERCENT: u64 = 5;
/// How long after the second the periodic phase waits for late ticks.
const GRACE_US: u64 = 100_000;
/// Physical-timer shots and their distance.
const PHYS_SHOTS: u32 = 5;
const PHYS_SHOT_US: u64 = 2_000;
/// Ticks the WFI loop waits for.
const WFI_TICKS: u32 = 100;
/// CNTVCT at the first instruction must be below this many microseconds.
const NEAR_ZERO_US: u64 = 1_000_000;
/// Consecutive counter reads in the monotonicity check.
const MONOTONIC_READS: u32 = 20_000;
/// Interrupt priority of both timers.
const PRIORITY: u8 = 0x80;
/// How long anything may take.
const WAIT_MS: u64 = 5_000;

/// Per-CPU results (index = logical CPU).
static VIRT_TICKS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static VIRT_LATE_MAX: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static VIRT_LATE_SUM: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static WAKEUPS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PHYS_TAKEN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PHYS_EARLY: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PHYS_NO_ISTATUS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PHYS_LATE_MAX: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PHYS_BAD_BEFORE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Shots already due when CNTP_CTL was read just after arming (consistently:
/// the CPU was held up between the instructions).
static PHYS_DUE_AT_ARMING: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The last CNTP_CTL and CNTP_TVAL read wrong just after arming, with the
/// counter's distance to CNTP_CVAL just before the first and just after the
/// second.
static PHYS_BAD_DETAIL: [[AtomicU32; 4]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 4] }; MAX_CPUS];
static PHYS_MASKED_OK: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static PHYS_MASKED_INFO: [[AtomicU32; 4]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 4] }; MAX_CPUS];
static WFI_TICKED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static WFI_WAKEUPS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static WFI_WATCHDOG: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static MONOTONIC: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static OTHER_IRQS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static FINISHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A secondary's first CNTVCT and the value CPU 0 read before starting it.
static FIRST_COUNT: [[AtomicU32; 2]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_CPUS];
static BEFORE_START: [[AtomicU32; 2]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_CPUS];

/// What the IRQ handler needs: the GIC frames and the timer INTIDs.
static GICD_BASE: AtomicU32 = AtomicU32::new(0);
static GICC_BASE: AtomicU32 = AtomicU32::new(0);
static VIRT_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static PHYS_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
/// The virtual-timer period in counter ticks.
static PERIOD: AtomicU32 = AtomicU32::new(0);
/// `timer.rearm=ctl`: every re-arm of the virtual timer writes CNTV_CTL too.
static REARM_CTL: AtomicBool = AtomicBool::new(false);
/// Virtual-timer interrupts taken with CNTV_CTL.IMASK set, which this guest
/// never sets while its timer runs (a hypervisor that masks it to deliver it).
static IMASK_SEEN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Per CPU: the physical timer is the periodic phase's watchdog, and
/// whether it fired.
static PERIODIC_WATCHDOG: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static PERIODIC_WATCHDOG_FIRED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the last deadline of the measured second.
static VIRT_END: [[AtomicU32; 2]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_CPUS];
/// Per CPU: the CNTP_CVAL of the shot in flight.
static PHYS_CVAL: [[AtomicU32; 2]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_CPUS];

fn store64(cell: &[AtomicU32; 2], value: u64) {
    cell[0].store(value as u32, Ordering::SeqCst);
    cell[1].store((value >> 32) as u32, Ordering::SeqCst);
}

fn load64(cell: &[AtomicU32; 2]) -> u64 {
    u64::from(cell[1].load(Ordering::SeqCst)) << 32 | u64::from(cell[0].load(Ordering::SeqCst))
}

fn gic() -> Gic {
    // SAFETY: CPU 0 stored the device tree's GIC frames before any CPU
    // unmasked IRQs or was started.
    unsafe { Gic::new(GICD_BASE.load(Ordering::SeqCst) as usize, GICC_BASE.load(Ordering::SeqCst) as usize) }
}

fn freq() -> u32 {
    arch::read_cntfrq()
}

fn us(count: u64) -> u64 {
    micros(freq(), count)
}

/// The IRQ handler of every CPU.
fn on_irq() {
    let gic = gic();
    let iar = gic.ack();
    if iar.is_spurious() {
        return;
    }
    let me = smp::current();
    let intid = iar.intid();
    if intid == VIRT_INTID.load(Ordering::SeqCst) {
        let cval = arch::read_cntv_cval();
        let late = arch::read_cntvct().saturating_sub(cval);
        note_imask(me);
        arch::write_cntv_cval(cval + u64::from(PERIOD.load(Ordering::SeqCst)));
        rearmed();
        let late = u32::try_from(late).unwrap_or(u32::MAX);
        // Only the deadlines inside the measured second count.
        if cval <= load64(&VIRT_END[me]) {
            VIRT_TICKS[me].fetch_add(1, Ordering::SeqCst);
        }
        VIRT_LATE_MAX[me].fetch_max(late, Ordering::SeqCst);
        VIRT_LATE_SUM[me].fetch_add(late, Ordering::SeqCst);
    } else if intid == PHYS_INTID.load(Ordering::SeqCst) && PERIODIC_WATCHDOG[me].load(Ordering::SeqCst) {
        // The periodic phase's watchdog: its WFI loop would not end.
        arch::write_cntp_ctl(CTL_ENABLE | CTL_IMASK);
        PERIODIC_WATCHDOG_FIRED[me].store(true, Ordering::SeqCst);
    } else if intid == PHYS_INTID.load(Ordering::SeqCst) {
        let now = arch::read_cntpct();
        let ctl = arch::read_cntp_ctl();
        // Mask the level-sensitive output before the EOI.
        arch::write_cntp_ctl(CTL_ENABLE | CTL_IMASK);
        let cval = load64(&PHYS_CVAL[me]);
        if now < cval {
            PHYS_EARLY[me].fetch_add(1, Ordering::SeqCst);
        }
        if ctl & CTL_ISTATUS == 0 {
            PHYS_NO_ISTATUS[me].fetch_add(1, Ordering::SeqCst);
        }
        PHYS_LATE_MAX[me].fetch_max(u32::try_from(now.saturating_sub(cval)).unwrap_or(u32::MAX), Ordering::SeqCst);
        PHYS_TAKEN[me].fetch_add(1, Ordering::SeqCst);
    } else {
        OTHER_IRQS[me].fetch_add(1, Ordering::SeqCst);
    }
    gic.eoi(iar);
}

/// Counts a virtual-timer interrupt taken with CNTV_CTL.IMASK set.
fn note_imask(me: usize) {
    if arch::read_cntv_ctl() & CTL_IMASK != 0 {
        IMASK_SEEN[me].fetch_add(1, Ordering::SeqCst);
    }
}

/// After a re-arm of the virtual timer: with `timer.rearm=ctl`, CNTV_CTL
/// written as Linux's `set_next_event` writes it (ENABLE, IMASK clear).
fn rearmed() {
    if REARM_CTL.load(Ordering::SeqCst) {
        arch::write_cntv_ctl(CTL_ENABLE);
    }
}

/// Runs the three phases on this CPU.
fn run_phases(me: usize) {
    let gic = gic();
    gic.enable_cpu_interface(0xf0);
    let (virt, phys) = (VIRT_INTID.load(Ordering::SeqCst), PHYS_INTID.load(Ordering::SeqCst));
    for intid in [virt, phys] {
        gic.set_priority(intid, PRIORITY);
        gic.enable(intid);
    }

    // Monotonic on this CPU.
    let mut last = arch::read_cntvct();
    let mut monotonic = true;
    for _ in 0..MONOTONIC_READS {
        let now = arch::read_cntvct();
        monotonic &= now >= last;
        last = now;
    }
    MONOTONIC[me].store(monotonic, Ordering::SeqCst);

    periodic(me);
    physical(me, &gic);
    wfi_loop(me, &gic);
    arch::write_cntv_ctl(0);
    arch::write_cntp_ctl(0);
    FINISHED[me].store(true, Ordering::SeqCst);
}

/// Phase 1: the virtual timer at 1 kHz for 1 s, through the IRQ vector.
fn periodic(me: usize) {
    let period = PERIOD.load(Ordering::SeqCst);
    let start = arch::read_cntvct();
    let end = start + ticks(freq(), PERIODIC_US);
    store64(&VIRT_END[me], end);
    // The last deadline inside the second is start + 1000 periods.
    arch::write_cntv_cval(start + u64::from(period));
    arch::write_cntv_ctl(CTL_ENABLE);
    // A watchdog, so that the WFI below cannot wait for ever if ticks stop.
    let grace = end + ticks(freq(), GRACE_US);
    PERIODIC_WATCHDOG[me].store(true, Ordering::SeqCst);
    arch::write_cntp_cval(arch::read_cntpct() + (grace - start));
    arch::write_cntp_ctl(CTL_ENABLE);
    arch::irq_enable();
    let mut wakeups = 0u32;
    // Until the second is over and its last deadline's tick was taken, or
    // a grace period later (a lost tick must not hang the guest).
    loop {
        let now = arch::read_cntvct();
        if now >= grace || (now >= end && arch::read_cntv_cval() > end) {
            break;
        }
        arch::wfi();
        wakeups += 1;
    }
    arch::irq_disable();
    arch::write_cntv_ctl(0);
    arch::write_cntp_ctl(0);
    PERIODIC_WATCHDOG[me].store(false, Ordering::SeqCst);
    WAKEUPS[me].store(wakeups, Ordering::SeqCst);
}

/// Phase 2: physical-timer shots through the IRQ vector, then one masked.
fn physical(me: usize, gic: &Gic) {
    let shot = ticks(freq(), PHYS_SHOT_US);
    for n in 0..PHYS_SHOTS {
        let cval = arch::read_cntpct() + shot;
        store64(&PHYS_CVAL[me], cval);
        arch::write_cntp_cval(cval);
        arch::write_cntp_ctl(CTL_ENABLE);
        // Each register read happens at a count between the counter reads
        // around it: ISTATUS is (count >= CVAL) then, and TVAL is
        // CVAL - count. TVAL can be no more than the shot.
        let before = arch::read_cntpct();
        let ctl = arch::read_cntp_ctl();
        let between = arch::read_cntpct();
        let tval = i64::from(arch::read_cntp_tval() as i32);
        let after = arch::read_cntpct();
        let istatus = ctl & CTL_ISTATUS != 0;
        // Already due before CNTP_CTL was read (the CPU was held up past
        // the shot) yet ISTATUS clear: QEMU computes ISTATUS when its own
        // timer callback runs, on another host thread, so it can lag the
        // counter by a little (seen under plain QEMU with 4 CPUs on 2 host
        // cores). ISTATUS is checked again when the interrupt arrives.
        let lagging = !istatus && before >= cval;
        let istatus_ok = if istatus { between >= cval } else { before < cval || lagging };
        let distance = |count: u64| cval as i64 - count as i64;
        let tval_ok = distance(after) <= tval && tval <= distance(between) && tval <= shot as i64;
        if !(istatus_ok && tval_ok) {
            PHYS_BAD_BEFORE[me].fetch_add(1, Ordering::SeqCst);
            let detail = &PHYS_BAD_DETAIL[me];
            detail[0].store(ctl, Ordering::SeqCst);
            detail[1].store(tval as u32, Ordering::SeqCst);
            detail[2].store(distance(before) as u32, Ordering::SeqCst);
            detail[3].store(distance(after) as u32, Ordering::SeqCst);
        } else if istatus || lagging {
            PHYS_DUE_AT_ARMING[me].fetch_add(1, Ordering::SeqCst);
        }
        arch::irq_enable();
        smp::wait_for(WAIT_MS, || PHYS_TAKEN[me].load(Ordering::SeqCst) > n);
        arch::irq_disable();
        arch::write_cntp_ctl(0);
    }

    // Masked: ISTATUS rises, no interrupt is taken, TVAL goes negative.
    let taken = PHYS_TAKEN[me].load(Ordering::SeqCst);
    let cval = arch::read_cntpct() + shot;
    arch::write_cntp_cval(cval);
    arch::write_cntp_ctl(CTL_ENABLE | CTL_IMASK);
    let mut seen_at = 0;
    // ISTATUS first: a count read after ISTATUS was seen set must have
    // reached CNTP_CVAL.
    let fired = smp::wait_for(WAIT_MS, || {
        let set = arch::read_cntp_ctl() & CTL_ISTATUS != 0;
        seen_at = arch::read_cntpct();
        set
    });
    let tval = arch::read_cntp_tval() as i32;
    let phys = PHYS_INTID.load(Ordering::SeqCst);
    let pending = gic.is_pending(phys);
    arch::irq_enable();
    smp::delay_ms(5);
    arch::irq_disable();
    let quiet = PHYS_TAKEN[me].load(Ordering::SeqCst) == taken;
    arch::write_cntp_ctl(0);
    let info = &PHYS_MASKED_INFO[me];
    info[0].store(u32::from(fired), Ordering::SeqCst);
    info[1].store(u32::from(seen_at >= cval), Ordering::SeqCst);
    info[2].store(tval as u32, Ordering::SeqCst);
    info[3].store(u32::from(pending), Ordering::SeqCst);
    PHYS_MASKED_OK[me].store(fired && seen_at >= cval && tval <= 0 && !pending && quiet, Ordering::SeqCst);
}

/// Phase 3: WFI with IRQs masked must wake for each tick.
fn wfi_loop(me: usize, gic: &Gic) {
    let virt = VIRT_INTID.load(Ordering::SeqCst);
    let phys = PHYS_INTID.load(Ordering::SeqCst);
    let period = PERIOD.load(Ordering::SeqCst);
    arch::irq_disable();
    // The watchdog: three times as long as the ticks should take.
    arch::write_cntp_tval(period.saturating_mul(WFI_TICKS * 3));
    arch::write_cntp_ctl(CTL_ENABLE);
    arch::write_cntv_tval(period);
    arch::write_cntv_ctl(CTL_ENABLE);
    let (mut ticked, mut wakeups) = (0, 0);
    while ticked < WFI_TICKS {
        arch::wfi();
        wakeups += 1;
        let iar = gic.ack();
        if iar.is_spurious() {
            continue;
        }
        let intid = iar.intid();
        if intid == virt {
            note_imask(me);
            arch::write_cntv_tval(period);
            rearmed();
            ticked += 1;
        } else if intid == phys {
            arch::write_cntp_ctl(CTL_ENABLE | CTL_IMASK);
            WFI_WATCHDOG[me].store(true, Ordering::SeqCst);
            gic.eoi(iar);
            break;
        } else {
            OTHER_IRQS[me].fetch_add(1, Ordering::SeqCst);
        }
        gic.eoi(iar);
    }
    arch::write_cntv_ctl(0);
    arch::write_cntp_ctl(0);
    WFI_TICKED[me].store(ticked, Ordering::SeqCst);
    WFI_WAKEUPS[me].store(wakeups, Ordering::SeqCst);
}

fn secondary(boot: Secondary) {
    let first = arch::read_cntvct();
    store64(&FIRST_COUNT[boot.index], first);
    run_phases(boot.index);
}

fn main(boot: BootInfo) -> ! {
    let first = arch::read_cntvct();
    let (env, mut report) = rt::init("timer", boot);
    let platform = Platform::discover(&env, &mut report);
    let n = platform.cpu_count();
    let rearm_ctl = platform.bootarg("timer.rearm") == Some("ctl");
    REARM_CTL.store(rearm_ctl, Ordering::SeqCst);
    let freq = platform.cntfrq;
    report.check(freq != 0, format_args!("CNTFRQ is {freq} Hz (want non-zero)"));
    if freq == 0 {
        report.finish();
    }
    report.check(
        us(first) < NEAR_ZERO_US,
        format_args!("CNTVCT at the first instruction: {first} ({} us; want below {NEAR_ZERO_US} us)", us(first)),
    );
    let Some(timer) = platform.timer else {
        report.fail(format_args!("the device tree has no architected timer with GIC interrupts"));
        report.finish()
    };
    report.info(format_args!("virtual timer INTID {}, physical timer INTID {}", timer.virt.intid, timer.phys.intid));
    GICD_BASE.store(platform.gic.dist_base() as u32, Ordering::SeqCst);
    GICC_BASE.store(platform.gic_node.cpu.base as u32, Ordering::SeqCst);
    VIRT_INTID.store(timer.virt.intid, Ordering::SeqCst);
    PHYS_INTID.store(timer.phys.intid, Ordering::SeqCst);
    PERIOD.store((u64::from(freq) / TICK_HZ) as u32, Ordering::SeqCst);
    rt::set_irq_handler(on_irq);
    let gic = gic();
    gic.enable_distributor();

    for i in 1..n {
        store64(&BEFORE_START[i], arch::read_cntvct());
        let code = smp::cpu_on(i, 1, secondary);
        report.check(code == ReturnCode::Success, format_args!("cpu{i}: CPU_ON -> {code}"));
    }
    run_phases(0);
    let done = smp::wait_for(WAIT_MS * 4, || (0..n).all(|i| FINISHED[i].load(Ordering::SeqCst)));
    report.check(done, format_args!("all {n} CPUs finished the three phases"));

    let expected = TICK_HZ * PERIODIC_US / 1_000_000;
    for i in 0..n {
        report.check(
            MONOTONIC[i].load(Ordering::SeqCst),
            format_args!("cpu{i}: CNTVCT never went backwards in {MONOTONIC_READS} reads"),
        );
        if i > 0 {
            let (before, first) = (load64(&BEFORE_START[i]), load64(&FIRST_COUNT[i]));
            report.check(
                first >= before,
                format_args!("cpu{i}: first CNTVCT {first} >= cpu0's {before} read before CPU_ON"),
            );
        }
        let count = u64::from(VIRT_TICKS[i].load(Ordering::SeqCst));
        let late_max = u64::from(VIRT_LATE_MAX[i].load(Ordering::SeqCst));
        let late_avg = u64::from(VIRT_LATE_SUM[i].load(Ordering::SeqCst)) / count.max(1);
        report.check(
            within_percent(count, expected, TOLERANCE_PERCENT) && !PERIODIC_WATCHDOG_FIRED[i].load(Ordering::SeqCst),
            format_args!(
                "cpu{i}: virtual timer at {TICK_HZ} Hz for 1 s: {count} ticks (want {expected} +- {TOLERANCE_PERCENT} %); \
                 handler late by {} us on average, {} us at most; {} WFI wake-ups{}",
                us(late_avg),
                us(late_max),
                WAKEUPS[i].load(Ordering::SeqCst),
                if PERIODIC_WATCHDOG_FIRED[i].load(Ordering::SeqCst) { "; ended by the watchdog" } else { "" }
            ),
        );
        let (taken, early, no_istatus, bad_before) = (
            PHYS_TAKEN[i].load(Ordering::SeqCst),
            PHYS_EARLY[i].load(Ordering::SeqCst),
            PHYS_NO_ISTATUS[i].load(Ordering::SeqCst),
            PHYS_BAD_BEFORE[i].load(Ordering::SeqCst),
        );
        report.check(
            taken == PHYS_SHOTS && early == 0 && no_istatus == 0 && bad_before == 0,
            format_args!(
                "cpu{i}: physical timer: {taken} of {PHYS_SHOTS} shots arrived, {early} before CNTP_CVAL, {no_istatus} \
                 without ISTATUS, {bad_before} with ISTATUS or TVAL wrong just after arming{}; at most {} us late; \
                 {} already due when read after arming (the CPU was held up)",
                BadDetail(bad_before, &PHYS_BAD_DETAIL[i], ticks(freq, PHYS_SHOT_US)),
                us(u64::from(PHYS_LATE_MAX[i].load(Ordering::SeqCst))),
                PHYS_DUE_AT_ARMING[i].load(Ordering::SeqCst)
            ),
        );
        let info = &PHYS_MASKED_INFO[i];
        report.check(
            PHYS_MASKED_OK[i].load(Ordering::SeqCst),
            format_args!(
                "cpu{i}: physical timer with IMASK: ISTATUS rose {}, not before CNTP_CVAL {}, CNTP_TVAL then {}, \
                 GICD_ISPENDR pending {} and no interrupt taken (want true, true, <= 0, false)",
                info[0].load(Ordering::SeqCst) != 0,
                info[1].load(Ordering::SeqCst) != 0,
                info[2].load(Ordering::SeqCst) as i32,
                info[3].load(Ordering::SeqCst) != 0
            ),
        );
        let (ticked, wakeups) = (WFI_TICKED[i].load(Ordering::SeqCst), WFI_WAKEUPS[i].load(Ordering::SeqCst));
        report.check(
            ticked == WFI_TICKS && !WFI_WATCHDOG[i].load(Ordering::SeqCst),
            format_args!(
                "cpu{i}: WFI with IRQs masked woke for {ticked} of {WFI_TICKS} ticks ({wakeups} wake-ups{})",
                if WFI_WATCHDOG[i].load(Ordering::SeqCst) { ", ended by the watchdog" } else { "" }
            ),
        );
        let masked = IMASK_SEEN[i].load(Ordering::SeqCst);
        if rearm_ctl {
            report.info(format_args!("cpu{i}: virtual-timer interrupts taken with CNTV_CTL.IMASK set: {masked}"));
        } else {
            // This guest's timer is never masked while it runs: the
            // hypervisor must not have masked it either.
            report.check(
                masked == 0,
                format_args!("cpu{i}: virtual-timer interrupts taken with CNTV_CTL.IMASK set: {masked} (want 0)"),
            );
        }
        let other = OTHER_IRQS[i].load(Ordering::SeqCst);
        report.check(other == 0, format_args!("cpu{i}: no unexpected interrupt ({other})"));
    }
    report.finish()
}

/// ` (last: CNTP_CTL .., CNTP_TVAL .. of .., ...)` when something was wrong.
struct BadDetail<'a>(u32, &'a [AtomicU32; 4], u64);

impl core::fmt::Display for BadDetail<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 == 0 {
            return Ok(());
        }
        write!(
            f,
            " (last: CNTP_CTL {:#x}, CNTP_TVAL {} for a shot of {}, CNTP_CVAL - CNTPCT {} before and {} after)",
            self.1[0].load(Ordering::SeqCst),
            self.1[1].load(Ordering::SeqCst) as i32,
            self.2,
            self.1[2].load(Ordering::SeqCst) as i32,
            self.1[3].load(Ordering::SeqCst) as i32
        )
    }
}
