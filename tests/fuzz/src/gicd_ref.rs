//! A reference model of the GICv2 distributor's register semantics, written
//! from the specification (Arm IHI 0048B, chapter 4: Table 4-1 "Distributor
//! register map" and the register descriptions of §4.3) for the differential
//! target, deliberately plain: one struct per interrupt, one match arm per
//! register, no shared helpers with the server.
//!
//! Where the specification leaves a choice, the model takes the one the
//! vGIC server documents (its `dist` module header): no Security
//! Extensions (GICD_IGROUPRn read/write, GICD_CTLR EnableGrp0/EnableGrp1,
//! GICD_NSACRn RAZ/WI); SGIs always enabled (ISENABLER0/ICENABLER0 SGI bits
//! read one, ignore writes) and edge-triggered; ISPENDR0/ICPENDR0 SGI bits
//! ignore writes and read "pending from some requester"; a set ISACTIVER0
//! SGI bit makes it active for the writer as requester; PPIs level-sensitive
//! with read-only configuration; five priority bits; a uniprocessor
//! distributor's ITARGETSRn RAZ/WI; word accesses everywhere, byte accesses
//! only to IPRIORITYRn, ITARGETSRn, CPENDSGIRn and SPENDSGIRn, nothing else
//! (halfword, doubleword, misaligned) RAZ/WI; identification values as the
//! server's `regs` module gives them.

use ipc::AccessSize;

/// Register offsets (Table 4-1).
pub mod off {
    /// GICD_CTLR.
    pub const CTLR: u64 = 0x000;
    /// GICD_TYPER.
    pub const TYPER: u64 = 0x004;
    /// GICD_IIDR.
    pub const IIDR: u64 = 0x008;
    /// GICD_IGROUPRn.
    pub const IGROUPR: u64 = 0x080;
    /// GICD_ISENABLERn.
    pub const ISENABLER: u64 = 0x100;
    /// GICD_ICENABLERn.
    pub const ICENABLER: u64 = 0x180;
    /// GICD_ISPENDRn.
    pub const ISPENDR: u64 = 0x200;
    /// GICD_ICPENDRn.
    pub const ICPENDR: u64 = 0x280;
    /// GICD_ISACTIVERn.
    pub const ISACTIVER: u64 = 0x300;
    /// GICD_ICACTIVERn.
    pub const ICACTIVER: u64 = 0x380;
    /// GICD_IPRIORITYRn (to 0x7F8).
    pub const IPRIORITYR: u64 = 0x400;
    /// GICD_ITARGETSRn (to 0xBF8).
    pub const ITARGETSR: u64 = 0x800;
    /// GICD_ICFGRn.
    pub const ICFGR: u64 = 0xC00;
    /// GICD_NSACRn.
    pub const NSACR: u64 = 0xE00;
    /// GICD_SGIR.
    pub const SGIR: u64 = 0xF00;
    /// GICD_CPENDSGIRn.
    pub const CPENDSGIR: u64 = 0xF10;
    /// GICD_SPENDSGIRn.
    pub const SPENDSGIR: u64 = 0xF20;
    /// Identification registers (PIDR4 at 0xFD0 to CIDR3 at 0xFFC).
    pub const ID: u64 = 0xFD0;
}

/// One interrupt (an SPI, or one vCPU's PPI or SGI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Int {
    /// GICD_ISENABLERn.
    pub enabled: bool,
    /// GICD_IGROUPRn.
    pub group1: bool,
    /// GICD_IPRIORITYRn.
    pub priority: u8,
    /// GICD_ICFGRn Int_config[1].
    pub edge: bool,
    /// GICD_ITARGETSRn (SPIs).
    pub targets: u8,
    /// The input line.
    pub line: bool,
    /// The pending latch (edge, or set by GICD_ISPENDRn).
    pub latch: bool,
    /// Active (PPIs and SPIs).
    pub active: bool,
    /// SGIs: pending, one bit per requesting vCPU.
    pub sgi_pending: u8,
    /// SGIs: active, for this requester.
    pub sgi_active: Option<u8>,
}

