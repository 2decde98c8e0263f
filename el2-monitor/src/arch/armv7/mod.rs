//! ARMv7-A with the Virtualization Extensions (Cortex-A15/A7), Hyp mode.
//!
//! Boot, per-CPU Hyp set-up, the trap entry, and the glue between the
//! hardware and the router. One vCPU runs on each physical CPU (1:1); the
//! servers are shared by all CPUs, each under its own lock, and run on the
//! trapping CPU (a synchronous call, like seL4's call with direct hand-off).

pub mod sysreg;

mod boot;
mod console_image;
mod devices;
#[cfg(feature = "direct-call")]
mod direct;
// The direct-call build leaves the containment machinery unused.
#[cfg_attr(feature = "direct-call", allow(dead_code))]
mod domain;
mod hostlink;
#[cfg_attr(feature = "direct-call", allow(dead_code))]
mod isolate;
mod lock;
mod logger;
mod mem;
mod mmu;
mod platform;
mod profile;
mod trace;
mod vcpu;

use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use el2_monitor::router::{self, Delivery, PhysIrqs, RouteTable, Servers, Stats};
use el2_monitor::syndrome::{self, Decoded, ExceptionClass, Syndrome};
use ipc::{Message, Reply, ServerError, ServerId, Trap, VcpuId, VcpuRequest, VgicRequest, VmConfig, VtimerRequest};

use spin::{Mutex, Once};
use tock_registers::interfaces::{Readable, Writeable};
use vcpu_server::VcpuServer;
use vgic_server::VgicServer;
use vtimer_server::VtimerServer;

use devices::{Gic, Uart};
use platform::Platform;
use sysreg::{HCPTR, HCR, HCR_BITS, HDCR, HDFAR, HIFAR, HPFAR, HSR, HSTR, HTPIDR, MIDR, PMCR, SCTLR, VMPIDR, VPIDR};
use vcpu::{Frame, Hw, Next};

/// The most physical CPUs (and so vCPUs) the monitor runs on.
pub const MAX_CPUS: usize = ipc::MAX_VCPUS;
/// Each CPU's Hyp stack. The servers run on it, so it is generous.
pub const STACK_SIZE: usize = 0x2_0000;

/// The SGI the monitor uses to kick another CPU (physical SGIs are the
/// monitor's own; the guest's SGIs are virtual).
const KICK_SGI: u16 = 0;
/// The physical SGI that wakes a CPU sleeping on a server's lock.
const WAKE_SGI: u16 = 1;

/// The guest's SCTLR at power-on: MMU, caches and alignment checks off, with
/// the Cortex-A15's reset value for the rest (RES1 bits).
const GUEST_SCTLR_RESET: u32 = 0x00c5_0078;
/// The guest's CPSR at power-on: SVC mode, A, I and F masked (Linux boot
/// protocol, PSCI CPU_ON).
const GUEST_CPSR_RESET: u32 = 0x1d3;
/// VMPIDR: bit 31 is RES1 (multiprocessing extensions), U = 0.
const MPIDR_MP: u32 = 1 << 31;

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);

/// The Hyp stacks, one per CPU (the boot code points SP at them).
#[no_mangle]
static mut MONITOR_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

extern "C" {
    static __splitvisor_config: u8;
    static __splitvisor_end: u8;
}

/// The three servers, each under its own lock, each guarded (contained
/// and restorable, see `isolate`), or called directly in the
/// `direct-call` build.
struct ServerSet {
    vcpu: ServerLock<Hosting<VcpuServer>>,
    vgic: ServerLock<Hosting<VgicServer>>,
    vtimer: ServerLock<Hosting<VtimerServer>>,
}

/// How a server is reached: through the message path, contained (see
/// `isolate`), or, in the `direct-call` build, called as a function (see
/// `direct`).
#[cfg(not(feature = "direct-call"))]
type Hosting<S> = isolate::Guarded<S>;
#[cfg(feature = "direct-call")]
type Hosting<S> = direct::Direct<S>;

type ServerLock<T> = lock::SleepLock<T, Cpus>;

/// Lock waits sleep in WFI and are ended by the wake SGI.
struct Cpus;

impl lock::Waker for Cpus {
    fn ready() -> bool {
        VM.get().is_some()
    }

    fn current() -> usize {
        HTPIDR.get() as usize
    }

    fn wake(cpus: u32) {
        gic().send_sgi_to(WAKE_SGI, cpus);
    }

