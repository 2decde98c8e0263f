//! Test guest `ipi`: interrupts between CPUs and from a device, through the
//! GICv2 the device tree names.
//!
//! Every CPU enables its CPU interface, learns its interface number from
//! GICD_ITARGETSR0, and takes IRQs with one handler that acknowledges
//! (GICC_IAR), counts per receiver, INTID and requester, answers a ping
//! SGI with a pong SGI to the requester, and ends the interrupt (GICC_EOIR).
//! CPU 0 drives the secondaries through a command mailbox. Checks:
//!
//! - SGI ping-pong between every ordered pair of CPUs with the target-list
//!   filter; the requester's CPU ID in GICC_IAR on both sides;
//! - the all-but-self and self-only filters, and a target list naming CPUs
//!   that do not exist (IHI 0048B 4.3.15 GICD_SGIR);
//! - on every CPU, with IRQs masked and GICC_IAR polled: priority order of
//!   two pending SGIs (whatever order they were sent in), GICC_PMR masking
//!   the lower one, preemption by priority while another is active, the
//!   active state (GICD_ISACTIVER0) until EOI, and eight SGIs pending at
//!   once (more than the four list registers of the GICV) arriving all, in
//!   priority order; then the same with equal priorities;
//! - eight SGIs from every other CPU pending on CPU 0 at once, all taken
//!   through the IRQ vector;
//! - the PL011's transmit interrupt (a level-sensitive SPI): pending while
//!   UARTMIS.TX holds, pending again after EOI, gone once UARTIMSC masks it;
//!   and delivered to each CPU in turn by GICD_ITARGETSR.
//!
//! Powers off with SYSTEM_OFF when everything held, SYSTEM_RESET otherwise.

#![no_std]
#![no_main]
// Loops run over CPU numbers and index several per-CPU arrays with them.
#![allow(clippy::needless_range_loop)]

use core::sync::atomic::{AtomicU32, Ordering};

use test_guests::dtb::MAX_CPUS;
use test_guests::gic::{gicc, gicd, Gic, Iar, SgiFilter, SGI_COUNT};
use test_guests::pl011::{self, Pl011};
use test_guests::platform::Platform;
use test_guests::smp::{self, Secondary};
use test_guests::{arch, rt, shared_check, BootInfo, Report};

test_guests::entry!(main);

/// SGI a CPU answers with [`PONG`] to the requester.
const PING: u32 = 1;
/// The answer to [`PING`].
const PONG: u32 = 2;
/// SGI sent with the all-but-self filter.
const ALL_BUT_SELF: u32 = 3;
/// SGI sent with the self-only filter.
const SELF_ONLY: u32 = 4;
/// SGI sent to a target list with every bit set.
const EVERYONE: u32 = 5;
/// The two SGIs of the priority checks: the lower and the higher priority.
const LOW: u32 = 8;
const HIGH: u32 = 9;
/// The SGI of the active-state check.
const ACTIVE: u32 = 10;
/// The eight SGIs sent at once.
const BURST: core::ops::Range<u32> = 8..16;
/// Priorities (five implemented bits in a GICV: multiples of 8).
const PRIO_DEFAULT: u8 = 0x80;
const PRIO_LOW: u8 = 0x80;
const PRIO_HIGH: u8 = 0x40;
/// A priority mask between them.
const PMR_BETWEEN: u8 = 0x60;
/// The priority mask that lets everything used here through.
const PMR_OPEN: u8 = 0xf0;
/// How long anything may take to arrive.
const WAIT_MS: u64 = 2_000;
/// How long to watch for something that must not arrive.
const QUIET_MS: u64 = 20;

/// Interrupts taken through the IRQ vector: [receiver index][INTID (SGIs
/// 0-15, 16 for the UART, 17 for anything else)][requester's CPU
/// interface number].
const SLOTS: usize = SGI_COUNT as usize + 2;
const UART_SLOT: usize = SGI_COUNT as usize;
const OTHER_SLOT: usize = SGI_COUNT as usize + 1;
static TAKEN: [[[AtomicU32; MAX_CPUS]; SLOTS]; MAX_CPUS] =
    [const { [const { [const { AtomicU32::new(0) }; MAX_CPUS] }; SLOTS] }; MAX_CPUS];
