//! `splitvisor run` end to end under the real `qemu-system-arm`, with a
//! stand-in for the monitor: a few ARM instructions, in an ELF that honours
//! the boot contract (`__splitvisor_config`, `__splitvisor_end`), that check
//! what the loader put in memory and report a status over the host link (an
//! exit record on the UART, then PSCI SYSTEM_OFF), as the real monitor does:
//! - the configuration area must start with the blob magic "SPVB", else 5;
//! - the first word of guest RAM's kernel image (at the physical address
//!   the contract gives: 2 MiB above `__splitvisor_end`, plus QEMU's
//!   0x10000 kernel offset) must be the marker the test wrote, else 4;
//! - otherwise the status is the kernel's second word, and 0xff means
//!   "never end" (for the time-out).
//!
//! QEMU must be installed (the README and CI install it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Sym, Writer};
use object::Endianness;

const TEXT: u32 = 0x4020_0000;
const CONFIG: u32 = 0x4020_1000;
const END: u32 = 0x4020_2000;
/// Guest RAM is backed from align_up(END, 2 MiB); a flat kernel goes at
/// guest RAM + 0x10000.
const GUEST_KERNEL_PA: u32 = 0x4041_0000;
const MARKER: u32 = 0x5350_4c54;
/// The blob magic "SPVB", read as a little-endian word.
const BLOB_MAGIC: u32 = u32::from_le_bytes(*b"SPVB");

/// QEMU virt's PL011 data register, where the host link runs.
const UART: u32 = 0x0900_0000;
/// PSCI SYSTEM_OFF (SMC32).
const SYSTEM_OFF: u32 = 0x8400_0008;

/// The stand-in monitor's code (ARM, at TEXT). Offsets in comments. The
/// exit record is `ESCAPE 'X'` and the one-byte status COBS-encoded
/// (`01 01` for 0, `02 s` otherwise) and ended by a zero byte.
fn code() -> Vec<u32> {
    vec![
        0xe59f_0074, // 00 ldr   r0, =CONFIG
        0xe590_1000, // 04 ldr   r1, [r0]
        0xe59f_2070, // 08 ldr   r2, =BLOB_MAGIC
        0xe3a0_3005, // 0c mov   r3, #5
        0xe151_0002, // 10 cmp   r1, r2
        0x1a00_0007, // 14 bne   exit
        0xe59f_0064, // 18 ldr   r0, =GUEST_KERNEL_PA
        0xe590_1000, // 1c ldr   r1, [r0]
        0xe59f_2060, // 20 ldr   r2, =MARKER
        0xe3a0_3004, // 24 mov   r3, #4
        0xe151_0002, // 28 cmp   r1, r2
        0x0590_3004, // 2c ldreq r3, [r0, #4]
        0xe353_00ff, // 30 cmp   r3, #0xff
        0x0aff_fffe, // 34 beq   .
        0xe59f_004c, // 38 exit: ldr r0, =UART
        0xe3a0_1010, // 3c mov   r1, #0x10      (ESCAPE)
        0xe580_1000, // 40 str   r1, [r0]
        0xe3a0_1058, // 44 mov   r1, #'X'
        0xe580_1000, // 48 str   r1, [r0]
        0xe353_0000, // 4c cmp   r3, #0
        0x03a0_1001, // 50 moveq r1, #1
        0x0580_1000, // 54 streq r1, [r0]
        0x0580_1000, // 58 streq r1, [r0]
        0x13a0_1002, // 5c movne r1, #2
        0x1580_1000, // 60 strne r1, [r0]
        0x1580_3000, // 64 strne r3, [r0]
        0xe3a0_1000, // 68 mov   r1, #0
        0xe580_1000, // 6c str   r1, [r0]
        0xe59f_0018, // 70 ldr   r0, =SYSTEM_OFF
        0xe160_0070, // 74 smc   #0
        0xeaff_fffe, // 78 b     .
        CONFIG,      // 7c
        BLOB_MAGIC,  // 80
        GUEST_KERNEL_PA,
        MARKER,     // 88
        UART,       // 8c
        SYSTEM_OFF, // 90
    ]
}