    // Out of line: the waits are rare, and inlined into each server's
    // delivery it cost every message instructions.
    #[inline(never)]
    fn sleep() {
        let gic = gic();
        let mask = gic.priority_mask();
        gic.set_priority_mask(devices::PRIORITY_MASK_WAKE_ONLY);
        let start = profile::now();
        wait_for_interrupt();
        profile::add_here(profile::Part::Lock, start);
        gic.set_priority_mask(mask);
        gic.take_pending(WAKE_SGI);
    }
}

// On the VM rather than its server set, so that a call reaches the
// configuration without looking the VM up again (`vm()` is an acquire load
// and a check, several times a trap).
impl Servers for &Vm {
    fn call(&mut self, message: &Message, reply: &mut Reply) -> Result<(), ServerError> {
        // With tracing on, the request and its reply are recorded while the
        // server's lock is held, so each server's records are in the order
        // it handled them, whatever the other CPUs do. Out of line: inlined
        // three times (a server each) into the delivery loop, it made the
        // loop too large to keep its values in registers.
        #[inline(never)]
        fn traced<S: domain::Hosted>(
            server: &ServerLock<Hosting<S>>,
            config: &VmConfig,
            message: &Message,
            reply: &mut Reply,
        ) -> Result<(), ServerError> {
            let mut server = server.lock();
            let seq = trace::request(message);
            let result = server.deliver(message, config, reply);
            if let Some(seq) = seq {
                trace::reply(seq, S::ID, &result.map(|()| reply.clone()));
            }
            result
        }
        match message.server() {
            ServerId::Vcpu => traced(&self.servers.vcpu, &self.config, message, reply),
            ServerId::Vgic => traced(&self.servers.vgic, &self.config, message, reply),
            ServerId::Vtimer => traced(&self.servers.vtimer, &self.config, message, reply),
        }
    }

    fn timer(&self) -> ipc::TimerIntids {
        self.config.timer
    }
}

/// Everything the CPUs share once the boot CPU has set it up.
struct Vm {
    config: VmConfig,
    platform: Platform,
    table: RouteTable,
    gic: Gic,
    servers: ServerSet,
}

static VM: Once<Vm> = Once::new();
/// How many console bytes the vCPU server can take now (its newest
/// `ConsoleReady`), and the physical UART's receive interrupt set to match,
/// under one lock.
static CONSOLE_ROOM: Mutex<router::ConsoleRoom> = Mutex::new(router::ConsoleRoom::new());
/// PowerOn requests waiting for a parked CPU: (entry, context id).
static MAILBOX: [Mutex<Option<(u32, u32)>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];
/// Per-CPU reply buffers, lent to each delivery (see `deliver`), each alone
/// in its page: a server writes its reply into the buffer of the CPU it runs
/// on in place, through its domain's window (see `domain::open_window`).
static REPLIES: [ReplyPage; MAX_CPUS] = [const { ReplyPage::new() }; MAX_CPUS];

/// One CPU's reply buffer, which only that CPU uses (vCPU n runs on CPU n,
/// and a delivery for vCPU n takes page n), with a flag that keeps a second
/// delivery on the same CPU off it. A flag rather than a lock: with one
/// user, taking a lock's exclusive load/store pair and its two barriers
/// were some five instructions a trap spent on nothing.
#[repr(C, align(4096))]
struct ReplyPage {
    busy: AtomicBool,
    reply: UnsafeCell<Reply>,
}

// SAFETY: each page is used by one CPU only (see `ReplyPage`), and its
// `busy` flag lends the reply to one delivery at a time.
unsafe impl Sync for ReplyPage {}

impl ReplyPage {
    const fn new() -> Self {
        ReplyPage { busy: AtomicBool::new(false), reply: UnsafeCell::new(Reply::none()) }
    }

    /// The buffer, unless a delivery on this CPU has it (none should).
    /// Only by the page's own CPU: the flag is read and then set, not
    /// exchanged, so another CPU's use would race.
    #[inline(always)]
    fn take(&self) -> Option<LentReply<'_>> {
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        self.busy.store(true, Ordering::Relaxed);
        // Not before the flag: an exception taken on this CPU from here on
        // sees it set.
        compiler_fence(Ordering::SeqCst);
        Some(LentReply { page: self })
    }
}

/// The reply buffer lent to one delivery; the flag is cleared when it ends.
struct LentReply<'a> {
    page: &'a ReplyPage,
}

impl LentReply<'_> {
    fn get(&mut self) -> &mut Reply {
        // SAFETY: the page's flag was clear and is set while this lives
        // (see `ReplyPage::take`), and only this CPU uses the page: no other
        // reference to the reply exists.
        unsafe { &mut *self.page.reply.get() }
    }
}

