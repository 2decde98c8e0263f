//! Requests to each server, the envelope that carries them, and the server
//! interface.

use serde::{Deserialize, Serialize};

use crate::action::{Reply, ReplyFull};
use crate::ids::{IntId, ServerId, VcpuId};
pub use crate::input::{InputBytes, InputFull};
use crate::trap::{Cp15Access, Cp15WideAccess, MmioAccess, TrapMsg};

/// The most console input bytes one message carries.
pub const MAX_INPUT_BYTES: usize = 16;

/// Requests the vCPU server handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VcpuRequest {
    /// `vcpu` is about to run for the first time since it was powered on:
    /// the reply configures its traps (and may notify other servers).
    Start {
        /// The vCPU.
        vcpu: VcpuId,
    },
    /// A trap the router gave to the vCPU server.
    Trap(TrapMsg),
    /// Bytes typed on the VM's console (the physical UART).
    ConsoleInput {
        /// The bytes, in order.
        bytes: InputBytes,
    },
}

/// List-register and maintenance status of one physical CPU interface,
/// read by the monitor when it reports a maintenance interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LrStatus {
    /// GICH_MISR.
    pub misr: u32,
    /// GICH_EISR0.
    pub eisr: u32,
    /// GICH_ELRSR0.
    pub elrsr: u32,
    /// GICH_LR0..3 (the list registers the hardware implements, up to 4
    /// reported here; GICH_VTR says how many exist).
    pub lrs: [u32; 4],
}

/// Requests the vGIC server handles.
///
/// List registers are written only in answer to a request that carries a
/// fresh [`LrStatus`] of the vCPU's physical CPU interface (`Maintenance`,
/// `Sync`, `Idle`). A request that changes a vCPU's interrupt state
/// otherwise (`Mmio`, whose status is only read, and `SetLine`) answers with
/// [`crate::Action::Kick`] for each vCPU concerned; the monitor then sends
/// `Sync` for it (before re-entering it if it is the vCPU being handled, or
/// after a physical SGI to its CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VgicRequest {
    /// `vcpu` is about to run for the first time since it was powered on.
    Start {
        /// The vCPU.
        vcpu: VcpuId,
        /// How many list registers its physical CPU interface has (GICH_VTR).
        list_registers: u8,
    },
    /// An access to the emulated distributor.
    Mmio {
        /// The accessing vCPU.
        vcpu: VcpuId,
        /// The access.
        access: MmioAccess,
        /// The list-register status of the accessing vCPU's physical CPU
        /// interface at the access (the vCPU is stopped in its trap), filled
        /// in by the router: the server first takes in what the guest
        /// acknowledged and deactivated through the virtual CPU interface
        /// since its last refresh, so that reads such as GICD_ISACTIVERn see
        /// it. `None` where no status can be read (a sender that is not the
        /// monitor on that vCPU's CPU): the access then sees the state as of
        /// the last refresh. List registers are still written only in reply
        /// to `Maintenance`, `Sync` and `Idle`.
        status: Option<LrStatus>,
    },
    /// An interrupt line changed level (SPIs; for PPIs `target` names the
    /// vCPU whose private line it is). Edge sources send `level: true`.
    SetLine {
        /// The interrupt.
        intid: IntId,
        /// The line level.
        level: bool,
        /// For a PPI: the vCPU it belongs to. For an SPI (whose
        /// destination is the distributor's to choose): the vCPU whose
        /// `status` comes with it, filled in by the router.
        target: Option<VcpuId>,
        /// For an interrupt backed by hardware: the physical INTID whose
        /// deactivation the guest's EOI must reach.
        hw: Option<IntId>,
        /// The number of this change of the line at its source, counting up
        /// from 1 (wrapping), or 0 from a source whose changes are all sent
        /// from one CPU. A reply is applied after its server's lock is
        /// released, so two CPUs can deliver two changes of one line in the
        /// other order than the source made them; the vGIC server takes a
        /// numbered change only if it is newer than the last it took (an
        /// older level left behind would lose a level-triggered interrupt,
        /// or hold one up for good, since sources send only changes).
        change: u32,
        /// The list-register status of `target`'s physical CPU interface,
        /// filled in by the router when `target` is the vCPU it is handling:
        /// a private line of the trapping vCPU (such as its timer's), or an
        /// SPI raised or lowered while handling it (a device's, say, after a
        /// register write). If the change may alter that vCPU's list
        /// registers, the server then writes them in this reply, instead of
        /// kicking it and refreshing them in the `Sync` the kick would
        /// bring. `None` otherwise (and whatever a sender put here).
        status: Option<LrStatus>,
    },
    /// A maintenance interrupt on the physical CPU that runs `vcpu`.
    Maintenance {
        /// The vCPU.
        vcpu: VcpuId,
        /// The hardware status.
        status: LrStatus,
    },
    /// `vcpu` re-entered the hypervisor after a kick: refresh its list
    /// registers.
    Sync {
        /// The vCPU.
        vcpu: VcpuId,
        /// The hardware status.
        status: LrStatus,
    },
    /// `vcpu` asked to idle (PSCI CPU_SUSPEND, answered by the vCPU
    /// server, which steps past the call): refresh its list registers and
    /// answer whether it may wait (`Action::WaitForInterrupt`).
    Idle {
        /// The vCPU.
        vcpu: VcpuId,
        /// The hardware status.
        status: LrStatus,
    },
    /// `vcpu`'s WFI trapped (`WfiPolicy::Trap`; the router sends the trap
    /// here, not to the vCPU server, which would only pass it on): step
    /// past the WFI (`Action::AdvancePc`, which completes it), then as
    /// `Idle`.
    Wfi {
        /// The vCPU.
        vcpu: VcpuId,
        /// The hardware status.
        status: LrStatus,
    },
    /// Make an SPI or PPI pending as a write of its GICD_ISPENDRn bit
    /// would: a latch that the guest's acknowledge consumes, whatever the
    /// interrupt's configuration and line. The virtual-timer server sends
    /// it for the guest's virtual timer when it delivers that timer masked
    /// ([`crate::VtimerDelivery::Masked`]): the timer's output fell when the
    /// monitor set its IMASK, so there is no level left to follow. (Numbered
    /// changes are not needed: a latch is set, never cleared, by its
    /// source, so two `Pend`s in either order leave the same state.)
    Pend {
        /// The interrupt.
        intid: IntId,
        /// For a PPI: the vCPU it belongs to. For an SPI: as in `SetLine`,
        /// the vCPU whose `status` comes with it, filled in by the router.
        target: Option<VcpuId>,
        /// As in `SetLine`: the list-register status of `target`'s physical
        /// CPU interface, filled in by the router when `target` is the vCPU
        /// it is handling, so that the server can write that vCPU's list
        /// registers in its reply. `None` otherwise.
        status: Option<LrStatus>,
        /// Sent for the virtual timer of `target`, which was masked to be
        /// delivered so (`VtimerDelivery::Masked`): should the vGIC server
        /// fail on this request for good, the monitor clears the timer's
        /// IMASK again ([`crate::Action::SetVirtualTimerMask`]), so that it
        /// fires again and is delivered anew, as a hardware-backed
        /// `SetLine` refused has its physical interrupt deactivated. (A
        /// lost tick would leave the timer masked for good: the guest only
        /// unmasks it from its handler.)
        masked_timer: bool,
    },
}

