//! Protection domains: each server runs in a Hyp translation of its own.
//!
//! While a server handles a request, HTTBR points at its [`DomainTables`],
//! which map (see `link.x`):
//! - the image's code, read-only and executable, and its constants,
//!   read-only;
//! - the page of the `log` crate's statics, read-only (a server's logging
//!   reads the level filter and the logger);
//! - its own domain section, read/write and never executable: a [`Domain`],
//!   that is its stack, its state, its inbox and outbox, and its log buffer;
//! - the window: one page, read/write and never executable, which the
//!   monitor maps before each call to the reply buffer of the CPU the call
//!   runs on, so that the server writes its reply where the monitor reads
//!   and applies it, with no copy (see [`open_window`]).
//!
//! Nothing else: not the monitor's data, stacks, page tables or the servers'
//! checkpoints, not the other servers' domains, not the devices, not the
//! guest's RAM. A wild access there is a Hyp data or prefetch abort, which
//! the fault vectors (`boot.rs`) turn back to the monitor's translation and
//! stack before touching memory, and `isolate` contains like any other
//! fault. The code is shared by all domains (read-only, so a server can
//! change nothing through it): with link-time optimisation the servers'
//! code and the monitor's are one object, which the linker cannot split by
//! crate.
//!
//! What this stops is a server's bugs, not a hostile server: the servers
//! run at PL2 like the monitor, and PL2 code could write HTTBR itself.
//!
//! A server logs into its domain's [`LogBuffer`]; the monitor passes the
//! lines on after the call (`drain_log`), as its own logger would have.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use ipc::fault::FaultKind;
use ipc::{Message, Reply, Server, ServerError, ServerId};
use vcpu_server::VcpuServer;
use vgic_server::VgicServer;
use vtimer_server::VtimerServer;

use super::mmu::{self, Access, DomainTables, MapError};

/// Each domain's stack. The deepest request measured so far (the vGIC
/// server's) uses a few KiB; `report_stacks` logs the high-water marks.
pub const STACK_SIZE: usize = 0x1_0000;

/// What an unused stack byte holds (for the high-water mark).
const STACK_PAINT: u8 = 0xa5;

/// Lines a server may log per request; more are counted as lost.
const LOG_LINES: usize = 8;
/// Longest line kept (as the monitor's own logger).
pub const LOG_LINE: usize = 512;

/// What an injected wild write stores.
pub const WILD_WRITE_WORD: u32 = 0xdead_beef;

/// A server's log, filled inside its domain.
pub struct LogBuffer {
    lines: heapless::Vec<(log::Level, heapless::String<LOG_LINE>), LOG_LINES>,
    lost: u32,
}

impl LogBuffer {
    const fn new() -> Self {
        LogBuffer { lines: heapless::Vec::new(), lost: 0 }
    }

    /// Keep a line (cut to [`LOG_LINE`] bytes by the caller).
    pub fn push(&mut self, level: log::Level, line: heapless::String<LOG_LINE>) {
        if self.lines.push((level, line)).is_err() {
            self.lost = self.lost.saturating_add(1);
        }
    }
}

/// A fault to inject, carried out inside the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Panic.
    Panic,
    /// Spin until the watchdog stops the server.
    Hang,
    /// Store [`WILD_WRITE_WORD`] at `target` (monitor memory), then go on.
    WildWrite {
        /// The address.
        target: usize,
    },
}

impl Injected {
    /// What to inject for `kind`; `target` is where a wild write aims.
    pub fn of(kind: FaultKind, target: usize) -> Option<Injected> {
        match kind {
            FaultKind::Panic => Some(Injected::Panic),
            FaultKind::Hang => Some(Injected::Hang),
            FaultKind::WildWrite => Some(Injected::WildWrite { target }),
            // Made up by the monitor after the call (`isolate`).
            FaultKind::BadReply => None,
        }
    }
}

