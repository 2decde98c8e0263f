//! Replies: the short list of actions a server asks the monitor to carry out.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::{IntId, VcpuId};
use crate::msg::Message;
use crate::trap::GuestReg;

/// The most actions one reply can hold: enough for a guest register write
/// that concerns every vCPU (`AdvancePc` and a `Kick` for each of
/// [`crate::MAX_VCPUS`], e.g. a GICD_SGIR naming all eight), with one to
/// spare. The fullest reply still fits in one [`crate::MAX_MESSAGE_SIZE`]
/// envelope (the round-trip tests check it).
pub const MAX_ACTIONS: usize = 10;

/// The most bytes one console write carries, and the most console bytes
/// one reply carries in all.
pub const MAX_CONSOLE_BYTES: usize = 32;

/// Why the VM stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ShutdownReason {
    /// The guest asked to power off (PSCI SYSTEM_OFF).
    PowerOff,
    /// The guest asked to restart (PSCI SYSTEM_RESET).
    Reset,
    /// The VM cannot go on (a server failed, a guest state that cannot be
    /// represented); carries a short code for the report.
    Fault(u32),
}

/// What the guest's accesses trap: decided by the vCPU server, carried out by
/// the monitor (in HCR and related registers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TrapConfig {
    /// Trap WFI.
    pub wfi: bool,
    /// Trap WFE.
    pub wfe: bool,
    /// Trap SMC.
    pub smc: bool,
    /// Trap ACTLR accesses.
    pub actlr: bool,
    /// Trap data/unified cache maintenance by set/way.
    pub set_way: bool,
    /// Trap the guest's physical timer (CNTP_*) and counter (CNTPCT): clears
    /// CNTHCTL.PL1PCEN / PL1PCTEN respectively.
    pub phys_timer: bool,
    /// Trap the physical counter.
    pub phys_counter: bool,
}