impl Int {
    /// Pending: a latched edge or write, or a level-sensitive line that is
    /// high (§3.2.4 "Interrupt handling state machine").
    pub fn pending(&self) -> bool {
        self.latch || (!self.edge && self.line)
    }
}

/// The model.
#[derive(Clone, Debug)]
pub struct RefGicd {
    vcpus: u8,
    spis: u16,
    grp0: bool,
    grp1: bool,
    /// Per vCPU: INTIDs 0-31.
    private: Vec<[Int; 32]>,
    /// INTIDs 32 up.
    shared: Vec<Int>,
    /// The identification registers' values from 0xFD0 (taken from the
    /// server: they are its choice, not semantics).
    id: [u32; 12],
    iidr: u32,
}

fn bit(n: u8) -> u8 {
    1u8.checked_shl(u32::from(n)).unwrap_or(0)
}

impl RefGicd {
    /// A distributor at reset: everything disabled, Group 0, priority 0,
    /// level-sensitive, not pending, not active, targets 0.
    pub fn new(vcpus: u8, spis: u16, id: [u32; 12], iidr: u32) -> Self {
        let mut private = vec![[Int::default(); 32]; usize::from(vcpus)];
        for bank in &mut private {
            for sgi in bank.iter_mut().take(16) {
                sgi.enabled = true;
                sgi.edge = true;
            }
        }
        RefGicd {
            vcpus,
            spis,
            grp0: false,
            grp1: false,
            private,
            shared: vec![Int::default(); usize::from(spis)],
            id,
            iidr,
        }
    }

    fn mask(&self) -> u8 {
        ((1u16 << self.vcpus) - 1) as u8
    }

    fn int(&self, vcpu: u8, intid: u32) -> Option<&Int> {
        if intid < 32 {
            self.private.get(usize::from(vcpu))?.get(intid as usize)
        } else {
            self.shared.get(intid as usize - 32)
        }
    }

    fn int_mut(&mut self, vcpu: u8, intid: u32) -> Option<&mut Int> {
        if intid < 32 {
            self.private.get_mut(usize::from(vcpu))?.get_mut(intid as usize)
        } else {
            self.shared.get_mut(intid as usize - 32)
        }
    }

    /// Whether the access is one the distributor carries out (else RAZ/WI).
    fn supported(offset: u64, size: AccessSize) -> bool {
        let byte_ok = (off::IPRIORITYR..off::IPRIORITYR + 1020).contains(&offset)
            || (off::ITARGETSR..off::ITARGETSR + 1020).contains(&offset)
            || (off::CPENDSGIR..off::SPENDSGIR + 16).contains(&offset);
        match size {
            AccessSize::Word => offset.is_multiple_of(4),
            AccessSize::Byte => byte_ok,
            AccessSize::Half | AccessSize::Double => false,
        }
    }