/// Everything a server can reach while it runs.
#[repr(C, align(4096))]
pub struct Domain<S> {
    /// First, so that an overflow runs into memory outside the domain.
    stack: [u8; STACK_SIZE],
    /// The server's state.
    pub server: S,
    /// The request to handle (`None` once taken).
    pub inbox: Option<Message>,
    /// Where the server writes its reply to the request (set by the monitor
    /// before each call; meaningful only when `answer` is `Some(Ok(()))`):
    /// through the window, the reply buffer of the CPU it runs on (see
    /// [`open_window`]), or else `outbox`, or without protection domains
    /// the caller's buffer itself.
    pub reply_at: *mut Reply,
    /// The reply's place when no CPU's reply buffer can be lent (the
    /// monitor then copies it out).
    pub outbox: Reply,
    /// How the request ended: `None` until the server returns.
    pub answer: Option<Result<(), ServerError>>,
    /// A fault to inject into this request.
    pub inject: Option<Injected>,
    /// What the server logged.
    pub log: LogBuffer,
}

/// What the monitor keeps to restore a server (see `isolate::Guarded`):
/// in the monitor's memory, which no domain maps. A static of its own per
/// server rather than a field of the `Guarded`: the vGIC server's
/// checkpoint alone is 17 KB, and the VM's set-up, which builds and moves
/// the `Guarded`s on the boot CPU's stack, used 106 of its 128 KB with
/// them inside.
pub struct Keep<S> {
    /// The server's state as of the last checkpoint (none before the first
    /// request).
    pub checkpoint: Option<S>,
    /// The requests the server handled since.
    pub log: heapless::Vec<Message, { super::isolate::LOG_CAPACITY }>,
}

/// A server type with a domain of its own.
pub trait Hosted: Server + Clone + 'static {
    /// Its domain (not yet initialised before [`install`]).
    fn slot() -> *mut Domain<Self>;
    /// What the monitor keeps to restore it (not yet initialised before
    /// [`install`]).
    fn keep() -> *mut Keep<Self>;
    /// Whether [`install`] ran.
    fn installed() -> &'static AtomicBool;
}

/// The window's page: a page of the monitor's memory that no one uses,
/// whose address each domain's tables map to the reply buffer of the CPU
/// the server runs on (`open_window`). The server writes its reply there in
/// place, and the monitor reads it where it lies, with no copy; the buffer
/// of no other CPU is mapped, so a server's bug reaches no reply but the
/// one it is writing. (Hyp stage 1 cannot map the same address to a
/// different page per CPU: the tables are per server, and the server's lock
/// makes one CPU at a time their user.)
#[repr(C, align(4096))]
struct WindowPage([u8; mmu::PAGE as usize]);

/// Mutable only so that it lies in `.bss`, which no domain maps (a
/// `static` would go with the constants, which every domain maps); nothing
/// reads or writes it.
static mut WINDOW: WindowPage = WindowPage([0; mmu::PAGE as usize]);

fn window() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

/// Map S's window onto the page of `reply` (a CPU's reply buffer, alone in
/// its page) and return where S sees `reply` through it. With S's lock
/// held, before its call (which switches to S's tables, see
/// `mmu::DomainTables::point_window`).
#[inline(always)]
pub fn open_window<S: Hosted>(reply: *mut Reply) -> *mut Reply {
    let address = reply as usize;
    let tables = core::ptr::addr_of_mut!(TABLES);
    // SAFETY: S's tables are only changed under S's lock, which the caller
    // holds, and S is not running: no CPU walks them now.
    if let Some(table) = unsafe { (*tables).get_mut(S::ID.index()) } {
        table.point_window(address as u64);
    }
    (window() as usize | (address & (mmu::PAGE as usize - 1))) as *mut Reply
}

/// Unmap S's window: for a call whose reply goes to S's outbox, so that
/// the page of the CPU that last lent S a buffer, which that CPU may be
/// reading now, is out of S's reach. With S's lock held, before its call.
pub fn close_window<S: Hosted>() {
    let tables = core::ptr::addr_of_mut!(TABLES);
    // SAFETY: as in `open_window`.
    if let Some(table) = unsafe { (*tables).get_mut(S::ID.index()) } {
        table.close_window();
    }
}

