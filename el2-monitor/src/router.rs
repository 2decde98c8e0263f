//! The router: which server owns a trap, and the delivery loop.
//!
//! A trap becomes one [`Message`] for its owner: an access to the guest's
//! distributor goes to the vGIC server, a timer register or a timer
//! interrupt to the timer server, a maintenance interrupt or a kick to the
//! vGIC server, everything else to the vCPU server. The reply's `Send`
//! actions are delivered in turn (breadth first, bounded); a `Kick` of the
//! vCPU being handled becomes a `Sync` with a fresh list-register status
//! before the guest re-enters; every other action goes to the hardware.

use ipc::msg::{LrStatus, MAX_INPUT_BYTES};
use ipc::transport::EventQueue;
use ipc::{
    Action, ActionRef, DeviceRegion, Message, Reply, ServerError, ServerId, TimerIntids, Trap, TrapMsg, VcpuId,
    VcpuRequest, VgicRequest, VtimerRequest,
};

/// The physical interrupts the monitor owns, as the platform's device tree
/// and the monitor's own choices name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysIrqs {
    /// The GIC maintenance interrupt.
    pub maintenance: u16,
    /// The SGI the monitor sends to kick another CPU.
    pub kick: u16,
    /// The SGI that woke a CPU sleeping on a lock: it only ends a WFI, and
    /// one still pending on the way back to the guest is dropped here.
    pub wake: u16,
    /// The virtual timer's PPI (it stays active while the guest handles
    /// the virtual interrupt it stands for; it is deactivated when the vGIC
    /// server asks, with `DeactivatePhysical`, never by the router).
    pub vtimer: u16,
    /// The Hyp timer's PPI.
    pub hyp_timer: u16,
    /// The PPI of the monitor's watchdog tick (the physical timer): the
    /// monitor's own, nothing to deliver.
    pub watchdog: u16,
    /// The physical UART's SPI.
    pub uart: u16,
}

/// What the router needs to know to pick a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTable {
    /// The guest's distributor window.
    pub gicd: DeviceRegion,
    /// The physical interrupts.
    pub irqs: PhysIrqs,
}

/// CP15 CRn (MCR/MRC) and CRm (MCRR/MRRC) of the generic timer registers.
const CP15_TIMER_CR: u8 = 14;

/// The hardware side of delivery: what the router reads from, and where the
/// actions that are not messages go. Implemented by the arch code on bare
/// metal and by fakes in tests.
pub trait Hardware {
    /// The physical counter now.
    fn now(&self) -> u64;
    /// This CPU's list-register status.
    fn lr_status(&self) -> LrStatus;
    /// Read up to `buf.len()` bytes the physical UART has received.
    fn console_input(&mut self, buf: &mut [u8]) -> usize;
    /// Carry out an action for the vCPU being handled.
    fn apply(&mut self, action: ActionRef<'_>);
}

/// The servers, reached by message.
pub trait Servers {
    /// Deliver one message; its reply is written into `reply`, all of it
    /// (what was there before is gone). On an error, `reply` means nothing.
    /// (An out-parameter rather than a result: a reply is about 300 bytes,
    /// and each move of it was a copy on every trap.)
    fn call(&mut self, message: &Message, reply: &mut Reply) -> Result<(), ServerError>;

    /// The VM's timer interrupts: what a refused `Fired` releases (see
    /// [`refusal_answer`]).
    fn timer(&self) -> TimerIntids;
}

/// How many messages one trap may cause before the router stops following
/// `Send`s (a loop between servers is a bug, not a reason to hang).
pub const MAX_MESSAGES_PER_TRAP: usize = 16;

/// The kinds of trap counted for `--stats`, by name.
pub const TRAP_KINDS: [&str; 13] =
    ["hvc", "smc", "mmio", "dabt", "pabt", "cp15", "cp15w", "wfi", "wfe", "irq", "hyptimer", "unknown", "skipped"];

/// The index in [`TRAP_KINDS`] of a trap (`None` counts a trap the
/// monitor skipped without a server).
pub fn trap_kind(trap: Option<&Trap>) -> usize {
    trap.map_or(Trap::KINDS, |t| usize::from(t.kind()))
}

const _: () = assert!(TRAP_KINDS.len() == Trap::KINDS + 1, "a name for each kind of trap, and for a skipped one");

/// Counters for `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Traps, per kind ([`TRAP_KINDS`]).
    pub traps: [u64; TRAP_KINDS.len()],
    /// Messages delivered, per server ([`ipc::ServerId::index`]).
    pub messages: [u64; 3],
    /// Requests a server refused.
    pub refused: u64,
    /// Messages dropped because a trap caused too many.
    pub dropped: u64,
    /// Counter ticks spent, per [`PROFILE_PARTS`] (zero unless the monitor
    /// is built with its `profile` feature).
    pub ticks: [u64; PROFILE_PARTS.len()],
}

