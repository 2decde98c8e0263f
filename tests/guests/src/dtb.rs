//! Platform discovery from the flattened device tree (DTB) that the Linux
//! boot protocol hands over in r2.
//!
//! The guests never assume a board: the console UART, the RAM and the PSCI
//! conduit all come from here. Parsing is done by the `fdt` crate; this
//! module adds what the guests need on top (status, `stdout-path`, 64-bit
//! `reg` values on a 32-bit CPU) and is unit-tested on the host.
//!
//! `fdt` 0.1 panics on some malformed trees; in a guest that panic is caught
//! by the panic handler, which reports a FAIL line and resets, so a broken
//! tree still ends the test visibly. Its `find_node` is not used: see
//! [`node_at`].
//!
//! Sources: Devicetree Specification v0.4, 5.2 "Header" (magic, totalsize),
//! 2.3.4 "status", 2.3.6 "reg", 3.4 "/memory", 3.6 "/chosen" (stdout-path),
//! 3.3 "/aliases"; Linux `Documentation/devicetree/bindings/arm/psci.yaml`
//! and `serial/pl011.yaml`.

use core::fmt;

use fdt::node::FdtNode;
use fdt::{Fdt, FdtError};

/// The first header word of every DTB (big-endian in memory).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the version-17 header, the smallest valid `totalsize`.
pub const FDT_HEADER_SIZE: u32 = 40;
/// The largest `totalsize` the guests accept. QEMU's trees are at most
/// 1 MiB; anything larger is taken as garbage rather than read through.
pub const MAX_DTB_SIZE: u32 = 2 << 20;
/// A node's `reg` is read for at most this many (address, size) pairs, so
/// that a hostile tree cannot make a walk endless.
pub const MAX_REG_ENTRIES: usize = 64;
/// The `compatible` string of a PL011 (`serial/pl011.yaml`).
pub const PL011_COMPATIBLE: &str = "arm,pl011";
/// The `compatible` strings of a PSCI node, newest first (`arm/psci.yaml`).
pub const PSCI_COMPATIBLES: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// Why there is no usable device tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DtbError {
    /// r2 is 0: no tree was passed (QEMU passes none to an ELF linked near
    /// the base of RAM).
    Null,
    /// r2 is not 4-byte aligned, so it cannot be a DTB's address.
    Misaligned(u32),
    /// Reading the header at r2 raised a data abort.
    Unreadable(u32),
    /// The first word is not [`FDT_MAGIC`].
    BadMagic(u32),
    /// `totalsize` is below the header size or above [`MAX_DTB_SIZE`].
    BadSize(u32),
    /// The blob at this address overlaps the guest's own image: the loader
    /// put it where the guest's code, data or stacks are.
    OverlapsImage(u32),
    /// The `fdt` crate rejected the blob.
    Parse(FdtError),
}

impl DtbError {
    /// Whether this means "no tree was passed" (reported as `NO-DTB`) rather
    /// than "a tree was passed but it is broken" (a failure).
    pub const fn is_absent(self) -> bool {
        matches!(self, Self::Null | Self::Misaligned(_) | Self::Unreadable(_) | Self::BadMagic(_))
    }
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => write!(f, "r2 is 0"),
            Self::Misaligned(addr) => write!(f, "r2 {addr:#010x} is not 4-byte aligned"),
            Self::Unreadable(addr) => write!(f, "reading r2 {addr:#010x} aborts"),
            Self::BadMagic(magic) => {
                write!(f, "first word {magic:#010x} is not the DTB magic {FDT_MAGIC:#010x}")
            }
            Self::BadSize(size) => write!(f, "totalsize {size:#x} is outside {FDT_HEADER_SIZE:#x}..={MAX_DTB_SIZE:#x}"),
            Self::OverlapsImage(addr) => {
                write!(f, "the blob at {addr:#010x} overlaps the guest image")
            }
            Self::Parse(err) => write!(f, "the fdt parser rejects it: {err}"),
        }
    }
}

