//! The emulated GICv2 distributor: per-interrupt configuration and state,
//! banked per vCPU for SGIs and PPIs, and the semantics of every distributor
//! register (Arm IHI 0048B §4.3) on that state.
//!
//! # The state of one interrupt
//!
//! An SPI or PPI ([`IrqState`]) has its input `line`, a pending `latch` (set
//! by an edge on an edge-triggered line, by GICD_ISPENDR, or by a
//! hardware-backed line going high; cleared by GICD_ICPENDR and by the
//! guest's acknowledge) and an `active` flag. It is pending when:
//! - edge-triggered or hardware-backed: the latch is set;
//! - level-sensitive: the latch is set or the line is high (so GICD_ICPENDR
//!   does not clear a level interrupt whose line is still asserted, and a
//!   level interrupt acknowledged with its line still high is active and
//!   pending).
//!
//! An SGI ([`SgiState`]) is pending per requesting vCPU (as GICD_SPENDSGIRn
//! shows) and active for at most one requester at a time (one list register
//! per INTID: the virtual CPU interface finds entries by VirtualID).
//!
//! The latch has a companion `fresh` flag: "pending was asserted again since
//! the interrupt was last written into a list register as pending". When the
//! guest's acknowledge of a list-register entry is seen later, it consumes
//! the pending state only if nothing re-asserted it meanwhile, so an edge
//! that arrives while the entry is in flight is not lost.
//!
//! # Configuration choices (where the specification leaves one)
//!
//! - No Security Extensions (GICD_TYPER.SecurityExtn = 0), so interrupt
//!   grouping is visible and programmable: GICD_IGROUPRn is RW (reset 0,
//!   Group 0) and GICD_CTLR has EnableGrp0 and EnableGrp1, as QEMU's GICv2
//!   without security and KVM's vGIC (IIDR revision 2) present it. Group 1
//!   interrupts go to the guest with the list register's Grp1 bit set, so the
//!   guest's GICV_CTLR group enables and FIQEn apply as on hardware.
//! - SGIs are permanently enabled: their GICD_ISENABLER0/ICENABLER0 bits
//!   read as one and ignore writes (IMPLEMENTATION DEFINED by §4.3,
//!   GICD_ISENABLERn; QEMU and the GIC-400 do the same).
//! - GICD_ISPENDR0/ICPENDR0 SGI bits ignore writes (GICv2 sets and clears
//!   SGI pending state per requester through GICD_SPENDSGIRn/CPENDSGIRn);
//!   they read as "pending from some requester".
//! - A write of 1 to an SGI's GICD_ISACTIVER0 bit makes it active for the
//!   writing vCPU as requester, if it is not active already.
//! - PPIs are level-sensitive and their GICD_ICFGR1 fields read-only
//!   (whether PPI configuration is programmable is IMPLEMENTATION DEFINED;
//!   every PPI this hypervisor drives, the timers, is a level output, as KVM
//!   also fixes them). SGIs are edge-triggered, read-only. SPIs reset to
//!   level-sensitive and are programmable. Int_config\[0\] is reserved in GICv2
//!   and reads as zero.
//! - Five priority bits (GICH_VTR.PRIbits of the virtual interface, which a
//!   list register's Priority field carries): the low three bits of every
//!   GICD_IPRIORITYRn byte are RAZ/WI.
//! - An SPI whose GICD_ITARGETSRn names several vCPUs (1-N) is delivered to
//!   the lowest-numbered one. With a single vCPU, GICD_ITARGETSRn is RAZ/WI
//!   as §4.3 requires of a uniprocessor implementation and every SPI goes to
//!   vCPU 0.
//! - Every PPI 16-31 is implemented; SPIs 32 to 32 + spis - 1.

use heapless::Vec;
use ipc::{IntId, VcpuId, MAX_VCPUS};
use log::debug;
use serde::{Deserialize, Serialize};

use crate::regs::{ctlr, icfgr, id, iidr, typer, GicdReg, SgiFilter, SgiRequest, Width};

/// SGIs: INTIDs 0-15.
pub const SGIS: u16 = 16;
/// SGIs and PPIs: INTIDs 0-31, banked per vCPU.
pub const PRIVATE: u16 = 32;
/// PPIs per vCPU.
pub const PPIS: usize = (PRIVATE - SGIS) as usize;
/// The most SPIs a GICv2 distributor has (INTIDs 32-1019).
pub const MAX_SPIS: usize = (IntId::LIMIT - PRIVATE) as usize;
/// The implemented priority bits (five: the top bits of each byte).
pub const PRIORITY_MASK: u8 = 0xf8;

/// One interrupt as a list register holds it: an SGI from one requester to
/// one target, one vCPU's PPI, or an SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Irq {
    /// SGI `sgi` (0-15) of vCPU `target`, requested by `source`.
    Sgi {
        /// The vCPU it is pending for.
        target: VcpuId,
        /// The SGI number.
        sgi: u8,
        /// The requesting vCPU (the list register's CPUID).
        source: VcpuId,
    },
    /// PPI `intid` (16-31) of `vcpu`.
    Ppi {
        /// The vCPU it belongs to.
        vcpu: VcpuId,
        /// The INTID.
        intid: u16,
    },
    /// SPI `intid` (32-1019).
    Spi {
        /// The INTID.
        intid: u16,
    },
}

impl Irq {
    /// The INTID the guest sees.
    pub fn intid(&self) -> u16 {
        match *self {
            Irq::Sgi { sgi, .. } => u16::from(sgi),
            Irq::Ppi { intid, .. } | Irq::Spi { intid } => intid,
        }
    }

    /// The requesting vCPU of an SGI (the list register's CPUID), else 0.
    pub fn source(&self) -> u8 {
        match *self {
            Irq::Sgi { source, .. } => source.0,
            _ => 0,
        }
    }

    /// The vCPU a private interrupt belongs to.
    pub fn owner(&self) -> Option<VcpuId> {
        match *self {
            Irq::Sgi { target, .. } => Some(target),
            Irq::Ppi { vcpu, .. } => Some(vcpu),
            Irq::Spi { .. } => None,
        }
    }
}

