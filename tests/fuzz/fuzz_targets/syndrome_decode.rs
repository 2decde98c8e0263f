//! The monitor's host-testable part: `el2_monitor::syndrome::decode` on
//! arbitrary syndromes, and the exception-entry arithmetic of
//! `el2_monitor::guest`, each against an independent reading of the
//! ARMv7-A Architecture Reference Manual (DDI 0406C):
//!
//! - B3.13.6 "Use of the HSR" (exception classes and ISS layouts of
//!   WFI/WFE, MCR/MRC, MCRR/MRRC, HVC, SMC, prefetch and data aborts),
//!   B4.1.62 HPFAR (IPA[39:12] in bits [31:4]);
//! - A8.3 "Conditional execution" (Table A8-1), A2.5.2 "ITSTATE";
//! - B1.8 exception entry (Table B1-3 vector offsets, Table B1-7 link
//!   values, B1.8.3 CPSR on entry), B3.13.3 fault status encodings.
//!
//! Invariants beyond equality with the reference: an MMIO trap's value is
//! masked to its size, register numbers are below 16, the register reader is
//! asked only for R0-R15, the IPA is HPFAR's page with the FAR's offset;
//! exception entry never enters Hyp or Monitor mode.
#![no_main]

use arbitrary::Arbitrary;
use el2_monitor::guest::{self, ExceptionEntry, Fault, GuestException, GuestState};
use el2_monitor::syndrome::{self, Decoded, Syndrome};
use ipc::{AccessSize, Cp15Access, Cp15WideAccess, MmioAccess, Trap};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    hsr: u32,
    hdfar: u32,
    hifar: u32,
    hpfar: u32,
    cpsr: u32,
    regs: [u32; 16],
    /// Steer the exception class to the decoded ones most of the time.
    class: u8,
    sctlr: u32,
    vbar: u32,
    ttbcr: u32,
    exception: u8,
    far: u32,
    write: bool,
    insn_len_4: bool,
}

const MODE_MASK: u32 = 0x1f;
const MODE_HYP: u32 = 0x1a;
const MODE_MON: u32 = 0x16;
const MODE_UND: u32 = 0x1b;
const MODE_ABT: u32 = 0x17;

fn bits(v: u32, hi: u32, lo: u32) -> u32 {
    (v >> lo) & ((1u32 << (hi - lo + 1)) - 1)
}

/// A8.3, Table A8-1, written as the table reads.
fn condition(cond: u32, cpsr: u32) -> bool {
    let n = cpsr >> 31 & 1 == 1;
    let z = cpsr >> 30 & 1 == 1;
    let c = cpsr >> 29 & 1 == 1;
    let v = cpsr >> 28 & 1 == 1;
    match cond {
        0b0000 => z,
        0b0001 => !z,
        0b0010 => c,
        0b0011 => !c,
        0b0100 => n,
        0b0101 => !n,
        0b0110 => v,
        0b0111 => !v,
        0b1000 => c && !z,
        0b1001 => !c || z,
        0b1010 => n == v,
        0b1011 => n != v,
        0b1100 => !z && n == v,
        0b1101 => z || n != v,
        _ => true,
    }
}

/// Whether a trapped conditional instruction passed: COND from the ISS when
/// CV is set; otherwise inside an IT block the base condition ITSTATE[7:4],
/// else unconditional.
fn passed(iss: u32, cpsr: u32) -> bool {
    if bits(iss, 24, 24) == 1 {
        return condition(bits(iss, 23, 20), cpsr);
    }
    let it = bits(cpsr, 15, 10) << 2 | bits(cpsr, 26, 25);
    it == 0 || condition(it >> 4, cpsr)
}

