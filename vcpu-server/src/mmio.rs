//! The MMIO bus: emulated devices by guest address, and the emulation of a
//! trapped load or store against them.
//!
//! The monitor reports a data abort on an address outside guest RAM with a
//! valid instruction syndrome as an [`MmioAccess`] (the vGIC server gets the
//! distributor's). The bus finds the device whose region holds the whole
//! access and hands it the offset; the device answers with a value or a typed
//! [`AccessError`], and may add effects (console output, interrupt line
//! changes, console flow control) to the reply. An access that no device
//! takes, or that a device refuses, is answered as the bus of a real system
//! would: an external data abort on the faulting address.

use heapless::Vec;
use ipc::action::ReplyFull;
use ipc::{AccessSize, Action, DeviceRegion, GuestReg, MmioAccess, Reply, ServerError};
use log::warn;
use serde::{Deserialize, Serialize};

use crate::pl011::Pl011;

/// The most devices the bus holds.
pub const MAX_DEVICES: usize = 4;

/// The highest register a load can write: R15 is the PC, which an emulated
/// load does not set (the guest gets an abort instead).
const MAX_LOAD_GPR: u8 = 14;

/// Why a device refused an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessError {
    /// The device has no registers of this width.
    Size(AccessSize),
    /// The address is not a multiple of the access width.
    Unaligned {
        /// Offset into the device.
        offset: u64,
        /// The access width.
        size: AccessSize,
    },
    /// The reply has no room for the access's effects (a bug: replies are
    /// sized for the most any access causes).
    ReplyFull,
}

impl From<ReplyFull> for AccessError {
    fn from(_: ReplyFull) -> Self {
        AccessError::ReplyFull
    }
}

/// An emulated device on the MMIO bus.
pub trait MmioDevice {
    /// A load of `size` at `offset` into the device: the value (in the low
    /// bits), with any effects of the read appended to `effects`.
    fn read(&mut self, offset: u64, size: AccessSize, effects: &mut Reply) -> Result<u64, AccessError>;

    /// A store of `value` (its low `size` bits) at `offset` into the device,
    /// with its effects appended to `effects`.
    fn write(&mut self, offset: u64, size: AccessSize, value: u64, effects: &mut Reply) -> Result<(), AccessError>;
}

/// The devices the bus can hold (an enum rather than trait objects, so that
/// the bus is plain serializable state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    /// The console UART.
    Pl011(Pl011),
}

impl Device {
    /// The device as the VM's console, if it is one.
    pub fn as_console(&mut self) -> Option<&mut Pl011> {
        match self {
            Device::Pl011(d) => Some(d),
        }
    }
}

impl MmioDevice for Device {
    fn read(&mut self, offset: u64, size: AccessSize, effects: &mut Reply) -> Result<u64, AccessError> {
        match self {
            Device::Pl011(d) => d.read(offset, size, effects),
        }
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64, effects: &mut Reply) -> Result<(), AccessError> {
        match self {
            Device::Pl011(d) => d.write(offset, size, value, effects),
        }
    }
}

/// A device and where the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The guest-physical window.
    pub region: DeviceRegion,
    /// The device.
    pub device: Device,
}

/// Why the bus did not carry out an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BusError {
    /// No device's region holds the whole access.
    NoDevice {
        /// The address accessed.
        ipa: u64,
    },
    /// The device refused it.
    Device(AccessError),
}

/// Why a device could not be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttachError {
    /// The region is empty or overlaps a device already on the bus.
    Overlap,
    /// The bus already holds [`MAX_DEVICES`].
    Full,
}

