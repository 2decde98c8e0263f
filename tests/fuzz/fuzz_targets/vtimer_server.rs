//! The virtual-timer server on arbitrary sequences of well-typed requests,
//! against an exact model of what it must answer.
//!
//! The model is the architecture's physical timer (DDI 0406C, B8 "The
//! Generic Timer": CNTP_CTL ENABLE/IMASK/ISTATUS, CNTP_CVAL, CNTP_TVAL as a
//! signed 32-bit view of CVAL - count, CNTPCT; encodings from B3.17) plus
//! the server's documented protocol (crate docs of `vtimer-server`): CNTVOFF
//! fixed at the VM's first Start; the guest's physical-timer PPI driven as a
//! level line, with `SetLine` sent once per change of
//! `ENABLE && !IMASK && count >= CVAL` (and a raised line re-asserted at
//! Start); the Hyp timer armed at CVAL while the output is low and can
//! rise; the virtual timer's firing forwarded as a hardware-linked line
//! (`VtimerDelivery::Linked`), or masked, deactivated and made pending by a
//! `Pend` (`Masked`).
//!
//! After every step: the reply equals the model's, action for action; the
//! reply is well formed; a refused request changes nothing; the state
//! survives a postcard round trip and the restored copy answers the next
//! request identically; and, while the counter only moves forward, the
//! line as the vGIC server was told it equals the timer's output, and the
//! Hyp timer is armed exactly when the output can rise by itself.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ipc::msg::TimerKind;
use ipc::{
    Action, Cp15Access, Cp15WideAccess, GuestReg, Message, Reply, Server, ServerError, ServerId, TimerIntids, VcpuId,
    VgicRequest, VmConfig, VtimerRequest, MAX_VCPUS,
};
use libfuzzer_sys::fuzz_target;
use splitvisor_fuzz::check::{self, Answering};
use splitvisor_fuzz::config::FuzzConfig;
use splitvisor_fuzz::trace_seed;
use vtimer_server::VtimerServer;

/// CNTP_CTL bits (B4.1.26).
const ENABLE: u32 = 1;
const IMASK: u32 = 2;
const ISTATUS: u32 = 4;

#[derive(Debug, Arbitrary)]
enum Op {
    Start {
        vcpu: u8,
    },
    /// MRC/MCR CNTP_CTL.
    Ctl {
        vcpu: u8,
        write: bool,
        value: u32,
        rt: u8,
    },
    /// MRC/MCR CNTP_TVAL.
    Tval {
        vcpu: u8,
        write: bool,
        value: u32,
        rt: u8,
    },
    /// MRRC/MCRR CNTP_CVAL.
    Cval {
        vcpu: u8,
        write: bool,
        value: u64,
        rt: u8,
        rt2: u8,
    },
    /// MRRC (or the UNDEFINED MCRR) CNTPCT.
    Pct {
        vcpu: u8,
        write: bool,
        rt: u8,
        rt2: u8,
    },
    Fired {
        vcpu: u8,
        physical: bool,
    },
    /// Anything at all: any encoding, any vCPU number.
    Raw(VtimerRequest),
}

