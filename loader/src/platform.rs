//! The platform, as QEMU itself describes it: nothing about the `virt` board
//! is written down here. Two short runs of QEMU with the machine splitvisor
//! uses tell everything:
//! - `-M ...,dumpdtb=FILE` writes the device tree QEMU would hand a guest:
//!   the RAM base, the GIC's four regions (GICD, GICC, GICH, GICV), the
//!   PL011's registers, interrupt and clock, and the timer's PPIs;
//! - `info qtree` on the human monitor of a stopped machine gives what the
//!   device tree does not: how many interrupts the GIC implements
//!   (`num-irq`, counting the 32 SGIs and PPIs) and the true size of each
//!   GIC region (the tree lists 64 KiB windows; the distributor's registers
//!   take 4 KiB and the CPU interfaces 8 KiB).
//!
//! Both answers are kept in a cache directory between runs (see [`probe`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::dtb::{cells, CheckedDtb, DtIrq, DtbError, GIC_PPI, GIC_SPI, GIC_TRIGGER_MASK};
use crate::images::Span;
use crate::qemu::{self, QemuError};

/// How long a probing run of QEMU may take (both take a fraction of a second).
const PROBE_LIMIT: Duration = Duration::from_secs(30);
/// Interrupts below this INTID are SGIs and PPIs; SPIs start here.
pub const FIRST_SPI: u32 = 32;
/// PPI n is INTID 16 + n.
pub const FIRST_PPI: u32 = 16;

/// Why the platform could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// QEMU could not be run.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// QEMU ran but failed.
    #[error("QEMU failed while {doing}: {message}")]
    QemuFailed {
        /// What it was asked to do.
        doing: &'static str,
        /// What it said.
        message: String,
    },
    /// Reading or writing the dumped device tree failed.
    #[error("QEMU's device tree: {0}")]
    Io(#[from] std::io::Error),
    /// The dumped device tree is malformed.
    #[error("QEMU's {0}")]
    Dtb(#[from] DtbError),
    /// Something needed is missing or odd.
    #[error("QEMU's platform description: {0}")]
    Missing(String),
}

fn missing(what: impl Into<String>) -> PlatformError {
    PlatformError::Missing(what.into())
}

/// What the device tree says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtbFacts {
    /// Base of RAM.
    pub ram_base: u64,
    /// The GIC's `reg`: GICD, GICC, GICH, GICV.
    pub gic: [Span; 4],
    /// The PL011's registers.
    pub uart: Span,
    /// The PL011's SPI.
    pub uart_irq: DtIrq,
    /// The PL011's reference clock.
    pub uart_clock_hz: u32,
    /// Timer PPIs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_ppis: [DtIrq; 4],
    /// The timer node has `always-on`.
    pub timer_always_on: bool,
    /// The size of the blob QEMU places in RAM.
    pub blob_size: u64,
}

/// What `info qtree` says about the GIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QtreeGic {
    /// Interrupts implemented, SGIs and PPIs included.
    pub num_irq: u32,
    /// The GIC's MMIO regions in QEMU's order: distributor, CPU interface,
    /// virtual interface control (GICH), virtual CPU interface (GICV).
    pub mmio: Vec<Span>,
}

/// The platform splitvisor runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Base of QEMU's RAM (and of the guest's RAM in its own address space).
    pub ram_base: u64,
    /// GICv2 distributor.
    pub gicd: Span,
    /// GICv2 CPU interface.
    pub gicc: Span,
    /// GICv2 virtual interface control.
    pub gich: Span,
    /// GICv2 virtual CPU interface.
    pub gicv: Span,
    /// Interrupts the GIC implements (SGIs and PPIs included).
    pub num_irq: u32,
    /// The PL011's registers.
    pub uart: Span,
    /// The PL011's SPI.
    pub uart_irq: DtIrq,
    /// The PL011's reference clock.
    pub uart_clock_hz: u32,
    /// Timer PPIs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_ppis: [DtIrq; 4],
    /// The timer is `always-on`.
    pub timer_always_on: bool,
    /// The size of the device tree QEMU itself places in RAM for the monitor.
    pub qemu_dtb_size: u64,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [s, p, v, h] = self.timer_ppis.map(|t| t.number);
        write!(
            f,
            "RAM at {:#x}; GICD {}, GICC {}, GICH {}, GICV {}, {} interrupts; PL011 {} on SPI {}; \
             timer PPIs {s}/{p}/{v}/{h}",
            self.ram_base, self.gicd, self.gicc, self.gich, self.gicv, self.num_irq, self.uart, self.uart_irq.number
        )
    }
}

