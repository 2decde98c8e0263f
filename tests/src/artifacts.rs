//! Building what the tests run: the test guests (as ELF files, and as raw
//! images for QEMU's Linux boot path) and the `splitvisor` binary.
//!
//! Each is built at most once per test process (a [`OnceLock`]), by a
//! nested `cargo build` into its own directory under
//! `<target>/splitvisor-tests/`. Cargo's own freshness checks make the
//! builds after the first quick.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use object::elf;
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use object::Endianness;

use crate::HarnessError;

/// The bare-metal target of the guests and the monitor.
pub const GUEST_TARGET: &str = "armv7a-none-eabi";
/// Where the guests are linked by default (and entered, as an ELF).
pub const GUEST_ELF_BASE: u64 = 0x4000_8000;
/// Where QEMU `virt` loads a raw `-kernel` image and enters it with the
/// Linux boot protocol: RAM base 0x4000_0000 + 0x10000 (`hw/arm/boot.c`,
/// KERNEL_LOAD_ADDR).
pub const GUEST_RAW_BASE: u64 = 0x4001_0000;
/// Environment variable that overrides the `splitvisor` binary to test
/// (otherwise the harness builds package `loader`).
pub const SPLITVISOR_BIN_ENV: &str = "SPLITVISOR_BIN";
/// Lines of a failed build's standard error kept in the error.
const BUILD_ERROR_LINES: usize = 60;

/// A test guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// `hello`: mode, boot registers, device tree, PSCI.
    Hello,
    /// `escape`: a guest's try at semihosting (must not reach the host).
    Escape,
    /// `abort`: a data abort on an address the VM does not own.
    Abort,
    /// `smp`: PSCI CPU_ON/CPU_OFF/AFFINITY_INFO through the CPU life cycle.
    Smp,
    /// `ipi`: SGIs between CPUs, priorities, active state, the PL011's SPI.
    Ipi,
    /// `timer`: the virtual and physical timers and WFI on every CPU.
    Timer,
    /// `gicd_probe`: the GICv2 distributor register by register.
    GicdProbe,
    /// `uart_image`: the PL011 register by register, loopback included.
    UartImage,
}

impl Guest {
    /// The two single-CPU guests.
    pub const ALL: [Guest; 2] = [Guest::Hello, Guest::Abort];
    /// The SMP guests.
    pub const SMP: [Guest; 4] = [Guest::Smp, Guest::Ipi, Guest::Timer, Guest::GicdProbe];

    /// The binary's name (and the name the guest reports under).
    pub const fn name(self) -> &'static str {
        match self {
            Guest::Hello => "hello",
            Guest::Abort => "abort",
            Guest::Escape => "escape",
            Guest::Smp => "smp",
            Guest::Ipi => "ipi",
            Guest::Timer => "timer",
            Guest::GicdProbe => "gicd_probe",
            Guest::UartImage => "uart_image",
        }
    }
}

/// Paths of the test workspace and of the harness's build directories.
#[derive(Clone, Debug)]
pub struct Harness {
    root: PathBuf,
    work: PathBuf,
}

static GUEST_ELFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static GUEST_RAWS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static SPLITVISOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static MONITOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static INSN_COUNT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static PROFILED_MONITOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

