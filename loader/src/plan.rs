//! From a command line to a QEMU invocation: read the files (or take the
//! default guest's), ask QEMU about the platform, place the images and the
//! device tree in guest RAM, get the monitor, make the VM configuration, and
//! stage every blob in a temporary directory for QEMU's generic loader.
//!
//! Everything the user can get wrong is refused here, before QEMU starts.

use std::path::{Path, PathBuf};

use crate::cli::{DtbArgs, GuestArgs, RunArgs};
use crate::config::{self, ConfigInputs, LogLevel};
use crate::dtb::{self, GuestDtbSpec, UserDtbEdits};
use crate::guest::{self, Cache};
use crate::images::{self, Kernel, Span};
use crate::monitor::{Build, MonitorImage};
use crate::platform::{self, Platform};
use crate::qemu::{GdbStub, Invocation, Load};
use crate::Error;

const MIB: u64 = 1 << 20;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { what, path: path.into(), source })
}

/// A guest laid out in its RAM (guest addresses).
#[derive(Clone, Debug)]
pub struct GuestPlan {
    /// Guest RAM.
    pub ram: Span,
    /// The kernel, if one was given.
    pub kernel: Option<Kernel>,
    /// The initrd and where it goes.
    pub initrd: Option<(Span, Vec<u8>)>,
    /// The device tree and where it goes.
    pub dtb: (Span, Vec<u8>),
}

/// What a guest is made of: the files read, the defaults filled in.
pub struct GuestFiles {
    /// The kernel.
    pub kernel: Option<Vec<u8>>,
    /// The initrd.
    pub initrd: Option<Vec<u8>>,
    /// A user device tree and its path.
    pub user_dtb: Option<(PathBuf, Vec<u8>)>,
    /// The kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub smp: u8,
    /// Guest RAM in MiB.
    pub mem: u64,
}

/// The guest the command line describes: `--kernel` and what was given
/// with it, or, without it, the default guest (Debian's kernel from the
/// cache, fetched first if needed, with the busybox initramfs, 2 vCPUs and
/// `console=ttyAMA0`), each default replaced by what was given.
pub fn resolve(kernel: Option<&Path>, guest: &GuestArgs, user_dtb: Option<&Path>) -> Result<GuestFiles, Error> {
    let user_initrd = guest.initrd.as_deref().map(|p| read("initrd", p)).transpose()?;
    let user_dtb = user_dtb.map(|p| Ok::<_, Error>((p.to_path_buf(), read("device tree", p)?))).transpose()?;
    let (kernel, initrd, cmdline, smp) = match kernel {
        Some(path) => (read("kernel", path)?, user_initrd, String::new(), 1),
        None => {
            let default = guest::ensure(&Cache::locate()?)?;
            log::info!("default guest: Debian's armmp kernel {}", default.kernel.display());
            let initrd = match user_initrd {
                Some(bytes) => bytes,
                None => guest::initramfs(&default, None)?,
            };
            (read("kernel", &default.kernel)?, Some(initrd), guest::DEFAULT_CMDLINE.to_string(), guest::DEFAULT_SMP)
        }
    };
    Ok(GuestFiles {
        kernel: Some(kernel),
        initrd,
        user_dtb,
        cmdline: guest.cmdline.clone().unwrap_or(cmdline),
        smp: guest.smp.unwrap_or(smp),
        mem: guest.mem,
    })
}

/// Where QEMU's platform description is kept between runs (see
/// [`platform::probe`]): `platform/` in splitvisor's cache directory, if
/// there is one.
fn probe_cache() -> Option<std::path::PathBuf> {
    Cache::locate().ok().map(|cache| cache.dir().join("platform"))
}

