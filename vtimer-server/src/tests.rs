//! Unit tests of the server as a whole: requests in, exact replies out.

extern crate std;

use super::*;
use crate::regs::ctl;

const V0: VcpuId = VcpuId(0);
const V1: VcpuId = VcpuId(1);
/// A physical count well away from zero, as after a while of host uptime.
const T0: u64 = 0x0000_0123_4567_89ab;

fn config() -> VmConfig {
    VmConfig::example(2)
}

fn server() -> VtimerServer {
    let mut s = VtimerServer::new(&config());
    s.handle(VtimerRequest::Start { vcpu: V0, now: T0 }).unwrap();
    s
}

fn actions(reply: Reply) -> std::vec::Vec<Action> {
    reply.actions.into_iter().collect()
}

fn line(intid: u16, vcpu: VcpuId, level: bool) -> Action {
    set_line(IntId(intid), vcpu, level, None)
}

fn hyp(deadline: Option<u64>) -> Action {
    Action::SetHypTimer { deadline }
}

fn reg(n: u8, value: u32) -> Action {
    Action::SetReg { reg: GuestReg::Gpr(n), value }
}

fn mrc(s: &mut VtimerServer, vcpu: VcpuId, opc2: u8, rt: u8, now: u64) -> std::vec::Vec<Action> {
    let access = Cp15Access { opc1: 0, crn: 14, crm: 2, opc2, write: false, rt, value: 0 };
    actions(s.handle(VtimerRequest::Cp15 { vcpu, access, now }).unwrap())
}

fn mcr(s: &mut VtimerServer, vcpu: VcpuId, opc2: u8, value: u32, now: u64) -> std::vec::Vec<Action> {
    let access = Cp15Access { opc1: 0, crn: 14, crm: 2, opc2, write: true, rt: 3, value };
    actions(s.handle(VtimerRequest::Cp15 { vcpu, access, now }).unwrap())
}

fn mrrc(s: &mut VtimerServer, opc1: u8, rt: u8, rt2: u8, now: u64) -> std::vec::Vec<Action> {
    let access = Cp15WideAccess { opc1, crm: 14, write: false, rt, rt2, value: 0 };
    actions(s.handle(VtimerRequest::Cp15Wide { vcpu: V0, access, now }).unwrap())
}

fn mcrr(s: &mut VtimerServer, opc1: u8, value: u64, now: u64) -> std::vec::Vec<Action> {
    let access = Cp15WideAccess { opc1, crm: 14, write: true, rt: 4, rt2: 5, value };
    actions(s.handle(VtimerRequest::Cp15Wide { vcpu: V0, access, now }).unwrap())
}

fn fired(s: &mut VtimerServer, timer: TimerKind, now: u64) -> std::vec::Vec<Action> {
    actions(s.handle(VtimerRequest::Fired { vcpu: V0, timer, now }).unwrap())
}

const CTL: u8 = 1;
const TVAL: u8 = 0;
const CNTPCT: u8 = 0;
const CVAL: u8 = 2;

#[test]
fn first_start_picks_cntvoff_and_every_vcpu_shares_it() {
    let mut s = VtimerServer::new(&config());
    assert_eq!(s.cntvoff(), None);
    let reply = s.handle(VtimerRequest::Start { vcpu: V0, now: T0 }).unwrap();
    assert_eq!(actions(reply), [Action::SetCntvoff { value: T0 }, hyp(None)]);
    assert_eq!(s.cntvoff(), Some(T0));
    // The second vCPU starts later and gets the same offset.
    let reply = s.handle(VtimerRequest::Start { vcpu: V1, now: T0 + 5_000 }).unwrap();
    assert_eq!(actions(reply), [Action::SetCntvoff { value: T0 }, hyp(None)]);
    assert!(s.vcpu(V1).unwrap().started);
}

#[test]
fn virtual_count_is_monotonic_across_off_and_on() {
    let mut s = VtimerServer::new(&config());
    let mut last_virtual = None;
    // vCPU 1 comes first, vCPU 0 later, then vCPU 1 again after being off.
    for (vcpu, now) in [(V1, T0), (V0, T0 + 100), (V1, T0 + 1_000_000), (V0, T0 + 1_000_001)] {
        let reply = actions(s.handle(VtimerRequest::Start { vcpu, now }).unwrap());
        let Some(Action::SetCntvoff { value }) = reply.first() else {
            panic!("no CNTVOFF in {reply:?}");
        };
        assert_eq!(*value, T0, "one offset for the whole VM");
        let virtual_count = now - value;
        assert!(last_virtual.is_none_or(|last| virtual_count >= last));
        last_virtual = Some(virtual_count);
    }
    assert_eq!(last_virtual, Some(1_000_001), "the virtual count started at zero");
}

