//! The vGIC server on arbitrary sequences of well-typed requests, with the
//! harness playing the monitor and the hardware: each vCPU's GICv2 virtual
//! interface is simulated (`splitvisor_fuzz::gich`), the server's list
//! register and GICH_HCR writes land in it, every status the server gets is
//! read from it, and the guest acknowledges and deactivates interrupts in it
//! as the virtual CPU interface allows. Kicks are answered with `Sync`
//! (as the monitor does), maintenance interrupts with `Maintenance`, WFI
//! with `Idle`; hardware-linked lines fire only while their physical
//! interrupt is not active, and latched sources (as the virtual timer
//! delivered masked) send `Pend` where a line would rise. `Raw` requests
//! send anything at all, after
//! which only the checks that hold for any input stay on.
//!
//! Invariants, after every request (any input):
//! - the SPIs the scans visit (the busy bitmap) are all the SPIs that are
//!   not idle;
//! - state survives a postcard round trip (checked after each step, which
//!   may hold several requests); the restored copy answers every request of
//!   the next step identically and ends in the same state; a refused
//!   request changes nothing; replies
//!   are well formed and hold only the actions of the request's kind;
//! - a list register is written only in answer to a request that carries a
//!   status (`Maintenance`, `Sync`, `Idle`), with an index below the number
//!   of list registers given in `Start`;
//! - a list register written pending holds an interrupt the distributor has
//!   pending (from that requester, for an SGI), enabled, and whose group is
//!   enabled; one written active holds an active one; priority and group
//!   as the distributor has them.
//!
//! And while the harness is faithful (no `Raw` request yet):
//! - every request is accepted;
//! - after a reply is applied the maintenance interrupt is deasserted
//!   (otherwise it would fire for ever);
//! - an interrupt the guest has active is never taken out of its list
//!   register while the distributor still has it active (its deactivation
//!   would be lost);
//! - once kicks and maintenance interrupts are handled: no two list
//!   registers of a vCPU hold the same INTID, an SPI is in at most one
//!   vCPU's list registers, a vCPU with a free list register holds every
//!   interrupt the distributor forwards to it (once the server has seen
//!   what the guest did in its list registers), an idle vCPU has nothing it
//!   could take, and a physical interrupt is never left active when its
//!   virtual interrupt is gone;
//! - the server deactivates only physical interrupts that are active.
#![no_main]