/// Whether `number` comes after `than` in a sequence that counts up and
/// wraps (the numbers of `SetLine::change` and of `Action::ConsoleReady`
/// reports): it is less than half the number space ahead. The receivers of
/// numbered state use it to keep only the newest.
pub fn is_newer(number: u32, than: u32) -> bool {
    (number.wrapping_sub(than) as i32) > 0
}

/// Which of a vCPU's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TimerKind {
    /// The virtual timer (CNTV_*), run by the hardware.
    Virtual,
    /// The physical timer (CNTP_*), emulated on the Hyp timer.
    Physical,
}

/// Requests the virtual-timer server handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VtimerRequest {
    /// `vcpu` is about to run for the first time since it was powered on.
    Start {
        /// The vCPU.
        vcpu: VcpuId,
        /// The physical count now.
        now: u64,
    },
    /// A trapped 32-bit timer register access (CNTP_CTL, CNTP_TVAL, ...).
    Cp15 {
        /// The vCPU.
        vcpu: VcpuId,
        /// The access.
        access: Cp15Access,
        /// The physical count at the trap.
        now: u64,
    },
    /// A trapped 64-bit timer register access (CNTP_CVAL, CNTPCT).
    Cp15Wide {
        /// The vCPU.
        vcpu: VcpuId,
        /// The access.
        access: Cp15WideAccess,
        /// The physical count at the trap.
        now: u64,
    },
    /// A timer's interrupt fired on the physical CPU that runs `vcpu`.
    Fired {
        /// The vCPU.
        vcpu: VcpuId,
        /// Which timer.
        timer: TimerKind,
        /// The physical count now.
        now: u64,
    },
}

/// A request to one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message {
    /// To the vCPU server.
    Vcpu(VcpuRequest),
    /// To the vGIC server.
    Vgic(VgicRequest),
    /// To the virtual-timer server.
    Vtimer(VtimerRequest),
}

impl Message {
    /// The server this message is for.
    pub fn server(&self) -> ServerId {
        match self {
            Message::Vcpu(_) => ServerId::Vcpu,
            Message::Vgic(_) => ServerId::Vgic,
            Message::Vtimer(_) => ServerId::Vtimer,
        }
    }