impl Drop for LentReply<'_> {
    fn drop(&mut self) {
        // Every use of the reply before the flag is cleared.
        compiler_fence(Ordering::SeqCst);
        self.page.busy.store(false, Ordering::Relaxed);
    }
}

const _: () = assert!(core::mem::size_of::<ReplyPage>() as u64 == mmu::PAGE, "a reply buffer fits its page");

/// Whether `reply` is CPU `cpu`'s reply buffer (the only `Reply` in its
/// page).
fn is_reply_buffer(cpu: usize, reply: *const Reply) -> bool {
    let page_of = |address: usize| address & !(mmu::PAGE as usize - 1);
    REPLIES.get(cpu).is_some_and(|page| page_of(reply as usize) == core::ptr::from_ref(page) as usize)
}
/// Per-CPU counters.
static STATS: [CpuStats; MAX_CPUS] = [const { CpuStats::new() }; MAX_CPUS];

/// One CPU's counters, added to in place by the CPU itself (each trap and
/// each message): no lock, no copy. A shutdown reads every CPU's.
struct CpuStats {
    traps: [AtomicU64; router::TRAP_KINDS.len()],
    messages: [AtomicU64; 3],
    refused: AtomicU64,
    dropped: AtomicU64,
}

impl CpuStats {
    const fn new() -> Self {
        CpuStats {
            traps: [const { AtomicU64::new(0) }; router::TRAP_KINDS.len()],
            messages: [const { AtomicU64::new(0) }; 3],
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Add one to one of this CPU's own counters (no other CPU writes it;
    /// another may read it, with an atomic load).
    ///
    /// Written out rather than `fetch_add`: for a 64-bit atomic, rustc
    /// emits an exclusive-load/store loop (LDREXD/STREXD), since ARMv7 alone
    /// does not make a plain doubleword access single-copy atomic. A
    /// counter with one writer needs no exclusive access, only that a
    /// reader never sees half of a store; with the Large Physical Address
    /// Extension (which the Cortex-A15 has, and Hyp mode's long-descriptor
    /// tables need) an LDRD or STRD of an 8-byte-aligned doubleword is
    /// single-copy atomic (ARM DDI 0406C, A3.5.3). Two instructions less a
    /// counter, and two counters a trap.
    #[inline(always)]
    fn bump(cell: &AtomicU64) {
        // SAFETY: `cell` is an AtomicU64, so valid and 8-byte aligned; only
        // this CPU writes it (the counters are per CPU), so the load and the
        // store need no exclusive pair; and both are single-copy atomic (see
        // above), so a reader on another CPU sees the old value or the new
        // one, as with an atomic store. LDRD/STRD in ARM state take an even
        // register and the next one: r2 and r3.
        unsafe {
            core::arch::asm!(
                "ldrd r2, r3, [{cell}]",
                "adds r2, r2, #1",
                "adc r3, r3, #0",
                "strd r2, r3, [{cell}]",
                cell = in(reg) cell.as_ptr(),
                out("r2") _,
                out("r3") _,
                options(nostack),
            );
        }
    }

    /// Add `n` to one of this CPU's counters (the rare ones).
    fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            traps: self.traps.each_ref().map(read),
            messages: self.messages.each_ref().map(read),
            refused: read(&self.refused),
            dropped: read(&self.dropped),
            ticks: [0; router::PROFILE_PARTS.len()],
        }
    }
}

impl router::Counters for &CpuStats {
    fn message(&mut self, server: ServerId) {
        CpuStats::bump(&self.messages[server.index()]);
    }

    fn refused(&mut self) {
        CpuStats::add(&self.refused, 1);
    }

    fn dropped(&mut self, n: u64) {
        CpuStats::add(&self.dropped, n);
    }
}

/// Whether servers are contained (checkpointed and run under the
/// watchdog): isolation on, and not the direct-call build.
fn contained(config: &VmConfig) -> bool {
    config.isolation && cfg!(not(feature = "direct-call"))
}

fn vm() -> &'static Vm {
    match VM.get() {
        Some(vm) => vm,
        None => fatal("trap before the VM was set up"),
    }
}

fn gic() -> &'static Gic {
    &vm().gic
}

fn uart() -> &'static Uart {
    match hostlink::uart() {
        Some(uart) => uart,
        None => fatal("console used before the UART was known"),
    }
}

fn console_write(bytes: &[u8]) {
    hostlink::console(bytes);
}

