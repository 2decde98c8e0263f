//! The monitor image: building it with cargo, and reading from its ELF the
//! two symbols that make the boot contract with the loader.
//!
//! - `__splitvisor_config`: a 4 KiB area, in no loadable segment, where the
//!   loader places the VM configuration blob;
//! - `__splitvisor_end`: the first address after everything the monitor
//!   owns. Guest RAM is backed from the next 2 MiB boundary up.
//!
//! The monitor sits at the bottom of QEMU's RAM and QEMU loads it as its
//! `-kernel` (an ELF, so QEMU enters it at `e_entry` in Hyp mode).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol};

use crate::images::{align_up, Span, EI_CLASS, EI_DATA};

/// The symbol naming the configuration area.
pub const CONFIG_SYMBOL: &str = "__splitvisor_config";
/// The symbol naming the end of the monitor's memory.
pub const END_SYMBOL: &str = "__splitvisor_end";
/// The size of the configuration area.
pub const CONFIG_AREA_SIZE: u64 = ipc::wire::MAX_BLOB_SIZE as u64;
/// Guest RAM's physical base is aligned to this (stage-2 block mappings).
pub const GUEST_RAM_ALIGN: u64 = 2 << 20;
/// The monitor's package and target.
pub const PACKAGE: &str = "el2-monitor";
/// See [`PACKAGE`].
pub const TARGET: &str = "armv7a-none-eabi";

/// What is wrong with the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The file could not be read.
    #[error("cannot read the monitor {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a usable ELF.
    #[error("the monitor {path} is not a 32-bit little-endian ARM ELF executable: {why}")]
    NotArmElf {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A symbol is missing.
    #[error("the monitor {path} has no symbol {symbol} (built from another tree, or stripped?)")]
    MissingSymbol {
        /// The file.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
    },
    /// The image breaks the boot contract.
    #[error("the monitor {path} breaks the boot contract: {why}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The workspace to build it from is not there.
    #[error("cannot build the monitor: no workspace at {0} (pass --monitor PATH)")]
    NoWorkspace(PathBuf),
    /// cargo is not installed.
    #[error("cannot build the monitor: {0} not found (install Rust with rustup, or pass --monitor PATH)")]
    NoCargo(String),
    /// cargo could not be run.
    #[error("cannot build the monitor: running {program}: {source}")]
    Cargo {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The build failed.
    #[error("building the monitor failed ({0}); see cargo's messages above")]
    BuildFailed(std::process::ExitStatus),
}

/// A monitor image and its contract addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorImage {
    /// The ELF file.
    pub path: PathBuf,
    /// What its loadable segments occupy (physical addresses).
    pub segments: Vec<Span>,
    /// The configuration area's address.
    pub config: u64,
    /// The end of the monitor's memory.
    pub end: u64,
}

impl MonitorImage {
    /// Read and parse the monitor at `path`.
    pub fn read(path: &Path) -> Result<MonitorImage, MonitorError> {
        let bytes = std::fs::read(path).map_err(|source| MonitorError::Read { path: path.into(), source })?;
        Self::parse(path, &bytes)
    }

