//! Translation tables: the monitor's own Hyp stage-1 identity map, the
//! servers' protection domains (Hyp stage-1 maps of a few pages each, see
//! `domain`), and the guest's stage-2 map. Both use the long-descriptor (LPAE) format
//! (ARMv7-A ARM B3.6); stage 2 always does, whatever the guest uses.

use ipc::VmConfig;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use super::sysreg::{ops, CTR, CTR_BITS, HMAIR0, HSCTLR, HSCTLR_BITS, HTCR, HTTBR, VTCR, VTTBR};

/// Descriptor type bits (B3.6.1).
const DESC_BLOCK: u64 = 0b01;
const DESC_TABLE: u64 = 0b11;
const DESC_PAGE: u64 = 0b11;
/// Access flag.
const AF: u64 = 1 << 10;
/// Inner shareable.
const SH_INNER: u64 = 0b11 << 8;
/// Execute never.
const XN: u64 = 1 << 54;
/// Stage 1: AttrIndx (index into HMAIR0).
const fn attr_index(i: u64) -> u64 {
    i << 2
}
/// Stage 1 (Hyp): AP[2:1] = 0b01, read/write (AP[1] is ignored at PL2).
const S1_AP_RW: u64 = 0b01 << 6;
/// Stage 2: S2AP = read/write.
const S2AP_RW: u64 = 0b11 << 6;
/// Stage 2: S2AP = read-only (stores fault with a permission fault).
const S2AP_RO: u64 = 0b01 << 6;
/// Stage 2 MemAttr: Normal, outer and inner write-back.
const S2_NORMAL_WB: u64 = 0b1111 << 2;
/// Stage 2 MemAttr: Device.
const S2_DEVICE: u64 = 0b0001 << 2;

/// HMAIR0 attribute 0: Normal memory, write-back read/write-allocate.
const MAIR_NORMAL: u32 = 0xff;
/// HMAIR0 attribute 1: Device memory.
const MAIR_DEVICE: u32 = 0x04;
const ATTR_NORMAL: u64 = 0;
const ATTR_DEVICE: u64 = 1;

/// HTCR/VTCR common fields: inner/outer write-back write-allocate walks,
/// inner shareable (B4.1.76, B4.1.159).
const TCR_WALK_WBWA_ISH: u32 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
/// HTCR/VTCR bit 31 is RES1.
const TCR_RES1: u32 = 1 << 31;
/// VTCR.SL0 = 1: the stage-2 walk starts at level 1 (with T0SZ = 0, a
/// 4 GiB IPA space).
const VTCR_SL0_LEVEL1: u32 = 0b01 << 6;
/// The VMID of the (single) VM, in VTTBR[55:48].
const VMID: u64 = 1;

const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;
pub(super) const PAGE: u64 = 4096;

#[repr(C, align(4096))]
pub struct Table([u64; 512]);

