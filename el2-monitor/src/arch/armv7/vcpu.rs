//! The guest context of one physical CPU, and the hardware side of the
//! router: register access with mode banking, and the actions applied.

use el2_monitor::guest::{self, cpsr, ExceptionEntry, Fault, GuestException, GuestState};
use el2_monitor::router::Hardware;
use ipc::msg::LrStatus;
use ipc::{ActionRef, GuestReg, ShutdownReason, TrapConfig};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use super::sysreg::{
    CNTHCTL, CNTHCTL_BITS, CNTHP_CTL, CNTHP_CVAL, CNTPCT, CNTVOFF, CNTV_CTL, DFAR, DFSR, HCR, HCR_BITS, IFAR, IFSR,
    SCTLR, TIMER_CTL, TTBCR, VBAR,
};

/// The guest registers saved on a trap (laid out by the vector code).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    /// ELR_hyp: where the guest resumes.
    pub elr: u32,
    /// SPSR_hyp: the guest's CPSR.
    pub spsr: u32,
    /// r0-r12 (the User-mode bank of r8-r12).
    pub r: [u32; 13],
    /// LR_usr.
    pub lr_usr: u32,
}

/// Read or write a banked register of a guest mode (MRS/MSR banked form,
/// Virtualization Extensions).
macro_rules! banked {
    ($read:ident, $write:ident, $reg:literal) => {
        fn $read() -> u32 {
            let v: u32;
            // SAFETY: reading a banked register from Hyp mode has no side effects.
            unsafe { core::arch::asm!(concat!(".arch_extension virt\nmrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
        fn $write(v: u32) {
            // SAFETY: the register belongs to a guest mode; the monitor never
            // runs in that mode, so changing it only changes guest state.
            unsafe { core::arch::asm!(concat!(".arch_extension virt\nmsr ", $reg, ", {0}"), in(reg) v, options(nomem, nostack, preserves_flags)) };
        }
    };
}

banked!(sp_usr, set_sp_usr, "sp_usr");
banked!(sp_svc, set_sp_svc, "sp_svc");
banked!(lr_svc, set_lr_svc, "lr_svc");
banked!(sp_abt, set_sp_abt, "sp_abt");
banked!(lr_abt, set_lr_abt, "lr_abt");
banked!(spsr_abt, set_spsr_abt, "spsr_abt");
banked!(sp_und, set_sp_und, "sp_und");
banked!(lr_und, set_lr_und, "lr_und");
banked!(spsr_und, set_spsr_und, "spsr_und");
banked!(sp_irq, set_sp_irq, "sp_irq");
banked!(lr_irq, set_lr_irq, "lr_irq");
banked!(sp_fiq, set_sp_fiq, "sp_fiq");
banked!(lr_fiq, set_lr_fiq, "lr_fiq");
banked!(r8_fiq, set_r8_fiq, "r8_fiq");
banked!(r9_fiq, set_r9_fiq, "r9_fiq");
banked!(r10_fiq, set_r10_fiq, "r10_fiq");
banked!(r11_fiq, set_r11_fiq, "r11_fiq");
banked!(r12_fiq, set_r12_fiq, "r12_fiq");

// The exception-entry code only writes these two SPSRs; the readers exist
// because the macro makes pairs.
const _: [fn() -> u32; 2] = [spsr_abt, spsr_und];

impl Frame {
    fn mode(&self) -> u32 {
        self.spsr & cpsr::MODE_MASK
    }

    /// Register `n` (0-15) as the guest's current mode sees it. (R0-R7,
    /// which no mode banks, inline: the store of a trapped access reads its
    /// register here, and the call cost each 12 instructions.)
    #[inline(always)]
    pub fn reg(&self, n: u8) -> u32 {
        if n < 8 {
            self.r[usize::from(n)]
        } else {
            self.banked_reg(n)
        }
    }

    /// [`Frame::reg`] for R8-R15.
    #[inline(never)]
    fn banked_reg(&self, n: u8) -> u32 {
        let mode = self.mode();
        match (n, mode) {
            (0..=7, _) => self.r[usize::from(n)],
            (8, cpsr::MODE_FIQ) => r8_fiq(),
            (9, cpsr::MODE_FIQ) => r9_fiq(),
            (10, cpsr::MODE_FIQ) => r10_fiq(),
            (11, cpsr::MODE_FIQ) => r11_fiq(),
            (12, cpsr::MODE_FIQ) => r12_fiq(),
            (8..=12, _) => self.r[usize::from(n)],
            (13, cpsr::MODE_SVC) => sp_svc(),
            (13, cpsr::MODE_ABT) => sp_abt(),
            (13, cpsr::MODE_UND) => sp_und(),
            (13, cpsr::MODE_IRQ) => sp_irq(),
            (13, cpsr::MODE_FIQ) => sp_fiq(),
            (13, _) => sp_usr(),
            (14, cpsr::MODE_SVC) => lr_svc(),
            (14, cpsr::MODE_ABT) => lr_abt(),
            (14, cpsr::MODE_UND) => lr_und(),
            (14, cpsr::MODE_IRQ) => lr_irq(),
            (14, cpsr::MODE_FIQ) => lr_fiq(),
            (14, _) => self.lr_usr,
            // Reading the PC as an operand gives the instruction address
            // plus 8 (ARM) or 4 (Thumb).
            _ => self.elr.wrapping_add(if self.spsr & cpsr::T != 0 { 4 } else { 8 }),
        }
    }

    /// Write register `n` (0-15) as the guest's current mode sees it.
    pub fn set_reg(&mut self, n: u8, v: u32) {
        let mode = self.mode();
        match (n, mode) {
            (0..=7, _) => self.r[usize::from(n)] = v,
            (8, cpsr::MODE_FIQ) => set_r8_fiq(v),
            (9, cpsr::MODE_FIQ) => set_r9_fiq(v),
            (10, cpsr::MODE_FIQ) => set_r10_fiq(v),
            (11, cpsr::MODE_FIQ) => set_r11_fiq(v),
            (12, cpsr::MODE_FIQ) => set_r12_fiq(v),
            (8..=12, _) => self.r[usize::from(n)] = v,
            (13, cpsr::MODE_SVC) => set_sp_svc(v),
            (13, cpsr::MODE_ABT) => set_sp_abt(v),
            (13, cpsr::MODE_UND) => set_sp_und(v),
            (13, cpsr::MODE_IRQ) => set_sp_irq(v),
            (13, cpsr::MODE_FIQ) => set_sp_fiq(v),
            (13, _) => set_sp_usr(v),
            (14, cpsr::MODE_SVC) => set_lr_svc(v),
            (14, cpsr::MODE_ABT) => set_lr_abt(v),
            (14, cpsr::MODE_UND) => set_lr_und(v),
            (14, cpsr::MODE_IRQ) => set_lr_irq(v),
            (14, cpsr::MODE_FIQ) => set_lr_fiq(v),
            (14, _) => self.lr_usr = v,
            _ => self.elr = v,
        }
    }
}

/// Write SPSR and LR of the mode an exception is taken to.
fn set_exception_banks(mode: u32, spsr: u32, lr: u32) {
    match mode {
        cpsr::MODE_UND => {
            set_spsr_und(spsr);
            set_lr_und(lr);
        }
        _ => {
            set_spsr_abt(spsr);
            set_lr_abt(lr);
        }
    }
}

/// What the vCPU does after its trap has been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return to the guest.
    Resume,
    /// The vCPU was powered off: park the CPU.
    Park,
}

/// The hardware side of one trap's delivery.
pub struct Hw<'a> {
    /// Its saved registers.
    pub frame: &'a mut Frame,
    /// Length of the trapping instruction.
    pub insn_len: u32,
    /// What happens next.
    pub next: Next,
    /// The GIC (held here so that each list-register access does not look
    /// the VM up again).
    pub gic: &'a super::devices::Gic,
}

impl Hw<'_> {
    fn inject(&mut self, exception: GuestException) {
        let state = GuestState {
            pc: self.frame.elr,
            cpsr: self.frame.spsr,
            sctlr: SCTLR.get(),
            vbar: VBAR.get(),
            ttbcr: TTBCR.get(),
        };
        let ExceptionEntry { mode, cpsr, pc, lr, spsr, fault } = guest::exception_entry(exception, &state);
        set_exception_banks(mode, spsr, lr);
        match fault {
            Some(Fault::Data { fsr, far }) => {
                DFSR.set(fsr);
                DFAR.set(far);
            }
            Some(Fault::Prefetch { fsr, far }) => {
                IFSR.set(fsr);
                IFAR.set(far);
            }
            None => {}
        }
        self.frame.spsr = cpsr;
        self.frame.elr = pc;
    }
}

/// Program the trap controls a vCPU server asked for.
pub fn configure_traps(t: &TrapConfig) {
    let bit = |on: bool| if on { 1 } else { 0 };
    HCR.modify(
        HCR_BITS::TWI.val(bit(t.wfi))
            + HCR_BITS::TWE.val(bit(t.wfe))
            + HCR_BITS::TSC.val(bit(t.smc))
            + HCR_BITS::TAC.val(bit(t.actlr))
            + HCR_BITS::TSW.val(bit(t.set_way)),
    );
    CNTHCTL.modify(CNTHCTL_BITS::PL1PCEN.val(bit(!t.phys_timer)) + CNTHCTL_BITS::PL1PCTEN.val(bit(!t.phys_counter)));
}

impl Hardware for Hw<'_> {
    fn now(&self) -> u64 {
        CNTPCT.get()
    }

    fn lr_status(&self) -> LrStatus {
        self.gic.lr_status()
    }

    fn console_input(&mut self, buf: &mut [u8]) -> usize {
        let room = usize::from(super::CONSOLE_ROOM.lock().room());
        let take = buf.len().min(room);
        super::uart().read(&mut buf[..take])
    }

    // The actions of nearly every reply inline (into the delivery loop), the
    // rest out of line: a call per action was some twenty instructions of a
    // reply's two.
    #[inline(always)]
    fn apply(&mut self, action: ActionRef<'_>) {
        match action {
            ActionRef::AdvancePc => self.advance_pc(),
            ActionRef::SetReg { reg: GuestReg::Gpr(n), value } if n < 8 => self.frame.r[usize::from(n)] = value,
            ActionRef::ConsoleWrite { bytes } => super::console_write(bytes),
            _ => self.apply_other(action),
        }
    }
}