/// The three domains' tables, by server index, one after the other (the
/// fault vectors test HTTBR against their span). In the monitor's memory:
/// no domain maps them.
pub(super) static mut TABLES: [DomainTables; 3] = [const { DomainTables::new() }; 3];

macro_rules! domain {
    ($server:ty, $static:ident, $keep:ident, $section:literal) => {
        #[link_section = $section]
        static mut $static: MaybeUninit<Domain<$server>> = MaybeUninit::uninit();
        static mut $keep: MaybeUninit<Keep<$server>> = MaybeUninit::uninit();

        impl Hosted for $server {
            fn slot() -> *mut Domain<Self> {
                core::ptr::addr_of_mut!($static).cast()
            }

            fn keep() -> *mut Keep<Self> {
                core::ptr::addr_of_mut!($keep).cast()
            }

            fn installed() -> &'static AtomicBool {
                static INSTALLED: AtomicBool = AtomicBool::new(false);
                &INSTALLED
            }
        }
    };
}

domain!(VcpuServer, VCPU_DOMAIN, VCPU_KEEP, ".bss.splitvisor_domain_vcpu");
domain!(VgicServer, VGIC_DOMAIN, VGIC_KEEP, ".bss.splitvisor_domain_vgic");
domain!(VtimerServer, VTIMER_DOMAIN, VTIMER_KEEP, ".bss.splitvisor_domain_vtimer");

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __shared_start: u8;
    static __shared_end: u8;
    static __domain_vcpu_start: u8;
    static __domain_vcpu_end: u8;
    static __domain_vgic_start: u8;
    static __domain_vgic_end: u8;
    static __domain_vtimer_start: u8;
    static __domain_vtimer_end: u8;
    static __splitvisor_end: u8;
}

fn addr(symbol: &u8) -> u64 {
    core::ptr::from_ref(symbol) as u64
}

/// Each domain's section, `[start, end)`, by server index.
fn sections() -> [(u64, u64); 3] {
    // SAFETY: only the addresses of the linker's symbols are taken.
    unsafe {
        [
            (addr(&__domain_vcpu_start), addr(&__domain_vcpu_end)),
            (addr(&__domain_vgic_start), addr(&__domain_vgic_end)),
            (addr(&__domain_vtimer_start), addr(&__domain_vtimer_end)),
        ]
    }
}

/// Build the three domains' tables (the boot CPU, once, before any server
/// runs).
pub fn build() -> Result<(), MapError> {
    const TWO_MIB: u64 = 2 << 20;
    // SAFETY: only the addresses of the linker's symbols are taken.
    let (image, text, rodata, shared) = unsafe {
        (
            (addr(&__image_start) & !(TWO_MIB - 1), addr(&__splitvisor_end).next_multiple_of(TWO_MIB)),
            (addr(&__image_start), addr(&__text_end)),
            (addr(&__rodata_start), addr(&__rodata_end)),
            (addr(&__shared_start), addr(&__shared_end)),
        )
    };
    let tables = core::ptr::addr_of_mut!(TABLES);
    for (i, own) in sections().into_iter().enumerate() {
        let ranges = [
            (text.0, text.1, Access::ReadExecute),
            (rodata.0, rodata.1, Access::Read),
            (shared.0, shared.1, Access::Read),
            (own.0, own.1, Access::ReadWrite),
        ];
        // SAFETY: the boot CPU fills the tables once, before any CPU uses
        // them; nothing else refers to them meanwhile.
        let table = unsafe { &mut (*tables)[i] };
        mmu::build_domain(table, image, &ranges, window())?;
        log::debug!("domain {}: {:#x}..{:#x} read/write", ServerId::ALL[i].name(), own.0, own.1);
    }
    // The tables are read by the table walk, which may not look in the data
    // cache on every implementation. (By address: a clean of the whole cache
    // by set and way was some 190,000 instructions.)
    let start = tables as usize;
    mmu::clean_to_unification(start, start + core::mem::size_of::<[DomainTables; 3]>());
    Ok(())
}