/// One thing a server asks for. Unless it names a vCPU, an action applies to
/// the vCPU whose trap is being answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Action {
    /// Write a guest register.
    SetReg {
        /// The register.
        reg: GuestReg,
        /// The value.
        value: u32,
    },
    /// Return past the trapping instruction (the monitor knows its length).
    AdvancePc,
    /// Take an Undefined Instruction exception in the guest.
    InjectUndef,
    /// Take a Data Abort in the guest (external abort on `far`).
    InjectDataAbort {
        /// The faulting virtual address reported in DFAR.
        far: u32,
    },
    /// Take a Prefetch Abort in the guest (external abort on `far`).
    InjectPrefetchAbort {
        /// The faulting virtual address reported in IFAR.
        far: u32,
    },
    /// Clean and invalidate the whole data cache hierarchy of the vCPU's
    /// physical CPU (what a trapped set/way operation is turned into).
    CleanInvalidateDcache,
    /// Write bytes to the VM's console (the physical UART).
    ConsoleWrite {
        /// The bytes, in order.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::heapless_vec))]
        bytes: Vec<u8, MAX_CONSOLE_BYTES>,
    },
    /// Program the trap configuration of the vCPU.
    ConfigureTraps(TrapConfig),
    /// Set the vCPU's virtual counter offset (CNTVOFF).
    SetCntvoff {
        /// The offset subtracted from the physical count.
        value: u64,
    },
    /// Arm the Hyp timer of the vCPU's physical CPU at an absolute physical
    /// count, or disarm it (`None`).
    SetHypTimer {
        /// The compare value, or none.
        deadline: Option<u64>,
    },
    /// Write list register `index` of the vCPU's physical CPU interface.
    WriteListRegister {
        /// The list register.
        index: u8,
        /// The raw GICH_LRn value.
        value: u32,
    },
    /// Write GICH_HCR of the vCPU's physical CPU interface.
    WriteGichHcr {
        /// The raw value.
        value: u32,
    },
    /// Deactivate a physical interrupt the monitor acknowledged (GICC_DIR).
    DeactivatePhysical {
        /// The physical INTID.
        intid: IntId,
    },
    /// Interrupt the physical CPU that runs `vcpu` so that it re-enters the
    /// hypervisor (used when that vCPU's interrupt state changed).
    Kick {
        /// The vCPU to interrupt.
        vcpu: VcpuId,
    },
    /// Start `vcpu` at `entry` in SVC mode, MMU and caches off, with
    /// `context_id` in r0.
    PowerOn {
        /// The vCPU to start.
        vcpu: VcpuId,
        /// The entry address (IPA). As PSCI CPU_ON has it for AArch32, bit 0
        /// set means a Thumb entry point: start in Thumb state at
        /// `entry & !1`.
        entry: u32,
        /// The value for r0.
        context_id: u32,
    },
    /// Stop running the current vCPU until a PowerOn names it.
    PowerOff,
    /// Idle the physical CPU until an interrupt arrives.
    WaitForInterrupt,
    /// Stop the whole VM.
    Shutdown(ShutdownReason),
    /// Deliver a message to another server; its reply is applied in turn.
    Send(Message),
    /// Console flow control: the VM's emulated console can take `room` more
    /// input bytes. The monitor forwards at most `room` bytes in
    /// [`crate::VcpuRequest::ConsoleInput`] until the next `ConsoleReady`
    /// and leaves the rest in the physical UART (whose own FIFO and the
    /// host's flow control then hold the sender), so no typed byte is lost.
    /// The vCPU server sends it in every reply that changes the room (console
    /// input, the guest reading its receive FIFO, a FIFO mode change) and in
    /// its reply to every `Start`; until the first one the monitor assumes 0.
    /// When the room goes from 0 to more, the monitor reads the bytes that
    /// waited in the physical UART (its receive interrupt may not fire again
    /// for them).
    ///
    /// Reports are numbered: the monitor applies a reply after the server's
    /// lock is released, so two CPUs can apply the replies of two requests
    /// in the other order than the server answered them. The monitor keeps
    /// the report with the highest number (compared as wrapping), so that an
    /// older room never overwrites a newer one (an older room of 0 left
    /// behind a newer one would stop the console's input for good: the
    /// server reports only changes).
    ConsoleReady {
        /// Bytes the console can take now.
        room: u8,
        /// The number of this report (1 for the first, then counting up,
        /// wrapping).
        report: u32,
    },
    /// One 32-bit word of the console's read image: what a load of the
    /// console's registers at `offset` (from the start of its register page)
    /// returns while the image is mapped ([`Action::ConsoleImageMap`]).
    ///
    /// The read image spares the guest a trap for each load of its UART
    /// (Linux reads the flag register before every byte it writes): while
    /// every register of the console reads without side effects, the vCPU
    /// server keeps the monitor's copy of those reads up to date and has it
    /// mapped at the console's page, read-only; stores still trap. The page
    /// starts all zeros, and a word keeps its value until the next update.
    ///
    /// Updates are numbered as [`Action::ConsoleReady`]'s reports are, for the
    /// same reason (replies of two CPUs can be applied in the other order):
    /// the monitor keeps, for each word, the value of the update with the
    /// highest `generation`, and likewise for the mapping. A server sends
    /// only the words that changed, so the words of any order of application
    /// end up as the server's newest.
    ConsoleImageWord {
        /// Byte offset of the word in the console's register page (a
        /// multiple of 4, below 4096).
        offset: u16,
        /// What a word load there returns (byte and halfword loads return
        /// their bytes of it, little-endian).
        value: u32,
        /// The number of the update (1 for the first, counting up, wrapping,
        /// never 0).
        generation: u32,
    },
    /// Map the console's read image at the console's page (reads no longer
    /// trap; stores do) or unmap it (every access traps). Numbered with
    /// [`Action::ConsoleImageWord`]'s generations.
    ConsoleImageMap {
        /// Map (true) or unmap.
        mapped: bool,
        /// The number of the update.
        generation: u32,
    },
    /// Set (`masked`) or clear IMASK in the virtual timer's control register
    /// (CNTV_CTL) of the vCPU's physical CPU, leaving the rest of it. Set,
    /// the timer's output falls, so its physical interrupt can be
    /// deactivated without firing again, until the guest clears IMASK
    /// ([`crate::VtimerDelivery::Masked`]); cleared, it fires again if its
    /// condition still holds. The vCPU's timer is live in its CPU's
    /// registers, so only the vCPU whose request this is can be named: the
    /// virtual-timer server sets it in its reply to `Fired { timer: Virtual
    /// }`, which the monitor sends from the vCPU's own CPU, and the monitor
    /// clears it when the vGIC server refuses that reply's `Pend` (see
    /// [`crate::VgicRequest::Pend`]).
    SetVirtualTimerMask {
        /// IMASK's new value.
        masked: bool,
    },
}

