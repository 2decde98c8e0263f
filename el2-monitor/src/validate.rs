//! Reply validation: what the monitor checks in every reply before it
//! applies it, and what `splitvisor replay --isolate process` checks in
//! every reply of a server process (one rule set for both).
//!
//! A reply fails when an action names something the VM does not have: a
//! register that does not exist, a vCPU beyond the configured count, an entry
//! point outside guest RAM, a list register beyond those a CPU interface
//! reports, a malformed list-register value, an invalid interrupt; and the
//! same for the messages it forwards to other servers. Those are the
//! server's bugs, never the guest's: the servers turn every guest request
//! into well-formed actions.

use ipc::{ActionRef, GuestReg, IntId, Message, Reply, VcpuId, VcpuRequest, VgicRequest, VmConfig, VtimerRequest};
use vgic_server::lr::{lr_bits, MAX_LRS};

/// The highest general-purpose register a reply may name: `GuestReg::Gpr`
/// is R0-R14 of the guest's mode (R15 is [`GuestReg::Pc`]).
const LAST_GPR: u8 = 14;

/// GICH_LRn bits \[22:20\]: reserved (IHI 0048B chapter 5, GICH_LRn).
const LR_RESERVED: u32 = 0x7 << 20;
/// GICH_LRn bits \[18:13\] when HW is 0: reserved (beside EOI, bit 19, and
/// CPUID, bits \[12:10\]; IHI 0048B chapter 5, GICH_LRn).
const LR_RESERVED_SOFTWARE: u32 = 0x3f << 13;

/// Why a reply was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidReply {
    /// `SetReg` of a register that does not exist.
    NoSuchRegister(u8),
    /// An action or forwarded message names a vCPU the VM does not have.
    NoSuchVcpu(VcpuId),
    /// `PowerOn` at an entry point outside guest RAM.
    EntryOutsideRam(u32),
    /// `WriteListRegister` of a list register that does not exist.
    NoSuchListRegister(u8),
    /// `WriteListRegister` of a value with reserved bits set or an invalid
    /// interrupt in it.
    MalformedListRegister(u32),
    /// An interrupt number that is not an interrupt (1020 and above), or a
    /// physical interrupt to deactivate that is an SGI.
    BadIntid(IntId),
    /// `SetReg` of the CPSR with a mode the guest may not run in (Hyp,
    /// Monitor or a reserved encoding): that would hand the guest the
    /// hypervisor's privilege.
    ForbiddenMode(u32),
    /// A console read-image action in a VM without one
    /// (`VmConfig::console_image` off).
    NoConsoleImage,
    /// A console read-image word at an offset that is not a word of the
    /// page.
    ImageOffset(u16),
}

impl core::fmt::Display for InvalidReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InvalidReply::NoSuchRegister(n) => write!(f, "sets r{n}, which does not exist"),
            InvalidReply::NoSuchVcpu(v) => write!(f, "names vCPU {}, which the VM does not have", v.0),
            InvalidReply::EntryOutsideRam(e) => write!(f, "starts a vCPU at {e:#x}, outside guest RAM"),
            InvalidReply::NoSuchListRegister(i) => write!(f, "writes list register {i}, which does not exist"),
            InvalidReply::MalformedListRegister(v) => write!(f, "writes the malformed list-register value {v:#010x}"),
            InvalidReply::BadIntid(i) => write!(f, "names INTID {}, which is not valid there", i.0),
            InvalidReply::ForbiddenMode(cpsr) => {
                write!(f, "sets the CPSR to {cpsr:#010x}, a mode the guest may not run in")
            }
            InvalidReply::NoConsoleImage => write!(f, "uses the console's read image, which this VM does not have"),
            InvalidReply::ImageOffset(o) => {
                write!(f, "writes the console's read image at {o:#x}, not a word of its page")
            }
        }
    }
}

/// CPSR.M: the modes a guest may be in (ARM DDI 0406C B1.3.1): User, FIQ,
/// IRQ, Supervisor, Abort, Undefined, System. Not Monitor (0x16) nor Hyp
/// (0x1a), nor the reserved encodings.
const GUEST_MODES: [u32; 7] = [0x10, 0x11, 0x12, 0x13, 0x17, 0x1b, 0x1f];
/// CPSR.M's bits.
const CPSR_MODE: u32 = 0x1f;

