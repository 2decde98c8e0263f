//! The server through its ipc interface: reply shapes, the Kick/Sync
//! protocol, list-register allocation and maintenance, hardware-linked
//! interrupts, SGIs, Idle, and a randomised whole-machine simulation (guest,
//! virtual CPU interface and monitor modelled) checking that no interrupt is
//! lost or duplicated and no wake-up is missed.

use std::collections::HashMap;
use std::vec::Vec as StdVec;

use super::*;
use crate::testutil::Rng;

const GICD: u64 = 0x0800_0000;

fn config(vcpus: u8, spis: u16) -> VmConfig {
    VmConfig { spis, log_level: 0, ..VmConfig::example(vcpus) }
}

fn access(off: u64, size: AccessSize, write: bool, value: u32, rt: u8) -> MmioAccess {
    MmioAccess {
        ipa: GICD + off,
        far: 0xc000_0000 | off as u32,
        size,
        write,
        value: u64::from(value) & size.mask(),
        rt,
        sign_extend: false,
    }
}

fn req(s: &mut VgicServer, r: VgicRequest) -> StdVec<Action> {
    match s.handle(r) {
        Ok(reply) => reply.actions.into_iter().collect(),
        Err(e) => panic!("{r:?} refused: {e}"),
    }
}

fn write(s: &mut VgicServer, v: u8, off: u64, value: u32) -> StdVec<Action> {
    req(s, VgicRequest::Mmio { vcpu: VcpuId(v), access: access(off, AccessSize::Word, true, value, 0), status: None })
}

fn read(s: &mut VgicServer, v: u8, off: u64) -> u32 {
    read_with(s, v, off, None)
}

/// A word read by vCPU `v`, with the list-register status of its CPU
/// interface at the access if `status`.
fn read_with(s: &mut VgicServer, v: u8, off: u64, status: Option<LrStatus>) -> u32 {
    let access = access(off, AccessSize::Word, false, 0, 2);
    match req(s, VgicRequest::Mmio { vcpu: VcpuId(v), access, status })[..] {
        [Action::SetReg { reg: GuestReg::Gpr(2), value }, Action::AdvancePc] => value,
        ref other => panic!("read reply {other:?}"),
    }
}

fn kicks(actions: &[Action]) -> StdVec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kick { vcpu } => Some(vcpu.0),
            _ => None,
        })
        .collect()
}

/// An unnumbered change of `intid`'s line, for vCPU `target` (or none),
/// backed by `hw`, with the list-register status of the vCPU handled (or
/// none).
fn line(intid: u16, level: bool, target: Option<u8>, hw: Option<u16>, status: Option<LrStatus>) -> VgicRequest {
    VgicRequest::SetLine {
        intid: IntId(intid),
        level,
        target: target.map(VcpuId),
        hw: hw.map(IntId),
        change: 0,
        status,
    }
}

fn set_line(s: &mut VgicServer, intid: u16, level: bool, target: Option<u8>, hw: Option<u16>) -> StdVec<Action> {
    req(s, line(intid, level, target, hw, None))
}

/// A line change delivered while vCPU `v` is handled, with the status of
/// its CPU interface `cpu` (as the router completes it).
fn set_line_on(s: &mut VgicServer, cpu: &CpuIf, v: u8, intid: u16, level: bool, hw: Option<u16>) -> StdVec<Action> {
    req(s, line(intid, level, Some(v), hw, Some(cpu.status())))
}

fn lr_writes(actions: &[Action]) -> StdVec<(u8, ListRegister)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteListRegister { index, value } => Some((*index, ListRegister::decode(*value))),
            _ => None,
        })
        .collect()
}

/// A server for `vcpus` vCPUs, all started with `lrs` list registers, the
/// distributor enabled (both groups) and `spis` SPIs enabled and targeted
/// at vCPU 0.
fn booted(vcpus: u8, spis: u16, lrs: u8) -> VgicServer {
    let mut s = VgicServer::new(&config(vcpus, spis));
    for v in 0..vcpus {
        assert_eq!(
            req(&mut s, VgicRequest::Start { vcpu: VcpuId(v), list_registers: lrs }),
            [Action::Kick { vcpu: VcpuId(v) }]
        );
        write(&mut s, v, 0x100, 0xffff_ffff);
    }
    write(&mut s, 0, 0x000, 3);
    for n in 1..=u64::from(spis / 32) {
        write(&mut s, 0, 0x100 + 4 * n, 0xffff_ffff);
    }
    for intid in (32..32 + u64::from(spis)).step_by(4) {
        write(&mut s, 0, 0x800 + intid, 0x0101_0101);
    }
    s
}

/// The hardware state of one CPU interface and what it reports.
#[derive(Clone, Copy, Debug, Default)]
struct CpuIf {
    lrs: [u32; 4],
    n: usize,
    hcr: u32,
}

impl CpuIf {
    fn new(n: usize) -> Self {
        CpuIf { n, ..CpuIf::default() }
    }

    fn lr(&self, i: usize) -> ListRegister {
        ListRegister::decode(self.lrs[i])
    }

    fn status(&self) -> LrStatus {
        let mut eisr = 0;
        let mut elrsr = 0;
        let mut valid = 0;
        let mut pending = false;
        for i in 0..self.n {
            let lr = self.lr(i);
            let eoi = matches!(lr.link, LrLink::Software { eoi: true, .. });
            if lr.state == LrState::Invalid {
                if eoi {
                    eisr |= 1 << i;
                } else {
                    elrsr |= 1 << i;
                }
            } else {
                valid += 1;
            }
            pending |= lr.state.pending();
        }
        let mut misr = 0;
        if eisr != 0 {
            misr |= lr::misr_bits::EOI;
        }
        if self.hcr & lr::hcr_bits::UIE != 0 && valid <= 1 {
            misr |= lr::misr_bits::U;
        }
        if self.hcr & lr::hcr_bits::NPIE != 0 && !pending {
            misr |= lr::misr_bits::NP;
        }
        let mut lrs = [0; 4];
        lrs[..self.n].copy_from_slice(&self.lrs[..self.n]);
        LrStatus { misr, eisr, elrsr, lrs }
    }

    /// Apply the list-register actions of a reply.
    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::WriteListRegister { index, value } => {
                    assert!(usize::from(*index) < self.n, "LR{index} does not exist");
                    self.lrs[usize::from(*index)] = *value;
                }
                Action::WriteGichHcr { value } => self.hcr = *value,
                _ => {}
            }
        }
    }

    /// The guest acknowledges the best pending entry (by priority, then
    /// index), if any beats `running`.
    fn ack(&mut self, running: u8) -> Option<(usize, ListRegister)> {
        let (i, lr) = (0..self.n)
            .map(|i| (i, self.lr(i)))
            .filter(|(_, lr)| lr.state == LrState::Pending && lr.priority < running)
            .min_by_key(|(i, lr)| (lr.priority, *i))?;
        self.lrs[i] = ListRegister { state: LrState::Active, ..lr }.encode();
        Some((i, lr))
    }

    /// The guest deactivates `intid`: the first valid entry with that
    /// VirtualID (as QEMU's GICv2 finds it). Returns the entry, if any.
    fn deactivate(&mut self, intid: u16) -> Option<ListRegister> {
        let i = (0..self.n).find(|i| self.lr(*i).virtual_id == intid && self.lr(*i).state.active())?;
        let lr = self.lr(i);
        let state = if lr.state == LrState::PendingActive { LrState::Pending } else { LrState::Invalid };
        self.lrs[i] = ListRegister { state, ..lr }.encode();
        Some(lr)
    }

    fn sync(&mut self, s: &mut VgicServer, v: u8) -> StdVec<Action> {
        let actions = req(s, VgicRequest::Sync { vcpu: VcpuId(v), status: self.status() });
        self.apply(&actions);
        actions
    }
}

// ---------------------------------------------------------------- Directed

#[test]
fn mmio_reply_shapes() {
    let mut s = booted(2, 32, 4);
    assert_eq!(read(&mut s, 1, 0x004), 1 | 1 << 5);
    // Byte load with sign extension.
    write(&mut s, 0, 0x400, 0x0000_00f8);
    let mut a = access(0x400, AccessSize::Byte, false, 0, 4);
    a.sign_extend = true;
    assert_eq!(
        req(&mut s, VgicRequest::Mmio { vcpu: VcpuId(0), access: a, status: None }),
        [Action::SetReg { reg: GuestReg::Gpr(4), value: 0xffff_fff8 }, Action::AdvancePc]
    );
    a.sign_extend = false;
    assert_eq!(
        req(&mut s, VgicRequest::Mmio { vcpu: VcpuId(0), access: a, status: None })[0],
        Action::SetReg { reg: GuestReg::Gpr(4), value: 0xf8 }
    );
    // A write that makes nothing deliverable kicks no one.
    assert_eq!(write(&mut s, 0, 0x420, 0x8080_8080), [Action::AdvancePc]);
    // A load into the PC is not emulated.
    let pc = access(0x004, AccessSize::Word, false, 0, 15);
    assert_eq!(
        req(&mut s, VgicRequest::Mmio { vcpu: VcpuId(0), access: pc, status: None }),
        [Action::InjectDataAbort { far: 0xc000_0004 }]
    );
    // Beyond the 4 KiB frame, inside the 64 KiB region: RAZ/WI.
    assert_eq!(read(&mut s, 0, 0x8000), 0);
    assert_eq!(write(&mut s, 0, 0x8000, 0xffff_ffff), [Action::AdvancePc]);
    // Outside the region altogether (a router bug): RAZ/WI too.
    let mut outside = access(0, AccessSize::Word, false, 0, 1);
    outside.ipa = 0x100;
    assert_eq!(
        req(&mut s, VgicRequest::Mmio { vcpu: VcpuId(0), access: outside, status: None }),
        [Action::SetReg { reg: GuestReg::Gpr(1), value: 0 }, Action::AdvancePc]
    );
}

#[test]
fn bad_requests_get_typed_errors() {
    let mut s = booted(2, 32, 4);
    let status = LrStatus::default();
    assert_eq!(s.handle(VgicRequest::Sync { vcpu: VcpuId(2), status }), Err(ServerError::NoSuchVcpu(VcpuId(2))));
    assert_eq!(
        s.handle(VgicRequest::Mmio { vcpu: VcpuId(9), access: access(0, AccessSize::Word, false, 0, 0), status: None }),
        Err(ServerError::NoSuchVcpu(VcpuId(9)))
    );
    assert_eq!(s.handle(VgicRequest::Start { vcpu: VcpuId(0), list_registers: 0 }), Err(ServerError::Unexpected));
    let line = |intid, target, hw| VgicRequest::SetLine {
        intid: IntId(intid),
        level: true,
        target,
        hw,
        change: 0,
        status: None,
    };
    assert_eq!(s.handle(line(3, Some(VcpuId(0)), None)), Err(ServerError::Unexpected), "SGI");
    assert_eq!(s.handle(line(27, None, None)), Err(ServerError::Unexpected), "PPI without vCPU");
    assert_eq!(s.handle(line(27, Some(VcpuId(5)), None)), Err(ServerError::NoSuchVcpu(VcpuId(5))));
    assert_eq!(s.handle(line(64, None, None)), Err(ServerError::Unexpected), "SPI not implemented");
    assert_eq!(s.handle(line(1020, None, None)), Err(ServerError::Unexpected));
    assert_eq!(s.handle(line(40, None, Some(IntId(3)))), Err(ServerError::Unexpected), "hw link to an SGI");
    assert_eq!(
        s.handle_message(Message::Vcpu(ipc::VcpuRequest::Start { vcpu: VcpuId(0) })),
        Err(ServerError::WrongServer)
    );
    assert_eq!(VgicServer::ID, ServerId::Vgic);
}