/// Each CPU's GIC CPU interface mask (from GICD_ITARGETSR0).
static MASK: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The GIC's frames and the UART's base and INTID, for the IRQ handler.
static GICD_BASE: AtomicU32 = AtomicU32::new(0);
static GICC_BASE: AtomicU32 = AtomicU32::new(0);
static UART_BASE: AtomicU32 = AtomicU32::new(0);
static UART_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
/// The command mailbox: [`Command`] encoded, a sequence number per CPU, and
/// the sequence number each CPU finished.
static COMMAND: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static SEQ: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// What CPU 0 asks a secondary to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    /// Send an SGI: filter kind (0 list, 1 all-but-self, 2 self), target
    /// list, INTID.
    Send(u32, u8, u32),
    /// Run the polled checks on this CPU.
    Polled,
    /// Send the eight burst SGIs to this target list.
    Burst(u8),
    /// Return (the runtime then powers the CPU off).
    Exit,
}

const OP_SEND: u32 = 1;
const OP_POLLED: u32 = 2;
const OP_BURST: u32 = 3;
const OP_EXIT: u32 = 4;

impl Command {
    const fn encode(self) -> u32 {
        match self {
            Command::Send(kind, targets, intid) => OP_SEND << 28 | kind << 24 | (targets as u32) << 16 | intid,
            Command::Polled => OP_POLLED << 28,
            Command::Burst(targets) => OP_BURST << 28 | (targets as u32) << 16,
            Command::Exit => OP_EXIT << 28,
        }
    }

    const fn decode(raw: u32) -> Option<Self> {
        let targets = (raw >> 16) as u8;
        match raw >> 28 {
            OP_SEND => Some(Command::Send((raw >> 24) & 0xf, targets, raw & 0xffff)),
            OP_POLLED => Some(Command::Polled),
            OP_BURST => Some(Command::Burst(targets)),
            OP_EXIT => Some(Command::Exit),
            _ => None,
        }
    }
}

fn filter(kind: u32, targets: u8) -> SgiFilter {
    match kind {
        1 => SgiFilter::AllButSelf,
        2 => SgiFilter::SelfOnly,
        _ => SgiFilter::List(targets),
    }
}

fn gic() -> Gic {
    // SAFETY: CPU 0 stored the device tree's GIC frames before any CPU
    // unmasked IRQs or was started.
    unsafe { Gic::new(GICD_BASE.load(Ordering::SeqCst) as usize, GICC_BASE.load(Ordering::SeqCst) as usize) }
}

fn uart() -> Option<Pl011> {
    let base = UART_BASE.load(Ordering::SeqCst);
    // SAFETY: CPU 0 stored the device tree's PL011 base (0: none).
    (base != 0).then(|| unsafe { Pl011::new(base as usize) })
}

fn mask_of(index: usize) -> u8 {
    MASK.get(index).map_or(0, |m| m.load(Ordering::SeqCst) as u8)
}

/// The CPU interface number behind a one-bit mask.
fn interface_of(index: usize) -> usize {
    mask_of(index).trailing_zeros() as usize
}

fn taken(receiver: usize, slot: usize, source: usize) -> u32 {
    TAKEN.get(receiver).and_then(|r| r.get(slot)).and_then(|s| s.get(source)).map_or(0, |c| c.load(Ordering::SeqCst))
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
    let source = iar.source() as usize;
    let slot = if intid < SGI_COUNT {
        intid as usize
    } else if intid == UART_INTID.load(Ordering::SeqCst) {
        // Level-sensitive: mask the source before the EOI, or it comes
        // straight back.
        if let Some(uart) = uart() {
            uart.write(pl011::UARTIMSC, 0);
        }
        UART_SLOT
    } else {
        OTHER_SLOT
    };
    if let Some(counter) = TAKEN.get(me).and_then(|r| r.get(slot)).and_then(|s| s.get(source)) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    if intid == PING {
        gic.send_sgi(SgiFilter::List(1 << source), PONG);
    }
    gic.eoi(iar);
}

/// Per-CPU GIC set-up: interface on, SGI priorities, SGIs enabled, own
/// mask recorded, IRQs unmasked.
fn cpu_setup(index: usize) {
    let gic = gic();
    gic.enable_cpu_interface(PMR_OPEN);
    for sgi in 0..SGI_COUNT {
        gic.set_priority(sgi, PRIO_DEFAULT);
    }
    gic.dist_write(gicd::ISENABLER, 0xffff);
    if let Some(mask) = MASK.get(index) {
        mask.store(u32::from(gic.own_mask()), Ordering::SeqCst);
    }
    arch::irq_enable();
}