    /// Parse a monitor ELF.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<MonitorImage, MonitorError> {
        let not_arm = |why: &str| MonitorError::NotArmElf { path: path.into(), why: why.into() };
        if !bytes.starts_with(&elf::ELFMAG) {
            return Err(not_arm("no ELF magic"));
        }
        if bytes.get(EI_CLASS) != Some(&elf::ELFCLASS32) {
            return Err(not_arm("not a 32-bit ELF"));
        }
        if bytes.get(EI_DATA) != Some(&elf::ELFDATA2LSB) {
            return Err(not_arm("not little-endian"));
        }
        let file = ElfFile32::<Endianness>::parse(bytes).map_err(|e| not_arm(&e.to_string()))?;
        let endian = file.endian();
        let header = file.elf_header();
        if header.e_machine(endian) != elf::EM_ARM {
            return Err(not_arm(&format!("machine {}", header.e_machine(endian))));
        }
        if header.e_type(endian) != elf::ET_EXEC {
            return Err(not_arm("not an executable"));
        }
        let mut segments = Vec::new();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) != elf::PT_LOAD || ph.p_memsz(endian) == 0 {
                continue;
            }
            if ph.p_vaddr(endian) != ph.p_paddr(endian) {
                return Err(MonitorError::Contract {
                    path: path.into(),
                    why: format!(
                        "a segment is linked at {:#x} but loaded at {:#x}",
                        ph.p_vaddr(endian),
                        ph.p_paddr(endian)
                    ),
                });
            }
            segments.push(Span::new(u64::from(ph.p_paddr(endian)), u64::from(ph.p_memsz(endian))));
        }
        if segments.is_empty() {
            return Err(not_arm("no loadable segment"));
        }
        let symbol = |name: &'static str| {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .ok_or(MonitorError::MissingSymbol { path: path.into(), symbol: name })
        };
        Ok(MonitorImage { path: path.into(), segments, config: symbol(CONFIG_SYMBOL)?, end: symbol(END_SYMBOL)? })
    }

    /// Check the image against QEMU's RAM (at `ram_base`) and the device
    /// tree QEMU itself will place there (`qemu_dtb_size` bytes, at the RAM
    /// base when the image starts at least that far above it, as
    /// `hw/arm/boot.c` does for an ELF).
    pub fn check(&self, ram_base: u64, qemu_dtb_size: u64) -> Result<(), MonitorError> {
        let broken = |why: String| Err(MonitorError::Contract { path: self.path.clone(), why });
        let owned = Span::new(ram_base, self.end.saturating_sub(ram_base));
        if self.end <= ram_base {
            return broken(format!("{END_SYMBOL} ({:#x}) is not above the RAM base {ram_base:#x}", self.end));
        }
        for s in &self.segments {
            if !s.within(&owned) {
                return broken(format!("segment {s} is outside RAM below {END_SYMBOL} ({owned})"));
            }
        }
        let config = Span::new(self.config, CONFIG_AREA_SIZE);
        if !self.config.is_multiple_of(8) || !config.within(&owned) {
            return broken(format!("{CONFIG_SYMBOL} area {config} is unaligned or outside {owned}"));
        }
        if let Some(s) = self.segments.iter().find(|s| s.overlaps(&config)) {
            return broken(format!("{CONFIG_SYMBOL} area {config} overlaps the loadable segment {s}"));
        }
        let low = self.segments.iter().map(|s| s.start).min().unwrap_or(ram_base);
        let qemu_dtb = Span::new(ram_base, qemu_dtb_size);
        if low.saturating_sub(ram_base) >= qemu_dtb_size && config.overlaps(&qemu_dtb) {
            return broken(format!("{CONFIG_SYMBOL} area {config} overlaps QEMU's device tree at {qemu_dtb}"));
        }
        Ok(())
    }

    /// The physical base of guest RAM: the first 2 MiB boundary at or above
    /// the end of the monitor.
    pub fn guest_ram_pa(&self) -> u64 {
        align_up(self.end, GUEST_RAM_ALIGN).unwrap_or(u64::MAX)
    }
}

/// How to build the monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// The cargo program.
    pub cargo: OsString,
    /// The workspace root.
    pub workspace: PathBuf,
    /// Cargo's target directory.
    pub target_dir: PathBuf,
    /// Cargo features of the monitor to turn on (e.g. `profile`).
    pub features: Vec<String>,
}

impl Build {
    /// The workspace this binary was built from, cargo from `$CARGO` (set
    /// under `cargo run`) or the path, and `$CARGO_TARGET_DIR` or the
    /// workspace's `target`.
    pub fn from_env() -> Build {
        let workspace =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .map(|d| std::path::absolute(&d).unwrap_or(d))
            .unwrap_or_else(|| workspace.join("target"));
        let cargo = std::env::var_os("CARGO").filter(|c| !c.is_empty()).unwrap_or_else(|| "cargo".into());
        Build { cargo, workspace, target_dir, features: Vec::new() }
    }