/// An [`Action`] read in place from a [`Reply`] ([`Actions::views`]): the
/// same variants, with a `Send`'s message and a `ConsoleWrite`'s bytes
/// borrowed from the reply. The monitor checks and applies these, so that
/// no 64-byte `Action` is built for each action of each reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The fields are those of `Action`'s variants.
pub enum ActionRef<'a> {
    SetReg { reg: GuestReg, value: u32 },
    AdvancePc,
    InjectUndef,
    InjectDataAbort { far: u32 },
    InjectPrefetchAbort { far: u32 },
    CleanInvalidateDcache,
    ConsoleWrite { bytes: &'a [u8] },
    ConfigureTraps(TrapConfig),
    SetCntvoff { value: u64 },
    SetHypTimer { deadline: Option<u64> },
    WriteListRegister { index: u8, value: u32 },
    WriteGichHcr { value: u32 },
    DeactivatePhysical { intid: IntId },
    Kick { vcpu: VcpuId },
    PowerOn { vcpu: VcpuId, entry: u32, context_id: u32 },
    PowerOff,
    WaitForInterrupt,
    Shutdown(ShutdownReason),
    Send(&'a Message),
    ConsoleReady { room: u8, report: u32 },
    ConsoleImageWord { offset: u16, value: u32, generation: u32 },
    ConsoleImageMap { mapped: bool, generation: u32 },
    SetVirtualTimerMask { masked: bool },
}

impl ActionRef<'_> {
    /// The action by value.
    pub fn to_action(self) -> Action {
        match self {
            ActionRef::SetReg { reg, value } => Action::SetReg { reg, value },
            ActionRef::AdvancePc => Action::AdvancePc,
            ActionRef::InjectUndef => Action::InjectUndef,
            ActionRef::InjectDataAbort { far } => Action::InjectDataAbort { far },
            ActionRef::InjectPrefetchAbort { far } => Action::InjectPrefetchAbort { far },
            ActionRef::CleanInvalidateDcache => Action::CleanInvalidateDcache,
            ActionRef::ConsoleWrite { bytes } => Action::console(bytes),
            ActionRef::ConfigureTraps(t) => Action::ConfigureTraps(t),
            ActionRef::SetCntvoff { value } => Action::SetCntvoff { value },
            ActionRef::SetHypTimer { deadline } => Action::SetHypTimer { deadline },
            ActionRef::WriteListRegister { index, value } => Action::WriteListRegister { index, value },
            ActionRef::WriteGichHcr { value } => Action::WriteGichHcr { value },
            ActionRef::SetVirtualTimerMask { masked } => Action::SetVirtualTimerMask { masked },
            ActionRef::DeactivatePhysical { intid } => Action::DeactivatePhysical { intid },
            ActionRef::Kick { vcpu } => Action::Kick { vcpu },
            ActionRef::PowerOn { vcpu, entry, context_id } => Action::PowerOn { vcpu, entry, context_id },
            ActionRef::PowerOff => Action::PowerOff,
            ActionRef::WaitForInterrupt => Action::WaitForInterrupt,
            ActionRef::Shutdown(reason) => Action::Shutdown(reason),
            ActionRef::Send(message) => Action::Send(*message),
            ActionRef::ConsoleReady { room, report } => Action::ConsoleReady { room, report },
            ActionRef::ConsoleImageWord { offset, value, generation } => {
                Action::ConsoleImageWord { offset, value, generation }
            }
            ActionRef::ConsoleImageMap { mapped, generation } => Action::ConsoleImageMap { mapped, generation },
        }
    }
}

impl Action {
    /// The action as a view (as [`Actions::views`] reads it).
    pub fn as_view(&self) -> ActionRef<'_> {
        match self {
            Action::SetReg { reg, value } => ActionRef::SetReg { reg: *reg, value: *value },
            Action::AdvancePc => ActionRef::AdvancePc,
            Action::InjectUndef => ActionRef::InjectUndef,
            Action::InjectDataAbort { far } => ActionRef::InjectDataAbort { far: *far },
            Action::InjectPrefetchAbort { far } => ActionRef::InjectPrefetchAbort { far: *far },
            Action::CleanInvalidateDcache => ActionRef::CleanInvalidateDcache,
            Action::ConsoleWrite { bytes } => ActionRef::ConsoleWrite { bytes },
            Action::ConfigureTraps(t) => ActionRef::ConfigureTraps(*t),
            Action::SetCntvoff { value } => ActionRef::SetCntvoff { value: *value },
            Action::SetHypTimer { deadline } => ActionRef::SetHypTimer { deadline: *deadline },
            Action::WriteListRegister { index, value } => ActionRef::WriteListRegister { index: *index, value: *value },
            Action::WriteGichHcr { value } => ActionRef::WriteGichHcr { value: *value },
            Action::SetVirtualTimerMask { masked } => ActionRef::SetVirtualTimerMask { masked: *masked },
            Action::DeactivatePhysical { intid } => ActionRef::DeactivatePhysical { intid: *intid },
            Action::Kick { vcpu } => ActionRef::Kick { vcpu: *vcpu },
            Action::PowerOn { vcpu, entry, context_id } => {
                ActionRef::PowerOn { vcpu: *vcpu, entry: *entry, context_id: *context_id }
            }
            Action::PowerOff => ActionRef::PowerOff,
            Action::WaitForInterrupt => ActionRef::WaitForInterrupt,
            Action::Shutdown(reason) => ActionRef::Shutdown(*reason),
            Action::Send(message) => ActionRef::Send(message),
            Action::ConsoleReady { room, report } => ActionRef::ConsoleReady { room: *room, report: *report },
            Action::ConsoleImageWord { offset, value, generation } => {
                ActionRef::ConsoleImageWord { offset: *offset, value: *value, generation: *generation }
            }
            Action::ConsoleImageMap { mapped, generation } => {
                ActionRef::ConsoleImageMap { mapped: *mapped, generation: *generation }
            }
        }
    }
}

