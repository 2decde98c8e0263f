//! The GICv2 virtual interface control registers this server asks the
//! monitor to write (list registers, GICH_HCR) or reads in an
//! [`ipc::msg::LrStatus`] (GICH_MISR), and the list-register allocation
//! policy.
//!
//! Encodings follow the GICv2 architecture specification (Arm IHI 0048B),
//! chapter 5 "GIC Support for Virtualization", the GIC virtual interface
//! control registers GICH_HCR, GICH_MISR and GICH_LRn. Every
//! field is defined here once, by name; the rest of the crate uses
//! [`ListRegister`], [`Hcr`] and [`Misr`].
//!
//! # What the guest can do to a list register
//!
//! While a vCPU runs, its list registers change only by the guest's own
//! actions on the virtual CPU interface (GICV): an acknowledge moves an entry
//! from pending to active, a deactivation (EOI with EOImode 0, or DIR) moves
//! it from active to invalid, or from active-and-pending to pending. The
//! server remembers what it wrote; [`guest_events`] turns "written" and
//! "observed now" into the sequence of those guest actions, which the
//! distributor then applies to its own state.

use serde::{Deserialize, Serialize};

/// The most list registers an [`ipc::msg::LrStatus`] reports, and so the most
/// this server uses on one CPU interface (GICH_VTR.ListRegs may say more).
pub const MAX_LRS: usize = 4;

/// GICH_LRn fields (IHI 0048B chapter 5, GICH_LRn, List Registers).
pub mod lr_bits {
    /// VirtualID, bits \[9:0\]: the INTID the guest sees.
    pub const VIRTUAL_ID_MASK: u32 = 0x3ff;
    /// PhysicalID, bits \[19:10\], when HW is 1: the physical INTID that the
    /// guest's deactivation deactivates.
    pub const PHYSICAL_ID_SHIFT: u32 = 10;
    /// Width mask of PhysicalID (after shifting).
    pub const PHYSICAL_ID_MASK: u32 = 0x3ff;
    /// CPUID, bits \[12:10\], when HW is 0: for an SGI, the requesting CPU the
    /// guest reads back in GICV_IAR.
    pub const CPUID_SHIFT: u32 = 10;
    /// Width mask of CPUID (after shifting).
    pub const CPUID_MASK: u32 = 0x7;
    /// EOI, bit \[19\], when HW is 0: assert a maintenance interrupt when the
    /// guest deactivates the interrupt.
    pub const EOI: u32 = 1 << 19;
    /// Priority, bits \[27:23\]: the upper five bits of the 8-bit priority.
    pub const PRIORITY_SHIFT: u32 = 23;
    /// Width mask of Priority (after shifting).
    pub const PRIORITY_MASK: u32 = 0x1f;
    /// How far the 8-bit priority is shifted right to fit the field.
    pub const PRIORITY_DROP: u32 = 3;
    /// State, bits \[29:28\]: 0 invalid, 1 pending, 2 active, 3 both.
    pub const STATE_SHIFT: u32 = 28;
    /// Width mask of State (after shifting).
    pub const STATE_MASK: u32 = 0x3;
    /// Grp1, bit \[30\]: the virtual interrupt is Group 1.
    pub const GRP1: u32 = 1 << 30;
    /// HW, bit \[31\]: the virtual interrupt is linked to a physical one.
    pub const HW: u32 = 1 << 31;
}

/// GICH_HCR bits (IHI 0048B chapter 5, GICH_HCR, Hypervisor Control Register).
pub mod hcr_bits {
    /// En, bit \[0\]: the virtual CPU interface is enabled.
    pub const EN: u32 = 1 << 0;
    /// UIE, bit \[1\]: underflow maintenance interrupt (at most one list
    /// register holds a valid entry).
    pub const UIE: u32 = 1 << 1;
    /// LRENPIE, bit \[2\]: maintenance interrupt while EOICount is not 0 (the
    /// guest deactivated an interrupt that is in no list register).
    pub const LRENPIE: u32 = 1 << 2;
    /// NPIE, bit \[3\]: maintenance interrupt while no list register holds a
    /// pending entry.
    pub const NPIE: u32 = 1 << 3;
    /// VGrp0EIE, bit \[4\]: maintenance interrupt while the guest has Group 0
    /// enabled.
    pub const VGRP0EIE: u32 = 1 << 4;
    /// VGrp0DIE, bit \[5\]: maintenance interrupt while Group 0 is disabled.
    pub const VGRP0DIE: u32 = 1 << 5;
    /// VGrp1EIE, bit \[6\]: maintenance interrupt while Group 1 is enabled.
    pub const VGRP1EIE: u32 = 1 << 6;
    /// VGrp1DIE, bit \[7\]: maintenance interrupt while Group 1 is disabled.
    pub const VGRP1DIE: u32 = 1 << 7;
    /// EOICount, bits \[31:27\]: deactivations of interrupts in no list
    /// register. Written as 0 by this server.
    pub const EOICOUNT_SHIFT: u32 = 27;
}

