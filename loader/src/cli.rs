//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use ipc::fault::Injection;

use crate::config::LogLevel;
use crate::isolate::{FaultPolicy, Isolation};

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
  6    a server failed a message twice and --on-server-fault stop was given
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
    #[command(after_help = REPLAY_HELP)]
    Replay(ReplayArgs),
    /// Serve one server on standard input and output for the supervisor of
    /// `replay --isolate process` (internal).
    #[command(hide = true)]
    Serve {
        /// vcpu, vgic or vtimer.
        #[arg(value_name = "SERVER")]
        server: ipc::ServerId,
        /// The generation of this instance (carried in every frame).
        #[arg(long, default_value_t = 0)]
        generation: u32,
        /// A fault to carry out (SERVER:KIND@TRIGGER[:repeat]).
        #[arg(long = "inject", value_name = "SPEC")]
        inject: Vec<Injection>,
    },
    /// Measure the message path in instructions: the `bench` test guest
    /// under `run --icount`, with the insn-count QEMU plugin saying which
    /// instructions were the monitor's and each server's, one VM per item;
    /// prints a table and writes it as JSON.
    Bench(BenchArgs),
}

/// An `--inject` spec (every kind is carried out by the monitor).
fn run_injection(spec: &str) -> Result<Injection, String> {
    spec.parse().map_err(|e: ipc::fault::ParseInjectionError| format!("{e}"))
}

/// What the guest's WFI does (`run --wfi`, `ipc::WfiPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Wfi {
    /// WFI traps to the hypervisor.
    #[default]
    Trap,
    /// WFI runs in the guest.
    Native,
}

impl Wfi {
    /// The policy the VM configuration carries.
    pub fn policy(self) -> ipc::WfiPolicy {
        match self {
            Wfi::Trap => ipc::WfiPolicy::Trap,
            Wfi::Native => ipc::WfiPolicy::Native,
        }
    }

    /// The value `run --wfi` takes.
    pub fn name(self) -> &'static str {
        match self {
            Wfi::Trap => "trap",
            Wfi::Native => "native",
        }
    }
}

/// How the guest's virtual timer interrupt is delivered (`run --vtimer`,
/// `ipc::VtimerDelivery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Vtimer {
    /// Masked for a Linux kernel (a zImage), linked for any other guest.
    #[default]
    Auto,
    /// The timer masked (CNTV_CTL.IMASK) as it fires: one trap a tick, for
    /// guests that clear IMASK each time they re-arm the timer.
    Masked,
    /// Exact: the physical interrupt linked to the virtual one until the
    /// guest's EOI.
    Linked,
}

impl Vtimer {
    /// The delivery the VM configuration carries, for a kernel of `format`.
    ///
    /// Masked delivery is exact only for a guest that clears CNTV_CTL.IMASK
    /// whenever it programs its next deadline. Linux's timer driver does,
    /// every time (`set_next_event` writes the control register with IMASK
    /// clear, and has since the driver's first version), so a Linux zImage
    /// gets it; an ELF or raw guest may re-arm by writing CNTV_CVAL or
    /// CNTV_TVAL alone (this project's `timer` test guest does), and gets
    /// the exact delivery.
    pub fn delivery(self, format: crate::images::KernelFormat) -> ipc::VtimerDelivery {
        match self {
            Vtimer::Auto if format == crate::images::KernelFormat::ZImage => ipc::VtimerDelivery::Masked,
            Vtimer::Auto | Vtimer::Linked => ipc::VtimerDelivery::Linked,
            Vtimer::Masked => ipc::VtimerDelivery::Masked,
        }
    }

    /// The value `run --vtimer` takes.
    pub fn name(self) -> &'static str {
        match self {
            Vtimer::Auto => "auto",
            Vtimer::Masked => "masked",
            Vtimer::Linked => "linked",
        }
    }
}

