//! The VM configuration handed to the monitor: built from the platform, the
//! placed images and the command line, checked with [`VmConfig::validate`]
//! (the monitor checks it again) and encoded as an `ipc` blob.

use ipc::config::{ConfigError, DeviceRegion, MemWindow, TimerIntids, VmConfig};
use ipc::IntId;

use crate::dtb::DtIrq;
use crate::images::Span;
use crate::platform::{guest_gicc, Platform, FIRST_PPI, FIRST_SPI};

/// Linux's boot protocol (Documentation/arm/booting.rst): r1 is the machine
/// type, all ones when a device tree is passed in r2.
pub const MACH_TYPE_DT: u32 = 0xffff_ffff;

/// The monitor's log levels, as `VmConfig::log_level` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    /// Nothing.
    Off = 0,
    /// Errors only.
    Error = 1,
    /// Warnings and errors.
    Warn = 2,
    /// Progress.
    Info = 3,
    /// Every trap and message.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl LogLevel {
    /// The same level for the `log` crate.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Why the configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// A value does not fit its field.
    #[error("VM configuration: {0}")]
    Range(String),
    /// `VmConfig::validate` refused it.
    #[error("VM configuration refused: {0}")]
    Invalid(ConfigError),
    /// It could not be encoded.
    #[error("VM configuration cannot be encoded: {0}")]
    Encode(ipc::WireError),
}

/// What the configuration is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigInputs {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest RAM as the guest sees it.
    pub ram: Span,
    /// Its physical base.
    pub ram_pa: u64,
    /// The boot vCPU's entry point.
    pub entry: u64,
    /// Where the guest device tree is (guest address).
    pub dtb: u64,
    /// The monitor's log level.
    pub log_level: LogLevel,
    /// Record a trace.
    pub trace: bool,
    /// Faults to inject into the servers.
    pub faults: Vec<ipc::fault::Injection>,
    /// What the monitor does with a message a server fails on twice.
    pub on_server_fault: ipc::fault::OnServerFault,
    /// Contain and check every request to a server.
    pub isolation: bool,
    /// Run each server in its own protection domain.
    pub domains: bool,
    /// Let the vCPU server map the console's read image.
    pub console_image: bool,
    /// What the guest's WFI does.
    pub wfi: ipc::WfiPolicy,
    /// How the guest's virtual timer interrupt is delivered.
    pub vtimer: ipc::VtimerDelivery,
    /// The checkpoint interval and the watchdog budget.
    pub containment: ipc::Containment,
}

fn u32_of(value: u64, what: &str) -> Result<u32, VmConfigError> {
    u32::try_from(value).map_err(|_| VmConfigError::Range(format!("{what} {value:#x} is above 4 GiB")))
}

fn spi_intid(irq: DtIrq) -> Result<u16, VmConfigError> {
    irq.number
        .checked_add(FIRST_SPI)
        .and_then(|i| u16::try_from(i).ok())
        .ok_or_else(|| VmConfigError::Range(format!("SPI {} out of range", irq.number)))
}

fn ppi_intid(irq: DtIrq) -> Result<IntId, VmConfigError> {
    irq.number
        .checked_add(FIRST_PPI)
        .and_then(|i| u16::try_from(i).ok())
        .map(IntId)
        .ok_or_else(|| VmConfigError::Range(format!("PPI {} out of range", irq.number)))
}

fn region(span: Span) -> DeviceRegion {
    DeviceRegion { base: span.start, size: span.size }
}