impl Harness {
    /// `target_tmpdir` is `env!("CARGO_TARGET_TMPDIR")` of the integration
    /// test (`<target>/tmp`): the harness works in
    /// `<target>/splitvisor-tests/`, beside it.
    pub fn new(target_tmpdir: &str) -> Self {
        let tmp = Path::new(target_tmpdir);
        let work = tmp.parent().unwrap_or(tmp).join("splitvisor-tests");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Harness { root, work }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The harness's scratch directory (created on demand).
    pub fn scratch(&self) -> Result<PathBuf, HarnessError> {
        let dir = self.work.join("scratch");
        std::fs::create_dir_all(&dir).map_err(|source| HarnessError::Io { path: dir.clone(), source })?;
        Ok(dir)
    }

    /// The cargo target directory that `splitvisor` is built in, and that
    /// the `splitvisor` processes the tests start build the monitor in.
    pub fn splitvisor_target_dir(&self) -> PathBuf {
        self.work.join("splitvisor")
    }

    /// The guest as an ELF linked at 0x4000_8000, as the tests hand it to
    /// `splitvisor run --kernel` and `qemu-system-arm -kernel`.
    pub fn guest_elf(&self, guest: Guest) -> Result<PathBuf, HarnessError> {
        let dir = once(&GUEST_ELFS, || {
            let target_dir = self.work.join("guests");
            self.build_guests(&target_dir, None)?;
            Ok(target_dir.join(GUEST_TARGET).join("release"))
        })?;
        Ok(dir.join(guest.name()))
    }

    /// The guest as a raw image linked at 0x4001_0000: QEMU loads such an
    /// image there and enters it like a Linux kernel, with r2 pointing at
    /// its device tree, so that the guests' device-tree path can be tried
    /// under plain QEMU too.
    pub fn guest_raw(&self, guest: Guest) -> Result<PathBuf, HarnessError> {
        let dir = once(&GUEST_RAWS, || {
            let target_dir = self.work.join("guests-raw");
            self.build_guests(&target_dir, Some(GUEST_RAW_BASE))?;
            let elfs = target_dir.join(GUEST_TARGET).join("release");
            for guest in Guest::ALL.into_iter().chain(Guest::SMP) {
                let elf = elfs.join(guest.name());
                elf_to_raw(&elf, &target_dir.join(format!("{}.bin", guest.name())), GUEST_RAW_BASE)?;
            }
            Ok(target_dir)
        })?;
        Ok(dir.join(format!("{}.bin", guest.name())))
    }

    /// The `splitvisor` binary: `$SPLITVISOR_BIN` if set, otherwise package
    /// `loader` built in release mode into
    /// [`splitvisor_target_dir`](Self::splitvisor_target_dir).
    pub fn splitvisor(&self) -> Result<PathBuf, HarnessError> {
        once(&SPLITVISOR, || {
            if let Some(bin) = std::env::var_os(SPLITVISOR_BIN_ENV).filter(|v| !v.is_empty()) {
                return Ok(PathBuf::from(bin));
            }
            let target_dir = self.splitvisor_target_dir();
            let mut cmd = self.cargo();
            cmd.args(["build", "--release", "-p", "loader", "--bin", "splitvisor", "--target-dir"]).arg(&target_dir);
            run_build("building splitvisor (package loader)", cmd)?;
            Ok(target_dir.join("release").join("splitvisor"))
        })
    }

    /// The monitor, `cargo build --release -p el2-monitor --target
    /// armv7a-none-eabi`, built where the `splitvisor` processes of
    /// [`splitvisor_command`](Self::splitvisor_command) look for it: they
    /// rebuild it themselves if needed, but a failure here is reported as
    /// what it is rather than as a failed run.
    pub fn monitor(&self) -> Result<PathBuf, HarnessError> {
        once(&MONITOR, || {
            let target_dir = self.splitvisor_target_dir();
            self.ensure_target()?;
            let mut cmd = self.cargo();
            cmd.args(["build", "--release", "-p", "el2-monitor", "--target", GUEST_TARGET, "--target-dir"])
                .arg(&target_dir);
            run_build("building the monitor (package el2-monitor)", cmd)?;
            Ok(target_dir.join(GUEST_TARGET).join("release").join("el2-monitor"))
        })
    }

    /// The monitor built with its `profile` feature (counter time per part
    /// in `--stats`), in a target directory of its own beside
    /// [`splitvisor_target_dir`](Self::splitvisor_target_dir), so that it
    /// never replaces [`monitor`](Self::monitor)'s build.
    pub fn profiled_monitor(&self) -> Result<PathBuf, HarnessError> {
        once(&PROFILED_MONITOR, || {
            let target_dir = self.splitvisor_target_dir().with_extension("profile");
            self.ensure_target()?;
            let mut cmd = self.cargo();
            cmd.args(["build", "--release", "-p", "el2-monitor", "--features", "profile", "--target", GUEST_TARGET])
                .arg("--target-dir")
                .arg(&target_dir);
            run_build("building the monitor with its profile feature", cmd)?;
            Ok(target_dir.join(GUEST_TARGET).join("release").join("el2-monitor"))
        })
    }

    /// The `insn-count` QEMU plugin (`tests/insn-count`), built in release
    /// mode into [`splitvisor_target_dir`](Self::splitvisor_target_dir).
    pub fn insn_count_plugin(&self) -> Result<PathBuf, HarnessError> {
        once(&INSN_COUNT, || {
            let target_dir = self.splitvisor_target_dir();
            let mut cmd = self.cargo();
            cmd.args(["build", "--release", "-p", "insn-count", "--target-dir"]).arg(&target_dir);
            run_build("building the insn-count plugin (package insn-count)", cmd)?;
            Ok(target_dir.join("release").join("libinsn_count.so"))
        })
    }

    /// A command running `splitvisor` with `args`, set up as the tests run
    /// it: the monitor it builds goes to the harness's directory (never to
    /// the target directory of the `cargo test` running the tests).
    pub fn splitvisor_command<I, S>(&self, args: I) -> Result<Command, HarnessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(self.splitvisor()?);
        cmd.args(args).env("CARGO_TARGET_DIR", self.splitvisor_target_dir()).current_dir(&self.root);
        Ok(cmd)
    }

