//! The loader's guest images (`loader::images`): telling a kernel's format
//! apart, loading an ELF by its program headers, and placing the kernel,
//! the initrd and the device tree in guest RAM by QEMU's rules.
//!
//! Inputs are raw bytes (seeded with real headers: ELF, zImage, uImage,
//! gzip, arm64 Image) or a 32-bit ELF built from arbitrary program headers,
//! so that the loader's segment, entry-point and overlap logic is reached
//! by most inputs.
//!
//! Invariants for every kernel that loads: its format is what `detect`
//! says; every segment lies in guest RAM, is non-empty, holds no more file
//! bytes than memory bytes, and overlaps no other; the entry point is in RAM;
//! a flat image is the input itself at RAM base + 0x10000, entered there; an
//! ELF segment's bytes are the file's bytes at its offset. Every initrd and
//! device tree that is placed lies in RAM, page aligned, where QEMU's rule
//! puts it (above the kernel, the DTB above the initrd), disjoint from
//! everything else. Errors print without panicking.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use loader::images::{self, KernelFormat, Span};

#[derive(Debug, Arbitrary)]
struct Phdr {
    p_type: u8,
    offset: u32,
    vaddr: u32,
    paddr: u32,
    filesz: u32,
    memsz: u32,
    flags: u8,
}

#[derive(Debug, Arbitrary)]
struct ElfSpec {
    machine_arm: bool,
    e_type: u8,
    entry: u32,
    phdrs: Vec<Phdr>,
    payload: Vec<u8>,
}

const EHDR: usize = 52;
const PHDR: usize = 32;

impl ElfSpec {
    /// ELF32 little-endian (System V ABI, "ELF Header" and "Program
    /// Header"), program headers right after the header, then the payload.
    /// Addresses and offsets are taken near RAM and the file so that they
    /// are often valid.
    fn build(&self, ram: Span) -> Vec<u8> {
        let phnum = self.phdrs.len().min(8);
        let mut f = vec![0u8; EHDR + phnum * PHDR];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1; // ELFCLASS32
        f[5] = 1; // ELFDATA2LSB
        f[6] = 1; // EV_CURRENT
        let e_type: u16 = match self.e_type % 4 {
            0 | 1 => 2, // ET_EXEC
            2 => 3,     // ET_DYN
            _ => u16::from(self.e_type),
        };
        let put16 = |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 = |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put16(&mut f, 16, e_type);
        put16(&mut f, 18, if self.machine_arm { 40 } else { 183 }); // EM_ARM / EM_AARCH64
        put32(&mut f, 20, 1);
        let near = |v: u32| -> u32 {
            // Half the addresses inside RAM, the rest anywhere.
            if v & 1 == 0 {
                (ram.start + u64::from(v >> 1) % ram.size.max(1)) as u32
            } else {
                v
            }
        };
        put32(&mut f, 24, near(self.entry));
        put32(&mut f, 28, EHDR as u32); // e_phoff
        put16(&mut f, 40, EHDR as u16); // e_ehsize
        put16(&mut f, 42, PHDR as u16); // e_phentsize
        put16(&mut f, 44, phnum as u16);
        let file_len = (EHDR + phnum * PHDR + self.payload.len()) as u32;
        for (i, p) in self.phdrs.iter().take(phnum).enumerate() {
            let at = EHDR + i * PHDR;
            let p_type = if p.p_type % 4 == 0 { u32::from(p.p_type) } else { 1 }; // PT_LOAD mostly
            let offset = if p.offset & 1 == 0 { (p.offset >> 1) % file_len.max(1) } else { p.offset };
            let filesz =
                if p.filesz & 1 == 0 { (p.filesz >> 1) % (file_len - offset.min(file_len) + 1) } else { p.filesz };
            let memsz = if p.memsz & 1 == 0 { filesz.saturating_add((p.memsz >> 1) % 0x10000) } else { p.memsz };
            let paddr = near(p.paddr);
            let vaddr = if p.vaddr % 4 == 0 { paddr } else { near(p.vaddr) };
            for (k, v) in
                [p_type, offset, vaddr, paddr, filesz, memsz, u32::from(p.flags & 7), 4].into_iter().enumerate()
            {
                put32(&mut f, at + 4 * k, v);
            }
        }
        f.extend_from_slice(&self.payload);
        f
    }
}

#[derive(Debug)]
enum Kernel {
    Raw(Vec<u8>),
    Elf(ElfSpec),
}

