//! The guests' run-time: start-up code, exception vectors, the probing load
//! that survives a data abort, the fatal path and the panic handler.
//!
//! Boot state (Linux ARM boot protocol, `Documentation/arm/booting.rst`):
//! entered at `_start` in SVC mode with the MMU and caches off, r0 = 0,
//! r1 = machine type (0xFFFFFFFF: none, the device tree describes the
//! board), r2 = physical address of the device tree. QEMU enters an ELF the
//! same way but passes no registers (they are 0).

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::console::{self, Sink};
use crate::cpu::{DataFaultStatus, Mode, CPSR_MODE_MASK, MODE_ABT, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_UND};
use crate::dtb::{self, DtbError, Region};
use crate::psci::{self, ReturnCode};
use crate::{arch, outln, BootInfo};

/// Exception numbers the vector stubs pass to [`on_unexpected`], one per
/// vector-table slot (Arm ARM B1.8.1, "Exception vectors and the exception
/// base address").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// Slot 0x00: reset.
    Reset,
    /// Slot 0x04: undefined instruction.
    Undefined,
    /// Slot 0x08: supervisor call.
    SupervisorCall,
    /// Slot 0x0C: prefetch abort.
    PrefetchAbort,
    /// Slot 0x10: data abort.
    DataAbort,
    /// Slot 0x14: not used at PL1.
    Reserved,
    /// Slot 0x18: IRQ.
    Irq,
    /// Slot 0x1C: FIQ.
    Fiq,
    /// A number no stub passes.
    Unknown(u32),
}

const EXC_RESET: u32 = 0;
const EXC_UNDEF: u32 = 1;
const EXC_SVC: u32 = 2;
const EXC_PABT: u32 = 3;
const EXC_DABT: u32 = 4;
const EXC_RESERVED: u32 = 5;
const EXC_IRQ: u32 = 6;
const EXC_FIQ: u32 = 7;

impl Exception {
    const fn from_raw(raw: u32) -> Self {
        match raw {
            EXC_RESET => Self::Reset,
            EXC_UNDEF => Self::Undefined,
            EXC_SVC => Self::SupervisorCall,
            EXC_PABT => Self::PrefetchAbort,
            EXC_DABT => Self::DataAbort,
            EXC_RESERVED => Self::Reserved,
            EXC_IRQ => Self::Irq,
            EXC_FIQ => Self::Fiq,
            other => Self::Unknown(other),
        }
    }

    /// How far the exception's link register points past the instruction
    /// that caused it, in A32 state (Arm ARM B1.8.3, "Link values saved on
    /// exception entry").
    const fn lr_offset(self) -> u32 {
        match self {
            Self::DataAbort => 8,
            _ => 4,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Undefined => "undefined instruction",
            Self::SupervisorCall => "supervisor call",
            Self::PrefetchAbort => "prefetch abort",
            Self::DataAbort => "data abort",
            Self::Reserved => "reserved-vector",
            Self::Irq => "IRQ",
            Self::Fiq => "FIQ",
            Self::Unknown(_) => "unknown",
        }
    }
}

