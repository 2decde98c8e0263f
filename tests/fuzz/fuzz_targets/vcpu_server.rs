//! The vCPU server on arbitrary sequences of well-typed requests.
//!
//! The harness plays the monitor: it starts vCPU 0, starts a vCPU only after
//! a `PowerOn` named it, sends traps only from vCPUs that run, and forwards
//! console input within the room the server reported. It also sends
//! anything at all (`Raw`), as a confused monitor or a corrupted message
//! could, and then only checks what must hold for any input.
//!
//! Invariants after every step:
//! - the state survives a postcard round trip, and the restored copy
//!   answers the next request exactly like the original;
//! - replies are well formed (`check::reply_shape`), never `ReplyFull`, and
//!   a refused request changes nothing;
//! - PSCI follows the specification's state machine (Arm DEN 0022D, 5.1 and
//!   the CPU_ON/CPU_OFF/AFFINITY_INFO descriptions; 6.5 "CPU power state
//!   coordination"), tracked in the harness from the Start/CPU_ON/CPU_OFF
//!   history: each call's return code is the one the specification gives
//!   for that history, and the server's power states equal the model's;
//! - every trap gets its architected answer (abort, undef, step past);
//! - the console: output is exactly what the guest wrote to UARTDR, the
//!   reported room never exceeds the FIFO, the interrupt line is sent only
//!   when it changes, and input forwarded within the reported room reaches
//!   the guest in order and without an overrun (until the guest turns on
//!   loopback, which disconnects the input by design);
//! - the console's read image: the harness applies every reply's image
//!   actions as the monitor does (newest generation of each word and of the
//!   mapping), and whenever its image is mapped, a load through the trap
//!   path returns what the image shows (checked for every UART load the
//!   fuzzer makes, and for every register word after each step), so a guest
//!   reading the image instead of trapping sees the same UART; image
//!   actions come only when the VM allows the image, at words of the page,
//!   with generations that count up.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use ipc::msg::{LrStatus, MAX_INPUT_BYTES};
use ipc::{
    AccessSize, Action, Cp15Access, GuestReg, Message, MmioAccess, Reply, Server, ServerError, ServerId,
    ShutdownReason, Trap, TrapMsg, VcpuId, VcpuRequest, VgicRequest, VmConfig, MAX_VCPUS,
};
use libfuzzer_sys::fuzz_target;
use splitvisor_fuzz::check::{self, Answering};
use splitvisor_fuzz::config::FuzzConfig;
use splitvisor_fuzz::trace_seed;
use vcpu_server::psci::PowerState;
use vcpu_server::VcpuServer;

/// PSCI 1.0 / SMCCC 1.1 function IDs (DEN 0022D table 5.1, DEN 0028): the
/// server's own names, and every one of them for the fuzzer to pick from.
mod fid {
    pub use vcpu_server::psci::fid::*;
    pub const ALL: [u32; 13] = [
        SMCCC_VERSION,
        SMCCC_ARCH_FEATURES,
        PSCI_VERSION,
        CPU_SUSPEND,
        CPU_OFF,
        CPU_ON,
        AFFINITY_INFO,
        MIGRATE,
        MIGRATE_INFO_TYPE,
        MIGRATE_INFO_UP_CPU,
        SYSTEM_OFF,
        SYSTEM_RESET,
        PSCI_FEATURES,
    ];
}

/// PSCI return codes (DEN 0022D table 5.2).
mod ret {
    pub const SUCCESS: i32 = 0;
    pub const NOT_SUPPORTED: i32 = -1;
    pub const INVALID_PARAMETERS: i32 = -2;
    pub const ALREADY_ON: i32 = -4;
    pub const ON_PENDING: i32 = -5;
    pub const INTERNAL_FAILURE: i32 = -6;
    pub const INVALID_ADDRESS: i32 = -9;
}

/// PL011 registers and bits the checks need (DDI 0183, 3.2 and 3.3).
const UARTDR: u64 = 0x000;
const UARTRSR: u64 = 0x004;
const UARTCR: u64 = 0x030;
const CR_LBE: u64 = 1 << 7;
const DR_OE: u32 = 1 << 11;
const RSR_OE: u32 = 1 << 3;
const RX_FIFO: u8 = 16;

