//! The VM configuration the loader hands to the monitor at boot.
//!
//! The loader writes it (see [`crate::wire::encode_blob`]) where the monitor
//! image's `__splitvisor_config` symbol says; the monitor validates it before
//! it trusts any of it.

use serde::{Deserialize, Serialize};

use crate::ids::{IntId, MAX_VCPUS};

/// Guest RAM: the intermediate physical window the guest sees, and the
/// physical window that backs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MemWindow {
    /// Guest (intermediate physical) base address.
    pub ipa: u64,
    /// Host physical base address.
    pub pa: u64,
    /// Size in bytes.
    pub size: u64,
}

impl MemWindow {
    /// True when `[ipa, ipa + len)` lies inside the window.
    pub fn contains_ipa(&self, ipa: u64, len: u64) -> bool {
        ipa >= self.ipa && len <= self.size && ipa.checked_add(len).is_some_and(|end| end <= self.ipa + self.size)
    }

    /// The host physical address of `ipa`, if it is inside the window.
    pub fn pa_of(&self, ipa: u64) -> Option<u64> {
        self.contains_ipa(ipa, 1).then(|| ipa - self.ipa + self.pa)
    }
}

/// A guest-visible device region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DeviceRegion {
    /// Guest (intermediate physical) base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl DeviceRegion {
    /// True when `ipa` falls in the region.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.base && ipa - self.base < self.size
    }

    fn overlaps(&self, base: u64, size: u64) -> bool {
        base < self.base.saturating_add(self.size) && self.base < base.saturating_add(size)
    }
}

/// The generic timer's interrupts: the PPIs the guest's device tree lists in
/// its `arm,armv7-timer` node (in the binding's order: secure physical,
/// non-secure physical, virtual, hypervisor), and the host's virtual-timer PPI
/// that the guest's virtual timer interrupt is linked to.
///
/// The loader writes the guest ones into the guest DTB and the same values
/// here, so the guest and the vtimer server agree by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TimerIntids {
    /// The guest's secure physical timer (listed in the DTB; a guest has no
    /// Secure state, so it is never raised).
    pub guest_secure_phys: IntId,
    /// The guest's non-secure physical timer (CNTP_*), emulated by the
    /// vtimer server on the Hyp timer.
    pub guest_phys: IntId,
    /// The guest's virtual timer (CNTV_*), run by the hardware.
    pub guest_virt: IntId,
    /// The guest's hypervisor timer (listed in the DTB; a guest has no Hyp
    /// mode, so it is never raised).
    pub guest_hyp: IntId,
    /// The host's virtual-timer PPI, as the platform DTB gives it: the
    /// physical interrupt behind the guest's virtual timer interrupt (the
    /// `hw` link of the list register).
    pub host_virt: IntId,
}

impl TimerIntids {
    /// The PPIs the Arm Server Base System Architecture recommends and that
    /// QEMU `virt` uses: secure physical 29, non-secure physical 30, virtual
    /// 27, hypervisor 26.
    pub const ARCHITECTED: TimerIntids = TimerIntids {
        guest_secure_phys: IntId(29),
        guest_phys: IntId(30),
        guest_virt: IntId(27),
        guest_hyp: IntId(26),
        host_virt: IntId(27),
    };

    /// The guest's four timer PPIs in the order of the `arm,armv7-timer`
    /// binding's `interrupts` property.
    pub fn guest_dt_order(&self) -> [IntId; 4] {
        [self.guest_secure_phys, self.guest_phys, self.guest_virt, self.guest_hyp]
    }
}