/// A secondary: set up, then serve commands until told to exit.
fn secondary(boot: Secondary) {
    let me = boot.index;
    cpu_setup(me);
    let (Some(seq), Some(done), Some(command)) = (SEQ.get(me), DONE.get(me), COMMAND.get(me)) else {
        return;
    };
    let mut seen = 0;
    loop {
        // Bounded: if CPU 0 stops sending commands, power off.
        if !smp::wait_for(60_000, || seq.load(Ordering::SeqCst) != seen) {
            return;
        }
        seen = seq.load(Ordering::SeqCst);
        let cmd = Command::decode(command.load(Ordering::SeqCst));
        match cmd {
            Some(Command::Send(kind, targets, intid)) => gic().send_sgi(filter(kind, targets), intid),
            Some(Command::Polled) => polled_checks(me),
            Some(Command::Burst(targets)) => burst(targets),
            Some(Command::Exit) | None => {}
        }
        done.store(seen, Ordering::SeqCst);
        if matches!(cmd, Some(Command::Exit) | None) {
            arch::irq_disable();
            return;
        }
    }
}

/// Runs `cmd` on CPU `index` (CPU 0 runs it itself) and waits for it.
fn run_on(index: usize, cmd: Command) -> bool {
    if index == 0 {
        match cmd {
            Command::Send(kind, targets, intid) => gic().send_sgi(filter(kind, targets), intid),
            Command::Polled => polled_checks(0),
            Command::Burst(targets) => burst(targets),
            Command::Exit => {}
        }
        return true;
    }
    let (Some(seq), Some(done), Some(command)) = (SEQ.get(index), DONE.get(index), COMMAND.get(index)) else {
        return false;
    };
    command.store(cmd.encode(), Ordering::SeqCst);
    let next = seq.load(Ordering::SeqCst).wrapping_add(1);
    seq.store(next, Ordering::SeqCst);
    smp::wait_for(4 * WAIT_MS, || done.load(Ordering::SeqCst) == next)
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("ipi", boot);
    let platform = Platform::discover(&env, &mut report);
    let n = platform.cpu_count();
    GICD_BASE.store(platform.gic.dist_base() as u32, Ordering::SeqCst);
    GICC_BASE.store(platform.gic_node.cpu.base as u32, Ordering::SeqCst);
    if let Some((uart, irq)) = platform.uart {
        UART_BASE.store(uart.base() as u32, Ordering::SeqCst);
        UART_INTID.store(irq.intid, Ordering::SeqCst);
    }
    rt::set_irq_handler(on_irq);
    let gic = gic();
    gic.enable_distributor();
    cpu_setup(0);

    for i in 1..n {
        let code = smp::cpu_on(i, 1, secondary);
        report.check(code == test_guests::psci::ReturnCode::Success, format_args!("cpu{i}: CPU_ON -> {code}"));
    }
    let all_up = smp::wait_for(WAIT_MS * 5, || (1..n).all(|i| mask_of(i) != 0));
    report.check(all_up, format_args!("all {n} CPUs enabled their GIC CPU interface"));
    for i in 0..n {
        let mask = mask_of(i);
        report.check(
            mask.count_ones() == 1,
            format_args!("cpu{i}: GICD_ITARGETSR0 reads its own CPU interface mask {mask:#04x} (one bit)"),
        );
    }
    if !all_up {
        report.finish();
    }

    ping_pong(&mut report, n);
    filters(&mut report, n);
    for i in 0..n {
        report.check(run_on(i, Command::Polled), format_args!("cpu{i}: ran the polled checks"));
    }
    burst_to_cpu0(&mut report, n);
    uart_spi(&mut report, &platform, n);

    for i in 1..n {
        run_on(i, Command::Exit);
    }
    let others = (0..n).map(|i| (0..MAX_CPUS).map(|s| taken(i, OTHER_SLOT, s)).sum::<u32>()).sum::<u32>();
    report.check(others == 0, format_args!("no unexpected interrupt was taken ({others})"));
    arch::irq_disable();
    report.finish()
}

