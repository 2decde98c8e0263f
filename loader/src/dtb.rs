//! Device trees: the guest's, written with `vm-fdt`; a user's own (`--dtb`),
//! checked and given the guest's memory, command line and initrd as QEMU's
//! `-dtb` does; and a structural check that every blob passes before the
//! `fdt` crate reads it.
//!
//! The guest device tree mirrors what QEMU `virt` gives a Linux guest, cut
//! down to the devices the guest has under splitvisor: memory, the CPUs with
//! PSCI over HVC, the GICv2 distributor and CPU interface (no virtualization
//! extension regions: the guest has none), the architected timer, the PL011
//! and its clock, and `/chosen`.

use fdt::node::FdtNode;
use fdt::Fdt;
use vm_fdt::{FdtReserveEntry, FdtWriter};

use crate::images::Span;

/// The flattened device tree magic.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// The size of a version-17 header.
const HEADER_SIZE: usize = 40;
/// Structure block tokens (Devicetree Specification v0.4, section 5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// The `fdt` crate keeps a 64-entry stack of parents.
const MAX_DEPTH: usize = 63;

/// Interrupt specifier type cell for a GIC SPI and PPI
/// (`interrupt-controller/arm,gic.yaml`).
pub const GIC_SPI: u32 = 0;
/// See [`GIC_SPI`].
pub const GIC_PPI: u32 = 1;
/// Bits 15:8 of a GIC PPI's flags cell: the CPUs the PPI is wired to.
const GIC_PPI_CPU_MASK_SHIFT: u32 = 8;
/// Bits 3:0 of a GIC interrupt's flags cell: the trigger type.
pub const GIC_TRIGGER_MASK: u32 = 0xf;

/// PSCI 0.1 function IDs that QEMU lists in its `/psci` node for
/// compatibility with old kernels (the PSCI 0.2 SMC32 IDs, Arm DEN 0022,
/// section 5.1).
const PSCI_CPU_SUSPEND: u32 = 0x8400_0001;
const PSCI_CPU_OFF: u32 = 0x8400_0002;
const PSCI_CPU_ON: u32 = 0x8400_0003;
const PSCI_MIGRATE: u32 = 0x8400_0005;

/// Phandles of the guest device tree.
const PHANDLE_GIC: u32 = 1;
const PHANDLE_CLOCK: u32 = 2;

/// What is wrong with a device tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DtbError {
    /// Not a well-formed flattened device tree.
    #[error("not a valid flattened device tree: {0}")]
    Malformed(String),
    /// Well-formed, but missing something splitvisor needs.
    #[error("device tree {0}")]
    Content(String),
    /// vm-fdt refused to write it.
    #[error("cannot write the device tree: {0}")]
    Write(String),
}

fn malformed(what: impl Into<String>) -> DtbError {
    DtbError::Malformed(what.into())
}

impl From<vm_fdt::Error> for DtbError {
    fn from(e: vm_fdt::Error) -> Self {
        DtbError::Write(e.to_string())
    }
}

/// A big-endian reader over a byte slice that never panics.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, DtbError> {
        let end = self.pos.checked_add(4).ok_or_else(|| malformed("offset overflow"))?;
        let word: [u8; 4] = self
            .bytes
            .get(self.pos..end)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| malformed("structure block ends inside a token"))?;
        self.pos = end;
        Ok(u32::from_be_bytes(word))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DtbError> {
        let end = self.pos.checked_add(len).ok_or_else(|| malformed("length overflow"))?;
        let slice = self.bytes.get(self.pos..end).ok_or_else(|| malformed("a value runs past its block"))?;
        // Everything in the structure block is padded to 4 bytes.
        self.pos = end.checked_add(3).ok_or_else(|| malformed("length overflow"))? & !3;
        Ok(slice)
    }

    fn cstr(&mut self) -> Result<&'a str, DtbError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| malformed("unterminated node name"))?;
        let name = self.take(len + 1)?;
        std::str::from_utf8(name.get(..len).unwrap_or_default()).map_err(|_| malformed("node name is not UTF-8"))
    }
}

fn header_word(bytes: &[u8], index: usize) -> Result<u32, DtbError> {
    let off = index * 4;
    let word: [u8; 4] =
        bytes.get(off..off + 4).and_then(|w| w.try_into().ok()).ok_or_else(|| malformed("shorter than its header"))?;
    Ok(u32::from_be_bytes(word))
}

fn block(bytes: &[u8], offset: u32, size: u32, what: &str) -> Result<std::ops::Range<usize>, DtbError> {
    let start = offset as usize;
    let end = start.checked_add(size as usize).ok_or_else(|| malformed(format!("{what} block overflows")))?;
    if end > bytes.len() {
        return Err(malformed(format!("{what} block lies outside the blob")));
    }
    Ok(start..end)
}