    /// `cargo test --lib` of the guests' library on the host (its unit tests
    /// of the device-tree discovery and the mode, fault-status and PSCI
    /// decoding), in the harness's own target directory.
    pub fn guest_library_tests(&self) -> Command {
        let mut cmd = self.cargo();
        cmd.args(["test", "--lib", "--manifest-path"])
            .arg(self.root.join("tests").join("guests").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(self.work.join("guests-host"));
        cmd
    }

    /// The bare-metal target, added by rustup if it is missing (as
    /// `splitvisor run` does).
    fn ensure_target(&self) -> Result<(), HarnessError> {
        loader::setup::ensure_rust_target(&self.root, GUEST_TARGET).map_err(HarnessError::Target)
    }

    /// The cargo that runs the tests (`$CARGO`), in the workspace root, with
    /// the variables that would redirect a nested build removed.
    fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").filter(|c| !c.is_empty()).unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root).env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET");
        cmd
    }

    /// `cargo build --release --target armv7a-none-eabi --manifest-path
    /// tests/guests/Cargo.toml`, linked at `base` (default 0x4000_8000).
    fn build_guests(&self, target_dir: &Path, base: Option<u64>) -> Result<(), HarnessError> {
        self.ensure_target()?;
        let mut cmd = self.cargo();
        cmd.args(["build", "--release", "--target", GUEST_TARGET, "--manifest-path"])
            .arg(self.root.join("tests").join("guests").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match base {
            Some(base) => cmd.env("TEST_GUEST_BASE", format!("{base:#x}")),
            None => cmd.env_remove("TEST_GUEST_BASE"),
        };
        run_build("building the test guests", cmd)
    }
}

/// Runs `init` once per process; later callers get its result (an error as
/// [`HarnessError::Earlier`]).
fn once(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    init: impl FnOnce() -> Result<PathBuf, HarnessError>,
) -> Result<PathBuf, HarnessError> {
    cell.get_or_init(|| init().map_err(|err| err.to_string())).clone().map_err(HarnessError::Earlier)
}

/// Runs a cargo build, keeping the end of its standard error for the error.
fn run_build(what: &str, mut cmd: Command) -> Result<(), HarnessError> {
    let command = format!("{cmd:?}");
    let output =
        cmd.stdin(Stdio::null()).output().map_err(|source| HarnessError::Spawn { program: command.clone(), source })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(BUILD_ERROR_LINES)..].join("\n");
    Err(HarnessError::Build { what: what.into(), command, status: output.status, stderr: tail })
}

/// Writes the loadable bytes of a guest ELF as a flat image starting at
/// `base`, which must be both its lowest load address and its entry point
/// (what QEMU assumes of a raw image).
///
/// Hand-written over `object` because no objcopy ships with the Rust
/// toolchain by default.
pub fn elf_to_raw(elf_path: &Path, out: &Path, base: u64) -> Result<(), HarnessError> {
    let bad = |why: String| HarnessError::BadElf { path: elf_path.into(), why };
    let bytes = std::fs::read(elf_path).map_err(|source| HarnessError::Io { path: elf_path.into(), source })?;
    let file = ElfFile32::<Endianness>::parse(&*bytes).map_err(|err| bad(format!("not a 32-bit ELF: {err}")))?;
    let endian = file.endian();
    let entry = u64::from(file.elf_header().e_entry(endian));
    if entry != base {
        return Err(bad(format!("entry {entry:#x} is not the image base {base:#x}")));
    }
    let mut image = Vec::new();
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let addr = u64::from(ph.p_paddr(endian));
        let data = ph.data(endian, &*bytes).map_err(|()| bad(format!("segment at {addr:#x} lies outside the file")))?;
        let offset = addr
            .checked_sub(base)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| bad(format!("segment at {addr:#x} lies below the base {base:#x}")))?;
        let end = offset + data.len();
        if image.len() < end {
            image.resize(end, 0);
        }
        image[offset..end].copy_from_slice(data);
    }
    if image.is_empty() {
        return Err(bad("no loadable bytes".into()));
    }
    std::fs::write(out, &image).map_err(|source| HarnessError::Io { path: out.into(), source })
}