fn check_kernel(bytes: &[u8], ram: Span, kernel: &images::Kernel) {
    assert_eq!(images::detect(bytes), Ok(kernel.format));
    assert!(!kernel.segments.is_empty());
    for (i, s) in kernel.segments.iter().enumerate() {
        assert!(s.mem_size > 0 && s.data.len() as u64 <= s.mem_size, "segment {i}: {s:?}");
        assert!(s.span().within(&ram), "segment {} outside RAM {ram}", s.span());
        assert!(s.span().end() <= kernel.high());
        for t in &kernel.segments[i + 1..] {
            assert!(!s.span().overlaps(&t.span()), "segments {} and {} overlap", s.span(), t.span());
        }
    }
    assert!(Span::new(kernel.entry & !1, 4).within(&ram), "entry {:#x} outside RAM {ram}", kernel.entry);
    match kernel.format {
        KernelFormat::Elf => {}
        KernelFormat::ZImage | KernelFormat::Raw => {
            let at = ram.start + images::KERNEL_LOAD_OFFSET;
            assert_eq!(kernel.segments.len(), 1);
            assert_eq!((kernel.segments[0].ipa, kernel.entry), (at, at));
            assert_eq!(kernel.segments[0].data, bytes);
        }
    }
}

/// An ELF segment's bytes are the file's bytes at its offset (the program
/// headers read from the header's e_phoff, e_phentsize and e_phnum).
fn check_elf_data(bytes: &[u8], kernel: &images::Kernel) {
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u32_at(28), u16_at(42), u16_at(44)) else {
        panic!("a loaded ELF has a whole header");
    };
    for s in &kernel.segments {
        let from_file = (0..usize::from(phnum)).any(|i| {
            let at = phoff as usize + i * usize::from(phentsize);
            let (Some(offset), Some(paddr), Some(filesz)) = (u32_at(at + 4), u32_at(at + 12), u32_at(at + 16)) else {
                return false;
            };
            u64::from(paddr) == s.ipa
                && bytes.get(offset as usize..offset as usize + filesz as usize) == Some(&s.data[..])
        });
        assert!(from_file, "segment at {:#x} does not hold its file bytes", s.ipa);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(ram_slot), Ok(ram_mib), Ok(initrd_size), Ok(dtb_size), Ok(elf)) = (
        u16::arbitrary(&mut u),
        u16::arbitrary(&mut u),
        u32::arbitrary(&mut u),
        u32::arbitrary(&mut u),
        bool::arbitrary(&mut u),
    ) else {
        return;
    };
    // Guest RAM as the loader has it: 2 MiB aligned, ending at most at 4 GiB.
    let start = u64::from(ram_slot % 2048) * (2 << 20);
    let size = (u64::from(ram_mib % 4096) + 1) << 20;
    let ram = Span::new(start, size.min((1 << 32) - start));
    let kernel = if elf {
        match ElfSpec::arbitrary(&mut u) {
            Ok(spec) => Kernel::Elf(spec),
            Err(_) => return,
        }
    } else {
        Kernel::Raw(u.take_rest().to_vec())
    };
    let bytes = match &kernel {
        Kernel::Raw(b) => b.clone(),
        Kernel::Elf(spec) => spec.build(ram),
    };

    let loaded = images::load_kernel(bytes.clone(), ram);
    let high = match &loaded {
        Ok(k) => {
            check_kernel(&bytes, ram, k);
            if k.format == KernelFormat::Elf {
                check_elf_data(&bytes, k);
            }
            Some(k.high())
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };

    let initrd = match images::place_initrd(ram, high, u64::from(initrd_size)) {
        Ok(span) => {
            // QEMU's rule: RAM base + min(RAM / 2, 128 MiB), or above the
            // kernel if it ends higher, page aligned.
            let preferred = ram.start + (ram.size / 2).min(128 << 20);
            let expected = preferred.max(high.unwrap_or(0)).next_multiple_of(4096);
            assert_eq!(span.start, expected);
            assert_eq!(span.size, u64::from(initrd_size));
            assert!(span.within(&ram));
            Some(span)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    if let Ok(dtb) = images::place_dtb(ram, high, initrd, u64::from(dtb_size)) {
        assert!(dtb.within(&ram) && dtb.start % 4096 == 0 && dtb.size == u64::from(dtb_size));
        if let Some(i) = initrd {
            assert!(dtb.start >= i.end(), "device tree {dtb} below the initrd's end {i}");
        }
        let mut spans = vec![("device tree".to_string(), dtb)];
        if let Some(i) = initrd {
            spans.push(("initrd".to_string(), i));
        }
        if let Ok(k) = &loaded {
            spans.extend(k.segments.iter().map(|s| ("kernel".to_string(), s.span())));
        }
        assert_eq!(images::check_disjoint(&spans), Ok(()), "placed images overlap: {spans:?}");
    }
});