/// `splitvisor bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Repetitions of each operation in the smaller of an item's two runs
    /// (the larger has twice as many).
    #[arg(long, short = 'n', default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub iterations: u32,
    /// The items to run (default: all): loop, hvc, gicd-read, gicd-write,
    /// ipi, timer, console, console-putc, console-irq.
    #[arg(long = "item", value_name = "ITEM")]
    pub items: Vec<String>,
    /// Where to write the figures as JSON.
    #[arg(long, value_name = "FILE", default_value = "splitvisor-bench.json")]
    pub json: PathBuf,
    /// Seconds each VM run may take.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Measure with the servers uncontained (`run --no-isolation`): the
    /// difference to the default is what isolation costs.
    #[arg(long)]
    pub no_isolation: bool,
    /// Measure with containment but without protection domains
    /// (`run --no-domains`): the difference to the default is what the
    /// domain switch costs.
    #[arg(long, conflicts_with = "no_isolation")]
    pub no_domains: bool,
    /// Measure with every UART access trapping (`run --no-console-image`):
    /// the difference to the default, in the `console-putc` item, is what
    /// the console's read image saves.
    #[arg(long)]
    pub no_console_image: bool,
    /// Measure with the guest's WFI run as POLICY says (`run --wfi`):
    /// with native, the `ipi` and `timer` items' idle vCPU does not trap.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "trap")]
    pub wfi: Wfi,
    /// Measure with the virtual timer delivered as DELIVERY says (`run
    /// --vtimer`; the bench guest is an ELF, so auto means linked): masked,
    /// the `timer` item takes one trap and one message less a tick (the
    /// bench guest clears IMASK as it re-arms, as Linux does).
    #[arg(long, value_enum, value_name = "DELIVERY", default_value = "auto")]
    pub vtimer: Vtimer,
    /// Measure the monitor's `direct-call` build, which calls each server
    /// as a plain function (no containment, checkpoints, reply checks or
    /// traces): the difference to the default is what the message path
    /// costs (issue 8, item 6). Its figures are best kept in their own
    /// --json file, for --against.
    #[arg(long, conflicts_with_all = ["no_isolation", "no_domains"])]
    pub direct_call: bool,
    /// Measure with each server's state checkpointed every N requests
    /// (`run --checkpoint-every`, default 128): the difference shows each
    /// request's share of the checkpoints' copying.
    #[arg(long, value_name = "N", conflicts_with_all = ["no_isolation", "direct_call"],
          value_parser = checkpoint_interval())]
    pub checkpoint_every: Option<u16>,
    /// Compare with the figures of another run (a JSON file written by
    /// --json, typically of --direct-call): print each item's overhead over
    /// them, against issue 8's target for messaging (at most 15 %).
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
    /// Also draw the figures that have a target against the target and the
    /// published anchors of issue 8, as an SVG chart in FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Run nothing: take the figures from FILE (written by an earlier
    /// `--json`), draw `--plot` if given and compare `--against` if given.
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
}

const REPLAY_HELP: &str = "\
With --isolate process, each server runs as its own OS process (`splitvisor`
started again), supervised: a server process that dies (kill -9 included),
hangs past --budget-ms, sends garbage or a reply that fails validation is
restarted from its last checkpoint, the messages since are replayed into it,
and the failed message is retried. Every recovery is reported on standard
error (server, fault, message number, time). A message that fails again is
answered as the monitor would answer the guest (--on-server-fault restart; it
counts as a divergence only if that answer differs from the recorded reply)
or stops the replay (--on-server-fault stop).

--inject SERVER:KIND@N[:repeat] or SERVER:KIND@random:SEED:RATE[:repeat]
(repeatable): SERVER vcpu, vgic or vtimer; KIND panic, wild-write, hang or
bad-reply; N the number of the message to that server in the trace (from 1,
counted on across guest resets); RATE a probability such as 0.01. A fault is transient (it fires on the first delivery
of the message only) unless :repeat is given.

Exit status:
  0  every reply matched (faults, if any, were recovered)
  1  a reply differed from the recorded one (the first is printed), or an error
  2  wrong usage
  4  a server failed again on a retried message with --on-server-fault stop,
     or could not be restored (the report says which, and why)";

/// `splitvisor replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where the servers run: in this process (none) or each in its own
    /// supervised OS process (process).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Isolation::None)]
    pub isolate: Isolation,
    /// With --isolate process: how long a server process may take to answer
    /// one message before it is taken for hung, at most an hour [default:
    /// 1000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub budget_ms: Option<u64>,
    /// With --isolate process: checkpoint each server every N messages to it
    /// [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,
    /// With --isolate process: what to do with a message its server fails on
    /// again after a restart [default: restart].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub on_server_fault: Option<FaultPolicy>,
    /// With --isolate process: inject a fault (repeatable; see below).
    #[arg(long = "inject", value_name = "SPEC")]
    pub inject: Vec<Injection>,
    /// With --isolate process: write each server process's pid to
    /// DIR/SERVER.pid whenever one starts.
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,
}

impl ReplayArgs {
    /// The default time budget of one message.
    pub const BUDGET_MS: u64 = 1000;
    /// The default checkpoint interval.
    pub const CHECKPOINT_EVERY: u64 = 256;

