//! Containment of a failing server, and its recovery.
//!
//! Every request to a server runs inside [`contained`]: if the server
//! panics, or executes an undefined instruction, or takes a prefetch or data
//! abort in Hyp mode, the panic handler or the Hyp fault vector leaves the
//! server's frames through [`escape`] and the call returns the fault
//! instead of stopping the monitor. A reply is then checked by
//! `el2_monitor::validate`; one that fails counts as a fault too.
//!
//! [`Guarded`] wraps each server: it keeps a copy of the server's state (the
//! checkpoint) and the requests it handled since, and after a fault it
//! restores the state exactly as it was before the failed request (the
//! checkpoint, then the logged requests replayed with logging muted) and
//! retries the request once. A request that fails again is answered as
//! `--on-server-fault` says. Checkpoints are taken every
//! `ipc::Containment::checkpoint_every` requests (`run --checkpoint-every`,
//! 128 by default), so that restoring costs at most that many replays:
//! copying the vGIC server's 17 KB state on every request would cost more
//! than the request itself (see `splitvisor bench`).
//!
//! A server that runs past its budget (`ipc::Containment::budget_ms`, `run
//! --budget-ms`, 100 ms by default) is stopped by its watchdog: each
//! CPU's physical timer (the non-secure PL1 one, CNTP, which the guest never
//! reaches: its physical-timer accesses trap and are emulated on the Hyp
//! timer) ticks every half budget; while a request runs, IRQs are on, and a
//! tick that finds the request running for a budget or more ends it. So a
//! hang is caught between one budget and one and a half after it began. The
//! call itself only notes when it began: reprogramming a timer around every
//! request, as an earlier version did with the Hyp timer, was cheap in
//! instructions but under QEMU cost more host time than all the rest of a
//! request (each timer write reschedules a QEMU timer).
//!
//! Any other interrupt that comes while a request runs (the guest's timer,
//! a kick) belongs to the trap path, after the request: the first one
//! masks itself and its kind (GICC_PMR down to the watchdog's tick and the
//! wake SGI) without being acknowledged, and the mask is lifted when the
//! call ends, so that it is taken as usual. The mask is lowered only then,
//! not around every request, as an earlier version did: each GICC_PMR write
//! makes QEMU's GIC recompute every CPU's pending interrupts under its big
//! lock, and two a request were a third of all the device accesses of a
//! Linux boot and its largest host-time cost besides the guest's own.
//!
//! With protection domains on (the default; `--no-domains` turns them
//! off), each request runs in its server's own Hyp translation and on its
//! stack (see `domain`): a wild access outside the server's domain is a
//! Hyp abort, contained like the rest, and changes nothing. Without them
//! the server runs on the monitor's stack and translation, and a wild
//! write lands (an injected one is detected and stops the VM).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use el2_monitor::validate::{self, InvalidReply};
use ipc::fault::{FaultKind, OnServerFault};
use ipc::{GuestReg, Message, Reply, ServerError, VmConfig};

use tock_registers::interfaces::{Readable, Writeable};

use super::sysreg::{CNTFRQ, CNTPCT, CNTP_CTL, CNTP_CVAL, TIMER_CTL};

use super::domain::{self, Hosted, Injected, Keep};
use super::MAX_CPUS;

/// How a contained call ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The server panicked.
    Panic,
    /// An undefined instruction in the server.
    Undefined,
    /// An SVC in the server.
    Svc,
    /// A prefetch abort in the server.
    PrefetchAbort,
    /// A data abort in the server.
    DataAbort,
    /// The server's reply failed validation.
    InvalidReply(InvalidReply),
    /// The server ran past its budget (`ipc::Containment::budget_ms`).
    Hang,
}

/// The watchdog's tick, in counter ticks: half the budget of
/// `ipc::Containment::budget_ms`, set by [`start_watchdog`] (kept rather
/// than divided out on every tick). Requests take microseconds; the
/// default budget's margin is for a host that stops QEMU's CPU thread for a
/// while (a false alarm costs a restore and a retry, nothing more).
static TICK_PERIOD: AtomicU32 = AtomicU32::new(0);

