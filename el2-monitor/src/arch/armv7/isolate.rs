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
//! `--on-server-fault` says. Checkpoints are taken every [`LOG_LEN`]
//! requests, so that restoring costs at most that many replays: copying the
//! vGIC server's 17 KB state on every request would cost more than the
//! request itself (see `splitvisor bench`).
//!
//! A server that runs past [`BUDGET_MS`] is stopped by its watchdog: while
//! a request runs, the Hyp timer (otherwise the guest's emulated physical
//! timer, saved and put back around the call) is set to the end of the
//! budget, IRQs are on, and GICC_PMR lets only it and the wake SGI through.
//!
//! Not contained yet: a wild write into the monitor's own memory (that
//! needs each server to run in its own Hyp translation regime; today
//! servers share the monitor's identity map, so such a write lands).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use el2_monitor::validate::{self, InvalidReply};
use ipc::fault::{FaultKind, OnServerFault};
use ipc::{GuestReg, Message, Reply, Server, ServerError, VmConfig};

use tock_registers::interfaces::{Readable, Writeable};

use super::sysreg::{CNTFRQ, CNTHP_CTL, CNTHP_CVAL, CNTPCT, TIMER_CTL};

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
    /// The server ran past its budget ([`BUDGET_MS`]).
    Hang,
}

/// How long one request may take a server before its watchdog (the Hyp
/// timer) stops it, in milliseconds of the physical counter. Requests take
/// microseconds; the margin is for a host that stops QEMU's CPU thread for a
/// while (a false alarm costs a restore and a retry, nothing more).
pub const BUDGET_MS: u64 = 100;

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
            Fault::Hang => write!(f, "ran past its {BUDGET_MS} ms budget (watchdog)"),
        }
    }
}

/// Where a CPU inside a contained call leaves it to.
struct Exit {
    active: AtomicBool,
    /// The stack pointer `contain_call` saved (its callee-saved registers
    /// and return address are just above it).
    sp: AtomicU32,
}

static EXITS: [Exit; MAX_CPUS] = [const { Exit { active: AtomicBool::new(false), sp: AtomicU32::new(0) } }; MAX_CPUS];

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
    @ Hyp timer and the wake SGI through).
    cpsie   i
    blx     r1
    cpsid   i
    mov     r0, #0
    pop     {{r3-r11, pc}}
    .size contain_call, . - contain_call

    @ contain_escape(u32 sp, u32 code): back to contain_call's caller as if
    @ contain_call returned code.
    .global contain_escape
    .type contain_escape, %function
contain_escape:
    cpsid   i
    mov     sp, r0
    mov     r0, r1
    pop     {{r3-r11, pc}}
    .size contain_escape, . - contain_escape
"#
);

extern "C" {
    fn contain_call(sp_slot: *mut u32, f: extern "C" fn(*mut u8), arg: *mut u8) -> u32;
    fn contain_escape(sp: u32, code: u32) -> !;
}

fn cpu() -> usize {
    super::HTPIDR.get() as usize
}

/// Run `f`; a panic or Hyp-mode exception inside it ends it with the fault.
pub fn contained<R, F: FnOnce() -> R>(f: F) -> Result<R, Fault> {
    extern "C" fn trampoline<R, F: FnOnce() -> R>(arg: *mut u8) {
        // SAFETY: `arg` is the `(Option<F>, Option<R>)` below, alive for the
        // whole call and used by nothing else meanwhile.
        let slot = unsafe { &mut *arg.cast::<(Option<F>, Option<R>)>() };
        if let Some(f) = slot.0.take() {
            slot.1 = Some(f());
        }
    }
    let Some(exit) = EXITS.get(cpu()) else {
        return Ok(f());
    };
    let mut slot: (Option<F>, Option<R>) = (Some(f), None);
    let saved = arm_watchdog();
    exit.active.store(true, Ordering::SeqCst);
    // SAFETY: contain_call keeps the AAPCS (it saves what it uses and what
    // an escape skips restoring is restored from its own frame); `slot`
    // outlives the call. After an escape, the frames below contain_call's
    // are abandoned: nothing in them is used again, and what they borrowed
    // (`slot`, the server) is only read after the caller has put it right.
    let code =
        unsafe { contain_call(exit.sp.as_ptr(), trampoline::<R, F>, core::ptr::addr_of_mut!(slot).cast::<u8>()) };
    exit.active.store(false, Ordering::SeqCst);
    disarm_watchdog(saved);
    match (code, slot.1) {
        (0, Some(result)) => Ok(result),
        (0, None) => Err(Fault::Panic),
        (code, _) => Err(Fault::from_code(code)),
    }
}