/// Ping-pong between every ordered pair with the target-list filter.
fn ping_pong(report: &mut Report, n: usize) {
    for p in 0..n {
        for q in 0..n {
            if p == q {
                continue;
            }
            let (ip, iq) = (interface_of(p), interface_of(q));
            let (ping0, pong0) = (taken(q, PING as usize, ip), taken(p, PONG as usize, iq));
            let sent = run_on(p, Command::Send(0, mask_of(q), PING));
            let arrived = smp::wait_for(WAIT_MS, || taken(p, PONG as usize, iq) > pong0);
            let (ping, pong) = (taken(q, PING as usize, ip) - ping0, taken(p, PONG as usize, iq) - pong0);
            report.check(
                sent && arrived && ping == 1 && pong == 1,
                format_args!(
                    "ping cpu{p} -> cpu{q} (target list {:#04x}): cpu{q} took {ping} SGI {PING} from CPU {ip}, \
                     cpu{p} took {pong} pong SGI {PONG} from CPU {iq} (want 1 and 1)",
                    mask_of(q)
                ),
            );
        }
    }
}

/// All-but-self, self-only, and a target list with every bit set.
fn filters(report: &mut Report, n: usize) {
    let counts = |intid: u32, source: usize| -> [u32; MAX_CPUS] {
        let mut c = [0; MAX_CPUS];
        for (i, slot) in c.iter_mut().enumerate().take(n) {
            *slot = taken(i, intid as usize, source);
        }
        c
    };
    for (intid, kind, name) in [(ALL_BUT_SELF, 1, "all but self"), (SELF_ONLY, 2, "self only")] {
        for p in 0..n {
            let ip = interface_of(p);
            let before = counts(intid, ip);
            let want = |i: usize| u32::from(if kind == 1 { i != p } else { i == p });
            let sent = run_on(p, Command::Send(kind, 0, intid));
            smp::wait_for(WAIT_MS, || (0..n).all(|i| taken(i, intid as usize, ip) - before[i] >= want(i)));
            smp::delay_ms(QUIET_MS);
            let after = counts(intid, ip);
            let ok = sent && (0..n).all(|i| after[i] - before[i] == want(i));
            report.check(
                ok,
                format_args!(
                    "SGI {intid} from cpu{p} with filter {name}: taken by {} (want {})",
                    Takers(&before, &after, n),
                    Wanted(n, p, kind == 1)
                ),
            );
        }
    }
    let before = counts(EVERYONE, interface_of(0));
    run_on(0, Command::Send(0, 0xff, EVERYONE));
    smp::wait_for(WAIT_MS, || (0..n).all(|i| taken(i, EVERYONE as usize, interface_of(0)) > before[i]));
    smp::delay_ms(QUIET_MS);
    let after = counts(EVERYONE, interface_of(0));
    report.check(
        (0..n).all(|i| after[i] - before[i] == 1),
        format_args!(
            "SGI {EVERYONE} from cpu0 to target list 0xff (CPUs that do not exist included): taken by {} (want every CPU once)",
            Takers(&before, &after, n)
        ),
    );
}

/// `cpu0 cpu2` for the CPUs whose count rose by exactly one, `cpu1 x3` for
/// others that rose.
struct Takers<'a>(&'a [u32; MAX_CPUS], &'a [u32; MAX_CPUS], usize);

impl core::fmt::Display for Takers<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut any = false;
        for i in 0..self.2 {
            let delta = self.1[i].wrapping_sub(self.0[i]);
            if delta > 0 {
                if any {
                    f.write_str(" ")?;
                }
                any = true;
                write!(f, "cpu{i}")?;
                if delta > 1 {
                    write!(f, " x{delta}")?;
                }
            }
        }
        if !any {
            f.write_str("nobody")?;
        }
        Ok(())
    }
}

/// The CPUs that should take an SGI from `p`.
struct Wanted(usize, usize, bool);

impl core::fmt::Display for Wanted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (n, p, others) = (self.0, self.1, self.2);
        let mut first = true;
        for i in (0..n).filter(|i| (*i != p) == others) {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "cpu{i}")?;
        }
        Ok(())
    }
}

/// Sends the eight burst SGIs to `targets`.
fn burst(targets: u8) {
    let gic = gic();
    for sgi in BURST.rev() {
        gic.send_sgi(SgiFilter::List(targets), sgi);
    }
}