impl Platform {
    /// The number of SPIs the GIC implements.
    pub fn spis(&self) -> u32 {
        self.num_irq.saturating_sub(FIRST_SPI)
    }
}

/// Ask QEMU (`qemu`, for `smp` CPUs and `mem_mib` of RAM) about the platform.
///
/// With `cache` (a directory), the two answers are kept there, under the
/// QEMU binary's identity (see [`identity`]), and a later run with the same
/// QEMU, CPUs and RAM reads them instead of starting QEMU twice more (the
/// two probing runs cost every run about 0.1 s; `--version` costs 0.02 s).
/// What is kept is QEMU's own output, parsed and cross-checked again on
/// every use; an entry that does not read back, or whose identity differs,
/// is probed afresh and replaced. The two probes run side by side.
pub fn probe(qemu: &Path, smp: u8, mem_mib: u64, cache: Option<&Path>) -> Result<Platform, PlatformError> {
    let key = cache.and_then(|dir| identity(qemu, smp, mem_mib).map(|key| (dir, key)));
    if let Some((dir, key)) = &key {
        if let Some(platform) = cached(dir, key) {
            log::debug!("platform from the probe cache in {}", dir.display());
            return Ok(platform);
        }
    }
    let (dtb, qtree) = run_probes(qemu, smp, mem_mib)?;
    let platform = combine(parse_qemu_dtb(&dtb)?, parse_qtree(&qtree)?)?;
    if let Some((dir, key)) = &key {
        match store(dir, key, &dtb, &qtree) {
            Ok(entry) => log::debug!("probed QEMU's platform; kept in {}", entry.display()),
            // The run goes on: only the next one is slower.
            Err(e) => log::warn!("could not keep QEMU's platform description in {}: {e}", dir.display()),
        }
    }
    Ok(platform)
}

