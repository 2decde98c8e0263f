//! Traps: what the monitor saw, decoded from the syndrome but not interpreted.
//!
//! A [`TrapMsg`] is the message sent most often, so its wire form is not
//! postcard's field-by-field varints but one postcard byte string with a
//! fixed little-endian layout (see [`TrapMsg`]'s serde implementation).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::VcpuId;

/// The width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AccessSize {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits (LDRD/STRD never carry a syndrome on ARMv7, so this only
    /// appears on AArch64).
    Double,
}

impl AccessSize {
    /// The access width in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            AccessSize::Byte => 1,
            AccessSize::Half => 2,
            AccessSize::Word => 4,
            AccessSize::Double => 8,
        }
    }

    /// The mask of the bits an access of this size carries.
    pub fn mask(self) -> u64 {
        match self {
            AccessSize::Byte => 0xff,
            AccessSize::Half => 0xffff,
            AccessSize::Word => 0xffff_ffff,
            AccessSize::Double => u64::MAX,
        }
    }
}

/// A guest register, named as the guest saw it at the time of the trap:
/// `Gpr(n)` is register `n` of the mode the guest was in (so `Gpr(13)` in SVC
/// mode is SP_svc). The monitor resolves the banking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum GuestReg {
    /// R0-R14 of the guest's current mode.
    Gpr(u8),
    /// The program counter (the address of the trapping instruction).
    Pc,
    /// The guest's CPSR (SPSR_hyp at the time of the trap).
    Cpsr,
}

/// A data abort on an address the guest does not own, with a valid
/// instruction syndrome: it can be emulated as an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MmioAccess {
    /// The intermediate physical address accessed.
    pub ipa: u64,
    /// The guest virtual address accessed (HDFAR), for an injected abort.
    pub far: u32,
    /// The access width.
    pub size: AccessSize,
    /// A store (true) or a load (false).
    pub write: bool,
    /// For a store, the value stored (already masked to `size`); 0 for a load.
    pub value: u64,
    /// The transfer register (for a load, where the reply puts the value).
    pub rt: u8,
    /// A load that sign-extends its value into `rt`.
    pub sign_extend: bool,
}

/// A trapped 32-bit coprocessor 15 access (MCR/MRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cp15Access {
    /// opc1 field.
    pub opc1: u8,
    /// CRn field.
    pub crn: u8,
    /// CRm field.
    pub crm: u8,
    /// opc2 field.
    pub opc2: u8,
    /// MCR (write to the coprocessor) when true, MRC when false.
    pub write: bool,
    /// The ARM register transferred.
    pub rt: u8,
    /// For a write, the value of `rt`.
    pub value: u32,
}

/// A trapped 64-bit coprocessor 15 access (MCRR/MRRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cp15WideAccess {
    /// opc1 field.
    pub opc1: u8,
    /// CRm field.
    pub crm: u8,
    /// MCRR when true, MRRC when false.
    pub write: bool,
    /// Register with the low word.
    pub rt: u8,
    /// Register with the high word.
    pub rt2: u8,
    /// For a write, `rt2:rt`.
    pub value: u64,
}

/// What made a guest leave to the hypervisor, decoded but not interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Trap {
    /// HVC #imm, with the guest's r0-r3 (the SMC calling convention's arguments).
    Hvc {
        /// The immediate of the instruction.
        imm: u16,
        /// r0-r3.
        args: [u32; 4],
    },
    /// SMC (trapped with HCR.TSC), with r0-r3.
    Smc {
        /// r0-r3.
        args: [u32; 4],
    },
    /// A load or store to an address outside the guest's RAM, with a syndrome.
    Mmio(MmioAccess),
    /// A data abort that carries no instruction syndrome (load/store
    /// multiple, writeback forms): it cannot be emulated.
    DataAbortNoSyndrome {
        /// The faulting intermediate physical address.
        ipa: u64,
        /// The faulting virtual address (HDFAR).
        far: u32,
        /// Whether the access was a write, as far as the syndrome tells.
        write: bool,
    },
    /// An instruction fetch from an address the guest does not own.
    PrefetchAbort {
        /// The faulting intermediate physical address.
        ipa: u64,
        /// The faulting virtual address (HIFAR).
        far: u32,
    },
    /// A trapped MCR/MRC to CP15.
    Cp15(Cp15Access),
    /// A trapped MCRR/MRRC to CP15.
    Cp15Wide(Cp15WideAccess),
    /// WFI (trapped with HCR.TWI).
    Wfi,
    /// WFE (trapped with HCR.TWE).
    Wfe,
    /// A physical interrupt, acknowledged by the monitor on this CPU.
    Irq {
        /// The INTID read from the physical CPU interface.
        intid: u16,
    },
    /// The Hyp timer this vCPU's physical CPU owns fired.
    HypTimer,
    /// An exception class the decoder does not know (the raw HSR).
    Unknown {
        /// The raw syndrome register.
        hsr: u32,
    },
}

