//! Round trips of every message in the catalogue through every wire format
//! (envelope, COBS frame, blob), the errors that truncated, garbage, trailing,
//! wrong-version and oversized input give (never a panic), and the `std`
//! transports (crossbeam channel, byte stream).
//!
//! The `*_variant` helpers match exhaustively: a variant added to the
//! catalogue does not compile here until it has an index, and the coverage
//! assertion then fails until a sample of it is added below.
//!
//! Run with `cargo test -p ipc --features std` (the wire tests also run
//! without the feature).

use std::fmt::Debug;

use ipc::action::MAX_CONSOLE_BYTES;
use ipc::msg::{LrStatus, TimerKind, MAX_INPUT_BYTES};
use ipc::trace::TraceRecord;
use ipc::wire::{self, BLOB_MAGIC, MAX_BLOB_SIZE};
use ipc::{
    AccessSize, Action, Cp15Access, Cp15WideAccess, Envelope, GuestReg, IntId, MemWindow, Message, MmioAccess, Reply,
    ServerError, ServerId, ShutdownReason, TimerIntids, Trap, TrapConfig, TrapMsg, VcpuId, VcpuRequest, VgicRequest,
    VmConfig, VtimerRequest, WireError, MAX_ACTIONS, MAX_MESSAGE_SIZE, WIRE_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};

// ---------------------------------------------------------------------------
// Exhaustive variant indices: one arm per variant, no wildcard.

const TRAP_VARIANTS: usize = 12;
fn trap_variant(t: &Trap) -> usize {
    match t {
        Trap::Hvc { .. } => 0,
        Trap::Smc { .. } => 1,
        Trap::Mmio(_) => 2,
        Trap::DataAbortNoSyndrome { .. } => 3,
        Trap::PrefetchAbort { .. } => 4,
        Trap::Cp15(_) => 5,
        Trap::Cp15Wide(_) => 6,
        Trap::Wfi => 7,
        Trap::Wfe => 8,
        Trap::Irq { .. } => 9,
        Trap::HypTimer => 10,
        Trap::Unknown { .. } => 11,
    }
}

const ACTION_VARIANTS: usize = 23;
fn action_variant(a: &Action) -> usize {
    match a {
        Action::SetReg { .. } => 0,
        Action::AdvancePc => 1,
        Action::InjectUndef => 2,
        Action::InjectDataAbort { .. } => 3,
        Action::InjectPrefetchAbort { .. } => 4,
        Action::CleanInvalidateDcache => 5,
        Action::ConsoleWrite { .. } => 6,
        Action::ConfigureTraps(_) => 7,
        Action::SetCntvoff { .. } => 8,
        Action::SetHypTimer { .. } => 9,
        Action::WriteListRegister { .. } => 10,
        Action::WriteGichHcr { .. } => 11,
        Action::DeactivatePhysical { .. } => 12,
        Action::Kick { .. } => 13,
        Action::PowerOn { .. } => 14,
        Action::PowerOff => 15,
        Action::WaitForInterrupt => 16,
        Action::Shutdown(_) => 17,
        Action::Send(_) => 18,
        Action::ConsoleReady { .. } => 19,
        Action::ConsoleImageWord { .. } => 20,
        Action::ConsoleImageMap { .. } => 21,
        Action::SetVirtualTimerMask { .. } => 22,
    }
}

const VCPU_REQUEST_VARIANTS: usize = 3;
fn vcpu_request_variant(r: &VcpuRequest) -> usize {
    match r {
        VcpuRequest::Start { .. } => 0,
        VcpuRequest::Trap(_) => 1,
        VcpuRequest::ConsoleInput { .. } => 2,
    }
}

const VGIC_REQUEST_VARIANTS: usize = 8;
fn vgic_request_variant(r: &VgicRequest) -> usize {
    match r {
        VgicRequest::Start { .. } => 0,
        VgicRequest::Mmio { .. } => 1,
        VgicRequest::SetLine { .. } => 2,
        VgicRequest::Maintenance { .. } => 3,
        VgicRequest::Sync { .. } => 4,
        VgicRequest::Idle { .. } => 5,
        VgicRequest::Wfi { .. } => 6,
        VgicRequest::Pend { .. } => 7,
    }
}

const VTIMER_REQUEST_VARIANTS: usize = 4;
fn vtimer_request_variant(r: &VtimerRequest) -> usize {
    match r {
        VtimerRequest::Start { .. } => 0,
        VtimerRequest::Cp15 { .. } => 1,
        VtimerRequest::Cp15Wide { .. } => 2,
        VtimerRequest::Fired { .. } => 3,
    }
}

const MESSAGE_VARIANTS: usize = 3;
fn message_variant(m: &Message) -> usize {
    match m {
        Message::Vcpu(_) => 0,
        Message::Vgic(_) => 1,
        Message::Vtimer(_) => 2,
    }
}

const TRACE_VARIANTS: usize = 3;
fn trace_variant(r: &TraceRecord) -> usize {
    match r {
        TraceRecord::Config(_) => 0,
        TraceRecord::Request { .. } => 1,
        TraceRecord::Reply { .. } => 2,
    }
}

const SERVER_ERROR_VARIANTS: usize = 5;
fn server_error_variant(e: &ServerError) -> usize {
    match e {
        ServerError::WrongServer => 0,
        ServerError::NoSuchVcpu(_) => 1,
        ServerError::Unexpected => 2,
        ServerError::ReplyFull => 3,
        ServerError::Faulted => 4,
    }
}

const SHUTDOWN_VARIANTS: usize = 3;
fn shutdown_variant(r: &ShutdownReason) -> usize {
    match r {
        ShutdownReason::PowerOff => 0,
        ShutdownReason::Reset => 1,
        ShutdownReason::Fault(_) => 2,
    }
}

