//! A simulation of one physical CPU's GICv2 virtual interface control
//! registers (Arm IHI 0048B, chapter 5: GICH_HCR, GICH_MISR, GICH_EISRn,
//! GICH_ELRSRn, GICH_LRn) and of what a guest can do to its list registers
//! through the virtual CPU interface: acknowledge the highest-priority
//! pending entry, and deactivate an active one. The `vgic_server` target
//! plays the hardware with it: the server's list-register writes land here,
//! and every status the server is given is read from here.
//!
//! Field positions are written out from the specification, independently of
//! the server's `lr` module.

use ipc::msg::LrStatus;

/// List registers the status can report (and this simulation implements at most).
pub const LRS: usize = 4;

/// GICH_LRn fields (§5.3.10).
pub mod lr {
    /// VirtualID, bits [9:0].
    pub fn virtual_id(v: u32) -> u16 {
        (v & 0x3ff) as u16
    }
    /// PhysicalID [19:10] when HW is set.
    pub fn physical_id(v: u32) -> u16 {
        (v >> 10 & 0x3ff) as u16
    }
    /// CPUID [12:10] when HW is clear (the SGI's requester).
    pub fn cpuid(v: u32) -> u8 {
        (v >> 10 & 0x7) as u8
    }
    /// EOI [19] when HW is clear: maintenance interrupt on deactivation.
    pub fn eoi(v: u32) -> bool {
        !hw(v) && v >> 19 & 1 == 1
    }
    /// Priority [27:23], the top five bits of an 8-bit priority.
    pub fn priority(v: u32) -> u8 {
        ((v >> 23 & 0x1f) << 3) as u8
    }
    /// State [29:28]: bit 28 pending, bit 29 active.
    pub fn pending(v: u32) -> bool {
        v >> 28 & 1 == 1
    }
    /// See [`pending`].
    pub fn active(v: u32) -> bool {
        v >> 29 & 1 == 1
    }
    /// Valid: pending, active or both.
    pub fn valid(v: u32) -> bool {
        v >> 28 & 0b11 != 0
    }
    /// Grp1 [30].
    pub fn group1(v: u32) -> bool {
        v >> 30 & 1 == 1
    }
    /// HW [31].
    pub fn hw(v: u32) -> bool {
        v >> 31 == 1
    }
    /// The same virtual interrupt: VirtualID, and the requester of an SGI.
    pub fn same_interrupt(a: u32, b: u32) -> bool {
        virtual_id(a) == virtual_id(b) && hw(a) == hw(b) && (hw(a) || cpuid(a) == cpuid(b))
    }
}

/// GICH_HCR bits (§5.3.2): the vGIC server's definitions.
pub use vgic_server::lr::hcr_bits as hcr;

/// One vCPU's virtual interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gich {
    /// List registers implemented (GICH_VTR.ListRegs + 1, at most [`LRS`]).
    pub count: usize,
    /// GICH_LRn.
    pub lrs: [u32; LRS],
    /// GICH_HCR (EOICount kept apart).
    pub hcr: u32,
    /// GICH_HCR.EOICount: deactivations that found no list register.
    pub eoi_count: u32,
}

impl Gich {
    /// A virtual interface with `count` list registers, all zero.
    pub fn new(count: usize) -> Self {
        Gich { count: count.min(LRS), ..Gich::default() }
    }

    /// The implemented list registers with their index.
    pub fn entries(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.lrs.iter().copied().enumerate().take(self.count)
    }

    /// GICH_EISR0: entries that asked for a maintenance interrupt on
    /// deactivation and were deactivated.
    pub fn eisr(&self) -> u32 {
        self.entries().filter(|(_, v)| !lr::valid(*v) && lr::eoi(*v)).fold(0, |m, (i, _)| m | 1 << i)
    }

    /// GICH_ELRSR0: entries free for a new interrupt.
    pub fn elrsr(&self) -> u32 {
        self.entries().filter(|(_, v)| !lr::valid(*v) && !lr::eoi(*v)).fold(0, |m, (i, _)| m | 1 << i)
    }