/// The HTTBR value of server `S`'s domain.
pub fn translation<S: Hosted>() -> u64 {
    let tables = core::ptr::addr_of!(TABLES);
    // SAFETY: only the address of one table is taken.
    unsafe { (*tables)[S::ID.index()].base() }
}

/// The server whose domain this CPU runs in, if any (reads only HTTBR, so
/// it is safe inside a domain).
pub fn current() -> Option<ServerId> {
    server_of(mmu::current_hyp_translation())
}

/// The server whose domain `httbr` is the translation of, if any.
pub fn server_of(httbr: u64) -> Option<ServerId> {
    let tables = core::ptr::addr_of!(TABLES);
    // SAFETY: only the addresses of the tables are taken.
    ServerId::ALL.into_iter().find(|id| unsafe { (*tables)[id.index()].base() } == httbr)
}

/// Put `server` in its domain, with an empty inbox, outbox and log, and
/// its stack painted, and empty what the monitor keeps to restore it. Once
/// per server type; a second call is refused.
pub fn install<S: Hosted>(server: S) -> Result<(), S> {
    if S::installed().swap(true, Ordering::SeqCst) {
        return Err(server);
    }
    let d = S::slot();
    // SAFETY: `d` is S's domain static and `k` its keep, written here once
    // (the flag above) before any server runs; every field is written
    // before it is read.
    unsafe {
        core::ptr::addr_of_mut!((*d).stack).write_bytes(STACK_PAINT, 1);
        core::ptr::addr_of_mut!((*d).server).write(server);
        core::ptr::addr_of_mut!((*d).inbox).write(None);
        core::ptr::addr_of_mut!((*d).outbox).write(Reply::none());
        core::ptr::addr_of_mut!((*d).reply_at).write(core::ptr::addr_of_mut!((*d).outbox));
        core::ptr::addr_of_mut!((*d).answer).write(None);
        core::ptr::addr_of_mut!((*d).inject).write(None);
        core::ptr::addr_of_mut!((*d).log).write(LogBuffer::new());
        let k = S::keep();
        core::ptr::addr_of_mut!((*k).checkpoint).write(None);
        core::ptr::addr_of_mut!((*k).log).write(heapless::Vec::new());
    }
    Ok(())
}

/// Handle the inbox: the function that runs inside the domain. It touches
/// nothing but `*domain` (and code, constants and the `log` statics).
pub extern "C" fn serve<S: Hosted>(domain: *mut u8) {
    let d = domain.cast::<Domain<S>>();
    // SAFETY: `domain` is S's installed domain, handed over by
    // `isolate::attempt` under the server's lock: no one else uses it. The
    // fields are borrowed apart, since `reply_at` may point at `outbox`;
    // where else it points (the window or, without domains, the caller's
    // buffer) is a `Reply` lent to this call alone.
    let (server, inbox, reply, inject, answer) =
        unsafe { (&mut (*d).server, &mut (*d).inbox, &mut *(*d).reply_at, &mut (*d).inject, &mut (*d).answer) };
    let Some(message) = inbox.as_ref() else {
        return;
    };
    match inject.take() {
        Some(Injected::Panic) => injected_panic(S::ID),
        Some(Injected::Hang) => loop {
            core::hint::spin_loop();
        },
        Some(Injected::WildWrite { target }) => {
            // SAFETY: none: this is the bug being injected, a store to
            // memory the server does not own (the monitor's). Inside a
            // protection domain it faults and stores nothing; without one
            // (`--no-domains`) it lands, and `isolate` reports that.
            unsafe { core::ptr::write_volatile(target as *mut u32, WILD_WRITE_WORD) };
        }
        None => {}
    }
    *answer = Some(server.handle_message_into(message, reply));
    *inbox = None;
}

#[inline(never)]
fn injected_panic(server: ServerId) -> ! {
    panic!("fault injected into server {} (--inject)", server.name())
}