/// Write the stand-in monitor ELF with `object::write::elf`.
fn stand_in_monitor(dir: &Path) -> PathBuf {
    let text: Vec<u8> = code().iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut out = Vec::new();
    let mut w = Writer::new(Endianness::Little, false, &mut out);
    let names = [("__splitvisor_config", CONFIG), ("__splitvisor_end", END)];
    let ids: Vec<_> = names.iter().map(|(n, _)| w.add_string(n.as_bytes())).collect();
    w.reserve_file_header();
    w.reserve_program_headers(1);
    let offset = w.reserve(text.len(), 4);
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
    w.write_file_header(&FileHeader {
        os_abi: 0,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_ARM,
        e_entry: u64::from(TEXT),
        e_flags: elf::EF_ARM_EABI_VER5,
    })
    .unwrap();
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_LOAD,
        p_flags: elf::PF_R | elf::PF_W | elf::PF_X,
        p_offset: offset as u64,
        p_vaddr: u64::from(TEXT),
        p_paddr: u64::from(TEXT),
        p_filesz: text.len() as u64,
        p_memsz: text.len() as u64,
        p_align: 4,
    });
    w.pad_until(offset);
    w.write(&text);
    w.write_null_symbol();
    for ((_, value), name) in names.iter().zip(&ids) {
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
    let path = dir.join("stand-in-monitor.elf");
    std::fs::write(&path, out).unwrap();
    path
}

/// A raw "kernel": the marker (or not) and the status the stand-in returns.
fn kernel(dir: &Path, marker: u32, status: u32) -> PathBuf {
    let path = dir.join(format!("kernel-{marker:x}-{status}.bin"));
    let bytes: Vec<u8> = [marker, status, 0xeaff_fffe].iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn splitvisor(dir: &Path, kernel: &Path, extra: &[&str]) -> Output {
    let monitor = stand_in_monitor(dir);
    Command::new(env!("CARGO_BIN_EXE_splitvisor"))
        .arg("run")
        .arg("--kernel")
        .arg(kernel)
        .arg("--monitor")
        .arg(monitor)
        .args(["--mem", "16"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn power_off_is_status_0_and_images_are_where_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 0), &["--smp", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn monitor_statuses_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    for status in [4, 5] {
        let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, status), &[]);
        assert_eq!(out.status.code(), Some(status as i32), "{}", stderr(&out));
    }
    // A kernel without the marker: the stand-in did not find it at the
    // physical address it expects.
    let out = splitvisor(dir.path(), &kernel(dir.path(), !MARKER, 0), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // A status this build does not know is treated as a monitor fault.
    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 7), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("the monitor stopped on a fault"), "{}", stderr(&out));
}

#[test]
fn reset_with_no_reboot_is_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 3), &["--no-reboot"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn reset_restarts_the_vm_until_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 3), &["--timeout", "2"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let restarts = stderr(&out).matches("restarting it").count();
    assert!(restarts >= 2, "{restarts} restarts\n{}", stderr(&out));
}

#[test]
fn a_hung_guest_times_out_with_124() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 0xff), &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(start.elapsed().as_secs() < 10);
}

#[test]
fn refusals_are_one_line_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 17 << 20]).unwrap();
    let out = splitvisor(dir.path(), &big, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    assert!(err.contains("does not fit in guest RAM"), "{err}");

    let out = splitvisor(dir.path(), Path::new("/nonexistent/kernel"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read the kernel /nonexistent/kernel"));

    let out = splitvisor(dir.path(), &kernel(dir.path(), MARKER, 0), &["--smp", "9"]);
    assert_eq!(out.status.code(), Some(2));
}