/// Hyp stage-1 level-1 table: four 1 GiB blocks.
pub(super) static mut HYP_L1: Table = Table([0; 512]);
/// Stage-2 level-1 table and one level-2 table per GiB.
static mut S2_L1: Table = Table([0; 512]);
static mut S2_L2: [Table; 4] = [const { Table([0; 512]) }; 4];
/// Level-3 tables for device pages (the GIC virtual CPU interface, the
/// console's read image).
static mut S2_L3: [Table; 2] = [const { Table([0; 512]) }; 2];
/// How many 2 MiB stretches of guest RAM stage 2 maps with 4 KiB pages:
/// 3 GiB, all the RAM the IPA space holds above QEMU virt's first GiB of
/// devices (a larger window is mapped on in 2 MiB blocks, and says so).
const RAM_PAGE_TABLES: usize = (3 * GIB / TWO_MIB) as usize;
/// Level-3 tables for guest RAM, one per 2 MiB, filled whole by
/// [`build_stage2`] for the stretches it uses and never read otherwise, so
/// outside `.bss` (6 MiB the boot would otherwise zero).
///
/// Why pages and not 2 MiB blocks, which take one level less to walk and,
/// on hardware, less TLB room: QEMU's TLB records a two-stage translation
/// as large as the larger of its two stages' (`get_phys_addr_twostage`,
/// QEMU 7.2), and a flush by address that falls in any such large page
/// flushes the guest's whole TLB (`tlb_flush_page_locked`). Over 2 MiB
/// blocks every guest page counts as one, so each of the guest's TLB
/// invalidations by address emptied its TLB on every CPU. Linux makes some
/// 97,000 of them in a boot (ftrace patching its call sites alone takes
/// about 40,000): in 14 alternating pairs of Debian boots that step took
/// 0.40-0.52 s with blocks and 0.22-0.44 s with pages, medians 0.435 s and
/// 0.255 s (plain QEMU: 0.23-0.34 s; session 20).
#[link_section = ".splitvisor_stage2"]
static mut S2_RAM_L3: core::mem::MaybeUninit<[Table; RAM_PAGE_TABLES]> = core::mem::MaybeUninit::uninit();
/// The stage-2 entry of the console's page (in a level-3 table of
/// `S2_L3`), where its read image is mapped or not; null when the VM has no
/// read image.
static CONSOLE_IMAGE_ENTRY: core::sync::atomic::AtomicPtr<u64> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Hyp stage-1 AP[2] = 1: read-only (B3.6.1, Table B3-6).
const S1_AP_RO: u64 = 0b11 << 6;

/// How many 2 MiB blocks of the monitor image a domain's level-3 tables
/// cover (the linker script keeps the image inside them).
pub const DOMAIN_SPAN_BLOCKS: usize = 8;

/// A server's own Hyp stage-1 tables: a level-1 table whose only entry is
/// the GiB of the monitor image, a level-2 table whose only entries are the
/// image's 2 MiB blocks, and one level-3 table (4 KiB pages) for each of
/// them. They live in the monitor's memory, which no domain maps: a server
/// cannot change its own translation by writing to memory.
///
/// One of their pages is a window (see [`build_domain`]): the monitor
/// points it, before each call, at the page of the reply buffer of the CPU
/// the server is about to run on ([`DomainTables::point_window`]).
#[repr(C, align(4096))]
pub struct DomainTables {
    l1: Table,
    l2: Table,
    l3: [Table; DOMAIN_SPAN_BLOCKS],
    /// The window's level-3 entry, in `l3` (null before [`build_domain`]).
    window: *mut u64,
}

impl DomainTables {
    /// Empty tables (everything unmapped).
    pub const fn new() -> Self {
        DomainTables {
            l1: Table([0; 512]),
            l2: Table([0; 512]),
            l3: [const { Table([0; 512]) }; DOMAIN_SPAN_BLOCKS],
            window: core::ptr::null_mut(),
        }
    }

    /// Map the window onto the page at `page` (read/write, never
    /// executable), in place of what it mapped. Call only while no CPU uses
    /// these tables (the server's lock is held and it is not running), and
    /// switch to them with `set_hyp_translation`, whose barrier orders this
    /// store before the walk and whose TLB invalidation drops the old entry.
    #[inline(always)]
    pub fn point_window(&mut self, page: u64) {
        self.set_window((page & !(PAGE - 1)) | READ_WRITE | attr_index(ATTR_NORMAL) | SH_INNER | AF | DESC_PAGE);
    }

    /// Unmap the window (as [`DomainTables::point_window`], with no page).
    pub fn close_window(&mut self) {
        self.set_window(0);
    }

    #[inline(always)]
    fn set_window(&mut self, entry: u64) {
        if !self.window.is_null() {
            // SAFETY: `window` points at an entry of `self.l3` (see
            // `build_domain`), which `&mut self` holds.
            unsafe { *self.window = entry };
            // For a table walk that does not look in the data cache.
            ops::dccmvau(self.window as u32);
        }
    }

