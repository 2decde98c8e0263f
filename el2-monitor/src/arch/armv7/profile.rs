//! Where the hypervisor's time goes, for `splitvisor bench` and `--stats`:
//! with the `profile` feature, the physical counter is read around the trap
//! handler, each server's `handle` and the WFI of an idle vCPU, and the
//! ticks are added up per CPU (see `el2_monitor::router::PROFILE_PARTS`).
//! Without the feature every function here is empty, so that a normal
//! build pays nothing.

#[cfg(feature = "profile")]
use core::sync::atomic::{AtomicU64, Ordering};

use el2_monitor::router::PROFILE_PARTS;
use tock_registers::interfaces::Readable;

#[cfg(feature = "profile")]
use super::sysreg::CNTPCT;

/// The parts, as indices into `PROFILE_PARTS`.
#[derive(Clone, Copy)]
pub enum Part {
    /// The whole trap handler.
    Hyp = 0,
    /// Idle in WFI for the vCPU.
    Idle = 4,
    /// Asleep waiting for a lock another CPU held (a server's, the UART's).
    Lock = 5,
    /// Writing to the UART (console output and the log).
    Uart = 6,
}

impl Part {
    /// The part of a server.
    pub fn server(id: ipc::ServerId) -> usize {
        1 + id.index()
    }
}

#[cfg(feature = "profile")]
static TICKS: [[AtomicU64; PROFILE_PARTS.len()]; super::MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; PROFILE_PARTS.len()] }; super::MAX_CPUS];

/// The physical counter now, whatever the build (for durations reported in
/// the log).
pub fn counter() -> u64 {
    super::sysreg::CNTPCT.get()
}

/// `ticks` of the physical counter in microseconds.
pub fn micros(ticks: u64) -> u64 {
    let hz = u64::from(super::sysreg::CNTFRQ.get()).max(1);
    ticks.saturating_mul(1_000_000) / hz
}

/// The counter now (0 without the feature).
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(feature = "profile")]
    {
        // SAFETY: ISB only orders the counter read after what precedes it.
        unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
        CNTPCT.get()
    }
    #[cfg(not(feature = "profile"))]
    0
}

/// Add the ticks since `since` to part `part` of CPU `cpu`.
#[inline(always)]
pub fn add(cpu: usize, part: usize, since: u64) {
    #[cfg(feature = "profile")]
    if let Some(cell) = TICKS.get(cpu).and_then(|c| c.get(part)) {
        cell.fetch_add(now().wrapping_sub(since), Ordering::Relaxed);
    }
    #[cfg(not(feature = "profile"))]
    let _ = (cpu, part, since);
}

/// [`add`] for the CPU this runs on.
#[inline(always)]
pub fn add_here(part: Part, since: u64) {
    #[cfg(feature = "profile")]
    add(super::HTPIDR.get() as usize, part as usize, since);
    #[cfg(not(feature = "profile"))]
    let _ = (part, since);
}

/// CPU `cpu`'s ticks so far.
pub fn ticks(cpu: usize) -> [u64; PROFILE_PARTS.len()] {
    #[cfg(feature = "profile")]
    if let Some(cells) = TICKS.get(cpu) {
        return core::array::from_fn(|i| cells[i].load(Ordering::Relaxed));
    }
    let _ = cpu;
    [0; PROFILE_PARTS.len()]
}
