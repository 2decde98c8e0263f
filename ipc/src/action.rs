//! Replies: the short list of actions a server asks the monitor to carry out.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::{IntId, VcpuId};
use crate::msg::Message;
use crate::trap::GuestReg;

/// The most actions one reply can hold: enough for a guest register write
/// that concerns every vCPU (`AdvancePc` and a `Kick` for each of
/// [`crate::MAX_VCPUS`], e.g. a GICD_SGIR naming all eight), with one to
/// spare. Ten of the largest action still fit in one
/// [`crate::MAX_MESSAGE_SIZE`] envelope (the round-trip tests check it).
pub const MAX_ACTIONS: usize = 10;

/// The most bytes one console write carries.
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
    ConsoleReady {
        /// Bytes the console can take now.
        room: u8,
    },
}

/// A server's answer to one request: actions, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Reply {
    /// The actions.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::heapless_vec))]
    pub actions: Vec<Action, MAX_ACTIONS>,
}

/// A reply would hold more than [`MAX_ACTIONS`] actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFull;

impl Reply {
    /// A reply that asks for nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// A reply with the given actions.
    pub fn of(actions: &[Action]) -> Result<Self, ReplyFull> {
        let mut reply = Self::none();
        for action in actions {
            reply.push(action.clone())?;
        }
        Ok(reply)
    }

    /// Append an action.
    pub fn push(&mut self, action: Action) -> Result<(), ReplyFull> {
        self.actions.push(action).map_err(|_| ReplyFull)
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