/// Checks the first two header words, `magic` and `totalsize`, as read from
/// memory (big-endian, already converted to host order), and returns the
/// size of the blob to map.
pub fn check_header(magic: u32, totalsize: u32) -> Result<usize, DtbError> {
    if magic != FDT_MAGIC {
        return Err(DtbError::BadMagic(magic));
    }
    if !(FDT_HEADER_SIZE..=MAX_DTB_SIZE).contains(&totalsize) {
        return Err(DtbError::BadSize(totalsize));
    }
    usize::try_from(totalsize).map_err(|_| DtbError::BadSize(totalsize))
}

/// Parses a whole blob whose header [`check_header`] accepted.
pub fn parse(blob: &[u8]) -> Result<Fdt<'_>, DtbError> {
    Fdt::new(blob).map_err(DtbError::Parse)
}

/// A physical address range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte (saturating at the top of the address space).
    pub const fn end(self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether `addr` lies inside.
    pub const fn contains(self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }

    /// Whether `[start, end)` lies wholly inside (an empty range never does).
    pub const fn contains_range(self, start: u64, end: u64) -> bool {
        start < end && start >= self.base && end <= self.end()
    }

    /// Whether `[start, end)` shares a byte with this region.
    pub const fn overlaps(self, start: u64, end: u64) -> bool {
        start < self.end() && self.base < end
    }
}

impl fmt::Display for Region {
    /// `0x40000000..0x48000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}..{:#010x}", self.base, self.end())
    }
}

/// Reads a big-endian value of one or two cells.
fn cells(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// The regions of a node's `reg` property, in the parent's address space.
///
/// Hand-written over `fdt`'s `raw_reg` because `fdt`'s own `reg()` returns
/// `usize` addresses, which truncates 64-bit values on the 32-bit guest.
/// Entries without a size (`#size-cells = <0>`, e.g. CPU ids) are skipped;
/// walking stops at the first entry that is not one or two cells.
pub fn regs<'a>(node: FdtNode<'_, 'a>) -> impl Iterator<Item = Region> + 'a {
    node.raw_reg()
        .into_iter()
        .flatten()
        .take(MAX_REG_ENTRIES)
        .map_while(|raw| Some((cells(raw.address)?, cells(raw.size))))
        .filter_map(|(base, size)| Some(Region { base, size: size? }))
}

/// The value of a string property, without its terminating NUL.
fn string_property<'a>(node: FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    node.property(name).and_then(|prop| prop.as_str())
}

/// Whether a node is in use: `status` absent, `"okay"` or `"ok"`.
pub fn is_enabled(node: FdtNode<'_, '_>) -> bool {
    match string_property(node, "status") {
        None => true,
        Some(status) => status == "okay" || status == "ok",
    }
}

/// Whether a node's `compatible` list contains `what`.
pub fn is_compatible(node: FdtNode<'_, '_>, what: &str) -> bool {
    node.compatible().is_some_and(|compatible| compatible.all().any(|c| c == what))
}

/// The RAM regions: the `reg` of every enabled node with
/// `device_type = "memory"`.
pub fn memory_regions<'b, 'a>(fdt: &'b Fdt<'a>) -> impl Iterator<Item = Region> + 'b {
    fdt.all_nodes()
        .filter(|node| string_property(*node, "device_type") == Some("memory") && is_enabled(*node))
        .flat_map(regs)
}

/// A device found in the tree: its node name and its first register region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device<'a> {
    /// The node name, e.g. `pl011@9000000`.
    pub name: &'a str,
    /// The first `reg` region.
    pub region: Region,
}

/// Turns a node into a [`Device`] if it is an enabled PL011 with a register
/// region.
fn as_pl011<'a>(node: FdtNode<'_, 'a>) -> Option<Device<'a>> {
    if !is_compatible(node, PL011_COMPATIBLE) || !is_enabled(node) {
        return None;
    }
    let region = regs(node).next()?;
    Some(Device { name: node.name, region })
}