#[derive(Clone, Debug, Arbitrary)]
enum Op {
    /// The monitor starts a vCPU a PowerOn named.
    Start { pick: u8 },
    /// A PSCI/SMCCC call from a running vCPU.
    Psci { caller: u8, smc: bool, imm: u16, function: u8, target: u8, high_bits: u32, entry: u32, args: [u32; 3] },
    /// An access to the PL011 from a running vCPU.
    Uart { caller: u8, offset: u16, size: u8, write: bool, value: u32, rt: u8, sign_extend: bool },
    /// Any access anywhere.
    Mmio { caller: u8, access: MmioAccess },
    /// ACTLR or a set/way operation.
    Cp15 { caller: u8, which: u8, write: bool, value: u32, rt: u8 },
    /// Any other trap from a running vCPU.
    Trap { caller: u8, trap: Trap },
    /// Console input: within the room, or beyond it.
    Console { bytes: Vec<u8>, beyond_room: bool },
    /// Anything at all.
    Raw(VcpuRequest),
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    /// The guest's console driver at boot: FIFOs on (UARTLCR_H.FEN and an
    /// 8-bit word, as Linux's amba-pl011 sets them), and an interrupt mask.
    fifo: bool,
    imsc: Option<u8>,
    ops: Vec<Op>,
}

struct Harness {
    config: VmConfig,
    power: [PowerState; MAX_VCPUS],
    /// The receive room last reported, less what was forwarded since.
    console_budget: u8,
    /// The number of the last room report seen (each is one more).
    room_report: u32,
    /// Bytes forwarded that the guest has not read yet, in order; `None`
    /// once the receive path can legitimately lose or add bytes (overrun
    /// forced by the harness, loopback).
    rx: Option<VecDeque<u8>>,
    uart_line: bool,
    /// The number of the UART line's last change (each is newer, never 0).
    uart_change: u32,
    actlr: [u32; MAX_VCPUS],
    image: Image,
}

/// The monitor's console read image, as the harness applies replies to it.
#[derive(Default)]
struct Image {
    /// Word offset to (value, generation); a word not here reads 0.
    words: BTreeMap<u16, (u32, u32)>,
    /// Mapped, and the generation of that.
    mapped: (bool, u32),
    /// The newest generation seen.
    newest: u32,
}

impl Image {
    /// Apply a reply's image actions, checking them.
    fn apply(&mut self, reply: &Reply, allowed: bool) {
        for action in &reply.actions.to_vec() {
            let generation = match *action {
                Action::ConsoleImageWord { offset, value, generation } => {
                    assert!(offset % 4 == 0 && offset < 0x1000, "image word at {offset:#x}");
                    let kept = self.words.entry(offset).or_insert((0, 0));
                    if ipc::msg::is_newer(generation, kept.1) {
                        *kept = (value, generation);
                    }
                    generation
                }
                Action::ConsoleImageMap { mapped, generation } => {
                    if ipc::msg::is_newer(generation, self.mapped.1) {
                        self.mapped = (mapped, generation);
                    }
                    generation
                }
                _ => continue,
            };
            assert!(allowed, "image action in a VM without the image: {action:?}");
            assert!(
                generation != 0 && !ipc::msg::is_newer(self.newest, generation),
                "image generation {generation} before {}",
                self.newest
            );
            self.newest = generation;
        }
    }

    /// What a load of `size` at `offset` of the page returns, while mapped.
    fn load(&self, offset: u64, size: AccessSize) -> Option<u64> {
        if !self.mapped.0 {
            return None;
        }
        let word = self.words.get(&((offset & !3) as u16)).map_or(0, |w| w.0);
        Some((u64::from(word) >> ((offset % 4) * 8)) & size.mask())
    }
}

fn r0(value: i32) -> Action {
    Action::SetReg { reg: GuestReg::Gpr(0), value: value as u32 }
}

impl Harness {
    fn vcpus(&self) -> u8 {
        self.config.vcpus
    }

    fn running(&self) -> Vec<u8> {
        (0..self.vcpus()).filter(|&v| self.power[usize::from(v)] == PowerState::On).collect()
    }

    fn pending(&self) -> Vec<u8> {
        (0..self.vcpus()).filter(|&v| self.power[usize::from(v)] == PowerState::OnPending).collect()
    }

    fn resync(&mut self, server: &VcpuServer) {
        for v in 0..self.vcpus() {
            self.power[usize::from(v)] = server.psci().power(VcpuId(v)).expect("the VM has this vCPU");
            self.actlr[usize::from(v)] = server.cp15().actlr(VcpuId(v)).expect("the VM has this vCPU");
        }
    }

