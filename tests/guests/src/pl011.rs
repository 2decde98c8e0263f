//! The transmit side of an Arm PrimeCell UART (PL011).
//!
//! Source: "PrimeCell UART (PL011) Technical Reference Manual" (Arm DDI
//! 0183), 3.2 "Summary of registers" and 3.3.3 "Flag Register, UARTFR".
//! The guest only transmits: it polls FR.TXFF and writes DR, as the Linux
//! `earlycon` does, and leaves the UART's configuration to whoever set it up
//! (QEMU's model and splitvisor's emulation both transmit after reset).

/// UARTDR, the data register: a write queues the byte in bits [7:0].
pub const UARTDR: usize = 0x000;
/// UARTFR, the flag register.
pub const UARTFR: usize = 0x018;
/// UARTFR.TXFF (bit 5): the transmit FIFO (or holding register) is full.
pub const UARTFR_TXFF: u32 = 1 << 5;
/// UARTIMSC, the interrupt mask set/clear register (3.3.10): a set bit
/// lets the raw interrupt through to the UART's interrupt line.
pub const UARTIMSC: usize = 0x038;
/// UARTRIS, the raw interrupt status register (3.3.11).
pub const UARTRIS: usize = 0x03c;
/// UARTMIS, the masked interrupt status register (3.3.12).
pub const UARTMIS: usize = 0x040;
/// UARTICR, the interrupt clear register (3.3.13, write-only).
pub const UARTICR: usize = 0x044;
/// The transmit interrupt bit (TXIM/TXRIS/TXMIS/TXIC, bit 5) of UARTIMSC,
/// UARTRIS, UARTMIS and UARTICR: asserted while the transmit FIFO is at or
/// below its trigger level (3.4.3 "UARTTXINTR").
pub const INT_TX: u32 = 1 << 5;

/// How many times the guest polls FR.TXFF for one byte before it drops the
/// byte: a UART that stays full must not hang the guest, which then still
/// reaches its power-off and lets the test report the missing output.
pub const TXFF_POLL_LIMIT: u32 = 1_000_000;

#[cfg(all(target_arch = "arm", target_os = "none"))]
pub use driver::Pl011;

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod driver {
    use super::{TXFF_POLL_LIMIT, UARTDR, UARTFR, UARTFR_TXFF};
    use crate::arch;

    /// A PL011 at a known physical address (the MMU is off).
    #[derive(Clone, Copy, Debug)]
    pub struct Pl011 {
        base: usize,
    }

    impl Pl011 {
        /// # Safety
        ///
        /// `base` must be the physical address of a PL011's register block,
        /// as the device tree gives it.
        pub const unsafe fn new(base: usize) -> Self {
            Self { base }
        }

        /// The register block's base address.
        pub const fn base(&self) -> usize {
            self.base
        }

        /// Reads the register at `offset` (one of this module's offsets).
        pub fn read(&self, offset: usize) -> u32 {
            // SAFETY: `new`'s contract; the offsets are PL011 registers.
            unsafe { arch::mmio_read32(self.base + offset) }
        }

        /// Writes the register at `offset` (one of this module's offsets).
        pub fn write(&self, offset: usize, value: u32) {
            // SAFETY: as for `read`.
            unsafe { arch::mmio_write32(self.base + offset, value) };
        }

        /// Sends one byte; drops it if the FIFO stays full (see
        /// [`TXFF_POLL_LIMIT`]). Returns whether it was sent.
        pub fn write_byte(&self, byte: u8) -> bool {
            for _ in 0..TXFF_POLL_LIMIT {
                // SAFETY: `new`'s contract makes base + UARTFR a PL011 flag
                // register; reading it has no side effect.
                let flags = unsafe { arch::mmio_read32(self.base + UARTFR) };
                if flags & UARTFR_TXFF == 0 {
                    // SAFETY: as above for the data register; the write
                    // queues one byte for transmission.
                    unsafe { arch::mmio_write32(self.base + UARTDR, u32::from(byte)) };
                    return true;
                }
            }
            false
        }
    }
}