/// The node at an absolute `path` such as `/chosen` or `/pl011@9000000`; a
/// component without a unit address also matches a node that has one (as
/// Linux's `of_find_node_by_path` does).
///
/// Hand-written over `fdt`'s `children()` because `Fdt::find_node` (0.1.5)
/// stops looking at the first FDT_NOP tag between two sibling nodes, and
/// libfdt leaves such tags where it deletes a node: QEMU's `-dtb` handling
/// does, and so may any boot loader.
pub fn node_at<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    let mut node = fdt.find_node("/")?;
    for component in path.strip_prefix('/')?.split('/').filter(|c| !c.is_empty()) {
        node = node.children().find(|child| {
            child.name == component || (!component.contains('@') && child.name.split('@').next() == Some(component))
        })?;
    }
    Some(node)
}

/// The node `/chosen/stdout-path` names, following one alias if it is not a
/// full path (`"serial0:115200n8"`).
fn stdout_node<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    let chosen = node_at(fdt, "/chosen")?;
    let spec = string_property(chosen, "stdout-path")?;
    // Options follow a ':' (Devicetree Specification 3.6).
    let path = spec.split(':').next()?;
    let path = if path.starts_with('/') { path } else { string_property(node_at(fdt, "/aliases")?, path)? };
    node_at(fdt, path)
}

/// The console: the PL011 `/chosen/stdout-path` names if it names one,
/// otherwise the first enabled PL011 in the tree.
pub fn console_pl011<'a>(fdt: &Fdt<'a>) -> Option<Device<'a>> {
    stdout_node(fdt).and_then(as_pl011).or_else(|| fdt.all_nodes().find_map(as_pl011))
}

/// The PSCI node's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psci<'a> {
    /// The node name, e.g. `psci`.
    pub name: &'a str,
    /// The newest PSCI `compatible` string the node lists.
    pub compatible: &'a str,
    /// The conduit, `"hvc"` or `"smc"`, if the node has a `method`.
    pub method: Option<&'a str>,
}

/// The PSCI node, found by its `compatible` strings.
pub fn psci<'a>(fdt: &Fdt<'a>) -> Option<Psci<'a>> {
    fdt.all_nodes().find_map(|node| {
        let compatible = node.compatible()?.all().find(|c| PSCI_COMPATIBLES.contains(c))?;
        Some(Psci { name: node.name, compatible, method: string_property(node, "method") })
    })
}

/// `/chosen/bootargs`, the kernel command line.
pub fn bootargs<'a>(fdt: &Fdt<'a>) -> Option<&'a str> {
    string_property(node_at(fdt, "/chosen")?, "bootargs")
}

/// The first node whose `reg` covers `addr`, if any: an address with no
/// claimant is a gap in the platform's map.
///
/// Only `reg` is considered; `reg` values of nodes below a bus are compared
/// untranslated, which can only claim too much, never too little, for the
/// flat maps of QEMU `virt` and splitvisor.
pub fn claimant<'a>(fdt: &Fdt<'a>, addr: u64) -> Option<&'a str> {
    fdt.all_nodes().find(|node| regs(*node).any(|region| region.contains(addr))).map(|node| node.name)
}

/// The `compatible` strings of the GICv2-compatible interrupt controllers
/// (`interrupt-controller/arm,gic.yaml`) whose distributor and CPU
/// interface the guests drive.
pub const GIC_COMPATIBLES: [&str; 6] =
    ["arm,cortex-a15-gic", "arm,cortex-a7-gic", "arm,gic-400", "arm,cortex-a9-gic", "arm,pl390", "arm,arm11mp-gic"];