const GUEST_REG_VARIANTS: usize = 3;
fn guest_reg_variant(r: &GuestReg) -> usize {
    match r {
        GuestReg::Gpr(_) => 0,
        GuestReg::Pc => 1,
        GuestReg::Cpsr => 2,
    }
}

const ACCESS_SIZE_VARIANTS: usize = 4;
fn access_size_variant(s: &AccessSize) -> usize {
    match s {
        AccessSize::Byte => 0,
        AccessSize::Half => 1,
        AccessSize::Word => 2,
        AccessSize::Double => 3,
    }
}

const TIMER_KIND_VARIANTS: usize = 2;
fn timer_kind_variant(k: &TimerKind) -> usize {
    match k {
        TimerKind::Virtual => 0,
        TimerKind::Physical => 1,
    }
}

const SERVER_ID_VARIANTS: usize = 3;
fn server_id_variant(s: &ServerId) -> usize {
    match s {
        ServerId::Vcpu => 0,
        ServerId::Vgic => 1,
        ServerId::Vtimer => 2,
    }
}

/// Assert that `samples` hold every variant `0..count` of `index`.
fn assert_covers<T: Debug>(what: &str, samples: &[T], count: usize, index: fn(&T) -> usize) {
    let mut seen = vec![false; count];
    for sample in samples {
        let i = index(sample);
        assert!(i < count, "{what}: index {i} of {sample:?} is not below the count {count}");
        seen[i] = true;
    }
    let missing: Vec<usize> = (0..count).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "{what}: no sample of variant(s) {missing:?}");
}

// ---------------------------------------------------------------------------
// Samples of the whole catalogue, with extreme values where there are any.

const V: VcpuId = VcpuId(7);

fn mmio() -> MmioAccess {
    MmioAccess {
        ipa: 0xff_ffff_f000,
        far: u32::MAX,
        size: AccessSize::Half,
        write: true,
        value: 0xbeef,
        rt: 14,
        sign_extend: true,
    }
}

fn cp15() -> Cp15Access {
    Cp15Access { opc1: 7, crn: 15, crm: 15, opc2: 7, write: true, rt: 12, value: u32::MAX }
}

fn cp15_wide() -> Cp15WideAccess {
    Cp15WideAccess { opc1: 15, crm: 14, write: false, rt: 2, rt2: 3, value: u64::MAX }
}

fn lr_status() -> LrStatus {
    LrStatus { misr: 0x1ff, eisr: 0xf, elrsr: 0x5, lrs: [0, u32::MAX, 0x1000_0020, 0x9000_001b] }
}

fn config() -> VmConfig {
    VmConfig {
        ram: MemWindow { ipa: 0x4000_0000, pa: 0x80_0000_0000 - (256 << 20), size: 256 << 20 },
        spis: 960,
        log_level: 5,
        trace: true,
        faults: ["vgic:panic@3", "vcpu:bad-reply@random:7:0.25:repeat"]
            .iter()
            .map(|spec| spec.parse().expect("a valid injection"))
            .collect(),
        on_server_fault: ipc::fault::OnServerFault::Stop,
        wfi: ipc::WfiPolicy::Native,
        vtimer: ipc::VtimerDelivery::Masked,
        containment: ipc::Containment {
            checkpoint_every: ipc::Containment::MAX_CHECKPOINT_EVERY,
            budget_ms: ipc::Containment::MAX_BUDGET_MS,
        },
        ..VmConfig::example(8)
    }
}

fn traps() -> Vec<Trap> {
    vec![
        Trap::Hvc { imm: u16::MAX, args: [0x8400_0003, 1, 0x4000_8000, u32::MAX] },
        Trap::Smc { args: [0x8400_0008, 0, 0, 0] },
        Trap::Mmio(mmio()),
        Trap::DataAbortNoSyndrome { ipa: 0x0800_1000, far: 0xc000_0000, write: true },
        Trap::PrefetchAbort { ipa: u64::MAX, far: 4 },
        Trap::Cp15(cp15()),
        Trap::Cp15Wide(cp15_wide()),
        Trap::Wfi,
        Trap::Wfe,
        Trap::Irq { intid: 1023 },
        Trap::HypTimer,
        Trap::Unknown { hsr: u32::MAX },
    ]
}

fn trap_msgs() -> Vec<TrapMsg> {
    traps().into_iter().map(|trap| TrapMsg { vcpu: V, trap, pc: 0xffff_fffc, cpsr: 0x6000_01d3 }).collect()
}

fn vcpu_requests() -> Vec<VcpuRequest> {
    let mut requests = vec![
        VcpuRequest::Start { vcpu: VcpuId(0) },
        VcpuRequest::ConsoleInput { bytes: ipc::msg::InputBytes::new() },
        VcpuRequest::ConsoleInput { bytes: ipc::msg::InputBytes::from_slice(&[0u8; MAX_INPUT_BYTES]).unwrap() },
    ];
    requests.extend(trap_msgs().into_iter().map(VcpuRequest::Trap));
    requests
}

