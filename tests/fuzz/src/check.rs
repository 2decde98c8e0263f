//! Invariants every server target checks after every step.

use std::fmt::Debug;

use ipc::{Action, GuestReg, Message, Reply, ServerId, VcpuId, MAX_ACTIONS};
use serde::{de::DeserializeOwned, Serialize};

/// A value survives a postcard round trip unchanged (a server's whole state
/// must: checkpoints, restarts and replay depend on it). Returns the copy
/// that went through the encoding, for the caller to go on with.
pub fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> T {
    let bytes = match postcard::to_allocvec(value) {
        Ok(b) => b,
        Err(e) => panic!("state does not serialize: {e}: {value:?}"),
    };
    let back: T = match postcard::from_bytes(&bytes) {
        Ok(v) => v,
        Err(e) => panic!("state does not deserialize from its own encoding: {e}: {value:?}"),
    };
    assert_eq!(&back, value, "state changed through a postcard round trip");
    back
}

/// The register number a `SetReg` names, for the checks below: R0-R14 of the
/// guest's mode (R15 is [`GuestReg::Pc`]).
pub const MAX_GPR: u8 = 14;

/// What kind of request a reply answers: only a reply to a trap may act on
/// the trapping instruction (write registers, step past it, inject an
/// exception).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answering {
    /// A guest trap (or a trap the monitor forwarded as a request).
    Trap,
    /// Anything else (Start, console input, line changes, LR refreshes).
    NotATrap,
}

/// Checks that hold for every reply of every server:
/// - at most [`MAX_ACTIONS`] actions (the type guarantees it; checked so a
///   change of representation cannot slip by);
/// - general-purpose registers R0-R14 only;
/// - vCPU numbers the VM has;
/// - no `Send` to the replying server itself;
/// - instruction-related actions only in answer to a trap, and then at most
///   one of "step past it" and "inject an exception";
/// - the encoded reply fits the wire format's envelope.
pub fn reply_shape(server: ServerId, reply: &Reply, vcpus: u8, answering: Answering) {
    let actions = &reply.actions;
    assert!(actions.len() <= MAX_ACTIONS, "{} actions", actions.len());
    let mut resumes = 0;
    for action in &actions.to_vec() {
        match action {
            Action::SetReg { reg: GuestReg::Gpr(n), .. } => {
                assert!(*n <= MAX_GPR, "SetReg of r{n}: {reply:?}");
            }
            Action::Kick { vcpu } | Action::PowerOn { vcpu, .. } => {
                assert!(vcpu.0 < vcpus, "{action:?} names a vCPU the VM does not have ({vcpus})");
            }
            Action::Send(message) => {
                assert_ne!(message.server(), server, "{server:?} sends to itself: {reply:?}");
                if let Some(v) = message_vcpu(message) {
                    assert!(v.0 < vcpus, "{action:?} names a vCPU the VM does not have ({vcpus})");
                }
            }
            _ => {}
        }
        let instruction = matches!(
            action,
            Action::SetReg { .. }
                | Action::AdvancePc
                | Action::InjectUndef
                | Action::InjectDataAbort { .. }
                | Action::InjectPrefetchAbort { .. }
        );
        if instruction {
            assert_eq!(answering, Answering::Trap, "{action:?} in a reply to a request that is not a trap");
        }
        if matches!(
            action,
            Action::AdvancePc
                | Action::InjectUndef
                | Action::InjectDataAbort { .. }
                | Action::InjectPrefetchAbort { .. }
        ) {
            resumes += 1;
        }
    }
    assert!(resumes <= 1, "a reply both steps past and injects (or does either twice): {reply:?}");
    let mut buf = [0u8; ipc::MAX_MESSAGE_SIZE];
    let answer: Result<Reply, ipc::ServerError> = Ok(reply.clone());
    if let Err(e) = ipc::wire::encode_envelope(u64::MAX, u32::MAX, &answer, &mut buf) {
        panic!("reply does not fit an envelope ({e}): {reply:?}");
    }
}

/// The vCPU a request names, if any.
pub fn message_vcpu(message: &Message) -> Option<VcpuId> {
    use ipc::{VcpuRequest, VgicRequest, VtimerRequest};
    match message {
        Message::Vcpu(VcpuRequest::Start { vcpu }) => Some(*vcpu),
        Message::Vcpu(VcpuRequest::Trap(t)) => Some(t.vcpu),
        Message::Vcpu(VcpuRequest::ConsoleInput { .. }) => None,
        Message::Vgic(
            VgicRequest::Start { vcpu, .. }
            | VgicRequest::Mmio { vcpu, .. }
            | VgicRequest::Maintenance { vcpu, .. }
            | VgicRequest::Sync { vcpu, .. }
            | VgicRequest::Idle { vcpu, .. }
            | VgicRequest::Wfi { vcpu, .. },
        ) => Some(*vcpu),
        Message::Vgic(VgicRequest::SetLine { target, .. } | VgicRequest::Pend { target, .. }) => *target,
        Message::Vtimer(
            VtimerRequest::Start { vcpu, .. }
            | VtimerRequest::Cp15 { vcpu, .. }
            | VtimerRequest::Cp15Wide { vcpu, .. }
            | VtimerRequest::Fired { vcpu, .. },
        ) => Some(*vcpu),
    }
}

/// The value an MMIO load of `size` puts in its register is consistent with
/// the access: zero-extended to the size, or sign-extended from it.
pub fn load_value_fits(value: u32, size: ipc::AccessSize, sign_extend: bool) -> bool {
    let bits = size.bytes() * 8;
    if bits >= 32 {
        return true;
    }
    let low = value & ((1u32 << bits) - 1);
    if sign_extend {
        let sign = low >> (bits - 1) & 1 == 1;
        let high = if sign { !0u32 << bits } else { 0 };
        value == low | high
    } else {
        value == low
    }
}