/// The configuration and state of one PPI or SPI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IrqState {
    /// GICD_ISENABLERn: forwarded to the CPU interfaces.
    pub enabled: bool,
    /// GICD_IGROUPRn: Group 1 (else Group 0).
    pub group1: bool,
    /// GICD_IPRIORITYRn (masked to [`PRIORITY_MASK`]).
    pub priority: u8,
    /// GICD_ICFGRn Int_config\[1\]: edge-triggered (else level-sensitive).
    pub edge: bool,
    /// GICD_ITARGETSRn (SPIs; masked to the vCPUs that exist).
    pub targets: u8,
    /// The input line's level.
    pub line: bool,
    /// The pending latch.
    pub latch: bool,
    /// Pending re-asserted since last written to a list register.
    pub fresh: bool,
    /// Active.
    pub active: bool,
    /// The physical interrupt this one is backed by.
    pub hw: Option<IntId>,
    /// The backing physical interrupt has been acknowledged by the monitor
    /// and stays active until this server asks the monitor to deactivate it:
    /// once the guest has finished the virtual interrupt, or when the
    /// virtual interrupt goes away (see [`IrqState::hw_owed`]).
    pub hw_live: bool,
    /// The number of the last numbered change of the line taken
    /// (`SetLine::change`; 0: none).
    pub line_change: u32,
    /// Last made pending by `VgicRequest::Pend` while its line was low,
    /// and the line has not risen since: a level-sensitive interrupt whose
    /// EOI need not be sampled (see [`Instance::wants_eoi`]).
    pub pended: bool,
}

impl IrqState {
    /// Pending, as GICD_ISPENDRn shows it.
    pub fn pending(&self) -> bool {
        if self.edge || self.hw.is_some() {
            self.latch
        } else {
            self.latch || self.line
        }
    }

    /// The physical interrupt that is active on this one's behalf, if any.
    pub fn hw_link(&self) -> Option<IntId> {
        self.hw.filter(|_| self.hw_live)
    }

    /// The physical interrupt is active for a virtual interrupt that is
    /// neither pending nor active any more (the guest finished it, or it was
    /// cleared or disabled): this server must have it deactivated.
    pub fn hw_owed(&self) -> bool {
        self.hw_live && !self.pending() && !self.active
    }

    /// Nothing to deliver, finish or deactivate: neither pending (latch or
    /// line), active, nor holding its physical interrupt.
    pub fn idle(&self) -> bool {
        !self.latch && !self.line && !self.active && !self.hw_live
    }

    fn set_pending(&mut self) {
        self.latch = true;
        self.fresh = true;
    }

    fn clear_pending(&mut self) {
        self.latch = false;
        self.fresh = false;
    }
}

/// The configuration and state of one SGI of one target vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SgiState {
    /// GICD_IGROUPR0 bit.
    pub group1: bool,
    /// GICD_IPRIORITYRn byte.
    pub priority: u8,
    /// Pending, one bit per requesting vCPU (GICD_SPENDSGIRn).
    pub pending: u8,
    /// `fresh`, one bit per requesting vCPU.
    pub fresh: u8,
    /// Active for this requester.
    pub active: Option<u8>,
}

impl SgiState {
    /// Pending from some requester, or active: what the list-register
    /// scans look at.
    pub fn live(&self) -> bool {
        self.pending != 0 || self.active.is_some()
    }
}

/// The banked state of one vCPU: its SGIs and PPIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Banked {
    /// SGIs 0-15.
    pub sgis: [SgiState; SGIS as usize],
    /// PPIs 16-31.
    pub ppis: [IrqState; PPIS],
    /// One bit per SGI that may be live (pending or active): set whenever
    /// the SGI's state is handed out for change, cleared by
    /// [`Distributor::tidy`] once it is idle. The live scans test only these
    /// (as the busy bitmap does for SPIs), where testing all sixteen SGIs
    /// and all sixteen PPIs cost some 230 instructions a refresh.
    sgis_touched: u32,
    /// The same for the PPIs (bit n for INTID 16 + n).
    ppis_touched: u32,
}

/// One interrupt instance's state, as list-register management sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Pending.
    pub pending: bool,
    /// Active.
    pub active: bool,
    /// Enabled.
    pub enabled: bool,
    /// Group 1.
    pub group1: bool,
    /// Priority.
    pub priority: u8,
    /// Its list register asks for EOI maintenance: a level-sensitive
    /// interrupt, so that a line still high is seen again at once, and one
    /// backed by an active physical interrupt, so that this server learns
    /// when to have that deactivated.
    pub wants_eoi: bool,
    /// The physical interrupt active on its behalf.
    pub hw: Option<IntId>,
    /// A physical deactivation is owed (see [`IrqState::hw_owed`]).
    pub hw_owed: bool,
}

/// What a distributor write touched, for deciding which vCPUs to kick: the
/// interrupts that changed, or [`Touch::All`].
///
/// A bare `Vec`, not a struct holding one: rustc clears a struct that holds
/// a heapless `Vec` whole when it builds one (this list with a flag beside
/// it was 133 bytes cleared, 44 instructions on every distributor write),
/// where a `Vec` alone only has its length set.
pub type Touched = Vec<Touch, 32>;

/// One interrupt a write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Touch {
    /// An SGI or PPI of a vCPU.
    Private(VcpuId, u16),
    /// An SPI.
    Spi(u16),
    /// Everything may have changed (GICD_CTLR; or more interrupts than the
    /// list holds).
    All,
}

/// Note in `t` that `vcpu`'s `intid` (banked for an SGI or PPI) changed.
fn touch(t: &mut Touched, vcpu: VcpuId, intid: u16) {
    let touch = if intid < PRIVATE { Touch::Private(vcpu, intid) } else { Touch::Spi(intid) };
    if !t.contains(&touch) && t.push(touch).is_err() {
        touch_all(t);
    }
}

/// Note in `t` that everything may have changed.
fn touch_all(t: &mut Touched) {
    t.clear();
    // Cannot fail: just emptied.
    let _ = t.push(Touch::All);
}

/// Whether `t` says everything may have changed.
pub fn touched_all(t: &Touched) -> bool {
    t.contains(&Touch::All)
}