/// Eight SGIs from every other CPU pending on CPU 0 while its IRQs are
/// masked; then all taken through the vector.
fn burst_to_cpu0(report: &mut Report, n: usize) {
    if n < 2 {
        return;
    }
    let gic = gic();
    arch::irq_disable();
    // Equal priorities: nothing but the list-register refill decides.
    for sgi in BURST {
        gic.set_priority(sgi, PRIO_DEFAULT);
    }
    let before: [[u32; MAX_CPUS]; 8] =
        core::array::from_fn(|k| core::array::from_fn(|s| taken(0, BURST.start as usize + k, s)));
    let mut sent = true;
    for i in 1..n {
        sent &= run_on(i, Command::Burst(mask_of(0)));
    }
    arch::irq_enable();
    let want = 8 * (n as u32 - 1);
    let count = || -> u32 {
        (0..8)
            .map(|k| {
                (1..n)
                    .map(|i| taken(0, BURST.start as usize + k, interface_of(i)) - before[k][interface_of(i)])
                    .sum::<u32>()
            })
            .sum()
    };
    smp::wait_for(WAIT_MS, || count() >= want);
    smp::delay_ms(QUIET_MS);
    let got = count();
    let each_once = (0..8)
        .all(|k| (1..n).all(|i| taken(0, BURST.start as usize + k, interface_of(i)) - before[k][interface_of(i)] == 1));
    report.check(
        sent && got == want && each_once,
        format_args!(
            "cpu0 took {got} SGIs {}-{} pending at once from {} other CPU(s) through the IRQ vector (want {want}, each once)",
            BURST.start,
            BURST.end - 1,
            n - 1
        ),
    );
}

/// Acknowledges by polling (IRQs masked) and returns the IAR; `None` when
/// nothing was pending.
fn poll(gic: &Gic) -> Option<Iar> {
    let iar = gic.ack();
    (!iar.is_spurious()).then_some(iar)
}

fn show(iar: Option<Iar>) -> u32 {
    iar.map_or(1023, |i| i.intid())
}

/// Sends SGIs to self and waits until the distributor shows them pending.
fn send_self(gic: &Gic, sgis: &[u32]) -> bool {
    for sgi in sgis {
        gic.send_sgi(SgiFilter::SelfOnly, *sgi);
    }
    smp::wait_for(WAIT_MS, || sgis.iter().all(|sgi| gic.is_pending(*sgi)))
}

/// Drains whatever is pending (IRQs masked), so that one check's leftovers
/// do not spoil the next.
fn drain(gic: &Gic) -> u32 {
    let mut drained = 0;
    while let Some(iar) = poll(gic) {
        gic.eoi(iar);
        drained += 1;
        if drained > 64 {
            break;
        }
    }
    drained
}