/// Run QEMU's two probes at once: its device tree, and `info qtree`.
fn run_probes(qemu: &Path, smp: u8, mem_mib: u64) -> Result<(Vec<u8>, String), PlatformError> {
    let dir = tempfile::Builder::new().prefix("splitvisor-probe").tempdir()?;
    let dump = dir.path().join("virt.dtb");
    let mut machine = std::ffi::OsString::from(format!("{},dumpdtb=", qemu::MACHINE));
    machine.push(dump.as_os_str());
    let common = |cmd: &mut Command| {
        cmd.args(["-cpu", qemu::CPU, "-smp", &smp.to_string(), "-m", &format!("{mem_mib}M")]).args([
            "-display",
            "none",
            "-nodefaults",
        ]);
    };
    let mut dump_cmd = Command::new(qemu);
    dump_cmd.arg("-M").arg(&machine);
    common(&mut dump_cmd);
    let mut qtree_cmd = Command::new(qemu);
    qtree_cmd.args(["-M", qemu::MACHINE, "-S", "-monitor", "stdio"]);
    common(&mut qtree_cmd);

    let (dumped, listed) = std::thread::scope(|s| {
        let listing = s.spawn(|| qemu::run_captured(&mut qtree_cmd, b"info qtree\nquit\n", PROBE_LIMIT));
        let dumped = qemu::run_captured(&mut dump_cmd, b"", PROBE_LIMIT);
        (dumped, listing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    let failed = |doing, out: &qemu::Captured| PlatformError::QemuFailed {
        doing,
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    };
    let dumped = dumped?;
    if !dumped.status.success() {
        return Err(failed("dumping its device tree", &dumped));
    }
    let listed = listed?;
    if !listed.status.success() {
        return Err(failed("listing its devices", &listed));
    }
    Ok((std::fs::read(&dump)?, String::from_utf8_lossy(&listed.stdout).into_owned()))
}

/// The version of the probe cache's entries: a change to what is kept, or
/// to how it is read, changes every key.
const CACHE_FORMAT: u32 = 1;

/// What a probe's answer depends on, as text: the machine and CPU asked
/// for, the CPUs and RAM, and the QEMU binary (its path as found in `PATH`,
/// size and modification time, and what `--version` says, which also
/// covers a wrapper script whose target changed). `None` when QEMU does
/// not answer `--version` (the probe itself then says why).
pub fn identity(qemu: &Path, smp: u8, mem_mib: u64) -> Option<String> {
    let out = qemu::run_captured(Command::new(qemu).arg("--version"), b"", PROBE_LIMIT).ok()?;
    if !out.status.success() {
        return None;
    }
    let binary = match find_program(qemu) {
        Some(path) => {
            let meta = std::fs::metadata(&path).ok()?;
            let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
            format!(
                "{} {} bytes, modified {}.{:09}",
                path.display(),
                meta.len(),
                modified.as_secs(),
                modified.subsec_nanos()
            )
        }
        None => format!("{} (not found in PATH)", qemu.display()),
    };
    Some(format!(
        "splitvisor platform probe, format {CACHE_FORMAT}\nmachine {}\ncpu {}\nsmp {smp}\nmem {mem_mib}M\nqemu {binary}\n{}",
        qemu::MACHINE,
        qemu::CPU,
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

/// `program` as `Command` finds it: a path with a directory part as it is,
/// a bare name in `PATH`.
fn find_program(program: &Path) -> Option<std::path::PathBuf> {
    let found = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
    };
    found.and_then(|p| p.canonicalize().ok())
}

/// The cache entry of `key`: a directory named by the key's hash (the key
/// itself is kept inside and compared on reading, so a collision only
/// costs a probe).
fn entry(dir: &Path, key: &str) -> std::path::PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    dir.join(format!("{:016x}", hasher.finish()))
}

const KEY_FILE: &str = "key";
const DTB_FILE: &str = "virt.dtb";
const QTREE_FILE: &str = "qtree.txt";

/// The platform kept for `key` in `dir`, if an entry is there, is `key`'s
/// and still reads as a platform.
pub fn cached(dir: &Path, key: &str) -> Option<Platform> {
    let entry = entry(dir, key);
    let kept_key = std::fs::read_to_string(entry.join(KEY_FILE)).ok()?;
    if kept_key != key {
        log::debug!("probe cache entry {} is another QEMU's", entry.display());
        return None;
    }
    let dtb = std::fs::read(entry.join(DTB_FILE)).ok()?;
    let qtree = std::fs::read_to_string(entry.join(QTREE_FILE)).ok()?;
    let parsed = parse_qemu_dtb(&dtb).and_then(|facts| combine(facts, parse_qtree(&qtree)?));
    match parsed {
        Ok(platform) => Some(platform),
        Err(e) => {
            log::debug!("probe cache entry {} does not read back ({e}); probing again", entry.display());
            None
        }
    }
}

/// Keep QEMU's two answers for `key` in `dir`; returns the entry. The
/// entry is written beside it and renamed into place, so that a reader
/// (another `splitvisor` at the same time) sees all of it or none.
pub fn store(dir: &Path, key: &str, dtb: &[u8], qtree: &str) -> std::io::Result<std::path::PathBuf> {
    let entry = entry(dir, key);
    std::fs::create_dir_all(dir)?;
    let staging = tempfile::Builder::new().prefix(".staging").tempdir_in(dir)?;
    std::fs::write(staging.path().join(DTB_FILE), dtb)?;
    std::fs::write(staging.path().join(QTREE_FILE), qtree)?;
    std::fs::write(staging.path().join(KEY_FILE), key)?;
    if entry.exists() {
        // Another QEMU's entry under the same hash, or one that no longer
        // reads back: replaced. (If another run replaces it at the same
        // moment, one of the two renames fails; that run's entry stays.)
        let _ = std::fs::remove_dir_all(&entry);
    }
    let staged = staging.keep();
    std::fs::rename(&staged, &entry).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staged);
    })?;
    Ok(entry)
}

fn reg(node: fdt::node::FdtNode<'_, '_>, what: &str) -> Result<Vec<Span>, PlatformError> {
    let regions: Vec<Span> = node
        .reg()
        .ok_or_else(|| missing(format!("{what} has no usable reg")))?
        .map(|r| Span::new(r.starting_address as usize as u64, r.size.unwrap_or(0) as u64))
        .collect();
    if regions.is_empty() {
        return Err(missing(format!("{what} has an empty reg")));
    }
    Ok(regions)
}

/// GIC interrupt specifiers (three cells each) of a node.
fn interrupts(node: fdt::node::FdtNode<'_, '_>, what: &str) -> Result<Vec<[u32; 3]>, PlatformError> {
    let c = node
        .property("interrupts")
        .and_then(|p| cells(p.value))
        .ok_or_else(|| missing(format!("{what} has no interrupts")))?;
    if c.is_empty() || c.len() % 3 != 0 {
        return Err(missing(format!("{what}'s interrupts are not GIC specifiers of three cells")));
    }
    Ok(c.chunks_exact(3).map(|t| [t[0], t[1], t[2]]).collect())
}

fn first_cell(node: fdt::node::FdtNode<'_, '_>, name: &str) -> Option<u32> {
    node.property(name).and_then(|p| cells(p.value)).and_then(|c| c.first().copied())
}

/// Read the facts splitvisor needs from QEMU's device tree.
pub fn parse_qemu_dtb(bytes: &[u8]) -> Result<DtbFacts, PlatformError> {
    let checked = CheckedDtb::new(bytes)?;
    let fdt = checked.fdt()?;

    let memory = fdt.find_node("/memory").ok_or_else(|| missing("no /memory node"))?;
    let ram_base = reg(memory, "/memory")?.first().map(|r| r.start).unwrap_or_default();

    let gic_node = fdt
        .find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic"])
        .ok_or_else(|| missing("no GICv2 node (is gic-version=2 set?)"))?;
    if first_cell(gic_node, "#interrupt-cells") != Some(3) {
        return Err(missing("the GIC's #interrupt-cells is not 3"));
    }
    let gic_regs = reg(gic_node, "the GIC")?;
    let gic: [Span; 4] = gic_regs
        .get(..4)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| missing("the GIC lists no GICH/GICV regions (is virtualization=on set?)"))?;

    let uart_node = fdt.find_compatible(&["arm,pl011"]).ok_or_else(|| missing("no PL011"))?;
    let uart = *reg(uart_node, "the PL011")?.first().ok_or_else(|| missing("PL011 reg"))?;
    let [kind, number, flags] =
        *interrupts(uart_node, "the PL011")?.first().ok_or_else(|| missing("PL011 interrupt"))?;
    if kind != GIC_SPI {
        return Err(missing("the PL011's interrupt is not an SPI"));
    }
    let uart_irq = DtIrq { number, trigger: flags & GIC_TRIGGER_MASK };
    let clock = first_cell(uart_node, "clocks")
        .and_then(|phandle| fdt.find_phandle(phandle))
        .ok_or_else(|| missing("the PL011 has no clock"))?;
    let uart_clock_hz =
        first_cell(clock, "clock-frequency").ok_or_else(|| missing("the PL011's clock has no clock-frequency"))?;

    let timer = fdt
        .find_compatible(&["arm,armv7-timer", "arm,armv8-timer"])
        .ok_or_else(|| missing("no architected timer node"))?;
    let timer_irqs = interrupts(timer, "the timer")?;
    let mut timer_ppis = [DtIrq { number: 0, trigger: 0 }; 4];
    if timer_irqs.len() < 4 {
        return Err(missing("the timer lists fewer than four interrupts"));
    }
    for (slot, [kind, number, flags]) in timer_ppis.iter_mut().zip(&timer_irqs) {
        if *kind != GIC_PPI {
            return Err(missing("a timer interrupt is not a PPI"));
        }
        *slot = DtIrq { number: *number, trigger: flags & GIC_TRIGGER_MASK };
    }
    let timer_always_on = timer.property("always-on").is_some();

    Ok(DtbFacts {
        ram_base,
        gic,
        uart,
        uart_irq,
        uart_clock_hz,
        timer_ppis,
        timer_always_on,
        blob_size: bytes.len() as u64,
    })
}

