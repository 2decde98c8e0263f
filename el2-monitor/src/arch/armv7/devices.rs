//! The physical devices the monitor owns: the GICv2 distributor, CPU
//! interface and virtual interface control (GICH), and the PL011 UART.
//! Addresses come from the platform's device tree; register layouts are
//! defined here once (GICv2 architecture specification IHI 0048B, sections
//! 4.3, 4.4 and 5.3; PL011 TRM DDI 0183).

use ipc::msg::LrStatus;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    /// GICv2 distributor (the part the monitor uses).
    pub GicdRegs {
        (0x000 => pub ctlr: ReadWrite<u32>),
        (0x004 => pub typer: ReadOnly<u32>),
        (0x008 => _r0),
        (0x100 => pub isenabler: [ReadWrite<u32>; 32]),
        (0x180 => pub icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _r1),
        (0x400 => pub ipriorityr: [ReadWrite<u8>; 1024]),
        (0x800 => pub itargetsr: [ReadWrite<u8>; 1024]),
        (0xc00 => _r2),
        (0xf00 => pub sgir: WriteOnly<u32>),
        (0xf04 => @END),
    }
}

register_structs! {
    /// GICv2 CPU interface.
    pub GiccRegs {
        (0x0000 => pub ctlr: ReadWrite<u32>),
        (0x0004 => pub pmr: ReadWrite<u32>),
        (0x0008 => pub bpr: ReadWrite<u32>),
        (0x000c => pub iar: ReadOnly<u32>),
        (0x0010 => pub eoir: WriteOnly<u32>),
        (0x0014 => _r0),
        (0x0018 => pub hppir: ReadOnly<u32>),
        (0x001c => _r1),
        (0x1000 => pub dir: WriteOnly<u32>),
        (0x1004 => @END),
    }
}

register_structs! {
    /// GICv2 virtual interface control.
    pub GichRegs {
        (0x000 => pub hcr: ReadWrite<u32>),
        (0x004 => pub vtr: ReadOnly<u32>),
        (0x008 => pub vmcr: ReadWrite<u32>),
        (0x00c => _r0),
        (0x010 => pub misr: ReadOnly<u32>),
        (0x014 => _r1),
        (0x020 => pub eisr0: ReadOnly<u32>),
        (0x024 => _r2),
        (0x030 => pub elrsr0: ReadOnly<u32>),
        (0x034 => _r3),
        (0x0f0 => pub apr: ReadWrite<u32>),
        (0x0f4 => _r4),
        (0x100 => pub lr: [ReadWrite<u32>; 64]),
        (0x200 => @END),
    }
}

register_structs! {
    /// PL011 UART (the part the monitor uses).
    pub UartRegs {
        (0x000 => pub dr: ReadWrite<u32>),
        (0x004 => _r0),
        (0x018 => pub fr: ReadOnly<u32>),
        (0x01c => _r1),
        (0x030 => pub cr: ReadWrite<u32>),
        (0x034 => pub ifls: ReadWrite<u32>),
        (0x038 => pub imsc: ReadWrite<u32>),
        (0x03c => _r2),
        (0x044 => pub icr: WriteOnly<u32>),
        (0x048 => @END),
    }
}

/// GICC_CTLR: enable group 0 signalling (no security extensions here).
const GICC_CTLR_ENABLE: u32 = 1 << 0;
/// GICC_CTLR: EOImode: EOIR only drops priority, DIR deactivates.
const GICC_CTLR_EOIMODE: u32 = 1 << 9;
/// GICD_CTLR: forward interrupts.
const GICD_CTLR_ENABLE: u32 = 1 << 0;
/// GICD_SGIR TargetListFilter = 0 (use the CPU target list), CPUTargetList at [23:16].
const GICD_SGIR_TARGETS_SHIFT: u32 = 16;
/// GICD_SGIR CPUTargetList: eight CPUs.
const GICD_SGIR_TARGETS: u32 = 0xff;
/// The INTID field of GICC_IAR.
const GICC_IAR_INTID: u32 = 0x3ff;
/// GICH_VTR.ListRegs: number of list registers minus one.
const GICH_VTR_LISTREGS: u32 = 0x3f;
/// The priority the monitor gives its own interrupts.
pub const MONITOR_PRIORITY: u8 = 0xa0;
/// The priority of the kick SGI: above the others, so that a parked CPU can
/// mask everything else and still be woken by it.
pub const KICK_PRIORITY: u8 = 0x80;
/// The priority of the wake SGI (a lock was released): above every other,
/// so that when GICC_HPPIR names it, GICC_IAR returns it.
pub const WAKE_PRIORITY: u8 = 0x40;
/// The priority of the watchdog's tick: above the kick, so that while a
/// server runs with [`PRIORITY_MASK_WATCHDOG`] the tick (and the wake SGI)
/// are the only interrupts signalled.
pub const WATCHDOG_PRIORITY: u8 = 0x60;
/// GICC_PMR while a server runs once an interrupt for the trap path came
/// (see `isolate`): the wake SGI and the watchdog's tick only.
#[cfg_attr(feature = "direct-call", allow(dead_code))]
pub const PRIORITY_MASK_WATCHDOG: u8 = 0x70;
/// GICC_PMR while a CPU sleeps on a server's lock: the wake SGI only, so
/// that another interrupt pending meanwhile (the CPU's timer, a kick), which
/// waits for the trap to end anyway, does not end the sleep at once and
/// turn it into a spin.
pub const PRIORITY_MASK_WAKE_ONLY: u8 = 0x50;
const _: () = assert!(
    WAKE_PRIORITY < PRIORITY_MASK_WAKE_ONLY && PRIORITY_MASK_WAKE_ONLY <= WATCHDOG_PRIORITY,
    "only the wake SGI passes the lock sleep's mask"
);
/// GICC_PMR: let every priority the monitor uses through.
pub const PRIORITY_MASK_ALL: u8 = 0xf0;
/// GICC_PMR for a parked CPU: only the kick gets through.
pub const PRIORITY_MASK_KICK_ONLY: u8 = MONITOR_PRIORITY;
/// PL011 FR.TXFF: transmit FIFO full.
const UART_FR_TXFF: u32 = 1 << 5;
/// PL011 FR.RXFE: receive FIFO empty.
const UART_FR_RXFE: u32 = 1 << 4;
/// PL011 IMSC/ICR: receive and receive-timeout interrupts.
const UART_INT_RX: u32 = (1 << 4) | (1 << 6);