impl Trap {
    /// How many kinds of trap there are ([`Trap::kind`]'s range).
    pub const KINDS: usize = 12;

    /// The trap's kind: its variant's index in the declaration above (the
    /// kind byte of [`layout`], and what `--stats` counts traps by).
    pub const fn kind(&self) -> u8 {
        match self {
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
}

/// A trap as the router delivers it: which vCPU, what happened, and the
/// facts about the trapping instruction a server may need.
///
/// On the wire (postcard, not human-readable) it is one byte string of a
/// fixed little-endian layout, see [`layout`]; human-readable formats (the
/// JSON of `splitvisor trace show --json`) see its fields as usual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TrapMsg {
    /// The vCPU that trapped.
    pub vcpu: VcpuId,
    /// What happened.
    pub trap: Trap,
    /// The guest's PC at the trapping instruction.
    pub pc: u32,
    /// The guest's CPSR at the trap.
    pub cpsr: u32,
}

/// The fields of a [`TrapMsg`], for human-readable formats.
#[derive(Serialize, Deserialize)]
#[serde(remote = "TrapMsg")]
struct TrapMsgFields {
    vcpu: VcpuId,
    trap: Trap,
    pc: u32,
    cpsr: u32,
}

impl Serialize for TrapMsg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return TrapMsgFields::serialize(self, serializer);
        }
        let mut buf = [0u8; layout::MAX_LEN];
        let len = layout::encode(self, &mut buf);
        match buf.get(..len) {
            Some(bytes) => serializer.serialize_bytes(bytes),
            // Unreachable: `encode` writes at most MAX_LEN bytes.
            None => Err(serde::ser::Error::custom("trap message longer than its layout")),
        }
    }
}

impl<'de> Deserialize<'de> for TrapMsg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return TrapMsgFields::deserialize(deserializer);
        }
        deserializer.deserialize_bytes(LayoutVisitor)
    }
}

struct LayoutVisitor;

impl de::Visitor<'_> for LayoutVisitor {
    type Value = TrapMsg;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a trap message in the layout of this wire version")
    }

    #[inline]
    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<TrapMsg, E> {
        layout::decode(bytes).ok_or_else(|| E::invalid_value(de::Unexpected::Bytes(bytes), &self))
    }
}