    /// GICH_MISR (§5.3.5), with the guest's virtual CPU interface taken to
    /// have both groups enabled.
    pub fn misr(&self) -> u32 {
        let valid = self.entries().filter(|(_, v)| lr::valid(*v)).count();
        let pending = self.entries().any(|(_, v)| lr::pending(v));
        let mut m = 0;
        if self.eisr() != 0 {
            m |= 1 << 0;
        }
        if self.hcr & hcr::UIE != 0 && valid <= 1 {
            m |= 1 << 1;
        }
        if self.hcr & hcr::LRENPIE != 0 && self.eoi_count != 0 {
            m |= 1 << 2;
        }
        if self.hcr & hcr::NPIE != 0 && !pending {
            m |= 1 << 3;
        }
        if self.hcr & hcr::VGRP0EIE != 0 {
            m |= 1 << 4;
        }
        if self.hcr & hcr::VGRP1EIE != 0 {
            m |= 1 << 6;
        }
        m
    }

    /// The maintenance interrupt is asserted.
    pub fn maintenance(&self) -> bool {
        self.hcr & hcr::EN != 0 && self.misr() != 0
    }

    /// What the monitor reports.
    pub fn status(&self) -> LrStatus {
        let mut lrs = [0; LRS];
        for (i, v) in self.entries() {
            lrs[i] = v;
        }
        LrStatus { misr: self.misr(), eisr: self.eisr(), elrsr: self.elrsr(), lrs }
    }

    /// The running priority: the highest (numerically lowest) priority of
    /// an active entry.
    pub fn running(&self) -> Option<u8> {
        self.entries().filter(|(_, v)| lr::active(*v)).map(|(_, v)| lr::priority(v)).min()
    }

    /// The entry an acknowledge would take: the highest-priority pending
    /// (not active) entry that preempts the running priority.
    pub fn signalled(&self) -> Option<usize> {
        let running = self.running();
        self.entries()
            .filter(|(_, v)| lr::pending(*v) && !lr::active(*v))
            .filter(|(_, v)| running.is_none_or(|r| lr::priority(*v) < r))
            .min_by_key(|(i, v)| (lr::priority(*v), *i))
            .map(|(i, _)| i)
    }

    /// The guest reads GICV_IAR: the signalled entry becomes active.
    pub fn acknowledge(&mut self) -> Option<u32> {
        let i = self.signalled()?;
        self.lrs[i] = (self.lrs[i] & !(0b11 << 28)) | 0b10 << 28;
        Some(self.lrs[i])
    }

    /// The guest deactivates the `nth` active entry (GICV_EOIR or
    /// GICV_DIR): active becomes invalid, active-and-pending becomes pending.
    /// Returns the entry as it was.
    pub fn deactivate(&mut self, nth: usize) -> Option<u32> {
        let active: Vec<usize> = self.entries().filter(|(_, v)| lr::active(*v)).map(|(i, _)| i).collect();
        let i = *active.get(nth % active.len().max(1))?;
        let before = self.lrs[i];
        self.lrs[i] &= !(1 << 29);
        Some(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A software LR: INTID, priority, state bits, EOI.
    fn sw(id: u32, priority: u32, state: u32, eoi: bool) -> u32 {
        id | u32::from(eoi) << 19 | (priority >> 3) << 23 | state << 28
    }

    #[test]
    fn acknowledge_takes_the_highest_priority_that_preempts() {
        let mut g = Gich::new(4);
        g.lrs = [sw(30, 0xa0, 0b01, false), sw(40, 0x80, 0b01, false), sw(41, 0x80, 0b10, false), 0];
        // 40 has the same priority as the active 41: it cannot preempt.
        assert_eq!(g.signalled(), None);
        g.lrs[2] = sw(41, 0xc0, 0b10, false);
        assert_eq!(g.signalled(), Some(1));
        assert_eq!(g.acknowledge().map(lr::virtual_id), Some(40));
        assert!(lr::active(g.lrs[1]) && !lr::pending(g.lrs[1]));
    }

    #[test]
    fn maintenance_status() {
        let mut g = Gich::new(2);
        g.hcr = hcr::EN | hcr::UIE | hcr::NPIE;
        g.lrs = [sw(33, 0, 0b10, true), 0, 0, 0];
        // One valid entry, none pending: underflow and no-pending.
        assert_eq!(g.misr(), 1 << 1 | 1 << 3);
        assert!(g.maintenance());
        assert_eq!(g.deactivate(0), Some(sw(33, 0, 0b10, true)));
        assert_eq!(g.eisr(), 1, "deactivated with EOI set");
        assert_eq!(g.elrsr(), 0b10, "the EOI entry is not free until rewritten");
        assert_eq!(g.misr() & 1, 1);
        g.hcr = 0;
        assert!(!g.maintenance(), "nothing without En");
        // LRs beyond the implemented count are not reported.
        g.lrs[3] = sw(50, 0, 0b01, false);
        assert_eq!(g.status().lrs[3], 0);
    }
}