fn vgic_requests() -> Vec<VgicRequest> {
    vec![
        VgicRequest::Start { vcpu: V, list_registers: 64 },
        VgicRequest::Mmio { vcpu: V, access: mmio(), status: None },
        VgicRequest::Mmio { vcpu: V, access: mmio(), status: Some(lr_status()) },
        VgicRequest::SetLine {
            intid: IntId(27),
            level: true,
            target: Some(V),
            hw: Some(IntId(27)),
            change: 0,
            status: None,
        },
        VgicRequest::SetLine { intid: IntId(1019), level: false, target: None, hw: None, change: 0, status: None },
        VgicRequest::Maintenance { vcpu: V, status: lr_status() },
        VgicRequest::Sync { vcpu: VcpuId(0), status: LrStatus::default() },
        VgicRequest::Idle { vcpu: V, status: lr_status() },
        VgicRequest::Wfi { vcpu: VcpuId(0), status: lr_status() },
        VgicRequest::Pend { intid: IntId(27), target: Some(V), status: Some(lr_status()), masked_timer: true },
        VgicRequest::Pend { intid: IntId(1019), target: None, status: None, masked_timer: false },
    ]
}

fn vtimer_requests() -> Vec<VtimerRequest> {
    vec![
        VtimerRequest::Start { vcpu: V, now: 0 },
        VtimerRequest::Cp15 { vcpu: V, access: cp15(), now: u64::MAX },
        VtimerRequest::Cp15Wide { vcpu: V, access: cp15_wide(), now: 1 << 63 },
        VtimerRequest::Fired { vcpu: V, timer: TimerKind::Virtual, now: 12345 },
        VtimerRequest::Fired { vcpu: V, timer: TimerKind::Physical, now: u64::MAX },
    ]
}

fn messages() -> Vec<Message> {
    let mut messages: Vec<Message> = vcpu_requests().into_iter().map(Message::Vcpu).collect();
    messages.extend(vgic_requests().into_iter().map(Message::Vgic));
    messages.extend(vtimer_requests().into_iter().map(Message::Vtimer));
    messages
}

fn shutdown_reasons() -> Vec<ShutdownReason> {
    vec![ShutdownReason::PowerOff, ShutdownReason::Reset, ShutdownReason::Fault(u32::MAX)]
}

fn guest_regs() -> Vec<GuestReg> {
    vec![GuestReg::Gpr(0), GuestReg::Gpr(14), GuestReg::Pc, GuestReg::Cpsr]
}

fn actions() -> Vec<Action> {
    let mut actions = vec![
        Action::AdvancePc,
        Action::InjectUndef,
        Action::InjectDataAbort { far: u32::MAX },
        Action::InjectPrefetchAbort { far: 0 },
        Action::CleanInvalidateDcache,
        Action::console(b""),
        Action::console(&[0xa5; MAX_CONSOLE_BYTES + 10]),
        Action::ConfigureTraps(TrapConfig::default()),
        Action::ConfigureTraps(TrapConfig {
            wfi: true,
            wfe: true,
            smc: true,
            actlr: true,
            set_way: true,
            phys_timer: true,
            phys_counter: true,
        }),
        Action::SetCntvoff { value: u64::MAX },
        Action::SetHypTimer { deadline: None },
        Action::SetHypTimer { deadline: Some(u64::MAX) },
        Action::WriteListRegister { index: 3, value: 0x9000_001b },
        Action::WriteGichHcr { value: 1 },
        Action::DeactivatePhysical { intid: IntId(27) },
        Action::Kick { vcpu: V },
        Action::PowerOn { vcpu: V, entry: 0x4000_8000, context_id: u32::MAX },
        Action::PowerOff,
        Action::WaitForInterrupt,
        Action::ConsoleReady { room: u8::MAX, report: u32::MAX },
        Action::ConsoleImageWord { offset: u16::MAX, value: u32::MAX, generation: u32::MAX },
        Action::ConsoleImageMap { mapped: true, generation: u32::MAX },
        Action::SetVirtualTimerMask { masked: true },
        Action::SetVirtualTimerMask { masked: false },
    ];
    actions.extend(guest_regs().into_iter().map(|reg| Action::SetReg { reg, value: u32::MAX }));
    actions.extend(shutdown_reasons().into_iter().map(Action::Shutdown));
    actions.extend(messages().into_iter().map(Action::Send));
    actions
}

fn server_errors() -> Vec<ServerError> {
    vec![
        ServerError::WrongServer,
        ServerError::NoSuchVcpu(VcpuId(u8::MAX)),
        ServerError::Unexpected,
        ServerError::ReplyFull,
        ServerError::Faulted,
    ]
}

/// Every action alone, and the largest replies: as many copies of it as
/// fit (`MAX_ACTIONS`, or fewer where a `Send` or a console write fills its
/// pool first).
fn replies() -> Vec<Reply> {
    let mut replies = vec![Reply::none()];
    for action in actions() {
        replies.push(Reply::of(std::slice::from_ref(&action)).unwrap());
        let mut full = Reply::none();
        while full.push(action.clone()).is_ok() {}
        let pooled = matches!(action, Action::Send(_) | Action::ConsoleWrite { .. });
        assert!(full.actions.len() == MAX_ACTIONS || pooled && !full.actions.is_empty());
        replies.push(full);
    }
    replies
}

fn results() -> Vec<Result<Reply, ServerError>> {
    let mut results: Vec<_> = replies().into_iter().map(Ok).collect();
    results.extend(server_errors().into_iter().map(Err));
    results
}

fn trace_records() -> Vec<TraceRecord> {
    let mut records = vec![TraceRecord::Config(config())];
    for (seq, message) in (u64::MAX - 100..).zip(messages()) {
        records.push(TraceRecord::Request { seq, message });
    }
    for (seq, result) in (0..).zip(results()) {
        records.push(TraceRecord::Reply { seq, server: ServerId::Vgic, result });
    }
    for server in ServerId::ALL {
        records.push(TraceRecord::Reply { seq: 1, server, result: Err(ServerError::Unexpected) });
    }
    records
}