/// The wire layout of a [`TrapMsg`]: a fixed little-endian layout inside
/// one postcard byte string (so a length byte first), exactly as long as its
/// kind needs, instead of postcard's derived field-by-field encoding.
///
/// Why: a trap message is the message the monitor sends most, and its
/// fields are mostly wide (a kernel PC, a CPSR, a PSCI function id, an
/// IPA, a syndrome: top bits set), which postcard writes as 5-byte varints
/// and decodes one byte and one branch at a time, through a serde visitor
/// per nested struct and enum. A fixed layout is no longer on the wire and
/// decodes with a handful of loads, in one function (`encode` and `decode`
/// are `#[inline]`: returning a decoded message through memory to serde's
/// visitors cost a store-forwarding stall per level on the host). Encode +
/// decode of a trap message in an envelope went from 43-87 ns to 36-48 ns
/// on the project's shared host, the gain in the kinds with wide fields
/// (`cargo bench -p ipc --bench wire`; tests/perf/host.md has the rounds).
/// It is seL4's fault message: labelled by kind, with a small fixed
/// payload.
///
/// | bytes | field |
/// |---|---|
/// | 0 | `vcpu` |
/// | 1 | kind: the index of the [`Trap`] variant, in declaration order |
/// | 2-5 | `pc` |
/// | 6-9 | `cpsr` |
/// | 10- | the kind's fields, in declaration order: `u8`, `bool` (0 or 1) and [`AccessSize`] (its variant index) one byte, `u16` two, `u32` four, `u64` eight |
///
/// Anything else (an unknown kind, a length that is not the kind's, a bool
/// or size byte out of range) does not decode.
pub mod layout {
    use super::{AccessSize, Cp15Access, Cp15WideAccess, MmioAccess, Trap, TrapMsg};
    use crate::ids::VcpuId;

    /// The longest layout: the header and an MMIO access.
    pub const MAX_LEN: usize = 10 + 24;