/// A server's answer to one request: actions, applied in order.
///
/// On the wire (serde) a reply is a struct whose one field, `actions`, is the
/// sequence of [`Action`]s. In memory the actions are kept compactly (see
/// [`Actions`]), because a reply is moved several times on every trap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Reply {
    /// The actions.
    pub actions: Actions,
}

/// A reply would hold more than it can: more than [`MAX_ACTIONS`] actions,
/// more than [`MAX_SENDS`] forwarded messages, or more than
/// [`MAX_CONSOLE_BYTES`] console bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFull;

impl Reply {
    /// A reply that asks for nothing (a `const fn`: the monitor's static
    /// reply buffers start as one).
    pub const fn none() -> Self {
        Reply { actions: Actions { entries: Vec::new(), sends: Vec::new(), console: Vec::new() } }
    }

    /// A reply with the given actions.
    pub fn of(actions: &[Action]) -> Result<Self, ReplyFull> {
        let mut reply = Self::none();
        for action in actions {
            reply.push(action.clone())?;
        }
        Ok(reply)
    }

    /// Append an action. (Always inlined, as [`Actions::push`]: a push of
    /// a constant action then folds to the stores of its entry.)
    #[inline(always)]
    pub fn push(&mut self, action: Action) -> Result<(), ReplyFull> {
        self.actions.push(action)
    }

    /// Append a `ConsoleWrite` of `bytes`: what `push(Action::console(bytes))`
    /// does (but more than [`MAX_CONSOLE_BYTES`] is `ReplyFull`, not cut),
    /// without building the 40-byte action and copying it first (a `memcpy`
    /// call on every console byte a guest writes).
    pub fn push_console(&mut self, bytes: &[u8]) -> Result<(), ReplyFull> {
        self.actions.push_console(bytes)
    }

    /// Append actions, in order. (On a hot path, push them one by one: the
    /// array is built whole, 64 bytes an action, and each is moved out of
    /// it; two pushes answered a hypercall 90 instructions sooner.)
    #[inline]
    pub fn extend<const N: usize>(&mut self, actions: [Action; N]) -> Result<(), ReplyFull> {
        for action in actions {
            self.push(action)?;
        }
        Ok(())
    }

    /// Empty this reply (only its lengths are written).
    pub fn clear(&mut self) {
        self.actions.clear();
    }

    /// Make this reply a copy of `other`, copying only what `other` holds
    /// (a move or a clone of a whole reply copies all of its room, about
    /// 300 bytes, which is what a short reply costs many times over).
    pub fn copy_from(&mut self, other: &Reply) {
        self.actions.copy_from(&other.actions);
    }
}

/// The most messages one reply forwards to other servers ([`Action::Send`]).
/// A server forwards at most one per request today (an interrupt line's
/// change, or an idle vCPU's question to the vGIC server); the second is to
/// spare.
pub const MAX_SENDS: usize = 2;

/// The actions of a [`Reply`], in order, kept compactly: each action is a
/// 12-byte entry; the messages of `Send`s and the bytes of `ConsoleWrite`s
/// sit in two small pools beside the entries, in the order of their
/// actions. A reply is about 300 bytes instead of the 650 that ten
/// [`Action`]s (64 bytes each, because of `Send`) would take, and a move of
/// it copies that much less. Read the actions back with [`Actions::iter`] (by
/// value: a `Send`'s message and a `ConsoleWrite`'s bytes are copied out).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Actions {
    entries: Vec<Entry, MAX_ACTIONS>,
    sends: Vec<Message, MAX_SENDS>,
    console: Vec<u8, MAX_CONSOLE_BYTES>,
}