use std::collections::{HashSet, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use ipc::{AccessSize, Action, IntId, MmioAccess, Reply, Server, ServerError, ServerId, VcpuId, VgicRequest, VmConfig};
use libfuzzer_sys::fuzz_target;
use splitvisor_fuzz::check::{self, Answering};
use splitvisor_fuzz::config::FuzzConfig;
use splitvisor_fuzz::gicd_ref::FuzzAccess;
use splitvisor_fuzz::gich::{lr, Gich, LRS};
use splitvisor_fuzz::trace_seed;
use vgic_server::regs;
use vgic_server::VgicServer;

#[derive(Debug, Arbitrary)]
enum Op {
    /// The monitor starts (or restarts) a vCPU.
    Start { vcpu: u8, list_registers: u8 },
    /// A distributor access from a running vCPU.
    Mmio { vcpu: u8, access: FuzzAccess, write: bool, value: u32, rt: u8, with_status: bool },
    /// An interrupt line changes.
    Line { intid: u16, level: bool, target: u8, with_status: bool },
    /// The guest acknowledges its highest-priority interrupt.
    Ack { vcpu: u8 },
    /// The guest deactivates one of its active interrupts.
    Deactivate { vcpu: u8, nth: u8 },
    /// The guest executes WFI.
    Wfi { vcpu: u8 },
    /// Anything at all.
    Raw(VgicRequest),
}

/// What the guest sets up before the sequence, as an OS would at boot: it
/// makes the interesting states (interrupts enabled, several vCPUs running)
/// easy to reach.
#[derive(Debug, Arbitrary)]
struct Setup {
    /// Start every vCPU.
    start_all: bool,
    /// GICD_CTLR: EnableGrp0 and EnableGrp1.
    enable_groups: bool,
    /// Enable every PPI and SPI.
    enable_all: bool,
    /// Put every interrupt in Group 1.
    group1_all: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    setup: Setup,
    ops: Vec<Op>,
}

/// In the faithful harness, these interrupts are backed by a physical one
/// (as the virtual timer is): INTID 27 and every fourth from 19.
fn hw_linked(intid: u16) -> bool {
    intid >= 16 && intid % 4 == 3
}

/// In the faithful harness, these interrupts' sources latch them with
/// `Pend` instead of raising a line (as the virtual timer delivered masked
/// does): every fourth from 17.
fn latched(intid: u16) -> bool {
    intid >= 16 && intid % 4 == 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Start,
    Mmio,
    Line,
    /// `step`: a trapped WFI, which the reply first steps past.
    Refresh {
        idle: bool,
        step: bool,
    },
}

struct Harness {
    config: VmConfig,
    /// Each vCPU's virtual interface, once started.
    gich: Vec<Option<Gich>>,
    /// List registers given in each vCPU's last Start.
    given: Vec<u8>,
    idle: Vec<bool>,
    /// The guest acknowledged or deactivated something since the server last
    /// saw this vCPU's list registers: its distributor state is stale until
    /// the next request that carries a status (by design: the server cannot
    /// know before).
    unseen: Vec<bool>,
    faithful: bool,
    /// The guest wrote GICD_ISACTIVERn: more interrupts may be active than
    /// list registers hold.
    activer_written: bool,
    /// Physical interrupts the monitor acknowledged for a hardware-linked
    /// line and that wait for deactivation: (vCPU for a PPI, INTID).
    phys_active: HashSet<(Option<u8>, u16)>,
    kicks: VecDeque<u8>,
}

fn dist_read(server: &VgicServer, v: u8, offset: u64) -> u32 {
    server.distributor().read(VcpuId(v), regs::decode(offset, AccessSize::Word))
}

fn dist_bit(server: &VgicServer, v: u8, bank: u64, intid: u16) -> bool {
    dist_read(server, v, bank + 4 * u64::from(intid / 32)) >> (intid % 32) & 1 == 1
}

fn dist_byte(server: &VgicServer, v: u8, bank: u64, index: u16) -> u8 {
    (dist_read(server, v, bank + u64::from(index & !3)) >> (8 * (index % 4))) as u8
}

fn group_enabled(server: &VgicServer, group1: bool) -> bool {
    dist_read(server, 0, 0x000) >> u32::from(group1) & 1 == 1
}

/// Whether the distributor has `intid` pending for `v` (from `source`, for
/// an SGI), as its registers read.
fn dist_pending(server: &VgicServer, v: u8, intid: u16, source: u8) -> bool {
    if intid < 16 {
        dist_byte(server, v, 0xF20, intid) >> source & 1 == 1
    } else {
        dist_bit(server, v, 0x200, intid)
    }
}

impl Harness {
    fn vcpus(&self) -> u8 {
        self.config.vcpus
    }

    fn started(&self) -> Vec<u8> {
        (0..self.vcpus()).filter(|&v| self.gich[usize::from(v)].is_some()).collect()
    }

    fn running(&self) -> Vec<u8> {
        self.started().into_iter().filter(|&v| !self.idle[usize::from(v)]).collect()
    }

    /// Check one list register value written for `v` against the
    /// distributor after the reply.
    fn check_lr(&self, server: &VgicServer, v: u8, value: u32) {
        if !lr::valid(value) {
            return;
        }
        let id = lr::virtual_id(value);
        assert!(id < IntId::LIMIT, "LR with INTID {id}");
        let implemented = id < 32 || id < 32 + self.config.spis;
        assert!(implemented, "LR for INTID {id}, which the distributor does not implement");
        let source = if lr::hw(value) {
            let p = lr::physical_id(value);
            assert!(id >= 16 && (16..IntId::LIMIT).contains(&p), "hardware LR {value:#x}");
            0
        } else {
            let cpuid = lr::cpuid(value);
            if id < 16 {
                assert!(cpuid < self.vcpus(), "SGI from vCPU {cpuid}: {value:#x}");
            } else {
                assert_eq!(cpuid, 0, "CPUID in a non-SGI LR: {value:#x}");
            }
            cpuid
        };
        let group1 = dist_bit(server, v, 0x080, id);
        if lr::pending(value) {
            assert!(
                dist_pending(server, v, id, source),
                "vcpu{v}: LR {value:#x} pending, distributor has it not pending"
            );
            assert!(id < 16 || dist_bit(server, v, 0x100, id), "vcpu{v}: LR {value:#x} pending, interrupt disabled");
            assert!(group_enabled(server, group1), "vcpu{v}: LR {value:#x} pending, its group is disabled");
        }
        if lr::active(value) {
            assert!(dist_bit(server, v, 0x300, id), "vcpu{v}: LR {value:#x} active, distributor has it not active");
        }
        assert_eq!(lr::priority(value), dist_byte(server, v, 0x400, id), "vcpu{v}: LR {value:#x} priority");
        assert_eq!(lr::group1(value), group1, "vcpu{v}: LR {value:#x} group");
    }

    /// Apply a reply to the simulated hardware, checking each action is one
    /// the request may cause.
    fn apply(&mut self, server: &VgicServer, v: Option<u8>, kind: Kind, reply: &Reply) {
        let before = v.and_then(|v| self.gich[usize::from(v)].clone());
        let actions = reply.actions.to_vec();
        // A trapped WFI is stepped past first, once.
        if let Kind::Refresh { step: true, .. } = kind {
            assert_eq!(actions.first(), Some(&Action::AdvancePc), "a WFI answered {actions:?}");
        }
        for (i, action) in actions.iter().enumerate() {
            match *action {
                Action::Kick { vcpu } => self.kicks.push_back(vcpu.0),
                Action::WriteListRegister { index, value } => {
                    assert!(matches!(kind, Kind::Refresh { .. }), "LR written in answer to {kind:?}");
                    let v = v.expect("a refresh names its vCPU");
                    let given = self.given[usize::from(v)];
                    assert!(usize::from(index) < usize::from(given).min(LRS), "LR{index} written; Start gave {given}");
                    self.check_lr(server, v, value);
                    let gich = self.gich[usize::from(v)].as_mut().expect("written only after Start");
                    gich.lrs[usize::from(index)] = value;
                }
                Action::WriteGichHcr { value } => {
                    assert!(matches!(kind, Kind::Refresh { .. }), "GICH_HCR written in answer to {kind:?}");
                    let v = v.expect("a refresh names its vCPU");
                    if let Some(g) = self.gich[usize::from(v)].as_mut() {
                        g.hcr = value;
                    }
                }
                Action::DeactivatePhysical { intid } => {
                    assert!(matches!(kind, Kind::Refresh { .. }), "physical deactivation in answer to {kind:?}");
                    let key = (intid.is_ppi().then(|| v.expect("a refresh names its vCPU")), intid.0);
                    let was = self.phys_active.remove(&key);
                    if self.faithful {
                        assert!(was, "deactivation of physical {intid:?}, which is not active");
                    }
                }
                Action::WaitForInterrupt => {
                    assert!(matches!(kind, Kind::Refresh { idle: true, .. }), "WaitForInterrupt in answer to {kind:?}");
                    let v = v.expect("Idle names its vCPU");
                    self.idle[usize::from(v)] = true;
                }
                Action::AdvancePc if i == 0 && matches!(kind, Kind::Refresh { step: true, .. }) => {}
                Action::SetReg { .. } | Action::AdvancePc | Action::InjectDataAbort { .. } => {
                    assert_eq!(kind, Kind::Mmio, "{action:?} in answer to {kind:?}");
                }
                ref other => panic!("the vGIC server asked for {other:?}"),
            }
        }
        let Some(v) = v else { return };
        if let (Kind::Refresh { .. }, true) = (kind, self.faithful) {
            let gich = self.gich[usize::from(v)].as_ref().expect("refreshed after Start");
            assert!(!gich.maintenance(), "vcpu{v}: maintenance interrupt still asserted after the reply: {gich:x?}");
            // An interrupt the guest has active stays in a list register
            // while the distributor has it active.
            if let (Some(old), false) = (before, self.activer_written) {
                for (_, value) in old.entries().filter(|(_, x)| lr::active(*x)) {
                    let kept = gich.entries().any(|(_, n)| lr::active(n) && lr::same_interrupt(n, value));
                    let id = lr::virtual_id(value);
                    if !kept && dist_bit(server, v, 0x300, id) {
                        panic!("vcpu{v}: active {value:#x} taken out of the list registers; its deactivation would be lost");
                    }
                }
            }
        }
    }

    /// Send a request and apply its reply; checks common to all requests.
    fn send(
        &mut self,
        server: &mut VgicServer,
        shadow: &mut VgicServer,
        request: VgicRequest,
    ) -> Result<Reply, ServerError> {
        let (v, kind) = match request {
            VgicRequest::Start { vcpu, .. } => (Some(vcpu.0), Kind::Start),
            VgicRequest::Mmio { vcpu, .. } => (Some(vcpu.0), Kind::Mmio),
            // A private line of the vCPU being handled, with its status: a
            // refresh of that vCPU.
            VgicRequest::SetLine { target: Some(vcpu), status: Some(_), .. } => {
                (Some(vcpu.0), Kind::Refresh { idle: false, step: false })
            }
            VgicRequest::SetLine { .. } => (None, Kind::Line),
            VgicRequest::Pend { target: Some(vcpu), status: Some(_), .. } => {
                (Some(vcpu.0), Kind::Refresh { idle: false, step: false })
            }
            VgicRequest::Pend { .. } => (None, Kind::Line),
            VgicRequest::Maintenance { vcpu, .. } | VgicRequest::Sync { vcpu, .. } => {
                (Some(vcpu.0), Kind::Refresh { idle: false, step: false })
            }
            VgicRequest::Idle { vcpu, .. } => (Some(vcpu.0), Kind::Refresh { idle: true, step: false }),
            VgicRequest::Wfi { vcpu, .. } => (Some(vcpu.0), Kind::Refresh { idle: true, step: true }),
        };
        let before = server.clone();
        let got = server.handle(request);
        match &request {
            VgicRequest::Mmio { status: Some(_), vcpu, .. }
            | VgicRequest::Start { vcpu, .. }
            | VgicRequest::Sync { vcpu, .. }
            | VgicRequest::Maintenance { vcpu, .. }
            | VgicRequest::Idle { vcpu, .. }
            | VgicRequest::Wfi { vcpu, .. }
            | VgicRequest::SetLine { target: Some(vcpu), status: Some(_), .. }
            | VgicRequest::Pend { target: Some(vcpu), status: Some(_), .. }
                if got.is_ok() =>
            {
                if let Some(u) = self.unseen.get_mut(vcpu.index()) {
                    *u = false;
                }
            }
            _ => {}
        }
        assert_eq!(shadow.handle(request), got, "a restored copy answers differently");
        assert_ne!(got, Err(ServerError::ReplyFull), "a reply overflowed: {request:?}");
        match &got {
            Ok(reply) => {
                // A distributor access and a trapped WFI are guest traps.
                let trap = matches!(kind, Kind::Mmio | Kind::Refresh { step: true, .. });
                let answering = if trap { Answering::Trap } else { Answering::NotATrap };
                check::reply_shape(ServerId::Vgic, reply, self.vcpus(), answering);
                if let (VgicRequest::Start { vcpu, list_registers }, true) = (&request, v.is_some()) {
                    self.gich[vcpu.index()] = Some(Gich::new(usize::from(*list_registers)));
                    self.given[vcpu.index()] = *list_registers;
                    self.idle[vcpu.index()] = false;
                }
                if let VgicRequest::Sync { vcpu, .. } | VgicRequest::Maintenance { vcpu, .. } = &request {
                    // The vCPU runs again.
                    self.idle[vcpu.index()] = false;
                }
                let v = v.filter(|&v| v < self.vcpus());
                self.apply(server, v, kind, reply);
            }
            Err(e) => {
                assert_eq!(*server, before, "a refused request changed the state");
                assert!(!self.faithful, "{request:?} refused: {e:?}");
            }
        }
        got
    }

    /// Handle kicks and maintenance interrupts until none is left, as the
    /// monitor does before it lets the vCPUs run on.
    fn settle(&mut self, server: &mut VgicServer, shadow: &mut VgicServer) {
        for _ in 0..256 {
            if let Some(v) = self.kicks.pop_front() {
                if let Some(Some(gich)) = self.gich.get(usize::from(v)) {
                    let status = gich.status();
                    let _ = self.send(server, shadow, VgicRequest::Sync { vcpu: VcpuId(v), status });
                }
                continue;
            }
            let Some(v) =
                self.started().into_iter().find(|&v| self.gich[usize::from(v)].as_ref().is_some_and(Gich::maintenance))
            else {
                return;
            };
            let status = self.gich[usize::from(v)].as_ref().expect("started").status();
            let _ = self.send(server, shadow, VgicRequest::Maintenance { vcpu: VcpuId(v), status });
        }
        panic!("kicks and maintenance interrupts do not settle: {:?}", self.kicks);
    }

    /// The checks on the whole machine once it has settled.
    fn settled(&self, server: &VgicServer) {
        let n = self.vcpus();
        let mut spi_holder = std::collections::HashMap::new();
        for v in self.started() {
            let gich = self.gich[usize::from(v)].as_ref().expect("started");
            let valid: Vec<u32> = gich.entries().map(|(_, x)| x).filter(|x| lr::valid(*x)).collect();
            let mut ids: Vec<u16> = valid.iter().map(|x| lr::virtual_id(*x)).collect();
            ids.sort_unstable();
            let count = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), count, "vcpu{v}: two list registers hold one INTID: {:x?}", gich.lrs);
            for id in ids.iter().filter(|&&id| id >= 32) {
                if let Some(other) = spi_holder.insert(*id, v) {
                    panic!("SPI {id} in the list registers of vcpu{other} and vcpu{v}");
                }
            }
            if self.idle[usize::from(v)] {
                assert_eq!(gich.signalled(), None, "vcpu{v} idles with an interrupt it could take: {:x?}", gich.lrs);
            }
        }
        for v in self.started() {
            let gich = self.gich[usize::from(v)].as_ref().expect("started");
            let held: HashSet<u16> =
                gich.entries().filter(|(_, x)| lr::valid(*x)).map(|(_, x)| lr::virtual_id(x)).collect();
            if held.len() >= gich.count || self.unseen[usize::from(v)] {
                continue;
            }
            // A free list register: everything forwarded to this vCPU is in
            // one. (The distributor's state through its public accessors, for
            // speed; the same state as its registers show, which the
            // vgic_dist_diff target checks against the reference model.)
            let d = server.distributor();
            let mask = ((1u16 << n) - 1) as u8;
            let me = VcpuId(v);
            let mut missing = Vec::new();
            for sgi in 0..16u8 {
                let s = d.sgi(me, sgi).expect("SGIs exist");
                if s.pending & mask != 0 && d.group_enabled(s.group1) && !held.contains(&u16::from(sgi)) {
                    missing.push(u16::from(sgi));
                }
            }
            for id in 16..32u16 {
                let s = d.ppi(me, id).expect("PPIs exist");
                if s.pending() && s.enabled && d.group_enabled(s.group1) && !held.contains(&id) {
                    missing.push(id);
                }
            }
            for (id, s) in d.spis() {
                if !(s.pending() && s.enabled && d.group_enabled(s.group1)) || held.contains(&id) {
                    continue;
                }
                let targets = s.targets & mask;
                let target = if n == 1 { Some(0) } else { (targets != 0).then(|| targets.trailing_zeros() as u8) };
                if target == Some(v) && spi_holder.get(&id).is_none_or(|&h| h == v) {
                    missing.push(id);
                }
            }
            assert!(
                missing.is_empty(),
                "vcpu{v} has a free list register but not INTIDs {missing:?}, which are forwarded to it: {:x?}",
                gich.lrs
            );
        }
        // Physical interrupts whose virtual interrupt is gone are deactivated.
        for &(vcpu, p) in &self.phys_active {
            let owner = vcpu.unwrap_or_else(|| {
                let targets = dist_byte(server, 0, 0x800, p);
                if n == 1 || targets & (((1u16 << n) - 1) as u8) == 0 {
                    0
                } else {
                    targets.trailing_zeros() as u8
                }
            });
            if self.gich.get(usize::from(owner)).is_none_or(Option::is_none) {
                continue;
            }
            let in_lr = self.started().into_iter().any(|v| {
                self.gich[usize::from(v)]
                    .as_ref()
                    .is_some_and(|g| g.entries().any(|(_, x)| lr::valid(x) && lr::hw(x) && lr::physical_id(x) == p))
            });
            let v = vcpu.unwrap_or(owner);
            let live = dist_bit(server, v, 0x200, p) || dist_bit(server, v, 0x300, p);
            assert!(
                in_lr || live,
                "physical INTID {p} (vcpu {vcpu:?}) left active after its virtual interrupt went away"
            );
        }
    }
}