    /// The options that only mean something with `--isolate process`, given
    /// without it: the first one's name.
    pub fn isolation_only_flag(&self) -> Option<&'static str> {
        if self.isolate == Isolation::Process {
            return None;
        }
        [
            (self.budget_ms.is_some(), "--budget-ms"),
            (self.checkpoint_every.is_some(), "--checkpoint-every"),
            (self.on_server_fault.is_some(), "--on-server-fault"),
            (!self.inject.is_empty(), "--inject"),
            (self.pid_dir.is_some(), "--pid-dir"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
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
    /// Pass ARG to QEMU after splitvisor's own arguments (repeatable; one
    /// argument each: `--qemu-arg -d --qemu-arg int`). For debugging and
    /// measuring, e.g. a TCG plugin (`tests/experiments/linux-share`).
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<std::ffi::OsString>,
    /// Record every message to a server and its reply in FILE (see
    /// `splitvisor trace show` and `splitvisor replay`).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Make a server fail (repeatable): SERVER:KIND@N[:repeat] or
    /// SERVER:KIND@random:SEED:RATE[:repeat], SERVER one of vcpu, vgic,
    /// vtimer, KIND one of panic, wild-write, hang, bad-reply. A wild write
    /// stores to the server's own checkpoint in the monitor's memory: its
    /// protection domain stops it, and the monitor checks that nothing
    /// there changed (with --no-domains it lands, and the VM stops with
    /// status 6). A hang is stopped by the server's watchdog (--budget-ms). N counts the
    /// messages to that server from 1. The monitor contains the fault,
    /// restores the server's state and retries the message; with :repeat the
    /// retry fails too and --on-server-fault decides.
    #[arg(long = "inject", value_name = "SPEC", value_parser = run_injection)]
    pub inject: Vec<Injection>,
    /// What the monitor does with a message a server fails on twice:
    /// restart (answer the guest architecturally, restore the server and go
    /// on) or stop (stop the VM, exit status 6).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "restart")]
    pub on_server_fault: FaultPolicy,
    /// Run the servers without containment: no checkpoints, no reply
    /// checks, and a server's panic or fault stops the whole monitor (exit
    /// status 4). For measuring what isolation costs (`splitvisor bench`).
    #[arg(long, conflicts_with_all = ["inject"])]
    pub no_isolation: bool,
    /// Keep containment, checkpoints and reply checks, but run every server
    /// in the monitor's own Hyp translation and stack instead of its own
    /// protection domain: a wild write then lands. For measuring what the
    /// domain switch costs, and to show what domains stop.
    #[arg(long)]
    pub no_domains: bool,
    /// Trap every access to the guest's UART. By default, while the UART's
    /// registers read without side effects (its receive FIFO is empty), the
    /// vCPU server has a read-only image of them mapped at the UART's page,
    /// and the guest's loads there do not trap (Linux reads the flag
    /// register before each byte it prints); stores always trap. For
    /// measuring what the image saves, and for exact trap-path behaviour:
    /// with the image, a load the trap path refuses (a doubleword, or a
    /// misaligned load the guest's own translation lets through) reads the
    /// image instead of taking an external abort.
    #[arg(long)]
    pub no_console_image: bool,
    /// Checkpoint each server's state every N requests it handles (1 to
    /// 1024; default 128). A recovery restores the last checkpoint and
    /// replays the requests since: a longer interval costs each request less
    /// (a checkpoint copies the server's whole state, the vGIC server's 17
    /// KB) and a recovery more.
    #[arg(long, value_name = "N", conflicts_with = "no_isolation",
          value_parser = checkpoint_interval())]
    pub checkpoint_every: Option<u16>,
    /// Stop a server that takes longer than MS milliseconds over one request
    /// (its watchdog; 1 to 2000, default 100): it is restored and the
    /// request retried, as after a crash. A hang is caught between one
    /// budget and one and a half after the request began. Under QEMU a
    /// short budget also stops a server whose CPU's host thread was only
    /// descheduled for that long: a restore and a retry, and should the
    /// retry be stopped too, --on-server-fault decides (with 1 ms, a Debian
    /// boot saw three such stops, each recovered).
    #[arg(long, value_name = "MS", conflicts_with = "no_isolation",
          value_parser = clap::value_parser!(u16).range(
              i64::from(ipc::Containment::MIN_BUDGET_MS)..=i64::from(ipc::Containment::MAX_BUDGET_MS)))]
    pub budget_ms: Option<u16>,
    /// What the guest's WFI does: trap (the vCPU server and then the vGIC
    /// server see the vCPU go idle; the vGIC server folds in the interrupts
    /// the guest finished then, off the path of the next one) or native
    /// (the WFI idles the vCPU's own physical CPU without a trap, as each
    /// vCPU has one; a virtual or physical interrupt wakes it: one trap
    /// less each time a vCPU goes idle).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "trap")]
    pub wfi: Wfi,
    /// How the guest's virtual timer interrupt is delivered: masked (as the
    /// timer fires, the monitor sets its CNTV_CTL.IMASK and deactivates the
    /// physical interrupt, and the virtual one is made pending: one trap a
    /// tick, as Xen does it; the guest reads IMASK set after each timer
    /// interrupt, and its timer stays quiet until it clears IMASK, which
    /// Linux does each time it programs the next event), linked (exact:
    /// the guest's CNTV_CTL is never touched; the physical interrupt stays
    /// active until the guest's EOI of the virtual one, an EOI maintenance
    /// interrupt: one more trap and message a tick), or auto (masked for a
    /// Linux zImage, linked for any other kernel).
    #[arg(long, value_enum, value_name = "DELIVERY", default_value = "auto")]
    pub vtimer: Vtimer,
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

