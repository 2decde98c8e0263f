//! A minimal GICv2 driver: the distributor and CPU interface register maps,
//! the encodings the guests build and decode (GICD_SGIR, GICC_IAR,
//! GICD_TYPER), and, on the target, register access by address.
//!
//! The guests never assume where the GIC is: both frames come from the
//! device tree (`dtb::gic`). Under splitvisor the distributor is the vGIC
//! server's emulation and the CPU interface is the hardware GICV frame;
//! under plain QEMU both are QEMU's GIC model. The driver does nothing that
//! would hide a difference between the two: no retries, no fix-ups.
//!
//! Source: Arm IHI 0048B, "ARM Generic Interrupt Controller Architecture
//! Specification, version 2.0": 4.1.2 "Distributor register map" (Table
//! 4-1), 4.1.3 "CPU interface register map" (Table 4-2), 4.3 "Distributor
//! register descriptions", 4.4 "CPU interface register descriptions", 2.2.1
//! "Interrupt IDs" (0-15 SGIs, 16-31 PPIs, 32-1019 SPIs, 1020-1023 special).

/// Distributor register offsets (IHI 0048B Table 4-1).
pub mod gicd {
    /// GICD_CTLR: Distributor Control Register.
    pub const CTLR: usize = 0x000;
    /// GICD_TYPER: Interrupt Controller Type Register (RO).
    pub const TYPER: usize = 0x004;
    /// GICD_IIDR: Distributor Implementer Identification Register (RO).
    pub const IIDR: usize = 0x008;
    /// GICD_IGROUPRn: Interrupt Group Registers.
    pub const IGROUPR: usize = 0x080;
    /// GICD_ISENABLERn: Interrupt Set-Enable Registers.
    pub const ISENABLER: usize = 0x100;
    /// GICD_ICENABLERn: Interrupt Clear-Enable Registers.
    pub const ICENABLER: usize = 0x180;
    /// GICD_ISPENDRn: Interrupt Set-Pending Registers.
    pub const ISPENDR: usize = 0x200;
    /// GICD_ICPENDRn: Interrupt Clear-Pending Registers.
    pub const ICPENDR: usize = 0x280;
    /// GICD_ISACTIVERn: Interrupt Set-Active Registers.
    pub const ISACTIVER: usize = 0x300;
    /// GICD_ICACTIVERn: Interrupt Clear-Active Registers.
    pub const ICACTIVER: usize = 0x380;
    /// GICD_IPRIORITYRn: Interrupt Priority Registers (byte-accessible).
    pub const IPRIORITYR: usize = 0x400;
    /// GICD_ITARGETSRn: Interrupt Processor Targets Registers
    /// (byte-accessible).
    pub const ITARGETSR: usize = 0x800;
    /// GICD_ICFGRn: Interrupt Configuration Registers.
    pub const ICFGR: usize = 0xc00;
    /// GICD_NSACRn: Non-secure Access Control Registers.
    pub const NSACR: usize = 0xe00;
    /// GICD_SGIR: Software Generated Interrupt Register (WO).
    pub const SGIR: usize = 0xf00;
    /// GICD_CPENDSGIRn: SGI Clear-Pending Registers (byte-accessible).
    pub const CPENDSGIR: usize = 0xf10;
    /// GICD_SPENDSGIRn: SGI Set-Pending Registers (byte-accessible).
    pub const SPENDSGIR: usize = 0xf20;
    /// ICPIDR2: Peripheral ID2 Register, whose bits \[7:4\] are ArchRev.
    pub const ICPIDR2: usize = 0xfe8;

    /// GICD_CTLR.EnableGrp0 (bit 0; "Enable" in the Non-secure view of a
    /// GIC with the Security Extensions).
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    /// GICD_CTLR.EnableGrp1 (bit 1, only without the Security Extensions).
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;

    /// GICD_SGIR.TargetListFilter shift (bits \[25:24\]).
    pub const SGIR_FILTER_SHIFT: u32 = 24;
    /// GICD_SGIR.CPUTargetList shift (bits \[23:16\]).
    pub const SGIR_TARGETS_SHIFT: u32 = 16;
    /// GICD_SGIR.SGIINTID mask (bits \[3:0\]).
    pub const SGIR_INTID_MASK: u32 = 0xf;

    /// ICPIDR2.ArchRev shift (bits \[7:4\]).
    pub const PIDR2_ARCHREV_SHIFT: u32 = 4;
    /// ICPIDR2.ArchRev of a GICv2.
    pub const PIDR2_ARCHREV_GICV2: u32 = 2;
}

