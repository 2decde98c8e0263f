//! Test guest `smp`: PSCI CPU power management across the CPU life cycle.
//!
//! CPU 0 starts every secondary the device tree lists with CPU_ON, one at a
//! time, and follows each through AFFINITY_INFO: OFF before CPU_ON, ON or
//! ON_PENDING right after it, ON once the CPU has reported in, OFF after the
//! CPU called CPU_OFF. Each secondary reports what it found at its entry:
//! the context id CPU_ON passed (r0), SVC mode, IRQs and FIQs masked, MMU
//! and caches off, its MPIDR. In between, CPU 0 checks the error codes for
//! misuse (DEN 0022 5.6 "CPU_ON", 5.7 "AFFINITY_INFO"): CPU_ON of itself
//! and of a running CPU (ALREADY_ON), of an MPIDR the tree does not list
//! (INVALID_PARAMETERS, also from AFFINITY_INFO), of an entry point outside
//! RAM (INVALID_ADDRESS, leaving the CPU off). At the end every secondary is
//! brought up a second time, with a new context id, and taken down again.
//!
//! Powers off with SYSTEM_OFF when everything held, SYSTEM_RESET otherwise.

#![no_std]
#![no_main]
// Loops run over CPU numbers and index several per-CPU arrays with them.
#![allow(clippy::needless_range_loop)]

use core::sync::atomic::{AtomicU32, Ordering};

use test_guests::cpu::Mode;
use test_guests::dtb::{self, MAX_CPUS, MPIDR_AFFINITY_MASK};
use test_guests::platform::Platform;
use test_guests::psci::{AffinityState, ReturnCode};
use test_guests::smp::{self, Secondary};
use test_guests::{arch, rt, BootInfo, Report};

test_guests::entry!(main);

/// How long a secondary may take to report in or to power off.
const WAIT_MS: u64 = 10_000;
/// SCTLR.M (bit 0): the MMU is on.
const SCTLR_M: u32 = 1 << 0;
/// SCTLR.C (bit 2): data caching is on.
const SCTLR_C: u32 = 1 << 2;
/// The skip name of the INVALID_ADDRESS check (QEMU's PSCI does not check
/// entry points, which DEN 0022 permits).
const SKIP_INVALID_ADDRESS: &str = "psci-invalid-address";
/// The skip name of the checks made at once after CPU_ON (AFFINITY_INFO ON
/// or ON_PENDING, a second CPU_ON refused): QEMU 7.2's PSCI powers a CPU
/// that was never on before asynchronously and reports it OFF (and accepts
/// a second CPU_ON) until then.
const SKIP_EARLY_STATE: &str = "psci-state-after-cpu-on";

/// How many times each CPU reported in.
static STARTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// What each CPU found at its latest start.
static CONTEXT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static CPSR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static SCTLR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static MPIDR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Set by CPU 0 to the start count at which a CPU may power off.
static RELEASE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// A secondary: records its entry state, waits to be released, returns
/// (the runtime then calls CPU_OFF).
fn secondary(boot: Secondary) {
    let i = boot.index;
    let (Some(starts), Some(release)) = (STARTS.get(i), RELEASE.get(i)) else {
        return;
    };
    if let (Some(c), Some(p), Some(s), Some(m)) = (CONTEXT.get(i), CPSR.get(i), SCTLR.get(i), MPIDR.get(i)) {
        c.store(boot.context_id, Ordering::SeqCst);
        p.store(boot.cpsr, Ordering::SeqCst);
        s.store(boot.sctlr, Ordering::SeqCst);
        m.store(arch::read_mpidr(), Ordering::SeqCst);
    }
    let generation = starts.fetch_add(1, Ordering::SeqCst) + 1;
    // Bounded: a CPU 0 that died must not keep this CPU spinning for ever.
    smp::wait_for(4 * WAIT_MS, || release.load(Ordering::SeqCst) >= generation);
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("smp", boot);
    let platform = Platform::discover(&env, &mut report);
    let n = platform.cpu_count();
    let me = smp::current();
    report.check(me == 0, format_args!("the boot CPU is cpu0 of the device tree (MPIDR {:#010x})", arch::read_mpidr()));

    let own = smp::mpidr_of(0);
    expect_affinity(&mut report, 0, "the boot CPU", &[AffinityState::On]);
    expect_code(
        &mut report,
        format_args!("cpu0: CPU_ON of the calling CPU"),
        smp::cpu_on(0, 0, secondary),
        &[ReturnCode::AlreadyOn],
    );

    // First generation: one at a time, through the whole life cycle.
    for i in 1..n {
        bring_up(&mut report, &platform, i, 1);
    }
    if n > 1 {
        report.info(format_args!("all {} secondaries are running", n - 1));
    }

    misuse(&mut report, &platform, own);

    for i in 1..n {
        take_down(&mut report, i, 1);
    }

    // An entry point outside RAM must be refused and leave the CPU off.
    if n > 1 {
        invalid_entry(&mut report, &platform);
    }

    // Second generation: all back up with a new context id, then down.
    for i in 1..n {
        bring_up(&mut report, &platform, i, 2);
    }
    for i in 1..n {
        take_down(&mut report, i, 2);
    }
    report.finish()
}