#[derive(Debug, Arbitrary)]
enum Time {
    /// The counter moved on a little (the common case).
    Tick(u16),
    /// It moved on a lot.
    Leap(u32),
    /// Any count, forwards or (as no real counter does) backwards.
    Anywhere(u64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    start_count: u64,
    steps: Vec<(Op, Time)>,
}

/// The model's view of one vCPU's physical timer and what was sent for it.
#[derive(Clone, Copy, Debug, Default)]
struct ModelTimer {
    ctl: u32,
    cval: u64,
    /// The level the server last told the vGIC (its `phys_line`).
    line: bool,
    /// The Hyp timer deadline last asked for.
    armed: Option<u64>,
}

impl ModelTimer {
    fn istatus(&self, now: u64) -> bool {
        self.ctl & ENABLE != 0 && now >= self.cval
    }
    fn output(&self, now: u64) -> bool {
        self.istatus(now) && self.ctl & IMASK == 0
    }
    fn deadline(&self, now: u64) -> Option<u64> {
        (self.ctl & ENABLE != 0 && self.ctl & IMASK == 0 && now < self.cval).then_some(self.cval)
    }
}

struct Model {
    vcpus: u8,
    timer: TimerIntids,
    delivery: ipc::VtimerDelivery,
    cntvoff: Option<u64>,
    timers: [ModelTimer; MAX_VCPUS],
    /// The guest physical-timer line as the vGIC server was told it.
    vgic_line: [bool; MAX_VCPUS],
}

fn set_line(intid: ipc::IntId, vcpu: VcpuId, level: bool, hw: Option<ipc::IntId>) -> Action {
    Action::Send(Message::Vgic(VgicRequest::SetLine { intid, level, target: Some(vcpu), hw, change: 0, status: None }))
}

fn reply(actions: &[Action]) -> Reply {
    Reply::of(actions).expect("model replies fit")
}

fn gpr(n: u8) -> Option<GuestReg> {
    (n <= 14).then_some(GuestReg::Gpr(n))
}

impl Model {
    fn new(config: &VmConfig) -> Self {
        Model {
            vcpus: config.vcpus,
            timer: config.timer,
            delivery: config.vtimer,
            cntvoff: None,
            timers: [ModelTimer::default(); MAX_VCPUS],
            vgic_line: [false; MAX_VCPUS],
        }
    }

    /// After a register access: send what changed.
    fn update(&mut self, v: VcpuId, now: u64, out: &mut Vec<Action>) {
        let guest_phys = self.timer.guest_phys;
        let t = &mut self.timers[v.index()];
        let level = t.output(now);
        if level != t.line {
            out.push(set_line(guest_phys, v, level, None));
            t.line = level;
        }
        let deadline = t.deadline(now);
        if deadline != t.armed {
            out.push(Action::SetHypTimer { deadline });
            t.armed = deadline;
        }
    }