#[test]
fn kick_then_sync_writes_the_list_register() {
    let mut s = booted(2, 32, 4);
    let mut cpu1 = CpuIf::new(4);
    // Nothing pending: the first Sync only enables the virtual interface.
    assert_eq!(cpu1.sync(&mut s, 1), [Action::WriteGichHcr { value: lr::hcr_bits::EN }]);
    assert_eq!(cpu1.sync(&mut s, 1), [], "nothing changed, nothing written");
    // SPI 40, level-sensitive, targeted at vCPU 1, priority 0x40.
    write(&mut s, 0, 0x828, 0x0000_0002);
    write(&mut s, 0, 0x428, 0x0000_0040);
    let actions = set_line(&mut s, 40, true, None, None);
    assert_eq!(actions, [Action::Kick { vcpu: VcpuId(1) }], "no list register without a status");
    let actions = cpu1.sync(&mut s, 1);
    assert_eq!(
        lr_writes(&actions),
        [(
            0,
            ListRegister {
                virtual_id: 40,
                link: LrLink::Software { cpuid: 0, eoi: true },
                priority: 0x40,
                state: LrState::Pending,
                group1: false,
            }
        )]
    );
    // Group 1 shows in the list register.
    write(&mut s, 0, 0x084, 1 << 8);
    cpu1.sync(&mut s, 1);
    assert!(cpu1.lr(0).group1);
    // The line drops before the guest saw it: the entry goes.
    assert_eq!(kicks(&set_line(&mut s, 40, false, None, None)), [1]);
    let actions = cpu1.sync(&mut s, 1);
    assert_eq!(actions, [Action::WriteListRegister { index: 0, value: 0 }]);
}

/// An SPI raised while the router handles a vCPU comes with that vCPU's
/// status: if the SPI goes there, the reply lists it at once (no kick, no
/// `Sync`); if it goes elsewhere, or another vCPU's list registers hold it,
/// that vCPU is kicked and the one handled gets nothing of it.
#[test]
fn an_spi_changed_while_handling_a_vcpu_is_listed_in_the_reply() {
    let mut s = booted(2, 32, 4);
    let (mut cpu0, mut cpu1) = (CpuIf::new(4), CpuIf::new(4));
    cpu0.sync(&mut s, 0);
    cpu1.sync(&mut s, 1);
    let on =
        |s: &mut VgicServer, cpu: &CpuIf, v: u8, intid: u16, level: bool| set_line_on(s, cpu, v, intid, level, None);
    // SPI 40 goes to vCPU 0, SPI 41 to vCPU 1.
    write(&mut s, 0, 0x828, 0x0000_0201);
    let actions = on(&mut s, &cpu0, 0, 40, true);
    assert!(kicks(&actions).is_empty(), "{actions:x?}");
    let written = lr_writes(&actions);
    assert_eq!(written.len(), 1, "{actions:x?}");
    assert_eq!((written[0].1.virtual_id, written[0].1.state), (40, LrState::Pending));
    cpu0.apply(&actions);
    let actions = on(&mut s, &cpu0, 0, 41, true);
    assert_eq!(actions, [Action::Kick { vcpu: VcpuId(1) }]);
    cpu1.sync(&mut s, 1);
    assert_eq!((cpu1.lr(0).virtual_id, cpu1.lr(0).state), (41, LrState::Pending));
    // SPI 41 now goes to vCPU 0 while vCPU 1's list register still holds
    // it; its line falls and rises again on vCPU 0 before vCPU 1 syncs: it
    // stays vCPU 1's until released there.
    // (vCPU 0 synced just before: nothing else changed for it.)
    write(&mut s, 0, 0x828, 0x0000_0101);
    on(&mut s, &cpu0, 0, 41, false);
    cpu0.sync(&mut s, 0);
    let actions = on(&mut s, &cpu0, 0, 41, true);
    assert!(lr_writes(&actions).iter().all(|(_, lr)| lr.virtual_id != 41), "{actions:x?}");
    assert_eq!(kicks(&actions), [1]);
}

/// What another vCPU does with its own SGIs and PPIs (its timer's tick,
/// taken and finished; an IPI to itself) leaves a vCPU's refresh inputs as
/// they were, so that its next refresh may still take a shortcut; an SPI's
/// change, or any register write, does count against it.
#[test]
fn another_vcpu_s_private_interrupts_leave_a_vcpu_s_inputs_alone() {
    let mut s = booted(2, 32, 4);
    let (mut cpu0, mut cpu1) = (CpuIf::new(4), CpuIf::new(4));
    cpu0.sync(&mut s, 0);
    cpu1.sync(&mut s, 1);
    let (before, before1) = (s.inputs(VcpuId(0)), s.inputs(VcpuId(1)));
    assert_eq!(s.cpus[0].synced, Some(before));
    // vCPU 1's timer fires on its CPU (listed in the reply), is taken,
    // finished (EOI maintenance), and vCPU 1 sends itself an SGI.
    let actions = set_line_on(&mut s, &cpu1, 1, 27, true, Some(27));
    cpu1.apply(&actions);
    assert_eq!(cpu1.ack(0xff).map(|(_, lr)| lr.virtual_id), Some(27), "{actions:x?}");
    assert!(cpu1.deactivate(27).is_some());
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(1), status: cpu1.status() });
    cpu1.apply(&actions);
    write(&mut s, 1, 0xf00, (2 << 24) | 3);
    cpu1.sync(&mut s, 1);
    assert_eq!(s.inputs(VcpuId(0)), before, "vCPU 1's own interrupts counted against vCPU 0");
    assert_ne!(s.inputs(VcpuId(1)), before1, "vCPU 1's own interrupts not counted");
    // An SPI's line, or a register write, counts for every vCPU.
    set_line(&mut s, 40, true, None, None);
    let after_spi = s.inputs(VcpuId(0));
    assert_ne!(after_spi, before);
    write(&mut s, 1, 0x41c, 0xa0a0_a0a0);
    assert_ne!(s.inputs(VcpuId(0)), after_spi);
}

#[test]
fn a_status_the_guest_did_nothing_with_is_not_folded() {
    let mut s = booted(2, 32, 4);
    let mut cpu1 = CpuIf::new(4);
    cpu1.sync(&mut s, 1);
    // SPIs 40 and 41, targeted at vCPU 1, both listed.
    write(&mut s, 0, 0x828, 0x0000_0202);
    set_line(&mut s, 40, true, None, None);
    set_line(&mut s, 41, true, None, None);
    cpu1.sync(&mut s, 1);
    assert_eq!(cpu1.lr(0).state, LrState::Pending);
    // Untouched registers: the same as the server's record, and a fold
    // would change nothing.
    let cpu = s.cpus[1];
    assert!(cpu.unchanged(&cpu1.status()));
    let mut folded = s.clone();
    folded.fold(VcpuId(1), &cpu1.status());
    assert_eq!(folded, s);
    let held: StdVec<u16> = s.fold_status(VcpuId(1), &cpu1.status()).into_iter().collect();
    assert_eq!(held, [40, 41]);
    assert_eq!(folded, s);
    // The guest acknowledges one: changed, folded, seen by a read of
    // GICD_ISACTIVER1.
    cpu1.ack(0xff).expect("a pending entry");
    assert!(!s.cpus[1].unchanged(&cpu1.status()));
    assert_eq!(read_with(&mut s, 1, 0x304, Some(cpu1.status())) & (1 << 8), 1 << 8);
    // A register that is valid where the server listed nothing is not
    // "unchanged" (the fold reports it).
    let mut status = cpu1.status();
    status.lrs[3] = ListRegister { virtual_id: 50, ..cpu1.lr(0) }.encode();
    assert!(!s.cpus[1].unchanged(&status));
}

#[test]
fn distributor_and_group_enables_gate_forwarding() {
    let mut s = booted(2, 32, 4);
    let mut cpu = CpuIf::new(4);
    set_line(&mut s, 35, true, None, None);
    cpu.sync(&mut s, 0);
    assert_eq!(cpu.lr(0).virtual_id, 35);
    // GICD_CTLR off: the holder is kicked and the pending entry withdrawn.
    assert_eq!(kicks(&write(&mut s, 1, 0x000, 0)), [0, 1]);
    assert_eq!(cpu.sync(&mut s, 0), [Action::WriteListRegister { index: 0, value: 0 }]);
    // Group 1 only: a Group 0 interrupt stays out.
    write(&mut s, 1, 0x000, 2);
    assert_eq!(cpu.sync(&mut s, 0), []);
    // Moved to Group 1, it is forwarded, with Grp1 in its list register.
    assert_eq!(kicks(&write(&mut s, 1, 0x084, 1 << 3)), [0]);
    cpu.sync(&mut s, 0);
    assert_eq!((cpu.lr(0).virtual_id, cpu.lr(0).group1), (35, true));
    // An active interrupt stays in its list register whatever the enables.
    cpu.ack(0xff);
    set_line(&mut s, 35, false, None, None);
    write(&mut s, 1, 0x000, 0);
    write(&mut s, 1, 0x184, 1 << 3);
    cpu.sync(&mut s, 0);
    assert_eq!(cpu.lr(0).state, LrState::Active);
}

#[test]
fn an_older_change_of_a_line_delivered_late_is_ignored() {
    let mut s = booted(2, 32, 4);
    let line = |s: &mut VgicServer, level, change| {
        req(s, VgicRequest::SetLine { intid: IntId(33), level, target: None, hw: None, change, status: None })
    };
    // The UART's line fell (change 1), then rose (change 2), but two CPUs
    // delivered the rise first: the late fall must not lower it.
    assert!(!line(&mut s, true, 2).is_empty(), "the rise kicks the target");
    assert_eq!(line(&mut s, false, 1), [], "the older fall changes nothing");
    assert!(s.distributor().spi(33).is_some_and(|x| x.line && x.pending()));
    // The same change again is no newer either.
    assert_eq!(line(&mut s, false, 2), []);
    assert!(s.distributor().spi(33).is_some_and(|x| x.line));
    // A newer one is taken, across the wrap of the numbers.
    line(&mut s, false, 3);
    assert!(s.distributor().spi(33).is_some_and(|x| !x.line));
    let mut wrapped = booted(2, 32, 4);
    line(&mut wrapped, true, u32::MAX);
    line(&mut wrapped, false, 1);
    assert!(wrapped.distributor().spi(33).is_some_and(|x| !x.line), "1 comes after u32::MAX");
    // Unnumbered changes (0: a source on one CPU) are always taken.
    set_line(&mut s, 33, false, None, None);
    assert!(s.distributor().spi(33).is_some_and(|x| !x.line));
}

#[test]
fn level_interrupt_with_eoi_maintenance() {
    let mut s = booted(1, 32, 4);
    let mut cpu = CpuIf::new(4);
    set_line(&mut s, 33, true, None, None);
    cpu.sync(&mut s, 0);
    assert!(matches!(cpu.lr(0).link, LrLink::Software { eoi: true, .. }));
    // The guest acknowledges, and deactivates with the line still high.
    cpu.ack(0xff);
    cpu.deactivate(33);
    let status = cpu.status();
    assert_eq!(status.misr, lr::misr_bits::EOI);
    assert_eq!(status.eisr, 1);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status });
    cpu.apply(&actions);
    assert_eq!(cpu.lr(0).state, LrState::Pending, "still asserted: pending again");
    assert_eq!(cpu.status().misr, 0);
    // This time the handler lowers the line before the EOI.
    cpu.ack(0xff);
    assert_eq!(kicks(&set_line(&mut s, 33, false, None, None)), [0]);
    cpu.sync(&mut s, 0);
    assert_eq!(cpu.lr(0).state, LrState::Active, "active, no longer pending");
    cpu.deactivate(33);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status: cpu.status() });
    assert_eq!(actions, [Action::WriteListRegister { index: 0, value: 0 }]);
    assert!(!s.distributor().spi(33).is_some_and(|x| x.pending() || x.active));
}