/// The whole description of a VM, as the loader built it from its command
/// line and the guest device tree it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VmConfig {
    /// Number of vCPUs (1 to [`MAX_VCPUS`]).
    pub vcpus: u8,
    /// Guest RAM.
    pub ram: MemWindow,
    /// The boot vCPU's entry point (IPA).
    pub entry: u32,
    /// r0, r1, r2 at entry (Linux: 0, 0xffffffff, DTB address).
    pub boot_regs: [u32; 3],
    /// Where the guest sees the GICv2 distributor (emulated by the vGIC server).
    pub gicd: DeviceRegion,
    /// Where the guest sees the GICv2 CPU interface (backed by GICV).
    pub gicc: DeviceRegion,
    /// Where the guest sees its PL011 (emulated by the vCPU server).
    pub uart: DeviceRegion,
    /// The PL011's interrupt (INTID).
    pub uart_intid: u16,
    /// Number of SPIs the distributor implements (a multiple of 32).
    pub spis: u16,
    /// Monitor log level: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub log_level: u8,
    /// Record every request and reply as trace records on the host link
    /// (`splitvisor run --trace FILE`).
    pub trace: bool,
    /// The generic timer's interrupts (guest DTB and host).
    pub timer: TimerIntids,
    /// Faults to inject into the servers (`splitvisor run --inject`).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::heapless_vec))]
    pub faults: heapless::Vec<crate::fault::Injection, { crate::fault::MAX_INJECTIONS }>,
    /// What to do with a message a server fails on twice.
    pub on_server_fault: crate::fault::OnServerFault,
    /// Contain each request to a server (a panic or fault in it stops only
    /// it), check its reply, and keep what restores its state
    /// (`splitvisor run --no-isolation` turns it off, to measure its cost).
    pub isolation: bool,
    /// With `isolation`, run each server in its own protection domain (its
    /// own Hyp translation, stack and buffers), so that a wild access out
    /// of it faults (`splitvisor run --no-domains` turns it off).
    pub domains: bool,
    /// Let the vCPU server map the console's read image at the UART's first
    /// page, so that the guest's loads of its UART registers do not trap
    /// while they have no side effects (see [`crate::Action::ConsoleImageWord`];
    /// `splitvisor run --no-console-image` turns it off: every UART access
    /// then traps). The UART's region is validated page-aligned, so its
    /// first page holds no other device.
    pub console_image: bool,
    /// Whether the guest's WFI traps ([`WfiPolicy`]; `splitvisor run --wfi`).
    pub wfi: WfiPolicy,
    /// How the guest's virtual timer interrupt is delivered
    /// ([`VtimerDelivery`]; `splitvisor run --vtimer`).
    pub vtimer: VtimerDelivery,
    /// With `isolation`: how often each server's state is checkpointed and
    /// how long one request may take it (`splitvisor run
    /// --checkpoint-every`, `--budget-ms`).
    pub containment: Containment,
}

/// How the monitor contains its servers (with [`VmConfig::isolation`]).
///
/// A checkpoint copies a server's whole state (the vGIC server's is about
/// 17 KB), and a recovery restores the last one and replays the requests
/// handled since: a longer interval makes each request's share of the copy
/// smaller and a recovery longer. A server that runs past its budget is
/// stopped by its watchdog, which ticks every half budget: a hang is caught
/// between one budget and one and a half after the request began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Containment {
    /// Requests a server handles between checkpoints of its state (1 to
    /// [`Containment::MAX_CHECKPOINT_EVERY`]).
    pub checkpoint_every: u16,
    /// How long one request may take a server before its watchdog stops
    /// it, in milliseconds ([`Containment::MIN_BUDGET_MS`] to
    /// [`Containment::MAX_BUDGET_MS`]).
    pub budget_ms: u16,
}

impl Containment {
    /// What `splitvisor run` uses unless told otherwise. (At 128, a
    /// checkpoint is under 100 instructions of each vGIC request, and a
    /// recovery under QEMU takes a few milliseconds.)
    pub const DEFAULT: Containment = Containment { checkpoint_every: 128, budget_ms: 100 };
    /// The longest checkpoint interval: the monitor keeps room for this many
    /// requests per server (64 bytes each) to replay.
    pub const MAX_CHECKPOINT_EVERY: u16 = 1024;
    /// The shortest budget.
    pub const MIN_BUDGET_MS: u16 = 1;
    /// The longest budget: the watchdog measures a request on the low 32
    /// bits of the generic counter, which at 1 GHz (QEMU with `--icount`)
    /// wrap after 4.29 s, and compares spans as signed (below 2.1 s).
    pub const MAX_BUDGET_MS: u16 = 2000;
}

impl Default for Containment {
    fn default() -> Self {
        Containment::DEFAULT
    }
}

