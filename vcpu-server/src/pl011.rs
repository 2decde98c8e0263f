//! The guest's console: an ARM PrimeCell UART (PL011).
//!
//! Register map, fields and interrupt rules follow the *ARM PrimeCell UART
//! (PL011) Technical Reference Manual* (DDI 0183, r1p5), chapter 3
//! "Programmers Model"; section numbers below refer to it. The model
//! identifies itself as QEMU's `pl011` does (revision 1, so the Linux
//! `amba-pl011` driver sizes its FIFOs at 16 entries, as we do).
//!
//! What is emulated and how:
//! - **Transmit is instant.** A write to UARTDR becomes an
//!   [`Action::ConsoleWrite`] at once, so the transmit FIFO is always empty:
//!   UARTFR.TXFE is set, TXFF and BUSY are clear. Every character written
//!   drains through the transmit trigger level at once, so each UARTDR write
//!   sets the transmit interrupt (TXRIS, §3.4.3 "UARTTXINTR"); only UARTICR
//!   clears it, because the FIFO never rises above the level. As in QEMU,
//!   UARTCR.UARTEN/TXE are not required: early consoles write to a UART the
//!   firmware left enabled.
//! - **Receive FIFO** of 16 entries with UARTLCR_H.FEN set and 1 entry
//!   (the holding register) without, filled by the VM's console input. The
//!   receive interrupt (RXRIS) rises when the fill level crosses the
//!   UARTIFLS trigger level upwards and falls when reads take it below the
//!   level; the receive timeout interrupt (RTRIS) rises when a batch of input
//!   ends with data in the FIFO (the line went quiet: the model has no bit
//!   clock, so the 32-bit-period timeout is taken as elapsed) and falls when
//!   the FIFO is read empty. Either is also cleared by UARTICR.
//! - **No silent loss.** The monitor forwards only as many input bytes as
//!   the FIFO has room for ([`Action::ConsoleReady`], sent whenever the room
//!   changes). A byte that arrives anyway with the FIFO full is an overrun
//!   (§3.3.2): UARTRSR.OE and OERIS are set, and the next character that does
//!   enter the FIFO carries UARTDR.OE.
//! - **Loopback** (UARTCR.LBE): transmitted characters go to the receive FIFO
//!   instead of the console, a break (UARTLCR_H.BRK) is received as a break
//!   character, and the modem outputs drive the modem status inputs
//!   (RTS→CTS, DTR→DSR, Out1→DCD, Out2→RI). The console input is
//!   disconnected meanwhile (its room reads 0). Outside loopback no modem is
//!   attached: CTS, DSR, DCD and RI read 0, as on QEMU.
//! - **Interrupt line**: the combined UARTINTR = (UARTRIS & UARTIMSC) != 0;
//!   each change is sent to the vGIC server as one `SetLine`.
//! - **Access sizes**: byte, halfword and word accesses are all accepted
//!   (Linux uses halfwords, earlycon bytes), aligned to their size. A read
//!   reads the whole register (side effects included) and returns the bytes
//!   addressed; a write changes only the bytes it covers. 64-bit accesses and
//!   misaligned ones are refused (the guest gets an external abort).
//!   Reserved offsets read as zero and ignore writes; so do writes to
//!   read-only registers and reads of UARTICR (write-only).
//! - Baud rate, word format, IrDA and DMA registers hold their values and have
//!   no other effect: there is no serial line to time.
//! - **Read image.** While the receive FIFO is empty, no register read has a
//!   side effect; the model then keeps the monitor's read image of its page
//!   up to date and mapped (see [`crate::image`]), so the guest's loads do
//!   not trap (Linux reads UARTFR before each byte it writes). A load that
//!   the trap path would refuse (a doubleword, or a misaligned one where the
//!   guest's own translation lets it through) reads the image instead of
//!   taking an external abort meanwhile. Data in the receive FIFO unmaps the
//!   image until reads have emptied it.

use heapless::Vec;
use ipc::action::ReplyFull;
use ipc::msg::VgicRequest;
use ipc::{AccessSize, Action, IntId, Message, Reply};
use log::debug;
use serde::{Deserialize, Serialize};

use crate::image::ReadImage;
use crate::mmio::{AccessError, MmioDevice};

/// Register offsets (§3.2, Table 3-1).
pub mod offset {
    /// UARTDR: data.
    pub const DR: u64 = 0x000;
    /// UARTRSR (read) / UARTECR (write): receive status / error clear.
    pub const RSR_ECR: u64 = 0x004;
    /// UARTFR: flags (read-only).
    pub const FR: u64 = 0x018;
    /// UARTILPR: IrDA low-power counter.
    pub const ILPR: u64 = 0x020;
    /// UARTIBRD: integer baud rate divisor.
    pub const IBRD: u64 = 0x024;
    /// UARTFBRD: fractional baud rate divisor.
    pub const FBRD: u64 = 0x028;
    /// UARTLCR_H: line control.
    pub const LCR_H: u64 = 0x02C;
    /// UARTCR: control.
    pub const CR: u64 = 0x030;
    /// UARTIFLS: interrupt FIFO level select.
    pub const IFLS: u64 = 0x034;
    /// UARTIMSC: interrupt mask set/clear.
    pub const IMSC: u64 = 0x038;
    /// UARTRIS: raw interrupt status (read-only).
    pub const RIS: u64 = 0x03C;
    /// UARTMIS: masked interrupt status (read-only).
    pub const MIS: u64 = 0x040;
    /// UARTICR: interrupt clear (write-only).
    pub const ICR: u64 = 0x044;
    /// UARTDMACR: DMA control.
    pub const DMACR: u64 = 0x048;
    /// UARTPeriphID0; ID registers follow every 4 bytes up to UARTPCellID3.
    pub const PERIPH_ID0: u64 = 0xFE0;
    /// UARTPCellID0.
    pub const PCELL_ID0: u64 = 0xFF0;
    /// The size of the register block the PL011 decodes.
    pub const BLOCK_SIZE: u64 = 0x1000;
}

/// UARTDR fields (§3.3.1): received data and the error flags stored with it.
pub mod dr {
    /// Data bits `[7:0]`.
    pub const DATA: u16 = 0xFF;
    /// Framing error.
    pub const FE: u16 = 1 << 8;
    /// Parity error.
    pub const PE: u16 = 1 << 9;
    /// Break error.
    pub const BE: u16 = 1 << 10;
    /// Overrun error: the FIFO was full when data arrived before this character.
    pub const OE: u16 = 1 << 11;
    /// The error flags, bits `[11:8]`.
    pub const ERRORS: u16 = FE | PE | BE | OE;
    /// How far the error flags sit above the UARTRSR flags.
    pub const ERROR_SHIFT: u32 = 8;
}

/// UARTRSR fields (§3.3.2), bits `[3:0]`: FE, PE, BE, OE.
pub mod rsr {
    /// Overrun error.
    pub const OE: u8 = 1 << 3;
    /// Every implemented bit.
    pub const MASK: u8 = 0xF;
}