/// Stop everything: a hypervisor bug, reported on the log.
fn fatal(why: &str) -> ! {
    log::error!("monitor fault: {why}");
    hostlink::exit(ipc::exit::MONITOR_FAULT)
}

fn shutdown(status: u8) -> ! {
    if let Some(vm) = VM.get() {
        let mut total = Stats::default();
        for (cpu, s) in STATS.iter().take(usize::from(vm.config.vcpus)).enumerate() {
            total.add(&s.snapshot());
            total.add(&Stats { ticks: profile::ticks(cpu), ..Stats::default() });
        }
        log::info!("VM stopped with status {status}");
        log::info!("stats: {total}");
        report_stacks(usize::from(vm.config.vcpus));
        if vm.config.isolation {
            domain::report_stacks();
        }
    }
    hostlink::exit(status)
}

/// Call `server` on `message` on this CPU's stack, in the monitor's own
/// translation, with no containment, timing it for the `profile` build:
/// how `--no-isolation` reaches a server, and how the direct-call build
/// reaches every one.
#[inline(always)]
fn call_in_place<S: ipc::Server>(server: &mut S, message: &Message, reply: &mut Reply) -> Result<(), ServerError> {
    let start = profile::now();
    let result = server.handle_message_into(message, reply);
    profile::add(HTPIDR.get() as usize, profile::Part::server(S::ID), start);
    result
}

/// Log each CPU's Hyp stack high-water mark. The stacks start zeroed (they
/// are in .bss) and grow down, so the zero bytes at the bottom of each were
/// never used (or were used for zeros: an estimate from below, by at most
/// a few words).
fn report_stacks(cpus: usize) {
    // The scan is skipped when nothing would be logged (it was 4 % of the
    // hypervisor's instructions in a whole Linux boot at byte steps).
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let stacks = core::ptr::addr_of!(MONITOR_STACKS);
    for cpu in 0..cpus.min(MAX_CPUS) {
        // SAFETY: only read, bytes; this CPU's own stack is below its SP,
        // and another CPU's is only read (a racy read gives a wrong
        // estimate, nothing worse).
        let stack = unsafe { &(*stacks).0[cpu] };
        let untouched = untouched_bytes(stack, 0);
        log::info!("cpu{cpu}: Hyp stack high-water {} of {STACK_SIZE} bytes", STACK_SIZE - untouched);
    }
}

/// How many bytes at the start of `stack` (its unused end: stacks grow
/// down) still hold `paint`: a word at a time, then bytewise in the first
/// word that differs.
fn untouched_bytes(stack: &[u8], paint: u8) -> usize {
    let word = u32::from_ne_bytes([paint; 4]);
    let words = stack
        .chunks_exact(4)
        .take_while(|c| <[u8; 4]>::try_from(*c).is_ok_and(|w| u32::from_ne_bytes(w) == word))
        .count();
    let rest = stack.get(words * 4..).unwrap_or(&[]);
    words * 4 + rest.iter().take_while(|&&b| b == paint).count()
}

/// Count a trap on this CPU.
fn count_trap(vcpu: VcpuId, trap: Option<&Trap>) {
    if let Some(cell) = STATS.get(vcpu.index()).and_then(|s| s.traps.get(router::trap_kind(trap))) {
        CpuStats::bump(cell);
    }
}

fn kick(vcpu: VcpuId) {
    gic().send_sgi(KICK_SGI, vcpu.index());
}

fn power_on(vcpu: VcpuId, entry: u32, context_id: u32) {
    if let Some(slot) = MAILBOX.get(vcpu.index()) {
        *slot.lock() = Some((entry, context_id));
        // The lock's release orders the mailbox before the SGI's write.
        kick(vcpu);
    }
}

fn wait_for_interrupt() {
    // SAFETY: WFI only idles the CPU; IRQs are masked in Hyp mode, so a
    // pending interrupt wakes it without being taken here, and is taken
    // (routed to Hyp) as soon as the guest is re-entered.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
}

fn read_config() -> Result<VmConfig, ipc::WireError> {
    // SAFETY: the linker script reserves MAX_BLOB_SIZE bytes at
    // `__splitvisor_config`, outside every section, for the loader's blob;
    // nothing writes there while the monitor runs.
    let area =
        unsafe { core::slice::from_raw_parts(core::ptr::addr_of!(__splitvisor_config), ipc::wire::MAX_BLOB_SIZE) };
    ipc::wire::decode_blob(area)
}