#[test]
fn more_pending_than_list_registers() {
    let mut s = booted(1, 32, 4);
    let mut cpu = CpuIf::new(4);
    // Six edge SPIs, 40-45, with priorities that reverse their order.
    write(&mut s, 0, 0xc08, 0xaaaa_aaaa);
    for (i, intid) in (40u64..46).enumerate() {
        let prio = 0xf0 - 0x10 * i as u32;
        let shift = 8 * (intid % 4);
        let old = read(&mut s, 0, 0x400 + (intid & !3));
        write(&mut s, 0, 0x400 + (intid & !3), old & !(0xff << shift) | prio << shift);
        set_line(&mut s, intid as u16, true, None, None);
    }
    let actions = cpu.sync(&mut s, 0);
    let mut placed: StdVec<u16> = lr_writes(&actions).iter().map(|(_, lr)| lr.virtual_id).collect();
    placed.sort();
    assert_eq!(placed, [42, 43, 44, 45], "the four highest priorities");
    assert_eq!(cpu.hcr, lr::hcr_bits::EN | lr::hcr_bits::NPIE, "told when they are all taken");
    assert_eq!(cpu.status().misr, 0);
    // The guest takes them one by one, highest first.
    let mut order = StdVec::new();
    while let Some((_, lr)) = cpu.ack(0xff) {
        order.push(lr.virtual_id);
        cpu.deactivate(lr.virtual_id);
    }
    assert_eq!(order, [45, 44, 43, 42]);
    let status = cpu.status();
    // Each finished entry asked for EOI maintenance too (some were left
    // out): the first of them would have brought the refresh.
    assert_eq!(status.misr, lr::misr_bits::NP | lr::misr_bits::EOI);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status });
    cpu.apply(&actions);
    let mut placed: StdVec<u16> =
        (0..4).map(|i| cpu.lr(i)).filter(|l| l.state != LrState::Invalid).map(|l| l.virtual_id).collect();
    placed.sort();
    assert_eq!(placed, [40, 41]);
    assert_eq!(cpu.hcr, lr::hcr_bits::EN, "everything fits now");
}

/// An interrupt left out for want of list registers gets the first one
/// the guest frees, even when the entry still pending is also active (its
/// pending instance cannot be taken before the active one is finished, so
/// the "no pending" maintenance alone would wait on the guest's handler).
/// Found by the `vgic_server` fuzz target.
#[test]
fn a_freed_list_register_goes_to_an_interrupt_left_out() {
    let mut s = booted(1, 32, 2);
    let mut cpu = CpuIf::new(2);
    write(&mut s, 0, 0xc08, 0xaaaa_aaaa);
    // SGI 1 taken, then sent again: pending and active.
    write(&mut s, 0, 0xf00, 0x0200_0001);
    cpu.sync(&mut s, 0);
    cpu.ack(0xff);
    write(&mut s, 0, 0xf00, 0x0200_0001);
    cpu.sync(&mut s, 0);
    // SGI 2 and SPI 40: one of them does not fit.
    write(&mut s, 0, 0xf00, 0x0200_0002);
    set_line(&mut s, 40, true, None, None);
    cpu.sync(&mut s, 0);
    let listed = |cpu: &CpuIf| (0..2).map(|i| cpu.lr(i)).filter(|l| l.state != LrState::Invalid).count();
    assert_eq!(listed(&cpu), 2);
    let left_out = if (0..2).any(|i| cpu.lr(i).virtual_id == 40) { 2 } else { 40 };
    let other = if left_out == 40 { 2 } else { 40 };
    // The guest takes the other one and finishes it, SGI 1 still active.
    let (_, lr) = cpu.ack(0xff).expect("something to take");
    assert_eq!(lr.virtual_id, other);
    cpu.deactivate(other);
    let status = cpu.status();
    assert_ne!(status.misr & lr::misr_bits::EOI, 0, "the freed register brings a maintenance interrupt");
    cpu.apply(&req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status }));
    assert!((0..2).any(|i| cpu.lr(i).virtual_id == left_out), "INTID {left_out} listed");
}

#[test]
fn all_list_registers_active_use_eoi_maintenance() {
    let mut s = booted(1, 32, 2);
    let mut cpu = CpuIf::new(2);
    write(&mut s, 0, 0xc08, 0xaaaa_aaaa);
    // 40 is the lowest priority, 42 the highest: the guest nests 41 in 40.
    write(&mut s, 0, 0x428, 0x00_20_40_60);
    set_line(&mut s, 40, true, None, None);
    cpu.sync(&mut s, 0);
    cpu.ack(0xff);
    set_line(&mut s, 41, true, None, None);
    cpu.sync(&mut s, 0);
    cpu.ack(0x60);
    set_line(&mut s, 42, true, None, None);
    // Two active entries fill both registers; 42 waits.
    let actions = cpu.sync(&mut s, 0);
    assert!(lr_writes(&actions).iter().all(|(_, l)| l.state == LrState::Active));
    assert_eq!(cpu.hcr, lr::hcr_bits::EN);
    assert!((0..2).all(|i| matches!(cpu.lr(i).link, LrLink::Software { eoi: true, .. })));
    assert_eq!(cpu.status().misr, 0, "no maintenance storm while the guest works");
    cpu.deactivate(41);
    let status = cpu.status();
    assert_ne!(status.misr & lr::misr_bits::EOI, 0);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status });
    cpu.apply(&actions);
    assert!((0..2).any(|i| cpu.lr(i).virtual_id == 42 && cpu.lr(i).state == LrState::Pending));
    assert_eq!(cpu.hcr, lr::hcr_bits::EN);
}

/// A private line of the vCPU being handled, sent with its status (the
/// router does that for the trapping vCPU's own lines): the list registers
/// are written in the reply, as the `Sync` after a kick would have.
#[test]
fn a_private_line_with_the_status_refreshes_in_place_of_a_kick() {
    let timer = |status| VgicRequest::SetLine {
        intid: IntId(27),
        level: true,
        target: Some(VcpuId(1)),
        hw: Some(IntId(27)),
        change: 0,
        status,
    };
    // The kick and the Sync it brings...
    let mut kicked = booted(2, 32, 4);
    write(&mut kicked, 1, 0x418, 0x8000_0000);
    let mut cpu = CpuIf::new(4);
    assert_eq!(kicks(&req(&mut kicked, timer(None))), [1]);
    let synced = cpu.sync(&mut kicked, 1);
    // ... and the line with the status: the same list registers at once.
    let mut direct = booted(2, 32, 4);
    write(&mut direct, 1, 0x418, 0x8000_0000);
    let at_once = req(&mut direct, timer(Some(CpuIf::new(4).status())));
    assert_eq!(kicks(&at_once), [], "no kick of the vCPU refreshed");
    assert_eq!(lr_writes(&at_once), lr_writes(&synced));
    assert_eq!(lr_writes(&at_once).len(), 1);
    assert_eq!(direct, kicked, "the same state either way");
}

/// The virtual timer's interrupt, backed by the physical PPI 27 that the
/// monitor acknowledged and left active, goes into a software list register
/// that asks for EOI maintenance, and the guest's EOI leads to this server
/// deactivating the physical interrupt. Never a hardware-linked one: QEMU
/// does not re-signal a physical interrupt that a guest's EOI deactivates
/// through one while its line is still high (the timer of a guest that
/// re-arms a deadline already passed), and the ticks stopped.
#[test]
fn timer_backed_by_the_physical_interrupt() {
    let mut s = booted(2, 32, 4);
    let mut cpu1 = CpuIf::new(4);
    write(&mut s, 1, 0x418, 0x8000_0000);
    assert_eq!(kicks(&set_line(&mut s, 27, true, Some(1), Some(27))), [1]);
    cpu1.sync(&mut s, 1);
    assert_eq!(
        cpu1.lr(0),
        ListRegister {
            virtual_id: 27,
            link: LrLink::Software { cpuid: 0, eoi: true },
            priority: 0x80,
            state: LrState::Pending,
            group1: false
        }
    );
    // Taken: the physical interrupt stays active while the guest handles it.
    cpu1.ack(0xff);
    assert_eq!(cpu1.status().misr, 0);
    assert_eq!(cpu1.sync(&mut s, 1), []);
    // Finished: EOI maintenance, and the server deactivates it, once.
    cpu1.deactivate(27);
    let status = cpu1.status();
    assert_eq!(status.misr, lr::misr_bits::EOI);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(1), status });
    cpu1.apply(&actions);
    assert_eq!(
        actions,
        [Action::WriteListRegister { index: 0, value: 0 }, Action::DeactivatePhysical { intid: IntId(27) }]
    );
    assert_eq!(cpu1.sync(&mut s, 1), [], "owed once");
    // Fired again, but the guest clears it before taking it: the server
    // deactivates the physical interrupt itself, on the owner's CPU.
    set_line(&mut s, 27, true, Some(1), Some(27));
    cpu1.sync(&mut s, 1);
    assert_eq!(kicks(&write(&mut s, 1, 0x280, 1 << 27)), [1]);
    let actions = cpu1.sync(&mut s, 1);
    assert_eq!(
        actions,
        [Action::WriteListRegister { index: 0, value: 0 }, Action::DeactivatePhysical { intid: IntId(27) }]
    );
    assert_eq!(cpu1.sync(&mut s, 1), [], "owed once");
    // Disabled while pending: stays pending, physical stays active (the
    // guest handles it once re-enabled).
    set_line(&mut s, 27, true, Some(1), Some(27));
    write(&mut s, 1, 0x180, 1 << 27);
    let actions = cpu1.sync(&mut s, 1);
    assert!(!actions.iter().any(|a| matches!(a, Action::DeactivatePhysical { .. })));
    assert_eq!(cpu1.lr(0).state, LrState::Invalid);
    write(&mut s, 1, 0x100, 1 << 27);
    cpu1.sync(&mut s, 1);
    assert_eq!(cpu1.lr(0).link, LrLink::Software { cpuid: 0, eoi: true });
    // Set pending by the guest while active: active and pending, and the
    // physical interrupt stays active until the guest finished both.
    cpu1.ack(0xff);
    write(&mut s, 1, 0x200, 1 << 27);
    cpu1.sync(&mut s, 1);
    assert_eq!(cpu1.lr(0).state, LrState::PendingActive);
    cpu1.deactivate(27);
    let actions = req(&mut s, VgicRequest::Sync { vcpu: VcpuId(1), status: cpu1.status() });
    cpu1.apply(&actions);
    assert!(!actions.iter().any(|a| matches!(a, Action::DeactivatePhysical { .. })));
    cpu1.ack(0xff);
    cpu1.deactivate(27);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(1), status: cpu1.status() });
    assert_eq!(actions.last(), Some(&Action::DeactivatePhysical { intid: IntId(27) }));
}

/// The virtual timer delivered masked (`Pend`): pending by its latch with
/// the line low, listed without EOI maintenance, so the guest finishes it
/// silently; the next refresh folds that in. With the status of the vCPU
/// handled, listed in the reply itself. A rise of the line meanwhile asks
/// for the EOI's sample again.
#[test]
fn a_pended_timer_is_finished_without_maintenance() {
    let pend = |status| VgicRequest::Pend { intid: IntId(27), target: Some(VcpuId(1)), status, masked_timer: true };
    let mut s = booted(2, 32, 4);
    let mut cpu1 = CpuIf::new(4);
    write(&mut s, 1, 0x418, 0x8000_0000);
    // Without a status: a kick, and the Sync lists it.
    assert_eq!(kicks(&req(&mut s, pend(None))), [1]);
    assert!(s.distributor().ppi(VcpuId(1), 27).is_some_and(|x| x.pending() && !x.line));
    cpu1.sync(&mut s, 1);
    let listed = ListRegister {
        virtual_id: 27,
        link: LrLink::Software { cpuid: 0, eoi: false },
        priority: 0x80,
        state: LrState::Pending,
        group1: false,
    };
    assert_eq!(cpu1.lr(0), listed);
    // Taken and finished: no maintenance; the next refresh sees it done.
    cpu1.ack(0xff);
    assert_eq!(cpu1.sync(&mut s, 1), [], "active: the register stays as the guest left it");
    cpu1.deactivate(27);
    assert_eq!(cpu1.status().misr, 0, "no EOI maintenance");
    let actions = cpu1.sync(&mut s, 1);
    assert!(!actions.iter().any(|a| matches!(a, Action::DeactivatePhysical { .. })));
    assert!(s.distributor().ppi(VcpuId(1), 27).is_some_and(|x| x.idle()));
    // Handled on its own CPU: listed in the reply, no kick.
    let actions = req(&mut s, pend(Some(cpu1.status())));
    assert_eq!(kicks(&actions), []);
    assert_eq!(lr_writes(&actions), [(0, listed)]);
    cpu1.apply(&actions);
    // Taken; the line then rises (a guest that unmasked a timer already
    // due): the EOI is sampled again, and with the line still high at the
    // EOI the interrupt is pending once more.
    cpu1.ack(0xff);
    assert_eq!(kicks(&set_line(&mut s, 27, true, Some(1), None)), [1]);
    cpu1.sync(&mut s, 1);
    assert_eq!(cpu1.lr(0).link, LrLink::Software { cpuid: 0, eoi: true });
    cpu1.deactivate(27);
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(1), status: cpu1.status() });
    cpu1.apply(&actions);
    assert_eq!(cpu1.lr(0).state, LrState::Pending, "still high at the EOI");
    // A Pend of an interrupt the VM does not have, or of a PPI without its
    // vCPU, is refused.
    let bad = VgicRequest::Pend { intid: IntId(27), target: Some(VcpuId(2)), status: None, masked_timer: true };
    assert!(s.handle(bad).is_err());
    assert!(s.handle(VgicRequest::Pend { intid: IntId(27), target: None, status: None, masked_timer: true }).is_err());
    assert!(s
        .handle(VgicRequest::Pend { intid: IntId(100), target: None, status: None, masked_timer: false })
        .is_err());
}