    /// The cargo command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(["build", "--quiet", "--release", "-p", PACKAGE, "--target", TARGET])
            .current_dir(&self.workspace)
            .env("CARGO_TARGET_DIR", &self.target_dir);
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        cmd
    }

    /// Where the build puts the monitor.
    pub fn output(&self) -> PathBuf {
        self.target_dir.join(TARGET).join("release").join(PACKAGE)
    }

    /// Build (cargo's no-op build is quick) and return the image's path.
    pub fn run(&self) -> Result<PathBuf, MonitorError> {
        if !self.workspace.join(PACKAGE).join("Cargo.toml").is_file() {
            return Err(MonitorError::NoWorkspace(self.workspace.clone()));
        }
        log::info!(
            "building the monitor: cargo build --release -p {PACKAGE} --target {TARGET}{} (in {}, target dir {})",
            if self.features.is_empty() { String::new() } else { format!(" --features {}", self.features.join(",")) },
            self.workspace.display(),
            self.target_dir.display()
        );
        if let Err(why) = crate::setup::ensure_rust_target(&self.workspace, TARGET) {
            log::warn!("{why}; building anyway");
        }
        let program = self.cargo.to_string_lossy().into_owned();
        let status = self.command().status().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                MonitorError::NoCargo(program.clone())
            } else {
                MonitorError::Cargo { program: program.clone(), source }
            }
        })?;
        if !status.success() {
            return Err(MonitorError::BuildFailed(status));
        }
        Ok(self.output())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, SymbolFlags, SymbolKind, SymbolScope};

    use crate::images::tests::{make_elf, TestSegment};

    /// A monitor-like executable made with `object::write::elf`: the given
    /// segments and a symbol table with the contract symbols asked for
    /// (absolute symbols, as a linker script defines them).
    fn monitor_elf(config: Option<u32>, end: Option<u32>, segments: &[TestSegment]) -> Vec<u8> {
        use object::write::elf::{FileHeader as H, ProgramHeader as P, Sym, Writer};
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, false, &mut out);
        let names: Vec<(&str, u32)> =
            [(CONFIG_SYMBOL, config), (END_SYMBOL, end)].into_iter().filter_map(|(n, v)| v.map(|v| (n, v))).collect();
        let name_ids: Vec<_> = names.iter().map(|(n, _)| w.add_string(n.as_bytes())).collect();
        w.reserve_file_header();
        w.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<usize> = segments.iter().map(|s| w.reserve(s.data.len(), 4)).collect();
        w.reserve_null_section_index();
        w.reserve_symtab_section_index();
        w.reserve_strtab_section_index();
        w.reserve_shstrtab_section_index();
        w.reserve_null_symbol_index();
        for _ in &names {
            w.reserve_symbol_index(None);
        }
        w.reserve_symtab();
        w.reserve_strtab();
        w.reserve_shstrtab();
        w.reserve_section_headers();
        w.write_file_header(&H {
            os_abi: 0,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: elf::EM_ARM,
            e_entry: u64::from(segments[0].paddr),
            e_flags: 0,
        })
        .unwrap();
        w.write_align_program_headers();
        for (s, off) in segments.iter().zip(&offsets) {
            w.write_program_header(&P {
                p_type: elf::PT_LOAD,
                p_flags: s.flags,
                p_offset: *off as u64,
                p_vaddr: u64::from(s.vaddr),
                p_paddr: u64::from(s.paddr),
                p_filesz: s.data.len() as u64,
                p_memsz: u64::from(s.memsz),
                p_align: 4,
            });
        }
        for (s, off) in segments.iter().zip(&offsets) {
            w.pad_until(*off);
            w.write(&s.data);
        }
        w.write_null_symbol();
        for ((_, value), name) in names.iter().zip(&name_ids) {
            w.write_symbol(&Sym {
                name: Some(*name),
                section: None,
                st_info: (elf::STB_GLOBAL << 4) | elf::STT_NOTYPE,
                st_other: 0,
                st_shndx: elf::SHN_ABS,
                st_value: u64::from(*value),
                st_size: 0,
            });
        }
        w.write_strtab();
        w.write_shstrtab();
        w.write_null_section_header();
        w.write_symtab_section_header(1);
        w.write_strtab_section_header();
        w.write_shstrtab_section_header();
        out
    }

    fn text(paddr: u32, memsz: u32) -> TestSegment {
        TestSegment { paddr, vaddr: paddr, flags: elf::PF_R | elf::PF_X, data: vec![0; 16], memsz }
    }

    const QEMU_DTB: u64 = 1 << 20;

    #[test]
    fn reads_the_contract_symbols() {
        let bytes = monitor_elf(Some(0x4021_0000), Some(0x4021_1000), &[text(0x4020_0000, 0x1_0000)]);
        let m = MonitorImage::parse(Path::new("m.elf"), &bytes).unwrap();
        assert_eq!(m.config, 0x4021_0000);
        assert_eq!(m.end, 0x4021_1000);
        assert_eq!(m.segments, vec![Span::new(0x4020_0000, 0x1_0000)]);
        assert_eq!(m.check(0x4000_0000, QEMU_DTB).map_err(|e| e.to_string()), Ok(()));
        assert_eq!(m.guest_ram_pa(), 0x4040_0000);
    }

    #[test]
    fn missing_symbols_and_wrong_files() {
        let no_cfg = monitor_elf(None, Some(0x4021_1000), &[text(0x4020_0000, 0x1_0000)]);
        let err = MonitorImage::parse(Path::new("m"), &no_cfg).unwrap_err();
        assert!(matches!(err, MonitorError::MissingSymbol { symbol: CONFIG_SYMBOL, .. }));
        let no_end = monitor_elf(Some(0x4021_0000), None, &[text(0x4020_0000, 0x1_0000)]);
        let err = MonitorImage::parse(Path::new("m"), &no_end).unwrap_err();
        assert!(matches!(err, MonitorError::MissingSymbol { symbol: END_SYMBOL, .. }));
        // Stripped: a program-header-only ELF has no symbols at all.
        let stripped = make_elf(elf::EM_ARM, 0x4020_0000, &[text(0x4020_0000, 0x100)]);
        assert!(matches!(MonitorImage::parse(Path::new("m"), &stripped), Err(MonitorError::MissingSymbol { .. })));
        let x86 = make_elf(elf::EM_386, 0x4020_0000, &[text(0x4020_0000, 0x100)]);
        assert!(matches!(MonitorImage::parse(Path::new("m"), &x86), Err(MonitorError::NotArmElf { .. })));
        let mut elf64 = stripped.clone();
        elf64[EI_CLASS] = elf::ELFCLASS64;
        assert!(matches!(MonitorImage::parse(Path::new("m"), &elf64), Err(MonitorError::NotArmElf { .. })));
        assert!(matches!(MonitorImage::parse(Path::new("m"), b"#!/bin/sh\n"), Err(MonitorError::NotArmElf { .. })));
        // An object file built with object::write is not an executable.
        let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Arm, object::Endianness::Little);
        obj.add_symbol(Symbol {
            name: CONFIG_SYMBOL.into(),
            value: 0,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Absolute,
            flags: SymbolFlags::None,
        });
        let rel = obj.write().unwrap();
        assert!(matches!(MonitorImage::parse(Path::new("m"), &rel), Err(MonitorError::NotArmElf { .. })));
    }

    #[test]
    fn contract_checks() {
        let check = |cfg: u32, end: u32, seg: TestSegment| {
            let bytes = monitor_elf(Some(cfg), Some(end), &[seg]);
            MonitorImage::parse(Path::new("m"), &bytes).unwrap().check(0x4000_0000, QEMU_DTB)
        };
        // Config area inside the segment.
        assert!(check(0x4020_1000, 0x4030_0000, text(0x4020_0000, 0x1_0000)).is_err());
        // Config area past the end.
        assert!(check(0x4021_0000, 0x4021_0800, text(0x4020_0000, 0x1_0000)).is_err());
        // Segment below the RAM base.
        assert!(check(0x4021_0000, 0x4021_1000, text(0x3ff0_0000, 0x1_0000)).is_err());
        // Segment past the end.
        assert!(check(0x4021_0000, 0x4021_1000, text(0x4020_0000, 0x2_0000)).is_err());
        // Config area in QEMU's own device tree (image starts 2 MiB up).
        assert!(check(0x4000_1000, 0x4030_0000, text(0x4020_0000, 0x1_0000)).is_err());
        // Unaligned config area.
        assert!(check(0x4021_0004, 0x4021_2000, text(0x4020_0000, 0x1_0000)).is_err());
        // A monitor at the very base: QEMU places no DTB, the area is free.
        assert!(check(0x4001_0000, 0x4001_1000, text(0x4000_0000, 0x1_0000)).is_ok());
    }

    #[test]
    fn build_command() {
        let b =
            Build { cargo: "cargo".into(), workspace: "/ws".into(), target_dir: "/tgt".into(), features: Vec::new() };
        let cmd = b.command();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["build", "--quiet", "--release", "-p", "el2-monitor", "--target", "armv7a-none-eabi"]);
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/ws")));
        assert_eq!(b.output(), Path::new("/tgt/armv7a-none-eabi/release/el2-monitor"));
        let none = Build { workspace: "/nonexistent".into(), ..b };
        assert!(matches!(none.run(), Err(MonitorError::NoWorkspace(_))));
    }
}
