//! The guest's physical timer (CNTP_*), as the architecture defines it,
//! evaluated against a physical count `now` that each request carries.
//!
//! ARM DDI 0406C chapter B8 ("The Generic Timer", "Timer register views"):
//! - CompareValue view (CNTP_CVAL): a 64-bit compare value; the timer
//!   condition is met when the counter is at or past it, compared as unsigned
//!   64-bit values (as QEMU and KVM do; the counter never wraps in practice,
//!   2^64 ticks at 62.5 MHz are 9,000 years, so a compare value near
//!   `u64::MAX` means "not in this lifetime", which Linux relies on).
//! - TimerValue view (CNTP_TVAL): reads `(CVAL - count)[31:0]`, a signed
//!   32-bit count down that goes negative once the condition is met; a write
//!   sets `CVAL = count + SignExtend(TVAL)`. Both are modulo 2^64.
//! - CNTP_CTL: ENABLE and IMASK are the guest's; ISTATUS is the condition,
//!   read-only. The interrupt output is `ENABLE && !IMASK && condition`.
//!
//! The count the guest's physical timer compares against is the host's
//! physical count (CNTPCT), with no offset: the guest reads the same CNTPCT
//! the host does, and a deadline in CVAL is a deadline for the Hyp timer as is.

use serde::{Deserialize, Serialize};

use crate::regs::ctl;

/// One vCPU's physical timer registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PhysTimer {
    /// ENABLE and IMASK as last written (nothing else is stored: ISTATUS is
    /// computed from the count).
    ctl: u32,
    /// CNTP_CVAL. Reset value UNKNOWN architecturally; 0 here.
    cval: u64,
}

impl PhysTimer {
    /// True when ENABLE is set.
    pub fn enabled(&self) -> bool {
        self.ctl & ctl::ENABLE != 0
    }

    /// True when IMASK is set.
    pub fn masked(&self) -> bool {
        self.ctl & ctl::IMASK != 0
    }

    /// ISTATUS at `now`: the timer is enabled and the count has reached CVAL.
    pub fn istatus(&self, now: u64) -> bool {
        self.enabled() && now >= self.cval
    }

    /// The level of the timer's interrupt output at `now`.
    pub fn output(&self, now: u64) -> bool {
        self.istatus(now) && !self.masked()
    }