/// What a guest's WFI does (`splitvisor run --wfi`).
///
/// Each vCPU has its own physical CPU, so a WFI that does not trap idles
/// that CPU just as the monitor would, and is woken by what would wake the
/// monitor: a physical interrupt (routed to Hyp, so it traps there) or a
/// virtual one in its list registers. What trapping adds is the vGIC
/// server's look at the vCPU as it goes idle (`VgicRequest::Wfi`): the
/// guest's finished interrupts are folded in and its list registers
/// refreshed then, off the path of the next interrupt, and the idle shows
/// in traces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum WfiPolicy {
    /// WFI traps (HCR.TWI) and goes to the vGIC server
    /// ([`crate::VgicRequest::Wfi`]).
    #[default]
    Trap,
    /// WFI runs in the guest (HCR.TWI clear): no trap as a vCPU goes idle.
    /// The vGIC server sees the guest's finished interrupts at the next
    /// request that carries the list registers' status (the refresh for the
    /// next interrupt, or its EOI maintenance).
    Native,
}

/// How the virtual-timer server delivers the guest's virtual timer
/// interrupt (`splitvisor run --vtimer`, whose `auto` picks `Masked` for a
/// Linux zImage and `Linked` for any other kernel).
///
/// The guest programs its virtual timer in hardware, untrapped; when the
/// timer fires, its physical PPI traps to the monitor, which acknowledges it
/// and reports it ([`crate::VtimerRequest::Fired`]). What stops it firing
/// again until the guest has handled it is the choice here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VtimerDelivery {
    /// The monitor sets the timer's CNTV_CTL.IMASK
    /// ([`crate::Action::SetVirtualTimerMask`]), which lowers its output, and
    /// deactivates the physical interrupt at once; the virtual PPI is made
    /// pending by a latch ([`crate::VgicRequest::Pend`]) and needs no EOI
    /// maintenance. One trap a tick, as Xen delivers it. Not exact: the
    /// guest reads IMASK set after each of its timer interrupts, and the
    /// timer stays quiet until the guest clears IMASK again (Linux's
    /// `set_next_event` writes CNTV_CTL with IMASK clear every time; a guest
    /// that re-arms by writing CNTV_CVAL or CNTV_TVAL alone gets no further
    /// interrupt).
    Masked,
    /// Exact: the virtual PPI follows the timer's output as a level backed
    /// by the physical interrupt, which stays active until the guest's EOI
    /// of the virtual one (EOI maintenance, one more trap and message a
    /// tick) and then fires again if the output is still high. The guest's
    /// CNTV_CTL is never touched. The default.
    #[default]
    Linked,
}

/// What is wrong with a [`VmConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ConfigError {
    /// `vcpus` is 0 or above [`MAX_VCPUS`].
    VcpuCount(u8),
    /// RAM is empty, not 2 MiB aligned, or wraps the address space.
    RamWindow,
    /// The entry point or a boot register address lies outside RAM.
    EntryOutsideRam(u32),
    /// A device region is empty, unaligned or overlaps RAM or another device.
    DeviceRegion,
    /// The SPI count is not a multiple of 32 or exceeds the GICv2 limit.
    SpiCount(u16),
    /// The UART's interrupt is not an SPI the distributor implements.
    UartIntid(u16),
    /// A timer interrupt is not a PPI, or two guest timer PPIs coincide.
    TimerIntid(u16),
    /// The checkpoint interval is 0 or above
    /// [`Containment::MAX_CHECKPOINT_EVERY`].
    CheckpointEvery(u16),
    /// The watchdog budget is outside [`Containment::MIN_BUDGET_MS`] to
    /// [`Containment::MAX_BUDGET_MS`].
    Budget(u16),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::VcpuCount(n) => write!(f, "{n} vCPUs (1 to {MAX_VCPUS} supported)"),
            ConfigError::RamWindow => write!(f, "guest RAM window empty, unaligned or wrapping"),
            ConfigError::EntryOutsideRam(a) => write!(f, "entry point {a:#x} outside guest RAM"),
            ConfigError::DeviceRegion => write!(f, "device region empty, unaligned or overlapping"),
            ConfigError::SpiCount(n) => write!(f, "{n} SPIs (multiple of 32, at most 988)"),
            ConfigError::UartIntid(i) => write!(f, "UART interrupt {i} is not an implemented SPI"),
            ConfigError::TimerIntid(i) => {
                write!(f, "timer interrupt {i} is not a PPI or is listed twice")
            }
            ConfigError::CheckpointEvery(n) => {
                write!(f, "a checkpoint every {n} requests (1 to {} supported)", Containment::MAX_CHECKPOINT_EVERY)
            }
            ConfigError::Budget(ms) => write!(
                f,
                "a watchdog budget of {ms} ms ({} to {} ms supported)",
                Containment::MIN_BUDGET_MS,
                Containment::MAX_BUDGET_MS
            ),
        }
    }
}