/// GICH_MISR bits (IHI 0048B chapter 5, GICH_MISR, Maintenance Interrupt Status
/// Register): which maintenance conditions hold.
pub mod misr_bits {
    /// EOI, bit \[0\]: some list register has EOI maintenance pending (GICH_EISR).
    pub const EOI: u32 = 1 << 0;
    /// U, bit \[1\]: underflow.
    pub const U: u32 = 1 << 1;
    /// LRENP, bit \[2\]: list register entry not present.
    pub const LRENP: u32 = 1 << 2;
    /// NP, bit \[3\]: no pending entry.
    pub const NP: u32 = 1 << 3;
    /// VGrp0E, bit \[4\].
    pub const VGRP0E: u32 = 1 << 4;
    /// VGrp0D, bit \[5\].
    pub const VGRP0D: u32 = 1 << 5;
    /// VGrp1E, bit \[6\].
    pub const VGRP1E: u32 = 1 << 6;
    /// VGrp1D, bit \[7\].
    pub const VGRP1D: u32 = 1 << 7;
}

/// The State field of a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LrState {
    /// 0b00: no interrupt.
    Invalid,
    /// 0b01: pending.
    Pending,
    /// 0b10: active.
    Active,
    /// 0b11: active and pending.
    PendingActive,
}

impl LrState {
    /// The state with the given pending and active flags.
    pub fn of(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }

    /// Decode the 2-bit field (only the low two bits of `bits` are used).
    pub fn from_bits(bits: u32) -> Self {
        match bits & lr_bits::STATE_MASK {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }

    /// The 2-bit field value.
    pub fn bits(self) -> u32 {
        match self {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        }
    }

    /// The pending half of the state.
    pub fn pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }

    /// The active half of the state.
    pub fn active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
}

/// What links a list register to the rest of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LrLink {
    /// HW = 0: a purely virtual interrupt.
    Software {
        /// CPUID: for an SGI, the vCPU that requested it (0 otherwise).
        cpuid: u8,
        /// EOI: ask for a maintenance interrupt when the guest deactivates it.
        eoi: bool,
    },
    /// HW = 1: the guest's deactivation also deactivates this physical INTID.
    Hardware {
        /// PhysicalID.
        physical_id: u16,
    },
}

/// One GICH_LRn value, decoded. Every 32-bit value decodes, and encoding
/// gives the value back with its reserved bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListRegister {
    /// VirtualID: the INTID the guest sees.
    pub virtual_id: u16,
    /// HW and the fields that depend on it.
    pub link: LrLink,
    /// The 8-bit priority; only its upper five bits are held.
    pub priority: u8,
    /// State.
    pub state: LrState,
    /// Grp1.
    pub group1: bool,
}

impl ListRegister {
    /// Decode a raw GICH_LRn value.
    pub fn decode(raw: u32) -> Self {
        use lr_bits::*;
        let link = if raw & HW != 0 {
            LrLink::Hardware { physical_id: ((raw >> PHYSICAL_ID_SHIFT) & PHYSICAL_ID_MASK) as u16 }
        } else {
            LrLink::Software { cpuid: ((raw >> CPUID_SHIFT) & CPUID_MASK) as u8, eoi: raw & EOI != 0 }
        };
        ListRegister {
            virtual_id: (raw & VIRTUAL_ID_MASK) as u16,
            link,
            priority: (((raw >> PRIORITY_SHIFT) & PRIORITY_MASK) << PRIORITY_DROP) as u8,
            state: LrState::from_bits(raw >> STATE_SHIFT),
            group1: raw & GRP1 != 0,
        }
    }

    /// The raw GICH_LRn value. Bits no field holds (\[22:20\], and \[18:13\]
    /// for a software entry) are 0, as the specification reserves them.
    #[inline(always)]
    pub fn encode(&self) -> u32 {
        use lr_bits::*;
        let mut raw = u32::from(self.virtual_id) & VIRTUAL_ID_MASK;
        match self.link {
            LrLink::Software { cpuid, eoi } => {
                raw |= (u32::from(cpuid) & CPUID_MASK) << CPUID_SHIFT;
                if eoi {
                    raw |= EOI;
                }
            }
            LrLink::Hardware { physical_id } => {
                raw |= HW | (u32::from(physical_id) & PHYSICAL_ID_MASK) << PHYSICAL_ID_SHIFT;
            }
        }
        raw |= ((u32::from(self.priority) >> PRIORITY_DROP) & PRIORITY_MASK) << PRIORITY_SHIFT;
        raw |= self.state.bits() << STATE_SHIFT;
        if self.group1 {
            raw |= GRP1;
        }
        raw
    }