/// The log buffer of the domain this CPU runs in, if any. Reads only HTTBR
/// and takes addresses, so it is safe inside a domain; the buffer belongs
/// to the running server's call (its lock is held).
pub fn current_log() -> Option<*mut LogBuffer> {
    Some(match current()? {
        ServerId::Vcpu => log_of::<VcpuServer>(),
        ServerId::Vgic => log_of::<VgicServer>(),
        ServerId::Vtimer => log_of::<VtimerServer>(),
    })
}

fn log_of<S: Hosted>() -> *mut LogBuffer {
    let d = S::slot();
    // SAFETY: only the field's address is taken.
    unsafe { core::ptr::addr_of_mut!((*d).log) }
}

/// Pass on what `S` logged during its last call (dropped while the log is
/// muted), then empty its buffer. Call with S's lock held, outside its
/// domain.
#[inline(always)]
pub fn drain_log<S: Hosted>() {
    // SAFETY: S's domain is installed (a Guarded exists) and S's lock is
    // held; the server is not running.
    let buf = unsafe { &mut *log_of::<S>() };
    // Most calls log nothing: then there is nothing to empty either.
    if !buf.lines.is_empty() || buf.lost > 0 {
        drain(buf, S::ID);
    }
}

#[inline(never)]
fn drain(buf: &mut LogBuffer, server: ServerId) {
    for (level, line) in &buf.lines {
        super::logger::emit(*level, line);
    }
    if buf.lost > 0 {
        log::warn!("server {}: {} log lines lost (more than {LOG_LINES} in one request)", server.name(), buf.lost);
    }
    buf.lines.clear();
    buf.lost = 0;
}

/// Where `address` is, for a fault report.
pub fn describe(address: u32, running: Option<ServerId>) -> &'static str {
    let a = u64::from(address);
    for (i, (start, end)) in sections().into_iter().enumerate() {
        if (start..end).contains(&a) {
            return match (running, ServerId::ALL[i]) {
                (Some(r), d) if r == d => "its own domain",
                (_, ServerId::Vcpu) => "the vcpu server's domain",
                (_, ServerId::Vgic) => "the vgic server's domain",
                (_, ServerId::Vtimer) => "the vtimer server's domain",
            };
        }
    }
    // SAFETY: only the addresses of the linker's symbols are taken.
    let (start, text_end, rodata, end) = unsafe {
        (addr(&__image_start), addr(&__text_end), (addr(&__rodata_start), addr(&__rodata_end)), addr(&__splitvisor_end))
    };
    if (start..text_end).contains(&a) {
        "the image's code (read-only)"
    } else if (rodata.0..rodata.1).contains(&a) {
        "the image's constants (read-only)"
    } else if (start..end).contains(&a) {
        "the monitor's memory"
    } else {
        "memory outside the monitor image"
    }
}

/// Log how deep each domain's stack has been used.
pub fn report_stacks() {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    fn one<S: Hosted>() {
        if !S::installed().load(Ordering::SeqCst) {
            return;
        }
        let d = S::slot();
        // SAFETY: the stack was painted by `install`; it is only read, and
        // only bytes (each was written, by the paint or by the server).
        let stack = unsafe { &*core::ptr::addr_of!((*d).stack) };
        let untouched = super::untouched_bytes(stack, STACK_PAINT);
        log::info!("domain {}: stack high-water {} of {} bytes", S::ID.name(), STACK_SIZE - untouched, STACK_SIZE);
    }
    one::<VcpuServer>();
    one::<VgicServer>();
    one::<VtimerServer>();
}

/// Back to the monitor's translation if this CPU is in a domain (first
/// thing in the panic handler, which may run inside one). Returns the
/// domain's translation to go back to, if there was one.
#[inline(always)]
pub fn leave() -> Option<u64> {
    let now = mmu::current_hyp_translation();
    let monitor = mmu::monitor_translation();
    if now == monitor {
        return None;
    }
    mmu::switch_hyp_translation(monitor);
    Some(now)
}

/// Back into the domain [`leave`] left.
#[inline(always)]
pub fn reenter(translation: Option<u64>) {
    if let Some(t) = translation {
        mmu::switch_hyp_translation(t);
    }
}
