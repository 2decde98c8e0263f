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
  130  stopped from the terminal (Ctrl-a x) or by SIGINT (Ctrl-C when standard
       input is not the terminal); 129: SIGHUP; 143: SIGTERM

Without --kernel, run boots the default guest: Debian's linux-image-armmp
(armhf) kernel with a busybox initramfs, 2 vCPUs, console=ttyAMA0, fetched
with apt on first use into $SPLITVISOR_CACHE, $XDG_CACHE_HOME/splitvisor or
~/.cache/splitvisor (see `splitvisor guest`).

The guest's console is standard input and output; the monitor's log goes to
standard error. On a terminal, keys go to the guest (Ctrl-C too) and
Ctrl-a x stops the VM (Ctrl-a h lists the escapes).";

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
    /// The default guest (Debian's armmp kernel and busybox): fetch it, say
    /// where it is, build its initramfs.
    #[command(subcommand)]
    Guest(GuestCommand),
    /// Read a trace recorded with `run --trace`.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Run the servers on the host from a trace's initial state, feed each
    /// its recorded requests and compare every reply with the recorded one
    /// (exit 0 when all match; 1 with the first divergence).
    Replay {
        /// The trace file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Measure the message path in instructions: the `bench` test guest
    /// under `run --icount` with a profiling monitor, one VM per item; prints
    /// a table and writes it as JSON.
    Bench(BenchArgs),
}

/// `splitvisor bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Repetitions of each operation in the smaller of an item's two runs
    /// (the larger has twice as many).
    #[arg(long, short = 'n', default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub iterations: u32,
    /// The items to run (default: all): loop, hvc, gicd-read, gicd-write,
    /// ipi, timer, console.
    #[arg(long = "item", value_name = "ITEM")]
    pub items: Vec<String>,
    /// Where to write the figures as JSON.
    #[arg(long, value_name = "FILE", default_value = "splitvisor-bench.json")]
    pub json: PathBuf,
    /// Seconds each VM run may take.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `splitvisor trace ...`.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// One line per record, then a summary per server and request kind.
    Show {
        /// The trace file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// JSON lines instead (one record per line, no summary).
        #[arg(long)]
        json: bool,
    },
}