/// The `compatible` strings of the architected timer (`timer/arm,arch_timer.yaml`).
pub const TIMER_COMPATIBLES: [&str; 2] = ["arm,armv7-timer", "arm,armv8-timer"];
/// The most CPUs the guests handle (a GICv2 has at most eight CPU
/// interfaces).
pub const MAX_CPUS: usize = 8;
/// A GIC interrupt specifier has three cells: type, number, flags
/// (`arm,gic.yaml`).
pub const GIC_INTERRUPT_CELLS: u32 = 3;
/// First cell of a GIC interrupt specifier: an SPI.
pub const GIC_SPI: u32 = 0;
/// First cell of a GIC interrupt specifier: a PPI.
pub const GIC_PPI: u32 = 1;
/// Low four bits of the flags cell: the trigger type (1 rising edge,
/// 2 falling edge, 4 level high, 8 level low).
pub const IRQ_TYPE_MASK: u32 = 0xf;
/// Trigger types that are level-sensitive.
pub const IRQ_TYPE_LEVEL: u32 = 0xc;

/// The GIC: its distributor and CPU interface frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic<'a> {
    /// The node name, e.g. `intc@8000000`.
    pub name: &'a str,
    /// The compatible string that matched.
    pub compatible: &'a str,
    /// GICD, the first `reg` region.
    pub dist: Region,
    /// GICC, the second `reg` region.
    pub cpu: Region,
    /// The node's phandle, if it has one.
    pub phandle: Option<u32>,
}

/// Reads a one-cell big-endian property.
fn u32_property(node: FdtNode<'_, '_>, name: &str) -> Option<u32> {
    let value = node.property(name)?.value;
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// The first enabled GICv2-compatible interrupt controller with both a
/// distributor and a CPU interface region.
pub fn gic<'a>(fdt: &Fdt<'a>) -> Option<Gic<'a>> {
    fdt.all_nodes().find_map(|node| {
        let compatible = node.compatible()?.all().find(|c| GIC_COMPATIBLES.contains(c))?;
        if !is_enabled(node) {
            return None;
        }
        let mut regs = regs(node);
        let (dist, cpu) = (regs.next()?, regs.next()?);
        let phandle = u32_property(node, "phandle").or_else(|| u32_property(node, "linux,phandle"));
        Some(Gic { name: node.name, compatible, dist, cpu, phandle })
    })
}

/// An interrupt as a GIC INTID, with its trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The GIC interrupt ID (PPIs 16-31, SPIs from 32).
    pub intid: u32,
    /// Whether the specifier says level-sensitive.
    pub level: bool,
}

/// Decodes one three-cell GIC interrupt specifier.
pub fn gic_interrupt(kind: u32, number: u32, flags: u32) -> Option<Interrupt> {
    let intid = match kind {
        GIC_SPI if number < 988 => number + 32,
        GIC_PPI if number < 16 => number + 16,
        _ => return None,
    };
    Some(Interrupt { intid, level: flags & IRQ_TYPE_MASK & IRQ_TYPE_LEVEL != 0 })
}

/// The `n`th interrupt of `node`, if the node's interrupt parent (its own
/// `interrupt-parent`, else the root's) is `gic` and the GIC uses three
/// cells.
pub fn interrupt(fdt: &Fdt<'_>, gic: &Gic<'_>, node: FdtNode<'_, '_>, n: usize) -> Option<Interrupt> {
    let parent =
        u32_property(node, "interrupt-parent").or_else(|| u32_property(node_at(fdt, "/")?, "interrupt-parent"));
    if parent.is_none() || parent != gic.phandle {
        return None;
    }
    let controller = fdt.all_nodes().find(|c| gic.phandle.is_some() && u32_property(*c, "phandle") == gic.phandle)?;
    if u32_property(controller, "#interrupt-cells") != Some(GIC_INTERRUPT_CELLS) {
        return None;
    }
    let cells = node.property("interrupts")?.value;
    let at = n.checked_mul(12)?;
    let spec = cells.get(at..at.checked_add(12)?)?;
    let cell = |i: usize| spec.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    gic_interrupt(cell(0)?, cell(1)?, cell(2)?)
}

/// The architected timer's interrupts, in the binding's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerIrqs {
    /// The Non-secure physical timer (CNTP_*): the binding's second entry.
    pub phys: Interrupt,
    /// The virtual timer (CNTV_*): the binding's third entry.
    pub virt: Interrupt,
}

