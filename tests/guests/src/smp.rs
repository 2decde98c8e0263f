//! Secondary CPUs: their entry point for PSCI CPU_ON, their stacks, the
//! mailbox that tells each what to run, the logical CPU index, and bounded
//! waiting on the counter.
//!
//! A secondary enters `__secondary_start` in SVC mode with the MMU off and
//! IRQ/FIQ masked (PSCI, DEN 0022 6.4.3 "CPU_ON": the entry state), with the
//! context id in r0. The guests' context ids carry the logical CPU index in
//! their low byte ([`context_id`]): the entry code picks that CPU's stack
//! block from it before any Rust runs, and parks a CPU whose index is out of
//! range. Each CPU then installs the vector table for itself (VBAR and
//! SCTLR are per CPU) and calls the function its mailbox holds; when that
//! returns, it calls PSCI CPU_OFF.
//!
//! Shared state between CPUs is atomics only. With the MMU off every data
//! access is Strongly-ordered (Arm ARM B3.2.1), and LDREX/STREX on such
//! memory work under QEMU (TCG); on hardware the guests would have to turn
//! the MMU on first (support for exclusives on non-Normal memory is
//! IMPLEMENTATION DEFINED, A3.4.5).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::cpu::{CPSR_MODE_MASK, MODE_ABT, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_UND};
use crate::dtb::{Cpus, MAX_CPUS, MPIDR_AFFINITY_MASK};
use crate::psci::{self, ReturnCode};
use crate::{arch, rt};

/// Stack bytes per secondary CPU, for all its modes.
pub const STACK_BLOCK: usize = 0x4000;
/// Top of the Undefined-mode stack within a block (1 KiB).
const UND_TOP: usize = 0x400;
/// Top of the Abort-mode stack (1 KiB).
const ABT_TOP: usize = 0x800;
/// Top of the FIQ-mode stack (1 KiB).
const FIQ_TOP: usize = 0xc00;
/// Top of the IRQ-mode stack (4 KiB).
const IRQ_TOP: usize = 0x1c00;
/// Top of the SVC-mode stack (9 KiB): the block's end.
const SVC_TOP: usize = STACK_BLOCK;
/// The context id bits that carry the CPU index.
pub const CONTEXT_INDEX_MASK: u32 = 0xff;
/// The fixed upper half of the guests' context ids, so that a context id
/// that arrives mangled is told apart from a right one.
pub const CONTEXT_MAGIC: u32 = 0x5ec0_0000;
/// Shift of the caller's tag within a context id.
const CONTEXT_TAG_SHIFT: u32 = 8;

/// One stack block per CPU index (block 0 is unused: CPU 0 runs on the
/// stacks of `link.x`).
#[repr(C, align(8))]
struct Stacks(UnsafeCell<[[u8; STACK_BLOCK]; MAX_CPUS]>);

// SAFETY: each block is used only by the CPU whose index selects it, and
// only through its stack pointers; no Rust code reads or writes it.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_BLOCK]; MAX_CPUS]));

/// What each CPU index runs when it starts (a `fn(Secondary)` as usize; 0:
/// nothing).
static MAILBOX: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The MPIDR affinity of each CPU index, from the device tree.
static CPU_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// How many CPUs the device tree lists (at most [`MAX_CPUS`]).
static CPU_COUNT: AtomicUsize = AtomicUsize::new(1);
/// Whether a CPU_OFF returned, per CPU, and what it returned.
static CPU_OFF_RETURNED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static CPU_OFF_RESULT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// What a secondary CPU found at its entry.
#[derive(Clone, Copy, Debug)]
pub struct Secondary {
    /// Its logical index (position in the device tree's `/cpus`).
    pub index: usize,
    /// r0 at entry: the context id given to CPU_ON.
    pub context_id: u32,
    /// CPSR at entry.
    pub cpsr: u32,
    /// SCTLR at entry (before the vectors were installed).
    pub sctlr: u32,
}

core::arch::global_asm!(
    r#"
    .section .text.secondary, "ax", %progbits
    .global __secondary_start
    .type __secondary_start, %function
    .balign 4
    .arm
__secondary_start:
    mrs     r4, cpsr
    cpsid   aif
    mov     r6, r0
    and     r5, r0, #{index_mask}
    cmp     r5, #{max_cpus}
    bhs     9f
    cmp     r5, #0
    beq     9f
    ldr     r7, ={stacks}
    mov     r8, #{block}
    mla     r7, r5, r8, r7
    and     r8, r4, #{mode_mask}
    cmp     r8, #{mode_svc}
    bne     1f
    @ In SVC mode, as CPU_ON promises: every mode gets its own stack.
    cps     #{mode_und}
    add     sp, r7, #{und_top}
    cps     #{mode_abt}
    add     sp, r7, #{abt_top}
    cps     #{mode_irq}
    add     sp, r7, #{irq_top}
    cps     #{mode_fiq}
    add     sp, r7, #{fiq_top}
    cps     #{mode_svc}
1:
    add     sp, r7, #{svc_top}
    mov     r0, r5
    mov     r1, r6
    mov     r2, r4
    mrc     p15, 0, r3, c1, c0, 0
    bl      {main}
9:
    @ An index out of range has no stack: park.
    wfi
    b       9b
    .ltorg
"#,
    index_mask = const CONTEXT_INDEX_MASK,
    max_cpus = const MAX_CPUS,
    stacks = sym STACKS,
    block = const STACK_BLOCK,
    mode_mask = const CPSR_MODE_MASK,
    mode_svc = const MODE_SVC,
    mode_und = const MODE_UND,
    mode_abt = const MODE_ABT,
    mode_irq = const MODE_IRQ,
    mode_fiq = const MODE_FIQ,
    und_top = const UND_TOP,
    abt_top = const ABT_TOP,
    irq_top = const IRQ_TOP,
    fiq_top = const FIQ_TOP,
    svc_top = const SVC_TOP,
    main = sym secondary_main,
);