const TWO_MIB: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// The size of the console's read image: one page, the UART's first.
pub const CONSOLE_IMAGE_SIZE: u64 = PAGE;

impl VmConfig {
    /// A valid configuration laid out like QEMU `virt`'s map (guest RAM
    /// 128 MiB at 1 GiB backed at 1 GiB + 32 MiB, GICD at 0x0800_0000, GICC
    /// at 0x0801_0000, the PL011 at 0x0900_0000 on INTID 33, 64 SPIs, the
    /// architected timer PPIs), for tests, fuzzing and examples: change what
    /// a test is about with struct update syntax. A real VM's configuration
    /// is built by the loader from the platform's own device tree.
    pub fn example(vcpus: u8) -> VmConfig {
        VmConfig {
            vcpus,
            ram: MemWindow { ipa: 0x4000_0000, pa: 0x4200_0000, size: 128 << 20 },
            entry: 0x4000_8000,
            boot_regs: [0, 0xffff_ffff, 0x4800_0000],
            gicd: DeviceRegion { base: 0x0800_0000, size: 0x1_0000 },
            gicc: DeviceRegion { base: 0x0801_0000, size: 0x1_0000 },
            uart: DeviceRegion { base: 0x0900_0000, size: 0x1000 },
            uart_intid: 33,
            spis: 64,
            log_level: 3,
            trace: false,
            timer: TimerIntids::ARCHITECTED,
            faults: heapless::Vec::new(),
            on_server_fault: crate::fault::OnServerFault::Restart,
            isolation: true,
            domains: true,
            console_image: true,
            wfi: WfiPolicy::Trap,
            vtimer: VtimerDelivery::Linked,
            containment: Containment::DEFAULT,
        }
    }