    /// A read of `size` at `offset` by `vcpu`.
    pub fn read(&self, vcpu: u8, offset: u64, size: AccessSize) -> u32 {
        if !Self::supported(offset, size) {
            return 0;
        }
        let bytes = size.bytes() as u64;
        let bits = |base: u64, f: &dyn Fn(&Int, u32) -> bool| -> u32 {
            let n = (offset - base) / 4;
            let mut v = 0;
            for i in 0..32u32 {
                let intid = n as u32 * 32 + i;
                if let Some(int) = self.int(vcpu, intid) {
                    if f(int, intid) {
                        v |= 1 << i;
                    }
                }
            }
            v
        };
        let bytewise =
            |f: &dyn Fn(u64) -> u8| -> u32 { (0..bytes).fold(0, |v, i| v | u32::from(f(offset + i)) << (8 * i)) };
        match offset {
            off::CTLR => u32::from(self.grp0) | u32::from(self.grp1) << 1,
            // ITLinesNumber [4:0], CPUNumber [7:5], SecurityExtn [10] = 0.
            off::TYPER => ((32 + u32::from(self.spis)).div_ceil(32) - 1) | (u32::from(self.vcpus - 1) << 5),
            off::IIDR => self.iidr,
            o if (off::IGROUPR..off::ISENABLER).contains(&o) => bits(off::IGROUPR, &|i, _| i.group1),
            o if (off::ISENABLER..off::ISPENDR).contains(&o) => {
                let base = if o < off::ICENABLER { off::ISENABLER } else { off::ICENABLER };
                bits(base, &|i, _| i.enabled)
            }
            o if (off::ISPENDR..off::ISACTIVER).contains(&o) => {
                let base = if o < off::ICPENDR { off::ISPENDR } else { off::ICPENDR };
                bits(base, &|i, id| if id < 16 { i.sgi_pending != 0 } else { i.pending() })
            }
            o if (off::ISACTIVER..off::IPRIORITYR).contains(&o) => {
                let base = if o < off::ICACTIVER { off::ISACTIVER } else { off::ICACTIVER };
                bits(base, &|i, id| if id < 16 { i.sgi_active.is_some() } else { i.active })
            }
            o if (off::IPRIORITYR..off::IPRIORITYR + 1020).contains(&o) => {
                bytewise(&|a| self.int(vcpu, (a - off::IPRIORITYR) as u32).map_or(0, |i| i.priority))
            }
            o if (off::ITARGETSR..off::ITARGETSR + 1020).contains(&o) => bytewise(&|a| {
                let intid = (a - off::ITARGETSR) as u32;
                match self.int(vcpu, intid) {
                    _ if self.vcpus == 1 => 0,
                    Some(_) if intid < 32 => bit(vcpu),
                    Some(i) => i.targets,
                    None => 0,
                }
            }),
            o if (off::ICFGR..off::ICFGR + 0x100).contains(&o) => {
                let n = ((o - off::ICFGR) / 4) as u32;
                (0..16u32).fold(0, |v, f| match self.int(vcpu, n * 16 + f) {
                    Some(i) if i.edge => v | 0b10 << (2 * f),
                    _ => v,
                })
            }
            o if (off::CPENDSGIR..off::SPENDSGIR + 16).contains(&o) => bytewise(&|a| {
                let sgi = ((a - off::CPENDSGIR) % 16) as u32;
                self.int(vcpu, sgi).map_or(0, |i| i.sgi_pending & self.mask())
            }),
            o if (off::ID..0x1000).contains(&o) => self.id[((o - off::ID) / 4) as usize],
            // GICD_SGIR is write-only; NSACR, reserved and IMPLEMENTATION
            // DEFINED locations read as zero.
            _ => 0,
        }
    }