/// A checked device tree: a copy of the input, without NOP tokens, in which
/// every token, name and string offset has been verified, so that the `fdt`
/// crate can read it without meeting anything it would panic on (it does on
/// malformed input, and on NOPs between properties; libfdt leaves those
/// behind when it deletes).
#[derive(Clone, Debug)]
pub struct CheckedDtb {
    blob: Vec<u8>,
    boot_cpuid_phys: u32,
    reservations: Vec<(u64, u64)>,
}

impl CheckedDtb {
    /// Check `bytes` (the `totalsize` from the header may be less than the
    /// length of `bytes`: QEMU pads its dump to 1 MiB).
    pub fn new(bytes: &[u8]) -> Result<CheckedDtb, DtbError> {
        if header_word(bytes, 0)? != FDT_MAGIC {
            return Err(malformed("bad magic (not a .dtb file)"));
        }
        let total = header_word(bytes, 1)? as usize;
        if total < HEADER_SIZE || total > bytes.len() {
            return Err(malformed(format!("header size {total} does not match the file ({} bytes)", bytes.len())));
        }
        let bytes = bytes.get(..total).unwrap_or_default();
        let off_struct = header_word(bytes, 2)?;
        let off_strings = header_word(bytes, 3)?;
        let off_rsvmap = header_word(bytes, 4)?;
        let version = header_word(bytes, 5)?;
        let last_compatible = header_word(bytes, 6)?;
        let boot_cpuid_phys = header_word(bytes, 7)?;
        let size_strings = header_word(bytes, 8)?;
        let size_struct = header_word(bytes, 9)?;
        if version < 17 || last_compatible > 17 {
            return Err(malformed(format!("version {version} (compatible with {last_compatible}); 17 is needed")));
        }
        let strings = bytes.get(block(bytes, off_strings, size_strings, "strings")?).unwrap_or_default();
        let structure = bytes.get(block(bytes, off_struct, size_struct, "structure")?).unwrap_or_default();

        let mut reservations = Vec::new();
        let mut rsv = Reader { bytes, pos: off_rsvmap as usize };
        loop {
            let hi = rsv.u32().map_err(|_| malformed("memory reservation map runs past the blob"))?;
            let lo = rsv.u32().map_err(|_| malformed("memory reservation map runs past the blob"))?;
            let size_hi = rsv.u32().map_err(|_| malformed("memory reservation map runs past the blob"))?;
            let size_lo = rsv.u32().map_err(|_| malformed("memory reservation map runs past the blob"))?;
            let (address, size) =
                ((u64::from(hi) << 32) | u64::from(lo), (u64::from(size_hi) << 32) | u64::from(size_lo));
            if address == 0 && size == 0 {
                break;
            }
            reservations.push((address, size));
        }

        let mut out_struct: Vec<u8> = Vec::with_capacity(structure.len());
        let mut r = Reader { bytes: structure, pos: 0 };
        let mut depth = 0usize;
        let mut root_done = false;
        // Per open node: whether a child node has started (properties must
        // come first).
        let mut seen_child: Vec<bool> = Vec::new();
        loop {
            let token = r.u32()?;
            match token {
                FDT_NOP => continue,
                FDT_BEGIN_NODE => {
                    if root_done {
                        return Err(malformed("a second root node"));
                    }
                    let name = r.cstr()?;
                    if depth == 0 && !name.is_empty() {
                        return Err(malformed("the root node has a name"));
                    }
                    if depth > 0 && name.is_empty() {
                        return Err(malformed("a node without a name"));
                    }
                    if let Some(parent) = seen_child.last_mut() {
                        *parent = true;
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(malformed("nodes nested too deeply"));
                    }
                    seen_child.push(false);
                    out_struct.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
                    push_padded(&mut out_struct, name.as_bytes(), true);
                }
                FDT_PROP => {
                    if depth == 0 {
                        return Err(malformed("a property outside any node"));
                    }
                    if seen_child.last() == Some(&true) {
                        return Err(malformed("a property after a child node"));
                    }
                    let len = r.u32()?;
                    let name_offset = r.u32()?;
                    let value = r.take(len as usize)?;
                    let name = strings
                        .get(name_offset as usize..)
                        .and_then(|s| s.iter().position(|&b| b == 0).and_then(|n| s.get(..n)))
                        .ok_or_else(|| malformed("a property name outside the strings block"))?;
                    let name = std::str::from_utf8(name).map_err(|_| malformed("a property name is not UTF-8"))?;
                    // The specification's character set (section 2.2.4). It
                    // also keeps absolute paths out of `/aliases`, which the
                    // `fdt` crate would otherwise follow for ever.
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b",._+?#-".contains(&b)) {
                        return Err(malformed(format!("invalid property name {name:?}")));
                    }
                    if name.starts_with('#') && name.ends_with("-cells") && value.len() != 4 {
                        return Err(malformed(format!("property {name} is not one cell")));
                    }
                    out_struct.extend_from_slice(&FDT_PROP.to_be_bytes());
                    out_struct.extend_from_slice(&len.to_be_bytes());
                    out_struct.extend_from_slice(&name_offset.to_be_bytes());
                    push_padded(&mut out_struct, value, false);
                }
                FDT_END_NODE => {
                    if depth == 0 {
                        return Err(malformed("an END_NODE without a node"));
                    }
                    depth -= 1;
                    seen_child.pop();
                    if depth == 0 {
                        root_done = true;
                    }
                    out_struct.extend_from_slice(&FDT_END_NODE.to_be_bytes());
                }
                FDT_END => {
                    if !root_done {
                        return Err(malformed("the structure block ends inside a node"));
                    }
                    out_struct.extend_from_slice(&FDT_END.to_be_bytes());
                    break;
                }
                other => return Err(malformed(format!("unknown structure token {other:#x}"))),
            }
        }