/// A mutable handle on one INTID's state for register accesses.
enum IntMut<'a> {
    Sgi(&'a mut SgiState),
    Irq(&'a mut IrqState),
}

/// A read-only view of one INTID for register reads.
#[derive(Clone, Copy)]
struct IntView {
    group1: bool,
    enabled: bool,
    pending: bool,
    active: bool,
    priority: u8,
    edge: bool,
}

/// The set bits of a word, lowest first.
pub(crate) struct BitIter(pub(crate) u32);

impl Iterator for BitIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(b as usize)
    }
}

/// The distributor. (Two are equal when their states are: the change counts
/// [`Distributor::generations`] are bookkeeping, not state.)
#[derive(Debug, Eq, Serialize, Deserialize)]
pub struct Distributor {
    vcpus: u8,
    spi_count: u16,
    enable_grp0: bool,
    enable_grp1: bool,
    banked: Vec<Banked, MAX_VCPUS>,
    spis: Vec<IrqState, MAX_SPIS>,
    /// One bit per SPI that may be busy (pending, line high, active, or
    /// owing its physical interrupt a deactivation): set whenever the SPI's
    /// state is reached for writing, cleared by [`Distributor::tidy`] when
    /// it is found idle. The list-register and wake-up scans visit only
    /// these, rather than all 988 SPIs several times per refresh (with
    /// QEMU `virt`'s 256 SPIs the scans were three quarters of the vGIC's
    /// instructions per timer tick).
    busy: [u32; BUSY_WORDS],
    /// One bit per word of `busy` that is not zero: the scans skip the empty
    /// words without reading them (31 words, visited three or four times
    /// per refresh, were a tenth of the vGIC's instructions per virtual IPI).
    busy_words: u32,
    /// For each vCPU, counts the calls that may change the state of its
    /// private interrupts (its SGIs and PPIs); [`Self::shared_generation`]
    /// counts those that may change anything else (the SPIs, the global
    /// enables, and every register write, whatever it touched): every
    /// `&mut self` method but [`Distributor::tidy`], which forgets only
    /// hints, counts in one of them when it may change state. A vCPU's
    /// count plus the shared one ([`Distributor::generation`]) covers all
    /// that vCPU's refresh reads of the distributor: equal sums mean the
    /// same state for it, which lets a refresh with nothing new skip
    /// choosing list registers again (`VgicServer::refresh`), while another
    /// vCPU's SGIs and PPIs (its timer's ticks, its IPIs) do not count
    /// against it. 64 bits, so that they never wrap round to a sum a vCPU
    /// saw.
    private_generation: [u64; MAX_VCPUS],
    /// See [`Self::private_generation`].
    shared_generation: u64,
}

/// `source`'s elements into `target`, in place. With equal lengths (a
/// checkpoint of the same VM, the monitor's case) one block copy: heapless's
/// `extend_from_slice` clones element by element, about 11 instructions for
/// each 20-byte SPI (2,800 a checkpoint, 20 a vGIC request at the default
/// interval), where the copy takes about 1.
fn copy_vec<T: Copy, const N: usize>(target: &mut Vec<T, N>, source: &Vec<T, N>) {
    if target.len() == source.len() {
        target.copy_from_slice(source);
    } else {
        target.clear();
        // Cannot fail: the same capacity.
        let _ = target.extend_from_slice(source);
    }
}

impl Clone for Distributor {
    fn clone(&self) -> Self {
        let mut copy = Distributor::new(self.vcpus, 0);
        copy.clone_from(self);
        copy
    }

    /// In place, element by element: the monitor checkpoints the vGIC
    /// server this way, and a derived `clone_from` builds the copy (17 KB)
    /// aside and then moves it, a second copy as long as the first.
    fn clone_from(&mut self, source: &Self) {
        // A pattern, so that a new field cannot be forgotten here.
        let Distributor {
            vcpus,
            spi_count,
            enable_grp0,
            enable_grp1,
            banked,
            spis,
            busy,
            busy_words,
            private_generation,
            shared_generation,
        } = source;
        self.vcpus = *vcpus;
        self.spi_count = *spi_count;
        self.enable_grp0 = *enable_grp0;
        self.enable_grp1 = *enable_grp1;
        copy_vec(&mut self.banked, banked);
        copy_vec(&mut self.spis, spis);
        self.busy = *busy;
        self.busy_words = *busy_words;
        self.private_generation = *private_generation;
        self.shared_generation = *shared_generation;
    }
}

impl PartialEq for Distributor {
    fn eq(&self, other: &Self) -> bool {
        // Every field but the change count (a pattern, so that a new field
        // cannot be forgotten here).
        let Distributor {
            vcpus,
            spi_count,
            enable_grp0,
            enable_grp1,
            banked,
            spis,
            busy,
            busy_words,
            private_generation: _,
            shared_generation: _,
        } = self;
        (vcpus, spi_count, enable_grp0, enable_grp1, banked, spis, busy, busy_words)
            == (
                &other.vcpus,
                &other.spi_count,
                &other.enable_grp0,
                &other.enable_grp1,
                &other.banked,
                &other.spis,
                &other.busy,
                &other.busy_words,
            )
    }
}

/// The iterator of [`Distributor::busy_spis`]. (Its own rather than a
/// `flat_map` of bit iterators: that was an out-of-line call costing some
/// twenty instructions even when nothing is busy, three times a refresh.)
pub struct BusySpis<'a> {
    dist: &'a Distributor,
    /// The words of `busy` not visited yet (a bit each).
    words: u32,
    /// The word being visited.
    word: usize,
    /// Its bits not visited yet.
    bits: u32,
}

impl<'a> Iterator for BusySpis<'a> {
    type Item = (u16, &'a IrqState);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while self.bits == 0 {
                if self.words == 0 {
                    return None;
                }
                self.word = self.words.trailing_zeros() as usize;
                self.words &= self.words - 1;
                self.bits = self.dist.busy.get(self.word).copied().unwrap_or(0);
            }
            let i = self.word * 32 + self.bits.trailing_zeros() as usize;
            self.bits &= self.bits - 1;
            if let Some(s) = self.dist.spis.get(i).filter(|s| !s.idle()) {
                return Some((i as u16 + PRIVATE, s));
            }
        }
    }
}