#[test]
fn samples_cover_the_whole_catalogue() {
    assert_covers("Trap", &traps(), TRAP_VARIANTS, trap_variant);
    assert_covers("Action", &actions(), ACTION_VARIANTS, action_variant);
    assert_covers("VcpuRequest", &vcpu_requests(), VCPU_REQUEST_VARIANTS, vcpu_request_variant);
    assert_covers("VgicRequest", &vgic_requests(), VGIC_REQUEST_VARIANTS, vgic_request_variant);
    assert_covers("VtimerRequest", &vtimer_requests(), VTIMER_REQUEST_VARIANTS, vtimer_request_variant);
    assert_covers("Message", &messages(), MESSAGE_VARIANTS, message_variant);
    assert_covers("TraceRecord", &trace_records(), TRACE_VARIANTS, trace_variant);
    assert_covers("ServerError", &server_errors(), SERVER_ERROR_VARIANTS, server_error_variant);
    assert_covers("ShutdownReason", &shutdown_reasons(), SHUTDOWN_VARIANTS, shutdown_variant);
    assert_covers("GuestReg", &guest_regs(), GUEST_REG_VARIANTS, guest_reg_variant);
    let sizes = [AccessSize::Byte, AccessSize::Half, AccessSize::Word, AccessSize::Double];
    assert_covers("AccessSize", &sizes, ACCESS_SIZE_VARIANTS, access_size_variant);
    let kinds = [TimerKind::Virtual, TimerKind::Physical];
    assert_covers("TimerKind", &kinds, TIMER_KIND_VARIANTS, timer_kind_variant);
    assert_covers("ServerId", &ServerId::ALL, SERVER_ID_VARIANTS, server_id_variant);
    // Every variant of a nested enum also reaches the wire inside a message.
    let in_messages: Vec<AccessSize> = messages()
        .iter()
        .filter_map(|m| match m {
            Message::Vgic(VgicRequest::Mmio { access, .. }) => Some(access.size),
            _ => None,
        })
        .chain(sizes)
        .collect();
    assert_covers("AccessSize", &in_messages, ACCESS_SIZE_VARIANTS, access_size_variant);
}

#[test]
fn the_sample_configuration_sets_every_field() {
    let c = config();
    assert_eq!(c.validate(), Ok(()));
    // Exhaustive: a new field does not compile here until it is looked at.
    let VmConfig {
        vcpus,
        ram,
        entry,
        boot_regs,
        gicd,
        gicc,
        uart,
        uart_intid,
        spis,
        log_level,
        trace,
        timer,
        faults,
        on_server_fault,
        isolation,
        domains,
        console_image,
        wfi,
        vtimer,
        containment,
    } = c;
    assert!(vcpus > 1 && entry != 0 && boot_regs != [0; 3] && uart_intid != 0 && trace);
    assert!(!faults.is_empty() && on_server_fault == ipc::fault::OnServerFault::Stop && isolation && domains);
    assert!(console_image && wfi == ipc::WfiPolicy::Native && containment != ipc::Containment::DEFAULT);
    assert_eq!(vtimer, ipc::VtimerDelivery::Masked);
    assert!(ram.size != 0 && ram.pa != ram.ipa && gicd != gicc && uart.size != 0);
    assert!(spis != 0 && log_level != 0 && timer.guest_phys != timer.guest_virt);
}

// ---------------------------------------------------------------------------
// Round trips.

/// Encode `value` in each wire format, decode it back, and check that every
/// truncation and any trailing byte is reported as such.
fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    // Envelope.
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let bytes = wire::encode_envelope(u64::MAX, u32::MAX, value, &mut buf)
        .unwrap_or_else(|e| panic!("encode {value:?}: {e}"))
        .to_vec();
    let envelope: Envelope<T> = wire::decode_envelope(&bytes).unwrap();
    assert_eq!(envelope.version, WIRE_VERSION);
    assert_eq!((envelope.seq, envelope.generation), (u64::MAX, u32::MAX));
    assert_eq!(&envelope.body, value);
    for len in 0..bytes.len() {
        assert_eq!(
            wire::decode_envelope::<T>(&bytes[..len]).unwrap_err(),
            WireError::Truncated,
            "{value:?} cut to {len} of {} bytes",
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0, 0xff, 1]);
    assert_eq!(wire::decode_envelope::<T>(&longer).unwrap_err(), WireError::TrailingBytes(3));

    // COBS frame: ends in the only zero byte; decodes with or without it.
    let mut buf = [0u8; 2 * MAX_MESSAGE_SIZE];
    let frame = wire::encode_frame(value, &mut buf).unwrap().to_vec();
    assert_eq!(frame.iter().position(|&b| b == 0), Some(frame.len() - 1));
    assert_eq!(&wire::decode_frame::<T>(&mut frame.clone()).unwrap(), value);
    let mut unterminated = frame[..frame.len() - 1].to_vec();
    assert_eq!(&wire::decode_frame::<T>(&mut unterminated).unwrap(), value);
    for len in 0..frame.len() - 1 {
        assert_eq!(
            wire::decode_frame::<T>(&mut frame[..len].to_vec()).unwrap_err(),
            WireError::Truncated,
            "frame of {value:?} cut to {len} bytes"
        );
    }

    // Blob: header, body, and whatever memory follows.
    let mut buf = vec![0u8; MAX_BLOB_SIZE];
    let blob = wire::encode_blob(value, &mut buf).unwrap().to_vec();
    assert_eq!(blob[..4], BLOB_MAGIC);
    assert_eq!(&wire::decode_blob::<T>(&blob).unwrap(), value);
    let mut in_memory = blob.clone();
    in_memory.extend_from_slice(&[0xff; 64]);
    assert_eq!(&wire::decode_blob::<T>(&in_memory).unwrap(), value);
    for len in 0..blob.len() {
        assert_eq!(
            wire::decode_blob::<T>(&blob[..len]).unwrap_err(),
            WireError::Truncated,
            "blob of {value:?} cut to {len} bytes"
        );
    }
}