    /// Whether `other` names the same interrupt in the same way (VirtualID,
    /// HW link or CPUID), whatever the state, priority or EOI request.
    pub fn same_interrupt(&self, other: &ListRegister) -> bool {
        self.virtual_id == other.virtual_id
            && match (self.link, other.link) {
                (LrLink::Software { cpuid: a, .. }, LrLink::Software { cpuid: b, .. }) => a == b,
                (LrLink::Hardware { physical_id: a }, LrLink::Hardware { physical_id: b }) => a == b,
                _ => false,
            }
    }

    /// True for a hardware-linked entry.
    pub fn is_hw(&self) -> bool {
        matches!(self.link, LrLink::Hardware { .. })
    }
}

/// GICH_HCR as this server writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hcr {
    /// En.
    pub enable: bool,
    /// UIE.
    pub underflow: bool,
    /// NPIE.
    pub no_pending: bool,
}

impl Hcr {
    /// The raw value (EOICount 0, LRENPIE and the group interrupts off).
    pub fn encode(&self) -> u32 {
        let mut raw = 0;
        if self.enable {
            raw |= hcr_bits::EN;
        }
        if self.underflow {
            raw |= hcr_bits::UIE;
        }
        if self.no_pending {
            raw |= hcr_bits::NPIE;
        }
        raw
    }
}

/// GICH_MISR, decoded (for the log: the list registers themselves say
/// everything the server needs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Misr {
    /// EOI maintenance.
    pub eoi: bool,
    /// Underflow.
    pub underflow: bool,
    /// List register entry not present.
    pub entry_not_present: bool,
    /// No pending entry.
    pub no_pending: bool,
}

impl Misr {
    /// Decode a raw GICH_MISR value.
    pub fn decode(raw: u32) -> Self {
        Misr {
            eoi: raw & misr_bits::EOI != 0,
            underflow: raw & misr_bits::U != 0,
            entry_not_present: raw & misr_bits::LRENP != 0,
            no_pending: raw & misr_bits::NP != 0,
        }
    }
}

/// Something the guest did to a list-register entry on the virtual CPU
/// interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestEvent {
    /// It acknowledged the interrupt (GICV_IAR): pending to active.
    Ack,
    /// It deactivated the interrupt (GICV_EOIR or GICV_DIR): active off.
    Deactivate,
}

/// The guest's actions that turn an entry written in state `written` into
/// one observed in state `observed`, in order, or `None` when no sequence of
/// guest actions can (someone else changed the register).
///
/// The guest can only acknowledge a pending entry that is not also active,
/// and deactivate an active one, so the sequence is unique:
///
/// | written | observed | events |
/// |---|---|---|
/// | P  | P  | none |
/// | P  | A  | Ack |
/// | P  | I  | Ack, Deactivate |
/// | A  | A  | none |
/// | A  | I  | Deactivate |
/// | PA | PA | none |
/// | PA | P  | Deactivate |
/// | PA | A  | Deactivate, Ack |
/// | PA | I  | Deactivate, Ack, Deactivate |
/// | I  | I  | none |
pub fn guest_events(written: LrState, observed: LrState) -> Option<&'static [GuestEvent]> {
    use GuestEvent::{Ack, Deactivate};
    use LrState::{Active, Invalid, Pending, PendingActive};
    Some(match (written, observed) {
        (Pending, Pending) | (Active, Active) | (PendingActive, PendingActive) => &[],
        (Invalid, Invalid) => &[],
        (Pending, Active) => &[Ack],
        (Pending, Invalid) => &[Ack, Deactivate],
        (Active, Invalid) => &[Deactivate],
        (PendingActive, Pending) => &[Deactivate],
        (PendingActive, Active) => &[Deactivate, Ack],
        (PendingActive, Invalid) => &[Deactivate, Ack, Deactivate],
        _ => return None,
    })
}

/// How a candidate for a list register ranks: lower ranks first.
///
/// Active entries come first whatever their priority: they must stay in a
/// list register so that the guest's deactivation is seen (an active entry
/// that is dropped cannot be told apart from others by EOICount). Then
/// pending ones by priority (lower value is higher priority), then by INTID
/// and requesting vCPU so that the choice is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// 0 for an active entry, 1 for a pending one.
    pub class: u8,
    /// The 8-bit priority (already masked to the implemented bits).
    pub priority: u8,
    /// The INTID.
    pub intid: u16,
    /// The requesting vCPU of an SGI, 0 otherwise.
    pub source: u8,
}