/// One action in [`Actions`]: [`Action`] with the 64-bit values split into
/// words (so that the entry is word-aligned) and the variable parts moved to
/// the pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    SetReg {
        reg: GuestReg,
        value: u32,
    },
    AdvancePc,
    InjectUndef,
    InjectDataAbort {
        far: u32,
    },
    InjectPrefetchAbort {
        far: u32,
    },
    CleanInvalidateDcache,
    /// `len` bytes of the console pool, from where the previous
    /// `ConsoleWrite` ended.
    ConsoleWrite {
        len: u8,
    },
    ConfigureTraps(TrapConfig),
    SetCntvoff {
        low: u32,
        high: u32,
    },
    SetHypTimer {
        armed: bool,
        low: u32,
        high: u32,
    },
    WriteListRegister {
        index: u8,
        value: u32,
    },
    WriteGichHcr {
        value: u32,
    },
    DeactivatePhysical {
        intid: IntId,
    },
    Kick {
        vcpu: VcpuId,
    },
    PowerOn {
        vcpu: VcpuId,
        entry: u32,
        context_id: u32,
    },
    PowerOff,
    WaitForInterrupt,
    Shutdown(ShutdownReason),
    /// The next message of the send pool.
    Send,
    ConsoleReady {
        room: u8,
        report: u32,
    },
    ConsoleImageWord {
        offset: u16,
        value: u32,
        generation: u32,
    },
    ConsoleImageMap {
        mapped: bool,
        generation: u32,
    },
    SetVirtualTimerMask {
        masked: bool,
    },
}

fn split(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

fn join(low: u32, high: u32) -> u64 {
    u64::from(high) << 32 | u64::from(low)
}

impl Actions {
    /// See [`Reply::clear`].
    fn clear(&mut self) {
        self.entries.clear();
        self.sends.clear();
        self.console.clear();
    }

    /// See [`Reply::copy_from`].
    fn copy_from(&mut self, other: &Actions) {
        // Cannot fail: the same capacities.
        self.entries.clear();
        let _ = self.entries.extend_from_slice(&other.entries);
        self.sends.clear();
        let _ = self.sends.extend_from_slice(&other.sends);
        self.console.clear();
        let _ = self.console.extend_from_slice(&other.console);
    }

    /// Append an action. Always inlined: the match on the action then
    /// folds away for the constant actions servers push. Left to the
    /// compiler, it went out of line once the enum had 22 variants, and
    /// each push of a null hypercall's reply cost 35 instructions.
    #[inline(always)]
    pub fn push(&mut self, action: Action) -> Result<(), ReplyFull> {
        if self.entries.is_full() {
            return Err(ReplyFull);
        }
        let entry = match action {
            Action::SetReg { reg, value } => Entry::SetReg { reg, value },
            Action::AdvancePc => Entry::AdvancePc,
            Action::InjectUndef => Entry::InjectUndef,
            Action::InjectDataAbort { far } => Entry::InjectDataAbort { far },
            Action::InjectPrefetchAbort { far } => Entry::InjectPrefetchAbort { far },
            Action::CleanInvalidateDcache => Entry::CleanInvalidateDcache,
            Action::ConsoleWrite { bytes } => return self.push_console(&bytes),
            Action::ConfigureTraps(t) => Entry::ConfigureTraps(t),
            Action::SetCntvoff { value } => {
                let (low, high) = split(value);
                Entry::SetCntvoff { low, high }
            }
            Action::SetHypTimer { deadline } => {
                let (low, high) = split(deadline.unwrap_or(0));
                Entry::SetHypTimer { armed: deadline.is_some(), low, high }
            }
            Action::WriteListRegister { index, value } => Entry::WriteListRegister { index, value },
            Action::WriteGichHcr { value } => Entry::WriteGichHcr { value },
            Action::SetVirtualTimerMask { masked } => Entry::SetVirtualTimerMask { masked },
            Action::DeactivatePhysical { intid } => Entry::DeactivatePhysical { intid },
            Action::Kick { vcpu } => Entry::Kick { vcpu },
            Action::PowerOn { vcpu, entry, context_id } => Entry::PowerOn { vcpu, entry, context_id },
            Action::PowerOff => Entry::PowerOff,
            Action::WaitForInterrupt => Entry::WaitForInterrupt,
            Action::Shutdown(reason) => Entry::Shutdown(reason),
            Action::Send(message) => {
                self.sends.push(message).map_err(|_| ReplyFull)?;
                Entry::Send
            }
            Action::ConsoleReady { room, report } => Entry::ConsoleReady { room, report },
            Action::ConsoleImageWord { offset, value, generation } => {
                Entry::ConsoleImageWord { offset, value, generation }
            }
            Action::ConsoleImageMap { mapped, generation } => Entry::ConsoleImageMap { mapped, generation },
        };
        // Cannot fail: checked above.
        let _ = self.entries.push(entry);
        Ok(())
    }

    /// See [`Reply::push_console`].
    fn push_console(&mut self, bytes: &[u8]) -> Result<(), ReplyFull> {
        if self.entries.is_full() {
            return Err(ReplyFull);
        }
        match *bytes {
            // One byte (what a guest's UART driver writes at a time) is
            // pushed: `extend_from_slice` is a `memcpy` call, some thirty
            // instructions for the byte.
            [byte] => self.console.push(byte).map_err(|_| ReplyFull)?,
            _ => self.console.extend_from_slice(bytes).map_err(|_| ReplyFull)?,
        }
        // Cannot truncate: at most MAX_CONSOLE_BYTES (the extend above
        // failed otherwise). Cannot fail: checked above.
        let _ = self.entries.push(Entry::ConsoleWrite { len: bytes.len() as u8 });
        Ok(())
    }

    /// How many actions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The actions, in order, read in place (what the monitor applies: a
    /// view is a few words, where an [`Action`] is 64 bytes, most of them
    /// the room of a `Send`'s message).
    pub fn views(&self) -> Views<'_> {
        Views { actions: self, cursor: Cursor::default() }
    }

    /// The actions, in order, by value.
    pub fn iter(&self) -> Iter<'_> {
        Iter { actions: self, cursor: Cursor::default() }
    }

    /// The first action.
    pub fn first(&self) -> Option<Action> {
        self.iter().next()
    }

    /// The last action.
    pub fn last(&self) -> Option<Action> {
        self.iter().last()
    }

    /// Whether `action` is one of them.
    pub fn contains(&self, action: &Action) -> bool {
        self.iter().any(|a| a == *action)
    }

    /// The actions as a vector of [`Action`]s (for tests and reports; the
    /// monitor reads them with [`Actions::iter`]).
    pub fn to_vec(&self) -> Vec<Action, MAX_ACTIONS> {
        self.iter().collect()
    }
}