/// The timer node's physical and virtual timer interrupts.
pub fn timer_irqs(fdt: &Fdt<'_>, gic: &Gic<'_>) -> Option<TimerIrqs> {
    let node = fdt.all_nodes().find(|node| {
        node.compatible().is_some_and(|c| c.all().any(|c| TIMER_COMPATIBLES.contains(&c))) && is_enabled(*node)
    })?;
    Some(TimerIrqs { phys: interrupt(fdt, gic, node, 1)?, virt: interrupt(fdt, gic, node, 2)? })
}

/// The interrupt of the console PL011 ([`console_pl011`]).
pub fn console_interrupt(fdt: &Fdt<'_>, gic: &Gic<'_>) -> Option<Interrupt> {
    let uart = console_pl011(fdt)?;
    let node = fdt.all_nodes().find(|node| node.name == uart.name && as_pl011(*node).is_some())?;
    interrupt(fdt, gic, node, 0)
}

/// The CPUs under `/cpus`: their MPIDR affinity values (`reg`) in tree
/// order, at most [`MAX_CPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpus {
    ids: [u32; MAX_CPUS],
    count: usize,
    /// How many CPU nodes there were beyond [`MAX_CPUS`] (or with a `reg`
    /// the guests cannot use).
    pub ignored: usize,
}

impl Cpus {
    /// The MPIDR affinity values.
    pub fn ids(&self) -> &[u32] {
        self.ids.get(..self.count).unwrap_or(&[])
    }

    /// How many CPUs.
    pub const fn count(&self) -> usize {
        self.count
    }

    /// The logical index (tree order) of the CPU with this MPIDR (only its
    /// affinity fields, bits \[23:0\], are compared).
    pub fn index_of(&self, mpidr: u32) -> Option<usize> {
        self.ids().iter().position(|id| id & MPIDR_AFFINITY_MASK == mpidr & MPIDR_AFFINITY_MASK)
    }
}

/// MPIDR bits \[23:0\]: Aff2, Aff1, Aff0.
pub const MPIDR_AFFINITY_MASK: u32 = 0x00ff_ffff;

