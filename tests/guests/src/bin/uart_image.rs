//! Test guest `uart_image`: the PL011 as a guest reads it, whichever way the
//! hypervisor serves the reads (splitvisor maps a read-only image of the
//! registers while they read without side effects, or traps every access
//! with `--no-console-image`).
//!
//! It writes each writable register, and after each write loads every
//! register word of the block, some of them also by byte and halfword,
//! folding all the values into one digest that it prints
//! (`uart_image: digest 0x... over N loads`): the test compares the digests
//! of the two ways. Checks, each a `PASS:`/`FAIL:` line: the ID registers
//! name an ARM PL011; UARTFR shows the transmit and receive FIFOs empty;
//! written registers read back; byte and halfword loads return their bytes
//! of the word; in loopback a byte written to UARTDR shows in UARTFR as
//! received data, a load of UARTDR returns it, and UARTFR shows the FIFO
//! empty again (the image must be withdrawn while the FIFO holds data: a
//! stale one would show it empty, and the load of UARTDR would not pop it).

#![no_std]
#![no_main]

use test_guests::platform::Platform;
use test_guests::{arch, rt, BootInfo};

test_guests::entry!(main);

/// Register offsets (ARM DDI 0183, 3.2).
mod reg {
    pub const DR: usize = 0x000;
    pub const FR: usize = 0x018;
    pub const ILPR: usize = 0x020;
    pub const IBRD: usize = 0x024;
    pub const FBRD: usize = 0x028;
    pub const LCR_H: usize = 0x02c;
    pub const CR: usize = 0x030;
    pub const IFLS: usize = 0x034;
    pub const IMSC: usize = 0x038;
    pub const ICR: usize = 0x044;
    pub const DMACR: usize = 0x048;
    /// UARTPeriphID0; the ID registers run to 0xffc.
    pub const PERIPH_ID0: usize = 0xfe0;
    /// The end of the register block.
    pub const END: usize = 0x1000;
}

/// UARTFR bits.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const FR_TXFE: u32 = 1 << 7;
/// UARTCR bits.
const CR_UARTEN: u32 = 1 << 0;
const CR_LBE: u32 = 1 << 7;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;
/// What a PL011's PeriphID0-3 and PCellID0-3 read (QEMU's `pl011`: part
/// 0x011, designer ARM, revision 1).
const IDS: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// FNV-1a over 32-bit values, and how many went in.
struct Digest {
    hash: u32,
    loads: u32,
}

impl Digest {
    fn add(&mut self, value: u32) {
        for byte in value.to_le_bytes() {
            self.hash = (self.hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        self.loads += 1;
    }
}

struct Uart {
    base: usize,
}

impl Uart {
    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `offset` is a word of the PL011's register block (the
        // device tree's console); a load of UARTDR pops its FIFO, which
        // this guest means when it reads it.
        unsafe { arch::mmio_read32(self.base + offset) }
    }

    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as `read`, a halfword of the block.
        unsafe { arch::mmio_read16(self.base + offset) }
    }

    fn read8(&self, offset: usize) -> u8 {
        // SAFETY: as `read`, a byte of the block.
        unsafe { arch::mmio_read8(self.base + offset) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: `offset` is a register of the block; the writes here
        // change only the UART's own state.
        unsafe { arch::mmio_write32(self.base + offset, value) };
    }

    /// Every register word of the block (UARTDR only while the receive
    /// FIFO is empty: then its load pops nothing), and the bytes and
    /// halfwords of the registers below 0x50, into `digest`.
    fn snapshot(&self, digest: &mut Digest) {
        for offset in (0..reg::END).step_by(4) {
            digest.add(self.read(offset));
            if offset < 0x50 {
                digest.add(u32::from(self.read16(offset + 2)));
                digest.add(u32::from(self.read8(offset + 1)));
            }
        }
    }
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("uart_image", boot);
    let platform = Platform::discover(&env, &mut report);
    let Some((pl011, _)) = platform.uart else {
        report.fail(format_args!("no PL011 in the device tree"));
        report.finish()
    };
    let uart = Uart { base: pl011.base() };
    let mut digest = Digest { hash: 0x811c_9dc5, loads: 0 };

    let ids: [u32; 8] = core::array::from_fn(|i| uart.read(reg::PERIPH_ID0 + 4 * i));
    report.check(ids == IDS, format_args!("ID registers {ids:x?} (want {IDS:x?})"));
    let fr = uart.read(reg::FR);
    report.check(
        fr & (FR_TXFE | FR_RXFE | FR_TXFF) == FR_TXFE | FR_RXFE,
        format_args!("UARTFR {fr:#x}: transmit and receive FIFOs empty"),
    );
    uart.snapshot(&mut digest);

    // Each writable register, then everything read again.
    let writes = [
        (reg::IMSC, 0x50),
        (reg::IFLS, 0x09),
        (reg::IBRD, 0x1234),
        (reg::FBRD, 0x2a),
        (reg::LCR_H, 0x70),
        (reg::ICR, 0x7ff),
        (reg::DMACR, 0x5),
        (reg::ILPR, 0x77),
    ];
    for (offset, value) in writes {
        uart.write(offset, value);
        uart.snapshot(&mut digest);
    }
    let imsc = uart.read(reg::IMSC);
    report.check(imsc == 0x50, format_args!("UARTIMSC reads back {imsc:#x} (want 0x50)"));
    let ibrd = uart.read(reg::IBRD);
    let (half, byte) = (uart.read16(reg::IBRD), uart.read8(reg::IBRD + 1));
    report.check(
        ibrd == 0x1234 && half == 0x1234 && byte == 0x12,
        format_args!("UARTIBRD {ibrd:#x}, its halfword {half:#x} and second byte {byte:#x}"),
    );

    // Loopback: the byte sent is received. (Nothing is printed meanwhile:
    // in loopback the console's output goes to the receive FIFO.)
    let cr = uart.read(reg::CR);
    uart.write(reg::CR, CR_UARTEN | CR_TXE | CR_RXE | CR_LBE);
    uart.write(reg::DR, 0x5a);
    let full = uart.read(reg::FR);
    let data = uart.read(reg::DR);
    let empty = uart.read(reg::FR);
    uart.snapshot(&mut digest);
    uart.write(reg::CR, cr);
    report.check(full & FR_RXFE == 0, format_args!("UARTFR {full:#x} shows the looped-back byte received"));
    report.check(data & 0xff == 0x5a, format_args!("UARTDR returns the looped-back byte: {data:#x}"));
    report.check(empty & FR_RXFE != 0, format_args!("UARTFR {empty:#x} shows the receive FIFO empty again"));
    uart.snapshot(&mut digest);

    test_guests::outln!("uart_image: digest {:#010x} over {} loads", digest.hash, digest.loads);
    report.finish()
}