    /// The value for HTTBR.
    pub fn base(&self) -> u64 {
        core::ptr::addr_of!(self.l1) as u64
    }
}

/// What a domain may do with a range of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and execute (code).
    ReadExecute,
    /// Read only (constants, the `log` crate's statics).
    Read,
    /// Read and write, never execute (the domain's stack and state).
    ReadWrite,
}

/// Which of a domain's level-3 tables, and which entry of it, maps the page
/// at `address` of the span that starts at `base`.
fn l3_index(base: u64, address: u64) -> (usize, usize) {
    let offset = address - base;
    ((offset / TWO_MIB) as usize, ((offset % TWO_MIB) / PAGE) as usize)
}

/// Stage-1 attributes of a read/write, never executable page.
const READ_WRITE: u64 = S1_AP_RW | XN;

/// Fill `tables` to map exactly `ranges` (page-aligned `[start, end)`
/// physical ranges, identity-mapped) inside `image`, the 2 MiB-aligned span
/// the tables cover, and keep the page at `window` (inside `image`, outside
/// every range) as the window [`DomainTables::point_window`] points.
/// Everything else stays unmapped.
pub fn build_domain(
    tables: &mut DomainTables,
    image: (u64, u64),
    ranges: &[(u64, u64, Access)],
    window: u64,
) -> Result<(), MapError> {
    let (base, end) = image;
    let blocks = (end - base).div_ceil(TWO_MIB) as usize;
    if !base.is_multiple_of(TWO_MIB) || blocks > DOMAIN_SPAN_BLOCKS || end > 4 * GIB || base / GIB != (end - 1) / GIB {
        return Err(MapError::DomainSpan);
    }
    tables.l1.0[(base / GIB) as usize] = core::ptr::addr_of!(tables.l2) as u64 | DESC_TABLE;
    for b in 0..blocks {
        let slot = ((base % GIB) / TWO_MIB) as usize + b;
        tables.l2.0[slot] = core::ptr::addr_of!(tables.l3[b]) as u64 | DESC_TABLE;
    }
    for &(start, stop, access) in ranges {
        if !start.is_multiple_of(PAGE) || !stop.is_multiple_of(PAGE) || start < base || stop > end || start > stop {
            return Err(MapError::DomainRange);
        }
        let attrs = match access {
            Access::ReadExecute => S1_AP_RO,
            Access::Read => S1_AP_RO | XN,
            Access::ReadWrite => READ_WRITE,
        };
        let mut page = start;
        while page < stop {
            let (b, i) = l3_index(base, page);
            tables.l3[b].0[i] = page | attrs | attr_index(ATTR_NORMAL) | SH_INNER | AF | DESC_PAGE;
            page += PAGE;
        }
    }
    // The window: unmapped until pointed, and mapping nothing a range maps.
    if !window.is_multiple_of(PAGE) || window < base || window >= end {
        return Err(MapError::DomainRange);
    }
    let (b, i) = l3_index(base, window);
    if tables.l3[b].0[i] != 0 {
        return Err(MapError::DomainRange);
    }
    tables.window = core::ptr::addr_of_mut!(tables.l3[b].0[i]);
    Ok(())
}

/// Run on the translation whose tables are at `base` (the monitor's or a
/// domain's) from now on, on this CPU. Hyp stage 1 has no ASIDs: the switch invalidates this CPU's
/// Hyp TLB (the domains' tables never change after boot, so no other CPU's
/// TLB needs it).
pub fn switch_hyp_translation(base: u64) {
    extern "C" {
        /// `isolate`'s assembly: HTTBR, then the Hyp TLB invalidation.
        fn set_hyp_translation(tables: u32);
    }
    // SAFETY: the caller gives the monitor's tables or a domain's (below
    // 4 GiB), built at boot and never changed; both map the code running
    // here and the stack in use. The call is a compiler barrier: no memory
    // access is moved across it.
    unsafe { set_hyp_translation(base as u32) };
}

