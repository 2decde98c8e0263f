//! The guest's console: the PL011 the device tree names, or semihosting when
//! there is no usable tree, or nothing.
//!
//! The choice is global because the exception and panic handlers must be
//! able to print without being handed anything; atomics keep this free of
//! `static mut`. Several CPUs may print: each line is written under a lock
//! ([`lock`]) so that lines do not interleave.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::{pl011, semihosting};

/// Where output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Nowhere (semihosting turned out to be unavailable).
    None,
    /// Arm semihosting (no device tree).
    Semihosting,
    /// A PL011 at this physical address.
    Pl011(usize),
}

const SINK_NONE: u8 = 0;
const SINK_SEMIHOSTING: u8 = 1;
const SINK_PL011: u8 = 2;

static KIND: AtomicU8 = AtomicU8::new(SINK_NONE);
static PL011_BASE: AtomicUsize = AtomicUsize::new(0);

/// Selects the console.
///
/// # Safety
///
/// For [`Sink::Pl011`], the address must be a PL011's register block.
pub unsafe fn set(sink: Sink) {
    match sink {
        Sink::None => KIND.store(SINK_NONE, Ordering::SeqCst),
        Sink::Semihosting => KIND.store(SINK_SEMIHOSTING, Ordering::SeqCst),
        Sink::Pl011(base) => {
            PL011_BASE.store(base, Ordering::SeqCst);
            KIND.store(SINK_PL011, Ordering::SeqCst);
        }
    }
}

/// The console in use.
pub fn sink() -> Sink {
    match KIND.load(Ordering::SeqCst) {
        SINK_SEMIHOSTING => Sink::Semihosting,
        SINK_PL011 => Sink::Pl011(PL011_BASE.load(Ordering::SeqCst)),
        _ => Sink::None,
    }
}

/// Writes through the selected console; `\n` goes out as `\r\n`.
pub struct Console;

impl Console {
    fn put(sink: Sink, byte: u8) {
        match sink {
            Sink::None => {}
            Sink::Semihosting => semihosting::write_byte(byte),
            Sink::Pl011(base) => {
                // SAFETY: `set` only accepts a PL011 base under its contract.
                let uart = unsafe { pl011::Pl011::new(base) };
                uart.write_byte(byte);
            }
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let sink = sink();
        for byte in s.bytes() {
            if byte == b'\n' {
                Self::put(sink, b'\r');
            }
            Self::put(sink, byte);
        }
        Ok(())
    }
}

/// The console lock's owner: 0 when free, else the owner's MPIDR + 1.
static OWNER: AtomicU32 = AtomicU32::new(0);
/// How many times [`lock`] tries before it takes the lock anyway: a CPU
/// that stopped while holding it (a fatal error, a hypervisor that never
/// resumed it) must not silence the others.
const LOCK_SPIN_LIMIT: u32 = 10_000_000;

/// Holds the console lock (or nothing, for a nested lock on the same CPU)
/// and the caller's IRQ mask, both restored on drop.
pub struct Guard {
    release: bool,
    cpsr: u32,
}

/// Takes the console lock for this CPU with IRQs masked (an IRQ handler
/// that prints on the same CPU then cannot deadlock); re-entrant on the same
/// CPU.
pub fn lock() -> Guard {
    let cpsr = crate::arch::read_cpsr();
    crate::arch::irq_disable();
    let me = crate::arch::read_mpidr().wrapping_add(1).max(1);
    if OWNER.load(Ordering::SeqCst) == me {
        return Guard { release: false, cpsr };
    }
    for _ in 0..LOCK_SPIN_LIMIT {
        if OWNER.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return Guard { release: true, cpsr };
        }
        core::hint::spin_loop();
    }
    OWNER.store(me, Ordering::SeqCst);
    Guard { release: true, cpsr }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.release {
            OWNER.store(0, Ordering::SeqCst);
        }
        crate::arch::irq_restore(self.cpsr);
    }
}

/// Prints one line on the guest console.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _guard = $crate::console::lock();
        // Console output never fails: a full UART drops bytes instead.
        let _ = writeln!($crate::console::Console, $($arg)*);
    }};
}