#[test]
fn requests_for_a_missing_vcpu_are_refused_without_effect() {
    let mut s = VtimerServer::new(&config());
    let before = s.clone();
    let err = s.handle(VtimerRequest::Start { vcpu: VcpuId(2), now: T0 });
    assert_eq!(err, Err(ServerError::NoSuchVcpu(VcpuId(2))));
    assert_eq!(s, before, "no CNTVOFF chosen by a refused start");
    let err = s.handle(VtimerRequest::Fired { vcpu: VcpuId(7), timer: TimerKind::Virtual, now: 1 });
    assert_eq!(err, Err(ServerError::NoSuchVcpu(VcpuId(7))));
    let access = Cp15Access { opc1: 0, crn: 14, crm: 2, opc2: 1, write: true, rt: 0, value: 1 };
    let err = s.handle(VtimerRequest::Cp15 { vcpu: VcpuId(200), access, now: 1 });
    assert_eq!(err, Err(ServerError::NoSuchVcpu(VcpuId(200))));
}

#[test]
fn messages_for_other_servers_are_refused() {
    let mut s = server();
    let msg = Message::Vcpu(ipc::VcpuRequest::Start { vcpu: V0 });
    assert_eq!(s.handle_message(msg), Err(ServerError::WrongServer));
    let msg = Message::Vtimer(VtimerRequest::Start { vcpu: V1, now: T0 });
    assert!(s.handle_message(msg).is_ok());
}

#[test]
fn ctl_reads_and_writes() {
    let mut s = server();
    assert_eq!(mrc(&mut s, V0, CTL, 2, T0), [reg(2, 0), Action::AdvancePc]);
    // Reserved bits and ISTATUS are not stored; masked, so no line.
    assert_eq!(mcr(&mut s, V0, CTL, u32::MAX, T0), [Action::AdvancePc]);
    // CVAL is 0, so the condition is met: ISTATUS reads 1.
    assert_eq!(mrc(&mut s, V0, CTL, 2, T0), [reg(2, ctl::ENABLE | ctl::IMASK | ctl::ISTATUS), Action::AdvancePc]);
}

#[test]
fn level_changes_are_sent_exactly_once() {
    let mut s = server();
    // Deadline in the past, enabled, not masked: the line rises now.
    assert_eq!(mcrr(&mut s, CVAL, T0 - 1, T0), [Action::AdvancePc]);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0), [Action::AdvancePc, line(30, V0, true)]);
    // Reading or rewriting the same state sends nothing more.
    assert_eq!(mrc(&mut s, V0, CTL, 0, T0 + 1)[1..], [Action::AdvancePc]);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0 + 2), [Action::AdvancePc]);
    // Masking lowers it, unmasking raises it, disabling lowers it.
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE | ctl::IMASK, T0 + 3), [Action::AdvancePc, line(30, V0, false)]);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0 + 4), [Action::AdvancePc, line(30, V0, true)]);
    assert_eq!(mcr(&mut s, V0, CTL, 0, T0 + 5), [Action::AdvancePc, line(30, V0, false)]);
    assert_eq!(mcr(&mut s, V0, CTL, 0, T0 + 6), [Action::AdvancePc]);
    // The other vCPU's line is its own.
    s.handle(VtimerRequest::Start { vcpu: V1, now: T0 }).unwrap();
    assert_eq!(mcr(&mut s, V1, CTL, ctl::ENABLE, T0 + 7), [Action::AdvancePc, line(30, V1, true)]);
    assert!(!s.vcpu(V0).unwrap().phys_line);
}

