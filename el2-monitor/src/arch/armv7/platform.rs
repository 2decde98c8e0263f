//! The platform, as the device tree QEMU (or firmware) hands over says.

use fdt::Fdt;

// Where the device tree is: QEMU places it at the base of RAM for an ELF
// image that starts at least 1 MiB above it, and the linker script defines
// that base once.
extern "C" {
    static __ram_base: u8;
}

/// The PSCI function that starts a CPU (SMC32 CPU_ON, PSCI 0.2 and later).
const PSCI_0_2_CPU_ON: u32 = 0x8400_0003;

/// Everything the monitor needs to know about the machine.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// RAM base and size.
    pub ram: (u64, u64),
    /// Number of CPUs.
    pub cpus: usize,
    /// GIC distributor, CPU interface, virtual interface control, virtual CPU interface.
    pub gicd: u64,
    /// GIC CPU interface.
    pub gicc: u64,
    /// GIC virtual interface control.
    pub gich: u64,
    /// GIC virtual CPU interface (mapped into guests) and its size.
    pub gicv: (u64, u64),
    /// The maintenance interrupt.
    pub maintenance_intid: u16,
    /// Timer PPIs: (secure physical, non-secure physical, virtual, hyp).
    pub timer_intids: [u16; 4],
    /// The UART and its interrupt.
    pub uart: u64,
    /// The UART's INTID.
    pub uart_intid: u16,
    /// PSCI CPU_ON function ID over SMC, if PSCI is there with method "smc".
    pub psci_cpu_on: Option<u32>,
}

/// What is missing from or wrong in the device tree.
#[derive(Clone, Copy, Debug)]
pub enum PlatformError {
    /// No valid device tree at the RAM base.
    NoDeviceTree,
    /// A node or property is missing or malformed.
    Missing(&'static str),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlatformError::NoDeviceTree => write!(f, "no valid device tree at the RAM base"),
            PlatformError::Missing(what) => write!(f, "{what} missing or malformed"),
        }
    }
}

fn be32(bytes: &[u8], i: usize) -> Option<u32> {
    let b = bytes.get(i * 4..i * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Turn a GIC interrupt specifier (type, number, flags) into an INTID.
fn intid(spec: &[u8], index: usize) -> Option<u16> {
    let kind = be32(spec, index * 3)?;
    let number = be32(spec, index * 3 + 1)?;
    let base = match kind {
        0 => 32,
        1 => 16,
        _ => return None,
    };
    u16::try_from(number + base).ok()
}

/// Read the platform from the device tree at the RAM base.
pub fn discover() -> Result<Platform, PlatformError> {
    // SAFETY: `__ram_base` is a linker-defined address; reading the FDT
    // header there is a read of RAM that nothing else uses at boot. `from_ptr`
    // checks the magic and bounds everything by the header's total size.
    let fdt = unsafe { Fdt::from_ptr(core::ptr::addr_of!(__ram_base)) }.map_err(|_| PlatformError::NoDeviceTree)?;
    let region = fdt.memory().regions().next().ok_or(PlatformError::Missing("/memory"))?;
    let ram = (region.starting_address as u64, region.size.ok_or(PlatformError::Missing("/memory size"))? as u64);
    let cpus = fdt.cpus().count();

    // One walk over the nodes for the four devices: `find_compatible` walks
    // them (and parses their properties) again for each, some 300,000
    // instructions in all on QEMU's tree, a percent of the hypervisor's
    // share of a whole Linux boot. Each gets the first node that matches,
    // as `find_compatible` would.
    const GIC: [&str; 2] = ["arm,cortex-a15-gic", "arm,gic-400"];
    const TIMER: [&str; 2] = ["arm,armv7-timer", "arm,armv8-timer"];
    const UART: [&str; 1] = ["arm,pl011"];
    const PSCI: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];
    let (mut gic, mut timer, mut uart, mut psci) = (None, None, None, None);
    for node in fdt.all_nodes() {
        let Some(compatible) = node.compatible() else {
            continue;
        };
        let matches = |with: &[&str]| compatible.all().any(|c| with.contains(&c));
        for (slot, with) in
            [(&mut gic, &GIC[..]), (&mut timer, &TIMER[..]), (&mut uart, &UART[..]), (&mut psci, &PSCI[..])]
        {
            if slot.is_none() && matches(with) {
                *slot = Some(node);
            }
        }
        if gic.is_some() && timer.is_some() && uart.is_some() && psci.is_some() {
            break;
        }
    }
    let gic = gic.ok_or(PlatformError::Missing("GICv2 node"))?;
    let mut regs = gic.reg().ok_or(PlatformError::Missing("GIC reg"))?;
    let mut next = || regs.next().map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
    let gicd = next().ok_or(PlatformError::Missing("GICD"))?.0;
    let gicc = next().ok_or(PlatformError::Missing("GICC"))?.0;
    let gich = next().ok_or(PlatformError::Missing("GICH (no virtualization extensions?)"))?.0;
    let gicv = next().ok_or(PlatformError::Missing("GICV (no virtualization extensions?)"))?;
    let maintenance_intid = gic
        .property("interrupts")
        .and_then(|p| intid(p.value, 0))
        .ok_or(PlatformError::Missing("GIC maintenance interrupt"))?;

    let timer = timer.ok_or(PlatformError::Missing("architected timer"))?;
    let spec = timer.property("interrupts").ok_or(PlatformError::Missing("timer interrupts"))?.value;
    let mut timer_intids = [0u16; 4];
    for (i, t) in timer_intids.iter_mut().enumerate() {
        *t = intid(spec, i).ok_or(PlatformError::Missing("timer PPI"))?;
    }

    let uart = uart.ok_or(PlatformError::Missing("PL011"))?;
    let uart_base =
        uart.reg().and_then(|mut r| r.next()).ok_or(PlatformError::Missing("PL011 reg"))?.starting_address as u64;
    let uart_intid =
        uart.property("interrupts").and_then(|p| intid(p.value, 0)).ok_or(PlatformError::Missing("PL011 interrupt"))?;

    let psci_cpu_on = psci.and_then(|psci| {
        if psci.property("method").and_then(|m| m.as_str()) != Some("smc") {
            return None;
        }
        let standard = psci.compatible().is_some_and(|c| c.all().any(|s| s == "arm,psci-0.2" || s == "arm,psci-1.0"));
        if standard {
            Some(PSCI_0_2_CPU_ON)
        } else {
            psci.property("cpu_on").and_then(|p| p.as_usize()).map(|v| v as u32)
        }
    });

    Ok(Platform {
        ram,
        cpus,
        gicd,
        gicc,
        gich,
        gicv,
        maintenance_intid,
        timer_intids,
        uart: uart_base,
        uart_intid,
        psci_cpu_on,
    })
}
