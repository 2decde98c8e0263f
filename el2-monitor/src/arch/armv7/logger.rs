//! The `log` backend: one line per record, through semihosting, prefixed
//! with the CPU so that lines from several CPUs can be told apart.

use core::fmt::Write;

use log::{LevelFilter, Log, Metadata, Record};

use super::semihosting;
use super::sysreg::HTPIDR;
use tock_registers::interfaces::Readable;

struct Logger;

static LOGGER: Logger = Logger;
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Longest line written; longer ones are cut and marked.
const LINE: usize = 512;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line: heapless::String<LINE> = heapless::String::new();
        let cpu = HTPIDR.get();
        let cut = write!(line, "[splitvisor cpu{cpu} {:5}] {}", record.level(), record.args()).is_err();
        let end = if cut { "...\n\0" } else { "\n\0" };
        while line.push_str(end).is_err() {
            line.pop();
        }
        let _guard = LOCK.lock();
        semihosting::write0(line.as_bytes());
    }

    fn flush(&self) {}
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