/// The physical GIC.
pub struct Gic {
    gicd: &'static GicdRegs,
    gicc: &'static GiccRegs,
    gich: &'static GichRegs,
    /// GICH_VTR.ListRegs + 1, read once on the boot CPU: a GIC's CPU
    /// interfaces all have the same count (GIC-400: 4; QEMU's GICv2: 4),
    /// and each register access costs host time under QEMU (it was read
    /// twice a trap).
    list_registers: u8,
}

impl Gic {
    /// # Safety
    /// The addresses must be the GIC's register frames, identity-mapped as
    /// device memory, and used by nothing else.
    pub unsafe fn new(gicd: usize, gicc: usize, gich: usize) -> Self {
        // SAFETY: the caller guarantees these are the device's frames.
        let (gicd, gicc, gich) =
            unsafe { (&*(gicd as *const GicdRegs), &*(gicc as *const GiccRegs), &*(gich as *const GichRegs)) };
        let list_registers = ((gich.vtr.get() & GICH_VTR_LISTREGS) + 1) as u8;
        Self { gicd, gicc, gich, list_registers }
    }

    /// Enable the distributor (boot CPU, once).
    pub fn init_distributor(&self) {
        self.gicd.ctlr.set(GICD_CTLR_ENABLE);
    }

    /// Enable one interrupt at `priority`, routed to `cpu` when it is an SPI.
    pub fn enable(&self, intid: u16, cpu: usize, priority: u8) {
        let n = usize::from(intid);
        if let Some(p) = self.gicd.ipriorityr.get(n) {
            p.set(priority);
        }
        if intid >= 32 {
            if let Some(t) = self.gicd.itargetsr.get(n) {
                t.set(1 << cpu);
            }
        }
        if let Some(e) = self.gicd.isenabler.get(n / 32) {
            e.set(1 << (n % 32));
        }
    }

    /// Set up this CPU's interface.
    pub fn init_cpu(&self) {
        self.set_priority_mask(PRIORITY_MASK_ALL);
        self.gicc.bpr.set(0);
        self.gicc.ctlr.set(GICC_CTLR_ENABLE | GICC_CTLR_EOIMODE);
    }

    /// Set this CPU's priority mask (GICC_PMR): only interrupts of a higher
    /// priority (a lower value) are signalled, and only they wake a WFI.
    pub fn set_priority_mask(&self, mask: u8) {
        self.gicc.pmr.set(u32::from(mask));
    }

    /// GICC_PMR now.
    pub fn priority_mask(&self) -> u8 {
        // The mask is the register's low byte (the rest reads as zero).
        self.gicc.pmr.get() as u8
    }

    /// Acknowledge the highest-priority pending interrupt and drop the
    /// running priority; returns its INTID, or `None` when spurious.
    pub fn acknowledge(&self) -> Option<u16> {
        let iar = self.gicc.iar.get();
        let intid = (iar & GICC_IAR_INTID) as u16;
        if intid >= ipc::IntId::LIMIT {
            return None;
        }
        self.gicc.eoir.set(iar);
        Some(intid)
    }