// Start-up, vectors and the probing load. Hand-written assembly because
// nothing else can run before a stack exists or at an exception vector.
core::arch::global_asm!(
    r#"
    .section .text.start, "ax", %progbits
    .global _start
    .type _start, %function
    .arm
_start:
    mrs     r4, cpsr
    cpsid   aif
    and     r5, r4, #{mode_mask}
    cmp     r5, #{mode_svc}
    bne     1f
    @ Entered in SVC mode: give every mode an exception can be taken in its
    @ own stack. In any other mode leave the banked registers alone and let
    @ the guest report the wrong mode.
    cps     #{mode_und}
    ldr     sp, =__und_stack_top
    cps     #{mode_abt}
    ldr     sp, =__abt_stack_top
    cps     #{mode_irq}
    ldr     sp, =__irq_stack_top
    cps     #{mode_fiq}
    ldr     sp, =__fiq_stack_top
    cps     #{mode_svc}
1:
    ldr     sp, =__svc_stack_top
    ldr     r5, =__bss_start
    ldr     r6, =__bss_end
    mov     r7, #0
2:
    cmp     r5, r6
    strlo   r7, [r5], #4
    blo     2b
    @ r0-r2 are still the boot registers; r3 = CPSR at entry.
    mov     r3, r4
    bl      {entry}
3:
    wfi
    b       3b
    .ltorg

    .section .text.vectors, "ax", %progbits
    .balign 32
    .global __vectors
__vectors:
    b       __vec_reset
    b       __vec_undef
    b       __vec_svc
    b       __vec_pabt
    b       __vec_dabt
    b       __vec_reserved
    b       __vec_irq
    b       __vec_fiq

__vec_reset:
    mov     r0, #{exc_reset}
    b       __vec_unexpected
__vec_undef:
    mov     r0, #{exc_undef}
    b       __vec_unexpected
__vec_svc:
    mov     r0, #{exc_svc}
    b       __vec_unexpected
__vec_pabt:
    mov     r0, #{exc_pabt}
    b       __vec_unexpected
__vec_reserved:
    mov     r0, #{exc_reserved}
    b       __vec_unexpected
    @ IRQ: the handler `set_irq_handler` installed runs on the IRQ stack
    @ with the interrupted r0-r3, r12 and lr saved; without one the IRQ is
    @ unexpected. (Handlers run with IRQs masked: no nesting.)
__vec_irq:
    sub     lr, lr, #4
    push    {{r0-r3, r12, lr}}
    mov     r0, lr
    mrs     r1, spsr
    bl      {irq_dispatch}
    pop     {{r0-r3, r12, lr}}
    movs    pc, lr
__vec_fiq:
    mov     r0, #{exc_fiq}
    b       __vec_unexpected
__vec_unexpected:
    mov     r1, lr
    mrs     r2, spsr
    bl      {unexpected}
4:
    wfi
    b       4b

    @ A data abort either comes from the probing load, which resumes after
    @ it with r1 = 1, or is unexpected: then {data_abort} does not return.
__vec_dabt:
    push    {{r0-r3, r12, lr}}
    sub     r0, lr, #8
    mrs     r1, spsr
    bl      {data_abort}
    pop     {{r0-r3, r12, lr}}
    mov     r1, #1
    subs    pc, lr, #4

    @ u64 __probe_read(u32 addr): r0 = the word at addr, r1 = 0; or, if the
    @ load aborts, r0 = addr, r1 = 1.
    .section .text.probe, "ax", %progbits
    .global __probe_read
    .type __probe_read, %function
__probe_read:
    mov     r1, #0
    .global __probe_read_insn
__probe_read_insn:
    ldr     r0, [r0]
    bx      lr
"#,
    mode_mask = const CPSR_MODE_MASK,
    mode_svc = const MODE_SVC,
    mode_und = const MODE_UND,
    mode_abt = const MODE_ABT,
    mode_irq = const MODE_IRQ,
    mode_fiq = const MODE_FIQ,
    exc_reset = const EXC_RESET,
    exc_undef = const EXC_UNDEF,
    exc_svc = const EXC_SVC,
    exc_pabt = const EXC_PABT,
    exc_reserved = const EXC_RESERVED,
    exc_fiq = const EXC_FIQ,
    entry = sym __guest_entry,
    unexpected = sym on_unexpected,
    irq_dispatch = sym irq_dispatch,
    data_abort = sym on_data_abort,
);

extern "C" {
    /// The guest's main, defined by [`crate::entry!`].
    fn __guest_entry(r0: u32, r1: u32, r2: u32, cpsr: u32) -> !;
    fn __probe_read(addr: u32) -> u64;
    static __probe_read_insn: u8;
    static __vectors: u8;
    static __image_start: u8;
    static __image_end: u8;
}