extern "C" {
    fn __secondary_start();
}

/// The entry point the guests give CPU_ON.
pub fn entry_point() -> u32 {
    __secondary_start as *const () as usize as u32
}

/// The context id for CPU `index` with the caller's `tag` (which tells one
/// start of the same CPU from another).
pub const fn context_id(index: usize, tag: u8) -> u32 {
    CONTEXT_MAGIC | (tag as u32) << CONTEXT_TAG_SHIFT | (index as u32 & CONTEXT_INDEX_MASK)
}

/// Called by `__secondary_start` on the CPU's own stack.
extern "C" fn secondary_main(index: u32, context_id: u32, cpsr: u32, sctlr: u32) -> ! {
    rt::install_vectors();
    let index = index as usize;
    let main = MAILBOX.get(index).map_or(0, |slot| slot.load(Ordering::SeqCst));
    if main != 0 {
        // SAFETY: only `cpu_on` stores into the mailbox, and it stores a
        // `fn(Secondary)`.
        let main: fn(Secondary) = unsafe { core::mem::transmute::<usize, fn(Secondary)>(main) };
        main(Secondary { index, context_id, cpsr, sctlr });
    }
    arch::irq_disable();
    let result = arch::hvc_call(psci::CPU_OFF, 0, 0, 0);
    if let (Some(value), Some(flag)) = (CPU_OFF_RESULT.get(index), CPU_OFF_RETURNED.get(index)) {
        value.store(result, Ordering::SeqCst);
        flag.store(true, Ordering::SeqCst);
    }
    rt::halt()
}

/// Records the device tree's CPUs (call once, on CPU 0).
pub fn init(cpus: &Cpus) {
    for (slot, id) in CPU_IDS.iter().zip(cpus.ids()) {
        slot.store(*id, Ordering::SeqCst);
    }
    CPU_COUNT.store(cpus.count().max(1), Ordering::SeqCst);
}

/// How many CPUs the device tree lists.
pub fn count() -> usize {
    CPU_COUNT.load(Ordering::SeqCst)
}

/// The MPIDR affinity of CPU `index`.
pub fn mpidr_of(index: usize) -> u32 {
    CPU_IDS.get(index).map_or(u32::MAX, |id| id.load(Ordering::SeqCst))
}

/// This CPU's logical index, found from MPIDR; `None` if the device tree
/// does not list it.
pub fn try_current() -> Option<usize> {
    let mpidr = arch::read_mpidr() & MPIDR_AFFINITY_MASK;
    CPU_IDS.iter().take(count()).position(|id| id.load(Ordering::SeqCst) & MPIDR_AFFINITY_MASK == mpidr)
}

/// This CPU's logical index; a CPU the device tree does not list ends the
/// run.
pub fn current() -> usize {
    match try_current() {
        Some(index) => index,
        None => rt::fatal(format_args!("MPIDR {:#010x} is not among the device tree's CPUs", arch::read_mpidr())),
    }
}

/// PSCI CPU_ON with raw arguments.
pub fn psci_cpu_on(mpidr: u32, entry: u32, context_id: u32) -> ReturnCode {
    ReturnCode::from_raw(arch::hvc_call(psci::CPU_ON, mpidr, entry, context_id))
}

/// PSCI AFFINITY_INFO at affinity level 0.
pub fn affinity_info(mpidr: u32) -> psci::AffinityState {
    psci::AffinityState::from_raw(arch::hvc_call(psci::AFFINITY_INFO, mpidr, 0, 0))
}

/// Starts CPU `index` running `main`, with [`context_id`]`(index, tag)`.
pub fn cpu_on(index: usize, tag: u8, main: fn(Secondary)) -> ReturnCode {
    let Some(slot) = MAILBOX.get(index) else {
        return ReturnCode::InvalidParameters;
    };
    slot.store(main as usize, Ordering::SeqCst);
    psci_cpu_on(mpidr_of(index), entry_point(), context_id(index, tag))
}

/// The value a CPU_OFF of CPU `index` returned, if one returned.
pub fn cpu_off_failure(index: usize) -> Option<ReturnCode> {
    if !CPU_OFF_RETURNED.get(index)?.load(Ordering::SeqCst) {
        return None;
    }
    Some(ReturnCode::from_raw(CPU_OFF_RESULT.get(index)?.load(Ordering::SeqCst)))
}

/// A point in time on the virtual counter.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// `millis` milliseconds from now.
    pub fn after_ms(millis: u64) -> Self {
        let freq = u64::from(arch::read_cntfrq());
        Deadline(arch::read_cntvct().saturating_add(freq.saturating_mul(millis) / 1000))
    }

    /// Whether it has passed.
    pub fn passed(self) -> bool {
        arch::read_cntvct() >= self.0
    }
}

/// Polls `done` until it holds or `millis` milliseconds pass; returns
/// whether it held.
pub fn wait_for(millis: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after_ms(millis);
    loop {
        if done() {
            return true;
        }
        if deadline.passed() {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Waits `millis` milliseconds of counter time.
pub fn delay_ms(millis: u64) {
    let deadline = Deadline::after_ms(millis);
    while !deadline.passed() {
        core::hint::spin_loop();
    }
}