impl Hw<'_> {
    /// Step the guest past the trapping instruction.
    #[inline(always)]
    fn advance_pc(&mut self) {
        let (pc, cpsr) = guest::skip_instruction(self.frame.elr, self.frame.spsr, self.insn_len);
        self.frame.elr = pc;
        self.frame.spsr = cpsr;
    }

    #[inline(never)]
    fn apply_other(&mut self, action: ActionRef<'_>) {
        match action {
            ActionRef::SetReg { reg, value } => match reg {
                GuestReg::Gpr(n) if n < 16 => self.frame.set_reg(n, value),
                GuestReg::Gpr(n) => log::error!("server asked to set register r{n}, which does not exist"),
                GuestReg::Pc => self.frame.elr = value,
                GuestReg::Cpsr => {
                    // A guest CPSR naming Hyp or Monitor mode would eret into
                    // a mode the guest must never reach: refuse it.
                    let mode = value & cpsr::MODE_MASK;
                    if mode == cpsr::MODE_HYP || mode == 0x16 {
                        log::error!("server asked for guest CPSR {value:#x}: refused");
                    } else {
                        self.frame.spsr = value;
                    }
                }
            },
            ActionRef::AdvancePc => self.advance_pc(),
            ActionRef::InjectUndef => self.inject(GuestException::Undef),
            ActionRef::InjectDataAbort { far } => self.inject(GuestException::DataAbort { far, write: false }),
            ActionRef::InjectPrefetchAbort { far } => self.inject(GuestException::PrefetchAbort { far }),
            ActionRef::CleanInvalidateDcache => super::mmu::clean_invalidate_dcache_all(),
            ActionRef::ConsoleWrite { bytes } => super::console_write(bytes),
            ActionRef::ConfigureTraps(t) => configure_traps(&t),
            ActionRef::SetCntvoff { value } => CNTVOFF.set(value),
            ActionRef::SetHypTimer { deadline } => match deadline {
                Some(d) => {
                    CNTHP_CVAL.set(d);
                    CNTHP_CTL.write(TIMER_CTL::ENABLE::SET);
                }
                None => CNTHP_CTL.write(TIMER_CTL::IMASK::SET),
            },
            ActionRef::WriteListRegister { index, value } => {
                if !self.gic.write_lr(index, value) {
                    log::error!("server wrote list register {index}, which does not exist");
                }
            }
            ActionRef::WriteGichHcr { value } => self.gic.write_hcr(value),
            ActionRef::SetVirtualTimerMask { masked } => {
                // Its output follows once the write has taken effect: masked,
                // before a deactivation that follows, which must not see it
                // high.
                CNTV_CTL.modify(if masked { TIMER_CTL::IMASK::SET } else { TIMER_CTL::IMASK::CLEAR });
                super::sysreg::isb();
            }
            ActionRef::DeactivatePhysical { intid } => self.gic.deactivate(intid.0),
            ActionRef::Kick { vcpu } => super::kick(vcpu),
            ActionRef::PowerOn { vcpu, entry, context_id } => super::power_on(vcpu, entry, context_id),
            ActionRef::PowerOff => self.next = Next::Park,
            ActionRef::WaitForInterrupt => {
                let start = super::profile::now();
                super::wait_for_interrupt();
                super::profile::add_here(super::profile::Part::Idle, start);
            }
            ActionRef::Shutdown(reason) => super::shutdown(match reason {
                ShutdownReason::PowerOff => ipc::exit::POWER_OFF,
                ShutdownReason::Reset => ipc::exit::RESET,
                ShutdownReason::Fault(code) => {
                    log::error!("VM stopped: fault {code:#x}");
                    ipc::exit::MONITOR_FAULT
                }
            }),
            ActionRef::ConsoleReady { room, report } => {
                // Under the lock, so that the interrupt mask follows the
                // report kept, whichever CPU applies which report when.
                let mut kept = super::CONSOLE_ROOM.lock();
                if kept.offer(room, report) {
                    super::uart().set_rx_interrupt(room > 0);
                }
            }
            ActionRef::ConsoleImageWord { offset, value, generation } => {
                super::console_image::word(offset, value, generation)
            }
            ActionRef::ConsoleImageMap { mapped, generation } => super::console_image::map(mapped, generation),
            // The router delivers these itself.
            ActionRef::Send(_) => log::error!("router passed a Send to the hardware"),
        }
    }
}