    struct Writer<'b> {
        buf: &'b mut [u8; MAX_LEN],
        len: usize,
    }

    impl Writer<'_> {
        #[inline(always)]
        fn put<const N: usize>(&mut self, bytes: [u8; N]) {
            // Every layout fits MAX_LEN, so this always writes.
            if let Some(slot) = self.buf.get_mut(self.len..self.len + N) {
                slot.copy_from_slice(&bytes);
            }
            self.len += N;
        }
        #[inline(always)]
        fn flag(&mut self, value: bool) {
            self.put([u8::from(value)]);
        }
    }

    /// Write `msg` into `buf`; returns the length used.
    #[inline]
    pub fn encode(msg: &TrapMsg, buf: &mut [u8; MAX_LEN]) -> usize {
        let mut w = Writer { buf, len: 0 };
        w.put([msg.vcpu.0, msg.trap.kind()]);
        w.put(msg.pc.to_le_bytes());
        w.put(msg.cpsr.to_le_bytes());
        match msg.trap {
            Trap::Hvc { imm, args } => {
                w.put(imm.to_le_bytes());
                args.iter().for_each(|arg| w.put(arg.to_le_bytes()));
            }
            Trap::Smc { args } => args.iter().for_each(|arg| w.put(arg.to_le_bytes())),
            Trap::Mmio(m) => {
                w.put(m.ipa.to_le_bytes());
                w.put(m.far.to_le_bytes());
                w.put([size_index(m.size)]);
                w.flag(m.write);
                w.put(m.value.to_le_bytes());
                w.put([m.rt]);
                w.flag(m.sign_extend);
            }
            Trap::DataAbortNoSyndrome { ipa, far, write } => {
                w.put(ipa.to_le_bytes());
                w.put(far.to_le_bytes());
                w.flag(write);
            }
            Trap::PrefetchAbort { ipa, far } => {
                w.put(ipa.to_le_bytes());
                w.put(far.to_le_bytes());
            }
            Trap::Cp15(c) => {
                w.put([c.opc1, c.crn, c.crm, c.opc2]);
                w.flag(c.write);
                w.put([c.rt]);
                w.put(c.value.to_le_bytes());
            }
            Trap::Cp15Wide(c) => {
                w.put([c.opc1, c.crm]);
                w.flag(c.write);
                w.put([c.rt, c.rt2]);
                w.put(c.value.to_le_bytes());
            }
            Trap::Wfi | Trap::Wfe | Trap::HypTimer => {}
            Trap::Irq { intid } => w.put(intid.to_le_bytes()),
            Trap::Unknown { hsr } => w.put(hsr.to_le_bytes()),
        }
        w.len
    }

    struct Reader<'a>(&'a [u8]);

    impl Reader<'_> {
        #[inline(always)]
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        #[inline(always)]
        fn u8(&mut self) -> Option<u8> {
            self.take::<1>().map(|[b]| b)
        }
        #[inline(always)]
        fn flag(&mut self) -> Option<bool> {
            match self.u8()? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }
        }
        #[inline(always)]
        fn u16(&mut self) -> Option<u16> {
            self.take().map(u16::from_le_bytes)
        }
        #[inline(always)]
        fn u32(&mut self) -> Option<u32> {
            self.take().map(u32::from_le_bytes)
        }
        #[inline(always)]
        fn u64(&mut self) -> Option<u64> {
            self.take().map(u64::from_le_bytes)
        }
        #[inline(always)]
        fn args(&mut self) -> Option<[u32; 4]> {
            Some([self.u32()?, self.u32()?, self.u32()?, self.u32()?])
        }
    }

    /// Read a trap message from exactly `bytes`; `None` if they are not one.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Option<TrapMsg> {
        let mut r = Reader(bytes);
        let [vcpu, kind] = r.take()?;
        let pc = r.u32()?;
        let cpsr = r.u32()?;
        let trap = match kind {
            0 => Trap::Hvc { imm: r.u16()?, args: r.args()? },
            1 => Trap::Smc { args: r.args()? },
            2 => Trap::Mmio(MmioAccess {
                ipa: r.u64()?,
                far: r.u32()?,
                size: size_of_index(r.u8()?)?,
                write: r.flag()?,
                value: r.u64()?,
                rt: r.u8()?,
                sign_extend: r.flag()?,
            }),
            3 => Trap::DataAbortNoSyndrome { ipa: r.u64()?, far: r.u32()?, write: r.flag()? },
            4 => Trap::PrefetchAbort { ipa: r.u64()?, far: r.u32()? },
            5 => {
                let [opc1, crn, crm, opc2] = r.take()?;
                Trap::Cp15(Cp15Access { opc1, crn, crm, opc2, write: r.flag()?, rt: r.u8()?, value: r.u32()? })
            }
            6 => {
                let [opc1, crm] = r.take()?;
                let write = r.flag()?;
                let [rt, rt2] = r.take()?;
                Trap::Cp15Wide(Cp15WideAccess { opc1, crm, write, rt, rt2, value: r.u64()? })
            }
            7 => Trap::Wfi,
            8 => Trap::Wfe,
            9 => Trap::Irq { intid: r.u16()? },
            10 => Trap::HypTimer,
            11 => Trap::Unknown { hsr: r.u32()? },
            _ => return None,
        };
        r.0.is_empty().then_some(TrapMsg { vcpu: VcpuId(vcpu), trap, pc, cpsr })
    }

    fn size_index(size: AccessSize) -> u8 {
        match size {
            AccessSize::Byte => 0,
            AccessSize::Half => 1,
            AccessSize::Word => 2,
            AccessSize::Double => 3,
        }
    }

    fn size_of_index(index: u8) -> Option<AccessSize> {
        match index {
            0 => Some(AccessSize::Byte),
            1 => Some(AccessSize::Half),
            2 => Some(AccessSize::Word),
            3 => Some(AccessSize::Double),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, WireError};

    fn msg(trap: Trap) -> TrapMsg {
        TrapMsg { vcpu: VcpuId(1), trap, pc: 0xc010_8a44, cpsr: 0x6000_0193 }
    }

    fn mmio() -> TrapMsg {
        msg(Trap::Mmio(MmioAccess {
            ipa: 0x0900_0000,
            far: 0xf900_0018,
            size: AccessSize::Half,
            write: true,
            value: 0x4142,
            rt: 3,
            sign_extend: false,
        }))
    }

    #[test]
    fn the_wire_form_is_the_documented_layout() {
        let mut buf = [0u8; 64];
        let bytes = wire::encode(&mmio(), &mut buf).unwrap();
        #[rustfmt::skip]
        let expected = [
            34, // postcard's length of the byte string
            1, 2, // vcpu, kind (Mmio)
            0x44, 0x8a, 0x10, 0xc0, // pc
            0x93, 0x01, 0x00, 0x60, // cpsr
            0, 0, 0, 9, 0, 0, 0, 0, // ipa
            0x18, 0, 0, 0xf9, // far
            1, 1, // size (Half), write
            0x42, 0x41, 0, 0, 0, 0, 0, 0, // value
            3, 0, // rt, sign_extend
        ];
        assert_eq!(bytes, &expected[..]);
        assert_eq!(wire::decode::<TrapMsg>(bytes), Ok(mmio()));
    }

    #[test]
    fn each_kind_has_its_length() {
        let cases = [
            (Trap::Hvc { imm: 0x1234, args: [1, 2, 3, u32::MAX] }, 18),
            (Trap::Smc { args: [0x8400_0003, 1, 2, 3] }, 16),
            (mmio().trap, 24),
            (Trap::DataAbortNoSyndrome { ipa: 1 << 39, far: 4, write: false }, 13),
            (Trap::PrefetchAbort { ipa: 0xff_ffff_f000, far: 8 }, 12),
            (Trap::Cp15(Cp15Access { opc1: 1, crn: 2, crm: 3, opc2: 4, write: true, rt: 14, value: u32::MAX }), 10),
            (Trap::Cp15Wide(Cp15WideAccess { opc1: 2, crm: 14, write: true, rt: 4, rt2: 5, value: u64::MAX }), 13),
            (Trap::Wfi, 0),
            (Trap::Wfe, 0),
            (Trap::Irq { intid: 1023 }, 2),
            (Trap::HypTimer, 0),
            (Trap::Unknown { hsr: 0xfe00_0000 }, 4),
        ];
        // One case of each kind, in declaration order: the kinds are 0 up
        // to `Trap::KINDS`.
        // heapless: the crate's tests build without `std` too.
        let kinds: heapless::Vec<u8, 32> = cases.iter().map(|(trap, _)| trap.kind()).collect();
        assert_eq!(kinds, (0..Trap::KINDS as u8).collect::<heapless::Vec<u8, 32>>());
        for (trap, payload) in cases {
            let mut layout_buf = [0u8; layout::MAX_LEN];
            let len = layout::encode(&msg(trap), &mut layout_buf);
            assert_eq!(len, 10 + payload, "{trap:?}");
            let mut buf = [0u8; layout::MAX_LEN + 1];
            buf[..len].copy_from_slice(&layout_buf[..len]);
            assert_eq!(layout::decode(&buf[..len]), Some(msg(trap)), "{trap:?}");
            // One byte less or more is not a trap message.
            assert_eq!(layout::decode(&buf[..len - 1]), None, "{trap:?}");
            assert_eq!(layout::decode(&buf[..len + 1]), None, "{trap:?}");
        }
    }

    #[test]
    fn human_readable_formats_see_the_fields() {
        let json = serde_json::to_string(&mmio()).unwrap();
        assert!(json.starts_with(r#"{"vcpu":1,"trap":{"Mmio":{"ipa":150994944,"#), "{json}");
        assert!(json.ends_with(r#""pc":3222309444,"cpsr":1610613139}"#), "{json}");
        assert_eq!(serde_json::from_str::<TrapMsg>(&json).unwrap(), mmio());
    }

    #[test]
    fn bytes_out_of_range_do_not_decode() {
        let mut buf = [0u8; layout::MAX_LEN];
        let len = layout::encode(&mmio(), &mut buf);
        let bad = |at: usize, byte: u8| {
            let mut bytes = buf;
            bytes[at] = byte;
            layout::decode(&bytes[..len])
        };
        assert_eq!(bad(1, 12), None, "kind beyond the last");
        assert_eq!(bad(22, 4), None, "access size beyond Double");
        assert_eq!(bad(23, 2), None, "write flag neither 0 nor 1");
        assert_eq!(bad(33, 0xff), None, "sign-extend flag neither 0 nor 1");
        assert!(bad(22, 3).is_some(), "Double is a size");
        // Through the wire format, such bytes are a malformed message.
        let mut wire_buf = [0u8; 64];
        let encoded = wire::encode(&mmio(), &mut wire_buf).unwrap();
        encoded[2] = 99;
        assert!(matches!(wire::decode::<TrapMsg>(encoded), Err(WireError::Malformed(_))));
        assert!(layout::decode(&[]).is_none());
    }
}