/// UARTFR fields (§3.3.3).
pub mod fr {
    /// Clear to send (complement of nUARTCTS).
    pub const CTS: u16 = 1 << 0;
    /// Data set ready.
    pub const DSR: u16 = 1 << 1;
    /// Data carrier detect.
    pub const DCD: u16 = 1 << 2;
    /// UART busy transmitting.
    pub const BUSY: u16 = 1 << 3;
    /// Receive FIFO empty.
    pub const RXFE: u16 = 1 << 4;
    /// Transmit FIFO full.
    pub const TXFF: u16 = 1 << 5;
    /// Receive FIFO full.
    pub const RXFF: u16 = 1 << 6;
    /// Transmit FIFO empty.
    pub const TXFE: u16 = 1 << 7;
    /// Ring indicator.
    pub const RI: u16 = 1 << 8;
}

/// UARTLCR_H fields (§3.3.7).
pub mod lcr_h {
    /// Send break.
    pub const BRK: u8 = 1 << 0;
    /// Enable FIFOs.
    pub const FEN: u8 = 1 << 4;
}

/// UARTCR fields (§3.3.8).
pub mod cr {
    /// UART enable.
    pub const UARTEN: u16 = 1 << 0;
    /// Loopback enable.
    pub const LBE: u16 = 1 << 7;
    /// Transmit enable.
    pub const TXE: u16 = 1 << 8;
    /// Receive enable.
    pub const RXE: u16 = 1 << 9;
    /// Data transmit ready (modem output).
    pub const DTR: u16 = 1 << 10;
    /// Request to send (modem output).
    pub const RTS: u16 = 1 << 11;
    /// Out1 (modem output).
    pub const OUT1: u16 = 1 << 12;
    /// Out2 (modem output).
    pub const OUT2: u16 = 1 << 13;
    /// Implemented bits: `[6:3]` are reserved.
    pub const MASK: u16 = 0xFF87;
    /// Reset value: TXE and RXE set, the UART disabled.
    pub const RESET: u16 = TXE | RXE;
}

/// UARTIFLS fields (§3.3.9).
pub mod ifls {
    /// Receive trigger level select, bits `[5:3]`.
    pub const RXIFLSEL_SHIFT: u32 = 3;
    /// Width mask of a level select field.
    pub const FIELD: u8 = 0x7;
    /// Implemented bits.
    pub const MASK: u8 = 0x3F;
    /// Reset value: both levels at half full.
    pub const RESET: u8 = 0x12;
}

/// Interrupt bits shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR
/// (§3.3.10-3.3.13).
pub mod int {
    /// nUARTRI modem status change.
    pub const RI: u16 = 1 << 0;
    /// nUARTCTS modem status change.
    pub const CTS: u16 = 1 << 1;
    /// nUARTDCD modem status change.
    pub const DCD: u16 = 1 << 2;
    /// nUARTDSR modem status change.
    pub const DSR: u16 = 1 << 3;
    /// Receive.
    pub const RX: u16 = 1 << 4;
    /// Transmit.
    pub const TX: u16 = 1 << 5;
    /// Receive timeout.
    pub const RT: u16 = 1 << 6;
    /// Framing error.
    pub const FE: u16 = 1 << 7;
    /// Parity error.
    pub const PE: u16 = 1 << 8;
    /// Break error.
    pub const BE: u16 = 1 << 9;
    /// Overrun error.
    pub const OE: u16 = 1 << 10;
    /// Every implemented bit.
    pub const MASK: u16 = 0x7FF;
}

/// Register widths of the storage-only registers (§3.3.4-3.3.6, 3.3.14).
mod width {
    pub const ILPR: u32 = 0xFF;
    pub const IBRD: u32 = 0xFFFF;
    pub const FBRD: u32 = 0x3F;
    pub const LCR_H: u32 = 0xFF;
    pub const DMACR: u32 = 0x7;
}

/// UARTPeriphID0-3 and UARTPCellID0-3 (§3.3.15-3.3.16), the values QEMU's
/// `pl011` reports: part 0x011, designer ARM (0x41), revision 1.
pub const ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// How many words the read image holds.
pub const IMAGE_WORDS: usize = 21;
/// The registers the read image holds, by byte offset (every other offset
/// of the page reads 0: the reserved ones, and UARTICR, write-only).
pub const IMAGE_OFFSETS: [u16; IMAGE_WORDS] = [
    offset::DR as u16,
    offset::RSR_ECR as u16,
    offset::FR as u16,
    offset::ILPR as u16,
    offset::IBRD as u16,
    offset::FBRD as u16,
    offset::LCR_H as u16,
    offset::CR as u16,
    offset::IFLS as u16,
    offset::IMSC as u16,
    offset::RIS as u16,
    offset::MIS as u16,
    offset::DMACR as u16,
    offset::PERIPH_ID0 as u16,
    offset::PERIPH_ID0 as u16 + 4,
    offset::PERIPH_ID0 as u16 + 8,
    offset::PERIPH_ID0 as u16 + 12,
    offset::PCELL_ID0 as u16,
    offset::PCELL_ID0 as u16 + 4,
    offset::PCELL_ID0 as u16 + 8,
    offset::PCELL_ID0 as u16 + 12,
];

/// The registers of the PL011 that hold state (UARTRSR bits `[3:0]`, the
/// rest whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Regs {
    rsr: u8,
    ilpr: u8,
    ibrd: u16,
    fbrd: u8,
    lcr_h: u8,
    cr: u16,
    ifls: u8,
    imsc: u16,
    ris: u16,
    dmacr: u8,
}

/// A value whose every change through [`Tracked::get_mut`] sets a mark
/// (reads go through `Deref`; there is no `DerefMut`, so no change can
/// miss the mark). The read image is brought up to date only after a
/// change: checking it on every access by comparing the registers with
/// what was sent cost a console byte some 60 instructions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Tracked<T> {
    value: T,
    changed: bool,
}

impl<T> Tracked<T> {
    /// A value, marked changed.
    fn new(value: T) -> Self {
        Tracked { value, changed: true }
    }

    /// The value, to change (sets the mark).
    fn get_mut(&mut self) -> &mut T {
        self.changed = true;
        &mut self.value
    }

    /// Whether the value may have changed since the last [`Tracked::seen`].
    fn changed(&self) -> bool {
        self.changed
    }

    /// Clear the mark.
    fn seen(&mut self) {
        self.changed = false;
    }
}

impl<T> core::ops::Deref for Tracked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Receive FIFO depth with FIFOs enabled. PL011 revisions before r1p5
/// (revision 3) have 16 entries; the ID registers report revision 1, and
/// Linux sizes its buffers from that.
pub const FIFO_DEPTH: usize = 16;

/// A register of the PL011, decoded from a word offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pl011Reg {
    /// UARTDR.
    Dr,
    /// UARTRSR / UARTECR.
    RsrEcr,
    /// UARTFR.
    Fr,
    /// UARTILPR.
    Ilpr,
    /// UARTIBRD.
    Ibrd,
    /// UARTFBRD.
    Fbrd,
    /// UARTLCR_H.
    LcrH,
    /// UARTCR.
    Cr,
    /// UARTIFLS.
    Ifls,
    /// UARTIMSC.
    Imsc,
    /// UARTRIS.
    Ris,
    /// UARTMIS.
    Mis,
    /// UARTICR.
    Icr,
    /// UARTDMACR.
    Dmacr,
    /// UARTPeriphID0-3 and UARTPCellID0-3: index 0-7 into [`ID`].
    Id(u8),
    /// A reserved or test offset: reads as zero, ignores writes. (32 bits,
    /// beyond any block; at 64 the register was moved with a `memcpy` call
    /// on every access. An offset past 4 GiB shows as `u32::MAX`.)
    Reserved(u32),
}