    /// When the output will rise, if it is low at `now` and can rise without
    /// a register write: the physical count at which to fire the Hyp timer.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        (self.enabled() && !self.masked() && now < self.cval).then_some(self.cval)
    }

    /// Read CNTP_CTL at `now`.
    pub fn read_ctl(&self, now: u64) -> u32 {
        let istatus = if self.istatus(now) { ctl::ISTATUS } else { 0 };
        self.ctl | istatus
    }

    /// Write CNTP_CTL: ENABLE and IMASK are taken, ISTATUS and the reserved
    /// bits are ignored.
    pub fn write_ctl(&mut self, value: u32) {
        self.ctl = value & ctl::WRITABLE;
    }

    /// Read CNTP_CVAL.
    pub fn read_cval(&self) -> u64 {
        self.cval
    }

    /// Write CNTP_CVAL.
    pub fn write_cval(&mut self, value: u64) {
        self.cval = value;
    }

    /// Read CNTP_TVAL at `now`: `(CVAL - now)` truncated to 32 bits, to be
    /// read by the guest as a signed value.
    pub fn read_tval(&self, now: u64) -> u32 {
        // Truncation is the architected behaviour.
        self.cval.wrapping_sub(now) as u32
    }

    /// Write CNTP_TVAL at `now`: `CVAL = now + SignExtend(value)`, modulo 2^64.
    pub fn write_tval(&mut self, now: u64, value: u32) {
        // Reinterpret as signed, then sign-extend to 64 bits: both casts are
        // the architected SignExtend().
        let delta = i64::from(value as i32);
        self.cval = now.wrapping_add_signed(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(ctl: u32, cval: u64) -> PhysTimer {
        let mut t = PhysTimer::default();
        t.write_ctl(ctl);
        t.write_cval(cval);
        t
    }

    #[test]
    fn ctl_keeps_enable_and_imask_only() {
        let mut t = PhysTimer::default();
        t.write_ctl(u32::MAX);
        assert_eq!(t.read_ctl(0), ctl::ENABLE | ctl::IMASK | ctl::ISTATUS);
        t.write_cval(10);
        assert_eq!(t.read_ctl(9), ctl::ENABLE | ctl::IMASK);
        t.write_ctl(ctl::ISTATUS);
        assert_eq!(t.read_ctl(100), 0, "ISTATUS is read-only and 0 when disabled");
    }

    #[test]
    fn istatus_and_output_follow_the_condition() {
        let t = timer(ctl::ENABLE, 1000);
        assert!(!t.istatus(999));
        assert!(t.istatus(1000));
        assert!(t.output(1000));
        let masked = timer(ctl::ENABLE | ctl::IMASK, 1000);
        assert!(masked.istatus(5000), "IMASK does not hide ISTATUS");
        assert!(!masked.output(5000));
        let off = timer(0, 0);
        assert!(!off.istatus(5000));
        assert!(!off.output(5000));
    }

    #[test]
    fn deadline_only_when_output_can_rise() {
        assert_eq!(timer(ctl::ENABLE, 1000).deadline(10), Some(1000));
        assert_eq!(timer(ctl::ENABLE, 1000).deadline(1000), None, "already met");
        assert_eq!(timer(ctl::ENABLE | ctl::IMASK, 1000).deadline(10), None);
        assert_eq!(timer(0, 1000).deadline(10), None);
        assert_eq!(timer(ctl::ENABLE, u64::MAX).deadline(u64::MAX - 1), Some(u64::MAX));
    }

    #[test]
    fn tval_is_a_signed_view_of_cval_minus_now() {
        let mut t = timer(ctl::ENABLE, 0);
        t.write_tval(1_000_000, 500);
        assert_eq!(t.read_cval(), 1_000_500);
        assert_eq!(t.read_tval(1_000_000), 500);
        assert_eq!(t.read_tval(1_000_600) as i32, -100, "negative after the deadline");
        // A negative TVAL puts the deadline in the past: met at once.
        t.write_tval(1_000_000, (-5i32) as u32);
        assert_eq!(t.read_cval(), 999_995);
        assert!(t.istatus(1_000_000));
        // Extremes of the 32-bit view.
        t.write_tval(1 << 40, i32::MAX as u32);
        assert_eq!(t.read_cval(), (1 << 40) + 0x7fff_ffff);
        t.write_tval(1 << 40, i32::MIN as u32);
        assert_eq!(t.read_cval(), (1 << 40) - 0x8000_0000);
        assert_eq!(t.read_tval(1 << 40), 0x8000_0000);
    }

    #[test]
    fn tval_read_truncates_far_deadlines() {
        let t = timer(ctl::ENABLE, u64::MAX);
        // CVAL - now = 2^64 - 1 - 5: low 32 bits 0xffff_fffa (reads as -6).
        assert_eq!(t.read_tval(5), 0xffff_fffa);
        let t = timer(ctl::ENABLE, 0x1_0000_0010);
        assert_eq!(t.read_tval(0), 0x10);
    }

    #[test]
    fn arithmetic_wraps_modulo_2_to_the_64() {
        let mut t = timer(ctl::ENABLE, 0);
        // A positive TVAL near the top of the count wraps CVAL past zero:
        // the unsigned condition is then met at once, as on hardware.
        t.write_tval(u64::MAX - 1, 10);
        assert_eq!(t.read_cval(), 8);
        assert!(t.istatus(u64::MAX - 1));
        assert_eq!(t.read_tval(u64::MAX - 1), 10);
        // A negative TVAL near zero wraps below zero to a far deadline.
        t.write_tval(3, (-10i32) as u32);
        assert_eq!(t.read_cval(), u64::MAX - 6);
        assert!(!t.istatus(3));
        assert_eq!(t.deadline(3), Some(u64::MAX - 6));
        assert_eq!(t.read_tval(3) as i32, -10);
    }
}