impl Rank {
    /// The rank of an entry.
    pub fn new(active: bool, priority: u8, intid: u16, source: u8) -> Self {
        Rank { class: u8::from(!active), priority, intid, source }
    }

    /// Whether the entry is active.
    pub fn active(&self) -> bool {
        self.class == 0
    }
}

/// The best `capacity` of a stream of candidates, kept sorted by [`Rank`],
/// and whether any were left out: the list-register allocation policy.
///
/// (An array of options rather than a `heapless::Vec`: a new `Vec` of four
/// 16-byte entries was a `memclr` call of its whole buffer, twice a
/// refresh; `None`s are one byte each.)
#[derive(Clone, Debug)]
pub struct Selection<T> {
    capacity: usize,
    chosen: [Option<(Rank, T)>; MAX_LRS],
    len: usize,
    left_out: usize,
}

impl<T: Copy> Selection<T> {
    /// An empty selection for `capacity` list registers (at most
    /// [`MAX_LRS`]).
    pub fn new(capacity: usize) -> Self {
        Selection { capacity: capacity.min(MAX_LRS), chosen: [None; MAX_LRS], len: 0, left_out: 0 }
    }

    /// Offer a candidate.
    pub fn offer(&mut self, rank: Rank, item: T) {
        let at = self.chosen().position(|(r, _)| rank < *r).unwrap_or(self.len);
        if at >= self.capacity {
            self.left_out += 1;
            return;
        }
        if self.len == self.capacity {
            // Full: the last one drops out to make room.
            self.len -= 1;
            self.left_out += 1;
        }
        // Appended, then moved up to `at` by swaps: a `Vec::insert` shifted
        // with a `memmove` call and copied in with a `memcpy` call, most of
        // an offer's cost for at most four entries.
        if let Some(slot) = self.chosen.get_mut(self.len) {
            *slot = Some((rank, item));
            self.len += 1;
        }
        for i in (at + 1..self.len).rev() {
            self.chosen.swap(i, i - 1);
        }
    }

    /// The chosen candidates, best first.
    pub fn chosen(&self) -> impl Iterator<Item = &(Rank, T)> {
        self.chosen.get(..self.len).unwrap_or_default().iter().flatten()
    }

    /// The `k`th chosen candidate (best first), with its rank.
    pub fn entry(&self, k: usize) -> Option<&(Rank, T)> {
        if k < self.len {
            self.chosen.get(k)?.as_ref()
        } else {
            None
        }
    }

    /// How many candidates did not fit.
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    /// The best rank chosen.
    pub fn best(&self) -> Option<Rank> {
        self.entry(0).map(|(r, _)| *r)
    }
}