/// The boot CPU's path from reset to the first guest instruction.
#[no_mangle]
extern "C" fn boot_primary(cpu: u32) -> ! {
    HTPIDR.set(cpu);
    logger::init(log::LevelFilter::Info);
    let platform = match platform::discover() {
        Ok(p) => p,
        Err(e) => fatal_with(ipc::exit::MONITOR_FAULT, format_args!("platform device tree: {e}")),
    };
    // SAFETY: the device tree names the UART; until the Hyp MMU is on,
    // accesses are to device memory anyway, and afterwards the identity map
    // covers it as device memory. Only the host link uses it.
    unsafe { hostlink::init(platform.uart as usize) };
    let config = match read_config() {
        Ok(c) => c,
        Err(e) => fatal_with(ipc::exit::BAD_CONFIG, format_args!("VM configuration unreadable: {e}")),
    };
    if let Err(e) = config.validate() {
        fatal_with(ipc::exit::BAD_CONFIG, format_args!("VM configuration invalid: {e}"));
    }
    logger::init(logger::level_from_config(config.log_level));
    #[cfg(feature = "direct-call")]
    direct::announce(&config);
    if config.trace && cfg!(not(feature = "direct-call")) {
        trace::start(&config);
    }
    check_fits(&config, &platform);
    log::info!(
        "splitvisor: {} vCPU(s), guest RAM {:#x}+{:#x} at PA {:#x}, entry {:#x}",
        config.vcpus,
        config.ram.ipa,
        config.ram.size,
        config.ram.pa,
        config.entry
    );
    // Said only when asked for (`run --checkpoint-every`, `--budget-ms`),
    // so that the default boot's log stays as it was.
    let containment = config.containment;
    if contained(&config) && containment != ipc::Containment::DEFAULT {
        log::info!(
            "containment: a checkpoint every {} requests, a watchdog budget of {} ms",
            containment.checkpoint_every,
            containment.budget_ms
        );
    }

    mmu::enable_hyp_mmu(true);
    if let Err(e) = mmu::build_stage2(&config, platform.gicv) {
        fatal_with(ipc::exit::BAD_CONFIG, format_args!("stage 2: {e:?}"));
    }
    // SAFETY: the device tree names these frames; the Hyp identity map
    // covers them as device memory and only the monitor uses them.
    let gic = unsafe { Gic::new(platform.gicd as usize, platform.gicc as usize, platform.gich as usize) };
    let table = RouteTable {
        gicd: config.gicd,
        irqs: PhysIrqs {
            maintenance: platform.maintenance_intid,
            kick: KICK_SGI,
            wake: WAKE_SGI,
            vtimer: platform.timer_intids[2],
            hyp_timer: platform.timer_intids[3],
            // The non-secure physical timer's: the guest's physical timer
            // is emulated on the Hyp timer, so this one is the monitor's.
            watchdog: platform.timer_intids[1],
            uart: platform.uart_intid,
        },
    };
    if let Err(e) = domain::build() {
        fatal_with(ipc::exit::MONITOR_FAULT, format_args!("protection domains: {e:?}"));
    }
    let (Some(vcpu), Some(vgic), Some(vtimer)) = (
        Hosting::new(VcpuServer::new(&config)),
        Hosting::new(VgicServer::new(&config)),
        Hosting::new(VtimerServer::new(&config)),
    ) else {
        fatal("a server was set up twice");
    };
    let servers =
        ServerSet { vcpu: ServerLock::new(vcpu), vgic: ServerLock::new(vgic), vtimer: ServerLock::new(vtimer) };
    let vm = VM.call_once(|| Vm { config, platform, table, gic, servers });
    vm.gic.init_distributor();
    vm.gic.enable(vm.platform.uart_intid, 0, devices::MONITOR_PRIORITY);

    for cpu in 1..usize::from(vm.config.vcpus) {
        start_cpu(&vm.platform, cpu);
    }
    init_cpu(0);
    let [r0, r1, r2] = vm.config.boot_regs;
    start_vcpu(0, vm.config.entry, [r0, r1, r2])
}

fn fatal_with(status: u8, why: core::fmt::Arguments<'_>) -> ! {
    log::error!("{why}");
    hostlink::exit(status)
}

/// Refuse a configuration the machine cannot hold.
fn check_fits(config: &VmConfig, platform: &Platform) {
    let monitor_end = core::ptr::addr_of!(__splitvisor_end) as u64;
    let (ram_base, ram_size) = platform.ram;
    if config.ram.pa < monitor_end || config.ram.pa + config.ram.size > ram_base + ram_size {
        fatal_with(
            ipc::exit::BAD_CONFIG,
            format_args!(
                "guest RAM {:#x}+{:#x} is not inside free RAM {monitor_end:#x}..{:#x}",
                config.ram.pa,
                config.ram.size,
                ram_base + ram_size
            ),
        );
    }
    if usize::from(config.vcpus) > platform.cpus.min(MAX_CPUS) {
        fatal_with(ipc::exit::BAD_CONFIG, format_args!("{} vCPUs but {} physical CPUs", config.vcpus, platform.cpus));
    }
}