/// What the `profile` build measures, in physical-counter ticks (under
/// `splitvisor bench`, one tick is one instruction): `hyp` is everything
/// from the Rust trap handler's first instruction to its last (the entry
/// and exit code around it are not in it), servers included and `idle`
/// excluded; `vcpu`, `vgic` and `vtimer` the time inside each server's
/// `handle`, with isolation the domain switches and the call's containment
/// included; `idle` the time a vCPU's CPU slept in WFI for it; `lock` the
/// time a CPU slept waiting for a lock another CPU held (a server's, or the
/// UART's); `uart` the time spent writing the guest's console output and
/// the log to the UART (the host link). `lock` and `uart` are inside `hyp`
/// too.
pub const PROFILE_PARTS: [&str; 7] = ["hyp", "vcpu", "vgic", "vtimer", "idle", "lock", "uart"];

impl Stats {
    /// Add another set of counters to these (the shutdown's sum of every
    /// CPU's).
    pub fn add(&mut self, other: &Stats) {
        for (t, o) in self.traps.iter_mut().zip(other.traps) {
            *t += o;
        }
        for (t, o) in self.messages.iter_mut().zip(other.messages) {
            *t += o;
        }
        self.refused += other.refused;
        self.dropped += other.dropped;
        for (t, o) in self.ticks.iter_mut().zip(other.ticks) {
            *t += o;
        }
    }
}

/// Where the delivery loop counts what it does: [`Stats`] on the host, the
/// monitor's per-CPU counters on bare metal (added to in place, so that a
/// delivery costs no copy and no sum of a whole [`Stats`]).
pub trait Counters {
    /// A message was delivered to `server`.
    fn message(&mut self, server: ServerId);
    /// A server refused a request.
    fn refused(&mut self);
    /// `n` messages were dropped.
    fn dropped(&mut self, n: u64);
}

impl Counters for Stats {
    fn message(&mut self, server: ServerId) {
        self.messages[server.index()] += 1;
    }

    fn refused(&mut self) {
        self.refused += 1;
    }

    fn dropped(&mut self, n: u64) {
        self.dropped += n;
    }
}

impl core::fmt::Display for Stats {
    /// `key=value` pairs, the form `splitvisor --stats` parses.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (server, n) in ipc::ServerId::ALL.iter().zip(self.messages) {
            write!(f, "msg.{}={n} ", server.name())?;
        }
        for (kind, n) in TRAP_KINDS.iter().zip(self.traps) {
            write!(f, "trap.{kind}={n} ")?;
        }
        write!(f, "refused={} dropped={}", self.refused, self.dropped)?;
        if self.ticks.iter().any(|&t| t != 0) {
            for (part, n) in PROFILE_PARTS.iter().zip(self.ticks) {
                write!(f, " ticks.{part}={n}")?;
            }
        }
        Ok(())
    }
}

/// The console's receive room as the vCPU server last reported it
/// (`Action::ConsoleReady`), kept by report number.
///
/// Replies are applied after the server's lock is released, so the replies
/// of two requests handled on two CPUs can be applied in the other order
/// than the server gave them. Only a newer report (by its number, compared
/// as wrapping) replaces the room: an older room of 0 applied over a newer
/// one would stop console input for good, since the server reports only
/// changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleRoom {
    /// The number of the report kept (none yet: any report is newer).
    report: Option<u32>,
    /// Bytes the console can take (0 until the first report).
    room: u8,
}

impl ConsoleRoom {
    /// No report yet: no room.
    pub const fn new() -> Self {
        ConsoleRoom { report: None, room: 0 }
    }

    /// Take report number `report` of `room` bytes if it is newer than the
    /// one kept; whether it was.
    pub fn offer(&mut self, room: u8, report: u32) -> bool {
        if self.report.is_some_and(|kept| !ipc::msg::is_newer(report, kept)) {
            return false;
        }
        *self = ConsoleRoom { report: Some(report), room };
        true
    }

    /// Bytes the console can take now.
    pub fn room(&self) -> u8 {
        self.room
    }
}

/// The outcome of routing one trap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Deliver this message.
    Deliver(Message),
    /// Nothing to deliver (a physical interrupt with no owner, or console
    /// input with no bytes).
    Nothing,
}

/// Pick the server and build its message for a trap.
pub fn route(table: &RouteTable, trap: &TrapMsg, hw: &mut impl Hardware) -> Routed {
    let mut message = first_message(table, trap.vcpu, trap.trap, trap.pc, trap.cpsr, hw);
    if route_in_place(table, &mut message, hw) {
        Routed::Deliver(message)
    } else {
        Routed::Nothing
    }
}