/// The address range the guest image occupies (code, data, stacks).
pub fn image() -> Region {
    let start = core::ptr::addr_of!(__image_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    Region { base: start, size: end.saturating_sub(start) }
}

/// What a caught data abort left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// DFSR as the handler read it.
    pub dfsr: DataFaultStatus,
    /// DFAR as the handler read it.
    pub dfar: u32,
    /// CPSR in the handler: its mode is the mode the abort was taken to.
    pub cpsr: u32,
    /// SPSR in the handler: the interrupted mode.
    pub spsr: u32,
    /// The address of the aborted instruction (LR - 8).
    pub pc: u32,
}

static ABORT_DFSR: AtomicU32 = AtomicU32::new(0);
static ABORT_DFAR: AtomicU32 = AtomicU32::new(0);
static ABORT_CPSR: AtomicU32 = AtomicU32::new(0);
static ABORT_SPSR: AtomicU32 = AtomicU32::new(0);
static ABORT_PC: AtomicU32 = AtomicU32::new(0);

/// The address of the load in `__probe_read`.
pub fn probe_instruction() -> u32 {
    core::ptr::addr_of!(__probe_read_insn) as u32
}

/// Reads the word at `addr` with one `LDR`; a data abort on that load is
/// caught and returned instead of ending the guest.
///
/// # Safety
///
/// Reading `addr` must not have side effects the caller is not prepared
/// for (device registers may have them). An unaligned `addr` gives an
/// alignment fault, returned like any other abort.
pub unsafe fn probe_read(addr: u32) -> Result<u32, DataAbort> {
    // SAFETY: `__probe_read` follows the AAPCS and returns a u64 in r0/r1;
    // the caller vouches for the read, and a fault on it is caught by the
    // data-abort vector, which resumes after the load.
    let raw = unsafe { __probe_read(addr) };
    if raw >> 32 == 0 {
        return Ok(raw as u32);
    }
    Err(DataAbort {
        dfsr: DataFaultStatus(ABORT_DFSR.load(Ordering::SeqCst)),
        dfar: ABORT_DFAR.load(Ordering::SeqCst),
        cpsr: ABORT_CPSR.load(Ordering::SeqCst),
        spsr: ABORT_SPSR.load(Ordering::SeqCst),
        pc: ABORT_PC.load(Ordering::SeqCst),
    })
}

/// Called by the data-abort vector with the aborted instruction's address
/// and SPSR. Returns only for the probing load.
extern "C" fn on_data_abort(fault_pc: u32, spsr: u32) {
    if fault_pc != probe_instruction() {
        on_unexpected(EXC_DABT, fault_pc.wrapping_add(Exception::DataAbort.lr_offset()), spsr);
    }
    ABORT_DFSR.store(arch::read_dfsr(), Ordering::SeqCst);
    ABORT_DFAR.store(arch::read_dfar(), Ordering::SeqCst);
    ABORT_CPSR.store(arch::read_cpsr(), Ordering::SeqCst);
    ABORT_SPSR.store(spsr, Ordering::SeqCst);
    ABORT_PC.store(fault_pc, Ordering::SeqCst);
}

/// Called by every vector but the expected data abort: reports and stops.
extern "C" fn on_unexpected(raw: u32, lr: u32, spsr: u32) -> ! {
    let exception = Exception::from_raw(raw);
    if exception == Exception::SupervisorCall && console::sink() == Sink::Semihosting {
        // The only SVC the guests make is a semihosting call: nobody
        // services it, so the console is gone.
        // SAFETY: `Sink::None` has no address to vouch for.
        unsafe { console::set(Sink::None) };
    }
    let pc = lr.wrapping_sub(exception.lr_offset());
    let mode = Mode::from_psr(spsr);
    match exception {
        Exception::DataAbort => fatal(format_args!(
            "unexpected data abort at pc {pc:#010x} from mode {mode}: DFSR {} DFAR {:#010x}",
            DataFaultStatus(arch::read_dfsr()),
            arch::read_dfar(),
        )),
        Exception::PrefetchAbort => fatal(format_args!(
            "unexpected prefetch abort at pc {pc:#010x} from mode {mode}: IFSR {:#010x} IFAR {:#010x}",
            arch::read_ifsr(),
            arch::read_ifar(),
        )),
        other => fatal(format_args!(
            "unexpected {} exception at pc {pc:#010x} from mode {mode} (SPSR {spsr:#010x})",
            other.name(),
        )),
    }
}