/// Build and validate the configuration.
pub fn build(platform: &Platform, inputs: &ConfigInputs) -> Result<VmConfig, VmConfigError> {
    let [secure, phys, virt, hyp] = platform.timer_ppis;
    let config = VmConfig {
        vcpus: inputs.vcpus,
        ram: MemWindow { ipa: inputs.ram.start, pa: inputs.ram_pa, size: inputs.ram.size },
        entry: u32_of(inputs.entry, "entry point")?,
        boot_regs: [0, MACH_TYPE_DT, u32_of(inputs.dtb, "device tree address")?],
        gicd: region(platform.gicd),
        gicc: region(guest_gicc(platform)),
        uart: region(platform.uart),
        uart_intid: spi_intid(platform.uart_irq)?,
        spis: u16::try_from(platform.spis()).map_err(|_| VmConfigError::Range(format!("{} SPIs", platform.spis())))?,
        log_level: inputs.log_level as u8,
        trace: inputs.trace,
        faults: heapless::Vec::from_slice(&inputs.faults).map_err(|()| {
            VmConfigError::Range(format!("{} --inject (at most {})", inputs.faults.len(), ipc::fault::MAX_INJECTIONS))
        })?,
        on_server_fault: inputs.on_server_fault,
        isolation: inputs.isolation,
        domains: inputs.domains,
        console_image: inputs.console_image,
        wfi: inputs.wfi,
        vtimer: inputs.vtimer,
        containment: inputs.containment,
        // The guest's timer PPIs are the platform's: the guest DTB lists
        // them, and the host's virtual timer is the platform's virtual one.
        timer: TimerIntids {
            guest_secure_phys: ppi_intid(secure)?,
            guest_phys: ppi_intid(phys)?,
            guest_virt: ppi_intid(virt)?,
            guest_hyp: ppi_intid(hyp)?,
            host_virt: ppi_intid(virt)?,
        },
    };
    config.validate().map_err(VmConfigError::Invalid)?;
    Ok(config)
}

/// Encode the configuration as the blob the monitor reads.
pub fn encode(config: &VmConfig) -> Result<Vec<u8>, VmConfigError> {
    let mut buf = vec![0u8; ipc::wire::MAX_BLOB_SIZE];
    let used = ipc::wire::encode_blob(config, &mut buf).map_err(VmConfigError::Encode)?.len();
    buf.truncate(used);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::tests::platform;

    fn inputs() -> ConfigInputs {
        ConfigInputs {
            vcpus: 2,
            ram: Span::new(0x4000_0000, 256 << 20),
            ram_pa: 0x4040_0000,
            entry: 0x4001_0000,
            dtb: 0x4800_0000,
            log_level: LogLevel::Debug,
            trace: false,
            faults: Vec::new(),
            on_server_fault: ipc::fault::OnServerFault::Restart,
            isolation: true,
            domains: true,
            console_image: true,
            wfi: ipc::WfiPolicy::Trap,
            vtimer: ipc::VtimerDelivery::Linked,
            containment: ipc::Containment::DEFAULT,
        }
    }

    #[test]
    fn builds_and_round_trips() {
        let c = build(&platform(), &inputs()).unwrap();
        assert_eq!(c.ram, MemWindow { ipa: 0x4000_0000, pa: 0x4040_0000, size: 256 << 20 });
        assert_eq!(c.boot_regs, [0, 0xffff_ffff, 0x4800_0000]);
        assert_eq!(c.gicd, DeviceRegion { base: 0x0800_0000, size: 0x1000 });
        assert_eq!(c.gicc, DeviceRegion { base: 0x0801_0000, size: 0x2000 });
        assert_eq!(c.uart, DeviceRegion { base: 0x0900_0000, size: 0x1000 });
        assert_eq!(c.uart_intid, 33);
        assert_eq!(c.spis, 256);
        assert_eq!(c.log_level, 4);
        assert_eq!(c.timer, TimerIntids::ARCHITECTED);
        let blob = encode(&c).unwrap();
        assert!(blob.len() <= 4096);
        let back: VmConfig = ipc::wire::decode_blob(&blob).unwrap();
        assert_eq!(back, c);
        // The monitor reads the whole 4 KiB area: trailing zeros are fine.
        let mut area = blob.clone();
        area.resize(4096, 0);
        assert_eq!(ipc::wire::decode_blob::<VmConfig>(&area).unwrap(), c);
    }

    #[test]
    fn refuses_what_validate_refuses() {
        let mut i = inputs();
        i.entry = 0x3000_0000;
        assert!(matches!(build(&platform(), &i), Err(VmConfigError::Invalid(ConfigError::EntryOutsideRam(_)))));
        let mut i = inputs();
        i.vcpus = 9;
        assert!(matches!(build(&platform(), &i), Err(VmConfigError::Invalid(ConfigError::VcpuCount(9)))));
        let mut i = inputs();
        i.ram_pa += 0x1000;
        assert!(matches!(build(&platform(), &i), Err(VmConfigError::Invalid(ConfigError::RamWindow))));
        let mut i = inputs();
        i.dtb = 1 << 33;
        assert!(matches!(build(&platform(), &i), Err(VmConfigError::Range(_))));
    }
}
