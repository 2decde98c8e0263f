//! Host benchmark: one [`VgicServer::handle`] step per request kind, on a
//! server brought to a running guest's state first: both vCPUs of
//! `VmConfig::example(2)` started with four list registers, the distributor
//! enabled, every SGI, PPI and SPI enabled (SPIs targeted at vCPU 0), and
//! each vCPU's list registers refreshed once. A small model of each vCPU's
//! physical CPU interface applies the list-register writes of the replies
//! and reports its status, as the monitor would read it.
//!
//! Every iteration handles the request on a fresh clone of the state (the
//! clone is not timed), so each measures the same step; each step's reply
//! is checked once first, so that it measures the path it is named after.
//!
//! `cargo bench -p vgic-server --bench handle`; the figures are in
//! tests/perf/host.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipc::msg::LrStatus;
use ipc::{AccessSize, Action, IntId, MmioAccess, Reply, Server, VcpuId, VgicRequest, VmConfig};
use vgic_server::lr::{misr_bits, ListRegister, LrLink, LrState, MAX_LRS};
use vgic_server::regs::{ctlr, offset, sgir};
use vgic_server::VgicServer;

/// List registers per CPU interface (QEMU's GICv2 has four).
const LRS: u8 = 4;
/// The guest's virtual timer PPI, and the host's that backs it.
const VTIMER: u16 = 27;
/// An SPI (the PL011's on QEMU virt).
const UART_SPI: u16 = 33;

/// The model of one physical CPU interface's list registers.
#[derive(Clone, Copy, Debug, Default)]
struct CpuIf {
    lrs: [u32; MAX_LRS],
}

impl CpuIf {
    fn lr(&self, i: usize) -> ListRegister {
        ListRegister::decode(self.lrs[i])
    }

    /// GICH_MISR, EISR, ELRSR and the list registers, as the hardware
    /// reports them (IHI 0048B, chapter 5).
    fn status(&self) -> LrStatus {
        let (mut eisr, mut elrsr) = (0, 0);
        for i in 0..MAX_LRS {
            let lr = self.lr(i);
            if lr.state == LrState::Invalid {
                if matches!(lr.link, LrLink::Software { eoi: true, .. }) {
                    eisr |= 1 << i;
                } else {
                    elrsr |= 1 << i;
                }
            }
        }
        let misr = if eisr != 0 { misr_bits::EOI } else { 0 };
        LrStatus { misr, eisr, elrsr, lrs: self.lrs }
    }

    fn apply(&mut self, reply: &Reply) {
        for action in &reply.actions {
            if let Action::WriteListRegister { index, value } = action {
                if let Some(lr) = self.lrs.get_mut(usize::from(index)) {
                    *lr = value;
                }
            }
        }
    }

    /// The guest acknowledges and then deactivates every pending entry.
    fn guest_handles_all(&mut self) {
        for i in 0..MAX_LRS {
            let lr = self.lr(i);
            if lr.state != LrState::Invalid {
                self.lrs[i] = ListRegister { state: LrState::Invalid, ..lr }.encode();
            }
        }
    }
}

/// The guest-visible machine: the server and each vCPU's CPU interface.
#[derive(Clone)]
struct Machine {
    server: VgicServer,
    cpus: [CpuIf; 2],
    gicd: u64,
}

impl Machine {
    fn handle(&mut self, request: VgicRequest) -> Reply {
        match self.server.handle(request) {
            Ok(reply) => reply,
            Err(e) => panic!("setup: {request:?} refused: {e}"),
        }
    }

    fn mmio(&self, vcpu: u8, off: u32, write: bool, value: u32) -> VgicRequest {
        let ipa = self.gicd + u64::from(off);
        let access = MmioAccess {
            ipa,
            far: 0xf800_0000 | ipa as u32,
            size: AccessSize::Word,
            write,
            value: u64::from(value),
            rt: 2,
            sign_extend: false,
        };
        let status = self.cpus.get(usize::from(vcpu)).map(CpuIf::status);
        VgicRequest::Mmio { vcpu: VcpuId(vcpu), access, status }
    }

    fn write(&mut self, vcpu: u8, off: u32, value: u32) {
        let request = self.mmio(vcpu, off, true, value);
        self.handle(request);
    }

    fn sync(&mut self, vcpu: u8) {
        let i = usize::from(vcpu);
        let reply = self.handle(VgicRequest::Sync { vcpu: VcpuId(vcpu), status: self.cpus[i].status() });
        self.cpus[i].apply(&reply);
    }

    /// Both vCPUs started, everything enabled, list registers refreshed.
    fn running(config: &VmConfig) -> Machine {
        let mut m = Machine { server: VgicServer::new(config), cpus: [CpuIf::default(); 2], gicd: config.gicd.base };
        for v in 0..2 {
            m.handle(VgicRequest::Start { vcpu: VcpuId(v), list_registers: LRS });
            m.write(v, offset::ISENABLER, 0xffff_ffff);
        }
        m.write(0, offset::CTLR, ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1);
        for n in 1..=u32::from(config.spis / 32) {
            m.write(0, offset::ISENABLER + 4 * n, 0xffff_ffff);
        }
        for intid in (32..32 + u32::from(config.spis)).step_by(4) {
            m.write(0, offset::ITARGETSR + intid, 0x0101_0101);
        }
        for v in 0..2 {
            m.sync(v);
        }
        m
    }