impl Pl011Reg {
    /// Decode the register at word-aligned `offset`.
    pub fn decode(offset: u64) -> Self {
        match offset {
            offset::DR => Pl011Reg::Dr,
            offset::RSR_ECR => Pl011Reg::RsrEcr,
            offset::FR => Pl011Reg::Fr,
            offset::ILPR => Pl011Reg::Ilpr,
            offset::IBRD => Pl011Reg::Ibrd,
            offset::FBRD => Pl011Reg::Fbrd,
            offset::LCR_H => Pl011Reg::LcrH,
            offset::CR => Pl011Reg::Cr,
            offset::IFLS => Pl011Reg::Ifls,
            offset::IMSC => Pl011Reg::Imsc,
            offset::RIS => Pl011Reg::Ris,
            offset::MIS => Pl011Reg::Mis,
            offset::ICR => Pl011Reg::Icr,
            offset::DMACR => Pl011Reg::Dmacr,
            o if (offset::PERIPH_ID0..offset::BLOCK_SIZE).contains(&o) && o % 4 == 0 => {
                // 0xFE0..0xFFC in steps of 4: index 0..7.
                Pl011Reg::Id(((o - offset::PERIPH_ID0) / 4) as u8)
            }
            other => Pl011Reg::Reserved(u32::try_from(other).unwrap_or(u32::MAX)),
        }
    }
}

/// The PL011's whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pl011 {
    /// The interrupt the UART drives (an SPI).
    intid: IntId,
    /// Receive FIFO, oldest first: data in bits `[7:0]`, error flags `[11:8]`.
    /// It may hold more than [`Self::capacity`] entries after the FIFOs were
    /// disabled with data in them: nothing is discarded, the excess drains
    /// through reads.
    rx: Vec<u16, FIFO_DEPTH>,
    /// An overrun happened: the next character to enter the FIFO carries
    /// UARTDR.OE.
    overrun_pending: bool,
    /// The registers, behind a mark that every change sets.
    regs: Tracked<Regs>,
    /// The interrupt level last sent to the vGIC server.
    line: bool,
    /// The number of the last change of the line sent (`SetLine::change`),
    /// 0 before the first.
    line_changes: u32,
    /// The receive room last reported to the monitor.
    reported_room: u8,
    /// The number of the last room report (`Action::ConsoleReady`), 0
    /// before the first.
    room_reports: u32,
    /// What the monitor holds of the read image.
    image: ReadImage<IMAGE_WORDS>,
}

impl Pl011 {
    /// A PL011 in its reset state (§3.2, Table 3-1 reset values) driving
    /// `intid`, with no read image. The monitor assumes no receive room
    /// until told.
    pub fn new(intid: IntId) -> Self {
        Self::with_image(intid, false)
    }

    /// [`Pl011::new`], with the read image allowed or not
    /// ([`ipc::VmConfig::console_image`]).
    pub fn with_image(intid: IntId, image: bool) -> Self {
        Pl011 {
            intid,
            rx: Vec::new(),
            overrun_pending: false,
            regs: Tracked::new(Regs {
                rsr: 0,
                ilpr: 0,
                ibrd: 0,
                fbrd: 0,
                lcr_h: 0,
                cr: cr::RESET,
                ifls: ifls::RESET,
                imsc: 0,
                ris: 0,
                dmacr: 0,
            }),
            line: false,
            line_changes: 0,
            reported_room: 0,
            room_reports: 0,
            image: ReadImage::new(image),
        }
    }

    /// What the monitor holds of the read image (for tests and checks).
    pub fn image(&self) -> &ReadImage<IMAGE_WORDS> {
        &self.image
    }

    /// The read image's words, by [`IMAGE_OFFSETS`]: what each load returns
    /// now (a load of UARTDR would also pop the FIFO when it holds data;
    /// the image is not mapped then).
    pub fn image_words(&self) -> [u32; IMAGE_WORDS] {
        IMAGE_OFFSETS.map(|offset| self.peek(Pl011Reg::decode(u64::from(offset))))
    }

    /// Keep the monitor's read image right: unmapped while a read has a
    /// side effect (data in the receive FIFO), else up to date and mapped.
    /// Inlined for what nearly every access finds: nothing changed since
    /// the image was mapped.
    #[inline(always)]
    fn sync_image(&mut self, effects: &mut Reply) -> Result<(), ReplyFull> {
        if self.image.mapped() {
            if !self.regs.changed() && self.rx.is_empty() {
                return Ok(());
            }
        } else if !self.image.allowed() {
            return Ok(());
        }
        self.update_image(effects)
    }

    #[inline(never)]
    fn update_image(&mut self, effects: &mut Reply) -> Result<(), ReplyFull> {
        if !self.rx.is_empty() {
            return self.image.unmap(effects);
        }
        self.image.offer(&IMAGE_OFFSETS, &self.image_words(), effects)?;
        // The words offered are the registers' now: what is not sent yet
        // leaves the image unmapped, and the next access offers again.
        self.regs.seen();
        Ok(())
    }

    /// A vCPU starts: the monitor hears the receive room and gets what fits
    /// of the read image.
    pub fn started(&mut self, effects: &mut Reply) -> Result<(), ReplyFull> {
        self.report_room(effects, true)?;
        self.sync_image(effects)
    }