    fn entry_valid(&self, entry: u32) -> bool {
        let (addr, len) = if entry & 1 != 0 { (entry & !1, 2) } else { (entry, 4) };
        (entry & 1 != 0 || entry & 3 == 0) && self.config.ram.contains_ipa(u64::from(addr), len)
    }

    /// DEN 0022D: what a call from running vCPU `caller` must return, and the
    /// power-state change it makes.
    fn psci(&mut self, caller: VcpuId, imm: u16, args: [u32; 4]) -> Vec<Action> {
        let [function, a1, a2, a3] = args;
        let answer = |code: i32| vec![r0(code), Action::AdvancePc];
        if imm != 0 {
            return answer(ret::NOT_SUPPORTED);
        }
        let target = |mpidr: u32| (mpidr < u32::from(self.vcpus())).then_some(mpidr as usize);
        match function {
            fid::SMCCC_VERSION => answer(0x0001_0001),
            fid::SMCCC_ARCH_FEATURES => answer(if [fid::SMCCC_VERSION, fid::SMCCC_ARCH_FEATURES].contains(&a1) {
                0
            } else {
                ret::NOT_SUPPORTED
            }),
            fid::PSCI_VERSION => answer(0x0001_0000),
            fid::PSCI_FEATURES => {
                let implemented = [
                    fid::PSCI_VERSION,
                    fid::CPU_SUSPEND,
                    fid::CPU_OFF,
                    fid::CPU_ON,
                    fid::AFFINITY_INFO,
                    fid::MIGRATE_INFO_TYPE,
                    fid::SYSTEM_OFF,
                    fid::SYSTEM_RESET,
                    fid::PSCI_FEATURES,
                    fid::SMCCC_VERSION,
                ];
                answer(if implemented.contains(&a1) { 0 } else { ret::NOT_SUPPORTED })
            }
            fid::CPU_SUSPEND if a1 & 0xFCFE_0000 != 0 => answer(ret::INVALID_PARAMETERS),
            fid::CPU_SUSPEND => {
                let mut a = answer(ret::SUCCESS);
                a.push(Action::Send(Message::Vgic(VgicRequest::Idle { vcpu: caller, status: LrStatus::default() })));
                a
            }
            fid::CPU_OFF => {
                self.power[caller.index()] = PowerState::Off;
                vec![Action::PowerOff]
            }
            fid::CPU_ON => match target(a1) {
                None => answer(ret::INVALID_PARAMETERS),
                Some(t) if t == caller.index() => answer(ret::ALREADY_ON),
                Some(t) => match self.power[t] {
                    PowerState::On => answer(ret::ALREADY_ON),
                    PowerState::OnPending => answer(ret::ON_PENDING),
                    PowerState::Off if !self.entry_valid(a2) => answer(ret::INVALID_ADDRESS),
                    PowerState::Off => {
                        self.power[t] = PowerState::OnPending;
                        let mut a = answer(ret::SUCCESS);
                        a.push(Action::PowerOn { vcpu: VcpuId(t as u8), entry: a2, context_id: a3 });
                        a
                    }
                },
            },
            fid::AFFINITY_INFO => match (target(a1), a2) {
                (Some(t), 0) => answer(match self.power[t] {
                    PowerState::On => 0,
                    PowerState::Off => 1,
                    PowerState::OnPending => 2,
                }),
                _ => answer(ret::INVALID_PARAMETERS),
            },
            fid::MIGRATE_INFO_TYPE => answer(2),
            fid::SYSTEM_OFF | fid::SYSTEM_RESET => {
                let mut a = answer(ret::INTERNAL_FAILURE);
                let reason = if function == fid::SYSTEM_OFF { ShutdownReason::PowerOff } else { ShutdownReason::Reset };
                a.push(Action::Shutdown(reason));
                a
            }
            _ => answer(ret::NOT_SUPPORTED),
        }
    }

    /// The UART's line changes are numbered upwards, never 0 (any CPU may
    /// send one; the vGIC server keeps the newest).
    fn line_changed(&mut self, change: u32) {
        assert!(
            change != 0 && ipc::msg::is_newer(change, self.uart_change),
            "line change {change} not after {}",
            self.uart_change
        );
        self.uart_change = change;
    }

    /// Room reports are numbered upwards (the monitor keeps the newest by
    /// its number; a refused request may have used a number).
    fn room_reported(&mut self, report: u32) {
        assert!(ipc::msg::is_newer(report, self.room_report), "room report {report} not after {}", self.room_report);
        self.room_report = report;
    }

