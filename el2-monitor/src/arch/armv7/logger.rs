//! The `log` backend: one host-link record per line, prefixed with the CPU
//! so that lines from several CPUs can be told apart.

use core::fmt::Write;

use log::{LevelFilter, Log, Metadata, Record};

use el2_monitor::ratelimit::{Admit, RateLimit};

use super::hostlink;
use super::sysreg::{CNTFRQ, CNTPCT, HTPIDR};
use ipc::hostlink::RecordKind;
use tock_registers::interfaces::Readable;

struct Logger;

static LOGGER: Logger = Logger;

/// Longest line written; longer ones are cut and marked.
const LINE: usize = super::domain::LOG_LINE;

/// Warnings (the level guest misbehaviour is logged at) allowed per second.
const WARNINGS_PER_SECOND: u32 = 20;

static WARNINGS: spin::Mutex<RateLimit> = spin::Mutex::new(RateLimit::new());

/// Per CPU: drop everything logged (while a server's logged requests are
/// replayed into its restored state: it said all that the first time).
static MUTED: [core::sync::atomic::AtomicBool; super::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; super::MAX_CPUS];

/// IRQs masked until dropped, then as they were.
struct IrqsMasked {
    cpsr: u32,
}

impl IrqsMasked {
    fn new() -> Self {
        let cpsr: u32;
        // SAFETY: reads the CPSR and masks IRQs; no memory is touched.
        unsafe { core::arch::asm!("mrs {0}, cpsr", "cpsid i", out(reg) cpsr, options(nomem, nostack)) };
        IrqsMasked { cpsr }
    }
}

impl Drop for IrqsMasked {
    fn drop(&mut self) {
        if self.cpsr & (1 << 7) == 0 {
            // SAFETY: unmasks IRQs again, as they were when `new` ran.
            unsafe { core::arch::asm!("cpsie i", options(nomem, nostack)) };
        }
    }
}

/// Mute or unmute this CPU's log.
pub fn mute(on: bool) {
    if let Some(m) = MUTED.get(HTPIDR.get() as usize) {
        m.store(on, core::sync::atomic::Ordering::Relaxed);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Inside a server's protection domain only its log buffer can be
        // written; the monitor passes the lines on after the call. The two
        // paths are separate calls so that nothing of the monitor's path
        // (its statics) is touched, even speculatively, before the check.
        match super::domain::current_log() {
            Some(buffer) => log_in_domain(buffer, record),
            None => log_in_monitor(record),
        }
    }

    fn flush(&self) {}
}

/// Format a record as one line: CPU, level, text (cut and marked if long).
fn format(record: &Record<'_>) -> heapless::String<LINE> {
    let mut line: heapless::String<LINE> = heapless::String::new();
    if write!(line, "[splitvisor cpu{} {:5}] {}", HTPIDR.get(), record.level(), record.args()).is_err() {
        while line.push_str("...").is_err() {
            line.pop();
        }
    }
    line
}

#[inline(never)]
fn log_in_domain(buffer: *mut super::domain::LogBuffer, record: &Record<'_>) {
    // SAFETY: `current_log` gave the running server's own buffer, in its
    // domain; the server's lock is held by this CPU for the whole call.
    unsafe { (*buffer).push(record.level(), format(record)) };
}

#[inline(never)]
fn log_in_monitor(record: &Record<'_>) {
    emit(record.level(), &format(record));
}

/// Write one formatted line to the host link, unless this CPU's log is
/// muted or (for warnings) the rate limit holds it back.
pub fn emit(level: log::Level, line: &str) {
    // IRQs off while the log's locks are held: a server's watchdog must
    // not leave a server in the middle of a line with the lock taken.
    let _masked = IrqsMasked::new();
    let cpu = HTPIDR.get();
    if MUTED.get(cpu as usize).is_some_and(|m| m.load(core::sync::atomic::Ordering::Relaxed)) {
        return;
    }
    if level == log::Level::Warn {
        let admit = WARNINGS.lock().admit(CNTPCT.get(), u64::from(CNTFRQ.get()), WARNINGS_PER_SECOND);
        match admit {
            Admit::No => return,
            Admit::Yes { held: 0 } => {}
            Admit::Yes { held } => {
                let mut note: heapless::String<96> = heapless::String::new();
                let _ = write!(note, "[splitvisor cpu{cpu} WARN ] {held} warnings held back (rate limit)");
                hostlink::record(RecordKind::Log, note.as_bytes());
            }
        }
    }
    hostlink::record(RecordKind::Log, line.as_bytes());
}

/// Install the logger at `level`.
pub fn init(level: LevelFilter) {
    // set_logger fails only if a logger is already set; then keep it.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// The level filter for the configuration's numeric level.
pub fn level_from_config(level: u8) -> LevelFilter {
    match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}
