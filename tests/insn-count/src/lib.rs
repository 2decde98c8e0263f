//! `insn-count`: a QEMU TCG plugin that counts the instructions a whole run
//! executes, and which of them were splitvisor's: the monitor image (the
//! monitor and the three servers it links), per function and per part.
//!
//! `splitvisor bench` measures single operations under `-icount`; a Debian
//! boot under `-icount` takes more than ten minutes on this machine, so the
//! share of a boot's instructions spent in the hypervisor is measured with
//! this plugin instead, at normal TCG speed (`tests/experiments/linux-share`):
//!
//! ```text
//! qemu-system-arm ... -plugin target/release/libinsn_count.so,monitor=EL2.elf,out=REPORT
//! ```
//!
//! How a block is told to be the monitor's: by the host address of its
//! code, not its virtual address (the guest, running with its MMU off,
//! executes at addresses that are numerically inside the monitor's). The
//! first block QEMU translates at the monitor's entry (`__image_start`,
//! the reset PC, with the MMU off) gives the host address of the image's
//! first byte; a block whose code lies in `[that, that + image size)` is in
//! the image. Each execution of a block calls back into the plugin, which
//! adds to the block's counter atomically: exact under multi-threaded TCG
//! too (an inline add in the translated code would be cheaper, but two
//! vCPUs running one block at once could lose counts; and single-threaded
//! TCG cannot be used instead: a Linux guest's loops of inner-shareable TLB
//! invalidations then take minutes, under plain QEMU as under splitvisor).
//!
//! Under `-icount` (`splitvisor bench`), counting per block overcounts:
//! QEMU stops a block at a device access that is not its last instruction
//! and runs the rest in new blocks, so the first block's callback has
//! counted instructions that run again. `count=insn` counts each
//! instruction instead, with an inline add before it: exact there (QEMU
//! re-executes the access itself in a block that is not instrumented), and
//! safe because precise icount runs all CPUs in one thread; under
//! multi-threaded TCG two CPUs could lose each other's adds.
//!
//! Written against QEMU 7.2's plugin API (version 1, Debian 12's
//! `qemu-system-arm`); there is no Rust binding of it, so the few C
//! functions used are declared here.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSymbol, SymbolKind};

/// A function of the monitor image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Its first address.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its demangled name (without the hash).
    pub name: String,
}

/// What the report needs to know of the monitor ELF.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// `__image_start`: the entry, and the first byte of the image.
    pub start: u64,
    /// `__splitvisor_end`: the first byte after it.
    pub end: u64,
    /// Its functions, by address.
    pub functions: Vec<Function>,
}

/// The parts of the hypervisor a function is counted in.
pub const PARTS: [&str; 4] = ["monitor", "vcpu server", "vgic server", "vtimer server"];

/// The part of `name` (a demangled function name): a server's own code, or
/// the monitor (the trap path, routing, containment, and the code both
/// share, `core` and `ipc` included).
pub fn part_of(name: &str) -> usize {
    let path = name.strip_prefix('<').unwrap_or(name);
    for (i, prefix) in [(1, "vcpu_server::"), (2, "vgic_server::"), (3, "vtimer_server::")] {
        if path.starts_with(prefix) {
            return i;
        }
    }
    0
}

impl Image {
    /// Read the image's bounds and functions from the monitor ELF.
    pub fn read(elf: &[u8]) -> Result<Image, String> {
        let file = object::File::parse(elf).map_err(|e| format!("not an ELF file: {e}"))?;
        let mut image = Image::default();
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            match name {
                "__image_start" => image.start = symbol.address(),
                "__splitvisor_end" => image.end = symbol.address(),
                _ if symbol.kind() == SymbolKind::Text && symbol.size() > 0 => image.functions.push(Function {
                    start: symbol.address() & !1,
                    size: symbol.size(),
                    name: format!("{:#}", rustc_demangle::demangle(name)),
                }),
                _ => {}
            }
        }
        if image.start == 0 || image.end <= image.start {
            return Err("no __image_start/__splitvisor_end: not a splitvisor monitor ELF".into());
        }
        image.functions.sort_by_key(|f| f.start);
        Ok(image)
    }

    /// The function at `addr`.
    pub fn function_at(&self, addr: u64) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.start <= addr).checked_sub(1)?;
        let f = &self.functions[i];
        (addr < f.start + f.size).then_some(f)
    }
}

