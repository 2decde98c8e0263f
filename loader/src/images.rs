//! Guest images: telling a kernel's format apart, loading an ELF by its
//! program headers, and placing the kernel, the initrd and the device tree in
//! guest RAM by the rules of QEMU's `-kernel`/`-initrd` for 32-bit ARM
//! (`hw/arm/boot.c`), so that a guest made for QEMU runs unchanged.
//!
//! Everything here works on guest (intermediate physical) addresses; the
//! caller translates them to the physical window that backs guest RAM.
//!
//! QEMU's rules, as this module mirrors them:
//! - An ELF is loaded by its `PT_LOAD` program headers at their physical
//!   addresses and entered at `e_entry` (translated like QEMU when an
//!   executable segment is linked at a virtual address other than its
//!   physical one).
//! - Anything else is loaded as one flat image at RAM base + 0x10000
//!   (`KERNEL_LOAD_ADDR`) and entered there with the Linux boot protocol.
//!   QEMU does not tell a zImage from a raw binary (both take this path); we
//!   recognise the zImage header only to report it and to refuse images that
//!   cannot work (a big-endian zImage, an arm64 `Image`, a U-Boot uImage, a
//!   gzip file).
//! - The initrd goes at RAM base + min(RAM / 2, 128 MiB), or just above the
//!   kernel image if that ends higher, page aligned; the device tree goes
//!   right after the initrd, 4 KiB aligned ("some 32-bit kernels trash the
//!   rest of the page the initrd ends in").
//!
//! One deliberate difference: QEMU gives an ELF guest no device tree pointer;
//! we give every guest the Linux boot registers, so an ELF guest gets its
//! DTB (and initrd) placed by the same rule as a Linux kernel. That placement
//! starts above the highest byte of every segment (bss included), so it
//! cannot overlap the image.

use std::fmt;

use object::elf;
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use object::Endianness;

/// Where QEMU loads a flat (zImage or raw) 32-bit kernel, from the RAM base
/// (`KERNEL_LOAD_ADDR` in QEMU's `hw/arm/boot.c`).
pub const KERNEL_LOAD_OFFSET: u64 = 0x1_0000;

/// The initrd never starts further than this above the RAM base (QEMU keeps
/// it in lowmem for 32-bit kernels), unless the kernel image ends higher.
pub const INITRD_MAX_OFFSET: u64 = 128 << 20;

/// Alignment of the initrd (QEMU's `TARGET_PAGE_ALIGN`).
pub const INITRD_ALIGN: u64 = 4096;

/// Alignment of the device tree after the initrd (QEMU, 32-bit guests).
pub const DTB_ALIGN: u64 = 4096;

/// Offset of the zImage magic word (Linux `arch/arm/boot/compressed/head.S`).
const ZIMAGE_MAGIC_OFFSET: usize = 0x24;
/// The zImage magic, read little-endian (the kernel stores it so for BE8 too).
const ZIMAGE_MAGIC: u32 = 0x016f_2818;
/// Offset of the zImage endianness flag.
const ZIMAGE_ENDIAN_OFFSET: usize = 0x30;
/// The endianness flag of a big-endian zImage, read little-endian.
const ZIMAGE_BIG_ENDIAN: u32 = 0x0102_0304;
/// Offset and value of the arm64 `Image` magic ("ARM\x64").
const ARM64_MAGIC_OFFSET: usize = 0x38;
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
/// The U-Boot legacy image magic, big-endian at offset 0.
const UIMAGE_MAGIC: [u8; 4] = [0x27, 0x05, 0x19, 0x56];
/// The gzip magic.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Indices into an ELF's `e_ident` (System V ABI, "ELF Identification"):
/// the file class (32/64-bit) and the data encoding (endianness).
pub(crate) const EI_CLASS: usize = 4;
/// See [`EI_CLASS`].
pub(crate) const EI_DATA: usize = 5;