    /// Console effects in a reply: output, line changes, room reports.
    fn console_effects(&mut self, reply: &Reply, written: Option<u8>) {
        let mut output = Vec::new();
        for action in &reply.actions.to_vec() {
            match action {
                Action::ConsoleWrite { bytes } => output.extend_from_slice(bytes),
                Action::ConsoleReady { room, report } => {
                    assert!(*room <= RX_FIFO, "room {room} beyond the receive FIFO");
                    self.room_reported(*report);
                    self.console_budget = *room;
                }
                Action::Send(Message::Vgic(VgicRequest::SetLine { intid, level, target, hw, change, status })) => {
                    assert_eq!(intid.0, self.config.uart_intid, "a line other than the UART's");
                    assert_eq!(*status, None, "a status only the monitor can read");
                    assert_eq!((*target, *hw), (None, None), "the UART's SPI is neither private nor hardware");
                    assert_ne!(*level, self.uart_line, "SetLine without a change of level");
                    self.line_changed(*change);
                    self.uart_line = *level;
                }
                _ => {}
            }
        }
        match written {
            Some(byte) if self.rx.is_some() => assert_eq!(output, [byte], "UARTDR write did not reach the console"),
            Some(_) => assert!(output.len() <= 1),
            None => assert!(output.is_empty(), "console output without a UARTDR write: {reply:?}"),
        }
    }
}

fn trap(vcpu: VcpuId, trap: Trap) -> VcpuRequest {
    VcpuRequest::Trap(TrapMsg { vcpu, trap, pc: 0x4000_1000, cpsr: 0x1d3 })
}

/// What a running guest's trap must get, for the traps whose answer does
/// not depend on the server's state. `None`: see the other checks.
fn fixed_answer(vcpu: VcpuId, t: &Trap) -> Option<Result<Vec<Action>, ServerError>> {
    Some(Ok(match *t {
        Trap::DataAbortNoSyndrome { far, .. } => vec![Action::InjectDataAbort { far }],
        Trap::PrefetchAbort { far, .. } => vec![Action::InjectPrefetchAbort { far }],
        Trap::Unknown { .. } | Trap::Cp15Wide(_) => vec![Action::InjectUndef],
        Trap::Wfe => vec![Action::AdvancePc],
        Trap::Wfi => vec![
            Action::AdvancePc,
            Action::Send(Message::Vgic(VgicRequest::Idle { vcpu, status: LrStatus::default() })),
        ],
        Trap::Irq { .. } | Trap::HypTimer => return Some(Err(ServerError::Unexpected)),
        _ => return None,
    }))
}

fn pick(list: &[u8], n: u8) -> Option<VcpuId> {
    (!list.is_empty()).then(|| VcpuId(list[usize::from(n) % list.len()]))
}

/// What the harness expects of one reply.
enum Expect {
    /// Exactly this.
    Exact(Result<Vec<Action>, ServerError>),
    /// A PL011 access from a running vCPU, checked in detail.
    Uart(MmioAccess),
    /// Only what holds for any input.
    Any,
}

const SIZES: [AccessSize; 4] = [AccessSize::Byte, AccessSize::Half, AccessSize::Word, AccessSize::Double];

impl Harness {
    fn in_uart(&self, a: &MmioAccess) -> bool {
        self.config.uart.contains(a.ipa)
    }

    /// The expectation for a trap from running vCPU `caller`.
    fn trap(&mut self, caller: VcpuId, t: &Trap) -> Expect {
        match *t {
            Trap::Hvc { imm, args } => Expect::Exact(Ok(self.psci(caller, imm, args))),
            Trap::Smc { args } => Expect::Exact(Ok(self.psci(caller, 0, args))),
            Trap::Mmio(a) if self.in_uart(&a) => Expect::Uart(a),
            Trap::Mmio(a) => Expect::Exact(Ok(vec![Action::InjectDataAbort { far: a.far }])),
            Trap::Cp15(a) => Expect::Exact(Ok(self.cp15(caller, &a))),
            _ => Expect::Exact(fixed_answer(caller, t).expect("every other trap has a fixed answer")),
        }
    }