    /// Entries the receive FIFO holds when full: 16 with FIFOs enabled, the
    /// single holding register otherwise.
    pub fn capacity(&self) -> usize {
        if self.regs.lcr_h & lcr_h::FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    fn loopback(&self) -> bool {
        self.regs.cr & cr::LBE != 0
    }

    /// Input bytes the console can take now (0 in loopback, where the
    /// receive line is disconnected).
    pub fn room(&self) -> u8 {
        if self.loopback() {
            return 0;
        }
        // At most FIFO_DEPTH (16): fits in u8.
        self.capacity().saturating_sub(self.rx.len()) as u8
    }

    /// The receive trigger level in entries (§3.3.9: 1/8, 1/4, 1/2, 3/4 or
    /// 7/8 full; reserved encodings are taken as 1/2). Without FIFOs, one
    /// character in the holding register triggers.
    fn rx_trigger(&self) -> usize {
        if self.regs.lcr_h & lcr_h::FEN == 0 {
            return 1;
        }
        let eighths = match (self.regs.ifls >> ifls::RXIFLSEL_SHIFT) & ifls::FIELD {
            0 => 1,
            1 => 2,
            2 => 4,
            3 => 6,
            4 => 7,
            _ => 4,
        };
        FIFO_DEPTH * eighths / 8
    }

    /// The modem status inputs as UARTFR shows them.
    fn modem_status(&self) -> u16 {
        if !self.loopback() {
            return 0;
        }
        let mut status = 0;
        for (out, input) in [(cr::RTS, fr::CTS), (cr::DTR, fr::DSR), (cr::OUT1, fr::DCD), (cr::OUT2, fr::RI)] {
            if self.regs.cr & out != 0 {
                status |= input;
            }
        }
        status
    }

    /// UARTFR.
    fn flags(&self) -> u16 {
        let mut flags = fr::TXFE | self.modem_status();
        if self.rx.is_empty() {
            flags |= fr::RXFE;
        }
        if self.rx.len() >= self.capacity() {
            flags |= fr::RXFF;
        }
        flags
    }

    /// The combined interrupt output, UARTINTR.
    pub fn irq_level(&self) -> bool {
        self.regs.ris & self.regs.imsc & int::MASK != 0
    }

    /// One character arrives at the receiver. Returns false when it was lost
    /// to an overrun (which is flagged).
    fn receive(&mut self, entry: u16) -> bool {
        let before = self.rx.len();
        let flagged = if self.overrun_pending { entry | dr::OE } else { entry };
        if before >= self.capacity() || self.rx.push(flagged).is_err() {
            self.overrun();
            return false;
        }
        self.overrun_pending = false;
        let trigger = self.rx_trigger();
        if before < trigger && before + 1 >= trigger {
            self.regs.get_mut().ris |= int::RX;
        }
        if entry & dr::BE != 0 {
            self.regs.get_mut().ris |= int::BE;
        }
        true
    }

    /// A character was lost because it had nowhere to go (§3.3.2 OE).
    fn overrun(&mut self) {
        self.regs.get_mut().rsr |= rsr::OE;
        self.regs.get_mut().ris |= int::OE;
        self.overrun_pending = true;
    }

    /// The receive line went quiet with data in the FIFO: the receive
    /// timeout fires.
    fn line_idle(&mut self) {
        if !self.rx.is_empty() {
            self.regs.get_mut().ris |= int::RT;
        }
    }

    /// Bytes typed on the VM's console. Bytes beyond [`Self::room`] are
    /// overruns (the monitor should not have sent them).
    pub fn console_input(&mut self, bytes: &[u8], effects: &mut Reply) -> Result<(), ReplyFull> {
        let mut lost = 0usize;
        for &byte in bytes {
            // In loopback the receive line is disconnected (room 0): a byte
            // sent anyway is lost, and flagged like any other overrun.
            let received = if self.loopback() {
                self.overrun();
                false
            } else {
                self.receive(u16::from(byte))
            };
            if !received {
                lost += 1;
            }
        }
        if lost > 0 {
            log::warn!("pl011: {lost} console input bytes beyond the reported room; flagged as overrun");
        }
        if lost < bytes.len() {
            self.line_idle();
        }
        self.sync(effects)
    }

    /// Report what changed to the outside: the interrupt line to the vGIC
    /// server, the receive room to the monitor.
    fn sync(&mut self, effects: &mut Reply) -> Result<(), ReplyFull> {
        let level = self.irq_level();
        if level != self.line {
            // Any CPU may touch the UART: the changes are numbered.
            let change = self.line_changes.wrapping_add(1).max(1);
            effects.push(Action::Send(Message::Vgic(VgicRequest::SetLine {
                intid: self.intid,
                level,
                target: None,
                hw: None,
                change,
                status: None,
            })))?;
            self.line = level;
            self.line_changes = change;
        }
        self.report_room(effects, false)?;
        self.sync_image(effects)
    }

    /// Tell the monitor the receive room if it changed since the last report,
    /// or always with `force`.
    pub fn report_room(&mut self, effects: &mut Reply, force: bool) -> Result<(), ReplyFull> {
        let room = self.room();
        if force || room != self.reported_room {
            let report = self.room_reports.wrapping_add(1);
            effects.push(Action::ConsoleReady { room, report })?;
            self.reported_room = room;
            self.room_reports = report;
        }
        Ok(())
    }

    /// Pop the oldest received character (UARTDR read).
    fn read_data(&mut self) -> u16 {
        if self.rx.is_empty() {
            debug!("pl011: UARTDR read with the receive FIFO empty");
            return 0;
        }
        let entry = self.rx.remove(0);
        self.regs.get_mut().rsr |= ((entry & dr::ERRORS) >> dr::ERROR_SHIFT) as u8 & rsr::MASK;
        if self.rx.len() < self.rx_trigger() {
            self.regs.get_mut().ris &= !int::RX;
        }
        if self.rx.is_empty() {
            self.regs.get_mut().ris &= !int::RT;
        }
        entry
    }

    /// Transmit one character (UARTDR write).
    fn transmit(&mut self, byte: u8, effects: &mut Reply) -> Result<(), ReplyFull> {
        if self.loopback() {
            self.receive(u16::from(byte));
            self.line_idle();
        } else {
            effects.push_console(&[byte])?;
        }
        // Set only when clear: every change of the registers makes the
        // read image be brought up to date, and each byte sets it again.
        if self.regs.ris & int::TX == 0 {
            self.regs.get_mut().ris |= int::TX;
        }
        Ok(())
    }

    fn write_lcr_h(&mut self, value: u8) {
        let old = self.regs.lcr_h;
        self.regs.get_mut().lcr_h = value;
        if (old ^ value) & lcr_h::FEN != 0 {
            debug!("pl011: FIFOs {}", if value & lcr_h::FEN != 0 { "enabled" } else { "disabled" });
        }
        if old & lcr_h::BRK == 0 && value & lcr_h::BRK != 0 && self.loopback() {
            // A break looped back is received as a NUL with the break flag.
            self.receive(dr::BE);
            self.line_idle();
        }
    }

    fn write_cr(&mut self, value: u16) {
        let before = self.modem_status();
        self.regs.get_mut().cr = value & cr::MASK;
        let changed = before ^ self.modem_status();
        for (input, interrupt) in [(fr::CTS, int::CTS), (fr::DSR, int::DSR), (fr::DCD, int::DCD), (fr::RI, int::RI)] {
            if changed & input != 0 {
                self.regs.get_mut().ris |= interrupt;
            }
        }
    }

    /// The 32-bit value of a register, with the side effects of reading it.
    fn read_reg(&mut self, reg: Pl011Reg) -> u32 {
        match reg {
            Pl011Reg::Dr => u32::from(self.read_data()),
            Pl011Reg::Icr => {
                debug!("pl011: read of write-only UARTICR");
                0
            }
            Pl011Reg::Reserved(o) => {
                debug!("pl011: read of reserved offset {o:#x}");
                0
            }
            other => self.peek(other),
        }
    }

    /// What a read of a register returns, without its side effects (only a
    /// read of UARTDR has one: it pops the FIFO).
    fn peek(&self, reg: Pl011Reg) -> u32 {
        match reg {
            Pl011Reg::Dr => self.rx.first().map_or(0, |&entry| u32::from(entry)),
            Pl011Reg::RsrEcr => u32::from(self.regs.rsr & rsr::MASK),
            Pl011Reg::Fr => u32::from(self.flags()),
            Pl011Reg::Ilpr => u32::from(self.regs.ilpr),
            Pl011Reg::Ibrd => u32::from(self.regs.ibrd),
            Pl011Reg::Fbrd => u32::from(self.regs.fbrd),
            Pl011Reg::LcrH => u32::from(self.regs.lcr_h),
            Pl011Reg::Cr => u32::from(self.regs.cr),
            Pl011Reg::Ifls => u32::from(self.regs.ifls),
            Pl011Reg::Imsc => u32::from(self.regs.imsc),
            Pl011Reg::Ris => u32::from(self.regs.ris & int::MASK),
            Pl011Reg::Mis => u32::from(self.regs.ris & self.regs.imsc & int::MASK),
            Pl011Reg::Dmacr => u32::from(self.regs.dmacr),
            Pl011Reg::Id(i) => ID.get(usize::from(i)).copied().map_or(0, u32::from),
            Pl011Reg::Icr | Pl011Reg::Reserved(_) => 0,
        }
    }

    /// Write the bytes of a register selected by `lanes` (a bit mask) with
    /// `data` (already shifted into place).
    fn write_reg(&mut self, reg: Pl011Reg, data: u32, lanes: u32, effects: &mut Reply) -> Result<(), ReplyFull> {
        let merge = |old: u32, width: u32| ((old & !lanes) | (data & lanes)) & width;
        match reg {
            Pl011Reg::Dr => {
                if lanes & u32::from(dr::DATA) != 0 {
                    self.transmit((data & u32::from(dr::DATA)) as u8, effects)?;
                } else {
                    debug!("pl011: UARTDR write missing the data byte ignored");
                }
            }
            // Any write clears the error flags (§3.3.2).
            Pl011Reg::RsrEcr => self.regs.get_mut().rsr = 0,
            Pl011Reg::Ilpr => self.regs.get_mut().ilpr = merge(u32::from(self.regs.ilpr), width::ILPR) as u8,
            Pl011Reg::Ibrd => self.regs.get_mut().ibrd = merge(u32::from(self.regs.ibrd), width::IBRD) as u16,
            Pl011Reg::Fbrd => self.regs.get_mut().fbrd = merge(u32::from(self.regs.fbrd), width::FBRD) as u8,
            Pl011Reg::LcrH => self.write_lcr_h(merge(u32::from(self.regs.lcr_h), width::LCR_H) as u8),
            Pl011Reg::Cr => self.write_cr(merge(u32::from(self.regs.cr), u32::from(cr::MASK)) as u16),
            Pl011Reg::Ifls => self.regs.get_mut().ifls = merge(u32::from(self.regs.ifls), u32::from(ifls::MASK)) as u8,
            Pl011Reg::Imsc => self.regs.get_mut().imsc = merge(u32::from(self.regs.imsc), u32::from(int::MASK)) as u16,
            Pl011Reg::Icr => self.regs.get_mut().ris &= !((data & lanes) as u16 & int::MASK),
            Pl011Reg::Dmacr => self.regs.get_mut().dmacr = merge(u32::from(self.regs.dmacr), width::DMACR) as u8,
            Pl011Reg::Fr | Pl011Reg::Ris | Pl011Reg::Mis | Pl011Reg::Id(_) => {
                debug!("pl011: write to read-only {reg:?} ignored");
            }
            Pl011Reg::Reserved(o) => debug!("pl011: write to reserved offset {o:#x} ignored"),
        }
        Ok(())
    }
}

/// Where an access of `size` at `offset` lands: the register, the bit
/// position of its first byte, and the mask of the bits it covers.
fn locate(offset: u64, size: AccessSize) -> Result<(Pl011Reg, u32, u32), AccessError> {
    if size == AccessSize::Double {
        return Err(AccessError::Size(size));
    }
    if offset % u64::from(size.bytes()) != 0 {
        return Err(AccessError::Unaligned { offset, size });
    }
    let shift = ((offset % 4) * 8) as u32;
    // Byte, halfword or word: the mask fits in 32 bits.
    let lanes = (size.mask() as u32) << shift;
    Ok((Pl011Reg::decode(offset - offset % 4), shift, lanes))
}

impl MmioDevice for Pl011 {
    fn read(&mut self, offset: u64, size: AccessSize, effects: &mut Reply) -> Result<u64, AccessError> {
        let (reg, shift, lanes) = locate(offset, size)?;
        let word = self.read_reg(reg);
        self.sync(effects)?;
        Ok(u64::from((word & lanes) >> shift))
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64, effects: &mut Reply) -> Result<(), AccessError> {
        let (reg, shift, lanes) = locate(offset, size)?;
        // Byte, halfword or word: the masked value fits in 32 bits.
        let data = ((value & size.mask()) as u32) << shift;
        self.write_reg(reg, data, lanes, effects)?;
        Ok(self.sync(effects)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTID: IntId = IntId(33);

    /// A PL011 whose receive room the monitor already knows (as after the
    /// boot vCPU's `Start`).
    fn uart() -> Pl011 {
        let mut u = Pl011::new(INTID);
        u.report_room(&mut Reply::none(), true).expect("room");
        u
    }

    fn rd(u: &mut Pl011, off: u64) -> (u32, Reply) {
        rd_sized(u, off, AccessSize::Word)
    }

    fn rd_sized(u: &mut Pl011, off: u64, size: AccessSize) -> (u32, Reply) {
        let mut effects = Reply::none();
        let v = u.read(off, size, &mut effects).expect("read accepted");
        (v as u32, effects)
    }

    fn wr(u: &mut Pl011, off: u64, value: u32) -> Reply {
        wr_sized(u, off, AccessSize::Word, value)
    }

    fn wr_sized(u: &mut Pl011, off: u64, size: AccessSize, value: u32) -> Reply {
        let mut effects = Reply::none();
        u.write(off, size, u64::from(value), &mut effects).expect("write accepted");
        effects
    }

    fn input(u: &mut Pl011, bytes: &[u8]) -> Reply {
        let mut effects = Reply::none();
        u.console_input(bytes, &mut effects).expect("input accepted");
        effects
    }

    fn set_lines(r: &Reply) -> std::vec::Vec<bool> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Message::Vgic(VgicRequest::SetLine { intid, level, target: None, hw: None, .. }))
                    if intid == INTID =>
                {
                    Some(level)
                }
                _ => None,
            })
            .collect()
    }

    fn rooms(r: &Reply) -> std::vec::Vec<u8> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                Action::ConsoleReady { room, .. } => Some(room),
                _ => None,
            })
            .collect()
    }

    fn console(r: &Reply) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::new();
        for a in &r.actions {
            if let Action::ConsoleWrite { bytes } = a {
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// A UART set up the way Linux's amba-pl011 leaves it: FIFOs on, RX and
    /// RX-timeout interrupts unmasked, UART enabled.
    fn linux_uart() -> Pl011 {
        let mut u = uart();
        wr(&mut u, offset::LCR_H, u32::from(lcr_h::FEN) | 0x60);
        wr(&mut u, offset::IMSC, u32::from(int::RX | int::RT));
        wr(&mut u, offset::CR, u32::from(cr::UARTEN | cr::TXE | cr::RXE));
        u
    }

    #[test]
    fn reset_values() {
        let mut u = uart();
        assert_eq!(rd(&mut u, offset::FR).0, u32::from(fr::TXFE | fr::RXFE));
        assert_eq!(rd(&mut u, offset::CR).0, 0x300);
        assert_eq!(rd(&mut u, offset::IFLS).0, 0x12);
        for off in [offset::DR, offset::RSR_ECR, offset::ILPR, offset::IBRD, offset::FBRD, offset::LCR_H] {
            assert_eq!(rd(&mut u, off).0, 0, "offset {off:#x}");
        }
        for off in [offset::IMSC, offset::RIS, offset::MIS, offset::DMACR] {
            assert_eq!(rd(&mut u, off).0, 0, "offset {off:#x}");
        }
        assert!(!u.irq_level());
        assert_eq!(u.room(), 1);
    }

    #[test]
    fn id_registers_as_qemu_reports() {
        let mut u = uart();
        let ids: std::vec::Vec<u32> = (0..8).map(|i| rd(&mut u, offset::PERIPH_ID0 + 4 * i).0).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // Writes are ignored.
        wr(&mut u, offset::PERIPH_ID0, 0xff);
        assert_eq!(rd(&mut u, offset::PERIPH_ID0).0, 0x11);
        // Byte reads of the upper bytes of an ID word are zero.
        assert_eq!(rd_sized(&mut u, offset::PCELL_ID0 + 1, AccessSize::Byte).0, 0);
    }

    #[test]
    fn transmit_is_instant_and_raises_tx() {
        let mut u = uart();
        wr(&mut u, offset::IMSC, u32::from(int::TX));
        let r = wr(&mut u, offset::DR, u32::from(b'A'));
        assert_eq!(console(&r), b"A");
        assert_eq!(set_lines(&r), [true]);
        let fr = rd(&mut u, offset::FR).0 as u16;
        assert_eq!(fr & (fr::TXFE | fr::TXFF | fr::BUSY), fr::TXFE);
        assert_eq!(rd(&mut u, offset::RIS).0, u32::from(int::TX));
        assert_eq!(rd(&mut u, offset::MIS).0, u32::from(int::TX));
        // A second write keeps the line high: no second SetLine.
        let r = wr(&mut u, offset::DR, u32::from(b'B'));
        assert_eq!(console(&r), b"B");
        assert!(set_lines(&r).is_empty());
        // ICR clears it and lowers the line once.
        let r = wr(&mut u, offset::ICR, u32::from(int::TX));
        assert_eq!(set_lines(&r), [false]);
        assert_eq!(rd(&mut u, offset::RIS).0, 0);
        let r = wr(&mut u, offset::ICR, u32::from(int::TX));
        assert!(set_lines(&r).is_empty());
    }

    #[test]
    fn dr_write_sends_only_the_data_byte() {
        let mut u = uart();
        // Error bits in a word write are not data.
        let r = wr(&mut u, offset::DR, 0xF41);
        assert_eq!(console(&r), b"A");
        // Byte write (earlycon) and halfword write (Linux) both transmit.
        assert_eq!(console(&wr_sized(&mut u, offset::DR, AccessSize::Byte, u32::from(b'x'))), b"x");
        assert_eq!(console(&wr_sized(&mut u, offset::DR, AccessSize::Half, u32::from(b'y'))), b"y");
        // A byte write to the upper byte of DR carries no character.
        assert!(console(&wr_sized(&mut u, offset::DR + 1, AccessSize::Byte, 0x41)).is_empty());
    }

    #[test]
    fn imsc_change_moves_the_line_exactly_once() {
        let mut u = uart();
        wr(&mut u, offset::DR, u32::from(b'x'));
        assert!(!u.irq_level());
        let r = wr(&mut u, offset::IMSC, u32::from(int::TX));
        assert_eq!(set_lines(&r), [true]);
        let r = wr(&mut u, offset::IMSC, u32::from(int::TX | int::RX));
        assert!(set_lines(&r).is_empty());
        let r = wr(&mut u, offset::IMSC, 0);
        assert_eq!(set_lines(&r), [false]);
        // MIS follows the mask, RIS does not.
        assert_eq!(rd(&mut u, offset::MIS).0, 0);
        assert_eq!(rd(&mut u, offset::RIS).0, u32::from(int::TX));
    }

    #[test]
    fn rx_fifo_keeps_order_and_flags() {
        let mut u = linux_uart();
        assert_eq!(u.room(), 16);
        let r = input(&mut u, b"hello");
        assert_eq!(rooms(&r), [11]);
        let fr = rd(&mut u, offset::FR).0 as u16;
        assert_eq!(fr & (fr::RXFE | fr::RXFF), 0);
        let mut got = std::vec::Vec::new();
        while rd(&mut u, offset::FR).0 as u16 & fr::RXFE == 0 {
            got.push(rd(&mut u, offset::DR).0 as u8);
        }
        assert_eq!(got, b"hello");
        assert_eq!(u.room(), 16);
        // Reading the empty FIFO returns 0 and changes nothing.
        assert_eq!(rd(&mut u, offset::DR).0, 0);
        assert_eq!(u.room(), 16);
    }

    #[test]
    fn rx_full_flag_and_room_reports() {
        let mut u = linux_uart();
        let r = input(&mut u, &[b'a'; 16]);
        assert_eq!(rooms(&r), [0]);
        assert_ne!(rd(&mut u, offset::FR).0 as u16 & fr::RXFF, 0);
        let (v, r) = rd(&mut u, offset::DR);
        assert_eq!(v, u32::from(b'a'));
        assert_eq!(rooms(&r), [1]);
        assert_eq!(rd(&mut u, offset::FR).0 as u16 & fr::RXFF, 0);
        // Reading a flag register reports no room change.
        assert!(rooms(&rd(&mut u, offset::FR).1).is_empty());
    }

    #[test]
    fn line_changes_are_numbered_in_order() {
        let changes = |r: &Reply| -> std::vec::Vec<(bool, u32)> {
            r.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Send(Message::Vgic(VgicRequest::SetLine { level, change, .. })) => Some((level, change)),
                    _ => None,
                })
                .collect()
        };
        let mut u = linux_uart();
        assert_eq!(changes(&input(&mut u, b"ab")), [(true, 1)]);
        rd(&mut u, offset::DR);
        assert_eq!(changes(&rd(&mut u, offset::DR).1), [(false, 2)]);
        // Numbers wrap, skipping 0 (unnumbered).
        u.line_changes = u32::MAX;
        assert_eq!(changes(&input(&mut u, b"c")), [(true, 1)]);
    }

    #[test]
    fn room_reports_are_numbered_in_order() {
        let reports = |r: &Reply| -> std::vec::Vec<(u8, u32)> {
            r.actions
                .iter()
                .filter_map(|a| match a {
                    Action::ConsoleReady { room, report } => Some((room, report)),
                    _ => None,
                })
                .collect()
        };
        let mut u = linux_uart();
        // Setting the UART up changed the room (1 to 16 with FEN): reported.
        let n = u.room_reports;
        assert!(n >= 1);
        assert_eq!(reports(&input(&mut u, &[b'a'; 16])), [(0, n + 1)]);
        assert_eq!(reports(&rd(&mut u, offset::DR).1), [(1, n + 2)]);
        // A forced report (a vCPU's Start) is numbered too.
        let mut r = Reply::none();
        u.report_room(&mut r, true).expect("room in the reply");
        assert_eq!(reports(&r), [(1, n + 3)]);
        // Numbers wrap instead of overflowing.
        u.room_reports = u32::MAX;
        assert_eq!(reports(&rd(&mut u, offset::DR).1), [(2, 0)]);
    }

    #[test]
    fn rx_interrupt_follows_trigger_level() {
        // Linux's IFLS: RX at half full (8 of 16).
        let mut u = linux_uart();
        wr(&mut u, offset::IMSC, u32::from(int::RX));
        let r = input(&mut u, &[1; 7]);
        assert!(set_lines(&r).is_empty(), "7 < trigger 8");
        assert_eq!(rd(&mut u, offset::RIS).0 as u16 & int::RX, 0);
        let r = input(&mut u, &[2]);
        assert_eq!(set_lines(&r), [true]);
        // Reading one takes the level below the trigger: RX clears.
        let (_, r) = rd(&mut u, offset::DR);
        assert_eq!(set_lines(&r), [false]);
        assert_eq!(rd(&mut u, offset::RIS).0 as u16 & int::RX, 0);
        // Back to the level: it rises again.
        let r = input(&mut u, &[3]);
        assert_eq!(set_lines(&r), [true]);
        // ICR clears it although the level stays at the trigger.
        let r = wr(&mut u, offset::ICR, u32::from(int::RX));
        assert_eq!(set_lines(&r), [false]);
        // Other trigger levels: 1/8 of 16 = 2.
        let mut u = linux_uart();
        wr(&mut u, offset::IFLS, 0);
        input(&mut u, &[1]);
        assert_eq!(rd(&mut u, offset::RIS).0 as u16 & int::RX, 0);
        input(&mut u, &[1]);
        assert_ne!(rd(&mut u, offset::RIS).0 as u16 & int::RX, 0);
    }

    #[test]
    fn rx_timeout_until_fifo_empty() {
        let mut u = linux_uart();
        let r = input(&mut u, b"ab");
        assert_eq!(set_lines(&r), [true]);
        assert_eq!(rd(&mut u, offset::MIS).0, u32::from(int::RT));
        let (_, r) = rd(&mut u, offset::DR);
        assert!(set_lines(&r).is_empty(), "still one character in the FIFO");
        let (_, r) = rd(&mut u, offset::DR);
        assert_eq!(set_lines(&r), [false]);
        assert_eq!(rd(&mut u, offset::RIS).0, 0);
    }

    #[test]
    fn without_fifos_one_character_holds_and_triggers() {
        let mut u = uart();
        wr(&mut u, offset::IMSC, u32::from(int::RX));
        assert_eq!(u.room(), 1);
        let r = input(&mut u, b"x");
        assert_eq!(set_lines(&r), [true]);
        assert_eq!(rooms(&r), [0]);
        assert_ne!(rd(&mut u, offset::FR).0 as u16 & fr::RXFF, 0);
        let (v, r) = rd(&mut u, offset::DR);
        assert_eq!(v, u32::from(b'x'));
        assert_eq!(set_lines(&r), [false]);
        assert_eq!(rooms(&r), [1]);
    }

    #[test]
    fn overrun_is_flagged_never_silent() {
        let mut u = linux_uart();
        wr(&mut u, offset::IMSC, u32::from(int::OE));
        input(&mut u, &[b'a'; 16]);
        let r = input(&mut u, b"XY");
        assert_eq!(set_lines(&r), [true]);
        assert_eq!(rd(&mut u, offset::RSR_ECR).0, u32::from(rsr::OE));
        assert_ne!(rd(&mut u, offset::RIS).0 as u16 & int::OE, 0);
        // The 16 characters are intact.
        for _ in 0..16 {
            assert_eq!(rd(&mut u, offset::DR).0, u32::from(b'a'));
        }
        // The next character to get in carries DR.OE, the one after does not.
        input(&mut u, b"bc");
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(dr::OE) | u32::from(b'b'));
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(b'c'));
        // ECR clears RSR; ICR clears the interrupt.
        wr(&mut u, offset::RSR_ECR, 0);
        assert_eq!(rd(&mut u, offset::RSR_ECR).0, 0);
        let r = wr(&mut u, offset::ICR, u32::from(int::OE));
        assert_eq!(set_lines(&r), [false]);
    }

    #[test]
    fn disabling_fifos_keeps_received_data() {
        let mut u = linux_uart();
        input(&mut u, b"abc");
        let r = wr(&mut u, offset::LCR_H, 0x60);
        assert_eq!(rooms(&r), [0]);
        assert_ne!(rd(&mut u, offset::FR).0 as u16 & fr::RXFF, 0);
        // More input now overruns; the three characters drain in order.
        input(&mut u, b"d");
        assert_eq!(rd(&mut u, offset::RSR_ECR).0, u32::from(rsr::OE));
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(b'a'));
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(b'b'));
        let (v, r) = rd(&mut u, offset::DR);
        assert_eq!(v, u32::from(b'c'));
        assert_eq!(rooms(&r), [1]);
    }

    #[test]
    fn loopback_routes_tx_to_rx_and_modem_lines() {
        let mut u = linux_uart();
        wr(&mut u, offset::IMSC, u32::from(int::CTS));
        let r = wr(&mut u, offset::CR, u32::from(cr::UARTEN | cr::TXE | cr::RXE | cr::LBE | cr::RTS));
        assert_eq!(rooms(&r), [0], "console input disconnected in loopback");
        assert_eq!(set_lines(&r), [true], "CTS changed");
        assert_eq!(rd(&mut u, offset::FR).0 as u16 & (fr::CTS | fr::DSR), fr::CTS);
        let r = wr(&mut u, offset::DR, u32::from(b'L'));
        assert!(console(&r).is_empty());
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(b'L'));
        // A break is looped back as a break character.
        wr(&mut u, offset::LCR_H, u32::from(lcr_h::FEN | lcr_h::BRK));
        assert_eq!(rd(&mut u, offset::DR).0, u32::from(dr::BE));
        assert_ne!(rd(&mut u, offset::RSR_ECR).0 & 0x4, 0);
        // Console input during loopback is an overrun, not a silent drop.
        input(&mut u, b"z");
        assert_ne!(rd(&mut u, offset::RSR_ECR).0 as u8 & rsr::OE, 0);
        // Leaving loopback: the room comes back, the modem lines read 0.
        let r = wr(&mut u, offset::CR, u32::from(cr::UARTEN | cr::TXE | cr::RXE));
        assert_eq!(rooms(&r), [16]);
        assert_eq!(rd(&mut u, offset::FR).0 as u16 & (fr::CTS | fr::DSR | fr::DCD | fr::RI), 0);
    }

    #[test]
    fn byte_write_is_not_a_word_write() {
        let mut u = uart();
        wr(&mut u, offset::CR, 0x0301);
        // A byte write to the low byte of CR keeps TXE/RXE in the high byte.
        wr_sized(&mut u, offset::CR, AccessSize::Byte, 0x80);
        assert_eq!(rd(&mut u, offset::CR).0, 0x0380);
        // A byte write to the high byte keeps the low byte.
        wr_sized(&mut u, offset::CR + 1, AccessSize::Byte, 0x01);
        assert_eq!(rd(&mut u, offset::CR).0, 0x0180);
        // Halfword and byte reads see the same bytes.
        assert_eq!(rd_sized(&mut u, offset::CR + 1, AccessSize::Byte).0, 0x01);
        assert_eq!(rd_sized(&mut u, offset::CR, AccessSize::Half).0, 0x0180);
        // IBRD is 16 bits wide, FBRD 6.
        wr(&mut u, offset::IBRD, 0xFFFF_FFFF);
        wr(&mut u, offset::FBRD, 0xFFFF_FFFF);
        assert_eq!(rd(&mut u, offset::IBRD).0, 0xFFFF);
        assert_eq!(rd(&mut u, offset::FBRD).0, 0x3F);
        // A byte ICR write at offset 1 clears only bits [15:8].
        u.regs.get_mut().ris = int::OE | int::TX;
        wr_sized(&mut u, offset::ICR + 1, AccessSize::Byte, 0xFF);
        assert_eq!(rd(&mut u, offset::RIS).0, u32::from(int::TX));
    }

    #[test]
    fn reserved_offsets_raz_wi_and_bad_accesses_refused() {
        let mut u = uart();
        for off in [0x008, 0x01C, 0x04C, 0x080, 0xFDC, 0x1000] {
            let before = u.clone();
            wr(&mut u, off, 0xFFFF_FFFF);
            assert_eq!(u, before, "write to {off:#x} changed state");
            assert_eq!(rd(&mut u, off).0, 0);
        }
        // FR is read-only.
        wr(&mut u, offset::FR, 0);
        assert_eq!(rd(&mut u, offset::FR).0, u32::from(fr::TXFE | fr::RXFE));
        let mut effects = Reply::none();
        assert_eq!(u.read(offset::CR, AccessSize::Double, &mut effects), Err(AccessError::Size(AccessSize::Double)));
        assert_eq!(
            u.write(offset::CR + 2, AccessSize::Word, 0, &mut effects),
            Err(AccessError::Unaligned { offset: offset::CR + 2, size: AccessSize::Word })
        );
        assert_eq!(
            u.read(offset::CR + 1, AccessSize::Half, &mut effects),
            Err(AccessError::Unaligned { offset: offset::CR + 1, size: AccessSize::Half })
        );
        assert!(effects.actions.is_empty());
    }

    #[test]
    fn storage_registers_keep_their_implemented_bits() {
        let mut u = uart();
        for (off, width) in [
            (offset::ILPR, 0xFF),
            (offset::IBRD, 0xFFFF),
            (offset::FBRD, 0x3F),
            (offset::LCR_H, 0xFF),
            (offset::CR, 0xFF87),
            (offset::IFLS, 0x3F),
            (offset::IMSC, 0x7FF),
            (offset::DMACR, 0x7),
        ] {
            wr(&mut u, off, 0xFFFF_FFFF);
            assert_eq!(rd(&mut u, off).0, width, "offset {off:#x}");
            wr(&mut u, off, 0);
            assert_eq!(rd(&mut u, off).0, 0, "offset {off:#x}");
        }
    }

    #[test]
    fn register_decode() {
        assert_eq!(Pl011Reg::decode(0x000), Pl011Reg::Dr);
        assert_eq!(Pl011Reg::decode(0x02C), Pl011Reg::LcrH);
        assert_eq!(Pl011Reg::decode(0x048), Pl011Reg::Dmacr);
        assert_eq!(Pl011Reg::decode(0xFE0), Pl011Reg::Id(0));
        assert_eq!(Pl011Reg::decode(0xFFC), Pl011Reg::Id(7));
        assert_eq!(Pl011Reg::decode(0x010), Pl011Reg::Reserved(0x010));
        assert_eq!(Pl011Reg::decode(0x2000), Pl011Reg::Reserved(0x2000));
    }

    use crate::image::Monitor;

    /// While the monitor's image is mapped, every word of the page reads as
    /// the trap path reads it (on a copy, which the read must leave
    /// unchanged).
    fn check_image(monitor: &Monitor, u: &Pl011, step: &str) {
        if !monitor.mapped.0 {
            return;
        }
        assert!(u.rx.is_empty(), "{step}: mapped with data in the FIFO");
        for word in (0..offset::BLOCK_SIZE).step_by(4) {
            let mut copy = u.clone();
            let (value, effects) = rd(&mut copy, word);
            assert_eq!(value, monitor.word(word as u16), "{step}: word {word:#x}");
            assert!(effects.actions.is_empty(), "{step}: a read had effects: {effects:?}");
            assert_eq!(&copy, u, "{step}: a read changed the UART");
        }
    }

    #[test]
    fn the_read_image_shows_what_reads_return_after_every_access() {
        let mut u = Pl011::with_image(INTID, true);
        let mut monitor = Monitor::default();
        let mut start = Reply::none();
        u.started(&mut start).expect("room");
        monitor.apply(&start);
        // Each register written with a few values, input received and read
        // back, loopback turned on and off, interrupts cleared.
        let mut steps: std::vec::Vec<(&str, u64, Option<u32>)> = std::vec::Vec::new();
        for (name, off) in [
            ("ILPR", offset::ILPR),
            ("IBRD", offset::IBRD),
            ("FBRD", offset::FBRD),
            ("IFLS", offset::IFLS),
            ("DMACR", offset::DMACR),
            ("IMSC", offset::IMSC),
        ] {
            steps.push((name, off, Some(0x5a5a)));
            steps.push((name, off, Some(0xFFFF_FFFF)));
        }
        steps.extend([
            ("LCR_H FEN", offset::LCR_H, Some(u32::from(lcr_h::FEN) | 0x60)),
            ("CR on", offset::CR, Some(u32::from(cr::UARTEN | cr::TXE | cr::RXE | cr::RTS))),
            ("DR", offset::DR, Some(u32::from(b'x'))),
            ("input", 0, None),
            ("DR read", offset::DR, None),
            ("DR read", offset::DR, None),
            ("RSR clear", offset::RSR_ECR, Some(0)),
            ("ICR", offset::ICR, Some(0x7ff)),
            ("CR loopback", offset::CR, Some(u32::from(cr::UARTEN | cr::TXE | cr::RXE | cr::LBE | cr::DTR))),
            ("DR looped", offset::DR, Some(u32::from(b'y'))),
            ("DR read", offset::DR, None),
            ("CR off", offset::CR, Some(0)),
            ("LCR_H no FIFO", offset::LCR_H, Some(0)),
        ]);
        for (step, off, write) in steps {
            let effects = match (step, write) {
                ("input", _) => input(&mut u, b"ab"),
                (_, Some(value)) => wr(&mut u, off, value),
                (_, None) => rd(&mut u, off).1,
            };
            monitor.apply(&effects);
            check_image(&monitor, &u, step);
        }
        assert!(monitor.mapped.0, "the image ends mapped: {:?}", u.image());
    }
}
