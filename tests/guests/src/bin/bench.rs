//! Benchmark guest `bench`, run by `splitvisor bench`: one operation that
//! traps, repeated `bench.n` times, timed with the virtual counter.
//!
//! The command line names the item (`bench.item=`) and the repetitions
//! (`bench.n=`). `splitvisor bench` runs QEMU with precise icount and a
//! 1 GHz counter, so that one counter tick is one instruction executed by
//! any CPU at any exception level; the guest prints
//! `BENCH item=<item> n=<n> ticks=<ticks> cntfrq=<hz>` (and for `ipi` the
//! summed latency), then powers off. Items:
//!
//! - `loop`: the measuring loop around a RAM read (the baseline);
//! - `hvc`: PSCI_VERSION through HVC (the null hypercall);
//! - `gicd-read`: a read of GICD_TYPER; `gicd-write`: a write of the
//!   priorities of SPIs 32-35 (emulated by the vGIC server);
//! - `ipi`: an SGI from CPU 0 to CPU 1 and back to CPU 0 waiting until
//!   CPU 1's handler ran (the latency is from the GICD_SGIR write to the
//!   handler's first counter read);
//! - `timer`: the virtual timer armed `bench.period` ticks ahead, waited
//!   for in WFI, taken through the IRQ vector;
//! - `console`: one byte written to the PL011's data register;
//! - `console-putc`: one byte as a UART driver writes it (Linux's
//!   `pl011_console_putchar`): UARTFR read until the transmit FIFO has
//!   room, then UARTDR written. With the console's read image mapped (the
//!   default), the flag read does not trap;
//! - `console-irq`: one byte written to UARTDR with the PL011's transmit
//!   interrupt unmasked, and that interrupt (a level-sensitive SPI from the
//!   emulated device) taken as an interrupt-driven driver takes it: the
//!   handler acknowledges it, clears it at the UART (UARTICR) and ends it.
//!   A device interrupt's round trip through the vCPU and vGIC servers.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use test_guests::gic::{gicd, Gic, SgiFilter};
use test_guests::pl011::{self, Pl011};
use test_guests::platform::Platform;
use test_guests::smp::{self, Secondary};
use test_guests::{arch, psci, rt, BootInfo};

test_guests::entry!(main);

/// The SGI of the `ipi` item.
const IPI_SGI: u32 = 1;
/// Priority of the interrupts the items take.
const PRIORITY: u8 = 0x80;
/// The `timer` item's default period, in counter ticks.
const DEFAULT_PERIOD: u32 = 20_000;

static GICD_BASE: AtomicU32 = AtomicU32::new(0);
static GICC_BASE: AtomicU32 = AtomicU32::new(0);
/// IPIs CPU 1 has taken.
static IPIS_TAKEN: AtomicU32 = AtomicU32::new(0);
/// The counter (low word) just before CPU 0 sent the current IPI.
static IPI_SENT_AT: AtomicU32 = AtomicU32::new(0);
/// Summed IPI latency (counter ticks).
static IPI_LATENCY: AtomicU32 = AtomicU32::new(0);
static IPI_LATENCY_HIGH: AtomicU32 = AtomicU32::new(0);
/// Timer interrupts taken.
static TICKS_TAKEN: AtomicU32 = AtomicU32::new(0);
static VIRT_INTID: AtomicU32 = AtomicU32::new(0);
/// The `console-irq` item: the PL011's base, its interrupt, and the
/// interrupts taken.
static UART_BASE: AtomicU32 = AtomicU32::new(0);
static UART_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static UART_IRQS_TAKEN: AtomicU32 = AtomicU32::new(0);
/// CPU 1 is up and its CPU interface enabled.
static SECONDARY_READY: AtomicU32 = AtomicU32::new(0);

fn gic() -> Gic {
    // SAFETY: main stores the device tree's GIC frames before any use.
    unsafe { Gic::new(GICD_BASE.load(Ordering::SeqCst) as usize, GICC_BASE.load(Ordering::SeqCst) as usize) }
}