    /// Trapped CP15 (DDI 0406C B4.1.4 ACTLR, B4.2.1 set/way operations): the
    /// server emulates ACTLR (only SMP writable) and turns set/way
    /// operations into a whole-cache clean and invalidate.
    fn cp15(&mut self, caller: VcpuId, a: &Cp15Access) -> Vec<Action> {
        const SMP: u32 = 1 << 6;
        if a.rt > check::MAX_GPR {
            return vec![Action::InjectUndef];
        }
        let actlr = &mut self.actlr[caller.index()];
        match ((a.opc1, a.crn, a.crm, a.opc2), a.write) {
            ((0, 1, 0, 1), false) => {
                vec![Action::SetReg { reg: GuestReg::Gpr(a.rt), value: *actlr }, Action::AdvancePc]
            }
            ((0, 1, 0, 1), true) => {
                *actlr = (*actlr & !SMP) | (a.value & SMP);
                vec![Action::AdvancePc]
            }
            ((0, 7, 6 | 10 | 14, 2), true) => vec![Action::CleanInvalidateDcache, Action::AdvancePc],
            _ => vec![Action::InjectUndef],
        }
    }

    /// The PL011 access checks (DDI 0183 and the bus contract of
    /// `vcpu_server::mmio`: any width but 64 bits, aligned, inside the
    /// block; loads into R0-R14).
    fn uart(&mut self, a: &MmioAccess, reply: &Reply, imaged: Option<u64>) {
        let bytes = u64::from(a.size.bytes());
        let end = self.config.uart.base + self.config.uart.size;
        let refused = a.size == AccessSize::Double
            || (!a.write && a.rt > check::MAX_GPR)
            || !a.ipa.is_multiple_of(bytes)
            || a.ipa + bytes > end;
        if refused {
            assert_eq!(reply.actions.to_vec().as_slice(), [Action::InjectDataAbort { far: a.far }], "{a:?}");
            return;
        }
        let actions = reply.actions.to_vec();
        let (last, effects) = actions.split_last().expect("an access gets an answer");
        assert_eq!(*last, Action::AdvancePc, "{a:?}: {reply:?}");
        let offset = a.ipa - self.config.uart.base;
        let shift = (offset % 4) * 8;
        let register = offset - offset % 4;
        let mut written = None;
        let effects = if a.write {
            if register == UARTDR && shift == 0 {
                written = Some(a.value as u8);
            }
            if register == UARTCR && ((a.value & a.size.mask()) << shift) & CR_LBE != 0 {
                // Loopback: the console input is disconnected and
                // transmitted characters are received instead.
                self.rx = None;
            }
            effects
        } else {
            let (set, effects) = effects.split_last().expect("a load sets its register");
            let Action::SetReg { reg: GuestReg::Gpr(rt), value } = *set else { panic!("{a:?}: {reply:?}") };
            assert_eq!(rt, a.rt);
            assert!(check::load_value_fits(value, a.size, a.sign_extend), "{a:?} loaded {value:#x}");
            if let Some(imaged) = imaged {
                assert_eq!(
                    u64::from(value) & a.size.mask(),
                    imaged,
                    "{a:?}: the mapped read image shows another value"
                );
            }
            let word = (u64::from(value) & a.size.mask()) << shift;
            let lanes = a.size.mask() << shift;
            if let Some(rx) = &mut self.rx {
                if register == UARTDR {
                    // Any read of UARTDR takes the oldest character.
                    let expected = rx.pop_front();
                    if lanes & 0xff != 0 {
                        assert_eq!(word & 0xff, u64::from(expected.unwrap_or(0)), "received out of order");
                    }
                    assert_eq!(word & u64::from(DR_OE), 0, "overrun flagged though input kept within the room");
                }
                if register == UARTRSR {
                    assert_eq!(word & u64::from(RSR_OE), 0, "overrun flagged though input kept within the room");
                }
            }
            effects
        };
        for e in effects {
            assert!(
                matches!(
                    e,
                    Action::ConsoleWrite { .. }
                        | Action::ConsoleReady { .. }
                        | Action::Send(_)
                        | Action::ConsoleImageWord { .. }
                        | Action::ConsoleImageMap { .. }
                ),
                "{a:?}: unexpected {e:?}"
            );
        }
        self.console_effects(reply, written);
    }
}