fn expect_affinity(report: &mut Report, i: usize, when: &str, want: &[AffinityState]) -> AffinityState {
    let got = smp::affinity_info(smp::mpidr_of(i));
    report.check(want.contains(&got), format_args!("cpu{i}: AFFINITY_INFO ({when}) -> {got} (want {})", Names(want)));
    got
}

fn expect_code(report: &mut Report, what: core::fmt::Arguments<'_>, got: ReturnCode, want: &[ReturnCode]) {
    report.check(want.contains(&got), format_args!("{what} -> {got} (want {})", Names(want)));
}

/// Starts CPU `i` as start number `generation` and checks it all the way
/// until it reports in.
fn bring_up(report: &mut Report, platform: &Platform, i: usize, generation: u32) {
    expect_affinity(report, i, "before CPU_ON", &[AffinityState::Off]);
    let tag = generation as u8;
    let code = smp::cpu_on(i, tag, secondary);
    expect_code(report, format_args!("cpu{i}: CPU_ON (start {generation})"), code, &[ReturnCode::Success]);
    if code != ReturnCode::Success {
        return;
    }
    if platform.skipped(SKIP_EARLY_STATE) {
        report.info(format_args!("cpu{i}: the state just after CPU_ON: skipped ({SKIP_EARLY_STATE})"));
    } else {
        early_state(report, i, generation);
    }
    wait_report_in(report, i, generation);
}

/// AFFINITY_INFO and a second CPU_ON at once after a successful CPU_ON.
fn early_state(report: &mut Report, i: usize, generation: u32) {
    let tag = generation as u8;
    let early = smp::affinity_info(smp::mpidr_of(i));
    report.check(
        matches!(early, AffinityState::On | AffinityState::OnPending),
        format_args!("cpu{i}: AFFINITY_INFO (just after CPU_ON) -> {early} (want ON (0) or ON_PENDING (2))"),
    );
    let again = smp::cpu_on(i, tag, secondary);
    expect_code(
        report,
        format_args!("cpu{i}: CPU_ON again at once (start {generation})"),
        again,
        &[ReturnCode::AlreadyOn, ReturnCode::OnPending],
    );
}

/// Waits for CPU `i`'s start `generation` to report in and checks what it
/// found.
fn wait_report_in(report: &mut Report, i: usize, generation: u32) {
    let tag = generation as u8;
    let starts = &STARTS[i];
    let arrived = smp::wait_for(WAIT_MS, || starts.load(Ordering::SeqCst) >= generation);
    if !arrived {
        report.fail(format_args!("cpu{i}: start {generation} did not report in within {WAIT_MS} ms"));
        return;
    }
    let context = CONTEXT[i].load(Ordering::SeqCst);
    let cpsr = CPSR[i].load(Ordering::SeqCst);
    let sctlr = SCTLR[i].load(Ordering::SeqCst);
    let mpidr = MPIDR[i].load(Ordering::SeqCst);
    let want_context = smp::context_id(i, tag);
    report.check(
        context == want_context,
        format_args!("cpu{i}: start {generation} got context id {context:#010x} in r0 (want {want_context:#010x})"),
    );
    let mode = Mode::from_psr(cpsr);
    let masked = cpsr & (arch::CPSR_I | arch::CPSR_F) == arch::CPSR_I | arch::CPSR_F;
    report.check(
        mode == Mode::Supervisor && masked,
        format_args!(
            "cpu{i}: start {generation} entered in mode {mode} with IRQ and FIQ {} (CPSR {cpsr:#010x}; want SVC, masked)",
            if masked { "masked" } else { "not both masked" }
        ),
    );
    report.check(
        sctlr & (SCTLR_M | SCTLR_C) == 0,
        format_args!("cpu{i}: start {generation} entered with MMU and data cache off (SCTLR {sctlr:#010x})"),
    );
    let want_mpidr = smp::mpidr_of(i);
    report.check(
        mpidr & MPIDR_AFFINITY_MASK == want_mpidr & MPIDR_AFFINITY_MASK,
        format_args!("cpu{i}: start {generation} runs with MPIDR {mpidr:#010x} (want affinity {want_mpidr:#x})"),
    );
    expect_affinity(report, i, "after it reported in", &[AffinityState::On]);
    let running = smp::cpu_on(i, tag, secondary);
    expect_code(
        report,
        format_args!("cpu{i}: CPU_ON of the running CPU (start {generation})"),
        running,
        &[ReturnCode::AlreadyOn],
    );
}