#[test]
fn hyp_timer_follows_the_deadline_and_fired_raises_the_line() {
    let mut s = server();
    let deadline = T0 + 62_500;
    assert_eq!(mcrr(&mut s, CVAL, deadline, T0), [Action::AdvancePc]);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0 + 1), [Action::AdvancePc, hyp(Some(deadline))]);
    // Unchanged deadline: not sent again.
    assert_eq!(mrc(&mut s, V0, TVAL, 1, T0 + 2), [reg(1, 62_498), Action::AdvancePc]);
    // An early (stale) firing re-arms the Hyp timer and raises nothing.
    assert_eq!(fired(&mut s, TimerKind::Physical, deadline - 1), [hyp(Some(deadline))]);
    // The real one raises the line and disarms the Hyp timer.
    assert_eq!(fired(&mut s, TimerKind::Physical, deadline + 3), [line(30, V0, true), hyp(None)]);
    assert!(s.vcpu(V0).unwrap().phys_line);
    // Linux's handler: masks, then programs the next tick with TVAL.
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE | ctl::IMASK, deadline + 10), [Action::AdvancePc, line(30, V0, false)]);
    assert_eq!(mcr(&mut s, V0, TVAL, 62_500, deadline + 20), [Action::AdvancePc]);
    assert_eq!(
        mcr(&mut s, V0, CTL, ctl::ENABLE, deadline + 30),
        [Action::AdvancePc, hyp(Some(deadline + 20 + 62_500))]
    );
    // Moving the deadline into the past raises the line and disarms.
    assert_eq!(mcrr(&mut s, CVAL, 0, deadline + 40), [Action::AdvancePc, line(30, V0, true), hyp(None)]);
    // A firing of a disabled timer only disarms the Hyp timer.
    assert_eq!(mcr(&mut s, V0, CTL, 0, deadline + 50), [Action::AdvancePc, line(30, V0, false)]);
    assert_eq!(fired(&mut s, TimerKind::Physical, deadline + 60), [hyp(None)]);
}

#[test]
fn tval_reads_signed_and_writes_sign_extended() {
    let mut s = server();
    mcr(&mut s, V0, CTL, ctl::ENABLE | ctl::IMASK, T0);
    assert_eq!(mcr(&mut s, V0, TVAL, (-100i32) as u32, T0), [Action::AdvancePc]);
    assert_eq!(s.vcpu(V0).unwrap().phys.read_cval(), T0 - 100);
    assert_eq!(mrc(&mut s, V0, TVAL, 0, T0 + 50), [reg(0, (-150i32) as u32), Action::AdvancePc]);
    assert_eq!(mrc(&mut s, V0, CTL, 0, T0), [reg(0, ctl::ENABLE | ctl::IMASK | ctl::ISTATUS), Action::AdvancePc]);
    mcr(&mut s, V0, TVAL, i32::MAX as u32, T0);
    assert_eq!(s.vcpu(V0).unwrap().phys.read_cval(), T0 + 0x7fff_ffff);
    assert_eq!(mrc(&mut s, V0, CTL, 0, T0), [reg(0, ctl::ENABLE | ctl::IMASK), Action::AdvancePc]);
}

#[test]
fn cval_and_cntpct_are_64_bit_pairs() {
    let mut s = server();
    let now = 0x1122_3344_5566_7788;
    assert_eq!(mrrc(&mut s, CNTPCT, 6, 7, now), [reg(6, 0x5566_7788), reg(7, 0x1122_3344), Action::AdvancePc]);
    assert_eq!(mcrr(&mut s, CVAL, u64::MAX, now), [Action::AdvancePc]);
    assert_eq!(mrrc(&mut s, CVAL, 0, 1, now), [reg(0, u32::MAX), reg(1, u32::MAX), Action::AdvancePc]);
    // Enabled with CVAL = u64::MAX: a deadline that never comes, armed as is.
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, now), [Action::AdvancePc, hyp(Some(u64::MAX))]);
    assert_eq!(mrc(&mut s, V0, CTL, 0, u64::MAX - 1), [reg(0, ctl::ENABLE), Action::AdvancePc]);
    // The count reaching u64::MAX meets it.
    assert_eq!(fired(&mut s, TimerKind::Physical, u64::MAX), [line(30, V0, true), hyp(None)]);
    // The physical count is the host's: no CNTVOFF applied.
    assert_eq!(mrrc(&mut s, CNTPCT, 2, 3, T0)[..2], [reg(2, T0 as u32), reg(3, (T0 >> 32) as u32)]);
}