/// Read the GIC's `num-irq` and MMIO regions from `info qtree` output.
pub fn parse_qtree(text: &str) -> Result<QtreeGic, PlatformError> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("dev: arm_gic,"))
        .ok_or_else(|| missing("no arm_gic device in `info qtree`"))?;
    let dev_indent = lines.get(start).map_or(0, |l| indent(l));
    let mut num_irq = None;
    let mut mmio = Vec::new();
    for line in lines.iter().skip(start + 1).take_while(|l| l.trim().is_empty() || indent(l) > dev_indent) {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("num-irq = ") {
            num_irq = value.split_whitespace().next().and_then(|n| n.parse::<u32>().ok());
        } else if let Some(region) = line.strip_prefix("mmio ") {
            let (base, size) = region.split_once('/').ok_or_else(|| missing(format!("odd qtree line {line:?}")))?;
            let hex =
                |s: &str| u64::from_str_radix(s.trim(), 16).map_err(|_| missing(format!("odd qtree line {line:?}")));
            mmio.push(Span::new(hex(base)?, hex(size)?));
        }
    }
    let num_irq = num_irq.ok_or_else(|| missing("arm_gic has no num-irq in `info qtree`"))?;
    Ok(QtreeGic { num_irq, mmio })
}

/// Put the two descriptions together, checking that they agree.
pub fn combine(facts: DtbFacts, qtree: QtreeGic) -> Result<Platform, PlatformError> {
    let [dtb_gicd, dtb_gicc, dtb_gich, dtb_gicv] = facts.gic;
    let mmio: [Span; 4] = qtree
        .mmio
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| missing("arm_gic has fewer than four MMIO regions (no virtualization extensions?)"))?;
    for (name, from_dtb, from_qtree) in [
        ("GICD", dtb_gicd, mmio[0]),
        ("GICC", dtb_gicc, mmio[1]),
        ("GICH", dtb_gich, mmio[2]),
        ("GICV", dtb_gicv, mmio[3]),
    ] {
        if from_dtb.start != from_qtree.start || from_qtree.size == 0 || from_qtree.size > from_dtb.size {
            return Err(missing(format!(
                "the device tree puts the {name} at {from_dtb} but the GIC device at {from_qtree}"
            )));
        }
    }
    if qtree.num_irq <= FIRST_SPI {
        return Err(missing(format!("the GIC implements {} interrupts, no SPI", qtree.num_irq)));
    }
    if facts.uart_irq.number >= qtree.num_irq - FIRST_SPI {
        return Err(missing(format!("the PL011's SPI {} is beyond the GIC's", facts.uart_irq.number)));
    }
    if facts.timer_ppis.iter().any(|p| p.number >= FIRST_SPI - FIRST_PPI) {
        return Err(missing("a timer PPI number is out of range"));
    }
    Ok(Platform {
        ram_base: facts.ram_base,
        gicd: mmio[0],
        gicc: mmio[1],
        gich: mmio[2],
        gicv: mmio[3],
        num_irq: qtree.num_irq,
        uart: facts.uart,
        uart_irq: facts.uart_irq,
        uart_clock_hz: facts.uart_clock_hz,
        timer_ppis: facts.timer_ppis,
        timer_always_on: facts.timer_always_on,
        qemu_dtb_size: facts.blob_size,
    })
}