/// Where reading [`Actions`] back has got to.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    next: usize,
    send: usize,
    console: usize,
}

impl Cursor {
    // Inlined into each reader: the match of the reader on the action made
    // here then folds into this one.
    #[inline(always)]
    fn take<'a>(&mut self, actions: &'a Actions) -> Option<ActionRef<'a>> {
        let entry = *actions.entries.get(self.next)?;
        self.next += 1;
        Some(match entry {
            Entry::SetReg { reg, value } => ActionRef::SetReg { reg, value },
            Entry::AdvancePc => ActionRef::AdvancePc,
            Entry::InjectUndef => ActionRef::InjectUndef,
            Entry::InjectDataAbort { far } => ActionRef::InjectDataAbort { far },
            Entry::InjectPrefetchAbort { far } => ActionRef::InjectPrefetchAbort { far },
            Entry::CleanInvalidateDcache => ActionRef::CleanInvalidateDcache,
            Entry::ConsoleWrite { len } => {
                let end = self.console + usize::from(len);
                let bytes = actions.console.get(self.console..end).unwrap_or_default();
                self.console = end;
                ActionRef::ConsoleWrite { bytes }
            }
            Entry::ConfigureTraps(t) => ActionRef::ConfigureTraps(t),
            Entry::SetCntvoff { low, high } => ActionRef::SetCntvoff { value: join(low, high) },
            Entry::SetHypTimer { armed, low, high } => {
                ActionRef::SetHypTimer { deadline: armed.then(|| join(low, high)) }
            }
            Entry::WriteListRegister { index, value } => ActionRef::WriteListRegister { index, value },
            Entry::WriteGichHcr { value } => ActionRef::WriteGichHcr { value },
            Entry::SetVirtualTimerMask { masked } => ActionRef::SetVirtualTimerMask { masked },
            Entry::DeactivatePhysical { intid } => ActionRef::DeactivatePhysical { intid },
            Entry::Kick { vcpu } => ActionRef::Kick { vcpu },
            Entry::PowerOn { vcpu, entry, context_id } => ActionRef::PowerOn { vcpu, entry, context_id },
            Entry::PowerOff => ActionRef::PowerOff,
            Entry::WaitForInterrupt => ActionRef::WaitForInterrupt,
            Entry::Shutdown(reason) => ActionRef::Shutdown(reason),
            Entry::Send => {
                let message = actions.sends.get(self.send);
                self.send += 1;
                // Always there: each Send entry pushed its message.
                ActionRef::Send(message?)
            }
            Entry::ConsoleReady { room, report } => ActionRef::ConsoleReady { room, report },
            Entry::ConsoleImageWord { offset, value, generation } => {
                ActionRef::ConsoleImageWord { offset, value, generation }
            }
            Entry::ConsoleImageMap { mapped, generation } => ActionRef::ConsoleImageMap { mapped, generation },
        })
    }

    fn left(&self, actions: &Actions) -> usize {
        actions.entries.len().saturating_sub(self.next)
    }
}