/// Lets CPU `i` call CPU_OFF and waits until AFFINITY_INFO says OFF.
fn take_down(report: &mut Report, i: usize, generation: u32) {
    if STARTS[i].load(Ordering::SeqCst) < generation {
        return;
    }
    RELEASE[i].store(generation, Ordering::SeqCst);
    let mpidr = smp::mpidr_of(i);
    let mut last = AffinityState::On;
    let off = smp::wait_for(WAIT_MS, || {
        last = smp::affinity_info(mpidr);
        last == AffinityState::Off
    });
    report.check(
        off,
        format_args!("cpu{i}: AFFINITY_INFO (after CPU_OFF of start {generation}) -> {last} (want OFF (1))"),
    );
    if let Some(code) = smp::cpu_off_failure(i) {
        report.fail(format_args!("cpu{i}: CPU_OFF returned {code}"));
    }
}

/// CPU_ON and AFFINITY_INFO of CPUs that do not exist.
fn misuse(report: &mut Report, platform: &Platform, own: u32) {
    let ids = platform.cpus.ids();
    // The lowest Aff0 value after the listed ones, in the boot CPU's
    // cluster, and Aff0 = 0xff: neither may be listed.
    let max_aff0 = ids.iter().filter(|id| *id & !0xff == own & !0xff).map(|id| id & 0xff).max().unwrap_or(0);
    let missing = [(own & !0xff & MPIDR_AFFINITY_MASK) | (max_aff0 + 1).min(0xfe), 0xff];
    for mpidr in missing {
        if platform.cpus.index_of(mpidr).is_some() {
            continue;
        }
        let code = smp::psci_cpu_on(mpidr, smp::entry_point(), smp::context_id(MAX_CPUS, 0));
        report.check(
            code == ReturnCode::InvalidParameters,
            format_args!("CPU_ON of MPIDR {mpidr:#x} (no such CPU) -> {code} (want INVALID_PARAMETERS (-2))"),
        );
        let state = smp::affinity_info(mpidr);
        report.check(
            state == AffinityState::Error(ReturnCode::InvalidParameters),
            format_args!("AFFINITY_INFO of MPIDR {mpidr:#x} (no such CPU) -> {state} (want INVALID_PARAMETERS (-2))"),
        );
    }
}

/// CPU_ON of CPU 1 with an entry point outside RAM.
fn invalid_entry(report: &mut Report, platform: &Platform) {
    if platform.skipped(SKIP_INVALID_ADDRESS) {
        report.info(format_args!("CPU_ON with an entry point outside RAM: skipped ({SKIP_INVALID_ADDRESS})"));
        return;
    }
    let Some(ram) = platform.ram else {
        report.fail(format_args!("no memory region holds the guest image"));
        return;
    };
    // The first address past the RAM that holds the image, if nothing
    // (no other RAM) claims it; else the page below that RAM.
    let candidates = [ram.end(), ram.base.wrapping_sub(0x1000)];
    let entry = candidates
        .into_iter()
        .find(|addr| *addr < 1 << 32 && dtb::memory_regions(&platform.fdt).all(|r| !r.contains(*addr)));
    let Some(entry) = entry else {
        report.fail(format_args!("no address outside RAM next to {ram} to try"));
        return;
    };
    let code = smp::psci_cpu_on(smp::mpidr_of(1), entry as u32, smp::context_id(1, 0xee));
    report.check(
        code == ReturnCode::InvalidAddress,
        format_args!("cpu1: CPU_ON with entry {entry:#010x} outside RAM -> {code} (want INVALID_ADDRESS (-9))"),
    );
    smp::delay_ms(10);
    expect_affinity(report, 1, "after the refused CPU_ON", &[AffinityState::Off]);
}

/// A list of expected values, `A or B`.
struct Names<'a, T>(&'a [T]);

impl<T: core::fmt::Display> core::fmt::Display for Names<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (n, item) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
