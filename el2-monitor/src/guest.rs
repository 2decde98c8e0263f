//! Architectural arithmetic on guest state: where the guest resumes after a
//! trapped instruction, and how an exception is entered in the guest. Pure
//! functions; the arch code reads the registers and writes the results.
//!
//! References: ARMv7-A ARM B1.3.3 (CPSR), A2.5.2 (ITSTATE), B1.8 (exception
//! entry, Table B1-7 link values and Table B1-3 vector offsets), B3.13.3
//! (fault status encodings).

/// CPSR fields, by name (B1.3.3).
pub mod cpsr {
    /// Mode field mask.
    pub const MODE_MASK: u32 = 0x1f;
    /// User mode.
    pub const MODE_USR: u32 = 0x10;
    /// FIQ mode.
    pub const MODE_FIQ: u32 = 0x11;
    /// IRQ mode.
    pub const MODE_IRQ: u32 = 0x12;
    /// Supervisor mode.
    pub const MODE_SVC: u32 = 0x13;
    /// Abort mode.
    pub const MODE_ABT: u32 = 0x17;
    /// Hyp mode.
    pub const MODE_HYP: u32 = 0x1a;
    /// Undefined mode.
    pub const MODE_UND: u32 = 0x1b;
    /// System mode.
    pub const MODE_SYS: u32 = 0x1f;
    /// Thumb state.
    pub const T: u32 = 1 << 5;
    /// FIQ mask.
    pub const F: u32 = 1 << 6;
    /// IRQ mask.
    pub const I: u32 = 1 << 7;
    /// Asynchronous abort mask.
    pub const A: u32 = 1 << 8;
    /// Big-endian data.
    pub const E: u32 = 1 << 9;
    /// IT[7:2].
    pub const IT_HI: u32 = 0x3f << 10;
    /// Jazelle.
    pub const J: u32 = 1 << 24;
    /// IT[1:0].
    pub const IT_LO: u32 = 0x3 << 25;
}

/// The SCTLR fields exception entry depends on (B4.1.130).
pub mod sctlr {
    /// High exception vectors at 0xffff0000.
    pub const V: u32 = 1 << 13;
    /// Exceptions taken in big-endian.
    pub const EE: u32 = 1 << 25;
    /// Exceptions taken in Thumb state.
    pub const TE: u32 = 1 << 30;
}

/// The TTBCR field that selects the long-descriptor (LPAE) format.
pub const TTBCR_EAE: u32 = 1 << 31;

/// Advance the IT state of `cpsr` past one instruction (A2.5.2).
pub fn advance_itstate(cpsr: u32) -> u32 {
    let it = ((cpsr >> 8) & 0xfc) | ((cpsr >> 25) & 0x3);
    if it == 0 {
        return cpsr;
    }
    let next = if it & 0x7 == 0 { 0 } else { (it & 0xe0) | ((it << 1) & 0x1f) };
    (cpsr & !(cpsr::IT_HI | cpsr::IT_LO)) | ((next & 0xfc) << 8) | ((next & 0x3) << 25)
}

/// The guest's PC and CPSR after skipping the trapping instruction of
/// `insn_len` bytes at `pc`.
pub fn skip_instruction(pc: u32, cpsr: u32, insn_len: u32) -> (u32, u32) {
    (pc.wrapping_add(insn_len), advance_itstate(cpsr))
}

/// An exception to take in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// Undefined Instruction.
    Undef,
    /// Prefetch Abort (synchronous external abort) on `far`.
    PrefetchAbort {
        /// The faulting address, for IFAR.
        far: u32,
    },
    /// Data Abort (synchronous external abort) on `far`.
    DataAbort {
        /// The faulting address, for DFAR.
        far: u32,
        /// The faulting access was a write.
        write: bool,
    },
}

/// The guest registers the arch code reads to plan an exception entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// Address of the instruction that caused the exception.
    pub pc: u32,
    /// CPSR at that instruction.
    pub cpsr: u32,
    /// SCTLR.
    pub sctlr: u32,
    /// VBAR.
    pub vbar: u32,
    /// TTBCR (for the fault status format).
    pub ttbcr: u32,
}

/// Everything the arch code writes to enter a guest exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionEntry {
    /// The mode the exception is taken to (its SPSR and LR get written).
    pub mode: u32,
    /// New CPSR.
    pub cpsr: u32,
    /// New PC (the vector).
    pub pc: u32,
    /// LR of `mode`.
    pub lr: u32,
    /// SPSR of `mode`.
    pub spsr: u32,
    /// A fault status and address to write: (DFSR, DFAR) or (IFSR, IFAR).
    pub fault: Option<Fault>,
}

/// Fault status and address registers written on an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// DFSR, DFAR.
    Data {
        /// DFSR.
        fsr: u32,
        /// DFAR.
        far: u32,
    },
    /// IFSR, IFAR.
    Prefetch {
        /// IFSR.
        fsr: u32,
        /// IFAR.
        far: u32,
    },
}

/// Fault status of a synchronous external abort: short-descriptor format
/// FS = 0b01000; long-descriptor format (TTBCR.EAE) LPAE bit and STATUS =
/// 0b010000 (B3.13.3).
fn external_abort_fsr(ttbcr: u32) -> u32 {
    if ttbcr & TTBCR_EAE != 0 {
        1 << 9 | 0x10
    } else {
        0x08
    }
}