/// The message a trap of vCPU `vcpu`, the one `hw` runs, starts as, for
/// [`route_in_place`] to finish: a distributor access is the vGIC server's
/// `Mmio` request, a WFI its `Wfi` request, and anything else the vCPU
/// server's `Trap` request (which `route_in_place` turns into another
/// server's request for a timer register or an interrupt).
///
/// The message is complete (as [`complete`] would make it): the two that
/// carry the list-register status get it here, where the kind of trap is
/// already known, so that [`Delivery::run_completed`] can deliver it
/// without looking at its kind again (on a distributor access, that look
/// and its call were some fifteen instructions).
#[inline(always)]
pub fn first_message(table: &RouteTable, vcpu: VcpuId, trap: Trap, pc: u32, cpsr: u32, hw: &impl Hardware) -> Message {
    match trap {
        Trap::Mmio(access) if table.gicd.contains(access.ipa) => {
            Message::Vgic(VgicRequest::Mmio { vcpu, access, status: Some(hw.lr_status()) })
        }
        // Whether the vCPU may wait is the vGIC server's to say, and it
        // steps past the WFI too: the vCPU server would only pass it on (one
        // message more each time a vCPU goes idle).
        Trap::Wfi => Message::Vgic(VgicRequest::Wfi { vcpu, status: hw.lr_status() }),
        _ => Message::Vcpu(VcpuRequest::Trap(TrapMsg { vcpu, trap, pc, cpsr })),
    }
}

/// [`route`] where the message lies: `message` comes as [`first_message`]
/// built it, which most traps stay (the vCPU server's and the
/// distributor's), and is rewritten for the others (complete, as
/// [`first_message`]'s); false when there is nothing to deliver. (The trap
/// path builds its message once, where it is delivered from: returned, it
/// was copied whole, some twenty instructions a trap.)
#[inline(always)]
pub fn route_in_place(table: &RouteTable, message: &mut Message, hw: &mut impl Hardware) -> bool {
    let Message::Vcpu(VcpuRequest::Trap(TrapMsg { vcpu, trap, .. })) = message else {
        return true;
    };
    let vcpu = *vcpu;
    *message = match *trap {
        Trap::Cp15(access) if access.crn == CP15_TIMER_CR => {
            Message::Vtimer(VtimerRequest::Cp15 { vcpu, access, now: hw.now() })
        }
        Trap::Cp15Wide(access) if access.crm == CP15_TIMER_CR => {
            Message::Vtimer(VtimerRequest::Cp15Wide { vcpu, access, now: hw.now() })
        }
        Trap::HypTimer => {
            Message::Vtimer(VtimerRequest::Fired { vcpu, timer: ipc::msg::TimerKind::Physical, now: hw.now() })
        }
        Trap::Irq { intid } => match route_irq(table, vcpu, intid, hw) {
            Some(routed) => routed,
            None => return false,
        },
        _ => return true,
    };
    true
}

fn route_irq(table: &RouteTable, vcpu: VcpuId, intid: u16, hw: &mut impl Hardware) -> Option<Message> {
    let irqs = &table.irqs;
    Some(if intid == irqs.maintenance {
        Message::Vgic(VgicRequest::Maintenance { vcpu, status: hw.lr_status() })
    } else if intid == irqs.wake || intid == irqs.watchdog {
        return None;
    } else if intid == irqs.kick {
        Message::Vgic(VgicRequest::Sync { vcpu, status: hw.lr_status() })
    } else if intid == irqs.vtimer {
        Message::Vtimer(VtimerRequest::Fired { vcpu, timer: ipc::msg::TimerKind::Virtual, now: hw.now() })
    } else if intid == irqs.hyp_timer {
        Message::Vtimer(VtimerRequest::Fired { vcpu, timer: ipc::msg::TimerKind::Physical, now: hw.now() })
    } else if intid == irqs.uart {
        let mut buf = [0u8; MAX_INPUT_BYTES];
        let n = hw.console_input(&mut buf);
        if n == 0 {
            return None;
        }
        // Cannot fail: n is at most the capacity.
        let bytes = ipc::msg::InputBytes::from_slice(buf.get(..n).unwrap_or_default()).unwrap_or_default();
        Message::Vcpu(VcpuRequest::ConsoleInput { bytes })
    } else {
        log::warn!("physical interrupt {intid} has no owner");
        return None;
    })
}

/// Whether the monitor deactivates a physical interrupt once it has been
/// delivered: everything but the virtual timer, whose deactivation waits
/// until the guest has finished the virtual interrupt (the vGIC server then
/// asks for it with `DeactivatePhysical`), so that it cannot fire again
/// meanwhile.
pub fn monitor_deactivates(table: &RouteTable, intid: u16) -> bool {
    intid != table.irqs.vtimer
}

/// The delivery loop for one trap (or one event) of vCPU `vcpu`.
pub struct Delivery<'a, S: Servers, H: Hardware, C: Counters = Stats> {
    /// The servers.
    pub servers: &'a mut S,
    /// The hardware.
    pub hw: &'a mut H,
    /// Counters.
    pub stats: &'a mut C,
    /// The vCPU being handled.
    pub vcpu: VcpuId,
}