fn uart_access(
    config: &VmConfig,
    offset: u16,
    size: u8,
    write: bool,
    value: u32,
    rt: u8,
    sign_extend: bool,
) -> MmioAccess {
    // Mostly a PL011 register (DDI 0183 Table 3-1) and a byte lane of it,
    // sometimes anywhere in (or just past) the block.
    const REGS: [u16; 15] =
        [0x000, 0x004, 0x018, 0x020, 0x024, 0x028, 0x02C, 0x030, 0x034, 0x038, 0x03C, 0x040, 0x044, 0x048, 0xFE0];
    let size = SIZES[usize::from(size % 4)];
    let offset = match REGS.get(usize::from(offset >> 12) % 16) {
        Some(reg) => reg + (offset & 3) + if *reg == 0xFE0 { offset & 0x1c } else { 0 },
        None => offset % 0x1008,
    };
    let ipa = config.uart.base + u64::from(offset);
    MmioAccess {
        ipa,
        far: 0xF000_0000 | (ipa as u32 & 0xFFFF),
        size,
        write,
        value: if write { u64::from(value) & size.mask() } else { 0 },
        rt: rt % 16,
        sign_extend: !write && sign_extend,
    }
}

fn psci_args(h: &Harness, function: u8, target: u8, high_bits: u32, entry: u32, args: [u32; 3]) -> [u32; 4] {
    let n = u32::from(h.vcpus());
    let function = match function % 16 {
        i @ 0..13 => fid::ALL[usize::from(i)],
        13 => fid::ALL[usize::from(target) % 13] | 1 << 30, // the SMC64 twin
        14 => fid::CPU_ON | high_bits << 16,
        _ => high_bits,
    };
    let a1 = match function {
        fid::CPU_ON | fid::AFFINITY_INFO if high_bits.is_multiple_of(4) => {
            (u32::from(target) % (n + 1)) | (high_bits & !0xff)
        }
        fid::CPU_ON | fid::AFFINITY_INFO => u32::from(target) % (n + 1),
        fid::PSCI_FEATURES | fid::SMCCC_ARCH_FEATURES if high_bits.is_multiple_of(2) => {
            fid::ALL[usize::from(target) % 13]
        }
        _ => args[0],
    };
    let ram = h.config.ram;
    let a2 = match function {
        fid::CPU_ON if entry >> 31 == 0 => (ram.ipa + u64::from(entry) % ram.size) as u32,
        fid::AFFINITY_INFO if args[1].is_multiple_of(2) => 0,
        _ => entry,
    };
    [function, a1, a2, args[2]]
}