/// One translated block as the report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCount {
    /// Its guest virtual address.
    pub vaddr: u64,
    /// The host address of its code.
    pub haddr: u64,
    /// Its instructions.
    pub insns: u64,
    /// How often it ran.
    pub runs: u64,
}

/// Where the instructions went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every instruction executed.
    pub total: u64,
    /// Those in the monitor image, by part ([`PARTS`]).
    pub parts: [u64; 4],
    /// Those in the monitor image, by function.
    pub functions: BTreeMap<String, u64>,
    /// The monitor image's blocks that ran, by the image address of their
    /// first instruction: (instructions in the block, runs). Blocks QEMU
    /// translated more than once at one address are added up.
    pub blocks: BTreeMap<u64, (u64, u64)>,
}

impl Report {
    /// Attribute `blocks` (in translation order) to `image`.
    pub fn new(image: &Image, blocks: &[BlockCount]) -> Result<Report, String> {
        let anchor = blocks
            .iter()
            .find(|b| b.vaddr == image.start)
            .map(|b| b.haddr)
            .ok_or("the monitor's entry was never translated: was the monitor QEMU's -kernel?")?;
        let size = image.end - image.start;
        let mut report = Report::default();
        for b in blocks {
            let n = b.insns * b.runs;
            report.total += n;
            let Some(offset) = b.haddr.checked_sub(anchor).filter(|&o| o < size) else { continue };
            let (part, name) = match image.function_at(image.start + offset) {
                Some(f) => (part_of(&f.name), f.name.as_str()),
                None => (0, "(outside any function)"),
            };
            report.parts[part] += n;
            *report.functions.entry(name.to_string()).or_default() += n;
            if b.runs > 0 {
                let block = report.blocks.entry(image.start + offset).or_insert((b.insns, 0));
                block.1 += b.runs;
            }
        }
        Ok(report)
    }

    /// The monitor's blocks, one line each in address order: address,
    /// instructions, runs, instructions executed, function (for reading
    /// beside a disassembly of the monitor ELF).
    pub fn render_blocks(&self, image: &Image) -> String {
        let mut out = String::from("address insns runs executed function\n");
        for (&addr, &(insns, runs)) in &self.blocks {
            let name = image.function_at(addr).map_or("(outside any function)", |f| f.name.as_str());
            let _ = writeln!(out, "{addr:#010x} {insns} {runs} {} {name}", insns * runs);
        }
        out
    }

    /// Instructions in the monitor image.
    pub fn hypervisor(&self) -> u64 {
        self.parts.iter().sum()
    }

    /// The report as text: the totals as `key: value` lines, then the
    /// `top` functions.
    pub fn render(&self, top: usize) -> String {
        let pct = |n: u64| if self.total == 0 { 0.0 } else { n as f64 * 100.0 / self.total as f64 };
        let mut out = String::new();
        let _ = writeln!(out, "instructions: {}", self.total);
        let _ = writeln!(out, "hypervisor: {} ({:.3} %)", self.hypervisor(), pct(self.hypervisor()));
        for (name, n) in PARTS.iter().zip(self.parts) {
            let _ = writeln!(out, "{name}: {n} ({:.3} %)", pct(n));
        }
        let _ = writeln!(out, "guest and firmware: {}", self.total - self.hypervisor());
        let mut functions: Vec<_> = self.functions.iter().collect();
        functions.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ = writeln!(out, "top functions in the hypervisor (instructions, share of the hypervisor's):");
        let h = self.hypervisor().max(1) as f64;
        for (name, n) in functions.into_iter().take(top) {
            let _ = writeln!(out, "{n:>14} {:>6.2} %  {name}", *n as f64 * 100.0 / h);
        }
        out
    }
}

/// How executions are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counting {
    /// A callback per block run, adding atomically: exact under
    /// multi-threaded TCG, not under `-icount` (see the crate's
    /// documentation).
    #[default]
    Block,
    /// An inline add before each instruction: exact under `-icount`, whose
    /// single thread it needs.
    Insn,
}

/// The plugin's arguments: `monitor=PATH` (the monitor ELF QEMU runs),
/// `out=PATH` (where the report goes at exit) and, optionally,
/// `blocks=PATH` (where the monitor's per-block counts go, see
/// [`Report::render_blocks`]) and `count=block|insn` ([`Counting`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The monitor ELF.
    pub monitor: PathBuf,
    /// The report file.
    pub out: PathBuf,
    /// The per-block counts' file, if asked for.
    pub blocks: Option<PathBuf>,
    /// How executions are counted.
    pub count: Counting,
}