/// The maintenance requests for a set of list registers: GICH_HCR, and
/// whether every entry should ask for EOI maintenance.
///
/// - En is always set: the guest's CPU interface is the virtual one.
/// - When candidates were left out, every entry asks for EOI maintenance
///   (`eoi_all`), so that a register the guest frees by finishing an
///   interrupt goes to them at once: every entry this server writes is a
///   software one, which can. (UIE is not used: it would be needed only
///   for hardware-linked entries, which cannot ask for EOI maintenance.)
/// - When candidates were left out and some entry is pending, NPIE also
///   tells us when the guest has acknowledged them all, so the rest can
///   follow. NPIE alone is not enough: an entry both pending and active
///   cannot be acknowledged before its active instance is deactivated, so
///   a guest whose handler waits for an interrupt left out would wait for
///   ever, though it finished another one meanwhile (found by the
///   `vgic_server` fuzz target). With every entry active, NPIE would fire
///   at once and for ever, and is not set.
pub fn maintenance(left_out: bool, any_pending: bool) -> (Hcr, bool) {
    let hcr = Hcr { enable: true, no_pending: left_out && any_pending, ..Hcr::default() };
    (hcr, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_register_fields_by_bit() {
        let lr = ListRegister {
            virtual_id: 27,
            link: LrLink::Hardware { physical_id: 27 },
            priority: 0xa0,
            state: LrState::Pending,
            group1: false,
        };
        // HW | PhysicalID 27 | priority 0xa0>>3 = 20 | pending | VirtualID 27
        assert_eq!(lr.encode(), 0x8000_0000 | 27 << 10 | 20 << 23 | 1 << 28 | 27);

        let sgi = ListRegister {
            virtual_id: 3,
            link: LrLink::Software { cpuid: 5, eoi: true },
            priority: 0xff,
            state: LrState::PendingActive,
            group1: true,
        };
        assert_eq!(sgi.encode(), 1 << 30 | 3 << 28 | 0x1f << 23 | 1 << 19 | 5 << 10 | 3);
        // The low priority bits are not held.
        assert_eq!(ListRegister::decode(sgi.encode()).priority, 0xf8);
    }

    #[test]
    fn every_value_round_trips_but_reserved_bits() {
        // Kept: [9:0], [31:23] always; [19:10] with HW; [12:10] and [19]
        // without. Reserved [22:20] (and [18:13] without HW) are dropped.
        const KEEP_HW: u32 = 0xff8f_ffff;
        const KEEP_SW: u32 = 0xff88_1fff;
        let mut raw: u32 = 0;
        for _ in 0..200_000 {
            let keep = if raw & lr_bits::HW != 0 { KEEP_HW } else { KEEP_SW };
            assert_eq!(ListRegister::decode(raw).encode(), raw & keep, "{raw:#x}");
            // A stride that walks every field through many combinations.
            raw = raw.wrapping_add(0x9e37_79b9);
        }
    }

    #[test]
    fn decode_of_encode_is_identity() {
        for state in [LrState::Invalid, LrState::Pending, LrState::Active, LrState::PendingActive] {
            for link in [
                LrLink::Software { cpuid: 0, eoi: false },
                LrLink::Software { cpuid: 7, eoi: true },
                LrLink::Hardware { physical_id: 1019 },
            ] {
                let lr = ListRegister { virtual_id: 1019, link, priority: 0x78, state, group1: true };
                assert_eq!(ListRegister::decode(lr.encode()), lr);
            }
        }
    }

    #[test]
    fn hcr_and_misr_bits() {
        assert_eq!(Hcr { enable: true, underflow: true, no_pending: true }.encode(), 0b1011);
        let m = Misr::decode(0b1111);
        assert!(m.eoi && m.underflow && m.entry_not_present && m.no_pending);
        assert_eq!(Misr::decode(0), Misr::default());
    }

    #[test]
    fn guest_event_table() {
        use GuestEvent::*;
        use LrState::*;
        assert_eq!(guest_events(Pending, Invalid), Some(&[Ack, Deactivate][..]));
        assert_eq!(guest_events(PendingActive, Active), Some(&[Deactivate, Ack][..]));
        assert_eq!(guest_events(Active, Pending), None);
        assert_eq!(guest_events(Pending, PendingActive), None);
        assert_eq!(guest_events(Invalid, Active), None);
        // Every accepted sequence really leads from `written` to `observed`.
        for w in [Invalid, Pending, Active, PendingActive] {
            for o in [Invalid, Pending, Active, PendingActive] {
                if let Some(events) = guest_events(w, o) {
                    let mut s = w;
                    for e in events {
                        s = match (e, s) {
                            (Ack, Pending) => Active,
                            (Deactivate, Active) => Invalid,
                            (Deactivate, PendingActive) => Pending,
                            other => panic!("{other:?} is not a guest transition"),
                        };
                    }
                    assert_eq!(s, o, "{w:?} -> {o:?}");
                }
            }
        }
    }

    #[test]
    fn selection_keeps_the_best_and_counts_the_rest() {
        let mut s = Selection::new(2);
        s.offer(Rank::new(false, 0xa0, 40, 0), 40);
        s.offer(Rank::new(false, 0x80, 41, 0), 41);
        s.offer(Rank::new(false, 0xf0, 42, 0), 42);
        s.offer(Rank::new(true, 0xf8, 43, 0), 43);
        let chosen: std::vec::Vec<u16> = s.chosen().map(|(_, i)| *i).collect();
        assert_eq!(chosen, [43, 41]);
        assert_eq!(s.left_out(), 2);
        let mut none = Selection::<u8>::new(0);
        none.offer(Rank::new(true, 0, 0, 0), 0);
        assert_eq!(none.left_out(), 1);
        assert_eq!(none.best(), None);
    }

    #[test]
    fn maintenance_policy() {
        let en = Hcr { enable: true, ..Hcr::default() };
        assert_eq!(maintenance(false, true), (en, false));
        assert_eq!(maintenance(false, false), (en, false));
        // Both: a pending entry may be pending and active, not to be taken
        // before the guest deactivates it.
        assert_eq!(maintenance(true, true), (Hcr { no_pending: true, ..en }, true));
        assert_eq!(maintenance(true, false), (en, true));
    }
}