        // Re-assemble: header, reservation map, structure, strings.
        let rsv_off = align8(HEADER_SIZE);
        let struct_off = rsv_off + (reservations.len() + 1) * 16;
        let strings_off = struct_off + out_struct.len();
        let total = strings_off + strings.len();
        let mut blob = Vec::with_capacity(total);
        let to_u32 = |n: usize| u32::try_from(n).map_err(|_| malformed("too large"));
        for word in [
            FDT_MAGIC,
            to_u32(total)?,
            to_u32(struct_off)?,
            to_u32(strings_off)?,
            to_u32(rsv_off)?,
            17,
            16,
            boot_cpuid_phys,
            to_u32(strings.len())?,
            to_u32(out_struct.len())?,
        ] {
            blob.extend_from_slice(&word.to_be_bytes());
        }
        blob.resize(rsv_off, 0);
        for (address, size) in reservations.iter().chain([&(0, 0)]) {
            blob.extend_from_slice(&address.to_be_bytes());
            blob.extend_from_slice(&size.to_be_bytes());
        }
        blob.extend_from_slice(&out_struct);
        blob.extend_from_slice(strings);
        Ok(CheckedDtb { blob, boot_cpuid_phys, reservations })
    }

    /// The tree, for reading with the `fdt` crate.
    pub fn fdt(&self) -> Result<Fdt<'_>, DtbError> {
        Fdt::new(&self.blob).map_err(|e| malformed(format!("{e:?}")))
    }

    /// The checked blob.
    pub fn bytes(&self) -> &[u8] {
        &self.blob
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn push_padded(out: &mut Vec<u8>, bytes: &[u8], nul: bool) {
    out.extend_from_slice(bytes);
    if nul {
        out.push(0);
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A property's value as big-endian cells, if its length is a multiple of 4.
pub fn cells(value: &[u8]) -> Option<Vec<u32>> {
    if !value.len().is_multiple_of(4) {
        return None;
    }
    Some(value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A property's value as NUL-separated strings.
pub fn strings(value: &[u8]) -> Vec<&str> {
    value.strip_suffix(&[0]).unwrap_or(value).split(|&b| b == 0).filter_map(|s| std::str::from_utf8(s).ok()).collect()
}

/// The `#address-cells` and `#size-cells` a node gives its children
/// (defaults 2 and 1, Devicetree Specification section 2.3.5).
pub fn child_cells(node: FdtNode<'_, '_>) -> (usize, usize) {
    let get = |name: &str, default: usize| {
        node.property(name)
            .and_then(|p| cells(p.value))
            .and_then(|c| c.first().copied())
            .map_or(default, |c| c as usize)
    };
    (get("#address-cells", 2), get("#size-cells", 1))
}

/// Decode a `reg` value with the given cell counts (1 or 2 each).
pub fn reg_entries(value: &[u8], address_cells: usize, size_cells: usize) -> Option<Vec<Span>> {
    if !(1..=2).contains(&address_cells) || !(1..=2).contains(&size_cells) {
        return None;
    }
    let c = cells(value)?;
    let stride = address_cells + size_cells;
    if c.is_empty() || c.len() % stride != 0 {
        return None;
    }
    let number = |cs: &[u32]| cs.iter().fold(0u64, |acc, &x| (acc << 32) | u64::from(x));
    Some(c.chunks_exact(stride).map(|e| Span::new(number(&e[..address_cells]), number(&e[address_cells..]))).collect())
}

/// A guest interrupt as a device tree names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtIrq {
    /// The interrupt number within its type (SPI n is INTID 32 + n, PPI n
    /// is INTID 16 + n).
    pub number: u32,
    /// The trigger type bits of the flags cell (`IRQ_TYPE_*`).
    pub trigger: u32,
}

/// Everything the guest device tree says, all in guest addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDtbSpec {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest RAM.
    pub ram: Span,
    /// The GICv2 distributor.
    pub gicd: Span,
    /// The GICv2 CPU interface.
    pub gicc: Span,
    /// The PL011.
    pub uart: Span,
    /// The PL011's SPI.
    pub uart_irq: DtIrq,
    /// The PL011's reference clock, in Hz.
    pub uart_clock_hz: u32,
    /// The timer's PPIs in binding order: secure physical, non-secure
    /// physical, virtual, hypervisor.
    pub timer_ppis: [DtIrq; 4],
    /// Whether the timer node says `always-on`.
    pub timer_always_on: bool,
    /// `/chosen/bootargs` (left out when empty, as QEMU does).
    pub cmdline: String,
    /// The initrd, for `/chosen/linux,initrd-start` and `-end`.
    pub initrd: Option<Span>,
}

impl GuestDtbSpec {
    /// The path of the UART node, for `/chosen/stdout-path`.
    fn uart_node(&self) -> String {
        format!("pl011@{:x}", self.uart.start)
    }
}

fn reg_cells(spans: &[Span]) -> Vec<u64> {
    spans.iter().flat_map(|s| [s.start, s.size]).collect()
}

/// Write the guest device tree.
pub fn generate(spec: &GuestDtbSpec) -> Result<Vec<u8>, DtbError> {
    if spec.vcpus == 0 || usize::from(spec.vcpus) > ipc::MAX_VCPUS {
        return Err(DtbError::Content(format!("for {} vCPUs (1 to {})", spec.vcpus, ipc::MAX_VCPUS)));
    }
    let ppi_cpus = ((1u32 << spec.vcpus) - 1) << GIC_PPI_CPU_MASK_SHIFT;
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_u32("interrupt-parent", PHANDLE_GIC)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("#address-cells", 2)?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", "linux,dummy-virt")?;

    let psci = w.begin_node("psci")?;
    w.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into(), "arm,psci".into()])?;
    w.property_string("method", "hvc")?;
    w.property_u32("cpu_suspend", PSCI_CPU_SUSPEND)?;
    w.property_u32("cpu_off", PSCI_CPU_OFF)?;
    w.property_u32("cpu_on", PSCI_CPU_ON)?;
    w.property_u32("migrate", PSCI_MIGRATE)?;
    w.end_node(psci)?;

    let memory = w.begin_node(&format!("memory@{:x}", spec.ram.start))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &reg_cells(&[spec.ram]))?;
    w.end_node(memory)?;

    let uart = w.begin_node(&spec.uart_node())?;
    w.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()])?;
    w.property_array_u64("reg", &reg_cells(&[spec.uart]))?;
    w.property_array_u32("interrupts", &[GIC_SPI, spec.uart_irq.number, spec.uart_irq.trigger])?;
    w.property_array_u32("clocks", &[PHANDLE_CLOCK, PHANDLE_CLOCK])?;
    w.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    w.end_node(uart)?;

    let gic = w.begin_node(&format!("intc@{:x}", spec.gicd.start))?;
    w.property_string("compatible", "arm,cortex-a15-gic")?;
    w.property_u32("#interrupt-cells", 3)?;
    // No child nodes, and no interrupt-map may address through it (dtc
    // warns about an interrupt provider without it).
    w.property_u32("#address-cells", 0)?;
    w.property_null("interrupt-controller")?;
    w.property_array_u64("reg", &reg_cells(&[spec.gicd, spec.gicc]))?;
    w.property_phandle(PHANDLE_GIC)?;
    w.end_node(gic)?;

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for n in 0..u32::from(spec.vcpus) {
        let cpu = w.begin_node(&format!("cpu@{n:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,cortex-a15")?;
        w.property_u32("reg", n)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;

    let timer = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv7-timer")?;
    let irqs: Vec<u32> = spec.timer_ppis.iter().flat_map(|irq| [GIC_PPI, irq.number, ppi_cpus | irq.trigger]).collect();
    w.property_array_u32("interrupts", &irqs)?;
    if spec.timer_always_on {
        w.property_null("always-on")?;
    }
    w.end_node(timer)?;

    let clock = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", spec.uart_clock_hz)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_phandle(PHANDLE_CLOCK)?;
    w.end_node(clock)?;

    let chosen = w.begin_node("chosen")?;
    if !spec.cmdline.is_empty() {
        w.property_string("bootargs", &spec.cmdline)?;
    }
    w.property_string("stdout-path", &format!("/{}", spec.uart_node()))?;
    if let Some(initrd) = spec.initrd {
        w.property_u64("linux,initrd-start", initrd.start)?;
        w.property_u64("linux,initrd-end", initrd.end())?;
    }
    w.end_node(chosen)?;

    w.end_node(root)?;
    Ok(w.finish()?)
}

/// What QEMU's `-dtb` changes in a user's device tree (`load_dtb` in
/// `hw/arm/boot.c`): `/memory`'s `reg`, `/chosen/bootargs` when there is a
/// command line, and the initrd's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDtbEdits {
    /// Guest RAM.
    pub ram: Span,
    /// The command line (empty: leave `bootargs` as it is).
    pub cmdline: String,
    /// The initrd.
    pub initrd: Option<Span>,
}