/// The checks made by polling GICC_IAR on one CPU with IRQs masked.
fn polled_checks(me: usize) {
    let gic = gic();
    let cpsr = arch::read_cpsr();
    arch::irq_disable();
    gic.set_priority(LOW, PRIO_LOW);
    gic.set_priority(HIGH, PRIO_HIGH);

    // Priority order, whichever was sent first.
    for (order, name) in [([LOW, HIGH], "low first"), ([HIGH, LOW], "high first")] {
        let pending = send_self(&gic, &order);
        let first = poll(&gic);
        first.inspect(|i| gic.eoi(*i));
        let second = poll(&gic);
        second.inspect(|i| gic.eoi(*i));
        let third = poll(&gic);
        third.inspect(|i| gic.eoi(*i));
        shared_check(
            pending && show(first) == HIGH && show(second) == LOW && third.is_none(),
            format_args!(
                "cpu{me}: SGIs {LOW} (priority {PRIO_LOW:#x}) and {HIGH} ({PRIO_HIGH:#x}) sent {name}: acknowledged \
                 {}, {}, then {} (want {HIGH}, {LOW}, then 1023)",
                show(first),
                show(second),
                show(third)
            ),
        );
    }
    drain(&gic);

    // GICC_PMR masks the lower priority.
    gic.set_priority_mask(PMR_BETWEEN);
    let pending = send_self(&gic, &[LOW, HIGH]);
    let first = poll(&gic);
    first.inspect(|i| gic.eoi(*i));
    let masked = poll(&gic);
    masked.inspect(|i| gic.eoi(*i));
    let still_pending = gic.is_pending(LOW);
    gic.set_priority_mask(PMR_OPEN);
    let released = poll(&gic);
    released.inspect(|i| gic.eoi(*i));
    shared_check(
        pending && show(first) == HIGH && masked.is_none() && still_pending && show(released) == LOW,
        format_args!(
            "cpu{me}: GICC_PMR {PMR_BETWEEN:#x}: acknowledged {}, then {} with SGI {LOW} still pending: {still_pending}; \
             after PMR {PMR_OPEN:#x}: {} (want {HIGH}, 1023, true, {LOW})",
            show(first),
            show(masked),
            show(released)
        ),
    );
    drain(&gic);

    // Preemption: the higher priority is acknowledged while the lower is
    // active, not the other way round.
    send_self(&gic, &[LOW]);
    let low = poll(&gic);
    send_self(&gic, &[HIGH]);
    let high = poll(&gic);
    gic.send_sgi(SgiFilter::SelfOnly, LOW);
    smp::delay_ms(1);
    let blocked_by_high = poll(&gic);
    high.inspect(|i| gic.eoi(*i));
    let blocked_by_low = poll(&gic);
    low.inspect(|i| gic.eoi(*i));
    let again = poll(&gic);
    again.inspect(|i| gic.eoi(*i));
    shared_check(
        show(low) == LOW
            && show(high) == HIGH
            && blocked_by_high.is_none()
            && blocked_by_low.is_none()
            && show(again) == LOW,
        format_args!(
            "cpu{me}: with SGI {LOW} active, SGI {HIGH} preempts ({}); SGI {LOW} sent again waits while {HIGH} ({}) and \
             {LOW} ({}) are active, then arrives ({}) (want {HIGH}, 1023, 1023, {LOW})",
            show(high),
            show(blocked_by_high),
            show(blocked_by_low),
            show(again)
        ),
    );
    drain(&gic);

    // Active state until EOI, as GICD_ISACTIVER0 shows it.
    gic.set_priority(ACTIVE, PRIO_DEFAULT);
    send_self(&gic, &[ACTIVE]);
    let acked = poll(&gic);
    let active = gic.is_active(ACTIVE);
    let pending = gic.is_pending(ACTIVE);
    let rpr = gic.cpu_read(gicc::RPR) & 0xff;
    acked.inspect(|i| gic.eoi(*i));
    let active_after = gic.is_active(ACTIVE);
    shared_check(
        show(acked) == ACTIVE && active && !pending && rpr == u32::from(PRIO_DEFAULT) && !active_after,
        format_args!(
            "cpu{me}: SGI {ACTIVE} acknowledged ({}): GICD_ISACTIVER0 active {active}, GICD_ISPENDR0 pending {pending}, \
             GICC_RPR {rpr:#x}; after EOI active {active_after} (want {ACTIVE}, true, false, {PRIO_DEFAULT:#x}, false)",
            show(acked)
        ),
    );
    drain(&gic);

    // Eight pending at once, distinct priorities: all, in priority order.
    for (k, sgi) in BURST.enumerate() {
        gic.set_priority(sgi, 0x10 * (k as u8 + 1));
    }
    let sgis: [u32; 8] = core::array::from_fn(|k| BURST.end - 1 - k as u32);
    let pending = send_self(&gic, &sgis);
    let mut order = [1023u32; 9];
    for slot in order.iter_mut() {
        let iar = poll(&gic);
        *slot = show(iar);
        iar.inspect(|i| gic.eoi(*i));
    }
    let want: [u32; 9] = core::array::from_fn(|k| if k < 8 { BURST.start + k as u32 } else { 1023 });
    shared_check(
        pending && order == want,
        format_args!(
            "cpu{me}: 8 SGIs pending at once with priorities 0x10-0x80 acknowledged as {order:?} (want {want:?})"
        ),
    );
    drain(&gic);

    // Eight pending at once, equal priorities: all of them.
    for sgi in BURST {
        gic.set_priority(sgi, PRIO_DEFAULT);
    }
    let pending = send_self(&gic, &sgis);
    let mut seen = 0u32;
    let mut count = 0;
    for _ in 0..9 {
        if let Some(iar) = poll(&gic) {
            seen |= 1 << iar.intid();
            count += 1;
            gic.eoi(iar);
        }
    }
    let want_bits = ((1u32 << BURST.end) - 1) & !((1 << BURST.start) - 1);
    shared_check(
        pending && seen == want_bits && count == 8,
        format_args!(
            "cpu{me}: 8 SGIs pending at once with equal priority: {count} acknowledged, INTIDs {seen:#06x} (want 8, {want_bits:#06x})"
        ),
    );
    drain(&gic);
    arch::irq_restore(cpsr);
}