/// Lay a guest out in RAM: the rules of `images`, the device tree of `dtb`.
pub fn plan_guest(platform: &Platform, files: GuestFiles) -> Result<GuestPlan, Error> {
    let ram = Span::new(platform.ram_base, files.mem * MIB);
    let kernel = files.kernel.map(|bytes| images::load_kernel(bytes, ram)).transpose()?;
    let kernel_high = kernel.as_ref().map(Kernel::high);
    let initrd = match files.initrd {
        Some(bytes) => Some((images::place_initrd(ram, kernel_high, bytes.len() as u64)?, bytes)),
        None => None,
    };
    let initrd_span = initrd.as_ref().map(|(span, _)| *span);
    let dtb_bytes = match files.user_dtb {
        Some((path, bytes)) => {
            let edits = UserDtbEdits { ram, cmdline: files.cmdline.clone(), initrd: initrd_span };
            dtb::rewrite_user_dtb(&bytes, &edits).map_err(|source| Error::UserDtb { path, source })?
        }
        None => dtb::generate(&GuestDtbSpec {
            vcpus: files.smp,
            ram,
            gicd: platform.gicd,
            gicc: platform::guest_gicc(platform),
            uart: platform.uart,
            uart_irq: platform.uart_irq,
            uart_clock_hz: platform.uart_clock_hz,
            timer_ppis: platform.timer_ppis,
            timer_always_on: platform.timer_always_on,
            cmdline: files.cmdline.clone(),
            initrd: initrd_span,
        })?,
    };
    let dtb_span = images::place_dtb(ram, kernel_high, initrd_span, dtb_bytes.len() as u64)?;

    let mut spans: Vec<(String, Span)> = Vec::new();
    if let Some(k) = &kernel {
        spans.extend(k.segments.iter().map(|s| (format!("{} kernel", k.format), s.span())));
    }
    if let Some(span) = initrd_span {
        spans.push(("initrd".into(), span));
    }
    spans.push(("device tree".into(), dtb_span));
    images::check_disjoint(&spans)?;

    if let Some(k) = &kernel {
        log::info!("kernel: {}, {} segment(s) up to {:#x}, entry {:#x}", k.format, k.segments.len(), k.high(), k.entry);
    }
    if let Some(span) = initrd_span {
        log::info!("initrd at {span}");
    }
    log::info!("device tree at {dtb_span}");
    Ok(GuestPlan { ram, kernel, initrd, dtb: (dtb_span, dtb_bytes) })
}

/// `splitvisor dtb`: write the guest device tree.
pub fn write_dtb(args: &DtbArgs) -> Result<(), Error> {
    let files = resolve(args.kernel.as_deref(), &args.guest, None)?;
    let platform = platform::probe(&args.guest.qemu, files.smp, files.mem, probe_cache().as_deref())?;
    let plan = plan_guest(&platform, files)?;
    std::fs::write(&args.output, &plan.dtb.1).map_err(|source| Error::Write { path: args.output.clone(), source })?;
    log::info!("wrote {} ({} bytes)", args.output.display(), plan.dtb.1.len());
    Ok(())
}

/// A VM ready to start: the QEMU invocation and the directory holding the
/// files it loads (removed when this is dropped).
pub struct Staged {
    /// The QEMU command.
    pub invocation: Invocation,
    _dir: tempfile::TempDir,
}