/// Words of [`Distributor::busy`].
const BUSY_WORDS: usize = MAX_SPIS.div_ceil(32);
// `busy_words` has a bit for each.
const _: () = assert!(BUSY_WORDS <= 32);

impl Distributor {
    /// A distributor in its reset state for `vcpus` vCPUs (clamped to 1 to
    /// [`MAX_VCPUS`]) and `spis` SPIs (clamped to [`MAX_SPIS`]).
    pub fn new(vcpus: u8, spis: u16) -> Self {
        let vcpus = vcpus.clamp(1, MAX_VCPUS as u8);
        let spi_count = spis.min(MAX_SPIS as u16);
        let mut banked = Vec::new();
        for _ in 0..vcpus {
            // Cannot fail: at most MAX_VCPUS.
            let _ = banked.push(Banked::default());
        }
        let mut spis = Vec::new();
        for _ in 0..spi_count {
            // Cannot fail: at most MAX_SPIS.
            let _ = spis.push(IrqState::default());
        }
        Distributor {
            vcpus,
            spi_count,
            enable_grp0: false,
            enable_grp1: false,
            banked,
            spis,
            busy: [0; BUSY_WORDS],
            busy_words: 0,
            private_generation: [0; MAX_VCPUS],
            shared_generation: 0,
        }
    }

    /// How many calls that may have changed the state `vcpu`'s refresh
    /// reads there have been (see [`Self::private_generation`]).
    pub fn generation(&self, vcpu: VcpuId) -> u64 {
        let private = self.private_generation.get(vcpu.index()).copied().unwrap_or(0);
        private.wrapping_add(self.shared_generation)
    }

    /// Every count (for the tests: a copy must count as its original).
    pub fn generations(&self) -> ([u64; MAX_VCPUS], u64) {
        (self.private_generation, self.shared_generation)
    }

    /// A call that may change anything.
    fn changing(&mut self) {
        self.shared_generation = self.shared_generation.wrapping_add(1);
    }

    /// A call that may change `irq`'s state alone.
    fn changing_irq(&mut self, irq: Irq) {
        match irq.owner() {
            Some(vcpu) => self.changing_private(vcpu),
            None => self.changing(),
        }
    }

    /// A call that may change the state of `vcpu`'s SGIs and PPIs alone (a
    /// vCPU beyond the counts: the shared count).
    fn changing_private(&mut self, vcpu: VcpuId) {
        match self.private_generation.get_mut(vcpu.index()) {
            Some(g) => *g = g.wrapping_add(1),
            None => self.changing(),
        }
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u8 {
        self.vcpus
    }

    /// Number of implemented SPIs.
    pub fn spi_count(&self) -> u16 {
        self.spi_count
    }

    /// The mask of vCPUs that exist.
    pub fn vcpu_mask(&self) -> u8 {
        match 1u8.checked_shl(u32::from(self.vcpus)) {
            Some(bit) => bit.wrapping_sub(1),
            None => u8::MAX,
        }
    }

    /// Whether `vcpu` exists.
    pub fn has_vcpu(&self, vcpu: VcpuId) -> bool {
        vcpu.0 < self.vcpus && self.banked.get(vcpu.index()).is_some()
    }

    /// GICD_CTLR's enable for the group.
    pub fn group_enabled(&self, group1: bool) -> bool {
        if group1 {
            self.enable_grp1
        } else {
            self.enable_grp0
        }
    }

    /// One SGI of `target`.
    pub fn sgi(&self, target: VcpuId, sgi: u8) -> Option<&SgiState> {
        self.banked.get(target.index())?.sgis.get(usize::from(sgi))
    }

    /// The SGIs of `vcpu` (as target) that are pending from some source or
    /// active: bit n for SGI n. The list-register scans visit only these.
    pub fn live_sgis(&self, vcpu: VcpuId) -> u32 {
        let Some(banked) = self.banked.get(vcpu.index()) else {
            return 0;
        };
        BitIter(banked.sgis_touched)
            .filter(|&n| banked.sgis.get(n).is_some_and(SgiState::live))
            .fold(0, |m, n| m | 1 << n)
    }

    /// The PPIs of `vcpu` that are not idle ([`IrqState::idle`]): bit n for
    /// INTID 16 + n. The list-register and deactivation scans visit only
    /// these.
    pub fn live_ppis(&self, vcpu: VcpuId) -> u32 {
        let Some(banked) = self.banked.get(vcpu.index()) else {
            return 0;
        };
        BitIter(banked.ppis_touched)
            .filter(|&n| banked.ppis.get(n).is_some_and(|s| !s.idle()))
            .fold(0, |m, n| m | 1 << n)
    }

    /// A PPI (INTID 16-31) of `vcpu`.
    pub fn ppi(&self, vcpu: VcpuId, intid: u16) -> Option<&IrqState> {
        let i = usize::from(intid.checked_sub(SGIS)?);
        self.banked.get(vcpu.index())?.ppis.get(i)
    }

    /// An SPI (INTID 32-1019), if implemented.
    pub fn spi(&self, intid: u16) -> Option<&IrqState> {
        self.spis.get(usize::from(intid.checked_sub(PRIVATE)?))
    }

    /// The SPIs, from INTID 32.
    pub fn spis(&self) -> impl Iterator<Item = (u16, &IrqState)> {
        self.spis.iter().enumerate().map(|(i, s)| (i as u16 + PRIVATE, s))
    }

    /// The SPIs that are not idle (pending, line high, active, or owing a
    /// physical deactivation), in INTID order: [`Self::spis`] without the
    /// idle ones, found through the busy bitmap.
    pub fn busy_spis(&self) -> BusySpis<'_> {
        BusySpis { dist: self, words: self.busy_words, word: 0, bits: 0 }
    }