/// Run `boot` and then `ops` against a server built from `config`.
fn run(config: &VmConfig, boot: &[Op], ops: &[Op]) {
    splitvisor_fuzz::logsink::init();
    let config = config.clone();
    let vcpus = config.vcpus;
    let mut server = VcpuServer::new(&config);
    let mut shadow = server.clone();
    let mut h = Harness {
        config: config.clone(),
        power: [PowerState::Off; MAX_VCPUS],
        console_budget: 0,
        room_report: 0,
        rx: Some(VecDeque::new()),
        uart_line: false,
        uart_change: 0,
        actlr: [0; MAX_VCPUS],
        image: Image::default(),
    };
    h.power[0] = PowerState::OnPending;
    let actlr_reset = if vcpus > 1 { 1 << 6 } else { 0 };
    assert_eq!(
        h.power[..usize::from(vcpus)],
        (0..vcpus).map(|v| server.psci().power(VcpuId(v)).unwrap()).collect::<Vec<_>>()[..]
    );

    for op in boot.iter().chain(ops) {
        let mut faithful = true;
        let mut answering = Answering::Trap;
        let (request, expect) = match op {
            Op::Start { pick: n } => {
                let Some(v) = pick(&h.pending(), *n) else { continue };
                h.power[v.index()] = PowerState::On;
                h.actlr[v.index()] = actlr_reset;
                answering = Answering::NotATrap;
                (VcpuRequest::Start { vcpu: v }, Expect::Any)
            }
            Op::Psci { caller, smc, imm, function, target, high_bits, entry, args } => {
                let Some(c) = pick(&h.running(), *caller) else { continue };
                let args = psci_args(&h, *function, *target, *high_bits, *entry, *args);
                let t = if *smc {
                    Trap::Smc { args }
                } else {
                    Trap::Hvc { imm: if imm % 8 == 0 { *imm } else { 0 }, args }
                };
                let e = h.trap(c, &t);
                (trap(c, t), e)
            }
            Op::Uart { caller, offset, size, write, value, rt, sign_extend } => {
                let Some(c) = pick(&h.running(), *caller) else { continue };
                let a = uart_access(&config, *offset, *size, *write, *value, *rt, *sign_extend);
                (trap(c, Trap::Mmio(a)), Expect::Uart(a))
            }
            Op::Mmio { caller, access } => {
                let Some(c) = pick(&h.running(), *caller) else { continue };
                let mut a = *access;
                a.rt %= 16;
                a.value &= a.size.mask();
                if !a.write {
                    a.value = 0;
                }
                let e = h.trap(c, &Trap::Mmio(a));
                (trap(c, Trap::Mmio(a)), e)
            }
            Op::Cp15 { caller, which, write, value, rt } => {
                let Some(c) = pick(&h.running(), *caller) else { continue };
                let (opc1, crn, crm, opc2) =
                    [(0, 1, 0, 1), (0, 7, 6, 2), (0, 7, 10, 2), (0, 7, 14, 2)][usize::from(which % 4)];
                let a = Cp15Access {
                    opc1,
                    crn,
                    crm,
                    opc2,
                    write: *write,
                    rt: rt % 16,
                    value: if *write { *value } else { 0 },
                };
                let e = h.trap(c, &Trap::Cp15(a));
                (trap(c, Trap::Cp15(a)), e)
            }
            Op::Trap { caller, trap: t } => {
                let Some(c) = pick(&h.running(), *caller) else { continue };
                let mut t = *t;
                // The monitor's decoder never produces these out of range.
                match &mut t {
                    Trap::Mmio(a) => {
                        a.rt %= 16;
                        a.value &= a.size.mask();
                        if !a.write {
                            a.value = 0;
                        }
                    }
                    Trap::Cp15(a) => a.rt %= 16,
                    _ => {}
                }
                let e = h.trap(c, &t);
                (trap(c, t), e)
            }
            Op::Console { bytes, beyond_room } => {
                answering = Answering::NotATrap;
                let take = if *beyond_room { bytes.len() } else { bytes.len().min(usize::from(h.console_budget)) };
                let take = take.min(MAX_INPUT_BYTES);
                let mut v = ipc::msg::InputBytes::new();
                v.extend_from_slice(&bytes[..take]).expect("within capacity");
                if take > usize::from(h.console_budget) {
                    h.rx = None;
                }
                h.console_budget = h.console_budget.saturating_sub(take as u8);
                if let Some(rx) = &mut h.rx {
                    rx.extend(&bytes[..take]);
                }
                (VcpuRequest::ConsoleInput { bytes: v }, Expect::Any)
            }
            Op::Raw(r) => {
                faithful = false;
                // The receive path may now see anything.
                h.rx = None;
                if !matches!(r, VcpuRequest::Trap(_)) {
                    answering = Answering::NotATrap;
                }
                (*r, Expect::Any)
            }
        };

        // What the monitor's read image shows for a UART load, if mapped.
        let imaged = match &expect {
            Expect::Uart(a) if !a.write => h.image.load(a.ipa - config.uart.base, a.size),
            _ => None,
        };
        let before = server.clone();
        let got = server.handle(request);
        assert_eq!(shadow.handle(request), got, "a restored copy answers differently");
        assert_eq!(shadow, server, "a restored copy ends in another state");
        assert_ne!(got, Err(ServerError::ReplyFull), "a reply overflowed: {request:?}");
        match &got {
            Ok(reply) => check::reply_shape(ServerId::Vcpu, reply, vcpus, answering),
            Err(_) => assert_eq!(server, before, "a refused request changed the state: {request:?}"),
        }

        match (expect, &got) {
            (Expect::Exact(e), _) => {
                let got = got.as_ref().map(|r| r.actions.iter().collect::<Vec<_>>()).map_err(|e| *e);
                assert_eq!(got, e, "{request:?}");
            }
            (Expect::Uart(a), Ok(reply)) => h.uart(&a, reply, imaged),
            (Expect::Uart(a), Err(e)) => panic!("{a:?} refused: {e:?}"),
            (Expect::Any, Ok(reply)) => {
                if let VcpuRequest::Start { .. } = request {
                    let policy = match reply.actions.first() {
                        Some(Action::ConfigureTraps(p)) => p,
                        other => panic!("Start answered {other:?}"),
                    };
                    // What the other servers rely on: PSCI over SMC, ACTLR and
                    // set/way emulation, the emulated physical timer; WFI as
                    // the VM's policy says.
                    assert!(policy.smc && policy.actlr && policy.set_way && policy.phys_timer);
                    assert_eq!(policy.wfi, config.wfi == ipc::WfiPolicy::Trap, "{config:?}");
                    let actions = reply.actions.to_vec();
                    assert!(
                        matches!(actions.as_slice(), [_, Action::ConsoleReady { .. }, ..])
                            && actions[2..].iter().all(|a| {
                                matches!(a, Action::ConsoleImageWord { .. } | Action::ConsoleImageMap { .. })
                            }),
                        "Start answered {reply:?}"
                    );
                }
                if faithful {
                    h.console_effects(reply, None);
                } else {
                    lenient_console(&mut h, reply);
                }
            }
            (Expect::Any, Err(e)) => assert!(
                matches!(e, ServerError::NoSuchVcpu(_) | ServerError::Unexpected) && !faithful,
                "{request:?} refused: {e:?}"
            ),
        }

        if let Ok(reply) = &got {
            h.image.apply(reply, config.console_image);
        }
        image_matches_reads(&h.image, &server, &config);

        if faithful {
            for v in 0..vcpus {
                assert_eq!(
                    server.psci().power(VcpuId(v)),
                    Some(h.power[usize::from(v)]),
                    "vCPU {v}'s power state differs from the PSCI history"
                );
            }
        } else {
            h.resync(&server);
        }
        shadow = check::round_trip(&server);
    }
}