fn counter() -> u64 {
    arch::isb();
    arch::read_cntvct()
}

fn on_irq() {
    let now = counter() as u32;
    let gic = gic();
    let iar = gic.ack();
    if iar.is_spurious() {
        return;
    }
    if iar.intid() == IPI_SGI {
        let latency = now.wrapping_sub(IPI_SENT_AT.load(Ordering::SeqCst));
        let before = IPI_LATENCY.fetch_add(latency, Ordering::SeqCst);
        if before.checked_add(latency).is_none() {
            IPI_LATENCY_HIGH.fetch_add(1, Ordering::SeqCst);
        }
        gic.eoi(iar);
        IPIS_TAKEN.fetch_add(1, Ordering::SeqCst);
    } else if iar.intid() == VIRT_INTID.load(Ordering::SeqCst) {
        arch::write_cntv_ctl(0);
        gic.eoi(iar);
        TICKS_TAKEN.fetch_add(1, Ordering::SeqCst);
    } else if iar.intid() == UART_INTID.load(Ordering::SeqCst) {
        // SAFETY: main stored the device tree's PL011 before unmasking its
        // interrupt.
        let uart = unsafe { Pl011::new(UART_BASE.load(Ordering::SeqCst) as usize) };
        uart.write(pl011::UARTICR, pl011::INT_TX);
        gic.eoi(iar);
        UART_IRQS_TAKEN.fetch_add(1, Ordering::SeqCst);
    } else {
        gic.eoi(iar);
    }
}

