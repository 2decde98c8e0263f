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

use test_guests::pl011::{
    self, Pl011, UARTCR, UARTCR_LBE, UARTCR_RXE, UARTCR_TXE, UARTCR_UARTEN, UARTDMACR, UARTDR, UARTFBRD, UARTFR,
    UARTFR_RXFE, UARTFR_TXFE, UARTFR_TXFF, UARTIBRD, UARTICR, UARTIFLS, UARTILPR, UARTIMSC, UARTLCR_H, UARTPERIPHID0,
};
use test_guests::platform::Platform;
use test_guests::{rt, BootInfo};

test_guests::entry!(main);

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

/// Every register word of the block (UARTDR only while the receive FIFO
/// is empty: then its load pops nothing), and the bytes and halfwords of
/// the registers below 0x50, into `digest`.
fn snapshot(uart: &Pl011, digest: &mut Digest) {
    for offset in (0..pl011::BLOCK_SIZE).step_by(4) {
        digest.add(uart.read(offset));
        if offset < 0x50 {
            digest.add(u32::from(uart.read16(offset + 2)));
            digest.add(u32::from(uart.read8(offset + 1)));
        }
    }
}

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("uart_image", boot);
    let platform = Platform::discover(&env, &mut report);
    let Some((uart, _)) = platform.uart else {
        report.fail(format_args!("no PL011 in the device tree"));
        report.finish()
    };
    let mut digest = Digest { hash: 0x811c_9dc5, loads: 0 };

    let ids: [u32; 8] = core::array::from_fn(|i| uart.read(UARTPERIPHID0 + 4 * i));
    report.check(ids == IDS, format_args!("ID registers {ids:x?} (want {IDS:x?})"));
    let fr = uart.read(UARTFR);
    report.check(
        fr & (UARTFR_TXFE | UARTFR_RXFE | UARTFR_TXFF) == UARTFR_TXFE | UARTFR_RXFE,
        format_args!("UARTFR {fr:#x}: transmit and receive FIFOs empty"),
    );
    snapshot(&uart, &mut digest);

    // Each writable register, then everything read again.
    let writes = [
        (UARTIMSC, 0x50),
        (UARTIFLS, 0x09),
        (UARTIBRD, 0x1234),
        (UARTFBRD, 0x2a),
        (UARTLCR_H, 0x70),
        (UARTICR, 0x7ff),
        (UARTDMACR, 0x5),
        (UARTILPR, 0x77),
    ];
    for (offset, value) in writes {
        uart.write(offset, value);
        snapshot(&uart, &mut digest);
    }
    let imsc = uart.read(UARTIMSC);
    report.check(imsc == 0x50, format_args!("UARTIMSC reads back {imsc:#x} (want 0x50)"));
    let ibrd = uart.read(UARTIBRD);
    let (half, byte) = (uart.read16(UARTIBRD), uart.read8(UARTIBRD + 1));
    report.check(
        ibrd == 0x1234 && half == 0x1234 && byte == 0x12,
        format_args!("UARTIBRD {ibrd:#x}, its halfword {half:#x} and second byte {byte:#x}"),
    );

    // Loopback: the byte sent is received. (Nothing is printed meanwhile:
    // in loopback the console's output goes to the receive FIFO.)
    let cr = uart.read(UARTCR);
    uart.write(UARTCR, UARTCR_UARTEN | UARTCR_TXE | UARTCR_RXE | UARTCR_LBE);
    uart.write(UARTDR, 0x5a);
    let full = uart.read(UARTFR);
    let data = uart.read(UARTDR);
    let empty = uart.read(UARTFR);
    snapshot(&uart, &mut digest);
    uart.write(UARTCR, cr);
    report.check(full & UARTFR_RXFE == 0, format_args!("UARTFR {full:#x} shows the looped-back byte received"));
    report.check(data & 0xff == 0x5a, format_args!("UARTDR returns the looped-back byte: {data:#x}"));
    report.check(empty & UARTFR_RXFE != 0, format_args!("UARTFR {empty:#x} shows the receive FIFO empty again"));
    snapshot(&uart, &mut digest);

    test_guests::outln!("uart_image: digest {:#010x} over {} loads", digest.hash, digest.loads);
    report.finish()
}