fn pick(list: &[u8], n: u8) -> Option<u8> {
    (!list.is_empty()).then(|| list[usize::from(n) % list.len()])
}

/// Run `ops` against a server built from `config`, after the usual boot and
/// `setup` (none for a trace, which has its own).
fn run(config: &VmConfig, setup: Option<&Setup>, ops: &[Op]) {
    splitvisor_fuzz::logsink::init();
    let config = config.clone();
    let n = config.vcpus;
    let lines = (32 + u32::from(config.spis)).div_ceil(32) * 32;
    let mut server = VgicServer::new(&config);
    let mut shadow = server.clone();
    let mut h = Harness {
        config: config.clone(),
        gich: vec![None; usize::from(n)],
        given: vec![0; usize::from(n)],
        idle: vec![false; usize::from(n)],
        unseen: vec![false; usize::from(n)],
        faithful: true,
        activer_written: false,
        phys_active: HashSet::new(),
        kicks: VecDeque::new(),
    };
    if let Some(setup) = setup {
        // The monitor starts vCPU 0 (4 list registers, as QEMU's GICH_VTR
        // says), the guest sets up its distributor.
        let _ = h.send(&mut server, &mut shadow, VgicRequest::Start { vcpu: VcpuId(0), list_registers: 4 });
        if setup.start_all {
            for v in 1..n {
                let _ = h.send(&mut server, &mut shadow, VgicRequest::Start { vcpu: VcpuId(v), list_registers: 4 });
            }
        }
        let word = |offset: u64, value: u32| MmioAccess {
            ipa: config.gicd.base + offset,
            far: 0xE000_0000 | offset as u32,
            size: AccessSize::Word,
            write: true,
            value: u64::from(value),
            rt: 0,
            sign_extend: false,
        };
        let mut writes = Vec::new();
        for v in h.started() {
            for bank in 0..lines as u64 / 32 {
                if setup.group1_all && (bank == 0 || v == 0) {
                    writes.push((v, word(0x080 + 4 * bank, u32::MAX)));
                }
                if setup.enable_all && (bank == 0 || v == 0) {
                    writes.push((v, word(0x100 + 4 * bank, u32::MAX)));
                }
            }
        }
        if setup.enable_groups {
            writes.push((0, word(0x000, 0b11)));
        }
        for (v, access) in writes {
            let status = h.gich[usize::from(v)].as_ref().map(Gich::status);
            let _ = h.send(&mut server, &mut shadow, VgicRequest::Mmio { vcpu: VcpuId(v), access, status });
        }
    }
    h.settle(&mut server, &mut shadow);
    assert_eq!(shadow, server);
    shadow = check::round_trip(&server);
    for op in ops {
        match *op {
            Op::Start { vcpu, list_registers } => {
                let v = VcpuId(vcpu % n);
                let list_registers =
                    if list_registers % 8 == 7 { 1 + list_registers % 64 } else { 1 + list_registers % 4 };
                let _ = h.send(&mut server, &mut shadow, VgicRequest::Start { vcpu: v, list_registers });
            }
            Op::Mmio { vcpu, access, write, value, rt, with_status } => {
                let Some(v) = pick(&h.running(), vcpu) else { continue };
                let (offset, size) = access.resolve(lines);
                if write && (0x300..0x380).contains(&offset) && value != 0 {
                    h.activer_written = true;
                }
                let access = MmioAccess {
                    ipa: config.gicd.base + offset,
                    far: 0xE000_0000 | offset as u32,
                    size,
                    write,
                    value: if write { u64::from(value) & size.mask() } else { 0 },
                    rt: rt % 16,
                    sign_extend: false,
                };
                // The router reads the accessing vCPU's list registers (it is
                // stopped in its trap) and passes them along, or not.
                let status = h.gich[usize::from(v)].as_ref().map(Gich::status).filter(|_| with_status);
                let _ = h.send(&mut server, &mut shadow, VgicRequest::Mmio { vcpu: VcpuId(v), access, status });
            }
            Op::Line { intid, level, target, with_status } => {
                let intid = 16 + intid % (lines as u16 - 16);
                if intid >= 32 + config.spis {
                    continue;
                }
                let target = (intid < 32).then_some(target % n);
                let hw = hw_linked(intid);
                if hw {
                    // The monitor reports a physical interrupt it acknowledged;
                    // it cannot fire again before it is deactivated.
                    let key = (target, intid);
                    if !level || h.phys_active.contains(&key) {
                        continue;
                    }
                    h.phys_active.insert(key);
                }
                // The router sends the status of a private line's vCPU when
                // that vCPU is the one it handles (running, in its trap).
                let status = target
                    .filter(|&v| with_status && h.running().contains(&v))
                    .and_then(|v| h.gich[usize::from(v)].as_ref().map(Gich::status));
                if latched(intid) {
                    // A latched source only ever raises it.
                    if level {
                        let request = VgicRequest::Pend {
                            intid: IntId(intid),
                            target: target.map(VcpuId),
                            status,
                            masked_timer: false,
                        };
                        let _ = h.send(&mut server, &mut shadow, request);
                    }
                    continue;
                }
                let request = VgicRequest::SetLine {
                    intid: IntId(intid),
                    level,
                    target: target.map(VcpuId),
                    hw: hw.then_some(IntId(intid)),
                    change: 0,
                    status,
                };
                let _ = h.send(&mut server, &mut shadow, request);
            }
            Op::Ack { vcpu } => {
                let Some(v) = pick(&h.running(), vcpu) else { continue };
                if let Some(g) = h.gich[usize::from(v)].as_mut() {
                    if g.acknowledge().is_some() {
                        h.unseen[usize::from(v)] = true;
                    }
                }
            }
            Op::Deactivate { vcpu, nth } => {
                let Some(v) = pick(&h.running(), vcpu) else { continue };
                let Some(g) = h.gich[usize::from(v)].as_mut() else { continue };
                if let Some(entry) = g.deactivate(usize::from(nth)) {
                    h.unseen[usize::from(v)] = true;
                    if lr::hw(entry) {
                        // The guest's deactivation reaches the physical interrupt.
                        let p = lr::physical_id(entry);
                        let key = ((p < 32).then_some(v), p);
                        h.phys_active.remove(&key);
                    }
                }
            }
            Op::Wfi { vcpu } => {
                let Some(v) = pick(&h.running(), vcpu) else { continue };
                let status = h.gich[usize::from(v)].as_ref().expect("running").status();
                let _ = h.send(&mut server, &mut shadow, VgicRequest::Idle { vcpu: VcpuId(v), status });
            }
            Op::Raw(ref request) => {
                h.faithful = false;
                let _ = h.send(&mut server, &mut shadow, *request);
            }
        }
        if h.faithful {
            h.settle(&mut server, &mut shadow);
            h.settled(&server);
        } else {
            h.kicks.clear();
        }
        // The copy restored from the last checkpoint went through the same
        // requests: it must have come to the same state.
        assert_eq!(shadow, server, "a restored copy ends in another state");
        shadow = check::round_trip(&server);
        // The scans' shortcut: the busy SPIs are exactly those not idle.
        let d = server.distributor();
        assert!(
            d.busy_spis().map(|(i, _)| i).eq(d.spis().filter(|(_, s)| !s.idle()).map(|(i, _)| i)),
            "the busy-SPI bitmap lost an SPI that is not idle"
        );
    }
}

/// Requests from a trace seed, at most.
const MAX_TRACE_REQUESTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Some((config, requests)) = trace_seed::decode::<VgicRequest>(data) {
        let ops: Vec<Op> = requests.into_iter().take(MAX_TRACE_REQUESTS).map(Op::Raw).collect();
        run(&config, None, &ops);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input.config.build_or_default(), Some(&input.setup), &input.ops[..input.ops.len().min(200)]);
    }
});