/// Check a user's device tree and rewrite it with `edits`. Beyond QEMU, a
/// missing `/memory` or `/chosen` node is added, further memory nodes are
/// dropped (they would describe RAM the guest does not have), and stale
/// initrd bounds are removed when there is no initrd.
pub fn rewrite_user_dtb(bytes: &[u8], edits: &UserDtbEdits) -> Result<Vec<u8>, DtbError> {
    let checked = CheckedDtb::new(bytes)?;
    let fdt = checked.fdt()?;
    let root = fdt.find_node("/").ok_or_else(|| DtbError::Content("has no root node".into()))?;
    let (address_cells, size_cells) = child_cells(root);
    let root_cells = |name: &str| root.property(name).and_then(|p| cells(p.value)).and_then(|c| c.first().copied());
    if root_cells("#address-cells").unwrap_or(0) == 0 || root_cells("#size-cells").unwrap_or(0) == 0 {
        return Err(DtbError::Content("lacks a non-zero #address-cells and #size-cells at its root".into()));
    }
    if address_cells > 2 || size_cells > 2 {
        return Err(DtbError::Content(format!(
            "has {address_cells} address and {size_cells} size cells at its root (at most 2 each supported)"
        )));
    }
    let encode = |value: u64, n: usize| -> Vec<u8> {
        let be = value.to_be_bytes();
        be.get(8 - 4 * n..).unwrap_or_default().to_vec()
    };
    if address_cells == 1 && edits.ram.end() > 1 << 32 || size_cells == 1 && edits.ram.size >= 1 << 32 {
        return Err(DtbError::Content("cannot describe guest RAM with one cell".into()));
    }
    // RAM may end at 4 GiB exactly, and an initrd with it, whose end address
    // (exclusive) one cell cannot hold.
    if address_cells == 1 && edits.initrd.is_some_and(|i| i.end() > u64::from(u32::MAX)) {
        return Err(DtbError::Content("cannot describe the initrd's end with one address cell".into()));
    }
    let mut memory_reg = encode(edits.ram.start, address_cells);
    memory_reg.extend(encode(edits.ram.size, size_cells));

    let reservations =
        checked.reservations.iter().map(|&(a, s)| FdtReserveEntry::new(a, s)).collect::<Result<Vec<_>, _>>()?;
    let mut w = FdtWriter::new_with_mem_reserv(&reservations)?;
    w.set_boot_cpuid_phys(checked.boot_cpuid_phys);
    let top = w.begin_node("")?;
    for p in root.properties() {
        w.property(p.name, p.value)?;
    }
    let mut have_memory = false;
    let mut have_chosen = false;
    for child in root.children() {
        let base = child.name.split('@').next().unwrap_or_default();
        if base == "memory" {
            if have_memory {
                log::warn!("--dtb: dropping /{}: guest RAM is described by the first memory node", child.name);
                continue;
            }
            have_memory = true;
            let node = w.begin_node(child.name)?;
            for p in child.properties().filter(|p| p.name != "reg") {
                w.property(p.name, p.value)?;
            }
            w.property("reg", &memory_reg)?;
            copy_children(&mut w, child)?;
            w.end_node(node)?;
        } else if child.name == "chosen" {
            have_chosen = true;
            let node = w.begin_node("chosen")?;
            for p in child.properties() {
                let replaced = (p.name == "bootargs" && !edits.cmdline.is_empty())
                    || p.name == "linux,initrd-start"
                    || p.name == "linux,initrd-end";
                if !replaced {
                    w.property(p.name, p.value)?;
                }
            }
            write_chosen_edits(&mut w, edits, address_cells)?;
            copy_children(&mut w, child)?;
            w.end_node(node)?;
        } else {
            copy_node(&mut w, child)?;
        }
    }
    if !have_memory {
        let node = w.begin_node(&format!("memory@{:x}", edits.ram.start))?;
        w.property_string("device_type", "memory")?;
        w.property("reg", &memory_reg)?;
        w.end_node(node)?;
    }
    if !have_chosen {
        let node = w.begin_node("chosen")?;
        write_chosen_edits(&mut w, edits, address_cells)?;
        w.end_node(node)?;
    }
    w.end_node(top)?;
    Ok(w.finish()?)
}

