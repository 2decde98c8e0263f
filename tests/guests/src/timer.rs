//! The architected Generic Timer's control register fields and tick
//! arithmetic (the CP15 accessors are in `arch`).
//!
//! Source: Arm ARM ARMv7-A/R (DDI 0406C), B8.1 "About the Generic Timer",
//! B4.1.26 "CNTP_CTL" and B4.1.33 "CNTV_CTL" (the same fields), B8.1.5
//! "Timers" (the condition CVAL <= count, TVAL as a signed 32-bit view of
//! CVAL - count).

/// CNTx_CTL.ENABLE (bit 0): the timer is enabled.
pub const CTL_ENABLE: u32 = 1 << 0;
/// CNTx_CTL.IMASK (bit 1): the timer's interrupt is masked.
pub const CTL_IMASK: u32 = 1 << 1;
/// CNTx_CTL.ISTATUS (bit 2, read-only): the timer condition is met.
pub const CTL_ISTATUS: u32 = 1 << 2;

/// Counter ticks in `micros` microseconds at `freq` Hz (rounded down).
pub const fn ticks(freq: u32, micros: u64) -> u64 {
    freq as u64 * micros / 1_000_000
}

/// Microseconds in `ticks` counter ticks at `freq` Hz (0 for `freq` 0).
pub const fn micros(freq: u32, ticks: u64) -> u64 {
    if freq == 0 {
        0
    } else {
        ticks.saturating_mul(1_000_000) / freq as u64
    }
}

/// Whether `count` is within `percent` % of `expected`.
pub const fn within_percent(count: u64, expected: u64, percent: u64) -> bool {
    let tolerance = expected * percent / 100;
    count + tolerance >= expected && count <= expected + tolerance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_arithmetic() {
        assert_eq!(ticks(62_500_000, 1_000), 62_500);
        assert_eq!(ticks(62_500_000, 1_000_000), 62_500_000);
        assert_eq!(micros(62_500_000, 62_500), 1_000);
        assert_eq!(micros(0, 5), 0);
        assert_eq!(micros(1, u64::MAX), u64::MAX);
    }

    #[test]
    fn percent_window() {
        assert!(within_percent(1000, 1000, 5));
        assert!(within_percent(950, 1000, 5));
        assert!(within_percent(1050, 1000, 5));
        assert!(!within_percent(949, 1000, 5));
        assert!(!within_percent(1051, 1000, 5));
        assert!(!within_percent(0, 1000, 5));
    }
}