/// This CPU's HTTBR now.
#[inline(always)]
pub fn current_hyp_translation() -> u64 {
    HTTBR.get()
}

/// The monitor's own HTTBR value.
pub fn monitor_translation() -> u64 {
    core::ptr::addr_of!(HYP_L1) as u64
}

/// What stage 2 could not map.
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// Guest RAM beyond the 4 GiB IPA space.
    RamOutOfRange,
    /// The CPU interface window is not page aligned or too large.
    DeviceWindow,
    /// The monitor image does not fit the span a domain's tables cover.
    DomainSpan,
    /// A domain range is not page aligned or outside the image.
    DomainRange,
    /// The console's page lies in a 2 MiB block stage 2 maps whole.
    ConsoleImage,
}

/// Turn on the Hyp MMU with an identity map: the first GiB (devices on
/// QEMU virt and boards alike below the RAM) as device memory, the rest as
/// normal memory. Called on every CPU; the table is built once by the boot
/// CPU before the others start.
pub fn enable_hyp_mmu(build: bool) {
    let l1 = core::ptr::addr_of_mut!(HYP_L1);
    if build {
        for gib in 0..4u64 {
            let attrs = if gib == 0 { attr_index(ATTR_DEVICE) | XN } else { attr_index(ATTR_NORMAL) | SH_INNER };
            // SAFETY: only the boot CPU builds the table, before any other
            // CPU runs and before the MMU uses it.
            unsafe { (*l1).0[gib as usize] = (gib * GIB) | attrs | AF | S1_AP_RW | DESC_BLOCK };
        }
    }
    HMAIR0.set(MAIR_NORMAL | MAIR_DEVICE << 8);
    HTCR.set(TCR_RES1 | TCR_WALK_WBWA_ISH);
    HTTBR.set(l1 as u64);
    super::sysreg::barrier();
    ops::tlbiallh(0);
    ops::iciallu(0);
    super::sysreg::barrier();
    // A clear: unaligned word accesses to Normal memory are allowed (the
    // monitor's memcpy relies on it, see `mem`).
    HSCTLR.modify(HSCTLR_BITS::M::SET + HSCTLR_BITS::C::SET + HSCTLR_BITS::I::SET + HSCTLR_BITS::A::CLEAR);
    super::sysreg::barrier();
}