/// The GIC CPU interface the guest sees: at GICC's address, and as large
/// as the GICV that backs it (and no larger than GICC).
pub fn guest_gicc(platform: &Platform) -> Span {
    Span::new(platform.gicc.start, platform.gicv.size.min(platform.gicc.size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// A device tree laid out like QEMU 7.2's `virt` dump (the parts read).
    pub(crate) fn virt_like_dtb() -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("interrupt-parent", 0x8003).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x1000_0000]).unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.end_node(mem).unwrap();
        let uart = w.begin_node("pl011@9000000").unwrap();
        w.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()]).unwrap();
        w.property_array_u32("clocks", &[0x8000, 0x8000]).unwrap();
        w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        w.property_array_u64("reg", &[0x0900_0000, 0x1000]).unwrap();
        w.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()]).unwrap();
        w.end_node(uart).unwrap();
        let gic = w.begin_node("intc@8000000").unwrap();
        w.property_u32("phandle", 0x8003).unwrap();
        w.property_array_u32("interrupts", &[1, 9, 4]).unwrap();
        w.property_array_u64(
            "reg",
            &[0x0800_0000, 0x1_0000, 0x0801_0000, 0x1_0000, 0x0803_0000, 0x1_0000, 0x0804_0000, 0x1_0000],
        )
        .unwrap();
        w.property_string("compatible", "arm,cortex-a15-gic").unwrap();
        w.property_null("interrupt-controller").unwrap();
        w.property_u32("#interrupt-cells", 3).unwrap();
        w.end_node(gic).unwrap();
        let timer = w.begin_node("timer").unwrap();
        w.property_array_u32("interrupts", &[1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]).unwrap();
        w.property_null("always-on").unwrap();
        w.property_string("compatible", "arm,armv7-timer").unwrap();
        w.end_node(timer).unwrap();
        let clk = w.begin_node("apb-pclk").unwrap();
        w.property_u32("phandle", 0x8000).unwrap();
        w.property_u32("clock-frequency", 24_000_000).unwrap();
        w.property_string("compatible", "fixed-clock").unwrap();
        w.end_node(clk).unwrap();
        w.end_node(root).unwrap();
        let mut blob = w.finish().unwrap();
        // QEMU pads its dump to 1 MiB.
        blob.resize(1 << 20, 0);
        blob
    }

    /// `info qtree` as QEMU 7.2 prints it (cut down), with its CR LF ends.
    pub(crate) fn qtree() -> String {
        [
            "QEMU 7.2.22 monitor - type 'help' for more information",
            "(qemu) info qtree",
            "bus: main-system-bus",
            "  type System",
            "  dev: arm_gicv2m, id \"\"",
            "    num-spi = 64 (0x40)",
            "    mmio 0000000008020000/0000000000001000",
            "  dev: arm_gic, id \"\"",
            "    gpio-in \"\" 320",
            "    num-cpu = 2 (0x2)",
            "    num-irq = 288 (0x120)",
            "    revision = 2 (0x2)",
            "    mmio 0000000008000000/0000000000001000",
            "    mmio 0000000008010000/0000000000002000",
            "    mmio 0000000008030000/0000000000001000",
            "    mmio 0000000008040000/0000000000002000",
            "  dev: pl011, id \"\"",
            "    mmio 0000000009000000/0000000000001000",
            "(qemu) quit",
        ]
        .join("\r\n")
    }

    pub(crate) fn platform() -> Platform {
        combine(parse_qemu_dtb(&virt_like_dtb()).unwrap(), parse_qtree(&qtree()).unwrap()).unwrap()
    }

    #[test]
    fn reads_a_virt_like_tree() {
        let f = parse_qemu_dtb(&virt_like_dtb()).unwrap();
        assert_eq!(f.ram_base, 0x4000_0000);
        assert_eq!(f.gic[3], Span::new(0x0804_0000, 0x1_0000));
        assert_eq!(f.uart, Span::new(0x0900_0000, 0x1000));
        assert_eq!(f.uart_irq, DtIrq { number: 1, trigger: 4 });
        assert_eq!(f.uart_clock_hz, 24_000_000);
        assert_eq!(f.timer_ppis.map(|p| p.number), [13, 14, 11, 10]);
        assert!(f.timer_ppis.iter().all(|p| p.trigger == 4));
        assert!(f.timer_always_on);
        assert_eq!(f.blob_size, 1 << 20);
    }

    #[test]
    fn reads_the_qtree() {
        let q = parse_qtree(&qtree()).unwrap();
        assert_eq!(q.num_irq, 288);
        assert_eq!(q.mmio.len(), 4, "{:?}", q.mmio);
        assert_eq!(q.mmio[1], Span::new(0x0801_0000, 0x2000));
        assert!(parse_qtree("bus: main-system-bus\n").is_err());
        assert!(parse_qtree("  dev: arm_gic, id \"\"\n    mmio 1/2\n").is_err());
    }

    #[test]
    fn combines_and_cross_checks() {
        let p = platform();
        assert_eq!(p.gicd, Span::new(0x0800_0000, 0x1000));
        assert_eq!(p.gicc, Span::new(0x0801_0000, 0x2000));
        assert_eq!(p.spis(), 256);
        assert_eq!(guest_gicc(&p), Span::new(0x0801_0000, 0x2000));

        let mut q = parse_qtree(&qtree()).unwrap();
        q.mmio[0].start = 0x0900_0000;
        assert!(combine(parse_qemu_dtb(&virt_like_dtb()).unwrap(), q).is_err());
        let mut q = parse_qtree(&qtree()).unwrap();
        q.mmio.truncate(2);
        assert!(combine(parse_qemu_dtb(&virt_like_dtb()).unwrap(), q).is_err());
        let mut q = parse_qtree(&qtree()).unwrap();
        q.num_irq = 32;
        assert!(combine(parse_qemu_dtb(&virt_like_dtb()).unwrap(), q).is_err());
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(parse_qemu_dtb(b"garbage"), Err(PlatformError::Dtb(_))));
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.end_node(root).unwrap();
        assert!(matches!(parse_qemu_dtb(&w.finish().unwrap()), Err(PlatformError::Missing(_))));
    }

    #[test]
    fn probe_cache_keeps_reads_back_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("platform");
        let key = "splitvisor platform probe, format 1\nqemu A\n";
        assert_eq!(cached(&cache, key), None, "empty cache");
        let entry = store(&cache, key, &virt_like_dtb(), &qtree()).unwrap();
        assert_eq!(cached(&cache, key), Some(platform()));
        // Another QEMU's key is not answered from this entry.
        assert_eq!(cached(&cache, "splitvisor platform probe, format 1\nqemu B\n"), None);
        // An entry whose key file says otherwise (a hash collision) is not used.
        std::fs::write(entry.join(KEY_FILE), "something else").unwrap();
        assert_eq!(cached(&cache, key), None);
        // Storing again replaces it; no staging directory is left behind.
        store(&cache, key, &virt_like_dtb(), &qtree()).unwrap();
        assert_eq!(cached(&cache, key), Some(platform()));
        // A damaged entry is a miss, not an error or a wrong platform.
        std::fs::write(entry.join(DTB_FILE), b"garbage").unwrap();
        assert_eq!(cached(&cache, key), None);
        std::fs::remove_file(entry.join(QTREE_FILE)).unwrap();
        assert_eq!(cached(&cache, key), None);
        let names: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [entry.file_name().unwrap()], "only the entry is in the cache");
    }

    /// The real thing: QEMU must be installed (the README and CI install it).
    #[test]
    fn probes_the_installed_qemu() {
        // As `splitvisor run` does: install QEMU on first use (this test may
        // be the first of the suite to need it).
        let qemu = crate::setup::ensure_qemu().expect("qemu-system-arm (apt-get install qemu-system-arm)");
        let cache = tempfile::tempdir().unwrap();
        let p = probe(&qemu, 2, 128, Some(cache.path())).expect("probing qemu-system-arm");
        // The answer was kept, and reads back the same.
        let key = identity(&qemu, 2, 128).expect("qemu-system-arm --version");
        assert_eq!(cached(cache.path(), &key).as_ref(), Some(&p));
        assert_eq!(probe(&qemu, 2, 128, Some(cache.path())).expect("from the cache"), p);
        // Another RAM size is another entry.
        assert_ne!(identity(&qemu, 2, 256), Some(key));
        assert_eq!(cached(cache.path(), &identity(&qemu, 2, 256).unwrap()), None);
        assert_eq!(p.ram_base, 0x4000_0000);
        assert_eq!(p.gicd, Span::new(0x0800_0000, 0x1000));
        assert_eq!(p.gicc, Span::new(0x0801_0000, 0x2000));
        assert_eq!(p.gicv, Span::new(0x0804_0000, 0x2000));
        assert_eq!(p.uart, Span::new(0x0900_0000, 0x1000));
        assert_eq!(p.uart_irq.number, 1);
        assert_eq!(p.spis(), 256);
        assert_eq!(p.timer_ppis.map(|t| t.number), [13, 14, 11, 10]);
        assert_eq!(p.uart_clock_hz, 24_000_000);
    }
}