/// Check every action of `reply` (and every message it forwards) against
/// the VM `config` describes.
pub fn check(reply: &Reply, config: &VmConfig) -> Result<(), InvalidReply> {
    reply.actions.views().try_for_each(|action| check_action(action, config))
}

fn vcpu(v: VcpuId, config: &VmConfig) -> Result<(), InvalidReply> {
    if v.0 < config.vcpus {
        Ok(())
    } else {
        Err(InvalidReply::NoSuchVcpu(v))
    }
}

fn intid(i: IntId) -> Result<(), InvalidReply> {
    if i.0 < IntId::LIMIT {
        Ok(())
    } else {
        Err(InvalidReply::BadIntid(i))
    }
}

fn check_action(action: ActionRef<'_>, config: &VmConfig) -> Result<(), InvalidReply> {
    match action {
        ActionRef::SetReg { reg: GuestReg::Gpr(n), .. } if n > LAST_GPR => Err(InvalidReply::NoSuchRegister(n)),
        ActionRef::SetReg { reg: GuestReg::Cpsr, value } if !GUEST_MODES.contains(&(value & CPSR_MODE)) => {
            Err(InvalidReply::ForbiddenMode(value))
        }
        ActionRef::Kick { vcpu: v } => vcpu(v, config),
        ActionRef::PowerOn { vcpu: v, entry, .. } => check_power_on(v, entry, config),
        ActionRef::WriteListRegister { index, value } => {
            if usize::from(index) >= MAX_LRS {
                return Err(InvalidReply::NoSuchListRegister(index));
            }
            check_list_register(value)
        }
        ActionRef::DeactivatePhysical { intid: i } => {
            // Only a PPI or an SPI is linked to a list register (an SGI's
            // deactivation is the guest's own).
            intid(i)?;
            if i.is_sgi() {
                return Err(InvalidReply::BadIntid(i));
            }
            Ok(())
        }
        ActionRef::Send(message) => check_message(message, config),
        ActionRef::ConsoleImageWord { offset, .. } => check_image(Some(offset), config),
        ActionRef::ConsoleImageMap { .. } => check_image(None, config),
        ActionRef::SetReg { .. }
        | ActionRef::AdvancePc
        | ActionRef::InjectUndef
        | ActionRef::InjectDataAbort { .. }
        | ActionRef::InjectPrefetchAbort { .. }
        | ActionRef::CleanInvalidateDcache
        | ActionRef::ConsoleWrite { .. }
        | ActionRef::ConfigureTraps(_)
        | ActionRef::SetCntvoff { .. }
        | ActionRef::SetHypTimer { .. }
        // Only the guest's own timer, on the CPU that runs it.
        | ActionRef::SetVirtualTimerMask { .. }
        | ActionRef::WriteGichHcr { .. }
        | ActionRef::PowerOff
        | ActionRef::WaitForInterrupt
        | ActionRef::Shutdown(_)
        | ActionRef::ConsoleReady { .. } => Ok(()),
    }
}

/// Out of line, as `check_message` is: inlined, the few actions that need
/// more of the configuration than the vCPU count had it all loaded before
/// the loop over every reply's actions (a third of a short reply's check).
#[inline(never)]
fn check_power_on(v: VcpuId, entry: u32, config: &VmConfig) -> Result<(), InvalidReply> {
    vcpu(v, config)?;
    // Bit 0 selects Thumb state; the instruction is at entry & !1.
    if config.ram.contains_ipa(u64::from(entry & !1), 2) {
        Ok(())
    } else {
        Err(InvalidReply::EntryOutsideRam(entry))
    }
}

/// Out of line: the read image changes rarely.
#[inline(never)]
fn check_image(offset: Option<u16>, config: &VmConfig) -> Result<(), InvalidReply> {
    if !config.console_image {
        return Err(InvalidReply::NoConsoleImage);
    }
    match offset {
        Some(o) if !is_image_word(o) => Err(InvalidReply::ImageOffset(o)),
        _ => Ok(()),
    }
}

/// Whether `offset` is a word of the console's read image: aligned, inside
/// its page.
pub fn is_image_word(offset: u16) -> bool {
    offset.is_multiple_of(4) && u64::from(offset) < ipc::config::CONSOLE_IMAGE_SIZE
}