/// The actions of an [`Actions`], in order, read in place.
#[derive(Clone, Debug)]
pub struct Views<'a> {
    actions: &'a Actions,
    cursor: Cursor,
}

impl<'a> Iterator for Views<'a> {
    type Item = ActionRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<ActionRef<'a>> {
        self.cursor.take(self.actions)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cursor.left(self.actions);
        (left, Some(left))
    }
}

/// The actions of an [`Actions`], in order, by value.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    actions: &'a Actions,
    cursor: Cursor,
}

impl Iterator for Iter<'_> {
    type Item = Action;

    #[inline]
    fn next(&mut self) -> Option<Action> {
        self.cursor.take(self.actions).map(ActionRef::to_action)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cursor.left(self.actions);
        (left, Some(left))
    }
}

/// The actions of an [`Actions`] it owns, in order.
#[derive(Clone, Debug)]
pub struct IntoIter {
    actions: Actions,
    cursor: Cursor,
}

impl Iterator for IntoIter {
    type Item = Action;

    fn next(&mut self) -> Option<Action> {
        self.cursor.take(&self.actions).map(ActionRef::to_action)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cursor.left(&self.actions);
        (left, Some(left))
    }
}

impl<'a> IntoIterator for &'a Actions {
    type Item = Action;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter { actions: self, cursor: Cursor::default() }
    }
}

impl FromIterator<Action> for Actions {
    /// The actions, cut where they no longer fit.
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        let mut actions = Actions::default();
        for action in iter {
            if actions.push(action).is_err() {
                break;
            }
        }
        actions
    }
}