/// The bus: devices by region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioBus {
    slots: Vec<Slot, MAX_DEVICES>,
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `device` at `region`.
    pub fn attach(&mut self, region: DeviceRegion, device: Device) -> Result<(), AttachError> {
        let end = region.base.checked_add(region.size).ok_or(AttachError::Overlap)?;
        if region.size == 0 || self.slots.iter().any(|s| s.region.base < end && region.base < s.region.end()) {
            return Err(AttachError::Overlap);
        }
        self.slots.push(Slot { region, device }).map_err(|_| AttachError::Full)
    }

    /// The slot whose region holds `[ipa, ipa + size)`, with the offset.
    fn route(&mut self, ipa: u64, size: AccessSize) -> Result<(&mut Device, u64), BusError> {
        let bytes = u64::from(size.bytes());
        for s in self.slots.iter_mut() {
            // `[ipa, ipa + bytes)` inside the region, in two subtractions:
            // an `ipa` below the base wraps to an offset past any region's
            // size. (A bounds check with saturating and checked additions
            // was some thirty instructions of each console byte in 32-bit
            // code.)
            let offset = ipa.wrapping_sub(s.region.base);
            if offset < s.region.size && bytes <= s.region.size - offset {
                return Ok((&mut s.device, offset));
            }
        }
        Err(BusError::NoDevice { ipa })
    }

    /// A load from `ipa`.
    pub fn read(&mut self, ipa: u64, size: AccessSize, effects: &mut Reply) -> Result<u64, BusError> {
        let (device, offset) = self.route(ipa, size)?;
        device.read(offset, size, effects).map_err(BusError::Device)
    }

    /// A store to `ipa`.
    pub fn write(&mut self, ipa: u64, size: AccessSize, value: u64, effects: &mut Reply) -> Result<(), BusError> {
        let (device, offset) = self.route(ipa, size)?;
        device.write(offset, size, value, effects).map_err(BusError::Device)
    }

    /// The console UART, if the bus has one.
    pub fn console(&mut self) -> Option<&mut Pl011> {
        self.slots.iter_mut().find_map(|s| s.device.as_console())
    }

    /// Emulate a trapped load or store: the reply sets the load's register
    /// and steps past the instruction, or injects an external data abort
    /// (without stepping) when nothing takes the access. `reply` is the
    /// request's whole reply (it comes empty, and an abort empties it again:
    /// the effects of an access that failed are not carried out).
    pub fn emulate(&mut self, access: &MmioAccess, reply: &mut Reply) -> Result<(), ServerError> {
        let abort = |reply: &mut Reply| {
            reply.clear();
            Ok(reply.push(Action::InjectDataAbort { far: access.far })?)
        };
        // AArch32 loads fill one 32-bit register; a 64-bit access never
        // carries a syndrome on ARMv7, and R15 cannot be loaded here.
        if !access.write && (access.size == AccessSize::Double || access.rt > MAX_LOAD_GPR) {
            warn!("mmio: load of {:?} into r{} at {:#x} cannot be emulated", access.size, access.rt, access.ipa);
            return abort(reply);
        }
        let result = if access.write {
            self.write(access.ipa, access.size, access.value, reply).map(|()| None)
        } else {
            self.read(access.ipa, access.size, reply).map(Some)
        };
        match result {
            Ok(loaded) => {
                if let Some(raw) = loaded {
                    let value = load_value(raw, access.size, access.sign_extend);
                    reply.push(Action::SetReg { reg: GuestReg::Gpr(access.rt), value })?;
                }
                Ok(reply.push(Action::AdvancePc)?)
            }
            Err(BusError::Device(AccessError::ReplyFull)) => Err(ServerError::ReplyFull),
            Err(e) => {
                warn!(
                    "mmio: {} of {:?} at {:#x} (va {:#x}): {e:?}; injecting a data abort",
                    if access.write { "store" } else { "load" },
                    access.size,
                    access.ipa,
                    access.far
                );
                abort(reply)
            }
        }
    }
}

/// The register value of a load: the low `size` bits of `raw`, sign-extended
/// to 32 bits for LDRSB/LDRSH.
pub fn load_value(raw: u64, size: AccessSize, sign_extend: bool) -> u32 {
    let value = raw & size.mask();
    match (size, sign_extend) {
        (AccessSize::Byte, true) => i32::from(value as u8 as i8) as u32,
        (AccessSize::Half, true) => i32::from(value as u16 as i16) as u32,
        _ => value as u32,
    }
}

/// Region arithmetic the bus needs.
trait RegionEnd {
    /// The first address after the region (saturating).
    fn end(&self) -> u64;
}

impl RegionEnd for DeviceRegion {
    fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

#[cfg(test)]
mod tests {
    fn emulate(b: &mut MmioBus, a: &MmioAccess) -> Result<Reply, ServerError> {
        let mut reply = Reply::none();
        b.emulate(a, &mut reply).map(|()| reply)
    }
    use super::*;
    use crate::pl011::{self, offset};
    use ipc::IntId;

    const UART: DeviceRegion = DeviceRegion { base: 0x0900_0000, size: 0x1000 };

    fn bus() -> MmioBus {
        let mut bus = MmioBus::new();
        bus.attach(UART, Device::Pl011(Pl011::new(IntId(33)))).expect("attach");
        bus.console().expect("uart").report_room(&mut Reply::none(), true).expect("room");
        bus
    }

    fn access(ipa: u64, size: AccessSize, write: bool, value: u64) -> MmioAccess {
        MmioAccess { ipa, far: 0xC000_0000 | (ipa as u32 & 0xFFF), size, write, value, rt: 3, sign_extend: false }
    }