fn check_list_register(value: u32) -> Result<(), InvalidReply> {
    let malformed = Err(InvalidReply::MalformedListRegister(value));
    let state = (value >> lr_bits::STATE_SHIFT) & lr_bits::STATE_MASK;
    if state == 0 {
        // An invalid entry: its other fields mean nothing.
        return Ok(());
    }
    let virtual_id = value & lr_bits::VIRTUAL_ID_MASK;
    if value & LR_RESERVED != 0 || virtual_id >= u32::from(IntId::LIMIT) {
        return malformed;
    }
    if value & lr_bits::HW != 0 {
        let physical = (value >> lr_bits::PHYSICAL_ID_SHIFT) & lr_bits::PHYSICAL_ID_MASK;
        // A hardware link is to a PPI or an SPI.
        if !(16..u32::from(IntId::LIMIT)).contains(&physical) {
            return malformed;
        }
    } else if value & LR_RESERVED_SOFTWARE != 0 {
        return malformed;
    }
    Ok(())
}

#[inline(never)]
fn check_message(message: &Message, config: &VmConfig) -> Result<(), InvalidReply> {
    match message {
        Message::Vcpu(VcpuRequest::Start { vcpu: v }) => vcpu(*v, config),
        Message::Vcpu(VcpuRequest::Trap(trap)) => vcpu(trap.vcpu, config),
        Message::Vcpu(VcpuRequest::ConsoleInput { .. }) => Ok(()),
        Message::Vgic(VgicRequest::Start { vcpu: v, .. })
        | Message::Vgic(VgicRequest::Mmio { vcpu: v, .. })
        | Message::Vgic(VgicRequest::Maintenance { vcpu: v, .. })
        | Message::Vgic(VgicRequest::Sync { vcpu: v, .. })
        | Message::Vgic(VgicRequest::Idle { vcpu: v, .. } | VgicRequest::Wfi { vcpu: v, .. }) => vcpu(*v, config),
        Message::Vgic(VgicRequest::SetLine { intid: i, target, hw, .. }) => {
            intid(*i)?;
            if let Some(v) = target {
                vcpu(*v, config)?;
            }
            hw.map_or(Ok(()), intid)
        }
        Message::Vgic(VgicRequest::Pend { intid: i, target, .. }) => {
            intid(*i)?;
            target.map_or(Ok(()), |v| vcpu(v, config))
        }
        Message::Vtimer(VtimerRequest::Start { vcpu: v, .. })
        | Message::Vtimer(VtimerRequest::Cp15 { vcpu: v, .. })
        | Message::Vtimer(VtimerRequest::Cp15Wide { vcpu: v, .. })
        | Message::Vtimer(VtimerRequest::Fired { vcpu: v, .. }) => vcpu(*v, config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::Action;

    fn reply(actions: &[Action]) -> Reply {
        Reply::of(actions).unwrap()
    }

    #[test]
    fn good_replies_pass() {
        let c = VmConfig::example(2);
        let pending_hw = (1 << lr_bits::STATE_SHIFT) | lr_bits::HW | (27 << lr_bits::PHYSICAL_ID_SHIFT) | 27;
        let pending_sgi = (1 << lr_bits::STATE_SHIFT) | (1 << lr_bits::CPUID_SHIFT) | lr_bits::EOI | 3;
        let good = reply(&[
            Action::SetReg { reg: GuestReg::Gpr(14), value: 1 },
            Action::SetReg { reg: GuestReg::Pc, value: 1 },
            Action::Kick { vcpu: VcpuId(1) },
            Action::PowerOn { vcpu: VcpuId(1), entry: 0x4000_8001, context_id: 0 },
            Action::WriteListRegister { index: 3, value: pending_hw },
            Action::WriteListRegister { index: 0, value: pending_sgi },
            // An invalid entry may hold anything.
            Action::WriteListRegister { index: 1, value: 0xcfff_ffff },
            Action::DeactivatePhysical { intid: IntId(27) },
            Action::Send(Message::Vgic(VgicRequest::SetLine {
                intid: IntId(27),
                level: true,
                target: Some(VcpuId(0)),
                hw: Some(IntId(27)),
                change: 0,
                status: None,
            })),
        ]);
        assert_eq!(check(&good, &c), Ok(()));
        let image = reply(&[
            Action::ConsoleImageWord { offset: 0xffc, value: 1, generation: 1 },
            Action::ConsoleImageWord { offset: 0, value: 1, generation: 1 },
            Action::ConsoleImageMap { mapped: true, generation: 2 },
        ]);
        assert_eq!(check(&image, &c), Ok(()));
    }

    #[test]
    fn each_kind_of_bad_reply_is_named() {
        let c = VmConfig::example(2);
        let cases = [
            (Action::SetReg { reg: GuestReg::Gpr(15), value: 0 }, InvalidReply::NoSuchRegister(15)),
            (Action::Kick { vcpu: VcpuId(2) }, InvalidReply::NoSuchVcpu(VcpuId(2))),
            (
                Action::PowerOn { vcpu: VcpuId(9), entry: 0x4000_8000, context_id: 0 },
                InvalidReply::NoSuchVcpu(VcpuId(9)),
            ),
            (
                Action::PowerOn { vcpu: VcpuId(1), entry: 0x3fff_fffe, context_id: 0 },
                InvalidReply::EntryOutsideRam(0x3fff_fffe),
            ),
            (
                Action::PowerOn { vcpu: VcpuId(1), entry: 0x4800_0000, context_id: 0 },
                InvalidReply::EntryOutsideRam(0x4800_0000),
            ),
            (Action::WriteListRegister { index: 4, value: 0 }, InvalidReply::NoSuchListRegister(4)),
            (
                Action::WriteListRegister { index: 0, value: 0x1000_03ff },
                InvalidReply::MalformedListRegister(0x1000_03ff),
            ),
            (
                Action::WriteListRegister { index: 0, value: 0x1010_0020 },
                InvalidReply::MalformedListRegister(0x1010_0020),
            ),
            (
                Action::WriteListRegister { index: 0, value: 0x1000_2020 },
                InvalidReply::MalformedListRegister(0x1000_2020),
            ),
            // HW with a physical SGI.
            (
                Action::WriteListRegister { index: 0, value: 0x9000_0420 },
                InvalidReply::MalformedListRegister(0x9000_0420),
            ),
            (Action::DeactivatePhysical { intid: IntId(3) }, InvalidReply::BadIntid(IntId(3))),
            (Action::SetReg { reg: GuestReg::Cpsr, value: 0x1da }, InvalidReply::ForbiddenMode(0x1da)),
            (Action::SetReg { reg: GuestReg::Cpsr, value: 0x1d6 }, InvalidReply::ForbiddenMode(0x1d6)),
            (Action::DeactivatePhysical { intid: IntId(1023) }, InvalidReply::BadIntid(IntId(1023))),
            (
                Action::Send(Message::Vtimer(VtimerRequest::Start { vcpu: VcpuId(5), now: 0 })),
                InvalidReply::NoSuchVcpu(VcpuId(5)),
            ),
            (
                Action::Send(Message::Vgic(VgicRequest::SetLine {
                    intid: IntId(2000),
                    level: true,
                    target: None,
                    hw: None,
                    change: 0,
                    status: None,
                })),
                InvalidReply::BadIntid(IntId(2000)),
            ),
        ];
        for (action, why) in cases {
            let bad = reply(&[Action::AdvancePc, action.clone()]);
            assert_eq!(check(&bad, &c), Err(why), "{action:?}");
            assert!(!why.to_string().is_empty());
        }
        for offset in [2, 0x1000, u16::MAX] {
            let bad = reply(&[Action::ConsoleImageWord { offset, value: 0, generation: 1 }]);
            assert_eq!(check(&bad, &c), Err(InvalidReply::ImageOffset(offset)));
        }
        let no_image = VmConfig { console_image: false, ..VmConfig::example(2) };
        for action in [
            Action::ConsoleImageWord { offset: 0, value: 0, generation: 1 },
            Action::ConsoleImageMap { mapped: false, generation: 1 },
        ] {
            assert_eq!(check(&reply(&[action]), &no_image), Err(InvalidReply::NoConsoleImage));
        }
        assert!(!InvalidReply::ImageOffset(2).to_string().is_empty());
        assert!(!InvalidReply::NoConsoleImage.to_string().is_empty());
    }
}
