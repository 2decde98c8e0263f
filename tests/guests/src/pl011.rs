//! An Arm PrimeCell UART (PL011): its registers, and the transmit side
//! the guests' console uses.
//!
//! Source: "PrimeCell UART (PL011) Technical Reference Manual" (Arm DDI
//! 0183), 3.2 "Summary of registers" and 3.3 "Register descriptions".
//! The console only transmits: it polls FR.TXFF and writes DR, as the Linux
//! `earlycon` does, and leaves the UART's configuration to whoever set it up
//! (QEMU's model and splitvisor's emulation both transmit after reset). The
//! `uart_image` guest reads and writes every register.

/// UARTDR, the data register: a write queues the byte in bits [7:0].
pub const UARTDR: usize = 0x000;
/// UARTFR, the flag register.
pub const UARTFR: usize = 0x018;
/// UARTFR.RXFE (bit 4): the receive FIFO (or holding register) is empty.
pub const UARTFR_RXFE: u32 = 1 << 4;
/// UARTFR.TXFF (bit 5): the transmit FIFO (or holding register) is full.
pub const UARTFR_TXFF: u32 = 1 << 5;
/// UARTFR.TXFE (bit 7): the transmit FIFO (or holding register) is empty.
pub const UARTFR_TXFE: u32 = 1 << 7;
/// UARTILPR, the IrDA low-power counter register (3.3.4).
pub const UARTILPR: usize = 0x020;
/// UARTIBRD, the integer baud rate divisor (3.3.5).
pub const UARTIBRD: usize = 0x024;
/// UARTFBRD, the fractional baud rate divisor (3.3.6).
pub const UARTFBRD: usize = 0x028;
/// UARTLCR_H, the line control register (3.3.7).
pub const UARTLCR_H: usize = 0x02c;
/// UARTCR, the control register (3.3.8).
pub const UARTCR: usize = 0x030;
/// UARTCR.UARTEN: the UART is enabled.
pub const UARTCR_UARTEN: u32 = 1 << 0;
/// UARTCR.LBE: loopback, transmitted data is received.
pub const UARTCR_LBE: u32 = 1 << 7;
/// UARTCR.TXE: transmit enable.
pub const UARTCR_TXE: u32 = 1 << 8;
/// UARTCR.RXE: receive enable.
pub const UARTCR_RXE: u32 = 1 << 9;
/// UARTIFLS, the interrupt FIFO level select register (3.3.9).
pub const UARTIFLS: usize = 0x034;
/// UARTIMSC, the interrupt mask set/clear register (3.3.10): a set bit
/// lets the raw interrupt through to the UART's interrupt line.
pub const UARTIMSC: usize = 0x038;
/// UARTRIS, the raw interrupt status register (3.3.11).
pub const UARTRIS: usize = 0x03c;
/// UARTMIS, the masked interrupt status register (3.3.12).
pub const UARTMIS: usize = 0x040;
/// UARTICR, the interrupt clear register (3.3.13, write-only).
pub const UARTICR: usize = 0x044;
/// UARTDMACR, the DMA control register (3.3.14).
pub const UARTDMACR: usize = 0x048;
/// UARTPeriphID0 (3.3.15); PeriphID1-3 and PCellID0-3 follow every 4 bytes.
pub const UARTPERIPHID0: usize = 0xfe0;
/// The end of the register block.
pub const BLOCK_SIZE: usize = 0x1000;
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

        /// Reads the word at `offset` of the register block (one of this
        /// module's offsets, or a reserved word, which reads 0).
        pub fn read(&self, offset: usize) -> u32 {
            // SAFETY: `new`'s contract; the offset lies in the block.
            unsafe { arch::mmio_read32(self.base + offset) }
        }

        /// A halfword load at `offset` (a register's, or its upper half).
        pub fn read16(&self, offset: usize) -> u16 {
            // SAFETY: `new`'s contract; the offset lies in the block.
            unsafe { arch::mmio_read16(self.base + offset) }
        }

        /// A byte load at `offset` (a byte of a register).
        pub fn read8(&self, offset: usize) -> u8 {
            // SAFETY: `new`'s contract; the offset lies in the block.
            unsafe { arch::mmio_read8(self.base + offset) }
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