    /// What the server must answer, and the model's next state.
    fn answer(&mut self, request: &VtimerRequest) -> Result<Reply, ServerError> {
        let (vcpu, now) = match *request {
            VtimerRequest::Start { vcpu, now }
            | VtimerRequest::Cp15 { vcpu, now, .. }
            | VtimerRequest::Cp15Wide { vcpu, now, .. }
            | VtimerRequest::Fired { vcpu, now, .. } => (vcpu, now),
        };
        if vcpu.0 >= self.vcpus {
            return Err(ServerError::NoSuchVcpu(vcpu));
        }
        let i = vcpu.index();
        let mut out = Vec::new();
        match *request {
            VtimerRequest::Start { .. } => {
                let offset = *self.cntvoff.get_or_insert(now);
                out.push(Action::SetCntvoff { value: offset });
                let t = &mut self.timers[i];
                t.line = t.output(now);
                if t.line {
                    out.push(set_line(self.timer.guest_phys, vcpu, true, None));
                }
                t.armed = t.deadline(now);
                out.push(Action::SetHypTimer { deadline: t.armed });
            }
            VtimerRequest::Fired { timer: TimerKind::Virtual, .. } => match self.delivery {
                // Masked as it fires: deactivated at once (after the mask),
                // the guest's PPI pending by a latch.
                ipc::VtimerDelivery::Masked => out.extend([
                    Action::SetVirtualTimerMask { masked: true },
                    Action::DeactivatePhysical { intid: self.timer.host_virt },
                    Action::Send(Message::Vgic(VgicRequest::Pend {
                        intid: self.timer.guest_virt,
                        target: Some(vcpu),
                        status: None,
                        masked_timer: true,
                    })),
                ]),
                ipc::VtimerDelivery::Linked => {
                    out.push(set_line(self.timer.guest_virt, vcpu, true, Some(self.timer.host_virt)))
                }
            },
            VtimerRequest::Fired { timer: TimerKind::Physical, .. } => {
                let guest_phys = self.timer.guest_phys;
                let t = &mut self.timers[i];
                let level = t.output(now);
                if level != t.line {
                    out.push(set_line(guest_phys, vcpu, level, None));
                    t.line = level;
                }
                t.armed = t.deadline(now);
                out.push(Action::SetHypTimer { deadline: t.armed });
            }
            VtimerRequest::Cp15 { access: a, .. } => {
                let Some(rt) = gpr(a.rt) else { return Ok(reply(&[Action::InjectUndef])) };
                let t = &mut self.timers[i];
                match ((a.opc1, a.crn, a.crm, a.opc2), a.write) {
                    ((0, 14, 2, 1), false) => {
                        let istatus = if t.istatus(now) { ISTATUS } else { 0 };
                        out.push(Action::SetReg { reg: rt, value: t.ctl | istatus });
                    }
                    ((0, 14, 2, 1), true) => t.ctl = a.value & (ENABLE | IMASK),
                    ((0, 14, 2, 0), false) => {
                        out.push(Action::SetReg { reg: rt, value: t.cval.wrapping_sub(now) as u32 })
                    }
                    ((0, 14, 2, 0), true) => t.cval = now.wrapping_add_signed(i64::from(a.value as i32)),
                    _ => return Ok(reply(&[Action::InjectUndef])),
                }
                out.push(Action::AdvancePc);
                self.update(vcpu, now, &mut out);
            }
            VtimerRequest::Cp15Wide { access: a, .. } => {
                let (Some(lo), Some(hi)) = (gpr(a.rt), gpr(a.rt2)) else {
                    return Ok(reply(&[Action::InjectUndef]));
                };
                if !a.write && a.rt == a.rt2 {
                    // MRRC with Rt == Rt2 is UNPREDICTABLE: UNDEFINED here.
                    return Ok(reply(&[Action::InjectUndef]));
                }
                let t = &mut self.timers[i];
                let read = |value: u64, out: &mut Vec<Action>| {
                    out.push(Action::SetReg { reg: lo, value: value as u32 });
                    out.push(Action::SetReg { reg: hi, value: (value >> 32) as u32 });
                };
                match ((a.opc1, a.crm), a.write) {
                    ((0, 14), false) => read(now, &mut out),
                    ((2, 14), false) => read(t.cval, &mut out),
                    ((2, 14), true) => t.cval = a.value,
                    // CNTPCT is read-only; anything else is not a timer register.
                    _ => return Ok(reply(&[Action::InjectUndef])),
                }
                out.push(Action::AdvancePc);
                self.update(vcpu, now, &mut out);
            }
        }
        Ok(reply(&out))
    }

