//! A logger that formats every record and throws the text away: the
//! components log only through `log`, and without a logger their log
//! arguments would never be evaluated (a `Debug` impl that panics, or a
//! format argument that overflows, would go unseen).

use std::io::Write;
use std::sync::Once;

struct Sink;

impl log::Log for Sink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let _ = write!(std::io::sink(), "{} {} {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

static SINK: Sink = Sink;

/// Install the sink at `Trace` level (once per process).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another logger is installed, which is fine too.
        let _ = log::set_logger(&SINK);
        log::set_max_level(log::LevelFilter::Trace);
    });
}