/// The architectural answer to a trap whose server refused it (also what
/// `splitvisor replay --isolate process` answers for a message its server
/// failed on twice, so that a replay answers as the monitor does): a trap
/// with a faulting address gets an external abort on that address, a
/// trapped instruction (HVC, SMC, CP15, an unknown class) an undefined
/// instruction exception, WFI and WFE complete (they may complete at any
/// time), a hardware-backed line raised has its physical interrupt
/// released, and so has the virtual timer's `Fired` (`timer` says which
/// physical interrupt that is), the virtual timer masked for a `Pend` is
/// unmasked, and other notifications get nothing.
pub fn refusal_answer(message: &Message, timer: &TimerIntids) -> Option<Action> {
    match message {
        Message::Vcpu(VcpuRequest::Trap(t)) => Some(match t.trap {
            Trap::Mmio(m) => Action::InjectDataAbort { far: m.far },
            Trap::DataAbortNoSyndrome { far, .. } => Action::InjectDataAbort { far },
            Trap::PrefetchAbort { far, .. } => Action::InjectPrefetchAbort { far },
            Trap::Irq { .. } | Trap::HypTimer => return None,
            // Either may complete at any time.
            Trap::Wfi | Trap::Wfe => Action::AdvancePc,
            _ => Action::InjectUndef,
        }),
        Message::Vgic(VgicRequest::Mmio { access, .. }) => Some(Action::InjectDataAbort { far: access.far }),
        Message::Vgic(VgicRequest::Wfi { .. }) => Some(Action::AdvancePc),
        Message::Vtimer(VtimerRequest::Cp15 { .. } | VtimerRequest::Cp15Wide { .. }) => Some(Action::InjectUndef),
        // A physical interrupt the vGIC server would have had deactivated
        // once the guest finished it: the virtual interrupt is lost, but its
        // source is released, so that it can fire again (a timer that
        // stayed active would never tick on that CPU again).
        Message::Vgic(VgicRequest::SetLine { level: true, hw: Some(physical), .. }) => {
            Some(Action::DeactivatePhysical { intid: *physical })
        }
        // The virtual timer, masked to be delivered by this `Pend`: unmasked
        // again, so that it fires again (the guest would never unmask a
        // timer whose tick it did not see).
        Message::Vgic(VgicRequest::Pend { masked_timer: true, .. }) => {
            Some(Action::SetVirtualTimerMask { masked: false })
        }
        // The virtual timer's physical interrupt, left active for the
        // vtimer server's answer: released, so that it fires again and is
        // reported anew (left active, that CPU's timer would never fire
        // again).
        Message::Vtimer(VtimerRequest::Fired { timer: ipc::msg::TimerKind::Virtual, .. }) => {
            Some(Action::DeactivatePhysical { intid: timer.host_virt })
        }
        _ => None,
    }
}

impl<S: Servers, H: Hardware, C: Counters> Delivery<'_, S, H, C> {
    /// Deliver `first` and everything its replies send; apply the rest.
    ///
    /// Kept lean, since it runs on every trap: each message is completed in
    /// place and lent to the server, the reply's actions are read where they
    /// lie, and only a `Send`'s message is copied (into the queue).
    pub fn run(&mut self, mut first: Message) {
        self.run_with(&mut first, &mut Reply::none());
    }

    /// [`Delivery::run`], with `first` completed and delivered where it
    /// lies and `reply` as the buffer each server's reply is written into
    /// (what it holds before is overwritten): the monitor keeps one per
    /// CPU, which saves building a new one (a clear of all its 300 bytes)
    /// on every trap, and passes the trap's message by reference, which
    /// saves moving it (some 60 bytes) twice more.
    pub fn run_with(&mut self, first: &mut Message, reply: &mut Reply) {
        complete_in_place(first, self.vcpu, self.hw);
        self.run_completed(first, reply);
    }

    /// [`Delivery::run_with`] for a `first` that is complete already (as
    /// [`first_message`] and [`route_in_place`] build a trap's, or one that
    /// [`complete`] leaves as it is, such as a `Start`): the messages its
    /// replies send are completed as they come.
    pub fn run_completed(&mut self, first: &mut Message, reply: &mut Reply) {
        let mut queue: EventQueue<MAX_MESSAGES_PER_TRAP> = EventQueue::new();
        self.step(first, &mut queue, reply);
        let mut delivered = 1;
        while let Some(mut message) = queue.pop() {
            if delivered == MAX_MESSAGES_PER_TRAP {
                log::error!(
                    "vcpu{}: more than {MAX_MESSAGES_PER_TRAP} messages for one trap; dropping {message:?}",
                    self.vcpu.0
                );
                self.stats.dropped(1 + queue.len() as u64);
                break;
            }
            delivered += 1;
            complete_in_place(&mut message, self.vcpu, self.hw);
            self.step(&mut message, &mut queue, reply);
        }
    }

    /// Deliver one complete message and apply its reply (queueing what it
    /// sends).
    #[inline(always)]
    fn step(&mut self, message: &mut Message, queue: &mut EventQueue<MAX_MESSAGES_PER_TRAP>, reply: &mut Reply) {
        let server = message.server();
        self.stats.message(server);
        // One look at the level for both lines (each `debug!` loads it).
        let debug = log::max_level() >= log::LevelFilter::Debug;
        if debug {
            log::debug!("vcpu{} -> {}: {:?}", self.vcpu.0, server.name(), message);
        }
        if let Err(e) = self.servers.call(message, reply) {
            self.refused(message, e);
            return;
        }
        if debug {
            log::debug!("vcpu{} <- {}: {:?}", self.vcpu.0, server.name(), reply.actions);
        }
        let mut sync_self = false;
        for action in reply.actions.views() {
            match action {
                ActionRef::Kick { vcpu } if vcpu == self.vcpu => sync_self = true,
                ActionRef::Send(m) => self.enqueue(queue, *m),
                // The commonest action, spelled out: with its own arm the
                // compiler no longer stores every action to the stack before
                // the match, as the out-of-line ones need (about ten
                // instructions a trap; an arm for `SetReg` or
                // `WriteListRegister` as well cost more than it saved).
                ActionRef::AdvancePc => self.hw.apply(ActionRef::AdvancePc),
                _ => self.hw.apply(action),
            }
        }
        if sync_self {
            let sync = Message::Vgic(VgicRequest::Sync { vcpu: self.vcpu, status: self.hw.lr_status() });
            self.enqueue(queue, sync);
        }
    }

    fn enqueue(&mut self, queue: &mut EventQueue<MAX_MESSAGES_PER_TRAP>, message: Message) {
        if let Err(m) = queue.push(message) {
            log::error!("router queue full; dropping {m:?}");
            self.stats.dropped(1);
        }
    }

    /// A server refused `message`: answer the guest architecturally.
    #[cold]
    fn refused(&mut self, message: &Message, e: ServerError) {
        self.stats.refused();
        let server = message.server();
        if let Some(answer) = refusal_answer(message, &self.servers.timer()) {
            log::warn!("vcpu{}: {} refused {message:?}: {e}; answering {answer:?}", self.vcpu.0, server.name());
            self.hw.apply(answer.as_view());
        } else {
            log::error!("vcpu{}: {} refused {message:?}: {e}", self.vcpu.0, server.name());
        }
    }
}