/// A refresh whose reply has no room left for the physical deactivation it
/// owes (a full reply: list-register writes and kicks of other vCPUs) kicks
/// its own vCPU instead, so that the monitor finishes it with a `Sync`
/// before re-entering the vCPU, and lets no `Idle` wait meanwhile: the
/// interrupt still active may be the one that would wake it.
#[test]
fn a_deactivation_that_does_not_fit_is_finished_before_the_vcpu_runs() {
    for idle in [false, true] {
        let mut s = booted(2, 32, 4);
        let mut cpu1 = CpuIf::new(4);
        set_line(&mut s, 27, true, Some(1), Some(27));
        cpu1.sync(&mut s, 1);
        cpu1.ack(0xff);
        cpu1.deactivate(27);
        // Room for two: the list register's write, and the kick.
        let mut reply = Reply::of(&[const { Action::AdvancePc }; ipc::MAX_ACTIONS - 2]).unwrap();
        let request = if idle {
            VgicRequest::Idle { vcpu: VcpuId(1), status: cpu1.status() }
        } else {
            VgicRequest::Maintenance { vcpu: VcpuId(1), status: cpu1.status() }
        };
        s.handle_into(&request, &mut reply).expect("a reply");
        let actions: StdVec<Action> = reply.actions.iter().skip(ipc::MAX_ACTIONS - 2).collect();
        assert_eq!(actions, [Action::WriteListRegister { index: 0, value: 0 }, Action::Kick { vcpu: VcpuId(1) }]);
        cpu1.apply(&actions);
        // The monitor's Sync for the kick deactivates it, once.
        assert_eq!(cpu1.sync(&mut s, 1), [Action::DeactivatePhysical { intid: IntId(27) }]);
        assert_eq!(cpu1.sync(&mut s, 1), [], "owed once");
        // With room, the same refresh deactivates at once, and an Idle
        // waits.
        set_line(&mut s, 27, true, Some(1), Some(27));
        cpu1.sync(&mut s, 1);
        cpu1.ack(0xff);
        cpu1.deactivate(27);
        let actions = req(&mut s, VgicRequest::Idle { vcpu: VcpuId(1), status: cpu1.status() });
        assert_eq!(
            actions,
            [
                Action::WriteListRegister { index: 0, value: 0 },
                Action::DeactivatePhysical { intid: IntId(27) },
                Action::WaitForInterrupt
            ]
        );
    }
}

/// Distributor reads see what the guest did through the virtual CPU
/// interface since the last refresh, from the status the access carries:
/// after it acknowledges SGI 10 and the edge SPI 40 (no trap),
/// GICD_ISACTIVERn shows them active and GICD_ISPENDRn no longer pending, as
/// on hardware; a level SPI whose line is still high is active and pending.
#[test]
fn distributor_reads_see_the_list_registers() {
    let mut s = booted(2, 32, 4);
    let mut cpu0 = CpuIf::new(4);
    write(&mut s, 0, 0xc08, 0x0002_0000);
    write(&mut s, 0, 0xf00, 2 << 24 | 10);
    set_line(&mut s, 40, true, None, None);
    set_line(&mut s, 33, true, None, None);
    cpu0.sync(&mut s, 0);
    let bits = |s: &mut VgicServer, off, status| (read_with(s, 0, off, status), read_with(s, 0, off + 4, status));
    let (sgi, spi40, spi33) = (1 << 10, 1 << 8, 1 << 1);
    assert_eq!(bits(&mut s, 0x200, Some(cpu0.status())), (sgi, spi40 | spi33), "pending");
    assert_eq!(bits(&mut s, 0x300, Some(cpu0.status())), (0, 0), "not active");
    while cpu0.ack(0xff).is_some() {}
    // Without a status: the state of the last refresh.
    assert_eq!(bits(&mut s, 0x300, None), (0, 0));
    let status = Some(cpu0.status());
    assert_eq!(bits(&mut s, 0x300, status), (sgi, spi40 | spi33), "active");
    assert_eq!(bits(&mut s, 0x200, status), (0, spi33), "pending: only the level SPI with its line high");
    // Deactivated through GICV: neither.
    cpu0.deactivate(10);
    cpu0.deactivate(40);
    let status = cpu0.status();
    let actions = req(
        &mut s,
        VgicRequest::Mmio {
            vcpu: VcpuId(0),
            access: access(0x300, AccessSize::Word, false, 0, 2),
            status: Some(status),
        },
    );
    assert_eq!(
        actions,
        [Action::SetReg { reg: GuestReg::Gpr(2), value: 0 }, Action::AdvancePc],
        "no list register written"
    );
    assert_eq!(bits(&mut s, 0x300, Some(status)), (0, spi33));
    // The next refresh agrees with what the reads took in: 33 (line high)
    // goes back in as active and pending, nothing else is written.
    let actions = cpu0.sync(&mut s, 0);
    assert_eq!(lr_writes(&actions).len(), 1, "{actions:?}");
    assert!((0..4).any(|i| cpu0.lr(i).virtual_id == 33 && cpu0.lr(i).state == LrState::PendingActive));
    assert!((0..4).all(|i| cpu0.lr(i).virtual_id == 33 || cpu0.lr(i).state == LrState::Invalid));
}

/// An SPI that its holder finished is passed on from a distributor access
/// that carries the status, as from a refresh.
#[test]
fn a_distributor_access_passes_on_a_finished_spi() {
    let mut s = booted(2, 32, 4);
    let mut cpu0 = CpuIf::new(4);
    write(&mut s, 0, 0xc08, 0x0002_0000);
    set_line(&mut s, 40, true, None, None);
    cpu0.sync(&mut s, 0);
    cpu0.ack(0xff);
    // Retargeted at vCPU 1 and raised again while vCPU 0 holds it.
    write(&mut s, 1, 0x828, 0x0000_0002);
    set_line(&mut s, 40, true, None, None);
    cpu0.deactivate(40);
    let actions = req(
        &mut s,
        VgicRequest::Mmio {
            vcpu: VcpuId(0),
            access: access(0x004, AccessSize::Word, false, 0, 2),
            status: Some(cpu0.status()),
        },
    );
    assert_eq!(kicks(&actions), [1]);
    let mut cpu1 = CpuIf::new(4);
    cpu1.sync(&mut s, 1);
    assert_eq!((cpu1.lr(0).virtual_id, cpu1.lr(0).state), (40, LrState::Pending));
}

#[test]
fn sgir_filters_kick_their_targets() {
    let mut s = booted(4, 32, 4);
    assert_eq!(kicks(&write(&mut s, 1, 0xf00, 0x0100_0002)), [0, 2, 3]);
    assert_eq!(kicks(&write(&mut s, 1, 0xf00, 0x0200_0002)), [1]);
    assert_eq!(kicks(&write(&mut s, 1, 0xf00, 0x00fa_0002)), [1, 3]);
    assert_eq!(kicks(&write(&mut s, 1, 0xf00, 0x03ff_0002)), []);
    assert_eq!(write(&mut s, 1, 0xf00, 0x03ff_0002), [Action::AdvancePc]);
}

#[test]
fn one_sgi_from_several_requesters() {
    let mut s = booted(4, 32, 4);
    let mut cpu0 = CpuIf::new(4);
    write(&mut s, 2, 0xf00, 0x0001_0005);
    write(&mut s, 3, 0xf00, 0x0001_0005);
    write(&mut s, 1, 0xf00, 0x0001_0005);
    cpu0.sync(&mut s, 0);
    let valid: StdVec<ListRegister> = (0..4).map(|i| cpu0.lr(i)).filter(|l| l.state != LrState::Invalid).collect();
    assert_eq!(valid.len(), 1, "one list register per INTID");
    assert_eq!(valid[0].link, LrLink::Software { cpuid: 1, eoi: true }, "lowest requester, EOI for the rest");
    let mut seen = StdVec::new();
    for _ in 0..3 {
        let (_, lr) = cpu0.ack(0xff).unwrap_or_else(|| panic!("nothing to take"));
        if let LrLink::Software { cpuid, .. } = lr.link {
            seen.push(cpuid);
        }
        cpu0.deactivate(5);
        let status = cpu0.status();
        let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status });
        cpu0.apply(&actions);
    }
    assert_eq!(seen, [1, 2, 3]);
    assert!((0..4).all(|i| cpu0.lr(i).state == LrState::Invalid));
    assert_eq!(cpu0.status().misr, 0);
    assert_eq!(s.distributor().sgi(VcpuId(0), 5).map(|x| (x.pending, x.active)), Some((0, None)));
}

/// A trapped WFI (the router's `Wfi`): stepped past, then answered as an
/// `Idle` (a wait when nothing could be signalled, none when something
/// could); a WFI of a vCPU that does not exist is refused and not stepped.
#[test]
fn a_trapped_wfi_is_stepped_past_and_answered_as_idle() {
    let mut s = booted(2, 32, 4);
    let mut cpu1 = CpuIf::new(4);
    cpu1.sync(&mut s, 1);
    let wfi = |s: &mut VgicServer, cpu: &CpuIf| req(s, VgicRequest::Wfi { vcpu: VcpuId(1), status: cpu.status() });
    let idle = |s: &mut VgicServer, cpu: &CpuIf| req(s, VgicRequest::Idle { vcpu: VcpuId(1), status: cpu.status() });
    assert_eq!(wfi(&mut s, &cpu1), [Action::AdvancePc, Action::WaitForInterrupt]);
    assert_eq!(idle(&mut s, &cpu1), [Action::WaitForInterrupt]);
    // An SGI for it: listed, and no wait.
    write(&mut s, 0, 0xf00, 0x0002_0003);
    let mut copy = s.clone();
    let actions = wfi(&mut s, &cpu1);
    assert_eq!(actions[0], Action::AdvancePc);
    assert_eq!(&actions[1..], idle(&mut copy, &cpu1).as_slice(), "the rest as an Idle's");
    assert_eq!(lr_writes(&actions).len(), 1);
    assert!(!actions.contains(&Action::WaitForInterrupt));
    assert_eq!(
        s.handle(VgicRequest::Wfi { vcpu: VcpuId(2), status: cpu1.status() }),
        Err(ServerError::NoSuchVcpu(VcpuId(2)))
    );
}