    /// The GICD_SGIR value that sends SGI `intid` to the vCPUs in `targets`.
    fn sgir(intid: u32, targets: u8) -> u32 {
        u32::from(targets) << sgir::TARGET_LIST_SHIFT | intid
    }
}

/// Bench `request` on clones of `server`, after checking that its reply
/// passes `check`.
fn step(c: &mut Criterion, name: &str, m: &Machine, request: VgicRequest, check: impl Fn(&[Action]) -> bool) {
    let reply = m.clone().handle(request);
    assert!(check(&reply.actions.to_vec()), "{name}: unexpected reply {:?}", reply.actions);
    let server = &m.server;
    c.bench_function(&format!("vgic/{name}"), |b| {
        // By reference: moving the server into the routine would time a
        // copy of its whole state.
        b.iter_batched_ref(
            || (server.clone(), Some(request)),
            |(s, r)| r.take().map(|r| s.handle(r)),
            BatchSize::SmallInput,
        )
    });
}

fn kicks(actions: &[Action], vcpu: u8) -> bool {
    actions.contains(&Action::Kick { vcpu: VcpuId(vcpu) })
}

fn writes_lr(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::WriteListRegister { .. }))
}

fn handle(c: &mut Criterion) {
    // The bench's own report (user-facing output of this program).
    println!("vgic: the server's state is {} bytes", std::mem::size_of::<VgicServer>());
    let config = VmConfig { log_level: 0, ..VmConfig::example(2) };
    let running = Machine::running(&config);

    step(c, "start", &running, VgicRequest::Start { vcpu: VcpuId(1), list_registers: LRS }, |a| kicks(a, 1));
    step(c, "mmio/isenabler-read", &running, running.mmio(0, offset::ISENABLER + 4, false, 0), |a| {
        matches!(a, [Action::SetReg { value: 0xffff_ffff, .. }, Action::AdvancePc])
    });
    step(c, "mmio/typer-read", &running, running.mmio(1, offset::TYPER, false, 0), |a| {
        matches!(a, [Action::SetReg { .. }, Action::AdvancePc])
    });
    step(c, "mmio/ipriorityr-write", &running, running.mmio(0, offset::IPRIORITYR + 32, true, 0xa0a0_a0a0), |a| {
        matches!(a, [Action::AdvancePc, ..])
    });
    step(c, "mmio/sgir-write (IPI)", &running, running.mmio(0, offset::SGIR, true, Machine::sgir(1, 0b10)), |a| {
        matches!(a, [Action::AdvancePc, ..]) && kicks(a, 1)
    });
    step(
        c,
        "set-line/spi",
        &running,
        VgicRequest::SetLine { intid: IntId(UART_SPI), level: true, target: None, hw: None, change: 0, status: None },
        |a| kicks(a, 0),
    );
    let vtimer_line = VgicRequest::SetLine {
        intid: IntId(VTIMER),
        level: true,
        target: Some(VcpuId(1)),
        hw: Some(IntId(VTIMER)),
        change: 0,
        status: None,
    };
    step(c, "set-line/ppi-hw (timer tick)", &running, vtimer_line, |a| kicks(a, 1));

    // An IPI to vCPU 1, which re-enters after its kick.
    let mut ipi = running.clone();
    let sgi = ipi.mmio(0, offset::SGIR, true, Machine::sgir(1, 0b10));
    ipi.handle(sgi);
    step(c, "sync/deliver-sgi", &ipi, VgicRequest::Sync { vcpu: VcpuId(1), status: ipi.cpus[1].status() }, writes_lr);
    step(c, "idle/pending (no wait)", &ipi, VgicRequest::Idle { vcpu: VcpuId(1), status: ipi.cpus[1].status() }, |a| {
        writes_lr(a) && !a.contains(&Action::WaitForInterrupt)
    });
    step(
        c,
        "idle/nothing-pending",
        &running,
        VgicRequest::Idle { vcpu: VcpuId(1), status: running.cpus[1].status() },
        |a| a.contains(&Action::WaitForInterrupt),
    );

    // A timer tick on vCPU 1 delivered, handled by the guest: the EOI
    // maintenance interrupt has the physical interrupt deactivated.
    let mut tick = running.clone();
    tick.handle(vtimer_line);
    tick.sync(1);
    assert!(tick.cpus[1].lrs.iter().any(|&lr| lr & 0x3ff == u32::from(VTIMER)), "the tick is in a list register");
    tick.cpus[1].guest_handles_all();
    step(
        c,
        "maintenance/eoi (timer tick done)",
        &tick,
        VgicRequest::Maintenance { vcpu: VcpuId(1), status: tick.cpus[1].status() },
        |a| a.contains(&Action::DeactivatePhysical { intid: IntId(VTIMER) }),
    );
}

criterion_group!(benches, handle);
criterion_main!(benches);