    /// Check everything the monitor relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || usize::from(self.vcpus) > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpus));
        }
        let ram = &self.ram;
        if ram.size == 0
            || ram.ipa % TWO_MIB != 0
            || ram.pa % TWO_MIB != 0
            || ram.size % TWO_MIB != 0
            || ram.ipa.checked_add(ram.size).is_none_or(|e| e > 1 << 32)
            || ram.pa.checked_add(ram.size).is_none_or(|e| e > 1 << 40)
        {
            return Err(ConfigError::RamWindow);
        }
        if !ram.contains_ipa(u64::from(self.entry), 4) {
            return Err(ConfigError::EntryOutsideRam(self.entry));
        }
        let devices = [self.gicd, self.gicc, self.uart];
        for (i, d) in devices.iter().enumerate() {
            if d.size == 0
                || d.base % PAGE != 0
                || d.size % PAGE != 0
                || d.base.checked_add(d.size).is_none_or(|e| e > 1 << 32)
                || d.overlaps(ram.ipa, ram.size)
                || devices[i + 1..].iter().any(|o| o.overlaps(d.base, d.size))
            {
                return Err(ConfigError::DeviceRegion);
            }
        }
        if self.spis % 32 != 0 || self.spis > 988 {
            return Err(ConfigError::SpiCount(self.spis));
        }
        if self.uart_intid < 32 || self.uart_intid >= 32 + self.spis {
            return Err(ConfigError::UartIntid(self.uart_intid));
        }
        let guest = self.timer.guest_dt_order();
        for (i, intid) in guest.iter().chain([&self.timer.host_virt]).enumerate() {
            if !intid.is_ppi() || guest.get(i + 1..).is_some_and(|rest| rest.contains(intid)) {
                return Err(ConfigError::TimerIntid(intid.0));
            }
        }
        let Containment { checkpoint_every, budget_ms } = self.containment;
        if checkpoint_every == 0 || checkpoint_every > Containment::MAX_CHECKPOINT_EVERY {
            return Err(ConfigError::CheckpointEvery(checkpoint_every));
        }
        if !(Containment::MIN_BUDGET_MS..=Containment::MAX_BUDGET_MS).contains(&budget_ms) {
            return Err(ConfigError::Budget(budget_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> VmConfig {
        VmConfig::example(2)
    }

    #[test]
    fn sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn rejects_each_kind_of_error() {
        let mut c = sample();
        c.vcpus = 0;
        assert_eq!(c.validate(), Err(ConfigError::VcpuCount(0)));
        c.vcpus = 9;
        assert_eq!(c.validate(), Err(ConfigError::VcpuCount(9)));

        let mut c = sample();
        c.ram.pa += 4096;
        assert_eq!(c.validate(), Err(ConfigError::RamWindow));
        let mut c = sample();
        c.ram.ipa = 0xFFE0_0000;
        assert_eq!(c.validate(), Err(ConfigError::RamWindow));

        let mut c = sample();
        c.entry = 0x3fff_fffc;
        assert_eq!(c.validate(), Err(ConfigError::EntryOutsideRam(0x3fff_fffc)));
        c.entry = 0x4800_0000;
        assert_eq!(c.validate(), Err(ConfigError::EntryOutsideRam(0x4800_0000)));

        let mut c = sample();
        c.gicc.base = 0x0800_8000;
        assert_eq!(c.validate(), Err(ConfigError::DeviceRegion));
        let mut c = sample();
        c.uart.base = 0x4000_0000;
        assert_eq!(c.validate(), Err(ConfigError::DeviceRegion));

        let mut c = sample();
        c.spis = 33;
        assert_eq!(c.validate(), Err(ConfigError::SpiCount(33)));
        let mut c = sample();
        c.uart_intid = 96;
        assert_eq!(c.validate(), Err(ConfigError::UartIntid(96)));

        let mut c = sample();
        c.timer.guest_phys = IntId(33);
        assert_eq!(c.validate(), Err(ConfigError::TimerIntid(33)));
        let mut c = sample();
        c.timer.host_virt = IntId(15);
        assert_eq!(c.validate(), Err(ConfigError::TimerIntid(15)));
        let mut c = sample();
        c.timer.guest_hyp = IntId(27);
        assert_eq!(c.validate(), Err(ConfigError::TimerIntid(27)));

        let mut c = sample();
        c.containment.checkpoint_every = 0;
        assert_eq!(c.validate(), Err(ConfigError::CheckpointEvery(0)));
        c.containment.checkpoint_every = Containment::MAX_CHECKPOINT_EVERY + 1;
        assert_eq!(c.validate(), Err(ConfigError::CheckpointEvery(1025)));
        let mut c = sample();
        c.containment.budget_ms = 0;
        assert_eq!(c.validate(), Err(ConfigError::Budget(0)));
        c.containment.budget_ms = Containment::MAX_BUDGET_MS + 1;
        assert_eq!(c.validate(), Err(ConfigError::Budget(2001)));
    }

    #[test]
    fn containment_limits_are_accepted() {
        for (checkpoint_every, budget_ms) in
            [(1, Containment::MIN_BUDGET_MS), (Containment::MAX_CHECKPOINT_EVERY, Containment::MAX_BUDGET_MS)]
        {
            let c = VmConfig { containment: Containment { checkpoint_every, budget_ms }, ..sample() };
            assert_eq!(c.validate(), Ok(()), "{checkpoint_every} {budget_ms}");
        }
    }

    #[test]
    fn window_arithmetic() {
        let c = sample();
        assert_eq!(c.ram.pa_of(0x4000_0000), Some(0x4200_0000));
        assert_eq!(c.ram.pa_of(0x47ff_ffff), Some(0x49ff_ffff));
        assert_eq!(c.ram.pa_of(0x4800_0000), None);
        assert!(!c.ram.contains_ipa(0x47ff_fffe, 4));
        assert!(!c.ram.contains_ipa(u64::MAX, 2));
    }
}