impl Args {
    /// Parse `key=value` arguments.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Args, String> {
        let (mut monitor, mut out, mut blocks, mut count) = (None, None, None, Counting::default());
        for arg in args {
            match arg.split_once('=') {
                Some(("monitor", v)) => monitor = Some(PathBuf::from(v)),
                Some(("out", v)) => out = Some(PathBuf::from(v)),
                Some(("blocks", v)) => blocks = Some(PathBuf::from(v)),
                Some(("count", "block")) => count = Counting::Block,
                Some(("count", "insn")) => count = Counting::Insn,
                _ => {
                    return Err(format!(
                        "unknown argument {arg:?} (expected monitor=PATH, out=PATH and optionally blocks=PATH \
                         and count=block or count=insn)"
                    ))
                }
            }
        }
        Ok(Args {
            monitor: monitor.ok_or("missing monitor=PATH (the monitor ELF)")?,
            out: out.ok_or("missing out=PATH (the report file)")?,
            blocks,
            count,
        })
    }
}

// ---- The QEMU side. -------------------------------------------------------

/// QEMU's opaque translation block handle.
#[repr(C)]
pub struct QemuPluginTb {
    _opaque: [u8; 0],
}

/// QEMU's opaque instruction handle.
#[repr(C)]
pub struct QemuPluginInsn {
    _opaque: [u8; 0],
}

/// `enum qemu_plugin_cb_flags`: `QEMU_PLUGIN_CB_NO_REGS`.
const QEMU_PLUGIN_CB_NO_REGS: c_int = 0;
/// `enum qemu_plugin_op`: `QEMU_PLUGIN_INLINE_ADD_U64`.
const QEMU_PLUGIN_INLINE_ADD_U64: c_int = 0;

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: u64, cb: extern "C" fn(u64, *mut QemuPluginTb));
    fn qemu_plugin_register_atexit_cb(id: u64, cb: extern "C" fn(u64, *mut c_void), userdata: *mut c_void);
    fn qemu_plugin_tb_n_insns(tb: *const QemuPluginTb) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const QemuPluginTb) -> u64;
    fn qemu_plugin_tb_get_insn(tb: *const QemuPluginTb, idx: usize) -> *mut QemuPluginInsn;
    fn qemu_plugin_insn_haddr(insn: *const QemuPluginInsn) -> *mut c_void;
    fn qemu_plugin_insn_vaddr(insn: *const QemuPluginInsn) -> u64;
    fn qemu_plugin_register_vcpu_insn_exec_inline(insn: *mut QemuPluginInsn, op: c_int, ptr: *mut c_void, imm: u64);
    fn qemu_plugin_register_vcpu_tb_exec_cb(
        tb: *mut QemuPluginTb,
        cb: extern "C" fn(u32, *mut c_void),
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_outs(string: *const c_char);
}

/// The plugin API version this plugin was written for (QEMU 7.2).
#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

/// A block being counted (`on_run` adds to `runs`).
struct Block {
    vaddr: u64,
    haddr: u64,
    insns: u64,
    runs: AtomicU64,
}

/// Boxed: QEMU keeps each block's address (the callback's userdata), so a
/// block must not move when the vector grows.
#[allow(clippy::vec_box)]
static BLOCKS: Mutex<Vec<Box<Block>>> = Mutex::new(Vec::new());
static SETUP: OnceLock<(Args, Image)> = OnceLock::new();

fn say(text: &str) {
    if let Ok(text) = std::ffi::CString::new(format!("insn-count: {text}\n")) {
        // SAFETY: a NUL-terminated string, alive for the call.
        unsafe { qemu_plugin_outs(text.as_ptr()) };
    }
}