#[test]
fn tval_write_near_the_top_of_the_count_wraps() {
    let mut s = server();
    mcrr(&mut s, CVAL, u64::MAX, T0);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0), [Action::AdvancePc, hyp(Some(u64::MAX))]);
    // now + 16 wraps past zero: CVAL = 6, met at once (unsigned compare).
    let now = u64::MAX - 9;
    assert_eq!(mcr(&mut s, V0, TVAL, 16, now), [Action::AdvancePc, line(30, V0, true), hyp(None)]);
    assert_eq!(s.vcpu(V0).unwrap().phys.read_cval(), 6);
    // A negative TVAL near zero wraps to a far deadline.
    assert_eq!(
        mcr(&mut s, V0, TVAL, (-10i32) as u32, 3),
        [Action::AdvancePc, line(30, V0, false), hyp(Some(u64::MAX - 6))]
    );
}

#[test]
fn undefined_accesses_change_nothing() {
    let mut s = server();
    mcrr(&mut s, CVAL, T0 + 1000, T0);
    let before = s.clone();
    let undef = [Action::InjectUndef];
    // CNTPCT is read-only.
    assert_eq!(mcrr(&mut s, CNTPCT, 5, T0), undef);
    // Registers this server does not own: CNTVOFF, CNTHP_CVAL, CNTV_CVAL.
    for opc1 in [1, 3, 4, 6] {
        assert_eq!(mrrc(&mut s, opc1, 0, 1, T0), undef);
        assert_eq!(mcrr(&mut s, opc1, 5, T0), undef);
    }
    // CNTV_CTL, CNTFRQ, CNTHCTL through the 32-bit path.
    for (opc1, crm, opc2) in [(0, 3, 1), (0, 0, 0), (4, 1, 0)] {
        let access = Cp15Access { opc1, crn: 14, crm, opc2, write: true, rt: 0, value: 1 };
        let reply = s.handle(VtimerRequest::Cp15 { vcpu: V0, access, now: T0 }).unwrap();
        assert_eq!(actions(reply), undef);
    }
    // UNPREDICTABLE register choices: PC, and MRRC into one register twice.
    assert_eq!(mrc(&mut s, V0, CTL, 15, T0), undef);
    assert_eq!(mrrc(&mut s, CVAL, 15, 1, T0), undef);
    assert_eq!(mrrc(&mut s, CVAL, 3, 3, T0), undef);
    let access = Cp15WideAccess { opc1: CVAL, crm: 14, write: true, rt: 1, rt2: 200, value: 7 };
    let reply = s.handle(VtimerRequest::Cp15Wide { vcpu: V0, access, now: T0 }).unwrap();
    assert_eq!(actions(reply), undef);
    assert_eq!(s, before);
}

fn pend(intid: u16, vcpu: VcpuId) -> Action {
    Action::Send(Message::Vgic(VgicRequest::Pend {
        intid: IntId(intid),
        target: Some(vcpu),
        status: None,
        masked_timer: true,
    }))
}

/// Masked delivery: masked, deactivated, pending by a latch; nothing else
/// about the vCPU's timers changes.
#[test]
fn virtual_timer_fires_masked() {
    let mut s = VtimerServer::new(&VmConfig { vtimer: VtimerDelivery::Masked, ..config() });
    s.handle(VtimerRequest::Start { vcpu: V0, now: T0 }).unwrap();
    let before = s.clone();
    let masked =
        [Action::SetVirtualTimerMask { masked: true }, Action::DeactivatePhysical { intid: IntId(27) }, pend(27, V0)];
    assert_eq!(fired(&mut s, TimerKind::Virtual, T0 + 10), masked);
    assert_eq!(s, before);
    // Each firing is delivered alike (the guest cleared IMASK between).
    assert_eq!(fired(&mut s, TimerKind::Virtual, T0 + 20), masked);
    let reply = s.handle(VtimerRequest::Fired { vcpu: V1, timer: TimerKind::Virtual, now: T0 });
    assert_eq!(actions(reply.unwrap())[2], pend(27, V1));
}

/// The default delivery: linked, exact.
#[test]
fn virtual_timer_fires_as_a_hardware_linked_ppi() {
    assert_eq!(config().vtimer, VtimerDelivery::Linked);
    let mut s = server();
    assert_eq!(fired(&mut s, TimerKind::Virtual, T0 + 10), [set_line(IntId(27), V0, true, Some(IntId(27)))]);
    let reply = s.handle(VtimerRequest::Fired { vcpu: V1, timer: TimerKind::Virtual, now: T0 });
    assert_eq!(
        actions(reply.unwrap()),
        [Action::Send(Message::Vgic(VgicRequest::SetLine {
            intid: IntId(27),
            level: true,
            target: Some(V1),
            hw: Some(IntId(27)),
            change: 0,
            status: None,
        }))]
    );
}