    /// Forget the busy bits of SPIs, and the touched bits of SGIs and PPIs,
    /// that have become idle.
    pub fn tidy(&mut self) {
        for banked in self.banked.iter_mut() {
            for n in BitIter(banked.sgis_touched) {
                if !banked.sgis.get(n).is_some_and(SgiState::live) {
                    banked.sgis_touched &= !(1 << n);
                }
            }
            for n in BitIter(banked.ppis_touched) {
                if banked.ppis.get(n).is_none_or(IrqState::idle) {
                    banked.ppis_touched &= !(1 << n);
                }
            }
        }
        for w in BitIter(self.busy_words) {
            let Some(word) = self.busy.get_mut(w) else {
                continue;
            };
            for b in BitIter(*word) {
                if self.spis.get(w * 32 + b).is_none_or(IrqState::idle) {
                    *word &= !(1 << b);
                }
            }
            if *word == 0 {
                self.busy_words &= !(1 << w);
            }
        }
    }

    /// The vCPU an SPI is delivered to: the lowest-numbered in its target
    /// list, or vCPU 0 in a uniprocessor VM.
    pub fn spi_target(&self, state: &IrqState) -> Option<VcpuId> {
        if self.vcpus == 1 {
            return Some(VcpuId(0));
        }
        let targets = state.targets & self.vcpu_mask();
        (targets != 0).then(|| VcpuId(targets.trailing_zeros() as u8))
    }

    fn irq_state(&self, irq: Irq) -> Option<&IrqState> {
        match irq {
            Irq::Ppi { vcpu, intid } => self.ppi(vcpu, intid),
            Irq::Spi { intid } => self.spi(intid),
            Irq::Sgi { .. } => None,
        }
    }

    fn irq_state_mut(&mut self, irq: Irq) -> Option<&mut IrqState> {
        match irq {
            Irq::Ppi { vcpu, intid } => {
                let i = usize::from(intid.checked_sub(SGIS)?);
                let banked = self.banked.get_mut(vcpu.index())?;
                let state = banked.ppis.get_mut(i)?;
                banked.ppis_touched |= 1 << i;
                Some(state)
            }
            Irq::Spi { intid } => {
                let i = usize::from(intid.checked_sub(PRIVATE)?);
                let state = self.spis.get_mut(i)?;
                if let Some(word) = self.busy.get_mut(i / 32) {
                    *word |= 1 << (i % 32);
                    self.busy_words |= 1 << (i / 32);
                }
                Some(state)
            }
            Irq::Sgi { .. } => None,
        }
    }

    fn sgi_mut(&mut self, target: VcpuId, sgi: u8) -> Option<&mut SgiState> {
        let banked = self.banked.get_mut(target.index())?;
        let state = banked.sgis.get_mut(usize::from(sgi))?;
        banked.sgis_touched |= 1 << sgi;
        Some(state)
    }

    /// The state of one interrupt instance, if it exists.
    // Always inlined: each caller reads a few of its fields, and inlined
    // the rest is not computed (a timer tick's vGIC instructions fell by
    // 150).
    #[inline(always)]
    pub fn instance(&self, irq: Irq) -> Option<Instance> {
        if let Irq::Sgi { target, sgi, source } = irq {
            if source.0 >= self.vcpus {
                return None;
            }
            let s = self.sgi(target, sgi)?;
            let bit = 1u8.checked_shl(u32::from(source.0))?;
            return Some(Instance {
                pending: s.pending & bit != 0,
                active: s.active == Some(source.0),
                enabled: true,
                group1: s.group1,
                priority: s.priority,
                wants_eoi: false,
                hw: None,
                hw_owed: false,
            });
        }
        let s = self.irq_state(irq)?;
        Some(Instance {
            pending: s.pending(),
            active: s.active,
            enabled: s.enabled,
            group1: s.group1,
            priority: s.priority,
            // A level-sensitive line may still be high when the guest has
            // finished: the EOI is where it is sampled again. Not after a
            // `Pend` with the line low (the virtual timer delivered masked):
            // a rise of the line would be a `SetLine`, which clears
            // `pended` and refreshes the list registers, so the guest
            // finishes it silently, as an edge. (Only `pended`, not every
            // low line: an interrupt acknowledged and then lowered, as a
            // driver's handler does, keeps the register it was listed with.)
            wants_eoi: !(s.edge || s.pended) || s.hw_link().is_some(),
            hw: s.hw_link(),
            hw_owed: s.hw_owed(),
        })
    }

    /// Pending, enabled and its group enabled: the distributor forwards it.
    pub fn forwardable(&self, inst: &Instance) -> bool {
        inst.pending && inst.enabled && self.group_enabled(inst.group1)
    }

    /// The guest acknowledged `irq` from a list register: its pending state
    /// is consumed (unless re-asserted since the entry was written) and it is
    /// active. (Out of line, as `deactivate`: inlined into the fold of a
    /// list-register status, their lookups of every kind of interrupt were
    /// prepared before its loop, for each fold; an IPI paid 54 instructions
    /// more, a timer tick 32.)
    #[inline(never)]
    pub fn ack(&mut self, irq: Irq) {
        self.changing_irq(irq);
        if let Irq::Sgi { target, sgi, source } = irq {
            if let Some(s) = self.sgi_mut(target, sgi) {
                let bit = 1u8.checked_shl(u32::from(source.0)).unwrap_or(0);
                if s.fresh & bit == 0 {
                    s.pending &= !bit;
                }
                s.active = Some(source.0);
            }
        } else if let Some(s) = self.irq_state_mut(irq) {
            if !s.fresh {
                s.latch = false;
            }
            s.active = true;
        }
    }

    /// The guest deactivated `irq` from a list register. (A backing physical
    /// interrupt stays active: [`IrqState::hw_owed`] then says so.)
    #[inline(never)]
    pub fn deactivate(&mut self, irq: Irq) {
        self.changing_irq(irq);
        if let Irq::Sgi { target, sgi, source } = irq {
            if let Some(s) = self.sgi_mut(target, sgi) {
                if s.active == Some(source.0) {
                    s.active = None;
                }
            }
        } else if let Some(s) = self.irq_state_mut(irq) {
            s.active = false;
        }
    }