extern "C" fn on_translate(_id: u64, tb: *mut QemuPluginTb) {
    let per_insn = SETUP.get().is_some_and(|(args, _)| args.count == Counting::Insn);
    // SAFETY: QEMU passes a valid block handle for the duration of the
    // callback.
    let n = unsafe { qemu_plugin_tb_n_insns(tb) };
    if n == 0 {
        return;
    }
    if per_insn {
        for i in 0..n {
            // SAFETY: `i` is below the block's instruction count, and the
            // handle is valid for the callback.
            let insn = unsafe { qemu_plugin_tb_get_insn(tb, i) };
            // SAFETY: a valid instruction handle of this block.
            let (vaddr, haddr) = unsafe { (qemu_plugin_insn_vaddr(insn), qemu_plugin_insn_haddr(insn) as u64) };
            let block = Box::new(Block { vaddr, haddr, insns: 1, runs: AtomicU64::new(0) });
            // SAFETY: the counter lives in a heap Block that is never freed
            // (kept in BLOCKS to the end of the process). The inline add is
            // not atomic: `count=insn` is for precise icount, where every
            // CPU runs in QEMU's one TCG thread.
            unsafe {
                qemu_plugin_register_vcpu_insn_exec_inline(
                    insn,
                    QEMU_PLUGIN_INLINE_ADD_U64,
                    block.runs.as_ptr().cast::<c_void>(),
                    1,
                );
            }
            if let Ok(mut blocks) = BLOCKS.lock() {
                blocks.push(block);
            }
        }
        return;
    }
    // SAFETY: as above; the instruction handle is the block's own.
    let (vaddr, haddr) =
        unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0)) as u64) };
    let block = Box::new(Block { vaddr, haddr, insns: n as u64, runs: AtomicU64::new(0) });
    let userdata = std::ptr::from_ref::<Block>(&block).cast_mut().cast::<c_void>();
    // SAFETY: `userdata` points at a heap Block that is never freed (the
    // Box is kept in BLOCKS to the end of the process); `on_run` only
    // reads it and adds to its atomic counter.
    unsafe { qemu_plugin_register_vcpu_tb_exec_cb(tb, on_run, QEMU_PLUGIN_CB_NO_REGS, userdata) };
    if let Ok(mut blocks) = BLOCKS.lock() {
        blocks.push(block);
    }
}