#[test]
fn interrupt_numbers_come_from_the_configuration() {
    let mut c = config();
    c.timer = TimerIntids {
        guest_secure_phys: IntId(16),
        guest_phys: IntId(17),
        guest_virt: IntId(18),
        guest_hyp: IntId(19),
        host_virt: IntId(20),
    };
    assert_eq!(c.validate(), Ok(()));
    let mut s = VtimerServer::new(&c);
    s.handle(VtimerRequest::Start { vcpu: V0, now: T0 }).unwrap();
    assert_eq!(fired(&mut s, TimerKind::Virtual, T0), [set_line(IntId(18), V0, true, Some(IntId(20)))]);
    assert_eq!(mcr(&mut s, V0, CTL, ctl::ENABLE, T0), [Action::AdvancePc, line(17, V0, true)]);
    let mut s = VtimerServer::new(&VmConfig { vtimer: VtimerDelivery::Masked, ..c });
    s.handle(VtimerRequest::Start { vcpu: V0, now: T0 }).unwrap();
    assert_eq!(
        fired(&mut s, TimerKind::Virtual, T0),
        [Action::SetVirtualTimerMask { masked: true }, Action::DeactivatePhysical { intid: IntId(20) }, pend(18, V0)]
    );
}

#[test]
fn timer_state_survives_off_and_on() {
    let mut s = server();
    let deadline = T0 + 1_000;
    mcrr(&mut s, CVAL, deadline, T0);
    mcr(&mut s, V0, CTL, ctl::ENABLE, T0);
    // The vCPU goes off and comes back before the deadline: same offset,
    // the Hyp timer of its physical CPU armed again.
    let reply = s.handle(VtimerRequest::Start { vcpu: V0, now: T0 + 500 }).unwrap();
    assert_eq!(actions(reply), [Action::SetCntvoff { value: T0 }, hyp(Some(deadline))]);
    // Back after the deadline: the line is raised (the vGIC may have reset
    // the vCPU's private interrupts) and the Hyp timer disarmed.
    let reply = s.handle(VtimerRequest::Start { vcpu: V0, now: deadline + 5 }).unwrap();
    assert_eq!(actions(reply), [Action::SetCntvoff { value: T0 }, line(30, V0, true), hyp(None)]);
    // A raised line is re-stated at each start, and the registers kept.
    let reply = s.handle(VtimerRequest::Start { vcpu: V0, now: deadline + 9 }).unwrap();
    assert_eq!(actions(reply)[1], line(30, V0, true));
    assert_eq!(
        mrrc(&mut s, CVAL, 0, 1, deadline + 10)[..2],
        [reg(0, deadline as u32), reg(1, (deadline >> 32) as u32)]
    );
}

#[test]
fn state_round_trips_through_the_wire_format() {
    let mut s = server();
    s.handle(VtimerRequest::Start { vcpu: V1, now: T0 + 7 }).unwrap();
    mcrr(&mut s, CVAL, T0 + 100, T0);
    mcr(&mut s, V0, CTL, ctl::ENABLE, T0);
    let mut buf = [0u8; 512];
    let bytes = ipc::wire::encode(&s, &mut buf).unwrap();
    let mut restored: VtimerServer = ipc::wire::decode(bytes).unwrap();
    assert_eq!(restored, s);
    // The restored copy answers the next request as the original does.
    let next = VtimerRequest::Fired { vcpu: V0, timer: TimerKind::Physical, now: T0 + 100 };
    assert_eq!(restored.handle(next), s.handle(next));
    assert_eq!(restored, s);
}

#[test]
fn a_failed_request_leaves_the_state_as_it_was() {
    let mut s = VtimerServer::new(&VmConfig::example(2));
    // The start of a vCPU the VM does not have fails after CNTVOFF would
    // have been chosen: it must not be.
    let before = s.clone();
    assert_eq!(s.handle(VtimerRequest::Start { vcpu: VcpuId(5), now: 1_000 }), Err(ServerError::NoSuchVcpu(VcpuId(5))));
    assert_eq!(s, before);
    assert_eq!(s.cntvoff(), None);
    assert!(s.handle(VtimerRequest::Start { vcpu: VcpuId(1), now: 2_000 }).is_ok());
    assert_eq!(s.cntvoff(), Some(2_000));
}