#[test]
fn traps_round_trip() {
    traps().iter().for_each(round_trip);
    trap_msgs().iter().for_each(round_trip);
}

#[test]
fn requests_round_trip() {
    vcpu_requests().iter().for_each(round_trip);
    vgic_requests().iter().for_each(round_trip);
    vtimer_requests().iter().for_each(round_trip);
    messages().iter().for_each(round_trip);
}

#[test]
fn actions_and_replies_round_trip() {
    actions().iter().for_each(round_trip);
    shutdown_reasons().iter().for_each(round_trip);
    server_errors().iter().for_each(round_trip);
    // Includes MAX_ACTIONS of the largest action: every reply fits in one
    // envelope of MAX_MESSAGE_SIZE bytes.
    results().iter().for_each(round_trip);
}

#[test]
fn trace_records_and_config_round_trip() {
    trace_records().iter().for_each(round_trip);
    round_trip(&config());
    round_trip(&TimerIntids::ARCHITECTED);
}

#[test]
fn console_bytes_beyond_capacity_are_refused() {
    // A full ConsoleWrite is: variant tag, length, bytes. Claim one more.
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let full = Action::console(&[7u8; MAX_CONSOLE_BYTES]);
    let mut bytes = wire::encode(&full, &mut buf).unwrap().to_vec();
    assert_eq!(bytes.len(), 2 + MAX_CONSOLE_BYTES);
    assert_eq!(bytes[1], MAX_CONSOLE_BYTES as u8);
    assert_eq!(wire::decode::<Action>(&bytes), Ok(full));
    bytes[1] += 1;
    bytes.push(7);
    assert!(matches!(wire::decode::<Action>(&bytes), Err(WireError::Malformed(_))));
}

// ---------------------------------------------------------------------------
// Errors: version, size, magic, buffer.

#[test]
fn a_wrong_version_is_reported_before_the_body() {
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    for version in [0, WIRE_VERSION + 1, u16::MAX] {
        let envelope = Envelope { version, seq: 1, generation: 0, body: Action::AdvancePc };
        let bytes = wire::encode(&envelope, &mut buf).unwrap().to_vec();
        assert_eq!(
            wire::decode_envelope::<Action>(&bytes).unwrap_err(),
            WireError::Version { got: version, expected: WIRE_VERSION }
        );
        // Even when what follows is not a valid body.
        let mut garbage = bytes[..3].to_vec();
        garbage.extend_from_slice(&[0xff; 20]);
        assert_eq!(
            wire::decode_envelope::<Message>(&garbage).unwrap_err(),
            WireError::Version { got: version, expected: WIRE_VERSION }
        );
    }
}

#[test]
fn oversized_input_is_refused() {
    let huge = vec![1u8; MAX_MESSAGE_SIZE + 1];
    assert_eq!(wire::decode_envelope::<Message>(&huge).unwrap_err(), WireError::TooLarge(MAX_MESSAGE_SIZE + 1));
    let huger = vec![1u8; MAX_BLOB_SIZE + 1];
    assert_eq!(wire::decode::<VmConfig>(&huger).unwrap_err(), WireError::TooLarge(MAX_BLOB_SIZE + 1));
    // A body that encodes to more than MAX_MESSAGE_SIZE is not sent.
    let mut buf = vec![0u8; 4 * MAX_MESSAGE_SIZE];
    let body = vec![0u8; MAX_MESSAGE_SIZE];
    assert!(matches!(
        wire::encode_envelope(1, 1, &body.as_slice(), &mut buf),
        Err(WireError::TooLarge(n)) if n > MAX_MESSAGE_SIZE
    ));
    let body = vec![0u8; MAX_BLOB_SIZE];
    let mut buf = vec![0u8; 2 * MAX_BLOB_SIZE];
    assert!(matches!(
        wire::encode_blob(&body.as_slice(), &mut buf),
        Err(WireError::TooLarge(n)) if n > MAX_BLOB_SIZE
    ));
    // A blob whose header claims more than the limit, up to u32::MAX (whose
    // length plus header overflowed usize on 32-bit targets).
    for claimed in [MAX_BLOB_SIZE as u32 - 7, 1 << 31, u32::MAX] {
        let mut blob = BLOB_MAGIC.to_vec();
        blob.extend_from_slice(&claimed.to_le_bytes());
        blob.extend_from_slice(&[0; 16]);
        assert!(matches!(
            wire::decode_blob::<VmConfig>(&blob),
            Err(WireError::TooLarge(n)) if n > MAX_BLOB_SIZE
        ));
    }
}

#[test]
fn blobs_need_their_magic_and_header() {
    let mut buf = vec![0u8; MAX_BLOB_SIZE];
    let mut blob = wire::encode_blob(&config(), &mut buf).unwrap().to_vec();
    blob[0] ^= 0x20;
    assert_eq!(wire::decode_blob::<VmConfig>(&blob).unwrap_err(), WireError::BadMagic);
    assert_eq!(wire::decode_blob::<VmConfig>(b"SPV").unwrap_err(), WireError::Truncated);
    // A header that claims fewer bytes than the body has.
    let mut blob = wire::encode_blob(&config(), &mut buf).unwrap().to_vec();
    blob[4] -= 1;
    assert_eq!(wire::decode_blob::<VmConfig>(&blob).unwrap_err(), WireError::Truncated);
}