/// IPIs to a vCPU whose WFI does not trap: between two IPIs it finishes
/// the first without a refresh (no `Idle`), so the `Sync` of the second's
/// kick sees the first finished and the second sent. It folds the first in
/// and lists the second at once (`finished_then_added`), as the full
/// refresh would; with anything else changed, the full refresh runs.
#[test]
fn an_ipi_after_one_the_guest_finished_is_listed_at_once() {
    let count = || super::FINISHED_ADDED.with(|n| n.get());
    for other_change in [false, true] {
        let mut s = booted(2, 32, 4);
        let mut cpu1 = CpuIf::new(4);
        cpu1.sync(&mut s, 1);
        let before = count();
        for round in 0..3 {
            assert_eq!(kicks(&write(&mut s, 0, 0xf00, 0x0002_0003)), [1]);
            if other_change && round == 2 {
                // Another vCPU's distributor write between: a full refresh.
                write(&mut s, 0, 0x420, 0x8080_8080);
            }
            let status = cpu1.status();
            let r = VgicRequest::Sync { vcpu: VcpuId(1), status };
            let mut full = s.clone();
            for cpu in full.cpus.iter_mut() {
                cpu.synced = None;
            }
            let (actions, full_actions) = (req(&mut s, r), req(&mut full, r));
            assert_eq!(actions, full_actions, "round {round}");
            assert_eq!(s.cpus[1].slots, full.cpus[1].slots, "round {round}");
            assert_eq!(lr_writes(&actions).len(), 1, "round {round}: {actions:x?}");
            cpu1.apply(&actions);
            // The guest takes it and finishes it, and sleeps again.
            let (_, lr) = cpu1.ack(0xff).expect("the SGI is listed");
            assert_eq!(lr.virtual_id, 3);
            cpu1.deactivate(3);
        }
        // Rounds 1 and 2 folded the finished SGI first (round 2 only
        // without the other change).
        assert_eq!(count() - before, if other_change { 1 } else { 2 });
        // The last one, finished without a refresh, is folded in by the
        // next.
        cpu1.sync(&mut s, 1);
        assert_eq!(s.distributor().sgi(VcpuId(1), 3).map(|x| (x.pending, x.active)), Some((0, None)));
    }
}

/// An IPI: the `Sync` of its target after the GICD_SGIR write lists the
/// SGI straight away when nothing else changed (`added_only`), and ends
/// where the full refresh ends; with anything else changed in between, or
/// for an `Idle`, the full refresh runs.
#[test]
fn a_sent_sgi_is_listed_by_the_next_refresh() {
    let sgis = || super::ADDED_SGI.with(|n| n.get());
    for idle in [false, true] {
        let mut s = booted(2, 32, 4);
        let mut cpu1 = CpuIf::new(4);
        cpu1.sync(&mut s, 1);
        let refresh = |s: &mut VgicServer, cpu: &CpuIf| {
            let status = cpu.status();
            let r = if idle {
                VgicRequest::Idle { vcpu: VcpuId(1), status }
            } else {
                VgicRequest::Sync { vcpu: VcpuId(1), status }
            };
            // The same on a copy that can take no shortcut.
            let mut full = s.clone();
            for cpu in full.cpus.iter_mut() {
                cpu.synced = None;
            }
            let (actions, full_actions) = (req(s, r), req(&mut full, r));
            assert_eq!(actions, full_actions, "{r:x?}");
            assert_eq!(s.cpus[1].slots, full.cpus[1].slots);
            actions
        };
        // vCPU 0 sends SGI 3 to vCPU 1.
        assert_eq!(kicks(&write(&mut s, 0, 0xf00, 0x0002_0003)), [1]);
        let before = sgis();
        let actions = refresh(&mut s, &cpu1);
        assert_eq!(sgis(), before + u64::from(!idle), "the shortcut for a Sync only");
        assert_eq!(lr_writes(&actions).len(), 1, "{actions:x?}");
        assert!(!actions.contains(&Action::WaitForInterrupt), "it can take the SGI");
        cpu1.apply(&actions);
        assert_eq!(cpu1.lr(0).virtual_id, 3);
        assert_eq!(cpu1.lr(0).link, LrLink::Software { cpuid: 0, eoi: false });
        // Two SGIs before the refresh: the full one.
        let (_, lr) = cpu1.ack(0xff).expect("SGI 3");
        assert_eq!(lr.virtual_id, 3);
        cpu1.deactivate(3);
        cpu1.apply(&refresh(&mut s, &cpu1));
        write(&mut s, 0, 0xf00, 0x0002_0004);
        write(&mut s, 0, 0xf00, 0x0002_0005);
        let before = sgis();
        let actions = refresh(&mut s, &cpu1);
        assert_eq!(sgis(), before, "no shortcut");
        assert_eq!(lr_writes(&actions).len(), 2, "{actions:x?}");
        // The same SGI from a second requester while the first waits in a
        // list register: the full refresh (one requester of an SGI at a
        // time, EOI maintenance for the next).
        cpu1.apply(&actions);
        write(&mut s, 0, 0xf00, 0x0002_0006);
        cpu1.apply(&refresh(&mut s, &cpu1));
        assert!((0..4).any(|i| cpu1.lr(i).virtual_id == 6), "SGI 6 from vCPU 0 listed");
        let before = sgis();
        write(&mut s, 1, 0xf00, 0x0002_0006);
        let actions = refresh(&mut s, &cpu1);
        assert_eq!(sgis(), before, "no shortcut for a second requester");
        cpu1.apply(&actions);
        let six = (0..4).map(|i| cpu1.lr(i)).find(|l| l.virtual_id == 6).expect("SGI 6 listed");
        assert_eq!(six.link, LrLink::Software { cpuid: 0, eoi: true }, "EOI maintenance for the next requester");
    }
}

#[test]
fn idle_answers() {
    let mut s = booted(2, 32, 4);
    let mut cpu = CpuIf::new(4);
    cpu.sync(&mut s, 0);
    let idle = |s: &mut VgicServer, cpu: &mut CpuIf| {
        let actions = req(s, VgicRequest::Idle { vcpu: VcpuId(0), status: cpu.status() });
        cpu.apply(&actions);
        actions
    };
    assert_eq!(idle(&mut s, &mut cpu), [Action::WaitForInterrupt]);
    // A pending interrupt that is disabled does not wake it.
    write(&mut s, 0, 0x420, 0x0080_0000);
    write(&mut s, 0, 0x184, 1 << 2);
    set_line(&mut s, 34, true, None, None);
    assert_eq!(idle(&mut s, &mut cpu), [Action::WaitForInterrupt]);
    // Enabling it kicks the idle vCPU: no lost wake-up.
    assert_eq!(kicks(&write(&mut s, 1, 0x104, 1 << 2)), [0]);
    let actions = idle(&mut s, &mut cpu);
    assert!(!actions.contains(&Action::WaitForInterrupt));
    assert_eq!(lr_writes(&actions).len(), 1, "refreshed instead");
    // The guest takes SPI 34 (priority 0x80, as GICH_APR will remember)...
    cpu.ack(0xff);
    set_line(&mut s, 34, false, None, None);
    // ...and raising its priority afterwards does not change that.
    write(&mut s, 0, 0x420, 0x0000_0000);
    // SGI 1 at 0x80 cannot preempt it: idle, though it is in a list register.
    write(&mut s, 0, 0x400, 0x0000_8000);
    write(&mut s, 1, 0xf00, 0x0001_0001);
    let a = cpu.sync(&mut s, 0);
    // (SPI 34's entry is rewritten with its new priority.)
    assert_eq!(lr_writes(&a).iter().map(|(_, l)| l.virtual_id).collect::<StdVec<_>>(), [34, 1], "{a:x?}");
    let actions = idle(&mut s, &mut cpu);
    assert_eq!(actions.last(), Some(&Action::WaitForInterrupt));
    // SGI 2 at 0x70 can: no idling.
    write(&mut s, 0, 0x400, 0x0070_8000);
    assert_eq!(kicks(&write(&mut s, 1, 0xf00, 0x0001_0002)), [0]);
    let actions = idle(&mut s, &mut cpu);
    assert!(!actions.contains(&Action::WaitForInterrupt));
    assert_eq!(lr_writes(&actions).len(), 1);
}

#[test]
fn an_spi_moves_when_retargeted() {
    let mut s = booted(2, 32, 4);
    let (mut cpu0, mut cpu1) = (CpuIf::new(4), CpuIf::new(4));
    set_line(&mut s, 36, true, None, None);
    cpu0.sync(&mut s, 0);
    assert_eq!(cpu0.lr(0).virtual_id, 36);
    // Retargeted before vCPU 0 took it: vCPU 1 cannot have it while it is
    // in vCPU 0's list register.
    assert_eq!(kicks(&write(&mut s, 1, 0x824, 0x0000_0002)), [0, 1]);
    assert_eq!(cpu1.sync(&mut s, 1), [Action::WriteGichHcr { value: lr::hcr_bits::EN }]);
    // vCPU 0 gives it up and kicks vCPU 1.
    let actions = cpu0.sync(&mut s, 0);
    assert_eq!(kicks(&actions), [1]);
    assert_eq!(cpu0.lr(0).state, LrState::Invalid);
    cpu1.sync(&mut s, 1);
    assert_eq!((cpu1.lr(0).virtual_id, cpu1.lr(0).state), (36, LrState::Pending));
    // Active on vCPU 1, retargeted back: it stays until deactivated.
    cpu1.ack(0xff);
    set_line(&mut s, 36, false, None, None);
    write(&mut s, 0, 0x824, 0x0000_0001);
    cpu1.sync(&mut s, 1);
    assert_eq!(cpu1.lr(0).state, LrState::Active);
}

#[test]
fn an_spi_finished_by_its_holder_goes_on_to_its_new_target() {
    let mut s = booted(2, 32, 4);
    let (mut cpu0, mut cpu1) = (CpuIf::new(4), CpuIf::new(4));
    set_line(&mut s, 36, true, None, None);
    cpu0.sync(&mut s, 0);
    cpu1.sync(&mut s, 1);
    // vCPU 0's guest handles it to the end without trapping...
    cpu0.ack(0xff);
    set_line(&mut s, 36, false, None, None);
    cpu0.deactivate(36);
    // ...meanwhile it is retargeted and raised again.
    write(&mut s, 1, 0x824, 0x0000_0002);
    set_line(&mut s, 36, true, None, None);
    // vCPU 1 cannot take it yet: the server still sees it in vCPU 0's list
    // registers, so vCPU 1 may go idle.
    let idle = req(&mut s, VgicRequest::Idle { vcpu: VcpuId(1), status: cpu1.status() });
    assert_eq!(idle, [Action::WaitForInterrupt]);
    // vCPU 0's maintenance interrupt shows the entry done: it lets the SPI
    // go and wakes vCPU 1.
    let actions = req(&mut s, VgicRequest::Maintenance { vcpu: VcpuId(0), status: cpu0.status() });
    cpu0.apply(&actions);
    assert_eq!(kicks(&actions), [1]);
    cpu1.sync(&mut s, 1);
    assert_eq!((cpu1.lr(0).virtual_id, cpu1.lr(0).state), (36, LrState::Pending));
}

#[test]
fn start_forgets_the_list_registers() {
    let mut s = booted(1, 32, 4);
    let mut cpu = CpuIf::new(4);
    set_line(&mut s, 33, true, None, None);
    cpu.sync(&mut s, 0);
    assert!(s.cpu_interface(VcpuId(0)).is_some_and(|c| c.slots[0].is_some()));
    assert_eq!(
        req(&mut s, VgicRequest::Start { vcpu: VcpuId(0), list_registers: 8 }),
        [Action::Kick { vcpu: VcpuId(0) }]
    );
    assert!(s.cpu_interface(VcpuId(0)).is_some_and(|c| c.list_registers == 4 && c.slots == [None; 4]));
    // The hardware came up empty: the interrupt goes back in, with HCR.
    let mut fresh = CpuIf::new(4);
    let actions = fresh.sync(&mut s, 0);
    assert_eq!(lr_writes(&actions).len(), 1);
    assert!(actions.contains(&Action::WriteGichHcr { value: lr::hcr_bits::EN }));
}

#[test]
fn foreign_list_register_contents_are_replaced() {
    let mut s = booted(1, 32, 4);
    let mut cpu = CpuIf::new(4);
    cpu.sync(&mut s, 0);
    cpu.lrs = [0x1000_0063, 0xffff_ffff, 0, 0];
    let actions = cpu.sync(&mut s, 0);
    assert_eq!(
        actions,
        [Action::WriteListRegister { index: 0, value: 0 }, Action::WriteListRegister { index: 1, value: 0 }]
    );
}