/// Start a secondary physical CPU through the platform's PSCI; it parks
/// until its vCPU is powered on.
fn start_cpu(platform: &Platform, cpu: usize) {
    let Some(cpu_on) = platform.psci_cpu_on else {
        fatal_with(ipc::exit::BAD_CONFIG, format_args!("no PSCI (method smc) to start CPU {cpu}"));
    };
    let mut result: u32 = cpu_on;
    // SAFETY: a PSCI call to the firmware (QEMU) with the CPU_ON arguments:
    // the target's MPIDR affinity, the physical address of the secondary
    // entry (identity-mapped), and the CPU index as context id.
    unsafe {
        core::arch::asm!(
            ".arch_extension sec", "smc #0",
            inout("r0") result, in("r1") cpu as u32, in("r2") boot::secondary_entry as *const () as usize as u32, in("r3") cpu as u32,
            options(nostack)
        );
    }
    if result != 0 {
        fatal_with(ipc::exit::MONITOR_FAULT, format_args!("PSCI CPU_ON of CPU {cpu} failed: {}", result as i32));
    }
}

/// A secondary CPU arrives here from the boot code.
#[no_mangle]
extern "C" fn boot_secondary(cpu: u32) -> ! {
    HTPIDR.set(cpu);
    mmu::enable_hyp_mmu(false);
    init_cpu(cpu as usize);
    park(cpu as usize)
}

/// Per-CPU Hyp state that does not depend on the vCPU's life cycle.
fn init_cpu(cpu: usize) {
    let vm = vm();
    vm.gic.init_cpu();
    for intid in [vm.table.irqs.maintenance, vm.table.irqs.vtimer, vm.table.irqs.hyp_timer] {
        vm.gic.enable(intid, cpu, devices::MONITOR_PRIORITY);
    }
    if contained(&vm.config) {
        vm.gic.enable(vm.table.irqs.watchdog, cpu, devices::WATCHDOG_PRIORITY);
        isolate::start_watchdog(vm.config.containment.budget_ms);
    }
    vm.gic.enable(KICK_SGI, cpu, devices::KICK_PRIORITY);
    vm.gic.enable(WAKE_SGI, cpu, devices::WAKE_PRIORITY);
    // Route physical interrupts and aborts to Hyp, enable stage 2, turn set/way
    // invalidation into clean+invalidate; the rest of the trap controls come
    // from the vCPU server when the vCPU starts.
    HCR.write(HCR_BITS::VM::SET + HCR_BITS::SWIO::SET + HCR_BITS::FMO::SET + HCR_BITS::IMO::SET + HCR_BITS::AMO::SET);
    // No traps of CP15 primary registers, of coprocessors (cp10/cp11 stay
    // with the guest: it owns the VFP of its CPU), or of debug/PMU accesses;
    // all PMU counters belong to the guest (HDCR.HPMN = PMCR.N).
    HSTR.set(0);
    HCPTR.set(0);
    HDCR.set((PMCR.get() >> 11) & 0x1f);
    VPIDR.set(MIDR.get());
    VMPIDR.set(MPIDR_MP | cpu as u32);
    mmu::enable_stage2();
}

/// Wait for this CPU's vCPU to be powered on, then run it.
///
/// The CPU sleeps in WFI with every interrupt but the kick masked (QEMU
/// runs a WFE as a yield, so waiting with WFE would spin a host CPU). The
/// virtual interface is switched off: a CPU without a vCPU has nothing to
/// list; the vGIC server rewrites it when the vCPU starts.
fn park(cpu: usize) -> ! {
    let gic = gic();
    gic.write_hcr(0);
    gic.set_priority_mask(devices::PRIORITY_MASK_KICK_ONLY);
    loop {
        // Take the kicks first, then look at the mailbox: a kick that comes
        // after the look stays pending and ends the WFI below at once. (The
        // other order loses a wake-up: look, the request and its kick
        // arrive, the kick is taken, and the CPU sleeps on the request.)
        while let Some(intid) = gic.acknowledge() {
            if intid == vm().table.irqs.watchdog {
                isolate::watchdog_tick();
            }
            gic.deactivate(intid);
        }
        let request = MAILBOX.get(cpu).and_then(|m| m.lock().take());
        if let Some((entry, context_id)) = request {
            gic.set_priority_mask(devices::PRIORITY_MASK_ALL);
            start_vcpu(cpu, entry, [context_id, 0, 0]);
        }
        wait_for_interrupt();
    }
}