    /// The request's name (its variant: `Trap`, `Mmio`, `Fired`, ...), for
    /// logs and summaries.
    pub fn request_name(&self) -> &'static str {
        match self {
            Message::Vcpu(VcpuRequest::Start { .. }) => "Start",
            Message::Vcpu(VcpuRequest::Trap(_)) => "Trap",
            Message::Vcpu(VcpuRequest::ConsoleInput { .. }) => "ConsoleInput",
            Message::Vgic(VgicRequest::Start { .. }) => "Start",
            Message::Vgic(VgicRequest::Mmio { .. }) => "Mmio",
            Message::Vgic(VgicRequest::Maintenance { .. }) => "Maintenance",
            Message::Vgic(VgicRequest::Sync { .. }) => "Sync",
            Message::Vgic(VgicRequest::Idle { .. }) => "Idle",
            Message::Vgic(VgicRequest::Wfi { .. }) => "Wfi",
            Message::Vgic(VgicRequest::SetLine { .. }) => "SetLine",
            Message::Vgic(VgicRequest::Pend { .. }) => "Pend",
            Message::Vtimer(VtimerRequest::Start { .. }) => "Start",
            Message::Vtimer(VtimerRequest::Cp15 { .. }) => "Cp15",
            Message::Vtimer(VtimerRequest::Cp15Wide { .. }) => "Cp15Wide",
            Message::Vtimer(VtimerRequest::Fired { .. }) => "Fired",
        }
    }
}

/// A message on the wire: the wire version, a sequence number, and the
/// generation of the server instance it is addressed to (bumped each time the
/// server is restarted, so a reply from a dead instance can be recognised).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Envelope<T> {
    /// [`crate::WIRE_VERSION`] of the sender.
    pub version: u16,
    /// Sequence number of the request this belongs to.
    pub seq: u64,
    /// Generation of the server instance.
    pub generation: u32,
    /// The message or reply.
    pub body: T,
}

/// Why a server refused a request. The router answers the guest
/// architecturally; a server error is never the guest's fault to crash on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServerError {
    /// The request is addressed to another server.
    WrongServer,
    /// The request names a vCPU the VM does not have.
    NoSuchVcpu(VcpuId),
    /// The request is not one this server handles in its current state.
    Unexpected,
    /// The reply would not fit: more than [`crate::MAX_ACTIONS`] actions,
    /// [`crate::action::MAX_SENDS`] forwarded messages or
    /// [`crate::action::MAX_CONSOLE_BYTES`] console bytes.
    ReplyFull,
    /// The server failed on the request (it panicked, faulted or gave an
    /// invalid reply) and failed again after its state was restored: the
    /// request was not carried out.
    Faulted,
}

impl From<ReplyFull> for ServerError {
    fn from(_: ReplyFull) -> Self {
        ServerError::ReplyFull
    }
}

impl core::fmt::Display for ServerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServerError::WrongServer => write!(f, "request addressed to another server"),
            ServerError::NoSuchVcpu(v) => write!(f, "no vCPU {}", v.0),
            ServerError::Unexpected => write!(f, "request not expected in this state"),
            ServerError::ReplyFull => write!(f, "reply needs too many actions"),
            ServerError::Faulted => write!(f, "the server failed on the request twice"),
        }
    }
}

/// A server: a state machine that answers one request at a time. Its whole
/// state is the implementing value, which is serde-serializable so that it
/// can be checkpointed, restored, compared and replayed.
pub trait Server {
    /// Which server this is.
    const ID: ServerId;
    /// The requests it takes.
    type Request;

    /// Handle one request, appending its reply's actions to `reply`, which
    /// the caller passes empty. On an error, what `reply` holds means
    /// nothing (the caller drops it).
    ///
    /// The reply is an out-parameter rather than a result because of its
    /// size: a [`Reply`] is about 300 bytes, a move of one is a copy of all
    /// of it, and a new one is a clear of all of it. The monitor keeps one
    /// reply for each server and lends it to every request.
    fn handle_into(&mut self, request: &Self::Request, reply: &mut Reply) -> Result<(), ServerError>;

    /// The request inside a [`Message`], or a refusal of a message for
    /// another server.
    fn request_of(message: &Message) -> Result<&Self::Request, ServerError>;

    /// Handle one request, and return its reply.
    fn handle(&mut self, request: Self::Request) -> Result<Reply, ServerError> {
        let mut reply = Reply::none();
        self.handle_into(&request, &mut reply)?;
        Ok(reply)
    }

    /// Handle a [`Message`] addressed to this server, and return its reply.
    fn handle_message(&mut self, message: Message) -> Result<Reply, ServerError> {
        let mut reply = Reply::none();
        self.handle_message_into(&message, &mut reply)?;
        Ok(reply)
    }

    /// Handle a [`Message`] addressed to this server, writing its reply
    /// into `reply` (emptied first).
    fn handle_message_into(&mut self, message: &Message, reply: &mut Reply) -> Result<(), ServerError> {
        reply.clear();
        let request = Self::request_of(message)?;
        self.handle_into(request, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::is_newer;

    #[test]
    fn newer_numbers_count_up_and_wrap() {
        assert!(is_newer(2, 1));
        assert!(!is_newer(1, 2));
        assert!(!is_newer(7, 7));
        // Across the wrap: 1 comes after u32::MAX, not before it.
        assert!(is_newer(1, u32::MAX));
        assert!(!is_newer(u32::MAX, 1));
        // Half the space ahead or more counts as behind.
        assert!(is_newer(0x7fff_ffff, 0));
        assert!(!is_newer(0x8000_0000, 0));
    }
}