/// The IRQ handler (a `fn()` as usize; 0: none).
static IRQ_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the IRQ handler every CPU runs when it takes an IRQ exception.
/// It must acknowledge and end the interrupts it takes itself.
pub fn set_irq_handler(handler: fn()) {
    IRQ_HANDLER.store(handler as usize, Ordering::SeqCst);
}

/// Called by the IRQ vector with the return address and the interrupted
/// mode's CPSR.
extern "C" fn irq_dispatch(return_to: u32, spsr: u32) {
    let handler = IRQ_HANDLER.load(Ordering::SeqCst);
    if handler == 0 {
        on_unexpected(EXC_IRQ, return_to.wrapping_add(Exception::Irq.lr_offset()), spsr);
    }
    // SAFETY: only `set_irq_handler` stores into IRQ_HANDLER, a `fn()`.
    let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
    handler();
}

/// Points VBAR at the guest's vectors and makes sure they are used: low
/// vectors (SCTLR.V = 0), taken in A32 state (SCTLR.TE = 0). Every CPU
/// does it for itself (both registers are per CPU).
pub fn install_vectors() {
    let vectors = core::ptr::addr_of!(__vectors) as u32;
    // SAFETY: `__vectors` is the 32-byte aligned table above, part of the
    // image for the guest's whole life.
    unsafe { arch::write_vbar(vectors) };
    let sctlr = arch::read_sctlr();
    let wanted = sctlr & !(arch::SCTLR_V | arch::SCTLR_TE);
    if wanted != sctlr {
        // SAFETY: only the vector location and exception instruction set
        // change; the MMU, caches and alignment checks stay as they are.
        unsafe { arch::write_sctlr(wanted) };
    }
}

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        arch::wfi();
    }
}

/// Asks PSCI for a system reset: what a guest does when its test failed
/// (splitvisor then exits with its "reset" status; QEMU started with
/// `-no-reboot` exits).
pub fn system_reset() -> ! {
    let result = arch::hvc_call(psci::SYSTEM_RESET, 0, 0, 0);
    outln!("FAIL: PSCI SYSTEM_RESET returned {}", ReturnCode::from_raw(result));
    halt()
}

/// Asks PSCI to power the system off: the end of a passing test.
pub fn system_off() -> ! {
    let result = arch::hvc_call(psci::SYSTEM_OFF, 0, 0, 0);
    fatal(format_args!("PSCI SYSTEM_OFF returned {}", ReturnCode::from_raw(result)))
}

/// Reports an unrecoverable failure and resets; a failure while doing so
/// (a PSCI call that faults, say) only halts.
pub fn fatal(reason: fmt::Arguments<'_>) -> ! {
    static ENTERED: AtomicBool = AtomicBool::new(false);
    if ENTERED.swap(true, Ordering::SeqCst) {
        halt()
    }
    outln!("FAIL: {reason}");
    outln!("RESULT: FAIL");
    system_reset()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => fatal(format_args!("panic at {}:{}: {}", at.file(), at.line(), info.message())),
        None => fatal(format_args!("panic: {}", info.message())),
    }
}