/// B3.13.6, field by field.
fn reference(s: &Syndrome, cpsr: u32, regs: &[u32; 16]) -> Decoded {
    let ec = bits(s.hsr, 31, 26);
    let iss = bits(s.hsr, 24, 0);
    let ipa = |far: u32| u64::from(bits(s.hpfar, 31, 4)) << 12 | u64::from(far & 0xfff);
    let args = [regs[0], regs[1], regs[2], regs[3]];
    let conditional = matches!(ec, 0x01 | 0x03 | 0x04 | 0x13);
    if conditional && !passed(iss, cpsr) {
        return Decoded::Skip;
    }
    let trap = match ec {
        0x01 if bits(iss, 0, 0) == 1 => Trap::Wfe,
        0x01 => Trap::Wfi,
        0x03 => {
            let rt = bits(iss, 8, 5) as u8;
            let write = bits(iss, 0, 0) == 0;
            Trap::Cp15(Cp15Access {
                opc2: bits(iss, 19, 17) as u8,
                opc1: bits(iss, 16, 14) as u8,
                crn: bits(iss, 13, 10) as u8,
                crm: bits(iss, 4, 1) as u8,
                write,
                rt,
                value: if write { regs[usize::from(rt)] } else { 0 },
            })
        }
        0x04 => {
            let rt = bits(iss, 8, 5) as u8;
            let rt2 = bits(iss, 13, 10) as u8;
            let write = bits(iss, 0, 0) == 0;
            Trap::Cp15Wide(Cp15WideAccess {
                opc1: bits(iss, 19, 16) as u8,
                crm: bits(iss, 4, 1) as u8,
                write,
                rt,
                rt2,
                value: if write {
                    u64::from(regs[usize::from(rt2)]) << 32 | u64::from(regs[usize::from(rt)])
                } else {
                    0
                },
            })
        }
        0x12 => Trap::Hvc { imm: bits(iss, 15, 0) as u16, args },
        0x13 => Trap::Smc { args },
        0x20 => Trap::PrefetchAbort { ipa: ipa(s.hifar), far: s.hifar },
        0x24 => {
            let (isv, sas, sse, srt) = (bits(iss, 24, 24), bits(iss, 23, 22), bits(iss, 21, 21), bits(iss, 19, 16));
            let (ea, cm, s1ptw, wnr) = (bits(iss, 9, 9), bits(iss, 8, 8), bits(iss, 7, 7), bits(iss, 6, 6));
            let write = wnr == 1;
            if cm == 1 {
                // Cache maintenance by VA on an address with nothing behind it.
                return Decoded::Skip;
            }
            if isv == 0 || s1ptw == 1 || ea == 1 {
                Trap::DataAbortNoSyndrome { ipa: ipa(s.hdfar), far: s.hdfar, write }
            } else {
                // SAS 0b11 is reserved on ARMv7; the decoder reports it as a
                // doubleword.
                let size = [AccessSize::Byte, AccessSize::Half, AccessSize::Word, AccessSize::Double][sas as usize];
                let rt = srt as u8;
                Trap::Mmio(MmioAccess {
                    ipa: ipa(s.hdfar),
                    far: s.hdfar,
                    size,
                    write,
                    value: if write { u64::from(regs[usize::from(rt)]) & size.mask() } else { 0 },
                    rt,
                    sign_extend: sse == 1,
                })
            }
        }
        _ => Trap::Unknown { hsr: s.hsr },
    };
    Decoded::Trap(trap)
}

fn check_invariants(decoded: &Decoded, s: &Syndrome) {
    let Decoded::Trap(trap) = decoded else { return };
    let fault_ipa = |far: u32| u64::from(s.hpfar >> 4) << 12 | u64::from(far & 0xfff);
    match trap {
        Trap::Mmio(a) => {
            assert_eq!(a.value & !a.size.mask(), 0, "MMIO value not masked to its size");
            if !a.write {
                assert_eq!(a.value, 0, "a load carries no value");
            }
            assert!(a.rt < 16);
            assert_eq!(a.ipa, fault_ipa(a.far));
            assert!(a.ipa < 1 << 40, "an IPA has 40 bits");
        }
        Trap::DataAbortNoSyndrome { ipa, far, .. } | Trap::PrefetchAbort { ipa, far } => {
            assert_eq!(*ipa, fault_ipa(*far));
        }
        Trap::Cp15(a) => assert!(a.rt < 16 && a.crn < 16 && a.crm < 16 && a.opc1 < 8 && a.opc2 < 8),
        Trap::Cp15Wide(a) => assert!(a.rt < 16 && a.rt2 < 16 && a.crm < 16 && a.opc1 < 16),
        _ => {}
    }
}