/// While the harness's image is mapped, every word the UART decodes (and a
/// write-only and a reserved one) reads through the trap path as the image
/// shows it. On a copy: a read must change nothing then, and the next step
/// checks that too.
fn image_matches_reads(image: &Image, server: &VcpuServer, config: &VmConfig) {
    if !image.mapped.0 {
        return;
    }
    let offsets = vcpu_server::pl011::IMAGE_OFFSETS.iter().copied().chain([0x44, 0x100]);
    for offset in offsets {
        let mut copy = server.clone();
        let a = MmioAccess {
            ipa: config.uart.base + u64::from(offset),
            far: 0xF000_0000 | u32::from(offset),
            size: AccessSize::Word,
            write: false,
            value: 0,
            rt: 0,
            sign_extend: false,
        };
        let reply = copy.handle(trap(VcpuId(0), Trap::Mmio(a))).expect("a UART load is answered");
        let value = reply.actions.iter().find_map(|action| match action {
            Action::SetReg { value, .. } => Some(u64::from(value)),
            _ => None,
        });
        assert_eq!(value, image.load(u64::from(offset), AccessSize::Word), "image word {offset:#x}");
        assert_eq!(&copy, server, "a load changed the UART while its image was mapped ({offset:#x})");
    }
}

/// What the monitor and the guest do first: vCPU 0 is started, its console
/// driver sets the UART up.
fn boot(input: &Input) -> Vec<Op> {
    let mut boot = vec![Op::Start { pick: 0 }];
    // A word write to register `REGS[index]` of `uart_access`.
    let uart_write = |index: u16, value: u32| Op::Uart {
        caller: 0,
        offset: index << 12,
        size: 2,
        write: true,
        value,
        rt: 0,
        sign_extend: false,
    };
    if input.fifo {
        boot.push(uart_write(6, 0x70)); // UARTLCR_H: FEN, 8-bit words
    }
    if let Some(mask) = input.imsc {
        boot.push(uart_write(9, u32::from(mask) << 4)); // UARTIMSC
    }
    boot
}

/// Track the line and the room from a reply the harness cannot predict.
fn lenient_console(h: &mut Harness, reply: &Reply) {
    for action in &reply.actions.to_vec() {
        match action {
            Action::ConsoleReady { room, report } => {
                assert!(*room <= RX_FIFO);
                h.room_reported(*report);
                h.console_budget = *room;
            }
            Action::Send(Message::Vgic(VgicRequest::SetLine { intid, level, change, .. }))
                if intid.0 == h.config.uart_intid =>
            {
                assert_ne!(*level, h.uart_line, "SetLine without a change of level");
                h.line_changed(*change);
                h.uart_line = *level;
            }
            _ => {}
        }
    }
}

/// Requests from a trace seed, at most.
const MAX_TRACE_REQUESTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Some((config, requests)) = trace_seed::decode::<VcpuRequest>(data) {
        let ops: Vec<Op> = requests.into_iter().take(MAX_TRACE_REQUESTS).map(Op::Raw).collect();
        run(&config, &[], &ops);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input.config.build_or_default(), &boot(&input), &input.ops[..input.ops.len().min(200)]);
    }
});