/// `--checkpoint-every`'s values (`run` and `bench`): 1 to
/// `ipc::Containment::MAX_CHECKPOINT_EVERY`.
fn checkpoint_interval() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=i64::from(ipc::Containment::MAX_CHECKPOINT_EVERY))
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
    fn replay_flags() {
        let Command::Replay(r) = parse(&["replay", "t"]).unwrap().command else { panic!() };
        assert_eq!(
            (r.isolate, r.budget_ms, r.checkpoint_every, r.on_server_fault),
            (Isolation::None, None, None, None)
        );
        assert_eq!(r.isolation_only_flag(), None);
        let Command::Replay(r) = parse(&[
            "replay",
            "--isolate",
            "process",
            "--budget-ms",
            "250",
            "--checkpoint-every",
            "16",
            "--on-server-fault",
            "stop",
            "--inject",
            "vgic:panic@3",
            "--inject",
            "vcpu:hang@random:7:0.01:repeat",
            "--pid-dir",
            "pids",
            "t",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!((r.isolate, r.budget_ms, r.checkpoint_every), (Isolation::Process, Some(250), Some(16)));
        assert_eq!(r.on_server_fault, Some(FaultPolicy::Stop));
        let specs: Vec<String> = r.inject.iter().map(|i| i.to_string()).collect();
        assert_eq!(specs, ["vgic:panic@3", "vcpu:hang@random:7:0.01:repeat"]);
        assert_eq!(r.pid_dir, Some(PathBuf::from("pids")));
        assert_eq!(r.isolation_only_flag(), None);
        let Command::Replay(r) = parse(&["replay", "--inject", "vgic:panic@3", "t"]).unwrap().command else { panic!() };
        assert_eq!(r.isolation_only_flag(), Some("--inject"));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["replay", "--inject", "vgic:panic@0", "t"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["replay", "--inject", "gic:panic@1", "t"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["replay", "--isolate", "thread", "t"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["replay", "--budget-ms", "0", "t"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["replay", "--budget-ms", "3600001", "t"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["replay", "--checkpoint-every", "0", "t"]), ErrorKind::ValueValidation);
        let err = parse(&["replay", "--inject", "vgic:explode@1", "t"]).unwrap_err().to_string();
        assert!(err.contains("unknown fault kind"), "{err}");
        let help = parse(&["replay", "--help"]).unwrap_err().to_string();
        assert!(help.contains("--on-server-fault stop") && help.contains("  4  "), "{help}");
    }

    #[test]
    fn containment_options() {
        let Command::Run(r) = parse(&["run", "--checkpoint-every", "1024", "--budget-ms", "2000"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((r.checkpoint_every, r.budget_ms), (Some(1024), Some(2000)));
        let Command::Run(r) = parse(&["run", "--checkpoint-every", "1", "--budget-ms", "1"]).unwrap().command else {
            panic!()
        };
        assert_eq!((r.checkpoint_every, r.budget_ms), (Some(1), Some(1)));
        let Command::Run(r) = parse(&["run"]).unwrap().command else { panic!() };
        assert_eq!((r.checkpoint_every, r.budget_ms), (None, None));
        let Command::Bench(b) = parse(&["bench", "--checkpoint-every", "16"]).unwrap().command else { panic!() };
        assert_eq!(b.checkpoint_every, Some(16));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        for bad in [
            &["run", "--checkpoint-every", "0"][..],
            &["run", "--checkpoint-every", "1025"],
            &["run", "--budget-ms", "0"],
            &["run", "--budget-ms", "2001"],
            &["run", "--budget-ms", "-5"],
            &["bench", "--checkpoint-every", "0"],
        ] {
            let k = kind(bad);
            assert!(matches!(k, ErrorKind::ValueValidation | ErrorKind::UnknownArgument), "{bad:?}: {k:?}");
        }
        // Without containment there is nothing to checkpoint or watch.
        assert_eq!(kind(&["run", "--no-isolation", "--checkpoint-every", "8"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["run", "--no-isolation", "--budget-ms", "8"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["bench", "--direct-call", "--checkpoint-every", "8"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["bench", "--no-isolation", "--checkpoint-every", "8"]), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn clap_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