/// CPU interface register offsets (IHI 0048B Table 4-2).
pub mod gicc {
    /// GICC_CTLR: CPU Interface Control Register.
    pub const CTLR: usize = 0x000;
    /// GICC_PMR: Interrupt Priority Mask Register.
    pub const PMR: usize = 0x004;
    /// GICC_BPR: Binary Point Register.
    pub const BPR: usize = 0x008;
    /// GICC_IAR: Interrupt Acknowledge Register (RO).
    pub const IAR: usize = 0x00c;
    /// GICC_EOIR: End of Interrupt Register (WO).
    pub const EOIR: usize = 0x010;
    /// GICC_RPR: Running Priority Register (RO).
    pub const RPR: usize = 0x014;
    /// GICC_HPPIR: Highest Priority Pending Interrupt Register (RO).
    pub const HPPIR: usize = 0x018;
    /// GICC_IIDR: CPU Interface Identification Register (RO).
    pub const IIDR: usize = 0x0fc;

    /// GICC_CTLR.EnableGrp0 (bit 0): signal Group 0 interrupts.
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
}

/// INTIDs 0-15 are SGIs.
pub const SGI_COUNT: u32 = 16;
/// INTIDs 16-31 are PPIs; SPIs start at 32.
pub const SPI_BASE: u32 = 32;
/// The INTID GICC_IAR returns when nothing can be acknowledged.
pub const SPURIOUS: u32 = 1023;
/// The most CPU interfaces a GICv2 has (CPUTargetList is 8 bits).
pub const MAX_CPU_INTERFACES: usize = 8;
/// GICC_IAR.InterruptID mask (bits \[9:0\]).
pub const IAR_INTID_MASK: u32 = 0x3ff;
/// GICC_IAR.CPUID shift (bits \[12:10\]): the requesting CPU of an SGI.
pub const IAR_CPUID_SHIFT: u32 = 10;
/// GICC_IAR.CPUID mask after the shift.
pub const IAR_CPUID_MASK: u32 = 0x7;

/// GICD_SGIR.TargetListFilter (IHI 0048B 4.3.15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiFilter {
    /// 0b00: the CPUs in CPUTargetList.
    List(u8),
    /// 0b01: every CPU but the requester.
    AllButSelf,
    /// 0b10: the requester only.
    SelfOnly,
    /// 0b11: reserved; a GIC must not deliver anything for it.
    Reserved,
}

impl SgiFilter {
    /// The GICD_SGIR value that sends SGI `intid` (0-15) this way.
    pub const fn sgir(self, intid: u32) -> u32 {
        let (filter, targets) = match self {
            SgiFilter::List(targets) => (0b00, targets as u32),
            SgiFilter::AllButSelf => (0b01, 0),
            SgiFilter::SelfOnly => (0b10, 0),
            SgiFilter::Reserved => (0b11, 0xff),
        };
        filter << gicd::SGIR_FILTER_SHIFT | targets << gicd::SGIR_TARGETS_SHIFT | (intid & gicd::SGIR_INTID_MASK)
    }

    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            SgiFilter::List(_) => "target list",
            SgiFilter::AllButSelf => "all but self",
            SgiFilter::SelfOnly => "self only",
            SgiFilter::Reserved => "reserved filter 0b11",
        }
    }
}

/// A GICC_IAR value, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iar(pub u32);

impl Iar {
    /// The interrupt ID.
    pub const fn intid(self) -> u32 {
        self.0 & IAR_INTID_MASK
    }

    /// For an SGI, the CPU interface number of the requester.
    pub const fn source(self) -> u32 {
        (self.0 >> IAR_CPUID_SHIFT) & IAR_CPUID_MASK
    }

    /// Whether nothing was acknowledged (INTID 1020-1023).
    pub const fn is_spurious(self) -> bool {
        self.intid() >= 1020
    }
}

/// GICD_TYPER, decoded (IHI 0048B 4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Typer(pub u32);

impl Typer {
    /// ITLinesNumber, bits \[4:0\]: the GIC supports 32 * (N + 1) INTIDs.
    pub const fn it_lines(self) -> u32 {
        self.0 & 0x1f
    }

    /// How many INTIDs the distributor implements (at most 1020).
    pub const fn intids(self) -> u32 {
        let lines = 32 * (self.it_lines() + 1);
        if lines > 1020 {
            1020
        } else {
            lines
        }
    }

    /// CPUNumber, bits \[7:5\]: the number of CPU interfaces minus one.
    pub const fn cpus(self) -> u32 {
        ((self.0 >> 5) & 0x7) + 1
    }

    /// SecurityExtn, bit 10.
    pub const fn security_extn(self) -> bool {
        self.0 & (1 << 10) != 0
    }