fn write_chosen_edits(w: &mut FdtWriter, edits: &UserDtbEdits, address_cells: usize) -> Result<(), DtbError> {
    if !edits.cmdline.is_empty() {
        w.property_string("bootargs", &edits.cmdline)?;
    }
    if let Some(initrd) = edits.initrd {
        if address_cells == 1 {
            // Checked by the caller: the initrd ends below 4 GiB here.
            w.property_u32("linux,initrd-start", u32::try_from(initrd.start).unwrap_or(u32::MAX))?;
            w.property_u32("linux,initrd-end", u32::try_from(initrd.end()).unwrap_or(u32::MAX))?;
        } else {
            w.property_u64("linux,initrd-start", initrd.start)?;
            w.property_u64("linux,initrd-end", initrd.end())?;
        }
    }
    Ok(())
}

fn copy_node(w: &mut FdtWriter, node: FdtNode<'_, '_>) -> Result<(), DtbError> {
    let handle = w.begin_node(node.name)?;
    for p in node.properties() {
        w.property(p.name, p.value)?;
    }
    copy_children(w, node)?;
    w.end_node(handle)?;
    Ok(())
}

fn copy_children(w: &mut FdtWriter, node: FdtNode<'_, '_>) -> Result<(), DtbError> {
    for child in node.children() {
        copy_node(w, child)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> GuestDtbSpec {
        GuestDtbSpec {
            vcpus: 2,
            ram: Span::new(0x4000_0000, 256 << 20),
            gicd: Span::new(0x0800_0000, 0x1000),
            gicc: Span::new(0x0801_0000, 0x2000),
            uart: Span::new(0x0900_0000, 0x1000),
            uart_irq: DtIrq { number: 1, trigger: 4 },
            uart_clock_hz: 24_000_000,
            timer_ppis: [
                DtIrq { number: 13, trigger: 4 },
                DtIrq { number: 14, trigger: 4 },
                DtIrq { number: 11, trigger: 4 },
                DtIrq { number: 10, trigger: 4 },
            ],
            timer_always_on: true,
            cmdline: "console=ttyAMA0 rdinit=/init".into(),
            initrd: Some(Span::new(0x4800_0000, 0x1234)),
        }
    }

    fn prop_cells(fdt: &Fdt<'_>, path: &str, name: &str) -> Vec<u32> {
        let node = fdt.find_node(path).unwrap_or_else(|| panic!("no {path}"));
        cells(node.property(name).unwrap_or_else(|| panic!("no {path}:{name}")).value).unwrap()
    }

    fn prop_str<'a>(fdt: &Fdt<'a>, path: &str, name: &str) -> Vec<&'a str> {
        strings(fdt.find_node(path).unwrap().property(name).unwrap().value)
    }

    #[test]
    fn guest_dtb_parses_back() {
        let blob = generate(&spec()).unwrap();
        let checked = CheckedDtb::new(&blob).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(prop_str(&fdt, "/", "compatible"), ["linux,dummy-virt"]);
        // Memory.
        let mem = fdt.find_node("/memory").unwrap();
        assert_eq!(
            reg_entries(mem.property("reg").unwrap().value, 2, 2),
            Some(vec![Span::new(0x4000_0000, 256 << 20)])
        );
        // CPUs.
        let cpus: Vec<_> = fdt.find_node("/cpus").unwrap().children().collect();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].name, "cpu@1");
        assert_eq!(cells(cpus[1].property("reg").unwrap().value), Some(vec![1]));
        assert_eq!(strings(cpus[0].property("enable-method").unwrap().value), ["psci"]);
        // PSCI.
        assert_eq!(prop_str(&fdt, "/psci", "method"), ["hvc"]);
        assert_eq!(prop_str(&fdt, "/psci", "compatible"), ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);
        assert_eq!(prop_cells(&fdt, "/psci", "cpu_on"), [0x8400_0003]);
        // GIC: distributor and CPU interface only.
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert_eq!(
            reg_entries(gic.property("reg").unwrap().value, 2, 2),
            Some(vec![Span::new(0x0800_0000, 0x1000), Span::new(0x0801_0000, 0x2000)])
        );
        assert!(gic.property("interrupt-controller").is_some());
        assert_eq!(prop_cells(&fdt, "/", "interrupt-parent"), prop_cells(&fdt, "/intc@8000000", "phandle"));
        // Timer: PPIs wired to both CPUs.
        assert_eq!(prop_cells(&fdt, "/timer", "interrupts"), [1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]);
        // UART and its clock.
        assert_eq!(prop_cells(&fdt, "/pl011@9000000", "interrupts"), [0, 1, 4]);
        assert_eq!(prop_str(&fdt, "/pl011@9000000", "clock-names"), ["uartclk", "apb_pclk"]);
        let clk = prop_cells(&fdt, "/pl011@9000000", "clocks");
        assert_eq!(clk, [clk[0], clk[0]]);
        let clock = fdt.find_phandle(clk[0]).unwrap();
        assert_eq!(cells(clock.property("clock-frequency").unwrap().value), Some(vec![24_000_000]));
        // Chosen.
        assert_eq!(prop_str(&fdt, "/chosen", "bootargs"), ["console=ttyAMA0 rdinit=/init"]);
        assert_eq!(prop_str(&fdt, "/chosen", "stdout-path"), ["/pl011@9000000"]);
        let start = prop_cells(&fdt, "/chosen", "linux,initrd-start");
        let end = prop_cells(&fdt, "/chosen", "linux,initrd-end");
        assert_eq!((start, end), (vec![0, 0x4800_0000], vec![0, 0x4800_1234]));
    }

    #[test]
    fn guest_dtb_variants() {
        let mut s = spec();
        s.vcpus = 8;
        s.cmdline.clear();
        s.initrd = None;
        let blob = generate(&s).unwrap();
        let checked = CheckedDtb::new(&blob).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(fdt.find_node("/cpus").unwrap().children().count(), 8);
        assert_eq!(prop_cells(&fdt, "/timer", "interrupts")[2], 0xff04);
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("bootargs").is_none());
        assert!(chosen.property("linux,initrd-start").is_none());
        s.vcpus = 9;
        assert!(generate(&s).is_err());
        s.vcpus = 0;
        assert!(generate(&s).is_err());
    }

    #[test]
    fn checker_refuses_garbage_without_panicking() {
        let good = generate(&spec()).unwrap();
        assert!(CheckedDtb::new(&good).is_ok());
        assert!(matches!(
            CheckedDtb::new(b"hello world, not a dtb at all........").unwrap_err(),
            DtbError::Malformed(_)
        ));
        assert!(CheckedDtb::new(&[]).is_err());
        // Every truncation and every single-byte corruption is an error or a
        // tree the fdt crate then reads without panicking.
        for cut in 0..good.len() {
            let _ = CheckedDtb::new(&good[..cut]);
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                if let Ok(c) = CheckedDtb::new(&bad) {
                    let fdt = c.fdt().unwrap();
                    for node in fdt.all_nodes() {
                        for p in node.properties() {
                            let _ = (p.name, p.value);
                        }
                        let _ = node.children().count();
                    }
                    let _ = rewrite_user_dtb(&bad, &edits());
                }
            }
        }
    }

    #[test]
    fn checker_strips_nops() {
        let good = generate(&spec()).unwrap();
        // Insert a NOP right after the root node's first property.
        let c = CheckedDtb::new(&good).unwrap();
        let blob = c.bytes();
        let off_struct = header_word(blob, 2).unwrap() as usize;
        // BEGIN_NODE "" (8 bytes), then PROP header (12) + 4-byte value.
        let at = off_struct + 8 + 12 + 4;
        let mut with_nop = blob[..at].to_vec();
        with_nop.extend_from_slice(&FDT_NOP.to_be_bytes());
        with_nop.extend_from_slice(&blob[at..]);
        // Fix up the header: total size, strings offset, structure size.
        let bump = |v: &mut Vec<u8>, index: usize| {
            let w = header_word(v, index).unwrap() + 4;
            v[index * 4..index * 4 + 4].copy_from_slice(&w.to_be_bytes());
        };
        bump(&mut with_nop, 1);
        bump(&mut with_nop, 3);
        bump(&mut with_nop, 9);
        let stripped = CheckedDtb::new(&with_nop).unwrap();
        assert_eq!(stripped.bytes(), c.bytes());
    }

    fn edits() -> UserDtbEdits {
        UserDtbEdits {
            ram: Span::new(0x4000_0000, 64 << 20),
            cmdline: "quiet".into(),
            initrd: Some(Span::new(0x4200_0000, 0x100)),
        }
    }

    #[test]
    fn user_dtb_gets_memory_and_chosen() {
        // A user tree with two memory nodes, old bootargs, no initrd.
        let mut w = FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(0x4100_0000, 0x1000).unwrap()]).unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_string("compatible", "acme,board").unwrap();
        let m = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0x4000_0000, 0x1000_0000]).unwrap();
        w.end_node(m).unwrap();
        let m2 = w.begin_node("memory@80000000").unwrap();
        w.property_array_u32("reg", &[0x8000_0000, 0x1000_0000]).unwrap();
        w.end_node(m2).unwrap();
        let soc = w.begin_node("soc").unwrap();
        let dev = w.begin_node("dev@1000").unwrap();
        w.property_u32("reg", 0x1000).unwrap();
        w.end_node(dev).unwrap();
        w.end_node(soc).unwrap();
        let ch = w.begin_node("chosen").unwrap();
        w.property_string("bootargs", "old").unwrap();
        w.property_string("stdout-path", "serial0").unwrap();
        w.end_node(ch).unwrap();
        w.end_node(root).unwrap();
        let user = w.finish().unwrap();

        let out = rewrite_user_dtb(&user, &edits()).unwrap();
        let checked = CheckedDtb::new(&out).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(prop_cells(&fdt, "/memory@40000000", "reg"), [0x4000_0000, 0x0400_0000]);
        assert!(fdt.find_node("/memory@80000000").is_none());
        assert_eq!(prop_str(&fdt, "/chosen", "bootargs"), ["quiet"]);
        assert_eq!(prop_str(&fdt, "/chosen", "stdout-path"), ["serial0"]);
        assert_eq!(prop_cells(&fdt, "/chosen", "linux,initrd-start"), [0x4200_0000]);
        assert_eq!(prop_cells(&fdt, "/chosen", "linux,initrd-end"), [0x4200_0100]);
        assert_eq!(prop_cells(&fdt, "/soc/dev@1000", "reg"), [0x1000]);
        assert_eq!(prop_str(&fdt, "/", "compatible"), ["acme,board"]);
        assert_eq!(checked.reservations, vec![(0x4100_0000, 0x1000)]);

        // Without a command line the user's bootargs stay; without an initrd
        // stale bounds go.
        let e = UserDtbEdits { cmdline: String::new(), initrd: None, ..edits() };
        let again = rewrite_user_dtb(&out, &e).unwrap();
        let checked = CheckedDtb::new(&again).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(prop_str(&fdt, "/chosen", "bootargs"), ["quiet"]);
        assert!(fdt.find_node("/chosen").unwrap().property("linux,initrd-start").is_none());
    }

    #[test]
    fn user_dtb_without_memory_or_chosen_gets_them() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.end_node(root).unwrap();
        let out = rewrite_user_dtb(&w.finish().unwrap(), &edits()).unwrap();
        let checked = CheckedDtb::new(&out).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(prop_cells(&fdt, "/memory", "reg"), [0, 0x4000_0000, 0, 0x0400_0000]);
        assert_eq!(prop_cells(&fdt, "/chosen", "linux,initrd-start"), [0, 0x4200_0000]);

        // No cell sizes at the root: refused, as QEMU does.
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.end_node(root).unwrap();
        assert!(matches!(rewrite_user_dtb(&w.finish().unwrap(), &edits()), Err(DtbError::Content(_))));
    }

    #[test]
    fn initrd_ending_at_4_gib_with_one_address_cell_is_refused() {
        // Found by the loader_dtb fuzz target: the end of an initrd that
        // ends at 4 GiB was written as 0xffff_ffff, one byte short.
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.end_node(root).unwrap();
        let user = w.finish().unwrap();
        let top = UserDtbEdits {
            ram: Span::new(0xffe0_0000, 2 << 20),
            cmdline: String::new(),
            initrd: Some(Span::new(0xfff0_0000, 1 << 20)),
        };
        assert_eq!(
            rewrite_user_dtb(&user, &top),
            Err(DtbError::Content("cannot describe the initrd's end with one address cell".into()))
        );
        // One byte lower it fits, and the end is exact.
        let below = UserDtbEdits { initrd: Some(Span::new(0xfff0_0000, (1 << 20) - 1)), ..top };
        let out = rewrite_user_dtb(&user, &below).unwrap();
        let checked = CheckedDtb::new(&out).unwrap();
        let fdt = checked.fdt().unwrap();
        assert_eq!(prop_cells(&fdt, "/chosen", "linux,initrd-end"), [0xffff_ffff]);
    }

    #[test]
    fn reg_decoding() {
        let v: Vec<u8> = [0u32, 0x4000_0000, 0, 0x1000].iter().flat_map(|c| c.to_be_bytes()).collect();
        assert_eq!(reg_entries(&v, 2, 2), Some(vec![Span::new(0x4000_0000, 0x1000)]));
        assert_eq!(reg_entries(&v, 1, 1), Some(vec![Span::new(0, 0x4000_0000), Span::new(0, 0x1000)]));
        assert_eq!(reg_entries(&v, 2, 1), None);
        assert_eq!(reg_entries(&v, 3, 1), None);
        assert_eq!(reg_entries(&v[..3], 1, 1), None);
        assert_eq!(strings(b"a\0bc\0"), ["a", "bc"]);
    }
}