#[test]
fn small_output_buffers_are_reported() {
    let message = Message::Vgic(VgicRequest::Maintenance { vcpu: V, status: lr_status() });
    let mut small = [0u8; 8];
    assert_eq!(wire::encode_envelope(1, 1, &message, &mut small).unwrap_err(), WireError::BufferFull);
    assert_eq!(wire::encode_frame(&message, &mut small).unwrap_err(), WireError::BufferFull);
    assert_eq!(wire::encode_blob(&message, &mut small).unwrap_err(), WireError::BufferFull);
    assert_eq!(wire::encode_blob(&message, &mut small[..7]).unwrap_err(), WireError::BufferFull);
}

// ---------------------------------------------------------------------------
// Garbage: many pseudo-random inputs, never a panic.

/// SplitMix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Decode `bytes` as a `T` envelope; whatever decodes must re-encode to
/// something that decodes to the same value. Errors must be of the kinds
/// decoding can give.
fn decode_garbage<T>(bytes: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match wire::decode_envelope::<T>(bytes) {
        Ok(envelope) => {
            let mut buf = [0u8; MAX_MESSAGE_SIZE];
            let again = wire::encode_envelope(envelope.seq, envelope.generation, &envelope.body, &mut buf)
                .expect("a decoded message re-encodes");
            assert_eq!(wire::decode_envelope::<T>(again).unwrap(), envelope);
        }
        Err(
            WireError::Truncated
            | WireError::Malformed(_)
            | WireError::TrailingBytes(_)
            | WireError::TooLarge(_)
            | WireError::Version { .. },
        ) => {}
        Err(e) => panic!("decoding gave {e:?}"),
    }
    let _ = wire::decode_frame::<T>(&mut bytes.to_vec());
    let _ = wire::decode_blob::<T>(bytes);
    let _ = wire::decode::<T>(bytes);
}

fn decode_garbage_as_everything(bytes: &[u8]) {
    decode_garbage::<Message>(bytes);
    decode_garbage::<Result<Reply, ServerError>>(bytes);
    decode_garbage::<TraceRecord>(bytes);
    decode_garbage::<VmConfig>(bytes);
    decode_garbage::<Action>(bytes);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5eed_0000_0001);
    for _ in 0..20_000 {
        let len = rng.below(MAX_MESSAGE_SIZE + 40);
        let mut bytes = rng.bytes(len);
        // Half of them start with the right version, to get past it.
        if rng.next() & 1 == 0 && bytes.len() >= 2 {
            bytes[0] = WIRE_VERSION as u8;
        }
        decode_garbage_as_everything(&bytes);
    }
}