fn expected_entry(exception: GuestException, s: &GuestState) -> ExceptionEntry {
    let thumb = s.cpsr >> 5 & 1 == 1;
    let (mode, offset, lr, abort) = match exception {
        GuestException::Undef => (MODE_UND, 0x04, s.pc.wrapping_add(if thumb { 2 } else { 4 }), false),
        GuestException::PrefetchAbort { .. } => (MODE_ABT, 0x0c, s.pc.wrapping_add(4), true),
        GuestException::DataAbort { .. } => (MODE_ABT, 0x10, s.pc.wrapping_add(8), true),
    };
    let long = s.ttbcr >> 31 == 1;
    // Synchronous external abort: short format FS = 0b01000; long format
    // LPAE (bit 9) with STATUS = 0b010000.
    let fsr = if long { 1 << 9 | 0b01_0000 } else { 0b0_1000 };
    let fault = match exception {
        GuestException::Undef => None,
        GuestException::PrefetchAbort { far } => Some(Fault::Prefetch { fsr, far }),
        GuestException::DataAbort { far, write } => Some(Fault::Data { fsr: fsr | u32::from(write) << 11, far }),
    };
    // B1.8.3 (the TakeUndefInstrException() and TakeDataAbortException()
    // pseudocode): M, I, A (aborts), T from SCTLR.TE, E from SCTLR.EE, J and
    // IT are written; every other bit (N, Z, C, V, Q, GE, F, reserved) is
    // left as it was.
    const M: u32 = 0x1f;
    const T: u32 = 1 << 5;
    const E: u32 = 1 << 9;
    const J: u32 = 1 << 24;
    const IT: u32 = 0x3f << 10 | 0x3 << 25;
    let written = M | T | E | J | IT;
    let mut cpsr = (s.cpsr & !written) | mode | 1 << 7;
    if abort {
        cpsr |= 1 << 8;
    }
    cpsr |= (s.sctlr >> 30 & 1) << 5; // TE -> T
    cpsr |= (s.sctlr >> 25 & 1) << 9; // EE -> E
    let base = if s.sctlr >> 13 & 1 == 1 { 0xffff_0000 } else { s.vbar & !0x1f };
    ExceptionEntry { mode, cpsr, pc: base.wrapping_add(offset), lr, spsr: s.cpsr, fault }
}

/// A2.5.2: ITAdvance().
fn it_advance(cpsr: u32) -> u32 {
    let it = bits(cpsr, 15, 10) << 2 | bits(cpsr, 26, 25);
    let next = if it & 0b111 == 0 { 0 } else { (it & 0b1110_0000) | ((it << 1) & 0b1_1111) };
    (cpsr & !(0x3f << 10 | 0x3 << 25)) | (next >> 2) << 10 | (next & 3) << 25
}

fuzz_target!(|input: Input| {
    let mut hsr = input.hsr;
    // Two thirds of the inputs get a class the decoder knows.
    const CLASSES: [u32; 9] = [0x00, 0x01, 0x03, 0x04, 0x12, 0x13, 0x20, 0x24, 0x25];
    if let Some(&ec) = CLASSES.get(usize::from(input.class % 14)) {
        hsr = (hsr & 0x03ff_ffff) | ec << 26;
    }
    let s = Syndrome { hsr, hdfar: input.hdfar, hifar: input.hifar, hpfar: input.hpfar };
    let regs = input.regs;
    let reader = |n: u8| {
        assert!(n < 16, "the decoder asked for register {n}");
        regs[usize::from(n)]
    };
    let decoded = syndrome::decode(&s, input.cpsr, reader);
    check_invariants(&decoded, &s);
    assert_eq!(decoded, reference(&s, input.cpsr, &regs), "syndrome {s:x?} cpsr {:#x}", input.cpsr);
    assert_eq!(decoded, syndrome::decode(&s, input.cpsr, reader), "decoding is not a function of its input");
    assert_eq!(s.insn_len(), if hsr >> 25 & 1 == 1 { 4 } else { 2 });
    for cond in 0..16 {
        assert_eq!(syndrome::condition_holds(cond, input.cpsr), condition(cond, input.cpsr), "cond {cond:#x}");
    }

    let state = GuestState {
        pc: input.far ^ input.hifar,
        cpsr: input.cpsr,
        sctlr: input.sctlr,
        vbar: input.vbar,
        ttbcr: input.ttbcr,
    };
    let exception = match input.exception % 3 {
        0 => GuestException::Undef,
        1 => GuestException::PrefetchAbort { far: input.far },
        _ => GuestException::DataAbort { far: input.far, write: input.write },
    };
    let entry = guest::exception_entry(exception, &state);
    assert!(entry.mode != MODE_HYP && entry.mode != MODE_MON, "exception entry into mode {:#x}", entry.mode);
    assert_eq!(entry.cpsr & MODE_MASK, entry.mode, "CPSR mode differs from the entry's mode");
    assert_eq!(entry, expected_entry(exception, &state), "{exception:?} from {state:x?}");

    assert_eq!(guest::advance_itstate(input.cpsr), it_advance(input.cpsr));
    let len = if input.insn_len_4 { 4 } else { 2 };
    let (pc, cpsr) = guest::skip_instruction(state.pc, input.cpsr, len);
    assert_eq!((pc, cpsr), (state.pc.wrapping_add(len), it_advance(input.cpsr)));
});