#[test]
fn kicks_for_every_vcpu_fit_and_overflow_is_owed() {
    let mut s = booted(8, 32, 4);
    // All eight vCPUs named: AdvancePc and eight kicks in one reply.
    let reply = write(&mut s, 0, 0xf00, 0x00ff_0001);
    assert_eq!(reply[0], Action::AdvancePc);
    assert_eq!(kicks(&reply), [0, 1, 2, 3, 4, 5, 6, 7]);
    // Should a reply still be full, the kicks that do not fit are owed to
    // the next reply, never dropped.
    let mut full = Reply::of(&[const { Action::AdvancePc }; ipc::MAX_ACTIONS - 1]).unwrap();
    s.push_kicks(&mut full, 0b0110);
    assert_eq!(kicks(&full.actions.to_vec()), [1]);
    assert_eq!(kicks(&set_line(&mut s, 40, false, None, None)), [2]);
    assert_eq!(kicks(&set_line(&mut s, 40, false, None, None)), []);
}

#[test]
fn state_round_trips_through_serde() {
    let mut s = booted(2, 64, 4);
    let mut cpu = CpuIf::new(4);
    set_line(&mut s, 40, true, None, None);
    set_line(&mut s, 27, true, Some(1), Some(27));
    write(&mut s, 1, 0xf00, 0x0001_0003);
    cpu.sync(&mut s, 0);
    let bytes = postcard::to_allocvec(&s).unwrap_or_else(|e| panic!("{e}"));
    let back: VgicServer = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, s);
    // Garbage never panics: it is an error or some state.
    let mut rng = Rng::new(3);
    for _ in 0..200 {
        let mut junk = bytes.clone();
        for _ in 0..4 {
            let i = rng.below(junk.len() as u64) as usize;
            junk[i] = rng.next() as u8;
        }
        if let Ok(mut t) = postcard::from_bytes::<VgicServer>(&junk) {
            let _ = t.handle(VgicRequest::Sync { vcpu: VcpuId(0), status: LrStatus::default() });
            let _ = t.handle(VgicRequest::Mmio {
                vcpu: VcpuId(0),
                access: access(0x104, AccessSize::Word, false, 0, 0),
                status: None,
            });
        }
    }
}

#[test]
fn garbage_requests_never_panic() {
    let mut rng = Rng::new(11);
    let mut s = booted(3, 64, 4);
    for _ in 0..20_000 {
        let vcpu = VcpuId(rng.below(4) as u8);
        let status = LrStatus {
            misr: rng.next() as u32,
            eisr: rng.next() as u32,
            elrsr: rng.next() as u32,
            lrs: [rng.next() as u32, rng.next() as u32, rng.next() as u32, rng.next() as u32],
        };
        let size = [AccessSize::Byte, AccessSize::Half, AccessSize::Word, AccessSize::Double][rng.below(4) as usize];
        let r = match rng.below(7) {
            0 => VgicRequest::Start { vcpu, list_registers: rng.below(70) as u8 },
            1 => VgicRequest::Mmio {
                vcpu,
                access: MmioAccess {
                    ipa: GICD + rng.below(0x1_2000),
                    far: 0,
                    size,
                    write: rng.chance(50),
                    value: rng.next(),
                    rt: rng.below(16) as u8,
                    sign_extend: rng.chance(50),
                },
                status: rng.chance(50).then_some(status),
            },
            2 => VgicRequest::SetLine {
                intid: IntId(rng.below(1100) as u16),
                level: rng.chance(50),
                target: rng.chance(50).then_some(vcpu),
                hw: rng.chance(30).then(|| IntId(rng.below(1100) as u16)),
                change: 0,
                status: None,
            },
            3 => VgicRequest::Maintenance { vcpu, status },
            4 => VgicRequest::Sync { vcpu, status },
            5 => VgicRequest::Wfi { vcpu, status },
            _ => VgicRequest::Idle { vcpu, status },
        };
        if let Ok(reply) = s.handle(r) {
            assert!(reply.actions.len() <= ipc::MAX_ACTIONS);
        }
    }
}

// -------------------------------------------------------------- Simulation

/// Who raised an interrupt and for whom: (target vCPU or 0xff for an SPI,
/// INTID, requester for an SGI).
type Key = (u8, u16, u8);

#[derive(Default, Clone, Copy, Debug)]
struct Count {
    n: u64,
    last: u64,
}

/// One vCPU of the modelled machine.
#[derive(Clone, Debug)]
struct Vcpu {
    hw: CpuIf,
    /// The guest's active interrupts, innermost last: (INTID, requester,
    /// priority).
    active: StdVec<(u16, u8, u8)>,
    asleep: bool,
    kicked: bool,
    /// The physical virtual-timer PPI is active (acknowledged by the
    /// monitor, not yet deactivated); delivered masked, the timer is masked
    /// (until the guest's handler, or a clear of its pending state, re-arms
    /// it).
    timer_active: bool,
}

struct Machine {
    s: VgicServer,
    cpus: StdVec<Vcpu>,
    rng: Rng,
    time: u64,
    raised: HashMap<Key, Count>,
    acked: HashMap<Key, Count>,
    edge_spis: StdVec<u16>,
    level_spis: StdVec<u16>,
    lines: HashMap<u16, bool>,
    /// When each interrupt's pending state was last cleared by a register.
    cleared: HashMap<Key, u64>,
    seed: u64,
    /// In the final phase: the guest finishes what it has.
    quiescing: bool,
    /// The vCPU that turned the distributor's Group 0 off.
    ctlr_off_by: Option<u8>,
    /// Refreshes that took the shortcut of nothing new.
    shortcuts: u64,
    /// The copy each status request is also run on (see `status_request`).
    full: VgicServer,
    /// The guest's WFI does not trap (`WfiPolicy::Native`): a vCPU goes to
    /// sleep without an `Idle`, and what wakes its CPU wakes it: a kick, a
    /// maintenance interrupt, or an entry of its list registers it could
    /// take.
    native_wfi: bool,
    /// The virtual timer is delivered masked (`VtimerDelivery::Masked`): a
    /// `Pend` as it fires, no physical interrupt left active.
    masked_timer: bool,
}

impl Machine {
    fn new(seed: u64, vcpus: u8, lrs: u8, native_wfi: bool, masked_timer: bool) -> Self {
        let mut s = booted(vcpus, 64, lrs);
        let mut rng = Rng::new(seed);
        // SPIs 32-63 edge, 64-95 level; random priorities and targets.
        write(&mut s, 0, 0xc08, 0xaaaa_aaaa);
        write(&mut s, 0, 0xc0c, 0xaaaa_aaaa);
        for off in (0x420..0x460).step_by(4) {
            write(&mut s, 0, off, rng.next() as u32);
        }
        for off in (0x820..0x860).step_by(4) {
            let mut t = 0u32;
            for b in 0..4 {
                t |= (1 + rng.below((1 << vcpus) - 1) as u32) << (8 * b);
            }
            write(&mut s, 0, off, t);
        }
        for v in 0..vcpus {
            for off in (0x400..0x420).step_by(4) {
                write(&mut s, v, off, rng.next() as u32);
            }
        }
        let cpus = (0..vcpus)
            .map(|_| Vcpu {
                hw: CpuIf::new(usize::from(lrs)),
                active: StdVec::new(),
                asleep: false,
                kicked: true,
                timer_active: false,
            })
            .collect();
        Machine {
            s,
            cpus,
            rng,
            time: 0,
            raised: HashMap::new(),
            acked: HashMap::new(),
            edge_spis: (32..40).collect(),
            level_spis: (64..70).collect(),
            lines: HashMap::new(),
            cleared: HashMap::new(),
            seed,
            quiescing: false,
            ctlr_off_by: None,
            shortcuts: 0,
            full: VgicServer::new(&config(1, 0)),
            native_wfi,
            masked_timer,
        }
    }

    /// Whether vCPU `v`'s CPU would wake from a WFI now: a kick, or (with
    /// native WFI) a maintenance interrupt or a virtual interrupt its CPU
    /// interface signals (a pending entry above the running priority).
    fn wakes(&self, v: u8) -> bool {
        let cpu = &self.cpus[usize::from(v)];
        if cpu.kicked {
            return true;
        }
        if !self.native_wfi {
            return false;
        }
        let running = cpu.active.iter().map(|a| a.2).min().unwrap_or(0xff);
        let signalled =
            (0..cpu.hw.n).map(|i| cpu.hw.lr(i)).any(|lr| lr.state == LrState::Pending && lr.priority < running);
        (cpu.hw.hcr & lr::hcr_bits::EN != 0 && cpu.hw.status().misr != 0) || signalled
    }

    /// The guest on vCPU `v` executes WFI: trapped, an `Idle`; native, its
    /// CPU sleeps until something wakes it (see [`Machine::wakes`]).
    fn wfi(&mut self, v: u8) {
        if self.native_wfi {
            self.cpus[usize::from(v)].asleep = true;
        } else {
            // Trapped, the router's `Wfi`; or a PSCI CPU_SUSPEND's `Idle`.
            let kind = if self.rng.chance(80) { 3 } else { 2 };
            self.status_request(v, kind);
        }
    }

    fn n(&self) -> u8 {
        self.cpus.len() as u8
    }

    fn raise(&mut self, key: Key) {
        self.time += 1;
        let c = self.raised.entry(key).or_default();
        c.n += 1;
        c.last = self.time;
    }

    /// Apply a reply for a request about vCPU `v` (a status request if
    /// `status`).
    fn apply(&mut self, v: u8, actions: &[Action], status: bool) {
        self.apply_checked(v, actions, status, status);
    }