/// Plan the entry into a guest exception (B1.8.3 and following).
pub fn exception_entry(exception: GuestException, s: &GuestState) -> ExceptionEntry {
    let thumb = s.cpsr & cpsr::T != 0;
    let (mode, vector, lr, mask_abort, fault) = match exception {
        // Undefined: LR = next instruction (+2 Thumb, +4 ARM).
        GuestException::Undef => (cpsr::MODE_UND, 0x04, s.pc.wrapping_add(if thumb { 2 } else { 4 }), false, None),
        // Prefetch Abort: LR = faulting instruction + 4.
        GuestException::PrefetchAbort { far } => (
            cpsr::MODE_ABT,
            0x0c,
            s.pc.wrapping_add(4),
            true,
            Some(Fault::Prefetch { fsr: external_abort_fsr(s.ttbcr), far }),
        ),
        // Data Abort: LR = faulting instruction + 8.
        GuestException::DataAbort { far, write } => (
            cpsr::MODE_ABT,
            0x10,
            s.pc.wrapping_add(8),
            true,
            Some(Fault::Data { fsr: external_abort_fsr(s.ttbcr) | u32::from(write) << 11, far }),
        ),
    };
    let mut new =
        (s.cpsr & !(cpsr::MODE_MASK | cpsr::T | cpsr::E | cpsr::J | cpsr::IT_HI | cpsr::IT_LO)) | mode | cpsr::I;
    if mask_abort {
        new |= cpsr::A;
    }
    if s.sctlr & sctlr::TE != 0 {
        new |= cpsr::T;
    }
    if s.sctlr & sctlr::EE != 0 {
        new |= cpsr::E;
    }
    let base = if s.sctlr & sctlr::V != 0 { 0xffff_0000 } else { s.vbar & !0x1f };
    ExceptionEntry { mode, cpsr: new, pc: base.wrapping_add(vector), lr, spsr: s.cpsr, fault }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cpsr: u32) -> GuestState {
        GuestState { pc: 0x4000_1000, cpsr, sctlr: 0x00c5_0078, vbar: 0x4000_0000, ttbcr: 0 }
    }

    #[test]
    fn itstate_advances_and_ends() {
        // ITTE EQ: ITSTATE = 0b0000_0110 with firstcond EQ: 0b000 0 0110? Use
        // an IT block of two instructions: mask 0b1000 → IT = cond:mask.
        let it: u32 = 0x0c; // cond 0000, mask 1100: two instructions
        let cpsr = (it & 0xfc) << 8 | (it & 3) << 25 | 0x33;
        let after1 = advance_itstate(cpsr);
        let it1 = ((after1 >> 8) & 0xfc) | ((after1 >> 25) & 3);
        assert_eq!(it1, 0x18);
        let after2 = advance_itstate(after1);
        let it2 = ((after2 >> 8) & 0xfc) | ((after2 >> 25) & 3);
        assert_eq!(it2, 0);
        assert_eq!(after2 & 0x1f, 0x13);
        // Outside an IT block nothing changes.
        assert_eq!(advance_itstate(0x6000_0013), 0x6000_0013);
    }

    #[test]
    fn skip_adds_the_length() {
        assert_eq!(skip_instruction(0x4000_0ffe, 0x33, 2), (0x4000_1000, 0x33));
        assert_eq!(skip_instruction(0xffff_fffc, 0x13, 4), (0, 0x13));
    }

    #[test]
    fn undef_from_arm_svc() {
        let e = exception_entry(GuestException::Undef, &state(0x6000_0013));
        assert_eq!(e.mode, cpsr::MODE_UND);
        assert_eq!(e.pc, 0x4000_0004);
        assert_eq!(e.lr, 0x4000_1004);
        assert_eq!(e.spsr, 0x6000_0013);
        assert_eq!(e.cpsr, 0x6000_0000 | cpsr::MODE_UND | cpsr::I);
        assert_eq!(e.fault, None);
    }

    #[test]
    fn undef_from_thumb_uses_two_bytes_and_te() {
        let mut s = state(0x33);
        s.sctlr |= sctlr::TE | sctlr::V;
        let e = exception_entry(GuestException::Undef, &s);
        assert_eq!(e.lr, 0x4000_1002);
        assert_eq!(e.pc, 0xffff_0004);
        assert_eq!(e.cpsr & cpsr::T, cpsr::T);
    }

    #[test]
    fn data_abort_short_and_long_descriptor() {
        let e = exception_entry(GuestException::DataAbort { far: 0x0a00_0000, write: true }, &state(0x13));
        assert_eq!(e.mode, cpsr::MODE_ABT);
        assert_eq!(e.pc, 0x4000_0010);
        assert_eq!(e.lr, 0x4000_1008);
        assert_eq!(e.cpsr, cpsr::MODE_ABT | cpsr::I | cpsr::A);
        assert_eq!(e.fault, Some(Fault::Data { fsr: 0x808, far: 0x0a00_0000 }));
        let mut s = state(0x13);
        s.ttbcr = TTBCR_EAE;
        let e = exception_entry(GuestException::DataAbort { far: 4, write: false }, &s);
        assert_eq!(e.fault, Some(Fault::Data { fsr: 0x210, far: 4 }));
    }

    #[test]
    fn prefetch_abort() {
        let e = exception_entry(GuestException::PrefetchAbort { far: 0x1000 }, &state(0x10));
        assert_eq!((e.mode, e.pc, e.lr), (cpsr::MODE_ABT, 0x4000_000c, 0x4000_1004));
        assert_eq!(e.fault, Some(Fault::Prefetch { fsr: 0x8, far: 0x1000 }));
    }
}
