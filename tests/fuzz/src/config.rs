//! Valid VM configurations from fuzzer bytes.
//!
//! A fully arbitrary [`VmConfig`] almost never passes
//! [`VmConfig::validate`], and a server is only ever built from a validated
//! one (the monitor checks it first). [`FuzzConfig`] draws each field from a
//! range that is mostly valid and leaves the last word to `validate()`, so
//! the targets explore the whole space of configurations the monitor
//! accepts: 1 to 8 vCPUs, 32 to 960 SPIs, devices and RAM anywhere below
//! 4 GiB, any timer PPIs.

use arbitrary::Arbitrary;
use ipc::{DeviceRegion, IntId, MemWindow, TimerIntids, VmConfig, VtimerDelivery, WfiPolicy, MAX_VCPUS};

const TWO_MIB: u64 = 2 << 20;
const PAGE: u64 = 4096;
/// 4 GiB in 2 MiB units.
const RAM_SLOTS: u64 = 2048;
/// 4 GiB in pages.
const PAGES: u64 = 1 << 20;

/// The fuzzer's choice of a configuration.
#[derive(Clone, Debug, Arbitrary)]
pub struct FuzzConfig {
    vcpus: u8,
    ram_slot: u16,
    ram_slots: u8,
    pa_slot: u16,
    entry_offset: u32,
    boot_regs: [u32; 3],
    gicd_page: u32,
    gicd_big: bool,
    gicc_page: u32,
    uart_page: u32,
    spi_words: u8,
    /// Most VMs have few SPIs, and a small distributor makes every step
    /// cheaper: favour one or two banks.
    many_spis: bool,
    uart_spi: u16,
    log_level: u8,
    trace: bool,
    architected_timer: bool,
    timer_ppis: [u8; 5],
}

impl FuzzConfig {
    /// The configuration, if it is one the monitor would accept.
    pub fn build(&self) -> Option<VmConfig> {
        let ram_size = (1 + u64::from(self.ram_slots % 64)) * TWO_MIB;
        let ram_ipa = u64::from(self.ram_slot) % RAM_SLOTS * TWO_MIB;
        let ram = MemWindow { ipa: ram_ipa, pa: u64::from(self.pa_slot) % RAM_SLOTS * TWO_MIB, size: ram_size };
        let entry = ram_ipa + u64::from(self.entry_offset) % ram_size;
        let banks = if self.many_spis { 30 } else { 2 };
        let spis = 32 * (1 + u16::from(self.spi_words) % banks);
        let timer = if self.architected_timer {
            TimerIntids::ARCHITECTED
        } else {
            let ppi = |n: u8| IntId(16 + u16::from(n % 16));
            let [s, p, v, h, host] = self.timer_ppis;
            TimerIntids {
                guest_secure_phys: ppi(s),
                guest_phys: ppi(p),
                guest_virt: ppi(v),
                guest_hyp: ppi(h),
                host_virt: ppi(host),
            }
        };
        let config = VmConfig {
            vcpus: 1 + self.vcpus % MAX_VCPUS as u8,
            ram,
            entry: u32::try_from(entry & !3).ok()?,
            boot_regs: self.boot_regs,
            gicd: DeviceRegion {
                base: u64::from(self.gicd_page) % PAGES * PAGE,
                size: if self.gicd_big { 0x1_0000 } else { 0x1000 },
            },
            gicc: DeviceRegion { base: u64::from(self.gicc_page) % PAGES * PAGE, size: 0x2000 },
            uart: DeviceRegion { base: u64::from(self.uart_page) % PAGES * PAGE, size: 0x1000 },
            uart_intid: 32 + self.uart_spi % spis,
            spis,
            log_level: self.log_level,
            trace: self.trace,
            timer,
            faults: heapless::Vec::new(),
            on_server_fault: ipc::fault::OnServerFault::Restart,
            isolation: true,
            domains: true,
            // The top bit of `uart_page`, which the UART's base does not use
            // (a page number below 4 GiB has 20 bits): a new field would
            // have shifted every later byte of the corpora's inputs.
            console_image: self.uart_page >> 31 == 0,
            // The top bit of `gicc_page`, for the same reason.
            wfi: if self.gicc_page >> 31 == 0 { WfiPolicy::Trap } else { WfiPolicy::Native },
            // The top bit of `gicd_page`, for the same reason.
            vtimer: if self.gicd_page >> 31 == 0 { VtimerDelivery::Linked } else { VtimerDelivery::Masked },
            // The monitor's alone: no server reads it.
            containment: ipc::Containment::DEFAULT,
        };
        config.validate().ok().map(|()| config)
    }
}

/// The configuration of QEMU `virt` as `splitvisor run` builds it, with
/// `vcpus` vCPUs: a fallback when the fuzzer's choice is invalid, so that no
/// input is wasted.
pub fn qemu_virt(vcpus: u8) -> VmConfig {
    let config = VmConfig {
        ram: MemWindow { ipa: 0x4000_0000, pa: 0x4000_0000, size: 128 << 20 },
        entry: 0x4001_0000,
        spis: 256,
        ..VmConfig::example(1 + vcpus % MAX_VCPUS as u8)
    };
    debug_assert_eq!(config.validate(), Ok(()));
    config
}

impl FuzzConfig {
    /// [`FuzzConfig::build`], or QEMU `virt` when the choice is invalid.
    pub fn build_or_default(&self) -> VmConfig {
        self.build().unwrap_or_else(|| qemu_virt(self.vcpus))
    }
}