impl Fault {
    const fn code(self) -> u32 {
        match self {
            Fault::Panic => 1,
            Fault::Undefined => 2,
            Fault::Svc => 3,
            Fault::PrefetchAbort => 4,
            Fault::DataAbort => 5,
            Fault::InvalidReply(_) => 6,
            Fault::Hang => 7,
        }
    }

    fn from_code(code: u32) -> Fault {
        match code {
            2 => Fault::Undefined,
            3 => Fault::Svc,
            4 => Fault::PrefetchAbort,
            5 => Fault::DataAbort,
            7 => Fault::Hang,
            _ => Fault::Panic,
        }
    }

    /// The fault of a Hyp-mode exception vector (`monitor_fault`'s kind).
    pub fn of_vector(kind: u32) -> Fault {
        match kind {
            1 => Fault::Undefined,
            2 => Fault::Svc,
            3 => Fault::PrefetchAbort,
            _ => Fault::DataAbort,
        }
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Fault::Panic => write!(f, "panic"),
            Fault::Undefined => write!(f, "undefined instruction"),
            Fault::Svc => write!(f, "SVC"),
            Fault::PrefetchAbort => write!(f, "prefetch abort"),
            Fault::DataAbort => write!(f, "data abort"),
            Fault::InvalidReply(why) => write!(f, "invalid reply: {why}"),
            Fault::Hang => {
                write!(f, "ran past its {} ms budget (watchdog)", super::vm().config.containment.budget_ms)
            }
        }
    }
}

