//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogLevel;

/// The most guest RAM: the guest's RAM starts at QEMU's RAM base (1 GiB on
/// `virt`) and must end below 4 GiB for a 32-bit guest without LPAE.
pub const MAX_MEM_MIB: u64 = 3072;

const EXIT_STATUS: &str = "\
Exit status:
  0    the guest powered off (PSCI SYSTEM_OFF)
  1    an error before the VM started (one line says which), or QEMU failed
       or was killed by a signal
  2    wrong usage
  3    the guest asked for a reset and --no-reboot was given (without it
       the VM restarts from the same images)
  4    the monitor stopped on a fault (see its log)
  5    the monitor refused the VM configuration
  124  --timeout elapsed and the VM was stopped
  130  interrupted (SIGINT, e.g. Ctrl-C); 143: terminated (SIGTERM)

The guest's console is standard input and output; the monitor's log goes to
standard error.";

/// splitvisor: boot ARMv7 guests on a microkernel-style hypervisor under QEMU.
#[derive(Debug, Parser)]
#[command(name = "splitvisor", version, about, propagate_version = true)]
pub struct Cli {
    /// How much splitvisor and the monitor log.
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info, value_name = "LEVEL")]
    pub log_level: LogLevel,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest: build (or take) the monitor, place the guest's images,
    /// device tree and configuration in memory, and start QEMU.
    #[command(after_help = EXIT_STATUS)]
    Run(RunArgs),
    /// Write the guest device tree that `run` would generate.
    Dtb(DtbArgs),
}

/// What describes a guest, for `run` and `dtb`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// An initial RAM disk (a cpio archive, gzip-compressed or not), placed
    /// as QEMU's -initrd places it.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the device tree's /chosen/bootargs).
    #[arg(long, value_name = "STR", default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs (1 to 8).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=ipc::MAX_VCPUS as i64))]
    pub smp: u8,
    /// Guest RAM in MiB (a multiple of 2, at most 3072).
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = parse_mem)]
    pub mem: u64,
    /// The QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-arm")]
    pub qemu: PathBuf,
}

/// `splitvisor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The guest kernel: an ARM ELF (loaded by its program headers), a
    /// Linux zImage or a raw binary (loaded and entered at RAM base +
    /// 0x10000), as qemu-system-arm -kernel takes it.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// The guest description.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Use this device tree instead of the generated one (its /memory,
    /// bootargs and initrd bounds are set as QEMU's -dtb sets them).
    #[arg(long, value_name = "PATH")]
    pub dtb: Option<PathBuf>,
    /// Stop the VM after this many seconds, counted across restarts (exit
    /// status 124).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Exit with status 3 when the guest resets instead of restarting it.
    #[arg(long)]
    pub no_reboot: bool,
    /// Use this monitor ELF instead of building el2-monitor with cargo.
    #[arg(long, value_name = "PATH")]
    pub monitor: Option<PathBuf>,
}

/// `splitvisor dtb`.
#[derive(Debug, Args)]
pub struct DtbArgs {
    /// Place the initrd and the device tree as for this kernel (as `run`
    /// would); without it they go where they would for a small kernel.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The guest description.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Where to write the device tree blob.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    let mib: u64 = s.parse().map_err(|_| format!("{s:?} is not a number of MiB"))?;
    if !(2..=MAX_MEM_MIB).contains(&mib) || !mib.is_multiple_of(2) {
        return Err(format!("{mib} MiB: guest RAM must be a multiple of 2 MiB from 2 to {MAX_MEM_MIB}"));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("splitvisor").chain(args.iter().copied()))
    }

    #[test]
    fn run_with_everything() {
        let cli = parse(&[
            "run",
            "--kernel",
            "k",
            "--initrd",
            "i",
            "--cmdline",
            "console=ttyAMA0",
            "--dtb",
            "d",
            "--smp",
            "4",
            "--mem",
            "512",
            "--timeout",
            "30",
            "--no-reboot",
            "--monitor",
            "m",
            "--log-level",
            "debug",
            "--qemu",
            "q",
        ])
        .unwrap();
        assert_eq!(cli.log_level, LogLevel::Debug);
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.kernel, PathBuf::from("k"));
        assert_eq!(r.guest.initrd, Some(PathBuf::from("i")));
        assert_eq!(r.guest.cmdline, "console=ttyAMA0");
        assert_eq!(r.dtb, Some(PathBuf::from("d")));
        assert_eq!((r.guest.smp, r.guest.mem, r.timeout), (4, 512, Some(30)));
        assert!(r.no_reboot);
        assert_eq!(r.monitor, Some(PathBuf::from("m")));
        assert_eq!(r.guest.qemu, PathBuf::from("q"));
    }

    #[test]
    fn defaults() {
        let Command::Run(r) = parse(&["run", "--kernel", "k"]).unwrap().command else { panic!() };
        assert_eq!((r.guest.smp, r.guest.mem, r.timeout, r.no_reboot), (1, 256, None, false));
        assert_eq!(r.guest.cmdline, "");
        assert_eq!(r.guest.qemu, PathBuf::from("qemu-system-arm"));
        assert_eq!(parse(&["run", "--kernel", "k"]).unwrap().log_level, LogLevel::Info);
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["run"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["run", "--kernel", "k", "--smp", "9"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--smp", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "3"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "4096"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "lots"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--timeout", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--log-level", "loud"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["run", "--kernel", "k", "--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["dtb"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&[]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        // Usage errors exit 2.
        assert_eq!(parse(&["run"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn dtb_command() {
        let cli = parse(&["dtb", "--smp", "2", "--mem", "128", "--cmdline", "x", "-o", "out.dtb"]).unwrap();
        let Command::Dtb(d) = cli.command else { panic!() };
        assert_eq!((d.guest.smp, d.guest.mem), (2, 128));
        assert_eq!(d.output, PathBuf::from("out.dtb"));
        assert_eq!(d.kernel, None);
    }

    #[test]
    fn help_documents_exit_statuses() {
        let err = parse(&["run", "--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.to_string();
        for needle in ["124", "--no-reboot", "monitor refused", "powered off"] {
            assert!(help.contains(needle), "{needle} missing from run --help");
        }
    }

    #[test]
    fn clap_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