    /// [`Machine::apply`]: `status` says the request carried one (list
    /// registers may be written), `check` that the list registers must be
    /// settled after it.
    fn apply_checked(&mut self, v: u8, actions: &[Action], status: bool, check: bool) {
        let vi = usize::from(v);
        for a in actions {
            match a {
                Action::WriteListRegister { .. } | Action::WriteGichHcr { .. } => {
                    assert!(status, "list registers written without a status: {actions:?}");
                }
                Action::Kick { vcpu } => self.cpus[vcpu.index()].kicked = true,
                Action::DeactivatePhysical { intid } => {
                    assert_eq!(*intid, IntId(27));
                    assert!(!self.masked_timer, "a physical deactivation of a timer delivered masked");
                    assert!(self.cpus[vi].timer_active, "deactivating an inactive physical interrupt");
                    self.cpus[vi].timer_active = false;
                }
                Action::WaitForInterrupt => {
                    assert_eq!(actions.last(), Some(a), "WaitForInterrupt comes last");
                    self.cpus[vi].asleep = true;
                }
                Action::AdvancePc | Action::SetReg { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        self.cpus[vi].hw.apply(actions);
        if check {
            self.check_lrs(v);
        }
    }

    fn check_lrs(&self, v: u8) {
        let cpu = &self.cpus[usize::from(v)];
        let valid: StdVec<ListRegister> =
            (0..cpu.hw.n).map(|i| cpu.hw.lr(i)).filter(|l| l.state != LrState::Invalid).collect();
        for (i, a) in valid.iter().enumerate() {
            assert!(
                valid[i + 1..].iter().all(|b| b.virtual_id != a.virtual_id),
                "vcpu{v}: two entries for INTID {}: {valid:x?}",
                a.virtual_id
            );
            assert!(!a.is_hw(), "vcpu{v}: a hardware-linked entry: {a:x?}");
        }
        assert_ne!(cpu.hw.hcr & lr::hcr_bits::EN, 0);
        assert_eq!(cpu.hw.status().misr, 0, "vcpu{v}: maintenance still asserted after a refresh: {valid:x?}");
    }

    fn status_request(&mut self, v: u8, kind: u8) {
        let status = self.cpus[usize::from(v)].hw.status();
        let vcpu = VcpuId(v);
        let r = match kind {
            0 => VgicRequest::Sync { vcpu, status },
            1 => VgicRequest::Maintenance { vcpu, status },
            2 => VgicRequest::Idle { vcpu, status },
            _ => VgicRequest::Wfi { vcpu, status },
        };
        // The same request on a copy that cannot take the shortcut of a
        // refresh with nothing new (`CpuInterface::synced`) must come to the
        // same reply and the same state.
        // Copied in place over what the last request left there (a server
        // of another shape at first): `clone_from`, as the monitor takes its
        // checkpoints, must make an equal server, change count included.
        self.full.clone_from(&self.s);
        assert_eq!(self.full, self.s, "seed {}: clone_from", self.seed);
        assert_eq!(self.full.dist.generations(), self.s.dist.generations(), "seed {}: clone_from", self.seed);
        let full = &mut self.full;
        for cpu in full.cpus.iter_mut() {
            cpu.synced = None;
        }
        let shortcut = self.s.cpus[usize::from(v)].synced == Some(self.s.inputs(vcpu))
            && self.s.cpus[usize::from(v)].unchanged(&status);
        let actions = req(&mut self.s, r);
        let full_actions = req(full, r);
        assert_eq!(actions, full_actions, "seed {}: vcpu{v} {r:x?}: shortcut {shortcut}", self.seed);
        // (Tidied: the shortcut skips forgetting the hints of interrupts
        // that went idle, which are only hints.)
        let (mut a, mut b) = (full.dist.clone(), self.s.dist.clone());
        a.tidy();
        b.tidy();
        assert_eq!(a, b, "seed {}: vcpu{v} {r:x?}: shortcut {shortcut}", self.seed);
        for (a, b) in full.cpus.iter().zip(&self.s.cpus) {
            assert_eq!((a.slots, a.hcr, a.seen), (b.slots, b.hcr, b.seen), "seed {}: vcpu{v} {r:x?}", self.seed);
        }
        self.shortcuts += u64::from(shortcut);
        self.apply(v, &actions, true);
    }

    /// What the monitor does before vCPU `v` runs guest code: the pending
    /// maintenance interrupt and, for a kick of this vCPU, a Sync.
    fn before_guest(&mut self, v: u8, take_kick: bool) {
        let vi = usize::from(v);
        if self.cpus[vi].hw.hcr & lr::hcr_bits::EN != 0 && self.cpus[vi].hw.status().misr != 0 {
            self.status_request(v, 1);
        }
        if self.cpus[vi].kicked && take_kick {
            // A kick is a physical interrupt: it also wakes the CPU.
            self.cpus[vi].kicked = false;
            self.cpus[vi].asleep = false;
            self.status_request(v, 0);
        }
    }

    fn mmio_write(&mut self, v: u8, off: u64, value: u32) {
        // Half the accesses carry the status of the vCPU's CPU interface,
        // as the router's do.
        let status = self.rng.chance(50).then(|| self.cpus[usize::from(v)].hw.status());
        let access = access(off, AccessSize::Word, true, value, 0);
        let actions = req(&mut self.s, VgicRequest::Mmio { vcpu: VcpuId(v), access, status });
        self.apply(v, &actions, false);
        // A kick of the vCPU being handled is a Sync before it runs again.
        self.before_guest(v, true);
    }

    fn set_line(&mut self, intid: u16, level: bool, target: Option<u8>, hw: Option<u16>) {
        let actions = set_line(&mut self.s, intid, level, target, hw);
        self.apply(target.unwrap_or(0), &actions, false);
    }

    /// An SPI's line changes: half the time while vCPU `v` is handled (if
    /// it is running: a device register it wrote, say), as the router
    /// delivers that, with `v`'s status, then `v`'s kick taken before it
    /// runs again; else from outside any vCPU (console input), without.
    fn spi_line(&mut self, intid: u16, level: bool, v: u8) {
        if !self.cpus[usize::from(v)].asleep && self.rng.chance(50) {
            self.set_own_line(v, intid, level, None);
            self.before_guest(v, true);
        } else {
            self.set_line(intid, level, None, None);
        }
    }

    /// A private line of vCPU `v` changes on `v`'s own CPU, as the monitor
    /// delivers it there: with that CPU's list-register status, so that the
    /// server refreshes `v` at once. The same request on a copy that can
    /// take no shortcut (`added_only` included) must come to the same reply
    /// and state.
    fn set_own_line(&mut self, v: u8, intid: u16, level: bool, hw: Option<u16>) {
        let status = self.cpus[usize::from(v)].hw.status();
        self.own_request(v, line(intid, level, Some(v), hw, Some(status)));
    }

    /// `r`, which carries vCPU `v`'s status, delivered on `v`'s CPU: a line
    /// change or a `Pend`, checked against the full refresh as
    /// [`Machine::set_own_line`] says.
    fn own_request(&mut self, v: u8, r: VgicRequest) {
        self.full.clone_from(&self.s);
        self.full.cpus[usize::from(v)].synced = None;
        let actions = req(&mut self.s, r);
        let full_actions = req(&mut self.full, r);
        assert_eq!(actions, full_actions, "seed {}: vcpu{v} {r:x?}", self.seed);
        let (mut a, mut b) = (self.full.dist.clone(), self.s.dist.clone());
        a.tidy();
        b.tidy();
        assert_eq!(a, b, "seed {}: vcpu{v} {r:x?}", self.seed);
        for (a, b) in self.full.cpus.iter().zip(&self.s.cpus) {
            assert_eq!((a.slots, a.hcr, a.seen), (b.slots, b.hcr, b.seen), "seed {}: vcpu{v} {r:x?}", self.seed);
        }
        // The vCPU refreshed is left as the full refresh leaves it. (Its
        // `synced` was cleared on the copy: where no refresh ran, or one
        // left it unset, the server's must not claim the present inputs.)
        let (a, b) = (&self.full.cpus[usize::from(v)], &self.s.cpus[usize::from(v)]);
        assert_eq!(a.listed_all, b.listed_all, "seed {}: vcpu{v} {r:x?}", self.seed);
        match a.synced {
            Some(_) => assert_eq!(a.synced, b.synced, "seed {}: vcpu{v} {r:x?}", self.seed),
            None => assert_ne!(b.synced, Some(self.s.inputs(VcpuId(v))), "seed {}: vcpu{v} {r:x?}", self.seed),
        }
        assert_eq!(self.full.slot_changes, self.s.slot_changes, "seed {}: vcpu{v} {r:x?}", self.seed);
        // Not checked here: a line that needs no refresh leaves the list
        // registers as they were, maintenance included, which the caller's
        // `before_guest` then takes, as the monitor would.
        self.apply_checked(v, &actions, true, false);
    }

    /// One guest step on vCPU `v`: take an interrupt, finish one, or idle.
    fn guest_step(&mut self, v: u8, may_idle: bool) -> bool {
        let vi = usize::from(v);
        // The running priority: the highest acknowledged and not yet
        // deactivated (as GICH_APR holds it).
        let running = self.cpus[vi].active.iter().map(|a| a.2).min().unwrap_or(0xff);
        if let Some((_, lr)) = self.cpus[vi].hw.ack(running) {
            let source = match lr.link {
                LrLink::Software { cpuid, .. } => cpuid,
                LrLink::Hardware { .. } => 0,
            };
            let intid = lr.virtual_id;
            self.cpus[vi].active.push((intid, source, lr.priority));
            let key = if intid < 32 { (v, intid, source) } else { (0xff, intid, 0) };
            if intid == 27 && self.masked_timer {
                // Its handler programs the next deadline, which unmasks it.
                self.cpus[vi].timer_active = false;
            }
            self.time += 1;
            let c = self.acked.entry(key).or_default();
            c.n += 1;
            c.last = self.time;
            assert!(
                self.raised.get(&key).is_some_and(|r| r.n >= c.n),
                "vcpu{v} took {key:?} more often than it was raised"
            );
            // The driver of a level-sensitive device quiets it.
            if self.level_spis.contains(&intid) {
                self.lines.insert(intid, false);
                self.spi_line(intid, false, v);
                self.before_guest(v, true);
            }
            return true;
        }
        // Now and then the guest waits for an interrupt inside a handler:
        // only one of higher priority can wake it.
        if may_idle
            && !self.quiescing
            && self.ctlr_off_by != Some(v)
            && !self.cpus[vi].active.is_empty()
            && self.rng.chance(20)
        {
            self.wfi(v);
            return false;
        }
        if let Some((intid, _, _)) = self.cpus[vi].active.pop() {
            if self.cpus[vi].hw.deactivate(intid).is_none() {
                panic!("vcpu{v}: INTID {intid} active in the guest but in no list register");
            }
            return true;
        }
        if self.ctlr_off_by == Some(v) {
            self.ctlr_off_by = None;
            self.mmio_write(v, 0x000, 3);
            return true;
        }
        if may_idle {
            self.wfi(v);
        }
        false
    }

    fn external_event(&mut self) {
        let n = self.n();
        match self.rng.below(4) {
            0 => {
                let intid = self.edge_spis[self.rng.below(self.edge_spis.len() as u64) as usize];
                self.raise((0xff, intid, 0));
                let v = self.rng.below(u64::from(n)) as u8;
                self.spi_line(intid, true, v);
            }
            1 => {
                let intid = self.level_spis[self.rng.below(self.level_spis.len() as u64) as usize];
                if !self.lines.get(&intid).copied().unwrap_or(false) {
                    self.lines.insert(intid, true);
                    self.raise((0xff, intid, 0));
                    let v = self.rng.below(u64::from(n)) as u8;
                    self.spi_line(intid, true, v);
                }
            }
            _ => {
                // The virtual timer of some vCPU fires (if its physical
                // interrupt is not still active) on that vCPU's CPU.
                let v = self.rng.below(u64::from(n)) as u8;
                if !self.cpus[usize::from(v)].timer_active {
                    self.cpus[usize::from(v)].timer_active = true;
                    self.raise((v, 27, 0));
                    // The Fired trap is handled on that CPU: its line
                    // change (or, masked, its `Pend`) comes with that CPU's
                    // status (mostly; the other form too), then wake and
                    // sync.
                    let own = self.rng.chance(75);
                    if self.masked_timer {
                        let status = own.then(|| self.cpus[usize::from(v)].hw.status());
                        let pend =
                            VgicRequest::Pend { intid: IntId(27), target: Some(VcpuId(v)), status, masked_timer: true };
                        if own {
                            self.own_request(v, pend);
                        } else {
                            let actions = req(&mut self.s, pend);
                            self.apply(v, &actions, false);
                        }
                    } else if own {
                        self.set_own_line(v, 27, true, Some(27));
                    } else {
                        self.set_line(27, true, Some(v), Some(27));
                    }
                    self.cpus[usize::from(v)].asleep = false;
                    self.before_guest(v, true);
                }
            }
        }
    }

    fn guest_mmio(&mut self, v: u8) {
        let n = self.n();
        match self.rng.below(6) {
            5 => {
                // Set or clear an edge SPI's pending state, or clear this
                // vCPU's timer interrupt.
                let intid = self.edge_spis[self.rng.below(self.edge_spis.len() as u64) as usize];
                let bit = 1u32 << (intid % 32);
                match self.rng.below(3) {
                    0 => {
                        self.raise((0xff, intid, 0));
                        self.mmio_write(v, 0x204, bit);
                    }
                    1 => {
                        self.time += 1;
                        self.cleared.insert((0xff, intid, 0), self.time);
                        self.mmio_write(v, 0x284, bit);
                    }
                    _ => {
                        self.time += 1;
                        self.cleared.insert((v, 27, 0), self.time);
                        self.mmio_write(v, 0x280, 1 << 27);
                        if self.masked_timer {
                            // The guest re-arms the timer it cleared.
                            self.cpus[usize::from(v)].timer_active = false;
                        }
                    }
                }
            }
            0 | 1 => {
                let sgi = self.rng.below(16) as u32;
                let filter = self.rng.below(4) as u32;
                let list = self.rng.below(256) as u32;
                let mask = (1u32 << n) - 1;
                let targets = match filter {
                    0 => list & mask,
                    1 => mask & !(1 << v),
                    2 => 1 << v,
                    _ => 0,
                };
                for t in 0..n {
                    if targets >> t & 1 != 0 {
                        self.raise((t, sgi as u16, v));
                    }
                }
                self.mmio_write(v, 0xf00, filter << 24 | list << 16 | sgi);
            }
            2 => {
                // Reprioritise four SPIs or this vCPU's SGIs.
                let off =
                    if self.rng.chance(50) { 0x420 + 4 * self.rng.below(16) } else { 0x400 + 4 * self.rng.below(4) };
                let value = self.rng.next() as u32;
                self.mmio_write(v, off, value);
            }
            3 => {
                // Retarget an SPI.
                let intid = 32 + self.rng.below(64);
                let t = 1 + self.rng.below((1 << n) - 1) as u32;
                let off = 0x800 + (intid & !3);
                let shift = 8 * (intid & 3);
                let old = read(&mut self.s, v, off);
                self.mmio_write(v, off, old & !(0xff << shift) | t << shift);
            }
            _ => {
                // Disable an SPI for a while, or the whole distributor.
                if self.rng.chance(10) && self.ctlr_off_by.is_none() {
                    // Turn Group 0 (where every interrupt here is) off for
                    // a while: this vCPU turns it back on before it idles.
                    let ctlr = self.rng.below(4) as u32;
                    if ctlr & 1 == 0 {
                        self.ctlr_off_by = Some(v);
                    }
                    self.mmio_write(v, 0x000, ctlr);
                } else {
                    let bit = 1u32 << self.rng.below(32);
                    let n = 1 + self.rng.below(2);
                    let off = if self.rng.chance(50) { 0x180 } else { 0x100 };
                    self.mmio_write(v, off + 4 * n, bit);
                }
            }
        }
    }

    fn run(&mut self, steps: usize) {
        let n = self.n();
        for _ in 0..steps {
            let v = self.rng.below(u64::from(n)) as u8;
            let vi = usize::from(v);
            match self.rng.below(10) {
                0..=2 => self.external_event(),
                _ if self.cpus[vi].asleep => {
                    // A kick (a physical SGI) wakes it; with native WFI,
                    // what its CPU interface signals too.
                    if self.wakes(v) {
                        self.cpus[vi].asleep = false;
                        self.before_guest(v, true);
                    }
                }
                3 => self.guest_mmio(v),
                _ => {
                    // Another CPU's kick arrives when it arrives.
                    let take = self.rng.chance(60);
                    self.before_guest(v, take);
                    let may_idle = self.rng.chance(30);
                    self.guest_step(v, may_idle);
                }
            }
            self.check_no_lost_wakeup();
            self.check_live_masks();
        }
    }

    /// The distributor's live SGIs and PPIs (found through the bits of
    /// those handed out for change) are exactly those a scan of all of them
    /// finds.
    fn check_live_masks(&self) {
        let d = &self.s.dist;
        for v in 0..self.n() {
            let vcpu = VcpuId(v);
            let sgis = (0..16u8).filter(|&n| d.sgi(vcpu, n).is_some_and(|s| s.live())).fold(0u32, |m, n| m | 1 << n);
            let ppis =
                (0..16u16).filter(|&n| d.ppi(vcpu, 16 + n).is_some_and(|s| !s.idle())).fold(0u32, |m, n| m | 1 << n);
            assert_eq!(d.live_sgis(vcpu), sgis, "vcpu{v}'s live SGIs (seed {})", self.seed);
            assert_eq!(d.live_ppis(vcpu), ppis, "vcpu{v}'s live PPIs (seed {})", self.seed);
        }
    }

    /// A vCPU asleep with nothing to wake it must have nothing it could
    /// take: judged from the guest's side (its running priority) and the
    /// distributor's registers, not from the server's own reasoning.
    fn check_no_lost_wakeup(&self) {
        // With native WFI a vCPU sleeps without a refresh, so what its
        // guest did last (acknowledged, finished) is not yet in the server's
        // state: judge by the state as its next refresh will fold it in.
        let folded;
        let d = if self.native_wfi && self.cpus.iter().any(|c| c.asleep) {
            let mut s = self.s.clone();
            for (v, cpu) in self.cpus.iter().enumerate().filter(|(_, c)| c.asleep) {
                s.fold(VcpuId(v as u8), &cpu.hw.status());
            }
            folded = s;
            folded.distributor()
        } else {
            self.s.distributor()
        };
        for (v, cpu) in self.cpus.iter().enumerate() {
            if !cpu.asleep || self.wakes(v as u8) {
                continue;
            }
            // A known limit (see the server's documentation): active
            // entries are not evicted, so a vCPU whose list registers are
            // all active (or active and pending again) takes nothing more
            // until it finishes one (EOI
            // maintenance then refreshes them). Trapped, its WFI is answered
            // at once (a busy wait); native, it sleeps until then.
            if self.native_wfi && (0..cpu.hw.n).all(|i| cpu.hw.lr(i).state.active()) {
                continue;
            }
            let vcpu = VcpuId(v as u8);
            let running = cpu.active.iter().map(|a| a.2).min().unwrap_or(0xff);
            let takeable = |pending: bool, active: bool, enabled: bool, group1: bool, priority: u8| {
                pending && !active && enabled && d.group_enabled(group1) && priority < running
            };
            for i in 0..cpu.hw.n {
                let lr = cpu.hw.lr(i);
                assert!(
                    !(lr.state == LrState::Pending && lr.priority < running),
                    "vcpu{v} sleeps with {lr:x?} in a list register"
                );
            }
            for sgi in 0..16 {
                let st = d.sgi(vcpu, sgi).copied().unwrap_or_default();
                assert!(
                    !takeable(st.pending != 0, st.active.is_some(), true, st.group1, st.priority),
                    "vcpu{v} sleeps through SGI {sgi}"
                );
            }
            for intid in 16..32 {
                let st = d.ppi(vcpu, intid).copied().unwrap_or_default();
                assert!(
                    !takeable(st.pending(), st.active, st.enabled, st.group1, st.priority),
                    "vcpu{v} sleeps through {intid}"
                );
            }
            for (intid, st) in d.spis() {
                // In another vCPU's list registers, or the server believes
                // so until that (running) vCPU next traps: then that one
                // passes it on when it lets it go.
                let elsewhere = self.cpus.iter().enumerate().any(|(w, c)| {
                    w != v
                        && ((0..c.hw.n).any(|i| c.hw.lr(i).virtual_id == intid && c.hw.lr(i).state != LrState::Invalid)
                            || self.s.cpu_interface(VcpuId(w as u8)).is_some_and(|ci| ci.holds(Irq::Spi { intid })))
                });
                if d.spi_target(st) == Some(vcpu) && !elsewhere {
                    assert!(
                        !takeable(st.pending(), st.active, st.enabled, st.group1, st.priority),
                        "seed {}: vcpu{v} sleeps through SPI {intid}: {st:?}\n{:#x?}\n{:#x?}",
                        self.seed,
                        self.cpus,
                        (0..self.cpus.len()).map(|w| self.s.cpu_interface(VcpuId(w as u8))).collect::<StdVec<_>>()
                    );
                }
            }
        }
    }

    /// Stop raising interrupts, turn everything back on, and let every vCPU
    /// run until all idle. Then everything raised must have been taken.
    fn quiesce(&mut self) {
        let n = self.n();
        self.quiescing = true;
        // Whoever waited inside a handler gets on with it.
        for cpu in &mut self.cpus {
            if !cpu.active.is_empty() {
                cpu.asleep = false;
            }
        }
        self.mmio_write(0, 0x000, 3);
        self.mmio_write(0, 0x104, 0xffff_ffff);
        self.mmio_write(0, 0x108, 0xffff_ffff);
        for round in 0.. {
            assert!(round < 10_000, "the machine does not settle");
            let mut busy = false;
            for v in 0..n {
                let vi = usize::from(v);
                if self.cpus[vi].asleep {
                    if self.wakes(v) {
                        self.cpus[vi].asleep = false;
                    } else {
                        continue;
                    }
                }
                busy = true;
                self.before_guest(v, true);
                self.guest_step(v, true);
            }
            if !busy {
                break;
            }
        }
        if self.native_wfi {
            // Each vCPU went to sleep with what its guest finished last
            // not yet folded in: the next refresh (a Sync here) does it.
            for v in 0..n {
                self.status_request(v, 0);
            }
        }
        for (key, raised) in &self.raised {
            let acked = self.acked.get(key).copied().unwrap_or_default();
            let cleared = self.cleared.get(key).copied().unwrap_or_default();
            assert!(
                acked.last > raised.last || cleared > raised.last,
                "{key:?} raised {} times (last at {}) but taken {} times (last at {}): lost",
                raised.n,
                raised.last,
                acked.n,
                acked.last
            );
        }
        for (v, cpu) in self.cpus.iter().enumerate() {
            assert!(!cpu.timer_active, "vcpu{v}: the physical timer interrupt was never deactivated");
            assert!(cpu.active.is_empty());
        }
        for (intid, state) in self.s.distributor().spis() {
            assert!(!state.pending() && !state.active, "SPI {intid} left {state:?}");
        }
    }
}

/// Random runs of a 1-4 vCPU machine with 1, 2 or 4 list registers: edge
/// and level SPIs, timer PPIs backed by a physical interrupt, SGIs with every filter,
/// priority, target, enable and pending changes, the guest taking, nesting,
/// finishing and waiting for interrupts, maintenance and kicks delivered as
/// the monitor would. Checked throughout: list-register and reply
/// invariants, no vCPU sleeping through an interrupt it could take, no
/// interrupt taken more often than raised; at the end, everything raised
/// taken after it was last raised (or cleared by the guest), every physical
/// timer interrupt deactivated. `VGIC_SIM_FIRST`, `VGIC_SIM_SEEDS` and
/// `VGIC_SIM_STEPS` widen the search (e.g. 5000 seeds in release mode).
#[test]
fn simulated_machine_loses_nothing() {
    let seeds: u64 = std::env::var("VGIC_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(48);
    let steps: usize = std::env::var("VGIC_SIM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3_000);
    let first: u64 = std::env::var("VGIC_SIM_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut shortcuts = 0;
    let finished_before = super::FINISHED_ONLY.with(|n| n.get());
    let added_before = super::ADDED_ONLY.with(|n| n.get());
    let sgis_before = super::ADDED_SGI.with(|n| n.get());
    let finished_added_before = super::FINISHED_ADDED.with(|n| n.get());
    let acked_fell_before = super::ACKED_FELL.with(|n| n.get());
    for seed in first..first + seeds {
        let vcpus = 1 + (seed % 4) as u8;
        let lrs = [4, 1, 2, 4][(seed / 4 % 4) as usize];
        // Every other pair of seeds with the guest's WFI untrapped; every
        // other sixteen with the virtual timer delivered masked.
        let mut m = Machine::new(seed, vcpus, lrs, seed / 2 % 2 == 1, seed / 16 % 2 == 1);
        m.run(steps);
        let taken = m.acked.values().map(|c| c.n).sum::<u64>();
        assert!(taken > 50, "seed {seed}: too little happened ({taken} taken): {:#x?}", m.cpus);
        m.quiesce();
        shortcuts += m.shortcuts;
    }
    // Every refresh is checked against one without the shortcut; it must
    // have been taken often enough for that to mean something.
    assert!(shortcuts >= 10 * seeds, "only {shortcuts} refreshes took the shortcut in {seeds} runs");
    // And the refreshes that only settle finished interrupts (each checked
    // the same way).
    let finished = super::FINISHED_ONLY.with(|n| n.get()) - finished_before;
    // And those that only add a new private interrupt (a timer's tick).
    let added = super::ADDED_ONLY.with(|n| n.get()) - added_before;
    // Of those, the ones for an SGI another vCPU sent (an IPI's `Sync`).
    let sgis = super::ADDED_SGI.with(|n| n.get()) - sgis_before;
    // Of those, the ones that first folded in SGIs the guest finished (its
    // WFI untrapped).
    let finished_added = super::FINISHED_ADDED.with(|n| n.get()) - finished_added_before;
    // And those after a level SPI's driver quieted its device in the
    // handler.
    let acked_fell = super::ACKED_FELL.with(|n| n.get()) - acked_fell_before;
    eprintln!(
        "simulated machine: {shortcuts} shortcuts, {finished} finished-only and {added} added-only refreshes \
         ({sgis} of them for a sent SGI, {finished_added} after finished SGIs), {acked_fell} acked-then-fell \
         in {seeds} runs"
    );
    assert!(acked_fell >= seeds, "only {acked_fell} refreshes took the acked-then-fell path in {seeds} runs");
    assert!(finished_added > 0, "no refresh folded finished SGIs first in {seeds} runs");
    assert!(finished >= 10 * seeds, "only {finished} refreshes took the finished-only path in {seeds} runs");
    assert!(added >= 10 * seeds, "only {added} refreshes took the added-only path in {seeds} runs");
    assert!(sgis >= seeds, "only {sgis} refreshes took the added-only path for a sent SGI in {seeds} runs");
}