/// Build the guest's stage-2 tables (boot CPU, once): its RAM window, and
/// the GIC virtual CPU interface `gicv` at the guest's CPU interface window.
pub fn build_stage2(config: &VmConfig, gicv: (u64, u64)) -> Result<(), MapError> {
    let ram = config.ram;
    if ram.ipa + ram.size > 4 * GIB {
        return Err(MapError::RamOutOfRange);
    }
    let l1 = core::ptr::addr_of_mut!(S2_L1);
    let l2 = core::ptr::addr_of_mut!(S2_L2);
    let l3 = core::ptr::addr_of_mut!(S2_L3);
    // SAFETY: the boot CPU builds these tables once, before any guest runs
    // and before any other CPU starts; nothing else refers to them. The RAM
    // tables are reached as `ram_tables.add(n)` with `n < RAM_PAGE_TABLES`,
    // inside `S2_RAM_L3`, and each is written whole before an entry points
    // at it.
    unsafe {
        for i in 0..4 {
            (*l1).0[i] = core::ptr::addr_of!((*l2)[i]) as u64 | DESC_TABLE;
        }
        let ram_tables = core::ptr::addr_of_mut!(S2_RAM_L3).cast::<Table>();
        let mut ipa = ram.ipa;
        let mut n = 0;
        while ipa < ram.ipa + ram.size {
            let pa = ipa - ram.ipa + ram.pa;
            let (g, i) = ((ipa / GIB) as usize, ((ipa % GIB) / TWO_MIB) as usize);
            let attrs = AF | SH_INNER | S2AP_RW | S2_NORMAL_WB;
            (*l2)[g].0[i] = if n < RAM_PAGE_TABLES {
                let table = ram_tables.add(n);
                fill_pages(table, pa | attrs | DESC_PAGE);
                n += 1;
                table as u64 | DESC_TABLE
            } else {
                pa | attrs | DESC_BLOCK
            };
            ipa += TWO_MIB;
        }
        if n == RAM_PAGE_TABLES && ram.size > n as u64 * TWO_MIB {
            log::warn!(
                "guest RAM beyond {} MiB is mapped in 2 MiB blocks: slower under QEMU (see mmu::S2_RAM_L3)",
                (n as u64 * TWO_MIB) >> 20
            );
        }
        let window = config.gicc;
        let pages = window.size.min(gicv.1) / PAGE;
        if !window.base.is_multiple_of(PAGE) || pages == 0 || window.base % TWO_MIB + pages * PAGE > TWO_MIB {
            return Err(MapError::DeviceWindow);
        }
        let (g, i) = ((window.base / GIB) as usize, ((window.base % GIB) / TWO_MIB) as usize);
        (*l2)[g].0[i] = core::ptr::addr_of!((*l3)[0]) as u64 | DESC_TABLE;
        for p in 0..pages {
            let ipa = window.base + p * PAGE;
            let slot = ((ipa % TWO_MIB) / PAGE) as usize;
            (*l3)[0].0[slot] = (gicv.0 + p * PAGE) | AF | S2AP_RW | S2_DEVICE | XN | DESC_PAGE;
        }
        if config.console_image {
            // The console's block gets a level-3 table (the CPU interface's,
            // if they share the block), with the console's entry unmapped
            // until the vCPU server maps its read image.
            let page = config.uart.base;
            let (g, i) = ((page / GIB) as usize, ((page % GIB) / TWO_MIB) as usize);
            let block = &mut (*l2)[g].0[i];
            if *block == 0 {
                *block = core::ptr::addr_of!((*l3)[1]) as u64 | DESC_TABLE;
            } else if *block & 0b11 != DESC_TABLE {
                return Err(MapError::ConsoleImage);
            }
            let table = if *block & !(PAGE - 1) == core::ptr::addr_of!((*l3)[0]) as u64 { 0 } else { 1 };
            let entry = core::ptr::addr_of_mut!((*l3)[table].0[((page % TWO_MIB) / PAGE) as usize]);
            CONSOLE_IMAGE_ENTRY.store(entry, core::sync::atomic::Ordering::Release);
        }
    }
    Ok(())
}

/// Fill the level-3 `table` with 512 page entries, the first `first` and
/// each next one a page further on. The table maps 2 MiB, 2 MiB aligned, so
/// its entries differ only in their low words (bits 31:12 of the address):
/// the low words are counted and the common high word stored beside them,
/// four entries a step, through raw pointers (the table may be
/// uninitialised until then). For the default 256 MiB that is about
/// 270,000 instructions once at boot; a loop of 64-bit entries took 4.75
/// instructions an entry (carries), one entry a step 7 (session 20).
///
/// # Safety
///
/// `table` must be valid for writes and not in use by any translation, and
/// `first` the entry of a 2 MiB aligned address.
unsafe fn fill_pages(table: *mut Table, first: u64) {
    let words = table.cast::<[u32; 8]>();
    let (mut low, high) = (first as u32, (first >> 32) as u32);
    let page = PAGE as u32;
    for k in 0..128 {
        // SAFETY: k < 128 groups of four entries, inside the table the
        // caller lends (little-endian: an entry's low word first).
        unsafe {
            words.add(k).write([
                low,
                high,
                low.wrapping_add(page),
                high,
                low.wrapping_add(2 * page),
                high,
                low.wrapping_add(3 * page),
                high,
            ]);
        }
        low = low.wrapping_add(4 * page);
    }
}