/// `splitvisor guest ...`.
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Fetch the kernel and busybox with apt into the cache (nothing to do
    /// if they are there, unless --refresh).
    Fetch {
        /// Fetch again, replacing the cached files.
        #[arg(long)]
        refresh: bool,
    },
    /// Print where the cached files are (fetched or not).
    Path {
        /// Print only the kernel's path.
        #[arg(long, conflicts_with_all = ["busybox", "dir"])]
        kernel: bool,
        /// Print only busybox's path.
        #[arg(long, conflicts_with = "dir")]
        busybox: bool,
        /// Print only the cache directory.
        #[arg(long)]
        dir: bool,
    },
    /// Write the default guest's initramfs (gzip-compressed newc cpio):
    /// busybox and /init, the default one or your own.
    Initramfs {
        /// Use this file as /init (e.g. a `#!/bin/busybox sh` script).
        #[arg(long, value_name = "FILE")]
        init: Option<PathBuf>,
        /// Where to write it.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// What describes a guest, for `run` and `dtb`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// An initial RAM disk (a cpio archive, gzip-compressed or not), placed
    /// as QEMU's -initrd places it [default: none with --kernel, the
    /// default guest's busybox initramfs without].
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the device tree's /chosen/bootargs)
    /// [default: none with --kernel, "console=ttyAMA0" without].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs, 1 to 8 [default: 1 with --kernel, 2 without].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=ipc::MAX_VCPUS as i64))]
    pub smp: Option<u8>,
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
    /// 0x10000), as qemu-system-arm -kernel takes it. Without it, the
    /// default guest (Debian's armmp kernel) boots.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
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
    /// When the VM stops, print the monitor's counters: traps by kind,
    /// messages by server (the monitor logs them at info level; with a
    /// lower --log-level only that line is let through).
    #[arg(long)]
    pub stats: bool,
    /// Start QEMU's gdb stub on 127.0.0.1:PORT (the whole machine: the
    /// monitor and the guest).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub gdb: Option<u16>,
    /// With --gdb: start with the CPUs stopped until gdb continues them.
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,
    /// Record every message to a server and its reply in FILE (see
    /// `splitvisor trace show` and `splitvisor replay`).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Deterministic timing by instruction count, for measurements: QEMU
    /// runs one instruction per virtual nanosecond on one host thread, the
    /// generic counter ticks at 1 GHz (one tick per instruction), and idle
    /// time is skipped. Much slower than normal running.
    #[arg(long)]
    pub icount: bool,
}

/// `splitvisor dtb`.
#[derive(Debug, Args)]
pub struct DtbArgs {
    /// Place the initrd and the device tree as for this kernel (as `run`
    /// would); without it, the device tree of the default guest (fetched
    /// if needed), as `run` without --kernel would give it.
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
            "--stats",
            "--gdb",
            "1234",
            "--gdb-wait",
        ])
        .unwrap();
        assert_eq!(cli.log_level, LogLevel::Debug);
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.kernel, Some(PathBuf::from("k")));
        assert_eq!(r.guest.initrd, Some(PathBuf::from("i")));
        assert_eq!(r.guest.cmdline.as_deref(), Some("console=ttyAMA0"));
        assert_eq!(r.dtb, Some(PathBuf::from("d")));
        assert_eq!((r.guest.smp, r.guest.mem, r.timeout), (Some(4), 512, Some(30)));
        assert!(r.no_reboot);
        assert_eq!(r.monitor, Some(PathBuf::from("m")));
        assert_eq!(r.guest.qemu, PathBuf::from("q"));
        assert!(r.stats && r.gdb_wait);
        assert_eq!(r.gdb, Some(1234));
    }

    #[test]
    fn defaults() {
        let Command::Run(r) = parse(&["run", "--kernel", "k"]).unwrap().command else { panic!() };
        assert_eq!((r.guest.smp, r.guest.mem, r.timeout, r.no_reboot), (None, 256, None, false));
        assert_eq!(r.guest.cmdline, None);
        assert!(!r.stats && r.gdb.is_none() && !r.gdb_wait);
        // No --kernel: the default guest.
        let Command::Run(r) = parse(&["run"]).unwrap().command else { panic!() };
        assert_eq!(r.kernel, None);
        assert_eq!(r.guest.qemu, PathBuf::from("qemu-system-arm"));
        assert_eq!(parse(&["run", "--kernel", "k"]).unwrap().log_level, LogLevel::Info);
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["run", "--gdb-wait"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["run", "--gdb", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--gdb", "65536"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["guest"]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        assert_eq!(kind(&["guest", "initramfs"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["guest", "path", "--kernel", "--dir"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["run", "--kernel", "k", "--smp", "9"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--smp", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "3"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "4096"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--mem", "lots"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--timeout", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["run", "--kernel", "k", "--log-level", "loud"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["run", "--kernel", "k", "--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["dtb"]), ErrorKind::MissingRequiredArgument, "dtb needs -o");
        assert_eq!(kind(&[]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        // Usage errors exit 2.
        assert_eq!(parse(&["run", "--smp", "0"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn dtb_command() {
        let cli = parse(&["dtb", "--smp", "2", "--mem", "128", "--cmdline", "x", "-o", "out.dtb"]).unwrap();
        let Command::Dtb(d) = cli.command else { panic!() };
        assert_eq!((d.guest.smp, d.guest.mem), (Some(2), 128));
        assert_eq!(d.output, PathBuf::from("out.dtb"));
        assert_eq!(d.kernel, None);
    }

    #[test]
    fn help_documents_exit_statuses() {
        let err = parse(&["run", "--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.to_string();
        for needle in ["124", "--no-reboot", "monitor refused", "powered off", "Ctrl-a x", "linux-image-armmp"] {
            assert!(help.contains(needle), "{needle} missing from run --help");
        }
    }

    #[test]
    fn guest_commands() {
        let Command::Guest(GuestCommand::Fetch { refresh }) = parse(&["guest", "fetch", "--refresh"]).unwrap().command
        else {
            panic!()
        };
        assert!(refresh);
        let Command::Guest(GuestCommand::Path { kernel, busybox, dir }) =
            parse(&["guest", "path", "--busybox"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((kernel, busybox, dir), (false, true, false));
        let Command::Guest(GuestCommand::Initramfs { init, output }) =
            parse(&["guest", "initramfs", "--init", "my-init", "-o", "out.gz"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((init, output), (Some(PathBuf::from("my-init")), PathBuf::from("out.gz")));
    }

    #[test]
    fn clap_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