    /// `irq` was written into a list register, pending if `pending`.
    pub fn written(&mut self, irq: Irq, pending: bool) {
        // Counted only when it changes something: a refresh notes every
        // interrupt it leaves listed, most of them written before.
        if !pending {
            return;
        }
        let changed = if let Irq::Sgi { target, sgi, source } = irq {
            let bit = 1u8.checked_shl(u32::from(source.0)).unwrap_or(0);
            self.sgi_mut(target, sgi).is_some_and(|s| {
                let was = s.fresh;
                s.fresh &= !bit;
                s.fresh != was
            })
        } else {
            self.irq_state_mut(irq).is_some_and(|s| core::mem::replace(&mut s.fresh, false))
        };
        if changed {
            self.changing_irq(irq);
        }
    }

    /// This server deactivated the physical interrupt behind `irq`.
    pub fn hw_deactivated(&mut self, irq: Irq) {
        self.changing_irq(irq);
        if let Some(s) = self.irq_state_mut(irq) {
            s.hw_live = false;
        }
    }

    /// Take change number `change` of `irq`'s line (`SetLine::change`):
    /// false if it is not newer (compared as wrapping) than the last
    /// numbered change taken, which then stays. Change 0 is unnumbered and
    /// always taken (and changes nothing here: not counted).
    pub fn take_line_change(&mut self, irq: Irq, change: u32) -> bool {
        if change == 0 {
            return true;
        }
        self.changing_irq(irq);
        let Some(s) = self.irq_state_mut(irq) else {
            return true;
        };
        if s.line_change != 0 && !ipc::msg::is_newer(change, s.line_change) {
            return false;
        }
        s.line_change = change;
        true
    }

    /// `irq` made pending by a latch, as a write of its GICD_ISPENDRn bit
    /// would (`VgicRequest::Pend`), its line left as it is. Returns false
    /// if the interrupt does not exist.
    pub fn pend(&mut self, irq: Irq) -> bool {
        self.changing_irq(irq);
        let Some(s) = self.irq_state_mut(irq) else {
            return false;
        };
        s.pended = !s.line;
        s.set_pending();
        true
    }

    /// An interrupt line changed level (a PPI or SPI instance). `hw` backs
    /// it by a physical interrupt the monitor has acknowledged and left
    /// active, to be deactivated when the guest is done: the virtual
    /// interrupt is then pending by that event (a latch), whatever the line's
    /// configuration, because the physical distributor tracks the level
    /// itself. Returns false if the interrupt does not exist. (Inline: its
    /// one caller is the server's `SetLine`, and out of line it cost a
    /// timer tick some fifty instructions.)
    #[inline(always)]
    pub fn set_line(&mut self, irq: Irq, level: bool, hw: Option<IntId>) -> bool {
        self.changing_irq(irq);
        let Some(s) = self.irq_state_mut(irq) else {
            return false;
        };
        // A change of the line is what a `Pend`'s interrupt never has:
        // from here on its EOI is sampled again.
        s.pended = false;
        match hw {
            Some(physical) => {
                if s.hw_live && s.hw != Some(physical) {
                    debug!("{irq:?}: linked to {:?}, ignoring a new link to {physical:?}", s.hw);
                } else {
                    s.hw = Some(physical);
                }
                s.line = level;
                if level {
                    s.hw_live = true;
                    s.set_pending();
                } else {
                    s.clear_pending();
                }
            }
            None => {
                if s.hw.is_some() && !s.hw_live {
                    s.hw = None;
                }
                // An edge source signals each edge as `level: true`; a
                // level-sensitive interrupt is pending while its line is high.
                s.line = level;
                if level && s.edge {
                    s.set_pending();
                }
            }
        }
        true
    }

    fn int_view(&self, vcpu: VcpuId, intid: u16) -> Option<IntView> {
        if intid < SGIS {
            let s = self.sgi(vcpu, intid as u8)?;
            return Some(IntView {
                group1: s.group1,
                enabled: true,
                pending: s.pending != 0,
                active: s.active.is_some(),
                priority: s.priority,
                edge: true,
            });
        }
        let s = if intid < PRIVATE { self.ppi(vcpu, intid)? } else { self.spi(intid)? };
        Some(IntView {
            group1: s.group1,
            enabled: s.enabled,
            pending: s.pending(),
            active: s.active,
            priority: s.priority,
            edge: s.edge,
        })
    }