    /// The highest-priority pending interrupt that GICC_PMR lets through
    /// (GICC_HPPIR), without acknowledging it; `None` when there is none.
    pub fn highest_pending(&self) -> Option<u16> {
        let intid = (self.gicc.hppir.get() & GICC_IAR_INTID) as u16;
        (intid < ipc::IntId::LIMIT).then_some(intid)
    }

    /// Deactivate an acknowledged interrupt.
    pub fn deactivate(&self, intid: u16) {
        self.gicc.dir.set(u32::from(intid));
    }

    /// Send SGI `sgi` to physical CPU `cpu`.
    pub fn send_sgi(&self, sgi: u16, cpu: usize) {
        self.send_sgi_to(sgi, 1u32.checked_shl(cpu as u32).unwrap_or(0));
    }

    /// Send SGI `sgi` to every physical CPU whose bit is set in `cpus`.
    pub fn send_sgi_to(&self, sgi: u16, cpus: u32) {
        let targets = cpus & GICD_SGIR_TARGETS;
        if targets != 0 {
            self.gicd.sgir.set(targets << GICD_SGIR_TARGETS_SHIFT | u32::from(sgi & 0xf));
        }
    }

    /// Acknowledge and deactivate every pending `intid` (from any source)
    /// while it is the highest-priority pending interrupt, which it always
    /// is when it has the highest priority the monitor uses.
    pub fn take_pending(&self, intid: u16) {
        while (self.gicc.hppir.get() & GICC_IAR_INTID) == u32::from(intid) {
            match self.acknowledge() {
                Some(taken) => self.deactivate(taken),
                None => break,
            }
        }
    }

    /// Number of list registers this CPU interface has.
    pub fn list_registers(&self) -> u8 {
        self.list_registers
    }

    /// Snapshot of the virtual interface state.
    pub fn lr_status(&self) -> LrStatus {
        let mut status = LrStatus {
            misr: self.gich.misr.get(),
            eisr: self.gich.eisr0.get(),
            elrsr: self.gich.elrsr0.get(),
            lrs: [0; 4],
        };
        let n = usize::from(self.list_registers()).min(status.lrs.len());
        for (i, lr) in status.lrs[..n].iter_mut().enumerate() {
            *lr = self.gich.lr[i].get();
        }
        status
    }

    /// Write list register `index`, if it exists.
    pub fn write_lr(&self, index: u8, value: u32) -> bool {
        if index >= self.list_registers() {
            return false;
        }
        self.gich.lr[usize::from(index)].set(value);
        true
    }

    /// Write GICH_HCR.
    pub fn write_hcr(&self, value: u32) {
        self.gich.hcr.set(value);
    }
}

/// The physical UART.
pub struct Uart {
    regs: &'static UartRegs,
}

// SAFETY: the distributor's registers are written with single 32-bit or
// 8-bit stores that the GIC makes atomic; the CPU interface and GICH frames
// are banked per CPU, so each CPU only ever reaches its own.
unsafe impl Sync for Gic {}
// SAFETY: output is serialised by the host link's lock, input happens only
// on the CPU the UART's interrupt is routed to, and each access is one
// register access.
unsafe impl Sync for Uart {}
// SAFETY: as for Sync: the frames are fixed device addresses, valid on
// every CPU.
unsafe impl Send for Gic {}
// SAFETY: as for Sync.
unsafe impl Send for Uart {}

impl Uart {
    /// # Safety
    /// `base` must be the PL011's register frame, identity-mapped as device
    /// memory, and used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees this is the device's frame.
        unsafe { Self { regs: &*(base as *const UartRegs) } }
    }

    /// Write a byte, waiting for room in the FIFO.
    pub fn write_byte(&self, byte: u8) {
        while self.regs.fr.get() & UART_FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.regs.dr.set(u32::from(byte));
    }

    /// Ask for receive interrupts, or stop them (while the guest's console
    /// has no room, bytes wait in the UART's FIFO; its receive interrupt
    /// stays raised and fires again once unmasked).
    pub fn set_rx_interrupt(&self, enabled: bool) {
        self.regs.imsc.set(if enabled { UART_INT_RX } else { 0 });
    }

    /// Read up to `buf.len()` received bytes.
    ///
    /// No UARTICR write: reading the FIFO empty clears the receive and
    /// receive-timeout interrupts itself (PL011 TRM 3.4.3, 3.4.4; QEMU's
    /// model clears RX when the last byte is read), and a clear after the
    /// FIFO was seen empty would lose a byte that arrives in between: its
    /// interrupt, raised as the FIFO went from empty to one byte, would be
    /// cleared with the byte left unread, and no later byte raises it again
    /// (QEMU raises RX only on reaching the trigger level, one byte). That
    /// stopped the VM's console input mid-line now and then.
    pub fn read(&self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() && self.regs.fr.get() & UART_FR_RXFE == 0 {
            buf[n] = self.regs.dr.get() as u8;
            n += 1;
        }
        n
    }
}