/// Map the page at physical `page` read-only at the console's page of
/// stage 2 (its read image), or unmap it (`None`), for every CPU: the
/// guest's TLB entries are invalidated on all of them before this returns.
/// Call under the read image's lock (two changes must not interleave).
/// False when the VM has no read image.
pub fn map_console_image(page: Option<u64>) -> bool {
    let entry = CONSOLE_IMAGE_ENTRY.load(core::sync::atomic::Ordering::Acquire);
    if entry.is_null() {
        return false;
    }
    // Normal write-back at stage 2: the guest's own attributes (Device, for
    // a UART) then decide; the monitor cleans every word it writes to the
    // point of coherency, so uncached reads see it too. Never executable.
    let value = page.map_or(0, |pa| (pa & !(PAGE - 1)) | AF | SH_INNER | S2AP_RO | S2_NORMAL_WB | XN | DESC_PAGE);
    let words = entry.cast::<u32>();
    // The low word holds the valid bit: it is written last when mapping and
    // first when unmapping, with a barrier between the two, so that a walk
    // on another CPU never sees a valid entry half written.
    let order = if page.is_some() { [(1, (value >> 32) as u32), (0, value as u32)] } else { [(0, 0), (1, 0)] };
    for (word, part) in order {
        // SAFETY: `entry` points at the console's entry of a stage-2
        // level-3 table (set once by `build_stage2`), two aligned words;
        // the caller's lock keeps other writers out.
        unsafe { core::ptr::write_volatile(words.add(word), part) };
        super::sysreg::barrier();
    }
    // For a table walk that does not look in the data cache.
    ops::dccmvau(entry as u32);
    super::sysreg::barrier();
    ops::tlbiallnsnhis(0);
    super::sysreg::barrier();
    true
}

/// Point this CPU's stage-2 translation at the guest's tables.
pub fn enable_stage2() {
    VTCR.set(TCR_RES1 | TCR_WALK_WBWA_ISH | VTCR_SL0_LEVEL1);
    VTTBR.set(core::ptr::addr_of!(S2_L1) as u64 | VMID << 48);
    super::sysreg::barrier();
    ops::tlbiallnsnh(0);
    super::sysreg::barrier();
}

/// Clean the data cache lines of `[start, end)` to the point of
/// unification, where the table walk reads (translation tables just
/// written: a walk may not look in the data cache).
pub fn clean_to_unification(start: usize, end: usize) {
    let line = 4usize << CTR.read(CTR_BITS::DMINLINE);
    let mut address = start & !(line - 1);
    while address < end {
        ops::dccmvau(address as u32);
        address += line;
    }
    super::sysreg::barrier();
}

/// Clean and invalidate the whole data cache hierarchy by set/way
/// (ARMv7-A ARM B2.2.7, "Performing cache maintenance by set/way").
pub fn clean_invalidate_dcache_all() {
    use super::sysreg::{CCSIDR, CLIDR, CSSELR};
    let clidr = CLIDR.get();
    let loc = (clidr >> 24) & 0x7;
    super::sysreg::barrier();
    for level in 0..loc {
        let ctype = (clidr >> (level * 3)) & 0x7;
        if ctype < 2 {
            continue; // no data cache at this level
        }
        CSSELR.set(level << 1);
        super::sysreg::barrier();
        let ccsidr = CCSIDR.get();
        let line_shift = (ccsidr & 0x7) + 4;
        let ways = ((ccsidr >> 3) & 0x3ff) + 1;
        let sets = ((ccsidr >> 13) & 0x7fff) + 1;
        let way_shift = (ways - 1).leading_zeros();
        for way in 0..ways {
            for set in 0..sets {
                let w = if ways > 1 { way << way_shift } else { 0 };
                ops::dccisw(w | set << line_shift | level << 1);
            }
        }
    }
    super::sysreg::barrier();
}