    /// A write of `value` (its low `size` bytes) at `offset` by `vcpu`.
    pub fn write(&mut self, vcpu: u8, offset: u64, size: AccessSize, value: u32) {
        if !Self::supported(offset, size) {
            return;
        }
        let bytes = size.bytes() as u64;
        let mask = self.mask();
        match offset {
            off::CTLR => {
                self.grp0 = value & 1 != 0;
                self.grp1 = value & 2 != 0;
            }
            o if (off::IGROUPR..off::ISENABLER).contains(&o) => {
                let n = (o - off::IGROUPR) / 4;
                for i in 0..32u32 {
                    if let Some(int) = self.int_mut(vcpu, n as u32 * 32 + i) {
                        int.group1 = value >> i & 1 == 1;
                    }
                }
            }
            o if (off::ISENABLER..off::ICENABLER).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ISENABLER, value, |i, id, _| i.enabled |= id >= 16)
            }
            o if (off::ICENABLER..off::ISPENDR).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ICENABLER, value, |i, id, _| i.enabled &= id < 16)
            }
            o if (off::ISPENDR..off::ICPENDR).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ISPENDR, value, |i, id, _| i.latch |= id >= 16)
            }
            o if (off::ICPENDR..off::ISACTIVER).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ICPENDR, value, |i, id, _| i.latch &= id < 16)
            }
            o if (off::ISACTIVER..off::ICACTIVER).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ISACTIVER, value, |i, id, writer| {
                    if id < 16 {
                        i.sgi_active.get_or_insert(writer);
                    } else {
                        i.active = true;
                    }
                })
            }
            o if (off::ICACTIVER..off::IPRIORITYR).contains(&o) => {
                self.each_set_bit(vcpu, offset - off::ICACTIVER, value, |i, id, _| {
                    if id < 16 {
                        i.sgi_active = None;
                    } else {
                        i.active = false;
                    }
                })
            }
            o if (off::IPRIORITYR..off::IPRIORITYR + 1020).contains(&o) => {
                for b in 0..bytes {
                    if let Some(int) = self.int_mut(vcpu, (o + b - off::IPRIORITYR) as u32) {
                        int.priority = (value >> (8 * b)) as u8 & 0xF8;
                    }
                }
            }
            o if (off::ITARGETSR..off::ITARGETSR + 1020).contains(&o) => {
                for b in 0..bytes {
                    let intid = (o + b - off::ITARGETSR) as u32;
                    if self.vcpus > 1 && intid >= 32 {
                        if let Some(int) = self.int_mut(vcpu, intid) {
                            int.targets = (value >> (8 * b)) as u8 & mask;
                        }
                    }
                }
            }
            o if (off::ICFGR..off::ICFGR + 0x100).contains(&o) => {
                let n = ((o - off::ICFGR) / 4) as u32;
                for f in 0..16u32 {
                    let intid = n * 16 + f;
                    if intid < 32 {
                        continue;
                    }
                    if let Some(int) = self.int_mut(vcpu, intid) {
                        let edge = value >> (2 * f + 1) & 1 == 1;
                        if edge && !int.edge && int.line {
                            // Documented choice: a level that was pending stays
                            // pending as a latch when the interrupt turns edge.
                            int.latch = true;
                        }
                        int.edge = edge;
                    }
                }
            }
            off::SGIR => {
                let sgi = value & 0xf;
                let me = bit(vcpu);
                let targets = match value >> 24 & 0b11 {
                    0 => (value >> 16) as u8 & mask,
                    1 => mask & !me,
                    2 => me,
                    _ => 0,
                };
                for t in 0..self.vcpus {
                    if targets & bit(t) != 0 {
                        if let Some(int) = self.int_mut(t, sgi) {
                            int.sgi_pending |= me;
                        }
                    }
                }
            }
            o if (off::CPENDSGIR..off::SPENDSGIR + 16).contains(&o) => {
                let set = o >= off::SPENDSGIR;
                for b in 0..bytes {
                    let sgi = ((o + b - off::CPENDSGIR) % 16) as u32;
                    let sources = (value >> (8 * b)) as u8 & mask;
                    if let Some(int) = self.int_mut(vcpu, sgi) {
                        if set {
                            int.sgi_pending |= sources;
                        } else {
                            int.sgi_pending &= !sources;
                        }
                    }
                }
            }
            // Read-only, write-only-ignored and reserved locations.
            _ => {}
        }
    }

    /// Apply `f` to each interrupt whose bit is set in `value`, in the
    /// bit-per-interrupt register at `rel` bytes into its bank.
    fn each_set_bit(&mut self, vcpu: u8, rel: u64, value: u32, f: impl Fn(&mut Int, u32, u8)) {
        let n = (rel / 4) as u32;
        for i in 0..32u32 {
            if value >> i & 1 == 1 {
                let intid = n * 32 + i;
                if let Some(int) = self.int_mut(vcpu, intid) {
                    f(int, intid, vcpu);
                }
            }
        }
    }

    /// An interrupt line changed level: a PPI (`target` names its vCPU) or
    /// an implemented SPI. Each `level: true` is an edge for an
    /// edge-triggered interrupt. Returns false for an interrupt that does not
    /// exist (or a PPI without a valid target, or an SGI).
    pub fn set_line(&mut self, intid: u16, level: bool, target: Option<u8>) -> bool {
        let int = match intid {
            16..=31 => match target {
                Some(v) if v < self.vcpus => self.int_mut(v, u32::from(intid)),
                _ => None,
            },
            32.. => self.int_mut(0, u32::from(intid)),
            _ => None,
        };
        let Some(int) = int else { return false };
        int.line = level;
        if level && int.edge {
            int.latch = true;
        }
        true
    }

    /// The vCPU count.
    pub fn vcpus(&self) -> u8 {
        self.vcpus
    }

    /// One word-aligned offset past the last implemented register of each
    /// bank, for sweeps: the INTIDs the distributor implements, rounded up
    /// to 32.
    pub fn interrupt_lines(&self) -> u32 {
        (32 + u32::from(self.spis)).div_ceil(32) * 32
    }
}