fn secondary(_boot: Secondary) {
    let gic = gic();
    gic.enable_cpu_interface(0xf0);
    gic.set_priority(IPI_SGI, PRIORITY);
    gic.enable(IPI_SGI);
    SECONDARY_READY.store(1, Ordering::SeqCst);
    arch::irq_enable();
    loop {
        arch::wfi();
    }
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("bench", boot);
    let platform = Platform::discover(&env, &mut report);
    let item = platform.bootarg("bench.item").unwrap_or("hvc");
    let n: u32 = platform.bootarg("bench.n").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let period: u32 = platform.bootarg("bench.period").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PERIOD);
    GICD_BASE.store(platform.gic.dist_base() as u32, Ordering::SeqCst);
    GICC_BASE.store(platform.gic_node.cpu.base as u32, Ordering::SeqCst);
    rt::set_irq_handler(on_irq);
    let gic = gic();
    gic.enable_distributor();
    gic.enable_cpu_interface(0xf0);

    let mut extra = (0u64, "");
    let ticks = match item {
        "loop" => {
            let cell = AtomicU32::new(0);
            measure(n, || {
                core::hint::black_box(cell.load(Ordering::Relaxed));
            })
        }
        "hvc" => measure(n, || {
            core::hint::black_box(arch::hvc_call(psci::PSCI_VERSION, 0, 0, 0));
        }),
        "gicd-read" => measure(n, || {
            core::hint::black_box(gic.dist_read(gicd::TYPER));
        }),
        "gicd-write" => measure(n, || gic.dist_write(gicd::IPRIORITYR + 32, 0xa0a0_a0a0)),
        "console" => {
            let Some((uart, _)) = platform.uart else {
                report.fail(format_args!("no PL011 for the console item"));
                report.finish()
            };
            let ticks = measure(n, || console_byte(&uart));
            uart.write(pl011::UARTDR, u32::from(b'\n'));
            ticks
        }
        "console-putc" => {
            let Some((uart, _)) = platform.uart else {
                report.fail(format_args!("no PL011 for the console-putc item"));
                report.finish()
            };
            let mut sent = true;
            let ticks = measure(n, || sent &= uart.write_byte(b':'));
            uart.write(pl011::UARTDR, u32::from(b'\n'));
            report.check(sent, format_args!("UARTFR.TXFF stayed set"));
            ticks
        }
        "console-irq" => {
            let Some((uart, irq)) = platform.uart else {
                report.fail(format_args!("no PL011 with an interrupt for the console-irq item"));
                report.finish()
            };
            UART_BASE.store(uart.base() as u32, Ordering::SeqCst);
            UART_INTID.store(irq.intid, Ordering::SeqCst);
            gic.set_priority(irq.intid, PRIORITY);
            gic.set_targets(irq.intid, 1);
            // Level-sensitive (GICD_ICFGR Int_config[1] = 0), as the UART's
            // line is.
            let (offset, shift) = test_guests::gic::cfg_position(irq.intid);
            let cfg = gic.dist_read(gicd::ICFGR + offset);
            gic.dist_write(gicd::ICFGR + offset, cfg & !(2 << shift));
            gic.enable(irq.intid);
            // Clear what the boot's output left, then let it through.
            uart.write(pl011::UARTICR, pl011::INT_TX);
            uart.write(pl011::UARTIMSC, pl011::INT_TX);
            arch::irq_enable();
            let mut written = 0u32;
            let ticks = measure(n, || {
                written += 1;
                console_byte(&uart);
                while UART_IRQS_TAKEN.load(Ordering::SeqCst) != written {
                    core::hint::spin_loop();
                }
            });
            arch::irq_disable();
            uart.write(pl011::UARTIMSC, 0);
            uart.write(pl011::UARTDR, u32::from(b'\n'));
            ticks
        }
        "ipi" => {
            if platform.cpu_count() < 2 {
                report.fail(format_args!("the ipi item needs 2 CPUs (--smp 2)"));
                report.finish()
            }
            let code = smp::cpu_on(1, 1, secondary);
            report.check(code == psci::ReturnCode::Success, format_args!("CPU_ON of cpu1 -> {code}"));
            if !smp::wait_for(10_000, || SECONDARY_READY.load(Ordering::SeqCst) == 1) {
                report.fail(format_args!("cpu1 did not come up"));
                report.finish()
            }
            let mut sent = 0u32;
            let ticks = measure(n, || {
                sent += 1;
                IPI_SENT_AT.store(counter() as u32, Ordering::SeqCst);
                gic.send_sgi(SgiFilter::List(0b10), IPI_SGI);
                while IPIS_TAKEN.load(Ordering::SeqCst) != sent {
                    core::hint::spin_loop();
                }
            });
            let latency = (u64::from(IPI_LATENCY_HIGH.load(Ordering::SeqCst)) << 32)
                | u64::from(IPI_LATENCY.load(Ordering::SeqCst));
            extra = (latency, "latency");
            ticks
        }
        "timer" => {
            let Some(timer) = platform.timer else {
                report.fail(format_args!("the device tree has no architected timer"));
                report.finish()
            };
            let intid = timer.virt.intid;
            VIRT_INTID.store(intid, Ordering::SeqCst);
            gic.set_priority(intid, PRIORITY);
            gic.enable(intid);
            let mut armed = 0u32;
            measure(n, || {
                armed += 1;
                arch::write_cntv_tval(period);
                arch::write_cntv_ctl(1);
                arch::irq_enable();
                while TICKS_TAKEN.load(Ordering::SeqCst) != armed {
                    arch::wfi();
                }
                arch::irq_disable();
            })
        }
        other => {
            report.fail(format_args!("unknown bench.item={other}"));
            report.finish()
        }
    };
    let cntfrq = arch::read_cntfrq();
    if extra.1.is_empty() {
        test_guests::outln!("BENCH item={item} n={n} ticks={ticks} cntfrq={cntfrq}");
    } else {
        test_guests::outln!("BENCH item={item} n={n} ticks={ticks} cntfrq={cntfrq} {}={}", extra.1, extra.0);
    }
    report.finish()
}

/// Run `op` `n` times; the counter ticks it took.
fn measure(n: u32, mut op: impl FnMut()) -> u64 {
    let start = counter();
    for _ in 0..n {
        op();
    }
    counter().wrapping_sub(start)
}

/// One byte to the data register, without polling the flags first (that
/// would be a second trap).
fn console_byte(uart: &Pl011) {
    uart.write(pl011::UARTDR, u32::from(b'.'));
}