/// `splitvisor run`, up to the QEMU command line; `log_level` is the
/// monitor's.
pub fn prepare(args: &RunArgs, log_level: LogLevel) -> Result<Staged, Error> {
    let guest = &args.guest;
    let files = resolve(args.kernel.as_deref(), guest, args.dtb.as_deref())?;
    let (smp, mem) = (files.smp, files.mem);
    let platform = platform::probe(&guest.qemu, smp, mem, probe_cache().as_deref())?;
    log::debug!("platform (from QEMU): {platform}");
    let plan = plan_guest(&platform, files)?;
    let kernel = plan.kernel.as_ref().ok_or(Error::NoKernel)?;

    let monitor_path = match &args.monitor {
        Some(path) => path.clone(),
        None => Build::from_env().run()?,
    };
    let monitor = MonitorImage::read(&monitor_path)?;
    monitor.check(platform.ram_base, platform.qemu_dtb_size)?;
    let guest_pa = monitor.guest_ram_pa();
    // The monitor's share of QEMU's RAM, whole MiB (it is 2 MiB aligned
    // when the RAM base is).
    let monitor_mib = guest_pa.saturating_sub(platform.ram_base).div_ceil(MIB);
    log::info!(
        "monitor {}: config area {:#x}, ends {:#x}; guest RAM {} backed at {guest_pa:#x}",
        monitor_path.display(),
        monitor.config,
        monitor.end,
        plan.ram
    );

    let vm = config::build(
        &platform,
        &ConfigInputs {
            vcpus: smp,
            ram: plan.ram,
            ram_pa: guest_pa,
            entry: kernel.entry,
            dtb: plan.dtb.0.start,
            log_level,
            trace: args.trace.is_some(),
            faults: args.inject.clone(),
            on_server_fault: match args.on_server_fault {
                crate::isolate::FaultPolicy::Restart => ipc::fault::OnServerFault::Restart,
                crate::isolate::FaultPolicy::Stop => ipc::fault::OnServerFault::Stop,
            },
            isolation: !args.no_isolation,
            domains: !args.no_domains,
            console_image: !args.no_console_image,
            wfi: args.wfi.policy(),
            vtimer: args.vtimer.delivery(kernel.format),
            containment: ipc::Containment {
                checkpoint_every: args.checkpoint_every.unwrap_or(ipc::Containment::DEFAULT.checkpoint_every),
                budget_ms: args.budget_ms.unwrap_or(ipc::Containment::DEFAULT.budget_ms),
            },
        },
    )?;
    let blob = config::encode(&vm)?;

    let dir = tempfile::Builder::new().prefix("splitvisor").tempdir().map_err(Error::Temp)?;
    let pa = |ipa: u64| ipa - plan.ram.start + guest_pa;
    let mut loads = Vec::new();
    let mut stage = |name: String, bytes: &[u8], addr: u64| -> Result<(), Error> {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).map_err(|source| Error::Write { path: file.clone(), source })?;
        loads.push(Load { file, addr });
        Ok(())
    };
    // Only the file part of each segment is loaded: the rest (an ELF's
    // bss) must read as zero, and it does, since QEMU's RAM starts zeroed
    // and a reset restarts QEMU.
    for (i, segment) in kernel.segments.iter().enumerate().filter(|(_, s)| !s.data.is_empty()) {
        stage(format!("kernel-{i}.bin"), &segment.data, pa(segment.ipa))?;
    }
    if let Some((span, bytes)) = &plan.initrd {
        stage("initrd.img".into(), bytes, pa(span.start))?;
    }
    stage("guest.dtb".into(), &plan.dtb.1, pa(plan.dtb.0.start))?;
    stage("vm-config.bin".into(), &blob, monitor.config)?;

    let invocation = Invocation {
        qemu: guest.qemu.clone(),
        smp,
        ram_mib: monitor_mib + mem,
        monitor: monitor_path,
        loads,
        gdb: args.gdb.map(|port| GdbStub { port, wait: args.gdb_wait }),
        icount: args.icount,
        extra: args.qemu_args.clone(),
    };
    if let Some(port) = args.gdb {
        log::info!(
            "gdb stub on 127.0.0.1:{port}{}: gdb-multiarch -ex 'target remote 127.0.0.1:{port}' (see loader/README.md)",
            if args.gdb_wait { ", CPUs stopped until gdb continues them" } else { "" }
        );
    }
    Ok(Staged { invocation, _dir: dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::tests::{make_elf, TestSegment};
    use crate::platform::tests::platform;
    use object::elf;

    fn files(kernel: Option<Vec<u8>>, initrd: Option<Vec<u8>>, mem: u64, cmdline: &str) -> GuestFiles {
        GuestFiles { kernel, initrd, user_dtb: None, cmdline: cmdline.into(), smp: 2, mem }
    }

    #[test]
    fn a_zimage_with_initrd() {
        let mut z = vec![0u8; 0x4000];
        z[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
        let files = files(Some(z), Some(vec![0x1f, 0x8b, 0, 0]), 256, "console=ttyAMA0");
        let plan = plan_guest(&platform(), files).unwrap();
        assert_eq!(plan.kernel.as_ref().unwrap().entry, 0x4001_0000);
        let (initrd, bytes) = plan.initrd.as_ref().unwrap();
        assert_eq!(initrd.start, 0x4800_0000);
        assert_eq!(bytes, &[0x1f, 0x8b, 0, 0], "a gzip initrd passes through");
        assert_eq!(plan.dtb.0.start, 0x4800_1000);
        let checked = dtb::CheckedDtb::new(&plan.dtb.1).unwrap();
        let fdt = checked.fdt().unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(dtb::strings(chosen.property("bootargs").unwrap().value), ["console=ttyAMA0"]);
        assert_eq!(dtb::cells(chosen.property("linux,initrd-end").unwrap().value), Some(vec![0, 0x4800_0004]));
    }

    #[test]
    fn an_elf_guest_gets_its_dtb_above_its_image() {
        let elf = make_elf(
            elf::EM_ARM,
            0x4000_8000,
            &[TestSegment {
                paddr: 0x4000_8000,
                vaddr: 0x4000_8000,
                flags: elf::PF_X,
                data: vec![1; 64],
                memsz: 0x2000,
            }],
        );
        let plan = plan_guest(&platform(), files(Some(elf), None, 64, "")).unwrap();
        assert_eq!(plan.dtb.0.start, 0x4200_0000);
    }

    #[test]
    fn refusals_before_anything_starts() {
        // A kernel bigger than RAM.
        let big = files(Some(vec![0; (3 * MIB) as usize]), None, 2, "");
        assert!(matches!(plan_guest(&platform(), big), Err(Error::Image(_))));
        // An initrd that does not fit.
        let big = files(Some(vec![0; 16]), Some(vec![0; (40 * MIB) as usize]), 64, "");
        assert!(matches!(plan_guest(&platform(), big), Err(Error::Image(_))));
        // A garbage --dtb.
        let junk = GuestFiles {
            user_dtb: Some(("junk.dtb".into(), b"not a device tree".to_vec())),
            ..files(Some(vec![0; 16]), None, 64, "")
        };
        let err = plan_guest(&platform(), junk).unwrap_err();
        assert!(matches!(err, Error::UserDtb { .. }));
        assert!(err.to_string().starts_with("--dtb junk.dtb: not a valid flattened device tree"), "{err}");
    }

    #[test]
    fn a_user_dtb_is_placed_and_edited() {
        let user = dtb::generate(&dtb::tests::spec()).unwrap();
        let files =
            GuestFiles { user_dtb: Some(("u.dtb".into(), user)), ..files(Some(vec![0; 16]), None, 64, "quiet") };
        let plan = plan_guest(&platform(), files).unwrap();
        let checked = dtb::CheckedDtb::new(&plan.dtb.1).unwrap();
        let fdt = checked.fdt().unwrap();
        let mem = fdt.find_node("/memory").unwrap();
        assert_eq!(
            dtb::reg_entries(mem.property("reg").unwrap().value, 2, 2),
            Some(vec![Span::new(0x4000_0000, 64 * MIB)])
        );
        assert!(fdt.find_node("/chosen").unwrap().property("linux,initrd-start").is_none());
    }

    #[test]
    fn a_given_kernel_keeps_the_plain_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, b"raw").unwrap();
        let args = GuestArgs { initrd: None, cmdline: None, smp: None, mem: 64, qemu: "q".into() };
        let files = resolve(Some(&kernel), &args, None).unwrap();
        assert_eq!((files.kernel.as_deref(), files.initrd, files.smp), (Some(&b"raw"[..]), None, 1));
        assert_eq!(files.cmdline, "");
        let args = GuestArgs { cmdline: Some("quiet".into()), smp: Some(3), ..args };
        let files = resolve(Some(&kernel), &args, None).unwrap();
        assert_eq!((files.cmdline.as_str(), files.smp), ("quiet", 3));
    }

    #[test]
    fn missing_files_name_themselves() {
        let err = read("kernel", Path::new("/nonexistent/guest.elf")).unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err.to_string().starts_with("cannot read the kernel /nonexistent/guest.elf: "), "{err}");
    }
}