/// The PL011's transmit interrupt as a level-sensitive SPI.
fn uart_spi(report: &mut Report, platform: &Platform, n: usize) {
    let Some((uart, irq)) = platform.uart else {
        report.fail(format_args!("the console PL011 has no interrupt the GIC serves in the device tree"));
        return;
    };
    let gic = gic();
    let intid = irq.intid;
    report.check(irq.level, format_args!("the PL011's interrupt INTID {intid} is level-sensitive in the device tree"));
    arch::irq_disable();
    uart.write(pl011::UARTIMSC, 0);
    gic.set_priority(intid, PRIO_DEFAULT);
    gic.set_targets(intid, mask_of(0));
    // Level-sensitive: GICD_ICFGR Int_config[1] = 0.
    let (offset, shift) = test_guests::gic::cfg_position(intid);
    let cfg = gic.dist_read(gicd::ICFGR + offset);
    gic.dist_write(gicd::ICFGR + offset, cfg & !(2 << shift));
    gic.clear_pending(intid);
    gic.enable(intid);

    // Polled on CPU 0. The console has written, so TXRIS holds.
    let ris = uart.read(pl011::UARTRIS) & pl011::INT_TX != 0;
    let quiet = !gic.is_pending(intid);
    uart.write(pl011::UARTIMSC, pl011::INT_TX);
    let mis = uart.read(pl011::UARTMIS) & pl011::INT_TX != 0;
    let pending = smp::wait_for(WAIT_MS, || gic.is_pending(intid));
    let first = poll(&gic);
    let active = gic.is_active(intid);
    first.inspect(|i| gic.eoi(*i));
    let repending = smp::wait_for(WAIT_MS, || gic.is_pending(intid));
    let second = poll(&gic);
    second.inspect(|i| gic.eoi(*i));
    uart.write(pl011::UARTIMSC, 0);
    let gone = smp::wait_for(WAIT_MS, || !gic.is_pending(intid));
    let third = poll(&gic);
    third.inspect(|i| gic.eoi(*i));
    report.check(
        ris && quiet,
        format_args!("PL011 UARTRIS.TX {ris} with UARTIMSC 0: INTID {intid} not pending {quiet} (want true, true)"),
    );
    report.check(
        mis && pending && show(first) == intid && active,
        format_args!(
            "PL011 UARTIMSC.TX set: UARTMIS.TX {mis}, INTID {intid} pending {pending}, acknowledged {} and active {active} \
             (want true, true, {intid}, true)",
            show(first)
        ),
    );
    report.check(
        repending && show(second) == intid,
        format_args!(
            "PL011 INTID {intid} pending again after EOI while the level holds: {repending}, acknowledged {} (want true, {intid})",
            show(second)
        ),
    );
    report.check(
        gone && third.is_none(),
        format_args!(
            "PL011 UARTIMSC.TX cleared: INTID {intid} no longer pending {gone}, GICC_IAR {} (want true, 1023)",
            show(third)
        ),
    );
    drain(&gic);
    arch::irq_enable();

    // Through the vector, on each CPU in turn.
    for t in 0..n {
        let before: [u32; MAX_CPUS] = core::array::from_fn(|i| (0..MAX_CPUS).map(|s| taken(i, UART_SLOT, s)).sum());
        gic.set_targets(intid, mask_of(t));
        uart.write(pl011::UARTIMSC, pl011::INT_TX);
        smp::wait_for(WAIT_MS, || (0..MAX_CPUS).map(|s| taken(t, UART_SLOT, s)).sum::<u32>() > before[t]);
        smp::delay_ms(QUIET_MS);
        let after: [u32; MAX_CPUS] = core::array::from_fn(|i| (0..MAX_CPUS).map(|s| taken(i, UART_SLOT, s)).sum());
        let ok = (0..n).all(|i| after[i] - before[i] == u32::from(i == t));
        let imsc = uart.read(pl011::UARTIMSC);
        report.check(
            ok && imsc == 0,
            format_args!(
                "PL011 INTID {intid} with GICD_ITARGETSR {:#04x}: taken by {}, once, and not again after the handler \
                 masked it (UARTIMSC {imsc:#x}) (want cpu{t})",
                mask_of(t),
                Takers(&before, &after, n)
            ),
        );
    }
    uart.write(pl011::UARTIMSC, 0);
    gic.disable(intid);
}