    fn int_mut(&mut self, vcpu: VcpuId, intid: u16) -> Option<IntMut<'_>> {
        if intid < SGIS {
            return self.sgi_mut(vcpu, intid as u8).map(IntMut::Sgi);
        }
        let irq = if intid < PRIVATE { Irq::Ppi { vcpu, intid } } else { Irq::Spi { intid } };
        self.irq_state_mut(irq).map(IntMut::Irq)
    }

    /// A bit-per-interrupt register: bit i of register n is INTID 32n + i.
    fn read_bits(&self, vcpu: VcpuId, n: u8, bit: impl Fn(&IntView) -> bool) -> u32 {
        (0..32u16).fold(0, |acc, i| {
            let intid = u16::from(n) * 32 + i;
            match self.int_view(vcpu, intid) {
                Some(v) if bit(&v) => acc | 1 << i,
                _ => acc,
            }
        })
    }

    /// Apply `op` to each INTID of bit-per-interrupt register `n` whose bit
    /// in `value` is set (`all_bits`: to every INTID, with its bit); `op`
    /// says whether it changed anything.
    fn write_bits(
        &mut self,
        vcpu: VcpuId,
        n: u8,
        value: u32,
        all_bits: bool,
        touched: &mut Touched,
        mut op: impl FnMut(IntMut<'_>, bool) -> bool,
    ) {
        for i in 0..32u16 {
            let bit = value >> i & 1 != 0;
            if !bit && !all_bits {
                continue;
            }
            let intid = u16::from(n) * 32 + i;
            if let Some(state) = self.int_mut(vcpu, intid) {
                if op(state, bit) {
                    touch(touched, vcpu, intid);
                }
            }
        }
    }

    /// The INTIDs (or SGIs) a byte-accessible access covers.
    fn byte_span(first: u16, width: Width) -> core::ops::Range<u16> {
        match width {
            Width::Byte => first..first + 1,
            Width::Word => first..first + 4,
        }
    }

    /// When the interrupts a byte-per-interrupt register access at `first`
    /// covers are all SPIs that exist: `set` each byte of `value` into the
    /// one it is for (`set` stores it, masked as its field is, and says
    /// whether that changed the field), note in `t` those that changed, and
    /// return true; else write nothing and return false. For an SPI's
    /// priority or targets, which make no interrupt pending or active: one
    /// slice, and the busy bits left alone (`int_mut` sets an SPI's for
    /// every access, as a write of its pending or active state needs;
    /// interrupt by interrupt, that was 41 instructions a byte, against 12).
    fn write_spi_bytes(
        &mut self,
        vcpu: VcpuId,
        first: u16,
        width: Width,
        value: u32,
        set: impl Fn(&mut IrqState, u8) -> bool,
        t: &mut Touched,
    ) -> bool {
        let span = Self::byte_span(first, width);
        let Some(start) = span.start.checked_sub(PRIVATE).map(usize::from) else {
            return false;
        };
        let Some(states) = self.spis.get_mut(start..start + span.len()) else {
            return false;
        };
        for (i, (s, intid)) in states.iter_mut().zip(first..).enumerate() {
            if set(s, (value >> (8 * i)) as u8) {
                touch(t, vcpu, intid);
            }
        }
        true
    }

    fn read_bytes(first: u16, width: Width, byte: impl Fn(u16) -> u8) -> u32 {
        Self::byte_span(first, width).enumerate().fold(0, |acc, (i, intid)| acc | u32::from(byte(intid)) << (8 * i))
    }

    /// GICD_ITARGETSRn byte for `intid` as `vcpu` reads it.
    fn target_byte(&self, vcpu: VcpuId, intid: u16) -> u8 {
        if self.vcpus == 1 {
            0
        } else if intid < PRIVATE {
            1u8.checked_shl(u32::from(vcpu.0)).unwrap_or(0)
        } else {
            self.spi(intid).map_or(0, |s| s.targets & self.vcpu_mask())
        }
    }

    /// GICD_TYPER.
    pub fn typer(&self) -> u32 {
        let lines = (u32::from(PRIVATE) + u32::from(self.spi_count)).div_ceil(32) - 1;
        lines << typer::IT_LINES_SHIFT | u32::from(self.vcpus.saturating_sub(1) & 7) << typer::CPU_NUMBER_SHIFT
    }

    /// A distributor read by `vcpu` (the banked registers are its own).
    pub fn read(&self, vcpu: VcpuId, reg: GicdReg) -> u32 {
        match reg {
            GicdReg::Ctlr => {
                let mut v = 0;
                if self.enable_grp0 {
                    v |= ctlr::ENABLE_GRP0;
                }
                if self.enable_grp1 {
                    v |= ctlr::ENABLE_GRP1;
                }
                v
            }
            GicdReg::Typer => self.typer(),
            GicdReg::Iidr => iidr::VALUE,
            GicdReg::Igroupr(n) => self.read_bits(vcpu, n, |v| v.group1),
            GicdReg::Isenabler(n) | GicdReg::Icenabler(n) => self.read_bits(vcpu, n, |v| v.enabled),
            GicdReg::Ispendr(n) | GicdReg::Icpendr(n) => self.read_bits(vcpu, n, |v| v.pending),
            GicdReg::Isactiver(n) | GicdReg::Icactiver(n) => self.read_bits(vcpu, n, |v| v.active),
            GicdReg::Ipriorityr { first, width } => {
                Self::read_bytes(first, width, |intid| self.int_view(vcpu, intid).map_or(0, |v| v.priority))
            }
            GicdReg::Itargetsr { first, width } => Self::read_bytes(first, width, |intid| {
                if self.int_view(vcpu, intid).is_some() {
                    self.target_byte(vcpu, intid)
                } else {
                    0
                }
            }),
            GicdReg::Icfgr(n) => (0..16u16).fold(0, |acc, i| {
                let intid = u16::from(n) * 16 + i;
                match self.int_view(vcpu, intid) {
                    Some(v) if v.edge => acc | icfgr::EDGE << (icfgr::BITS * u32::from(i)),
                    _ => acc,
                }
            }),
            GicdReg::Cpendsgir { first, width } | GicdReg::Spendsgir { first, width } => {
                Self::read_bytes(u16::from(first), width, |sgi| {
                    self.sgi(vcpu, sgi as u8).map_or(0, |s| s.pending & self.vcpu_mask())
                })
            }
            GicdReg::Id(i) => id::VALUES.get(usize::from(i)).copied().unwrap_or(0),
            // Write-only: reads as zero.
            GicdReg::Sgir => 0,
            GicdReg::Nsacr(_)
            | GicdReg::ImplementationDefined(_)
            | GicdReg::Reserved(_)
            | GicdReg::BadAccess { .. } => 0,
        }
    }

    /// A distributor write by `vcpu`; returns what changed.
    pub fn write(&mut self, vcpu: VcpuId, reg: GicdReg, value: u32) -> Touched {
        let mut touched = Touched::new();
        self.write_into(vcpu, reg, value, &mut touched);
        touched
    }

    /// [`Distributor::write`], adding what changed to `t` (the server's
    /// path: a returned `Touched`, 200 bytes, was a `memcpy` call on every
    /// write).
    pub fn write_into(&mut self, vcpu: VcpuId, reg: GicdReg, value: u32, t: &mut Touched) {
        self.changing();
        match reg {
            GicdReg::Ctlr => {
                let grp0 = value & ctlr::ENABLE_GRP0 != 0;
                let grp1 = value & ctlr::ENABLE_GRP1 != 0;
                if (grp0, grp1) != (self.enable_grp0, self.enable_grp1) {
                    self.enable_grp0 = grp0;
                    self.enable_grp1 = grp1;
                    touch_all(t);
                }
            }
            GicdReg::Igroupr(n) => self.write_bits(vcpu, n, value, true, t, |s, bit| match s {
                IntMut::Sgi(s) => core::mem::replace(&mut s.group1, bit) != bit,
                IntMut::Irq(s) => core::mem::replace(&mut s.group1, bit) != bit,
            }),
            GicdReg::Isenabler(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(_) => false,
                IntMut::Irq(s) => !core::mem::replace(&mut s.enabled, true),
            }),
            GicdReg::Icenabler(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(_) => false,
                IntMut::Irq(s) => core::mem::replace(&mut s.enabled, false),
            }),
            GicdReg::Ispendr(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(_) => false,
                IntMut::Irq(s) => {
                    s.set_pending();
                    true
                }
            }),
            GicdReg::Icpendr(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(_) => false,
                IntMut::Irq(s) => {
                    let was = s.latch;
                    s.clear_pending();
                    was
                }
            }),
            GicdReg::Isactiver(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(s) => {
                    let changed = s.active.is_none();
                    s.active.get_or_insert(vcpu.0);
                    changed
                }
                IntMut::Irq(s) => !core::mem::replace(&mut s.active, true),
            }),
            GicdReg::Icactiver(n) => self.write_bits(vcpu, n, value, false, t, |s, _| match s {
                IntMut::Sgi(s) => s.active.take().is_some(),
                IntMut::Irq(s) => core::mem::replace(&mut s.active, false),
            }),
            GicdReg::Ipriorityr { first, width } => {
                let set = |s: &mut IrqState, byte: u8| {
                    let p = byte & PRIORITY_MASK;
                    core::mem::replace(&mut s.priority, p) != p
                };
                if self.write_spi_bytes(vcpu, first, width, value, set, t) {
                    return;
                }
                for (i, intid) in Self::byte_span(first, width).enumerate() {
                    let p = (value >> (8 * i)) as u8 & PRIORITY_MASK;
                    let changed = match self.int_mut(vcpu, intid) {
                        Some(IntMut::Sgi(s)) => core::mem::replace(&mut s.priority, p) != p,
                        Some(IntMut::Irq(s)) => core::mem::replace(&mut s.priority, p) != p,
                        None => false,
                    };
                    if changed {
                        touch(t, vcpu, intid);
                    }
                }
            }
            GicdReg::Itargetsr { first, width } => {
                // Read-only for SGIs and PPIs; RAZ/WI with a single vCPU.
                if self.vcpus > 1 {
                    let mask = self.vcpu_mask();
                    let set = |s: &mut IrqState, byte: u8| {
                        let targets = byte & mask;
                        core::mem::replace(&mut s.targets, targets) != targets
                    };
                    if self.write_spi_bytes(vcpu, first, width, value, set, t) {
                        return;
                    }
                    for (i, intid) in Self::byte_span(first, width).enumerate() {
                        let targets = (value >> (8 * i)) as u8 & mask;
                        if intid < PRIVATE {
                            continue;
                        }
                        if let Some(IntMut::Irq(s)) = self.int_mut(vcpu, intid) {
                            if core::mem::replace(&mut s.targets, targets) != targets {
                                touch(t, vcpu, intid);
                            }
                        }
                    }
                }
            }
            GicdReg::Icfgr(n) => {
                // ICFGR0 (SGIs) and ICFGR1 (PPIs) are read-only.
                if u16::from(n) >= PRIVATE / 16 {
                    for i in 0..16u16 {
                        let intid = u16::from(n) * 16 + i;
                        let edge = value >> (icfgr::BITS * u32::from(i)) & icfgr::EDGE != 0;
                        if let Some(IntMut::Irq(s)) = self.int_mut(vcpu, intid) {
                            if core::mem::replace(&mut s.edge, edge) != edge {
                                // Switching to edge keeps the pending state
                                // the level gave it, as a latch.
                                if edge && s.line {
                                    s.latch = true;
                                }
                                touch(t, vcpu, intid);
                            }
                        }
                    }
                }
            }
            GicdReg::Sgir => self.send_sgi(vcpu, SgiRequest::decode(value), t),
            GicdReg::Cpendsgir { first, width } | GicdReg::Spendsgir { first, width } => {
                let set = matches!(reg, GicdReg::Spendsgir { .. });
                let mask = self.vcpu_mask();
                for (i, sgi) in Self::byte_span(u16::from(first), width).enumerate() {
                    let sources = (value >> (8 * i)) as u8 & mask;
                    if sources == 0 {
                        continue;
                    }
                    if let Some(s) = self.sgi_mut(vcpu, sgi as u8) {
                        let before = s.pending;
                        if set {
                            s.pending |= sources;
                            s.fresh |= sources;
                        } else {
                            s.pending &= !sources;
                            s.fresh &= !sources;
                        }
                        if s.pending != before {
                            touch(t, vcpu, sgi);
                        }
                    }
                }
            }
            GicdReg::Typer | GicdReg::Iidr | GicdReg::Id(_) => {
                debug!("vcpu{}: write {value:#x} to read-only {reg:?} ignored", vcpu.0);
            }
            GicdReg::Nsacr(_)
            | GicdReg::ImplementationDefined(_)
            | GicdReg::Reserved(_)
            | GicdReg::BadAccess { .. } => {}
        }
    }

    /// A GICD_SGIR write of `value` by `from`: [`Distributor::write_into`]
    /// for that register alone.
    pub fn write_sgir(&mut self, from: VcpuId, value: u32, touched: &mut Touched) {
        self.send_sgi(from, SgiRequest::decode(value), touched);
    }

    /// GICD_SGIR written by `from`.
    fn send_sgi(&mut self, from: VcpuId, request: SgiRequest, touched: &mut Touched) {
        let mask = self.vcpu_mask();
        let self_bit = 1u8.checked_shl(u32::from(from.0)).unwrap_or(0);
        let targets = match request.filter {
            SgiFilter::List(list) => list & mask,
            SgiFilter::AllButSelf => mask & !self_bit,
            SgiFilter::SelfOnly => self_bit & mask,
            SgiFilter::Reserved => {
                debug!("vcpu{}: GICD_SGIR with the reserved target filter ignored", from.0);
                0
            }
        };
        // Only the targets' bits (within `vcpu_mask`, so each is a vCPU of
        // the VM; an IPI usually has one).
        for target in BitIter(u32::from(targets)) {
            let target = VcpuId(target as u8);
            if let Some(s) = self.sgi_mut(target, request.sgi) {
                s.pending |= self_bit;
                s.fresh |= self_bit;
                touch(touched, target, u16::from(request.sgi));
                // Once for each target reached (`VgicServer::write_sgir`
                // counts on it).
                self.changing_private(target);
            }
        }
    }
}

#[cfg(test)]
mod tests;