    fn observe(&mut self, reply: &Reply) {
        for action in &reply.actions.to_vec() {
            if let Action::Send(Message::Vgic(VgicRequest::SetLine {
                intid, level, target: Some(v), hw: None, ..
            })) = action
            {
                if *intid == self.timer.guest_phys {
                    self.vgic_line[v.index()] = *level;
                }
            }
        }
    }
}

fn request(op: &Op, vcpus: u8, now: u64) -> VtimerRequest {
    let v = |n: u8| VcpuId(n % (vcpus + 1));
    let mrc = |crm, opc2, write, value, rt: u8| Cp15Access { opc1: 0, crn: 14, crm, opc2, write, rt: rt % 16, value };
    match *op {
        Op::Start { vcpu } => VtimerRequest::Start { vcpu: v(vcpu), now },
        Op::Ctl { vcpu, write, value, rt } => {
            VtimerRequest::Cp15 { vcpu: v(vcpu), access: mrc(2, 1, write, if write { value } else { 0 }, rt), now }
        }
        Op::Tval { vcpu, write, value, rt } => {
            VtimerRequest::Cp15 { vcpu: v(vcpu), access: mrc(2, 0, write, if write { value } else { 0 }, rt), now }
        }
        Op::Cval { vcpu, write, value, rt, rt2 } => VtimerRequest::Cp15Wide {
            vcpu: v(vcpu),
            access: Cp15WideAccess {
                opc1: 2,
                crm: 14,
                write,
                rt: rt % 16,
                rt2: rt2 % 16,
                value: if write { value } else { 0 },
            },
            now,
        },
        Op::Pct { vcpu, write, rt, rt2 } => VtimerRequest::Cp15Wide {
            vcpu: v(vcpu),
            access: Cp15WideAccess { opc1: 0, crm: 14, write, rt: rt % 16, rt2: rt2 % 16, value: 0 },
            now,
        },
        Op::Fired { vcpu, physical } => VtimerRequest::Fired {
            vcpu: v(vcpu),
            timer: if physical { TimerKind::Physical } else { TimerKind::Virtual },
            now,
        },
        Op::Raw(ref r) => *r,
    }
}

/// Run `steps` against a server built from `config`, the counter starting
/// at `start_count`.
fn run(config: &VmConfig, start_count: u64, steps: &[(Op, Time)]) {
    splitvisor_fuzz::logsink::init();
    let mut server = VtimerServer::new(config);
    let mut model = Model::new(config);
    let mut clock = start_count;
    let mut monotonic = true;
    for (i, (op, time)) in steps.iter().enumerate() {
        let now = match *time {
            Time::Tick(d) => clock.saturating_add(u64::from(d)),
            Time::Leap(d) => clock.saturating_add(u64::from(d) << 16),
            Time::Anywhere(n) => n,
        };
        let req = request(op, config.vcpus, now);
        let req_now = match req {
            VtimerRequest::Start { now, .. }
            | VtimerRequest::Cp15 { now, .. }
            | VtimerRequest::Cp15Wide { now, .. }
            | VtimerRequest::Fired { now, .. } => now,
        };
        if req_now < clock {
            monotonic = false;
        }
        clock = clock.max(req_now);

        let before = server.clone();
        let expected = model.answer(&req);
        let got = server.handle(req);
        assert_eq!(got, expected, "{req:?}");
        match &got {
            Ok(reply) => {
                let answering = match req {
                    VtimerRequest::Cp15 { .. } | VtimerRequest::Cp15Wide { .. } => Answering::Trap,
                    _ => Answering::NotATrap,
                };
                check::reply_shape(ServerId::Vtimer, reply, config.vcpus, answering);
                model.observe(reply);
            }
            Err(_) => assert_eq!(server, before, "a refused request changed the state"),
        }

        // The vGIC's view of each started vCPU's line follows the timer,
        // and the Hyp timer is armed when the output can rise by itself.
        let synced = !matches!(req, VtimerRequest::Fired { timer: TimerKind::Virtual, .. })
            && !got.as_ref().is_ok_and(|r| r.actions.contains(&Action::InjectUndef));
        if let (true, true, Ok(_)) = (monotonic, synced, &got) {
            let v = check::message_vcpu(&Message::Vtimer(req)).expect("names a vCPU").index();
            let t = &model.timers[v];
            assert_eq!(
                model.vgic_line[v],
                t.output(req_now),
                "vGIC told {} for an output of {}",
                model.vgic_line[v],
                t.output(req_now)
            );
            assert_eq!(t.armed, t.deadline(req_now));
            if let Some(d) = t.armed {
                assert!(d > req_now, "Hyp timer armed in the past");
            }
        }

        let mut restored = check::round_trip(&server);
        if let Some((next_op, _)) = steps.get(i + 1) {
            // The restored copy answers like the original.
            let probe = request(next_op, config.vcpus, clock);
            let mut original = server.clone();
            assert_eq!(restored.handle(probe), original.handle(probe));
            assert_eq!(restored, original);
        }
    }
}

/// Requests from a trace seed, at most.
const MAX_TRACE_REQUESTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Some((config, requests)) = trace_seed::decode::<VtimerRequest>(data) {
        // A recorded request carries its own count.
        let steps: Vec<(Op, Time)> =
            requests.into_iter().take(MAX_TRACE_REQUESTS).map(|r| (Op::Raw(r), Time::Tick(0))).collect();
        run(&config, 0, &steps);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input.config.build_or_default(), input.start_count, &input.steps[..input.steps.len().min(256)]);
    }
});