/// Tell every server the vCPU is starting, then enter it.
fn start_vcpu(cpu: usize, entry: u32, regs: [u32; 3]) -> ! {
    let vm = vm();
    let vcpu = VcpuId(cpu as u8);
    SCTLR.set(GUEST_SCTLR_RESET);
    // Bit 0 of an entry point selects Thumb state (PSCI CPU_ON, ELF entry).
    let thumb = if entry & 1 != 0 { el2_monitor::guest::cpsr::T } else { 0 };
    let mut frame = Frame { elr: entry & !1, spsr: GUEST_CPSR_RESET | thumb, ..Frame::default() };
    frame.r[..3].copy_from_slice(&regs);
    {
        let mut hw = Hw { frame: &mut frame, insn_len: 0, next: Next::Resume, gic: &vm.gic };
        let now = el2_monitor::router::Hardware::now(&hw);
        let starts = [
            Message::Vcpu(VcpuRequest::Start { vcpu }),
            Message::Vgic(VgicRequest::Start { vcpu, list_registers: vm.gic.list_registers() }),
            Message::Vtimer(VtimerRequest::Start { vcpu, now }),
        ];
        for mut start in starts {
            deliver(vm, vcpu, &mut hw, &mut start);
        }
        if hw.next == Next::Park {
            park(cpu);
        }
    }
    let top = stack_top(cpu);
    // SAFETY: the boot code keeps the top `size_of::<Frame>()` bytes of each
    // stack free for exactly this frame, and nothing on this call stack
    // points there; `enter_guest` moves SP onto it, pops it and erets.
    unsafe {
        top.write(frame);
        boot::enter_guest(top)
    }
}

fn stack_top(cpu: usize) -> *mut Frame {
    let stacks = core::ptr::addr_of_mut!(MONITOR_STACKS) as usize;
    (stacks + (cpu + 1) * STACK_SIZE - core::mem::size_of::<Frame>()) as *mut Frame
}

/// Deliver `message`, complete (see `router::first_message`; a `Start` is
/// complete as it is), for `vcpu`, the vCPU of this CPU.
fn deliver(vm: &Vm, vcpu: VcpuId, hw: &mut Hw<'_>, message: &mut Message) {
    let mut servers = vm;
    let (Some(mut stats), Some(reply)) = (STATS.get(vcpu.index()), REPLIES.get(vcpu.index())) else {
        fatal("a vCPU beyond the CPUs");
    };
    let mut delivery = Delivery { servers: &mut servers, hw, stats: &mut stats, vcpu };
    // Only this CPU takes its reply buffer, and a delivery never starts
    // another on the same CPU; should one ever, it gets a buffer of its own
    // rather than waiting for itself.
    match reply.take() {
        Some(mut reply) => delivery.run_completed(message, reply.get()),
        None => delivery.run_completed(message, &mut Reply::none()),
    }
}

/// Trap and interrupt entry from the vectors: kind 0 = trap, 1 = IRQ, 2 = FIQ
/// (IRQs taken in Hyp mode itself go to `isolate::irq_in_server`).
#[no_mangle]
extern "C" fn handle_exit(frame: &mut Frame, kind: u32) {
    let start = profile::now();
    let cpu = HTPIDR.get() as usize;
    let vcpu = VcpuId(cpu as u8);
    let vm = vm();
    let next = match kind {
        0 => 'trap: {
            let mut s = Syndrome { hsr: HSR.get(), hdfar: HDFAR.get(), hifar: HIFAR.get(), hpfar: HPFAR.get() };
            let insn_len = s.insn_len();
            if s.class() == ExceptionClass::Hvc {
                // ELR points past an HVC; every other trap resumes at the
                // trapping instruction. Make HVC the same, so that a server
                // answers every trap with AdvancePc alike.
                frame.elr = frame.elr.wrapping_sub(insn_len);
            } else if let Some(va) = s.permission_fault_va() {
                match stage1_ipa_page(va) {
                    Some(hpfar) => s.hpfar = hpfar,
                    None => {
                        // The guest's tables changed under the access: it
                        // takes it again (and faults in its own tables, if
                        // that is what they say now).
                        count_trap(vcpu, None);
                        break 'trap Next::Resume;
                    }
                }
            }
            let decoded = syndrome::decode(&s, frame.spsr, |n| frame.reg(n));
            let mut hw = Hw { frame, insn_len, next: Next::Resume, gic: &vm.gic };
            match decoded {
                Decoded::Skip => {
                    count_trap(vcpu, None);
                    el2_monitor::router::Hardware::apply(&mut hw, ipc::ActionRef::AdvancePc)
                }
                Decoded::Trap(trap) => dispatch(vm, vcpu, &mut hw, trap),
            }
            hw.next
        }
        1 => {
            let mut hw = Hw { frame, insn_len: 0, next: Next::Resume, gic: &vm.gic };
            if let Some(intid) = vm.gic.acknowledge() {
                if intid == vm.table.irqs.watchdog {
                    // Taken in the guest: no server was running.
                    isolate::watchdog_tick();
                }
                dispatch(vm, vcpu, &mut hw, Trap::Irq { intid });
                if router::monitor_deactivates(&vm.table, intid) {
                    vm.gic.deactivate(intid);
                }
            }
            hw.next
        }
        _ => {
            log::warn!("physical FIQ on cpu{cpu}: nothing uses FIQs; ignored");
            Next::Resume
        }
    };
    profile::add(cpu, profile::Part::Hyp as usize, start);
    if next == Next::Park {
        park(cpu);
    }
}