    /// LSPI, bits \[15:11\] (only with the Security Extensions).
    pub const fn lspi(self) -> u32 {
        (self.0 >> 11) & 0x1f
    }
}

/// The word offset and bit of `intid` in a one-bit-per-interrupt register
/// bank (GICD_ISENABLERn and friends).
pub const fn bit_position(intid: u32) -> (usize, u32) {
    ((intid / 32) as usize * 4, 1 << (intid % 32))
}

/// The word offset and shift of `intid`'s two-bit field in GICD_ICFGRn.
pub const fn cfg_position(intid: u32) -> (usize, u32) {
    ((intid / 16) as usize * 4, (intid % 16) * 2)
}

#[cfg(all(target_arch = "arm", target_os = "none"))]
pub use driver::Gic;

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod driver {
    use super::{bit_position, gicc, gicd, Iar, SgiFilter};
    use crate::arch;

    /// A GICv2 found in the device tree: the distributor and the CPU
    /// interface frame (the MMU is off: physical addresses).
    #[derive(Clone, Copy, Debug)]
    pub struct Gic {
        dist: usize,
        cpu: usize,
    }

    impl Gic {
        /// # Safety
        ///
        /// `dist` and `cpu` must be a GICv2 distributor and CPU interface,
        /// as the device tree gives them.
        pub const unsafe fn new(dist: usize, cpu: usize) -> Self {
            Self { dist, cpu }
        }

        /// The distributor's base.
        pub const fn dist_base(&self) -> usize {
            self.dist
        }

        /// Reads the distributor word at `offset`.
        pub fn dist_read(&self, offset: usize) -> u32 {
            // SAFETY: `new`'s contract; the guests read only registers of
            // the 4 KiB distributor frame, word-aligned.
            unsafe { arch::mmio_read32(self.dist + offset) }
        }

        /// Writes the distributor word at `offset`.
        pub fn dist_write(&self, offset: usize, value: u32) {
            arch::dsb();
            // SAFETY: as for `dist_read`.
            unsafe { arch::mmio_write32(self.dist + offset, value) };
            arch::dsb();
        }

        /// Reads the distributor byte at `offset`.
        pub fn dist_read8(&self, offset: usize) -> u8 {
            // SAFETY: as for `dist_read`; byte access is for the
            // registers that allow it (and for probing those that do not).
            unsafe { arch::mmio_read8(self.dist + offset) }
        }

        /// Writes the distributor byte at `offset`.
        pub fn dist_write8(&self, offset: usize, value: u8) {
            arch::dsb();
            // SAFETY: as for `dist_read8`.
            unsafe { arch::mmio_write8(self.dist + offset, value) };
            arch::dsb();
        }

        /// Reads the CPU interface word at `offset`.
        pub fn cpu_read(&self, offset: usize) -> u32 {
            // SAFETY: `new`'s contract, within the CPU interface frame.
            unsafe { arch::mmio_read32(self.cpu + offset) }
        }

        /// Writes the CPU interface word at `offset`.
        pub fn cpu_write(&self, offset: usize, value: u32) {
            arch::dsb();
            // SAFETY: as for `cpu_read`.
            unsafe { arch::mmio_write32(self.cpu + offset, value) };
            arch::dsb();
        }

        /// Enables the distributor's Group 0 forwarding.
        pub fn enable_distributor(&self) {
            self.dist_write(gicd::CTLR, gicd::CTLR_ENABLE_GRP0);
        }

        /// Sets up this CPU's interface: Group 0 signalled (as IRQ), every
        /// priority below `pmr` unmasked, no subpriority split.
        pub fn enable_cpu_interface(&self, pmr: u8) {
            self.cpu_write(gicc::PMR, u32::from(pmr));
            self.cpu_write(gicc::BPR, 0);
            self.cpu_write(gicc::CTLR, gicc::CTLR_ENABLE_GRP0);
        }

        /// This CPU's GIC CPU interface mask, as GICD_ITARGETSR0 reads it
        /// (each byte reads as the accessing CPU's own bit; Linux learns
        /// its interface number the same way).
        pub fn own_mask(&self) -> u8 {
            self.dist_read8(gicd::ITARGETSR)
        }

        /// GICC_IAR: acknowledges the highest-priority pending interrupt.
        pub fn ack(&self) -> Iar {
            Iar(self.cpu_read(gicc::IAR))
        }

        /// GICC_EOIR: ends the interrupt `iar` acknowledged.
        pub fn eoi(&self, iar: Iar) {
            self.cpu_write(gicc::EOIR, iar.0);
        }

        /// GICC_PMR.
        pub fn set_priority_mask(&self, pmr: u8) {
            self.cpu_write(gicc::PMR, u32::from(pmr));
        }

        /// Sends SGI `intid` through GICD_SGIR.
        pub fn send_sgi(&self, filter: SgiFilter, intid: u32) {
            self.dist_write(gicd::SGIR, filter.sgir(intid));
        }

        fn write_bit(&self, bank: usize, intid: u32) {
            let (offset, bit) = bit_position(intid);
            self.dist_write(bank + offset, bit);
        }

        fn read_bit(&self, bank: usize, intid: u32) -> bool {
            let (offset, bit) = bit_position(intid);
            self.dist_read(bank + offset) & bit != 0
        }

        /// GICD_ISENABLERn: enables `intid`.
        pub fn enable(&self, intid: u32) {
            self.write_bit(gicd::ISENABLER, intid);
        }

        /// GICD_ICENABLERn: disables `intid`.
        pub fn disable(&self, intid: u32) {
            self.write_bit(gicd::ICENABLER, intid);
        }

        /// GICD_ISPENDRn: makes `intid` pending.
        pub fn set_pending(&self, intid: u32) {
            self.write_bit(gicd::ISPENDR, intid);
        }

        /// GICD_ICPENDRn: clears `intid`'s pending state.
        pub fn clear_pending(&self, intid: u32) {
            self.write_bit(gicd::ICPENDR, intid);
        }

        /// GICD_ICACTIVERn: clears `intid`'s active state.
        pub fn clear_active(&self, intid: u32) {
            self.write_bit(gicd::ICACTIVER, intid);
        }

        /// Whether GICD_ISENABLERn shows `intid` enabled.
        pub fn is_enabled(&self, intid: u32) -> bool {
            self.read_bit(gicd::ISENABLER, intid)
        }

        /// Whether GICD_ISPENDRn shows `intid` pending.
        pub fn is_pending(&self, intid: u32) -> bool {
            self.read_bit(gicd::ISPENDR, intid)
        }

        /// Whether GICD_ISACTIVERn shows `intid` active.
        pub fn is_active(&self, intid: u32) -> bool {
            self.read_bit(gicd::ISACTIVER, intid)
        }

        /// GICD_IPRIORITYRn byte of `intid`.
        pub fn set_priority(&self, intid: u32, priority: u8) {
            self.dist_write8(gicd::IPRIORITYR + intid as usize, priority);
        }

        /// GICD_ITARGETSRn byte of SPI `intid`.
        pub fn set_targets(&self, intid: u32, targets: u8) {
            self.dist_write8(gicd::ITARGETSR + intid as usize, targets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgir_encodings() {
        assert_eq!(SgiFilter::List(0b0000_0010).sgir(5), 0x0002_0005);
        assert_eq!(SgiFilter::List(0xff).sgir(15), 0x00ff_000f);
        assert_eq!(SgiFilter::AllButSelf.sgir(3), 0x0100_0003);
        assert_eq!(SgiFilter::SelfOnly.sgir(0), 0x0200_0000);
        assert_eq!(SgiFilter::Reserved.sgir(1), 0x03ff_0001);
        // Only four INTID bits exist.
        assert_eq!(SgiFilter::SelfOnly.sgir(0x13), 0x0200_0003);
    }

    #[test]
    fn iar_fields() {
        let iar = Iar(0x0c05);
        assert_eq!((iar.intid(), iar.source()), (5, 3));
        assert!(!iar.is_spurious());
        assert!(Iar(0x3ff).is_spurious());
        assert!(Iar(1020).is_spurious());
        assert!(!Iar(1019).is_spurious());
    }

    #[test]
    fn typer_fields() {
        // QEMU virt, 4 CPUs, 288 INTIDs: ITLinesNumber 8, CPUNumber 3.
        let typer = Typer(0x0000_0068);
        assert_eq!((typer.it_lines(), typer.intids(), typer.cpus()), (8, 288, 4));
        assert!(!typer.security_extn());
        assert_eq!(Typer(0x1f).intids(), 1020);
        let secure = Typer(0x0000_fc00 | 0x20);
        assert!(secure.security_extn());
        assert_eq!((secure.lspi(), secure.cpus()), (31, 2));
    }

    #[test]
    fn positions() {
        assert_eq!(bit_position(0), (0, 1));
        assert_eq!(bit_position(27), (0, 1 << 27));
        assert_eq!(bit_position(33), (4, 2));
        assert_eq!(cfg_position(15), (0, 30));
        assert_eq!(cfg_position(33), (8, 2));
    }
}