    #[test]
    fn routes_by_region() {
        let mut b = bus();
        let r = emulate(&mut b, &access(UART.base + offset::PERIPH_ID0, AccessSize::Word, false, 0)).expect("reply");
        assert_eq!(
            r.actions.to_vec().as_slice(),
            [Action::SetReg { reg: GuestReg::Gpr(3), value: u32::from(pl011::ID[0]) }, Action::AdvancePc]
        );
        let r = emulate(&mut b, &access(UART.base, AccessSize::Byte, true, u64::from(b'!'))).expect("reply");
        assert_eq!(r.actions.to_vec().as_slice(), [Action::console(b"!"), Action::AdvancePc]);
        // The region's last word is inside it.
        let last = UART.base + UART.size - 4;
        let r = emulate(&mut b, &access(last, AccessSize::Word, false, 0)).expect("reply");
        assert_eq!(r.actions.last(), Some(Action::AdvancePc), "{:?}", r.actions);
    }

    #[test]
    fn no_device_aborts_without_advancing() {
        let mut b = bus();
        for ipa in [0x0800_0000, UART.base - 4, UART.base + UART.size, 0xFFFF_FFFF_FFFF_FFFF] {
            let a = access(ipa, AccessSize::Word, false, 0);
            let r = emulate(&mut b, &a).expect("reply");
            assert_eq!(r.actions.to_vec().as_slice(), [Action::InjectDataAbort { far: a.far }], "ipa {ipa:#x}");
        }
        // An access that starts inside but ends outside the region.
        let a = access(UART.base + UART.size - 2, AccessSize::Word, true, 0);
        assert_eq!(
            emulate(&mut b, &a).expect("reply").actions.to_vec().as_slice(),
            [Action::InjectDataAbort { far: a.far }]
        );
    }

    #[test]
    fn device_refusal_aborts() {
        let mut b = bus();
        let a = access(UART.base + offset::CR + 1, AccessSize::Half, false, 0);
        assert_eq!(
            emulate(&mut b, &a).expect("reply").actions.to_vec().as_slice(),
            [Action::InjectDataAbort { far: a.far }]
        );
        let a = access(UART.base + offset::CR, AccessSize::Double, true, 0);
        assert_eq!(
            emulate(&mut b, &a).expect("reply").actions.to_vec().as_slice(),
            [Action::InjectDataAbort { far: a.far }]
        );
    }

    #[test]
    fn load_into_pc_aborts_without_side_effects() {
        let mut b = bus();
        b.console().expect("uart").console_input(b"q", &mut Reply::none()).expect("input");
        let mut a = access(UART.base + offset::DR, AccessSize::Word, false, 0);
        a.rt = 15;
        assert_eq!(
            emulate(&mut b, &a).expect("reply").actions.to_vec().as_slice(),
            [Action::InjectDataAbort { far: a.far }]
        );
        // The character is still there.
        a.rt = 0;
        let r = emulate(&mut b, &a).expect("reply");
        assert!(r.actions.contains(&Action::SetReg { reg: GuestReg::Gpr(0), value: u32::from(b'q') }));
    }

    #[test]
    fn loads_are_masked_or_sign_extended() {
        assert_eq!(load_value(0x1234_5680, AccessSize::Byte, false), 0x80);
        assert_eq!(load_value(0x1234_5680, AccessSize::Byte, true), 0xFFFF_FF80);
        assert_eq!(load_value(0x1234_8001, AccessSize::Half, true), 0xFFFF_8001);
        assert_eq!(load_value(0x1234_7001, AccessSize::Half, true), 0x7001);
        assert_eq!(load_value(0x1_8000_0000, AccessSize::Word, true), 0x8000_0000);
        // Through the bus: LDRSB of PeriphID3's neighbour PCellID3 (0xb1).
        let mut b = bus();
        let mut a = access(UART.base + offset::PCELL_ID0 + 12, AccessSize::Byte, false, 0);
        a.sign_extend = true;
        let r = emulate(&mut b, &a).expect("reply");
        assert_eq!(r.actions.to_vec()[0], Action::SetReg { reg: GuestReg::Gpr(3), value: 0xFFFF_FFB1 });
    }

    #[test]
    fn attach_rejects_overlap_and_overflow() {
        let mut b = bus();
        let overlapping = DeviceRegion { base: UART.base + 0x800, size: 0x1000 };
        assert_eq!(b.attach(overlapping, Device::Pl011(Pl011::new(IntId(34)))), Err(AttachError::Overlap));
        let wrapping = DeviceRegion { base: u64::MAX - 10, size: 0x1000 };
        assert_eq!(b.attach(wrapping, Device::Pl011(Pl011::new(IntId(34)))), Err(AttachError::Overlap));
        for i in 1..MAX_DEVICES as u64 {
            let r = DeviceRegion { base: 0x1000_0000 * i, size: 0x1000 };
            b.attach(r, Device::Pl011(Pl011::new(IntId(34)))).expect("room");
        }
        let r = DeviceRegion { base: 0x7000_0000, size: 0x1000 };
        assert_eq!(b.attach(r, Device::Pl011(Pl011::new(IntId(34)))), Err(AttachError::Full));
    }
}