/// A distributor access the fuzzer chooses: mostly a real register of the
/// right width, sometimes a wrong width, a misaligned or reserved offset.
#[derive(Clone, Copy, Debug, arbitrary::Arbitrary)]
pub struct FuzzAccess {
    class: u8,
    index: u16,
    size: u8,
    misalign: u8,
}

impl FuzzAccess {
    /// The offset into the distributor frame and the access size, for a
    /// distributor implementing `lines` INTIDs (a multiple of 32).
    pub fn resolve(&self, lines: u32) -> (u64, AccessSize) {
        let index = u64::from(self.index);
        let lines = u64::from(lines);
        let bank = |base: u64| base + 4 * (index % (lines / 32 + 1));
        let (offset, byte_ok) = match self.class % 20 {
            0 => (off::CTLR, false),
            1 => (off::TYPER, false),
            2 => (off::IIDR, false),
            3 => (bank(off::IGROUPR), false),
            4 => (bank(off::ISENABLER), false),
            5 => (bank(off::ICENABLER), false),
            6 => (bank(off::ISPENDR), false),
            7 => (bank(off::ICPENDR), false),
            8 => (bank(off::ISACTIVER), false),
            9 => (bank(off::ICACTIVER), false),
            10 => (off::IPRIORITYR + index % (lines + 8), true),
            11 => (off::ITARGETSR + index % (lines + 8), true),
            12 => (off::ICFGR + 4 * (index % (lines / 16 + 1)), false),
            13 => (off::SGIR, false),
            14 => (off::CPENDSGIR + index % 16, true),
            15 => (off::SPENDSGIR + index % 16, true),
            16 => (off::ID + 4 * (index % 12), false),
            17 => (off::NSACR + 4 * (index % 64), false),
            18 => (index % 0x1100, true),
            _ => (index, true),
        };
        let size = match self.size % 8 {
            0..3 => AccessSize::Word,
            3..6 if byte_ok => AccessSize::Byte,
            3..6 => AccessSize::Word,
            6 => AccessSize::Half,
            _ => AccessSize::Double,
        };
        let offset = match (size, self.misalign % 8) {
            // Word accesses to a byte register's INTID: align down, mostly.
            (AccessSize::Word, 0..7) => offset & !3,
            (AccessSize::Half, 0..7) => offset & !1,
            (AccessSize::Double, 0..7) => offset & !7,
            _ => offset,
        };
        (offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(vcpus: u8, spis: u16) -> RefGicd {
        RefGicd::new(vcpus, spis, [0; 12], 0x1234)
    }

    #[test]
    fn typer_and_reset_values() {
        let g = model(4, 64);
        // ITLinesNumber 2 (96 INTIDs), CPUNumber 3.
        assert_eq!(g.read(0, off::TYPER, AccessSize::Word), 2 | 3 << 5);
        assert_eq!(g.read(0, off::ISENABLER, AccessSize::Word), 0xffff, "SGIs always enabled");
        assert_eq!(g.read(0, off::ICFGR, AccessSize::Word), 0xaaaa_aaaa, "SGIs edge-triggered");
        assert_eq!(g.read(2, off::ITARGETSR + 4, AccessSize::Byte), 1 << 2, "private targets name the reader");
        assert_eq!(g.read(0, off::IIDR, AccessSize::Word), 0x1234);
    }

    #[test]
    fn widths_and_reserved() {
        let mut g = model(2, 32);
        g.write(0, off::IPRIORITYR + 33, AccessSize::Byte, 0xff);
        assert_eq!(g.read(1, off::IPRIORITYR + 32, AccessSize::Word), 0xf800, "five bits, SPIs shared");
        g.write(0, off::CTLR + 1, AccessSize::Byte, 0xff);
        assert_eq!(g.read(0, off::CTLR, AccessSize::Word), 0, "byte access to a word register is ignored");
        g.write(0, off::IPRIORITYR, AccessSize::Half, 0xffff);
        assert_eq!(g.read(0, off::IPRIORITYR, AccessSize::Word), 0, "no halfword accesses");
        assert_eq!(g.read(0, off::ISENABLER + 1, AccessSize::Word), 0, "misaligned");
        // INTIDs beyond the SPIs read as zero.
        g.write(0, off::ISENABLER + 8, AccessSize::Word, u32::MAX);
        assert_eq!(g.read(0, off::ISENABLER + 8, AccessSize::Word), 0);
    }

    #[test]
    fn level_edge_and_pending() {
        let mut g = model(1, 32);
        assert!(g.set_line(40, true, None));
        assert_eq!(g.read(0, off::ISPENDR + 4, AccessSize::Word), 1 << 8, "level: pending while high");
        g.write(0, off::ICPENDR + 4, AccessSize::Word, 1 << 8);
        assert_eq!(g.read(0, off::ISPENDR + 4, AccessSize::Word), 1 << 8, "the line keeps it pending");
        assert!(g.set_line(40, false, None));
        assert_eq!(g.read(0, off::ISPENDR + 4, AccessSize::Word), 0);
        // Edge: each rising report latches.
        g.write(0, off::ICFGR + 8, AccessSize::Word, 0b10 << 16);
        assert!(g.set_line(40, true, None));
        assert!(g.set_line(40, false, None));
        assert_eq!(g.read(0, off::ISPENDR + 4, AccessSize::Word), 1 << 8);
        assert!(!g.set_line(5, true, Some(0)), "no line for an SGI");
        assert!(!g.set_line(20, true, None), "a PPI needs its vCPU");
        assert!(!g.set_line(64, true, None), "not implemented");
    }

    #[test]
    fn sgis_per_requester() {
        let mut g = model(3, 32);
        // vCPU 1 sends SGI 5 to everyone else; vCPU 2 to itself.
        g.write(1, off::SGIR, AccessSize::Word, 1 << 24 | 5);
        g.write(2, off::SGIR, AccessSize::Word, 2 << 24 | 5);
        assert_eq!(g.read(0, off::SPENDSGIR + 5, AccessSize::Byte), 0b010);
        assert_eq!(g.read(2, off::SPENDSGIR + 4, AccessSize::Word), 0b110 << 8);
        assert_eq!(g.read(1, off::SPENDSGIR + 5, AccessSize::Byte), 0);
        g.write(2, off::CPENDSGIR + 5, AccessSize::Byte, 0b010);
        assert_eq!(g.read(2, off::ISPENDR, AccessSize::Word), 1 << 5, "still pending from vCPU 2");
        g.write(0, off::ISACTIVER, AccessSize::Word, 1 << 5);
        assert_eq!(g.read(0, off::ISACTIVER, AccessSize::Word), 1 << 5);
        assert_eq!(g.read(1, off::ISACTIVER, AccessSize::Word), 0, "banked");
    }

    #[test]
    fn the_generator_stays_in_the_frame() {
        for class in 0..=255u8 {
            for index in [0u16, 1, 31, 1000, u16::MAX] {
                let a = FuzzAccess { class, index, size: class, misalign: class };
                let (offset, _) = a.resolve(1024);
                assert!(offset < 0x1_0000, "{a:?}");
            }
        }
    }
}