/// The HPFAR value for a fault on the guest's virtual address `va`, by
/// translating it with the guest's stage 1 (ATS1CPR), or none when that
/// fails. The guest's PAR is kept.
#[cold]
fn stage1_ipa_page(va: u32) -> Option<u32> {
    let saved = sysreg::PAR.get();
    sysreg::ops::ats1cpr(va);
    sysreg::barrier();
    let par = sysreg::PAR.get();
    sysreg::PAR.set(saved);
    Syndrome::hpfar_from_par(par)
}

fn dispatch(vm: &Vm, vcpu: VcpuId, hw: &mut Hw<'_>, trap: Trap) {
    count_trap(vcpu, Some(&trap));
    // Built once, where it is delivered from (see `route_in_place`).
    let mut message = router::first_message(&vm.table, vcpu, trap, hw.frame.elr, hw.frame.spsr, hw);
    if router::route_in_place(&vm.table, &mut message, hw) {
        deliver(vm, vcpu, hw, &mut message);
    }
}

/// An exception taken in Hyp mode itself: a monitor bug.
#[no_mangle]
extern "C" fn monitor_fault(frame: &Frame, kind: u32) -> ! {
    // A fault while reporting a fault (a broken stack, say): report nothing
    // more; a third one: stop this CPU where it is.
    static NESTED: [core::sync::atomic::AtomicU8; MAX_CPUS] =
        [const { core::sync::atomic::AtomicU8::new(0) }; MAX_CPUS];
    let cpu = HTPIDR.get() as usize;
    match NESTED.get(cpu).map(|n| n.fetch_add(1, core::sync::atomic::Ordering::SeqCst)) {
        Some(0) | None => {}
        Some(1) => hostlink::exit(ipc::exit::MONITOR_FAULT),
        Some(_) => loop {
            wait_for_interrupt();
        },
    }
    let what = ["reset", "undefined instruction", "SVC", "prefetch abort", "data abort"];
    log::error!(
        "{} in Hyp mode at {:#x} (HSR {:#x}, HDFAR {:#x}, HIFAR {:#x})",
        what.get(kind as usize).copied().unwrap_or("exception"),
        frame.elr,
        HSR.get(),
        HDFAR.get(),
        HIFAR.get()
    );
    // Inside a server: contained (this does not return).
    if let Some(n) = NESTED.get(cpu) {
        n.store(0, core::sync::atomic::Ordering::SeqCst);
    }
    isolate::escape(isolate::Fault::of_vector(kind));
    if let Some(n) = NESTED.get(cpu) {
        n.store(1, core::sync::atomic::Ordering::SeqCst);
    }
    log::error!("monitor fault: outside any server, the monitor stops");
    hostlink::exit(ipc::exit::MONITOR_FAULT)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // A server's panic runs here inside its protection domain, where the
    // log and the monitor's state are out of reach: back to the monitor's
    // translation before anything else (the stack stays: the monitor maps
    // the domains too).
    let _ = domain::leave();
    log::error!("panic: {info}");
    // Inside a server: contained (this does not return).
    isolate::escape(isolate::Fault::Panic);
    log::error!("monitor panic: outside any server, the monitor stops");
    hostlink::exit(ipc::exit::MONITOR_FAULT)
}