/// The Hyp timer as the guest's physical-timer emulation left it.
struct HypTimer {
    ctl: u32,
    cval: u64,
}

/// Point the Hyp timer at the end of the budget and let only it (and the
/// wake SGI) interrupt.
fn arm_watchdog() -> HypTimer {
    let saved = HypTimer { ctl: CNTHP_CTL.get(), cval: CNTHP_CVAL.get() };
    let budget = u64::from(CNTFRQ.get()) * BUDGET_MS / 1000;
    CNTHP_CVAL.set(CNTPCT.get().wrapping_add(budget));
    CNTHP_CTL.write(TIMER_CTL::ENABLE::SET);
    super::gic().set_priority_mask(super::devices::PRIORITY_MASK_WATCHDOG);
    saved
}

/// Give the Hyp timer back to the guest's physical-timer emulation.
fn disarm_watchdog(saved: HypTimer) {
    super::gic().set_priority_mask(super::devices::PRIORITY_MASK_ALL);
    CNTHP_CVAL.set(saved.cval);
    CNTHP_CTL.set(saved.ctl);
}

/// An IRQ taken in Hyp mode, which only happens while a server runs: the
/// watchdog ends the server; a wake SGI (left over from a lock wait) is
/// dropped. Nothing is logged here: the interrupted server may hold the
/// log's lock (the logger masks IRQs, so it cannot, but no need to rely
/// on it).
pub fn irq_in_server() {
    let vm = super::vm();
    let Some(intid) = vm.gic.acknowledge() else {
        return;
    };
    if intid == vm.table.irqs.hyp_timer {
        CNTHP_CTL.write(TIMER_CTL::IMASK::SET);
        vm.gic.deactivate(intid);
        escape(Fault::Hang);
        return;
    }
    vm.gic.deactivate(intid);
}

/// If this CPU is inside a contained call, leave it with `fault` (from the
/// panic handler and the Hyp fault vectors); otherwise return.
pub fn escape(fault: Fault) {
    let Some(exit) = EXITS.get(cpu()) else {
        return;
    };
    if exit.active.swap(false, Ordering::SeqCst) {
        super::logger::mute(false);
        // SAFETY: `sp` is the stack pointer contain_call saved on this CPU
        // for the call still running (active was set): its frame is intact
        // above it, since everything since ran below it on the same stack.
        unsafe { contain_escape(exit.sp.load(Ordering::SeqCst), fault.code()) }
    }
}

/// Requests a server handles between checkpoints.
pub const LOG_LEN: usize = 32;

/// A server with what it takes to restore it.
pub struct Guarded<S> {
    server: S,
    /// Taken at the first request (not at construction: the VM's set-up
    /// builds every server on the boot stack, and a second copy of the
    /// vGIC server there would not fit).
    checkpoint: Option<S>,
    log: heapless::Vec<Message, LOG_LEN>,
    /// Requests given to the server so far (numbered from 1 for `--inject`).
    delivered: u64,
}

impl<S: Server + Clone> Guarded<S> {
    /// Guard `server` from its initial state.
    pub fn new(server: S) -> Self {
        Guarded { checkpoint: None, server, log: heapless::Vec::new(), delivered: 0 }
    }

