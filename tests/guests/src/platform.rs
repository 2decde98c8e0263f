//! What the SMP guests need from the device tree, found once on CPU 0: the
//! GIC, the CPUs, the timer and console interrupts, the RAM holding the
//! image, and the checks the command line asks to skip.

use fdt::Fdt;

use crate::dtb::{self, Cpus, Interrupt, Region, TimerIrqs};
use crate::gic::Gic;
use crate::pl011::Pl011;
use crate::rt::Env;
use crate::{smp, Report};

/// The `/chosen/bootargs` word that names checks a platform cannot pass
/// for a documented reason, comma-separated: `test.skip=a,b`. Only the
/// plain-QEMU reference runs use it (QEMU's own PSCI, for instance, does
/// not validate CPU_ON entry addresses, which DEN 0022 allows).
pub const SKIP_PREFIX: &str = "test.skip=";

/// The platform, as the device tree describes it.
pub struct Platform {
    /// The device tree.
    pub fdt: Fdt<'static>,
    /// The GIC's two frames.
    pub gic: Gic,
    /// The GIC node.
    pub gic_node: dtb::Gic<'static>,
    /// The CPUs.
    pub cpus: Cpus,
    /// The timer interrupts, if the tree has an architected timer.
    pub timer: Option<TimerIrqs>,
    /// The console UART and its interrupt, if the tree gives one.
    pub uart: Option<(Pl011, Interrupt)>,
    /// The RAM region holding the guest image.
    pub ram: Option<Region>,
    /// The counter frequency (CNTFRQ).
    pub cntfrq: u32,
    bootargs: Option<&'static str>,
}

impl Platform {
    /// Discovers the platform; reports what it found. Without a device
    /// tree, a GIC or a CPU list there is nothing to test: the report ends.
    pub fn discover(env: &Env, report: &mut Report) -> Platform {
        let fdt = match &env.dtb {
            Ok(fdt) => *fdt,
            Err(_) => report.finish_now(),
        };
        let Some(gic_node) = dtb::gic(&fdt) else {
            report.fail(format_args!("the device tree has no GICv2 node with distributor and CPU interface"));
            report.finish_now()
        };
        let (Ok(dist), Ok(cpu)) = (usize::try_from(gic_node.dist.base), usize::try_from(gic_node.cpu.base)) else {
            report.fail(format_args!("the GIC {} lies outside the 32-bit address space", gic_node.name));
            report.finish_now()
        };
        // SAFETY: the device tree names a GICv2 with these two frames.
        let gic = unsafe { Gic::new(dist, cpu) };
        let Some(cpus) = dtb::cpus(&fdt).filter(|cpus| cpus.count() > 0) else {
            report.fail(format_args!("the device tree lists no CPUs under /cpus"));
            report.finish_now()
        };
        smp::init(&cpus);
        let timer = dtb::timer_irqs(&fdt, &gic_node);
        let uart = dtb::console_pl011(&fdt).zip(dtb::console_interrupt(&fdt, &gic_node)).and_then(|(dev, irq)| {
            // SAFETY: the device tree names a PL011 there.
            usize::try_from(dev.region.base).ok().map(|base| (unsafe { Pl011::new(base) }, irq))
        });
        let image = crate::rt::image();
        let ram = dtb::memory_regions(&fdt).find(|r| r.contains_range(image.base, image.end()));
        let bootargs = dtb::bootargs(&fdt);
        report.info(format_args!(
            "{} CPU(s); GIC {} ({}) GICD {:#x} GICC {:#x}",
            cpus.count(),
            gic_node.name,
            gic_node.compatible,
            gic_node.dist.base,
            gic_node.cpu.base
        ));
        if cpus.ignored > 0 {
            report.info(format_args!("{} CPU node(s) beyond {} ignored", cpus.ignored, dtb::MAX_CPUS));
        }
        Platform { fdt, gic, gic_node, cpus, timer, uart, ram, cntfrq: crate::arch::read_cntfrq(), bootargs }
    }

    /// How many CPUs.
    pub fn cpu_count(&self) -> usize {
        self.cpus.count()
    }

    /// The value of `key=value` on the command line (the last one wins).
    pub fn bootarg(&self, key: &str) -> Option<&'static str> {
        self.bootargs?
            .split_whitespace()
            .filter_map(|word| word.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .next_back()
    }

    /// Whether the command line asks to skip check `name` (see
    /// [`SKIP_PREFIX`]).
    pub fn skipped(&self, name: &str) -> bool {
        self.bootargs.is_some_and(|args| {
            args.split_whitespace()
                .filter_map(|word| word.strip_prefix(SKIP_PREFIX))
                .any(|list| list.split(',').any(|item| item == name))
        })
    }
}