#[test]
fn mutated_messages_never_panic() {
    // Valid encodings with a few bytes changed reach much deeper into the
    // decoder than random bytes do.
    let mut rng = Rng(0x5eed_0000_0002);
    let mut encodings = Vec::new();
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    for m in messages() {
        encodings.push(wire::encode_envelope(3, 4, &m, &mut buf).unwrap().to_vec());
    }
    for r in results() {
        encodings.push(wire::encode_envelope(3, 4, &r, &mut buf).unwrap().to_vec());
    }
    for r in trace_records().iter().take(40) {
        encodings.push(wire::encode_envelope(3, 4, r, &mut buf).unwrap().to_vec());
    }
    for original in &encodings {
        for _ in 0..40 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            decode_garbage_as_everything(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------
// Transports.

mod in_image {
    use ipc::transport::{Direct, Endpoint, EventQueue, TransportError};

    use super::*;

    #[test]
    fn direct_call_and_wrong_server() {
        let mut server = Direct(Counter::default());
        let reply = server.call(Message::Vtimer(fired(5))).unwrap();
        assert_eq!(reply, Reply::of(&[Action::SetHypTimer { deadline: Some(5) }]).unwrap());
        let wrong = Message::Vcpu(VcpuRequest::Start { vcpu: V });
        assert_eq!(server.call(wrong), Err(TransportError::Server(ServerError::WrongServer)));
        assert_eq!(server.0.handled, 1);
    }

    #[test]
    fn event_queue_is_fifo_and_gives_back_what_does_not_fit() {
        let mut queue = EventQueue::<2>::new();
        assert!(queue.is_empty());
        queue.push(Message::Vtimer(fired(1))).unwrap();
        queue.push(Message::Vtimer(fired(2))).unwrap();
        assert_eq!(queue.push(Message::Vtimer(fired(3))), Err(Message::Vtimer(fired(3))));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Some(Message::Vtimer(fired(1))));
        assert_eq!(queue.pop(), Some(Message::Vtimer(fired(2))));
        assert_eq!(queue.pop(), None);
    }
}

/// A tiny server for the transport tests: answers `Fired { now }` with
/// `SetHypTimer { deadline: Some(now) }`, refuses `Start`, and can be made to
/// stall on one value of `now` until released, or to crash on one.
#[derive(Debug, Default)]
struct Counter {
    handled: u64,
    stall: Option<(u64, std::sync::mpsc::Receiver<()>)>,
    /// Simulates a server bug: panic on this value of `now`.
    crash_at: Option<u64>,
}

impl ipc::Server for Counter {
    const ID: ServerId = ServerId::Vtimer;
    type Request = VtimerRequest;

    fn handle_into(&mut self, request: &VtimerRequest, reply: &mut Reply) -> Result<(), ServerError> {
        self.handled += 1;
        match *request {
            VtimerRequest::Fired { now, .. } => {
                if let Some((at, gate)) = &self.stall {
                    if *at == now {
                        let _ = gate.recv();
                    }
                }
                assert_ne!(self.crash_at, Some(now), "test server crashes on purpose");
                Ok(reply.push(Action::SetHypTimer { deadline: Some(now) })?)
            }
            _ => Err(ServerError::Unexpected),
        }
    }

    fn request_of(message: &Message) -> Result<&VtimerRequest, ServerError> {
        match message {
            Message::Vtimer(request) => Ok(request),
            _ => Err(ServerError::WrongServer),
        }
    }
}

fn fired(now: u64) -> VtimerRequest {
    VtimerRequest::Fired { vcpu: V, timer: TimerKind::Physical, now }
}

#[cfg(feature = "std")]
fn hyp_reply(now: u64) -> Reply {
    Reply::of(&[Action::SetHypTimer { deadline: Some(now) }]).unwrap()
}

#[cfg(feature = "std")]
mod channel {
    use std::time::{Duration, Instant};

    use ipc::transport::{channel, Endpoint, TransportError};

    use super::*;

    #[test]
    fn calls_get_their_replies_and_errors() {
        let (mut client, handle) = channel::spawn(Counter::default(), Duration::from_secs(10));
        for now in 0..50 {
            assert_eq!(client.call(Message::Vtimer(fired(now))), Ok(hyp_reply(now)));
        }
        let start = Message::Vtimer(VtimerRequest::Start { vcpu: V, now: 0 });
        assert_eq!(client.call(start), Err(TransportError::Server(ServerError::Unexpected)));
        let wrong = Message::Vgic(VgicRequest::Start { vcpu: V, list_registers: 4 });
        assert_eq!(client.call(wrong), Err(TransportError::Server(ServerError::WrongServer)));
        // Dropping the client ends the thread, which gives the server back.
        drop(client);
        assert_eq!(handle.join().unwrap().handled, 51);
    }

    #[test]
    fn a_stalled_server_times_out_and_later_calls_recover() {
        let (release, gate) = std::sync::mpsc::channel();
        let server = Counter { stall: Some((666, gate)), ..Counter::default() };
        let timeout = Duration::from_millis(300);
        let (mut client, handle) = channel::spawn(server, timeout);
        assert_eq!(client.call(Message::Vtimer(fired(1))), Ok(hyp_reply(1)));

        let began = Instant::now();
        assert_eq!(client.call(Message::Vtimer(fired(666))), Err(TransportError::Timeout));
        assert!(began.elapsed() >= timeout);
        // Still stalled: this request waits in the queue, then times out.
        assert_eq!(client.call(Message::Vtimer(fired(2))), Err(TransportError::Timeout));
        // The queue is full now: sending itself must time out, not block.
        let began = Instant::now();
        assert_eq!(client.call(Message::Vtimer(fired(3))), Err(TransportError::Timeout));
        assert!(began.elapsed() < Duration::from_secs(5));

        // Released, the server answers the stale requests; their late
        // replies are dropped and the next call gets its own.
        release.send(()).unwrap();
        assert_eq!(client.call(Message::Vtimer(fired(4))), Ok(hyp_reply(4)));
        assert_eq!(client.call(Message::Vtimer(fired(5))), Ok(hyp_reply(5)));
        drop(client);
        // 1, 666, 2, 4, 5: request 3 never reached the server.
        assert_eq!(handle.join().unwrap().handled, 5);
    }

    #[test]
    fn a_dead_server_is_reported_as_disconnected() {
        let server = Counter { crash_at: Some(13), ..Counter::default() };
        let (mut client, handle) = channel::spawn(server, Duration::from_secs(10));
        assert_eq!(client.call(Message::Vtimer(fired(12))), Ok(hyp_reply(12)));
        // The server thread dies handling this one: its reply channel closes.
        assert_eq!(client.call(Message::Vtimer(fired(13))), Err(TransportError::Disconnected));
        // And nobody takes requests any more.
        assert_eq!(client.call(Message::Vtimer(fired(14))), Err(TransportError::Disconnected));
        assert!(handle.join().is_err(), "the server thread panicked");
    }
}

#[cfg(feature = "std")]
mod stream {
    use std::io::Cursor;
    use std::os::unix::net::UnixStream;

    use ipc::transport::stream::{self, FramedStream, StreamClient};
    use ipc::transport::{Endpoint, TransportError};

    use super::*;

    #[test]
    fn a_server_over_a_socket_pair() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut server = Counter::default();
            let result = stream::serve(&mut server, theirs.try_clone().unwrap(), theirs, 7);
            (server, result)
        });
        let mut client = StreamClient::new(ours.try_clone().unwrap(), ours, 7);
        for now in [0, 1, u64::MAX] {
            assert_eq!(client.call(Message::Vtimer(fired(now))), Ok(hyp_reply(now)));
        }
        let wrong = Message::Vcpu(VcpuRequest::Start { vcpu: V });
        assert_eq!(client.call(wrong), Err(TransportError::Server(ServerError::WrongServer)));
        // Every message of the catalogue crosses the socket intact.
        for message in messages() {
            let expected = match &message {
                Message::Vtimer(VtimerRequest::Fired { now, .. }) => Ok(hyp_reply(*now)),
                Message::Vtimer(_) => Err(TransportError::Server(ServerError::Unexpected)),
                _ => Err(TransportError::Server(ServerError::WrongServer)),
            };
            assert_eq!(client.call(message), expected);
        }
        drop(client);
        let (server, result) = server.join().unwrap();
        assert_eq!(result, Ok(()), "a clean end of stream ends serve");
        assert_eq!(server.handled, 3 + 5);
    }

    #[test]
    fn framed_envelopes_in_memory() {
        let mut wire_bytes = Vec::new();
        let mut writer = FramedStream::new(std::io::empty(), &mut wire_bytes);
        for (seq, message) in (10..).zip(messages()) {
            writer.send(seq, 2, &message).unwrap();
        }
        drop(writer);
        assert_eq!(wire_bytes.iter().filter(|&&b| b == 0).count(), messages().len());

        let mut reader = FramedStream::new(Cursor::new(wire_bytes), std::io::sink());
        for (seq, message) in (10..).zip(messages()) {
            let envelope = reader.recv::<Message>().unwrap().unwrap();
            assert_eq!(envelope, Envelope { version: WIRE_VERSION, seq, generation: 2, body: message });
        }
        assert_eq!(reader.recv::<Message>(), Ok(None));
    }

    #[test]
    fn postcard_frames_and_stream_frames_agree() {
        // A frame made by wire::encode_frame (postcard's COBS) is read by
        // the stream's decoder, including long runs without a zero.
        let mut body = Reply::of(&[Action::console(&[0x55; MAX_CONSOLE_BYTES])]).unwrap();
        while body.push(Action::SetCntvoff { value: 0x5555_5555_5555_5555 }).is_ok() {}
        let envelope = Envelope { version: WIRE_VERSION, seq: 99, generation: 1, body };
        let mut buf = [0u8; 2 * MAX_MESSAGE_SIZE];
        let frame = wire::encode_frame(&envelope, &mut buf).unwrap().to_vec();
        let mut reader = FramedStream::new(Cursor::new(frame), std::io::sink());
        assert_eq!(reader.recv::<Reply>().unwrap(), Some(envelope));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = [0u8; 2 * MAX_MESSAGE_SIZE];
        // Another version.
        let other = Envelope { version: WIRE_VERSION + 1, seq: 1, generation: 0, body: fired(1) };
        let frame = wire::encode_frame(&other, &mut buf).unwrap().to_vec();
        let mut reader = FramedStream::new(Cursor::new(frame), std::io::sink());
        assert_eq!(
            reader.recv::<VtimerRequest>(),
            Err(TransportError::Wire(WireError::Version { got: WIRE_VERSION + 1, expected: WIRE_VERSION }))
        );
        // The stream ends inside a frame.
        let mut reader = FramedStream::new(Cursor::new(vec![3, 1, 1]), std::io::sink());
        assert_eq!(reader.recv::<Message>(), Err(TransportError::Wire(WireError::Truncated)));
        // A frame longer than any message.
        let mut reader = FramedStream::new(Cursor::new(vec![1u8; 4 * MAX_MESSAGE_SIZE]), std::io::sink());
        assert!(matches!(reader.recv::<Message>(), Err(TransportError::Wire(WireError::TooLarge(_)))));
        // A COBS code that runs past the end of its frame.
        let mut reader = FramedStream::new(Cursor::new(vec![9, 1, 2, 0]), std::io::sink());
        assert_eq!(reader.recv::<Message>(), Err(TransportError::Wire(WireError::Truncated)));
    }

    #[test]
    fn garbage_on_the_stream_is_an_error_not_a_panic() {
        let mut rng = Rng(0x5eed_0000_0003);
        for _ in 0..2_000 {
            let len = rng.below(3 * MAX_MESSAGE_SIZE);
            let mut bytes = rng.bytes(len);
            // Sprinkle frame ends so that many short frames are tried.
            for _ in 0..rng.below(8) {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] = 0;
                }
            }
            let mut reader = FramedStream::new(Cursor::new(bytes.clone()), std::io::sink());
            // Each recv consumes at least one byte or ends the stream.
            for _ in 0..=bytes.len() {
                match reader.recv::<Message>() {
                    Ok(None) => break,
                    Ok(Some(_)) | Err(TransportError::Wire(_)) => {}
                    Err(e) => panic!("garbage gave {e:?}"),
                }
            }
            // A server fed garbage stops with the error; a client fed garbage
            // as a reply reports it.
            let mut server = Counter::default();
            let mut answers = Vec::new();
            let served = stream::serve(&mut server, Cursor::new(bytes.clone()), &mut answers, 1);
            assert!(matches!(served, Ok(()) | Err(TransportError::Wire(_))), "{served:?}");
            let mut client = StreamClient::new(Cursor::new(bytes), std::io::sink(), 1);
            let called = client.call(Message::Vtimer(fired(1)));
            assert!(
                matches!(
                    called,
                    Err(TransportError::Wire(_)
                        | TransportError::Disconnected
                        | TransportError::OutOfSequence { .. }
                        | TransportError::Server(_))
                        | Ok(_)
                ),
                "{called:?}"
            );
        }
    }

    #[test]
    fn a_reply_to_another_request_is_out_of_sequence() {
        let mut replies = Vec::new();
        let mut writer = FramedStream::new(std::io::empty(), &mut replies);
        let answer: Result<Reply, ServerError> = Ok(Reply::none());
        writer.send(5, 1, &answer).unwrap();
        drop(writer);
        let mut client = StreamClient::new(Cursor::new(replies), std::io::sink(), 1);
        assert_eq!(client.call(Message::Vtimer(fired(1))), Err(TransportError::OutOfSequence { sent: 1, got: 5 }));
        // And the stream then ends: the peer is gone.
        assert_eq!(client.call(Message::Vtimer(fired(2))), Err(TransportError::Disconnected));
    }

    #[test]
    fn a_reply_from_a_restarted_server_is_stale() {
        let mut replies = Vec::new();
        let mut writer = FramedStream::new(std::io::empty(), &mut replies);
        let answer: Result<Reply, ServerError> = Ok(Reply::none());
        writer.send(1, 2, &answer).unwrap();
        drop(writer);
        let mut client = StreamClient::new(Cursor::new(replies), std::io::sink(), 1);
        assert_eq!(
            client.call(Message::Vtimer(fired(1))),
            Err(TransportError::StaleGeneration { expected: 1, got: 2 })
        );
    }
}