impl core::fmt::Debug for Actions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Actions {
    /// As a sequence of [`Action`]s (what `heapless::Vec<Action, _>` gives).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for action in self.iter() {
            seq.serialize_element(&action)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Actions;

            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(
                    f,
                    "at most {MAX_ACTIONS} actions, {MAX_SENDS} of them Send, with at most {MAX_CONSOLE_BYTES} \
                     console bytes in all"
                )
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Actions, A::Error> {
                let mut actions = Actions::default();
                while let Some(action) = seq.next_element::<Action>()? {
                    if actions.push(action).is_err() {
                        return Err(serde::de::Error::invalid_length(actions.len() + 1, &self));
                    }
                }
                Ok(actions)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Actions {
    /// As many actions as the input offers, cut where they no longer fit.
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut actions = Actions::default();
        for action in u.arbitrary_iter::<Action>()? {
            if actions.push(action?).is_err() {
                break;
            }
        }
        Ok(actions)
    }
}

impl Action {
    /// Console output of up to [`MAX_CONSOLE_BYTES`] bytes (the rest is cut).
    pub fn console(bytes: &[u8]) -> Self {
        let take = bytes.len().min(MAX_CONSOLE_BYTES);
        let mut out = Vec::new();
        // Cannot fail: `take` is within the capacity.
        let _ = out.extend_from_slice(&bytes[..take]);
        Action::ConsoleWrite { bytes: out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::VgicRequest;

    fn set_line(intid: u16) -> Action {
        Action::Send(Message::Vgic(VgicRequest::SetLine {
            intid: IntId(intid),
            level: true,
            target: None,
            hw: None,
            change: 0,
            status: None,
        }))
    }

    #[test]
    fn a_copied_reply_equals_its_source_whatever_was_there_before() {
        let source = Reply::of(&[Action::console(b"hi"), set_line(33), Action::AdvancePc]).expect("fits");
        let mut target =
            Reply::of(&[set_line(34), set_line(35), Action::console(b"older bytes"), Action::PowerOff]).expect("fits");
        target.copy_from(&source);
        assert_eq!(target, source);
        assert!(target.actions.iter().eq(source.actions.iter()));
        target.copy_from(&Reply::none());
        assert_eq!(target, Reply::none());
    }

    #[test]
    fn actions_come_back_in_order_with_their_payloads() {
        let all = [
            Action::SetReg { reg: GuestReg::Gpr(3), value: 0xdead_beef },
            Action::console(b"ab"),
            set_line(33),
            Action::SetCntvoff { value: 0x1234_5678_9abc_def0 },
            Action::SetHypTimer { deadline: Some(u64::MAX) },
            Action::SetHypTimer { deadline: None },
            Action::console(b"cde"),
            set_line(34),
            Action::PowerOn { vcpu: VcpuId(1), entry: 0x4000_0001, context_id: 7 },
            Action::Shutdown(ShutdownReason::Fault(9)),
        ];
        let reply = Reply::of(&all).unwrap();
        assert_eq!(reply.actions.len(), all.len());
        assert_eq!(reply.actions.to_vec().as_slice(), &all);
        assert_eq!(reply, Reply::of(&all).unwrap());
        assert_ne!(reply, Reply::of(&all[..9]).unwrap());
        // Read in place, the same actions, borrowing the payloads.
        let views: Vec<ActionRef<'_>, MAX_ACTIONS> = reply.actions.views().collect();
        assert_eq!(views.len(), all.len());
        for (view, action) in views.iter().zip(&all) {
            assert_eq!(*view, action.as_view());
            assert_eq!(view.to_action(), *action);
        }
        assert_eq!(views[1], ActionRef::ConsoleWrite { bytes: b"ab" });
        assert_eq!(views[6], ActionRef::ConsoleWrite { bytes: b"cde" });
        assert!(matches!(views[7], ActionRef::Send(m) if Action::Send(*m) == set_line(34)));
    }

    #[test]
    fn push_console_is_push_of_a_console_write() {
        // Several bytes (extended) and one byte (pushed) alike.
        for bytes in [&b"ab"[..], b"z"] {
            let mut direct = Reply::of(&[Action::AdvancePc]).unwrap();
            let mut built = direct.clone();
            direct.push_console(bytes).unwrap();
            built.push(Action::console(bytes)).unwrap();
            assert_eq!(direct, built);
        }
        // Full by bytes or by actions alike, and nothing left behind.
        let mut full = Reply::of(&[Action::console(&[1; MAX_CONSOLE_BYTES - 1])]).unwrap();
        assert_eq!(full.push_console(b"xy"), Err(ReplyFull));
        assert_eq!(full.actions.len(), 1);
        let mut full = Reply::of(&[const { Action::AdvancePc }; MAX_ACTIONS]).unwrap();
        assert_eq!(full.push_console(b"x"), Err(ReplyFull));
        assert_eq!(full, Reply::of(&[const { Action::AdvancePc }; MAX_ACTIONS]).unwrap());
        // One byte fills the pool's last byte, and is refused past it.
        let mut last = Reply::of(&[Action::console(&[1; MAX_CONSOLE_BYTES - 1])]).unwrap();
        last.push_console(b"z").unwrap();
        assert_eq!(last.actions.to_vec().last(), Some(&Action::console(b"z")));
        let before = last.clone();
        assert_eq!(last.push_console(b"y"), Err(ReplyFull));
        assert_eq!(last, before);
    }

    #[test]
    fn a_cleared_reply_is_empty_and_takes_new_actions() {
        let mut reply = Reply::of(&[Action::console(b"xyz"), set_line(40), Action::AdvancePc]).unwrap();
        reply.clear();
        assert_eq!(reply, Reply::none());
        reply.extend([Action::AdvancePc, Action::console(b"q")]).unwrap();
        assert_eq!(reply.actions.to_vec().as_slice(), [Action::AdvancePc, Action::console(b"q")]);
    }

    #[test]
    fn each_limit_is_a_full_reply_and_leaves_nothing_behind() {
        let mut reply = Reply::of(&[const { Action::AdvancePc }; MAX_ACTIONS]).unwrap();
        assert_eq!(reply.push(Action::AdvancePc), Err(ReplyFull));
        assert_eq!(reply.push(set_line(40)), Err(ReplyFull));
        assert_eq!(reply.actions.len(), MAX_ACTIONS);

        let mut reply = Reply::of(&[set_line(40), set_line(41)]).unwrap();
        assert_eq!(reply.push(set_line(42)), Err(ReplyFull));
        reply.push(Action::AdvancePc).unwrap();
        assert_eq!(reply.actions.to_vec().as_slice(), &[set_line(40), set_line(41), Action::AdvancePc]);

        let mut reply = Reply::of(&[Action::console(&[1; MAX_CONSOLE_BYTES - 1])]).unwrap();
        assert_eq!(reply.push(Action::console(b"xy")), Err(ReplyFull));
        reply.push(Action::console(b"z")).unwrap();
        assert_eq!(
            reply.actions.to_vec().as_slice(),
            &[Action::console(&[1; MAX_CONSOLE_BYTES - 1]), Action::console(b"z")]
        );
    }

    #[test]
    fn a_reply_is_much_smaller_than_its_actions() {
        assert!(core::mem::size_of::<Reply>() * 2 < MAX_ACTIONS * core::mem::size_of::<Action>());
    }
}