/// Per CPU: inside a contained call.
static EXIT_ACTIVE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the stack pointer `contain_call`/`domain_call` saved (their
/// callee-saved registers and return address are just above it). The
/// fault vectors (`boot.rs`) read it to leave a domain.
pub(super) static EXIT_SP: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

core::arch::global_asm!(
    r#"
    .section .text.splitvisor_contain, "ax"
    .arm

    @ u32 contain_call(u32 *sp_slot, void (*f)(void *), void *arg):
    @ saves the callee-saved registers and the return address, stores the
    @ stack pointer in *sp_slot and calls f(arg); returns 0 when f returns.
    .global contain_call
    .type contain_call, %function
contain_call:
    @ r3 only pads the frame to 40 bytes: the AAPCS keeps SP 8-aligned.
    push    {{r3-r11, lr}}
    str     sp, [r0]
    mov     r0, r2
    @ IRQs on while the server runs: its watchdog (GICC_PMR lets only the
    @ watchdog's tick and the wake SGI through).
    cpsie   i
    blx     r1
    cpsid   i
    mov     r0, #0
    pop     {{r3-r11, pc}}
    .size contain_call, . - contain_call

    @ u32 domain_call(u32 *sp_slot, void (*f)(void *), void *domain,
    @                 u32 httbr): as contain_call, but f(domain) runs in a
    @ protection domain: with HTTBR = httbr (the domain's tables) and on the
    @ domain's stack, its first {stack} bytes. Hyp stage 1 has no ASIDs, so
    @ each switch invalidates this CPU's Hyp TLB.
    .global domain_call
    .type domain_call, %function
domain_call:
    push    {{r3-r11, lr}}
    str     sp, [r0]
    mov     r4, r0
    mov     r5, r1
    mov     r6, r2
    mov     r0, r3
    bl      set_hyp_translation             @ the domain's tables
    add     sp, r6, #{stack}
    mov     r0, r6
    cpsie   i
    blx     r5
    cpsid   i
    ldr     r0, ={monitor_tables}
    bl      set_hyp_translation             @ the monitor's tables
    ldr     sp, [r4]
    mov     r0, #0
    pop     {{r3-r11, pc}}
    .size domain_call, . - domain_call

    @ set_hyp_translation(u32 tables): HTTBR = tables (below 4 GiB), then
    @ invalidate this CPU's Hyp TLB. Uses r0 and r1 only, and no stack (the
    @ fault vectors call it when the stack may be what faulted).
    .global set_hyp_translation
    .type set_hyp_translation, %function
set_hyp_translation:
    mov     r1, #0
    dsb     ish
    mcrr    p15, 4, r0, r1, c2              @ HTTBR
    isb
    mcr     p15, 4, r1, c8, c7, 0           @ TLBIALLH
    dsb     nsh
    isb
    bx      lr
    .size set_hyp_translation, . - set_hyp_translation

    @ contain_escape(u32 sp, u32 code): back to contain_call's (or
    @ domain_call's) caller as if it returned code. The translation is the
    @ monitor's already.
    .global contain_escape
    .type contain_escape, %function
contain_escape:
    cpsid   i
    mov     sp, r0
    mov     r0, r1
    pop     {{r3-r11, pc}}
    .size contain_escape, . - contain_escape
"#,
    stack = const super::domain::STACK_SIZE,
    monitor_tables = sym super::mmu::HYP_L1,
);

extern "C" {
    fn contain_call(sp_slot: *mut u32, f: extern "C" fn(*mut u8), arg: *mut u8) -> u32;
    fn domain_call(sp_slot: *mut u32, f: extern "C" fn(*mut u8), domain: *mut u8, httbr: u32) -> u32;
    fn contain_escape(sp: u32, code: u32) -> !;
}

fn cpu() -> usize {
    super::HTPIDR.get() as usize
}

/// Run server `S` on its domain's inbox (`domain::serve`), in its
/// protection domain or, with `in_domain` false, on this CPU's stack in the
/// monitor's translation; a panic or Hyp-mode exception inside it ends it
/// with the fault.
fn contained<S: Hosted>(in_domain: bool) -> Result<(), Fault> {
    let cpu = cpu();
    let (Some(active), Some(sp)) = (EXIT_ACTIVE.get(cpu), EXIT_SP.get(cpu)) else {
        // HTPIDR is below MAX_CPUS on every CPU the monitor starts.
        return Err(Fault::Panic);
    };
    let domain = S::slot().cast::<u8>();
    if let Some(start) = CALL_START.get(cpu) {
        // The low word: the watchdog looks at spans far below its wrap.
        start.store(CNTPCT.get() as u32, Ordering::Relaxed);
    }
    // Relaxed, as the other per-CPU flags here: only this CPU reads them
    // (the panic handler, the fault vectors and `irq_in_server`, in an
    // exception taken inside the call, which sees this CPU's earlier
    // stores), and the calls below are opaque to the compiler. (SeqCst cost
    // two barriers a store, four a request.)
    active.store(true, Ordering::Relaxed);
    // SAFETY: contain_call and domain_call keep the AAPCS (they save what
    // they use, and what an escape skips restoring is restored from their
    // own frame). After an escape, the frames below theirs are abandoned:
    // nothing in them is used again, and the domain they worked on is only
    // read after the caller has put it right. S's lock is held, so no other
    // CPU uses the domain. With `in_domain`, the domain's tables map the
    // code, the domain (whose first STACK_SIZE bytes are the stack
    // domain_call switches to) and nothing the call needs besides; they
    // live below 4 GiB (HTTBR's high word is 0).
    let code = unsafe {
        if in_domain {
            domain_call(sp.as_ptr(), domain::serve::<S>, domain, domain::translation::<S>() as u32)
        } else {
            contain_call(sp.as_ptr(), domain::serve::<S>, domain)
        }
    };
    active.store(false, Ordering::Relaxed);
    if let Some(masked) = MASKED.get(cpu).filter(|m| m.load(Ordering::Relaxed)) {
        masked.store(false, Ordering::Relaxed);
        super::gic().set_priority_mask(super::devices::PRIORITY_MASK_ALL);
    }
    match code {
        0 => Ok(()),
        code => Err(Fault::from_code(code)),
    }
}

/// When the request running on each CPU began: the low word of the
/// physical counter.
static CALL_START: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Whether an interrupt for the trap path came while the request running on
/// each CPU ran, and GICC_PMR was lowered to keep it (and its like) out
/// until the request ends (only that CPU reads or writes its flag).
static MASKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The watchdog's tick, in counter ticks: half a budget.
fn tick_period() -> u32 {
    TICK_PERIOD.load(Ordering::Relaxed)
}

/// Start this CPU's watchdog tick (when isolation is on), for a budget of
/// `budget_ms` (every CPU is given the same).
pub fn start_watchdog(budget_ms: u16) {
    // Half a budget: at most 1,000 ms (`ipc::Containment::MAX_BUDGET_MS`),
    // so under 2^31 ticks at any counter frequency up to 2 GHz, and two of
    // them compare as 32-bit spans in `overran`.
    let ticks = u64::from(CNTFRQ.get()) * u64::from(budget_ms) / 2000;
    TICK_PERIOD.store(u32::try_from(ticks).unwrap_or(u32::MAX / 2).max(1), Ordering::Relaxed);
    watchdog_tick();
    CNTP_CTL.write(TIMER_CTL::ENABLE::SET);
}

/// A watchdog tick was taken: the next one in half a budget. (The timer's
/// output is a level: until the compare value moves, it stays asserted.)
pub fn watchdog_tick() {
    CNTP_CVAL.set(CNTPCT.get().wrapping_add(u64::from(tick_period())));
}

/// Per CPU: how long the last request its watchdog stopped had run, in
/// counter ticks (for the log's report of the hang).
static HUNG_FOR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Whether the request running on this CPU began a budget ago or more (and
/// if so, note how long ago in `HUNG_FOR`).
fn overran(cpu: usize) -> bool {
    let (Some(start), Some(hung_for)) = (CALL_START.get(cpu), HUNG_FOR.get(cpu)) else {
        return false;
    };
    let elapsed = (CNTPCT.get() as u32).wrapping_sub(start.load(Ordering::Relaxed));
    let over = elapsed >= 2 * tick_period();
    if over {
        hung_for.store(elapsed, Ordering::Relaxed);
    }
    over
}

/// What the log adds to a fault on this CPU: for a hang, how long the
/// request had run when its watchdog stopped it.
fn fault_detail(fault: Fault, cpu: usize) -> impl core::fmt::Display {
    struct Detail(Option<u64>);
    impl core::fmt::Display for Detail {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Some(us) => write!(f, ", stopped {}.{:03} ms after it began", us / 1000, us % 1000),
                None => Ok(()),
            }
        }
    }
    let hung_for = HUNG_FOR.get(cpu).filter(|_| fault == Fault::Hang);
    Detail(hung_for.map(|t| super::profile::micros(u64::from(t.load(Ordering::Relaxed)))))
}

/// An IRQ taken in Hyp mode, which only happens while a server runs (the
/// vector sends it here, on the server's stack): a watchdog tick ends a
/// server that has run for its budget, and is otherwise only re-armed; a
/// wake SGI (left over from a lock wait) is dropped. Any other interrupt is
/// the trap path's: it is left pending, and GICC_PMR keeps it out until the
/// request ends (see the module's notes). Nothing is logged here: the
/// interrupted server may hold the log's lock (the logger masks IRQs, so it
/// cannot, but no need to rely on it).
pub extern "C" fn irq_in_server() {
    // The server may be in its domain, where the GIC and the VM are not
    // mapped: first back to the monitor's translation.
    let domain = domain::leave();
    let vm = super::vm();
    let irqs = &vm.table.irqs;
    match vm.gic.highest_pending() {
        // The wake SGI has the highest priority and the tick the next, so
        // GICC_HPPIR names one of them whenever it is pending.
        Some(intid) if intid == irqs.watchdog || intid == irqs.wake => {
            if let Some(taken) = vm.gic.acknowledge() {
                vm.gic.deactivate(taken);
                if taken == irqs.watchdog {
                    watchdog_tick();
                    if overran(cpu()) {
                        escape(Fault::Hang);
                    }
                }
            }
        }
        // The trap path's, or gone again (spurious): masked either way, so
        // that a line still raised cannot bring the CPU back here at once.
        _ => {
            if let Some(masked) = MASKED.get(cpu()) {
                masked.store(true, Ordering::Relaxed);
            }
            vm.gic.set_priority_mask(super::devices::PRIORITY_MASK_WATCHDOG);
        }
    }
    domain::reenter(domain);
}

/// A Hyp abort or undefined instruction inside a protection domain: the
/// vector has switched back to the monitor's translation and to this CPU's
/// stack below the contained call's frame. `kind` is the vector's
/// (`monitor_fault`'s numbering), `httbr` the domain's translation.
pub extern "C" fn domain_fault(kind: u32, httbr: u32) -> ! {
    let server = domain::server_of(u64::from(httbr));
    let fault = Fault::of_vector(kind);
    let elr = super::sysreg::elr_hyp();
    let name = server.map_or("?", |s| s.name());
    match fault {
        Fault::DataAbort => {
            let far = super::HDFAR.get();
            log::error!(
                "server {name}: data abort at {elr:#x} on {far:#x} (HSR {:#x}), in {}: outside its protection domain",
                super::HSR.get(),
                domain::describe(far, server)
            );
        }
        Fault::PrefetchAbort => {
            let far = super::HIFAR.get();
            log::error!(
                "server {name}: prefetch abort at {far:#x} (HSR {:#x}), in {}",
                super::HSR.get(),
                domain::describe(far, server)
            );
        }
        _ => log::error!("server {name}: {fault} at {elr:#x}"),
    }
    escape(fault);
    super::fatal("a fault inside a protection domain, outside any contained call")
}

/// If this CPU is inside a contained call, leave it with `fault` (from the
/// panic handler and the Hyp fault vectors); otherwise return.
pub fn escape(fault: Fault) {
    let cpu = cpu();
    let (Some(active), Some(sp)) = (EXIT_ACTIVE.get(cpu), EXIT_SP.get(cpu)) else {
        return;
    };
    if active.swap(false, Ordering::SeqCst) {
        super::logger::mute(false);
        // SAFETY: `sp` is the stack pointer contain_call (or domain_call)
        // saved on this CPU for the call still running (active was set):
        // its frame is intact above it, since everything since ran below
        // it on the same stack, or on the domain's stack. The caller is in
        // the monitor's translation (the panic handler and the vectors
        // switch first).
        unsafe { contain_escape(sp.load(Ordering::SeqCst), fault.code()) }
    }
}

/// The most requests a server handles between checkpoints
/// (`ipc::Containment::checkpoint_every` is at most this): the room each
/// server's log of requests takes, in its `domain::Keep` (64 KB).
///
/// A checkpoint copies the server's whole state (the vGIC server's is 17
/// KB, about 1,400 instructions of copying since its arrays are copied as
/// blocks) and a restore replays up to the interval's requests, so the
/// interval trades every request's share of the copy against the rare
/// recovery's replay: at 128 the copy is about 11 instructions of each
/// vGIC request, at 1 about 1,400; a recovery under QEMU took 1.2-5.0 ms at
/// 128 and up to 25 ms at 1,024 (`tests/experiments/isolation`), inside
/// the default 100 ms watchdog budget.
pub const LOG_CAPACITY: usize = ipc::Containment::MAX_CHECKPOINT_EVERY as usize;

/// A server (its state in its domain, see `domain`) with what it takes to
/// restore it (its `domain::Keep`: a checkpoint, taken at the first
/// request, and the requests since), kept in the monitor's memory, out of
/// the server's reach.
pub struct Guarded<S> {
    /// Requests given to the server so far (numbered from 1 for `--inject`).
    delivered: u64,
    /// Requests still to deliver before the next checkpoint: 0 at first, so
    /// that the first request's is taken before it runs. (Counted here,
    /// next to `delivered`, rather than read from the log's length and the
    /// configuration, which lie kilobytes apart: that cost four
    /// instructions a request more.)
    until_checkpoint: u16,
    server: core::marker::PhantomData<S>,
}

impl<S: Hosted> Guarded<S> {
    /// Guard `server` from its initial state, placing it in its domain.
    /// `None` if S already has one (there is one of each server).
    pub fn new(server: S) -> Option<Self> {
        domain::install(server).ok()?;
        Some(Guarded { delivered: 0, until_checkpoint: 0, server: core::marker::PhantomData })
    }

    /// What the monitor keeps to restore the server.
    fn keep(&mut self) -> &mut Keep<S> {
        // SAFETY: `new` installed S's domain, which initialised its keep,
        // and only this Guarded (the one of S) reaches it, through `&mut
        // self`: under S's lock.
        unsafe { &mut *S::keep() }
    }

    /// Where the checkpoint lies (the target of injected wild writes).
    fn checkpoint_address() -> usize {
        // SAFETY: only the field's address is taken.
        unsafe { core::ptr::addr_of!((*S::keep()).checkpoint) as usize }
    }

    /// The server's state.
    fn server(&mut self) -> &mut S {
        // SAFETY: `new` installed S's domain, and only this Guarded (the
        // one of S) reaches it, through `&mut self`: under S's lock, and
        // never while the server runs.
        unsafe { &mut (*S::slot()).server }
    }

    /// Hand `message` to the server, containing what goes wrong; its reply
    /// is written into `reply`.
    ///
    /// Only the path every request takes is here, so that it stays small
    /// where it is inlined (the router's delivery loop): taking a
    /// checkpoint, injecting faults and recovering are functions of their
    /// own, out of line. (Inlined, their copies of the server's state made
    /// the loop's stack frame 72 KB, and the loop spent a hundred
    /// instructions a trap setting up addresses into it.)
    #[inline(always)]
    pub fn deliver(&mut self, message: &Message, config: &VmConfig, reply: &mut Reply) -> Result<(), ServerError> {
        if !config.isolation {
            return super::call_in_place(self.server(), message, reply);
        }
        if self.until_checkpoint == 0 {
            self.take_checkpoint(config.containment.checkpoint_every);
        }
        // At least 1 here: `take_checkpoint` sets it to the interval.
        self.until_checkpoint -= 1;
        self.delivered += 1;
        if !config.faults.is_empty() {
            return self.deliver_injected(message, config, reply);
        }
        match attempt::<S>(message, None, 0, config, reply) {
            Ok(answer) => {
                // Cannot fail: see `take_checkpoint`.
                let _ = self.keep().log.push(*message);
                answer
            }
            Err(fault) => self.recover(message, fault, None, config, reply),
        }
    }

    /// A copy of the server's state to restore from, and an empty log; the
    /// next one after `every` more requests. (The configuration is
    /// validated: `every` is 1 to the log's capacity, so the log, which
    /// grows by at most one a request, is never full before it is emptied.)
    #[cold]
    #[inline(never)]
    fn take_checkpoint(&mut self, every: u16) {
        self.until_checkpoint = every.clamp(1, LOG_CAPACITY as u16);
        // SAFETY: as in `server` and `keep`: S's domain and keep are
        // installed and only reached through this Guarded, under S's lock;
        // they are distinct statics, so the two references do not overlap.
        let (server, keep) = unsafe { (&(*S::slot()).server, &mut *S::keep()) };
        match &mut keep.checkpoint {
            // In place: a server's `clone_from` may copy its state without
            // building the copy aside first (the vGIC server's does).
            Some(copy) => copy.clone_from(server),
            None => keep.checkpoint = Some(server.clone()),
        }
        keep.log.clear();
    }

    /// [`Guarded::deliver`] when faults are to be injected (`--inject`).
    #[inline(never)]
    fn deliver_injected(&mut self, message: &Message, config: &VmConfig, reply: &mut Reply) -> Result<(), ServerError> {
        let n = self.delivered;
        let injection = config.faults.iter().find(|i| i.fires(S::ID, n));
        let target = Self::checkpoint_address();
        let wild = injection.is_some_and(|i| i.kind == FaultKind::WildWrite);
        let before = wild.then(|| self.checkpoint_hash());
        let first = attempt::<S>(message, injection.map(|i| i.kind), target, config, reply);
        if let Some(before) = before {
            self.check_wild_write(before, target, config);
        }
        match first {
            Ok(answer) => {
                // Cannot fail: see `take_checkpoint`.
                let _ = self.keep().log.push(*message);
                answer
            }
            Err(fault) => {
                let again = injection.filter(|i| i.repeat).map(|i| i.kind);
                self.recover(message, fault, again, config, reply)
            }
        }
    }

    /// The server failed on `message` with `fault`: restore its state and
    /// retry once (injecting `again`, if asked); if that fails too, refuse
    /// the request or stop the VM, as `--on-server-fault` says.
    #[cold]
    #[inline(never)]
    fn recover(
        &mut self,
        message: &Message,
        fault: Fault,
        again: Option<FaultKind>,
        config: &VmConfig,
        reply: &mut Reply,
    ) -> Result<(), ServerError> {
        let n = self.delivered;
        let target = Self::checkpoint_address();
        let started = super::profile::counter();
        log::error!(
            "server {} failed on its message #{n} ({}): {fault}{}; restoring its state and retrying",
            S::ID.name(),
            message.request_name(),
            fault_detail(fault, cpu())
        );
        // What the restore replays: the requests since the last checkpoint.
        let replayed = self.keep().log.len();
        let before = (again == Some(FaultKind::WildWrite)).then(|| self.checkpoint_hash());
        let second = match self.restore(config) {
            Ok(()) => attempt::<S>(message, again, target, config, reply),
            Err(fault) => Err(fault),
        };
        if let Some(before) = before {
            self.check_wild_write(before, target, config);
        }
        match second {
            Ok(answer) => {
                let _ = self.keep().log.push(*message);
                log::error!(
                    "server {} recovered: message #{n} done after its state was restored ({} us, {replayed} \
                     requests replayed)",
                    S::ID.name(),
                    super::profile::micros(super::profile::counter().wrapping_sub(started))
                );
                answer
            }
            Err(fault) => {
                // Put the state back to before the message: it was not
                // carried out.
                let restored = self.restore(config);
                match config.on_server_fault {
                    OnServerFault::Restart if restored.is_ok() => {
                        log::error!(
                            "server {} failed on message #{n} again ({fault}{}); the request is refused and the \
                             guest answered architecturally (--on-server-fault restart)",
                            S::ID.name(),
                            fault_detail(fault, cpu())
                        );
                        Err(ServerError::Faulted)
                    }
                    _ => {
                        log::error!(
                            "server {} failed on message #{n} again ({fault}{}); stopping the VM \
                             (--on-server-fault stop, or its state could not be restored)",
                            S::ID.name(),
                            fault_detail(fault, cpu())
                        );
                        super::shutdown(ipc::exit::SERVER_FAULT)
                    }
                }
            }
        }
    }

    /// A hash of the checkpoint's bytes (the target of injected wild
    /// writes: the copy the server would be restored from, the worst place
    /// for a wild write to land).
    fn checkpoint_hash(&self) -> u32 {
        let start = Self::checkpoint_address();
        super::mem::fnv1a_words(start, core::mem::size_of::<Option<S>>() / 4)
    }

    /// After an injected wild write at `target`: the checkpoint must be as
    /// it was. With protection domains the store faulted and this says
    /// so; without them it landed, the monitor's state can no longer be
    /// trusted, and the VM stops.
    fn check_wild_write(&self, before: u32, target: usize, config: &VmConfig) {
        let after = self.checkpoint_hash();
        if after == before {
            log::error!(
                "server {}: its wild write to {target:#x} (its checkpoint, in the monitor's memory) changed nothing \
                 there: checkpoint hash {after:#010x} before and after",
                S::ID.name()
            );
            return;
        }
        log::error!(
            "server {}: its wild write to {target:#x} landed in the monitor's memory (its checkpoint hash went from \
             {before:#010x} to {after:#010x}){}; stopping the VM, whose state can no longer be trusted",
            S::ID.name(),
            if config.domains { "" } else { ": protection domains are off (--no-domains)" }
        );
        super::shutdown(ipc::exit::SERVER_FAULT)
    }

    /// The checkpoint, then the requests since, with logging muted (the
    /// server said all it had to say the first time).
    fn restore(&mut self, config: &VmConfig) -> Result<(), Fault> {
        // SAFETY: as in `take_checkpoint`.
        let (server, keep) = unsafe { (&mut (*S::slot()).server, &*S::keep()) };
        // Always there: taken before the first request. (In place, as the
        // checkpoint was taken.)
        if let Some(copy) = &keep.checkpoint {
            server.clone_from(copy);
        }
        super::logger::mute(true);
        let mut result = Ok(());
        // The replies were applied the first time: only the state counts.
        let mut scratch = Reply::none();
        for message in &self.keep().log {
            if let Err(fault) = attempt::<S>(message, None, 0, config, &mut scratch) {
                result = Err(fault);
                break;
            }
        }
        super::logger::mute(false);
        result
    }
}

/// One contained request, with an injected fault if asked (a wild write
/// aims at `target`); its answer: a reply, copied into `reply` (only what it
/// holds, see `Reply::copy_from`), or a refusal (`Err(ServerError)`, an
/// answer, not a fault).
fn attempt<S: Hosted>(
    message: &Message,
    inject: Option<FaultKind>,
    target: usize,
    config: &VmConfig,
    reply: &mut Reply,
) -> Result<Result<(), ServerError>, Fault> {
    let d = S::slot();
    let cpu = cpu();
    // Where the server writes its reply: without protection domains, into
    // `reply` itself; with them, into `reply` through the window when it is
    // this CPU's reply buffer (the usual case), else into its outbox, to be
    // copied out. (`reply` is lent by address: the window's entry is made
    // from it, and `reply_at` holds it otherwise, so the compiler knows the
    // call may write it.)
    let lent: *mut Reply = reply;
    // SAFETY: only the field's address is taken.
    let outbox = unsafe { core::ptr::addr_of_mut!((*d).outbox) };
    let at = if !config.domains {
        lent
    } else if super::is_reply_buffer(cpu, lent) {
        domain::open_window::<S>(lent)
    } else {
        // (The restore's replays, rare.)
        domain::close_window::<S>();
        outbox
    };
    // SAFETY: S's domain is installed (a Guarded of S exists) and S's lock
    // is held: the server is not running and no one else uses the domain.
    unsafe {
        (*d).inbox = Some(*message);
        (*d).answer = None;
        (*d).inject = inject.and_then(|kind| Injected::of(kind, target));
        (*d).reply_at = at;
    }
    let start = super::profile::now();
    let outcome = contained::<S>(config.domains);
    super::profile::add(cpu, super::profile::Part::server(S::ID), start);
    domain::drain_log::<S>();
    outcome?;
    if inject == Some(FaultKind::BadReply) {
        // A register that does not exist: what a corrupted reply looks like.
        reply.clear();
        let _ = reply.push(ipc::Action::SetReg { reg: GuestReg::Gpr(0x7f), value: 0 });
    } else {
        // SAFETY: as above; the call is over (it returned), and the answer
        // and the outbox are only read.
        let answer = unsafe { (*d).answer };
        match answer {
            // SAFETY: as above.
            Some(Ok(())) if at == outbox => reply.copy_from(unsafe { &*outbox }),
            // In place.
            Some(Ok(())) => {}
            Some(Err(refused)) => return Ok(Err(refused)),
            // The server ran to its end, so it wrote its answer.
            None => return Err(Fault::Panic),
        }
    }
    validate::check(reply, config).map_err(Fault::InvalidReply)?;
    Ok(Ok(()))
}
