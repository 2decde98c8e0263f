//! Test guest `hello`: what any PL1 guest sees when it boots.
//!
//! Checks, each printed as a `PASS:`/`FAIL:` line: the entry mode is SVC
//! (not Hyp); r0 = 0 and r1 = 0xFFFFFFFF; r2 points at a valid device tree
//! that lies in `/memory`, outside the guest image, and has a `/psci` node
//! with method `hvc`; `/memory` holds the guest image; PSCI_VERSION through
//! HVC is at least 0.2; PSCI_FEATURES (from PSCI 1.0) knows PSCI_VERSION and
//! not a bogus function; a bogus function id answers NOT_SUPPORTED. Then it
//! powers off with SYSTEM_OFF (or resets when anything failed).
//!
//! Without a device tree (plain QEMU gives an ELF none) it reports `NO-DTB`
//! through semihosting, runs the checks that need no tree, and resets.

#![no_std]
#![no_main]

use test_guests::dtb::{self, Region};
use test_guests::psci::{self, ReturnCode, Version};
use test_guests::{arch, rt, BootInfo, Report, MACHINE_TYPE_DEVICE_TREE};

test_guests::entry!(main);

fn main(boot: BootInfo) -> ! {
    let (env, mut report) = rt::init("hello", boot);
    if !report.psci_allowed() {
        report.finish();
    }

    match &env.dtb {
        Ok(fdt) => {
            report.check(
                boot.r0 == 0 && boot.r1 == MACHINE_TYPE_DEVICE_TREE,
                format_args!(
                    "boot registers r0={:#010x} r1={:#010x} (want 0 and {MACHINE_TYPE_DEVICE_TREE:#010x})",
                    boot.r0, boot.r1
                ),
            );
            check_device_tree(&mut report, boot.r2, fdt);
        }
        Err(_) => report.check(boot.r0 == 0, format_args!("boot register r0={:#010x} (want 0)", boot.r0)),
    }

    check_psci(&mut report);
    report.finish()
}

/// The device tree's own sanity, its `/memory` and its `/psci` node.
fn check_device_tree(report: &mut Report, addr: u32, fdt: &fdt::Fdt<'_>) {
    report.pass(format_args!(
        "device tree at {addr:#010x}: magic {:#010x}, {} bytes",
        dtb::FDT_MAGIC,
        fdt.total_size()
    ));
    if let Some(bootargs) = dtb::bootargs(fdt) {
        report.info(format_args!("bootargs \"{bootargs}\""));
    }

    let image = rt::image();
    let blob = Region { base: u64::from(addr), size: fdt.total_size() as u64 };
    let mut any_memory = false;
    let mut holds_image = None;
    let mut holds_blob = None;
    for region in dtb::memory_regions(fdt) {
        any_memory = true;
        report.info(format_args!("memory {region}"));
        if region.contains_range(image.base, image.end()) {
            holds_image = Some(region);
        }
        if region.contains_range(blob.base, blob.end()) {
            holds_blob = Some(region);
        }
    }
    if !any_memory {
        report.fail(format_args!("the device tree has no memory node with a reg"));
    }
    match holds_image {
        Some(region) => report.pass(format_args!("memory {region} holds the guest image {image}")),
        None => report.fail(format_args!("no memory region holds the guest image {image}")),
    }
    match holds_blob {
        Some(region) => report.pass(format_args!("memory {region} holds the device tree {blob}")),
        None => report.fail(format_args!("no memory region holds the device tree {blob}")),
    }

    match dtb::psci(fdt) {
        Some(node) => {
            let method = node.method.unwrap_or("(none)");
            report.check(
                node.method == Some("hvc"),
                format_args!("{} ({}) method {method} (want hvc)", node.name, node.compatible),
            );
        }
        None => report.fail(format_args!("the device tree has no PSCI node")),
    }
}

/// PSCI through HVC: the version, PSCI_FEATURES, and a bogus function.
fn check_psci(report: &mut Report) {
    let version = Version(arch::hvc_call(psci::PSCI_VERSION, 0, 0, 0));
    report.check(version.at_least(Version::V0_2), format_args!("PSCI_VERSION {version} (want at least 0.2)"));

    if version.at_least(Version::V1_0) {
        // PSCI 1.0 made PSCI_FEATURES mandatory: it must know PSCI_VERSION
        // (no feature flags: 0) and reject the bogus function.
        let known = ReturnCode::from_raw(arch::hvc_call(psci::PSCI_FEATURES, psci::PSCI_VERSION, 0, 0));
        report.check(
            known == ReturnCode::Success,
            format_args!("PSCI_FEATURES({:#010x}) -> {known} (want SUCCESS (0))", psci::PSCI_VERSION),
        );
        let bogus = ReturnCode::from_raw(arch::hvc_call(psci::PSCI_FEATURES, psci::BOGUS_FUNCTION, 0, 0));
        report.check(
            bogus == ReturnCode::NotSupported,
            format_args!("PSCI_FEATURES({:#010x}) -> {bogus} (want NOT_SUPPORTED (-1))", psci::BOGUS_FUNCTION),
        );
    }

    let bogus = ReturnCode::from_raw(arch::hvc_call(psci::BOGUS_FUNCTION, 0, 0, 0));
    report.check(
        bogus == ReturnCode::NotSupported,
        format_args!("PSCI function {:#010x} -> {bogus} (want NOT_SUPPORTED (-1))", psci::BOGUS_FUNCTION),
    );
}