    /// Hand `message` to the server, containing what goes wrong.
    pub fn deliver(&mut self, message: &Message, config: &VmConfig) -> Result<Reply, ServerError> {
        if !config.isolation {
            let start = super::profile::now();
            let result = self.server.handle_message(message.clone());
            super::profile::add(cpu(), super::profile::Part::server(S::ID), start);
            return result;
        }
        if self.log.is_full() || self.checkpoint.is_none() {
            self.checkpoint = Some(self.server.clone());
            self.log.clear();
        }
        self.delivered += 1;
        let n = self.delivered;
        let injection = config.faults.iter().find(|i| i.fires(S::ID, n));
        let mut out = None;
        let fault = match attempt(&mut self.server, message, injection.map(|i| i.kind), config, &mut out) {
            Ok(()) => {
                // Cannot fail: a full log was emptied above.
                let _ = self.log.push(message.clone());
                return out.unwrap_or(Err(ServerError::Faulted));
            }
            Err(fault) => fault,
        };
        let started = super::profile::counter();
        log::error!(
            "server {} failed on its message #{n} ({}): {fault}; restoring its state and retrying",
            S::ID.name(),
            message.request_name()
        );
        let again = injection.filter(|i| i.repeat).map(|i| i.kind);
        let second = match self.restore(config) {
            Ok(()) => attempt(&mut self.server, message, again, config, &mut out),
            Err(fault) => Err(fault),
        };
        match second {
            Ok(()) => {
                let _ = self.log.push(message.clone());
                log::error!(
                    "server {} recovered: message #{n} done after its state was restored ({} us)",
                    S::ID.name(),
                    super::profile::micros(super::profile::counter().wrapping_sub(started))
                );
                out.unwrap_or(Err(ServerError::Faulted))
            }
            Err(fault) => {
                // Put the state back to before the message: it was not
                // carried out.
                let restored = self.restore(config);
                match config.on_server_fault {
                    OnServerFault::Restart if restored.is_ok() => {
                        log::error!(
                            "server {} failed on message #{n} again ({fault}); the request is refused and the \
                             guest answered architecturally (--on-server-fault restart)",
                            S::ID.name()
                        );
                        Err(ServerError::Faulted)
                    }
                    _ => {
                        log::error!(
                            "server {} failed on message #{n} again ({fault}); stopping the VM \
                             (--on-server-fault stop, or its state could not be restored)",
                            S::ID.name()
                        );
                        super::shutdown(ipc::exit::SERVER_FAULT)
                    }
                }
            }
        }
    }

    /// The checkpoint, then the requests since, with logging muted (the
    /// server said all it had to say the first time).
    fn restore(&mut self, config: &VmConfig) -> Result<(), Fault> {
        // Always there: taken before the first request.
        if let Some(checkpoint) = &self.checkpoint {
            self.server = checkpoint.clone();
        }
        super::logger::mute(true);
        let mut result = Ok(());
        let mut out = None;
        for message in &self.log {
            if let Err(fault) = attempt(&mut self.server, message, None, config, &mut out) {
                result = Err(fault);
                break;
            }
        }
        super::logger::mute(false);
        result
    }
}

/// One contained request, with an injected fault if asked; its answer is
/// left in `out` (written there in place: a reply is over 600 bytes, and
/// each move of it costs more than the containment). A refusal
/// (`Err(ServerError)`) is an answer, not a fault.
fn attempt<S: Server>(
    server: &mut S,
    message: &Message,
    inject: Option<FaultKind>,
    config: &VmConfig,
    out: &mut Option<Result<Reply, ServerError>>,
) -> Result<(), Fault> {
    *out = None;
    let start = super::profile::now();
    let outcome = contained(|| {
        if inject == Some(FaultKind::Panic) {
            injected_panic(S::ID);
        }
        if inject == Some(FaultKind::Hang) {
            loop {
                core::hint::spin_loop();
            }
        }
        *out = Some(server.handle_message(message.clone()));
    });
    super::profile::add(cpu(), super::profile::Part::server(S::ID), start);
    outcome?;
    if inject == Some(FaultKind::BadReply) {
        // A register that does not exist: what a corrupted reply looks like.
        *out =
            Some(Reply::of(&[ipc::Action::SetReg { reg: GuestReg::Gpr(0x7f), value: 0 }]).map_err(ServerError::from));
    }
    match out {
        Some(Ok(reply)) => validate::check(reply, config).map_err(Fault::InvalidReply),
        Some(Err(_)) => Ok(()),
        // The closure ran to its end, so it wrote its answer.
        None => Err(Fault::Panic),
    }
}

#[inline(never)]
fn injected_panic(server: ipc::ServerId) -> ! {
    panic!("fault injected into server {} (--inject)", server.name())
}