/// The device tree at `r2`, validated before a byte of it is trusted.
fn locate_dtb(r2: u32) -> Result<fdt::Fdt<'static>, DtbError> {
    if r2 == 0 {
        return Err(DtbError::Null);
    }
    if !r2.is_multiple_of(4) {
        return Err(DtbError::Misaligned(r2));
    }
    let size_addr = r2.checked_add(4).ok_or(DtbError::Unreadable(r2))?;
    // SAFETY: r2 is meant to point at RAM holding the tree; if it points at
    // nothing the abort is caught. (A bogus r2 that hits a device register
    // could disturb that device; the guests use none but the UART.)
    let magic = unsafe { probe_read(r2) }.map_err(|_| DtbError::Unreadable(r2))?;
    // SAFETY: as above.
    let size = unsafe { probe_read(size_addr) }.map_err(|_| DtbError::Unreadable(size_addr))?;
    // The header is big-endian; the CPU little-endian.
    let len = dtb::check_header(u32::from_be(magic), u32::from_be(size))?;
    let end = u64::from(r2) + len as u64;
    if end > 1 << 32 {
        return Err(DtbError::BadSize(u32::from_be(size)));
    }
    if image().overlaps(u64::from(r2), end) {
        return Err(DtbError::OverlapsImage(r2));
    }
    // SAFETY: the header at r2 is a DTB's and gives its size; the blob lies
    // outside the guest image (checked above), so nothing the guest does
    // writes to it, and the boot protocol has the loader leave it alone.
    let blob = unsafe { core::slice::from_raw_parts(r2 as usize as *const u8, len) };
    dtb::parse(blob)
}

/// What [`init`] found out about the platform.
pub struct Env {
    /// The boot registers.
    pub boot: BootInfo,
    /// The device tree, or why there is none.
    pub dtb: Result<fdt::Fdt<'static>, DtbError>,
}

/// Common start of every guest: installs the vectors, finds the device tree
/// and the console, prints the boot registers, and checks the entry mode.
pub fn init(guest: &'static str, boot: BootInfo) -> (Env, crate::Report) {
    install_vectors();
    let dtb = locate_dtb(boot.r2);
    let uart = dtb.as_ref().ok().and_then(dtb::console_pl011);
    let uart_base = uart.and_then(|uart| usize::try_from(uart.region.base).ok());
    match uart_base {
        // SAFETY: the device tree names a PL011 there.
        Some(base) => unsafe { console::set(Sink::Pl011(base)) },
        // SAFETY: semihosting has no address to vouch for.
        None => unsafe { console::set(Sink::Semihosting) },
    }

    let mut report = crate::Report::new(guest, matches!(dtb, Err(err) if err.is_absent()));
    report.info(format_args!(
        "boot r0={:#010x} r1={:#010x} r2={:#010x} cpsr={:#010x}",
        boot.r0, boot.r1, boot.r2, boot.cpsr
    ));
    match (&dtb, uart, uart_base) {
        (Ok(_), Some(uart), Some(base)) => {
            report.info(format_args!("console {} at {base:#010x} (from the device tree)", uart.name))
        }
        (Ok(_), Some(uart), None) => report.fail(format_args!(
            "the console {} at {:#x} is outside the 32-bit address space",
            uart.name, uart.region.base
        )),
        (Ok(_), None, _) => report.fail(format_args!("the device tree has no enabled {} node", dtb::PL011_COMPATIBLE)),
        (Err(err), _, _) if err.is_absent() => {
            outln!("NO-DTB: no device tree at r2 ({err}); console is semihosting")
        }
        (Err(err), _, _) => report.fail(format_args!("invalid device tree at r2: {err}")),
    }

    let mode = Mode::from_psr(boot.cpsr);
    if mode == Mode::Supervisor {
        report.pass(format_args!("mode {mode} (CPSR {:#010x})", boot.cpsr));
    } else {
        report.fail(format_args!("mode {mode} (CPSR {:#010x}): a guest must start in {}", boot.cpsr, Mode::Supervisor));
        // HVC from any other mode cannot reach the PSCI implementation
        // (from Hyp mode it is taken by Hyp mode itself).
        report.forbid_psci();
    }
    (Env { boot, dtb }, report)
}