/// A range of addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Span {
    /// A span from `start` of `size` bytes.
    pub fn new(start: u64, size: u64) -> Span {
        Span { start, size }
    }

    /// One past the last address (saturating: spans near 2^64 never wrap).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// True when the two spans share a byte.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.size != 0 && other.size != 0 && self.start < other.end() && other.start < self.end()
    }

    /// True when `self` lies entirely inside `outer`.
    pub fn within(&self, outer: &Span) -> bool {
        self.start >= outer.start && self.start.checked_add(self.size).is_some_and(|end| end <= outer.end())
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end())
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Round `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// What a kernel image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A 32-bit little-endian ARM ELF executable.
    Elf,
    /// A Linux zImage (self-decompressing; Linux boot protocol).
    ZImage,
    /// A flat binary (loaded and entered at RAM base + 0x10000, as QEMU does).
    Raw,
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelFormat::Elf => "ELF",
            KernelFormat::ZImage => "Linux zImage",
            KernelFormat::Raw => "raw binary",
        })
    }
}

/// Why an image cannot be used or placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The file is empty.
    #[error("the {0} is empty")]
    Empty(&'static str),
    /// The kernel is a 64-bit Arm image.
    #[error("the kernel is an arm64 Image; splitvisor runs 32-bit ARM guests (use an armhf zImage)")]
    Arm64Image,
    /// The kernel is a U-Boot legacy image.
    #[error("the kernel is a U-Boot uImage, which splitvisor does not unwrap; pass the zImage inside it")]
    UImage,
    /// The kernel is gzip-compressed.
    #[error("the kernel is gzip-compressed; pass the uncompressed image or a zImage")]
    Gzip,
    /// The zImage is big-endian.
    #[error("the kernel is a big-endian zImage; splitvisor runs little-endian guests")]
    BigEndianZImage,
    /// The ELF could not be parsed.
    #[error("the kernel ELF is malformed: {0}")]
    BadElf(String),
    /// The ELF is not a 32-bit little-endian ARM executable.
    #[error("the kernel ELF is {0}, not a 32-bit little-endian ARM executable")]
    WrongElf(String),
    /// The ELF has nothing to load.
    #[error("the kernel ELF has no loadable segment")]
    NoSegments,
    /// A segment's file size exceeds its memory size.
    #[error("kernel ELF segment at {0:#x} has a file size larger than its memory size")]
    SegmentSizes(u64),
    /// A segment lies (partly) outside guest RAM.
    #[error("kernel ELF segment {segment} lies outside guest RAM {ram}")]
    SegmentOutsideRam {
        /// The segment.
        segment: Span,
        /// Guest RAM.
        ram: Span,
    },
    /// The entry point is outside guest RAM.
    #[error("kernel entry point {entry:#x} lies outside guest RAM {ram}")]
    EntryOutsideRam {
        /// The entry point.
        entry: u64,
        /// Guest RAM.
        ram: Span,
    },
    /// An image does not fit in guest RAM.
    #[error("the {what} ({size} bytes) does not fit in guest RAM {ram} at {at:#x}; raise --mem")]
    DoesNotFit {
        /// Which image.
        what: &'static str,
        /// Its size.
        size: u64,
        /// Where it would go.
        at: u64,
        /// Guest RAM.
        ram: Span,
    },
    /// Two images overlap.
    #[error("the {a} ({a_span}) overlaps the {b} ({b_span})")]
    Overlap {
        /// First image.
        a: String,
        /// Its place.
        a_span: Span,
        /// Second image.
        b: String,
        /// Its place.
        b_span: Span,
    },
}

/// One piece of a kernel to copy into guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the first byte.
    pub ipa: u64,
    /// The bytes to copy (an ELF segment's file part).
    pub data: Vec<u8>,
    /// The size the segment occupies in memory (at least `data.len()`; the
    /// rest is zero, which guest RAM is when the VM starts).
    pub mem_size: u64,
}

impl Segment {
    /// The memory the segment occupies.
    pub fn span(&self) -> Span {
        Span::new(self.ipa, self.mem_size)
    }
}

/// A kernel ready to be copied into guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// What it was.
    pub format: KernelFormat,
    /// What to copy where.
    pub segments: Vec<Segment>,
    /// Entry point (bit 0 set: Thumb, as in an ELF `e_entry`).
    pub entry: u64,
}

impl Kernel {
    /// One past the highest byte the image occupies.
    pub fn high(&self) -> u64 {
        self.segments.iter().map(|s| s.span().end()).max().unwrap_or(0)
    }
}

/// Tell the format of a kernel image apart, refusing what cannot run.
pub fn detect(bytes: &[u8]) -> Result<KernelFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty("kernel"));
    }
    if bytes.starts_with(&elf::ELFMAG) {
        return Ok(KernelFormat::Elf);
    }
    if bytes.starts_with(&UIMAGE_MAGIC) {
        return Err(ImageError::UImage);
    }
    if bytes.starts_with(&GZIP_MAGIC) {
        return Err(ImageError::Gzip);
    }
    if bytes.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(ARM64_MAGIC) {
        return Err(ImageError::Arm64Image);
    }
    if le_word(bytes, ZIMAGE_MAGIC_OFFSET) == Some(ZIMAGE_MAGIC) {
        if le_word(bytes, ZIMAGE_ENDIAN_OFFSET) == Some(ZIMAGE_BIG_ENDIAN) {
            return Err(ImageError::BigEndianZImage);
        }
        return Ok(KernelFormat::ZImage);
    }
    Ok(KernelFormat::Raw)
}

fn le_word(bytes: &[u8], offset: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// Load a kernel for guest RAM `ram`: detect its format, then lay it out.
pub fn load_kernel(bytes: Vec<u8>, ram: Span) -> Result<Kernel, ImageError> {
    match detect(&bytes)? {
        KernelFormat::Elf => load_elf(&bytes, ram),
        format => load_flat(format, bytes, ram),
    }
}

/// A zImage or raw binary: one segment at RAM base + 0x10000, entered there.
fn load_flat(format: KernelFormat, bytes: Vec<u8>, ram: Span) -> Result<Kernel, ImageError> {
    let at = ram.start + KERNEL_LOAD_OFFSET;
    let size = bytes.len() as u64;
    if !Span::new(at, size).within(&ram) {
        return Err(ImageError::DoesNotFit { what: "kernel", size, at, ram });
    }
    Ok(Kernel { format, segments: vec![Segment { ipa: at, data: bytes, mem_size: size }], entry: at })
}

/// An ELF: every `PT_LOAD` segment at its physical address.
fn load_elf(bytes: &[u8], ram: Span) -> Result<Kernel, ImageError> {
    let class = bytes.get(EI_CLASS).copied();
    let data = bytes.get(EI_DATA).copied();
    if class != Some(elf::ELFCLASS32) {
        return Err(ImageError::WrongElf("a 64-bit ELF".into()));
    }
    if data != Some(elf::ELFDATA2LSB) {
        return Err(ImageError::WrongElf("a big-endian ELF".into()));
    }
    let file = ElfFile32::<Endianness>::parse(bytes).map_err(|e| ImageError::BadElf(e.to_string()))?;
    let endian = file.endian();
    let header = file.elf_header();
    let machine = header.e_machine(endian);
    if machine != elf::EM_ARM {
        return Err(ImageError::WrongElf(format!("for machine {machine}")));
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(ImageError::WrongElf(format!("of type {e_type} (not an executable)")));
    }
    let e_entry = u64::from(header.e_entry(endian));
    let mut entry = e_entry;
    let mut segments = Vec::new();
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let paddr = u64::from(ph.p_paddr(endian));
        let vaddr = u64::from(ph.p_vaddr(endian));
        let mem_size = u64::from(ph.p_memsz(endian));
        let file_size = u64::from(ph.p_filesz(endian));
        if mem_size == 0 {
            continue;
        }
        if file_size > mem_size {
            return Err(ImageError::SegmentSizes(paddr));
        }
        let segment = Span::new(paddr, mem_size);
        if !segment.within(&ram) {
            return Err(ImageError::SegmentOutsideRam { segment, ram });
        }
        let data = ph
            .data(endian, bytes)
            .map_err(|()| ImageError::BadElf(format!("segment at {paddr:#x} extends past the end of the file")))?;
        // QEMU's ELF loader: e_entry is a virtual address; when the
        // executable segment holding it is linked elsewhere than it is
        // loaded, the entry moves with it.
        if vaddr != paddr && ph.p_flags(endian) & elf::PF_X != 0 && e_entry >= vaddr && e_entry - vaddr < file_size {
            entry = e_entry - vaddr + paddr;
        }
        segments.push(Segment { ipa: paddr, data: data.to_vec(), mem_size });
    }
    if segments.is_empty() {
        return Err(ImageError::NoSegments);
    }
    for (i, a) in segments.iter().enumerate() {
        for b in segments.iter().skip(i + 1) {
            if a.span().overlaps(&b.span()) {
                return Err(ImageError::Overlap {
                    a: "kernel ELF segment".into(),
                    a_span: a.span(),
                    b: "kernel ELF segment".into(),
                    b_span: b.span(),
                });
            }
        }
    }
    if !Span::new(entry & !1, 4).within(&ram) {
        return Err(ImageError::EntryOutsideRam { entry, ram });
    }
    Ok(Kernel { format: KernelFormat::Elf, segments, entry })
}

/// Where the initrd goes: RAM base + min(RAM / 2, 128 MiB), or above the
/// kernel image if that ends higher, page aligned (QEMU's rule). Without a
/// kernel (`kernel_high` is `None`), only the first part applies.
pub fn initrd_start(ram: Span, kernel_high: Option<u64>) -> u64 {
    let preferred = ram.start + (ram.size / 2).min(INITRD_MAX_OFFSET);
    let start = kernel_high.map_or(preferred, |high| preferred.max(high));
    // Guest RAM ends below 2^32, so rounding up to a page cannot overflow.
    align_up(start, INITRD_ALIGN).unwrap_or(u64::MAX)
}

/// Place an initrd of `size` bytes; refuses one that does not fit.
pub fn place_initrd(ram: Span, kernel_high: Option<u64>, size: u64) -> Result<Span, ImageError> {
    if size == 0 {
        return Err(ImageError::Empty("initrd"));
    }
    let at = initrd_start(ram, kernel_high);
    let span = Span::new(at, size);
    if !span.within(&ram) {
        return Err(ImageError::DoesNotFit { what: "initrd", size, at, ram });
    }
    Ok(span)
}

/// Where the device tree goes: after the initrd (or where the initrd would
/// have gone), 4 KiB aligned, as QEMU places it for a Linux kernel.
pub fn dtb_start(ram: Span, kernel_high: Option<u64>, initrd: Option<Span>) -> u64 {
    let after = initrd.map_or_else(|| initrd_start(ram, kernel_high), |i| i.end());
    align_up(after, DTB_ALIGN).unwrap_or(u64::MAX)
}

/// Place a device tree of `size` bytes; refuses one that does not fit.
pub fn place_dtb(ram: Span, kernel_high: Option<u64>, initrd: Option<Span>, size: u64) -> Result<Span, ImageError> {
    let at = dtb_start(ram, kernel_high, initrd);
    let span = Span::new(at, size);
    if size == 0 || !span.within(&ram) {
        return Err(ImageError::DoesNotFit { what: "device tree", size, at, ram });
    }
    Ok(span)
}

/// Refuse any two named spans that overlap.
pub fn check_disjoint(spans: &[(String, Span)]) -> Result<(), ImageError> {
    for (i, (a, a_span)) in spans.iter().enumerate() {
        for (b, b_span) in spans.iter().skip(i + 1) {
            if a_span.overlaps(b_span) {
                return Err(ImageError::Overlap { a: a.clone(), a_span: *a_span, b: b.clone(), b_span: *b_span });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use object::write::elf::{FileHeader as WFileHeader, ProgramHeader as WProgramHeader, Writer};

    const MIB: u64 = 1 << 20;
    const RAM: Span = Span { start: 0x4000_0000, size: 256 * MIB };

    /// A segment for [`make_elf`]: physical and virtual address, flags, file
    /// bytes, memory size.
    pub(crate) struct TestSegment {
        pub paddr: u32,
        pub vaddr: u32,
        pub flags: u32,
        pub data: Vec<u8>,
        pub memsz: u32,
    }

    /// Build a little ELF32 executable with `object::write::elf`.
    pub(crate) fn make_elf(machine: u16, entry: u32, segments: &[TestSegment]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, false, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<usize> = segments.iter().map(|s| w.reserve(s.data.len(), 4)).collect();
        w.write_file_header(&WFileHeader {
            os_abi: 0,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: machine,
            e_entry: u64::from(entry),
            e_flags: 0,
        })
        .unwrap();
        w.write_align_program_headers();
        for (s, off) in segments.iter().zip(&offsets) {
            w.write_program_header(&WProgramHeader {
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
        out
    }

    fn seg(paddr: u32, data: &[u8], memsz: u32) -> TestSegment {
        TestSegment { paddr, vaddr: paddr, flags: elf::PF_R | elf::PF_X, data: data.to_vec(), memsz }
    }

    fn zimage() -> Vec<u8> {
        let mut z = vec![0u8; 0x200];
        z[0x24..0x28].copy_from_slice(&ZIMAGE_MAGIC.to_le_bytes());
        z[0x30..0x34].copy_from_slice(&0x0403_0201u32.to_le_bytes());
        z
    }

    #[test]
    fn detects_each_format() {
        let elf = make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x4000_8000, &[1, 2, 3, 4], 8)]);
        assert_eq!(detect(&elf), Ok(KernelFormat::Elf));
        assert_eq!(detect(&zimage()), Ok(KernelFormat::ZImage));
        assert_eq!(detect(&[0xfe, 0xff, 0xff, 0xea]), Ok(KernelFormat::Raw));
        assert_eq!(detect(&[]), Err(ImageError::Empty("kernel")));
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Err(ImageError::Gzip));
        assert_eq!(detect(&[0x27, 0x05, 0x19, 0x56, 0, 0]), Err(ImageError::UImage));
        let mut arm64 = vec![0u8; 0x40];
        arm64[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(detect(&arm64), Err(ImageError::Arm64Image));
        let mut be = zimage();
        be[0x30..0x34].copy_from_slice(&0x0403_0201u32.to_be_bytes());
        assert_eq!(detect(&be), Err(ImageError::BigEndianZImage));
        // A raw file shorter than the zImage header is still raw.
        assert_eq!(detect(&[0; 0x26]), Ok(KernelFormat::Raw));
    }

    #[test]
    fn flat_images_load_at_base_plus_64k() {
        let k = load_kernel(zimage(), RAM).unwrap();
        assert_eq!(k.format, KernelFormat::ZImage);
        assert_eq!(k.entry, 0x4001_0000);
        assert_eq!(k.segments.len(), 1);
        assert_eq!(k.segments[0].ipa, 0x4001_0000);
        assert_eq!(k.high(), 0x4001_0200);

        let raw = load_kernel(vec![0xaa; 100], RAM).unwrap();
        assert_eq!(raw.format, KernelFormat::Raw);
        assert_eq!(raw.entry, 0x4001_0000);

        let small = Span::new(0x4000_0000, 2 * MIB);
        let err = load_kernel(vec![0; (2 * MIB) as usize], small).unwrap_err();
        assert!(matches!(err, ImageError::DoesNotFit { what: "kernel", at: 0x4001_0000, .. }));
        // Exactly filling RAM from the load address fits.
        assert!(load_kernel(vec![0; (2 * MIB - 0x1_0000) as usize], small).is_ok());
    }

    #[test]
    fn elf_loads_by_program_headers() {
        let bytes = make_elf(
            elf::EM_ARM,
            0x4000_8000,
            &[seg(0x4000_8000, &[1, 2, 3, 4], 0x1000), seg(0x4010_0000, &[5; 16], 16)],
        );
        let k = load_kernel(bytes, RAM).unwrap();
        assert_eq!(k.format, KernelFormat::Elf);
        assert_eq!(k.entry, 0x4000_8000);
        assert_eq!(k.segments.len(), 2);
        assert_eq!(k.segments[0].data, vec![1, 2, 3, 4]);
        assert_eq!(k.segments[0].mem_size, 0x1000);
        assert_eq!(k.segments[1].ipa, 0x4010_0000);
        assert_eq!(k.high(), 0x4010_0010);
    }

    #[test]
    fn elf_entry_follows_a_relinked_text_segment() {
        let text = TestSegment {
            paddr: 0x4000_8000,
            vaddr: 0xc000_8000,
            flags: elf::PF_R | elf::PF_X,
            data: vec![0; 64],
            memsz: 64,
        };
        let k = load_kernel(make_elf(elf::EM_ARM, 0xc000_8010, &[text]), RAM).unwrap();
        assert_eq!(k.entry, 0x4000_8010);
    }

    #[test]
    fn elf_refusals() {
        let outside = make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x3fff_f000, &[0; 8], 0x2000)]);
        assert!(matches!(load_kernel(outside, RAM), Err(ImageError::SegmentOutsideRam { .. })));
        let past_end = make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x4fff_f000, &[0; 8], 0x2000)]);
        assert!(matches!(load_kernel(past_end, RAM), Err(ImageError::SegmentOutsideRam { .. })));
        let overlap =
            make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x4000_8000, &[0; 8], 0x1000), seg(0x4000_8800, &[0; 8], 8)]);
        assert!(matches!(load_kernel(overlap, RAM), Err(ImageError::Overlap { .. })));
        let x86 = make_elf(elf::EM_386, 0x4000_8000, &[seg(0x4000_8000, &[0; 8], 8)]);
        assert!(matches!(load_kernel(x86, RAM), Err(ImageError::WrongElf(_))));
        let entry = make_elf(elf::EM_ARM, 0x1000, &[seg(0x4000_8000, &[0; 8], 8)]);
        assert!(matches!(load_kernel(entry, RAM), Err(ImageError::EntryOutsideRam { entry: 0x1000, .. })));
        let empty = make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x4000_8000, &[], 0)]);
        assert_eq!(load_kernel(empty, RAM), Err(ImageError::NoSegments));
        // A truncated ELF is an error, not a panic.
        let good = make_elf(elf::EM_ARM, 0x4000_8000, &[seg(0x4000_8000, &[7; 64], 64)]);
        for cut in [4, 20, 52, 60, good.len() - 1] {
            assert!(load_kernel(good[..cut].to_vec(), RAM).is_err(), "cut at {cut}");
        }
        let mut elf64 = good.clone();
        elf64[EI_CLASS] = elf::ELFCLASS64;
        assert!(matches!(load_kernel(elf64, RAM), Err(ImageError::WrongElf(_))));
    }

    #[test]
    fn initrd_and_dtb_follow_qemu() {
        // 256 MiB: initrd at base + 128 MiB, DTB after it, page aligned.
        let i = place_initrd(RAM, Some(0x4001_0200), 0x1234).unwrap();
        assert_eq!(i, Span::new(0x4800_0000, 0x1234));
        let d = place_dtb(RAM, Some(0x4001_0200), Some(i), 0x800).unwrap();
        assert_eq!(d.start, 0x4800_2000);
        // 64 MiB: halfway into RAM.
        let small = Span::new(0x4000_0000, 64 * MIB);
        assert_eq!(initrd_start(small, Some(0x4001_0000)), 0x4200_0000);
        // A kernel ending above that point pushes the initrd up, page aligned.
        assert_eq!(initrd_start(small, Some(0x4300_0001)), 0x4300_1000);
        // No initrd: the DTB goes where the initrd would have.
        assert_eq!(dtb_start(RAM, Some(0x4001_0000), None), 0x4800_0000);
        // No kernel (the `dtb` command without --kernel).
        assert_eq!(initrd_start(RAM, None), 0x4800_0000);
    }

    #[test]
    fn initrd_and_dtb_refusals() {
        let small = Span::new(0x4000_0000, 64 * MIB);
        // An initrd that runs past the end of RAM.
        let err = place_initrd(small, Some(0x4001_0000), 33 * MIB).unwrap_err();
        assert!(matches!(err, ImageError::DoesNotFit { what: "initrd", at: 0x4200_0000, .. }));
        assert!(place_initrd(small, Some(0x4001_0000), 32 * MIB).is_ok());
        // A kernel filling RAM leaves no room for the initrd.
        let err = place_initrd(small, Some(0x4400_0000), 1).unwrap_err();
        assert!(matches!(err, ImageError::DoesNotFit { what: "initrd", .. }));
        assert_eq!(place_initrd(small, None, 0), Err(ImageError::Empty("initrd")));
        // A DTB that does not fit after an initrd filling RAM.
        let i = place_initrd(small, Some(0x4001_0000), 32 * MIB).unwrap();
        let err = place_dtb(small, Some(0x4001_0000), Some(i), 0x100).unwrap_err();
        assert!(matches!(err, ImageError::DoesNotFit { what: "device tree", .. }));
    }

    #[test]
    fn disjointness() {
        let ok = [
            ("kernel".to_string(), Span::new(0x4001_0000, 0x1000)),
            ("initrd".to_string(), Span::new(0x4001_1000, 0x1000)),
        ];
        assert_eq!(check_disjoint(&ok), Ok(()));
        let bad = [
            ("kernel".to_string(), Span::new(0x4001_0000, 0x1001)),
            ("initrd".to_string(), Span::new(0x4001_1000, 0x1000)),
        ];
        assert!(matches!(check_disjoint(&bad), Err(ImageError::Overlap { .. })));
        assert!(!Span::new(0, 0).overlaps(&Span::new(0, 10)));
        assert!(Span::new(u64::MAX - 1, 10).end() == u64::MAX);
        assert!(!Span::new(u64::MAX - 1, 10).within(&Span::new(0, u64::MAX)));
    }
}