extern "C" fn on_run(_vcpu: u32, userdata: *mut c_void) {
    // SAFETY: `userdata` is the Block `on_translate` registered, alive to
    // the end of the process; only shared access through an atomic.
    let block = unsafe { &*userdata.cast_const().cast::<Block>() };
    block.runs.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn on_exit(_id: u64, _userdata: *mut c_void) {
    let Some((args, image)) = SETUP.get() else { return };
    let blocks: Vec<BlockCount> = match BLOCKS.lock() {
        Ok(blocks) => blocks
            .iter()
            .map(|b| BlockCount {
                vaddr: b.vaddr,
                haddr: b.haddr,
                insns: b.insns,
                runs: b.runs.load(Ordering::Relaxed),
            })
            .collect(),
        Err(_) => return,
    };
    match Report::new(image, &blocks) {
        Ok(report) => {
            if let Err(e) = std::fs::write(&args.out, report.render(40)) {
                say(&format!("cannot write {}: {e}", args.out.display()));
            }
            if let Some(path) = &args.blocks {
                if let Err(e) = std::fs::write(path, report.render_blocks(image)) {
                    say(&format!("cannot write {}: {e}", path.display()));
                }
            }
        }
        Err(e) => say(&e),
    }
}

/// QEMU's entry point: parse the arguments, read the monitor ELF, and
/// register the callbacks. A non-zero return makes QEMU refuse to start.
///
/// # Safety
/// Called by QEMU with `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: u64,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut strings = Vec::new();
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: QEMU gives argc NUL-terminated strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
        strings.push(arg.to_string_lossy().into_owned());
    }
    let setup = Args::parse(strings.iter().map(String::as_str)).and_then(|args| {
        let elf = std::fs::read(&args.monitor).map_err(|e| format!("{}: {e}", args.monitor.display()))?;
        Ok((args, Image::read(&elf)?))
    });
    match setup {
        Ok(setup) => {
            let _ = SETUP.set(setup);
            // SAFETY: the callbacks have the signatures QEMU expects and
            // live as long as the process.
            unsafe {
                qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
                qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
            }
            0
        }
        Err(e) => {
            say(&e);
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        let f = |start, size, name: &str| Function { start, size, name: name.into() };
        Image {
            start: 0x4020_0000,
            end: 0x4030_0000,
            functions: vec![
                f(0x4020_0000, 0x100, "_start"),
                f(0x4020_0100, 0x100, "<vgic_server::VgicServer as ipc::Server>::handle_message"),
                f(0x4020_0200, 0x100, "vcpu_server::psci::call"),
                f(0x4020_0300, 0x100, "el2_monitor::arch::armv7::isolate::Guarded<vgic_server::VgicServer>::deliver"),
            ],
        }
    }

    #[test]
    fn parts_follow_the_crate_a_function_belongs_to() {
        assert_eq!(part_of("<vgic_server::VgicServer as ipc::Server>::handle_message"), 2);
        assert_eq!(part_of("vtimer_server::VtimerServer::start"), 3);
        assert_eq!(part_of("vcpu_server::psci::call"), 1);
        // The monitor's generic code over a server type is the monitor's.
        assert_eq!(part_of("el2_monitor::arch::armv7::isolate::Guarded<vgic_server::VgicServer>::deliver"), 0);
        assert_eq!(part_of("core::ptr::drop_in_place<vgic_server::VgicServer>"), 0);
    }

    #[test]
    fn blocks_are_placed_by_host_address_from_the_entry() {
        let host = 0x7f00_0000_0000u64;
        let blocks = [
            // The monitor's entry: the anchor.
            BlockCount { vaddr: 0x4020_0000, haddr: host, insns: 4, runs: 1 },
            // The vGIC server, run 10 times.
            BlockCount { vaddr: 0x4020_0100, haddr: host + 0x100, insns: 5, runs: 10 },
            // The guest at the same virtual address as the monitor's vCPU
            // code (MMU off), elsewhere in host memory: not the monitor's.
            BlockCount { vaddr: 0x4020_0200, haddr: host + 0x200_0000, insns: 7, runs: 100 },
            BlockCount { vaddr: 0x4020_0300, haddr: host + 0x300, insns: 2, runs: 3 },
        ];
        let report = Report::new(&image(), &blocks).unwrap();
        assert_eq!(report.total, 4 + 50 + 700 + 6);
        assert_eq!(report.parts, [4 + 6, 0, 50, 0]);
        assert_eq!(report.hypervisor(), 60);
        assert_eq!(report.functions["_start"], 4);
        let text = report.render(10);
        assert!(text.starts_with("instructions: 760\nhypervisor: 60 (7.895 %)\n"), "{text}");
        // The monitor's blocks by image address; the guest's is not there.
        assert_eq!(report.blocks.len(), 3);
        assert_eq!(report.blocks[&0x4020_0100], (5, 10));
        let lines = report.render_blocks(&image());
        assert!(
            lines.contains("0x40200100 5 10 50 <vgic_server::VgicServer as ipc::Server>::handle_message\n"),
            "{lines}"
        );
    }

    #[test]
    fn a_block_translated_twice_is_counted_once_with_both_runs() {
        let host = 0x7f00_0000_0000u64;
        let blocks = [
            BlockCount { vaddr: 0x4020_0000, haddr: host, insns: 4, runs: 1 },
            BlockCount { vaddr: 0x4020_0200, haddr: host + 0x200, insns: 3, runs: 2 },
            BlockCount { vaddr: 0x4020_0200, haddr: host + 0x200, insns: 3, runs: 5 },
        ];
        let report = Report::new(&image(), &blocks).unwrap();
        assert_eq!(report.blocks[&0x4020_0200], (3, 7));
    }

    #[test]
    fn a_run_that_never_entered_the_monitor_is_an_error() {
        let blocks = [BlockCount { vaddr: 0x1000, haddr: 0x1000, insns: 1, runs: 1 }];
        assert!(Report::new(&image(), &blocks).is_err());
    }

    #[test]
    fn arguments_are_checked() {
        let args = Args::parse(["monitor=/m.elf", "out=/r.txt"]).unwrap();
        assert_eq!(args.monitor, PathBuf::from("/m.elf"));
        assert_eq!(args.blocks, None);
        assert_eq!(args.count, Counting::Block);
        let args = Args::parse(["monitor=/m.elf", "out=/r.txt", "blocks=/b.txt", "count=insn"]).unwrap();
        assert_eq!(args.blocks, Some(PathBuf::from("/b.txt")));
        assert_eq!(args.count, Counting::Insn);
        assert!(Args::parse(["monitor=/m.elf", "out=x", "count=tb"]).unwrap_err().contains("count=insn"));
        assert!(Args::parse(["monitor=/m.elf"]).unwrap_err().contains("out=PATH"));
        assert!(Args::parse(["monitr=/m.elf", "out=x"]).unwrap_err().contains("unknown argument"));
    }

    #[test]
    fn functions_are_found_by_address() {
        let image = image();
        assert_eq!(image.function_at(0x4020_0150).unwrap().name, image.functions[1].name);
        assert!(image.function_at(0x4020_0400).is_none());
        assert!(image.function_at(0x4000_0000).is_none());
    }
}