/// The enabled `device_type = "cpu"` nodes under `/cpus`.
pub fn cpus(fdt: &Fdt<'_>) -> Option<Cpus> {
    let mut found = Cpus { ids: [0; MAX_CPUS], count: 0, ignored: 0 };
    for node in node_at(fdt, "/cpus")?.children() {
        if string_property(node, "device_type") != Some("cpu") || !is_enabled(node) {
            continue;
        }
        let id = node.raw_reg().into_iter().flatten().next().and_then(|reg| cells(reg.address));
        match (id.and_then(|id| u32::try_from(id).ok()), found.ids.get_mut(found.count)) {
            (Some(id), Some(slot)) => {
                *slot = id;
                found.count += 1;
            }
            _ => found.ignored += 1,
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;
    use std::vec::Vec;
    use vm_fdt::FdtWriter;

    /// A tree shaped like QEMU virt's, with the details the discovery must
    /// get right: a disabled PL011 listed first, a second UART that
    /// `stdout-path` names through an alias, and 64-bit memory cells.
    fn sample(stdout_path: Option<&str>) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("compatible", "linux,dummy-virt").unwrap();
        w.property_u32("interrupt-parent", GIC_PHANDLE).unwrap();

        // A node that `with_nop_node` turns into FDT_NOP tags, as libfdt's
        // fdt_nop_node() does (QEMU's -dtb handling leaves such runs), in
        // front of the nodes looked up by path.
        let doomed = w.begin_node("nopme").unwrap();
        w.end_node(doomed).unwrap();

        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("bootargs", "console=ttyAMA0 test=1").unwrap();
        if let Some(path) = stdout_path {
            w.property_string("stdout-path", path).unwrap();
        }
        w.end_node(chosen).unwrap();

        let aliases = w.begin_node("aliases").unwrap();
        w.property_string("serial1", "/pl011@9001000").unwrap();
        w.property_string("bogus", "not-a-path").unwrap();
        w.end_node(aliases).unwrap();

        let memory = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x0800_0000]).unwrap();
        w.end_node(memory).unwrap();

        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        let cpu = w.begin_node("cpu@0").unwrap();
        w.property_u32("reg", 0).unwrap();
        w.end_node(cpu).unwrap();
        let cpu = w.begin_node("cpu@1").unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_u32("reg", 0x101).unwrap();
        w.end_node(cpu).unwrap();
        let cpu = w.begin_node("cpu@2").unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_string("status", "disabled").unwrap();
        w.property_u32("reg", 2).unwrap();
        w.end_node(cpu).unwrap();
        let cpu = w.begin_node("cpu@3").unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_u32("reg", 3).unwrap();
        w.end_node(cpu).unwrap();
        w.end_node(cpus).unwrap();

        let intc = w.begin_node("intc@8000000").unwrap();
        w.property_string("compatible", "arm,cortex-a15-gic").unwrap();
        w.property_u32("#interrupt-cells", 3).unwrap();
        w.property_null("interrupt-controller").unwrap();
        w.property_array_u64("reg", &[0x0800_0000, 0x1000, 0x0801_0000, 0x2000]).unwrap();
        w.property_u32("phandle", GIC_PHANDLE).unwrap();
        w.end_node(intc).unwrap();

        let timer = w.begin_node("timer").unwrap();
        w.property_string("compatible", "arm,armv7-timer").unwrap();
        w.property_array_u32("interrupts", &[1, 13, 0xf04, 1, 14, 0xf04, 1, 11, 0xf04, 1, 10, 0xf04]).unwrap();
        w.end_node(timer).unwrap();

        let psci = w.begin_node("psci").unwrap();
        w.property_string_list(
            "compatible",
            ["arm,psci-1.0".into(), "arm,psci-0.2".into(), "arm,psci".into()].to_vec(),
        )
        .unwrap();
        w.property_string("method", "hvc").unwrap();
        w.end_node(psci).unwrap();

        let secure = w.begin_node("pl011@9040000").unwrap();
        w.property_string_list("compatible", ["arm,pl011".into(), "arm,primecell".into()].to_vec()).unwrap();
        w.property_array_u64("reg", &[0x0904_0000, 0x1000]).unwrap();
        w.property_string("status", "disabled").unwrap();
        w.end_node(secure).unwrap();

        let uart0 = w.begin_node("pl011@9000000").unwrap();
        w.property_string_list("compatible", ["arm,pl011".into(), "arm,primecell".into()].to_vec()).unwrap();
        w.property_array_u64("reg", &[0x0900_0000, 0x1000]).unwrap();
        w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        w.end_node(uart0).unwrap();

        let uart1 = w.begin_node("pl011@9001000").unwrap();
        w.property_string_list("compatible", ["arm,pl011".into(), "arm,primecell".into()].to_vec()).unwrap();
        w.property_array_u64("reg", &[0x0900_1000, 0x1000]).unwrap();
        w.property_array_u32("interrupts", &[0, 7, 1]).unwrap();
        // Its own interrupt parent: a controller that is not the GIC.
        w.property_u32("interrupt-parent", 99).unwrap();
        w.property_string("status", "okay").unwrap();
        w.end_node(uart1).unwrap();

        let high = w.begin_node("pcie@10000000").unwrap();
        w.property_array_u64("reg", &[0x40_1000_0000, 0x1000_0000]).unwrap();
        w.end_node(high).unwrap();

        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    const GIC_PHANDLE: u32 = 0x8001;

    #[test]
    fn gic_timer_and_uart_interrupts() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        let gic = gic(&fdt).unwrap();
        assert_eq!(gic.dist, Region { base: 0x0800_0000, size: 0x1000 });
        assert_eq!(gic.cpu, Region { base: 0x0801_0000, size: 0x2000 });
        assert_eq!(gic.phandle, Some(GIC_PHANDLE));
        let timer = timer_irqs(&fdt, &gic).unwrap();
        assert_eq!(timer.phys, Interrupt { intid: 30, level: true });
        assert_eq!(timer.virt, Interrupt { intid: 27, level: true });
        assert_eq!(console_interrupt(&fdt, &gic), Some(Interrupt { intid: 33, level: true }));
        // The second UART's interrupt parent is not the GIC: no INTID.
        let blob = sample(Some("serial1"));
        let fdt = parse(&blob).unwrap();
        assert_eq!(console_interrupt(&fdt, &gic), None);
    }

    #[test]
    fn interrupt_specifiers() {
        assert_eq!(gic_interrupt(GIC_SPI, 0, 1), Some(Interrupt { intid: 32, level: false }));
        assert_eq!(gic_interrupt(GIC_PPI, 15, 8), Some(Interrupt { intid: 31, level: true }));
        assert_eq!(gic_interrupt(GIC_PPI, 16, 4), None);
        assert_eq!(gic_interrupt(2, 1, 4), None);
        assert_eq!(gic_interrupt(GIC_SPI, 988, 4), None);
    }

    #[test]
    fn cpus_in_tree_order_without_disabled_ones() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        let cpus = cpus(&fdt).unwrap();
        // cpu@0 has no device_type, cpu@2 is disabled.
        assert_eq!(cpus.ids(), [0x101, 3]);
        assert_eq!(cpus.index_of(0x8000_0101), Some(0));
        assert_eq!(cpus.index_of(3), Some(1));
        assert_eq!(cpus.index_of(0), None);
        assert_eq!(cpus.ignored, 0);
    }

    /// `blob` with the empty node `nopme` overwritten by FDT_NOP tags.
    fn with_nop_node(mut blob: Vec<u8>) -> Vec<u8> {
        let mut node = Vec::new();
        node.extend_from_slice(&1u32.to_be_bytes()); // FDT_BEGIN_NODE
        node.extend_from_slice(b"nopme\0\0\0");
        node.extend_from_slice(&2u32.to_be_bytes()); // FDT_END_NODE
        let at = blob.windows(node.len()).position(|w| w == node).unwrap();
        for word in blob[at..at + node.len()].chunks_mut(4) {
            word.copy_from_slice(&4u32.to_be_bytes()); // FDT_NOP
        }
        blob
    }

    #[test]
    fn nop_tags_between_nodes_hide_nothing() {
        let blob = with_nop_node(sample(Some("serial1")));
        let fdt = parse(&blob).unwrap();
        assert!(fdt.all_nodes().all(|node| node.name != "nopme"));
        // Everything after the NOP run must still be found.
        assert_eq!(console_pl011(&fdt).unwrap().name, "pl011@9001000");
        assert_eq!(bootargs(&fdt), Some("console=ttyAMA0 test=1"));
        assert_eq!(psci(&fdt).unwrap().method, Some("hvc"));
        assert_eq!(memory_regions(&fdt).count(), 1);
        assert_eq!(claimant(&fdt, 0x40_1000_0000), Some("pcie@10000000"));
    }

    #[test]
    fn paths() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        let root = node_at(&fdt, "/").unwrap();
        assert!(is_compatible(root, "linux,dummy-virt"));
        assert_eq!(node_at(&fdt, "/cpus/cpu@0").unwrap().name, "cpu@0");
        assert_eq!(node_at(&fdt, "/cpus/cpu").unwrap().name, "cpu@0");
        assert_eq!(node_at(&fdt, "/memory").unwrap().name, "memory@40000000");
        assert!(node_at(&fdt, "/memory@50000000").is_none());
        assert!(node_at(&fdt, "/cpus/cpu@0/nothing").is_none());
        assert!(node_at(&fdt, "chosen").is_none(), "relative paths are not paths");
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(FDT_MAGIC, 0x1000), Ok(0x1000));
        assert_eq!(check_header(0xedfe_0dd0, 0x1000), Err(DtbError::BadMagic(0xedfe_0dd0)));
        assert_eq!(check_header(FDT_MAGIC, 39), Err(DtbError::BadSize(39)));
        assert_eq!(check_header(FDT_MAGIC, MAX_DTB_SIZE + 1), Err(DtbError::BadSize(MAX_DTB_SIZE + 1)));
        assert!(DtbError::Null.is_absent());
        assert!(DtbError::BadMagic(0).is_absent());
        assert!(!DtbError::BadSize(0).is_absent());
        assert!(!DtbError::Parse(FdtError::BufferTooSmall).is_absent());
    }

    #[test]
    fn truncated_blob_is_a_parse_error() {
        let blob = sample(None);
        assert!(parse(&blob).is_ok());
        assert_eq!(parse(&blob[..blob.len() / 2]).err(), Some(DtbError::Parse(FdtError::BufferTooSmall)));
    }

    #[test]
    fn first_enabled_pl011_without_stdout_path() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        let uart = console_pl011(&fdt).unwrap();
        assert_eq!(uart.name, "pl011@9000000");
        assert_eq!(uart.region, Region { base: 0x0900_0000, size: 0x1000 });
    }

    #[test]
    fn stdout_path_wins_directly_and_through_an_alias() {
        for path in ["/pl011@9001000", "serial1:115200n8", "serial1"] {
            let blob = sample(Some(path));
            let fdt = parse(&blob).unwrap();
            assert_eq!(console_pl011(&fdt).unwrap().name, "pl011@9001000", "stdout-path {path}");
        }
    }

    #[test]
    fn unusable_stdout_path_falls_back() {
        // A disabled UART, an alias that is no path, and a missing node.
        for path in ["/pl011@9040000", "bogus", "/nothing@0", "serial7"] {
            let blob = sample(Some(path));
            let fdt = parse(&blob).unwrap();
            assert_eq!(console_pl011(&fdt).unwrap().name, "pl011@9000000", "stdout-path {path}");
        }
    }

    #[test]
    fn memory_psci_and_bootargs() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        let memory: Vec<Region> = memory_regions(&fdt).collect();
        assert_eq!(memory, [Region { base: 0x4000_0000, size: 0x0800_0000 }]);
        let psci = psci(&fdt).unwrap();
        assert_eq!(psci.compatible, "arm,psci-1.0");
        assert_eq!(psci.method, Some("hvc"));
        assert_eq!(bootargs(&fdt), Some("console=ttyAMA0 test=1"));
    }

    #[test]
    fn claimant_finds_devices_ram_and_gaps() {
        let blob = sample(None);
        let fdt = parse(&blob).unwrap();
        assert_eq!(claimant(&fdt, 0x0900_0ffc), Some("pl011@9000000"));
        assert_eq!(claimant(&fdt, 0x0904_0000), Some("pl011@9040000"));
        assert_eq!(claimant(&fdt, 0x4000_8000), Some("memory@40000000"));
        assert_eq!(claimant(&fdt, 0x0980_0000), None);
        // 64-bit regions are compared as 64-bit values: the high PCIe window
        // does not claim its truncated low alias, and CPU ids claim nothing.
        assert_eq!(claimant(&fdt, 0x1000_0000), None);
        assert_eq!(claimant(&fdt, 0x40_1000_0000), Some("pcie@10000000"));
        assert_eq!(claimant(&fdt, 0), None);
    }

    #[test]
    fn regions() {
        let r = Region { base: 0x4000_0000, size: 0x1000 };
        assert!(r.contains(0x4000_0fff));
        assert!(!r.contains(0x4000_1000));
        assert!(r.contains_range(0x4000_0000, 0x4000_1000));
        assert!(!r.contains_range(0x4000_0000, 0x4000_1001));
        assert!(!r.contains_range(0x4000_0010, 0x4000_0010));
        assert!(r.overlaps(0x3fff_ffff, 0x4000_0001));
        assert!(!r.overlaps(0x4000_1000, 0x4000_2000));
        assert_eq!(r.to_string(), "0x40000000..0x40001000");
        let top = Region { base: u64::MAX - 1, size: 16 };
        assert_eq!(top.end(), u64::MAX);
    }
}