/// Fill in what only the monitor knows in a message about to be delivered
/// while it handles vCPU `current` on its CPU: an `Idle` request gets the
/// list-register status of this CPU, and so do a distributor access by
/// `current` and a change of one of `current`'s private lines (those of
/// another vCPU, whose list registers are on another CPU, get none).
pub fn complete(mut message: Message, current: VcpuId, hw: &impl Hardware) -> Message {
    complete_in_place(&mut message, current, hw);
    message
}

/// [`complete`], on the message where it is.
pub fn complete_in_place(message: &mut Message, current: VcpuId, hw: &impl Hardware) {
    match message {
        Message::Vgic(VgicRequest::Mmio { vcpu, status, .. }) => {
            *status = (*vcpu == current).then(|| hw.lr_status());
        }
        Message::Vgic(VgicRequest::Idle { status, .. } | VgicRequest::Wfi { status, .. }) => *status = hw.lr_status(),
        Message::Vgic(VgicRequest::SetLine { intid, target, status, .. }) => {
            complete_line(*intid, target, status, current, hw)
        }
        Message::Vgic(VgicRequest::Pend { intid, target, status, .. }) => {
            complete_line(*intid, target, status, current, hw)
        }
        _ => {}
    }
}

/// A line's change (or a `Pend`) comes with the status of its own vCPU
/// when that is the private line of the one handled; an SPI's with the
/// status of the vCPU handled, named in `target`.
#[inline(always)]
fn complete_line(
    intid: ipc::IntId,
    target: &mut Option<VcpuId>,
    status: &mut Option<LrStatus>,
    current: VcpuId,
    hw: &impl Hardware,
) {
    if *target != Some(current) {
        if !intid.is_spi() {
            *status = None;
            return;
        }
        *target = Some(current);
    }
    *status = Some(hw.lr_status());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::{AccessSize, Cp15Access, MmioAccess, ServerId, VcpuId};

    #[derive(Default)]
    struct FakeHw {
        applied: Vec<Action>,
        console: Vec<u8>,
        now: u64,
    }

    impl Hardware for FakeHw {
        fn now(&self) -> u64 {
            self.now
        }
        fn lr_status(&self) -> LrStatus {
            LrStatus { elrsr: 0xf, ..LrStatus::default() }
        }
        fn console_input(&mut self, buf: &mut [u8]) -> usize {
            let n = self.console.len().min(buf.len());
            buf[..n].copy_from_slice(&self.console[..n]);
            self.console.drain(..n);
            n
        }
        fn apply(&mut self, action: ActionRef<'_>) {
            self.applied.push(action.to_action());
        }
    }

    /// Servers scripted by a function of the message.
    struct Script<F: FnMut(&Message) -> Result<Reply, ServerError>> {
        seen: Vec<Message>,
        answer: F,
    }

    impl<F: FnMut(&Message) -> Result<Reply, ServerError>> Servers for Script<F> {
        fn call(&mut self, message: &Message, reply: &mut Reply) -> Result<(), ServerError> {
            self.seen.push(*message);
            *reply = (self.answer)(message)?;
            Ok(())
        }

        fn timer(&self) -> TimerIntids {
            TimerIntids::ARCHITECTED
        }
    }

    fn table() -> RouteTable {
        RouteTable {
            gicd: DeviceRegion { base: 0x0800_0000, size: 0x1000 },
            irqs: PhysIrqs { maintenance: 25, kick: 0, wake: 1, vtimer: 27, hyp_timer: 26, watchdog: 30, uart: 33 },
        }
    }

    fn trap(t: Trap) -> TrapMsg {
        TrapMsg { vcpu: VcpuId(1), trap: t, pc: 0x4000_0000, cpsr: 0x13 }
    }

    fn mmio(ipa: u64) -> Trap {
        Trap::Mmio(MmioAccess {
            ipa,
            far: ipa as u32,
            size: AccessSize::Word,
            write: false,
            value: 0,
            rt: 2,
            sign_extend: false,
        })
    }

    fn routed(t: Trap, hw: &mut FakeHw) -> Routed {
        route(&table(), &trap(t), hw)
    }

    #[test]
    fn routes_by_owner() {
        let mut hw = FakeHw { now: 77, ..FakeHw::default() };
        let server = |r: Routed| match r {
            Routed::Deliver(m) => Some(m.server()),
            Routed::Nothing => None,
        };
        assert_eq!(server(routed(mmio(0x0800_0ffc), &mut hw)), Some(ServerId::Vgic));
        assert_eq!(server(routed(mmio(0x0800_1000), &mut hw)), Some(ServerId::Vcpu));
        assert_eq!(server(routed(mmio(0x0900_0000), &mut hw)), Some(ServerId::Vcpu));
        let cp15 = |crn| Trap::Cp15(Cp15Access { opc1: 0, crn, crm: 2, opc2: 1, write: false, rt: 0, value: 0 });
        assert_eq!(server(routed(cp15(14), &mut hw)), Some(ServerId::Vtimer));
        assert_eq!(server(routed(cp15(1), &mut hw)), Some(ServerId::Vcpu));
        assert_eq!(server(routed(Trap::Hvc { imm: 0, args: [0; 4] }, &mut hw)), Some(ServerId::Vcpu));
        // A WFI is the vGIC server's, with this CPU's status.
        assert_eq!(
            routed(Trap::Wfi, &mut hw),
            Routed::Deliver(Message::Vgic(VgicRequest::Wfi { vcpu: VcpuId(1), status: hw.lr_status() }))
        );
        assert_eq!(server(routed(Trap::Wfe, &mut hw)), Some(ServerId::Vcpu));
        assert_eq!(server(routed(Trap::Irq { intid: 25 }, &mut hw)), Some(ServerId::Vgic));
        assert_eq!(server(routed(Trap::Irq { intid: 0 }, &mut hw)), Some(ServerId::Vgic));
        assert_eq!(
            routed(Trap::Irq { intid: 27 }, &mut hw),
            Routed::Deliver(Message::Vtimer(VtimerRequest::Fired {
                vcpu: VcpuId(1),
                timer: ipc::msg::TimerKind::Virtual,
                now: 77
            }))
        );
        assert_eq!(server(routed(Trap::HypTimer, &mut hw)), Some(ServerId::Vtimer));
        assert_eq!(routed(Trap::Irq { intid: 99 }, &mut hw), Routed::Nothing);
        // A lock's wake SGI only ends a WFI: no server hears of it.
        assert_eq!(routed(Trap::Irq { intid: 1 }, &mut hw), Routed::Nothing);
    }

    #[test]
    fn console_interrupt_carries_the_bytes() {
        let mut hw = FakeHw { console: b"hello, world, and more".to_vec(), ..FakeHw::default() };
        match routed(Trap::Irq { intid: 33 }, &mut hw) {
            Routed::Deliver(Message::Vcpu(VcpuRequest::ConsoleInput { bytes })) => {
                assert_eq!(&bytes[..], b"hello, world, an")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(hw.console, b"d more");
        hw.console.clear();
        assert_eq!(routed(Trap::Irq { intid: 33 }, &mut hw), Routed::Nothing);
    }

    #[test]
    fn sends_are_followed_and_kick_of_self_syncs() {
        let mut hw = FakeHw::default();
        let mut stats = Stats::default();
        let mut servers = Script {
            seen: Vec::new(),
            answer: |m: &Message| {
                Ok(match m {
                    Message::Vcpu(_) => Reply::of(&[
                        Action::AdvancePc,
                        Action::Send(Message::Vgic(VgicRequest::SetLine {
                            intid: ipc::IntId(33),
                            level: true,
                            target: None,
                            hw: None,
                            change: 0,
                            status: None,
                        })),
                    ])
                    .unwrap(),
                    Message::Vgic(VgicRequest::SetLine { .. }) => {
                        Reply::of(&[Action::Kick { vcpu: VcpuId(1) }, Action::Kick { vcpu: VcpuId(0) }]).unwrap()
                    }
                    Message::Vgic(VgicRequest::Sync { .. }) => {
                        Reply::of(&[Action::WriteListRegister { index: 0, value: 0x1000_0021 }]).unwrap()
                    }
                    _ => Reply::none(),
                })
            },
        };
        Delivery { servers: &mut servers, hw: &mut hw, stats: &mut stats, vcpu: VcpuId(1) }
            .run(Message::Vcpu(VcpuRequest::Trap(trap(mmio(0x0900_0000)))));
        assert_eq!(servers.seen.len(), 3);
        assert!(
            matches!(servers.seen[2], Message::Vgic(VgicRequest::Sync { vcpu: VcpuId(1), status }) if status.elrsr == 0xf)
        );
        assert_eq!(
            hw.applied,
            vec![
                Action::AdvancePc,
                Action::Kick { vcpu: VcpuId(0) },
                Action::WriteListRegister { index: 0, value: 0x1000_0021 }
            ]
        );
        assert_eq!(stats.messages, [1, 2, 0]);
    }

    #[test]
    fn a_private_line_of_the_vcpu_handled_carries_its_status() {
        let hw = FakeHw::default();
        let line = |target, status| {
            Message::Vgic(VgicRequest::SetLine {
                intid: ipc::IntId(27),
                level: true,
                target,
                hw: Some(ipc::IntId(27)),
                change: 0,
                status,
            })
        };
        let status_of = |m: Message| match m {
            Message::Vgic(VgicRequest::SetLine { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        assert!(status_of(complete(line(Some(VcpuId(1)), None), VcpuId(1), &hw)).is_some_and(|s| s.elrsr == 0xf));
        // Another vCPU's line, or none named: no status (whatever a sender
        // put).
        assert_eq!(status_of(complete(line(Some(VcpuId(0)), Some(LrStatus::default())), VcpuId(1), &hw)), None);
        assert_eq!(status_of(complete(line(None, Some(LrStatus::default())), VcpuId(1), &hw)), None);
    }

    #[test]
    fn an_spi_s_change_carries_the_status_of_the_vcpu_handled() {
        let hw = FakeHw::default();
        for sent in [None, Some(VcpuId(0))] {
            let line = VgicRequest::SetLine {
                intid: ipc::IntId(33),
                level: true,
                target: sent,
                hw: None,
                change: 4,
                status: None,
            };
            match complete(Message::Vgic(line), VcpuId(1), &hw) {
                Message::Vgic(VgicRequest::SetLine { intid, level, target, hw: None, change, status }) => {
                    assert_eq!((intid, level, change), (ipc::IntId(33), true, 4));
                    assert_eq!(target, Some(VcpuId(1)));
                    assert!(status.is_some_and(|s| s.elrsr == 0xf), "{status:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// What `route` builds is complete: `Delivery::run_completed` delivers
    /// a trap's message as `route` gives it.
    #[test]
    fn routed_messages_are_complete() {
        let cp15 = |crn| Trap::Cp15(Cp15Access { opc1: 0, crn, crm: 2, opc2: 1, write: false, rt: 0, value: 0 });
        let traps = [
            mmio(0x0800_0100),
            mmio(0x0900_0000),
            cp15(14),
            cp15(1),
            Trap::Hvc { imm: 0, args: [0; 4] },
            Trap::Wfi,
            Trap::Wfe,
            Trap::HypTimer,
            Trap::Irq { intid: 25 },
            Trap::Irq { intid: 0 },
            Trap::Irq { intid: 27 },
        ];
        for t in traps {
            let mut hw = FakeHw { now: 77, ..FakeHw::default() };
            let Routed::Deliver(m) = routed(t, &mut hw) else {
                panic!("{t:?} is delivered");
            };
            assert_eq!(complete(m, VcpuId(1), &hw), m, "{t:?}");
        }
    }

    #[test]
    fn distributor_accesses_carry_the_list_register_status() {
        let mut hw = FakeHw::default();
        let Routed::Deliver(routed) = routed(mmio(0x0800_0100), &mut hw) else {
            panic!("a distributor access is delivered");
        };
        // Routed on the accessing vCPU's CPU: with that CPU's status.
        let Message::Vgic(VgicRequest::Mmio { access, status: Some(status), .. }) = routed else {
            panic!("{routed:?}");
        };
        assert_eq!(status.elrsr, 0xf);
        // Completed on the accessing vCPU's CPU: that CPU's status.
        let mine = Message::Vgic(VgicRequest::Mmio { vcpu: VcpuId(1), access, status: None });
        assert!(
            matches!(complete(mine, VcpuId(1), &hw), Message::Vgic(VgicRequest::Mmio { status: Some(s), .. }) if s.elrsr == 0xf)
        );
        // This CPU's status says nothing about another vCPU's list registers.
        let other = Message::Vgic(VgicRequest::Mmio { vcpu: VcpuId(0), access, status: Some(LrStatus::default()) });
        assert_eq!(
            complete(other, VcpuId(1), &hw),
            Message::Vgic(VgicRequest::Mmio { vcpu: VcpuId(0), access, status: None })
        );
    }

    #[test]
    fn an_older_console_room_report_never_replaces_a_newer_one() {
        let mut c = ConsoleRoom::new();
        assert_eq!(c.room(), 0);
        assert!(c.offer(16, 1));
        // Report 3 (room 0) and report 4 (room 5) applied the other way round.
        assert!(c.offer(5, 4));
        assert!(!c.offer(0, 3));
        assert_eq!(c.room(), 5);
        // A report seen twice changes nothing.
        assert!(!c.offer(7, 4));
        assert_eq!(c.room(), 5);
        // Across the wrap of the numbers.
        let mut c = ConsoleRoom::new();
        assert!(c.offer(1, u32::MAX - 1));
        assert!(c.offer(2, 1));
        assert!(!c.offer(3, u32::MAX));
        assert_eq!(c.room(), 2);
    }

    #[test]
    fn stats_add_up_and_print_as_pairs() {
        let mut a = Stats::default();
        a.traps[trap_kind(Some(&Trap::Wfi))] += 2;
        a.messages[1] = 3;
        let mut b = Stats { refused: 1, ..Stats::default() };
        b.traps[trap_kind(None)] = 5;
        b.add(&a);
        let text = b.to_string();
        assert!(text.starts_with("msg.vcpu=0 msg.vgic=3 msg.vtimer=0 trap.hvc=0 "), "{text}");
        assert!(text.contains(" trap.wfi=2 "), "{text}");
        assert!(text.contains(" trap.skipped=5 "), "{text}");
        assert!(text.ends_with("refused=1 dropped=0"), "{text}");
    }

    #[test]
    fn refused_traps_get_an_architected_answer() {
        let mut hw = FakeHw::default();
        let mut stats = Stats::default();
        let mut servers = Script { seen: Vec::new(), answer: |_: &Message| Err(ServerError::Unexpected) };
        let mut run = |m: Message, hw: &mut FakeHw| {
            Delivery { servers: &mut servers, hw, stats: &mut stats, vcpu: VcpuId(1) }.run(m);
        };
        run(Message::Vcpu(VcpuRequest::Trap(trap(mmio(0x0a00_0000)))), &mut hw);
        run(Message::Vcpu(VcpuRequest::Trap(trap(Trap::Wfi))), &mut hw);
        run(Message::Vgic(VgicRequest::Wfi { vcpu: VcpuId(1), status: LrStatus::default() }), &mut hw);
        run(Message::Vcpu(VcpuRequest::Trap(trap(Trap::Hvc { imm: 0, args: [0; 4] }))), &mut hw);
        run(
            Message::Vgic(VgicRequest::Mmio {
                status: None,
                vcpu: VcpuId(1),
                access: MmioAccess {
                    ipa: 0x0800_0000,
                    far: 0xc000_0000,
                    size: AccessSize::Word,
                    write: true,
                    value: 1,
                    rt: 0,
                    sign_extend: false,
                },
            }),
            &mut hw,
        );
        run(Message::Vgic(VgicRequest::Start { vcpu: VcpuId(1), list_registers: 4 }), &mut hw);
        use ipc::IntId;
        let timer = |hw| VgicRequest::SetLine {
            intid: IntId(27),
            level: true,
            target: Some(VcpuId(1)),
            hw,
            change: 0,
            status: None,
        };
        run(Message::Vgic(timer(Some(IntId(27)))), &mut hw);
        run(Message::Vgic(timer(None)), &mut hw);
        let pend =
            |masked_timer| VgicRequest::Pend { intid: IntId(27), target: Some(VcpuId(1)), status: None, masked_timer };
        run(Message::Vgic(pend(true)), &mut hw);
        run(Message::Vgic(pend(false)), &mut hw);
        let fired = |timer| VtimerRequest::Fired { vcpu: VcpuId(1), timer, now: 9 };
        run(Message::Vtimer(fired(ipc::msg::TimerKind::Virtual)), &mut hw);
        run(Message::Vtimer(fired(ipc::msg::TimerKind::Physical)), &mut hw);
        assert_eq!(
            hw.applied,
            vec![
                Action::InjectDataAbort { far: 0x0a00_0000 },
                // A WFI may complete at any time: stepped past, whichever
                // server refused it.
                Action::AdvancePc,
                Action::AdvancePc,
                Action::InjectUndef,
                Action::InjectDataAbort { far: 0xc000_0000 },
                // The timer's physical PPI is released.
                Action::DeactivatePhysical { intid: IntId(27) },
                // The timer masked for its `Pend` is unmasked.
                Action::SetVirtualTimerMask { masked: false },
                // The virtual timer's `Fired`: its physical interrupt (the
                // configuration's) is released; the Hyp timer's needs
                // nothing.
                Action::DeactivatePhysical { intid: IntId(27) },
            ]
        );
        assert_eq!(stats.refused, 12);
    }

    #[test]
    fn a_message_loop_is_cut_off() {
        let mut hw = FakeHw::default();
        let mut stats = Stats::default();
        let ping = Message::Vgic(VgicRequest::Idle { vcpu: VcpuId(0), status: LrStatus::default() });
        let mut servers = Script {
            seen: Vec::new(),
            answer: |m: &Message| Ok(Reply::of(&[Action::Send(*m), Action::Send(*m)]).unwrap()),
        };
        Delivery { servers: &mut servers, hw: &mut hw, stats: &mut stats, vcpu: VcpuId(0) }.run(ping);
        assert_eq!(servers.seen.len(), MAX_MESSAGES_PER_TRAP);
        assert!(stats.dropped > 0);
        // Idle requests get the real list-register status filled in.
        assert!(matches!(servers.seen[1], Message::Vgic(VgicRequest::Idle { status, .. }) if status.elrsr == 0xf));
    }
}
